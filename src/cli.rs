//! Command-line interface: subcommands and the flags that lay over the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{AuthMode, Config, ConfigError, MaskedString, SentinelConfig};
use crate::logging::LogFormat;

mod import;
mod switchover;
mod tls;

pub use import::ImportArgs;
pub use switchover::{post_switchover, AdminTokenArg, SwitchoverArgs};
pub use tls::TlsArgs;

/// A RESP-aware Redis proxy that follows Sentinel: one endpoint, writes to the master, reads to replicas.
#[derive(Debug, Parser)]
#[command(name = "haproxy-rs", version, about)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `haproxy_rs=debug`; overrides the
    /// config's `log` (default `info`).
    #[arg(long, global = true, env = "HAPROXY_RS_LOG")]
    pub log: Option<String>,
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
    /// Translate an HAProxy config (haproxy.cfg) of the usual Redis shape into a haproxy-rs TOML
    /// config, saying on stderr (and in the TOML's first comments) what it could not translate.
    ImportHaproxy(ImportArgs),
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
    /// Take the listening sockets over from the proxy whose `[upgrade] socket` this is, then
    /// tell it to drain: a zero-downtime upgrade or restart on one host.
    #[arg(long, value_name = "PATH")]
    pub takeover: Option<PathBuf>,
    /// The global `--log` (`HAPROXY_RS_LOG`), laid over the config's `log` as the other flags are
    /// over theirs; `main` hands it over.
    #[arg(skip)]
    pub log: Option<String>,
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
        // Logging started with `--log` or `info`: from here on, the config's filter (the flag's
        // when given, which the config then holds).
        if let Err(e) = crate::logging::set_filter(&cfg.log) {
            eprintln!("haproxy-rs: config: `log`: {e}");
            return ExitCode::from(64);
        }
        // Sessions run on their own threads (`threads`); this runtime runs listeners and the
        // topology.
        let Some(runtime) = small_runtime() else {
            return ExitCode::FAILURE;
        };
        runtime.block_on(async {
            let token = tokio_util::sync::CancellationToken::new();
            tokio::spawn(crate::shutdown::on_signal(token.clone()));
            let takeover = self.takeover.clone();
            let source: crate::reload::ConfigSource = Box::new(move || self.to_config());
            match serve(cfg, token, takeover.as_deref(), source).await {
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
        if let Some(v) = &self.log {
            cfg.log.clone_from(v);
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

/// How long a new process waits to know its master (or every slot) before it tells the old one to
/// drain anyway.
const TAKEOVER_READY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the proxy until `token`, reloading from `source` on `SIGHUP` and `POST /reload`; with
/// `takeover`, on the listening sockets of the proxy serving that upgrade socket, which is told to
/// drain once this one is ready (knows its master, or every slot in cluster mode) or after
/// [`TAKEOVER_READY`].
async fn serve(
    cfg: Config,
    token: tokio_util::sync::CancellationToken,
    takeover: Option<&std::path::Path>,
    source: crate::reload::ConfigSource,
) -> Result<(), crate::StartError> {
    let mut launch = crate::Launch {
        reload: Some(source),
        ..crate::Launch::default()
    };
    let Some(path) = takeover else {
        let proxy = crate::start_with(cfg, token.clone(), launch).await?;
        if let Some(reloads) = proxy.reloads() {
            tokio::spawn(crate::reload::on_sighup(reloads, token));
        }
        proxy.wait().await;
        return Ok(());
    };
    let (takeover, inherited) = crate::upgrade::Takeover::connect(path)?;
    launch.inherited = inherited;
    let proxy = crate::start_with(cfg, token.clone(), launch).await?;
    if let Some(reloads) = proxy.reloads() {
        tokio::spawn(crate::reload::on_sighup(reloads, token));
    }
    let deadline = tokio::time::Instant::now() + TAKEOVER_READY;
    while !proxy.stats.snapshot().healthy() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if !proxy.stats.snapshot().healthy() {
        tracing::warn!("takeover: not ready yet; taking over anyway");
    }
    match tokio::task::spawn_blocking(move || takeover.finish()).await {
        Ok(Ok(())) => tracing::info!(path = %path.display(), "took over from the running proxy"),
        Ok(Err(e)) => tracing::warn!(error = %e, "takeover: the old proxy did not confirm"),
        Err(e) => tracing::warn!(error = %e, "takeover: the old proxy did not confirm"),
    }
    proxy.wait().await;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn run_args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["haproxy-rs", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Run(a) => a,
            Command::Bench(_) | Command::Switchover(_) | Command::ImportHaproxy(_) => {
                unreachable!("parsed `run`")
            }
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
    fn log_flag_overrides_the_files_log_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "log = \"warn\"\nservers = [\"127.0.0.1:1\"]\n").unwrap();
        let path = path.to_str().unwrap();
        assert_eq!(run_args(&["-c", path]).to_config().unwrap().log, "warn");
        let cli = Cli::try_parse_from(["haproxy-rs", "run", "-c", path, "--log", "debug"]).unwrap();
        let Command::Run(mut args) = cli.command else {
            unreachable!("parsed `run`")
        };
        assert_eq!(cli.log.as_deref(), Some("debug"));
        args.log = cli.log;
        assert_eq!(args.to_config().unwrap().log, "debug");
        args.log = Some("haproxy_rs=loud".into());
        assert!(args.to_config().unwrap_err().to_string().contains("`log`"));
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
