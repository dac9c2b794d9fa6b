//! Health checks: each backend's `INFO replication`, polled on its own control connection.
//!
//! The checks feed three things: whether a replica may serve reads (reachable, linked, not
//! lagging), the role each server reports (static mode builds its table from it), and the
//! master's replication offset for read-your-writes.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::backend::control::info_field;
use crate::backend::{Backend, ControlConn, Credentials};
use crate::resp::Value;
use crate::router::{ReplicaLink, ReplicationClock, RoutingTable};
use crate::stats::Role;

/// What a health task shares with the topology.
#[derive(Clone)]
pub struct HealthContext {
    /// Time between checks.
    pub interval: Duration,
    /// Connect and reply deadline.
    pub timeout: Duration,
    /// Backend credentials.
    pub creds: Credentials,
    /// Replicas whose master link was last active longer ago are not read from.
    pub max_lag_secs: u64,
    /// The routing table the checks feed (Sentinel and static mode). `None` in cluster mode,
    /// where the slot map names the masters and read-your-writes sends a writer's reads to them:
    /// the checks then only decide which replicas serve reads.
    pub feeds: Option<HealthFeeds>,
}

/// What the health checks of Sentinel and static mode feed: the manager that builds the routing
/// table, and read-your-writes' clock with the master's offset.
#[derive(Clone)]
pub struct HealthFeeds {
    /// The current table, to know which backend is the master now.
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Fed with the master's offset.
    pub clock: Arc<ReplicationClock>,
    /// Told when a backend's role or reachability changes.
    pub changes: mpsc::UnboundedSender<String>,
}

/// One parsed `INFO replication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationInfo {
    /// `role:`.
    pub role: Role,
    /// `master_repl_offset` (master) or `slave_repl_offset` (replica).
    pub offset: u64,
    /// `master_link_status:up` (always true for a master).
    pub link_up: bool,
    /// How old the replica's data may be, in seconds: `master_last_io_seconds_ago` while the
    /// link is up, `master_link_down_since_seconds` while it is down (a failover drops every
    /// replica's link; its data is still as fresh as the moment the link went down). 0 for a
    /// master, `u64::MAX` for a replica that never synced or is in a full sync
    /// (`master_sync_in_progress:1`: its data is about to be flushed and the master's loaded,
    /// during which it answers `-LOADING`; seen as `-LOADING` replies to reads right after a
    /// failover, from the old master resyncing as a replica).
    pub last_io_secs: u64,
}

/// Parses the text of `INFO replication`.
pub fn parse_replication(info: &str) -> ReplicationInfo {
    let num = |k: &str| info_field(info, k).and_then(|v| v.parse::<i64>().ok());
    match info_field(info, "role") {
        Some("master") => ReplicationInfo {
            role: Role::Master,
            offset: num("master_repl_offset").unwrap_or(0).max(0) as u64,
            link_up: true,
            last_io_secs: 0,
        },
        Some("slave") => ReplicationInfo {
            role: Role::Replica,
            offset: num("slave_repl_offset").unwrap_or(0).max(0) as u64,
            link_up: info_field(info, "master_link_status") == Some("up"),
            // -1 while never connected: treat as very old.
            last_io_secs: match info_field(info, "master_link_status") {
                _ if num("master_sync_in_progress") == Some(1) => None,
                Some("up") => num("master_last_io_seconds_ago"),
                _ => num("master_link_down_since_seconds"),
            }
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(u64::MAX),
        },
        _ => ReplicationInfo {
            role: Role::Unknown,
            offset: 0,
            link_up: false,
            last_io_secs: u64::MAX,
        },
    }
}

/// The replicas connected to a master, as `ip:port`, from the `slaveN:ip=..,port=..` lines of
/// its `INFO replication` (what Sentinel itself discovers replicas from).
pub fn connected_replicas(info: &str) -> Vec<String> {
    replica_links(info).into_iter().map(|l| l.addr).collect()
}

/// The `slaveN:` lines of a master's `INFO replication`: each replica, whether it is `online`,
/// and its `lag` (seconds since its last acknowledgement).
pub fn replica_links(info: &str) -> Vec<ReplicaLink> {
    info.lines()
        .filter_map(|line| {
            let (key, fields) = line.split_once(':')?;
            let n = key.strip_prefix("slave")?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let field = |name: &str| {
                fields
                    .trim()
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            Some(ReplicaLink {
                addr: format!("{}:{}", field("ip")?, field("port")?),
                online: field("state") == Some("online"),
                lag: field("lag").and_then(|l| l.parse().ok()),
            })
        })
        .collect()
}

/// Checks `backend` every interval until the backend is released or retired.
pub async fn run_health(backend: Arc<Backend>, ctx: HealthContext) {
    let mut conn: Option<ControlConn> = None;
    let mut ticker = tokio::time::interval(ctx.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<(bool, Role)> = None;
    loop {
        tokio::select! {
            _ = backend.released().cancelled() => return,
            _ = ticker.tick() => {}
        }
        let seen = check_once(&backend, &ctx, &mut conn).await;
        let state = match seen {
            Some(info) => (true, info.role),
            None => (false, Role::Unknown),
        };
        if last != Some(state) {
            match state {
                (true, role) => tracing::info!(backend.addr = backend.addr(), ?role, "backend up"),
                (false, _) => tracing::warn!(backend.addr = backend.addr(), "backend down"),
            }
            backend.stats.set_up(state.0);
            backend.stats.set_role(state.1);
            last = Some(state);
            if let Some(feeds) = &ctx.feeds {
                let _ = feeds.changes.send(backend.addr().to_string());
            }
        }
    }
}

async fn check_once(
    backend: &Arc<Backend>,
    ctx: &HealthContext,
    conn: &mut Option<ControlConn>,
) -> Option<ReplicationInfo> {
    if conn.is_none() {
        match ControlConn::connect(backend.addr(), &ctx.creds, ctx.timeout).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::debug!(backend.addr = backend.addr(), error = %e, "health connect failed");
                backend.health().set_unreachable();
                return None;
            }
        }
    }
    let c = conn.as_mut()?;
    // Only the current master's offset feeds read-your-writes' clock.
    let of_master = ctx.feeds.as_ref().filter(|f| {
        let table = f.table.load();
        table
            .master
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(m, backend.server()))
    });
    let seq = of_master.map(|f| (f, f.clock.begin()));
    let text = match c.call(&["INFO", "replication"]).await {
        Ok(Value::Bulk(b)) => String::from_utf8_lossy(&b).into_owned(),
        // Busy running a script: alive, and what was seen before still holds.
        Ok(Value::Error(e)) if e.starts_with(b"BUSY") => {
            tracing::debug!(backend.addr = backend.addr(), "health check: server busy");
            let health = backend.health();
            return Some(ReplicationInfo {
                role: health.role(),
                offset: health.offset(),
                link_up: true,
                last_io_secs: 0,
            });
        }
        Ok(other) => {
            tracing::debug!(backend.addr = backend.addr(), reply = ?other, "health check refused");
            backend.health().set_unreachable();
            return None;
        }
        Err(e) => {
            tracing::debug!(backend.addr = backend.addr(), error = %e, "health check failed");
            *conn = None;
            backend.health().set_unreachable();
            return None;
        }
    };
    let info = parse_replication(&text);
    let lag_ok = info.last_io_secs <= ctx.max_lag_secs;
    backend.health().set_checked(info.role, info.offset, lag_ok);
    backend.stats.set_replication(info.offset, info.link_up);
    backend.health().set_replicas(match info.role {
        Role::Master => replica_links(&text),
        _ => Vec::new(),
    });
    if let (Some((feeds, seq)), Role::Master) = (seq, info.role) {
        feeds.clock.complete(seq, info.offset);
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_master_and_replica() {
        let m = parse_replication(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nmaster_repl_offset:1234\r\n",
        );
        assert_eq!(m.role, Role::Master);
        assert_eq!(m.offset, 1234);
        let r = parse_replication("role:slave\r\nmaster_host:127.0.0.1\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nslave_repl_offset:99\r\n");
        assert_eq!(r.role, Role::Replica);
        assert_eq!(r.offset, 99);
        assert!(!r.link_up);
        assert_eq!(r.last_io_secs, u64::MAX);
        assert_eq!(parse_replication("garbage").role, Role::Unknown);
        let lost = parse_replication("role:slave\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nmaster_link_down_since_seconds:3\r\n");
        assert_eq!(lost.last_io_secs, 3, "data as old as the link's loss");
        let syncing = parse_replication("role:slave\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nmaster_sync_in_progress:1\r\nmaster_link_down_since_seconds:0\r\n");
        assert_eq!(
            syncing.last_io_secs,
            u64::MAX,
            "a full sync is about to replace the data (and answer -LOADING)"
        );
    }

    #[test]
    fn a_masters_connected_replicas_are_read_from_its_slave_lines() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=10.0.0.2,port=6379,state=online,offset=14,lag=0\r\n\
            slave1:ip=10.0.0.3,port=6380,state=wait_bgsave,offset=0,lag=1\r\n\
            slave_read_repl_offset:1\r\nslavex:ip=1,port=2\r\nslave2:port=1\r\n\
            master_repl_offset:14\r\n";
        assert_eq!(connected_replicas(info), ["10.0.0.2:6379", "10.0.0.3:6380"]);
        assert!(connected_replicas("role:slave\r\nslave_repl_offset:9\r\n").is_empty());
    }
}
