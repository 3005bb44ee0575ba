//! `vigil-collector test rules`: rule unit tests in promtool's format, run
//! with promtool's semantics and reported in promtool's words, so the same
//! file gets the same verdict from both tools.
//!
//! What promtool does (cmd/promtool/unittest.go, 2.42) and this follows:
//! - `rule_files` are relative to the test file and may be globs;
//!   `evaluation_interval` defaults to 1m; `group_eval_order` orders groups.
//! - Per test group: input series start at time 0, one value per `interval`
//!   (`a+bxN`, `a-bxN`, `axN`, `_`, `_xN`, `stale`). Rules are evaluated at
//!   0, eval_interval, … up to the largest `eval_time`, with only the samples
//!   up to that time loaded. An evaluation error ends the test group.
//! - An alert check at `eval_time` t uses the evaluation at the last step
//!   ≤ t and compares the *firing* alerts of the named rule(s) (labels with
//!   `alertname`, annotations) as sets.
//! - `promql_expr_test` queries run after the evaluations, on the samples
//!   loaded by then; values compare exactly (NaN never equals).
//!
//! Not here: rule file parsing ([`super::file`]) or evaluation ([`super::group`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use vigil_common::Labels;

use super::file;
use super::group::{EvalEnv, Group, RuleKindState, query_vector};
use crate::gofmt::{
    self, go_duration, go_quote, labels_string, model_duration, parse_model_duration,
};
use crate::promql::{Engine, EngineOptions};
use crate::store::{STALE_NAN, Store, StoreOptions};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitTestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTestCase>,
    #[serde(default)]
    promql_expr_test: Vec<PromqlTestCase>,
    #[serde(default)]
    external_labels: Option<Labels>,
    #[serde(default)]
    external_url: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    #[serde(default)]
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTestCase {
    #[serde(default)]
    eval_time: Option<String>,
    #[serde(default)]
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: Option<Labels>,
    #[serde(default)]
    exp_annotations: Option<Labels>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromqlTestCase {
    #[serde(default)]
    expr: String,
    #[serde(default)]
    eval_time: Option<String>,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    #[serde(default)]
    value: f64,
}

fn duration(s: &Option<String>) -> Result<i64, String> {
    match s {
        None => Ok(0),
        Some(s) => parse_model_duration(s).map_err(|e| e.to_string()),
    }
}

/// Runs the unit tests in `files`, printing as promtool does (results on
/// `out`, failures on `err`). True when all passed.
pub fn run_files(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    let mut failed = false;
    for f in files {
        let _ = writeln!(out, "Unit Testing:  {}", f.display());
        let _ = out.flush();
        match run_file(f, err) {
            Ok(()) => {
                let _ = writeln!(out, "  SUCCESS");
            }
            Err(errs) => {
                let _ = writeln!(err, "  FAILED:");
                for e in errs {
                    let _ = writeln!(err, "{e}");
                    let _ = err.flush();
                    let _ = writeln!(out);
                }
                failed = true;
            }
        }
        let _ = writeln!(out);
    }
    !failed
}

fn run_file(path: &Path, warn: &mut dyn Write) -> Result<(), Vec<String>> {
    let content =
        std::fs::read_to_string(path).map_err(|e| vec![format!("open {}: {e}", path.display())])?;
    let utf: UnitTestFile = serde_saphyr::from_str(&content).map_err(|e| {
        vec![format!(
            "{}: {}",
            path.display(),
            e.to_string().lines().next().unwrap_or("")
        )]
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rule_files = Vec::new();
    for rf in &utf.rule_files {
        let p = if !rf.is_empty() && !Path::new(rf).is_absolute() {
            base.join(rf)
        } else {
            PathBuf::from(rf)
        };
        let pat = p.display().to_string();
        let mut matched: Vec<PathBuf> = match glob::glob(&pat) {
            Ok(paths) => paths.filter_map(Result::ok).collect(),
            Err(e) => return Err(vec![format!("syntax error in pattern: {e}")]),
        };
        matched.sort();
        if matched.is_empty() {
            let _ = writeln!(warn, "  WARNING: no file match pattern {pat}");
        }
        rule_files.extend(matched);
    }
    let eval_interval = match duration(&utf.evaluation_interval).map_err(|e| vec![e])? {
        0 => 60_000,
        d => d,
    };
    let mut order = HashMap::new();
    for (i, g) in utf.group_eval_order.iter().enumerate() {
        if order.insert(g.clone(), i).is_some() {
            return Err(vec![format!(
                "group name repeated in evaluation order: {g}"
            )]);
        }
    }
    let mut errs = Vec::new();
    for tg in &utf.tests {
        errs.extend(run_group(tg, eval_interval, &order, &rule_files));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// One expected or actual alert: labels and annotations (sorted pairs).
type LabelsAndAnnotations = Vec<(Labels, Labels)>;

fn la_string(la: &LabelsAndAnnotations) -> String {
    if la.is_empty() {
        return "[]".into();
    }
    let one = |(l, a): &(Labels, Labels)| {
        format!(
            "Labels:{}\nAnnotations:{}",
            labels_string(l.iter()),
            labels_string(a.iter())
        )
    };
    let mut s = format!("[\n0:{}", indent_lines(&format!("\n{}", one(&la[0])), "  "));
    for (i, x) in la[1..].iter().enumerate() {
        s += &format!(
            ",\n{}:{}",
            i + 1,
            indent_lines(&format!("\n{}", one(x)), "  ")
        );
    }
    s += "\n]";
    s
}

fn indent_lines(lines: &str, indent: &str) -> String {
    let parts: Vec<&str> = lines.split('\n').collect();
    let mut out = String::new();
    for (i, l) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str(indent);
        }
        out.push_str(l);
        if i != parts.len() - 1 {
            out.push('\n');
        }
    }
    out
}

fn samples_string(s: &[(Labels, f64)]) -> String {
    if s.is_empty() {
        return "nil".into();
    }
    s.iter()
        .map(|(l, v)| format!("{} {}", labels_string(l.iter()), gofmt::format_e(*v, true)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a metric (`name{a="b"}` or `{__name__="x"}`) into labels.
fn parse_metric(s: &str) -> Result<Labels, String> {
    // PromQL refuses an empty selector; a metric may be one
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if t == "{}" {
        return Ok(Labels::default());
    }
    let expr = promql_parser::parser::parse(s).map_err(|e| e.to_string())?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("{s:?} is not a metric"));
    };
    if vs.offset.is_some() || vs.at.is_some() || !vs.matchers.or_matchers.is_empty() {
        return Err(format!("{s:?} is not a metric"));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(n) = &vs.name {
        pairs.push(("__name__".into(), n.clone()));
    }
    for m in &vs.matchers.matchers {
        if !matches!(m.op, promql_parser::label::MatchOp::Equal) {
            return Err(format!("unexpected matcher {} in metric {s:?}", m.op));
        }
        if !m.value.is_empty() {
            pairs.push((m.name.clone(), m.value.clone()));
        }
    }
    Ok(Labels::new(pairs))
}

/// A value of the series notation: `None` = omitted (`_`).
fn parse_values(s: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for item in s.split_whitespace() {
        let bad = || {
            format!(
                "bad series value {item:?} in {s:?}: expected number, \"stale\", \"_\", \"a+bxN\", \"a-bxN\" or \"axN\""
            )
        };
        if item == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = item.strip_prefix("_x") {
            let n: u64 = n.parse().map_err(|_| bad())?;
            out.extend(std::iter::repeat_n(None, n as usize));
            continue;
        }
        if item == "stale" {
            out.push(Some(STALE_NAN));
            continue;
        }
        let (first, rest) = split_number(item).ok_or_else(bad)?;
        let start = parse_num(first).ok_or_else(bad)?;
        if rest.is_empty() {
            out.push(Some(start));
            continue;
        }
        // rest: [+-]NUM xN | xN
        let (step, times) = if let Some(t) = rest.strip_prefix('x') {
            (0.0, t)
        } else {
            let (num, after) = split_number(rest).ok_or_else(bad)?;
            if !(num.starts_with('+') || num.starts_with('-')) {
                return Err(bad());
            }
            (
                parse_num(num).ok_or_else(bad)?,
                after.strip_prefix('x').ok_or_else(bad)?,
            )
        };
        let n: u64 = times.parse().map_err(|_| bad())?;
        if n > 10_000_000 {
            return Err(format!("{item:?}: too many repetitions"));
        }
        let mut v = start;
        for _ in 0..=n {
            out.push(Some(v));
            v += step;
        }
    }
    Ok(out)
}

/// Splits a leading (optionally signed) number off `s`.
fn split_number(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let rest = &s[i..];
    for word in ["Inf", "NaN"] {
        if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(word) {
            return Some((&s[..i + 3], &s[i + 3..]));
        }
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i == start || &s[start..i] == "." {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let d = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > d {
            i = j;
        }
    }
    Some((&s[..i], &s[i..]))
}

fn parse_num(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(['+', '-']);
    let neg = s.starts_with('-');
    let v = if t.eq_ignore_ascii_case("inf") {
        f64::INFINITY
    } else if t.eq_ignore_ascii_case("nan") {
        f64::NAN
    } else {
        t.parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Input samples, appended up to a time as the evaluation advances.
struct Loader {
    series: Vec<(Labels, Vec<(i64, f64)>)>,
    cursor: Vec<usize>,
}

impl Loader {
    fn append_till(&mut self, store: &Store, ts: i64) -> Result<(), String> {
        for (i, (labels, samples)) in self.series.iter().enumerate() {
            let r = store.get_or_create(labels).map_err(|e| e.to_string())?;
            while self.cursor[i] < samples.len() && samples[self.cursor[i]].0 <= ts {
                let (t, v) = samples[self.cursor[i]];
                store.append(r, t, v).map_err(|e| e.to_string())?;
                self.cursor[i] += 1;
            }
        }
        Ok(())
    }
}

fn run_group(
    tg: &TestGroup,
    eval_interval: i64,
    order: &HashMap<String, usize>,
    rule_files: &[PathBuf],
) -> Vec<String> {
    let interval = match duration(&tg.interval) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    // input series (a later definition of the same series replaces it, as in promtool)
    let mut defs: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
    for is in &tg.input_series {
        let labels = match parse_metric(&is.series) {
            Ok(l) => l,
            Err(e) => return vec![format!("error in input series {:?}: {e}", is.series)],
        };
        let values = match parse_values(&is.values) {
            Ok(v) => v,
            Err(e) => return vec![e],
        };
        let samples: Vec<(i64, f64)> = values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as i64 * interval, v)))
            .collect();
        if let Some(d) = defs.iter_mut().find(|d| d.0 == labels) {
            d.1 = samples;
        } else {
            defs.push((labels, samples));
        }
    }
    let n = defs.len();
    let mut loader = Loader {
        series: defs,
        cursor: vec![0; n],
    };
    let store = Arc::new(Store::new(StoreOptions::default()));
    let engine = Engine::new(EngineOptions {
        default_subquery_step_ms: eval_interval,
        ..Default::default()
    });
    let external_labels = tg.external_labels.clone().unwrap_or_default();
    let external_url = tg.external_url.clone().unwrap_or_default();

    // rules
    let mut groups = Vec::new();
    let mut errs = Vec::new();
    for f in rule_files {
        match file::load_file(f) {
            Ok(rf) => {
                for g in &rf.groups {
                    match Group::from_spec(g, interval) {
                        Ok(g) => groups.push(g),
                        Err(e) => errs.push(e),
                    }
                }
            }
            Err(e) => errs.extend(e.errors),
        }
    }
    if !errs.is_empty() {
        return errs;
    }
    groups.sort_by_key(|g| order.get(&g.name).copied().unwrap_or(0));

    let max_eval = tg
        .alert_rule_test
        .iter()
        .map(|a| duration(&a.eval_time))
        .chain(tg.promql_expr_test.iter().map(|p| duration(&p.eval_time)))
        .collect::<Result<Vec<i64>, String>>();
    let max_eval = match max_eval {
        Ok(v) => v.into_iter().max().unwrap_or(0),
        Err(e) => return vec![e],
    };

    let group_note = tg
        .name
        .as_ref()
        .filter(|n| !n.is_empty())
        .map(|n| format!(" (in TestGroup {n})"))
        .unwrap_or_default();
    let mut alert_tests: BTreeMap<i64, Vec<&AlertTestCase>> = BTreeMap::new();
    for a in &tg.alert_rule_test {
        let t = duration(&a.eval_time).unwrap_or(0);
        if a.alertname.is_empty() {
            return vec![format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}{group_note}",
                model_duration(t)
            )];
        }
        alert_tests.entry(t).or_default().push(a);
    }
    let alert_times: Vec<i64> = alert_tests.keys().copied().collect();
    let mut curr = 0;

    let env = EvalEnv {
        engine: &engine,
        store: &store,
        remote: None,
        external_labels: &external_labels,
        external_url: &external_url,
        resend_delay_ms: 60_000,
    };
    let mut errs = Vec::new();
    let mut ts = 0i64;
    while ts <= max_eval {
        if let Err(e) = loader.append_till(&store, ts) {
            errs.push(e);
        } else {
            let mut eval_errs = Vec::new();
            for g in &mut groups {
                g.eval(ts, &env);
                for r in &g.rules {
                    if let Some(e) = &r.last_error {
                        eval_errs.push(format!(
                            "    rule: {}, time: {}, err: {e}",
                            r.name,
                            go_duration(ts)
                        ));
                    }
                }
            }
            if !eval_errs.is_empty() {
                errs.extend(eval_errs);
                return errs;
            }
        }
        while curr < alert_times.len()
            && ts <= alert_times[curr]
            && alert_times[curr] < ts + eval_interval
        {
            let t = alert_times[curr];
            let cases = &alert_tests[&t];
            let mut got: HashMap<&str, LabelsAndAnnotations> = HashMap::new();
            for g in &groups {
                for r in &g.rules {
                    let RuleKindState::Alerting(ar) = &r.kind else {
                        continue;
                    };
                    if !cases.iter().any(|c| c.alertname == ar.name) {
                        continue;
                    }
                    let e = got.entry(ar.name.as_str()).or_default();
                    for a in ar.active_alerts() {
                        if a.state == super::alerting::AlertState::Firing {
                            e.push((a.labels.clone(), a.annotations.clone()));
                        }
                    }
                }
            }
            for case in cases {
                let mut got_alerts = got
                    .get(case.alertname.as_str())
                    .cloned()
                    .unwrap_or_default();
                let mut exp: LabelsAndAnnotations = case
                    .exp_alerts
                    .iter()
                    .map(|a| {
                        (
                            a.exp_labels
                                .clone()
                                .unwrap_or_default()
                                .with("alertname", case.alertname.clone()),
                            a.exp_annotations.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                got_alerts.sort();
                exp.sort();
                if exp != got_alerts {
                    let name = tg
                        .name
                        .as_ref()
                        .filter(|n| !n.is_empty())
                        .map(|n| format!("    name: {n},\n"))
                        .unwrap_or_default();
                    errs.push(format!(
                        "{name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                        case.alertname,
                        model_duration(t),
                        indent_lines(&la_string(&exp), "            "),
                        indent_lines(&la_string(&got_alerts), "            ")
                    ));
                }
            }
            curr += 1;
        }
        ts += eval_interval;
    }

    'outer: for tc in &tg.promql_expr_test {
        let t = duration(&tc.eval_time).unwrap_or(0);
        let got = crate::promql::parse(&tc.expr).and_then(|e| query_vector(&engine, &store, &e, t));
        let mut got = match got {
            Ok(g) => g,
            Err(e) => {
                errs.push(format!(
                    "    expr: {}, time: {}, err: {e}",
                    go_quote(&tc.expr),
                    model_duration(t)
                ));
                continue;
            }
        };
        let mut exp = Vec::new();
        for s in &tc.exp_samples {
            match parse_metric(&s.labels) {
                Ok(l) => exp.push((l, s.value)),
                Err(e) => {
                    errs.push(format!(
                        "    expr: {}, time: {}, err: labels {}: {e}",
                        go_quote(&tc.expr),
                        model_duration(t),
                        go_quote(&s.labels)
                    ));
                    continue 'outer;
                }
            }
        }
        // empty label values are absent labels
        for (l, _) in got.iter_mut() {
            if l.iter().any(|(_, v)| v.is_empty()) {
                *l = Labels::from_sorted_unchecked(
                    l.clone()
                        .into_pairs()
                        .into_iter()
                        .filter(|(_, v)| !v.is_empty())
                        .collect(),
                );
            }
        }
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let equal =
            exp.len() == got.len() && exp.iter().zip(&got).all(|(a, b)| a.0 == b.0 && a.1 == b.1);
        if !equal {
            errs.push(format!(
                "    expr: {}, time: {},\n        exp: {}\n        got: {}",
                go_quote(&tc.expr),
                model_duration(t),
                samples_string(&exp),
                samples_string(&got)
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_values_notation() {
        let v = |s: &str| parse_values(s).unwrap();
        assert_eq!(v("1+2x3"), vec![Some(1.0), Some(3.0), Some(5.0), Some(7.0)]);
        assert_eq!(v("10-1x2"), vec![Some(10.0), Some(9.0), Some(8.0)]);
        assert_eq!(v("5x2"), vec![Some(5.0); 3]);
        assert_eq!(
            v("_ _x2 -1 +2"),
            vec![None, None, None, Some(-1.0), Some(2.0)]
        );
        assert_eq!(v("-1+1x2"), vec![Some(-1.0), Some(0.0), Some(1.0)]);
        assert_eq!(
            v("1e3 1.5e-1x1"),
            vec![Some(1000.0), Some(0.15), Some(0.15)]
        );
        assert!(v("stale")[0].is_some_and(crate::store::is_stale));
        assert_eq!(
            v("Inf -Inf")[..],
            [Some(f64::INFINITY), Some(f64::NEG_INFINITY)]
        );
        assert!(v("NaN")[0].is_some_and(f64::is_nan));
        assert_eq!(v(""), vec![]);
        for bad in ["1+", "x3", "1+2", "abc", "1+2xy", "1 2 3y", "1x"] {
            assert!(parse_values(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics() {
        assert_eq!(
            parse_metric("up{job=\"a\"}").unwrap(),
            Labels::new([("__name__", "up"), ("job", "a")])
        );
        assert_eq!(
            parse_metric("{__name__=\"up\", job=\"a\"}").unwrap(),
            Labels::new([("__name__", "up"), ("job", "a")])
        );
        assert!(parse_metric("up{job=~\"a\"}").is_err());
        assert_eq!(parse_metric(" { } ").unwrap(), Labels::default());
    }

    #[test]
    fn failure_strings_match_promtool() {
        let la = vec![(
            Labels::new([("alertname", "A"), ("job", "x")]),
            Labels::new([("summary", "s")]),
        )];
        assert_eq!(
            indent_lines(&la_string(&la), "            "),
            "[\n            0:\n              Labels:{alertname=\"A\", job=\"x\"}\n              Annotations:{summary=\"s\"}\n            ]"
        );
        assert_eq!(
            samples_string(&[(Labels::new([("__name__", "x")]), 2.5)]),
            "{__name__=\"x\"} 2.5E+00"
        );
    }
}
