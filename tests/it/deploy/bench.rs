//! The bench Jobs load both ports from several pods, and the merge step merges every report.

use std::collections::BTreeSet;

use haproxy_rs::cli::Command as Sub;
use serde_yaml::Value;

use super::*;

#[test]
fn bench_jobs_load_both_ports_from_several_pods_and_merge_every_report() {
    let docs = base();
    let cfg = deployed_config(&docs);
    // The reports of each Job, by kind.
    let mut reports: Vec<BTreeSet<String>> = Vec::new();
    for (kind, listen, workload) in [
        ("write", cfg.listen.clone(), "set"),
        ("read", cfg.read_listen.clone().expect("read_listen"), "get"),
    ] {
        let jobs = documents(&read(&format!("deploy/kubernetes/bench/bench-{kind}.yaml")));
        let spec = &object(&jobs, "Job", &format!("bench-{kind}"))["spec"];
        let pods = int(&spec["completions"]);
        assert!(pods >= 2, "several load generators");
        assert_eq!(int(&spec["parallelism"]), pods, "all at once");
        assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
        let container = &spec["template"]["spec"]["containers"][0];
        let args = strings(&container["args"]);
        assert!(
            matches!(parse_cli(&args).command, Sub::Bench(_)),
            "{args:?}"
        );
        assert_eq!(
            flag(&args, "--target"),
            format!("redis-ha:{}", port_of(&listen))
        );
        assert_eq!(flag(&args, "--workload"), workload);
        assert_eq!(
            flag(&args, "--json"),
            format!("/results/{kind}-$(INDEX).json")
        );
        let index = container["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"].as_str() == Some("INDEX"))
            .expect("INDEX");
        assert_eq!(
            index["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
        );
        assert_eq!(secret_key(container, &env_flags()[0].0), "redis-password");
        assert_results_volume(&spec["template"]["spec"], container);
        reports.push(
            (0..pods)
                .map(|i| format!("/results/{kind}-{i}.json"))
                .collect(),
        );
    }

    let merge = documents(&read("deploy/kubernetes/bench/merge/bench-merge.yaml"));
    let pod = &object(&merge, "Job", "bench-merge")["spec"]["template"]["spec"];
    let mut merged = BTreeSet::new();
    for container in pod["containers"].as_sequence().expect("containers") {
        let args = strings(&container["args"]);
        let Sub::Bench(bench) = parse_cli(&args).command else {
            panic!("{args:?} is not bench merge")
        };
        let Some(haproxy_rs::bench::BenchAction::Merge(m)) = bench.action else {
            panic!("{args:?} is not bench merge")
        };
        let inputs: BTreeSet<String> = m.files.iter().map(|f| f.display().to_string()).collect();
        merged.insert(inputs);
        assert_results_volume(pod, container);
    }
    // The writers' reports, the readers', and all of them: each one whole.
    let all: BTreeSet<String> = reports.iter().flatten().cloned().collect();
    let want: BTreeSet<BTreeSet<String>> = reports.into_iter().chain([all]).collect();
    assert_eq!(merged, want, "every report is merged");
}

/// The container writes or reads the reports on the claim `bench-results` at /results.
fn assert_results_volume(pod: &Value, container: &Value) {
    assert_eq!(
        container["volumeMounts"][0]["mountPath"].as_str(),
        Some("/results")
    );
    let name = &container["volumeMounts"][0]["name"];
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| &v["name"] == name)
        .expect("the mounted volume");
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"].as_str(),
        Some("bench-results")
    );
}
