//! The `smolder` command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use smolder::cli::{AgentArgs, Cli, Commands};
use smolder::logging::{self, LogFormat};
use smolder::{agent, record};

fn main() -> ExitCode {
    smolder::allocator::configure();
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
            logging::init(LogFormat::Text, "warn", false);
            let config = args.into_config()?;
            let outcome = record::record(&config).context("smolder record")?;
            if !config.quiet {
                record::print_summary(&outcome, &config);
            }
            Ok(())
        }
        Commands::Agent(args) => run_agent(&args),
    }
}

fn run_agent(args: &AgentArgs) -> anyhow::Result<()> {
    let (env, unknown) = agent::env_overrides(std::env::vars());
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("SMOLDER_CONFIG").map(Into::into));
    let config = agent::load(path.as_deref(), &[env, args.overrides()])
        .context("invalid agent configuration")?;
    logging::init(config.log_format, "info", true);
    for name in unknown {
        tracing::warn!("ignoring unknown environment variable {name}");
    }
    if args.check {
        println!("{config}");
        return Ok(());
    }
    agent::run(config).context("smolder agent")
}
