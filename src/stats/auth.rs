//! Client authentication: the mode in force and what was refused (Redis's `acl_access_denied_*`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// What was refused, as Redis's `INFO stats` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A failed `AUTH` or `HELLO ... AUTH` (`acl_access_denied_auth`).
    Auth,
    /// A command outside the user's rules (`acl_access_denied_cmd`).
    Command,
    /// A key outside the user's patterns (`acl_access_denied_key`).
    Key,
    /// A channel outside the user's patterns (`acl_access_denied_channel`).
    Channel,
}

/// Authentication counters, over all sessions.
#[derive(Debug, Default)]
pub struct AuthStats {
    mode: Mutex<(String, bool)>,
    denied: [AtomicU64; 4],
    server_checks: AtomicU64,
    cache_hits: AtomicU64,
}

/// [`AuthStats`] at snapshot time.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct AuthSnapshot {
    /// `backend`, `proxy` or `none`.
    pub mode: String,
    /// Clients need no password although the servers do (`mode = "none"` in front of a
    /// password-protected backend): shown in red.
    pub open: bool,
    /// Failed logins.
    pub denied_auth: u64,
    /// Commands refused by the user's rules.
    pub denied_cmd: u64,
    /// Commands refused for a key.
    pub denied_key: u64,
    /// Commands refused for a channel.
    pub denied_channel: u64,
    /// Backend mode: logins the servers were asked about.
    pub server_checks: u64,
    /// Backend mode: logins answered from the cache of credentials the server accepted.
    pub cache_hits: u64,
}

impl AuthStats {
    /// Records the mode; `backend_password`: whether the servers need one.
    pub fn set_mode(&self, mode: &str, backend_password: bool) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) =
            (mode.to_owned(), mode == "none" && backend_password);
    }

    /// Counts a refusal.
    pub fn denied(&self, what: Denied) {
        let i = what as usize;
        if let Some(c) = self.denied.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a login checked by a server.
    pub fn server_check(&self) {
        self.server_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a login answered from the cache.
    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> AuthSnapshot {
        let (mode, open) = self.mode.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let d = |w: Denied| {
            self.denied
                .get(w as usize)
                .map_or(0, |c| c.load(Ordering::Relaxed))
        };
        AuthSnapshot {
            mode,
            open,
            denied_auth: d(Denied::Auth),
            denied_cmd: d(Denied::Command),
            denied_key: d(Denied::Key),
            denied_channel: d(Denied::Channel),
            server_checks: self.server_checks.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }
}
