//! Proves the harness itself: servers replicate, a sentinel topology fails over, drop cleans up.

use std::time::Duration;

use nix::sys::signal;
use nix::unistd::Pid;
use redis::AsyncCommands;

use crate::eventually;
use crate::harness::redis::{info_field, parse_commandstats};
use crate::harness::{ports, RedisServer, Sentinel, Topology};

#[tokio::test]
async fn replica_receives_a_set_on_its_master() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    assert_eq!(master.role().await, "master");
    assert_eq!(replica.role().await, "slave");

    let mut m = master.client().await;
    let () = m.set("harness:key", "v1").await.expect("SET on the master");
    let mut r = replica.client().await;
    eventually!(
        Duration::from_secs(5),
        r.get::<_, Option<String>>("harness:key")
            .await
            .ok()
            .flatten()
            == Some("v1".to_owned()),
        "replica {} sees harness:key=v1",
        replica.addr()
    );
    assert_eq!(master.commandstats("set").await, 1);
    assert!(replica.commandstats("get").await >= 1);
}

#[tokio::test]
async fn dropping_a_server_kills_it_and_frees_its_port() {
    let server = RedisServer::start().await;
    let (port, pid) = (
        server.port(),
        server.pid().expect("a running server has a pid"),
    );
    assert!(!ports::is_free(port), "a running server holds its port");
    drop(server);
    assert!(ports::is_free(port), "port {port} still bound after drop");
    // Reaped, not a zombie: signal 0 to the pid finds nothing.
    assert!(
        signal::kill(Pid::from_raw(pid as i32), None).is_err(),
        "pid {pid} still exists after drop"
    );
}

#[tokio::test]
async fn the_registry_never_hands_out_a_port_twice() {
    let ports: Vec<u16> = (0..200).map(|_| ports::free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
}

#[tokio::test]
async fn stop_hangs_a_server_and_cont_resumes_it() {
    let server = RedisServer::start().await;
    // Connect first: the client's handshake would hang on a stopped server.
    let mut c = server.client().await;
    server.stop();
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        redis::cmd("PING").query_async::<String>(&mut c),
    )
    .await;
    assert!(hung.is_err(), "a stopped server must not answer: {hung:?}");
    server.cont();
    eventually!(
        Duration::from_secs(5),
        server.info("server").await.contains("redis_version")
    );
}

#[tokio::test]
async fn kill_then_restart_keeps_the_port() {
    let server = RedisServer::start().await;
    let port = server.port();
    server.kill();
    assert!(!server.is_running());
    assert!(ports::is_free(port));
    server.restart().await;
    assert_eq!(server.port(), port);
    assert_eq!(server.role().await, "master");
}

#[tokio::test]
async fn a_single_sentinel_names_its_master() {
    let master = RedisServer::start().await;
    let sentinel = Sentinel::start(&master, "mymaster", 1).await;
    assert_eq!(
        sentinel.master_addr().await.as_deref(),
        Some(master.addr().as_str())
    );
}

#[tokio::test]
async fn topology_comes_up_and_failover_moves_the_master() {
    let topo = Topology::start(2, 3).await;
    assert_eq!(topo.sentinel_addrs().len(), 3);
    let old = topo.current_master_addr().await;
    assert_eq!(old, topo.master.addr());

    let new = topo.failover().await;
    assert_ne!(new, old);
    assert!(
        topo.replicas.iter().any(|r| r.addr() == new),
        "a replica was promoted"
    );
    assert_eq!(topo.server_by_addr(&new).role().await, "master");
    // The leader reports the promotion first; the other sentinels follow at +switch-master.
    topo.wait_sentinels_agree(&new, Duration::from_secs(20))
        .await;
}

#[test]
fn info_parsing() {
    let info = "# Commandstats\r\ncmdstat_get:calls=7,usec=10,usec_per_call=1.43\r\ncmdstat_set:calls=3,usec=5\r\n";
    assert_eq!(parse_commandstats(info, "get"), 7);
    assert_eq!(parse_commandstats(info, "SET"), 3);
    assert_eq!(parse_commandstats(info, "del"), 0);
    assert_eq!(
        info_field(
            "role:slave\r\nmaster_link_status:up\r\n",
            "master_link_status"
        )
        .as_deref(),
        Some("up")
    );
}

#[tokio::test]
async fn killing_the_master_promotes_a_replica() {
    let topo = Topology::builder()
        .down_after(Duration::from_millis(1000))
        .failover_timeout(Duration::from_millis(5000))
        .start()
        .await;
    let old = topo.master.addr();
    topo.master.kill();
    let new = topo.wait_new_master(&old, Duration::from_secs(30)).await;
    assert!(
        topo.replicas.iter().any(|r| r.addr() == new),
        "a replica was promoted: {new}"
    );
}

/// `redis-cli ARGS...`, its stdout trimmed.
async fn redis_cli(args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args(args)
        .output()
        .await
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_masters_and_three_replicas_serves_every_slot() {
    let cluster = crate::harness::Cluster::start(3, 1).await;
    assert_eq!(cluster.masters().await.len(), 3);
    let ports: Vec<String> = cluster.nodes.iter().map(|n| n.port().to_string()).collect();
    // Written through one node (redis-cli follows MOVED), read through another.
    assert_eq!(
        redis_cli(&["-c", "-p", &ports[0], "SET", "harness:k", "v"]).await,
        "OK"
    );
    assert_eq!(
        redis_cli(&["-c", "-p", &ports[4], "GET", "harness:k"]).await,
        "v"
    );
    // The proxy's slot map parses the real CLUSTER SLOTS, and the key lives where it says.
    let map = cluster.nodes[2]
        .slot_map()
        .await
        .expect("CLUSTER SLOTS parses");
    assert_eq!(map.served(), 16384);
    assert_eq!(map.masters().len(), 3);
    let owner = map
        .owners(haproxy_rs::router::slot::key_slot(b"harness:k"))
        .unwrap();
    assert_eq!(owner.replicas.len(), 1);
    let port = owner.master.rsplit(':').next().unwrap();
    assert_eq!(
        redis_cli(&["-p", port, "GET", "harness:k"]).await,
        "v",
        "the master the map names holds the key (no redirection)"
    );
    // The proxy's slot function agrees with a real cluster, hash tags included.
    for key in [
        "harness:k",
        "{user1000}.following",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "",
        "x",
    ] {
        let slot = redis_cli(&["-p", &ports[1], "CLUSTER", "KEYSLOT", key]).await;
        assert_eq!(
            slot,
            haproxy_rs::router::slot::key_slot(key.as_bytes()).to_string(),
            "slot of {key:?}"
        );
    }
}
