//! The cluster-mode dispatcher: requests parsed from each read form a [`Chunk`] whose parts go
//! out grouped per node at once; chunks finish concurrently and their replies are written in
//! request order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::exec::{Chunk, RouteCtx, Target};
use super::merge::Combine;
use super::pinned::WatchConn;
use super::plan::{plan_info, Plan, PlanEnv};
use super::tx::Tx;
use super::ClusterState;
use crate::backend::pinned::WAIT_ON_REPLICA;
use crate::backend::Protocol;
use crate::client::registry::ClientEntry;
use crate::client::ProxyContext;
use crate::config::ReadConsistency;
use crate::pubsub::Locate;
use crate::resp::{error_reply, status_reply, CommandInfo, CommandTable, Request};
use crate::router::{classify_info, read_policy, Class, ConnCmd, Endpoint, Pin};
use crate::stats::ListenerStats;

/// Where the proxy says it is when the client connection's own address is unknown.
const DEFAULT_ME: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6379);

/// One client's routing in cluster mode.
pub struct Dispatcher {
    pub(super) ctx: Arc<ProxyContext>,
    /// The client's registry entry (where a blocking command waits, for `CLIENT UNBLOCK`).
    pub(super) client: Option<Arc<ClientEntry>>,
    pub(super) state: Arc<ClusterState>,
    endpoint: Endpoint,
    pub(super) stats: Arc<ListenerStats>,
    id: u64,
    /// The session thread the client runs on.
    worker: usize,
    /// The proxy's address as this client reached it.
    me: SocketAddr,
    pub(super) protocol: Protocol,
    cursor: usize,
    /// Read-your-writes: once the client has written, its reads go to masters.
    track_writes: bool,
    wrote: bool,
    /// The transaction being queued (between `MULTI` and `EXEC`/`DISCARD`).
    pub(super) tx: Option<Tx>,
    /// The connection `WATCH` pinned.
    pub(super) watch: WatchConn,
    /// The slot of the client's last write: `WAIT` goes to its master.
    pub(super) wrote_slot: Option<u16>,
    /// What the current read's requests are planned with.
    env: Option<PlanEnv>,
    /// The current read's requests, sent as one chunk.
    chunk: Option<Chunk>,
    pub(super) flight: InFlight,
}

/// Chunks in flight, in order, with how many requests each holds and the map generation it was
/// routed with.
pub(super) struct InFlight {
    pub chunks: FuturesOrdered<BoxFuture<'static, Bytes>>,
    pub sizes: VecDeque<ChunkSize>,
    /// The requests of `sizes`, together.
    requests: usize,
    /// Sequence number of the next chunk.
    pub next_seq: u64,
    /// How many chunks have finished (all of those before a chunk's number): a chunk retries,
    /// or sends at all when routed with a newer map than an earlier one, only once every earlier
    /// chunk has finished, so a request never overtakes an earlier one of the same client.
    pub settled: watch::Sender<u64>,
    /// The last operation on a pinned connection (a blocking command, `WATCH`, `EXEC`): chunks
    /// after it wait until it has finished, as a blocked Redis client runs nothing meanwhile.
    pub pinned_seq: Option<u64>,
}

/// A chunk in flight: how many requests it holds, and the map generation it was routed with.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkSize {
    pub requests: usize,
    pub generation: u64,
}

impl Dispatcher {
    /// The dispatcher of client number `id` on `endpoint`.
    pub fn new(
        ctx: Arc<ProxyContext>,
        state: Arc<ClusterState>,
        endpoint: Endpoint,
        stats: Arc<ListenerStats>,
        id: u64,
    ) -> Dispatcher {
        let (track_writes, wrote) = tracking(&ctx, endpoint);
        Dispatcher {
            ctx,
            client: None,
            state,
            endpoint,
            stats,
            id,
            worker: 0,
            me: DEFAULT_ME,
            protocol: Protocol::Resp2,
            cursor: id as usize,
            track_writes,
            wrote,
            tx: None,
            watch: WatchConn::default(),
            wrote_slot: None,
            env: None,
            chunk: None,
            flight: InFlight {
                chunks: FuturesOrdered::new(),
                sizes: VecDeque::new(),
                requests: 0,
                next_seq: 0,
                settled: watch::channel(0).0,
                pinned_seq: None,
            },
        }
    }

    /// The client runs on session thread `worker` and reached the proxy at `local`.
    pub fn attach(&mut self, worker: usize, local: Option<SocketAddr>, client: Arc<ClientEntry>) {
        self.worker = worker;
        self.me = local.unwrap_or(DEFAULT_ME);
        self.client = Some(client);
    }

    /// How this mode sees a command: cluster clients switch replica reads on and off with
    /// `READONLY`/`READWRITE`, but the proxy decides where reads go, so those are answered
    /// `+OK` at once (inside `MULTI` too).
    pub fn classify(&self, info: Option<&CommandInfo>, req: &Request) -> Class {
        if req.argc() == 1
            && (req.name().eq_ignore_ascii_case(b"readonly")
                || req.name().eq_ignore_ascii_case(b"readwrite"))
        {
            return Class::Reject(status_reply("OK"));
        }
        classify_info(info, req)
    }

    /// A read's requests are planned with the slot map of this moment.
    pub fn begin_read(&mut self) {
        self.env = Some(self.plan_env());
    }

    fn plan_env(&self) -> PlanEnv {
        PlanEnv {
            me: self.me,
            slots_served: self.state.map().served,
            resp3: self.protocol == Protocol::Resp3,
        }
    }

    /// Between `MULTI` and `EXEC`/`DISCARD`.
    pub fn in_multi(&self) -> bool {
        self.tx.is_some()
    }

    /// Takes `ctx` (a reload's), unless the client still depends on the one it has: replies
    /// awaited, a transaction or a `WATCH`.
    pub fn adopt(&mut self, ctx: &Arc<ProxyContext>) -> bool {
        let watching = self.watch.lock().map_or(true, |w| w.is_some());
        if !self.is_idle() || self.chunk.is_some() || self.tx.is_some() || watching {
            return false;
        }
        let (track_writes, all_writes) = tracking(ctx, self.endpoint);
        self.track_writes = track_writes;
        self.wrote |= all_writes;
        self.ctx = ctx.clone();
        true
    }

    /// A command of the transaction was refused: `EXEC` aborts.
    pub fn spoil_transaction(&mut self) {
        if let Some(tx) = self.tx.as_mut() {
            tx.fail();
        }
    }

    /// Cluster mode has database 0 only.
    pub fn db(&self) -> u8 {
        0
    }

    /// The bytes of the transaction being queued by the proxy.
    pub fn buffered_bytes(&self) -> usize {
        self.tx.as_ref().map_or(0, Tx::bytes)
    }

    /// Requests parsed whose replies have not been written yet.
    pub fn queued(&self) -> usize {
        self.flight.requests + self.chunk.as_ref().map_or(0, Chunk::requests)
    }

    /// Always: nothing waits before it is sent.
    pub fn can_parse(&self) -> bool {
        true
    }

    /// No chunk in flight.
    pub fn is_idle(&self) -> bool {
        self.flight.chunks.is_empty()
    }

    /// The client waits on a pinned connection (a blocking command).
    pub fn blocked(&self) -> bool {
        self.flight
            .pinned_seq
            .is_some_and(|p| *self.flight.settled.borrow() <= p)
    }

    /// Moves the replies of the chunks finished already, in order, into `out`.
    pub fn collect(&mut self, out: &mut BytesMut) {
        while let Some(Some(reply)) = self.flight.chunks.next().now_or_never() {
            self.flight.done(out, &reply);
        }
    }

    /// Nothing is ever deferred: chunks wait for their turn themselves.
    pub async fn send_deferred(&mut self) -> bool {
        false
    }

    /// The front chunk's replies. Cancel-safe.
    pub async fn progress(&mut self) -> Bytes {
        match self.flight.chunks.next().await {
            Some(reply) => reply,
            None => std::future::pending().await,
        }
    }

    /// Writes the front chunk's replies.
    pub fn advance(&mut self, reply: Bytes, out: &mut BytesMut) {
        self.flight.done(out, &reply);
    }

    /// Later requests use connections speaking `protocol`.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
        self.env = None;
    }

    /// `RESET`: no transaction or `WATCH` (the pinned connection is let go).
    pub async fn reset(&mut self) {
        self.flush().await;
        self.tx = None;
        self.unwatch();
    }

    /// Nothing waits for a master here.
    pub fn close_input(&mut self) {}

    /// Chunks finish on their own.
    pub async fn shutdown(&mut self) {}

    /// Nothing is held.
    pub fn end(&mut self) {}

    /// Subscriber mode's links follow the slot map.
    pub fn locator(&self) -> Box<dyn Locate> {
        Box::new(super::locate::ClusterLocator::new(self.state.clone()))
    }

    /// Lets go of the connection `WATCH` pinned (its watches end with it).
    pub(super) fn unwatch(&self) {
        self.watch.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Queues a reply known already, after the requests before it.
    pub async fn push_ready(&mut self, reply: Bytes) {
        self.open_chunk().push_ready(reply);
    }

    /// Sends the chunk gathered from the read.
    pub async fn flush(&mut self) {
        self.env = None;
        if let Some(c) = self.chunk.take() {
            self.submit(c).await;
        }
    }

    /// The chunk gathered so far, to be sent before a pinned operation.
    pub(super) fn take_chunk(&mut self) -> Option<Chunk> {
        self.chunk.take()
    }

    /// The chunk being gathered (opened on first use).
    pub(super) fn open_chunk(&mut self) -> &mut Chunk {
        let Dispatcher {
            chunk,
            ctx,
            state,
            stats,
            endpoint,
            protocol,
            id,
            worker,
            cursor,
            ..
        } = self;
        chunk.get_or_insert_with(|| {
            let route = RouteCtx {
                state: state.clone(),
                protocol: *protocol,
                conn_slot: *id as usize,
                worker: *worker,
                policy: read_policy(*endpoint, ctx.routing.read_policy),
                listener: stats.clone(),
            };
            Chunk::new(route, *cursor)
        })
    }

    /// Sends the chunk's first round and queues its completion. A chunk routed with a newer map
    /// than a chunk still in flight waits for every earlier chunk first (their retries would
    /// otherwise run after it).
    pub(super) async fn submit(&mut self, mut chunk: Chunk) {
        let map = self.state.map();
        let requests = chunk.requests();
        let turn = self.flight.enter(requests, map.generation);
        let behind_pinned = self
            .flight
            .pinned_seq
            .is_some_and(|p| *self.flight.settled.borrow() <= p);
        let newer = behind_pinned
            || self
                .flight
                .sizes
                .iter()
                .any(|s| s.generation != map.generation);
        if newer {
            self.flight.chunks.push_back(Box::pin(async move {
                turn.wait().await;
                let map = chunk.route_map();
                let sent = chunk.send(&map).await;
                chunk.finish(sent, turn).await
            }));
        } else {
            let sent = chunk.send(&map).await;
            self.flight
                .chunks
                .push_back(Box::pin(chunk.finish(sent, turn)));
        }
        self.cursor = self.cursor.wrapping_add(requests);
    }

    /// Routes a read, a write, `SELECT`, a transaction's or blocking command, or anything
    /// queued inside `MULTI` (kept by the proxy until `EXEC`).
    pub async fn command(
        &mut self,
        req: Request,
        info: Option<&CommandInfo>,
        class: Class,
        commands: &CommandTable,
    ) {
        let env = self.env.unwrap_or_else(|| self.plan_env());
        // Inside MULTI everything else is queued (PING and friends too, as Redis does).
        let queued = match class {
            Class::Read | Class::Write | Class::Local(_) => true,
            Class::Conn(c) => c != ConnCmd::Reset,
            _ => false,
        };
        if self.tx.is_some() && queued {
            return self.queue(req, commands, &env).await;
        }
        let write = match class {
            Class::Read => false,
            Class::Write => true,
            Class::Pin(Pin::Wait) if self.endpoint == Endpoint::ReadOnly => {
                return self.push_ready(error_reply(WAIT_ON_REPLICA)).await
            }
            // The read-only endpoint runs no transaction or blocking command (they need the
            // master), as in Sentinel mode.
            Class::Pin(_) if self.endpoint == Endpoint::ReadOnly => {
                return self
                    .push_ready(error_reply(
                        "READONLY You can't write against a read only replica.",
                    ))
                    .await
            }
            Class::Pin(pin) => return self.pin_command(pin, req, commands, &env).await,
            Class::Select(0) => return self.push_ready(status_reply("OK")).await,
            Class::Select(_) => {
                return self
                    .push_ready(error_reply("ERR SELECT is not allowed in cluster mode"))
                    .await
            }
            Class::Local(reply) | Class::Reject(reply) => return self.push_ready(reply).await,
            // The session answers the rest itself.
            _ => return,
        };
        self.route_data(req, info, write, commands, &env).await;
    }

    /// A read or a write: to its slot's node, split over several, or to every master.
    async fn route_data(
        &mut self,
        req: Request,
        info: Option<&CommandInfo>,
        write: bool,
        commands: &CommandTable,
        env: &PlanEnv,
    ) {
        if write && self.endpoint == Endpoint::ReadOnly {
            return self
                .push_ready(error_reply(
                    "READONLY You can't write against a read only replica.",
                ))
                .await;
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
        match planned {
            Plan::Reply(reply) => self.open_chunk().push_ready(reply),
            Plan::Slot(slot) => self.open_chunk().push_parts(
                vec![(Target::Slot(slot), req.into_raw())],
                read,
                replica_ok,
                Combine::First,
            ),
            Plan::AnyMaster => self.open_chunk().push_parts(
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
                self.open_chunk()
                    .push_parts(parts, read, replica_ok, combine);
            }
            Plan::AllMasters(combine) => {
                let map = self.state.map();
                if map.masters().is_empty() {
                    return self.open_chunk().push_ready(no_cluster());
                }
                let raw = req.into_raw();
                let parts = map
                    .first_slots()
                    .iter()
                    .map(|&slot| (Target::MasterOf(slot), raw.clone()))
                    .collect();
                self.open_chunk().push_parts(parts, read, false, combine);
            }
            Plan::Scan {
                node,
                raw,
                start,
                count,
            } => {
                let map = self.state.map();
                let first_slots = map.first_slots();
                let nodes = first_slots.len() as u64;
                // A master's iteration that starts here may run on into the next masters'
                // (from their start) in the same call, as far as `SCAN_CHAIN` of them.
                let chain = if start { SCAN_CHAIN } else { 1 };
                let parts: Vec<_> = usize::try_from(node)
                    .ok()
                    .and_then(|n| first_slots.get(n..))
                    .unwrap_or_default()
                    .iter()
                    .take(chain)
                    .map(|&slot| (Target::MasterOf(slot), raw.clone()))
                    .collect();
                let c = self.open_chunk();
                if parts.is_empty() {
                    c.push_ready(if nodes == 0 {
                        no_cluster()
                    } else {
                        error_reply("ERR invalid cursor")
                    });
                } else {
                    c.push_parts(parts, true, false, Combine::Scan { node, nodes, count });
                }
            }
        }
    }
}

impl InFlight {
    /// A chunk of `requests` routed with map `generation` enters: its turn.
    pub fn enter(&mut self, requests: usize, generation: u64) -> super::exec::Turn {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sizes.push_back(ChunkSize {
            requests,
            generation,
        });
        self.requests += requests;
        self.check();
        super::exec::Turn {
            seq,
            settled: self.settled.subscribe(),
        }
    }

    /// The front chunk finished: its replies go out, and the chunks behind it may retry.
    fn done(&mut self, out: &mut BytesMut, reply: &Bytes) {
        out.extend_from_slice(reply);
        if let Some(size) = self.sizes.pop_front() {
            // Never below zero: every size popped was added.
            self.requests = self.requests.saturating_sub(size.requests);
        }
        self.check();
        self.settled.send_modify(|s| *s += 1);
    }

    /// Debug builds: `requests` is the sum of the chunks' sizes.
    fn check(&self) {
        debug_assert_eq!(
            self.requests,
            self.sizes.iter().map(|s| s.requests).sum::<usize>(),
            "requests in flight"
        );
    }
}

/// How many masters one `SCAN` call may cover: a small cluster's keys come in one call, as a
/// small database's do from one server, and the masters scanned ahead of need stay few.
const SCAN_CHAIN: usize = 16;

pub(super) fn no_cluster() -> Bytes {
    error_reply("CLUSTERDOWN haproxy-rs: no cluster node known yet")
}

/// Whether reads follow the client's own writes, and whether they stay on the masters from the
/// start (`read_consistency`; the read-only endpoint follows none). For every client's
/// acknowledged writes they do: the cluster's replicas report no offsets the proxy follows, so
/// reads stay on the masters, as a Redis Cluster client's do by default.
fn tracking(ctx: &ProxyContext, endpoint: Endpoint) -> (bool, bool) {
    let consistency = ctx.routing.read_consistency;
    (
        endpoint == Endpoint::Main && consistency != ReadConsistency::Eventual,
        endpoint == Endpoint::Main && consistency == ReadConsistency::AcknowledgedWrites,
    )
}
