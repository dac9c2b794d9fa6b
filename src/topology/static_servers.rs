//! Static mode: a fixed list of servers, their roles from health checks (PING + ROLE, as HAProxy's
//! `tcp-check` did).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::TopologyState;
use crate::stats::Role;

/// Keeps the table in line with what the health checks report.
pub async fn run_static(
    servers: Vec<String>,
    state: Arc<TopologyState>,
    mut changes: mpsc::UnboundedReceiver<String>,
) {
    // Register every server so that health checks start, with no master until one reports it.
    state.publish(None, &servers);
    loop {
        tokio::select! {
            _ = state.token.cancelled() => return,
            c = changes.recv() => if c.is_none() { return },
        }
        while changes.try_recv().is_ok() {}
        let table = state.table.load_full();
        let all: Vec<_> = table
            .master
            .iter()
            .chain(table.replicas.iter())
            .cloned()
            .collect();
        let masters: Vec<_> = all
            .iter()
            .filter(|b| b.health.reachable() && b.health.role() == Role::Master)
            .collect();
        if masters.len() > 1 {
            tracing::warn!(masters = ?masters.iter().map(|b| b.addr()).collect::<Vec<_>>(), "several servers report role:master; writing to the first listed");
        }
        // A master that stops answering its health checks stays the master until another server
        // reports role:master: it may only be busy (a long script), and replacing it would cut
        // the connections its requests are running on; requests to a dead one are held anyway
        // (their connections fail unsent).
        let silent_master = table
            .master
            .as_ref()
            .filter(|m| !m.health.reachable())
            .map(|m| m.addr().to_string());
        let master = servers
            .iter()
            .find(|s| masters.iter().any(|m| m.addr() == s.as_str()))
            .cloned()
            .or_else(|| silent_master.clone());
        let replicas: Vec<String> = servers
            .iter()
            .filter(|s| Some(*s) != master.as_ref())
            .cloned()
            .collect();
        let old = table.master.as_ref().map(|b| b.addr().to_string());
        if state.publish(master.as_deref(), &replicas) {
            if let (Some(new), Some(_), true) = (&master, &old, old != master) {
                state
                    .stats
                    .record_failover(old.as_deref(), new, "health check (role:master)");
            }
        }
        // The page and /healthz say "no master" while the master does not answer.
        let silent = silent_master.is_some() && silent_master == master;
        state
            .stats
            .set_master(if silent { None } else { master.as_deref() });
    }
}
