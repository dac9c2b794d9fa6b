//! `WAIT` through the proxy: it counts the replicas that have the client's own writes (made on
//! shared connections), runs on a connection of the client's own, and never stalls anybody else.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::harness::proxy::ProxyBuilder;
use crate::harness::redis::read_replies;
use crate::harness::sentinel::Topology;
use crate::harness::Cluster;

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
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&inline(&[&format!("SET {key} 1"), "WAIT 1 5000"]))
        .await
        .unwrap();
    assert_eq!(read_replies(&mut s, 2).await, ["+OK", ":1"]);

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
}
