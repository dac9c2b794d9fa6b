//! Transactions, `WATCH`, blocking commands and `WAIT` on a connection of the client's own.

use tokio::time::Instant;

use super::dispatcher::Dispatcher;
use super::queue::Target;
use crate::backend::pinned::{wait_probe, WAIT_ON_REPLICA};
use crate::backend::{BackendError, Pinned};
use crate::resp::{error_reply, status_reply, Request};
use crate::router::{Endpoint, Pin, ReadNeed, Route, RoutingTable};

/// The connection a client holds during a transaction (or a `WATCH`).
pub(super) struct PinState {
    /// The connection.
    pub conn: Pinned,
    /// Between `MULTI` and `EXEC`/`DISCARD`.
    pub multi: bool,
    /// A command of the transaction was refused by the proxy (users' rules, command policy):
    /// `EXEC` becomes `DISCARD` and answers `-EXECABORT`, as Redis does.
    pub refused: bool,
    /// A `SELECT` (or a `CLIENT` command) was sent on the connection: it is not as it was
    /// opened, so it is not recycled.
    pub dirty: bool,
}

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A `MULTI`/`WATCH`/blocking command waiting for a master to open its connection on.
pub(super) struct PinWait {
    pin: Pin,
    req: Request,
    /// Since when it waits.
    since: Instant,
}

impl Dispatcher {
    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`, blocking commands and `WAIT`: on the
    /// client's own connection to the master, opened by `MULTI`/`WATCH` (or for one blocking
    /// command or `WAIT`) and let go by `EXEC`/`DISCARD`/`UNWATCH` (or once the command is sent).
    /// `WAIT` goes after [`wait_probe`], once the client's earlier requests are answered (the
    /// batch is deferred until then), so it counts the replicas that have all of them.
    pub(super) async fn pinned(&mut self, pin: Pin, req: Request, table: &RoutingTable) {
        self.pinned_since(pin, req, table, None).await;
    }

    /// [`pinned`](Self::pinned) for a command that has waited for a master since `since`.
    async fn pinned_since(
        &mut self,
        pin: Pin,
        req: Request,
        table: &RoutingTable,
        since: Option<Instant>,
    ) {
        if self.multi_failed {
            return self.after_failed_multi(pin).await;
        }
        if pin == Pin::Wait && self.endpoint == Endpoint::ReadOnly {
            return self.push_ready(error_reply(WAIT_ON_REPLICA)).await;
        }
        let in_multi = self.pin.as_ref().is_some_and(|p| p.multi);
        let opened_here = self.pin.is_none();
        match (pin, self.pin.is_some()) {
            (Pin::Exec, false) => {
                return self.push_ready(error_reply("ERR EXEC without MULTI")).await
            }
            (Pin::Discard, false) => {
                return self
                    .push_ready(error_reply("ERR DISCARD without MULTI"))
                    .await
            }
            (Pin::Unwatch, false) => return self.push_ready(status_reply("OK")).await,
            (Pin::Multi | Pin::Watch | Pin::Blocking | Pin::Wait, false) => {
                let Some(req) = self.open_pin(pin, req, table, since).await else {
                    return;
                };
                self.send_pinned(pin, req, in_multi, opened_here).await;
            }
            _ => self.send_pinned(pin, req, in_multi, opened_here).await,
        }
    }

    /// While `MULTI` has failed to start: what Redis answers after a command failed to queue.
    async fn after_failed_multi(&mut self, pin: Pin) {
        let reply = match pin {
            Pin::Exec => error_reply(EXECABORT),
            Pin::Discard => status_reply("OK"),
            Pin::Multi => error_reply("ERR MULTI calls can not be nested"),
            _ => error_reply("TRYAGAIN haproxy-rs: the transaction could not start (no connection to the master); not queued"),
        };
        self.multi_failed = !matches!(pin, Pin::Exec | Pin::Discard);
        self.push_ready(reply).await;
    }

    /// Opens the client's connection to the master for `pin`; `req` back when it is open, `None`
    /// when the command waits for a master (see [`PinWait`]) or was answered.
    async fn open_pin(
        &mut self,
        pin: Pin,
        req: Request,
        table: &RoutingTable,
        since: Option<Instant>,
    ) -> Option<Request> {
        let conn = match self.route(table, true, ReadNeed::Any) {
            Route::To(b) => Pinned::open(b, self.protocol, self.db, &self.ctx.pinned).await,
            Route::Hold => Err(BackendError::Unavailable),
            Route::Error(reply) => {
                self.multi_failed = pin == Pin::Multi;
                self.push_ready(reply).await;
                return None;
            }
        };
        // No master (a failover), or no connection to it yet: the command waits, as writes are
        // held, until there is one or `failover.hold_ms` has passed.
        let since = since.unwrap_or_else(Instant::now);
        if conn.is_err() && since.elapsed() < self.ctx.hold && !self.closing {
            self.flush().await;
            self.pin_wait = Some(PinWait { pin, req, since });
            return None;
        }
        match conn {
            Ok(conn) => {
                self.pin = Some(PinState {
                    conn,
                    multi: false,
                    refused: false,
                    dirty: false,
                });
                Some(req)
            }
            Err(_) => {
                self.multi_failed = pin == Pin::Multi;
                self.push_ready(error_reply(
                    "TRYAGAIN haproxy-rs: no connection to the master for this transaction or blocking command (failover in progress, or backend.max_pinned_connections reached); not executed",
                ))
                .await;
                None
            }
        }
    }

    /// Sends `req` on the client's connection; `EXEC`/`DISCARD`/`UNWATCH` (and a blocking
    /// command or `WAIT` whose connection was opened for it) let the connection go after it.
    async fn send_pinned(&mut self, pin: Pin, req: Request, in_multi: bool, opened_here: bool) {
        let Some(p) = &mut self.pin else {
            return;
        };
        if pin == Pin::Multi {
            p.multi = true;
        }
        let conn = p.conn.clone();
        if let (Pin::Blocking, false, Some(c)) = (pin, in_multi, &self.client) {
            c.set_blocked_on(conn.blocked_on());
        }
        if pin == Pin::Wait && !in_multi {
            // The probe leads a batch of its own, so its reply is the batch's first.
            self.flush().await;
            self.gather(Target::Pinned(conn), false).await;
            self.append_probe(wait_probe());
        } else {
            self.gather(Target::Pinned(conn), false).await;
        }
        let refused = self.pin.as_ref().is_some_and(|p| p.refused);
        if pin == Pin::Exec && in_multi && refused {
            self.append(&Request::from_args(&["DISCARD"]), false);
            if let Some(open) = &mut self.open {
                open.replace_last = Some(error_reply(EXECABORT));
            }
        } else {
            // EXEC runs the queued writes; a blocking pop writes (read-your-writes counts them).
            self.append(&req, matches!(pin, Pin::Exec | Pin::Blocking));
        }
        let release = match pin {
            Pin::Exec | Pin::Discard => in_multi,
            Pin::Unwatch => !in_multi,
            Pin::Blocking | Pin::Wait => opened_here,
            Pin::Multi | Pin::Watch => false,
        };
        if release {
            self.flush().await;
            if let Some(p) = self.pin.take() {
                match pin {
                    // A transaction ended leaves the connection as fresh.
                    Pin::Exec | Pin::Discard | Pin::Unwatch if !p.dirty => p.conn.recycle(),
                    // A blocking command (or WAIT) is still waiting on its connection, which
                    // must close if the client goes: recycled with its reply.
                    Pin::Blocking | Pin::Wait => self.recycle_after_reply(p.conn),
                    _ => {}
                }
            }
        }
    }

    /// Tries again to open the connection of a command waiting for a master (at once refused
    /// when `expire`: the proxy is stopping). Parsing resumes once it is settled.
    pub(super) async fn retry_pin_wait(&mut self, expire: bool) {
        let Some(wait) = self.pin_wait.take() else {
            return;
        };
        if self.queue.held() > 0 && !expire {
            // Requests before it are still held: they go first.
            self.pin_wait = Some(wait);
            return;
        }
        let PinWait { pin, req, since } = wait;
        // At shutdown the session is closing: no more waiting, the command is refused.
        let table = self.ctx.table.load_full();
        self.pinned_since(pin, req, &table, Some(since)).await;
    }

    /// Hands `conn` to the batch just sent (or deferred) on it, to be recycled with its reply.
    fn recycle_after_reply(&mut self, conn: Pinned) {
        if let Some(batch) = self.queue.back_batch() {
            batch.recycle = Some(conn);
        }
    }
}
