//! `vigil-collector`: the command line. Everything it does lives in the library.

use std::path::PathBuf;

// Ingest and queries allocate many small label strings; mimalloc spends a
// fraction of glibc's time on them (see docs/benchmarks.md, remote-write
// ingest). Freed memory goes back at once: a gateway forwarding 10,000
// series/s held 57–60 MiB with the agent's 100 ms delay, 46 MiB with 10 ms,
// 35 MiB with none (vmagent: 37–40), for the same steady-ingest CPU
// (`tests/benches/forward.rs`, `rw_steady.rs`; docs/forwarding.md).
vigil_common::mimalloc_lazy_commit!(purge_delay_ms = 0);

use clap::{Parser, Subcommand};
use vigil_collector::config::Settings;

/// vigil's collector: receives what vigil agents ship, stores it, serves it
/// like Prometheus (scrape, federation, query API, remote write), evaluates
/// alerting and recording rules and notifies Alertmanager.
///
/// Every setting has a YAML key (the flag's name with `_`), a flag and a
/// `VIGIL_*` environment variable; flags win over the environment, which wins
/// over the file. Durations are written like `10s`, `5m`; sizes like `16MiB`.
#[derive(Parser, Debug)]
#[command(name = "vigil-collector", version, about, long_about)]
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
    /// Run the collector (the default).
    Run,
    /// Check files without running anything.
    Check {
        #[command(subcommand)]
        what: CheckWhat,
    },
    /// Run unit tests.
    Test {
        #[command(subcommand)]
        what: TestWhat,
    },
}

#[derive(Subcommand, Debug)]
enum TestWhat {
    /// Run rule unit tests in promtool's format (same verdicts as
    /// `promtool test rules`); exits 1 when a test fails.
    Rules {
        /// Unit test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CheckWhat {
    /// Check a configuration file and print the effective settings.
    Config {
        /// The YAML file to check.
        file: PathBuf,
    },
    /// Check rule files as `promtool check rules` does; exits 1 on an error.
    Rules {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Check {
            what: CheckWhat::Rules { files },
        }) => {
            let ok = vigil_collector::rules::check_files(
                files,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            );
            return if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            };
        }
        Some(Command::Test {
            what: TestWhat::Rules { files },
        }) => {
            let ok = vigil_collector::rules::unittest::run_files(
                files,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            );
            return if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            };
        }
        _ => {}
    }
    if let Some(Command::Check {
        what: CheckWhat::Config { file },
    }) = &cli.command
    {
        return match cli.settings.load(Some(file)) {
            Ok(c) => {
                println!("{}: OK\n{c:#?}", file.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigil-collector: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = match cli.settings.load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-collector: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = vigil_common::logging::init(config.log_format, config.log_level.as_deref()) {
        eprintln!("vigil-collector: {e}");
        return std::process::ExitCode::from(2);
    }
    match vigil_collector::run::main(config, cli.config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-collector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
