//! RESP3 client-side caching (`CLIENT TRACKING`): on connections of the client's own, with its
//! invalidations passed on, and an invalidation of everything when the master changes.

use std::time::Duration;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::{RedisServer, Topology};
use crate::pubsub::Raw;

const INVALIDATE_ALL: &str = ">2 $10 invalidate _ ";

fn invalidate(key: &str) -> String {
    format!(">2 $10 invalidate *1 ${} {key} ", key.len())
}

/// A RESP3 client with tracking on through `addr`, having read `key` (so it is tracked).
async fn tracking_client(addr: std::net::SocketAddr, key: &str) -> Raw {
    let mut c = Raw::connect(addr).await;
    c.send(&["HELLO", "3"]).await;
    assert!(c.frame().await.starts_with("%7"));
    c.send(&["CLIENT", "TRACKING", "on"]).await;
    assert_eq!(c.frame().await, "+OK ");
    c.send(&["GET", key]).await;
    c.frame().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_clients_get_their_invalidations() {
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()]).start(0).await;
    let mut writer = Raw::connect(proxy.addr()).await;
    writer.send(&["SET", "k", "1"]).await;
    assert_eq!(writer.frame().await, "+OK ");

    let mut c = tracking_client(proxy.addr(), "k").await;
    c.send(&["CLIENT", "TRACKINGINFO"]).await;
    let info = c.frame().await;
    assert!(info.contains("$5 flags ~1 $2 on"), "{info}");
    // Another client's write: the tracking client is told.
    writer.send(&["SET", "k", "2"]).await;
    writer.frame().await;
    assert_eq!(c.frame().await, invalidate("k"));
    // BCAST with a prefix: told of every key under it, read or not.
    c.send(&["CLIENT", "TRACKING", "off"]).await;
    assert_eq!(c.frame().await, "+OK ");
    c.send(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:"])
        .await;
    assert_eq!(c.frame().await, "+OK ");
    writer.send(&["SET", "user:1", "x"]).await;
    writer.frame().await;
    assert_eq!(c.frame().await, invalidate("user:1"));
    // Off again: an ordinary connection, nothing more pushed.
    c.send(&["CLIENT", "TRACKING", "off"]).await;
    assert_eq!(c.frame().await, "+OK ");
    writer.send(&["SET", "user:2", "x"]).await;
    writer.frame().await;
    c.send(&["PING"]).await;
    assert_eq!(c.frame().await, "+PONG ");
    assert_eq!(
        c.frame_within(Duration::from_millis(200)).await,
        None,
        "no push after tracking off"
    );

    // RESP2 has no pushes: REDIRECT would name a connection of the proxy's.
    let mut r2 = Raw::connect(proxy.addr()).await;
    r2.send(&["CLIENT", "TRACKING", "on"]).await;
    assert!(r2
        .frame()
        .await
        .starts_with("-ERR haproxy-rs supports CLIENT TRACKING with RESP3 only"),);
    r2.send(&["CLIENT", "TRACKING", "off"]).await;
    assert_eq!(r2.frame().await, "+OK ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_invalidates_everything_and_tracking_goes_on() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let mut writer = Raw::connect(proxy.addr()).await;
    writer.send(&["SET", "k", "1"]).await;
    assert_eq!(writer.frame().await, "+OK ");
    let mut c = tracking_client(proxy.addr(), "k").await;

    let new = topo.failover().await;
    eventually!(
        Duration::from_secs(15),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy follows the failover to {new}"
    );
    // The first command on the new master: the client is told to drop its whole cache (it
    // was filled from the old master), then gets its reply.
    c.send(&["GET", "k"]).await;
    let mut frames = vec![c.frame().await];
    if frames[0] == INVALIDATE_ALL {
        frames.push(c.frame().await);
    }
    assert!(frames.contains(&INVALIDATE_ALL.to_string()), "{frames:?}");
    assert_eq!(
        frames.last().map(String::as_str),
        Some("$1 1 "),
        "{frames:?}"
    );
    // Tracking goes on there: a write on the new master invalidates the key read from it.
    writer.send(&["SET", "k", "2"]).await;
    assert_eq!(writer.frame().await, "+OK ");
    eventually!(Duration::from_secs(5), {
        c.frame_within(Duration::from_millis(100)).await.as_deref()
            == Some(invalidate("k").as_str())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tracking_covers_keys_on_every_master() {
    let cluster = crate::harness::Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let keys = crate::harness::cluster::keys_on_every_master(&cluster.slot_map().await, "t", 1);
    let mut writer = Raw::connect(proxy.addr()).await;
    for k in &keys {
        writer.send(&["SET", k, "1"]).await;
        assert_eq!(writer.frame().await, "+OK ");
    }
    let mut c = tracking_client(proxy.addr(), &keys[0]).await;
    for k in &keys[1..] {
        c.send(&["GET", k]).await;
        assert_eq!(c.frame().await, "$1 1 ");
    }
    // A write on each master reaches the client as an invalidation of that key.
    for k in &keys {
        writer.send(&["SET", k, "2"]).await;
        writer.frame().await;
        assert_eq!(c.frame().await, invalidate(k));
    }
}
