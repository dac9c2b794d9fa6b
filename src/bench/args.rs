//! Flags of `haproxy-rs bench` and `haproxy-rs bench merge`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::workload::{KeyDist, WorkloadKind};

/// Flags of `haproxy-rs bench`: a load run, or `bench merge`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `merge` instead of a load run.
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    /// The load run's flags.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Subcommands of `haproxy-rs bench`.
#[derive(Debug, Subcommand)]
pub enum BenchAction {
    /// Merge the `--json` files of several runs (several load generators) into one report.
    Merge(MergeArgs),
}

/// Flags of `haproxy-rs bench merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The `--json` files of the runs.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where the outputs of the merged report go.
    #[command(flatten)]
    pub out: OutputArgs,
}

/// Report files.
#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// Write the report as JSON (full histograms, mergeable with `bench merge`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the per-second timeline as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write a self-contained HTML report with SVG charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// How the failover is triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverKind {
    /// `SENTINEL FAILOVER <master-name>` sent to `--sentinel`.
    Planned,
    /// `SIGKILL` of the master process (local masters only), or `--failover-cmd`.
    Kill,
}

/// Flags of a load run.
#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// The RESP endpoint to load (haproxy-rs, HAProxy, twemproxy, Redis), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// Sentinels (repeat or comma-separate): the first finds the master when there is no --target and
    /// triggers a planned failover; the events of all are reported (only the leader publishes some).
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub sentinel: Vec<String>,
    /// A Redis Cluster node, HOST:PORT (repeat or comma-separate): a direct, cluster-aware run. Each
    /// connection learns the slot map (CLUSTER SLOTS), connects to every master, sends each command to
    /// its slot's master and splits MGET/MSET by slot; a MOVED reply counts as an error and points its
    /// slot at the node it names.
    #[arg(
        long,
        value_name = "HOST:PORT",
        value_delimiter = ',',
        conflicts_with_all = ["target", "sentinel", "compare", "failover", "failover_cmd", "track", "rps"]
    )]
    pub cluster: Vec<String>,
    /// Name of the master the sentinel monitors.
    #[arg(long, value_name = "NAME", default_value = "mymaster")]
    pub master_name: String,
    /// Where acknowledged writes are read back after a failover run (default: the master Sentinel names).
    #[arg(long, value_name = "HOST:PORT")]
    pub verify_target: Option<String>,
    /// Targets to run the same workload against in turn: NAME=HOST:PORT,NAME=HOST:PORT,...
    #[arg(long, value_name = "NAME=HOST:PORT,...", value_delimiter = ',', conflicts_with_all = ["target", "failover"])]
    pub compare: Vec<String>,
    /// Rounds of --compare (the targets alternate in each round).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub rounds: u32,
    /// ACL user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Password.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Connections, one task each.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 50)]
    pub clients: usize,
    /// Requests written per batch; in open loop, requests in flight per connection at most.
    #[arg(short = 'P', long, value_name = "N", default_value_t = 1)]
    pub pipeline: usize,
    /// How long to measure, e.g. 10s, 500ms, 2m.
    #[arg(short = 'd', long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests instead (bounded by --duration too).
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,
    /// Load before measuring.
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Worker threads (0: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Open loop: requests per second over all connections; latency counts from the intended send time.
    #[arg(long, value_name = "N")]
    pub rps: Option<u64>,
    /// Workload.
    #[arg(short = 'w', long, value_enum, default_value = "set")]
    pub workload: WorkloadKind,
    /// Writes to reads, W:R, for `mixed` and the failover workload.
    #[arg(long, value_name = "W:R", default_value = "1:1", value_parser = parse_ratio)]
    pub ratio: (u32, u32),
    /// Keys per command for `mget`, `mset`, `mixed` (MSET/MGET), `tx` (commands per MULTI).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub keys_per_command: usize,
    /// Distinct keys.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub keyspace: u64,
    /// Key distribution over the keyspace.
    #[arg(long, value_enum, default_value = "uniform")]
    pub key_dist: KeyDist,
    /// Exponent of the zipf distribution.
    #[arg(long, value_name = "S", default_value_t = 0.99)]
    pub zipf_exponent: f64,
    /// Value size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 3)]
    pub data_size: usize,
    /// Seed of the key and ratio generators (each connection derives its own).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// A request without a reply after this long counts as a `timeout` error and the connection is redone.
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Trigger a failover during the run (needs --sentinel); writes are then tracked and verified.
    #[arg(long, value_enum)]
    pub failover: Option<FailoverKind>,
    /// When to trigger it, counted from the start of measurement.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub failover_at: Duration,
    /// A shell command that triggers the failover instead (e.g. deleting a pod).
    #[arg(long, value_name = "CMD")]
    pub failover_cmd: Option<String>,
    /// Track writes (unique keys, read-back afterwards) without triggering a failover.
    #[arg(long)]
    pub track: bool,
    /// No live line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Report files.
    #[command(flatten)]
    pub out: OutputArgs,
}

impl LoadArgs {
    /// The first `--sentinel`.
    pub fn first_sentinel(&self) -> Option<&String> {
        self.sentinel.first()
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h`, or plain seconds (`1.5`).
///
/// # Errors
/// Not a number with one of those units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 10s or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "us" => n / 1_000_000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// Parses `W:R`, e.g. `1:10`; both zero is refused.
///
/// # Errors
/// Not two integers separated by `:`, or both zero.
pub fn parse_ratio(s: &str) -> Result<(u32, u32), String> {
    let (w, r) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not a ratio like 1:10"))?;
    let w: u32 = w
        .trim()
        .parse()
        .map_err(|_| format!("bad write part in `{s}`"))?;
    let r: u32 = r
        .trim()
        .parse()
        .map_err(|_| format!("bad read part in `{s}`"))?;
    if w == 0 && r == 0 {
        return Err("the ratio 0:0 sends nothing".into());
    }
    Ok((w, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ratios_parse() {
        assert_eq!(parse_ratio("1:10"), Ok((1, 10)));
        assert_eq!(parse_ratio("3:0"), Ok((3, 0)));
        assert!(parse_ratio("0:0").is_err());
        assert!(parse_ratio("1-2").is_err());
    }
}
