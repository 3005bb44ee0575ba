//! Finding the log files to tail under `--host-root`, and what they are.
//!
//! The runtimes' own layouts (when `default_paths` is on):
//! - Kubernetes: `/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`
//!   (CRI format; the container id comes from the
//!   `/var/log/containers/<pod>_<ns>_<container>-<id>.log` symlinks);
//! - Docker json-file: `/var/lib/docker/containers/<id>/<id>-json.log`
//!   (name and Kubernetes labels from `config.v2.json`);
//! - Podman k8s-file: `/var/lib/containers/storage/overlay-containers/<id>/userdata/ctr.log`
//!   (name from containers/storage's `containers.json`, Kubernetes names from
//!   the OCI annotations in `userdata/config.json` for `podman kube play`);
//!
//! plus user globs, minus exclude globs (both written as host paths). A file's
//! identity labels come from its path's shape, whichever glob found it. Not
//! here: rotation (the tailer matches rotated siblings), reading.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use vigil_common::Labels;

use super::parse::{Format, Stream};

pub const K8S_PODS: &str = "/var/log/pods";
pub const K8S_CONTAINERS: &str = "/var/log/containers";
pub const DOCKER_CONTAINERS: &str = "/var/lib/docker/containers";
pub const PODMAN_CONTAINERS: &str = "/var/lib/containers/storage/overlay-containers";

/// The default globs, as host paths.
pub fn default_patterns() -> Vec<String> {
    vec![
        format!("{K8S_PODS}/*/*/*.log"),
        format!("{DOCKER_CONTAINERS}/*/*-json.log"),
        format!("{PODMAN_CONTAINERS}/*/userdata/ctr.log"),
    ]
}

/// The container a log file belongs to (empty strings where unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub container_id: String,
    pub container_name: String,
}

impl Identity {
    /// `(label, value)` pairs in the order the metric families use.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("container", &self.container),
            ("container_id", &self.container_id),
            ("container_name", &self.container_name),
        ]
    }
}

/// What the tailer needs to know about a file besides its bytes.
#[derive(Debug, PartialEq)]
pub struct SourceMeta {
    pub identity: Arc<Identity>,
    /// Stream labels of the entries, one set per stream.
    pub labels: [Arc<Labels>; 2],
    /// Known from the layout; `None`: detect from the first line.
    pub format: Option<Format>,
}

impl SourceMeta {
    pub fn new(identity: Identity, format: Option<Format>, filename: Option<&str>) -> Self {
        let labels = [Stream::Stdout, Stream::Stderr].map(|s| {
            let mut pairs: Vec<(&str, &str)> = identity
                .pairs()
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
            pairs.push(("stream", s.as_str()));
            if let Some(f) = filename {
                pairs.push(("filename", f));
            }
            Arc::new(Labels::new(pairs))
        });
        SourceMeta {
            identity: Arc::new(identity),
            labels,
            format,
        }
    }
}

/// One file found by a scan.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Where this process opens it (under the host root).
    pub path: PathBuf,
    /// The path as the host sees it (the `SourceKey` path).
    pub host_path: String,
    pub meta: Arc<SourceMeta>,
}

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<Candidate>,
    /// Folders worth an inotify watch (they hold or lead to log files).
    pub dirs: Vec<PathBuf>,
    /// Globs that could not be read (permission, I/O), for the log.
    pub errors: Vec<String>,
}

/// Errors in the configured globs.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("log path glob {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Scans the configured globs; keeps metadata caches between scans.
#[derive(Debug)]
pub struct Discovery {
    host_root: PathBuf,
    /// (host pattern, pattern under the host root)
    patterns: Vec<(String, String)>,
    excludes: Vec<glob::Pattern>,
    meta: HashMap<String, Arc<SourceMeta>>,
    names: NameCache,
}

impl Discovery {
    pub fn new(
        host_root: &Path,
        paths: &[String],
        excludes: &[String],
        default_paths: bool,
    ) -> Result<Self, DiscoveryError> {
        let root = host_root.to_string_lossy();
        let root = root.trim_end_matches('/');
        let escaped_root = glob::Pattern::escape(root);
        let mut host_patterns = if default_paths {
            default_patterns()
        } else {
            Vec::new()
        };
        host_patterns.extend(paths.iter().cloned());
        let mut patterns = Vec::new();
        for p in host_patterns {
            let host = if p.starts_with('/') {
                p
            } else {
                format!("/{p}")
            };
            let full = format!("{escaped_root}{host}");
            glob::Pattern::new(&full).map_err(|source| DiscoveryError::Pattern {
                pattern: host.clone(),
                source,
            })?;
            patterns.push((host, full));
        }
        let excludes = excludes
            .iter()
            .map(|e| {
                glob::Pattern::new(e).map_err(|source| DiscoveryError::Pattern {
                    pattern: e.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Discovery {
            host_root: host_root.to_path_buf(),
            patterns,
            excludes,
            meta: HashMap::new(),
            names: NameCache::default(),
        })
    }

    /// The host path of a path under the host root.
    pub fn host_path(&self, path: &Path) -> String {
        match path.strip_prefix(&self.host_root) {
            Ok(rel) => format!("/{}", rel.to_string_lossy()),
            Err(_) => path.to_string_lossy().into_owned(),
        }
    }

    /// Where this process finds a host path.
    pub fn real_path(&self, host_path: &str) -> PathBuf {
        self.host_root.join(host_path.trim_start_matches('/'))
    }

    /// Lists the files to tail now.
    pub fn scan(&mut self) -> Scan {
        let mut scan = Scan::default();
        let mut seen = HashSet::new();
        let mut dirs = HashSet::new();
        self.names.refresh(&self.host_root);
        for (host_pattern, full) in &self.patterns {
            let prefix = static_prefix(host_pattern);
            let prefix_real = self.real_path(&prefix);
            if prefix_real.is_dir() {
                dirs.insert(prefix_real.clone());
            }
            let entries = match glob::glob_with(full, MATCH) {
                Ok(e) => e,
                Err(e) => {
                    scan.errors.push(format!("{host_pattern}: {e}"));
                    continue;
                }
            };
            for entry in entries {
                let path = match entry {
                    Ok(p) => p,
                    Err(e) => {
                        scan.errors.push(format!("{host_pattern}: {e}"));
                        continue;
                    }
                };
                if !path.is_file() || !seen.insert(path.clone()) {
                    continue;
                }
                let host_path = self.host_path(&path);
                if self
                    .excludes
                    .iter()
                    .any(|e| e.matches_with(&host_path, MATCH))
                {
                    continue;
                }
                let mut d = path.parent();
                while let Some(dir) = d {
                    if !dir.starts_with(&prefix_real) || !dirs.insert(dir.to_path_buf()) {
                        break;
                    }
                    d = dir.parent();
                }
                scan.files.push(Candidate {
                    path,
                    host_path,
                    meta: Arc::default(),
                });
            }
        }
        for c in &mut scan.files {
            c.meta = match self.meta.get(&c.host_path) {
                Some(m) if !m.identity.container_id.is_empty() || !wants_id(&c.host_path) => {
                    m.clone()
                }
                _ => {
                    let m = Arc::new(self.names.meta_for(&c.host_path, &self.host_root));
                    self.meta.insert(c.host_path.clone(), m.clone());
                    m
                }
            };
        }
        // Forget metadata of files no longer there.
        let live: HashSet<&str> = scan.files.iter().map(|c| c.host_path.as_str()).collect();
        self.meta.retain(|k, _| live.contains(k.as_str()));
        scan.dirs = dirs.into_iter().collect();
        scan.dirs.sort();
        scan
    }
}

impl Default for SourceMeta {
    fn default() -> Self {
        SourceMeta::new(Identity::default(), None, None)
    }
}

/// Kubernetes files learn their container id from a symlink that may appear
/// a moment after the file: ask again until it is known.
fn wants_id(host_path: &str) -> bool {
    host_path.starts_with(K8S_PODS)
}

/// The part of a glob before its first wildcard component.
fn static_prefix(pattern: &str) -> String {
    let mut out = String::new();
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        if comp.contains(['*', '?', '[']) {
            break;
        }
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() { "/".into() } else { out }
}

/// Container names and ids read from the runtimes' metadata, refreshed when
/// their files change.
#[derive(Debug, Default)]
struct NameCache {
    /// Kubernetes: host path of `<n>.log` → container id (from the symlinks).
    k8s_ids: HashMap<String, String>,
    k8s_mtime: Option<SystemTime>,
    /// Podman: id → first name (containers.json).
    podman_names: HashMap<String, String>,
    podman_mtime: Option<SystemTime>,
}

impl NameCache {
    fn refresh(&mut self, host_root: &Path) {
        let real = |p: &str| host_root.join(p.trim_start_matches('/'));
        let links = real(K8S_CONTAINERS);
        let mtime = std::fs::metadata(&links).and_then(|m| m.modified()).ok();
        if mtime != self.k8s_mtime {
            self.k8s_mtime = mtime;
            self.k8s_ids.clear();
            if let Ok(rd) = std::fs::read_dir(&links) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let Some(id) = name
                        .strip_suffix(".log")
                        .and_then(|s| s.rsplit_once('-'))
                        .map(|(_, id)| id)
                        .filter(|id| is_container_id(id))
                    else {
                        continue;
                    };
                    if let Ok(target) = std::fs::read_link(e.path()) {
                        let t = target.to_string_lossy().into_owned();
                        // Relative links resolve against /var/log/containers.
                        let t = if t.starts_with('/') {
                            t
                        } else {
                            normalize(&format!("{K8S_CONTAINERS}/{t}"))
                        };
                        self.k8s_ids.insert(t, id.to_string());
                    }
                }
            }
        }
        let cj = real(&format!("{PODMAN_CONTAINERS}/containers.json"));
        let mtime = std::fs::metadata(&cj).and_then(|m| m.modified()).ok();
        if mtime != self.podman_mtime {
            self.podman_mtime = mtime;
            self.podman_names.clear();
            #[derive(serde::Deserialize)]
            struct C {
                id: String,
                #[serde(default)]
                names: Vec<String>,
            }
            if let Ok(b) = std::fs::read(&cj)
                && let Ok(list) = serde_json::from_slice::<Vec<C>>(&b)
            {
                for c in list {
                    if let Some(n) = c.names.into_iter().next() {
                        self.podman_names.insert(c.id, n);
                    }
                }
            }
        }
    }

    fn meta_for(&self, host_path: &str, host_root: &Path) -> SourceMeta {
        let real = |p: &str| host_root.join(p.trim_start_matches('/'));
        // /var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log
        if let Some(rest) = host_path.strip_prefix(K8S_PODS)
            && let [pod_dir, container, _file] = rest
                .split('/')
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()[..]
            && let [ns, pod, _uid] = pod_dir.splitn(3, '_').collect::<Vec<_>>()[..]
        {
            let id = Identity {
                namespace: ns.into(),
                pod: pod.into(),
                container: container.into(),
                container_id: self.k8s_ids.get(host_path).cloned().unwrap_or_default(),
                container_name: String::new(),
            };
            return SourceMeta::new(id, Some(Format::Cri), None);
        }
        // /var/lib/docker/containers/<id>/<id>-json.log
        if let Some(rest) = host_path.strip_prefix(DOCKER_CONTAINERS)
            && let [cid, file] = rest
                .split('/')
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()[..]
            && is_container_id(cid)
            && file.starts_with(cid)
        {
            let mut id = Identity {
                container_id: cid.into(),
                ..Identity::default()
            };
            docker_config(
                &real(&format!("{DOCKER_CONTAINERS}/{cid}/config.v2.json")),
                &mut id,
            );
            return SourceMeta::new(id, Some(Format::Docker), None);
        }
        // /var/lib/containers/storage/overlay-containers/<id>/userdata/ctr.log
        if let Some(rest) = host_path.strip_prefix(PODMAN_CONTAINERS)
            && let [cid, "userdata", _file] = rest
                .split('/')
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()[..]
            && is_container_id(cid)
        {
            let mut id = Identity {
                container_id: cid.into(),
                container_name: self.podman_names.get(cid).cloned().unwrap_or_default(),
                ..Identity::default()
            };
            oci_annotations(
                &real(&format!("{PODMAN_CONTAINERS}/{cid}/userdata/config.json")),
                &mut id,
            );
            return SourceMeta::new(id, Some(Format::Cri), None);
        }
        SourceMeta::new(Identity::default(), None, Some(host_path))
    }
}

/// A full container id: 64 lower-case hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Resolves `.` and `..` in an absolute path without touching the disk.
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// Docker's `config.v2.json`: `Name` ("/web") and, for dockershim-era
/// Kubernetes, the `io.kubernetes.*` labels.
fn docker_config(path: &Path, id: &mut Identity) {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Cfg {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Config")]
        config: Inner,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        #[serde(rename = "Labels")]
        labels: Option<HashMap<String, String>>,
    }
    let Ok(b) = std::fs::read(path) else { return };
    let Ok(cfg) = serde_json::from_slice::<Cfg>(&b) else {
        return;
    };
    id.container_name = cfg.name.trim_start_matches('/').to_string();
    if let Some(l) = cfg.config.labels {
        kube_names(&l, id);
    }
}

/// OCI `config.json` annotations (Podman, CRI-O).
fn oci_annotations(path: &Path, id: &mut Identity) {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Spec {
        annotations: HashMap<String, String>,
    }
    let Ok(b) = std::fs::read(path) else { return };
    let Ok(spec) = serde_json::from_slice::<Spec>(&b) else {
        return;
    };
    kube_names(&spec.annotations, id);
    if id.container_name.is_empty()
        && let Some(n) = spec.annotations.get("io.kubernetes.cri-o.Name")
    {
        id.container_name = n.clone();
    }
}

fn kube_names(l: &HashMap<String, String>, id: &mut Identity) {
    let get = |k: &str| l.get(k).cloned().unwrap_or_default();
    if id.namespace.is_empty() {
        id.namespace = get("io.kubernetes.pod.namespace");
    }
    if id.pod.is_empty() {
        id.pod = get("io.kubernetes.pod.name");
    }
    if id.container.is_empty() {
        id.container = get("io.kubernetes.container.name");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_prefixes() {
        assert_eq!(static_prefix("/var/log/pods/*/*/*.log"), "/var/log/pods");
        assert_eq!(static_prefix("/*.log"), "/");
        assert_eq!(static_prefix("/a/b/c.log"), "/a/b/c.log");
    }

    #[test]
    fn normalizes_relative_links() {
        assert_eq!(
            normalize("/var/log/containers/../pods/a_b_c/d/0.log"),
            "/var/log/pods/a_b_c/d/0.log"
        );
    }
}
