//! The `[auth]` and `[commands]` tables: who may use the proxy, and which commands it serves.
//!
//! Client credentials here are the proxy's own, kept apart from `[backend]` and `[sentinel]`
//! credentials (which the proxy uses towards the servers).

use serde::Deserialize;

use super::MaskedString;

/// Who checks the clients' credentials (`[auth] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Clients authenticate as they did against Redis: `AUTH [user] password` is checked against
    /// the current master, and the user's rules are the master's own `ACL GETUSER`.
    Backend,
    /// The proxy's own `requirepass` and `[[auth.users]]`.
    Proxy,
    /// Clients need no password.
    None,
}

impl AuthMode {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Backend => "backend",
            AuthMode::Proxy => "proxy",
            AuthMode::None => "none",
        }
    }
}

/// The `[auth]` table. Without `mode`, the proxy's own users when `requirepass` or `users` are
/// set, else the backend's when the backend needs a password, else none.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Who checks the clients' credentials; see [`AuthConfig::resolved_mode`].
    pub mode: Option<AuthMode>,
    /// The default user's password (Redis `requirepass`): `AUTH <password>` or
    /// `HELLO 3 AUTH default <password>`; that user may run every command on every key.
    pub requirepass: Option<MaskedString>,
    /// ACL-style users (`[[auth.users]]`).
    pub users: Vec<UserConfig>,
}

impl AuthConfig {
    /// Whether the proxy's own users are configured (`requirepass` or `users`).
    pub fn has_proxy_users(&self) -> bool {
        self.requirepass.is_some() || !self.users.is_empty()
    }

    /// The mode in force, given whether the backend needs a password: `mode` when written,
    /// else `proxy` with proxy users, `backend` with a backend password, `none` otherwise.
    ///
    /// # Errors
    /// A message when `mode` contradicts the rest of the table.
    pub fn resolved_mode(&self, backend_password: bool) -> Result<AuthMode, String> {
        match (self.mode, self.has_proxy_users()) {
            (Some(AuthMode::Proxy), false) => {
                Err("\"proxy\" needs `auth.requirepass` or `[[auth.users]]`".into())
            }
            (Some(m @ (AuthMode::Backend | AuthMode::None)), true) => Err(format!(
                "{:?} does not use `auth.requirepass` or `[[auth.users]]`: remove them or set mode = \"proxy\"",
                m.as_str()
            )),
            (Some(m), _) => Ok(m),
            (None, true) => Ok(AuthMode::Proxy),
            (None, false) if backend_password => Ok(AuthMode::Backend),
            (None, false) => Ok(AuthMode::None),
        }
    }
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name given to `AUTH <name> <password>`.
    pub name: String,
    /// The password, or `#` and its SHA-256 in 64 hex digits (as Redis ACL's `#<hash>`).
    pub password: MaskedString,
    /// Command rules applied in order from "nothing allowed": `+@all`, `-@dangerous`, `+get`,
    /// `-flushall`, `+config|get`, `allcommands`, `nocommands`.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Key patterns (`~app:*`, `~*` or `allkeys`); a command's keys must each match one.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Pub/Sub channel patterns (`&news:*`, `&*` or `allchannels`) for `PUBLISH` and the
    /// subscribes; none by default, as Redis 7's `acl-pubsub-default resetchannels`.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// The `[commands]` table: the command policy, for every client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Refuse the commands that would change the topology behind the proxy's back
    /// (`REPLICAOF`, `SLAVEOF`, `FAILOVER`, `SHUTDOWN`, `CLUSTER FAILOVER|RESET|SETSLOT|...`).
    pub refuse_topology_changes: bool,
    /// Refuse the commands that would change how the proxy logs in to the servers
    /// (`CONFIG SET requirepass`, `ACL SETUSER`/`DELUSER` of the proxy's `[backend]` user).
    pub refuse_proxy_lockout: bool,
    /// Commands refused too: `"flushall"`, `"config"`, or one subcommand, `"config|set"`.
    pub deny: Vec<String>,
    /// When not empty, only these commands are served (besides `AUTH`, `HELLO` and `QUIT`).
    pub allow: Vec<String>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            refuse_topology_changes: true,
            refuse_proxy_lockout: true,
            deny: Vec::new(),
            allow: Vec::new(),
        }
    }
}
