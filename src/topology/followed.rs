//! What the mode's topology task follows, the part of the config a reload may change under it:
//! one value on one watch channel from the reloader (`crate::reload`) to whichever task runs.

use crate::config::Config;

/// The sentinels and the master group (Sentinel mode), the servers (static mode) or the seeds
/// (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// Sentinel mode: the sentinels to ask and the name they know the master group by.
    Sentinel {
        /// `[sentinel] addrs`.
        addrs: Vec<String>,
        /// `[sentinel] master_name`.
        master_name: String,
    },
    /// Static mode: `servers`.
    Static {
        /// The servers, each checked with PING + ROLE.
        servers: Vec<String>,
    },
    /// Cluster mode: `[cluster] seeds`.
    Cluster {
        /// The nodes the slot map is learnt from.
        seeds: Vec<String>,
    },
}

impl Followed {
    /// What `cfg` (a validated config: one mode) names.
    pub fn of(cfg: &Config) -> Followed {
        match (&cfg.sentinel, &cfg.cluster) {
            (Some(s), _) => Followed::Sentinel {
                addrs: s.addrs.clone(),
                master_name: s.master_name.clone(),
            },
            (None, Some(c)) => Followed::Cluster {
                seeds: c.seeds.clone(),
            },
            (None, None) => Followed::Static {
                servers: cfg.servers.clone(),
            },
        }
    }
}

/// The receiving end, one per proxy, handed to the mode's task.
pub type FollowedReceiver = tokio::sync::watch::Receiver<Followed>;
