//! The actions' memory: an append-only audit log of every decision and
//! delivery (JSON lines, fsync'd before the action it records is carried
//! out), and a state snapshot (cooldowns, restart history, autoscaler windows)
//! written atomically, so nothing an operator relies on vanishes on restart.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use vigil_common::Labels;

use super::executor::{ActionKind, Outcome};
use super::hpa::ScalerState;

/// What became of a decision or a delivery (the audit `result` and the
/// `result` label of `vigil_actions_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Decided,
    DryRun,
    SkippedCooldown,
    SkippedRateLimit,
    CrashLooping,
    /// The trigger named no container or pod (counted, not logged).
    NoTarget,
    Delivered,
    Failed,
    GaveUp,
    Gone,
    /// Release tracking: a workload started running a new image …
    RolloutStarted,
    /// … runs only the new one …
    RolloutCompleted,
    /// … runs only the old one again …
    RolloutReverted,
    /// … or a third image replaced the new one mid-rollout.
    RolloutSuperseded,
    /// Rollout analysis: every check passed over the whole window.
    AnalysisPassed,
    /// The window ended with a check still without data: no verdict.
    AnalysisInconclusive,
    /// A failed analysis of an image vigil already rolled back, rolled out
    /// again by someone: left alone.
    SkippedRerollout,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Decided => "decided",
            AuditResult::DryRun => "dry_run",
            AuditResult::SkippedCooldown => "skipped_cooldown",
            AuditResult::SkippedRateLimit => "skipped_rate_limit",
            AuditResult::CrashLooping => "crash_looping",
            AuditResult::NoTarget => "no_target",
            AuditResult::Delivered => "delivered",
            AuditResult::Failed => "failed",
            AuditResult::GaveUp => "gave_up",
            AuditResult::Gone => "gone",
            AuditResult::RolloutStarted => "rollout_started",
            AuditResult::RolloutCompleted => "rollout_completed",
            AuditResult::RolloutReverted => "rollout_reverted",
            AuditResult::RolloutSuperseded => "rollout_superseded",
            AuditResult::AnalysisPassed => "analysis_passed",
            AuditResult::AnalysisInconclusive => "analysis_inconclusive",
            AuditResult::SkippedRerollout => "skipped_rerollout",
        }
    }
}

impl From<&Outcome> for AuditResult {
    fn from(o: &Outcome) -> Self {
        match o {
            Outcome::Delivered(_) => AuditResult::Delivered,
            Outcome::Failed(_) => AuditResult::Failed,
            Outcome::Gone(_) => AuditResult::Gone,
            Outcome::GaveUp(_) => AuditResult::GaveUp,
        }
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    pub time_ms: i64,
    /// RFC 3339, for people reading the file.
    pub time: String,
    pub action: ActionKind,
    /// The action rule or autoscaler that decided.
    pub rule: String,
    /// What the action is about (namespace, pod, container, container_id, service, …).
    pub target: Labels,
    pub executor: String,
    pub result: AuditResult,
    /// Human-readable reason or error.
    pub detail: String,
    /// Idempotency id shared by the decision and its deliveries.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_replicas: Option<u32>,
    /// Image before and after, for rollouts and rollbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_image: Option<String>,
}

/// What must survive a restart besides the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionState {
    /// Restart times (ms) per target key, newest last, pruned to the window.
    pub restarts: BTreeMap<String, Vec<i64>>,
    /// Targets marked crash-looping (restarts stopped), with the time.
    pub crash_looping: BTreeMap<String, i64>,
    /// Autoscaler memory per autoscaler name.
    pub scalers: BTreeMap<String, ScalerState>,
    /// Alertmanager notifications already handled: key → time seen (ms).
    pub seen_notifications: BTreeMap<String, i64>,
    /// Release tracking: versions per workload key.
    #[serde(default)]
    pub rollouts: BTreeMap<String, super::rollout::WorkloadVersions>,
    /// Rollout analyses judged: `rule|workload` → the rollout's start (ms).
    #[serde(default)]
    pub analysed: BTreeMap<String, i64>,
    /// Rollbacks decided: `rule|workload` → (when, the image rolled back).
    #[serde(default)]
    pub rolled_back: BTreeMap<String, (i64, String)>,
}

/// Why the audit store failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("action state {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("action state: {0}")]
    Write(#[from] vigil_common::fs::WriteError),
}

/// The audit log and the state snapshot in one folder.
pub struct Audit {
    dir: PathBuf,
    file: Mutex<(File, u64)>,
    recent: Mutex<VecDeque<AuditEntry>>,
    recent_max: usize,
    /// Lines that could not be read at start (a torn last line after a crash).
    pub skipped_lines: u64,
}

const LOG: &str = "audit.jsonl";
const STATE: &str = "state.json";

impl Audit {
    /// Opens (creating) `dir`, reads the log's tail into memory and returns
    /// the saved state.
    pub fn open(dir: &Path, recent_max: usize) -> Result<(Audit, ActionState), AuditError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuditError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let log = dir.join(LOG);
        let mut recent = VecDeque::new();
        let mut seq = 0;
        let mut skipped = 0;
        if log.exists() {
            let f = File::open(&log).map_err(io(&log))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io(&log))?;
                match serde_json::from_str::<AuditEntry>(&line) {
                    Ok(e) => {
                        seq = seq.max(e.seq);
                        recent.push_back(e);
                        if recent.len() > recent_max {
                            recent.pop_front();
                        }
                    }
                    Err(_) if line.trim().is_empty() => {}
                    Err(e) => {
                        skipped += 1;
                        tracing::warn!(file = %log.display(), error = %e, "skipping unreadable audit line");
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        let state_path = dir.join(STATE);
        let state = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AuditError::State {
                path: state_path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ActionState::default(),
            Err(e) => return Err(io(&state_path)(e)),
        };
        Ok((
            Audit {
                dir: dir.to_path_buf(),
                file: Mutex::new((file, seq)),
                recent: Mutex::new(recent),
                recent_max,
                skipped_lines: skipped,
            },
            state,
        ))
    }

    /// Appends an entry (its `seq`, `time` are filled in) and fsyncs.
    pub fn append(&self, mut e: AuditEntry) -> Result<AuditEntry, AuditError> {
        let path = self.dir.join(LOG);
        let mut g = self.file.lock();
        g.1 += 1;
        e.seq = g.1;
        e.time = vigil_common::time::format_rfc3339_millis(e.time_ms);
        let mut line = serde_json::to_vec(&e).map_err(|err| AuditError::State {
            path: path.clone(),
            message: err.to_string(),
        })?;
        line.push(b'\n');
        g.0.write_all(&line)
            .and_then(|_| g.0.sync_data())
            .map_err(|source| AuditError::Io { path, source })?;
        drop(g);
        let mut r = self.recent.lock();
        r.push_back(e.clone());
        if r.len() > self.recent_max {
            r.pop_front();
        }
        Ok(e)
    }

    /// The newest entries, newest first, optionally only those after `since_seq`.
    pub fn recent(&self, limit: usize, since_seq: u64) -> Vec<AuditEntry> {
        self.recent
            .lock()
            .iter()
            .rev()
            .filter(|e| e.seq > since_seq)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Writes the state snapshot atomically (temp file, fsync, rename, fsync dir).
    pub fn save_state(&self, state: &ActionState) -> Result<(), AuditError> {
        let path = self.dir.join(STATE);
        let bytes = serde_json::to_vec(state).map_err(|e| AuditError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        vigil_common::fs::write_atomic(&path, &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(result: AuditResult) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time_ms: 1_700_000_000_000,
            time: String::new(),
            action: ActionKind::Restart,
            rule: "oom".into(),
            target: Labels::new([("container_id", "abc")]),
            executor: "podman".into(),
            result,
            detail: String::new(),
            id: "act-1".into(),
            from_replicas: None,
            to_replicas: None,
            from_image: None,
            to_image: None,
        }
    }

    #[test]
    fn survives_reopen_and_a_torn_line() {
        let d = tempfile::tempdir().unwrap();
        {
            let (a, st) = Audit::open(d.path(), 10).unwrap();
            assert_eq!(st, ActionState::default());
            a.append(entry(AuditResult::Decided)).unwrap();
            a.append(entry(AuditResult::Delivered)).unwrap();
            let mut s = ActionState::default();
            s.restarts.insert("k".into(), vec![1, 2]);
            a.save_state(&s).unwrap();
        }
        // a crash mid-write leaves half a line
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join(LOG))
            .unwrap();
        f.write_all(b"{\"seq\": 3, \"tim").unwrap();
        drop(f);
        let (a, st) = Audit::open(d.path(), 10).unwrap();
        assert_eq!(a.skipped_lines, 1);
        assert_eq!(st.restarts["k"], vec![1, 2]);
        let r = a.recent(10, 0);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].result, AuditResult::Delivered);
        assert_eq!(r[0].time, "2023-11-14T22:13:20.000Z");
        let e = a.append(entry(AuditResult::Decided)).unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(a.recent(10, 2).len(), 1);
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(STATE), b"{nope").unwrap();
        let e = Audit::open(d.path(), 10).err().unwrap().to_string();
        assert!(e.contains("state.json"), "{e}");
    }
}
