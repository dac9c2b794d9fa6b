//! The Prometheus text exposition of a [`Snapshot`] (`/metrics`).

use std::fmt::{Display, Write};

use super::{
    AuthSnapshot, BackendSnapshot, BackendState, ClusterSnapshot, HoldSnapshot, LatencySnapshot,
    ListenerSnapshot, Role, SentinelSnapshot, Snapshot, EXPORTED_BOUNDS_US,
};

/// Writes Prometheus text exposition (format 0.0.4) one family at a time.
struct Prom {
    out: String,
}

/// Escapes a label value: backslash, double quote and newline.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: Prometheus spells non-finite floats `NaN`, `+Inf`, `-Inf`.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP haproxy_rs_{name} {help}");
        let _ = writeln!(self.out, "# TYPE haproxy_rs_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        let _ = write!(self.out, "haproxy_rs_{name}");
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// Writes each family that has at least one sample, one sample per item.
    fn families<T>(&mut self, items: &[T], labels: Labels<T>, families: &[Family<T>]) {
        for &(name, kind, help, value) in families {
            let mut header = false;
            for item in items {
                let Some(v) = value(item) else { continue };
                if !header {
                    self.family(name, kind, help);
                    header = true;
                }
                let owned = labels(item);
                let pairs: Vec<(&str, &str)> =
                    owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.sample(name, &pairs, float(v));
            }
        }
    }
}

/// Name (after `haproxy_rs_`), type, help, and the value for one item (`None`: no sample).
type Family<T> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&T) -> Option<f64>,
);
/// Labels of one item's samples.
type Labels<T> = fn(&T) -> Vec<(&'static str, String)>;

/// The process-wide families: version, uptime, topology, failovers, held requests, auth.
fn prom_process(p: &mut Prom, s: &Snapshot) {
    let topology = [
        ("mode", s.mode.as_str()),
        ("master_name", s.master_name.as_deref().unwrap_or("")),
    ];
    p.family(
        "build_info",
        "gauge",
        "The proxy's build: version, profile, target OS and architecture; always 1.",
    );
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let build = [
        ("version", s.version.as_str()),
        ("profile", profile),
        ("os", std::env::consts::OS),
        ("arch", std::env::consts::ARCH),
    ];
    p.sample("build_info", &build, 1);
    p.family("uptime_seconds", "gauge", "Seconds since start.");
    p.sample("uptime_seconds", &[], s.uptime_secs);
    p.family("topology_info", "gauge", "Topology mode, always 1.");
    p.sample("topology_info", &topology, 1);
    p.family(
        "master_known",
        "gauge",
        "1 while a master is known (cluster mode: while every slot is served).",
    );
    p.sample("master_known", &[], u8::from(s.healthy()));
    p.family("failovers_total", "counter", "Master changes seen.");
    p.sample("failovers_total", &[], s.failovers_total);
    let last = s.failovers.first();
    p.family(
        "last_failover_timestamp_seconds",
        "gauge",
        "When the last master change was seen (unix time; 0: none yet).",
    );
    p.sample(
        "last_failover_timestamp_seconds",
        &[],
        float(last.map_or(0.0, |f| f.at_ms as f64 / 1000.0)),
    );
    p.family(
        "last_failover_writes_held_seconds",
        "gauge",
        "How long writes were held in the last master change (0: none yet, or writes were not held).",
    );
    p.sample(
        "last_failover_writes_held_seconds",
        &[],
        float(
            last.and_then(|f| f.writes_held_ms)
                .map_or(0.0, |ms| ms as f64 / 1000.0),
        ),
    );
    p.family(
        "writes_fenced",
        "gauge",
        "1 while writes are held off the master (a failover, or a majority of the sentinels not heard).",
    );
    p.sample("writes_fenced", &[], u8::from(s.writes_fenced.is_some()));
    prom_holds(p, &s.hold);
    prom_auth(p, &s.auth);
    prom_reloads(p, &s.reloads);
    p.family(
        "tasks",
        "gauge",
        "Tasks alive: client sessions, and the rest (background).",
    );
    p.sample("tasks", &[("kind", "sessions")], s.tasks.sessions);
    p.sample("tasks", &[("kind", "background")], s.tasks.background);
}

/// Configuration reloads, named as Prometheus names its own.
fn prom_reloads(p: &mut Prom, r: &super::ReloadSnapshot) {
    p.family(
        "config_reloads_total",
        "counter",
        "Configuration reloads, by outcome.",
    );
    p.sample(
        "config_reloads_total",
        &[("outcome", "applied")],
        r.applied_total,
    );
    p.sample(
        "config_reloads_total",
        &[("outcome", "refused")],
        r.refused_total,
    );
    p.family(
        "config_last_reload_successful",
        "gauge",
        "0 when the last reload was refused (the running config stays), else 1.",
    );
    let refused = r.last.as_ref().is_some_and(|l| l.error.is_some());
    p.sample("config_last_reload_successful", &[], u8::from(!refused));
    p.family(
        "config_last_reload_timestamp_seconds",
        "gauge",
        "When the last reload happened (unix time; 0: none yet).",
    );
    let at = r.last.as_ref().map_or(0.0, |l| l.at_ms as f64 / 1000.0);
    p.sample("config_last_reload_timestamp_seconds", &[], float(at));
    p.family(
        "config_restart_pending",
        "gauge",
        "1 when the last reload left settings that take effect only at a restart.",
    );
    let pending = r.last.as_ref().is_some_and(|l| !l.needs_restart.is_empty());
    p.sample("config_restart_pending", &[], u8::from(pending));
}

/// The requests held while there is no master.
fn prom_holds(p: &mut Prom, h: &HoldSnapshot) {
    p.family(
        "held_requests",
        "gauge",
        "Requests waiting for a master now.",
    );
    p.sample("held_requests", &[], h.held_now);
    p.family(
        "held_bytes",
        "gauge",
        "Bytes of the requests waiting for a master now.",
    );
    p.sample("held_bytes", &[], h.held_bytes);
    p.family(
        "held_requests_total",
        "counter",
        "Requests held for a master, by outcome.",
    );
    for (outcome, n) in [
        ("held", h.held_total),
        ("released", h.released_total),
        ("expired", h.expired_total),
        ("refused", h.refused_total),
    ] {
        p.sample("held_requests_total", &[("outcome", outcome)], n);
    }
}

/// Client authentication: the mode, refusals, and the backend mode's logins.
fn prom_auth(p: &mut Prom, a: &AuthSnapshot) {
    p.family(
        "auth_info",
        "gauge",
        "Client authentication mode (backend, proxy, none), always 1.",
    );
    p.sample("auth_info", &[("mode", &a.mode)], 1);
    p.family(
        "auth_open",
        "gauge",
        "1 when clients need no password although the servers do.",
    );
    p.sample("auth_open", &[], u8::from(a.open));
    p.family(
        "acl_access_denied_total",
        "counter",
        "Refusals, as Redis's acl_access_denied_*: failed logins, commands, keys, channels.",
    );
    for (reason, n) in [
        ("auth", a.denied_auth),
        ("cmd", a.denied_cmd),
        ("key", a.denied_key),
        ("channel", a.denied_channel),
    ] {
        p.sample("acl_access_denied_total", &[("reason", reason)], n);
    }
    p.family(
        "auth_logins_total",
        "counter",
        "Backend mode: logins the servers were asked about, and logins the cache answered.",
    );
    p.sample(
        "auth_logins_total",
        &[("checked_by", "server")],
        a.server_checks,
    );
    p.sample(
        "auth_logins_total",
        &[("checked_by", "cache")],
        a.cache_hits,
    );
}

fn bool_f(b: bool) -> f64 {
    f64::from(u8::from(b))
}

// One line per family reads as a table; rustfmt would spread each over six lines.
#[rustfmt::skip]
const LISTENER_FAMILIES: &[Family<ListenerSnapshot>] = &[
    ("listener_connections", "gauge", "Open client connections.", |l| Some(l.current_connections as f64)),
    ("listener_connections_total", "counter", "Accepted client connections.", |l| Some(l.total_connections as f64)),
    ("listener_commands_total", "counter", "Commands received.", |l| Some(l.commands as f64)),
    ("listener_errors_total", "counter", "Commands answered with an error (haproxy_rs_errors_total has them by reason).", |l| Some(l.errors as f64)),
    ("listener_output_buffer_limit_disconnections_total", "counter", "Clients disconnected for not reading their replies.", |l| Some(l.output_buffer_limit_disconnections as f64)),
    ("listener_query_buffer_limit_disconnections_total", "counter", "Clients closed for input past client_query_buffer_limit.", |l| Some(l.query_buffer_limit_disconnections as f64)),
    ("listener_output_total_limit_disconnections_total", "counter", "Clients disconnected, largest output first, for max_output_bytes_total.", |l| Some(l.output_total_limit_disconnections as f64)),
    ("listener_transactions_too_large_total", "counter", "Cluster-mode transactions aborted for max_multi_commands or max_multi_bytes.", |l| Some(l.transactions_too_large as f64)),
    ("listener_idle_timeouts_total", "counter", "Idle clients closed (client_timeout_secs).", |l| Some(l.idle_timeouts as f64)),
    ("listener_rejected_connections_total", "counter", "Clients refused because max_clients were connected.", |l| Some(l.rejected_connections as f64)),
    ("listener_pubsub_clients", "gauge", "Clients subscribed (Pub/Sub).", |l| Some(l.pubsub_clients as f64)),
    ("listener_ops_per_second", "gauge", "Commands per second.", |l| Some(l.ops_per_sec)),
];

#[rustfmt::skip]
const BACKEND_FAMILIES: &[Family<BackendSnapshot>] = &[
    ("backend_up", "gauge", "1 if the backend is UP.", |b| Some(bool_f(b.state == BackendState::Up))),
    ("backend_connections", "gauge", "Open backend connections.", |b| Some(b.current_connections as f64)),
    ("backend_connections_total", "counter", "Opened backend connections.", |b| Some(b.total_connections as f64)),
    ("backend_commands_total", "counter", "Commands completed.", |b| Some(b.ops as f64)),
    ("backend_errors_total", "counter", "Commands that failed.", |b| Some(b.errors as f64)),
    ("backend_ops_per_second", "gauge", "Commands per second.", |b| Some(b.ops_per_sec)),
    ("backend_last_change_timestamp_seconds", "gauge", "Time of the last UP/DOWN change.",
        |b| b.last_change_ms.map(|ms| ms as f64 / 1e3)),
    ("backend_replication_offset", "gauge", "Replication offset.", |b| b.replication_offset.map(|o| o as f64)),
    ("backend_replication_link_up", "gauge", "1 if the replication link is up.", |b| b.replication_link_up.map(bool_f)),
];

#[rustfmt::skip]
const SENTINEL_FAMILIES: &[Family<SentinelSnapshot>] = &[
    ("sentinel_connected", "gauge", "1 while the sentinel link is up.", |x| Some(bool_f(x.connected))),
    ("sentinel_events_total", "counter", "Events received.", |x| Some(x.events as f64)),
];

fn listener_labels(l: &ListenerSnapshot) -> Vec<(&'static str, String)> {
    vec![("listener", l.name.clone()), ("addr", l.addr.clone())]
}

fn sentinel_labels(x: &SentinelSnapshot) -> Vec<(&'static str, String)> {
    vec![("sentinel", x.addr.clone())]
}

/// A backend's series are named by its address alone: a failover changes its role, not its
/// identity (the role is `haproxy_rs_backend_role`).
fn backend_labels(b: &BackendSnapshot) -> Vec<(&'static str, String)> {
    vec![("backend", b.addr.clone())]
}

/// Each backend's role as an info-style gauge: one series per role, 1 for the one it has now
/// (`haproxy_rs_backend_role{role="master"} == 1` is the master), so joins and alerts see a
/// failover as two gauges flipping.
fn prom_roles(p: &mut Prom, bs: &[BackendSnapshot]) {
    if bs.is_empty() {
        return;
    }
    p.family(
        "backend_role",
        "gauge",
        "1 for the backend's current role (master, replica, unknown), 0 for the others.",
    );
    for b in bs {
        for role in [Role::Master, Role::Replica, Role::Unknown] {
            let labels = [("backend", b.addr.as_str()), ("role", role.as_str())];
            p.sample("backend_role", &labels, u8::from(b.role == role));
        }
    }
}

/// A latency histogram family: one series of buckets per item (`le` from
/// [`EXPORTED_BOUNDS_US`], then `+Inf`), `_sum` and `_count`, in seconds.
fn prom_histogram<'a>(
    p: &mut Prom,
    name: &str,
    help: &str,
    items: impl IntoIterator<Item = (Vec<(&'static str, String)>, &'a LatencySnapshot)>,
) {
    let bounds: Vec<String> = EXPORTED_BOUNDS_US
        .iter()
        .map(|us| float(*us as f64 / 1e6))
        .chain(["+Inf".to_owned()])
        .collect();
    let mut header = false;
    for (labels, latency) in items {
        if !header {
            p.family(name, "histogram", help);
            header = true;
        }
        let mut pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let bucket = format!("{name}_bucket");
        // `+Inf` and `_count` are the last cumulative bucket: the three always agree.
        let count = latency.buckets.last().copied().unwrap_or(0);
        for (i, le) in bounds.iter().enumerate() {
            pairs.push(("le", le));
            p.sample(
                &bucket,
                &pairs,
                latency.buckets.get(i).copied().unwrap_or(0),
            );
            pairs.pop();
        }
        p.sample(
            &format!("{name}_sum"),
            &pairs,
            float(latency.sum_us as f64 / 1e6),
        );
        p.sample(&format!("{name}_count"), &pairs, count);
    }
}

/// Each listener's errors by reason, every reason listed (zeros too: `rate()` needs the series
/// before the first error).
fn prom_errors(p: &mut Prom, ls: &[ListenerSnapshot]) {
    if ls.is_empty() {
        return;
    }
    p.family(
        "errors_total",
        "counter",
        "Commands answered with an error, by reason (the proxy's refusals included).",
    );
    for l in ls {
        for (reason, n) in &l.errors_by_reason {
            let labels = [
                ("listener", l.name.as_str()),
                ("addr", l.addr.as_str()),
                ("reason", reason),
            ];
            p.sample("errors_total", &labels, n);
        }
    }
}

fn prom_latency(p: &mut Prom, s: &Snapshot) {
    prom_histogram(
        p,
        "listener_latency_seconds",
        "From a command read to its reply ready to be written to the client.",
        s.listeners.iter().map(|l| (listener_labels(l), &l.latency)),
    );
    prom_histogram(
        p,
        "backend_latency_seconds",
        "Command round trip to the backend.",
        s.backends.iter().map(|b| (backend_labels(b), &b.latency)),
    );
}

/// Cluster mode: the slot map and when it was fetched and changed.
fn prom_cluster_map(p: &mut Prom, c: &ClusterSnapshot) {
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
fn prom_cluster_requests(p: &mut Prom, c: &ClusterSnapshot) {
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

/// The snapshot in Prometheus text exposition format 0.0.4; every name starts `haproxy_rs_`.
pub fn render_prometheus(s: &Snapshot) -> String {
    let mut p = Prom {
        out: String::with_capacity(4 * 1024),
    };
    prom_process(&mut p, s);
    p.families(&s.listeners, listener_labels, LISTENER_FAMILIES);
    prom_errors(&mut p, &s.listeners);
    p.families(&s.backends, backend_labels, BACKEND_FAMILIES);
    prom_roles(&mut p, &s.backends);
    prom_latency(&mut p, s);
    p.families(&s.sentinels, sentinel_labels, SENTINEL_FAMILIES);
    if let Some(c) = &s.cluster {
        prom_cluster_map(&mut p, c);
        prom_cluster_requests(&mut p, c);
    }
    p.out
}

#[cfg(test)]
mod tests {
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
        assert!(
            text.contains("haproxy_rs_backend_replication_offset{backend=\"127.0.0.1:6392\"} 4242")
        );
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
            let line =
                format!("haproxy_rs_backend_latency_seconds_bucket{{{master},le=\"{le}\"}} {n}");
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
        let doc = include_str!("../../docs/metrics.md");
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
}
