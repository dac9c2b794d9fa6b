//! Sentinel mode on the minority side of a partition: when fewer than a majority of the
//! configured sentinels have been heard from within `[failover] sentinel_loss_fence_ms`, the
//! master the proxy writes to may be the one a majority elsewhere is replacing, and whatever it
//! acknowledges then would be lost when the partition heals (Jepsen's "Call me maybe: Redis").
//! With `on_sentinel_loss = "fence-writes"` (the default) writes are held, as during a failover,
//! until a majority is heard again and names a master that answers `ROLE` as master; reads go
//! on. Views not heard from within the window stop counting either way, so writes are never
//! routed on the word of a minority.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::sentinel_link::SentinelView;
use super::TopologyState;
use crate::config::SentinelLoss;
use crate::router::Fence;

/// When each sentinel was last heard from, and whether writes are fenced for want of a majority.
#[derive(Debug)]
pub(super) struct LossFence {
    policy: SentinelLoss,
    window: Duration,
    heard: HashMap<String, Instant>,
    fenced: bool,
}

impl LossFence {
    pub(super) fn new(policy: SentinelLoss, window: Duration) -> Self {
        LossFence {
            policy,
            window,
            heard: HashMap::new(),
            fenced: false,
        }
    }

    /// How often each sentinel must be asked for its view so that a live one never goes
    /// unheard for the window: an eighth of it, or `reconcile` if that is shorter. An eighth,
    /// not a quarter: across a link that drops packets for a second, a sentinel goes unheard
    /// for the time since it last answered, plus the link's request timeout (1 s), plus the
    /// reconnect; with a quarter (500 ms of the default 2 s) that came within a few hundred
    /// ms of the window, and a busy host crossed it.
    pub(super) fn heartbeat(&self, reconcile: Duration) -> Duration {
        reconcile.min(self.window / 8)
    }

    /// `sentinel` answered.
    pub(super) fn heard(&mut self, sentinel: &str) {
        self.heard.insert(sentinel.to_owned(), Instant::now());
    }

    /// Drops the views of sentinels not heard from within the window, then fences writes off the
    /// master if fewer than a majority of the `total` configured sentinels were heard from within
    /// it (once, while there is a master to fence).
    ///
    /// A sentinel whose link just went down still counts until its last answer is older than
    /// the window (its view is gone from `views` at once, so it routes nothing meanwhile): a
    /// request that timed out across a link that drops packets for a second, as a flapping one
    /// does, would otherwise fence writes after the link's timeout (1 s) instead of the window.
    pub(super) fn check(
        &mut self,
        state: &TopologyState,
        views: &mut HashMap<String, SentinelView>,
        total: usize,
    ) {
        let window = self.window;
        let heard = &self.heard;
        let recent = |s: &str| heard.get(s).is_some_and(|t| t.elapsed() < window);
        views.retain(|s, _| recent(s));
        let recently_heard = heard.keys().filter(|s| recent(s)).count();
        if self.policy == SentinelLoss::Serve || self.fenced || recently_heard * 2 > total {
            return;
        }
        let table = state.table.load_full();
        let Some(master) = table.master.as_ref() else {
            return; // writes are held anyway
        };
        let cause = format!(
            "sentinel majority lost: {recently_heard} of {total} sentinels heard within {} ms",
            window.as_millis()
        );
        tracing::warn!(master = %master.addr(), %cause, "holding writes until a majority of the sentinels names the master again");
        if table.fence.is_none() {
            state.set_fence(Some(Fence {
                since: std::time::Instant::now(),
                cause,
            }));
        }
        self.fenced = true;
    }

    /// Whether writes are fenced for want of a majority.
    pub(super) fn fenced(&self) -> bool {
        self.fenced
    }

    /// A majority names the master again and it answers as master: the fence is lifted, unless
    /// a failover is under way (its own fence stays).
    pub(super) fn lift(&mut self, state: &TopologyState, failover_under_way: bool) {
        if !std::mem::take(&mut self.fenced) {
            return;
        }
        tracing::info!("a majority of the sentinels names the master again: releasing writes");
        if !failover_under_way {
            state.set_fence(None);
        }
    }

    /// The master changed (its table has no fence): nothing left to lift.
    pub(super) fn released(&mut self) {
        self.fenced = false;
    }
}
