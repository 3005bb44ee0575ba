//! Aggregations (`sum avg count min max group stddev stdvar topk bottomk
//! quantile count_values limitk limit_ratio`) over an evaluated vector,
//! grouped by `by`/`without`, as Prometheus computes them.
//!
//! Not here: the streamed path for `sum/avg/count/min/max/group` straight
//! over selectors (`stream.rs`), evaluating the operand (the evaluator).

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};
use vigil_common::Labels;

use super::eval::Evaluator;
use super::value::{Result, Val, kahan_inc, quantile};
use super::{QueryError, Sample};

pub(super) fn go_max_replace(cur: f64, v: f64) -> bool {
    cur < v || cur.is_nan()
}

pub(super) fn go_min_replace(cur: f64, v: f64) -> bool {
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
    pub(super) fn aggregate(&self, a: &AggregateExpr, t: i64) -> Result<Val> {
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

pub(super) fn group_key(l: &Labels, by: bool, names: &[String]) -> u64 {
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

pub(super) fn group_labels(l: &Labels, by: bool, names: &[String]) -> Labels {
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
