//! Forwarding out of the real collector binary, sample for sample.
//!
//! An agent (the real binary) and remote-write-in traffic feed a collector
//! that also evaluates a recording rule and scrapes itself; the collector
//! forwards through a small fault-injecting proxy to the real
//! VictoriaMetrics (and, in the second test, the real Prometheus with its
//! remote-write receiver). Through (a) the engine stopped (SIGTERM) and
//! restarted, (b) the collector `kill -9`ed while a request is in flight
//! and restarted, (c) a burst of 429s with `Retry-After`, the engine's raw
//! samples equal the collector's own.
//!
//! Both tests skip (saying so) where the engine is not installed; CI
//! installs it (scripts/install-test-deps.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use vigil_e2e::{Proc, args, free_port, get, http, start_agent, start_collector, wait_for};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn have(bin: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// What the proxy does to the next requests.
#[derive(Default)]
struct Faults {
    /// Answer this many with 429 and `Retry-After: 1`.
    too_many: AtomicU32,
    /// Hold the next request's answer (after the upstream took it) until
    /// the test has killed the sender.
    hold_next: AtomicBool,
    holding: AtomicBool,
    forwarded: AtomicU64,
    refused_429: AtomicU64,
}

/// A proxy in front of `upstream` (http://host:port) with faults.
fn start_proxy(rt: &tokio::runtime::Runtime, upstream: String, faults: Arc<Faults>) -> SocketAddr {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, upstream, f) = (client.clone(), upstream.clone(), faults.clone());
        async move {
            if f.too_many
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                f.refused_429.fetch_add(1, Ordering::SeqCst);
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    "slow down",
                )
                    .into_response();
            }
            let mut req = client.post(format!("{upstream}{uri}")).body(body);
            for (k, v) in headers.iter() {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
            };
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() {
                f.forwarded.fetch_add(1, Ordering::SeqCst);
            }
            if f.hold_next.swap(false, Ordering::SeqCst) {
                f.holding.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            (status, text).into_response()
        }
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Remote-write-in traffic: 10 counters, one sample each per 100 ms, every
/// request retried until the collector took it (so nothing is lost on the
/// way in, whatever happens to the collector).
fn start_generator(collector: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut round = 0u64;
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            let t = now_ms();
            let req = WriteRequest {
                timeseries: (0..10)
                    .map(|i| TimeSeries {
                        labels: vec![
                            Label {
                                name: "__name__".into(),
                                value: "fwd_gen_total".into(),
                            },
                            Label {
                                name: "i".into(),
                                value: i.to_string(),
                            },
                        ],
                        samples: vec![Sample {
                            value: round as f64,
                            timestamp: t,
                        }],
                    })
                    .collect(),
                metadata: vec![],
            };
            let body = snap::raw::Encoder::new()
                .compress_vec(&prost::Message::encode_to_vec(&req))
                .expect("snappy");
            loop {
                match http(
                    "POST",
                    &collector,
                    "/api/v1/write",
                    Some("application/x-protobuf"),
                    &body,
                ) {
                    Ok((s, _)) if (200..300).contains(&s) => break,
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        round
    })
}

/// Series → (timestamp → value bits), empty label values dropped (no label,
/// as the engines store it), NaN (staleness markers) left out.
type Raw = BTreeMap<BTreeMap<String, String>, BTreeMap<i64, u64>>;

fn labels_of(m: &serde_json::Value) -> BTreeMap<String, String> {
    m.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| {
                    let v = v.as_str().unwrap_or_default();
                    (!v.is_empty()).then(|| (k.clone(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn add(raw: &mut Raw, labels: BTreeMap<String, String>, t: i64, v: f64) {
    if !v.is_nan() {
        raw.entry(labels).or_default().insert(t, v.to_bits());
    }
}

/// Raw samples with timestamps in `(end - 1h, end]` from a Prometheus-style
/// query API (a range-vector instant query returns them as stored).
fn raw_from_query_api(addr: &str, end_ms: i64) -> Result<Raw, String> {
    let q = format!(
        "/api/v1/query?query=%7B__name__%3D~%22.%2B%22%7D%5B1h%5D&time={}.{:03}",
        end_ms / 1000,
        end_ms % 1000
    );
    let (s, body) = get(addr, &q)?;
    if s != 200 {
        return Err(format!("{addr}: {s} {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut raw = Raw::new();
    for series in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let l = labels_of(&series["metric"]);
        for p in series["values"].as_array().cloned().unwrap_or_default() {
            let t = (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
            let val = match p[1].as_str().unwrap_or("NaN") {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                s => s.parse().unwrap_or(f64::NAN),
            };
            add(&mut raw, l.clone(), t, val);
        }
    }
    Ok(raw)
}

/// VictoriaMetrics' raw samples up to `end_ms` (`/api/v1/export`).
fn raw_from_vm(addr: &str, end_ms: i64) -> Result<Raw, String> {
    let _ = get(addr, "/internal/force_flush");
    let q = format!(
        "/api/v1/export?match%5B%5D=%7B__name__%21%3D%22%22%7D&start={}&end={}.{:03}",
        end_ms / 1000 - 3600,
        end_ms / 1000,
        end_ms % 1000
    );
    let (s, body) = get(addr, &q)?;
    if s != 200 {
        return Err(format!("{addr}: {s} {body}"));
    }
    let mut raw = Raw::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let l = labels_of(&v["metric"]);
        let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
        let vals = v["values"].as_array().cloned().unwrap_or_default();
        for (t, val) in ts.iter().zip(vals.iter()) {
            let t = t.as_i64().unwrap_or(0);
            if t <= end_ms {
                add(&mut raw, l.clone(), t, val.as_f64().unwrap_or(f64::NAN));
            }
        }
    }
    Ok(raw)
}

/// Whether two values are the same sample value; `rel` > 0 allows that
/// relative difference (VictoriaMetrics keeps 12 significant decimal
/// digits, by design).
fn same(a: u64, b: u64, rel: f64) -> bool {
    let (x, y) = (f64::from_bits(a), f64::from_bits(b));
    a == b || (x - y).abs() <= rel * x.abs().max(y.abs())
}

/// The first differences between two raw sets, for the failure message.
fn diff(ours: &Raw, theirs: &Raw, rel: f64) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<_> = ours.keys().chain(theirs.keys()).collect();
    for k in keys {
        let (a, b) = (ours.get(k), theirs.get(k));
        let equal = match (a, b) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((t, v), (u, w))| t == u && same(*v, *w, rel))
            }
            (None, None) => true,
            _ => false,
        };
        if !equal {
            let a = a.cloned().unwrap_or_default();
            let b = b.cloned().unwrap_or_default();
            let missing: Vec<_> = a.keys().filter(|t| !b.contains_key(t)).take(3).collect();
            let extra: Vec<_> = b.keys().filter(|t| !a.contains_key(t)).take(3).collect();
            let changed = a
                .iter()
                .filter(|(t, v)| b.get(t).is_some_and(|w| !same(**v, *w, rel)))
                .count();
            out.push(format!(
                "{k:?}: ours {} theirs {} (missing there {missing:?}, extra there {extra:?}, {changed} differ)",
                a.len(),
                b.len()
            ));
            if out.len() >= 8 {
                break;
            }
        }
    }
    out
}

/// A forwarding metric's value summed over endpoints, from `/metrics`.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let (_, text) = get(addr, "/metrics").ok()?;
    let s: Vec<_> = vigil_e2e::parse_text(&text)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    (!s.is_empty()).then(|| s.iter().map(|s| s.value).sum())
}

/// What a run needs from the engine under test.
trait Engine {
    fn start(&mut self);
    fn stop(&mut self);
    fn addr(&self) -> String;
    fn write_path(&self) -> &'static str;
    fn raw(&self, end_ms: i64) -> Result<Raw, String>;
    /// The relative value difference the engine's storage allows.
    fn precision(&self) -> f64 {
        0.0
    }
    /// Whether the engine refuses (400) a request it already stored:
    /// Prometheus does (out of order), so the request that was in flight
    /// at the kill is refused when resent — and counted as failed.
    fn refuses_repeats(&self) -> bool {
        false
    }
}

struct Victoria {
    dir: PathBuf,
    port: u16,
    proc: Option<Proc>,
}

impl Engine for Victoria {
    fn start(&mut self) {
        let a = args(&[
            &format!("-storageDataPath={}", self.dir.join("vm").display()),
            &format!("-httpListenAddr=127.0.0.1:{}", self.port),
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=WARN",
        ]);
        self.proc = Some(Proc::start(
            "victoria-metrics",
            Path::new("victoria-metrics"),
            &a,
            &self.dir.join("logs"),
        ));
        let addr = self.addr();
        wait_for(
            Duration::from_secs(30),
            "VictoriaMetrics ready",
            || match get(&addr, "/health") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(30));
        }
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn write_path(&self) -> &'static str {
        "/api/v1/write"
    }
    fn raw(&self, end_ms: i64) -> Result<Raw, String> {
        raw_from_vm(&self.addr(), end_ms)
    }
    fn precision(&self) -> f64 {
        1e-11
    }
}

struct Prometheus {
    dir: PathBuf,
    port: u16,
    proc: Option<Proc>,
}

impl Engine for Prometheus {
    fn start(&mut self) {
        let cfg = self.dir.join("prometheus.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").expect("prometheus config");
        let a = args(&[
            &format!("--config.file={}", cfg.display()),
            &format!("--storage.tsdb.path={}", self.dir.join("prom").display()),
            &format!("--web.listen-address=127.0.0.1:{}", self.port),
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ]);
        self.proc = Some(Proc::start(
            "prometheus",
            Path::new("prometheus"),
            &a,
            &self.dir.join("logs"),
        ));
        let addr = self.addr();
        wait_for(Duration::from_secs(60), "Prometheus ready", || {
            match get(&addr, "/-/ready") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(30));
        }
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn write_path(&self) -> &'static str {
        "/api/v1/write"
    }
    fn raw(&self, end_ms: i64) -> Result<Raw, String> {
        raw_from_query_api(&self.addr(), end_ms)
    }
    fn refuses_repeats(&self) -> bool {
        true
    }
}

fn run(engine: &mut dyn Engine, dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    engine.start();
    let faults = Arc::new(Faults::default());
    let proxy = start_proxy(&rt, format!("http://{}", engine.addr()), faults.clone());
    let rules = dir.join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: fwd\n    interval: 1s\n    rules:\n      - record: fwd:gen:sum\n        expr: sum(fwd_gen_total)\n",
    )
    .expect("rules");
    let cfg = dir.join("collector.yml");
    std::fs::write(
        &cfg,
        format!(
            "remote_write:\n  - url: http://{proxy}{}\n    name: engine\n    queue_config:\n      max_shards: 4\n      batch_send_deadline: 200ms\n      min_backoff: 50ms\n      max_backoff: 1s\n",
            engine.write_path()
        ),
    )
    .expect("collector config");
    let (hp, gp) = (free_port(), free_port());
    let caddr = format!("127.0.0.1:{hp}");
    let extra = args(&[
        "--config",
        &cfg.display().to_string(),
        "--rules",
        &rules.display().to_string(),
        "--self-scrape-interval",
        "1s",
        "--evaluation-interval",
        "1s",
    ]);
    let mut collector = start_collector(dir, hp, gp, &extra);
    let mut agent = start_agent(dir, gp, &[]);
    let stop_gen = Arc::new(AtomicBool::new(false));
    let generator = start_generator(caddr.clone(), stop_gen.clone());
    std::thread::sleep(Duration::from_secs(3));

    // (a) the engine away for a while, then back
    engine.stop();
    std::thread::sleep(Duration::from_secs(4));
    engine.start();
    std::thread::sleep(Duration::from_secs(2));

    // (b) kill -9 while a request is in flight: the engine took it, the
    // collector never hears so
    faults.hold_next.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(20), "a request in flight", || {
        if faults.holding.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("none yet".into())
        }
    });
    collector.kill9();
    std::thread::sleep(Duration::from_millis(500));
    collector = start_collector(dir, hp, gp, &extra);
    std::thread::sleep(Duration::from_secs(2));

    // (c) a burst of 429s with Retry-After
    faults.too_many.store(5, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "the 429s met", || {
        match faults.too_many.load(Ordering::SeqCst) {
            0 => Ok(()),
            n => Err(format!("{n} left")),
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    // inputs stop; everything up to now must arrive
    stop_gen.store(true, Ordering::SeqCst);
    let rounds = generator.join().expect("generator");
    agent.terminate(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let end_ms = now_ms();
    wait_for(Duration::from_secs(60), "forwarding caught up", || {
        let in_ = metric(
            &caddr,
            "vigil_collector_forward_highest_timestamp_in_seconds",
        )
        .unwrap_or(0.0);
        let pending = metric(&caddr, "vigil_collector_forward_samples_pending").unwrap_or(1.0);
        if in_ * 1000.0 > (end_ms + 1500) as f64 && pending == 0.0 {
            Ok(())
        } else {
            Err(format!("highest in {in_}, pending {pending}"))
        }
    });
    let ours = raw_from_query_api(&caddr, end_ms).expect("collector raw samples");
    assert!(rounds > 50, "the generator ran {rounds} rounds");
    let gen_series = ours
        .keys()
        .filter(|k| k.get("__name__").map(String::as_str) == Some("fwd_gen_total"))
        .count();
    assert_eq!(gen_series, 10);
    assert!(
        ours.keys()
            .any(|k| k.get("__name__").map(String::as_str) == Some("fwd:gen:sum")),
        "no rule output"
    );
    assert!(
        ours.keys()
            .any(|k| k.get("job").map(String::as_str) == Some("vigil-collector")),
        "no self-scrape"
    );
    assert!(
        ours.keys()
            .any(|k| k.get("__name__").is_some_and(|n| n.starts_with("node_"))),
        "no agent data"
    );
    let total: usize = ours.values().map(|s| s.len()).sum();
    // the engine may need a moment to make the last writes searchable
    let mut last = Vec::new();
    for _ in 0..20 {
        let theirs = engine.raw(end_ms).expect("engine raw samples");
        last = diff(&ours, &theirs, engine.precision());
        if last.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // what the forwarder says it did, to tell a loss from a drop on failure
    let forward_metrics = [
        "samples_sent",
        "samples_failed",
        "samples_dropped",
        "samples_retried",
    ]
    .map(|m| {
        let name = format!("vigil_collector_forward_{m}_total");
        format!("{m} {:?}", metric(&caddr, &name))
    })
    .join(", ");
    assert!(
        last.is_empty(),
        "{} of {} series differ ({total} samples; 429s {}, forwarded {}; {forward_metrics}):\n{}\ncollector log: {}",
        last.len(),
        ours.len(),
        faults.refused_429.load(Ordering::SeqCst),
        faults.forwarded.load(Ordering::SeqCst),
        last.join("\n"),
        collector
            .stderr_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let retried = metric(&caddr, "vigil_collector_forward_samples_retried_total").unwrap_or(0.0);
    assert!(retried > 0.0, "the 429s were not retried");
    let failed = metric(&caddr, "vigil_collector_forward_samples_failed_total").unwrap_or(-1.0);
    if engine.refuses_repeats() {
        // at most the request in flight at the kill, per shard
        assert!((0.0..=4.0 * 2000.0).contains(&failed), "failed {failed}");
    } else {
        assert_eq!(failed, 0.0);
    }
    collector.terminate(Duration::from_secs(20));
    engine.stop();
}

#[test]
fn victoria_metrics_holds_every_sample_through_outage_kill_and_429s() {
    if !have("victoria-metrics") {
        eprintln!(
            "victoria-metrics is not installed: skipped (scripts/install-test-deps.sh installs it)"
        );
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let mut vm = Victoria {
        dir: d.path().to_path_buf(),
        port: free_port(),
        proc: None,
    };
    run(&mut vm, d.path());
}

#[test]
fn prometheus_holds_every_sample_through_outage_kill_and_429s() {
    if !have("prometheus") {
        eprintln!(
            "prometheus is not installed: skipped (scripts/install-test-deps.sh installs it)"
        );
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let mut p = Prometheus {
        dir: d.path().to_path_buf(),
        port: free_port(),
        proc: None,
    };
    run(&mut p, d.path());
}
