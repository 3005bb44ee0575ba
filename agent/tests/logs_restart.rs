//! Crash and restart: positions advance only with acknowledgements, survive
//! the process, and a restarted tailer repeats only what was not
//! acknowledged, at the same `(source, offset)` (what the collector drops).

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod logs_support;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logs_support::*;
use vigil_agent::ship::{LogRecord, SourceKey};

/// Numbered lines where every 7th stdout message is split into three `P`/`F`
/// pieces with a stderr line (its own number) between the pieces.
fn write_mixed(path: &Path, from: u64, n: u64) -> u64 {
    let mut out = Vec::new();
    let mut seq = from;
    while seq < from + n {
        if seq.is_multiple_of(7) && seq + 1 < from + n {
            let line = cri_line(seq, "stdout");
            let (head, msg) = line.split_at(line.find(" F ").unwrap());
            let msg = &msg[3..msg.len() - 1];
            let (a, rest) = msg.split_at(20);
            let (b, c) = rest.split_at(30);
            writeln!(out, "{head} P {a}").unwrap();
            out.extend_from_slice(cri_line(seq + 1, "stderr").as_bytes());
            writeln!(out, "{head} P {b}").unwrap();
            writeln!(out, "{head} F {c}").unwrap();
            seq += 2;
        } else {
            out.extend_from_slice(cri_line(seq, "stdout").as_bytes());
            seq += 1;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(&out).unwrap();
    seq
}

/// Positions saved in the checkpoint file, by source.
fn saved(state: &Path) -> HashMap<SourceKey, u64> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("logs/checkpoints.json")).unwrap())
            .unwrap();
    v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                SourceKey {
                    path: r["path"].as_str().unwrap().to_string(),
                    device: r["device"].as_u64().unwrap(),
                    inode: r["inode"].as_u64().unwrap(),
                    fingerprint: r["fingerprint"].as_u64().unwrap(),
                },
                r["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// What the collector would keep: one line per (source, offset). Asserts a
/// repeat always has the same position and content, and every number once.
fn dedup(runs: &[&[LogRecord]], total: u64) -> usize {
    let mut by_pos: HashMap<(SourceKey, u64), &str> = HashMap::new();
    let mut repeats = 0;
    for e in runs.iter().flat_map(|r| r.iter()) {
        if let Some(prev) = by_pos.insert(((*e.source).clone(), e.offset), &e.line) {
            assert_eq!(prev, e.line, "same position, different content");
            repeats += 1;
        }
    }
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for line in by_pos.values() {
        *counts
            .entry(seq_of(line).expect("intact line"))
            .or_default() += 1;
    }
    let missing = (0..total).filter(|s| !counts.contains_key(s)).count();
    assert_eq!(missing, 0, "lines lost across the restart");
    assert!(
        counts.values().all(|c| *c == 1),
        "a line kept twice at different positions"
    );
    repeats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_with_unacked_entries_loses_nothing_and_repeats_only_dedupable() {
    let _heavy = heavy().await;
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let a = pod_dir(root.path(), "ns", "pa", "c").join("0.log");
    let b = pod_dir(root.path(), "ns", "pb", "c").join("0.log");
    let end_a = write_mixed(&a, 0, 20_000);
    let end_b = write_mixed(&b, end_a, 20_000);
    let cfg = logs_config(&[POD_GLOB]);

    // Run 1 acknowledges only numbers below 4999 and 24998, then crashes.
    // Both bounds fall right after a split stdout message whose stderr line
    // sits between its pieces: the saved position is inside that message,
    // and the restart must skip its remaining pieces (else a fragment would
    // arrive as a line of its own, which `dedup` rejects).
    assert_eq!((4_998 % 7, 24_997 % 7), (0, 0));
    let policy: AckPolicy = Arc::new(|e: &LogRecord| {
        let s = seq_of(&e.line).unwrap_or(0);
        s < 4_999 || (20_000..24_998).contains(&s)
    });
    let run = Running::start(&cfg, root.path(), state.path(), policy);
    assert!(
        run.wait_seqs(Duration::from_secs(30), |s| s.len() as u64 == end_b)
            .await
    );
    // Let a checkpoint write happen (at most one per second), then crash.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = run.kill().await;
    let ckpt = saved(state.path());
    assert_eq!(ckpt.len(), 2);
    for (k, off) in &ckpt {
        assert!(*off > 0, "acknowledged positions were saved for {}", k.path);
        let size = std::fs::metadata(root.path().join(k.path.trim_start_matches('/')))
            .unwrap()
            .len();
        assert!(*off < size, "unacknowledged data must not be checkpointed");
    }

    // More lines while it is down.
    let end_a2 = write_mixed(&a, end_b, 3_000);
    let total = end_a2;

    // Run 2 acknowledges everything.
    let run = Running::start(&cfg, root.path(), state.path(), ack_all());
    assert!(
        run.wait_seqs(Duration::from_secs(30), |s| (4_999..20_000)
            .all(|n| s.contains(&n))
            && (24_998..total).all(|n| s.contains(&n)))
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = run.stop().await;
    // Nothing before a saved position is read again.
    for e in &second {
        assert!(
            e.offset >= ckpt[&e.source],
            "re-read acknowledged data in {}",
            e.source.path
        );
    }
    let repeats = dedup(&[&first, &second], total);
    assert!(repeats > 0, "the unacknowledged entries are read again");
    println!(
        "{} + {} entries, {repeats} repeats dropped by (source, offset)",
        first.len(),
        second.len()
    );

    // A clean stop saved everything: a third run has nothing to send.
    let run = Running::start(&cfg, root.path(), state.path(), ack_all());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(run.stop().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_and_gzipped_while_down_resumes_inside_the_gz() {
    let _heavy = heavy().await;
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = pod_dir(root.path(), "ns", "p", "c");
    let live = dir.join("0.log");
    let end = write_mixed(&live, 0, 10_000);
    let cfg = logs_config(&[POD_GLOB]);
    assert_eq!(3_997 % 7, 0);
    let policy: AckPolicy = Arc::new(|e: &LogRecord| seq_of(&e.line).unwrap_or(0) < 3_998);
    let run = Running::start(&cfg, root.path(), state.path(), policy);
    assert!(
        run.wait_seqs(Duration::from_secs(30), |s| s.len() as u64 == end)
            .await
    );
    let first = run.stop().await;

    // kubelet rotates and compresses while the agent is down; a second
    // rotation happens too (never seen as a plain file).
    let r1 = dir.join("0.log.20261122-100000");
    std::fs::rename(&live, &r1).unwrap();
    let end2 = write_mixed(&live, end, 2_000);
    let r2 = dir.join("0.log.20261122-100100");
    std::fs::rename(&live, &r2).unwrap();
    for r in [&r1, &r2] {
        let gz = r.with_extension(format!("{}.gz", r.extension().unwrap().to_string_lossy()));
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(&std::fs::read(r).unwrap()).unwrap();
        enc.finish().unwrap();
        std::fs::remove_file(r).unwrap();
    }
    let total = write_mixed(&live, end2, 2_000);

    let run = Running::start(&cfg, root.path(), state.path(), ack_all());
    assert!(
        run.wait_seqs(Duration::from_secs(30), |s| (3_998..total)
            .all(|n| s.contains(&n)))
            .await,
        "lines missing after the restart"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = run.stop().await;
    dedup(&[&first, &second], total);
    // Resumed inside the .gz: the acknowledged part was not sent again.
    assert!(second.iter().all(|e| seq_of(&e.line).unwrap() >= 3_998));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_from_the_end_when_configured() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let live = pod_dir(root.path(), "ns", "p", "c").join("0.log");
    let end = write_mixed(&live, 0, 1_000);
    let mut cfg = logs_config(&[POD_GLOB]);
    cfg.read_from_start = false;
    let run = Running::start(&cfg, root.path(), state.path(), ack_all());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let end2 = write_mixed(&live, end, 500);
    assert!(
        run.wait_seqs(Duration::from_secs(10), |s| s.len() == 500)
            .await
    );
    let got = run.stop().await;
    assert!(got.iter().all(|e| seq_of(&e.line).unwrap() >= end));
    // Not a first start any more: what was written while down is read.
    let total = write_mixed(&live, end2, 500);
    let run = Running::start(&cfg, root.path(), state.path(), ack_all());
    assert!(
        run.wait_seqs(Duration::from_secs(10), |s| s.len() == 500)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = run.stop().await;
    let seqs: Vec<u64> = got.iter().map(|e| seq_of(&e.line).unwrap()).collect();
    assert!(
        seqs.iter().all(|s| (end2..total).contains(s)),
        "{:?}",
        &seqs[..5.min(seqs.len())]
    );
}
