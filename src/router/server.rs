//! The servers the routing table deals with: the role each one reports.

use serde::Serialize;

/// What a server is, as last learned from Sentinel, `ROLE` or `INFO replication`.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not known yet.
    Unknown,
    /// Accepts writes.
    Master,
    /// Replicates from the master.
    Replica,
}

impl Role {
    /// From [`to_u8`](Self::to_u8) (kept in an atomic).
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => Role::Master,
            2 => Role::Replica,
            _ => Role::Unknown,
        }
    }

    /// For an atomic.
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Role::Unknown => 0,
            Role::Master => 1,
            Role::Replica => 2,
        }
    }

    /// Lowercase name, as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}
