//! Prometheus's own relabel tests (model/relabel/relabel_test.go) re-expressed,
//! plus the corners of validation, expansion and YAML defaults.

use super::*;
use proptest::prelude::*;

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().copied())
}

fn rules(yaml: &str, scheme: NameValidation) -> Vec<Relabel> {
    let cfgs: Vec<RelabelConfig> =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("yaml: {e}\n{yaml}"));
    compile(&cfgs, scheme).unwrap_or_else(|e| panic!("compile: {e}\n{yaml}"))
}

/// Prometheus's TestRelabel runs with UTF-8 name validation.
fn run(input: &[(&str, &str)], yaml: &str) -> Option<Labels> {
    process(&rules(yaml, NameValidation::Utf8), l(input))
}

fn config_error(yaml: &str, scheme: NameValidation) -> String {
    let cfgs: Vec<RelabelConfig> = match serde_saphyr::from_str(yaml) {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    match compile(&cfgs, scheme) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn replace_with_groups() {
    let out = run(
        &[("a", "foo"), ("b", "bar"), ("c", "baz")],
        r#"
- source_labels: [a]
  regex: "f(.*)"
  target_label: d
  separator: ";"
  replacement: "ch${1}-ch${1}"
  action: replace
"#,
    );
    assert_eq!(
        out,
        Some(l(&[
            ("a", "foo"),
            ("b", "bar"),
            ("c", "baz"),
            ("d", "choo-choo")
        ]))
    );
}

#[test]
fn replace_chain_sees_earlier_results() {
    let out = run(
        &[("a", "foo"), ("b", "bar"), ("c", "baz")],
        r#"
- source_labels: [a, b]
  regex: "f(.*);(.*)r"
  target_label: a
  replacement: "b${1}${2}m"
- source_labels: [c, a]
  regex: "(b).*b(.*)ba(.*)"
  target_label: d
  replacement: "$1$2$2$3"
"#,
    );
    assert_eq!(
        out,
        Some(l(&[
            ("a", "boobam"),
            ("b", "bar"),
            ("c", "baz"),
            ("d", "boooom")
        ]))
    );
}

#[test]
fn drop_stops_processing() {
    let yaml = r#"
- source_labels: [a]
  regex: ".*o.*"
  action: drop
- source_labels: [a]
  regex: "f(.*)"
  target_label: d
  replacement: "ch$1-ch$1"
"#;
    assert_eq!(run(&[("a", "foo")], yaml), None);
    assert_eq!(
        run(
            &[("a", "foo"), ("b", "bar")],
            "- {source_labels: [a], regex: '.*o.*', action: drop}"
        ),
        None
    );
}

#[test]
fn regex_is_anchored() {
    assert_eq!(
        run(
            &[("a", "abc")],
            "- {source_labels: [a], regex: '.*(b).*', target_label: d, replacement: '$1'}"
        ),
        Some(l(&[("a", "abc"), ("d", "b")]))
    );
    // "f|o" matches neither "f" nor "o" against "foo" once anchored.
    for re in ["no-match", "f|o"] {
        let yaml = format!("- {{source_labels: [a], regex: '{re}', action: drop}}");
        assert_eq!(
            run(&[("a", "foo")], &yaml),
            Some(l(&[("a", "foo")])),
            "{re}"
        );
    }
}

#[test]
fn keep() {
    assert_eq!(
        run(
            &[("a", "foo")],
            "- {source_labels: [a], regex: no-match, action: keep}"
        ),
        None
    );
    assert_eq!(
        run(
            &[("a", "foo")],
            "- {source_labels: [a], regex: 'f.*', action: keep}"
        ),
        Some(l(&[("a", "foo")]))
    );
}

#[test]
fn no_replacement_without_match() {
    assert_eq!(
        run(
            &[("a", "boo")],
            "- {source_labels: [a], regex: f, target_label: b, replacement: bar}"
        ),
        Some(l(&[("a", "boo")]))
    );
}

#[test]
fn blank_replacement_deletes_the_target() {
    assert_eq!(
        run(
            &[("a", "foo"), ("f", "baz")],
            "- {source_labels: [a], regex: '(f).*', target_label: '$1', replacement: '$2'}"
        ),
        Some(l(&[("a", "foo")]))
    );
}

#[test]
fn hashmod_is_prometheus_md5() {
    assert_eq!(
        run(
            &[("a", "foo"), ("b", "bar"), ("c", "baz")],
            "- {source_labels: [c], target_label: d, action: hashmod, modulus: 1000}"
        ),
        Some(l(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]))
    );
    assert_eq!(
        run(
            &[("a", "foo\nbar")],
            "- {source_labels: [a], target_label: b, action: hashmod, modulus: 1000}"
        ),
        Some(l(&[("a", "foo\nbar"), ("b", "734")]))
    );
}

#[test]
fn labelmap() {
    assert_eq!(
        run(
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            "- {regex: '(b.*)', replacement: 'bar_${1}', action: labelmap}"
        ),
        Some(l(&[
            ("a", "foo"),
            ("b1", "bar"),
            ("b2", "baz"),
            ("bar_b1", "bar"),
            ("bar_b2", "baz")
        ]))
    );
    assert_eq!(
        run(
            &[
                ("a", "foo"),
                ("__meta_my_bar", "aaa"),
                ("__meta_my_baz", "bbb"),
                ("__meta_other", "ccc")
            ],
            "- {regex: '__meta_(my.*)', replacement: '${1}', action: labelmap}"
        ),
        Some(l(&[
            ("a", "foo"),
            ("__meta_my_bar", "aaa"),
            ("__meta_my_baz", "bbb"),
            ("__meta_other", "ccc"),
            ("my_bar", "aaa"),
            ("my_baz", "bbb")
        ]))
    );
}

#[test]
fn labelmap_collisions_follow_range_order() {
    // Base labels are visited sorted, so the last sorted source wins; labels added
    // by an earlier rule are visited after the base, in the order they were set.
    assert_eq!(
        run(
            &[("x_a", "1"), ("y_a", "2")],
            "- {regex: '._(a)', replacement: '$1', action: labelmap}"
        ),
        Some(l(&[("a", "2"), ("x_a", "1"), ("y_a", "2")]))
    );
    assert_eq!(
        run(
            &[("m", "0")],
            r#"
- {target_label: y_b, replacement: "first"}
- {target_label: x_b, replacement: "second"}
- {regex: '._(b)', replacement: '$1', action: labelmap}
"#
        ),
        Some(l(&[
            ("b", "second"),
            ("m", "0"),
            ("x_b", "second"),
            ("y_b", "first")
        ]))
    );
}

#[test]
fn templated_target_label() {
    let input = [("a", "some-name-value")];
    assert_eq!(
        run(
            &input,
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${2}', target_label: '${1}'}"
        ),
        Some(l(&[("a", "some-name-value"), ("name", "value")]))
    );
    // ${3} does not exist: the replacement is empty, the target is deleted (absent).
    assert_eq!(
        run(
            &input,
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${3}', target_label: '${1}'}"
        ),
        Some(l(&input))
    );
}

#[test]
fn invalid_expanded_target_is_skipped() {
    let yaml = r#"
- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}
- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}
- {source_labels: [a], regex: 'some-([^-]+)(-[^,]+)', replacement: '${1}', target_label: '${3}'}
"#;
    assert_eq!(
        run(&[("a", "some-name-0")], yaml),
        Some(l(&[("a", "some-name-0")]))
    );
    // In legacy mode a target that expands to an invalid name is skipped too.
    let r = rules(
        "- {source_labels: [a], regex: '(.*)', target_label: 'x$1'}",
        NameValidation::Legacy,
    );
    assert_eq!(process(&r, l(&[("a", "-bad")])), Some(l(&[("a", "-bad")])));
    assert_eq!(
        process(&r, l(&[("a", "ok")])),
        Some(l(&[("a", "ok"), ("xok", "ok")]))
    );
}

#[test]
fn real_life_tags() {
    let yaml = r#"
- source_labels: [__meta_sd_tags]
  regex: "(?:.+,|^)path:(/[^,]+).*"
  replacement: "${1}"
  target_label: __metrics_path__
- source_labels: [__meta_sd_tags]
  regex: "(?:.+,|^)job:([^,]+).*"
  replacement: "${1}"
  target_label: job
- source_labels: [__meta_sd_tags]
  regex: "(?:.+,|^)label:([^=]+)=([^,]+).*"
  replacement: "${2}"
  target_label: "${1}"
"#;
    let tags = "path:/secret,job:some-job,label:foo=bar";
    assert_eq!(
        run(&[("__meta_sd_tags", tags)], yaml),
        Some(l(&[
            ("__meta_sd_tags", tags),
            ("__metrics_path__", "/secret"),
            ("job", "some-job"),
            ("foo", "bar")
        ]))
    );
}

#[test]
fn labeldrop_then_replace_then_keep() {
    // prometheus/prometheus#12283
    let yaml = r#"
- regex: "^__meta_kubernetes_pod_container_port_name$"
  action: labeldrop
- source_labels: [__meta_kubernetes_pod_annotation_XXX_metrics_port]
  regex: "(.+)"
  replacement: metrics
  target_label: __meta_kubernetes_pod_container_port_name
- source_labels: [__meta_kubernetes_pod_container_port_name]
  regex: "^metrics$"
  action: keep
"#;
    assert_eq!(
        run(
            &[
                ("__meta_kubernetes_pod_container_port_name", "foo"),
                ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091")
            ],
            yaml
        ),
        Some(l(&[
            ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
            ("__meta_kubernetes_pod_container_port_name", "metrics")
        ]))
    );
}

#[test]
fn labelkeep_and_labeldrop() {
    let input = [("a", "foo"), ("b1", "bar"), ("b2", "baz")];
    assert_eq!(
        run(&input, "- {regex: '(b.*)', action: labelkeep}"),
        Some(l(&[("b1", "bar"), ("b2", "baz")]))
    );
    assert_eq!(
        run(&input, "- {regex: '(b.*)', action: labeldrop}"),
        Some(l(&[("a", "foo")]))
    );
}

#[test]
fn lowercase_uppercase() {
    let yaml = r#"
- {source_labels: [foo], action: uppercase, target_label: foo_uppercase}
- {source_labels: [foo], action: lowercase, target_label: foo_lowercase}
"#;
    assert_eq!(
        run(&[("foo", "bAr123Foo")], yaml),
        Some(l(&[
            ("foo", "bAr123Foo"),
            ("foo_lowercase", "bar123foo"),
            ("foo_uppercase", "BAR123FOO")
        ]))
    );
    // Go maps one character to one character: ß has no simple upper case, İ lowers to i.
    assert_eq!(go_uppercase("straße éa"), "STRAßE ÉA");
    assert_eq!(go_lowercase("İSTANBUL ΣΑΣ"), "istanbul σασ");
    // An empty result deletes the target.
    assert_eq!(
        run(
            &[("t", "x")],
            "- {source_labels: [missing], action: lowercase, target_label: t}"
        ),
        Some(Labels::default())
    );
}

#[test]
fn keepequal_dropequal() {
    let input = [
        ("__tmp_port", "1234"),
        ("__port1", "1234"),
        ("__port2", "5678"),
    ];
    let rule = |action: &str, target: &str| {
        format!("- {{source_labels: [__tmp_port], action: {action}, target_label: {target}}}")
    };
    assert_eq!(run(&input, &rule("keepequal", "__port1")), Some(l(&input)));
    assert_eq!(run(&input, &rule("dropequal", "__port1")), None);
    assert_eq!(run(&input, &rule("dropequal", "__port2")), Some(l(&input)));
    assert_eq!(run(&input, &rule("keepequal", "__port2")), None);
}

#[test]
fn dot_matches_newline() {
    let input = [("a", "line1\nline2"), ("b", "bar"), ("c", "baz")];
    assert_eq!(
        run(
            &input,
            "- {source_labels: [a], regex: 'line1.*line2', target_label: d, replacement: 'match${1}'}"
        ),
        Some(l(&[
            ("a", "line1\nline2"),
            ("b", "bar"),
            ("c", "baz"),
            ("d", "match")
        ]))
    );
}

#[test]
fn utf8_label_names() {
    let input = [("utf-8.label", "line1\nline2"), ("b", "bar")];
    assert_eq!(
        run(
            &input,
            "- {source_labels: [utf-8.label], regex: 'line1.*line2', target_label: d, replacement: 'match${1}'}"
        ),
        Some(l(&[
            ("utf-8.label", "line1\nline2"),
            ("b", "bar"),
            ("d", "match")
        ]))
    );
    let input = [("a", "line1\nline2")];
    assert_eq!(
        run(
            &input,
            "- {source_labels: [a], regex: 'line1.*line2', target_label: 'utf-8.label${1}', replacement: 'match${1}'}"
        ),
        Some(l(&[("a", "line1\nline2"), ("utf-8.label", "match")]))
    );
    assert_eq!(
        run(
            &input,
            r#"
- {source_labels: [a], regex: '(line1).*(?<second>line2)', target_label: 'label1_${1}', replacement: 'val_${second}'}
- {source_labels: [a], regex: '(line1).*(?<second>line2)', target_label: 'label2_$1', replacement: 'val_$second'}
"#
        ),
        Some(l(&[
            ("a", "line1\nline2"),
            ("label1_line1", "val_line2"),
            ("label2_line1", "val_line2")
        ]))
    );
}

#[test]
fn name_driven_rules() {
    assert_eq!(
        run(
            &[("__name__", "http_requests_total")],
            "- {source_labels: [__name__], regex: '.*_total$', target_label: __type__, replacement: counter}"
        ),
        Some(l(&[
            ("__name__", "http_requests_total"),
            ("__type__", "counter")
        ]))
    );
}

#[test]
fn static_label_pairs() {
    // From Prometheus's BenchmarkRelabel "static label pair".
    let yaml = r#"
- replacement: wwwwww
  target_label: wwwwww
- replacement: yyyyyyyyyyyy
  target_label: xxxxxxxxx
- replacement: xxxxxxxxx
  target_label: yyyyyyyyyyyy
- source_labels: ["something"]
  target_label: with_source_labels
  replacement: value
- replacement: dropped
  target_label: ${0}
- replacement: ${0}
  target_label: dropped
"#;
    assert_eq!(
        process(&rules(yaml, NameValidation::Legacy), l(&[("job", "foo")])),
        Some(l(&[
            ("job", "foo"),
            ("with_source_labels", "value"),
            ("wwwwww", "wwwwww"),
            ("xxxxxxxxx", "yyyyyyyyyyyy"),
            ("yyyyyyyyyyyy", "xxxxxxxxx")
        ]))
    );
}

#[test]
fn kubernetes_pipeline_from_prometheus_benchmark() {
    let yaml = r#"
- source_labels: [__meta_kubernetes_pod_container_port_name]
  regex: .*-metrics
  action: keep
- source_labels: [__meta_kubernetes_pod_label_name]
  action: drop
  regex: ""
- source_labels: [__meta_kubernetes_pod_phase]
  regex: Succeeded|Failed
  action: drop
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
  regex: "false"
  action: drop
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme]
  target_label: __scheme__
  regex: (https?)
  replacement: $1
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
  target_label: __metrics_path__
  regex: (.+)
- source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
  target_label: __address__
  regex: (.+?)(\:\d+)?;(\d+)
  replacement: $1:$3
- regex: __meta_kubernetes_pod_annotation_prometheus_io_param_(.+)
  replacement: __param_$1
  action: labelmap
- source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_label_name]
  separator: /
  target_label: job
- source_labels: [__meta_kubernetes_pod_name, __meta_kubernetes_pod_container_name, __meta_kubernetes_pod_container_port_name]
  separator: ':'
  target_label: instance
- target_label: cluster
  replacement: dev-us-central-0
- source_labels: [__address__]
  target_label: __tmp_hash
  modulus: 3
  action: hashmod
- regex: __meta_.*|__tmp_hash
  action: labeldrop
"#;
    let input = l(&[
        ("__address__", "10.132.183.40:80"),
        ("__meta_kubernetes_namespace", "loki"),
        ("__meta_kubernetes_pod_container_name", "promtail"),
        ("__meta_kubernetes_pod_container_port_name", "http-metrics"),
        ("__meta_kubernetes_pod_label_name", "promtail"),
        ("__meta_kubernetes_pod_name", "promtail-jgtr7"),
        ("__meta_kubernetes_pod_phase", "Running"),
        (
            "__meta_kubernetes_pod_annotation_prometheus_io_port",
            "9100",
        ),
        (
            "__meta_kubernetes_pod_annotation_prometheus_io_param_module",
            "http_2xx",
        ),
        ("__metrics_path__", "/metrics"),
        ("__scheme__", "http"),
        ("job", "kubernetes-pods"),
    ]);
    assert_eq!(
        process(&rules(yaml, NameValidation::Legacy), input),
        Some(l(&[
            ("__address__", "10.132.183.40:9100"),
            ("__metrics_path__", "/metrics"),
            ("__param_module", "http_2xx"),
            ("__scheme__", "http"),
            ("cluster", "dev-us-central-0"),
            ("instance", "promtail-jgtr7:promtail:http-metrics"),
            ("job", "loki/promtail"),
        ]))
    );
}

#[test]
fn expansion_follows_go() {
    let re = re2::compile_anchored("(?P<x>a)(b)").unwrap();
    let caps = re.captures("ab").unwrap();
    let e = |t: &str| expand(t, &caps);
    assert_eq!(e("$1-$2-$x-${x}"), "a-b-a-a");
    assert_eq!(e("$$1"), "$1");
    assert_eq!(e("$1x"), "", "the longest name: `1x` is not a group");
    assert_eq!(e("${1}x"), "ax");
    assert_eq!(e("$01"), "", "leading zero: a name, not a number");
    assert_eq!(e("$9"), "", "no such group");
    assert_eq!(e("$"), "$");
    assert_eq!(e("a$-b"), "a$-b", "malformed reference keeps the `$`");
    assert_eq!(e("${1"), "${1", "unclosed brace keeps the `$`");
    assert_eq!(e("${}"), "${}");
    assert_eq!(e("$é"), "", "a Unicode letter is part of a name");
    assert_eq!(e("$1€"), "a€", "a symbol ends a name");
    assert_eq!(e("$0"), "ab");
}

#[test]
fn yaml_defaults_match_prometheus() {
    let c: RelabelConfig = serde_saphyr::from_str("target_label: x").unwrap();
    assert_eq!(
        c,
        RelabelConfig {
            target_label: "x".into(),
            ..RelabelConfig::default()
        }
    );
    assert_eq!(c.separator, ";");
    assert_eq!(c.replacement, "$1");
    assert_eq!(c.regex.as_str(), "(.*)");
    assert_eq!(c.action, Action::Replace);
    // `regex:` with no value is the empty regex, explicit empty strings stay empty.
    let c: RelabelConfig =
        serde_saphyr::from_str("{target_label: x, regex: , separator: '', replacement: ''}")
            .unwrap();
    assert_eq!(c.regex, RegexSetting::Set(String::new()));
    assert_eq!(c.separator, "");
    assert_eq!(c.replacement, "");
    // Actions are case-insensitive.
    let c: RelabelConfig = serde_saphyr::from_str("{action: LabelDrop, regex: x}").unwrap();
    assert_eq!(c.action, Action::LabelDrop);
    // Unknown keys and actions are refused.
    assert!(serde_saphyr::from_str::<RelabelConfig>("{target_label: x, bogus: 1}").is_err());
    let e = serde_saphyr::from_str::<RelabelConfig>("{action: explode}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown relabel action \"explode\""), "{e}");
    // Serialized and read back, a rule is the same rule (the agent layers configs through JSON).
    for yaml in [
        "{target_label: x, regex: , separator: '', replacement: ''}",
        "{source_labels: [a, b], target_label: x, modulus: 7, action: hashmod}",
        "{source_labels: [], regex: 'a', action: keep}",
    ] {
        let c: RelabelConfig = serde_saphyr::from_str(yaml).unwrap();
        let back: RelabelConfig =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c, "{yaml}");
    }
}

#[test]
fn empty_regex_matches_only_empty() {
    assert_eq!(
        run(
            &[("a", "x")],
            "- {source_labels: [b], regex: , action: keep}"
        ),
        Some(l(&[("a", "x")]))
    );
    assert_eq!(
        run(
            &[("a", "x")],
            "- {source_labels: [a], regex: , action: keep}"
        ),
        None
    );
}

#[test]
fn empty_valued_labels_are_absent() {
    // Prometheus's labels.Builder deletes base labels with an empty value.
    assert_eq!(
        run(
            &[("name", ""), ("a", "1")],
            "- {target_label: b, replacement: '2'}"
        ),
        Some(l(&[("a", "1"), ("b", "2")]))
    );
    assert_eq!(
        process(&[], l(&[("name", ""), ("a", "1")])),
        Some(l(&[("a", "1")]))
    );
    // ... and read as "" by source_labels.
    assert_eq!(
        run(
            &[("e", "")],
            "- {source_labels: [e], regex: '', action: drop}"
        ),
        None
    );
}

#[test]
fn validation_as_prometheus() {
    use NameValidation::*;
    let cases: &[(&str, NameValidation, &str)] = &[
        ("- {action: replace}", Utf8, "requires 'target_label' value"),
        (
            "- {action: lowercase}",
            Utf8,
            "requires 'target_label' value",
        ),
        ("- {action: lowercase, target_label: '${3}'}", Utf8, ""),
        (
            "- {action: lowercase, target_label: '${3}'}",
            Legacy,
            "\"${3}\" is invalid 'target_label' for lowercase action",
        ),
        (
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', target_label: '${3}'}",
            Utf8,
            "",
        ),
        (
            "- {source_labels: [a], regex: 'x', target_label: '0${3}'}",
            Utf8,
            "",
        ),
        (
            "- {source_labels: [a], regex: 'x', target_label: '-${3}'}",
            Utf8,
            "",
        ),
        (
            "- {source_labels: [a], regex: 'x', target_label: '-${3}'}",
            Legacy,
            "is invalid 'target_label' for replace action",
        ),
        (
            "- {regex: '__meta_kubernetes_pod_label_(strimzi_io_.+)', action: labelmap, replacement: '$1'}",
            Legacy,
            "",
        ),
        (
            "- {regex: '__meta_(.+)', action: labelmap, replacement: '${1}'}",
            Legacy,
            "",
        ),
        (
            "- {regex: '(.+)', action: labelmap, replacement: 'a-$1'}",
            Legacy,
            "\"a-$1\" is invalid 'replacement' for labelmap action",
        ),
        (
            "- {action: hashmod, target_label: x}",
            Legacy,
            "requires non-zero modulus",
        ),
        (
            "- {action: hashmod, target_label: '$1', modulus: 2}",
            Legacy,
            "is invalid 'target_label' for hashmod action",
        ),
        (
            "- {target_label: 'a b'}",
            Legacy,
            "is invalid 'target_label' for replace action",
        ),
        ("- {target_label: 'a b'}", Utf8, ""),
        (
            "- {action: uppercase, target_label: x, replacement: y}",
            Legacy,
            "'replacement' can not be set for uppercase action",
        ),
        (
            "- {action: keepequal, target_label: x, regex: '(.*)'}",
            Legacy,
            "keepequal action requires only 'source_labels' and `target_label`, and no other fields",
        ),
        (
            "- {action: dropequal, target_label: x, separator: ','}",
            Legacy,
            "dropequal action requires only",
        ),
        (
            "- {action: keepequal, source_labels: [a], target_label: x, separator: ';'}",
            Legacy,
            "",
        ),
        (
            "- {action: labeldrop, regex: x, source_labels: [a]}",
            Legacy,
            "labeldrop action requires only 'regex', and no other fields",
        ),
        (
            "- {action: labelkeep, regex: x, target_label: a}",
            Legacy,
            "labelkeep action requires only 'regex'",
        ),
        (
            "- {action: labelkeep, regex: x, modulus: 2}",
            Legacy,
            "labelkeep action requires only 'regex'",
        ),
        (
            "- {action: labelkeep, regex: x, replacement: $2}",
            Legacy,
            "labelkeep action requires only 'regex'",
        ),
        ("- {action: labeldrop, regex: x}", Legacy, ""),
        (
            "- {source_labels: [a-b], target_label: x}",
            Legacy,
            "\"a-b\" is not a valid label name",
        ),
        ("- {source_labels: [a-b], target_label: x}", Utf8, ""),
        (
            "- {target_label: x, regex: 'a{2,1}'}",
            Legacy,
            "invalid regex \"a{2,1}\"",
        ),
        (
            "- {target_label: x, regex: '(unclosed'}",
            Legacy,
            "invalid regex",
        ),
        (
            "- {target_label: ok}\n- {action: hashmod, target_label: x}",
            Legacy,
            "rule 1: ",
        ),
    ];
    for (yaml, scheme, want) in cases {
        let got = config_error(yaml, *scheme);
        if want.is_empty() {
            assert_eq!(got, "", "{yaml} ({scheme:?})");
        } else {
            assert!(
                got.contains(want),
                "{yaml} ({scheme:?}): got {got:?}, want {want:?}"
            );
        }
    }
}

#[test]
fn legacy_target_template() {
    for (s, valid) in [
        ("-label", false),
        ("label", true),
        ("label${1}", true),
        ("${1}label", true),
        ("${1}", true),
        ("${", false),
        ("$", false),
        ("${}", false),
        ("foo${", false),
        ("$1", true),
        ("asd$2asd", true),
        ("-foo${1}bar-", false),
        ("bar.foo${1}bar", false),
        ("_${1}_", true),
        ("foo${bar}foo", true),
    ] {
        assert_eq!(NameValidation::Legacy.is_valid_template(s), valid, "{s}");
    }
}

fn arb_labels() -> impl Strategy<Value = Labels> {
    proptest::collection::vec(("[a-c_]{1,3}", "\\PC{0,6}"), 0..6).prop_map(Labels::new)
}

fn arb_rule() -> impl Strategy<Value = RelabelConfig> {
    let action = proptest::sample::select(Action::ALL.to_vec());
    (
        action,
        proptest::option::of(proptest::collection::vec("[a-c_]{1,3}", 0..3)),
        "[;,]{0,1}",
        proptest::option::of("[a-c.*()|$\\\\^+?{}0-9\\[\\]]{0,8}"),
        0u64..4,
        "[a-c_$1{}]{0,5}",
        "[a-c_$1{}]{0,5}",
    )
        .prop_map(
            |(action, source_labels, separator, regex, modulus, target, repl)| RelabelConfig {
                source_labels,
                separator,
                regex: regex.map_or(RegexSetting::Default, RegexSetting::Set),
                modulus,
                target_label: target,
                replacement: repl,
                action,
            },
        )
}

proptest! {
    /// Any rule either compiles or is refused; any compiled rule applies to any
    /// label set without panicking, and the result is a valid `Labels`.
    #[test]
    fn never_panics(rs in proptest::collection::vec(arb_rule(), 0..5), input in arb_labels()) {
        for scheme in [NameValidation::Legacy, NameValidation::Utf8] {
            let compiled: Vec<Relabel> = rs.iter().filter_map(|r| r.compile(scheme).ok()).collect();
            if let Some(out) = process(&compiled, input.clone()) {
                let names: Vec<&str> = out.iter().map(|(k, _)| k).collect();
                let mut sorted = names.clone();
                sorted.sort_unstable();
                sorted.dedup();
                prop_assert_eq!(names, sorted);
            }
        }
    }

    /// `hashmod` stays below its modulus.
    #[test]
    fn hashmod_in_range(v in "\\PC{0,20}", m in 1u64..1000) {
        let r = RelabelConfig {
            source_labels: Some(vec!["a".into()]),
            target_label: "h".into(),
            modulus: m,
            action: Action::HashMod,
            ..RelabelConfig::default()
        }.compile(NameValidation::Legacy).unwrap();
        let out = process(&[r], Labels::new([("a", v)])).unwrap();
        prop_assert!(out.get("h").unwrap().parse::<u64>().unwrap() < m);
    }
}
