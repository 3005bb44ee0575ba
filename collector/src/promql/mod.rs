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

mod aggregate;
mod binary;
mod eval;
mod functions;
mod stream;
mod value;

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
    /// Raised by the caller when nobody waits for the answer any more; the
    /// query then fails with [`QueryError::Canceled`] at its next check.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            default_subquery_step_ms: 60_000,
            cancel: None,
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
    let depth = nesting_bound(query);
    if depth > MAX_DEPTH {
        return Err(QueryError::bad(format!(
            "query is too deeply nested: {depth} nested operators, parentheses or brackets (the limit is {MAX_DEPTH})"
        )));
    }
    promql_parser::parser::parse(query).map_err(|e| {
        let (line, col) = error_position(query, &e);
        QueryError::bad(format!("{line}:{col}: parse error: {e}"))
    })
}

/// The deepest expression tree [`parse`] accepts, counted by
/// [`nesting_bound`]. Parsing, evaluating, printing and dropping an
/// expression recurse once per level of its tree, on whatever thread runs
/// the query; bounding the depth before the parser builds the tree keeps a
/// hostile query (`1+1+…+1` with thousands of terms, thousands of nested
/// parentheses) from overflowing a thread's stack and aborting the process.
/// The limit is far above what people or Grafana write; a tree this deep
/// needs about 4 MiB of stack in a debug build (under 1 MiB optimised), so
/// threads that evaluate queries get [`THREAD_STACK_BYTES`] (see the test).
pub const MAX_DEPTH: usize = 1000;

/// Stack size of the collector's runtime threads (where queries, rules and
/// autoscalers evaluate): enough for a query of [`MAX_DEPTH`] with room to
/// spare. Only touched pages cost memory.
pub const THREAD_STACK_BYTES: usize = 8 << 20;

/// An upper bound of the depth of the tree `query` parses into, from its
/// tokens alone: binary and unary operators each add at most one level (a
/// chain `a+b+c` is a left-deep tree), and so does every unclosed `(`, `[`
/// or `{` at its deepest point. String literals and comments are skipped.
/// Cheap (one pass), and never lower than the real depth.
pub fn nesting_bound(query: &str) -> usize {
    let b = query.as_bytes();
    let (mut ops, mut open, mut deepest, mut braces) = (0usize, 0usize, 0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                // a string: skip to its closing quote (backslash escapes,
                // except in raw backtick strings)
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            c @ (b'(' | b'[' | b'{') => {
                open += 1;
                deepest = deepest.max(open);
                braces += usize::from(c == b'{');
            }
            c @ (b')' | b']' | b'}') => {
                open = open.saturating_sub(1);
                if c == b'}' {
                    braces = braces.saturating_sub(1);
                }
            }
            // label matchers (`{a!="b"}`) do not nest; `!=`, `==`, `>=`,
            // `<=`, `=~`, `!~` are one operator each
            c if is_op(c) => {
                if braces == 0 {
                    ops += 1;
                }
                if matches!(c, b'!' | b'=' | b'<' | b'>')
                    && matches!(b.get(i + 1), Some(b'=' | b'~'))
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || b[i + 1] == b'_') {
                    i += 1;
                }
                let word = &query[start..=i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    ops += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    ops.saturating_add(deepest)
}

fn is_op(c: u8) -> bool {
    matches!(
        c,
        b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' | b'~'
    )
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

#[cfg(test)]
mod depth_tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    /// Runs `f` on a thread with the stack the collector's runtime threads
    /// have, where queries and rules run.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(THREAD_STACK_BYTES)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    fn chain(n: usize) -> String {
        vec!["1"; n].join("+")
    }

    #[test]
    fn the_bound_is_never_below_the_depth() {
        assert_eq!(nesting_bound("up"), 0);
        assert_eq!(nesting_bound("1+1+1"), 2);
        assert_eq!(nesting_bound("((up))"), 2);
        assert_eq!(nesting_bound("-(-(1))"), 4);
        // matchers, strings and comments do not nest
        assert_eq!(nesting_bound(r#"up{a!="(((", b=~"x+"} # ((((("#), 1);
        assert_eq!(nesting_bound("a >= bool b or c"), 2);
        assert_eq!(nesting_bound("sum(rate(x[5m])) by (a)"), 3);
    }

    #[test]
    fn the_deepest_accepted_query_evaluates_on_a_small_stack() {
        let q = chain(MAX_DEPTH + 1);
        assert_eq!(nesting_bound(&q), MAX_DEPTH);
        let v = on_small_stack(move || {
            let store = Store::new(StoreOptions::default());
            let v = Engine::default().instant(&store, &q, 0).unwrap();
            // printing recurses too (the evaluator prints to plan)
            let _ = parse(&q).unwrap().to_string();
            v
        });
        assert_eq!(
            v,
            Value::Scalar {
                t: 0,
                v: (MAX_DEPTH + 1) as f64
            }
        );
        let nested = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        let v = on_small_stack(move || {
            Engine::default()
                .instant(&Store::new(StoreOptions::default()), &nested, 0)
                .unwrap()
        });
        assert_eq!(v, Value::Scalar { t: 0, v: 1.0 });
    }

    #[test]
    fn deeper_queries_are_refused_with_a_clear_error() {
        for q in [
            chain(4000),
            chain(20_000),
            format!("{}1{}", "(".repeat(8000), ")".repeat(8000)),
            format!("{}up{}", "sum(".repeat(5000), ")".repeat(5000)),
            format!("{}1", "-".repeat(5000)),
        ] {
            let e = on_small_stack(move || parse(&q).unwrap_err());
            assert_eq!(e.error_type(), "bad_data");
            assert!(e.to_string().contains("too deeply nested"), "{e}");
        }
    }
}
