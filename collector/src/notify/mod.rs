//! Sends alerts to Alertmanager (`POST /api/v2/alerts`), as Prometheus'
//! notifier does: external labels added (alert labels win), a bounded queue
//! that drops the oldest alerts when full, batches of at most 64 alerts sent
//! to every configured Alertmanager concurrently, `generatorURL` pointing at
//! the rule's expression. Unlike Prometheus, a failed batch is retried a few
//! times with backoff before it is counted as failed (the rule manager also
//! re-sends firing alerts every resend delay, so nothing waits on it).
//!
//! Not here: which alerts are due and their `endsAt` (the rule manager's
//! send rules in [`crate::rules::alerting`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vigil_common::Labels;

use crate::gofmt::query_escape;

/// Prometheus' batch size.
pub const MAX_BATCH: usize = 64;

#[derive(Clone, Debug)]
pub struct NotifierOptions {
    /// Alertmanager base URLs (`http://am:9093`); `/api/v2/alerts` is appended.
    pub alertmanagers: Vec<String>,
    /// Alerts waiting at most; beyond it the oldest are dropped (Prometheus: 10000).
    pub queue_capacity: usize,
    /// Per request.
    pub timeout: Duration,
    /// Attempts per batch and Alertmanager.
    pub attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    pub external_labels: Labels,
    /// Prefix of `generatorURL`.
    pub external_url: String,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            alertmanagers: Vec::new(),
            queue_capacity: 10_000,
            timeout: Duration::from_secs(10),
            attempts: 3,
            retry_backoff: Duration::from_millis(200),
            external_labels: Labels::default(),
            external_url: String::new(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AmLabels {
    alertmanager: String,
}

#[derive(Default)]
struct Metrics {
    sent: Family<AmLabels, Counter>,
    failed: Family<AmLabels, Counter>,
    requests_failed: Family<AmLabels, Counter>,
    dropped: Counter,
    queue_length: Gauge,
    queue_capacity: Gauge,
    alertmanagers: Gauge,
}

/// One alert as Alertmanager's v2 API takes it.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: Labels,
    pub annotations: Labels,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Why the notifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("alertmanager URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// An alert ready for Alertmanager (what alerting rules and the actions engine hand the notifier).
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingAlert {
    pub labels: Labels,
    pub annotations: Labels,
    /// Milliseconds; `FiredAt`, as Prometheus sends it.
    pub starts_at: Option<i64>,
    /// Milliseconds: the resolution time, or how long the alert stays valid.
    pub ends_at: Option<i64>,
    /// The rule's expression, for `generatorURL`.
    pub expr: String,
}

/// The notifier: [`Notifier::send`] queues, [`Notifier::run`] delivers.
pub struct Notifier {
    opts: NotifierOptions,
    urls: Vec<String>,
    client: reqwest::Client,
    queue: Mutex<VecDeque<PostableAlert>>,
    more: tokio::sync::Notify,
    metrics: Metrics,
}

impl Notifier {
    pub fn new(opts: NotifierOptions) -> Result<Arc<Self>, NotifierError> {
        crate::tls::ensure_crypto_provider();
        let mut urls = Vec::new();
        for u in &opts.alertmanagers {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(NotifierError::BadUrl {
                    url: u.clone(),
                    reason: "must start with http:// or https://".into(),
                });
            }
            urls.push(format!("{}/api/v2/alerts", u.trim_end_matches('/')));
        }
        let client = reqwest::Client::builder().timeout(opts.timeout).build()?;
        let metrics = Metrics::default();
        metrics.queue_capacity.set(opts.queue_capacity as i64);
        metrics.alertmanagers.set(urls.len() as i64);
        Ok(Arc::new(Notifier {
            opts,
            urls,
            client,
            queue: Mutex::new(VecDeque::new()),
            more: tokio::sync::Notify::new(),
            metrics,
        }))
    }

    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "vigil_collector_notifications_sent",
            "Alerts delivered to an Alertmanager",
            m.sent.clone(),
        );
        registry.register(
            "vigil_collector_notifications_failed",
            "Alerts an Alertmanager did not take after every retry",
            m.failed.clone(),
        );
        registry.register(
            "vigil_collector_notification_requests_failed",
            "Requests to an Alertmanager that failed (each retry counts)",
            m.requests_failed.clone(),
        );
        registry.register(
            "vigil_collector_notifications_dropped",
            "Alerts dropped because the queue was full",
            m.dropped.clone(),
        );
        registry.register(
            "vigil_collector_notifications_queue_length",
            "Alerts waiting to be sent",
            m.queue_length.clone(),
        );
        registry.register(
            "vigil_collector_notifications_queue_capacity",
            "Most alerts the queue holds",
            m.queue_capacity.clone(),
        );
        registry.register(
            "vigil_collector_notifications_alertmanagers",
            "Alertmanagers alerts are sent to",
            m.alertmanagers.clone(),
        );
    }

    /// Alerts waiting to be sent.
    pub fn queue_len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Alerts dropped because the queue was full, so far.
    pub fn dropped(&self) -> u64 {
        self.metrics.dropped.get()
    }

    /// Converts and queues alerts; never blocks. When the queue is full the
    /// oldest alerts make room (they are stale first).
    pub fn send(&self, alerts: Vec<OutgoingAlert>) {
        if alerts.is_empty() || self.urls.is_empty() {
            return;
        }
        let mut conv: Vec<PostableAlert> = alerts.into_iter().map(|a| self.postable(a)).collect();
        let cap = self.opts.queue_capacity.max(1);
        let mut q = self.queue.lock();
        if conv.len() > cap {
            let d = conv.len() - cap;
            conv.drain(..d);
            self.metrics.dropped.inc_by(d as u64);
            tracing::warn!(
                dropped = d,
                "alert batch larger than the queue; dropping the oldest"
            );
        }
        let over = (q.len() + conv.len()).saturating_sub(cap);
        if over > 0 {
            q.drain(..over);
            self.metrics.dropped.inc_by(over as u64);
            tracing::warn!(
                dropped = over,
                "alert queue full; dropping the oldest alerts"
            );
        }
        q.extend(conv);
        self.metrics.queue_length.set(q.len() as i64);
        drop(q);
        self.more.notify_one();
    }

    fn postable(&self, a: OutgoingAlert) -> PostableAlert {
        let mut labels = a.labels;
        for (k, v) in self.opts.external_labels.iter() {
            if labels.get(k).is_none_or(str::is_empty) {
                labels = labels.with(k, v);
            }
        }
        PostableAlert {
            labels,
            annotations: a.annotations,
            starts_at: a.starts_at.map(vigil_common::time::format_rfc3339_millis),
            ends_at: a.ends_at.map(vigil_common::time::format_rfc3339_millis),
            generator_url: format!(
                "{}/graph?g0.expr={}&g0.tab=1",
                self.opts.external_url.trim_end_matches('/'),
                query_escape(&a.expr)
            ),
        }
    }

    fn next_batch(&self) -> Vec<PostableAlert> {
        let mut q = self.queue.lock();
        let n = q.len().min(MAX_BATCH);
        let b: Vec<PostableAlert> = q.drain(..n).collect();
        self.metrics.queue_length.set(q.len() as i64);
        b
    }

    /// Delivers queued alerts until `shutdown`, then makes one last attempt
    /// at what is still queued.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.more.notified() => continue,
                }
            }
            self.send_all(&batch, &shutdown).await;
        }
        let stop = CancellationToken::new();
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                break;
            }
            // on the way out: one attempt each, no backoff
            stop.cancel();
            self.send_all(&batch, &stop).await;
        }
    }

    /// Sends one batch to every Alertmanager concurrently; true when at least
    /// one took it.
    pub async fn send_all(&self, batch: &[PostableAlert], shutdown: &CancellationToken) -> bool {
        let body = match serde_json::to_vec(batch) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode alerts");
                return false;
            }
        };
        let sends = self.urls.iter().map(|url| {
            let body = body.clone();
            async move {
                let am = AmLabels {
                    alertmanager: url.clone(),
                };
                let ok = self.send_one(url, body, shutdown).await;
                if ok {
                    self.metrics
                        .sent
                        .get_or_create(&am)
                        .inc_by(batch.len() as u64);
                } else {
                    self.metrics
                        .failed
                        .get_or_create(&am)
                        .inc_by(batch.len() as u64);
                }
                ok
            }
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .any(|ok| ok)
    }

    async fn send_one(&self, url: &str, body: bytes::Bytes, shutdown: &CancellationToken) -> bool {
        let am = AmLabels {
            alertmanager: url.to_string(),
        };
        // `retry_backoff` doubling, with jitter
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.opts.retry_backoff)
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times()
            .build();
        for attempt in 1..=self.opts.attempts.max(1) {
            let r = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .header(
                    "user-agent",
                    concat!("vigil-collector/", env!("CARGO_PKG_VERSION")),
                )
                .body(body.clone())
                .send()
                .await;
            let retry = match r {
                Ok(resp) if resp.status().is_success() => return true,
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    tracing::warn!(alertmanager = url, %status, body = %text.chars().take(200).collect::<String>(), attempt, "Alertmanager refused alerts");
                    status.is_server_error() || status.as_u16() == 429
                }
                Err(e) => {
                    tracing::warn!(alertmanager = url, error = %e, attempt, "sending alerts failed");
                    true
                }
            };
            self.metrics.requests_failed.get_or_create(&am).inc();
            if !retry || attempt == self.opts.attempts.max(1) || shutdown.is_cancelled() {
                break;
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(60));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        false
    }

    /// Metric values, for tests: (sent, failed, dropped) summed over Alertmanagers.
    pub fn counts(&self) -> (u64, u64, u64) {
        let sum = |f: &Family<AmLabels, Counter>| -> u64 {
            self.urls
                .iter()
                .map(|u| {
                    f.get_or_create(&AmLabels {
                        alertmanager: u.clone(),
                    })
                    .get()
                })
                .sum()
        };
        (
            sum(&self.metrics.sent),
            sum(&self.metrics.failed),
            self.metrics.dropped.get(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;

    struct Am {
        url: String,
        received: Arc<Mutex<Vec<serde_json::Value>>>,
        status: Arc<std::sync::atomic::AtomicU16>,
        _task: tokio::task::JoinHandle<()>,
    }

    async fn am() -> Am {
        let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let (r, s) = (received.clone(), status.clone());
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            post(move |body: axum::body::Bytes| {
                let (r, s) = (r.clone(), s.clone());
                async move {
                    let code = s.load(std::sync::atomic::Ordering::SeqCst);
                    if code == 200
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                    {
                        r.lock().push(v);
                    }
                    axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK)
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Am {
            url,
            received,
            status,
            _task: task,
        }
    }

    fn alert(name: &str, i: usize) -> OutgoingAlert {
        OutgoingAlert {
            labels: Labels::new([
                ("alertname", name.to_string()),
                ("i", i.to_string()),
                ("env", String::new()),
            ]),
            annotations: Labels::new([("summary", "s")]),
            starts_at: Some(1_700_000_000_000),
            ends_at: Some(1_700_000_240_123),
            expr: "up == 0".into(),
        }
    }

    fn opts(urls: Vec<String>) -> NotifierOptions {
        NotifierOptions {
            alertmanagers: urls,
            external_labels: Labels::new([("cluster", "c1"), ("i", "ext"), ("env", "prod")]),
            external_url: "http://vigil:9490".into(),
            retry_backoff: Duration::from_millis(10),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn posts_v2_alerts_in_batches_to_every_alertmanager() {
        let (a, b) = (am().await, am().await);
        let n = Notifier::new(opts(vec![a.url.clone(), format!("{}/", b.url)])).unwrap();
        let sd = CancellationToken::new();
        let task = tokio::spawn(n.clone().run(sd.clone()));
        n.send((0..100).map(|i| alert("A", i)).collect());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while n.counts().0 < 200 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sd.cancel();
        task.await.unwrap();
        assert_eq!(n.counts(), (200, 0, 0));
        for am in [&a, &b] {
            let got = am.received.lock().clone();
            let sizes: Vec<usize> = got
                .iter()
                .map(|v| v.as_array().map_or(0, |a| a.len()))
                .collect();
            assert_eq!(sizes.iter().sum::<usize>(), 100);
            assert!(sizes.iter().all(|s| *s <= MAX_BATCH), "{sizes:?}");
            let first = &got[0][0];
            assert_eq!(first["labels"]["alertname"], "A");
            assert_eq!(first["labels"]["cluster"], "c1", "external label added");
            assert_eq!(first["labels"]["i"], "0", "alert label wins over external");
            assert_eq!(
                first["labels"]["env"], "prod",
                "empty alert label is absent"
            );
            assert_eq!(first["annotations"]["summary"], "s");
            assert_eq!(first["startsAt"], "2023-11-14T22:13:20.000Z");
            assert_eq!(first["endsAt"], "2023-11-14T22:17:20.123Z");
            assert_eq!(
                first["generatorURL"],
                "http://vigil:9490/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
            );
        }
    }

    #[tokio::test]
    async fn retries_then_counts_failures() {
        let a = am().await;
        a.status.store(503, std::sync::atomic::Ordering::SeqCst);
        let n = Notifier::new(opts(vec![a.url.clone()])).unwrap();
        let sd = CancellationToken::new();
        let batch: Vec<PostableAlert> = vec![n.postable(alert("A", 1))];
        assert!(!n.send_all(&batch, &sd).await);
        assert_eq!(n.counts(), (0, 1, 0));
        let failed_requests = n
            .metrics
            .requests_failed
            .get_or_create(&AmLabels {
                alertmanager: format!("{}/api/v2/alerts", a.url),
            })
            .get();
        assert_eq!(failed_requests, 3, "three attempts");
        // a 400 is not retried
        a.status.store(400, std::sync::atomic::Ordering::SeqCst);
        assert!(!n.send_all(&batch, &sd).await);
        let failed_requests = n
            .metrics
            .requests_failed
            .get_or_create(&AmLabels {
                alertmanager: format!("{}/api/v2/alerts", a.url),
            })
            .get();
        assert_eq!(failed_requests, 4);
        // recovers
        a.status.store(200, std::sync::atomic::Ordering::SeqCst);
        assert!(n.send_all(&batch, &sd).await);
        assert_eq!(n.counts(), (1, 2, 0));
        // an unreachable Alertmanager fails, the reachable one still counts
        let n = Notifier::new(opts(vec![a.url.clone(), "http://127.0.0.1:1".into()])).unwrap();
        assert!(n.send_all(&batch, &sd).await);
        assert_eq!(n.counts(), (1, 1, 0));
    }

    #[test]
    fn bounded_queue_drops_oldest() {
        let n = Notifier::new(NotifierOptions {
            queue_capacity: 10,
            ..opts(vec!["http://127.0.0.1:1".into()])
        })
        .unwrap();
        n.send((0..8).map(|i| alert("A", i)).collect());
        n.send((8..12).map(|i| alert("A", i)).collect());
        assert_eq!(n.queue_len(), 10);
        assert_eq!(n.dropped(), 2);
        let b = n.next_batch();
        assert_eq!(b[0].labels.get("i"), Some("2"), "oldest dropped");
        n.send((0..25).map(|i| alert("B", i)).collect());
        assert_eq!(n.queue_len(), 10);
        assert_eq!(n.dropped(), 2 + 15);
        assert!(Notifier::new(opts(vec!["am:9093".into()])).is_err());
    }
}
