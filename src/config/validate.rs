//! The validation pass: every problem is reported with its key before anything starts.

use std::net::SocketAddr;

use super::{Config, ConfigError};

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// Parses a listen address: `host:port`, `[v6]:port`, or HAProxy's `:port` (all interfaces).
///
/// # Errors
/// A message saying what form is expected.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else if s == "localhost" || s.starts_with("localhost:") {
        s.replacen("localhost", "127.0.0.1", 1)
    } else {
        s.to_string()
    };
    full.parse()
        .map_err(|_| format!("expected an address like 0.0.0.0:6379 or :6379, got {s:?}"))
}

/// Checks a `host:port` backend address without resolving it (names may only resolve later, as in compose).
fn check_server_addr(key: &'static str, s: &str) -> Result<(), ConfigError> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(invalid(key, format!("expected host:port, got {s:?}")));
    };
    if host.is_empty() {
        return Err(invalid(key, format!("missing host in {s:?}")));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(invalid(key, format!("bad port in {s:?}"))),
    }
}

/// The admin token travels in an HTTP header (`Authorization: Bearer <token>`): it must not be
/// empty, and only visible ASCII survives the trip unchanged.
fn check_admin_token(t: &str) -> Result<(), ConfigError> {
    if t.is_empty() {
        return Err(invalid(
            "admin_token",
            "must not be empty (leave it out to disable admin actions)",
        ));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "admin_token",
            "must be visible ASCII without spaces (it is sent in an HTTP header)",
        ));
    }
    Ok(())
}

fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be between {min} and {max} (got {value})"),
        ));
    }
    Ok(())
}

impl Config {
    /// Checks every key; the first problem found is returned. Users' rules and the command
    /// policy (`[auth]`, `[commands]`) are read against the command table, above this module:
    /// the crate's `check_config` runs this and then checks those.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key and the problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listeners()?;
        self.validate_client_limits()?;
        self.failover.validate()?;
        self.validate_source()?;
        if let Some(c) = &self.cluster {
            c.validate()?;
            if self.failover.write_durability.replicas > 0 {
                return Err(invalid(
                    "failover.write_durability",
                    "not supported with `[cluster]` yet (only \"none\")",
                ));
            }
            if self.failover.min_replicas_to_ack > 0 {
                return Err(invalid(
                    "failover.min_replicas_to_ack",
                    "not supported with `[cluster]` yet (only 0)",
                ));
            }
        }
        if let Some(s) = &self.sentinel {
            s.validate()?;
        }
        self.validate_tls()?;
        for a in &self.servers {
            check_server_addr("servers", a)?;
        }
        self.backend.validate()?;
        check_range(
            "routing.max_replica_lag_secs",
            self.routing.max_replica_lag_secs,
            0,
            86_400,
        )?;
        crate::logging::parse_filter(&self.log).map_err(|p| invalid("log", p))?;
        Ok(())
    }

    /// The listeners' addresses and the admin token.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        parse_listen_addr(&self.listen).map_err(|p| invalid("listen", p))?;
        if let Some(r) = &self.read_listen {
            let addr = parse_listen_addr(r).map_err(|p| invalid("read_listen", p))?;
            if r == &self.listen && addr.port() != 0 {
                return Err(invalid("read_listen", "must differ from `listen`"));
            }
        }
        if let Some(s) = &self.stats {
            parse_listen_addr(s).map_err(|p| invalid("stats", p))?;
        }
        if let Some(t) = &self.admin_token {
            check_admin_token(t.expose())?;
        }
        Ok(())
    }

    /// The top-level numbers: threads and the limits on clients.
    fn validate_client_limits(&self) -> Result<(), ConfigError> {
        check_range(
            "stats_forget_after_secs",
            self.stats_forget_after_secs,
            1,
            604_800,
        )?;
        check_range("threads", self.threads as u64, 0, 1024)?;
        check_range("max_clients", self.max_clients as u64, 1, 1_000_000)?;
        check_range("max_pipeline", self.max_pipeline as u64, 1, 1_000_000)?;
        // Redis's `timeout` is an int: up to INT_MAX seconds.
        check_range(
            "client_timeout_secs",
            self.client_timeout_secs,
            0,
            i32::MAX as u64,
        )?;
        check_range(
            "client_query_buffer_limit",
            self.client_query_buffer_limit.0,
            1 << 20,
            1 << 40,
        )?;
        check_range("shutdown_grace_ms", self.shutdown_grace_ms, 0, 600_000)?;
        if let Some(path) = &self.upgrade.socket {
            if path.as_os_str().is_empty() {
                return Err(invalid(
                    "upgrade.socket",
                    "must not be empty (leave it out to disable takeovers)",
                ));
            }
        }
        if let super::MemoryLimit::Bytes(b) = self.max_output_bytes_total {
            check_range("max_output_bytes_total", b, 0, 1 << 50)?;
        }
        Ok(())
    }

    /// Exactly one source of the topology: `[sentinel]`, `servers` or `[cluster]`.
    fn validate_source(&self) -> Result<(), ConfigError> {
        let sources = usize::from(self.sentinel.is_some())
            + usize::from(!self.servers.is_empty())
            + usize::from(self.cluster.is_some());
        if sources > 1 {
            let key = if self.cluster.is_some() {
                "cluster"
            } else {
                "servers"
            };
            return Err(invalid(
                key,
                "set only one of `[sentinel]`, `servers` and `[cluster]`",
            ));
        }
        if sources == 0 {
            return Err(invalid(
                "sentinel.addrs",
                "no backend: set `[sentinel] addrs` (--sentinel, REDIS_SENTINEL_ADDRS), `servers` (--servers) or `[cluster] seeds` (--cluster)",
            ));
        }
        Ok(())
    }
}

impl super::FailoverConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("failover.hold_ms", self.hold_ms, 0, 600_000)?;
        check_range(
            "failover.durability_timeout_ms",
            self.durability_timeout_ms,
            1,
            60_000,
        )?;
        check_range(
            "failover.min_replicas_to_ack",
            u64::from(self.min_replicas_to_ack),
            0,
            16,
        )?;
        check_range(
            "failover.min_replicas_max_lag_secs",
            self.min_replicas_max_lag_secs,
            1,
            3600,
        )?;
        check_range(
            "failover.sentinel_loss_fence_ms",
            self.sentinel_loss_fence_ms,
            200,
            600_000,
        )?;
        check_range(
            "failover.max_held_bytes",
            self.max_held_bytes as u64,
            0,
            1 << 40,
        )
    }
}

impl super::ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.seeds.is_empty() {
            return Err(invalid("cluster.seeds", "needs at least one host:port"));
        }
        for a in &self.seeds {
            check_server_addr("cluster.seeds", a)?;
        }
        check_range(
            "cluster.refresh_interval_ms",
            self.refresh_interval_ms,
            50,
            600_000,
        )?;
        check_range("cluster.retry_window_ms", self.retry_window_ms, 0, 600_000)?;
        check_range(
            "cluster.max_multi_commands",
            self.max_multi_commands as u64,
            1,
            100_000_000,
        )?;
        check_range(
            "cluster.max_multi_bytes",
            self.max_multi_bytes.0,
            1024,
            1 << 40,
        )
    }
}

impl super::SentinelConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.addrs.is_empty() {
            return Err(invalid("sentinel.addrs", "needs at least one host:port"));
        }
        for a in &self.addrs {
            check_server_addr("sentinel.addrs", a)?;
        }
        if self.master_name.trim().is_empty() {
            return Err(invalid("sentinel.master_name", "must not be empty"));
        }
        check_range(
            "sentinel.reconcile_interval_ms",
            self.reconcile_interval_ms,
            50,
            60_000,
        )
    }
}

impl super::BackendConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("backend.connections", self.connections as u64, 1, 64)?;
        check_range(
            "backend.connect_timeout_ms",
            self.connect_timeout_ms,
            10,
            60_000,
        )?;
        check_range(
            "backend.command_timeout_ms",
            self.command_timeout_ms,
            10,
            3_600_000,
        )?;
        check_range(
            "backend.health_interval_ms",
            self.health_interval_ms,
            10,
            60_000,
        )?;
        check_range("backend.max_backoff_ms", self.max_backoff_ms, 10, 600_000)?;
        check_range(
            "backend.max_pinned_connections",
            self.max_pinned_connections as u64,
            0,
            100_000,
        )?;
        if self.username.is_some() && self.password.is_none() {
            return Err(invalid(
                "backend.password",
                "required when `backend.username` is set",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ReadConsistency, ReadPolicy};

    fn base() -> Config {
        Config::for_sentinels(vec!["127.0.0.1:26379".into()], "mymaster")
    }

    fn key_of(r: Result<(), ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn defaults_with_a_sentinel_are_valid() {
        base().validate().unwrap();
    }

    #[test]
    fn no_backend_names_sentinel_addrs() {
        assert_eq!(key_of(Config::default().validate()), "sentinel.addrs");
    }

    #[test]
    fn the_log_filter_must_parse() {
        let mut c = base();
        c.log = "haproxy_rs=debug,warn".into();
        c.validate().unwrap();
        c.log = "haproxy_rs=loud".into();
        assert_eq!(key_of(c.validate()), "log");
    }

    #[test]
    fn shutdown_grace_and_the_upgrade_socket_are_checked() {
        let mut c = base();
        assert_eq!(c.shutdown_grace_ms, 5000);
        c.shutdown_grace_ms = 600_001;
        assert_eq!(key_of(c.validate()), "shutdown_grace_ms");
        c.shutdown_grace_ms = 0;
        c.validate().unwrap();
        c.upgrade.socket = Some(std::path::PathBuf::new());
        assert_eq!(key_of(c.validate()), "upgrade.socket");
        let c = Config::from_toml(
            "servers = [\"127.0.0.1:1\"]\nshutdown_grace_ms = 1500\n[upgrade]\nsocket = \"/tmp/u.sock\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.shutdown_grace_ms, 1500);
        assert_eq!(
            c.upgrade.socket.as_deref(),
            Some(std::path::Path::new("/tmp/u.sock"))
        );
    }

    #[test]
    fn both_sentinel_and_servers_is_refused() {
        let mut c = base();
        c.servers = vec!["127.0.0.1:6379".into()];
        assert_eq!(key_of(c.validate()), "servers");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = base();
        c.backend.connections = 0;
        assert_eq!(key_of(c.validate()), "backend.connections");
        let mut c = base();
        c.listen = "nonsense".into();
        assert_eq!(key_of(c.validate()), "listen");
        let mut c = base();
        c.sentinel.as_mut().unwrap().addrs = vec!["host-without-port".into()];
        assert_eq!(key_of(c.validate()), "sentinel.addrs");
        let mut c = base();
        c.servers = vec![];
        c.sentinel = None;
        c.servers = vec!["a:0".into()];
        assert_eq!(key_of(c.validate()), "servers");
        let mut c = base();
        c.stats_forget_after_secs = 0;
        assert_eq!(key_of(c.validate()), "stats_forget_after_secs");
        let mut c = base();
        c.client_timeout_secs = i32::MAX as u64 + 1;
        assert_eq!(key_of(c.validate()), "client_timeout_secs");
        let mut c = base();
        c.client_query_buffer_limit = crate::config::ByteSize(1000);
        assert_eq!(key_of(c.validate()), "client_query_buffer_limit");
        let mut c = Config::for_cluster(vec!["127.0.0.1:7000".into()]);
        c.cluster.as_mut().unwrap().max_multi_commands = 0;
        assert_eq!(key_of(c.validate()), "cluster.max_multi_commands");
        let mut c = Config::for_cluster(vec!["127.0.0.1:7000".into()]);
        c.cluster.as_mut().unwrap().max_multi_bytes = crate::config::ByteSize(10);
        assert_eq!(key_of(c.validate()), "cluster.max_multi_bytes");
    }

    #[test]
    fn memory_sizes_parse_from_toml_and_name_their_key() {
        let c = Config::from_toml(
            "servers = [\"a:1\"]\nclient_query_buffer_limit = \"64mb\"\nmax_output_bytes_total = \"10%\"\n[cluster]\nmax_multi_bytes = 4096\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.client_query_buffer_limit.0, 64 << 20);
        assert_eq!(
            c.max_output_bytes_total,
            crate::config::MemoryLimit::Percent(10)
        );
        assert_eq!(c.cluster.unwrap().max_multi_bytes.0, 4096);
        let err = Config::from_toml("max_output_bytes_total = \"lots\"\n", "t.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("max_output_bytes_total") && msg.contains("25%"),
            "{msg}"
        );
        let err = Config::from_toml("client_query_buffer_limit = \"1tb\"\n", "t.toml").unwrap_err();
        assert!(
            err.to_string().contains("client_query_buffer_limit"),
            "{err}"
        );
    }

    #[test]
    fn cluster_mode_is_exclusive_and_needs_seeds() {
        let c = Config::for_cluster(vec!["127.0.0.1:7000".into()]);
        c.validate().unwrap();
        let mut c = base();
        c.cluster = Config::for_cluster(vec!["127.0.0.1:7000".into()]).cluster;
        assert_eq!(key_of(c.validate()), "cluster");
        assert_eq!(
            key_of(Config::for_cluster(vec![]).validate()),
            "cluster.seeds"
        );
        assert_eq!(
            key_of(Config::for_cluster(vec!["nohost".into()]).validate()),
            "cluster.seeds"
        );
        let mut c = Config::for_cluster(vec!["127.0.0.1:7000".into()]);
        c.failover.write_durability.replicas = 1;
        assert_eq!(key_of(c.validate()), "failover.write_durability");
    }

    #[test]
    fn listen_accepts_haproxy_style_port_only() {
        assert_eq!(
            parse_listen_addr(":6379").unwrap(),
            "0.0.0.0:6379".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("localhost:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(parse_listen_addr("6379").is_err());
    }

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let c = Config::from_toml(
            r#"
listen = ":7000"
[sentinel]
addrs = ["10.0.0.1:26379"]
master_name = "m"
password = "s3cret"
[routing]
read_policy = "replica"
read_consistency = "eventual"
"#,
            "test.toml",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.routing.read_policy, ReadPolicy::Replica);
        assert_eq!(c.routing.read_consistency, ReadConsistency::Eventual);
        assert!(!format!("{c:?}").contains("s3cret"), "password leaked");
        let err = Config::from_toml("listen = \":1\"\nlisen = 3\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let d = Config::from_toml(
            "servers = [\"a:1\"]\n[failover]\nwrite_durability = \"replicas:2\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(d.failover.write_durability.replicas, 2);
        let err =
            Config::from_toml("[failover]\nwrite_durability = \"all\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("replicas:N"), "{err}");
        let err = Config::from_toml("[backend]\nconnections = \"two\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("connections"), "{err}");
    }

    #[test]
    fn auth_and_command_policy_parse_and_validate() {
        let c = Config::from_toml(
            r#"
servers = ["127.0.0.1:6379"]
admin_token = "admin-s3cret"
[auth]
requirepass = "s3cret"
[[auth.users]]
name = "app"
password = "app-pw"
commands = ["+@all", "-@dangerous"]
keys = ["~app:*"]
channels = ["&app:*"]
[commands]
deny = ["flushall", "config|set"]
"#,
            "t.toml",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.auth.has_proxy_users() && c.commands.refuse_topology_changes);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("app-pw") && !shown.contains("admin-"),
            "{shown}"
        );
        let with = |extra: &str| {
            let text = format!("servers = [\"127.0.0.1:6379\"]\n{extra}");
            key_of(Config::from_toml(&text, "t.toml").unwrap().validate())
        };
        assert_eq!(with("admin_token = \"\"\n"), "admin_token");
        assert_eq!(with("admin_token = \"a b\"\n"), "admin_token");
        let err = Config::from_toml("[auth]\nrequirepas = \"x\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("requirepas"), "{err}");
    }
}
