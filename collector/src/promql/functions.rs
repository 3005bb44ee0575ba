//! The PromQL function library for float samples, following Prometheus'
//! `promql/functions.go` and `quantile.go`.
//!
//! Not here: native-histogram functions (`histogram_count` & co. return
//! nothing, as they would on float-only data).
//!
//! About 900 lines because it is one table: [`call`] dispatches every
//! function name of Prometheus' library in one `match`, next to the
//! implementation of each, so a name and its semantics are read together.

use promql_parser::parser::{Call, Expr};
use regex::Regex;
use vigil_common::Labels;
use vigil_common::time::Civil;

use super::eval::Evaluator;
use super::value::{
    Result, Val, check_unique, drop_name, drop_name_ref, has_fixed_name, kahan_inc, quantile,
};
use super::{QueryError, Sample, Series};

fn unwrap_paren(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_paren(&p.expr),
        e => e,
    }
}

fn map_vec(v: Vec<Sample>, f: impl Fn(f64) -> f64) -> Val {
    Val::Vector(
        v.into_iter()
            .map(|s| Sample {
                labels: drop_name(s.labels),
                t: s.t,
                v: f(s.v),
            })
            .collect(),
    )
}

/// Go's `math.Max` (NaN wins, +Inf wins over NaN).
fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min` (NaN wins, -Inf wins over NaN).
fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

pub(super) fn call(ev: &Evaluator<'_>, c: &Call, t: i64) -> Result<Val> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let arg = |i: usize| -> Result<&Expr> {
        args.get(i)
            .copied()
            .ok_or_else(|| QueryError::bad(format!("missing argument {i} to {name}()")))
    };
    let simple = |f: fn(f64) -> f64| -> Result<Val> { Ok(map_vec(ev.eval_vector(arg(0)?, t)?, f)) };
    let out = match name {
        "abs" => simple(f64::abs)?,
        "ceil" => simple(f64::ceil)?,
        "floor" => simple(f64::floor)?,
        "exp" => simple(f64::exp)?,
        "sqrt" => simple(f64::sqrt)?,
        "ln" => simple(f64::ln)?,
        "log2" => simple(f64::log2)?,
        "log10" => simple(f64::log10)?,
        "sin" => simple(f64::sin)?,
        "cos" => simple(f64::cos)?,
        "tan" => simple(f64::tan)?,
        "asin" => simple(f64::asin)?,
        "acos" => simple(f64::acos)?,
        "atan" => simple(f64::atan)?,
        "sinh" => simple(f64::sinh)?,
        "cosh" => simple(f64::cosh)?,
        "tanh" => simple(f64::tanh)?,
        "asinh" => simple(f64::asinh)?,
        "acosh" => simple(f64::acosh)?,
        "atanh" => simple(f64::atanh)?,
        "deg" => simple(|v| v * 180.0 / std::f64::consts::PI)?,
        "rad" => simple(|v| v * std::f64::consts::PI / 180.0)?,
        "sgn" => simple(|v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        })?,
        "pi" => Val::Scalar(std::f64::consts::PI),
        "time" => Val::Scalar(t as f64 / 1000.0),
        "round" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let to = match args.get(1) {
                Some(e) => ev.eval_scalar(e, t)?,
                None => 1.0,
            };
            let inv = 1.0 / to;
            map_vec(v, move |x| (x * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let lo = ev.eval_scalar(arg(1)?, t)?;
            let hi = ev.eval_scalar(arg(2)?, t)?;
            if hi < lo {
                Val::Vector(Vec::new())
            } else {
                map_vec(v, move |x| go_max(lo, go_min(hi, x)))
            }
        }
        "clamp_min" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let lo = ev.eval_scalar(arg(1)?, t)?;
            map_vec(v, move |x| go_max(lo, x))
        }
        "clamp_max" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let hi = ev.eval_scalar(arg(1)?, t)?;
            map_vec(v, move |x| go_min(hi, x))
        }
        "vector" => Val::Vector(vec![Sample {
            labels: Labels::default(),
            t,
            v: ev.eval_scalar(arg(0)?, t)?,
        }]),
        "scalar" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN })
        }
        "timestamp" => {
            let a = unwrap_paren(arg(0)?);
            let v = match a {
                Expr::VectorSelector(vs) => ev.select_vector(vs, t, true)?,
                other => ev.eval_vector(other, t)?,
            };
            Val::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        labels: drop_name(s.labels),
                        t,
                        v: s.t as f64 / 1000.0,
                    })
                    .collect(),
            )
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let v = match args.first() {
                Some(e) => ev.eval_vector(e, t)?,
                None => vec![Sample {
                    labels: Labels::default(),
                    t,
                    v: t as f64 / 1000.0,
                }],
            };
            // the UTC calendar of the value read as Unix seconds (NaN as 0,
            // as Go's conversion); NaN past years ±999,999
            let part: fn(&Civil) -> f64 = match name {
                "day_of_month" => |c| f64::from(c.day),
                "day_of_week" => |c| f64::from(c.weekday),
                "day_of_year" => |c| f64::from(c.day_of_year),
                "days_in_month" => |c| f64::from(c.days_in_month),
                "hour" => |c| f64::from(c.hour),
                "minute" => |c| f64::from(c.minute),
                "month" => |c| f64::from(c.month),
                _ => |c| f64::from(c.year),
            };
            map_vec(v, |x| {
                Civil::from_unix_secs(x as i64)
                    .as_ref()
                    .map_or(f64::NAN, part)
            })
        }
        "absent" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            if v.is_empty() {
                Val::Vector(vec![Sample {
                    labels: absent_labels(arg(0)?),
                    t,
                    v: 1.0,
                }])
            } else {
                Val::Vector(Vec::new())
            }
        }
        "absent_over_time" => {
            let (m, ..) = ev.eval_range_arg(arg(0)?, t)?;
            if m.is_empty() {
                Val::Vector(vec![Sample {
                    labels: absent_labels(arg(0)?),
                    t,
                    v: 1.0,
                }])
            } else {
                Val::Vector(Vec::new())
            }
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(0)?, t)?;
            let desc = name == "sort_desc";
            // Prometheus' heaps put NaN first in both orders.
            v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                _ => {
                    let o = a.v.partial_cmp(&b.v).unwrap_or(std::cmp::Ordering::Equal);
                    if desc { o.reverse() } else { o }
                }
            });
            Val::Vector(v)
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut v = ev.eval_vector(arg(0)?, t)?;
            let mut names = Vec::new();
            for a in &args[1..] {
                names.push(ev.eval_string(a, t)?);
            }
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                for n in &names {
                    let x = a.labels.get(n).unwrap_or("");
                    let y = b.labels.get(n).unwrap_or("");
                    if x == y {
                        continue;
                    }
                    let o = natural_cmp(x, y);
                    return if desc { o.reverse() } else { o };
                }
                let o = a.labels.cmp(&b.labels);
                if desc { o.reverse() } else { o }
            });
            Val::Vector(v)
        }
        "label_replace" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let dst = ev.eval_string(arg(1)?, t)?;
            let repl = ev.eval_string(arg(2)?, t)?;
            let src = ev.eval_string(arg(3)?, t)?;
            let re_s = ev.eval_string(arg(4)?, t)?;
            let re = Regex::new(&format!("^(?s:{re_s})$")).map_err(|e| {
                QueryError::exec(format!(
                    "invalid regular expression in label_replace(): {re_s}: {e}"
                ))
            })?;
            if dst.is_empty() {
                return Err(QueryError::exec(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for s in v {
                let sv = s.labels.get(&src).unwrap_or("");
                let labels = match re.captures(sv) {
                    Some(caps) => {
                        let mut res = String::new();
                        caps.expand(&repl, &mut res);
                        set_label(&s.labels, &dst, &res)
                    }
                    None => s.labels,
                };
                out.push(Sample { labels, ..s });
            }
            check_unique(&out)?;
            Val::Vector(out)
        }
        "label_join" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let dst = ev.eval_string(arg(1)?, t)?;
            let sep = ev.eval_string(arg(2)?, t)?;
            let mut srcs = Vec::new();
            for a in args.iter().skip(3) {
                srcs.push(ev.eval_string(a, t)?);
            }
            if dst.is_empty() {
                return Err(QueryError::exec(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for s in v {
                let joined: Vec<&str> =
                    srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                let val = joined.join(&sep);
                let labels = set_label(&s.labels, &dst, &val);
                out.push(Sample { labels, ..s });
            }
            check_unique(&out)?;
            Val::Vector(out)
        }
        "histogram_quantile" => {
            let phi = ev.eval_scalar(arg(0)?, t)?;
            let v = ev.eval_vector(arg(1)?, t)?;
            histogram_quantile(phi, v, t)
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_fraction"
        | "histogram_stddev" | "histogram_stdvar" => {
            // Native histograms only; float samples yield nothing.
            for a in &args {
                ev.eval(a, t)?;
            }
            Val::Vector(Vec::new())
        }
        _ => return range_function(ev, c, name, &args, t, None),
    };
    if let Val::Vector(v) = &out {
        check_unique(v)?;
    }
    Ok(out)
}

fn set_label(l: &Labels, name: &str, value: &str) -> Labels {
    let mut pairs: Vec<(String, String)> = l
        .pairs()
        .iter()
        .filter(|(k, _)| k != name)
        .cloned()
        .collect();
    if !value.is_empty() {
        pairs.push((name.to_string(), value.to_string()));
        pairs.sort();
    }
    Labels::from_sorted_unchecked(pairs)
}

/// Labels of `absent()`'s output: the equality matchers of a plain selector,
/// except names matched more than once.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut has: Vec<String> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == "__name__" {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) && !has.contains(&m.name) {
            pairs.retain(|(k, _)| *k != m.name);
            if !m.value.is_empty() {
                pairs.push((m.name.clone(), m.value.clone()));
            }
            has.push(m.name.clone());
        } else {
            pairs.retain(|(k, _)| *k != m.name);
        }
    }
    Labels::new(pairs)
}

/// Natural ("version") order of two strings: digit runs compare as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx: &[u8] = &dx[dx.iter().take_while(|c| **c == b'0').count()..];
                let ty: &[u8] = &dy[dy.iter().take_while(|c| **c == b'0').count()..];
                let o = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// Prometheus' `BucketQuantile` over classic `le` buckets.
fn histogram_quantile(phi: f64, v: Vec<Sample>, t: i64) -> Val {
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    for s in v {
        let Some(le) = s.labels.get("le") else {
            continue;
        };
        let Ok(ub) = le.trim().parse::<f64>() else {
            continue;
        };
        let labels = Labels::from_sorted_unchecked(
            s.labels
                .into_pairs()
                .into_iter()
                .filter(|(k, _)| k != "le" && k != "__name__")
                .collect(),
        );
        match index.get(&labels) {
            Some(&i) => groups[i].1.push((ub, s.v)),
            None => {
                index.insert(labels.clone(), groups.len());
                groups.push((labels, vec![(ub, s.v)]));
            }
        }
    }
    Val::Vector(
        groups
            .into_iter()
            .map(|(labels, mut b)| Sample {
                labels,
                t,
                v: bucket_quantile(phi, &mut b),
            })
            .collect(),
    )
}

pub(super) fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    match buckets.last() {
        Some(l) if l.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // coalesce equal upper bounds
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, n) in buckets.iter() {
        match c.last_mut() {
            Some(last) if last.0 == ub => last.1 += n,
            _ => c.push((ub, n)),
        }
    }
    // ensure monotonic, ignoring tiny deltas
    let mut prev = c[0].1;
    for b in c.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) || cur < prev {
            b.1 = prev;
            continue;
        }
        prev = cur;
    }
    if c.len() < 2 {
        return f64::NAN;
    }
    let obs = c[c.len() - 1].1;
    if obs == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * obs;
    let n = c.len() - 1;
    let b = c[..n].partition_point(|x| x.1 < rank);
    if b == n {
        return c[n - 1].0;
    }
    if b == 0 && c[0].0 <= 0.0 {
        return c[0].0;
    }
    let mut start = 0.0;
    let end = c[b].0;
    let mut count = c[b].1;
    if b > 0 {
        start = c[b - 1].0;
        count -= c[b - 1].1;
        rank -= c[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Functions over a range vector (plus their scalar parameters).
/// Per-series output of a streamed range function: the series' position in
/// the preloaded data, its labels as stored, whether
/// the function keeps the metric name, the value.
pub(super) type Sink<'s> = &'s mut dyn FnMut(usize, &Labels, bool, f64);

/// Streams `func(selector[range])` into `sink` without building the output
/// vector, for aggregations over it. Returns false when the call is not of
/// that shape (the caller evaluates it normally). Only selectors with one
/// fixed metric name qualify: dropping the name then cannot make two series
/// collide, the error Prometheus raises otherwise.
pub(super) fn stream_range_call(
    ev: &Evaluator<'_>,
    c: &Call,
    t: i64,
    sink: Sink<'_>,
) -> Result<bool> {
    let name = c.func.name;
    if !matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "changes"
            | "resets"
            | "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "last_over_time"
            | "present_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
    ) {
        return Ok(false);
    }
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let Some(Expr::MatrixSelector(ms)) = args.first().map(|a| unwrap_paren(a)) else {
        return Ok(false);
    };
    if !has_fixed_name(&ms.vs) {
        return Ok(false);
    }
    range_function(ev, c, name, &args, t, Some(sink))?;
    Ok(true)
}

fn range_function(
    ev: &Evaluator<'_>,
    c: &Call,
    name: &str,
    args: &[&Expr],
    t: i64,
    mut sink: Option<Sink<'_>>,
) -> Result<Val> {
    let range_idx = match name {
        "quantile_over_time" => 1,
        _ => 0,
    };
    let range_expr = args
        .get(range_idx)
        .copied()
        .ok_or_else(|| QueryError::bad(format!("missing range argument to {name}()")))?;
    let scalar_arg = |i: usize| -> Result<f64> {
        let e = args
            .get(i)
            .copied()
            .ok_or_else(|| QueryError::bad(format!("missing argument {i} to {name}()")))?;
        ev.eval_scalar(e, t)
    };
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    let phi = if name == "quantile_over_time" {
        scalar_arg(0)?
    } else {
        0.0
    };
    let pred_dur = if name == "predict_linear" {
        scalar_arg(1)?
    } else {
        0.0
    };
    let (sf, tf) = if name == "double_exponential_smoothing" {
        let sf = scalar_arg(1)?;
        let tf = scalar_arg(2)?;
        if !(sf > 0.0 && sf < 1.0) {
            return Err(QueryError::exec(format!(
                "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
            )));
        }
        if !(tf > 0.0 && tf < 1.0) {
            return Err(QueryError::exec(format!(
                "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
            )));
        }
        (sf, tf)
    } else {
        (0.0, 0.0)
    };
    let _ = c;
    let compute = |samples: &[(i64, f64)], start: i64, end: i64| -> Result<Option<f64>> {
        Ok(match name {
            "rate" => extrapolated_rate(samples, start, end, true, true),
            "increase" => extrapolated_rate(samples, start, end, true, false),
            "delta" => extrapolated_rate(samples, start, end, false, false),
            "irate" => instant_value(samples, true),
            "idelta" => instant_value(samples, false),
            "deriv" => {
                if samples.len() < 2 {
                    None
                } else {
                    Some(linear_regression(samples, samples[0].0).0)
                }
            }
            "predict_linear" => {
                if samples.len() < 2 {
                    None
                } else {
                    let (slope, icpt) = linear_regression(samples, t);
                    Some(slope * pred_dur + icpt)
                }
            }
            "changes" => {
                let mut n = 0.0;
                for w in samples.windows(2) {
                    let (p, c) = (w[0].1, w[1].1);
                    if !(c == p || (c.is_nan() && p.is_nan())) {
                        n += 1.0;
                    }
                }
                Some(n)
            }
            "resets" => Some(samples.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
            "avg_over_time" => Some(avg(samples)),
            "sum_over_time" => Some(sum(samples)),
            "count_over_time" => Some(samples.len() as f64),
            "min_over_time" => {
                let mut m = samples[0].1;
                for &(_, v) in &samples[1..] {
                    if m > v || m.is_nan() {
                        m = v;
                    }
                }
                Some(m)
            }
            "max_over_time" => {
                let mut m = samples[0].1;
                for &(_, v) in &samples[1..] {
                    if m < v || m.is_nan() {
                        m = v;
                    }
                }
                Some(m)
            }
            "last_over_time" => samples.last().map(|p| p.1),
            "first_over_time" => samples.first().map(|p| p.1),
            "ts_of_last_over_time" => samples.last().map(|p| p.0 as f64 / 1000.0),
            "ts_of_first_over_time" => samples.first().map(|p| p.0 as f64 / 1000.0),
            "ts_of_max_over_time" | "ts_of_min_over_time" => {
                let max = name == "ts_of_max_over_time";
                let mut best = samples[0];
                for &p in &samples[1..] {
                    let better = if max { p.1 >= best.1 } else { p.1 <= best.1 };
                    if better || best.1.is_nan() {
                        best = p;
                    }
                }
                Some(best.0 as f64 / 1000.0)
            }
            "present_over_time" => Some(1.0),
            "stddev_over_time" => Some(variance(samples).sqrt()),
            "stdvar_over_time" => Some(variance(samples)),
            "quantile_over_time" => {
                let mut vals: Vec<f64> = samples.iter().map(|p| p.1).collect();
                Some(quantile(phi, &mut vals))
            }
            "mad_over_time" => {
                let mut vals: Vec<f64> = samples.iter().map(|p| p.1).collect();
                let med = quantile(0.5, &mut vals);
                let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
                Some(quantile(0.5, &mut dev))
            }
            "double_exponential_smoothing" => double_exp(samples, sf, tf),
            other => {
                return Err(QueryError::bad(format!(
                    "function {other:?} is not supported"
                )));
            }
        })
    };
    let mut out = Vec::new();
    if let Expr::MatrixSelector(ms) = unwrap_paren(range_expr) {
        // Fast path: work on the preloaded samples in place.
        ev.for_each_window(ms, t, |i, labels, samples, start, end| {
            if let Some(v) = compute(samples, start, end)? {
                if let Some(sink) = sink.as_mut() {
                    sink(i, labels, keep_name, v);
                    return Ok(());
                }
                out.push(Sample {
                    labels: if keep_name {
                        labels.clone()
                    } else {
                        drop_name_ref(labels)
                    },
                    t,
                    v,
                });
            }
            Ok(())
        })?;
    } else {
        let (series, start, end) = ev.eval_range_arg(range_expr, t)?;
        for Series { labels, samples } in series {
            if let Some(v) = compute(&samples, start, end)? {
                out.push(Sample {
                    labels: if keep_name { labels } else { drop_name(labels) },
                    t,
                    v,
                });
            }
        }
    }
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

fn sum(s: &[(i64, f64)]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for &(_, v) in s {
        (sum, c) = kahan_inc(v, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

fn avg(s: &[(i64, f64)]) -> f64 {
    let total = sum(s);
    if total.is_finite() || s.iter().any(|p| !p.1.is_finite()) {
        return total / s.len() as f64;
    }
    // overflow: incremental mean
    let mut mean = 0.0;
    for (i, &(_, v)) in s.iter().enumerate() {
        mean += v / (i + 1) as f64 - mean / (i + 1) as f64;
    }
    mean
}

fn variance(s: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut aux) = (0.0, 0.0, 0.0);
    for &(_, v) in s {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        aux += delta * (v - mean);
    }
    aux / count
}

/// Prometheus' `extrapolatedRate` (3.x order of the clamps).
pub(super) fn extrapolated_rate(
    s: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let first = s[0];
    let last = s[s.len() - 1];
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for &(_, v) in &s[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    if sampled == 0.0 {
        return None;
    }
    let avg_between = sampled / (s.len() - 1) as f64;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if counter {
        let mut to_zero = to_start;
        if result > 0.0 && first.1 >= 0.0 {
            to_zero = sampled * (first.1 / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= (range_end - range_start) as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(s: &[(i64, f64)], rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let last = s[s.len() - 1];
    let prev = s[s.len() - 2];
    let mut r = if rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if rate {
        r /= interval as f64 / 1000.0;
    }
    Some(r)
}

/// Least-squares fit with x in seconds relative to `intercept_time`.
pub(super) fn linear_regression(s: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = s[0].1;
    let mut const_y = true;
    for (i, &(ts, v)) in s.iter().enumerate() {
        if const_y && i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (ts - intercept_time) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn double_exp(s: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, s[0].1);
    let mut b = s[1].1 - s[0].1;
    for (i, &(_, v)) in s.iter().enumerate().skip(1) {
        let x = sf * v;
        if i - 1 > 0 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}
