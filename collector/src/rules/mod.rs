//! Alerting and recording rules in Prometheus' format.
//!
//! - [`file`]: rule files, parsed and validated like `promtool check rules`.
//! - [`template`]: Go templates in alert labels and annotations.
//! - [`alerting`]: the alert state machine.
//! - [`group`]: a group's evaluation (rules in order, one timestamp).
//! - [`state`]: alert state persisted in `data_dir`.
//! - [`manager`]: loading, scheduling, reloading ([`RuleManager`]).
//! - [`unittest`]: `test rules` in promtool's format.

pub mod alerting;
pub mod file;
pub mod group;
pub mod manager;
pub mod state;
pub mod template;
pub mod unittest;

pub use manager::{AlertSink, LoadError, ManagerOptions, RuleManager};

use std::io::Write;
use std::path::PathBuf;

/// `vigil-collector check rules`: validates each file as `promtool check
/// rules` does and prints the same report (`Checking FILE`, `SUCCESS: N
/// rules found` or `FAILED:` and the errors). Duplicate rules are reported
/// but, as promtool's default lint, do not fail. True when all files are valid.
pub fn check_files(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    let mut ok = true;
    for f in files {
        let _ = writeln!(out, "Checking {}", f.display());
        let _ = out.flush();
        match file::load_file(f) {
            Ok(rf) => {
                let dups = file::duplicates(&rf);
                if dups.is_empty() {
                    let n: usize = rf.groups.iter().map(|g| g.rules.len()).sum();
                    let _ = writeln!(out, "  SUCCESS: {n} rules found");
                } else {
                    let _ = writeln!(err, "  FAILED:");
                    let mut msg = format!("lint error {} duplicate rule(s) found.\n", dups.len());
                    for (name, labels) in dups {
                        msg += &format!("Metric: {name}\nLabel(s):\n");
                        for (k, v) in labels {
                            msg += &format!("\t{k}: {v}\n");
                        }
                    }
                    msg += "Might cause inconsistency while recording expressions";
                    let _ = writeln!(err, "{msg}");
                }
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(err, "  FAILED:");
                for m in e.errors {
                    let _ = writeln!(err, "{m}");
                }
            }
        }
        let _ = writeln!(out);
    }
    ok
}
