//! Scripts: Redis 7 does not replicate `SCRIPT LOAD`, so the proxy loads every script it has
//! seen onto every server: `EVALSHA_RO` works on the replicas, and `EVALSHA` on the replica a
//! failover promotes.

use std::time::Duration;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::Topology;

const SCRIPT: &str = "return redis.call('INCR', KEYS[1])";
const READ_SCRIPT: &str = "return redis.call('GET', KEYS[1])";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_reach_the_replicas_and_survive_a_failover() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let mut c = proxy.client().await;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query_async(&mut c)
        .await
        .unwrap();
    // A read-only script first run with EVAL_RO: the proxy learns it from the EVAL.
    let _: Option<String> = redis::cmd("EVAL_RO")
        .arg(READ_SCRIPT)
        .arg(1)
        .arg("s")
        .query_async(&mut c)
        .await
        .unwrap();
    for server in topo.servers() {
        eventually!(
            Duration::from_secs(5),
            {
                let mut direct = server.client().await;
                let have: Vec<i64> = redis::cmd("SCRIPT")
                    .arg("EXISTS")
                    .arg(&sha)
                    .arg(sha1_hex(READ_SCRIPT))
                    .query_async(&mut direct)
                    .await
                    .unwrap();
                have == [1, 1]
            },
            "{} has both scripts",
            server.addr()
        );
    }
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("s")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1);

    let new = topo.failover().await;
    eventually!(
        Duration::from_secs(15),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy follows the failover to {new}"
    );
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("s")
        .query_async(&mut c)
        .await
        .expect("EVALSHA runs on the promoted replica without NOSCRIPT");
    assert_eq!(n, 2);
}

fn sha1_hex(body: &str) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs an endless script through `proxy` on `key`'s master, then `SCRIPT KILL` through the proxy
/// from another client: the kill reaches the server (on a connection of its own, not behind the
/// script) and the script's client gets Redis's error.
async fn kill_through(proxy: &crate::harness::proxy::TestProxy, key: &str) {
    let mut looping = proxy.client().await;
    let key = key.to_string();
    let script = tokio::spawn(async move {
        redis::cmd("EVAL")
            .arg("while true do redis.call('GET', KEYS[1]) end")
            .arg(1)
            .arg(key)
            .query_async::<()>(&mut looping)
            .await
    });
    let mut killer = proxy.client().await;
    eventually!(
        Duration::from_secs(10),
        {
            let r: redis::RedisResult<String> = redis::cmd("SCRIPT")
                .arg("KILL")
                .query_async(&mut killer)
                .await;
            match r {
                Ok(ok) => ok == "OK",
                Err(e) if e.code() == Some("NOTBUSY") => false,
                Err(e) => panic!("SCRIPT KILL: {e}"),
            }
        },
        "SCRIPT KILL stops the script"
    );
    let err = script.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    let pong: String = redis::cmd("PING").query_async(&mut killer).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_kill_reaches_a_busy_server() {
    let server = crate::harness::RedisServer::start_with("busy-reply-threshold 100\n").await;
    let proxy = ProxyBuilder::servers(vec![server.addr()]).start(0).await;
    kill_through(&proxy, "busy").await;

    let cluster = crate::harness::Cluster::start(3, 0).await;
    for node in cluster.addrs() {
        let mut c = cluster.node(&node).client().await;
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("busy-reply-threshold")
            .arg(100)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    kill_through(&proxy, "busy").await;
}
