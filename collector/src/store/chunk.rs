//! Compressed sample chunks: the open (head) chunk every series appends to,
//! and sealed chunks that are only read, dropped or recompressed.
//!
//! Encodings:
//! - **XOR** (Gorilla, as Prometheus' head): the first timestamp is the
//!   chunk's `mint` (kept outside the bits), the first value is 64 raw bits;
//!   then each sample is a delta-of-delta timestamp in a prefix-coded bucket
//!   and the XOR of its value with the previous one. Arithmetic wraps, so any
//!   `i64` timestamps round-trip; values round-trip bit for bit (NaN payloads,
//!   the staleness marker, `-0.0`).
//! - **Pco**: timestamps and values each compressed with the `pco` crate, used
//!   for sealed blocks when it is smaller (see [`Sealed::recompress`]).
//!
//! Not here: which chunk a sample goes to, out-of-order handling (see
//! [`super::series`]).

use super::bits::{BitReader, BitWriter};

/// Why a chunk could not be decoded (only a corrupt checkpoint can cause it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk bits end after {decoded} of {count} samples")]
    Truncated { decoded: u32, count: u32 },
    #[error("chunk timestamps not increasing at sample {index}")]
    NotIncreasing { index: u32 },
    #[error("chunk time range [{mint}, {maxt}] does not match its samples [{first}, {last}]")]
    RangeMismatch {
        mint: i64,
        maxt: i64,
        first: i64,
        last: i64,
    },
    #[error("pco: {0}")]
    Pco(String),
    #[error("unknown chunk codec {0}")]
    UnknownCodec(u8),
    #[error("empty chunk")]
    Empty,
}

/// Delta-of-delta buckets: (prefix bits, prefix length, payload bits).
/// The small first bucket catches the millisecond jitter of real scrapes
/// cheaply; the last one takes any 64-bit value.
const DOD_BUCKETS: [(u64, u32, u32); 4] = [
    (0b10, 2, 7),
    (0b110, 3, 14),
    (0b1110, 4, 20),
    (0b1111, 4, 64),
];

fn fits(v: i64, bits: u32) -> bool {
    if bits >= 64 {
        return true;
    }
    let lo = -(1i64 << (bits - 1));
    let hi = (1i64 << (bits - 1)) - 1;
    (lo..=hi).contains(&v)
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        return v as i64;
    }
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// The open chunk of a series: an XOR bit stream plus the encoder state.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadChunk {
    bits: BitWriter,
    count: u32,
    mint: i64,
    t_prev: i64,
    delta_prev: i64,
    v_prev: u64,
    leading: u8,
    trailing: u8,
}

impl HeadChunk {
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn mint(&self) -> i64 {
        self.mint
    }

    /// Newest timestamp (meaningless when empty).
    pub(crate) fn maxt(&self) -> i64 {
        self.t_prev
    }

    /// Newest value (meaningless when empty).
    pub(crate) fn last_value(&self) -> f64 {
        f64::from_bits(self.v_prev)
    }

    pub(crate) fn payload_bytes(&self) -> usize {
        self.bits.bytes().len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.bits.capacity()
    }

    /// Builds a head holding `samples` (strictly increasing timestamps).
    pub(crate) fn from_samples(samples: &[(i64, f64)]) -> Self {
        let mut h = HeadChunk::default();
        for &(t, v) in samples {
            h.push(t, v);
        }
        h
    }

    /// Appends a sample; the caller guarantees `t` is newer than [`Self::maxt`].
    pub(crate) fn push(&mut self, t: i64, v: f64) {
        let vb = v.to_bits();
        if self.count == 0 {
            self.mint = t;
            self.t_prev = t;
            self.delta_prev = 0;
            self.v_prev = vb;
            self.leading = 0xff;
            self.trailing = 0;
            self.bits.write(vb, 64);
            self.count = 1;
            return;
        }
        let delta = t.wrapping_sub(self.t_prev);
        let dod = delta.wrapping_sub(self.delta_prev);
        if dod == 0 {
            self.bits.write_bit(false);
        } else {
            for (i, &(prefix, plen, payload)) in DOD_BUCKETS.iter().enumerate() {
                if i == DOD_BUCKETS.len() - 1 || fits(dod, payload) {
                    self.bits.write(prefix, plen);
                    let mask = if payload >= 64 {
                        u64::MAX
                    } else {
                        (1u64 << payload) - 1
                    };
                    self.bits.write(dod as u64 & mask, payload);
                    break;
                }
            }
        }
        self.t_prev = t;
        self.delta_prev = delta;
        self.write_value(vb);
        self.count += 1;
    }

    fn write_value(&mut self, vb: u64) {
        let xor = vb ^ self.v_prev;
        self.v_prev = vb;
        if xor == 0 {
            self.bits.write_bit(false);
            return;
        }
        self.bits.write_bit(true);
        // at most 31 leading zeros fit the 5-bit field
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.bits.write_bit(false);
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            self.bits.write(xor >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            self.bits.write_bit(true);
            self.bits.write(u64::from(leading), 5);
            let sig = 64 - u32::from(leading) - u32::from(trailing);
            // 64 significant bits are written as 0 in the 6-bit field
            self.bits.write(u64::from(sig) & 0x3f, 6);
            self.bits.write(xor >> trailing, sig);
        }
    }

    /// Appends the samples in `[mint, maxt]` to `out`.
    pub(crate) fn decode_range(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        if self.count == 0 || self.maxt() < mint || self.mint > maxt {
            return;
        }
        // the head is written by us: decoding cannot fail short of a bug,
        // and a bug must not take a query down, so errors end the chunk
        let _ = decode_xor(
            self.bits.bytes(),
            self.bits.bit_len(),
            self.mint,
            self.count,
            |t, v| {
                if t > maxt {
                    return false;
                }
                if t >= mint {
                    out.push((t, v));
                }
                true
            },
        );
    }

    /// All samples.
    pub(crate) fn samples(&self) -> Vec<(i64, f64)> {
        let mut out = Vec::with_capacity(self.count as usize);
        self.decode_range(i64::MIN, i64::MAX, &mut out);
        out
    }

    /// Turns the head into a sealed XOR chunk (the head is left empty).
    pub(crate) fn seal(&mut self) -> Option<Sealed> {
        if self.count == 0 {
            return None;
        }
        let h = std::mem::take(self);
        Some(Sealed {
            mint: h.mint,
            maxt: h.t_prev,
            count: h.count,
            codec: Codec::Xor,
            bit_len: h.bits.bit_len(),
            data: h.bits.into_boxed(),
        })
    }

    /// The encoder state and bits, for checkpoints.
    pub(crate) fn parts(&self) -> HeadParts<'_> {
        HeadParts {
            bytes: self.bits.bytes(),
            bit_len: self.bits.bit_len(),
            count: self.count,
            mint: self.mint,
        }
    }

    /// Rebuilds a head from checkpointed bits by decoding them (which also
    /// validates them) and re-encoding: exact, and the state cannot disagree
    /// with the bits.
    pub(crate) fn from_parts(p: HeadParts<'_>) -> Result<Self, ChunkError> {
        let mut samples = Vec::with_capacity(p.count.min(1 << 16) as usize);
        decode_xor_checked(p.bytes, p.bit_len, p.mint, p.count, &mut samples)?;
        Ok(HeadChunk::from_samples(&samples))
    }
}

/// A head chunk's persisted parts.
pub(crate) struct HeadParts<'a> {
    pub bytes: &'a [u8],
    pub bit_len: u64,
    pub count: u32,
    pub mint: i64,
}

/// How a sealed chunk's bytes are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Codec {
    Xor = 1,
    Pco = 2,
}

impl Codec {
    pub(crate) fn from_u8(b: u8) -> Result<Self, ChunkError> {
        match b {
            1 => Ok(Codec::Xor),
            2 => Ok(Codec::Pco),
            other => Err(ChunkError::UnknownCodec(other)),
        }
    }
}

/// A sealed, immutable chunk.
#[derive(Clone, Debug)]
pub(crate) struct Sealed {
    pub mint: i64,
    pub maxt: i64,
    pub count: u32,
    pub codec: Codec,
    /// Valid bits of `data` for XOR; unused (0) for pco.
    pub bit_len: u64,
    pub data: Box<[u8]>,
}

impl Sealed {
    pub(crate) fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.mint <= maxt && self.maxt >= mint
    }

    /// Appends the samples in `[mint, maxt]` to `out`.
    pub(crate) fn decode_range(
        &self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), ChunkError> {
        if !self.overlaps(mint, maxt) {
            return Ok(());
        }
        match self.codec {
            Codec::Xor => decode_xor(&self.data, self.bit_len, self.mint, self.count, |t, v| {
                if t > maxt {
                    return false;
                }
                if t >= mint {
                    out.push((t, v));
                }
                true
            })
            .map(|_| ()),
            Codec::Pco => with_pco(&self.data, self.count, |ts, vs| {
                let lo = ts.partition_point(|t| *t < mint);
                let hi = ts.partition_point(|t| *t <= maxt);
                out.extend(ts[lo..hi].iter().copied().zip(vs[lo..hi].iter().copied()));
            }),
        }
    }

    /// All samples, validated against the header (count, range, order).
    pub(crate) fn samples(&self) -> Result<Vec<(i64, f64)>, ChunkError> {
        let mut out = Vec::with_capacity(self.count.min(1 << 16) as usize);
        self.samples_into(&mut out)?;
        Ok(out)
    }

    /// Appends all samples to `out`, validated against the header (count,
    /// range, order); on error `out` keeps what it had before.
    pub(crate) fn samples_into(&self, out: &mut Vec<(i64, f64)>) -> Result<(), ChunkError> {
        let start = out.len();
        let res = self.decode_all(out);
        if res.is_err() {
            out.truncate(start);
        }
        res
    }

    fn decode_all(&self, all: &mut Vec<(i64, f64)>) -> Result<(), ChunkError> {
        let start = all.len();
        match self.codec {
            Codec::Xor => decode_xor_checked(&self.data, self.bit_len, self.mint, self.count, all)?,
            Codec::Pco => with_pco(&self.data, self.count, |ts, vs| {
                if let Some(i) = ts.windows(2).position(|w| w[0] >= w[1]) {
                    return Err(ChunkError::NotIncreasing {
                        index: i as u32 + 1,
                    });
                }
                all.extend(ts.iter().copied().zip(vs.iter().copied()));
                Ok(())
            })??,
        }
        let out = &all[start..];
        let (Some(first), Some(last)) = (out.first(), out.last()) else {
            return Err(ChunkError::Empty);
        };
        if first.0 != self.mint || last.0 != self.maxt {
            return Err(ChunkError::RangeMismatch {
                mint: self.mint,
                maxt: self.maxt,
                first: first.0,
                last: last.0,
            });
        }
        Ok(())
    }

    /// An XOR chunk of `samples` (strictly increasing, non-empty).
    pub(crate) fn xor_from(samples: &[(i64, f64)]) -> Option<Sealed> {
        HeadChunk::from_samples(samples).seal()
    }

    /// A pco chunk of `samples`, if pco encodes them exactly and in fewer
    /// bytes than `than`.
    pub(crate) fn pco_from(samples: &[(i64, f64)], than: usize) -> Option<Sealed> {
        let (first, last) = (samples.first()?, samples.last()?);
        let count = u32::try_from(samples.len())
            .ok()
            .filter(|n| *n <= MAX_CHUNK_SAMPLES)?;
        let data = encode_pco(samples)?;
        if data.len() >= than {
            return None;
        }
        // keep pco only if it gives back exactly what went in, bit for bit
        let exact = with_pco(&data, count, |ts, vs| {
            ts.iter()
                .zip(vs)
                .zip(samples)
                .all(|((t, v), (st, sv))| t == st && v.to_bits() == sv.to_bits())
        })
        .ok()?;
        exact.then_some(Sealed {
            mint: first.0,
            maxt: last.0,
            count,
            codec: Codec::Pco,
            bit_len: 0,
            data,
        })
    }

    /// Heap bytes this chunk holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.data.len()
    }
}

/// Decodes an XOR stream, calling `f(t, v)` per sample until it returns false.
/// Returns the number of samples visited.
fn decode_xor(
    bytes: &[u8],
    bit_len: u64,
    mint: i64,
    count: u32,
    mut f: impl FnMut(i64, f64) -> bool,
) -> Result<u32, ChunkError> {
    if count == 0 {
        return Ok(0);
    }
    let mut r = BitReader::new(bytes, bit_len);
    let truncated = |decoded| ChunkError::Truncated { decoded, count };
    let mut v = r.read(64).ok_or(truncated(0))?;
    let mut t = mint;
    if !f(t, f64::from_bits(v)) {
        return Ok(1);
    }
    let mut delta: i64 = 0;
    let mut leading: u32 = 0;
    let mut trailing: u32 = 0;
    for i in 1..count {
        // timestamp
        let mut dod: i64 = 0;
        if r.read_bit().ok_or(truncated(i))? {
            let mut bucket = 0;
            while bucket < DOD_BUCKETS.len() - 1 && r.read_bit().ok_or(truncated(i))? {
                bucket += 1;
            }
            let payload = DOD_BUCKETS[bucket].2;
            dod = sign_extend(r.read(payload).ok_or(truncated(i))?, payload);
        }
        delta = delta.wrapping_add(dod);
        t = t.wrapping_add(delta);
        // value
        if r.read_bit().ok_or(truncated(i))? {
            if r.read_bit().ok_or(truncated(i))? {
                leading = r.read(5).ok_or(truncated(i))? as u32;
                let mut sig = r.read(6).ok_or(truncated(i))? as u32;
                if sig == 0 {
                    sig = 64;
                }
                trailing = 64u32.saturating_sub(leading + sig);
            }
            let sig = 64u32.saturating_sub(leading + trailing);
            let bits = r.read(sig).ok_or(truncated(i))?;
            v ^= if trailing >= 64 { 0 } else { bits << trailing };
        }
        if !f(t, f64::from_bits(v)) {
            return Ok(i + 1);
        }
    }
    Ok(count)
}

/// Decodes a whole XOR stream, checking that timestamps increase.
fn decode_xor_checked(
    bytes: &[u8],
    bit_len: u64,
    mint: i64,
    count: u32,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), ChunkError> {
    let mut bad: Option<u32> = None;
    let mut prev: Option<i64> = None;
    let mut i = 0u32;
    decode_xor(bytes, bit_len, mint, count, |t, v| {
        if prev.is_some_and(|p| p >= t) {
            bad = Some(i);
            return false;
        }
        prev = Some(t);
        out.push((t, v));
        i += 1;
        true
    })?;
    if let Some(index) = bad {
        return Err(ChunkError::NotIncreasing { index });
    }
    Ok(())
}

/// Most samples a pco chunk may hold: bounds the decode buffers, so a
/// corrupt count cannot ask for gigabytes.
pub(crate) const MAX_CHUNK_SAMPLES: u32 = 1 << 20;

/// Per-thread buffers for pco: recompression and queries decode and encode
/// thousands of blocks, and fresh buffers each time fragment the heap.
#[derive(Default)]
struct Scratch {
    ts: Vec<i64>,
    vs: Vec<f64>,
    tb: Vec<u8>,
    vb: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

fn pco_err(e: impl std::fmt::Display) -> ChunkError {
    ChunkError::Pco(e.to_string())
}

/// `uvarint(len(ts)) | pco(ts) | pco(values)`, allocated at its exact size.
fn encode_pco(samples: &[(i64, f64)]) -> Option<Box<[u8]>> {
    SCRATCH.with(|s| {
        let mut s = s.try_borrow_mut().ok()?;
        let Scratch { ts, vs, tb, vb } = &mut *s;
        ts.clear();
        ts.extend(samples.iter().map(|x| x.0));
        vs.clear();
        vs.extend(samples.iter().map(|x| x.1));
        // level 4 gave the same bytes as the default 8 on the store bench's
        // data (blocks of 720 are small) in about two thirds of the time
        let cfg = pco::ChunkConfig::default().with_compression_level(4);
        tb.clear();
        pco::standalone::simple_compress_into(ts, &cfg, &mut *tb).ok()?;
        vb.clear();
        pco::standalone::simple_compress_into(vs, &cfg, &mut *vb).ok()?;
        let mut out = Vec::with_capacity(tb.len() + vb.len() + 10);
        put_uvarint(&mut out, tb.len() as u64);
        out.extend_from_slice(tb);
        out.extend_from_slice(vb);
        Some(out.into_boxed_slice())
    })
}

/// Decodes a pco chunk that must hold exactly `count` samples and hands
/// the columns to `f`.
fn with_pco<R>(
    data: &[u8],
    count: u32,
    f: impl FnOnce(&[i64], &[f64]) -> R,
) -> Result<R, ChunkError> {
    if count == 0 || count > MAX_CHUNK_SAMPLES {
        return Err(ChunkError::Pco(format!("implausible sample count {count}")));
    }
    let mut rest = data;
    let tlen = get_uvarint(&mut rest).ok_or_else(|| pco_err("bad length"))?;
    if tlen > rest.len() as u64 {
        return Err(pco_err("timestamp block past the end"));
    }
    let (tb, vb) = rest.split_at(tlen as usize);
    SCRATCH.with(|s| {
        let mut s = s.try_borrow_mut().map_err(pco_err)?;
        let Scratch { ts, vs, .. } = &mut *s;
        let n = count as usize;
        ts.resize(n, 0);
        vs.resize(n, 0.0);
        for (what, p) in [
            (
                "timestamps",
                pco::standalone::simple_decompress_into(tb, &mut ts[..n]),
            ),
            (
                "values",
                pco::standalone::simple_decompress_into(vb, &mut vs[..n]),
            ),
        ] {
            let p = p.map_err(pco_err)?;
            if p.n_processed != n || !p.finished {
                return Err(ChunkError::Pco(format!(
                    "{what}: {} decoded, {} expected",
                    p.n_processed, n
                )));
            }
        }
        Ok(f(&ts[..n], &vs[..n]))
    })
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_uvarint(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::STALE_NAN;

    fn bits_eq(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    fn round_trip(samples: &[(i64, f64)]) {
        let h = HeadChunk::from_samples(samples);
        assert_eq!(h.count() as usize, samples.len());
        assert!(bits_eq(&h.samples(), samples), "head");
        let mut h2 = h.clone();
        let s = h2.seal().expect("non-empty");
        assert!(h2.is_empty());
        assert!(
            bits_eq(&s.samples().expect("decodes"), samples),
            "sealed xor"
        );
        let parts = h.parts();
        let back = HeadChunk::from_parts(parts).expect("parts decode");
        assert!(bits_eq(&back.samples(), samples), "from parts");
        if let Some(p) = Sealed::pco_from(samples, usize::MAX) {
            assert!(bits_eq(&p.samples().expect("pco decodes"), samples), "pco");
        }
    }

    #[test]
    fn special_values_round_trip_bit_exactly() {
        let vals = [
            0.0,
            -0.0,
            1.0,
            f64::NAN,
            f64::from_bits(0x7ff8_dead_beef_0001),
            STALE_NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            5e-324,
            STALE_NAN,
            42.0,
        ];
        let samples: Vec<(i64, f64)> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| (1000 * i as i64, *v))
            .collect();
        round_trip(&samples);
    }

    #[test]
    fn extreme_timestamps_and_deltas_round_trip() {
        round_trip(&[(i64::MIN, 1.0), (0, 2.0), (i64::MAX, 3.0)]);
        round_trip(&[
            (-5_000_000_000_000, 1.0),
            (-4_999_999_999_999, 1.0),
            (1, 1.0),
            (2, 1.0),
        ]);
        // every delta-of-delta bucket and both signs
        let mut t = 1_700_000_000_000i64;
        let mut samples = vec![];
        for (i, step) in [
            10_000,
            10_000,
            10_003,
            9_990,
            10_000,
            30_000,
            1,
            1_000_000,
            2,
            900_000_000,
            15,
            10_000,
        ]
        .iter()
        .enumerate()
        {
            t += step;
            samples.push((t, i as f64 * 0.1));
        }
        round_trip(&samples);
        round_trip(&[(7, 1.5)]);
    }

    #[test]
    fn decode_range_clips_inclusively() {
        let samples: Vec<(i64, f64)> = (0..50).map(|i| (i * 10, i as f64)).collect();
        let h = HeadChunk::from_samples(&samples);
        let mut out = vec![];
        h.decode_range(100, 200, &mut out);
        assert_eq!(out.first(), Some(&(100, 10.0)));
        assert_eq!(out.last(), Some(&(200, 20.0)));
        assert_eq!(out.len(), 11);
        let s = h.clone().seal().unwrap();
        let mut out2 = vec![];
        s.decode_range(100, 200, &mut out2).unwrap();
        assert_eq!(out, out2);
        out2.clear();
        s.decode_range(1000, 2000, &mut out2).unwrap();
        assert!(out2.is_empty());
    }

    #[test]
    fn corrupt_xor_bits_are_errors_not_panics() {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (i * 10_000, (i * i) as f64 / 7.0))
            .collect();
        let s = Sealed::xor_from(&samples).unwrap();
        // truncated
        let mut t = s.clone();
        t.data = s.data[..s.data.len() / 2].into();
        assert!(matches!(t.samples(), Err(ChunkError::Truncated { .. })));
        // wrong count
        let mut c = s.clone();
        c.count += 5;
        assert!(c.samples().is_err());
        // flipped bits anywhere: an error or different samples, never a panic
        for i in 0..s.data.len() {
            let mut f = s.clone();
            let mut d = f.data.to_vec();
            d[i] ^= 0x5a;
            f.data = d.into();
            let _ = f.samples();
        }
    }

    #[test]
    fn pco_wins_on_integer_counters_and_is_refused_when_bigger() {
        let mut v = 0.0;
        let samples: Vec<(i64, f64)> = (0..720)
            .map(|i| {
                v += ((i * 7919) % 1000) as f64;
                (1_700_000_000_000 + i * 10_000, v)
            })
            .collect();
        let xor = Sealed::xor_from(&samples).unwrap();
        let pco = Sealed::pco_from(&samples, xor.data.len()).expect("pco is smaller");
        assert!(pco.data.len() < xor.data.len());
        assert!(bits_eq(&pco.samples().unwrap(), &samples));
        assert!(Sealed::pco_from(&samples, 4).is_none());
    }

    #[test]
    fn corrupt_pco_is_an_error() {
        let samples: Vec<(i64, f64)> = (0..100).map(|i| (i * 15_000, i as f64)).collect();
        let p = Sealed::pco_from(&samples, usize::MAX).unwrap();
        for cut in [0, 1, 3, p.data.len() / 2, p.data.len() - 1] {
            let mut c = p.clone();
            c.data = p.data[..cut].into();
            assert!(c.samples().is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn uvarint_round_trips_and_rejects_overlong() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = vec![];
            put_uvarint(&mut b, v);
            let mut s = b.as_slice();
            assert_eq!(get_uvarint(&mut s), Some(v));
            assert!(s.is_empty());
        }
        let mut s: &[u8] = &[0xff; 11];
        assert_eq!(get_uvarint(&mut s), None);
    }
}
