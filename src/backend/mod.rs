//! Backends: one Redis server each, reached through a few shared, pipelined connections.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod busy;
pub mod conn;
pub mod control;
#[cfg(test)]
pub(crate) mod memory;
pub mod pinned;
pub mod pool;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use conn::{BatchReply, Dispatch, Protocol};
pub use control::{ControlConn, Credentials};
pub use pinned::{BlockedOn, Pinned};
pub use pool::BackendPool;

use crate::config::BackendConfig;
use bytes::Bytes;

use crate::resp::{error_reply, DecodeError};
use crate::router::scan::SCAN_SERVERS;
use crate::router::{Server, ServerHealth};
use crate::stats::{BackendStats, Stats};
use crate::tls::{ClientTls, Stream};

/// Why a backend request failed, and whether it may have run on the server.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Connect, read or write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer in time.
    #[error("timed out")]
    Timeout,
    /// The server closed the connection.
    #[error("connection closed by server")]
    Closed,
    /// The server refused our credentials.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server sent bytes that are not RESP.
    #[error("bad reply: {0}")]
    Protocol(#[from] DecodeError),
    /// The request was never sent: the connection is down (safe to retry elsewhere).
    #[error("no connection to the server")]
    Unavailable,
    /// The connection failed after the request was handed to it: it may or may not have run.
    #[error("connection lost, the command's outcome is unknown")]
    ConnectionLost,
}

impl BackendError {
    /// True when the request may have reached the server, so it must not be replayed.
    pub fn may_have_executed(&self) -> bool {
        !matches!(self, BackendError::Unavailable | BackendError::Auth(_))
    }
}

/// Opens a TCP connection with TCP_NODELAY and keepalive (both legs of the proxy use these).
///
/// # Errors
/// Resolution or connect failure, or the timeout.
pub async fn connect_tcp(addr: &str, timeout: Duration) -> Result<TcpStream, BackendError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| BackendError::Timeout)??;
    tune_socket(&stream);
    Ok(stream)
}

/// Connects to `addr` over TCP and, with `tls`, runs the TLS handshake; both within `timeout`.
///
/// # Errors
/// Resolution, connect or handshake failure, or the timeout.
pub async fn connect_stream(
    addr: &str,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Stream, BackendError> {
    // Unit tests reach their scripted servers here, every kind of connection alike (shared,
    // pinned, control); compiled out of the proxy's own build.
    #[cfg(test)]
    if let Some(memory) = memory::connect(addr) {
        return Ok(memory?);
    }
    let tcp = connect_tcp(addr, timeout).await?;
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(tls) => Ok(tokio::time::timeout(timeout, tls.connect(tcp, addr))
            .await
            .map_err(|_| BackendError::Timeout)??),
    }
}

/// TCP_NODELAY and keepalive (30 s idle, 10 s interval) on a stream; failures only cost latency.
pub fn tune_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&ka);
}

// Each database a client may `SELECT` gets its own connections, opened on first use.
pub use crate::router::DATABASES;

/// One Redis server: its connections, its health and its counters.
pub struct Backend {
    /// The server the routing table names: its address and health.
    server: Arc<Server>,
    /// Connections per (session thread, database, protocol), each set opened on first use by
    /// that thread and running on it: `pools[(thread * DATABASES + db) * 2 + protocol]`.
    pools: Box<[std::sync::OnceLock<BackendPool>]>,
    settings: Arc<ConnSettings>,
    tracker: TaskTracker,
    /// Counters for the stats page.
    pub stats: Arc<BackendStats>,
    token: CancellationToken,
    /// Cancelled when the backend is released or retired (a child of `token`): its health
    /// checks stop.
    released: CancellationToken,
    /// Pinned connections let go clean (after `EXEC`/`DISCARD`/`UNWATCH`), for the next one.
    pub(crate) idle_pinned: pinned::IdlePinned,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl Backend {
    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.server.addr()
    }
    /// The server this backend connects to, as the routing table names it.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
    /// What the health checks see of the server.
    pub fn health(&self) -> &ServerHealth {
        &self.server.health
    }
    /// Session thread `worker`'s connections speaking `protocol` in database `db`, opened on
    /// first use (their actors are spawned on the caller's runtime, so the caller must be that
    /// thread: each thread's requests then never cross threads). `None` for a database past
    /// [`DATABASES`].
    pub fn pool(&self, worker: usize, protocol: Protocol, db: u8) -> Option<&BackendPool> {
        if usize::from(db) >= DATABASES {
            return None;
        }
        let index =
            (worker * DATABASES + usize::from(db)) * 2 + usize::from(protocol == Protocol::Resp3);
        let cell = self
            .pools
            .get(index)
            .or_else(|| self.pools.get(index % (DATABASES * 2)))?;
        Some(cell.get_or_init(|| {
            BackendPool::spawn(
                self.server.addr(),
                self.settings.clone(),
                self.stats.clone(),
                self.token.clone(),
                &self.tracker,
                protocol,
                db,
            )
        }))
    }
    /// Cancelled when the backend is retired or the proxy stops.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Cancelled when the backend is released (it left the topology: see
    /// [`BackendSet::release`]), retired or the proxy stops: what its health checks watch.
    pub fn released(&self) -> &CancellationToken {
        &self.released
    }

    /// A connection of the caller's own to this server (a pub/sub link), authenticated and
    /// speaking `protocol`, outside the pools.
    ///
    /// # Errors
    /// The connection could not be opened or set up.
    pub(crate) async fn connect_dedicated(
        &self,
        protocol: Protocol,
    ) -> Result<crate::tls::Stream, BackendError> {
        conn::connect(self.server.addr(), &self.settings, protocol, 0).await
    }

    /// How long a request may wait for its reply before its connection is given up.
    pub fn command_timeout(&self) -> Duration {
        self.settings.command_timeout
    }

    /// A new control connection to this server (not one of the shared or pinned ones, which may
    /// be waiting behind a busy script), logged in as the proxy.
    ///
    /// # Errors
    /// The server could not be reached or refused the login.
    pub async fn control(&self) -> Result<ControlConn, BackendError> {
        ControlConn::connect(
            self.addr(),
            &self.settings.creds,
            self.settings.connect_timeout,
        )
        .await
    }
}

/// Settings every backend connection uses.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Connections per backend and session thread.
    pub connections: usize,
    /// Session threads (each has its own connections).
    pub workers: usize,
    /// AUTH sent on connect.
    pub creds: Credentials,
    /// Connect + AUTH deadline.
    pub connect_timeout: Duration,
    /// Oldest in-flight request age before the connection is dropped.
    pub command_timeout: Duration,
    /// Cap of the reconnect backoff.
    pub max_backoff: Duration,
    /// `WAIT N timeout`, written after durable dispatches (`write_durability`).
    pub wait: Option<bytes::Bytes>,
    /// Send `READONLY` on connect: a cluster replica then serves reads of its master's slots.
    pub readonly: bool,
}

impl ConnSettings {
    /// From the `[backend]` table, for `workers` session threads.
    pub fn from_config(b: &BackendConfig, workers: usize) -> ConnSettings {
        ConnSettings {
            connections: b.connections,
            workers,
            creds: Credentials {
                username: b.username.clone(),
                password: b.password.clone(),
                // Built at start from the files (`crate::start`): loading them can fail.
                tls: None,
            },
            connect_timeout: Duration::from_millis(b.connect_timeout_ms),
            command_timeout: Duration::from_millis(b.command_timeout_ms),
            max_backoff: Duration::from_millis(b.max_backoff_ms),
            wait: None,
            readonly: false,
        }
    }
}

/// Tells the stats which servers the topology names now, up or down (see
/// [`Stats::in_topology`]), and releases from `sets` the backends it no longer has named for
/// `stats_forget_after_secs`: one decision, so the proxy never checks or connects to a server
/// its stats have forgotten, nor forgets one it still uses. `sets` share one stats registry.
pub fn follow_membership(sets: &[&BackendSet], members: &[&str]) {
    let Some(first) = sets.first() else {
        return;
    };
    let live: Vec<Arc<BackendStats>> = sets.iter().flat_map(|s| s.live_stats(members)).collect();
    let released = first.stats.in_topology(members, &live);
    if released.is_empty() {
        return;
    }
    for set in sets {
        set.release(&released);
    }
}

/// The backends of a set, each at the index its server carries ([`Server::index`]); a slot let
/// go is taken by the next backend spawned.
type Slots = Vec<Option<Arc<Backend>>>;

/// Every backend the topology has named, so connections survive routing-table swaps.
pub struct BackendSet {
    /// Read without a lock wherever a request is sent ([`resolve`](Self::resolve)); changed only
    /// as the topology changes, by copying it whole under `changing`.
    slots: ArcSwap<Slots>,
    /// One change at a time (each copies `slots`, changes the copy and stores it). Never held
    /// across an `.await`.
    changing: Mutex<()>,
    settings: Arc<ConnSettings>,
    stats: Arc<Stats>,
    token: CancellationToken,
    tracker: TaskTracker,
    /// The addresses `SCAN` cursors name servers by, by number (never reused, at most
    /// [`SCAN_SERVERS`]). Never held across an `.await`.
    scan_servers: Mutex<Vec<String>>,
}

/// The backend at `addr` in `slots`.
fn find<'s>(slots: &'s Slots, addr: &str) -> Option<&'s Arc<Backend>> {
    slots.iter().flatten().find(|b| b.addr() == addr)
}

impl BackendSet {
    /// An empty set; backends' tasks run on `tracker` and stop with `token`.
    pub fn new(
        settings: ConnSettings,
        stats: Arc<Stats>,
        token: CancellationToken,
        tracker: TaskTracker,
    ) -> BackendSet {
        BackendSet {
            slots: ArcSwap::from_pointee(Vec::new()),
            changing: Mutex::new(()),
            settings: Arc::new(settings),
            stats,
            token,
            tracker,
            scan_servers: Mutex::new(Vec::new()),
        }
    }

    /// The number `SCAN` cursors from `addr` carry (see [`crate::router::scan`]): given on first
    /// use and kept for the process's life, so the server is found again by its address whatever
    /// its role now. `None` once [`SCAN_SERVERS`] addresses have numbers.
    pub fn scan_number(&self, addr: &str) -> Option<u64> {
        let mut known = self.scan_servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = known.iter().position(|a| a == addr) {
            return u64::try_from(n).ok();
        }
        if known.len() as u64 >= SCAN_SERVERS {
            return None;
        }
        known.push(addr.to_string());
        u64::try_from(known.len() - 1).ok()
    }

    /// The backend of the server `SCAN` cursors number `n` (`None` while the topology does not
    /// have it: an old master between its failover and its return as a replica), or Redis's
    /// error for a number the proxy never gave.
    pub fn by_scan_number(&self, n: u64) -> Result<Option<Arc<Backend>>, Bytes> {
        let addr = usize::try_from(n).ok().and_then(|n| {
            let known = self.scan_servers.lock().unwrap_or_else(|e| e.into_inner());
            known.get(n).cloned()
        });
        let Some(addr) = addr else {
            return Err(error_reply("ERR invalid cursor"));
        };
        Ok(find(&self.slots.load(), &addr).cloned())
    }

    /// Applies `f` to a copy of the slots and stores the copy.
    fn change<R>(&self, f: impl FnOnce(&mut Slots) -> R) -> R {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut slots = Slots::clone(&self.slots.load());
        let r = f(&mut slots);
        self.slots.store(Arc::new(slots));
        r
    }

    /// Takes the backends whose address is `gone` out of the set; `on_removed` is called on each.
    fn remove(&self, gone: impl Fn(&str) -> bool, on_removed: impl Fn(&Backend)) {
        self.change(|slots| {
            for slot in slots.iter_mut() {
                if let Some(b) = slot.take_if(|b| gone(b.addr())) {
                    on_removed(&b);
                }
            }
        });
    }

    /// The backend of `server`, while this set has it: what a session sends to when the routing
    /// table names `server`. Lock-free and without a lookup by address: an `ArcSwap` load and the
    /// slot the server carries. `None` once the backend was reset or released (a backend spawned
    /// again at that address is another server, which only a newer table names): the caller
    /// treats the server as down.
    pub fn resolve(&self, server: &Arc<Server>) -> Option<Arc<Backend>> {
        let slots = self.slots.load();
        let b = slots.get(server.index())?.as_ref()?;
        Arc::ptr_eq(&b.server, server).then(|| b.clone())
    }

    /// The backend for `addr`, creating it (and its connections) if new; the bool says it is new.
    pub fn get_or_spawn(&self, addr: &str) -> (Arc<Backend>, bool) {
        if let Some(b) = find(&self.slots.load(), addr) {
            return (b.clone(), false);
        }
        self.change(|slots| {
            if let Some(b) = find(slots, addr) {
                return (b.clone(), false);
            }
            let index = slots
                .iter()
                .position(Option::is_none)
                .unwrap_or(slots.len());
            let token = self.token.child_token();
            let stats = self.stats.backend(addr);
            let backend = Arc::new(Backend {
                server: Arc::new(Server::new(addr, index)),
                pools: (0..self.settings.workers.max(1) * DATABASES * 2)
                    .map(|_| std::sync::OnceLock::new())
                    .collect(),
                settings: self.settings.clone(),
                tracker: self.tracker.clone(),
                stats,
                released: token.child_token(),
                token,
                idle_pinned: pinned::IdlePinned::default(),
            });
            match slots.get_mut(index) {
                Some(slot) => *slot = Some(backend.clone()),
                None => slots.push(Some(backend.clone())),
            }
            (backend, true)
        })
    }

    /// Stops and forgets every backend not in `keep`.
    pub fn retain(&self, keep: &[&str]) {
        self.remove(|addr| !keep.contains(&addr), |b| b.token.cancel());
    }

    /// Closes every connection to `addr` at once (in-flight requests get "outcome unknown") and
    /// forgets it, so the next [`get_or_spawn`](Self::get_or_spawn) starts afresh. Used on the old
    /// master after a failover: nothing more may reach it through connections opened while it was
    /// the master.
    pub fn reset(&self, addr: &str) {
        self.remove(|a| a == addr, |b| b.token.cancel());
    }

    /// Lets the backends of `addrs` go (they left the topology): their health checks stop and
    /// the next [`get_or_spawn`](Self::get_or_spawn) of one starts afresh. Unlike
    /// [`reset`](Self::reset), nothing in flight is cut: a session waiting for a reply holds the
    /// backend, and its connections close when the last holder lets it go (their actors end with
    /// their senders).
    pub fn release(&self, addrs: &[String]) {
        self.remove(|a| addrs.iter().any(|r| r == a), |b| b.released.cancel());
    }

    /// The counters of the backends of `addrs` that this set has (it creates none).
    pub fn live_stats(&self, addrs: &[&str]) -> Vec<Arc<BackendStats>> {
        let slots = self.slots.load();
        addrs
            .iter()
            .filter_map(|a| find(&slots, a))
            .map(|b| b.stats.clone())
            .collect()
    }

    /// The stats registry the set's backends are counted in.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The backends known now.
    pub fn all(&self) -> Vec<Arc<Backend>> {
        self.slots.load().iter().flatten().cloned().collect()
    }

    /// Credentials for control connections to the servers.
    pub fn credentials(&self) -> &Credentials {
        &self.settings.creds
    }

    /// Connect deadline for control connections.
    pub fn connect_timeout(&self) -> Duration {
        self.settings.connect_timeout
    }
}
