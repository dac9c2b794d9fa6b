//! Topology: who is master and who are replicas, kept current in background tasks that build
//! a whole new [`RoutingTable`] on every change and swap it in.

pub mod failover;
pub mod followed;
pub mod health;
pub mod sentinel;
pub mod sentinel_link;
mod sentinel_loss;
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
use crate::router::{Fence, ReplicationClock, RoutingTable, Server};
use crate::stats::{Role, Stats};
pub use followed::{Followed, FollowedReceiver};
use health::{run_health, HealthContext, HealthFeeds};

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
            feeds: Some(HealthFeeds {
                table: table.clone(),
                clock,
                changes,
            }),
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
        let master_server = master.map(|a| self.server(a, Role::Master));
        let replica_servers = replicas
            .iter()
            .filter(|a| Some(a.as_str()) != master)
            .map(|a| self.server(a, Role::Replica))
            .collect();
        let table = RoutingTable {
            generation: current.generation + 1,
            master: master_server,
            replicas: replica_servers,
            // A fence stays until the master changes (or `set_fence(None)`).
            fence: if same_master {
                current.fence.clone()
            } else {
                None
            },
        };
        self.stats.set_master(master);
        tracing::info!(generation = table.generation, master = ?master, replicas = ?replicas, "routing table updated");
        self.store(table);
        if let Some(m) = master {
            self.fetch_commands_once(m);
        }
        true
    }

    /// Tells the stats and the backends which servers the topology names now, up or down
    /// (`addrs`: what the topology source lists); those no source has named for
    /// `stats_forget_after_secs` are forgotten and released (see
    /// [`crate::backend::follow_membership`]). Besides `addrs`, the servers the table routes to
    /// (the master above all) and the replicas the master reports connected are members: a
    /// snapshot that misses a live server for a moment (Sentinel lists no replica for seconds
    /// after `SENTINEL RESET`) does not release it.
    pub fn members(&self, addrs: &[&str]) {
        let table = self.table.load_full();
        let connected = table
            .master
            .as_ref()
            .map(|m| m.health.replicas())
            .unwrap_or_default();
        let mut members: Vec<&str> = addrs
            .iter()
            .copied()
            .chain(table.master.iter().chain(&table.replicas).map(|b| b.addr()))
            .chain(connected.iter().map(String::as_str))
            .collect();
        members.sort_unstable();
        members.dedup();
        crate::backend::follow_membership(&[&self.backends], &members);
    }

    /// Swaps `table` in and tells the sessions holding requests that it changed.
    fn store(&self, table: RoutingTable) {
        let generation = table.generation;
        self.stats
            .set_write_fence(table.fence.as_ref().map(|f| f.cause.clone()));
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

    /// The server at `addr` for the table, as `role` on the stats page: its backend is spawned,
    /// with a health task, if it is new.
    fn server(&self, addr: &str, role: Role) -> Arc<Server> {
        let (b, new) = self.backends.get_or_spawn(addr);
        if new {
            self.tracker
                .spawn(run_health(b.clone(), self.health.clone()));
        }
        b.stats.set_role(role);
        b.server().clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ConnSettings;
    use crate::config::BackendConfig;

    /// A topology whose backends leave at once when no source names them (grace period zero).
    fn state() -> TopologyState {
        let stats = Stats::forgetting_after("sentinel", Some("m"), Duration::ZERO);
        let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
        let backends = BackendSet::new(
            ConnSettings::from_config(&BackendConfig::default(), 1),
            stats.clone(),
            token.clone(),
            tracker.clone(),
        );
        TopologyState::new(
            Arc::new(backends),
            stats,
            Duration::from_secs(3600),
            10,
            Arc::new(ReplicationClock::default()),
            mpsc::unbounded_channel().0,
            tracker,
            token,
        )
    }

    fn known(state: &TopologyState) -> Vec<String> {
        let mut addrs: Vec<String> = state
            .backends
            .all()
            .iter()
            .map(|b| b.addr().to_string())
            .collect();
        addrs.sort();
        addrs
    }

    #[tokio::test]
    async fn only_servers_no_source_names_are_released_never_the_master_nor_a_connected_replica() {
        let (m, r1, r2) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
        let state = state();
        state.publish(Some(m), &[r1.to_string(), r2.to_string()]);
        // An empty snapshot (every sentinel just reset) releases nothing the table routes to.
        state.members(&[]);
        assert_eq!(known(&state), [m, r1, r2]);

        // Out of the table and of the snapshot, but the master reports it connected: kept.
        state.publish(Some(m), &[r1.to_string()]);
        let master = state.table.load().master.clone().expect("a master");
        master.health.set_replicas(vec![crate::router::ReplicaLink {
            addr: r2.to_string(),
            online: true,
            lag: Some(0),
        }]);
        state.members(&[]);
        assert_eq!(known(&state), [m, r1, r2]);

        // No source names it any more: released. A request in flight still holds it, and its
        // connections are not cut under it; its health checks stop.
        let (held, _) = state.backends.get_or_spawn(r2);
        master.health.set_replicas(Vec::new());
        state.members(&[m]);
        assert_eq!(known(&state), [m, r1]);
        assert!(held.released().is_cancelled() && !held.token().is_cancelled());
        assert!(state.stats.snapshot().backends.iter().all(|b| b.addr != r2));
        let master_backend = state
            .backends
            .resolve(&master)
            .expect("the master's backend");
        assert!(!master_backend.released().is_cancelled());
        // A table that still names it resolves it to nothing.
        assert!(state.backends.resolve(held.server()).is_none());

        // Named again, it starts afresh, as another server (in the slot the old one left): the
        // old name stays unresolved.
        let (again, new) = state.backends.get_or_spawn(r2);
        assert!(new && !Arc::ptr_eq(&held, &again));
        assert_eq!(again.server().index(), held.server().index());
        assert!(state.backends.resolve(held.server()).is_none());
        assert!(state.backends.resolve(again.server()).is_some());
        state.token.cancel();
    }
}
