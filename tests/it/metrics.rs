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
    promtool_check(addr).await;
}
