//! Cluster-mode transactions, `WATCH`, blocking commands and `WAIT`: queued by the proxy, or run
//! on a pinned connection once every earlier request of the client has finished.

use bytes::Bytes;

use super::dispatcher::Dispatcher;
use super::pinned::{PinCtx, PinOp};
use super::plan::{plan, Plan, PlanEnv, CROSSSLOT};
use super::tx::{Push, Tx};
use crate::resp::{error_reply, is_error_reply, status_reply, CommandTable, Request};
use crate::router::Pin;

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

impl Dispatcher {
    /// Runs `op` on a pinned connection once every earlier request has finished; later requests
    /// wait for it.
    async fn submit_pinned(&mut self, op: PinOp) {
        if let Some(c) = self.take_chunk() {
            self.submit(c).await;
        }
        let generation = self.state.map().generation;
        let turn = self.flight.enter(1, generation);
        self.flight.pinned_seq = Some(turn.seq);
        let ctx = PinCtx {
            state: self.state.clone(),
            limit: self.ctx.pinned.clone(),
            protocol: self.protocol,
            watch: self.watch.clone(),
            client: self.client.clone(),
        };
        let listener = self.stats.clone();
        self.flight.chunks.push_back(Box::pin(async move {
            turn.wait().await;
            let reply = op.run(ctx).await;
            if is_error_reply(&reply) {
                listener.error(&reply);
            }
            reply
        }));
    }

    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`, blocking commands and `WAIT`.
    pub(super) async fn pin_command(
        &mut self,
        pin: Pin,
        req: Request,
        commands: &CommandTable,
        env: &PlanEnv,
    ) {
        let slot_of = |req: &Request| match plan(commands, req, env) {
            Plan::Slot(s) => Ok(Some(s)),
            Plan::AnyMaster => Ok(None),
            Plan::Reply(e) => Err(e),
            _ => Err(error_reply(CROSSSLOT)),
        };
        let reply = match (pin, self.tx.is_some()) {
            (Pin::Multi, true) => error_reply("ERR MULTI calls can not be nested"),
            (Pin::Multi, false) => {
                self.tx = Some(Tx::default());
                status_reply("OK")
            }
            (Pin::Exec, false) => error_reply("ERR EXEC without MULTI"),
            (Pin::Discard, false) => error_reply("ERR DISCARD without MULTI"),
            (Pin::Discard, true) => {
                self.tx = None;
                self.unwatch();
                status_reply("OK")
            }
            (Pin::Exec, true) => match self.tx.take().unwrap_or_default().into_exec() {
                None => {
                    self.unwatch();
                    error_reply(EXECABORT)
                }
                Some((slot, queued, count)) => {
                    self.wrote_slot = slot.or(self.wrote_slot);
                    let op = PinOp::Exec {
                        slot,
                        queued,
                        count,
                    };
                    return self.submit_pinned(op).await;
                }
            },
            (Pin::Watch, true) => error_reply("ERR WATCH inside MULTI is not allowed"),
            (Pin::Watch, false) => match slot_of(&req) {
                Ok(Some(slot)) => {
                    let op = PinOp::Watch {
                        slot,
                        raw: req.into_raw(),
                    };
                    return self.submit_pinned(op).await;
                }
                Ok(None) => error_reply("ERR wrong number of arguments for 'watch' command"),
                Err(e) => e,
            },
            (Pin::Unwatch, false) => {
                self.unwatch();
                status_reply("OK")
            }
            (Pin::Wait, false) => {
                let op = PinOp::Wait {
                    slot: self.wrote_slot,
                    raw: req.into_raw(),
                };
                return self.submit_pinned(op).await;
            }
            (Pin::Blocking, false) => match slot_of(&req) {
                Ok(Some(slot)) => {
                    self.wrote_slot = Some(slot); // a pop writes
                    let op = PinOp::Blocking {
                        slot,
                        raw: req.into_raw(),
                    };
                    return self.submit_pinned(op).await;
                }
                Ok(None) if is_kill(&req) => {
                    let op = PinOp::Kill {
                        args: req.args().map(Bytes::copy_from_slice).collect(),
                    };
                    return self.submit_pinned(op).await;
                }
                Ok(None) => error_reply("ERR haproxy-rs: a blocking command without a key"),
                Err(e) => e,
            },
            // Inside MULTI: queued, run by EXEC (a blocking command does not block there).
            (Pin::Unwatch | Pin::Blocking | Pin::Wait, true) => {
                return self.queue(req, commands, env).await
            }
        };
        self.push_ready(reply).await;
    }

    /// Queues `req` in the transaction: `+QUEUED`, or `CROSSSLOT` (and `EXEC` will abort) when
    /// its keys leave the transaction's slot.
    pub(super) async fn queue(&mut self, req: Request, commands: &CommandTable, env: &PlanEnv) {
        let planned = plan(commands, &req, env);
        let limits = self.state.tx_limits;
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        // As Redis's `queueMultiCommand`: a command of the wrong arity is refused now, and
        // `EXEC` aborts.
        let refused = match (crate::client::acl::arity_error(commands, &req), planned) {
            (Some(e), _) => Some(e),
            (None, Plan::Slot(s)) if tx.takes_slot(s) => None,
            (None, Plan::AnyMaster) => None,
            (None, Plan::Reply(e)) if is_error_reply(&e) => Some(e),
            _ => Some(error_reply(CROSSSLOT)),
        };
        let reply = match refused {
            None => match tx.push(req.raw(), limits) {
                Push::Queued => status_reply("QUEUED"),
                Push::TooLarge(e) => {
                    tracing::debug!("transaction too large: EXEC will abort");
                    self.stats.transaction_too_large();
                    e
                }
            },
            Some(e) => {
                tx.fail();
                e
            }
        };
        self.push_ready(reply).await;
    }
}

/// `SCRIPT KILL`/`FUNCTION KILL`.
fn is_kill(req: &Request) -> bool {
    let sub = |name: &[u8]| {
        req.name().eq_ignore_ascii_case(name)
            && req.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"kill"))
    };
    sub(b"script") || sub(b"function")
}
