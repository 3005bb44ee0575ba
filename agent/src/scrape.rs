//! One scrape of every reader, stamped with one timestamp. [`Scraper`] keeps
//! what must live between scrapes (discovered hierarchies, reused buffers),
//! so a scrape costs what exists now, not what ever was.

use std::time::Instant;

use crate::cgroup::CgroupReader;
use crate::config::Config;
use crate::model::{MetricFamily, MetricKind, Scrape};
use crate::node::NodeReader;

/// Errors met during one scrape, by reader; the scrape itself always completes.
#[derive(Debug, Default)]
pub struct ScrapeReport {
    pub errors: Vec<(&'static str, String)>,
}

/// Holds the readers and their state across scrapes.
pub struct Scraper {
    node: NodeReader,
    cgroup: CgroupReader,
    /// Errors per reader since start (a counter).
    errors_total: [(&'static str, u64); 2],
}

impl Scraper {
    pub fn new(config: &Config) -> Self {
        Scraper {
            node: NodeReader::new(&config.host_root),
            cgroup: CgroupReader::new(&config.host_root),
            errors_total: [("node", 0), ("cgroup", 0)],
        }
    }

    /// Reads everything once.
    pub fn scrape(&mut self) -> (Scrape, ScrapeReport) {
        let mut scrape = Scrape::new(crate::run::now_ms());
        let mut report = ScrapeReport::default();
        let mut durations = MetricFamily::new(
            "vigil_agent_scrape_duration_seconds",
            "Wall time of the last scrape, by reader.",
            MetricKind::Gauge,
        );

        let t = Instant::now();
        for e in self.node.scrape(&mut scrape) {
            report.errors.push(("node", e.to_string()));
            self.errors_total[0].1 += 1;
        }
        durations.push([("reader", "node")], t.elapsed().as_secs_f64());

        let t = Instant::now();
        let (errs, seen) = self.cgroup.scrape(&mut scrape);
        for e in errs {
            report.errors.push(("cgroup", e.to_string()));
            self.errors_total[1].1 += 1;
        }
        durations.push([("reader", "cgroup")], t.elapsed().as_secs_f64());

        let mut errors = MetricFamily::new(
            "vigil_agent_scrape_errors_total",
            "Files that could not be read or parsed, by reader.",
            MetricKind::Counter,
        );
        for (reader, n) in self.errors_total {
            errors.push([("reader", reader)], n as f64);
        }
        let mut cgroups = MetricFamily::new(
            "vigil_agent_cgroups",
            "Container cgroups seen in the last scrape.",
            MetricKind::Gauge,
        );
        cgroups.push(Vec::<(String, String)>::new(), seen as f64);
        scrape.families.extend([durations, errors, cgroups]);
        (scrape, report)
    }
}
