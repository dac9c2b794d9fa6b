//! Settings: the TOML file, with CLI flags and environment variables laid over it.

mod security;
mod size;
mod tls;
mod validate;

use std::fmt;
use std::path::Path;

use serde::Deserialize;

pub use security::{AuthConfig, AuthMode, CommandsConfig, UserConfig};
pub use size::{machine_memory, ByteSize, MemoryLimit};
pub use tls::{ClientTlsConfig, TlsConfig};
pub use validate::parse_listen_addr;

/// Everything the proxy needs to start. Built by [`Config::from_toml`] or by hand (tests),
/// then checked by [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Read/write client endpoint (HAProxy's `bind :6379`): writes to the master, reads to replicas.
    pub listen: String,
    /// Optional read-only endpoint (HAProxy's `:6380` replica backend).
    pub read_listen: Option<String>,
    /// Stats page address (HTML, `/stats.json`, `/metrics`, `/healthz`); `None` disables it, as
    /// `stats = "off"` (or `""`) does in the file and `--stats off` on the command line.
    #[serde(deserialize_with = "deserialize_stats")]
    pub stats: Option<String>,
    /// The token admin actions on the stats listener (`POST /switchover`) need, sent as
    /// `Authorization: Bearer <token>`; without one they are refused (403).
    pub admin_token: Option<MaskedString>,
    /// Seconds a backend stays on the stats page, in `/stats.json` and `/metrics` once the
    /// topology no longer names it (a removed replica, a pod's old IP, a node gone from the
    /// cluster), after which the proxy also stops checking and connecting to it; one still named
    /// but down stays, showing down.
    pub stats_forget_after_secs: u64,
    /// Session threads, each with its own clients and backend connections; 0 means half the cores
    /// (at least one).
    pub threads: usize,
    /// The log filter (tracing's `EnvFilter` syntax: `"info"`, `"haproxy_rs=debug,warn"`); the
    /// command line's `--log` (`HAPROXY_RS_LOG`) overrides it when given.
    pub log: String,
    /// Most client connections served at once; a client past it gets
    /// `-ERR max number of clients reached` and is closed, as Redis does (`maxclients`).
    pub max_clients: usize,
    /// Most requests of one client in flight at once (a pipeline deeper than this is read as replies drain).
    pub max_pipeline: usize,
    /// Close a client idle this many seconds (no request pending), silently, like Redis's
    /// `timeout`; 0 (the default, as in Redis) never closes idle clients.
    pub client_timeout_secs: u64,
    /// Most reply bytes that may pile up for a client that does not read them (Redis's
    /// `client-output-buffer-limit`, hard limit): past it the client is disconnected. Counted behind
    /// the reply being written, so one reply larger than this still goes out. 0: no limit.
    pub client_output_buffer_limit_bytes: usize,
    /// Most bytes of a client's input that may wait to form a complete request (Redis's
    /// `client-query-buffer-limit`, 1 GiB): past it the client is closed without a reply, as
    /// Redis closes it. Bytes, or `"1gb"`-style; at least 1 MiB (Redis's minimum).
    pub client_query_buffer_limit: ByteSize,
    /// Most reply bytes waiting for all clients together (Redis 7's `maxmemory-clients`, for
    /// output buffers): past it the clients with the largest backlogs are disconnected first,
    /// until the total is under it again. Bytes (0: off) or a share of the machine's memory,
    /// `"25%"` (the default).
    pub max_output_bytes_total: MemoryLimit,
    /// Follow a Sentinel-managed master (exclusive with `servers`).
    pub sentinel: Option<SentinelConfig>,
    /// A static list of servers checked with PING + ROLE, the way the HAProxy config did.
    pub servers: Vec<String>,
    /// Front a Redis Cluster (exclusive with `sentinel` and `servers`).
    pub cluster: Option<ClusterConfig>,
    /// Connections to each Redis server.
    pub backend: BackendConfig,
    /// Where commands go.
    pub routing: RoutingConfig,
    /// What happens to writes while the master is being replaced.
    pub failover: FailoverConfig,
    /// Client authentication: a password and ACL-style users (apart from `[backend]` credentials).
    pub auth: AuthConfig,
    /// The command policy: what the proxy refuses to serve.
    pub commands: CommandsConfig,
    /// TLS on the client listeners (off when absent).
    pub tls: Option<TlsConfig>,
    /// How long a stopping proxy (`SIGTERM`, or taken over by a new process) lets its busy
    /// clients finish: requests in flight are answered and a transaction may end with `EXEC`;
    /// idle clients are closed at once, whatever is left at the end of it is closed.
    pub shutdown_grace_ms: u64,
    /// Handing the listening sockets to a new process (`haproxy-rs run --takeover`).
    pub upgrade: UpgradeConfig,
}

/// The `[upgrade]` table: zero-downtime upgrades on one host.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeConfig {
    /// A Unix socket where the proxy hands its listening sockets to a new process started with
    /// `haproxy-rs run --takeover <socket>` (HAProxy's `-x`), then drains; not set: no takeover.
    pub socket: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:6379".into(),
            read_listen: None,
            stats: Some("0.0.0.0:8404".into()),
            admin_token: None,
            stats_forget_after_secs: 60,
            threads: 0,
            log: "info".into(),
            max_clients: 10_000,
            max_pipeline: 1024,
            client_timeout_secs: 0,
            client_output_buffer_limit_bytes: 256 << 20,
            client_query_buffer_limit: ByteSize(1 << 30),
            max_output_bytes_total: MemoryLimit::Percent(25),
            sentinel: None,
            servers: Vec::new(),
            cluster: None,
            backend: BackendConfig::default(),
            routing: RoutingConfig::default(),
            failover: FailoverConfig::default(),
            auth: AuthConfig::default(),
            commands: CommandsConfig::default(),
            tls: None,
            shutdown_grace_ms: 5000,
            upgrade: UpgradeConfig::default(),
        }
    }
}

/// The `stats` setting as the file and `--stats` give it: an address, or `"off"` (or `""`) for
/// no stats page.
pub fn stats_setting(value: &str) -> Option<String> {
    (!value.is_empty() && value != "off").then(|| value.to_string())
}

fn deserialize_stats<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(|s| stats_setting(&s))
}

/// The `[failover]` table: writes are held, not failed, while there is no master to write to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    /// Longest a request waits for a master (`failover_hold`); then it gets `-TRYAGAIN`.
    pub hold_ms: u64,
    /// Most request bytes held at once, over all clients; past it, requests get `-TRYAGAIN` at once.
    pub max_held_bytes: usize,
    /// `"none"` (default) or `"replicas:N"`: each client batch with writes is followed by
    /// `WAIT N durability_timeout_ms`, and its writes are acknowledged only once N replicas have
    /// them, so a master that dies mid-stream loses nothing that was acknowledged.
    pub write_durability: WriteDurability,
    /// How long `WAIT` may take before the writes are reported unconfirmed.
    pub durability_timeout_ms: u64,
    /// What to do when fewer than a majority of the configured sentinels have answered within
    /// `sentinel_loss_fence_ms`: the proxy may be on the minority side of a partition, where
    /// the master it writes to is being replaced.
    pub on_sentinel_loss: SentinelLoss,
    /// How long a sentinel may go unheard before it no longer counts (its view neither names
    /// the master nor makes a majority). Keep it below Sentinel's `down-after-milliseconds`, so
    /// that writes are fenced before the majority side can promote a replica.
    pub sentinel_loss_fence_ms: u64,
    /// A write is acknowledged only if the master, at its last health check, had at least this
    /// many replicas in sync (online, acknowledging within `min_replicas_max_lag_secs`): the
    /// proxy's counterpart of Redis's `min-replicas-to-write`. 0: off.
    pub min_replicas_to_ack: u32,
    /// The replication lag (seconds since the replica's last acknowledgement, `lag=` in the
    /// master's `INFO replication`) up to which a replica counts as in sync.
    pub min_replicas_max_lag_secs: u64,
}

/// `on_sentinel_loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SentinelLoss {
    /// Hold writes (as during a failover, `hold_ms` at most) until a majority is back and names
    /// the master; reads go on.
    #[default]
    FenceWrites,
    /// Go on writing to the last known master.
    Serve,
}

impl SentinelLoss {
    /// The setting as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            SentinelLoss::FenceWrites => "fence-writes",
            SentinelLoss::Serve => "serve",
        }
    }
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            hold_ms: 10_000,
            max_held_bytes: 64 << 20,
            write_durability: WriteDurability::default(),
            durability_timeout_ms: 1000,
            on_sentinel_loss: SentinelLoss::default(),
            sentinel_loss_fence_ms: 2000,
            min_replicas_to_ack: 0,
            min_replicas_max_lag_secs: 1,
        }
    }
}

/// `write_durability`: how many replicas must have a write before its client hears it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct WriteDurability {
    /// 0: acknowledge what the master acknowledges (Redis's own asynchronous replication).
    pub replicas: u32,
}

impl TryFrom<String> for WriteDurability {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = || format!("expected \"none\" or \"replicas:N\" with N from 1 to 16, got {s:?}");
        if s == "none" {
            return Ok(WriteDurability { replicas: 0 });
        }
        let n: u32 = s
            .strip_prefix("replicas:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        if (1..=16).contains(&n) {
            Ok(WriteDurability { replicas: n })
        } else {
            Err(bad())
        }
    }
}

/// The `[sentinel]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// Every sentinel of the quorum, `host:port`.
    pub addrs: Vec<String>,
    /// The monitored master's name (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// Sentinel's own ACL user, if any.
    pub username: Option<String>,
    /// Sentinel's own password (`requirepass` in sentinel.conf), if any.
    pub password: Option<MaskedString>,
    /// How often each sentinel is asked for the whole topology, besides reacting to its events.
    pub reconcile_interval_ms: u64,
    /// Connect with TLS.
    pub tls: bool,
    /// CA certificates (PEM) that sign the servers' certificates (needed with `tls`).
    pub tls_ca_file: Option<String>,
    /// Client certificate (PEM), for servers with `tls-auth-clients yes`.
    pub tls_cert_file: Option<String>,
    /// The client certificate's private key (PEM).
    pub tls_key_file: Option<String>,
    /// Name verified in the servers' certificates and sent as SNI (default: each server's host).
    pub tls_server_name: Option<String>,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        SentinelConfig {
            addrs: Vec::new(),
            master_name: "mymaster".into(),
            username: None,
            password: None,
            reconcile_interval_ms: 1000,
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
        }
    }
}

/// The `[cluster]` table: the proxy routes by hash slot to the nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Nodes to ask for the slot map, `host:port` (any node of the cluster will do; several in
    /// case one is down). The nodes the cluster itself announces are asked too once known.
    pub seeds: Vec<String>,
    /// How often the slot map is fetched again (it is also fetched at once on `MOVED` and when a
    /// node cannot be reached).
    pub refresh_interval_ms: u64,
    /// Longest a request is retried through `MOVED`, `TRYAGAIN`, `CLUSTERDOWN` and unreachable
    /// nodes before the client gets the error. The default covers a failover under Redis's
    /// default `cluster-node-timeout` (15 s) plus the election.
    pub retry_window_ms: u64,
    /// Most commands a transaction may queue between `MULTI` and `EXEC` (the proxy queues them
    /// and sends them whole at `EXEC`): past it the command gets `-ERR` and `EXEC` answers
    /// `-EXECABORT`.
    pub max_multi_commands: usize,
    /// Most bytes of commands a transaction may queue (the same way).
    pub max_multi_bytes: ByteSize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            refresh_interval_ms: 2000,
            retry_window_ms: 20_000,
            max_multi_commands: 100_000,
            max_multi_bytes: ByteSize(512 << 20),
        }
    }
}

/// The `[backend]` table: how the proxy talks to each Redis server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Shared, pipelined connections per server and session thread (twemproxy's
    /// `server_connections`). One gives Redis the largest batches.
    pub connections: usize,
    /// ACL user for the servers, if any.
    pub username: Option<String>,
    /// Password for the servers (`requirepass` / `masterauth`), if any.
    pub password: Option<MaskedString>,
    /// Time allowed to connect (and authenticate).
    pub connect_timeout_ms: u64,
    /// A connection whose oldest request waits longer than this is closed and its requests fail.
    pub command_timeout_ms: u64,
    /// How often each server's `INFO replication` is checked (health, role, replication offset).
    pub health_interval_ms: u64,
    /// Longest wait between reconnect attempts (the backoff doubles up to this).
    pub max_backoff_ms: u64,
    /// Most connections pinned to one client at once, all clients together: one per
    /// transaction (`MULTI`/`WATCH` ... `EXEC`) or blocking command in progress.
    pub max_pinned_connections: usize,
    /// Connect with TLS.
    pub tls: bool,
    /// CA certificates (PEM) that sign the servers' certificates (needed with `tls`).
    pub tls_ca_file: Option<String>,
    /// Client certificate (PEM), for servers with `tls-auth-clients yes`.
    pub tls_cert_file: Option<String>,
    /// The client certificate's private key (PEM).
    pub tls_key_file: Option<String>,
    /// Name verified in the servers' certificates and sent as SNI (default: each server's host).
    pub tls_server_name: Option<String>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            connections: 1,
            username: None,
            password: None,
            connect_timeout_ms: 1000,
            command_timeout_ms: 10_000,
            health_interval_ms: 100,
            max_backoff_ms: 2000,
            max_pinned_connections: 1024,
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
        }
    }
}

/// The `[routing]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Where read-only commands go.
    pub read_policy: ReadPolicy,
    /// Which acknowledged writes a read on the main endpoint is sure to see.
    pub read_consistency: ReadConsistency,
    /// A replica whose last contact with its master is older than this many seconds gets no reads.
    pub max_replica_lag_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_policy: ReadPolicy::PreferReplica,
            read_consistency: ReadConsistency::AcknowledgedWrites,
            max_replica_lag_secs: 10,
        }
    }
}

/// Where read-only commands go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadPolicy {
    /// Every command to the master.
    Master,
    /// Reads to healthy replicas, to the master when there is none.
    PreferReplica,
    /// Reads only to healthy replicas; an error when there is none.
    Replica,
}

/// Which acknowledged writes a read on the main endpoint is sure to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadConsistency {
    /// Every write any client was acknowledged for through this proxy: a replica serves a read
    /// only once its offset has passed the master's at the latest acknowledged write, as if
    /// there were one server.
    AcknowledgedWrites,
    /// After a write, the client's reads go to the master until a replica has replicated past it.
    ReadYourWrites,
    /// Reads go to any healthy replica, which may not have the client's latest write yet.
    Eventual,
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct MaskedString(String);

impl MaskedString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        MaskedString(s.into())
    }
    /// The secret itself, for the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MaskedString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"****\"")
    }
}

/// A configuration that cannot be used; the message names the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML parser's message, which names the key and line.
        message: String,
    },
    /// A key has a value the proxy cannot use.
    #[error("config: `{key}`: {problem}")]
    Invalid {
        /// The key, dotted (`backend.connections`).
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl Config {
    /// Parses TOML text; `origin` names the source in error messages.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML, unknown keys or wrong types.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// A config for a Redis Cluster reached through `seeds`, everything else default.
    pub fn for_cluster(seeds: Vec<String>) -> Config {
        Config {
            cluster: Some(ClusterConfig {
                seeds,
                ..ClusterConfig::default()
            }),
            ..Config::default()
        }
    }

    /// A config for a Sentinel-managed master, everything else default.
    pub fn for_sentinels(addrs: Vec<String>, master_name: &str) -> Config {
        Config {
            sentinel: Some(SentinelConfig {
                addrs,
                master_name: master_name.to_string(),
                ..SentinelConfig::default()
            }),
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_off_in_the_file_turns_the_page_off_as_the_flag_does() {
        let parse = |text: &str| {
            let cfg = Config::from_toml(text, "test").unwrap();
            cfg.validate().unwrap();
            cfg.stats
        };
        let servers = "servers = [\"127.0.0.1:1\"]\n";
        assert_eq!(parse(&format!("{servers}stats = \"off\"")), None);
        assert_eq!(parse(&format!("{servers}stats = \"\"")), None);
        assert_eq!(
            parse(&format!("{servers}stats = \"127.0.0.1:9404\"")).as_deref(),
            Some("127.0.0.1:9404")
        );
        assert_eq!(
            parse(servers).as_deref(),
            Some("0.0.0.0:8404"),
            "the default"
        );
    }
}
