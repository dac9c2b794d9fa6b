//! Transactions and blocking commands: each runs on a backend connection pinned to its client,
//! in order with the client's other requests, without stalling anybody else.

use std::time::Duration;

use redis::AsyncCommands;
use tokio::io::AsyncWriteExt;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::redis::read_replies;
use crate::harness::RedisServer;

/// The server's `total_connections_received`.
async fn connections_received(server: &RedisServer) -> u64 {
    let info = server.info("stats").await;
    crate::harness::redis::info_field(&info, "total_connections_received")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
}

/// Raw RESP for inline commands.
fn inline(cmds: &[&str]) -> Vec<u8> {
    cmds.iter()
        .flat_map(|c| format!("{c}\r\n").into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_is_atomic_and_in_order_with_the_rest_of_the_pipeline() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .start(1)
        .await;
    // The redis crate's atomic pipeline: MULTI, the commands, EXEC in one write.
    let mut c = proxy.client().await;
    let (n, v): (i64, String) = redis::pipe()
        .atomic()
        .set("tx", 1)
        .ignore()
        .incr("tx", 1)
        .get("tx")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!((n, v.as_str()), (2, "2"));

    // Before, inside and after the transaction, in one pipeline: the transaction sees the SET
    // before it, the GET after it sees the transaction.
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let input = inline(&[
        "SET o 10", "MULTI", "INCR o", "PING", "GET o", "EXEC", "GET o", "EXEC", "DISCARD",
    ]);
    s.write_all(&input).await.unwrap();
    let got = read_replies(&mut s, 9).await;
    assert_eq!(
        got,
        [
            "+OK",
            "+OK",
            "+QUEUED",
            "+QUEUED",
            "+QUEUED",
            "*3\r\n:11\r\n+PONG\r\n$2\r\n11",
            "$2\r\n11",
            "-ERR EXEC without MULTI",
            "-ERR DISCARD without MULTI",
        ]
    );
    // Both transactions ran on the master (a replica counts the EXECs it replicates, so the
    // master's own count is what tells).
    assert_eq!(master.commandstats("exec").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_connections_are_reused_and_never_mix_clients() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let before = connections_received(&master).await;
    const CLIENTS: usize = 4;
    const TXS: i64 = 100;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let mut c = proxy.client().await;
        tasks.push(tokio::spawn(async move {
            let key = format!("{{c{client}}}n");
            for i in 1..=TXS {
                // Some transactions are discarded, some watched: every way one ends.
                if i % 10 == 0 {
                    let () = redis::cmd("WATCH")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    let () = redis::cmd("UNWATCH").query_async(&mut c).await.unwrap();
                }
                let me = format!("{client}:{i}");
                let (n, echoed): (i64, String) = redis::pipe()
                    .atomic()
                    .incr(&key, 1)
                    .cmd("ECHO")
                    .arg(&me)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                assert_eq!(
                    n, i,
                    "client {client}'s own counter, in its own transaction"
                );
                assert_eq!(echoed, me);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let opened = connections_received(&master).await - before;
    // Unrecycled, it would be one connection per transaction and WATCH: 440.
    assert!(
        opened <= 40,
        "{opened} backend connections for 440 pinned uses"
    );

    // CLIENT commands inside MULTI are queued like the rest (the connection answers them).
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&inline(&["MULTI", "CLIENT GETNAME", "EXEC"]))
        .await
        .unwrap();
    assert_eq!(
        read_replies(&mut s, 3).await,
        ["+OK", "+QUEUED", "*1\r\n$10\r\nhaproxy-rs"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_another_clients_write_and_aborts_the_transaction() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut other = proxy.client().await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&inline(&["SET w 1", "WATCH w", "GET w"]))
        .await
        .unwrap();
    assert_eq!(read_replies(&mut s, 3).await, ["+OK", "+OK", "$1\r\n1"]);
    // Another client changes the watched key: the transaction must not run.
    let () = other.set("w", "theirs").await.unwrap();
    s.write_all(&inline(&["MULTI", "SET w mine", "EXEC", "GET w"]))
        .await
        .unwrap();
    assert_eq!(
        read_replies(&mut s, 4).await,
        ["+OK", "+QUEUED", "*-1", "$6\r\ntheirs"]
    );
    // Without a conflicting write, WATCH ... EXEC runs; UNWATCH without WATCH is fine.
    s.write_all(&inline(&[
        "WATCH w",
        "MULTI",
        "SET w mine",
        "EXEC",
        "UNWATCH",
    ]))
    .await
    .unwrap();
    assert_eq!(
        read_replies(&mut s, 5).await,
        ["+OK", "+OK", "+QUEUED", "*1\r\n+OK", "+OK"]
    );
    let v: String = other.get("w").await.unwrap();
    assert_eq!(v, "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_pop_waits_on_its_own_connection_and_is_released_by_a_push() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut blocked = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    blocked
        .write_all(&inline(&["BLPOP queue 10", "GET after"]))
        .await
        .unwrap();
    eventually!(
        Duration::from_secs(5),
        master.info("clients").await.contains("blocked_clients:1"),
        "the BLPOP blocks on the master"
    );
    // Everybody else keeps going meanwhile (the shared connections are not stalled).
    let mut c = proxy.client().await;
    for i in 0..50 {
        let () = c.set("after", i).await.unwrap();
    }
    let () = c.rpush("queue", "job").await.unwrap();
    assert_eq!(
        read_replies(&mut blocked, 2).await,
        ["*2\r\n$5\r\nqueue\r\n$3\r\njob", "$2\r\n49"],
        "the pop returns the pushed job, and the client's next request runs after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_blocking_pop_frees_its_connection() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut blocked = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    blocked.write_all(b"BLPOP nothing 0\r\n").await.unwrap();
    eventually!(
        Duration::from_secs(5),
        master.info("clients").await.contains("blocked_clients:1"),
        "the BLPOP blocks on the master"
    );
    drop(blocked);
    eventually!(
        Duration::from_secs(5),
        master.info("clients").await.contains("blocked_clients:0"),
        "the client's pinned connection is closed when it goes away"
    );
    // Nothing pushed later is lost to the gone client's pop.
    let mut c = proxy.client().await;
    let () = c.rpush("nothing", "kept").await.unwrap();
    let len: i64 = c.llen("nothing").await.unwrap();
    assert_eq!(len, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_watch_connection_says_nothing_ran() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&inline(&["WATCH k"])).await.unwrap();
    assert_eq!(read_replies(&mut s, 1).await, ["+OK"]);
    // The server drops every connection (the proxy's shared ones reconnect by themselves).
    let mut admin = master.client().await;
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("SKIPME")
        .arg("yes")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .unwrap();
    let lost = format!(
        "-ERR haproxy-rs: the connection to {} held for this client's transaction or WATCH was lost before; the command was not executed",
        master.addr()
    );
    eventually!(Duration::from_secs(5), {
        s.write_all(&inline(&["GET k"])).await.unwrap();
        read_replies(&mut s, 1).await[0] == lost
    });
    // UNWATCH lets go of it; the client goes on, on a new connection.
    s.write_all(&inline(&["UNWATCH", "MULTI", "SET k 1", "EXEC"]))
        .await
        .unwrap();
    let got = read_replies(&mut s, 4).await;
    assert_eq!(got[1..], ["+OK", "+QUEUED", "*1\r\n+OK"], "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_connections_do_not_count_against_the_bound() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()])
        .with(|c| {
            c.backend.max_pinned_connections = 1;
            c.failover.hold_ms = 300;
        })
        .start(0)
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // A transaction in database 0 leaves an idle connection behind; one in database 1 needs
    // another, which the bound of 1 allows since the idle one holds no permit.
    s.write_all(&inline(&[
        "MULTI", "SET a 1", "EXEC", "SELECT 1", "MULTI", "SET b 1", "EXEC",
    ]))
    .await
    .unwrap();
    assert_eq!(
        read_replies(&mut s, 7).await,
        [
            "+OK",
            "+QUEUED",
            "*1\r\n+OK",
            "+OK",
            "+OK",
            "+QUEUED",
            "*1\r\n+OK"
        ]
    );
    // The bound still holds for connections in use: a second client's WATCH waits, then is
    // refused while the first one's is held.
    s.write_all(&inline(&["WATCH b"])).await.unwrap();
    assert_eq!(read_replies(&mut s, 1).await, ["+OK"]);
    let mut t = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    t.write_all(&inline(&["WATCH c"])).await.unwrap();
    let refused = read_replies(&mut t, 1).await;
    assert!(refused[0].starts_with("-TRYAGAIN"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_started_without_a_master_waits_for_one() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .with(|c| c.failover.hold_ms = 10_000)
        .start(1)
        .await;
    // Static mode keeps a silent master until another server says it is master: MULTI finds
    // no connection to open there, and waits (as do the commands after it) instead of
    // answering TRYAGAIN.
    master.kill();
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&inline(&["MULTI", "INCR n", "EXEC", "BLPOP q 1"]))
        .await
        .unwrap();
    let replies = tokio::spawn(async move { read_replies(&mut s, 4).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !replies.is_finished(),
        "nothing is answered while there is no master"
    );
    let mut r = replica.client().await;
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut r)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(8), replies)
        .await
        .expect("answered once the replica is master")
        .unwrap();
    assert_eq!(got, ["+OK", "+QUEUED", "*1\r\n:1", "*-1"]);
    let n: i64 = r.get("n").await.unwrap();
    assert_eq!(n, 1, "the transaction ran once, on the new master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_reuse_their_connections() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut c = proxy.client().await;
    let () = c.rpush("jobs", "warm").await.unwrap();
    let _: Option<(String, String)> = c.blpop("jobs", 0.05).await.unwrap();
    let before = connections_received(&master).await;
    // A worker loop: pops that time out, and pops that get a job.
    for i in 0..30 {
        if i % 2 == 0 {
            let () = c.rpush("jobs", i).await.unwrap();
        }
        let got: Option<(String, String)> = c.blpop("jobs", 0.05).await.unwrap();
        assert_eq!(got.is_some(), i % 2 == 0, "pop {i}");
    }
    let opened = connections_received(&master).await - before;
    assert!(
        opened <= 3,
        "{opened} backend connections for 30 blocking pops"
    );
}
