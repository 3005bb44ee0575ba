//! Property tests over the log formats: no input panics a parser; CRI and
//! Docker messages split into partial pieces and interleaved with the other
//! stream come out whole, in order; resuming at any handed-over
//! `end_offset` (with its skip marks) yields exactly the records after it.
//! Plus huge lines, binary garbage and invalid UTF-8 through a real tailer.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod logs_support;

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use logs_support::*;
use proptest::prelude::*;
use vigil_agent::logs::assemble::{Assembler, Record, TRUNCATION_MARKER};
use vigil_agent::logs::parse::{Piece, Stream, cri, docker};
use vigil_agent::logs::{level, parse::Format};

/// Runs a file's bytes through `parse` and an assembler from `from` on
/// (like a reader resuming there); garbage lines are counted.
fn assemble(
    data: &[u8],
    from: usize,
    skip: [u64; 2],
    max_line: usize,
    parse: fn(&[u8]) -> Result<Piece<'_>, vigil_agent::logs::parse::ParseError>,
) -> (Vec<Record>, usize) {
    let mut a = Assembler::new(max_line, skip);
    let mut out = Vec::new();
    let mut garbage = 0;
    let mut pos = from;
    while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
        let line = &data[pos..pos + i];
        let end = pos + i + 1;
        match parse(line) {
            Ok(p) => a.push(pos as u64, end as u64, p, false, &mut |r| out.push(r)),
            Err(_) => garbage += 1,
        }
        pos = end;
    }
    a.finish(pos as u64, &mut |r| out.push(r));
    (out, garbage)
}

/// Messages (stream, pieces) interleaved by `order` (true: stdout next).
fn interleave(msgs: &[(bool, Vec<Vec<u8>>)], order: &[bool]) -> Vec<(bool, bool, Vec<u8>, usize)> {
    // (is_stdout, partial, bytes, message index)
    let mut queues: [std::collections::VecDeque<(bool, Vec<u8>, usize)>; 2] = Default::default();
    for (i, (out, pieces)) in msgs.iter().enumerate() {
        let q = &mut queues[usize::from(!*out)];
        for (k, p) in pieces.iter().enumerate() {
            q.push_back((k + 1 < pieces.len(), p.clone(), i));
        }
    }
    let mut events = Vec::new();
    let mut o = order.iter().cycle();
    while !queues[0].is_empty() || !queues[1].is_empty() {
        let pick = if queues[0].is_empty() {
            1
        } else if queues[1].is_empty() {
            0
        } else {
            usize::from(!*o.next().unwrap_or(&true))
        };
        if let Some((partial, bytes, i)) = queues[pick].pop_front() {
            events.push((pick == 0, partial, bytes, i));
        }
    }
    events
}

fn msg_strategy() -> impl Strategy<Value = (bool, Vec<Vec<u8>>)> {
    (
        any::<bool>(),
        prop::collection::vec(
            prop::collection::vec(
                any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
                0..40,
            ),
            1..4,
        ),
    )
}

/// The records we expect: messages in the order their first piece appears.
fn expected(
    msgs: &[(bool, Vec<Vec<u8>>)],
    events: &[(bool, bool, Vec<u8>, usize)],
    max: usize,
) -> Vec<(Stream, Vec<u8>)> {
    let mut order = Vec::new();
    for e in events {
        if !order.contains(&e.3) {
            order.push(e.3);
        }
    }
    order
        .into_iter()
        .map(|i| {
            let (out, pieces) = &msgs[i];
            // Pieces are appended until one does not fit; that one is cut at
            // a character start (within the piece) and the rest dropped.
            let mut m: Vec<u8> = Vec::new();
            let mut cut_any = false;
            for p in pieces {
                let room = max - m.len();
                if p.len() <= room {
                    m.extend_from_slice(p);
                    continue;
                }
                let mut cut = room;
                let mut back = 0;
                while cut > 0 && back < 3 && (p[cut] & 0xC0) == 0x80 {
                    cut -= 1;
                    back += 1;
                }
                if (p[cut] & 0xC0) == 0x80 {
                    cut = room;
                }
                m.extend_from_slice(&p[..cut]);
                cut_any = true;
                break;
            }
            if cut_any {
                m.extend_from_slice(TRUNCATION_MARKER);
            }
            (if *out { Stream::Stdout } else { Stream::Stderr }, m)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = cri::parse(&b);
        let _ = docker::parse(&b);
        let _ = vigil_common::time::parse_rfc3339_ns(&b);
        let _ = Format::detect(&b);
        let _ = level::detect(&b);
        let _ = vigil_agent::logs::identity::fingerprint(&b);
    }

    #[test]
    fn cri_near_misses_never_panic(
        ts in "[0-9T:.Z+-]{0,40}",
        stream in "(stdout|stderr|std|)",
        tag in "(P|F|P:x|X|)",
        msg in prop::collection::vec(any::<u8>(), 0..50),
    ) {
        let mut line = format!("{ts} {stream} {tag} ").into_bytes();
        line.extend_from_slice(&msg);
        let _ = cri::parse(&line);
    }

    #[test]
    fn cri_partials_reassemble_and_resume_exactly(
        msgs in prop::collection::vec(msg_strategy(), 1..12),
        order in prop::collection::vec(any::<bool>(), 1..16),
        garbage_at in prop::collection::vec(any::<u16>(), 0..3),
        max_line in prop::sample::select(vec![8usize, 64, 1 << 20]),
    ) {
        let events = interleave(&msgs, &order);
        let mut data = Vec::new();
        for (k, (out, partial, bytes, _)) in events.iter().enumerate() {
            if garbage_at.iter().any(|g| (*g as usize) % (events.len() + 1) == k) {
                data.extend_from_slice(b"\x00\xffnot a cri line\n");
            }
            data.extend_from_slice(ts(k as u64).as_bytes());
            data.extend_from_slice(if *out { b" stdout " } else { b" stderr " });
            data.extend_from_slice(if *partial { b"P " } else { b"F " });
            data.extend_from_slice(bytes);
            data.push(b'\n');
        }
        let (recs, garbage) = assemble(&data, 0, [0; 2], max_line, cri::parse);
        let got: Vec<(Stream, Vec<u8>)> = recs.iter().map(|r| (r.stream, r.msg.clone())).collect();
        prop_assert_eq!(got, expected(&msgs, &events, max_line));
        prop_assert!(garbage <= garbage_at.len());
        // Offsets grow strictly, end offsets never fall.
        for w in recs.windows(2) {
            prop_assert!(w[1].offset > w[0].offset);
            prop_assert!(w[1].end_offset >= w[0].end_offset);
        }
        // Resuming after any record yields exactly the ones after it.
        for (j, r) in recs.iter().enumerate() {
            let (again, _) = assemble(&data, r.end_offset as usize, r.skip_until, max_line, cri::parse);
            let a: Vec<(u64, Vec<u8>)> = again.iter().map(|x| (x.offset, x.msg.clone())).collect();
            let b: Vec<(u64, Vec<u8>)> = recs[j + 1..].iter().map(|x| (x.offset, x.msg.clone())).collect();
            prop_assert_eq!(a, b, "resume after record {}", j);
        }
    }

    #[test]
    fn docker_splits_reassemble(
        msgs in prop::collection::vec((any::<bool>(), prop::collection::vec("[^\n]{0,30}", 1..4)), 1..10),
        order in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let msgs: Vec<(bool, Vec<Vec<u8>>)> = msgs
            .into_iter()
            .map(|(o, p)| (o, p.into_iter().map(String::into_bytes).collect()))
            .collect();
        let events = interleave(&msgs, &order);
        let mut data = Vec::new();
        for (k, (out, partial, bytes, _)) in events.iter().enumerate() {
            let mut log = String::from_utf8(bytes.clone()).unwrap();
            if !partial {
                log.push('\n');
            }
            let v = serde_json::json!({
                "log": log,
                "stream": if *out { "stdout" } else { "stderr" },
                "time": ts(k as u64),
            });
            data.extend_from_slice(v.to_string().as_bytes());
            data.push(b'\n');
        }
        let (recs, garbage) = assemble(&data, 0, [0; 2], 1 << 20, docker::parse);
        prop_assert_eq!(garbage, 0);
        let got: Vec<(Stream, Vec<u8>)> = recs.iter().map(|r| (r.stream, r.msg.clone())).collect();
        prop_assert_eq!(got, expected(&msgs, &events, 1 << 20));
    }
}

#[test]
fn docker_sixteen_kib_splits_of_one_long_line_rejoin() {
    let msg: String = (0..40_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut data = Vec::new();
    let chunks: Vec<&str> = msg
        .as_bytes()
        .chunks(16 << 10)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    for (k, c) in chunks.iter().enumerate() {
        let log = if k + 1 == chunks.len() {
            format!("{c}\n")
        } else {
            c.to_string()
        };
        let v =
            serde_json::json!({"log": log, "stream": "stdout", "time": "2026-11-22T10:48:32.5Z"});
        data.extend_from_slice(v.to_string().as_bytes());
        data.push(b'\n');
    }
    let (recs, garbage) = assemble(&data, 0, [0; 2], 256 << 10, docker::parse);
    assert_eq!(garbage, 0);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].msg, msg.as_bytes());
    assert_eq!((recs[0].offset, recs[0].end_offset), (0, data.len() as u64));
    assert!(matches!(
        docker::parse(&data[..data.iter().position(|b| *b == b'\n').unwrap()])
            .unwrap()
            .msg,
        Cow::Borrowed(_)
    ));
}

/// Huge lines, garbage and invalid UTF-8 through the real reader: cut with a
/// marker and counted, skipped and counted, kept lossily and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_garbage_and_invalid_lines_through_the_tailer() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = pod_dir(root.path(), "ns", "p", "c");
    let mut data = Vec::new();
    data.extend_from_slice(cri_line(0, "stdout").as_bytes());
    // 3 MiB in one raw line (more than the reader ever buffers).
    data.extend_from_slice(format!("{} stdout F ", ts(1)).as_bytes());
    data.extend(std::iter::repeat_n(b'x', 3 << 20));
    data.push(b'\n');
    data.extend_from_slice(cri_line(2, "stdout").as_bytes());
    // 1 MiB of binary garbage without a newline in between, then a line end.
    data.extend((0..(1u32 << 20)).map(|i| (i % 251) as u8 | 0x80));
    data.push(b'\n');
    data.extend_from_slice(b"garbage that is short\n");
    data.extend_from_slice(format!("{} stderr F bad ", ts(3)).as_bytes());
    data.extend_from_slice(b"\xff\xfe utf8\n");
    data.extend_from_slice(cri_line(4, "stdout").as_bytes());
    std::fs::write(dir.join("0.log"), &data).unwrap();
    let mut cfg = logs_config(&[POD_GLOB]);
    cfg.max_line_bytes = 64 << 10;
    let run = Running::start(&cfg, root.path(), state.path(), ack_all());
    assert!(
        run.wait_for(Duration::from_secs(20), |r| r.len() >= 5)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = run.metrics.clone();
    let got = run.stop().await;
    assert_eq!(
        got.len(),
        5,
        "{:?}",
        got.iter().map(|e| e.line.len()).collect::<Vec<_>>()
    );
    assert_eq!(seq_of(&got[0].line), Some(0));
    assert!(
        got[1].line.starts_with("xxx")
            && got[1]
                .line
                .ends_with(std::str::from_utf8(TRUNCATION_MARKER).unwrap())
    );
    assert_eq!(got[1].line.len(), (64 << 10) + TRUNCATION_MARKER.len());
    assert_eq!(seq_of(&got[2].line), Some(2));
    assert_eq!(got[3].line, "bad \u{fffd}\u{fffd} utf8");
    assert_eq!(got[3].stream.get("stream"), Some("stderr"));
    assert_eq!(seq_of(&got[4].line), Some(4));
    // Offsets: the huge record spans its whole raw line.
    assert_eq!(got[2].offset, got[1].end_offset);
    assert_eq!(m.truncated_lines.load(Relaxed), 1);
    assert_eq!(m.garbage_lines.load(Relaxed), 2);
    assert_eq!(m.invalid_utf8_lines.load(Relaxed), 1);
}
