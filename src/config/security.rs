//! The `[auth]` and `[commands]` tables: who may use the proxy, and which commands it serves.
//!
//! Client credentials here are the proxy's own, kept apart from `[backend]` and `[sentinel]`
//! credentials (which the proxy uses towards the servers).

use serde::Deserialize;

use super::MaskedString;

/// The `[auth]` table. With neither `requirepass` nor `users`, clients need no password (and an
/// `AUTH` with the backend password is accepted, as before).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The default user's password (Redis `requirepass`): `AUTH <password>` or
    /// `HELLO 3 AUTH default <password>`; that user may run every command on every key.
    pub requirepass: Option<MaskedString>,
    /// ACL-style users (`[[auth.users]]`).
    pub users: Vec<UserConfig>,
}

impl AuthConfig {
    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.requirepass.is_some() || !self.users.is_empty()
    }
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Refuse the commands that would change the topology behind the proxy's back
    /// (`REPLICAOF`, `SLAVEOF`, `FAILOVER`, `SHUTDOWN`, `CLUSTER FAILOVER|RESET|SETSLOT|...`).
    pub refuse_topology_changes: bool,
    /// Commands refused too: `"flushall"`, `"config"`, or one subcommand, `"config|set"`.
    pub deny: Vec<String>,
    /// When not empty, only these commands are served (besides `AUTH`, `HELLO` and `QUIT`).
    pub allow: Vec<String>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            refuse_topology_changes: true,
            deny: Vec::new(),
            allow: Vec::new(),
        }
    }
}
