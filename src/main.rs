//! The `haproxy-rs` binary: parse flags, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use haproxy_rs::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Run(args) => args.execute(),
        Command::Bench(args) => haproxy_rs::bench::main(args),
        Command::Switchover(args) => args.execute(),
    }
}
