//! One client connection: parse requests, route each, and return replies in request order.
//!
//! A session is a single task. Requests are dispatched as soon as they are parsed (pipelining):
//! consecutive requests for the same backend go as one batch, on the backend connection slot this
//! session sticks to, so its requests to one backend keep their order. Replies wait in a FIFO and
//! are written in batches, so a pipeline that mixes reads (replicas) and writes (master) still
//! comes back in order.
//!
//! While there is no master to write to (a failover is under way, or the master's connection is
//! down) requests that need it are *held* in the FIFO, in order, and routed again whenever the
//! routing table changes (and every 100 ms); after `failover.hold_ms` they get
//! `-TRYAGAIN`. Once a session holds something, everything after it is held too, so a later
//! request never overtakes an earlier one. See `docs/failover.md`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::acl::ClientAuth;
use super::backlog::{must_write, sleep_until_some, write_or_flush, Backlog};
use super::client_state::ClientState;
use super::reply::{backend_error, input_error, Close};
use super::{acl, local, ProxyContext};
use crate::backend::pinned::{wait_probe, wait_probe_refused, WAIT_ON_REPLICA};
use crate::backend::{Backend, BackendError, BatchReply, Dispatch, Pinned, Protocol};
use crate::config::ReadConsistency;
use crate::resp::{
    error_reply, is_error_reply, status_reply, CommandTable, Request, RequestParser,
};
use crate::router::{
    classify, hold_expired_reply, hold_full_reply, is_tracking, route, tracking_in_resp2, Class,
    ConnCmd, Endpoint, Pin, ReadNeed, ReadYourWrites, Route, RoutingTable,
};
use crate::stats::ListenerStats;

/// How often held requests are routed again when the table has not changed (a master whose
/// connection is down may come back without a new table).
const HOLD_RETRY: Duration = Duration::from_millis(100);

/// Requests for one backend, sent (or to be sent) as one dispatch.
struct Batch {
    /// The requests, back to back, as they go on the wire.
    raw: Bytes,
    count: usize,
    writes: u32,
    /// When the first of them was parsed.
    since: Instant,
    /// Which requests are writes, kept only with `write_durability`.
    write_mask: Vec<bool>,
    /// Sent as durable: its replies come with the confirmation of the `WAIT` written after it.
    waited: bool,
    /// Sent on the client's pinned connection.
    pinned: bool,
    /// The database the client had selected when it sent these requests.
    db: u8,
    /// The last request's reply is replaced by this (an `EXEC` sent as `DISCARD`).
    replace_last: Option<Bytes>,
    /// Leading requests of the proxy's own (the probe before `WAIT`), counted in `count`, whose
    /// replies the client does not get.
    swallow: usize,
    /// The pinned connection of a blocking command or `WAIT`, recycled once the batch is answered
    /// whole (dropped with the batch if the client leaves first, which closes it).
    recycle: Option<Pinned>,
}

impl Batch {
    /// How many of the requests are the client's (each gets a reply).
    fn replies(&self) -> usize {
        self.count - self.swallow
    }
}

/// A reply slot, in request order.
enum Pending {
    /// Known already (local answers, refusals, errors).
    Ready(Bytes),
    /// Sent to a backend; the replies come through `rx`.
    Waiting {
        rx: oneshot::Receiver<BatchReply>,
        batch: Batch,
        backend: Arc<Backend>,
    },
    /// Waiting for a master (its bytes count against `max_held_bytes`).
    Held(Batch),
    /// Not sent yet: it goes to another connection than the requests before it (the client's
    /// pinned one, or back to the shared ones), so it waits until they are answered.
    Deferred(Batch, Target),
}

/// Where the batch being gathered goes.
enum Target {
    Backend(Arc<Backend>),
    Hold,
    /// The client's own connection (a transaction, a blocking command).
    Pinned(Pinned),
}

impl Target {
    fn pinned(&self) -> bool {
        matches!(self, Target::Pinned(_))
    }
}

/// The connection a client holds during a transaction (or a `WATCH`).
struct PinState {
    conn: Pinned,
    /// Between `MULTI` and `EXEC`/`DISCARD`.
    multi: bool,
    /// A command of the transaction was refused by the proxy (users' rules, command policy):
    /// `EXEC` becomes `DISCARD` and answers `-EXECABORT`, as Redis does.
    refused: bool,
    /// A `SELECT` (or a `CLIENT` command) was sent on the connection: it is not as it was
    /// opened, so it is not recycled.
    dirty: bool,
}

/// Requests gathered while parsing one read, sent when the target changes or the input runs dry:
/// a pipeline becomes one dispatch instead of one per request.
struct OpenBatch {
    target: Target,
    /// Opened by a read that any replica may serve, so later such reads join it.
    any_read: bool,
    count: usize,
    writes: u32,
    since: Instant,
    write_mask: Vec<bool>,
    replace_last: Option<Bytes>,
    swallow: usize,
}

/// One client's state.
pub struct Session {
    ctx: Arc<ProxyContext>,
    endpoint: Endpoint,
    stats: Arc<ListenerStats>,
    /// Backend connection slot; fixed for the session's life.
    slot: usize,
    /// Round-robin cursor over replicas.
    cursor: usize,
    /// The client's connection as `CLIENT INFO` shows it (and its id, `HELLO`'s).
    client: ClientState,
    /// RESP2 until the client says `HELLO 3`.
    protocol: Protocol,
    /// Who the client authenticated as (`[auth]`).
    auth: ClientAuth,
    rw: ReadYourWrites,
    track_writes: bool,
    pending: VecDeque<Pending>,
    /// `Held` entries in `pending`.
    held: usize,
    /// Requests parsed whose replies have not been written yet.
    queued: usize,
    open: Option<OpenBatch>,
    /// The open batch's bytes; reused, so dispatching does not allocate once it has grown.
    batch_buf: BytesMut,
    table_changes: watch::Receiver<u64>,
    /// No more requests are read: QUIT, a protocol error, EOF or shutdown.
    closing: bool,
    /// The client's pinned connection, during a transaction or a `WATCH`.
    pin: Option<PinState>,
    /// Whether the last batch sent (or deferred) went to a pinned connection.
    last_pinned: bool,
    /// `Deferred` entries in `pending`.
    deferred: usize,
    /// The database the client has selected (each has its own backend connections).
    db: u8,
    /// `MULTI` could not get a connection: the commands until `EXEC`/`DISCARD` are refused and
    /// `EXEC` answers `-EXECABORT`, as Redis does when a command fails to queue (never run
    /// outside the transaction the client asked for).
    multi_failed: bool,
    /// A pub/sub command or `MONITOR`: that mode starts with it once the replies before it are
    /// out.
    subscribe: Option<Request>,
    /// A `MULTI`/`WATCH`/blocking command waiting for a master to open its connection on (since
    /// when); nothing after it is parsed meanwhile.
    pin_wait: Option<(Pin, Request, Instant)>,
}

enum Event {
    Reply(BatchReply),
    Read(std::io::Result<usize>),
    Written(std::io::Result<usize>),
    RetryHeld,
    Idle,
    /// Chosen to bring the replies of all clients under `max_output_bytes_total`.
    Evicted,
    Shutdown,
}

impl Session {
    /// A session for client number `id` on `endpoint`.
    pub fn new(
        ctx: Arc<ProxyContext>,
        endpoint: Endpoint,
        stats: Arc<ListenerStats>,
        id: u64,
    ) -> Session {
        let track_writes = endpoint == Endpoint::Main
            && ctx.routing.read_consistency == ReadConsistency::ReadYourWrites;
        let table_changes = ctx.table_changes.clone();
        let auth = ClientAuth::new(&ctx.security);
        Session {
            ctx,
            endpoint,
            stats,
            slot: id as usize,
            cursor: id as usize,
            client: ClientState::new(id),
            protocol: Protocol::Resp2,
            auth,
            rw: ReadYourWrites::default(),
            track_writes,
            pending: VecDeque::new(),
            held: 0,
            queued: 0,
            open: None,
            batch_buf: BytesMut::new(),
            table_changes,
            closing: false,
            pin: None,
            last_pinned: false,
            deferred: 0,
            multi_failed: false,
            db: 0,
            subscribe: None,
            pin_wait: None,
        }
    }

    /// Serves the client until it quits, breaks the protocol, hangs up, or the proxy stops.
    pub async fn run(mut self, stream: crate::tls::Stream, shutdown: CancellationToken) {
        self.client.peer = stream.peer_addr().ok();
        self.client.local = stream.local_addr().ok();
        let (mut rd, mut wr) = stream.into_split();
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut parser = RequestParser::new(self.ctx.limits);
        let mut backlog = Backlog::new(&self.ctx);
        loop {
            if !self.closing && self.dispatch_parsed(&mut parser, &mut inbuf).await == Close::Now {
                break;
            }
            let unwritten = out.len();
            self.collect_ready(&mut out);
            if backlog.over_limit(&self.stats, unwritten, out.len()) {
                break;
            }
            if self.deferred > 0 && self.send_deferred().await {
                continue;
            }
            if let Err(e) = backlog.write_now(&wr, &mut out) {
                tracing::debug!(error = %e, "client write failed");
                break;
            }
            if self.pending.is_empty() {
                if let Some(first) = self.subscribe.take() {
                    let locator = crate::pubsub::MasterLocator::new(self.ctx.table.clone());
                    let parts = crate::pubsub::SessionParts {
                        ctx: &self.ctx,
                        stats: &self.stats,
                        auth: &mut self.auth,
                        protocol: self.protocol,
                        locator: &locator,
                    };
                    let io = crate::pubsub::ClientIo {
                        rd: &mut rd,
                        wr: &mut wr,
                        inbuf: &mut inbuf,
                        out: &mut out,
                        parser: &mut parser,
                        backlog: &mut backlog,
                    };
                    match crate::pubsub::serve(parts, io, first, &shutdown).await {
                        crate::pubsub::Exit::Close => break,
                        crate::pubsub::Exit::Reset => self.reset().await,
                        crate::pubsub::Exit::Unsubscribed => {}
                    }
                    continue;
                }
            }
            if self.closing && self.pending.is_empty() && out.is_empty() {
                let _ = wr.shutdown().await;
                break;
            }
            let can_read = !self.closing
                && self.subscribe.is_none()
                && self.pin_wait.is_none()
                && self.queued < self.ctx.max_pipeline;
            let holding = self.held > 0 || self.pin_wait.is_some();
            // The client is written to as it reads, while replies keep being collected (so the
            // output buffer limit sees a client that does not read) and requests keep being read.
            let writing = must_write(&wr, &out);
            let idle = backlog.idle_deadline(writing || !self.pending.is_empty());
            let event = tokio::select! {
                r = write_or_flush(&mut wr, &out), if writing => Event::Written(r),
                r = front_reply(&mut self.pending) => Event::Reply(r),
                r = rd.read_buf(&mut inbuf), if can_read => Event::Read(r),
                _ = table_changed(&mut self.table_changes), if holding => Event::RetryHeld,
                _ = tokio::time::sleep(HOLD_RETRY), if holding => Event::RetryHeld,
                _ = sleep_until_some(idle), if idle.is_some() && !self.closing => Event::Idle,
                _ = backlog.evicted() => Event::Evicted,
                _ = shutdown.cancelled(), if !self.closing => Event::Shutdown,
            };
            match event {
                Event::Written(Ok(n)) => backlog.written(&mut out, n),
                Event::Written(Err(e)) => {
                    tracing::debug!(error = %e, "client write failed");
                    break;
                }
                Event::Reply(reply) => {
                    if let Some(Pending::Waiting { batch, backend, .. }) = self.pending.pop_front()
                    {
                        let unwritten = out.len();
                        self.finish(batch, &backend, reply, &mut out);
                        if backlog.over_limit(&self.stats, unwritten, out.len()) {
                            break;
                        }
                    }
                }
                Event::Read(Ok(0)) => {
                    self.closing = true;
                    // Like Redis, a client that hangs up while it waits on its own connection (a
                    // blocking pop) is dropped at once: its connection closes, the pop with it.
                    let pinned_wait = self
                        .pending
                        .iter()
                        .any(|p| matches!(p, Pending::Waiting { batch, .. } if batch.pinned));
                    if pinned_wait {
                        break;
                    }
                }
                Event::Read(Ok(_)) => backlog.active(),
                Event::Read(Err(e)) => {
                    tracing::debug!(error = %e, "client read failed");
                    break;
                }
                Event::RetryHeld => {
                    self.release_held(false).await;
                    self.retry_pin_wait(false).await;
                }
                Event::Idle => {
                    // Closed without a reply, as Redis does (`timeout`).
                    tracing::debug!("idle client closed");
                    self.stats.idle_timeout();
                    break;
                }
                Event::Evicted => break,
                Event::Shutdown => {
                    self.closing = true;
                    self.release_held(true).await;
                    self.retry_pin_wait(true).await;
                }
            }
        }
        backlog.publish(&self.stats);
        self.drop_held();
    }

    /// Parses and dispatches every complete request in `inbuf`, up to the pipeline cap;
    /// [`Close::Now`] when the client must be dropped at once (its query buffer limit).
    async fn dispatch_parsed(&mut self, parser: &mut RequestParser, inbuf: &mut BytesMut) -> Close {
        let mut snapshot: Option<(Arc<RoutingTable>, Arc<CommandTable>)> = None;
        // Nothing after a QUIT is run, as in Redis (CLIENT_CLOSE_AFTER_REPLY stops its input loop).
        while !self.closing
            && self.subscribe.is_none()
            && self.pin_wait.is_none()
            && self.queued < self.ctx.max_pipeline
        {
            parser.set_unauthenticated(!self.auth.authenticated());
            match parser.next(inbuf) {
                Ok(Some(req)) => {
                    let ctx = &self.ctx;
                    let (table, commands) = snapshot
                        .get_or_insert_with(|| (ctx.table.load_full(), ctx.commands.load_full()));
                    self.handle(req, table, commands).await;
                }
                Ok(None) => break,
                Err(e) => {
                    let (reply, close) = input_error(&self.stats, &e);
                    if close == Close::Now {
                        return Close::Now;
                    }
                    self.push_ready(reply).await;
                    self.closing |= close == Close::AfterReply;
                    break;
                }
            }
        }
        self.flush().await;
        Close::No
    }

    async fn handle(&mut self, req: Request, table: &RoutingTable, commands: &CommandTable) {
        self.stats.command();
        if let Some(refused) = acl::check(&self.ctx.security, &self.auth, commands, &req) {
            if let Some(p) = self.pin.as_mut().filter(|p| p.multi) {
                p.refused = true;
            }
            return self.push_ready(refused).await;
        }
        self.ctx.scripts.observe(&req);
        let in_multi = self.pin.as_ref().is_some_and(|p| p.multi);
        let class = match classify(commands, &req) {
            // In a transaction the server queues PING and friends too.
            Class::Local(_) if self.pin.is_some() => Class::Write,
            // And `CLIENT GETNAME`...: queued there, answered for the pinned connection (which is
            // then not recycled, its name or flags may have changed).
            Class::Conn(c) if in_multi && c != ConnCmd::Reset => {
                if let Some(p) = &mut self.pin {
                    p.dirty = true;
                }
                Class::Write
            }
            class => class,
        };
        let write = match class {
            Class::Read => false,
            Class::Write => true,
            Class::Local(reply) | Class::Reject(reply) => return self.push_ready(reply).await,
            Class::Quit => {
                self.closing = true;
                return self.push_ready(status_reply("OK")).await;
            }
            Class::Auth => {
                let reply = local::auth_reply(&self.ctx, &mut self.auth, &req).await;
                return self.push_ready(reply).await;
            }
            Class::Hello => {
                // Flush first: the batch was gathered for the protocol in force before HELLO.
                self.flush().await;
                let (reply, protocol) = local::hello(
                    &self.ctx,
                    &mut self.auth,
                    self.protocol,
                    &mut self.client,
                    &req,
                )
                .await;
                self.protocol = protocol;
                return self.push_ready(reply).await;
            }
            Class::Pin(pin) => return self.pinned(pin, req, table).await,
            Class::Conn(ConnCmd::Reset) => {
                self.reset().await;
                return self.push_ready(status_reply("RESET")).await;
            }
            Class::PubSub if self.pin.is_some() => {
                return self.push_ready(error_reply("ERR haproxy-rs does not support pub/sub commands inside a transaction or under WATCH")).await;
            }
            Class::PubSub if self.protocol == Protocol::Resp2 && is_tracking(&req) => {
                return self.push_ready(tracking_in_resp2(&req)).await;
            }
            Class::PubSub => {
                self.flush().await;
                self.subscribe = Some(req);
                return;
            }
            Class::Conn(cmd) => {
                let multi = self.pin.as_ref().is_some_and(|p| p.multi);
                let reply = self.client.answer(cmd, &req, self.db, self.protocol, multi);
                return self.push_ready(reply).await;
            }
            Class::Select(db) if self.pin.is_none() => {
                // The batch gathered so far goes to the database selected before.
                self.flush().await;
                self.db = db;
                return self.push_ready(status_reply("OK")).await;
            }
            // In a transaction the server runs it (queued until EXEC); later requests use `db`.
            Class::Select(db) => {
                self.db = db;
                if let Some(p) = &mut self.pin {
                    p.dirty = true;
                }
                true
            }
        };
        if self.multi_failed {
            return self.push_ready(error_reply("TRYAGAIN haproxy-rs: the transaction could not start (no connection to the master); not queued")).await;
        }
        if let Some(p) = &self.pin {
            // In a transaction (or under WATCH) everything goes to the client's connection.
            let conn = p.conn.clone();
            self.gather(Target::Pinned(conn), false).await;
            return self.append(&req, write);
        }
        let need = self.read_need(write);
        let any_read = !write && need == ReadNeed::Any;
        let holding = self.held > 0
            || matches!(
                self.open,
                Some(OpenBatch {
                    target: Target::Hold,
                    ..
                })
            );
        let joins_open = self.open.as_ref().is_some_and(|o| o.any_read && any_read);
        if holding {
            self.gather(Target::Hold, any_read).await;
        } else if !joins_open {
            let target = match self.route(table, write, need) {
                Route::Backend(b) => Target::Backend(b.clone()),
                Route::Hold => Target::Hold,
                Route::Error(reply) => return self.push_ready(reply).await,
            };
            self.gather(target, any_read).await;
        }
        self.append(&req, write);
    }

    /// `RESET`: back to a fresh connection's state (database 0, RESP2, no name, no transaction
    /// or `WATCH`: the pinned connection is let go).
    async fn reset(&mut self) {
        self.flush().await;
        self.pin = None;
        self.multi_failed = false;
        self.db = 0;
        self.protocol = Protocol::Resp2;
        self.client.name = None;
        self.auth.reset(&self.ctx.security);
    }

    /// Adds `req` to the open batch.
    fn append(&mut self, req: &Request, write: bool) {
        self.batch_buf.extend_from_slice(req.raw());
        self.queued += 1;
        let durable = self.ctx.durability.is_some();
        if let Some(open) = &mut self.open {
            open.count += 1;
            if write {
                open.writes += 1;
            }
            if durable {
                open.write_mask.push(write);
            }
        }
        if write && self.track_writes {
            self.rw.write_sent();
        }
    }

    /// Adds a request of the proxy's own to the open batch, whose reply the client does not get
    /// (see [`wait_probe`]); it must lead the batch.
    fn append_probe(&mut self, probe: Bytes) {
        if let Some(open) = self.open.as_mut().filter(|o| o.count == o.swallow) {
            self.batch_buf.extend_from_slice(&probe);
            open.count += 1;
            open.swallow += 1;
        }
    }

    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`, blocking commands and `WAIT`: on the
    /// client's own connection to the master, opened by `MULTI`/`WATCH` (or for one blocking
    /// command or `WAIT`) and let go by `EXEC`/`DISCARD`/`UNWATCH` (or once the command is sent).
    /// `WAIT` goes after [`wait_probe`], once the client's earlier requests are answered (the
    /// batch is deferred until then), so it counts the replicas that have all of them.
    async fn pinned(&mut self, pin: Pin, req: Request, table: &RoutingTable) {
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
            let reply = match pin {
                Pin::Exec => {
                    error_reply("EXECABORT Transaction discarded because of previous errors.")
                }
                Pin::Discard => status_reply("OK"),
                Pin::Multi => error_reply("ERR MULTI calls can not be nested"),
                _ => error_reply("TRYAGAIN haproxy-rs: the transaction could not start (no connection to the master); not queued"),
            };
            self.multi_failed = !matches!(pin, Pin::Exec | Pin::Discard);
            return self.push_ready(reply).await;
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
                let conn = match self.route(table, true, ReadNeed::Any) {
                    Route::Backend(b) => {
                        let b = b.clone();
                        Pinned::open(b, self.protocol, self.db, &self.ctx.pinned).await
                    }
                    Route::Hold => Err(BackendError::Unavailable),
                    Route::Error(reply) => {
                        self.multi_failed = pin == Pin::Multi;
                        return self.push_ready(reply).await;
                    }
                };
                // No master (a failover), or no connection to it yet: the command waits, as
                // writes are held, until there is one or `failover.hold_ms` has passed.
                let since = since.unwrap_or_else(Instant::now);
                if conn.is_err() && since.elapsed() < self.ctx.hold && !self.closing {
                    self.flush().await;
                    self.pin_wait = Some((pin, req, since));
                    return;
                }
                match conn {
                    Ok(conn) => {
                        self.pin = Some(PinState {
                            conn,
                            multi: false,
                            refused: false,
                            dirty: false,
                        })
                    }
                    Err(_) => {
                        self.multi_failed = pin == Pin::Multi;
                        return self
                            .push_ready(error_reply(
                                "TRYAGAIN haproxy-rs: no connection to the master for this transaction or blocking command (failover in progress, or backend.max_pinned_connections reached); not executed",
                            ))
                            .await;
                    }
                }
            }
            _ => {}
        }
        let Some(p) = &mut self.pin else {
            return;
        };
        if pin == Pin::Multi {
            p.multi = true;
        }
        let conn = p.conn.clone();
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
                open.replace_last = Some(error_reply(
                    "EXECABORT Transaction discarded because of previous errors.",
                ));
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

    /// What a read needs for read-your-writes (`Any` for writes and when that is off).
    fn read_need(&mut self, write: bool) -> ReadNeed {
        if self.track_writes && !write {
            self.rw.need(&self.ctx.clock)
        } else {
            ReadNeed::Any
        }
    }

    /// Routes a request of this session's endpoint under the configured read policy.
    fn route<'t>(&mut self, table: &'t RoutingTable, write: bool, need: ReadNeed) -> Route<'t> {
        let policy = self.ctx.routing.read_policy;
        route(table, self.endpoint, policy, write, need, &mut self.cursor)
    }

    /// Makes `target` the open batch's target, sending the open batch first if it goes elsewhere.
    async fn gather(&mut self, target: Target, any_read: bool) {
        let same = match (&self.open, &target) {
            (Some(o), Target::Backend(b)) => {
                matches!(&o.target, Target::Backend(ob) if Arc::ptr_eq(ob, b))
            }
            (Some(o), Target::Hold) => matches!(o.target, Target::Hold),
            (Some(o), Target::Pinned(_)) => o.target.pinned(),
            (None, _) => false,
        };
        if !same {
            self.flush().await;
            self.open = Some(OpenBatch {
                target,
                any_read,
                count: 0,
                writes: 0,
                since: Instant::now(),
                write_mask: Vec::new(),
                replace_last: None,
                swallow: 0,
            });
        }
    }

    /// Queues a reply known already, after whatever was gathered before it.
    async fn push_ready(&mut self, reply: Bytes) {
        self.flush().await;
        self.queued += 1;
        self.pending.push_back(Pending::Ready(reply));
    }

    /// Sends (or holds) the open batch.
    async fn flush(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let batch = Batch {
            raw: self.batch_buf.split().freeze(),
            count: open.count,
            writes: open.writes,
            since: open.since,
            write_mask: open.write_mask,
            waited: false,
            pinned: false,
            db: self.db,
            replace_last: open.replace_last,
            swallow: open.swallow,
            recycle: None,
        };
        let pinned = open.target.pinned();
        let switch = pinned != self.last_pinned;
        self.last_pinned = pinned;
        if self.deferred > 0 || (switch && self.outstanding()) {
            self.deferred += 1;
            self.pending
                .push_back(Pending::Deferred(batch, open.target));
            return;
        }
        self.send_to(batch, open.target).await;
    }

    /// Sends (or holds) a batch now.
    async fn send_to(&mut self, batch: Batch, target: Target) {
        match target {
            Target::Backend(backend) => self.dispatch(batch, backend).await,
            Target::Hold => self.hold(batch, false),
            Target::Pinned(conn) => {
                let mut batch = batch;
                batch.pinned = true;
                let (dispatch, rx) = Dispatch::new(batch.raw.clone(), batch.count, false);
                let backend = conn.backend().clone();
                match conn.send(dispatch).await {
                    Ok(()) => self
                        .pending
                        .push_back(Pending::Waiting { rx, batch, backend }),
                    // The connection ended before (a failover): nothing of this was sent.
                    Err(_) => {
                        let reply = error_reply(&format!(
                            "ERR haproxy-rs: the connection to {} held for this client's transaction or WATCH was lost before; the command was not executed",
                            backend.addr()
                        ));
                        self.fail_batch(batch, reply, false);
                    }
                }
            }
        }
    }

    /// Hands `conn` to the batch just sent (or deferred) on it, to be recycled with its reply.
    fn recycle_after_reply(&mut self, conn: Pinned) {
        match self.pending.back_mut() {
            Some(Pending::Waiting { batch, .. }) if batch.pinned => batch.recycle = Some(conn),
            Some(Pending::Deferred(batch, Target::Pinned(_))) => batch.recycle = Some(conn),
            _ => {}
        }
    }

    /// Whether requests before the open batch are still unanswered.
    fn outstanding(&self) -> bool {
        self.pending.iter().any(|p| !matches!(p, Pending::Ready(_)))
    }

    /// Sends the deferred batches at the front of the queue, once everything before them is
    /// answered: the first, and those after it that go the same kind of way. True when it sent
    /// something.
    async fn send_deferred(&mut self) -> bool {
        let pinned = match self.pending.front() {
            Some(Pending::Deferred(_, target)) => target.pinned(),
            _ => return false,
        };
        // Sent in order at the back, then rotated into place: pop the run, send each.
        let mut run = Vec::new();
        while let Some(Pending::Deferred(_, target)) = self.pending.front() {
            if target.pinned() != pinned {
                break;
            }
            if let Some(Pending::Deferred(batch, target)) = self.pending.pop_front() {
                self.deferred -= 1;
                run.push((batch, target));
            }
        }
        let rest = std::mem::take(&mut self.pending);
        for (batch, target) in run {
            self.send_to(batch, target).await;
        }
        self.pending.extend(rest);
        true
    }

    /// Sends a batch to `backend`; one the backend's connections refuse unsent is held.
    async fn dispatch(&mut self, mut batch: Batch, backend: Arc<Backend>) {
        batch.waited = self.ctx.durability.is_some() && batch.writes > 0;
        let (dispatch, rx) = Dispatch::new(batch.raw.clone(), batch.count, batch.waited);
        let sent = match backend.pool(self.protocol, batch.db) {
            Some(pool) => pool.send(self.slot, dispatch).await,
            None => Err(BackendError::Unavailable),
        };
        match sent {
            Ok(()) => self
                .pending
                .push_back(Pending::Waiting { rx, batch, backend }),
            Err(_) => self.hold(batch, false),
        }
    }

    /// Holds a batch (at the front of the queue when `front`), or refuses it at once when the
    /// held bytes would pass `max_held_bytes`.
    fn hold(&mut self, batch: Batch, front: bool) {
        let max = self.ctx.max_held_bytes;
        if self.ctx.holds.try_hold(batch.raw.len(), batch.count, max) {
            self.held += 1;
            if front {
                self.pending.push_front(Pending::Held(batch));
            } else {
                self.pending.push_back(Pending::Held(batch));
            }
        } else {
            self.fail_batch(batch, hold_full_reply(), front);
        }
    }

    /// Answers every request of `batch` with `reply` (never sent anywhere).
    fn fail_batch(&mut self, batch: Batch, reply: Bytes, front: bool) {
        self.writes_done(batch.writes);
        for _ in 0..batch.replies() {
            self.stats.error();
            if front {
                self.pending.push_front(Pending::Ready(reply.clone()));
            } else {
                self.pending.push_back(Pending::Ready(reply.clone()));
            }
        }
    }

    /// Routes held requests again, in order: sent on when there is a master, answered
    /// `-TRYAGAIN` once held for `failover.hold_ms` (or at once when `expire_all`).
    async fn release_held(&mut self, expire_all: bool) {
        if self.held == 0 {
            return;
        }
        let table = self.ctx.table.load_full();
        let entries = std::mem::take(&mut self.pending);
        self.held = 0;
        for entry in entries {
            match entry {
                Pending::Held(batch) => self.release(batch, &table, expire_all).await,
                other => {
                    self.flush().await;
                    self.pending.push_back(other);
                }
            }
        }
        self.flush().await;
    }

    async fn release(&mut self, batch: Batch, table: &RoutingTable, expire_all: bool) {
        let (bytes, count) = (batch.raw.len(), batch.count);
        let waited = batch.since.elapsed();
        if expire_all || waited >= self.ctx.hold {
            self.ctx.holds.leave(bytes, count, false);
            tracing::debug!(
                requests = count,
                waited_ms = waited.as_millis() as u64,
                "held requests expired"
            );
            return self.fail_batch(batch, hold_expired_reply(waited), false);
        }
        let write = batch.writes > 0;
        let route_to = if self.held > 0 {
            Route::Hold // keep the order behind a batch that is still held
        } else {
            let need = self.read_need(write);
            self.route(table, write, need)
        };
        match route_to {
            Route::Backend(b) => {
                self.ctx.holds.leave(bytes, count, true);
                let b = b.clone();
                self.dispatch(batch, b).await;
            }
            Route::Hold => {
                self.held += 1;
                self.pending.push_back(Pending::Held(batch));
            }
            Route::Error(reply) => {
                self.ctx.holds.leave(bytes, count, false);
                self.fail_batch(batch, reply, false);
            }
        }
    }

    /// Tries again to open the connection of a command waiting for a master (at once refused
    /// when `expire`: the proxy is stopping). Parsing resumes once it is settled.
    async fn retry_pin_wait(&mut self, expire: bool) {
        let Some((pin, req, since)) = self.pin_wait.take() else {
            return;
        };
        if self.held > 0 && !expire {
            // Requests before it are still held: they go first.
            self.pin_wait = Some((pin, req, since));
            return;
        }
        // At shutdown the session is closing: no more waiting, the command is refused.
        let table = self.ctx.table.load_full();
        self.pinned_since(pin, req, &table, Some(since)).await;
    }

    /// Gives back the budget of requests still held when the session ends.
    fn drop_held(&mut self) {
        for entry in self.pending.drain(..) {
            if let Pending::Held(b) = entry {
                self.ctx.holds.leave(b.raw.len(), b.count, false);
            }
        }
        self.held = 0;
    }

    fn writes_done(&mut self, writes: u32) {
        if self.track_writes {
            for _ in 0..writes {
                self.rw.write_done(&self.ctx.clock);
            }
        }
    }

    /// Moves every reply that is already known, from the front of the queue, into `out`.
    fn collect_ready(&mut self, out: &mut BytesMut) {
        loop {
            let reply = match self.pending.front_mut() {
                Some(Pending::Ready(_)) => None,
                Some(Pending::Waiting { rx, .. }) => match rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(oneshot::error::TryRecvError::Empty) => return,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        Some(BatchReply::failed(BackendError::ConnectionLost))
                    }
                },
                Some(Pending::Held(_) | Pending::Deferred(..)) | None => return,
            };
            match (self.pending.pop_front(), reply) {
                (Some(Pending::Ready(b)), _) => {
                    self.queued -= 1;
                    out.extend_from_slice(&b);
                }
                (Some(Pending::Waiting { batch, backend, .. }), Some(reply)) => {
                    self.finish(batch, &backend, reply, out);
                }
                _ => return,
            }
        }
    }

    /// Writes a dispatch's replies into `out`: the frames, then an error for each request the
    /// backend did not answer. A batch the backend refused unsent is held instead.
    fn finish(
        &mut self,
        mut batch: Batch,
        backend: &Backend,
        mut reply: BatchReply,
        out: &mut BytesMut,
    ) {
        if reply.frames.is_empty() && matches!(reply.error, Some(BackendError::Unavailable)) {
            return self.hold(batch, true);
        }
        // The probe before a WAIT answered first; the client only sees WAIT's reply.
        let swallowed = batch.swallow.min(reply.frames.len());
        let refused = reply
            .frames
            .drain(..swallowed)
            .find_map(|f| wait_probe_refused(&f, "PUBLISH __haproxy-rs:wait"));
        if let (Some(refused), Some(wait)) = (refused, reply.frames.first_mut()) {
            *wait = refused;
        }
        if batch.waited {
            self.check_durability(&batch, &mut reply);
        }
        let count = batch.replies();
        if let Some(r) = &batch.replace_last {
            if reply.frames.len() == count {
                if let Some(last) = reply.frames.last_mut() {
                    *last = r.clone();
                }
            }
        }
        self.writes_done(batch.writes);
        self.queued -= count;
        let answered = reply.frames.len().min(count);
        for frame in reply.frames.iter().take(count) {
            if is_error_reply(frame) {
                self.stats.error();
            }
            out.extend_from_slice(frame);
        }
        if answered < count {
            let error = reply.error.unwrap_or(BackendError::ConnectionLost);
            tracing::debug!(backend.addr = backend.addr(), error = %error, "request failed");
            let (bytes, _) = backend_error(&error, backend.addr());
            for _ in answered..count {
                self.stats.error();
                out.extend_from_slice(&bytes);
            }
        } else if let Some(conn) = batch.recycle.take() {
            // A blocking command answered: its connection is as fresh.
            conn.recycle();
        }
    }
}

impl Session {
    /// Unless the `WAIT` after the batch confirmed enough replicas, each write's reply becomes an
    /// error (the client must not count on it).
    fn check_durability(&self, batch: &Batch, reply: &mut BatchReply) {
        let Some(d) = self.ctx.durability.as_ref() else {
            return;
        };
        // None: the connection failed before WAIT answered.
        let confirmed = reply.confirmed;
        if confirmed.is_some_and(|n| n >= i64::from(d.replicas)) {
            return;
        }
        let error = match confirmed {
            Some(n) => error_reply(&format!(
                "ERR haproxy-rs: the write reached the master but only {n} of {} replicas confirmed it within {} ms (write_durability); it may be lost in a failover",
                d.replicas, d.timeout_ms
            )),
            None => error_reply("ERR haproxy-rs: the write was not confirmed by the replicas (write_durability): the connection was lost; its outcome is unknown"),
        };
        for (frame, write) in reply.frames.iter_mut().zip(&batch.write_mask) {
            if *write && !is_error_reply(frame) {
                *frame = error.clone();
            }
        }
    }
}

/// Waits for the replies at the front of the queue (never resolves when the front is not waiting).
async fn front_reply(pending: &mut VecDeque<Pending>) -> BatchReply {
    match pending.front_mut() {
        Some(Pending::Waiting { rx, .. }) => rx
            .await
            .unwrap_or_else(|_| BatchReply::failed(BackendError::ConnectionLost)),
        _ => std::future::pending().await,
    }
}

/// Resolves when the routing table changes (never, once the topology is gone).
async fn table_changed(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
