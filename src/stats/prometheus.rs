//! The Prometheus text exposition of a [`Snapshot`] (`/metrics`).

use std::fmt::{Display, Write};

use super::{BackendSnapshot, BackendState, ListenerSnapshot, SentinelSnapshot, Snapshot};

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

fn prom_process(p: &mut Prom, s: &Snapshot) {
    let topology = [
        ("mode", s.mode.as_str()),
        ("master_name", s.master_name.as_deref().unwrap_or("")),
    ];
    p.family("build_info", "gauge", "Version of the proxy, always 1.");
    p.sample("build_info", &[("version", &s.version)], 1);
    p.family("uptime_seconds", "gauge", "Seconds since start.");
    p.sample("uptime_seconds", &[], s.uptime_secs);
    p.family("topology_info", "gauge", "Topology mode, always 1.");
    p.sample("topology_info", &topology, 1);
    p.family("master_known", "gauge", "1 while a master is known.");
    p.sample("master_known", &[], u8::from(s.healthy()));
    p.family("failovers_total", "counter", "Master changes seen.");
    p.sample("failovers_total", &[], s.failovers_total);
    let h = &s.hold;
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

fn bool_f(b: bool) -> f64 {
    f64::from(u8::from(b))
}

// One line per family reads as a table; rustfmt would spread each over six lines.
#[rustfmt::skip]
const LISTENER_FAMILIES: &[Family<ListenerSnapshot>] = &[
    ("listener_connections", "gauge", "Open client connections.", |l| Some(l.current_connections as f64)),
    ("listener_connections_total", "counter", "Accepted client connections.", |l| Some(l.total_connections as f64)),
    ("listener_commands_total", "counter", "Commands received.", |l| Some(l.commands as f64)),
    ("listener_errors_total", "counter", "Commands answered with an error.", |l| Some(l.errors as f64)),
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

fn backend_labels(b: &BackendSnapshot) -> Vec<(&'static str, String)> {
    vec![
        ("backend", b.addr.clone()),
        ("role", b.role.as_str().to_owned()),
    ]
}

fn prom_latency(p: &mut Prom, bs: &[BackendSnapshot]) {
    if bs.is_empty() {
        return;
    }
    let name = "backend_latency_seconds";
    p.family(name, "summary", "Command round-trip latency.");
    for b in bs {
        let (addr, role) = (b.addr.as_str(), b.role.as_str());
        let quantiles = [
            ("0.5", b.latency.p50_us),
            ("0.9", b.latency.p90_us),
            ("0.99", b.latency.p99_us),
        ];
        for (q, us) in quantiles {
            // NaN is how a summary says "no observations yet".
            let v = us.map_or(f64::NAN, |us| us as f64 / 1e6);
            let labels = [("backend", addr), ("role", role), ("quantile", q)];
            p.sample(name, &labels, float(v));
        }
        let labels = [("backend", addr), ("role", role)];
        let sum = float(b.latency.sum_us as f64 / 1e6);
        p.sample("backend_latency_seconds_sum", &labels, sum);
        p.sample("backend_latency_seconds_count", &labels, b.latency.count);
    }
}

/// The snapshot in Prometheus text exposition format 0.0.4; every name starts `haproxy_rs_`.
pub fn render_prometheus(s: &Snapshot) -> String {
    let mut p = Prom {
        out: String::with_capacity(4 * 1024),
    };
    prom_process(&mut p, s);
    p.families(&s.listeners, listener_labels, LISTENER_FAMILIES);
    p.families(&s.backends, backend_labels, BACKEND_FAMILIES);
    prom_latency(&mut p, &s.backends);
    p.families(&s.sentinels, sentinel_labels, SENTINEL_FAMILIES);
    p.out
}
