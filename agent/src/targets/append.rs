//! One target's scrapes turned into samples with Prometheus's scrape-loop
//! semantics (scrape/scrape.go `append` and `report`): target labels added
//! (`honor_labels`: the exposed label wins; otherwise the exposed one is kept
//! as `exported_<name>`), `metric_relabel_configs`, label and sample limits
//! (a breach fails the whole scrape), explicit timestamps honoured or not,
//! duplicates and out-of-order samples dropped and counted, staleness markers
//! for series that disappear or whose target fails, and the report series
//! `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling`, `scrape_series_added`.
//!
//! Pure and clock-free: the caller passes the body, the scrape time and the
//! duration. Series are cached by their exposed text, so a known series costs
//! one hash lookup and no label parsing. Not here: fetching, scheduling.

use std::collections::HashMap;
use std::sync::Arc;

use vigil_common::exposition::{self, Entry, Format, MetricType, STALE_NAN};
use vigil_common::relabel::{self, Relabel, is_legacy_label_name};
use vigil_common::{Labels, LabelsBuilder};
use vigil_proto::v1 as pb;

use crate::model::{FamilyMetadata, TargetScrape, TargetSeries};

/// Per-target limits; 0 is no limit (Prometheus's convention).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub sample_limit: usize,
    pub label_limit: usize,
    pub label_name_length_limit: usize,
    pub label_value_length_limit: usize,
}

/// How a target's samples are labelled and limited.
#[derive(Debug, Clone)]
pub struct AppendConfig {
    /// The target's public labels (`job`, `instance`, `node`, …).
    pub target_labels: Labels,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub limits: Limits,
    pub metric_relabel: Arc<Vec<Relabel>>,
}

/// What one scrape came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Samples to ship: the scrape's, staleness markers, the report series.
    pub scrape: TargetScrape,
    /// Why the scrape failed (`up` = 0), if it did.
    pub error: Option<String>,
    pub scraped: usize,
    pub post_relabel: usize,
    pub series_added: usize,
    /// Samples dropped as duplicates or out of order (not failures).
    pub dropped_out_of_order: usize,
    /// Staleness markers written.
    pub stale_markers: usize,
}

struct Known {
    series: Arc<TargetSeries>,
    last_iter: u64,
    /// Newest timestamp shipped for the series.
    last_ts: i64,
}

/// Samples more than this far in the future are refused (Prometheus's `maxAheadTime`).
const MAX_AHEAD_MS: i64 = 10 * 60 * 1000;

const REPORT_NAMES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// A family's `# TYPE`, `# HELP` and `# UNIT` as read in one body.
type FamilyLines<'a> = (Option<MetricType>, Option<String>, Option<&'a str>);

/// The state one target keeps between its scrapes.
pub struct Appender {
    cfg: AppendConfig,
    /// Exposed series text → series id.
    cache: HashMap<Box<[u8]>, u64>,
    /// Final label set (stable hash) → series id: two texts of one series
    /// (`a` and `a{}`) are one series.
    by_labels: HashMap<u64, u64>,
    series: HashMap<u64, Known>,
    dropped: HashMap<Box<[u8]>, u64>,
    iter: u64,
    /// Series of the last successful scrape that carried no timestamp.
    prev: HashMap<u64, Arc<TargetSeries>>,
    report: Vec<Arc<TargetSeries>>,
    metadata: HashMap<String, FamilyMetadata>,
}

impl Appender {
    pub fn new(cfg: AppendConfig) -> Self {
        let report = REPORT_NAMES
            .iter()
            .map(|n| TargetSeries::new(report_labels(n, &cfg.target_labels)))
            .collect();
        Appender {
            cfg,
            cache: HashMap::new(),
            by_labels: HashMap::new(),
            series: HashMap::new(),
            dropped: HashMap::new(),
            iter: 0,
            prev: HashMap::new(),
            report,
            metadata: HashMap::new(),
        }
    }

    /// Series currently cached (for self-metrics).
    pub fn cached_series(&self) -> usize {
        self.series.len()
    }

    /// One scrape: `body` is the response (with its format) or why fetching
    /// failed; `ts` is the scrape's time (ms), `now_ms` the wall clock.
    pub fn append(
        &mut self,
        body: Result<(&[u8], Format), String>,
        ts: i64,
        now_ms: i64,
        duration_s: f64,
    ) -> Outcome {
        let mut out = Outcome::default();
        // This scrape's series: (series, tracked for staleness, newest timestamp).
        let mut cur: HashMap<u64, (Arc<TargetSeries>, bool, i64)> = HashMap::new();
        let error = match body {
            Err(e) => Some(e),
            Ok((b, format)) => self.parse(b, format, ts, now_ms, &mut out, &mut cur).err(),
        };
        if let Some(e) = &error {
            // As a failed scrape in Prometheus: nothing of it is kept, and
            // every series of the last good scrape goes stale.
            out.scrape.samples.clear();
            out.scrape.metadata.clear();
            cur.clear();
            out.error = Some(e.clone());
        } else {
            for (id, (_, _, t)) in &cur {
                if let Some(k) = self.series.get_mut(id) {
                    k.last_ts = *t;
                }
            }
            self.iter += 1;
            let iter = self.iter;
            self.series.retain(|_, k| k.last_iter == iter);
            let series = &self.series;
            self.cache.retain(|_, id| series.contains_key(id));
            self.by_labels.retain(|_, id| series.contains_key(id));
            self.dropped.retain(|_, i| *i == iter);
        }
        let stale = f64::from_bits(STALE_NAN);
        for (id, s) in &self.prev {
            if !cur.contains_key(id) {
                out.scrape.samples.push((s.clone(), ts, stale));
                out.stale_markers += 1;
            }
        }
        self.prev = cur
            .into_iter()
            .filter(|(_, (_, track, _))| *track)
            .map(|(id, (s, _, _))| (id, s))
            .collect();
        let up = if error.is_none() { 1.0 } else { 0.0 };
        let values = [
            up,
            duration_s,
            out.scraped as f64,
            out.post_relabel as f64,
            out.series_added as f64,
        ];
        for (s, v) in self.report.iter().zip(values) {
            out.scrape.samples.push((s.clone(), ts, v));
        }
        out
    }

    /// Staleness markers for everything this target last exposed and for its
    /// report series: the target is gone.
    pub fn stale_all(&mut self, ts: i64) -> TargetScrape {
        let stale = f64::from_bits(STALE_NAN);
        let mut samples: Vec<_> = self.prev.drain().map(|(_, s)| (s, ts, stale)).collect();
        samples.extend(self.report.iter().map(|s| (s.clone(), ts, stale)));
        TargetScrape {
            samples,
            metadata: Vec::new(),
        }
    }

    fn parse(
        &mut self,
        b: &[u8],
        format: Format,
        default_ts: i64,
        now_ms: i64,
        out: &mut Outcome,
        cur: &mut HashMap<u64, (Arc<TargetSeries>, bool, i64)>,
    ) -> Result<(), String> {
        let mut p = exposition::Parser::new(b, format);
        let mut sample_limit_hit = false;
        let mut families: HashMap<&str, FamilyLines<'_>> = HashMap::new();
        let iter = self.iter + 1;
        loop {
            let entry = match p.next() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            };
            let (series_text, value, exposed_ts) = match entry {
                Entry::Sample {
                    series,
                    value,
                    timestamp_ms,
                } => (series, value, timestamp_ms),
                Entry::Type { name, kind } => {
                    families.entry(name).or_default().0 = Some(kind);
                    continue;
                }
                Entry::Help { name, text } => {
                    families.entry(name).or_default().1 = Some(text.into_owned());
                    continue;
                }
                Entry::Unit { name, unit } => {
                    families.entry(name).or_default().2 = Some(unit);
                    continue;
                }
                Entry::Comment => continue,
            };
            out.scraped += 1;
            let exposed_ts = exposed_ts.filter(|_| self.cfg.honor_timestamps);
            let t = exposed_ts.unwrap_or(default_ts);
            if let Some(i) = self.dropped.get_mut(series_text) {
                *i = iter;
                continue;
            }
            let (id, is_new) = match self.cache.get(series_text) {
                Some(id) => (*id, false),
                None => {
                    let exposed = p.labels().map_err(|e| e.to_string())?;
                    let Some(lset) = self.mutate(exposed) else {
                        self.dropped.insert(series_text.into(), iter);
                        continue;
                    };
                    self.validate(&lset)?;
                    let h = lset.stable_hash();
                    let known =
                        self.by_labels.get(&h).copied().filter(|id| {
                            self.series.get(id).is_some_and(|k| k.series.labels == lset)
                        });
                    let id = match known {
                        Some(id) => id,
                        None => {
                            let series = TargetSeries::new(lset);
                            let id = series.id;
                            self.series.insert(
                                id,
                                Known {
                                    series,
                                    last_iter: iter,
                                    last_ts: i64::MIN,
                                },
                            );
                            self.by_labels.insert(h, id);
                            id
                        }
                    };
                    self.cache.insert(series_text.into(), id);
                    (id, known.is_none())
                }
            };
            let Some(known) = self.series.get_mut(&id) else {
                continue;
            };
            known.last_iter = iter;
            out.post_relabel += 1;
            if self.cfg.limits.sample_limit > 0 && out.post_relabel > self.cfg.limits.sample_limit {
                // Keep reading so the scraped count is right (Prometheus does).
                sample_limit_hit = true;
                continue;
            }
            if t > now_ms + MAX_AHEAD_MS {
                out.dropped_out_of_order += 1;
                continue;
            }
            // The first sample of a series at a timestamp wins; an older one
            // is dropped (Prometheus's storage does the same).
            let newest = cur.get(&id).map_or(known.last_ts, |c| c.2);
            if t <= newest {
                out.dropped_out_of_order += 1;
                continue;
            }
            let series = known.series.clone();
            let track = exposed_ts.is_none() || cur.get(&id).is_some_and(|c| c.1);
            cur.insert(id, (series.clone(), track, t));
            out.scrape.samples.push((series, t, value));
            if is_new {
                out.series_added += 1;
            }
        }
        if sample_limit_hit {
            return Err(format!(
                "sample_limit exceeded (samples after relabeling: {}, limit: {})",
                out.post_relabel, self.cfg.limits.sample_limit
            ));
        }
        for (name, (kind, help, unit)) in families {
            let m = FamilyMetadata {
                family: name.to_string(),
                kind: kind.map_or(pb::MetricType::Unknown, to_proto),
                help: help.unwrap_or_default(),
                unit: unit.unwrap_or_default().to_string(),
            };
            if self.metadata.get(name) != Some(&m) {
                self.metadata.insert(name.to_string(), m.clone());
                out.scrape.metadata.push(m);
            }
        }
        Ok(())
    }

    /// Target labels in, then `metric_relabel_configs`; `None`: dropped.
    fn mutate(&self, exposed: Labels) -> Option<Labels> {
        let target = &self.cfg.target_labels;
        let mut b = LabelsBuilder::new(exposed.clone());
        if self.cfg.honor_labels {
            for (k, v) in target.iter() {
                if exposed.get(k).is_none() {
                    b.set(k, v);
                }
            }
        } else {
            let mut conflicts: Vec<(String, String)> = Vec::new();
            for (k, v) in target.iter() {
                if let Some(e) = exposed.get(k).filter(|e| !e.is_empty()) {
                    conflicts.push((k.to_string(), e.to_string()));
                }
                b.set(k, v);
            }
            conflicts.sort_by_key(|(k, _)| k.len());
            for i in 0..conflicts.len() {
                let mut name = conflicts[i].0.clone();
                loop {
                    name = format!("exported_{name}");
                    if exposed.get(&name).is_none()
                        && target.get(&name).is_none()
                        && !conflicts[..i].iter().any(|(k, _)| *k == name)
                    {
                        break;
                    }
                }
                conflicts[i].0 = name;
            }
            for (k, v) in &conflicts {
                b.set(k, v);
            }
        }
        let lset = b.labels();
        if self.cfg.metric_relabel.is_empty() {
            return Some(lset);
        }
        relabel::process(&self.cfg.metric_relabel, lset).filter(|l| !l.is_empty())
    }

    fn validate(&self, l: &Labels) -> Result<(), String> {
        let Some(name) = l.metric_name() else {
            return Err("__name__ label is missing".into());
        };
        if !is_metric_name(name) || l.iter().any(|(k, _)| !is_legacy_label_name(k)) {
            return Err(format!("invalid metric name or label names: {l}"));
        }
        let lim = &self.cfg.limits;
        if lim.label_limit > 0 && l.len() > lim.label_limit {
            return Err(format!(
                "label_limit exceeded (metric: {:.50}, number of labels: {}, limit: {})",
                name,
                l.len(),
                lim.label_limit
            ));
        }
        for (k, v) in l.iter() {
            if lim.label_name_length_limit > 0 && k.len() > lim.label_name_length_limit {
                return Err(format!(
                    "label_name_length_limit exceeded (metric: {name:.50}, label name: {k:.50}, length: {}, limit: {})",
                    k.len(),
                    lim.label_name_length_limit
                ));
            }
            if lim.label_value_length_limit > 0 && v.len() > lim.label_value_length_limit {
                return Err(format!(
                    "label_value_length_limit exceeded (metric: {name:.50}, label name: {k:.50}, value: {v:.50?}, length: {}, limit: {})",
                    v.len(),
                    lim.label_value_length_limit
                ));
            }
        }
        Ok(())
    }
}

/// A report series: its name and the target's labels (`mutateReportSampleLabels`).
fn report_labels(name: &str, target: &Labels) -> Labels {
    let mut v: Vec<(String, String)> = target
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.push(("__name__".to_string(), name.to_string()));
    Labels::new(v)
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

fn to_proto(t: MetricType) -> pb::MetricType {
    match t {
        MetricType::Counter => pb::MetricType::Counter,
        MetricType::Gauge => pb::MetricType::Gauge,
        MetricType::Histogram | MetricType::GaugeHistogram => pb::MetricType::Histogram,
        MetricType::Summary => pb::MetricType::Summary,
        MetricType::Info => pb::MetricType::Info,
        MetricType::StateSet => pb::MetricType::Stateset,
        MetricType::Unknown => pb::MetricType::Unknown,
    }
}

#[cfg(test)]
mod tests;
