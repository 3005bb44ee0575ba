//! Prometheus's `file_sd` files: a list of `{targets: [...], labels: {...}}`
//! in JSON (`.json`) or YAML (`.yml`, `.yaml`), paths with globs. Targets get
//! `__meta_filepath`. [`Watcher::poll`] is cheap (a `stat` per file) and
//! re-reads only what changed, or everything once `refresh_interval` passed.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use vigil_common::Labels;
use vigil_common::relabel::is_legacy_label_name;

use super::TargetGroup;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Why a file was not used (its last good groups stay).
#[derive(Debug, thiserror::Error)]
pub enum FileSdError {
    #[error("file_sd {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("file_sd pattern {pattern:?}: {message}")]
    Glob { pattern: String, message: String },
}

/// (mtime ns, size, inode): a file changed when this did.
type Stamp = (i128, u64, u64);

pub struct Watcher {
    patterns: Vec<String>,
    refresh: Duration,
    last_full: Option<Instant>,
    files: HashMap<PathBuf, (Stamp, Vec<TargetGroup>)>,
}

impl Watcher {
    pub fn new(patterns: Vec<String>, refresh: Duration) -> Self {
        Watcher {
            patterns,
            refresh,
            last_full: None,
            files: HashMap::new(),
        }
    }

    /// The groups of every matching file, when anything changed since the last
    /// poll (`None`: nothing did), and what could not be read.
    pub fn poll(&mut self) -> (Option<Vec<TargetGroup>>, Vec<FileSdError>) {
        let mut errors = Vec::new();
        let full = self.last_full.is_none_or(|t| t.elapsed() >= self.refresh);
        if full {
            self.last_full = Some(Instant::now());
        }
        let mut seen: Vec<PathBuf> = Vec::new();
        for pat in &self.patterns {
            match glob::glob(pat) {
                Ok(paths) => seen.extend(paths.flatten()),
                Err(e) => errors.push(FileSdError::Glob {
                    pattern: pat.clone(),
                    message: e.to_string(),
                }),
            }
        }
        seen.sort();
        seen.dedup();
        let mut changed = full;
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        changed |= self.files.len() != before;
        for p in &seen {
            let Ok(md) = std::fs::metadata(p) else {
                continue;
            };
            let stamp: Stamp = (
                md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
                md.len(),
                md.ino(),
            );
            if !full && self.files.get(p).is_some_and(|(s, _)| *s == stamp) {
                continue;
            }
            match read(p) {
                Ok(groups) => {
                    changed = true;
                    self.files.insert(p.clone(), (stamp, groups));
                }
                Err(e) => {
                    // Remember the stamp so a bad file is reported once per change.
                    if let Some(entry) = self.files.get_mut(p) {
                        entry.0 = stamp;
                    } else {
                        self.files.insert(p.clone(), (stamp, Vec::new()));
                    }
                    errors.push(e);
                }
            }
        }
        if !changed {
            return (None, errors);
        }
        let mut paths: Vec<&PathBuf> = self.files.keys().collect();
        paths.sort();
        let groups = paths
            .into_iter()
            .flat_map(|p| self.files[p].1.clone())
            .collect();
        (Some(groups), errors)
    }
}

/// Reads one file_sd file.
pub fn read(path: &std::path::Path) -> Result<Vec<TargetGroup>, FileSdError> {
    let err = |message: String| FileSdError::Read {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    let list: Vec<FileGroup> = if is_json {
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))?
    };
    let filepath = path.display().to_string();
    let mut out = Vec::with_capacity(list.len());
    for (i, g) in list.into_iter().enumerate() {
        for k in g.labels.keys() {
            if !is_legacy_label_name(k) {
                return Err(err(format!("{k:?} is not a valid label name")));
            }
        }
        for t in &g.targets {
            if t.is_empty() || t.contains('/') {
                return Err(err(format!("{t:?} is not a valid target address")));
            }
        }
        let mut labels: Vec<(String, String)> = g.labels.into_iter().collect();
        labels.push(("__meta_filepath".into(), filepath.clone()));
        out.push(TargetGroup {
            source: format!("{filepath}:{i}"),
            labels: Labels::new(labels),
            targets: g
                .targets
                .iter()
                .map(|t| Labels::new([("__address__", t.as_str())]))
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_are_read_and_changes_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("a.json");
        let y = dir.path().join("b.yml");
        std::fs::write(
            &j,
            r#"[{"targets": ["127.0.0.1:1", "127.0.0.1:2"], "labels": {"env": "x"}}]"#,
        )
        .unwrap();
        std::fs::write(&y, "- targets: [h:3]\n").unwrap();
        let pat = dir.path().join("*").display().to_string();
        let mut w = Watcher::new(vec![pat], Duration::from_secs(3600));
        let (g, e) = w.poll();
        assert!(e.is_empty(), "{e:?}");
        let g = g.unwrap();
        assert_eq!(g.len(), 2);
        let t: Vec<Labels> = g[0].expand().collect();
        assert_eq!(t[1].get("__address__"), Some("127.0.0.1:2"));
        assert_eq!(t[1].get("env"), Some("x"));
        assert_eq!(
            t[1].get("__meta_filepath"),
            Some(j.display().to_string().as_str())
        );
        assert_eq!(w.poll().0, None, "unchanged");
        // a change (size differs) is picked up
        std::fs::write(&y, "- targets: [h:3, h:4]\n").unwrap();
        let g = w.poll().0.unwrap();
        assert_eq!(g[1].targets.len(), 2);
        // a broken file keeps its last good groups and says why
        std::fs::write(&y, "- targets: [h:3, h:4\n").unwrap();
        let (g, e) = w.poll();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].to_string().contains("b.yml"));
        assert!(g.is_none_or(|g| g[1].targets.len() == 2));
        // a removed file takes its targets along
        std::fs::remove_file(&j).unwrap();
        let g = w.poll().0.unwrap();
        assert_eq!(g.len(), 1);
        // bad contents are refused with the file's name
        std::fs::write(&j, r#"[{"targets": ["a"], "labels": {"a-b": "x"}}]"#).unwrap();
        let (_, e) = w.poll();
        assert!(e[0].to_string().contains("a-b"));
    }
}
