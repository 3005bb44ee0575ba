//! Prometheus's textparse tests re-expressed (inputs and verdicts), plus the
//! corners a scraper depends on, and proptests that no input panics.

use super::*;
use proptest::prelude::*;

fn text(s: &str) -> Result<Parsed, ParseError> {
    parse(s.as_bytes(), Format::Text)
}
fn om(s: &str) -> Result<Parsed, ParseError> {
    parse(s.as_bytes(), Format::OpenMetrics)
}
fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().copied())
}

#[test]
fn content_type_picks_the_grammar() {
    use Format::*;
    for (ct, f) in [
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            OpenMetrics,
        ),
        ("Application/OpenMetrics-Text", OpenMetrics),
        ("text/plain; version=0.0.4", Text),
        ("", Text),
        ("application/json", Text),
        ("garbage;;", Text),
    ] {
        assert_eq!(Format::from_content_type(ct), f, "{ct}");
    }
}

#[test]
fn prometheus_text_parse_test() {
    let mut input = String::from(
        r#"# HELP go_gc_duration_seconds A summary of the GC invocation durations.
# 	TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 4.9351e-05
go_gc_duration_seconds{quantile="0.25",} 7.424100000000001e-05
go_gc_duration_seconds{quantile="0.5",a="b"} 8.3835e-05
go_gc_duration_seconds{quantile="0.8", a="b"} 8.3835e-05
go_gc_duration_seconds{ quantile="0.9", a="b"} 8.3835e-05
# Hrandom comment starting with prefix of HELP
#
wind_speed{A="2",c="3"} 12345
# comment with escaped \n newline
# comment with escaped \ escape character
# HELP nohelp1
# HELP nohelp2 
go_gc_duration_seconds{ quantile="1.0", a="b" } 8.3835e-05
go_gc_duration_seconds { quantile="1.0", a="b" } 8.3835e-05
go_gc_duration_seconds { quantile= "1.0", a= "b", } 8.3835e-05
go_gc_duration_seconds { quantile = "1.0", a = "b" } 8.3835e-05
go_gc_duration_seconds_count 99
some:aggregate:rate5m{a_b="c"}	1
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 33  	123123
_metric_starting_with_underscore 1
testmetric{_label_starting_with_underscore="foo"} 1
testmetric{label="\"bar\""} 1"#,
    );
    input.push_str("\n# HELP metric foo\x00bar");
    input.push_str("\nnull_byte_metric{a=\"abc\x00\"} 1");
    let p = text(&input).unwrap();
    let s = &p.samples;
    assert_eq!(s.len(), 17);
    assert_eq!(
        s[0],
        (
            l(&[("__name__", "go_gc_duration_seconds"), ("quantile", "0")]),
            4.9351e-05,
            None
        )
    );
    assert_eq!(
        s[1].0,
        l(&[("__name__", "go_gc_duration_seconds"), ("quantile", "0.25")])
    );
    assert_eq!(
        s[5].0,
        l(&[("__name__", "wind_speed"), ("A", "2"), ("c", "3")])
    );
    for (i, sample) in s.iter().enumerate().take(10).skip(6) {
        assert_eq!(
            sample.0,
            l(&[
                ("__name__", "go_gc_duration_seconds"),
                ("quantile", "1.0"),
                ("a", "b")
            ]),
            "{i}"
        );
    }
    assert_eq!(
        s[11].0,
        l(&[("__name__", "some:aggregate:rate5m"), ("a_b", "c")])
    );
    assert_eq!(
        s[12],
        (l(&[("__name__", "go_goroutines")]), 33.0, Some(123123))
    );
    assert_eq!(
        s[15].0,
        l(&[("__name__", "testmetric"), ("label", "\"bar\"")])
    );
    assert_eq!(
        s[16].0,
        l(&[("__name__", "null_byte_metric"), ("a", "abc\0")])
    );
    assert_eq!(
        p.helps,
        vec![
            (
                "go_gc_duration_seconds".into(),
                "A summary of the GC invocation durations.".into()
            ),
            ("nohelp1".into(), String::new()),
            ("nohelp2".into(), String::new()),
            (
                "go_goroutines".into(),
                "Number of goroutines that currently exist.".into()
            ),
            ("metric".into(), "foo\0bar".into()),
        ]
    );
    assert_eq!(
        p.types,
        vec![
            ("go_gc_duration_seconds".into(), MetricType::Summary),
            ("go_goroutines".into(), MetricType::Gauge)
        ]
    );
}

#[test]
fn prometheus_text_parse_errors() {
    for input in [
        "a",
        "a{b='c'} 1\n",
        "a{b=\n",
        "a{\u{ff}=\"foo\"} 1\n",
        "a true\n",
        "something_weird{problem=\"",
        "empty_label_name{=\"\"} 0",
        "foo 1_2\n",
        "foo 0x1p-3\n",
        "foo 0x1P-3\n",
        "foo 0 1_2\n",
        "{a=\"ok\"} 1",
        "# TYPE #\n#EOF\n",
        "# HELP #\n#EOF\n",
        "a{b=\u{0}\"ssss\"} 1\n",
        "a{b=\"\u{0}",
        "a{b\u{0}=\"hiih\"}\t1",
        "a\u{0}{b=\"ddd\"} 1",
        "a 1 -5\n",
        "a 1 1.5\n",
        "a 1 99999999999999999999\n",
        "a 1e400\n",
        "a +nan\n",
        "a 1 # comment\n",
        "# TYPE a counter \n",
        "# TYPE a info\n",
        "a{b=\"1\",,c=\"2\"} 1\n",
        "a{,} 1\n",
        "  a 1\n",
        "\ta 1\n",
        "a{b=\"\\\nc\"} 1\n",
    ] {
        assert!(text(input).is_err(), "{input:?} should be refused");
    }
    // Invalid UTF-8 in a label value and in help text.
    assert!(parse(b"a{b=\"\xff\"} 1\n", Format::Text).is_err());
    assert!(parse(b"# HELP a \xff\n", Format::Text).is_err());
    let e = text("a 1\nb 2\nc{ 3\n").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn text_corners_accepted_as_prometheus() {
    // Blank lines, leading blanks before comments, missing commas, trailing commas,
    // labels on several lines, NaN and infinities, a last line without a newline.
    let p = text(
        "\n\n  # HELP a the \\\\ help\\n text\na{x=\"1\" y=\"2\"} NaN\nb{x=\"multi\nline\",} +Inf 5\nc -inf\nd 1e3",
    )
    .unwrap();
    assert_eq!(p.helps, vec![("a".into(), "the \\ help\n text".into())]);
    assert_eq!(
        p.samples[0].0,
        l(&[("__name__", "a"), ("x", "1"), ("y", "2")])
    );
    assert_eq!(p.samples[0].1.to_bits(), NORMAL_NAN);
    assert_eq!(
        p.samples[1].0,
        l(&[("__name__", "b"), ("x", "multi\nline")])
    );
    assert_eq!((p.samples[1].1, p.samples[1].2), (f64::INFINITY, Some(5)));
    assert_eq!(p.samples[2].1, f64::NEG_INFINITY);
    assert_eq!(p.samples[3].1, 1000.0);
    // Escapes: \" \\ \n decoded, others kept as written.
    let p = text(r#"a{b="q\"\\\n\t"} 1"#).unwrap();
    assert_eq!(p.samples[0].0.get("b"), Some("q\"\\\n\\t"));
    // The help text keeps what follows its first blank.
    let p = text("# HELP a  two\n# HELP b\tx\n# HELP c   \n").unwrap();
    assert_eq!(
        p.helps,
        vec![
            ("a".into(), " two".into()),
            ("b".into(), "x".into()),
            ("c".into(), String::new())
        ]
    );
    // A NUL at the start of a line ends the body.
    assert_eq!(text("a 1\n\0garbage{").unwrap().samples.len(), 1);
    // Go float syntax.
    for (v, want) in [
        ("1", 1.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("+1", 1.0),
        ("-0", -0.0),
        ("1E-2", 0.01),
        ("Infinity", f64::INFINITY),
        ("-INF", f64::NEG_INFINITY),
    ] {
        assert_eq!(parse_go_float(v.as_bytes()), Ok(want), "{v}");
    }
    for v in [
        "", "1e", "e1", "1..2", "0x10", "nan1", "-nan", "inf1", "1,5", "1 ",
    ] {
        assert!(parse_go_float(v.as_bytes()).is_err(), "{v}");
    }
}

#[test]
fn duplicate_label_names_are_refused() {
    let mut p = Parser::new(b"a{b=\"1\",b=\"2\"} 1\n", Format::Text);
    assert!(matches!(p.next(), Ok(Some(Entry::Sample { .. }))));
    assert!(p.labels().is_err());
    let mut p = Parser::new(b"a{__name__=\"x\"} 1\n", Format::Text);
    p.next().unwrap();
    assert!(p.labels().is_err());
}

#[test]
fn series_key_is_the_exposed_text() {
    let mut p = Parser::new(b"a{x=\"1\"} 1 5\na 2\n", Format::Text);
    match p.next().unwrap().unwrap() {
        Entry::Sample {
            series,
            value,
            timestamp_ms,
        } => {
            assert_eq!(series, b"a{x=\"1\"}");
            assert_eq!((value, timestamp_ms), (1.0, Some(5)));
        }
        e => panic!("{e:?}"),
    }
    match p.next().unwrap().unwrap() {
        Entry::Sample { series, .. } => assert_eq!(series, b"a"),
        e => panic!("{e:?}"),
    }
    assert_eq!(p.next(), Ok(None));
    assert_eq!(p.next(), Ok(None), "stays at the end");
}

#[test]
fn prometheus_openmetrics_parse_test() {
    let input = r#"# HELP go_gc_duration_seconds A summary of the GC invocation durations.
# TYPE go_gc_duration_seconds summary
# UNIT go_gc_duration_seconds seconds
go_gc_duration_seconds{quantile="0"} 4.9351e-05
go_gc_duration_seconds{quantile="0.25"} 7.424100000000001e-05
go_gc_duration_seconds{quantile="0.5",a="b"} 8.3835e-05
# HELP nohelp1 
# HELP help2 escape \ \n \\ \" \x chars
# UNIT nounit 
go_gc_duration_seconds{quantile="1.0",a="b"} 8.3835e-05
go_gc_duration_seconds_count 99
some:aggregate:rate5m{a_b="c"} 1
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 33 123.123
# TYPE hh histogram
hh_bucket{le="+Inf"} 1
# TYPE gh gaugehistogram
gh_bucket{le="+Inf"} 1
# TYPE hhh histogram
hhh_bucket{le="+Inf"} 1 # {id="histogram-bucket-test"} 4
hhh_count 1 # {id="histogram-count-test"} 4
# TYPE ggh gaugehistogram
ggh_bucket{le="+Inf"} 1 # {id="gaugehistogram-bucket-test",xx="yy"} 4 123.123
ggh_count 1 # {id="gaugehistogram-count-test",xx="yy"} 4 123.123
# TYPE smr_seconds summary
smr_seconds_count 2.0 # {id="summary-count-test"} 1 123.321
smr_seconds_sum 42.0 # {id="summary-sum-test"} 1 123.321
# TYPE ii info
ii{foo="bar"} 1
# TYPE ss stateset
ss{ss="foo"} 1
ss{ss="bar"} 0
ss{A="a"} 0
# TYPE un unknown
_metric_starting_with_underscore 1
testmetric{_label_starting_with_underscore="foo"} 1
testmetric{label="\"bar\""} 1
# TYPE foo counter
foo_total 17.0 1520879607.789 # {id="counter-test"} 5
# EOF
"#;
    // hhh_count, ggh_count, smr_seconds_* carry exemplars although Prometheus
    // only allows them on _total and _bucket: the upstream test expects an error
    // there, so check the valid prefix and then the refusal.
    let e = om(input).unwrap_err();
    assert!(
        e.message.contains("hhh_count does not support exemplars"),
        "{e}"
    );
    let valid: String = input
        .lines()
        .filter(|l| !l.contains("-count-test") && !l.contains("summary-sum-test"))
        .map(|l| format!("{l}\n"))
        .collect();
    let p = om(&valid).unwrap();
    assert_eq!(p.samples.len(), 19);
    assert_eq!(
        p.samples[6],
        (l(&[("__name__", "go_goroutines")]), 33.0, Some(123123))
    );
    assert_eq!(p.samples[18].2, Some(1520879607789));
    assert_eq!(
        p.helps[2],
        ("help2".into(), "escape \\ \n \\ \" \\x chars".into())
    );
    assert_eq!(p.helps[1], ("nohelp1".into(), String::new()));
    assert_eq!(
        p.units,
        vec![
            ("go_gc_duration_seconds".into(), "seconds".into()),
            ("nounit".into(), String::new())
        ]
    );
    assert!(p.types.contains(&("gh".into(), MetricType::GaugeHistogram)));
    assert!(p.types.contains(&("ss".into(), MetricType::StateSet)));
    assert!(p.types.contains(&("ii".into(), MetricType::Info)));
}

#[test]
fn prometheus_openmetrics_parse_errors() {
    for input in [
        "",
        "\n",
        "metric",
        "metric 1",
        "metric 1\n",
        "metric_total 1 # {aa=\"bb\"} 4",
        "a\n#EOF\n",
        "\n\n#EOF\n",
        " a 1\n#EOF\n",
        "9\n#EOF\n",
        "# TYPE u untyped\n#EOF\n",
        "# TYPE c counter \n#EOF\n",
        "#  TYPE c counter\n#EOF\n",
        "# TYPE \n#EOF\n",
        "# TYPE m\n#EOF\n",
        "# UNIT metric suffix\n#EOF\n",
        "# UNIT metricsuffix suffix\n#EOF\n",
        "# UNIT m suffix\n#EOF\n",
        "# UNIT \n#EOF\n",
        "# UNIT m\n#EOF\n",
        "# HELP \n#EOF\n",
        "# HELP m\n#EOF\n",
        "a\t1\n#EOF\n",
        "a 1\t2\n#EOF\n",
        "a 1 2 \n#EOF\n",
        "a 1 2 #\n#EOF\n",
        "a 1 1z\n#EOF\n",
        " # EOF\n",
        "# EOF\na 1",
        "# EOF\n\n",
        "# EOFa 1",
        "#\tTYPE c counter\n",
        "# TYPE c  counter\n",
        "a 1 1 1\n# EOF\n",
        "a{b='c'} 1\n# EOF\n",
        "a{b=\"c\",} 1\n# EOF\n",
        "a{,b=\"c\"} 1\n# EOF\n",
        "a{b=\"c\"d=\"e\"} 1\n# EOF\n",
        "a{b=\"c\",,d=\"e\"} 1\n# EOF\n",
        "a{b=\n# EOF\n",
        "a{b=\"\nc\"} 1\n# EOF\n",
        "a true\n",
        "something_weird{problem=\"\n# EOF\n",
        "empty_label_name{=\"\"} 0\n# EOF\n",
        "foo 1_2\n\n# EOF\n",
        "foo 0x1p-3\n\n# EOF\n",
        "foo 0 1_2\n\n# EOF\n",
        "custom_metric_total 1 # {aa=bb}\n# EOF\n",
        "custom_metric_total 1 # {aa=\"bb\"}\n# EOF\n",
        "custom_metric_total 1 # {aa=\"bb\"}",
        "custom_metric 1 # {aa=\"bb\"}",
        "custom_metric_total 1 # {aa=\"bb\",,cc=\"dd\"} 1",
        "custom_metric_total 1 # {aa=\"bb\"} 1_2",
        "custom_metric_total 1 # {aa=\"bb\"} true",
        "custom_metric_total 1 # {aa=\"bb\",cc=}",
        "{b=\"c\",} 1",
        "a 1 NaN",
        "a 1 -Inf",
        "a 1 Inf",
        "a 1 NaN\n# EOF\n",
        "# TYPE hhh histogram\nhhh_bucket{le=\"+Inf\"} 1 # {aa=\"bb\"} 4 NaN",
        "# TYPE hhh histogram\nhhh_bucket{le=\"+Inf\"} 1 # {aa=\"bb\"} 4 -Inf",
        "# comment\na 1\n# EOF\n",
    ] {
        assert!(om(input).is_err(), "{input:?} should be refused");
    }
    assert!(parse(b"a{b=\"\xff\"} 1\n# EOF\n", Format::OpenMetrics).is_err());
}

#[test]
fn openmetrics_corners_accepted() {
    let p = om("a{} 1\nb 2 -1.5\n# EOF").unwrap();
    assert_eq!(p.samples[0], (l(&[("__name__", "a")]), 1.0, None));
    assert_eq!(p.samples[1].2, Some(-1500));
    let p = om("x_total 1 # {} 2\nx_created 1.6e9\n# EOF\n").unwrap();
    assert_eq!(p.samples.len(), 2, "_created is an ordinary sample");
}

proptest! {
    #[test]
    fn never_panics_on_bytes(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        for f in [Format::Text, Format::OpenMetrics] {
            let mut p = Parser::new(&b, f);
            for _ in 0..400 {
                match p.next() {
                    Ok(Some(Entry::Sample { .. })) => { let _ = p.labels(); }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn never_panics_on_near_valid_text(s in "([a-c_:]{0,3}(\\{([a-c]{0,2} ?= ?\"[a-c\\\\\"\n]{0,3}\"[, ]{0,2}){0,3}\\})? ?[-+0-9.eEinfaN]{0,5}( [0-9]{0,3})?( # \\{[a-c=\"]{0,6}\\} [0-9]{0,2})?\n|# (HELP|TYPE|UNIT|EOF)[ a-z]{0,8}\n){0,6}") {
        for f in [Format::Text, Format::OpenMetrics] {
            let _ = parse(s.as_bytes(), f);
        }
    }

    /// Whatever the text parser accepts as a sample keeps its value bits.
    #[test]
    fn values_round_trip(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
        let body = format!("m {v:?}\n");
        let p = parse(body.as_bytes(), Format::Text).unwrap();
        prop_assert_eq!(p.samples[0].1.to_bits(), v.to_bits());
    }
}
