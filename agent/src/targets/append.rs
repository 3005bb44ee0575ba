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
//! duration. A known series costs no label parsing: its text is compared with
//! the text at the same place in the last scrape (targets expose their series
//! in a stable order, so a scrape reads its state in memory order), and only a
//! text out of place is looked up by hash. Not here: fetching, scheduling.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

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

/// The maps of the per-sample path: foldhash (seeded per map) instead of
/// SipHash, which was a tenth of the agent's CPU at 50,000 samples/s.
type Map<K, V> = HashMap<K, V, RandomState>;

/// The per-series state, in a slab (`Appender::slots`): a scrape that
/// exposes its series in the order of the last one reads it in order
/// (through `Appender::order`) instead of hashing its way in.
struct Known {
    /// `None`: a free slot.
    series: Option<Arc<TargetSeries>>,
    /// The last scrape (`Appender::iter + 1` while it runs) that exposed it.
    last_iter: u64,
    /// Newest timestamp shipped for the series.
    last_ts: i64,
    /// The scrape (`Appender::scrape_no`) that last accepted a sample of
    /// the series, that sample's timestamp, and whether one of its samples
    /// there carried no timestamp (it is tracked for staleness).
    cur_scrape: u64,
    cur_ts: i64,
    track: bool,
    /// Where the series' text sat in the last successful scrape (`Appender::order`).
    pos: u32,
}

/// An `Appender::order` entry whose text relabeling dropped.
const DROPPED: u32 = u32::MAX;

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

/// The series texts of one scrape in the order they came: (start and end in
/// `text`, slot or `DROPPED`).
#[derive(Default)]
struct Order {
    text: Vec<u8>,
    entries: Vec<(u32, u32, u32)>,
}

impl Order {
    fn get(&self, i: usize) -> Option<(&[u8], u32)> {
        let &(a, b, slot) = self.entries.get(i)?;
        Some((&self.text[a as usize..b as usize], slot))
    }

    fn push(&mut self, text: &[u8], slot: u32) -> Option<u32> {
        let pos = u32::try_from(self.entries.len()).ok()?;
        let a = u32::try_from(self.text.len()).ok()?;
        let b = u32::try_from(self.text.len() + text.len()).ok()?;
        self.text.extend_from_slice(text);
        self.entries.push((a, b, slot));
        Some(pos)
    }

    fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
    }
}

/// The state one target keeps between its scrapes.
pub struct Appender {
    cfg: AppendConfig,
    /// Series state; `free` lists the empty slots.
    slots: Vec<Known>,
    free: Vec<u32>,
    /// Exposed series text → slot, for texts not where `order` expects them.
    cache: Map<Box<[u8]>, u32>,
    /// Final label set (stable hash) → slot: two texts of one series
    /// (`a` and `a{}`) are one series.
    by_labels: Map<u64, u32>,
    dropped: Map<Box<[u8]>, u64>,
    /// Successful scrapes so far.
    iter: u64,
    /// Scrapes so far, failed ones included.
    scrape_no: u64,
    /// The texts of the last successful scrape, in order, and the one being read.
    order: Order,
    next_order: Order,
    /// Slots that took a sample in the scrape being read.
    cur: Vec<u32>,
    /// Series of the last successful scrape that carried no timestamp.
    prev: Vec<(Arc<TargetSeries>, u32)>,
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
            slots: Vec::new(),
            free: Vec::new(),
            cache: Map::default(),
            by_labels: Map::default(),
            dropped: Map::default(),
            iter: 0,
            scrape_no: 0,
            order: Order::default(),
            next_order: Order::default(),
            cur: Vec::new(),
            prev: Vec::new(),
            report,
            metadata: HashMap::new(),
        }
    }

    /// Series currently cached (for self-metrics).
    pub fn cached_series(&self) -> usize {
        self.slots.len() - self.free.len()
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
        self.scrape_no += 1;
        self.cur.clear();
        self.next_order.clear();
        let error = match body {
            Err(e) => Some(e),
            Ok((b, format)) => self.parse(b, format, ts, now_ms, &mut out).err(),
        };
        let stale = f64::from_bits(STALE_NAN);
        let mut prev = std::mem::take(&mut self.prev);
        if let Some(e) = &error {
            // As a failed scrape in Prometheus: nothing of it is kept, and
            // every series of the last good scrape goes stale.
            out.scrape.samples.clear();
            out.scrape.metadata.clear();
            out.error = Some(e.clone());
            for (s, _) in prev.drain(..) {
                out.scrape.samples.push((s, ts, stale));
                out.stale_markers += 1;
            }
        } else {
            let now = self.scrape_no;
            for (s, slot) in prev.drain(..) {
                let k = &self.slots[slot as usize];
                let seen =
                    k.cur_scrape == now && k.series.as_ref().is_some_and(|x| Arc::ptr_eq(x, &s));
                if !seen {
                    out.scrape.samples.push((s, ts, stale));
                    out.stale_markers += 1;
                }
            }
            for &slot in &self.cur {
                let k = &mut self.slots[slot as usize];
                k.last_ts = k.cur_ts;
                if k.track
                    && let Some(s) = &k.series
                {
                    prev.push((s.clone(), slot));
                }
            }
            self.iter += 1;
            self.forget_unseen();
            std::mem::swap(&mut self.order, &mut self.next_order);
        }
        self.prev = prev;
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

    /// After a successful scrape: series it did not expose are forgotten.
    fn forget_unseen(&mut self) {
        let iter = self.iter;
        let mut freed = false;
        for (i, k) in self.slots.iter_mut().enumerate() {
            if k.series.is_some() && k.last_iter != iter {
                k.series = None;
                self.free.push(i as u32);
                freed = true;
            }
        }
        // the maps into `slots` lose entries only when it did
        if freed || self.cache.len() > self.cached_series() {
            let slots = &self.slots;
            let live = |s: &u32| slots[*s as usize].series.is_some();
            self.cache.retain(|_, s| live(s));
            self.by_labels.retain(|_, s| live(s));
        }
        self.dropped.retain(|_, i| *i == iter);
    }

    /// Staleness markers for everything this target last exposed and for its
    /// report series: the target is gone.
    pub fn stale_all(&mut self, ts: i64) -> TargetScrape {
        let stale = f64::from_bits(STALE_NAN);
        let mut samples: Vec<_> = self.prev.drain(..).map(|(s, _)| (s, ts, stale)).collect();
        samples.extend(self.report.iter().map(|s| (s.clone(), ts, stale)));
        TargetScrape {
            samples,
            metadata: Vec::new(),
        }
    }

    /// The slot of a series text: where the last scrape had it (`at`, moved
    /// on past it), else through the cache, else a new series.
    /// `Ok(None)`: relabeling dropped it.
    fn resolve(
        &mut self,
        p: &exposition::Parser<'_>,
        text: &[u8],
        at: &mut usize,
        iter: u64,
    ) -> Result<Option<(u32, bool)>, String> {
        if let Some((t, slot)) = self.order.get(*at)
            && t == text
        {
            *at += 1;
            if slot == DROPPED {
                if let Some(i) = self.dropped.get_mut(text) {
                    *i = iter;
                }
                return Ok(None);
            }
            return Ok(Some((slot, false)));
        }
        if !self.dropped.is_empty()
            && let Some(i) = self.dropped.get_mut(text)
        {
            *i = iter;
            return Ok(None);
        }
        if let Some(&slot) = self.cache.get(text) {
            // back in step with the last scrape's order after this text
            *at = self.slots[slot as usize].pos as usize + 1;
            return Ok(Some((slot, false)));
        }
        let exposed = p.labels().map_err(|e| e.to_string())?;
        let Some(lset) = self.mutate(exposed) else {
            self.dropped.insert(text.into(), iter);
            return Ok(None);
        };
        self.validate(&lset)?;
        let h = lset.stable_hash();
        let known = self.by_labels.get(&h).copied().filter(|s| {
            self.slots[*s as usize]
                .series
                .as_ref()
                .is_some_and(|k| k.labels == lset)
        });
        let slot = match known {
            Some(s) => s,
            None => {
                let k = Known {
                    series: Some(TargetSeries::new(lset)),
                    last_iter: iter,
                    last_ts: i64::MIN,
                    cur_scrape: 0,
                    cur_ts: i64::MIN,
                    track: false,
                    pos: u32::MAX,
                };
                let s = match self.free.pop() {
                    Some(s) => {
                        self.slots[s as usize] = k;
                        s
                    }
                    None => {
                        self.slots.push(k);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.by_labels.insert(h, s);
                s
            }
        };
        self.cache.insert(text.into(), slot);
        Ok(Some((slot, known.is_none())))
    }

    fn parse(
        &mut self,
        b: &[u8],
        format: Format,
        default_ts: i64,
        now_ms: i64,
        out: &mut Outcome,
    ) -> Result<(), String> {
        let mut p = exposition::Parser::new(b, format);
        let mut sample_limit_hit = false;
        let mut families: HashMap<&str, FamilyLines<'_>> = HashMap::new();
        let iter = self.iter + 1;
        let now = self.scrape_no;
        let mut at = 0usize;
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
            let Some((slot, is_new)) = self.resolve(&p, series_text, &mut at, iter)? else {
                self.next_order.push(series_text, DROPPED);
                continue;
            };
            let known = &mut self.slots[slot as usize];
            if let Some(pos) = self.next_order.push(series_text, slot) {
                known.pos = pos;
            }
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
            if known.cur_scrape == now {
                if t <= known.cur_ts {
                    out.dropped_out_of_order += 1;
                    continue;
                }
                known.track |= exposed_ts.is_none();
                known.cur_ts = t;
            } else {
                if t <= known.last_ts {
                    out.dropped_out_of_order += 1;
                    continue;
                }
                known.cur_scrape = now;
                known.cur_ts = t;
                known.track = exposed_ts.is_none();
                self.cur.push(slot);
            }
            let Some(series) = known.series.clone() else {
                continue;
            };
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
