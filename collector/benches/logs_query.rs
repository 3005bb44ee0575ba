//! Log query latency: a `|=` line filter over 1 GiB of stored log lines
//! (~200-byte lines in 100 streams, through the real log store: zstd chunks
//! in segment files, read back from disk/page cache), plus the store's write
//! rate and compression. A bench binary: one fill, then timed queries.
//!
//! ```text
//! cargo bench -p vigil-collector --bench logs_query
//! LOGS_BENCH_BYTES=1073741824 LOGS_BENCH_STREAMS=100
//! ```

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use vigil_collector::ingest::{IngestedLog, LogSink};
use vigil_collector::logs::logql::{self, Direction, Query, Stats};
use vigil_collector::logs::{LogStore, LogStoreOptions};
use vigil_common::Labels;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const WORDS: &[&str] = &[
    "GET",
    "POST",
    "/api/v1/orders",
    "/api/v1/users",
    "/healthz",
    "200",
    "201",
    "404",
    "500",
    "upstream",
    "latency_ms",
    "bytes",
    "user_id",
    "cache",
    "hit",
    "miss",
    "retry",
    "timeout",
    "connection",
    "reset",
    "payment",
    "accepted",
    "queued",
    "worker",
    "shard",
    "db",
    "query",
];

fn line(r: &mut Rng, i: u64) -> String {
    let level = match r.next() % 100 {
        0..=1 => "error",
        2..=9 => "warn",
        10..=69 => "info",
        _ => "debug",
    };
    let mut s = format!(
        "ts=2026-11-22T12:{:02}:{:02}.{:06}Z level={level} req={:016x} msg=\"",
        (i / 60_000) % 60,
        (i / 1000) % 60,
        i % 1_000_000,
        r.next()
    );
    while s.len() < 170 {
        s.push_str(WORDS[(r.next() % WORDS.len() as u64) as usize]);
        s.push(' ');
    }
    s.push_str(&format!("\" dur={}ms", r.next() % 5000));
    // a rare needle: one line in 100,000
    if i % 100_000 == 7 {
        s.push_str(" needle-7f3a");
    }
    s
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let target = env_u64("LOGS_BENCH_BYTES", 1 << 30);
    let streams = env_u64("LOGS_BENCH_STREAMS", 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let st = LogStore::open(
        dir.path(),
        LogStoreOptions {
            max_bytes: 0,
            ..Default::default()
        },
    )
    .expect("open");
    let labels: Vec<Labels> = (0..streams)
        .map(|s| {
            Labels::new([
                ("namespace", format!("ns-{}", s % 10)),
                ("pod", format!("app-{s}")),
                ("container", "app".to_string()),
                ("stream", "stdout".to_string()),
                ("node", "bench".to_string()),
            ])
        })
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut bytes = 0u64;
    let mut i = 0u64;
    let mut offsets = vec![0u64; streams as usize];
    let t0 = Instant::now();
    let base_ns = 1_795_000_000_000_000_000i64;
    while bytes < target {
        let mut batch = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let s = (i % streams) as usize;
            let l = line(&mut rng, i);
            bytes += l.len() as u64;
            batch.push(IngestedLog {
                stream: labels[s].clone(),
                source_id: s as u64,
                source_path: String::new(),
                offset: offsets[s],
                end_offset: offsets[s] + l.len() as u64 + 1,
                timestamp_ns: base_ns + i as i64 * 1_000_000,
                line: l,
            });
            offsets[s] += 300;
            i += 1;
        }
        st.append(&batch);
    }
    st.flush().expect("flush");
    let fill = t0.elapsed();
    let disk = st.disk_bytes();
    println!(
        "stored {} lines, {:.0} MiB of lines in {} streams in {:.2?} ({:.0} MiB/s, {:.0} lines/s); on disk {:.0} MiB ({:.1}x)",
        i,
        bytes as f64 / 1048576.0,
        streams,
        fill,
        bytes as f64 / 1048576.0 / fill.as_secs_f64(),
        i as f64 / fill.as_secs_f64(),
        disk as f64 / 1048576.0,
        bytes as f64 / disk as f64
    );
    let end = base_ns + i as i64 * 1_000_000 + 1;
    for (name, q) in [
        (
            "rare |= over everything",
            r#"{node="bench"} |= "needle-7f3a""#,
        ),
        (
            "common |= over everything (limit 100)",
            r#"{node="bench"} |= "level=error""#,
        ),
        (
            "|= over one namespace",
            r#"{namespace="ns-7"} |= "needle-7f3a""#,
        ),
        (
            "sum by (namespace) (count_over_time(|= error [1h]))",
            r#"sum by (namespace) (count_over_time({node="bench"} |= "level=error" [2h]))"#,
        ),
    ] {
        let q = logql::parse(q).expect("query");
        let mut times = Vec::new();
        let mut found = 0usize;
        let mut scanned = 0u64;
        for _ in 0..3 {
            let t = Instant::now();
            let mut stats = Stats::default();
            found = match &q {
                Query::Log(sel) => logql::select_logs(
                    &st,
                    sel,
                    (base_ns, end),
                    100,
                    Direction::Backward,
                    &mut stats,
                    &logql::Control::unbounded(),
                )
                .expect("query")
                .iter()
                .map(|s| s.entries.len())
                .sum(),
                Query::Metric(e) => logql::eval_metric(
                    &st,
                    e,
                    end - 1,
                    end - 1,
                    1,
                    &mut stats,
                    &logql::Control::unbounded(),
                )
                .expect("query")
                .len(),
            };
            times.push(t.elapsed());
            scanned = stats.bytes_processed;
        }
        times.sort();
        println!(
            "{name:<55} median {:>9.2?} ({:.0} MiB scanned, {:.0} MiB/s; {found} results)",
            times[1],
            scanned as f64 / 1048576.0,
            scanned as f64 / 1048576.0 / times[1].as_secs_f64()
        );
    }
}
