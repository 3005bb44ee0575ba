//! OTLP log records to log lines, the way Loki's OTLP endpoint maps them,
//! adjusted to a log store that has stream labels and lines but no
//! structured metadata:
//!
//! - stream labels: the resource attributes Loki indexes by default
//!   ([`INDEXED`]: `service.name`, `service.namespace`,
//!   `service.instance.id`, `deployment.environment`, `k8s.*.name`, …)
//!   with names normalised as Prometheus labels (`service.name` →
//!   `service_name`; map values flatten to `key_subkey`);
//!   `service_name="unknown_service"` when the resource names no service;
//!   and `detected_level` from the severity (number, else text): `trace`,
//!   `debug`, `info`, `warn`, `error`, `fatal` or `unknown` — Loki keeps it
//!   as structured metadata, here it is the one label per record;
//! - the line: the body as a string (maps and arrays as JSON), then the
//!   record's attributes, `trace_id` and `span_id` appended as logfmt
//!   pairs (` key=value`), which Loki would keep as structured metadata —
//!   here they stay searchable with line filters;
//! - the timestamp: the record's time, else its observed time, else the
//!   time of arrival.
//!
//! Dropped (Loki would keep them as structured metadata): the other
//! resource attributes (e.g. `host.name`, `process.*`, `telemetry.sdk.*`),
//! scope name, version and attributes, `severity_text` beyond the level,
//! flags, dropped-attribute counts.
//!
//! Refused per record (counted, reported as partial success): timestamps
//! outside the window, lines over `push_max_line_bytes`, stream label sets
//! over the label limits.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use vigil_common::Labels;

use super::{names, value_string};
use crate::ingest::push::PushedLog;
use crate::push::{PushLimits, Reason, Refusals, Window, check_labels};

/// Resource attributes that become stream labels (Loki's default list).
pub const INDEXED: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// `service_name` of a resource that names no service (as Loki).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// What a request translated into.
#[derive(Debug, Default)]
pub struct Translated {
    pub logs: Vec<PushedLog>,
    /// Log records refused, by reason.
    pub refusals: Refusals,
}

type StreamOr = Result<Labels, (Reason, String)>;

/// An attribute as label pairs: maps flatten to `key_subkey`.
fn flatten(prefix: &str, kv: &KeyValue, out: &mut Vec<(String, String)>) {
    let key = if prefix.is_empty() {
        kv.key.clone()
    } else {
        format!("{prefix}_{}", kv.key)
    };
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::KvlistValue(m)) => {
            for inner in &m.values {
                flatten(&key, inner, out);
            }
        }
        _ => {
            // a key that makes no label name keeps its (normalised) spelling
            let name = names::label_name(&key).unwrap_or_else(|| "_".into());
            out.push((name, value_string(kv.value.as_ref())));
        }
    }
}

/// The level name of a record (Loki's `detected_level` values).
pub fn level(severity_number: i32, severity_text: &str) -> &'static str {
    match severity_number {
        1..=4 => return "trace",
        5..=8 => return "debug",
        9..=12 => return "info",
        13..=16 => return "warn",
        17..=20 => return "error",
        21..=24 => return "fatal",
        _ => {}
    }
    match severity_text.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" | "dbg" => "debug",
        "info" | "information" | "notice" => "info",
        "warn" | "warning" => "warn",
        "error" | "err" => "error",
        "fatal" | "critical" | "crit" | "panic" | "emergency" | "alert" => "fatal",
        _ => "unknown",
    }
}

/// Appends ` key=value`, quoting the value as logfmt needs.
pub fn logfmt_pair(line: &mut String, key: &str, value: &str) {
    line.push(' ');
    line.push_str(key);
    line.push('=');
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c > ' ' && c != '"' && c != '=' && c != '\\' && c != '\u{7f}');
    if plain {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c => line.push(c),
        }
    }
    line.push('"');
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The line of a record: body, then attributes and trace context.
fn line_of(r: &LogRecord) -> String {
    let body: Option<&AnyValue> = r.body.as_ref();
    let mut line = value_string(body);
    let mut attrs = Vec::new();
    for kv in &r.attributes {
        flatten("", kv, &mut attrs);
    }
    for (k, v) in &attrs {
        logfmt_pair(&mut line, k, v);
    }
    if r.trace_id.iter().any(|b| *b != 0) {
        logfmt_pair(&mut line, "trace_id", &hex(&r.trace_id));
    }
    if r.span_id.iter().any(|b| *b != 0) {
        logfmt_pair(&mut line, "span_id", &hex(&r.span_id));
    }
    line
}

/// Translates a request; never fails as a whole.
pub fn translate(req: ExportLogsServiceRequest, limits: &PushLimits, now_ns: i64) -> Translated {
    let window = Window::at(limits, now_ns, true);
    let mut out = Translated::default();
    for rl in &req.resource_logs {
        let attrs: &[KeyValue] = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let mut base = Vec::new();
        for kv in attrs.iter().filter(|kv| INDEXED.contains(&kv.key.as_str())) {
            flatten("", kv, &mut base);
        }
        base.retain(|(_, v)| !v.is_empty());
        if !base.iter().any(|(k, _)| k == "service_name") {
            base.push(("service_name".into(), UNKNOWN_SERVICE.into()));
        }
        // the stream of each level seen in this resource (or why it is refused)
        let mut streams: Vec<(&'static str, StreamOr)> = Vec::new();
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                let ts = [r.time_unix_nano, r.observed_time_unix_nano]
                    .into_iter()
                    .find(|t| *t != 0)
                    .map(|t| i64::try_from(t).unwrap_or(i64::MAX))
                    .unwrap_or(now_ns);
                if let Err(reason) = window.check(ts) {
                    out.refusals.add(reason, 1, || {
                        format!(
                            "log record at {ts} ns is outside the accepted window (log_retention, max_future_skew)"
                        )
                    });
                    continue;
                }
                let lvl = level(r.severity_number, &r.severity_text);
                let stream = match streams.iter().find(|(l, _)| *l == lvl) {
                    Some((_, s)) => s.clone(),
                    None => {
                        let mut pairs = base.clone();
                        pairs.push(("detected_level".into(), lvl.into()));
                        let labels = Labels::new(pairs);
                        let s = check_labels(&labels, limits).map(|_| labels);
                        streams.push((lvl, s.clone()));
                        s
                    }
                };
                let stream = match stream {
                    Ok(s) => s,
                    Err((reason, msg)) => {
                        out.refusals.add(reason, 1, || msg);
                        continue;
                    }
                };
                let line = line_of(r);
                if line.len() > limits.max_line_bytes {
                    out.refusals.add(Reason::LineTooLong, 1, || {
                        format!(
                            "a log line of {} bytes for stream {} is longer than the limit of {} (push_max_line_bytes)",
                            line.len(),
                            crate::push::brief(&stream),
                            limits.max_line_bytes
                        )
                    });
                    continue;
                }
                out.logs.push(PushedLog {
                    stream,
                    timestamp_ns: ts,
                    line,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use proptest::prelude::*;

    fn s(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn req(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    const NOW: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn records_become_lines_with_loki_stream_labels() {
        let r = LogRecord {
            time_unix_nano: (NOW - 1_000) as u64,
            observed_time_unix_nano: NOW as u64,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("disk full".into())),
            }),
            attributes: vec![s("code.lineno", "42"), s("msg", "a \"b\"")],
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            ..Default::default()
        };
        let out = translate(
            req(
                vec![
                    s("service.name", "shop"),
                    s("service.namespace", "prod"),
                    s("k8s.pod.name", "shop-1"),
                    s("host.name", "h1"),
                ],
                vec![r],
            ),
            &PushLimits::default(),
            NOW,
        );
        assert!(out.refusals.is_empty(), "{:?}", out.refusals);
        assert_eq!(out.logs.len(), 1);
        let l = &out.logs[0];
        assert_eq!(
            l.stream,
            Labels::new([
                ("service_name", "shop"),
                ("service_namespace", "prod"),
                ("k8s_pod_name", "shop-1"),
                ("detected_level", "error"),
            ])
        );
        assert_eq!(l.timestamp_ns, NOW - 1_000);
        assert_eq!(
            l.line,
            format!(
                "disk full code_lineno=42 msg=\"a \\\"b\\\"\" trace_id={} span_id=0101010101010101",
                "ab".repeat(16)
            )
        );
    }

    #[test]
    fn timestamps_fall_back_and_limits_refuse() {
        let limits = PushLimits {
            max_line_bytes: 10,
            ..Default::default()
        };
        let body = |t: &str| {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(t.into())),
            })
        };
        let records = vec![
            // observed time only
            LogRecord {
                observed_time_unix_nano: (NOW - 5) as u64,
                body: body("a"),
                ..Default::default()
            },
            // no time at all: arrival
            LogRecord {
                body: body("b"),
                ..Default::default()
            },
            // too long
            LogRecord {
                body: body("0123456789x"),
                ..Default::default()
            },
            // too old
            LogRecord {
                time_unix_nano: 1,
                body: body("c"),
                ..Default::default()
            },
            // too new
            LogRecord {
                time_unix_nano: (NOW + 3_600_000_000_000) as u64,
                body: body("d"),
                ..Default::default()
            },
        ];
        let out = translate(req(vec![], records), &limits, NOW);
        let got: Vec<(i64, &str)> = out
            .logs
            .iter()
            .map(|l| (l.timestamp_ns, l.line.as_str()))
            .collect();
        assert_eq!(got, vec![(NOW - 5, "a"), (NOW, "b")]);
        assert_eq!(
            out.logs[0].stream,
            Labels::new([
                ("service_name", UNKNOWN_SERVICE),
                ("detected_level", "unknown")
            ])
        );
        assert_eq!(out.refusals.counts[&Reason::LineTooLong], 1);
        assert_eq!(out.refusals.counts[&Reason::TooOld], 1);
        assert_eq!(out.refusals.counts[&Reason::TooNew], 1);
        assert!(out.refusals.message().contains("push_max_line_bytes"));
    }

    #[test]
    fn levels() {
        assert_eq!(level(9, ""), "info");
        assert_eq!(level(0, "Warning"), "warn");
        assert_eq!(level(0, "whatever"), "unknown");
        assert_eq!(level(24, "debug"), "fatal");
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(r) = <ExportLogsServiceRequest as prost::Message>::decode(body.as_slice()) {
                let _ = translate(r, &PushLimits::default(), NOW);
            }
        }
    }
}
