//! The command policy (`[commands]`): what the proxy refuses to serve, to every client.
//!
//! By default only the commands that would change the topology behind the proxy's back are
//! refused: a `REPLICAOF` or `CLUSTER FAILOVER` sent through a proxy that follows the topology
//! would move the master under every other client, unannounced. So are the commands that would
//! change how the proxy itself logs in to the servers (`CONFIG SET requirepass`, `ACL SETUSER`
//! of the proxy's own user with a password rule, `ACL DELUSER` of it): every client's next
//! connection would fail, and the client that asked could not even tell.

use std::collections::HashMap;

use bytes::Bytes;

use super::acl_rules::valid_command_name;
use crate::config::CommandsConfig;
use crate::resp::{error_reply, Request};

/// Commands (and `CLUSTER` subcommands) that change which server is master or which node owns
/// which slots.
pub const TOPOLOGY_CHANGES: &[&str] = &[
    "replicaof",
    "slaveof",
    "failover",
    "shutdown",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|bumpepoch",
    "cluster|delslots",
    "cluster|delslotsrange",
    "cluster|failover",
    "cluster|flushslots",
    "cluster|forget",
    "cluster|meet",
    "cluster|replicate",
    "cluster|reset",
    "cluster|set-config-epoch",
    "cluster|setslot",
];

/// Commands every client may send whatever the policy: without them it could not log in or out.
const ALWAYS_ALLOWED: &[&str] = &["auth", "hello", "quit"];

/// Longest command name the policy compares (longer ones cannot be listed).
const MAX_NAME: usize = 32;

/// `ACL SETUSER` rules that change which passwords log a user in, or whether it may log in.
const LOGIN_RULES: &[&[u8]] = &[b"off", b"nopass", b"resetpass", b"reset"];

/// `ACL SETUSER` rule prefixes that add or remove a password (`>pw`, `<pw`, `#digest`, `!digest`).
const PASSWORD_RULE_PREFIXES: &[u8] = b"><#!";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Topology,
    Deny,
}

/// One listed name: a whole command, or one subcommand of it.
#[derive(Debug, Clone)]
struct Entry {
    sub: Option<Box<[u8]>>,
    why: Why,
}

/// Listed names by lower-case command name; each with its subcommand, if only one is listed.
type Names<T> = HashMap<Box<[u8]>, Vec<T>>;

/// The compiled `[commands]` table.
#[derive(Debug, Clone, Default)]
pub struct CommandPolicy {
    /// Refused names, by lower-case command name.
    deny: Names<Entry>,
    /// When `Some`, only these are served, by lower-case command name.
    allow: Option<Names<Option<Box<[u8]>>>>,
    /// First letters of denied names (a bit set): most commands skip the hash lookup.
    first: [u64; 4],
    /// Lengths of denied names (a bit set; 63 stands for longer ones).
    lengths: u64,
    /// The user the proxy logs in to the servers as, when its login is protected
    /// (`commands.refuse_proxy_lockout`).
    proxy_user: Option<Box<[u8]>>,
}

fn split(name: &str) -> (Box<[u8]>, Option<Box<[u8]>>) {
    let lower = name.to_ascii_lowercase();
    match lower.split_once('|') {
        Some((p, s)) => (p.as_bytes().into(), Some(s.as_bytes().into())),
        None => (lower.as_bytes().into(), None),
    }
}

impl CommandPolicy {
    /// Compiles `[commands]`; `proxy_user` is the user the proxy logs in to the servers as
    /// (`[backend] username`, `default` without one).
    ///
    /// # Errors
    /// `(key, problem)` for a name that is not a command or that may not be refused.
    pub fn from_config(
        c: &CommandsConfig,
        proxy_user: &str,
    ) -> Result<CommandPolicy, (&'static str, String)> {
        let mut policy = CommandPolicy::default();
        if c.refuse_proxy_lockout {
            policy.proxy_user = Some(proxy_user.as_bytes().into());
        }
        let topology = TOPOLOGY_CHANGES
            .iter()
            .filter(|_| c.refuse_topology_changes);
        let listed = topology
            .map(|n| (*n, Why::Topology))
            .chain(c.deny.iter().map(|n| (n.as_str(), Why::Deny)));
        for (name, why) in listed {
            if !valid_command_name(name) {
                return Err(("commands.deny", format!("{name:?} is not a command name")));
            }
            if ALWAYS_ALLOWED.contains(&name.to_ascii_lowercase().as_str()) {
                return Err((
                    "commands.deny",
                    format!("{name:?} cannot be refused: clients need it to log in and out"),
                ));
            }
            let (parent, sub) = split(name);
            policy.lengths |= 1 << parent.len().min(63);
            if let Some(&b) = parent.first() {
                if let Some(word) = policy.first.get_mut(usize::from(b >> 6)) {
                    *word |= 1 << (b & 63);
                }
            }
            policy
                .deny
                .entry(parent)
                .or_default()
                .push(Entry { sub, why });
        }
        if !c.allow.is_empty() {
            let mut allow: Names<Option<Box<[u8]>>> = HashMap::new();
            for name in c
                .allow
                .iter()
                .map(String::as_str)
                .chain(ALWAYS_ALLOWED.iter().copied())
            {
                if !valid_command_name(name) {
                    return Err(("commands.allow", format!("{name:?} is not a command name")));
                }
                let (parent, sub) = split(name);
                allow.entry(parent).or_default().push(sub);
            }
            policy.allow = Some(allow);
        }
        Ok(policy)
    }

    /// The error for `req` when the policy refuses it.
    pub fn check(&self, req: &Request) -> Option<Bytes> {
        if let Some(e) = self.lockout(req) {
            return Some(e);
        }
        let first = req.name().first().map(u8::to_ascii_lowercase);
        let len_bit = 1u64 << req.name().len().min(63);
        let maybe_denied = self.lengths & len_bit != 0
            && first.is_some_and(|b| {
                self.first
                    .get(usize::from(b >> 6))
                    .is_some_and(|word| word & (1 << (b & 63)) != 0)
            });
        if !maybe_denied && self.allow.is_none() {
            return None;
        }
        let mut buf = [0u8; MAX_NAME];
        let name = lower(&mut buf, req.name());
        let sub_matches = |sub: &Option<Box<[u8]>>| match sub {
            None => true,
            Some(s) => req.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(s)),
        };
        if maybe_denied {
            let hit = name
                .and_then(|n| self.deny.get(n))
                .and_then(|entries| entries.iter().find(|e| sub_matches(&e.sub)));
            if let Some(e) = hit {
                return Some(refusal(req, e.sub.is_some(), e.why));
            }
        }
        if let Some(allow) = &self.allow {
            let allowed = name
                .and_then(|n| allow.get(n))
                .is_some_and(|subs| subs.iter().any(sub_matches));
            if !allowed {
                let n = display_name(req, false);
                return Some(error_reply(&format!(
                    "ERR haproxy-rs: '{n}' is refused by the command policy (not in commands.allow)"
                )));
            }
        }
        None
    }

    /// The refusal for a command that would change how the proxy logs in to the servers.
    fn lockout(&self, req: &Request) -> Option<Bytes> {
        let user = self.proxy_user.as_deref()?;
        let name = req.name();
        let sub = |s: &[u8]| req.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(s));
        let what = if name.eq_ignore_ascii_case(b"config") && sub(b"set") {
            // CONFIG SET name value [name value ...]: requirepass is the default user's password.
            let sets_requirepass = (2..req.argc())
                .step_by(2)
                .filter_map(|i| req.arg(i))
                .any(|p| p.eq_ignore_ascii_case(b"requirepass"));
            (user == b"default" && sets_requirepass).then_some("CONFIG SET requirepass")
        } else if name.eq_ignore_ascii_case(b"acl") && sub(b"setuser") {
            let changes_login = (3..req.argc()).filter_map(|i| req.arg(i)).any(|rule| {
                LOGIN_RULES.iter().any(|r| rule.eq_ignore_ascii_case(r))
                    || rule
                        .first()
                        .is_some_and(|b| PASSWORD_RULE_PREFIXES.contains(b))
            });
            (req.arg(2) == Some(user) && changes_login).then_some("ACL SETUSER")
        } else if name.eq_ignore_ascii_case(b"acl") && sub(b"deluser") {
            (2..req.argc())
                .filter_map(|i| req.arg(i))
                .any(|u| u == user)
                .then_some("ACL DELUSER")
        } else {
            None
        }?;
        let user = String::from_utf8_lossy(user);
        Some(error_reply(&format!(
            "ERR haproxy-rs: '{what}' is refused: it would change how the proxy logs in to the servers (user '{user}'); change it on the servers and in [backend] together (commands.refuse_proxy_lockout)"
        )))
    }
}

/// Lower-cases `name` into `buf`; `None` if it is too long to be listed.
fn lower<'b>(buf: &'b mut [u8; MAX_NAME], name: &[u8]) -> Option<&'b [u8]> {
    let dst = buf.get_mut(..name.len())?;
    for (d, s) in dst.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    Some(dst)
}

/// `REPLICAOF`, or `CLUSTER FAILOVER` for a subcommand, for error texts (names are short and
/// printable: only names that matched a listed one are shown whole).
fn display_name(req: &Request, with_sub: bool) -> String {
    let clip = |b: &[u8]| String::from_utf8_lossy(b.get(..MAX_NAME).unwrap_or(b)).to_uppercase();
    let mut n = clip(req.name());
    if let Some(sub) = req.arg(1).filter(|_| with_sub) {
        n.push(' ');
        n.push_str(&clip(sub));
    }
    n.retain(|c| !c.is_control());
    n
}

fn refusal(req: &Request, with_sub: bool, why: Why) -> Bytes {
    let n = display_name(req, with_sub);
    error_reply(&match why {
        Why::Topology => format!(
            "ERR haproxy-rs: '{n}' is refused: it would change the topology behind the proxy (commands.refuse_topology_changes)"
        ),
        Why::Deny => format!("ERR haproxy-rs: '{n}' is refused by the command policy (commands.deny)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(deny: &[&str], allow: &[&str]) -> Result<CommandPolicy, (&'static str, String)> {
        CommandPolicy::from_config(
            &CommandsConfig {
                deny: deny.iter().map(|s| s.to_string()).collect(),
                allow: allow.iter().map(|s| s.to_string()).collect(),
                ..CommandsConfig::default()
            },
            "default",
        )
    }

    fn policy(deny: &[&str], allow: &[&str]) -> CommandPolicy {
        compile(deny, allow).unwrap()
    }

    fn check(p: &CommandPolicy, args: &[&str]) -> Option<String> {
        p.check(&Request::from_args(args))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn topology_changes_are_refused_by_default() {
        let p = policy(&[], &[]);
        let e = check(&p, &["replicaof", "no", "one"]).unwrap();
        assert_eq!(e, "-ERR haproxy-rs: 'REPLICAOF' is refused: it would change the topology behind the proxy (commands.refuse_topology_changes)\r\n");
        assert!(check(&p, &["SLAVEOF", "no", "one"]).is_some());
        assert!(check(&p, &["shutdown"]).is_some());
        let e = check(&p, &["Cluster", "failover"]).unwrap();
        assert!(e.contains("'CLUSTER FAILOVER'"), "{e}");
        assert!(check(&p, &["cluster", "SETSLOT", "1", "stable"]).is_some());
        assert!(check(&p, &["cluster", "info"]).is_none());
        assert!(check(&p, &["cluster"]).is_none());
        assert!(check(&p, &["get", "k"]).is_none());
        assert!(check(&p, &["set", "k", "v"]).is_none());
        let off = CommandPolicy::from_config(
            &CommandsConfig {
                refuse_topology_changes: false,
                ..CommandsConfig::default()
            },
            "default",
        )
        .unwrap();
        assert!(check(&off, &["replicaof", "no", "one"]).is_none());
    }

    #[test]
    fn deny_list_adds_commands_and_subcommands() {
        let p = policy(&["FLUSHALL", "config|set", "keys"], &[]);
        let e = check(&p, &["flushall"]).unwrap();
        assert_eq!(
            e,
            "-ERR haproxy-rs: 'FLUSHALL' is refused by the command policy (commands.deny)\r\n"
        );
        assert!(check(&p, &["CONFIG", "SET", "x", "y"])
            .unwrap()
            .contains("'CONFIG SET'"));
        assert!(check(&p, &["config", "get", "x"]).is_none());
        assert!(check(&p, &["keys", "*"]).is_some());
        assert!(check(&p, &["replicaof", "no", "one"]).is_some());
    }

    #[test]
    fn allow_list_serves_only_what_it_names() {
        let p = policy(&[], &["get", "set", "client|setinfo"]);
        assert!(check(&p, &["GET", "k"]).is_none());
        assert!(check(&p, &["auth", "pw"]).is_none());
        assert!(check(&p, &["client", "setinfo", "a", "b"]).is_none());
        let e = check(&p, &["del", "k"]).unwrap();
        assert!(e.contains("'DEL'") && e.contains("commands.allow"), "{e}");
        assert!(check(&p, &["client", "list"]).is_some());
        assert!(check(&p, &[&"x".repeat(100)]).is_some());
    }

    #[test]
    fn bad_names_are_refused_by_validation() {
        let bad = |deny: &[&str], allow: &[&str]| compile(deny, allow).unwrap_err().0;
        assert_eq!(bad(&["flush all"], &[]), "commands.deny");
        assert_eq!(bad(&["AUTH"], &[]), "commands.deny");
        assert_eq!(bad(&[], &[""]), "commands.allow");
    }

    #[test]
    fn commands_that_would_lock_the_proxy_out_are_refused() {
        let p = policy(&[], &[]);
        let e = check(
            &p,
            &["config", "set", "maxmemory", "1", "REQUIREPASS", "pw"],
        )
        .unwrap();
        assert_eq!(e, "-ERR haproxy-rs: 'CONFIG SET requirepass' is refused: it would change how the proxy logs in to the servers (user 'default'); change it on the servers and in [backend] together (commands.refuse_proxy_lockout)\r\n");
        assert!(check(&p, &["config", "set", "maxmemory", "requirepass"]).is_none());
        assert!(check(&p, &["config", "get", "requirepass"]).is_none());
        assert!(check(&p, &["acl", "setuser", "default", ">pw"]).is_some());
        assert!(check(&p, &["ACL", "SETUSER", "default", "on", "RESETPASS"]).is_some());
        assert!(check(&p, &["acl", "setuser", "default", "off"]).is_some());
        assert!(check(&p, &["acl", "setuser", "default", "+@all", "~*"]).is_none());
        assert!(check(&p, &["acl", "setuser", "app", ">pw", "off"]).is_none());
        assert!(check(&p, &["acl", "deluser", "app", "default"]).is_some());
        assert!(check(&p, &["acl", "deluser", "app"]).is_none());

        let as_proxy = |refuse: bool| {
            CommandPolicy::from_config(
                &CommandsConfig {
                    refuse_proxy_lockout: refuse,
                    ..CommandsConfig::default()
                },
                "proxy",
            )
            .unwrap()
        };
        let p = as_proxy(true);
        assert!(check(&p, &["config", "set", "requirepass", "pw"]).is_none());
        let e = check(&p, &["acl", "setuser", "proxy", "#ab"]).unwrap();
        assert!(
            e.contains("'ACL SETUSER'") && e.contains("user 'proxy'"),
            "{e}"
        );
        assert!(check(&p, &["acl", "deluser", "proxy"]).is_some());
        let off = as_proxy(false);
        assert!(check(&off, &["acl", "deluser", "proxy"]).is_none());
    }

    #[test]
    fn every_refusal_is_counted_as_a_policy_error() {
        use crate::stats::ErrorReason;
        let deny = policy(&["flushall"], &[]);
        let allow = policy(&[], &["get"]);
        for (p, args) in [
            (&deny, &["flushall"][..]),
            (&deny, &["replicaof", "no", "one"]),
            (&deny, &["config", "set", "requirepass", "pw"]),
            (&allow, &["set", "k", "v"]),
        ] {
            let reply = p.check(&Request::from_args(args)).expect("refused");
            assert_eq!(ErrorReason::of(&reply), ErrorReason::Policy, "{args:?}");
        }
    }
}
