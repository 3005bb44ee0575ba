//! One scrape of every reader, stamped with one timestamp. [`Scraper`] keeps
//! what must live between scrapes (discovered cgroups, OOM counters, the
//! kernel-log position), so a scrape costs what changed, not what ever was.

use crate::cgroup::CgroupReader;
use crate::config::Config;
use crate::model::Scrape;
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
}

impl Scraper {
    pub fn new(config: &Config) -> Self {
        Scraper {
            node: NodeReader::new(&config.host_root),
            cgroup: CgroupReader::new(&config.host_root),
        }
    }

    /// Reads everything once.
    pub fn scrape(&mut self) -> (Scrape, ScrapeReport) {
        let mut scrape = Scrape::new(crate::run::now_ms());
        let mut report = ScrapeReport::default();
        for e in self.node.scrape(&mut scrape) {
            report.errors.push(("node", e.to_string()));
        }
        for e in self.cgroup.scrape(&mut scrape) {
            report.errors.push(("cgroup", e.to_string()));
        }
        (scrape, report)
    }
}
