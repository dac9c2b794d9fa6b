//! Where a subscribed client's subscriptions go in cluster mode.

use std::sync::Arc;

use super::ClusterState;
use crate::backend::Backend;
use crate::pubsub::Locate;
use crate::resp::{CommandTable, Request};
use crate::router::slot::key_slot;

/// Cluster mode: channels and shard channels on their slot's master (a channel stays where it
/// is while that node is a master: Redis Cluster sends every `PUBLISH` to every node), patterns
/// on one master, and those that can receive keyspace notifications on every master (each
/// publishes only its own keys' events).
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
    fn event_sources(&self) -> Option<Vec<Arc<Backend>>> {
        Some(self.state.map().masters().to_vec())
    }
    fn channel(&self, name: &[u8], current: Option<&str>) -> Option<Arc<Backend>> {
        let map = self.state.map();
        if let Some(m) = current.and_then(|c| map.masters().iter().find(|m| m.addr() == c)) {
            return Some(m.clone());
        }
        self.shard(key_slot(name))
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
