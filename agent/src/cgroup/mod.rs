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
mod families;
mod files;
mod identity;
pub mod kmsg;
mod mount;
pub mod netfd;
pub mod parse;
mod runtime_meta;
mod v1;
mod v2;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::model::{LabelSet, Scrape};
use parse::ParseError;

use crate::model::{MetricFamily, MetricKind};
use families::{Families, fam, info_of, labels_of};
pub use files::DEFAULT_OPEN_FILES;
pub(crate) use files::pread_all;
use files::{Cg, Ctx, FD_RESERVE, FileIo, Slot, raise_nofile, v1f, v2f};
pub use identity::{PathIdentity, identify};
pub use mount::Hierarchies;
pub use runtime_meta::Meta;
use runtime_meta::MetaIndex;
use v1::read_v1;
use v2::read_v2;

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
