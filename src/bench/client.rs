//! One load connection: closed loop (batches of `--pipeline`) or open loop (a fixed arrival rate, latency
//! counted from the intended send time), reconnecting after errors until the run's deadline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::conn::{error_kind, error_message, Auth, Conn, ConnError};
use super::recorder::{Collector, Recorder};
use super::sentinel;
use super::stateful::{channel, micros_since, stamp_of, PUBSUB_CHANNELS};
use super::workload::{parse_tracked_value, Generator, Sent};
use crate::resp::{encode_command, is_error_reply, parse_value, Value};

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A fixed endpoint (a proxy, or one Redis).
    Fixed(String),
    /// The master a sentinel names, looked up again on every reconnect.
    Sentinel {
        /// The sentinel, HOST:PORT.
        sentinel: String,
        /// The monitored master's name.
        master_name: String,
    },
    /// A Redis Cluster, learnt from these seeds; every connection talks to each master itself
    /// ([`super::cluster`]).
    Cluster(Vec<String>),
}

impl Target {
    /// The address to connect to now (a cluster's first seed).
    ///
    /// # Errors
    /// The sentinel cannot be asked or does not know the master.
    pub async fn resolve(&self, timeout: Duration) -> Result<String, ConnError> {
        match self {
            Target::Fixed(addr) => Ok(addr.clone()),
            Target::Sentinel {
                sentinel,
                master_name,
            } => sentinel::master_addr(sentinel, master_name, timeout).await,
            Target::Cluster(seeds) => seeds.first().cloned().ok_or_else(|| ConnError::Connect {
                addr: "--cluster".into(),
                reason: "no seed".into(),
            }),
        }
    }
}

/// What every connection of a run shares.
#[derive(Debug)]
pub struct Plan {
    /// Where the load goes.
    pub target: Target,
    /// Credentials.
    pub auth: Auth,
    /// Requests per batch (closed loop) or in flight at most (open loop).
    pub pipeline: usize,
    /// Open loop: requests per second of each connection.
    pub rate_per_client: Option<f64>,
    /// No request is sent after this instant.
    pub end: Instant,
    /// Measured requests still to send (`--requests`), none: unbounded.
    pub budget: Option<AtomicU64>,
    /// Reply timeout.
    pub timeout: Duration,
    /// Where measurements go.
    pub collector: Arc<Collector>,
}

impl Plan {
    /// Claims up to `want` requests from the budget (warm-up requests are free).
    pub(super) fn claim(&self, now: Instant, want: usize) -> usize {
        let Some(budget) = &self.budget else {
            return want;
        };
        if now.into_std() < self.collector.start() {
            return want;
        }
        let want = want as u64;
        match budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            (left > 0).then(|| left.saturating_sub(want))
        }) {
            Ok(left) => left.min(want) as usize,
            Err(_) => 0,
        }
    }
}

/// What a connection found out about tracked writes and reads.
#[derive(Debug, Clone, Default)]
pub struct ClientResult {
    /// The connection's number.
    pub id: usize,
    /// Sequence numbers of acknowledged tracked writes.
    pub acked: Vec<u64>,
    /// Tracked reads that returned a value older than one already acknowledged.
    pub stale_reads: u64,
    /// Tracked reads answered.
    pub reads: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    /// Where latency counts from: the send time (closed loop) or the intended send time (open loop).
    origin: Instant,
    sent_at: Instant,
    sent: Sent,
    /// Replies still to come (a transaction has several).
    left: u32,
    /// The first error reply among them.
    error: Option<String>,
}

impl Pending {
    fn new(origin: Instant, sent_at: Instant, sent: Sent) -> Self {
        Pending {
            origin,
            sent_at,
            left: sent.replies(),
            sent,
            error: None,
        }
    }
}

/// One connection task's state across reconnects.
struct Client {
    plan: Arc<Plan>,
    gen: Generator,
    rec: Recorder,
    pending: VecDeque<Pending>,
    batch: BytesMut,
    result: ClientResult,
    /// A `READONLY` reply on a sentinel-resolved target: look the master up again.
    reresolve: bool,
}

/// Runs connection `id` until the plan's deadline or budget; returns what it saw of tracked traffic.
pub async fn run_client(plan: Arc<Plan>, id: usize, gen: Generator) -> ClientResult {
    let mut c = Client {
        rec: Recorder::new(plan.collector.clone()),
        plan,
        gen,
        pending: VecDeque::new(),
        batch: BytesMut::with_capacity(16 * 1024),
        result: ClientResult {
            id,
            ..ClientResult::default()
        },
        reresolve: false,
    };
    c.run().await;
    c.rec.flush();
    c.result
}

impl Client {
    async fn run(&mut self) {
        let min_backoff = Duration::from_millis(10);
        let mut backoff = min_backoff;
        let mut next_due = None;
        while Instant::now() < self.plan.end {
            match self.connect().await {
                Ok(mut conn) => {
                    self.rec.connected(Instant::now().into_std());
                    backoff = min_backoff;
                    let done = match self.plan.rate_per_client {
                        _ if self.gen.is_subscriber() => self.subscriber(&mut conn).await,
                        Some(rate) => self.open_loop(&mut conn, rate, &mut next_due).await,
                        None => self.closed_loop(&mut conn).await,
                    };
                    match done {
                        Ok(()) => return,
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
            self.reresolve = false;
            let wake = (Instant::now() + backoff).min(self.plan.end);
            tokio::time::sleep_until(wake).await;
        }
    }

    async fn connect(&self) -> Result<Conn, ConnError> {
        let addr = self.plan.target.resolve(self.plan.timeout).await?;
        Conn::connect(&addr, &self.plan.auth, self.plan.timeout).await
    }

    /// Every request in flight on a broken connection failed with `e`.
    fn fail_pending(&mut self, e: &ConnError) {
        let now = Instant::now().into_std();
        let n = self.pending.len() as u64;
        self.pending.clear();
        if n > 0 {
            let kind = e.kind();
            self.rec.sample(&kind, || e.to_string());
            self.rec.error(now, &kind, n);
        }
    }

    async fn closed_loop(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        loop {
            let now = Instant::now();
            if now >= self.plan.end {
                return Ok(());
            }
            let n = self.plan.claim(now, self.plan.pipeline.max(1));
            if n == 0 {
                return Ok(());
            }
            self.batch.clear();
            for _ in 0..n {
                let sent = self.gen.next(&mut self.batch);
                self.pending.push_back(Pending::new(now, now, sent));
            }
            conn.send(&self.batch).await?;
            // One clock read per socket read, not per reply: replies read together arrived together.
            let deadline = now + self.plan.timeout;
            while !self.pending.is_empty() {
                match tokio::time::timeout_at(deadline, conn.fill()).await {
                    Ok(r) => r?,
                    Err(_) => return Err(ConnError::Timeout(self.plan.timeout)),
                }
                let at = Instant::now();
                while let Some(raw) = conn.buffered_reply()? {
                    self.on_reply(raw, at);
                }
            }
            if self.reresolve {
                return Err(ConnError::Reply(
                    "READONLY (looking up the master again)".into(),
                ));
            }
        }
    }

    async fn open_loop(
        &mut self,
        conn: &mut Conn,
        rate: f64,
        next_due: &mut Option<Instant>,
    ) -> Result<(), ConnError> {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let cap = self.plan.pipeline.max(1);
        // Spread the connections' first sends over one interval. Kept across reconnects: requests
        // that were due while the connection was down are still owed, and their latency shows it.
        let phase = interval.mul_f64((self.result.id % 997) as f64 / 997.0);
        let mut next = next_due.unwrap_or_else(|| Instant::now() + phase);
        loop {
            *next_due = Some(next);
            let now = Instant::now();
            if now >= self.plan.end && self.pending.is_empty() {
                return Ok(());
            }
            if now >= next && now < self.plan.end && self.pending.len() < cap {
                self.batch.clear();
                while next <= now && self.pending.len() < cap && self.plan.claim(now, 1) == 1 {
                    let sent = self.gen.next(&mut self.batch);
                    self.pending.push_back(Pending::new(next, now, sent));
                    next += interval;
                }
                if self.batch.is_empty() {
                    // The budget is spent.
                    return Ok(());
                }
                conn.send(&self.batch).await?;
                continue;
            }
            let wake = if self.pending.len() < cap {
                next.min(self.plan.end)
            } else {
                self.plan.end + self.plan.timeout
            };
            let Some(oldest) = self.pending.front().map(|p| p.sent_at) else {
                tokio::time::sleep_until(wake).await;
                continue;
            };
            tokio::select! {
                r = conn.fill() => {
                    r?;
                    let now = Instant::now();
                    while let Some(raw) = conn.buffered_reply()? {
                        self.on_reply(raw, now);
                    }
                    if self.reresolve {
                        return Err(ConnError::Reply("READONLY (looking up the master again)".into()));
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = tokio::time::sleep_until(oldest + self.plan.timeout) => {
                    return Err(ConnError::Timeout(self.plan.timeout));
                }
            }
        }
    }

    /// A pub/sub subscriber: every message delivered counts as a request whose latency runs from its
    /// publication (stamped by the publisher, same process and clock) to its arrival.
    async fn subscriber(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        let channels: Vec<String> = (0..PUBSUB_CHANNELS).map(channel).collect();
        let mut args = vec!["SUBSCRIBE"];
        args.extend(channels.iter().map(String::as_str));
        conn.send(&encode_command(&args)).await?;
        let epoch = self.plan.collector.start();
        loop {
            match tokio::time::timeout_at(self.plan.end, conn.fill()).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            }
            let at = Instant::now().into_std();
            let now_us = micros_since(epoch, at);
            while let Some(raw) = conn.buffered_reply()? {
                let v = parse_value(raw)?;
                if let Some([kind, _, msg]) = v.as_array() {
                    if kind.as_bytes() == Some(b"message") {
                        let sent = msg.as_bytes().and_then(stamp_of).unwrap_or(now_us);
                        let us = u64::try_from(now_us - sent).unwrap_or(0);
                        self.rec.ok(at, Duration::from_micros(us));
                    }
                }
            }
        }
    }

    fn on_reply(&mut self, raw: Bytes, now: Instant) {
        let Some(front) = self.pending.front_mut() else {
            return;
        };
        if is_error_reply(&raw) && front.error.is_none() {
            let kind = error_kind(&raw);
            self.rec.sample(&kind, || error_message(&raw));
            front.error = Some(kind);
        }
        front.left = front.left.saturating_sub(1);
        if front.left > 0 {
            return;
        }
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        let at = now.into_std();
        if let Some(kind) = p.error {
            if kind == "READONLY" && matches!(self.plan.target, Target::Sentinel { .. }) {
                self.reresolve = true;
            }
            self.rec.error(at, &kind, 1);
            return;
        }
        match p.sent {
            Sent::Plain | Sent::Multi(_) => {}
            Sent::Feedback => self.gen.feedback(raw),
            Sent::Write(seq) => {
                self.gen.acked(seq);
                self.result.acked.push(seq);
            }
            Sent::Read { floor } => {
                self.result.reads += 1;
                let seen = match parse_value(raw) {
                    Ok(Value::Bulk(v)) => parse_tracked_value(&v).unwrap_or(0),
                    _ => 0,
                };
                if seen < floor {
                    self.result.stale_reads += 1;
                }
            }
        }
        self.rec.ok(at, now.saturating_duration_since(p.origin));
    }
}
