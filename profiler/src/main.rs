//! The `smolder` command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use smolder::cli::{Cli, Commands};
use smolder::record;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("SMOLDER_LOG", "warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Commands::Record(args) => {
            let config = args.into_config()?;
            let outcome = record::record(&config).context("smolder record")?;
            if !config.quiet {
                record::print_summary(&outcome, &config);
            }
            Ok(())
        }
    }
}
