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
use crate::config::{AuthConfig, AuthMode, BackendConfig, CommandsConfig, ConfigError};
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
    /// Compiles the tables for the servers behind `backend` (whether they need a password decides
    /// the default mode; its user is the one the policy keeps the proxy logged in as). A
    /// `"backend"` mode needs [`Security::with_backend`] before use.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key (`auth.users`, `commands.deny`...) and the problem.
    pub fn from_config(
        auth: &AuthConfig,
        commands: &CommandsConfig,
        backend: &BackendConfig,
    ) -> Result<Security, ConfigError> {
        let proxy_user = backend.username.as_deref().unwrap_or("default");
        let policy =
            CommandPolicy::from_config(commands, proxy_user).map_err(|(k, p)| invalid(k, p))?;
        let mode = auth
            .resolved_mode(backend.password.is_some())
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

    /// Whether a user of this name exists, as `CLIENT KILL USER` asks: `default`, an `[auth]`
    /// user, or (backend mode) any name, the server's ACL being the judge of those.
    pub fn knows_user(&self, name: &str) -> bool {
        name == "default" || self.backend().is_some() || self.users.iter().any(|u| u.name == name)
    }

    /// The `[auth]` user of this name.
    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.iter().find(|u| u.name == name).cloned()
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

    /// The user the client is, as `CLIENT LIST` names it (`default` until it authenticates).
    pub fn user_name(&self) -> &str {
        self.user.as_ref().map_or("default", |u| u.name())
    }

    /// The client authenticated as `user` (a failed `AUTH` changes nothing, as in Redis).
    pub fn login(&mut self, user: Arc<User>) {
        self.user = Some(user);
    }

    /// A reload replaced the tables with `security`: a client authenticated as an `[auth]` user
    /// is that user as `security` defines it (its new rules); false when the user is gone, and the
    /// client is then disconnected, as Redis disconnects the clients of a user `ACL DELUSER`
    /// removes. A client that needed no password keeps needing none (Redis's `requirepass` does
    /// not log connected clients out); one not yet authenticated needs to only if `security` says
    /// so. Backend mode's users are the servers': a reload keeps them.
    pub fn adopt(&mut self, security: &Security) -> bool {
        self.required &= security.auth_required();
        match &self.user {
            Some(_) if security.backend().is_some() => true,
            Some(u) => match security.user(u.name()) {
                Some(user) => {
                    self.user = Some(user);
                    true
                }
                None => false,
            },
            None => true,
        }
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
        // Redis checks the arity before authentication.
        return Some(arity_error(commands, req).unwrap_or_else(|| error_reply(NOAUTH)));
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

/// Redis's `-ERR wrong number of arguments for '<name>' command` when `req` has an argument count
/// its command's arity refuses (a command the table does not know passes).
pub fn arity_error(commands: &CommandTable, req: &Request) -> Option<Bytes> {
    let info = commands.lookup(req)?;
    (!arity_ok(info, req.argc())).then(|| {
        error_reply(&format!(
            "ERR wrong number of arguments for '{}' command",
            info.name
        ))
    })
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
#[path = "acl_tests.rs"]
mod tests;
