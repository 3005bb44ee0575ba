//! The ingest core, shared by every stream: per-agent durable sequences
//! (deduplication), resolving a stream's interned refs, writing the WAL
//! before anything is acknowledged, and applying durable records to the
//! store and the sinks — live and on replay, the same way.
//!
//! Why about 820 lines: the live path and the WAL replay must apply records
//! the same way, so both — with deduplication, ref resolution and the limits
//! they enforce — stay in one file; the gRPC service, pushes, checkpoints and
//! the roster are beside it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use vigil_common::Labels;
use vigil_common::labels::valid_label_name;
use vigil_proto::v1 as pb;

use super::{EventSink, IngestedEvent, IngestedLog, LogSink};
use crate::metadata::Metadata;
use crate::space::Space;
use crate::store::{AppendError, SeriesRef, Store};
use crate::telemetry::{ReasonLabels, Telemetry};
use crate::wal::{Append, Position, SeriesUse, Wal, WalBlock, WalEvent, WalLog, WalRecord};

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
    #[error(
        "series definitions start at ref {first}, but refs 1..={known} are all that is defined"
    )]
    DefinitionGap { first: u32, known: u32 },
    #[error("batch_zstd: {0}")]
    Compressed(String),
}

impl BatchError {
    pub fn reason(&self) -> &'static str {
        match self {
            BatchError::UndefinedSeries(_) => "undefined_series",
            BatchError::UndefinedSource(_) => "undefined_source",
            BatchError::RefTooLarge(_) => "ref_too_large",
            BatchError::LengthMismatch { .. } => "length_mismatch",
            BatchError::BadLabels { .. } => "bad_labels",
            BatchError::DefinitionGap { .. } => "definition_gap",
            BatchError::Compressed(_) => "bad_compression",
        }
    }
}

#[derive(Clone)]
struct SeriesEntry {
    id: u64,
    labels: Arc<Labels>,
    /// None: the store refused the series (limit); its samples are counted.
    store: Option<SeriesRef>,
    /// Why `store` is None (a `samples_refused` reason).
    refused: Option<&'static str>,
    /// Last batch (per stream) that listed this series as used.
    used_in: u64,
}

/// A stream's interning tables. Under protocol revision 2 the series part
/// is the agent's series table and outlives the stream (see
/// [`IngestCore::take_table`]).
#[derive(Default)]
pub struct StreamRefs {
    series: Vec<Option<SeriesEntry>>,
    sources: Vec<Option<(u64, Arc<str>)>>,
    batches: u64,
    /// Revision 2: the agent table's epoch, and how many of its refs
    /// (1..=defined) are defined here.
    epoch: u64,
    defined: u32,
}

impl StreamRefs {
    /// An empty table of `epoch` (revision 2).
    pub fn for_epoch(epoch: u64) -> StreamRefs {
        StreamRefs {
            epoch,
            ..Default::default()
        }
    }

    /// How many refs of the agent's table are defined (`Welcome.series_known`).
    pub fn defined(&self) -> u32 {
        self.defined
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// How long an agent's series table is kept after its last stream ended.
pub const TABLE_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most agents' series tables kept while no stream uses them.
const MAX_IDLE_TABLES: usize = 20_000;

/// Largest decompressed `batch_zstd`, whatever max_message_bytes says.
const MAX_BATCH_BYTES: usize = 256 << 20;

/// Decompresses a revision 2 `batch_zstd` (at most `max` bytes) and decodes it.
pub fn decode_batch_zstd(data: &[u8], max: usize) -> Result<pb::Batch, BatchError> {
    use prost::Message as _;
    let max = max.min(MAX_BATCH_BYTES);
    let raw = zstd::bulk::decompress(data, max)
        .map_err(|e| BatchError::Compressed(format!("zstd (at most {max} bytes): {e}")))?;
    pb::Batch::decode(raw.as_slice()).map_err(|e| BatchError::Compressed(format!("protobuf: {e}")))
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

/// The tenant (for per-tenant series limits) of remote-written series
/// whose record names none (written before tenants were recorded), and
/// the prefix of per-client tenants.
pub const REMOTE_WRITE_TENANT: &str = "remote_write";

/// Why a series is refused before it reaches the store, whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelLimitError {
    #[error("{count} labels, more than the limit of {limit} (max_label_names_per_series)")]
    TooMany { count: usize, limit: usize },
    #[error(
        "label name of {len} bytes starting {prefix:?} is longer than {limit} (max_label_name_length)"
    )]
    NameTooLong {
        len: usize,
        limit: usize,
        prefix: String,
    },
    #[error("value of label {name:?} is {len} bytes, longer than {limit} (max_label_value_length)")]
    ValueTooLong {
        name: String,
        len: usize,
        limit: usize,
    },
}

impl LabelLimitError {
    pub fn reason(&self) -> &'static str {
        match self {
            LabelLimitError::TooMany { .. } => "label_count_limit",
            LabelLimitError::NameTooLong { .. } => "label_name_length_limit",
            LabelLimitError::ValueTooLong { .. } => "label_value_length_limit",
        }
    }
}

/// Checks a label set against the limits (count, name and value length).
pub fn check_label_limits(
    pairs: &[(&str, &str)],
    limits: &crate::limits::SeriesLimits,
) -> Result<(), LabelLimitError> {
    if pairs.len() > limits.max_label_names {
        return Err(LabelLimitError::TooMany {
            count: pairs.len(),
            limit: limits.max_label_names,
        });
    }
    for (k, v) in pairs {
        if k.len() > limits.max_name_length {
            return Err(LabelLimitError::NameTooLong {
                len: k.len(),
                limit: limits.max_name_length,
                prefix: k.chars().take(32).collect(),
            });
        }
        if v.len() > limits.max_value_length {
            return Err(LabelLimitError::ValueTooLong {
                name: k.chars().take(64).collect(),
                len: v.len(),
                limit: limits.max_value_length,
            });
        }
    }
    Ok(())
}

/// What [`IngestCore::write_external`] did with a request's samples.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExternalOutcome {
    /// Samples made durable and stored.
    pub appended: u64,
    /// Refused samples by reason (`series_limit`, `out_of_order`,
    /// `duplicate`, `too_far_in_future`, `label_count_limit`, …).
    pub refused: Vec<(&'static str, u64)>,
    /// The first refusal, worded for the client.
    pub first_error: Option<String>,
}

impl ExternalOutcome {
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|r| r.1).sum()
    }

    fn refuse(&mut self, reason: &'static str, n: u64, msg: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        match self.refused.iter_mut().find(|r| r.0 == reason) {
            Some(r) => r.1 += n,
            None => self.refused.push((reason, n)),
        }
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }
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
    /// Samples of refused series, by reason.
    pub refused_samples: Vec<(&'static str, u64)>,
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
    /// Label limits every series must respect, whoever sends it.
    pub limits: crate::limits::SeriesLimits,
    /// Which agents are connected, and how their batches arrive.
    pub roster: super::roster::Roster,
    /// False in a gateway without local storage: samples go to the WAL
    /// (hence forwarding) only, never to the store.
    local_store: bool,
    /// Whether the disk has room for new data (see [`crate::space`]).
    pub space: Arc<Space>,
    /// Agents' series tables (revision 2) while none of their streams is
    /// open, with when the last one ended.
    tables: Mutex<HashMap<String, (StreamRefs, std::time::Instant)>>,
    /// Remote-write series already resolved, by their bytes on the wire.
    rw_cache: super::series_cache::SeriesCache,
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
        // without a configured guard: full only once a write fails for lack
        // of space, writable again once the WAL's disk has room
        let space = Space::new(
            vec![wal.dir().to_path_buf()],
            0,
            tokio_util::sync::CancellationToken::new(),
        );
        IngestCore {
            space,
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
            limits: Default::default(),
            roster: Default::default(),
            local_store: true,
            tables: Mutex::new(HashMap::new()),
            rw_cache: Default::default(),
        }
    }

    /// The series table of `agent`'s `epoch` for a new stream: the one its
    /// last stream left if the epoch is the same (then the agent sends only
    /// what it lacks), otherwise an empty one.
    pub fn take_table(&self, agent: &str, epoch: u64) -> StreamRefs {
        let mut tables = self.tables.lock();
        match tables.remove(agent) {
            Some((refs, _)) if refs.epoch == epoch && epoch != 0 => refs,
            _ => StreamRefs::for_epoch(epoch),
        }
    }

    /// Keeps a stream's series table for the agent's next stream (an
    /// hour; tables idle longest go first past the bound).
    pub fn put_table(&self, agent: &str, mut refs: StreamRefs) {
        if refs.epoch == 0 {
            return;
        }
        // log sources are local to batches: nothing to keep
        refs.sources = Vec::new();
        let now = std::time::Instant::now();
        let mut tables = self.tables.lock();
        tables.retain(|_, (_, at)| now.duration_since(*at) < TABLE_IDLE);
        if tables.len() >= MAX_IDLE_TABLES
            && let Some(oldest) = tables
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            tables.remove(&oldest);
        }
        tables.insert(agent.to_string(), (refs, now));
        self.telemetry.series_tables.set(tables.len() as i64);
    }

    /// Applies a revision 2 `SeriesDefs`: a new epoch replaces the table;
    /// definitions must follow on from what is defined (no gap).
    pub fn define(
        &self,
        agent_id: &str,
        refs: &mut StreamRefs,
        d: &pb::SeriesDefs,
    ) -> Result<(), BatchError> {
        if d.epoch != refs.epoch {
            *refs = StreamRefs::for_epoch(d.epoch);
        }
        let mut next = refs.defined.saturating_add(1);
        for s in &d.series {
            if s.r#ref == 0 || s.r#ref > next {
                return Err(BatchError::DefinitionGap {
                    first: s.r#ref,
                    known: refs.defined,
                });
            }
            next = next.max(s.r#ref.saturating_add(1));
        }
        self.define_series(agent_id, refs, &d.series)?;
        refs.defined = next - 1;
        self.telemetry.series_defined.inc_by(d.series.len() as u64);
        if !d.metadata.is_empty() {
            self.metadata.update(&d.metadata);
        }
        Ok(())
    }

    /// A gateway without local storage: agents' and remote write's samples
    /// are made durable and forwarded but not stored here.
    pub fn without_local_store(mut self) -> Self {
        self.local_store = false;
        self
    }

    pub fn has_local_store(&self) -> bool {
        self.local_store
    }

    /// Sets the label limits (the default is [`crate::limits::SeriesLimits::default`]).
    pub fn with_limits(mut self, limits: crate::limits::SeriesLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the write guard (the default refuses only after a write failed
    /// for lack of space).
    pub fn with_space(mut self, space: Arc<Space>) -> Self {
        self.space = space;
        self
    }

    /// Appends to the WAL; a write that failed for lack of space makes the
    /// guard full at once.
    pub async fn append_wal(&self, a: Append) -> Result<Position, crate::wal::WalError> {
        let r = self.wal.append(a).await;
        if let Err(crate::wal::WalError::Io { source, .. }) = &r {
            self.space.note_error(source);
        }
        r
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

    /// Defines `defs` in `refs` (label checks, limits, the store's series).
    fn define_series(
        &self,
        agent_id: &str,
        refs: &mut StreamRefs,
        defs: &[pb::SeriesDef],
    ) -> Result<(), BatchError> {
        for d in defs {
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
            let over_limits = {
                let pairs: Vec<(&str, &str)> = labels.iter().collect();
                check_label_limits(&pairs, &self.limits).err()
            };
            let (store, refused) = if let Some(e) = over_limits {
                // the series is refused, not the batch: the agent must not
                // retry it forever
                self.count_refused(e.reason(), 1);
                tracing::debug!(agent = agent_id, error = %e, "series refused");
                (None, Some(e.reason()))
            } else if labels.metric_name().is_some() && self.local_store {
                match self.store.get_or_create_for(agent_id, &labels) {
                    Ok(r) => (Some(r), None),
                    Err(e) => {
                        self.refused(&e, 1);
                        (None, Some(append_reason(&e)))
                    }
                }
            } else {
                (None, None)
            };
            *slot(&mut refs.series, d.r#ref)? = Some(SeriesEntry {
                id: labels.stable_hash(),
                labels: Arc::new(labels),
                store,
                refused,
                used_in: 0,
            });
        }
        Ok(())
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
        self.define_series(agent_id, refs, &b.series)?;
        for s in &b.sources {
            *slot(&mut refs.sources, s.r#ref)? = Some((source_id(s), Arc::from(s.path.as_str())));
        }
        let mut uses = Vec::new();
        let store = &self.store;
        let mut use_series =
            |refs: &mut StreamRefs,
             r: u32|
             -> Result<(u64, Option<SeriesRef>, &'static str), BatchError> {
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
                    // memory pressure passes: a series refused under it is
                    // asked for again once per batch
                    if e.refused == Some("memory_pressure") {
                        match store.get_or_create_for(agent_id, &e.labels) {
                            Ok(s) => (e.store, e.refused) = (Some(s), None),
                            Err(err) => e.refused = Some(append_reason(&err)),
                        }
                    }
                }
                Ok((e.id, e.store, e.refused.unwrap_or("series_limit")))
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
        let mut refused: Vec<(&'static str, u64)> = Vec::new();
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
                let (id, store, why) = use_series(refs, *r)?;
                ids.push(id);
                match store {
                    Some(s) => samples.push((s, blk.timestamp_ms, *v)),
                    // without a local store, nothing is refused for its sake
                    None if !self.local_store => {}
                    None => match refused.iter_mut().find(|x| x.0 == why) {
                        Some(x) => x.1 += 1,
                        None => refused.push((why, 1)),
                    },
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
            let (stream_id, _, _) = use_series(refs, l.stream_ref)?;
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
            let (subject_id, _, _) = use_series(refs, ev.subject_ref)?;
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
                    tenant: String::new(),
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

    fn count_summary(&self, summary: &crate::store::AppendSummary) {
        self.count_refused("out_of_order", summary.out_of_order);
        self.count_refused("duplicate", summary.duplicate);
        self.count_refused("too_far_in_future", summary.too_far_in_future);
    }

    fn count_refused(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.telemetry
                .samples_refused
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc_by(n);
        }
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
        self.append_wal(external_record(by_series.into_iter().collect()))
            .await
            .map(|_| ())
    }

    fn refused(&self, e: &AppendError, n: u64) {
        self.count_refused(append_reason(e), n);
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
        self.count_summary(&summary);
        if let (Some(sink), false) = (&self.logs, logs.is_empty()) {
            sink.append(logs);
        }
        if let (Some(sink), false) = (&self.events, events.is_empty()) {
            sink.publish(events);
        }
        self.metadata.update(metadata);
    }
}

/// The refusal reason (a metric label) of a store error.
fn append_reason(e: &AppendError) -> &'static str {
    match e {
        AppendError::SeriesLimit { .. } => "series_limit",
        AppendError::OutOfOrder { .. } => "out_of_order",
        AppendError::Duplicate { .. } => "duplicate",
        AppendError::TooFarInFuture { .. } => "too_far_in_future",
        AppendError::UnknownSeries(_) => "unknown_series",
        AppendError::MemoryPressure { .. } => "memory_pressure",
    }
}

/// A label set for an error message, cut short.
fn labels_excerpt(l: &Labels) -> String {
    let s = l.to_string();
    if s.len() <= 200 {
        return s;
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

mod external;
#[cfg(test)]
mod tests;
