//! Logs (and OTLP metrics) out of the real collector binary, checked at the
//! wire: a fake Loki decodes every push with the `logproto.PushRequest`
//! schema the collector declares, a fake OTLP receiver decodes with
//! `opentelemetry-proto`. The agent tails a file the test writes; Loki is
//! down (503) for a while, and the collector is `kill -9`ed (between
//! requests) and restarted: every line arrives exactly once, in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use vigil_collector::forward::loki::PushRequest;
use vigil_e2e::{args, free_port, start_agent, start_collector, wait_for};

#[derive(Default)]
struct Received {
    down: AtomicBool,
    /// Requests being answered now.
    busy: AtomicU64,
    last_ms: AtomicU64,
    refused: AtomicU64,
    /// Loki: (stream labels, line) in arrival order.
    loki: Mutex<Vec<(String, i64, String)>>,
    bad: Mutex<Vec<String>>,
    otlp_logs: Mutex<Vec<String>>,
    /// OTLP metrics: name → (is a monotonic sum, points).
    otlp_metrics: Mutex<BTreeMap<String, (bool, usize)>>,
}

fn since_start_ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(b).read_to_end(&mut out);
    out
}

fn start_fakes(rt: &tokio::runtime::Runtime, r: Arc<Received>, t0: Instant) -> SocketAddr {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let (r1, r2, r3) = (r.clone(), r.clone(), r);
    let app = axum::Router::new()
        .route(
            "/loki/api/v1/push",
            axum::routing::post(move |h: HeaderMap, body: Bytes| {
                let r = r1.clone();
                async move {
                    r.busy.fetch_add(1, Ordering::SeqCst);
                    let answer = (|| {
                        if r.down.load(Ordering::SeqCst) {
                            r.refused.fetch_add(1, Ordering::SeqCst);
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let hv = |k: &str| {
                            h.get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        if hv("content-type") != "application/x-protobuf"
                            || hv("content-encoding") != "snappy"
                            || hv("x-scope-orgid") != "tenant-a"
                        {
                            r.bad.lock().push(format!("headers {h:?}"));
                            return StatusCode::BAD_REQUEST;
                        }
                        let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
                            Ok(b) => b,
                            Err(e) => {
                                r.bad.lock().push(format!("snappy: {e}"));
                                return StatusCode::BAD_REQUEST;
                            }
                        };
                        let req = match PushRequest::decode(raw.as_slice()) {
                            Ok(p) => p,
                            Err(e) => {
                                r.bad.lock().push(format!("protobuf: {e}"));
                                return StatusCode::BAD_REQUEST;
                            }
                        };
                        let mut got = r.loki.lock();
                        for s in req.streams {
                            for e in s.entries {
                                let ts = e.timestamp.map(|t| t.as_nanos()).unwrap_or(0);
                                got.push((s.labels.clone(), ts, e.line));
                            }
                        }
                        StatusCode::NO_CONTENT
                    })();
                    r.last_ms.store(since_start_ms(t0), Ordering::SeqCst);
                    r.busy.fetch_sub(1, Ordering::SeqCst);
                    answer
                }
            }),
        )
        .route(
            "/v1/logs",
            axum::routing::post(move |h: HeaderMap, body: Bytes| {
                let r = r2.clone();
                async move {
                    let raw = if h.get("content-encoding").is_some_and(|v| v == "gzip") {
                        gunzip(&body)
                    } else {
                        body.to_vec()
                    };
                    let Ok(req) = ExportLogsServiceRequest::decode(raw.as_slice()) else {
                        r.bad.lock().push("otlp logs: undecodable".into());
                        return StatusCode::BAD_REQUEST;
                    };
                    let mut got = r.otlp_logs.lock();
                    for rl in req.resource_logs {
                        for sl in rl.scope_logs {
                            for l in sl.log_records {
                                if let Some(Value::StringValue(s)) = l.body.and_then(|b| b.value) {
                                    got.push(s);
                                }
                            }
                        }
                    }
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/v1/metrics",
            axum::routing::post(move |h: HeaderMap, body: Bytes| {
                let r = r3.clone();
                async move {
                    let raw = if h.get("content-encoding").is_some_and(|v| v == "gzip") {
                        gunzip(&body)
                    } else {
                        body.to_vec()
                    };
                    let Ok(req) = ExportMetricsServiceRequest::decode(raw.as_slice()) else {
                        r.bad.lock().push("otlp metrics: undecodable".into());
                        return StatusCode::BAD_REQUEST;
                    };
                    let mut got = r.otlp_metrics.lock();
                    for rm in req.resource_metrics {
                        for sm in rm.scope_metrics {
                            for m in sm.metrics {
                                let (sum, n) = match m.data {
                                    Some(Data::Sum(s)) => (s.is_monotonic, s.data_points.len()),
                                    Some(Data::Gauge(g)) => (false, g.data_points.len()),
                                    _ => (false, 0),
                                };
                                let e = got.entry(m.name).or_insert((sum, 0));
                                e.0 |= sum;
                                e.1 += n;
                            }
                        }
                    }
                    StatusCode::OK
                }
            }),
        );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind fakes");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn write_lines(path: &Path, from: u64, to: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file");
    for i in from..to {
        writeln!(f, "line-{i:06}").expect("write");
        if i % 10 == 9 {
            f.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn loki_and_otlp_get_every_line_once_through_an_outage_and_a_kill_9() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let got = Arc::new(Received::default());
    let fake = start_fakes(&rt, got.clone(), t0);
    let d = tempfile::tempdir().expect("tempdir");
    let app = d.path().join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    let log = app.join("a.log");
    let cfg = d.path().join("collector.yml");
    let queue = "    queue_config:\n      batch_send_deadline: 200ms\n      min_backoff: 50ms\n      max_backoff: 500ms\n";
    std::fs::write(
        &cfg,
        format!(
            "loki_push:\n  - url: http://{fake}/loki/api/v1/push\n    tenant_id: tenant-a\n{queue}otlp_export:\n  - endpoint: http://{fake}\n    compression: gzip\n{queue}"
        ),
    )
    .expect("config");
    let (hp, gp) = (free_port(), free_port());
    let extra = args(&[
        "--config",
        &cfg.display().to_string(),
        "--self-scrape-interval",
        "0s",
    ]);
    let mut collector = start_collector(d.path(), hp, gp, &extra);
    let glob = format!("{}/*.log", app.display());
    let mut agent = start_agent(
        d.path(),
        gp,
        &args(&["--log-default-paths", "false", "--log-path", &glob]),
    );

    write_lines(&log, 0, 300);
    // Loki away: 503s, retried
    got.down.store(true, Ordering::SeqCst);
    write_lines(&log, 300, 600);
    std::thread::sleep(Duration::from_secs(2));
    got.down.store(false, Ordering::SeqCst);
    write_lines(&log, 600, 900);
    // kill -9 between requests, restart, go on
    wait_for(Duration::from_secs(30), "Loki caught up and idle", || {
        let n = got.loki.lock().len();
        let idle = since_start_ms(t0).saturating_sub(got.last_ms.load(Ordering::SeqCst));
        if n >= 900 && idle > 1500 && got.busy.load(Ordering::SeqCst) == 0 {
            Ok(())
        } else {
            Err(format!("{n} lines, idle {idle} ms"))
        }
    });
    collector.kill9();
    write_lines(&log, 900, 1200);
    collector = start_collector(d.path(), hp, gp, &extra);
    write_lines(&log, 1200, 1500);
    wait_for(
        Duration::from_secs(60),
        "every line at Loki and the OTLP receiver",
        || {
            let (n, m) = (got.loki.lock().len(), got.otlp_logs.lock().len());
            if n >= 1500 && m >= 1500 {
                Ok(())
            } else {
                Err(format!("loki {n}, otlp {m}"))
            }
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    agent.terminate(Duration::from_secs(20));

    assert!(
        got.bad.lock().is_empty(),
        "bad requests: {:?}",
        got.bad.lock()
    );
    assert!(
        got.refused.load(Ordering::SeqCst) > 0,
        "the outage was not seen"
    );
    let lines = got.loki.lock().clone();
    let want: Vec<String> = (0..1500).map(|i| format!("line-{i:06}")).collect();
    let texts: Vec<String> = lines.iter().map(|l| l.2.clone()).collect();
    assert_eq!(texts.len(), want.len(), "lost or doubled at Loki");
    assert_eq!(texts, want, "out of order at Loki");
    let stream = &lines[0].0;
    assert!(
        stream.starts_with('{') && stream.contains("node=") && stream.contains("stream=\"stdout\""),
        "{stream}"
    );
    assert!(
        lines.iter().all(|l| l.1 > 1_600_000_000_000_000_000),
        "timestamps in ns"
    );
    assert!(
        lines.windows(2).all(|w| w[0].1 <= w[1].1),
        "timestamps go forward"
    );
    let otlp = got.otlp_logs.lock().clone();
    assert_eq!(otlp, want, "OTLP logs lost, doubled or out of order");
    let metrics = got.otlp_metrics.lock().clone();
    let cpu = metrics
        .get("node_cpu_seconds_total")
        .copied()
        .unwrap_or_default();
    assert!(
        cpu.0 && cpu.1 > 0,
        "node_cpu_seconds_total as a monotonic sum: {cpu:?}"
    );
    let load = metrics.get("node_load1").copied().unwrap_or_default();
    assert!(!load.0 && load.1 > 0, "node_load1 as a gauge: {load:?}");
    collector.terminate(Duration::from_secs(20));
}
