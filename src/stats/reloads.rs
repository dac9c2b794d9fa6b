//! Configuration reloads (`SIGHUP`, `POST /reload`): how many, and what the last one did.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::counters::{lock, unix_millis};

/// A reload asked for (`SIGHUP`, `POST /reload`); its outcome comes back on `reply` unless the
/// one who asked does not wait.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Where the outcome goes.
    pub reply: Option<oneshot::Sender<ReloadRecord>>,
}

/// Where reloads are asked for (the reload task, `crate::reload`, answers).
pub type ReloadSender = mpsc::UnboundedSender<ReloadRequest>;

/// The reload counters and the last outcome.
#[derive(Debug, Default)]
pub struct ReloadStats {
    applied: AtomicU64,
    refused: AtomicU64,
    last: Mutex<Option<ReloadRecord>>,
}

/// What one reload did.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ReloadRecord {
    /// When (unix millis).
    pub at_ms: u64,
    /// `applied` or `refused`.
    pub outcome: &'static str,
    /// Why it was refused (the config's first problem); the running config stays whole.
    pub error: Option<String>,
    /// The settings that changed and were applied.
    pub changed: Vec<&'static str>,
    /// The settings that changed in the file and wait for a restart (listen addresses, the thread
    /// count...): the running values stay.
    pub needs_restart: Vec<&'static str>,
}

/// [`ReloadStats`] at snapshot time.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSnapshot {
    /// Reloads applied since start.
    pub applied_total: u64,
    /// Reloads refused (a config that does not read or validate).
    pub refused_total: u64,
    /// The last one, if any.
    pub last: Option<ReloadRecord>,
}

impl ReloadStats {
    /// A reload applied `changed`, leaving `needs_restart` for a restart.
    pub fn applied(
        &self,
        changed: Vec<&'static str>,
        needs_restart: Vec<&'static str>,
    ) -> ReloadRecord {
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.record(ReloadRecord {
            at_ms: unix_millis(),
            outcome: "applied",
            error: None,
            changed,
            needs_restart,
        })
    }

    /// A reload refused for `error`.
    pub fn refused(&self, error: String) -> ReloadRecord {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.record(ReloadRecord {
            at_ms: unix_millis(),
            outcome: "refused",
            error: Some(error),
            changed: Vec::new(),
            needs_restart: Vec::new(),
        })
    }

    fn record(&self, r: ReloadRecord) -> ReloadRecord {
        *lock(&self.last) = Some(r.clone());
        r
    }

    /// The counters and the last outcome now.
    pub fn snapshot(&self) -> ReloadSnapshot {
        ReloadSnapshot {
            applied_total: self.applied.load(Ordering::Relaxed),
            refused_total: self.refused.load(Ordering::Relaxed),
            last: lock(&self.last).clone(),
        }
    }
}
