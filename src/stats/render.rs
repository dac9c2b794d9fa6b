//! Pure renderers of a [`Snapshot`]: the HTML page, JSON, and Prometheus text format 0.0.4.

use std::fmt::{Display, Write};

use super::{BackendSnapshot, BackendState, Snapshot};

/// Escapes text for HTML element content and double-quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` in UTC from unix millis (Hinnant's civil-from-days).
fn fmt_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A short human duration like HAProxy's: `42s`, `3m05s`, `2h07m`, `4d03h`.
fn fmt_age_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `time (age ago)` or a dash.
fn fmt_when(ms: Option<u64>, now_ms: u64) -> String {
    match ms {
        Some(ms) => format!(
            "{} <span class=\"age\">({} ago)</span>",
            fmt_time(ms),
            fmt_age_secs(now_ms.saturating_sub(ms) / 1000)
        ),
        None => "-".to_owned(),
    }
}

/// Microseconds as `850us`, `1.25ms` or `2.50s`.
fn fmt_us(us: Option<u64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(us) if us < 1000 => format!("{us}us"),
        Some(us) if us < 1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        Some(us) => format!("{:.2}s", us as f64 / 1e6),
    }
}

const CSS: &str = "body{font-family:Verdana,Arial,sans-serif;font-size:12px;margin:12px;color:#000;background:#fff}\
h1{font-size:18px;margin:0 0 6px;color:#fff;background:#20446e;padding:6px 10px}\
h2{font-size:14px;margin:16px 0 4px;color:#20446e}\
table{border-collapse:collapse;margin-bottom:6px}\
th,td{border:1px solid #999;padding:2px 8px;text-align:right;white-space:nowrap}\
th{background:#20a0ff;color:#fff;font-weight:bold}\
td.l,th.l{text-align:left}\
tr.up{background:#c0ffc0}tr.down{background:#ff9090}tr.unknown{background:#e0e0e0}\
tr.master td.role{font-weight:bold}\
.info td{border:none;text-align:left;padding:1px 8px}.info td:first-child{font-weight:bold}\
.ok{color:#080;font-weight:bold}.bad{color:#c00;font-weight:bold}\
.age{color:#555}.empty{color:#777;font-style:italic}\
.legend span{display:inline-block;padding:1px 8px;margin-right:4px;border:1px solid #999}";

fn html_head(out: &mut String, s: &Snapshot) {
    let master = match &s.master {
        Some(m) => format!("<span class=\"ok\">{}</span>", esc(m)),
        None => "<span class=\"bad\">unknown</span>".to_owned(),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"2\"><title>haproxy-rs statistics</title>\
<style>{CSS}</style></head><body>\n<h1>haproxy-rs statistics report</h1>\n\
<table class=\"info\">\
<tr><td>version</td><td>{}</td></tr>\
<tr><td>started</td><td>{} UTC</td></tr>\
<tr><td>uptime</td><td>{}</td></tr>\
<tr><td>topology</td><td>{}</td></tr>\
<tr><td>master name</td><td>{}</td></tr>\
<tr><td>current master</td><td>{master}</td></tr>\
<tr><td>failovers</td><td>{}</td></tr>\
<tr><td>updated</td><td>{} UTC (refreshes every 2 s)</td></tr></table>\n\
<div class=\"legend\"><span style=\"background:#c0ffc0\">UP</span>\
<span style=\"background:#ff9090\">DOWN</span>\
<span style=\"background:#e0e0e0\">not checked</span></div>\n",
        esc(&s.version),
        fmt_time(s.started_ms),
        fmt_age_secs(s.uptime_secs),
        esc(&s.mode),
        s.master_name.as_deref().map_or("-".to_owned(), esc),
        s.failovers_total,
        fmt_time(s.now_ms),
    );
}

fn table_start(out: &mut String, title: &str, headers: &[&str]) {
    let _ = write!(out, "<h2>{title}</h2>\n<table><tr>");
    for (i, h) in headers.iter().enumerate() {
        let class = if i == 0 { " class=\"l\"" } else { "" };
        let _ = write!(out, "<th{class}>{h}</th>");
    }
    out.push_str("</tr>\n");
}

fn empty_row(out: &mut String, cols: usize, what: &str) {
    let _ = writeln!(
        out,
        "<tr><td class=\"l empty\" colspan=\"{cols}\">no {what}</td></tr>"
    );
}

fn html_listeners(out: &mut String, s: &Snapshot) {
    let headers = [
        "Listener",
        "Address",
        "Cur conns",
        "Total conns",
        "Commands",
        "Errors",
        "Ops/s",
    ];
    table_start(out, "Listeners", &headers);
    for l in &s.listeners {
        let _ = writeln!(
            out,
            "<tr class=\"up\"><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            esc(&l.name),
            esc(&l.addr),
            l.current_connections,
            l.total_connections,
            l.commands,
            l.errors,
            l.ops_per_sec
        );
    }
    if s.listeners.is_empty() {
        empty_row(out, headers.len(), "listeners");
    }
    out.push_str("</table>\n");
}

fn backend_row(out: &mut String, b: &BackendSnapshot, now_ms: u64) {
    let mut class = match b.state {
        BackendState::Up => "up",
        BackendState::Down => "down",
        BackendState::Unknown => "unknown",
    }
    .to_owned();
    if b.role == super::Role::Master {
        class.push_str(" master");
    }
    let link = match b.replication_link_up {
        Some(true) => "up",
        Some(false) => "<span class=\"bad\">down</span>",
        None => "-",
    };
    let offset = b
        .replication_offset
        .map_or("-".to_owned(), |o| o.to_string());
    let _ = writeln!(
        out,
        "<tr class=\"{class}\"><td class=\"l\">{}</td><td class=\"l role\">{}</td>\
<td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.1}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{offset}</td><td class=\"l\">{link}</td></tr>",
        esc(&b.addr),
        b.role.as_str(),
        b.state.as_str(),
        fmt_when(b.last_change_ms, now_ms),
        b.current_connections,
        b.ops,
        b.ops_per_sec,
        b.errors,
        fmt_us(b.latency.p50_us),
        fmt_us(b.latency.p99_us),
    );
}

fn html_backends(out: &mut String, s: &Snapshot) {
    let headers = [
        "Backend",
        "Role",
        "State",
        "Last change",
        "Cur conns",
        "Ops",
        "Ops/s",
        "Errors",
        "p50",
        "p99",
        "Repl offset",
        "Repl link",
    ];
    table_start(out, "Backends", &headers);
    for b in &s.backends {
        backend_row(out, b, s.now_ms);
    }
    if s.backends.is_empty() {
        empty_row(out, headers.len(), "backends");
    }
    out.push_str("</table>\n");
}

fn html_sentinels(out: &mut String, s: &Snapshot) {
    let headers = ["Sentinel", "Link", "Since", "Last event", "When", "Events"];
    table_start(out, "Sentinels", &headers);
    for l in &s.sentinels {
        let (class, state) = if l.connected {
            ("up", "connected")
        } else {
            ("down", "disconnected")
        };
        let _ = writeln!(
            out,
            "<tr class=\"{class}\"><td class=\"l\">{}</td><td class=\"l\">{state}</td>\
<td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
            esc(&l.addr),
            fmt_when(l.connected_change_ms, s.now_ms),
            l.last_event.as_deref().map_or("-".to_owned(), esc),
            fmt_when(l.last_event_ms, s.now_ms),
            l.events
        );
    }
    if s.sentinels.is_empty() {
        empty_row(out, headers.len(), "sentinel links");
    }
    out.push_str("</table>\n");
}

fn html_failovers(out: &mut String, s: &Snapshot) {
    let headers = ["Time", "Old master", "New master", "Detected by"];
    table_start(out, "Failover history (newest first)", &headers);
    for f in &s.failovers {
        let _ = writeln!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
<td class=\"l\">{}</td></tr>",
            fmt_when(Some(f.at_ms), s.now_ms),
            f.old_master.as_deref().map_or("-".to_owned(), esc),
            esc(&f.new_master),
            esc(&f.detected_by)
        );
    }
    if s.failovers.is_empty() {
        empty_row(out, headers.len(), "failovers");
    }
    out.push_str("</table>\n");
}

/// The stats page: a self-refreshing (every 2 s) HTML document.
pub fn render_html(s: &Snapshot) -> String {
    let mut out = String::with_capacity(8 * 1024);
    html_head(&mut out, s);
    html_listeners(&mut out, s);
    html_backends(&mut out, s);
    html_sentinels(&mut out, s);
    html_failovers(&mut out, s);
    out.push_str(
        "<p class=\"age\">Also: <a href=\"/stats.json\">/stats.json</a> \
<a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a></p>\n</body></html>\n",
    );
    out
}

/// The snapshot as pretty-printed JSON.
pub fn render_json(s: &Snapshot) -> String {
    serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

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

    /// One family with one sample per item.
    fn each<T>(&mut self, items: &[T], name: &str, kind: &str, help: &str, f: PromRow<'_, T>) {
        if items.is_empty() {
            return;
        }
        self.family(name, kind, help);
        for item in items {
            let (labels, value) = f(item);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &labels, value);
        }
    }
}

/// Labels and value of one sample, from one item.
type PromRow<'a, T> = &'a dyn Fn(&T) -> (Vec<(&'static str, String)>, String);

fn prom_process(p: &mut Prom, s: &Snapshot) {
    p.family("build_info", "gauge", "Version of the proxy, always 1.");
    p.sample("build_info", &[("version", &s.version)], 1);
    p.family(
        "uptime_seconds",
        "gauge",
        "Seconds since the proxy started.",
    );
    p.sample("uptime_seconds", &[], s.uptime_secs);
    p.family(
        "topology_info",
        "gauge",
        "Topology mode and master name, always 1.",
    );
    let name = s.master_name.as_deref().unwrap_or("");
    p.sample(
        "topology_info",
        &[("mode", &s.mode), ("master_name", name)],
        1,
    );
    p.family(
        "master_known",
        "gauge",
        "1 while a master is known, else 0.",
    );
    p.sample("master_known", &[], u8::from(s.healthy()));
    p.family(
        "failovers_total",
        "counter",
        "Master changes seen since start.",
    );
    p.sample("failovers_total", &[], s.failovers_total);
}

fn prom_listeners(p: &mut Prom, s: &Snapshot) {
    let labels =
        |l: &super::ListenerSnapshot| vec![("listener", l.name.clone()), ("addr", l.addr.clone())];
    let ls = &s.listeners;
    p.each(
        ls,
        "listener_connections",
        "gauge",
        "Client connections open now.",
        &|l| (labels(l), l.current_connections.to_string()),
    );
    p.each(
        ls,
        "listener_connections_total",
        "counter",
        "Client connections accepted.",
        &|l| (labels(l), l.total_connections.to_string()),
    );
    p.each(
        ls,
        "listener_commands_total",
        "counter",
        "Commands received from clients.",
        &|l| (labels(l), l.commands.to_string()),
    );
    p.each(
        ls,
        "listener_errors_total",
        "counter",
        "Commands answered with an error.",
        &|l| (labels(l), l.errors.to_string()),
    );
    p.each(
        ls,
        "listener_ops_per_second",
        "gauge",
        "Commands per second, last window.",
        &|l| (labels(l), float(l.ops_per_sec)),
    );
}

fn backend_labels(b: &BackendSnapshot) -> Vec<(&'static str, String)> {
    vec![
        ("backend", b.addr.clone()),
        ("role", b.role.as_str().to_owned()),
    ]
}

fn prom_backends(p: &mut Prom, s: &Snapshot) {
    let bs = &s.backends;
    let l = backend_labels;
    p.each(
        bs,
        "backend_up",
        "gauge",
        "1 if the backend is UP, else 0.",
        &|b| (l(b), u8::from(b.state == BackendState::Up).to_string()),
    );
    p.each(
        bs,
        "backend_connections",
        "gauge",
        "Backend connections open now.",
        &|b| (l(b), b.current_connections.to_string()),
    );
    p.each(
        bs,
        "backend_connections_total",
        "counter",
        "Backend connections opened.",
        &|b| (l(b), b.total_connections.to_string()),
    );
    p.each(
        bs,
        "backend_commands_total",
        "counter",
        "Commands completed by the backend.",
        &|b| (l(b), b.ops.to_string()),
    );
    p.each(
        bs,
        "backend_errors_total",
        "counter",
        "Commands that failed.",
        &|b| (l(b), b.errors.to_string()),
    );
    p.each(
        bs,
        "backend_ops_per_second",
        "gauge",
        "Commands per second, last window.",
        &|b| (l(b), float(b.ops_per_sec)),
    );
    let changed: Vec<_> = bs.iter().filter(|b| b.last_change_ms.is_some()).collect();
    p.each(
        &changed,
        "backend_last_change_timestamp_seconds",
        "gauge",
        "Unix time of the last UP/DOWN change.",
        &|b| (l(b), float(b.last_change_ms.unwrap_or(0) as f64 / 1e3)),
    );
    let repl: Vec<_> = bs
        .iter()
        .filter(|b| b.replication_offset.is_some())
        .collect();
    p.each(
        &repl,
        "backend_replication_offset",
        "gauge",
        "Replication offset.",
        &|b| (l(b), b.replication_offset.unwrap_or(0).to_string()),
    );
    p.each(
        &repl,
        "backend_replication_link_up",
        "gauge",
        "1 if the replication link is up.",
        &|b| {
            (
                l(b),
                u8::from(b.replication_link_up == Some(true)).to_string(),
            )
        },
    );
    prom_latency(p, bs);
}

fn prom_latency(p: &mut Prom, bs: &[BackendSnapshot]) {
    if bs.is_empty() {
        return;
    }
    let name = "backend_latency_seconds";
    p.family(
        name,
        "summary",
        "Command round-trip latency to the backend.",
    );
    for b in bs {
        let (addr, role) = (b.addr.as_str(), b.role.as_str());
        let quantiles = [
            ("0.5", b.latency.p50_us),
            ("0.9", b.latency.p90_us),
            ("0.99", b.latency.p99_us),
        ];
        for (q, us) in quantiles {
            let v = us.map_or("NaN".to_owned(), |us| float(us as f64 / 1e6));
            p.sample(
                name,
                &[("backend", addr), ("role", role), ("quantile", q)],
                v,
            );
        }
        let labels = [("backend", addr), ("role", role)];
        p.sample(
            "backend_latency_seconds_sum",
            &labels,
            float(b.latency.sum_us as f64 / 1e6),
        );
        p.sample("backend_latency_seconds_count", &labels, b.latency.count);
    }
}

fn prom_sentinels(p: &mut Prom, s: &Snapshot) {
    let l = |x: &super::SentinelSnapshot| vec![("sentinel", x.addr.clone())];
    let ss = &s.sentinels;
    p.each(
        ss,
        "sentinel_connected",
        "gauge",
        "1 while the sentinel link is connected.",
        &|x| (l(x), u8::from(x.connected).to_string()),
    );
    p.each(
        ss,
        "sentinel_events_total",
        "counter",
        "Events received from the sentinel.",
        &|x| (l(x), x.events.to_string()),
    );
}

/// The snapshot in Prometheus text exposition format 0.0.4; every name starts `haproxy_rs_`.
pub fn render_prometheus(s: &Snapshot) -> String {
    let mut p = Prom {
        out: String::with_capacity(4 * 1024),
    };
    prom_process(&mut p, s);
    prom_listeners(&mut p, s);
    prom_backends(&mut p, s);
    prom_sentinels(&mut p, s);
    p.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Role, Stats};
    use std::time::Duration;

    /// A snapshot with one of everything, and hostile names.
    pub(crate) fn sample() -> Snapshot {
        let stats = Stats::new("sentinel", Some("my<master>"));
        let l = stats.listener("main <script>", "127.0.0.1:6380".parse().expect("addr"));
        l.connection_opened();
        l.command();
        let m = stats.backend("127.0.0.1:6391");
        m.set_role(Role::Master);
        m.set_up(true);
        m.record(Duration::from_micros(250), true);
        let r = stats.backend("127.0.0.1:6392");
        r.set_role(Role::Replica);
        r.set_up(false);
        r.set_replication(4242, false);
        stats.backend("bad\"host\\\n:1");
        let s = stats.sentinel("127.0.0.1:26379");
        s.set_connected(true);
        s.event("+switch-master");
        stats.record_failover(Some("127.0.0.1:6392"), "127.0.0.1:6391", "+switch-master");
        stats.set_master(Some("127.0.0.1:6391"));
        stats.snapshot()
    }

    #[test]
    fn html_has_sections_headers_backends_and_refresh() {
        let html = render_html(&sample());
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        for needle in [
            "<h2>Listeners</h2>",
            "<h2>Backends</h2>",
            "<h2>Sentinels</h2>",
            "<th>Role</th>",
            "<th>p99</th>",
            "<th>Repl offset</th>",
            "127.0.0.1:6391",
            "127.0.0.1:6392",
            "127.0.0.1:26379",
            "+switch-master",
            "<tr class=\"up master\">",
            "<tr class=\"down\">",
            "4242",
            // 250us lands in the 240..=255us bucket, reported as its midpoint.
            "247us",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn html_escapes_names() {
        let html = render_html(&sample());
        assert!(html.contains("main &lt;script&gt;"));
        assert!(html.contains("my&lt;master&gt;"));
        assert!(html.contains("bad&quot;host"));
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn html_renders_an_empty_registry() {
        let html = render_html(&Stats::new("static", None).snapshot());
        assert!(html.contains("no backends"));
        assert!(html.contains("no failovers"));
        assert!(html.contains(">unknown</span>"));
    }

    #[test]
    fn json_parses_back_with_the_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&render_json(&sample())).expect("valid json");
        assert_eq!(v["mode"], "sentinel");
        assert_eq!(v["master"], "127.0.0.1:6391");
        assert_eq!(v["listeners"][0]["commands"], 1);
        assert_eq!(v["backends"][0]["addr"], "127.0.0.1:6391");
        assert_eq!(v["backends"][0]["role"], "master");
        assert_eq!(v["backends"][0]["state"], "UP");
        assert_eq!(v["backends"][0]["latency"]["count"], 1);
        assert_eq!(v["backends"][1]["replication_offset"], 4242);
        assert_eq!(v["backends"][1]["replication_link_up"], false);
        assert_eq!(v["sentinels"][0]["last_event"], "+switch-master");
        assert_eq!(v["failovers"][0]["new_master"], "127.0.0.1:6391");
        for key in [
            "version",
            "now_ms",
            "started_ms",
            "uptime_secs",
            "master_name",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }

    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Splits `name{labels} value`, checking the label syntax; returns (name, value).
    fn parse_sample(line: &str) -> (&str, &str) {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let name = match series.split_once('{') {
            None => series,
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").expect("key=\"");
                    assert!(
                        valid_name(key) && !key.contains(':'),
                        "label {key} in {line}"
                    );
                    let mut end = None;
                    let mut escaped = false;
                    for (i, c) in after.char_indices() {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.expect("closing quote");
                    rest = after[end + 1..]
                        .strip_prefix(',')
                        .unwrap_or(&after[end + 1..]);
                }
                name
            }
        };
        (name, value)
    }

    #[test]
    fn prometheus_output_is_valid_exposition_format() {
        let text = render_prometheus(&sample());
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
                assert!(["counter", "gauge", "summary"].contains(&kind), "{line}");
                assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none());
                continue;
            }
            let (name, value) = parse_sample(line);
            assert!(valid_name(name), "bad name {name}");
            assert!(name.starts_with("haproxy_rs_"), "{name}");
            assert!(value == "NaN" || value.parse::<f64>().is_ok(), "{line}");
            let family = ["_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "summary"))
                })
                .unwrap_or(name);
            let kind = typed
                .get(family)
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            assert!(helped.contains(family), "no HELP for {name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            samples += 1;
        }
        assert!(samples > 20);
        assert!(
            text.contains("haproxy_rs_backend_up{backend=\"127.0.0.1:6391\",role=\"master\"} 1\n")
        );
        assert!(text.contains("backend=\"bad\\\"host\\\\\\n:1\""));
        assert!(text.contains("quantile=\"0.99\""));
        assert!(text.contains("haproxy_rs_backend_replication_offset{backend=\"127.0.0.1:6392\",role=\"replica\"} 4242"));
    }

    #[test]
    fn time_and_duration_formatting() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_time(1_709_251_199_000), "2024-02-29 23:59:59");
        assert_eq!(fmt_age_secs(59), "59s");
        assert_eq!(fmt_age_secs(3_725), "1h02m");
        assert_eq!(fmt_age_secs(90_000), "1d01h");
        assert_eq!(fmt_us(Some(1_250)), "1.25ms");
    }
}
