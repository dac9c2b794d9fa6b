//! The stats endpoints answer valid HTML, JSON and Prometheus text.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::proxy::ProxyBuilder;
use crate::harness::RedisServer;

/// GET `path`; returns (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
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
