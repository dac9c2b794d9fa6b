//! Running a pipeline's requests on the cluster: parts grouped per node (one dispatch each),
//! redirections followed, transient errors retried within the retry window, replies combined in
//! request order.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::merge::{combine, config_set_named, Combine};
use super::{ClusterMap, ClusterState};
use crate::backend::{Backend, BackendError, BatchReply, Dispatch, Protocol};
use crate::client::reply::backend_error;
use crate::config::ReadPolicy;
use crate::resp::redirect::{reaction, Reaction};
use crate::resp::{encode_command, error_reply, is_error_reply};
use crate::stats::ListenerStats;

/// First pause before a retry; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// Redirections followed at once; past this, each retry waits (a redirection loop must not spin).
const FREE_REDIRECTS: u32 = 5;

/// Where a part goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The node serving this slot (a replica for reads, by policy).
    Slot(u16),
    /// The master serving this slot, never a replica (fan-out to every master, `SCAN`: each
    /// master is named by its first slot, so a retry after a failover finds its successor).
    MasterOf(u16),
    /// Any master (keyless commands), round-robin.
    AnyMaster,
}

/// How a session's requests are routed, fixed for a chunk.
#[derive(Clone)]
pub struct RouteCtx {
    /// The cluster.
    pub state: Arc<ClusterState>,
    /// The session's protocol (its backend connections speak it too).
    pub protocol: Protocol,
    /// The session's backend connection slot.
    pub conn_slot: usize,
    /// The session thread running the session (whose backend connections it uses).
    pub worker: usize,
    /// `routing.read_policy`.
    pub policy: ReadPolicy,
    /// The listener's counters (errors).
    pub listener: Arc<ListenerStats>,
}

/// One request (or one slot's share of a split request) on its way to a node.
struct Part {
    target: Target,
    raw: Bytes,
    /// Safe to send again after a lost connection (a read).
    read: bool,
    /// May go to a replica.
    replica_ok: bool,
    /// The next attempt goes here: a `MOVED` target, or an `ASK` target (then with `ASKING`).
    redirect: Option<(Arc<Backend>, bool)>,
    attempts: u32,
    /// The node that answered, kept when the reply names it (`CONFIG SET`'s refusals).
    node: Option<Arc<Backend>>,
    /// Whether to keep `node`.
    named: bool,
    reply: Option<Bytes>,
    /// What the client gets if the retry window runs out.
    last_error: Option<Bytes>,
}

enum Entry {
    Ready(Bytes),
    Parts {
        first: usize,
        count: usize,
        combine: Combine,
    },
}

/// One dispatch in flight: its backend, its reply, and which parts it carries.
pub struct Sent {
    backend: Arc<Backend>,
    rx: Option<oneshot::Receiver<BatchReply>>,
    /// The parts it carries, in order.
    members: Vec<Member>,
}

/// A part in a dispatch.
struct Member {
    /// Which part.
    part: usize,
    /// Sent with `ASKING` first (its reply comes first and is not the part's).
    asking: bool,
    /// Sent to a replica.
    replica: bool,
}

/// Where one attempt of a part goes.
struct Destination {
    backend: Arc<Backend>,
    /// Send `ASKING` first (an `-ASK` redirection).
    asking: bool,
    /// The node is a replica.
    replica: bool,
}

impl Destination {
    fn master(backend: Arc<Backend>) -> Resolved {
        Resolved::To(Destination {
            backend,
            asking: false,
            replica: false,
        })
    }
}

/// What one attempt of a part came to.
struct Attempt {
    /// Sent to a replica.
    replica: bool,
    outcome: Outcome,
}

/// What became of one attempt of a part.
enum Outcome {
    Frame(Bytes),
    /// Not sent (no connection): safe to send anywhere.
    Unsent(Bytes),
    /// Lost after sending: the outcome is unknown.
    Lost(Bytes),
}

/// The requests parsed from one read of a client, run together.
pub struct Chunk {
    ctx: RouteCtx,
    entries: Vec<Entry>,
    parts: Vec<Part>,
    requests: usize,
    cursor: usize,
    started: Instant,
    /// Parts that found no node in the last round; retried after a pause.
    later: Vec<usize>,
}

impl Chunk {
    /// An empty chunk; `cursor` spreads reads over replicas and keyless commands over masters.
    pub fn new(ctx: RouteCtx, cursor: usize) -> Chunk {
        Chunk {
            ctx,
            entries: Vec::new(),
            parts: Vec::new(),
            requests: 0,
            cursor,
            started: Instant::now(),
            later: Vec::new(),
        }
    }

    /// Requests in the chunk.
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// A reply known already, in its place.
    pub fn push_ready(&mut self, reply: Bytes) {
        self.requests += 1;
        self.entries.push(Entry::Ready(reply));
    }

    /// A request made of `parts`, whose replies combine by `how`.
    pub fn push_parts(
        &mut self,
        parts: Vec<(Target, Bytes)>,
        read: bool,
        replica_ok: bool,
        how: Combine,
    ) {
        self.requests += 1;
        let first = self.parts.len();
        let count = parts.len();
        let named = how == Combine::ConfigSet;
        self.parts
            .extend(parts.into_iter().map(|(target, raw)| Part {
                target,
                raw,
                read,
                replica_ok,
                redirect: None,
                attempts: 0,
                node: None,
                named,
                reply: None,
                last_error: None,
            }));
        self.entries.push(Entry::Parts {
            first,
            count,
            combine: how,
        });
    }

    /// The current map.
    pub fn route_map(&self) -> Arc<ClusterMap> {
        self.ctx.state.map()
    }

    /// Sends every part, grouped per node: the first round, done by the session itself so its
    /// requests reach each node in the order it sent them.
    pub async fn send(&mut self, map: &ClusterMap) -> Vec<Sent> {
        let all: Vec<usize> = (0..self.parts.len()).collect();
        self.send_round(map, &all).await
    }

    /// Waits for the replies, follows redirections and retries, and returns the chunk's replies
    /// in request order.
    pub async fn finish(mut self, mut sent: Vec<Sent>, turn: Turn) -> Bytes {
        let deadline = self.started + self.ctx.state.retry_window;
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut retry = std::mem::take(&mut self.later);
            let mut wait = !retry.is_empty();
            if wait {
                self.ctx.state.request_refresh();
                for _ in &retry {
                    self.ctx.state.stats.retried();
                }
            }
            for s in sent {
                let backend = s.backend.clone();
                for (i, outcome) in collect(s).await {
                    if let Some(p) = self.parts.get_mut(i).filter(|p| p.named) {
                        p.node = Some(backend.clone());
                    }
                    match self.decide(i, outcome) {
                        Decision::Done => {}
                        Decision::Now => retry.push(i),
                        Decision::Later => {
                            wait = true;
                            retry.push(i);
                        }
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                self.give_up(&retry);
                break;
            }
            if wait {
                let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            // Earlier requests of the client first: their retries must not land after ours.
            turn.wait().await;
            for &i in &retry {
                if let Some(p) = self.parts.get_mut(i) {
                    p.attempts += 1;
                }
            }
            let map = self.ctx.state.map();
            sent = self.send_round(&map, &retry).await;
        }
        self.replies()
    }

    /// Sends the parts `which`, one dispatch per node.
    async fn send_round(&mut self, map: &ClusterMap, which: &[usize]) -> Vec<Sent> {
        let mut groups: Vec<Group> = Vec::new();
        let mut failed = Vec::new();
        for &i in which {
            match self.resolve(map, i) {
                Resolved::To(to) => {
                    let Some(part) = self.parts.get(i) else {
                        continue;
                    };
                    let g = match groups
                        .iter()
                        .position(|g| Arc::ptr_eq(&g.backend, &to.backend))
                    {
                        Some(g) => g,
                        None => {
                            groups.push(Group {
                                backend: to.backend,
                                pieces: Vec::new(),
                                members: Vec::new(),
                                count: 0,
                            });
                            groups.len() - 1
                        }
                    };
                    if let Some(g) = groups.get_mut(g) {
                        if to.asking {
                            g.pieces.push(encode_command(&["ASKING"]));
                            g.count += 1;
                        }
                        g.pieces.push(part.raw.clone());
                        g.members.push(Member {
                            part: i,
                            asking: to.asking,
                            replica: to.replica,
                        });
                        g.count += 1;
                    }
                }
                Resolved::Later(error) => failed.push((i, error)),
                Resolved::Fail(error) => {
                    if let Some(p) = self.parts.get_mut(i) {
                        p.reply = Some(error);
                    }
                }
            }
        }
        let mut sent = Vec::with_capacity(groups.len() + 1);
        for Group {
            backend,
            pieces,
            members,
            count,
        } in groups
        {
            let raw = if pieces.len() == 1 {
                pieces.into_iter().next().unwrap_or_default()
            } else {
                let mut buf = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
                for p in &pieces {
                    buf.extend_from_slice(p);
                }
                buf.freeze()
            };
            let (dispatch, rx) = Dispatch::new(raw, count, false);
            let ok = match backend.pool(self.ctx.worker, self.ctx.protocol, 0) {
                Some(pool) => pool.send(self.ctx.conn_slot, dispatch).await.is_ok(),
                None => false,
            };
            sent.push(Sent {
                backend,
                rx: ok.then_some(rx),
                members,
            });
        }
        for (i, error) in failed {
            // Nowhere to go yet (slot not served, no master known): retried after a pause.
            if let Some(p) = self.parts.get_mut(i) {
                p.last_error = Some(error);
            }
            self.later.push(i);
        }
        sent
    }

    /// Which node part `i` goes to now.
    fn resolve(&mut self, map: &ClusterMap, i: usize) -> Resolved {
        let Some(part) = self.parts.get_mut(i) else {
            return Resolved::Fail(error_reply("ERR haproxy-rs: internal error"));
        };
        if let Some((backend, asking)) = part.redirect.take() {
            return Resolved::To(Destination {
                backend,
                asking,
                replica: false,
            });
        }
        match &part.target {
            &Target::MasterOf(slot) => match map.owners(slot) {
                Some(o) => Destination::master(o.master.clone()),
                None => Resolved::Later(error_reply("CLUSTERDOWN Hash slot not served")),
            },
            Target::AnyMaster => {
                let masters = map.masters();
                if masters.is_empty() {
                    return Resolved::Later(error_reply(
                        "CLUSTERDOWN haproxy-rs: no cluster node known yet",
                    ));
                }
                self.cursor = self.cursor.wrapping_add(1);
                match masters.get(self.cursor % masters.len()) {
                    Some(m) => Destination::master(m.clone()),
                    None => Resolved::Later(error_reply("CLUSTERDOWN haproxy-rs: no master")),
                }
            }
            &Target::Slot(slot) => {
                let Some(owners) = map.owners(slot) else {
                    return Resolved::Later(error_reply("CLUSTERDOWN Hash slot not served"));
                };
                let policy = self.ctx.policy;
                let replica_ok = part.replica_ok
                    && part.attempts == 0
                    && policy != ReadPolicy::Master
                    && !self.ctx.state.slot_migrating(slot);
                if replica_ok {
                    let n = owners.replicas.len();
                    for _ in 0..n {
                        self.cursor = self.cursor.wrapping_add(1);
                        match owners.replicas.get(self.cursor % n) {
                            Some(r) if r.health().serves_reads() => {
                                return Resolved::To(Destination {
                                    backend: r.clone(),
                                    asking: false,
                                    replica: true,
                                })
                            }
                            _ => {}
                        }
                    }
                    if policy == ReadPolicy::Replica {
                        return Resolved::Fail(error_reply(&format!(
                            "ERR haproxy-rs: no healthy replica serves slot {slot} (read_policy = \"replica\")"
                        )));
                    }
                }
                Destination::master(owners.master.clone())
            }
        }
    }

    /// What to do with part `i` after `outcome`.
    fn decide(&mut self, i: usize, attempt: Attempt) -> Decision {
        let state = &self.ctx.state;
        let Some(part) = self.parts.get_mut(i) else {
            return Decision::Done;
        };
        let Attempt {
            replica: to_replica,
            outcome,
        } = attempt;
        match outcome {
            Outcome::Frame(frame) => match reaction(&frame) {
                Reaction::Answer => {
                    part.reply = Some(frame);
                    Decision::Done
                }
                Reaction::Moved(addr) => {
                    state.stats.moved();
                    state.request_refresh();
                    part.redirect = Some((state.master_backend(addr), false));
                    part.last_error = Some(frame.clone());
                    if part.attempts < FREE_REDIRECTS {
                        Decision::Now
                    } else {
                        Decision::Later
                    }
                }
                Reaction::Ask(addr) => {
                    state.stats.ask();
                    if let Target::Slot(slot) = part.target {
                        state.mark_migrating(slot);
                    }
                    part.redirect = Some((state.master_backend(addr), true));
                    part.last_error = Some(frame.clone());
                    if part.attempts < FREE_REDIRECTS {
                        Decision::Now
                    } else {
                        Decision::Later
                    }
                }
                Reaction::Later => {
                    state.stats.retried();
                    part.last_error = Some(frame);
                    Decision::Later
                }
            },
            Outcome::Unsent(error) => {
                part.last_error = Some(error);
                state.stats.retried();
                if to_replica {
                    // The next attempt (attempts > 0) goes to the master.
                    Decision::Now
                } else {
                    state.request_refresh();
                    Decision::Later
                }
            }
            Outcome::Lost(error) => {
                if part.read {
                    state.stats.retried();
                    part.last_error = Some(error);
                    state.request_refresh();
                    Decision::Later
                } else {
                    part.reply = Some(error);
                    Decision::Done
                }
            }
        }
    }

    /// The retry window ran out: these parts get their last error.
    fn give_up(&mut self, which: &[usize]) {
        for &i in which {
            if let Some(p) = self.parts.get_mut(i) {
                self.ctx.state.stats.retries_exhausted();
                p.reply = Some(p.last_error.take().unwrap_or_else(|| {
                    error_reply(
                        "TRYAGAIN haproxy-rs: the cluster did not answer within the retry window",
                    )
                }));
            }
        }
    }

    /// Every request's reply, in order.
    fn replies(self) -> Bytes {
        let mut out = BytesMut::new();
        let mut scratch = Vec::new();
        for entry in &self.entries {
            let reply = match entry {
                Entry::Ready(b) => b.clone(),
                Entry::Parts {
                    first,
                    count,
                    combine: how,
                } => {
                    let parts = || self.parts.iter().skip(*first).take(*count);
                    scratch.clear();
                    scratch.extend(parts().map(|p| {
                        p.reply
                            .clone()
                            .unwrap_or_else(|| error_reply("ERR haproxy-rs: no reply"))
                    }));
                    if *how == Combine::ConfigSet {
                        let nodes: Vec<Option<&str>> =
                            parts().map(|p| p.node.as_ref().map(|b| b.addr())).collect();
                        config_set_named(&scratch, &nodes)
                    } else {
                        combine(how, &scratch)
                    }
                }
            };
            if is_error_reply(&reply) {
                self.ctx.listener.error(&reply);
            }
            out.extend_from_slice(&reply);
        }
        out.freeze()
    }
}

/// A chunk's place in its session's order.
pub struct Turn {
    /// The chunk's sequence number.
    pub seq: u64,
    /// How many chunks of the session have finished.
    pub settled: tokio::sync::watch::Receiver<u64>,
}

impl Turn {
    /// Resolves once every earlier chunk of the session has finished.
    pub async fn wait(&self) {
        let mut settled = self.settled.clone();
        // An error means the session is gone; nothing is left to wait for.
        let _ = settled.wait_for(|&s| s >= self.seq).await;
    }
}

/// One node's share of a round.
struct Group {
    backend: Arc<Backend>,
    /// The requests, in order (an `ASKING` before a part that needs it).
    pieces: Vec<Bytes>,
    /// The parts they carry.
    members: Vec<Member>,
    /// How many requests `pieces` holds.
    count: usize,
}

/// Where a part goes now.
enum Resolved {
    /// To this node.
    To(Destination),
    /// Nowhere to send it yet: retried after a pause, this error if the window runs out.
    Later(Bytes),
    /// Answered with this error at once.
    Fail(Bytes),
}

enum Decision {
    Done,
    Now,
    Later,
}

/// The outcome of each part of one dispatch: `(part, attempt)`.
async fn collect(s: Sent) -> Vec<(usize, Attempt)> {
    let reply = match s.rx {
        Some(rx) => rx
            .await
            .unwrap_or_else(|_| BatchReply::failed(BackendError::ConnectionLost)),
        None => BatchReply::failed(BackendError::Unavailable),
    };
    let unsent =
        reply.frames.is_empty() && matches!(reply.error, Some(BackendError::Unavailable) | None);
    let failure = reply
        .error
        .as_ref()
        .map(|e| backend_error(e, s.backend.addr()).0);
    let mut frames = reply.frames.into_iter();
    let mut out = Vec::with_capacity(s.members.len());
    for Member {
        part: i,
        asking,
        replica,
    } in s.members
    {
        if asking {
            let _ = frames.next(); // ASKING's +OK
        }
        let outcome = match frames.next() {
            Some(f) => Outcome::Frame(f),
            None => {
                let error = failure
                    .clone()
                    .unwrap_or_else(|| error_reply("ERR haproxy-rs: connection lost"));
                if unsent {
                    Outcome::Unsent(error)
                } else {
                    Outcome::Lost(error)
                }
            }
        };
        out.push((i, Attempt { replica, outcome }));
    }
    out
}
