//! Container metrics from cgroups (v1, v2 and hybrid) under `--host-root`,
//! with cAdvisor's names and its label set `id,name,image,namespace,pod,container`.
//! Hierarchies are found from mountinfo; containers are the cgroups whose last
//! path element carries a 64-hex id. Each scrape walks the live tree only, so
//! nothing is remembered for a cgroup that is gone (no leak across churn).
//! Not here: node-level figures (`node`), processes, the kernel log.

use std::path::{Path, PathBuf};

use crate::model::{MetricFamily, MetricKind, Scrape};

/// USER_HZ, the unit of v1 `cpuacct.stat`.
const USER_HZ: f64 = 100.0;
/// Deepest cgroup nesting walked; Kubernetes needs 4, this bounds a hostile tree.
const MAX_DEPTH: usize = 8;

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    /// Where it is mounted, already joined under the host root.
    pub path: PathBuf,
    /// v1 controllers (`cpu`, `cpuacct`, `memory`, …); empty for cgroup2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// A failure reading one figure: which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ReadError {
    pub path: PathBuf,
    pub reason: String,
}

/// Parses mountinfo text into the cgroup hierarchies it lists, mount points
/// joined under `host_root`. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str, host_root: &Path) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let mount = unescape_octal(pre[4]);
        let path = host_root.join(mount.trim_start_matches('/'));
        match post[0] {
            "cgroup2" => out.push(Hierarchy {
                path,
                controllers: Vec::new(),
                v2: true,
            }),
            "cgroup" => {
                let controllers: Vec<String> = post[2]
                    .split(',')
                    .filter(|o| {
                        matches!(
                            *o,
                            "cpu" | "cpuacct" | "memory" | "blkio" | "pids" | "cpuset"
                        )
                    })
                    .map(str::to_string)
                    .collect();
                if !controllers.is_empty() {
                    out.push(Hierarchy {
                        path,
                        controllers,
                        v2: false,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 4]).ok())
            .flatten()
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who a cgroup belongs to, from its path alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The 64-hex container id.
    pub container_id: String,
    /// The pod uid (with `-`), for Kubernetes paths.
    pub pod_uid: String,
}

/// Recognises a container cgroup path (relative to the hierarchy root) as
/// cAdvisor does; `None` for anything else (slices, pods, `*.mount`, conmon).
pub fn identify(rel: &str) -> Option<Identity> {
    let last = rel.rsplit('/').next()?;
    if last.ends_with(".mount") || last.starts_with("crio-conmon") {
        return None;
    }
    let core = last.strip_suffix(".scope").unwrap_or(last);
    let id = core.rsplit(['-', ':']).next().unwrap_or(core);
    if id.len() != 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut pod_uid = String::new();
    for el in rel.split('/') {
        let el = el.strip_suffix(".slice").unwrap_or(el);
        // `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid>` (systemd).
        let uid = el
            .strip_prefix("pod")
            .or_else(|| el.rsplit_once("-pod").map(|(_, u)| u));
        let valid = |u: &&str| {
            u.bytes().filter(u8::is_ascii_hexdigit).count() == 32
                && u.bytes()
                    .all(|c| c.is_ascii_hexdigit() || c == b'-' || c == b'_')
        };
        if let Some(uid) = uid.filter(valid) {
            pod_uid = uid.replace('_', "-");
        }
    }
    Some(Identity {
        container_id: id.to_string(),
        pod_uid,
    })
}

/// Reads container cgroups each scrape.
pub struct CgroupReader {
    host_root: PathBuf,
    hierarchies: Vec<Hierarchy>,
    buf: String,
}

/// Figures read for one container, `None` where unreadable.
#[derive(Debug, Default, Clone)]
struct Figures {
    cpu_usage: Option<f64>,
    cpu_user: Option<f64>,
    cpu_system: Option<f64>,
    quota_set: bool,
    periods: Option<f64>,
    throttled: Option<f64>,
    throttled_secs: Option<f64>,
    mem_usage: Option<f64>,
    inactive_file: Option<f64>,
    rss: Option<f64>,
    cache: Option<f64>,
    swap: Option<f64>,
    mapped_file: Option<f64>,
    failcnt: Option<f64>,
    limit: Option<f64>,
    oom: Option<f64>,
}

impl CgroupReader {
    pub fn new(host_root: &Path) -> Self {
        let mi = host_root.join("proc/self/mountinfo");
        let hierarchies = std::fs::read_to_string(&mi)
            .map(|t| parse_mountinfo(&t, host_root))
            .unwrap_or_default();
        CgroupReader {
            host_root: host_root.to_path_buf(),
            hierarchies,
            buf: String::with_capacity(4096),
        }
    }

    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    fn find(&self, ctrl: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == ctrl))
            .map(|h| h.path.as_path())
    }

    fn unified(&self) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.v2)
            .map(|h| h.path.as_path())
    }

    /// Adds container families to `out`; returns the errors met and the
    /// number of container cgroups seen.
    pub fn scrape(&mut self, out: &mut Scrape) -> (Vec<ReadError>, usize) {
        let mut errors = Vec::new();
        // v1 is authoritative where its cpu and memory controllers are mounted
        // (hybrid hosts have an empty v2); otherwise the unified tree.
        let cpuacct = self.find("cpuacct").map(Path::to_path_buf);
        let cpu = self.find("cpu").map(Path::to_path_buf);
        let memory = self.find("memory").map(Path::to_path_buf);
        let (walk_root, v2) = match (&cpuacct, &memory, self.unified()) {
            (Some(c), _, _) => (c.clone(), false),
            (None, Some(m), _) => (m.clone(), false),
            (None, None, Some(u)) => (u.to_path_buf(), true),
            _ => return (errors, 0),
        };
        let mut found = Vec::new();
        walk(&walk_root, String::new(), 0, &mut found);
        // On v1 a container may exist in only some controllers' trees (e.g. a
        // memory-only cgroup); union the cpuacct and memory trees.
        if let (false, Some(m), Some(_)) = (v2, &memory, &cpuacct) {
            walk(m, String::new(), 0, &mut found);
            found.sort_by(|a, b| a.0.cmp(&b.0));
            found.dedup_by(|a, b| a.0 == b.0);
        }
        let mut fams = Families::new();
        // Podman/CRI-O storage index: read once per scrape, dropped after, so
        // it never outlives the containers it names.
        let storage = if found.is_empty() {
            Default::default()
        } else {
            storage_names(&self.host_root)
        };
        for (rel, ident) in &found {
            let mut f = Figures::default();
            if v2 {
                self.read_v2(
                    &walk_root.join(rel.trim_start_matches('/')),
                    &mut f,
                    &mut errors,
                );
            } else {
                self.read_v1(
                    cpuacct.as_deref(),
                    cpu.as_deref(),
                    memory.as_deref(),
                    rel,
                    &mut f,
                    &mut errors,
                );
            }
            let labels = labels_for(rel, ident, &self.host_root, &storage);
            fams.add(&labels, &f);
        }
        fams.finish(out);
        (errors, found.len())
    }

    fn read_file(&mut self, path: &Path, errors: &mut Vec<ReadError>) -> bool {
        use std::io::Read;
        self.buf.clear();
        match std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut self.buf)) {
            Ok(_) => true,
            Err(e) => {
                errors.push(ReadError {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
                false
            }
        }
    }

    fn read_num(&mut self, path: &Path, errors: &mut Vec<ReadError>) -> Option<f64> {
        if !self.read_file(path, errors) {
            return None;
        }
        let t = self.buf.trim();
        match t.parse::<u64>() {
            Ok(v) => Some(v as f64),
            Err(_) => {
                errors.push(ReadError {
                    path: path.to_path_buf(),
                    reason: format!("not a number: {:?}", truncate(t)),
                });
                None
            }
        }
    }

    fn read_v1(
        &mut self,
        cpuacct: Option<&Path>,
        cpu: Option<&Path>,
        memory: Option<&Path>,
        rel: &str,
        f: &mut Figures,
        errors: &mut Vec<ReadError>,
    ) {
        let rel = rel.trim_start_matches('/');
        if let Some(ca) = cpuacct {
            let d = ca.join(rel);
            f.cpu_usage = self
                .read_num(&d.join("cpuacct.usage"), errors)
                .map(|n| n / 1e9);
            if self.read_file(&d.join("cpuacct.stat"), errors) {
                f.cpu_user = kv(&self.buf, "user").map(|v| v / USER_HZ);
                f.cpu_system = kv(&self.buf, "system").map(|v| v / USER_HZ);
            }
        }
        if let Some(c) = cpu {
            let d = c.join(rel);
            if self.read_file(&d.join("cpu.cfs_quota_us"), errors) {
                f.quota_set = self
                    .buf
                    .trim()
                    .parse::<i64>()
                    .map(|q| q > 0)
                    .unwrap_or(false);
            }
            if f.quota_set && self.read_file(&d.join("cpu.stat"), errors) {
                f.periods = kv(&self.buf, "nr_periods");
                f.throttled = kv(&self.buf, "nr_throttled");
                f.throttled_secs = kv(&self.buf, "throttled_time").map(|n| n / 1e9);
            }
        }
        if let Some(m) = memory {
            let d = m.join(rel);
            f.mem_usage = self.read_num(&d.join("memory.usage_in_bytes"), errors);
            f.failcnt = self.read_num(&d.join("memory.failcnt"), errors);
            f.limit = self.read_num(&d.join("memory.limit_in_bytes"), errors);
            if self.read_file(&d.join("memory.stat"), errors) {
                f.inactive_file = kv(&self.buf, "total_inactive_file");
                f.rss = kv(&self.buf, "total_rss");
                f.cache = kv(&self.buf, "total_cache");
                f.swap = kv(&self.buf, "total_swap");
                f.mapped_file = kv(&self.buf, "total_mapped_file");
            }
            if self.read_file(&d.join("memory.oom_control"), errors) {
                f.oom = kv(&self.buf, "oom_kill");
            }
        }
    }

    fn read_v2(&mut self, d: &Path, f: &mut Figures, errors: &mut Vec<ReadError>) {
        if self.read_file(&d.join("cpu.stat"), errors) {
            f.cpu_usage = kv(&self.buf, "usage_usec").map(|v| v / 1e6);
            f.cpu_user = kv(&self.buf, "user_usec").map(|v| v / 1e6);
            f.cpu_system = kv(&self.buf, "system_usec").map(|v| v / 1e6);
            let periods = kv(&self.buf, "nr_periods");
            let throttled = kv(&self.buf, "nr_throttled");
            let tsecs = kv(&self.buf, "throttled_usec").map(|v| v / 1e6);
            if self.read_file(&d.join("cpu.max"), errors) {
                f.quota_set = !self.buf.trim_start().starts_with("max");
            }
            if f.quota_set {
                f.periods = periods;
                f.throttled = throttled;
                f.throttled_secs = tsecs;
            }
        }
        f.mem_usage = self.read_num(&d.join("memory.current"), errors);
        if self.read_file(&d.join("memory.max"), errors) {
            let t = self.buf.trim();
            // "max" is no limit; cAdvisor reports it as 0 on v2? It reports
            // the machine's memory; we leave the figure out instead.
            if t != "max" {
                match t.parse::<u64>() {
                    Ok(v) => f.limit = Some(v as f64),
                    Err(_) => errors.push(ReadError {
                        path: d.join("memory.max"),
                        reason: format!("not a number: {:?}", truncate(t)),
                    }),
                }
            }
        }
        if self.read_file(&d.join("memory.stat"), errors) {
            f.inactive_file = kv(&self.buf, "inactive_file");
            f.rss = kv(&self.buf, "anon");
            f.cache = kv(&self.buf, "file");
            f.mapped_file = kv(&self.buf, "file_mapped");
        }
        if d.join("memory.swap.current").exists() {
            f.swap = self.read_num(&d.join("memory.swap.current"), errors);
        }
        if self.read_file(&d.join("memory.events"), errors) {
            f.oom = kv(&self.buf, "oom_kill");
            f.failcnt = kv(&self.buf, "max");
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The value of `key` in a `key value` per line file.
fn kv(text: &str, key: &str) -> Option<f64> {
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        if it.next() == Some(key) {
            return it
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v as f64);
        }
    }
    None
}

fn walk(dir: &Path, rel: String, depth: usize, found: &mut Vec<(String, Identity)>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let child_rel = format!("{rel}/{name}");
        if let Some(id) = identify(&child_rel) {
            found.push((child_rel.clone(), id));
        }
        walk(&e.path(), child_rel, depth + 1, found);
    }
}

/// The label values for a container: kubelet log links give pod, namespace
/// and container names; Podman's and Docker's metadata files give name and image.
fn labels_for(
    rel: &str,
    ident: &Identity,
    host_root: &Path,
    storage: &std::collections::HashMap<String, (String, String)>,
) -> [String; 6] {
    let mut name = String::new();
    let mut image = String::new();
    let mut namespace = String::new();
    let mut pod = String::new();
    let mut container = String::new();
    if let Some((p, ns, c)) = kubelet_names(host_root, &ident.container_id) {
        pod = p;
        namespace = ns;
        container = c;
    }
    if let Some((n, i)) = runtime_names(host_root, &ident.container_id) {
        name = n;
        image = i;
    }
    if let Some((n, i)) = storage.get(&ident.container_id) {
        if name.is_empty() {
            name.clone_from(n);
        }
        if image.is_empty() {
            image.clone_from(i);
        }
    }
    [rel.to_string(), name, image, namespace, pod, container]
}

/// `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`.
fn kubelet_names(host_root: &Path, id: &str) -> Option<(String, String, String)> {
    let dir = host_root.join("var/log/containers");
    let suffix = format!("-{id}.log");
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let n = e.file_name();
        let n = n.to_str()?;
        if let Some(stem) = n.strip_suffix(&suffix) {
            let mut it = stem.splitn(3, '_');
            let pod = it.next()?.to_string();
            let ns = it.next()?.to_string();
            let c = it.next()?.to_string();
            return Some((pod, ns, c));
        }
    }
    None
}

/// Name and image from Docker's `config.v2.json` or Podman's `userdata/config.json`.
fn runtime_names(host_root: &Path, id: &str) -> Option<(String, String)> {
    let docker = host_root.join(format!("var/lib/docker/containers/{id}/config.v2.json"));
    if let Ok(t) = std::fs::read_to_string(&docker) {
        let v: serde_json::Value = serde_json::from_str(&t).ok()?;
        let name = v["Name"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        let image = v["Config"]["Image"].as_str().unwrap_or("").to_string();
        return Some((name, image));
    }
    for base in [
        "var/lib/containers/storage/overlay-containers",
        "run/containers/storage/overlay-containers",
    ] {
        let p = host_root.join(format!("{base}/{id}/userdata/config.json"));
        if let Ok(t) = std::fs::read_to_string(&p) {
            let v: serde_json::Value = serde_json::from_str(&t).ok()?;
            let a = &v["annotations"];
            let name = a["io.podman.annotations.name"]
                .as_str()
                .or_else(|| a["io.kubernetes.cri-o.ContainerName"].as_str())
                .unwrap_or("")
                .to_string();
            let image = a["io.podman.annotations.image"]
                .as_str()
                .or_else(|| a["io.kubernetes.cri-o.ImageName"].as_str())
                .unwrap_or("")
                .to_string();
            return Some((name, image));
        }
    }
    None
}

/// containers/storage's `overlay-containers/containers.json` (Podman, CRI-O):
/// id → (first name, `image-name` from its metadata).
fn storage_names(host_root: &Path) -> std::collections::HashMap<String, (String, String)> {
    let mut out = std::collections::HashMap::new();
    let p = host_root.join("var/lib/containers/storage/overlay-containers/containers.json");
    let Ok(t) = std::fs::read_to_string(p) else {
        return out;
    };
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(&t) else {
        return out;
    };
    for c in list {
        let Some(id) = c["id"].as_str() else { continue };
        let name = c["names"][0].as_str().unwrap_or("").to_string();
        let image = c["metadata"]
            .as_str()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|m| m["image-name"].as_str().map(str::to_string))
            .unwrap_or_default();
        out.insert(id.to_string(), (name, image));
    }
    out
}

const LABELS: [&str; 6] = ["id", "name", "image", "namespace", "pod", "container"];

struct Families {
    fams: Vec<MetricFamily>,
}

impl Families {
    fn new() -> Self {
        use MetricKind::{Counter as C, Gauge as G};
        let d: [(&str, &str, MetricKind); 16] = [
            (
                "container_cpu_usage_seconds_total",
                "Cumulative cpu time consumed in seconds.",
                C,
            ),
            (
                "container_cpu_user_seconds_total",
                "Cumulative user cpu time consumed in seconds.",
                C,
            ),
            (
                "container_cpu_system_seconds_total",
                "Cumulative system cpu time consumed in seconds.",
                C,
            ),
            (
                "container_cpu_cfs_periods_total",
                "Number of elapsed enforcement period intervals.",
                C,
            ),
            (
                "container_cpu_cfs_throttled_periods_total",
                "Number of throttled period intervals.",
                C,
            ),
            (
                "container_cpu_cfs_throttled_seconds_total",
                "Total time duration the container has been throttled.",
                C,
            ),
            (
                "container_memory_usage_bytes",
                "Current memory usage in bytes, including all memory regardless of when it was accessed.",
                G,
            ),
            (
                "container_memory_working_set_bytes",
                "Current working set in bytes.",
                G,
            ),
            ("container_memory_rss", "Size of RSS in bytes.", G),
            (
                "container_memory_cache",
                "Number of bytes of page cache memory.",
                G,
            ),
            ("container_memory_swap", "Container swap usage in bytes.", G),
            (
                "container_memory_mapped_file",
                "Size of memory mapped files in bytes.",
                G,
            ),
            (
                "container_memory_failcnt",
                "Number of memory usage hits limits.",
                C,
            ),
            (
                "container_spec_memory_limit_bytes",
                "Memory limit for the container.",
                G,
            ),
            (
                "container_oom_events_total",
                "Count of out of memory events observed for the container.",
                C,
            ),
            (
                "container_last_seen",
                "Last time a container was seen by the exporter.",
                G,
            ),
        ];
        Families {
            fams: d
                .into_iter()
                .map(|(n, h, k)| MetricFamily::new(n, h, k))
                .collect(),
        }
    }

    fn add(&mut self, labels: &[String; 6], f: &Figures) {
        let working_set = f
            .mem_usage
            .map(|u| (u - f.inactive_file.unwrap_or(0.0)).max(0.0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64().floor())
            .unwrap_or(0.0);
        let vals = [
            f.cpu_usage,
            f.cpu_user,
            f.cpu_system,
            f.periods,
            f.throttled,
            f.throttled_secs,
            f.mem_usage,
            working_set,
            f.rss,
            f.cache,
            f.swap,
            f.mapped_file,
            f.failcnt,
            f.limit,
            f.oom,
            Some(now),
        ];
        for (fam, v) in self.fams.iter_mut().zip(vals) {
            if let Some(v) = v {
                fam.push(LABELS.iter().copied().zip(labels.iter().cloned()), v);
            }
        }
    }

    fn finish(self, out: &mut Scrape) {
        out.families.extend(self.fams);
    }
}

#[cfg(test)]
mod tests;
