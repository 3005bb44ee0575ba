//! Container metrics from cgroups (cAdvisor's `container_*` names), read under
//! `--host-root`. Discovers the hierarchies from mountinfo (v1, v2, hybrid),
//! follows their directories with inotify (`discover`), finds container ids
//! in cgroup paths (Kubernetes systemd/cgroupfs layouts, CRI-O, Docker,
//! Podman) and names them from the runtimes' on-disk metadata. Not here:
//! node metrics (`node`), shipping.
//!
//! Only cgroups with a container id are reported, plus the root `/` for
//! machine totals. Per cgroup the reader keeps its label sets (shared by all
//! its samples), its metadata and its files, open; a scrape is one `pread`
//! per file. Nothing is kept for a cgroup that vanished.

pub mod discover;
pub mod kmsg;
pub mod netfd;
pub mod parse;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::model::{LabelSet, MetricFamily, MetricKind, Scrape, label_set};
use parse::ParseError;

/// Where each hierarchy is mounted on the host (already joined under host_root).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Hierarchies {
    /// v1 controller name → mount directory.
    pub v1: HashMap<String, PathBuf>,
    /// The cgroup2 mount, if any.
    pub v2: Option<PathBuf>,
}

impl Hierarchies {
    /// Reads `<host_root>/proc/self/mountinfo`, falling back to `proc/1/mountinfo`.
    pub fn discover(host_root: &Path) -> Result<Self, ParseError> {
        let mut last = None;
        for p in ["proc/self/mountinfo", "proc/1/mountinfo"] {
            let path = host_root.join(p);
            match fs::read_to_string(&path) {
                Ok(text) => return Ok(Self::from_mountinfo(&text, host_root)),
                Err(e) => last = Some(ParseError::io(&path, e)),
            }
        }
        Err(last.unwrap_or_else(|| ParseError::msg(host_root, "no mountinfo")))
    }

    pub fn from_mountinfo(text: &str, host_root: &Path) -> Self {
        let mut h = Hierarchies::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if fields.len() < 5 || fields.len() < sep + 4 {
                continue;
            }
            let mount = unescape(fields[4]);
            let fstype = fields[sep + 1];
            let dir = host_root.join(mount.trim_start_matches('/'));
            match fstype {
                "cgroup2" if h.v2.is_none() => {
                    h.v2 = Some(dir);
                }
                "cgroup" => {
                    for opt in fields[sep + 3].split(',') {
                        if matches!(
                            opt,
                            "cpu" | "cpuacct" | "memory" | "blkio" | "pids" | "cpuset"
                        ) {
                            h.v1.entry(opt.to_string()).or_insert_with(|| dir.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        h
    }

    /// True when the v1 resource controllers are absent and v2 carries them.
    fn is_v2(&self) -> bool {
        self.v2.is_some() && !self.v1.contains_key("memory") && !self.v1.contains_key("cpuacct")
    }
}

/// `\040` style octal escapes in mountinfo paths.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who a cgroup belongs to, parsed from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathIdentity {
    pub id: String,
    /// Kubernetes pod uid (with `-`), when the path is under kubepods.
    pub pod_uid: Option<String>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Finds the container id (last element carrying a 64-hex id) and the pod uid.
pub fn identify(path: &str) -> Option<PathIdentity> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let last = *parts.last()?;
    if last.starts_with("libpod-conmon-") || last.starts_with("crio-conmon-") {
        return None;
    }
    let core = last.strip_suffix(".scope").unwrap_or(last);
    let id = if is_hex64(core) {
        core
    } else {
        let (_, tail) = core.rsplit_once('-')?;
        if !is_hex64(tail) {
            return None;
        }
        let prefix = &core[..core.len() - 65];
        if !matches!(prefix, "cri-containerd" | "crio" | "docker" | "libpod") {
            return None;
        }
        tail
    };
    let mut pod_uid = None;
    if parts.iter().any(|p| p.starts_with("kubepods")) {
        for p in &parts[..parts.len() - 1] {
            let p = p.strip_suffix(".slice").unwrap_or(p);
            if let Some(i) = p.rfind("pod") {
                let uid = &p[i + 3..];
                if uid.len() >= 32
                    && uid
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
                {
                    pod_uid = Some(uid.replace('_', "-"));
                }
            }
        }
    }
    Some(PathIdentity {
        id: id.to_string(),
        pod_uid,
    })
}

/// The runtime that made a container cgroup, from its path.
fn runtime_of(path: &str) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or("");
    if last.starts_with("cri-containerd-") {
        "containerd"
    } else if last.starts_with("crio-") {
        "cri-o"
    } else if last.starts_with("libpod-") || path.contains("libpod_parent") {
        "podman"
    } else if last.starts_with("docker-")
        || path.contains("/docker/")
        || path.starts_with("/docker")
    {
        "docker"
    } else if path.contains("kubepods") {
        "cri"
    } else {
        ""
    }
}

/// A Kubernetes pod's QoS class from its cgroup path.
fn qos_of(path: &str) -> &'static str {
    if !path.contains("kubepods") {
        ""
    } else if path.contains("besteffort") {
        "BestEffort"
    } else if path.contains("burstable") {
        "Burstable"
    } else {
        "Guaranteed"
    }
}

/// Names for a container, from the runtime's files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub image: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// The runtimes' and the kubelet's on-disk names, indexed once per scrape
/// that needs them (a new container, or one still unnamed).
#[derive(Default)]
struct MetaIndex {
    /// pod uid → (namespace, pod), from `/var/log/pods/<ns>_<pod>_<uid>`.
    pods: HashMap<String, (String, String)>,
    /// container id → (pod, namespace, container), from
    /// `/var/log/containers/<pod>_<ns>_<container>-<id>.log`.
    logs: HashMap<String, (String, String, String)>,
    /// Podman's `containers.json`: id → (name, image).
    podman: HashMap<String, (String, String)>,
}

impl MetaIndex {
    fn build(host_root: &Path) -> Self {
        let mut idx = MetaIndex {
            podman: podman_index(host_root),
            ..Default::default()
        };
        if let Ok(rd) = fs::read_dir(host_root.join("var/log/pods")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let mut it = n.splitn(3, '_');
                if let (Some(ns), Some(pod), Some(uid)) = (it.next(), it.next(), it.next()) {
                    idx.pods
                        .insert(uid.to_string(), (ns.to_string(), pod.to_string()));
                }
            }
        }
        if let Ok(rd) = fs::read_dir(host_root.join("var/log/containers")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let Some(stem) = n.strip_suffix(".log") else {
                    continue;
                };
                let Some((rest, id)) = stem.rsplit_once('-') else {
                    continue;
                };
                let mut it = rest.splitn(3, '_');
                if let (Some(pod), Some(ns), Some(c)) = (it.next(), it.next(), it.next()) {
                    idx.logs.insert(
                        id.to_string(),
                        (pod.to_string(), ns.to_string(), c.to_string()),
                    );
                }
            }
        }
        idx
    }

    fn lookup(&self, host_root: &Path, ident: &PathIdentity) -> Meta {
        let mut m = Meta::default();
        let id = &ident.id;
        if let Some(uid) = &ident.pod_uid {
            if let Some((ns, pod)) = self.pods.get(uid) {
                m.namespace.clone_from(ns);
                m.pod.clone_from(pod);
            }
            if let Some((pod, ns, c)) = self.logs.get(id) {
                m.pod.clone_from(pod);
                m.namespace.clone_from(ns);
                m.container.clone_from(c);
            }
        }
        let docker = host_root.join(format!("var/lib/docker/containers/{id}/config.v2.json"));
        if let Ok(text) = fs::read_to_string(&docker)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            if let Some(n) = v.get("Name").and_then(|n| n.as_str()) {
                m.name = n.trim_start_matches('/').to_string();
            }
            if let Some(i) = v.pointer("/Config/Image").and_then(|n| n.as_str()) {
                m.image = i.to_string();
            }
        }
        if let Some((n, i)) = self.podman.get(id) {
            if m.name.is_empty() {
                m.name.clone_from(n);
            }
            if m.image.is_empty() {
                m.image.clone_from(i);
            }
        }
        m
    }
}

/// Podman's `containers.json`: id → (name, image name).
fn podman_index(host_root: &Path) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    let path = host_root.join("var/lib/containers/storage/overlay-containers/containers.json");
    let Ok(text) = fs::read_to_string(path) else {
        return out;
    };
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return out;
    };
    for c in list {
        let Some(id) = c.get("id").and_then(|v| v.as_str()) else {
            continue;
        };
        let mut name = c
            .pointer("/names/0")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let mut image = String::new();
        if let Some(md) = c.get("metadata").and_then(|v| v.as_str())
            && let Ok(md) = serde_json::from_str::<serde_json::Value>(md)
        {
            if let Some(i) = md.get("image-name").and_then(|v| v.as_str()) {
                image = i.to_string();
            }
            if name.is_empty()
                && let Some(n) = md.get("name").and_then(|v| v.as_str())
            {
                name = n.to_string();
            }
        }
        out.insert(id.to_string(), (name, image));
    }
    out
}

const LABELS: [&str; 6] = ["id", "name", "image", "namespace", "pod", "container"];

const SPECS: &[(&str, &str, MetricKind)] = &[
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
mod fam {
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

struct Families {
    f: Vec<MetricFamily>,
}

impl Families {
    fn new(capacity: usize) -> Self {
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

/// The files read in a v2 cgroup, in one directory.
const V2_FILES: [&str; 14] = [
    "cpu.stat",
    "cpu.max",
    "cpu.weight",
    "memory.current",
    "memory.max",
    "memory.swap.current",
    "memory.stat",
    "memory.events",
    "pids.current",
    "cgroup.procs",
    "io.stat",
    "cpu.pressure",
    "memory.pressure",
    "io.pressure",
];

mod v2f {
    pub const CPU_STAT: usize = 0;
    pub const CPU_MAX: usize = 1;
    pub const CPU_WEIGHT: usize = 2;
    pub const MEM_CURRENT: usize = 3;
    pub const MEM_MAX: usize = 4;
    pub const MEM_SWAP: usize = 5;
    pub const MEM_STAT: usize = 6;
    pub const MEM_EVENTS: usize = 7;
    pub const PIDS: usize = 8;
    pub const PROCS: usize = 9;
    pub const IO: usize = 10;
    /// + resource (cpu, memory, io)
    pub const PSI: usize = 11;
}

/// v1 controllers a cgroup's files live in; `TASKS` is the pids hierarchy,
/// else cpu, else memory (where `cgroup.procs` and `tasks` are read).
mod ctl {
    pub const CPUACCT: usize = 0;
    pub const CPU: usize = 1;
    pub const MEMORY: usize = 2;
    pub const BLKIO: usize = 3;
    pub const TASKS: usize = 4;
    pub const NAMES: [&str; 4] = ["cpuacct", "cpu", "memory", "blkio"];
}

/// The files read in a v1 cgroup: (controller, file).
const V1_FILES: [(usize, &str); 18] = [
    (ctl::CPUACCT, "cpuacct.usage"),
    (ctl::CPUACCT, "cpuacct.stat"),
    (ctl::CPU, "cpu.shares"),
    (ctl::CPU, "cpu.cfs_period_us"),
    (ctl::CPU, "cpu.cfs_quota_us"),
    (ctl::CPU, "cpu.stat"),
    (ctl::CPU, "cpu.pressure"),
    (ctl::CPU, "memory.pressure"),
    (ctl::CPU, "io.pressure"),
    (ctl::MEMORY, "memory.usage_in_bytes"),
    (ctl::MEMORY, "memory.stat"),
    (ctl::MEMORY, "memory.failcnt"),
    (ctl::MEMORY, "memory.limit_in_bytes"),
    (ctl::MEMORY, "memory.oom_control"),
    (ctl::TASKS, "cgroup.procs"),
    (ctl::TASKS, "tasks"),
    (ctl::BLKIO, "blkio.throttle.io_service_bytes"),
    (ctl::BLKIO, "blkio.throttle.io_serviced"),
];

mod v1f {
    pub const USAGE: usize = 0;
    pub const ACCT_STAT: usize = 1;
    pub const SHARES: usize = 2;
    pub const PERIOD: usize = 3;
    pub const QUOTA: usize = 4;
    pub const CPU_STAT: usize = 5;
    /// + resource (cpu, memory, io)
    pub const PSI: usize = 6;
    pub const MEM_USAGE: usize = 9;
    pub const MEM_STAT: usize = 10;
    pub const FAILCNT: usize = 11;
    pub const LIMIT: usize = 12;
    pub const OOM_CONTROL: usize = 13;
    pub const PROCS: usize = 14;
    pub const TASKS: usize = 15;
    pub const BLKIO_BYTES: usize = 16;
    pub const BLKIO_OPS: usize = 17;
}

/// What is known of one file of a cgroup. Files are opened once and read
/// with `pread` at offset 0 every scrape (cgroupfs regenerates the text), so
/// a figure costs one system call; past the open-file budget a file is
/// opened and closed at every read instead.
enum Slot {
    Unknown,
    Absent,
    Open(fs::File),
    Closed,
}

/// One cgroup being reported (a container, or the root `/`).
struct Cg {
    rel: String,
    ident: Option<PathIdentity>,
    meta: Meta,
    labels: LabelSet,
    info: Option<LabelSet>,
    /// Directory per controller (v2: one).
    dirs: Vec<Option<PathBuf>>,
    names: &'static [(usize, &'static str)],
    files: Vec<Slot>,
    start_time: Option<f64>,
    /// Scrape number when first seen (metadata lookups are retried early on).
    found_at: u64,
    /// Files whose last figures are still current (bit per file index):
    /// files that change only by a write or with a kernel notification,
    /// re-read when inotify reports them modified.
    fresh: u32,
    cached: Vec<Option<[Option<f64>; 2]>>,
    /// Files with an inotify watch of their own (bit per file index): read
    /// through [`Ctx::watched`], cached, not held open.
    watchable: u32,
}

/// `(dir, file)` of the v2 files (all in directory 0).
static V2_NAMES: std::sync::LazyLock<Vec<(usize, &'static str)>> =
    std::sync::LazyLock::new(|| V2_FILES.iter().map(|f| (0, *f)).collect());

fn labels_of(rel: &str, m: &Meta) -> LabelSet {
    label_set([
        (LABELS[0], rel),
        (LABELS[1], m.name.as_str()),
        (LABELS[2], m.image.as_str()),
        (LABELS[3], m.namespace.as_str()),
        (LABELS[4], m.pod.as_str()),
        (LABELS[5], m.container.as_str()),
    ])
}

fn info_of(rel: &str, ident: &PathIdentity, labels: &LabelSet) -> LabelSet {
    let mut l: Vec<(String, String)> = labels.to_vec();
    l.push(("runtime".into(), runtime_of(rel).into()));
    l.push(("container_id".into(), ident.id.clone()));
    l.push(("pod_uid".into(), ident.pod_uid.clone().unwrap_or_default()));
    l.push(("qos".into(), qos_of(rel).into()));
    l.into()
}

impl Cg {
    fn new(
        h: &Hierarchies,
        v2: bool,
        rel: &str,
        ident: Option<PathIdentity>,
        meta: Meta,
        now: u64,
    ) -> Self {
        let labels = labels_of(rel, &meta);
        let info = ident.as_ref().map(|i| info_of(rel, i, &labels));
        let (names, n): (&'static [(usize, &'static str)], usize) = if v2 {
            (V2_NAMES.as_slice(), V2_FILES.len())
        } else {
            (&V1_FILES, V1_FILES.len())
        };
        let mut cg = Cg {
            rel: rel.to_string(),
            ident,
            meta,
            labels,
            info,
            dirs: Vec::new(),
            names,
            files: (0..n).map(|_| Slot::Unknown).collect(),
            start_time: None,
            found_at: now,
            fresh: 0,
            cached: vec![None; n],
            watchable: 0,
        };
        cg.locate(h, v2);
        cg.start_time = cg
            .dirs
            .iter()
            .flatten()
            .find_map(|d| fs::metadata(d).and_then(|m| m.modified()).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        cg
    }

    /// Finds the cgroup's directory in each hierarchy.
    fn locate(&mut self, h: &Hierarchies, v2: bool) {
        let r = self.rel.trim_start_matches('/');
        self.dirs = if v2 {
            vec![h.v2.as_ref().map(|m| m.join(r)).filter(|d| d.is_dir())]
        } else {
            let ctrl = |c: &str| h.v1.get(c).map(|m| m.join(r)).filter(|d| d.is_dir());
            let mut d: Vec<Option<PathBuf>> = ctl::NAMES.iter().map(|c| ctrl(c)).collect();
            d.push(
                ctrl("pids")
                    .or_else(|| d[ctl::CPU].clone())
                    .or_else(|| d[ctl::MEMORY].clone()),
            );
            d
        };
    }

    fn path(&self, i: usize) -> PathBuf {
        let (d, name) = self.names[i];
        match &self.dirs[d] {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// The files that change only when written or notified: limits, and
    /// `memory.events`.
    fn watch_list(&self) -> &'static [usize] {
        if self.names.len() == V2_FILES.len() {
            &[v2f::CPU_MAX, v2f::CPU_WEIGHT, v2f::MEM_MAX, v2f::MEM_EVENTS]
        } else {
            &[v1f::SHARES, v1f::PERIOD, v1f::QUOTA, v1f::LIMIT]
        }
    }

    /// Puts a watch on each file of [`Cg::watch_list`] that has none yet.
    fn watch(&mut self, tree: &mut discover::Tree) {
        for &i in self.watch_list() {
            let bit = 1u32 << i;
            if self.watchable & bit != 0 || self.dirs[self.names[i].0].is_none() {
                continue;
            }
            if tree.watch_file(&self.path(i), &self.rel, self.names[i].1) {
                self.watchable |= bit;
            }
        }
    }

    fn open_files(&self) -> usize {
        self.files
            .iter()
            .filter(|s| matches!(s, Slot::Open(_)))
            .count()
    }
}

/// The scrape-wide read buffer and the open-file budget.
struct FileIo {
    buf: Vec<u8>,
    open: usize,
    max_open: usize,
}

/// Reads all of `f` from offset 0 into `buf` (kept at its full length, so
/// nothing is zeroed per read); returns the length read. Also used for
/// `/proc/<pid>/stat` (the process reader).
pub(crate) fn pread_all(f: &fs::File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize((buf.len() * 2).max(16 * 1024), 0);
        }
        let n = f.read_at(&mut buf[len..], len as u64)?;
        len += n;
        // A short read is the end: these files are regenerated whole per read.
        if n == 0 || len < buf.len() {
            return Ok(len);
        }
    }
}

/// Opens a file for reading without updating its access time (a scrape
/// reads every file; cgroupfs has no atime, fixture trees and bind mounts
/// may). Falls back to a plain open where `O_NOATIME` is not allowed.
fn open_noatime(p: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(p)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fs::File::open(p),
        r => r,
    }
}

/// The soft limit on open files, raised to the hard limit first (as the Go
/// runtime does for node_exporter and cAdvisor).
fn raise_nofile() -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let (cur, max) = (
        lim.current.unwrap_or(u64::MAX),
        lim.maximum.unwrap_or(u64::MAX),
    );
    let got = if cur < max
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        )
        .is_ok()
    {
        max
    } else {
        cur
    };
    usize::try_from(got).unwrap_or(usize::MAX)
}

/// File descriptors kept for other work (log files, sockets, the disk buffer).
const FD_RESERVE: usize = 2048;
/// The default of `--cgroup-open-files`.
pub const DEFAULT_OPEN_FILES: usize = 16_384;

/// Reading one cgroup: its files, the families it adds to, its errors.
struct Ctx<'a> {
    cg: &'a mut Cg,
    io: &'a mut FileIo,
    fam: &'a mut Families,
    errors: &'a mut Vec<ParseError>,
    /// The node has no swap (`/proc/swaps` lists none): swap usage is 0
    /// without reading `memory.swap.current`.
    swap_off: bool,
}

impl Ctx<'_> {
    /// Parses file `i` with `f`: `None` when the file does not exist, or
    /// could not be read or parsed (an error is recorded).
    fn parse<T>(&mut self, i: usize, f: impl FnOnce(&[u8]) -> Result<T, String>) -> Option<T> {
        let res = match &self.cg.files[i] {
            Slot::Absent => return None,
            Slot::Open(file) => pread_all(file, &mut self.io.buf),
            Slot::Unknown | Slot::Closed => {
                let (d, name) = self.cg.names[i];
                let Some(dir) = &self.cg.dirs[d] else {
                    self.cg.files[i] = Slot::Absent;
                    return None;
                };
                match open_noatime(&dir.join(name)) {
                    Ok(file) => {
                        let r = pread_all(&file, &mut self.io.buf);
                        if matches!(self.cg.files[i], Slot::Unknown) {
                            // files re-read only when written need no handle
                            let rare = self.cg.watchable & (1u32 << i) != 0;
                            self.cg.files[i] = if self.io.open < self.io.max_open && !rare {
                                self.io.open += 1;
                                Slot::Open(file)
                            } else {
                                Slot::Closed
                            };
                        }
                        r
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && matches!(self.cg.files[i], Slot::Unknown) =>
                    {
                        self.cg.files[i] = Slot::Absent;
                        return None;
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match res {
            Ok(len) => match f(&self.io.buf[..len]) {
                Ok(v) => Some(v),
                Err(m) => {
                    self.errors.push(ParseError::msg(&self.cg.path(i), m));
                    None
                }
            },
            Err(e) => {
                // a held handle that fails is dropped: the next read opens afresh
                if matches!(self.cg.files[i], Slot::Open(_)) {
                    self.cg.files[i] = Slot::Unknown;
                    self.io.open -= 1;
                }
                self.errors.push(ParseError::io(&self.cg.path(i), e));
                None
            }
        }
    }

    /// Like [`Ctx::parse`], for a file that changes only when written (a
    /// limit) or with a kernel notification (`memory.events`): while the
    /// tree is watched, it is read again only after a change was reported.
    fn watched(
        &mut self,
        i: usize,
        f: impl FnOnce(&[u8]) -> Result<[Option<f64>; 2], String>,
    ) -> Option<[Option<f64>; 2]> {
        let bit = 1u32 << i;
        if self.cg.fresh & bit != 0 {
            return self.cg.cached[i];
        }
        let errors = self.errors.len();
        let v = self.parse(i, f);
        if self.cg.watchable & bit != 0 && self.errors.len() == errors {
            self.cg.fresh |= bit;
            self.cg.cached[i] = v;
        }
        v
    }

    fn exists(&self, i: usize) -> bool {
        !matches!(self.cg.files[i], Slot::Absent)
    }

    fn set(&mut self, family: usize, v: f64) {
        self.fam.f[family].push_shared(&self.cg.labels, v);
    }

    fn opt(&mut self, family: usize, v: Option<f64>) {
        if let Some(v) = v {
            self.set(family, v);
        }
    }

    /// A figure a file must hold: its absence from a file that was read is an error.
    fn need(&mut self, i: usize, family: usize, v: Option<f64>, key: &str) {
        match v {
            Some(v) => self.set(family, v),
            None => self
                .errors
                .push(ParseError::msg(&self.cg.path(i), format!("no `{key}`"))),
        }
    }

    fn number(&mut self, i: usize) -> Option<f64> {
        self.parse(i, |t| parse::number(t))
    }

    fn psi(&mut self, first: usize) {
        for res in 0..3 {
            if let Some((some, full)) = self.parse(first + res, |t| parse::psi_totals(t)) {
                self.opt(fam::PSI + 2 * res, some.map(|v| v / 1e6));
                self.opt(fam::PSI + 2 * res + 1, full.map(|v| v / 1e6));
            }
        }
    }
}

/// A number file, in the shape [`Ctx::watched`] caches.
fn one_number(t: &[u8]) -> Result<[Option<f64>; 2], String> {
    parse::number(t).map(|v| [Some(v), None])
}

fn read_v2(c: &mut Ctx<'_>, is_root: bool) {
    use v2f::*;
    let cpu = c.parse(CPU_STAT, |t| {
        parse::pick(
            t,
            [
                "usage_usec",
                "user_usec",
                "system_usec",
                "nr_periods",
                "nr_throttled",
                "throttled_usec",
            ],
        )
    });
    if let Some([usage, user, system, ..]) = cpu {
        c.need(
            CPU_STAT,
            fam::CPU_USAGE,
            usage.map(|v| v / 1e6),
            "usage_usec",
        );
        c.need(CPU_STAT, fam::CPU_USER, user.map(|v| v / 1e6), "user_usec");
        c.need(
            CPU_STAT,
            fam::CPU_SYSTEM,
            system.map(|v| v / 1e6),
            "system_usec",
        );
    }
    if !is_root {
        match c.watched(CPU_MAX, |t| parse::cpu_max(t).map(|(q, p)| [q, Some(p)])) {
            Some([Some(quota), Some(period)]) => {
                c.set(fam::SPEC_CPU_QUOTA, quota);
                c.set(fam::SPEC_CPU_PERIOD, period);
                // throttling figures only where a quota is set
                if let Some([_, _, _, periods, throttled, throttled_usec]) = cpu {
                    c.need(CPU_STAT, fam::CFS_PERIODS, periods, "nr_periods");
                    c.need(
                        CPU_STAT,
                        fam::CFS_THROTTLED_PERIODS,
                        throttled,
                        "nr_throttled",
                    );
                    c.need(
                        CPU_STAT,
                        fam::CFS_THROTTLED_SECONDS,
                        throttled_usec.map(|v| v / 1e6),
                        "throttled_usec",
                    );
                }
            }
            Some([None, Some(period)]) => c.set(fam::SPEC_CPU_PERIOD, period),
            _ => {}
        }
        // cAdvisor converts weight back to v1 shares.
        let shares = c
            .watched(CPU_WEIGHT, one_number)
            .and_then(|[w, _]| w)
            .map(|w| (2.0 + ((w - 1.0) * 262142.0) / 9999.0).floor());
        c.opt(fam::SPEC_CPU_SHARES, shares);
    }
    let stat = c.parse(MEM_STAT, |t| {
        parse::pick(t, ["anon", "file", "file_mapped", "inactive_file"])
    });
    // older kernels have no memory.stat at the v2 root: no figures, no error
    if is_root && !c.exists(MEM_STAT) {
        c.psi(PSI);
        return;
    }
    let usage = if is_root {
        // The root has no memory.current; the sum of the stat figures stands in.
        match stat {
            Some([Some(anon), Some(file), ..]) => Some(anon + file),
            Some(_) => {
                c.need(MEM_STAT, fam::MEM_USAGE, None, "anon/file");
                None
            }
            None => None,
        }
    } else {
        c.number(MEM_CURRENT)
    };
    if let Some(u) = usage {
        c.set(fam::MEM_USAGE, u);
        if let Some([.., inactive]) = stat {
            c.need(
                MEM_STAT,
                fam::MEM_WORKING_SET,
                inactive.map(|i| (u - i).max(0.0)),
                "inactive_file",
            );
        }
    }
    if let Some([anon, file, mapped, _]) = stat {
        c.need(MEM_STAT, fam::MEM_RSS, anon, "anon");
        c.need(MEM_STAT, fam::MEM_CACHE, file, "file");
        c.need(MEM_STAT, fam::MEM_MAPPED, mapped, "file_mapped");
    }
    if !is_root {
        let swap = if c.swap_off {
            Some(0.0)
        } else {
            c.number(MEM_SWAP)
        };
        c.opt(fam::MEM_SWAP, swap);
        let limit = c.watched(MEM_MAX, |t| {
            if t.trim_ascii() == b"max" {
                Ok([Some(0.0), None])
            } else {
                one_number(t)
            }
        });
        c.opt(fam::SPEC_MEM_LIMIT, limit.and_then(|[l, _]| l));
        if let Some([max, oom_kill]) =
            c.watched(MEM_EVENTS, |t| parse::pick(t, ["max", "oom_kill"]))
        {
            c.need(MEM_EVENTS, fam::MEM_FAILCNT, max, "max");
            c.need(MEM_EVENTS, fam::OOM_EVENTS, oom_kill, "oom_kill");
        }
        let threads = c.number(PIDS);
        c.opt(fam::THREADS, threads);
    }
    if let Some(io) = c.parse(IO, |t| parse::io_stat(t)) {
        for (k, v) in io.into_iter().enumerate() {
            c.set(fam::FS + k, v);
        }
    }
    c.psi(PSI);
}

fn read_v1(c: &mut Ctx<'_>, is_root: bool) {
    use v1f::*;
    let usage = c.number(USAGE).map(|v| v / 1e9);
    c.opt(fam::CPU_USAGE, usage);
    // USER_HZ ticks; 100 on every Linux we ship to.
    if let Some([user, system]) = c.parse(ACCT_STAT, |t| parse::pick(t, ["user", "system"])) {
        c.need(ACCT_STAT, fam::CPU_USER, user.map(|v| v / 100.0), "user");
        c.need(
            ACCT_STAT,
            fam::CPU_SYSTEM,
            system.map(|v| v / 100.0),
            "system",
        );
    }
    if !is_root {
        let shares = c.watched(SHARES, one_number).and_then(|[v, _]| v);
        c.opt(fam::SPEC_CPU_SHARES, shares);
        let period = c.watched(PERIOD, one_number).and_then(|[v, _]| v);
        c.opt(fam::SPEC_CPU_PERIOD, period);
        if let Some([Some(q), _]) = c.watched(QUOTA, one_number)
            && q >= 0.0
        {
            c.set(fam::SPEC_CPU_QUOTA, q);
            let keys = ["nr_periods", "nr_throttled", "throttled_time"];
            if let Some([p, t, tt]) = c.parse(CPU_STAT, |s| parse::pick(s, keys)) {
                c.need(CPU_STAT, fam::CFS_PERIODS, p, keys[0]);
                c.need(CPU_STAT, fam::CFS_THROTTLED_PERIODS, t, keys[1]);
                c.need(
                    CPU_STAT,
                    fam::CFS_THROTTLED_SECONDS,
                    tt.map(|v| v / 1e9),
                    keys[2],
                );
            }
        }
    }
    c.psi(PSI);
    let usage = c.number(MEM_USAGE);
    let keys = [
        "total_inactive_file",
        "total_rss",
        "total_cache",
        "total_mapped_file",
        "total_swap",
    ];
    let stat = c.parse(MEM_STAT, |t| parse::pick(t, keys));
    if let Some(u) = usage {
        c.set(fam::MEM_USAGE, u);
        if let Some([inactive, ..]) = stat {
            c.need(
                MEM_STAT,
                fam::MEM_WORKING_SET,
                inactive.map(|i| (u - i).max(0.0)),
                keys[0],
            );
        }
    }
    if let Some([_, rss, cache, mapped, swap]) = stat {
        c.need(MEM_STAT, fam::MEM_RSS, rss, keys[1]);
        c.need(MEM_STAT, fam::MEM_CACHE, cache, keys[2]);
        c.need(MEM_STAT, fam::MEM_MAPPED, mapped, keys[3]);
        c.opt(fam::MEM_SWAP, swap);
    }
    let failcnt = c.number(FAILCNT);
    c.opt(fam::MEM_FAILCNT, failcnt);
    if !is_root {
        // The kernel reports "no limit" as a huge page-aligned number.
        let limit = c
            .watched(LIMIT, one_number)
            .and_then(|[l, _]| l)
            .map(|l| if l >= 9.0e18 { 0.0 } else { l });
        c.opt(fam::SPEC_MEM_LIMIT, limit);
    }
    if let Some([kills]) = c.parse(OOM_CONTROL, |t| parse::pick(t, ["oom_kill"])) {
        c.opt(fam::OOM_EVENTS, kills);
    }
    if !is_root {
        let threads = c.parse(TASKS, |t| Ok(parse::count_lines(t) as f64));
        c.opt(fam::THREADS, threads);
    }
    for (file, family) in [(BLKIO_BYTES, fam::FS), (BLKIO_OPS, fam::FS + 2)] {
        if let Some((r, w)) = c.parse(file, |t| parse::blkio(t)) {
            c.set(family, r);
            c.set(family + 1, w);
        }
    }
}

/// Hierarchies are re-read from mountinfo this often (in scrapes): cgroup
/// mounts do not change on a running node, and mountinfo is large on a
/// container host.
const REMOUNT_EVERY: u64 = 60;
/// Files found absent are looked for again this often (in scrapes): a
/// controller enabled after the cgroup was made brings its files late.
const REPROBE_EVERY: u64 = 30;

/// Reads container cgroups each scrape. Keeps per cgroup its label sets, its
/// metadata and its files open between scrapes; forgets all of it when the
/// cgroup goes.
pub struct CgroupReader {
    host_root: PathBuf,
    hier: Option<(Hierarchies, bool, discover::Tree)>,
    containers: BTreeMap<String, Cg>,
    io: FileIo,
    scrapes: u64,
    /// The tree's full walks when last synced: a walk may have missed writes.
    walks_seen: u64,
    kmsg: kmsg::Kmsg,
    /// OOM kills from the kernel log per workload (name, namespace, pod,
    /// container — or the cgroup path when none is known): unlike the
    /// cgroup's own counter, it survives the container being recreated.
    oom_kills: BTreeMap<[String; 4], u64>,
}

impl CgroupReader {
    pub fn new(host_root: &Path) -> Self {
        Self::with_open_files(host_root, DEFAULT_OPEN_FILES)
    }

    /// A reader that holds at most `max_open` cgroup files open (also capped
    /// by the open-file limit, which it raises to the hard limit).
    pub fn with_open_files(host_root: &Path, max_open: usize) -> Self {
        let limit = raise_nofile();
        CgroupReader {
            host_root: host_root.to_path_buf(),
            hier: None,
            containers: BTreeMap::new(),
            io: FileIo {
                buf: vec![0; 16 * 1024],
                open: 0,
                max_open: limit.saturating_sub(FD_RESERVE).min(max_open),
            },
            scrapes: 0,
            walks_seen: 0,
            oom_kills: BTreeMap::new(),
            kmsg: kmsg::Kmsg::open(host_root).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no kernel log: OOM kills of vanished containers are not reported");
                kmsg::Kmsg::none()
            }),
        }
    }

    /// The container labels (`id`, `name`, `image`, `namespace`, `pod`,
    /// `container`) of a cgroup path, as the last scrape named it; `None`
    /// when the path holds no container id.
    pub fn labels_for(&self, path: &str) -> Option<LabelSet> {
        if let Some(cg) = self.containers.get(path) {
            return cg.ident.as_ref().map(|_| cg.labels.clone());
        }
        identify(path)?;
        Some(labels_of(path, &Meta::default()))
    }

    /// Containers currently tracked (for tests of cache eviction).
    pub fn cached(&self) -> usize {
        self.containers
            .values()
            .filter(|c| c.ident.is_some())
            .count()
    }

    /// Cgroup files held open between scrapes.
    pub fn open_files(&self) -> usize {
        self.io.open
    }

    /// The most cgroup files held open.
    pub fn open_files_limit(&self) -> usize {
        self.io.max_open
    }

    /// Discovery state: (inotify watches, full walks so far, why degraded).
    pub fn discovery(&self) -> (usize, u64, Option<String>) {
        match &self.hier {
            Some((_, _, t)) => (t.watches(), t.walks, t.degraded.clone()),
            None => (0, 0, None),
        }
    }

    fn meta_of(&self, id: &str) -> Meta {
        self.containers
            .values()
            .find(|c| c.ident.as_ref().is_some_and(|i| i.id == id))
            .map(|c| c.meta.clone())
            .unwrap_or_default()
    }

    fn drain_kmsg(&mut self, scrape: &mut Scrape, errors: &mut Vec<ParseError>) {
        let kills = match self.kmsg.drain() {
            Ok(k) => k,
            Err(e) => {
                errors.push(ParseError::io(&self.host_root.join("dev/kmsg"), e));
                return;
            }
        };
        for k in kills {
            let m = identify(&k.task_memcg)
                .map(|i| self.meta_of(&i.id))
                .unwrap_or_default();
            let key = if m.name.is_empty() && m.pod.is_empty() {
                [
                    k.task_memcg.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]
            } else {
                [
                    m.name.clone(),
                    m.namespace.clone(),
                    m.pod.clone(),
                    m.container.clone(),
                ]
            };
            *self.oom_kills.entry(key).or_insert(0) += 1;
            scrape.events.push(crate::model::Event {
                timestamp_ms: scrape.timestamp_ms,
                kind: "oom_kill".into(),
                subject: [
                    ("id", k.task_memcg),
                    ("name", m.name),
                    ("image", m.image),
                    ("namespace", m.namespace),
                    ("pod", m.pod),
                    ("container", m.container),
                ]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b))
                .collect(),
                attributes: vec![("task".into(), k.task), ("pid".into(), k.pid)],
            });
        }
    }

    fn forget_all(&mut self) {
        for cg in std::mem::take(&mut self.containers).into_values() {
            self.io.open -= cg.open_files();
        }
    }

    /// Re-reads mountinfo when due; `Err` when no hierarchy is known.
    fn hierarchies(&mut self) -> Result<(), ParseError> {
        if self.hier.is_some() && !self.scrapes.is_multiple_of(REMOUNT_EVERY) {
            return Ok(());
        }
        let h = match Hierarchies::discover(&self.host_root) {
            Ok(h) => h,
            Err(e) if self.hier.is_none() => return Err(e),
            Err(_) => return Ok(()),
        };
        if self.hier.as_ref().is_some_and(|(old, _, _)| *old == h) {
            return Ok(());
        }
        let v2 = h.is_v2();
        let roots: Vec<PathBuf> = if v2 {
            h.v2.iter().cloned().collect()
        } else {
            ["memory", "cpuacct", "cpu", "pids", "blkio"]
                .iter()
                .filter_map(|c| h.v1.get(*c).cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        self.forget_all();
        self.hier = Some((h, v2, discover::Tree::new(roots)));
        Ok(())
    }

    /// Brings the tracked cgroups in line with the tree: drops the gone ones
    /// (closing their files), adds the new ones (naming them).
    fn sync(&mut self) {
        let Some((h, v2, tree)) = &mut self.hier else {
            return;
        };
        let changed = tree.refresh();
        // a cgroup removed and made again between two scrapes: new files
        for rel in tree.take_recreated() {
            if let Some(cg) = self.containers.remove(&rel) {
                self.io.open -= cg.open_files();
            }
        }
        for (rel, name) in tree.take_modified() {
            if let Some(cg) = self.containers.get_mut(&rel)
                && let Some(i) = cg.names.iter().position(|(_, n)| *n == name)
            {
                cg.fresh &= !(1u32 << i);
            }
        }
        if tree.walks != self.walks_seen {
            // a new inotify instance: every file watch is gone
            self.walks_seen = tree.walks;
            for cg in self.containers.values_mut() {
                cg.fresh = 0;
                cg.watchable = 0;
                cg.watch(tree);
            }
        }
        let paths = tree.paths();
        if changed {
            let gone: Vec<String> = self
                .containers
                .keys()
                .filter(|k| !paths.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                if let Some(cg) = self.containers.remove(&k) {
                    self.io.open -= cg.open_files();
                }
            }
            let new: Vec<String> = paths
                .iter()
                .filter(|rel| !self.containers.contains_key(*rel))
                .cloned()
                .collect();
            let mut idx: Option<MetaIndex> = None;
            for rel in new {
                let ident = identify(&rel);
                if ident.is_none() && rel != "/" {
                    continue;
                }
                let meta = match &ident {
                    Some(i) => idx
                        .get_or_insert_with(|| MetaIndex::build(&self.host_root))
                        .lookup(&self.host_root, i),
                    None => Meta::default(),
                };
                let mut cg = Cg::new(h, *v2, &rel, ident, meta, self.scrapes);
                cg.watch(tree);
                self.containers.insert(rel, cg);
            }
        }
        // Metadata may be written after the cgroup (the kubelet's log link,
        // the runtime's config): unnamed containers are looked up again
        // 1, 2, 4, … 32 scrapes after they were found.
        let mut idx: Option<MetaIndex> = None;
        for cg in self.containers.values_mut() {
            let age = self.scrapes - cg.found_at;
            let unnamed = cg.meta.name.is_empty() && cg.meta.container.is_empty();
            if let Some(ident) = &cg.ident
                && unnamed
                && age.is_power_of_two()
                && age <= 32
            {
                let m = idx
                    .get_or_insert_with(|| MetaIndex::build(&self.host_root))
                    .lookup(&self.host_root, ident);
                if m != cg.meta {
                    cg.labels = labels_of(&cg.rel, &m);
                    cg.info = Some(info_of(&cg.rel, ident, &cg.labels));
                    cg.meta = m;
                }
            }
            if self.scrapes.is_multiple_of(REPROBE_EVERY)
                && (cg.dirs.iter().any(Option::is_none)
                    || cg.files.iter().any(|s| matches!(s, Slot::Absent)))
            {
                cg.locate(h, *v2);
                for s in &mut cg.files {
                    if matches!(s, Slot::Absent) {
                        *s = Slot::Unknown;
                    }
                }
                cg.watch(tree);
            }
        }
    }

    /// One pass over the tracked cgroups; returns the errors met (never panics).
    pub fn scrape(&mut self, scrape: &mut Scrape) -> Vec<ParseError> {
        self.scrapes += 1;
        let mut errors = Vec::new();
        // Before the walk, so a container that died of it is still known.
        self.drain_kmsg(scrape, &mut errors);
        if let Err(e) = self.hierarchies() {
            errors.push(e);
            return errors;
        }
        self.sync();
        let Some((h, v2, _)) = &self.hier else {
            return errors;
        };
        let v2 = *v2;
        let roots: Vec<&PathBuf> = if v2 {
            h.v2.iter().collect()
        } else {
            h.v1.values().collect()
        };
        let mut fam = Families::new(self.containers.len());
        let proc = self.host_root.join("proc");
        // Kubernetes nodes run without swap by default (the kubelet refuses
        // swap unless told otherwise).
        let swap_off = fs::read(proc.join("swaps"))
            .is_ok_and(|t| parse::count_lines(&t) == 1 && t.starts_with(b"Filename"));
        let host_netns = netfd::netns(&proc, 1);
        let mut seen_netns = HashSet::new();
        let now = scrape.timestamp_ms as f64 / 1000.0;
        for cg in self.containers.values_mut() {
            let errors_before = errors.len();
            let is_root = cg.rel == "/";
            let mut c = Ctx {
                cg,
                io: &mut self.io,
                fam: &mut fam,
                errors: &mut errors,
                swap_off,
            };
            if v2 {
                read_v2(&mut c, is_root);
            } else {
                read_v1(&mut c, is_root);
            }
            if let Some(t) = c.cg.start_time {
                c.set(fam::START, t);
            }
            c.set(fam::LAST_SEEN, now);
            if let Some(info) = &c.cg.info {
                c.fam.f[fam::INFO].push_shared(info, 1.0);
            }
            // /proc side: open fds, and network once per namespace
            if !is_root {
                let procs = if v2 { v2f::PROCS } else { v1f::PROCS };
                if let Some(pids) = c.parse(procs, |t| Ok(parse::pids(t))) {
                    c.set(fam::PROCESSES, pids.len() as f64);
                    if !pids.is_empty() {
                        c.set(fam::FDS, netfd::count_fds(&proc, &pids));
                        if let Some(ns) = netfd::netns(&proc, pids[0])
                            && Some(&ns) != host_netns.as_ref()
                            && seen_netns.insert(ns)
                        {
                            read_net(&mut c, &proc, pids[0]);
                        }
                    }
                }
            }
            // A container that exited mid-read is not an error: its files went with it.
            if c.errors.len() > errors_before
                && !is_root
                && !roots
                    .iter()
                    .any(|r| r.join(c.cg.rel.trim_start_matches('/')).is_dir())
            {
                c.errors.truncate(errors_before);
            }
        }
        scrape.families.extend(fam.f);
        self.push_oom_kills(scrape);
        errors
    }

    /// Only the OOM kills logged since the last call: the events and the
    /// per-workload counter, without reading any cgroup.
    pub fn drain_events(&mut self, scrape: &mut Scrape) -> Vec<ParseError> {
        let mut errors = Vec::new();
        self.drain_kmsg(scrape, &mut errors);
        self.push_oom_kills(scrape);
        errors
    }

    fn push_oom_kills(&self, scrape: &mut Scrape) {
        if !self.oom_kills.is_empty() {
            let mut f = MetricFamily::new(
                "vigil_container_oom_kills_total",
                "OOM kills from the kernel log per workload (name, or namespace/pod/container); does not reset when the container is recreated. `name` holds the cgroup path when the container was unknown.",
                MetricKind::Counter,
            );
            for ([name, namespace, pod, container], n) in &self.oom_kills {
                f.push(
                    [
                        ("name", name.as_str()),
                        ("namespace", namespace.as_str()),
                        ("pod", pod.as_str()),
                        ("container", container.as_str()),
                    ],
                    *n as f64,
                );
            }
            scrape.families.push(f);
        }
    }
}

/// Network counters of a container's namespace, read through one of its
/// processes; a pod's containers share it, so the figures are attributed to
/// the pod (its cgroup as `id`, no `name`/`container`).
fn read_net(c: &mut Ctx<'_>, proc: &Path, pid: u32) {
    let net_dev = proc.join(pid.to_string()).join("net/dev");
    let text = match fs::read(&net_dev) {
        Ok(t) => t,
        Err(e) => {
            c.errors.push(ParseError::io(&net_dev, e));
            return;
        }
    };
    let ifaces = match netfd::parse_net_dev(&String::from_utf8_lossy(&text)) {
        Ok(i) => i,
        Err(m) => {
            c.errors.push(ParseError::msg(&net_dev, m));
            return;
        }
    };
    let mut base: Vec<(String, String)> = c.cg.labels.to_vec();
    if !base[4].1.is_empty() {
        base[0].1 =
            c.cg.rel
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
        base[1].1.clear();
        base[5].1.clear();
    }
    for (iface, vals) in ifaces {
        let mut l = base.clone();
        l.push(("interface".into(), iface));
        let l: LabelSet = l.into();
        for (i, v) in vals.into_iter().enumerate() {
            c.fam.f[fam::NET + i].push_shared(&l, v);
        }
    }
}

#[cfg(test)]
mod tests;
