//! `[auth] mode = "backend"`: a client's `AUTH` is checked by the master itself, and the user's
//! rules are the master's own (`ACL LIST`), enforced by the proxy before a command reaches a
//! shared connection and refreshed while clients use them.
//!
//! Credentials are checked on a few side connections (at most [`MAX_CHECKS`] at once, kept idle
//! for reuse), by the master, or by a replica while no master answers (during a failover). A
//! credential the server accepted is remembered as its SHA-256 (what Redis itself keeps), never
//! the password, for [`CACHE_TTL`] at most, so that a pool reconnecting many clients is not held
//! behind the master. The cache forgets a user's entries when the server refuses them, when the
//! server's password list no longer has them, and when the master changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::acl::{Rules, User};
use super::acl_describe::{acl_list_users, field, rules_from_getuser, words};
use super::sha256::sha256;
use crate::backend::{ControlConn, Credentials};
use crate::resp::{error_reply, Value};
use crate::stats::AuthStats;

/// Credentials checked on the servers at once, all clients together.
pub const MAX_CHECKS: usize = 4;
/// Longest a credential the server accepted is taken without asking it again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How often the rules of users in use are read again from the master.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How often the refresher looks for a new master.
const MASTER_WATCH: Duration = Duration::from_millis(200);
/// Most user names whose credentials are cached; past it the cache starts over.
const MAX_CACHED_USERS: usize = 10_000;
/// Most passwords cached per user (Redis users may have several).
const MAX_DIGESTS_PER_USER: usize = 16;

/// Where the servers are now: the master first, then the replicas (cluster mode: every master,
/// then the replicas).
pub type ServerList = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// User name -> (SHA-256 of a password the server accepted, when).
type Cache = HashMap<String, Vec<([u8; 32], Instant)>>;

/// Checks credentials with the servers and keeps the rules of the users clients logged in as.
pub struct BackendAuth {
    counters: Arc<AuthStats>,
    servers: ServerList,
    /// The proxy's `[backend]` credentials and TLS, for `ACL LIST`.
    admin: Credentials,
    timeout: Duration,
    checks: Semaphore,
    /// Side connections for `AUTH`, with the server each is connected to.
    idle: Mutex<Vec<(String, ControlConn)>>,
    cache: Mutex<Cache>,
    /// The users clients are logged in as; their rules are refreshed.
    users: Mutex<HashMap<String, Weak<User>>>,
    /// An `ACL SETUSER`/`DELUSER`/`LOAD` went through: refresh soon.
    changed: Notify,
    /// The master's `default` user when it is `on nopass`: new clients start as it, as they
    /// would directly.
    open_default: Mutex<Option<Arc<User>>>,
}

impl std::fmt::Debug for BackendAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendAuth").finish_non_exhaustive()
    }
}

/// Why a login failed: the reply for the client.
pub type Refusal = Bytes;

impl BackendAuth {
    /// A checker over `servers`, reading rules with the proxy's `admin` credentials.
    pub fn new(
        servers: ServerList,
        admin: Credentials,
        timeout: Duration,
        counters: Arc<AuthStats>,
    ) -> BackendAuth {
        BackendAuth {
            counters,
            servers,
            admin,
            timeout,
            checks: Semaphore::new(MAX_CHECKS),
            idle: Mutex::new(Vec::new()),
            cache: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            open_default: Mutex::new(None),
        }
    }

    /// The `default` user when the master lets clients in without `AUTH` (`on nopass`).
    pub fn open_default(&self) -> Option<Arc<User>> {
        self.open_default
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `AUTH [user] password` (`user` `None`: the `default` user, and the server is asked with
    /// one argument so that its own errors come back as they would directly).
    ///
    /// # Errors
    /// The reply for the client: the server's own (`WRONGPASS`...), or why it could not be asked.
    pub async fn login(&self, user: Option<&[u8]>, password: &[u8]) -> Result<Arc<User>, Refusal> {
        let name = String::from_utf8_lossy(user.unwrap_or(b"default")).into_owned();
        let digest = sha256(password);
        if self.cached(&name, &digest) {
            if let Some(u) = self.live_user(&name) {
                self.counters.cache_hit();
                return Ok(u);
            }
        }
        self.counters.server_check();
        let mut auth: Vec<&[u8]> = vec![b"AUTH"];
        auth.extend(user);
        auth.push(password);
        match self.ask(&auth).await {
            Ok(Value::Status(_)) => {}
            Ok(Value::Error(e)) => {
                self.forget(&name);
                return Err(error_reply(&String::from_utf8_lossy(&e)));
            }
            Ok(_) => return Err(error_reply("ERR haproxy-rs: unexpected reply to AUTH")),
            Err(why) => {
                tracing::warn!(error = %why, "cannot check a client's credentials");
                return Err(error_reply(&format!(
                    "ERR haproxy-rs could not check the credentials with the master ({why})"
                )));
            }
        }
        self.remember(&name, digest);
        if let Some(u) = self.live_user(&name) {
            return Ok(u);
        }
        let rules = self.read_rules(std::slice::from_ref(&name)).await;
        let rules = rules.into_iter().next().map_or_else(
            || Rules::refused("haproxy-rs could not read this user's rules".into()),
            |(_, r)| r.unwrap_or_else(|| Rules::refused("this user no longer exists".into())),
        );
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        // Another session may have logged the same user in meanwhile: one User per name.
        if let Some(u) = users.get(&name).and_then(Weak::upgrade) {
            return Ok(u);
        }
        let u = Arc::new(User::from_backend(name.clone(), rules));
        users.retain(|_, w| w.strong_count() > 0);
        users.insert(name, Arc::downgrade(&u));
        Ok(u)
    }

    /// A client's `ACL SETUSER`/`DELUSER`/`LOAD` went to the server: read the rules again soon.
    pub fn acl_changed(&self) {
        self.changed.notify_one();
    }

    /// Refreshes the rules of the users in use every [`REFRESH_INTERVAL`], soon after
    /// [`acl_changed`](Self::acl_changed), and at once when the master changes (the new
    /// master's users apply; the cache starts over).
    pub async fn run(self: Arc<Self>, token: CancellationToken) {
        let first = || (self.servers)().into_iter().next();
        let mut master = None;
        let mut next = Instant::now();
        let mut follow_up: Option<Instant> = None;
        loop {
            // The server list is looked at often: a failover's new master applies at once.
            let notified = tokio::select! {
                _ = token.cancelled() => return,
                _ = self.changed.notified() => true,
                _ = tokio::time::sleep(MASTER_WATCH) => false,
            };
            let now_master = first();
            let moved = now_master != master;
            if moved {
                tracing::info!(master = ?now_master, "backend auth: the master changed; its users apply");
                master = now_master;
                self.lock_cache().clear();
                self.lock_idle().clear();
            }
            let now = Instant::now();
            let followed = follow_up.is_some_and(|t| now >= t);
            if !(moved || notified || followed || now >= next) {
                continue;
            }
            if notified {
                // Once when the command has most likely reached the server, once more later.
                tokio::time::sleep(Duration::from_millis(20)).await;
                follow_up = Some(now + Duration::from_millis(500));
            } else if followed {
                follow_up = None;
            }
            self.refresh().await;
            next = Instant::now() + REFRESH_INTERVAL;
        }
    }

    /// Reads the rules of every user in use, and prunes the cache of passwords the server no
    /// longer has.
    async fn refresh(&self) {
        let live: Vec<(String, Arc<User>)> = {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            users.retain(|_, w| w.strong_count() > 0);
            users
                .iter()
                .filter_map(|(n, w)| w.upgrade().map(|u| (n.clone(), u)))
                .collect()
        };
        let mut names: Vec<String> = live.iter().map(|(n, _)| n.clone()).collect();
        names.extend(self.lock_cache().keys().cloned());
        names.push("default".into());
        names.sort_unstable();
        names.dedup();
        for (name, got) in self.read_rules(&names).await {
            let Some(rules) = got else {
                // Deleted (or its rules could not be read): no cached login for it.
                self.forget(&name);
                if let Some((_, u)) = live.iter().find(|(n, _)| *n == name) {
                    u.set_rules(Rules::refused("this user no longer exists".into()));
                }
                continue;
            };
            if let Some((_, u)) = live.iter().find(|(n, _)| *n == name) {
                u.set_rules(rules);
            }
        }
    }

    /// Each name's rules on the master: `(name, Some(rules))`, `None` for a user that does not
    /// exist. Read with one `ACL LIST` (Redis 7.0 answers it in tens of microseconds, where one
    /// `ACL GETUSER` of a restricted user takes over a millisecond of the master's time). When
    /// the master cannot be asked the names are left out (and it is logged); when it refuses,
    /// every name gets rules refusing its commands, saying why.
    async fn read_rules(&self, names: &[String]) -> Vec<(String, Option<Rules>)> {
        let Some(addr) = (self.servers)().into_iter().next() else {
            return Vec::new();
        };
        let reply = match ControlConn::connect(&addr, &self.admin, self.timeout).await {
            Ok(mut conn) => conn.call(&["ACL", "LIST"]).await,
            Err(e) => Err(e),
        };
        let users = match reply {
            Ok(Value::Error(e)) => {
                let e = String::from_utf8_lossy(&e).into_owned();
                tracing::warn!(backend.addr = %addr, error = %e, "ACL LIST refused (the backend user needs +acl|list)");
                let why =
                    format!("haproxy-rs could not read this user's rules from the master ({e})");
                return names
                    .iter()
                    .map(|n| (n.clone(), Some(Rules::refused(why.clone()))))
                    .collect();
            }
            Ok(v) => acl_list_users(&v),
            Err(e) => {
                tracing::warn!(backend.addr = %addr, error = %e, "cannot read users' ACL rules");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(v) = users.get(name) else {
                out.push((name.clone(), None));
                continue;
            };
            self.prune(name, v);
            let rules = rules_from_getuser(name, v);
            if name == "default" {
                self.set_open_default(v, &rules);
            }
            out.push((name.clone(), Some(rules)));
        }
        out
    }

    /// Sends one command on a side connection to the first server that answers.
    async fn ask(&self, args: &[&[u8]]) -> Result<Value, String> {
        let _permit = self
            .checks
            .acquire()
            .await
            .map_err(|_| "shutting down".to_string())?;
        let servers = (self.servers)();
        if servers.is_empty() {
            return Err("no master known".into());
        }
        let mut last = String::new();
        // The master decides; a replica only when the master cannot be reached.
        for addr in servers.iter().take(3) {
            let reused = {
                let mut idle = self.lock_idle();
                idle.iter()
                    .position(|(a, _)| a == addr)
                    .map(|i| idle.swap_remove(i).1)
            };
            if let Some(mut conn) = reused {
                // The server may have closed an idle connection: then a new one is tried.
                if let Ok(v) = conn.call(args).await {
                    self.keep_idle(addr, conn);
                    return Ok(v);
                }
            }
            let plain = Credentials {
                username: None,
                password: None,
                tls: self.admin.tls.clone(),
            };
            let answer = match ControlConn::connect(addr, &plain, self.timeout).await {
                Ok(mut conn) => conn.call(args).await.map(|v| (v, conn)),
                Err(e) => Err(e),
            };
            match answer {
                Ok((v, conn)) => {
                    self.keep_idle(addr, conn);
                    return Ok(v);
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    }

    fn keep_idle(&self, addr: &str, conn: ControlConn) {
        let mut idle = self.lock_idle();
        if idle.len() < MAX_CHECKS {
            idle.push((addr.to_string(), conn));
        }
    }

    /// Keeps the `default` user for new clients when it is `on nopass` on the master.
    fn set_open_default(&self, getuser: &Value, rules: &Rules) {
        let flags = field(getuser, "flags").map(words).unwrap_or_default();
        let open = flags.iter().any(|f| f == "on") && flags.iter().any(|f| f == "nopass");
        let user = open.then(|| {
            self.live_user("default").unwrap_or_else(|| {
                let u = Arc::new(User::from_backend("default".into(), rules.clone()));
                let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
                users.insert("default".into(), Arc::downgrade(&u));
                u
            })
        });
        *self.open_default.lock().unwrap_or_else(|e| e.into_inner()) = user;
    }

    fn cached(&self, name: &str, digest: &[u8; 32]) -> bool {
        self.lock_cache().get(name).is_some_and(|ds| {
            ds.iter()
                .any(|(d, at)| super::acl::constant_time_eq(d, digest) && at.elapsed() < CACHE_TTL)
        })
    }

    fn remember(&self, name: &str, digest: [u8; 32]) {
        let mut cache = self.lock_cache();
        if cache.len() >= MAX_CACHED_USERS && !cache.contains_key(name) {
            cache.clear();
        }
        let ds = cache.entry(name.to_string()).or_default();
        ds.retain(|(d, at)| *d != digest && at.elapsed() < CACHE_TTL);
        if ds.len() >= MAX_DIGESTS_PER_USER {
            ds.remove(0);
        }
        ds.push((digest, Instant::now()));
    }

    fn forget(&self, name: &str) {
        self.lock_cache().remove(name);
    }

    /// Keeps only the cached passwords the server still lists (any, for a `nopass` user);
    /// none for a user that is `off`.
    fn prune(&self, name: &str, getuser: &Value) {
        let flags = field(getuser, "flags").map(words).unwrap_or_default();
        if flags.iter().any(|f| f == "off") {
            return self.forget(name);
        }
        if flags.iter().any(|f| f == "nopass") {
            return;
        }
        let hashes = field(getuser, "passwords").map(words).unwrap_or_default();
        let mut cache = self.lock_cache();
        if let Some(ds) = cache.get_mut(name) {
            ds.retain(|(d, _)| hashes.contains(&hex(d)));
        }
    }

    fn live_user(&self, name: &str) -> Option<Arc<User>> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(name).and_then(Weak::upgrade)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Poisoning only means a panic elsewhere; the map is still usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(String, ControlConn)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn the_cache_keeps_digests_only_while_the_server_lists_them() {
        let auth = BackendAuth::new(
            Box::new(Vec::new),
            Credentials::default(),
            Duration::from_secs(1),
            Arc::default(),
        );
        let d = sha256(b"pw");
        assert!(!auth.cached("app", &d));
        auth.remember("app", d);
        assert!(auth.cached("app", &d));
        assert!(!auth.cached("app", &sha256(b"other")));
        assert!(!auth.cached("other", &d));
        let listed = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on")]),
            bulk("passwords"),
            Value::Array(vec![bulk(&hex(&d))]),
        ]);
        auth.prune("app", &listed);
        assert!(auth.cached("app", &d));
        let changed = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on")]),
            bulk("passwords"),
            Value::Array(vec![bulk(&hex(&sha256(b"new")))]),
        ]);
        auth.prune("app", &changed);
        assert!(!auth.cached("app", &d));
        auth.remember("app", d);
        let off = Value::Array(vec![bulk("flags"), Value::Array(vec![bulk("off")])]);
        auth.prune("app", &off);
        assert!(!auth.cached("app", &d));
    }
}
