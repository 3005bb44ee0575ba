//! `vigil-loadgen`: plays N agents × S series over the real `vigil.v1` gRPC
//! ingest protocol against a collector, the way `vigil-agent` ships (see
//! [`agent`]), and reports ack latency, batches and samples sent and
//! acknowledged, and reconnections. Every series is a counter that rises by
//! one per interval, so `--verify-url` can check afterwards, series by
//! series, that the collector holds every value exactly once.
//!
//! # Layout
//! - [`agent`]: one simulated agent (generator + shipper).
//! - [`stats`]: counters and latency percentiles.
//! - [`verify`]: the loss/duplication check through the query API.
//!
//! Used by `scripts/soak.sh` (long runs whose figures are in
//! `docs/reliability.md`) and by the short soak tests in `tests/`.

mod agent;
mod stats;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vigil_common::Duration as Dur;

use agent::{Agent, Shared};
use stats::{Latency, Stats};
use vigil_common::time::now_ms;

/// Plays many vigil agents over gRPC and checks that nothing is lost.
///
/// Each simulated agent sends one batch per interval holding one sample of
/// each of its series; a series' value is the number of batches its agent has
/// generated (1, 2, 3, …). Unacknowledged batches stay buffered in memory and
/// are resent after a reconnection, exactly as the agent does with its disk
/// buffer. Runs until --duration has passed or SIGINT/SIGTERM, then stops
/// generating, waits until everything is acknowledged (at most
/// --drain-timeout), checks the collector's query API when --verify-url is
/// given, and prints a JSON summary. Exit status 0 when every batch was
/// acknowledged and the check (if any) found every sample exactly once, 1
/// otherwise, 2 on bad arguments.
#[derive(Parser, Debug)]
#[command(name = "vigil-loadgen", version)]
struct Args {
    /// The collector's gRPC address, e.g. http://127.0.0.1:9491.
    #[arg(long, env = "VIGIL_LOADGEN_COLLECTOR")]
    collector: String,
    /// Number of simulated agents (one gRPC stream each).
    #[arg(long, default_value_t = 10, env = "VIGIL_LOADGEN_AGENTS")]
    agents: usize,
    /// Series per agent.
    #[arg(long, default_value_t = 100, env = "VIGIL_LOADGEN_SERIES")]
    series: u32,
    /// Time between two batches of one agent (agents are spread over it).
    #[arg(long, default_value = "10s", env = "VIGIL_LOADGEN_INTERVAL")]
    interval: Dur,
    /// Stop generating after this long (default: run until SIGINT/SIGTERM).
    #[arg(long, env = "VIGIL_LOADGEN_DURATION")]
    duration: Option<Dur>,
    /// File holding the bearer token the collector expects (--token-file of
    /// the collector).
    #[arg(long, env = "VIGIL_LOADGEN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Agents are named <prefix>-<n> (the `node` label).
    #[arg(long, default_value = "loadgen", env = "VIGIL_LOADGEN_PREFIX")]
    prefix: String,
    /// The `run` label on every series and part of every agent id (default:
    /// the start time in hexadecimal); a new run id means new agents.
    #[arg(long, env = "VIGIL_LOADGEN_RUN")]
    run: Option<String>,
    /// Most unacknowledged batches in flight per agent (the agent's
    /// max_in_flight default).
    #[arg(long, default_value_t = 32)]
    max_in_flight: usize,
    /// Longest pause between reconnection attempts (the agent's is 30s).
    #[arg(long, default_value = "30s")]
    max_backoff: Dur,
    /// After generating stops, how long to wait for the last acks.
    #[arg(long, default_value = "10m")]
    drain_timeout: Dur,
    /// A progress line every so often (0: none).
    #[arg(long, default_value = "10s")]
    report_every: Dur,
    /// Rewritten every second with the current totals as JSON (for scripts
    /// that watch a run: unacked_batches, oldest_unacked_age_ms, …).
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Also write the final summary (JSON) to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// The collector's HTTP address (e.g. http://127.0.0.1:9490): after the
    /// drain, check every series through /api/v1/query.
    #[arg(long)]
    verify_url: Option<String>,
    /// Bearer token file for the queries of --verify-url.
    #[arg(long)]
    query_token_file: Option<PathBuf>,
}

/// The totals at one moment.
#[derive(Debug, Serialize)]
struct Status {
    time_ms: i64,
    elapsed_s: f64,
    agents: usize,
    series_per_agent: u32,
    connected_agents: usize,
    batches_generated: u64,
    batches_sent: u64,
    batches_acked: u64,
    samples_sent: u64,
    samples_acked: u64,
    unacked_batches: usize,
    oldest_unacked_age_ms: i64,
    duplicates_reported: u64,
    connects: u64,
    reconnects: u64,
    connect_failures: u64,
    stream_failures: u64,
    auth_failures: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    run: String,
    collector: String,
    interval_s: f64,
    generated_for_s: f64,
    drained: bool,
    drain_wait_s: f64,
    status: Status,
    ack_latency: Latency,
    verify: Option<verify::Verdict>,
    ok: bool,
}

fn read_token(p: &std::path::Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(p)
        .map_err(|e| anyhow::anyhow!("token file {}: {e}", p.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        anyhow::bail!("token file {} is empty", p.display());
    }
    Ok(t)
}

fn status(agents: &[Arc<Agent>], sh: &Shared, started: Instant) -> Status {
    let now = now_ms();
    let s = &sh.stats;
    let connects = Stats::get(&s.connects);
    // an agent's first connection is not a reconnection
    let reconnects = agents
        .iter()
        .map(|a| a.connects.load(Ordering::Relaxed).saturating_sub(1))
        .sum();
    Status {
        time_ms: now,
        elapsed_s: started.elapsed().as_secs_f64(),
        agents: agents.len(),
        series_per_agent: sh.series,
        connected_agents: agents
            .iter()
            .filter(|a| a.connected.load(Ordering::Relaxed))
            .count(),
        batches_generated: Stats::get(&s.batches_generated),
        batches_sent: Stats::get(&s.batches_sent),
        batches_acked: Stats::get(&s.batches_acked),
        samples_sent: Stats::get(&s.samples_sent),
        samples_acked: Stats::get(&s.samples_acked),
        unacked_batches: agents.iter().map(|a| a.unacked()).sum(),
        oldest_unacked_age_ms: agents
            .iter()
            .map(|a| a.oldest_unacked_age_ms(now))
            .max()
            .unwrap_or(0),
        duplicates_reported: Stats::get(&s.duplicates_reported),
        connects,
        reconnects,
        connect_failures: Stats::get(&s.connect_failures),
        stream_failures: Stats::get(&s.stream_failures),
        auth_failures: Stats::get(&s.auth_failures),
    }
}

fn write_json(path: &std::path::Path, v: &impl Serialize) {
    match serde_json::to_vec_pretty(v) {
        Ok(b) => {
            if let Err(e) = vigil_common::fs::write_atomic(path, &b) {
                tracing::warn!(file = %path.display(), error = %e, "cannot write");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode JSON"),
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    if args.agents == 0 {
        anyhow::bail!("--agents must be at least 1");
    }
    if args.series == 0 || args.series > 1 << 20 {
        anyhow::bail!("--series must be between 1 and {}", 1u32 << 20);
    }
    if args.interval.as_std().is_zero() {
        anyhow::bail!("--interval must be above 0");
    }
    if args.max_in_flight == 0 {
        anyhow::bail!("--max-in-flight must be at least 1");
    }
    if !(args.collector.starts_with("http://") || args.collector.starts_with("https://")) {
        anyhow::bail!(
            "--collector {:?}: expected a URL such as http://127.0.0.1:9491",
            args.collector
        );
    }
    tonic::transport::Endpoint::from_shared(args.collector.clone())
        .map_err(|e| anyhow::anyhow!("--collector {:?}: {e}", args.collector))?;
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    let verifier = match &args.verify_url {
        Some(u) => {
            let qt = args
                .query_token_file
                .as_deref()
                .map(read_token)
                .transpose()?;
            Some(verify::Verifier::new(u, qt)?)
        }
        None => None,
    };
    let run = args
        .run
        .clone()
        .unwrap_or_else(|| format!("{:x}", now_ms()));
    if run.is_empty()
        || !run
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!("--run {run:?}: use letters, digits, '-' and '_'");
    }
    let sh = Arc::new(Shared {
        collector: args.collector.clone(),
        token,
        run: run.clone(),
        series: args.series,
        interval: args.interval.as_std(),
        max_in_flight: args.max_in_flight,
        max_backoff: args.max_backoff.as_std().max(Duration::from_millis(50)),
        stats: Arc::new(Stats::default()),
    });
    let agents: Vec<Arc<Agent>> = (0..args.agents)
        .map(|i| Arc::new(Agent::new(i, &args.prefix, &run)))
        .collect();
    tracing::info!(run = %run, agents = args.agents, series = args.series,
        interval = %args.interval, collector = %args.collector, "starting");

    let started = Instant::now();
    let since_ms = now_ms();
    let stop = CancellationToken::new();
    let done = CancellationToken::new();
    vigil_common::shutdown::on_signals(stop.clone());
    let mut tasks = Vec::new();
    for a in &agents {
        let offset = sh.interval.mul_f64(a.index as f64 / args.agents as f64);
        tasks.push(tokio::spawn(a.clone().generate(
            sh.clone(),
            offset,
            stop.clone(),
        )));
        tasks.push(tokio::spawn(a.clone().ship(sh.clone(), done.clone())));
    }

    // progress and status until generation stops
    let report_every = args.report_every.as_std();
    let mut last_report = Instant::now();
    let deadline = args.duration.map(|d| started + d.as_std());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop.cancel();
        }
        let st = status(&agents, &sh, started);
        if let Some(p) = &args.status_file {
            write_json(p, &st);
        }
        if !report_every.is_zero() && last_report.elapsed() >= report_every {
            last_report = Instant::now();
            let w = sh.stats.take_window();
            tracing::info!(
                connected = st.connected_agents,
                generated = st.batches_generated,
                acked = st.batches_acked,
                unacked = st.unacked_batches,
                oldest_unacked_ms = st.oldest_unacked_age_ms,
                reconnects = st.reconnects,
                ack_p50_ms = w.p50_ms,
                ack_p99_ms = w.p99_ms,
                "progress"
            );
        }
        if stop.is_cancelled() {
            break;
        }
    }
    let generated_for = started.elapsed();
    tracing::info!("generation stopped; waiting for the last acks");
    let drain_started = Instant::now();
    let drain_deadline = drain_started + args.drain_timeout.as_std();
    let drained = loop {
        if agents.iter().all(|a| a.unacked() == 0) {
            break true;
        }
        if Instant::now() >= drain_deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(p) = &args.status_file
            && last_report.elapsed() >= Duration::from_secs(1)
        {
            last_report = Instant::now();
            write_json(p, &status(&agents, &sh, started));
        }
    };
    let drain_wait = drain_started.elapsed();
    done.cancel();
    for t in tasks {
        let _ = t.await;
    }
    if !drained {
        tracing::error!(
            unacked = agents.iter().map(|a| a.unacked()).sum::<usize>(),
            "drain timeout: batches left unacknowledged"
        );
    }
    let verdict = match &verifier {
        Some(v) => {
            let r = v.check(&agents, &run, args.series, since_ms).await?;
            if r.ok() {
                tracing::info!(
                    series = r.series_ok,
                    samples = r.samples_found,
                    "every sample found exactly once"
                );
            } else {
                tracing::error!(missing = r.samples_missing, extra = r.samples_extra,
                    bad_series = r.series_expected - r.series_ok, first = ?r.problems.first(), "check failed");
            }
            Some(r)
        }
        None => None,
    };
    let st = status(&agents, &sh, started);
    let ok = drained && verdict.as_ref().is_none_or(|v| v.ok());
    let summary = Summary {
        run,
        collector: args.collector.clone(),
        interval_s: sh.interval.as_secs_f64(),
        generated_for_s: generated_for.as_secs_f64(),
        drained,
        drain_wait_s: drain_wait.as_secs_f64(),
        status: st,
        ack_latency: sh.stats.latency(),
        verify: verdict,
        ok,
    };
    if let Some(p) = &args.status_file {
        write_json(p, &summary.status);
    }
    if let Some(p) = &args.summary {
        write_json(p, &summary);
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ok)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(e) = vigil_common::logging::init(vigil_common::logging::LogFormat::Text, None) {
        eprintln!("vigil-loadgen: {e}");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-loadgen: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("vigil-loadgen: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
