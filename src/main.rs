//! The `haproxy-rs` binary: parse flags, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use haproxy_rs::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    haproxy_rs::logging::init(cli.log.as_deref().unwrap_or("info"), cli.log_format);
    match cli.command {
        Command::Run(mut args) => {
            args.log = cli.log;
            args.execute()
        }
        Command::Bench(args) => haproxy_rs::bench::main(args),
        Command::Switchover(args) => args.execute(),
        Command::ImportHaproxy(args) => args.execute(),
    }
}
