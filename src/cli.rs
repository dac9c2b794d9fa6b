//! Command-line interface: subcommands and the flags that lay over the config file.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

use crate::config::{AuthMode, Config, ConfigError, MaskedString, SentinelConfig, TlsConfig};
use crate::logging::LogFormat;

mod switchover;

pub use switchover::{post_switchover, AdminTokenArg, SwitchoverArgs};

/// A RESP-aware Redis proxy that follows Sentinel: one endpoint, writes to the master, reads to replicas.
#[derive(Debug, Parser)]
#[command(name = "haproxy-rs", version, about)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `haproxy_rs=debug`.
    #[arg(long, global = true, env = "HAPROXY_RS_LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "HAPROXY_RS_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at startup and moved out at once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the proxy.
    Run(RunArgs),
    /// Load a RESP endpoint and measure throughput, latency and what a failover costs.
    Bench(crate::bench::BenchArgs),
    /// Switch a running proxy's master over without losing a write (Sentinel mode): hold writes,
    /// let the replicas catch up, `SENTINEL FAILOVER`, release the writes to the new master.
    Switchover(SwitchoverArgs),
}

/// A single-threaded runtime (the proxy's sessions have their own threads); `None`, reported,
/// if the OS refuses.
pub(crate) fn small_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("haproxy-rs: cannot start the runtime: {e}");
            None
        }
    }
}

/// Flags of `haproxy-rs run`. Each one given overrides the same setting of the config file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read/write endpoint, e.g. 0.0.0.0:6379 or :6379.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Read-only endpoint (replicas), e.g. :6380.
    #[arg(long, value_name = "ADDR")]
    pub read_listen: Option<String>,
    /// Stats page address, e.g. :8404; `off` disables it.
    #[arg(long, value_name = "ADDR")]
    pub stats: Option<String>,
    /// Session threads, each with its own clients and backend connections (0: half the cores).
    #[arg(long, value_name = "N", env = "HAPROXY_RS_THREADS")]
    pub threads: Option<usize>,
    /// A sentinel, HOST:PORT (repeat the flag, or comma-separate in the variable).
    #[arg(
        long = "sentinel",
        value_name = "HOST:PORT",
        env = "REDIS_SENTINEL_ADDRS",
        value_delimiter = ','
    )]
    pub sentinels: Vec<String>,
    /// Name of the master the sentinels monitor.
    #[arg(long, value_name = "NAME", env = "REDIS_MASTER_NAME")]
    pub master_name: Option<String>,
    /// A static list of servers instead of Sentinel, HOST:PORT,HOST:PORT,...
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// A Redis Cluster node to learn the slot map from, HOST:PORT (repeat the flag, or
    /// comma-separate): the proxy then routes by hash slot.
    #[arg(
        long = "cluster",
        value_name = "HOST:PORT",
        env = "REDIS_CLUSTER_SEEDS",
        value_delimiter = ','
    )]
    pub cluster: Vec<String>,
    /// Password of the Redis servers.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Password of the sentinels.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "REDIS_SENTINEL_PASSWORD",
        hide_env_values = true
    )]
    pub sentinel_password: Option<String>,
    /// The password clients must give (`AUTH <password>`), the proxy's own.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "HAPROXY_RS_REQUIREPASS",
        hide_env_values = true
    )]
    pub requirepass: Option<String>,
    /// Who checks the clients' credentials: `backend` (the master, the default behind a
    /// password-protected backend), `proxy` (`[auth]` users) or `none`.
    #[arg(
        long,
        value_name = "MODE",
        env = "HAPROXY_RS_AUTH_MODE",
        value_parser = ["backend", "proxy", "none"]
    )]
    pub auth_mode: Option<String>,
    /// The token admin actions need.
    #[command(flatten)]
    pub admin: AdminTokenArg,
    /// The TLS keys.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The TLS flags of `haproxy-rs run`: `--tls-*` for the client endpoints (`[tls]`, the proxy's
/// own, `HAPROXY_RS_TLS_*`), `--backend-tls*` and `--sentinel-tls*` for the connections to the
/// servers and to the sentinels (`tls*` of `[backend]` and `[sentinel]`, `REDIS_TLS_*` and
/// `REDIS_SENTINEL_TLS_*`, like `REDIS_PASSWORD`). A switch takes `=false` to turn off what the
/// file turns on.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// The proxy's certificate chain (PEM) for its client endpoints, which then speak TLS only.
    #[arg(long, value_name = "FILE", env = "HAPROXY_RS_TLS_CERT_FILE")]
    pub tls_cert_file: Option<String>,
    /// The private key (PEM) of `--tls-cert-file`.
    #[arg(long, value_name = "FILE", env = "HAPROXY_RS_TLS_KEY_FILE")]
    pub tls_key_file: Option<String>,
    /// CA certificates (PEM) that sign client certificates.
    #[arg(long, value_name = "FILE", env = "HAPROXY_RS_TLS_CA_FILE")]
    pub tls_ca_file: Option<String>,
    /// Refuse clients without a certificate signed by `--tls-ca-file` (mutual TLS).
    #[arg(long, value_name = "BOOL", env = "HAPROXY_RS_TLS_CLIENT_AUTH", num_args = 0..=1,
        require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub tls_client_auth: Option<bool>,
    /// Close a client that has not finished the TLS handshake within this many milliseconds.
    #[arg(long, value_name = "MS", env = "HAPROXY_RS_TLS_HANDSHAKE_TIMEOUT_MS")]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// TLS to the Redis servers.
    #[arg(long, value_name = "BOOL", env = "REDIS_TLS", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub backend_tls: Option<bool>,
    /// CA certificates (PEM) that sign the Redis servers' certificates.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_CA_FILE")]
    pub backend_tls_ca_file: Option<String>,
    /// Client certificate (PEM) for servers with `tls-auth-clients yes`.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_CERT_FILE")]
    pub backend_tls_cert_file: Option<String>,
    /// The private key (PEM) of `--backend-tls-cert-file`.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_KEY_FILE")]
    pub backend_tls_key_file: Option<String>,
    /// Name verified in the servers' certificates (and sent as SNI); default each server's host.
    #[arg(long, value_name = "NAME", env = "REDIS_TLS_SERVER_NAME")]
    pub backend_tls_server_name: Option<String>,
    /// TLS to the sentinels (Sentinel mode).
    #[arg(long, value_name = "BOOL", env = "REDIS_SENTINEL_TLS", num_args = 0..=1,
        require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub sentinel_tls: Option<bool>,
    /// CA certificates (PEM) that sign the sentinels' certificates.
    #[arg(long, value_name = "FILE", env = "REDIS_SENTINEL_TLS_CA_FILE")]
    pub sentinel_tls_ca_file: Option<String>,
    /// Client certificate (PEM) for sentinels that ask for one.
    #[arg(long, value_name = "FILE", env = "REDIS_SENTINEL_TLS_CERT_FILE")]
    pub sentinel_tls_cert_file: Option<String>,
    /// The private key (PEM) of `--sentinel-tls-cert-file`.
    #[arg(long, value_name = "FILE", env = "REDIS_SENTINEL_TLS_KEY_FILE")]
    pub sentinel_tls_key_file: Option<String>,
    /// Name verified in the sentinels' certificates (and sent as SNI).
    #[arg(long, value_name = "NAME", env = "REDIS_SENTINEL_TLS_SERVER_NAME")]
    pub sentinel_tls_server_name: Option<String>,
}

impl TlsArgs {
    /// Lays the given TLS flags over `cfg`. Any `--tls-*` turns TLS on for the client endpoints
    /// (`[tls]`, with its defaults for the keys not given); the sentinel ones apply in Sentinel
    /// mode, as `--sentinel-password` does. Validation checks the result as it checks the file.
    fn apply(&self, cfg: &mut Config) {
        let listener = self.tls_cert_file.is_some()
            || self.tls_key_file.is_some()
            || self.tls_ca_file.is_some()
            || self.tls_client_auth.is_some()
            || self.tls_handshake_timeout_ms.is_some();
        if listener {
            let t = cfg.tls.get_or_insert_with(TlsConfig::default);
            set(&mut t.cert_file, &self.tls_cert_file);
            set(&mut t.key_file, &self.tls_key_file);
            set_some(&mut t.ca_file, &self.tls_ca_file);
            set(&mut t.client_auth, &self.tls_client_auth);
            set(&mut t.handshake_timeout_ms, &self.tls_handshake_timeout_ms);
        }
        let b = &mut cfg.backend;
        set(&mut b.tls, &self.backend_tls);
        set_some(&mut b.tls_ca_file, &self.backend_tls_ca_file);
        set_some(&mut b.tls_cert_file, &self.backend_tls_cert_file);
        set_some(&mut b.tls_key_file, &self.backend_tls_key_file);
        set_some(&mut b.tls_server_name, &self.backend_tls_server_name);
        if let Some(s) = cfg.sentinel.as_mut() {
            set(&mut s.tls, &self.sentinel_tls);
            set_some(&mut s.tls_ca_file, &self.sentinel_tls_ca_file);
            set_some(&mut s.tls_cert_file, &self.sentinel_tls_cert_file);
            set_some(&mut s.tls_key_file, &self.sentinel_tls_key_file);
            set_some(&mut s.tls_server_name, &self.sentinel_tls_server_name);
        }
    }
}

/// `key = flag` when the flag was given.
fn set<T: Clone>(key: &mut T, flag: &Option<T>) {
    if let Some(v) = flag {
        *key = v.clone();
    }
}

/// `key = Some(flag)` when the flag was given.
fn set_some<T: Clone>(key: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        key.clone_from(flag);
    }
}

impl RunArgs {
    /// Runs the proxy until a shutdown signal: builds the runtime, serves, maps errors to exit codes
    /// (64, EX_USAGE, for a bad configuration).
    pub fn execute(self) -> std::process::ExitCode {
        use std::process::ExitCode;
        let cfg = match self.to_config() {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("haproxy-rs: {e}");
                return ExitCode::from(64);
            }
        };
        // Sessions run on their own threads (`threads`); this runtime runs listeners and the
        // topology.
        let Some(runtime) = small_runtime() else {
            return ExitCode::FAILURE;
        };
        runtime.block_on(async {
            let token = tokio_util::sync::CancellationToken::new();
            tokio::spawn(crate::shutdown::on_signal(token.clone()));
            match crate::run(cfg, token).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("haproxy-rs: {e}");
                    ExitCode::FAILURE
                }
            }
        })
    }

    /// The config file (or the defaults) with every given flag and variable laid over it, validated.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or the result does not validate.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.listen {
            cfg.listen = v.clone();
        }
        if let Some(v) = &self.read_listen {
            cfg.read_listen = Some(v.clone());
        }
        if let Some(n) = self.threads {
            cfg.threads = n;
        }
        if let Some(v) = &self.stats {
            cfg.stats = crate::config::stats_setting(v);
        }
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if !sentinels.is_empty() || self.master_name.is_some() {
            let s = cfg.sentinel.get_or_insert_with(SentinelConfig::default);
            if !sentinels.is_empty() {
                s.addrs = sentinels;
            }
            if let Some(name) = &self.master_name {
                s.master_name = name.clone();
            }
        }
        if !self.servers.is_empty() {
            cfg.servers = self.servers.iter().map(|s| s.trim().to_string()).collect();
        }
        let seeds: Vec<String> = self
            .cluster
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if !seeds.is_empty() {
            cfg.cluster
                .get_or_insert_with(crate::config::ClusterConfig::default)
                .seeds = seeds;
        }
        if let Some(p) = &self.password {
            cfg.backend.password = Some(MaskedString::new(p.clone()));
        }
        if let Some(p) = &self.sentinel_password {
            if let Some(s) = cfg.sentinel.as_mut() {
                s.password = Some(MaskedString::new(p.clone()));
            }
        }
        if let Some(p) = &self.requirepass {
            cfg.auth.requirepass = Some(MaskedString::new(p.clone()));
        }
        cfg.auth.mode = match self.auth_mode.as_deref() {
            Some("backend") => Some(AuthMode::Backend),
            Some("proxy") => Some(AuthMode::Proxy),
            Some("none") => Some(AuthMode::None),
            _ => cfg.auth.mode,
        };
        if let Some(t) = &self.admin.admin_token {
            cfg.admin_token = Some(MaskedString::new(t.clone()));
        }
        self.tls.apply(&mut cfg);
        crate::check_config(&cfg)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["haproxy-rs", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Run(a) => a,
            Command::Bench(_) | Command::Switchover(_) => unreachable!("parsed `run`"),
        }
    }

    #[test]
    fn flags_alone_make_a_config() {
        let cfg = run_args(&[
            "--listen",
            ":7001",
            "--sentinel",
            "127.0.0.1:26379",
            "--sentinel",
            "127.0.0.1:26380",
            "--master-name",
            "cache",
        ])
        .to_config()
        .unwrap();
        assert_eq!(cfg.listen, ":7001");
        let s = cfg.sentinel.unwrap();
        assert_eq!(s.addrs.len(), 2);
        assert_eq!(s.master_name, "cache");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("haproxy-rs-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "listen = \":7000\"\nservers = [\"127.0.0.1:1\"]\n").unwrap();
        let cfg = run_args(&["-c", path.to_str().unwrap(), "--listen", ":7002"])
            .to_config()
            .unwrap();
        assert_eq!(cfg.listen, ":7002");
        assert_eq!(cfg.servers, vec!["127.0.0.1:1".to_string()]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn requirepass_sets_the_clients_password_apart_from_the_servers() {
        let cfg = run_args(&[
            "--servers",
            "127.0.0.1:1",
            "--requirepass",
            "c",
            "--password",
            "b",
        ])
        .to_config()
        .unwrap();
        assert_eq!(cfg.auth.requirepass.as_ref().map(|p| p.expose()), Some("c"));
        assert_eq!(cfg.backend.password.as_ref().map(|p| p.expose()), Some("b"));
    }

    #[test]
    fn auth_mode_flag_overrides_the_default_and_is_checked() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["--servers", "127.0.0.1:1", "--password", "b"];
            args.extend_from_slice(extra);
            run_args(&args).to_config()
        };
        let mode = |extra: &[&str]| parse(extra).unwrap().auth.mode;
        assert_eq!(mode(&[]), None);
        assert_eq!(mode(&["--auth-mode", "none"]), Some(AuthMode::None));
        let err = parse(&["--auth-mode", "proxy"]).unwrap_err().to_string();
        assert!(
            err.contains("auth.mode") && err.contains("requirepass"),
            "{err}"
        );
        assert!(Cli::try_parse_from(["haproxy-rs", "run", "--auth-mode", "open"]).is_err());
    }

    #[test]
    fn tls_flags_set_the_three_legs_apart() {
        let cfg = run_args(&[
            "--sentinel",
            "127.0.0.1:26379",
            "--tls-cert-file",
            "proxy.pem",
            "--tls-key-file",
            "proxy.key",
            "--tls-ca-file",
            "clients-ca.pem",
            "--tls-client-auth",
            "--tls-handshake-timeout-ms",
            "2000",
            "--backend-tls",
            "--backend-tls-ca-file",
            "redis-ca.pem",
            "--backend-tls-cert-file",
            "client.pem",
            "--backend-tls-key-file",
            "client.key",
            "--backend-tls-server-name",
            "redis.internal",
            "--sentinel-tls=yes",
            "--sentinel-tls-ca-file",
            "sentinel-ca.pem",
            "--sentinel-tls-server-name",
            "sentinel.internal",
        ])
        .to_config()
        .unwrap();
        let t = cfg.tls.as_ref().unwrap();
        assert_eq!(
            (t.cert_file.as_str(), t.key_file.as_str()),
            ("proxy.pem", "proxy.key")
        );
        assert_eq!(t.ca_file.as_deref(), Some("clients-ca.pem"));
        assert!(t.client_auth);
        assert_eq!(t.handshake_timeout_ms, 2000);
        let b = cfg.backend.client_tls().unwrap();
        assert_eq!(b.ca_file, "redis-ca.pem");
        assert_eq!(b.cert_file.as_deref(), Some("client.pem"));
        assert_eq!(b.key_file.as_deref(), Some("client.key"));
        assert_eq!(b.server_name.as_deref(), Some("redis.internal"));
        let s = cfg.sentinel.unwrap().client_tls().unwrap();
        assert_eq!(s.ca_file, "sentinel-ca.pem");
        assert_eq!(s.cert_file, None);
        assert_eq!(s.server_name.as_deref(), Some("sentinel.internal"));
    }

    #[test]
    fn tls_flags_override_the_file_and_are_checked_like_it() {
        let dir = std::env::temp_dir().join(format!("haproxy-rs-cli-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "servers = [\"127.0.0.1:1\"]\n[tls]\ncert_file = \"a.pem\"\nkey_file = \"a.key\"\n\
             [backend]\ntls = true\ntls_ca_file = \"ca.pem\"\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        // `tls = false` over the file's `tls_ca_file` is refused, as it is in the file.
        let cfg =
            run_args(&["-c", file, "--tls-cert-file", "b.pem", "--backend-tls=off"]).to_config();
        let err = cfg.unwrap_err().to_string();
        assert!(
            err.contains("backend.tls"),
            "the file's tls_ca_file stays: {err}"
        );
        let cfg = run_args(&[
            "-c",
            file,
            "--tls-cert-file",
            "b.pem",
            "--tls-client-auth=false",
        ])
        .to_config()
        .unwrap();
        let t = cfg.tls.unwrap();
        assert_eq!(
            (t.cert_file.as_str(), t.key_file.as_str()),
            ("b.pem", "a.key")
        );
        assert!(cfg.backend.client_tls().is_some());
        // Without a key the client endpoints cannot speak TLS: refused with the key's name.
        let err = run_args(&["--servers", "127.0.0.1:1", "--tls-cert-file", "c.pem"])
            .to_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.key_file"), "{err}");
        assert!(Cli::try_parse_from(["haproxy-rs", "run", "--backend-tls=maybe"]).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn tls_flags_have_their_variables() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        let env = |flag: &str| {
            run.get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .and_then(|a| a.get_env())
                .and_then(|e| e.to_str())
                .map(str::to_string)
        };
        for (flag, var) in [
            ("tls-cert-file", "HAPROXY_RS_TLS_CERT_FILE"),
            ("tls-key-file", "HAPROXY_RS_TLS_KEY_FILE"),
            ("tls-ca-file", "HAPROXY_RS_TLS_CA_FILE"),
            ("tls-client-auth", "HAPROXY_RS_TLS_CLIENT_AUTH"),
            (
                "tls-handshake-timeout-ms",
                "HAPROXY_RS_TLS_HANDSHAKE_TIMEOUT_MS",
            ),
            ("backend-tls", "REDIS_TLS"),
            ("backend-tls-ca-file", "REDIS_TLS_CA_FILE"),
            ("backend-tls-cert-file", "REDIS_TLS_CERT_FILE"),
            ("backend-tls-key-file", "REDIS_TLS_KEY_FILE"),
            ("backend-tls-server-name", "REDIS_TLS_SERVER_NAME"),
            ("sentinel-tls", "REDIS_SENTINEL_TLS"),
            ("sentinel-tls-ca-file", "REDIS_SENTINEL_TLS_CA_FILE"),
            ("sentinel-tls-cert-file", "REDIS_SENTINEL_TLS_CERT_FILE"),
            ("sentinel-tls-key-file", "REDIS_SENTINEL_TLS_KEY_FILE"),
            ("sentinel-tls-server-name", "REDIS_SENTINEL_TLS_SERVER_NAME"),
        ] {
            assert_eq!(env(flag).as_deref(), Some(var), "--{flag}");
        }
    }

    #[test]
    fn admin_token_flag_sets_the_key() {
        let cfg = run_args(&["--servers", "127.0.0.1:1", "--admin-token", "t0k"])
            .to_config()
            .unwrap();
        assert_eq!(cfg.admin_token.as_ref().map(|t| t.expose()), Some("t0k"));
        assert!(!format!("{cfg:?}").contains("t0k"));
        let err = run_args(&["--servers", "127.0.0.1:1", "--admin-token", ""])
            .to_config()
            .unwrap_err();
        assert!(err.to_string().contains("admin_token"), "{err}");
        assert_eq!(
            switchover::tests::admin_token_variable("run").as_deref(),
            Some("HAPROXY_RS_ADMIN_TOKEN")
        );
    }

    #[test]
    fn log_format_is_text_or_json_before_or_after_the_subcommand() {
        use clap::CommandFactory;
        let format = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.log_format);
        assert_eq!(format(&["haproxy-rs", "run"]).unwrap(), LogFormat::Text);
        assert_eq!(
            format(&["haproxy-rs", "--log-format", "json", "run"]).unwrap(),
            LogFormat::Json
        );
        assert_eq!(
            format(&["haproxy-rs", "switchover", "--log-format=json"]).unwrap(),
            LogFormat::Json
        );
        assert!(format(&["haproxy-rs", "run", "--log-format", "xml"]).is_err());
        let cli = Cli::command();
        let arg = cli
            .get_arguments()
            .find(|a| a.get_long() == Some("log-format"));
        assert_eq!(
            arg.and_then(|a| a.get_env()).and_then(|e| e.to_str()),
            Some("HAPROXY_RS_LOG_FORMAT")
        );
    }

    #[test]
    fn a_missing_backend_is_refused_with_its_key() {
        let err = run_args(&["--listen", ":7003"]).to_config().unwrap_err();
        assert!(err.to_string().contains("sentinel.addrs"), "{err}");
    }
}
