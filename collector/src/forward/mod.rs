//! Forwarding: everything the collector made durable, sent on to
//! distributed engines — Prometheus remote write (1.0, and 2.0 where the
//! receiver takes it) to VictoriaMetrics, Mimir, Thanos Receive, Cortex or
//! Prometheus; log records to Loki's push API; both over OTLP/HTTP.
//!
//! Every endpoint tails the write-ahead log ([`crate::wal::reader`]) from
//! its own cursor, so it sends what agents, remote write, the self-scrape
//! and rules wrote, in order, and a restart — or a `kill -9` — resumes where
//! the endpoint's persisted cursor says. While a cursor lags, the WAL keeps
//! its segments, up to `forward_wal_max_bytes`; past it the oldest go and
//! what they held is counted (`vigil_collector_forward_samples_dropped_total
//! {reason="wal_budget"}`). Endpoints are independent: one that is down,
//! slow or refusing holds only its own queue (bounded) and its own cursor.
//!
//! # Layout
//! [`config`] (YAML, clients) · [`cursor`] (position, tracker) · [`queue`]
//! (reader, shards, retries) · [`send`] (a request and its verdict) ·
//! [`remote_write`], [`loki`], [`otlp`] (encodings) · [`telemetry`].
//!
//! Delivery is at least once: a batch whose answer was lost, or that was in
//! flight at a crash, is sent again — identical (same series, timestamps,
//! values), which every engine stores once (Prometheus, Mimir and Loki drop
//! an identical repeat; VictoriaMetrics with `-dedup.minScrapeInterval`).

pub mod config;
pub mod cursor;
pub mod loki;
pub mod otlp;
pub mod queue;
pub mod remote_write;
pub mod send;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use vigil_common::Labels;

use crate::metadata::Metadata;
use crate::wal::{Position, Wal};
use config::{Auth, ClientError, ForwardConfig, HttpUrl, QueueConfig, TlsConfig, default_name};
use send::{Endpoint, Wire};
use telemetry::{EndpointMetrics, ForwardMetrics};

/// What a pipeline carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Samples,
    Logs,
}

/// A sample to send: its series (after relabeling), timestamp (ms), value.
#[derive(Clone, Debug)]
pub struct SampleItem {
    pub series: Arc<Labels>,
    pub t: i64,
    pub v: f64,
}

/// A log record to send.
#[derive(Clone, Debug)]
pub struct LogItem {
    pub stream: Arc<Labels>,
    pub t_ns: i64,
    pub line: String,
}

/// A batch of one kind.
#[derive(Debug)]
pub enum Items {
    Samples(Vec<SampleItem>),
    Logs(Vec<LogItem>),
}

impl Items {
    pub fn empty(kind: Kind) -> Items {
        match kind {
            Kind::Samples => Items::Samples(Vec::new()),
            Kind::Logs => Items::Logs(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Items::Samples(v) => v.len(),
            Items::Logs(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push_sample(&mut self, s: SampleItem) {
        if let Items::Samples(v) = self {
            v.push(s);
        }
    }

    pub fn push_log(&mut self, l: LogItem) {
        if let Items::Logs(v) = self {
            v.push(l);
        }
    }

    /// Appends `other` (of the same kind).
    pub fn append(&mut self, other: Items) {
        match (self, other) {
            (Items::Samples(a), Items::Samples(mut b)) => a.append(&mut b),
            (Items::Logs(a), Items::Logs(mut b)) => a.append(&mut b),
            _ => {}
        }
    }

    /// Splits into parts of at most `max` items, in order.
    pub fn split(self, max: usize) -> Vec<Items> {
        let max = max.max(1);
        if self.len() <= max {
            return vec![self];
        }
        fn chunks<T>(mut v: Vec<T>, max: usize) -> Vec<Vec<T>> {
            let mut out = Vec::with_capacity(v.len() / max + 1);
            while v.len() > max {
                let rest = v.split_off(max);
                out.push(v);
                v = rest;
            }
            out.push(v);
            out
        }
        match self {
            Items::Samples(v) => chunks(v, max).into_iter().map(Items::Samples).collect(),
            Items::Logs(v) => chunks(v, max).into_iter().map(Items::Logs).collect(),
        }
    }

    /// Splits into the first `m` items and the rest (two parts, in order).
    pub fn split_at(self, m: usize) -> Vec<Items> {
        match self {
            Items::Samples(mut v) => {
                let rest = v.split_off(m.min(v.len()));
                vec![Items::Samples(v), Items::Samples(rest)]
            }
            Items::Logs(mut v) => {
                let rest = v.split_off(m.min(v.len()));
                vec![Items::Logs(v), Items::Logs(rest)]
            }
        }
    }

    /// The newest timestamp held, in seconds (0 when empty).
    pub fn newest_secs(&self) -> f64 {
        let ms = match self {
            Items::Samples(v) => v.iter().map(|s| s.t).max(),
            Items::Logs(v) => v.iter().map(|l| l.t_ns / 1_000_000).max(),
        };
        ms.map(|m| m as f64 / 1000.0).unwrap_or(0.0)
    }
}

/// Why forwarding could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("forward state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the cursors live.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("forward")
}

/// The running forwarders.
pub struct Forwarder {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub metrics: ForwardMetrics,
}

struct EndpointSpec<'a> {
    name: String,
    url: String,
    tls: Option<&'a TlsConfig>,
    timeout: Duration,
    headers: Vec<(String, String)>,
    auth: Auth,
    wire: Wire,
    kind: Kind,
    queue: QueueConfig,
    relabel: Arc<Vec<vigil_common::relabel::Relabel>>,
}

fn endpoint(spec: EndpointSpec<'_>, metrics: &ForwardMetrics) -> Result<Endpoint, ClientError> {
    let client = config::build_client(&spec.name, &spec.url, spec.tls, spec.timeout)?;
    let request_url = config::request_url(&spec.url, spec.tls);
    let host_header = (request_url != spec.url)
        .then(|| reqwest::Url::parse(&spec.url).ok())
        .flatten()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        });
    Ok(Endpoint {
        metrics: EndpointMetrics::new(
            metrics,
            &spec.name,
            &spec.url,
            spec.queue.min_shards,
            spec.queue.max_shards,
        ),
        name: spec.name,
        url: spec.url,
        request_url,
        host_header,
        client,
        headers: spec.headers,
        auth: spec.auth,
        wire: spec.wire,
        kind: spec.kind,
        queue: spec.queue,
        relabel: spec.relabel,
    })
}

fn otlp_url(base: &HttpUrl, path: &str) -> String {
    format!("{}{path}", base.0.trim_end_matches('/'))
}

/// Builds every endpoint of `cfg` (a bad file or TLS setting is an error
/// naming the endpoint and key).
fn endpoints(
    cfg: &ForwardConfig,
    metadata: &Arc<Metadata>,
    metrics: &ForwardMetrics,
) -> Result<Vec<Endpoint>, ClientError> {
    let timeout = |t: Option<vigil_common::Duration>| {
        t.map(|d| d.as_std()).unwrap_or(Duration::from_secs(30))
    };
    let mut out = Vec::new();
    for r in &cfg.remote_write {
        let name = r
            .name
            .as_ref()
            .map(|n| n.0.clone())
            .unwrap_or_else(|| default_name("rw", &r.url.0));
        let auth = Auth::from_config(&name, r.authorization.as_ref(), r.basic_auth.as_ref())?;
        out.push(endpoint(
            EndpointSpec {
                url: r.url.0.clone(),
                tls: r.tls_config.as_ref(),
                timeout: timeout(r.remote_timeout),
                headers: r.headers.0.clone().into_iter().collect(),
                auth,
                wire: Wire::RemoteWrite {
                    negotiation: remote_write::Negotiation::new(
                        r.protobuf_message == config::ProtobufMessage::V2,
                    ),
                    metadata: metadata.clone(),
                },
                kind: Kind::Samples,
                queue: r.queue_config.clone(),
                relabel: r.write_relabel_configs.compiled.clone(),
                name,
            },
            metrics,
        )?);
    }
    for l in &cfg.loki_push {
        let name = l
            .name
            .as_ref()
            .map(|n| n.0.clone())
            .unwrap_or_else(|| default_name("loki", &l.url.0));
        let auth = Auth::from_config(&name, l.authorization.as_ref(), l.basic_auth.as_ref())?;
        out.push(endpoint(
            EndpointSpec {
                url: l.url.0.clone(),
                tls: l.tls_config.as_ref(),
                timeout: timeout(l.remote_timeout),
                headers: l.headers.0.clone().into_iter().collect(),
                auth,
                wire: Wire::Loki {
                    tenant: l.tenant_id.clone(),
                },
                kind: Kind::Logs,
                queue: l.queue_config.clone(),
                relabel: Arc::new(Vec::new()),
                name,
            },
            metrics,
        )?);
    }
    for o in &cfg.otlp_export {
        let base = o
            .name
            .as_ref()
            .map(|n| n.0.clone())
            .unwrap_or_else(|| default_name("otlp", &o.endpoint.0));
        let mut signals = o.signals.clone();
        signals.sort();
        signals.dedup();
        for s in signals {
            let (suffix, path, kind, wire) = match s {
                config::Signal::Metrics => (
                    "metrics",
                    "/v1/metrics",
                    Kind::Samples,
                    Wire::OtlpMetrics {
                        metadata: metadata.clone(),
                        gzip: o.compression == config::Compression::Gzip,
                    },
                ),
                config::Signal::Logs => (
                    "logs",
                    "/v1/logs",
                    Kind::Logs,
                    Wire::OtlpLogs {
                        gzip: o.compression == config::Compression::Gzip,
                    },
                ),
            };
            out.push(endpoint(
                EndpointSpec {
                    name: format!("{base}-{suffix}"),
                    url: otlp_url(&o.endpoint, path),
                    tls: o.tls.as_ref(),
                    timeout: timeout(o.timeout),
                    headers: o.headers.0.clone().into_iter().collect(),
                    auth: Auth::None,
                    wire,
                    kind,
                    queue: o.queue_config.clone(),
                    relabel: Arc::new(Vec::new()),
                },
                metrics,
            )?);
        }
    }
    Ok(out)
}

/// Sends metric metadata to a remote write 1.0 endpoint every
/// `send_interval` (2.0 carries it with each series).
async fn send_metadata(
    ep: Arc<Endpoint>,
    metadata: Arc<Metadata>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Wire::RemoteWrite { negotiation, .. } = &ep.wire
            && negotiation.v2()
        {
            continue;
        }
        let all = metadata.all();
        for part in all.chunks(ep.queue.max_samples_per_send.max(1)) {
            let body = snap::raw::Encoder::new()
                .compress_vec(&remote_write::encode_metadata_v1(part))
                .unwrap_or_default();
            let mut req = ep
                .client
                .post(&ep.request_url)
                .header("content-encoding", "snappy")
                .header("content-type", remote_write::CONTENT_TYPE_V1)
                .header(
                    "x-prometheus-remote-write-version",
                    remote_write::VERSION_V1,
                );
            for (k, v) in &ep.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(h) = &ep.host_header {
                req = req.header(reqwest::header::HOST, h.as_str());
            }
            if let Ok(Some(a)) = ep.auth.header() {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let ok = tokio::select! {
                _ = stop.cancelled() => return,
                r = req.body(body).send() => matches!(r, Ok(r) if r.status().is_success()),
            };
            if ok {
                ep.metrics.metadata_sent.inc_by(part.len() as u64);
            } else {
                ep.metrics.metadata_failed.inc_by(part.len() as u64);
            }
        }
    }
}

/// Starts every configured endpoint. Call after the WAL started and before
/// the first checkpoint can release segments.
pub fn start(
    cfg: &ForwardConfig,
    wal: &Wal,
    metadata: Arc<Metadata>,
    data_dir: &Path,
    registry: &mut Registry,
    stop: CancellationToken,
) -> Result<Forwarder, ForwardError> {
    let metrics = ForwardMetrics::new();
    metrics.register(registry);
    wal.set_hold_budget(cfg.wal_max_bytes);
    let eps = endpoints(cfg, &metadata, &metrics)?;
    let dir = state_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|source| ForwardError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut tasks = Vec::new();
    let durable = *wal.durable().borrow();
    let oldest = crate::wal::segments(wal.dir())
        .ok()
        .and_then(|s| s.first().copied())
        .unwrap_or(durable.segment);
    for ep in eps {
        let path = cursor::cursor_path(&dir, &ep.name);
        let opened = cursor::CursorFile::open(&path, ep.queue.max_shards);
        let (file, saved, start) = match opened {
            Ok((f, Some(s))) => {
                let w = s.watermark;
                (f, Some(s), w)
            }
            // a new endpoint sends what arrives from now on
            Ok((f, None)) => (f, None, durable),
            Err(e) => {
                tracing::warn!(endpoint = %ep.name, error = %e, "unreadable cursor: resending from the oldest WAL segment kept");
                let _ = std::fs::remove_file(&path);
                let (f, _) =
                    cursor::CursorFile::open(&path, ep.queue.max_shards).map_err(|source| {
                        ForwardError::Io {
                            path: path.clone(),
                            source,
                        }
                    })?;
                (
                    f,
                    None,
                    Position {
                        segment: oldest,
                        offset: 0,
                    },
                )
            }
        };
        tracing::info!(endpoint = %ep.name, url = %ep.url, segment = start.segment, offset = start.offset, "forwarding");
        let hold = wal.hold(&ep.name, start.segment);
        let ep = Arc::new(ep);
        if let (Wire::RemoteWrite { .. }, Some(rw)) = (
            &ep.wire,
            cfg.remote_write.iter().find(|r| {
                r.name
                    .as_ref()
                    .map(|n| n.0.clone())
                    .unwrap_or_else(|| default_name("rw", &r.url.0))
                    == ep.name
            }),
        ) && rw.metadata_config.send
        {
            tasks.push(tokio::spawn(send_metadata(
                ep.clone(),
                metadata.clone(),
                rw.metadata_config.send_interval.as_std(),
                stop.clone(),
            )));
        }
        let p = queue::Pipeline {
            ep,
            wal: wal.clone(),
            hold,
            start,
            cursor_file: file,
            saved,
        };
        tasks.push(tokio::spawn(p.run(stop.clone())));
    }
    // segments the cursors passed go between checkpoints too
    let (w, m, sd) = (wal.clone(), metrics.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = sd.cancelled() => return,
                _ = tick.tick() => {}
            }
            let w2 = w.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || w2.release()).await {
                tracing::warn!(error = %e, "cannot release WAL segments");
            }
            let st = &w.stats;
            m.wal_held_bytes
                .set(st.held_bytes.load(Ordering::Relaxed) as i64);
            queue_follow(
                &m.wal_dropped_segments,
                st.dropped_segments.load(Ordering::Relaxed),
            );
            queue_follow(
                &m.wal_dropped_bytes,
                st.dropped_bytes.load(Ordering::Relaxed),
            );
        }
    }));
    Ok(Forwarder { tasks, metrics })
}

fn queue_follow(c: &prometheus_client::metrics::counter::Counter, to: u64) {
    let have = c.get();
    if to > have {
        c.inc_by(to - have);
    }
}
