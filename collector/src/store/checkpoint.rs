//! The store's checkpoint format: every live series with its labels and its
//! compressed chunks copied as they are (no re-encoding on write or load).
//!
//! ```text
//! header: "VGSTORE\0" | u32 version (2) | u64 body length | u32 crc32(body)   (little endian)
//! body:   u64 series count (little endian), then per series:
//!         uvarint label count, then 2 × count strings (name, value, …)
//!         u8 has_tenant [string tenant]
//!         uvarint sealed count, then per chunk:
//!             u8 codec | zigzag mint | zigzag maxt | uvarint count | uvarint bit length | bytes
//!         head: uvarint count [zigzag mint | uvarint bit length | bytes]
//! string: uvarint 0 + bytes (a new string, numbered in order of appearance)
//!         or uvarint n + 1 (the n-th string already seen)
//! bytes:  uvarint length + raw bytes
//! ```
//!
//! Reading verifies the checksum, the structure and every chunk (decoded,
//! counts and time ranges checked, chunks disjoint and ordered) before the
//! store changes. Errors name the series and what is wrong; nothing panics.
//! Not here: the WAL and the checkpoint file around this part (see
//! `ingest::checkpoint`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use vigil_common::Labels;

use super::chunk::{Codec, HeadChunk, HeadParts, Sealed, get_uvarint, put_uvarint};
use super::{NO_TENANT, Store};

const MAGIC: &[u8; 8] = b"VGSTORE\0";
const VERSION: u32 = 2;
/// A body larger than this is refused before reading it (corrupt length).
const MAX_BODY: u64 = 64 << 30;

/// A verified series from a checkpoint, ready to install.
#[derive(Debug)]
pub(crate) struct StagedSeries {
    pub labels: Labels,
    pub tenant: Option<String>,
    pub sealed: Vec<Sealed>,
    pub head: HeadChunk,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Writes strings once and refers to them by number afterwards.
#[derive(Default)]
struct StringWriter {
    seen: HashMap<Arc<str>, u64>,
}

impl StringWriter {
    fn put(&mut self, out: &mut Vec<u8>, s: &Arc<str>) {
        match self.seen.get(s) {
            Some(n) => put_uvarint(out, n + 1),
            None => {
                put_uvarint(out, 0);
                put_bytes(out, s.as_bytes());
                let n = self.seen.len() as u64;
                self.seen.insert(s.clone(), n);
            }
        }
    }
}

pub(crate) fn write(store: &Store, w: &mut dyn Write) -> io::Result<()> {
    let mut strings = StringWriter::default();
    let mut count: u64 = 0;
    let mut series_buf: Vec<u8> = Vec::new();
    // the series count goes first; it is patched in at the end
    let mut body: Vec<u8> = vec![0; 8];
    let ids = store.next_id.load(std::sync::atomic::Ordering::Relaxed);
    for id in 0..ids {
        series_buf.clear();
        // labels first (immutable, resolved under the index lock), then the
        // chunks under the series lock; no lock is held across both
        let Some((label_syms, tenant)) = store.with_series(id, |s| (s.labels.clone(), s.tenant))
        else {
            continue;
        };
        let names: Vec<Arc<str>> = {
            let idx = store.index.read();
            label_syms
                .iter()
                .chain((tenant != NO_TENANT).then_some(&tenant))
                .map(|&sym| idx.symbols.get_arc(sym))
                .collect()
        };
        let wrote = store.with_series(id, |s| {
            let d = s.data.lock();
            if d.dead || d.is_empty() {
                return false;
            }
            put_uvarint(&mut series_buf, (label_syms.len() / 2) as u64);
            for n in &names[..label_syms.len()] {
                strings.put(&mut series_buf, n);
            }
            match names.get(label_syms.len()) {
                Some(t) => {
                    series_buf.push(1);
                    strings.put(&mut series_buf, t);
                }
                None => series_buf.push(0),
            }
            put_uvarint(&mut series_buf, d.sealed.len() as u64);
            for c in &d.sealed {
                series_buf.push(c.codec as u8);
                put_uvarint(&mut series_buf, zigzag(c.mint));
                put_uvarint(&mut series_buf, zigzag(c.maxt));
                put_uvarint(&mut series_buf, u64::from(c.count));
                put_uvarint(&mut series_buf, c.bit_len);
                put_bytes(&mut series_buf, &c.data);
            }
            let h = d.head.parts();
            put_uvarint(&mut series_buf, u64::from(h.count));
            if h.count > 0 {
                put_uvarint(&mut series_buf, zigzag(h.mint));
                put_uvarint(&mut series_buf, h.bit_len);
                put_bytes(&mut series_buf, h.bytes);
            }
            true
        });
        if wrote == Some(true) {
            count += 1;
            body.extend_from_slice(&series_buf);
        }
    }
    body[..8].copy_from_slice(&count.to_le_bytes());
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(body.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    w.write_all(&header)?;
    w.write_all(&body)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("store checkpoint: {}", msg.into()),
    )
}

/// A bounds-checked reader over the body.
struct Cursor<'a> {
    buf: &'a [u8],
    strings: Vec<String>,
}

impl<'a> Cursor<'a> {
    fn uvarint(&mut self, what: &str) -> Result<u64, String> {
        get_uvarint(&mut self.buf).ok_or_else(|| format!("{what}: bad or truncated varint"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| format!("{what}: truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.uvarint(what)?;
        if n > self.buf.len() as u64 {
            return Err(format!(
                "{what}: length {n} past the end ({} bytes left)",
                self.buf.len()
            ));
        }
        let (b, rest) = self.buf.split_at(n as usize);
        self.buf = rest;
        Ok(b)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        match self.uvarint(what)? {
            0 => {
                let b = self.bytes(what)?;
                let s = std::str::from_utf8(b)
                    .map_err(|e| format!("{what}: not UTF-8: {e}"))?
                    .to_string();
                self.strings.push(s.clone());
                Ok(s)
            }
            n => self.strings.get((n - 1) as usize).cloned().ok_or_else(|| {
                format!(
                    "{what}: refers to string {} of {}",
                    n - 1,
                    self.strings.len()
                )
            }),
        }
    }
}

/// Reads and verifies a checkpoint.
pub(crate) fn read(r: &mut dyn Read) -> io::Result<Vec<StagedSeries>> {
    let mut header = [0u8; 24];
    r.read_exact(&mut header[..LEGACY_MAGIC.len()])
        .map_err(|e| invalid(format!("header: {e}")))?;
    if &header[..LEGACY_MAGIC.len()] == LEGACY_MAGIC {
        return read_legacy(r).map_err(|e| invalid(format!("version 1: {e}")));
    }
    r.read_exact(&mut header[LEGACY_MAGIC.len()..])
        .map_err(|e| invalid(format!("header: {e}")))?;
    if &header[..8] != MAGIC {
        return Err(invalid("bad magic (not a store checkpoint)"));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(invalid(format!(
            "unsupported version {version} (this build reads {VERSION})"
        )));
    }
    let mut len_b = [0u8; 8];
    len_b.copy_from_slice(&header[12..20]);
    let body_len = u64::from_le_bytes(len_b);
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    if body_len > MAX_BODY {
        return Err(invalid(format!("body length {body_len} is implausible")));
    }
    let mut body = Vec::new();
    r.take(body_len)
        .read_to_end(&mut body)
        .map_err(|e| invalid(format!("body: {e}")))?;
    if body.len() as u64 != body_len {
        return Err(invalid(format!(
            "body truncated: {} of {body_len} bytes",
            body.len()
        )));
    }
    let got = crc32fast::hash(&body);
    if got != crc {
        return Err(invalid(format!(
            "checksum mismatch (stored {crc:08x}, computed {got:08x})"
        )));
    }
    parse(&body).map_err(invalid)
}

/// The first store's format: `"VGST1" | u64 n | n × (u32 labels, (u32 len,
/// bytes) × 2 × labels, u64 samples, samples × (u64 t, u64 value bits))`,
/// all little endian, no checksum. Read so a data directory written by it
/// still starts; its samples go through the normal append rules.
const LEGACY_MAGIC: &[u8; 5] = b"VGST1";

fn read_legacy(r: &mut dyn Read) -> Result<Vec<StagedSeries>, String> {
    fn u32_(r: &mut dyn Read, what: &str) -> Result<u32, String> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|e| format!("{what}: {e}"))?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64_(r: &mut dyn Read, what: &str) -> Result<u64, String> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).map_err(|e| format!("{what}: {e}"))?;
        Ok(u64::from_le_bytes(b))
    }
    fn str_(r: &mut dyn Read, what: &str) -> Result<String, String> {
        let n = u32_(r, what)? as u64;
        if n > 1 << 20 {
            return Err(format!("{what}: length {n} over 1 MiB"));
        }
        let mut b = Vec::new();
        r.take(n)
            .read_to_end(&mut b)
            .map_err(|e| format!("{what}: {e}"))?;
        if b.len() as u64 != n {
            return Err(format!("{what}: truncated"));
        }
        String::from_utf8(b).map_err(|e| format!("{what}: {e}"))
    }
    let rules = super::series::CutRules {
        max_samples: 120,
        max_span_ms: 2 * 3600 * 1000,
        ooo_window_ms: 0,
    };
    let n = u64_(r, "series count")?;
    let mut out = Vec::new();
    for i in 0..n {
        let e = |m: String| format!("series {i}: {m}");
        let nl = u32_(r, "label count").map_err(e)?;
        let mut pairs = Vec::new();
        for _ in 0..nl {
            let k = str_(r, "label name").map_err(e)?;
            let v = str_(r, "label value").map_err(e)?;
            pairs.push((k, v));
        }
        let labels = Labels::new(pairs.into_iter().filter(|p| !p.1.is_empty()));
        let ns = u64_(r, "sample count").map_err(e)?;
        let mut data = super::series::SeriesData::default();
        for _ in 0..ns {
            let t = u64_(r, "timestamp").map_err(e)? as i64;
            let v = f64::from_bits(u64_(r, "value").map_err(e)?);
            data.append(t, v, rules);
        }
        if !data.is_empty() {
            out.push(StagedSeries {
                labels,
                tenant: None,
                sealed: data.sealed,
                head: data.head,
            });
        }
    }
    Ok(out)
}

fn parse(body: &[u8]) -> Result<Vec<StagedSeries>, String> {
    let mut c = Cursor {
        buf: body,
        strings: Vec::new(),
    };
    let mut nb = [0u8; 8];
    for b in nb.iter_mut() {
        *b = c.u8("series count")?;
    }
    let n = u64::from_le_bytes(nb);
    // each series takes at least a few bytes: a count past that is corrupt
    if n > body.len() as u64 {
        return Err(format!("series count {n} exceeds the body size"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        out.push(parse_series(&mut c).map_err(|e| format!("series {i}: {e}"))?);
    }
    if !c.buf.is_empty() {
        return Err(format!(
            "{} trailing bytes after the last series",
            c.buf.len()
        ));
    }
    Ok(out)
}

fn parse_series(c: &mut Cursor<'_>) -> Result<StagedSeries, String> {
    let nl = c.uvarint("label count")?;
    if nl > c.buf.len() as u64 {
        return Err(format!("label count {nl} past the end"));
    }
    let mut pairs = Vec::with_capacity(nl as usize);
    for _ in 0..nl {
        let k = c.string("label name")?;
        let v = c.string("label value")?;
        pairs.push((k, v));
    }
    if pairs.windows(2).any(|w| w[0].0 >= w[1].0)
        || pairs.iter().any(|p| p.0.is_empty() || p.1.is_empty())
    {
        return Err("labels not sorted, duplicated or empty".into());
    }
    let labels = Labels::from_sorted_unchecked(pairs);
    let in_series = |e: String| format!("{labels}: {e}");
    let tenant = match c.u8("tenant flag").map_err(in_series)? {
        0 => None,
        1 => Some(c.string("tenant").map_err(in_series)?),
        f => return Err(in_series(format!("tenant flag {f}"))),
    };
    let ns = c.uvarint("chunk count").map_err(in_series)?;
    if ns > c.buf.len() as u64 {
        return Err(in_series(format!("chunk count {ns} past the end")));
    }
    let mut sealed: Vec<Sealed> = Vec::with_capacity(ns as usize);
    for k in 0..ns {
        let chunk = parse_sealed(c).map_err(|e| in_series(format!("sealed chunk {k}: {e}")))?;
        if sealed.last().is_some_and(|prev| prev.maxt >= chunk.mint) {
            return Err(in_series(format!(
                "sealed chunk {k} overlaps the one before"
            )));
        }
        sealed.push(chunk);
    }
    let hc = c.uvarint("head count").map_err(in_series)?;
    let head = if hc == 0 {
        HeadChunk::default()
    } else {
        let count = u32::try_from(hc).map_err(|_| in_series(format!("head count {hc}")))?;
        let mint = unzigzag(c.uvarint("head mint").map_err(in_series)?);
        let bit_len = c.uvarint("head bit length").map_err(in_series)?;
        let bytes = c.bytes("head bytes").map_err(in_series)?;
        HeadChunk::from_parts(HeadParts {
            bytes,
            bit_len,
            count,
            mint,
        })
        .map_err(|e| in_series(format!("head chunk: {e}")))?
    };
    if head.is_empty() {
        return Err(in_series("no head chunk".into()));
    }
    if sealed.last().is_some_and(|s| s.maxt >= head.mint()) {
        return Err(in_series("head chunk overlaps the sealed chunks".into()));
    }
    Ok(StagedSeries {
        labels,
        tenant,
        sealed,
        head,
    })
}

fn parse_sealed(c: &mut Cursor<'_>) -> Result<Sealed, String> {
    let codec = Codec::from_u8(c.u8("codec")?).map_err(|e| e.to_string())?;
    let mint = unzigzag(c.uvarint("mint")?);
    let maxt = unzigzag(c.uvarint("maxt")?);
    let count = c.uvarint("count")?;
    let count = u32::try_from(count)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("sample count {count}"))?;
    let bit_len = c.uvarint("bit length")?;
    let data = c.bytes("data")?;
    let s = Sealed {
        mint,
        maxt,
        count,
        codec,
        bit_len,
        data: data.into(),
    };
    // decoding checks count, order and that the range matches the samples
    s.samples().map_err(|e| e.to_string())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_format() {
        let mut b = b"VGST1".to_vec();
        b.extend(1u64.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        for s in ["__name__", "up", "job", "a"] {
            b.extend((s.len() as u32).to_le_bytes());
            b.extend(s.as_bytes());
        }
        b.extend(3u64.to_le_bytes());
        for (t, v) in [
            (1000i64, 1.0f64),
            (2000, crate::store::STALE_NAN),
            (3000, 3.0),
        ] {
            b.extend(t.to_le_bytes());
            b.extend(v.to_bits().to_le_bytes());
        }
        let got = read(&mut b.as_slice()).expect("legacy checkpoint reads");
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].labels,
            Labels::new([("__name__", "up"), ("job", "a")])
        );
        let s = got[0].head.samples();
        assert_eq!(s.len(), 3);
        assert!(crate::store::is_stale(s[1].1));
        // truncated: an error, no panic
        let e = read(&mut &b[..b.len() - 4]).unwrap_err().to_string();
        assert!(e.contains("series 0"), "{e}");
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 1_700_000_000_000, -42] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
