use super::logql::{self, Direction, Stats};
use super::*;

fn log(stream: &[(&str, &str)], src: u64, off: u64, ts: i64, line: &str) -> IngestedLog {
    IngestedLog {
        stream: Labels::new(stream.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
        source_id: src,
        source_path: "/x.log".into(),
        offset: off,
        end_offset: off + line.len() as u64 + 1,
        timestamp_ns: ts,
        line: line.into(),
    }
}

const A: &[(&str, &str)] = &[("container", "a"), ("stream", "stdout")];
const B: &[(&str, &str)] = &[("container", "b"), ("stream", "stderr")];

fn small() -> LogStoreOptions {
    LogStoreOptions {
        chunk_bytes: 200,
        ..Default::default()
    }
}

fn lines(st: &LogStore, q: &str) -> Vec<String> {
    let logql::Query::Log(sel) = logql::parse(q).unwrap() else {
        panic!("not a log query")
    };
    let mut stats = Stats::default();
    logql::select_logs(
        st,
        &sel,
        (0, i64::MAX),
        10_000,
        Direction::Forward,
        &mut stats,
        &logql::Control::unbounded(),
    )
    .unwrap()
    .into_iter()
    .flat_map(|s| s.entries.into_iter().map(|e| e.1))
    .collect()
}

#[test]
fn dedups_on_source_and_offset_and_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let st = LogStore::open(d.path(), small()).unwrap();
    let batch: Vec<_> = (0..50)
        .map(|i| log(A, 7, i * 10, 1_000 + i as i64, &format!("line {i}")))
        .collect();
    assert_eq!(st.append(&batch), 50);
    // a retransmission of the second half
    assert_eq!(st.append(&batch[25..]), 0);
    assert_eq!(st.stats.duplicates.load(Ordering::Relaxed), 25);
    st.checkpoint().unwrap();
    drop(st);
    let st = LogStore::open(d.path(), small()).unwrap();
    // WAL replay after a restart re-delivers: still dropped
    assert_eq!(st.append(&batch), 0);
    let got = lines(&st, r#"{container="a"}"#);
    assert_eq!(got.len(), 50);
    assert_eq!(got[0], "line 0");
    assert_eq!(got[49], "line 49");
}

#[test]
fn two_streams_of_one_source_keep_separate_watermarks() {
    let d = tempfile::tempdir().unwrap();
    let st = LogStore::open(d.path(), small()).unwrap();
    // stderr at higher offsets is stored first; stdout's lower ones are new
    st.append(&[log(B, 1, 100, 5, "err")]);
    assert_eq!(st.append(&[log(A, 1, 50, 4, "out")]), 1);
}

#[test]
fn torn_tail_is_cut_and_the_rest_kept() {
    let d = tempfile::tempdir().unwrap();
    let st = LogStore::open(d.path(), small()).unwrap();
    for i in 0..40u64 {
        st.append(&[log(A, 1, i, i as i64, &"x".repeat(30))]);
    }
    st.checkpoint().unwrap();
    drop(st);
    // damage the end of the newest non-empty segment
    let mut segs: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 5).unwrap();
    let st = LogStore::open(d.path(), small()).unwrap();
    let got = lines(&st, r#"{container="a"}"#);
    assert!(!got.is_empty() && got.len() < 40, "{}", got.len());
    // what was cut is accepted again (the WAL re-delivers it)
    let again: Vec<_> = (0..40u64)
        .map(|i| log(A, 1, i, i as i64, &"x".repeat(30)))
        .collect();
    assert_eq!(st.append(&again), 40 - got.len());
    assert_eq!(lines(&st, r#"{container="a"}"#).len(), 40);
}

#[test]
fn filters_selectors_and_direction() {
    let d = tempfile::tempdir().unwrap();
    let st = LogStore::open(d.path(), small()).unwrap();
    for i in 0..20u64 {
        let line = if i % 2 == 0 {
            "level=error boom"
        } else {
            "level=info ok"
        };
        st.append(&[log(A, 1, i, i as i64 * 1_000, &format!("{line} {i}"))]);
        st.append(&[log(B, 2, i, i as i64 * 1_000 + 1, &format!("{line} {i}"))]);
    }
    assert_eq!(lines(&st, r#"{container="a"} |= "error""#).len(), 10);
    assert_eq!(lines(&st, r#"{container=~"a|b"} != "error""#).len(), 20);
    assert_eq!(
        lines(&st, r#"{container!="a", stream=~".+"} |~ "err.r" != "1""#).len(),
        5
    );
    assert_eq!(lines(&st, r#"{container="a"} !~ "^level""#).len(), 0);
    let logql::Query::Log(sel) = logql::parse(r#"{container="a"}"#).unwrap() else {
        panic!()
    };
    let mut s = Stats::default();
    let back = logql::select_logs(
        &st,
        &sel,
        (0, 10_000),
        3,
        Direction::Backward,
        &mut s,
        &logql::Control::unbounded(),
    )
    .unwrap();
    let ts: Vec<i64> = back[0].entries.iter().map(|e| e.0).collect();
    // [start, end): the newest three before 10 µs
    assert_eq!(ts, vec![9_000, 8_000, 7_000]);
}

#[test]
fn metric_queries() {
    let d = tempfile::tempdir().unwrap();
    let st = LogStore::open(d.path(), small()).unwrap();
    let s = 1_000_000_000i64;
    for i in 0..60u64 {
        st.append(&[log(A, 1, i, i as i64 * s, "abcd")]);
        if i % 2 == 0 {
            st.append(&[log(B, 2, i, i as i64 * s, "ab")]);
        }
    }
    let run = |q: &str, t: i64| {
        let logql::Query::Metric(e) = logql::parse(q).unwrap() else {
            panic!()
        };
        let mut stats = Stats::default();
        logql::eval_metric(&st, &e, t, t, s, &mut stats, &logql::Control::unbounded()).unwrap()
    };
    // (49 s, 59 s]: 10 lines of A, 5 of B
    let r = run(r#"count_over_time({container=~"a|b"}[10s])"#, 59 * s);
    let mut v: Vec<f64> = r.iter().map(|x| x.1[0].1).collect();
    v.sort_by(f64::total_cmp);
    assert_eq!(v, vec![5.0, 10.0]);
    let r = run(r#"sum(count_over_time({container=~"a|b"}[10s]))"#, 59 * s);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1[0].1, 15.0);
    let r = run(r#"sum by (stream) (rate({container=~"a|b"}[10s]))"#, 59 * s);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0.get("stream"), Some("stderr"));
    assert_eq!(r[0].1[0].1, 0.5);
    let r = run(r#"bytes_over_time({container="a"}[10s])"#, 59 * s);
    assert_eq!(r[0].1[0].1, 40.0);
    let r = run(r#"bytes_rate({container="a"}[10s])"#, 59 * s);
    assert_eq!(r[0].1[0].1, 4.0);
    let r = run(
        r#"topk(1, count_over_time({container=~"a|b"}[10s]))"#,
        59 * s,
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0.get("container"), Some("a"));
    let r = run(
        r#"max without (container, stream) (count_over_time({container=~"a|b"}[10s]))"#,
        59 * s,
    );
    assert_eq!((r.len(), r[0].1[0].1), (1, 10.0));
    // no lines in the window: no point (not zero)
    assert!(run(r#"count_over_time({container="a"}[10s])"#, 500 * s).is_empty());
}

#[test]
fn parse_errors_name_the_position() {
    for (q, pos) in [
        (r#"{container="a""#, 14),
        (r#"{container="a"} | json"#, 16),
        (r#"rate({container="a"}[5x])"#, 21),
        (r#"{container=~"("}"#, 1),
        (r#"{container=""}"#, 0),
        (r#"histogram_quantile(0.9, x)"#, 0),
    ] {
        let e = logql::parse(q).unwrap_err();
        assert_eq!(e.pos, pos, "{q}: {e}");
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let sel = r#"count_over_time({container="a"}[1m])"#;
    // the deepest accepted query parses on a 2 MiB stack (tokio's default)
    let ok = format!(
        "{}{sel}{}",
        "sum(".repeat(logql::MAX_DEPTH - 1),
        ")".repeat(logql::MAX_DEPTH - 1)
    );
    let deep = format!("{}{sel}{}", "sum(".repeat(5000), ")".repeat(5000));
    let parens = format!("{}{sel}{}", "(".repeat(8000), ")".repeat(8000));
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            assert!(logql::parse(&ok).is_ok());
            for q in [deep, parens] {
                let e = logql::parse(&q).unwrap_err();
                assert!(e.msg.contains("too deeply nested"), "{e}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn retention_by_bytes_drops_oldest_segments() {
    let d = tempfile::tempdir().unwrap();
    let st = LogStore::open(
        d.path(),
        LogStoreOptions {
            chunk_bytes: 1_000,
            segment_bytes: 4_000,
            max_bytes: 20_000,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..3_000u64 {
        st.append(&[log(
            A,
            1,
            i,
            i as i64,
            &format!("{i:08} {}", "y".repeat(40)),
        )]);
    }
    st.flush().unwrap();
    st.trim(0);
    assert!(st.disk_bytes() <= 24_000, "{}", st.disk_bytes());
    let got = lines(&st, r#"{container="a"}"#);
    assert!(!got.is_empty() && got.len() < 3_000);
    // what is left is the newest
    assert!(got.last().unwrap().starts_with("00002999"));
    assert!(st.stats.retention_deleted_segments.load(Ordering::Relaxed) > 0);
}

proptest::proptest! {
    #[test]
    fn the_parser_never_panics(q in "\\PC{0,80}") {
        let _ = logql::parse(&q);
    }

    #[test]
    fn the_parser_never_panics_on_near_queries(
        a in "[a-z_]{1,8}", op in "(=|!=|=~|!~)", v in "\\PC{0,10}", f in "(\\|=|!=|\\|~|!~)", r in "[0-9]{1,3}[smhx]?"
    ) {
        let _ = logql::parse(&format!("{{{a}{op}\"{v}\"}} {f} \"{v}\""));
        let _ = logql::parse(&format!("sum by ({a}) (rate({{{a}{op}\"{v}\"}}[{r}]))"));
    }
}
