//! The evaluator proper: selector preloading, step-wise evaluation,
//! binary operators with vector matching, aggregations.
//!
//! Not here: the function library (`functions.rs`).

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Expr, LabelModifier, MatrixSelector, Offset,
    SubqueryExpr, VectorMatchCardinality, VectorSelector,
};
use vigil_common::Labels;

use super::{EngineOptions, QueryError, Sample, Series, Value, functions};
use crate::store::{Matcher, Queryable, SeriesSamples, is_stale};

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

/// The samples one selector needs, laid out contiguously: series after
/// series in one vector, so a step walks memory in order instead of chasing
/// one allocation per series (range queries over 100k series are bound by
/// memory latency otherwise).
struct Loaded {
    series: Vec<(Labels, usize, usize)>,
    samples: Vec<(i64, f64)>,
}

/// One loaded series.
struct View<'l> {
    labels: &'l Labels,
    samples: &'l [(i64, f64)],
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
    fn iter(&self) -> impl Iterator<Item = View<'_>> {
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
    data: HashMap<usize, Loaded>,
    deadline: Instant,
    /// Samples held by the current step (reset per top-level step).
    step_samples: Cell<usize>,
    /// Group-key hashes per series, per streamed aggregation node, reused
    /// across the steps of a range query.
    key_cache: std::cell::RefCell<HashMap<usize, Vec<u64>>>,
    /// Window positions per matrix selector, for [`Evaluator::for_each_window`].
    cursors: std::cell::RefCell<HashMap<usize, Cursors>>,
    /// Samples held by the result so far.
    result_samples: Cell<usize>,
}

fn key_of(vs: &VectorSelector) -> usize {
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

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => dur_ms(&d),
        Err(e) => -dur_ms(&e.duration()),
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

    fn at_or(&self, at: &Option<AtModifier>, t: i64) -> i64 {
        match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(st)) => system_time_ms(st),
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

/// Prometheus' `labels.String()`: `{a="1", b="2"}`.
pub(super) fn prom_labels_string(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        s.push_str(&format!("{v:?}"));
    }
    s.push('}');
    s
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

// ---------------------------------------------------------------------------
// Binary operators

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(s: &str) -> Result<Op> {
        Ok(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => {
                return Err(QueryError::exec(format!(
                    "unknown binary operator {other:?}"
                )));
            }
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    /// Prometheus' `shouldDropMetricName`: arithmetic except `atan2`.
    fn drops_name(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow | Op::Mod
        )
    }

    fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }
}

fn elem(op: Op, l: f64, r: f64) -> (f64, bool) {
    match op {
        Op::Add => (l + r, true),
        Op::Sub => (l - r, true),
        Op::Mul => (l * r, true),
        Op::Div => (l / r, true),
        Op::Mod => (l % r, true),
        Op::Pow => (l.powf(r), true),
        Op::Atan2 => (l.atan2(r), true),
        Op::Eq => (l, l == r),
        Op::Ne => (l, l != r),
        Op::Gt => (l, l > r),
        Op::Lt => (l, l < r),
        Op::Ge => (l, l >= r),
        Op::Le => (l, l <= r),
        Op::And | Op::Or | Op::Unless => (f64::NAN, false),
    }
}

/// Hash of the labels that decide matching: `on` lists them, otherwise all
/// but the listed ones and `__name__`.
fn signature(l: &Labels, on: bool, names: &[String]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    if on {
        for n in names {
            h.update(n.as_bytes());
            h.update(&[0xff]);
            h.update(l.get(n).unwrap_or("").as_bytes());
            h.update(&[0xff]);
        }
    } else {
        for (k, v) in l.iter() {
            if k == "__name__" || names.iter().any(|n| n == k) {
                continue;
            }
            h.update(k.as_bytes());
            h.update(&[0xff]);
            h.update(v.as_bytes());
            h.update(&[0xff]);
        }
    }
    h.digest()
}

fn match_labels(l: &Labels, on: bool, names: &[String]) -> Labels {
    Labels::from_sorted_unchecked(
        l.iter()
            .filter(|(k, _)| {
                if on {
                    names.iter().any(|n| n == k)
                } else {
                    *k != "__name__" && !names.iter().any(|n| n == k)
                }
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl Evaluator<'_> {
    fn binary(&self, b: &BinaryExpr, t: i64) -> Result<Val> {
        let op = Op::parse(&b.op.to_string())?;
        let return_bool = b.return_bool();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let (v, keep) = elem(op, l, r);
                Ok(Val::Scalar(if op.is_comparison() {
                    if keep { 1.0 } else { 0.0 }
                } else {
                    v
                }))
            }
            (Val::Vector(v), Val::Scalar(s)) => {
                Ok(Val::Vector(vector_scalar(op, v, s, false, return_bool)))
            }
            (Val::Scalar(s), Val::Vector(v)) => {
                Ok(Val::Vector(vector_scalar(op, v, s, true, return_bool)))
            }
            (Val::Vector(l), Val::Vector(r)) => {
                let (card, on, names) = match &b.modifier {
                    None => (VectorMatchCardinality::OneToOne, false, Vec::new()),
                    Some(m) => {
                        let (on, names) = match &m.matching {
                            None => (false, Vec::new()),
                            Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
                            Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
                        };
                        (m.card.clone(), on, names)
                    }
                };
                if op.is_set() {
                    return Ok(Val::Vector(set_op(op, l, r, on, &names)));
                }
                let out = vector_binop(op, l, r, &card, on, &names, return_bool)?;
                Ok(Val::Vector(out))
            }
            (l, r) => Err(QueryError::exec(format!(
                "invalid operand types for binary operator: {} and {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }
}

fn vector_scalar(op: Op, v: Vec<Sample>, s: f64, swap: bool, return_bool: bool) -> Vec<Sample> {
    let mut out = Vec::with_capacity(v.len());
    for smp in v {
        let (lv, rv) = if swap { (s, smp.v) } else { (smp.v, s) };
        let (mut val, keep) = elem(op, lv, rv);
        if op.is_comparison() && swap {
            val = rv;
        }
        if return_bool {
            val = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let labels = if op.drops_name() || return_bool {
            drop_name(smp.labels)
        } else {
            smp.labels
        };
        out.push(Sample {
            labels,
            t: smp.t,
            v: val,
        });
    }
    out
}

fn set_op(op: Op, l: Vec<Sample>, r: Vec<Sample>, on: bool, names: &[String]) -> Vec<Sample> {
    match op {
        Op::And => {
            let rs: std::collections::HashSet<u64> =
                r.iter().map(|s| signature(&s.labels, on, names)).collect();
            l.into_iter()
                .filter(|s| rs.contains(&signature(&s.labels, on, names)))
                .collect()
        }
        Op::Unless => {
            let rs: std::collections::HashSet<u64> =
                r.iter().map(|s| signature(&s.labels, on, names)).collect();
            l.into_iter()
                .filter(|s| !rs.contains(&signature(&s.labels, on, names)))
                .collect()
        }
        _ => {
            let ls: std::collections::HashSet<u64> =
                l.iter().map(|s| signature(&s.labels, on, names)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|s| !ls.contains(&signature(&s.labels, on, names))),
            );
            out
        }
    }
}

fn vector_binop(
    op: Op,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    card: &VectorMatchCardinality,
    on: bool,
    names: &[String],
    return_bool: bool,
) -> Result<Vec<Sample>> {
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let include: Vec<String> = card.labels().map(|l| l.labels.clone()).unwrap_or_default();
    let (lhs, rhs) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut right: HashMap<u64, &Sample> = HashMap::with_capacity(rhs.len());
    for rs in &rhs {
        let h = signature(&rs.labels, on, names);
        if let Some(dup) = right.get(&h) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(QueryError::exec(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                prom_labels_string(&match_labels(&rs.labels, on, names)),
                prom_labels_string(&rs.labels),
                prom_labels_string(&dup.labels),
            )));
        }
        right.insert(h, rs);
    }
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut matched: HashMap<u64, std::collections::HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for ls in lhs {
        let sig = signature(&ls.labels, on, names);
        let Some(rs) = right.get(&sig) else { continue };
        let (fl, fr) = if one_to_many {
            (rs.v, ls.v)
        } else {
            (ls.v, rs.v)
        };
        let (mut v, keep) = elem(op, fl, fr);
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        // result labels
        let mut pairs: Vec<(String, String)> = ls.labels.into_pairs();
        if op.drops_name() || return_bool {
            pairs.retain(|(k, _)| k != "__name__");
        }
        if one_to_one {
            if on {
                pairs.retain(|(k, _)| names.iter().any(|n| n == k));
            } else {
                pairs.retain(|(k, _)| !names.iter().any(|n| n == k));
            }
        }
        for ln in &include {
            pairs.retain(|(k, _)| k != ln);
            if let Some(val) = rs.labels.get(ln)
                && !val.is_empty()
            {
                pairs.push((ln.clone(), val.to_string()));
            }
        }
        pairs.sort();
        let metric = Labels::from_sorted_unchecked(pairs);
        let entry = matched.entry(sig);
        if one_to_one {
            if let std::collections::hash_map::Entry::Occupied(_) = entry {
                return Err(QueryError::exec(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                ));
            }
            entry.or_default();
        } else {
            let set = entry.or_default();
            if !set.insert(metric.clone()) {
                return Err(QueryError::exec(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
        }
        out.push(Sample {
            labels: metric,
            t: ls.t,
            v,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Aggregations

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

fn go_max_replace(cur: f64, v: f64) -> bool {
    cur < v || cur.is_nan()
}

fn go_min_replace(cur: f64, v: f64) -> bool {
    cur > v || cur.is_nan()
}

struct Group {
    labels: Labels,
    value: f64,
    comp: f64,
    mean: f64,
    count: f64,
    values: Vec<f64>,
    samples: Vec<Sample>,
    nan_or_inf: bool,
}

impl Evaluator<'_> {
    fn aggregate(&self, a: &AggregateExpr, t: i64) -> Result<Val> {
        let op = a.op.to_string();
        let param = match &a.param {
            Some(p) => Some(self.eval(p, t)?),
            None => None,
        };
        if param.is_none()
            && matches!(
                op.as_str(),
                "sum" | "avg" | "count" | "min" | "max" | "group"
            )
            && let Some(v) = self.stream_aggregate(a, &op, t)?
        {
            return Ok(Val::Vector(v));
        }
        let input = self.eval_vector(&a.expr, t)?;
        let (by, names): (bool, Vec<String>) = match &a.modifier {
            None => (true, Vec::new()),
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
        };
        let num_param = |name: &str| -> Result<f64> {
            match &param {
                Some(Val::Scalar(v)) => Ok(*v),
                _ => Err(QueryError::exec(format!(
                    "{name}: expected scalar parameter"
                ))),
            }
        };
        // count_values: the value label name
        let cv_label = if op == "count_values" {
            match &param {
                Some(Val::Str(s)) => {
                    if s.is_empty() {
                        return Err(QueryError::exec(format!("invalid label name {s:?}")));
                    }
                    Some(s.clone())
                }
                _ => return Err(QueryError::exec("count_values: expected string parameter")),
            }
        } else {
            None
        };
        let k = match op.as_str() {
            "topk" | "bottomk" | "limitk" => {
                let p = num_param(&op)?;
                if p.is_nan() {
                    return Err(QueryError::exec(format!("Parameter value is NaN for {op}")));
                }
                if p < 1.0 {
                    return Ok(Val::Vector(Vec::new()));
                }
                if p >= 9.2e18 {
                    i64::MAX as usize
                } else {
                    p as usize
                }
            }
            _ => 0,
        };
        let phi = match op.as_str() {
            "quantile" | "limit_ratio" => num_param(&op)?,
            _ => 0.0,
        };
        if op == "limit_ratio" && phi.is_nan() {
            return Err(QueryError::exec("Ratio value is NaN for limit_ratio"));
        }
        let ratio = phi.clamp(-1.0, 1.0);

        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        for s in input {
            let key = group_key(&s.labels, by, &names);
            let gi = match index.get(&key) {
                Some(&i) => i,
                None => {
                    let labels = group_labels(&s.labels, by, &names);
                    index.insert(key, groups.len());
                    groups.push(Group {
                        labels,
                        value: s.v,
                        comp: 0.0,
                        mean: s.v,
                        count: 0.0,
                        values: Vec::new(),
                        samples: Vec::new(),
                        nan_or_inf: false,
                    });
                    let g = groups
                        .last_mut()
                        .ok_or_else(|| QueryError::exec("internal: no group"))?;
                    g.count = 1.0;
                    g.nan_or_inf = !s.v.is_finite();
                    match op.as_str() {
                        "sum" | "avg" => {}
                        "count" => g.value = 1.0,
                        "group" => g.value = 1.0,
                        "stddev" | "stdvar" => g.value = 0.0,
                        "quantile" => g.values.push(s.v),
                        "count_values" => g.values.push(s.v),
                        "topk" | "bottomk" | "limitk" | "limit_ratio" => {
                            g.samples.clear();
                            if op == "limit_ratio" {
                                if ratio_keep(&s.labels, ratio) {
                                    g.samples.push(s);
                                }
                            } else {
                                g.samples.push(s);
                            }
                        }
                        _ => {}
                    }
                    continue;
                }
            };
            let g = &mut groups[gi];
            g.count += 1.0;
            if !s.v.is_finite() {
                g.nan_or_inf = true;
            }
            match op.as_str() {
                "sum" | "avg" => {
                    let (v, c) = kahan_inc(s.v, g.value, g.comp);
                    g.value = v;
                    g.comp = c;
                }
                "count" => g.value += 1.0,
                "group" => {}
                "max" => {
                    if go_max_replace(g.value, s.v) {
                        g.value = s.v
                    }
                }
                "min" => {
                    if go_min_replace(g.value, s.v) {
                        g.value = s.v
                    }
                }
                "stddev" | "stdvar" => {
                    let delta = s.v - g.mean;
                    g.mean += delta / g.count;
                    g.value += delta * (s.v - g.mean);
                }
                "quantile" | "count_values" => g.values.push(s.v),
                "topk" | "bottomk" => {
                    if g.samples.len() < k {
                        g.samples.push(s);
                    } else if let Some(wi) = worst(&g.samples, op == "topk") {
                        let w = g.samples[wi].v;
                        let better = if op == "topk" {
                            w < s.v || (w.is_nan() && !s.v.is_nan())
                        } else {
                            w > s.v || (w.is_nan() && !s.v.is_nan())
                        };
                        if better {
                            g.samples[wi] = s;
                        }
                    }
                }
                "limitk" => {
                    if g.samples.len() < k {
                        g.samples.push(s);
                    }
                }
                "limit_ratio" => {
                    if ratio_keep(&s.labels, ratio) {
                        g.samples.push(s);
                    }
                }
                other => return Err(QueryError::exec(format!("unknown aggregation {other:?}"))),
            }
        }
        self.check_deadline()?;
        let mut out = Vec::with_capacity(groups.len());
        for mut g in groups {
            let v = match op.as_str() {
                "sum" => {
                    if g.value.is_infinite() {
                        g.value
                    } else {
                        g.value + g.comp
                    }
                }
                "avg" => {
                    let sum = if g.value.is_infinite() {
                        g.value
                    } else {
                        g.value + g.comp
                    };
                    sum / g.count
                }
                "count" | "group" | "max" | "min" => g.value,
                "stdvar" => {
                    if g.nan_or_inf {
                        f64::NAN
                    } else {
                        g.value / g.count
                    }
                }
                "stddev" => {
                    if g.nan_or_inf {
                        f64::NAN
                    } else {
                        (g.value / g.count).sqrt()
                    }
                }
                "quantile" => quantile(phi, &mut g.values),
                "count_values" => {
                    let name = cv_label.clone().unwrap_or_default();
                    let mut counts: Vec<(String, f64)> = Vec::new();
                    for v in &g.values {
                        let s = super::format_float(*v);
                        match counts.iter_mut().find(|(k, _)| *k == s) {
                            Some(e) => e.1 += 1.0,
                            None => counts.push((s, 1.0)),
                        }
                    }
                    for (val, c) in counts {
                        let mut pairs: Vec<(String, String)> = g
                            .labels
                            .iter()
                            .filter(|(k, _)| *k != name)
                            .map(|(k, v)| (k.into(), v.into()))
                            .collect();
                        pairs.push((name.clone(), val));
                        out.push(Sample {
                            labels: Labels::new(pairs),
                            t,
                            v: c,
                        });
                    }
                    continue;
                }
                "topk" | "bottomk" => {
                    let desc = op == "topk";
                    g.samples.sort_by(|a, b| {
                        let o =
                            a.v.partial_cmp(&b.v)
                                .unwrap_or_else(|| a.v.is_nan().cmp(&b.v.is_nan()).reverse());
                        if desc { o.reverse() } else { o }
                    });
                    out.extend(g.samples);
                    continue;
                }
                "limitk" | "limit_ratio" => {
                    out.extend(g.samples);
                    continue;
                }
                other => return Err(QueryError::exec(format!("unknown aggregation {other:?}"))),
            };
            out.push(Sample {
                labels: g.labels,
                t,
                v,
            });
        }
        Ok(Val::Vector(out))
    }
}

/// Running state of `sum avg count min max group` fed series by series.
struct Streamed<'o> {
    op: &'o str,
    by: bool,
    names: &'o [String],
    groups: Vec<(Labels, f64, f64, f64)>, // labels, value, kahan comp, count
    keys: Vec<u64>,
    /// 0 sum/avg, 1 count, 2 max, 3 min, 4 group
    code: u8,
    index: HashMap<u64, usize>,
}

impl Streamed<'_> {
    /// Adds series number `idx` (its key hash is cached under that index).
    fn add(&mut self, idx: usize, labels: &Labels, keep_name: bool, v: f64) {
        let include = |k: &str| {
            if k == "__name__" && (!keep_name || !self.by) {
                return false;
            }
            if self.by {
                self.names.iter().any(|n| n == k)
            } else {
                !self.names.iter().any(|n| n == k)
            }
        };
        let cached = self.keys.get(idx).copied().filter(|k| *k != 0);
        let key = match cached {
            Some(k) => k,
            None => {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                for (k, val) in labels.iter() {
                    if include(k) {
                        h.update(k.as_bytes());
                        h.update(&[0xff]);
                        h.update(val.as_bytes());
                        h.update(&[0xff]);
                    }
                }
                // 0 marks "not cached"
                let k = h.digest().max(1);
                if self.keys.len() <= idx {
                    self.keys.resize(idx + 1, 0);
                }
                self.keys[idx] = k;
                k
            }
        };
        match self.index.get(&key) {
            None => {
                let gl = Labels::from_sorted_unchecked(
                    labels
                        .iter()
                        .filter(|(k, _)| include(k))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
                self.index.insert(key, self.groups.len());
                let init = if matches!(self.code, 1 | 4) { 1.0 } else { v };
                self.groups.push((gl, init, 0.0, 1.0));
            }
            Some(&i) => {
                let g = &mut self.groups[i];
                g.3 += 1.0;
                // matched on a code: string compares per series showed up
                // in profiles
                match self.code {
                    0 => (g.1, g.2) = kahan_inc(v, g.1, g.2),
                    1 => g.1 += 1.0,
                    2 if go_max_replace(g.1, v) => g.1 = v,
                    3 if go_min_replace(g.1, v) => g.1 = v,
                    _ => {}
                }
            }
        }
    }

    fn finish(self, t: i64) -> Vec<Sample> {
        let op = self.op;
        self.groups
            .into_iter()
            .map(|(labels, v, c, n)| {
                let total = if v.is_infinite() { v } else { v + c };
                let v = match op {
                    "sum" => total,
                    "avg" => total / n,
                    _ => v,
                };
                Sample { labels, t, v }
            })
            .collect()
    }
}

impl Evaluator<'_> {
    /// `sum by (…) (selector)` and `sum by (…) (rate(selector[r]))`-shaped
    /// aggregations straight from the preloaded samples, without building
    /// the intermediate vector (the dashboard-query hot path).
    fn stream_aggregate(&self, a: &AggregateExpr, op: &str, t: i64) -> Result<Option<Vec<Sample>>> {
        let (by, names): (bool, Vec<String>) = match &a.modifier {
            None => (true, Vec::new()),
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
        };
        let mut st = Streamed {
            code: match op {
                "sum" | "avg" => 0,
                "count" => 1,
                "max" => 2,
                "min" => 3,
                _ => 4,
            },
            op,
            by,
            names: &names,
            groups: Vec::new(),
            index: HashMap::new(),
            keys: self
                .key_cache
                .borrow_mut()
                .remove(&(a as *const AggregateExpr as usize))
                .unwrap_or_default(),
        };
        let mut inner: &Expr = &a.expr;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        match inner {
            Expr::VectorSelector(vs) => {
                let ts = self.at_or(&vs.at, t).saturating_sub(offset_ms(&vs.offset));
                let floor = ts.saturating_sub(self.opts.lookback_delta_ms);
                let mut n = 0;
                if let Some(series) = self.data.get(&key_of(vs)) {
                    for (i, s) in series.iter().enumerate() {
                        let idx = s.samples.partition_point(|p| p.0 <= ts);
                        if idx == 0 {
                            continue;
                        }
                        let (st_, sv) = s.samples[idx - 1];
                        if st_ <= floor || is_stale(sv) {
                            continue;
                        }
                        n += 1;
                        st.add(i, s.labels, true, sv);
                    }
                }
                self.count(n)?;
            }
            Expr::Call(c) => {
                let mut sink = |i: usize, l: &Labels, keep: bool, v: f64| st.add(i, l, keep, v);
                if !functions::stream_range_call(self, c, t, &mut sink)? {
                    return Ok(None);
                }
            }
            _ => return Ok(None),
        }
        let keys = std::mem::take(&mut st.keys);
        self.key_cache
            .borrow_mut()
            .insert(a as *const AggregateExpr as usize, keys);
        Ok(Some(st.finish(t)))
    }
}

/// Index of the sample a new one would replace in topk (smallest) / bottomk
/// (largest); NaN counts as the worst.
fn worst(samples: &[Sample], topk: bool) -> Option<usize> {
    let mut wi: Option<usize> = None;
    for (i, s) in samples.iter().enumerate() {
        let Some(w) = wi else {
            wi = Some(i);
            continue;
        };
        let wv = samples[w].v;
        if wv.is_nan() {
            continue;
        }
        let replace = s.v.is_nan() || if topk { s.v < wv } else { s.v > wv };
        if replace {
            wi = Some(i);
        }
    }
    wi
}

/// Prometheus' `limit_ratio` sampling: keeps a series by where its label
/// hash falls in `[0, 1)`.
fn ratio_keep(l: &Labels, ratio: f64) -> bool {
    let mut b = Vec::new();
    for (k, v) in l.iter() {
        b.extend_from_slice(k.as_bytes());
        b.push(0xff);
        b.extend_from_slice(v.as_bytes());
        b.push(0xff);
    }
    let h = xxhash_rust::xxh64::xxh64(&b, 0);
    let off = h as f64 / u64::MAX as f64;
    if ratio >= 0.0 {
        off < ratio
    } else {
        off >= 1.0 + ratio
    }
}

fn group_key(l: &Labels, by: bool, names: &[String]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (k, v) in l.iter() {
        let inc = if by {
            names.iter().any(|n| n == k)
        } else {
            k != "__name__" && !names.iter().any(|n| n == k)
        };
        if inc {
            h.update(k.as_bytes());
            h.update(&[0xff]);
            h.update(v.as_bytes());
            h.update(&[0xff]);
        }
    }
    h.digest()
}

fn group_labels(l: &Labels, by: bool, names: &[String]) -> Labels {
    Labels::from_sorted_unchecked(
        l.iter()
            .filter(|(k, _)| {
                if by {
                    names.iter().any(|n| n == k)
                } else {
                    *k != "__name__" && !names.iter().any(|n| n == k)
                }
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}
