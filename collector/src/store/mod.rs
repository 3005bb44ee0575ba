//! Series and samples in memory: what ingest appends and what queries read.
//!
//! The contract the rest of the collector relies on:
//! - [`Store::get_or_create`] maps a label set to a [`SeriesRef`] (dense,
//!   process-local; never persist it — persist labels or their stable hash).
//! - [`Store::append`] adds a sample; timestamps are Unix milliseconds.
//!   A staleness marker is the value [`STALE_NAN`] (Prometheus' bit pattern).
//! - [`Queryable::select`] returns the series matching every matcher with
//!   their samples in `[mint, maxt]` (inclusive), in time order.
//!
//! Not here: durability (the WAL in [`crate::wal`]), PromQL (in `promql`).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use parking_lot::RwLock;
use vigil_common::Labels;

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
/// The staleness marker as a float (compare bits with [`is_stale`], not `==`).
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// True when `v` is the staleness marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Handle of a series inside one [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesRef(pub u32);

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    #[error("series limit of {limit} reached; new series refused")]
    SeriesLimit { limit: usize },
    #[error("sample at {timestamp_ms} is older than the series' newest sample at {newest_ms}")]
    OutOfOrder { timestamp_ms: i64, newest_ms: i64 },
    #[error("unknown series reference {0:?}")]
    UnknownSeries(SeriesRef),
}

/// What [`Store::append_batch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendSummary {
    pub appended: u64,
    pub out_of_order: u64,
    pub unknown: u64,
}

/// A label matcher, as PromQL selectors and `match[]` use them.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
}

#[derive(Clone, Debug)]
pub enum MatchOp {
    Equal(String),
    NotEqual(String),
    /// Fully anchored; compile with [`Matcher::regex`] so `.` matches newline.
    Re(regex::Regex),
    NotRe(regex::Regex),
}

impl Matcher {
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal(value.into()),
        }
    }

    /// Compiles `re` the way Prometheus 3 does: anchored at both ends, `.`
    /// matching newline.
    pub fn regex(name: impl Into<String>, re: &str, negate: bool) -> Result<Self, regex::Error> {
        let r = regex::Regex::new(&format!("^(?s:{re})$"))?;
        Ok(Matcher {
            name: name.into(),
            op: if negate {
                MatchOp::NotRe(r)
            } else {
                MatchOp::Re(r)
            },
        })
    }

    /// Whether a label value (empty string for an absent label) matches.
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal(v) => v == value,
            MatchOp::NotEqual(v) => v != value,
            MatchOp::Re(r) => r.is_match(value),
            MatchOp::NotRe(r) => !r.is_match(value),
        }
    }

    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// One series and its samples in a time range.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    /// `(timestamp_ms, value)` in time order; may contain [`STALE_NAN`].
    pub samples: Vec<(i64, f64)>,
}

/// What a query engine needs from storage.
pub trait Queryable: Send + Sync {
    /// Series matching all `matchers`, with their samples in `[mint, maxt]`.
    /// Series with no sample in the range are left out.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples>;

    /// Label sets of the series matching all `matchers` that have a sample in
    /// `[mint, maxt]`.
    fn series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        self.select(matchers, mint, maxt)
            .into_iter()
            .map(|s| s.labels)
            .collect()
    }

    /// Sorted names of the labels (with a non-empty value) of the series
    /// matching all `matchers` (all series when empty) in `[mint, maxt]`.
    fn label_names(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
        let mut names: Vec<String> = self
            .series(matchers, mint, maxt)
            .iter()
            .flat_map(|l| {
                l.iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, _)| k.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Sorted distinct non-empty values of label `name` over the series
    /// matching all `matchers` in `[mint, maxt]`.
    fn label_values(&self, name: &str, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
        let mut vals: Vec<String> = self
            .series(matchers, mint, maxt)
            .iter()
            .filter_map(|l| l.get(name).filter(|v| !v.is_empty()).map(str::to_string))
            .collect();
        vals.sort();
        vals.dedup();
        vals
    }
}

/// Limits and retention of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most series held at once; new series beyond it are refused.
    pub max_series: usize,
    /// Samples older than newest − retention are dropped by [`Store::trim`].
    pub retention_ms: i64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_series: 5_000_000,
            retention_ms: 24 * 3600 * 1000,
        }
    }
}

struct Series {
    labels: Labels,
    samples: Vec<(i64, f64)>,
}

#[derive(Default)]
struct Inner {
    by_labels: HashMap<Labels, SeriesRef>,
    series: Vec<Series>,
}

/// The in-memory store.
pub struct Store {
    opts: StoreOptions,
    inner: RwLock<Inner>,
}

impl Store {
    pub fn new(opts: StoreOptions) -> Self {
        Store {
            opts,
            inner: RwLock::new(Inner::default()),
        }
    }

    /// The series' handle, creating the series if it is new.
    pub fn get_or_create(&self, labels: &Labels) -> Result<SeriesRef, AppendError> {
        if let Some(r) = self.inner.read().by_labels.get(labels) {
            return Ok(*r);
        }
        let mut inner = self.inner.write();
        if let Some(r) = inner.by_labels.get(labels) {
            return Ok(*r);
        }
        if inner.series.len() >= self.opts.max_series {
            return Err(AppendError::SeriesLimit {
                limit: self.opts.max_series,
            });
        }
        let r = SeriesRef(inner.series.len() as u32);
        inner.series.push(Series {
            labels: labels.clone(),
            samples: Vec::new(),
        });
        inner.by_labels.insert(labels.clone(), r);
        Ok(r)
    }

    /// Appends one sample. A sample at the newest timestamp replaces it; an
    /// older one is refused.
    pub fn append(&self, r: SeriesRef, timestamp_ms: i64, value: f64) -> Result<(), AppendError> {
        let mut inner = self.inner.write();
        let s = inner
            .series
            .get_mut(r.0 as usize)
            .ok_or(AppendError::UnknownSeries(r))?;
        match s.samples.last_mut() {
            Some(last) if last.0 == timestamp_ms => last.1 = value,
            Some(last) if last.0 > timestamp_ms => {
                return Err(AppendError::OutOfOrder {
                    timestamp_ms,
                    newest_ms: last.0,
                });
            }
            _ => s.samples.push((timestamp_ms, value)),
        }
        Ok(())
    }

    /// Appends many samples under one lock. Samples older than their
    /// series' newest are refused and counted in the summary.
    pub fn append_batch(&self, samples: &[(SeriesRef, i64, f64)]) -> AppendSummary {
        let mut sum = AppendSummary::default();
        let mut inner = self.inner.write();
        for (r, t, v) in samples {
            let Some(s) = inner.series.get_mut(r.0 as usize) else {
                sum.unknown += 1;
                continue;
            };
            match s.samples.last_mut() {
                Some(last) if last.0 == *t => last.1 = *v,
                Some(last) if last.0 > *t => {
                    sum.out_of_order += 1;
                    continue;
                }
                _ => s.samples.push((*t, *v)),
            }
            sum.appended += 1;
        }
        sum
    }

    /// The newest sample of every series that has one, staleness markers
    /// excluded (what `/metrics` and `/federate` expose).
    pub fn latest(&self) -> Vec<(Labels, i64, f64)> {
        let inner = self.inner.read();
        inner
            .series
            .iter()
            .filter_map(|s| {
                let (t, v) = *s.samples.last()?;
                (!is_stale(v)).then(|| (s.labels.clone(), t, v))
            })
            .collect()
    }

    pub fn series_count(&self) -> usize {
        self.inner.read().series.len()
    }

    /// Drops samples older than `now_ms − retention`.
    pub fn trim(&self, now_ms: i64) {
        let cutoff = now_ms - self.opts.retention_ms;
        let mut inner = self.inner.write();
        for s in &mut inner.series {
            let keep_from = s.samples.partition_point(|(t, _)| *t < cutoff);
            s.samples.drain(..keep_from);
        }
    }
}

impl Store {
    /// Writes every series and sample to `w` (a checkpoint). Together with the
    /// WAL records after the checkpoint's cut, this rebuilds the store.
    pub fn write_checkpoint(&self, w: &mut dyn Write) -> io::Result<()> {
        let inner = self.inner.read();
        w.write_all(b"VGST1")?;
        w.write_all(&(inner.series.len() as u64).to_le_bytes())?;
        for s in &inner.series {
            w.write_all(&(s.labels.len() as u32).to_le_bytes())?;
            for (k, v) in s.labels.iter() {
                write_str(w, k)?;
                write_str(w, v)?;
            }
            w.write_all(&(s.samples.len() as u64).to_le_bytes())?;
            for (t, v) in &s.samples {
                w.write_all(&t.to_le_bytes())?;
                w.write_all(&v.to_bits().to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Loads a checkpoint written by [`Store::write_checkpoint`] into this
    /// (normally empty) store. Samples that are already present are kept.
    pub fn read_checkpoint(&self, r: &mut dyn Read) -> io::Result<()> {
        let mut magic = [0u8; 5];
        r.read_exact(&mut magic)?;
        if &magic != b"VGST1" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a store checkpoint",
            ));
        }
        let n = read_u64(r)?;
        for _ in 0..n {
            let nl = read_u32(r)? as usize;
            let mut pairs = Vec::with_capacity(nl.min(1024));
            for _ in 0..nl {
                pairs.push((read_str(r)?, read_str(r)?));
            }
            let labels = Labels::new(pairs);
            let ns = read_u64(r)?;
            let sref = self
                .get_or_create(&labels)
                .map_err(|e| io::Error::other(e.to_string()))?;
            for _ in 0..ns {
                let t = read_u64(r)? as i64;
                let v = f64::from_bits(read_u64(r)?);
                // older-than-newest samples are already there: skip them
                let _ = self.append(sref, t, v);
            }
        }
        Ok(())
    }
}

fn write_str(w: &mut dyn Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn read_u32(r: &mut dyn Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut dyn Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_str(r: &mut dyn Read) -> io::Result<String> {
    let n = read_u32(r)? as usize;
    if n > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "label longer than 1MiB",
        ));
    }
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    String::from_utf8(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl Queryable for Store {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        let inner = self.inner.read();
        inner
            .series
            .iter()
            .filter(|s| matchers.iter().all(|m| m.matches_labels(&s.labels)))
            .filter_map(|s| {
                let lo = s.samples.partition_point(|(t, _)| *t < mint);
                let hi = s.samples.partition_point(|(t, _)| *t <= maxt);
                (lo < hi).then(|| SeriesSamples {
                    labels: s.labels.clone(),
                    samples: s.samples[lo..hi].to_vec(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(name: &str, job: &str) -> Labels {
        Labels::new([("__name__", name), ("job", job)])
    }

    #[test]
    fn append_select_latest() {
        let s = Store::new(StoreOptions::default());
        let a = s.get_or_create(&l("up", "a")).unwrap();
        let b = s.get_or_create(&l("up", "b")).unwrap();
        assert_eq!(s.get_or_create(&l("up", "a")).unwrap(), a);
        s.append(a, 1000, 1.0).unwrap();
        s.append(a, 2000, 2.0).unwrap();
        s.append(b, 1500, STALE_NAN).unwrap();
        assert!(matches!(
            s.append(a, 1500, 0.0),
            Err(AppendError::OutOfOrder { .. })
        ));
        let got = s.select(&[Matcher::equal("__name__", "up")], 0, 1800);
        assert_eq!(got.len(), 2);
        let re = Matcher::regex("job", "a|c", false).unwrap();
        let got = s.select(&[re], 1500, 3000);
        assert_eq!(
            got,
            vec![SeriesSamples {
                labels: l("up", "a"),
                samples: vec![(2000, 2.0)]
            }]
        );
        let latest = s.latest();
        assert_eq!(latest, vec![(l("up", "a"), 2000, 2.0)]);
    }

    #[test]
    fn regex_is_anchored_and_dot_matches_newline() {
        let m = Matcher::regex("x", "a.b", false).unwrap();
        assert!(m.matches("a\nb"));
        assert!(!m.matches("xa\nb"));
    }

    #[test]
    fn checkpoint_round_trips() {
        let s = Store::new(StoreOptions::default());
        let a = s.get_or_create(&l("up", "a")).unwrap();
        s.append(a, 1000, 1.0).unwrap();
        s.append(a, 2000, STALE_NAN).unwrap();
        let mut buf = Vec::new();
        s.write_checkpoint(&mut buf).unwrap();
        let t = Store::new(StoreOptions::default());
        t.read_checkpoint(&mut buf.as_slice()).unwrap();
        let got = t.select(&[], 0, 5000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples[0], (1000, 1.0));
        assert!(is_stale(got[0].samples[1].1));
        assert!(t.read_checkpoint(&mut &buf[..buf.len() - 3]).is_err());
    }

    #[test]
    fn series_limit_is_enforced() {
        let s = Store::new(StoreOptions {
            max_series: 1,
            ..Default::default()
        });
        s.get_or_create(&l("a", "1")).unwrap();
        assert!(matches!(
            s.get_or_create(&l("a", "2")),
            Err(AppendError::SeriesLimit { limit: 1 })
        ));
    }
}
