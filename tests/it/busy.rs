//! Busy servers (issue 14, item 1): a runaway script is killed through the proxy with
//! `SCRIPT KILL`/`FUNCTION KILL` wherever it runs (the master, or a replica for `EVAL_RO`), on
//! connections that do not wait behind it, and its client gets Redis's own error.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::redis::read_replies;
use crate::harness::{Cluster, RedisServer, Topology};
use crate::security::{raw, send};
use crate::stats_http::backend_json;

/// Whether `server` answers `-BUSY` (a script is running past `busy-reply-threshold`).
async fn busy(server: &RedisServer) -> bool {
    let addr = server.addr().parse().expect("an address");
    raw(addr, &[&["PING"]]).await[0].starts_with("-BUSY")
}

/// `CONFIG SET busy-reply-threshold 200` at `addr` (the proxy: its servers; or one server): a
/// busy server answers `-BUSY`, and takes a kill, after 200 ms rather than 5 s.
async fn busy_after_200ms(addr: std::net::SocketAddr) {
    let set = raw(addr, &[&["CONFIG", "SET", "busy-reply-threshold", "200"]]).await;
    assert_eq!(set, ["+OK"], "CONFIG SET busy-reply-threshold at {addr}");
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
    busy_after_200ms(proxy).await;
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
    busy_after_200ms(proxy.addr()).await;
    let lib = "#!lua name=spin\nredis.register_function{function_name='spin', callback=function() while true do end end, flags={'no-writes'}}";
    let loaded = raw(proxy.addr(), &[&["FUNCTION", "LOAD", lib]]).await;
    assert_eq!(loaded, ["$4\r\nspin"]);
    topo.replicas[0].wait_caught_up(&topo.master).await;
    let server = if runs_on_replica {
        &topo.replicas[0]
    } else {
        &topo.master
    };
    run_and_kill(proxy.addr(), server, script, kill, "after").await;
}

/// Runs `script` through the proxy until `server` is busy with it, kills it with `kill KILL`
/// through the proxy, and checks that all is as Redis would have it: `+OK`, Redis's error for
/// the script's client, the server free again, writes (of `key`) going on, and `NOTBUSY` for
/// a kill with nothing running.
async fn run_and_kill(
    proxy: std::net::SocketAddr,
    server: &RedisServer,
    script: &[&str],
    kill: &str,
    key: &str,
) {
    let mut runaway = start_runaway(proxy, script).await;
    eventually!(
        Duration::from_secs(10),
        busy(server).await,
        "{script:?} runs on {}",
        server.addr()
    );
    let killed = raw(proxy, &[&[kill, "KILL"]]).await;
    assert_eq!(killed, ["+OK"], "{kill} KILL through the proxy");
    assert_killed(&mut runaway).await;
    eventually!(
        Duration::from_secs(5),
        !busy(server).await,
        "the server is free again"
    );
    // Writes go on; nothing was held or cut.
    let mut c = TcpStream::connect(proxy).await.expect("connect");
    assert_eq!(send(&mut c, &[&["SET", key, "1"]]).await, ["+OK"]);
    // And a kill with nothing running says so, as Redis does.
    let none = raw(proxy, &[&[kill, "KILL"]]).await;
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

/// A key of `prefix` that the proxy's map places on `master` (an address).
fn key_on(map: &haproxy_rs::router::slotmap::SlotMap, master: &str, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .find(|k| {
            let slot = haproxy_rs::router::slot::key_slot(k.as_bytes());
            map.owners(slot).is_some_and(|o| o.master == master)
        })
        .expect("some key lands on every master")
}

/// Cluster mode: a runaway script on one master's key (or, with eventual reads, a read-only one
/// on a replica) is killed through the proxy with `SCRIPT KILL`, sent to every node on
/// connections of their own; the script's client gets Redis's error; with nothing running, the
/// kill says `NOTBUSY` as Redis does.
async fn killed_in_cluster_mode(script: &str, runs_on_replica: bool) {
    let cluster = Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .eventual()
        .start_cluster()
        .await;
    // On the replicas too: cluster mode's CONFIG SET goes to the masters.
    for node in &cluster.nodes {
        busy_after_200ms(node.addr().parse().expect("an address")).await;
    }
    let map = cluster.slot_map().await;
    let masters = map.masters();
    let master = masters.last().expect("a master");
    let key = key_on(&map, master, "spin");
    let owners = map
        .owners(haproxy_rs::router::slot::key_slot(key.as_bytes()))
        .expect("served");
    let server = if runs_on_replica {
        cluster.node(owners.replicas.first().expect("a replica"))
    } else {
        cluster.node(master)
    };
    let script = [script, "while true do end", "1", &key];
    run_and_kill(proxy.addr(), server, &script, "SCRIPT", &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_runaway_eval_on_a_master_is_killed_with_script_kill() {
    killed_in_cluster_mode("EVAL", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_runaway_eval_ro_on_a_replica_is_killed_with_script_kill() {
    killed_in_cluster_mode("EVAL_RO", true).await;
}

/// Cluster mode: a script longer than `command_timeout_ms` keeps its shared connection (the
/// busy node answers `-BUSY` on a new one), so its client gets Redis's `Script killed` error
/// rather than "outcome unknown", and other keys' writes go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_script_outliving_command_timeout_keeps_its_connection() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(|c| c.backend.command_timeout_ms = 1000)
        .start_cluster()
        .await;
    busy_after_200ms(proxy.addr()).await;
    let map = cluster.slot_map().await;
    let masters = map.masters();
    let (busy_master, other) = (&masters[0], &masters[1]);
    let key = key_on(&map, busy_master, "spin");
    let mut runaway = start_runaway(proxy.addr(), &["EVAL", "while true do end", "1", &key]).await;
    eventually!(
        Duration::from_secs(10),
        busy(cluster.node(busy_master)).await,
        "the script runs"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let elsewhere = key_on(&map, other, "free");
    assert_eq!(
        raw(proxy.addr(), &[&["SET", &elsewhere, "1"]]).await,
        ["+OK"],
        "the other master's keys are written meanwhile"
    );
    assert_eq!(raw(proxy.addr(), &[&["SCRIPT", "KILL"]]).await, ["+OK"]);
    assert_killed(&mut runaway).await;
}

/// Cluster mode: a script that wrote cannot be killed, and the kill says so as Redis does
/// (`UNKILLABLE`), whichever master runs it: the other masters' `NOTBUSY` does not hide it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_script_kill_of_a_script_that_wrote_answers_unkillable() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    busy_after_200ms(proxy.addr()).await;
    let map = cluster.slot_map().await;
    // The master of the last slots: the last one the proxy would ask in slot order.
    let last = map.owners(16383).expect("served").master.clone();
    let key = key_on(&map, &last, "wrote");
    let script = "redis.call('set', KEYS[1], 'x') while true do end";
    let _runaway = start_runaway(proxy.addr(), &["EVAL", script, "1", &key]).await;
    let server = cluster.node(&last);
    eventually!(
        Duration::from_secs(10),
        busy(server).await,
        "the script runs on {last}"
    );
    let direct = raw(
        server.addr().parse().expect("an address"),
        &[&["SCRIPT", "KILL"]],
    )
    .await;
    assert!(direct[0].starts_with("-UNKILLABLE"), "{direct:?}");
    let through = raw(proxy.addr(), &[&["SCRIPT", "KILL"]]).await;
    assert_eq!(
        through, direct,
        "SCRIPT KILL through the proxy answers as Redis does"
    );
    // The script never ends: the node goes with the cluster when the test ends.
    server.kill();
}
