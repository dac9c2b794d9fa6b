//! What a session keeps about its client's side of the conversation: replies waiting to be written
//! (bounded by `client_output_buffer_limit_bytes`, and counted against `max_output_bytes_total`)
//! and when the client was last active (for `client_timeout_secs`). Shared by the
//! Sentinel/static and the cluster-mode sessions, and their subscriber and monitor modes.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::output_budget::OutputShare;
use super::ProxyContext;
use crate::stats::ListenerStats;
use crate::tls::WriteHalf;

/// The output buffer limit and idle-timeout bookkeeping of one session.
#[derive(Debug)]
pub struct Backlog {
    timeout: Option<Duration>,
    /// `client_output_buffer_limit_bytes`; 0: none.
    limit: usize,
    last_active: Instant,
    /// Most reply bytes that waited for this client at once.
    peak: usize,
    /// Messages subscriber mode holds behind a confirmation: replies for the client too.
    held: usize,
    /// This client's part of `max_output_bytes_total`.
    share: OutputShare,
}

impl Backlog {
    /// Bookkeeping under `ctx`'s settings, the client active now.
    pub fn new(ctx: &ProxyContext) -> Backlog {
        Backlog {
            timeout: ctx.client_timeout,
            limit: ctx.output_buffer_limit,
            last_active: Instant::now(),
            peak: 0,
            held: 0,
            share: OutputShare::new(ctx.output_budget.clone()),
        }
    }

    /// A reload's `client_timeout_secs` and `client_output_buffer_limit_bytes`.
    pub fn reconfigure(&mut self, ctx: &ProxyContext) {
        self.timeout = ctx.client_timeout;
        self.limit = ctx.output_buffer_limit;
    }

    /// The client sent something or took some of its replies.
    pub fn active(&mut self) {
        // Only read the clock when a timeout needs it.
        if self.timeout.is_some() {
            self.last_active = Instant::now();
        }
    }

    /// When an idle client is to be closed: `None` while it has requests pending or replies to
    /// take (`busy`), or with no timeout configured. Redis's `timeout` closes any client idle that
    /// long; here a client waiting for a slow reply is not idle.
    pub fn idle_deadline(&self, busy: bool) -> Option<Instant> {
        match self.timeout {
            Some(t) if !busy => Some(self.last_active + t),
            _ => None,
        }
    }

    /// After replies were added to the client's unwritten bytes (`before` of them before, `now`
    /// after): whether the client must be disconnected. Replies added while earlier ones are
    /// still unwritten count against the limit; a reply added to an empty buffer always goes
    /// out, so one reply larger than the limit does not cut a client that reads.
    ///
    /// Also true when the client is one of those chosen to bring the replies of all clients
    /// under `max_output_bytes_total` (counted at the session's end, by [`publish`](Self::publish)).
    pub fn over_limit(&mut self, stats: &ListenerStats, before: usize, now: usize) -> bool {
        self.peak = self.peak.max(now);
        if self.share.set(now.saturating_add(self.held)) {
            return true;
        }
        let limit = self.limit;
        if limit == 0 || before == 0 || now <= limit {
            return false;
        }
        tracing::debug!(
            unwritten = now,
            limit,
            "client output buffer limit reached: disconnecting a client that does not read"
        );
        stats.output_limit_reached();
        true
    }

    /// Records the session's peak backlog on the listener's stats (at the session's end), and
    /// whether it ended for `max_output_bytes_total`.
    pub fn publish(&self, stats: &ListenerStats) {
        stats.record_output_peak(self.peak);
        if self.share.evicted() {
            stats.output_total_limit_reached();
        }
    }

    /// Subscriber mode holds `bytes` of messages behind a confirmation (counted with the
    /// output buffer against `max_output_bytes_total` at the next [`over_limit`](Self::over_limit)).
    pub fn set_held(&mut self, bytes: usize) {
        self.held = bytes;
    }

    /// Resolves when the client is to be disconnected for `max_output_bytes_total`: every
    /// session loop waits on it, so a client that reads nothing is closed too.
    pub async fn evicted(&self) {
        self.share.closing().await;
    }
}

impl Backlog {
    /// `n` bytes of `out` were written. All of them: the buffer is cleared, not advanced, so its
    /// whole capacity is reused without `reserve` moving anything.
    pub fn written(&mut self, out: &mut BytesMut, n: usize) {
        if n >= out.len() {
            out.clear();
        } else {
            out.advance(n);
        }
        self.share.set(out.len().saturating_add(self.held));
        self.active();
    }

    /// Writes what the socket takes of `out` at once, without waiting (the common case: the
    /// whole batch goes in one syscall, as `write_all` did, and the `select!` write arm only
    /// handles a client that reads slower than its replies come).
    ///
    /// # Errors
    /// The socket's error; `WouldBlock` is not one.
    /// TLS has no non-blocking write here: its bytes go through [`write_or_flush`].
    pub fn write_now(&mut self, wr: &WriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
        let WriteHalf::Plain(wr) = wr else {
            return Ok(());
        };
        if out.is_empty() {
            return Ok(());
        }
        match wr.try_write(out) {
            Ok(n) => {
                self.written(out, n);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether the session has bytes for the client: unwritten replies, or (TLS) encrypted bytes
/// still in the session's buffer.
pub fn must_write(wr: &WriteHalf, out: &BytesMut) -> bool {
    !out.is_empty() || wr.needs_flush()
}

/// The session's one write arm: writes `out` (the count written), or flushes what TLS holds
/// (0). Cancel-safe: a write either takes bytes and returns their count, or takes none.
///
/// # Errors
/// The socket's (or the TLS session's) error.
pub async fn write_or_flush(wr: &mut WriteHalf, out: &BytesMut) -> std::io::Result<usize> {
    if out.is_empty() {
        wr.flush().await.map(|()| 0)
    } else {
        wr.write(out).await
    }
}

/// Sleeps until `deadline`; never resolves for `None`.
pub async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(timeout: Option<Duration>, limit: usize) -> Backlog {
        Backlog {
            timeout,
            limit,
            last_active: Instant::now(),
            peak: 0,
            held: 0,
            share: OutputShare::default(),
        }
    }

    #[tokio::test]
    async fn only_replies_piling_up_behind_unwritten_ones_count_against_the_limit() {
        let stats = ListenerStats::new("main", ([127, 0, 0, 1], 0).into());
        let mut b = backlog(None, 100);
        assert!(!b.over_limit(&stats, 0, 1000), "one big reply goes out");
        assert!(!b.over_limit(&stats, 10, 100), "at the limit");
        assert!(
            b.over_limit(&stats, 10, 101),
            "past it, behind unwritten bytes"
        );
        assert!(
            !backlog(None, 0).over_limit(&stats, 10, 1 << 30),
            "0: no limit"
        );
        b.publish(&stats);
        let snap = stats.snapshot(std::time::Instant::now());
        assert_eq!(snap.output_buffer_limit_disconnections, 1);
        assert_eq!(snap.output_buffer_peak_bytes, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_deadline_only_when_not_busy_and_configured() {
        let mut b = backlog(Some(Duration::from_secs(2)), 0);
        assert_eq!(b.idle_deadline(true), None);
        let first = b.idle_deadline(false).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        b.active();
        assert_eq!(
            b.idle_deadline(false).unwrap() - first,
            Duration::from_secs(1)
        );
        b.timeout = None;
        assert_eq!(b.idle_deadline(false), None);
    }
}
