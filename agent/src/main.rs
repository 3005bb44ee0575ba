//! `vigil-agent`: the command line. Everything it does lives in the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vigil_agent::config::Settings;

// Shipping builds and drops many small label strings per batch (every
// scraped series' labels, every batch); mimalloc spends far less CPU on that
// than glibc's allocator (measured with `benches/app_scrape.rs`).
vigil_common::mimalloc_lazy_commit!();

/// vigil's node agent: scrapes this host's metrics and ships them to
/// vigil-collector over gRPC, exactly once (a disk buffer holds what the
/// collector has not acknowledged).
///
/// Every setting has a YAML key (the flag's name with `_`), a flag and a
/// `VIGIL_*` environment variable; flags win over the environment, which wins
/// over the file. Durations are written like `10s`, `5m`; sizes like `256MiB`.
#[derive(Parser, Debug)]
#[command(name = "vigil-agent", version, about, long_about)]
struct Cli {
    /// YAML configuration file.
    #[arg(long, env = "VIGIL_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent: scrape every --interval and ship to the collector (the default).
    Run,
    /// Scrape this host once and print it in Prometheus text format.
    Scrape,
    /// Check a configuration file and print the effective settings.
    CheckConfig,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match cli.settings.load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-agent: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = vigil_common::logging::init(config.log_format, config.log_level.as_deref()) {
        eprintln!("vigil-agent: {e}");
        return std::process::ExitCode::from(2);
    }
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => vigil_agent::run::main(config),
        Command::Scrape => vigil_agent::run::scrape_once(&config).map(|text| print!("{text}")),
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
