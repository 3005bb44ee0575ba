//! Sealing: scrapes and log entries become `vigil.v1.Batch`es whose label
//! sets are refs of the agent's series table ([`SeriesTable`], defined once
//! for the table's life, never inside a batch) and whose log sources are
//! defined inside the batch (refs local to it). A sealed batch is what sits in
//! the disk buffer and what goes on the wire, byte for byte.
//! [`legacy_to_table`] turns a batch buffered by an older agent (label sets
//! defined inside it) into that form.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use vigil_proto::v1 as pb;

use super::table::SeriesTable;
use super::{LogRecord, SourceKey};
use crate::model::{Event, Scrape, TargetScrape};

/// Builds one batch.
pub struct Builder {
    table: Arc<Mutex<SeriesTable>>,
    batch: pb::Batch,
    sources: HashMap<SourceKey, u32>,
    bytes: usize,
    sent_metadata: std::collections::HashSet<String>,
    /// The last log record's stream and source with their refs: consecutive
    /// records of one file skip the interning lookups.
    last_log: Option<(Arc<vigil_common::Labels>, u32, Arc<SourceKey>, u32)>,
}

impl Builder {
    pub fn new(table: Arc<Mutex<SeriesTable>>) -> Self {
        Builder {
            table,
            batch: pb::Batch::default(),
            sources: HashMap::new(),
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

    /// Adds a scrape's samples from family `from` on, stopping once the batch
    /// holds `max_bytes`; returns the index of the first family not added
    /// (`families.len()` when all were).
    pub fn add_scrape(&mut self, s: &Scrape, from: usize, max_bytes: usize) -> usize {
        let mut block = pb::SampleBlock {
            timestamp_ms: s.timestamp_ms,
            refs: Vec::new(),
            values: Vec::new(),
        };
        let table = self.table.clone();
        let mut table = table.lock();
        let mut i = from;
        while i < s.families.len() {
            if self.bytes >= max_bytes && (!block.refs.is_empty() || !self.is_empty()) {
                break;
            }
            let f = &s.families[i];
            if !self.sent_metadata.contains(&f.name) {
                self.sent_metadata.insert(f.name.clone());
                self.bytes += 16 + f.name.len() + f.help.len();
                self.batch.metadata.push(pb::MetricMetadata {
                    family: f.name.clone(),
                    r#type: f.kind.to_proto() as i32,
                    help: f.help.clone(),
                    unit: String::new(),
                });
            }
            block.refs.reserve(f.samples.len());
            block.values.reserve(f.samples.len());
            for smp in &f.samples {
                let r = table.intern_sample(&f.name, &smp.labels);
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
        let table = self.table.clone();
        let mut table = table.lock();
        let mut i = from;
        let mut block: Option<pb::SampleBlock> = None;
        while i < s.samples.len() {
            if self.bytes >= max_bytes && i > from {
                break;
            }
            let (series, ts, v) = &s.samples[i];
            let r = table.intern_target(series);
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
            let subject = self.table.lock().intern_pairs(e.subject.clone());
            self.bytes += 32 + e.kind.len();
            self.batch.events.push(pb::Event {
                timestamp_ms: e.timestamp_ms,
                kind: e.kind.clone(),
                subject_ref: subject,
                attributes: e.attributes.iter().cloned().collect(),
            });
        }
    }

    /// Adds a record (its line moves into the batch).
    pub fn add_log(&mut self, l: LogRecord) {
        let (stream, source) = match &self.last_log {
            // `Arc`'s equality looks at the pointer first: records of one
            // stream share theirs
            Some((labels, st, src, sr)) if *labels == l.stream && *src == l.source => (*st, *sr),
            _ => {
                let stream = self.table.lock().intern_pairs(
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
                        self.sources.insert((*l.source).clone(), r);
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
            line: l.line,
        });
    }

    /// Seals the batch with `seq`, resetting the builder (metadata already
    /// sent stays remembered, so each family's metadata is sealed once per
    /// agent run; each stream starts with all of it, see the client). The
    /// table's new definitions must be persisted before the batch is
    /// buffered ([`SeriesTable::persist`]).
    pub fn seal(&mut self, seq: u64, now_ms: i64) -> pb::Batch {
        let mut b = std::mem::take(&mut self.batch);
        self.last_log = None;
        b.seq = seq;
        b.created_ms = now_ms;
        self.sources.clear();
        self.bytes = 0;
        b
    }
}

/// The highest series ref a batch uses (0: none).
pub fn max_ref(b: &pb::Batch) -> u32 {
    let samples = b.samples.iter().flat_map(|s| s.refs.iter().copied());
    let logs = b.logs.iter().map(|l| l.stream_ref);
    let events = b.events.iter().map(|e| e.subject_ref);
    samples.chain(logs).chain(events).max().unwrap_or(0)
}

/// Turns a batch an older agent buffered (label sets defined inside it, refs
/// local to it) into a batch of `table` refs, defining what the table lacks.
/// A ref the batch does not define becomes `u32::MAX` (the collector refuses
/// it, as it refused it before).
pub fn legacy_to_table(b: &pb::Batch, table: &mut SeriesTable) -> pb::Batch {
    let mut local: HashMap<u32, u32> = HashMap::with_capacity(b.series.len());
    for d in &b.series {
        let pairs = d
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        local.insert(d.r#ref, table.intern_labels(pairs));
    }
    let map = |r: u32| local.get(&r).copied().unwrap_or(u32::MAX);
    pb::Batch {
        seq: b.seq,
        created_ms: b.created_ms,
        series: Vec::new(),
        samples: b
            .samples
            .iter()
            .map(|blk| pb::SampleBlock {
                timestamp_ms: blk.timestamp_ms,
                refs: blk.refs.iter().map(|r| map(*r)).collect(),
                values: blk.values.clone(),
            })
            .collect(),
        sources: b.sources.clone(),
        logs: b
            .logs
            .iter()
            .map(|l| pb::LogRecord {
                stream_ref: map(l.stream_ref),
                ..l.clone()
            })
            .collect(),
        events: b
            .events
            .iter()
            .map(|e| pb::Event {
                subject_ref: map(e.subject_ref),
                ..e.clone()
            })
            .collect(),
        metadata: b.metadata.clone(),
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

    fn table() -> Arc<Mutex<SeriesTable>> {
        let d = tempfile::tempdir().unwrap();
        let (t, _) = SeriesTable::open(d.path(), "n1", false).unwrap();
        // the file stays open; the directory may go
        Arc::new(Mutex::new(t))
    }

    #[test]
    fn batches_carry_table_refs_and_no_definitions() {
        let t = table();
        let mut b = Builder::new(t.clone());
        b.add_scrape(&scrape(1), 0, 1 << 20);
        let b1 = b.seal(1, 1);
        b.add_scrape(&scrape(2), 0, 1 << 20);
        let b2 = b.seal(2, 2);
        assert!(b1.series.is_empty() && b2.series.is_empty());
        assert_eq!(b1.samples[0].refs, vec![1, 2]);
        assert_eq!(b2.samples[0].refs, vec![1, 2], "refs live across batches");
        assert_eq!((max_ref(&b1), max_ref(&b2)), (2, 2));
        let t = t.lock();
        assert_eq!(t.len(), 2);
        assert!(
            t.defs(0, 1)[0]
                .labels
                .iter()
                .any(|l| l.name == "node" && l.value == "n1")
        );
        assert_eq!(b1.metadata.len(), 1);
        assert_eq!(b2.metadata.len(), 0, "metadata is sealed once per run");
    }

    #[test]
    fn a_legacy_batch_is_moved_onto_the_table() {
        let t = table();
        let mut b = Builder::new(t.clone());
        b.add_scrape(&scrape(1), 0, 1 << 20);
        let now = b.seal(1, 1);
        let old = pb::Batch {
            seq: 7,
            series: vec![
                pb::SeriesDef {
                    r#ref: 1,
                    labels: vec![
                        pb::Label {
                            name: "__name__".into(),
                            value: "up".into(),
                        },
                        pb::Label {
                            name: "job".into(),
                            value: "b".into(),
                        },
                        pb::Label {
                            name: "node".into(),
                            value: "n1".into(),
                        },
                    ],
                },
                pb::SeriesDef {
                    r#ref: 2,
                    labels: vec![pb::Label {
                        name: "__name__".into(),
                        value: "new".into(),
                    }],
                },
            ],
            samples: vec![pb::SampleBlock {
                timestamp_ms: 5,
                refs: vec![1, 2, 9],
                values: vec![1.0, 2.0, 3.0],
            }],
            ..Default::default()
        };
        let moved = legacy_to_table(&old, &mut t.lock());
        assert!(moved.series.is_empty());
        // job=b is the table's ref 2 already; the new set gets ref 3; an
        // undefined local ref stays undefined
        assert_eq!(now.samples[0].refs, vec![1, 2]);
        assert_eq!(moved.samples[0].refs, vec![2, 3, u32::MAX]);
        assert_eq!(moved.seq, 7);
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
        let tab = table();
        let mut bl = Builder::new(tab.clone());
        assert_eq!(bl.add_target(&t, 0, 1 << 20), 3);
        let batch = bl.seal(1, 0);
        assert_eq!(tab.lock().len(), 2, "a is defined once");
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
        let mut b = Builder::new(table());
        let mut from = 0;
        let mut batches = 0;
        while from < s.families.len() {
            from = b.add_scrape(&s, from, 500);
            b.seal(batches + 1, 0);
            batches += 1;
        }
        assert!(batches > 3, "{batches}");
    }
}
