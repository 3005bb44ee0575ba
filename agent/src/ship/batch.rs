//! Sealing: scrapes and log entries become self-contained `vigil.v1.Batch`es
//! (refs local to the batch, every label set defined inside it), so a batch
//! can sit in the disk buffer and be sent on any later stream. Stream-level
//! interning happens at send time ([`StreamInterner`]).

use std::collections::HashMap;

use vigil_proto::v1 as pb;

use super::{LogRecord, SourceKey};
use crate::model::{Event, Scrape, TargetScrape};

/// Builds one batch.
pub struct Builder {
    node: String,
    batch: pb::Batch,
    series: HashMap<Vec<(String, String)>, u32>,
    /// Application targets' series by their id (see `TargetSeries`).
    target_series: HashMap<u64, u32>,
    sources: HashMap<SourceKey, u32>,
    next_ref: u32,
    bytes: usize,
    sent_metadata: std::collections::HashSet<String>,
    /// The last log record's stream and source with their refs: consecutive
    /// records of one file skip the interning lookups.
    last_log: Option<(vigil_common::Labels, u32, SourceKey, u32)>,
}

impl Builder {
    pub fn new(node: &str) -> Self {
        Builder {
            node: node.to_string(),
            batch: pb::Batch::default(),
            series: HashMap::new(),
            target_series: HashMap::new(),
            sources: HashMap::new(),
            next_ref: 1,
            bytes: 0,
            last_log: None,
            sent_metadata: Default::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batch.samples.is_empty()
            && self.batch.logs.is_empty()
            && self.batch.events.is_empty()
            && self.batch.metadata.is_empty()
    }

    /// Approximate encoded size so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn intern(&mut self, mut labels: Vec<(String, String)>) -> u32 {
        labels.push(("node".to_string(), self.node.clone()));
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        if let Some(r) = self.series.get(&labels) {
            return *r;
        }
        let r = self.next_ref;
        self.next_ref += 1;
        self.bytes += 8 + labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>();
        self.batch.series.push(pb::SeriesDef {
            r#ref: r,
            labels: labels
                .iter()
                .map(|(k, v)| pb::Label {
                    name: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        });
        self.series.insert(labels, r);
        r
    }

    /// Adds a scrape's samples from family `from` on, stopping once the batch
    /// holds `max_bytes`; returns the index of the first family not added
    /// (`families.len()` when all were).
    pub fn add_scrape(&mut self, s: &Scrape, from: usize, max_bytes: usize) -> usize {
        let mut block = pb::SampleBlock {
            timestamp_ms: s.timestamp_ms,
            refs: Vec::new(),
            values: Vec::new(),
        };
        let mut i = from;
        while i < s.families.len() {
            if self.bytes >= max_bytes && (!block.refs.is_empty() || !self.is_empty()) {
                break;
            }
            let f = &s.families[i];
            if !self.sent_metadata.contains(&f.name) {
                self.sent_metadata.insert(f.name.clone());
                self.batch.metadata.push(pb::MetricMetadata {
                    family: f.name.clone(),
                    r#type: f.kind.to_proto() as i32,
                    help: f.help.clone(),
                    unit: String::new(),
                });
            }
            for smp in &f.samples {
                let mut labels = Vec::with_capacity(smp.labels.len() + 2);
                labels.extend(smp.labels.iter().cloned());
                labels.push(("__name__".to_string(), f.name.clone()));
                let r = self.intern(labels);
                block.refs.push(r);
                block.values.push(smp.value);
                self.bytes += 12;
            }
            i += 1;
        }
        if !block.refs.is_empty() {
            self.batch.samples.push(block);
        }
        i
    }

    /// Adds a target scrape's samples from `from` on (metadata first, once
    /// per family), stopping once the batch holds `max_bytes`; returns the
    /// index of the first sample not added. Consecutive samples with one
    /// timestamp share a block.
    pub fn add_target(&mut self, s: &TargetScrape, from: usize, max_bytes: usize) -> usize {
        if from == 0 {
            for m in &s.metadata {
                if self.sent_metadata.insert(m.family.clone()) {
                    self.bytes += 16 + m.family.len() + m.help.len();
                    self.batch.metadata.push(pb::MetricMetadata {
                        family: m.family.clone(),
                        r#type: m.kind as i32,
                        help: m.help.clone(),
                        unit: m.unit.clone(),
                    });
                }
            }
        }
        let mut i = from;
        let mut block: Option<pb::SampleBlock> = None;
        while i < s.samples.len() {
            if self.bytes >= max_bytes && i > from {
                break;
            }
            let (series, ts, v) = &s.samples[i];
            let r = match self.target_series.get(&series.id) {
                Some(r) => *r,
                None => {
                    let r = self.next_ref;
                    self.next_ref += 1;
                    self.bytes += 8 + series
                        .labels
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 4)
                        .sum::<usize>();
                    self.batch.series.push(pb::SeriesDef {
                        r#ref: r,
                        labels: series
                            .labels
                            .iter()
                            .map(|(k, v)| pb::Label {
                                name: k.to_string(),
                                value: v.to_string(),
                            })
                            .collect(),
                    });
                    self.target_series.insert(series.id, r);
                    r
                }
            };
            match &mut block {
                Some(b) if b.timestamp_ms == *ts => {}
                _ => {
                    if let Some(b) = block.take() {
                        self.batch.samples.push(b);
                    }
                    block = Some(pb::SampleBlock {
                        timestamp_ms: *ts,
                        refs: Vec::new(),
                        values: Vec::new(),
                    });
                }
            }
            if let Some(b) = &mut block {
                b.refs.push(r);
                b.values.push(*v);
            }
            self.bytes += 12;
            i += 1;
        }
        if let Some(b) = block {
            self.batch.samples.push(b);
        }
        i
    }

    pub fn add_events(&mut self, events: &[Event]) {
        for e in events {
            let subject = self.intern(e.subject.clone());
            self.bytes += 32 + e.kind.len();
            self.batch.events.push(pb::Event {
                timestamp_ms: e.timestamp_ms,
                kind: e.kind.clone(),
                subject_ref: subject,
                attributes: e.attributes.iter().cloned().collect(),
            });
        }
    }

    pub fn add_log(&mut self, l: &LogRecord) {
        let (stream, source) = match &self.last_log {
            Some((labels, st, src, sr)) if *labels == l.stream && *src == l.source => (*st, *sr),
            _ => {
                let stream = self.intern(
                    l.stream
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
                let source = match self.sources.get(&l.source) {
                    Some(r) => *r,
                    None => {
                        let r = self.sources.len() as u32 + 1;
                        self.batch.sources.push(pb::SourceDef {
                            r#ref: r,
                            path: l.source.path.clone(),
                            device: l.source.device,
                            inode: l.source.inode,
                            fingerprint: l.source.fingerprint,
                        });
                        self.sources.insert(l.source.clone(), r);
                        r
                    }
                };
                self.last_log = Some((l.stream.clone(), stream, l.source.clone(), source));
                (stream, source)
            }
        };
        self.bytes += 32 + l.line.len();
        self.batch.logs.push(pb::LogRecord {
            stream_ref: stream,
            source_ref: source,
            offset: l.offset,
            end_offset: l.end_offset,
            timestamp_ns: l.timestamp_ns,
            line: l.line.clone(),
        });
    }

    /// Seals the batch with `seq`, resetting the builder (metadata already
    /// sent stays remembered, so each family's metadata is sealed once per
    /// agent run; streams re-send it, see [`StreamInterner`]).
    pub fn seal(&mut self, seq: u64, now_ms: i64) -> pb::Batch {
        let mut b = std::mem::take(&mut self.batch);
        self.last_log = None;
        b.seq = seq;
        b.created_ms = now_ms;
        self.series.clear();
        self.target_series.clear();
        self.sources.clear();
        self.next_ref = 1;
        self.bytes = 0;
        b
    }
}

/// A stream's interning table: label sets and sources defined on this
/// stream, and the metadata it carried. Translates a buffered batch (local
/// refs) into what goes on the wire (stream refs, only new definitions).
#[derive(Default)]
pub struct StreamInterner {
    series: HashMap<Vec<pb::Label>, u32>,
    sources: HashMap<(String, u64, u64, u64), u32>,
    metadata: HashMap<String, pb::MetricMetadata>,
    next_series: u32,
    next_source: u32,
}

impl StreamInterner {
    pub fn translate(
        &mut self,
        b: &pb::Batch,
        all_metadata: &HashMap<String, pb::MetricMetadata>,
    ) -> pb::Batch {
        let mut out = pb::Batch {
            seq: b.seq,
            created_ms: b.created_ms,
            ..Default::default()
        };
        let mut local: HashMap<u32, u32> = HashMap::with_capacity(b.series.len());
        for d in &b.series {
            let r = match self.series.get(&d.labels) {
                Some(r) => *r,
                None => {
                    self.next_series += 1;
                    let r = self.next_series;
                    self.series.insert(d.labels.clone(), r);
                    out.series.push(pb::SeriesDef {
                        r#ref: r,
                        labels: d.labels.clone(),
                    });
                    r
                }
            };
            local.insert(d.r#ref, r);
        }
        let map = |r: u32| local.get(&r).copied().unwrap_or(u32::MAX);
        out.samples = b
            .samples
            .iter()
            .map(|blk| pb::SampleBlock {
                timestamp_ms: blk.timestamp_ms,
                refs: blk.refs.iter().map(|r| map(*r)).collect(),
                values: blk.values.clone(),
            })
            .collect();
        let mut local_src: HashMap<u32, u32> = HashMap::new();
        for s in &b.sources {
            let key = (s.path.clone(), s.device, s.inode, s.fingerprint);
            let r = match self.sources.get(&key) {
                Some(r) => *r,
                None => {
                    self.next_source += 1;
                    let r = self.next_source;
                    self.sources.insert(key, r);
                    out.sources.push(pb::SourceDef {
                        r#ref: r,
                        ..s.clone()
                    });
                    r
                }
            };
            local_src.insert(s.r#ref, r);
        }
        out.logs = b
            .logs
            .iter()
            .map(|l| pb::LogRecord {
                stream_ref: map(l.stream_ref),
                source_ref: local_src.get(&l.source_ref).copied().unwrap_or(u32::MAX),
                ..l.clone()
            })
            .collect();
        out.events = b
            .events
            .iter()
            .map(|e| pb::Event {
                subject_ref: map(e.subject_ref),
                ..e.clone()
            })
            .collect();
        // metadata: whatever this stream has not carried yet, for the
        // families this batch uses
        for m in b.metadata.iter().chain(all_metadata.values()) {
            if !self.metadata.contains_key(&m.family) {
                self.metadata.insert(m.family.clone(), m.clone());
                out.metadata.push(m.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MetricFamily, MetricKind};

    fn scrape(t: i64) -> Scrape {
        let mut s = Scrape::new(t);
        let mut f = MetricFamily::new("up", "help", MetricKind::Gauge);
        f.push([("job", "a")], 1.0);
        f.push([("job", "b")], 2.0);
        s.families.push(f);
        s
    }

    #[test]
    fn batches_are_self_contained_and_streams_intern() {
        let mut b = Builder::new("n1");
        b.add_scrape(&scrape(1), 0, 1 << 20);
        let b1 = b.seal(1, 1);
        b.add_scrape(&scrape(2), 0, 1 << 20);
        let b2 = b.seal(2, 2);
        assert_eq!(b1.series.len(), 2);
        assert_eq!(b2.series.len(), 2, "each batch defines what it uses");
        assert!(
            b1.series[0]
                .labels
                .iter()
                .any(|l| l.name == "node" && l.value == "n1")
        );
        let mut st = StreamInterner::default();
        let w1 = st.translate(&b1, &HashMap::new());
        let w2 = st.translate(&b2, &HashMap::new());
        assert_eq!(w1.series.len(), 2);
        assert_eq!(w2.series.len(), 0, "the stream already knows them");
        assert_eq!(w1.samples[0].refs, w2.samples[0].refs);
        assert_eq!(w1.metadata.len(), 1);
        assert_eq!(w2.metadata.len(), 0);
    }

    #[test]
    fn target_samples_keep_their_timestamps_and_intern_by_id() {
        use crate::model::{FamilyMetadata, TargetSeries};
        let a = TargetSeries::new(vigil_common::Labels::new([
            ("__name__", "a"),
            ("node", "n"),
        ]));
        let b = TargetSeries::new(vigil_common::Labels::new([
            ("__name__", "b"),
            ("node", "n"),
        ]));
        let t = TargetScrape {
            samples: vec![
                (a.clone(), 5, 1.0),
                (b.clone(), 5, 2.0),
                (a.clone(), 7, 3.0),
            ],
            metadata: vec![FamilyMetadata {
                family: "a".into(),
                kind: pb::MetricType::Histogram,
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let mut bl = Builder::new("n");
        assert_eq!(bl.add_target(&t, 0, 1 << 20), 3);
        let batch = bl.seal(1, 0);
        assert_eq!(batch.series.len(), 2, "a is defined once");
        assert_eq!(batch.samples.len(), 2);
        assert_eq!(batch.samples[0].timestamp_ms, 5);
        assert_eq!(batch.samples[0].values, vec![1.0, 2.0]);
        assert_eq!(batch.samples[1].refs, vec![batch.samples[0].refs[0]]);
        assert_eq!(batch.metadata[0].r#type, pb::MetricType::Histogram as i32);
        // split by size: every sample lands in exactly one batch
        let mut from = 0;
        let mut n = 0;
        while from < t.samples.len() {
            let to = bl.add_target(&t, from, 1);
            n += bl
                .seal(2, 0)
                .samples
                .iter()
                .map(|b| b.refs.len())
                .sum::<usize>();
            from = to;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn large_scrapes_are_split_by_size() {
        let mut s = Scrape::new(1);
        for i in 0..100 {
            let mut f = MetricFamily::new(format!("m{i}"), "", MetricKind::Gauge);
            f.push([("x", "y".repeat(100))], 1.0);
            s.families.push(f);
        }
        let mut b = Builder::new("n");
        let mut from = 0;
        let mut batches = 0;
        while from < s.families.len() {
            from = b.add_scrape(&s, from, 2000);
            b.seal(batches + 1, 0);
            batches += 1;
        }
        assert!(batches > 3, "{batches}");
    }
}
