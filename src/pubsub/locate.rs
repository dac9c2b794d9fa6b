//! Where a subscribed client's subscriptions and commands go, in each mode.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backend::Backend;
use crate::cluster::ClusterState;
use crate::resp::{CommandTable, Request};
use crate::router::slot::key_slot;
use crate::router::RoutingTable;

/// The servers a subscribed client's links go to. `None` means "not now": a failover is under
/// way or no server is known; what is placed stays where it is.
pub trait Locate: Send + Sync {
    /// The server for channels and patterns. `current` is the server they are on (kept while it
    /// is fit, so a cluster's subscriptions do not wander); `avoid` failed a moment ago.
    fn classic(&self, current: Option<&str>, avoid: Option<&str>) -> Option<Arc<Backend>>;
    /// The server for shard channels of `slot`.
    fn shard(&self, slot: u16) -> Option<Arc<Backend>>;
    /// The server for a command a RESP3 client sends while subscribed.
    fn command(&self, commands: &CommandTable, req: &Request) -> Option<Arc<Backend>>;
    /// The server at `addr`, which a `-MOVED` or `-ASK` named; `None` outside cluster mode (the
    /// reply is then the answer).
    fn node(&self, _addr: &str) -> Option<Arc<Backend>> {
        None
    }
    /// Changes whenever the answers above may have changed.
    fn generation(&self) -> u64;
    /// A server was found unreachable, or moved a shard channel away.
    fn suspect(&self) {}
    /// Shard channels of one command must share a slot (Redis Cluster's `CROSSSLOT`).
    fn cluster(&self) -> bool;
    /// The servers `MONITOR` watches.
    fn monitored(&self) -> Vec<Arc<Backend>>;
}

/// Sentinel and static mode: everything goes to the master, and nowhere while a failover is
/// fenced.
pub struct MasterLocator {
    table: Arc<ArcSwap<RoutingTable>>,
}

impl MasterLocator {
    /// Over the proxy's routing table.
    pub fn new(table: Arc<ArcSwap<RoutingTable>>) -> MasterLocator {
        MasterLocator { table }
    }

    fn master(&self) -> Option<Arc<Backend>> {
        let t = self.table.load();
        t.fence.is_none().then(|| t.master.clone()).flatten()
    }
}

impl Locate for MasterLocator {
    fn classic(&self, _current: Option<&str>, _avoid: Option<&str>) -> Option<Arc<Backend>> {
        self.master()
    }
    fn shard(&self, _slot: u16) -> Option<Arc<Backend>> {
        self.master()
    }
    fn command(&self, _commands: &CommandTable, _req: &Request) -> Option<Arc<Backend>> {
        self.master()
    }
    fn generation(&self) -> u64 {
        self.table.load().generation
    }
    fn cluster(&self) -> bool {
        false
    }
    fn monitored(&self) -> Vec<Arc<Backend>> {
        self.master().into_iter().collect()
    }
}

/// Cluster mode: channels and patterns on one master (Redis Cluster sends every `PUBLISH` to
/// every node), shard channels on their slot's master.
pub struct ClusterLocator {
    state: Arc<ClusterState>,
}

impl ClusterLocator {
    /// Over the cluster's slot map.
    pub fn new(state: Arc<ClusterState>) -> ClusterLocator {
        ClusterLocator { state }
    }
}

impl Locate for ClusterLocator {
    fn classic(&self, current: Option<&str>, avoid: Option<&str>) -> Option<Arc<Backend>> {
        let map = self.state.map();
        let masters = map.masters();
        if let Some(m) = current.and_then(|c| masters.iter().find(|m| m.addr() == c)) {
            return Some(m.clone());
        }
        masters
            .iter()
            .find(|m| Some(m.addr()) != avoid)
            .or_else(|| masters.first())
            .cloned()
    }
    fn shard(&self, slot: u16) -> Option<Arc<Backend>> {
        self.state.map().owners(slot).map(|o| o.master.clone())
    }
    fn command(&self, commands: &CommandTable, req: &Request) -> Option<Arc<Backend>> {
        match commands.keys(req).first() {
            Some(key) => self.shard(key_slot(key)),
            None => self.classic(None, None),
        }
    }
    fn node(&self, addr: &str) -> Option<Arc<Backend>> {
        Some(self.state.master_backend(addr))
    }
    fn generation(&self) -> u64 {
        self.state.map().generation
    }
    fn suspect(&self) {
        self.state.request_refresh();
    }
    fn cluster(&self) -> bool {
        true
    }
    fn monitored(&self) -> Vec<Arc<Backend>> {
        self.state.map().masters().to_vec()
    }
}
