//! `haproxy-rs bench`: load any RESP endpoint and measure throughput, latency and what a failover costs.
//!
//! - [`args`]: the flags; [`workload`]: what is sent (seeded generators, key distributions);
//!   [`stateful`]: transactions, streams and pub/sub.
//! - [`conn`]: a lean pipelined RESP connection; [`client`]: one load connection (closed or open loop);
//!   [`cluster`]: one cluster-aware load connection (`--cluster`: a connection per master, MGET/MSET split by slot).
//! - [`recorder`]: per-connection HDR histograms and the per-second timeline; [`hist`]: histogram helpers.
//! - [`sentinel`]: master lookup, failover trigger, `PSUBSCRIBE *` events; [`failover`]: what it cost.
//! - [`run`]: one run end to end; [`report`]: table, JSON, CSV; [`html`]: the SVG report;
//!   [`merge`]: several runs' JSON into one; [`compare`]: the same workload against several targets.

pub mod args;
pub mod client;
pub mod cluster;
pub mod compare;
pub mod conn;
pub mod failover;
pub mod hist;
pub mod html;
pub mod merge;
pub mod recorder;
pub mod report;
pub mod run;
pub mod sentinel;
pub mod stateful;
pub mod workload;

use std::process::ExitCode;

pub use args::{BenchAction, BenchArgs, LoadArgs};
pub use report::RunReport;
pub use run::run_load;

/// Runs `haproxy-rs bench` on its own runtime (`--threads` workers, one per core by default).
pub fn main(args: BenchArgs) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.load.threads > 0 {
        builder.worker_threads(args.load.threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haproxy-rs bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haproxy-rs bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs what `args` ask for and writes the report files.
///
/// # Errors
/// Bad flags, unreachable targets, unwritable files.
pub async fn execute(args: BenchArgs) -> anyhow::Result<()> {
    match args.action {
        Some(BenchAction::Merge(m)) => {
            let reports = m
                .files
                .iter()
                .map(|f| RunReport::read(f))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = merge::merge(&reports)?;
            print!("{}", merged.table());
            merged.write(&m.out)
        }
        None if !args.load.compare.is_empty() => compare::compare(&args.load).await,
        None => {
            let report = run_load(&args.load, "run", None).await?;
            print!("{}", report.table());
            report.write(&args.load.out)
        }
    }
}
