//! Transactions, `WATCH` and blocking commands in cluster mode: queued by the proxy, run on a
//! connection of the client's own to the master of their slot.

use std::time::Duration;

use redis::AsyncCommands;
use tokio::io::AsyncWriteExt;

use super::{cluster_and_proxy, cmd, raw, CROSSSLOT};
use crate::eventually;
use crate::harness::redis::read_replies;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_run_on_the_master_of_their_slot() {
    let (_cluster, proxy) = cluster_and_proxy(|b| b).await;
    // The read-only endpoint runs no transaction or blocking command, as in Sentinel mode.
    let mut r = tokio::net::TcpStream::connect(proxy.read_addr())
        .await
        .unwrap();
    r.write_all(b"MULTI\r\nWATCH {u}a\r\nBLPOP {u}q 1\r\nGET {u}a\r\n")
        .await
        .unwrap();
    let readonly = "-READONLY You can't write against a read only replica.";
    assert_eq!(
        read_replies(&mut r, 4).await,
        [readonly, readonly, readonly, "$-1"]
    );
    let got = raw(
        &proxy,
        &[
            cmd(&["MULTI"]),
            cmd(&["SET", "{u}a", "1"]),
            cmd(&["INCR", "{u}a"]),
            cmd(&["PING"]),
            cmd(&["GET", "{u}a"]),
            cmd(&["EXEC"]),
            cmd(&["GET", "{u}a"]),
            cmd(&["EXEC"]),
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            "+OK",
            "+QUEUED",
            "+QUEUED",
            "+QUEUED",
            "+QUEUED",
            "*4\r\n+OK\r\n:2\r\n+PONG\r\n$1\r\n2",
            "$1\r\n2",
            "-ERR EXEC without MULTI",
        ]
    );
    // Keys of two slots in one transaction: Redis Cluster's CROSSSLOT, and EXEC aborts.
    let got = raw(
        &proxy,
        &[
            cmd(&["MULTI"]),
            cmd(&["SET", "a", "1"]),
            cmd(&["SET", "b", "2"]),
            cmd(&["EXEC"]),
            cmd(&["EXISTS", "a"]),
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            "+OK",
            "+QUEUED",
            CROSSSLOT,
            "-EXECABORT Transaction discarded because of previous errors.",
            ":0"
        ]
    );
    // A command of the wrong arity is refused when queued, as Redis does (redis-py's pipeline
    // reports that error), and EXEC aborts.
    let got = raw(
        &proxy,
        &[
            cmd(&["MULTI"]),
            cmd(&["SET", "{k}a", "1"]),
            cmd(&["ZREM", "{k}b"]),
            cmd(&["SET", "{k}b", "2"]),
            cmd(&["EXEC"]),
            cmd(&["EXISTS", "{k}a"]),
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            "+OK",
            "+QUEUED",
            "-ERR wrong number of arguments for 'zrem' command",
            "+QUEUED",
            "-EXECABORT Transaction discarded because of previous errors.",
            ":0"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_aborts_on_another_clients_write_and_blocking_pops_wait_alone() {
    let (_cluster, proxy) = cluster_and_proxy(|b| b).await;
    let mut other = proxy.client().await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let send = |cmds: &[&[&str]]| {
        cmds.iter()
            .flat_map(|c| haproxy_rs::resp::encode_command(c).to_vec())
            .collect::<Vec<u8>>()
    };
    s.write_all(&send(&[&["SET", "{w}k", "1"], &["WATCH", "{w}k"]]))
        .await
        .unwrap();
    assert_eq!(read_replies(&mut s, 2).await, ["+OK", "+OK"]);
    let () = other.set("{w}k", "theirs").await.unwrap();
    s.write_all(&send(&[
        &["MULTI"],
        &["SET", "{w}k", "mine"],
        &["EXEC"],
        &["GET", "{w}k"],
    ]))
    .await
    .unwrap();
    assert_eq!(
        read_replies(&mut s, 4).await,
        ["+OK", "+QUEUED", "*-1", "$6\r\ntheirs"]
    );

    // A transaction whose keys live on another node than its WATCH cannot keep the WATCH: it
    // aborts, as on Redis Cluster, and runs nowhere.
    let map = _cluster.slot_map().await;
    let owner = |k: &str| {
        let slot = haproxy_rs::router::slot::key_slot(k.as_bytes());
        map.owners(slot).unwrap().master.clone()
    };
    let elsewhere = (0..)
        .map(|i| format!("elsewhere:{i}"))
        .find(|k| owner(k) != owner("{w}k"))
        .unwrap();
    s.write_all(&send(&[
        &["WATCH", "{w}k"],
        &["MULTI"],
        &["SET", &elsewhere, "1"],
        &["EXEC"],
        &["EXISTS", &elsewhere],
    ]))
    .await
    .unwrap();
    assert_eq!(
        read_replies(&mut s, 5).await,
        [
            "+OK",
            "+OK",
            "+QUEUED",
            "-EXECABORT Transaction discarded because of previous errors.",
            ":0"
        ]
    );

    // A blocking pop waits on its own connection; the client's next request waits for it, and
    // everybody else goes on.
    s.write_all(&send(&[&["BLPOP", "{q}jobs", "10"], &["GET", "{w}k"]]))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..50 {
        let () = other.set(format!("k{i}"), i).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let () = other.rpush("{q}jobs", "job").await.unwrap();
    assert_eq!(
        read_replies(&mut s, 2).await,
        ["*2\r\n$7\r\n{q}jobs\r\n$3\r\njob", "$6\r\ntheirs"]
    );
    // Nothing is left blocked on the cluster.
    eventually!(
        Duration::from_secs(5),
        {
            let mut blocked = 0;
            for m in _cluster.masters().await {
                let info = m.info("clients").await;
                if !info.contains("blocked_clients:0") {
                    blocked += 1;
                }
            }
            blocked == 0
        },
        "no client stays blocked"
    );
}
