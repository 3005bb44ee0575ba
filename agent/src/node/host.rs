//! The rest of node_exporter's default Linux set, read from `/proc` (and
//! `statvfs` for filesystems) under `--host-root`: network devices, disks,
//! filesystems, `/proc/stat` counters, vmstat, PSI, uname and time. Names,
//! labels, types and units are node_exporter 1.x's, so its dashboards and
//! alerts work unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use super::{NodeReader, ReadError};
use crate::model::{LabelSet, MetricFamily, MetricKind, Scrape, label_set};

/// node_exporter's default `--collector.diskstats.device-exclude`.
const DISK_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";
/// node_exporter's default mount point and filesystem type excludes.
const MOUNT_EXCLUDE: &str =
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
const FSTYPE_EXCLUDE: &str = r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";
/// A filesystem whose statvfs takes longer is reported as a device error
/// (a dead NFS mount must not hang the scrape).
const STATFS_TIMEOUT: Duration = Duration::from_secs(1);

/// The excludes, compiled once.
static DISK_RE: std::sync::LazyLock<Result<regex::Regex, regex::Error>> =
    std::sync::LazyLock::new(|| regex::Regex::new(DISK_EXCLUDE));
static MOUNT_RE: std::sync::LazyLock<Result<regex::Regex, regex::Error>> =
    std::sync::LazyLock::new(|| regex::Regex::new(MOUNT_EXCLUDE));
static FSTYPE_RE: std::sync::LazyLock<Result<regex::Regex, regex::Error>> =
    std::sync::LazyLock::new(|| regex::Regex::new(FSTYPE_EXCLUDE));

/// Mount points whose `statvfs` has not returned yet (a dead network mount):
/// skipped, with `node_filesystem_device_error` 1, until it does.
static STUCK: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
    std::sync::LazyLock::new(Default::default);

fn family(name: &str, help: &str, kind: MetricKind) -> MetricFamily {
    MetricFamily::new(name, help, kind)
}

impl NodeReader {
    /// `/proc/stat`: context switches, forks, interrupts, boot time, procs.
    pub(super) fn stat(&self, text: &str, out: &mut Scrape) -> Result<(), ReadError> {
        let mut found = 0;
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(key), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(v) = v.parse::<f64>() else {
                continue;
            };
            let (name, help, kind) = match key {
                "ctxt" => (
                    "node_context_switches_total",
                    "Total number of context switches.",
                    MetricKind::Counter,
                ),
                "processes" => (
                    "node_forks_total",
                    "Total number of forks.",
                    MetricKind::Counter,
                ),
                "intr" => (
                    "node_intr_total",
                    "Total number of interrupts serviced.",
                    MetricKind::Counter,
                ),
                "btime" => (
                    "node_boot_time_seconds",
                    "Node boot time, in unixtime.",
                    MetricKind::Gauge,
                ),
                "procs_running" => (
                    "node_procs_running",
                    "Number of processes in runnable state.",
                    MetricKind::Gauge,
                ),
                "procs_blocked" => (
                    "node_procs_blocked",
                    "Number of processes blocked waiting for I/O to complete.",
                    MetricKind::Gauge,
                ),
                _ => continue,
            };
            let mut f = family(name, help, kind);
            f.push(Vec::<(String, String)>::new(), v);
            out.families.push(f);
            found += 1;
        }
        if found == 0 {
            return Err(self.err("stat", "no ctxt/processes/btime lines"));
        }
        Ok(())
    }

    /// `/proc/vmstat` fields node_exporter exports by default
    /// (`^(oom_kill|pgpg|pswp|pg.*fault).*`), as untyped `node_vmstat_<field>`.
    pub(super) fn vmstat(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let text = self.read("vmstat")?;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let keep = k.starts_with("oom_kill")
                || k.starts_with("pgpg")
                || k.starts_with("pswp")
                || (k.starts_with("pg") && k.contains("fault"));
            if !keep {
                continue;
            }
            let Ok(v) = v.trim().parse::<f64>() else {
                continue;
            };
            let mut f = family(
                &format!("node_vmstat_{k}"),
                &format!("/proc/vmstat information field {k}."),
                MetricKind::Untyped,
            );
            f.push(Vec::<(String, String)>::new(), v);
            out.families.push(f);
        }
        Ok(())
    }

    /// `/proc/net/dev`: `node_network_{receive,transmit}_*_total{device}`.
    pub(super) fn netdev(&self, out: &mut Scrape) -> Result<(), ReadError> {
        const RX: [&str; 8] = [
            "bytes",
            "packets",
            "errs",
            "drop",
            "fifo",
            "frame",
            "compressed",
            "multicast",
        ];
        const TX: [&str; 8] = [
            "bytes",
            "packets",
            "errs",
            "drop",
            "fifo",
            "colls",
            "carrier",
            "compressed",
        ];
        let text = self.read("net/dev")?;
        let mut fams: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for line in text.lines().skip(2) {
            let Some((dev, rest)) = line.split_once(':') else {
                continue;
            };
            let dev = dev.trim();
            let vals: Vec<f64> = rest
                .split_ascii_whitespace()
                .map_while(|v| v.parse().ok())
                .collect();
            if vals.len() < 16 {
                return Err(self.err("net/dev", format!("short line for {dev:?}")));
            }
            for (dir, names, off) in [("receive", &RX, 0), ("transmit", &TX, 8)] {
                for (i, n) in names.iter().enumerate() {
                    let name = format!("node_network_{dir}_{n}_total");
                    fams.entry(name.clone())
                        .or_insert_with(|| {
                            family(
                                &name,
                                &format!("Network device statistic {dir}_{n}."),
                                MetricKind::Counter,
                            )
                        })
                        .push([("device", dev)], vals[off + i]);
                }
            }
        }
        out.families.extend(fams.into_values());
        Ok(())
    }

    /// `/proc/diskstats`: node_exporter's `node_disk_*{device}` (whole disks).
    pub(super) fn diskstats(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let text = self.read("diskstats")?;
        let exclude = DISK_RE
            .as_ref()
            .map_err(|e| self.err("diskstats", e.to_string()))?;
        // (field index after the device name, name, help, kind, scale)
        const FIELDS: [(usize, &str, &str, MetricKind, f64); 17] = [
            (
                0,
                "node_disk_reads_completed_total",
                "The total number of reads completed successfully.",
                MetricKind::Counter,
                1.0,
            ),
            (
                1,
                "node_disk_reads_merged_total",
                "The total number of reads merged.",
                MetricKind::Counter,
                1.0,
            ),
            (
                2,
                "node_disk_read_bytes_total",
                "The total number of bytes read successfully.",
                MetricKind::Counter,
                512.0,
            ),
            (
                3,
                "node_disk_read_time_seconds_total",
                "The total number of seconds spent by all reads.",
                MetricKind::Counter,
                0.001,
            ),
            (
                4,
                "node_disk_writes_completed_total",
                "The total number of writes completed successfully.",
                MetricKind::Counter,
                1.0,
            ),
            (
                5,
                "node_disk_writes_merged_total",
                "The number of writes merged.",
                MetricKind::Counter,
                1.0,
            ),
            (
                6,
                "node_disk_written_bytes_total",
                "The total number of bytes written successfully.",
                MetricKind::Counter,
                512.0,
            ),
            (
                7,
                "node_disk_write_time_seconds_total",
                "This is the total number of seconds spent by all writes.",
                MetricKind::Counter,
                0.001,
            ),
            (
                8,
                "node_disk_io_now",
                "The number of I/Os currently in progress.",
                MetricKind::Gauge,
                1.0,
            ),
            (
                9,
                "node_disk_io_time_seconds_total",
                "Total seconds spent doing I/Os.",
                MetricKind::Counter,
                0.001,
            ),
            (
                10,
                "node_disk_io_time_weighted_seconds_total",
                "The weighted # of seconds spent doing I/Os.",
                MetricKind::Counter,
                0.001,
            ),
            (
                11,
                "node_disk_discards_completed_total",
                "The total number of discards completed successfully.",
                MetricKind::Counter,
                1.0,
            ),
            (
                12,
                "node_disk_discards_merged_total",
                "The total number of discards merged.",
                MetricKind::Counter,
                1.0,
            ),
            (
                13,
                "node_disk_discarded_sectors_total",
                "The total number of sectors discarded successfully.",
                MetricKind::Counter,
                1.0,
            ),
            (
                14,
                "node_disk_discard_time_seconds_total",
                "This is the total number of seconds spent by all discards.",
                MetricKind::Counter,
                0.001,
            ),
            (
                15,
                "node_disk_flush_requests_total",
                "The total number of flush requests completed successfully",
                MetricKind::Counter,
                1.0,
            ),
            (
                16,
                "node_disk_flush_requests_time_seconds_total",
                "This is the total number of seconds spent by all flush requests.",
                MetricKind::Counter,
                0.001,
            ),
        ];
        let mut fams: Vec<MetricFamily> = FIELDS
            .iter()
            .map(|(_, n, h, k, _)| family(n, h, *k))
            .collect();
        let mut info = family(
            "node_disk_info",
            "Info of /sys/block/<block_device>.",
            MetricKind::Gauge,
        );
        for line in text.lines() {
            let parts: Vec<&str> = line.split_ascii_whitespace().collect();
            if parts.len() < 14 {
                continue;
            }
            let dev = parts[2];
            if exclude.is_match(dev) {
                continue;
            }
            let vals: Vec<f64> = parts[3..].iter().map_while(|v| v.parse().ok()).collect();
            for (i, (idx, _, _, _, scale)) in FIELDS.iter().enumerate() {
                if let Some(v) = vals.get(*idx) {
                    fams[i].push([("device", dev)], v * scale);
                }
            }
            // what udev knows of the disk (nothing where udev does not run)
            let udev = self.udev_block(parts[0], parts[1]);
            let u = |k: &str| udev.get(k).map_or("", String::as_str);
            info.push(
                [
                    ("device", dev),
                    ("major", parts[0]),
                    ("minor", parts[1]),
                    ("path", u("ID_PATH")),
                    ("wwn", u("ID_WWN")),
                    ("model", u("ID_MODEL")),
                    ("serial", u("ID_SERIAL_SHORT")),
                    ("revision", u("ID_REVISION")),
                ],
                1.0,
            );
        }
        fams.push(info);
        out.families
            .extend(fams.into_iter().filter(|f| !f.samples.is_empty()));
        Ok(())
    }

    /// The `E:KEY=value` properties of a block device in udev's database
    /// (`/run/udev/data/b<major>:<minor>` under the host root); empty when
    /// there is none.
    fn udev_block(&self, major: &str, minor: &str) -> std::collections::HashMap<String, String> {
        let path = self.host_path(&format!("run/udev/data/b{major}:{minor}"));
        std::fs::read_to_string(path)
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.strip_prefix("E:")?.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `/proc/pressure/*`: `node_pressure_{cpu,memory,io}_{waiting,stalled}_seconds_total`.
    pub(super) fn pressure(&self, out: &mut Scrape) -> Result<(), ReadError> {
        for res in ["cpu", "memory", "io"] {
            let name = format!("pressure/{res}");
            let Ok(text) = self.read(&name) else {
                // kernels without PSI: node_exporter reports nothing either
                continue;
            };
            for line in text.lines() {
                let mut it = line.split_ascii_whitespace();
                let kind = it.next();
                let total = it
                    .find_map(|f| f.strip_prefix("total="))
                    .and_then(|v| v.parse::<f64>().ok());
                let Some(total) = total else {
                    return Err(self.err(&name, format!("no total= in {line:?}")));
                };
                let (suffix, help) = match kind {
                    Some("some") => (
                        "waiting",
                        format!("Total time in seconds that processes have waited for {res}"),
                    ),
                    // node_exporter exports no cpu "full" line
                    Some("full") if res != "cpu" => (
                        "stalled",
                        format!(
                            "Total time in seconds no process could make progress due to {res} congestion"
                        ),
                    ),
                    _ => continue,
                };
                let mut f = family(
                    &format!("node_pressure_{res}_{suffix}_seconds_total"),
                    &help,
                    MetricKind::Counter,
                );
                f.push(Vec::<(String, String)>::new(), total / 1e6);
                out.families.push(f);
            }
        }
        Ok(())
    }

    /// `node_uname_info` and `node_time_seconds`.
    pub(super) fn uname_time(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let k = |n: &str| {
            self.read(&format!("sys/kernel/{n}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let mut f = family(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            MetricKind::Gauge,
        );
        f.push(
            [
                ("domainname", k("domainname")),
                ("machine", std::env::consts::ARCH.to_string()),
                ("nodename", k("hostname")),
                ("release", k("osrelease")),
                ("sysname", k("ostype")),
                ("version", k("version")),
            ],
            1.0,
        );
        out.families.push(f);
        let mut t = family(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            MetricKind::Gauge,
        );
        let now = vigil_common::time::now_secs_f64();
        t.push(Vec::<(String, String)>::new(), now);
        out.families.push(t);
        Ok(())
    }

    /// `node_filesystem_*{device,fstype,mountpoint}` for real filesystems
    /// (node_exporter's default excludes); `statvfs` runs on a helper thread
    /// with a timeout so a dead mount cannot hang the scrape.
    pub(super) fn filesystems(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let text = self
            .read("1/mountinfo")
            .or_else(|_| self.read("self/mountinfo"))?;
        let mexcl = MOUNT_RE
            .as_ref()
            .map_err(|e| self.err("mountinfo", e.to_string()))?;
        let fexcl = FSTYPE_RE
            .as_ref()
            .map_err(|e| self.err("mountinfo", e.to_string()))?;
        let root = self.host_path("");
        let names = [
            ("node_filesystem_size_bytes", "Filesystem size in bytes."),
            (
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
            ),
            (
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
            ),
            ("node_filesystem_files", "Filesystem total file nodes."),
            (
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
            ),
            ("node_filesystem_readonly", "Filesystem read-only status."),
            (
                "node_filesystem_device_error",
                "Whether an error occurred while getting statistics for the given device.",
            ),
        ];
        let mut fams: Vec<MetricFamily> = names
            .iter()
            .map(|(n, h)| family(n, h, MetricKind::Gauge))
            .collect();
        // the mount table rarely changes: parsed again only when it did
        let mut cache = self.mounts.lock();
        if cache.text != text {
            cache.list = parse_mounts(&text, &root, mexcl, fexcl);
            cache.text = text;
        }
        let mounts = cache.list.clone();
        drop(cache);
        // One long-lived thread statvfs-es every mount in turn; a call that
        // does not return in time marks its mount stuck and ends this
        // scrape's calls (the rest are reported as errors), and the mount is
        // skipped until the call returns.
        let stuck_now: std::collections::HashSet<PathBuf> =
            STUCK.lock().map(|s| s.clone()).unwrap_or_default();
        let todo: Vec<PathBuf> = mounts
            .iter()
            .map(|m| m.0.clone())
            .filter(|p| !stuck_now.contains(p))
            .collect();
        let wanted = todo.len();
        let (tx, rx) = mpsc::channel();
        if !todo.is_empty() {
            statfs_worker(todo, tx);
        }
        let mut results = std::collections::HashMap::new();
        for _ in 0..wanted {
            match rx.recv_timeout(STATFS_TIMEOUT) {
                Ok((p, Ok(st))) => {
                    results.insert(p, st);
                }
                Ok((_, Err(_))) => {}
                Err(_) => break,
            }
        }
        for (path, labels, ro) in mounts {
            match results.get(&path) {
                Some(st) => {
                    let bs = st.f_frsize as f64;
                    let vals = [
                        st.f_blocks as f64 * bs,
                        st.f_bfree as f64 * bs,
                        st.f_bavail as f64 * bs,
                        st.f_files as f64,
                        st.f_ffree as f64,
                        f64::from(u8::from(ro)),
                        0.0,
                    ];
                    for (f, v) in fams.iter_mut().zip(vals) {
                        f.push_shared(&labels, v);
                    }
                }
                None => {
                    fams[5].push_shared(&labels, f64::from(u8::from(ro)));
                    fams[6].push_shared(&labels, 1.0);
                }
            }
        }
        out.families
            .extend(fams.into_iter().filter(|f| !f.samples.is_empty()));
        Ok(())
    }
}

/// The last mount table read, and the filesystems it lists.
#[derive(Debug, Default)]
pub(super) struct Mounts {
    text: String,
    list: Vec<(PathBuf, LabelSet, bool)>,
}

/// The filesystems of a mountinfo text node_exporter reports by default:
/// (path under the host root, `device`/`fstype`/`mountpoint`, read-only).
fn parse_mounts(
    text: &str,
    root: &std::path::Path,
    mexcl: &regex::Regex,
    fexcl: &regex::Regex,
) -> Vec<(PathBuf, LabelSet, bool)> {
    let mut seen = std::collections::HashSet::new();
    let mut mounts = Vec::new();
    for line in text.lines() {
        // id parent maj:min root mountpoint opts … - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 2 {
            continue;
        }
        let mountpoint = unescape(l[4]);
        let fstype = r[0];
        let device = unescape(r[1]);
        if mexcl.is_match(&mountpoint) || fexcl.is_match(fstype) {
            continue;
        }
        if !seen.insert((device.clone(), mountpoint.clone())) {
            continue;
        }
        let path = root.join(mountpoint.trim_start_matches('/'));
        let labels = label_set([
            ("device", device),
            ("fstype", fstype.to_string()),
            ("mountpoint", mountpoint),
        ]);
        let ro = l[5].split(',').any(|o| o == "ro");
        mounts.push((path, labels, ro));
    }
    mounts
}

/// The mounts one scrape wants `statvfs`-ed, and where the answers go.
type StatfsJob = (
    Vec<PathBuf>,
    mpsc::Sender<(PathBuf, rustix::io::Result<rustix::fs::StatVfs>)>,
);

/// The thread that runs `statvfs` calls, kept between scrapes (a thread per
/// scrape cost more than the calls), and whether it finished its last job.
struct StatfsWorker {
    jobs: mpsc::Sender<StatfsJob>,
    idle: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

static STATFS: std::sync::Mutex<Option<StatfsWorker>> = std::sync::Mutex::new(None);

/// Hands `paths` to the statvfs thread, starting a new one when there is
/// none or the last one is still inside a call (a dead mount): that one
/// ends when its call returns and finds its queue gone.
fn statfs_worker(
    paths: Vec<PathBuf>,
    answers: mpsc::Sender<(PathBuf, rustix::io::Result<rustix::fs::StatVfs>)>,
) {
    use std::sync::atomic::Ordering;
    let Ok(mut slot) = STATFS.lock() else {
        return;
    };
    if slot
        .as_ref()
        .is_none_or(|w| !w.idle.load(Ordering::Acquire))
    {
        let (jobs, rx) = mpsc::channel::<StatfsJob>();
        let idle = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = idle.clone();
        let spawned = std::thread::Builder::new()
            .name("statvfs".into())
            .spawn(move || {
                for (paths, answers) in rx {
                    for p in paths {
                        if let Ok(mut s) = STUCK.lock() {
                            s.insert(p.clone());
                        }
                        let r = rustix::fs::statvfs(&p);
                        if let Ok(mut s) = STUCK.lock() {
                            s.remove(&p);
                        }
                        if answers.send((p, r)).is_err() {
                            break;
                        }
                    }
                    flag.store(true, Ordering::Release);
                }
            });
        if spawned.is_err() {
            *slot = None;
            return;
        }
        *slot = Some(StatfsWorker { jobs, idle });
    }
    if let Some(w) = slot.as_ref() {
        w.idle.store(false, Ordering::Release);
        if w.jobs.send((paths, answers)).is_err() {
            *slot = None;
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
use vigil_common::mountinfo::unescape;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/x\"), r"/x\");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
    }

    #[test]
    fn truncated_and_garbage_files_are_errors_or_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proc");
        std::fs::create_dir_all(p.join("net")).unwrap();
        std::fs::create_dir_all(p.join("pressure")).unwrap();
        std::fs::write(p.join("net/dev"), "h1\nh2\n eth0: 1 2 3\n").unwrap();
        std::fs::write(p.join("diskstats"), "8 0 sda 1 2 x\n").unwrap();
        std::fs::write(p.join("pressure/cpu"), "some avg10=0.00\n").unwrap();
        std::fs::write(p.join("vmstat"), "oom_kill nope\npgmajfault 7\n").unwrap();
        let r = NodeReader::new(d.path());
        let mut s = Scrape::new(0);
        assert!(r.netdev(&mut s).is_err());
        assert!(r.diskstats(&mut s).is_ok());
        assert!(r.pressure(&mut s).is_err());
        r.vmstat(&mut s).unwrap();
        let names: Vec<_> = s.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["node_vmstat_pgmajfault"]);
    }

    proptest::proptest! {
        #[test]
        fn readers_never_panic(text in "\\PC{0,200}") {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("proc");
            std::fs::create_dir_all(p.join("net")).unwrap();
            std::fs::create_dir_all(p.join("pressure")).unwrap();
            std::fs::create_dir_all(p.join("1")).unwrap();
            for f in ["stat", "vmstat", "net/dev", "diskstats", "pressure/io", "1/mountinfo"] {
                std::fs::write(p.join(f), &text).unwrap();
            }
            let r = NodeReader::new(d.path());
            let mut s = Scrape::new(0);
            let _ = r.stat(&text, &mut s);
            let _ = r.vmstat(&mut s);
            let _ = r.netdev(&mut s);
            let _ = r.diskstats(&mut s);
            let _ = r.pressure(&mut s);
            let _ = r.filesystems(&mut s);
        }
    }
}
