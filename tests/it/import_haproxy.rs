//! `haproxy-rs import-haproxy` (issue 16 item 6): the fixtures are configs HAProxy accepts; the
//! binary's TOML, pointed at real servers, runs a proxy that serves SET and GET; the report names
//! the lines it could not translate; bad input exits 2 naming the line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use haproxy_rs::config::Config;

use crate::eventually;
use crate::harness::ports::free_port;
use crate::harness::redis::connect;
use crate::harness::{RedisServer, Topology};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/haproxy")
        .join(name)
}

const FIXTURES: &[&str] = &[
    "sentinel-role-master.cfg",
    "redis-ha-chart.cfg",
    "auth-and-unsupported.cfg",
];

/// `haproxy-rs import-haproxy ARGS`: exit code, stdout, stderr.
async fn import(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_haproxy-rs"))
        .arg("import-haproxy")
        .args(args)
        .output()
        .await
        .expect("run haproxy-rs import-haproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_fixtures_are_configs_haproxy_accepts() {
    let found = std::process::Command::new("haproxy").arg("-v").output();
    if found.is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs haproxy (scripts/test.sh installs it)"
        );
        eprintln!("haproxy not installed: skipped");
        return;
    }
    for name in FIXTURES {
        let out = std::process::Command::new("haproxy")
            .args(["-c", "-f"])
            .arg(fixture(name))
            .output()
            .expect("run haproxy -c");
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes `cfg` to a temp dir, imports it with `extra` flags into `out.toml`, and runs the proxy
/// on that file; the dir and the running proxy.
async fn import_and_run(cfg: &str, extra: &[&str]) -> (tempfile::TempDir, tokio::process::Child) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("haproxy.cfg");
    std::fs::write(&input, cfg).unwrap();
    let output = dir.path().join("out.toml");
    let mut args = vec![input.to_str().unwrap(), "-o", output.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, _, stderr) = import(&args).await;
    assert_eq!(code, 0, "{stderr}");
    let toml = std::fs::read_to_string(&output).unwrap();
    let loaded = Config::from_file(&output).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    haproxy_rs::check_config(&loaded).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_haproxy-rs"))
        .args(["run", "-c", output.to_str().unwrap()])
        .env("HAPROXY_RS_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy-rs run");
    (dir, child)
}

async fn set(addr: &str, key: &str, value: &str) -> bool {
    let Ok(mut c) = connect(addr).await else {
        return false;
    };
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<String>(&mut c)
        .await
        .is_ok()
}

async fn get(addr: &str, key: &str) -> Option<String> {
    let mut c = connect(addr).await.ok()?;
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<String>>(&mut c)
        .await
        .ok()?
}

/// Three loopback addresses on free ports: write, read, stats.
fn ports() -> [String; 3] {
    [free_port(), free_port(), free_port()].map(|p| format!("127.0.0.1:{p}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_config_imported_serves_writes_and_reads_on_static_servers() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    replica.wait_link_up().await;
    let [write, read, stats] = ports();
    let cfg = std::fs::read_to_string(fixture("sentinel-role-master.cfg"))
        .unwrap()
        .replace("10.0.0.1:6379", &master.addr())
        .replace("10.0.0.2:6379", &replica.addr())
        .replace("10.0.0.3:6379", &replica.addr())
        .replace("*:6379", &write)
        .replace("*:6380", &read)
        .replace(":8404", &stats);
    let (_dir, _proxy) = import_and_run(&cfg, &[]).await;
    eventually!(
        Duration::from_secs(20),
        set(&write, "imported", "yes").await,
        "SET through the imported config's write endpoint"
    );
    assert_eq!(get(&write, "imported").await.as_deref(), Some("yes"));
    eventually!(
        Duration::from_secs(20),
        get(&read, "imported").await.as_deref() == Some("yes"),
        "GET through the read endpoint (a replica)"
    );
    assert_eq!(
        get(&master.addr(), "imported").await.as_deref(),
        Some("yes"),
        "the write reached the master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_ha_chart_imported_follows_its_sentinels() {
    let topo = Topology::start(1, 1).await;
    let sentinel = topo.sentinel_addrs()[0].clone();
    let [write, read, stats] = ports();
    let mut cfg = std::fs::read_to_string(fixture("redis-ha-chart.cfg"))
        .unwrap()
        .replace("mymaster", topo.master_name())
        .replace("*:6379", &write)
        .replace("*:6380", &read)
        .replace("*:9101", &stats)
        .replace(":8888", &format!("127.0.0.1:{}", free_port()));
    for s in ["10.96.0.10:26379", "10.96.0.11:26379", "10.96.0.12:26379"] {
        cfg = cfg.replace(s, &sentinel);
    }
    let (dir, _proxy) = import_and_run(&cfg, &[]).await;
    let toml = std::fs::read_to_string(dir.path().join("out.toml")).unwrap();
    assert!(
        toml.contains(&format!("addrs = [\"{sentinel}\"]")),
        "{toml}"
    );
    eventually!(
        Duration::from_secs(30),
        set(&write, "chart", "ok").await,
        "SET through the write endpoint, the master from the sentinels"
    );
    assert_eq!(get(&write, "chart").await.as_deref(), Some("ok"));
    assert_eq!(topo.current_master_addr().await, topo.master.addr());
    assert_eq!(
        get(&topo.master.addr(), "chart").await.as_deref(),
        Some("ok"),
        "the write reached the master the sentinels name"
    );
}

#[tokio::test]
async fn the_report_names_the_lines_not_translated_and_strict_fails_on_them() {
    let path = fixture("auth-and-unsupported.cfg");
    let path = path.to_str().unwrap();
    let (code, toml, stderr) = import(&[path]).await;
    assert_eq!(code, 0, "{stderr}");
    Config::from_toml(&toml, "stdout").unwrap();
    let lost: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(": not translated: "))
        .collect();
    for (line, starts) in [
        (7, "stats socket"),
        (19, "acl local"),
        (20, "tcp-request connection reject"),
        (27, "server r1"),
        (37, "frontend ft_sessions"),
        (41, "frontend web"),
        (57, "stats auth ****"),
    ] {
        let want = format!("auth-and-unsupported.cfg:{line}: not translated: {starts}");
        assert!(
            lost.iter().any(|l| l.contains(&want)),
            "{want} in:\n{stderr}"
        );
        assert!(
            toml.contains(&format!("#   line {line}: {starts}")),
            "line {line} in the TOML's comments:\n{toml}"
        );
    }
    assert!(!stderr.contains("hunter2") && !stderr.contains("s3cr"));
    assert!(!toml.contains("hunter2"));
    let (code, _, _) = import(&[path, "--strict"]).await;
    assert_eq!(code, 1, "--strict with lines not translated");
}

#[tokio::test]
async fn bad_input_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.cfg");
    std::fs::write(&bad, "global\n  maxconn 10\nfrontend f\n  bind \":6379\n").unwrap();
    let (code, out, stderr) = import(&[bad.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(out.is_empty(), "nothing written: {out}");
    assert!(stderr.contains("line 4: unmatched quote"), "{stderr}");
    let (code, _, stderr) = import(&[dir.path().join("missing.cfg").to_str().unwrap()]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("missing.cfg"), "{stderr}");
    let web = dir.path().join("web.cfg");
    std::fs::write(&web, "frontend w\n  mode http\n  bind :80\n").unwrap();
    let (code, _, stderr) = import(&[web.to_str().unwrap()]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("no Redis frontend"), "{stderr}");
}
