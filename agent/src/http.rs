//! The agent's HTTP endpoint: `/metrics` (its latest scrape and its own
//! `vigil_agent_*` metrics, with the `node` label), `/api/v1/targets` (the
//! application targets, in Prometheus's format), `/-/healthy` and `/-/ready`
//! (ready once the first scrape is done). [`app`] is kept apart
//! from serving so tests can call it directly.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;

use crate::model::Scrape;
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct AgentState {
    pub node: String,
    pub latest: Arc<Mutex<Option<Arc<Scrape>>>>,
    pub telemetry: Arc<Telemetry>,
    pub targets: Arc<crate::targets::Registry>,
    pub target_metrics: Arc<crate::targets::metrics::TargetMetrics>,
}

pub fn app(state: AgentState) -> Router {
    let targets = Router::new()
        .route("/api/v1/targets", get(crate::targets::api::handler))
        .with_state(state.targets.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "vigil-agent is Healthy.\n" }))
        .route("/-/ready", get(ready))
        .with_state(state)
        .merge(targets)
}

async fn metrics(State(s): State<AgentState>) -> impl IntoResponse {
    let mut out = Scrape::new(0);
    if let Some(l) = s.latest.lock().as_ref() {
        out.families = l
            .families
            .iter()
            .filter(|f| !f.name.starts_with("vigil_agent_"))
            .cloned()
            .collect();
    }
    out.families.extend(s.telemetry.families());
    out.families.extend(s.target_metrics.families());
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        out.encode_text(Some(&s.node)),
    )
}

async fn ready(State(s): State<AgentState>) -> impl IntoResponse {
    if s.latest.lock().is_some() {
        (StatusCode::OK, "vigil-agent is Ready.\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "vigil-agent has not scraped yet.\n",
        )
    }
}
