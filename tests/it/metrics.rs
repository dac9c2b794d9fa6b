//! `/metrics` as Prometheus users read it (issue 16): latency histograms, the backend role as a
//! gauge of its own, errors by reason, the build; every family documented, and a real Prometheus
//! scraping the proxy.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::proxy::ProxyBuilder;
use crate::harness::{RedisServer, Topology};
use crate::stats_http::{get, metric, promtool_check, sets};

/// The sum of every sample of family member `name` (exactly: `name{..} v` or `name v`).
pub(crate) fn sum_of(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Issue 16: latency is a Prometheus histogram (aggregatable over several proxies) per listener
/// and per backend, with buckets from 50 us to 10 s, and `promtool` accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_latency_histograms_per_listener_and_backend() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    sets(&proxy, 20).await;
    let addr = proxy.stats_addr();
    let count =
        |m: &str, family: &str| sum_of(m, &format!("haproxy_rs_{family}_latency_seconds_count"));
    crate::eventually!(
        Duration::from_secs(10),
        {
            let (_, m) = get(addr, "/metrics").await;
            count(&m, "listener") >= 20.0 && count(&m, "backend") >= 20.0
        },
        "20 commands in both histograms: {}",
        get(addr, "/metrics").await.1
    );
    let (_, metrics) = get(addr, "/metrics").await;
    for family in ["listener", "backend"] {
        let name = format!("haproxy_rs_{family}_latency_seconds");
        assert!(
            metrics.contains(&format!("# TYPE {name} histogram\n")),
            "{metrics}"
        );
        for le in ["0.00005", "0.001", "10", "+Inf"] {
            let bucket = format!("{name}_bucket{{");
            let with_le = format!(",le=\"{le}\"}} ");
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(&bucket) && l.contains(&with_le)),
                "no le={le} bucket of {name}"
            );
        }
        let inf = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains("le=\"+Inf\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
        assert_eq!(inf, count(&metrics, family), "+Inf bucket is the count");
        assert!(sum_of(&metrics, &format!("{name}_sum")) > 0.0);
    }
    promtool_check(addr).await;
}

/// Every backend series of `/metrics` but the role's, by name and labels (no value).
fn backend_series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("haproxy_rs_backend_") && !l.starts_with("haproxy_rs_backend_role")
        })
        .filter_map(|l| Some(l.rsplit_once(' ')?.0.to_owned()))
        .collect()
}

/// Issue 16: a backend's role is `haproxy_rs_backend_role{backend,role}`, and no label of its other
/// series, so a failover flips two gauges and every other series keeps its identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_flips_the_role_gauges_and_keeps_every_backend_series() {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    let addr = proxy.stats_addr();
    let (old, replica) = (topo.master.addr(), topo.replicas[0].addr());
    let role = |m: &str, backend: &str, role: &str| {
        metric(
            m,
            &format!("haproxy_rs_backend_role{{backend=\"{backend}\",role=\"{role}\"}}"),
        )
    };
    let (_, before) = get(addr, "/metrics").await;
    assert_eq!(role(&before, &old, "master"), Some(1.0), "{before}");
    assert_eq!(
        metric(&before, "haproxy_rs_last_failover_timestamp_seconds"),
        Some(0.0)
    );
    assert_eq!(role(&before, &old, "replica"), Some(0.0));
    assert_eq!(role(&before, &replica, "replica"), Some(1.0));
    assert_eq!(role(&before, &replica, "master"), Some(0.0));
    let series = backend_series(&before);
    assert!(
        series.contains(&format!("haproxy_rs_backend_up{{backend=\"{old}\"}}")),
        "{before}"
    );

    let new = topo.failover().await;
    assert_eq!(new, replica);
    crate::eventually!(
        Duration::from_secs(30),
        {
            let (_, m) = get(addr, "/metrics").await;
            role(&m, &new, "master") == Some(1.0) && role(&m, &old, "master") == Some(0.0)
        },
        "the role gauges follow the failover: {}",
        get(addr, "/metrics").await.1
    );
    let (_, after) = get(addr, "/metrics").await;
    let now = backend_series(&after);
    let lost: Vec<&String> = series.difference(&now).collect();
    assert!(lost.is_empty(), "series gone after the failover: {lost:?}");
    // The dashboard's failover annotations and the last hold.
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = metric(&after, "haproxy_rs_last_failover_timestamp_seconds").unwrap_or(0.0);
    assert!((unix_now - at).abs() < 120.0, "{at}: {after}");
    let held = metric(&after, "haproxy_rs_last_failover_writes_held_seconds");
    assert!(
        held.is_some_and(|h| h > 0.0 && h < 60.0),
        "{held:?}: {after}"
    );
    promtool_check(addr).await;
}

/// `haproxy_rs_errors_total{addr="<addr>",reason="<reason>"}` summed over the listener names.
fn errors(metrics: &str, addr: std::net::SocketAddr, reason: &str) -> f64 {
    let labels = format!(",addr=\"{addr}\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .filter(|l| l.starts_with("haproxy_rs_errors_total{") && l.contains(&labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Sends bytes that are not RESP on a connection of its own: `-ERR Protocol error`, then the
/// proxy closes it.
async fn protocol_error(addr: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"*1\r\n+PING\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
}

/// Runs, on the proxy's endpoints, one command of each error reason a test can provoke: a write
/// on the read-only endpoint, a command the policy denies (`FLUSHALL`, denied by the caller's
/// config), a command's own error (`WRONGTYPE`) and a protocol error.
async fn one_error_of_each(proxy: &crate::harness::proxy::TestProxy) {
    async fn error_of(
        c: &mut redis::aio::MultiplexedConnection,
        args: &[&str],
    ) -> redis::RedisError {
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        cmd.query_async::<()>(c).await.unwrap_err()
    }
    let mut c = proxy.client().await;
    let () = redis::cmd("SET")
        .arg(&["s", "v"])
        .query_async(&mut c)
        .await
        .unwrap();
    let e = error_of(&mut c, &["LPUSH", "s", "x"]).await;
    assert_eq!(e.code(), Some("WRONGTYPE"), "{e}");
    let e = error_of(&mut c, &["FLUSHALL"]).await;
    assert!(e.to_string().contains("commands.deny"), "{e}");
    let e = error_of(&mut proxy.read_client().await, &["SET", "k", "v"]).await;
    assert_eq!(e.code(), Some("READONLY"), "{e}");
    protocol_error(proxy.addr()).await;
}

/// Checks that each error of [`one_error_of_each`] is counted once, by its reason, on the listener
/// that answered it, and that the per-listener total agrees.
async fn each_error_counted_once(proxy: &crate::harness::proxy::TestProxy) {
    let (main, read, stats) = (proxy.addr(), proxy.read_addr(), proxy.stats_addr());
    let expected = [
        (main, "command", 1.0),
        (main, "policy", 1.0),
        (main, "protocol", 1.0),
        (main, "readonly", 0.0),
        (read, "readonly", 1.0),
        (read, "policy", 0.0),
    ];
    crate::eventually!(
        Duration::from_secs(10),
        {
            let (_, m) = get(stats, "/metrics").await;
            expected.iter().all(|&(a, r, n)| errors(&m, a, r) == n)
        },
        "each error counted once by reason: {}",
        get(stats, "/metrics").await.1
    );
    let (_, m) = get(stats, "/metrics").await;
    for addr in [main, read] {
        let by_reason: f64 = [
            "readonly", "policy", "acl", "noauth", "tryagain", "protocol", "backend", "command",
            "other",
        ]
        .iter()
        .map(|r| errors(&m, addr, r))
        .sum();
        let total = m
            .lines()
            .filter(|l| l.starts_with("haproxy_rs_listener_errors_total{"))
            .filter(|l| l.contains(&format!("addr=\"{addr}\"")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
        assert_eq!(
            by_reason, total,
            "{addr}: the reasons add up to the total\n{m}"
        );
    }
    promtool_check(stats).await;
}

/// Issue 16: errors are counted by reason, the proxy's own refusals included (before, a write on
/// the read-only endpoint or a denied command was not counted at all in Sentinel/static mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_reason_with_the_proxys_refusals() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .with(|c| c.commands.deny = vec!["flushall".into()])
        .start(1)
        .await;
    one_error_of_each(&proxy).await;
    each_error_counted_once(&proxy).await;
}

/// Issue 16, cluster mode: the same reasons, each counted once (a protocol error was counted twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_counts_errors_by_reason_once_each() {
    let cluster = crate::harness::Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(|c| c.commands.deny = vec!["flushall".into()])
        .start_cluster()
        .await;
    one_error_of_each(&proxy).await;
    each_error_counted_once(&proxy).await;
}

/// A Prometheus server of its own (Debian's `prometheus`), scraping `target` every second, with
/// its storage in a temporary directory; killed when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: haproxy-rs\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = crate::harness::ports::free_port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The `data.result` of an instant query (empty while Prometheus is not up, or has no data).
    async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let mut q = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                q.push(char::from(b));
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        // Not up yet: `get` expects a server that listens.
        if tokio::net::TcpStream::connect(self.addr).await.is_err() {
            return Vec::new();
        }
        let path = format!("/api/v1/query?query={q}");
        let Ok((_, body)) =
            tokio::time::timeout(Duration::from_secs(5), get(self.addr, &path)).await
        else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The log, for a failure message.
    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The families of docs/metrics.md's tables.
fn documented_families() -> BTreeSet<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_owned))
        .filter(|n| n.starts_with("haproxy_rs_"))
        .collect()
}

/// Issue 16: every family the running proxy exports is documented, `promtool` accepts them, and a
/// real Prometheus scrapes the proxy and answers `rate()` and `histogram_quantile()` over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_proxy_and_answers_rate_queries() {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    let stats = proxy.stats_addr();
    let (_, metrics) = get(stats, "/metrics").await;
    let documented = documented_families();
    for name in metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
    {
        assert!(
            documented.contains(name),
            "{name} is not in docs/metrics.md"
        );
    }
    promtool_check(stats).await;
    if !crate::stats_http::prometheus_tool("prometheus") {
        return;
    }
    let prometheus = Prometheus::start(stats);
    // Commands keep coming while Prometheus scrapes, so the rates are above zero.
    let traffic = tokio::spawn({
        let mut c = proxy.client().await;
        async move {
            loop {
                let _: redis::RedisResult<()> = redis::cmd("SET")
                    .arg("k")
                    .arg("v")
                    .query_async(&mut c)
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let rate = "sum by (listener) (rate(haproxy_rs_listener_commands_total[10s])) > 0";
    let p99 = "histogram_quantile(0.99, sum by (le) (rate(haproxy_rs_listener_latency_seconds_bucket[10s]))) > 0";
    let master = "haproxy_rs_backend_role{role=\"master\"} == 1";
    crate::eventually!(
        Duration::from_secs(30),
        !prometheus.query(rate).await.is_empty()
            && !prometheus.query(p99).await.is_empty()
            && prometheus.query(master).await.len() == 1,
        "Prometheus answers {rate}, {p99} and {master}: {:?}\n{}",
        prometheus.query("up").await,
        prometheus.log()
    );
    traffic.abort();
}

/// The `haproxy_rs_*` names a text uses, each as its family (`_bucket`, `_sum`, `_count` taken
/// off a histogram's).
pub(crate) fn families_used(text: &str, documented: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("haproxy_rs_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| documented.contains(*f)))
            .map_or(name.clone(), str::to_owned);
        out.insert(family);
    }
    out
}

/// `what` (`text`) names only `haproxy_rs_*` series that docs/metrics.md lists (the proxy's).
fn assert_only_exported_series(text: &str, what: &str) {
    let documented = documented_families();
    let unknown: Vec<String> = families_used(text, &documented)
        .into_iter()
        .filter(|f| !documented.contains(f))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} uses series the proxy does not export: {unknown:?}"
    );
}

/// Issue 16: `deploy/monitoring/alerts.yml` passes `promtool check rules`, its unit tests
/// (`alerts_test.yml`) pass `promtool test rules`, and it uses only series the proxy exports.
#[test]
fn alert_rules_check_and_pass_their_unit_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    assert_only_exported_series(&rules, "alerts.yml");
    if !crate::stats_http::prometheus_tool("promtool") {
        return;
    }
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every string under the key `key` in `v`, depth first.
fn strings_under(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                match child {
                    serde_json::Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_under(child, key, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| strings_under(i, key, out)),
        _ => {}
    }
}

/// Issue 16: `deploy/monitoring/grafana-dashboard.json` has the panels the issue names and the
/// failover annotations, its queries use only series the proxy exports, and each parses as
/// PromQL (`promtool check rules` over them as recording rules, Grafana's variables filled in).
#[test]
fn the_grafana_dashboard_queries_only_exported_series() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let text = std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut titles = Vec::new();
    strings_under(&dashboard["panels"], "title", &mut titles);
    for wanted in [
        "Throughput per listener",
        "Latency per listener (p50, p99)",
        "Errors by reason",
        "Backends up",
        "Backend roles (1 = in that role)",
        "Held requests",
        "Writes held in the last failover",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "{wanted}: {titles:?}");
    }
    let annotations = dashboard["annotations"]["list"].as_array().unwrap();
    assert!(
        annotations.iter().any(|a| a["expr"]
            .as_str()
            .is_some_and(|e| e.contains("haproxy_rs_failovers_total"))),
        "failovers as annotations"
    );
    let mut exprs = Vec::new();
    strings_under(&dashboard, "expr", &mut exprs);
    assert_only_exported_series(&exprs.join("\n"), "the dashboard");
    if !crate::stats_http::prometheus_tool("promtool") {
        return;
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$job", ".*");
        let quoted = serde_json::to_string(&e).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the dashboard's queries as PromQL: {}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `haproxy_rs_command_<family>{command="<name>"}`'s value, if exported.
fn command_series(metrics: &str, family: &str, name: &str) -> Option<f64> {
    let prefix = format!("haproxy_rs_command_{family}{{command=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

/// Issue 16: calls, errors and latency per command, as `INFO commandstats`, for the commands
/// clients call, in both endpoints' traffic, pipelined or not, the proxy's refusals included.
async fn commands_counted_per_command(proxy: &crate::harness::proxy::TestProxy) {
    use crate::security::raw;
    let mut c = proxy.client().await;
    for i in 0..5 {
        let () = redis::cmd("SET")
            .arg(&[format!("k{i}"), "v".into()])
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // One pipeline: two GETs, an INCR that fails, a GET of a value that holds "\r\n-", an
    // unknown command (not counted per command) and a CONFIG GET (a subcommand).
    let () = redis::cmd("SET")
        .arg(&["dash", "a\r\n-b"])
        .query_async(&mut c)
        .await
        .unwrap();
    let replies = raw(
        proxy.addr(),
        &[
            &["GET", "k0"],
            &["GET", "dash"],
            &["INCR", "k1"],
            &["NOSUCHCOMMAND"],
            &["CONFIG", "GET", "maxmemory"],
        ],
    )
    .await;
    assert!(
        replies.iter().any(|r| r.contains("not an integer")),
        "{replies:?}"
    );
    // A write on the read-only endpoint: the proxy's refusal is the command's error.
    let e = redis::cmd("SET")
        .arg(&["r", "v"])
        .query_async::<()>(&mut proxy.read_client().await)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("READONLY"), "{e}");
    let stats = proxy.stats_addr();
    let expected = [
        ("set", 7.0, 1.0),
        ("get", 2.0, 0.0),
        ("incr", 1.0, 1.0),
        ("config|get", 1.0, 0.0),
    ];
    crate::eventually!(
        Duration::from_secs(10),
        {
            let (_, m) = get(stats, "/metrics").await;
            expected.iter().all(|&(name, calls, errors)| {
                command_series(&m, "calls_total", name) == Some(calls)
                    && command_series(&m, "errors_total", name) == Some(errors)
            })
        },
        "per-command calls and errors: {}",
        get(stats, "/metrics").await.1
    );
    let (_, m) = get(stats, "/metrics").await;
    assert!(!m.contains("nosuchcommand"), "unknown names make no series");
    assert!(
        command_series(&m, "calls_total", "lpush").is_none(),
        "commands never called are not listed"
    );
    let set_latency = sum_of(
        &m,
        "haproxy_rs_command_latency_seconds_count{command=\"set\"}",
    );
    assert_eq!(set_latency, 7.0, "{m}");
    let (_, json) = get(stats, "/stats.json").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["commands"][0]["name"], "set",
        "most called first: {json}"
    );
    assert_eq!(json["commands"][0]["calls"], 7);
    promtool_check(stats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_counted_per_command_as_commandstats() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .start(1)
        .await;
    commands_counted_per_command(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_counts_commands_per_command() {
    let cluster = crate::harness::Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    commands_counted_per_command(&proxy).await;
}
