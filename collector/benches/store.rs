//! Store benchmark: bytes per sample and memory per series after N hours of
//! 10 s samples for many cAdvisor-like series, append throughput, and select
//! latency. A bench binary (not criterion): one long fill is the measurement.
//!
//! ```text
//! cargo bench -p vigil-collector --bench store
//! STORE_BENCH_SERIES=100000 STORE_BENCH_HOURS=2 STORE_BENCH_JITTER_MS=2 STORE_BENCH_THREADS=2
//! ```
//!
//! The data: containers of 50 series each with cAdvisor's metric names and
//! labels (`id`, `name`, `image`, `namespace`, `pod`, `container`, `node`),
//! and value patterns taken from what those metrics do: nanosecond and
//! microsecond float counters (CPU, pressure), tick counters, integer byte and
//! packet counters (often idle), page-granular memory gauges, small integer
//! gauges and constants. Each container's samples share one scrape timestamp
//! with ±`STORE_BENCH_JITTER_MS` of jitter, ingested per scrape through
//! `append_batch` as the gRPC ingest does; the background pass (`compact`,
//! what `trim` runs every 10 s) runs every simulated 20 minutes.
//!
//! Memory is measured twice: the store's own walk of its heap
//! ([`Store::memory_usage`]) and the process RSS growth while filling.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use vigil_collector::store::{Matcher, Queryable, SeriesRef, Store, StoreOptions};
use vigil_common::Labels;

#[path = "common/cadvisor.rs"]
mod cadvisor;

use cadvisor::{
    Gen, Rng, SERIES_PER_CONTAINER, STEP_MS, container_labels, container_rng, container_series,
    jitter_ms,
};

const T0: i64 = 1_767_225_600_000; // 2026-01-01

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

struct Container {
    refs: Vec<SeriesRef>,
    gens: Vec<Gen>,
    rng: Rng,
}

fn create(store: &Store, containers: usize) -> Vec<Container> {
    (0..containers)
        .map(|c| {
            let mut refs = Vec::with_capacity(SERIES_PER_CONTAINER);
            let mut gens = Vec::with_capacity(SERIES_PER_CONTAINER);
            for (pairs, g) in container_series(c) {
                let labels = Labels::new(pairs);
                let node = labels.get("node").unwrap_or_default().to_string();
                refs.push(
                    store
                        .get_or_create_for(&node, &labels)
                        .expect("series created"),
                );
                gens.push(g);
            }
            Container {
                refs,
                gens,
                rng: container_rng(c),
            }
        })
        .collect()
}

/// Appends scrapes `from..to` of every container; returns samples appended.
fn ingest(store: &Store, containers: &mut [Container], from: i64, to: i64, jitter: i64) -> u64 {
    let mut batch = Vec::with_capacity(SERIES_PER_CONTAINER);
    let mut n = 0;
    for step in from..to {
        for c in containers.iter_mut() {
            let t = T0 + step * STEP_MS + jitter_ms(&mut c.rng, jitter);
            batch.clear();
            for (r, g) in c.refs.iter().zip(c.gens.iter_mut()) {
                batch.push((*r, t, g.value(&mut c.rng, t)));
            }
            let s = store.append_batch(&batch);
            n += s.appended;
        }
    }
    n
}

#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let series = env("STORE_BENCH_SERIES", 100_000) as usize;
    let hours = env("STORE_BENCH_HOURS", 2);
    let jitter = env("STORE_BENCH_JITTER_MS", 2) as i64;
    let threads = env("STORE_BENCH_THREADS", 2) as usize;
    let block = env("STORE_BENCH_BLOCK", 720) as u32;
    let containers_n = series.div_ceil(SERIES_PER_CONTAINER);
    let steps = (hours * 3600 * 1000) as i64 / STEP_MS;
    println!(
        "store bench: {} series ({} containers x {}), {} h of {} s samples ({} per series), jitter ±{} ms, pco blocks of {}",
        containers_n * SERIES_PER_CONTAINER,
        containers_n,
        SERIES_PER_CONTAINER,
        hours,
        STEP_MS / 1000,
        steps,
        jitter,
        block
    );
    let rss0 = rss_bytes();
    let store = Store::new(StoreOptions {
        block_samples: block,
        retention_ms: 365 * 24 * 3600 * 1000,
        ..Default::default()
    });
    let t = Instant::now();
    let mut containers = create(&store, containers_n);
    let create_time = t.elapsed();
    let rss_created = rss_bytes();

    let mut append_time = Duration::ZERO;
    let mut compact_time = Duration::ZERO;
    let mut appended = 0u64;
    let pass_every = 120; // 20 simulated minutes
    let mut step = 0;
    while step < steps {
        let to = (step + pass_every).min(steps);
        let t = Instant::now();
        appended += ingest(&store, &mut containers, step, to, jitter);
        append_time += t.elapsed();
        let t = Instant::now();
        store.compact();
        compact_time += t.elapsed();
        step = to;
    }
    let rss_filled = rss_bytes();
    if std::env::var("STORE_BENCH_TRIM").is_ok() {
        trim_heap();
        println!(
            "after malloc_trim: RSS +{:.1} MiB",
            rss_bytes().saturating_sub(rss0) as f64 / 1048576.0
        );
    }
    let stats = store.stats();
    let mem = store.memory_usage();
    let n_series = stats.series as f64;
    println!("\n== memory after {hours} h ==");
    println!(
        "series created in {create_time:.2?} ({:.0} series/s)",
        n_series / create_time.as_secs_f64()
    );
    println!(
        "samples {} (appended {}), sealed chunks {}, recompressed {}",
        stats.samples, appended, stats.sealed_chunks, stats.recompressed_chunks
    );
    println!(
        "bytes/sample: {:.3} encoded payload, {:.3} with chunk headers and open-chunk slack",
        mem.sample_payload as f64 / mem.samples as f64,
        mem.chunks as f64 / mem.samples as f64
    );
    println!(
        "store walk: chunks {:.1} MiB, series {:.1} MiB, index {:.1} MiB, total {:.1} MiB = {:.0} B/series",
        mem.chunks as f64 / 1048576.0,
        mem.series as f64 / 1048576.0,
        mem.index as f64 / 1048576.0,
        mem.total as f64 / 1048576.0,
        mem.total as f64 / n_series
    );
    println!(
        "process RSS: +{:.1} MiB after creating series, +{:.1} MiB after {hours} h = {:.0} B/series (generator state included: ~{} B/series)",
        (rss_created.saturating_sub(rss0)) as f64 / 1048576.0,
        (rss_filled.saturating_sub(rss0)) as f64 / 1048576.0,
        rss_filled.saturating_sub(rss0) as f64 / n_series,
        std::mem::size_of::<Gen>() + std::mem::size_of::<SeriesRef>()
    );
    println!(
        "store accounting (budget figure): {:.0} B/series",
        stats.bytes as f64 / n_series
    );
    println!("\n== ingest, 1 thread ==");
    println!(
        "append: {:.2?} for {} samples = {:.2} M samples/s; background recompression {:.2?} ({:.2} M samples/s including it)",
        append_time,
        appended,
        appended as f64 / append_time.as_secs_f64() / 1e6,
        compact_time,
        appended as f64 / (append_time + compact_time).as_secs_f64() / 1e6
    );

    // select latency at the end of the fill
    let now = T0 + steps * STEP_MS;
    let eq = |n: &str, v: &str| Matcher::equal(n, v);
    let pod7 = container_labels(7)[4].1.clone();
    let id11 = container_labels(11)[0].1.clone();
    let queries: Vec<(&str, Vec<Matcher>, i64)> = vec![
        (
            "one series, 5m",
            vec![
                eq("__name__", "container_cpu_usage_seconds_total"),
                eq("pod", &pod7),
            ],
            300_000,
        ),
        (
            "one series, 2h",
            vec![
                eq("__name__", "container_cpu_usage_seconds_total"),
                eq("pod", &pod7),
            ],
            7_200_000,
        ),
        (
            "one container (50 series), 1h",
            vec![eq("id", &id11)],
            3_600_000,
        ),
        (
            "cpu_usage of every container, 5m",
            vec![eq("__name__", "container_cpu_usage_seconds_total")],
            300_000,
        ),
        (
            "cpu_usage of every container, 1h",
            vec![eq("__name__", "container_cpu_usage_seconds_total")],
            3_600_000,
        ),
        (
            "working_set{namespace=\"ns-3\"}, 5m",
            vec![
                eq("__name__", "container_memory_working_set_bytes"),
                eq("namespace", "ns-3"),
            ],
            300_000,
        ),
        (
            "network rx{pod=~\"app-1.*\"}, 1h",
            vec![
                eq("__name__", "container_network_receive_bytes_total"),
                Matcher::regex("pod", "app-1.*", false).expect("regex"),
            ],
            3_600_000,
        ),
        (
            "{__name__=~\"container_fs_.*\"} (8 of 50), 5m",
            vec![Matcher::regex("__name__", "container_fs_.*", false).expect("regex")],
            300_000,
        ),
    ];
    println!("\n== select latency (median of 5) ==");
    for (name, ms, range) in &queries {
        let mut times = vec![];
        let mut got = (0, 0);
        for _ in 0..5 {
            let t = Instant::now();
            let r = store.select(ms, now - range, now);
            times.push(t.elapsed());
            got = (r.len(), r.iter().map(|s| s.samples.len()).sum::<usize>());
        }
        println!(
            "{name:48} {:>10.2?}  ({} series, {} samples)",
            median(times),
            got.0,
            got.1
        );
    }
    for (name, f) in [
        (
            "label_values(namespace), all time",
            Box::new(|| {
                store
                    .label_values("namespace", &[], i64::MIN, i64::MAX)
                    .len()
            }) as Box<dyn Fn() -> usize>,
        ),
        (
            "label_names(), all time",
            Box::new(|| store.label_names(&[], i64::MIN, i64::MAX).len()),
        ),
        (
            "label_values(pod){namespace=\"ns-3\"}, 1h",
            Box::new(|| {
                store
                    .label_values("pod", &[eq("namespace", "ns-3")], now - 3_600_000, now)
                    .len()
            }),
        ),
        (
            "series{__name__=\"container_last_seen\"}, 1h",
            Box::new(|| {
                store
                    .series(
                        &[eq("__name__", "container_last_seen")],
                        now - 3_600_000,
                        now,
                    )
                    .len()
            }),
        ),
        (
            "latest() of every series (/metrics)",
            Box::new(|| store.latest().len()),
        ),
    ] {
        let mut times = vec![];
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            n = f();
            times.push(t.elapsed());
        }
        println!("{name:48} {:>10.2?}  ({n} results)", median(times));
    }

    // checkpoint write and load
    let t = Instant::now();
    let mut buf = Vec::new();
    store
        .write_checkpoint(&mut buf)
        .expect("checkpoint written");
    let wt = t.elapsed();
    let t = Instant::now();
    let back = Store::new(StoreOptions::default());
    back.read_checkpoint(&mut buf.as_slice())
        .expect("checkpoint read");
    let rt = t.elapsed();
    println!(
        "\n== checkpoint ==\n{:.1} MiB ({:.3} B/sample), written in {wt:.2?}, verified and loaded in {rt:.2?}",
        buf.len() as f64 / 1048576.0,
        buf.len() as f64 / stats.samples as f64
    );
    drop(back);
    drop(buf);

    // concurrent ingest: `threads` writers on disjoint containers, fresh store
    if threads > 1 {
        let store = Store::new(StoreOptions {
            block_samples: block,
            retention_ms: 365 * 24 * 3600 * 1000,
            ..Default::default()
        });
        let containers = create(&store, containers_n);
        let per = containers.len().div_ceil(threads);
        let mut parts: Vec<Vec<Container>> = Vec::new();
        let mut it = containers.into_iter();
        for _ in 0..threads {
            parts.push(it.by_ref().take(per).collect());
        }
        let steps2 = steps.min(360);
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = parts
                .iter_mut()
                .map(|p| {
                    let store = &store;
                    s.spawn(move || ingest(store, p, 0, steps2, jitter))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        let el = t.elapsed();
        println!(
            "\n== ingest, {threads} threads ==\n{total} samples in {el:.2?} = {:.2} M samples/s ({:.2} M/s per thread)",
            total as f64 / el.as_secs_f64() / 1e6,
            total as f64 / el.as_secs_f64() / 1e6 / threads as f64
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average at the end: {}", load.trim());
}
