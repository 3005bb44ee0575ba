//! Memory pressure: the collector's memory limit (its own cgroup's, or
//! `--memory-limit`) and the guard that refuses **new** series while the
//! process' resident memory is above `--memory-pressure-fraction` of it, so a
//! cardinality burst is refused and counted instead of ending in an OOM kill.
//! Series the store already holds keep ingesting; the guard lets new series
//! in again by itself once memory is back under the fraction minus
//! [`HYSTERESIS`].
//!
//! Memory use is the process' resident set (`VmRSS` of `/proc/self/status`):
//! the part the kernel cannot reclaim without killing (there is no swap in
//! a memory-limited container, and the page cache of the WAL, which a cgroup
//! also charges, is reclaimed before an OOM kill).
//!
//! The limit is read once at start: cgroup v1 `memory.stat`
//! `hierarchical_memory_limit` (the lowest limit of the cgroup and its
//! ancestors; `memory.limit_in_bytes` where absent) or cgroup v2 `memory.max`
//! (the lowest along the path up to the mount), for the cgroup that
//! `/proc/self/cgroup` names, found under the mount `/proc/self/mountinfo`
//! names. Not here: refusing what the store already holds (that is
//! `--memory-budget`, which drops the oldest chunks), or limits of rules'
//! output (recording rules are the operator's own series).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use vigil_common::mountinfo;

/// New series are let in again below `fraction − HYSTERESIS` of the limit
/// (so the state does not flap at the threshold).
pub const HYSTERESIS: f64 = 0.05;

/// How stale the measured memory use may be when a new series asks.
const MAX_AGE_MS: u64 = 100;

/// A limit found for this process, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundLimit {
    pub bytes: u64,
    /// The cgroup directory whose file gave it.
    pub cgroup: PathBuf,
}

/// Reads this process' memory limit from its cgroup (v1 memory controller,
/// else v2). `proc_root` is `/proc/self` in production; tests pass a fixture
/// tree whose `cgroup` and `mountinfo` name directories under `fs_root`.
/// `None`: no cgroup, or no limit set.
pub fn cgroup_limit(proc_root: &Path, fs_root: &Path) -> Option<FoundLimit> {
    let cgroups = std::fs::read_to_string(proc_root.join("cgroup")).ok()?;
    let mounts = std::fs::read_to_string(proc_root.join("mountinfo")).ok()?;
    let mounts = mountinfo::parse(&mounts);
    let mut v1_path = None;
    let mut v2_path = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2_path = Some(path.to_string());
        } else if ctrls.split(',').any(|c| c == "memory") {
            v1_path = Some(path.to_string());
        }
    }
    let under = |m: &mountinfo::Mount, path: &str| -> PathBuf {
        // inside a container the mount's root is the container's own cgroup
        let rel = path
            .strip_prefix(m.root.as_str())
            .unwrap_or(path)
            .trim_start_matches('/');
        let dir = fs_root.join(m.mount_point.trim_start_matches('/'));
        if rel.is_empty() { dir } else { dir.join(rel) }
    };
    if let Some(path) = v1_path
        && let Some(m) = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"))
    {
        let dir = under(m, &path);
        let from_stat = std::fs::read_to_string(dir.join("memory.stat"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("hierarchical_memory_limit ")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
            });
        let bytes = from_stat.or_else(|| {
            std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        })?;
        // v1 writes "no limit" as the largest page-aligned i64
        if bytes >= 1 << 62 {
            return None;
        }
        return Some(FoundLimit { bytes, cgroup: dir });
    }
    let path = v2_path?;
    let m = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    let top = fs_root.join(m.mount_point.trim_start_matches('/'));
    let mut dir = under(m, &path);
    let mut best: Option<FoundLimit> = None;
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join("memory.max"))
            && let Ok(v) = s.trim().parse::<u64>()
            && best.as_ref().is_none_or(|b| v < b.bytes)
        {
            best = Some(FoundLimit {
                bytes: v,
                cgroup: dir.clone(),
            });
        }
        if dir == top || !dir.pop() || !dir.starts_with(&top) {
            break;
        }
    }
    best
}

/// The resident set of this process in bytes (`VmRSS`), if readable.
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&s)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Refuses new series while memory use is above the threshold.
#[derive(Debug)]
pub struct MemoryGuard {
    limit: u64,
    fraction: f64,
    /// Refuse at or above this many bytes…
    high: u64,
    /// …and admit again below this many.
    low: u64,
    used: AtomicU64,
    pressure: AtomicBool,
    /// Milliseconds since `epoch` of the last measurement.
    measured_ms: AtomicU64,
    epoch: Instant,
    /// New series refused.
    refused: AtomicU64,
    /// Times the guard went from admitting to refusing.
    episodes: AtomicU64,
    measure: fn() -> Option<u64>,
}

/// The guard's state for telemetry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardStats {
    pub limit: u64,
    pub fraction: f64,
    pub used: u64,
    pub pressure: bool,
    pub refused_series: u64,
    pub episodes: u64,
}

impl MemoryGuard {
    /// A guard for `limit` bytes that refuses new series above
    /// `fraction × limit` (0 < fraction ≤ 1).
    pub fn new(limit: u64, fraction: f64) -> Self {
        Self::with_measure(limit, fraction, resident_bytes)
    }

    /// Like [`MemoryGuard::new`] with another way of measuring (tests).
    pub fn with_measure(limit: u64, fraction: f64, measure: fn() -> Option<u64>) -> Self {
        let high = (limit as f64 * fraction) as u64;
        let low = (limit as f64 * (fraction - HYSTERESIS).max(0.0)) as u64;
        let g = MemoryGuard {
            limit,
            fraction,
            high,
            low,
            used: AtomicU64::new(0),
            pressure: AtomicBool::new(false),
            measured_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            refused: AtomicU64::new(0),
            episodes: AtomicU64::new(0),
            measure,
        };
        g.refresh();
        g
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Measures now and updates the state (also called every second by the
    /// collector, so the state recovers without traffic).
    pub fn refresh(&self) {
        self.measured_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let Some(used) = (self.measure)() else {
            return;
        };
        self.observe(used);
    }

    /// Updates the state for a measured `used` bytes.
    fn observe(&self, used: u64) {
        self.used.store(used, Ordering::Relaxed);
        let was = self.pressure.load(Ordering::Relaxed);
        let now = if was {
            used >= self.low
        } else {
            used >= self.high
        };
        if now != was && self.pressure.swap(now, Ordering::Relaxed) == was {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            if now {
                self.episodes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    used_mib = mib(used),
                    limit_mib = mib(self.limit),
                    fraction = self.fraction,
                    "memory pressure: new series are refused until memory use falls below {:.0} MiB",
                    mib(self.low)
                );
            } else {
                tracing::info!(
                    used_mib = mib(used),
                    limit_mib = mib(self.limit),
                    "memory pressure over: new series are accepted again"
                );
            }
        }
    }

    /// Whether a new series must be refused now (measures again when the
    /// last measurement is older than 100 ms). Counts the refusal.
    pub fn refuse_new_series(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        if now.saturating_sub(self.measured_ms.load(Ordering::Relaxed)) >= MAX_AGE_MS {
            self.refresh();
        }
        let refuse = self.pressure.load(Ordering::Relaxed);
        if refuse {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        refuse
    }

    /// Memory in use at the last measurement.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> GuardStats {
        GuardStats {
            limit: self.limit,
            fraction: self.fraction,
            used: self.used(),
            pressure: self.pressure.load(Ordering::Relaxed),
            refused_series: self.refused.load(Ordering::Relaxed),
            episodes: self.episodes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_fraction_and_recovers_below_it_minus_hysteresis() {
        let g = MemoryGuard::with_measure(1000, 0.8, || None);
        assert!(!g.refuse_new_series());
        g.observe(799);
        assert!(!g.refuse_new_series());
        g.observe(800);
        assert!(g.stats().pressure);
        assert!(g.refuse_new_series());
        // between low (750) and high: still refusing
        g.observe(760);
        assert!(g.refuse_new_series());
        g.observe(749);
        assert!(!g.refuse_new_series());
        g.observe(790);
        assert!(!g.refuse_new_series());
        let s = g.stats();
        assert_eq!((s.refused_series, s.episodes, s.used), (2, 1, 790));
    }

    #[test]
    fn vm_rss() {
        let s = "Name:\tx\nVmPeak:\t 100 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(s), Some(2 << 20));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: lots kB\n"), None);
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    // lines as this machine's kernel writes them (hybrid hierarchy)
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_hierarchical_limit_of_the_own_cgroup() {
        let d = tree(&[
            ("proc/cgroup", "4:memory:/vigil/c1\n1:cpu:/\n0::/\n"),
            ("proc/mountinfo", HYBRID_MOUNTINFO),
            (
                "sys/fs/cgroup/memory/vigil/c1/memory.stat",
                "cache 0\nrss 4096\nhierarchical_memory_limit 268435456\nhierarchical_memsw_limit 9223372036854771712\n",
            ),
            (
                "sys/fs/cgroup/memory/vigil/c1/memory.limit_in_bytes",
                "536870912\n",
            ),
        ]);
        let got = cgroup_limit(&d.path().join("proc"), d.path()).unwrap();
        assert_eq!(got.bytes, 268_435_456);
        assert_eq!(got.cgroup, d.path().join("sys/fs/cgroup/memory/vigil/c1"));
    }

    #[test]
    fn v1_without_a_limit_is_none_and_limit_in_bytes_is_the_fallback() {
        let d = tree(&[
            ("proc/cgroup", "4:memory:/\n"),
            ("proc/mountinfo", HYBRID_MOUNTINFO),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(cgroup_limit(&d.path().join("proc"), d.path()), None);
        let d = tree(&[
            ("proc/cgroup", "4:memory:/a\n"),
            ("proc/mountinfo", HYBRID_MOUNTINFO),
            (
                "sys/fs/cgroup/memory/a/memory.limit_in_bytes",
                "104857600\n",
            ),
        ]);
        assert_eq!(
            cgroup_limit(&d.path().join("proc"), d.path()).map(|l| l.bytes),
            Some(104_857_600)
        );
    }

    #[test]
    fn v2_lowest_limit_up_the_path_and_container_mount_roots() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let d = tree(&[
            ("proc/cgroup", "0::/kubepods.slice/pod1.slice/cri-x.scope\n"),
            ("proc/mountinfo", mi),
            ("sys/fs/cgroup/kubepods.slice/memory.max", "max\n"),
            (
                "sys/fs/cgroup/kubepods.slice/pod1.slice/memory.max",
                "134217728\n",
            ),
            (
                "sys/fs/cgroup/kubepods.slice/pod1.slice/cri-x.scope/memory.max",
                "268435456\n",
            ),
        ]);
        let got = cgroup_limit(&d.path().join("proc"), d.path()).unwrap();
        assert_eq!(got.bytes, 134_217_728);
        // in a container: the mount's root is the container's cgroup
        let mi = "30 25 0:26 /kubepods.slice/pod1.slice/cri-x.scope /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let d = tree(&[
            ("proc/cgroup", "0::/kubepods.slice/pod1.slice/cri-x.scope\n"),
            ("proc/mountinfo", mi),
            ("sys/fs/cgroup/memory.max", "67108864\n"),
        ]);
        let got = cgroup_limit(&d.path().join("proc"), d.path()).unwrap();
        assert_eq!(got.bytes, 67_108_864);
        // no limit anywhere
        let d = tree(&[
            ("proc/cgroup", "0::/a\n"),
            ("proc/mountinfo", mi),
            ("sys/fs/cgroup/memory.max", "max\n"),
        ]);
        assert_eq!(cgroup_limit(&d.path().join("proc"), d.path()), None);
    }

    #[test]
    fn no_cgroup_files_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_limit(d.path(), d.path()), None);
    }
}
