//! `vigil-agent`: the command line. Everything it does lives in the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vigil_agent::config::Settings;

/// Shipping builds and drops many small label strings per batch (every
/// scraped series' labels, every batch); mimalloc spends far less CPU on that
/// than glibc's allocator (measured with `benches/app_scrape.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

// mimalloc's own option call (its C API; the symbol is in the allocator the
// binary links).
#[allow(unsafe_code)]
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// mimalloc commits its arenas eagerly by default, and memory committed that
/// way is never given back: for an agent whose live heap is a few MiB, the
/// heap's high-water mark stays resident (27 of 38 MiB measured with
/// `benches/agent_node.rs`; 4.5 MiB with lazy commit, for the same CPU).
/// The option must be set before mimalloc reserves its first arena — before
/// the Rust runtime's first allocation — hence a constructor that runs ahead
/// of the default ones.
extern "C" fn lazy_arena_commit() {
    /// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e`.
    const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    // SAFETY: sets one integer option of the allocator this binary links;
    // nothing here allocates (that would start mimalloc before the option)
    #[allow(unsafe_code)]
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0)
    };
}

#[used]
#[allow(unsafe_code)]
#[unsafe(link_section = ".init_array.00100")]
static LAZY_ARENA_COMMIT: extern "C" fn() = lazy_arena_commit;

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
