//! One request to an endpoint and what its answer means. The rules, per
//! protocol:
//! - remote write and Loki (the remote write spec): 2xx delivered; 5xx
//!   retried; 429 retried when `retry_on_http_429` (else refused); any other
//!   4xx refused for good — dropped and counted, never retried.
//! - OTLP/HTTP (the OTLP spec): 2xx delivered (rejected points of a partial
//!   success are counted as failed); 429, 502, 503, 504 retried; others
//!   refused.
//! - a `Retry-After` (seconds or an HTTP date) on a retried answer sets the
//!   wait; no response at all (connection refused, timeout) is retried.
//!
//! Not here: the waiting and the counting of retries (the queue).

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use reqwest::StatusCode;

use super::config::{Auth, QueueConfig};
use super::remote_write::{self, Negotiation};
use super::telemetry::EndpointMetrics;
use super::{Items, Kind, loki, otlp};
use crate::metadata::Metadata;

/// What an answer means for the batch.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Send again after `after` (or the backoff's next wait).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Send again at once (the protocol was renegotiated).
    Resend,
    /// Refused for good: dropped.
    Reject(String),
}

/// The protocol an endpoint speaks.
pub enum Wire {
    RemoteWrite {
        negotiation: Negotiation,
        metadata: Arc<Metadata>,
    },
    Loki {
        tenant: Option<String>,
    },
    OtlpMetrics {
        metadata: Arc<Metadata>,
        gzip: bool,
    },
    OtlpLogs {
        gzip: bool,
    },
}

/// One endpoint (one pipeline): where, how, and its metrics.
pub struct Endpoint {
    pub name: String,
    /// The URL as configured (the metrics' `url` label).
    pub url: String,
    /// The URL requests go to (differs with `tls_config.server_name`).
    pub request_url: String,
    /// `Host` to send when `request_url`'s host is only for TLS.
    pub host_header: Option<String>,
    pub client: reqwest::Client,
    pub headers: Vec<(String, String)>,
    pub auth: Auth,
    pub wire: Wire,
    pub kind: Kind,
    pub queue: QueueConfig,
    pub relabel: Arc<Vec<vigil_common::relabel::Relabel>>,
    pub metrics: EndpointMetrics,
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn retry_after(v: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let s = v?.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The verdict for a status under the remote write / Loki rules.
pub fn classify_prometheus(
    status: StatusCode,
    retry_429: bool,
    after: Option<Duration>,
) -> Verdict {
    let code = status.as_u16();
    match code {
        200..=299 => Verdict::Delivered,
        429 if retry_429 => Verdict::Retry {
            after,
            reason: "429 Too Many Requests".into(),
        },
        500..=599 => Verdict::Retry {
            after,
            reason: format!("HTTP {code}"),
        },
        _ => Verdict::Reject(format!("HTTP {code}")),
    }
}

/// The verdict for a status under the OTLP/HTTP rules.
pub fn classify_otlp(status: StatusCode, after: Option<Duration>) -> Verdict {
    let code = status.as_u16();
    match code {
        200..=299 => Verdict::Delivered,
        429 | 502 | 503 | 504 => Verdict::Retry {
            after,
            reason: format!("HTTP {code}"),
        },
        _ => Verdict::Reject(format!("HTTP {code}")),
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(body);
    e.finish().unwrap_or_default()
}

fn snappy(body: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(body)
        .unwrap_or_default()
}

/// The first bytes of an error body, for the log (the spec: log it as is).
async fn body_excerpt(r: reqwest::Response) -> String {
    let b = r.bytes().await.unwrap_or_default();
    let s = String::from_utf8_lossy(&b[..b.len().min(512)]);
    s.trim().to_string()
}

impl Endpoint {
    fn request(&self, url: &str, body: Vec<u8>) -> Result<reqwest::RequestBuilder, String> {
        let mut req = self.client.post(url);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(h) = &self.host_header {
            req = req.header(reqwest::header::HOST, h.as_str());
        }
        if let Some(a) = self.auth.header()? {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        self.metrics.bytes.inc_by(body.len() as u64);
        Ok(req.body(body))
    }

    /// Sends one batch and judges the answer.
    pub async fn send(&self, items: &Items) -> Verdict {
        match (&self.wire, items) {
            (
                Wire::RemoteWrite {
                    negotiation,
                    metadata,
                },
                Items::Samples(s),
            ) => {
                let v2 = negotiation.v2();
                let body = if v2 {
                    remote_write::encode_v2(s, metadata)
                } else {
                    let mut b = Vec::with_capacity(s.len() * 64);
                    remote_write::encode_v1(s, &mut b);
                    b
                };
                let req = match self.request(&self.request_url, snappy(&body)) {
                    Ok(r) => r,
                    Err(e) => return self.no_request(e),
                };
                let req = req
                    .header("content-encoding", "snappy")
                    .header(
                        "content-type",
                        if v2 {
                            remote_write::CONTENT_TYPE_V2
                        } else {
                            remote_write::CONTENT_TYPE_V1
                        },
                    )
                    .header(
                        "x-prometheus-remote-write-version",
                        if v2 {
                            remote_write::VERSION_V2
                        } else {
                            remote_write::VERSION_V1
                        },
                    );
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => return self.no_response(e),
                };
                let status = resp.status();
                self.metrics.request(status.as_str());
                if v2 {
                    let written = resp.headers().get(remote_write::SAMPLES_WRITTEN).is_some();
                    let unsupported = status == StatusCode::UNSUPPORTED_MEDIA_TYPE
                        || (status.is_success() && !written && !s.is_empty());
                    if unsupported {
                        if negotiation.downgrade() {
                            self.metrics.downgraded.set(1);
                            tracing::warn!(endpoint = %self.name, status = status.as_u16(), "the receiver does not take remote write 2.0; sending 1.0 from now on");
                        }
                        return Verdict::Resend;
                    }
                }
                let after = retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
                let v = classify_prometheus(status, self.queue.retry_on_http_429, after);
                self.with_body(v, resp).await
            }
            (Wire::Loki { tenant }, Items::Logs(l)) => {
                let req = match self.request(&self.request_url, snappy(&loki::encode(l))) {
                    Ok(r) => r,
                    Err(e) => return self.no_request(e),
                };
                let mut req = req
                    .header("content-type", loki::CONTENT_TYPE)
                    .header("content-encoding", "snappy");
                if let Some(t) = tenant {
                    req = req.header("x-scope-orgid", t.as_str());
                }
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => return self.no_response(e),
                };
                self.metrics.request(resp.status().as_str());
                let after = retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
                let v = classify_prometheus(resp.status(), self.queue.retry_on_http_429, after);
                self.with_body(v, resp).await
            }
            (Wire::OtlpMetrics { metadata, gzip: gz }, Items::Samples(s)) => {
                self.send_otlp(otlp::encode_metrics(s, metadata), *gz, true)
                    .await
            }
            (Wire::OtlpLogs { gzip: gz }, Items::Logs(l)) => {
                self.send_otlp(otlp::encode_logs(l), *gz, false).await
            }
            _ => Verdict::Reject("items of the wrong kind for this endpoint".into()),
        }
    }

    async fn send_otlp(&self, body: Vec<u8>, gz: bool, metrics: bool) -> Verdict {
        let body = if gz { gzip(&body) } else { body };
        let req = match self.request(&self.request_url, body) {
            Ok(r) => r,
            Err(e) => return self.no_request(e),
        };
        let mut req = req.header("content-type", otlp::CONTENT_TYPE);
        if gz {
            req = req.header("content-encoding", "gzip");
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return self.no_response(e),
        };
        let status = resp.status();
        self.metrics.request(status.as_str());
        let after = retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
        let v = classify_otlp(status, after);
        if v == Verdict::Delivered {
            // a partial success names how many were refused
            let b = resp.bytes().await.unwrap_or_default();
            let rejected = if metrics {
                opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(b.as_ref())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map(|p| (p.rejected_data_points, p.error_message))
            } else {
                opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
                    b.as_ref(),
                )
                .ok()
                .and_then(|r| r.partial_success)
                .map(|p| (p.rejected_log_records, p.error_message))
            };
            if let Some((n, msg)) = rejected
                && n > 0
            {
                self.metrics.failed.inc_by(n as u64);
                tracing::warn!(endpoint = %self.name, rejected = n, message = %msg, "OTLP partial success: some points were refused");
            }
            return v;
        }
        self.with_body(v, resp).await
    }

    async fn with_body(&self, v: Verdict, resp: reqwest::Response) -> Verdict {
        match v {
            Verdict::Delivered | Verdict::Resend => v,
            Verdict::Retry { after, reason } => Verdict::Retry {
                after,
                reason: format!("{reason}: {}", body_excerpt(resp).await),
            },
            Verdict::Reject(reason) => {
                Verdict::Reject(format!("{reason}: {}", body_excerpt(resp).await))
            }
        }
    }

    fn no_response(&self, e: reqwest::Error) -> Verdict {
        self.metrics.request("error");
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        Verdict::Retry {
            after: None,
            reason: msg,
        }
    }

    fn no_request(&self, e: String) -> Verdict {
        Verdict::Retry {
            after: None,
            reason: format!("cannot build the request: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rules() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert_eq!(classify_prometheus(s(204), true, None), Verdict::Delivered);
        assert!(matches!(
            classify_prometheus(s(500), true, None),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            classify_prometheus(s(503), false, None),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            classify_prometheus(s(429), true, Some(Duration::from_secs(2))),
            Verdict::Retry { after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            classify_prometheus(s(429), false, None),
            Verdict::Reject(_)
        ));
        for c in [400, 401, 403, 404, 409, 413, 415] {
            assert!(
                matches!(classify_prometheus(s(c), true, None), Verdict::Reject(_)),
                "{c}"
            );
        }
        assert!(matches!(classify_otlp(s(500), None), Verdict::Reject(_)));
        for c in [429, 502, 503, 504] {
            assert!(
                matches!(classify_otlp(s(c), None), Verdict::Retry { .. }),
                "{c}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let h = |s: &str| reqwest::header::HeaderValue::from_str(s).unwrap();
        assert_eq!(retry_after(Some(&h("3"))), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let d = retry_after(Some(&h(&later))).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(retry_after(Some(&h("soon"))), None);
        assert_eq!(retry_after(None), None);
    }
}
