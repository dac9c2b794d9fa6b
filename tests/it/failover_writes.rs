//! Failover without loss (issue 3): writes are held while the master is replaced, not failed, and
//! no acknowledged write is lost.

use std::time::Duration;

use crate::eventually;
use crate::harness::load::{missing_keys, LoadReport, WriteLoad};
use crate::harness::proxy::{ProxyBuilder, TestProxy, ADMIN_TOKEN};
use crate::harness::redis::{info_field, read_replies};
use crate::harness::sentinel::role;
use crate::harness::{RedisServer, Topology};

/// Waits until the proxy writes to `new` and the load got more writes through, then stops it.
async fn stop_after_switch(proxy: &TestProxy, load: WriteLoad, new: &str) -> LoadReport {
    eventually!(
        Duration::from_secs(30),
        proxy.master().as_deref() == Some(new),
        "the proxy writes to {new}"
    );
    load.wait_more_acks(200).await;
    load.stop().await
}

/// A topology whose sentinels call a master down after 1 s, a proxy, and `clients` writers that
/// have had 200 writes acknowledged.
async fn quick_topology_under_load(
    clients: usize,
    prefix: &str,
) -> (Topology, TestProxy, WriteLoad) {
    topology_under_load(clients, prefix, false).await
}

/// The same through a proxy with `write_durability = "replicas:1"`.
async fn durable_topology_under_load(
    clients: usize,
    prefix: &str,
) -> (Topology, TestProxy, WriteLoad) {
    topology_under_load(clients, prefix, true).await
}

async fn topology_under_load(
    clients: usize,
    prefix: &str,
    durable: bool,
) -> (Topology, TestProxy, WriteLoad) {
    let topo = Topology::builder()
        .down_after(Duration::from_millis(1000))
        .start()
        .await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c| {
            if durable {
                c.failover.write_durability = "replicas:1".to_string().try_into().unwrap();
            }
        })
        .start(2)
        .await;
    let load = WriteLoad::start(proxy.addr(), clients, prefix);
    load.wait_more_acks(200).await;
    (topo, proxy, load)
}

/// Stops a load and waits until every replica of `topo` has replicated all it wrote: an
/// asynchronous replica may always miss the last writes a master acknowledged just before it
/// died (only `WAIT` closes that window), which is not what these tests are about.
async fn quiesce(topo: &Topology, load: WriteLoad) -> LoadReport {
    let report = load.stop().await;
    let master_offset = |info: String| info_field(&info, "master_repl_offset");
    let target = master_offset(topo.master.info("replication").await);
    for r in &topo.replicas {
        eventually!(
            Duration::from_secs(10),
            info_field(&r.info("replication").await, "slave_repl_offset") == target,
            "replica {} has every write",
            r.addr()
        );
    }
    report
}

/// Every acknowledged write is on `server`.
async fn assert_none_lost(server: &RedisServer, report: &LoadReport) {
    let missing = missing_keys(server, &report.acked).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not on the new master {}, e.g. {:?}",
        missing.len(),
        report.acked.len(),
        server.addr(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_failover_under_writes_loses_nothing_and_shows_no_error() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let load = WriteLoad::start(proxy.addr(), 4, "planned");
    load.wait_more_acks(200).await;

    let new = topo.failover().await;
    let report = stop_after_switch(&proxy, load, &new).await;

    assert!(
        report.errors.is_empty(),
        "no client error during a planned failover: {:?}",
        report.error_summary()
    );
    assert_none_lost(topo.server_by_addr(&new), &report).await;
    let record = || proxy.proxy.stats.snapshot().failovers.first().cloned();
    assert!(
        record().is_some_and(|r| r.writes_held_ms.is_some()),
        "writes were fenced: {:?}",
        record()
    );
    eventually!(
        Duration::from_secs(5),
        record()
            .and_then(|r| r.holds)
            .is_some_and(|h| h.held_total > 0 && h.released_total > 0 && h.expired_total == 0),
        "the record counts the held writes, all released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_after_a_kill_of_the_master_wait_for_the_new_one_without_error() {
    let clients = 4;
    let (topo, proxy, load) = quick_topology_under_load(clients, "kill").await;
    let old = topo.master.addr();
    let mut report = quiesce(&topo, load).await;

    topo.master.kill();
    let after = WriteLoad::start(proxy.addr(), clients, "after-kill");
    let new = topo.wait_new_master(&old, Duration::from_secs(30)).await;
    let after = stop_after_switch(&proxy, after, &new).await;

    assert!(
        after.errors.is_empty(),
        "no error for requests sent after the kill: {:?}",
        after.error_summary()
    );
    assert!(
        after.max_latency >= Duration::from_millis(500),
        "they waited for the new master: max latency {:?}",
        after.max_latency
    );
    report.acked.extend(after.acked);
    assert_none_lost(topo.server_by_addr(&new), &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_when_the_master_dies_fail_as_unknown_and_are_never_replayed() {
    let master = RedisServer::start_with("enable-debug-command yes\n").await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // The master sleeps with an INCR queued behind; it dies and comes back empty on its port.
    let input = "DEBUG SLEEP 5\r\nINCR n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, input.as_bytes())
        .await
        .unwrap();
    eventually!(Duration::from_secs(5), !master.answers_ping().await);
    master.kill();
    let replies = read_replies(&mut s, 2).await;
    for r in &replies {
        assert!(r.contains("outcome is unknown"), "{replies:?}");
    }
    master.restart().await;
    let mut c = proxy.client().await;
    let n: i64 = redis::cmd("INCR")
        .arg("n")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1, "the INCR in flight at the crash was not replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_never_returns_ends_in_tryagain_at_the_bound_and_reads_go_on() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .with(|c| {
            c.failover.hold_ms = 800;
            c.failover.max_held_bytes = 4096;
        })
        .start(1)
        .await;
    let mut c = proxy.client().await;
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut direct = replica.client().await;
    eventually!(
        Duration::from_secs(10),
        redis::cmd("EXISTS")
            .arg("k")
            .query_async::<bool>(&mut direct)
            .await
            .unwrap(),
        "the replica has k"
    );
    master.kill();

    let started = std::time::Instant::now();
    let r: redis::RedisResult<()> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .query_async(&mut c)
        .await;
    let waited = started.elapsed();
    let err = r.expect_err("no master: the write fails at the bound");
    assert!(
        err.to_string().contains("TRYAGAIN") || err.code() == Some("TRYAGAIN"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
        "held about hold_ms (800 ms): {waited:?}"
    );
    // Reads are served by the replica meanwhile (a new client: no writes of its own to wait for).
    let mut rc = proxy.client().await;
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("v"));

    // The byte bound: a pipeline larger than max_held_bytes is refused at once, not buffered.
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.set(format!("big{i}"), "x".repeat(100));
    }
    let started = std::time::Instant::now();
    let r: redis::RedisResult<()> = pipe.query_async(&mut c).await;
    assert!(r.is_err(), "writes without a master fail");
    assert!(started.elapsed() < Duration::from_secs(5));
    let hold = proxy.proxy.stats.snapshot().hold;
    assert!(hold.refused_total > 0, "{hold:?}");
    assert_eq!(hold.held_now, 0, "{hold:?}");
    assert_eq!(hold.held_bytes, 0, "{hold:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noreplicas_from_the_master_reaches_the_client_verbatim_and_is_not_retried() {
    let master = RedisServer::start_with("min-replicas-to-write 1\n").await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut c = proxy.client().await;
    let r: redis::RedisResult<()> = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await;
    let err = r.expect_err("the master refuses writes without replicas");
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");
    let stats = master.info("commandstats").await;
    assert!(
        stats.contains("cmdstat_set:calls=0,") && stats.contains("rejected_calls=1,"),
        "one SET, rejected once, not retried: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_that_comes_back_claiming_master_gets_no_writes() {
    let clients = 4;
    let (topo, proxy, load) = quick_topology_under_load(clients, "stale").await;
    let old = topo.master.addr();

    topo.master.stop();
    let new = topo.wait_new_master(&old, Duration::from_secs(30)).await;
    eventually!(
        Duration::from_secs(30),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy writes to {new}"
    );
    load.wait_more_acks(100).await;
    topo.master.cont();
    // It answers as the master until Sentinel converts it (seconds later); writes go on meanwhile.
    let claimed = role(&topo.master).await;
    load.wait_more_acks(500).await;
    let report = load.stop().await;

    assert_eq!(
        claimed.as_deref(),
        Some("master"),
        "the scenario: {old} came back calling itself master"
    );
    assert_none_lost(topo.server_by_addr(&new), &report).await;
    // Only the request each client had in flight on the stopped master fails, as unknown.
    assert!(report.errors.len() <= clients, "{}", report.error_summary());
    for e in &report.errors {
        assert!(e.what.contains("outcome is unknown"), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failovers_in_a_row_with_a_sentinel_killed_midway() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let load = WriteLoad::start(proxy.addr(), 2, "five");
    load.wait_more_acks(100).await;
    let mut master = topo.master.addr();
    for round in 0..5 {
        if round == 2 {
            topo.sentinels[2].kill(); // the quorum (2 of 3) still elects a leader
        }
        // Sentinel promotes only a replica it has fresh INFO from: let the last switch settle.
        eventually!(
            Duration::from_secs(60),
            topo.sentinels[0].sees(2, 2).await,
            "round {round}: the sentinel sees both replicas linked"
        );
        master = topo.failover().await;
        eventually!(
            Duration::from_secs(30),
            proxy.master().as_deref() == Some(master.as_str()),
            "round {round}: the proxy writes to {master}"
        );
        load.wait_more_acks(100).await;
    }
    let report = load.stop().await;
    assert!(report.errors.is_empty(), "{}", report.error_summary());
    assert_none_lost(topo.server_by_addr(&master), &report).await;
    assert!(proxy.proxy.stats.snapshot().failovers_total >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_sentinel_down_the_last_topology_serves_and_the_page_says_so() {
    let topo = Topology::start(1, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    let mut c = proxy.client().await;
    for s in &topo.sentinels {
        s.stop();
    }
    eventually!(
        Duration::from_secs(30),
        proxy
            .proxy
            .stats
            .snapshot()
            .topology_status
            .starts_with("ALL SENTINELS UNREACHABLE"),
        "the stats say no sentinel is reachable"
    );
    let _: () = redis::cmd("SET")
        .arg("s")
        .arg("1")
        .query_async(&mut c)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("s")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "1");
    assert_eq!(proxy.master().as_deref(), Some(topo.master.addr().as_str()));
    for s in &topo.sentinels {
        s.cont();
    }
    eventually!(
        Duration::from_secs(30),
        proxy.proxy.stats.snapshot().topology_status == "following 3 sentinels",
        "the links come back"
    );
    let _: () = redis::cmd("SET")
        .arg("s")
        .arg("2")
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_durable_writes_a_kill_mid_stream_loses_no_acknowledged_write() {
    let clients = 4;
    let (topo, proxy, load) = durable_topology_under_load(clients, "durable").await;
    let old = topo.master.addr();
    topo.master.kill(); // under continuous writes
    let new = topo.wait_new_master(&old, Duration::from_secs(30)).await;
    let report = stop_after_switch(&proxy, load, &new).await;
    assert_none_lost(topo.server_by_addr(&new), &report).await;
    assert!(
        topo.server_by_addr(&new).commandstats("wait").await > 0,
        "writes were followed by WAIT"
    );
    assert!(report.errors.len() <= clients, "{}", report.error_summary());
    for e in &report.errors {
        assert!(e.what.contains("outcome is unknown"), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incrs_in_flight_at_a_kill_are_never_replayed() {
    let clients = 4;
    let (topo, proxy, load) = durable_topology_under_load(clients, "counter:n").await;
    let old = topo.master.addr();
    topo.master.kill();
    let new = topo.wait_new_master(&old, Duration::from_secs(30)).await;
    let report = stop_after_switch(&proxy, load, &new).await;
    let mut c = topo.server_by_addr(&new).client().await;
    let counter: Option<u64> = redis::cmd("GET")
        .arg("n")
        .query_async(&mut c)
        .await
        .unwrap();
    let counter = counter.unwrap_or(0);
    let (ok, failed) = (report.acked.len() as u64, report.errors.len() as u64);
    assert!(
        ok <= counter && counter <= ok + failed,
        "successes {ok} <= counter {counter} <= successes + errors {}",
        ok + failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_continuous_writes_loses_nothing_and_reports_the_hold() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .admin_token(ADMIN_TOKEN)
        .start(2)
        .await;
    let old = topo.master.addr();
    let load = WriteLoad::start(proxy.addr(), 4, "switchover");
    load.wait_more_acks(200).await;

    let (status, body) =
        haproxy_rs::cli::post_switchover(&proxy.stats_addr().to_string(), Some(ADMIN_TOKEN))
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let new = report["new_master"].as_str().unwrap().to_string();
    assert_ne!(new, old, "{body}");
    assert_eq!(report["old_master"].as_str(), Some(old.as_str()), "{body}");
    assert!(report["writes_held_ms"].as_u64().is_some(), "{body}");
    let report = stop_after_switch(&proxy, load, &new).await;

    assert!(report.errors.is_empty(), "{}", report.error_summary());
    assert_none_lost(topo.server_by_addr(&new), &report).await;
    let snap = proxy.proxy.stats.snapshot();
    assert!(snap
        .failovers
        .first()
        .is_some_and(|f| f.detected_by.starts_with("switchover")));
}

/// `haproxy-rs switchover` against `stats`: its exit status and what it printed.
async fn switchover_command(stats: std::net::SocketAddr, json: bool) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_haproxy-rs"));
    cmd.args([
        "switchover",
        "--stats",
        &stats.to_string(),
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().await.expect("run haproxy-rs switchover");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        printed + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switchover_command_prints_a_sentence_and_json_for_scripts() {
    let topo = Topology::start(1, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .admin_token(ADMIN_TOKEN)
        .start(1)
        .await;
    let old = topo.master.addr();
    let (ok, printed) = switchover_command(proxy.stats_addr(), false).await;
    assert!(ok, "{printed}");
    let new = topo.wait_new_master(&old, Duration::from_secs(30)).await;
    let sentence = printed.trim_end();
    let prefix = format!("switched {old} -> {new}, writes held ");
    let rest = sentence
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{printed}"));
    let (held, caught_up) = rest
        .split_once(" s, replicas caught up in ")
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(held.parse::<f64>().is_ok(), "{printed}");
    assert!(
        caught_up
            .strip_suffix(" ms")
            .is_some_and(|ms| ms.parse::<u64>().is_ok()),
        "{printed}"
    );

    // Back, with the report as JSON.
    eventually!(
        Duration::from_secs(30),
        proxy.master().as_deref() == Some(new.as_str()) && proxy.readable_replicas() >= 1,
        "the proxy follows the new master and sees its replica"
    );
    let (ok, printed) = switchover_command(proxy.stats_addr(), true).await;
    assert!(ok, "{printed}");
    let report: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(
        report["old_master"].as_str(),
        Some(new.as_str()),
        "{printed}"
    );
    assert_eq!(
        report["new_master"].as_str(),
        Some(old.as_str()),
        "{printed}"
    );
    assert!(report["writes_held_ms"].as_u64().is_some(), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_master_restarted_empty_gets_no_writes() {
    let clients = 4;
    let (topo, proxy, load) = quick_topology_under_load(clients, "restarted").await;
    let old = topo.master.addr();
    let mut report = quiesce(&topo, load).await;

    topo.master.kill();
    let load = WriteLoad::start(proxy.addr(), clients, "restarted2");
    let new = topo.wait_new_master(&old, Duration::from_secs(30)).await;
    eventually!(
        Duration::from_secs(30),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy writes to {new}"
    );
    // Back on its port with no data, calling itself master until Sentinel converts it.
    topo.master.restart().await;
    let claimed = role(&topo.master).await;
    load.wait_more_acks(500).await;
    let after = load.stop().await;

    assert_eq!(
        claimed.as_deref(),
        Some("master"),
        "the scenario: {old} came back empty as a master"
    );
    assert!(after.errors.is_empty(), "{}", after.error_summary());
    report.acked.extend(after.acked);
    assert_none_lost(topo.server_by_addr(&new), &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_still_names_the_old_master_is_outvoted() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let old = topo.master.addr();
    let stale = &topo.sentinels[2];
    stale.kill(); // misses the failover
    let load = WriteLoad::start(proxy.addr(), 2, "outvoted");
    load.wait_more_acks(100).await;
    let new = topo.failover().await;
    eventually!(
        Duration::from_secs(30),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy writes to {new}"
    );
    stale.restart().await;
    // Until it learns of the failover it names the old master from its config file.
    let mut stale_named_old = false;
    eventually!(
        Duration::from_secs(30),
        {
            assert_eq!(
                proxy.master().as_deref(),
                Some(new.as_str()),
                "never back to {old}"
            );
            let named = stale.master_addr().await;
            stale_named_old |= named.as_deref() == Some(old.as_str());
            named.as_deref() == Some(new.as_str())
        },
        "the stale sentinel catches up"
    );
    let report = stop_after_switch(&proxy, load, &new).await;
    assert!(report.errors.is_empty(), "{}", report.error_summary());
    assert_none_lost(topo.server_by_addr(&new), &report).await;
    assert!(
        stale_named_old,
        "the scenario: the restarted sentinel named {old} for a while"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_durable_write_is_reported_and_reads_keep_their_replies() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()])
        .with(|c| {
            c.failover.write_durability = "replicas:1".to_string().try_into().unwrap();
            c.failover.durability_timeout_ms = 100;
        })
        .start(0)
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let input = "SET d 1\r\nGET d\r\nINCR n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, input.as_bytes())
        .await
        .unwrap();
    let got = read_replies(&mut s, 3).await;
    assert!(
        got[0].contains("only 0 of 1 replicas confirmed"),
        "no replica: {got:?}"
    );
    assert_eq!(got[1], "$1\r\n1", "the read keeps its reply: {got:?}");
    assert!(got[2].contains("only 0 of 1"), "{got:?}");
    assert!(master.commandstats("wait").await >= 1);
}
