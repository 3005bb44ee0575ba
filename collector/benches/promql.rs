//! Query latency of dashboard-style PromQL over 100,000 series held in the
//! in-memory store (engine only, no HTTP). Run with
//! `cargo bench -p vigil-collector --bench promql`.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use vigil_collector::promql::{Engine, Value};
use vigil_collector::store::{Store, StoreOptions};
use vigil_common::Labels;

pub const SERIES: usize = 100_000;
pub const SAMPLES: i64 = 61; // 10 minutes at 10 s
pub const STEP_MS: i64 = 10_000;
pub const T0: i64 = 1_700_000_000_000;

/// 100,000 `container_cpu_usage_seconds_total` series: 50 namespaces,
/// 25,000 pods, 4 containers per pod.
pub fn build() -> Store {
    let store = Store::new(StoreOptions::default());
    for i in 0..SERIES {
        let pod = i / 4;
        let labels = Labels::new([
            ("__name__", "container_cpu_usage_seconds_total".to_string()),
            ("namespace", format!("ns-{}", pod % 50)),
            ("pod", format!("pod-{pod}")),
            ("container", format!("c{}", i % 4)),
            ("node", format!("node-{}", pod % 100)),
        ]);
        let r = store.get_or_create(&labels).expect("series");
        let rate = 0.01 + (i % 97) as f64 * 0.003;
        for k in 0..SAMPLES {
            store
                .append(r, T0 + k * STEP_MS, 1000.0 + rate * (k * 10) as f64)
                .expect("append");
        }
    }
    store
}

fn queries(c: &mut Criterion) {
    let store = build();
    let engine = Engine::default();
    let end = T0 + (SAMPLES - 1) * STEP_MS + 500;
    let mut g = c.benchmark_group("promql_100k_series");
    g.sample_size(10);
    for q in [
        "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
        "topk(10, sum by (pod) (rate(container_cpu_usage_seconds_total[5m])))",
        "count(container_cpu_usage_seconds_total{namespace=\"ns-7\"})",
        "sum(container_cpu_usage_seconds_total{namespace=~\"ns-1.*\"}) by (node)",
    ] {
        g.bench_function(format!("instant {q}"), |b| {
            b.iter(|| {
                let v = engine.instant(&store, q, end).expect("query");
                assert!(matches!(v, Value::Vector(ref s) if !s.is_empty()));
            })
        });
    }
    let q = "sum by (namespace) (rate(container_cpu_usage_seconds_total[1m]))";
    g.bench_function(format!("range 10m/30s {q}"), |b| {
        b.iter(|| {
            engine
                .range(&store, q, end - 600_000, end, 30_000)
                .expect("query")
        })
    });
    g.finish();
}

criterion_group!(benches, queries);
criterion_main!(benches);
