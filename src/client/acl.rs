//! Client security, checked before a request is routed: authentication (`[auth]`), the command
//! policy (`[commands]`) and each user's command and key rules.
//!
//! Backend connections are shared by every client, so the proxy enforces the rules itself; the
//! servers only ever see the proxy's own `[backend]` credentials.

use std::sync::Arc;

use bytes::Bytes;

use arc_swap::ArcSwap;

use super::acl_rules::{CommandRules, KeyRules};
use super::backend_auth::BackendAuth;
use super::policy::CommandPolicy;
use super::sha256::{from_hex, sha256};
use crate::config::{AuthConfig, AuthMode, CommandsConfig, ConfigError};
use crate::resp::{bulk_reply, error_reply, CommandFlags, CommandInfo, CommandTable, Request};
use crate::stats::{AuthStats, Denied};

/// Redis 7.0's reply to a command sent before authenticating.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis 7.0's reply to bad credentials (and to an unknown user: the two are not told apart).
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Redis 7.0's reply when a channel of the command is outside the user's patterns.
pub const NOPERM_CHANNEL: &str =
    "NOPERM this user has no permissions to access one of the channels used as arguments";
/// Redis 7.0's reply when a key of the command is outside the user's patterns.
pub const NOPERM_KEY: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";

/// What a user may do: commands, keys and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    commands: CommandRules,
    keys: KeyRules,
    channels: KeyRules,
    /// `+@all ~* &*`: nothing to check per command.
    unrestricted: bool,
    /// Set when the proxy cannot enforce the user's rules (a server rule it cannot express, or
    /// rules it could not read): every command but `AUTH`/`QUIT`/`RESET` gets this `-NOPERM`.
    refused: Option<String>,
}

impl Rules {
    /// Rules from their parts.
    pub fn new(commands: CommandRules, keys: KeyRules, channels: KeyRules) -> Rules {
        let unrestricted =
            commands.allows_everything() && keys == KeyRules::All && channels == KeyRules::All;
        Rules {
            commands,
            keys,
            channels,
            unrestricted,
            refused: None,
        }
    }

    /// Every command, key and channel.
    pub fn everything() -> Rules {
        let all = CommandRules::parse(&["+@all"]).unwrap_or_default();
        Rules::new(all, KeyRules::All, KeyRules::All)
    }

    /// Nothing is allowed; each command is answered `-NOPERM <why>`.
    pub fn refused(why: String) -> Rules {
        Rules {
            commands: CommandRules::default(),
            keys: KeyRules::Patterns(Vec::new()),
            channels: KeyRules::Patterns(Vec::new()),
            unrestricted: false,
            refused: Some(why),
        }
    }
}

/// A client identity: one of `[auth]`'s users, or (`mode = "backend"`) a user of the master's ACL,
/// whose rules are refreshed from the master while clients use it.
pub struct User {
    name: String,
    /// SHA-256 of the password (`[auth]` users): compared digest to digest, in constant time.
    digest: [u8; 32],
    rules: ArcSwap<Rules>,
}

impl User {
    /// A user of the backend's ACL (its password is the server's to check).
    pub fn from_backend(name: String, rules: Rules) -> User {
        User {
            name,
            digest: [0; 32],
            rules: ArcSwap::from_pointee(rules),
        }
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the user's rules (the server's changed); sessions see them from their next command.
    pub fn set_rules(&self, rules: Rules) {
        if **self.rules.load() != rules {
            self.rules.store(Arc::new(rules));
        }
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the digest: it would let a password be guessed offline.
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The compiled `[auth]` and `[commands]` tables, shared by every session.
#[derive(Debug, Default)]
pub struct Security {
    mode: Option<AuthMode>,
    /// `mode = "proxy"`: the configured users.
    users: Vec<Arc<User>>,
    /// `mode = "backend"`: credentials checked by the master, rules from its ACL.
    backend: Option<Arc<BackendAuth>>,
    policy: CommandPolicy,
    /// Refusals, counted as Redis's `acl_access_denied_*`.
    counters: Arc<AuthStats>,
}

fn invalid(key: &'static str, problem: String) -> ConfigError {
    ConfigError::Invalid { key, problem }
}

impl Security {
    /// Compiles the tables; `backend_password`: whether the servers need a password (the
    /// default mode follows it). A `"backend"` mode needs [`Security::with_backend`] before use.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key (`auth.users`, `commands.deny`...) and the problem.
    pub fn from_config(
        auth: &AuthConfig,
        commands: &CommandsConfig,
        backend_password: bool,
    ) -> Result<Security, ConfigError> {
        let policy = CommandPolicy::from_config(commands).map_err(|(k, p)| invalid(k, p))?;
        let mode = auth
            .resolved_mode(backend_password)
            .map_err(|p| invalid("auth.mode", p))?;
        let mut users = Vec::with_capacity(auth.users.len() + 1);
        if let Some(pass) = &auth.requirepass {
            if pass.expose().is_empty() {
                return Err(invalid("auth.requirepass", "must not be empty".into()));
            }
            users.push(Arc::new(User {
                name: "default".into(),
                digest: sha256(pass.expose().as_bytes()),
                rules: ArcSwap::from_pointee(Rules::everything()),
            }));
        }
        for u in &auth.users {
            users.push(Arc::new(build_user(u, auth.requirepass.is_some(), &users)?));
        }
        Ok(Security {
            mode: Some(mode),
            users,
            backend: None,
            policy,
            counters: Arc::default(),
        })
    }

    /// Counts refusals in `counters` (the stats page's).
    pub fn with_counters(mut self, counters: Arc<AuthStats>) -> Security {
        self.counters = counters;
        self
    }

    /// The refusal counters.
    pub fn counters(&self) -> &AuthStats {
        &self.counters
    }

    /// Backend mode's checker of credentials and reader of rules.
    pub fn with_backend(mut self, backend: Arc<BackendAuth>) -> Security {
        self.backend = Some(backend);
        self
    }

    /// Who checks the clients' credentials.
    pub fn mode(&self) -> AuthMode {
        self.mode.unwrap_or(AuthMode::None)
    }

    /// Backend mode's checker, when that is the mode.
    pub fn backend(&self) -> Option<&Arc<BackendAuth>> {
        self.backend
            .as_ref()
            .filter(|_| self.mode() == AuthMode::Backend)
    }

    /// Whether clients must authenticate before anything else.
    pub fn auth_required(&self) -> bool {
        matches!(self.mode(), AuthMode::Proxy | AuthMode::Backend)
    }

    /// The `[auth]` user whose name and password these are (`default` for `AUTH <password>`),
    /// if any. Every user's digest is compared, so the time taken does not tell which names exist.
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let digest = sha256(password);
        let mut found = None;
        for u in &self.users {
            let ok = constant_time_eq(&digest, &u.digest);
            if ok && u.name.as_bytes() == name && found.is_none() {
                found = Some(u.clone());
            }
        }
        found
    }
}

fn build_user(
    u: &crate::config::UserConfig,
    has_requirepass: bool,
    earlier: &[Arc<User>],
) -> Result<User, ConfigError> {
    let key = "auth.users";
    let named = |p: String| invalid(key, format!("user {:?}: {p}", u.name));
    if u.name.is_empty()
        || u.name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(invalid(
            key,
            format!("user name {:?} must be non-empty, without spaces", u.name),
        ));
    }
    if u.name == "default" && has_requirepass {
        return Err(named(
            "set either `auth.requirepass` or a user named \"default\", not both".into(),
        ));
    }
    if earlier.iter().any(|e| e.name == u.name) {
        return Err(named("defined twice".into()));
    }
    let pass = u.password.expose();
    let digest = match pass.strip_prefix('#') {
        Some(hex) if hex.len() == 64 => from_hex(hex)
            .ok_or_else(|| named("`#` must be followed by a SHA-256 in 64 hex digits".into()))?,
        _ if pass.is_empty() => return Err(named("password must not be empty".into())),
        _ => sha256(pass.as_bytes()),
    };
    let commands = CommandRules::parse(&u.commands).map_err(named)?;
    let keys = KeyRules::parse(&u.keys).map_err(named)?;
    let channels = KeyRules::parse_channels(&u.channels).map_err(named)?;
    Ok(User {
        name: u.name.clone(),
        digest,
        rules: ArcSwap::from_pointee(Rules::new(commands, keys, channels)),
    })
}

/// One session's authentication state.
#[derive(Debug)]
pub struct ClientAuth {
    required: bool,
    user: Option<Arc<User>>,
}

impl ClientAuth {
    /// A new connection: unauthenticated when clients must authenticate, except that in
    /// backend mode it is the `default` user when the master's is `on nopass` (as directly).
    pub fn new(security: &Security) -> ClientAuth {
        ClientAuth {
            required: security.auth_required(),
            user: security.backend().and_then(|b| b.open_default()),
        }
    }

    /// Whether the client may send commands (authenticated, or no `[auth]` configured). Until
    /// then the request parser applies Redis's smaller limits for unauthenticated clients.
    pub fn authenticated(&self) -> bool {
        !self.required || self.user.is_some()
    }

    /// The client authenticated as `user` (a failed `AUTH` changes nothing, as in Redis).
    pub fn login(&mut self, user: Arc<User>) {
        self.user = Some(user);
    }

    /// `RESET`: back to the default user, which with `[auth]` means unauthenticated (Redis 7
    /// authenticates a reset connection only when the default user needs no password).
    pub fn reset(&mut self, security: &Security) {
        *self = ClientAuth::new(security);
    }
}

/// The reply to `req` when the proxy answers it before routing: `-NOAUTH` before authentication,
/// the command policy's error, `-NOPERM` outside the user's rules, and `ACL WHOAMI` (the proxy's
/// user, not the backend's). `None`: serve it.
pub fn check(
    security: &Security,
    client: &ClientAuth,
    commands: &CommandTable,
    req: &Request,
) -> Option<Bytes> {
    if !client.authenticated() {
        if logs_in_or_out(req) {
            return None; // answered by the session
        }
        let info = commands.lookup(req);
        // Redis checks the arity before authentication.
        if let Some(i) = info.filter(|i| !arity_ok(i, req.argc())) {
            return Some(error_reply(&format!(
                "ERR wrong number of arguments for '{}' command",
                i.name
            )));
        }
        return Some(error_reply(NOAUTH));
    }
    if let Some(refused) = security.policy.check(req) {
        return Some(refused);
    }
    let user = client.user.as_ref()?;
    let rules = user.rules.load();
    if !rules.unrestricted {
        if let Some((what, refused)) = check_rules(&rules, commands, req) {
            security.counters.denied(what);
            return Some(refused);
        }
    }
    let acl_sub = req
        .name()
        .eq_ignore_ascii_case(b"acl")
        .then(|| req.arg(1))
        .flatten()
        .map(<[u8]>::to_ascii_lowercase);
    match acl_sub.as_deref() {
        Some(b"whoami") if req.argc() == 2 => Some(bulk_reply(user.name.as_bytes())),
        Some(b"setuser" | b"deluser" | b"load") => {
            // The server's users change: read their rules again.
            if let Some(b) = security.backend() {
                b.acl_changed();
            }
            None
        }
        _ => None,
    }
}

/// Why and how the command is refused, if it is.
fn check_rules(user: &Rules, commands: &CommandTable, req: &Request) -> Option<(Denied, Bytes)> {
    if logs_in_or_out(req) {
        return None; // a user may always re-authenticate or quit
    }
    if let Some(why) = &user.refused {
        return Some((Denied::Command, error_reply(&format!("NOPERM {why}"))));
    }
    let info = commands.lookup(req);
    if user.commands.needs_server_categories() && info.is_some_and(|i| i.acl_categories.is_none()) {
        return Some((
            Denied::Command,
            error_reply(
                "NOPERM haproxy-rs cannot check this user's ACL categories: the server's COMMAND reports none",
            ),
        ));
    }
    let unknown;
    let name = match info {
        Some(i) => i.name.as_str(),
        None => {
            unknown = String::from_utf8_lossy(req.name()).to_lowercase();
            unknown.as_str()
        }
    };
    if !user.commands.allows(name, info) {
        let mut shown = name.chars().take(64).collect::<String>();
        shown.retain(|c| !c.is_control());
        return Some((
            Denied::Command,
            error_reply(&format!(
                "NOPERM this user has no permissions to run the '{shown}' command"
            )),
        ));
    }
    if info.is_some_and(|i| i.flags.contains(CommandFlags::PUBSUB)) {
        // Shard channels are declared as keys but checked as channels, as Redis does.
        return (!channels_allowed(&user.channels, name, req))
            .then(|| (Denied::Channel, error_reply(NOPERM_CHANNEL)));
    }
    if user.keys != KeyRules::All && !commands.keys(req).iter().all(|k| user.keys.allows(k)) {
        return Some((Denied::Key, error_reply(NOPERM_KEY)));
    }
    None
}

/// The channels of `PUBLISH`, `SPUBLISH` and the subscribes against the user's patterns
/// (`PSUBSCRIBE`'s patterns are compared literally, as Redis does); other Pub/Sub commands
/// (`UNSUBSCRIBE`, `PUBSUB ...`) name no channel to check.
fn channels_allowed(channels: &KeyRules, name: &str, req: &Request) -> bool {
    if *channels == KeyRules::All {
        return true;
    }
    match name {
        "publish" | "spublish" => req.arg(1).is_none_or(|c| channels.allows(c)),
        "subscribe" | "ssubscribe" => req.args().skip(1).all(|c| channels.allows(c)),
        "psubscribe" => req.args().skip(1).all(|p| channels.allows_literal(p)),
        _ => true,
    }
}

/// `AUTH`, `HELLO`, `QUIT`, `RESET`: served before authentication and whatever the user's rules,
/// as Redis's `no_auth` commands (by name: a Redis 6 `COMMAND` spells the flag `no-auth`).
fn logs_in_or_out(req: &Request) -> bool {
    let n = req.name();
    n.eq_ignore_ascii_case(b"auth")
        || n.eq_ignore_ascii_case(b"hello")
        || n.eq_ignore_ascii_case(b"quit")
        || n.eq_ignore_ascii_case(b"reset")
}

fn arity_ok(info: &CommandInfo, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(info.arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// Compares secrets in time that depends only on their lengths (`subtle`).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MaskedString, UserConfig};

    fn user(name: &str, pass: &str, commands: &[&str], keys: &[&str]) -> UserConfig {
        UserConfig {
            name: name.into(),
            password: MaskedString::new(pass),
            commands: commands.iter().map(|s| s.to_string()).collect(),
            keys: keys.iter().map(|s| s.to_string()).collect(),
            channels: Vec::new(),
        }
    }

    fn security(requirepass: Option<&str>, users: Vec<UserConfig>) -> Security {
        let auth = AuthConfig {
            requirepass: requirepass.map(MaskedString::new),
            users,
            ..AuthConfig::default()
        };
        Security::from_config(&auth, &CommandsConfig::default(), false).unwrap()
    }

    fn run(sec: &Security, client: &ClientAuth, args: &[&str]) -> Option<String> {
        let t = CommandTable::builtin();
        check(sec, client, &t, &Request::from_args(args))
            .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
    }

    #[test]
    fn nothing_is_served_before_auth() {
        let sec = security(Some("pw"), vec![]);
        let mut c = ClientAuth::new(&sec);
        assert!(!c.authenticated());
        assert_eq!(
            run(&sec, &c, &["get", "k"]).unwrap(),
            "-NOAUTH Authentication required."
        );
        assert_eq!(
            run(&sec, &c, &["PING"]).unwrap(),
            "-NOAUTH Authentication required."
        );
        assert_eq!(
            run(&sec, &c, &["nosuch"]).unwrap(),
            "-NOAUTH Authentication required."
        );
        assert_eq!(
            run(&sec, &c, &["get"]).unwrap(),
            "-ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(run(&sec, &c, &["auth", "x"]), None);
        assert_eq!(run(&sec, &c, &["hello", "3"]), None);
        assert_eq!(run(&sec, &c, &["quit"]), None);
        assert!(sec.authenticate(b"default", b"bad").is_none());
        c.login(sec.authenticate(b"default", b"pw").unwrap());
        assert!(c.authenticated());
        assert_eq!(run(&sec, &c, &["get", "k"]), None);
        assert_eq!(run(&sec, &c, &["ACL", "whoami"]).unwrap(), "$7\r\ndefault");
        assert!(run(&sec, &c, &["replicaof", "no", "one"])
            .unwrap()
            .contains("topology"));
    }

    #[test]
    fn auth_hello_and_quit_pass_whatever_the_command_table_says() {
        // A Redis 6 `COMMAND` spells the flag `no-auth`; a table without them must not lock out.
        let sec = security(Some("pw"), vec![user("u", "x", &["+get"], &["~*"])]);
        let empty = CommandTable::from_command_reply(&crate::resp::Value::Array(vec![])).unwrap();
        let mut c = ClientAuth::new(&sec);
        for args in [&["AUTH", "pw"][..], &["hello", "3"], &["QUIT"]] {
            assert_eq!(check(&sec, &c, &empty, &Request::from_args(args)), None);
        }
        c.login(sec.authenticate(b"u", b"x").unwrap());
        assert_eq!(run(&sec, &c, &["auth", "u", "x"]), None);
        assert!(run(&sec, &c, &["set", "k", "v"]).is_some());
    }

    #[test]
    fn without_auth_config_only_the_policy_applies() {
        let sec = security(None, vec![]);
        let c = ClientAuth::new(&sec);
        assert!(c.authenticated() && !sec.auth_required());
        assert_eq!(run(&sec, &c, &["get", "k"]), None);
        assert!(run(&sec, &c, &["shutdown"]).is_some());
    }

    #[test]
    fn users_are_held_to_their_rules() {
        let sec = security(
            None,
            vec![
                user(
                    "app",
                    "apppw",
                    &["+@all", "-@dangerous", "+info"],
                    &["~app:*"],
                ),
                user(
                    "ro",
                    &format!("#{}", hex(sha256(b"ropw"))),
                    &["+@read"],
                    &["~*"],
                ),
            ],
        );
        assert!(sec.authenticate(b"default", b"apppw").is_none());
        assert!(sec.authenticate(b"app", b"ropw").is_none());
        assert!(sec.authenticate(b"nosuch", b"apppw").is_none());
        let mut app = ClientAuth::new(&sec);
        app.login(sec.authenticate(b"app", b"apppw").unwrap());
        assert_eq!(run(&sec, &app, &["get", "app:1"]), None);
        assert_eq!(run(&sec, &app, &["info"]), None);
        assert_eq!(run(&sec, &app, &["acl", "WHOAMI"]).unwrap(), "$3\r\napp");
        assert_eq!(
            run(&sec, &app, &["publish", "app:news", "x"]).unwrap(),
            format!("-{NOPERM_CHANNEL}")
        );
        assert_eq!(run(&sec, &app, &["ping"]), None);
        assert_eq!(run(&sec, &app, &["auth", "x"]), None);
        assert_eq!(
            run(&sec, &app, &["get", "other"]).unwrap(),
            format!("-{NOPERM_KEY}")
        );
        assert_eq!(
            run(&sec, &app, &["mset", "app:1", "v", "b", "v"]).unwrap(),
            format!("-{NOPERM_KEY}")
        );
        assert_eq!(
            run(&sec, &app, &["FLUSHALL"]).unwrap(),
            "-NOPERM this user has no permissions to run the 'flushall' command"
        );
        assert_eq!(
            run(&sec, &app, &["config", "get", "x"]).unwrap(),
            "-NOPERM this user has no permissions to run the 'config|get' command"
        );
        let mut ro = ClientAuth::new(&sec);
        ro.login(sec.authenticate(b"ro", b"ropw").unwrap());
        assert_eq!(run(&sec, &ro, &["get", "anything"]), None);
        assert!(run(&sec, &ro, &["set", "k", "v"])
            .unwrap()
            .starts_with("-NOPERM"));
        assert!(run(&sec, &ro, &["nosuchcmd"])
            .unwrap()
            .contains("'nosuchcmd'"));
    }

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn channels_are_checked_for_publish_and_the_subscribes() {
        let mut u = user("p", "x", &["+@all"], &["~app:*"]);
        u.channels = vec!["&news:*".into()];
        let sec = security(None, vec![u]);
        let mut c = ClientAuth::new(&sec);
        c.login(sec.authenticate(b"p", b"x").unwrap());
        assert_eq!(run(&sec, &c, &["PUBLISH", "news:1", "m"]), None);
        assert_eq!(run(&sec, &c, &["spublish", "news:1", "m"]), None);
        assert!(run(&sec, &c, &["publish", "other", "m"]).is_some());
        assert!(run(&sec, &c, &["subscribe", "news:1", "other"]).is_some());
        assert_eq!(run(&sec, &c, &["psubscribe", "news:*"]), None);
        assert!(run(&sec, &c, &["psubscribe", "news:1*"]).is_some());
        assert_eq!(run(&sec, &c, &["unsubscribe", "other"]), None);
        // The default user (requirepass) has every channel, as Redis's default user.
        let sec = security(Some("pw"), vec![]);
        let mut c = ClientAuth::new(&sec);
        c.login(sec.authenticate(b"default", b"pw").unwrap());
        assert_eq!(run(&sec, &c, &["publish", "any", "m"]), None);
    }

    #[test]
    fn config_problems_name_their_key() {
        let bad = |requirepass: Option<&str>, users: Vec<UserConfig>| {
            let auth = AuthConfig {
                requirepass: requirepass.map(MaskedString::new),
                users,
                ..AuthConfig::default()
            };
            match Security::from_config(&auth, &CommandsConfig::default(), false) {
                Err(ConfigError::Invalid { key, problem }) => format!("{key}: {problem}"),
                other => panic!("expected an error, got {other:?}"),
            }
        };
        assert!(bad(Some(""), vec![]).starts_with("auth.requirepass"));
        assert!(bad(None, vec![user("a", "", &[], &[])]).contains("empty"));
        assert!(bad(None, vec![user("a b", "x", &[], &[])]).starts_with("auth.users"));
        assert!(bad(Some("x"), vec![user("default", "y", &[], &[])]).contains("not both"));
        assert!(bad(
            None,
            vec![user("a", "x", &[], &[]), user("a", "y", &[], &[])]
        )
        .contains("twice"));
        assert!(bad(None, vec![user("a", "x", &["+@nosuch"], &[])]).contains("\"a\""));
        assert!(bad(None, vec![user("a", "x", &[], &["app:*"])]).contains("~"));
        assert!(bad(
            None,
            vec![user("a", &format!("#{}", "z".repeat(64)), &[], &[])]
        )
        .contains("SHA-256"));
        let err = bad(None, vec![user("a", "s3cret", &["+@nosuch"], &[])]);
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let sec = security(
            Some("s3cret"),
            vec![user("u", "t0psecret", &["+@all"], &["~*"])],
        );
        let shown = format!("{sec:?} {:?}", ClientAuth::new(&sec));
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0psecret"),
            "{shown}"
        );
        assert!(!shown.contains(&hex(sha256(b"s3cret"))), "{shown}");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
