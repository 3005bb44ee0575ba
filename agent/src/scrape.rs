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
    /// Cgroup files held open, and the most that may be.
    pub cgroup_open_files: (usize, usize),
    /// Cgroup discovery: inotify watches, full walks so far, degraded.
    pub cgroup_discovery: (usize, u64, bool),
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
            node: NodeReader::new(&config.host_root)
                .with_textfile_directory(config.textfile_directory.clone()),
            cgroup: CgroupReader::with_open_files(&config.host_root, config.cgroup_open_files),
            procs: ProcessReader::new(&config.host_root, config.processes.clone()),
        }
    }

    /// Only the OOM kills the kernel logged since the last scrape (events and
    /// their counter), shipped between scrapes when the kernel log shows one.
    pub fn events(&mut self) -> (Scrape, Vec<String>) {
        let mut scrape = Scrape::new(vigil_common::time::now_ms());
        let errors = self
            .cgroup
            .drain_events(&mut scrape)
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        (scrape, errors)
    }

    /// Reads everything once.
    pub fn scrape(&mut self) -> (Scrape, ScrapeReport) {
        let mut scrape = Scrape::new(vigil_common::time::now_ms());
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
        report.cgroup_open_files = (self.cgroup.open_files(), self.cgroup.open_files_limit());
        let (watches, walks, degraded) = self.cgroup.discovery();
        if let Some(why) = &degraded
            && walks == 1
        {
            report
                .errors
                .push(("cgroup", format!("discovery degraded: {why}")));
        }
        report.cgroup_discovery = (watches, walks, degraded.is_some());
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
