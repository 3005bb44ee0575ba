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
        for m in vigil_common::mountinfo::parse(text) {
            let dir = host_root.join(m.mount_point.trim_start_matches('/'));
            match m.fstype.as_str() {
                "cgroup2" if h.v2.is_none() => {
                    h.v2 = Some(dir);
                }
                "cgroup" => {
                    for opt in m.super_options.split(',') {
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
