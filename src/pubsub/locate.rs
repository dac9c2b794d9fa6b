//! Where a subscribed client's subscriptions and commands go, in each mode.

use std::sync::Arc;

use crate::backend::Backend;
use crate::resp::{CommandTable, Request};

/// The servers a subscribed client's links go to. `None` means "not now": a failover is under
/// way or no server is known; what is placed stays where it is.
pub trait Locate: Send + Sync {
    /// The server for channels and patterns. `current` is the server they are on (kept while it
    /// is fit, so a cluster's subscriptions do not wander); `avoid` failed a moment ago.
    fn classic(&self, current: Option<&str>, avoid: Option<&str>) -> Option<Arc<Backend>>;
    /// The servers that each publish the keyspace notifications of their own keys, when a
    /// subscription to them must be on every one (cluster mode: every master); `None`: the
    /// server [`classic`](Self::classic) names publishes them all.
    fn event_sources(&self) -> Option<Vec<Arc<Backend>>> {
        None
    }
    /// The server for channel `name`, which is on `current` now, when it is not `classic`'s
    /// (cluster mode: the master of its slot, as a cluster client subscribes, so that a
    /// `PUBLISH` sent there counts the subscribers).
    fn channel(&self, _name: &[u8], _current: Option<&str>) -> Option<Arc<Backend>> {
        None
    }
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
