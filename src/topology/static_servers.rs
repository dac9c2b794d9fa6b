//! Static mode: a list of servers (a reload may change it), their roles from health checks
//! (PING + ROLE, as HAProxy's `tcp-check` did).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Followed, FollowedReceiver, TopologyState};
use crate::stats::Role;

/// Keeps the table in line with what the health checks report, and with the servers reloads
/// name: new ones are checked at once, removed ones leave the table at once, and the stats and
/// their checks and connections `stats_forget_after_secs` later (as a server that leaves a
/// Sentinel topology does).
pub async fn run_static(
    mut servers: Vec<String>,
    state: Arc<TopologyState>,
    mut changes: mpsc::UnboundedReceiver<String>,
    mut followed: FollowedReceiver,
) {
    // Register every server so that health checks start, with no master until one reports it.
    state.publish(None, &servers);
    // Servers a reload removed are let go only when asked again after the grace.
    let mut membership = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = state.token.cancelled() => return,
            c = changes.recv() => if c.is_none() { return },
            Ok(()) = followed.changed() => {
                if let Followed::Static { servers: new } = followed.borrow_and_update().clone() {
                    if new != servers {
                        tracing::info!(servers = ?new, "reload: the servers changed");
                        servers = new;
                        follow(&state, &servers);
                    }
                }
            }
            _ = membership.tick() => {}
        }
        let members: Vec<&str> = servers.iter().map(String::as_str).collect();
        crate::backend::follow_membership(&[&state.backends], &members);
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
            .filter(|m| !m.health.reachable() && servers.iter().any(|s| s == m.addr()))
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

/// A table of exactly `servers`: the master stays if it is still listed, the others (new ones
/// included, so that their checks start) as replicas until their checks report.
fn follow(state: &TopologyState, servers: &[String]) {
    let table = state.table.load_full();
    let master = table
        .master
        .as_ref()
        .map(|m| m.addr())
        .filter(|m| servers.iter().any(|s| s == m));
    let replicas: Vec<String> = servers
        .iter()
        .filter(|s| Some(s.as_str()) != master)
        .cloned()
        .collect();
    state.publish(master, &replicas);
}
