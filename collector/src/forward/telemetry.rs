//! Forwarding's self-metrics, in the spirit of Prometheus's
//! `prometheus_remote_storage_*`: per endpoint (`remote_name`, `url`) what
//! was sent, failed, retried and dropped, what is pending, the shards, the
//! newest timestamp read versus sent, and how far the cursor is behind the
//! WAL. Label values are the configured endpoints (bounded) and fixed
//! reasons. Not here: deciding anything from them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub remote_name: String,
    pub url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub remote_name: String,
    pub url: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub remote_name: String,
    pub url: String,
    pub code: String,
}

type FGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Every forwarding metric; families shared by all endpoints.
#[derive(Clone)]
pub struct ForwardMetrics {
    pub sent: Family<EndpointLabels, Counter>,
    pub failed: Family<EndpointLabels, Counter>,
    pub retried: Family<EndpointLabels, Counter>,
    pub dropped: Family<ReasonLabels, Counter>,
    pub pending: Family<EndpointLabels, Gauge>,
    pub bytes: Family<EndpointLabels, Counter>,
    pub requests: Family<CodeLabels, Counter>,
    pub shards: Family<EndpointLabels, Gauge>,
    pub shards_desired: Family<EndpointLabels, Gauge>,
    pub shards_min: Family<EndpointLabels, Gauge>,
    pub shards_max: Family<EndpointLabels, Gauge>,
    pub highest_in: Family<EndpointLabels, FGauge>,
    pub highest_sent: Family<EndpointLabels, FGauge>,
    pub backlog_bytes: Family<EndpointLabels, Gauge>,
    pub metadata_sent: Family<EndpointLabels, Counter>,
    pub metadata_failed: Family<EndpointLabels, Counter>,
    pub send_seconds: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    pub downgraded: Family<EndpointLabels, Gauge>,
    pub wal_held_bytes: Gauge,
    pub wal_dropped_segments: Counter,
    pub wal_dropped_bytes: Counter,
}

fn send_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for ForwardMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ForwardMetrics {
    pub fn new() -> Self {
        ForwardMetrics {
            sent: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dropped: Family::default(),
            pending: Family::default(),
            bytes: Family::default(),
            requests: Family::default(),
            shards: Family::default(),
            shards_desired: Family::default(),
            shards_min: Family::default(),
            shards_max: Family::default(),
            highest_in: Family::default(),
            highest_sent: Family::default(),
            backlog_bytes: Family::default(),
            metadata_sent: Family::default(),
            metadata_failed: Family::default(),
            send_seconds: Family::new_with_constructor(send_histogram),
            downgraded: Family::default(),
            wal_held_bytes: Gauge::default(),
            wal_dropped_segments: Counter::default(),
            wal_dropped_bytes: Counter::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        let p = "vigil_collector_forward_";
        r.register(
            format!("{p}samples_sent"),
            "Samples or log records the endpoint accepted (2xx)",
            self.sent.clone(),
        );
        r.register(format!("{p}samples_failed"), "Samples or log records the endpoint refused for good (4xx other than 429): dropped, never retried", self.failed.clone());
        r.register(
            format!("{p}samples_retried"),
            "Samples or log records sent again after a 5xx, a 429 or a network error",
            self.retried.clone(),
        );
        r.register(format!("{p}samples_dropped"), "Samples or log records not sent, by reason (relabel: write_relabel_configs dropped them; wal_budget: the WAL was past its budget before they were read; unknown_series: their definition was lost)", self.dropped.clone());
        r.register(
            format!("{p}samples_pending"),
            "Samples or log records read from the WAL and not yet delivered",
            self.pending.clone(),
        );
        r.register(
            format!("{p}sent_bytes"),
            "Request bytes sent (compressed), retries included",
            self.bytes.clone(),
        );
        r.register(
            format!("{p}requests"),
            "Requests by HTTP status (or \"error\" for no response)",
            self.requests.clone(),
        );
        r.register(
            format!("{p}shards"),
            "Shards sending now",
            self.shards.clone(),
        );
        r.register(
            format!("{p}shards_desired"),
            "Shards the backlog calls for",
            self.shards_desired.clone(),
        );
        r.register(
            format!("{p}shards_min"),
            "Configured min_shards",
            self.shards_min.clone(),
        );
        r.register(
            format!("{p}shards_max"),
            "Configured max_shards",
            self.shards_max.clone(),
        );
        r.register(
            format!("{p}highest_timestamp_in_seconds"),
            "Newest sample or log timestamp read from the WAL",
            self.highest_in.clone(),
        );
        r.register(
            format!("{p}highest_sent_timestamp_seconds"),
            "Newest sample or log timestamp delivered",
            self.highest_sent.clone(),
        );
        r.register(
            format!("{p}backlog_bytes"),
            "WAL bytes between the endpoint's read position and the durable end",
            self.backlog_bytes.clone(),
        );
        r.register(
            format!("{p}metadata_sent"),
            "Metric metadata entries delivered",
            self.metadata_sent.clone(),
        );
        r.register(
            format!("{p}metadata_failed"),
            "Metric metadata entries not delivered (retried at the next interval)",
            self.metadata_failed.clone(),
        );
        r.register(
            format!("{p}send_duration_seconds"),
            "Duration of successful requests",
            self.send_seconds.clone(),
        );
        r.register(
            format!("{p}remote_write_downgraded"),
            "1 when a remote write 2.0 endpoint fell back to 1.0 (the receiver did not take 2.0)",
            self.downgraded.clone(),
        );
        r.register(
            format!("{p}wal_held_bytes"),
            "WAL bytes below the last checkpoint kept because a cursor still needs them",
            self.wal_held_bytes.clone(),
        );
        r.register(
            format!("{p}wal_dropped_segments"),
            "WAL segments deleted past forward_wal_max_bytes before every cursor had read them",
            self.wal_dropped_segments.clone(),
        );
        r.register(
            format!("{p}wal_dropped_bytes"),
            "Bytes of those segments",
            self.wal_dropped_bytes.clone(),
        );
    }
}

/// The metric handles of one endpoint.
#[derive(Clone)]
pub struct EndpointMetrics {
    pub labels: EndpointLabels,
    pub sent: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub pending: Gauge,
    pub bytes: Counter,
    pub shards: Gauge,
    pub shards_desired: Gauge,
    pub highest_in: FGauge,
    pub highest_sent: FGauge,
    pub backlog_bytes: Gauge,
    pub metadata_sent: Counter,
    pub metadata_failed: Counter,
    pub send_seconds: Histogram,
    pub downgraded: Gauge,
    all: ForwardMetrics,
}

impl EndpointMetrics {
    pub fn new(all: &ForwardMetrics, name: &str, url: &str, min: usize, max: usize) -> Self {
        let l = EndpointLabels {
            remote_name: name.to_string(),
            url: url.to_string(),
        };
        all.shards_min.get_or_create(&l).set(min as i64);
        all.shards_max.get_or_create(&l).set(max as i64);
        // the families exist with 0 before anything happens, so rules see them
        for r in ["relabel", "wal_budget", "unknown_series"] {
            let _ = all.dropped.get_or_create(&ReasonLabels {
                remote_name: l.remote_name.clone(),
                url: l.url.clone(),
                reason: r.into(),
            });
        }
        EndpointMetrics {
            sent: all.sent.get_or_create(&l).clone(),
            failed: all.failed.get_or_create(&l).clone(),
            retried: all.retried.get_or_create(&l).clone(),
            pending: all.pending.get_or_create(&l).clone(),
            bytes: all.bytes.get_or_create(&l).clone(),
            shards: all.shards.get_or_create(&l).clone(),
            shards_desired: all.shards_desired.get_or_create(&l).clone(),
            highest_in: all.highest_in.get_or_create(&l).clone(),
            highest_sent: all.highest_sent.get_or_create(&l).clone(),
            backlog_bytes: all.backlog_bytes.get_or_create(&l).clone(),
            metadata_sent: all.metadata_sent.get_or_create(&l).clone(),
            metadata_failed: all.metadata_failed.get_or_create(&l).clone(),
            send_seconds: all.send_seconds.get_or_create(&l).clone(),
            downgraded: all.downgraded.get_or_create(&l).clone(),
            labels: l,
            all: all.clone(),
        }
    }

    pub fn dropped(&self, reason: &str) -> Counter {
        self.all
            .dropped
            .get_or_create(&ReasonLabels {
                remote_name: self.labels.remote_name.clone(),
                url: self.labels.url.clone(),
                reason: reason.into(),
            })
            .clone()
    }

    pub fn request(&self, code: &str) {
        self.all
            .requests
            .get_or_create(&CodeLabels {
                remote_name: self.labels.remote_name.clone(),
                url: self.labels.url.clone(),
                code: code.into(),
            })
            .inc();
    }

    /// Raises a float gauge (timestamps only move forward).
    pub fn raise(g: &FGauge, v: f64) {
        if v > g.get() {
            g.set(v);
        }
    }
}
