//! The Prometheus text exposition of a [`Snapshot`] (`/metrics`).

use std::fmt::{Display, Write};

mod cluster;

use super::{
    AuthSnapshot, BackendSnapshot, BackendState, CommandSnapshot, HoldSnapshot, LatencySnapshot,
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
const COMMAND_FAMILIES: &[Family<CommandSnapshot>] = &[
    ("command_calls_total", "counter", "Calls answered, per command (as INFO commandstats).", |c| Some(c.calls as f64)),
    ("command_errors_total", "counter", "Calls answered with an error, per command.", |c| Some(c.errors as f64)),
];

#[rustfmt::skip]
const SENTINEL_FAMILIES: &[Family<SentinelSnapshot>] = &[
    ("sentinel_connected", "gauge", "1 while the sentinel link is up.", |x| Some(bool_f(x.connected))),
    ("sentinel_events_total", "counter", "Events received.", |x| Some(x.events as f64)),
];

fn listener_labels(l: &ListenerSnapshot) -> Vec<(&'static str, String)> {
    vec![("listener", l.name.clone()), ("addr", l.addr.clone())]
}

fn command_labels(c: &CommandSnapshot) -> Vec<(&'static str, String)> {
    vec![("command", c.name.to_owned())]
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
    prom_histogram(
        p,
        "command_latency_seconds",
        "From a command read to its reply ready to be written to the client, per command.",
        s.commands.iter().map(|c| (command_labels(c), &c.latency)),
    );
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
    p.families(&s.commands, command_labels, COMMAND_FAMILIES);
    prom_latency(&mut p, s);
    p.families(&s.sentinels, sentinel_labels, SENTINEL_FAMILIES);
    if let Some(c) = &s.cluster {
        cluster::prom_cluster_map(&mut p, c);
        cluster::prom_cluster_requests(&mut p, c);
    }
    p.out
}

#[cfg(test)]
mod tests;
