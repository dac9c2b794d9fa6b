//! The counters of one client-facing listener.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use serde::Serialize;

use super::{gauge, lock, round2, LatencySnapshot, RateMeter};
use crate::resp::{is_error_reply, CommandInfo, ReplyScanner};
use crate::stats::commands::CommandStats;
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
    /// Per command, shared by every listener of the proxy.
    by_command: Arc<CommandStats>,
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
    #[cfg(test)]
    pub(crate) fn new(name: &str, addr: SocketAddr) -> Self {
        Self::counting_commands_in(name, addr, Arc::default())
    }

    /// A listener whose commands are counted in `commands` (the proxy's, shared).
    pub(crate) fn counting_commands_in(
        name: &str,
        addr: SocketAddr,
        commands: Arc<CommandStats>,
    ) -> Self {
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
            by_command: commands,
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
/// listener's latency histogram and the per-command counters record, command by command.
///
/// The dispatchers keep replies in request order and say how many are still to come
/// (`queued()`), so the session needs no tag on a reply: when `n` replies are still to come,
/// every command read before the last `n` is answered. A command that gets no reply of the
/// dispatcher's (one that enters subscriber mode) is taken back with [`ReplyTimer::untimed`].
/// The queue is as long as the replies the session waits for, which the pipeline cap bounds.
#[derive(Debug, Default)]
pub struct ReplyTimer {
    read_at: VecDeque<(Instant, u16)>,
}

/// The counter slot of a reply that no command counts (an unknown command, a protocol error).
const UNCOUNTED: u16 = u16::MAX;

impl ReplyTimer {
    /// The command `info` (`None`: unknown, or no command at all) was read at `at`; its reply
    /// comes after those of the commands before it.
    pub fn read(&mut self, at: Instant, info: Option<&CommandInfo>) {
        self.read_at
            .push_back((at, info.map_or(UNCOUNTED, |i| i.stats_slot)));
    }

    /// The command just read gets no reply the dispatcher counts.
    pub fn untimed(&mut self) {
        self.read_at.pop_back();
    }

    /// `pending` replies are still to come: the commands before them are answered now, with
    /// `replies` (the bytes just collected for the client, their replies in order).
    pub fn answered(&mut self, pending: usize, replies: &[u8], stats: &ListenerStats) {
        let Some(answered) = self.read_at.len().checked_sub(pending).filter(|&n| n > 0) else {
            return;
        };
        let errors = ErrorFlags::of(replies, answered);
        let now = Instant::now();
        for i in 0..answered {
            if let Some((at, slot)) = self.read_at.pop_front() {
                let latency = now.saturating_duration_since(at);
                stats.latency.record(latency);
                if slot != UNCOUNTED {
                    stats.by_command.answered(slot, latency, errors.is_error(i));
                }
            }
        }
    }
}

/// Which of the replies just collected are errors.
enum ErrorFlags {
    /// None is (the common case, told without splitting the replies).
    None,
    /// The first and only one is.
    First,
    /// Per reply, in order.
    Each(Vec<bool>),
}

impl ErrorFlags {
    /// The flags of the first `n` replies in `replies`. Only bytes that may start an error
    /// frame (`-` or `!` first or after a CRLF) make it split them into frames.
    fn of(replies: &[u8], n: usize) -> ErrorFlags {
        let starts_push = replies.first() == Some(&b'>');
        if n == 1 && !starts_push {
            return if is_error_reply(replies) {
                ErrorFlags::First
            } else {
                ErrorFlags::None
            };
        }
        let may_hold_error = is_error_reply(replies)
            || memchr::memmem::find(replies, b"\r\n-").is_some()
            || memchr::memmem::find(replies, b"\r\n!").is_some();
        if !may_hold_error {
            return ErrorFlags::None;
        }
        // Rare: pipelined replies with a possible error among them.
        let mut buf = BytesMut::from(replies);
        let mut scanner = ReplyScanner::new(crate::resp::reply::MAX_REPLY_DEPTH);
        let mut flags = Vec::with_capacity(n);
        while flags.len() < n {
            match scanner.next(&mut buf) {
                // Out-of-band pushes (client tracking's invalidations) answer no command.
                Ok(Some(frame)) if frame.first() == Some(&b'>') => {}
                Ok(Some(frame)) => flags.push(is_error_reply(&frame)),
                Ok(None) | Err(_) => break,
            }
        }
        ErrorFlags::Each(flags)
    }

    fn is_error(&self, i: usize) -> bool {
        match self {
            ErrorFlags::None => false,
            ErrorFlags::First => i == 0,
            ErrorFlags::Each(flags) => flags.get(i).copied().unwrap_or(false),
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
        t.read(long_ago.unwrap_or(start), None);
        t.read(start, None);
        t.read(start, None);
        t.untimed();
        t.answered(2, b"", &l);
        assert_eq!(l.snapshot(Instant::now()).latency.count, 0, "both pending");
        t.answered(1, b"+OK\r\n", &l);
        let s = l.snapshot(Instant::now()).latency;
        assert_eq!(s.count, 1, "the oldest is answered");
        if long_ago.is_some() {
            assert!(s.sum_us >= 2_000_000, "{s:?}");
        }
        t.answered(0, b"+OK\r\n", &l);
        t.answered(0, b"", &l);
        assert_eq!(l.snapshot(Instant::now()).latency.count, 2, "each once");
    }

    #[test]
    fn each_answered_command_is_counted_with_its_own_reply() {
        let table = crate::resp::CommandTable::builtin();
        let l = ListenerStats::new("main", "127.0.0.1:6380".parse().expect("addr"));
        let mut t = ReplyTimer::default();
        let now = Instant::now();
        for name in ["set", "incr", "get", "lpush", "get", "ping"] {
            t.read(now, table.get(name));
        }
        t.read(now, None);
        // A pipeline answered in two parts: the first with an error third, a bulk holding
        // "\r\n-" and a tracking push between two replies; then an error alone.
        t.answered(
            4,
            b"+OK\r\n-ERR value is not an integer\r\n$5\r\na\r\n-b\r\n",
            &l,
        );
        t.answered(
            0,
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n-WRONGTYPE x\r\n$-1\r\n+PONG\r\n-ERR unknown command\r\n",
            &l,
        );
        let counted: Vec<(&str, u64, u64)> = l
            .by_command
            .snapshot()
            .iter()
            .map(|c| (c.name, c.calls, c.errors))
            .collect();
        assert_eq!(
            counted,
            [
                ("get", 2, 0),
                ("incr", 1, 1),
                ("lpush", 1, 1),
                ("ping", 1, 0),
                ("set", 1, 0)
            ]
        );
        assert_eq!(
            l.snapshot(Instant::now()).latency.count,
            7,
            "the unknown too"
        );
    }

    #[test]
    fn unbalanced_close_reads_as_zero_connections() {
        let l = ListenerStats::new("main", "127.0.0.1:6380".parse().expect("addr"));
        l.connection_closed();
        assert_eq!(l.snapshot(Instant::now()).current_connections, 0);
    }
}
