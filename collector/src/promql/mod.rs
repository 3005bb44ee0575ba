//! The PromQL engine: evaluates expressions parsed by `promql-parser` over any
//! [`Queryable`], with Prometheus 3.x semantics for float samples.
//!
//! Not here: parsing (the `promql-parser` crate), storage (`crate::store`),
//! HTTP encoding (`crate::http::api`). Native histograms are not supported.
//!
//! # Public API (stable; the rules engine builds on it)
//! - [`Engine::new`]`(`[`EngineOptions`]`)`
//! - [`Engine::instant`]`(q, query, time_ms) -> Result<`[`Value`]`, `[`QueryError`]`>`
//! - [`Engine::range`]`(q, query, start_ms, end_ms, step_ms) -> Result<Value, QueryError>`
//!   (always a [`Value::Matrix`], series sorted by labels)
//! - [`Engine::instant_expr`] / [`Engine::range_expr`]: the same on an already
//!   parsed [`Expr`]; [`parse`] parses with errors mapped to [`QueryError::BadData`].
//! - [`QueryError::error_type`] gives Prometheus' `errorType` string
//!   (`bad_data` → HTTP 400, `execution` → 422, `timeout` → 503,
//!   `canceled` → 499); too many samples is `execution`, as in Prometheus.
//! - [`selector_matchers`] turns a parsed selector into store matchers (for
//!   `match[]`), [`format_float`] prints values the way Prometheus does.
//!
//! Limits: [`EngineOptions`] (5m lookback, 2m timeout, 50M samples, 1m
//! default subquery step). Times are Unix milliseconds, bounded to ±2^60.
//!
//! # How evaluation works
//! Before evaluating, one pass over the AST works out the time range every
//! selector needs (offsets, `@`, subqueries included) and loads it from the
//! store once. Then the expression is evaluated step by step: each step is an
//! instant evaluation on the preloaded samples (binary search per series).
//! Subqueries evaluate their inner expression at absolute step-aligned times,
//! as Prometheus does, so results match its range evaluation.
//! `sum/avg/count/min/max/group` directly over a selector or over
//! `rate`-style functions of one are streamed from the preloaded samples
//! without building the intermediate vector (the dashboard hot path).

mod eval;
mod functions;

use std::time::Duration;

pub use promql_parser::parser::Expr;
use vigil_common::Labels;

use crate::store::Queryable;

/// Limits and defaults of an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta_ms: i64,
    /// A query running longer than this fails with [`QueryError::Timeout`].
    pub timeout: Duration,
    /// Most samples a query may hold at once (Prometheus: 50,000,000).
    pub max_samples: usize,
    /// Step of subqueries written without one (`x[5m:]`); Prometheus uses the
    /// global evaluation interval, 1m by default.
    pub default_subquery_step_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            default_subquery_step_ms: 60_000,
        }
    }
}

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    /// Milliseconds.
    pub t: i64,
    pub v: f64,
}

/// One series of a range vector (matrix).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    /// `(timestamp_ms, value)` in time order.
    pub samples: Vec<(i64, f64)>,
}

/// A query result.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    /// Prometheus' `resultType` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Why a query failed; [`QueryError::error_type`] maps to Prometheus'
/// `errorType` and the HTTP layer to its status code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query or a parameter is malformed (HTTP 400).
    #[error("{msg}")]
    BadData { msg: String },
    /// The query is well-formed but cannot be executed (HTTP 422).
    #[error("{msg}")]
    Execution { msg: String },
    #[error("query timed out in query execution")]
    Timeout,
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    #[error("query was canceled in query execution")]
    Canceled,
}

impl QueryError {
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::BadData { .. } => "bad_data",
            QueryError::Execution { .. } | QueryError::TooManySamples => "execution",
            QueryError::Timeout => "timeout",
            QueryError::Canceled => "canceled",
        }
    }

    pub(crate) fn exec(msg: impl Into<String>) -> Self {
        QueryError::Execution { msg: msg.into() }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        QueryError::BadData { msg: msg.into() }
    }
}

/// Parses a query; errors become [`QueryError::BadData`] as Prometheus
/// words them: `line:col: parse error: …`.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    promql_parser::parser::parse(query).map_err(|e| {
        let (line, col) = error_position(query, &e);
        QueryError::bad(format!("{line}:{col}: parse error: {e}"))
    })
}

/// Where a parse error is, 1-based line and column. `promql-parser` does not
/// report positions, so this finds the longest prefix that still parses and
/// points at the first character after it (an unclosed parenthesis points at
/// the end, as Prometheus does).
fn error_position(query: &str, msg: &str) -> (usize, usize) {
    let mut at = query.len();
    if !msg.contains("unclosed") && query.len() <= 4096 {
        let bounds: Vec<usize> = query.char_indices().map(|(i, _)| i).collect();
        at = 0;
        for &k in bounds.iter().rev() {
            if k > 0 && promql_parser::parser::parse(&query[..k]).is_ok() {
                at = k;
                break;
            }
        }
        // skip the blanks after the valid prefix
        at += query[at..].len() - query[at..].trim_start().len();
    }
    let before = &query[..at.min(query.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Store matchers of a parsed selector: one list per `or` alternative
/// (`{a="1" or b="2"}`), the metric name included, regexes anchored as
/// Prometheus 3 does.
pub fn selector_matchers(
    vs: &promql_parser::parser::VectorSelector,
) -> Result<Vec<Vec<crate::store::Matcher>>, QueryError> {
    eval::store_matchers(vs)
}

/// The evaluator. Cheap to clone; holds only options.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at one instant.
    pub fn instant(
        &self,
        q: &dyn Queryable,
        query: &str,
        time_ms: i64,
    ) -> Result<Value, QueryError> {
        let expr = parse(query)?;
        self.instant_expr(q, &expr, time_ms)
    }

    /// Evaluates `query` at `start, start+step, …, ≤ end`.
    pub fn range(
        &self,
        q: &dyn Queryable,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value, QueryError> {
        let expr = parse(query)?;
        self.range_expr(q, &expr, start_ms, end_ms, step_ms)
    }

    pub fn instant_expr(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        time_ms: i64,
    ) -> Result<Value, QueryError> {
        eval::run_instant(&self.opts, q, expr, time_ms)
    }

    pub fn range_expr(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::bad(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::bad(
                "end timestamp must not be before start time",
            ));
        }
        eval::run_range(&self.opts, q, expr, start_ms, end_ms, step_ms)
    }
}

/// Formats a float the way Prometheus' JSON and text outputs do
/// (`strconv.FormatFloat(f, 'f', -1, 64)`, with `NaN`, `+Inf`, `-Inf`).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests;
