//! The options of `bind`, `server` and `default-server` lines: what each becomes, and the notes of
//! those without a key.

use std::collections::BTreeMap;

use super::parse::{Line, Word};
use super::{Ledger, NoteKind};

/// `bind` options that take a value.
const BIND_VALUED: &[&str] = &[
    "name",
    "crt",
    "ca-file",
    "verify",
    "crl-file",
    "alpn",
    "ciphers",
    "ciphersuites",
    "curves",
    "ecdhe",
    "ssl-min-ver",
    "ssl-max-ver",
    "maxconn",
    "backlog",
    "interface",
    "mss",
    "nice",
    "process",
    "thread",
    "id",
    "level",
    "mode",
    "uid",
    "gid",
    "user",
    "group",
    "tcp-ut",
    "namespace",
    "npn",
    "crt-list",
    "crt-ignore-err",
    "ca-ignore-err",
    "ca-verify-file",
    "ca-sign-file",
    "ca-sign-pass",
    "sigalgs",
    "client-sigalgs",
    "severity-output",
    "proto",
    "accept-netscaler-cip",
    "expose-fd",
    "label",
    "shards",
    "quic-cc-algo",
    "guid-prefix",
];

/// `server` and `default-server` options that take a value.
const SERVER_VALUED: &[&str] = &[
    "inter",
    "fastinter",
    "downinter",
    "fall",
    "rise",
    "weight",
    "maxconn",
    "maxqueue",
    "minconn",
    "port",
    "addr",
    "resolvers",
    "resolve-prefer",
    "resolve-opts",
    "resolve-net",
    "init-addr",
    "ca-file",
    "crt",
    "sni",
    "verify",
    "verifyhost",
    "ciphers",
    "ciphersuites",
    "ssl-min-ver",
    "ssl-max-ver",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "slowstart",
    "id",
    "cookie",
    "check-sni",
    "check-alpn",
    "alpn",
    "source",
    "proto",
    "agent-port",
    "agent-inter",
    "agent-addr",
    "agent-send",
    "pool-max-conn",
    "pool-purge-delay",
    "pool-low-conn",
    "max-reuse",
    "error-limit",
    "observe",
    "redir",
    "namespace",
    "socks4",
    "crl-file",
    "tcp-ut",
    "track",
    "log-proto",
    "npn",
    "ws",
    "usesrc",
    "curves",
    "sigalgs",
    "client-sigalgs",
    "check-proto",
    "set-proxy-v2-tlv-fmt",
    "proxy-v2-options",
    "shard",
    "hash-key",
    "guid",
    "log-bufsize",
];

/// Options as `(name, value)`, each value where the option takes one.
pub(super) fn pairs(words: &[Word], valued: &[&str]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let name = w.text.to_ascii_lowercase();
        let value = if valued.contains(&name.as_str()) {
            it.next().map(|v| v.text.clone())
        } else {
            None
        };
        out.push((name, value));
    }
    out
}

/// The TLS a `bind` line asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BindTls {
    /// `crt`: a PEM with the certificate chain and the key.
    pub crt: Option<String>,
    /// `ca-file`.
    pub ca_file: Option<String>,
    /// `verify required`.
    pub verify_required: bool,
}

/// Reads a `bind` line's options (after the address): its TLS, notes for the rest.
pub(super) fn bind(line: &Line, ledger: &mut Ledger) -> Option<BindTls> {
    let mut tls: Option<BindTls> = None;
    let mut lost: Vec<String> = Vec::new();
    let opts = pairs(line.rest(2), BIND_VALUED);
    let ssl = opts.iter().any(|(n, _)| n == "ssl");
    for (name, value) in &opts {
        let shown = show(name, value.as_deref());
        match (name.as_str(), value) {
            ("ssl", _) | ("name", _) => {}
            ("crt", Some(v)) if ssl => {
                tls.get_or_insert_with(BindTls::default).crt = Some(v.clone())
            }
            ("ca-file", Some(v)) if ssl => {
                tls.get_or_insert_with(BindTls::default).ca_file = Some(v.clone());
            }
            ("verify", Some(v)) if ssl && (v == "required" || v == "optional" || v == "none") => {
                tls.get_or_insert_with(BindTls::default).verify_required = v == "required";
            }
            _ => lost.push(shown),
        }
    }
    if ssl && tls.as_ref().is_none_or(|t| t.crt.is_none()) {
        ledger.untranslated(
            line,
            "`ssl` without a `crt` file: give [tls] cert_file and key_file",
        );
        tls = None;
    }
    if !lost.is_empty() {
        ledger.untranslated(
            line,
            format!("{}: bind options without a counterpart", lost.join(" ")),
        );
    }
    tls
}

/// What `server` options give the translation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ServerOpts {
    /// `inter`, in ms.
    pub inter_ms: Option<u64>,
    /// `ssl` with `ca-file`: the CA.
    pub tls_ca: Option<String>,
    /// `crt`: the client certificate (and key) for TLS to the servers.
    pub tls_crt: Option<String>,
}

/// Reads the options of a `server` (from the third word) or `default-server` (from the second)
/// line into `into` (a server's own options override its defaults'), noting the rest.
pub(super) fn server(line: &Line, from: usize, into: &mut ServerOpts, ledger: &mut Ledger) {
    let opts = pairs(line.rest(from), SERVER_VALUED);
    let ssl = opts.iter().any(|(n, _)| n == "ssl");
    let mut notes: BTreeMap<(bool, &'static str), Vec<String>> = BTreeMap::new();
    for (name, value) in &opts {
        let reason = match (name.as_str(), value.as_deref()) {
            ("check", _) => None,
            ("inter", Some(v)) => match super::model::millis(v) {
                Some(ms) => {
                    into.inter_ms = Some(ms);
                    None
                }
                None => Some((true, "not a time")),
            },
            ("fall" | "rise" | "fastinter" | "downinter", _) => Some((
                false,
                "haproxy-rs acts on each check: a server is down at its first failed check, \
                 up at its first good one",
            )),
            ("maxconn" | "maxqueue" | "minconn" | "pool-max-conn" | "pool-purge-delay"
            | "pool-low-conn" | "max-reuse", _) => Some((
                false,
                "haproxy-rs multiplexes the clients over [backend] connections per server",
            )),
            ("resolvers" | "resolve-prefer" | "resolve-opts" | "resolve-net" | "init-addr", _) => {
                Some((false, "haproxy-rs resolves server names at each connect"))
            }
            ("on-marked-down" | "on-marked-up", _) => Some((
                false,
                "haproxy-rs moves requests to the new master itself; clients keep their connections",
            )),
            ("backup", _) => Some((
                false,
                "haproxy-rs writes to whichever server reports role:master, backup or not",
            )),
            ("id" | "cookie" | "check-ssl" | "no-check-ssl", _) => {
                Some((false, "no counterpart needed"))
            }
            ("ssl", _) => None,
            ("ca-file", Some(v)) if ssl => {
                into.tls_ca = Some(v.to_string());
                None
            }
            ("crt", Some(v)) if ssl => {
                into.tls_crt = Some(v.to_string());
                None
            }
            ("verify", Some("required")) if ssl => None,
            _ => Some((true, "server options without a counterpart")),
        };
        if let Some(key) = reason {
            notes
                .entry(key)
                .or_default()
                .push(show(name, value.as_deref()));
        }
    }
    if ssl && into.tls_ca.is_none() {
        notes
            .entry((
                true,
                "TLS to the servers needs their CA: set [backend] tls = true and tls_ca_file",
            ))
            .or_default()
            .push("ssl".into());
    }
    for ((lost, reason), names) in notes {
        let kind = if lost {
            NoteKind::Untranslated
        } else {
            NoteKind::NotNeeded
        };
        ledger.note(line, kind, format!("{}: {reason}", names.join(" ")));
    }
    ledger.used(line);
}

fn show(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("`{name} {v}`"),
        None => format!("`{name}`"),
    }
}
