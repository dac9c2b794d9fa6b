//! A backend's health check read for what it tells: which role its servers must have, the
//! credentials it logs in with, and, in the redis-ha chart's shape, which master the sentinels
//! it asks must name.

use super::model::{starts, Proxy};
use super::parse::Line;
use super::{Ledger, NoteKind};

/// What a backend's check selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Role {
    /// `expect string role:master`: the master.
    Master,
    /// `expect string role:slave` (or `role:replica`): the replicas.
    Replica,
    /// `send SENTINEL get-master-addr-by-name NAME`: the servers are sentinels.
    Sentinel(String),
    /// A check that names no role (`option redis-check`, a PING, a bare connect), or none.
    Any,
}

/// Credentials a check sends (`AUTH [user] password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Auth<'a> {
    /// The `tcp-check send` line.
    pub line: &'a Line,
    /// The ACL user, if one is given.
    pub user: Option<String>,
    /// The password, `${NAME}` where HAProxy expanded an environment variable.
    pub password: String,
    /// The password is (or holds) an environment reference.
    pub env: bool,
}

/// A backend's check, read.
#[derive(Debug, Clone)]
pub(super) struct Check<'a> {
    /// What it selects.
    pub role: Role,
    /// What it logs in with.
    pub auth: Option<Auth<'a>>,
}

const BUILT_IN: &str = "haproxy-rs checks every server itself (INFO replication, every \
                        [backend] health_interval_ms)";

/// Reads `backend`'s check (its own `tcp-check` rules, else those of its defaults) and accounts
/// for its lines in `ledger`.
pub(super) fn read<'a>(backend: &Proxy<'a>, ledger: &mut Ledger) -> Check<'a> {
    let mut check = Check {
        role: Role::Any,
        auth: None,
    };
    for option in [&["option", "tcp-check"][..], &["option", "redis-check"]] {
        if let Some(line) = backend.setting(option) {
            ledger.not_needed(line, BUILT_IN);
        }
    }
    let mut rules = backend.own(&["tcp-check"]);
    if rules.is_empty() {
        if let Some(d) = backend.defaults {
            rules = d
                .body
                .iter()
                .filter(|l| starts(l, &["tcp-check"]))
                .collect();
        }
    }
    for line in rules {
        let (kind, reason) = rule(line, &mut check);
        match reason {
            None => ledger.used(line),
            Some(reason) => ledger.note(line, kind, reason),
        }
    }
    check
}

/// One `tcp-check` rule: `None` when it is part of what haproxy-rs does, else the note.
fn rule<'a>(line: &'a Line, check: &mut Check<'a>) -> (NoteKind, Option<String>) {
    let not_needed = |r: &str| (NoteKind::NotNeeded, Some(r.to_string()));
    match line.word(1).to_ascii_lowercase().as_str() {
        "connect" if line.words.len() == 2 => not_needed(BUILT_IN),
        "comment" => not_needed(BUILT_IN),
        "send" | "send-lf" => send(line, check),
        "expect" => expect(line, check),
        _ => (
            NoteKind::Untranslated,
            Some("a check step haproxy-rs has no counterpart for".into()),
        ),
    }
}

fn send<'a>(line: &'a Line, check: &mut Check<'a>) -> (NoteKind, Option<String>) {
    let Some(data) = line.words.get(2) else {
        return (NoteKind::Untranslated, Some("nothing to send".into()));
    };
    let args: Vec<&str> = data.text.split_ascii_whitespace().collect();
    let command = args
        .first()
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_default();
    match (command.as_str(), args.as_slice()) {
        ("AUTH", [_, password]) => {
            check.auth = Some(Auth {
                line,
                user: None,
                password: (*password).to_string(),
                env: data.env,
            });
            (NoteKind::NotNeeded, None)
        }
        ("AUTH", [_, user, password]) => {
            check.auth = Some(Auth {
                line,
                user: Some((*user).to_string()),
                password: (*password).to_string(),
                env: data.env,
            });
            (NoteKind::NotNeeded, None)
        }
        ("SENTINEL", [_, sub, name]) if sub.eq_ignore_ascii_case("get-master-addr-by-name") => {
            check.role = Role::Sentinel((*name).to_string());
            (NoteKind::NotNeeded, None)
        }
        ("PING" | "QUIT" | "ROLE", [_]) => (NoteKind::NotNeeded, Some(BUILT_IN.into())),
        ("INFO", [_, section]) if section.eq_ignore_ascii_case("replication") => {
            (NoteKind::NotNeeded, Some(BUILT_IN.into()))
        }
        _ => (
            NoteKind::Untranslated,
            Some("a check command haproxy-rs does not send".into()),
        ),
    }
}

fn expect<'a>(line: &'a Line, check: &mut Check<'a>) -> (NoteKind, Option<String>) {
    // `expect [options] [!] <match> <pattern>`: the pattern is the last word.
    let n = line.words.len();
    let pattern = line.word(n.saturating_sub(1));
    let method = line.word(n.saturating_sub(2)).to_ascii_lowercase();
    let negated = n >= 3 && line.word(n - 3) == "!";
    let known = matches!(method.as_str(), "string" | "rstring");
    if !known || negated {
        return (
            NoteKind::Untranslated,
            Some("a check expectation haproxy-rs has no counterpart for".into()),
        );
    }
    let p = pattern.to_ascii_lowercase();
    if p.contains("role:master") {
        check.role = Role::Master;
        return (NoteKind::NotNeeded, None);
    }
    if p.contains("role:slave") || p.contains("role:replica") {
        check.role = Role::Replica;
        return (NoteKind::NotNeeded, None);
    }
    if p.contains("master_link_status:up") {
        return (
            NoteKind::NotNeeded,
            Some(
                "haproxy-rs reads only from replicas whose link is up or was, at most \
                 [routing] max_replica_lag_secs ago"
                    .into(),
            ),
        );
    }
    if p.contains("connected_slaves") {
        return (
            NoteKind::Untranslated,
            Some(
                "no check on the number of replicas: [failover] min_replicas_to_ack refuses \
                 writes the replicas do not have"
                    .into(),
            ),
        );
    }
    if matches!(p.as_str(), "+pong" | "+ok") || matches!(check.role, Role::Sentinel(_)) {
        // The answers to PING, AUTH and QUIT; in a sentinel check, the master's address.
        return (NoteKind::NotNeeded, Some(BUILT_IN.into()));
    }
    (
        NoteKind::Untranslated,
        Some("a check expectation haproxy-rs has no counterpart for".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::model::proxies;
    use crate::import::parse::parse;

    /// The user, password and whether it is an environment reference.
    type Creds = Option<(Option<String>, String, bool)>;

    fn check_of(text: &str) -> (Role, Creds, Ledger) {
        let sections = parse(text).unwrap();
        let all = proxies(&sections);
        let mut ledger = Ledger::default();
        let c = read(&all[0], &mut ledger);
        let auth = c.auth.map(|a| (a.user, a.password, a.env));
        (c.role, auth, ledger)
    }

    #[test]
    fn the_role_check_and_auth_are_read() {
        let (role, auth, ledger) = check_of(
            "backend b\n option tcp-check\n tcp-check connect\n tcp-check send AUTH\\ s3cret\\r\\n\n tcp-check expect string +OK\n tcp-check send PING\\r\\n\n tcp-check expect string +PONG\n tcp-check send info\\ replication\\r\\n\n tcp-check expect string role:master\n tcp-check send QUIT\\r\\n\n tcp-check expect string +OK\n",
        );
        assert_eq!(role, Role::Master);
        assert_eq!(auth, Some((None, "s3cret".into(), false)));
        assert!(ledger.notes.iter().all(|n| n.kind == NoteKind::NotNeeded));
        assert_eq!(ledger.claimed.len(), 10, "every check line accounted for");
    }

    #[test]
    fn a_replica_check_an_acl_user_and_an_env_password() {
        let (role, auth, _) = check_of(
            "backend b\n tcp-check send \"AUTH app ${REDIS_PASS}\"\\r\\n\n tcp-check expect string role:slave\n",
        );
        assert_eq!(role, Role::Replica);
        assert_eq!(
            auth,
            Some((Some("app".into()), "${REDIS_PASS}".into(), true))
        );
    }

    #[test]
    fn a_sentinel_check_names_the_master() {
        let (role, _, _) = check_of(
            "backend s\n tcp-check send SENTINEL\\ get-master-addr-by-name\\ mymaster\\r\\n\n tcp-check expect string 10.0.0.1\n",
        );
        assert_eq!(role, Role::Sentinel("mymaster".into()));
    }

    #[test]
    fn unknown_steps_are_untranslated_and_defaults_rules_count() {
        let (role, _, ledger) = check_of(
            "defaults\n tcp-check expect string role:master\nbackend b\n tcp-check expect rstring connected_slaves:[1-9]\n tcp-check send-binary 2a310d0a\n tcp-check expect ! string role:slave\n",
        );
        assert_eq!(role, Role::Any, "own rules replace the defaults'");
        let lost: Vec<usize> = ledger
            .notes
            .iter()
            .filter(|n| n.kind == NoteKind::Untranslated)
            .map(|n| n.line)
            .collect();
        assert_eq!(lost, [4, 5, 6]);
        let (role, _, _) = check_of(
            "defaults\n tcp-check expect string role:master\nbackend b\n server r 1.1.1.1:6379\n",
        );
        // `proxies` lists only proxies: the first is the backend, inheriting the rule.
        assert_eq!(role, Role::Master);
    }
}
