//! Node-level metrics from `/proc` under `--host-root`, with node_exporter's
//! names and labels. Each reader adds its families to a [`Scrape`]; a file
//! that is missing or malformed skips that figure and is reported as an
//! error of that reader, never a failed scrape.

mod host;
mod net;
mod netclass;
mod sys;
mod textfile;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::model::{MetricFamily, MetricKind, Scrape};

/// USER_HZ: the unit of /proc/stat CPU times (100 on every Linux ABI we run on).
const USER_HZ: f64 = 100.0;

/// At most this many `/proc` files are held open between scrapes.
const MAX_HELD: usize = 64;

/// Reads node metrics from a host root (`/` on the host itself).
///
/// The files it reads are held open and read again with one `pread` each
/// scrape (the kernel regenerates them per read): no path walk, `open` or
/// `close` per file per scrape.
#[derive(Debug)]
pub struct NodeReader {
    proc: PathBuf,
    held: Mutex<Held>,
    netstat_columns: Mutex<net::Columns>,
    mounts: Mutex<host::Mounts>,
    netclass: Mutex<netclass::Devices>,
    os_release: Mutex<sys::OsRelease>,
    /// node_exporter's textfile collector's folder, when set.
    textfile: Option<PathBuf>,
}

/// Open files by name under `proc`, and the read buffer they share.
#[derive(Debug, Default)]
struct Held {
    files: HashMap<String, File>,
    buf: Vec<u8>,
}

/// A reader's failure: which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ReadError {
    pub path: PathBuf,
    pub reason: String,
}

impl ReadError {
    fn at(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        ReadError {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// A family of one unlabelled sample.
fn single(
    name: impl Into<String>,
    help: impl Into<String>,
    kind: MetricKind,
    value: f64,
) -> MetricFamily {
    let mut f = MetricFamily::new(name, help, kind);
    f.push(Vec::<(String, String)>::new(), value);
    f
}

impl NodeReader {
    pub fn new(host_root: &Path) -> Self {
        NodeReader {
            proc: host_root.join("proc"),
            held: Mutex::new(Held::default()),
            netstat_columns: Mutex::default(),
            mounts: Mutex::default(),
            netclass: Mutex::default(),
            os_release: Mutex::default(),
            textfile: None,
        }
    }

    /// Also reads the `*.prom` files in `dir` every scrape
    /// (`--textfile-directory`).
    pub fn with_textfile_directory(mut self, dir: Option<PathBuf>) -> Self {
        self.textfile = dir;
        self
    }

    /// Adds every node family it can read to `out`; returns the errors met.
    pub fn scrape(&self, out: &mut Scrape) -> Vec<ReadError> {
        let mut errors = Vec::new();
        for r in [
            Self::cpu,
            Self::meminfo,
            Self::loadavg,
            Self::vmstat,
            Self::netdev,
            Self::netclass,
            Self::diskstats,
            Self::pressure,
            Self::uname_time,
            Self::filesystems,
            Self::netstat,
            Self::sockstat,
            Self::softnet,
            Self::udp_queues,
            Self::arp,
            Self::conntrack,
            Self::filefd,
            Self::entropy,
            Self::timex,
            Self::os_release,
            Self::clocksource,
            Self::textfile,
        ] {
            if let Err(e) = r(self, out) {
                errors.push(e);
            }
        }
        errors
    }

    fn read(&self, name: &str) -> Result<String, ReadError> {
        self.load(name).map_err(|e| self.err(name, e.to_string()))
    }

    /// Like [`Self::read`], but a file the kernel does not have is `None`.
    fn read_opt(&self, name: &str) -> Result<Option<String>, ReadError> {
        match self.load(name) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(name, e.to_string())),
        }
    }

    /// The file's text. `net/…` files are read as `1/net/…` where that
    /// exists: the network namespace of the host's init. Under a mounted
    /// host `/proc` (`--host-root`, a DaemonSet without `hostNetwork`),
    /// `net/` is the agent's own namespace (`/proc/net` links to `self`), its
    /// pod's; `1/net/` is the host's. On the host itself both are the same.
    fn load(&self, name: &str) -> std::io::Result<String> {
        if name.starts_with("net/") {
            match self.load_held(&format!("1/{name}")) {
                Ok(t) => return Ok(t),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        self.load_held(name)
    }

    /// The file's text: through the held handle when there is one (a
    /// failing handle is dropped and the file opened again).
    fn load_held(&self, name: &str) -> std::io::Result<String> {
        let mut held = self.held.lock();
        let Held { files, buf } = &mut *held;
        if let Some(f) = files.get(name) {
            match crate::cgroup::pread_all(f, buf) {
                Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => {
                    files.remove(name);
                }
            }
        }
        let f = File::open(self.proc.join(name))?;
        let n = crate::cgroup::pread_all(&f, buf)?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if files.len() < MAX_HELD {
            files.insert(name.to_string(), f);
        }
        Ok(text)
    }

    fn err(&self, name: &str, reason: impl Into<String>) -> ReadError {
        ReadError::at(self.proc.join(name), reason.into())
    }

    /// A path under the host root (`rel` without its leading `/`).
    fn host_path(&self, rel: &str) -> PathBuf {
        self.proc
            .parent()
            .map_or_else(|| PathBuf::from("/").join(rel), |root| root.join(rel))
    }

    /// `node_cpu_seconds_total{cpu,mode}` and
    /// `node_cpu_guest_seconds_total{cpu,mode}` from the `cpuN` lines of
    /// /proc/stat, then the file's other counters ([`Self::stat`]).
    fn cpu(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let text = self.read("stat")?;
        let counters = self.stat(&text, out);
        let mut fam = MetricFamily::new(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            MetricKind::Counter,
        );
        let mut guest = MetricFamily::new(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            MetricKind::Counter,
        );
        const MODES: [&str; 8] = [
            "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
        ];
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let Some(name) = it.next() else { continue };
            let Some(cpu) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else {
                continue;
            };
            let vals: Vec<u64> = it.map_while(|v| v.parse().ok()).collect();
            if vals.len() < 4 {
                return Err(self.err("stat", format!("short cpu line {line:?}")));
            }
            for (mode, v) in MODES.iter().zip(vals.iter()) {
                fam.push([("cpu", cpu), ("mode", mode)], *v as f64 / USER_HZ);
            }
            // guest and guest_nice (kernels since 2.6.33)
            for (mode, v) in ["user", "nice"].iter().zip(vals.iter().skip(8)) {
                guest.push([("cpu", cpu), ("mode", mode)], *v as f64 / USER_HZ);
            }
        }
        if fam.samples.is_empty() {
            return Err(self.err("stat", "no cpuN lines"));
        }
        out.families.push(fam);
        if !guest.samples.is_empty() {
            out.families.push(guest);
        }
        counters
    }

    /// `node_memory_<Field>_bytes` for every /proc/meminfo line.
    fn meminfo(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let text = self.read("meminfo")?;
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let mut parts = rest.split_ascii_whitespace();
            let Some(Ok(v)) = parts.next().map(str::parse::<f64>) else {
                continue;
            };
            // node_exporter: "(anon)" → "_anon", "(file)" → "_file"; only
            // fields in kB get `_bytes` (HugePages_Total etc. are counts)
            let key = key.replace('(', "_").replace(')', "");
            let (v, key) = if parts.next() == Some("kB") {
                (v * 1024.0, format!("{key}_bytes"))
            } else {
                (v, key)
            };
            let mut fam = MetricFamily::new(
                format!("node_memory_{key}"),
                format!("Memory information field {key}."),
                MetricKind::Gauge,
            );
            fam.push(Vec::<(String, String)>::new(), v);
            out.families.push(fam);
        }
        Ok(())
    }

    /// `node_load1`, `node_load5`, `node_load15`.
    fn loadavg(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let text = self.read("loadavg")?;
        let parts: Vec<f64> = text
            .split_ascii_whitespace()
            .take(3)
            .map(|v| v.parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| self.err("loadavg", e.to_string()))?;
        if parts.len() != 3 {
            return Err(self.err("loadavg", "fewer than 3 fields"));
        }
        for (name, v) in ["node_load1", "node_load5", "node_load15"]
            .iter()
            .zip(parts)
        {
            let mut fam = MetricFamily::new(
                *name,
                format!("{}m load average.", &name[9..]),
                MetricKind::Gauge,
            );
            fam.push(Vec::<(String, String)>::new(), v);
            out.families.push(fam);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host() {
        let mut s = Scrape::new(0);
        let errs = NodeReader::new(Path::new("/")).scrape(&mut s);
        assert!(errs.is_empty(), "{errs:?}");
        let names: Vec<_> = s.families.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"node_cpu_seconds_total"));
        assert!(names.contains(&"node_memory_MemTotal_bytes"));
        assert!(names.contains(&"node_load1"));
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(d.path().join("proc/stat"), "cpu0 1 2\n").unwrap();
        std::fs::write(d.path().join("proc/meminfo"), "garbage\nMemTotal: x kB\n").unwrap();
        std::fs::write(d.path().join("proc/loadavg"), "0.1 nope").unwrap();
        let mut s = Scrape::new(0);
        let errs = NodeReader::new(d.path()).scrape(&mut s);
        // the malformed files are errors (the missing ones too), the good
        // meminfo line is read, nothing panics
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.contains("short cpu line")),
            "{text:?}"
        );
        assert!(text.iter().any(|e| e.contains("loadavg")), "{text:?}");
        assert!(!text.iter().any(|e| e.contains("meminfo")), "{text:?}");
    }
}
