//! Topology: who is master and who are replicas, kept current in background tasks that build
//! a whole new [`RoutingTable`] on every change and swap it in.

pub mod failover;
pub mod health;
pub mod sentinel;
pub mod sentinel_link;
pub mod static_servers;
pub mod switchover;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{BackendSet, ControlConn};
use crate::resp::{CommandTable, Value};
use crate::router::{Fence, ReplicationClock, RoutingTable};
use crate::stats::{Role, Stats};
use health::{run_health, HealthContext};

/// Shared by the topology tasks: the table they publish and the backends behind it.
pub struct TopologyState {
    /// The published table.
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Every known backend.
    pub backends: Arc<BackendSet>,
    /// Command flags, replaced once fetched from a master.
    pub commands: Arc<ArcSwap<CommandTable>>,
    /// The master's `redis_version`, once fetched.
    pub server_version: Arc<ArcSwap<String>>,
    /// Stats registry.
    pub stats: Arc<Stats>,
    /// Health-check settings (and the channel that reports role/reachability changes).
    pub health: HealthContext,
    /// Background tasks.
    pub tracker: TaskTracker,
    /// Stops the topology tasks.
    pub token: CancellationToken,
    /// The generation of every table published (sessions holding requests watch it).
    pub generations: tokio::sync::watch::Sender<u64>,
    fetched_commands: std::sync::atomic::AtomicBool,
}

impl TopologyState {
    /// Bundles the shared pieces; `changes` receives health transitions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backends: Arc<BackendSet>,
        stats: Arc<Stats>,
        interval: Duration,
        max_lag_secs: u64,
        clock: Arc<ReplicationClock>,
        changes: mpsc::UnboundedSender<String>,
        tracker: TaskTracker,
        token: CancellationToken,
    ) -> TopologyState {
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::default()));
        let health = HealthContext {
            interval,
            timeout: backends.connect_timeout(),
            creds: backends.credentials().clone(),
            max_lag_secs,
            table: table.clone(),
            clock,
            changes,
        };
        TopologyState {
            table,
            backends,
            commands: Arc::new(ArcSwap::from_pointee(CommandTable::builtin())),
            server_version: Arc::new(ArcSwap::from_pointee("7.0.0".to_string())),
            stats,
            health,
            tracker,
            token,
            generations: tokio::sync::watch::Sender::new(0),
            fetched_commands: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Builds and publishes a table with this master and these replicas (addresses), starting
    /// connections and health checks for new servers. Returns true if the table changed.
    pub fn publish(&self, master: Option<&str>, replicas: &[String]) -> bool {
        let current = self.table.load();
        let same_master = current.master.as_ref().map(|b| b.addr()) == master;
        let same_replicas = current.replicas.len() == replicas.len()
            && current
                .replicas
                .iter()
                .zip(replicas)
                .all(|(b, a)| b.addr() == a);
        if same_master && same_replicas {
            return false;
        }
        if !same_master {
            // Whatever is still in flight to the old master gets "outcome unknown"; nothing sent
            // while it was the master lingers on a connection that later reaches it as a replica.
            if let Some(old) = &current.master {
                self.backends.reset(old.addr());
            }
        }
        let master_backend = master.map(|a| self.backend(a));
        let replica_backends = replicas
            .iter()
            .filter(|a| Some(a.as_str()) != master)
            .map(|a| self.backend(a))
            .collect();
        let table = RoutingTable {
            generation: current.generation + 1,
            master: master_backend,
            replicas: replica_backends,
            // A fence stays until the master changes (or `set_fence(None)`).
            fence: if same_master {
                current.fence.clone()
            } else {
                None
            },
        };
        if let Some(m) = &table.master {
            m.stats.set_role(Role::Master);
        }
        for r in &table.replicas {
            r.stats.set_role(Role::Replica);
        }
        self.stats.set_master(master);
        tracing::info!(generation = table.generation, master = ?master, replicas = ?replicas, "routing table updated");
        self.store(table);
        if let Some(m) = master {
            self.fetch_commands_once(m);
        }
        true
    }

    /// Tells the stats which servers the topology names now, up or down (see
    /// [`Stats::in_topology`]): the others are forgotten after `stats_forget_after_secs`.
    pub fn members(&self, addrs: &[&str]) {
        self.stats
            .in_topology(addrs, &self.backends.live_stats(addrs));
    }

    /// Swaps `table` in and tells the sessions holding requests that it changed.
    fn store(&self, table: RoutingTable) {
        let generation = table.generation;
        self.table.store(Arc::new(table));
        self.generations.send_replace(generation);
    }

    /// Fences writes off the current master (a failover is under way) or lifts the fence.
    pub fn set_fence(&self, fence: Option<Fence>) {
        let current = self.table.load_full();
        if current.fence.is_none() && fence.is_none() {
            return;
        }
        let table = RoutingTable {
            generation: current.generation + 1,
            master: current.master.clone(),
            replicas: current.replicas.clone(),
            fence,
        };
        tracing::info!(generation = table.generation, fence = ?table.fence.as_ref().map(|f| &f.cause), "write fence changed");
        self.store(table);
    }

    /// The backend for `addr`, with a health task if it is new.
    fn backend(&self, addr: &str) -> Arc<crate::backend::Backend> {
        let (b, new) = self.backends.get_or_spawn(addr);
        if new {
            self.tracker
                .spawn(run_health(b.clone(), self.health.clone()));
        }
        b
    }

    /// Replaces the built-in command table with the master's own `COMMAND` reply, once.
    fn fetch_commands_once(&self, master: &str) {
        use std::sync::atomic::Ordering;
        if self.fetched_commands.swap(true, Ordering::AcqRel) {
            return;
        }
        let addr = master.to_string();
        let creds = self.health.creds.clone();
        let timeout = self.health.timeout.max(Duration::from_secs(2));
        let commands = self.commands.clone();
        let version = self.server_version.clone();
        self.tracker.spawn(async move {
            let fetched = async {
                let mut c = ControlConn::connect(&addr, &creds, timeout).await.ok()?;
                if let Ok(Value::Bulk(info)) = c.call(&["INFO", "server"]).await {
                    let info = String::from_utf8_lossy(&info);
                    if let Some(v) = crate::backend::control::info_field(&info, "redis_version") {
                        version.store(Arc::new(v.to_string()));
                    }
                }
                match c.call(&["COMMAND"]).await.ok()? {
                    v @ Value::Array(_) => CommandTable::from_command_reply(&v).ok(),
                    _ => None,
                }
            }
            .await;
            match fetched {
                Some(t) => {
                    tracing::info!(commands = t.len(), "command table fetched from the master");
                    commands.store(Arc::new(t));
                }
                None => tracing::warn!(
                    "could not fetch COMMAND from the master; using the built-in table"
                ),
            }
        });
    }
}

/// Asks a server for its role (`ROLE`), to confirm a new master before routing writes to it.
pub async fn probe_role(addr: &str, state: &TopologyState) -> Option<Role> {
    let mut c = ControlConn::connect(addr, &state.health.creds, state.health.timeout)
        .await
        .ok()?;
    let reply = c.call(&["ROLE"]).await.ok()?;
    let first = reply.as_array()?.first()?.as_bytes()?.to_vec();
    Some(match first.as_slice() {
        b"master" => Role::Master,
        b"slave" => Role::Replica,
        _ => Role::Unknown,
    })
}
