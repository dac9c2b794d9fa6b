//! Lua scripts the clients have used, kept so every server that may run them has them.
//!
//! Redis 7 does not replicate `SCRIPT LOAD`: a script loaded on the master is unknown to its
//! replicas (`EVALSHA_RO` there answers `NOSCRIPT`) and to the replica promoted by a failover.
//! The proxy records each script body it sees in `EVAL`/`EVAL_RO`/`SCRIPT LOAD` and a loader
//! task loads them onto every server of the topology: a new script at once, and all of them on
//! a server that joins (a new master, a new replica, a restarted node).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::{ControlConn, Credentials};
use crate::resp::Request;

/// Most scripts kept, and most bytes of them; past either, new scripts are not recorded (the
/// clients' own `NOSCRIPT` fallback still works).
const MAX_SCRIPTS: usize = 4096;
const MAX_BYTES: usize = 16 << 20;
/// How often the loader looks for servers that joined.
const POLL: Duration = Duration::from_millis(250);

/// The scripts seen, by SHA1.
#[derive(Debug, Default)]
pub struct ScriptCache {
    scripts: Mutex<Cache>,
    added: Notify,
}

#[derive(Debug, Default)]
struct Cache {
    by_sha: HashMap<[u8; 20], Bytes>,
    bytes: usize,
    /// Bodies not loaded onto the servers yet.
    fresh: Vec<Bytes>,
}

impl ScriptCache {
    /// Records the script of `req` if it carries one (`EVAL`, `EVAL_RO`, `SCRIPT LOAD`); a
    /// few byte comparisons for any other command.
    pub fn observe(&self, req: &Request) {
        let name = req.name();
        let body = if name.eq_ignore_ascii_case(b"eval") || name.eq_ignore_ascii_case(b"eval_ro") {
            req.arg(1)
        } else if name.eq_ignore_ascii_case(b"script")
            && req.arg(1).is_some_and(|s| s.eq_ignore_ascii_case(b"load"))
        {
            req.arg(2)
        } else {
            None
        };
        if let Some(body) = body {
            self.record(body);
        }
    }

    fn record(&self, body: &[u8]) {
        let sha: [u8; 20] = Sha1::digest(body).into();
        let mut c = self.scripts.lock().unwrap_or_else(|e| e.into_inner());
        if c.by_sha.contains_key(&sha)
            || c.by_sha.len() >= MAX_SCRIPTS
            || c.bytes + body.len() > MAX_BYTES
        {
            return;
        }
        let body = Bytes::copy_from_slice(body);
        c.bytes += body.len();
        c.by_sha.insert(sha, body.clone());
        c.fresh.push(body);
        drop(c);
        self.added.notify_one();
    }

    /// How many scripts are kept.
    pub fn len(&self) -> usize {
        self.scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_sha
            .len()
    }

    /// Whether no script is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_fresh(&self) -> Vec<Bytes> {
        std::mem::take(&mut self.scripts.lock().unwrap_or_else(|e| e.into_inner()).fresh)
    }

    fn all(&self) -> Vec<Bytes> {
        let c = self.scripts.lock().unwrap_or_else(|e| e.into_inner());
        c.by_sha.values().cloned().collect()
    }
}

/// Loads the cached scripts onto the servers `servers()` names (every master and replica), until
/// `token` is cancelled.
pub async fn run_loader(
    cache: Arc<ScriptCache>,
    servers: impl Fn() -> Vec<String> + Send + 'static,
    creds: Credentials,
    timeout: Duration,
    token: CancellationToken,
) {
    let mut known: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = cache.added.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        let now: HashSet<String> = servers().into_iter().collect();
        let fresh = cache.take_fresh();
        for addr in &now {
            let scripts = if known.contains(addr) {
                fresh.clone()
            } else {
                cache.all()
            };
            if scripts.is_empty() {
                continue;
            }
            if load(addr, &scripts, &creds, timeout).await {
                known.insert(addr.clone());
            } else {
                // Try the whole set again once it answers.
                known.remove(addr);
            }
        }
        known.retain(|a| now.contains(a));
    }
}

/// `SCRIPT LOAD` of each script on `addr`; false when the server could not be reached.
async fn load(addr: &str, scripts: &[Bytes], creds: &Credentials, timeout: Duration) -> bool {
    let Ok(mut conn) = ControlConn::connect(addr, creds, timeout).await else {
        return false;
    };
    for body in scripts {
        let args: [&[u8]; 3] = [b"SCRIPT", b"LOAD", body];
        if conn.call(&args).await.is_err() {
            return false;
        }
    }
    tracing::debug!(server = addr, scripts = scripts.len(), "scripts loaded");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_recorded_once_by_their_sha() {
        let c = ScriptCache::default();
        c.observe(&Request::from_args(&["EVAL", "return 1", "0"]));
        c.observe(&Request::from_args(&["eval", "return 1", "0"]));
        c.observe(&Request::from_args(&["script", "load", "return 2"]));
        c.observe(&Request::from_args(&["GET", "return 3"]));
        c.observe(&Request::from_args(&["SCRIPT", "FLUSH"]));
        assert_eq!(c.len(), 2);
        assert_eq!(c.take_fresh().len(), 2);
        assert!(c.take_fresh().is_empty());
        assert_eq!(c.all().len(), 2);
    }
}
