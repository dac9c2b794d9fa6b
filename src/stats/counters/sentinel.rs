//! The state of one link to a Redis Sentinel: connected or not, and its last event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::{lock, unix_millis};

/// Last event a sentinel link delivered.
#[derive(Debug, Default)]
struct LastEvent {
    name: String,
    at_ms: u64,
}

/// State of one connection to a Redis Sentinel.
#[derive(Debug)]
pub struct SentinelStats {
    addr: String,
    connected: AtomicBool,
    connected_change_ms: AtomicU64,
    events: AtomicU64,
    // Sentinel events are rare (a handful per failover), so a std Mutex is fine here and
    // lets us keep the event name; it is never held across an await.
    last_event: Mutex<LastEvent>,
}

/// A sentinel link at snapshot time.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SentinelSnapshot {
    /// `host:port` of the sentinel.
    pub addr: String,
    /// Whether the link is connected now.
    pub connected: bool,
    /// When `connected` last changed (unix millis).
    pub connected_change_ms: Option<u64>,
    /// Events received since start.
    pub events: u64,
    /// Name of the last event (e.g. `+switch-master`).
    pub last_event: Option<String>,
    /// When it arrived (unix millis).
    pub last_event_ms: Option<u64>,
    /// Milliseconds since it arrived.
    pub last_event_age_ms: Option<u64>,
}

impl SentinelStats {
    pub(crate) fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            connected: AtomicBool::new(false),
            connected_change_ms: AtomicU64::new(0),
            events: AtomicU64::new(0),
            last_event: Mutex::new(LastEvent::default()),
        }
    }

    /// The address this entry was registered under.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Marks the link connected or not; the time is recorded when it changes.
    pub fn set_connected(&self, up: bool) {
        if self.connected.swap(up, Ordering::Relaxed) != up {
            self.connected_change_ms
                .store(unix_millis(), Ordering::Relaxed);
        }
    }

    /// One event (pub/sub message or topology change) arrived on this link.
    pub fn event(&self, name: &str) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let at_ms = unix_millis();
        let mut last = lock(&self.last_event);
        // Reuse the buffer: no allocation once it is large enough.
        last.name.clear();
        last.name.push_str(name);
        last.at_ms = at_ms;
    }

    pub(crate) fn snapshot(&self, now_ms: u64) -> SentinelSnapshot {
        let (last_event, last_event_ms) = {
            let last = lock(&self.last_event);
            if last.at_ms == 0 {
                (None, None)
            } else {
                (Some(last.name.clone()), Some(last.at_ms))
            }
        };
        SentinelSnapshot {
            addr: self.addr.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            connected_change_ms: match self.connected_change_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(ms),
            },
            events: self.events.load(Ordering::Relaxed),
            last_event,
            last_event_ms,
            last_event_age_ms: last_event_ms.map(|ms| now_ms.saturating_sub(ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_keeps_last_event_and_count() {
        let s = SentinelStats::new("127.0.0.1:26379");
        let snap = s.snapshot(unix_millis());
        assert!(!snap.connected);
        assert_eq!(snap.last_event, None);
        s.set_connected(true);
        s.event("+sdown");
        s.event("+switch-master");
        let snap = s.snapshot(unix_millis());
        assert!(snap.connected);
        assert!(snap.connected_change_ms.is_some());
        assert_eq!(snap.events, 2);
        assert_eq!(snap.last_event.as_deref(), Some("+switch-master"));
        assert!(snap.last_event_ms.is_some());
    }
}
