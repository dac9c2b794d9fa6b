//! Busy servers (issue 14, item 1): a runaway script is killed through the proxy with
//! `SCRIPT KILL`/`FUNCTION KILL` wherever it runs (the master, or a replica for `EVAL_RO`), on
//! connections that do not wait behind it, and its client gets Redis's own error.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::redis::read_replies;
use crate::harness::{RedisServer, Topology};
use crate::security::{raw, send};
use crate::stats_http::backend_json;

/// Whether `server` answers `-BUSY` (a script is running past `busy-reply-threshold`).
async fn busy(server: &RedisServer) -> bool {
    let addr = server.addr().parse().expect("an address");
    raw(addr, &[&["PING"]]).await[0].starts_with("-BUSY")
}

/// Starts `script` (`EVAL`/`EVAL_RO`/`FCALL`... and its arguments) through the proxy on a
/// connection of its own, without reading the reply.
async fn start_runaway(proxy: std::net::SocketAddr, script: &[&str]) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(&haproxy_rs::resp::encode_command(script))
        .await
        .expect("send");
    s
}

/// An endless `EVAL` through `proxy`, running on the master past a `busy-reply-threshold` of
/// 200 ms (set through the proxy).
async fn runaway_on_the_master(topo: &Topology, proxy: std::net::SocketAddr) -> TcpStream {
    let set = raw(proxy, &[&["CONFIG", "SET", "busy-reply-threshold", "200"]]).await;
    assert_eq!(set, ["+OK"]);
    let runaway = start_runaway(proxy, &["EVAL", "while true do end", "0"]).await;
    eventually!(
        Duration::from_secs(10),
        busy(&topo.master).await,
        "the script runs"
    );
    runaway
}

/// The script's own client gets Redis's error for a killed script.
async fn assert_killed(runaway: &mut TcpStream) {
    let got = tokio::time::timeout(Duration::from_secs(10), read_replies(runaway, 1))
        .await
        .expect("the script's client gets its reply");
    assert!(
        got[0].starts_with("-ERR Script killed by user with"),
        "the script's own client gets Redis's error: {got:?}"
    );
}

async fn killed_through_the_proxy(script: &[&str], kill: &str, runs_on_replica: bool) {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    // Reads to the replica whatever was written just before (a read-only script there).
    let proxy = ProxyBuilder::sentinel(&topo).eventual().start(1).await;
    let set = raw(
        proxy.addr(),
        &[&["CONFIG", "SET", "busy-reply-threshold", "200"]],
    )
    .await;
    assert_eq!(set, ["+OK"]);
    let lib = "#!lua name=spin\nredis.register_function{function_name='spin', callback=function() while true do end end, flags={'no-writes'}}";
    let loaded = raw(proxy.addr(), &[&["FUNCTION", "LOAD", lib]]).await;
    assert_eq!(loaded, ["$4\r\nspin"]);
    topo.replicas[0].wait_caught_up(&topo.master).await;
    let server = if runs_on_replica {
        &topo.replicas[0]
    } else {
        &topo.master
    };
    let mut runaway = start_runaway(proxy.addr(), script).await;
    eventually!(
        Duration::from_secs(10),
        busy(server).await,
        "{script:?} runs on {}",
        server.addr()
    );

    let killed = raw(proxy.addr(), &[&[kill, "KILL"]]).await;
    assert_eq!(killed, ["+OK"], "{kill} KILL through the proxy");
    assert_killed(&mut runaway).await;
    eventually!(
        Duration::from_secs(5),
        !busy(server).await,
        "the server is free again"
    );
    // Writes go on; nothing was held or cut.
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(send(&mut c, &[&["SET", "after", "1"]]).await, ["+OK"]);
    // And a kill with nothing running says so, as Redis does.
    let none = raw(proxy.addr(), &[&[kill, "KILL"]]).await;
    assert_eq!(none, ["-NOTBUSY No scripts in execution right now."]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_eval_on_the_master_is_killed_with_script_kill() {
    killed_through_the_proxy(&["EVAL", "while true do end", "0"], "SCRIPT", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_eval_ro_on_a_replica_is_killed_with_script_kill() {
    let script = ["EVAL_RO", "while true do end", "0"];
    killed_through_the_proxy(&script, "SCRIPT", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_fcall_ro_on_a_replica_is_killed_with_function_kill() {
    killed_through_the_proxy(&["FCALL_RO", "spin", "0"], "FUNCTION", true).await;
}

/// A script longer than `command_timeout_ms` does not get its shared connection cut while the
/// server answers `-BUSY` elsewhere: the script's client gets the script's own end (today's
/// alternative was "outcome unknown" with the script still running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_outliving_command_timeout_keeps_its_connection() {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c| c.backend.command_timeout_ms = 1000)
        .start(1)
        .await;
    let mut runaway = runaway_on_the_master(&topo, proxy.addr()).await;
    // Twice command_timeout_ms and more: time for the proxy to give the connection up.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // A busy server is alive: its health checks (answered -BUSY) keep it up.
    let b = backend_json(proxy.stats_addr(), &topo.master.addr()).await;
    assert_eq!(b["state"], "UP", "the busy master on /stats.json: {b}");
    assert_eq!(raw(proxy.addr(), &[&["SCRIPT", "KILL"]]).await, ["+OK"]);
    assert_killed(&mut runaway).await;
}

/// Another client's command while a script keeps the server busy gets Redis's `-BUSY` at once,
/// as directly, instead of waiting behind the script on the shared connection for as long as it
/// runs; it did not run, and commands run again once the script is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_behind_a_busy_script_gets_busy_as_from_redis() {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    let mut runaway = runaway_on_the_master(&topo, proxy.addr()).await;
    let master: std::net::SocketAddr = topo.master.addr().parse().expect("an address");
    let direct = raw(master, &[&["SET", "x", "1"]]).await;
    assert!(direct[0].starts_with("-BUSY"), "{direct:?}");
    // The proxy learns it within a second or two (before, a read waits behind the script;
    // those left waiting are answered once it is killed).
    eventually!(Duration::from_secs(10), {
        let mut probe = TcpStream::connect(proxy.addr()).await.expect("connect");
        let answer = tokio::time::timeout(
            Duration::from_millis(500),
            send(&mut probe, &[&["EXISTS", "x"]]),
        )
        .await;
        answer.is_ok_and(|a| a[0].starts_with("-BUSY"))
    });
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    let through = tokio::time::timeout(
        Duration::from_secs(2),
        send(&mut c, &[&["SET", "x", "1"], &["GET", "x"]]),
    )
    .await
    .expect("answered while the script still runs");
    assert_eq!(through, [direct[0].clone(), direct[0].clone()]);
    assert_eq!(raw(proxy.addr(), &[&["SCRIPT", "KILL"]]).await, ["+OK"]);
    assert_killed(&mut runaway).await;
    assert_eq!(
        send(&mut c, &[&["GET", "x"], &["SET", "x", "2"]]).await,
        ["$-1", "+OK"],
        "the refused SET did not run; commands run again"
    );
}
