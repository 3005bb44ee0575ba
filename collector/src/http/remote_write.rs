//! `POST /api/v1/write`: the Prometheus remote-write 1.0 receiver
//! (snappy **block** compressed protobuf `WriteRequest`), so Prometheus,
//! vmagent or an OpenTelemetry collector can push into the store.
//!
//! Status codes as the spec documents them: 204 on success, 400 for a body
//! that cannot be decoded or breaks a request limit (the sender must not
//! retry it), 503 when the samples cannot be made durable or the disk is
//! full (`crate::space`; retry). Samples
//! the store refuses (label limits, series budget, too far in the future,
//! out of order, a different value at a stored timestamp) are left out and
//! the rest stored; the answer is then 400 with the reasons (see
//! [`refusal_answer`]). Each client (by address) has its own series budget.
//! The receiver can be switched off (`remote_write_receiver: false`).
//!
//! With the WAL (always, in the collector), a body is read off the wire by
//! [`super::rw_wire`] and only series the ingest's series cache does not know
//! are decoded ([`crate::ingest::core::IngestCore::write_remote`]); [`decode`]
//! and [`apply`], which build every label, serve the store-only setup, the
//! fuzz target and tests, and accept exactly the same bodies.
//!
//! Not here: remote write 2.0, native histograms, exemplars, metadata
//! storage (decoded and ignored).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use vigil_common::Labels;

use super::AppState;
use crate::ingest::core::{ExternalOutcome, REMOTE_WRITE_TENANT};
use crate::store::{AppendError, Store};

/// Largest compressed body accepted.
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// The wire types and decoders live in [`super::rw_wire`]; re-exported for the
/// fuzz target and tests, which read the endpoint and its format together.
pub use super::rw_wire::{
    DecodeError, Label, MAX_DECODED_BYTES, MetricMetadata, Sample, TimeSeries, WriteRequest,
    decode, decompress,
};

/// What [`apply`] did with a request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub appended: u64,
    pub out_of_order: u64,
    pub refused_series: u64,
}

/// Appends a decoded request to the store.
pub fn apply(store: &Store, req: WriteRequest) -> WriteOutcome {
    let mut o = WriteOutcome::default();
    for ts in req.timeseries {
        let labels = Labels::new(
            ts.labels
                .into_iter()
                .filter(|l| !l.value.is_empty())
                .map(|l| (l.name, l.value)),
        );
        let r = match store.get_or_create(&labels) {
            Ok(r) => r,
            Err(_) => {
                o.refused_series += ts.samples.len() as u64;
                continue;
            }
        };
        let mut samples = ts.samples;
        samples.sort_by_key(|s| s.timestamp);
        for s in samples {
            match store.append(r, s.timestamp, s.value) {
                Ok(()) => o.appended += 1,
                Err(AppendError::OutOfOrder { .. }) => o.out_of_order += 1,
                Err(_) => o.refused_series += 1,
            }
        }
    }
    o
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/write", post(write))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn write(
    State(s): State<AppState>,
    peer: Option<axum::Extension<crate::net::Peer>>,
    body: Bytes,
) -> Response {
    if !s.remote_write_receiver {
        return (
            StatusCode::NOT_FOUND,
            "the remote-write receiver is switched off (remote_write_receiver: false)\n",
        )
            .into_response();
    }
    // a full disk: the sender keeps the samples and retries
    if let Some(full) = s
        .ingest
        .as_ref()
        .and_then(|c| c.space.refuse(crate::space::Source::RemoteWrite))
    {
        return disk_full_answer(&full);
    }
    let bad_request = |e: DecodeError| {
        tracing::debug!(error = %e, "remote write: bad request");
        (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
    };
    let max_series = s.series_limits.max_series_per_request;
    let too_many = |n: usize| {
        (
            StatusCode::BAD_REQUEST,
            format!(
                "{n} series in one request, more than the limit of {max_series} (remote_write_max_series_per_request)\n"
            ),
        )
            .into_response()
    };
    // each client has its own series budget; its address names it
    let tenant = match &peer {
        Some(p) => format!("{REMOTE_WRITE_TENANT}/{}", p.0.0.ip()),
        None => REMOTE_WRITE_TENANT.to_string(),
    };
    if let Some(core) = s.ingest.clone() {
        // the steady path: series read off the wire, known ones not decoded
        let raw = match decompress(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(e),
        };
        let req = match super::rw_wire::parse(&raw) {
            Ok(r) => r,
            Err(e) => return bad_request(e),
        };
        if req.series.len() > max_series {
            return too_many(req.series.len());
        }
        return match core.write_remote(&req, &tenant).await {
            Ok(Ok(o)) => refusal_answer(&o),
            Ok(Err(e)) => bad_request(e),
            // not durable: the sender must retry
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot make the samples durable: {e}\n"),
            )
                .into_response(),
        };
    }
    let req = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if req.timeseries.len() > max_series {
        return too_many(req.timeseries.len());
    }
    let store = s.store.clone();
    let outcome = match tokio::task::spawn_blocking(move || apply(&store, req)).await {
        Ok(o) => o,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("append failed: {e}\n"),
            )
                .into_response();
        }
    };
    if outcome.out_of_order > 0 || outcome.refused_series > 0 {
        tracing::warn!(
            out_of_order = outcome.out_of_order,
            refused = outcome.refused_series,
            appended = outcome.appended,
            "remote write: samples refused by the store"
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

/// 503 with `Retry-After`: the disk is full, nothing was taken, retry.
pub fn disk_full_answer(full: &crate::space::DiskFull) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("retry-after", "5")],
        format!("{full}\n"),
    )
        .into_response()
}

/// 204 when everything was stored. Under memory pressure (new series
/// refused, see [`crate::memory`]) 503 with `Retry-After`: the condition
/// passes, and Prometheus retries 5xx (what was stored already is a no-op
/// the second time). When some samples were refused for other reasons, the
/// others are stored and the answer is 400 naming each refusal reason and
/// the first refused series, the way Mimir answers partial refusals: the
/// sender must not retry what cannot succeed, and nothing it sent is
/// silently lost. Refusals are also counted in
/// `vigil_collector_samples_refused_total{reason}`.
fn refusal_answer(o: &ExternalOutcome) -> Response {
    let refused = o.refused_total();
    if refused == 0 {
        return StatusCode::NO_CONTENT.into_response();
    }
    let reasons: Vec<String> = o.refused.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    if o.refused.iter().any(|(r, _)| *r == "memory_pressure") {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "10")],
            format!(
                "{refused} samples refused ({}), {} stored; first: {}\n",
                reasons.join(", "),
                o.appended,
                o.first_error.as_deref().unwrap_or("")
            ),
        )
            .into_response();
    }
    tracing::debug!(
        refused,
        appended = o.appended,
        "remote write: samples refused"
    );
    (
        StatusCode::BAD_REQUEST,
        format!(
            "{refused} samples refused ({}), {} stored; first: {}\n",
            reasons.join(", "),
            o.appended,
            o.first_error.as_deref().unwrap_or("")
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Queryable;
    use axum::body::Body;
    use axum::http::Request;
    use proptest::prelude::*;
    use std::sync::Arc;
    use tower::ServiceExt;

    fn encode(req: &WriteRequest) -> Vec<u8> {
        let raw = prost::Message::encode_to_vec(req);
        snap::raw::Encoder::new().compress_vec(&raw).unwrap()
    }

    fn req() -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    },
                    Label {
                        name: "job".into(),
                        value: "x".into(),
                    },
                ],
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp: 1000,
                    },
                    Sample {
                        value: 2.0,
                        timestamp: 2000,
                    },
                ],
            }],
            metadata: vec![],
        }
    }

    #[tokio::test]
    async fn accepts_valid_and_rejects_malformed() {
        let store = Arc::new(Store::new(Default::default()));
        let app = super::super::router(AppState::new(store.clone()));
        let resp = app
            .clone()
            .oneshot(
                Request::post("/api/v1/write")
                    .body(Body::from(encode(&req())))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let got = store.select(&[], 0, 10_000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![(1000, 1.0), (2000, 2.0)]);
        // not snappy
        let resp = app
            .clone()
            .oneshot(
                Request::post("/api/v1/write")
                    .body(Body::from("garbage"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let b = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&b).contains("snappy"), "{b:?}");
        // snappy but not protobuf
        let bad = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        let resp = app
            .clone()
            .oneshot(
                Request::post("/api/v1/write")
                    .body(Body::from(bad))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        // the service still works
        let resp = app
            .oneshot(Request::get("/-/healthy").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[test]
    fn rejects_duplicate_and_missing_names() {
        let mut r = req();
        r.timeseries[0].labels.push(Label {
            name: "job".into(),
            value: "y".into(),
        });
        assert!(matches!(
            decode(&encode(&r)),
            Err(DecodeError::InvalidSeries { .. })
        ));
        let mut r = req();
        r.timeseries[0].labels.remove(0);
        assert!(matches!(
            decode(&encode(&r)),
            Err(DecodeError::InvalidSeries { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&body);
            let compressed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            let _ = decode(&compressed);
        }
    }
}
