//! Remote-write ingest at a steady rate, side by side in one run, as the
//! whole processes users run: a real Prometheus scrapes `RW_STEADY_TARGETS`
//! targets × `RW_STEADY_SERIES` series (a small server in this bench, values
//! moving between scrapes) every `RW_STEADY_INTERVAL_S` seconds and
//! remote-writes the same stream to
//! - the release `vigil-collector` (defaults: WAL, store, self-scrape),
//! - VictoriaMetrics single-node (defaults),
//! - and, when `RW_STEADY_BASELINE` names another collector binary (an older
//!   build), that one too, so a change is measured against its predecessor
//!   in the same run.
//!
//! All unpinned. Over the same window after a warm-up: CPU seconds of each
//! receiver (utime + stime) per sample Prometheus delivered to it
//! (`prometheus_remote_storage_samples_total` for its URL), and resident
//! memory at the end (VmRSS) and at its peak (VmHWM).
//!
//! Run: `cargo build --release --bins && cargo bench -p vigil-e2e --bench rw_steady`
//! (`RW_STEADY_TARGETS` 20, `RW_STEADY_SERIES` 1000, `RW_STEADY_INTERVAL_S` 1,
//! `RW_STEADY_SECONDS` 60).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vigil_e2e::{Proc, bin, free_port, get, wait_for};

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// (CPU seconds, RSS KiB, peak RSS KiB) of a process.
fn usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (t(11) + t(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu, field("VmRSS:"), field("VmHWM:"))
}

/// Samples Prometheus has sent to the remote-write URL containing `port`.
fn sent(prom: &str, port: u16) -> f64 {
    let Ok((_, body)) = get(prom, "/metrics") else {
        return 0.0;
    };
    let needle = format!(":{port}/");
    body.lines()
        .filter(|l| {
            l.starts_with("prometheus_remote_storage_samples_total{") && l.contains(&needle)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One target's body: `series` gauges and counters in families of 10,
/// every value moving each scrape.
fn body(target: usize, series: usize, tick: u64) -> String {
    let mut s = String::with_capacity(series * 100);
    for f in 0..series.div_ceil(10) {
        let _ = writeln!(s, "# HELP bench_family_{f}_total A family of the bench.");
        let _ = writeln!(s, "# TYPE bench_family_{f}_total counter");
        for i in 0..10.min(series - f * 10) {
            let _ = writeln!(
                s,
                "bench_family_{f}_total{{shard=\"{i}\",path=\"/api/v1/items\",code=\"200\"}} {}",
                tick * (i as u64 + 1) + target as u64
            );
        }
    }
    s
}

async fn serve(targets: usize, series: usize) -> Vec<std::net::SocketAddr> {
    let tick = Arc::new(AtomicU64::new(0));
    let mut addrs = Vec::new();
    for t in 0..targets {
        let tick = tick.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let n = tick.fetch_add(1, Ordering::Relaxed);
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        body(t, series, n),
                    )
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    }
    addrs
}

struct Receiver {
    name: String,
    port: u16,
    proc: Proc,
}

fn ready(addr: &str, path: &str, what: &str) {
    wait_for(Duration::from_secs(60), what, || match get(addr, path) {
        Ok((200, _)) => Ok(()),
        o => Err(format!("{o:?}")),
    });
}

fn collector(dir: &Path, name: &str, program: &Path) -> Receiver {
    let (port, grpc) = (free_port(), free_port());
    let args = vec![
        "--http-listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc}"),
        "--data-dir".into(),
        dir.join(name).display().to_string(),
    ];
    let proc = Proc::start(name, program, &args, &dir.join("logs"));
    ready(&format!("127.0.0.1:{port}"), "/-/ready", name);
    Receiver {
        name: name.into(),
        port,
        proc,
    }
}

fn victoria(dir: &Path) -> Option<Receiver> {
    let program = Path::new("/usr/bin/victoria-metrics");
    if !program.exists() {
        eprintln!("no victoria-metrics binary: comparing without it");
        return None;
    }
    let port = free_port();
    let proc = Proc::start(
        "victoria-metrics",
        program,
        &[
            format!("-storageDataPath={}", dir.join("vm").display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-loggerLevel=WARN".into(),
        ],
        &dir.join("logs"),
    );
    ready(&format!("127.0.0.1:{port}"), "/health", "VictoriaMetrics");
    Some(Receiver {
        name: "victoria-metrics".into(),
        port,
        proc,
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let prometheus = Path::new("/usr/bin/prometheus");
    if !prometheus.exists() {
        eprintln!("skipping: no prometheus binary");
        return;
    }
    let targets = env("RW_STEADY_TARGETS", 20) as usize;
    let series = env("RW_STEADY_SERIES", 1000) as usize;
    let interval = env("RW_STEADY_INTERVAL_S", 1);
    let seconds = env("RW_STEADY_SECONDS", 60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addrs = rt.block_on(serve(targets, series));
    let dir = tempfile::tempdir().unwrap();

    let mut receivers = vec![collector(dir.path(), "vigil", &bin("vigil-collector"))];
    if let Ok(b) = std::env::var("RW_STEADY_BASELINE") {
        receivers.push(collector(dir.path(), "vigil-baseline", &PathBuf::from(b)));
    }
    receivers.extend(victoria(dir.path()));

    let static_targets: Vec<String> = addrs.iter().map(|a| format!("'{a}'")).collect();
    let mut cfg = format!(
        "global:\n  scrape_interval: {interval}s\n  scrape_timeout: {interval}s\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: [{}]\nremote_write:\n",
        static_targets.join(", ")
    );
    for r in &receivers {
        let _ = writeln!(
            cfg,
            "  - url: http://127.0.0.1:{}/api/v1/write\n    name: {}",
            r.port, r.name
        );
    }
    let pdir = dir.path().join("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(pdir.join("prometheus.yml"), &cfg).unwrap();
    let prom_port = free_port();
    let prom = format!("127.0.0.1:{prom_port}");
    let mut prom_child = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            pdir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .current_dir(&pdir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    wait_for(Duration::from_secs(90), "every receiver fed", || {
        let missing: Vec<&str> = receivers
            .iter()
            .filter(|r| sent(&prom, r.port) < (targets * series) as f64)
            .map(|r| r.name.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not yet: {missing:?}"))
        }
    });
    // Warm-up: every series created, the first WAL segments and head blocks
    // written, before the window opens.
    std::thread::sleep(Duration::from_secs(10 * interval));
    let before: Vec<_> = receivers
        .iter()
        .map(|r| (usage(r.proc.pid()), sent(&prom, r.port)))
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    let after: Vec<_> = receivers
        .iter()
        .map(|r| (usage(r.proc.pid()), sent(&prom, r.port)))
        .collect();

    println!(
        "remote-write ingest, Prometheus scraping {targets} targets x {series} series every {interval}s, {seconds}s window, unpinned:"
    );
    let mut per_sample = Vec::new();
    for (r, (b, a)) in receivers.iter().zip(before.iter().zip(&after)) {
        let samples = a.1 - b.1;
        let cpu = a.0.0 - b.0.0;
        let us = cpu / samples * 1e6;
        per_sample.push((r.name.clone(), us));
        println!(
            "  {:<17}: {samples:>9.0} samples, {cpu:>6.2} CPU-s, {us:>5.2} us/sample, RSS {:>6.1} MiB (peak {:>6.1})",
            r.name,
            a.0.1 as f64 / 1024.0,
            a.0.2 as f64 / 1024.0,
        );
    }
    if let Some((_, vm)) = per_sample.iter().find(|(n, _)| n == "victoria-metrics") {
        for (n, us) in per_sample.iter().filter(|(n, _)| n != "victoria-metrics") {
            println!("  {n} / victoria-metrics CPU per sample: {:.2}", us / vm);
        }
    }
    let _ = prom_child.kill();
    let _ = prom_child.wait();
}
