//! `scripts/chaos.sh` itself (issue 15 part 4), so that CI covers it: one short scenario through
//! both proxies (the debug build), its table, and nothing left behind.

use std::process::Command;

/// The script's namespaces for this test (apart from a manual run's `chaos-*`).
const NS_PREFIX: &str = "chaosit";

fn namespaces_left() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{NS_PREFIX}-")))
        .map(str::to_owned)
        .collect()
}

/// One sentinel cut off (partition-c): the script sets its net and topology up, runs the load
/// through haproxy-rs and HAProxy, prints a row for each with nothing lost, and removes its
/// namespaces and processes.
#[test]
fn chaos_script_runs_a_scenario_through_both_proxies_and_cleans_up() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = tempfile::tempdir().expect("a temp dir");
    let run = Command::new("bash")
        .arg(format!("{root}/scripts/chaos.sh"))
        .arg("partition-c")
        .env("BIN", env!("CARGO_BIN_EXE_haproxy-rs"))
        .env("OUT", out.path())
        .env("NS_PREFIX", NS_PREFIX)
        .env("NET", "10.78.0")
        .env("CLIENTS", "2")
        .env("MAX_SECONDS", "150")
        .output()
        .expect("run scripts/chaos.sh (needs haproxy: scripts/test.sh installs it)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(namespaces_left().is_empty(), "{:?}", namespaces_left());
    for target in ["haproxy-rs", "haproxy"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| partition-c | {target} |")))
            .unwrap_or_else(|| panic!("no row for {target}: {stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | scenario | endpoint | errors | by kind | window | lost | stale | longest | stalled | req/s |
        assert_eq!(cells[3], "0", "errors: {row}");
        let (lost, acked) = cells[6].split_once(" of ").expect("lost of acked");
        assert_eq!(lost, "0", "{row}");
        assert!(acked.parse::<u64>().is_ok_and(|n| n > 100), "{row}");
    }
}
