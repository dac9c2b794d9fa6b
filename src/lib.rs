//! haproxy-rs: a RESP-aware Redis proxy that follows Sentinel.
//!
//! Crate map:
//! - [`cli`]: subcommands and flags; [`config`]: the TOML file, validation.
//! - [`import`]: `haproxy-rs import-haproxy`, an HAProxy config translated to haproxy-rs TOML.
//! - [`resp`]: the client request parser, backend reply framing, encoding, the command table.
//! - [`router`]: classifying commands, the [`router::RoutingTable`] snapshot, read-your-writes.
//! - [`topology`]: Sentinel links, static servers and health checks that publish routing tables.
//! - [`cluster`]: cluster mode: the slot map, routing by slot, redirections, split commands.
//! - [`backend`]: shared, pipelined connections to each Redis server.
//! - [`proxy`]: listeners and client sessions; client authentication, users' rules and the command
//!   policy ([`client::acl`]).
//! - [`stats`]: counters and the stats page (HTML, JSON, Prometheus); `stats::admin` guards its
//!   admin actions (`POST /switchover`) with the admin token.
//! - [`logging`]: the binary's log on stderr, text or JSON lines.
//! - [`shutdown`]: graceful shutdown.
//! - [`reload`]: applying a changed config to the running proxy (`SIGHUP`, `POST /reload`).
//! - [`upgrade`]: handing the listening sockets to a new process (`run --takeover`).
//! - [`tls`]: TLS on the client listeners and to backends and sentinels; the stream type of both legs.
//! - [`bench`](mod@bench): `haproxy-rs bench`, the load generator (throughput, latency, failover cost).
//! - `wiring`: the steps [`start`] takes to put the parts together.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod import;
pub mod logging;
pub mod primary;
pub mod proxy;
pub mod pubsub;
pub mod reload;
pub mod resp;
pub mod router;
pub mod scripts;
pub mod shutdown;
pub mod stats;
#[cfg(test)]
pub(crate) mod testkit;
pub mod tls;
pub mod topology;
pub mod upgrade;
mod wiring;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use backend::ConnSettings;
use config::{Config, ConfigError};
use proxy::workers::Workers;
use router::{ReplicationClock, RoutingTable};
use stats::Stats;
use wiring::{output_budget, session_threads, ListenerShared, Sockets, TopologyFeeds, Wiring};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The session threads could not be started.
    #[error("cannot start the session threads: {0}")]
    Threads(std::io::Error),
    /// The listening sockets could not be offered or taken over (`[upgrade]`, `--takeover`).
    #[error("upgrade socket: {0}")]
    Upgrade(#[from] upgrade::UpgradeError),
}

/// A running proxy.
pub struct Proxy {
    /// The read/write endpoint's bound address.
    pub addr: SocketAddr,
    /// The read-only endpoint's bound address.
    pub read_addr: Option<SocketAddr>,
    /// The stats page's bound address.
    pub stats_addr: Option<SocketAddr>,
    /// The stats registry.
    pub stats: Arc<Stats>,
    /// The current routing table.
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Cluster mode's slot map and backends.
    pub cluster: Option<Arc<cluster::ClusterState>>,
    /// `max_output_bytes_total`'s accounting (`None`: no limit).
    pub output_budget: Option<Arc<client::output_budget::OutputBudget>>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    background: TaskTracker,
    backend_token: CancellationToken,
    hard_stop: CancellationToken,
    stats_stop: CancellationToken,
    grace: Duration,
    workers: Arc<Workers>,
    reloads: Option<stats::ReloadSender>,
}

impl Proxy {
    /// Waits until shutdown is requested, then stops gracefully: no new clients (`/healthz`
    /// answers 503 meanwhile), idle clients closed, in-flight requests answered and transactions
    /// let end, within `shutdown_grace_ms`; then whatever is left is closed and the backends too.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        if !shutdown::drain(&self.sessions, self.grace).await {
            // The grace timer cancels `hard_stop` too; done here as well, in case it is late.
            self.hard_stop.cancel();
            tracing::warn!(
                grace_ms = self.grace.as_millis() as u64,
                "client sessions still busy at the end of the shutdown grace were closed"
            );
            shutdown::drain(&self.sessions, shutdown::HARD_STOP).await;
        }
        self.hard_stop.cancel();
        self.stats_stop.cancel();
        self.backend_token.cancel();
        shutdown::drain(&self.background, Duration::from_secs(2)).await;
        self.workers.stop();
    }

    /// Where reloads are asked for (`SIGHUP`), when started with a [`Launch::reload`] source.
    pub fn reloads(&self) -> Option<stats::ReloadSender> {
        self.reloads.clone()
    }

    /// Requests shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// Checks `cfg` whole, before anything starts: [`Config::validate`], then the users' rules and
/// the command policy. Those are read against the command table, which `config` sits below, so
/// they are checked here, where the layers meet, rather than in `validate`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the first key with a problem.
pub fn check_config(cfg: &Config) -> Result<(), ConfigError> {
    cfg.validate()?;
    client::acl::Security::from_config(&cfg.auth, &cfg.commands, &cfg.backend)?;
    Ok(())
}

/// Checks `cfg` ([`check_config`]), binds every listener and starts the topology, sessions and
/// stats tasks.
///
/// # Errors
/// An invalid config or a listener that cannot bind.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Proxy, StartError> {
    start_with(cfg, shutdown, Launch::default()).await
}

/// How [`start_with`] starts besides the config.
#[derive(Default)]
pub struct Launch {
    /// The listening sockets a running proxy handed over (a takeover: see [`upgrade`]); used
    /// where they match the config.
    pub inherited: upgrade::Inherited,
    /// Where a reload reads the config again (`None`: no reloads; `POST /reload` answers 404).
    pub reload: Option<reload::ConfigSource>,
}

/// [`start`], with what `launch` gives.
///
/// # Errors
/// See [`start`].
pub async fn start_with(
    cfg: Config,
    shutdown: CancellationToken,
    launch: Launch,
) -> Result<Proxy, StartError> {
    let Launch { inherited, reload } = launch;
    check_config(&cfg)?;
    let tls = tls::Setup::load(&cfg)?;
    let sockets = Sockets::bind(&cfg, inherited).await?;
    let offer = sockets.offer(&cfg)?;
    let wiring = Wiring::new(&cfg);
    let sessions = TaskTracker::new();
    let workers = Arc::new(
        Workers::start(session_threads(cfg.threads), &sessions).map_err(StartError::Threads)?,
    );
    let durability = client::Durability::from_config(&cfg.failover);
    let mut conn_settings = ConnSettings::from_config(&cfg.backend, workers.len());
    conn_settings.creds.tls = tls.backend;
    conn_settings.wait = durability.as_ref().map(|d| d.wait.clone());
    let cluster_state = cfg
        .cluster
        .as_ref()
        .map(|c| wiring.cluster_state(c, &conn_settings));
    let backends = wiring.backend_set(conn_settings);
    let clock = Arc::new(ReplicationClock::default());
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let state = Arc::new(wiring.topology_state(backends, clock.clone(), changes_tx));
    let (switchover_tx, switchover_rx) = mpsc::unbounded_channel();
    let (followed_tx, followed_rx) = tokio::sync::watch::channel(topology::Followed::of(&cfg));
    let topology = TopologyFeeds {
        sentinel_tls: tls.sentinel,
        changes: changes_rx,
        switchovers: switchover_rx,
        followed: followed_rx,
    };
    wiring.spawn_topology(&state, cluster_state.as_ref(), topology);
    let scripts = wiring.spawn_script_loader(&state, &cluster_state);
    let security = wiring.security(&state, &cluster_state)?;
    let output_budget = output_budget(&cfg);
    let ctx = Arc::new(wiring.client_context(
        &state,
        clock,
        security,
        durability,
        output_budget.clone(),
        scripts,
    ));
    let live = client::live::LiveContext::new(ctx);
    let shared = ListenerShared {
        live: live.clone(),
        cluster: cluster_state.clone(),
        clients: Arc::new(Semaphore::new(cfg.max_clients)),
        workers: workers.clone(),
        tls: tls.server.clone(),
    };
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    let reloads = reload.is_some().then_some(reload_tx);
    let admin_channels = wiring::AdminChannels {
        switchover: switchover_tx,
        reload: reloads.clone(),
    };
    let (addr, read_addr, stats_addr) =
        wiring.spawn_listeners(sockets, shared, admin_channels, &shutdown);
    if let Some(source) = reload {
        let reloader = reload::Reloader {
            source,
            running: cfg.clone(),
            live,
            stats: wiring.stats.clone(),
            followed: followed_tx,
            server_tls: tls.server,
        };
        wiring
            .background
            .spawn(reloader.run(reload_rx, wiring.backend_token.clone()));
    }
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    let Wiring {
        stats,
        background,
        backend_token,
        hard_stop,
        stats_stop,
        ..
    } = wiring;
    background.spawn(shutdown::hard_stop_after(
        shutdown.clone(),
        grace,
        hard_stop.clone(),
    ));
    if let Some(offer) = offer {
        background.spawn(offer.serve(shutdown.clone(), stats_stop.clone()));
    }
    stats.count_tasks(sessions.clone(), background.clone());
    Ok(Proxy {
        addr,
        read_addr,
        stats_addr,
        stats,
        table: state.table.clone(),
        cluster: cluster_state,
        output_budget,
        shutdown,
        sessions,
        background,
        backend_token,
        hard_stop,
        stats_stop,
        grace,
        workers,
        reloads,
    })
}

/// Starts the proxy and serves until `shutdown` is cancelled.
///
/// # Errors
/// See [`start`].
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    start(cfg, shutdown).await?.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn key_of(text: &str) -> &'static str {
        let text = format!("servers = [\"127.0.0.1:6379\"]\n{text}");
        match check_config(&Config::from_toml(&text, "t.toml").unwrap()) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn users_rules_and_the_command_policy_are_checked_with_the_config() {
        assert_eq!(
            key_of("[[auth.users]]\nname = \"a\"\npassword = \"x\"\ncommands = [\"get\"]\n"),
            "auth.users"
        );
        assert_eq!(key_of("[auth]\nrequirepass = \"\"\n"), "auth.requirepass");
        assert_eq!(
            key_of("[commands]\ndeny = [\"not a command\"]\n"),
            "commands.deny"
        );
        assert_eq!(key_of("[commands]\nallow = [\"\"]\n"), "commands.allow");
        // What `validate` finds comes first, as before.
        assert_eq!(
            key_of("admin_token = \"\"\n[auth]\nrequirepass = \"\"\n"),
            "admin_token"
        );
    }

    #[test]
    fn every_shipped_config_file_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg = Config::from_file(&path).unwrap();
                check_config(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 2, "config/*.toml files found: {seen}");
    }
}
