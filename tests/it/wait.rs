//! `WAIT` through the proxy: it counts the replicas that have the client's own writes (made on
//! shared connections), runs on a connection of the client's own, and never stalls anybody else.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::redis::read_replies;
use crate::harness::sentinel::Topology;
use crate::harness::{Cluster, RedisServer};
use haproxy_rs::config::MaskedString;

/// Raw RESP for inline commands.
fn inline(cmds: &[&str]) -> Vec<u8> {
    cmds.iter()
        .flat_map(|c| format!("{c}\r\n").into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_counts_the_replicas_that_have_the_clients_writes() {
    let topo = Topology::start(2, 1).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // One pipeline: the WAIT waits for the SET to be answered, and the client gets WAIT's reply
    // only (not the probe's), in order.
    s.write_all(&inline(&["SET wait:k 1", "WAIT 2 5000", "GET wait:k"]))
        .await
        .unwrap();
    assert_eq!(read_replies(&mut s, 3).await, ["+OK", ":2", "$1\r\n1"]);
    // The probe and WAIT ran on the master (replicas count the PUBLISHes they replicate, so
    // the master's count is the one that tells).
    assert_eq!(topo.master.commandstats("wait").await, 1);
    assert_eq!(topo.master.commandstats("publish").await, 1);

    // Under WATCH it runs on the watch connection, which stays pinned; inside MULTI it is
    // queued, as Redis does (and answers at EXEC without blocking).
    s.write_all(&inline(&[
        "WATCH wait:w",
        "SET wait:k 2",
        "WAIT 2 5000",
        "MULTI",
        "WAIT 2 0",
        "GET wait:k",
        "EXEC",
    ]))
    .await
    .unwrap();
    let got = read_replies(&mut s, 7).await;
    assert_eq!(got[..6], ["+OK", "+OK", ":2", "+OK", "+QUEUED", "+QUEUED"]);
    assert!(
        got[6].starts_with("*2\r\n:") && got[6].ends_with("$1\r\n2"),
        "{got:?}"
    );
    assert_eq!(topo.master.commandstats("wait").await, 3);

    // The read-only endpoint answers as a replica does.
    let mut r = tokio::net::TcpStream::connect(proxy.read_addr())
        .await
        .unwrap();
    r.write_all(&inline(&["WAIT 1 0"])).await.unwrap();
    assert_eq!(
        read_replies(&mut r, 1).await,
        ["-ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated."]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_refused_when_the_backend_user_may_not_publish_the_probe() {
    // Redis 7's ACL users have no channels unless given some (`acl-pubsub-default resetchannels`).
    let master = RedisServer::start_with("user proxy on >pw ~* +@all\n").await;
    let proxy = ProxyBuilder::servers(vec![master.addr()])
        .with(|c| {
            c.backend.username = Some("proxy".into());
            c.backend.password = Some(MaskedString::new("pw"));
            // About the backend user's rights: clients need no password here.
            c.auth.mode = Some(haproxy_rs::config::AuthMode::None);
        })
        .start(0)
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&inline(&["SET wait:p 1", "WAIT 0 0", "GET wait:p"]))
        .await
        .unwrap();
    let got = read_replies(&mut s, 3).await;
    assert_eq!((got[0].as_str(), got[2].as_str()), ("+OK", "$1\r\n1"));
    assert!(
        got[1].starts_with("-ERR haproxy-rs: WAIT needs 'PUBLISH __haproxy-rs:wait'")
            && got[1].contains("NOPERM"),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_with_a_stopped_replica_times_out_without_stalling_other_clients() {
    let topo = Topology::start(2, 1).await;
    // One session thread and one shared connection per server: a WAIT sent on the shared
    // connection would hold up the other client's requests behind it.
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c| {
            c.threads = 1;
            c.backend.connections = 1;
        })
        .start(2)
        .await;
    let mut other = proxy.client().await;
    let () = redis::cmd("SET")
        .arg("wait:warm")
        .arg(1)
        .query_async(&mut other)
        .await
        .unwrap();
    // After a full sync the master streams commands to a replica only from its first
    // acknowledgement (up to a second after the link is up): ask it directly until both
    // replicas acknowledge a write.
    let mut master = topo.master.client().await;
    eventually!(
        Duration::from_secs(10),
        redis::pipe()
            .cmd("SET")
            .arg("wait:ready")
            .arg(1)
            .ignore()
            .cmd("WAIT")
            .arg(2)
            .arg(100)
            .query_async::<(i64,)>(&mut master)
            .await
            .is_ok_and(|(n,)| n == 2),
        "both replicas acknowledge a write on the master"
    );
    topo.replicas[0].stop();

    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let started = Instant::now();
    s.write_all(&inline(&["SET wait:a 1", "WAIT 2 300"]))
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        let replies = read_replies(&mut s, 2).await;
        (replies, Instant::now())
    });
    for i in 0..50 {
        let () = redis::cmd("SET")
            .arg(format!("wait:o{i}"))
            .arg(i)
            .query_async(&mut other)
            .await
            .unwrap();
        let v: i64 = redis::cmd("GET")
            .arg(format!("wait:o{i}"))
            .query_async(&mut other)
            .await
            .unwrap();
        assert_eq!(v, i);
    }
    let others_done = Instant::now();
    let (replies, waited) = waiter.await.unwrap();
    topo.replicas[0].cont();
    assert_eq!(
        replies,
        ["+OK", ":1"],
        "only the running replica has the write"
    );
    let took = waited - started;
    assert!(
        took >= Duration::from_millis(290),
        "WAIT returned after {took:?}"
    );
    assert!(
        others_done < waited,
        "the other client's 50 SET/GETs finished {:?} after WAIT returned",
        others_done - waited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_in_cluster_mode_asks_the_master_the_client_wrote_to() {
    let cluster = Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let key = "wait:{c}";
    // The read-only endpoint answers as a replica does.
    let mut r = tokio::net::TcpStream::connect(proxy.read_addr())
        .await
        .unwrap();
    r.write_all(&inline(&["WAIT 1 0"])).await.unwrap();
    let got = read_replies(&mut r, 1).await;
    assert!(
        got[0].starts_with("-ERR WAIT cannot be used with replica instances."),
        "{got:?}"
    );
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // Before any write: the first master's replica.
    s.write_all(&inline(&[
        "WAIT 1 5000",
        &format!("SET {key} 1"),
        "WAIT 1 5000",
    ]))
    .await
    .unwrap();
    assert_eq!(read_replies(&mut s, 3).await, [":1", "+OK", ":1"]);

    // With the replica of that master stopped, the next write is on no replica: WAIT asks
    // that master (the other masters' replicas are running, and would answer 1).
    let map = cluster.slot_map().await;
    let owners = map
        .owners(haproxy_rs::router::slot::key_slot(key.as_bytes()))
        .unwrap();
    let replica = cluster.node(&owners.replicas[0]);
    replica.stop();
    s.write_all(&inline(&[&format!("SET {key} 2"), "WAIT 1 300"]))
        .await
        .unwrap();
    let replies = read_replies(&mut s, 2).await;
    replica.cont();
    assert_eq!(replies, ["+OK", ":0"]);
    // The probe (a script that sets and deletes a key of the proxy's own in that slot) ran on
    // that master and left nothing behind.
    let master = cluster.node(&owners.master);
    let first_master_too = map.owners(0).is_some_and(|o| o.master == owners.master);
    let probes = 2 + u64::from(first_master_too);
    assert_eq!(master.commandstats("eval").await, probes);
    s.write_all(&inline(&["KEYS __haproxy-rs:*"]))
        .await
        .unwrap();
    assert_eq!(read_replies(&mut s, 1).await, ["*0"]);
}
