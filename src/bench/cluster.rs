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

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::client::{ClientResult, Plan};
use super::conn::{error_kind, error_message, Auth, Conn, ConnError};
use super::recorder::Recorder;
use super::workload::{push_command, Generator, WorkloadKind};
use crate::resp::{is_error_reply, CommandTable, Request, RequestLimits, RequestParser, Value};
use crate::router::slot::{key_slot, SLOTS};
use crate::router::slotmap::SlotMap;

/// Key positions of every command (built once; the generator's commands are looked up in it).
static COMMANDS: LazyLock<CommandTable> = LazyLock::new(CommandTable::builtin);

/// Whether `bench --cluster` can send workload `kind`: single-key commands, `PING`, and `MGET`/`MSET`
/// (split by slot). Transactions, streams and pub/sub need one connection for the whole exchange.
pub fn supports(kind: WorkloadKind) -> bool {
    matches!(
        kind,
        WorkloadKind::Set
            | WorkloadKind::Get
            | WorkloadKind::Mixed
            | WorkloadKind::Mget
            | WorkloadKind::Mset
            | WorkloadKind::Incr
            | WorkloadKind::Ping
    )
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No key: any master answers.
    AnyMaster,
    /// The whole request to the master of this slot.
    Slot(u16),
    /// One sub-request per slot, `(slot, encoded command)`, in the order the slots first appear.
    Split(Vec<(u16, Bytes)>),
    /// Keys in several slots of a command that cannot be split (Redis would answer `CROSSSLOT`).
    CrossSlot,
}

/// Routes `req` by the slots of its keys, splitting `MGET` and `MSET` by slot.
pub fn route(req: &Request) -> Route {
    let keys = COMMANDS.keys(req);
    let Some(first) = keys.first().map(|k| key_slot(k)) else {
        return Route::AnyMaster;
    };
    if keys.iter().skip(1).all(|k| key_slot(k) == first) {
        return Route::Slot(first);
    }
    let name = req.name();
    if name.eq_ignore_ascii_case(b"MGET") {
        Route::Split(split(req, 1))
    } else if name.eq_ignore_ascii_case(b"MSET") && req.argc() % 2 == 1 {
        Route::Split(split(req, 2))
    } else {
        Route::CrossSlot
    }
}

/// The arguments after the name in groups of `per` (key first), gathered by the key's slot into one
/// command per slot with the same name.
fn split(req: &Request, per: usize) -> Vec<(u16, Bytes)> {
    let name = req.name();
    let args: Vec<&[u8]> = req.args().skip(1).collect();
    let mut groups: Vec<(u16, Vec<&[u8]>)> = Vec::new();
    for chunk in args.chunks(per) {
        let Some(key) = chunk.first() else { continue };
        let slot = key_slot(key);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, g)) => g.extend_from_slice(chunk),
            None => {
                let mut g = vec![name];
                g.extend_from_slice(chunk);
                groups.push((slot, g));
            }
        }
    }
    groups
        .into_iter()
        .map(|(slot, g)| {
            let mut out = BytesMut::new();
            push_command(&mut out, &g);
            (slot, out.freeze())
        })
        .collect()
}

/// The masters of a slot map, and for every slot the index of its master among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masters {
    /// Every distinct master, `host:port`, sorted.
    pub addrs: Vec<String>,
    /// For every slot, an index into `addrs` (`u16::MAX`: not served).
    slot_node: Vec<u16>,
}

impl Masters {
    /// The masters of `map`.
    pub fn of(map: &SlotMap) -> Masters {
        let addrs: Vec<String> = map.masters().into_iter().map(str::to_string).collect();
        // Owner set -> master index, so the per-slot pass below is a lookup.
        let of_set: Vec<u16> = map
            .owner_sets()
            .iter()
            .map(|o| {
                addrs
                    .iter()
                    .position(|a| *a == o.master)
                    .and_then(|i| u16::try_from(i).ok())
                    .unwrap_or(u16::MAX)
            })
            .collect();
        let slot_node = (0..SLOTS)
            .map(|s| {
                map.owner_index(s)
                    .and_then(|i| of_set.get(i).copied())
                    .unwrap_or(u16::MAX)
            })
            .collect();
        Masters { addrs, slot_node }
    }

    /// Points `slot` at master `node` (a `MOVED` redirect).
    pub fn assign(&mut self, slot: u16, node: usize) {
        if let (Some(s), Ok(n)) = (
            self.slot_node.get_mut(usize::from(slot)),
            u16::try_from(node),
        ) {
            *s = n;
        }
    }

    /// The index of master `addr`, if it is one.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.addrs.iter().position(|a| a == addr)
    }

    /// The index of the master serving `slot`, if any.
    pub fn node(&self, slot: u16) -> Option<usize> {
        match self.slot_node.get(usize::from(slot)) {
            Some(&i) if i != u16::MAX => Some(usize::from(i)),
            _ => None,
        }
    }
}

/// The slot and node of a `-MOVED <slot> <host:port>` reply.
pub fn parse_moved(raw: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(raw.strip_prefix(b"-MOVED ")?).ok()?;
    let mut words = text.split_ascii_whitespace();
    let slot = words.next()?.parse::<u16>().ok().filter(|&s| s < SLOTS)?;
    Some((slot, words.next()?.to_string()))
}

/// Asks the nodes in `seeds`, in order, for `CLUSTER SLOTS`; the first map that names a master wins.
///
/// # Errors
/// Every node failed or answered something else; the last failure is returned.
pub async fn fetch_slot_map(
    seeds: &[String],
    auth: &Auth,
    timeout: Duration,
) -> Result<SlotMap, ConnError> {
    let mut last = ConnError::Reply("ERR bench --cluster needs a seed HOST:PORT".into());
    for seed in seeds {
        let reply = match Conn::connect(seed, auth, timeout).await {
            Ok(mut c) => c.call_ok(&["CLUSTER", "SLOTS"]).await,
            Err(e) => Err(e),
        };
        let map = reply.and_then(|v| parse_slots(seed, &v));
        match map {
            Ok(m) => return Ok(m),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn parse_slots(seed: &str, reply: &Value) -> Result<SlotMap, ConnError> {
    let map = SlotMap::from_cluster_slots(reply)
        .map_err(|e| ConnError::Reply(format!("CLUSTERDOWN {seed}: {e}")))?;
    if map.masters().is_empty() {
        return Err(ConnError::Reply(format!(
            "CLUSTERDOWN {seed} serves no slot (not a cluster, or not set up yet)"
        )));
    }
    Ok(map)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::slotmap::SlotMap;

    fn req(args: &[&str]) -> Request {
        Request::from_args(args)
    }

    /// Two keys in different slots, and one sharing the first's slot through a hash tag.
    const A: &str = "key:000000000001";
    const B: &str = "key:000000000002";
    const A_TAGGED: &str = "{key:000000000001}x";

    fn args_of(raw: &Bytes) -> Vec<String> {
        let mut buf = BytesMut::from(&raw[..]);
        let r = RequestParser::new(RequestLimits::default())
            .next(&mut buf)
            .unwrap()
            .unwrap();
        r.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn single_key_and_keyless_commands_go_to_one_node() {
        assert_ne!(key_slot(A.as_bytes()), key_slot(B.as_bytes()));
        assert_eq!(key_slot(A.as_bytes()), key_slot(A_TAGGED.as_bytes()));
        assert_eq!(
            route(&req(&["SET", A, "v"])),
            Route::Slot(key_slot(A.as_bytes()))
        );
        assert_eq!(
            route(&req(&["get", B])),
            Route::Slot(key_slot(B.as_bytes()))
        );
        assert_eq!(route(&req(&["PING"])), Route::AnyMaster);
        assert_eq!(
            route(&req(&["MGET", A, A_TAGGED])),
            Route::Slot(key_slot(A.as_bytes())),
            "one slot: no split"
        );
    }

    #[test]
    fn mget_and_mset_split_by_slot_in_first_seen_order() {
        let Route::Split(parts) = route(&req(&["MGET", A, B, A_TAGGED])) else {
            panic!("MGET over two slots splits");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, key_slot(A.as_bytes()));
        assert_eq!(args_of(&parts[0].1), ["MGET", A, A_TAGGED]);
        assert_eq!(args_of(&parts[1].1), ["MGET", B]);

        let Route::Split(parts) = route(&req(&["mset", A, "1", B, "2", A_TAGGED, "3"])) else {
            panic!("MSET over two slots splits");
        };
        assert_eq!(args_of(&parts[0].1), ["mset", A, "1", A_TAGGED, "3"]);
        assert_eq!(args_of(&parts[1].1), ["mset", B, "2"]);
        assert_eq!(parts[1].0, key_slot(B.as_bytes()));
    }

    #[test]
    fn unsplittable_multi_key_commands_are_crossslot() {
        assert_eq!(route(&req(&["DEL", A, B])), Route::CrossSlot);
        assert_eq!(route(&req(&["MSET", A, "1", B])), Route::CrossSlot);
    }

    fn node(port: i64) -> Value {
        Value::Array(vec![
            Value::Bulk(Bytes::from_static(b"127.0.0.1")),
            Value::Int(port),
        ])
    }

    fn range(start: i64, end: i64, nodes: Vec<Value>) -> Value {
        let mut v = vec![Value::Int(start), Value::Int(end)];
        v.extend(nodes);
        Value::Array(v)
    }

    #[test]
    fn masters_index_every_slot() {
        // The same master owns two ranges; replicas are not masters.
        let reply = Value::Array(vec![
            range(0, 99, vec![node(7002), node(7005)]),
            range(100, 8191, vec![node(7001), node(7004)]),
            range(8192, 16000, vec![node(7002), node(7005)]),
        ]);
        let m = Masters::of(&SlotMap::from_cluster_slots(&reply).unwrap());
        assert_eq!(m.addrs, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(m.node(0), Some(1));
        assert_eq!(m.node(100), Some(0));
        assert_eq!(m.node(16000), Some(1));
        assert_eq!(m.node(16001), None, "unserved");
        assert_eq!(m.node(SLOTS), None, "out of range");
    }

    #[test]
    fn moved_replies_name_the_slot_and_node() {
        assert_eq!(
            parse_moved(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some((3999, "127.0.0.1:6381".to_string()))
        );
        assert_eq!(parse_moved(b"-MOVED 16384 127.0.0.1:6381\r\n"), None);
        assert_eq!(parse_moved(b"-ASK 3999 127.0.0.1:6381\r\n"), None);
        assert_eq!(parse_moved(b"-MOVED 3999\r\n"), None);
        let reply = Value::Array(vec![
            range(0, 8191, vec![node(7001)]),
            range(8192, 16383, vec![node(7002)]),
        ]);
        let mut m = Masters::of(&SlotMap::from_cluster_slots(&reply).unwrap());
        m.assign(5, m.index_of("127.0.0.1:7002").unwrap());
        assert_eq!((m.node(5), m.node(6)), (Some(1), Some(0)));
        assert_eq!(m.index_of("127.0.0.1:7003"), None);
    }

    #[test]
    fn a_slot_map_without_masters_is_refused() {
        assert!(parse_slots("s", &Value::Array(vec![])).is_err());
        assert!(parse_slots("s", &Value::Int(1)).is_err());
        let one = Value::Array(vec![range(0, 16383, vec![node(7000)])]);
        assert_eq!(parse_slots("s", &one).unwrap().served(), 16384);
        assert!(supports(WorkloadKind::Mixed) && !supports(WorkloadKind::Tx));
    }
}
