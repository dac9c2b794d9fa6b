//! What [`start`](crate::start) wires together, step by step: the listening sockets, the
//! backends, the cluster state, the topology task of the mode, the script loader, client security
//! and the context every session shares, the listeners and the stats page.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{BackendSet, ConnSettings};
use crate::client::ProxyContext;
use crate::config::{self, parse_listen_addr, Config, ConfigError};
use crate::proxy::listener::Listener;
use crate::proxy::workers::Workers;
use crate::router::{Endpoint, ReplicationClock, RoutingTable};
use crate::stats::{self, Stats};
use crate::topology::{self, TopologyState};
use crate::{client, cluster, scripts, tls, upgrade, StartError};

/// The listener of `what` on `addr`: the one a running proxy handed over for `role`, if it
/// listens there, or a new one.
async fn bind(
    what: &'static str,
    addr: &str,
    role: upgrade::Role,
    inherited: &mut upgrade::Inherited,
) -> Result<TcpListener, StartError> {
    let sa = parse_listen_addr(addr)
        .map_err(|problem| StartError::Config(ConfigError::Invalid { key: what, problem }))?;
    if let Some(socket) = inherited.take(role, sa) {
        tracing::info!(listener = what, %addr, "listening socket taken over from the running proxy");
        return TcpListener::from_std(socket).map_err(|source| StartError::Bind {
            what,
            addr: addr.to_string(),
            source,
        });
    }
    TcpListener::bind(sa)
        .await
        .map_err(|source| StartError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

/// The listening sockets, bound before anything starts.
pub(crate) struct Sockets {
    main: TcpListener,
    read: Option<TcpListener>,
    stats: Option<TcpListener>,
}

impl Sockets {
    /// Binds what `cfg` names, or takes it from `inherited` (a takeover).
    pub(crate) async fn bind(
        cfg: &Config,
        mut inherited: upgrade::Inherited,
    ) -> Result<Sockets, StartError> {
        use upgrade::Role;
        let main = bind("listen", &cfg.listen, Role::Main, &mut inherited).await?;
        let read = match &cfg.read_listen {
            Some(a) => Some(bind("read_listen", a, Role::Read, &mut inherited).await?),
            None => None,
        };
        let stats = match &cfg.stats {
            Some(a) => Some(bind("stats", a, Role::Stats, &mut inherited).await?),
            None => None,
        };
        for (role, addr) in inherited.left() {
            tracing::warn!(
                ?role,
                ?addr,
                "a listening socket handed over is not in this config: it closes with the old proxy"
            );
        }
        Ok(Sockets { main, read, stats })
    }

    /// With `[upgrade] socket`: the Unix socket where the listening sockets are handed to a new
    /// process (copies of them, closed when the proxy stops).
    pub(crate) fn offer(&self, cfg: &Config) -> Result<Option<upgrade::Offer>, StartError> {
        use std::os::fd::AsFd;
        use upgrade::Role;
        let Some(path) = &cfg.upgrade.socket else {
            return Ok(None);
        };
        let sockets = std::iter::once((Role::Main, &self.main))
            .chain(self.read.as_ref().map(|s| (Role::Read, s)))
            .chain(self.stats.as_ref().map(|s| (Role::Stats, s)));
        let mut copies = Vec::new();
        for (role, socket) in sockets {
            let fd = socket.as_fd().try_clone_to_owned().map_err(|e| {
                StartError::Upgrade(upgrade::UpgradeError::Io {
                    what: "cannot copy a listening socket",
                    source: e,
                })
            })?;
            copies.push((role, fd));
        }
        let offer = upgrade::Offer::bind(path, copies).map_err(StartError::Upgrade)?;
        tracing::info!(path = %path.display(), "upgrade socket: a new process started with --takeover takes the listeners over here");
        Ok(Some(offer))
    }
}

/// `threads`, with 0 resolved to half the cores.
pub(crate) fn session_threads(threads: usize) -> usize {
    match threads {
        // Half the cores: measured on two, one session thread beat two by a third at pipeline 1
        // (the kernel's loopback work, the clients and Redis need the other core).
        0 => std::thread::available_parallelism().map_or(1, |n| (usize::from(n) / 2).max(1)),
        n => n,
    }
}

/// What the topology task of the mode receives besides the shared state.
pub(crate) struct TopologyFeeds {
    /// The connector to the sentinels (`[sentinel] tls`).
    pub(crate) sentinel_tls: Option<Arc<tls::ClientTls>>,
    /// Health transitions of the backends.
    pub(crate) changes: mpsc::UnboundedReceiver<String>,
    /// `POST /switchover` requests from the stats listener.
    pub(crate) switchovers: mpsc::UnboundedReceiver<stats::switchover::SwitchoverRequest>,
    /// What the mode's task follows (sentinels and master name, servers, seeds), as reloads
    /// change it.
    pub(crate) followed: topology::FollowedReceiver,
}

/// Where the stats page's admin actions go.
pub(crate) struct AdminChannels {
    /// `POST /switchover` (Sentinel mode only).
    pub(crate) switchover: stats::switchover::SwitchoverSender,
    /// `POST /reload`, when the proxy can read its config again.
    pub(crate) reload: Option<stats::ReloadSender>,
}

/// What every listener shares.
pub(crate) struct ListenerShared {
    pub(crate) live: Arc<client::live::LiveContext>,
    pub(crate) cluster: Option<Arc<cluster::ClusterState>>,
    pub(crate) clients: Arc<Semaphore>,
    pub(crate) workers: Arc<Workers>,
    pub(crate) tls: Option<Arc<tls::ServerTls>>,
}

/// What `start` hands every background task it spawns: the config, the stats registry, the
/// tracker the tasks run on and the token that stops the backends' tasks.
pub(crate) struct Wiring<'a> {
    cfg: &'a Config,
    pub(crate) stats: Arc<Stats>,
    pub(crate) background: TaskTracker,
    pub(crate) backend_token: CancellationToken,
    /// The end of the shutdown grace, which ends every client session still open (see
    /// `client::registry`).
    pub(crate) hard_stop: CancellationToken,
    /// Stops the stats listener: at the end of a shutdown, or at once when a new process takes
    /// the listeners over (it serves the stats page from then on).
    pub(crate) stats_stop: CancellationToken,
}

impl<'a> Wiring<'a> {
    pub(crate) fn new(cfg: &'a Config) -> Self {
        let (mode, master_name) = match (&cfg.sentinel, &cfg.cluster) {
            (Some(s), _) => ("sentinel", Some(s.master_name.as_str())),
            (None, Some(_)) => ("cluster", None),
            (None, None) => ("static", None),
        };
        Wiring {
            cfg,
            stats: Stats::forgetting_after(
                mode,
                master_name,
                Duration::from_secs(cfg.stats_forget_after_secs),
            ),
            background: TaskTracker::new(),
            backend_token: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            stats_stop: CancellationToken::new(),
        }
    }

    pub(crate) fn backend_set(&self, settings: ConnSettings) -> BackendSet {
        BackendSet::new(
            settings,
            self.stats.clone(),
            self.backend_token.clone(),
            self.background.clone(),
        )
    }

    /// What the topology tasks share; `changes` gets the backends' health transitions.
    pub(crate) fn topology_state(
        &self,
        backends: BackendSet,
        clock: Arc<ReplicationClock>,
        changes: mpsc::UnboundedSender<String>,
    ) -> TopologyState {
        TopologyState::new(
            Arc::new(backends),
            self.stats.clone(),
            Duration::from_millis(self.cfg.backend.health_interval_ms),
            self.cfg.routing.max_replica_lag_secs,
            clock,
            changes,
            self.background.clone(),
            self.backend_token.clone(),
        )
    }

    /// Cluster mode's slot map and backends (masters, and replicas with `READONLY` and health
    /// checks).
    pub(crate) fn cluster_state(
        &self,
        c: &config::ClusterConfig,
        conn_settings: &ConnSettings,
    ) -> Arc<cluster::ClusterState> {
        let cfg = self.cfg;
        let replicas = ConnSettings {
            readonly: true,
            ..conn_settings.clone()
        };
        let health = topology::health::HealthContext {
            interval: Duration::from_millis(cfg.backend.health_interval_ms),
            timeout: Duration::from_millis(cfg.backend.connect_timeout_ms),
            creds: conn_settings.creds.clone(),
            max_lag_secs: cfg.routing.max_replica_lag_secs,
            feeds: None,
        };
        let tracker = self.background.clone();
        let watch_replica = Box::new(move |replica| {
            tracker.spawn(topology::health::run_health(replica, health.clone()));
        });
        let mut state = cluster::ClusterState::new(
            self.backend_set(conn_settings.clone()),
            self.backend_set(replicas),
            self.stats.cluster(),
            Duration::from_millis(c.retry_window_ms),
            watch_replica,
        );
        state.tx_limits = cluster::tx::TxLimits {
            max_commands: c.max_multi_commands,
            max_bytes: c.max_multi_bytes.bytes(),
        };
        Arc::new(state)
    }

    /// The mode's topology task (the slot map refresher and the migrations watch, the sentinel
    /// manager, or the static servers' checks).
    pub(crate) fn spawn_topology(
        &self,
        state: &Arc<TopologyState>,
        cluster_state: Option<&Arc<cluster::ClusterState>>,
        feeds: TopologyFeeds,
    ) {
        let (cfg, background, token) = (self.cfg, &self.background, &self.backend_token);
        let backends = &state.backends;
        match (&cfg.sentinel, &cfg.cluster, cluster_state) {
            (_, Some(c), Some(cs)) => background.spawn(
                cluster::refresh::Refresher {
                    state: cs.clone(),
                    config: c.clone(),
                    creds: backends.credentials().clone(),
                    timeout: backends.connect_timeout(),
                    commands: state.commands.clone(),
                    server_version: state.server_version.clone(),
                    followed: feeds.followed,
                }
                .run(token.clone()),
            ),
            (Some(s), _, _) => background.spawn(topology::sentinel::run_sentinel(
                s.clone(),
                feeds.sentinel_tls,
                state.clone(),
                feeds.changes,
                cfg.failover.clone(),
                feeds.switchovers,
                feeds.followed,
            )),
            _ => background.spawn(topology::static_servers::run_static(
                cfg.servers.clone(),
                state.clone(),
                feeds.changes,
                feeds.followed,
            )),
        };
        if let Some(cs) = cluster_state {
            background.spawn(cluster::refresh::watch_migrations(
                cs.clone(),
                backends.credentials().clone(),
                backends.connect_timeout(),
                Duration::from_millis(cfg.backend.health_interval_ms),
                token.clone(),
            ));
        }
    }

    /// The script cache, and the task that loads every script it learns onto every server.
    pub(crate) fn spawn_script_loader(
        &self,
        state: &TopologyState,
        cluster_state: &Option<Arc<cluster::ClusterState>>,
    ) -> Arc<scripts::ScriptCache> {
        let scripts = Arc::new(scripts::ScriptCache::default());
        self.background.spawn(scripts::run_loader(
            scripts.clone(),
            server_list(&state.table, cluster_state),
            state.backends.credentials().clone(),
            state.backends.connect_timeout(),
            self.backend_token.clone(),
        ));
        scripts
    }

    /// Client authentication and the command policy; with `auth.mode = "backend"`, the task that
    /// checks the clients' credentials against the servers.
    pub(crate) fn security(
        &self,
        state: &TopologyState,
        cluster_state: &Option<Arc<cluster::ClusterState>>,
    ) -> Result<client::acl::Security, ConfigError> {
        let cfg = self.cfg;
        let mut security =
            client::acl::Security::from_config(&cfg.auth, &cfg.commands, &cfg.backend)?
                .with_counters(self.stats.auth());
        match security.mode() {
            config::AuthMode::Backend => {
                let checker = Arc::new(client::backend_auth::BackendAuth::new(
                    Box::new(server_list(&state.table, cluster_state)),
                    state.backends.credentials().clone(),
                    state.backends.connect_timeout(),
                    self.stats.auth(),
                ));
                self.background
                    .spawn(checker.clone().run(self.backend_token.clone()));
                security = security.with_backend(checker);
            }
            config::AuthMode::None if cfg.backend.password.is_some() => tracing::warn!(
                "auth.mode = \"none\": clients need no password although the servers do; anyone who reaches the proxy can use the data"
            ),
            _ => {}
        }
        tracing::info!(mode = security.mode().as_str(), "client authentication");
        self.stats
            .auth()
            .set_mode(security.mode().as_str(), cfg.backend.password.is_some());
        Ok(security)
    }

    /// What every client session shares.
    pub(crate) fn client_context(
        &self,
        state: &TopologyState,
        clock: Arc<ReplicationClock>,
        security: client::acl::Security,
        durability: Option<client::Durability>,
        output_budget: Option<Arc<client::output_budget::OutputBudget>>,
        scripts: Arc<scripts::ScriptCache>,
    ) -> ProxyContext {
        let cfg = self.cfg;
        let shared = client::Shared {
            table: state.table.clone(),
            backends: state.backends.clone(),
            commands: state.commands.clone(),
            clock,
            output_budget,
            backend_password: cfg.backend.password.clone(),
            backend_username: cfg.backend.username.clone(),
            server_version: state.server_version.clone(),
            table_changes: state.generations.subscribe(),
            holds: self.stats.hold(),
            durability,
            pinned: Arc::new(Semaphore::new(cfg.backend.max_pinned_connections)),
            scripts,
            clients: Arc::new(client::registry::Clients::new(self.hard_stop.clone())),
        };
        ProxyContext::new(shared, client::Settings::from_config(cfg), security)
    }

    /// The client listeners and the stats page (which sends `switchovers` in Sentinel mode);
    /// returns their bound addresses (main, read-only, stats).
    pub(crate) fn spawn_listeners(
        &self,
        sockets: Sockets,
        shared: ListenerShared,
        channels: AdminChannels,
        shutdown: &CancellationToken,
    ) -> (SocketAddr, Option<SocketAddr>, Option<SocketAddr>) {
        let addr = local_addr(&sockets.main);
        let read_addr = sockets.read.as_ref().map(local_addr);
        let stats_addr = sockets.stats.as_ref().map(local_addr);
        let listeners = std::iter::once(("main", Endpoint::Main, sockets.main))
            .chain(sockets.read.map(|s| ("read", Endpoint::ReadOnly, s)));
        for (name, endpoint, socket) in listeners {
            let listener = Listener {
                stats: self.stats.listener(name, local_addr(&socket)),
                socket,
                endpoint,
                live: shared.live.clone(),
                cluster: shared.cluster.clone(),
                clients: shared.clients.clone(),
                workers: shared.workers.clone(),
                tls: shared.tls.clone(),
            };
            tracing::info!(listener = name, addr = %local_addr(&listener.socket), "listening");
            self.background.spawn(listener.serve(shutdown.clone()));
        }
        if let Some(socket) = sockets.stats {
            let admin = stats::Admin {
                token: self
                    .cfg
                    .admin_token
                    .as_ref()
                    .map(stats::admin::AdminToken::new),
                switchover: self.cfg.sentinel.is_some().then_some(channels.switchover),
                reload: channels.reload,
            };
            tracing::info!(addr = %local_addr(&socket), "stats page");
            self.background.spawn(stats::serve(
                socket,
                self.stats.clone(),
                stats::Lifecycle {
                    draining: shutdown.clone(),
                    stop: self.stats_stop.clone(),
                },
                admin,
            ));
        }
        (addr, read_addr, stats_addr)
    }
}

/// Every server's address now: the master first, then the replicas (cluster mode: the masters,
/// then the replicas).
fn server_list(
    table: &Arc<ArcSwap<RoutingTable>>,
    cluster: &Option<Arc<cluster::ClusterState>>,
) -> impl Fn() -> Vec<String> + Send + Sync + 'static {
    let table = table.clone();
    let cluster = cluster.clone();
    move || match &cluster {
        Some(c) => c.map().node_addrs(),
        None => {
            let t = table.load();
            t.master
                .iter()
                .chain(t.replicas.iter())
                .map(|b| b.addr().to_string())
                .collect()
        }
    }
}

/// `max_output_bytes_total`, resolved against the machine's memory when it is a share of it.
pub(crate) fn output_budget(cfg: &Config) -> Option<Arc<client::output_budget::OutputBudget>> {
    let memory = config::machine_memory();
    let limit = cfg.max_output_bytes_total.resolve(memory);
    if limit == 0 && matches!(cfg.max_output_bytes_total, config::MemoryLimit::Percent(_)) {
        tracing::warn!(
            "max_output_bytes_total: the machine's memory is unknown (no /proc/meminfo): no limit"
        );
    }
    tracing::info!(
        limit_bytes = limit,
        "max_output_bytes_total (replies waiting for all clients together)"
    );
    client::output_budget::OutputBudget::new(limit)
}

fn local_addr(s: &TcpListener) -> SocketAddr {
    s.local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
