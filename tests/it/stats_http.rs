//! The stats endpoints answer valid HTML, JSON and Prometheus text.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::proxy::ProxyBuilder;
use crate::harness::{Cluster, RedisServer};

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

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_endpoints_serve_html_json_and_prometheus() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .start(1)
        .await;
    let mut c = proxy.client().await;
    for i in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async(&mut c)
            .await
            .unwrap();
    }
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
    assert!(families >= 5, "metric families: {families}");
    assert!(metrics.contains("haproxy_rs_"));

    let (status, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    assert_eq!(get(addr, "/nope").await.0, 404);
}

/// `/stats.json`, parsed (`Null` when it does not answer valid JSON).
async fn stats_json(addr: std::net::SocketAddr) -> serde_json::Value {
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
fn metric(metrics: &str, series: &str) -> Option<f64> {
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
