//! The agent's shipping cost per sample: sealing a scrape into a batch of
//! series-table refs (the table already knows the series, as on a steady
//! node), writing it to the disk buffer (zstd + checksum), reading its bytes
//! back and encoding the wire message around them (no re-encoding).
//!
//! Run: `cargo bench -p vigil-agent --bench ship`

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_agent::model::{MetricFamily, MetricKind, Scrape};
use vigil_agent::ship::batch::Builder;
use vigil_agent::ship::buffer::Buffer;
use vigil_agent::ship::table::SeriesTable;
use vigil_proto::v1 as pb;

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
    let (table, _) = SeriesTable::open(dir.path(), "bench-node", false).unwrap();
    let table = Arc::new(parking_lot::Mutex::new(table));
    let mut builder = Builder::new(table.clone());
    let s = scrape(1);
    // warm the series table, as on a long-running agent
    builder.add_scrape(&s, 0, usize::MAX);
    builder.seal(buffer.next_seq(), 0);
    table.lock().persist().unwrap();
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
                table.lock().persist().unwrap();
                buffer.append(&batch).unwrap();
                let payload = buffer.read_payload(batch.seq).unwrap().unwrap();
                let wire = pb::AgentMessage {
                    kind: Some(pb::agent_message::Kind::BatchZstd(payload)),
                };
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
