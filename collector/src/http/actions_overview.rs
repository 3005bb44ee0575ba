//! `GET /api/v1/actions/overview`: what the actions engine is set to do and
//! where it stands, for the web UI's actions page — the autoscalers (query,
//! target, bounds), the restart rules (cooldown, restarts per window), the
//! targets in a cooldown now and how many restarts each had in its window
//! (from the audit log), and the crash-loop marks.
//!
//! Like `/api/v1/actions` it needs the admin role (the auth middleware
//! decides by the `/api/v1/actions` prefix). It never shows an executor's
//! settings beyond its name and kind (webhook URLs and secrets stay out).
//!
//! Not here: the audit log itself (`actions_api`), the decisions
//! (`crate::actions`).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};

use super::AppState;
use crate::actions::audit::AuditEntry;
use crate::actions::config::{ActionsConfig, LabelMatch};

/// Audit entries read to find cooldowns and restarts in a window (the
/// engine keeps the newest 10,000 in memory).
const AUDIT_SCAN: usize = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/actions/overview", get(overview))
}

async fn overview(State(s): State<AppState>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let data = match &s.actions {
        None => json!({
            "configured": false, "executors": [], "autoscalers": [], "restartRules": [],
            "cooldowns": [], "crashLooping": [], "now": now,
        }),
        Some(a) => {
            let entries = a.audit_entries(AUDIT_SCAN, 0);
            let mut v = describe(a.config(), &entries, now);
            v["crashLooping"] = a
                .crash_looping()
                .into_iter()
                .map(|(key, since)| json!({"target": key, "sinceMs": since}))
                .collect();
            v
        }
    };
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// The configuration and the cooldowns in force at `now`, from audit
/// entries (any order).
fn describe(cfg: &ActionsConfig, entries: &[AuditEntry], now: i64) -> Json {
    let executors: Vec<Json> = cfg
        .executors
        .iter()
        .map(|(name, e)| json!({"name": name, "kind": e.kind()}))
        .collect();
    let autoscalers: Vec<Json> = cfg
        .autoscale
        .iter()
        .map(|sc| {
            json!({
                "name": sc.name,
                "executor": sc.executor,
                "workload": sc.workload,
                "query": sc.query,
                "replicasQuery": sc.replicas_query,
                "target": sc.target,
                "tolerance": sc.tolerance,
                "intervalMs": sc.interval.as_millis() as u64,
                "minReplicas": sc.behavior.min_replicas,
                "maxReplicas": sc.behavior.max_replicas,
                "dryRun": cfg.dry_run || sc.dry_run,
            })
        })
        .collect();
    let mut rules = Vec::new();
    let mut cooldowns = Vec::new();
    for r in &cfg.restart {
        let p = &r.policy;
        rules.push(json!({
            "name": r.name,
            "match": r.matchers.iter().map(matcher_text).collect::<Vec<_>>(),
            "executor": r.executor,
            "cooldownMs": p.cooldown_ms,
            "maxRestarts": p.max_restarts,
            "windowMs": p.window_ms,
            "dryRun": cfg.dry_run || r.dry_run,
        }));
        // restarts decided per target within the window, newest first
        let mut per_target: BTreeMap<String, (vigil_common::labels::Labels, Vec<i64>)> =
            BTreeMap::new();
        for e in entries {
            if e.action == crate::actions::executor::ActionKind::Restart
                && e.rule == r.name
                && e.result == crate::actions::audit::AuditResult::Decided
                && e.time_ms > now - p.window_ms.max(p.cooldown_ms)
            {
                let key = serde_json::to_string(&e.target).unwrap_or_default();
                let slot = per_target
                    .entry(key)
                    .or_insert_with(|| (e.target.clone(), Vec::new()));
                slot.1.push(e.time_ms);
            }
        }
        for (_, (target, mut times)) in per_target {
            times.sort_unstable_by(|a, b| b.cmp(a));
            let last = times[0];
            let in_window = times.iter().filter(|t| **t > now - p.window_ms).count();
            cooldowns.push(json!({
                "rule": r.name,
                "target": target,
                "lastRestartMs": last,
                "cooldownUntilMs": last + p.cooldown_ms,
                "inCooldown": last + p.cooldown_ms > now,
                "restartsInWindow": in_window,
                "maxRestarts": p.max_restarts,
            }));
        }
    }
    json!({
        "configured": true,
        "now": now,
        "dryRun": cfg.dry_run,
        "maxRestartsPerMinute": cfg.global.max,
        "executors": executors,
        "autoscalers": autoscalers,
        "restartRules": rules,
        "cooldowns": cooldowns,
    })
}

fn matcher_text(m: &LabelMatch) -> String {
    match m {
        LabelMatch::Equal(k, v) => format!("{k}={v:?}"),
        LabelMatch::Regex(k, r) => format!("{k}=~{:?}", r.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::restart::RestartPolicy;

    fn entry(rule: &str, result: &str, t: i64, target: &str) -> AuditEntry {
        use crate::actions::audit::AuditResult;
        let result = match result {
            "decided" => AuditResult::Decided,
            "delivered" => AuditResult::Delivered,
            other => panic!("no audit result {other} in this test"),
        };
        AuditEntry {
            seq: 0,
            time_ms: t,
            time: String::new(),
            action: crate::actions::executor::ActionKind::Restart,
            rule: rule.into(),
            target: vigil_common::labels::Labels::new([("name", target)]),
            executor: "podman".into(),
            result,
            detail: String::new(),
            id: String::new(),
            from_replicas: None,
            to_replicas: None,
            from_image: None,
            to_image: None,
        }
    }

    #[test]
    fn cooldowns_and_restarts_in_the_window_come_from_the_audit() {
        let cfg = ActionsConfig {
            restart: vec![crate::actions::config::RestartRule {
                name: "oom".into(),
                matchers: vec![LabelMatch::Equal("event".into(), "oom_kill".into())],
                executor: "podman".into(),
                policy: RestartPolicy {
                    cooldown_ms: 60_000,
                    max_restarts: 3,
                    window_ms: 3_600_000,
                },
                dry_run: false,
            }],
            ..Default::default()
        };
        let now = 10_000_000;
        let entries = vec![
            entry("oom", "decided", now - 30_000, "leak"),
            entry("oom", "delivered", now - 29_000, "leak"),
            entry("oom", "decided", now - 600_000, "leak"),
            entry("oom", "decided", now - 7_200_000, "leak"), // outside the window
            entry("oom", "decided", now - 120_000, "other"),  // cooldown over
            entry("other-rule", "decided", now - 1_000, "leak"),
        ];
        let v = describe(&cfg, &entries, now);
        let c = v["cooldowns"].as_array().unwrap();
        assert_eq!(c.len(), 2, "{v}");
        let leak = c.iter().find(|c| c["target"]["name"] == "leak").unwrap();
        assert_eq!(leak["inCooldown"], true);
        assert_eq!(leak["restartsInWindow"], 2);
        assert_eq!(leak["cooldownUntilMs"], now - 30_000 + 60_000);
        let other = c.iter().find(|c| c["target"]["name"] == "other").unwrap();
        assert_eq!(other["inCooldown"], false);
        assert_eq!(v["restartRules"][0]["match"][0], "event=\"oom_kill\"");
    }
}
