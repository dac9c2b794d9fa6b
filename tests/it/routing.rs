//! Where commands go: writes to the master, reads over the replicas, replies in order.

use std::time::Duration;

use redis::AsyncCommands;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::redis::read_replies;
use crate::harness::{RedisServer, Topology};

/// A master and two linked replicas, no sentinel (static mode is enough for routing).
async fn trio() -> (RedisServer, RedisServer, RedisServer) {
    let master = RedisServer::start().await;
    let r1 = RedisServer::start_replica_of(&master).await;
    let r2 = RedisServer::start_replica_of(&master).await;
    (master, r1, r2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_on_the_master() {
    let (master, r1, r2) = trio().await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), r1.addr(), r2.addr()])
        .start(2)
        .await;
    assert_eq!(proxy.master().as_deref(), Some(master.addr().as_str()));
    let mut c = proxy.client().await;
    for i in 0..50 {
        let _: () = c.set(format!("w{i}"), i).await.unwrap();
    }
    // Every SET was acknowledged, which a replica would have refused with -READONLY; the master
    // ran each exactly once (replicas count replicated copies in their own commandstats).
    assert_eq!(master.commandstats("set").await, 50);
    for r in [&r1, &r2] {
        let errors = r.info("errorstats").await;
        assert!(
            !errors.contains("READONLY"),
            "a replica refused a write: {errors}"
        );
    }
    let mut direct = master.client().await;
    let v: i64 = direct.get("w49").await.unwrap();
    assert_eq!(v, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_over_both_replicas() {
    let (master, r1, r2) = trio().await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), r1.addr(), r2.addr()])
        .start(2)
        .await;
    let mut c = proxy.client().await;
    for _ in 0..200 {
        let _: Option<String> = c.get("nothing").await.unwrap();
    }
    let (g0, g1, g2) = (
        master.commandstats("get").await,
        r1.commandstats("get").await,
        r2.commandstats("get").await,
    );
    assert_eq!(g0, 0, "no read went to the master");
    assert_eq!(g1 + g2, 200);
    assert!(g1 >= 50 && g2 >= 50, "round-robin: {g1} and {g2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_pipeline_comes_back_in_order_and_reads_its_own_writes() {
    let (master, r1, r2) = trio().await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), r1.addr(), r2.addr()])
        .start(2)
        .await;
    let mut c = proxy.client().await;
    for round in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..25 {
            let key = format!("p{i}");
            pipe.set(&key, format!("{round}-{i}")).ignore().get(&key);
        }
        let got: Vec<String> = pipe.query_async(&mut c).await.unwrap();
        let want: Vec<String> = (0..25).map(|i| format!("{round}-{i}")).collect();
        assert_eq!(got, want, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_return_to_replicas_once_they_have_the_write() {
    let (master, r1, r2) = trio().await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), r1.addr(), r2.addr()])
        .start(2)
        .await;
    let mut c = proxy.client().await;
    let _: () = c.set("ryw", "1").await.unwrap();
    let before = r1.commandstats("get").await + r2.commandstats("get").await;
    eventually!(Duration::from_secs(5), {
        let v: String = c.get("ryw").await.unwrap();
        assert_eq!(
            v, "1",
            "a read never sees an older value than the client's write"
        );
        r1.commandstats("get").await + r2.commandstats("get").await > before
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_endpoint_serves_replicas_and_refuses_writes() {
    let (master, r1, r2) = trio().await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), r1.addr(), r2.addr()])
        .start(2)
        .await;
    let mut direct = master.client().await;
    let _: () = direct.set("ro", "x").await.unwrap();
    let mut c = proxy.read_client().await;
    eventually!(Duration::from_secs(5), {
        let v: Option<String> = c.get("ro").await.unwrap();
        v.as_deref() == Some("x")
    });
    let err = c.set::<_, _, ()>("ro", "y").await.unwrap_err();
    assert_eq!(err.code(), Some("READONLY"), "{err}");
    assert_eq!(master.commandstats("get").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state_commands_get_a_clear_error() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut c = proxy.client().await;
    let err = redis::cmd("READWRITE")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not support"), "{err}");
    // The connection still works, and SELECT 0 is harmless.
    let _: () = redis::cmd("SELECT")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_finds_master_and_replicas() {
    let topo = Topology::start(2, 1).await;
    let proxy = ProxyBuilder::sentinel(&topo).eventual().start(2).await;
    assert_eq!(proxy.master(), Some(topo.master.addr()));
    let mut c = proxy.client().await;
    let _: () = c.set("s", "1").await.unwrap();
    assert_eq!(topo.master.commandstats("set").await, 1);
    for _ in 0..20 {
        let _: Option<String> = c.get("s").await.unwrap();
    }
    let replica_gets: u64 =
        topo.replicas[0].commandstats("get").await + topo.replicas[1].commandstats("get").await;
    assert_eq!(replica_gets, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answers_keep_their_place_in_a_pipeline() {
    let (master, r1, r2) = trio().await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), r1.addr(), r2.addr()])
        .start(2)
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let input = "SET o 1\r\nGET o\r\nPING\r\nGET missing\r\nECHO x\r\nMULTI\r\nINCR o\r\nGET o\r\nPING hi\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, input.as_bytes())
        .await
        .unwrap();
    let got = read_replies(&mut s, 9).await;
    assert_eq!(got.len(), 9, "{got:?}");
    assert_eq!(got[..5], ["+OK", "$1\r\n1", "+PONG", "$-1", "$1\r\nx"]);
    // MULTI pins a connection to the master: the rest is queued there, PING included.
    assert_eq!(
        got[5..],
        ["+OK", "+QUEUED", "+QUEUED", "+QUEUED"],
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_pipeline_gets_one_reply_when_the_master_dies() {
    let master = RedisServer::start_with("enable-debug-command yes\n").await;
    let proxy = ProxyBuilder::servers(vec![master.addr()])
        .with(|c| c.failover.hold_ms = 2000)
        .start(0)
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // The master sleeps on the second request, so every request is in flight when it dies (Redis
    // sends a pipeline's replies together, so not even the first one has been answered).
    let input = "SET d 1\r\nDEBUG SLEEP 5\r\nSET d 2\r\nPING\r\nGET d\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, input.as_bytes())
        .await
        .unwrap();
    eventually!(Duration::from_secs(5), !master.answers_ping().await);
    master.kill();
    let got = read_replies(&mut s, 5).await;
    assert_eq!(got.len(), 5, "{got:?}");
    // The read is safe to run again: it waits for a master as held requests do, and with none
    // back within hold_ms it is refused as not executed.
    assert!(
        got[4].starts_with("-TRYAGAIN haproxy-rs") && got[4].contains("not executed"),
        "{got:?}"
    );
    for i in [0, 1, 2] {
        assert!(
            got[i].starts_with("-ERR") && got[i].contains("outcome is unknown"),
            "request {i} has an outcome-unknown error: {got:?}"
        );
    }
    assert_eq!(got[3], "+PONG", "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_gives_each_client_its_own_database() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .start(1)
        .await;
    // One pipeline that switches databases (its GET reads its own write: read-your-writes): each request runs in the database selected before it.
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let input =
        "SET k zero\r\nSELECT 2\r\nSET k two\r\nSELECT 0\r\nGET k\r\nSELECT 16\r\nSELECT x\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, input.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_replies(&mut s, 7).await,
        [
            "+OK",
            "+OK",
            "+OK",
            "+OK",
            "$4\r\nzero",
            "-ERR DB index is out of range",
            "-ERR value is not an integer or out of range"
        ]
    );
    // Another client in database 2 reads what the first wrote there (from the replica once it
    // has the write: reads go to replicas in any database), and database 2 really is the
    // server's.
    let mut c = proxy.client().await;
    let () = redis::cmd("SELECT")
        .arg(2)
        .query_async(&mut c)
        .await
        .unwrap();
    eventually!(
        Duration::from_secs(5),
        c.get::<_, Option<String>>("k").await.unwrap().as_deref() == Some("two")
            && replica.commandstats("get").await >= 1,
        "database 2 has k = two, read from the replica"
    );
    let mut direct = master.client().await;
    let () = redis::cmd("SELECT")
        .arg(2)
        .query_async(&mut direct)
        .await
        .unwrap();
    let v: String = direct.get("k").await.unwrap();
    assert_eq!(v, "two");
    assert!(
        replica.commandstats("get").await >= 1,
        "reads in database 2 reach the replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_commands_answer_for_each_client() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut a = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    send(
        &mut a,
        "CLIENT SETNAME alpha\r\nCLIENT GETNAME\r\nCLIENT ID\r\n",
    )
    .await;
    send(
        &mut b,
        "CLIENT GETNAME\r\nCLIENT SETNAME 'a b'\r\nCLIENT NO-EVICT on\r\n",
    )
    .await;
    let ra = read_replies(&mut a, 3).await;
    let rb = read_replies(&mut b, 3).await;
    assert_eq!(ra[..2], ["+OK", "$5\r\nalpha"]);
    assert!(ra[2].starts_with(':'), "{ra:?}");
    assert_eq!(
        rb,
        [
            "$-1",
            "-ERR Client names cannot contain spaces, newlines or special characters.",
            "+OK"
        ]
    );
    // RESET: back to database 0, no name, no transaction (the one in progress is dropped).
    send(
        &mut a,
        "SELECT 3\r\nSET r 3\r\nMULTI\r\nSET r never\r\nRESET\r\nCLIENT GETNAME\r\nGET r\r\nEXEC\r\nCLIENT INFO\r\n",
    )
    .await;
    let got = read_replies(&mut a, 9).await;
    assert_eq!(
        got[..8],
        [
            "+OK",
            "+OK",
            "+OK",
            "+QUEUED",
            "+RESET",
            "$-1",
            "$-1",
            "-ERR EXEC without MULTI"
        ]
    );
    assert!(
        got[8].contains(" db=0 ") && got[8].contains("name= "),
        "{}",
        got[8]
    );
    let mut direct = master.client().await;
    let () = redis::cmd("SELECT")
        .arg(3)
        .query_async(&mut direct)
        .await
        .unwrap();
    let v: String = direct.get("r").await.unwrap();
    assert_eq!(v, "3", "the transaction dropped by RESET never ran");

    // HELLO's SETNAME names the client too; a bad name fails the whole HELLO, as in Redis 7.0.
    send(
        &mut b,
        "HELLO 2 SETNAME beta\r\nCLIENT GETNAME\r\nHELLO 3 SETNAME 'x y'\r\nCLIENT GETNAME\r\n",
    )
    .await;
    let got = read_replies(&mut b, 4).await;
    assert!(got[0].starts_with("*14"), "{got:?}");
    assert_eq!(
        got[1..],
        [
            "$4\r\nbeta",
            "-ERR Client names cannot contain spaces, newlines or special characters.",
            "$4\r\nbeta"
        ]
    );
}

async fn send(s: &mut tokio::net::TcpStream, text: &str) {
    tokio::io::AsyncWriteExt::write_all(s, text.as_bytes())
        .await
        .unwrap();
}

/// A master busy with a long script misses its health checks (it answers nothing meanwhile), but
/// a busy server is not a dead one: the requests waiting on it complete when it is done, nothing
/// gets "outcome unknown", and /healthz says "no master" only while it is silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_busy_with_a_long_script_keeps_its_requests() {
    const BUSY: &str = "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
                        repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - s > ARGV[1] * 1000 \
                        return 1";
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // The script holds the server 2.5 s, past the health checks' 1 s timeout.
    let input =
        "EVAL \"".to_string() + BUSY + "\" 0 2500\r\nSET after-busy 1\r\nGET after-busy\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, input.as_bytes())
        .await
        .unwrap();
    eventually!(
        Duration::from_secs(5),
        !proxy.proxy.stats.snapshot().healthy(),
        "the silent master shows on /healthz"
    );
    assert_eq!(
        read_replies(&mut s, 3).await,
        [":1", "+OK", "$1\r\n1"],
        "the requests that waited on the busy master complete"
    );
    assert_eq!(proxy.master(), Some(master.addr()));
    eventually!(
        Duration::from_secs(5),
        proxy.proxy.stats.snapshot().healthy(),
        "healthy again once it answers"
    );
}
