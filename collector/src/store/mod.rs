//! Series and samples in memory: what ingest appends and what queries read.
//!
//! The contract the rest of the collector relies on:
//! - [`Store::get_or_create`] maps a label set to a [`SeriesRef`] (dense,
//!   process-local; never persist it — persist labels or their stable hash).
//!   Labels with an empty value are dropped, as Prometheus does: `{a=""}` is
//!   the same series as `{}`.
//! - [`Store::append`] adds a sample; timestamps are Unix milliseconds.
//!   A staleness marker is the value [`STALE_NAN`] (Prometheus' bit pattern),
//!   stored bit for bit.
//! - [`Queryable::select`] returns the series matching every matcher with
//!   their samples in `[mint, maxt]` (inclusive), in time order.
//!
//! # Layout
//! - [`index`]: interned strings, label pair → postings, matcher evaluation.
//! - [`chunk`]: the Gorilla (XOR) head chunk and sealed chunks (XOR or pco).
//! - [`series`]: one series' chunks and the append rules (cut, out-of-order
//!   window, duplicates), retention and recompression.
//! - [`checkpoint`]: the versioned, checksummed snapshot format.
//!
//! # Concurrency
//! Series live in shards (by id) of fixed-size segments, each series behind
//! its own mutex: an append takes a shard read lock and the series' mutex,
//! never a store-wide write lock. The index has one lock, written only when a
//! series is created, removed or brought back. Lock order: index → shard →
//! series.
//!
//! Not here: durability (the WAL in [`crate::wal`]), PromQL (in `promql`).
//!
//! This file is long (about 1,100 lines) because [`Store`]'s methods are the
//! lock order above in practice — creation, append, select, trim,
//! recompression and memory accounting each take index, shard and series
//! locks in that order — and splitting them would spread one invariant over
//! several files; the parts with no lock of their own are the submodules.

mod bits;
pub mod cardinality;
pub(crate) mod checkpoint;
pub(crate) mod chunk;
pub(crate) mod index;
pub(crate) mod series;
#[cfg(test)]
mod tests;

use std::collections::{BinaryHeap, HashSet};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use vigil_common::Labels;

use index::Index;
use series::{CutRules, Delta, Outcome, SeriesData};

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
/// The staleness marker as a float (compare bits with [`is_stale`], not `==`).
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// True when `v` is the staleness marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Handle of a series inside one [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesRef(pub u32);

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    #[error("series limit of {limit} reached; new series refused")]
    SeriesLimit { limit: usize },
    #[error("sample at {timestamp_ms} is older than the series' newest sample at {newest_ms}")]
    OutOfOrder { timestamp_ms: i64, newest_ms: i64 },
    /// A different value at a timestamp the series already has (Prometheus:
    /// "duplicate sample for timestamp").
    #[error("duplicate sample for timestamp {timestamp_ms} with a different value")]
    Duplicate { timestamp_ms: i64 },
    #[error(
        "sample at {timestamp_ms} is too far in the future (more than {max_future_ms} ms ahead of {now_ms})"
    )]
    TooFarInFuture {
        timestamp_ms: i64,
        now_ms: i64,
        max_future_ms: i64,
    },
    #[error("unknown series reference {0:?}")]
    UnknownSeries(SeriesRef),
    /// The collector's memory use is above `--memory-pressure-fraction` of
    /// its limit: new series are refused until it falls again.
    #[error(
        "memory pressure: the collector uses {used_mib} MiB, above {percent}% of its {limit_mib} MiB memory limit (memory_limit, memory_pressure_fraction); new series are refused until it falls"
    )]
    MemoryPressure {
        used_mib: u64,
        limit_mib: u64,
        percent: u64,
    },
}

/// What [`Store::append_batch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendSummary {
    pub appended: u64,
    /// Out of order or older than retention.
    pub out_of_order: u64,
    pub duplicate: u64,
    pub too_far_in_future: u64,
    pub unknown: u64,
}

/// A label matcher, as PromQL selectors and `match[]` use them.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
}

#[derive(Clone, Debug)]
pub enum MatchOp {
    Equal(String),
    NotEqual(String),
    /// Fully anchored; compile with [`Matcher::regex`] so `.` matches newline.
    Re(regex::Regex),
    NotRe(regex::Regex),
}

impl Matcher {
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal(value.into()),
        }
    }

    /// Compiles `re` the way Prometheus 3 does: anchored at both ends, `.`
    /// matching newline.
    pub fn regex(name: impl Into<String>, re: &str, negate: bool) -> Result<Self, regex::Error> {
        let r = regex::Regex::new(&format!("^(?s:{re})$"))?;
        Ok(Matcher {
            name: name.into(),
            op: if negate {
                MatchOp::NotRe(r)
            } else {
                MatchOp::Re(r)
            },
        })
    }

    /// Whether a label value (empty string for an absent label) matches.
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal(v) => v == value,
            MatchOp::NotEqual(v) => v != value,
            MatchOp::Re(r) => r.is_match(value),
            MatchOp::NotRe(r) => !r.is_match(value),
        }
    }

    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// One series and its samples in a time range.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    /// `(timestamp_ms, value)` in time order; may contain [`STALE_NAN`].
    pub samples: Vec<(i64, f64)>,
}

/// What a query engine needs from storage.
pub trait Queryable: Send + Sync {
    /// Series matching all `matchers`, with their samples in `[mint, maxt]`.
    /// Series with no sample in the range are left out.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples>;

    /// Label sets of the series matching all `matchers` that have a sample in
    /// `[mint, maxt]`.
    fn series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        self.select(matchers, mint, maxt)
            .into_iter()
            .map(|s| s.labels)
            .collect()
    }

    /// Sorted names of the labels (with a non-empty value) of the series
    /// matching all `matchers` (all series when empty) in `[mint, maxt]`.
    fn label_names(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
        let mut names: Vec<String> = self
            .series(matchers, mint, maxt)
            .iter()
            .flat_map(|l| {
                l.iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, _)| k.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Sorted distinct non-empty values of label `name` over the series
    /// matching all `matchers` in `[mint, maxt]`.
    fn label_values(&self, name: &str, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
        let mut vals: Vec<String> = self
            .series(matchers, mint, maxt)
            .iter()
            .filter_map(|l| l.get(name).filter(|v| !v.is_empty()).map(str::to_string))
            .collect();
        vals.sort();
        vals.dedup();
        vals
    }
}

/// Limits, retention and chunk shape of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most series held at once; new series beyond it are refused.
    pub max_series: usize,
    /// Most series one tenant (an agent, a remote-write client) may hold, for
    /// series created with [`Store::get_or_create_for`]; 0 = no limit.
    pub max_series_per_tenant: usize,
    /// Samples older than now − retention are dropped by [`Store::trim`].
    pub retention_ms: i64,
    /// Memory budget for samples and series (the store's own accounting,
    /// see [`StoreStats::bytes`]); when over, the oldest sealed chunks are
    /// dropped first. 0 = no budget.
    pub max_bytes: u64,
    /// A sample up to this much older than its series' newest is inserted;
    /// older ones are refused as out of order. 0 = in order only.
    pub out_of_order_window_ms: i64,
    /// The head chunk is sealed after this many samples…
    pub chunk_samples: u32,
    /// …or when a sample is this much newer than the head's first.
    pub chunk_span_ms: i64,
    /// Sealed chunks are recompressed (pco) into blocks of up to this many
    /// samples, when smaller, by [`Store::trim`] and [`Store::compact`];
    /// 0 keeps XOR chunks as they are.
    pub block_samples: u32,
    /// A sample stamped more than this ahead of the wall clock is refused
    /// (a forged future sample would make every later one out of order).
    /// 0 = no limit.
    pub max_future_ms: i64,
    /// Refuses new series of ingest ([`Store::get_or_create_for`]) under
    /// memory pressure; recovery and rules are not refused.
    pub memory_guard: Option<std::sync::Arc<crate::memory::MemoryGuard>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_series: 5_000_000,
            max_series_per_tenant: 0,
            retention_ms: 24 * 3600 * 1000,
            max_bytes: 0,
            out_of_order_window_ms: 0,
            chunk_samples: 120,
            chunk_span_ms: 2 * 3600 * 1000,
            block_samples: 720,
            max_future_ms: 0,
            memory_guard: None,
        }
    }
}

/// Counters and gauges of a [`Store`], for telemetry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live series.
    pub series: u64,
    /// Samples held.
    pub samples: u64,
    /// Sealed chunks held (every live series also has one open head chunk).
    pub sealed_chunks: u64,
    /// Accounted bytes: chunk heap bytes plus a fixed estimate per series
    /// (what [`StoreOptions::max_bytes`] is compared with).
    pub bytes: u64,
    /// Samples appended since start.
    pub appended: u64,
    pub refused_out_of_order: u64,
    pub refused_duplicate: u64,
    /// Too far ahead of the wall clock.
    pub refused_future: u64,
    /// Older than the retention cut.
    pub refused_too_old: u64,
    pub refused_series_limit: u64,
    pub refused_tenant_limit: u64,
    /// New series refused because the memory budget was exhausted.
    pub refused_memory: u64,
    /// New series refused under memory pressure (see [`crate::memory`]).
    pub refused_memory_pressure: u64,
    pub dropped_chunks_budget: u64,
    pub dropped_chunks_retention: u64,
    /// Series removed because retention emptied them.
    pub removed_series: u64,
    /// Sealed XOR chunks rewritten into pco blocks.
    pub recompressed_chunks: u64,
    /// Chunks that failed to decode while reading (never expected).
    pub corrupt_chunks: u64,
}

/// Heap use measured by walking the store (see [`Store::memory_usage`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Encoded sample bytes (chunk payloads, no allocator slack).
    pub sample_payload: u64,
    /// Chunk heap bytes including open-chunk slack and chunk headers.
    pub chunks: u64,
    /// Series structs and their label ids.
    pub series: u64,
    /// Postings, lookup maps and interned strings.
    pub index: u64,
    pub samples: u64,
    pub total: u64,
}

#[derive(Default)]
struct Counters {
    samples: AtomicI64,
    sealed: AtomicI64,
    bytes: AtomicI64,
    appended: AtomicU64,
    ooo: AtomicU64,
    dup: AtomicU64,
    future: AtomicU64,
    too_old: AtomicU64,
    series_limit: AtomicU64,
    tenant_limit: AtomicU64,
    memory: AtomicU64,
    memory_pressure: AtomicU64,
    dropped_budget: AtomicU64,
    dropped_retention: AtomicU64,
    removed: AtomicU64,
    recompressed: AtomicU64,
    corrupt: AtomicU64,
}

impl Counters {
    fn apply(&self, d: Delta) {
        if d.samples != 0 {
            self.samples.fetch_add(d.samples, Ordering::Relaxed);
        }
        if d.chunks != 0 {
            self.sealed.fetch_add(d.chunks, Ordering::Relaxed);
        }
        if d.bytes != 0 {
            self.bytes.fetch_add(d.bytes, Ordering::Relaxed);
        }
    }
}

const SHARDS: usize = 16;
const SEGMENT: usize = 1024;
const NO_TENANT: u32 = u32::MAX;

struct Series {
    /// Symbol ids: name, value, name, value… sorted by name.
    labels: Box<[u32]>,
    tenant: u32,
    data: Mutex<SeriesData>,
}

impl Series {
    /// Bytes charged per series besides its chunks: the struct, its label
    /// ids and its share of postings and lookup maps (an estimate; see
    /// [`Store::memory_usage`] for a measured figure).
    fn fixed_bytes(&self) -> i64 {
        (std::mem::size_of::<Series>() + self.labels.len() * 4 + self.labels.len() / 2 * 4 + 32)
            as i64
    }
}

/// Fixed-size segments, so a series never moves once created.
#[derive(Default)]
struct Shard {
    segments: Vec<Vec<Series>>,
}

impl Shard {
    fn get(&self, local: usize) -> Option<&Series> {
        self.segments.get(local / SEGMENT)?.get(local % SEGMENT)
    }

    fn len(&self) -> usize {
        self.segments.iter().map(Vec::len).sum()
    }

    fn push(&mut self, s: Series) {
        match self.segments.last_mut() {
            Some(seg) if seg.len() < SEGMENT => seg.push(s),
            _ => {
                let mut seg = Vec::with_capacity(SEGMENT);
                seg.push(s);
                self.segments.push(seg);
            }
        }
    }
}

/// The in-memory time-series store.
pub struct Store {
    opts: StoreOptions,
    index: RwLock<Index>,
    shards: Box<[RwLock<Shard>]>,
    /// Next series id; changed only under the index write lock.
    next_id: AtomicU32,
    counters: Counters,
    /// Samples before this are invisible and refused (set by [`Store::trim`]).
    cutoff: AtomicI64,
    /// Lowest and highest timestamps ever appended (label look-up fast path).
    min_time: AtomicI64,
    max_time: AtomicI64,
    enforcing: AtomicBool,
    /// Counts appends that stored something: what waits for new data (the
    /// autoscalers) subscribes to it.
    appended: tokio::sync::watch::Sender<u64>,
}

/// The outcome of one append, before it becomes a public result.
enum Step {
    Done(Outcome),
    Dead,
}

impl Store {
    pub fn new(opts: StoreOptions) -> Self {
        Store {
            opts,
            index: RwLock::new(Index::default()),
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            next_id: AtomicU32::new(0),
            counters: Counters::default(),
            cutoff: AtomicI64::new(i64::MIN),
            min_time: AtomicI64::new(i64::MAX),
            max_time: AtomicI64::new(i64::MIN),
            enforcing: AtomicBool::new(false),
            appended: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes after every append that stored at least one sample.
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    fn rules(&self) -> CutRules {
        CutRules {
            max_samples: self.opts.chunk_samples.max(1),
            max_span_ms: self.opts.chunk_span_ms.max(1),
            ooo_window_ms: self.opts.out_of_order_window_ms.max(0),
        }
    }

    fn with_series<R>(&self, id: u32, f: impl FnOnce(&Series) -> R) -> Option<R> {
        let shard = self.shards[id as usize % SHARDS].read();
        shard.get(id as usize / SHARDS).map(f)
    }

    /// The series' handle, creating the series if it is new.
    pub fn get_or_create(&self, labels: &Labels) -> Result<SeriesRef, AppendError> {
        self.get_or_create_inner(None, labels, false)
    }

    /// Like [`Store::get_or_create`], counting a new series against
    /// `tenant`'s limit ([`StoreOptions::max_series_per_tenant`]). The tenant
    /// of an existing series does not change. A new series is refused under
    /// memory pressure ([`StoreOptions::memory_guard`]).
    pub fn get_or_create_for(
        &self,
        tenant: &str,
        labels: &Labels,
    ) -> Result<SeriesRef, AppendError> {
        self.get_or_create_inner(Some(tenant), labels, true)
    }

    /// Like [`Store::get_or_create_for`] without the memory guard: for
    /// recovery, which brings back what was already acknowledged, and the
    /// collector's own series (the self-scrape), whose number is bounded.
    pub fn get_or_create_trusted_for(
        &self,
        tenant: &str,
        labels: &Labels,
    ) -> Result<SeriesRef, AppendError> {
        self.get_or_create_inner(Some(tenant), labels, false)
    }

    fn get_or_create_inner(
        &self,
        tenant: Option<&str>,
        labels: &Labels,
        guarded: bool,
    ) -> Result<SeriesRef, AppendError> {
        let normalized;
        let labels = if labels.iter().any(|(_, v)| v.is_empty()) {
            normalized = Labels::from_sorted_unchecked(
                labels
                    .pairs()
                    .iter()
                    .filter(|p| !p.1.is_empty())
                    .cloned()
                    .collect(),
            );
            &normalized
        } else {
            labels
        };
        let hash = labels.stable_hash();
        let found = {
            let idx = self.index.read();
            self.find(&idx, hash, labels)
        };
        if let Some(id) = found {
            let dead = self
                .with_series(id, |s| s.data.lock().dead)
                .unwrap_or(false);
            if dead {
                self.resurrect(id)?;
            }
            return Ok(SeriesRef(id));
        }
        if guarded
            && let Some(g) = &self.opts.memory_guard
            && g.refuse_new_series()
        {
            self.counters
                .memory_pressure
                .fetch_add(1, Ordering::Relaxed);
            let mib = |b: u64| b >> 20;
            return Err(AppendError::MemoryPressure {
                used_mib: mib(g.used()),
                limit_mib: mib(g.limit()),
                percent: (g.stats().fraction * 100.0).round() as u64,
            });
        }
        if !self.enforce_budget() {
            self.counters.memory.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::SeriesLimit {
                limit: self.opts.max_series,
            });
        }
        let mut idx = self.index.write();
        if let Some(id) = self.find(&idx, hash, labels) {
            drop(idx);
            let dead = self
                .with_series(id, |s| s.data.lock().dead)
                .unwrap_or(false);
            if dead {
                self.resurrect(id)?;
            }
            return Ok(SeriesRef(id));
        }
        if idx.live() >= self.opts.max_series {
            self.counters.series_limit.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::SeriesLimit {
                limit: self.opts.max_series,
            });
        }
        let tenant = match tenant {
            Some(t) => {
                let sym = idx.symbols.intern(t);
                if self.opts.max_series_per_tenant > 0
                    && idx.tenants.get(&sym).copied().unwrap_or(0) as usize
                        >= self.opts.max_series_per_tenant
                {
                    self.counters.tenant_limit.fetch_add(1, Ordering::Relaxed);
                    return Err(AppendError::SeriesLimit {
                        limit: self.opts.max_series_per_tenant,
                    });
                }
                sym
            }
            None => NO_TENANT,
        };
        let syms: Box<[u32]> = labels
            .iter()
            .flat_map(|(k, v)| [k, v])
            .map(|s| idx.symbols.intern(s))
            .collect();
        let id = self.next_id.load(Ordering::Relaxed);
        if id == u32::MAX {
            self.counters.series_limit.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::SeriesLimit {
                limit: u32::MAX as usize,
            });
        }
        let series = Series {
            labels: syms.clone(),
            tenant,
            data: Mutex::new(SeriesData::default()),
        };
        self.counters
            .bytes
            .fetch_add(series.fixed_bytes(), Ordering::Relaxed);
        {
            let mut shard = self.shards[id as usize % SHARDS].write();
            debug_assert_eq!(shard.len(), id as usize / SHARDS);
            shard.push(series);
        }
        self.next_id.store(id + 1, Ordering::Relaxed);
        idx.add(id, &syms);
        idx.insert_hash(hash, id);
        if tenant != NO_TENANT {
            *idx.tenants.entry(tenant).or_default() += 1;
        }
        Ok(SeriesRef(id))
    }

    fn find(&self, idx: &Index, hash: u64, labels: &Labels) -> Option<u32> {
        idx.candidates(hash).find(|&id| {
            self.with_series(id, |s| {
                s.labels.len() == labels.len() * 2
                    && labels
                        .iter()
                        .zip(s.labels.chunks_exact(2))
                        .all(|((k, v), p)| idx.symbols.get(p[0]) == k && idx.symbols.get(p[1]) == v)
            })
            .unwrap_or(false)
        })
    }

    /// Brings a series that retention removed back into the index.
    fn resurrect(&self, id: u32) -> Result<(), AppendError> {
        let mut idx = self.index.write();
        let shard = self.shards[id as usize % SHARDS].read();
        let s = shard
            .get(id as usize / SHARDS)
            .ok_or(AppendError::UnknownSeries(SeriesRef(id)))?;
        let mut data = s.data.lock();
        if !data.dead {
            return Ok(());
        }
        if idx.live() >= self.opts.max_series {
            self.counters.series_limit.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::SeriesLimit {
                limit: self.opts.max_series,
            });
        }
        if s.tenant != NO_TENANT && self.opts.max_series_per_tenant > 0 {
            let n = idx.tenants.get(&s.tenant).copied().unwrap_or(0) as usize;
            if n >= self.opts.max_series_per_tenant {
                self.counters.tenant_limit.fetch_add(1, Ordering::Relaxed);
                return Err(AppendError::SeriesLimit {
                    limit: self.opts.max_series_per_tenant,
                });
            }
        }
        data.dead = false;
        idx.add(id, &s.labels);
        if s.tenant != NO_TENANT {
            *idx.tenants.entry(s.tenant).or_default() += 1;
        }
        self.counters
            .bytes
            .fetch_add(s.fixed_bytes(), Ordering::Relaxed);
        Ok(())
    }

    /// Appends one sample. The same value at a stored timestamp is a no-op
    /// (a retry, a replay); a different one is refused as
    /// [`AppendError::Duplicate`], as Prometheus does. A sample older than the
    /// series' newest is inserted when within
    /// [`StoreOptions::out_of_order_window_ms`], otherwise refused as
    /// [`AppendError::OutOfOrder`]; one further ahead of the wall clock than
    /// [`StoreOptions::max_future_ms`] as [`AppendError::TooFarInFuture`].
    /// Refusals are counted in [`StoreStats`].
    pub fn append(&self, r: SeriesRef, timestamp_ms: i64, value: f64) -> Result<(), AppendError> {
        let res = self.append_one(r, timestamp_ms, value, self.future_limit());
        self.enforce_budget();
        res
    }

    /// The newest timestamp accepted now (`i64::MAX` without a limit).
    fn future_limit(&self) -> i64 {
        if self.opts.max_future_ms <= 0 {
            return i64::MAX;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now.saturating_add(self.opts.max_future_ms)
    }

    /// Whether `append` would accept this sample now, without appending
    /// (for callers that must refuse a request before making it durable).
    /// A concurrent append can still change the answer.
    pub fn check(&self, r: SeriesRef, t: i64, v: f64) -> Result<(), AppendError> {
        let limit = self.future_limit();
        if t > limit {
            return Err(self.future_error(t, limit));
        }
        if t < self.cutoff.load(Ordering::Relaxed) {
            return Err(AppendError::OutOfOrder {
                timestamp_ms: t,
                newest_ms: self.cutoff.load(Ordering::Relaxed),
            });
        }
        let window = self.opts.out_of_order_window_ms;
        self.with_series(r.0, |s| {
            let d = s.data.lock();
            if d.dead {
                return Ok(());
            }
            d.check(t, v, window)
        })
        .ok_or(AppendError::UnknownSeries(r))?
    }

    fn future_error(&self, t: i64, limit: i64) -> AppendError {
        AppendError::TooFarInFuture {
            timestamp_ms: t,
            now_ms: limit - self.opts.max_future_ms,
            max_future_ms: self.opts.max_future_ms,
        }
    }

    fn append_one(
        &self,
        r: SeriesRef,
        t: i64,
        v: f64,
        future_limit: i64,
    ) -> Result<(), AppendError> {
        if t > future_limit {
            self.counters.future.fetch_add(1, Ordering::Relaxed);
            return Err(self.future_error(t, future_limit));
        }
        let cutoff = self.cutoff.load(Ordering::Relaxed);
        if t < cutoff {
            self.counters.too_old.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::OutOfOrder {
                timestamp_ms: t,
                newest_ms: cutoff,
            });
        }
        let rules = self.rules();
        let step = |s: &Series| {
            let mut d = s.data.lock();
            if d.dead {
                return Step::Dead;
            }
            let (o, delta) = d.append(t, v, rules);
            self.counters.apply(delta);
            Step::Done(o)
        };
        let mut out = self
            .with_series(r.0, step)
            .ok_or(AppendError::UnknownSeries(r))?;
        if let Step::Dead = out {
            self.resurrect(r.0)?;
            out = self
                .with_series(r.0, step)
                .ok_or(AppendError::UnknownSeries(r))?;
        }
        match out {
            Step::Done(Outcome::Appended) => {
                self.counters.appended.fetch_add(1, Ordering::Relaxed);
                self.min_time.fetch_min(t, Ordering::Relaxed);
                self.max_time.fetch_max(t, Ordering::Relaxed);
                Ok(())
            }
            Step::Done(Outcome::Unchanged) => Ok(()),
            Step::Done(Outcome::OutOfOrder { newest }) => {
                self.counters.ooo.fetch_add(1, Ordering::Relaxed);
                Err(AppendError::OutOfOrder {
                    timestamp_ms: t,
                    newest_ms: newest,
                })
            }
            Step::Done(Outcome::Duplicate) => {
                self.counters.dup.fetch_add(1, Ordering::Relaxed);
                Err(AppendError::Duplicate { timestamp_ms: t })
            }
            // resurrected, yet dead again: retention removed it meanwhile
            Step::Dead => Err(AppendError::UnknownSeries(r)),
        }
    }

    /// Appends many samples. Refused ones are counted in the summary by
    /// reason (limits and vanished series as unknown).
    pub fn append_batch(&self, samples: &[(SeriesRef, i64, f64)]) -> AppendSummary {
        let mut sum = AppendSummary::default();
        let limit = self.future_limit();
        for &(r, t, v) in samples {
            match self.append_one(r, t, v, limit) {
                Ok(()) => sum.appended += 1,
                Err(AppendError::OutOfOrder { .. }) => sum.out_of_order += 1,
                Err(AppendError::Duplicate { .. }) => sum.duplicate += 1,
                Err(AppendError::TooFarInFuture { .. }) => sum.too_far_in_future += 1,
                Err(_) => sum.unknown += 1,
            }
        }
        self.enforce_budget();
        if sum.appended > 0 {
            self.appended.send_modify(|g| *g = g.wrapping_add(1));
        }
        sum
    }

    /// The newest sample of every series that has one, staleness markers
    /// excluded (what `/metrics` and `/federate` expose).
    pub fn latest(&self) -> Vec<(Labels, i64, f64)> {
        let cutoff = self.cutoff.load(Ordering::Relaxed);
        let mut found: Vec<(u32, i64, f64)> = Vec::new();
        self.for_each_series(|id, s| {
            let d = s.data.lock();
            if d.dead || d.is_empty() || d.maxt() < cutoff {
                return;
            }
            let v = d.head.last_value();
            if !is_stale(v) {
                found.push((id, d.maxt(), v));
            }
        });
        let idx = self.index.read();
        found
            .into_iter()
            .filter_map(|(id, t, v)| Some((self.labels_of(&idx, id)?, t, v)))
            .collect()
    }

    /// Live series.
    pub fn series_count(&self) -> usize {
        self.index.read().live()
    }

    /// Counters and gauges for telemetry (cheap: atomics and one lock).
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        StoreStats {
            series: self.series_count() as u64,
            samples: g(&c.samples),
            sealed_chunks: g(&c.sealed),
            bytes: g(&c.bytes),
            appended: l(&c.appended),
            refused_out_of_order: l(&c.ooo),
            refused_duplicate: l(&c.dup),
            refused_future: l(&c.future),
            refused_too_old: l(&c.too_old),
            refused_series_limit: l(&c.series_limit),
            refused_tenant_limit: l(&c.tenant_limit),
            refused_memory: l(&c.memory),
            refused_memory_pressure: l(&c.memory_pressure),
            dropped_chunks_budget: l(&c.dropped_budget),
            dropped_chunks_retention: l(&c.dropped_retention),
            removed_series: l(&c.removed),
            recompressed_chunks: l(&c.recompressed),
            corrupt_chunks: l(&c.corrupt),
        }
    }

    /// Measures heap use by walking every series and the index (for
    /// benchmarks and diagnostics; takes each lock briefly).
    pub fn memory_usage(&self) -> MemoryUsage {
        let mut m = MemoryUsage::default();
        for shard in self.shards.iter() {
            let shard = shard.read();
            for seg in &shard.segments {
                m.series += (seg.capacity() * std::mem::size_of::<Series>()) as u64;
                for s in seg {
                    m.series += (s.labels.len() * 4) as u64;
                    let d = s.data.lock();
                    m.chunks += d.heap_bytes() as u64;
                    m.sample_payload += d.payload_bytes() as u64;
                    m.samples += d.sample_count();
                }
            }
            m.series += (shard.segments.capacity() * 24) as u64;
        }
        m.index = self.index.read().heap_bytes() as u64;
        m.total = m.chunks + m.series + m.index;
        m
    }

    /// Calls `f` for every series (live or dead) in id order per shard,
    /// taking each shard lock for a bounded stretch.
    fn for_each_series(&self, mut f: impl FnMut(u32, &Series)) {
        for (si, shard) in self.shards.iter().enumerate() {
            let mut local = 0usize;
            loop {
                let guard = shard.read();
                let end = (local + 512).min(guard.len());
                if local >= end {
                    break;
                }
                for l in local..end {
                    if let Some(s) = guard.get(l) {
                        f((l * SHARDS + si) as u32, s);
                    }
                }
                local = end;
            }
        }
    }

    /// Drops samples older than `now_ms − retention` (whole chunks; older
    /// samples left in a chunk that straddles the cut are hidden from reads
    /// and refused on append), removes series left empty from the index,
    /// and recompresses sealed chunks (see [`StoreOptions::block_samples`]).
    pub fn trim(&self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.opts.retention_ms);
        self.cutoff.fetch_max(cutoff, Ordering::Relaxed);
        let cutoff = self.cutoff.load(Ordering::Relaxed);
        let mut emptied: Vec<u32> = Vec::new();
        self.for_each_series(|id, s| {
            let mut d = s.data.lock();
            if d.dead {
                return;
            }
            let delta = d.drop_before(cutoff);
            if delta.chunks < 0 {
                self.counters
                    .dropped_retention
                    .fetch_add(delta.chunks.unsigned_abs(), Ordering::Relaxed);
            }
            self.counters.apply(delta);
            if d.is_empty() {
                emptied.push(id);
            }
        });
        self.remove_series(emptied);
        self.compact();
    }

    /// Takes series that retention emptied out of the index (unless an
    /// append came in meanwhile); their references stay valid.
    fn remove_series(&self, emptied: Vec<u32>) {
        if emptied.is_empty() {
            return;
        }
        let mut idx = self.index.write();
        let mut removed: Vec<(u32, Box<[u32]>)> = Vec::new();
        for id in emptied {
            self.with_series(id, |s| {
                let mut d = s.data.lock();
                // an append may have come in between
                if d.dead || !d.is_empty() {
                    return;
                }
                d.dead = true;
                d.sealed = Vec::new();
                self.counters
                    .bytes
                    .fetch_sub(s.fixed_bytes(), Ordering::Relaxed);
                if let Some(n) = idx.tenants.get_mut(&s.tenant) {
                    *n = n.saturating_sub(1);
                }
                removed.push((id, s.labels.clone()));
            });
        }
        self.counters
            .removed
            .fetch_add(removed.len() as u64, Ordering::Relaxed);
        idx.remove(&removed);
    }

    /// Recompresses sealed chunks now, as [`Store::trim`] does; returns the
    /// number of chunks rewritten.
    pub fn compact(&self) -> u64 {
        let block = self.opts.block_samples.min(chunk::MAX_CHUNK_SAMPLES);
        let mut total = 0u64;
        self.for_each_series(|_, s| {
            let mut d = s.data.lock();
            if d.dead {
                return;
            }
            let (delta, n) = d.recompress(block);
            self.counters.apply(delta);
            total += n as u64;
        });
        self.counters
            .recompressed
            .fetch_add(total, Ordering::Relaxed);
        if total > 0 {
            release_free_heap();
        }
        total
    }

    /// Keeps the accounted bytes under [`StoreOptions::max_bytes`] by
    /// dropping the oldest sealed chunks of the store first, down to 95% of
    /// the budget. Returns false when the budget still cannot be met.
    fn enforce_budget(&self) -> bool {
        let max = self.opts.max_bytes;
        if max == 0 || (self.counters.bytes.load(Ordering::Relaxed).max(0) as u64) <= max {
            return true;
        }
        if self.enforcing.swap(true, Ordering::Acquire) {
            // another thread is dropping chunks right now
            return false;
        }
        let target = (max / 100 * 95) as i64;
        let mut heap: BinaryHeap<std::cmp::Reverse<(i64, u32)>> = BinaryHeap::new();
        self.for_each_series(|id, s| {
            let d = s.data.lock();
            if let Some(c) = d.sealed.first() {
                heap.push(std::cmp::Reverse((c.mint, id)));
            }
        });
        while self.counters.bytes.load(Ordering::Relaxed) > target {
            let Some(std::cmp::Reverse((_, id))) = heap.pop() else {
                break;
            };
            self.with_series(id, |s| {
                let mut d = s.data.lock();
                if let Some(delta) = d.drop_oldest_sealed() {
                    self.counters.apply(delta);
                    self.counters.dropped_budget.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(c) = d.sealed.first() {
                    heap.push(std::cmp::Reverse((c.mint, id)));
                }
            });
        }
        self.enforcing.store(false, Ordering::Release);
        (self.counters.bytes.load(Ordering::Relaxed).max(0) as u64) <= max
    }

    fn labels_of(&self, idx: &Index, id: u32) -> Option<Labels> {
        self.with_series(id, |s| symbols_to_labels(idx, &s.labels))
    }

    /// Ids of live series matching `matchers` with a sample in range.
    fn matching_in_range(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<u32> {
        let ids = self.index.read().select(matchers);
        if self.covers_everything(mint, maxt) {
            return ids;
        }
        ids.into_iter()
            .filter(|&id| {
                self.with_series(id, |s| {
                    let d = s.data.lock();
                    !d.dead && d.has_sample_in(mint, maxt)
                })
                .unwrap_or(false)
            })
            .collect()
    }

    /// True when every stored sample lies in `[mint, maxt]`.
    fn covers_everything(&self, mint: i64, maxt: i64) -> bool {
        let lo = self
            .min_time
            .load(Ordering::Relaxed)
            .max(self.cutoff.load(Ordering::Relaxed));
        mint <= lo && maxt >= self.max_time.load(Ordering::Relaxed)
    }
}

/// Hands glibc's free heap pages back to the kernel after a recompression
/// pass. Recompression frees many short-lived buffers (decoded samples,
/// pco's working memory) between long-lived chunk allocations; glibc keeps
/// those pages mapped, and without this a process on the system allocator
/// (the store benchmark, library users, tests) grew to several times the
/// store's live bytes. The `vigil-collector` binary runs on mimalloc, which
/// returns freed pages by itself; there this trims only what little glibc
/// holds, and is kept because it is cheap and the store does not know which
/// allocator it runs under.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_heap() {
    // SAFETY: malloc_trim takes no pointers and only releases memory the
    // allocator holds as free; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}

fn symbols_to_labels(idx: &Index, syms: &[u32]) -> Labels {
    Labels::from_sorted_unchecked(
        syms.chunks_exact(2)
            .map(|p| {
                (
                    idx.symbols.get(p[0]).to_string(),
                    idx.symbols.get(p[1]).to_string(),
                )
            })
            .collect(),
    )
}

impl Queryable for Store {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        let mint = mint.max(self.cutoff.load(Ordering::Relaxed));
        if mint > maxt {
            return Vec::new();
        }
        let ids = self.index.read().select(matchers);
        let mut found: Vec<(u32, Vec<(i64, f64)>)> = Vec::new();
        let mut bad = 0u64;
        for id in ids {
            self.with_series(id, |s| {
                let d = s.data.lock();
                if d.dead {
                    return;
                }
                let mut samples = Vec::new();
                bad += d.read_range(mint, maxt, &mut samples) as u64;
                if !samples.is_empty() {
                    found.push((id, samples));
                }
            });
        }
        if bad > 0 {
            self.counters.corrupt.fetch_add(bad, Ordering::Relaxed);
        }
        let idx = self.index.read();
        found
            .into_iter()
            .filter_map(|(id, samples)| {
                Some(SeriesSamples {
                    labels: self.labels_of(&idx, id)?,
                    samples,
                })
            })
            .collect()
    }

    fn series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        let mint = mint.max(self.cutoff.load(Ordering::Relaxed));
        if mint > maxt {
            return Vec::new();
        }
        let ids = self.matching_in_range(matchers, mint, maxt);
        let idx = self.index.read();
        ids.into_iter()
            .filter_map(|id| self.labels_of(&idx, id))
            .collect()
    }

    fn label_names(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
        let mint = mint.max(self.cutoff.load(Ordering::Relaxed));
        if mint > maxt {
            return Vec::new();
        }
        if matchers.is_empty() && self.covers_everything(mint, maxt) {
            return self.index.read().names();
        }
        let ids = self.matching_in_range(matchers, mint, maxt);
        let mut names: HashSet<u32> = HashSet::new();
        for id in ids {
            self.with_series(id, |s| names.extend(s.labels.chunks_exact(2).map(|p| p[0])));
        }
        let idx = self.index.read();
        let mut out: Vec<String> = names
            .into_iter()
            .map(|n| idx.symbols.get(n).to_string())
            .collect();
        out.sort();
        out
    }

    fn label_values(&self, name: &str, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
        let mint = mint.max(self.cutoff.load(Ordering::Relaxed));
        if mint > maxt {
            return Vec::new();
        }
        if matchers.is_empty() && self.covers_everything(mint, maxt) {
            return self.index.read().values(name);
        }
        let Some(name_sym) = self.index.read().symbols.lookup(name) else {
            return Vec::new();
        };
        let ids = self.matching_in_range(matchers, mint, maxt);
        let mut values: HashSet<u32> = HashSet::new();
        for id in ids {
            self.with_series(id, |s| {
                values.extend(
                    s.labels
                        .chunks_exact(2)
                        .filter(|p| p[0] == name_sym)
                        .map(|p| p[1]),
                )
            });
        }
        let idx = self.index.read();
        let mut out: Vec<String> = values
            .into_iter()
            .map(|v| idx.symbols.get(v).to_string())
            .collect();
        out.sort();
        out
    }
}

impl Store {
    /// Writes a checkpoint of every live series (labels and compressed
    /// chunks as they are) to `w`. Together with the WAL records after the
    /// checkpoint's cut, this rebuilds the store. Format: [`checkpoint`].
    pub fn write_checkpoint(&self, w: &mut dyn Write) -> io::Result<()> {
        checkpoint::write(self, w)
    }

    /// Loads a checkpoint written by [`Store::write_checkpoint`] into this
    /// (normally empty) store. The whole checkpoint is verified (checksum,
    /// structure, every chunk decoded) before anything is added; a corrupt
    /// one is an `InvalidData` error naming what is wrong. Samples already
    /// present are kept; series over the limits are refused and counted.
    pub fn read_checkpoint(&self, r: &mut dyn Read) -> io::Result<()> {
        let staged = checkpoint::read(r)?;
        self.install(staged);
        Ok(())
    }

    /// Adds verified checkpoint series.
    fn install(&self, staged: Vec<checkpoint::StagedSeries>) {
        for st in staged {
            let r = match &st.tenant {
                Some(t) => self.get_or_create_trusted_for(t, &st.labels),
                None => self.get_or_create(&st.labels),
            };
            let Ok(r) = r else { continue };
            let mut leftover = None;
            self.with_series(r.0, |s| {
                let mut d = s.data.lock();
                if d.is_empty() && !d.dead {
                    let mut delta = Delta {
                        bytes: -(d.heap_bytes() as i64),
                        ..Delta::default()
                    };
                    d.sealed = st.sealed;
                    d.head = st.head;
                    delta.bytes += d.heap_bytes() as i64;
                    delta.samples = d.sample_count() as i64;
                    delta.chunks = d.sealed.len() as i64;
                    self.counters.apply(delta);
                    self.min_time.fetch_min(d.mint(), Ordering::Relaxed);
                    self.max_time.fetch_max(d.maxt(), Ordering::Relaxed);
                } else {
                    leftover = Some((st.sealed, st.head));
                }
            });
            // the series already has samples: merge through the append path
            if let Some((sealed, head)) = leftover {
                for c in &sealed {
                    if let Ok(samples) = c.samples() {
                        for (t, v) in samples {
                            let _ = self.append_one(r, t, v, i64::MAX);
                        }
                    }
                }
                for (t, v) in head.samples() {
                    let _ = self.append_one(r, t, v, i64::MAX);
                }
            }
        }
        self.enforce_budget();
    }
}
