//! Following Sentinel: after a failover, a client that keeps its connection writes to the new master.

use std::time::Duration;

use redis::AsyncCommands;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::Topology;

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
