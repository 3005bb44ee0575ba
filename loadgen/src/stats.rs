//! Counters of a run and the ack latencies behind its percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Default)]
pub struct Stats {
    pub batches_generated: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub samples_sent: AtomicU64,
    pub samples_acked: AtomicU64,
    /// Batches the collector reported as duplicates (already held).
    pub duplicates_reported: AtomicU64,
    /// Successful `Hello`/`Welcome` exchanges.
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Streams that ended (refused, reset, collector gone).
    pub stream_failures: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Ack latencies (send → cumulative ack), microseconds: the whole run
    /// and the window since the last progress line.
    latencies: Mutex<(Vec<u32>, Vec<u32>)>,
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub fn record_latency(&self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let mut l = self.latencies.lock();
        l.0.push(us);
        l.1.push(us);
    }

    /// Percentiles of the whole run.
    pub fn latency(&self) -> Latency {
        let mut v = self.latencies.lock().0.clone();
        percentiles(&mut v)
    }

    /// Percentiles since the previous call (then starts a new window).
    pub fn take_window(&self) -> Latency {
        let mut v = std::mem::take(&mut self.latencies.lock().1);
        percentiles(&mut v)
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Nearest-rank percentiles (sorts `v`).
pub fn percentiles(v: &mut [u32]) -> Latency {
    if v.is_empty() {
        return Latency::default();
    }
    v.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        f64::from(v[rank - 1]) / 1000.0
    };
    Latency {
        count: v.len(),
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let l = percentiles(&mut v);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(percentiles(&mut []), Latency::default());
        let mut one = [2500];
        assert_eq!(percentiles(&mut one).p50_ms, 2.5);
    }
}
