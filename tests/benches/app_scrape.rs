//! Application scraping cost, side by side in one run: vigil-agent and a real
//! Prometheus scrape the same 100 targets × 1,000 series (a small server in
//! this bench, 100 listeners on 127.0.0.1, counter values moving between
//! scrapes), each as the whole process a user runs; the agent ships to a
//! collector. Measured over the same window after a warm-up: CPU seconds of
//! each process (utime + stime) per sample scraped, and resident memory.
//!
//! Run: `cargo build --release --bins && cargo bench -p vigil-e2e --bench app_scrape`
//! (`APP_SCRAPE_TARGETS`, `APP_SCRAPE_SERIES`, `APP_SCRAPE_INTERVAL_S`,
//! `APP_SCRAPE_SECONDS` change the load).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vigil_e2e::{Proc, bin, free_port, get, start_collector, wait_for};

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

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

/// The sum of a counter in a text exposition.
fn counter(addr: &str, name: &str) -> f64 {
    let Ok((_, body)) = get(addr, "/metrics") else {
        return 0.0;
    };
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One target's body: `series` series in families of 10, values moving.
fn body(target: usize, series: usize, tick: u64) -> String {
    let mut s = String::with_capacity(series * 90);
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(prometheus) = Path::new("/usr/bin/prometheus")
        .exists()
        .then_some("/usr/bin/prometheus")
    else {
        eprintln!("skipping: no prometheus binary");
        return;
    };
    let targets = env("APP_SCRAPE_TARGETS", 100) as usize;
    let series = env("APP_SCRAPE_SERIES", 1000) as usize;
    let interval = env("APP_SCRAPE_INTERVAL_S", 2);
    let seconds = env("APP_SCRAPE_SECONDS", 30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addrs = rt.block_on(serve(targets, series));
    let dir = tempfile::tempdir().unwrap();
    let static_targets: Vec<String> = addrs.iter().map(|a| format!("'{a}'")).collect();
    let job = format!(
        "scrape_configs:\n  - job_name: bench\n    scrape_interval: {interval}s\n    scrape_timeout: {interval}s\n    static_configs:\n      - targets: [{}]\n",
        static_targets.join(", ")
    );

    let (http_port, grpc_port, agent_port, prom_port) =
        (free_port(), free_port(), free_port(), free_port());
    let _collector = start_collector(dir.path(), http_port, grpc_port, &[]);
    let cfg = dir.path().join("scrape.yml");
    std::fs::write(&cfg, &job).unwrap();
    let agent_http = format!("127.0.0.1:{agent_port}");
    let agent = Proc::start(
        "agent",
        &bin("vigil-agent"),
        &[
            "--collector".to_string(),
            format!("http://127.0.0.1:{grpc_port}"),
            "--http-listen".into(),
            agent_http.clone(),
            "--state-dir".into(),
            dir.path().join("agent").display().to_string(),
            "--scrape-config-file".into(),
            cfg.display().to_string(),
            "--app-discovery".into(),
            "false".into(),
            "--log-default-paths".into(),
            "false".into(),
        ],
        &dir.path().join("logs"),
    );
    let pdir = dir.path().join("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(pdir.join("prometheus.yml"), &job).unwrap();
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
    let ours = "vigil_agent_scrape_samples_total";
    let theirs = "prometheus_tsdb_head_samples_appended_total";
    wait_for(Duration::from_secs(60), "both scraping", || {
        if counter(&agent_http, ours) > 0.0 && counter(&prom, theirs) > 0.0 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    std::thread::sleep(Duration::from_secs(3 * interval));
    let (a0, p0) = (usage(agent.pid()), usage(prom_child.id()));
    let (as0, ps0) = (counter(&agent_http, ours), counter(&prom, theirs));
    std::thread::sleep(Duration::from_secs(seconds));
    let (a1, p1) = (usage(agent.pid()), usage(prom_child.id()));
    let (as1, ps1) = (counter(&agent_http, ours), counter(&prom, theirs));
    let (na, np) = (as1 - as0, ps1 - ps0);
    let cpu_a = (a1.0 - a0.0) / na * 1e6;
    let cpu_p = (p1.0 - p0.0) / np * 1e6;
    println!(
        "app scrape, {targets} targets x {series} series every {interval}s, {seconds}s window:"
    );
    println!(
        "  vigil-agent : {na:>9.0} samples, {:>6.2} CPU-s, {cpu_a:>5.2} us/sample, RSS {:>6.1} MiB",
        a1.0 - a0.0,
        a1.1 as f64 / 1024.0
    );
    println!(
        "  prometheus  : {np:>9.0} samples, {:>6.2} CPU-s, {cpu_p:>5.2} us/sample, RSS {:>6.1} MiB",
        p1.0 - p0.0,
        p1.1 as f64 / 1024.0
    );
    println!("  agent / prometheus CPU per sample: {:.2}", cpu_a / cpu_p);
    let _ = prom_child.kill();
    let _ = prom_child.wait();
}
