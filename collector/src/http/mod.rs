//! The HTTP side: `/metrics`, health, and (from sub-modules) the Prometheus
//! and Loki HTTP APIs. [`router`] builds the whole app from an [`AppState`] so
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
pub mod api;
pub mod remote_write;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// Set once the WAL has been replayed and the servers are up.
    pub ready: Arc<AtomicBool>,
    /// The actions engine, when `--actions` is configured.
    pub actions: Option<Arc<Actions>>,
}

impl AppState {
    pub fn new(store: Arc<Store>) -> Self {
        AppState {
            store,
            ready: Arc::new(AtomicBool::new(false)),
            actions: None,
        }
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .merge(actions_api::routes())
        .merge(api::routes())
        .merge(remote_write::routes())
        .with_state(state)
}

async fn healthy() -> &'static str {
    "vigil-collector is Healthy.\n"
}

async fn ready(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "vigil-collector is Ready.\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "vigil-collector is starting.\n",
        )
    }
}
