//! The metric families the cgroup reader fills — cAdvisor's `container_*`
//! names, help and types — their indexes, and the label sets of a cgroup
//! (`id,name,image,namespace,pod,container`, and `container_info`'s).
//!
//! Not here: reading the files (`files`, `v1`, `v2`).

use crate::model::{LabelSet, MetricFamily, MetricKind, label_set};

use super::identity::{PathIdentity, qos_of, runtime_of};
use super::runtime_meta::Meta;

pub(super) const LABELS: [&str; 6] = ["id", "name", "image", "namespace", "pod", "container"];

pub(super) const SPECS: &[(&str, &str, MetricKind)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        MetricKind::Counter,
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        MetricKind::Counter,
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        MetricKind::Counter,
    ),
    (
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        MetricKind::Counter,
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        MetricKind::Counter,
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        MetricKind::Counter,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        MetricKind::Gauge,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        MetricKind::Gauge,
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        MetricKind::Gauge,
    ),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        MetricKind::Gauge,
    ),
    (
        "container_memory_swap",
        "Container swap usage in bytes.",
        MetricKind::Gauge,
    ),
    (
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
        MetricKind::Gauge,
    ),
    (
        "container_memory_failcnt",
        "Number of memory usage hits limits.",
        MetricKind::Counter,
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container (0 when unlimited).",
        MetricKind::Gauge,
    ),
    (
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        MetricKind::Gauge,
    ),
    (
        "container_spec_cpu_period",
        "CPU period of the container.",
        MetricKind::Gauge,
    ),
    (
        "container_spec_cpu_shares",
        "CPU share of the container.",
        MetricKind::Gauge,
    ),
    (
        "container_oom_events_total",
        "Count of out of memory events observed for the container.",
        MetricKind::Counter,
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        MetricKind::Gauge,
    ),
    (
        "container_threads",
        "Number of threads running inside the container.",
        MetricKind::Gauge,
    ),
    (
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read.",
        MetricKind::Counter,
    ),
    (
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written.",
        MetricKind::Counter,
    ),
    (
        "container_fs_reads_total",
        "Cumulative count of reads completed.",
        MetricKind::Counter,
    ),
    (
        "container_fs_writes_total",
        "Cumulative count of writes completed.",
        MetricKind::Counter,
    ),
    (
        "container_pressure_cpu_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to CPU congestion.",
        MetricKind::Counter,
    ),
    (
        "container_pressure_cpu_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        MetricKind::Counter,
    ),
    (
        "container_pressure_memory_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to memory congestion.",
        MetricKind::Counter,
    ),
    (
        "container_pressure_memory_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to memory congestion.",
        MetricKind::Counter,
    ),
    (
        "container_pressure_io_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to IO congestion.",
        MetricKind::Counter,
    ),
    (
        "container_pressure_io_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to IO congestion.",
        MetricKind::Counter,
    ),
    (
        "container_info",
        "Metadata of a container (value 1): runtime, full container id, pod uid, QoS class; join on id to add them to other series.",
        MetricKind::Gauge,
    ),
    (
        "container_file_descriptors",
        "Number of open file descriptors for the container.",
        MetricKind::Gauge,
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        MetricKind::Counter,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        MetricKind::Counter,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        MetricKind::Counter,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        MetricKind::Counter,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        MetricKind::Counter,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        MetricKind::Counter,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        MetricKind::Counter,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        MetricKind::Counter,
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        MetricKind::Gauge,
    ),
    (
        "container_last_seen",
        "Last time a container was seen by the exporter.",
        MetricKind::Gauge,
    ),
];

/// Family indexes into [`SPECS`] (checked by a test).
pub(super) mod fam {
    pub const CPU_USAGE: usize = 0;
    pub const CPU_USER: usize = 1;
    pub const CPU_SYSTEM: usize = 2;
    pub const CFS_PERIODS: usize = 3;
    pub const CFS_THROTTLED_PERIODS: usize = 4;
    pub const CFS_THROTTLED_SECONDS: usize = 5;
    pub const MEM_USAGE: usize = 6;
    pub const MEM_WORKING_SET: usize = 7;
    pub const MEM_RSS: usize = 8;
    pub const MEM_CACHE: usize = 9;
    pub const MEM_SWAP: usize = 10;
    pub const MEM_MAPPED: usize = 11;
    pub const MEM_FAILCNT: usize = 12;
    pub const SPEC_MEM_LIMIT: usize = 13;
    pub const SPEC_CPU_QUOTA: usize = 14;
    pub const SPEC_CPU_PERIOD: usize = 15;
    pub const SPEC_CPU_SHARES: usize = 16;
    pub const OOM_EVENTS: usize = 17;
    pub const PROCESSES: usize = 18;
    pub const THREADS: usize = 19;
    /// reads bytes, writes bytes, reads, writes
    pub const FS: usize = 20;
    /// + 2 × resource (cpu, memory, io) + (0: waiting, 1: stalled)
    pub const PSI: usize = 24;
    pub const INFO: usize = 30;
    pub const FDS: usize = 31;
    /// + the index in `netfd::NET_FAMILIES`
    pub const NET: usize = 32;
    pub const START: usize = 40;
    pub const LAST_SEEN: usize = 41;
}

pub(super) struct Families {
    pub(super) f: Vec<MetricFamily>,
}

impl Families {
    pub(super) fn new(capacity: usize) -> Self {
        Families {
            f: SPECS
                .iter()
                .map(|(n, h, k)| {
                    let mut f = MetricFamily::new(*n, *h, *k);
                    f.samples.reserve(capacity);
                    f
                })
                .collect(),
        }
    }
}

pub(super) fn labels_of(rel: &str, m: &Meta) -> LabelSet {
    label_set([
        (LABELS[0], rel),
        (LABELS[1], m.name.as_str()),
        (LABELS[2], m.image.as_str()),
        (LABELS[3], m.namespace.as_str()),
        (LABELS[4], m.pod.as_str()),
        (LABELS[5], m.container.as_str()),
    ])
}

pub(super) fn info_of(rel: &str, ident: &PathIdentity, labels: &LabelSet) -> LabelSet {
    let mut l: Vec<(String, String)> = labels.to_vec();
    l.push(("runtime".into(), runtime_of(rel).into()));
    l.push(("container_id".into(), ident.id.clone()));
    l.push(("pod_uid".into(), ident.pod_uid.clone().unwrap_or_default()));
    l.push(("qos".into(), qos_of(rel).into()));
    l.into()
}
