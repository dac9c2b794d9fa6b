//! The stats endpoints answer valid HTML, JSON and Prometheus text.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::{Cluster, RedisServer, Topology};

/// GET `path`; returns (status, body).
pub(crate) async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = request(addr, "GET", path, &["Host: test"]).await;
    (status, body)
}

/// `method path` with these header lines (each `Name: value`); returns (status, head, body).
pub(crate) async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    (status, head.to_string(), body.to_string())
}

/// `n` `SET`s through the proxy, one after the other, on one connection.
pub(crate) async fn sets(proxy: &TestProxy, n: usize) {
    let mut c = proxy.client().await;
    for i in 0..n {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks every line of a Prometheus text exposition (names, `# HELP`/`# TYPE`, values);
/// returns how many families it declares.
fn check_exposition(metrics: &str) -> usize {
    let mut families = 0;
    for line in metrics.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.split_whitespace();
            let kind = w.next().unwrap();
            assert!(kind == "HELP" || kind == "TYPE", "{line}");
            assert!(is_metric_name(w.next().unwrap()), "{line}");
            families += usize::from(kind == "TYPE");
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap();
        let name = name_labels.split('{').next().unwrap();
        assert!(is_metric_name(name), "bad name in {line}");
        assert!(
            value.parse::<f64>().is_ok() || value == "NaN",
            "bad value in {line}"
        );
    }
    families
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_endpoints_serve_html_json_and_prometheus() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .start(1)
        .await;
    sets(&proxy, 10).await;
    let addr = proxy.stats_addr();

    let (status, html) = get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<html") && html.contains("</html>"),
        "not HTML"
    );
    assert!(html.contains(&master.addr()) && html.contains(&replica.addr()));

    let (status, json) = get(addr, "/stats.json").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["master"].as_str(), Some(master.addr().as_str()));
    let commands: u64 = v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["commands"].as_u64())
        .sum();
    assert!(commands >= 10, "commands counted: {commands}");

    let (status, metrics) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let families = check_exposition(&metrics);
    assert!(families >= 5, "metric families: {families}");
    assert!(metrics.contains("haproxy_rs_"));

    let (status, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    assert_eq!(get(addr, "/nope").await.0, 404);
}

/// `/stats.json`, parsed (`Null` when it does not answer valid JSON).
pub(crate) async fn stats_json(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/stats.json").await.1).unwrap_or_default()
}

/// The addresses of the nodes with `role` in a `/stats.json` cluster view.
fn nodes_with_role(v: &serde_json::Value, role: &str) -> BTreeSet<String> {
    let nodes = v["cluster"]["view"]["nodes"].as_array().cloned();
    nodes
        .unwrap_or_default()
        .iter()
        .filter(|n| n["role"] == role)
        .filter_map(|n| n["addr"].as_str().map(str::to_owned))
        .collect()
}

/// The value of the one sample of `series` (name and labels exactly as written) in `/metrics`.
pub(crate) fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_the_cluster_slot_map_nodes_and_counters() {
    let cluster = Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster).start(0).await;
    let mut c = proxy.client().await;
    // "a", "b" and "c" hash to three slots: MSET and MGET are split.
    let _: () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2", "c", "3"])
        .query_async(&mut c)
        .await
        .unwrap();
    let got: Vec<String> = redis::cmd("MGET")
        .arg(&["a", "b", "c"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(got, ["1", "2", "3"]);
    let addr = proxy.stats_addr();

    crate::eventually!(
        Duration::from_secs(15),
        {
            let v = stats_json(addr).await;
            v["cluster"]["view"]["slots_served"] == 16384
                && nodes_with_role(&v, "master").len() == 3
                && nodes_with_role(&v, "replica").len() == 3
        },
        "/stats.json shows 16384 slots served by 3 masters with 3 replicas"
    );
    let v = stats_json(addr).await;
    assert_eq!(v["mode"], "cluster");
    let masters = nodes_with_role(&v, "master");
    let mut all = masters.clone();
    all.extend(nodes_with_role(&v, "replica"));
    assert_eq!(all, cluster.addrs().into_iter().collect());
    for n in v["cluster"]["view"]["nodes"].as_array().unwrap() {
        let slots = n["slots"].as_u64().unwrap();
        assert!(
            (5000..6000).contains(&slots),
            "a third of the slots each: {n}"
        );
        if n["role"] == "replica" {
            assert!(masters.contains(n["master"].as_str().unwrap()), "{n}");
        }
    }
    let c = &v["cluster"];
    assert!(c["refreshes"].as_u64() >= Some(1) && c["last_refresh_ms"].is_u64());
    assert!(c["split_commands"].as_u64() >= Some(2), "{c}");

    let (status, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let (status, metrics) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "haproxy_rs_cluster_slots_served"),
        Some(16384.0)
    );
    assert_eq!(
        metric(&metrics, "haproxy_rs_cluster_nodes{role=\"master\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&metrics, "haproxy_rs_cluster_nodes{role=\"replica\"}"),
        Some(3.0)
    );
    assert!(metric(&metrics, "haproxy_rs_cluster_split_commands_total") >= Some(2.0));
    assert!(metric(&metrics, "haproxy_rs_cluster_refreshes_total") >= Some(1.0));
    for series in [
        "haproxy_rs_cluster_redirections_total{kind=\"moved\"}",
        "haproxy_rs_cluster_redirections_total{kind=\"ask\"}",
        "haproxy_rs_cluster_retries_total",
        "haproxy_rs_cluster_retries_exhausted_total",
        "haproxy_rs_cluster_refresh_failures_total",
    ] {
        assert!(
            metric(&metrics, series).is_some(),
            "no {series} in /metrics"
        );
    }

    let (status, html) = get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(html.contains("<h2>Cluster</h2>") && html.contains("16384 / 16384"));
    assert!(!html.contains("current master"), "no sentinel-only rows");
    for node in cluster.addrs() {
        assert!(html.contains(&node), "the page lists {node}");
    }
}

/// Whether `tool` (a binary of Debian's `prometheus` package) can be run: with `CI=true` it
/// must be (`scripts/test.sh` installs it), elsewhere a test without it skips that check.
pub(crate) fn prometheus_tool(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "{tool} is not installed (apt-get install prometheus; scripts/test.sh does)"
    );
    found
}

/// `promtool check metrics` on `/metrics`, when promtool is installed (`apt-get install
/// prometheus`; required with `CI=true`); nothing otherwise.
pub(crate) async fn promtool_check(addr: std::net::SocketAddr) {
    use std::process::Stdio;
    if !prometheus_tool("promtool") {
        return;
    }
    let (_, metrics) = get(addr, "/metrics").await;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(metrics.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The backends `/metrics` has a `haproxy_rs_backend_up` sample of.
async fn backends_in_metrics(addr: std::net::SocketAddr) -> BTreeSet<String> {
    let (_, metrics) = get(addr, "/metrics").await;
    check_exposition(&metrics);
    metrics
        .lines()
        .filter_map(|l| {
            l.strip_prefix("haproxy_rs_backend_up{backend=\"")?
                .split('"')
                .next()
        })
        .map(str::to_owned)
        .collect()
}

/// Backend `backend` in `/stats.json` (`Null` when it is not listed).
pub(crate) async fn backend_json(addr: std::net::SocketAddr, backend: &str) -> serde_json::Value {
    let v = stats_json(addr).await;
    let backends = v["backends"].as_array().cloned().unwrap_or_default();
    backends
        .into_iter()
        .find(|b| b["addr"] == backend)
        .unwrap_or_default()
}

/// The replicas the proxy's routing table names.
fn table_replicas(proxy: &TestProxy) -> Vec<String> {
    let table = proxy.proxy.table.load();
    table
        .replicas
        .iter()
        .map(|b| b.addr().to_string())
        .collect()
}

/// A master, two replicas and one sentinel that flags a dead server down after a second, and a
/// proxy (ready, with both replicas) that forgets a backend a second after it left the topology.
pub(crate) async fn forgetting_in_a_second() -> (Topology, TestProxy) {
    let topo = Topology::builder()
        .replicas(2)
        .sentinels(1)
        .quorum(1)
        .down_after(Duration::from_millis(1000))
        .start()
        .await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c| c.stats_forget_after_secs = 1)
        .start(2)
        .await;
    (topo, proxy)
}

/// Issue 12: the stats forget a backend that left the topology after `stats_forget_after_secs`,
/// so the series do not grow without bound, and keep one that is only down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_forget_a_replica_sentinel_no_longer_lists_and_keep_one_that_is_down() {
    let (topo, proxy) = forgetting_in_a_second().await;
    let addr = proxy.stats_addr();
    let (master, kept, gone) = (
        topo.master.addr(),
        topo.replicas[0].addr(),
        topo.replicas[1].addr(),
    );
    let all: BTreeSet<String> = [&master, &kept, &gone].into_iter().cloned().collect();
    crate::eventually!(
        Duration::from_secs(10),
        backends_in_metrics(addr).await == all,
        "/metrics has the master and both replicas"
    );

    // Killed, the replica is flagged s_down: the proxy stops routing to it, but Sentinel still
    // lists it, so it stays on the stats, showing down.
    topo.replicas[1].kill();
    crate::eventually!(
        Duration::from_secs(20),
        !table_replicas(&proxy).contains(&gone),
        "the proxy drops the s_down replica {gone} from its routing table"
    );
    // Down for longer than the grace period and a few of the proxy's re-queries of Sentinel
    // (every 500 ms): still there (were it forgotten, it would be missing from /stats.json).
    let down_for = |b: &serde_json::Value| b["last_change_age_ms"].as_u64().unwrap_or(0);
    crate::eventually!(
        Duration::from_secs(20),
        {
            let b = backend_json(addr, &gone).await;
            b.is_null() || (b["state"] == "DOWN" && down_for(&b) > 2500)
        },
        "{gone} shows DOWN for 2.5 s: {}",
        backend_json(addr, &gone).await
    );
    let b = backend_json(addr, &gone).await;
    assert_eq!(b["state"], "DOWN", "a member that is down stays: {b}");
    assert!(b["left_topology_age_ms"].is_null(), "still a member: {b}");
    let (_, metrics) = get(addr, "/metrics").await;
    let up = format!("haproxy_rs_backend_up{{backend=\"{gone}\"}}");
    assert_eq!(metric(&metrics, &up), Some(0.0), "{metrics}");
    promtool_check(addr).await;

    // SENTINEL RESET forgets the replicas it cannot see: the stats follow a second later. (It
    // lists no replica at all until it has asked the master again, seconds later; the surviving
    // replica stays a member meanwhile because the master reports it connected, but it is out
    // of the routing table until Sentinel lists it again: hence one condition over the three
    // endpoints, which waits for that.)
    topo.reset_sentinels().await;
    let row = |addr: &str| format!("<td class=\"l\">{addr}</td>");
    let shown = || async {
        let metrics = backends_in_metrics(addr).await;
        let (gone_json, kept_json) = (
            backend_json(addr, &gone).await,
            backend_json(addr, &kept).await,
        );
        let (_, html) = get(addr, "/").await;
        !metrics.contains(&gone)
            && metrics.contains(&kept)
            && metrics.contains(&master)
            && gone_json.is_null()
            && kept_json["state"] == "UP"
            && kept_json["left_topology_age_ms"].is_null()
            && !html.contains(&row(&gone))
            && html.contains(&row(&kept))
    };
    crate::eventually!(
        Duration::from_secs(20),
        shown().await,
        "{gone} leaves /metrics, /stats.json and the page; {kept} (a member again) and {master} stay: {:?}",
        backends_in_metrics(addr).await
    );
    promtool_check(addr).await;
}

/// Issue 12, cluster mode: a failed node stays on the stats (showing down) while the cluster
/// still knows it, and leaves them `stats_forget_after_secs` after every node forgot it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_keep_a_failed_cluster_node_and_forget_it_once_the_cluster_does() {
    let cluster = Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(|c| c.stats_forget_after_secs = 1)
        .start_cluster()
        .await;
    let addr = proxy.stats_addr();
    let all: BTreeSet<String> = cluster.addrs().into_iter().collect();
    crate::eventually!(
        Duration::from_secs(10),
        backends_in_metrics(addr).await == all,
        "/metrics has every node: {:?}",
        backends_in_metrics(addr).await
    );
    let map = proxy.cluster_map();
    let gone = map
        .slots
        .owner_sets()
        .iter()
        .find_map(|o| o.replicas.first().cloned())
        .expect("a replica");
    let node = cluster.node(&gone);
    let id = node.node_id().await;

    // Failed, the replica leaves CLUSTER SLOTS and the proxy's map, but CLUSTER NODES still
    // lists it: it stays, showing down, over refreshes well past the grace period.
    node.kill();
    crate::eventually!(
        Duration::from_secs(20),
        !proxy.cluster_map().node_addrs().contains(&gone),
        "the proxy's map drops the failed replica {gone}"
    );
    let dropped = tokio::time::Instant::now();
    let refreshes = proxy.cluster_stats().refreshes;
    crate::eventually!(
        Duration::from_secs(20),
        {
            let b = backend_json(addr, &gone).await;
            !b["left_topology_age_ms"].is_null()
                || (proxy.cluster_stats().refreshes >= refreshes + 2
                    && dropped.elapsed() > Duration::from_millis(2500))
        },
        "two refreshes and 2.5 s after the map dropped {gone}"
    );
    let b = backend_json(addr, &gone).await;
    assert_eq!(
        b["state"], "DOWN",
        "a failed node the cluster knows stays: {b}"
    );
    assert!(b["left_topology_age_ms"].is_null(), "still a member: {b}");

    for other in cluster.nodes.iter().filter(|n| n.addr() != gone) {
        let mut c = other.client().await;
        let () = redis::cmd("CLUSTER")
            .arg("FORGET")
            .arg(&id)
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("CLUSTER FORGET on {}: {e}", other.addr()));
    }
    let rest: BTreeSet<String> = all.iter().filter(|a| **a != gone).cloned().collect();
    crate::eventually!(
        Duration::from_secs(20),
        backends_in_metrics(addr).await == rest,
        "{gone} leaves /metrics, the other nodes stay: {:?}",
        backends_in_metrics(addr).await
    );
    assert!(backend_json(addr, &gone).await.is_null());
    promtool_check(addr).await;
}
