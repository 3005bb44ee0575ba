//! Ingest throughput of the real collector on ONE core over loopback gRPC,
//! with interned series and the WAL's fsync on.
//!
//! The collector binary (release) runs under `taskset -c 0`; this process
//! pins itself to core 1 and plays several agents, each sending pre-built
//! batches of 10,000 samples over 100,000 series (label sets defined once
//! per stream, then referenced by id), keeping a window of batches in
//! flight. Reported: samples acknowledged per second.
//!
//! Run: `cargo build --release --bins && cargo bench -p vigil-collector --bench ingest`

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_proto::v1 as pb;

const SERIES: u32 = 100_000;
const PER_BATCH: u32 = 10_000;
const STREAMS: usize = 4;
const WINDOW: usize = 16;
const SECONDS: u64 = 15;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn batch(seq: u64, agent: usize, with_defs: bool, ts: i64) -> pb::AgentMessage {
    let first = ((seq - 1) as u32 * PER_BATCH) % SERIES;
    let refs: Vec<u32> = (first..first + PER_BATCH).map(|r| r + 1).collect();
    let series = if with_defs {
        refs.iter()
            .map(|r| pb::SeriesDef {
                r#ref: *r,
                labels: vec![
                    pb::Label {
                        name: "__name__".into(),
                        value: "container_cpu_usage_seconds_total".into(),
                    },
                    pb::Label {
                        name: "container".into(),
                        value: format!("c{}", r % 7),
                    },
                    pb::Label {
                        name: "id".into(),
                        value: format!("/kubepods/burstable/pod{agent}-{}/{r}", r / 10),
                    },
                    pb::Label {
                        name: "namespace".into(),
                        value: format!("ns{}", r % 13),
                    },
                    pb::Label {
                        name: "node".into(),
                        value: format!("bench-{agent}"),
                    },
                    pb::Label {
                        name: "pod".into(),
                        value: format!("pod-{}", r / 10),
                    },
                ],
            })
            .collect()
    } else {
        Vec::new()
    };
    let values = refs
        .iter()
        .map(|r| (*r as f64) * 0.5 + seq as f64)
        .collect();
    pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Batch(pb::Batch {
            seq,
            created_ms: ts,
            series,
            samples: vec![pb::SampleBlock {
                timestamp_ms: ts,
                refs,
                values,
            }],
            ..Default::default()
        })),
    }
}

async fn agent(port: u16, agent: usize, stop: Instant) -> u64 {
    let mut client = pb::ingest_client::IngestClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect")
        .max_encoding_message_size(64 << 20)
        .send_compressed(tonic::codec::CompressionEncoding::Zstd);
    let (tx, rx) = tokio::sync::mpsc::channel(WINDOW + 2);
    tx.send(pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            agent_id: format!("bench-{agent}-{}", std::process::id()),
            node_name: format!("bench-{agent}"),
            agent_version: "bench".into(),
            protocol: 1,
            series_epoch: 0,
        })),
    })
    .await
    .unwrap();
    let mut inbound = client
        .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("ship")
        .into_inner();
    let _welcome = inbound.message().await.unwrap();
    // pre-build: the first pass defines every series, later ones only refer
    let cycle = (SERIES / PER_BATCH) as u64;
    let t0 = 1_700_000_000_000i64;
    let mut seq = 0u64;
    let mut acked = 0u64;
    let mut in_flight = 0usize;
    loop {
        while in_flight < WINDOW && Instant::now() < stop {
            seq += 1;
            let ts = t0 + ((seq - 1) / cycle) as i64 * 10_000 + agent as i64;
            tx.send(batch(seq, agent, seq <= cycle, ts)).await.unwrap();
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        match inbound.message().await {
            Ok(Some(pb::CollectorMessage {
                kind: Some(pb::collector_message::Kind::Ack(a)),
            })) => {
                let n = a.seq - (seq - in_flight as u64);
                in_flight -= n as usize;
                acked = a.seq;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    acked * PER_BATCH as u64
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let bin = std::path::Path::new(&target).join("release/vigil-collector");
    if !bin.exists() {
        eprintln!("build the collector first: cargo build --release --bins");
        std::process::exit(1);
    }
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
        .output();
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp) = (free_port(), free_port());
    let mut collector = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&bin)
        .args([
            "--http-listen",
            &format!("127.0.0.1:{hp}"),
            "--grpc-listen",
            &format!("127.0.0.1:{gp}"),
            "--data-dir",
            &dir.path().display().to_string(),
            "--max-message-bytes",
            "64MiB",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start collector");
    std::thread::sleep(Duration::from_millis(800));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let stop = start + Duration::from_secs(SECONDS);
    let total: u64 = rt.block_on(async {
        let tasks: Vec<_> = (0..STREAMS)
            .map(|a| tokio::spawn(agent(gp, a, stop)))
            .collect();
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap();
        }
        sum
    });
    let secs = start.elapsed().as_secs_f64();
    let ticks = std::fs::read_to_string(format!("/proc/{}/stat", collector.id()))
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    let _ = collector.kill();
    let _ = collector.wait();
    let cpu = ticks as f64 / 100.0;
    println!("ingest: {total} samples acknowledged in {secs:.1} s over {STREAMS} streams");
    println!(
        "ingest: {:.0} samples/s wall clock on one pinned core",
        total as f64 / secs
    );
    if cpu > 0.0 {
        println!(
            "ingest: {:.0} samples per CPU-second of the collector ({cpu:.1} CPU-s)",
            total as f64 / cpu
        );
    }
}
