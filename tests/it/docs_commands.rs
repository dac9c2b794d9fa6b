//! The tables of docs/commands.md ("Commands by mode") against the code: every command a row calls refused gets
//! the error that row gives, from the router and the command policy and through a running proxy in
//! static and in cluster mode; and nothing the router refuses goes unmentioned.

use haproxy_rs::client::policy::{CommandPolicy, TOPOLOGY_CHANGES};
use haproxy_rs::config::CommandsConfig;
use haproxy_rs::resp::{encode_command, CommandTable, Request};
use haproxy_rs::router::{classify, Class};

use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::redis::read_replies;
use crate::harness::{Cluster, RedisServer};

const COMMANDS: &str = include_str!("../../docs/commands.md");

/// The router's refusal of commands that would change a shared backend connection.
const UNSUPPORTED: &str = "-ERR haproxy-rs does not support";
/// The command policy's reason for refusing topology changes.
const TOPOLOGY: &str = "it would change the topology behind the proxy";

/// One table row that says a command group is refused.
#[derive(Debug)]
struct Refused {
    /// Upper-case command names, `"CLIENT KILL"` for a subcommand.
    commands: Vec<String>,
    /// Refused in Sentinel and static mode.
    sentinel: bool,
    /// Refused in cluster mode.
    cluster: bool,
    /// The error the row gives; `...` stands for the command.
    error: String,
}

impl Refused {
    /// The error line `command` gets, per the row.
    fn expected(&self, command: &str) -> String {
        self.error.replace("...", command)
    }
}

/// The "Commands by mode" page, every table of it (one per `## ` heading).
fn section() -> &'static str {
    assert!(
        COMMANDS.starts_with("# Commands by mode\n"),
        "docs/commands.md is the \"Commands by mode\" page"
    );
    COMMANDS
}

/// A table row's cells (`\|` does not split).
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = row.trim().trim_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().unwrap().push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.iter().map(|c| c.trim().to_string()).collect()
}

/// The code spans of `cell`, each with the text between it and the one before.
fn spans(cell: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = cell;
    let mut gap_start = 0;
    let mut offset = 0;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        let gap = &cell[gap_start..offset + open];
        out.push((gap, &rest[open + 1..open + 1 + len]));
        offset += open + len + 2;
        gap_start = offset;
        rest = &cell[offset..];
    }
    out
}

/// A command name as the tables write it: one or two upper-case words.
fn is_command(span: &str) -> bool {
    let words: Vec<&str> = span.split(' ').collect();
    words.len() <= 2
        && words.iter().all(|w| {
            w.starts_with(|c: char| c.is_ascii_uppercase())
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_')
        })
}

/// The commands a first cell names: `` `CLIENT KILL`/`PAUSE` `` is `CLIENT KILL` and
/// `CLIENT PAUSE`; `` `MULTI`/`EXEC` `` two commands.
fn commands(cell: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut parent: Option<String> = None;
    for (gap, span) in spans(cell) {
        if !is_command(span) {
            parent = None;
            continue;
        }
        let name = match (&parent, gap == "/" && !span.contains(' ')) {
            (Some(p), true) => format!("{p} {span}"),
            _ => span.to_string(),
        };
        parent = span
            .split_once(' ')
            .map(|(p, _)| p.to_string())
            .or_else(|| parent.clone().filter(|_| gap == "/"));
        out.push(name);
    }
    out
}

/// Every row of the section that refuses something in either mode.
fn refused_rows() -> Vec<Refused> {
    let mut out = Vec::new();
    for row in section().lines().filter(|l| l.starts_with('|')) {
        let c = cells(row);
        let [first, sentinel, cluster, ..] = c.as_slice() else {
            continue;
        };
        let (sentinel, cluster) = (
            sentinel.starts_with("refused"),
            cluster.starts_with("refused"),
        );
        if !(sentinel || cluster) {
            continue;
        }
        let error = c
            .iter()
            .flat_map(|cell| spans(cell))
            .map(|(_, s)| s)
            .find(|s| s.starts_with('-'))
            .unwrap_or_else(|| panic!("refused row without an error: {row}"));
        let commands = commands(first);
        assert!(!commands.is_empty(), "refused row names no command: {row}");
        out.push(Refused {
            commands,
            sentinel,
            cluster,
            error: error.to_string(),
        });
    }
    out
}

fn request(command: &str) -> Request {
    Request::from_args(&command.split(' ').collect::<Vec<_>>())
}

#[test]
fn commands_doc_tables_parse_into_the_expected_refusals() {
    let rows = refused_rows();
    let named = |c: &str| rows.iter().any(|r| r.commands.iter().any(|n| n == c));
    for c in ["PSYNC", "CLUSTER SETSLOT"] {
        assert!(named(c), "{c} is in a refused row: {rows:#?}");
    }
    assert!(!named("MONITOR"), "MONITOR is served");
    for c in [
        "CLIENT KILL",
        "CLIENT UNBLOCK",
        "CLIENT REPLY",
        "CLIENT PAUSE",
        "CLIENT UNPAUSE",
        "CLIENT CACHING",
        "CLIENT GETREDIR",
        "CLIENT TRACKINGINFO",
    ] {
        assert!(!named(c), "{c} is served (the proxy's clients)");
    }
    assert!(!named("CLIENT TRACKING"), "CLIENT TRACKING is served");
    assert_eq!(
        commands("`CLIENT KILL`/`PAUSE`, `MONITOR`/`SYNC`"),
        ["CLIENT KILL", "CLIENT PAUSE", "MONITOR", "SYNC"]
    );
}

#[test]
fn refused_rows_match_the_router_and_the_command_policy() {
    let table = CommandTable::builtin();
    let policy = CommandPolicy::from_config(&CommandsConfig::default(), "default").unwrap();
    for row in refused_rows() {
        for command in &row.commands {
            let want = format!("{}\r\n", row.expected(command));
            let req = request(command);
            if row.error.starts_with(UNSUPPORTED) {
                assert_eq!(
                    classify(&table, &req),
                    Class::Reject(want.into()),
                    "{command}"
                );
            } else if row.error.contains(TOPOLOGY) {
                let got = policy
                    .check(&req)
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                assert_eq!(got.as_deref(), Some(want.as_str()), "{command}");
            }
        }
    }
}

#[test]
fn every_command_the_proxy_refuses_is_in_the_commands_doc() {
    let rows = refused_rows();
    let in_refused_row = |name: &str| rows.iter().any(|r| r.commands.iter().any(|c| c == name));
    for name in TOPOLOGY_CHANGES {
        let name = name.replace('|', " ").to_uppercase();
        assert!(
            in_refused_row(&name),
            "{name} is refused by default: not in a refused row"
        );
    }
    // Refused by the router: in a refused row.
    let table = CommandTable::builtin();
    for info in table.iter() {
        let name = info.name.replace('|', " ").to_uppercase();
        if let Class::Reject(e) = classify(&table, &request(&name)) {
            if e.starts_with(UNSUPPORTED.as_bytes()) {
                assert!(
                    in_refused_row(&name),
                    "{name} is refused by the router but not in a refused row of docs/commands.md"
                );
            }
        }
    }
}

/// Sends `command` on a new connection; the reply's first line.
async fn ask(proxy: &TestProxy, command: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let args: Vec<&str> = command.split(' ').collect();
    tokio::io::AsyncWriteExt::write_all(&mut s, &encode_command(&args))
        .await
        .unwrap();
    let reply = read_replies(&mut s, 1).await;
    reply.first().cloned().unwrap_or_default()
}

async fn check_through(proxy: &TestProxy, cluster: bool) {
    let mut checked = 0;
    for row in refused_rows() {
        if (cluster && !row.cluster) || (!cluster && !row.sentinel) {
            continue;
        }
        for command in &row.commands {
            assert_eq!(
                ask(proxy, command).await,
                row.expected(command),
                "{command}"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} refusals checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_doc_refusals_hold_through_a_static_mode_proxy() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    check_through(&proxy, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_doc_refusals_hold_through_a_cluster_mode_proxy() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    check_through(&proxy, true).await;
}
