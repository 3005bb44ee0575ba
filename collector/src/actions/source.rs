//! Where the autoscalers read their metrics: [`MetricSource`], an instant
//! query at a time, answered here by the collector's own PromQL engine over
//! its store ([`PromqlSource`]).
//!
//! Not here: what the autoscaler does with the answer (the engine, `hpa`).

use std::sync::Arc;

use vigil_common::Labels;

use crate::promql::{Engine, EngineOptions, QueryError, Value};
use crate::store::Store;

/// Why a query gave no samples to use.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("query returns a {0}, not a vector or scalar")]
    NotAVector(&'static str),
    /// In a fleet only the leader's autoscalers read (and so act).
    #[error("this collector is not the leader of its fleet")]
    NotLeader,
}

/// An instant query's answer: each sample's labels and value.
pub type QueryResult = Result<Vec<(Labels, f64)>, SourceError>;

/// Instant queries for the autoscalers.
pub trait MetricSource: Send + Sync {
    /// The samples of `expr` evaluated at `at_ms`; empty means no data.
    fn query(&self, expr: &str, at_ms: i64) -> QueryResult;
}

/// Autoscaler queries answered by the collector's own PromQL engine over
/// its store.
pub struct PromqlSource {
    store: Arc<Store>,
    engine: Engine,
}

impl PromqlSource {
    pub fn new(store: Arc<Store>) -> Self {
        PromqlSource {
            store,
            engine: Engine::new(EngineOptions::default()),
        }
    }
}

impl MetricSource for PromqlSource {
    fn query(&self, expr: &str, at_ms: i64) -> QueryResult {
        match self.engine.instant(self.store.as_ref(), expr, at_ms)? {
            Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
            Value::Scalar { v, .. } => Ok(vec![(Labels::default(), v)]),
            other => Err(SourceError::NotAVector(other.type_name())),
        }
    }
}
