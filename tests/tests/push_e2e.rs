//! Pushes into the real collector binary: OTLP from the real OpenTelemetry
//! Python SDK (HTTP and gRPC exporters) and Loki push from the real
//! python-logging-loki client (both from the venv that
//! `scripts/install-test-deps.sh` makes; `VIGIL_TEST_VENV`, default
//! `/opt/vigil-test-venv`), Loki protobuf+snappy built here, malformed and
//! oversized pushes, and `kill -9` after acknowledged pushes.
//!
//! Prometheus 2.42 (the reference installed here) has no OTLP receiver
//! (`--enable-feature=otlp-write-receiver` arrived in 2.47), so the names
//! and labels expected below are those the Prometheus receiver's rules
//! give (see `docs/push.md`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil_collector::http::loki_push::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
use vigil_e2e::{
    Proc, args, find, free_port, get, http_with_headers, parse_text, start_collector, url_encode,
};

fn python() -> PathBuf {
    let venv = std::env::var("VIGIL_TEST_VENV").unwrap_or_else(|_| "/opt/vigil-test-venv".into());
    let p = Path::new(&venv).join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-test-deps.sh (it makes the push clients' venv)",
        p.display()
    );
    p
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/push")
        .join(name)
}

/// Runs a push script; panics with its output unless it succeeds.
fn run_script(name: &str, a: &[&str]) {
    let out = Command::new(python())
        .arg(script(name))
        .args(a)
        .env("OTEL_SDK_DISABLED", "false")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{name} {a:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// An instant PromQL query: (labels, value) per series.
fn query(addr: &str, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let (code, body) = get(addr, &format!("/api/v1/query?query={}", url_encode(q))).unwrap();
    assert_eq!(code, 200, "{q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r["value"][1]
                .as_str()
                .unwrap_or("NaN")
                .parse()
                .unwrap_or(f64::NAN);
            (labels, value)
        })
        .collect()
}

/// The one value of `q`, or a panic naming what came back.
fn value(addr: &str, q: &str) -> f64 {
    let r = query(addr, q);
    assert_eq!(r.len(), 1, "{q}: {r:?}");
    r[0].1
}

/// Log lines (stream labels, line) a LogQL query returns, oldest first.
fn lines(addr: &str, q: &str) -> Vec<(BTreeMap<String, String>, String)> {
    let start = now_ns() - 3_600_000_000_000;
    let (code, body) = get(
        addr,
        &format!(
            "/loki/api/v1/query_range?query={}&start={start}&limit=5000&direction=forward",
            url_encode(q)
        ),
    )
    .unwrap();
    assert_eq!(code, 200, "{q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let labels: BTreeMap<String, String> = s["stream"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        for e in s["values"].as_array().cloned().unwrap_or_default() {
            out.push((
                e[0].as_str().unwrap_or("").parse::<i64>().unwrap_or(0),
                labels.clone(),
                e[1].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out.sort_by_key(|e| e.0);
    out.into_iter().map(|(_, l, s)| (l, s)).collect()
}

/// A self-metric's value from `/metrics` (0 when absent).
fn self_metric(addr: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    let (_, text) = get(addr, "/metrics").unwrap();
    find(&parse_text(&text), name, want)
        .iter()
        .map(|s| s.value)
        .sum()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn opentelemetry_sdk_metrics_and_logs_over_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp) = (free_port(), free_port());
    let _c = start_collector(dir.path(), hp, gp, &[]);
    let addr = format!("127.0.0.1:{hp}");
    run_script(
        "otel_push.py",
        &["http", &format!("http://{addr}"), "pod-http"],
    );
    run_script(
        "otel_push.py",
        &["grpc", &format!("127.0.0.1:{gp}"), "pod-grpc"],
    );
    run_script(
        "otel_push.py",
        &["delta", &format!("http://{addr}"), "pod-delta"],
    );

    for (inst, protocol) in [("pod-http", "otlp_http"), ("pod-grpc", "otlp_grpc")] {
        let sel = format!(r#"job="shop/checkout",instance="{inst}""#);
        // counter: `{order}` adds no unit word, monotonic → _total
        for (method, want) in [("card", 3.0), ("cash", 2.0)] {
            assert_eq!(
                value(
                    &addr,
                    &format!(r#"shop_orders_total{{{sel},payment_method="{method}"}}"#)
                ),
                want
            );
        }
        // gauges: By → bytes, 1 → ratio; an up-down counter is a gauge
        assert_eq!(
            value(&addr, &format!("shop_queue_depth_bytes{{{sel}}}")),
            42.5
        );
        assert_eq!(
            value(&addr, &format!("shop_cpu_utilization_ratio{{{sel}}}")),
            0.75
        );
        assert_eq!(value(&addr, &format!("shop_carts_open{{{sel}}}")), 7.0);
        // histogram: SDK default bounds 0, 5, 10, 25, …; 5 values
        let h = "shop_checkout_duration_seconds";
        for (le, want) in [
            ("0", 0.0),
            ("5", 4.0),
            ("10", 5.0),
            ("10000", 5.0),
            ("+Inf", 5.0),
        ] {
            assert_eq!(
                value(
                    &addr,
                    &format!(r#"{h}_bucket{{{sel},route="/pay",le="{le}"}}"#)
                ),
                want,
                "le={le}"
            );
        }
        assert_eq!(value(&addr, &format!("{h}_count{{{sel}}}")), 5.0);
        assert!((value(&addr, &format!("{h}_sum{{{sel}}}")) - 8.524).abs() < 1e-9);
        // rank 2.5 of 5 falls in (0, 5] holding 4: 5 × 2.5 / 4
        assert_eq!(
            value(
                &addr,
                &format!("histogram_quantile(0.5, {h}_bucket{{{sel}}})")
            ),
            3.125
        );
        // the other resource attributes on target_info
        let ti = query(&addr, &format!("target_info{{{sel}}}"));
        assert_eq!(ti.len(), 1, "{ti:?}");
        let l = &ti[0].0;
        assert_eq!(l["deployment_environment"], "test");
        assert_eq!(l["telemetry_sdk_language"], "python");
        assert!(!l.contains_key("service_name"), "{l:?}");
        assert!(
            self_metric(
                &addr,
                "vigil_collector_push_samples_received_total",
                &[("protocol", protocol)]
            ) > 0.0
        );

        // logs: Loki's OTLP stream labels, one stream per level
        let got = lines(
            &addr,
            &format!(r#"{{service_name="checkout", service_instance_id="{inst}"}}"#),
        );
        let texts: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(texts.len(), 3, "{got:?}");
        let mode = &inst[4..];
        assert!(
            texts[0].starts_with(&format!("order placed via {mode}")),
            "{texts:?}"
        );
        assert!(texts[0].contains(" order_id=o-17"), "{texts:?}");
        assert!(texts[1].starts_with(&format!("payment slow via {mode}")));
        assert!(texts[2].starts_with(&format!("payment failed via {mode}")));
        let base = [
            ("service_name", "checkout"),
            ("service_namespace", "shop"),
            ("service_instance_id", inst),
            ("deployment_environment", "test"),
        ];
        for ((l, _), level) in got.iter().zip(["info", "warn", "error"]) {
            let mut want = labels(&base);
            want.insert("detected_level".into(), level.into());
            assert_eq!(l, &want);
        }
        assert_eq!(
            self_metric(
                &addr,
                "vigil_collector_push_log_records_received_total",
                &[("protocol", protocol)]
            ),
            3.0
        );
    }
    // errors of both pushes, by level label
    assert_eq!(
        lines(
            &addr,
            r#"{service_name="checkout", detected_level="error"}"#
        )
        .len(),
        2
    );
    // metadata from the SDK's description and unit
    let (_, md) = get(&addr, "/api/v1/metadata?metric=shop_orders_total").unwrap();
    assert!(
        md.contains(r#""type":"counter""#) && md.contains("Orders placed"),
        "{md}"
    );
    // delta temporality: refused with a reason, counted, nothing stored
    assert!(query(&addr, r#"{__name__=~"shop_delta.*"}"#).is_empty());
    assert_eq!(
        self_metric(
            &addr,
            "vigil_collector_push_refused_total",
            &[
                ("protocol", "otlp_http"),
                ("signal", "metrics"),
                ("reason", "delta_temporality")
            ]
        ),
        1.0
    );
}

fn snappy_push(req: &PushRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

fn entry(ts_ns: i64, line: &str) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp {
            seconds: ts_ns.div_euclid(1_000_000_000),
            nanos: ts_ns.rem_euclid(1_000_000_000) as i32,
        }),
        line: line.as_bytes().to_vec(),
        structured_metadata: vec![],
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn loki_push_from_python_logging_loki_and_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp) = (free_port(), free_port());
    let _c = start_collector(dir.path(), hp, gp, &[]);
    let addr = format!("127.0.0.1:{hp}");
    run_script(
        "loki_push.py",
        &[&format!("http://{addr}/loki/api/v1/push")],
    );
    let got = lines(&addr, r#"{application="billing"}"#);
    let texts: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            "invoice 1 sent",
            "invoice 2 delayed",
            "invoice 3 failed: card declined"
        ]
    );
    assert_eq!(
        got[1].0,
        labels(&[
            ("application", "billing"),
            ("severity", "warning"),
            ("logger", "billing.worker"),
            ("customer", "acme")
        ])
    );

    // protobuf + snappy: a good stream is stored even when another is refused
    let now = now_ns();
    let mut with_md = entry(now - 2_000, "with metadata");
    with_md.structured_metadata = vec![vigil_collector::http::loki_push::LabelPairAdapter {
        name: "trace_id".into(),
        value: "abc".into(),
    }];
    let req = PushRequest {
        streams: vec![
            StreamAdapter {
                labels: r#"{app="pb", env="e2e"}"#.into(),
                entries: vec![entry(now - 3_000, "first"), with_md],
                hash: 0,
            },
            StreamAdapter {
                labels: "{app=pb}".into(),
                entries: vec![entry(now, "lost")],
                hash: 0,
            },
            StreamAdapter {
                labels: r#"{app="pb", env="e2e"}"#.into(),
                entries: vec![entry(1_000_000_000, "too old")],
                hash: 0,
            },
        ],
    };
    let (code, body) = http_with_headers(
        "POST",
        &addr,
        "/loki/api/v1/push",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("X-Scope-OrgID", "tenant-a"),
        ],
        &snappy_push(&req),
    )
    .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("error parsing labels {app=pb}"), "{body}");
    assert!(body.contains("timestamp too old"), "{body}");
    let got = lines(&addr, r#"{app="pb"}"#);
    let texts: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(texts, vec!["first", "with metadata trace_id=abc"]);
    assert_eq!(
        self_metric(
            &addr,
            "vigil_collector_push_refused_total",
            &[("protocol", "loki"), ("reason", "invalid_labels")]
        ),
        1.0
    );
    assert_eq!(
        self_metric(
            &addr,
            "vigil_collector_push_refused_total",
            &[("protocol", "loki"), ("reason", "too_old")]
        ),
        1.0
    );

    // JSON, gzip'd: 204
    let json = format!(
        r#"{{"streams":[{{"stream":{{"app":"gz"}},"values":[["{}","zipped line"]]}}]}}"#,
        now
    );
    let (code, body) = http_with_headers(
        "POST",
        &addr,
        "/loki/api/v1/push",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(json.as_bytes()),
    )
    .unwrap();
    assert_eq!(code, 204, "{}", String::from_utf8_lossy(&body));
    assert_eq!(lines(&addr, r#"{app="gz"}"#)[0].1, "zipped line");
    assert_eq!(
        self_metric(
            &addr,
            "vigil_collector_push_log_records_received_total",
            &[("protocol", "loki")]
        ),
        6.0
    );
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// An OTLP gauge request: `series` points at `t_ns`, value `v`.
fn gauge_request(series: usize, t_ns: i64, v: f64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "dur")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "dur.gauge".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: (0..series)
                            .map(|i| NumberDataPoint {
                                attributes: vec![kv("i", &i.to_string())],
                                time_unix_nano: t_ns as u64,
                                value: Some(number_data_point::Value::AsDouble(v)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn status_message(body: &[u8]) -> String {
    vigil_collector::http::otlp::RpcStatus::decode(body)
        .map(|s| s.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

#[test]
fn malformed_and_oversized_pushes_get_4xx_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp) = (free_port(), free_port());
    let _c = start_collector(
        dir.path(),
        hp,
        gp,
        &args(&["--push-max-body-bytes", "64KiB"]),
    );
    let addr = format!("127.0.0.1:{hp}");
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        http_with_headers("POST", &addr, path, headers, body).unwrap()
    };
    let pb = [("Content-Type", "application/x-protobuf")];
    let js = [("Content-Type", "application/json")];

    let (code, body) = post("/v1/metrics", &pb, b"\xff\xff\xff garbage");
    assert_eq!(code, 400);
    assert!(status_message(&body).contains("protobuf"), "{body:?}");
    let (code, body) = post("/v1/logs", &js, b"{\"resourceLogs\": 7}");
    assert_eq!(code, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(v["message"].as_str().unwrap().contains("JSON"), "{v}");
    let (code, _) = post("/v1/metrics", &[("Content-Type", "text/plain")], b"x");
    assert_eq!(code, 415);
    let gz = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "gzip"),
    ];
    let (code, _) = post("/v1/metrics", &gz, b"not gzip");
    assert_eq!(code, 400);
    let br = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "br"),
    ];
    let (code, _) = post("/v1/metrics", &br, b"x");
    assert_eq!(code, 415);
    // over 64 KiB, plain and once inflated
    let big = gauge_request(3000, now_ns(), 1.0).encode_to_vec();
    assert!(big.len() > 64 << 10);
    let (code, body) = post("/v1/metrics", &pb, &big);
    assert_eq!(code, 413, "{}", status_message(&body));
    let (code, _) = post("/v1/metrics", &gz, &gzip(&big));
    assert_eq!(code, 413);
    // Loki push: not snappy, not JSON
    let (code, _) = post("/loki/api/v1/push", &pb, b"garbage");
    assert_eq!(code, 400);
    let (code, _) = post("/loki/api/v1/push", &js, b"{\"streams\":");
    assert_eq!(code, 400);
    // gRPC: a body that is not an ExportMetricsServiceRequest
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{gp}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(ch);
        client.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<Garbage, ExportMetricsServiceRequest>::default();
        client
            .unary(
                tonic::Request::new(Garbage {
                    resource_metrics: vec![0xff; 9],
                }),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                ),
                codec,
            )
            .await
            .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");

    let refused = |protocol: &str, signal: &str, reason: &str| {
        self_metric(
            &addr,
            "vigil_collector_push_refused_requests_total",
            &[
                ("protocol", protocol),
                ("signal", signal),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(refused("otlp_http", "metrics", "malformed"), 2.0);
    assert_eq!(refused("otlp_http", "logs", "malformed"), 1.0);
    assert_eq!(
        refused("otlp_http", "metrics", "unsupported_media_type"),
        1.0
    );
    assert_eq!(refused("otlp_http", "metrics", "unsupported_encoding"), 1.0);
    assert_eq!(refused("otlp_http", "metrics", "too_large"), 2.0);
    assert_eq!(refused("loki", "logs", "malformed"), 2.0);
    assert_eq!(refused("otlp_grpc", "metrics", "malformed"), 1.0);
    // and the collector serves on
    let (code, body) = post(
        "/v1/metrics",
        &pb,
        &gauge_request(2, now_ns(), 1.0).encode_to_vec(),
    );
    assert_eq!(code, 200, "{}", status_message(&body));
    assert_eq!(value(&addr, "count(dur_gauge)"), 2.0);
}

/// Field 1 of ExportMetricsServiceRequest as bytes that are not a message.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(bytes = "vec", tag = "1")]
    resource_metrics: Vec<u8>,
}

fn start(dir: &Path, hp: u16, gp: u16) -> Proc {
    start_collector(dir, hp, gp, &[])
}

#[test]
fn acknowledged_pushes_survive_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{hp}");
    let mut c = start(dir.path(), hp, gp);
    let series = 200;
    let rounds = 20;
    let lines_per_round = 50;
    let t0 = now_ns() - 600_000_000_000;
    let pad = "x".repeat(600);
    for r in 0..rounds {
        let t = t0 + r as i64 * 10_000_000_000;
        let (code, body) = http_with_headers(
            "POST",
            &addr,
            "/v1/metrics",
            &[("Content-Type", "application/x-protobuf")],
            &gauge_request(series, t, r as f64).encode_to_vec(),
        )
        .unwrap();
        assert_eq!(code, 200, "{}", status_message(&body));
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{app="dur"}"#.into(),
                entries: (0..lines_per_round)
                    // long enough that the log store seals chunks (256 KiB)
                    // before the kill: replay then meets lines it holds
                    .map(|i| entry(t + i as i64, &format!("round {r} line {i} {pad}")))
                    .collect(),
                hash: 0,
            }],
        };
        let (code, body) = http_with_headers(
            "POST",
            &addr,
            "/loki/api/v1/push",
            &[("Content-Type", "application/x-protobuf")],
            &snappy_push(&req),
        )
        .unwrap();
        assert_eq!(code, 204, "{}", String::from_utf8_lossy(&body));
    }
    c.kill9();
    let check = |what: &str| {
        let samples = value(&addr, "sum(count_over_time(dur_gauge[1h]))");
        assert_eq!(samples, (series * rounds) as f64, "{what}: samples");
        let got = lines(&addr, r#"{app="dur"}"#);
        assert_eq!(got.len(), rounds * lines_per_round, "{what}: lines");
        let distinct: std::collections::BTreeSet<&str> =
            got.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(distinct.len(), got.len(), "{what}: repeated lines");
    };
    let mut c = start(dir.path(), hp, gp);
    check("after kill -9");
    // the replay re-delivered lines the store had sealed: dropped as repeats
    assert!(
        self_metric(&addr, "vigil_collector_log_duplicate_records_total", &[]) > 0.0,
        "the replay met no stored line"
    );
    // a clean stop checkpoints (the log store flushes, the WAL is cut); the
    // next start must not add the replayed lines again
    assert!(c.terminate(Duration::from_secs(20)).is_some());
    let mut c = start(dir.path(), hp, gp);
    check("after a clean restart");
    c.kill9();
    let _c = start(dir.path(), hp, gp);
    check("after a second kill -9");
}
