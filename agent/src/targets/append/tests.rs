use super::*;
use vigil_common::relabel::{NameValidation, RelabelConfig};

fn cfg() -> AppendConfig {
    AppendConfig {
        target_labels: Labels::new([("job", "j"), ("instance", "i:1"), ("node", "n1")]),
        honor_labels: false,
        honor_timestamps: true,
        limits: Limits::default(),
        metric_relabel: Arc::new(Vec::new()),
    }
}

fn run(a: &mut Appender, body: &str, ts: i64) -> Outcome {
    a.append(Ok((body.as_bytes(), Format::Text)), ts, ts, 0.01)
}

/// (labels as text, ts, value) of the scraped samples, report series left out.
fn samples(o: &Outcome) -> Vec<(String, i64, f64)> {
    o.scrape
        .samples
        .iter()
        .filter(|(s, _, _)| !REPORT_NAMES.contains(&s.labels.metric_name().unwrap()))
        .map(|(s, t, v)| (s.labels.to_string(), *t, *v))
        .collect()
}

fn report(o: &Outcome, name: &str) -> f64 {
    o.scrape
        .samples
        .iter()
        .find(|(s, _, _)| s.labels.metric_name() == Some(name))
        .map(|x| x.2)
        .unwrap()
}

#[test]
fn target_labels_win_and_exposed_ones_become_exported() {
    let mut a = Appender::new(cfg());
    let o = run(
        &mut a,
        "m{job=\"app\",exported_job=\"x\",instance=\"\",a=\"1\"} 1\n",
        1000,
    );
    assert_eq!(
        samples(&o),
        vec![(
            r#"m{a="1",exported_exported_job="app",exported_job="x",instance="i:1",job="j",node="n1"}"#
                .to_string(),
            1000,
            1.0
        )]
    );
    let mut c = cfg();
    c.honor_labels = true;
    let mut a = Appender::new(c);
    let o = run(&mut a, "m{job=\"app\"} 1\n", 1000);
    assert_eq!(samples(&o)[0].0, r#"m{instance="i:1",job="app",node="n1"}"#);
}

#[test]
fn report_series_carry_the_target_labels() {
    let mut a = Appender::new(cfg());
    let o = run(&mut a, "a 1\nb 2\n", 1000);
    assert_eq!(report(&o, "up"), 1.0);
    assert_eq!(report(&o, "scrape_samples_scraped"), 2.0);
    assert_eq!(report(&o, "scrape_samples_post_metric_relabeling"), 2.0);
    assert_eq!(report(&o, "scrape_series_added"), 2.0);
    let up = o
        .scrape
        .samples
        .iter()
        .find(|(s, _, _)| s.labels.metric_name() == Some("up"))
        .unwrap();
    assert_eq!(
        up.0.labels.to_string(),
        r#"up{instance="i:1",job="j",node="n1"}"#
    );
    let o = run(&mut a, "a 1\nb 2\n", 2000);
    assert_eq!(
        report(&o, "scrape_series_added"),
        0.0,
        "known series are not new"
    );
}

#[test]
fn vanished_series_and_failed_scrapes_go_stale() {
    let mut a = Appender::new(cfg());
    run(&mut a, "a 1\nb 2\nc 3 500\n", 1000);
    let o = run(&mut a, "a 1\n", 2000);
    let s = samples(&o);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].0, r#"a{instance="i:1",job="j",node="n1"}"#);
    assert_eq!(s[1].0, r#"b{instance="i:1",job="j",node="n1"}"#);
    assert_eq!(s[1].2.to_bits(), STALE_NAN, "b went away: marked stale");
    assert_eq!(o.stale_markers, 1, "c had its own timestamp: never marked");
    // a garbage body fails the scrape: nothing of it kept, a goes stale, up = 0
    let o = run(&mut a, "a 1\nthis is not { valid\n", 3000);
    assert!(
        o.error.as_deref().unwrap().contains("line 2"),
        "{:?}",
        o.error
    );
    let s = samples(&o);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].2.to_bits(), STALE_NAN);
    assert_eq!(report(&o, "up"), 0.0);
    assert_eq!(report(&o, "scrape_samples_scraped"), 1.0);
    // a fetch failure too, with nothing left to mark
    let o = a.append(Err("connection refused".into()), 4000, 4000, 0.0);
    assert_eq!(samples(&o).len(), 0);
    assert_eq!(o.error.as_deref(), Some("connection refused"));
    // back: the series is new again
    let o = run(&mut a, "a 5\n", 5000);
    assert_eq!(
        samples(&o),
        vec![(r#"a{instance="i:1",job="j",node="n1"}"#.into(), 5000, 5.0)]
    );
    // the target goes away: everything it showed, and its report series, go stale
    let gone = a.stale_all(6000);
    assert_eq!(gone.samples.len(), 1 + REPORT_NAMES.len());
    assert!(
        gone.samples
            .iter()
            .all(|(_, t, v)| *t == 6000 && v.to_bits() == STALE_NAN)
    );
}

#[test]
fn limits_fail_the_whole_scrape() {
    let mut c = cfg();
    c.limits.sample_limit = 2;
    let mut a = Appender::new(c);
    let o = run(&mut a, "a 1\nb 1\n", 1000);
    assert!(o.error.is_none());
    let o = run(&mut a, "a 1\nb 1\nc 1\nd 1\n", 2000);
    assert_eq!(
        o.error.as_deref(),
        Some("sample_limit exceeded (samples after relabeling: 4, limit: 2)")
    );
    assert_eq!(report(&o, "scrape_samples_scraped"), 4.0);
    assert_eq!(
        samples(&o)
            .iter()
            .filter(|s| s.2.to_bits() == STALE_NAN)
            .count(),
        2
    );
    let mut c = cfg();
    c.limits.label_limit = 4;
    let mut a = Appender::new(c);
    let o = run(&mut a, "a{x=\"1\",y=\"2\"} 1\n", 1000);
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .starts_with("label_limit exceeded (metric: a, number of labels: 6, limit: 4)")
    );
    let mut c = cfg();
    c.limits.label_value_length_limit = 3;
    let mut a = Appender::new(c);
    let o = run(&mut a, "a{x=\"long\"} 1\n", 1000);
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .starts_with("label_value_length_limit exceeded")
    );
    let mut c = cfg();
    c.limits.label_name_length_limit = 5;
    let mut a = Appender::new(c);
    let o = run(&mut a, "a{long_name=\"v\"} 1\n", 1000);
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .starts_with("label_name_length_limit exceeded")
    );
}

#[test]
fn metric_relabeling_drops_and_rewrites() {
    let rules: Vec<RelabelConfig> = serde_saphyr::from_str(
        r#"
- {source_labels: [__name__], regex: 'go_.*', action: drop}
- {source_labels: [__name__], regex: 'http_(.*)', target_label: __name__, replacement: 'web_$1'}
"#,
    )
    .unwrap();
    let mut c = cfg();
    c.metric_relabel = Arc::new(relabel::compile(&rules, NameValidation::Legacy).unwrap());
    let mut a = Appender::new(c);
    let body = "go_goroutines 5\nhttp_requests_total 7\n";
    let o = run(&mut a, body, 1000);
    let s = samples(&o);
    assert_eq!(s.len(), 1);
    assert!(s[0].0.starts_with("web_requests_total{"), "{}", s[0].0);
    assert_eq!(report(&o, "scrape_samples_scraped"), 2.0);
    assert_eq!(report(&o, "scrape_samples_post_metric_relabeling"), 1.0);
    let o = run(&mut a, body, 2000);
    assert_eq!(
        samples(&o).len(),
        1,
        "the dropped series stays dropped from the cache"
    );
    // a rule that removes __name__ fails the scrape, as in Prometheus
    let rules: Vec<RelabelConfig> =
        serde_saphyr::from_str("- {regex: __name__, action: labeldrop}").unwrap();
    let mut c = cfg();
    c.metric_relabel = Arc::new(relabel::compile(&rules, NameValidation::Legacy).unwrap());
    let o = run(&mut Appender::new(c), "a 1\n", 1000);
    assert_eq!(o.error.as_deref(), Some("__name__ label is missing"));
}

#[test]
fn duplicates_keep_the_first_and_timestamps_are_honoured_or_not() {
    let mut a = Appender::new(cfg());
    let o = run(&mut a, "a 1\na 2\na{} 3\nb 1 500\nb 2 400\nb 3 600\n", 1000);
    let s = samples(&o);
    assert_eq!(
        s.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(),
        vec![(1000, 1.0), (500, 1.0), (600, 3.0)]
    );
    assert_eq!(o.dropped_out_of_order, 3);
    // the same explicit timestamp again next scrape: dropped
    let o = run(&mut a, "b 9 600\n", 2000);
    assert_eq!(
        samples(&o).iter().filter(|x| x.0.starts_with("b")).count(),
        0
    );
    let mut c = cfg();
    c.honor_timestamps = false;
    let o = run(&mut Appender::new(c), "b 2 400\n", 1000);
    assert_eq!(samples(&o)[0].1, 1000);
    // far future: refused
    let o = run(&mut Appender::new(cfg()), "f 1 99999999999999\n", 1000);
    assert_eq!(samples(&o).len(), 0);
    assert_eq!(o.dropped_out_of_order, 1);
}

#[test]
fn invalid_names_and_duplicate_labels_fail() {
    let o = run(&mut Appender::new(cfg()), "a{b=\"1\",b=\"2\"} 1\n", 1000);
    assert!(o.error.unwrap().contains("not unique"));
    let o = run(&mut Appender::new(cfg()), "  a 1\n", 1000);
    assert!(o.error.is_some());
}

#[test]
fn metadata_is_shipped_when_new_or_changed() {
    let mut a = Appender::new(cfg());
    let body = "# HELP h_seconds Latency.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 1\nh_seconds_count 1\n";
    let o = run(&mut a, body, 1000);
    assert_eq!(
        o.scrape.metadata,
        vec![FamilyMetadata {
            family: "h_seconds".into(),
            kind: pb::MetricType::Histogram,
            help: "Latency.".into(),
            unit: String::new()
        }]
    );
    assert!(run(&mut a, body, 2000).scrape.metadata.is_empty());
    let o = run(&mut a, &body.replace("Latency.", "Latency!"), 3000);
    assert_eq!(o.scrape.metadata[0].help, "Latency!");
}

#[test]
fn openmetrics_bodies() {
    let mut a = Appender::new(cfg());
    let o = a.append(
        Ok((
            b"# TYPE c counter\nc_total 1 1.5 # {t=\"x\"} 1\nc_created 1.7e9\n# EOF\n",
            Format::OpenMetrics,
        )),
        2000,
        2000,
        0.0,
    );
    assert!(o.error.is_none(), "{:?}", o.error);
    let s = samples(&o);
    assert_eq!(s[0].1, 1500);
    assert_eq!(s.len(), 2);
    let o = a.append(Ok((b"c_total 1\n", Format::OpenMetrics)), 3000, 3000, 0.0);
    assert!(o.error.unwrap().contains("# EOF"));
}

/// Exposed texts and the series each is (`None`: relabeling drops it); two
/// texts of `a` and of `c`.
const TEXTS: [(&str, Option<&str>); 10] = [
    ("a", Some(r#"a{instance="i:1",job="j",node="n1"}"#)),
    ("a{}", Some(r#"a{instance="i:1",job="j",node="n1"}"#)),
    (
        r#"b{x="1"}"#,
        Some(r#"b{instance="i:1",job="j",node="n1",x="1"}"#),
    ),
    (
        r#"b{x="2"}"#,
        Some(r#"b{instance="i:1",job="j",node="n1",x="2"}"#),
    ),
    (
        r#"c{y="z",x="1"}"#,
        Some(r#"c{instance="i:1",job="j",node="n1",x="1",y="z"}"#),
    ),
    (
        r#"c{x="1",y="z"}"#,
        Some(r#"c{instance="i:1",job="j",node="n1",x="1",y="z"}"#),
    ),
    (r#"drop_me{x="1"}"#, None),
    ("d", Some(r#"d{instance="i:1",job="j",node="n1"}"#)),
    ("e", Some(r#"e{instance="i:1",job="j",node="n1"}"#)),
    ("f", Some(r#"f{instance="i:1",job="j",node="n1"}"#)),
];

/// Prometheus's scrape loop in its plainest form (series by label text,
/// maps only): what the appender must agree with.
#[derive(Default)]
struct Model {
    /// series → newest timestamp shipped (`i64::MIN`: none)
    known: HashMap<&'static str, i64>,
    /// series exposed by failed scrapes since the last good one
    seen_failing: std::collections::HashSet<&'static str>,
    /// series of the last good scrape whose samples carried no timestamp
    prev: std::collections::HashSet<&'static str>,
}

/// What one scrape should ship: samples in order, stale series, samples dropped.
type Expected = (Vec<(String, i64, f64)>, Vec<String>, usize);

impl Model {
    fn scrape(&mut self, lines: &[(usize, u8, Option<i64>)], ts: i64, fail: bool) -> Expected {
        let mut out = Vec::new();
        let mut dropped = 0;
        let mut cur: HashMap<&str, (i64, bool)> = HashMap::new();
        let mut resolved = Vec::new();
        for &(i, v, ets) in lines {
            let Some(key) = TEXTS[i].1 else { continue };
            resolved.push(key);
            let t = ets.unwrap_or(ts);
            if t > ts + MAX_AHEAD_MS {
                dropped += 1;
                continue;
            }
            if let Some(c) = cur.get_mut(key) {
                if t <= c.0 {
                    dropped += 1;
                    continue;
                }
                c.0 = t;
                c.1 |= ets.is_none();
            } else {
                if t <= self.known.get(key).copied().unwrap_or(i64::MIN) {
                    dropped += 1;
                    continue;
                }
                cur.insert(key, (t, ets.is_none()));
            }
            out.push((key.to_string(), t, f64::from(v)));
        }
        if fail {
            self.seen_failing.extend(resolved);
            let stale = self.prev.drain().map(String::from).collect();
            // counted as read, though nothing of the scrape is shipped
            return (Vec::new(), stale, dropped);
        }
        let stale = self
            .prev
            .iter()
            .filter(|k| !cur.contains_key(*k))
            .map(|k| k.to_string())
            .collect();
        let mut known = HashMap::new();
        for k in resolved.into_iter().chain(self.seen_failing.drain()) {
            let old = self.known.get(k).copied().unwrap_or(i64::MIN);
            known.insert(k, cur.get(k).map_or(old, |c| c.0));
        }
        self.known = known;
        self.prev = cur
            .iter()
            .filter(|(_, c)| c.1)
            .map(|(k, _)| {
                TEXTS
                    .iter()
                    .find_map(|(_, s)| s.filter(|s| s == k))
                    .unwrap()
            })
            .collect();
        (out, stale, dropped)
    }
}

proptest::proptest! {
    /// The appender (slab, last scrape's order, caches) against the model over
    /// random scrapes: series in shuffled order, appearing and vanishing,
    /// duplicates, explicit timestamps (past, repeated, far future), two texts
    /// of one series, a dropped family, failing bodies and fetches.
    #[test]
    fn agrees_with_a_plain_model_over_random_scrapes(
        scrapes in proptest::collection::vec(
            (
                proptest::collection::vec(
                    (0..TEXTS.len(), 0u8..9, proptest::option::weighted(0.3, -2i64..3)),
                    0..14,
                ),
                0u8..10,
            ),
            1..12,
        )
    ) {
        let rules: Vec<RelabelConfig> =
            serde_saphyr::from_str("- {source_labels: [__name__], regex: drop_me, action: drop}")
                .unwrap();
        let mut c = cfg();
        c.metric_relabel = Arc::new(relabel::compile(&rules, NameValidation::Legacy).unwrap());
        let mut a = Appender::new(c);
        let mut m = Model::default();
        for (n, (lines, fail)) in scrapes.iter().enumerate() {
            let ts = 1_000_000 + 1000 * n as i64;
            // an explicit timestamp: a few scrapes back or ahead, or far in the future
            let lines: Vec<(usize, u8, Option<i64>)> = lines
                .iter()
                .map(|&(i, v, e)| {
                    (i, v, e.map(|d| if d == 2 { ts + 2 * MAX_AHEAD_MS } else { ts + 1000 * d }))
                })
                .collect();
            let mut body = String::new();
            for (i, v, e) in &lines {
                body.push_str(TEXTS[*i].0);
                body.push_str(&format!(" {v}"));
                if let Some(e) = e {
                    body.push_str(&format!(" {e}"));
                }
                body.push('\n');
            }
            let (o, expected) = match fail {
                0 => (a.append(Err("refused".into()), ts, ts, 0.0), m.scrape(&[], ts, true)),
                1 => {
                    body.push_str("not { valid\n");
                    (run(&mut a, &body, ts), m.scrape(&lines, ts, true))
                }
                _ => (run(&mut a, &body, ts), m.scrape(&lines, ts, false)),
            };
            let (want, mut want_stale, want_dropped) = expected;
            let got = samples(&o);
            let mut stale: Vec<String> = got
                .iter()
                .filter(|x| x.2.to_bits() == STALE_NAN)
                .map(|x| x.0.clone())
                .collect();
            let fresh: Vec<_> = got.into_iter().filter(|x| x.2.to_bits() != STALE_NAN).collect();
            stale.sort();
            want_stale.sort();
            proptest::prop_assert_eq!(&fresh, &want, "scrape {} samples:\n{}", n, body);
            proptest::prop_assert_eq!(&stale, &want_stale, "scrape {} stale:\n{}", n, body);
            proptest::prop_assert_eq!(o.stale_markers, want_stale.len());
            proptest::prop_assert_eq!(o.dropped_out_of_order, want_dropped, "scrape {}:\n{}", n, body);
        }
    }
}
