//! The main endpoint reads like one server (issue 14, item 3): a read never returns data older
//! than a write any client was acknowledged for through the proxy, and a `SCAN`-family iteration
//! stays on the server its cursor came from, across a planned failover too.

use std::collections::HashSet;
use std::time::Duration;

use haproxy_rs::config::{ReadConsistency, ReadPolicy};
use redis::aio::MultiplexedConnection;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::Topology;

const KEYS: usize = 1000;

/// One client writes `KEYS` keys and the members of a set, a hash and a sorted set, and gets
/// every reply.
async fn write_everything(c: &mut MultiplexedConnection, tag: &str) {
    let mut p = redis::pipe();
    for i in 0..KEYS {
        p.cmd("SET").arg(format!("{tag}:k:{i}")).arg(i).ignore();
        p.cmd("SADD").arg(format!("{tag}:set")).arg(i).ignore();
        p.cmd("HSET")
            .arg(format!("{tag}:hash"))
            .arg(i)
            .arg(i)
            .ignore();
        p.cmd("ZADD")
            .arg(format!("{tag}:zset"))
            .arg(i)
            .arg(i)
            .ignore();
    }
    let () = p.query_async(c).await.expect("every write acknowledged");
}

/// A whole iteration of `cmd` (`SCAN` or `SSCAN key` ...), `COUNT 10`: the distinct elements
/// (for `HSCAN`/`ZSCAN` every other one, the fields or members).
async fn iterate(
    c: &mut MultiplexedConnection,
    cmd: &str,
    key: Option<&str>,
    tag: &str,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let pairs = matches!(cmd, "HSCAN" | "ZSCAN");
    for _ in 0..10_000 {
        let mut r = redis::cmd(cmd);
        if let Some(k) = key {
            r.arg(k);
        }
        r.arg(&cursor).arg("COUNT").arg(10);
        if key.is_none() {
            r.arg("MATCH").arg(format!("{tag}:k:*"));
        }
        let (next, items): (String, Vec<String>) = r.query_async(c).await.expect("a scan reply");
        let step = if pairs { 2 } else { 1 };
        seen.extend(items.into_iter().step_by(step));
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
    panic!("{cmd} did not end in 10,000 calls");
}

async fn iterate_all(c: &mut MultiplexedConnection, tag: &str) -> [usize; 4] {
    [
        iterate(c, "SCAN", None, tag).await.len(),
        iterate(c, "SSCAN", Some(&format!("{tag}:set")), tag)
            .await
            .len(),
        iterate(c, "HSCAN", Some(&format!("{tag}:hash")), tag)
            .await
            .len(),
        iterate(c, "ZSCAN", Some(&format!("{tag}:zset")), tag)
            .await
            .len(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_scans_every_key_the_first_was_acknowledged_for() {
    let topo = Topology::builder().replicas(2).sentinels(1).start().await;
    // The defaults ([routing] read_consistency = "acknowledged-writes"), not the harness's.
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c| c.routing = Default::default())
        .start(2)
        .await;
    let mut writer = proxy.client().await;
    let mut reader = proxy.client().await;
    for round in 0..3 {
        let tag = format!("r{round}");
        write_everything(&mut writer, &tag).await;
        assert_eq!(
            iterate_all(&mut reader, &tag).await,
            [KEYS; 4],
            "round {round}: SCAN, SSCAN, HSCAN, ZSCAN by a second client right after the writes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_across_a_planned_failover_returns_every_key() {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    // Every read to the master: the iteration's server changes role under it.
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c| c.routing.read_policy = ReadPolicy::Master)
        .start(1)
        .await;
    let mut writer = proxy.client().await;
    write_everything(&mut writer, "f").await;
    topo.replicas[0].wait_caught_up(&topo.master).await;
    let mut c = proxy.client().await;
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    let old = topo.master.addr();
    loop {
        if calls == 20 {
            let new = topo.failover().await;
            eventually!(
                Duration::from_secs(30),
                proxy.master().as_deref() == Some(new.as_str()),
                "the proxy follows the failover to {new}"
            );
            assert_ne!(new, old);
        }
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg("f:k:*")
            .arg("COUNT")
            .arg(10)
            .query_async(&mut c)
            .await
            .expect("every call of the iteration answered");
        seen.extend(keys);
        calls += 1;
        if next == "0" {
            break;
        }
        assert!(calls < 10_000, "SCAN did not end");
        cursor = next;
    }
    assert!(
        calls > 20,
        "the failover came mid-iteration ({calls} calls)"
    );
    assert_eq!(
        seen.len(),
        KEYS,
        "every key present for the whole iteration"
    );
}

/// Item 6: what a client sent the master that is not read-only counts as a write for its reads,
/// `FUNCTION LOAD` included: `FCALL_RO` in the same pipeline
/// finds the function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_function_load_sees_the_function() {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c| c.routing.read_consistency = ReadConsistency::ReadYourWrites)
        .start(1)
        .await;
    let mut c = proxy.client().await;
    for i in 0..30 {
        let lib = format!(
            "#!lua name=lib{i}\nredis.register_function{{function_name='f{i}', callback=function() return {i} end, flags={{'no-writes'}}}}"
        );
        let (name, got): (String, i64) = redis::pipe()
            .cmd("FUNCTION")
            .arg("LOAD")
            .arg(&lib)
            .cmd("FCALL_RO")
            .arg(format!("f{i}"))
            .arg(0)
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("library {i}: {e}"));
        assert_eq!((name, got), (format!("lib{i}"), i));
    }
}
