//! `/metrics` against the exposition format, the docs and the snapshot samples.

use super::*;
use crate::stats::samples::{cluster_sample, sample};

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Splits `name{k="v",..} value`, checking label syntax; returns (name, value).
fn parse_sample(line: &str) -> (String, String) {
    // Drop quoted label values (honouring escapes) so what is left splits simply.
    let (mut bare, mut quoted, mut escaped) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if quoted => {}
            c => bare.push(c),
        }
    }
    assert!(!quoted, "unterminated label value in {line}");
    let (series, value) = bare.rsplit_once(' ').expect("name and value");
    let name = match series.split_once('{') {
        None => series,
        Some((name, labels)) => {
            for pair in labels.strip_suffix('}').expect("}").split(',') {
                let key = pair.strip_suffix('=').expect("key=\"value\"");
                assert!(valid_name(key) && !key.contains(':'), "{line}");
            }
            name
        }
    };
    (name.to_owned(), value.to_owned())
}

/// Checks every line of `text` (names, labels, values, one HELP and TYPE per family, counters
/// named `_total`); returns how many samples it has.
fn assert_valid_exposition(text: &str) -> usize {
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    let mut samples = 0;
    for line in text.lines() {
        assert!(!line.is_empty(), "blank line");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("name");
            assert!(helped.insert(name.to_owned()), "duplicate HELP {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("name and type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none());
            continue;
        }
        let (name, value) = parse_sample(line);
        assert!(valid_name(&name), "bad name {name}");
        assert!(name.starts_with("haproxy_rs_"), "{name}");
        assert!(value == "NaN" || value.parse::<f64>().is_ok(), "{line}");
        let histogram = |f: &&str| typed.get(*f).is_some_and(|k| k == "histogram");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(histogram))
            .unwrap_or(&name);
        let kind = typed
            .get(family)
            .unwrap_or_else(|| panic!("no TYPE for {name}"));
        assert!(helped.contains(family), "no HELP for {name}");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name}");
        }
        samples += 1;
    }
    samples
}

#[test]
fn prometheus_output_is_valid_exposition_format() {
    let text = render_prometheus(&sample());
    assert!(assert_valid_exposition(&text) > 20);
    assert!(text.contains("haproxy_rs_master_known 1\n"));
    let build = format!(
        "haproxy_rs_build_info{{version=\"{}\",profile=\"{}\",os=\"{}\",arch=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    assert!(text.contains(&build), "{text}");
    assert!(
        !text.contains("haproxy_rs_cluster_"),
        "no cluster series outside cluster mode"
    );
    assert!(text.contains("haproxy_rs_backend_up{backend=\"127.0.0.1:6391\"} 1\n"));
    assert!(text.contains("backend=\"bad\\\"host\\\\\\n:1\""));
    assert!(!text.contains("quantile="), "histograms, not summaries");
    assert!(text.contains("haproxy_rs_backend_replication_offset{backend=\"127.0.0.1:6392\"} 4242"));
}

#[test]
fn the_role_is_a_gauge_of_its_own_and_no_label_of_the_other_backend_series() {
    let text = render_prometheus(&sample());
    for line in [
        "haproxy_rs_backend_role{backend=\"127.0.0.1:6391\",role=\"master\"} 1",
        "haproxy_rs_backend_role{backend=\"127.0.0.1:6391\",role=\"replica\"} 0",
        "haproxy_rs_backend_role{backend=\"127.0.0.1:6391\",role=\"unknown\"} 0",
        "haproxy_rs_backend_role{backend=\"127.0.0.1:6392\",role=\"replica\"} 1",
        "haproxy_rs_backend_role{backend=\"127.0.0.1:6392\",role=\"master\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
    let with_role = text
        .lines()
        .filter(|l| l.starts_with("haproxy_rs_backend_") && l.contains("role="))
        .find(|l| !l.starts_with("haproxy_rs_backend_role{"));
    assert_eq!(with_role, None, "role is a label of backend_role only");
}

#[test]
fn latency_is_a_histogram_per_listener_and_per_backend() {
    let text = render_prometheus(&sample());
    assert!(text.contains("# TYPE haproxy_rs_listener_latency_seconds histogram\n"));
    assert!(text.contains("# TYPE haproxy_rs_backend_latency_seconds histogram\n"));
    // The sample's master answered one command in 250 us.
    let master = "backend=\"127.0.0.1:6391\"";
    for (le, n) in [
        ("0.00005", 0),
        ("0.0001", 0),
        ("0.00025", 1),
        ("10", 1),
        ("+Inf", 1),
    ] {
        let line = format!("haproxy_rs_backend_latency_seconds_bucket{{{master},le=\"{le}\"}} {n}");
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    for line in [
        format!("haproxy_rs_backend_latency_seconds_sum{{{master}}} 0.00025"),
        format!("haproxy_rs_backend_latency_seconds_count{{{master}}} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
    let buckets = text
        .lines()
        .filter(|l| l.starts_with("haproxy_rs_listener_latency_seconds_bucket{"))
        .count();
    assert_eq!(
        buckets,
        EXPORTED_BOUNDS_US.len() + 1,
        "one listener's buckets"
    );
}

#[test]
fn prometheus_has_the_cluster_series_in_cluster_mode() {
    let text = render_prometheus(&cluster_sample());
    assert_valid_exposition(&text);
    for line in [
        "haproxy_rs_topology_info{mode=\"cluster\",master_name=\"\"} 1",
        "haproxy_rs_master_known 1",
        "haproxy_rs_cluster_slots_served 16384",
        "haproxy_rs_cluster_nodes{role=\"master\"} 3",
        "haproxy_rs_cluster_nodes{role=\"replica\"} 3",
        "haproxy_rs_cluster_node_slots{node=\"127.0.0.1:7002\",role=\"master\"} 5462",
        "haproxy_rs_cluster_node_slots{node=\"<node>:7006\",role=\"replica\"} 5461",
        "haproxy_rs_cluster_redirections_total{kind=\"moved\"} 2",
        "haproxy_rs_cluster_redirections_total{kind=\"ask\"} 1",
        "haproxy_rs_cluster_redirections_per_second 1.5",
        "haproxy_rs_cluster_retries_total 3",
        "haproxy_rs_cluster_retries_exhausted_total 1",
        "haproxy_rs_cluster_refreshes_total 7",
        "haproxy_rs_cluster_refresh_failures_total 1",
        "haproxy_rs_cluster_split_commands_total 4",
        "haproxy_rs_backend_up{backend=\"127.0.0.1:7004\"} 0",
        "haproxy_rs_backend_role{backend=\"127.0.0.1:7004\",role=\"replica\"} 1",
        "haproxy_rs_backend_role{backend=\"127.0.0.1:7004\",role=\"master\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
    assert!(text.contains("haproxy_rs_cluster_last_refresh_timestamp_seconds "));
    assert!(text.contains("haproxy_rs_cluster_slot_map_changed_timestamp_seconds "));
}

/// `docs/metrics.md`'s tables: name -> (type, label names).
fn documented() -> std::collections::BTreeMap<String, (String, Vec<String>)> {
    let doc = include_str!("../../../docs/metrics.md");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    doc.lines()
        .filter(|l| l.starts_with("| `haproxy_rs_"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let name = ticked(cells[0]).remove(0);
            (name, (cells[1].trim().to_owned(), ticked(cells[2])))
        })
        .collect()
}

#[test]
fn every_family_is_documented_with_its_type_and_labels_and_nothing_else_is() {
    let docs = documented();
    let mut exported = std::collections::BTreeSet::new();
    for text in [
        render_prometheus(&sample()),
        render_prometheus(&cluster_sample()),
    ] {
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("name and type");
                let (doc_kind, _) = docs
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} is not in docs/metrics.md"));
                assert_eq!(doc_kind, kind, "{name}'s type in docs/metrics.md");
                exported.insert(name.to_owned());
                family = name.to_owned();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let labels = line
                .split_once('{')
                .map(|(_, rest)| rest.rsplit_once('}').expect("}").0)
                .unwrap_or("");
            let (_, doc_labels) = &docs[&family];
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let key = pair.split('=').next().expect("key");
                assert!(
                    doc_labels.iter().any(|l| l == key),
                    "{family}: label {key} is not in docs/metrics.md ({line})"
                );
            }
        }
    }
    let stale: Vec<&String> = docs.keys().filter(|n| !exported.contains(*n)).collect();
    assert!(stale.is_empty(), "documented but not exported: {stale:?}");
}
