//! The proxy's pods: ports, names, probes, drain time and hardening agree with its config and stats endpoints.

use serde_yaml::Value;

use super::*;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::Topology;
use crate::stats_http::get;

/// The container port of this name.
fn container_port(container: &Value, name: &str) -> u64 {
    let ports = container["ports"].as_sequence().expect("ports");
    let p = ports
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container port {name}"));
    int(&p["containerPort"])
}

#[test]
fn kubernetes_proxy_ports_and_names_agree_with_its_config() {
    let docs = base();
    let cfg = deployed_config(&docs);
    let container = proxy_container(&docs);
    let listeners = [
        ("redis", cfg.listen.clone(), 6379),
        (
            "redis-read",
            cfg.read_listen.clone().expect("read_listen"),
            6380,
        ),
        ("stats", cfg.stats.clone().expect("stats"), 8404),
    ];
    let service = &object(&docs, "Service", "redis-ha")["spec"];
    let pod_labels =
        &object(&docs, "Deployment", "haproxy-rs")["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&service["selector"], pod_labels);
    let service_ports = service["ports"].as_sequence().expect("ports");
    assert_eq!(service_ports.len(), listeners.len());
    for (name, addr, port) in &listeners {
        assert_eq!(port_of(addr), *port, "{name}: {addr}");
        assert_eq!(container_port(container, name), *port, "{name}");
        let sp = service_ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("redis-ha has no port {name}"));
        assert_eq!(int(&sp["port"]), *port, "{name}");
        assert_eq!(sp["targetPort"].as_str(), Some(*name), "{name}");
    }
    let sentinels = object(&docs, "StatefulSet", "redis-sentinel");
    let n = int(&sentinels["spec"]["replicas"]);
    let want: Vec<String> = (0..n)
        .map(|i| format!("redis-sentinel-{i}.redis-sentinel:26379"))
        .collect();
    let s = cfg.sentinel.as_ref().expect("Sentinel mode");
    assert_eq!(s.addrs, want, "the proxy is given every sentinel by name");
    assert_eq!(
        sentinels["spec"]["serviceName"].as_str(),
        Some("redis-sentinel")
    );
    let script = read("deploy/kubernetes/base/start.sh");
    let monitor = format!("sentinel monitor {} $master 6379 2", s.master_name);
    assert!(script.lines().any(|l| l.trim() == monitor), "{monitor}");
    let down_after: u64 = script
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("sentinel down-after-milliseconds mymaster ")
        })
        .and_then(|v| v.parse().ok())
        .expect("down-after-milliseconds");
    assert!(cfg.failover.sentinel_loss_fence_ms < down_after);
    assert!(cfg.admin_token.is_some() && cfg.backend.password.is_some());
    assert_eq!(
        int(&object(&docs, "StatefulSet", "redis")["spec"]["replicas"]),
        3
    );
}

/// The named container port a probe's `httpGet` uses, and its path.
fn http_probe(container: &Value, probe: &str) -> (String, String) {
    let get = &container[probe]["httpGet"];
    (scalar(&get["port"]), scalar(&get["path"]))
}

#[test]
fn kubernetes_proxy_pods_drain_within_their_grace_and_run_hardened() {
    let docs = base();
    let cfg = deployed_config(&docs);
    let deployment = object(&docs, "Deployment", "haproxy-rs");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = proxy_container(&docs);

    // preStop sleep, then SIGTERM and shutdown_grace_ms, all before the kubelet's SIGKILL.
    let pre_stop_ms = int(&container["lifecycle"]["preStop"]["sleep"]["seconds"]) * 1000;
    assert!(pre_stop_ms > 0);
    let grace_ms = int(&pod["terminationGracePeriodSeconds"]) * 1000;
    assert!(
        grace_ms > pre_stop_ms + cfg.shutdown_grace_ms,
        "terminationGracePeriodSeconds {grace_ms} ms, preStop {pre_stop_ms} ms + shutdown_grace_ms {}",
        cfg.shutdown_grace_ms
    );
    assert_eq!(
        http_probe(container, "readinessProbe"),
        ("stats".into(), "/healthz".into())
    );
    let readiness = &container["readinessProbe"];
    let unready_after_ms =
        int(&readiness["periodSeconds"]) * int(&readiness["failureThreshold"]) * 1000;
    assert!(
        unready_after_ms > cfg.failover.hold_ms,
        "a failover's hold ({} ms) does not make the proxies unready ({unready_after_ms} ms)",
        cfg.failover.hold_ms
    );
    let (port, path) = http_probe(container, "livenessProbe");
    assert_eq!(port, "stats");
    assert_ne!(
        path, "/healthz",
        "no master is no reason to restart the proxy"
    );

    // Two or more, spread over nodes, one at a time down.
    let replicas = int(&deployment["spec"]["replicas"]);
    assert!(replicas >= 2);
    let labels = &pod_labels(deployment);
    let term = &pod["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(&term["labelSelector"]["matchLabels"], labels);
    assert_eq!(term["topologyKey"].as_str(), Some("kubernetes.io/hostname"));
    let pdb = &object(&docs, "PodDisruptionBudget", "haproxy-rs")["spec"];
    assert_eq!(&pdb["selector"]["matchLabels"], labels);
    assert!(int(&pdb["maxUnavailable"]) < replicas);

    // Non-root, read-only root, no privileges; the image's user (Dockerfile: USER nonroot).
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(int(&pod["securityContext"]["runAsUser"]), 65532);
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let res = &container["resources"];
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(!res[k][r].is_null(), "resources.{k}.{r}");
        }
    }
    let cpus: f64 = scalar(&res["limits"]["cpu"]).parse().expect("whole CPUs");
    assert!(
        cfg.threads >= 1 && cfg.threads as f64 <= cpus,
        "threads {} for {cpus} CPUs",
        cfg.threads
    );
}

/// The stats listener of the deployed config answers the probes' paths: liveness 200 with or
/// without a master, readiness (`/healthz`) 503 until the proxy knows the master, then 200.
#[tokio::test]
async fn kubernetes_probes_answer_as_the_pod_needs() {
    let docs = base();
    let container = proxy_container(&docs);
    let (_, ready) = http_probe(container, "readinessProbe");
    let (_, alive) = http_probe(container, "livenessProbe");
    let mut cfg = deployed_config(&docs);
    cfg.backend.password = None;

    // The sentinels' names do not resolve here: no master.
    let alone = ProxyBuilder::from_config(cfg.clone()).launch().await;
    assert_eq!(get(alone.stats_addr(), &alive).await.0, 200, "{alive}");
    let (status, body) = get(alone.stats_addr(), &ready).await;
    assert_eq!((status, body.as_str()), (503, "no master\n"), "{ready}");
    drop(alone);

    let topo = Topology::start(1, 3).await;
    let proxy = ProxyBuilder::from_config(cfg)
        .with(|c| {
            if let Some(s) = c.sentinel.as_mut() {
                s.addrs = topo.sentinel_addrs();
            }
        })
        .start(1)
        .await;
    assert_eq!(get(proxy.stats_addr(), &ready).await, (200, "ok\n".into()));
    assert_eq!(get(proxy.stats_addr(), &alive).await.0, 200);
}

#[test]
fn service_monitor_scrapes_the_stats_port() {
    let docs = base();
    let service = object(&docs, "Service", "redis-ha");
    let monitor = documents(&read(
        "deploy/kubernetes/components/servicemonitor/servicemonitor.yaml",
    ));
    let spec = &object(&monitor, "ServiceMonitor", "haproxy-rs")["spec"];
    assert_eq!(
        monitor[0]["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let selector = spec["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    for (k, v) in selector {
        assert_eq!(&service["metadata"]["labels"][k], v, "redis-ha's labels");
    }
    let endpoint = &spec["endpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("stats"));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    assert!(service["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .any(|p| p["name"].as_str() == Some("stats")));
}
