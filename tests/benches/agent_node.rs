//! The agent as a whole process against node_exporter, side by side in one
//! run, unpinned, the way users run both: `vigil-agent` scrapes this host
//! every second (node, cgroup and process metrics) and ships to a collector;
//! `prometheus-node-exporter` (its default collectors) is scraped every
//! second by this bench. Over the same window after a warm-up: CPU seconds
//! of each process (utime + stime) per exported sample — for the agent the
//! samples the collector acknowledged (scrape, batching, disk buffer and gRPC
//! all included), for node_exporter the samples its scrapes returned — and
//! resident memory.
//!
//! Run: `cargo build --release --bins && cargo bench -p vigil-e2e --bench agent_node`
//! (`AGENT_NODE_SECONDS` sets the window, default 60; `AGENT_NODE_BASELINE`
//! names another `vigil-agent` binary — an older build — to run beside it,
//! shipping to the same collector, for a before/after in the same run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use vigil_e2e::{Proc, bin, free_port, get, start_collector, wait_for};

/// (CPU seconds, RSS KiB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (t(11) + t(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

/// The sum of a metric's series in a text exposition.
fn value(addr: &str, name: &str) -> f64 {
    let Ok((_, body)) = get(addr, "/metrics") else {
        return 0.0;
    };
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = std::env::var("AGENT_NODE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let exporter = [
        "/usr/bin/prometheus-node-exporter",
        "/usr/bin/node_exporter",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("prometheus-node-exporter is not installed (scripts/install-test-deps.sh)");
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp, ap, np) = (free_port(), free_port(), free_port(), free_port());
    let _collector = start_collector(dir.path(), hp, gp, &[]);
    let start_agent = |name: &str, program: &std::path::Path, port: u16| {
        Proc::start(
            name,
            program,
            &[
                "--collector".into(),
                format!("http://127.0.0.1:{gp}"),
                "--interval".into(),
                "1s".into(),
                "--node-name".into(),
                name.into(),
                "--http-listen".into(),
                format!("127.0.0.1:{port}"),
                "--state-dir".into(),
                dir.path().join(name).display().to_string(),
            ],
            &dir.path().join("logs"),
        )
    };
    let agent_http = format!("127.0.0.1:{ap}");
    let agent = start_agent("agent", &bin("vigil-agent"), ap);
    let baseline = std::env::var("AGENT_NODE_BASELINE").ok().map(|p| {
        let port = free_port();
        let proc = start_agent("baseline", std::path::Path::new(&p), port);
        (proc, format!("127.0.0.1:{port}"), p)
    });
    let ne_addr = format!("127.0.0.1:{np}");
    let ne = Proc::start(
        "node_exporter",
        std::path::Path::new(exporter),
        &[format!("--web.listen-address={ne_addr}")],
        &dir.path().join("logs"),
    );
    wait_for(Duration::from_secs(30), "both up", || {
        get(&ne_addr, "/metrics")?;
        if value(&agent_http, "vigil_agent_samples_acked_total") > 0.0 {
            Ok(())
        } else {
            Err(format!(
                "no samples acknowledged yet: {}",
                agent.stderr_text()
            ))
        }
    });
    // warm-up: caches, the series table, node_exporter's first scrapes
    let scrape_ne = || -> u64 {
        get(&ne_addr, "/metrics")
            .map(|(_, b)| {
                b.lines()
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .count() as u64
            })
            .unwrap_or(0)
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(15) {
        scrape_ne();
        std::thread::sleep(Duration::from_secs(1));
    }
    let (a0, _) = usage(agent.pid());
    let b0 = baseline.as_ref().map(|(p, http, _)| {
        (
            usage(p.pid()).0,
            value(http, "vigil_agent_samples_acked_total"),
        )
    });
    let mut b_rss = 0u64;
    let (n0, _) = usage(ne.pid());
    let acked0 = value(&agent_http, "vigil_agent_samples_acked_total");
    let mut ne_samples = 0u64;
    let (mut a_rss, mut n_rss) = (0u64, 0u64);
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < Duration::from_secs(secs) {
        ne_samples += scrape_ne();
        a_rss = a_rss.max(usage(agent.pid()).1);
        n_rss = n_rss.max(usage(ne.pid()).1);
        if let Some((p, _, _)) = &baseline {
            b_rss = b_rss.max(usage(p.pid()).1);
        }
        next += Duration::from_secs(1);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    // the last second's batches are acknowledged within the batch wait
    std::thread::sleep(Duration::from_millis(800));
    let acked = value(&agent_http, "vigil_agent_samples_acked_total") - acked0;
    let (a1, _) = usage(agent.pid());
    let (n1, _) = usage(ne.pid());
    let (a_cpu, n_cpu) = (a1 - a0, n1 - n0);
    let a_us = a_cpu / acked.max(1.0) * 1e6;
    let n_us = n_cpu / (ne_samples.max(1) as f64) * 1e6;
    println!("agent vs node_exporter, {secs} s, scraped every second, unpinned");
    println!(
        "vigil-agent:   {a_cpu:.2} CPU-s for {acked:.0} samples shipped and acknowledged = {a_us:.2} µs/sample, peak RSS {:.1} MiB",
        a_rss as f64 / 1024.0
    );
    println!(
        "node_exporter: {n_cpu:.2} CPU-s for {ne_samples} samples exported = {n_us:.2} µs/sample, peak RSS {:.1} MiB",
        n_rss as f64 / 1024.0
    );
    println!(
        "ratio (agent / node_exporter, CPU per sample): {:.2}",
        a_us / n_us
    );
    if let (Some((p, http, path)), Some((c0, s0))) = (&baseline, b0) {
        let cpu = usage(p.pid()).0 - c0;
        let n = value(http, "vigil_agent_samples_acked_total") - s0;
        let us = cpu / n.max(1.0) * 1e6;
        println!(
            "baseline {path}: {cpu:.2} CPU-s for {n:.0} samples = {us:.2} µs/sample ({:.2} of node_exporter's), peak RSS {:.1} MiB",
            us / n_us,
            b_rss as f64 / 1024.0
        );
    }
}
