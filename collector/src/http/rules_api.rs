//! `/api/v1/rules` and `/api/v1/alerts` in Prometheus' JSON (what Grafana's
//! alerting view and `promtool`-style clients read).
//!
//! Not here: the rules themselves ([`crate::rules`]).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use vigil_common::Labels;

use super::AppState;
use crate::gofmt;
use crate::rules::alerting::Alert;
use crate::rules::group::{Group, Rule, RuleKindState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/rules", get(rules).post(rules))
        .route("/api/v1/alerts", get(alerts).post(alerts))
}

fn envelope(data: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": data}).to_string(),
    )
        .into_response()
}

fn bad(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "error", "errorType": "bad_data", "error": msg}).to_string(),
    )
        .into_response()
}

/// Go's `time.Time` JSON (RFC 3339 with nanoseconds trimmed) for ms, or the
/// zero time Go prints for an unset one.
pub fn go_time_json(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "0001-01-01T00:00:00Z".into();
    };
    vigil_common::time::format_rfc3339_ms(ms)
}

fn labels_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect::<Map<String, Value>>(),
    )
}

fn alert_json(a: &Alert) -> Value {
    let mut o = json!({
        "labels": labels_json(&a.labels),
        "annotations": labels_json(&a.annotations),
        "state": a.state.as_str(),
        "activeAt": go_time_json(Some(a.active_at)),
        "value": gofmt::format_e(a.value, false),
    });
    if let Some(k) = a.keep_firing_since {
        o["keepFiringSince"] = Value::String(go_time_json(Some(k)));
    }
    o
}

fn active_alerts(r: &Rule) -> Vec<&Alert> {
    let mut v: Vec<&Alert> = r
        .alerting()
        .map(|a| a.active_alerts().collect())
        .unwrap_or_default();
    v.sort_by(|x, y| x.labels.cmp(&y.labels));
    v
}

fn rule_json(r: &Rule) -> Value {
    let mut o = match &r.kind {
        RuleKindState::Alerting(a) => json!({
            "state": a.state().as_str(),
            "name": r.name,
            "query": r.expr.to_string(),
            "duration": a.hold_ms as f64 / 1000.0,
            "keepFiringFor": a.keep_firing_for_ms as f64 / 1000.0,
            "labels": labels_json(&a.raw_labels()),
            "annotations": labels_json(&a.raw_annotations()),
            "alerts": active_alerts(r).into_iter().map(alert_json).collect::<Vec<_>>(),
            "health": r.health.as_str(),
            "evaluationTime": r.eval_seconds,
            "lastEvaluation": go_time_json(r.last_eval_ms),
            "type": "alerting",
        }),
        RuleKindState::Recording => {
            let mut o = json!({
                "name": r.name,
                "query": r.expr.to_string(),
                "health": r.health.as_str(),
                "evaluationTime": r.eval_seconds,
                "lastEvaluation": go_time_json(r.last_eval_ms),
                "type": "recording",
            });
            if !r.labels.is_empty() {
                o["labels"] = Value::Object(
                    r.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                );
            }
            o
        }
    };
    if let Some(e) = &r.last_error {
        o["lastError"] = Value::String(e.clone());
    }
    o
}

fn group_json(g: &Group, want_alerts: bool, want_records: bool) -> Value {
    let rules: Vec<Value> = g
        .rules
        .iter()
        .filter(|r| match r.kind {
            RuleKindState::Alerting(_) => want_alerts,
            RuleKindState::Recording => want_records,
        })
        .map(rule_json)
        .collect();
    json!({
        "name": g.name,
        "file": g.file,
        "rules": rules,
        "interval": g.interval_ms as f64 / 1000.0,
        "limit": g.limit,
        "evaluationTime": g.eval_seconds,
        "lastEvaluation": go_time_json(g.last_eval_ms),
    })
}

async fn rules(State(s): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let typ = q
        .iter()
        .rev()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.to_lowercase())
        .unwrap_or_default();
    if !typ.is_empty() && typ != "alert" && typ != "record" {
        return bad(format!(
            "invalid parameter \"type\": not supported value {typ:?}"
        ));
    }
    let filter = |name: &str| -> Vec<String> {
        q.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let (names, groups_f, files_f) = (
        filter("rule_name[]"),
        filter("rule_group[]"),
        filter("file[]"),
    );
    let mut out = Vec::new();
    if let Some(m) = &s.rules {
        for slot in m.groups() {
            let g = slot.group.lock();
            if (!groups_f.is_empty() && !groups_f.contains(&g.name))
                || (!files_f.is_empty() && !files_f.contains(&g.file))
            {
                continue;
            }
            let mut v = group_json(&g, typ != "record", typ != "alert");
            if !names.is_empty()
                && let Some(rules) = v["rules"].as_array_mut()
            {
                rules.retain(|r| {
                    r["name"]
                        .as_str()
                        .is_some_and(|n| names.iter().any(|x| x == n))
                });
                if rules.is_empty() {
                    continue;
                }
            }
            out.push(v);
        }
    }
    envelope(json!({ "groups": out }))
}

async fn alerts(State(s): State<AppState>) -> Response {
    let mut out = Vec::new();
    if let Some(m) = &s.rules {
        for slot in m.groups() {
            let g = slot.group.lock();
            for r in &g.rules {
                out.extend(active_alerts(r).into_iter().map(alert_json));
            }
        }
    }
    envelope(json!({ "alerts": out }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ManagerOptions, RuleManager};
    use crate::store::{Store, StoreOptions};
    use axum::body::Body;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tower::ServiceExt;

    async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
        let r = app
            .clone()
            .oneshot(axum::http::Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&b).unwrap())
    }

    #[tokio::test]
    async fn rules_and_alerts_in_prometheus_format() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.yml");
        std::fs::write(
            &f,
            "groups:\n- name: g\n  interval: 30s\n  rules:\n  - record: one\n    expr: vector(1)\n    labels: {a: b}\n  - alert: Always\n    expr: vector(2)\n    for: 1m\n    keep_firing_for: 2m\n    labels: {severity: page}\n    annotations: {summary: 'v={{ $value }}'}\n  - alert: Broken\n    expr: label_replace(vector(1), 'a', '', 'b', '(')\n",
        )
        .unwrap();
        let store = Arc::new(Store::new(StoreOptions::default()));
        let m = RuleManager::new(store.clone(), ManagerOptions::default(), None);
        m.load(&[f.display().to_string()]).unwrap();
        m.eval_group(&m.groups()[0], 1_700_000_000_500);
        let mut state = AppState::new(store);
        state.rules = Some(m);
        let app = crate::http::router(state);

        let (st, v) = get_json(&app, "/api/v1/rules").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["status"], "success");
        let g = &v["data"]["groups"][0];
        assert_eq!(g["name"], "g");
        assert_eq!(g["interval"], 30.0);
        assert_eq!(g["limit"], 0);
        let rules = g["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["type"], "recording");
        assert_eq!(rules[0]["labels"]["a"], "b");
        assert_eq!(rules[0]["health"], "ok");
        assert_eq!(rules[1]["type"], "alerting");
        assert_eq!(rules[1]["state"], "pending");
        assert_eq!(rules[1]["duration"], 60.0);
        assert_eq!(rules[1]["keepFiringFor"], 120.0);
        assert_eq!(rules[1]["query"], "vector(2)");
        assert_eq!(rules[1]["annotations"]["summary"], "v={{ $value }}");
        let a = &rules[1]["alerts"][0];
        assert_eq!(a["state"], "pending");
        assert_eq!(a["activeAt"], "2023-11-14T22:13:20.5Z");
        assert_eq!(a["value"], "2e+00");
        assert_eq!(a["annotations"]["summary"], "v=2");
        assert_eq!(rules[2]["health"], "err");
        assert!(rules[2]["lastError"].as_str().is_some());
        assert!(rules[0].get("lastError").is_none());

        let (_, v) = get_json(&app, "/api/v1/rules?type=record").await;
        assert_eq!(v["data"]["groups"][0]["rules"].as_array().unwrap().len(), 1);
        let (_, v) = get_json(&app, "/api/v1/rules?type=alert&rule_name[]=Always").await;
        assert_eq!(v["data"]["groups"][0]["rules"].as_array().unwrap().len(), 1);
        let (st, v) = get_json(&app, "/api/v1/rules?type=bogus").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(v["errorType"], "bad_data");

        let (_, v) = get_json(&app, "/api/v1/alerts").await;
        let alerts = v["data"]["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0]["labels"]["alertname"], "Always");
        assert_eq!(alerts[0]["labels"]["severity"], "page");
    }

    #[test]
    fn go_times() {
        assert_eq!(go_time_json(None), "0001-01-01T00:00:00Z");
        assert_eq!(go_time_json(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(go_time_json(Some(1_500)), "1970-01-01T00:00:01.5Z");
    }
}
