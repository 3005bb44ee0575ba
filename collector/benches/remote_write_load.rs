//! Remote-write and OTLP ingest rate: the same samples as a Prometheus
//! remote-write 1.0 stream (snappy block + protobuf `WriteRequest`) pushed
//! to VictoriaMetrics, Prometheus and vigil, and as OTLP/HTTP protobuf
//! (`ExportMetricsServiceRequest`, gzip'd or not) pushed to vigil's
//! `/v1/metrics`, each receiver pinned to one core with `taskset`,
//! measuring samples per second of wall time and per CPU-second the
//! receiver spent. (Neither Prometheus 2.42 nor VictoriaMetrics 1.79, the
//! references installed here, has an OTLP receiver: their remote-write
//! figures for the same samples are the comparison.)
//!
//! ```text
//! cargo bench -p vigil-collector --bench remote_write_load
//! RW_TARGETS=victoria-metrics,prometheus,vigil,vigil-otlp,vigil-otlp-raw
//!            which receivers (default: all five); vigil-otlp is OTLP/HTTP
//!            protobuf with Content-Encoding gzip, vigil-otlp-raw without
//!            url=http://127.0.0.1:9090/api/v1/write[@PID]   any other receiver
//! RW_SERIES=100000 RW_STEPS=12 RW_BATCH=2000 RW_CONCURRENCY=4 RW_JITTER_MS=0 RW_CPU=0
//! VIGIL_COLLECTOR_BIN=target/release/vigil-collector   (the `vigil` target; skipped if absent)
//! ```
//!
//! The stream: `RW_SERIES` cAdvisor-like series (see `common/cadvisor.rs`),
//! `RW_STEPS` scrapes 10 s apart ending now, `RW_BATCH` samples per request.
//! An OTLP request carries the same batch: one gauge per metric name, the
//! other labels as attributes, no resource attributes — so vigil stores
//! exactly the series remote write makes (no `job`, no `target_info`).
//! The requests are encoded before any receiver starts, so the generator's
//! own work is not measured; a scrape's requests go `RW_CONCURRENCY` at a
//! time, scrapes one after the other (receivers refuse out-of-order samples).
//! The generator runs on the other cores (`taskset` excludes `RW_CPU`).
//! Receivers that are not installed are skipped with a message.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};

#[path = "common/cadvisor.rs"]
mod cadvisor;

use cadvisor::{SERIES_PER_CONTAINER, STEP_MS, container_rng, container_series, jitter_ms};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Encoded request bodies, one list per scrape, per encoding.
struct Stream {
    steps: Vec<Vec<Vec<u8>>>,
    /// The same batches as OTLP protobuf, gzip'd and not (empty unless asked).
    otlp_gzip: Vec<Vec<Vec<u8>>>,
    otlp_raw: Vec<Vec<Vec<u8>>>,
    samples: u64,
    bytes: u64,
}

/// How a target is fed.
#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    RemoteWrite,
    OtlpGzip,
    OtlpRaw,
}

/// A remote-write batch as an OTLP request: one gauge per metric name.
fn otlp_body(ts: &[TimeSeries]) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data,
        number_data_point,
    };
    let mut metrics: Vec<Metric> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for t in ts {
        let name = t
            .labels
            .iter()
            .find(|l| l.name == "__name__")
            .map(|l| l.value.clone())
            .unwrap_or_default();
        let i = *index.entry(name.clone()).or_insert_with(|| {
            metrics.push(Metric {
                name,
                data: Some(Data::Gauge(Gauge::default())),
                ..Default::default()
            });
            metrics.len() - 1
        });
        let Some(Data::Gauge(g)) = metrics[i].data.as_mut() else {
            continue;
        };
        for s in &t.samples {
            g.data_points.push(NumberDataPoint {
                attributes: t
                    .labels
                    .iter()
                    .filter(|l| l.name != "__name__")
                    .map(|l| KeyValue {
                        key: l.name.clone(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(l.value.clone())),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                time_unix_nano: (s.timestamp as u64) * 1_000_000,
                value: Some(number_data_point::Value::AsDouble(s.value)),
                ..Default::default()
            });
        }
    }
    prost::Message::encode_to_vec(&ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

fn build_stream(
    series: usize,
    steps: i64,
    batch: usize,
    jitter: i64,
    otlp: bool,
) -> anyhow::Result<Stream> {
    let now = vigil_common::time::now_ms();
    let t0 = (now / STEP_MS - steps) * STEP_MS;
    let containers = series.div_ceil(SERIES_PER_CONTAINER);
    let mut state: Vec<_> = (0..containers)
        .map(|c| {
            let s: Vec<(Vec<Label>, cadvisor::Gen)> = container_series(c)
                .into_iter()
                .map(|(pairs, g)| {
                    let labels = pairs
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect();
                    (labels, g)
                })
                .collect();
            (s, container_rng(c))
        })
        .collect();
    let mut out = Stream {
        steps: Vec::new(),
        otlp_gzip: Vec::new(),
        otlp_raw: Vec::new(),
        samples: 0,
        bytes: 0,
    };
    let mut enc = snap::raw::Encoder::new();
    for step in 0..steps {
        let mut bodies = Vec::new();
        let (mut raw_bodies, mut gz_bodies) = (Vec::new(), Vec::new());
        let mut otlp_encode = |ts: &[TimeSeries]| {
            if otlp {
                let raw = otlp_body(ts);
                gz_bodies.push(gzip(&raw));
                raw_bodies.push(raw);
            }
        };
        let mut ts: Vec<TimeSeries> = Vec::with_capacity(batch);
        for (series, rng) in state.iter_mut() {
            let t = t0 + step * STEP_MS + jitter_ms(rng, jitter);
            for (labels, g) in series.iter_mut() {
                ts.push(TimeSeries {
                    labels: labels.clone(),
                    samples: vec![Sample {
                        value: g.value(rng, t),
                        timestamp: t,
                    }],
                });
            }
            if ts.len() >= batch {
                out.samples += ts.len() as u64;
                otlp_encode(&ts);
                let req = WriteRequest {
                    timeseries: std::mem::take(&mut ts),
                    metadata: vec![],
                };
                let body = enc.compress_vec(&prost::Message::encode_to_vec(&req))?;
                out.bytes += body.len() as u64;
                bodies.push(body);
            }
        }
        if !ts.is_empty() {
            out.samples += ts.len() as u64;
            otlp_encode(&ts);
            let req = WriteRequest {
                timeseries: std::mem::take(&mut ts),
                metadata: vec![],
            };
            let body = enc.compress_vec(&prost::Message::encode_to_vec(&req))?;
            out.bytes += body.len() as u64;
            bodies.push(body);
        }
        out.steps.push(bodies);
        out.otlp_raw.push(raw_bodies);
        out.otlp_gzip.push(gz_bodies);
    }
    Ok(out)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the parenthesised command name
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on
    Some((utime + stime) / 100.0)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A receiver under test: a child we started, or an external URL.
struct Target {
    name: String,
    url: String,
    encoding: Encoding,
    ready: Option<String>,
    pid: Option<u32>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pinned(cpu: u64, bin: &str) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu.to_string()).arg(bin);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn spawn(name: &str, cpu: u64) -> anyhow::Result<Option<Target>> {
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let base = format!("http://127.0.0.1:{port}");
    let (cmd, ready) = match name {
        "victoria-metrics" => {
            if !Path::new("/usr/bin/victoria-metrics").exists() {
                return Ok(None);
            }
            let mut c = pinned(cpu, "/usr/bin/victoria-metrics");
            c.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-storageDataPath={}", dir.path().display()))
                .arg("-retentionPeriod=100y");
            (c, format!("{base}/health"))
        }
        "prometheus" => {
            if !Path::new("/usr/bin/prometheus").exists() {
                return Ok(None);
            }
            let cfg = dir.path().join("prometheus.yml");
            std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n")?;
            let mut c = pinned(cpu, "/usr/bin/prometheus");
            c.arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver");
            (c, format!("{base}/-/ready"))
        }
        "vigil" | "vigil-otlp" | "vigil-otlp-raw" => {
            let bin = std::env::var("VIGIL_COLLECTOR_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/vigil-collector")
                });
            if !bin.exists() {
                return Ok(None);
            }
            let grpc = free_port()?;
            let mut c = pinned(cpu, &bin.to_string_lossy());
            c.arg("--http-listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--grpc-listen")
                .arg(format!("127.0.0.1:{grpc}"))
                .arg("--data-dir")
                .arg(dir.path());
            (c, format!("{base}/-/ready"))
        }
        other => anyhow::bail!("unknown target {other}"),
    };
    let mut cmd = cmd;
    let child = cmd.spawn()?;
    let (encoding, path) = match name {
        "vigil-otlp" => (Encoding::OtlpGzip, "/v1/metrics"),
        "vigil-otlp-raw" => (Encoding::OtlpRaw, "/v1/metrics"),
        _ => (Encoding::RemoteWrite, "/api/v1/write"),
    };
    Ok(Some(Target {
        name: name.to_string(),
        url: format!("{base}{path}"),
        encoding,
        ready: Some(ready),
        pid: Some(child.id()),
        child: Some(child),
        _dir: Some(dir),
    }))
}

fn external(spec: &str) -> anyhow::Result<Target> {
    let (url, pid) = match spec.rsplit_once('@') {
        Some((u, p)) => (u.to_string(), Some(p.parse()?)),
        None => (spec.to_string(), None),
    };
    Ok(Target {
        name: url.clone(),
        encoding: if url.ends_with("/v1/metrics") {
            Encoding::OtlpGzip
        } else {
            Encoding::RemoteWrite
        },
        url,
        ready: None,
        pid,
        child: None,
        _dir: None,
    })
}

struct Outcome {
    wall: Duration,
    cpu: Option<f64>,
    failed: u64,
    first_error: Option<String>,
}

async fn push(
    client: &reqwest::Client,
    t: &Target,
    stream: &Stream,
    concurrency: usize,
) -> Outcome {
    let cpu0 = t.pid.and_then(cpu_seconds);
    let start = Instant::now();
    let mut failed = 0;
    let mut first_error = None;
    let steps = match t.encoding {
        Encoding::RemoteWrite => &stream.steps,
        Encoding::OtlpGzip => &stream.otlp_gzip,
        Encoding::OtlpRaw => &stream.otlp_raw,
    };
    for bodies in steps {
        let mut results = futures::stream::iter(bodies.iter().cloned())
            .map(|body| async move {
                let req = client
                    .post(&t.url)
                    .header("Content-Type", "application/x-protobuf");
                let req = match t.encoding {
                    Encoding::RemoteWrite => req
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0"),
                    Encoding::OtlpGzip => req.header("Content-Encoding", "gzip"),
                    Encoding::OtlpRaw => req,
                };
                let r = req.body(body).send().await;
                match r {
                    Ok(r) if r.status().is_success() && t.encoding != Encoding::RemoteWrite => {
                        // an OTLP 200 may still refuse part (partial success)
                        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
                        let b = r.bytes().await.unwrap_or_default();
                        match <ExportMetricsServiceResponse as prost::Message>::decode(b.as_ref()) {
                            Ok(resp) => match resp.partial_success {
                                Some(p) if p.rejected_data_points > 0 => Err(format!(
                                    "{} points refused: {}",
                                    p.rejected_data_points, p.error_message
                                )),
                                _ => Ok(()),
                            },
                            Err(e) => Err(format!("undecodable OTLP response: {e}")),
                        }
                    }
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            })
            .buffer_unordered(concurrency);
        while let Some(r) = results.next().await {
            if let Err(e) = r {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let wall = start.elapsed();
    let cpu = match (cpu0, t.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Outcome {
        wall,
        cpu,
        failed,
        first_error,
    }
}

async fn wait_ready(client: &reqwest::Client, t: &Target) -> anyhow::Result<()> {
    let Some(url) = &t.ready else { return Ok(()) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{} not ready after 60 s", t.name);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let series = env("RW_SERIES", 100_000) as usize;
    let steps = env("RW_STEPS", 12) as i64;
    let batch = env("RW_BATCH", 2_000) as usize;
    let concurrency = env("RW_CONCURRENCY", 4) as usize;
    let jitter = env("RW_JITTER_MS", 0) as i64;
    let cpu = env("RW_CPU", 0);
    let targets = std::env::var("RW_TARGETS")
        .unwrap_or_else(|_| "victoria-metrics,prometheus,vigil,vigil-otlp,vigil-otlp-raw".into());
    let otlp = targets.contains("otlp") || targets.contains("/v1/metrics");

    // the generator stays off the receivers' core
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    if cores > 1 {
        let others: Vec<String> = (0..cores)
            .filter(|c| *c != cpu)
            .map(|c| c.to_string())
            .collect();
        let _ = Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                &others.join(","),
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::null())
            .status();
    }

    let t = Instant::now();
    let stream = build_stream(series, steps, batch, jitter, otlp)?;
    println!(
        "remote-write stream: {} series x {} scrapes = {} samples in {} requests ({:.1} MiB snappy, {:.1} B/sample on the wire), encoded in {:.2?}",
        series.div_ceil(SERIES_PER_CONTAINER) * SERIES_PER_CONTAINER,
        steps,
        stream.samples,
        stream.steps.iter().map(Vec::len).sum::<usize>(),
        stream.bytes as f64 / 1048576.0,
        stream.bytes as f64 / stream.samples as f64,
        t.elapsed()
    );
    if otlp {
        let mib = |v: &Vec<Vec<Vec<u8>>>| {
            v.iter().flatten().map(Vec::len).sum::<usize>() as f64 / 1048576.0
        };
        println!(
            "the same as OTLP/HTTP protobuf: {:.1} MiB ({:.1} B/sample), {:.1} MiB gzip'd ({:.1} B/sample)",
            mib(&stream.otlp_raw),
            mib(&stream.otlp_raw) * 1048576.0 / stream.samples as f64,
            mib(&stream.otlp_gzip),
            mib(&stream.otlp_gzip) * 1048576.0 / stream.samples as f64,
        );
    }
    println!(
        "receivers pinned to CPU {cpu}; {concurrency} requests in flight; {batch} samples per request\n"
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .timeout(Duration::from_secs(120))
            .build()?;
        println!(
            "{:<20} {:>10} {:>14} {:>12} {:>18} {:>10} {:>8}",
            "receiver", "wall", "samples/s", "CPU s", "samples/CPU-s", "RSS MiB", "failed"
        );
        for spec in targets.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let target = match spec.strip_prefix("url=") {
                Some(u) => Some(external(u)?),
                None => spawn(spec, cpu)?,
            };
            let Some(target) = target else {
                println!("{spec:<20} skipped: not installed");
                continue;
            };
            wait_ready(&client, &target).await?;
            let o = push(&client, &target, &stream, concurrency).await;
            let rss = target.pid.and_then(rss_mib);
            println!(
                "{:<20} {:>10.2?} {:>14.0} {:>12} {:>18} {:>10} {:>8}",
                target.name,
                o.wall,
                stream.samples as f64 / o.wall.as_secs_f64(),
                o.cpu.map_or("-".into(), |c| format!("{c:.2}")),
                o.cpu
                    .filter(|c| *c > 0.0)
                    .map_or("-".into(), |c| format!("{:.0}", stream.samples as f64 / c)),
                rss.map_or("-".into(), |r| format!("{r:.0}")),
                o.failed
            );
            if let Some(e) = o.first_error {
                println!(
                    "    first error: {}",
                    e.chars().take(300).collect::<String>()
                );
            }
        }
        anyhow::Ok(())
    })?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average at the end: {}", load.trim());
    Ok(())
}
