//! Keyspace notifications in cluster mode (issue 14, item 4): each Redis Cluster node publishes
//! the events of its own keys only, so a subscription to `__keyspace@*`/`__keyevent@*` names (or
//! a pattern that can match them) is placed on every master, and follows the masters as they
//! change; the client gets one confirmation, and each event once.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::eventually;
use crate::harness::cluster::keys_on_every_master;
use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::Cluster;
use crate::pubsub::Raw;
use crate::security::query;

/// `CONFIG SET notify-keyspace-events KEA` through `proxy` (which sends it to every master).
async fn notify_all(proxy: std::net::SocketAddr) {
    let set = crate::security::raw(
        proxy,
        &[&["CONFIG", "SET", "notify-keyspace-events", "KEA"]],
    );
    assert_eq!(set.await, ["+OK"]);
}

/// Reads frames until each of `wanted` has been seen in one; every frame read, in order.
async fn frames_until_all(sub: &mut Raw, wanted: &[String]) -> Vec<String> {
    let mut got: Vec<String> = Vec::new();
    while !wanted
        .iter()
        .all(|w| got.iter().any(|f| f.contains(w.as_str())))
    {
        match sub.frame_within(Duration::from_secs(5)).await {
            Some(f) => got.push(f),
            None => panic!("missing some of {wanted:?} within 5 s; got {got:?}"),
        }
    }
    got
}

/// Three masters with keyspace events on, a subscriber through the proxy to `pattern` (one
/// confirmation), and a key `<prefix>:<n>` set on each master by another client: the proxy, the
/// subscriber, the keys, and the other client.
async fn a_key_set_on_every_master(
    cluster: &Cluster,
    pattern: &str,
    prefix: &str,
) -> (TestProxy, Raw, Vec<String>, MultiplexedConnection) {
    let proxy = ProxyBuilder::cluster(cluster).start_cluster().await;
    notify_all(proxy.addr()).await;
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["PSUBSCRIBE", pattern]).await;
    assert_eq!(
        sub.frame().await,
        format!("*3 $10 psubscribe ${} {pattern} :1 ", pattern.len()),
        "one confirmation, as from one server"
    );
    let keys = keys_on_every_master(&cluster.slot_map().await, prefix, 1);
    let mut c = proxy.client().await;
    for key in &keys {
        let () = query(&mut c, &["SET", key, "v"]).await.unwrap();
    }
    (proxy, sub, keys, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyevents_of_every_master_reach_one_subscriber() {
    let cluster = Cluster::start(3, 0).await;
    let (_proxy, mut sub, keys, mut c) =
        a_key_set_on_every_master(&cluster, "__keyevent@0__:*", "ev").await;
    let got = frames_until_all(&mut sub, &keys).await;
    for key in &keys {
        let event = format!(
            "*4 $8 pmessage $16 __keyevent@0__:* $18 __keyevent@0__:set ${} {key} ",
            key.len()
        );
        assert_eq!(
            got.iter().filter(|f| **f == event).count(),
            1,
            "the set of {key} once: {got:?}"
        );
    }
    // A channel of keyspace events too (only the key's own master emits it).
    sub.send(&["SUBSCRIBE", &format!("__keyspace@0__:{}", keys[2])])
        .await;
    assert!(sub.frame().await.ends_with(":2 "));
    let () = query(&mut c, &["DEL", &keys[2]])
        .await
        .map(|_: i64| ())
        .unwrap();
    let got = frames_until_all(&mut sub, &["$3 del ".to_string()]).await;
    assert!(
        got.iter().any(|f| f.starts_with("*3 $7 message")),
        "{got:?}"
    );
}

/// A pattern that matches keyspace events and ordinary channels alike (`*`): every master's
/// events, and an ordinary `PUBLISH` (which the cluster bus brings to every node) once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_all_pattern_gets_every_masters_events_and_each_message_once() {
    let cluster = Cluster::start(3, 0).await;
    let (_proxy, mut sub, keys, mut c) = a_key_set_on_every_master(&cluster, "*", "any").await;
    let spaces: Vec<String> = keys
        .iter()
        .map(|k| format!("__keyspace@0__:{k} "))
        .collect();
    frames_until_all(&mut sub, &spaces).await;
    let receivers: i64 = query(&mut c, &["PUBLISH", "plain", "hello"]).await.unwrap();
    assert!(receivers >= 1);
    let hello = "*4 $8 pmessage $1 * $5 plain $5 hello ";
    let mut seen = frames_until_all(&mut sub, &[hello.to_string()]).await;
    // What else comes within a while: no second copy from the other masters' links.
    while let Some(f) = sub.frame_within(Duration::from_millis(500)).await {
        seen.push(f);
    }
    assert_eq!(
        seen.iter().filter(|f| *f == hello).count(),
        1,
        "an ordinary message once: {seen:?}"
    );
}

/// The subscription follows the masters: after a replica takes over from its master
/// (`CLUSTER FAILOVER`), the new master's events arrive too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyevents_follow_a_cluster_failover() {
    let cluster = Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    // Cluster mode's CONFIG SET reaches the masters; the replica to be promoted is set directly.
    for node in &cluster.nodes {
        let addr = node.addr().parse().expect("an address");
        let set =
            crate::security::raw(addr, &[&["CONFIG", "SET", "notify-keyspace-events", "KEA"]]);
        assert_eq!(set.await, ["+OK"]);
    }
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["PSUBSCRIBE", "__keyevent@0__:*"]).await;
    assert!(sub.frame().await.ends_with(":1 "));
    let map = cluster.slot_map().await;
    let key = keys_on_every_master(&map, "fo", 1).pop().expect("a key");
    let owners = map
        .owners(haproxy_rs::router::slot::key_slot(key.as_bytes()))
        .expect("served");
    let heir = owners.replicas[0].clone();
    let addr = heir.parse().expect("an address");
    assert_eq!(
        crate::security::raw(addr, &[&["CLUSTER", "FAILOVER"]]).await,
        ["+OK"]
    );
    eventually!(
        Duration::from_secs(30),
        proxy
            .cluster_map()
            .masters()
            .iter()
            .any(|m| m.addr() == heir),
        "the proxy's map names {heir} a master"
    );
    let mut c = proxy.client().await;
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let _: Result<(), _> = query(&mut c, &["SET", &key, "after"]).await;
            if let Some(f) = sub.frame_within(Duration::from_millis(300)).await {
                if f.contains(&key) {
                    return f;
                }
            }
        }
    })
    .await
    .expect("an event from the new master within 20 s");
    assert!(got.contains("__keyevent@0__:set"), "{got:?}");
}
