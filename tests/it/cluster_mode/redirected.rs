//! Requests caught by a slot migration, step by step: the pipeline's order survives a `MOVED`, and
//! a read finds a key that has already moved while its slot is still migrating.
//!
//! Both fail against the first cut of cluster mode (98abfdd): a chunk's retries are sent after
//! every node of the chunk answered, with nothing keeping later chunks of the same client behind
//! them (exec.rs `Chunk::finish`); and replica reads follow `CLUSTER SLOTS`, which does not show a
//! migration, to a replica that never answers `ASK` (exec.rs `Chunk::resolve`).

use std::time::Duration;

use haproxy_rs::router::slot::key_slot;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::io::AsyncWriteExt;

use super::{cluster_and_proxy, cmd};
use crate::eventually;
use crate::harness::cluster::keys_on_every_master;
use crate::harness::migration::SlotMigration;
use crate::harness::redis::read_replies;

/// A script that keeps the node serving its key busy for `ARGV[1]` milliseconds.
const BUSY: &str = "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
                    repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - s > ARGV[1] * 1000 \
                    return 1";

/// The keys of `keys` that do not read back as themselves.
async fn not_found(c: &mut MultiplexedConnection, keys: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for k in keys {
        let v: Option<String> = c.get(k).await.unwrap();
        if v.as_deref() != Some(k.as_str()) {
            out.push(k.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_in_order_across_a_moved_redirection() {
    // The proxy learns of the moved slot from the MOVED reply, not from a periodic refresh.
    let (cluster, proxy) = cluster_and_proxy(|b| b.refresh_only_on_moved()).await;
    let map = cluster.slot_map().await;
    // One key on each master: `k` on the master that gives its (empty) slot away, `busy` on a
    // second master, and the third master receives the slot.
    let keys = keys_on_every_master(&map, "order", 1);
    let (k, busy) = (keys[0].as_str(), keys[1].as_str());
    let slot = key_slot(k.as_bytes());
    let from = cluster.owner(&map, k);
    let held = cluster.owner(&map, busy);
    let to = cluster.owner(&map, &keys[2]);
    SlotMigration::begin(&cluster, from, to, slot..=slot)
        .await
        .finish()
        .await;

    // One client, one pipeline: `SET k 1` after a script that holds another master for 1.5 s,
    // then, in a later read of the proxy, `SET k 2`. Both SETs meet the MOVED; Redis runs a
    // connection's commands in order, so k must end as 2.
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut first = Vec::new();
    for c in [
        cmd(&["EVAL", BUSY, "1", busy, "1500"]),
        cmd(&["SET", k, "1"]),
    ] {
        first.extend_from_slice(&haproxy_rs::resp::encode_command(&c));
    }
    s.write_all(&first).await.unwrap();
    eventually!(
        Duration::from_secs(5),
        !held.answers_ping().await,
        "the script holds {}",
        held.addr()
    );
    let second = haproxy_rs::resp::encode_command(&["SET", k, "2"]);
    s.write_all(&second).await.unwrap();
    let replies = read_replies(&mut s, 3).await;
    assert_eq!(replies, [":1", "+OK", "+OK"]);

    assert!(proxy.cluster_stats().moved > 0, "the pipeline met a MOVED");
    let v: Option<String> = to.client().await.get(k).await.unwrap();
    assert_eq!(
        v.as_deref(),
        Some("2"),
        "SET {k} 1 then SET {k} 2 in one pipeline leave {k} = 2 on its new master {}",
        to.addr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_finds_a_key_already_moved_while_its_slot_is_still_migrating() {
    // The defaults: reads to replicas (prefer-replica), read-your-writes.
    let (cluster, proxy) = cluster_and_proxy(|b| b).await;
    let map = cluster.slot_map().await;
    // Keys in one slot (a hash tag), on the master of slot `{mig}`, moving to another master.
    let keys: Vec<String> = (0..20).map(|i| format!("{{mig}}:{i}")).collect();
    let slot = key_slot(b"{mig}");
    let owners = map.owners(slot).unwrap().clone();
    let from = cluster.node(&owners.master);
    let from_replica = cluster.node(&owners.replicas[0]);
    let to = cluster.node(
        map.masters()
            .into_iter()
            .find(|m| *m != owners.master)
            .unwrap(),
    );
    let mut writer = proxy.client().await;
    for k in &keys {
        let () = writer.set(k, k).await.unwrap();
    }
    from_replica.wait_caught_up(from).await;

    // A client that never wrote reads from replicas; all keys are found before the migration.
    let mut reader = proxy.client().await;
    assert_eq!(not_found(&mut reader, &keys).await, Vec::<String>::new());

    let migration = SlotMigration::begin(&cluster, from, to, slot..=slot).await;
    // The proxy watches each master's CLUSTER NODES every health_interval_ms (50 ms here); the
    // guarantee starts once it has seen the migration (documented: keys moved before that may
    // read as missing from a replica).
    eventually!(
        Duration::from_secs(5),
        proxy.cluster_stats().migrating_slots >= 1,
        "the proxy sees slot {slot} migrating"
    );
    assert_eq!(migration.move_keys().await, keys.len());
    // The replica has applied the MIGRATE too: it no longer has the keys.
    from_replica.wait_caught_up(from).await;
    let missing = not_found(&mut reader, &keys).await;
    assert!(
        missing.is_empty(),
        "while slot {slot} migrates, keys already on {} read as missing: {missing:?}",
        to.addr()
    );
    migration.finish().await;
    assert_eq!(not_found(&mut reader, &keys).await, Vec::<String>::new());
}
