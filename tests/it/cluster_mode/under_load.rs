//! Cluster mode under load: slots migrating between masters, and a master killed, while clients
//! write and read back through the proxy. Redirections and the failover cost latency; no client
//! error beyond what cannot be avoided, and no acknowledged write lost that Redis kept. Commands
//! for every master, sent while one is dead, wait for its replica the same way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use haproxy_rs::router::slot::key_slot;

use super::cluster_and_proxy;
use crate::eventually;
use crate::harness::cluster::slot_count;
use crate::harness::load::{LoadError, LoadOptions, WriteLoad};
use crate::harness::migration::SlotMigration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_follows_ask_and_moved_without_a_client_error() {
    // Only a MOVED makes the proxy fetch the map again: a periodic refresh between two
    // SETSLOT NODE steps could pick up the new owner before any MOVED is seen.
    let (cluster, proxy) = cluster_and_proxy(|b| b.refresh_only_on_moved()).await;
    let map = cluster.slot_map().await;
    // 1024 slots (1/16 of the key space) from the master of slot 0 to the master of slot 16383.
    let slots = 0..=1023u16;
    let from = cluster.node(&map.owners(0).unwrap().master);
    let to = cluster.node(&map.owners(16383).unwrap().master);
    assert!(
        slots
            .clone()
            .all(|s| map.owners(s).unwrap().master == from.addr()),
        "{} serves slots {slots:?}",
        from.addr()
    );
    let options = LoadOptions {
        read_back: true,
        max_writes: Some(100_000),
    };
    let (from_slots, to_slots) = (slot_count(&map, &from.addr()), slot_count(&map, &to.addr()));
    let load = WriteLoad::start_with(proxy.addr(), 4, "reshard", options);
    load.wait_more_acks(300).await;

    let migration = SlotMigration::begin(&cluster, from, to, slots.clone()).await;
    eventually!(
        Duration::from_secs(10),
        proxy.cluster_stats().ask > 0,
        "a request for a new key in a migrating slot was sent on with ASKING"
    );
    load.wait_more_acks(300).await;
    let moved_keys = migration.move_keys().await;
    migration.finish().await;
    eventually!(
        Duration::from_secs(10),
        proxy.cluster_stats().moved > 0,
        "a request to the old owner was redirected with MOVED"
    );
    eventually!(
        Duration::from_secs(10),
        slots.clone().all(|s| proxy
            .cluster_map()
            .slots
            .owners(s)
            .is_some_and(|o| o.master == to.addr())),
        "the proxy's map has the new owner of slots {slots:?}"
    );
    load.wait_more_acks(300).await;
    let report = load.stop().await;

    assert!(
        report.errors.is_empty(),
        "no client error during resharding: {}",
        report.error_summary()
    );
    let in_range = report
        .acked
        .iter()
        .filter(|k| slots.contains(&key_slot(k.as_bytes())))
        .count();
    assert!(
        moved_keys > 0 && in_range > moved_keys,
        "the load wrote to the moving slots: {in_range} acks, {moved_keys} migrated"
    );
    let map = cluster.slot_map().await;
    let bad = cluster
        .keys_not_holding_themselves(&map, &report.acked)
        .await;
    assert!(
        bad.is_empty(),
        "{} of {} acknowledged writes are missing or wrong on their master, e.g. {:?}",
        bad.len(),
        report.acked.len(),
        &bad[..bad.len().min(5)]
    );
    let unreadable = proxy.keys_not_reading_back(&report.acked).await;
    assert!(
        unreadable.is_empty(),
        "{} acknowledged writes do not read back through the proxy, e.g. {:?}",
        unreadable.len(),
        &unreadable[..unreadable.len().min(5)]
    );
    let moving = slots.len();
    assert_eq!(
        (
            proxy.cluster_node(&from.addr()),
            proxy.cluster_node(&to.addr())
        ),
        (
            Some(("master".to_string(), from_slots - moving)),
            Some(("master".to_string(), to_slots + moving)),
        ),
        "the stats page shows the {moving} slots on their new master"
    );
    let stats = proxy.cluster_stats();
    eprintln!(
        "resharding: {} writes acknowledged, {in_range} in the moving slots, {moved_keys} keys \
         migrated; moved {}, ask {}, retries {}",
        report.acked.len(),
        stats.moved,
        stats.ask,
        stats.retries
    );
    assert_eq!(stats.retries_exhausted, 0, "{stats:?}");
}

/// The slot whose master is killed. Its master is the first node given to `redis-cli --cluster
/// create`, so normally the proxy's first seed and the node its refresher asks for the map: the
/// refresher has to move on to another node as well.
const VICTIM_SLOT: u16 = 0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_is_replaced_and_writes_only_wait() {
    let (cluster, proxy) = cluster_and_proxy(|b| b).await;
    let map = cluster.slot_map().await;
    let owners = map.owners(VICTIM_SLOT).unwrap().clone();
    let victim = cluster.node(&owners.master);
    let heir = owners.replicas[0].clone();
    let on_victim = |k: &str| map.owners(key_slot(k.as_bytes())).unwrap().master == owners.master;
    let clients = 4;
    let options = LoadOptions {
        read_back: true,
        max_writes: Some(100_000),
    };
    let load = WriteLoad::start_with(proxy.addr(), clients, "kill", options);
    load.wait_more_acks(300).await;

    let kill_at = load.started.elapsed();
    victim.kill();
    eventually!(
        Duration::from_secs(30),
        cluster.node(&heir).role().await == "master",
        "replica {heir} is promoted"
    );
    let promoted_at = load.started.elapsed();
    eventually!(
        Duration::from_secs(30),
        proxy
            .cluster_map()
            .owners(VICTIM_SLOT)
            .is_some_and(|o| o.master.addr() == heir),
        "the proxy routes the dead master's slots to {heir}"
    );
    load.wait_more_acks(300).await;
    let report = load.stop().await;

    // Which acknowledged writes are gone: only writes the dead master acknowledged before its
    // replica took over may be (asynchronous replication; Redis Cluster itself loses them).
    eventually!(
        Duration::from_secs(10),
        cluster.all_agree(VICTIM_SLOT..=VICTIM_SLOT, &heir).await,
        "every live node names {heir} master of slot {VICTIM_SLOT}"
    );
    let now = cluster.slot_map().await;
    let bad = cluster
        .keys_not_holding_themselves(&now, &report.acked)
        .await;
    let acked_at: HashMap<&str, Duration> = report
        .acked
        .iter()
        .map(String::as_str)
        .zip(report.acked_at.iter().copied())
        .collect();
    let (tolerated, lost): (Vec<&String>, Vec<&String>) = bad
        .iter()
        .partition(|k| on_victim(k) && acked_at[k.as_str()] < promoted_at);
    eprintln!(
        "kill at {kill_at:?}, promoted by {promoted_at:?}: {} writes acknowledged, {} of them \
         lost with the dead master; {}; slowest write {:?}",
        report.acked.len(),
        tolerated.len(),
        report.error_summary(),
        report.max_latency
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let mut unreadable = proxy.keys_not_reading_back(&report.acked).await;
    unreadable.sort();
    let mut bad = bad.clone();
    bad.sort();
    assert_eq!(
        unreadable, bad,
        "through the proxy, every acknowledged write reads back but those lost"
    );

    // Errors. A write the proxy had sent to the master when it died (in flight, or written in
    // the moments before the proxy saw the connection close) may or may not have run: the proxy
    // answers it "outcome unknown" and never replays it. Once it has seen the connection close,
    // further requests for those slots wait for the replica's promotion, and reads in flight
    // are retried; so a closed-loop client (one request at a time) gets at most one such error.
    // The only other error allowed is the read-back of a write lost with the master (above).
    let unknown = |e: &LoadError| {
        e.what.contains("outcome is unknown")
            && e.what.contains(&owners.master)
            && e.at >= kill_at
            && e.at < promoted_at
    };
    let lost_read = |e: &LoadError| {
        tolerated
            .iter()
            .any(|k| e.what == format!("read-back of {k}: $-1"))
    };
    let unexpected: Vec<&LoadError> = report
        .errors
        .iter()
        .filter(|e| !unknown(e) && !lost_read(e))
        .collect();
    assert!(unexpected.is_empty(), "unexpected errors: {unexpected:?}");
    for client in 0..clients {
        let n = report
            .errors
            .iter()
            .filter(|e| e.client == client && unknown(e))
            .count();
        assert!(
            n <= 1,
            "client {client} got {n} outcome-unknown errors: {}",
            report.error_summary()
        );
    }

    let after = report
        .acked
        .iter()
        .zip(&report.acked_at)
        .filter(|(k, at)| **at > promoted_at && on_victim(k))
        .count();
    assert!(
        after > 0,
        "writes to the dead master's slots went on on {heir}"
    );
    let proxy_map = proxy.cluster_map();
    let masters: Vec<&str> = proxy_map.masters().iter().map(|m| m.addr()).collect();
    assert!(
        masters.contains(&heir.as_str()) && !masters.contains(&owners.master.as_str()),
        "the proxy's masters are the live ones: {masters:?}"
    );
    let victim_slots = slot_count(&map, &owners.master);
    assert_eq!(
        (
            proxy.cluster_node(&heir),
            proxy.cluster_node(&owners.master)
        ),
        (Some(("master".to_string(), victim_slots)), None),
        "the stats page shows {heir} serving the dead master's slots, and the dead master gone"
    );
    let stats = proxy.cluster_stats();
    assert!(
        stats.retries > 0,
        "requests to the dead master were retried: {stats:?}"
    );
    assert_eq!(stats.retries_exhausted, 0, "{stats:?}");
}

/// Fails against the first cut of cluster mode (98abfdd): a fan-out part is pinned to the master
/// it was planned for (exec.rs `Target::Node`), so it retries the dead one until the window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_commands_sent_while_a_master_is_dead_wait_for_its_replica() {
    let (cluster, proxy) = cluster_and_proxy(|b| b).await;
    let map = cluster.slot_map().await;
    let owners = map.owners(VICTIM_SLOT).unwrap().clone();
    let victim = cluster.node(&owners.master);
    let heir = cluster.node(&owners.replicas[0]);
    // A client that waits longer than the retry window (20 s) for a reply.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let mut c = redis::Client::open(format!("redis://{}/", proxy.addr()))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("dead:{i}")).collect();
    let pairs: Vec<(&String, &String)> = keys.iter().map(|k| (k, k)).collect();
    let () = redis::cmd("MSET")
        .arg(&pairs)
        .query_async(&mut c)
        .await
        .unwrap();
    heir.wait_caught_up(victim).await;

    victim.kill();
    let sent = Instant::now();
    let dbsize: redis::RedisResult<i64> = redis::cmd("DBSIZE").query_async(&mut c).await;
    let waited = sent.elapsed();
    assert_eq!(
        dbsize.as_ref().ok(),
        Some(&300),
        "DBSIZE sent right after {} died counts the keys on its promoted replica {} \
         (answered after {waited:?}): {dbsize:?}",
        victim.addr(),
        heir.addr()
    );
    let mut all: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    all.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(all, want, "KEYS * after the failover");
}
