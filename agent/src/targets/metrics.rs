//! Self-metrics of application scraping (`vigil_agent_scrape_*`,
//! `vigil_agent_targets*`, `vigil_agent_discovery_*`), rendered as families
//! like the rest of the agent's telemetry. Labels are bounded: job names come
//! from the configuration, failure reasons and discovery mechanisms from
//! fixed lists.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use crate::model::{MetricFamily, MetricKind};

/// Why a scrape failed, as counted.
pub fn reason_of(error: &str) -> &'static str {
    if error.contains("context deadline exceeded") {
        "timeout"
    } else if error.contains("dial:") {
        "connect"
    } else if error.starts_with("server returned HTTP status") {
        "http_status"
    } else if error.starts_with("body size limit exceeded") {
        "body_size_limit"
    } else if error.starts_with("sample_limit exceeded") {
        "sample_limit"
    } else if error.starts_with("label_") {
        "label_limit"
    } else if error.starts_with("line ")
        || error.contains("not unique")
        || error.contains("invalid metric name")
    {
        "parse"
    } else {
        "other"
    }
}

#[derive(Default)]
struct Job {
    active: u64,
    dropped: u64,
    up: u64,
    scrapes: u64,
    failures: BTreeMap<&'static str, u64>,
    samples: u64,
    out_of_order: u64,
    stale: u64,
    duration_s: f64,
}

/// What one scrape counted.
pub struct Scraped<'a> {
    pub error: Option<&'a str>,
    pub samples: usize,
    pub out_of_order: usize,
    pub stale: usize,
    pub duration_s: f64,
}

#[derive(Default)]
pub struct TargetMetrics {
    jobs: Mutex<BTreeMap<String, Job>>,
    discovery: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    /// Target scrapes handed to the shipper.
    pub submitted: std::sync::atomic::AtomicU64,
}

impl TargetMetrics {
    pub fn set_targets(&self, counts: &BTreeMap<String, (u64, u64)>) {
        let mut j = self.jobs.lock();
        for v in j.values_mut() {
            v.active = 0;
            v.dropped = 0;
        }
        for (name, (a, d)) in counts {
            let e = j.entry(name.clone()).or_default();
            e.active = *a;
            e.dropped = *d;
        }
    }

    /// One scrape of a target of `job`, whose previous scrape was `up_before`.
    pub fn scraped(&self, job: &str, up_before: bool, o: &Scraped<'_>) {
        let mut j = self.jobs.lock();
        let e = j.entry(job.to_string()).or_default();
        e.scrapes += 1;
        e.samples += o.samples as u64;
        e.out_of_order += o.out_of_order as u64;
        e.stale += o.stale as u64;
        e.duration_s += o.duration_s;
        let up_now = o.error.is_none();
        if up_now && !up_before {
            e.up += 1;
        } else if !up_now && up_before {
            e.up = e.up.saturating_sub(1);
        }
        if let Some(err) = o.error {
            *e.failures.entry(reason_of(err)).or_insert(0) += 1;
        }
    }

    /// A target that was up is gone.
    pub fn gone(&self, job: &str, was_up: bool, stale: usize) {
        let mut j = self.jobs.lock();
        let e = j.entry(job.to_string()).or_default();
        if was_up {
            e.up = e.up.saturating_sub(1);
        }
        e.stale += stale as u64;
    }

    pub fn discovery_refresh(&self, mechanism: &'static str) {
        self.discovery.lock().entry(mechanism).or_default().0 += 1;
    }

    pub fn discovery_failure(&self, mechanism: &'static str) {
        self.discovery.lock().entry(mechanism).or_default().1 += 1;
    }

    pub fn families(&self) -> Vec<MetricFamily> {
        use MetricKind::{Counter as C, Gauge as G};
        let mut targets = MetricFamily::new(
            "vigil_agent_targets",
            "Targets of application scraping, by job and state (active, dropped).",
            G,
        );
        let mut up = MetricFamily::new(
            "vigil_agent_targets_up",
            "Active targets whose last scrape succeeded.",
            G,
        );
        let mut scrapes = MetricFamily::new(
            "vigil_agent_scrape_requests_total",
            "Scrapes of application targets.",
            C,
        );
        let mut failures = MetricFamily::new(
            "vigil_agent_scrape_failures_total",
            "Failed scrapes of application targets, by reason.",
            C,
        );
        let mut samples = MetricFamily::new(
            "vigil_agent_scrape_samples_total",
            "Samples kept from application targets (after metric relabeling).",
            C,
        );
        let mut ooo = MetricFamily::new(
            "vigil_agent_scrape_out_of_order_samples_total",
            "Samples dropped as duplicates, out of order or too far in the future.",
            C,
        );
        let mut stale = MetricFamily::new(
            "vigil_agent_scrape_stale_markers_total",
            "Staleness markers written for series or targets that went away.",
            C,
        );
        let mut dur = MetricFamily::new(
            "vigil_agent_scrape_duration_seconds_total",
            "Time spent scraping application targets.",
            C,
        );
        for (name, j) in self.jobs.lock().iter() {
            let job = [("job", name.as_str())];
            targets.push(
                [("job", name.as_str()), ("state", "active")],
                j.active as f64,
            );
            targets.push(
                [("job", name.as_str()), ("state", "dropped")],
                j.dropped as f64,
            );
            up.push(job, j.up as f64);
            scrapes.push(job, j.scrapes as f64);
            for (r, n) in &j.failures {
                failures.push([("job", name.as_str()), ("reason", r)], *n as f64);
            }
            samples.push(job, j.samples as f64);
            ooo.push(job, j.out_of_order as f64);
            stale.push(job, j.stale as f64);
            dur.push(job, j.duration_s);
        }
        let mut refreshes = MetricFamily::new(
            "vigil_agent_discovery_refreshes_total",
            "Discovery refreshes, by mechanism.",
            C,
        );
        let mut dfail = MetricFamily::new(
            "vigil_agent_discovery_failures_total",
            "Discovery errors, by mechanism.",
            C,
        );
        for (m, (r, f)) in self.discovery.lock().iter() {
            refreshes.push([("mechanism", *m)], *r as f64);
            dfail.push([("mechanism", *m)], *f as f64);
        }
        vec![
            targets, up, scrapes, failures, samples, ooo, stale, dur, refreshes, dfail,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_and_named() {
        for (e, r) in [
            (
                "Get \"http://x\": context deadline exceeded (timeout 1s)",
                "timeout",
            ),
            ("Get \"http://x\": dial: connection refused", "connect"),
            ("server returned HTTP status 404 Not Found", "http_status"),
            ("body size limit exceeded (10 bytes)", "body_size_limit"),
            (
                "sample_limit exceeded (samples after relabeling: 4, limit: 2)",
                "sample_limit",
            ),
            ("label_limit exceeded (metric: a)", "label_limit"),
            ("line 3: expected label value", "parse"),
            ("something else", "other"),
        ] {
            assert_eq!(reason_of(e), r, "{e}");
        }
        let m = TargetMetrics::default();
        let s = |error| Scraped {
            error,
            samples: 5,
            out_of_order: 0,
            stale: 0,
            duration_s: 0.1,
        };
        m.scraped("j", false, &s(Some("line 1: x")));
        m.scraped("j", false, &s(None));
        let f = m.families();
        let up = f
            .iter()
            .find(|f| f.name == "vigil_agent_targets_up")
            .unwrap();
        assert_eq!(up.samples[0].value, 1.0);
        let fails = f
            .iter()
            .find(|f| f.name == "vigil_agent_scrape_failures_total")
            .unwrap();
        assert_eq!(fails.samples.len(), 1);
    }
}
