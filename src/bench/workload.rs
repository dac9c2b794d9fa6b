//! What the load generator sends: workloads, key distributions, and the seeded per-connection generator.
//!
//! The generator writes encoded commands straight into the connection's batch buffer (no per-command
//! allocation), so the bench client costs the target as little as `redis-benchmark` does.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use clap::ValueEnum;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::stateful::{
    channel, is_consumer, push_transaction, push_xadd, stamp, StreamConsumer, PUBSUB_CHANNELS,
};

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// `SET key value`.
    Set,
    /// `GET key`.
    Get,
    /// SET and GET at `--ratio W:R` (MSET and MGET when `--keys-per-command` > 1).
    Mixed,
    /// `MGET` of `--keys-per-command` keys.
    Mget,
    /// `MSET` of `--keys-per-command` keys.
    Mset,
    /// `INCR key`.
    Incr,
    /// `PING`.
    Ping,
    /// `MULTI`, `--keys-per-command` SETs, `EXEC`; one request is the whole transaction.
    Tx,
    /// Even connections `XADD`; odd ones read in a consumer group (`XREADGROUP`, `XACK`, `XAUTOCLAIM`).
    Stream,
    /// Even connections `PUBLISH`; odd ones subscribe, and latency is publication to delivery.
    Pubsub,
}

/// How keys are drawn from the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// A few hot keys (zipf over the keyspace, `--zipf-exponent`).
    Zipf,
    /// Each connection walks the keyspace in order from its own offset.
    Sequential,
}

/// Everything the generators of one run share.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkloadSpec {
    /// The workload.
    pub kind: WorkloadKind,
    /// Writes to reads for `mixed` and tracked runs.
    pub ratio: (u32, u32),
    /// Keys per multi-key command.
    pub keys_per_command: usize,
    /// Distinct keys.
    pub keyspace: u64,
    /// Key distribution.
    pub key_dist: KeyDist,
    /// Zipf exponent.
    pub zipf_exponent: f64,
    /// Value size in bytes.
    pub data_size: usize,
    /// Base seed.
    pub seed: u64,
    /// Unique, verifiable writes (failover mode) instead of `kind`; holds the run id.
    pub tracked: Option<String>,
}

impl WorkloadSpec {
    /// A short description for the report, e.g. `mixed 1:10, 10 keys per command, zipf keys`.
    pub fn describe(&self) -> String {
        let name = format!("{:?}", self.kind).to_lowercase();
        if self.tracked.is_some() {
            let (w, r) = self.ratio;
            return format!("tracked writes (MSET of a unique key) and reads (GET) {w}:{r}");
        }
        let mut s = match self.kind {
            WorkloadKind::Mixed => format!("{name} {}:{}", self.ratio.0, self.ratio.1),
            _ => name,
        };
        if self.keys_per_command > 1 {
            s.push_str(&format!(", {} keys per command", self.keys_per_command));
        }
        let dist = format!("{:?}", self.key_dist).to_lowercase();
        s.push_str(&format!(
            ", {dist} keys over {}, {} B values",
            self.keyspace, self.data_size
        ));
        s
    }
}

/// What a generated command is, for the client's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// An ordinary command.
    Plain,
    /// A tracked write of sequence number `seq`.
    Write(u64),
    /// A tracked read; a value below `floor` (already acknowledged when it was sent) is stale.
    Read {
        /// Highest sequence number this connection had acknowledged when the read was sent.
        floor: u64,
    },
    /// Several commands answered by this many replies, measured as one request (a transaction).
    Multi(u32),
    /// A command whose reply goes back to the generator ([`Generator::feedback`]).
    Feedback,
}

impl Sent {
    /// Replies this request gets.
    pub fn replies(&self) -> u32 {
        match self {
            Sent::Multi(n) => *n,
            _ => 1,
        }
    }
}

/// Appends one command in RESP to `out`.
pub fn push_command(out: &mut BytesMut, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for a in args {
        push_header(out, b'$', a.len());
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
}

fn push_header(out: &mut BytesMut, kind: u8, mut n: usize) {
    // By hand rather than `write!`: this runs for every argument of every command.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_u8(kind);
    out.put_slice(digits.get(at..).unwrap_or_default());
    out.put_slice(b"\r\n");
}

/// A key name `key:000000000042`, the shape `redis-benchmark` uses (`prefix` replaces `key:`).
fn key_name<'a>(buf: &'a mut [u8; 16], prefix: &[u8; 4], n: u64) -> &'a [u8] {
    buf[..4].copy_from_slice(prefix);
    let mut v = n % 1_000_000_000_000;
    for i in (4..16).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    &buf[..]
}

/// The per-connection command generator: seeded, so a run is repeatable.
#[derive(Debug)]
pub struct Generator {
    spec: WorkloadSpec,
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
    next_seq_key: u64,
    value: Vec<u8>,
    client: usize,
    /// Tracked mode: next write's sequence number (starts at 1).
    next_write: u64,
    /// Tracked mode: highest acknowledged sequence number.
    acked: u64,
    /// `stream` workload, odd connections.
    consumer: Option<StreamConsumer>,
    /// Time origin of pub/sub stamps.
    epoch: Instant,
}

impl Generator {
    /// The generator of connection `client` out of `clients`.
    pub fn new(spec: &WorkloadSpec, client: usize, clients: usize) -> Self {
        let zipf = (spec.key_dist == KeyDist::Zipf)
            .then(|| Zipf::new(spec.keyspace.max(1) as f64, spec.zipf_exponent).ok())
            .flatten();
        let offset = spec.keyspace.max(1) / clients.max(1) as u64 * client as u64;
        Generator {
            rng: SmallRng::seed_from_u64(
                spec.seed ^ (client as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            zipf,
            next_seq_key: offset,
            value: vec![b'x'; spec.data_size],
            client,
            next_write: 1,
            acked: 0,
            consumer: (spec.kind == WorkloadKind::Stream && is_consumer(client))
                .then(|| StreamConsumer::new(client)),
            epoch: Instant::now(),
            spec: spec.clone(),
        }
    }

    /// Stamps pub/sub messages with the time since `epoch` (the subscribers' origin too).
    pub fn with_epoch(mut self, epoch: Instant) -> Self {
        self.epoch = epoch;
        self
    }

    /// Whether this connection subscribes (odd connections of a `pubsub` run) instead of sending commands.
    pub fn is_subscriber(&self) -> bool {
        self.spec.kind == WorkloadKind::Pubsub
            && self.spec.tracked.is_none()
            && is_consumer(self.client)
    }

    /// Hands the reply of a [`Sent::Feedback`] command back.
    pub fn feedback(&mut self, raw: Bytes) {
        if let Some(c) = &mut self.consumer {
            c.on_reply(raw);
        }
    }

    /// The next key number.
    pub fn key(&mut self) -> u64 {
        let n = self.spec.keyspace.max(1);
        match (self.spec.key_dist, &self.zipf) {
            (KeyDist::Zipf, Some(z)) => (z.sample(&mut self.rng) as u64)
                .saturating_sub(1)
                .min(n - 1),
            (KeyDist::Sequential, _) => {
                let k = self.next_seq_key % n;
                self.next_seq_key = self.next_seq_key.wrapping_add(1);
                k
            }
            _ => self.rng.random_range(0..n),
        }
    }

    fn is_write(&mut self) -> bool {
        let (w, r) = self.spec.ratio;
        self.rng.random_range(0..w + r) < w
    }

    /// Records that tracked write `seq` was acknowledged.
    pub fn acked(&mut self, seq: u64) {
        self.acked = self.acked.max(seq);
    }

    /// Appends the next command to `out` and says what it is.
    pub fn next(&mut self, out: &mut BytesMut) -> Sent {
        if let Some(run) = self.spec.tracked.clone() {
            return self.next_tracked(&run, out);
        }
        let multi = self.spec.keys_per_command.max(1);
        match self.spec.kind {
            WorkloadKind::Set => self.single(out, b"SET", true),
            WorkloadKind::Get => self.single(out, b"GET", false),
            // Counters live apart from the string keys other workloads write.
            WorkloadKind::Incr => self.single(out, b"INCR", false),
            WorkloadKind::Ping => push_command(out, &[b"PING"]),
            WorkloadKind::Mget => self.multi(out, b"MGET", multi, false),
            WorkloadKind::Mset => self.multi(out, b"MSET", multi, true),
            WorkloadKind::Mixed => match (self.is_write(), multi) {
                (true, 1) => self.single(out, b"SET", true),
                (false, 1) => self.single(out, b"GET", false),
                (true, n) => self.multi(out, b"MSET", n, true),
                (false, n) => self.multi(out, b"MGET", n, false),
            },
            WorkloadKind::Tx => return self.transaction(out, multi),
            WorkloadKind::Stream => match &mut self.consumer {
                Some(c) => {
                    if c.next(out) {
                        return Sent::Feedback;
                    }
                }
                None => push_xadd(out, &self.value),
            },
            WorkloadKind::Pubsub => {
                let ch = channel(self.key() as usize % PUBSUB_CHANNELS);
                let msg = stamp(self.epoch, self.spec.data_size);
                push_command(out, &[b"PUBLISH", ch.as_bytes(), &msg]);
            }
        }
        Sent::Plain
    }

    fn transaction(&mut self, out: &mut BytesMut, n: usize) -> Sent {
        let keys: Vec<[u8; 16]> = (0..n)
            .map(|_| {
                let mut kb = [0u8; 16];
                let k = self.key();
                key_name(&mut kb, b"key:", k);
                kb
            })
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        Sent::Multi(push_transaction(out, &refs, &self.value))
    }

    fn single(&mut self, out: &mut BytesMut, cmd: &[u8], with_value: bool) {
        let mut kb = [0u8; 16];
        let k = self.key();
        let prefix = if cmd == b"INCR" { b"ctr:" } else { b"key:" };
        let key = key_name(&mut kb, prefix, k);
        if with_value {
            push_command(out, &[cmd, key, &self.value]);
        } else {
            push_command(out, &[cmd, key]);
        }
    }

    fn multi(&mut self, out: &mut BytesMut, cmd: &[u8], n: usize, with_values: bool) {
        let per = if with_values { 2 } else { 1 };
        push_header(out, b'*', 1 + n * per);
        push_header(out, b'$', cmd.len());
        out.put_slice(cmd);
        out.put_slice(b"\r\n");
        for _ in 0..n {
            let mut kb = [0u8; 16];
            let k = self.key();
            let key = key_name(&mut kb, b"key:", k);
            push_header(out, b'$', key.len());
            out.put_slice(key);
            out.put_slice(b"\r\n");
            if with_values {
                push_header(out, b'$', self.value.len());
                out.put_slice(&self.value);
                out.put_slice(b"\r\n");
            }
        }
    }

    /// Tracked: `MSET bench:{run}:{client}:{seq} v bench:{run}:{client} v` (a unique key for the
    /// read-back, and the connection's register for stale reads), or `GET bench:{run}:{client}`.
    fn next_tracked(&mut self, run: &str, out: &mut BytesMut) -> Sent {
        let register = register_key(run, self.client);
        if self.is_write() {
            let seq = self.next_write;
            self.next_write += 1;
            let unique = unique_key(run, self.client, seq);
            let value = tracked_value(seq, self.spec.data_size);
            push_command(
                out,
                &[
                    b"MSET",
                    unique.as_bytes(),
                    &value,
                    register.as_bytes(),
                    &value,
                ],
            );
            Sent::Write(seq)
        } else {
            push_command(out, &[b"GET", register.as_bytes()]);
            Sent::Read { floor: self.acked }
        }
    }
}

/// The key a tracked connection's latest write also goes to.
pub fn register_key(run: &str, client: usize) -> String {
    format!("bench:{run}:{client}")
}

/// The unique key of tracked write `seq`.
pub fn unique_key(run: &str, client: usize, seq: u64) -> String {
    format!("bench:{run}:{client}:{seq}")
}

/// A value carrying a number: its digits, then `:` and padding up to `size` bytes.
pub fn number_value(n: impl std::fmt::Display, size: usize) -> Vec<u8> {
    let mut v = n.to_string().into_bytes();
    if v.len() < size {
        v.push(b':');
        v.resize(size, b'x');
    }
    v
}

/// The number at the start of a value written by [`number_value`].
pub fn value_number<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    let digits = v.split(|&b| b == b':').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The value of tracked write `seq`.
pub fn tracked_value(seq: u64, size: usize) -> Vec<u8> {
    number_value(seq, size)
}

/// The sequence number in a tracked value.
pub fn parse_tracked_value(v: &[u8]) -> Option<u64> {
    value_number(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{parse_value, ReplyScanner, Value};

    fn spec(kind: WorkloadKind, dist: KeyDist) -> WorkloadSpec {
        WorkloadSpec {
            kind,
            ratio: (1, 3),
            keys_per_command: 1,
            keyspace: 1000,
            key_dist: dist,
            zipf_exponent: 0.99,
            data_size: 8,
            seed: 7,
            tracked: None,
        }
    }

    fn decode(buf: &mut BytesMut) -> Vec<Vec<u8>> {
        // Requests are arrays of bulk strings, which the reply scanner frames as well.
        let raw = ReplyScanner::new(4).next(buf).unwrap().unwrap();
        match parse_value(raw).unwrap() {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_bytes().unwrap().to_vec())
                .collect(),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn descriptions_name_the_workload() {
        let mut s = spec(WorkloadKind::Mixed, KeyDist::Zipf);
        s.keys_per_command = 10;
        assert_eq!(
            s.describe(),
            "mixed 1:3, 10 keys per command, zipf keys over 1000, 8 B values"
        );
        s.tracked = Some("r".into());
        assert!(s.describe().starts_with("tracked writes"));
    }

    #[test]
    fn commands_are_valid_resp() {
        let mut g = Generator::new(&spec(WorkloadKind::Set, KeyDist::Uniform), 0, 1);
        let mut buf = BytesMut::new();
        g.next(&mut buf);
        let args = decode(&mut buf);
        assert_eq!(args[0], b"SET");
        assert!(args[1].starts_with(b"key:") && args[1].len() == 16);
        assert_eq!(args[2], b"xxxxxxxx");
        let mut s = spec(WorkloadKind::Mset, KeyDist::Uniform);
        s.keys_per_command = 10;
        let mut g = Generator::new(&s, 0, 1);
        g.next(&mut buf);
        assert_eq!(decode(&mut buf).len(), 21);
    }

    #[test]
    fn same_seed_same_keys_and_mixed_follows_the_ratio() {
        let s = spec(WorkloadKind::Mixed, KeyDist::Uniform);
        let (mut a, mut b) = (Generator::new(&s, 3, 4), Generator::new(&s, 3, 4));
        let ka: Vec<u64> = (0..100).map(|_| a.key()).collect();
        let kb: Vec<u64> = (0..100).map(|_| b.key()).collect();
        assert_eq!(ka, kb);
        let mut buf = BytesMut::new();
        let mut sets = 0;
        for _ in 0..4000 {
            a.next(&mut buf);
            if decode(&mut buf)[0] == b"SET" {
                sets += 1;
            }
        }
        assert!((800..1200).contains(&sets), "{sets} SETs of 4000 at 1:3");
    }

    #[test]
    fn zipf_is_skewed_uniform_is_not_sequential_walks() {
        let mut z = Generator::new(&spec(WorkloadKind::Get, KeyDist::Zipf), 0, 1);
        let mut u = Generator::new(&spec(WorkloadKind::Get, KeyDist::Uniform), 0, 1);
        let hot = |g: &mut Generator| (0..10_000).filter(|_| g.key() < 10).count();
        let (zh, uh) = (hot(&mut z), hot(&mut u));
        assert!(zh > 2500, "zipf: {zh} of 10000 in the 10 hottest keys");
        assert!(uh < 300, "uniform: {uh} of 10000 in 10 keys");
        let mut s = Generator::new(&spec(WorkloadKind::Get, KeyDist::Sequential), 1, 2);
        let keys: Vec<u64> = (0..3).map(|_| s.key()).collect();
        assert_eq!(keys, vec![500, 501, 502]);
        assert!((0..10_000).all(|_| z.key() < 1000));
    }

    #[test]
    fn tracked_writes_are_unique_and_reads_carry_the_floor() {
        let mut s = spec(WorkloadKind::Set, KeyDist::Uniform);
        s.tracked = Some("r1".into());
        s.ratio = (1, 1);
        let mut g = Generator::new(&s, 2, 4);
        let mut buf = BytesMut::new();
        let mut seqs = Vec::new();
        for _ in 0..50 {
            match g.next(&mut buf) {
                Sent::Write(seq) => {
                    let args = decode(&mut buf);
                    assert_eq!(args[1], unique_key("r1", 2, seq).as_bytes());
                    assert_eq!(parse_tracked_value(&args[2]), Some(seq));
                    assert_eq!(args[3], b"bench:r1:2");
                    seqs.push(seq);
                    g.acked(seq);
                }
                Sent::Read { floor } => {
                    assert_eq!(floor, seqs.last().copied().unwrap_or(0));
                    assert_eq!(decode(&mut buf)[1], b"bench:r1:2");
                }
                other => panic!("tracked runs send only writes and reads: {other:?}"),
            }
        }
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(parse_tracked_value(&tracked_value(42, 2)), Some(42));
        assert_eq!(tracked_value(42, 6), b"42:xxx");
    }
}
