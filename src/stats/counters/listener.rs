//! The counters of one client-facing listener.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::{gauge, lock, round2, LatencySnapshot, RateMeter};
use crate::stats::errors::{ErrorCounts, ErrorReason};
use crate::stats::histogram::Histogram;

/// Counters of one client-facing listener.
#[derive(Debug)]
pub struct ListenerStats {
    name: String,
    addr: SocketAddr,
    current: AtomicI64,
    total: AtomicU64,
    commands: AtomicU64,
    errors: AtomicU64,
    errors_by_reason: ErrorCounts,
    output_limit_closes: AtomicU64,
    query_limit_closes: AtomicU64,
    output_total_closes: AtomicU64,
    tx_too_large: AtomicU64,
    idle_closes: AtomicU64,
    rejected: AtomicU64,
    output_peak: AtomicU64,
    pubsub: AtomicI64,
    latency: Histogram,
    rate: Mutex<RateMeter>,
}

/// A listener's counters at snapshot time.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ListenerSnapshot {
    /// Listener name from the config.
    pub name: String,
    /// Bound address.
    pub addr: String,
    /// Client connections open now.
    pub current_connections: u64,
    /// Client connections accepted since start.
    pub total_connections: u64,
    /// Commands received since start.
    pub commands: u64,
    /// Commands answered with an error since start.
    pub errors: u64,
    /// The same errors by reason (`readonly`, `policy`, `acl`, ...: see `ErrorReason`), every
    /// reason listed.
    pub errors_by_reason: BTreeMap<&'static str, u64>,
    /// Clients disconnected for letting replies pile up past `client_output_buffer_limit_bytes`
    /// (Redis's `client_output_buffer_limit_disconnections`).
    pub output_buffer_limit_disconnections: u64,
    /// Clients closed for sending more than `client_query_buffer_limit` of input that does not
    /// form a complete request (Redis's `client_query_buffer_limit_disconnections`).
    pub query_buffer_limit_disconnections: u64,
    /// Clients disconnected, largest output buffer first, because the replies waiting for all
    /// clients together passed `max_output_bytes_total` (Redis's `evicted_clients`).
    pub output_total_limit_disconnections: u64,
    /// Cluster-mode transactions aborted (`EXEC` answered `-EXECABORT`) for queueing more than
    /// `max_multi_commands` commands or `max_multi_bytes` bytes.
    pub transactions_too_large: u64,
    /// Clients closed after `client_timeout_secs` idle.
    pub idle_timeouts: u64,
    /// Clients refused because `max_clients` were connected (Redis's `rejected_connections`).
    pub rejected_connections: u64,
    /// Most reply bytes that waited for one client at once, over the clients that have left.
    pub output_buffer_peak_bytes: u64,
    /// Clients subscribed now (Redis's `pubsub_clients`).
    pub pubsub_clients: u64,
    /// Commands per second over the last window.
    pub ops_per_sec: f64,
    /// From a command read to its reply ready for the client (see [`ReplyTimer`]).
    pub latency: LatencySnapshot,
}

impl ListenerStats {
    pub(crate) fn new(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.to_owned(),
            addr,
            current: AtomicI64::new(0),
            total: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            errors_by_reason: ErrorCounts::default(),
            output_limit_closes: AtomicU64::new(0),
            query_limit_closes: AtomicU64::new(0),
            output_total_closes: AtomicU64::new(0),
            tx_too_large: AtomicU64::new(0),
            idle_closes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            output_peak: AtomicU64::new(0),
            pubsub: AtomicI64::new(0),
            latency: Histogram::new(),
            rate: RateMeter::new(),
        }
    }

    /// A client connected.
    pub fn connection_opened(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection ended.
    pub fn connection_closed(&self) {
        self.current.fetch_sub(1, Ordering::Relaxed);
    }

    /// One command received from a client.
    pub fn command(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    /// One command answered with the error `reply` (the server's or the proxy's own), counted by
    /// the reason it gives ([`ErrorReason::of`]).
    pub fn error(&self, reply: &[u8]) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.errors_by_reason.add(ErrorReason::of(reply));
    }

    /// A client was disconnected for not reading its replies (output buffer limit).
    pub fn output_limit_reached(&self) {
        self.output_limit_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was closed for its query buffer (`client_query_buffer_limit`).
    pub fn query_buffer_limit_reached(&self) {
        self.query_limit_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was disconnected to bring the replies of all clients under
    /// `max_output_bytes_total`.
    pub fn output_total_limit_reached(&self) {
        self.output_total_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A cluster-mode transaction passed `max_multi_commands` or `max_multi_bytes` (counted
    /// once, when it does).
    pub fn transaction_too_large(&self) {
        self.tx_too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// A session ended whose client had at most `bytes` of replies waiting at once.
    pub fn record_output_peak(&self, bytes: usize) {
        self.output_peak.fetch_max(bytes as u64, Ordering::Relaxed);
    }

    /// An idle client was closed (`client_timeout_secs`).
    pub fn idle_timeout(&self) {
        self.idle_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A client entered (`1`) or left (`-1`) subscriber mode.
    pub fn pubsub_client(&self, delta: i64) {
        self.pubsub.fetch_add(delta, Ordering::Relaxed);
    }

    /// A client was refused: `max_clients` were connected.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refresh_rate(&self, now: Instant) -> f64 {
        let commands = self.commands.load(Ordering::Relaxed);
        lock(&self.rate).update(commands, now)
    }

    pub(crate) fn snapshot(&self, now: Instant) -> ListenerSnapshot {
        ListenerSnapshot {
            name: self.name.clone(),
            addr: self.addr.to_string(),
            current_connections: gauge(&self.current),
            total_connections: self.total.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            errors_by_reason: self.errors_by_reason.snapshot().into_iter().collect(),
            output_buffer_limit_disconnections: self.output_limit_closes.load(Ordering::Relaxed),
            query_buffer_limit_disconnections: self.query_limit_closes.load(Ordering::Relaxed),
            output_total_limit_disconnections: self.output_total_closes.load(Ordering::Relaxed),
            transactions_too_large: self.tx_too_large.load(Ordering::Relaxed),
            idle_timeouts: self.idle_closes.load(Ordering::Relaxed),
            rejected_connections: self.rejected.load(Ordering::Relaxed),
            output_buffer_peak_bytes: self.output_peak.load(Ordering::Relaxed),
            pubsub_clients: gauge(&self.pubsub),
            ops_per_sec: round2(self.refresh_rate(now)),
            latency: LatencySnapshot::of(&self.latency.snapshot()),
        }
    }
}

/// When each of a session's commands was read, oldest first, until its reply is ready: what the
/// listener's latency histogram records, command by command.
///
/// The dispatchers keep replies in request order and say how many are still to come
/// (`queued()`), so the session needs no tag on a reply: when `n` replies are still to come,
/// every command read before the last `n` is answered. A command that gets no reply of the
/// dispatcher's (one that enters subscriber mode) is taken back with [`ReplyTimer::untimed`].
/// The queue is as long as the replies the session waits for, which the pipeline cap bounds.
#[derive(Debug, Default)]
pub struct ReplyTimer {
    read_at: VecDeque<Instant>,
}

impl ReplyTimer {
    /// A command was read at `at`; its reply comes after those of the commands before it.
    pub fn read(&mut self, at: Instant) {
        self.read_at.push_back(at);
    }

    /// The command just read gets no reply the dispatcher counts.
    pub fn untimed(&mut self) {
        self.read_at.pop_back();
    }

    /// `pending` replies are still to come: the commands before them are answered now.
    pub fn answered(&mut self, pending: usize, stats: &ListenerStats) {
        if self.read_at.len() <= pending {
            return;
        }
        let now = Instant::now();
        while self.read_at.len() > pending {
            if let Some(at) = self.read_at.pop_front() {
                stats.latency.record(now.saturating_duration_since(at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_counts_connections_commands_and_errors() {
        let l = ListenerStats::new("main", "127.0.0.1:6380".parse().expect("addr"));
        l.connection_opened();
        l.connection_opened();
        l.connection_closed();
        for _ in 0..5 {
            l.command();
        }
        l.error(b"-READONLY You can't write against a read only replica.\r\n");
        let s = l.snapshot(Instant::now());
        assert_eq!(s.name, "main");
        assert_eq!(s.addr, "127.0.0.1:6380");
        assert_eq!(s.current_connections, 1);
        assert_eq!(s.total_connections, 2);
        assert_eq!(s.commands, 5);
        assert_eq!(s.errors, 1);
        assert_eq!(s.errors_by_reason.get("readonly"), Some(&1));
        assert_eq!(s.errors_by_reason.get("policy"), Some(&0));
    }

    #[test]
    fn reply_timer_records_the_commands_answered_oldest_first() {
        let l = ListenerStats::new("main", "127.0.0.1:6380".parse().expect("addr"));
        let mut t = ReplyTimer::default();
        let start = Instant::now();
        let long_ago = start.checked_sub(std::time::Duration::from_secs(2));
        t.read(long_ago.unwrap_or(start));
        t.read(start);
        t.read(start);
        t.untimed();
        t.answered(2, &l);
        assert_eq!(l.snapshot(Instant::now()).latency.count, 0, "both pending");
        t.answered(1, &l);
        let s = l.snapshot(Instant::now()).latency;
        assert_eq!(s.count, 1, "the oldest is answered");
        if long_ago.is_some() {
            assert!(s.sum_us >= 2_000_000, "{s:?}");
        }
        t.answered(0, &l);
        t.answered(0, &l);
        assert_eq!(l.snapshot(Instant::now()).latency.count, 2, "each once");
    }

    #[test]
    fn unbalanced_close_reads_as_zero_connections() {
        let l = ListenerStats::new("main", "127.0.0.1:6380".parse().expect("addr"));
        l.connection_closed();
        assert_eq!(l.snapshot(Instant::now()).current_connections, 0);
    }
}
