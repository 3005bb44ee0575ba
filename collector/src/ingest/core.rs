//! The ingest core, shared by every stream: per-agent durable sequences
//! (deduplication), resolving a stream's interned refs, writing the WAL
//! before anything is acknowledged, and applying durable records to the
//! store and the sinks — live and on replay, the same way.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use vigil_common::Labels;
use vigil_proto::v1 as pb;

use super::{EventSink, IngestedEvent, IngestedLog, LogSink};
use crate::metadata::Metadata;
use crate::store::{AppendError, SeriesRef, Store};
use crate::telemetry::{ReasonLabels, Telemetry};
use crate::wal::{Append, SeriesUse, Wal, WalBlock, WalEvent, WalLog, WalRecord};

/// Largest ref a stream may define (refs index a table).
pub const MAX_REF: u32 = 1 << 24;

/// Why a batch was refused; the stream ends with INVALID_ARGUMENT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("series ref {0} is not defined on this stream")]
    UndefinedSeries(u32),
    #[error("source ref {0} is not defined on this stream")]
    UndefinedSource(u32),
    #[error("ref {0} is above the limit of {MAX_REF}")]
    RefTooLarge(u32),
    #[error("sample block at {timestamp_ms}: {refs} refs but {values} values")]
    LengthMismatch {
        timestamp_ms: i64,
        refs: usize,
        values: usize,
    },
    #[error("series ref {ref_}: {reason}")]
    BadLabels { ref_: u32, reason: String },
}

impl BatchError {
    pub fn reason(&self) -> &'static str {
        match self {
            BatchError::UndefinedSeries(_) => "undefined_series",
            BatchError::UndefinedSource(_) => "undefined_source",
            BatchError::RefTooLarge(_) => "ref_too_large",
            BatchError::LengthMismatch { .. } => "length_mismatch",
            BatchError::BadLabels { .. } => "bad_labels",
        }
    }
}

#[derive(Clone)]
struct SeriesEntry {
    id: u64,
    labels: Arc<Labels>,
    /// None: the store refused the series (limit); its samples are counted.
    store: Option<SeriesRef>,
    /// Last batch (per stream) that listed this series as used.
    used_in: u64,
}

/// A stream's interning tables.
#[derive(Default)]
pub struct StreamRefs {
    series: Vec<Option<SeriesEntry>>,
    sources: Vec<Option<(u64, Arc<str>)>>,
    batches: u64,
}

fn slot<T: Clone>(v: &mut Vec<Option<T>>, r: u32) -> Result<&mut Option<T>, BatchError> {
    if r >= MAX_REF {
        return Err(BatchError::RefTooLarge(r));
    }
    let i = r as usize;
    if v.len() <= i {
        v.resize(i + 1, None);
    }
    Ok(&mut v[i])
}

/// The tenant (for per-tenant series limits) of remote-written series.
pub const REMOTE_WRITE_TENANT: &str = "remote_write";

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Stable identity of a log source.
pub fn source_id(d: &pb::SourceDef) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(d.path.as_bytes());
    h.update(&[0xff]);
    h.update(&d.device.to_le_bytes());
    h.update(&d.inode.to_le_bytes());
    h.update(&d.fingerprint.to_le_bytes());
    h.digest()
}

/// A batch resolved and ready for the WAL and the store.
pub struct Resolved {
    pub append: Append,
    pub samples: Vec<(SeriesRef, i64, f64)>,
    pub refused_samples: u64,
    pub logs: Vec<IngestedLog>,
    pub events: Vec<IngestedEvent>,
    pub sample_count: u64,
}

/// The WAL record of samples that came without an agent (agent id empty):
/// remote write, the self-scrape and rule output.
fn external_record(series: Vec<(Labels, Vec<(i64, f64)>)>) -> Append {
    let mut uses = Vec::with_capacity(series.len());
    let mut blocks: HashMap<i64, WalBlock> = HashMap::new();
    for (labels, points) in series {
        let id = labels.stable_hash();
        for (t, v) in points {
            let b = blocks.entry(t).or_insert_with(|| WalBlock {
                timestamp_ms: t,
                ids: Vec::new(),
                values: Vec::new(),
            });
            b.ids.push(id);
            b.values.push(v);
        }
        uses.push(SeriesUse {
            id,
            labels: Arc::new(labels),
        });
    }
    let mut blocks: Vec<WalBlock> = blocks.into_values().collect();
    blocks.sort_by_key(|b| b.timestamp_ms);
    Append {
        record: WalRecord {
            blocks,
            ..Default::default()
        },
        uses,
    }
}

/// Shared by every stream.
pub struct IngestCore {
    pub store: Arc<Store>,
    pub wal: Wal,
    pub telemetry: Arc<Telemetry>,
    pub metadata: Arc<Metadata>,
    pub logs: Option<Arc<dyn LogSink>>,
    pub events: Option<Arc<dyn EventSink>>,
    /// Per agent id: the highest durable sequence; its lock serializes an
    /// agent's streams.
    agents: Mutex<HashMap<String, Arc<tokio::sync::Mutex<u64>>>>,
    /// The same sequences, readable without waiting (for checkpoints).
    seqs: Mutex<HashMap<String, u64>>,
    /// Held (shared) from WAL append to apply; a checkpoint takes it
    /// exclusively to cut the WAL where everything before is applied.
    pub gate: tokio::sync::RwLock<()>,
}

impl IngestCore {
    pub fn new(
        store: Arc<Store>,
        wal: Wal,
        telemetry: Arc<Telemetry>,
        metadata: Arc<Metadata>,
        logs: Option<Arc<dyn LogSink>>,
        events: Option<Arc<dyn EventSink>>,
        durable: HashMap<String, u64>,
    ) -> Self {
        telemetry.watch_wal(wal.stats.clone());
        IngestCore {
            store,
            wal,
            telemetry,
            metadata,
            logs,
            events,
            seqs: Mutex::new(durable.clone()),
            agents: Mutex::new(
                durable
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(tokio::sync::Mutex::new(v))))
                    .collect(),
            ),
            gate: tokio::sync::RwLock::new(()),
        }
    }

    pub fn agent(&self, id: &str) -> Arc<tokio::sync::Mutex<u64>> {
        self.agents
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(0)))
            .clone()
    }

    /// Durable sequence per agent (for checkpoints).
    pub fn durable_seqs(&self) -> HashMap<String, u64> {
        self.seqs.lock().clone()
    }

    /// Records that `seq` of `agent` is durable and applied.
    pub fn set_durable(&self, agent: &str, seq: u64) {
        let mut m = self.seqs.lock();
        let e = m.entry(agent.to_string()).or_insert(0);
        *e = (*e).max(seq);
    }

    /// Validates `b` against the stream's tables, defines what it defines,
    /// and builds the WAL record and the store operations.
    pub fn resolve(
        &self,
        agent_id: &str,
        node: &str,
        refs: &mut StreamRefs,
        b: &pb::Batch,
    ) -> Result<Resolved, BatchError> {
        let _ = node;
        refs.batches += 1;
        let batch_no = refs.batches;
        for d in &b.series {
            let mut pairs = Vec::with_capacity(d.labels.len());
            for l in &d.labels {
                if !valid_label_name(&l.name) {
                    return Err(BatchError::BadLabels {
                        ref_: d.r#ref,
                        reason: format!("invalid label name {:?}", l.name),
                    });
                }
                pairs.push((l.name.clone(), l.value.clone()));
            }
            let labels = Labels::new(pairs);
            if labels.is_empty() {
                return Err(BatchError::BadLabels {
                    ref_: d.r#ref,
                    reason: "no labels".into(),
                });
            }
            let store = if labels.metric_name().is_some() {
                match self.store.get_or_create_for(agent_id, &labels) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.refused(&e, 1);
                        None
                    }
                }
            } else {
                None
            };
            *slot(&mut refs.series, d.r#ref)? = Some(SeriesEntry {
                id: labels.stable_hash(),
                labels: Arc::new(labels),
                store,
                used_in: 0,
            });
        }
        for s in &b.sources {
            *slot(&mut refs.sources, s.r#ref)? = Some((source_id(s), Arc::from(s.path.as_str())));
        }
        let mut uses = Vec::new();
        let mut use_series =
            |refs: &mut StreamRefs, r: u32| -> Result<(u64, Option<SeriesRef>), BatchError> {
                let e = refs
                    .series
                    .get_mut(r as usize)
                    .and_then(|e| e.as_mut())
                    .ok_or(BatchError::UndefinedSeries(r))?;
                if e.used_in != batch_no {
                    e.used_in = batch_no;
                    uses.push(SeriesUse {
                        id: e.id,
                        labels: e.labels.clone(),
                    });
                }
                Ok((e.id, e.store))
            };
        let labels_of = |refs: &StreamRefs, r: u32| -> Arc<Labels> {
            refs.series
                .get(r as usize)
                .and_then(|e| e.as_ref())
                .map(|e| e.labels.clone())
                .unwrap_or_default()
        };
        let mut blocks = Vec::with_capacity(b.samples.len());
        let mut samples = Vec::new();
        let mut refused = 0u64;
        let mut count = 0u64;
        for blk in &b.samples {
            if blk.refs.len() != blk.values.len() {
                return Err(BatchError::LengthMismatch {
                    timestamp_ms: blk.timestamp_ms,
                    refs: blk.refs.len(),
                    values: blk.values.len(),
                });
            }
            let mut ids = Vec::with_capacity(blk.refs.len());
            for (r, v) in blk.refs.iter().zip(&blk.values) {
                let (id, store) = use_series(refs, *r)?;
                ids.push(id);
                match store {
                    Some(s) => samples.push((s, blk.timestamp_ms, *v)),
                    None => refused += 1,
                }
            }
            count += blk.refs.len() as u64;
            blocks.push(WalBlock {
                timestamp_ms: blk.timestamp_ms,
                ids,
                values: blk.values.clone(),
            });
        }
        let mut logs = Vec::with_capacity(b.logs.len());
        let mut wal_logs = Vec::with_capacity(b.logs.len());
        for l in &b.logs {
            let (stream_id, _) = use_series(refs, l.stream_ref)?;
            let stream_labels = labels_of(refs, l.stream_ref);
            let (sid, path) = refs
                .sources
                .get(l.source_ref as usize)
                .and_then(|s| s.clone())
                .ok_or(BatchError::UndefinedSource(l.source_ref))?;
            wal_logs.push(WalLog {
                stream_id,
                source_id: sid,
                source_path: path.to_string(),
                offset: l.offset,
                end_offset: l.end_offset,
                timestamp_ns: l.timestamp_ns,
                line: l.line.clone(),
            });
            logs.push(IngestedLog {
                stream: (*stream_labels).clone(),
                source_id: sid,
                source_path: path.to_string(),
                offset: l.offset,
                end_offset: l.end_offset,
                timestamp_ns: l.timestamp_ns,
                line: l.line.clone(),
            });
        }
        let mut events = Vec::with_capacity(b.events.len());
        let mut wal_events = Vec::with_capacity(b.events.len());
        for ev in &b.events {
            let (subject_id, _) = use_series(refs, ev.subject_ref)?;
            let subject_labels = labels_of(refs, ev.subject_ref);
            let mut attrs: Vec<(String, String)> = ev
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            attrs.sort();
            wal_events.push(WalEvent {
                timestamp_ms: ev.timestamp_ms,
                kind: ev.kind.clone(),
                subject_id,
                attributes: attrs
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .collect(),
            });
            events.push(IngestedEvent {
                timestamp_ms: ev.timestamp_ms,
                kind: ev.kind.clone(),
                subject: (*subject_labels).clone(),
                attributes: attrs,
            });
        }
        Ok(Resolved {
            append: Append {
                record: WalRecord {
                    agent_id: agent_id.to_string(),
                    seq: b.seq,
                    series: Vec::new(),
                    blocks,
                    logs: wal_logs,
                    events: wal_events,
                    metadata: b.metadata.clone(),
                    cut: false,
                },
                uses,
            },
            samples,
            refused_samples: refused,
            logs,
            events,
            sample_count: count,
        })
    }

    /// Writes samples that arrived without an agent stream (Prometheus
    /// remote write, the self-scrape) through the same WAL, so they are as
    /// durable as an agent's once this returns. Returns (appended, refused).
    pub async fn write_external(
        &self,
        series: Vec<(Labels, Vec<(i64, f64)>)>,
    ) -> Result<(u64, u64), crate::wal::WalError> {
        let mut samples = Vec::new();
        let mut refused = 0u64;
        let mut flat = Vec::with_capacity(series.len());
        for (labels, points) in series {
            let sref = match self.store.get_or_create_for(REMOTE_WRITE_TENANT, &labels) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.refused(&e, points.len() as u64);
                    refused += points.len() as u64;
                    None
                }
            };
            if let Some(r) = sref {
                samples.extend(points.iter().map(|(t, v)| (r, *t, *v)));
            }
            flat.push((labels, points));
        }
        // apply in time order so a request carrying several samples of one
        // series is not refused as out of order
        samples.sort_by_key(|s| s.1);
        let gate = self.gate.read().await;
        self.wal.append(external_record(flat)).await?;
        let summary = self.store.append_batch(&samples);
        drop(gate);
        if summary.out_of_order > 0 {
            self.refused(
                &AppendError::OutOfOrder {
                    timestamp_ms: 0,
                    newest_ms: 0,
                },
                summary.out_of_order,
            );
        }
        self.telemetry.samples.inc_by(summary.appended);
        Ok((summary.appended, refused + summary.out_of_order))
    }

    /// Writes samples the store already holds (recording-rule output,
    /// `ALERTS`, staleness markers) to the WAL, so they are replayed after a
    /// crash and forwarded. The caller holds [`Self::gate`] from before it
    /// wrote them to the store.
    pub async fn log_applied(
        &self,
        samples: Vec<(Labels, i64, f64)>,
    ) -> Result<(), crate::wal::WalError> {
        let mut by_series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        for (l, t, v) in samples {
            by_series.entry(l).or_default().push((t, v));
        }
        self.wal
            .append(external_record(by_series.into_iter().collect()))
            .await
            .map(|_| ())
    }

    fn refused(&self, e: &AppendError, n: u64) {
        let reason = match e {
            AppendError::SeriesLimit { .. } => "series_limit",
            AppendError::OutOfOrder { .. } => "out_of_order",
            AppendError::UnknownSeries(_) => "unknown_series",
        };
        self.telemetry
            .samples_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc_by(n);
    }

    /// Applies durable data: samples to the store, logs and events to the
    /// sinks, metadata to the map. Idempotent for samples (same timestamp)
    /// and logs (the sink dedups by source and offset).
    pub fn apply(
        &self,
        samples: &[(SeriesRef, i64, f64)],
        logs: &[IngestedLog],
        events: &[IngestedEvent],
        metadata: &[pb::MetricMetadata],
    ) {
        let summary = self.store.append_batch(samples);
        if summary.out_of_order > 0 {
            self.refused(
                &AppendError::OutOfOrder {
                    timestamp_ms: 0,
                    newest_ms: 0,
                },
                summary.out_of_order,
            );
        }
        if let (Some(sink), false) = (&self.logs, logs.is_empty()) {
            sink.append(logs);
        }
        if let (Some(sink), false) = (&self.events, events.is_empty()) {
            sink.publish(events);
        }
        self.metadata.update(metadata);
    }
}
