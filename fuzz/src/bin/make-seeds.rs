//! Writes the binary seed corpora (`fuzz/corpus/<target>/seed-*`) from
//! realistic requests: remote-write bodies, vigil.v1 agent streams, OTLP and
//! Loki protobuf pushes. Each file starts with the selector byte its target
//! reads first. Run from the repository root:
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --features seeds --bin make-seeds`.

use std::path::Path;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil_collector::http::loki_push::{
    EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp,
};
use vigil_collector::http::remote_write::{
    Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};
use vigil_proto::v1 as pb;

const T0_MS: i64 = 1_700_000_000_000;

fn write(target: &str, name: &str, sel: u8, body: &[u8]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let mut v = vec![sel];
    v.extend_from_slice(body);
    std::fs::write(dir.join(format!("seed-{name}")), v).expect("write seed");
}

fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).expect("snappy")
}

fn rw_labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn remote_write() {
    let req = WriteRequest {
        timeseries: vec![
            TimeSeries {
                labels: rw_labels(&[("__name__", "up"), ("instance", "a:9100"), ("job", "node")]),
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp: T0_MS,
                    },
                    Sample {
                        value: 1.0,
                        timestamp: T0_MS + 15_000,
                    },
                ],
            },
            TimeSeries {
                labels: rw_labels(&[
                    ("__name__", "http_request_duration_seconds_bucket"),
                    ("job", "api"),
                    ("le", "0.25"),
                ]),
                samples: vec![Sample {
                    value: 42.0,
                    timestamp: T0_MS,
                }],
            },
            TimeSeries {
                // a staleness marker
                labels: rw_labels(&[("__name__", "node_load1"), ("instance", "a:9100")]),
                samples: vec![Sample {
                    value: f64::from_bits(0x7ff0_0000_0000_0002),
                    timestamp: T0_MS,
                }],
            },
        ],
        metadata: vec![MetricMetadata {
            r#type: 1,
            metric_family_name: "http_requests_total".into(),
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    };
    let pbuf = req.encode_to_vec();
    write("remote_write", "protobuf", 1, &pbuf);
    write("remote_write", "snappy", 0, &snappy(&pbuf));
    let bad = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: rw_labels(&[("job", "x"), ("job", "y")]),
            samples: vec![],
        }],
        metadata: vec![],
    };
    write("remote_write", "duplicate-label", 1, &bad.encode_to_vec());
}

fn agent_stream() {
    let mut out = Vec::new();
    let hello = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            agent_id: "3f1d0c1e-agent".into(),
            node_name: "node-1".into(),
            agent_version: "0.1.0".into(),
            ..Default::default()
        })),
    };
    hello.encode_length_delimited(&mut out).expect("encode");
    let label = |n: &str, v: &str| pb::Label {
        name: n.into(),
        value: v.into(),
    };
    let b1 = pb::Batch {
        seq: 1,
        created_ms: T0_MS,
        series: vec![
            pb::SeriesDef {
                r#ref: 0,
                labels: vec![label("__name__", "node_load1"), label("node", "node-1")],
            },
            pb::SeriesDef {
                r#ref: 1,
                labels: vec![
                    label("__name__", "container_cpu_usage_seconds_total"),
                    label("container", "nginx"),
                    label("namespace", "prod"),
                    label("node", "node-1"),
                    label("pod", "web-1"),
                ],
            },
            pb::SeriesDef {
                r#ref: 2,
                labels: vec![
                    label("container", "nginx"),
                    label("namespace", "prod"),
                    label("node", "node-1"),
                    label("pod", "web-1"),
                    label("stream", "stdout"),
                ],
            },
        ],
        samples: vec![pb::SampleBlock {
            timestamp_ms: T0_MS,
            refs: vec![0, 1],
            values: vec![0.5, 12.25],
        }],
        sources: vec![pb::SourceDef {
            r#ref: 0,
            path: "/var/log/pods/prod_web-1_uid/nginx/0.log".into(),
            device: 2049,
            inode: 123456,
            fingerprint: 0xdead_beef,
        }],
        logs: vec![pb::LogRecord {
            stream_ref: 2,
            source_ref: 0,
            offset: 0,
            end_offset: 64,
            timestamp_ns: T0_MS * 1_000_000,
            line: "GET /index.html 200".into(),
        }],
        events: vec![pb::Event {
            timestamp_ms: T0_MS,
            kind: "oom_kill".into(),
            subject_ref: 1,
            attributes: [("pid".to_string(), "4242".to_string())]
                .into_iter()
                .collect(),
        }],
        metadata: vec![pb::MetricMetadata {
            family: "node_load1".into(),
            r#type: pb::MetricType::Gauge as i32,
            help: "1m load average.".into(),
            unit: String::new(),
        }],
    };
    let b2 = pb::Batch {
        seq: 2,
        created_ms: T0_MS + 10_000,
        samples: vec![pb::SampleBlock {
            timestamp_ms: T0_MS + 10_000,
            refs: vec![0, 1],
            values: vec![0.6, 12.5],
        }],
        ..Default::default()
    };
    for b in [b1, b2] {
        pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Batch(b)),
        }
        .encode_length_delimited(&mut out)
        .expect("encode");
    }
    // the file has no selector: the stream starts at byte 0
    let dir = Path::new("fuzz/corpus/agent_batch");
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join("seed-hello-two-batches"), &out).expect("write");
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

fn otlp() {
    let ns = (T0_MS * 1_000_000) as u64;
    let resource = Some(Resource {
        attributes: vec![
            kv("service.name", "checkout"),
            kv("service.instance.id", "pod-7"),
            kv("k8s.namespace.name", "prod"),
        ],
        ..Default::default()
    });
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource.clone(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "http.server.request.count".into(),
                        unit: "{request}".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![kv("http.method", "GET")],
                                time_unix_nano: ns,
                                start_time_unix_nano: ns - 60_000_000_000,
                                value: Some(number_data_point::Value::AsInt(17)),
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "process.memory.usage".into(),
                        unit: "By".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: ns,
                                value: Some(number_data_point::Value::AsDouble(1.5e6)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "http.server.duration".into(),
                        unit: "ms".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: ns,
                                count: 6,
                                sum: Some(120.0),
                                bucket_counts: vec![1, 2, 3],
                                explicit_bounds: vec![10.0, 100.0],
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: ns,
                    severity_number: 17,
                    severity_text: "ERROR".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("payment failed".into())),
                    }),
                    attributes: vec![kv("order.id", "o-1234")],
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    // selector: bit 0 logs, bit 1 JSON, bit 2 gzip
    write("otlp_http", "metrics-protobuf", 0, &metrics.encode_to_vec());
    write("otlp_http", "logs-protobuf", 1, &logs.encode_to_vec());
    write(
        "otlp_http",
        "metrics-protobuf-gzip",
        4,
        &metrics.encode_to_vec(),
    );
    write(
        "otlp_http",
        "metrics-json",
        2,
        &serde_json::to_vec(&metrics).expect("json"),
    );
    write(
        "otlp_http",
        "logs-json",
        3,
        &serde_json::to_vec(&logs).expect("json"),
    );
}

fn loki() {
    let ns = T0_MS * 1_000_000;
    let req = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{job="varlogs", namespace="prod", filename="/var/log/app.log"}"#.into(),
            entries: vec![
                EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: ns / 1_000_000_000,
                        nanos: 5,
                    }),
                    line: b"level=info msg=\"started\"".to_vec(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: "abc123".into(),
                    }],
                },
                EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: ns / 1_000_000_000 + 1,
                        nanos: 0,
                    }),
                    line: b"level=error msg=\"failed\"".to_vec(),
                    structured_metadata: vec![],
                },
            ],
            hash: 0,
        }],
    };
    // selector: bit 0 protobuf, bit 1 snappy by the target, bit 2 gzip
    write("loki_push", "protobuf", 3, &req.encode_to_vec());
    write("loki_push", "protobuf-snappy-gzip", 7, &req.encode_to_vec());
    write(
        "loki_push",
        "protobuf-as-sent",
        1,
        &snappy(&req.encode_to_vec()),
    );
    let json = format!(
        r#"{{"streams":[{{"stream":{{"job":"app","level":"info"}},"values":[["{ns}","hello world"],["{}","with metadata",{{"trace_id":"t-1"}}]]}}]}}"#,
        ns + 1000
    );
    write("loki_push", "json", 0, json.as_bytes());
    write("loki_push", "json-gzip", 4, json.as_bytes());
}

fn main() {
    remote_write();
    agent_stream();
    otlp();
    loki();
    println!("binary seeds written under fuzz/corpus/");
}
