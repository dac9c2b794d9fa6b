//! Pure renderers of a [`Snapshot`]: the HTML page, JSON, and Prometheus text format 0.0.4.

use std::fmt::{Display, Write};

use super::{BackendSnapshot, BackendState, Role, Snapshot};

mod cluster;

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
th{background:#20a0ff;color:#fff;font-weight:bold;text-align:center;white-space:normal}\
td.l{text-align:left}td.wrap{white-space:normal;overflow-wrap:anywhere;min-width:16em}\
tr.up{background:#c0ffc0}tr.down{background:#ff9090}tr.unknown{background:#e0e0e0}\
tr.master .role{font-weight:bold}\
.info td{border:none;text-align:left;padding:1px 8px}.info td:first-child{font-weight:bold}\
.ok{color:#080;font-weight:bold}.bad{color:#c00;font-weight:bold}\
.age{color:#555}.empty{color:#777;font-style:italic}\
.legend span{display:inline-block;padding:1px 8px;margin-right:4px;border:1px solid #999}";

/// The info rows about the topology's masters: one master (Sentinel, static servers), or the
/// slot coverage in cluster mode, where "current master: unknown" would be a false alarm.
/// The authentication mode; in red when clients need no password and the servers do.
fn auth_cell(a: &super::AuthSnapshot) -> String {
    if a.open {
        return format!(
            "<span class=\"bad\">{}: clients need no password, the servers do</span>",
            esc(&a.mode)
        );
    }
    let mode = match a.mode.as_str() {
        "backend" => "backend (clients log in as users of the master's ACL)".to_string(),
        "proxy" => "proxy ([auth] users)".to_string(),
        other => esc(other),
    };
    format!(
        "{mode}; refused: {} logins, {} commands, {} keys, {} channels",
        a.denied_auth, a.denied_cmd, a.denied_key, a.denied_channel
    )
}

fn master_rows(s: &Snapshot) -> String {
    if let Some(c) = &s.cluster {
        return format!(
            "<tr><td>slots served</td><td>{}</td></tr><tr><td>cluster nodes</td><td>{}</td></tr>",
            cluster::coverage(c.view.slots_served),
            cluster::node_counts(&c.view),
        );
    }
    let master = match &s.master {
        Some(m) => format!("<span class=\"ok\">{}</span>", esc(m)),
        None => "<span class=\"bad\">unknown</span>".to_owned(),
    };
    let fenced = match &s.writes_fenced {
        Some(cause) => format!("<span class=\"bad\">HELD: {}</span>", esc(cause)),
        None => "<span class=\"ok\">no</span>".to_owned(),
    };
    let policy = s.on_sentinel_loss.as_deref().map_or(String::new(), |p| {
        format!("<tr><td>on sentinel loss</td><td>{}</td></tr>", esc(p))
    });
    format!(
        "<tr><td>master name</td><td>{}</td></tr>\
<tr><td>current master</td><td>{master}</td></tr>\
<tr><td>writes fenced</td><td>{fenced}</td></tr>{policy}\
<tr><td>failovers</td><td>{}</td></tr>",
        s.master_name.as_deref().map_or("-".to_owned(), esc),
        s.failovers_total,
    )
}

fn html_head(out: &mut String, s: &Snapshot) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"2\"><title>haproxy-rs statistics</title>\
<style>{CSS}</style></head><body>\n<h1>haproxy-rs statistics report</h1>\n\
<table class=\"info\">\
<tr><td>version</td><td>{}</td></tr>\
<tr><td>started</td><td>{} UTC</td></tr>\
<tr><td>uptime</td><td>{}</td></tr>\
<tr><td>topology</td><td>{} ({})</td></tr>\
{}\
<tr><td>client auth</td><td>{}</td></tr>\
<tr><td>config reloads</td><td>{}</td></tr>\
<tr><td>updated</td><td>{} UTC (refreshes every 2 s)</td></tr></table>\n\
<div class=\"legend\"><span style=\"background:#c0ffc0\">UP</span>\
<span style=\"background:#ff9090\">DOWN</span>\
<span style=\"background:#e0e0e0\">not checked</span></div>\n",
        esc(&s.version),
        fmt_time(s.started_ms),
        fmt_age_secs(s.uptime_secs),
        esc(&s.mode),
        if shouts(&s.topology_status) {
            format!("<span class=\"bad\">{}</span>", esc(&s.topology_status))
        } else {
            esc(&s.topology_status)
        },
        master_rows(s),
        auth_cell(&s.auth),
        reload_cell(&s.reloads),
        fmt_time(s.now_ms),
    );
}

/// The reload counters and what the last reload did (a refusal in red, with its reason).
fn reload_cell(r: &super::ReloadSnapshot) -> String {
    let counts = format!("{} applied, {} refused", r.applied_total, r.refused_total);
    let Some(last) = &r.last else {
        return counts;
    };
    let at = fmt_time(last.at_ms);
    let mut cell = match &last.error {
        Some(error) => format!(
            "{counts}; <span class=\"bad\">last at {at} UTC REFUSED: {}</span> (the running config stays)",
            esc(error)
        ),
        None if last.changed.is_empty() => format!("{counts}; last at {at} UTC changed nothing live"),
        None => format!("{counts}; last at {at} UTC applied: {}", esc(&last.changed.join(", "))),
    };
    if !last.needs_restart.is_empty() {
        let _ = write!(
            cell,
            "; <span class=\"bad\">needs a restart: {}</span>",
            esc(&last.needs_restart.join(", "))
        );
    }
    cell
}

/// Whether a status starts with a word in capitals (`ALL SENTINELS UNREACHABLE`, `NO SENTINEL
/// KNOWS ...`): the way [`Snapshot::topology_status`] says the topology cannot be followed.
fn shouts(status: &str) -> bool {
    status
        .split(' ')
        .next()
        .is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase()))
}

/// One table cell of escaped HTML: left-aligned text or a right-aligned number.
enum Cell {
    Text(String),
    /// Text that wraps (long lists), so the page fits a 1280 px screen.
    Wrapped(String),
    Num(String),
}

fn num(v: impl Display) -> Cell {
    Cell::Num(v.to_string())
}

/// A titled table; `headers` is `|`-separated; `rows` are (row class, cells).
fn table(out: &mut String, title: &str, headers: &str, rows: Vec<(String, Vec<Cell>)>) {
    let _ = write!(out, "<h2>{title}</h2>\n<table><tr>");
    for h in headers.split('|') {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>\n");
    if rows.is_empty() {
        let cols = headers.split('|').count();
        let _ = writeln!(
            out,
            "<tr><td class=\"l empty\" colspan=\"{cols}\">none</td></tr>"
        );
    }
    for (class, cells) in rows {
        let _ = write!(out, "<tr class=\"{class}\">");
        for cell in cells {
            let _ = match cell {
                Cell::Text(t) => write!(out, "<td class=\"l\">{t}</td>"),
                Cell::Wrapped(t) => write!(out, "<td class=\"l wrap\">{t}</td>"),
                Cell::Num(n) => write!(out, "<td>{n}</td>"),
            };
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn opt_text(v: Option<&str>) -> Cell {
    Cell::Text(v.map_or("-".to_owned(), esc))
}

fn html_listeners(out: &mut String, s: &Snapshot) {
    let rows = s.listeners.iter().map(|l| {
        let cells = vec![
            Cell::Text(esc(&l.name)),
            Cell::Text(esc(&l.addr)),
            num(l.current_connections),
            num(l.pubsub_clients),
            num(l.total_connections),
            num(l.rejected_connections),
            num(l.output_buffer_limit_disconnections),
            num(l.query_buffer_limit_disconnections),
            num(l.output_total_limit_disconnections),
            num(l.transactions_too_large),
            num(l.commands),
            num(l.errors),
            num(format!("{:.1}", l.ops_per_sec)),
        ];
        ("up".to_owned(), cells)
    });
    let headers = "Listener|Address|Cur conns|Subscribed|Total conns|Refused (max_clients)\
        |Closed: output buffer|Closed: query buffer|Closed: output total|Transactions too large\
        |Commands|Errors|Ops/s";
    table(out, "Listeners", headers, rows.collect());
}

fn backend_row(b: &BackendSnapshot, now_ms: u64) -> (String, Vec<Cell>) {
    let state = match b.state {
        BackendState::Up => "up",
        BackendState::Down => "down",
        BackendState::Unknown => "unknown",
    };
    let master = if b.role == Role::Master {
        " master"
    } else {
        ""
    };
    let link = match b.replication_link_up {
        Some(true) => "up",
        Some(false) => "<span class=\"bad\">down</span>",
        None => "-",
    };
    let offset = b
        .replication_offset
        .map_or("-".to_owned(), |o| o.to_string());
    let cells = vec![
        Cell::Text(esc(&b.addr)),
        Cell::Text(format!("<span class=\"role\">{}</span>", b.role.as_str())),
        Cell::Text(match b.left_topology_age_ms {
            // Shown until `stats_forget_after_secs` forgets it.
            Some(ms) => format!(
                "{} (left the topology {}s ago)",
                b.state.as_str(),
                ms / 1000
            ),
            None => b.state.as_str().to_owned(),
        }),
        Cell::Text(fmt_when(b.last_change_ms, now_ms)),
        num(b.current_connections),
        num(b.ops),
        num(format!("{:.1}", b.ops_per_sec)),
        num(b.errors),
        num(fmt_us(b.latency.p50_us)),
        num(fmt_us(b.latency.p99_us)),
        num(offset),
        Cell::Text(link.to_owned()),
    ];
    (format!("{state}{master}"), cells)
}

fn html_backends(out: &mut String, s: &Snapshot) {
    let rows = s.backends.iter().map(|b| backend_row(b, s.now_ms));
    let headers =
        "Backend|Role|State|Last change|Cur conns|Ops|Ops/s|Errors|p50|p99|Repl offset|Repl link";
    table(out, "Backends", headers, rows.collect());
}

fn html_sentinels(out: &mut String, s: &Snapshot) {
    let rows = s.sentinels.iter().map(|l| {
        let (class, state) = match l.connected {
            true => ("up", "connected"),
            false => ("down", "disconnected"),
        };
        let cells = vec![
            Cell::Text(esc(&l.addr)),
            Cell::Text(state.to_owned()),
            Cell::Text(fmt_when(l.connected_change_ms, s.now_ms)),
            opt_text(l.last_event.as_deref()),
            Cell::Text(fmt_when(l.last_event_ms, s.now_ms)),
            num(l.events),
        ];
        (class.to_owned(), cells)
    });
    let headers = "Sentinel|Link|Since|Last event|When|Events";
    table(out, "Sentinels", headers, rows.collect());
}

fn html_failovers(out: &mut String, s: &Snapshot) {
    let h = &s.hold;
    let class = if h.held_now > 0 { "down" } else { "" };
    let held = vec![
        num(h.held_now),
        num(h.held_bytes),
        num(h.held_total),
        num(h.released_total),
        num(h.expired_total),
        num(h.refused_total),
    ];
    table(
        out,
        "Requests held for a master (failover)",
        "Now|Bytes now|Held|Released|Expired (-TRYAGAIN)|Refused (full)",
        vec![(class.to_owned(), held)],
    );
    let rows = s.failovers.iter().map(|f| {
        let cells = vec![
            Cell::Text(fmt_when(Some(f.at_ms), s.now_ms)),
            opt_text(f.old_master.as_deref()),
            Cell::Text(esc(&f.new_master)),
            Cell::Text(esc(&f.detected_by)),
            Cell::Text(
                f.writes_held_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
            ),
            Cell::Wrapped(f.holds.as_ref().map_or_else(
                || "-".into(),
                |h| {
                    format!(
                        "{} held, {} released, {} expired, {} refused",
                        h.held_total, h.released_total, h.expired_total, h.refused_total
                    )
                },
            )),
            // One event per line, each wrapping: the list is long.
            Cell::Wrapped(
                f.events
                    .iter()
                    .map(|e| esc(e))
                    .collect::<Vec<_>>()
                    .join("<br>"),
            ),
        ];
        (String::new(), cells)
    });
    let headers = "Time|Old master|New master|Detected by|Writes held|Requests|Sentinel events";
    table(
        out,
        "Failover history (newest first)",
        headers,
        rows.collect(),
    );
}

/// How many commands the page lists (`/metrics` and `/stats.json` have them all).
const PAGE_COMMANDS: usize = 10;

fn html_commands(out: &mut String, s: &Snapshot) {
    let rows = s.commands.iter().take(PAGE_COMMANDS).map(|c| {
        let average = c.latency.sum_us.checked_div(c.latency.count);
        let cells = vec![
            Cell::Text(esc(c.name)),
            num(c.calls),
            num(c.errors),
            num(fmt_us(average)),
            num(fmt_us(c.latency.p50_us)),
            num(fmt_us(c.latency.p99_us)),
            num(fmt_us(c.latency.max_us)),
        ];
        (String::new(), cells)
    });
    let title = format!("Commands (the {PAGE_COMMANDS} most called)");
    table(
        out,
        &title,
        "Command|Calls|Errors|Average|p50|p99|Max",
        rows.collect(),
    );
}

/// The stats page: a self-refreshing (every 2 s) HTML document.
pub fn render_html(s: &Snapshot) -> String {
    let mut out = String::with_capacity(8 * 1024);
    html_head(&mut out, s);
    html_listeners(&mut out, s);
    html_commands(&mut out, s);
    match &s.cluster {
        // Cluster mode has no sentinels, and neither holds writes for a master nor sees
        // failovers of its own: the cluster fails over, the proxy follows the slot map.
        Some(c) => {
            cluster::html_cluster(&mut out, c, s.now_ms);
            html_backends(&mut out, s);
            out.push_str(
                "<p class=\"age\">Cluster mode: roles come from the slot map; the nodes are not \
health-checked (the cluster fails over by itself, the proxy follows its slot map).</p>\n",
            );
        }
        None => {
            html_backends(&mut out, s);
            html_sentinels(&mut out, s);
            html_failovers(&mut out, s);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::samples::{cluster_sample, sample};
    use crate::stats::Stats;

    #[test]
    fn html_has_sections_headers_backends_and_refresh() {
        let html = render_html(&sample());
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        for needle in [
            "<h2>Listeners</h2>",
            "<h2>Commands (the 10 most called)</h2>",
            "<td class=\"l\">get</td><td>1</td><td>1</td>",
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
        // Listeners, commands, backends, sentinels, failovers.
        assert_eq!(html.matches(">none</td>").count(), 5);
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
        assert!(v["version"].is_string() && v["master_name"].is_string());
        assert!(v["now_ms"].is_u64() && v["uptime_secs"].is_u64());
    }

    #[test]
    fn json_has_the_cluster_in_cluster_mode_only() {
        let v: serde_json::Value =
            serde_json::from_str(&render_json(&cluster_sample())).expect("valid json");
        assert_eq!(v["mode"], "cluster");
        let c = &v["cluster"];
        assert_eq!(c["view"]["slots_served"], 16384);
        assert_eq!(c["view"]["source"], "127.0.0.1:7001");
        assert!(c["view"]["changed_ms"].is_u64());
        let nodes = c["view"]["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 6);
        assert_eq!(nodes[0]["addr"], "127.0.0.1:7001");
        assert_eq!(nodes[0]["role"], "master");
        assert!(nodes[0]["master"].is_null());
        assert_eq!(nodes[3]["master"], "127.0.0.1:7001");
        assert_eq!(nodes[3]["ranges"], "0-5460");
        assert_eq!((c["moved"].as_u64(), c["ask"].as_u64()), (Some(2), Some(1)));
        assert_eq!(
            (c["retries"].as_u64(), c["retries_exhausted"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(
            (c["refreshes"].as_u64(), c["refresh_failures"].as_u64()),
            (Some(7), Some(1))
        );
        assert_eq!(c["split_commands"], 4);
        assert!(c["redirections_per_sec"].is_f64() && c["last_refresh_ms"].is_u64());
        assert_eq!(
            v["backends"][3]["role"], "replica",
            "roles from the slot map"
        );

        let v: serde_json::Value = serde_json::from_str(&render_json(&sample())).expect("json");
        assert!(v["cluster"].is_null(), "sentinel mode has no cluster");
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
