//! The agent's shipping cost per sample: sealing a scrape into a
//! self-contained batch, writing it to the disk buffer (zstd + checksum),
//! reading it back, translating it for a stream whose interning table
//! already knows the series, and encoding the wire message.
//!
//! Run: `cargo bench -p vigil-agent --bench ship`

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_agent::model::{MetricFamily, MetricKind, Scrape};
use vigil_agent::ship::batch::{Builder, StreamInterner};
use vigil_agent::ship::buffer::Buffer;

const SERIES: usize = 5_000;

fn scrape(t: i64) -> Scrape {
    let mut s = Scrape::new(t);
    for fam in 0..50 {
        let mut f = MetricFamily::new(
            format!("container_metric_{fam}_total"),
            "help",
            MetricKind::Counter,
        );
        for i in 0..SERIES / 50 {
            f.push(
                [
                    ("id", format!("/kubepods/burstable/pod{i}/c{i}")),
                    ("name", format!("k8s_app_{i}")),
                    ("image", "registry/app:1.2.3".to_string()),
                    ("namespace", format!("ns{}", i % 10)),
                    ("pod", format!("pod-{i}")),
                    ("container", "app".to_string()),
                ],
                (i * fam) as f64 + t as f64,
            );
        }
        s.families.push(f);
    }
    s
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut buffer = Buffer::open(dir.path(), 1 << 30).unwrap();
    let mut builder = Builder::new("bench-node");
    let mut interner = StreamInterner::default();
    let md = HashMap::new();
    let s = scrape(1);
    // warm the stream's interning table, as on a long-lived stream
    builder.add_scrape(&s, 0, usize::MAX);
    let first = builder.seal(buffer.next_seq(), 0);
    interner.translate(&first, &md);
    let mut g = c.benchmark_group("ship");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function(
        "seal+buffer+translate+encode per scrape of 5000 samples",
        |b| {
            let mut s = scrape(2);
            b.iter(|| {
                s.timestamp_ms += 1000;
                builder.add_scrape(&s, 0, usize::MAX);
                let batch = builder.seal(buffer.next_seq(), 0);
                buffer.append(&batch).unwrap();
                let back = buffer.read(batch.seq).unwrap().unwrap();
                let wire = interner.translate(&back, &md);
                let bytes = prost::Message::encode_to_vec(&wire);
                buffer.ack(batch.seq).unwrap();
                bytes.len()
            })
        },
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
