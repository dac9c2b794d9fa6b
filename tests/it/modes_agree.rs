//! Behaviours the two modes once did differently (issue 13): each test runs the same steps in
//! static (Sentinel-style) mode and in cluster mode, and expects what Redis does.

use haproxy_rs::config::ReadPolicy;
use haproxy_rs::resp::encode_command;
use redis::AsyncCommands;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::cluster::keys_on_every_master;
use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::redis::read_replies;
use crate::harness::{Cluster, RedisServer};

/// GETs run by the master and by the replicas together.
async fn gets(masters: &[&RedisServer], replicas: &[&RedisServer]) -> (u64, u64) {
    let (mut m, mut r) = (0, 0);
    for s in masters {
        m += s.commandstats("get").await;
    }
    for s in replicas {
        r += s.commandstats("get").await;
    }
    (m, r)
}

/// Under `read_policy = "master"` the main endpoint reads from the master, and the read-only
/// endpoint (HAProxy's `:6380` replica backend) still from replicas.
async fn read_endpoint_reads_replicas(
    proxy: &TestProxy,
    keys: &[String],
    masters: &[&RedisServer],
    replicas: &[&RedisServer],
) {
    let before = gets(masters, replicas).await;
    let mut ro = proxy.read_client().await;
    for k in keys {
        let _: Option<String> = ro.get(k).await.unwrap();
    }
    let after = gets(masters, replicas).await;
    assert_eq!(
        after.0 - before.0,
        0,
        "no read of the read-only endpoint reached a master"
    );
    assert_eq!(
        after.1 - before.1,
        keys.len() as u64,
        "the replicas served every read"
    );

    let mut main = proxy.client().await;
    for k in keys {
        let _: Option<String> = main.get(k).await.unwrap();
    }
    let last = gets(masters, replicas).await;
    assert_eq!(
        last.0 - after.0,
        keys.len() as u64,
        "the main endpoint read from the master"
    );
    assert_eq!(last.1 - after.1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_endpoint_reads_replicas_under_read_policy_master_in_both_modes() {
    let master = RedisServer::start().await;
    let r1 = RedisServer::start_replica_of(&master).await;
    let r2 = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), r1.addr(), r2.addr()])
        .with(|c| c.routing.read_policy = ReadPolicy::Master)
        .start(2)
        .await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    read_endpoint_reads_replicas(&proxy, &keys, &[&master], &[&r1, &r2]).await;

    let cluster = Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(|c| c.routing.read_policy = ReadPolicy::Master)
        .start_cluster()
        .await;
    let map = cluster.slot_map().await;
    let keys = keys_on_every_master(&map, "ro", 5);
    let mut masters = Vec::new();
    let mut replicas = Vec::new();
    for o in map.owner_sets() {
        if masters.iter().all(|m: &&RedisServer| m.addr() != o.master) {
            masters.push(cluster.node(&o.master));
            replicas.extend(o.replicas.iter().map(|r| cluster.node(r)));
        }
    }
    read_endpoint_reads_replicas(&proxy, &keys, &masters, &replicas).await;
}

/// `WATCH k`, `SUBSCRIBE`, `UNSUBSCRIBE`, another client writes `k`, then `MULTI`/`SET`/`EXEC`:
/// Redis allows the subscription under `WATCH`, and the watch still aborts the transaction.
async fn watch_survives_a_subscription(proxy: &TestProxy, key: &str) {
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut send = Vec::new();
    for c in [
        vec!["WATCH", key],
        vec!["SUBSCRIBE", "news"],
        vec!["UNSUBSCRIBE", "news"],
    ] {
        send.extend_from_slice(&encode_command(&c));
    }
    s.write_all(&send).await.unwrap();
    let replies = read_replies(&mut s, 3).await;
    assert_eq!(replies[0], "+OK", "WATCH: {replies:?}");
    assert!(
        replies[1].contains("subscribe") && replies[2].contains("unsubscribe"),
        "SUBSCRIBE under WATCH is allowed, as in Redis: {replies:?}"
    );

    let mut other = proxy.client().await;
    let () = other.set(key, "theirs").await.unwrap();

    let mut send = Vec::new();
    for c in [vec!["MULTI"], vec!["SET", key, "mine"], vec!["EXEC"]] {
        send.extend_from_slice(&encode_command(&c));
    }
    s.write_all(&send).await.unwrap();
    let replies = read_replies(&mut s, 3).await;
    assert_eq!(replies, ["+OK", "+QUEUED", "*-1"], "the watch aborted EXEC");
    let v: String = other.get(key).await.unwrap();
    assert_eq!(v, "theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_under_watch_is_allowed_and_the_watch_holds_in_both_modes() {
    let master = RedisServer::start().await;
    let r1 = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), r1.addr()])
        .start(1)
        .await;
    watch_survives_a_subscription(&proxy, "watched").await;

    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    watch_survives_a_subscription(&proxy, "watched").await;
}
