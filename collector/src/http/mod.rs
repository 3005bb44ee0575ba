//! The HTTP side: `/metrics`, health, and (from sub-modules) the Prometheus
//! and Loki HTTP APIs and the push receivers (remote write, OTLP, Loki push). [`router`] builds the whole app from an [`AppState`] so
//! tests can serve it on `127.0.0.1:0` or call it with `oneshot`.
//!
//! Each sub-module exposes `fn routes() -> Router<AppState>`; [`router`]
//! merges them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::actions::engine::Actions;
use crate::store::Store;

pub mod actions_api;
pub mod actions_overview;
pub mod api;
pub mod auth;
pub mod gate;
pub mod loki;
pub mod loki_push;
pub mod otlp;
pub mod remote_write;
pub mod rules_api;
pub mod rw_wire;
pub mod status;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// Set once the WAL has been replayed and the servers are up.
    pub ready: Arc<AtomicBool>,
    /// The actions engine, when `--actions` is configured.
    pub actions: Option<Arc<Actions>>,
    /// The collector's self-metrics, appended to `/metrics`.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// Metric family metadata as agents sent it.
    pub metadata: Arc<crate::metadata::Metadata>,
    /// The durable ingest path (WAL); remote write uses it when present.
    pub ingest: Option<Arc<crate::ingest::core::IngestCore>>,
    /// The rule manager, when rules are configured (`/api/v1/rules`, `/api/v1/alerts`).
    pub rules: Option<Arc<crate::rules::RuleManager>>,
    /// The log store (the Loki API).
    pub logs: Option<Arc<crate::logs::LogStore>>,
    /// The durable path of pushes (OTLP, Loki push); without it they answer 503.
    pub push: Option<Arc<crate::ingest::push::PushIngest>>,
    /// Concurrency and cancellation of PromQL and LogQL queries.
    pub queries: Arc<gate::QueryGate>,
    /// Whether `POST /api/v1/write` accepts data.
    pub remote_write_receiver: bool,
    /// What a series and sample must respect (remote write checks them
    /// before the WAL).
    pub series_limits: crate::limits::SeriesLimits,
    /// Who may use which endpoint.
    pub auth: Arc<auth::Auth>,
    /// Start time and settings for the status endpoints.
    pub status: Arc<status::StatusInfo>,
    /// Whether this collector is the one of its fleet that acts (the
    /// Alertmanager webhook answers 503 elsewhere, so Alertmanager retries).
    pub leadership: crate::fleet::leader::Leadership,
}

impl AppState {
    pub fn new(store: Arc<Store>) -> Self {
        AppState {
            store,
            ready: Arc::new(AtomicBool::new(false)),
            actions: None,
            telemetry: None,
            metadata: Arc::default(),
            ingest: None,
            rules: None,
            logs: None,
            push: None,
            queries: gate::QueryGate::new(Default::default()),
            remote_write_receiver: true,
            series_limits: Default::default(),
            auth: auth::Auth::open(),
            status: Arc::default(),
            leadership: crate::fleet::leader::Leadership::always(),
        }
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/-/reload", axum::routing::post(reload).put(reload))
        .merge(actions_api::routes())
        .merge(api::routes())
        .merge(remote_write::routes())
        .merge(rules_api::routes())
        .merge(loki::routes())
        .merge(loki_push::routes())
        .merge(otlp::routes())
        .merge(status::routes())
        .merge(actions_overview::routes())
        .merge(crate::ui::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::middleware,
        ))
        .with_state(state)
}

/// Reloads the rule files and the credentials (web config, token files),
/// as Prometheus' `POST /-/reload`; a failure keeps what runs and answers
/// 500 with the reasons.
async fn reload(State(s): State<AppState>) -> (StatusCode, String) {
    let (m, a) = (s.rules.clone(), s.auth.clone());
    let r = tokio::task::spawn_blocking(move || {
        let mut ok = true;
        let mut out = String::new();
        match a.reload() {
            Ok(()) => out.push_str("reloaded credentials\n"),
            Err(e) => {
                ok = false;
                out.push_str(&format!("failed to reload credentials: {e}\n"));
            }
        }
        match m.map(|m| m.reload()) {
            None => out.push_str("no rule files configured\n"),
            Some(Ok(n)) => out.push_str(&format!("reloaded {n} rule groups\n")),
            Some(Err(e)) => {
                ok = false;
                out.push_str(&format!("failed to reload rules: {e}\n"));
            }
        }
        (ok, out)
    })
    .await;
    match r {
        Ok((true, out)) => (StatusCode::OK, out),
        Ok((false, out)) => (StatusCode::INTERNAL_SERVER_ERROR, out),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload task failed: {e}\n"),
        ),
    }
}

async fn healthy() -> &'static str {
    "vigil-collector is Healthy.\n"
}

/// 200 once the collector serves queries — also while a full disk stops it
/// from taking new data, which the body then says (a readiness probe that
/// took it out of its Service would stop the queries too, and agents keep
/// their data either way); 503 while it starts (WAL replay).
async fn ready(State(s): State<AppState>) -> (StatusCode, String) {
    if !s.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "vigil-collector is starting.\n".into(),
        );
    }
    match s.ingest.as_ref().and_then(|c| c.space.full()) {
        Some(full) => (
            StatusCode::OK,
            format!("vigil-collector is Ready for queries, not for writes: {full}.\n"),
        ),
        None => (StatusCode::OK, "vigil-collector is Ready.\n".into()),
    }
}

/// The latest value of every series (with `# HELP`/`# TYPE` from the
/// agents' metadata), then the collector's own metrics.
async fn metrics(State(s): State<AppState>) -> impl axum::response::IntoResponse {
    let store = s.store.clone();
    let md = s.metadata.clone();
    let mut body = tokio::task::spawn_blocking(move || {
        let mut latest = store.latest();
        // the collector's own metrics follow live from the registry; their
        // self-scraped copies in the store would repeat the families
        latest.retain(|(l, _, _)| l.get("job") != Some(crate::selfscrape::JOB));
        latest.sort_by(|a, b| {
            a.0.metric_name()
                .cmp(&b.0.metric_name())
                .then(a.0.cmp(&b.0))
        });
        let mut out = String::with_capacity(latest.len() * 96);
        let mut family: Option<String> = None;
        for (labels, _t, v) in &latest {
            let name = labels.metric_name().unwrap_or("");
            if family.as_deref() != Some(name) {
                family = Some(name.to_string());
                if let Some(m) = md.get(name) {
                    if !m.help.is_empty() {
                        out.push_str(&format!(
                            "# HELP {name} {}\n",
                            m.help.replace('\\', "\\\\").replace('\n', "\\n")
                        ));
                    }
                    out.push_str(&format!(
                        "# TYPE {name} {}\n",
                        crate::metadata::Metadata::type_name(&m)
                    ));
                }
            }
            if labels.len() == 1 {
                out.push_str(name);
            } else {
                out.push_str(&labels.to_string());
            }
            out.push(' ');
            out.push_str(&crate::promql::format_float(*v));
            out.push('\n');
        }
        out
    })
    .await
    .unwrap_or_default();
    if let Some(t) = &s.telemetry {
        body.push_str(&t.encode());
    }
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}
