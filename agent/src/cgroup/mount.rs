//! Where the cgroup hierarchies are mounted: read from mountinfo (v1
//! controllers, the v2 mount, hybrid), under `--host-root`.
//!
//! Not here: walking or watching the hierarchies (`discover`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::parse::ParseError;

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
    pub(super) fn is_v2(&self) -> bool {
        self.v2.is_some() && !self.v1.contains_key("memory") && !self.v1.contains_key("cpuacct")
    }
}

/// `\040` style octal escapes in mountinfo paths.
pub(super) fn unescape(s: &str) -> String {
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
