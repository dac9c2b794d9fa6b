//! The keys that come from the Redis backends and the global section: credentials, the health
//! interval and backend TLS, timeouts, limits.

use super::checks::{self, Role};
use super::model::{self, Proxy};
use super::options::{self, ServerOpts};
use super::parse::{Line, Section, SectionKind};
use super::plan::{clamp, entry, list, toml_str, with_note, Entry, Plan, Pool};
use super::Ledger;

/// `[backend]` (and `[sentinel]`) credentials from the checks' `AUTH`.
pub(super) fn credentials(plan: &mut Plan, redis: &[&Pool], pools: &[Pool], ledger: &mut Ledger) {
    let mut auths = redis.iter().filter_map(|p| p.check.auth.as_ref());
    if let Some(auth) = auths.next() {
        let e = secret(plan, auth, "REDIS_PASSWORD", ledger);
        plan.backend.extend(e);
        if let Some(user) = &auth.user {
            plan.backend
                .push(entry("username", toml_str(user), auth.line));
        }
        for other in auths {
            if other.password != auth.password || other.user != auth.user {
                ledger.untranslated(
                    other.line,
                    format!(
                        "other credentials than line {}: haproxy-rs logs in to every server \
                         with one",
                        auth.line.number
                    ),
                );
            }
        }
    }
    let sentinel_auth = pools.iter().find_map(|p| match p.check.role {
        Role::Sentinel(_) if !plan.sentinel.is_empty() => p.check.auth.as_ref(),
        _ => None,
    });
    if let Some(auth) = sentinel_auth {
        let e = secret(plan, auth, "REDIS_SENTINEL_PASSWORD", ledger);
        plan.sentinel.extend(e);
        if let Some(user) = &auth.user {
            plan.sentinel
                .push(entry("username", toml_str(user), auth.line));
        }
    }
}

/// The `password` key when the check's password is literal; else a note naming the variable
/// to set.
fn secret(
    plan: &mut Plan,
    auth: &checks::Auth,
    variable: &str,
    ledger: &mut Ledger,
) -> Option<Entry> {
    if auth.env {
        ledger.untranslated(
            auth.line,
            format!(
                "the password is the environment's {}: give it to haproxy-rs as {variable}",
                auth.password
            ),
        );
        plan.advice.push(format!(
            "the password of line {} came from the environment ({}): set {variable} to it \
             where haproxy-rs runs",
            auth.line.number, auth.password
        ));
        return None;
    }
    plan.holds_secret = true;
    plan.advice.push(format!(
        "this file holds the password of line {}: keep it private, or delete `password` and \
         set {variable} where haproxy-rs runs",
        auth.line.number
    ));
    Some(Entry {
        key: "password",
        value: toml_str(&auth.password),
        from: format!("line {}: tcp-check send AUTH", auth.line.number),
    })
}

/// `health_interval_ms` and backend TLS from the server lines of the Redis backends.
pub(super) fn server_settings(plan: &mut Plan, redis: &[&Pool], ledger: &mut Ledger) {
    let mut inter: Option<(u64, &Line)> = None;
    let mut tls: Option<(ServerOpts, &Line)> = None;
    for pool in redis {
        let mut defaults = ServerOpts::default();
        let default_lines = pool
            .proxy
            .defaults
            .into_iter()
            .flat_map(|d| {
                d.body
                    .iter()
                    .filter(|l| model::starts(l, &["default-server"]))
            })
            .chain(pool.proxy.own(&["default-server"]));
        for line in default_lines {
            options::server(line, 1, &mut defaults, ledger);
        }
        for s in &pool.servers {
            let mut o = defaults.clone();
            options::server(s.line, 3, &mut o, ledger);
            if let Some(ms) = o.inter_ms {
                if inter.is_none_or(|(m, _)| ms < m) {
                    inter = Some((ms, s.line));
                }
            }
            if tls.is_none() && o.tls_ca.is_some() {
                tls = Some((o, s.line));
            }
        }
    }
    if let Some((ms, line)) = inter {
        let (v, note) = clamp(ms, 10, 60_000);
        plan.backend.push(Entry {
            key: "health_interval_ms",
            value: v.to_string(),
            from: format!(
                "line {}: the shortest `inter`{note} (haproxy-rs's default is 100)",
                line.number
            ),
        });
    }
    if let Some((o, line)) = tls {
        plan.backend.push(entry("tls", "true".into(), line));
        if let Some(ca) = &o.tls_ca {
            plan.backend.push(entry("tls_ca_file", toml_str(ca), line));
        }
        if let Some(crt) = &o.tls_crt {
            plan.backend
                .push(entry("tls_cert_file", toml_str(crt), line));
            plan.backend
                .push(entry("tls_key_file", toml_str(crt), line));
        }
    }
}

/// `timeout connect/server/client`.
pub(super) fn timeouts(
    plan: &mut Plan,
    write: &Proxy,
    read: Option<&Proxy>,
    redis: &[&Pool],
    ledger: &mut Ledger,
) {
    let backend = redis.first().map(|p| p.proxy);
    let time = |line: &Line| model::millis(line.word(2));
    if let Some(line) = backend.and_then(|b| b.setting(&["timeout", "connect"])) {
        if let Some(ms) = time(line) {
            let (v, note) = clamp(ms, 10, 60_000);
            plan.backend.push(with_note(
                entry("connect_timeout_ms", v.to_string(), line),
                &note,
            ));
            ledger.used(line);
        }
    }
    if let Some(line) = backend.and_then(|b| b.setting(&["timeout", "server"])) {
        if let Some(ms) = time(line) {
            let ms = if ms == 0 { u64::MAX } else { ms };
            let (v, note) = clamp(ms, 10, 3_600_000);
            let mut e = with_note(entry("command_timeout_ms", v.to_string(), line), &note);
            e.from
                .push_str(": a request waiting longer for its reply fails");
            plan.backend.push(e);
            ledger.used(line);
        }
    }
    let client = write.setting(&["timeout", "client"]);
    if let Some(line) = client {
        if let Some(ms) = time(line) {
            let secs = ms.div_ceil(1000).min(2_147_483_647);
            let mut e = entry("client_timeout_secs", secs.to_string(), line);
            e.from
                .push_str(": an idle client is closed (subscribers are not)");
            plan.top.push(e);
            ledger.used(line);
        }
    }
    if let Some(rl) = read.and_then(|r| r.setting(&["timeout", "client"])) {
        let same = client.is_some_and(|c| time(c) == time(rl));
        if !same {
            ledger.untranslated(
                rl,
                "haproxy-rs has one client timeout: the write endpoint's is used",
            );
        }
    }
}

/// `max_clients`, `threads`, `shutdown_grace_ms`.
pub(super) fn process(
    plan: &mut Plan,
    sections: &[Section],
    write: &Proxy,
    read: Option<&Proxy>,
    ledger: &mut Ledger,
) {
    let global = sections.iter().find(|s| s.kind == SectionKind::Global);
    let global_line =
        |kw: &[&str]| global.and_then(|g| g.body.iter().rev().find(|l| model::starts(l, kw)));
    let number = |l: &Line| l.word(1).parse::<u64>().ok();
    let frontends: Vec<Option<&Line>> = std::iter::once(write)
        .chain(read)
        .map(|f| f.setting(&["maxconn"]))
        .collect();
    let per_frontend: Option<(u64, Vec<&Line>)> =
        frontends
            .iter()
            .try_fold((0u64, Vec::new()), |(sum, mut lines), l| {
                let l = (*l)?;
                lines.push(l);
                Some((sum.saturating_add(number(l)?), lines))
            });
    let global_max = global_line(&["maxconn"]).and_then(|l| Some((number(l)?, l)));
    if let (Some((sum, _)), Some((g, gl))) = (&per_frontend, global_max) {
        if g >= *sum {
            ledger.not_needed(gl, "the endpoints' own maxconn add up to less");
        }
    }
    let chosen = match (per_frontend, global_max) {
        (Some((sum, _)), Some((g, gl))) if g < sum => Some((g, vec![gl])),
        (Some((sum, lines)), _) => Some((sum, lines)),
        (None, Some((g, gl))) => Some((g, vec![gl])),
        (None, None) => None,
    };
    if let Some((n, lines)) = chosen {
        let (v, note) = clamp(n, 1, 1_000_000);
        let numbers: Vec<usize> = lines.iter().map(|l| l.number).collect();
        plan.top.push(Entry {
            key: "max_clients",
            value: v.to_string(),
            from: format!(
                "`maxconn`, line {}{note}: client connections of all endpoints together",
                list(&numbers)
            ),
        });
        for l in lines {
            ledger.used(l);
        }
    }
    if let Some(l) = global_line(&["nbthread"]) {
        if let Some(n) = number(l) {
            let (v, note) = clamp(n, 0, 1024);
            plan.top
                .push(with_note(entry("threads", v.to_string(), l), &note));
            ledger.used(l);
        }
    }
    if let Some(l) = global_line(&["hard-stop-after"]) {
        if let Some(ms) = model::millis(l.word(1)) {
            let (v, note) = clamp(ms, 0, 600_000);
            plan.top.push(with_note(
                entry("shutdown_grace_ms", v.to_string(), l),
                &note,
            ));
            ledger.used(l);
        }
    }
}
