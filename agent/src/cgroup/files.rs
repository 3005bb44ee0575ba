//! A cgroup's files: which are read (v1 and v2), how they are held (opened
//! once and read with one `pread` per scrape, within an open-file budget;
//! limits re-read only when inotify reports a write) and how one is parsed
//! into the families ([`Ctx`]).
//!
//! Not here: what each file means (`v1`, `v2`), finding cgroups (`discover`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::model::LabelSet;

use super::discover;
use super::families::{Families, fam, info_of, labels_of};
use super::identity::PathIdentity;
use super::mount::Hierarchies;
use super::parse::{self, ParseError};
use super::runtime_meta::Meta;

/// The files read in a v2 cgroup, in one directory.
pub(super) const V2_FILES: [&str; 14] = [
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

pub(super) mod v2f {
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
pub(super) mod ctl {
    pub const CPUACCT: usize = 0;
    pub const CPU: usize = 1;
    pub const MEMORY: usize = 2;
    pub const BLKIO: usize = 3;
    pub const TASKS: usize = 4;
    pub const NAMES: [&str; 4] = ["cpuacct", "cpu", "memory", "blkio"];
}

/// The files read in a v1 cgroup: (controller, file).
pub(super) const V1_FILES: [(usize, &str); 18] = [
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

pub(super) mod v1f {
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
pub(super) enum Slot {
    Unknown,
    Absent,
    Open(fs::File),
    Closed,
}

/// One cgroup being reported (a container, or the root `/`).
pub(super) struct Cg {
    pub(super) rel: String,
    pub(super) ident: Option<PathIdentity>,
    pub(super) meta: Meta,
    pub(super) labels: LabelSet,
    pub(super) info: Option<LabelSet>,
    /// Directory per controller (v2: one).
    pub(super) dirs: Vec<Option<PathBuf>>,
    pub(super) names: &'static [(usize, &'static str)],
    pub(super) files: Vec<Slot>,
    pub(super) start_time: Option<f64>,
    /// Scrape number when first seen (metadata lookups are retried early on).
    pub(super) found_at: u64,
    /// Files whose last figures are still current (bit per file index):
    /// files that change only by a write or with a kernel notification,
    /// re-read when inotify reports them modified.
    pub(super) fresh: u32,
    pub(super) cached: Vec<Option<[Option<f64>; 2]>>,
    /// Files with an inotify watch of their own (bit per file index): read
    /// through [`Ctx::watched`], cached, not held open.
    pub(super) watchable: u32,
}

/// `(dir, file)` of the v2 files (all in directory 0).
pub(super) static V2_NAMES: std::sync::LazyLock<Vec<(usize, &'static str)>> =
    std::sync::LazyLock::new(|| V2_FILES.iter().map(|f| (0, *f)).collect());

impl Cg {
    pub(super) fn new(
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
            .map(vigil_common::time::unix_secs_f64);
        cg
    }

    /// Finds the cgroup's directory in each hierarchy.
    pub(super) fn locate(&mut self, h: &Hierarchies, v2: bool) {
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

    pub(super) fn path(&self, i: usize) -> PathBuf {
        let (d, name) = self.names[i];
        match &self.dirs[d] {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// The files that change only when written or notified: limits, and
    /// `memory.events`.
    pub(super) fn watch_list(&self) -> &'static [usize] {
        if self.names.len() == V2_FILES.len() {
            &[v2f::CPU_MAX, v2f::CPU_WEIGHT, v2f::MEM_MAX, v2f::MEM_EVENTS]
        } else {
            &[v1f::SHARES, v1f::PERIOD, v1f::QUOTA, v1f::LIMIT]
        }
    }

    /// Puts a watch on each file of [`Cg::watch_list`] that has none yet.
    pub(super) fn watch(&mut self, tree: &mut discover::Tree) {
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

    pub(super) fn open_files(&self) -> usize {
        self.files
            .iter()
            .filter(|s| matches!(s, Slot::Open(_)))
            .count()
    }
}

/// The scrape-wide read buffer and the open-file budget.
pub(super) struct FileIo {
    pub(super) buf: Vec<u8>,
    pub(super) open: usize,
    pub(super) max_open: usize,
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
pub(super) fn open_noatime(p: &Path) -> std::io::Result<fs::File> {
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
pub(super) fn raise_nofile() -> usize {
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
pub(super) const FD_RESERVE: usize = 2048;
/// The default of `--cgroup-open-files`.
pub const DEFAULT_OPEN_FILES: usize = 16_384;

/// Reading one cgroup: its files, the families it adds to, its errors.
pub(super) struct Ctx<'a> {
    pub(super) cg: &'a mut Cg,
    pub(super) io: &'a mut FileIo,
    pub(super) fam: &'a mut Families,
    pub(super) errors: &'a mut Vec<ParseError>,
    /// The node has no swap (`/proc/swaps` lists none): swap usage is 0
    /// without reading `memory.swap.current`.
    pub(super) swap_off: bool,
}

impl Ctx<'_> {
    /// Parses file `i` with `f`: `None` when the file does not exist, or
    /// could not be read or parsed (an error is recorded).
    pub(super) fn parse<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Option<T> {
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
    pub(super) fn watched(
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

    pub(super) fn exists(&self, i: usize) -> bool {
        !matches!(self.cg.files[i], Slot::Absent)
    }

    pub(super) fn set(&mut self, family: usize, v: f64) {
        self.fam.f[family].push_shared(&self.cg.labels, v);
    }

    pub(super) fn opt(&mut self, family: usize, v: Option<f64>) {
        if let Some(v) = v {
            self.set(family, v);
        }
    }

    /// A figure a file must hold: its absence from a file that was read is an error.
    pub(super) fn need(&mut self, i: usize, family: usize, v: Option<f64>, key: &str) {
        match v {
            Some(v) => self.set(family, v),
            None => self
                .errors
                .push(ParseError::msg(&self.cg.path(i), format!("no `{key}`"))),
        }
    }

    pub(super) fn number(&mut self, i: usize) -> Option<f64> {
        self.parse(i, |t| parse::number(t))
    }

    pub(super) fn psi(&mut self, first: usize) {
        for res in 0..3 {
            if let Some((some, full)) = self.parse(first + res, |t| parse::psi_totals(t)) {
                self.opt(fam::PSI + 2 * res, some.map(|v| v / 1e6));
                self.opt(fam::PSI + 2 * res + 1, full.map(|v| v / 1e6));
            }
        }
    }
}

/// A number file, in the shape [`Ctx::watched`] caches.
pub(super) fn one_number(t: &[u8]) -> Result<[Option<f64>; 2], String> {
    parse::number(t).map(|v| [Some(v), None])
}
