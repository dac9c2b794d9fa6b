//! The Sentinel/static-mode dispatcher: routes a client's requests to the master or a replica and
//! keeps their replies in request order.
//!
//! Consecutive requests for the same backend go as one batch, on the backend connection slot this
//! client sticks to, so its requests to one backend keep their order. Replies wait in the
//! [`ReplyQueue`] and are written in batches, so a pipeline that mixes reads (replicas) and writes
//! (master) still comes back in order.
//!
//! While there is no master to write to (a failover is under way, or the master's connection is
//! down) requests that need it are *held* in the queue, in order, and routed again whenever the
//! routing table changes (and every 100 ms); after `failover.hold_ms` they get `-TRYAGAIN`. Once
//! a client holds something, everything after it is held too, so a later request never
//! overtakes an earlier one. See `docs/failover.md`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::every_server::{fanout, Fanout};
use super::pinned::{PinState, PinWait};
use super::queue::{Batch, Pending, ReplyQueue, ScanBatch, Target};
use crate::backend::{Backend, BackendError, BatchReply, Dispatch, Protocol};
use crate::client::registry::ClientEntry;
use crate::client::ProxyContext;
use crate::config::ReadConsistency;
use crate::pubsub::Locate;
use crate::resp::{error_reply, status_reply, CommandInfo, CommandTable, Request};
use crate::router::scan::scan_call;
use crate::router::{
    classify_info, read_policy, route, Class, Endpoint, ReadNeed, ReadYourWrites, Route,
    RoutingTable,
};
use crate::stats::ListenerStats;

/// How often held requests are routed again when the table has not changed (a master whose
/// connection is down may come back without a new table).
const HOLD_RETRY: Duration = Duration::from_millis(100);

/// Requests gathered while parsing one read, sent when the target changes or the input runs dry:
/// a pipeline becomes one dispatch instead of one per request.
pub(super) struct OpenBatch {
    pub target: Target,
    /// Opened by a read that any replica may serve, so later such reads join it.
    pub any_read: bool,
    pub count: usize,
    pub writes: u32,
    pub since: Instant,
    pub write_mask: Vec<bool>,
    pub replace_last: Option<Bytes>,
    pub swallow: usize,
    pub scan: Option<ScanBatch>,
}

/// What the dispatcher waited for.
pub enum Progress {
    /// The replies of the batch at the front of the queue.
    Reply(BatchReply),
    /// The routing table changed, or it is time to look again: held requests may go.
    RetryHeld,
}

/// One client's routing in Sentinel and static mode.
pub struct Dispatcher {
    pub(super) ctx: Arc<ProxyContext>,
    /// The client's registry entry (where a blocking command waits, for `CLIENT UNBLOCK`).
    pub(super) client: Option<Arc<ClientEntry>>,
    pub(super) endpoint: Endpoint,
    pub(super) stats: Arc<ListenerStats>,
    /// Backend connection slot; fixed for the client's life.
    pub(super) slot: usize,
    /// The session thread the client runs on (whose backend connections it uses).
    pub(super) worker: usize,
    /// Round-robin cursor over replicas.
    cursor: usize,
    /// The client's protocol (the connections its requests use speak it).
    pub(super) protocol: Protocol,
    rw: ReadYourWrites,
    track_writes: bool,
    /// Reads also wait for every client's acknowledged writes (`"acknowledged-writes"`).
    track_all: bool,
    pub(super) queue: ReplyQueue,
    pub(super) open: Option<OpenBatch>,
    /// The open batch's bytes; reused, so dispatching does not allocate once it has grown.
    batch_buf: BytesMut,
    table_changes: watch::Receiver<u64>,
    /// The routing table the current read's requests are routed with.
    table: Option<Arc<RoutingTable>>,
    /// No more requests will come: QUIT, a protocol error, EOF or shutdown.
    pub(super) closing: bool,
    /// The client's pinned connection, during a transaction or a `WATCH`.
    pub(super) pin: Option<PinState>,
    /// Whether the last batch sent (or deferred) went to a pinned connection.
    last_pinned: bool,
    /// The database the client has selected (each has its own backend connections).
    pub(super) db: u8,
    /// `MULTI` could not get a connection: the commands until `EXEC`/`DISCARD` are refused and
    /// `EXEC` answers `-EXECABORT`, as Redis does when a command fails to queue (never run
    /// outside the transaction the client asked for).
    pub(super) multi_failed: bool,
    /// A `MULTI`/`WATCH`/blocking command waiting for a master to open its connection on;
    /// nothing after it is parsed meanwhile.
    pub(super) pin_wait: Option<PinWait>,
}

impl Dispatcher {
    /// The dispatcher of client number `id` on `endpoint`.
    pub fn new(
        ctx: Arc<ProxyContext>,
        endpoint: Endpoint,
        stats: Arc<ListenerStats>,
        id: u64,
    ) -> Dispatcher {
        let (track_writes, track_all) = tracking(&ctx, endpoint);
        let table_changes = ctx.table_changes.clone();
        Dispatcher {
            ctx,
            client: None,
            endpoint,
            stats,
            slot: id as usize,
            worker: 0,
            cursor: id as usize,
            protocol: Protocol::Resp2,
            rw: ReadYourWrites::default(),
            track_writes,
            track_all,
            queue: ReplyQueue::default(),
            open: None,
            batch_buf: BytesMut::new(),
            table_changes,
            table: None,
            closing: false,
            pin: None,
            last_pinned: false,
            db: 0,
            multi_failed: false,
            pin_wait: None,
        }
    }

    /// The client runs on session thread `worker`.
    pub fn attach(&mut self, worker: usize, _local: Option<SocketAddr>, client: Arc<ClientEntry>) {
        self.worker = worker;
        self.client = Some(client);
    }

    /// How this mode sees a command.
    pub fn classify(&self, info: Option<&CommandInfo>, req: &Request) -> Class {
        classify_info(info, req)
    }

    /// A read's requests are routed with the table of this moment.
    pub fn begin_read(&mut self) {
        self.table = Some(self.ctx.table.load_full());
    }

    /// Routes a read, a write, `SELECT`, a transaction's or blocking command, or anything
    /// queued inside `MULTI` (which goes to the client's own connection).
    pub async fn command(
        &mut self,
        req: Request,
        info: Option<&CommandInfo>,
        class: Class,
        _commands: &CommandTable,
    ) {
        // One async level for the common path (each level showed in callgrind, per request).
        let table = self
            .table
            .take()
            .unwrap_or_else(|| self.ctx.table.load_full());
        let in_multi = self.in_multi();
        let req = match fanout(info) {
            // The kill commands from either endpoint; CONFIG SET from the main one.
            Some(how)
                if self.pin.is_none()
                    && (how == Fanout::Own
                        || matches!(class, Class::Write) && self.endpoint == Endpoint::Main) =>
            {
                match self.every_server(req, &table, how).await {
                    Ok(()) => return,
                    Err(req) => req,
                }
            }
            _ => req,
        };
        let write = match class {
            Class::Read => false,
            Class::Write => true,
            // In a transaction the server queues PING and friends too.
            Class::Local(_) => true,
            // And `CLIENT GETNAME`...: queued there, answered for the pinned connection (which is
            // then not recycled, its name or flags may have changed).
            Class::Conn(_) => {
                if let Some(p) = &mut self.pin {
                    p.dirty = true;
                }
                true
            }
            Class::Pin(pin) => return self.pinned(pin, req, &table).await,
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
            // The session answers the rest itself.
            Class::Reject(reply) => return self.push_ready(reply).await,
            Class::Quit | Class::Auth | Class::Hello | Class::PubSub => return,
        };
        debug_assert!(
            in_multi || matches!(class, Class::Read | Class::Write | Class::Select(_)),
            "only MULTI queues local and CLIENT commands"
        );
        if self.multi_failed {
            return self.push_ready(error_reply("TRYAGAIN haproxy-rs: the transaction could not start (no connection to the master); not queued")).await;
        }
        if let Some(p) = &self.pin {
            // In a transaction (or under WATCH) everything goes to the client's connection.
            let conn = p.conn.clone();
            self.gather(Target::Pinned(conn), false).await;
            self.append(&req, write);
            self.table = Some(table);
            return;
        }
        if !write {
            if let Some(call) = scan_call(info, &req) {
                return self.scan(call, req, &table).await;
            }
        }
        let need = self.read_need(write, &table);
        let any_read = !write && need == ReadNeed::Any;
        let holding = self.queue.held() > 0
            || matches!(
                self.open,
                Some(OpenBatch {
                    target: Target::Hold,
                    ..
                })
            );
        let joins_open = self.open.as_ref().is_some_and(|o| o.any_read && any_read);
        if holding {
            if !self.joins(&Target::Hold) {
                self.open_batch(Target::Hold, any_read).await;
            }
        } else if !joins_open {
            let target = match self.route(&table, write, need) {
                Route::To(b) => Target::Backend(b),
                Route::Hold => Target::Hold,
                Route::Error(reply) => return self.push_ready(reply).await,
            };
            if !self.joins(&target) {
                self.open_batch(target, any_read).await;
            }
        }
        self.append(&req, write);
        // Kept for the read's next request, unless a flush let it go.
        if self.table.is_none() && self.open.is_some() {
            self.table = Some(table);
        }
    }

    /// Between `MULTI` and `EXEC`/`DISCARD`.
    pub fn in_multi(&self) -> bool {
        self.pin.as_ref().is_some_and(|p| p.multi)
    }

    /// Takes `ctx` (a reload's), unless the client still depends on the one it has: replies
    /// awaited, a pinned connection (`MULTI`, `WATCH`, a blocking command) or one waited for.
    pub fn adopt(&mut self, ctx: &Arc<ProxyContext>) -> bool {
        if !self.is_idle() || self.open.is_some() || self.pin.is_some() || self.pin_wait.is_some() {
            return false;
        }
        (self.track_writes, self.track_all) = tracking(ctx, self.endpoint);
        self.ctx = ctx.clone();
        true
    }

    /// A command of the transaction was refused by the proxy: `EXEC` becomes `DISCARD` and
    /// answers `-EXECABORT`, as Redis does.
    pub fn spoil_transaction(&mut self) {
        if let Some(p) = self.pin.as_mut().filter(|p| p.multi) {
            p.refused = true;
        }
    }

    /// The client's database.
    pub fn db(&self) -> u8 {
        self.db
    }

    /// Nothing is kept for the client: a transaction is queued by the master.
    pub fn buffered_bytes(&self) -> usize {
        0
    }

    /// Requests parsed whose replies have not been written yet.
    pub fn queued(&self) -> usize {
        let open = self
            .open
            .as_ref()
            .map_or(0, |o| o.count.saturating_sub(o.swallow));
        self.queue.requests() + open
    }

    /// Not while a command waits for a master to open its connection on.
    pub fn can_parse(&self) -> bool {
        self.pin_wait.is_none()
    }

    /// Nothing waits for a reply.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The client waits for a reply on its own connection (a blocking pop).
    pub fn blocked(&self) -> bool {
        self.queue.waits_pinned()
    }

    /// Waits for the front batch's replies, or (while something is held, or waits for a
    /// master) for the table to change or the retry interval to pass.
    pub async fn progress(&mut self) -> Progress {
        let holding = self.queue.held() > 0 || self.pin_wait.is_some();
        if !holding {
            // The common case, without a select of its own inside the session's.
            return Progress::Reply(self.queue.front_reply().await);
        }
        tokio::select! {
            r = self.queue.front_reply() => Progress::Reply(r),
            _ = table_changed(&mut self.table_changes) => Progress::RetryHeld,
            _ = tokio::time::sleep(HOLD_RETRY) => Progress::RetryHeld,
        }
    }

    /// Writes the front batch's replies, or routes held requests again.
    pub async fn advance(&mut self, progress: Progress, out: &mut BytesMut) {
        match progress {
            Progress::Reply(reply) => {
                if let Some(Pending::Waiting { batch, backend, .. }) = self.queue.pop_front() {
                    self.finish(batch, &backend, reply, out);
                }
            }
            Progress::RetryHeld => {
                self.release_held(false).await;
                self.retry_pin_wait(false).await;
            }
        }
    }

    /// Later requests use connections speaking `protocol`.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// `RESET`: database 0, no transaction or `WATCH` (the pinned connection is let go).
    pub async fn reset(&mut self) {
        self.flush().await;
        self.pin = None;
        self.multi_failed = false;
        self.db = 0;
    }

    /// No more requests will come: a command waiting for a master is refused once the wait
    /// fails, instead of waiting on.
    pub fn close_input(&mut self) {
        self.closing = true;
    }

    /// The proxy is stopping: held requests and a command waiting for a master are answered
    /// now.
    pub async fn shutdown(&mut self) {
        self.release_held(true).await;
        self.retry_pin_wait(true).await;
    }

    /// The client is gone: the budget of requests still held is given back.
    pub fn end(&mut self) {
        self.drop_held();
    }

    /// Subscriber mode's links go to the master.
    pub fn locator(&self) -> Box<dyn Locate> {
        Box::new(super::MasterLocator::new(
            self.ctx.table.clone(),
            self.ctx.backends.clone(),
        ))
    }

    /// Sends `raw` alone in a batch of its own to `target`.
    pub(super) async fn open_alone(&mut self, target: Target, raw: Bytes, scan: ScanBatch) {
        self.open_batch(target, false).await;
        self.batch_buf.extend_from_slice(&raw);
        if let Some(open) = &mut self.open {
            open.count += 1;
            open.scan = Some(scan);
            if self.ctx.marks_writes() {
                open.write_mask.push(false);
            }
        }
        self.flush().await;
    }

    /// Adds `req` to the open batch.
    pub(super) fn append(&mut self, req: &Request, write: bool) {
        self.batch_buf.extend_from_slice(req.raw());
        let durable = self.ctx.marks_writes();
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
    /// (see [`crate::backend::pinned::wait_probe`]); it must lead the batch.
    pub(super) fn append_probe(&mut self, probe: Bytes) {
        if let Some(open) = self.open.as_mut().filter(|o| o.count == o.swallow) {
            self.batch_buf.extend_from_slice(&probe);
            open.count += 1;
            open.swallow += 1;
        }
    }

    /// What a read needs for read-your-writes (`Any` for writes and when that is off).
    pub(super) fn read_need(&mut self, write: bool, table: &RoutingTable) -> ReadNeed {
        if self.track_writes && !write {
            let own = self.rw.need(&self.ctx.clock);
            if !self.track_all {
                return own;
            }
            match self.ctx.clock.acknowledged_need() {
                ReadNeed::Any => own,
                // While the master cannot be asked (down, or being replaced), the replicas have
                // what the new master will have: reads go on there.
                all if master_answers(table) => own.and(all),
                _ => own,
            }
        } else {
            ReadNeed::Any
        }
    }

    /// Routes a request of this client's endpoint under the endpoint's read policy, to the
    /// backend of the server the table names (a server whose backend was let go is down).
    pub(super) fn route(
        &mut self,
        table: &RoutingTable,
        write: bool,
        need: ReadNeed,
    ) -> Route<Arc<Backend>> {
        let policy = read_policy(self.endpoint, self.ctx.routing.read_policy);
        let (backends, open) = (&self.ctx.backends, &self.open);
        route(
            table,
            self.endpoint,
            policy,
            write,
            need,
            &mut self.cursor,
            |server| {
                match open {
                    // Where the open batch goes already: no lookup.
                    Some(OpenBatch {
                        target: Target::Backend(b),
                        ..
                    }) if Arc::ptr_eq(b.server(), server) => Some(b.clone()),
                    _ => backends.resolve(server),
                }
            },
        )
    }

    /// Makes `target` the open batch's target, sending the open batch first if it goes elsewhere.
    pub(super) async fn gather(&mut self, target: Target, any_read: bool) {
        // Most requests join the open batch: no future for the flush is built for them (its
        // construction alone, per request, showed in callgrind).
        if !self.joins(&target) {
            self.open_batch(target, any_read).await;
        }
    }

    /// Whether the open batch goes to `target`.
    fn joins(&self, target: &Target) -> bool {
        match (&self.open, target) {
            (Some(o), Target::Backend(b)) => {
                matches!(&o.target, Target::Backend(ob) if Arc::ptr_eq(ob, b))
            }
            (Some(o), Target::Hold) => matches!(o.target, Target::Hold),
            (Some(o), Target::Pinned(_)) => o.target.pinned(),
            (None, _) => false,
        }
    }

    /// Sends the open batch and opens one for `target`.
    async fn open_batch(&mut self, target: Target, any_read: bool) {
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
            scan: None,
        });
    }

    /// Queues a reply known already, after whatever was gathered before it.
    pub async fn push_ready(&mut self, reply: Bytes) {
        self.flush().await;
        self.queue.push_back(Pending::Ready(reply));
    }

    /// Sends (or holds) the open batch; the read's table snapshot is let go.
    pub async fn flush(&mut self) {
        self.table = None;
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
            resent: false,
            scan: open.scan,
        };
        let pinned = open.target.pinned();
        let switch = pinned != self.last_pinned;
        self.last_pinned = pinned;
        if self.queue.deferred() > 0 || (switch && self.queue.outstanding()) {
            self.queue.push_back(Pending::Deferred(batch, open.target));
            return;
        }
        self.send_to(batch, open.target).await;
    }

    /// Sends (or holds) a batch now.
    async fn send_to(&mut self, batch: Batch, target: Target) {
        match target {
            // Behind a batch held just now (a deferred one): held too, so it cannot overtake it.
            Target::Backend(_) if self.queue.held() > 0 => self.hold(batch, false),
            Target::Backend(backend) => self.dispatch(batch, backend).await,
            Target::Hold => self.hold(batch, false),
            Target::Pinned(conn) => {
                let mut batch = batch;
                batch.pinned = true;
                let (dispatch, rx) = Dispatch::new(batch.raw.clone(), batch.count, false);
                let backend = conn.backend().clone();
                match conn.send(dispatch).await {
                    Ok(()) => self
                        .queue
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

    /// Sends the deferred batches at the front of the queue, once everything before them is
    /// answered: the first, and those after it that go the same kind of way. True when it sent
    /// something.
    pub async fn send_deferred(&mut self) -> bool {
        let pinned = match self.queue.front() {
            Some(Pending::Deferred(_, target)) => target.pinned(),
            _ => return false,
        };
        // Sent in order at the back, then rotated into place: pop the run, send each.
        let mut run = Vec::new();
        while let Some(Pending::Deferred(_, target)) = self.queue.front() {
            if target.pinned() != pinned {
                break;
            }
            if let Some(Pending::Deferred(batch, target)) = self.queue.pop_front() {
                run.push((batch, target));
            }
        }
        let rest = self.queue.take_all();
        for (batch, target) in run {
            self.send_to(batch, target).await;
        }
        for entry in rest {
            self.queue.push_back(entry);
        }
        true
    }

    /// Sends a batch to `backend`; one the backend's connections refuse unsent is held.
    pub(super) async fn dispatch(&mut self, mut batch: Batch, backend: Arc<Backend>) {
        batch.waited = self.ctx.durability.is_some() && batch.writes > 0;
        let (dispatch, rx) = Dispatch::new(batch.raw.clone(), batch.count, batch.waited);
        let sent = match backend.pool(self.worker, self.protocol, batch.db) {
            Some(pool) => pool.send(self.slot, dispatch).await,
            None => Err(BackendError::Unavailable),
        };
        match sent {
            Ok(()) => self
                .queue
                .push_back(Pending::Waiting { rx, batch, backend }),
            Err(_) => self.hold(batch, false),
        }
    }

    /// Answers every request of `batch` with `reply` (never sent anywhere).
    pub(super) fn fail_batch(&mut self, batch: Batch, reply: Bytes, front: bool) {
        // Never acknowledged: other clients need not see these writes.
        self.own_writes_done(batch.writes);
        // Each is counted as an error when collected, as every ready reply is.
        for _ in 0..batch.replies() {
            if front {
                self.queue.push_front(Pending::Ready(reply.clone()));
            } else {
                self.queue.push_back(Pending::Ready(reply.clone()));
            }
        }
    }

    /// `writes` of the client's were answered (before the client sees the replies).
    pub(super) fn writes_done(&mut self, writes: u32) {
        self.own_writes_done(writes);
        if self.track_all && writes > 0 {
            self.ctx.clock.acknowledged();
        }
    }

    fn own_writes_done(&mut self, writes: u32) {
        if self.track_writes {
            for _ in 0..writes {
                self.rw.write_done(&self.ctx.clock);
            }
        }
    }
}

/// Whether the table's master is there to read from: reachable and not fenced off.
fn master_answers(table: &RoutingTable) -> bool {
    table.fence.is_none() && table.master.as_ref().is_some_and(|m| m.health.reachable())
}

/// Resolves when the routing table changes (never, once the topology is gone).
async fn table_changed(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Whether reads follow the client's own writes, and every client's (`read_consistency`; the
/// read-only endpoint follows none).
fn tracking(ctx: &ProxyContext, endpoint: Endpoint) -> (bool, bool) {
    let consistency = ctx.routing.read_consistency;
    (
        endpoint == Endpoint::Main && consistency != ReadConsistency::Eventual,
        endpoint == Endpoint::Main && consistency == ReadConsistency::AcknowledgedWrites,
    )
}
