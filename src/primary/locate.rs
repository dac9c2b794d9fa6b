//! Where a subscribed client's subscriptions go in Sentinel and static mode.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backend::{Backend, BackendSet};
use crate::pubsub::Locate;
use crate::resp::{CommandTable, Request};
use crate::router::RoutingTable;

/// Sentinel and static mode: everything goes to the master, and nowhere while a failover is
/// fenced or the master's backend was let go.
pub struct MasterLocator {
    table: Arc<ArcSwap<RoutingTable>>,
    backends: Arc<BackendSet>,
}

impl MasterLocator {
    /// Over the proxy's routing table, whose servers `backends` resolves.
    pub fn new(table: Arc<ArcSwap<RoutingTable>>, backends: Arc<BackendSet>) -> MasterLocator {
        MasterLocator { table, backends }
    }

    fn master(&self) -> Option<Arc<Backend>> {
        let t = self.table.load();
        let master = t.master.as_ref().filter(|_| t.fence.is_none())?;
        self.backends.resolve(master)
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
