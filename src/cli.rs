//! Command-line interface: subcommands and the flags that lay over the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, MaskedString, SentinelConfig};

/// A RESP-aware Redis proxy that follows Sentinel: one endpoint, writes to the master, reads to replicas.
#[derive(Debug, Parser)]
#[command(name = "haproxy-rs", version, about)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `haproxy_rs=debug`.
    #[arg(long, global = true, env = "HAPROXY_RS_LOG", default_value = "info")]
    pub log: String,
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

/// Flags of `haproxy-rs switchover`.
#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// The running proxy's stats address (its admin endpoint is `POST /switchover` there).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8404")]
    pub stats: String,
}

impl SwitchoverArgs {
    /// Asks the proxy for a switchover and prints its report; fails unless it happened.
    pub fn execute(self) -> std::process::ExitCode {
        use std::process::ExitCode;
        let Some(runtime) = small_runtime() else {
            return ExitCode::FAILURE;
        };
        match runtime.block_on(post_switchover(&self.stats)) {
            Ok((200, body)) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Ok((status, body)) => {
                eprint!("haproxy-rs: switchover: HTTP {status}: {body}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("haproxy-rs: switchover: {}: {e}", self.stats);
                ExitCode::FAILURE
            }
        }
    }
}

/// A single-threaded runtime (the proxy's sessions have their own threads); `None`, reported,
/// if the OS refuses.
fn small_runtime() -> Option<tokio::runtime::Runtime> {
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

/// `POST /switchover` over a plain HTTP/1.1 connection; the status code and the body.
pub async fn post_switchover(addr: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let request =
        format!("POST /switchover HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(90),
        s.read_to_end(&mut response),
    )
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
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
    /// Stats page address, e.g. :8404.
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
            cfg.stats = (!v.is_empty() && v != "off").then(|| v.clone());
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
        cfg.validate()?;
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
    fn a_missing_backend_is_refused_with_its_key() {
        let err = run_args(&["--listen", ":7003"]).to_config().unwrap_err();
        assert!(err.to_string().contains("sentinel.addrs"), "{err}");
    }
}
