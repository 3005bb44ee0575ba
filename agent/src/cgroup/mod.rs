//! Container metrics from cgroups (cAdvisor's `container_*` names), read under
//! `--host-root`. Discovers the hierarchies from mountinfo (v1, v2, hybrid),
//! walks them every scrape, finds container ids in cgroup paths (Kubernetes
//! systemd/cgroupfs layouts, CRI-O, Docker, Podman) and names them from the
//! runtimes' on-disk metadata. Not here: node metrics (`node`), shipping.
//!
//! Only cgroups with a container id are reported, plus the root `/` for
//! machine totals. Nothing is kept for a cgroup that vanished; metadata is
//! cached per container id and dropped when the id is no longer seen.

pub mod kmsg;
pub mod netfd;
pub mod parse;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::model::{MetricFamily, MetricKind, Scrape};
use parse::{ParseError, flat_kv, io_stat, psi_totals};

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

fn lookup_meta(host_root: &Path, ident: &PathIdentity) -> Meta {
    let mut m = Meta::default();
    let id = &ident.id;
    if let Some(uid) = &ident.pod_uid {
        if let Ok(rd) = fs::read_dir(host_root.join("var/log/pods")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let mut it = n.splitn(3, '_');
                if let (Some(ns), Some(pod), Some(u)) = (it.next(), it.next(), it.next())
                    && u == uid
                {
                    m.namespace = ns.to_string();
                    m.pod = pod.to_string();
                }
            }
        }
        let suffix = format!("-{id}.log");
        if let Ok(rd) = fs::read_dir(host_root.join("var/log/containers")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(stem) = n.strip_suffix(&suffix) {
                    let mut it = stem.splitn(3, '_');
                    if let (Some(pod), Some(ns), Some(c)) = (it.next(), it.next(), it.next()) {
                        m.pod = pod.to_string();
                        m.namespace = ns.to_string();
                        m.container = c.to_string();
                    }
                }
            }
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
    m
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

/// Reads container cgroups each scrape; caches container metadata per id.
pub struct CgroupReader {
    host_root: PathBuf,
    meta: HashMap<String, Meta>,
    kmsg: kmsg::Kmsg,
    /// OOM kills from the kernel log per workload (name, namespace, pod,
    /// container — or the cgroup path when none is known): unlike the
    /// cgroup's own counter, it survives the container being recreated.
    oom_kills: std::collections::BTreeMap<[String; 4], u64>,
}

struct Families {
    f: Vec<MetricFamily>,
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

impl Families {
    fn new() -> Self {
        Families {
            f: SPECS
                .iter()
                .map(|(n, h, k)| MetricFamily::new(*n, *h, *k))
                .collect(),
        }
    }
    fn push(&mut self, name: &str, labels: &[(&'static str, String)], v: f64) {
        if let Some(f) = self.f.iter_mut().find(|f| f.name == name) {
            f.push(labels.iter().map(|(k, v)| (*k, v.clone())), v);
        }
    }
}

/// Collects the errors of one cgroup's reads without stopping.
struct Ctx<'a> {
    labels: Vec<(&'static str, String)>,
    fam: &'a mut Families,
    errors: &'a mut Vec<ParseError>,
}

impl Ctx<'_> {
    fn put(&mut self, name: &str, r: Result<f64, ParseError>) {
        match r {
            Ok(v) => self.fam.push(name, &self.labels, v),
            Err(e) => self.errors.push(e),
        }
    }
    fn set(&mut self, name: &str, v: f64) {
        self.fam.push(name, &self.labels, v);
    }
    fn err(&mut self, e: ParseError) {
        self.errors.push(e);
    }
}

fn read(p: &Path) -> Result<String, ParseError> {
    fs::read_to_string(p).map_err(|e| ParseError::io(p, e))
}

fn read_num(p: &Path) -> Result<f64, ParseError> {
    let t = read(p)?;
    parse::number(&t).map_err(|m| ParseError::msg(p, m))
}

fn exists(p: &Path) -> bool {
    p.exists()
}

fn count_lines(p: &Path) -> Result<f64, ParseError> {
    Ok(read(p)?.lines().filter(|l| !l.trim().is_empty()).count() as f64)
}

fn kv(p: &Path) -> Result<HashMap<String, f64>, ParseError> {
    let t = read(p)?;
    flat_kv(&t).map_err(|m| ParseError::msg(p, m))
}

fn get(map: &HashMap<String, f64>, p: &Path, k: &str) -> Result<f64, ParseError> {
    map.get(k)
        .copied()
        .ok_or_else(|| ParseError::msg(p, format!("no `{k}`")))
}

fn walk(root: &Path, rel: &str, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 32 {
        return;
    }
    let Ok(rd) = fs::read_dir(root.join(rel.trim_start_matches('/'))) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".mount") || name.starts_with("crio-conmon") {
            continue;
        }
        let child = if rel == "/" {
            format!("/{name}")
        } else {
            format!("{rel}/{name}")
        };
        out.insert(child.clone());
        walk(root, &child, out, depth + 1);
    }
}

impl CgroupReader {
    pub fn new(host_root: &Path) -> Self {
        CgroupReader {
            host_root: host_root.to_path_buf(),
            meta: HashMap::new(),
            oom_kills: std::collections::BTreeMap::new(),
            kmsg: kmsg::Kmsg::open(host_root).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no kernel log: OOM kills of vanished containers are not reported");
                kmsg::Kmsg::none()
            }),
        }
    }

    /// The container labels (`id`, `name`, `image`, `namespace`, `pod`,
    /// `container`) of a cgroup path, as the last scrape named it; `None`
    /// when the path holds no container id.
    pub fn labels_for(&self, path: &str) -> Option<Vec<(&'static str, String)>> {
        let ident = identify(path)?;
        let m = self.meta.get(&ident.id).cloned().unwrap_or_default();
        Some(vec![
            (LABELS[0], path.to_string()),
            (LABELS[1], m.name),
            (LABELS[2], m.image),
            (LABELS[3], m.namespace),
            (LABELS[4], m.pod),
            (LABELS[5], m.container),
        ])
    }

    /// Number of cached metadata entries (for tests of cache eviction).
    pub fn cached(&self) -> usize {
        self.meta.len()
    }

    /// One pass over the hierarchies; returns the errors met (never panics).
    pub fn scrape(&mut self, scrape: &mut Scrape) -> Vec<ParseError> {
        let mut errors = Vec::new();
        // Before the walk, so a container that died of it is still in the cache.
        match self.kmsg.drain() {
            Ok(kills) => {
                for k in kills {
                    let m = identify(&k.task_memcg)
                        .and_then(|i| self.meta.get(&i.id).cloned())
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
            Err(e) => errors.push(ParseError::io(&self.host_root.join("dev/kmsg"), e)),
        }
        let h = match Hierarchies::discover(&self.host_root) {
            Ok(h) => h,
            Err(e) => return vec![e],
        };
        let v2 = h.is_v2();
        let mut paths = BTreeSet::new();
        paths.insert("/".to_string());
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
        for r in &roots {
            walk(r, "/", &mut paths, 0);
        }
        let mut fam = Families::new();
        let mut seen = HashSet::new();
        let proc = self.host_root.join("proc");
        let host_netns = netfd::netns(&proc, 1);
        let mut seen_netns = HashSet::new();
        let mut podman: Option<HashMap<String, (String, String)>> = None;
        let now = scrape.timestamp_ms as f64 / 1000.0;
        for rel in &paths {
            let ident = identify(rel);
            let meta = match &ident {
                None if rel != "/" => continue,
                None => Meta::default(),
                Some(ident) => {
                    seen.insert(ident.id.clone());
                    if !self.meta.contains_key(&ident.id) {
                        let mut m = lookup_meta(&self.host_root, ident);
                        if m.name.is_empty() || m.image.is_empty() {
                            let idx = podman.get_or_insert_with(|| podman_index(&self.host_root));
                            if let Some((n, i)) = idx.get(&ident.id) {
                                if m.name.is_empty() {
                                    m.name = n.clone();
                                }
                                if m.image.is_empty() {
                                    m.image = i.clone();
                                }
                            }
                        }
                        self.meta.insert(ident.id.clone(), m);
                    }
                    self.meta.get(&ident.id).cloned().unwrap_or_default()
                }
            };
            let labels = vec![
                (LABELS[0], rel.clone()),
                (LABELS[1], meta.name),
                (LABELS[2], meta.image),
                (LABELS[3], meta.namespace),
                (LABELS[4], meta.pod),
                (LABELS[5], meta.container),
            ];
            let errors_before = errors.len();
            let mut ctx = Ctx {
                labels,
                fam: &mut fam,
                errors: &mut errors,
            };
            if v2 {
                if let Some(root) = &h.v2 {
                    read_v2(
                        &mut ctx,
                        &root.join(rel.trim_start_matches('/')),
                        rel == "/",
                    );
                }
            } else {
                read_v1(&mut ctx, &h, rel);
            }
            let dir = roots
                .iter()
                .map(|r| r.join(rel.trim_start_matches('/')))
                .find(|d| d.is_dir());
            if let Some(d) = dir
                && let Ok(t) = fs::metadata(&d).and_then(|m| m.modified())
                && let Ok(s) = t.duration_since(std::time::UNIX_EPOCH)
            {
                ctx.set("container_start_time_seconds", s.as_secs_f64());
            }
            ctx.set("container_last_seen", now);
            if let Some(ident) = &ident {
                let mut l = ctx.labels.clone();
                l.push(("runtime", runtime_of(rel).to_string()));
                l.push(("container_id", ident.id.clone()));
                l.push(("pod_uid", ident.pod_uid.clone().unwrap_or_default()));
                l.push(("qos", qos_of(rel).to_string()));
                ctx.fam.push("container_info", &l, 1.0);
            }
            // /proc side: open fds, and network once per namespace
            if rel != "/" {
                let procs_dir = roots
                    .iter()
                    .map(|r| r.join(rel.trim_start_matches('/')))
                    .find(|d| d.join("cgroup.procs").exists());
                let pids = procs_dir.map(|d| netfd::pids(&d)).unwrap_or_default();
                if !pids.is_empty() {
                    ctx.set("container_file_descriptors", netfd::count_fds(&proc, &pids));
                    if let Some(ns) = netfd::netns(&proc, pids[0])
                        && Some(&ns) != host_netns.as_ref()
                        && seen_netns.insert(ns)
                    {
                        let net_dev = proc.join(pids[0].to_string()).join("net/dev");
                        match read(&net_dev).and_then(|t| {
                            netfd::parse_net_dev(&t).map_err(|m| ParseError::msg(&net_dev, m))
                        }) {
                            Ok(ifaces) => {
                                // a pod's containers share its namespace:
                                // attributed to the pod, not to one container
                                let mut labels = ctx.labels.clone();
                                if !labels[4].1.is_empty() {
                                    labels[0].1 = rel
                                        .rsplit_once('/')
                                        .map(|(p, _)| p.to_string())
                                        .unwrap_or_default();
                                    labels[1].1.clear();
                                    labels[5].1.clear();
                                }
                                for (iface, vals) in ifaces {
                                    let mut l = labels.clone();
                                    l.push(("interface", iface));
                                    for ((name, _), v) in netfd::NET_FAMILIES.iter().zip(vals) {
                                        ctx.fam.push(name, &l, v);
                                    }
                                }
                            }
                            Err(e) => ctx.err(e),
                        }
                    }
                }
            }
            // A container that exited mid-read is not an error: its files went with it.
            if rel != "/"
                && !roots
                    .iter()
                    .any(|r| r.join(rel.trim_start_matches('/')).is_dir())
            {
                errors.truncate(errors_before);
            }
        }
        self.meta.retain(|id, _| seen.contains(id));
        scrape.families.extend(fam.f);
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
        errors
    }
}

fn read_psi(ctx: &mut Ctx<'_>, dir: &Path) {
    for res in ["cpu", "memory", "io"] {
        let p = dir.join(format!("{res}.pressure"));
        if !exists(&p) {
            continue;
        }
        match read(&p).and_then(|t| psi_totals(&t).map_err(|m| ParseError::msg(&p, m))) {
            Ok((some, full)) => {
                if let Some(s) = some {
                    ctx.set(
                        &format!("container_pressure_{res}_waiting_seconds_total"),
                        s / 1e6,
                    );
                }
                if let Some(f) = full {
                    ctx.set(
                        &format!("container_pressure_{res}_stalled_seconds_total"),
                        f / 1e6,
                    );
                }
            }
            Err(e) => ctx.err(e),
        }
    }
}

fn read_v2(ctx: &mut Ctx<'_>, dir: &Path, is_root: bool) {
    // cpu
    let p = dir.join("cpu.stat");
    match kv(&p) {
        Ok(m) => {
            ctx.put(
                "container_cpu_usage_seconds_total",
                get(&m, &p, "usage_usec").map(|v| v / 1e6),
            );
            ctx.put(
                "container_cpu_user_seconds_total",
                get(&m, &p, "user_usec").map(|v| v / 1e6),
            );
            ctx.put(
                "container_cpu_system_seconds_total",
                get(&m, &p, "system_usec").map(|v| v / 1e6),
            );
            let max = dir.join("cpu.max");
            if !is_root {
                match read(&max) {
                    Ok(t) => {
                        let mut it = t.split_whitespace();
                        let q = it.next().unwrap_or("");
                        let period = it.next().and_then(|s| s.parse::<f64>().ok());
                        if q != "max" {
                            match (q.parse::<f64>(), period) {
                                (Ok(q), Some(per)) => {
                                    ctx.set("container_spec_cpu_quota", q);
                                    ctx.set("container_spec_cpu_period", per);
                                    ctx.put(
                                        "container_cpu_cfs_periods_total",
                                        get(&m, &p, "nr_periods"),
                                    );
                                    ctx.put(
                                        "container_cpu_cfs_throttled_periods_total",
                                        get(&m, &p, "nr_throttled"),
                                    );
                                    ctx.put(
                                        "container_cpu_cfs_throttled_seconds_total",
                                        get(&m, &p, "throttled_usec").map(|v| v / 1e6),
                                    );
                                }
                                _ => ctx.err(ParseError::msg(&max, format!("bad cpu.max {t:?}"))),
                            }
                        } else if let Some(per) = period {
                            ctx.set("container_spec_cpu_period", per);
                        }
                    }
                    Err(e) => ctx.err(e),
                }
                let w = dir.join("cpu.weight");
                if exists(&w) {
                    // cAdvisor converts weight back to v1 shares.
                    ctx.put(
                        "container_spec_cpu_shares",
                        read_num(&w).map(|w| (2.0 + ((w - 1.0) * 262142.0) / 9999.0).floor()),
                    );
                }
            }
        }
        Err(e) => ctx.err(e),
    }
    // memory (older kernels have no memory.stat at the v2 root: no figures, no error)
    let stat_p = dir.join("memory.stat");
    if is_root && !exists(&stat_p) {
        read_psi(ctx, dir);
        return;
    }
    let stat = kv(&stat_p);
    let usage = if is_root {
        // The root has no memory.current; the sum of the stat figures stands in.
        stat.as_ref()
            .ok()
            .and_then(|m| Some(m.get("anon")? + m.get("file")?))
            .ok_or_else(|| ParseError::msg(&stat_p, "no anon/file"))
    } else {
        read_num(&dir.join("memory.current"))
    };
    match (&usage, &stat) {
        (Ok(u), Ok(m)) => {
            ctx.set("container_memory_usage_bytes", *u);
            let inactive = get(m, &stat_p, "inactive_file");
            ctx.put(
                "container_memory_working_set_bytes",
                inactive.map(|i| (u - i).max(0.0)),
            );
        }
        (Err(e), _) => ctx.err(e.clone()),
        _ => {}
    }
    match &stat {
        Ok(m) => {
            ctx.put("container_memory_rss", get(m, &stat_p, "anon"));
            ctx.put("container_memory_cache", get(m, &stat_p, "file"));
            ctx.put(
                "container_memory_mapped_file",
                get(m, &stat_p, "file_mapped"),
            );
        }
        Err(e) => ctx.err(e.clone()),
    }
    if !is_root {
        let sw = dir.join("memory.swap.current");
        if exists(&sw) {
            ctx.put("container_memory_swap", read_num(&sw));
        }
        let max = dir.join("memory.max");
        match read(&max) {
            Ok(t) if t.trim() == "max" => ctx.set("container_spec_memory_limit_bytes", 0.0),
            Ok(t) => ctx.put(
                "container_spec_memory_limit_bytes",
                parse::number(&t).map_err(|m| ParseError::msg(&max, m)),
            ),
            Err(e) => ctx.err(e),
        }
        let ev = dir.join("memory.events");
        match kv(&ev) {
            Ok(m) => {
                ctx.put("container_memory_failcnt", get(&m, &ev, "max"));
                ctx.put("container_oom_events_total", get(&m, &ev, "oom_kill"));
            }
            Err(e) => ctx.err(e),
        }
        let pc = dir.join("pids.current");
        if exists(&pc) {
            ctx.put("container_threads", read_num(&pc));
        }
        let procs = dir.join("cgroup.procs");
        if exists(&procs) {
            ctx.put("container_processes", count_lines(&procs));
        }
    }
    let io = dir.join("io.stat");
    if exists(&io) {
        match read(&io).and_then(|t| io_stat(&t).map_err(|m| ParseError::msg(&io, m))) {
            Ok(m) => {
                for (k, n) in [
                    ("rbytes", "container_fs_reads_bytes_total"),
                    ("wbytes", "container_fs_writes_bytes_total"),
                    ("rios", "container_fs_reads_total"),
                    ("wios", "container_fs_writes_total"),
                ] {
                    ctx.set(n, m.get(k).copied().unwrap_or(0.0));
                }
            }
            Err(e) => ctx.err(e),
        }
    }
    read_psi(ctx, dir);
}

fn read_v1(ctx: &mut Ctx<'_>, h: &Hierarchies, rel: &str) {
    let r = rel.trim_start_matches('/');
    let is_root = rel == "/";
    let ctrl = |c: &str| h.v1.get(c).map(|m| m.join(r)).filter(|d| d.is_dir());
    if let Some(d) = ctrl("cpuacct") {
        ctx.put(
            "container_cpu_usage_seconds_total",
            read_num(&d.join("cpuacct.usage")).map(|v| v / 1e9),
        );
        let p = d.join("cpuacct.stat");
        match kv(&p) {
            Ok(m) => {
                // USER_HZ ticks; 100 on every Linux we ship to.
                ctx.put(
                    "container_cpu_user_seconds_total",
                    get(&m, &p, "user").map(|v| v / 100.0),
                );
                ctx.put(
                    "container_cpu_system_seconds_total",
                    get(&m, &p, "system").map(|v| v / 100.0),
                );
            }
            Err(e) => ctx.err(e),
        }
    }
    if let Some(d) = ctrl("cpu") {
        if !is_root {
            ctx.put("container_spec_cpu_shares", read_num(&d.join("cpu.shares")));
            let per = read_num(&d.join("cpu.cfs_period_us"));
            ctx.put("container_spec_cpu_period", per.clone());
            match read_num(&d.join("cpu.cfs_quota_us")) {
                Ok(q) if q >= 0.0 => {
                    ctx.set("container_spec_cpu_quota", q);
                    let p = d.join("cpu.stat");
                    match kv(&p) {
                        Ok(m) => {
                            ctx.put("container_cpu_cfs_periods_total", get(&m, &p, "nr_periods"));
                            ctx.put(
                                "container_cpu_cfs_throttled_periods_total",
                                get(&m, &p, "nr_throttled"),
                            );
                            ctx.put(
                                "container_cpu_cfs_throttled_seconds_total",
                                get(&m, &p, "throttled_time").map(|v| v / 1e9),
                            );
                        }
                        Err(e) => ctx.err(e),
                    }
                }
                Ok(_) => {}
                Err(e) => ctx.err(e),
            }
        }
        read_psi(ctx, &d);
    }
    if let Some(d) = ctrl("memory") {
        let usage = read_num(&d.join("memory.usage_in_bytes"));
        let p = d.join("memory.stat");
        let stat = kv(&p);
        if let Ok(u) = &usage {
            ctx.set("container_memory_usage_bytes", *u);
        }
        match (&usage, &stat) {
            (Ok(u), Ok(m)) => {
                ctx.put(
                    "container_memory_working_set_bytes",
                    get(m, &p, "total_inactive_file").map(|i| (u - i).max(0.0)),
                );
            }
            (Err(e), _) => ctx.err(e.clone()),
            _ => {}
        }
        match &stat {
            Ok(m) => {
                ctx.put("container_memory_rss", get(m, &p, "total_rss"));
                ctx.put("container_memory_cache", get(m, &p, "total_cache"));
                ctx.put(
                    "container_memory_mapped_file",
                    get(m, &p, "total_mapped_file"),
                );
                if let Some(s) = m.get("total_swap") {
                    ctx.set("container_memory_swap", *s);
                }
            }
            Err(e) => ctx.err(e.clone()),
        }
        ctx.put(
            "container_memory_failcnt",
            read_num(&d.join("memory.failcnt")),
        );
        if !is_root {
            // The kernel reports "no limit" as a huge page-aligned number.
            ctx.put(
                "container_spec_memory_limit_bytes",
                read_num(&d.join("memory.limit_in_bytes"))
                    .map(|l| if l >= 9.0e18 { 0.0 } else { l }),
            );
        }
        let oc = d.join("memory.oom_control");
        if exists(&oc) {
            match kv(&oc) {
                Ok(m) => {
                    if let Some(v) = m.get("oom_kill") {
                        ctx.set("container_oom_events_total", *v);
                    }
                }
                Err(e) => ctx.err(e),
            }
        }
    }
    if !is_root {
        let base = ctrl("pids")
            .or_else(|| ctrl("cpu"))
            .or_else(|| ctrl("memory"));
        if let Some(d) = base {
            ctx.put("container_processes", count_lines(&d.join("cgroup.procs")));
            ctx.put("container_threads", count_lines(&d.join("tasks")));
        }
    }
    if let Some(d) = ctrl("blkio") {
        for (file, rn, wn) in [
            (
                "blkio.throttle.io_service_bytes",
                "container_fs_reads_bytes_total",
                "container_fs_writes_bytes_total",
            ),
            (
                "blkio.throttle.io_serviced",
                "container_fs_reads_total",
                "container_fs_writes_total",
            ),
        ] {
            let p = d.join(file);
            if !exists(&p) {
                continue;
            }
            match read(&p).and_then(|t| parse::blkio(&t).map_err(|m| ParseError::msg(&p, m))) {
                Ok((rd, wr)) => {
                    ctx.set(rn, rd);
                    ctx.set(wn, wr);
                }
                Err(e) => ctx.err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests;
