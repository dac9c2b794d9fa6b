//! The stats page's cluster section: slot coverage, the slot map's refreshes, redirections and
//! retries, and the nodes of the map.

use super::{esc, fmt_when, num, opt_text, table, Cell};
use crate::router::slot::SLOTS;
use crate::stats::{ClusterSnapshot, ClusterView};

/// Ranges shown per node; a resharded cluster can leave a node hundreds of them (all are in
/// `/stats.json`).
const RANGES_SHOWN: usize = 8;

/// `16384 / 16384` in green, or in red with how many slots no master serves.
pub(super) fn coverage(served: usize) -> String {
    let all = usize::from(SLOTS);
    if served >= all {
        format!("<span class=\"ok\">{served} / {all}</span>")
    } else {
        format!(
            "<span class=\"bad\">{served} / {all} ({} not served)</span>",
            all - served
        )
    }
}

/// `3 masters, 3 replicas`.
pub(super) fn node_counts(view: &ClusterView) -> String {
    let masters = view.nodes.iter().filter(|n| n.role == "master").count();
    format!("{masters} masters, {} replicas", view.nodes.len() - masters)
}

/// The first [`RANGES_SHOWN`] ranges, then how many more there are.
fn short_ranges(ranges: &str) -> String {
    let all: Vec<&str> = ranges.split_whitespace().collect();
    if all.len() <= RANGES_SHOWN {
        return esc(ranges);
    }
    let shown = all.get(..RANGES_SHOWN).unwrap_or_default().join(" ");
    format!("{} ... (+{} more)", esc(&shown), all.len() - RANGES_SHOWN)
}

/// The cluster tables: the slot map's state, what the sessions went through, and the nodes.
pub(super) fn html_cluster(out: &mut String, c: &ClusterSnapshot, now_ms: u64) {
    let v = &c.view;
    let complete = v.slots_served >= usize::from(SLOTS);
    let map = vec![
        Cell::Text(coverage(v.slots_served)),
        Cell::Text(node_counts(v)),
        opt_text(v.source.as_deref()),
        Cell::Text(fmt_when(v.changed_ms, now_ms)),
        num(c.refreshes),
        num(c.refresh_failures),
        Cell::Text(fmt_when(c.last_refresh_ms, now_ms)),
    ];
    table(
        out,
        "Cluster",
        "Slots served|Nodes|Map from|Map changed|Refreshes|Refresh failures|Last refresh",
        vec![(if complete { "" } else { "down" }.to_owned(), map)],
    );
    let requests = vec![
        num(format!("{:.1}", c.redirections_per_sec)),
        num(c.moved),
        num(c.ask),
        num(c.retries),
        num(c.retries_exhausted),
        num(c.split_commands),
        num(c.migrating_slots),
    ];
    table(
        out,
        "Cluster redirections and retries",
        "Redirections/s|MOVED|ASK|Retries|Retries exhausted|Split commands|Slots migrating",
        vec![(String::new(), requests)],
    );
    let rows = v.nodes.iter().map(|n| {
        let cells = vec![
            Cell::Text(esc(&n.addr)),
            Cell::Text(format!("<span class=\"role\">{}</span>", esc(&n.role))),
            opt_text(n.master.as_deref()),
            num(n.slots),
            Cell::Text(short_ranges(&n.ranges)),
        ];
        (esc(&n.role), cells)
    });
    table(
        out,
        "Cluster nodes (masters, then replicas)",
        "Node|Role|Master|Slots|Ranges",
        rows.collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::render::render_html;
    use crate::stats::samples::cluster_sample;

    #[test]
    fn cluster_mode_shows_the_slot_map_and_counters() {
        let html = render_html(&cluster_sample());
        for needle in [
            "<h2>Cluster</h2>",
            "<h2>Cluster redirections and retries</h2>",
            "<th>Ranges</th>",
            "<span class=\"ok\">16384 / 16384</span>",
            "3 masters, 3 replicas",
            "<tr class=\"master\"><td class=\"l\">127.0.0.1:7001</td>",
            "<tr class=\"replica\"><td class=\"l\">127.0.0.1:7004</td>\
             <td class=\"l\"><span class=\"role\">replica</span></td>\
             <td class=\"l\">127.0.0.1:7001</td><td>5461</td><td class=\"l\">0-5460</td>",
            // Redirections/s, MOVED, ASK, retries, exhausted, split.
            "<td>1.5</td><td>2</td><td>1</td><td>3</td><td>1</td><td>4</td>",
            "<td>7</td><td>1</td>",
            " ago)",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
        assert!(html.contains("10964 10965 ... (+2 more)"), "ranges cut");
        assert!(html.contains("&lt;node&gt;"));
        assert!(!html.contains("<node>"));
    }

    #[test]
    fn cluster_mode_hides_what_only_sentinel_mode_has() {
        let html = render_html(&cluster_sample());
        for absent in [
            "current master",
            "master name",
            ">unknown</span>",
            "<h2>Sentinels</h2>",
            "Failover history",
            "Requests held",
        ] {
            assert!(!html.contains(absent), "cluster page shows {absent}");
        }
        // The backends table names each node's role from the slot map.
        assert!(html.contains("<h2>Backends</h2>"));
        assert!(html.contains("<span class=\"role\">master</span>"));
    }

    #[test]
    fn missing_slots_are_red() {
        let mut s = cluster_sample();
        if let Some(c) = s.cluster.as_mut() {
            c.view.slots_served = 16000;
        }
        let html = render_html(&s);
        let bad = "<span class=\"bad\">16000 / 16384 (384 not served)</span>";
        assert_eq!(html.matches(bad).count(), 2, "info row and cluster table");
        assert!(html.contains(&format!("<tr class=\"down\"><td class=\"l\">{bad}")));
    }

    #[test]
    fn a_cluster_without_a_map_yet_shows_none() {
        let stats = crate::stats::Stats::new("cluster", None);
        let html = render_html(&stats.snapshot());
        assert!(html.contains("0 / 16384 (16384 not served)"));
        assert!(html.contains("0 masters, 0 replicas"));
        // Listeners, commands, backends and cluster nodes are all empty.
        assert_eq!(html.matches(">none</td>").count(), 4);
    }

    #[test]
    fn short_ranges_keeps_the_first_eight() {
        assert_eq!(short_ranges("0-5460"), "0-5460");
        let many: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(
            short_ranges(&many.join(" ")),
            "0 1 2 3 4 5 6 7 ... (+2 more)"
        );
    }
}
