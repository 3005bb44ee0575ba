//! cAdvisor-like series for the store and remote-write benchmarks: the
//! metric names and labels kubelet's cAdvisor endpoint exposes, and value
//! patterns taken from what those metrics do (nanosecond and microsecond
//! float counters, tick counters, often-idle byte and packet counters,
//! page-granular memory gauges, small gauges, constants). Deterministic.
//! Included by the bench binaries with `#[path]`; not a bench itself.

// each bench uses a different part of it
#![allow(dead_code)]

pub const SERIES_PER_CONTAINER: usize = 50;
pub const STEP_MS: i64 = 10_000;

/// xorshift64*: deterministic and cheap.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// How a series' value moves from one scrape to the next.
#[derive(Clone, Copy)]
pub enum Kind {
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

pub struct Gen {
    pub kind: Kind,
    pub acc: u64,
}

impl Gen {
    pub fn value(&mut self, r: &mut Rng, t: i64) -> f64 {
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
pub type Family = (&'static str, Vec<(&'static str, &'static str)>, Kind, u64);

/// The 50 series of one container.
pub fn container_families() -> Vec<Family> {
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

pub fn container_labels(c: usize) -> Vec<(String, String)> {
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

/// Every series of container `c`: its labels and its value generator.
pub fn container_series(c: usize) -> Vec<(Vec<(String, String)>, Gen)> {
    let base = container_labels(c);
    container_families()
        .into_iter()
        .map(|(metric, extra, kind, start)| {
            let mut pairs = base.clone();
            pairs.push(("__name__".into(), metric.into()));
            pairs.extend(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
            );
            pairs.sort();
            (pairs, Gen { kind, acc: start })
        })
        .collect()
}

/// The random stream of container `c` (jitter and value steps).
pub fn container_rng(c: usize) -> Rng {
    Rng(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1))
}

/// The scrape timestamp offset (±`jitter` ms) drawn for one scrape.
pub fn jitter_ms(rng: &mut Rng, jitter: i64) -> i64 {
    if jitter > 0 {
        rng.below(2 * jitter as u64 + 1) as i64 - jitter
    } else {
        0
    }
}
