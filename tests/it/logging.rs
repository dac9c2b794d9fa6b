//! The binary's log (issue 13, item 7): plain text when stderr is a file, not a terminal, and
//! JSON lines with `--log-format json` (`HAPROXY_RS_LOG_FORMAT=json`), for log shippers.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::eventually;

/// What `haproxy-rs run` (static mode, a server nobody listens on) writes to stderr, a file, up
/// to its `listening` line; `setup` adds flags and variables.
async fn startup_log(setup: impl FnOnce(&mut Command)) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&path).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_haproxy-rs"));
    cmd.args(["--log", "info", "run", "--servers", "127.0.0.1:1"])
        .args(["--listen", "127.0.0.1:0", "--stats", "off"])
        .env_remove("NO_COLOR")
        .env_remove("HAPROXY_RS_LOG")
        .env_remove("HAPROXY_RS_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    setup(&mut cmd);
    let mut child = cmd.spawn().expect("run the haproxy-rs binary");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    eventually!(
        Duration::from_secs(10),
        read().lines().any(|l| l.contains("listening")) && read().ends_with('\n'),
        "haproxy-rs logs that it listens: {:?}",
        read()
    );
    child.kill().expect("stop haproxy-rs");
    child.wait().expect("reap haproxy-rs");
    read()
}

#[tokio::test]
async fn the_log_is_plain_text_when_stderr_is_not_a_terminal() {
    let log = startup_log(|_| {}).await;
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escape codes in a log file: {log:?}"
    );
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    for setup in [
        (|c: &mut Command| {
            c.args(["--log-format", "json"]);
        }) as fn(&mut Command),
        |c| {
            c.env("HAPROXY_RS_LOG_FORMAT", "json");
        },
    ] {
        let log = startup_log(setup).await;
        let events: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        assert!(events.iter().all(|e| e["level"].is_string()), "{events:?}");
        let listening = events
            .iter()
            .find(|e| e["fields"]["message"] == "listening")
            .unwrap_or_else(|| panic!("no `listening` event: {events:?}"));
        assert_eq!(listening["fields"]["listener"], "main", "{listening}");
        assert!(!log.contains('\x1b'), "{log:?}");
    }
}
