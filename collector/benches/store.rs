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

use std::time::{Duration, Instant};

use vigil_collector::store::{Matcher, Queryable, SeriesRef, Store, StoreOptions};
use vigil_common::Labels;

const SERIES_PER_CONTAINER: usize = 50;
const STEP_MS: i64 = 10_000;
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

/// xorshift64*: deterministic and cheap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// How a series' value moves from one scrape to the next.
#[derive(Clone, Copy)]
enum Kind {
    Const,
    /// Integer counter: with probability `idle` no change, else + 0..max
    /// in multiples of `unit`.
    Counter {
        idle: f64,
        max: u64,
        unit: u64,
    },
    /// Seconds counter kept in `per_sec` units (1e9 = ns, 1e6 = µs, 100 =
    /// USER_HZ ticks) growing by up to `max_units` per scrape.
    Seconds {
        idle: f64,
        per_sec: f64,
        max_units: u64,
    },
    /// Page-granular gauge random walk.
    Memory {
        change: f64,
        pages: u64,
    },
    /// Small integer gauge that changes now and then.
    Small {
        change: f64,
    },
    /// Seconds since epoch of the scrape (`container_last_seen`).
    LastSeen,
}

struct Gen {
    kind: Kind,
    acc: u64,
}

impl Gen {
    fn value(&mut self, r: &mut Rng, t: i64) -> f64 {
        match self.kind {
            Kind::Const => self.acc as f64,
            Kind::Counter { idle, max, unit } => {
                if !r.chance(idle) {
                    self.acc += r.below(max) * unit;
                }
                self.acc as f64
            }
            Kind::Seconds {
                idle,
                per_sec,
                max_units,
            } => {
                if !r.chance(idle) {
                    self.acc += r.below(max_units);
                }
                self.acc as f64 / per_sec
            }
            Kind::Memory { change, pages } => {
                if r.chance(change) {
                    let step = r.below(pages) * 4096;
                    if r.chance(0.5) {
                        self.acc += step;
                    } else {
                        self.acc = self.acc.saturating_sub(step).max(4096 * 64);
                    }
                }
                self.acc as f64
            }
            Kind::Small { change } => {
                if r.chance(change) {
                    if r.chance(0.5) {
                        self.acc += 1;
                    } else {
                        self.acc = self.acc.saturating_sub(1);
                    }
                }
                self.acc as f64
            }
            Kind::LastSeen => (t / 1000) as f64,
        }
    }
}

/// One series of a container: metric, extra labels, kind, start value.
type Family = (&'static str, Vec<(&'static str, &'static str)>, Kind, u64);

/// The 50 series of one container.
fn container_families() -> Vec<Family> {
    use Kind::*;
    let ns = |idle| Seconds {
        idle,
        per_sec: 1e9,
        max_units: 2_000_000_000,
    };
    let us = |idle| Seconds {
        idle,
        per_sec: 1e6,
        max_units: 500_000,
    };
    let ticks = Seconds {
        idle: 0.05,
        per_sec: 100.0,
        max_units: 200,
    };
    let mut f = vec![
        (
            "container_cpu_usage_seconds_total",
            vec![("cpu", "total")],
            ns(0.0),
            10_000_000_000_000,
        ),
        ("container_cpu_user_seconds_total", vec![], ticks, 500_000),
        ("container_cpu_system_seconds_total", vec![], ticks, 200_000),
        (
            "container_cpu_cfs_periods_total",
            vec![],
            Counter {
                idle: 0.0,
                max: 1,
                unit: 100,
            },
            86_400,
        ),
        (
            "container_cpu_cfs_throttled_periods_total",
            vec![],
            Counter {
                idle: 0.9,
                max: 10,
                unit: 1,
            },
            1_000,
        ),
        (
            "container_cpu_cfs_throttled_seconds_total",
            vec![],
            ns(0.9),
            50_000_000_000,
        ),
        (
            "container_memory_working_set_bytes",
            vec![],
            Memory {
                change: 0.7,
                pages: 64,
            },
            300 << 20,
        ),
        (
            "container_memory_usage_bytes",
            vec![],
            Memory {
                change: 0.7,
                pages: 64,
            },
            400 << 20,
        ),
        (
            "container_memory_rss",
            vec![],
            Memory {
                change: 0.6,
                pages: 32,
            },
            250 << 20,
        ),
        (
            "container_memory_cache",
            vec![],
            Memory {
                change: 0.5,
                pages: 128,
            },
            100 << 20,
        ),
        (
            "container_memory_mapped_file",
            vec![],
            Memory {
                change: 0.05,
                pages: 8,
            },
            20 << 20,
        ),
        (
            "container_memory_max_usage_bytes",
            vec![],
            Memory {
                change: 0.02,
                pages: 16,
            },
            500 << 20,
        ),
        ("container_memory_swap", vec![], Const, 0),
        ("container_memory_failcnt", vec![], Const, 0),
        ("container_spec_memory_limit_bytes", vec![], Const, 1 << 30),
        (
            "container_spec_memory_reservation_limit_bytes",
            vec![],
            Const,
            0,
        ),
        (
            "container_spec_memory_swap_limit_bytes",
            vec![],
            Const,
            2 << 30,
        ),
        ("container_spec_cpu_quota", vec![], Const, 100_000),
        ("container_spec_cpu_period", vec![], Const, 100_000),
        ("container_spec_cpu_shares", vec![], Const, 1024),
        ("container_start_time_seconds", vec![], Const, 1_767_000_000),
        ("container_last_seen", vec![], LastSeen, 0),
        ("container_oom_events_total", vec![], Const, 0),
        ("container_processes", vec![], Small { change: 0.02 }, 12),
        ("container_threads", vec![], Small { change: 0.05 }, 40),
        ("container_threads_max", vec![], Const, 4096),
        (
            "container_file_descriptors",
            vec![],
            Small { change: 0.1 },
            64,
        ),
        ("container_sockets", vec![], Small { change: 0.1 }, 20),
        (
            "container_pressure_cpu_waiting_seconds_total",
            vec![],
            us(0.3),
            100_000_000,
        ),
        (
            "container_pressure_cpu_stalled_seconds_total",
            vec![],
            us(0.5),
            50_000_000,
        ),
        (
            "container_pressure_memory_waiting_seconds_total",
            vec![],
            us(0.9),
            1_000_000,
        ),
        (
            "container_pressure_memory_stalled_seconds_total",
            vec![],
            us(0.95),
            500_000,
        ),
        (
            "container_pressure_io_waiting_seconds_total",
            vec![],
            us(0.7),
            20_000_000,
        ),
        (
            "container_pressure_io_stalled_seconds_total",
            vec![],
            us(0.8),
            10_000_000,
        ),
    ];
    for (m, idle, max) in [
        ("container_network_receive_bytes_total", 0.05, 200_000),
        ("container_network_transmit_bytes_total", 0.05, 150_000),
        ("container_network_receive_packets_total", 0.05, 300),
        ("container_network_transmit_packets_total", 0.05, 250),
        ("container_network_receive_errors_total", 0.998, 2),
        ("container_network_transmit_errors_total", 0.998, 2),
        ("container_network_receive_packets_dropped_total", 0.995, 3),
        ("container_network_transmit_packets_dropped_total", 0.995, 3),
    ] {
        f.push((
            m,
            vec![("interface", "eth0")],
            Counter { idle, max, unit: 1 },
            1_000_000,
        ));
    }
    for dev in ["/dev/sda", "/dev/sdb"] {
        f.push((
            "container_fs_reads_total",
            vec![("device", dev)],
            Counter {
                idle: 0.6,
                max: 50,
                unit: 1,
            },
            10_000,
        ));
        f.push((
            "container_fs_writes_total",
            vec![("device", dev)],
            Counter {
                idle: 0.6,
                max: 50,
                unit: 1,
            },
            20_000,
        ));
        f.push((
            "container_fs_reads_bytes_total",
            vec![("device", dev)],
            Counter {
                idle: 0.6,
                max: 50,
                unit: 4096,
            },
            1 << 30,
        ));
        f.push((
            "container_fs_writes_bytes_total",
            vec![("device", dev)],
            Counter {
                idle: 0.6,
                max: 50,
                unit: 4096,
            },
            2 << 30,
        ));
    }
    f.truncate(SERIES_PER_CONTAINER);
    assert_eq!(f.len(), SERIES_PER_CONTAINER);
    f
}

struct Container {
    refs: Vec<SeriesRef>,
    gens: Vec<Gen>,
    rng: Rng,
}

fn container_labels(c: usize) -> Vec<(String, String)> {
    let hex = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        c * 7919 + 1,
        c * 104_729 + 3,
        c * 31 + 5,
        c + 9
    );
    let ns = format!("ns-{}", c % 40);
    let pod = format!(
        "app-{}-{:05x}-{:05x}",
        c % 200,
        c * 13 % 99_991,
        c * 17 % 99_989
    );
    let uid = format!("{:08x}-1111-2222-3333-{:012x}", c, c * 101);
    vec![
        ("id".into(), format!("/kubepods/burstable/pod{uid}/{hex}")),
        ("name".into(), format!("k8s_main_{pod}_{ns}_{uid}_0")),
        (
            "image".into(),
            format!(
                "registry.example/team-{}/app-{}:v1.{}.0",
                c % 40,
                c % 200,
                c % 7
            ),
        ),
        ("namespace".into(), ns),
        ("pod".into(), pod),
        ("container".into(), "main".into()),
        ("node".into(), format!("node-{:03}", c % 100)),
    ]
}

fn create(store: &Store, containers: usize) -> Vec<Container> {
    let fams = container_families();
    (0..containers)
        .map(|c| {
            let base = container_labels(c);
            let mut refs = Vec::with_capacity(fams.len());
            let mut gens = Vec::with_capacity(fams.len());
            for (metric, extra, kind, start) in &fams {
                let mut pairs = base.clone();
                pairs.push(("__name__".into(), (*metric).into()));
                pairs.extend(extra.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())));
                let labels = Labels::new(pairs);
                let node = labels.get("node").unwrap_or_default().to_string();
                refs.push(store.get_or_create_for(&node, &labels).expect("series created"));
                gens.push(Gen {
                    kind: *kind,
                    acc: *start,
                });
            }
            Container {
                refs,
                gens,
                rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1)),
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
            let j = if jitter > 0 {
                c.rng.below(2 * jitter as u64 + 1) as i64 - jitter
            } else {
                0
            };
            let t = T0 + step * STEP_MS + j;
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
