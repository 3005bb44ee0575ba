//! OTLP names to Prometheus names, by the rules of Prometheus's OTLP receiver
//! with its default translation strategy (`UnderscoreEscapingWithSuffixes`)
//! and the OpenTelemetry Prometheus compatibility specification:
//!
//! - metric names: every run of characters outside `[a-zA-Z0-9:]` splits
//!   the name into words joined by one `_`; the unit is appended as words
//!   (`By` → `bytes`, `s` → `seconds`, `By/s` → `bytes_per_second`,
//!   `{requests}` → nothing) unless the name already holds that word;
//!   monotonic sums end in `_total` and gauges with unit `1` in `_ratio`
//!   (an existing `total`/`ratio` word moves to the end); a leading digit
//!   gets a `_` prefix;
//! - label names: characters outside `[a-zA-Z0-9]` become `_`, runs of them
//!   one `_`; `__reserved__` names keep their double underscores; a leading
//!   digit gets a `key_` prefix; a name that is empty or only underscores is
//!   refused.
//!
//! Not here: which attributes become labels (see [`super::metrics`]).

/// The Prometheus words for OTLP (UCUM) units.
fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        _ => return None,
    })
}

/// The singular words for the denominator of a rate unit.
fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// What the name is built for: the type decides `_total` and `_ratio`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    MonotonicSum,
    NonMonotonicSum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

fn metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// The unit's main and "per" suffixes, before clean-up.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let mut main = String::new();
    let mut per = String::new();
    if let Some(m) = parts.next() {
        let m = m.trim();
        if !m.is_empty() && !m.contains(['{', '}']) {
            main = unit_word(m).map(str::to_string).unwrap_or_else(|| m.into());
        }
    }
    if let Some(p) = parts.next()
        && !p.is_empty()
    {
        let p = p.trim();
        if !p.is_empty() && !p.contains(['{', '}']) {
            per = per_unit_word(p)
                .map(str::to_string)
                .unwrap_or_else(|| p.into());
        }
        if !per.is_empty() {
            per = format!("per_{per}");
        }
    }
    (main, per)
}

/// Invalid characters to `_`, runs of `_` to one, no leading `_`.
fn clean_unit(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut prev_underscore = false;
    for c in unit.chars() {
        let c = if metric_char(c) { c } else { '_' };
        if c == '_' {
            if prev_underscore {
                continue;
            }
            prev_underscore = true;
        } else {
            prev_underscore = false;
        }
        out.push(c);
    }
    match out.strip_prefix('_') {
        Some(rest) => rest.to_string(),
        None => out,
    }
}

/// The Prometheus metric name for an OTLP metric; `None` when nothing
/// usable remains (empty, or only underscores).
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> Option<String> {
    let mut words: Vec<String> = name
        .split(|c: char| !metric_char(c))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let (main, per) = unit_suffixes(unit);
    let mut main = clean_unit(&main);
    let mut per = clean_unit(&per);
    if words.contains(&main) {
        main.clear();
    }
    if per == "per_" {
        per.clear();
    } else {
        if let Some(p) = per.strip_suffix('_') {
            per = p.to_string();
        }
        if words.contains(&per) {
            per.clear();
        }
    }
    if !per.is_empty()
        && let Some(m) = main.strip_suffix('_')
    {
        main = m.to_string();
    }
    if !main.is_empty() {
        words.push(main);
    }
    if !per.is_empty() {
        words.push(per);
    }
    if kind == Kind::MonotonicSum {
        words.retain(|w| w != "total");
        words.push("total".into());
    }
    if unit == "1" && kind == Kind::Gauge {
        words.retain(|w| w != "ratio");
        words.push("ratio".into());
    }
    let mut out = words.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.is_empty() || (out != name && out.chars().all(|c| c == '_')) {
        return None;
    }
    Some(out)
}

/// The Prometheus unit word for metadata (`s` → `seconds`, `By/s` →
/// `bytes_per_second`, `1` → empty).
pub fn unit_name(unit: &str) -> String {
    let (main, per) = unit_suffixes(unit);
    let (main, per) = (clean_unit(&main), clean_unit(&per));
    let u = match (main.is_empty(), per.is_empty()) {
        (false, false) => format!("{main}_{per}"),
        (false, true) => main,
        _ => per,
    };
    u.trim_matches('_').to_string()
}

/// The Prometheus label name for an attribute key; `None` when the key is
/// empty or normalises to underscores only.
pub fn label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let reserved = key.len() >= 4 && key.starts_with("__") && key.ends_with("__");
    let inner = if reserved {
        &key[2..key.len() - 2]
    } else {
        key
    };
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev_underscore = false;
    for c in inner.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            prev_underscore = false;
        } else if !prev_underscore {
            out.push('_');
            prev_underscore = true;
        }
    }
    if reserved {
        out = format!("__{out}__");
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    if out.is_empty() || out.chars().all(|c| c == '_') {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metric_names_follow_the_prometheus_receiver() {
        let cases = [
            // (name, unit, kind, expected) — examples from otlptranslator's
            // documentation and the compatibility specification
            (
                "http.server.request.duration",
                "s",
                Kind::Histogram,
                "http_server_request_duration_seconds",
            ),
            (
                "requests.count",
                "1",
                Kind::MonotonicSum,
                "requests_count_total",
            ),
            ("memory.usage", "By", Kind::Gauge, "memory_usage_bytes"),
            ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
            (
                "cpu.utilization",
                "1",
                Kind::NonMonotonicSum,
                "cpu_utilization",
            ),
            (
                "system.io",
                "By",
                Kind::MonotonicSum,
                "system_io_bytes_total",
            ),
            ("net.rate", "By/s", Kind::Gauge, "net_rate_bytes_per_second"),
            ("queue.size", "{items}", Kind::Gauge, "queue_size"),
            (
                "requests",
                "{requests}/s",
                Kind::Gauge,
                "requests_per_second",
            ),
            ("hits", "{hit}/min", Kind::Gauge, "hits_per_min"),
            ("x_total.count", "", Kind::MonotonicSum, "x_count_total"),
            ("ratio.of.x", "1", Kind::Gauge, "of_x_ratio"),
            ("latency_seconds", "s", Kind::Histogram, "latency_seconds"),
            ("foo__bar..baz", "", Kind::Gauge, "foo_bar_baz"),
            ("2xx.count", "", Kind::Gauge, "_2xx_count"),
            ("temp", "Cel", Kind::Gauge, "temp_celsius"),
            ("odd", "widgets", Kind::Gauge, "odd_widgets"),
            ("a:b", "", Kind::Gauge, "a:b"),
            ("app.ops", "1", Kind::Summary, "app_ops"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name(name, unit, kind).as_deref(),
                Some(want),
                "{name} {unit} {kind:?}"
            );
        }
        assert_eq!(metric_name("", "", Kind::Gauge), None);
        assert_eq!(metric_name("...", "", Kind::Gauge), None);
        // a name that is only a unit becomes the unit word
        assert_eq!(
            metric_name("", "s", Kind::Gauge).as_deref(),
            Some("seconds")
        );
    }

    #[test]
    fn units_and_labels() {
        assert_eq!(unit_name("s"), "seconds");
        assert_eq!(unit_name("By/s"), "bytes_per_second");
        assert_eq!(unit_name("1"), "");
        assert_eq!(unit_name("{request}"), "");
        assert_eq!(label_name("http.method").as_deref(), Some("http_method"));
        assert_eq!(label_name("123invalid").as_deref(), Some("key_123invalid"));
        assert_eq!(label_name("__reserved__").as_deref(), Some("__reserved__"));
        assert_eq!(label_name("a..b__c").as_deref(), Some("a_b_c"));
        assert_eq!(label_name("_private").as_deref(), Some("_private"));
        assert_eq!(label_name("ünïcode").as_deref(), Some("_n_code"));
        assert_eq!(label_name(""), None);
        assert_eq!(label_name("..."), None);
    }

    proptest! {
        #[test]
        fn names_are_valid_or_refused(name in ".{0,40}", unit in ".{0,12}") {
            for kind in [Kind::Gauge, Kind::MonotonicSum, Kind::Histogram] {
                if let Some(n) = metric_name(&name, &unit, kind) {
                    prop_assert!(!n.is_empty());
                    prop_assert!(!n.starts_with(|c: char| c.is_ascii_digit()));
                    prop_assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{}", n);
                }
            }
            if let Some(l) = label_name(&name) {
                prop_assert!(vigil_common::labels::valid_label_name(&l), "{}", l);
            }
        }
    }
}
