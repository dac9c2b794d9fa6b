//! Issue 12: a backend that left the topology is let go after `stats_forget_after_secs`, by the
//! decision that forgets its stats: no more health checks nor connections to it, while the
//! servers the topology still names keep theirs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::proxy::TestProxy;
use crate::stats_http::{forgetting_in_a_second, stats_json};

/// The server `addr` of the proxy's routing table (master or replica). Each backend has its own:
/// one spawned again (after a release) is another server.
fn routed(proxy: &TestProxy, addr: &str) -> Option<Arc<haproxy_rs::router::Server>> {
    let table = proxy.proxy.table.load();
    table
        .master
        .iter()
        .chain(&table.replicas)
        .find(|b| b.addr() == addr)
        .cloned()
}

/// Whether `/stats.json` lists backend `addr`.
async fn in_stats(proxy: &TestProxy, addr: &str) -> bool {
    let v = stats_json(proxy.stats_addr()).await;
    v["backends"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["addr"] == addr))
}

/// `GET key` on a new connection to the proxy's read endpoint (each may go to another replica).
async fn read_on_a_new_session(proxy: &TestProxy, key: &str) -> Option<String> {
    let mut c = proxy.read_client().await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap_or_else(|e| panic!("GET {key} through the proxy: {e}"))
}

/// Accepts connections on `port` (the released replica's) and counts them.
async fn count_connections(port: u16) -> Arc<AtomicUsize> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("bind the released replica's port {port}: {e}"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sentinel_forgot_is_no_longer_checked_or_connected_to_after_the_grace_period() {
    let (topo, proxy) = forgetting_in_a_second().await;
    let (master, kept, gone) = (&topo.master, &topo.replicas[0], &topo.replicas[1]);
    // Reads on fresh sessions until both replicas served some: each has pooled connections.
    crate::eventually!(
        Duration::from_secs(20),
        {
            read_on_a_new_session(&proxy, "k").await;
            kept.commandstats("get").await > 0 && gone.commandstats("get").await > 0
        },
        "reads reach both replicas"
    );
    let master_backend = routed(&proxy, &master.addr()).expect("the master is routed");
    let kept_backend = routed(&proxy, &kept.addr()).expect("the replica is routed");

    // Killed, then forgotten by Sentinel: after the grace period the proxy lets it go.
    gone.kill();
    crate::eventually!(
        Duration::from_secs(20),
        routed(&proxy, &gone.addr()).is_none(),
        "the proxy stops routing to the killed replica {}",
        gone.addr()
    );
    topo.reset_sentinels().await;
    crate::eventually!(
        Duration::from_secs(20),
        !in_stats(&proxy, &gone.addr()).await,
        "{} leaves the stats (and the proxy)",
        gone.addr()
    );

    // Whatever listens on its port now hears nothing from the proxy: a few dozen health-check
    // rounds (counted on the surviving replica, minus this test's own INFO calls) and 2.5 s.
    let accepted = count_connections(gone.port()).await;
    let since = Instant::now();
    let before = kept.commandstats("info").await;
    // A call's own INFO is counted from the next one on: `before`'s, then each poll's.
    let mut own_calls = 1;
    crate::eventually!(
        Duration::from_secs(20),
        {
            let checks = kept
                .commandstats("info")
                .await
                .saturating_sub(before + own_calls);
            own_calls += 1;
            checks >= 30 && since.elapsed() > Duration::from_millis(2500)
        },
        "the proxy health-checks {} for 2.5 s",
        kept.addr()
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the proxy still connects to the released replica's port {}",
        gone.port()
    );

    // The master and the surviving replica were never let go (Sentinel listed no replica for a
    // moment after the reset; the master named the survivor connected all along), and serve.
    crate::eventually!(
        Duration::from_secs(20),
        routed(&proxy, &kept.addr()).is_some(),
        "{} routed again once Sentinel lists it",
        kept.addr()
    );
    let same = |addr: &str, b: &Arc<haproxy_rs::router::Server>| {
        routed(&proxy, addr).is_some_and(|r| Arc::ptr_eq(&r, b))
    };
    assert!(
        same(&master.addr(), &master_backend),
        "the master kept its backend"
    );
    assert!(
        same(&kept.addr(), &kept_backend),
        "{} kept its backend",
        kept.addr()
    );
    let mut w = proxy.client().await;
    let () = redis::cmd("SET")
        .arg("after-release")
        .arg("v")
        .query_async(&mut w)
        .await
        .unwrap();
    let served = kept.commandstats("get").await;
    crate::eventually!(
        Duration::from_secs(20),
        {
            read_on_a_new_session(&proxy, "after-release")
                .await
                .as_deref()
                == Some("v")
                && kept.commandstats("get").await > served
        },
        "reads through the proxy reach {} and see the write",
        kept.addr()
    );
    assert!(in_stats(&proxy, &kept.addr()).await && in_stats(&proxy, &master.addr()).await);
}
