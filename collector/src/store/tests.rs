//! Store-level tests: index semantics, append rules, retention, budget,
//! limits, checkpoints, concurrency, and property tests.

use super::*;

fn l(name: &str, job: &str) -> Labels {
    Labels::new([("__name__", name), ("job", job)])
}

fn bits_eq(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
}

fn names(v: &[SeriesSamples]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|s| s.labels.to_string()).collect();
    out.sort();
    out
}

#[test]
fn append_select_latest() {
    let s = Store::new(StoreOptions::default());
    let a = s.get_or_create(&l("up", "a")).unwrap();
    let b = s.get_or_create(&l("up", "b")).unwrap();
    assert_eq!(s.get_or_create(&l("up", "a")).unwrap(), a);
    s.append(a, 1000, 1.0).unwrap();
    s.append(a, 2000, 2.0).unwrap();
    s.append(b, 1500, STALE_NAN).unwrap();
    assert!(matches!(
        s.append(a, 1500, 0.0),
        Err(AppendError::OutOfOrder { .. })
    ));
    let got = s.select(&[Matcher::equal("__name__", "up")], 0, 1800);
    assert_eq!(got.len(), 2);
    let re = Matcher::regex("job", "a|c", false).unwrap();
    let got = s.select(&[re], 1500, 3000);
    assert_eq!(
        got,
        vec![SeriesSamples {
            labels: l("up", "a"),
            samples: vec![(2000, 2.0)]
        }]
    );
    let latest = s.latest();
    assert_eq!(latest, vec![(l("up", "a"), 2000, 2.0)]);
    assert_eq!(s.series_count(), 2);
    let st = s.stats();
    assert_eq!(st.appended, 3);
    assert_eq!(st.samples, 3);
    assert_eq!(st.refused_out_of_order, 1);
}

#[test]
fn regex_is_anchored_and_dot_matches_newline() {
    let m = Matcher::regex("x", "a.b", false).unwrap();
    assert!(m.matches("a\nb"));
    assert!(!m.matches("xa\nb"));
}

/// Series `{__name__="m", a=…, b=…}` with one sample each.
fn matcher_store() -> Store {
    let s = Store::new(StoreOptions::default());
    for (a, b) in [
        ("1", Some("x")),
        ("2", Some("y")),
        ("3", None),
        ("", Some("x")),
    ] {
        let mut pairs = vec![("__name__", "m")];
        if !a.is_empty() {
            pairs.push(("a", a));
        }
        if let Some(b) = b {
            pairs.push(("b", b));
        }
        let r = s.get_or_create(&Labels::new(pairs)).unwrap();
        s.append(r, 10, 1.0).unwrap();
    }
    let r = s
        .get_or_create(&Labels::new([("__name__", "other"), ("a", "1")]))
        .unwrap();
    s.append(r, 10, 1.0).unwrap();
    s
}

#[test]
fn matchers_follow_prometheus_semantics_for_empty_values() {
    let s = matcher_store();
    let sel = |ms: Vec<Matcher>| names(&s.select(&ms, 0, 100));
    let name = || Matcher::equal("__name__", "m");
    let ne = |n: &str, v: &str| Matcher {
        name: n.into(),
        op: MatchOp::NotEqual(v.into()),
    };
    // b="" selects series without b
    assert_eq!(
        sel(vec![name(), Matcher::equal("b", "")]),
        vec![r#"m{a="3"}"#]
    );
    // b!="" selects series with b
    assert_eq!(sel(vec![name(), ne("b", "")]).len(), 3);
    // b!="x" includes series without b
    assert_eq!(
        sel(vec![name(), ne("b", "x")]),
        vec![r#"m{a="2",b="y"}"#, r#"m{a="3"}"#]
    );
    // a=~"1|" matches a="1" and series without a
    assert_eq!(
        sel(vec![name(), Matcher::regex("a", "1|", false).unwrap()]),
        vec![r#"m{a="1",b="x"}"#, r#"m{b="x"}"#]
    );
    // a!~"1|2" keeps series without a and a="3"
    assert_eq!(
        sel(vec![name(), Matcher::regex("a", "1|2", true).unwrap()]),
        vec![r#"m{a="3"}"#, r#"m{b="x"}"#]
    );
    // a!~".+" = series without a
    assert_eq!(
        sel(vec![Matcher::regex("a", ".+", true).unwrap()]),
        vec![r#"m{b="x"}"#]
    );
    // a=~".*" matches everything, including series without a
    assert_eq!(
        sel(vec![Matcher::regex("a", ".*", false).unwrap()]).len(),
        5
    );
    // a matcher on a label nobody has
    assert!(sel(vec![Matcher::equal("nope", "v")]).is_empty());
    assert_eq!(sel(vec![Matcher::equal("nope", "")]).len(), 5);
    assert_eq!(sel(vec![ne("nope", "v")]).len(), 5);
    // unknown value
    assert!(sel(vec![Matcher::equal("a", "9")]).is_empty());
    // regex is anchored
    assert!(sel(vec![Matcher::regex("b", "x.", false).unwrap()]).is_empty());
    // empty matcher list: every series
    assert_eq!(sel(vec![]).len(), 5);
    // intersection across several labels
    assert_eq!(
        sel(vec![Matcher::equal("a", "1"), Matcher::equal("b", "x")]),
        vec![r#"m{a="1",b="x"}"#]
    );
}

#[test]
fn empty_label_values_are_dropped_from_identity() {
    let s = Store::new(StoreOptions::default());
    let a = s
        .get_or_create(&Labels::new([("__name__", "m"), ("container", "")]))
        .unwrap();
    let b = s.get_or_create(&Labels::new([("__name__", "m")])).unwrap();
    assert_eq!(a, b);
    s.append(a, 5, 1.0).unwrap();
    let got = s.select(&[Matcher::equal("container", "")], 0, 10);
    assert_eq!(got[0].labels, Labels::new([("__name__", "m")]));
    assert_eq!(s.label_names(&[], i64::MIN, i64::MAX), vec!["__name__"]);
}

#[test]
fn label_names_and_values_fast_and_filtered_paths_agree_with_defaults() {
    struct Plain<'a>(&'a Store);
    impl Queryable for Plain<'_> {
        fn select(&self, m: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
            self.0.select(m, mint, maxt)
        }
    }
    let s = matcher_store();
    let r = s
        .get_or_create(&Labels::new([("__name__", "late"), ("c", "z")]))
        .unwrap();
    s.append(r, 1000, 1.0).unwrap();
    let p = Plain(&s);
    let cases: Vec<(Vec<Matcher>, i64, i64)> = vec![
        (vec![], i64::MIN, i64::MAX),
        (vec![], 0, 100),
        (vec![], 500, 2000),
        (vec![], 11, 999),
        (vec![Matcher::equal("__name__", "m")], 0, 2000),
        (vec![Matcher::equal("b", "x")], i64::MIN, i64::MAX),
    ];
    for (m, lo, hi) in cases {
        assert_eq!(
            s.label_names(&m, lo, hi),
            p.label_names(&m, lo, hi),
            "{m:?} {lo} {hi}"
        );
        for n in ["__name__", "a", "b", "c", "zz"] {
            assert_eq!(
                s.label_values(n, &m, lo, hi),
                p.label_values(n, &m, lo, hi),
                "{n} {m:?} {lo} {hi}"
            );
        }
        let mut a = s.series(&m, lo, hi);
        let mut b: Vec<Labels> = p.select(&m, lo, hi).into_iter().map(|x| x.labels).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
    assert_eq!(
        s.label_values("a", &[], i64::MIN, i64::MAX),
        vec!["1", "2", "3"]
    );
    assert_eq!(s.label_names(&[], 500, 2000), vec!["__name__", "c"]);
}

#[test]
fn select_decodes_only_the_requested_range_across_chunks() {
    let s = Store::new(StoreOptions {
        block_samples: 240,
        ..Default::default()
    });
    let r = s.get_or_create(&l("m", "a")).unwrap();
    let mut expect = vec![];
    for i in 0..1000i64 {
        let v = if i % 97 == 0 {
            STALE_NAN
        } else {
            (i * 3) as f64
        };
        s.append(r, i * 10_000, v).unwrap();
        expect.push((i * 10_000, v));
    }
    assert!(s.compact() > 0);
    assert!(s.stats().recompressed_chunks > 0);
    for (lo, hi) in [
        (0, 9_990_000),
        (5_000, 15_000),
        (1_200_000, 1_200_000),
        (2_345_678, 7_000_001),
    ] {
        let got = s.select(&[], lo, hi);
        let want: Vec<(i64, f64)> = expect
            .iter()
            .copied()
            .filter(|(t, _)| *t >= lo && *t <= hi)
            .collect();
        assert!(bits_eq(&got[0].samples, &want), "[{lo}, {hi}]");
    }
    assert!(s.select(&[], 10_000_000, 20_000_000).is_empty());
}

#[test]
fn out_of_order_window_inserts_and_counts_refusals() {
    let s = Store::new(StoreOptions {
        out_of_order_window_ms: 60_000,
        chunk_samples: 10,
        ..Default::default()
    });
    let r = s.get_or_create(&l("m", "a")).unwrap();
    for i in 0..30 {
        s.append(r, 100_000 + i * 10_000, i as f64).unwrap();
    }
    // newest is 390_000: 340_000 is within the window, 300_000 is not
    s.append(r, 345_000, -1.0).unwrap();
    assert!(s.append(r, 300_001, -1.0).is_err());
    // same value at a stored timestamp: accepted, nothing changes
    s.append(r, 380_000, 28.0).unwrap();
    // a different value at a stored, not-newest timestamp: duplicate
    assert!(s.append(r, 380_000, 5.0).is_err());
    // the newest is not replaced either (Prometheus refuses it too)
    assert!(matches!(
        s.append(r, 390_000, 99.0),
        Err(AppendError::Duplicate {
            timestamp_ms: 390_000
        })
    ));
    let st = s.stats();
    assert_eq!(st.refused_out_of_order, 1);
    assert_eq!(st.refused_duplicate, 2);
    let got = &s.select(&[], 0, i64::MAX)[0].samples;
    assert_eq!(got.len(), 31);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(got.contains(&(345_000, -1.0)));
    assert_eq!(got.last(), Some(&(390_000, 29.0)));
    assert!(got.contains(&(380_000, 28.0)));
}

#[test]
fn samples_too_far_in_the_future_are_refused_and_counted() {
    let s = Store::new(StoreOptions {
        max_future_ms: 60_000,
        ..Default::default()
    });
    let r = s.get_or_create(&l("m", "a")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    s.append(r, now, 1.0).unwrap();
    s.append(r, now + 30_000, 2.0).unwrap();
    let ten_years = now + 10 * 365 * 86_400_000;
    assert!(matches!(
        s.append(r, ten_years, 3.0),
        Err(AppendError::TooFarInFuture { .. })
    ));
    assert!(matches!(
        s.check(r, ten_years, 3.0),
        Err(AppendError::TooFarInFuture { .. })
    ));
    let sum = s.append_batch(&[(r, now + 40_000, 4.0), (r, ten_years, 5.0)]);
    assert_eq!((sum.appended, sum.too_far_in_future), (1, 1));
    assert_eq!(s.stats().refused_future, 2);
    // the forged sample did not freeze the series: later samples still go in
    s.append(r, now + 50_000, 6.0).unwrap();
    assert_eq!(s.select(&[], 0, i64::MAX)[0].samples.len(), 4);
}

#[test]
fn retention_trims_hides_refuses_and_removes_empty_series() {
    let s = Store::new(StoreOptions {
        retention_ms: 100_000,
        chunk_samples: 5,
        ..Default::default()
    });
    let a = s.get_or_create(&l("m", "a")).unwrap();
    let b = s.get_or_create_for("agent-1", &l("m", "b")).unwrap();
    for i in 0..50 {
        s.append(a, i * 10_000, i as f64).unwrap();
    }
    s.append(b, 10_000, 1.0).unwrap();
    s.trim(500_000);
    // cut at 400_000: chunks ending before it are gone, samples before it hidden
    let got = &s.select(&[], 0, i64::MAX)[0].samples;
    assert_eq!(got.first(), Some(&(400_000, 40.0)));
    assert!(s.stats().samples < 50, "whole old chunks dropped");
    assert!(s.stats().dropped_chunks_retention > 0);
    assert!(matches!(
        s.append(a, 399_999, 0.0),
        Err(AppendError::OutOfOrder { .. })
    ));
    assert_eq!(s.stats().refused_too_old, 1);
    // b had only old samples: it left the index and the counts
    assert_eq!(s.series_count(), 1);
    assert_eq!(s.stats().removed_series, 1);
    assert!(
        s.select(&[Matcher::equal("job", "b")], i64::MIN, i64::MAX)
            .is_empty()
    );
    assert_eq!(s.label_values("job", &[], i64::MIN, i64::MAX), vec!["a"]);
    // its reference still works: a new sample brings it back
    s.append(b, 600_000, 2.0).unwrap();
    assert_eq!(s.series_count(), 2);
    assert_eq!(s.get_or_create(&l("m", "b")).unwrap(), b);
    assert_eq!(
        s.select(&[Matcher::equal("job", "b")], 0, i64::MAX)[0].samples,
        vec![(600_000, 2.0)]
    );
}

#[test]
fn memory_budget_drops_oldest_sealed_chunks_first() {
    let opts = StoreOptions {
        chunk_samples: 20,
        block_samples: 0,
        ..Default::default()
    };
    // measure what the data costs without a budget
    let free = Store::new(opts.clone());
    let fill = |s: &Store| {
        let refs: Vec<SeriesRef> = (0..20)
            .map(|i| s.get_or_create(&l("m", &i.to_string())).unwrap())
            .collect();
        for t in 0..400i64 {
            for (k, r) in refs.iter().enumerate() {
                s.append(*r, t * 1000 + k as i64, (t * t + k as i64) as f64)
                    .unwrap();
            }
        }
    };
    fill(&free);
    let full = free.stats().bytes;
    let budget = full / 2;
    let s = Store::new(StoreOptions {
        max_bytes: budget,
        ..opts
    });
    fill(&s);
    let st = s.stats();
    assert!(st.bytes <= budget, "{} > {budget}", st.bytes);
    assert!(st.dropped_chunks_budget > 0);
    assert_eq!(st.series, 20);
    // what is left is the newest data, and every series still ends at t=399
    let got = s.select(&[], 0, i64::MAX);
    assert_eq!(got.len(), 20);
    let oldest_kept = got.iter().map(|g| g.samples[0].0).min().unwrap();
    assert!(oldest_kept > 0);
    for g in &got {
        assert_eq!(g.samples.last().unwrap().0 / 1000, 399);
        // no gaps: each series keeps a contiguous tail
        assert!(g.samples.windows(2).all(|w| w[1].0 - w[0].0 == 1000));
    }
}

#[test]
fn cardinality_limits_total_and_per_tenant() {
    let s = Store::new(StoreOptions {
        max_series: 5,
        max_series_per_tenant: 2,
        ..Default::default()
    });
    s.get_or_create_for("a", &l("m", "1")).unwrap();
    s.get_or_create_for("a", &l("m", "2")).unwrap();
    assert!(matches!(
        s.get_or_create_for("a", &l("m", "3")),
        Err(AppendError::SeriesLimit { limit: 2 })
    ));
    // an existing series is found whatever the tenant
    s.get_or_create_for("b", &l("m", "1")).unwrap();
    s.get_or_create_for("b", &l("m", "3")).unwrap();
    s.get_or_create(&l("m", "4")).unwrap();
    s.get_or_create(&l("m", "5")).unwrap();
    assert!(matches!(
        s.get_or_create(&l("m", "6")),
        Err(AppendError::SeriesLimit { limit: 5 })
    ));
    let st = s.stats();
    assert_eq!(st.refused_tenant_limit, 1);
    assert_eq!(st.refused_series_limit, 1);
    assert_eq!(st.series, 5);
}

/// Memory use the guard of the next test measures.
static MEASURED: AtomicU64 = AtomicU64::new(0);

#[test]
fn memory_pressure_refuses_new_series_of_ingest_only() {
    MEASURED.store(100, Ordering::Relaxed);
    let guard = std::sync::Arc::new(crate::memory::MemoryGuard::with_measure(1000, 0.8, || {
        Some(MEASURED.load(Ordering::Relaxed))
    }));
    let s = Store::new(StoreOptions {
        memory_guard: Some(guard.clone()),
        ..Default::default()
    });
    let old = s.get_or_create_for("a", &l("m", "old")).unwrap();
    MEASURED.store(900, Ordering::Relaxed);
    guard.refresh();
    let err = s.get_or_create_for("a", &l("m", "new")).unwrap_err();
    assert!(
        matches!(err, AppendError::MemoryPressure { percent: 80, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("memory_limit"), "{err}");
    // existing series are found and still append
    assert_eq!(s.get_or_create_for("b", &l("m", "old")).unwrap(), old);
    s.append(old, 1000, 1.0).unwrap();
    // recovery, the self-scrape and rules are not refused
    s.get_or_create_trusted_for("a", &l("m", "replayed"))
        .unwrap();
    s.get_or_create(&l("m", "rule")).unwrap();
    // below the fraction minus the hysteresis, new series are let in again
    MEASURED.store(760, Ordering::Relaxed);
    guard.refresh();
    assert!(s.get_or_create_for("a", &l("m", "new")).is_err());
    MEASURED.store(700, Ordering::Relaxed);
    guard.refresh();
    s.get_or_create_for("a", &l("m", "new")).unwrap();
    let st = s.stats();
    assert_eq!(st.refused_memory_pressure, 2);
    assert_eq!(st.series, 4);
}

#[test]
fn series_limit_is_enforced() {
    let s = Store::new(StoreOptions {
        max_series: 1,
        ..Default::default()
    });
    s.get_or_create(&l("a", "1")).unwrap();
    assert!(matches!(
        s.get_or_create(&l("a", "2")),
        Err(AppendError::SeriesLimit { limit: 1 })
    ));
}

#[test]
fn unknown_reference_is_an_error() {
    let s = Store::new(StoreOptions::default());
    assert_eq!(
        s.append(SeriesRef(77), 1, 1.0),
        Err(AppendError::UnknownSeries(SeriesRef(77)))
    );
    let sum = s.append_batch(&[(SeriesRef(3), 1, 1.0)]);
    assert_eq!(sum.unknown, 1);
}

/// Each series' labels and the samples appended to it.
type Expected = Vec<(Labels, Vec<(i64, f64)>)>;

fn filled_store() -> (Store, Expected) {
    let s = Store::new(StoreOptions {
        ..Default::default()
    });
    let mut want = vec![];
    for k in 0..30 {
        let labels = Labels::new([
            ("__name__", "m".to_string()),
            ("k", k.to_string()),
            ("node", format!("n{}", k % 3)),
        ]);
        let r = if k % 2 == 0 {
            s.get_or_create_for("agent", &labels).unwrap()
        } else {
            s.get_or_create(&labels).unwrap()
        };
        let mut v = 0.0;
        let mut samples = vec![];
        for i in 0..(100 + k * 37) as i64 {
            v += (i % 13) as f64 * 0.5;
            let val = if i == 50 { STALE_NAN } else { v };
            s.append(r, 1_700_000_000_000 + i * 10_000 + (i % 3), val)
                .unwrap();
            samples.push((1_700_000_000_000 + i * 10_000 + (i % 3), val));
        }
        want.push((labels, samples));
    }
    s.compact();
    (s, want)
}

#[test]
fn checkpoint_round_trips_chunks_tenants_and_stale_markers() {
    let (s, want) = filled_store();
    let mut buf = Vec::new();
    s.write_checkpoint(&mut buf).unwrap();
    let t = Store::new(StoreOptions {
        max_series_per_tenant: 15,
        ..Default::default()
    });
    let mut r = buf.as_slice();
    t.read_checkpoint(&mut r).unwrap();
    assert!(r.is_empty(), "reads exactly its own bytes");
    for (labels, samples) in &want {
        let ms: Vec<Matcher> = labels.iter().map(|(k, v)| Matcher::equal(k, v)).collect();
        let got = t.select(&ms, i64::MIN, i64::MAX);
        assert_eq!(got.len(), 1);
        assert!(bits_eq(&got[0].samples, samples), "{labels}");
    }
    let (a, b) = (s.stats(), t.stats());
    assert_eq!(
        (a.series, a.samples, a.sealed_chunks),
        (b.series, b.samples, b.sealed_chunks)
    );
    // tenants came back: agent's 15 series fill its limit
    assert!(t.get_or_create_for("agent", &l("new", "1")).is_err());
    // appending continues where the checkpoint ended
    let r0 = t.get_or_create(&want[0].0).unwrap();
    let last = want[0].1.last().unwrap().0;
    t.append(r0, last + 10_000, 1.0).unwrap();
    assert!(t.append(r0, last - 1, 1.0).is_err());
}

#[test]
fn checkpoint_into_a_non_empty_store_merges() {
    let (s, want) = filled_store();
    let mut buf = Vec::new();
    s.write_checkpoint(&mut buf).unwrap();
    let t = Store::new(StoreOptions::default());
    let r = t.get_or_create(&want[1].0).unwrap();
    t.append(r, 1, 7.0).unwrap();
    t.read_checkpoint(&mut buf.as_slice()).unwrap();
    let ms: Vec<Matcher> = want[1]
        .0
        .iter()
        .map(|(k, v)| Matcher::equal(k, v))
        .collect();
    let got = &t.select(&ms, i64::MIN, i64::MAX)[0].samples;
    assert_eq!(got[0], (1, 7.0));
    assert!(bits_eq(&got[1..], &want[1].1));
}

#[test]
fn corrupt_checkpoints_are_named_errors() {
    let (s, _) = filled_store();
    let mut buf = Vec::new();
    s.write_checkpoint(&mut buf).unwrap();
    let err = |b: &[u8]| {
        let t = Store::new(StoreOptions::default());
        let e = t.read_checkpoint(&mut &b[..]).unwrap_err();
        assert_eq!(
            t.series_count(),
            0,
            "nothing installed from a bad checkpoint"
        );
        e.to_string()
    };
    assert!(err(&buf[..buf.len() - 3]).contains("truncated"));
    assert!(err(&buf[..10]).contains("header"));
    assert!(err(b"VGSTXxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").contains("magic"));
    assert!(err(b"VGST1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").contains("version 1"));
    let mut v = buf.clone();
    v[8] = 9;
    assert!(err(&v).contains("version 9"));
    let mut c = buf.clone();
    let mid = c.len() / 2;
    c[mid] ^= 0x10;
    assert!(err(&c).contains("checksum"));
    // a body that passes the checksum but is inconsistent: rebuild the crc
    let mut bad = buf.clone();
    let body_start = 24;
    // claim more series than written
    bad[body_start] = bad[body_start].wrapping_add(1);
    let crc = crc32fast::hash(&bad[body_start..]);
    bad[20..24].copy_from_slice(&crc.to_le_bytes());
    let e = err(&bad);
    assert!(e.contains("series 30"), "{e}");
}

#[test]
fn empty_store_checkpoint_round_trips() {
    let s = Store::new(StoreOptions::default());
    let mut buf = Vec::new();
    s.write_checkpoint(&mut buf).unwrap();
    let t = Store::new(StoreOptions::default());
    t.read_checkpoint(&mut buf.as_slice()).unwrap();
    assert_eq!(t.series_count(), 0);
}

#[test]
fn concurrent_appends_creations_and_queries() {
    use std::sync::Arc;
    let s = Arc::new(Store::new(StoreOptions {
        chunk_samples: 30,
        ..Default::default()
    }));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..200i64 {
                    for k in 0..25 {
                        let r = s.get_or_create(&l("m", &format!("{w}-{k}"))).unwrap();
                        s.append(r, i * 1000, (i * k) as f64).unwrap();
                    }
                }
            })
        })
        .collect();
    let reader = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut seen = 0;
            for _ in 0..200 {
                for series in s.select(&[Matcher::equal("__name__", "m")], 0, i64::MAX) {
                    assert!(series.samples.windows(2).all(|w| w[0].0 < w[1].0));
                    seen += 1;
                }
                s.latest();
                s.label_values("job", &[], 0, 100);
            }
            seen
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    assert_eq!(s.series_count(), 100);
    let st = s.stats();
    assert_eq!(st.appended, 100 * 200);
    assert_eq!(st.samples, 100 * 200);
    for series in s.select(&[], 0, i64::MAX) {
        assert_eq!(series.samples.len(), 200);
    }
}

#[test]
fn memory_usage_walk_agrees_with_counters() {
    let (s, _) = filled_store();
    let m = s.memory_usage();
    let st = s.stats();
    assert_eq!(m.samples, st.samples);
    assert!(m.sample_payload > 0 && m.sample_payload <= m.chunks);
    assert!(m.total >= m.chunks + m.series);
    // the running byte count equals the walked chunk bytes plus the fixed
    // per-series estimate
    let fixed: i64 = {
        let mut f = 0;
        s.for_each_series(|_, x| {
            if !x.data.lock().dead {
                f += x.fixed_bytes();
            }
        });
        f
    };
    assert_eq!(st.bytes as i64, m.chunks as i64 + fixed);
}

mod props {
    use super::*;
    use crate::store::chunk::{HeadChunk, Sealed};
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(STALE_NAN),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            (0i64..1_000_000).prop_map(|v| v as f64),
            (0i64..1000).prop_map(|v| v as f64 / 100.0),
            any::<u64>().prop_map(f64::from_bits),
        ]
    }

    fn samples() -> impl Strategy<Value = Vec<(i64, f64)>> {
        (
            any::<i64>(),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just(10_000i64),
                        9_990i64..10_010,
                        1i64..100,
                        1i64..1_000_000_000,
                        any::<i64>().prop_map(|d| d.wrapping_abs().max(1)),
                    ],
                    value(),
                ),
                1..300,
            ),
        )
            .prop_map(|(start, steps)| {
                let mut t = start;
                let mut out = Vec::new();
                for (d, v) in steps {
                    // stop instead of wrapping: timestamps must increase
                    if !out.is_empty() {
                        match t.checked_add(d) {
                            Some(n) => t = n,
                            None => break,
                        }
                    }
                    out.push((t, v));
                }
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn chunks_round_trip_exactly(s in samples()) {
            let head = HeadChunk::from_samples(&s);
            prop_assert!(bits_eq(&head.samples(), &s));
            let sealed = Sealed::xor_from(&s).unwrap();
            prop_assert!(bits_eq(&sealed.samples().unwrap(), &s));
            if let Some(p) = Sealed::pco_from(&s, usize::MAX) {
                prop_assert!(bits_eq(&p.samples().unwrap(), &s));
            }
        }

        #[test]
        fn store_round_trips_through_appends_compaction_and_checkpoint(s in samples()) {
            let st = Store::new(StoreOptions { chunk_samples: 17, block_samples: 50, ..Default::default() });
            let r = st.get_or_create(&l("m", "p")).unwrap();
            for (t, v) in &s {
                st.append(r, *t, *v).unwrap();
            }
            st.compact();
            let got = st.select(&[], i64::MIN, i64::MAX);
            prop_assert!(bits_eq(&got[0].samples, &s));
            let mut buf = Vec::new();
            st.write_checkpoint(&mut buf).unwrap();
            let back = Store::new(StoreOptions::default());
            back.read_checkpoint(&mut buf.as_slice()).unwrap();
            prop_assert!(bits_eq(&back.select(&[], i64::MIN, i64::MAX)[0].samples, &s));
        }

        #[test]
        fn random_bytes_never_panic_the_checkpoint_reader(b in prop::collection::vec(any::<u8>(), 0..2000)) {
            let st = Store::new(StoreOptions::default());
            let _ = st.read_checkpoint(&mut b.as_slice());
        }

        #[test]
        fn damaged_valid_checkpoints_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), fix_crc in any::<bool>()) {
            let st = Store::new(StoreOptions { chunk_samples: 20, block_samples: 60, ..Default::default() });
            for k in 0..3 {
                let r = st.get_or_create(&l("m", &k.to_string())).unwrap();
                for i in 0..100i64 {
                    st.append(r, i * 1000 + k, (i * i) as f64 / 3.0).unwrap();
                }
            }
            st.compact();
            let mut buf = Vec::new();
            st.write_checkpoint(&mut buf).unwrap();
            for (i, x) in flips {
                let i = 24 + i.index(buf.len() - 24);
                buf[i] ^= x | 1;
            }
            if fix_crc {
                // get past the checksum so the parser and decoders see the damage
                let crc = crc32fast::hash(&buf[24..]);
                buf[20..24].copy_from_slice(&crc.to_le_bytes());
            }
            let back = Store::new(StoreOptions::default());
            if back.read_checkpoint(&mut buf.as_slice()).is_ok() {
                // whatever was accepted reads without panicking
                for series in back.select(&[], i64::MIN, i64::MAX) {
                    prop_assert!(series.samples.windows(2).all(|w| w[0].0 < w[1].0));
                }
            }
        }

        #[test]
        fn out_of_order_streams_match_a_sorted_model(
            ops in prop::collection::vec((0i64..2_000, value()), 1..300),
            window in prop_oneof![Just(0i64), 0i64..500, Just(10_000i64)],
        ) {
            let st = Store::new(StoreOptions { out_of_order_window_ms: window, chunk_samples: 7, ..Default::default() });
            let r = st.get_or_create(&l("m", "o")).unwrap();
            let mut model: std::collections::BTreeMap<i64, u64> = Default::default();
            for (t, v) in ops {
                let newest = model.keys().next_back().copied();
                let res = st.append(r, t, v);
                match newest {
                    None => { prop_assert!(res.is_ok()); model.insert(t, v.to_bits()); }
                    Some(n) if t > n => { prop_assert!(res.is_ok()); model.insert(t, v.to_bits()); }
                    Some(n) if t == n => prop_assert_eq!(res.is_ok(), model[&t] == v.to_bits()),
                    Some(n) if n - t > window => prop_assert!(res.is_err()),
                    Some(_) => match model.get(&t) {
                        Some(b) if *b == v.to_bits() => prop_assert!(res.is_ok()),
                        Some(_) => prop_assert!(res.is_err()),
                        None => { prop_assert!(res.is_ok()); model.insert(t, v.to_bits()); }
                    },
                }
            }
            let got = &st.select(&[], i64::MIN, i64::MAX)[0].samples;
            let want: Vec<(i64, u64)> = model.into_iter().collect();
            let got_bits: Vec<(i64, u64)> = got.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            prop_assert_eq!(got_bits, want);
        }
    }
}
