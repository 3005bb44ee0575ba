//! Reaction time of vigil's actions on real podman containers, at a 1 s
//! scrape interval, with the release binaries:
//!
//! - **OOM kill → restart request**: a container leaking memory under a
//!   32 MiB limit is OOM-killed again and again; the bench reads the kill
//!   from `/dev/kmsg` as the kernel logs it (a blocking read, so the time it
//!   returns is the kill's time), and takes the restart request's time from
//!   the audit log (`decided`, written right before the request is sent) and
//!   the container's new start (`delivered`).
//! - **CPU over target → scale request**: a 2-replica service is loaded and
//!   unloaded in cycles; "over the target" is the first scrape at which the
//!   replicas' average CPU (between consecutive raw samples, as stored) is
//!   above the target; the scale request is the autoscaler's `decided` entry.
//!
//! Run (needs root, podman and `localhost/bb:1`, see scripts/install-test-deps.sh):
//! `cargo build --release --bins && cargo bench -p vigil-e2e --bench reaction`
//! (`REACTION_KILLS`, `REACTION_CYCLES` set the sample sizes).

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigil_e2e::podman::{self, Service};
use vigil_e2e::{Proc, bin, free_port, get, wait_for};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// (result, time_ms, action) of every audit entry, oldest first.
fn audit(http: &str) -> Vec<(String, i64, String, serde_json::Value)> {
    let Ok((_, body)) = get(http, "/api/v1/actions?limit=100000") else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut out: Vec<_> = v["data"]["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            (
                e["result"].as_str().unwrap_or("").to_string(),
                e["time_ms"].as_i64().unwrap_or(0),
                e["action"].as_str().unwrap_or("").to_string(),
                e,
            )
        })
        .collect();
    out.reverse();
    out
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn report(what: &str, v: &mut [f64]) {
    let n = v.len();
    let p50 = percentile(v, 50.0);
    let p99 = percentile(v, 99.0);
    let max = v.iter().cloned().fold(f64::NAN, f64::max);
    println!("{what:<44} n={n:<4} p50={p50:>7.0} ms  p99={p99:>7.0} ms  max={max:>7.0} ms");
}

struct Pipeline {
    http: String,
    _collector: Proc,
    _agent: Proc,
}

fn pipeline(d: &Path, actions: &str) -> Pipeline {
    std::fs::write(d.join("actions.yml"), actions).unwrap();
    let (hp, gp) = (free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let collector = Proc::start(
        "collector",
        &bin("vigil-collector"),
        &[
            "--http-listen".into(),
            http.clone(),
            "--grpc-listen".into(),
            format!("127.0.0.1:{gp}"),
            "--data-dir".into(),
            d.join("collector").display().to_string(),
            "--actions".into(),
            d.join("actions.yml").display().to_string(),
        ],
        &d.join("logs"),
    );
    let agent = Proc::start(
        "agent",
        &bin("vigil-agent"),
        &[
            "--collector".into(),
            format!("http://127.0.0.1:{gp}"),
            "--interval".into(),
            "1s".into(),
            "--batch-max-wait".into(),
            "50ms".into(),
            "--http-listen".into(),
            "off".into(),
            "--log-default-paths".into(),
            "false".into(),
            "--state-dir".into(),
            d.join("agent").display().to_string(),
        ],
        &d.join("logs"),
    );
    wait_for(Duration::from_secs(30), "agent samples", || {
        let (_, b) = get(&http, "/api/v1/query?query=vigil_agent_scrapes_total")?;
        if b.contains("\"result\":[{") {
            Ok(())
        } else {
            Err(b)
        }
    });
    Pipeline {
        http,
        _collector: collector,
        _agent: agent,
    }
}

fn oom(kills: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = format!("vigilleak{}", podman::tag());
    let service = Service::start(d, &format!("vigil.bench={name}"));
    // the kernel's log, read from its end by a thread
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    {
        let seen = seen.clone();
        let mut f = std::fs::File::open("/dev/kmsg").expect("/dev/kmsg");
        f.seek(SeekFrom::End(0)).expect("seek /dev/kmsg");
        std::thread::spawn(move || {
            let mut r = BufReader::new(f);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        if line.contains("oom-kill:") && line.contains("libpod") {
                            seen.lock().unwrap().push(now_ms());
                        }
                    }
                    // EPIPE: records were overwritten; keep reading
                    Err(_) => continue,
                }
            }
        });
    }
    let p = pipeline(
        d,
        &format!(
            "executors:\n  podman: {{type: docker, socket: {}}}\n\
             restart:\n  - name: oom\n    match: {{event: oom_kill, name: {name}}}\n    \
             executor: podman\n    cooldown: 0s\n    max_restarts: 100000\n    window: 1h\n\
             global:\n  max_restarts_per_minute: 100000\n",
            service.socket.display()
        ),
    );
    service.run(&[
        "--name",
        &name,
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        podman::IMAGE,
        "sh",
        "-c",
        // a pause between kills keeps them apart
        "sleep 2; x=0123456789abcdef; while :; do x=$x$x; done",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60 + 10 * kills as u64);
    loop {
        let delivered = audit(&p.http)
            .iter()
            .filter(|e| e.2 == "restart" && e.0 == "delivered")
            .count();
        if delivered >= kills || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let kills_at = seen.lock().unwrap().clone();
    let entries = audit(&p.http);
    let mut to_request = Vec::new();
    let mut to_started = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.2 == "restart" && e.0 == "decided")
    {
        // the newest kill before the decision
        let Some(k) = kills_at.iter().rev().find(|k| **k <= e.1) else {
            continue;
        };
        to_request.push((e.1 - k) as f64);
        let id = e.3["id"].as_str().unwrap_or("");
        if let Some(done) = entries
            .iter()
            .find(|x| x.0 == "delivered" && x.3["id"].as_str() == Some(id))
        {
            to_started.push((done.1 - k) as f64);
        }
    }
    println!(
        "OOM kills seen in /dev/kmsg: {}, restarts decided: {}",
        kills_at.len(),
        to_request.len()
    );
    report("OOM kill → restart request", &mut to_request);
    report("OOM kill → container started again", &mut to_started);
}

/// Raw samples of the replicas' CPU counters: per scrape timestamp, the
/// average CPU (in cores) between it and the previous scrape.
fn cpu_by_scrape(http: &str, svc: &str) -> Vec<(i64, f64)> {
    let q = format!("container_cpu_usage_seconds_total%7Bname%3D~%22{svc}-.%2A%22%7D%5B10m%5D");
    let Ok((_, body)) = get(http, &format!("/api/v1/query?query={q}")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut per_ts: std::collections::BTreeMap<i64, (f64, u32)> = Default::default();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let pts: Vec<(i64, f64)> = s["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                Some((
                    (p[0].as_f64()? * 1000.0).round() as i64,
                    p[1].as_str()?.parse().ok()?,
                ))
            })
            .collect();
        for w in pts.windows(2) {
            let dt = (w[1].0 - w[0].0) as f64 / 1000.0;
            if dt > 0.0 {
                let e = per_ts.entry(w[1].0).or_default();
                e.0 += (w[1].1 - w[0].1).max(0.0) / dt;
                e.1 += 1;
            }
        }
    }
    per_ts
        .into_iter()
        .map(|(t, (sum, n))| (t, sum / n as f64))
        .collect()
}

fn scale(cycles: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let svc = format!("vigilrx{}", podman::tag());
    let label = format!("com.docker.compose.service={svc}");
    let service = Service::start(d, &label);
    for i in 0..2 {
        service.run(&[
            "--name",
            &format!("{svc}-{i}"),
            "--cpus",
            "0.5",
            podman::IMAGE,
            "sh",
            "-c",
            "while :; do if [ -e /go ]; then :; else sleep 0.1; fi; done",
        ]);
    }
    let target = 40.0;
    let p = pipeline(
        d,
        &format!(
            "executors:\n  podman: {{type: docker, socket: {sock}}}\n\
             autoscale:\n  - name: web\n    executor: podman\n    workload: {{service: {svc}}}\n    \
             query: '100 * avg(rate(container_cpu_usage_seconds_total{{name=~\"{svc}-.*\"}}[3s])) / 0.5'\n    \
             target: {target}\n    min_replicas: 2\n    max_replicas: 4\n    interval: 1s\n    \
             behavior:\n      scale_down: {{stabilization_window: 3s}}\n",
            sock = service.socket.display()
        ),
    );
    let load = |on: bool| {
        for id in service.containers(false) {
            let cmd = if on { ": > /go" } else { "rm -f /go" };
            let _ = service.podman(&["exec", &id, "sh", "-c", cmd]);
        }
    };
    let mut reactions = Vec::new();
    for _ in 0..cycles {
        // idle at 2 replicas for a few scrapes before each cycle
        std::thread::sleep(Duration::from_secs(4));
        let t_load = now_ms();
        load(true);
        let deadline = Instant::now() + Duration::from_secs(60);
        let decided = loop {
            let up = audit(&p.http).into_iter().find(|e| {
                e.2 == "scale"
                    && e.0 == "decided"
                    && e.1 >= t_load
                    && e.3["to_replicas"].as_u64() > e.3["from_replicas"].as_u64()
            });
            if let Some(e) = up {
                break Some(e.1);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let Some(decided) = decided else {
            println!("no scale-up within 60 s in this cycle");
            continue;
        };
        // the first scrape after the load started with average CPU over target
        let over = cpu_by_scrape(&p.http, &svc)
            .into_iter()
            .find(|(t, cores)| *t >= t_load && 100.0 * cores / 0.5 > target)
            .map(|(t, _)| t);
        if std::env::var_os("REACTION_DEBUG").is_some() {
            println!("t_load {t_load} decided {decided} over {over:?}");
            for (t, c) in cpu_by_scrape(&p.http, &svc)
                .iter()
                .filter(|(t, _)| *t >= t_load - 3000)
            {
                println!("  sample {t} (+{} ms) {:.0}%", t - t_load, 100.0 * c / 0.5);
            }
            for e in audit(&p.http).iter().filter(|e| e.1 >= t_load - 3000) {
                println!("  audit +{} ms {} {}", e.1 - t_load, e.0, e.3["detail"]);
            }
        }
        match over {
            Some(o) if o <= decided => reactions.push((decided - o) as f64),
            other => println!("cycle skipped: over-target sample {other:?}, decision {decided}"),
        }
        // back to 2, and the scale-down delivered (the scaler makes no new
        // decision while one is in flight), so the next cycle starts idle
        load(false);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            let down_done = audit(&p.http).iter().any(|e| {
                e.2 == "scale"
                    && e.0 == "delivered"
                    && e.1 > decided
                    && e.3["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("now has 2 replicas"))
            });
            if down_done {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    report(
        "first sample over CPU target → scale request",
        &mut reactions,
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it once quickly
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !podman::usable() || !Path::new("/dev/kmsg").exists() {
        eprintln!("skipped: needs root, /dev/kmsg and podman with localhost/bb:1");
        return;
    }
    println!("vigil reaction time (1 s scrape interval, release binaries)");
    let kills = env_usize("REACTION_KILLS", 30);
    if kills > 0 {
        oom(kills);
    }
    scale(env_usize("REACTION_CYCLES", 10));
}
