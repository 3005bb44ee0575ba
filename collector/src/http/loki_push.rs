//! `POST /loki/api/v1/push`: Loki's push API, so Promtail, Grafana Alloy,
//! Fluent Bit, Vector and logging libraries can ship to the collector.
//!
//! Bodies: `logproto.PushRequest` in protobuf, snappy block compressed (the
//! default, whatever the `Content-Type` unless it is JSON), or the JSON form
//! `{"streams":[{"stream":{…},"values":[["<ns>","line"(,{metadata})]]}]}`;
//! either may also be gzip'd (`Content-Encoding`). The tenant header
//! `X-Scope-OrgID` is accepted and ignored: the log store has one tenant,
//! as a Loki with `auth_enabled: false`.
//!
//! Answers as Loki's: 204 when everything was stored; 400 with one message
//! per refused stream or entry when something was refused — the rest of the
//! push is stored all the same, so a client must not retry (Loki's clients
//! do not retry 400); 400 for a body that does not decode, 413 over
//! `push_max_body_bytes`, 415 for an unknown `Content-Encoding`, 503 when
//! nothing could be made durable (retry).
//!
//! Per stream: a label set that does not parse (`{name="value", …}`),
//! is empty or breaks the label limits refuses the stream; per entry: a
//! timestamp outside the window or a line over `push_max_line_bytes`
//! refuses the entry. The log store accepts any order within a stream, so
//! nothing is refused as out of order. Structured metadata (Loki 3) is
//! appended to the line as logfmt pairs, the way OTLP attributes are
//! (see [`crate::otlp::logs`]): this store keeps none of its own.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use vigil_common::Labels;

use super::AppState;
use crate::ingest::push::PushedLog;
use crate::push::{
    BodyError, Protocol, PushLimits, Reason, Refusals, Signal, Window, brief, check_labels, now_ns,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/loki/api/v1/push", post(push))
        .layer(DefaultBodyLimit::disable())
}

/// `logproto.PushRequest` (Loki's pkg/push/push.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// `{name="value", …}`
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// A line (bytes, so a line that is not UTF-8 refuses nothing: it is
    /// stored with replacement characters).
    #[prost(bytes = "vec", tag = "2")]
    pub line: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The JSON form of a push.
#[derive(serde::Deserialize)]
struct JsonPush {
    #[serde(default)]
    streams: Vec<JsonStream>,
}

#[derive(serde::Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

/// One stream as decoded, before checks.
#[derive(Debug, PartialEq)]
pub struct Stream {
    /// The labels, or why they do not parse.
    pub labels: Result<Vec<(String, String)>, String>,
    /// The label set as the client wrote it (for messages).
    pub spelled: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, PartialEq)]
pub struct Entry {
    /// Unix ns, or why the timestamp does not parse.
    pub timestamp_ns: Result<i64, String>,
    pub line: String,
    pub metadata: Vec<(String, String)>,
}

/// Parses `{name="value", …}` (Go string escapes in values).
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    use promql_parser::parser::Expr;
    let t = s.trim();
    if !t.starts_with('{') {
        return Err(format!("{s:?} is not a label set like {{name=\"value\"}}"));
    }
    // through the query parser's depth bound: a label set is a selector,
    // and anything nested deeper must not reach the recursive parser
    let expr = crate::promql::parse(t).map_err(|e| format!("{s:?}: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("{s:?} is not a label set"));
    };
    if vs.name.is_some() || vs.offset.is_some() || vs.at.is_some() {
        return Err(format!("{s:?} is not a label set"));
    }
    let mut out = Vec::with_capacity(vs.matchers.matchers.len());
    for m in &vs.matchers.matchers {
        if !matches!(m.op, promql_parser::label::MatchOp::Equal) {
            return Err(format!("{s:?}: only name=\"value\" pairs are allowed"));
        }
        if out.iter().any(|(n, _): &(String, String)| *n == m.name) {
            return Err(format!("{s:?}: duplicate label name {:?}", m.name));
        }
        out.push((m.name.clone(), m.value.clone()));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(format!("{s:?} is not a label set"));
    }
    Ok(out)
}

/// Decodes a protobuf (snappy) push.
pub fn decode_protobuf(body: &[u8], limit: usize) -> Result<Vec<Stream>, BodyError> {
    let raw = crate::push::unsnappy(body, limit)?;
    let req = <PushRequest as prost::Message>::decode(raw.as_slice()).map_err(|e| {
        BodyError::Corrupt {
            encoding: "protobuf",
            reason: e.to_string(),
        }
    })?;
    Ok(req
        .streams
        .into_iter()
        .map(|s| Stream {
            labels: parse_labels(&s.labels),
            spelled: s.labels,
            entries: s
                .entries
                .into_iter()
                .map(|e| Entry {
                    timestamp_ns: e
                        .timestamp
                        .map(|t| {
                            t.seconds
                                .checked_mul(1_000_000_000)
                                .and_then(|ns| ns.checked_add(i64::from(t.nanos)))
                                .ok_or_else(|| format!("timestamp {}s is out of range", t.seconds))
                        })
                        .unwrap_or(Ok(0)),
                    line: String::from_utf8_lossy(&e.line).into_owned(),
                    metadata: e
                        .structured_metadata
                        .into_iter()
                        .map(|p| (p.name, p.value))
                        .collect(),
                })
                .collect(),
        })
        .collect())
}

/// Decodes a JSON push.
pub fn decode_json(body: &[u8]) -> Result<Vec<Stream>, BodyError> {
    let req: JsonPush = serde_json::from_slice(body).map_err(|e| BodyError::Corrupt {
        encoding: "JSON",
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(req.streams.len());
    for s in req.streams {
        let spelled = Labels::new(s.stream.clone()).to_string();
        let labels = Ok(s.stream.into_iter().collect());
        let mut entries = Vec::with_capacity(s.values.len());
        for v in s.values {
            let timestamp_ns = match v.first() {
                Some(serde_json::Value::String(t)) => t
                    .parse::<i64>()
                    .map_err(|_| format!("timestamp {t:?} is not Unix nanoseconds")),
                Some(serde_json::Value::Number(n)) => n
                    .as_i64()
                    .ok_or_else(|| format!("timestamp {n} is not Unix nanoseconds")),
                _ => Err("an entry must be [\"<unix ns>\", \"<line>\"]".into()),
            };
            let line = match v.get(1) {
                Some(serde_json::Value::String(l)) => l.clone(),
                _ => {
                    return Err(BodyError::Corrupt {
                        encoding: "JSON",
                        reason: "an entry must be [\"<unix ns>\", \"<line>\"]".into(),
                    });
                }
            };
            let metadata = match v.get(2) {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(serde_json::Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
                Some(_) => {
                    return Err(BodyError::Corrupt {
                        encoding: "JSON",
                        reason: "structured metadata must be an object".into(),
                    });
                }
            };
            entries.push(Entry {
                timestamp_ns,
                line,
                metadata,
            });
        }
        out.push(Stream {
            labels,
            spelled,
            entries,
        });
    }
    Ok(out)
}

/// Checks streams and entries; what passes becomes log lines.
pub fn admit(streams: Vec<Stream>, limits: &PushLimits, now_ns: i64) -> (Vec<PushedLog>, Refusals) {
    let window = Window::at(limits, now_ns, true);
    let mut out = Vec::new();
    let mut refused = Refusals::default();
    for s in streams {
        let n = s.entries.len() as u64;
        let pairs = match s.labels {
            Ok(p) => p,
            Err(e) => {
                refused.add(Reason::InvalidLabels, n, || {
                    format!("error parsing labels {}: {e}", s.spelled)
                });
                continue;
            }
        };
        if let Some((name, _)) = pairs
            .iter()
            .find(|(k, _)| !vigil_common::labels::valid_label_name(k))
        {
            refused.add(Reason::InvalidLabels, n, || {
                format!("stream {}: invalid label name {name:?}", s.spelled)
            });
            continue;
        }
        let labels = Labels::new(pairs.into_iter().filter(|(_, v)| !v.is_empty()));
        if labels.is_empty() {
            refused.add(Reason::InvalidLabels, n, || {
                format!(
                    "stream {}: at least one label pair is required per stream",
                    s.spelled
                )
            });
            continue;
        }
        if let Err((r, msg)) = check_labels(&labels, limits) {
            refused.add(r, n, || msg);
            continue;
        }
        for e in s.entries {
            let ts = match e.timestamp_ns {
                Ok(t) => t,
                Err(msg) => {
                    refused.add(Reason::Malformed, 1, || {
                        format!("entry for stream {}: {msg}", brief(&labels))
                    });
                    continue;
                }
            };
            if let Err(r) = window.check(ts) {
                refused.add(r, 1, || {
                    let (what, bound) = match r {
                        Reason::TooOld => ("too old", window.oldest_ns),
                        _ => ("too new", window.newest_ns),
                    };
                    format!(
                        "entry for stream {} has timestamp {what}: {}, {} acceptable timestamp is: {}",
                        brief(&labels),
                        rfc3339(ts),
                        if r == Reason::TooOld { "oldest" } else { "newest" },
                        rfc3339(bound)
                    )
                });
                continue;
            }
            let mut line = e.line;
            for (k, v) in &e.metadata {
                let key = crate::otlp::names::label_name(k).unwrap_or_else(|| "_".into());
                crate::otlp::logs::logfmt_pair(&mut line, &key, v);
            }
            if line.len() > limits.max_line_bytes {
                refused.add(Reason::LineTooLong, 1, || {
                    format!(
                        "max entry size '{}' bytes exceeded for stream {} while adding an entry with length '{}' bytes",
                        limits.max_line_bytes,
                        brief(&labels),
                        line.len()
                    )
                });
                continue;
            }
            out.push(PushedLog {
                stream: labels.clone(),
                timestamp_ns: ts,
                line,
            });
        }
    }
    (out, refused)
}

fn rfc3339(ns: i64) -> String {
    vigil_common::time::format_rfc3339_ns(ns.max(0))
}

fn text(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg + "\n",
    )
        .into_response()
}

async fn push(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(push) = s.push.clone() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "push ingest is not running".into(),
        );
    };
    let refuse = |reason: Reason, status: StatusCode, msg: String| {
        push.metrics
            .refuse_request(Protocol::Loki, Signal::Logs, reason);
        tracing::debug!(reason = reason.as_str(), %msg, "Loki push refused");
        text(status, msg)
    };
    let limit = push.limits.max_body_bytes;
    let raw = match super::otlp::read_body(body, &headers, limit).await {
        Ok(b) => b,
        Err(e) => {
            let status = match e {
                BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                BodyError::Corrupt { .. } => StatusCode::BAD_REQUEST,
            };
            return refuse(e.reason(), status, e.to_string());
        }
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    let body = raw.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        if json {
            decode_json(&body)
        } else {
            decode_protobuf(&body, limit)
        }
    })
    .await;
    let streams = match decoded {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let status = match e {
                BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return refuse(e.reason(), status, e.to_string());
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoding task failed: {e}"),
            );
        }
    };
    let (logs, refused) = admit(streams, &push.limits, now_ns());
    push.metrics.refuse(Protocol::Loki, Signal::Logs, &refused);
    if !logs.is_empty()
        && let Err(e) = push.write_logs(Protocol::Loki, logs).await
    {
        push.metrics
            .refuse_request(Protocol::Loki, Signal::Logs, Reason::Unavailable);
        return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    if refused.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        text(
            StatusCode::BAD_REQUEST,
            format!(
                "{}; total ignored: {} entries",
                refused.message(),
                refused.total()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the `loki_push` fuzz target: a stream's label set went to the
    /// PromQL parser without the depth bound queries have, so a push whose
    /// labels were `{a="b"} + ((((…1))))` or `{a="b"} + 1 + 1 + …` overflowed
    /// the stack and aborted the collector.
    #[test]
    fn deeply_nested_label_sets_are_refused_not_a_stack_overflow() {
        let n = 200_000;
        for s in [
            format!("{{a=\"b\"}} + {}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{{a=\"b\"}}{}", " + 1".repeat(n)),
        ] {
            let e = parse_labels(&s).unwrap_err();
            assert!(e.contains("too deeply nested"), "{}", &e[e.len() - 200..]);
        }
        // through the protobuf decoding a push takes: that stream is refused
        let deep = format!("{{a=\"b\"}}{}", " + 1".repeat(n));
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: deep,
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1,
                        nanos: 0,
                    }),
                    line: b"x".to_vec(),
                    structured_metadata: vec![],
                }],
                hash: 0,
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(&req))
            .unwrap();
        let streams = decode_protobuf(&body, 64 << 20).unwrap();
        assert!(streams[0].labels.is_err());
    }

    #[test]
    fn label_sets_parse_as_loki_writes_them() {
        assert_eq!(
            parse_labels(r#"{app="web", level="info"}"#).unwrap(),
            vec![
                ("app".to_string(), "web".to_string()),
                ("level".to_string(), "info".to_string())
            ]
        );
        assert_eq!(
            parse_labels(r#"{msg="a \"quoted\"\nline"}"#).unwrap(),
            vec![("msg".to_string(), "a \"quoted\"\nline".to_string())]
        );
        for bad in [
            "",
            "app=web",
            "{app=~\"w.*\"}",
            "{app=\"a\", app=\"b\"}",
            "up{a=\"b\"}",
            "{a=\"b\"",
            "{}",
        ] {
            assert!(parse_labels(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn json_pushes_decode() {
        let body = br#"{"streams":[{"stream":{"app":"a"},"values":[["1700000000000000000","hello"],["1700000000000000001","x",{"trace_id":"ab"}]]}]}"#;
        let s = decode_json(body).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].entries[0].timestamp_ns, Ok(1_700_000_000_000_000_000));
        assert_eq!(
            s[0].entries[1].metadata,
            vec![("trace_id".to_string(), "ab".to_string())]
        );
        assert!(decode_json(b"{\"streams\":[{\"values\":[[1]]}]}").is_err());
        assert!(decode_json(b"nope").is_err());
    }

    #[test]
    fn entries_are_refused_one_by_one() {
        let now = 1_700_000_000_000_000_000;
        let limits = PushLimits {
            max_line_bytes: 8,
            ..Default::default()
        };
        let e = |t: i64, l: &str| Entry {
            timestamp_ns: Ok(t),
            line: l.into(),
            metadata: vec![],
        };
        let streams = vec![
            Stream {
                labels: parse_labels(r#"{app="a"}"#),
                spelled: r#"{app="a"}"#.into(),
                entries: vec![
                    e(now, "ok"),
                    e(1, "old"),
                    e(now + 3_600_000_000_000, "new"),
                    e(now, "far too long"),
                ],
            },
            Stream {
                labels: parse_labels("{app=}"),
                spelled: "{app=}".into(),
                entries: vec![e(now, "x"), e(now, "y")],
            },
        ];
        let (logs, refused) = admit(streams, &limits, now);
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].line, "ok");
        assert_eq!(refused.counts[&Reason::TooOld], 1);
        assert_eq!(refused.counts[&Reason::TooNew], 1);
        assert_eq!(refused.counts[&Reason::LineTooLong], 1);
        assert_eq!(refused.counts[&Reason::InvalidLabels], 2);
        let m = refused.message();
        assert!(m.contains("timestamp too old"), "{m}");
        assert!(m.contains("max entry size '8' bytes exceeded"), "{m}");
        assert!(m.contains("error parsing labels {app=}"), "{m}");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_json(&body);
            let _ = decode_protobuf(&body, 1 << 20);
            let compressed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            if let Ok(s) = decode_protobuf(&compressed, 1 << 20) {
                let _ = admit(s, &PushLimits::default(), 1_700_000_000_000_000_000);
            }
        }

        #[test]
        fn label_parser_never_panics(s in ".{0,64}") {
            let _ = parse_labels(&s);
        }
    }
}
