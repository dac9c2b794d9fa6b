//! The refresher: one task that keeps the slot map current from `CLUSTER SLOTS`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::ClusterState;
use crate::backend::{ControlConn, Credentials};
use crate::config::ClusterConfig;
use crate::resp::{CommandTable, Value};
use crate::router::slotmap::SlotMap;
use crate::stats::{ClusterNodeSnapshot, ClusterView};
use crate::topology::{Followed, FollowedReceiver};

/// Shortest pause between two refreshes, so a burst of `MOVED` costs one `CLUSTER SLOTS`.
const MIN_GAP: Duration = Duration::from_millis(50);

/// What the refresher needs besides the state.
pub struct Refresher {
    /// Where the map is published.
    pub state: Arc<ClusterState>,
    /// Seeds and intervals.
    pub config: ClusterConfig,
    /// For the control connections.
    pub creds: Credentials,
    /// Connect and reply deadline.
    pub timeout: Duration,
    /// Filled from the first node's `COMMAND` (key positions and flags).
    pub commands: Arc<ArcSwap<CommandTable>>,
    /// The nodes' `redis_version`, for `HELLO`.
    pub server_version: Arc<ArcSwap<String>>,
    /// The seeds reloads name (`config.seeds` follows it).
    pub followed: FollowedReceiver,
}

impl Refresher {
    /// Refreshes until `token` is cancelled; at once when a reload names other seeds, which are
    /// asked from then on (after the map's own nodes, as the first ones were).
    pub async fn run(mut self, token: CancellationToken) {
        let interval = Duration::from_millis(self.config.refresh_interval_ms);
        let mut conn: Option<(String, ControlConn)> = None;
        let mut learned_commands = false;
        loop {
            match self.fetch(&mut conn).await {
                Some((source, slots)) => {
                    if !learned_commands {
                        if let Some((_, c)) = conn.as_mut() {
                            learned_commands = self.learn_commands(c).await;
                        }
                    }
                    let changed = slots != self.state.map().slots;
                    let view = changed.then(|| view(&slots, &source));
                    if changed {
                        let map = self.state.publish(slots);
                        tracing::info!(
                            generation = map.generation,
                            masters = map.masters().len(),
                            slots = map.slots.served(),
                            from = %source,
                            "cluster slot map updated"
                        );
                    }
                    self.state.stats.refreshed(view);
                    if let Some((_, c)) = conn.as_mut() {
                        self.report_members(c).await;
                    }
                }
                None => {
                    self.state.stats.refresh_failed();
                    tracing::warn!("no cluster node answered CLUSTER SLOTS");
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.state.refresh.notified() => {}
                _ = tokio::time::sleep(interval) => {}
                Ok(()) = self.followed.changed() => {
                    if let Followed::Cluster { seeds } = self.followed.borrow_and_update().clone() {
                        tracing::info!(?seeds, "reload: the cluster seeds changed");
                        self.config.seeds = seeds;
                    }
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(MIN_GAP) => {}
            }
        }
    }

    /// `CLUSTER SLOTS` from the first node that answers with a map: the one asked last time,
    /// then the map's masters, its replicas, then the seeds.
    async fn fetch(&self, conn: &mut Option<(String, ControlConn)>) -> Option<(String, SlotMap)> {
        if let Some((addr, c)) = conn.as_mut() {
            if let Some(map) = slots_of(c).await {
                return Some((addr.clone(), map));
            }
            *conn = None;
        }
        for addr in self.candidates() {
            let Ok(mut c) = ControlConn::connect(&addr, &self.creds, self.timeout).await else {
                continue;
            };
            if let Some(map) = slots_of(&mut c).await {
                *conn = Some((addr.clone(), c));
                return Some((addr, map));
            }
        }
        None
    }

    fn candidates(&self) -> Vec<String> {
        let mut out = self.state.map().node_addrs();
        out.extend(self.config.seeds.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(a.clone()));
        out
    }

    /// Tells the stats the cluster's nodes from `CLUSTER NODES`, which (unlike `CLUSTER SLOTS`)
    /// lists failed nodes too: a failed replica stays on the page, showing down, until the
    /// cluster forgets it. Nothing is reported when the node does not answer.
    async fn report_members(&self, conn: &mut ControlConn) {
        let Ok(Value::Bulk(nodes)) = conn.call(&["CLUSTER", "NODES"]).await else {
            return;
        };
        let mut addrs = node_addrs(&String::from_utf8_lossy(&nodes));
        addrs.extend(self.state.map().node_addrs());
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        self.state.members(&addrs);
    }

    /// Takes the nodes' command table and version once; false when it could not.
    async fn learn_commands(&self, conn: &mut ControlConn) -> bool {
        if let Ok(Value::Bulk(info)) = conn.call(&["INFO", "server"]).await {
            let info = String::from_utf8_lossy(&info);
            if let Some(v) = crate::backend::control::info_field(&info, "redis_version") {
                self.server_version.store(Arc::new(v.to_string()));
            }
        }
        match conn.call(&["COMMAND"]).await {
            Ok(reply) => match CommandTable::from_command_reply(&reply) {
                Ok(table) => {
                    self.commands.store(Arc::new(table));
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read COMMAND; using the built-in table");
                    true
                }
            },
            Err(_) => false,
        }
    }
}

/// Watches for slot migrations: every `interval`, each master's own `CLUSTER NODES` line (only
/// the nodes involved show a migration). Reads of a migrating slot then go to its master.
pub async fn watch_migrations(
    state: Arc<ClusterState>,
    creds: Credentials,
    timeout: Duration,
    interval: Duration,
    token: CancellationToken,
) {
    let mut conns: std::collections::HashMap<String, ControlConn> = Default::default();
    // Slots whose migration ended, kept on the masters until the slot map changes: until then
    // the map still names the old owner, whose replicas no longer have the keys.
    let mut ended: Vec<u16> = Vec::new();
    let mut ended_at_generation = 0;
    let mut previous: Vec<u16> = Vec::new();
    loop {
        let map = state.map();
        conns.retain(|addr, _| map.masters().iter().any(|m| m.addr() == addr));
        let mut migrating = Vec::new();
        for m in map.masters() {
            let addr = m.addr();
            if !conns.contains_key(addr) {
                match ControlConn::connect(addr, &creds, timeout).await {
                    Ok(c) => {
                        conns.insert(addr.to_string(), c);
                    }
                    Err(_) => continue,
                }
            }
            let Some(c) = conns.get_mut(addr) else {
                continue;
            };
            match c.call(&["CLUSTER", "NODES"]).await {
                Ok(Value::Bulk(nodes)) => {
                    migrating.extend(migrations(&String::from_utf8_lossy(&nodes)))
                }
                _ => {
                    conns.remove(addr);
                }
            }
        }
        if map.generation != ended_at_generation {
            ended.clear();
        }
        let done: Vec<u16> = previous
            .iter()
            .filter(|s| !migrating.contains(s))
            .copied()
            .collect();
        if !done.is_empty() {
            ended.extend(done);
            ended_at_generation = map.generation;
            state.request_refresh();
        }
        state.stats.set_migrating(migrating.len());
        previous.clone_from(&migrating);
        migrating.extend(&ended);
        state.set_migrating(&migrating);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// A node's `CLUSTER SLOTS`, if it serves at least one slot.
async fn slots_of(conn: &mut ControlConn) -> Option<SlotMap> {
    let reply = conn.call(&["CLUSTER", "SLOTS"]).await.ok()?;
    if let Value::Error(e) = &reply {
        // `-BUSY` (a script running), `-LOADING`: the node is there but answers no map now;
        // the next candidate is asked.
        tracing::debug!(reply = %String::from_utf8_lossy(e), "CLUSTER SLOTS refused");
        return None;
    }
    match SlotMap::from_cluster_slots(&reply) {
        Ok(map) if map.served() > 0 => Some(map),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "bad CLUSTER SLOTS reply");
            None
        }
    }
}

/// The slots in `[slot->-id]` (migrating) and `[slot-<-id]` (importing) entries of the
/// `myself` line of a `CLUSTER NODES` reply.
fn migrations(nodes: &str) -> Vec<u16> {
    let Some(me) = nodes
        .lines()
        .find(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("myself")))
    else {
        return Vec::new();
    };
    me.split(' ')
        .filter_map(|field| field.strip_prefix('['))
        .filter_map(|field| field.split(['-', '>', '<']).next())
        .filter_map(|slot| slot.parse::<u16>().ok())
        .collect()
}

/// The `ip:port` of every node of a `CLUSTER NODES` reply that has an address (a node still in
/// handshake, or one whose address is unknown, has none yet).
fn node_addrs(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            if flags.split(',').any(|f| f == "handshake" || f == "noaddr") {
                return None;
            }
            let (host, port) = addr.split(['@', ',']).next()?.rsplit_once(':')?;
            (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
                .then(|| format!("{host}:{port}"))
        })
        .collect()
}

/// The map as the stats page shows it.
fn view(slots: &SlotMap, source: &str) -> ClusterView {
    let mut nodes = Vec::new();
    let mut replicas = Vec::new();
    for (i, o) in slots.owner_sets().iter().enumerate() {
        let ranges = slots.ranges_of(i);
        let count: usize = ranges
            .iter()
            .map(|(a, b)| usize::from(*b) - usize::from(*a) + 1)
            .sum();
        let text = ranges
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        match nodes
            .iter_mut()
            .find(|n: &&mut ClusterNodeSnapshot| n.addr == o.master)
        {
            Some(n) => {
                n.slots += count;
                n.ranges = format!("{} {text}", n.ranges);
            }
            None => nodes.push(ClusterNodeSnapshot {
                addr: o.master.clone(),
                role: "master".into(),
                master: None,
                slots: count,
                ranges: text.clone(),
            }),
        }
        for r in &o.replicas {
            if !replicas.iter().any(|n: &ClusterNodeSnapshot| &n.addr == r) {
                replicas.push(ClusterNodeSnapshot {
                    addr: r.clone(),
                    role: "replica".into(),
                    master: Some(o.master.clone()),
                    slots: 0,
                    ranges: String::new(),
                });
            }
        }
    }
    nodes.sort_by(|a, b| a.addr.cmp(&b.addr));
    for r in &mut replicas {
        if let Some(m) = nodes.iter().find(|n| Some(&n.addr) == r.master.as_ref()) {
            r.slots = m.slots;
            r.ranges = m.ranges.clone();
        }
    }
    replicas.sort_by(|a, b| a.addr.cmp(&b.addr));
    nodes.extend(replicas);
    ClusterView {
        slots_served: slots.served(),
        nodes,
        source: Some(source.to_string()),
        changed_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_come_from_the_myself_line() {
        let nodes = "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460 [12182->-b9ca] [77-<-c28f]\n\
                     b9ca 127.0.0.1:7003@17003 master - 0 0 3 connected 10923-16383\n";
        assert_eq!(migrations(nodes), [12182, 77]);
        assert!(migrations("b 1:1@2 master - 0 0 3 connected 0-5\n").is_empty());
    }

    #[test]
    fn node_addrs_keep_failed_nodes_and_skip_those_without_an_address() {
        let nodes = "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460\n\
                     b2 127.0.0.1:7004@17004,node-4 slave,fail a1 0 0 1 connected\n\
                     c3 :0@0 slave,noaddr a1 0 0 1 disconnected\n\
                     d4 127.0.0.1:7009@17009 handshake - 0 0 0 disconnected\n";
        assert_eq!(node_addrs(nodes), ["127.0.0.1:7001", "127.0.0.1:7004"]);
    }
}
