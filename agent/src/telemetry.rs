//! The agent's self-metrics (`vigil_agent_*`): plain atomics, rendered as
//! metric families so they are both served on `/metrics` and shipped with
//! every scrape (the collector's rules watch agents through them: silent
//! agents, dropped data, a filling disk buffer). Counters only go up; label
//! values are bounded (reader names, a fixed set of kinds).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::model::{MetricFamily, MetricKind};

#[derive(Default)]
pub struct Telemetry {
    pub scrapes: AtomicU64,
    pub scrape_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Duration of the last scrape, microseconds.
    pub scrape_micros: AtomicU64,
    /// Duration of each reader in the last scrape, microseconds.
    pub reader_micros: Mutex<BTreeMap<&'static str, u64>>,
    /// Container cgroups and processes the last scrape saw.
    pub containers_seen: AtomicU64,
    pub processes_seen: AtomicU64,
    /// Cgroup files held open between scrapes, and the budget for them.
    pub cgroup_open_files: AtomicU64,
    pub cgroup_open_files_limit: AtomicU64,
    /// Inotify watches on cgroup directories; full walks of the hierarchies;
    /// 1 while discovery walks every scrape (inotify unavailable).
    pub cgroup_watches: AtomicU64,
    pub cgroup_walks: AtomicU64,
    pub cgroup_discovery_degraded: AtomicU64,
    pub samples_scraped: AtomicU64,
    pub batches_sealed: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub samples_acked: AtomicU64,
    pub log_records_acked: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub buffer_bytes: AtomicU64,
    pub buffer_batches: AtomicU64,
    pub buffer_max_bytes: AtomicU64,
    pub buffer_corrupt_records: AtomicU64,
    pub buffer_disk_full: AtomicU64,
    pub series_table_refs: AtomicU64,
    pub series_defs_sent: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub dropped_samples: AtomicU64,
    pub dropped_log_records: AtomicU64,
    pub dropped_scrapes: AtomicU64,
    pub rejected_batches: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub auth_failures: AtomicU64,
    pub connected: AtomicI64,
    /// Moves to the next collector because the one in use failed, and back
    /// to a preferred one that answers again.
    pub collector_failovers: AtomicU64,
    pub collector_failbacks: AtomicU64,
    /// Position (0 = first) in `--collector` of the collector in use; -1: none.
    pub collector_index: AtomicI64,
    pub last_acked_seq: AtomicU64,
    pub ack_latency_micros_sum: AtomicU64,
    pub ack_latency_count: AtomicU64,
}

fn one(name: &str, help: &str, kind: MetricKind, v: f64) -> MetricFamily {
    let mut f = MetricFamily::new(name, help, kind);
    f.push(Vec::<(String, String)>::new(), v);
    f
}

impl Telemetry {
    pub fn error(&self, reader: &'static str) {
        *self.scrape_errors.lock().entry(reader).or_insert(0) += 1;
    }

    /// Every self-metric as families (the `node` label is added on output).
    pub fn families(&self) -> Vec<MetricFamily> {
        use MetricKind::{Counter as C, Gauge as G};
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut out = vec![
            {
                let mut f = MetricFamily::new("vigil_agent_build_info", "The agent's version.", G);
                f.push([("version", crate::VERSION)], 1.0);
                f
            },
            one(
                "vigil_agent_scrapes_total",
                "Scrapes completed.",
                C,
                g(&self.scrapes),
            ),
            one(
                "vigil_agent_scrape_duration_seconds",
                "Wall time of the last scrape.",
                G,
                g(&self.scrape_micros) / 1e6,
            ),
            one(
                "vigil_agent_samples_scraped_total",
                "Samples read by scrapes.",
                C,
                g(&self.samples_scraped),
            ),
            one(
                "vigil_agent_batches_sealed_total",
                "Batches sealed into the disk buffer.",
                C,
                g(&self.batches_sealed),
            ),
            one(
                "vigil_agent_batches_sent_total",
                "Batch transmissions (retransmissions included).",
                C,
                g(&self.batches_sent),
            ),
            one(
                "vigil_agent_batches_acked_total",
                "Batches the collector acknowledged as durable.",
                C,
                g(&self.batches_acked),
            ),
            one(
                "vigil_agent_samples_acked_total",
                "Samples in acknowledged batches.",
                C,
                g(&self.samples_acked),
            ),
            one(
                "vigil_agent_log_records_acked_total",
                "Log records in acknowledged batches.",
                C,
                g(&self.log_records_acked),
            ),
            one(
                "vigil_agent_sent_bytes_total",
                "Encoded batch bytes sent (before compression).",
                C,
                g(&self.bytes_sent),
            ),
            one(
                "vigil_agent_buffer_bytes",
                "Bytes in the disk buffer.",
                G,
                g(&self.buffer_bytes),
            ),
            one(
                "vigil_agent_buffer_batches",
                "Unacknowledged batches in the disk buffer.",
                G,
                g(&self.buffer_batches),
            ),
            one(
                "vigil_agent_buffer_max_bytes",
                "The disk buffer's bound.",
                G,
                g(&self.buffer_max_bytes),
            ),
            one(
                "vigil_agent_buffer_corrupt_records_total",
                "Disk buffer records skipped as torn or corrupt.",
                C,
                g(&self.buffer_corrupt_records),
            ),
            one(
                "vigil_agent_series_table_refs",
                "Label sets in the agent's series table (defined once, then shipped as refs).",
                G,
                g(&self.series_table_refs),
            ),
            one(
                "vigil_agent_series_definitions_sent_total",
                "Series definitions sent to collectors (each collector gets a definition once per table; again only after it restarts).",
                C,
                g(&self.series_defs_sent),
            ),
            one(
                "vigil_agent_buffer_disk_full_total",
                "Batches that found the state dir's disk full (below 1 MiB available) and dropped the oldest buffered ones to make room.",
                C,
                g(&self.buffer_disk_full),
            ),
            one(
                "vigil_agent_dropped_batches_total",
                "Batches dropped because the disk buffer was full — its bound or its disk (oldest first).",
                C,
                g(&self.dropped_batches),
            ),
            one(
                "vigil_agent_dropped_samples_total",
                "Samples dropped with those batches.",
                C,
                g(&self.dropped_samples),
            ),
            one(
                "vigil_agent_dropped_log_records_total",
                "Log records dropped with those batches.",
                C,
                g(&self.dropped_log_records),
            ),
            one(
                "vigil_agent_dropped_scrapes_total",
                "Scrapes dropped because the shipper was not keeping up.",
                C,
                g(&self.dropped_scrapes),
            ),
            one(
                "vigil_agent_rejected_batches_total",
                "Batches the collector refused as invalid several times, given up.",
                C,
                g(&self.rejected_batches),
            ),
            one(
                "vigil_agent_connects_total",
                "Streams opened to the collector.",
                C,
                g(&self.connects),
            ),
            one(
                "vigil_agent_connect_failures_total",
                "Failed attempts to reach the collector.",
                C,
                g(&self.connect_failures),
            ),
            one(
                "vigil_agent_auth_failures_total",
                "Streams the collector refused as unauthenticated.",
                C,
                g(&self.auth_failures),
            ),
            one(
                "vigil_agent_connected",
                "1 while a stream to the collector is open.",
                G,
                self.connected.load(Ordering::Relaxed) as f64,
            ),
            one(
                "vigil_agent_collector_failovers_total",
                "Moves to the next collector of the list because the one in use failed.",
                C,
                g(&self.collector_failovers),
            ),
            one(
                "vigil_agent_collector_failbacks_total",
                "Moves back to a preferred collector that answers again.",
                C,
                g(&self.collector_failbacks),
            ),
            one(
                "vigil_agent_collector_index",
                "Position in --collector (0 = first) of the collector the stream is open to; -1 while none is.",
                G,
                self.collector_index.load(Ordering::Relaxed) as f64,
            ),
            one(
                "vigil_agent_last_acked_sequence",
                "Highest sequence acknowledged.",
                G,
                g(&self.last_acked_seq),
            ),
            one(
                "vigil_agent_ack_latency_seconds_sum",
                "Sum of send-to-ack latencies.",
                C,
                g(&self.ack_latency_micros_sum) / 1e6,
            ),
            one(
                "vigil_agent_ack_latency_seconds_count",
                "Acks measured.",
                C,
                g(&self.ack_latency_count),
            ),
        ];
        let mut errs = MetricFamily::new(
            "vigil_agent_scrape_errors_total",
            "Scrape errors by reader.",
            C,
        );
        for (reader, n) in self.scrape_errors.lock().iter() {
            errs.push([("reader", *reader)], *n as f64);
        }
        out.push(errs);
        let mut dur = MetricFamily::new(
            "vigil_agent_reader_duration_seconds",
            "Duration of each reader in the last scrape.",
            G,
        );
        for (reader, us) in self.reader_micros.lock().iter() {
            dur.push([("reader", *reader)], *us as f64 / 1e6);
        }
        out.push(dur);
        out.push(one(
            "vigil_agent_containers_seen",
            "Container cgroups the last scrape reported.",
            G,
            g(&self.containers_seen),
        ));
        out.push(one(
            "vigil_agent_processes_seen",
            "Processes the last scrape read.",
            G,
            g(&self.processes_seen),
        ));
        out.push(one(
            "vigil_agent_cgroup_open_files",
            "Cgroup files held open between scrapes (each read with one pread per scrape).",
            G,
            g(&self.cgroup_open_files),
        ));
        out.push(one(
            "vigil_agent_cgroup_open_files_limit",
            "Most cgroup files held open (from RLIMIT_NOFILE); past it, files are opened per read.",
            G,
            g(&self.cgroup_open_files_limit),
        ));
        out.push(one(
            "vigil_agent_cgroup_watches",
            "Inotify watches on cgroup directories.",
            G,
            g(&self.cgroup_watches),
        ));
        out.push(one(
            "vigil_agent_cgroup_walks_total",
            "Full walks of the cgroup hierarchies (start, inotify overflow, or every scrape when degraded).",
            MetricKind::Counter,
            g(&self.cgroup_walks),
        ));
        out.push(one(
            "vigil_agent_cgroup_discovery_degraded",
            "1 while cgroups are found by walking every scrape because inotify is unavailable or out of watches.",
            G,
            g(&self.cgroup_discovery_degraded),
        ));
        out
    }
}
