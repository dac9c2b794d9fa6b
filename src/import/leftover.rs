//! Why a line nothing translated has no key: not needed (haproxy-rs does it its own way, or it
//! does not apply), or lost (untranslated, with what to do instead where there is something).

use super::parse::{Line, Section, SectionKind};
use super::NoteKind;

const LOGS: &str = "haproxy-rs logs to stderr (`log`, `--log-format json`)";
const KEEPALIVE: &str = "haproxy-rs sets TCP keepalive and TCP_NODELAY on both legs";
const PROCESS: &str = "process setup: run haproxy-rs under systemd or Kubernetes (deploy/)";
const RECONNECT: &str =
    "haproxy-rs reconnects with backoff ([backend] max_backoff_ms) and never replays a write";

/// The note of a line inside a `.if` block.
pub(super) fn in_condition(open: usize) -> String {
    format!(
        "inside the conditional block of line {open}, which is not evaluated: read as if it held"
    )
}

/// The note of a line no translation claimed.
pub(super) fn classify(section: &Section, line: &Line) -> (NoteKind, String) {
    use NoteKind::{NotNeeded, Untranslated};
    if let Some(open) = line.in_condition {
        return (Untranslated, in_condition(open));
    }
    if line.word(0).starts_with('.') {
        return (
            Untranslated,
            "a conditional block or message directive: every branch was read; check them".into(),
        );
    }
    let w: Vec<String> = line
        .words
        .iter()
        .take(3)
        .map(|w| w.text.to_ascii_lowercase())
        .collect();
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    if line.number == section.header.number {
        return header(section);
    }
    let (kind, reason) = match (&section.kind, w.as_slice()) {
        (SectionKind::Global, [k, ..])
            if matches!(
                *k,
                "daemon"
                    | "user"
                    | "group"
                    | "uid"
                    | "gid"
                    | "chroot"
                    | "pidfile"
                    | "nbproc"
                    | "master-worker"
                    | "ulimit-n"
                    | "node"
                    | "description"
                    | "localpeer"
                    | "setenv"
                    | "presetenv"
                    | "resetenv"
                    | "unsetenv"
                    | "ca-base"
                    | "crt-base"
                    | "expose-experimental-directives"
            ) =>
        {
            (NotNeeded, PROCESS)
        }
        (SectionKind::Global, ["stats", "socket", ..]) => (
            Untranslated,
            "the runtime API has no counterpart: the stats page serves /stats.json, and \
             POST /switchover and POST /reload with admin_token",
        ),
        (SectionKind::Global, ["stats", "timeout", ..]) => (NotNeeded, "there is no stats socket"),
        (SectionKind::Global, [k, ..])
            if k.starts_with("tune.")
                || k.starts_with("ssl-default-")
                || k.starts_with("ssl-")
                || *k == "spread-checks" =>
        {
            (NotNeeded, "a tuning knob of HAProxy's")
        }
        (_, ["log" | "log-send-hostname" | "log-tag" | "log-format" | "error-log-format", ..])
        | (
            _,
            ["option", "tcplog" | "httplog" | "dontlognull" | "log-health-checks" | "logasap"
            | "dontlog-normal", ..],
        ) => (NotNeeded, LOGS),
        (_, ["option", "clitcpka" | "srvtcpka" | "tcpka", ..]) => (NotNeeded, KEEPALIVE),
        (_, ["retries" | "fullconn", ..]) | (_, ["option", "redispatch", ..]) => {
            (NotNeeded, RECONNECT)
        }
        (_, ["timeout", "queue", ..]) => (
            NotNeeded,
            "haproxy-rs queues no connection: a client past max_clients gets -ERR max number \
             of clients reached",
        ),
        (_, ["timeout", "check", ..]) => (
            Untranslated,
            "a health check's deadline is [backend] connect_timeout_ms (timeout connect)",
        ),
        (_, ["timeout", ..]) => (Untranslated, "haproxy-rs has no such timeout"),
        (_, ["mode", "tcp"]) => (NotNeeded, "haproxy-rs speaks RESP on every client endpoint"),
        (_, ["mode", ..]) => (
            Untranslated,
            "only RESP (mode tcp) endpoints are translated",
        ),
        (_, ["balance" | "hash-type", ..]) => (
            NotNeeded,
            "haproxy-rs spreads reads over the healthy replicas itself, per command",
        ),
        (_, ["description" | "id" | "enabled", ..]) | (_, ["option", "http-use-htx", ..]) => {
            (NotNeeded, "no counterpart needed")
        }
        (_, ["default-server", ..]) => (
            NotNeeded,
            "server defaults of a backend haproxy-rs does not use",
        ),
        (_, ["acl", ..]) => (Untranslated, "ACLs have no counterpart"),
        (_, ["use_backend" | "use-server", ..]) => (
            Untranslated,
            "a conditional choice of servers: haproxy-rs picks the master and replicas itself",
        ),
        (_, ["tcp-request" | "tcp-response" | "http-request" | "http-response", ..]) => {
            (Untranslated, "request rules have no counterpart")
        }
        (SectionKind::Other(kind), _) if kind == "resolvers" => (
            NotNeeded,
            "haproxy-rs resolves server names at each connect (the system resolver)",
        ),
        _ => (Untranslated, "no counterpart in haproxy-rs"),
    };
    (kind, reason.to_string())
}

/// The note of a section header nothing translated.
fn header(section: &Section) -> (NoteKind, String) {
    let reason = match &section.kind {
        SectionKind::Global | SectionKind::Defaults => {
            return (NoteKind::NotNeeded, "a section header".into())
        }
        SectionKind::Other(kind) if kind == "resolvers" => {
            return (
                NoteKind::NotNeeded,
                "haproxy-rs resolves server names at each connect (the system resolver)".into(),
            )
        }
        SectionKind::Other(kind) => format!("`{kind}` sections have no counterpart"),
        _ => "a proxy haproxy-rs does not take over (not the Redis write, read or stats endpoint)"
            .into(),
    };
    let span = if section.last_line() > section.header.number {
        format!(" (lines {}-{})", section.header.number, section.last_line())
    } else {
        String::new()
    };
    (NoteKind::Untranslated, format!("{reason}{span}"))
}
