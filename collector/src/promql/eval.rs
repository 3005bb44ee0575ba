//! The evaluator proper: selector preloading, step-wise evaluation, and the
//! dispatch of each expression kind to its part. The interpreter is
//! recursive — an expression's parts ([`super::binary`], [`super::aggregate`],
//! [`super::stream`], [`super::functions`]) evaluate their operands by calling
//! back into [`Evaluator`] — and that recursion is the only import cycle of
//! the engine.
//!
//! Not here: the values and label helpers the parts share
//! ([`super::value`]), binary operators, aggregations, streamed aggregation,
//! the function library.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Instant;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{
    AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector,
};
use vigil_common::Labels;

pub(super) use super::value::{Result, Val};
use super::value::{check_unique, drop_name};
use super::{EngineOptions, QueryError, Sample, Series, Value, functions};
use crate::store::{Matcher, Queryable, SeriesSamples, is_stale};

/// The samples one selector needs, laid out contiguously: series after
/// series in one vector, so a step walks memory in order instead of chasing
/// one allocation per series (range queries over 100k series are bound by
/// memory latency otherwise).
pub(super) struct Loaded {
    series: Vec<(Labels, usize, usize)>,
    samples: Vec<(i64, f64)>,
}

/// One loaded series.
pub(super) struct View<'l> {
    pub(super) labels: &'l Labels,
    pub(super) samples: &'l [(i64, f64)],
}

impl From<Vec<SeriesSamples>> for Loaded {
    fn from(v: Vec<SeriesSamples>) -> Self {
        let total = v.iter().map(|s| s.samples.len()).sum();
        let mut samples = Vec::with_capacity(total);
        let mut series = Vec::with_capacity(v.len());
        for s in v {
            let lo = samples.len();
            samples.extend_from_slice(&s.samples);
            series.push((s.labels, lo, samples.len()));
        }
        Loaded { series, samples }
    }
}

impl Loaded {
    pub(super) fn iter(&self) -> impl Iterator<Item = View<'_>> {
        self.series.iter().map(|(labels, lo, hi)| View {
            labels,
            samples: &self.samples[*lo..*hi],
        })
    }
}

impl<'l> IntoIterator for &'l Loaded {
    type Item = View<'l>;
    type IntoIter = Box<dyn Iterator<Item = View<'l>> + 'l>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Where each series' window was at the last step of a matrix selector.
struct Cursors {
    start: i64,
    end: i64,
    pos: Vec<(usize, usize)>,
}

/// State of one query evaluation.
pub(super) struct Evaluator<'a> {
    pub(super) opts: &'a EngineOptions,
    /// Query start and end (for `@ start()` / `@ end()`).
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) data: HashMap<usize, Loaded>,
    deadline: Instant,
    /// Samples held by the current step (reset per top-level step).
    step_samples: Cell<usize>,
    /// Group-key hashes per series, per streamed aggregation node, reused
    /// across the steps of a range query.
    pub(super) key_cache: std::cell::RefCell<HashMap<usize, Vec<u64>>>,
    /// Window positions per matrix selector, for [`Evaluator::for_each_window`].
    cursors: std::cell::RefCell<HashMap<usize, Cursors>>,
    /// Samples held by the result so far.
    result_samples: Cell<usize>,
}

pub(super) fn key_of(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// Milliseconds of a duration, bounded to ±2^60 so that time arithmetic on
/// absurd offsets or ranges cannot overflow.
pub(super) fn dur_ms(d: &std::time::Duration) -> i64 {
    d.as_millis().min(1 << 60) as i64
}

pub(super) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => dur_ms(d),
        Some(Offset::Neg(d)) => -dur_ms(d),
    }
}

/// Converts a parsed selector's matchers to store matchers: one list per
/// `or` alternative.
pub(super) fn store_matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>> {
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        for m in ms {
            out.push(match &m.op {
                PMatchOp::Equal => Matcher::equal(&m.name, &m.value),
                PMatchOp::NotEqual => Matcher {
                    name: m.name.clone(),
                    op: crate::store::MatchOp::NotEqual(m.value.clone()),
                },
                PMatchOp::Re(_) | PMatchOp::NotRe(_) => {
                    let neg = matches!(m.op, PMatchOp::NotRe(_));
                    Matcher::regex(&m.name, &m.value, neg).map_err(|e| {
                        QueryError::bad(format!("invalid regular expression {:?}: {e}", m.value))
                    })?
                }
            });
        }
        Ok(out)
    };
    let mut base = convert(&vs.matchers.matchers)?;
    if let Some(name) = &vs.name
        && !base.iter().any(|m| m.name == "__name__")
    {
        base.push(Matcher::equal("__name__", name));
    }
    if vs.matchers.or_matchers.is_empty() {
        return Ok(vec![base]);
    }
    let mut alts = Vec::new();
    for alt in &vs.matchers.or_matchers {
        let mut ms = convert(alt)?;
        ms.extend(base.iter().cloned());
        alts.push(ms);
    }
    Ok(alts)
}

/// Drops labels with empty values: Prometheus never stores them, and a label
/// with an empty value is the same as an absent one.
fn clean_labels(l: Labels) -> Labels {
    if l.iter().all(|(_, v)| !v.is_empty()) {
        return l;
    }
    Labels::from_sorted_unchecked(
        l.into_pairs()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect(),
    )
}

impl<'a> Evaluator<'a> {
    pub(super) fn new(
        opts: &'a EngineOptions,
        q: &dyn Queryable,
        expr: &Expr,
        start: i64,
        end: i64,
    ) -> Result<Self> {
        let mut ev = Evaluator {
            opts,
            start,
            end,
            data: HashMap::new(),
            deadline: Instant::now() + opts.timeout,
            step_samples: Cell::new(0),
            key_cache: Default::default(),
            cursors: Default::default(),
            result_samples: Cell::new(0),
        };
        // Series order only shows where limitk/limit_ratio pick series by
        // position (Prometheus' order there is by labels; ties in topk and
        // sort are unordered in Prometheus too). Sorting 100k label sets
        // costs more than the rest of a query, so only then.
        let needs_order = expr.to_string().contains("limit");
        let mut ranges: HashMap<usize, (i64, i64, &VectorSelector)> = HashMap::new();
        ev.plan(expr, start, end, &mut ranges);
        for (k, (mint, maxt, vs)) in ranges {
            let mut out: Vec<SeriesSamples> = Vec::new();
            let alts = store_matchers(vs)?;
            let many = alts.len() > 1;
            for ms in alts {
                out.extend(q.select(&ms, mint, maxt));
            }
            for s in &mut out {
                s.labels = clean_labels(std::mem::take(&mut s.labels));
            }
            if needs_order || many {
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
            }
            if many {
                out.dedup_by(|a, b| a.labels == b.labels);
            }
            ev.check_deadline()?;
            ev.data.insert(k, Loaded::from(out));
        }
        Ok(ev)
    }

    pub(super) fn at_or(&self, at: &Option<AtModifier>, t: i64) -> i64 {
        match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(st)) => vigil_common::time::unix_ms(*st),
        }
    }

    /// Records the time range each selector needs for evaluation over
    /// `[start, end]`.
    fn plan<'e>(
        &self,
        expr: &'e Expr,
        start: i64,
        end: i64,
        out: &mut HashMap<usize, (i64, i64, &'e VectorSelector)>,
    ) {
        let mut add = |vs: &'e VectorSelector, back: i64| {
            let (s, e) = if vs.at.is_some() {
                let a = self.at_or(&vs.at, start);
                (a, a)
            } else {
                (start, end)
            };
            let off = offset_ms(&vs.offset);
            let (mint, maxt) = (
                s.saturating_sub(off).saturating_sub(back),
                e.saturating_sub(off),
            );
            let ent = out.entry(key_of(vs)).or_insert((mint, maxt, vs));
            ent.0 = ent.0.min(mint);
            ent.1 = ent.1.max(maxt);
        };
        match expr {
            Expr::VectorSelector(vs) => add(vs, self.opts.lookback_delta_ms),
            Expr::MatrixSelector(ms) => add(&ms.vs, dur_ms(&ms.range)),
            Expr::Subquery(sq) => {
                let (s, e) = if sq.at.is_some() {
                    let a = self.at_or(&sq.at, start);
                    (a, a)
                } else {
                    (start, end)
                };
                let off = offset_ms(&sq.offset);
                let range = dur_ms(&sq.range);
                self.plan(
                    &sq.expr,
                    s.saturating_sub(off).saturating_sub(range),
                    e.saturating_sub(off),
                    out,
                );
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.plan(p, start, end, out);
                }
                self.plan(&a.expr, start, end, out);
            }
            Expr::Unary(u) => self.plan(&u.expr, start, end, out),
            Expr::Binary(b) => {
                self.plan(&b.lhs, start, end, out);
                self.plan(&b.rhs, start, end, out);
            }
            Expr::Paren(p) => self.plan(&p.expr, start, end, out),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.plan(a, start, end, out);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    pub(super) fn check_deadline(&self) -> Result<()> {
        if self
            .opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(QueryError::Canceled);
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }

    /// Accounts for `n` more samples held by the current step.
    pub(super) fn count(&self, n: usize) -> Result<()> {
        let cur = self.step_samples.get() + n;
        self.step_samples.set(cur);
        if cur + self.result_samples.get() > self.opts.max_samples {
            return Err(QueryError::TooManySamples);
        }
        self.check_deadline()
    }

    pub(super) fn eval(&self, expr: &Expr, t: i64) -> Result<Val> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(vs) => {
                    let out: Vec<Sample> = vs
                        .into_iter()
                        .map(|s| Sample {
                            labels: drop_name(s.labels),
                            t: s.t,
                            v: -s.v,
                        })
                        .collect();
                    check_unique(&out)?;
                    Ok(Val::Vector(out))
                }
                other => Err(QueryError::exec(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {:?}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.select_vector(vs, t, false)?)),
            Expr::MatrixSelector(ms) => Ok(Val::Matrix(self.select_matrix(ms, t)?.0)),
            Expr::Subquery(sq) => Ok(Val::Matrix(self.subquery(sq, t)?.0)),
            Expr::Call(c) => functions::call(self, c, t),
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Binary(b) => {
                let v = self.binary(b, t)?;
                if let Val::Vector(v) = &v {
                    check_unique(v)?;
                }
                Ok(v)
            }
            Expr::Extension(_) => Err(QueryError::exec("extension expressions are not supported")),
        }
    }

    pub(super) fn eval_vector(&self, expr: &Expr, t: i64) -> Result<Vec<Sample>> {
        match self.eval(expr, t)? {
            Val::Vector(v) => Ok(v),
            other => Err(QueryError::exec(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub(super) fn eval_scalar(&self, expr: &Expr, t: i64) -> Result<f64> {
        match self.eval(expr, t)? {
            Val::Scalar(v) => Ok(v),
            other => Err(QueryError::exec(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub(super) fn eval_string(&self, expr: &Expr, t: i64) -> Result<String> {
        match self.eval(expr, t)? {
            Val::Str(v) => Ok(v),
            other => Err(QueryError::exec(format!(
                "expected string, got {}",
                other.type_name()
            ))),
        }
    }

    /// The instant vector of `vs` at `t`; `keep_ts` keeps each sample's own
    /// timestamp (for `timestamp()`), otherwise samples carry `t`.
    pub(super) fn select_vector(
        &self,
        vs: &VectorSelector,
        t: i64,
        keep_ts: bool,
    ) -> Result<Vec<Sample>> {
        let ts = self.at_or(&vs.at, t).saturating_sub(offset_ms(&vs.offset));
        let Some(series) = self.data.get(&key_of(vs)) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let floor = ts.saturating_sub(self.opts.lookback_delta_ms);
        for s in series {
            let idx = s.samples.partition_point(|p| p.0 <= ts);
            if idx == 0 {
                continue;
            }
            let (st, sv) = s.samples[idx - 1];
            if st <= floor || is_stale(sv) {
                continue;
            }
            out.push(Sample {
                labels: s.labels.clone(),
                t: if keep_ts { st } else { t },
                v: sv,
            });
        }
        self.count(out.len())?;
        Ok(out)
    }

    /// The range vector of `ms` at `t`, with the window `(start, end]`.
    pub(super) fn select_matrix(
        &self,
        ms: &MatrixSelector,
        t: i64,
    ) -> Result<(Vec<Series>, i64, i64)> {
        let end = self
            .at_or(&ms.vs.at, t)
            .saturating_sub(offset_ms(&ms.vs.offset));
        let start = end.saturating_sub(dur_ms(&ms.range));
        let Some(series) = self.data.get(&key_of(&ms.vs)) else {
            return Ok((Vec::new(), start, end));
        };
        let mut out = Vec::new();
        let mut n = 0;
        for s in series {
            let lo = s.samples.partition_point(|p| p.0 <= start);
            let hi = s.samples.partition_point(|p| p.0 <= end);
            if lo >= hi {
                continue;
            }
            let pts: Vec<(i64, f64)> = s.samples[lo..hi]
                .iter()
                .copied()
                .filter(|p| !is_stale(p.1))
                .collect();
            if pts.is_empty() {
                continue;
            }
            n += pts.len();
            out.push(Series {
                labels: s.labels.clone(),
                samples: pts,
            });
        }
        self.count(n)?;
        Ok((out, start, end))
    }

    /// Calls `f` with each series' samples in the window of `ms` at `t`
    /// (stale markers removed), without copying when there are none.
    pub(super) fn for_each_window(
        &self,
        ms: &MatrixSelector,
        t: i64,
        mut f: impl FnMut(usize, &Labels, &[(i64, f64)], i64, i64) -> Result<()>,
    ) -> Result<()> {
        let end = self
            .at_or(&ms.vs.at, t)
            .saturating_sub(offset_ms(&ms.vs.offset));
        let start = end.saturating_sub(dur_ms(&ms.range));
        let Some(series) = self.data.get(&key_of(&ms.vs)) else {
            return Ok(());
        };
        let mut n = 0;
        let mut buf: Vec<(i64, f64)> = Vec::new();
        // Range queries move the window forward step by step: continue from
        // where the previous step's window was instead of binary searching
        // again (the searches' cache misses dominated 100k-series queries).
        let key = key_of(&ms.vs);
        let mut cursors = self.cursors.borrow_mut();
        let cur = cursors.entry(key).or_insert_with(|| Cursors {
            start: i64::MAX,
            end: i64::MAX,
            pos: Vec::new(),
        });
        let forward = start >= cur.start && end >= cur.end && cur.pos.len() == series.series.len();
        if !forward {
            cur.pos.clear();
            cur.pos.resize(series.series.len(), (0, 0));
        }
        cur.start = start;
        cur.end = end;
        for (i, s) in series.iter().enumerate() {
            let (mut lo, mut hi) = cur.pos[i];
            if forward {
                while lo < s.samples.len() && s.samples[lo].0 <= start {
                    lo += 1;
                }
                hi = hi.max(lo);
                while hi < s.samples.len() && s.samples[hi].0 <= end {
                    hi += 1;
                }
            } else {
                lo = s.samples.partition_point(|p| p.0 <= start);
                hi = s.samples.partition_point(|p| p.0 <= end);
            }
            cur.pos[i] = (lo, hi);
            if lo >= hi {
                continue;
            }
            let w = &s.samples[lo..hi];
            let w = if w.iter().any(|p| is_stale(p.1)) {
                buf.clear();
                buf.extend(w.iter().copied().filter(|p| !is_stale(p.1)));
                if buf.is_empty() {
                    continue;
                }
                &buf[..]
            } else {
                w
            };
            n += w.len();
            f(i, s.labels, w, start, end)?;
        }
        self.count(n)
    }

    /// A subquery at `t`: the inner expression at absolute multiples of the
    /// step inside `(start, end]`.
    pub(super) fn subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<(Vec<Series>, i64, i64)> {
        let end = self.at_or(&sq.at, t).saturating_sub(offset_ms(&sq.offset));
        let start = end.saturating_sub(dur_ms(&sq.range));
        let step = match sq.step {
            Some(s) if s.as_millis() > 0 => dur_ms(&s),
            _ => self.opts.default_subquery_step_ms.max(1),
        };
        let mut tt = start.div_euclid(step) * step;
        if tt <= start {
            tt += step;
        }
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<Series> = Vec::new();
        let mut n = 0;
        while tt <= end {
            self.check_deadline()?;
            match self.eval(&sq.expr, tt)? {
                Val::Scalar(v) => {
                    push_point(&mut index, &mut out, Labels::default(), tt, v);
                    n += 1;
                }
                Val::Vector(vs) => {
                    n += vs.len();
                    for s in vs {
                        push_point(&mut index, &mut out, s.labels, tt, s.v);
                    }
                }
                other => {
                    return Err(QueryError::exec(format!(
                        "subquery is only allowed on instant vector or scalar, got {}",
                        other.type_name()
                    )));
                }
            }
            tt = match tt.checked_add(step) {
                Some(t) => t,
                None => break,
            };
        }
        self.count(n)?;
        Ok((out, start, end))
    }

    /// Evaluates an argument that must be a range vector, with its window.
    pub(super) fn eval_range_arg(&self, expr: &Expr, t: i64) -> Result<(Vec<Series>, i64, i64)> {
        match expr {
            Expr::Paren(p) => self.eval_range_arg(&p.expr, t),
            Expr::MatrixSelector(ms) => self.select_matrix(ms, t),
            Expr::Subquery(sq) => self.subquery(sq, t),
            _ => Err(QueryError::exec(format!(
                "expected range vector, got {}",
                self.eval(expr, t)?.type_name()
            ))),
        }
    }

    pub(super) fn reset_step(&self) {
        self.step_samples.set(0);
    }

    pub(super) fn add_result(&self, n: usize) -> Result<()> {
        self.result_samples.set(self.result_samples.get() + n);
        if self.result_samples.get() > self.opts.max_samples {
            return Err(QueryError::TooManySamples);
        }
        Ok(())
    }
}

fn push_point(
    index: &mut HashMap<Labels, usize>,
    out: &mut Vec<Series>,
    labels: Labels,
    t: i64,
    v: f64,
) {
    match index.get(&labels) {
        Some(&i) => out[i].samples.push((t, v)),
        None => {
            index.insert(labels.clone(), out.len());
            out.push(Series {
                labels,
                samples: vec![(t, v)],
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Top level

pub(super) fn run_instant(
    opts: &EngineOptions,
    q: &dyn Queryable,
    expr: &Expr,
    t: i64,
) -> Result<Value> {
    let ev = Evaluator::new(opts, q, expr, t, t)?;
    Ok(match ev.eval(expr, t)? {
        Val::Scalar(v) => Value::Scalar { t, v },
        Val::Str(v) => Value::String { t, v },
        Val::Vector(v) => {
            check_unique(&v)?;
            Value::Vector(v.into_iter().map(|s| Sample { t, ..s }).collect())
        }
        Val::Matrix(m) => Value::Matrix(m),
    })
}

pub(super) fn run_range(
    opts: &EngineOptions,
    q: &dyn Queryable,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Value> {
    use promql_parser::parser::value::ValueType;
    match expr.value_type() {
        ValueType::Vector | ValueType::Scalar => {}
        other => {
            let name = match other {
                ValueType::Matrix => "range vector",
                ValueType::String => "string",
                _ => "unknown",
            };
            return Err(QueryError::bad(format!(
                "invalid expression type {name:?} for range query, must be Scalar or instant Vector"
            )));
        }
    }
    let ev = Evaluator::new(opts, q, expr, start, end)?;
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    let mut t = start;
    while t <= end {
        ev.reset_step();
        match ev.eval(expr, t)? {
            Val::Scalar(v) => {
                push_point(&mut index, &mut out, Labels::default(), t, v);
                ev.add_result(1)?;
            }
            Val::Vector(vs) => {
                check_unique(&vs)?;
                ev.add_result(vs.len())?;
                for s in vs {
                    push_point(&mut index, &mut out, s.labels, t, s.v);
                }
            }
            other => {
                return Err(QueryError::bad(format!(
                    "invalid expression type {:?} for range query, must be Scalar or instant Vector",
                    other.type_name()
                )));
            }
        }
        t = match t.checked_add(step) {
            Some(t) => t,
            None => break,
        };
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Matrix(out))
}
