//! Engine tests on hand-written series.

use super::*;
use crate::store::{STALE_NAN, Store, StoreOptions};

type Fixture<'a> = &'a [(&'a [(&'a str, &'a str)], &'a [(i64, f64)])];

fn store(series: Fixture<'_>) -> Store {
    let s = Store::new(StoreOptions::default());
    for (labels, samples) in series {
        let r = s
            .get_or_create(&Labels::new(labels.iter().copied()))
            .unwrap();
        for (t, v) in *samples {
            s.append(r, *t, *v).unwrap();
        }
    }
    s
}

fn vector(v: Value) -> Vec<(String, f64)> {
    match v {
        Value::Vector(v) => {
            let mut out: Vec<(String, f64)> =
                v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        other => panic!("not a vector: {other:?}"),
    }
}

const S: i64 = 1000;

/// The fixture most tests use.
fn fixture() -> Store {
    store(&[
        // staleness: gone after 20s
        (
            &[("__name__", "a"), ("job", "x")],
            &[(0, 1.0), (10 * S, 2.0), (20 * S, STALE_NAN)],
        ),
        // one sample only
        (&[("__name__", "b"), ("job", "x")], &[(0, 7.0)]),
        // counter with a reset
        (
            &[("__name__", "c"), ("job", "x")],
            &[(0, 10.0), (10 * S, 20.0), (20 * S, 5.0), (30 * S, 15.0)],
        ),
        // starts inside the window, low first value
        (
            &[("__name__", "h"), ("job", "x")],
            &[(100 * S, 8.0), (110 * S, 18.0), (120 * S, 28.0)],
        ),
        // gauges for aggregation
        (
            &[("__name__", "g"), ("env", "p"), ("i", "1")],
            &[(0, 1.0), (10 * S, 4.0)],
        ),
        (
            &[("__name__", "g"), ("env", "p"), ("i", "2")],
            &[(0, 2.0), (10 * S, 6.0)],
        ),
        (
            &[("__name__", "g"), ("env", "q"), ("i", "3")],
            &[(0, 3.0), (10 * S, 8.0)],
        ),
        (
            &[("__name__", "g"), ("env", "q"), ("i", "4")],
            &[(0, 4.0), (10 * S, 10.0)],
        ),
        // duplicates for matching errors
        (&[("__name__", "d"), ("x", "1"), ("y", "1")], &[(0, 1.0)]),
        (&[("__name__", "d"), ("x", "1"), ("y", "2")], &[(0, 2.0)]),
        (&[("__name__", "e"), ("x", "1")], &[(0, 10.0)]),
        // classic histogram
        (&[("__name__", "hist_bucket"), ("le", "1")], &[(0, 10.0)]),
        (&[("__name__", "hist_bucket"), ("le", "2")], &[(0, 20.0)]),
        (&[("__name__", "hist_bucket"), ("le", "+Inf")], &[(0, 30.0)]),
        (&[("__name__", "bad_bucket"), ("le", "1")], &[(0, 10.0)]),
        (&[("__name__", "bad_bucket"), ("le", "2")], &[(0, 8.0)]),
        (&[("__name__", "bad_bucket"), ("le", "+Inf")], &[(0, 30.0)]),
        (&[("__name__", "neg"), ("k", "v")], &[(0, -2.5)]),
        (&[("__name__", "nl"), ("k", "a\nb")], &[(0, 1.0)]),
    ])
}

fn eng() -> Engine {
    Engine::default()
}

/// A query expected to return exactly one sample.
fn one(q: &str, t: i64) -> f64 {
    let s = fixture();
    let v = vector(
        eng()
            .instant(&s, q, t)
            .unwrap_or_else(|e| panic!("{q}: {e}")),
    );
    assert_eq!(v.len(), 1, "{q}: {v:?}");
    v[0].1
}

fn scalar(q: &str, t: i64) -> f64 {
    match eng().instant(&fixture(), q, t).unwrap() {
        Value::Scalar { v, .. } => v,
        other => panic!("{q}: {other:?}"),
    }
}

fn err(q: &str, t: i64) -> QueryError {
    eng().instant(&fixture(), q, t).expect_err(q)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[track_caller]
fn check(q: &str, t: i64, want: f64) {
    let got = one(q, t);
    assert!(
        close(got, want) || (got.is_nan() && want.is_nan()),
        "{q} at {t}: got {got}, want {want}"
    );
}

#[test]
fn staleness_and_lookback() {
    let s = fixture();
    assert_eq!(
        vector(eng().instant(&s, "a", 15 * S).unwrap()),
        vec![("a{job=\"x\"}".into(), 2.0)]
    );
    assert!(
        vector(eng().instant(&s, "a", 25 * S).unwrap()).is_empty(),
        "stale marker hides the series"
    );
    check("b", 299_999, 7.0);
    assert!(
        vector(eng().instant(&s, "b", 300 * S).unwrap()).is_empty(),
        "lookback is left-open"
    );
    check("count_over_time(a[1m])", 30 * S, 2.0);
    check("b", 5 * S, 7.0);
}

#[test]
fn counters_resets_and_extrapolation() {
    // increase = 15-10 + 20 (reset) = 25, extrapolated by (30+5+5)/30
    check("increase(c[40s])", 35 * S, 25.0 * 40.0 / 30.0);
    check("rate(c[40s])", 35 * S, 25.0 / 30.0);
    check("delta(c[40s])", 35 * S, 5.0 * 40.0 / 30.0);
    check("resets(c[40s])", 35 * S, 1.0);
    check("changes(c[40s])", 35 * S, 3.0);
    check("irate(c[40s])", 35 * S, 1.0);
    check("idelta(c[40s])", 35 * S, 10.0);
    // range windows are left-open: at 40s the sample at 0 is outside [40s]
    check("count_over_time(c[40s])", 40 * S, 3.0);
    // series starting inside the window; 3.x clamps to avg/2 before the
    // zero point: (20 + 5 + 5) / 20 * 20
    check("increase(h[60s])", 125 * S, 30.0);
    // one sample: no rate
    assert!(vector(eng().instant(&fixture(), "rate(b[1m])", 10 * S).unwrap()).is_empty());
}

#[test]
fn offsets_at_and_subqueries() {
    check("a offset 10s", 20 * S, 2.0);
    check("a offset -10s", 0, 2.0);
    check("a @ 10", 1000 * S, 2.0);
    check("a @ 10.000 offset 10s", 1000 * S, 1.0);
    check(
        "sum_over_time(g{i=\"1\"}[30s:5s])",
        20 * S,
        1.0 + 1.0 + 4.0 * 3.0,
    );
    check("max_over_time(rate(c[20s])[30s:10s])", 35 * S, 1.0);
    let s = fixture();
    let v = eng().range(&s, "a @ end()", 0, 10 * S, 5 * S).unwrap();
    let Value::Matrix(m) = v else { panic!() };
    assert_eq!(m[0].samples, vec![(0, 2.0), (5 * S, 2.0), (10 * S, 2.0)]);
    let v = eng().range(&s, "a", 0, 30 * S, 10 * S).unwrap();
    let Value::Matrix(m) = v else { panic!() };
    assert_eq!(
        m[0].samples,
        vec![(0, 1.0), (10 * S, 2.0)],
        "stale after 20s"
    );
}

#[test]
fn aggregations() {
    let t = 10 * S;
    check("sum(g)", t, 28.0);
    check("avg(g)", t, 7.0);
    check("count(g)", t, 4.0);
    check("min(g)", t, 4.0);
    check("max(g)", t, 10.0);
    check("group(g)", t, 1.0);
    check("stdvar(g)", t, 5.0);
    check("stddev(g)", t, 5.0_f64.sqrt());
    check("quantile(0.5, g)", t, 7.0);
    check("quantile(0.25, g)", t, 5.5);
    check("sum(topk(2, g))", t, 18.0);
    check("sum(bottomk(2, g))", t, 10.0);
    check("count(limitk(3, g))", t, 3.0);
    check("count(limit_ratio(1, g))", t, 4.0);
    check("count(limit_ratio(-1, g))", t, 4.0);
    let lr = vector(eng().instant(&fixture(), "limit_ratio(0.5, g)", t).unwrap()).len();
    let lr2 = vector(
        eng()
            .instant(&fixture(), "limit_ratio(-0.5, g)", t)
            .unwrap(),
    )
    .len();
    assert_eq!(
        lr + lr2,
        4,
        "a ratio and its complement partition the series"
    );
    let s = fixture();
    assert_eq!(
        vector(eng().instant(&s, "sum by (env) (g)", t).unwrap()),
        vec![("{env=\"p\"}".into(), 10.0), ("{env=\"q\"}".into(), 18.0)]
    );
    assert_eq!(
        vector(eng().instant(&s, "max without (i) (g)", t).unwrap()),
        vec![("{env=\"p\"}".into(), 6.0), ("{env=\"q\"}".into(), 10.0)]
    );
    assert_eq!(
        vector(eng().instant(&s, "count_values(\"v\", d)", t).unwrap()),
        vec![("{v=\"1\"}".into(), 1.0), ("{v=\"2\"}".into(), 1.0)]
    );
    let Value::Vector(top) = eng().instant(&s, "topk(2, g)", t).unwrap() else {
        panic!()
    };
    assert_eq!(top[0].v, 10.0, "topk keeps labels and sorts descending");
    assert_eq!(top[0].labels.metric_name(), Some("g"));
}

#[test]
fn binary_operators_and_matching() {
    let t = 10 * S;
    check("g{i=\"1\"} + 1", t, 5.0);
    check("2 ^ g{i=\"1\"}", t, 16.0);
    check("g{i=\"4\"} % 3", t, 1.0);
    check("g{i=\"1\"} > bool 3", t, 1.0);
    check("3 < g{i=\"1\"}", t, 4.0);
    check("d{y=\"1\"} + on(x) e", t, 11.0);
    check("sum(d * on(x) group_left e)", t, 30.0);
    check("sum(e * on(x) group_right d)", t, 30.0);
    check("count(g > 5)", t, 3.0);
    check("count(g and g{env=\"p\"})", t, 2.0);
    check("count(g unless g{env=\"p\"})", t, 2.0);
    check("count(g or neg)", t, 5.0);
    check("count(g or on(env) g{i=\"9\"})", t, 4.0);
    assert_eq!(scalar("1 + 2 * 3", 0), 7.0);
    assert_eq!(scalar("2 > bool 1", 0), 1.0);
    let s = fixture();
    let v = eng().instant(&s, "g{i=\"1\"} > 3", t).unwrap();
    assert_eq!(
        vector(v)[0].0,
        "g{env=\"p\",i=\"1\"}",
        "comparisons keep the name"
    );
    let v = eng().instant(&s, "g{i=\"1\"} atan2 1", t).unwrap();
    assert_eq!(
        vector(v)[0].0,
        "g{env=\"p\",i=\"1\"}",
        "atan2 keeps the name"
    );
    let v = eng().instant(&s, "g{i=\"1\"} * 1", t).unwrap();
    assert_eq!(vector(v)[0].0, "{env=\"p\",i=\"1\"}");

    assert_eq!(
        err("e + on(x) d", t),
        QueryError::exec(
            "found duplicate series for the match group {x=\"1\"} on the right hand-side of the operation: \
             [{__name__=\"d\", x=\"1\", y=\"2\"}, {__name__=\"d\", x=\"1\", y=\"1\"}];many-to-many matching not allowed: \
             matching labels must be unique on one side"
        )
    );
    assert_eq!(
        err("d + on(x) group_right e", t)
            .to_string()
            .split(';')
            .next()
            .unwrap_or(""),
        "found duplicate series for the match group {x=\"1\"} on the left hand-side of the operation: \
         [{__name__=\"d\", x=\"1\", y=\"2\"}, {__name__=\"d\", x=\"1\", y=\"1\"}]"
    );
    assert_eq!(
        err("d + on(x) e", t),
        QueryError::exec(
            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
        )
    );
    assert_eq!(
        err(
            "(d * 0 or label_replace(d, \"y\", \"1\", \"y\", \"2\") * 0) + on(x) group_left e",
            t
        )
        .error_type(),
        "execution"
    );
    assert_eq!(
        err(
            "label_replace(d, \"y\", \"1\", \"y\", \"2\") + on(x) group_left e",
            t
        ),
        QueryError::exec("vector cannot contain metrics with the same labelset")
    );
}

#[test]
fn math_and_misc_functions() {
    let t = 10 * S;
    check("abs(neg)", t, 2.5);
    check("ceil(neg)", t, -2.0);
    check("floor(neg)", t, -3.0);
    check("round(neg)", t, -2.0);
    check("round(g{i=\"1\"} / 3, 0.25)", t, 1.25);
    check("sgn(neg)", t, -1.0);
    check("exp(neg * 0)", t, 1.0);
    check("ln(e)", t, 10.0_f64.ln());
    check("log2(g{i=\"1\"})", t, 2.0);
    check("log10(e)", t, 1.0);
    check("sqrt(g{i=\"1\"})", t, 2.0);
    check("sin(neg)", t, (-2.5f64).sin());
    check("cos(neg)", t, (-2.5f64).cos());
    check("tan(neg)", t, (-2.5f64).tan());
    check("asin(neg / 5)", t, (-0.5f64).asin());
    check("acos(neg / 5)", t, (-0.5f64).acos());
    check("atan(neg)", t, (-2.5f64).atan());
    check("sinh(neg)", t, (-2.5f64).sinh());
    check("cosh(neg)", t, (-2.5f64).cosh());
    check("tanh(neg)", t, (-2.5f64).tanh());
    check("asinh(neg)", t, (-2.5f64).asinh());
    check("acosh(e)", t, 10f64.acosh());
    check("atanh(neg / 5)", t, (-0.5f64).atanh());
    check("deg(neg)", t, -2.5 * 180.0 / std::f64::consts::PI);
    check("rad(neg)", t, -2.5 * std::f64::consts::PI / 180.0);
    check("clamp(g{i=\"4\"}, 1, 5)", t, 5.0);
    check("clamp_min(neg, 0)", t, 0.0);
    check("clamp_max(g{i=\"4\"}, 2)", t, 2.0);
    assert!(vector(eng().instant(&fixture(), "clamp(g, 5, 1)", t).unwrap()).is_empty());
    check("vector(3)", t, 3.0);
    assert_eq!(scalar("scalar(e)", t), 10.0);
    assert!(scalar("scalar(g)", t).is_nan());
    assert_eq!(scalar("time()", 12_500), 12.5);
    assert_eq!(scalar("pi()", 0), std::f64::consts::PI);
    check("timestamp(a)", 15 * S, 10.0);
    check("timestamp(a offset 10s)", 15 * S, 0.0);
    check("timestamp(a * 1)", 15 * S, 15.0);
    // 2024-02-29T13:45:00Z = 1709214300
    check("day_of_month(vector(1709214300))", t, 29.0);
    check("day_of_week(vector(1709214300))", t, 4.0);
    check("day_of_year(vector(1709214300))", t, 60.0);
    check("days_in_month(vector(1709214300))", t, 29.0);
    check("hour(vector(1709214300))", t, 13.0);
    check("minute(vector(1709214300))", t, 45.0);
    check("month(vector(1709214300))", t, 2.0);
    check("year(vector(1709214300))", t, 2024.0);
    check("year()", t, 1970.0);
    check("day_of_week(vector(-86400))", t, 3.0);
}

#[test]
fn range_functions() {
    let t = 10 * S;
    check("avg_over_time(g{i=\"1\"}[20s])", t, 2.5);
    check("sum_over_time(g{i=\"1\"}[20s])", t, 5.0);
    check("min_over_time(g{i=\"1\"}[20s])", t, 1.0);
    check("max_over_time(g{i=\"1\"}[20s])", t, 4.0);
    check("last_over_time(g{i=\"1\"}[20s])", t, 4.0);
    check("first_over_time(g{i=\"1\"}[20s])", t, 1.0);
    check("present_over_time(g{i=\"1\"}[20s])", t, 1.0);
    check("stdvar_over_time(g{i=\"1\"}[20s])", t, 2.25);
    check("stddev_over_time(g{i=\"1\"}[20s])", t, 1.5);
    check("quantile_over_time(0.5, g{i=\"1\"}[20s])", t, 2.5);
    check("mad_over_time(c[40s])", 35 * S, 5.0);
    check("deriv(g{i=\"1\"}[20s])", t, 0.3);
    check("predict_linear(g{i=\"1\"}[20s], 10)", t, 7.0);
    check("absent_over_time(nope{a=\"b\"}[1m])", t, 1.0);
    assert!(
        vector(
            eng()
                .instant(&fixture(), "absent_over_time(g[1m])", t)
                .unwrap()
        )
        .is_empty()
    );
    check("double_exponential_smoothing(c[40s], 0.5, 0.5)", 35 * S, {
        // s1=10,b=10; i=1: s1=.5*20+.5*(10+10)=20; i=2: b=.5*10+.5*10=10, s1=.5*5+.5*30=17.5;
        // i=3: b=.5*(17.5-20)+.5*10=3.75, s1=.5*15+.5*(17.5+3.75)=18.125
        18.125
    });
    assert_eq!(
        err("double_exponential_smoothing(c[40s], 1, 0.5)", t).error_type(),
        "execution"
    );
    let s = fixture();
    let v = eng()
        .instant(&s, "last_over_time(g{i=\"1\"}[20s])", t)
        .unwrap();
    assert_eq!(
        vector(v)[0].0,
        "g{env=\"p\",i=\"1\"}",
        "last_over_time keeps the name"
    );
    let v = eng().instant(&s, "rate(c[40s])", 35 * S).unwrap();
    assert_eq!(vector(v)[0].0, "{job=\"x\"}");
}

#[test]
fn histograms_labels_sorting_absent() {
    check("histogram_quantile(0.5, hist_bucket)", 0, 1.5);
    check("histogram_quantile(0.1, hist_bucket)", 0, 0.3);
    check("histogram_quantile(0.9, hist_bucket)", 0, 2.0);
    check("histogram_quantile(0.5, bad_bucket)", 0, 2.0);
    assert!(one("histogram_quantile(-1, hist_bucket)", 0).is_infinite());
    let s = fixture();
    let v = eng()
        .instant(&s, "label_replace(e, \"z\", \"$1-$1\", \"x\", \"(.*)\")", 0)
        .unwrap();
    assert_eq!(vector(v)[0].0, "e{x=\"1\",z=\"1-1\"}");
    let v = eng()
        .instant(&s, "label_replace(e, \"x\", \"\", \"x\", \".*\")", 0)
        .unwrap();
    assert_eq!(vector(v)[0].0, "e{}");
    let v = eng()
        .instant(&s, "label_join(d, \"j\", \"-\", \"x\", \"y\")", 0)
        .unwrap();
    assert_eq!(vector(v)[0].0, "d{j=\"1-1\",x=\"1\",y=\"1\"}");
    assert_eq!(
        err("label_replace(e, \"z\", \"\", \"x\", \"(\")", 0).error_type(),
        "execution"
    );
    let Value::Vector(v) = eng().instant(&s, "sort_desc(g)", 10 * S).unwrap() else {
        panic!()
    };
    assert_eq!(
        v.iter().map(|s| s.v).collect::<Vec<_>>(),
        vec![10.0, 8.0, 6.0, 4.0]
    );
    let Value::Vector(v) = eng().instant(&s, "sort(g)", 10 * S).unwrap() else {
        panic!()
    };
    assert_eq!(
        v.iter().map(|s| s.v).collect::<Vec<_>>(),
        vec![4.0, 6.0, 8.0, 10.0]
    );
    let Value::Vector(v) = eng()
        .instant(&s, "sort_by_label_desc(g, \"i\")", 10 * S)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(v[0].labels.get("i"), Some("4"));
    assert_eq!(
        vector(
            eng()
                .instant(&s, "absent(nope{a=\"b\", c=~\"d\"})", 0)
                .unwrap()
        ),
        vec![("{a=\"b\"}".into(), 1.0)]
    );
    assert!(vector(eng().instant(&s, "absent(g)", 10 * S).unwrap()).is_empty());
    // regex matchers are anchored and `.` matches a newline
    check("nl{k=~\"a.b\"}", 0, 1.0);
    assert!(vector(eng().instant(&s, "nl{k=~\"a\"}", 0).unwrap()).is_empty());
    check("count({__name__=~\"g|e\", i!~\"1|2\"})", 10 * S, 3.0);
}

#[test]
fn limits_and_errors() {
    let s = fixture();
    let e = Engine::new(EngineOptions {
        max_samples: 3,
        ..Default::default()
    });
    assert_eq!(e.instant(&s, "g", 10 * S), Err(QueryError::TooManySamples));
    assert_eq!(QueryError::TooManySamples.error_type(), "execution");
    let e = Engine::new(EngineOptions {
        timeout: std::time::Duration::ZERO,
        ..Default::default()
    });
    assert_eq!(e.instant(&s, "g", 10 * S), Err(QueryError::Timeout));
    assert_eq!(QueryError::Timeout.error_type(), "timeout");
    let bad = eng().instant(&s, "sum(g", 0).unwrap_err();
    assert_eq!(bad.error_type(), "bad_data");
    assert_eq!(
        eng().range(&s, "g[1m]", 0, 10, 1).unwrap_err().error_type(),
        "bad_data"
    );
    assert_eq!(
        eng().range(&s, "g", 0, 10, 0).unwrap_err().error_type(),
        "bad_data"
    );
    assert!(matches!(
        eng().instant(&s, "\"hi\"", 5).unwrap(),
        Value::String { t: 5, .. }
    ));
    assert!(
        matches!(eng().instant(&s, "g[10s]", 10 * S).unwrap(), Value::Matrix(m) if m.len() == 4)
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn expr() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("g".to_string()),
            Just("c".to_string()),
            Just("d".to_string()),
            Just("hist_bucket".to_string()),
            Just("nope".to_string()),
            Just("g{env=~\"p|.*\"}".to_string()),
            (-3.0f64..3.0).prop_map(|v| format!("{v}")),
            Just("NaN".to_string()),
            Just("Inf".to_string()),
        ];
        leaf.prop_recursive(4, 32, 3, |inner| {
            let range = prop_oneof![Just("[10s]"), Just("[1m]"), Just("[30s:5s]")];
            prop_oneof![
                (
                    inner.clone(),
                    prop_oneof![
                        Just("+"),
                        Just("/"),
                        Just(">"),
                        Just("and"),
                        Just("or"),
                        Just("unless"),
                        Just("^"),
                        Just("% bool"),
                        Just("== bool"),
                        Just("* on(x) group_left"),
                        Just("+ ignoring(i)")
                    ],
                    inner.clone()
                )
                    .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
                (
                    prop_oneof![
                        Just("sum"),
                        Just("avg"),
                        Just("max"),
                        Just("stddev"),
                        Just("count"),
                        Just("group")
                    ],
                    inner.clone()
                )
                    .prop_map(|(f, a)| format!("{f} by (env) ({a})")),
                (
                    prop_oneof![
                        Just("topk"),
                        Just("bottomk"),
                        Just("quantile"),
                        Just("limitk"),
                        Just("limit_ratio")
                    ],
                    inner.clone(),
                    -2.0f64..3.0
                )
                    .prop_map(|(f, a, k)| format!("{f}({k}, {a})")),
                (
                    prop_oneof![
                        Just("abs"),
                        Just("ln"),
                        Just("sort"),
                        Just("absent"),
                        Just("timestamp"),
                        Just("scalar"),
                        Just("vector"),
                        Just("round"),
                        Just("hour")
                    ],
                    inner.clone()
                )
                    .prop_map(|(f, a)| format!("{f}({a})")),
                (
                    prop_oneof![
                        Just("rate"),
                        Just("irate"),
                        Just("deriv"),
                        Just("changes"),
                        Just("avg_over_time"),
                        Just("mad_over_time"),
                        Just("absent_over_time")
                    ],
                    inner.clone(),
                    range
                )
                    .prop_map(|(f, a, r)| format!("{f}(({a}){r})")),
                (inner.clone(), -1.5f64..1.5)
                    .prop_map(|(a, q)| format!("histogram_quantile({q}, {a})")),
                inner
                    .clone()
                    .prop_map(|a| format!("label_replace({a}, \"z\", \"$1\", \"env\", \"(.*)\")")),
                inner.prop_map(|a| format!("-({a}) offset 5s")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn random_expressions_never_panic(q in expr(), t in 0i64..200_000) {
            let s = fixture();
            let _ = eng().instant(&s, &q, t);
            let _ = eng().range(&s, &q, t, t + 60_000, 7_000);
        }
    }
}

#[test]
fn parse_errors_carry_a_position() {
    for q in ["sum(g", "g{a=}", "rate(g)", "1 +", "g[5x]"] {
        let e = eng().instant(&fixture(), q, 0).unwrap_err();
        assert_eq!(e.error_type(), "bad_data");
        assert!(e.to_string().starts_with("1:"), "{q:?} -> {e}");
    }
    let e = eng().instant(&fixture(), "sum(g", 0).unwrap_err();
    assert_eq!(e.to_string(), "1:6: parse error: unclosed left parenthesis");
    let e = eng().instant(&fixture(), "1 + )", 0).unwrap_err();
    assert!(e.to_string().starts_with("1:3: "), "{e}");
    let e = eng().instant(&fixture(), "g +\n  1 $", 0).unwrap_err();
    assert!(e.to_string().starts_with("2:"), "{e}");
}

#[test]
fn dropped_names_must_not_collide() {
    assert_eq!(
        err("sum({__name__=~\"a|b\"} * 1)", 5 * S),
        QueryError::exec("vector cannot contain metrics with the same labelset")
    );
    assert_eq!(
        err("count(rate({__name__=~\"a|c\"}[1m]))", 15 * S),
        QueryError::exec("vector cannot contain metrics with the same labelset")
    );
    // comparisons keep the name, so no collision
    check("count({__name__=~\"a|b\"} > 0)", 5 * S, 2.0);
}

#[test]
fn absurd_times_do_not_panic() {
    let s = fixture();
    let e = Engine::new(EngineOptions {
        timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    });
    for q in [
        "g offset 100000000y",
        "g offset -100000000y",
        "rate(g[100000000y])",
        "g @ 9999999999999",
        "max_over_time(g[100y:1ms])",
    ] {
        let _ = e.instant(&s, q, 10 * S);
        let _ = e.range(&s, q, i64::MAX - 10, i64::MAX, 3);
    }
    assert_eq!(
        e.instant(&s, "max_over_time(g[100y:1ms])", 10 * S)
            .unwrap_err()
            .error_type(),
        "timeout"
    );
}

/// A range query must equal instant queries at each of its steps (the range
/// path reuses window cursors and group keys across steps).
#[test]
fn range_steps_equal_instant_queries() {
    let s = fixture();
    for q in [
        "rate(c[20s])",
        "sum(rate(c[15s]))",
        "sum by (env) (g)",
        "max_over_time(g[10s])",
        "count_over_time(a[7s])",
        "sum_over_time(rate(c[20s])[30s:5s])",
        "g offset 3s",
        "avg by (env) (avg_over_time(g[12s]))",
    ] {
        let Value::Matrix(m) = eng().range(&s, q, 0, 40 * S, 3 * S).unwrap() else {
            panic!("{q}")
        };
        let mut t = 0;
        while t <= 40 * S {
            let mut want = match eng().instant(&s, q, t).unwrap() {
                Value::Vector(v) => v.into_iter().map(|x| (x.labels, x.v)).collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            };
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let mut got: Vec<_> = m
                .iter()
                .filter_map(|ser| {
                    ser.samples
                        .iter()
                        .find(|p| p.0 == t)
                        .map(|p| (ser.labels.clone(), p.1))
                })
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "{q} at {t}");
            t += 3 * S;
        }
    }
}
