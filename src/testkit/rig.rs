//! A proxy without listeners or background tasks: the shared context every session gets, built
//! from a [`Config`] the way `crate::start` builds it, over backends that reach scripted servers
//! ([`FakeRedis`]). The test publishes the topology itself: a routing table (Sentinel and static
//! mode) or a slot map (cluster mode), with the health of replicas set to serving; no health
//! check, Sentinel link or refresher runs, so the only traffic the servers see is the sessions'.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::TestClient;
use super::server::FakeRedis;
use super::start_session;
use crate::backend::{BackendSet, ConnSettings};
use crate::client::acl::Security;
use crate::client::{Durability, ProxyContext};
use crate::cluster::ClusterState;
use crate::config::Config;
use crate::resp::{CommandTable, Value};
use crate::router::slotmap::SlotMap;
use crate::router::{Endpoint, ReplicationClock, RoutingTable};
use crate::stats::{ListenerStats, Role, Stats};

/// Which kind of topology the sessions serve.
pub enum Mode {
    /// Sentinel or static mode: a master and replicas.
    Primary,
    /// Cluster mode, over this state.
    Cluster(Arc<ClusterState>),
}

/// Everything a session needs, and the levers a test moves.
pub struct Rig {
    /// The context shared by the rig's sessions.
    pub ctx: Arc<ProxyContext>,
    /// The listener counters the sessions count on.
    pub listener: Arc<ListenerStats>,
    /// Which topology.
    pub mode: Mode,
    /// Cancelled when the rig is dropped: sessions and backend connections end.
    pub shutdown: CancellationToken,
    backends: Arc<BackendSet>,
    generations: watch::Sender<u64>,
    backend_token: CancellationToken,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.backend_token.cancel();
    }
}

impl Rig {
    /// A Sentinel/static-mode rig with no master and no replica yet, configured by `cfg`.
    pub fn primary(cfg: &Config) -> Rig {
        Rig::build(cfg, "sentinel", |_, _| Mode::Primary)
    }

    /// A cluster-mode rig with an empty slot map, configured by `cfg`.
    pub fn cluster(cfg: &Config) -> Rig {
        Rig::build(cfg, "cluster", |settings, rig| {
            let set = |settings: ConnSettings| {
                BackendSet::new(
                    settings,
                    rig.stats.clone(),
                    rig.token.clone(),
                    TaskTracker::new(),
                )
            };
            let replicas = ConnSettings {
                readonly: true,
                ..settings.clone()
            };
            let c = cfg.cluster.clone().unwrap_or_default();
            let mut state = ClusterState::new(
                set(settings),
                set(replicas),
                rig.stats.cluster(),
                std::time::Duration::from_millis(c.retry_window_ms),
                // What a health check would find of a live replica.
                Box::new(|replica| replica.health().set_checked(Role::Replica, 0, true)),
            );
            state.tx_limits = crate::cluster::tx::TxLimits {
                max_commands: c.max_multi_commands,
                max_bytes: c.max_multi_bytes.bytes(),
            };
            Mode::Cluster(Arc::new(state))
        })
    }

    fn build(cfg: &Config, mode: &str, mode_of: impl FnOnce(ConnSettings, &Parts) -> Mode) -> Rig {
        let stats = Stats::new(mode, None);
        let backend_token = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let mut settings = ConnSettings::from_config(&cfg.backend, 1);
        settings.wait = Durability::from_config(&cfg.failover).map(|d| d.wait);
        let parts = Parts {
            stats: stats.clone(),
            token: backend_token.clone(),
        };
        let mode = mode_of(settings.clone(), &parts);
        let backends = Arc::new(BackendSet::new(
            settings,
            stats.clone(),
            backend_token.clone(),
            TaskTracker::new(),
        ));
        let generations = watch::Sender::new(0);
        let security = Security::from_config(&cfg.auth, &cfg.commands, &cfg.backend)
            .expect("a valid [auth] and [commands]")
            .with_counters(stats.auth());
        let shared = crate::client::Shared {
            table: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
            backends: backends.clone(),
            commands: Arc::new(ArcSwap::from_pointee(CommandTable::builtin())),
            clock: Arc::new(ReplicationClock::default()),
            output_budget: None,
            backend_password: cfg.backend.password.clone(),
            backend_username: cfg.backend.username.clone(),
            server_version: Arc::new(ArcSwap::from_pointee("7.2.0".to_string())),
            table_changes: generations.subscribe(),
            holds: stats.hold(),
            durability: Durability::from_config(&cfg.failover),
            pinned: Arc::new(Semaphore::new(cfg.backend.max_pinned_connections)),
            scripts: Arc::new(crate::scripts::ScriptCache::default()),
            clients: Arc::new(crate::client::registry::Clients::new(shutdown.clone())),
        };
        let settings = crate::client::Settings::from_config(cfg);
        let ctx = Arc::new(ProxyContext::new(shared, settings, security));
        let listener = stats.listener("main", std::net::SocketAddr::from(([127, 0, 0, 1], 6379)));
        Rig {
            ctx,
            listener,
            mode,
            shutdown,
            backends,
            generations,
            backend_token,
        }
    }

    /// A new client on the main endpoint.
    pub fn client(&self) -> TestClient {
        self.client_on(Endpoint::Main)
    }

    /// A new client on `endpoint`.
    pub fn client_on(&self, endpoint: Endpoint) -> TestClient {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        TestClient::new(start_session(self, endpoint, id))
    }

    /// Publishes a routing table naming `master` and `replicas` (Sentinel/static mode), each
    /// replica healthy, and tells the sessions it changed, as the topology does.
    pub fn publish(&self, master: Option<&FakeRedis>, replicas: &[&FakeRedis]) {
        let current = self.ctx.table.load_full();
        let server = |addr: &str| self.backends.get_or_spawn(addr).0.server().clone();
        let master = master.map(|m| server(m.addr()));
        let replicas = replicas
            .iter()
            .map(|r| {
                let server = server(r.addr());
                server.health.set_checked(Role::Replica, 0, true);
                server
            })
            .collect();
        let table = RoutingTable {
            generation: current.generation + 1,
            master,
            replicas,
            fence: None,
        };
        let generation = table.generation;
        self.ctx.table.store(Arc::new(table));
        self.generations.send_replace(generation);
    }

    /// Lets go of every backend but `keep`'s, as the topology does with servers that left it.
    pub fn retain_backends(&self, keep: &[&FakeRedis]) {
        let keep: Vec<&str> = keep.iter().map(|s| s.addr()).collect();
        self.backends.retain(&keep);
    }

    /// Publishes a slot map (cluster mode): each range `(first, last, master, replicas)`.
    pub fn publish_slots(&self, ranges: &[(u16, u16, &FakeRedis, &[&FakeRedis])]) {
        let Mode::Cluster(state) = &self.mode else {
            panic!("publish_slots needs a cluster rig");
        };
        let node = |n: &FakeRedis| {
            let (host, port) = n.addr().rsplit_once(':').expect("host:port");
            Value::Array(vec![
                Value::Bulk(Bytes::from(host.to_string())),
                Value::Int(port.parse().expect("a port")),
                Value::Bulk(Bytes::from(n.name().to_string())),
            ])
        };
        let reply = Value::Array(
            ranges
                .iter()
                .map(|(first, last, master, replicas)| {
                    let mut fields = vec![
                        Value::Int(i64::from(*first)),
                        Value::Int(i64::from(*last)),
                        node(master),
                    ];
                    fields.extend(replicas.iter().map(|r| node(r)));
                    Value::Array(fields)
                })
                .collect(),
        );
        let slots = SlotMap::from_cluster_slots(&reply).expect("a valid slot map");
        state.publish(slots);
    }
}

/// What a mode's constructor needs of the rig being built.
struct Parts {
    stats: Arc<Stats>,
    token: CancellationToken,
}
