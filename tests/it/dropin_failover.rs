//! Transactions through topology changes: clients loop `MULTI; INCR {k}n; RPUSH {k}log <i>;
//! EXEC` while Sentinel replaces the master, or while the transactions' slot moves to another
//! master of a Redis Cluster. Afterwards the data on the final master must match what `EXEC`
//! acknowledged: every acknowledged entry at its place in the log, the counter equal to the log's
//! length (never a counter bump without its log entry), and nothing from a transaction that was
//! said not to have run.

use std::time::Duration;

use haproxy_rs::router::slot::key_slot;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::eventually;
use crate::harness::migration::SlotMigration;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::redis::read_replies;
use crate::harness::txload::{TxLoad, TxReport};
use crate::harness::{Cluster, Topology};

/// Clients of each load.
const CLIENTS: usize = 4;
/// Transactions per client at most (the tests stop the load well before).
const MAX_PER_CLIENT: u64 = 5_000;

fn print_report(what: &str, report: &TxReport, entries: usize) {
    let times = || report.failed.iter().map(|f| f.at);
    let window = match (times().min(), times().max()) {
        (Some(first), Some(last)) => format!("failures from {first:?} to {last:?}"),
        _ => "no failure".to_string(),
    };
    eprintln!(
        "{what}: {} transactions acknowledged, {} failed ({window}), {entries} log entries; \
         failures:\n{}",
        report.acked.len(),
        report.failed.len(),
        report.failure_summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_across_a_sentinel_failover_stay_atomic_and_acknowledged_ones_survive() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let old = topo.master.addr();
    let tag = "tx-failover";
    let load = TxLoad::start(proxy.addr(), CLIENTS, tag, MAX_PER_CLIENT);
    load.wait_more_acks(100).await;

    let new = topo.failover().await;
    assert_ne!(new, old);
    eventually!(
        Duration::from_secs(30),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy writes to {new}"
    );
    let switched_at = load.started.elapsed();
    load.wait_more_acks(100).await;
    let report = load.stop().await;
    eprintln!("the proxy switched to {new} at {switched_at:?}");

    let entries = report.check(topo.server_by_addr(&new), tag).await;
    print_report("sentinel failover", &report, entries);
    let after = report.acked.iter().filter(|a| a.at > switched_at).count();
    assert!(
        after >= 100,
        "transactions are acknowledged after the switch to {new}: {after}"
    );
    // A planned failover costs transactions latency only: MULTI waits for the new master as
    // writes do (it answered TRYAGAIN for the whole switch before).
    assert!(
        report.failed.is_empty(),
        "no transaction fails in a planned failover:\n{}",
        report.failure_summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_in_a_migrating_slot_stay_atomic_and_acknowledged_ones_survive() {
    let cluster = Cluster::start(3, 0).await;
    // Only a MOVED makes the proxy fetch the map again, so the transactions meet ASK while the
    // slot migrates and MOVED once it has moved (a periodic refresh could skip both).
    let proxy = ProxyBuilder::cluster(&cluster)
        .refresh_only_on_moved()
        .start_cluster()
        .await;
    let tag = "tx-reshard";
    let slot = key_slot(format!("{{{tag}}}n").as_bytes());
    let map = cluster.slot_map().await;
    let from = cluster.node(&map.owners(slot).expect("slot served").master);
    let to = cluster
        .masters()
        .await
        .into_iter()
        .find(|m| m.addr() != from.addr())
        .expect("another master");

    let load = TxLoad::start(proxy.addr(), CLIENTS, tag, MAX_PER_CLIENT);
    load.wait_more_acks(50).await;
    let migration = SlotMigration::begin(&cluster, from, to, slot..=slot).await;
    load.wait_more_acks(50).await;
    let moved = migration.move_keys().await;
    assert_eq!(moved, 2, "the counter and the log moved to {}", to.addr());
    eventually!(
        Duration::from_secs(10),
        proxy.cluster_stats().ask > 0,
        "a transaction for keys already moved was sent on with ASKING"
    );
    load.wait_more_acks(50).await;
    migration.finish().await;
    eventually!(
        Duration::from_secs(10),
        proxy.cluster_stats().moved > 0,
        "a transaction sent to the old owner was redirected with MOVED"
    );
    load.wait_more_acks(50).await;
    let report = load.stop().await;

    let entries = report.check(to, tag).await;
    print_report("slot migration", &report, entries);
    let mut direct = from.client().await;
    let left: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut direct)
        .await
        .expect("COUNTKEYSINSLOT on the old owner");
    assert_eq!(
        left, 0,
        "nothing was written to the old owner after the move"
    );
    assert!(
        report.failed.is_empty(),
        "a migration costs transactions latency, not errors:\n{}",
        report.failure_summary()
    );
}

/// `SET <key> 1; WATCH <key>; GET <key>` on a new connection: the client watches `key`.
async fn watching(proxy: &crate::harness::proxy::TestProxy, key: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let replies = send(
        &mut s,
        &[&["SET", key, "1"], &["WATCH", key], &["GET", key]],
    )
    .await;
    assert_eq!(replies, ["+OK", "+OK", "$1\r\n1"]);
    s
}

async fn send(s: &mut TcpStream, commands: &[&[&str]]) -> Vec<String> {
    let raw: Vec<u8> = commands
        .iter()
        .flat_map(|c| haproxy_rs::resp::encode_command(c).to_vec())
        .collect();
    s.write_all(&raw).await.expect("write to the proxy");
    read_replies(s, commands.len()).await
}

/// Optimistic locking across a resharding: a client `WATCH`es a key, another client changes it,
/// the key's slot moves to another master, and the first client's `MULTI ... EXEC` must not run:
/// the slot's new owner never saw the `WATCH`, so running the transaction there would overwrite
/// the other client's write. The client gets what the node holding its `WATCH` answers, as a
/// cluster client talking to it would: `EXECABORT` (it refused the queued command with
/// `ASK`/`MOVED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_transaction_whose_slot_moves_away_does_not_run_on_the_new_owner() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .refresh_only_on_moved()
        .start_cluster()
        .await;
    let map = cluster.slot_map().await;
    // One key whose slot is still migrating at EXEC (ASK), one whose slot has moved (MOVED).
    let (asked, moved) = ("{watch-ask}k", "{watch-moved}k");
    let mut s_asked = watching(&proxy, asked).await;
    let mut s_moved = watching(&proxy, moved).await;
    let mut other = proxy.client().await;
    for key in [asked, moved] {
        let () = redis::cmd("SET")
            .arg(key)
            .arg("theirs")
            .query_async(&mut other)
            .await
            .expect("the other client's SET");
    }
    let masters = cluster.masters().await;
    let mut targets = Vec::new();
    for key in [asked, moved] {
        let slot = key_slot(key.as_bytes());
        let from = cluster.owner(&map, key);
        let to = *masters
            .iter()
            .find(|m| m.addr() != from.addr())
            .expect("another master");
        let migration = SlotMigration::begin(&cluster, from, to, slot..=slot).await;
        assert_eq!(migration.move_keys().await, 1, "{key} moved");
        if key == moved {
            migration.finish().await;
        }
        targets.push(to);
    }
    for (s, key, to) in [
        (&mut s_asked, asked, targets[0]),
        (&mut s_moved, moved, targets[1]),
    ] {
        let replies = send(s, &[&["MULTI"], &["SET", key, "mine"], &["EXEC"]]).await;
        let mut direct = to.client().await;
        let mut asking = redis::pipe();
        asking.cmd("ASKING").ignore().get(key);
        let (value,): (String,) = asking
            .query_async(&mut direct)
            .await
            .expect("GET on the new owner");
        assert_eq!(
            (replies, value.as_str()),
            (
                vec![
                    "+OK".to_string(),
                    "+QUEUED".to_string(),
                    "-EXECABORT Transaction discarded because of previous errors.".to_string()
                ],
                "theirs"
            ),
            "the transaction watching {key}, changed by another client, does not run once \
             its slot has moved"
        );
    }
}

/// A transaction over two keys of a slot caught halfway through its migration (one key moved,
/// the other not: the node answers `TRYAGAIN`) waits for the migration as a plain multi-key
/// command does, instead of answering `EXECABORT` at once, and then runs once, on the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_caught_halfway_through_a_migration_waits_and_runs_once() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .refresh_only_on_moved()
        .start_cluster()
        .await;
    let map = cluster.slot_map().await;
    let (a, b) = ("{half}a", "{half}b");
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(send(&mut s, &[&["MSET", a, "1", b, "1"]]).await, ["+OK"]);
    let slot = key_slot(a.as_bytes());
    let from = cluster.owner(&map, a);
    let masters = cluster.masters().await;
    let to = *masters
        .iter()
        .find(|m| m.addr() != from.addr())
        .expect("another master");
    let migration = SlotMigration::begin(&cluster, from, to, slot..=slot).await;
    let migrate = |key: &'static str| async move {
        let () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to.port())
            .arg(key)
            .arg(0)
            .arg(5000)
            .query_async(&mut from.client().await)
            .await
            .unwrap_or_else(|e| panic!("MIGRATE {key}: {e}"));
    };
    migrate(a).await;
    let retries = proxy.cluster_stats().retries;
    let tx = tokio::spawn(async move {
        let replies = send(&mut s, &[&["MULTI"], &["INCR", a], &["INCR", b], &["EXEC"]]).await;
        (replies, s)
    });
    eventually!(
        Duration::from_secs(5),
        proxy.cluster_stats().retries > retries,
        "the transaction met TRYAGAIN and waits"
    );
    assert!(!tx.is_finished(), "the transaction is still waiting");
    migrate(b).await;
    let (replies, _s) = tx.await.expect("the transaction's client");
    assert_eq!(replies, ["+OK", "+QUEUED", "+QUEUED", "*2\r\n:2\r\n:2"]);
    migration.finish().await;
    let mut direct = to.client().await;
    let values: Vec<i64> = redis::cmd("MGET")
        .arg(a)
        .arg(b)
        .query_async(&mut direct)
        .await
        .expect("MGET on the new owner");
    assert_eq!(values, [2, 2], "the transaction ran once, on {}", to.addr());
}

/// A `BLPOP` blocked in a slot that moves to another master follows it (the old owner unblocks
/// it with `MOVED`) and is released by a push that reaches the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_pop_follows_its_slot_to_the_new_owner() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .refresh_only_on_moved()
        .start_cluster()
        .await;
    let map = cluster.slot_map().await;
    let key = "{moving-queue}q";
    let slot = key_slot(key.as_bytes());
    let from = cluster.owner(&map, key);
    let masters = cluster.masters().await;
    let to = *masters
        .iter()
        .find(|m| m.addr() != from.addr())
        .expect("another master");
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let pop = tokio::spawn(async move { send(&mut s, &[&["BLPOP", key, "10"]]).await });
    eventually!(
        Duration::from_secs(5),
        from.info("clients").await.contains("blocked_clients:1"),
        "the BLPOP blocks on {}",
        from.addr()
    );
    let migration = SlotMigration::begin(&cluster, from, to, slot..=slot).await;
    assert_eq!(migration.move_keys().await, 0);
    migration.finish().await;
    let mut c = proxy.client().await;
    let len: i64 = redis::cmd("RPUSH")
        .arg(key)
        .arg("job")
        .query_async(&mut c)
        .await
        .expect("RPUSH through the proxy");
    assert_eq!(len, 1);
    assert_eq!(
        pop.await.expect("the blocked client"),
        [format!("*2\r\n${}\r\n{key}\r\n$3\r\njob", key.len())]
    );
    let left: i64 = redis::cmd("LLEN")
        .arg(key)
        .query_async(&mut to.client().await)
        .await
        .expect("LLEN on the new owner");
    assert_eq!(left, 0, "the job was popped on {}", to.addr());
}
