//! The `haproxy-rs` binary: parse flags, set up logging and the runtime, run.

use std::process::ExitCode;

use clap::Parser;
use haproxy_rs::cli::{Cli, Command};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let Command::Run(args) = cli.command;
    let cfg = match args.to_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("haproxy-rs: {e}");
            return ExitCode::from(64); // EX_USAGE: bad configuration
        }
    };
    // Sessions run on their own threads (`threads`); this runtime runs listeners and the topology.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haproxy-rs: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let token = CancellationToken::new();
        tokio::spawn(haproxy_rs::shutdown::on_signal(token.clone()));
        match haproxy_rs::run(cfg, token).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("haproxy-rs: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
