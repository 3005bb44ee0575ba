//! Alert state kept in `data_dir` so a restart does not reset it: every
//! pending, firing and recently resolved alert with its `activeAt`,
//! `keep_firing_for` progress and send times, one JSON file per group,
//! written (atomically, by rename) after an evaluation that changed it.
//!
//! Prometheus restores only `activeAt` of pending/firing alerts from the
//! `ALERTS_FOR_STATE` series and loses `keep_firing_for` progress; keeping
//! the whole state makes a restart invisible to Alertmanager.
//!
//! Not here: evaluating ([`super::group`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vigil_common::Labels;

use super::alerting::{Alert, AlertState};
use super::group::{Group, RuleKindState};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct AlertRecord {
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    state: AlertState,
    /// `None` for NaN (JSON has no NaN).
    value: Option<f64>,
    active_at: i64,
    fired_at: Option<i64>,
    resolved_at: Option<i64>,
    last_sent_at: Option<i64>,
    valid_until: Option<i64>,
    keep_firing_since: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct RuleRecord {
    /// Name and labels, as the rule matching on reload uses them.
    rule: String,
    alerts: Vec<AlertRecord>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct GroupRecord {
    version: u32,
    file: String,
    name: String,
    /// Evaluation timestamp the state belongs to (ms).
    at: i64,
    rules: Vec<RuleRecord>,
}

/// The file holding `group`'s state under `dir`.
pub fn path_for(dir: &Path, file: &str, name: &str) -> PathBuf {
    let h = Labels::new([("file", file), ("name", name)]).stable_hash();
    dir.join(format!("group-{h:016x}.json"))
}

/// Serializes the alert state of `g` (stable bytes: equal state, equal bytes).
pub fn encode(g: &Group) -> Vec<u8> {
    let rules = g
        .rules
        .iter()
        .filter_map(|r| match &r.kind {
            RuleKindState::Alerting(a) if !a.active.is_empty() => {
                let mut alerts: Vec<AlertRecord> = a
                    .active
                    .values()
                    .map(|a| AlertRecord {
                        labels: a.labels.pairs().to_vec(),
                        annotations: a.annotations.pairs().to_vec(),
                        state: a.state,
                        value: (!a.value.is_nan()).then_some(a.value),
                        active_at: a.active_at,
                        fired_at: a.fired_at,
                        resolved_at: a.resolved_at,
                        last_sent_at: a.last_sent_at,
                        valid_until: a.valid_until,
                        keep_firing_since: a.keep_firing_since,
                    })
                    .collect();
                alerts.sort_by(|x, y| x.labels.cmp(&y.labels));
                Some(RuleRecord {
                    rule: r.identity(),
                    alerts,
                })
            }
            _ => None,
        })
        .collect();
    let rec = GroupRecord {
        version: 1,
        file: g.file.clone(),
        name: g.name.clone(),
        at: g.last_eval_ts.unwrap_or(0),
        rules,
    };
    serde_json::to_vec_pretty(&rec).unwrap_or_default()
}

/// What [`restore`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub alerts: usize,
    /// The state was older than the outage tolerance and was ignored.
    pub expired: bool,
}

/// Loads the saved state of `g` from `path` into its alerting rules (rules
/// matched by name and labels). State saved more than `tolerance_ms` before
/// `now_ms` is ignored, as Prometheus ignores `for` state after a long outage.
pub fn restore(
    g: &mut Group,
    path: &Path,
    now_ms: i64,
    tolerance_ms: i64,
) -> Result<Restored, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Restored::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let rec: GroupRecord =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if rec.version != 1 || rec.file != g.file || rec.name != g.name {
        return Err(format!(
            "{}: state of another group or version",
            path.display()
        ));
    }
    if now_ms - rec.at > tolerance_ms {
        return Ok(Restored {
            alerts: 0,
            expired: true,
        });
    }
    let mut n = 0;
    let mut records: Vec<Option<RuleRecord>> = rec.rules.into_iter().map(Some).collect();
    for r in &mut g.rules {
        let id = r.identity();
        let RuleKindState::Alerting(a) = &mut r.kind else {
            continue;
        };
        let Some(slot) = records
            .iter_mut()
            .find(|x| x.as_ref().is_some_and(|x| x.rule == id))
        else {
            continue;
        };
        let Some(rr) = slot.take() else { continue };
        for ar in rr.alerts {
            let labels = Labels::new(ar.labels);
            let alert = Alert {
                annotations: Labels::new(ar.annotations),
                state: ar.state,
                value: ar.value.unwrap_or(f64::NAN),
                active_at: ar.active_at,
                fired_at: ar.fired_at,
                resolved_at: ar.resolved_at,
                last_sent_at: ar.last_sent_at,
                valid_until: ar.valid_until,
                keep_firing_since: ar.keep_firing_since,
                labels: labels.clone(),
            };
            a.active.insert(labels.stable_hash(), alert);
            n += 1;
        }
    }
    Ok(Restored {
        alerts: n,
        expired: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{Engine, EngineOptions};
    use crate::rules::group::EvalEnv;
    use crate::store::{Store, StoreOptions};
    use std::sync::Arc;

    const YAML: &str = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: vector(1)\n    for: 5m\n    keep_firing_for: 10m\n    labels: {severity: page}\n  - alert: B\n    expr: vector(1)\n";

    fn group() -> Group {
        let f = crate::rules::file::parse("t.yml", YAML).unwrap();
        Group::from_spec(&f.groups[0], 60_000).unwrap()
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::new(StoreOptions::default()));
        let engine = Engine::new(EngineOptions::default());
        let ext = Labels::default();
        let env = EvalEnv {
            engine: &engine,
            store: &store,
            remote: None,
            external_labels: &ext,
            external_url: "",
            resend_delay_ms: 60_000,
        };
        let mut g = group();
        g.eval(1_000_000, &env);
        g.eval(1_060_000, &env);
        let p = path_for(dir.path(), "t.yml", "g");
        let bytes = encode(&g);
        assert_eq!(bytes, encode(&g), "stable");
        vigil_common::fs::write_atomic(&p, &bytes).unwrap();

        let mut fresh = group();
        let r = restore(&mut fresh, &p, 1_070_000, 3_600_000).unwrap();
        assert_eq!(
            r,
            Restored {
                alerts: 2,
                expired: false
            }
        );
        for (a, b) in g.rules.iter().zip(&fresh.rules) {
            let (a, b) = (a.alerting().unwrap(), b.alerting().unwrap());
            assert_eq!(a.active, b.active);
        }
        let mut late = group();
        let r = restore(&mut late, &p, 1_060_000 + 3_600_001, 3_600_000).unwrap();
        assert!(r.expired);
        assert!(late.rules[0].alerting().unwrap().active.is_empty());
        assert_eq!(
            restore(&mut group(), &dir.path().join("none.json"), 0, 1).unwrap(),
            Restored::default()
        );
        std::fs::write(&p, b"{garbage").unwrap();
        assert!(restore(&mut group(), &p, 0, 1).is_err());
    }
}
