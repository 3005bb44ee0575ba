//! OTLP over HTTP: `POST /v1/metrics` and `POST /v1/logs`, as the OTLP/HTTP
//! specification has them — bodies in protobuf (`application/x-protobuf`)
//! or JSON (`application/json`), optionally gzip'd (`Content-Encoding`);
//! answers in the request's encoding: 200 with the export response (a
//! `partial_success` when part was refused), 400 for a body that does not
//! decode, 413 over `push_max_body_bytes`, 415 for another content type or
//! encoding (each with a `google.rpc.Status` body, not retryable), 503 when
//! the data cannot be made durable (retryable). Every refusal is counted
//! (see [`crate::push`]).
//!
//! The translation and the durable write are [`crate::otlp`]'s; this is
//! only the HTTP framing. The routes sit in the main router, so an
//! authentication layer can wrap them with the others.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use super::AppState;
use crate::ingest::push::PushIngest;
use crate::otlp::PartialSuccess;
use crate::push::{BodyError, Protocol, Reason, Signal};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        // the handlers read the body themselves, against push_max_body_bytes
        .layer(DefaultBodyLimit::disable())
}

/// The two encodings OTLP/HTTP allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }

    /// From a `Content-Type` header (parameters ignored).
    pub fn from_headers(h: &HeaderMap) -> Result<Format, String> {
        let ct = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
            "application/json" => Ok(Format::Json),
            _ => Err(ct.to_string()),
        }
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error answers (without
/// `details`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

fn status_response(format: Format, http: StatusCode, message: String) -> Response {
    // gRPC codes: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE
    let code = match http {
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        _ => 3,
    };
    let body = match format {
        Format::Protobuf => RpcStatus { code, message }.encode_to_vec(),
        Format::Json => serde_json::json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    };
    (http, [(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// Reads and decompresses the body, or the refusal to answer.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(BodyError::TooLarge { limit });
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if s.is::<http_body_util::LengthLimitError>() {
                return BodyError::TooLarge { limit };
            }
            src = s.source();
        }
        BodyError::Corrupt {
            encoding: "request",
            reason: format!("cannot read the body: {e}"),
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    crate::push::decode_body(raw, encoding, limit)
}

fn body_status(e: &BodyError) -> StatusCode {
    match e {
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        BodyError::Corrupt { .. } => StatusCode::BAD_REQUEST,
    }
}

/// Decodes a request body in `format`.
pub fn decode<T>(format: Format, body: &[u8]) -> Result<T, String>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    match format {
        Format::Protobuf => T::decode(body).map_err(|e| format!("protobuf: {e}")),
        Format::Json => serde_json::from_slice(body).map_err(|e| format!("JSON: {e}")),
    }
}

/// The steps both signals share up to a decoded request.
async fn accept<T>(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    signal: Signal,
) -> Result<(std::sync::Arc<PushIngest>, Format, T), Response>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    let Some(push) = s.push.clone() else {
        return Err(status_response(
            Format::Json,
            StatusCode::SERVICE_UNAVAILABLE,
            "push ingest is not running".into(),
        ));
    };
    let refuse = |reason: Reason, format: Format, http: StatusCode, msg: String| {
        push.metrics
            .refuse_request(Protocol::OtlpHttp, signal, reason);
        tracing::debug!(signal = signal.as_str(), reason = reason.as_str(), %msg, "OTLP/HTTP push refused");
        status_response(format, http, msg)
    };
    let format = match Format::from_headers(headers) {
        Ok(f) => f,
        Err(ct) => {
            return Err(refuse(
                Reason::UnsupportedMediaType,
                Format::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type {ct:?} is not supported: use application/x-protobuf or application/json"
                ),
            ));
        }
    };
    let raw = match read_body(body, headers, push.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return Err(refuse(e.reason(), format, body_status(&e), e.to_string())),
    };
    match decode::<T>(format, &raw) {
        Ok(r) => Ok((push, format, r)),
        Err(e) => Err(refuse(
            Reason::Malformed,
            format,
            StatusCode::BAD_REQUEST,
            format!("the request does not decode: {e}"),
        )),
    }
}

fn ok_response<M: Message + serde::Serialize>(format: Format, msg: &M) -> Response {
    let body = match format {
        Format::Protobuf => msg.encode_to_vec(),
        Format::Json => serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let (push, format, req) =
        match accept::<ExportMetricsServiceRequest>(&s, &headers, body, Signal::Metrics).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    match crate::otlp::export_metrics(&push, Protocol::OtlpHttp, req).await {
        Ok(p) => ok_response(
            format,
            &ExportMetricsServiceResponse {
                partial_success: partial(&p).map(|(n, m)| ExportMetricsPartialSuccess {
                    rejected_data_points: n,
                    error_message: m,
                }),
            },
        ),
        Err(e) => status_response(format, StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn logs(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let (push, format, req) =
        match accept::<ExportLogsServiceRequest>(&s, &headers, body, Signal::Logs).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    match crate::otlp::export_logs(&push, Protocol::OtlpHttp, req).await {
        Ok(p) => ok_response(
            format,
            &ExportLogsServiceResponse {
                partial_success: partial(&p).map(|(n, m)| ExportLogsPartialSuccess {
                    rejected_log_records: n,
                    error_message: m,
                }),
            },
        ),
        Err(e) => status_response(format, StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// A partial success worth reporting: something was refused.
pub fn partial(p: &PartialSuccess) -> Option<(i64, String)> {
    (p.rejected > 0).then(|| (p.rejected, p.message.clone()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::store::{Matcher, Queryable};

    /// A whole collector in-process on port 0, with its data in `dir`.
    async fn collector(dir: &std::path::Path) -> crate::run::Running {
        crate::tls::ensure_crypto_provider();
        let config = crate::config::Settings {
            data_dir: Some(dir.to_path_buf()),
            self_scrape_interval: Some(vigil_common::Duration::from_secs(0)),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        crate::run::start(
            &config,
            http,
            grpc,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    fn now_ns() -> i64 {
        crate::push::now_ns()
    }

    #[tokio::test]
    async fn otlp_json_bodies_as_the_specification_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = collector(dir.path()).await;
        let base = format!("http://{}", c.http_addr);
        let t = now_ns() - 1_000_000_000;
        // int64 fields as strings or numbers, enums as integers, ids in hex
        let metrics = format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}}]}},
            "scopeMetrics":[{{"scope":{{"name":"t"}},"metrics":[
              {{"name":"json.requests","unit":"1","sum":{{"aggregationTemporality":2,"isMonotonic":true,
                "dataPoints":[{{"asInt":"12","timeUnixNano":"{t}","attributes":[{{"key":"code","value":{{"intValue":"200"}}}}]}}]}}}},
              {{"name":"json.temp","unit":"Cel","gauge":{{"dataPoints":[{{"asDouble":21.5,"timeUnixNano":{t}}}]}}}},
              {{"name":"json.delta","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{"asInt":"1","timeUnixNano":"{t}"}}]}}}}
            ]}}]}}]}}"#
        );
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{base}/v1/metrics"))
            .header("content-type", "application/json")
            .body(metrics)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        let rejected = &v["partialSuccess"]["rejectedDataPoints"];
        assert!(rejected == "1" || rejected == 1, "{v}");
        assert!(
            v["partialSuccess"]["errorMessage"]
                .as_str()
                .unwrap()
                .contains("json.delta"),
            "{v}"
        );
        let got = c
            .state
            .store
            .select(&[Matcher::equal("job", "json-svc")], 0, i64::MAX);
        let mut got: Vec<(String, f64)> = got
            .iter()
            .map(|s| (s.labels.to_string(), s.samples[0].1))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                (
                    r#"json_requests_total{code="200",job="json-svc"}"#.into(),
                    12.0
                ),
                (r#"json_temp_celsius{job="json-svc"}"#.into(), 21.5),
            ]
        );

        // logs, gzip'd JSON
        let logs = format!(
            r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}}]}},
            "scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{t}","severityNumber":9,"body":{{"stringValue":"hello json"}},
              "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
              "attributes":[{{"key":"k","value":{{"stringValue":"v w"}}}}]}}]}}]}}]}}"#
        );
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(logs.as_bytes()).unwrap();
        let r = client
            .post(format!("{base}/v1/logs"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(z.finish().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let ls = c.state.logs.clone().unwrap();
        let streams = ls.matching_streams(&[Matcher::equal("service_name", "json-svc")]);
        assert_eq!(streams.len(), 1);
        assert_eq!(
            streams[0].1.get("detected_level"),
            Some("info"),
            "{:?}",
            streams[0].1
        );
        let mut lines = Vec::new();
        ls.scan(streams[0].0, 0, i64::MAX, &mut |ts, l| {
            lines.push((ts, l.to_string()));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            lines,
            vec![(
                t,
                "hello json k=\"v w\" trace_id=5b8efff798038103d269b633813fc60c span_id=eee19b7ec3c1b174"
                    .to_string()
            )]
        );

        // protobuf answers in protobuf; an empty export is fine
        let r = client
            .post(format!("{base}/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/x-protobuf"
        );
        c.stop().await.unwrap();
    }
}
