//! The cluster-mode families of `/metrics`: the slot map, and what became of requests.

use super::{float, Prom};
use crate::stats::ClusterSnapshot;

/// Cluster mode: the slot map and when it was fetched and changed.
pub(super) fn prom_cluster_map(p: &mut Prom, c: &ClusterSnapshot) {
    let v = &c.view;
    p.family(
        "cluster_slots_served",
        "gauge",
        "Hash slots some master serves (16384 when the cluster is complete).",
    );
    p.sample("cluster_slots_served", &[], v.slots_served);
    p.family("cluster_nodes", "gauge", "Nodes in the slot map, by role.");
    for role in ["master", "replica"] {
        let n = v.nodes.iter().filter(|n| n.role == role).count();
        p.sample("cluster_nodes", &[("role", role)], n);
    }
    if !v.nodes.is_empty() {
        p.family(
            "cluster_node_slots",
            "gauge",
            "Slots a node serves (a replica: its master's, so sum the masters only).",
        );
    }
    for n in &v.nodes {
        let labels = [("node", n.addr.as_str()), ("role", n.role.as_str())];
        p.sample("cluster_node_slots", &labels, n.slots);
    }
    let times = [
        (
            "cluster_last_refresh_timestamp_seconds",
            "Time of the last successful slot map refresh.",
            c.last_refresh_ms,
        ),
        (
            "cluster_slot_map_changed_timestamp_seconds",
            "Time the slot map last changed.",
            v.changed_ms,
        ),
    ];
    for (name, help, ms) in times {
        if let Some(ms) = ms {
            p.family(name, "gauge", help);
            p.sample(name, &[], float(ms as f64 / 1e3));
        }
    }
}

/// Cluster mode: the slot map's refreshes, and the redirections, retries and splits of requests.
pub(super) fn prom_cluster_requests(p: &mut Prom, c: &ClusterSnapshot) {
    p.family(
        "cluster_redirections_total",
        "counter",
        "MOVED and ASK replies the proxy followed.",
    );
    p.sample("cluster_redirections_total", &[("kind", "moved")], c.moved);
    p.sample("cluster_redirections_total", &[("kind", "ask")], c.ask);
    p.family(
        "cluster_redirections_per_second",
        "gauge",
        "MOVED and ASK replies per second.",
    );
    let rate = float(c.redirections_per_sec);
    p.sample("cluster_redirections_per_second", &[], rate);
    p.family(
        "cluster_migrating_slots",
        "gauge",
        "Slots being migrated (their reads go to the master).",
    );
    p.sample("cluster_migrating_slots", &[], c.migrating_slots);
    #[rustfmt::skip]
    let counters = [
        ("cluster_retries_total", "Requests sent again after TRYAGAIN, CLUSTERDOWN, LOADING, an unreachable node or a lost read.", c.retries),
        ("cluster_retries_exhausted_total", "Requests whose retry window ran out (the client got the error).", c.retries_exhausted),
        ("cluster_refreshes_total", "Slot maps fetched (CLUSTER SLOTS).", c.refreshes),
        ("cluster_refresh_failures_total", "Slot map refreshes that reached no node.", c.refresh_failures),
        ("cluster_split_commands_total", "Multi-key commands split over several slots.", c.split_commands),
    ];
    for (name, help, value) in counters {
        p.family(name, "counter", help);
        p.sample(name, &[], value);
    }
}
