//! Logs through the whole pipeline: the release agent tails a CRI log file of
//! ~200-byte lines (written before it starts: a backlog), ships every line over
//! gRPC (batches, zstd, disk buffer, acks) to the release collector, which
//! stores them. Reports the agent's CPU time per MiB and lines/s shipped,
//! its peak RSS, and the collector's CPU per MiB stored.
//!
//! `cargo build --release --bins && cargo bench -p vigil-e2e --bench logs_pipeline`
//! (`LOGS_PIPELINE_MIB`, default 512).

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::time::{Duration, Instant};

use vigil_e2e::{Proc, bin, free_port, get, wait_for};

fn cpu_seconds(pid: u32) -> f64 {
    // utime + stime, fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 Hz)
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn rss_peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib: u64 = std::env::var("LOGS_PIPELINE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let logs = d.join("pods/ns_app_uid/app");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("0.log");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let mut bytes = 0u64;
    let mut lines = 0u64;
    while bytes < mib << 20 {
        let l = format!(
            "2026-11-22T12:00:00.{:09}Z stdout F level=info req={:016x} msg=\"GET /api/v1/orders 200\" user=u{} dur={}ms pad=abcdefghijklmnopqrstuvwxyz0123456789abcdefghijkl\n",
            lines % 1_000_000_000,
            lines.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            lines % 9973,
            lines % 5000
        );
        bytes += l.len() as u64;
        lines += 1;
        w.write_all(l.as_bytes()).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let (hp, gp) = (free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let c = Proc::start(
        "collector",
        &bin("vigil-collector"),
        &[
            "--http-listen".into(),
            http.clone(),
            "--grpc-listen".into(),
            format!("127.0.0.1:{gp}"),
            "--data-dir".into(),
            d.join("collector").display().to_string(),
            "--self-scrape-interval".into(),
            "0s".into(),
        ],
        &d.join("out"),
    );
    wait_for(Duration::from_secs(30), "collector ready", || {
        match get(&http, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let c_cpu0 = cpu_seconds(c.pid());
    let t0 = Instant::now();
    let a = Proc::start(
        "agent",
        &bin("vigil-agent"),
        &[
            "--collector".into(),
            format!("http://127.0.0.1:{gp}"),
            "--interval".into(),
            "1h".into(),
            "--http-listen".into(),
            "off".into(),
            "--log-default-paths".into(),
            "false".into(),
            "--log-path".into(),
            file.display().to_string(),
            "--state-dir".into(),
            d.join("agent").display().to_string(),
        ],
        &d.join("out"),
    );
    let stored = |http: &str| -> u64 {
        get(http, "/metrics")
            .ok()
            .and_then(|(_, m)| {
                m.lines()
                    .find(|l| l.starts_with("vigil_collector_log_stored_records_total "))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0) as u64
    };
    let mut last_report = Instant::now();
    loop {
        let n = stored(&http);
        if n >= lines {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            println!("timed out: {n} of {lines} lines stored");
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {n} / {lines}");
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t0.elapsed().as_secs_f64();
    let a_cpu = cpu_seconds(a.pid());
    let c_cpu = cpu_seconds(c.pid()) - c_cpu0;
    let m = bytes as f64 / 1048576.0;
    println!(
        "{lines} CRI lines, {m:.0} MiB, tailed → shipped → stored in {wall:.2} s ({:.0} MiB/s, {:.0} lines/s wall)",
        m / wall,
        lines as f64 / wall
    );
    println!(
        "agent: {a_cpu:.2} CPU s = {:.0} MiB per CPU second ({:.2} M lines/CPU-s); peak RSS {:.1} MiB",
        m / a_cpu,
        lines as f64 / a_cpu / 1e6,
        rss_peak_mib(a.pid())
    );
    println!(
        "collector: {c_cpu:.2} CPU s = {:.0} MiB per CPU second; peak RSS {:.1} MiB",
        m / c_cpu,
        rss_peak_mib(c.pid())
    );
}
