//! compose/docker-compose.yml, scripts/lab.sh and the baseline configs describe the same topology; so do
//! compose/cluster.yml, `scripts/lab.sh cluster` and config/cluster.toml.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn compose() -> Value {
    compose_file("compose/docker-compose.yml")
}

fn compose_file(rel: &str) -> Value {
    let mut doc: Value = serde_yaml::from_str(&read(rel)).expect("valid YAML");
    // The files share settings through `<<: *anchor`, which serde_yaml leaves unapplied.
    doc.apply_merge().expect("merge keys apply");
    doc
}

/// A service's `command` as a list of strings (compose also accepts one string).
fn command(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// Values following each occurrence of `flag` in `args`.
fn flag_values(args: &[String], flag: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

/// Services whose command mentions `program`, by name.
fn services_running(doc: &Value, program: &str) -> BTreeSet<String> {
    let services = doc["services"].as_mapping().expect("a services map");
    services
        .iter()
        .filter(|(_, svc)| command(svc).iter().any(|a| a.contains(program)))
        .map(|(name, _)| scalar(name))
        .collect()
}

/// Container ports a service publishes ("6379:6379", "127.0.0.1:6379:6379" or long syntax).
fn published_ports(service: &Value) -> BTreeSet<u16> {
    let ports = service["ports"].as_sequence().cloned().unwrap_or_default();
    ports
        .iter()
        .map(|p| match p {
            Value::Mapping(_) => scalar(&p["target"]),
            other => scalar(other)
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_owned(),
        })
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .expect("a numeric container port")
        })
        .collect()
}

#[test]
fn compose_has_a_master_two_replicas_and_three_sentinels() {
    let doc = compose();
    let master = &doc["services"]["redis-master"];
    assert_eq!(master["image"].as_str(), Some("redis:7.0"));
    assert!(
        flag_values(&command(master), "--replicaof").is_empty(),
        "the master replicates nobody"
    );

    let redis = services_running(&doc, "redis-server");
    let replicas: BTreeSet<String> = redis
        .iter()
        .filter(|name| {
            flag_values(&command(&doc["services"][name.as_str()]), "--replicaof")
                == ["redis-master"]
        })
        .cloned()
        .collect();
    assert_eq!(
        replicas,
        BTreeSet::from(["redis-replica-1".into(), "redis-replica-2".into()])
    );
    for name in &replicas {
        assert_eq!(
            doc["services"][name.as_str()]["image"].as_str(),
            Some("redis:7.0")
        );
    }

    let sentinels = services_running(&doc, "redis-sentinel");
    assert_eq!(sentinels.len(), 3, "three sentinels: {sentinels:?}");
    for name in &sentinels {
        assert_eq!(
            doc["services"][name.as_str()]["image"].as_str(),
            Some("redis:7.0")
        );
    }
    let conf = read("compose/sentinel.conf");
    for line in [
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        "sentinel monitor mymaster redis-master 6379 2",
        "sentinel down-after-milliseconds mymaster 5000",
        "sentinel failover-timeout mymaster 10000",
    ] {
        assert!(
            conf.lines().any(|l| l.trim() == line),
            "compose/sentinel.conf lacks `{line}`"
        );
    }
}

#[test]
fn compose_haproxy_rs_follows_the_three_sentinels() {
    let doc = compose();
    let proxy = &doc["services"]["haproxy-rs"];
    assert_eq!(proxy["image"].as_str(), Some("haproxy-rs:latest"));
    assert!(!proxy["build"].is_null(), "haproxy-rs builds from the repo");
    assert_eq!(published_ports(proxy), BTreeSet::from([6379, 6380, 8404]));

    let args = command(proxy);
    assert_eq!(args.first().map(String::as_str), Some("run"));
    assert_eq!(flag_values(&args, "--master-name"), ["mymaster"]);
    assert_eq!(flag_values(&args, "--listen"), ["0.0.0.0:6379"]);
    assert_eq!(flag_values(&args, "--read-listen"), ["0.0.0.0:6380"]);
    assert_eq!(flag_values(&args, "--stats"), ["0.0.0.0:8404"]);
    let pointed: BTreeSet<String> = flag_values(&args, "--sentinel").into_iter().collect();
    let sentinels: BTreeSet<String> = services_running(&doc, "redis-sentinel")
        .into_iter()
        .map(|name| format!("{name}:26379"))
        .collect();
    assert_eq!(pointed, sentinels);
}

/// `NAME=value` or `NAME=(a b c)` from a shell script, as words.
fn shell_var(script: &str, name: &str) -> Vec<String> {
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("scripts/lab.sh sets no {name}"));
    line.trim_start_matches('(')
        .trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn lab_script_starts_the_same_topology() {
    let lab = read("scripts/lab.sh");
    assert_eq!(shell_var(&lab, "MASTER_PORT"), ["6391"]);
    assert_eq!(shell_var(&lab, "REPLICA_PORTS"), ["6392", "6393"]);
    assert_eq!(
        shell_var(&lab, "SENTINEL_PORTS"),
        ["26391", "26392", "26393"]
    );
    assert_eq!(shell_var(&lab, "MASTER_NAME"), ["mymaster"]);
    assert_eq!(shell_var(&lab, "QUORUM"), ["2"]);
    assert_eq!(shell_var(&lab, "DOWN_AFTER_MS"), ["5000"]);
    assert_eq!(shell_var(&lab, "FAILOVER_TIMEOUT_MS"), ["10000"]);
}

#[test]
fn baseline_configs_point_at_the_lab() {
    let haproxy = read("config/haproxy.cfg");
    let servers: BTreeSet<&str> = haproxy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        servers,
        BTreeSet::from(["127.0.0.1:6391", "127.0.0.1:6392", "127.0.0.1:6393"])
    );
    for bind in ["127.0.0.1:16379", "127.0.0.1:16380", "127.0.0.1:18404"] {
        assert!(
            haproxy.contains(&format!("bind {bind}")),
            "haproxy.cfg binds {bind}"
        );
    }

    let twem: Value = serde_yaml::from_str(&read("config/nutcracker.yml")).expect("valid YAML");
    let pool = &twem["lab"];
    assert_eq!(pool["listen"].as_str(), Some("127.0.0.1:16381"));
    assert_eq!(pool["redis"].as_bool(), Some(true));
    let servers: Vec<String> = pool["servers"]
        .as_sequence()
        .expect("a server list")
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(servers.len(), 1);
    assert!(
        servers[0].starts_with("127.0.0.1:6391:"),
        "twemproxy fronts the lab master: {servers:?}"
    );
}

/// The services of compose/cluster.yml that run a cluster node, by name.
fn cluster_nodes(doc: &Value) -> BTreeSet<String> {
    services_running(doc, "redis-server")
        .into_iter()
        .filter(|name| {
            flag_values(
                &command(&doc["services"][name.as_str()]),
                "--cluster-enabled",
            ) == ["yes"]
        })
        .collect()
}

#[test]
fn compose_cluster_has_six_nodes_that_announce_their_names() {
    let doc = compose_file("compose/cluster.yml");
    let nodes = cluster_nodes(&doc);
    let want: BTreeSet<String> = (1..=6).map(|i| format!("redis-{i}")).collect();
    assert_eq!(nodes, want);
    for name in &nodes {
        let node = &doc["services"][name.as_str()];
        assert_eq!(node["image"].as_str(), Some("redis:7.0"));
        let args = command(node);
        assert_eq!(
            flag_values(&args, "--cluster-announce-hostname"),
            [name.as_str()]
        );
        assert_eq!(
            flag_values(&args, "--cluster-preferred-endpoint-type"),
            ["hostname"]
        );
        assert_eq!(flag_values(&args, "--cluster-node-timeout"), ["5000"]);
    }

    let init = &doc["services"]["cluster-init"];
    let script = command(init).join(" ");
    assert!(script.contains("redis-cli --cluster create"), "{script}");
    assert!(script.contains("--cluster-replicas 1"), "{script}");
    let listed: BTreeSet<String> = init["environment"]["NODES"]
        .as_str()
        .expect("cluster-init lists the nodes")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, nodes);
    for name in &nodes {
        assert_eq!(
            init["depends_on"][name.as_str()]["condition"].as_str(),
            Some("service_healthy"),
            "cluster-init waits for {name}"
        );
    }
}

#[test]
fn compose_cluster_haproxy_rs_is_seeded_with_the_nodes() {
    let doc = compose_file("compose/cluster.yml");
    let proxy = &doc["services"]["haproxy-rs"];
    assert_eq!(proxy["image"].as_str(), Some("haproxy-rs:latest"));
    assert!(!proxy["build"].is_null(), "haproxy-rs builds from the repo");
    assert_eq!(published_ports(proxy), BTreeSet::from([6379, 6380, 8404]));
    assert_eq!(
        proxy["depends_on"]["cluster-init"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    let args = command(proxy);
    assert_eq!(args.first().map(String::as_str), Some("run"));
    assert_eq!(flag_values(&args, "--listen"), ["0.0.0.0:6379"]);
    assert_eq!(flag_values(&args, "--read-listen"), ["0.0.0.0:6380"]);
    assert_eq!(flag_values(&args, "--stats"), ["0.0.0.0:8404"]);
    let seeds = flag_values(&args, "--cluster");
    assert!(!seeds.is_empty(), "haproxy-rs runs in cluster mode");
    let nodes: BTreeSet<String> = cluster_nodes(&doc)
        .into_iter()
        .map(|name| format!("{name}:6379"))
        .collect();
    assert!(seeds.iter().all(|s| nodes.contains(s)), "{seeds:?}");
}

#[test]
fn lab_cluster_and_config_cluster_toml_agree() {
    let lab = read("scripts/lab.sh");
    let ports = shell_var(&lab, "CLUSTER_PORTS");
    assert_eq!(ports, ["6401", "6402", "6403", "6404", "6405", "6406"]);
    assert_eq!(shell_var(&lab, "CLUSTER_REPLICAS"), ["1"]);
    assert_eq!(shell_var(&lab, "CLUSTER_NODE_TIMEOUT_MS"), ["5000"]);

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml");
    let cfg = haproxy_rs::config::Config::from_file(&path).expect("config/cluster.toml parses");
    let cluster = cfg.cluster.expect("config/cluster.toml has [cluster]");
    assert!(!cluster.seeds.is_empty());
    for seed in &cluster.seeds {
        let port = seed.strip_prefix("127.0.0.1:").expect("a loopback seed");
        assert!(ports.iter().any(|p| p == port), "{seed} is a lab node");
    }
    // Above the lab's cluster-node-timeout plus an election, so a failover is retried through.
    assert!(cluster.retry_window_ms > 5000 + 1000);
}
