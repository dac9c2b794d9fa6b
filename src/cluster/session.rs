//! One client connection in cluster mode: requests parsed from each read form a [`Chunk`] whose
//! parts go out grouped per node at once; chunks finish concurrently and their replies are
//! written in request order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::exec::{Chunk, RouteCtx, Target, Turn};
use super::merge::Combine;
use super::pinned::{PinCtx, PinOp, WatchConn};
use super::plan::{plan, plan_info, Plan, PlanEnv, CROSSSLOT};
use super::tx::{Push, Tx};
use super::ClusterState;
use crate::backend::Protocol;
use crate::client::acl::{self, ClientAuth};
use crate::client::backlog::{must_write, sleep_until_some, write_or_flush, Backlog};
use crate::client::client_state::ClientState;
use crate::client::reply::{input_error, Close};
use crate::client::{local, ProxyContext};
use crate::config::{ReadConsistency, ReadPolicy};
use crate::resp::{error_reply, status_reply, CommandTable, Request, RequestParser};
use crate::router::{classify_info, is_tracking, tracking_in_resp2, Class, ConnCmd, Endpoint, Pin};
use crate::stats::ListenerStats;

/// One client of a cluster-mode listener.
pub struct ClusterSession {
    ctx: Arc<ProxyContext>,
    state: Arc<ClusterState>,
    endpoint: Endpoint,
    stats: Arc<ListenerStats>,
    id: u64,
    /// The session thread this session runs on.
    worker: usize,
    /// The client's connection as `CLIENT INFO` shows it.
    client: ClientState,
    protocol: Protocol,
    /// Who the client authenticated as (`[auth]`).
    auth: ClientAuth,
    cursor: usize,
    /// Read-your-writes: once the client has written, its reads go to masters.
    track_writes: bool,
    wrote: bool,
    closing: bool,
    /// The transaction being queued (between `MULTI` and `EXEC`/`DISCARD`).
    tx: Option<Tx>,
    /// The connection `WATCH` pinned.
    watch: WatchConn,
    /// The slot of the client's last write: `WAIT` goes to its master.
    wrote_slot: Option<u16>,
    /// A pub/sub command or `MONITOR`: that mode starts with it once the replies before it are
    /// out.
    subscribe: Option<Request>,
}

/// Chunks in flight, in order, with how many requests each holds and the map generation it was
/// routed with.
struct InFlight {
    chunks: FuturesOrdered<BoxFuture<'static, Bytes>>,
    sizes: VecDeque<(usize, u64)>,
    requests: usize,
    /// Sequence number of the next chunk.
    next_seq: u64,
    /// How many chunks have finished (all of those before a chunk's number): a chunk retries,
    /// or sends at all when routed with a newer map than an earlier one, only once every earlier
    /// chunk has finished, so a request never overtakes an earlier one of the same client.
    settled: watch::Sender<u64>,
    /// The last operation on a pinned connection (a blocking command, `WATCH`, `EXEC`): chunks
    /// after it wait until it has finished, as a blocked Redis client runs nothing meanwhile.
    pinned_seq: Option<u64>,
}

impl ClusterSession {
    /// A session for client number `id`.
    pub fn new(
        ctx: Arc<ProxyContext>,
        state: Arc<ClusterState>,
        endpoint: Endpoint,
        stats: Arc<ListenerStats>,
        id: u64,
    ) -> ClusterSession {
        let track_writes = endpoint == Endpoint::Main
            && ctx.routing.read_consistency == ReadConsistency::ReadYourWrites;
        ClusterSession {
            auth: ClientAuth::new(&ctx.security),
            ctx,
            state,
            endpoint,
            stats,
            id,
            worker: 0,
            client: ClientState::new(id),
            protocol: Protocol::Resp2,
            cursor: id as usize,
            track_writes,
            wrote: false,
            closing: false,
            tx: None,
            watch: WatchConn::default(),
            wrote_slot: None,
            subscribe: None,
        }
    }

    /// Serves the client until it quits, breaks the protocol, hangs up, or the proxy stops.
    pub async fn run(
        mut self,
        stream: crate::tls::Stream,
        shutdown: CancellationToken,
        worker: usize,
    ) {
        self.worker = worker;
        let me = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 6379)));
        self.client.peer = stream.peer_addr().ok();
        self.client.local = stream.local_addr().ok();
        let (mut rd, mut wr) = stream.into_split();
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut parser = RequestParser::new(self.ctx.limits);
        let mut flight = InFlight {
            chunks: FuturesOrdered::new(),
            sizes: VecDeque::new(),
            requests: 0,
            next_seq: 0,
            settled: watch::channel(0).0,
            pinned_seq: None,
        };
        let mut backlog = Backlog::new(&self.ctx);
        loop {
            if !self.closing
                && self
                    .dispatch_parsed(&mut parser, &mut inbuf, &mut flight, me)
                    .await
                    == Close::Now
            {
                break;
            }
            let unwritten = out.len();
            while let Some(Some(reply)) = flight.chunks.next().now_or_never() {
                flight.done(&mut out, &reply);
            }
            if backlog.over_limit(&self.stats, unwritten, out.len()) {
                break;
            }
            if let Err(e) = backlog.write_now(&wr, &mut out) {
                tracing::debug!(error = %e, "client write failed");
                break;
            }
            if flight.chunks.is_empty() {
                if let Some(first) = self.subscribe.take() {
                    let locator = super::locate::ClusterLocator::new(self.state.clone());
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
                        crate::pubsub::Exit::Reset => self.reset(),
                        crate::pubsub::Exit::Unsubscribed => {}
                    }
                    continue;
                }
            }
            if self.closing && flight.chunks.is_empty() && out.is_empty() {
                let _ = wr.shutdown().await;
                break;
            }
            let can_read = !self.closing
                && self.subscribe.is_none()
                && flight.requests < self.ctx.max_pipeline;
            // Written as the client reads, while replies keep being collected (see the
            // Sentinel-mode session).
            let writing = must_write(&wr, &out);
            let idle = backlog.idle_deadline(writing || !flight.chunks.is_empty());
            tokio::select! {
                r = write_or_flush(&mut wr, &out), if writing => match r {
                    Ok(n) => backlog.written(&mut out, n),
                    Err(e) => {
                        tracing::debug!(error = %e, "client write failed");
                        break;
                    }
                },
                Some(reply) = flight.chunks.next(), if !flight.chunks.is_empty() => {
                    let unwritten = out.len();
                    flight.done(&mut out, &reply);
                    if backlog.over_limit(&self.stats, unwritten, out.len()) {
                        break;
                    }
                }
                r = rd.read_buf(&mut inbuf), if can_read => match r {
                    // Like Redis, a client that hangs up while blocked (a pop on its own
                    // connection) is dropped at once, and the pop with its connection.
                    Ok(0) if flight.pinned_seq.is_some_and(|p| *flight.settled.borrow() <= p) => break,
                    Ok(0) => self.closing = true,
                    Ok(_) => backlog.active(),
                    Err(e) => {
                        tracing::debug!(error = %e, "client read failed");
                        break;
                    }
                },
                _ = sleep_until_some(idle), if idle.is_some() && !self.closing => {
                    // Closed without a reply, as Redis does (`timeout`).
                    tracing::debug!("idle client closed");
                    self.stats.idle_timeout();
                    break;
                }
                // Chosen to bring the replies of all clients under max_output_bytes_total.
                _ = backlog.evicted() => break,
                _ = shutdown.cancelled(), if !self.closing => self.closing = true,
            }
        }
        backlog.publish(&self.stats);
    }

    /// Parses every complete request in `inbuf` (up to the pipeline cap) into one chunk and
    /// sends it; [`Close::Now`] when the client must be dropped at once (its query buffer limit).
    async fn dispatch_parsed(
        &mut self,
        parser: &mut RequestParser,
        inbuf: &mut BytesMut,
        flight: &mut InFlight,
        me: SocketAddr,
    ) -> Close {
        let mut chunk: Option<Chunk> = None;
        let mut snapshot: Option<(Arc<CommandTable>, PlanEnv)> = None;
        // Nothing after a QUIT is run, as in Redis (CLIENT_CLOSE_AFTER_REPLY stops its input loop).
        while !self.closing
            && self.subscribe.is_none()
            && flight.requests + chunk.as_ref().map_or(0, Chunk::requests) < self.ctx.max_pipeline
        {
            parser.set_unauthenticated(!self.auth.authenticated());
            parser.set_buffered(self.tx.as_ref().map_or(0, Tx::bytes));
            match parser.next(inbuf) {
                Ok(Some(req)) => {
                    let (commands, env) = snapshot.get_or_insert_with(|| {
                        let env = PlanEnv {
                            me,
                            slots_served: self.state.map().served,
                        };
                        (self.ctx.commands.load_full(), env)
                    });
                    let (commands, env) = (commands.clone(), *env);
                    self.handle(req, &commands, &env, &mut chunk, flight).await;
                }
                Ok(None) => break,
                Err(e) => {
                    let (reply, close) = input_error(&self.stats, &e);
                    if close == Close::Now {
                        return Close::Now;
                    }
                    self.chunk(&mut chunk).push_ready(reply);
                    self.closing |= close == Close::AfterReply;
                    break;
                }
            }
        }
        if let Some(c) = chunk.take() {
            self.submit(c, flight).await;
        }
        Close::No
    }

    fn chunk<'c>(&self, chunk: &'c mut Option<Chunk>) -> &'c mut Chunk {
        chunk.get_or_insert_with(|| Chunk::new(self.route_ctx(), self.cursor))
    }

    fn route_ctx(&self) -> RouteCtx {
        RouteCtx {
            state: self.state.clone(),
            protocol: self.protocol,
            conn_slot: self.id as usize,
            worker: self.worker,
            policy: match self.endpoint {
                Endpoint::ReadOnly if self.ctx.routing.read_policy == ReadPolicy::Master => {
                    ReadPolicy::PreferReplica
                }
                _ => self.ctx.routing.read_policy,
            },
            listener: self.stats.clone(),
        }
    }

    /// Sends the chunk's first round and queues its completion. A chunk routed with a newer map
    /// than a chunk still in flight waits for every earlier chunk first (their retries would
    /// otherwise run after it).
    async fn submit(&mut self, mut chunk: Chunk, flight: &mut InFlight) {
        let seq = flight.next_seq;
        flight.next_seq += 1;
        let map = self.state.map();
        let turn = Turn {
            seq,
            settled: flight.settled.subscribe(),
        };
        let requests = chunk.requests();
        flight.sizes.push_back((requests, map.generation));
        flight.requests += requests;
        let behind_pinned = flight
            .pinned_seq
            .is_some_and(|p| *flight.settled.borrow() <= p);
        let newer = behind_pinned || flight.sizes.iter().any(|&(_, g)| g != map.generation);
        if newer {
            flight.chunks.push_back(Box::pin(async move {
                turn.wait().await;
                let map = chunk.route_map();
                let sent = chunk.send(&map).await;
                chunk.finish(sent, turn).await
            }));
        } else {
            let sent = chunk.send(&map).await;
            flight.chunks.push_back(Box::pin(chunk.finish(sent, turn)));
        }
        self.cursor = self.cursor.wrapping_add(requests);
    }

    /// Lets go of the connection `WATCH` pinned (its watches end with it).
    /// `RESET`: RESP2, no name, not authenticated (with `[auth]`), no transaction or `WATCH`.
    fn reset(&mut self) {
        self.protocol = Protocol::Resp2;
        self.client.name = None;
        self.auth.reset(&self.ctx.security);
        self.wrote = false;
        self.tx = None;
        self.unwatch();
    }

    fn unwatch(&self) {
        self.watch.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Runs `op` on a pinned connection once every earlier request has finished; later requests
    /// wait for it.
    async fn submit_pinned(&mut self, op: PinOp, chunk: &mut Option<Chunk>, flight: &mut InFlight) {
        if let Some(c) = chunk.take() {
            self.submit(c, flight).await;
        }
        let seq = flight.next_seq;
        flight.next_seq += 1;
        let turn = Turn {
            seq,
            settled: flight.settled.subscribe(),
        };
        flight.sizes.push_back((1, self.state.map().generation));
        flight.requests += 1;
        flight.pinned_seq = Some(seq);
        let ctx = PinCtx {
            state: self.state.clone(),
            limit: self.ctx.pinned.clone(),
            protocol: self.protocol,
            watch: self.watch.clone(),
        };
        let listener = self.stats.clone();
        flight.chunks.push_back(Box::pin(async move {
            turn.wait().await;
            let reply = op.run(ctx).await;
            if crate::resp::is_error_reply(&reply) {
                listener.error();
            }
            reply
        }));
    }

    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH` and blocking commands.
    async fn pin_command(
        &mut self,
        pin: Pin,
        req: Request,
        commands: &CommandTable,
        env: &PlanEnv,
        chunk: &mut Option<Chunk>,
        flight: &mut InFlight,
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
                    error_reply("EXECABORT Transaction discarded because of previous errors.")
                }
                Some((slot, queued, count)) => {
                    self.wrote_slot = slot.or(self.wrote_slot);
                    let op = PinOp::Exec {
                        slot,
                        queued,
                        count,
                    };
                    return self.submit_pinned(op, chunk, flight).await;
                }
            },
            (Pin::Watch, true) => error_reply("ERR WATCH inside MULTI is not allowed"),
            (Pin::Watch, false) => match slot_of(&req) {
                Ok(Some(slot)) => {
                    let op = PinOp::Watch {
                        slot,
                        raw: req.into_raw(),
                    };
                    return self.submit_pinned(op, chunk, flight).await;
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
                return self.submit_pinned(op, chunk, flight).await;
            }
            (Pin::Blocking, false) => match slot_of(&req) {
                Ok(Some(slot)) => {
                    self.wrote_slot = Some(slot); // a pop writes
                    let op = PinOp::Blocking {
                        slot,
                        raw: req.into_raw(),
                    };
                    return self.submit_pinned(op, chunk, flight).await;
                }
                Ok(None) if is_kill(&req) => {
                    let op = PinOp::Kill {
                        raw: req.into_raw(),
                    };
                    return self.submit_pinned(op, chunk, flight).await;
                }
                Ok(None) => error_reply("ERR haproxy-rs: a blocking command without a key"),
                Err(e) => e,
            },
            // Inside MULTI: queued, run by EXEC (a blocking command does not block there).
            (Pin::Unwatch | Pin::Blocking | Pin::Wait, true) => {
                return self.queue(req, commands, env, chunk)
            }
        };
        self.chunk(chunk).push_ready(reply);
    }

    /// Queues `req` in the transaction: `+QUEUED`, or `CROSSSLOT` (and `EXEC` will abort) when
    /// its keys leave the transaction's slot.
    fn queue(
        &mut self,
        req: Request,
        commands: &CommandTable,
        env: &PlanEnv,
        chunk: &mut Option<Chunk>,
    ) {
        let planned = plan(commands, &req, env);
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        let refused = match planned {
            Plan::Slot(s) if tx.takes_slot(s) => None,
            Plan::AnyMaster => None,
            Plan::Reply(e) if crate::resp::is_error_reply(&e) => Some(e),
            _ => Some(error_reply(CROSSSLOT)),
        };
        let reply = match refused {
            None => match tx.push(req.raw(), self.state.tx_limits) {
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
        self.chunk(chunk).push_ready(reply);
    }

    async fn handle(
        &mut self,
        req: Request,
        commands: &CommandTable,
        env: &PlanEnv,
        chunk: &mut Option<Chunk>,
        flight: &mut InFlight,
    ) {
        self.stats.command();
        if let Some(refused) = acl::check(&self.ctx.security, &self.auth, commands, &req) {
            // A refused command spoils a transaction being queued, as in Redis.
            if let Some(tx) = self
                .tx
                .as_mut()
                .filter(|_| crate::resp::is_error_reply(&refused))
            {
                tx.fail();
            }
            return self.chunk(chunk).push_ready(refused);
        }
        self.ctx.scripts.observe(&req);
        // Cluster clients switch replica reads on and off; the proxy decides where reads go.
        if req.argc() == 1
            && (req.name().eq_ignore_ascii_case(b"readonly")
                || req.name().eq_ignore_ascii_case(b"readwrite"))
        {
            return self.chunk(chunk).push_ready(status_reply("OK"));
        }
        let info = commands.lookup(&req);
        let class = classify_info(info, &req);
        // Inside MULTI everything else is queued (PING and friends too, as Redis does).
        let queued = match class {
            Class::Read | Class::Write | Class::Local(_) => true,
            Class::Conn(c) => c != ConnCmd::Reset,
            _ => false,
        };
        if self.tx.is_some() && queued {
            return self.queue(req, commands, env, chunk);
        }
        let write = match class {
            Class::Read => false,
            Class::Write => true,
            Class::Local(reply) | Class::Reject(reply) => {
                return self.chunk(chunk).push_ready(reply)
            }
            Class::Pin(Pin::Wait) if self.endpoint == Endpoint::ReadOnly => {
                return self
                    .chunk(chunk)
                    .push_ready(error_reply(crate::backend::pinned::WAIT_ON_REPLICA))
            }
            // The read-only endpoint runs no transaction or blocking command (they need the
            // master), as in Sentinel mode.
            Class::Pin(_) if self.endpoint == Endpoint::ReadOnly => {
                return self.chunk(chunk).push_ready(error_reply(
                    "READONLY You can't write against a read only replica.",
                ))
            }
            Class::Pin(pin) => {
                return self
                    .pin_command(pin, req, commands, env, chunk, flight)
                    .await;
            }

            Class::Conn(ConnCmd::Reset) => {
                if let Some(c) = chunk.take() {
                    self.submit(c, flight).await;
                }
                self.reset();
                return self.chunk(chunk).push_ready(status_reply("RESET"));
            }
            Class::PubSub if self.tx.is_some() => {
                return self.chunk(chunk).push_ready(error_reply(
                    "ERR haproxy-rs does not support pub/sub commands inside a transaction",
                ))
            }
            Class::PubSub if self.protocol == Protocol::Resp2 && is_tracking(&req) => {
                return self.chunk(chunk).push_ready(tracking_in_resp2(&req));
            }
            Class::PubSub => {
                if let Some(c) = chunk.take() {
                    self.submit(c, flight).await;
                }
                self.subscribe = Some(req);
                return;
            }
            Class::Conn(cmd) => {
                let reply = self.client.answer(cmd, &req, 0, self.protocol, false);
                return self.chunk(chunk).push_ready(reply);
            }
            Class::Select(0) => return self.chunk(chunk).push_ready(status_reply("OK")),
            Class::Select(_) => {
                return self
                    .chunk(chunk)
                    .push_ready(error_reply("ERR SELECT is not allowed in cluster mode"))
            }
            Class::Quit => {
                self.closing = true;
                return self.chunk(chunk).push_ready(status_reply("OK"));
            }
            Class::Auth => {
                let reply = local::auth_reply(&self.ctx, &mut self.auth, &req).await;
                return self.chunk(chunk).push_ready(reply);
            }
            Class::Hello => {
                // The chunk so far was routed for the protocol in force before HELLO.
                if let Some(c) = chunk.take() {
                    self.submit(c, flight).await;
                }
                let (reply, protocol) = local::hello(
                    &self.ctx,
                    &mut self.auth,
                    self.protocol,
                    &mut self.client,
                    &req,
                )
                .await;
                self.protocol = protocol;
                return self.chunk(chunk).push_ready(reply);
            }
        };
        if write && self.endpoint == Endpoint::ReadOnly {
            return self.chunk(chunk).push_ready(error_reply(
                "READONLY You can't write against a read only replica.",
            ));
        }
        if write && self.track_writes {
            self.wrote = true;
        }
        let replica_ok = !(write || self.track_writes && self.wrote);
        let read = !write;
        let planned = plan_info(commands, info, &req, env);
        match &planned {
            Plan::Slot(slot) if write => self.wrote_slot = Some(*slot),
            Plan::Split { parts, .. } if write => {
                self.wrote_slot = parts.last().map(|&(s, _)| s).or(self.wrote_slot);
            }
            _ => {}
        }
        let c = self.chunk(chunk);
        match planned {
            Plan::Reply(reply) => c.push_ready(reply),
            Plan::Slot(slot) => c.push_parts(
                vec![(Target::Slot(slot), req.into_raw())],
                read,
                replica_ok,
                Combine::First,
            ),
            Plan::AnyMaster => c.push_parts(
                vec![(Target::AnyMaster, req.into_raw())],
                read,
                false,
                Combine::First,
            ),
            Plan::Split { parts, combine } => {
                self.state.stats.split();
                let parts = parts
                    .into_iter()
                    .map(|(slot, raw)| (Target::Slot(slot), raw))
                    .collect();
                c.push_parts(parts, read, replica_ok, combine);
            }
            Plan::AllMasters(combine) => {
                let map = self.state.map();
                if map.masters().is_empty() {
                    return c.push_ready(no_cluster());
                }
                let raw = req.into_raw();
                let parts = map
                    .first_slots()
                    .iter()
                    .map(|&slot| (Target::MasterOf(slot), raw.clone()))
                    .collect();
                c.push_parts(parts, read, false, combine);
            }
            Plan::Scan { node, raw } => {
                let map = self.state.map();
                let nodes = map.masters().len() as u64;
                match usize::try_from(node)
                    .ok()
                    .and_then(|n| map.first_slots().get(n))
                {
                    Some(&slot) => c.push_parts(
                        vec![(Target::MasterOf(slot), raw)],
                        true,
                        false,
                        Combine::Scan { node, nodes },
                    ),
                    None if nodes == 0 => c.push_ready(no_cluster()),
                    None => c.push_ready(error_reply("ERR invalid cursor")),
                }
            }
        }
    }
}

impl InFlight {
    /// The front chunk finished: its replies go out, and the chunks behind it may retry.
    fn done(&mut self, out: &mut BytesMut, reply: &Bytes) {
        out.extend_from_slice(reply);
        if let Some((n, _)) = self.sizes.pop_front() {
            self.requests -= n;
        }
        self.settled.send_modify(|s| *s += 1);
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

fn no_cluster() -> Bytes {
    error_reply("CLUSTERDOWN haproxy-rs: no cluster node known yet")
}
