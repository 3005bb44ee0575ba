//! Memory pressure for real: the collector runs in a cgroup v1 memory cgroup
//! this test makes (`memory.limit_in_bytes`), learns the limit itself from
//! /proc/self/cgroup and mountinfo, and a remote-write burst of new series
//! far beyond what fits must be refused (503 naming the limit, counted)
//! instead of ending in an OOM kill — while existing series keep ingesting.
//! Needs root and a v1 memory hierarchy (this testbed's hybrid layout); says
//! so and returns elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use vigil_e2e::*;

/// The cgroup's limit: the debug collector idles at about 40 MiB.
const LIMIT: u64 = 192 << 20;

fn v1_memory_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    vigil_common::mountinfo::parse(&text)
        .into_iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"))
        .map(|m| PathBuf::from(m.mount_point))
}

/// A memory cgroup removed (after its processes are gone) on drop.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new().compress_vec(&raw).unwrap()
}

fn series(labels: &[(&str, &str)], t: i64, v: f64) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: vec![Sample {
            value: v,
            timestamp: t,
        }],
    }
}

fn write(addr: &str, ts: Vec<TimeSeries>) -> (u16, String) {
    let body = encode(&WriteRequest {
        timeseries: ts,
        metadata: vec![],
    });
    let (code, b) = http(
        "POST",
        addr,
        "/api/v1/write",
        Some("application/x-protobuf"),
        &body,
    )
    .expect("remote write");
    (code, String::from_utf8_lossy(&b).to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A self-metric from /metrics (only while the store is small: /metrics
/// also lists every ingested series).
fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (code, body) = get(addr, "/metrics").ok()?;
    assert_eq!(code, 200);
    find(&parse_text(&body), name, labels)
        .first()
        .map(|s| s.value)
}

/// A self-metric through PromQL (the self-scrape's copy in the store).
fn self_metric(addr: &str, selector: &str) -> Option<f64> {
    let (code, body) = get(
        addr,
        &format!(
            "/api/v1/query?query={}",
            url_encode(&format!("max({selector})"))
        ),
    )
    .ok()?;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

fn oom_kills(cg: &Path) -> u64 {
    let text = std::fs::read_to_string(cg.join("memory.oom_control")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn cardinality_burst_under_a_cgroup_limit_is_refused_not_oom_killed() {
    let Some(mount) = v1_memory_mount() else {
        eprintln!("skipped: no cgroup v1 memory hierarchy here");
        return;
    };
    let name = format!(
        "vigil-mp-{}-{}",
        std::process::id(),
        now_ms() % 1_000_000_000
    );
    let dir = mount.join(&name);
    if let Err(e) = std::fs::create_dir(&dir) {
        eprintln!("skipped: cannot create {} ({e}); needs root", dir.display());
        return;
    }
    let cg = Cgroup(dir.clone());
    std::fs::write(cg.0.join("memory.limit_in_bytes"), LIMIT.to_string()).unwrap();
    // no swap here; where there is, keep it out of the picture
    let _ = std::fs::write(cg.0.join("memory.swappiness"), "0");

    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (http_port, grpc_port) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{http_port}");
    // the collector enters the cgroup before it starts (exec keeps the pid),
    // so it finds the limit itself; only memory bounds the burst
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
        cg.0.display()
    );
    let mut a = args(&["-c", &script, &bin("vigil-collector").display().to_string()]);
    a.extend(args(&[
        "--http-listen",
        &addr,
        "--grpc-listen",
        &format!("127.0.0.1:{grpc_port}"),
        "--data-dir",
        &d.join("collector").display().to_string(),
        "--max-series-per-agent",
        "0",
        "--max-series",
        "50000000",
        "--self-scrape-interval",
        "1s",
    ]));
    let mut collector = Proc::start("collector", Path::new("/bin/sh"), &a, &d.join("logs"));
    wait_for(Duration::from_secs(60), "collector ready", || {
        match get(&addr, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?} {}", collector.stderr_text())),
        }
    });
    let pid = collector.pid();
    let procs = std::fs::read_to_string(cg.0.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "collector {pid} is not in {}: {procs}",
        cg.0.display()
    );
    assert_eq!(
        metric(
            &addr,
            "vigil_collector_store_limit",
            &[("limit", "memory_limit_bytes")]
        ),
        Some(LIMIT as f64),
        "the collector found its cgroup's limit: {}",
        collector.stderr_text()
    );

    // series that exist before the burst
    let existing = |t: i64, v: f64| -> Vec<TimeSeries> {
        (0..10)
            .map(|i| series(&[("__name__", "mp_existing"), ("i", &i.to_string())], t, v))
            .collect()
    };
    let t0 = now_ms();
    assert_eq!(write(&addr, existing(t0, 1.0)).0, 204);

    // the burst: 3,000,000 new series with 100-byte label values (several
    // times what 192 MiB can hold), 20,000 per request
    let pad = "x".repeat(100);
    let mut refused_requests = 0u32;
    let mut accepted_requests = 0u32;
    let mut first_refusal = String::new();
    let started = Instant::now();
    let per_request = 20_000;
    for r in 0..150 {
        let t = now_ms();
        let batch: Vec<TimeSeries> = (0..per_request)
            .map(|i| {
                let id = (r * per_request + i).to_string();
                series(
                    &[("__name__", "mp_burst"), ("id", &id), ("pad", &pad)],
                    t,
                    1.0,
                )
            })
            .collect();
        let (code, body) = write(&addr, batch);
        match code {
            204 => accepted_requests += 1,
            503 => {
                refused_requests += 1;
                if first_refusal.is_empty() {
                    first_refusal = body;
                }
            }
            other => panic!(
                "request {r}: HTTP {other}: {body}\n{}",
                collector.stderr_text()
            ),
        }
        assert!(
            collector.try_wait().is_none(),
            "the collector died during the burst (request {r}): {}",
            collector.stderr_text()
        );
    }
    eprintln!(
        "burst: {accepted_requests} requests accepted, {refused_requests} refused, in {:?}",
        started.elapsed()
    );

    // alive, not OOM-killed, still serving
    assert!(
        collector.try_wait().is_none(),
        "{}",
        collector.stderr_text()
    );
    assert_eq!(oom_kills(&cg.0), 0, "the kernel OOM-killed in the cgroup");
    assert_eq!(get(&addr, "/-/healthy").unwrap().0, 200);
    assert!(accepted_requests > 0, "some series fit before the limit");
    assert!(refused_requests > 0, "the burst was never refused");
    assert!(
        first_refusal.contains("memory pressure") && first_refusal.contains("memory_limit"),
        "the refusal names the limit: {first_refusal}"
    );

    // refusals are counted (read through PromQL: /metrics would list every
    // burst series)
    let counted = wait_for(Duration::from_secs(30), "refusals counted", || {
        let series = self_metric(
            &addr,
            "vigil_collector_store_refused_total{reason=\"memory_pressure\"}",
        );
        let samples = self_metric(
            &addr,
            "vigil_collector_samples_refused_total{reason=\"memory_pressure\"}",
        );
        match (series, samples) {
            (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Ok((a, b)),
            other => Err(format!("{other:?}")),
        }
    });
    eprintln!("refused: {} series, {} samples", counted.0, counted.1);
    assert_eq!(
        self_metric(
            &addr,
            "vigil_collector_store_limit{limit=\"memory_limit_bytes\"}"
        ),
        Some(LIMIT as f64)
    );

    // existing series still ingest, and are queryable
    let t1 = now_ms();
    let (code, body) = write(&addr, existing(t1, 2.0));
    assert_eq!(code, 204, "existing series refused: {body}");
    let q = format!(
        "/api/v1/query?query={}&time={:.3}",
        url_encode("sum(mp_existing)"),
        t1 as f64 / 1000.0
    );
    let (code, body) = get(&addr, &q).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"20\""),
        "existing series did not ingest: {body}"
    );

    // while memory stays high, a new series is still refused with 503
    if self_metric(&addr, "vigil_collector_memory_pressure") == Some(1.0) {
        let (code, body) = write(
            &addr,
            vec![series(
                &[("__name__", "mp_late"), ("x", "1")],
                now_ms(),
                1.0,
            )],
        );
        assert_eq!(code, 503, "{body}");
    }
    assert_eq!(oom_kills(&cg.0), 0);
    assert!(
        collector.try_wait().is_none(),
        "{}",
        collector.stderr_text()
    );
    collector.kill9();
}
