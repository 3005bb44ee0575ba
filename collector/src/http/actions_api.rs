//! Action endpoints: `POST /api/v1/alertmanager/webhook` (Alertmanager's
//! webhook receiver, bearer-token authenticated when a token is configured)
//! and `GET /api/v1/actions` (the audit log, newest first).

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::AppState;
use crate::actions::alertmanager;
use crate::actions::triggers::{Trigger, TriggerSource, TriggerStatus};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alertmanager/webhook", post(alertmanager_webhook))
        .route("/api/v1/actions", get(list_actions))
}

fn error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"status": "error", "errorType": kind, "error": msg.into()})),
    )
        .into_response()
}

/// Constant-time equality of two byte strings.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn alertmanager_webhook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(actions) = s.actions.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "unavailable",
            "no actions are configured (--actions)",
        );
    };
    if let Some(token) = &actions.config().alertmanager_token {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !ct_eq(given.as_bytes(), token.as_bytes()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            );
        }
    }
    if !s.leadership.may_act() {
        // another collector of the fleet acts; Alertmanager retries (and,
        // behind a Service, reaches another replica)
        s.leadership.skipped("alertmanager_webhook", 1);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this collector is not the leader of its fleet; another one acts",
        );
    }
    let n = match alertmanager::parse(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e.to_string()),
    };
    let triggers: Vec<Trigger> = n
        .alerts
        .iter()
        .map(|a| Trigger {
            source: TriggerSource::Alertmanager,
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            // `parse` admits only these two
            status: if a.status == "firing" {
                TriggerStatus::Firing
            } else {
                TriggerStatus::Resolved
            },
            starts_at: a.starts_at.clone(),
            dedup_key: a.dedup_key(),
        })
        .collect();
    let report = actions.handle(triggers);
    (
        StatusCode::OK,
        Json(json!({"status": "success", "data": report})),
    )
        .into_response()
}

async fn list_actions(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(actions) = s.actions.clone() else {
        return (
            StatusCode::OK,
            Json(json!({"status": "success", "data": {"actions": [], "crash_looping": {}}})),
        )
            .into_response();
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(l)) => l.min(10_000),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "limit must be a whole number",
            );
        }
    };
    let since = match q.get("since").map(|l| l.parse::<u64>()) {
        None => 0,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "since must be a sequence number",
            );
        }
    };
    let entries = actions.audit_entries(limit, since);
    (
        StatusCode::OK,
        Json(json!({"status": "success", "data": {"actions": entries, "crash_looping": actions.crash_looping()}})),
    )
        .into_response()
}
