//! Process metrics from `/proc` with bounded cardinality: per container
//! (and for the host's own processes, `id="/"`) the process and thread counts
//! and summed CPU and resident memory; per process only for the top N by CPU
//! (over the last interval) and the top N by resident memory, labelled `pid`,
//! `comm` and the container identity, with allow/deny filters on `comm`.
//! Not here: cgroup files (`cgroup`), which give the containers' own totals.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::cgroup::pread_all;
use crate::model::{LabelSet, MetricFamily, MetricKind, Scrape, label_set};

/// A container's labels (`id`, `name`, `image`, `namespace`, `pod`, `container`).
pub type ContainerLabels = LabelSet;
/// A process, its CPU ticks over the last interval, its container.
type Seen = (ProcStat, u64, ContainerLabels);

/// USER_HZ, the unit of `/proc/<pid>/stat` CPU times.
const USER_HZ: f64 = 100.0;

/// What the reader keeps per process between scrapes: start time (to tell a
/// reused pid), CPU ticks, its `stat` file held open (read again with one
/// `pread`; a reused pid makes the old handle fail, so it is reopened) and
/// its cgroup path (read again after an exec or every
/// [`CGROUP_RECHECK`] scrapes: processes rarely change cgroups).
struct Prev {
    start: u64,
    ticks: u64,
    stat: Option<std::fs::File>,
    comm: String,
    cgroup: Option<String>,
    cgroup_read: u64,
}

/// Scrapes between re-reads of a process's `/proc/<pid>/cgroup`.
const CGROUP_RECHECK: u64 = 16;
/// At most this many `/proc/<pid>/stat` files are held open (each costs the
/// kernel a page for its read buffer); beyond, they are opened per read.
const MAX_OPEN_STATS: usize = 2048;

/// Which processes get series of their own.
#[derive(Debug, Clone)]
pub struct ProcessFilter {
    pub top_n: usize,
    pub include: Option<Regex>,
    pub exclude: Option<Regex>,
}

impl Default for ProcessFilter {
    fn default() -> Self {
        ProcessFilter {
            top_n: 10,
            include: None,
            exclude: None,
        }
    }
}

/// One process as read this scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    pub ticks: u64,
    pub threads: u64,
    pub start: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat` (the `comm` may hold spaces and parentheses:
/// it ends at the last `)`).
pub fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_string();
    let f: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    // fields after comm start at field 3 (state) = index 0
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        comm,
        ticks: n(11)? + n(12)?,
        threads: n(17)?,
        start: n(19)?,
        rss_pages: n(21)?,
    })
}

/// The cgroup path of a process that identifies its container: the v2
/// (`0::`) path, else the v1 memory (or first) controller's.
pub fn cgroup_path(text: &str) -> Option<String> {
    let mut first = None;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
        if ctrl.is_empty() || ctrl.split(',').any(|c| c == "memory") {
            return Some(path.to_string());
        }
        first.get_or_insert_with(|| path.to_string());
    }
    first
}

/// Reads processes under `<host_root>/proc`.
pub struct ProcessReader {
    proc: PathBuf,
    filter: ProcessFilter,
    prev: HashMap<u32, Prev>,
    page_size: f64,
    scrapes: u64,
    open: usize,
    max_open: usize,
    buf: Vec<u8>,
}

/// What one scrape saw (for self-metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcSummary {
    pub processes: usize,
    pub errors: usize,
}

impl ProcessReader {
    pub fn new(host_root: &Path, filter: ProcessFilter) -> Self {
        ProcessReader {
            proc: host_root.join("proc"),
            filter,
            prev: HashMap::new(),
            page_size: rustix::param::page_size() as f64,
            scrapes: 0,
            open: 0,
            // a quarter of the open-file limit at most
            max_open: {
                let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
                let soft = lim.current.unwrap_or(u64::MAX) / 4;
                MAX_OPEN_STATS.min(usize::try_from(soft).unwrap_or(usize::MAX))
            },
            buf: vec![0; 4096],
        }
    }

    /// Reads every process; `labels_of(cgroup_path)` names the container a
    /// process belongs to (`None`: a host process).
    pub fn scrape(
        &mut self,
        out: &mut Scrape,
        labels_of: &dyn Fn(&str) -> Option<ContainerLabels>,
    ) -> ProcSummary {
        let mut summary = ProcSummary::default();
        self.scrapes += 1;
        let Ok(dir) = std::fs::read_dir(&self.proc) else {
            summary.errors += 1;
            return summary;
        };
        let host_labels = label_set([
            ("id", "/"),
            ("name", ""),
            ("image", ""),
            ("namespace", ""),
            ("pod", ""),
            ("container", ""),
        ]);
        // per container: labels → (procs, threads, cpu ticks, rss pages)
        let mut per: BTreeMap<ContainerLabels, [u64; 4]> = BTreeMap::new();
        let mut procs: Vec<Seen> = Vec::new();
        let mut next_prev = HashMap::with_capacity(self.prev.len());
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let mut old = self.prev.remove(&pid);
            // the held handle first; a failed read means the process it was
            // opened on is gone (the pid may be reused): open afresh
            let mut st = None;
            if let Some(f) = old.as_ref().and_then(|o| o.stat.as_ref())
                && let Ok(n) = pread_all(f, &mut self.buf)
                && n > 0
            {
                st = std::str::from_utf8(&self.buf[..n])
                    .ok()
                    .and_then(|t| parse_stat(pid, t));
            }
            let mut file = old.as_mut().and_then(|o| o.stat.take());
            if st.is_none() {
                if file.take().is_some() {
                    self.open -= 1;
                }
                let base = self.proc.join(pid.to_string());
                let f = match std::fs::File::open(base.join("stat")) {
                    Ok(f) => f,
                    // exited between the listing and the read: not an error
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            || e.raw_os_error() == Some(libc::ESRCH) =>
                    {
                        continue;
                    }
                    Err(_) => {
                        summary.errors += 1;
                        continue;
                    }
                };
                let Ok(n) = pread_all(&f, &mut self.buf) else {
                    continue;
                };
                let Some(parsed) = std::str::from_utf8(&self.buf[..n])
                    .ok()
                    .and_then(|t| parse_stat(pid, t))
                else {
                    summary.errors += 1;
                    continue;
                };
                st = Some(parsed);
                if self.open < self.max_open {
                    self.open += 1;
                    file = Some(f);
                }
            }
            let Some(st) = st else { continue };
            summary.processes += 1;
            let same = old.as_ref().filter(|o| o.start == st.start);
            let cgroup = match same {
                Some(o) if o.comm == st.comm && self.scrapes - o.cgroup_read < CGROUP_RECHECK => {
                    (o.cgroup.clone(), o.cgroup_read)
                }
                _ => (
                    std::fs::read_to_string(self.proc.join(pid.to_string()).join("cgroup"))
                        .ok()
                        .and_then(|t| cgroup_path(&t)),
                    self.scrapes,
                ),
            };
            let labels = cgroup
                .0
                .as_deref()
                .and_then(labels_of)
                .unwrap_or_else(|| host_labels.clone());
            let a = per.entry(labels.clone()).or_default();
            a[0] += 1;
            a[1] += st.threads;
            a[2] += st.ticks;
            a[3] += st.rss_pages;
            let delta = match same {
                Some(p) => st.ticks.saturating_sub(p.ticks),
                None => st.ticks,
            };
            next_prev.insert(
                pid,
                Prev {
                    start: st.start,
                    ticks: st.ticks,
                    stat: file,
                    comm: st.comm.clone(),
                    cgroup: cgroup.0,
                    cgroup_read: cgroup.1,
                },
            );
            procs.push((st, delta, labels));
        }
        // processes gone since the last scrape: close their handles
        self.open -= self.prev.values().filter(|p| p.stat.is_some()).count();
        self.prev = next_prev;

        let spec = [
            (
                "vigil_container_processes",
                "Processes, from /proc, per container (id=\"/\": the host's own).",
                MetricKind::Gauge,
            ),
            (
                "vigil_container_process_threads",
                "Threads of those processes.",
                MetricKind::Gauge,
            ),
            (
                "vigil_container_process_cpu_seconds_total",
                "CPU time of those processes (live ones only).",
                MetricKind::Counter,
            ),
            (
                "vigil_container_process_resident_memory_bytes",
                "Resident memory of those processes, summed.",
                MetricKind::Gauge,
            ),
        ];
        let mut fams: Vec<MetricFamily> = spec
            .iter()
            .map(|(n, h, k)| MetricFamily::new(*n, *h, *k))
            .collect();
        for (labels, a) in &per {
            let vals = [
                a[0] as f64,
                a[1] as f64,
                a[2] as f64 / USER_HZ,
                a[3] as f64 * self.page_size,
            ];
            for (f, v) in fams.iter_mut().zip(vals) {
                f.push_shared(labels, v);
            }
        }
        out.families.extend(fams);

        // top N by CPU over the interval and by resident memory
        let n = self.filter.top_n;
        let eligible: Vec<&Seen> = procs
            .iter()
            .filter(|(p, _, _)| {
                self.filter
                    .include
                    .as_ref()
                    .is_none_or(|r| r.is_match(&p.comm))
                    && !self
                        .filter
                        .exclude
                        .as_ref()
                        .is_some_and(|r| r.is_match(&p.comm))
            })
            .collect();
        let mut by_cpu = eligible.clone();
        by_cpu.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.pid.cmp(&b.0.pid)));
        let mut by_rss = eligible;
        by_rss.sort_by(|a, b| {
            b.0.rss_pages
                .cmp(&a.0.rss_pages)
                .then(a.0.pid.cmp(&b.0.pid))
        });
        let mut chosen: BTreeMap<u32, &Seen> = BTreeMap::new();
        for p in by_cpu.into_iter().take(n).chain(by_rss.into_iter().take(n)) {
            chosen.insert(p.0.pid, p);
        }
        let mut cpu = MetricFamily::new(
            "vigil_process_cpu_seconds_total",
            "CPU time of a process among the top N by CPU or by resident memory.",
            MetricKind::Counter,
        );
        let mut rss = MetricFamily::new(
            "vigil_process_resident_memory_bytes",
            "Resident memory of a process among the top N by CPU or by resident memory.",
            MetricKind::Gauge,
        );
        let mut thr = MetricFamily::new(
            "vigil_process_threads",
            "Threads of a process among the top N by CPU or by resident memory.",
            MetricKind::Gauge,
        );
        for (st, _, labels) in chosen.values() {
            let mut l: Vec<(String, String)> = vec![
                ("pid".into(), st.pid.to_string()),
                ("comm".into(), st.comm.clone()),
            ];
            l.extend(labels.iter().cloned());
            let l: LabelSet = l.into();
            cpu.push_shared(&l, st.ticks as f64 / USER_HZ);
            rss.push_shared(&l, st.rss_pages as f64 * self.page_size);
            thr.push_shared(&l, st.threads as f64);
        }
        for f in [cpu, rss, thr] {
            if !f.samples.is_empty() {
                out.families.push(f);
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let t = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0 7 0 999 12345 300 18446744073709551615";
        let s = parse_stat(42, t).unwrap();
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.ticks, 333);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start, 999);
        assert_eq!(s.rss_pages, 300);
        assert!(parse_stat(1, "1 (x) S 1 2").is_none());
        assert!(parse_stat(1, ") (").is_none());
    }

    #[test]
    fn picks_the_container_cgroup_path() {
        assert_eq!(
            cgroup_path("0::/system.slice/x.scope\n").as_deref(),
            Some("/system.slice/x.scope")
        );
        assert_eq!(
            cgroup_path("12:cpu,cpuacct:/a\n9:memory:/libpod_parent/libpod-abc\n0::/\n").as_deref(),
            Some("/libpod_parent/libpod-abc")
        );
    }

    #[test]
    fn this_host_top_n_is_bounded_and_filtered() {
        let mut r = ProcessReader::new(
            Path::new("/"),
            ProcessFilter {
                top_n: 3,
                include: None,
                exclude: Some(Regex::new("^kworker").unwrap()),
            },
        );
        let mut s = Scrape::new(0);
        let sum = r.scrape(&mut s, &|_| None);
        assert!(sum.processes > 3);
        let cpu = s
            .families
            .iter()
            .find(|f| f.name == "vigil_process_cpu_seconds_total")
            .unwrap();
        assert!(cpu.samples.len() <= 6 && !cpu.samples.is_empty());
        let procs = s
            .families
            .iter()
            .find(|f| f.name == "vigil_container_processes")
            .unwrap();
        let total: f64 = procs.samples.iter().map(|x| x.value).sum();
        assert_eq!(total as usize, sum.processes);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}") {
            let _ = parse_stat(1, &s);
            let _ = cgroup_path(&s);
        }
    }
}
