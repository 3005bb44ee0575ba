//! node_exporter's `textfile` collector: with `--textfile-directory`, the
//! `*.prom` files there (Prometheus text format, written by cron jobs and
//! scripts) are read every scrape and their samples shipped with the node's,
//! plus `node_textfile_mtime_seconds{file}` (the file's path, whole
//! seconds) for each file read and
//! `node_textfile_scrape_error` (1 when a file could not be read or parsed).
//!
//! As in node_exporter: a file that fails to parse, or carries client-side
//! timestamps, is left out whole (the others are read); samples of one
//! metric missing a label another sample has get it empty; a help text
//! missing is "Metric read from <file>". Unlike it, a sample that repeats a
//! series already read (in another file, or exported by the agent itself) is
//! left out and counted as an error instead of failing the whole scrape, and
//! a `node` label is kept as `exported_node` (the agent adds its own).
//! Files larger than [`MAX_FILE_BYTES`] are errors.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use vigil_common::exposition::{self, Format, MetricType};

use super::{NodeReader, ReadError};
use crate::model::{MetricFamily, MetricKind, Scrape, label_set};

/// The largest file read (a runaway script must not fill the agent).
const MAX_FILE_BYTES: u64 = 16 << 20;

/// One metric's samples from the files: help, kind, (labels, value).
type Metric = (String, MetricKind, Vec<(Vec<(String, String)>, f64)>);

impl NodeReader {
    /// See the module docs.
    pub(super) fn textfile(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let Some(dir) = &self.textfile else {
            return Ok(());
        };
        let mut errors = Vec::new();
        let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "prom"))
                .collect(),
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                Vec::new()
            }
        };
        files.sort();
        let existing: HashSet<&str> = out.families.iter().map(|f| f.name.as_str()).collect();
        let mut metrics: BTreeMap<String, Metric> = BTreeMap::new();
        let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
        let mut mtimes = MetricFamily::new(
            "node_textfile_mtime_seconds",
            "Unixtime mtime of textfiles successfully read.",
            MetricKind::Gauge,
        );
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let read = std::fs::metadata(&path).and_then(|m| {
                if !m.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                if m.len() > MAX_FILE_BYTES {
                    return Err(std::io::Error::other(format!(
                        "{} bytes, more than {MAX_FILE_BYTES}",
                        m.len()
                    )));
                }
                let mtime = m
                    .modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as f64)
                    .unwrap_or(0.0);
                Ok((std::fs::read(&path)?, mtime))
            });
            let (body, mtime) = match read {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let parsed = match exposition::parse(&body, Format::Text) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if parsed.samples.iter().any(|s| s.2.is_some()) {
                errors.push(format!(
                    "{name}: client-side timestamps are not supported; file left out"
                ));
                continue;
            }
            let help_of = |metric: &str| -> Option<String> {
                let base = ["_bucket", "_sum", "_count", "_total"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s))
                    .unwrap_or(metric);
                parsed
                    .helps
                    .iter()
                    .find(|(n, _)| n == metric)
                    .or_else(|| parsed.helps.iter().find(|(n, _)| n == base))
                    .map(|(_, h)| h.clone())
            };
            let kind_of = |metric: &str| match parsed.types.iter().find(|(n, _)| n == metric) {
                Some((_, MetricType::Counter)) => MetricKind::Counter,
                Some((_, MetricType::Gauge)) => MetricKind::Gauge,
                _ => MetricKind::Untyped,
            };
            for (labels, value, _) in &parsed.samples {
                let Some(metric) = labels.get("__name__") else {
                    continue;
                };
                if existing.contains(metric) {
                    errors.push(format!("{name}: {metric} is exported by the agent itself"));
                    continue;
                }
                let pairs: Vec<(String, String)> = labels
                    .iter()
                    .filter(|(k, _)| *k != "__name__")
                    .map(|(k, v)| {
                        let k = if k == "node" { "exported_node" } else { k };
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                if !seen.insert((metric.to_string(), pairs.clone())) {
                    errors.push(format!("{name}: {metric}{pairs:?} was read before"));
                    continue;
                }
                let entry = metrics.entry(metric.to_string()).or_insert_with(|| {
                    (
                        help_of(metric)
                            .unwrap_or_else(|| format!("Metric read from {}", path.display())),
                        kind_of(metric),
                        Vec::new(),
                    )
                });
                entry.2.push((pairs, *value));
            }
            // node_exporter labels it with the whole path
            mtimes.push([("file", path.display().to_string())], mtime);
        }
        for (metric, (help, kind, samples)) in metrics {
            // every sample of a metric gets every label name any of them has
            let names: BTreeSet<&str> = samples
                .iter()
                .flat_map(|(l, _)| l.iter().map(|(k, _)| k.as_str()))
                .collect();
            let mut f = MetricFamily::new(metric, help, kind);
            for (labels, value) in &samples {
                let full = names.iter().map(|n| {
                    let v = labels
                        .iter()
                        .find(|(k, _)| k == n)
                        .map_or("", |(_, v)| v.as_str());
                    (*n, v)
                });
                f.push_shared(&label_set(full), *value);
            }
            out.families.push(f);
        }
        if !mtimes.samples.is_empty() {
            out.families.push(mtimes);
        }
        let mut err = MetricFamily::new(
            "node_textfile_scrape_error",
            "1 if there was an error opening or reading a file, 0 otherwise",
            MetricKind::Gauge,
        );
        err.push(
            Vec::<(String, String)>::new(),
            f64::from(u8::from(!errors.is_empty())),
        );
        out.families.push(err);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ReadError::at(dir.clone(), errors.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &Scrape) -> String {
        s.encode_text(None)
    }

    #[test]
    fn reads_prom_files_like_node_exporter() {
        let host = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("backup.prom"),
            "# HELP backup_last_success_seconds Last good backup.\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"db\"} 1.7e9\nbackup_last_success_seconds{job=\"files\",node=\"x\"} 1.6e9\nbackup_runs_total 3\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.prom"), "what is this\n").unwrap();
        std::fs::write(
            dir.path().join("stamped.prom"),
            "a_metric 1 1700000000000\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not_read 1\n").unwrap();
        std::fs::write(
            dir.path().join("z_dup.prom"),
            "backup_runs_total 4\nother 5\n",
        )
        .unwrap();
        let r = NodeReader::new(host.path()).with_textfile_directory(Some(dir.path().into()));
        let mut s = Scrape::new(0);
        let e = r.textfile(&mut s).unwrap_err().to_string();
        assert!(e.contains("broken.prom"), "{e}");
        assert!(e.contains("stamped.prom: client-side timestamps"), "{e}");
        assert!(e.contains("z_dup.prom: backup_runs_total"), "{e}");
        let t = text(&s);
        // label names filled in, node kept as exported_node
        assert!(
            t.contains("backup_last_success_seconds{exported_node=\"\",job=\"db\"} 1700000000"),
            "{t}"
        );
        assert!(
            t.contains("backup_last_success_seconds{exported_node=\"x\",job=\"files\"} 1600000000"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE backup_last_success_seconds gauge"),
            "{t}"
        );
        assert!(
            t.contains("# HELP backup_runs_total Metric read from "),
            "{t}"
        );
        assert!(t.contains("backup_runs_total 3\n"), "{t}");
        assert!(t.contains("other 5\n"), "{t}");
        assert!(!t.contains("not_read") && !t.contains("a_metric"), "{t}");
        let file = |f: &str| {
            format!(
                "node_textfile_mtime_seconds{{file=\"{}\"}}",
                dir.path().join(f).display()
            )
        };
        assert!(t.contains(&file("backup.prom")), "{t}");
        assert!(!t.contains(&file("broken.prom")), "{t}");
        assert!(t.contains("node_textfile_scrape_error 1"), "{t}");

        for f in ["broken.prom", "stamped.prom", "z_dup.prom"] {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        let mut s = Scrape::new(0);
        r.textfile(&mut s).unwrap();
        assert!(text(&s).contains("node_textfile_scrape_error 0"));
    }

    #[test]
    fn no_directory_no_figures_and_a_missing_one_is_an_error() {
        let host = tempfile::tempdir().unwrap();
        let mut s = Scrape::new(0);
        NodeReader::new(host.path()).textfile(&mut s).unwrap();
        assert!(s.families.is_empty());
        let r =
            NodeReader::new(host.path()).with_textfile_directory(Some(host.path().join("absent")));
        assert!(r.textfile(&mut s).is_err());
        assert!(text(&s).contains("node_textfile_scrape_error 1"));
    }
}
