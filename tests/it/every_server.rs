//! `CONFIG SET` through the main endpoint reaches every server of the topology (issue 14,
//! item 4), so the replicas that serve reads behave like the master.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::redis::read_replies;
use crate::harness::{Cluster, RedisServer, Topology};
use crate::security::send;

async fn config_get(c: &mut MultiplexedConnection, name: &str) -> String {
    let (_, v): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(c)
        .await
        .expect("CONFIG GET");
    v
}

async fn config_set(c: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<String> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(args)
        .query_async(c)
        .await
}

async fn on_each(servers: &[&RedisServer], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in servers {
        out.push(config_get(&mut s.client().await, name).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_reaches_the_master_and_every_replica() {
    let topo = Topology::builder().replicas(2).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let servers = [&topo.master, &topo.replicas[0], &topo.replicas[1]];
    let mut c = proxy.client().await;
    let ok: String = config_set(
        &mut c,
        &[
            "hash-max-listpack-entries",
            "3",
            "notify-keyspace-events",
            "KEA",
        ],
    )
    .await
    .expect("CONFIG SET through the proxy");
    assert_eq!(ok, "OK");
    assert_eq!(
        on_each(&servers, "hash-max-listpack-entries").await,
        ["3"; 3]
    );
    assert_eq!(
        on_each(&servers, "notify-keyspace-events").await,
        ["AKE"; 3]
    );
    // CONFIG GET answers from the master, as a read of configuration.
    assert_eq!(config_get(&mut c, "hash-max-listpack-entries").await, "3");

    // A refusal every server gives alike: Redis's own words, as directly.
    let direct = config_set(
        &mut topo.master.client().await,
        &["maxmemory-policy", "nonsense"],
    )
    .await
    .expect_err("refused directly");
    let through = config_set(&mut c, &["maxmemory-policy", "nonsense"])
        .await
        .expect_err("refused through the proxy");
    assert_eq!(through.to_string(), direct.to_string());
    assert_eq!(
        on_each(&servers, "maxmemory-policy").await,
        ["noeviction"; 3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_in_cluster_mode_reaches_every_master() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let mut c = proxy.client().await;
    let ok: String = config_set(&mut c, &["maxmemory", "70"])
        .await
        .expect("CONFIG SET through the proxy");
    assert_eq!(ok, "OK");
    let nodes: Vec<&RedisServer> = cluster.nodes.iter().collect();
    assert_eq!(on_each(&nodes, "maxmemory").await, ["70"; 3]);
    let ok: String = config_set(&mut c, &["maxmemory", "0"])
        .await
        .expect("CONFIG SET through the proxy");
    assert_eq!(ok, "OK");
    assert_eq!(on_each(&nodes, "maxmemory").await, ["0"; 3]);
}

/// Keyspace notifications switched on through the proxy reach a subscriber through the proxy,
/// from the master where the writes emit them, and again from the new master after a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_reach_a_subscriber_through_the_proxy_across_a_failover() {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    let mut c = proxy.client().await;
    let ok = config_set(&mut c, &["notify-keyspace-events", "KEA"]).await;
    assert_eq!(ok.expect("CONFIG SET"), "OK");
    let mut sub = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let confirmed = send(&mut sub, &[&["PSUBSCRIBE", "__keyspace@0__:note*"]]).await;
    assert!(confirmed[0].contains("psubscribe"), "{confirmed:?}");
    let set = |value: &'static str| {
        let mut c = c.clone();
        async move {
            let () = redis::cmd("SET")
                .arg("note1")
                .arg(value)
                .query_async(&mut c)
                .await
                .expect("SET");
        }
    };
    set("a").await;
    let event = read_replies(&mut sub, 1).await;
    assert!(
        event[0].contains("__keyspace@0__:note1") && event[0].ends_with("set"),
        "{event:?}"
    );
    let new = topo.failover().await;
    eventually!(
        Duration::from_secs(30),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy follows the failover to {new}"
    );
    // The subscription moves to the new master once the proxy follows; writes there emit.
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            set("b").await;
            if let Ok(event) =
                tokio::time::timeout(Duration::from_millis(300), read_replies(&mut sub, 1)).await
            {
                return event;
            }
        }
    })
    .await
    .expect("an event from the new master within 20 s");
    assert!(got[0].contains("__keyspace@0__:note1"), "{got:?}");
}

/// Cluster mode: when some masters refuse `CONFIG SET`, the client's error names them and their
/// errors (as the Sentinel-mode fan-out's does), and the others have taken the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_in_cluster_mode_names_the_masters_that_refused() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let refusing = &cluster.nodes[0];
    let mut direct = refusing.client().await;
    let ok: String = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "-config|set"])
        .query_async(&mut direct)
        .await
        .expect("ACL SETUSER");
    assert_eq!(ok, "OK");
    let mut c = proxy.client().await;
    let err = config_set(&mut c, &["maxmemory", "90"])
        .await
        .expect_err("refused by one master");
    let expected = format!(
        "CONFIG SET failed on {} (NOPERM this user has no permissions to run the 'config|set' command)",
        refusing.addr()
    );
    assert!(
        err.to_string().contains(&expected),
        "the error names the master that refused: {err}"
    );
    let others: Vec<&RedisServer> = cluster.nodes.iter().skip(1).collect();
    assert_eq!(on_each(&others, "maxmemory").await, ["90"; 2]);
}
