//! What the evaluator's parts pass between them: the step value [`Val`], the
//! engine's `Result`, label helpers (dropping `__name__`, the
//! duplicate-label-set check) and the float helpers
//! aggregations and functions share (compensated sums, quantiles).
//!
//! Not here: evaluation itself (`eval.rs` and its parts).

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::VectorSelector;
use vigil_common::Labels;

use super::{QueryError, Sample, Series};

pub(super) type Result<T> = std::result::Result<T, QueryError>;

/// A value during evaluation at one step.
#[derive(Debug, Clone)]
pub(super) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Val {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

/// `l` without `__name__`, copied in one pass.
pub(super) fn drop_name_ref(l: &Labels) -> Labels {
    Labels::from_sorted_unchecked(
        l.iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Whether a selector matches exactly one metric name.
pub(super) fn has_fixed_name(vs: &VectorSelector) -> bool {
    vs.matchers.or_matchers.is_empty()
        && (vs.name.is_some()
            || vs
                .matchers
                .matchers
                .iter()
                .any(|m| m.name == "__name__" && matches!(m.op, PMatchOp::Equal)))
}

pub(super) fn drop_name(l: Labels) -> Labels {
    if l.get("__name__").is_none() {
        return l;
    }
    Labels::from_sorted_unchecked(
        l.into_pairs()
            .into_iter()
            .filter(|(k, _)| k != "__name__")
            .collect(),
    )
}

/// Fails when two samples share a label set.
pub(super) fn check_unique(v: &[Sample]) -> Result<()> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for s in v {
        if !seen.insert(&s.labels) {
            return Err(QueryError::exec(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

/// Neumaier-compensated summation step, as Prometheus' `kahanSumInc`.
pub(super) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus' `quantile` over plain values (sorts `values`).
pub(super) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    // Go's sort.Float64s puts NaN first; total_cmp puts positive NaN last.
    let nans = values.iter().filter(|v| v.is_nan()).count();
    if nans > 0 {
        let mut v: Vec<f64> = values.iter().copied().filter(|v| v.is_nan()).collect();
        v.extend(values.iter().copied().filter(|v| !v.is_nan()));
        values.copy_from_slice(&v);
    }
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}
