//! Every manifest validates against the Kubernetes schemas, is part of a kustomization, and renders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::*;

/// The oldest Kubernetes the manifests are for (the preStop `sleep` action), and the newest whose
/// schemas `kubernetes-validate` ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// The kustomizations: the base, the example overlay, the bench Jobs and their merge step.
const KUSTOMIZATIONS: [&str; 4] = ["base", "overlays/example", "bench", "bench/merge"];

/// Validates `file` against the schemas of [`KUBERNETES_VERSIONS`], strictly (unknown fields are
/// errors). Only the ServiceMonitor, a Prometheus Operator CRD without a schema there, may be
/// skipped; [`service_monitor_scrapes_the_stats_port`] checks it by hand.
fn validate(validator: &[String], file: &Path) {
    let mut args = vec!["--strict", "--quiet"];
    for v in KUBERNETES_VERSIONS {
        args.extend(["-k", v]);
    }
    args.push(file.to_str().expect("a UTF-8 path"));
    let out = run(validator, &args);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !report.contains("ERROR"),
        "{}: {report}",
        file.display()
    );
    for line in report.lines().filter(|l| l.starts_with("WARN")) {
        assert!(line.contains("kind ServiceMonitor"), "{line}");
    }
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let Some(validator) = tool(
        "kubernetes-validate",
        &[&["python3", "-m", "kubernetes_validate"]],
    ) else {
        return;
    };
    // Patches are partial objects: they are validated in the rendered overlay.
    let patches = kustomization_entries(&["patches"]);
    let files = yaml_files("deploy/kubernetes");
    let manifests: Vec<&PathBuf> = files
        .iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .filter(|p| !patches.contains(&p.canonicalize().expect("canonical path")))
        .collect();
    assert!(manifests.len() >= 8, "{manifests:?}");
    for file in &manifests {
        validate(&validator, file);
    }
    let Some(kubectl) = kubectl() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("haproxy-rs-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for k in KUSTOMIZATIONS {
        let rendered = dir.join(format!("{}.yaml", k.replace('/', "-")));
        std::fs::write(&rendered, kustomize(&kubectl, k)).expect("write");
        validate(&validator, &rendered);
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The files (and directories) the kustomizations under deploy/kubernetes list under these
/// fields (`resources`, `components`, `patches`), canonical.
fn kustomization_entries(fields: &[&str]) -> BTreeSet<PathBuf> {
    let mut listed = BTreeSet::new();
    for k in yaml_files("deploy/kubernetes")
        .iter()
        .filter(|p| p.ends_with("kustomization.yaml"))
    {
        let doc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(k).expect("read")).expect("valid YAML");
        let dir = k.parent().expect("a directory");
        for field in fields {
            for entry in doc[*field].as_sequence().into_iter().flatten() {
                let e = match entry {
                    Value::Mapping(_) => scalar(&entry["path"]),
                    other => scalar(other),
                };
                let path = dir.join(&e);
                assert!(
                    path.exists(),
                    "{} lists {e}, which is not there",
                    k.display()
                );
                listed.insert(path.canonicalize().expect("canonical path"));
            }
        }
    }
    listed
}

#[test]
fn every_manifest_is_in_a_kustomization() {
    let listed = kustomization_entries(&["resources", "components", "patches"]);
    for file in yaml_files("deploy/kubernetes") {
        if file.ends_with("kustomization.yaml") {
            continue;
        }
        let canonical = file.canonicalize().expect("canonical path");
        assert!(
            listed.contains(&canonical),
            "{} is in no kustomization",
            file.display()
        );
    }
}

#[test]
fn kustomize_renders_the_config_and_the_overlay() {
    let Some(kubectl) = kubectl() else {
        return;
    };
    let toml = read("deploy/kubernetes/base/haproxy-rs.toml");
    for k in ["base", "overlays/example"] {
        let docs = documents(&kustomize(&kubectl, k));
        let config = docs
            .iter()
            .find(|d| {
                d["kind"].as_str() == Some("ConfigMap")
                    && d["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("haproxy-rs-"))
            })
            .expect("the generated ConfigMap");
        assert_eq!(
            config["data"]["haproxy-rs.toml"].as_str(),
            Some(toml.as_str())
        );
        let name = config["metadata"]["name"].as_str().expect("a name");
        let pod = &object(&docs, "Deployment", "haproxy-rs")["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][0]["configMap"]["name"].as_str(),
            Some(name),
            "{k}"
        );
        for d in &docs {
            if d["kind"].as_str() != Some("Namespace") {
                assert_eq!(
                    d["metadata"]["namespace"].as_str(),
                    Some("redis-ha"),
                    "{k}: {d:?}"
                );
            }
        }
        assert!(docs
            .iter()
            .any(|d| d["metadata"]["name"].as_str() == Some("redis-ha")
                && d["kind"].as_str() == Some("Service")));
    }
    let overlay = documents(&kustomize(&kubectl, "overlays/example"));
    let deployment = object(&overlay, "Deployment", "haproxy-rs");
    assert_eq!(int(&deployment["spec"]["replicas"]), 3);
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert!(anti["preferredDuringSchedulingIgnoredDuringExecution"].is_null());
    assert_eq!(
        &anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchLabels"],
        &pod_labels(deployment)
    );
    object(&overlay, "ServiceMonitor", "haproxy-rs");
}
