//! Streamed aggregation: `sum/avg/count/min/max/group` directly over a
//! selector, or over a `rate`-style function of one, computed from the
//! preloaded samples without building the intermediate vector (the
//! dashboard hot path). [`Evaluator::stream_aggregate`] answers `None` when
//! an expression does not qualify, and the ordinary path runs.
//!
//! Not here: the general aggregation (`aggregate.rs`).

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};
use vigil_common::Labels;

use super::aggregate::{go_max_replace, go_min_replace};
use super::eval::{Evaluator, key_of, offset_ms};
use super::value::{Result, kahan_inc};
use super::{Sample, functions};
use crate::store::is_stale;

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
    pub(super) fn stream_aggregate(
        &self,
        a: &AggregateExpr,
        op: &str,
        t: i64,
    ) -> Result<Option<Vec<Sample>>> {
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
