//! `bench --cluster`: a direct, cluster-aware target, the reference the proxy's cluster mode is measured
//! against.
//!
//! Each load connection learns the slot map (`CLUSTER SLOTS` on a seed), opens one connection per master,
//! sends each command to its slot's master and splits `MGET`/`MSET` by slot the way a cluster client does:
//! one sub-command per slot, all of a batch's parts written to their owners before any reply is read, the
//! request done when every part has answered. A `MOVED` reply counts as an error of kind `MOVED` (there
//! should be none on a stable cluster) and, as cluster clients do, points its slot at the node it names;
//! a node the connection does not know yet makes it learn the whole map again.
//!
//! The split is written here rather than borrowed from the proxy (`crate::cluster::plan`): a reference that
//! shared the system under test's code would hide a bug in both.

mod route;
mod slots;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

pub use route::{route, supports, Route};
pub use slots::{fetch_slot_map, parse_moved, Masters};

use super::client::{ClientResult, Plan};
use super::conn::{error_kind, error_message, Conn, ConnError};
use super::recorder::Recorder;
use super::workload::Generator;
use crate::resp::{is_error_reply, RequestLimits, RequestParser};

/// One master's connection and what is queued on it.
#[derive(Debug)]
struct Node {
    conn: Conn,
    /// Parts of this batch not written yet.
    out: BytesMut,
    /// The batch index of each part written and not answered yet, in order.
    parts: VecDeque<u32>,
}

/// A load connection's view of the cluster: the map and one connection per master.
#[derive(Debug)]
struct Link {
    masters: Masters,
    nodes: Vec<Node>,
}

impl Link {
    /// Points each redirected slot at the master named; returns the redirects to nodes it has no
    /// connection to.
    fn follow(&mut self, moved: Vec<(u16, String)>) -> Vec<(u16, String)> {
        let mut unknown = Vec::new();
        for (slot, addr) in moved {
            match self.masters.index_of(&addr) {
                Some(i) => self.masters.assign(slot, i),
                None => unknown.push((slot, addr)),
            }
        }
        unknown
    }

    /// Queues `raw`, part of batch request `index`, on the master of `slot` (`None`: any master).
    /// `false` when no master serves the slot.
    fn put(&mut self, slot: Option<u16>, raw: &[u8], index: u32, p: &mut Pending) -> bool {
        let node = match slot {
            None => self.nodes.first_mut(),
            Some(s) => self.masters.node(s).and_then(|n| self.nodes.get_mut(n)),
        };
        let Some(node) = node else {
            return false;
        };
        node.out.extend_from_slice(raw);
        node.parts.push_back(index);
        p.left += 1;
        true
    }
}

/// One request of the current batch.
#[derive(Debug, Clone, Default)]
struct Pending {
    /// Parts still to answer.
    left: u32,
    /// The first error among its parts (or the local one: `CROSSSLOT`, an unserved slot).
    error: Option<String>,
}

/// Why a batch loop ended without an I/O error.
enum Exit {
    /// The deadline or the request budget.
    Done,
    /// A `MOVED` to a node the link does not have: learn the map again.
    Remap,
}

/// One `bench --cluster` load connection's state across reconnects.
struct ClusterClient {
    plan: Arc<Plan>,
    /// Where the map is asked for: the seeds, then every master seen so far.
    known: Vec<String>,
    gen: Generator,
    rec: Recorder,
    parser: RequestParser,
    /// The generator's current command, parsed back into a [`Request`] to find its keys.
    scratch: BytesMut,
    pending: Vec<Pending>,
    /// `MOVED` redirects of the current batch, `(slot, node)`, applied once it is answered.
    moved: Vec<(u16, String)>,
}

/// Runs `bench --cluster` connection `id` (seeds `seeds`) until the plan's deadline or budget (closed loop).
pub async fn run_client(
    plan: Arc<Plan>,
    seeds: Vec<String>,
    id: usize,
    gen: Generator,
) -> ClientResult {
    let mut c = ClusterClient {
        rec: Recorder::new(plan.collector.clone()),
        plan,
        known: seeds,
        gen,
        parser: RequestParser::new(RequestLimits::default()),
        scratch: BytesMut::with_capacity(4 * 1024),
        pending: Vec::new(),
        moved: Vec::new(),
    };
    c.run().await;
    c.rec.flush();
    ClientResult {
        id,
        ..ClientResult::default()
    }
}

impl ClusterClient {
    async fn run(&mut self) {
        let min_backoff = Duration::from_millis(10);
        let mut backoff = min_backoff;
        while Instant::now() < self.plan.end {
            match self.connect().await {
                Ok(mut link) => {
                    backoff = min_backoff;
                    match self.closed_loop(&mut link).await {
                        Ok(Exit::Done) => return,
                        Ok(Exit::Remap) => {}
                        Err(e) => self.fail_pending(&e),
                    }
                }
                Err(e) => {
                    let kind = e.kind();
                    self.rec.sample(&kind, || e.to_string());
                    self.rec.error(Instant::now().into_std(), &kind, 1);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
            let wake = (Instant::now() + backoff).min(self.plan.end);
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Learns the map and connects to every master.
    async fn connect(&mut self) -> Result<Link, ConnError> {
        let (auth, timeout) = (&self.plan.auth, self.plan.timeout);
        let masters = Masters::of(&fetch_slot_map(&self.known, auth, timeout).await?);
        let mut nodes = Vec::with_capacity(masters.addrs.len());
        for addr in &masters.addrs {
            nodes.push(Node {
                conn: Conn::connect(addr, auth, timeout).await?,
                out: BytesMut::with_capacity(4 * 1024),
                parts: VecDeque::new(),
            });
            self.rec.connected(Instant::now().into_std());
        }
        for addr in &masters.addrs {
            if !self.known.contains(addr) {
                self.known.push(addr.clone());
            }
        }
        let mut link = Link { masters, nodes };
        // The seed asked may not have heard of the move yet; the redirect is newer.
        link.follow(std::mem::take(&mut self.moved));
        Ok(link)
    }

    /// Requests of the batch in flight on a broken link failed with `e`.
    fn fail_pending(&mut self, e: &ConnError) {
        let n = self.pending.iter().filter(|p| p.left > 0).count() as u64;
        self.pending.clear();
        if n > 0 {
            let kind = e.kind();
            self.rec.sample(&kind, || e.to_string());
            self.rec.error(Instant::now().into_std(), &kind, n);
        }
    }

    async fn closed_loop(&mut self, link: &mut Link) -> Result<Exit, ConnError> {
        loop {
            let now = Instant::now();
            if now >= self.plan.end {
                return Ok(Exit::Done);
            }
            let n = self.plan.claim(now, self.plan.pipeline.max(1));
            if n == 0 {
                return Ok(Exit::Done);
            }
            self.pending.clear();
            for i in 0..n {
                self.queue(link, i, now)?;
            }
            for node in link.nodes.iter_mut().filter(|n| !n.out.is_empty()) {
                node.conn.send(&node.out).await?;
                node.out.clear();
            }
            // One clock read per wake-up, not per reply: replies read together arrived together.
            let deadline = now + self.plan.timeout;
            while link.nodes.iter().any(|n| !n.parts.is_empty()) {
                match tokio::time::timeout_at(deadline, fill_any(&mut link.nodes)).await {
                    Ok(r) => r?,
                    Err(_) => return Err(ConnError::Timeout(self.plan.timeout)),
                }
                let at = Instant::now();
                for node in &mut link.nodes {
                    while !node.parts.is_empty() {
                        let Some(raw) = node.conn.buffered_reply()? else {
                            break;
                        };
                        if let Some(i) = node.parts.pop_front() {
                            self.on_part(i as usize, &raw, now, at);
                        }
                    }
                }
            }
            if !self.moved.is_empty() {
                let moved = std::mem::take(&mut self.moved);
                self.moved = link.follow(moved);
                if !self.moved.is_empty() {
                    // The node a redirect names knows the new map for sure: ask it first.
                    for (_, addr) in &self.moved {
                        if !self.known.contains(addr) {
                            self.known.insert(0, addr.clone());
                        }
                    }
                    return Ok(Exit::Remap);
                }
            }
        }
    }

    /// Generates request `i` of the batch and queues its parts on their masters.
    fn queue(&mut self, link: &mut Link, i: usize, now: Instant) -> Result<(), ConnError> {
        self.scratch.clear();
        self.gen.next(&mut self.scratch);
        let Some(req) = self.parser.next(&mut self.scratch)? else {
            return Err(ConnError::Reply(
                "ERR the generator wrote an incomplete command".into(),
            ));
        };
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let mut p = Pending::default();
        let local = match route(&req) {
            Route::AnyMaster => {
                (!link.put(None, req.raw(), index, &mut p)).then_some("CLUSTERDOWN")
            }
            Route::Slot(s) => {
                (!link.put(Some(s), req.raw(), index, &mut p)).then_some("CLUSTERDOWN")
            }
            Route::Split(parts) => {
                let mut all = true;
                for (s, raw) in &parts {
                    all &= link.put(Some(*s), raw, index, &mut p);
                }
                (!all).then_some("CLUSTERDOWN")
            }
            Route::CrossSlot => Some("CROSSSLOT"),
        };
        if let Some(kind) = local {
            self.rec.sample(kind, || match kind {
                "CROSSSLOT" => "CROSSSLOT keys in several slots (bench --cluster)".into(),
                _ => "CLUSTERDOWN no master serves the slot (bench --cluster)".into(),
            });
            p.error = Some(kind.to_string());
            if p.left == 0 {
                self.rec.error(now.into_std(), kind, 1);
            }
        }
        self.pending.push(p);
        Ok(())
    }

    /// Part of request `i` answered `raw` at `at`; the request is recorded once all its parts have.
    fn on_part(&mut self, i: usize, raw: &[u8], origin: Instant, at: Instant) {
        let Some(p) = self.pending.get_mut(i) else {
            return;
        };
        if is_error_reply(raw) {
            // Every part's redirect is followed; ASK is a migration in progress (the map is right once
            // it ends), so only MOVED changes it.
            self.moved.extend(parse_moved(raw));
            if p.error.is_none() {
                let kind = error_kind(raw);
                self.rec.sample(&kind, || error_message(raw));
                p.error = Some(kind);
            }
        }
        p.left = p.left.saturating_sub(1);
        if p.left > 0 {
            return;
        }
        let at_std = at.into_std();
        match p.error.take() {
            Some(kind) => self.rec.error(at_std, &kind, 1),
            None => self.rec.ok(at_std, at.saturating_duration_since(origin)),
        }
    }
}

/// Reads from every node that owes replies until at least one read returns (one task waits on all the
/// masters of the batch; each pending read registers the waker).
async fn fill_any(nodes: &mut [Node]) -> Result<(), ConnError> {
    poll_fn(|cx| {
        let mut read = false;
        for node in nodes.iter_mut().filter(|n| !n.parts.is_empty()) {
            match node.conn.poll_fill(cx) {
                Poll::Ready(Ok(())) => read = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        if read {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}
