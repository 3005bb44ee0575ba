//! The collector's self-metrics (`vigil_collector_*`), one prometheus-client
//! registry. Ingest, the WAL and checkpoints report here; `/metrics` encodes
//! the registry after the ingested series. Label values are bounded (reasons
//! are a fixed set), never agent ids or series.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Store;
use crate::wal::WalStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

/// Every metric the collector keeps about itself.
pub struct Telemetry {
    pub registry: Mutex<Registry>,
    pub agents_connected: Gauge,
    pub streams: Counter,
    pub batches: Counter,
    pub samples: Counter,
    pub log_records: Counter,
    pub events: Counter,
    pub duplicate_batches: Counter,
    pub series_defined: Counter,
    pub series_tables: Gauge,
    pub rw_series_resolved: Counter,
    pub rw_series_cached: Gauge,
    pub invalid_batches: Family<ReasonLabels, Counter>,
    pub auth_failures: Counter,
    pub samples_refused: Family<ReasonLabels, Counter>,
    pub ack_latency: Histogram,
    pub wal_bytes: Gauge,
    pub wal_segments: Gauge,
    pub wal_fsyncs: Counter,
    pub wal_fsync_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub wal_replayed_records: Counter,
    pub wal_torn_tails: Counter,
    pub checkpoints: Family<ReasonLabels, Counter>,
    pub checkpoint_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub checkpoint_last_success: Gauge,
    pub series: Gauge,
    store_samples: Gauge,
    store_bytes: Gauge,
    store_sealed_chunks: Gauge,
    store_limits: Family<LimitLabels, Gauge>,
    store_refused: Family<ReasonLabels, Counter>,
    store_dropped_chunks: Family<ReasonLabels, Counter>,
    store_removed_series: Counter,
    store_recompressed_chunks: Counter,
    store_corrupt_chunks: Counter,
    memory_used: Gauge,
    memory_pressure: Gauge,
    log_stored: Counter,
    log_bytes: Counter,
    log_duplicates: Counter,
    log_streams: Gauge,
    log_disk_bytes: Gauge,
    log_deleted_segments: Counter,
    log_write_errors: Counter,
    wal: Mutex<Option<Arc<WalStats>>>,
    store: Mutex<Option<Arc<Store>>>,
    logs: Mutex<Option<Arc<crate::logs::LogStore>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: String,
}

/// Raises a counter to `to` (store counters are cumulative atomics of their
/// own; the registry's counter follows them).
fn follow(c: &Counter, to: u64) {
    let have = c.get();
    if to > have {
        c.inc_by(to - have);
    }
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let t = Telemetry {
            registry: Mutex::new(Registry::default()),
            agents_connected: Gauge::default(),
            streams: Counter::default(),
            batches: Counter::default(),
            samples: Counter::default(),
            log_records: Counter::default(),
            events: Counter::default(),
            duplicate_batches: Counter::default(),
            series_defined: Counter::default(),
            series_tables: Gauge::default(),
            rw_series_resolved: Counter::default(),
            rw_series_cached: Gauge::default(),
            invalid_batches: Family::default(),
            auth_failures: Counter::default(),
            samples_refused: Family::default(),
            ack_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            wal_bytes: Gauge::default(),
            wal_segments: Gauge::default(),
            wal_fsyncs: Counter::default(),
            wal_fsync_seconds: Gauge::default(),
            wal_replayed_records: Counter::default(),
            wal_torn_tails: Counter::default(),
            checkpoints: Family::default(),
            checkpoint_seconds: Gauge::default(),
            checkpoint_last_success: Gauge::default(),
            series: Gauge::default(),
            store_samples: Gauge::default(),
            store_bytes: Gauge::default(),
            store_sealed_chunks: Gauge::default(),
            store_limits: Family::default(),
            store_refused: Family::default(),
            store_dropped_chunks: Family::default(),
            store_removed_series: Counter::default(),
            store_recompressed_chunks: Counter::default(),
            store_corrupt_chunks: Counter::default(),
            memory_used: Gauge::default(),
            memory_pressure: Gauge::default(),
            log_stored: Counter::default(),
            log_bytes: Counter::default(),
            log_duplicates: Counter::default(),
            log_streams: Gauge::default(),
            log_disk_bytes: Gauge::default(),
            log_deleted_segments: Counter::default(),
            log_write_errors: Counter::default(),
            wal: Mutex::new(None),
            store: Mutex::new(None),
            logs: Mutex::new(None),
        };
        {
            let mut r = t.registry.lock();
            let build: Family<BuildLabels, Gauge> = Family::default();
            build
                .get_or_create(&BuildLabels {
                    version: crate::VERSION.into(),
                })
                .set(1);
            r.register(
                "vigil_collector_build_info",
                "The collector's version",
                build,
            );
            r.register(
                "vigil_collector_agents_connected",
                "Agent streams open now",
                t.agents_connected.clone(),
            );
            r.register(
                "vigil_collector_streams",
                "Agent streams opened",
                t.streams.clone(),
            );
            r.register(
                "vigil_collector_batches_received",
                "Batches made durable and acknowledged",
                t.batches.clone(),
            );
            r.register(
                "vigil_collector_samples_received",
                "Samples in acknowledged batches",
                t.samples.clone(),
            );
            r.register(
                "vigil_collector_log_records_received",
                "Log records in acknowledged batches",
                t.log_records.clone(),
            );
            r.register(
                "vigil_collector_events_received",
                "Events in acknowledged batches",
                t.events.clone(),
            );
            r.register(
                "vigil_collector_duplicate_batches",
                "Batches already held (retransmissions), dropped and acknowledged",
                t.duplicate_batches.clone(),
            );
            r.register(
                "vigil_collector_series_definitions",
                "Series definitions received from agents (a steady agent sends each once per collector; again after a collector restart or a new agent table)",
                t.series_defined.clone(),
            );
            r.register(
                "vigil_collector_idle_series_tables",
                "Agents' series tables kept for their next stream (an hour after their last one ended)",
                t.series_tables.clone(),
            );
            r.register(
                "vigil_collector_remote_write_series_resolved",
                "Remote-write series decoded and looked up because the series cache did not know their bytes (a steady sender's series once each)",
                t.rw_series_resolved.clone(),
            );
            r.register(
                "vigil_collector_remote_write_series_cached",
                "Remote-write series the series cache holds, over all senders",
                t.rw_series_cached.clone(),
            );
            r.register(
                "vigil_collector_invalid_batches",
                "Messages refused as invalid, by reason; the stream is ended",
                t.invalid_batches.clone(),
            );
            r.register(
                "vigil_collector_auth_failures",
                "Streams refused for a missing or wrong token",
                t.auth_failures.clone(),
            );
            r.register(
                "vigil_collector_samples_refused",
                "Samples the store refused, by reason",
                t.samples_refused.clone(),
            );
            r.register(
                "vigil_collector_ack_latency_seconds",
                "From a batch's arrival to its acknowledgement",
                t.ack_latency.clone(),
            );
            r.register(
                "vigil_collector_wal_bytes",
                "Size of the write-ahead log",
                t.wal_bytes.clone(),
            );
            r.register(
                "vigil_collector_wal_segments",
                "Segment files of the write-ahead log",
                t.wal_segments.clone(),
            );
            r.register(
                "vigil_collector_wal_fsyncs",
                "fsyncs of the write-ahead log",
                t.wal_fsyncs.clone(),
            );
            r.register(
                "vigil_collector_wal_fsync_seconds",
                "Time spent in WAL fsyncs (cumulative seconds)",
                t.wal_fsync_seconds.clone(),
            );
            r.register(
                "vigil_collector_wal_replayed_records",
                "WAL records replayed at start",
                t.wal_replayed_records.clone(),
            );
            r.register(
                "vigil_collector_wal_torn_tails",
                "Torn WAL tails truncated at start",
                t.wal_torn_tails.clone(),
            );
            r.register(
                "vigil_collector_checkpoints",
                "Checkpoints by result",
                t.checkpoints.clone(),
            );
            r.register(
                "vigil_collector_checkpoint_duration_seconds",
                "Duration of the last checkpoint",
                t.checkpoint_seconds.clone(),
            );
            r.register(
                "vigil_collector_checkpoint_last_success_timestamp_seconds",
                "When the last checkpoint succeeded",
                t.checkpoint_last_success.clone(),
            );
            r.register(
                "vigil_collector_series",
                "Series in the store",
                t.series.clone(),
            );
            r.register(
                "vigil_collector_log_stored_records",
                "Log records stored (repeats excluded)",
                t.log_stored.clone(),
            );
            r.register(
                "vigil_collector_log_stored_bytes",
                "Bytes of log lines stored (before compression)",
                t.log_bytes.clone(),
            );
            r.register(
                "vigil_collector_log_duplicate_records",
                "Log records dropped because the store already held them (same source and position)",
                t.log_duplicates.clone(),
            );
            r.register(
                "vigil_collector_log_streams",
                "Log streams held",
                t.log_streams.clone(),
            );
            r.register(
                "vigil_collector_log_disk_bytes",
                "Bytes of log segment files on disk",
                t.log_disk_bytes.clone(),
            );
            r.register(
                "vigil_collector_log_deleted_segments",
                "Log segment files deleted by retention (age or size)",
                t.log_deleted_segments.clone(),
            );
            r.register(
                "vigil_collector_log_write_errors",
                "Log chunks that could not be written (the WAL keeps their records)",
                t.log_write_errors.clone(),
            );
            r.register(
                "vigil_collector_store_samples",
                "Samples held in the store",
                t.store_samples.clone(),
            );
            r.register(
                "vigil_collector_store_bytes",
                "Bytes the store accounts for (chunks plus a per-series estimate; compared with the memory budget)",
                t.store_bytes.clone(),
            );
            r.register(
                "vigil_collector_store_sealed_chunks",
                "Sealed (compressed) chunks held",
                t.store_sealed_chunks.clone(),
            );
            r.register(
                "vigil_collector_store_limit",
                "Configured store limits (max_series, max_series_per_agent, memory_budget_bytes, memory_limit_bytes; 0 = none)",
                t.store_limits.clone(),
            );
            r.register(
                "vigil_collector_memory_used_bytes",
                "Resident memory of the collector as the memory-pressure guard last measured it (0 without a memory limit)",
                t.memory_used.clone(),
            );
            r.register(
                "vigil_collector_memory_pressure",
                "1 while new series are refused because memory use is above memory_pressure_fraction of memory_limit",
                t.memory_pressure.clone(),
            );
            r.register(
                "vigil_collector_store_refused",
                "Samples or series the store refused, by reason (out_of_order, duplicate, too_old, series_limit, agent_series_limit, memory_budget, memory_pressure: new series)",
                t.store_refused.clone(),
            );
            r.register(
                "vigil_collector_store_dropped_chunks",
                "Chunks dropped, by reason (retention, memory_budget)",
                t.store_dropped_chunks.clone(),
            );
            r.register(
                "vigil_collector_store_removed_series",
                "Series removed because retention emptied them",
                t.store_removed_series.clone(),
            );
            r.register(
                "vigil_collector_store_recompressed_chunks",
                "Sealed chunks recompressed into blocks",
                t.store_recompressed_chunks.clone(),
            );
            r.register(
                "vigil_collector_store_corrupt_chunks",
                "Chunks that failed to decode while reading (never expected)",
                t.store_corrupt_chunks.clone(),
            );
        }
        Arc::new(t)
    }

    /// Lets the WAL's counters flow into the gauges at encode time.
    pub fn watch_wal(&self, stats: Arc<WalStats>) {
        *self.wal.lock() = Some(stats);
    }

    /// Lets the store's statistics and limits flow into the registry at
    /// encode time.
    pub fn watch_store(&self, store: Arc<Store>) {
        let o = store.options();
        for (name, v) in [
            ("max_series", o.max_series as i64),
            ("max_series_per_agent", o.max_series_per_tenant as i64),
            ("memory_budget_bytes", o.max_bytes as i64),
            (
                "memory_limit_bytes",
                o.memory_guard
                    .as_ref()
                    .map(|g| g.limit() as i64)
                    .unwrap_or(0),
            ),
        ] {
            self.store_limits
                .get_or_create(&LimitLabels { limit: name.into() })
                .set(v);
        }
        *self.store.lock() = Some(store);
    }

    /// Lets the log store's counters flow into the registry at encode time.
    pub fn watch_logs(&self, logs: Arc<crate::logs::LogStore>) {
        *self.logs.lock() = Some(logs);
    }

    fn update_logs(&self) {
        let Some(l) = self.logs.lock().clone() else {
            return;
        };
        let st = &l.stats;
        follow(&self.log_stored, st.records.load(Ordering::Relaxed));
        follow(&self.log_bytes, st.bytes.load(Ordering::Relaxed));
        follow(&self.log_duplicates, st.duplicates.load(Ordering::Relaxed));
        follow(
            &self.log_deleted_segments,
            st.retention_deleted_segments.load(Ordering::Relaxed),
        );
        follow(
            &self.log_write_errors,
            st.write_errors.load(Ordering::Relaxed),
        );
        self.log_streams.set(l.stream_count() as i64);
        self.log_disk_bytes.set(l.disk_bytes() as i64);
    }

    fn update_store(&self) {
        let Some(store) = self.store.lock().clone() else {
            return;
        };
        let st = store.stats();
        if let Some(g) = &store.options().memory_guard {
            let gs = g.stats();
            self.memory_used.set(gs.used as i64);
            self.memory_pressure.set(i64::from(gs.pressure));
        }
        self.series.set(st.series as i64);
        self.store_samples.set(st.samples as i64);
        self.store_bytes.set(st.bytes as i64);
        self.store_sealed_chunks.set(st.sealed_chunks as i64);
        let reason = |r: &str| ReasonLabels { reason: r.into() };
        for (r, v) in [
            ("out_of_order", st.refused_out_of_order),
            ("duplicate", st.refused_duplicate),
            ("too_far_in_future", st.refused_future),
            ("too_old", st.refused_too_old),
            ("series_limit", st.refused_series_limit),
            ("agent_series_limit", st.refused_tenant_limit),
            ("memory_budget", st.refused_memory),
            ("memory_pressure", st.refused_memory_pressure),
        ] {
            follow(&self.store_refused.get_or_create(&reason(r)), v);
        }
        follow(
            &self
                .store_dropped_chunks
                .get_or_create(&reason("retention")),
            st.dropped_chunks_retention,
        );
        follow(
            &self
                .store_dropped_chunks
                .get_or_create(&reason("memory_budget")),
            st.dropped_chunks_budget,
        );
        follow(&self.store_removed_series, st.removed_series);
        follow(&self.store_recompressed_chunks, st.recompressed_chunks);
        follow(&self.store_corrupt_chunks, st.corrupt_chunks);
    }

    /// The registry in Prometheus text format (without the `# EOF` line).
    pub fn encode(&self) -> String {
        self.update_store();
        self.update_logs();
        if let Some(w) = self.wal.lock().as_ref() {
            self.wal_bytes.set(w.bytes.load(Ordering::Relaxed) as i64);
            self.wal_segments
                .set(w.segments.load(Ordering::Relaxed) as i64);
            let f = w.fsyncs.load(Ordering::Relaxed);
            let have = self.wal_fsyncs.get();
            if f > have {
                self.wal_fsyncs.inc_by(f - have);
            }
            self.wal_fsync_seconds
                .set(w.fsync_micros.load(Ordering::Relaxed) as f64 / 1e6);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out.trim_end_matches("# EOF\n").to_string()
    }
}
