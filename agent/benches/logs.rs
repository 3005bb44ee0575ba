//! Log tailer benchmark (a bench binary, `cargo bench -p vigil-agent --bench logs`):
//!
//! 1. throughput: CRI lines of ~200 bytes read from a file, parsed, turned into
//!    `LogRecord` batches and handed over (and acknowledged), on one thread:
//!    lines/s and MiB/s of wall time and per CPU second;
//! 2. the same through `Tailer::run` and its bounded channel, with a consumer
//!    task acknowledging every batch (a current-thread runtime);
//! 3. memory: peak RSS while `Tailer::run` drains a 1 GiB backlog.
//!
//! Sizes can be changed with `VIGIL_BENCH_MIB` (default 512) and
//! `VIGIL_BENCH_BACKLOG_MIB` (default 1024). Files go to a temp folder
//! (`TMPDIR`), removed at the end.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

// The allocator the agent binary runs with, set up the same way (see
// `src/main.rs`): the figures are of what users run (glibc's allocator makes
// the tailer figure bimodal, 2 or 7 CPU-seconds for the same 512 MiB).
vigil_common::mimalloc_lazy_commit!();
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_agent::config::LogsConfig;
use vigil_agent::logs::checkpoint::Checkpoints;
use vigil_agent::logs::discovery::Discovery;
use vigil_agent::logs::tail::{Core, Opts};
use vigil_agent::logs::{LogMetrics, Tailer};
use vigil_agent::ship::{LogAck, LogRecord};

const MIB: f64 = 1024.0 * 1024.0;

fn env_mib(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `mib` MiB of ~200-byte CRI lines (JSON, logfmt and plain messages,
/// a few split into partial pieces) to a kubelet-layout file; returns lines.
fn generate(root: &Path, mib: u64) -> u64 {
    let dir = root.join("var/log/pods/bench_app-5d9f_0a1b2c3d-0000-4000-8000-000000000001/app");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = std::fs::File::create(dir.join("0.log")).expect("create");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let target = mib << 20;
    let mut written = 0u64;
    let mut n = 0u64;
    while written < target {
        let ns = n * 1_000;
        let secs = ns / 1_000_000_000;
        let ts = format!(
            "2026-11-22T{:02}:{:02}:{:02}.{:09}Z",
            10 + (secs / 3600) % 14,
            (secs / 60) % 60,
            secs % 60,
            ns % 1_000_000_000
        );
        let line = match n % 10 {
            0..=5 => format!(
                "{ts} stdout F {{\"level\":\"info\",\"msg\":\"request served\",\"path\":\"/api/v1/items/{n}\",\"status\":200,\"duration_ms\":12.5,\"trace\":\"{:016x}\"}}\n",
                n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ),
            6 | 7 => format!(
                "{ts} stderr F time=\"{ts}\" level=warn msg=\"slow upstream response\" upstream=10.0.{}.{} took={}ms retry=1 id={n}\n",
                n % 250,
                n % 200,
                n % 997
            ),
            8 => {
                format!(
                    "{ts} stdout P E1122 10:48:32.523200    1 controller.go:114] error syncing 'default/web-{n}': "
                ) + &format!(
                    "\n{ts} stdout F failed to update status: the object has been modified; please retry\n"
                )
            }
            _ => format!(
                "{ts} stdout F 10.1.2.3 - - [22/Nov/2026:10:48:32 +0000] \"GET /index.html?id={n} HTTP/1.1\" 200 612 \"-\" \"curl/8.5.0\"\n"
            ),
        };
        w.write_all(line.as_bytes()).expect("write");
        written += line.len() as u64;
        n += 1;
    }
    w.flush().expect("flush");
    n
}

fn cfg() -> LogsConfig {
    LogsConfig {
        paths: vec![],
        excludes: vec![],
        default_paths: true,
        read_from_start: true,
        max_line_bytes: 256 << 10,
        max_open_files: 1024,
    }
}

/// (utime + stime) of this process in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields 14 and 15 of stat; after the comm they are at 11 and 12
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The highest end offset per source of a batch (what a shipper acks).
fn acks_of(batch: &[LogRecord]) -> Vec<LogAck> {
    let mut acks: Vec<LogAck> = Vec::new();
    for e in batch {
        match acks.iter_mut().find(|a| a.source == *e.source) {
            Some(a) => a.end_offset = a.end_offset.max(e.end_offset),
            None => acks.push(LogAck {
                source: (*e.source).clone(),
                end_offset: e.end_offset,
            }),
        }
    }
    acks
}

fn bench_core(root: &Path, state: &Path, bytes: u64, messages: u64) {
    let discovery = Discovery::new(root, &[], &[], true).expect("discovery");
    let (ckpt, first) = Checkpoints::load(state).expect("checkpoints");
    let metrics = Arc::new(LogMetrics::default());
    let mut core = Core::new(
        Opts {
            max_line_bytes: 256 << 10,
            max_open_files: 1024,
            read_from_start: true,
        },
        discovery,
        ckpt,
        first,
        metrics.clone(),
    );
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut entries = 0u64;
    let mut idle = 0;
    while metrics
        .read_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
        < bytes
        || idle < 2
    {
        let out = core.step(true);
        if out.idle {
            idle += 1;
        }
        for b in out.batches {
            entries += b.len() as u64;
            core.apply_acks(acks_of(&b));
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let mib = bytes as f64 / MIB;
    println!(
        "core, one thread: {mib:.0} MiB, {messages} messages -> {entries} entries in {wall:.2} s wall / {cpu:.2} s CPU: \
         {:.0} MiB/s, {:.2} M lines/s (wall); {:.0} MiB per CPU second",
        mib / wall,
        entries as f64 / wall / 1e6,
        mib / cpu.max(1e-9)
    );
}

fn bench_tailer(root: &Path, state: &Path, bytes: u64, label: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tailer = Tailer::new(&cfg(), root, state).expect("tailer");
        let metrics = tailer.metrics();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<LogRecord>>(8);
        let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(tailer.run(tx, ack_rx, shutdown.clone()));
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampler = {
            let peak = peak.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while n < 100_000 && peak.load(std::sync::atomic::Ordering::Relaxed) != u64::MAX {
                    let r = rss_kib();
                    peak.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                    n += 1;
                }
            })
        };
        let rss0 = rss_kib();
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let mut entries = 0u64;
        let mut handed = 0u64;
        while handed < bytes {
            let Some(b) = rx.recv().await else { break };
            entries += b.len() as u64;
            let _ = ack_tx.send(acks_of(&b));
            handed = b.last().map_or(handed, |e| e.end_offset);
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        shutdown.cancel();
        let _ = task.await;
        let max_rss = peak.swap(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        let _ = sampler.join();
        let mib = bytes as f64 / MIB;
        println!(
            "{label}: {mib:.0} MiB -> {entries} entries in {wall:.2} s wall / {cpu:.2} s CPU: {:.0} MiB/s, {:.2} M entries/s; \
             RSS before {:.1} MiB, peak while draining {:.1} MiB; read {} bytes",
            mib / wall,
            entries as f64 / wall / 1e6,
            rss0 as f64 / 1024.0,
            max_rss as f64 / 1024.0,
            metrics.read_bytes.load(std::sync::atomic::Ordering::Relaxed)
        );
    });
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let mib = env_mib("VIGIL_BENCH_MIB", 512);
    let backlog = env_mib("VIGIL_BENCH_BACKLOG_MIB", 1024);
    let dir = tempfile::tempdir().expect("tempdir");

    let root = dir.path().join("tput");
    let messages = generate(&root, mib);
    let bytes = std::fs::metadata(
        root.join("var/log/pods/bench_app-5d9f_0a1b2c3d-0000-4000-8000-000000000001/app/0.log"),
    )
    .expect("stat")
    .len();
    let state = dir.path().join("state-core");
    bench_core(&root, &state, bytes, messages);
    let state = dir.path().join("state-tailer");
    bench_tailer(&root, &state, bytes, "Tailer::run + channel + acks");
    std::fs::remove_dir_all(&root).ok();

    let root = dir.path().join("backlog");
    generate(&root, backlog);
    let bytes = std::fs::metadata(
        root.join("var/log/pods/bench_app-5d9f_0a1b2c3d-0000-4000-8000-000000000001/app/0.log"),
    )
    .expect("stat")
    .len();
    let state = dir.path().join("state-backlog");
    bench_tailer(
        &root,
        &state,
        bytes,
        &format!("{backlog} MiB backlog drain"),
    );
}
