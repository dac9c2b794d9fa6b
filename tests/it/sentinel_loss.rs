//! Sentinel mode cut off from a majority of its sentinels (issue 15): writes are held, as during
//! a failover, since the master they would go to may be being replaced on the other side; reads
//! go on; once a majority answers again and names the master, the held writes run.
//!
//! Stopped sentinels (SIGSTOP) stand in for a partition here: their connections stay open and
//! silent, as across a cut link.

use std::time::Duration;

use crate::eventually;
use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::Topology;
use crate::security::{raw, send};
use crate::stats_http::stats_json;

/// Whether the stats JSON of the proxy at `stats` says writes are fenced for want of a sentinel
/// majority.
pub(crate) async fn fenced_for_sentinel_loss(stats: std::net::SocketAddr) -> bool {
    stats_json(stats).await["writes_fenced"]
        .as_str()
        .is_some_and(|c| c.starts_with("sentinel majority lost"))
}

/// A master with one replica and `sentinels` sentinels, and a proxy in front configured by `f`,
/// that has acknowledged `SET k 1`.
async fn proxy_with(
    sentinels: usize,
    f: impl FnOnce(&mut haproxy_rs::config::Config),
) -> (Topology, TestProxy) {
    let topo = Topology::builder()
        .replicas(1)
        .sentinels(sentinels)
        .start()
        .await;
    let proxy = ProxyBuilder::sentinel(&topo).with(f).start(1).await;
    assert_eq!(raw(proxy.addr(), &[&["SET", "k", "1"]]).await, ["+OK"]);
    (topo, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_held_while_a_majority_of_the_sentinels_is_silent() {
    let (topo, proxy) = proxy_with(3, |c| c.failover.sentinel_loss_fence_ms = 1000).await;
    let stats = stats_json(proxy.stats_addr()).await;
    assert_eq!(stats["on_sentinel_loss"], "fence-writes", "{stats}");
    assert!(stats["writes_fenced"].is_null(), "{stats}");

    topo.sentinels[0].stop();
    topo.sentinels[1].stop();
    eventually!(
        Duration::from_secs(10),
        fenced_for_sentinel_loss(proxy.stats_addr()).await,
        "the proxy fences writes once two of three sentinels are silent"
    );
    // A write waits; a read is answered.
    let mut writer = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut writer,
        &haproxy_rs::resp::encode_command(&["SET", "k", "2"]),
    )
    .await
    .expect("send");
    let mut reader = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    assert_eq!(send(&mut reader, &[&["GET", "k"]]).await, ["$1\r\n1"]);
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        crate::harness::redis::read_replies(&mut writer, 1),
    )
    .await;
    assert!(early.is_err(), "the write was held: {early:?}");
    let master = topo.master.addr().parse().expect("an address");
    assert_eq!(
        raw(master, &[&["GET", "k"]]).await,
        ["$1\r\n1"],
        "nothing reached the master"
    );

    topo.sentinels[0].cont();
    topo.sentinels[1].cont();
    let released = tokio::time::timeout(
        Duration::from_secs(8),
        crate::harness::redis::read_replies(&mut writer, 1),
    )
    .await
    .expect("the held write runs once the majority is back");
    assert_eq!(released, ["+OK"]);
    assert!(stats_json(proxy.stats_addr()).await["writes_fenced"].is_null());
}

/// Two of three sentinels silent (stopped) for less than the fence window: their links' requests
/// time out after a second and the links go down, but what counts is when each was last heard,
/// so writes are never fenced (they were, at the first timeout, whatever the window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_silent_for_less_than_the_window_never_fence_writes() {
    let (topo, proxy) = proxy_with(3, |c| c.failover.sentinel_loss_fence_ms = 4000).await;
    topo.sentinels[0].stop();
    topo.sentinels[1].stop();
    let stopped = tokio::time::Instant::now();
    // Silent for 2.5 s: past the links' 1 s request timeout, within the 4 s window (less the
    // 0.5 s between two questions a sentinel is asked).
    let mut fenced = None;
    while stopped.elapsed() < Duration::from_millis(2500) {
        let stats = stats_json(proxy.stats_addr()).await;
        if let Some(cause) = stats["writes_fenced"].as_str() {
            fenced.get_or_insert_with(|| (stopped.elapsed(), cause.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    topo.sentinels[0].cont();
    topo.sentinels[1].cont();
    assert_eq!(fenced, None, "writes fenced (after, why)");
    assert_eq!(raw(proxy.addr(), &[&["SET", "k", "2"]]).await, ["+OK"]);
}

/// `min_replicas_to_ack = 1`: once the master's only replica stops acknowledging (stopped, as
/// if cut off), writes the master took are answered `-NOREPLICAS` instead of `+OK`, since they
/// may exist on the master alone; acknowledged again once the replica is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_not_acknowledged_while_the_master_has_no_replica_in_sync() {
    let (topo, proxy) = proxy_with(1, |c| c.failover.min_replicas_to_ack = 1).await;
    topo.replicas[0].stop();
    eventually!(
        Duration::from_secs(15),
        raw(proxy.addr(), &[&["SET", "k", "2"]]).await[0].starts_with("-NOREPLICAS haproxy-rs"),
        "a write is refused its acknowledgement while the replica lags"
    );
    topo.replicas[0].cont();
    eventually!(
        Duration::from_secs(15),
        raw(proxy.addr(), &[&["SET", "k", "3"]]).await == ["+OK"],
        "acknowledged again once the replica is back"
    );
}
