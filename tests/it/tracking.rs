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

/// A planned failover, once the proxy routes to the new master.
async fn fail_over(topo: &Topology, proxy: &crate::harness::proxy::TestProxy) {
    let new = topo.failover().await;
    eventually!(
        Duration::from_secs(15),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy follows the failover to {new}"
    );
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_invalidates_everything_and_tracking_goes_on() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let mut writer = Raw::connect(proxy.addr()).await;
    writer.send(&["SET", "k", "1"]).await;
    assert_eq!(writer.frame().await, "+OK ");
    let mut c = tracking_client(proxy.addr(), "k").await;

    fail_over(&topo, &proxy).await;
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

/// Client-side caching with RESP2 (`REDIRECT`) through `addr`, writes through `writer`: what the
/// redirect target and the tracking client get, with each client id written as `<id>`.
async fn redirect_script(addr: std::net::SocketAddr, writer: std::net::SocketAddr) -> Vec<String> {
    let mut seen = Vec::new();
    let mut target = Raw::connect(addr).await;
    target.send(&["CLIENT", "ID"]).await;
    let id = target.frame().await;
    let id = id.trim_start_matches(':').trim().to_string();
    let ids = |f: String| f.replace(&format!(":{id} "), ":<id> ");
    let mut c = Raw::connect(addr).await;
    let mut w = Raw::connect(writer).await;
    w.send(&["SET", "rk", "1"]).await;
    w.frame().await;
    // Refused: the id of no client, not a number, an unknown option; answered without tracking.
    for cmd in [
        &["CLIENT", "TRACKING", "on", "REDIRECT", "987654"][..],
        &["CLIENT", "TRACKING", "on", "REDIRECT", "x"],
        &["CLIENT", "TRACKING", "on", "REDIRECT", &id, "maybe"],
        &["CLIENT", "TRACKING", "on", "REDIRECT", &id, "REDIRECT", &id],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "CACHING", "yes"],
    ] {
        c.send(cmd).await;
        seen.push(c.frame().await);
    }
    target.send(&["SUBSCRIBE", "__redis__:invalidate"]).await;
    seen.push(target.frame().await);
    c.send(&["CLIENT", "TRACKING", "on", "REDIRECT", &id]).await;
    seen.push(c.frame().await);
    for cmd in [
        &["CLIENT", "GETREDIR"][..],
        &["CLIENT", "TRACKINGINFO"],
        &["PING"],
        &["GET", "rk"],
    ] {
        c.send(cmd).await;
        seen.push(ids(c.frame().await));
    }
    // Another client's write: the target is told, as a message of the channel.
    w.send(&["SET", "rk", "2"]).await;
    w.frame().await;
    seen.push(target.frame().await);
    // A key not read is not tracked; FLUSHALL invalidates everything.
    w.send(&["SET", "other", "2"]).await;
    w.frame().await;
    w.send(&["FLUSHALL"]).await;
    w.frame().await;
    seen.push(target.frame().await);
    c.send(&["CLIENT", "TRACKING", "off"]).await;
    seen.push(c.frame().await);
    c.send(&["CLIENT", "GETREDIR"]).await;
    seen.push(c.frame().await);
    // `off` checks the id it names too (redis-py's client_tracking_off(id) sends it).
    c.send(&["CLIENT", "TRACKING", "off", "REDIRECT", &id])
        .await;
    seen.push(c.frame().await);
    c.send(&["CLIENT", "TRACKING", "off", "REDIRECT", "987654"])
        .await;
    seen.push(c.frame().await);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_tracking_redirects_to_a_client_of_the_proxy_as_redis_does() {
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()]).start(0).await;
    let direct: std::net::SocketAddr = server.addr().parse().unwrap();
    let redis = redirect_script(direct, direct).await;
    assert!(
        redis.contains(&"*3 $7 message $20 __redis__:invalidate *1 $2 rk ".to_string()),
        "{redis:?}"
    );
    println!("{redis:#?}");
    let through = redirect_script(proxy.addr(), proxy.addr()).await;
    assert_eq!(through, redis);
}

/// Frames `c` gets within a while, until one is `want`.
async fn until_frame(c: &mut Raw, want: &str) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(f) = c.frame_within(Duration::from_secs(5)).await {
        got.push(f);
        if got.last().map(String::as_str) == Some(want) {
            break;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_tracking_follows_a_failover() {
    const FLUSH: &str = "*3 $7 message $20 __redis__:invalidate $-1 ";
    const K: &str = "*3 $7 message $20 __redis__:invalidate *1 $1 k ";
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let mut writer = Raw::connect(proxy.addr()).await;
    writer.send(&["SET", "k", "1"]).await;
    assert_eq!(writer.frame().await, "+OK ");
    let mut target = Raw::connect(proxy.addr()).await;
    target.send(&["CLIENT", "ID"]).await;
    let id = target
        .frame()
        .await
        .trim_start_matches(':')
        .trim()
        .to_string();
    target.send(&["SUBSCRIBE", "__redis__:invalidate"]).await;
    target.frame().await;
    let mut c = Raw::connect(proxy.addr()).await;
    c.send(&["CLIENT", "TRACKING", "on", "REDIRECT", &id]).await;
    assert_eq!(c.frame().await, "+OK ");
    c.send(&["GET", "k"]).await;
    assert_eq!(c.frame().await, "$1 1 ");

    fail_over(&topo, &proxy).await;
    // The cache was filled from the old master: the target is told to drop all of it.
    c.send(&["GET", "k"]).await;
    assert_eq!(c.frame().await, "$1 1 ");
    let got = until_frame(&mut target, FLUSH).await;
    assert!(got.contains(&FLUSH.to_string()), "{got:?}");
    // Tracking goes on, redirected, on the new master.
    writer.send(&["SET", "k", "2"]).await;
    assert_eq!(writer.frame().await, "+OK ");
    let got = until_frame(&mut target, K).await;
    assert!(got.contains(&K.to_string()), "{got:?}");
    c.send(&["CLIENT", "GETREDIR"]).await;
    assert_eq!(c.frame().await, format!(":{id} "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_resp2_tracking_redirects_as_redis_does() {
    let server = RedisServer::start().await;
    let direct: std::net::SocketAddr = server.addr().parse().unwrap();
    let redis = redirect_script(direct, direct).await;
    let cluster = crate::harness::Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let through = redirect_script(proxy.addr(), proxy.addr()).await;
    assert_eq!(through, redis);
}
