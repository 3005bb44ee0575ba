//! One series' samples: sealed chunks in time order and the open head chunk,
//! with the append rules (cut, duplicates, out-of-order within a window),
//! retention, budget drops and recompression.
//!
//! Invariants: chunks never overlap and are in time order; every timestamp
//! appears once; a series with samples has a non-empty head holding its
//! newest sample. Every mutation either keeps them or is refused.
//! Not here: locking and labels (see [`super`]).

use super::chunk::{HeadChunk, Sealed};

/// How a sample was taken or why it was not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Appended,
    /// Same timestamp and bits as a stored sample: nothing to do.
    Unchanged,
    /// Older than the newest by more than the out-of-order window.
    OutOfOrder {
        newest: i64,
    },
    /// A different value at a timestamp already stored.
    Duplicate,
}

/// Cut rules for the head chunk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CutRules {
    pub max_samples: u32,
    pub max_span_ms: i64,
    pub ooo_window_ms: i64,
}

/// Bytes a mutation added (positive) or freed (negative) and the change in
/// the number of samples and sealed chunks, for the store's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub bytes: i64,
    pub samples: i64,
    pub chunks: i64,
}

#[derive(Debug, Default)]
pub(crate) struct SeriesData {
    pub head: HeadChunk,
    pub sealed: Vec<Sealed>,
    /// False once retention emptied the series and it left the index.
    pub dead: bool,
}

impl SeriesData {
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_empty()
    }

    /// Oldest timestamp held (meaningless when empty).
    pub(crate) fn mint(&self) -> i64 {
        self.sealed.first().map_or(self.head.mint(), |c| c.mint)
    }

    /// Newest timestamp held (meaningless when empty).
    pub(crate) fn maxt(&self) -> i64 {
        self.head.maxt()
    }

    pub(crate) fn chunk_bytes(&self) -> usize {
        self.head.heap_bytes() + self.sealed.iter().map(Sealed::heap_bytes).sum::<usize>()
    }

    /// Bytes of the encoded samples (not counting allocator slack).
    pub(crate) fn payload_bytes(&self) -> usize {
        self.head.payload_bytes() + self.sealed.iter().map(|c| c.data.len()).sum::<usize>()
    }

    pub(crate) fn sample_count(&self) -> u64 {
        u64::from(self.head.count()) + self.sealed.iter().map(|c| u64::from(c.count)).sum::<u64>()
    }

    /// Heap bytes of this series' chunk storage (what the budget counts).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunk_bytes() + self.sealed.capacity() * std::mem::size_of::<Sealed>()
    }

    pub(crate) fn append(&mut self, t: i64, v: f64, rules: CutRules) -> (Outcome, Delta) {
        let before = self.heap_bytes() as i64;
        let chunks = self.sealed.len() as i64;
        let out = self.append_inner(t, v, rules);
        let mut d = Delta {
            bytes: self.heap_bytes() as i64 - before,
            chunks: self.sealed.len() as i64 - chunks,
            ..Delta::default()
        };
        if out == Outcome::Appended {
            d.samples = 1;
        }
        (out, d)
    }

    /// What [`SeriesData::append`] would answer, without changing anything.
    pub(crate) fn check(
        &self,
        t: i64,
        v: f64,
        ooo_window_ms: i64,
    ) -> Result<(), super::AppendError> {
        if self.head.is_empty() {
            return Ok(());
        }
        let newest = self.head.maxt();
        if t > newest {
            return Ok(());
        }
        if i128::from(newest) - i128::from(t) > i128::from(ooo_window_ms) {
            return Err(super::AppendError::OutOfOrder {
                timestamp_ms: t,
                newest_ms: newest,
            });
        }
        let samples = match self.sealed.iter().find(|c| c.maxt >= t) {
            Some(c) => c.samples().unwrap_or_default(),
            None => self.head.samples(),
        };
        match samples.binary_search_by_key(&t, |s| s.0) {
            Ok(i) if samples[i].1.to_bits() != v.to_bits() => {
                Err(super::AppendError::Duplicate { timestamp_ms: t })
            }
            _ => Ok(()),
        }
    }

    fn append_inner(&mut self, t: i64, v: f64, rules: CutRules) -> Outcome {
        if self.head.is_empty() {
            // only a fresh series has an empty head
            self.head.push(t, v);
            return Outcome::Appended;
        }
        let newest = self.head.maxt();
        if t > newest {
            let span = i128::from(t) - i128::from(self.head.mint());
            let full =
                self.head.count() >= rules.max_samples || span >= i128::from(rules.max_span_ms);
            if let Some(s) = full.then(|| self.head.seal()).flatten() {
                self.sealed.push(s);
            }
            self.head.push(t, v);
            return Outcome::Appended;
        }
        if t == newest {
            if self.head.last_value().to_bits() == v.to_bits() {
                return Outcome::Unchanged;
            }
            return Outcome::Duplicate;
        }
        if i128::from(newest) - i128::from(t) > i128::from(rules.ooo_window_ms) {
            return Outcome::OutOfOrder { newest };
        }
        self.insert_older(t, v, newest)
    }

    /// Inserts a sample older than the newest into the chunk whose span (or
    /// the gap before it) holds `t`, re-encoding that chunk.
    fn insert_older(&mut self, t: i64, v: f64, newest: i64) -> Outcome {
        // the first chunk (sealed, then head) whose maxt >= t takes it
        let pos = self.sealed.iter().position(|c| c.maxt >= t);
        let mut samples = match pos {
            Some(i) => match self.sealed[i].samples() {
                Ok(s) => s,
                // a chunk we cannot read cannot take a sample
                Err(_) => return Outcome::OutOfOrder { newest },
            },
            None => self.head.samples(),
        };
        match samples.binary_search_by_key(&t, |s| s.0) {
            Ok(i) if samples[i].1.to_bits() == v.to_bits() => Outcome::Unchanged,
            Ok(_) => Outcome::Duplicate,
            Err(i) => {
                samples.insert(i, (t, v));
                match pos {
                    Some(ci) => match Sealed::xor_from(&samples) {
                        Some(c) => self.sealed[ci] = c,
                        None => return Outcome::OutOfOrder { newest },
                    },
                    None => self.head = HeadChunk::from_samples(&samples),
                }
                Outcome::Appended
            }
        }
    }

    /// Appends the samples in `[mint, maxt]` to `out` (chunks outside the
    /// range are not decoded). A sealed chunk that fails to decode is
    /// skipped and counted in the returned number.
    pub(crate) fn read_range(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) -> usize {
        if self.is_empty() || maxt < self.mint() || mint > self.maxt() {
            return 0;
        }
        let mut bad = 0;
        // chunks are in time order: skip those ending before mint
        let start = self.sealed.partition_point(|c| c.maxt < mint);
        for c in &self.sealed[start..] {
            if c.mint > maxt {
                break;
            }
            if c.decode_range(mint, maxt, out).is_err() {
                bad += 1;
            }
        }
        self.head.decode_range(mint, maxt, out);
        bad
    }

    /// Whether a sample lies in `[mint, maxt]`. A chunk whose first or last
    /// sample falls in the range answers at once; only a chunk spanning the
    /// whole range is decoded.
    pub(crate) fn has_sample_in(&self, mint: i64, maxt: i64) -> bool {
        if self.is_empty() || maxt < self.mint() || mint > self.maxt() {
            return false;
        }
        let edge_inside =
            |lo: i64, hi: i64| (mint..=maxt).contains(&lo) || (mint..=maxt).contains(&hi);
        let start = self.sealed.partition_point(|c| c.maxt < mint);
        let mut buf = Vec::new();
        for c in &self.sealed[start..] {
            if c.mint > maxt {
                return false;
            }
            if edge_inside(c.mint, c.maxt) {
                return true;
            }
            buf.clear();
            if c.decode_range(mint, maxt, &mut buf).is_ok() && !buf.is_empty() {
                return true;
            }
        }
        if edge_inside(self.head.mint(), self.head.maxt()) {
            return true;
        }
        buf.clear();
        self.head.decode_range(mint, maxt, &mut buf);
        !buf.is_empty()
    }

    /// Drops whole chunks that end before `cutoff`. The head goes only when
    /// all of the series is older than `cutoff` (the series is then empty).
    pub(crate) fn drop_before(&mut self, cutoff: i64) -> Delta {
        let mut d = Delta::default();
        let n = self.sealed.partition_point(|c| c.maxt < cutoff);
        if n > 0 {
            for c in self.sealed.drain(..n) {
                d.bytes -= c.heap_bytes() as i64;
                d.samples -= i64::from(c.count);
                d.chunks -= 1;
            }
            let before = self.sealed.capacity();
            if self.sealed.is_empty() {
                self.sealed = Vec::new();
            } else if self.sealed.capacity() > self.sealed.len() * 2 {
                self.sealed.shrink_to_fit();
            }
            d.bytes -= ((before - self.sealed.capacity()) * std::mem::size_of::<Sealed>()) as i64;
        }
        if !self.head.is_empty() && self.head.maxt() < cutoff && self.sealed.is_empty() {
            d.bytes -= self.head.heap_bytes() as i64;
            d.samples -= i64::from(self.head.count());
            self.head = HeadChunk::default();
        }
        d
    }

    /// Drops the oldest sealed chunk (for the memory budget).
    pub(crate) fn drop_oldest_sealed(&mut self) -> Option<Delta> {
        if self.sealed.is_empty() {
            return None;
        }
        let c = self.sealed.remove(0);
        Some(Delta {
            bytes: -(c.heap_bytes() as i64),
            samples: -i64::from(c.count),
            chunks: -1,
        })
    }

    /// Recompresses sealed chunks into pco blocks of up to `block_samples`:
    /// consecutive chunks are grouped greedily from the oldest, and a group
    /// holding an XOR chunk (a newly sealed one, or one rewritten by an
    /// out-of-order insert) is re-encoded as one block when that is smaller.
    /// A block still short of `block_samples` absorbs the next sealed chunk on
    /// a later pass, so blocks grow to full size.
    /// Returns the byte change and the number of chunks rewritten.
    pub(crate) fn recompress(&mut self, block_samples: u32) -> (Delta, usize) {
        use super::chunk::Codec;
        let mut d = Delta::default();
        let mut rewritten = 0;
        if block_samples == 0 || !self.sealed.iter().any(|c| c.codec == Codec::Xor) {
            return (d, 0);
        }
        let old = std::mem::take(&mut self.sealed);
        let before_cap = old.capacity();
        let mut out: Vec<Sealed> = Vec::with_capacity(old.len());
        let mut group: Vec<Sealed> = Vec::new();
        let mut group_n: u64 = 0;
        for c in old {
            if !group.is_empty() && group_n + u64::from(c.count) > u64::from(block_samples) {
                rewrite_group(&mut group, &mut out, &mut d, &mut rewritten);
                group_n = 0;
            }
            group_n += u64::from(c.count);
            group.push(c);
        }
        rewrite_group(&mut group, &mut out, &mut d, &mut rewritten);
        out.shrink_to_fit();
        d.bytes +=
            (out.capacity() as i64 - before_cap as i64) * std::mem::size_of::<Sealed>() as i64;
        self.sealed = out;
        (d, rewritten)
    }
}

/// Re-encodes `group` as one pco block if it holds an XOR chunk and pco is
/// smaller; otherwise moves it to `out` unchanged.
fn rewrite_group(
    group: &mut Vec<Sealed>,
    out: &mut Vec<Sealed>,
    d: &mut Delta,
    rewritten: &mut usize,
) {
    use super::chunk::Codec;
    if !group.iter().any(|c| c.codec == Codec::Xor) {
        out.append(group);
        return;
    }
    let old_bytes: usize = group.iter().map(Sealed::heap_bytes).sum();
    // one buffer per thread: recompression runs over every series
    thread_local! {
        static SAMPLES: std::cell::RefCell<Vec<(i64, f64)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let encoded = SAMPLES.with(|buf| {
        let mut samples = buf.try_borrow_mut().ok()?;
        samples.clear();
        for c in group.iter() {
            c.samples_into(&mut samples).ok()?;
        }
        Sealed::pco_from(&samples, old_bytes)
    });
    match encoded {
        Some(p) => {
            d.bytes += p.heap_bytes() as i64 - old_bytes as i64;
            d.chunks += 1 - group.len() as i64;
            *rewritten += group.len();
            group.clear();
            out.push(p);
        }
        None => out.append(group),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: CutRules = CutRules {
        max_samples: 120,
        max_span_ms: 2 * 3600 * 1000,
        ooo_window_ms: 0,
    };

    fn all(s: &SeriesData) -> Vec<(i64, f64)> {
        let mut out = vec![];
        assert_eq!(s.read_range(i64::MIN, i64::MAX, &mut out), 0);
        out
    }

    #[test]
    fn cuts_at_sample_count_and_span() {
        let mut s = SeriesData::default();
        for i in 0..250 {
            assert_eq!(s.append(i * 10_000, i as f64, RULES).0, Outcome::Appended);
        }
        assert_eq!(s.sealed.len(), 2);
        assert_eq!(s.head.count(), 10);
        assert_eq!(all(&s).len(), 250);
        let mut s = SeriesData::default();
        s.append(0, 1.0, RULES);
        s.append(2 * 3600 * 1000, 2.0, RULES);
        assert_eq!(s.sealed.len(), 1, "a 2h span cuts the head");
    }

    #[test]
    fn a_different_value_at_a_stored_timestamp_is_a_duplicate() {
        let mut s = SeriesData::default();
        s.append(1000, 1.0, RULES);
        s.append(2000, 2.0, RULES);
        assert_eq!(s.append(2000, 2.0, RULES).0, Outcome::Unchanged);
        assert!(s.check(2000, 2.0, 0).is_ok());
        // the newest sample is not replaced (Prometheus refuses it too)
        assert_eq!(s.append(2000, 5.0, RULES).0, Outcome::Duplicate);
        assert!(matches!(
            s.check(2000, 5.0, 0),
            Err(crate::store::AppendError::Duplicate { timestamp_ms: 2000 })
        ));
        assert_eq!(all(&s), vec![(1000, 1.0), (2000, 2.0)]);
        assert_eq!(
            s.append(1000, 9.0, RULES).0,
            Outcome::OutOfOrder { newest: 2000 }
        );
        assert!(matches!(
            s.check(1000, 9.0, 0),
            Err(crate::store::AppendError::OutOfOrder { .. })
        ));
        let wide = CutRules {
            ooo_window_ms: 10_000,
            ..RULES
        };
        assert_eq!(s.append(1000, 9.0, wide).0, Outcome::Duplicate);
        assert!(s.check(1000, 9.0, 10_000).is_err());
        assert!(s.check(1500, 9.0, 10_000).is_ok());
        assert_eq!(s.append(1000, 1.0, wide).0, Outcome::Unchanged);
        assert_eq!(all(&s), vec![(1000, 1.0), (2000, 2.0)]);
    }

    #[test]
    fn out_of_order_within_window_lands_in_the_right_chunk() {
        let rules = CutRules {
            max_samples: 4,
            ooo_window_ms: 100,
            ..RULES
        };
        let mut s = SeriesData::default();
        for t in [10, 20, 30, 40, 50, 60, 70, 80, 90] {
            s.append(t, t as f64, rules);
        }
        assert_eq!(s.sealed.len(), 2);
        for t in [15, 5, 45, 85, 41] {
            assert_eq!(
                s.append(t, -(t as f64), rules).0,
                Outcome::Appended,
                "t={t}"
            );
        }
        assert_eq!(
            s.append(-20, 0.0, rules).0,
            Outcome::OutOfOrder { newest: 90 }
        );
        let got = all(&s);
        let ts: Vec<i64> = got.iter().map(|x| x.0).collect();
        assert_eq!(
            ts,
            vec![5, 10, 15, 20, 30, 40, 41, 45, 50, 60, 70, 80, 85, 90]
        );
        // chunks stay disjoint and ordered
        for w in s.sealed.windows(2) {
            assert!(w[0].maxt < w[1].mint);
        }
        assert!(s.sealed.last().unwrap().maxt < s.head.mint());
        for c in &s.sealed {
            c.samples().expect("valid chunk");
        }
    }

    #[test]
    fn retention_drops_whole_chunks_and_finally_the_head() {
        let mut s = SeriesData::default();
        for i in 0..300 {
            s.append(i * 1000, 1.0, RULES);
        }
        let before = s.sample_count();
        let d = s.drop_before(130_000);
        assert_eq!(s.sealed.len(), 1);
        assert_eq!(d.samples, -120);
        assert_eq!(s.sample_count() as i64, before as i64 + d.samples);
        s.drop_before(10_000_000);
        assert!(s.is_empty());
    }

    #[test]
    fn recompress_keeps_samples_and_ranges() {
        let mut s = SeriesData::default();
        let mut v = 0.0;
        let mut expect = vec![];
        for i in 0..1000 {
            v += (i % 17) as f64;
            s.append(1_000_000 + i * 10_000, v, RULES);
            expect.push((1_000_000 + i * 10_000, v));
        }
        let payload = s.payload_bytes();
        let (_, rewritten) = s.recompress(360);
        assert!(rewritten >= 6, "rewrote {rewritten}");
        assert!(s.payload_bytes() < payload);
        assert_eq!(all(&s), expect);
        let mut part = vec![];
        s.read_range(
            1_000_000 + 100 * 10_000,
            1_000_000 + 500 * 10_000,
            &mut part,
        );
        assert_eq!(part, expect[100..=500].to_vec());
        assert!(s.has_sample_in(1_000_000 + 3 * 10_000 + 1, 1_000_000 + 4 * 10_000));
        assert!(!s.has_sample_in(1_000_000 + 3 * 10_000 + 1, 1_000_000 + 4 * 10_000 - 1));
    }
}
