//! What the HAProxy proxies become: the write and read endpoints, the servers or sentinels, the
//! stats address, the timeouts and limits; each key with the lines it came from.

use super::checks::{self, Check, Role};
use super::model::{self, Proxy, Server};
use super::options::{self, BindTls};
use super::parse::{Line, Section, SectionKind};
use super::{settings, ImportError, Ledger, Options};

/// One key of the TOML.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The key.
    pub key: &'static str,
    /// Its value, TOML-encoded.
    pub value: String,
    /// Where it came from, for the comment above it.
    pub from: String,
}

/// The TOML to write, by table.
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    /// Top-level keys.
    pub top: Vec<Entry>,
    /// `[sentinel]`.
    pub sentinel: Vec<Entry>,
    /// `[backend]`.
    pub backend: Vec<Entry>,
    /// `[tls]`.
    pub tls: Vec<Entry>,
    /// Advice on the whole.
    pub advice: Vec<String>,
    /// A password is written.
    pub holds_secret: bool,
}

/// A backend with its check and servers.
pub(super) struct Pool<'a> {
    pub proxy: Proxy<'a>,
    pub check: Check<'a>,
    pub servers: Vec<Server<'a>>,
    /// The notes its check left, kept apart until the backend is used.
    scratch: Ledger,
}

/// Decides every key.
///
/// # Errors
/// [`ImportError::Shape`] when no frontend of the Redis shape is found, or no server address.
pub(super) fn plan(
    sections: &[Section],
    opts: &Options,
    ledger: &mut Ledger,
) -> Result<Plan, ImportError> {
    let proxies = model::proxies(sections);
    let mut pools: Vec<Pool> = proxies
        .iter()
        .filter(|p| p.is_backend() && !p.is_http())
        .map(|p| {
            let mut scratch = Ledger::default();
            let check = checks::read(p, &mut scratch);
            Pool {
                proxy: *p,
                check,
                servers: model::servers(p),
                scratch,
            }
        })
        .collect();
    let Endpoints {
        write,
        write_pool,
        read,
    } = endpoints(&proxies, &pools)?;
    let mut plan = Plan::default();
    let read_pool = read.as_ref().map(|(_, i)| *i);
    let read = read.map(|(p, _)| p);

    let tls = endpoint(&mut plan, "listen", &write, ledger);
    if let Some(r) = &read {
        let read_tls = endpoint(&mut plan, "read_listen", r, ledger);
        if read_tls.is_some() != tls.is_some() {
            if let Some(line) = r.own(&["bind"]).first() {
                ledger.untranslated(
                    line,
                    "[tls] makes both endpoints TLS (or neither): one of them was plain",
                );
            }
        }
    }
    if let Some(t) = tls {
        tls_entries(&mut plan, &t, &write);
    }
    // The notes of the checks of the backends used: the Redis ones and the sentinel checks.
    for (i, p) in pools.iter_mut().enumerate() {
        let used =
            i == write_pool || Some(i) == read_pool || matches!(p.check.role, Role::Sentinel(_));
        if used {
            ledger.used(&p.proxy.section.header);
            ledger.merge(std::mem::take(&mut p.scratch));
        }
    }
    let redis: Vec<&Pool> = std::iter::once(write_pool)
        .chain(read_pool)
        .filter_map(|i| pools.get(i))
        .collect();
    topology(&mut plan, opts, &pools, &redis, ledger)?;
    settings::credentials(&mut plan, &redis, &pools, ledger);
    settings::server_settings(&mut plan, &redis, ledger);
    settings::timeouts(&mut plan, &write, read.as_ref(), &redis, ledger);
    settings::process(&mut plan, sections, &write, read.as_ref(), ledger);
    stats(&mut plan, &proxies, ledger);
    Ok(plan)
}

/// The index of the pool a frontend sends to.
fn pool_of(pools: &[Pool], frontend: &Proxy) -> Option<usize> {
    let name = target(frontend)?.0;
    pools.iter().position(|p| p.proxy.name() == name)
}

/// The backend a frontend sends to, and the line that says so (none for a listen).
fn target<'a>(frontend: &Proxy<'a>) -> Option<(&'a str, Option<&'a Line>)> {
    if frontend.section.kind == SectionKind::Listen {
        return Some((frontend.name(), None));
    }
    let line = frontend
        .own(&["default_backend"])
        .into_iter()
        .chain(
            frontend
                .own(&["use_backend"])
                .into_iter()
                .filter(|l| l.words.len() == 2),
        )
        .next()
        .or_else(|| frontend.setting(&["default_backend"]))?;
    Some((line.word(1), Some(line)))
}

/// The write and read frontends, with the indexes of their pools.
struct Endpoints<'a> {
    write: Proxy<'a>,
    write_pool: usize,
    read: Option<(Proxy<'a>, usize)>,
}

/// The write frontend (its backend checks `role:master`, or, with no such one, checks no role)
/// and the read one (`role:slave`, or no role over the write backend's servers).
fn endpoints<'a>(proxies: &[Proxy<'a>], pools: &[Pool<'a>]) -> Result<Endpoints<'a>, ImportError> {
    let tcp: Vec<(Proxy, usize, &Pool)> = proxies
        .iter()
        .filter(|p| p.is_frontend() && !p.is_http())
        .filter_map(|p| {
            let i = pool_of(pools, p)?;
            Some((*p, i, pools.get(i)?))
        })
        .collect();
    let with = |role: &Role| tcp.iter().find(|(_, _, pool)| &pool.check.role == role);
    let Some((write, wi, write_pool)) = with(&Role::Master).or_else(|| with(&Role::Any)) else {
        return Err(ImportError::Shape(
            "no Redis frontend: expected a frontend or listen in mode tcp whose backend checks \
             the master (tcp-check expect string role:master)"
                .into(),
        ));
    };
    let overlaps = |pool: &Pool| {
        pool.servers.iter().any(|s| {
            write_pool
                .servers
                .iter()
                .any(|w| w.addr.is_ok() && w.addr == s.addr)
        })
    };
    let read = with(&Role::Replica)
        .or_else(|| {
            tcp.iter().find(|(p, _, pool)| {
                pool.check.role == Role::Any
                    && p.section.header.number != write.section.header.number
                    && overlaps(pool)
            })
        })
        .map(|(p, i, _)| (*p, *i));
    Ok(Endpoints {
        write: *write,
        write_pool: *wi,
        read,
    })
}

/// `listen` or `read_listen` from a frontend's first bind; its TLS.
fn endpoint(
    plan: &mut Plan,
    key: &'static str,
    fe: &Proxy,
    ledger: &mut Ledger,
) -> Option<BindTls> {
    ledger.used(&fe.section.header);
    if let Some((_, Some(line))) = target(fe) {
        ledger.used(line);
    }
    let binds = fe.own(&["bind"]);
    let Some(first) = binds.first() else {
        ledger.untranslated(
            &fe.section.header,
            format!("no `bind` line: `{key}` keeps its default"),
        );
        return None;
    };
    for extra in binds.iter().skip(1) {
        ledger.untranslated(extra, "haproxy-rs listens on one address per endpoint");
    }
    let word = first.words.get(1);
    let text = word.map_or("", |w| w.text.as_str());
    let mut addrs = text.split(',');
    let addr = model::bind_addr(addrs.next().unwrap_or(""), word.is_some_and(|w| w.env));
    if addrs.next().is_some() {
        ledger.untranslated(
            first,
            "haproxy-rs listens on one address per endpoint: the first is used",
        );
    }
    match addr {
        Ok(a) => {
            plan.top.push(entry(key, toml_str(&a), first));
            ledger.used(first);
        }
        Err(why) => ledger.untranslated(first, format!("`{key}` keeps its default: {why}")),
    }
    options::bind(first, ledger)
}

fn tls_entries(plan: &mut Plan, t: &BindTls, write: &Proxy) {
    let Some(line) = write.own(&["bind"]).first().copied() else {
        return;
    };
    if let Some(crt) = &t.crt {
        plan.tls.push(entry("cert_file", toml_str(crt), line));
        plan.tls.push(Entry {
            key: "key_file",
            value: toml_str(crt),
            from: format!(
                "line {}: HAProxy's crt PEM holds the key too (a separate .key file: name it here)",
                line.number
            ),
        });
    }
    if let Some(ca) = &t.ca_file {
        plan.tls.push(entry("ca_file", toml_str(ca), line));
    }
    if t.verify_required {
        plan.tls.push(entry("client_auth", "true".into(), line));
    }
}

/// `[sentinel]` (from the flags or the redis-ha chart's sentinel checks) or `servers`.
fn topology(
    plan: &mut Plan,
    opts: &Options,
    pools: &[Pool],
    redis: &[&Pool],
    ledger: &mut Ledger,
) -> Result<(), ImportError> {
    let sentinel_pools: Vec<&Pool> = pools
        .iter()
        .filter(|p| matches!(p.check.role, Role::Sentinel(_)))
        .collect();
    let detected_name = sentinel_pools.iter().find_map(|p| match &p.check.role {
        Role::Sentinel(n) => Some(n.clone()),
        _ => None,
    });
    let mut detected: Vec<String> = Vec::new();
    let mut detected_from: Vec<usize> = Vec::new();
    for pool in &sentinel_pools {
        for s in &pool.servers {
            match &s.addr {
                Ok(a) if opts.sentinels.is_empty() => {
                    ledger.used(s.line);
                    if !detected.contains(a) {
                        detected.push(a.clone());
                        detected_from.push(s.line.number);
                    }
                }
                Ok(_) => ledger.not_needed(s.line, "the sentinels come from --sentinel"),
                Err(why) => ledger.untranslated(s.line, why.clone()),
            }
        }
    }
    let sentinels = if opts.sentinels.is_empty() {
        detected.clone()
    } else {
        opts.sentinels.clone()
    };
    if !sentinels.is_empty() {
        let from = if opts.sentinels.is_empty() {
            format!("the sentinel checks, lines {}", list(&detected_from))
        } else {
            "--sentinel".into()
        };
        let name =
            opts.master_name.clone().or(detected_name).ok_or_else(|| {
                ImportError::Shape("--master-name is needed with --sentinel".into())
            })?;
        let values: Vec<String> = sentinels.iter().map(|s| toml_str(s)).collect();
        plan.sentinel.push(Entry {
            key: "addrs",
            value: format!("[{}]", values.join(", ")),
            from,
        });
        plan.sentinel.push(Entry {
            key: "master_name",
            value: toml_str(&name),
            from: if opts.master_name.is_some() {
                "--master-name".into()
            } else {
                "the sentinel checks' SENTINEL get-master-addr-by-name".into()
            },
        });
        for pool in redis {
            for s in &pool.servers {
                ledger.not_needed(
                    s.line,
                    "in Sentinel mode the sentinels name the master and replicas",
                );
            }
        }
        return Ok(());
    }
    let mut servers: Vec<String> = Vec::new();
    let mut from: Vec<usize> = Vec::new();
    for pool in redis {
        for s in &pool.servers {
            match &s.addr {
                Ok(a) => {
                    ledger.used(s.line);
                    if !servers.contains(a) {
                        servers.push(a.clone());
                    }
                    from.push(s.line.number);
                }
                Err(why) => ledger.untranslated(s.line, why.clone()),
            }
        }
    }
    if servers.is_empty() {
        return Err(ImportError::Shape(
            "no server address to translate: the Redis backends have no usable `server` line"
                .into(),
        ));
    }
    let values: Vec<String> = servers.iter().map(|s| toml_str(s)).collect();
    plan.top.push(Entry {
        key: "servers",
        value: format!("[{}]", values.join(", ")),
        from: format!("server lines {}", list(&from)),
    });
    plan.advice.push(
        "static servers mode, as HAProxy ran: the master is the server reporting role:master. \
         Sentinel mode is recommended (writes are held, not lost, during a failover): run \
         import-haproxy again with --sentinel HOST:PORT (once per sentinel) --master-name NAME, \
         or replace `servers` by a [sentinel] table with addrs and master_name"
            .into(),
    );
    Ok(())
}

/// `stats`: the stats page's frontend, else the Prometheus exporter's.
fn stats<'a>(plan: &mut Plan, proxies: &[Proxy<'a>], ledger: &mut Ledger) {
    let http: Vec<&Proxy> = proxies
        .iter()
        .filter(|p| p.is_frontend() && p.is_http())
        .collect();
    let is_stats =
        |p: &Proxy| !p.own(&["stats", "enable"]).is_empty() || !p.own(&["stats", "uri"]).is_empty();
    let prometheus = |p: &Proxy<'a>| -> Option<&'a Line> {
        p.own(&["http-request", "use-service", "prometheus-exporter"])
            .first()
            .copied()
    };
    let chosen = http
        .iter()
        .find(|p| is_stats(p))
        .or_else(|| http.iter().find(|p| prometheus(p).is_some()));
    let Some(chosen) = chosen else {
        plan.top.push(Entry {
            key: "stats",
            value: toml_str("0.0.0.0:8404"),
            from: "the HAProxy config has no stats page; haproxy-rs serves one by default \
                   (`stats = \"off\"` turns it off)"
                .into(),
        });
        return;
    };
    let bind = chosen.own(&["bind"]).first().copied();
    let addr = bind.map(|b| model::bind_addr(b.word(1).split(',').next().unwrap_or(""), false));
    match (bind, addr) {
        (Some(b), Some(Ok(a))) => {
            plan.top.push(Entry {
                key: "stats",
                value: toml_str(&a),
                from: format!(
                    "line {}: {} (the page at /, /stats.json, /metrics, /healthz)",
                    b.number, b.raw
                ),
            });
            ledger.used(&chosen.section.header);
            ledger.used(b);
            if b.words.len() > 2 {
                options::bind(b, ledger);
            }
        }
        (Some(b), Some(Err(why))) => {
            ledger.untranslated(b, format!("`stats` keeps its default: {why}"))
        }
        _ => {}
    }
    for l in chosen
        .own(&["stats", "enable"])
        .into_iter()
        .chain(chosen.own(&["mode"]))
    {
        ledger.used(l);
    }
    for l in chosen.own(&["stats", "uri"]) {
        if l.word(2) == "/" {
            ledger.used(l);
        } else {
            ledger.not_needed(l, "the stats page is at /, its JSON at /stats.json");
        }
    }
    let served = |p: &Proxy| p.section.header.number == chosen.section.header.number;
    for p in &http {
        if let Some(l) = prometheus(p) {
            if served(p) {
                ledger.used(l);
            } else {
                ledger.untranslated(
                    &p.section.header,
                    "/metrics is served on the `stats` address",
                );
            }
        }
        if let Some(l) = p.own(&["monitor-uri"]).first() {
            ledger.untranslated(l, "/healthz is served on the `stats` address");
        }
    }
}

pub(super) fn entry(key: &'static str, value: String, line: &Line) -> Entry {
    Entry {
        key,
        value,
        from: format!("line {}: {}", line.number, super::masked(line)),
    }
}

pub(super) fn with_note(mut e: Entry, note: &str) -> Entry {
    e.from.push_str(note);
    e
}

/// `v` within `min..=max`, and a note when it had to move.
pub(super) fn clamp(v: u64, min: u64, max: u64) -> (u64, String) {
    if v < min {
        (min, format!(" (raised to haproxy-rs's least, {min})"))
    } else if v > max {
        (max, format!(" (lowered to haproxy-rs's most, {max})"))
    } else {
        (v, String::new())
    }
}

pub(super) fn list(numbers: &[usize]) -> String {
    let v: Vec<String> = numbers.iter().map(usize::to_string).collect();
    v.join(", ")
}

/// A TOML basic string.
pub(super) fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
