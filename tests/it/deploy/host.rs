//! The systemd unit and the Dockerfile.

use std::collections::BTreeSet;

use haproxy_rs::cli::Command as Sub;
use haproxy_rs::config::Config;

use super::*;

/// `Key=value` lines of a unit's section, in order.
fn unit_entries(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').expect("Key=value");
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

#[test]
fn systemd_unit_runs_hardened_and_reloads_on_sighup() {
    let unit = read("deploy/systemd/haproxy-rs.service");
    let service = unit_entries(&unit, "Service");
    let value = |key: &str| {
        let v: Vec<&str> = service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(v.len(), 1, "{key} once: {v:?}");
        v[0].to_owned()
    };
    let exec: Vec<String> = value("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/haproxy-rs");
    assert!(
        matches!(parse_cli(&exec[1..]).command, Sub::Run(_)),
        "{exec:?}"
    );
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestartPreventExitStatus", "64"),
    ] {
        assert_eq!(value(key), want, "{key}");
    }
    let stop: u64 = value("TimeoutStopSec").parse().expect("seconds");
    let grace = Config::default().shutdown_grace_ms;
    assert!(
        stop * 1000 > grace,
        "TimeoutStopSec outlasts shutdown_grace_ms"
    );

    let Some(analyze) = tool("systemd-analyze", &[&["systemd-analyze"]]) else {
        return;
    };
    // `verify` checks the binary exists: point it at the one cargo built.
    let dir = std::env::temp_dir().join(format!("haproxy-rs-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("haproxy-rs.service");
    let bin = env!("CARGO_BIN_EXE_haproxy-rs");
    std::fs::write(&path, unit.replace("/usr/local/bin/haproxy-rs", bin)).expect("write");
    let out = run(&analyze, &["verify", path.to_str().expect("a UTF-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn dockerfile_builds_a_small_non_root_image_with_the_proxy_ports() {
    let docker = read("Dockerfile");
    let lines: Vec<&str> = docker
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let stages: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(
        stages[1].contains("distroless") && stages[1].ends_with(":nonroot"),
        "{}",
        stages[1]
    );
    let last = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    let runtime = &lines[last..];
    assert!(runtime.contains(&"USER nonroot"), "{runtime:?}");
    let exposed: BTreeSet<u64> = runtime
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace())
        .map(|p| p.parse().expect("a port"))
        .collect();
    let cfg = deployed_config(&base());
    let ports: BTreeSet<u64> = [
        cfg.listen.clone(),
        cfg.read_listen.clone().expect("read_listen"),
        cfg.stats.clone().expect("stats"),
    ]
    .iter()
    .map(|a| port_of(a))
    .collect();
    assert_eq!(exposed, ports);
    assert!(
        runtime.contains(&r#"ENTRYPOINT ["/usr/local/bin/haproxy-rs"]"#),
        "{runtime:?}"
    );
    let cmd = runtime
        .iter()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    assert!(matches!(parse_cli(&args).command, Sub::Run(_)), "{args:?}");
}
