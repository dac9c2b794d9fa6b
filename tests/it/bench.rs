//! `haproxy-rs bench` against real servers: workloads, report files, the open loop seeing a stall, the
//! lost-write check, a Sentinel failover run, and `--cluster` against a real Redis Cluster.

use std::time::{Duration, Instant};

use clap::Parser;
use haproxy_rs::bench::{self, BenchAction, BenchArgs, LoadArgs, RunReport};
use haproxy_rs::cli::{Cli, Command};
use haproxy_rs::router::slot::key_slot;

use crate::harness::proxy::ProxyBuilder;
use crate::harness::{Cluster, RedisServer, Topology};

/// `haproxy-rs bench --quiet --warmup 0s ARGV...`.
fn bench_args(argv: &[&str]) -> BenchArgs {
    let mut full = vec!["--quiet"];
    if !argv.contains(&"--warmup") {
        full.extend(["--warmup", "0s"]);
    }
    full.extend_from_slice(argv);
    parse_bench(&full)
}

/// `haproxy-rs bench ARGV...`.
fn parse_bench(argv: &[&str]) -> BenchArgs {
    let mut full = vec!["haproxy-rs", "bench"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full)
        .expect("valid bench flags")
        .command
    {
        Command::Bench(b) => b,
        Command::Run(_) | Command::Switchover(_) | Command::ImportHaproxy(_) => {
            unreachable!("parsed `bench`")
        }
    }
}

fn load_args(argv: &[&str]) -> LoadArgs {
    bench_args(argv).load
}

async fn run(argv: &[&str]) -> RunReport {
    bench::run_load(&load_args(argv), "test", None)
        .await
        .expect("the run completes")
}

async fn dbsize(server: &RedisServer) -> i64 {
    let mut c = server.client().await;
    redis::cmd("DBSIZE").query_async(&mut c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_without_errors() {
    let redis = RedisServer::start().await;
    let addr = redis.addr();
    for (workload, extra) in [
        ("set", None),
        ("get", None),
        ("mixed", Some("2")),
        ("mget", Some("10")),
        ("mset", Some("10")),
        ("incr", None),
        ("ping", None),
    ] {
        let kpc = extra.unwrap_or("1");
        let r = run(&[
            "--target",
            &addr,
            "-w",
            workload,
            "--keys-per-command",
            kpc,
            "-c",
            "4",
            "-P",
            "4",
            "-n",
            "2000",
            "-d",
            "5s",
            "--keyspace",
            "1000",
            "--key-dist",
            "zipf",
        ])
        .await;
        assert_eq!(r.errors, 0, "{workload}: {:?}", r.errors_by_kind);
        assert_eq!(r.ops, 2000, "{workload}: --requests is exact");
        assert!(
            r.latency_us.p50 > 0 && r.latency_us.max >= r.latency_us.p99,
            "{workload}"
        );
        assert_eq!(r.connects, 4, "{workload}");
    }
    assert!(dbsize(&redis).await > 100, "SET and MSET wrote keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_lines_stop_at_the_measured_end() {
    let redis = RedisServer::start().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_haproxy-rs"))
        .args([
            "bench",
            "--target",
            &redis.addr(),
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ])
        .output()
        .await
        .expect("run haproxy-rs bench");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seconds: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    // One line per measured second; replies landing after the end count in the last one, as in
    // the report, not as a third, near-empty second.
    assert_eq!(seconds.len(), 2, "{stderr}");
    assert!(seconds[1].starts_with("[   2s]"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_streams_and_pubsub_run_against_a_real_server() {
    let redis = RedisServer::start().await;
    let addr = redis.addr();
    let tx = run(&[
        "--target",
        &addr,
        "-w",
        "tx",
        "--keys-per-command",
        "3",
        "-c",
        "2",
        "-P",
        "4",
        "-n",
        "500",
    ])
    .await;
    assert_eq!(tx.errors, 0, "{:?}", tx.errors_by_kind);
    assert_eq!(tx.ops, 500, "a transaction is one request");
    let mut c = redis.client().await;
    let execs = redis.commandstats("exec").await;
    assert!(execs >= 500, "EXEC calls: {execs}");

    let stream = run(&["--target", &addr, "-w", "stream", "-c", "4", "-d", "1s"]).await;
    assert_eq!(stream.errors, 0, "{:?}", stream.errors_by_kind);
    let xlen: i64 = redis::cmd("XLEN")
        .arg("bench:stream")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(xlen > 100, "producers added {xlen}");
    for cmd in ["xreadgroup", "xack", "xautoclaim"] {
        assert!(redis.commandstats(cmd).await > 0, "{cmd} was sent");
    }
    // Consumers acknowledge what they read: little stays pending (at most one read per consumer in flight).
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg("bench:stream")
        .arg("bench")
        .query_async(&mut c)
        .await
        .unwrap();
    let count = match pending {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert!(count <= 2 * 10, "{count} messages left pending");

    let pubsub = run(&[
        "--target", &addr, "-w", "pubsub", "-c", "4", "-d", "1s", "--warmup", "300ms",
    ])
    .await;
    assert_eq!(pubsub.errors, 0, "{:?}", pubsub.errors_by_kind);
    let published = redis.commandstats("publish").await;
    assert!(published > 100, "{published} PUBLISH");
    // Each of the 2 subscribers gets every message; their deliveries are requests too.
    assert!(
        pubsub.ops > published,
        "{} requests for {published} messages",
        pubsub.ops
    );
    // Deliveries (most of the requests) take a loopback hop at least; they read 0 when the
    // publishers stamped messages from another origin than the subscribers measure from.
    assert!(
        pubsub.latency_us.p50 >= 5,
        "p50 {} us",
        pubsub.latency_us.p50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_json_csv_html_and_runs_merge() {
    let redis = RedisServer::start().await;
    let addr = redis.addr();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for name in ["a", "b"] {
        let (json, csv, html) = (
            path(&format!("{name}.json")),
            path(&format!("{name}.csv")),
            path(&format!("{name}.html")),
        );
        let args = bench_args(&[
            "--target", &addr, "-w", "mixed", "-c", "2", "-d", "1500ms", "--json", &json, "--csv",
            &csv, "--html", &html,
        ]);
        bench::execute(args).await.unwrap();
        let csv = std::fs::read_to_string(&csv).unwrap();
        assert!(
            csv.starts_with("t,ops,errors,connects,p50_us,p99_us,max_us\n"),
            "{csv}"
        );
        assert!(csv.lines().count() >= 2, "{csv}");
        let html = std::fs::read_to_string(&html).unwrap();
        assert_eq!(html.matches("<svg").count(), 3);
    }
    let (a, b) = (
        RunReport::read(dir.path().join("a.json").as_path()).unwrap(),
        RunReport::read(dir.path().join("b.json").as_path()).unwrap(),
    );
    assert!(a.ops > 0 && !a.histogram.is_empty() && !a.timeline.is_empty());
    let merged_json = path("merged.json");
    let args = parse_bench(&[
        "merge",
        &path("a.json"),
        &path("b.json"),
        "--json",
        &merged_json,
    ]);
    assert!(matches!(args.action, Some(BenchAction::Merge(_))));
    bench::execute(args).await.unwrap();
    let m = RunReport::read(std::path::Path::new(&merged_json)).unwrap();
    assert_eq!(m.runs, 2);
    assert_eq!(m.ops, a.ops + b.ops);
    assert_eq!(m.latency_us.count, a.ops + b.ops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_runs_each_target_and_writes_all_reports() {
    let (a, b) = (RedisServer::start().await, RedisServer::start().await);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cmp.json").to_string_lossy().into_owned();
    let csv = dir.path().join("cmp.csv").to_string_lossy().into_owned();
    let targets = format!("first={},second={}", a.addr(), b.addr());
    let args = bench_args(&[
        "--compare",
        &targets,
        "--rounds",
        "2",
        "-d",
        "300ms",
        "-c",
        "2",
        "-w",
        "get",
        "--json",
        &json,
        "--csv",
        &csv,
    ]);
    bench::execute(args).await.unwrap();
    let reports: Vec<RunReport> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.setup.name.as_str()).collect();
    assert_eq!(names, vec!["first", "second"]);
    assert!(reports
        .iter()
        .all(|r| r.runs == 2 && r.ops > 0 && r.errors == 0));
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("second,0,")), "{csv}");
    assert!(
        b.commandstats("get").await > 0,
        "the second target was loaded"
    );
}

/// The open loop keeps its schedule through a stall, so a 1 s `CLIENT PAUSE` shows in p99 and max; the
/// closed loop at the same time simply waits and reports the stall as one slow request per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_shows_a_stall() {
    let redis = RedisServer::start().await;
    let addr = redis.addr();
    let mut admin = redis.client().await;
    let args = load_args(&[
        "--target", &addr, "--rps", "400", "-c", "4", "-P", "64", "-d", "3s", "-w", "get",
    ]);
    let run = tokio::spawn(async move { bench::run_load(&args, "open", None).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let paused_at = Instant::now();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .query_async(&mut admin)
        .await
        .unwrap();
    let r = run.await.unwrap().unwrap();
    assert!(paused_at.elapsed() >= Duration::from_secs(1));
    assert_eq!(r.errors, 0, "{:?}", r.errors_by_kind);
    // About 400 of 1200 requests were due during the pause; their latency counts from when they were due.
    assert!(r.latency_us.max >= 900_000, "max {}", r.latency_us.max);
    assert!(r.latency_us.p99 >= 500_000, "p99 {}", r.latency_us.p99);
    assert!(
        r.ops >= 1000,
        "the backlog is sent after the pause: {}",
        r.ops
    );
    let worst = r.timeline.iter().map(|s| s.p99_us).max().unwrap_or(0);
    assert!(
        worst >= 500_000,
        "a second of the timeline holds the stall: {:?}",
        r.timeline
    );
}

fn replicaof_and_wait(replica: &RedisServer, master: &RedisServer) -> String {
    format!(
        "redis-cli -p {r} REPLICAOF 127.0.0.1 {m} >/dev/null && for i in $(seq 200); do \
         redis-cli -p {r} INFO replication | grep -q master_link_status:up && exit 0; sleep 0.05; done; exit 1",
        r = replica.port(),
        m = master.port()
    )
}

/// Writes acknowledged by a master that is then made a replica of an empty server are all reported lost;
/// on a server left alone none are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_write_check_catches_a_lossy_setup_and_passes_a_clean_one() {
    let (a, empty) = (RedisServer::start().await, RedisServer::start().await);
    let addr = a.addr();
    let clean = run(&[
        "--target", &addr, "--track", "-c", "4", "-P", "2", "-d", "1s", "--ratio", "1:1",
    ])
    .await;
    let f = clean.failover.expect("tracked runs report writes");
    assert!(f.acked_writes > 100, "{f:?}");
    assert_eq!(f.lost_writes, 0, "{f:?}");
    assert_eq!(f.stale_reads, 0, "{f:?}");
    assert!(f.reads > 0, "{f:?}");

    let cmd = replicaof_and_wait(&a, &empty);
    let lossy = run(&[
        "--target",
        &addr,
        "--failover-cmd",
        &cmd,
        "--failover-at",
        "700ms",
        "-c",
        "4",
        "-d",
        "2s",
        "--verify-target",
        &addr,
    ])
    .await;
    let f = lossy.failover.expect("tracked runs report writes");
    assert!(f.at_s.is_some(), "the command ran: {f:?}");
    assert!(f.acked_writes > 100, "{f:?}");
    assert_eq!(
        f.lost_writes, f.acked_writes,
        "every acknowledged write is gone: {f:?}"
    );
    assert_eq!(f.lost_sample.len(), 10);
    assert!(
        lossy.errors_by_kind.contains_key("READONLY"),
        "{:?}",
        lossy.errors_by_kind
    );
    assert!(f.error_window_start_s.is_some_and(|s| s >= 0.6), "{f:?}");
}

/// A planned failover through haproxy-rs: the report has the trigger, the sentinel events and the
/// read-back from the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_failover_through_the_proxy_is_reported() {
    let topo = Topology::start(1, 1).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    let old = topo.master.addr();
    let sentinel = topo.sentinel_addrs()[0].clone();
    let target = proxy.addr().to_string();
    let r = run(&[
        "--target",
        &target,
        "--sentinel",
        &sentinel,
        "--master-name",
        topo.master_name(),
        "--failover",
        "planned",
        "--failover-at",
        "1s",
        "-d",
        "4s",
        "-c",
        "4",
        "--timeout",
        "2s",
    ])
    .await;
    let f = r.failover.clone().expect("failover runs report");
    assert_eq!(f.trigger, "planned");
    assert_eq!(f.old_master.as_deref(), Some(old.as_str()));
    assert!(f.at_s.is_some_and(|t| (0.9..2.0).contains(&t)), "{f:?}");
    assert_ne!(
        f.verified_on.as_deref(),
        Some(old.as_str()),
        "read back from the new master"
    );
    assert!(f.acked_writes > 0, "{f:?}");
    assert!(
        r.events.iter().any(|e| e.channel == "+switch-master"),
        "events: {:?}",
        r.events
    );
    let table = r.table();
    println!("{table}");
    assert!(table.contains("sentinel events:"));
}

/// A kill failover with no proxy: connections find the master through Sentinel again after errors, the
/// error window runs from the kill to the first write on the promoted replica, and the writes are read
/// back from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_failover_of_a_sentinel_found_master_is_reported() {
    let topo = Topology::builder()
        .replicas(1)
        .sentinels(1)
        .quorum(1)
        .down_after(Duration::from_millis(1000))
        .start()
        .await;
    let old = topo.master.addr();
    let sentinel = topo.sentinel_addrs()[0].clone();
    let r = run(&[
        "--sentinel",
        &sentinel,
        "--master-name",
        topo.master_name(),
        "--failover",
        "kill",
        // A baseline of two seconds, and time after the failover to get back to 90% of it
        // while other tests load the machine (6 s with the kill at 1 s failed now and then).
        "--failover-at",
        "2s",
        "-d",
        "8s",
        "-c",
        "4",
        "--timeout",
        "1s",
        // A paced load: unpaced, the baseline is what the machine gave in the first two
        // seconds, and load from other tests after them kept the rate below 90% of it.
        "--rps",
        "4000",
    ])
    .await;
    println!("{}", r.table());
    assert!(!topo.master.is_running(), "the master was killed");
    let f = r.failover.clone().expect("failover runs report");
    assert_eq!(f.trigger, "kill");
    assert_eq!(f.old_master.as_deref(), Some(old.as_str()));
    let new = f.verified_on.clone().unwrap_or_default();
    assert_ne!(new, old, "read back from the promoted replica");
    let start = f.error_window_start_s.expect("the kill causes errors");
    let end = f
        .error_window_end_s
        .expect("writes succeed again before the end");
    assert!((1.9..2.5).contains(&start), "{f:?}");
    assert!(
        end > start + 0.9,
        "no master for at least down-after: {f:?}"
    );
    assert!(
        r.connects > 4,
        "connections were made again: {}",
        r.connects
    );
    assert!(f.acked_writes > 0 && f.recovery_s.is_some(), "{f:?}");
    assert!(
        r.events.iter().any(|e| e.channel == "+switch-master"),
        "{:?}",
        r.events
    );
}

/// `bench --cluster` sends every key to the master owning its slot: a single connection walking 300 keys
/// once leaves on each master exactly the keys of its slots, without a `MOVED`; a `mixed_10keys` run splits
/// each MGET/MSET into one sub-command per slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_runs_send_every_key_to_its_master() {
    let cluster = Cluster::start(3, 1).await;
    // A replica as the seed: any node knows the map.
    let seed = cluster.addrs().last().cloned().unwrap();
    let set = run(&[
        "--cluster",
        &seed,
        "-w",
        "set",
        "-c",
        "1",
        "-P",
        "8",
        "-n",
        "300",
        "-d",
        "10s",
        "--keyspace",
        "300",
        "--key-dist",
        "sequential",
    ])
    .await;
    assert_eq!(set.errors, 0, "{:?}", set.errors_by_kind);
    assert_eq!(set.ops, 300);
    assert_eq!(set.connects, 3, "one connection per master");
    let masters = cluster.masters().await;
    assert_eq!(masters.len(), 3);
    let map = masters[0].slot_map().await.expect("CLUSTER SLOTS");
    for m in &masters {
        let mine = (0..300u64)
            .filter(|n| {
                let slot = key_slot(format!("key:{n:012}").as_bytes());
                map.owners(slot).is_some_and(|o| o.master == m.addr())
            })
            .count() as i64;
        assert!(mine > 0, "{} owns some of the 300 keys", m.addr());
        assert_eq!(dbsize(m).await, mine, "keys on {}", m.addr());
    }

    let mixed = run(&[
        "--cluster",
        &seed,
        "-w",
        "mixed",
        "--ratio",
        "1:10",
        "--keys-per-command",
        "10",
        "-c",
        "4",
        "-P",
        "4",
        "-n",
        "2000",
        "-d",
        "10s",
    ])
    .await;
    assert_eq!(mixed.errors, 0, "{:?}", mixed.errors_by_kind);
    assert_eq!(mixed.ops, 2000, "a split request counts once");
    assert_eq!(mixed.connects, 12);
    let mut parts = 0;
    for m in &masters {
        let (mget, mset) = (m.commandstats("mget").await, m.commandstats("mset").await);
        assert!(
            mget > 0 && mset > 0,
            "{}: mget {mget}, mset {mset}",
            m.addr()
        );
        parts += mget + mset;
    }
    // 10 keys out of 100000 nearly always fall in 10 different slots.
    assert!(parts >= 2000 * 9, "{parts} sub-commands for 2000 requests");
}

/// A slot moved during a `bench --cluster` run: requests to it get `MOVED`, counted under that kind, and
/// the connections point the slot at the node the redirect names (the seed may not know yet) and run on
/// without errors or new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_runs_count_moved_and_follow_the_redirect() {
    let cluster = Cluster::start(3, 0).await;
    let masters = cluster.masters().await;
    let map = masters[0].slot_map().await.expect("CLUSTER SLOTS");
    // The hottest zipf key's slot; GETs only, so it holds no key and can be reassigned at once.
    let slot = key_slot(b"key:000000000000");
    let from = map.owners(slot).map(|o| o.master.clone()).unwrap();
    let from = *masters.iter().find(|m| m.addr() == from).unwrap();
    let to = *masters.iter().find(|m| m.addr() != from.addr()).unwrap();
    let mut to_conn = to.client().await;
    let to_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut to_conn)
        .await
        .unwrap();
    let seed = masters
        .iter()
        .find(|m| m.addr() != from.addr() && m.addr() != to.addr())
        .unwrap()
        .addr();
    let args = load_args(&[
        "--cluster",
        &seed,
        "-w",
        "get",
        "--key-dist",
        "zipf",
        "--keyspace",
        "1000",
        "-c",
        "4",
        "-d",
        "3s",
    ]);
    let run = tokio::spawn(async move { bench::run_load(&args, "moved", None).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The new owner first, then the old one (the resharding order of the cluster spec).
    for node in [to, from] {
        let mut c = node.client().await;
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to_id)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let r = run.await.unwrap().unwrap();
    println!("{}", r.table());
    let moved = r.errors_by_kind.get("MOVED").copied().unwrap_or(0);
    assert!(
        moved >= 4,
        "every connection hit the moved slot: {:?}",
        r.errors_by_kind
    );
    assert_eq!(
        r.errors, moved,
        "MOVED is the only error: {:?}",
        r.errors_by_kind
    );
    assert_eq!(r.connects, 4 * 3, "the redirect names a known master");
    let last = r.timeline.last().expect("a timeline");
    assert!(
        last.ops > 0 && last.errors == 0,
        "settled by the end: {:?}",
        r.timeline
    );
}

/// `--cluster` pointed at a server without cluster support: the run ends at its deadline with the
/// server's error counted, not a hang or a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_runs_against_a_plain_server_report_its_error() {
    let redis = RedisServer::start().await;
    let r = run(&["--cluster", &redis.addr(), "-d", "500ms", "-c", "2"]).await;
    assert_eq!(r.ops, 0);
    assert!(r.errors > 0, "{:?}", r.errors_by_kind);
    let sample = r.error_samples.get("ERR").cloned().unwrap_or_default();
    assert!(
        sample.contains("cluster support disabled"),
        "{:?}",
        r.error_samples
    );
}
