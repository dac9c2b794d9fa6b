//! Following Sentinel: after a failover, a client that keeps its connection writes to the new master.

use std::time::Duration;

use redis::AsyncCommands;

use haproxy_rs::config::Config;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::{Sentinel, Topology};
use crate::stats_http::stats_json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sentinel_failover_writes_reach_the_new_master() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let old = topo.master.addr();
    assert_eq!(proxy.master().as_deref(), Some(old.as_str()));
    let mut c = proxy.client().await;
    let _: () = c.set("before", "1").await.unwrap();

    let new = topo.failover().await;
    assert_ne!(new, old);
    eventually!(
        Duration::from_secs(30),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy routes writes to {new}"
    );
    // Same client connection: its writes now land on the new master.
    let new_master = topo.server_by_addr(&new);
    let sets_before = new_master.commandstats("set").await;
    let _: () = c.set("after", "2").await.unwrap();
    assert_eq!(new_master.commandstats("set").await, sets_before + 1);
    let mut direct = new_master.client().await;
    let v: String = direct.get("after").await.unwrap();
    assert_eq!(v, "2");
    let failovers = proxy.proxy.stats.snapshot().failovers;
    assert!(
        !failovers.is_empty(),
        "the failover is in the stats history"
    );
}

/// Whether `sentinel` has a client connection at least `secs` old whose last command, at most a
/// second ago, was `SENTINEL MASTER`: a proxy link up all along and still asking.
async fn asks_over_one_connection(sentinel: &Sentinel, secs: u64) -> bool {
    let mut c = sentinel.client().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    list.lines().any(|client| {
        let field = |name: &str| client.split(' ').find_map(|f| f.strip_prefix(name));
        let number = |name: &str| field(name).and_then(|n| n.parse::<u64>().ok());
        field("cmd=") == Some("sentinel|master")
            && number("age=").is_some_and(|a| a >= secs)
            && number("idle=").is_some_and(|i| i <= 1)
    })
}

/// Issue 13, item 7: a master name no sentinel monitors is reported as that on `/stats.json`
/// (and logged once), not as sentinel links going down and up; the links stay up and keep
/// asking, so that the proxy follows the master once the sentinels monitor it under that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_name_no_sentinel_knows_is_reported_and_the_links_stay_up() {
    let topo = Topology::start(0, 2).await;
    let name = "no-such-master";
    let mut addrs = topo.sentinel_addrs();
    let proxy = ProxyBuilder::from_config(Config::for_sentinels(addrs.clone(), name))
        .launch()
        .await;
    addrs.sort();
    let expected = format!(
        "NO SENTINEL KNOWS A MASTER NAMED '{name}' (asked {}): check --master-name",
        addrs.join(", ")
    );
    let status = || async {
        let v = stats_json(proxy.stats_addr()).await;
        v["topology_status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    eventually!(
        Duration::from_secs(10),
        status().await.starts_with(&expected),
        "/stats.json says no sentinel knows '{name}': {}",
        status().await
    );
    let links = || {
        let snap = proxy.proxy.stats.snapshot();
        snap.sentinels
            .iter()
            .map(|s| (s.addr.clone(), s.connected, s.connected_change_ms))
            .collect::<Vec<_>>()
    };
    let before = links();
    assert!(before.iter().all(|(_, up, _)| *up), "{before:?}");
    for s in &topo.sentinels {
        eventually!(
            Duration::from_secs(10),
            asks_over_one_connection(s, 4).await,
            "the proxy keeps asking {} over one connection",
            s.addr()
        );
    }
    assert_eq!(links(), before, "no sentinel link went down");
    assert_eq!(proxy.master(), None);

    for s in &topo.sentinels {
        let mut c = s.client().await;
        let () = redis::cmd("SENTINEL")
            .arg("MONITOR")
            .arg(name)
            .arg("127.0.0.1")
            .arg(topo.master.port())
            .arg(1)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    eventually!(
        Duration::from_secs(15),
        proxy.master() == Some(topo.master.addr()),
        "the proxy follows '{name}' once the sentinels monitor it"
    );
    assert_eq!(status().await, "following 2 sentinels");
}
