//! OTLP over gRPC: opentelemetry-proto's `MetricsService` and `LogsService`
//! on the collector's gRPC port, beside `vigil.v1.Ingest`. Answers as the
//! OTLP specification has them: OK with a `partial_success` when part was
//! refused, UNAVAILABLE when nothing could be made durable (retryable).
//! Requests that do not decode or are over `max_message_bytes` are
//! answered by tonic (INTERNAL, OUT_OF_RANGE) before a handler runs;
//! [`Counted`] counts those refusals. Both services accept gzip and zstd,
//! and the agents' bearer token when one is configured.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::ingest::push::PushIngest;
use crate::push::{Protocol, PushMetrics, Reason, Signal};

/// The metrics service.
pub struct Metrics(pub Arc<PushIngest>);

/// The logs service.
pub struct Logs(pub Arc<PushIngest>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let p = super::export_metrics(&self.0, Protocol::OtlpGrpc, req.into_inner())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: crate::http::otlp::partial(&p).map(|(n, m)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points: n,
                    error_message: m,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Logs {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let p = super::export_logs(&self.0, Protocol::OtlpGrpc, req.into_inner())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: crate::http::otlp::partial(&p).map(|(n, m)| {
                ExportLogsPartialSuccess {
                    rejected_log_records: n,
                    error_message: m,
                }
            }),
        }))
    }
}

/// The servers, with compression and the message size limit.
pub fn servers(
    push: Arc<PushIngest>,
    max_message_bytes: usize,
) -> (MetricsServiceServer<Metrics>, LogsServiceServer<Logs>) {
    let m = MetricsServiceServer::new(Metrics(push.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max_message_bytes);
    let l = LogsServiceServer::new(Logs(push))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max_message_bytes);
    (m, l)
}

/// Counts the refusals tonic answers before a handler runs: a request that
/// does not decode (INTERNAL) or is too large (OUT_OF_RANGE).
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<PushMetrics>,
    signal: Signal,
}

impl<S> Counted<S> {
    pub fn new(inner: S, metrics: Arc<PushMetrics>, signal: Signal) -> Self {
        Counted {
            inner,
            metrics,
            signal,
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for Counted<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<B>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let fut = self.inner.call(req);
        let (metrics, signal) = (self.metrics.clone(), self.signal);
        Box::pin(async move {
            let resp = fut.await?;
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from);
            let reason = match code {
                Some(tonic::Code::Internal) => Some(Reason::Malformed),
                Some(tonic::Code::OutOfRange) => Some(Reason::TooLarge),
                _ => None,
            };
            if let Some(r) = reason {
                metrics.refuse_request(Protocol::OtlpGrpc, signal, r);
            }
            Ok(resp)
        })
    }
}
