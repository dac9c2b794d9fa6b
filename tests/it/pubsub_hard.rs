//! Pub/Sub through the proxy under hard conditions: a shard channel's slot migrated away, a
//! killed Sentinel master, no reachable master at all, a RESP3 subscriber's commands across a
//! cluster (redirections included) or on a hung master, a pipelined burst compared with Redis
//! itself, and a subscriber that hangs up during a failover. Time bounds that are not the
//! proxy's own settings scale with `HAPROXY_RS_TEST_PATIENCE`.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use haproxy_rs::resp::encode_command;
use haproxy_rs::router::slot::key_slot;

use crate::eventually;
use crate::harness::cluster::keys_on_every_master;
use crate::harness::eventually::scaled;
use crate::harness::migration::SlotMigration;
use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::{Cluster, RedisServer, Topology};
use crate::pubsub::{publish_until_received, Raw};

/// One command on a fresh direct connection to `addr`, its reply.
async fn ask(addr: &str, args: &[&str]) -> String {
    let mut c = Raw::connect(addr).await;
    c.send(args).await;
    c.frame().await
}

/// The proxy's connections to `addr` open now, by its stats.
fn backend_connections(proxy: &TestProxy, addr: &str) -> u64 {
    proxy
        .proxy
        .stats
        .snapshot()
        .backends
        .into_iter()
        .filter(|b| b.addr == addr)
        .map(|b| b.current_connections)
        .sum()
}

/// A name `<prefix>:<i>` whose slot `master` serves, by the cluster's own map.
async fn name_on(cluster: &Cluster, master: &str, prefix: &str) -> String {
    let map = cluster.slot_map().await;
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .find(|n| map.owners(key_slot(n.as_bytes())).unwrap().master == master)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_subscription_follows_its_migrated_slot_and_the_client_sees_no_unsolicited_frame() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let masters = cluster.masters().await;
    let (from, to) = (masters[0], masters[1]);
    let moving = name_on(&cluster, &from.addr(), "mig").await;
    let staying = name_on(&cluster, &to.addr(), "stay").await;
    let slot = key_slot(moving.as_bytes());

    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["SSUBSCRIBE", &moving]).await;
    sub.send(&["SSUBSCRIBE", &staying]).await;
    let len = |n: &str| n.len();
    assert_eq!(
        sub.frames(2).await,
        [
            format!("*3 $10 ssubscribe ${} {moving} :1 ", len(&moving)),
            format!("*3 $10 ssubscribe ${} {staying} :2 ", len(&staying)),
        ]
    );
    // A direct subscriber on the old owner shows what Redis 7.0 does when the slot leaves.
    let mut direct = Raw::connect(from.addr()).await;
    direct.send(&["SSUBSCRIBE", &moving]).await;
    assert_eq!(
        direct.frame().await,
        format!("*3 $10 ssubscribe ${} {moving} :1 ", len(&moving))
    );
    assert_eq!(
        ask(&from.addr(), &["SPUBLISH", &moving, "before"]).await,
        ":2 "
    );
    assert_eq!(
        sub.frame().await,
        format!("*3 $8 smessage ${} {moving} $6 before ", len(&moving))
    );
    direct.frame().await;

    let migration = SlotMigration::begin(&cluster, from, to, slot..=slot).await;
    migration.move_keys().await;
    migration.finish().await;
    assert_eq!(
        direct.frame().await,
        format!("*3 $12 sunsubscribe ${} {moving} :0 ", len(&moving)),
        "Redis 7.0 unsubscribes the shard channels of a slot it lost"
    );

    // Messages published on the new owner reach the client, and nothing else does.
    let mut publisher = Raw::connect(to.addr()).await;
    let got = publish_until_received(&mut publisher, &mut sub, &moving, "after", true).await;
    assert!(
        got.iter().all(|f| f.starts_with("*3 $8 smessage")),
        "{got:?}"
    );
    assert_eq!(
        ask(&to.addr(), &["PUBSUB", "SHARDNUMSUB", &moving]).await,
        format!("*2 ${} {moving} :1 ", len(&moving)),
        "subscribed once on the new owner"
    );
    assert_eq!(
        ask(&from.addr(), &["PUBSUB", "SHARDNUMSUB", &moving]).await,
        format!("*2 ${} {moving} :0 ", len(&moving)),
    );
    // The client's counts are its own: the server's unsolicited sunsubscribe changed nothing.
    sub.send(&["SUNSUBSCRIBE", &moving]).await;
    assert_eq!(
        sub.frame().await,
        format!("*3 $12 sunsubscribe ${} {moving} :1 ", len(&moving))
    );
    sub.send(&["SUNSUBSCRIBE"]).await;
    assert_eq!(
        sub.frame().await,
        format!("*3 $12 sunsubscribe ${} {staying} :0 ", len(&staying))
    );
    sub.send(&["PING"]).await;
    assert_eq!(sub.frame().await, "+PONG ", "an ordinary connection again");
    eventually!(
        Duration::from_secs(5),
        ask(&to.addr(), &["PUBSUB", "SHARDNUMSUB", &moving]).await
            == format!("*2 ${} {moving} :0 ", len(&moving)),
        "the proxy's subscription on the new owner goes with the client's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_survive_a_killed_sentinel_master_and_one_that_hangs_up_meanwhile_leaks_nothing(
) {
    let topo = Topology::builder()
        .replicas(1)
        .sentinels(3)
        .down_after(Duration::from_millis(1000))
        .start()
        .await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c| c.failover.hold_ms = 1000)
        .start(1)
        .await;
    let old = topo.current_master_addr().await;
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["SUBSCRIBE", "news"]).await;
    sub.send(&["PSUBSCRIBE", "alerts:*"]).await;
    assert_eq!(
        sub.frames(2).await,
        [
            "*3 $9 subscribe $4 news :1 ",
            "*3 $10 psubscribe $8 alerts:* :2 "
        ]
    );
    let mut leaver = Raw::connect(proxy.addr()).await;
    leaver.send(&["SUBSCRIBE", "gone"]).await;
    assert_eq!(leaver.frame().await, "*3 $9 subscribe $4 gone :1 ");
    assert_eq!(crate::limits::main_listener(&proxy).pubsub_clients, 2);

    topo.master.kill();
    // While there is no master: the leaver asks for more, then hangs up.
    leaver.send(&["SUBSCRIBE", "gone2"]).await;
    drop(leaver);
    eventually!(
        Duration::from_secs(5),
        crate::limits::main_listener(&proxy).pubsub_clients == 1,
        "the leaver's session ends during the failover"
    );
    let new = topo.wait_new_master(&old, Duration::from_secs(20)).await;
    eventually!(
        Duration::from_secs(15),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy follows the failover to {new}"
    );
    let mut publisher = Raw::connect(&new).await;
    let got = publish_until_received(&mut publisher, &mut sub, "news", "after", false).await;
    let pattern =
        publish_until_received(&mut publisher, &mut sub, "alerts:1", "after", false).await;
    for f in got.iter().chain(&pattern) {
        assert!(
            f.starts_with("*3 $7 message") || f.starts_with("*4 $8 pmessage"),
            "only messages reach the subscriber: {f}"
        );
    }
    // Nothing else is queued for it: the next frame answers its PING.
    sub.send(&["PING", "still"]).await;
    assert_eq!(sub.frame().await, "*2 $4 pong $5 still ");
    assert_eq!(
        ask(&new, &["PUBSUB", "NUMSUB", "news", "gone", "gone2"]).await,
        "*6 $4 news :1 $4 gone :0 $5 gone2 :0 ",
        "the subscriber's channels are on the new master, the leaver's are not"
    );
    // The subscriber's own link is the only subscription connection of the proxy there.
    let with_sub = backend_connections(&proxy, &new);
    sub.send(&["UNSUBSCRIBE"]).await;
    sub.send(&["PUNSUBSCRIBE"]).await;
    assert_eq!(
        sub.frames(2).await,
        [
            "*3 $11 unsubscribe $4 news :1 ",
            "*3 $12 punsubscribe $8 alerts:* :0 "
        ]
    );
    eventually!(
        Duration::from_secs(5),
        backend_connections(&proxy, &new) == with_sub - 1,
        "the proxy's connections to {new} go back down: {} (from {with_sub})",
        backend_connections(&proxy, &new)
    );
    eventually!(
        Duration::from_secs(5),
        ask(&new, &["PUBSUB", "NUMPAT"]).await == ":0 "
            && ask(&new, &["PUBSUB", "CHANNELS"]).await == "*0 ",
        "no subscription left on {new}"
    );
    drop(sub);
    eventually!(
        Duration::from_secs(5),
        crate::limits::main_listener(&proxy).pubsub_clients == 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_without_a_reachable_master_is_confirmed_at_hold_ms_and_placed_when_it_returns()
{
    const HOLD: Duration = Duration::from_millis(500);
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()])
        .with(|c| c.failover.hold_ms = HOLD.as_millis() as u64)
        .start(0)
        .await;
    let mut old = Raw::connect(proxy.addr()).await;
    old.send(&["SUBSCRIBE", "a"]).await;
    assert_eq!(old.frame().await, "*3 $9 subscribe $1 a :1 ");
    let mut fresh = Raw::connect(proxy.addr()).await;

    server.stop();
    // A client with a link to the hung server, and one without.
    let t0 = Instant::now();
    old.send(&["SUBSCRIBE", "b"]).await;
    assert_eq!(old.frame().await, "*3 $9 subscribe $1 b :2 ");
    let waited = t0.elapsed();
    assert!(
        waited >= HOLD - Duration::from_millis(50)
            && waited < HOLD + scaled(Duration::from_millis(400)),
        "confirmed at hold_ms ({HOLD:?}): {waited:?}"
    );
    let t0 = Instant::now();
    fresh.send(&["SUBSCRIBE", "c"]).await;
    assert_eq!(fresh.frame().await, "*3 $9 subscribe $1 c :1 ");
    let waited = t0.elapsed();
    assert!(
        waited >= HOLD - Duration::from_millis(50)
            && waited < HOLD + scaled(Duration::from_millis(400)),
        "confirmed at hold_ms ({HOLD:?}): {waited:?}"
    );
    // The session is not stuck meanwhile: the proxy answers PING itself.
    let t0 = Instant::now();
    fresh.send(&["PING"]).await;
    assert_eq!(fresh.frame().await, "*2 $4 pong $0  ");
    assert!(
        t0.elapsed() < scaled(Duration::from_millis(300)),
        "{:?}",
        t0.elapsed()
    );

    server.cont();
    eventually!(
        Duration::from_secs(10),
        ask(&server.addr(), &["PUBSUB", "NUMSUB", "a", "b", "c"]).await
            == "*6 $1 a :1 $1 b :1 $1 c :1 ",
        "every subscription is placed on the server once it is back"
    );
    // The server's late confirmations are not passed on: the next frames are the messages.
    for (c, raw) in [("b", &mut old), ("c", &mut fresh)] {
        assert_eq!(ask(&server.addr(), &["PUBLISH", c, "back"]).await, ":1 ");
        assert_eq!(raw.frame().await, format!("*3 $7 message $1 {c} $4 back "));
    }
    assert_eq!(ask(&server.addr(), &["PUBLISH", "a", "back"]).await, ":1 ");
    assert_eq!(old.frame().await, "*3 $7 message $1 a $4 back ");

    // A killed server: the same, placed again once it is restarted on its port.
    server.kill();
    let t0 = Instant::now();
    fresh.send(&["SUBSCRIBE", "d"]).await;
    assert_eq!(fresh.frame().await, "*3 $9 subscribe $1 d :2 ");
    assert!(
        t0.elapsed() < HOLD + scaled(Duration::from_millis(400)),
        "{:?}",
        t0.elapsed()
    );
    server.restart().await;
    eventually!(
        Duration::from_secs(10),
        ask(&server.addr(), &["PUBSUB", "NUMSUB", "a", "b", "c", "d"]).await
            == "*8 $1 a :1 $1 b :1 $1 c :1 $1 d :1 ",
        "every subscription is placed again on the restarted server"
    );
    assert_eq!(ask(&server.addr(), &["PUBLISH", "d", "new"]).await, ":1 ");
    assert_eq!(fresh.frame().await, "*3 $7 message $1 d $3 new ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp3_subscriber_runs_commands_on_every_master_and_redirections_never_reach_it() {
    let cluster = Cluster::start(3, 0).await;
    // The proxy learns of the moved slot only from the redirections themselves.
    let proxy = ProxyBuilder::cluster(&cluster)
        .refresh_only_on_moved()
        .with(|c| c.backend.health_interval_ms = 60_000)
        .start_cluster()
        .await;
    let map = cluster.slot_map().await;
    let keys = keys_on_every_master(&map, "r3", 2);
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["HELLO", "3"]).await;
    assert!(sub.frame().await.starts_with('%'));
    sub.send(&["SUBSCRIBE", "news"]).await;
    assert_eq!(sub.frame().await, ">3 $9 subscribe $4 news :1 ");
    for k in &keys {
        sub.send(&["SET", k, k]).await;
        assert_eq!(sub.frame().await, "+OK ", "SET {k}");
    }
    for k in &keys {
        sub.send(&["GET", k]).await;
        assert_eq!(sub.frame().await, format!("${} {k} ", k.len()), "GET {k}");
    }
    // (A node counts only its own subscribers; the cluster bus carries the message on.)
    for node in cluster.addrs() {
        ask(&node, &["PUBLISH", "news", "hi"]).await;
        assert_eq!(sub.frame().await, ">3 $7 message $4 news $2 hi ");
    }

    // A key's slot migrates to another master: first -ASK, then -MOVED from its old owner.
    let key = &keys[0];
    let from = cluster.owner(&map, key);
    let to = cluster.owner(&map, &keys[1]);
    let slot = key_slot(key.as_bytes());
    let migration = SlotMigration::begin(&cluster, from, to, slot..=slot).await;
    assert_eq!(migration.move_keys().await, 1);
    sub.send(&["GET", key]).await;
    assert_eq!(
        sub.frame().await,
        format!("${} {key} ", key.len()),
        "GET {key} while its slot is migrating (ASK)"
    );
    migration.finish().await;
    assert!(
        proxy
            .cluster_map()
            .owners(slot)
            .is_some_and(|o| o.master.addr() == from.addr()),
        "the proxy's map is stale still"
    );
    // A shard channel of the moved slot, subscribed by the stale map: the old owner refuses it
    // (-MOVED), the proxy places it on the new owner before confirming it.
    sub.send(&["SSUBSCRIBE", key]).await;
    assert_eq!(
        sub.frame_within(Duration::from_secs(3)).await.as_deref(),
        Some(format!(">3 $10 ssubscribe ${} {key} :1 ", key.len()).as_str()),
        "SSUBSCRIBE {key} confirmed once placed"
    );
    assert_eq!(
        ask(&to.addr(), &["PUBSUB", "SHARDNUMSUB", key]).await,
        format!("*2 ${} {key} :1 ", key.len())
    );
    assert_eq!(ask(&to.addr(), &["SPUBLISH", key, "s"]).await, ":1 ");
    assert_eq!(
        sub.frame().await,
        format!(">3 $8 smessage ${} {key} $1 s ", key.len())
    );
    sub.send(&["SET", key, "moved"]).await;
    assert_eq!(
        sub.frame().await,
        "+OK ",
        "SET {key} after the move (MOVED)"
    );
    sub.send(&["GET", key]).await;
    assert_eq!(sub.frame().await, "$5 moved ");
    assert_eq!(
        ask(&to.addr(), &["GET", key]).await,
        "$5 moved ",
        "written on the new owner"
    );
    // Pushes still arrive, and the subscription is where it was.
    ask(&to.addr(), &["PUBLISH", "news", "still"]).await;
    assert_eq!(sub.frame().await, ">3 $7 message $4 news $5 still ");
    sub.send(&["UNSUBSCRIBE"]).await;
    assert_eq!(sub.frame().await, ">3 $11 unsubscribe $4 news :0 ");
    sub.send(&["SUNSUBSCRIBE"]).await;
    assert_eq!(
        sub.frame().await,
        format!(">3 $12 sunsubscribe ${} {key} :0 ", key.len())
    );
}

/// The commands of the burst: enters and leaves subscriber mode twice, with every kind of
/// (un)subscribe, pings, refused and ordinary commands in between.
fn burst(resp3: bool) -> Vec<Vec<&'static str>> {
    let mut cmds: Vec<Vec<&str>> = vec![
        vec!["SUBSCRIBE", "a", "b", "c"],
        vec!["PSUBSCRIBE", "x*"],
        vec!["PING"],
        vec!["UNSUBSCRIBE", "b"],
        vec!["PUNSUBSCRIBE"],
        vec!["SUBSCRIBE", "a"],
        vec!["SSUBSCRIBE", "s1", "s2"],
        vec!["PING", "hi"],
        vec!["UNSUBSCRIBE", "nosuch"],
        vec!["PSUBSCRIBE", "y*", "z*"],
        vec!["PUNSUBSCRIBE", "y*"],
        vec!["SUNSUBSCRIBE", "s2"],
        vec!["GET", "k"],
        vec!["SUBSCRIBE"],
        vec!["PUNSUBSCRIBE", "nope*"],
        vec!["SUNSUBSCRIBE"],
        vec!["SUNSUBSCRIBE"],
        // Redis answers a nameless unsubscribe in its hash table's order, seeded at random
        // when it starts: one name left each time, so that the frames compare one by one.
        vec!["UNSUBSCRIBE", "c"],
        vec!["UNSUBSCRIBE"],
        vec!["PUNSUBSCRIBE"],
        // Ordinary again.
        vec!["SET", "k", "v"],
        vec!["GET", "k"],
        vec!["UNSUBSCRIBE"],
        vec!["PING"],
        vec!["PSUBSCRIBE", "p*"],
        vec!["SUBSCRIBE", "q", "q"],
        vec!["PING"],
        vec!["UNSUBSCRIBE", "q"],
        vec!["SSUBSCRIBE", "s3"],
        vec!["PUNSUBSCRIBE", "p*", "p*"],
        vec!["SUNSUBSCRIBE", "s3"],
        vec!["GET", "k"],
        vec!["SUBSCRIBE", "r"],
    ];
    if resp3 {
        // A RESP3 subscriber's own PUBLISH: its message and the reply.
        cmds.push(vec!["PUBLISH", "r", "self"]);
        cmds.push(vec!["GET", "k"]);
    }
    cmds.push(vec!["UNSUBSCRIBE"]);
    cmds.push(vec!["PING", "end-of-burst"]);
    cmds
}

/// Sends the burst in one write to `addr` and returns every frame up to the last PING's.
async fn run_burst(addr: &str, resp3: bool) -> Vec<String> {
    let mut c = Raw::connect(addr).await;
    if resp3 {
        c.send(&["HELLO", "3"]).await;
        c.frame().await; // the id differs
    }
    let cmds = burst(resp3);
    assert!(cmds.len() >= 30);
    let mut bytes = BytesMut::new();
    for cmd in &cmds {
        bytes.extend_from_slice(&encode_command(cmd));
    }
    c.send_raw(&bytes).await;
    let mut out = Vec::new();
    for _ in 0..200 {
        let f = c.frame().await;
        let last = f.contains("end-of-burst");
        out.push(f);
        if last {
            return out;
        }
    }
    panic!("no end of the burst in 200 frames: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_burst_of_subscribes_gets_the_same_frames_as_from_redis_itself() {
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()]).start(0).await;
    for resp3 in [false, true] {
        ask(&server.addr(), &["DEL", "k"]).await;
        let direct = run_burst(&server.addr(), resp3).await;
        ask(&server.addr(), &["DEL", "k"]).await;
        let through = run_burst(&proxy.addr().to_string(), resp3).await;
        assert_eq!(
            through,
            direct,
            "resp3: {resp3}\nthrough:\n{}\ndirect:\n{}",
            through.join("\n"),
            direct.join("\n")
        );
        assert!(direct.len() > 40, "{direct:?}");
        let joined = direct.join("\n");
        for expected in ["subscribe $1 c :3", "punsubscribe $2 y* :", "$1 v "] {
            assert!(joined.contains(expected), "{expected:?} in {joined}");
        }
        assert_eq!(
            ask(&server.addr(), &["PUBSUB", "NUMSUB", "a", "q", "r"]).await,
            "*6 $1 a :0 $1 q :0 $1 r :0 ",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp3_subscribers_command_on_a_hung_master_ends_at_command_timeout_like_any_other() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()])
        .with(|c| c.backend.command_timeout_ms = TIMEOUT.as_millis() as u64)
        .start(0)
        .await;
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["HELLO", "3"]).await;
    assert!(sub.frame().await.starts_with('%'));
    sub.send(&["SUBSCRIBE", "a"]).await;
    assert_eq!(sub.frame().await, ">3 $9 subscribe $1 a :1 ");
    sub.send(&["SET", "k", "v"]).await;
    assert_eq!(sub.frame().await, "+OK ");

    server.stop();
    let t0 = Instant::now();
    sub.send(&["GET", "k"]).await;
    let reply = sub.frame().await;
    let waited = t0.elapsed();
    assert!(
        reply.starts_with("-ERR haproxy-rs:") && reply.contains("outcome is unknown"),
        "{reply}"
    );
    assert!(
        waited >= TIMEOUT && waited < TIMEOUT + scaled(Duration::from_millis(700)),
        "answered at command_timeout_ms ({TIMEOUT:?}): {waited:?}"
    );
    // The session goes on: the proxy answers PING, and the subscription is placed again once
    // the server is back.
    sub.send(&["PING"]).await;
    assert_eq!(sub.frame().await, "+PONG ");
    server.cont();
    eventually!(
        Duration::from_secs(10),
        ask(&server.addr(), &["PUBSUB", "NUMSUB", "a"]).await == "*2 $1 a :1 ",
        "the subscription is on the server again"
    );
    assert_eq!(ask(&server.addr(), &["PUBLISH", "a", "back"]).await, ":1 ");
    assert_eq!(sub.frame().await, ">3 $7 message $1 a $4 back ");
    sub.send(&["GET", "k"]).await;
    assert_eq!(sub.frame().await, "$1 v ");
}
