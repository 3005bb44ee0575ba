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
