//! One scrape of every reader, stamped with one timestamp. [`Scraper`] keeps
//! what must live between scrapes (discovered cgroups, OOM counters, the
//! kernel-log position), so a scrape costs what changed, not what ever was.

use crate::cgroup::CgroupReader;
use crate::config::Config;
use crate::model::Scrape;
use crate::node::NodeReader;
use crate::procs::ProcessReader;

/// Errors met during one scrape, by reader; the scrape itself always completes.
#[derive(Debug, Default)]
pub struct ScrapeReport {
    pub errors: Vec<(&'static str, String)>,
    /// Time each reader took.
    pub durations: Vec<(&'static str, std::time::Duration)>,
    /// Processes read by the process reader.
    pub processes: usize,
    /// Container cgroups reported.
    pub containers: usize,
}

/// Holds the readers and their state across scrapes.
pub struct Scraper {
    node: NodeReader,
    cgroup: CgroupReader,
    procs: ProcessReader,
}

impl Scraper {
    pub fn new(config: &Config) -> Self {
        Scraper {
            node: NodeReader::new(&config.host_root),
            cgroup: CgroupReader::new(&config.host_root),
            procs: ProcessReader::new(&config.host_root, config.processes.clone()),
        }
    }

    /// Reads everything once.
    pub fn scrape(&mut self) -> (Scrape, ScrapeReport) {
        let mut scrape = Scrape::new(crate::run::now_ms());
        let mut report = ScrapeReport::default();
        let t = std::time::Instant::now();
        for e in self.node.scrape(&mut scrape) {
            report.errors.push(("node", e.to_string()));
        }
        report.durations.push(("node", t.elapsed()));
        let t = std::time::Instant::now();
        for e in self.cgroup.scrape(&mut scrape) {
            report.errors.push(("cgroup", e.to_string()));
        }
        report.durations.push(("cgroup", t.elapsed()));
        report.containers = self.cgroup.cached();
        let t = std::time::Instant::now();
        let cgroup = &self.cgroup;
        let summary = self.procs.scrape(&mut scrape, &|p| cgroup.labels_for(p));
        for _ in 0..summary.errors {
            report
                .errors
                .push(("process", "unreadable /proc/<pid>/stat".to_string()));
        }
        report.processes = summary.processes;
        report.durations.push(("process", t.elapsed()));
        (scrape, report)
    }
}
