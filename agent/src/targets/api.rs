//! `GET /api/v1/targets` in Prometheus's format: `activeTargets` (labels,
//! discoveredLabels, scrapePool, scrapeUrl, globalUrl, lastError, lastScrape,
//! lastScrapeDuration, health, scrapeInterval, scrapeTimeout) and
//! `droppedTargets` (discoveredLabels), filtered by `state=active|dropped|any`
//! and `scrapePool=<job>`. A dropped target that was invalid (rather than
//! relabeled away) also carries vigil's `dropReason`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use vigil_common::Labels;

use super::Registry;

fn labels_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// The response body.
pub fn targets_json(r: &Registry, state: Option<&str>, pool: Option<&str>) -> Value {
    let state = state.unwrap_or("any");
    let in_pool = |job: &str| pool.is_none_or(|p| p == job);
    let mut active = Vec::new();
    if state == "any" || state == "active" {
        for t in r.active.read().iter().filter(|t| in_pool(&t.spec.job)) {
            let h = t.health.lock().clone();
            let last = match h.last_scrape {
                Some(s) => vigil_common::time::format_rfc3339_ns(vigil_common::time::unix_ns(s)),
                None => "0001-01-01T00:00:00Z".to_string(),
            };
            active.push(json!({
                "discoveredLabels": labels_json(&t.spec.discovered),
                "labels": labels_json(&t.spec.public_labels()),
                "scrapePool": t.spec.job,
                "scrapeUrl": t.spec.url,
                "globalUrl": t.spec.url,
                "lastError": h.last_error,
                "lastScrape": last,
                "lastScrapeDuration": h.last_duration,
                "health": h.health,
                "scrapeInterval": vigil_common::Duration(t.spec.interval).to_string(),
                "scrapeTimeout": vigil_common::Duration(t.spec.timeout).to_string(),
            }));
        }
    }
    let mut dropped = Vec::new();
    if state == "any" || state == "dropped" {
        for d in r.dropped.read().iter().filter(|d| in_pool(&d.job)) {
            let mut o = json!({ "discoveredLabels": labels_json(&d.discovered) });
            if let Some(reason) = &d.reason {
                o["dropReason"] = Value::String(reason.clone());
            }
            dropped.push(o);
        }
    }
    let mut data = serde_json::Map::new();
    if state == "any" || state == "active" {
        data.insert("activeTargets".into(), Value::Array(active));
    }
    if state == "any" || state == "dropped" {
        data.insert("droppedTargets".into(), Value::Array(dropped));
    }
    json!({"status": "success", "data": data})
}

pub async fn handler(
    State(r): State<Arc<Registry>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    let state = q.get("state").map(|s| s.to_lowercase());
    let body = targets_json(
        &r,
        state.as_deref(),
        q.get("scrapePool").map(String::as_str),
    );
    ([("content-type", "application/json")], body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::target::TargetSpec;
    use crate::targets::{DroppedTarget, Health, TargetStatus};

    #[test]
    fn prometheus_shape() {
        let r = Registry::default();
        r.active.write().push(Arc::new(TargetStatus {
            spec: TargetSpec {
                job: "app".into(),
                labels: Labels::new([("__address__", "h:1"), ("instance", "h:1"), ("job", "app")]),
                discovered: Labels::new([("__address__", "h:1"), ("__meta_x", "y")]),
                url: "http://h:1/metrics".into(),
                interval: std::time::Duration::from_secs(15),
                timeout: std::time::Duration::from_secs(10),
                netns: None,
            },
            health: parking_lot::Mutex::new(Health {
                health: "down",
                last_error: "server returned HTTP status 500 Internal Server Error".into(),
                last_scrape: Some(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
                ),
                last_duration: 0.25,
            }),
        }));
        r.dropped.write().push(DroppedTarget {
            job: "other".into(),
            discovered: Labels::new([("__address__", "x:2")]),
            reason: None,
        });
        let v = targets_json(&r, None, None);
        let t = &v["data"]["activeTargets"][0];
        assert_eq!(t["labels"], json!({"instance": "h:1", "job": "app"}));
        assert_eq!(t["discoveredLabels"]["__meta_x"], "y");
        assert_eq!(t["health"], "down");
        assert_eq!(t["lastScrape"], "2023-11-14T22:13:20.123Z");
        assert_eq!(t["scrapeInterval"], "15s");
        assert_eq!(t["scrapeTimeout"], "10s");
        assert_eq!(t["scrapePool"], "app");
        assert_eq!(
            v["data"]["droppedTargets"][0]["discoveredLabels"]["__address__"],
            "x:2"
        );
        let v = targets_json(&r, Some("dropped"), None);
        assert!(v["data"].get("activeTargets").is_none());
        let v = targets_json(&r, Some("any"), Some("app"));
        assert_eq!(v["data"]["droppedTargets"].as_array().unwrap().len(), 0);
    }
}
