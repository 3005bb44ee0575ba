//! Forwarding cost against vmagent, side by side in one run, as whole
//! processes: the same remote-write stream goes to
//! - the release collector forwarding to VictoriaMetrics (`via="vigil"`),
//! - the same as a gateway, `--local-store=false` (`via="gateway"`: the
//!   like-for-like comparison with vmagent, which stores nothing either),
//! - the release collector without forwarding (`via="baseline"`: what
//!   ingest, WAL and store cost on their own),
//! - vmagent forwarding to the same VictoriaMetrics (`via="vmagent"`).
//!
//! Reports CPU-seconds per sample (utime + stime from /proc) and peak RSS of
//! each, then stops VictoriaMetrics, feeds a backlog of
//! `FORWARD_BACKLOG_MIN` minutes of the stream to the forwarding collectors
//! and to vmagent, starts VictoriaMetrics again and times how long each
//! takes to deliver it all.
//!
//! `cargo build --release --bins && cargo bench -p vigil-e2e --bench forward`
//! (`FORWARD_SERIES` default 10000, `FORWARD_INTERVAL_MS` 1000,
//! `FORWARD_SECS` 30, `FORWARD_BACKLOG_MIN` 10).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use vigil_e2e::{Proc, bin, free_port, get, http, parse_text, wait_for};

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One request: every series once at `t`.
fn body(via: &str, series: u64, t: i64, round: u64) -> Vec<u8> {
    let req = WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "bench_forward_total".into(),
                    },
                    Label {
                        name: "i".into(),
                        value: i.to_string(),
                    },
                    Label {
                        name: "job".into(),
                        value: "bench".into(),
                    },
                    Label {
                        name: "via".into(),
                        value: via.into(),
                    },
                ],
                samples: vec![Sample {
                    value: (round * 7 + i % 13) as f64,
                    timestamp: t,
                }],
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&req))
        .expect("snappy")
}

/// Writes until accepted; retries what a sender retries (5xx, 429, no
/// connection) and stops the bench on any other refusal, which no retry
/// would change.
fn post(addr: &str, body: &[u8]) {
    loop {
        match http(
            "POST",
            addr,
            "/api/v1/write",
            Some("application/x-protobuf"),
            body,
        ) {
            Ok((s, _)) if (200..300).contains(&s) => return,
            Ok((s, b)) if (400..500).contains(&s) && s != 429 => panic!(
                "{addr} refused a write with {s}: {}",
                String::from_utf8_lossy(&b)
            ),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn metric(addr: &str, name: &str) -> f64 {
    get(addr, "/metrics")
        .map(|(_, t)| {
            parse_text(&t)
                .into_iter()
                .filter(|s| s.name == name)
                .map(|s| s.value)
                .sum()
        })
        .unwrap_or(0.0)
}

fn start_vm(dir: &Path, port: u16) -> Proc {
    let p = Proc::start(
        "victoria-metrics",
        Path::new("victoria-metrics"),
        &[
            format!("-storageDataPath={}", dir.join("vm").display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-search.latencyOffset=0s".into(),
            "-loggerLevel=WARN".into(),
        ],
        &dir.join("logs"),
    );
    let a = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), "VictoriaMetrics", || {
        match get(&a, "/health") {
            Ok((200, _)) => Ok(()),
            o => Err(format!("{o:?}")),
        }
    });
    p
}

fn start_collector(dir: &Path, name: &str, vm: Option<u16>, extra: &[&str]) -> (Proc, String) {
    let (hp, gp) = (free_port(), free_port());
    let mut a = vec![
        "--http-listen".to_string(),
        format!("127.0.0.1:{hp}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{gp}"),
        "--data-dir".into(),
        dir.join(name).display().to_string(),
        "--self-scrape-interval".into(),
        "0s".into(),
    ];
    if let Some(vm) = vm {
        a.push("--remote-write-url".into());
        a.push(format!("http://127.0.0.1:{vm}/api/v1/write"));
    }
    a.extend(extra.iter().map(|x| x.to_string()));
    let p = Proc::start(name, &bin("vigil-collector"), &a, &dir.join("logs"));
    let addr = format!("127.0.0.1:{hp}");
    wait_for(Duration::from_secs(30), "collector", || {
        match get(&addr, "/-/ready") {
            Ok((200, _)) => Ok(()),
            o => Err(format!("{o:?}")),
        }
    });
    (p, addr)
}

fn start_vmagent(dir: &Path, vm: u16) -> (Proc, String) {
    let port = free_port();
    let p = Proc::start(
        "vmagent",
        Path::new("vmagent"),
        &[
            format!("-remoteWrite.url=http://127.0.0.1:{vm}/api/v1/write"),
            format!("-remoteWrite.tmpDataPath={}", dir.join("vmagent").display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-loggerLevel=WARN".into(),
        ],
        &dir.join("logs"),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), "vmagent", || {
        match get(&addr, "/health") {
            Ok((200, _)) => Ok(()),
            o => Err(format!("{o:?}")),
        }
    });
    (p, addr)
}

/// Samples VictoriaMetrics holds for `via`.
fn vm_count(vm: u16, via: &str) -> f64 {
    let q = format!(
        "/api/v1/query?query=sum(count_over_time(bench_forward_total%7Bvia%3D%22{via}%22%7D%5B2h%5D))"
    );
    let _ = get(&format!("127.0.0.1:{vm}"), "/internal/force_flush");
    get(&format!("127.0.0.1:{vm}"), &q)
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["data"]["result"][0]["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for b in ["victoria-metrics", "vmagent"] {
        if std::process::Command::new(b)
            .arg("-version")
            .output()
            .is_err()
        {
            eprintln!("{b} is not installed: bench skipped");
            return;
        }
    }
    let series = env("FORWARD_SERIES", 10_000);
    let interval = Duration::from_millis(env("FORWARD_INTERVAL_MS", 1000));
    let secs = env("FORWARD_SECS", 30);
    let backlog_min = env("FORWARD_BACKLOG_MIN", 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let vm_port = free_port();
    let mut vm = start_vm(d, vm_port);
    let (mut fwd, fwd_addr) = start_collector(d, "vigil", Some(vm_port), &[]);
    let (mut gw, gw_addr) = start_collector(d, "gateway", Some(vm_port), &["--local-store=false"]);
    let (mut base, base_addr) = start_collector(d, "baseline", None, &[]);
    let (mut vma, vma_addr) = start_vmagent(d, vm_port);
    let targets = [
        ("vigil", fwd_addr.clone(), fwd.pid()),
        ("gateway", gw_addr.clone(), gw.pid()),
        ("baseline", base_addr.clone(), base.pid()),
        ("vmagent", vma_addr.clone(), vma.pid()),
    ];

    // steady stream
    let rounds = (secs * 1000 / interval.as_millis() as u64).max(1);
    let warm = 3u64;
    let mut cpu0 = Vec::new();
    let t_start = Instant::now();
    for round in 0..rounds + warm {
        if round == warm {
            cpu0 = targets.iter().map(|t| cpu_seconds(t.2)).collect();
        }
        let t = now_ms();
        std::thread::scope(|s| {
            for (via, addr, _) in &targets {
                let b = body(via, series, t, round);
                s.spawn(move || post(addr, &b));
            }
        });
        let next = interval * (round as u32 + 1);
        if let Some(w) = next.checked_sub(t_start.elapsed()) {
            std::thread::sleep(w);
        }
    }
    // let the forwarders finish the stream
    let want = (series * (rounds + warm)) as f64;
    wait_for(
        Duration::from_secs(120),
        "VictoriaMetrics has both streams",
        || {
            let (a, g, b) = (
                vm_count(vm_port, "vigil"),
                vm_count(vm_port, "gateway"),
                vm_count(vm_port, "vmagent"),
            );
            if a >= want && g >= want && b >= want {
                Ok(())
            } else {
                Err(format!("vigil {a}, gateway {g}, vmagent {b}, want {want}"))
            }
        },
    );
    let samples = (series * rounds) as f64;
    println!(
        "forwarding {series} series every {interval:?} for {rounds} rounds ({samples} samples measured per process)"
    );
    println!(
        "{:<10} {:>14} {:>12} {:>12}",
        "process", "CPU µs/sample", "RSS MiB", "peak MiB"
    );
    let mut per = Vec::new();
    for (i, (via, _, pid)) in targets.iter().enumerate() {
        let cpu = cpu_seconds(*pid) - cpu0[i];
        let us = cpu / samples * 1e6;
        per.push(us);
        println!(
            "{via:<10} {us:>14.3} {:>12.1} {:>12.1}",
            rss_mib(*pid, "VmRSS:"),
            rss_mib(*pid, "VmHWM:")
        );
    }
    println!(
        "forwarding share of the collector (vigil − baseline): {:.3} µs/sample",
        per[0] - per[2]
    );
    // what a sample costs on disk (the WAL a gateway keeps for an outage)
    // and on the wire to the engine
    let wal = metric(&fwd_addr, "vigil_collector_wal_bytes");
    let total = series as f64 * (rounds + warm) as f64;
    println!(
        "vigil WAL bytes per sample {:.2}; remote-write bytes sent per sample {:.2}",
        wal / total,
        metric(&fwd_addr, "vigil_collector_forward_sent_bytes_total")
            / metric(&fwd_addr, "vigil_collector_forward_samples_sent_total").max(1.0)
    );

    // a backlog: the engine away while FORWARD_BACKLOG_MIN minutes of the
    // stream arrive, then back
    vm.terminate(Duration::from_secs(30));
    let backlog_rounds = backlog_min * 60 * 1000 / interval.as_millis() as u64;
    // The backlog's samples must follow the steady stream's in every series
    // (older ones are out of order, refused by the storing collector; later
    // than the clock, past the allowed skew): rounds 1 ms apart, after the
    // last steady sample.
    let t_end = now_ms();
    let fill = Instant::now();
    for r in 0..backlog_rounds {
        let t = t_end + 1 + r as i64;
        std::thread::scope(|s| {
            for (via, addr, _) in targets.iter().filter(|t| t.0 != "baseline") {
                let b = body(via, series, t, 1_000_000 + r);
                s.spawn(move || post(addr, &b));
            }
        });
    }
    println!(
        "backlog: {} samples ({backlog_min} min of the stream) fed in {:.1}s with VictoriaMetrics down",
        series * backlog_rounds,
        fill.elapsed().as_secs_f64()
    );
    let want = want + (series * backlog_rounds) as f64;
    vm = start_vm(d, vm_port);
    let t0 = Instant::now();
    let (mut done_vigil, mut done_gw, mut done_vma) = (None, None, None);
    while (done_vigil.is_none() || done_gw.is_none() || done_vma.is_none())
        && t0.elapsed() < Duration::from_secs(900)
    {
        if done_vigil.is_none() && vm_count(vm_port, "vigil") >= want {
            done_vigil = Some(t0.elapsed());
        }
        if done_gw.is_none() && vm_count(vm_port, "gateway") >= want {
            done_gw = Some(t0.elapsed());
        }
        if done_vma.is_none() && vm_count(vm_port, "vmagent") >= want {
            done_vma = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let n = (series * backlog_rounds) as f64;
    for (via, d) in [
        ("vigil", done_vigil),
        ("gateway", done_gw),
        ("vmagent", done_vma),
    ] {
        match d {
            Some(d) => println!(
                "{via:<10} drained the backlog in {:.1}s ({:.0} samples/s)",
                d.as_secs_f64(),
                n / d.as_secs_f64()
            ),
            None => println!("{via:<10} did not drain within 900s"),
        }
    }
    println!(
        "vigil forwarding metrics: sent {}, failed {}, retried {}, shards {}",
        metric(&fwd_addr, "vigil_collector_forward_samples_sent_total"),
        metric(&fwd_addr, "vigil_collector_forward_samples_failed_total"),
        metric(&fwd_addr, "vigil_collector_forward_samples_retried_total"),
        metric(&fwd_addr, "vigil_collector_forward_shards"),
    );
    fwd.terminate(Duration::from_secs(20));
    gw.terminate(Duration::from_secs(20));
    base.terminate(Duration::from_secs(20));
    vma.terminate(Duration::from_secs(20));
    vm.terminate(Duration::from_secs(30));
}
