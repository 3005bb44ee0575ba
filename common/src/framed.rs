//! Framed records: the one record framing of vigil's append-only files — the
//! agent's disk buffer (`ship/buffer.rs`), the collector's write-ahead log
//! (`wal.rs`) and the collector's log segments (`logs/segment.rs`).
//!
//! # On disk
//! A record is, little endian:
//!
//! ```text
//! [magic u32]  len u32  crc32 u32  [prefix: P bytes]  payload: len bytes
//! ```
//!
//! The CRC-32 (IEEE) covers the prefix and the payload. Whether a format has
//! a magic number and how wide its fixed prefix is are the format's
//! ([`Format`]), so that every file written before this module existed reads
//! as it did: the WAL has neither, the disk buffer an 8-byte prefix (the
//! batch's sequence number), the log segments the magic `VCL1`.
//!
//! # Torn-tail policy (the same for every format)
//! Reading stops at the first record that is not whole and intact: a header
//! or body cut short, a wrong magic, a length over the format's maximum, a
//! checksum mismatch, or a payload its owner cannot decode. Everything from
//! that record's start to the end of the file is the **torn tail**: the
//! reader reports where it starts ([`Tail::Torn`]) and nothing after it is
//! read (a length that failed once cannot be trusted to find the next
//! record). The owner counts it, logs it, and cuts the file there
//! ([`truncate`]) before appending, so a record is never written after a
//! torn one. A write that fails part-way is cut back to the last whole
//! record ([`append`]). A crash loses at most the records whose write had
//! not completed; durability (when to fsync) is the owner's.
//!
//! Not here: what a payload means, segment files and their names, fsync
//! scheduling (group commit is the WAL's).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The shape of one file kind's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// A magic number before each record, if the format has one.
    pub magic: Option<u32>,
    /// Width of the fixed prefix between header and payload (covered by the
    /// checksum, not counted in `len`).
    pub prefix: usize,
    /// Largest payload accepted on reading: a damaged length is not an
    /// allocation.
    pub max_len: u32,
}

impl Format {
    /// Bytes before the payload.
    pub const fn header_len(&self) -> usize {
        (if self.magic.is_some() { 4 } else { 0 }) + 8 + self.prefix
    }

    /// Bytes of a whole record with a payload of `payload_len` bytes.
    pub const fn record_len(&self, payload_len: usize) -> usize {
        self.header_len() + payload_len
    }
}

/// Why a record ends the readable part of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TornReason {
    #[error("record header cut short")]
    ShortHeader,
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("record length {0} over the limit")]
    TooLong(u32),
    #[error("record cut short")]
    ShortBody,
    #[error("checksum mismatch")]
    Checksum,
    #[error("undecodable payload: {0}")]
    Undecodable(String),
}

/// How reading a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The file ended at a record boundary.
    Clean,
    /// The torn tail starts at `offset` (see the module doc).
    Torn { offset: u64, reason: TornReason },
}

/// One intact record as read.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Where the record starts in the file.
    pub offset: u64,
    pub prefix: &'a [u8],
    pub payload: &'a [u8],
}

fn checksum(prefix: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix);
    h.update(payload);
    h.finalize()
}

/// Appends one record to `out`. `prefix` must be `format.prefix` bytes long
/// and the payload shorter than 4 GiB (callers bound their payloads by
/// `format.max_len`).
pub fn encode(format: &Format, prefix: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    debug_assert_eq!(prefix.len(), format.prefix);
    out.reserve(format.record_len(payload.len()));
    if let Some(m) = format.magic {
        out.extend_from_slice(&m.to_le_bytes());
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(prefix, payload).to_le_bytes());
    out.extend_from_slice(prefix);
    out.extend_from_slice(payload);
}

/// What [`read_next`] found at the reader's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// An intact record: its prefix is `head[header_len - prefix..]`, its
    /// payload is `body`; `len` is its whole framed length.
    Record { len: u64 },
    /// The data ended at a record boundary, or the next record reaches past
    /// `limit` (not all of it may be read yet).
    End,
    /// The next record is the torn tail.
    Torn(TornReason),
}

/// Reads the record at the reader's position into `head` and `body`
/// (scratch buffers kept by the caller), reading at most `limit` bytes: a
/// record that would reach past it is [`Next::End`], not torn — readers that
/// follow a file being written (the WAL's forwarders) pass how much of it is
/// durable. Checks as [`read`] does.
pub fn read_next(
    format: &Format,
    r: &mut impl Read,
    limit: u64,
    head: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> io::Result<Next> {
    let header_len = format.header_len();
    if limit == 0 {
        return Ok(Next::End);
    }
    head.resize(header_len, 0);
    match read_full(r, head)? {
        0 => return Ok(Next::End),
        n if n == header_len => {}
        _ if limit < header_len as u64 => return Ok(Next::End),
        _ => return Ok(Next::Torn(TornReason::ShortHeader)),
    }
    let mut at = 0;
    if let Some(m) = format.magic {
        let got = u32_at(head, 0);
        if got != m {
            return Ok(Next::Torn(TornReason::BadMagic(got)));
        }
        at = 4;
    }
    let len = u32_at(head, at);
    let crc = u32_at(head, at + 4);
    if len > format.max_len {
        return Ok(Next::Torn(TornReason::TooLong(len)));
    }
    let whole = (header_len + len as usize) as u64;
    if whole > limit {
        return Ok(Next::End);
    }
    body.resize(len as usize, 0);
    if read_full(r, body)? < len as usize {
        return Ok(Next::Torn(TornReason::ShortBody));
    }
    if checksum(&head[at + 8..], body) != crc {
        return Ok(Next::Torn(TornReason::Checksum));
    }
    Ok(Next::Record { len: whole })
}

/// Reads every intact record from `r` in order, handing each to `each`,
/// until the end or the torn tail (see the module doc). `each` returning an
/// error (the payload does not decode) makes that record the torn tail.
/// I/O errors other than the end of the data are returned as such.
pub fn read(
    format: &Format,
    r: impl Read,
    mut each: impl FnMut(Record<'_>) -> Result<(), String>,
) -> io::Result<Tail> {
    let mut r = io::BufReader::with_capacity(1 << 20, r);
    let header_len = format.header_len();
    let (mut head, mut body) = (Vec::new(), Vec::new());
    let mut offset = 0u64;
    loop {
        match read_next(format, &mut r, u64::MAX, &mut head, &mut body)? {
            Next::End => return Ok(Tail::Clean),
            Next::Torn(reason) => return Ok(Tail::Torn { offset, reason }),
            Next::Record { len } => {
                if let Err(e) = each(Record {
                    offset,
                    prefix: &head[header_len - format.prefix..],
                    payload: &body,
                }) {
                    return Ok(Tail::Torn {
                        offset,
                        reason: TornReason::Undecodable(e),
                    });
                }
                offset += len;
            }
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A record read back by position, its checksum verified.
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    buf: Vec<u8>,
    header_len: usize,
    prefix: usize,
}

impl OwnedRecord {
    pub fn prefix(&self) -> &[u8] {
        &self.buf[self.header_len - self.prefix..self.header_len]
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf[self.header_len..]
    }
}

/// Reads the record at `offset` whose payload is `payload_len` bytes (as
/// an earlier [`read`] or [`append`] found it) and verifies it.
pub fn read_at(
    format: &Format,
    file: &File,
    offset: u64,
    payload_len: u32,
) -> io::Result<OwnedRecord> {
    let header_len = format.header_len();
    let mut buf = vec![0u8; format.record_len(payload_len as usize)];
    file.read_exact_at(&mut buf, offset)?;
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut at = 0;
    if let Some(m) = format.magic {
        if u32_at(&buf, 0) != m {
            return Err(bad(format!("record at {offset}: bad magic")));
        }
        at = 4;
    }
    if u32_at(&buf, at) != payload_len {
        return Err(bad(format!("record at {offset}: length differs")));
    }
    let crc = u32_at(&buf, at + 4);
    if checksum(&buf[at + 8..header_len], &buf[header_len..]) != crc {
        return Err(bad(format!("record at {offset}: checksum mismatch")));
    }
    Ok(OwnedRecord {
        buf,
        header_len,
        prefix: format.prefix,
    })
}

/// Writes whole records (`encode`d) at the end of `file`, which is `at`
/// bytes long; if the write fails part-way the file is cut back to `at`, so
/// no partial record stays in front of the next one.
pub fn append(file: &mut File, at: u64, records: &[u8]) -> io::Result<()> {
    if let Err(e) = file.write_all(records) {
        let _ = file.set_len(at);
        return Err(e);
    }
    Ok(())
}

/// Cuts the torn tail off `path` at `offset` and makes the cut durable.
pub fn truncate(path: &Path, offset: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(offset)?;
    f.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PLAIN: Format = Format {
        magic: None,
        prefix: 0,
        max_len: 1 << 20,
    };
    const FULL: Format = Format {
        magic: Some(0x5643_4c31),
        prefix: 8,
        max_len: 1 << 20,
    };

    fn file_of(format: &Format, n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let prefix = if format.prefix == 8 {
                i.to_le_bytes().to_vec()
            } else {
                Vec::new()
            };
            encode(format, &prefix, format!("payload {i}").as_bytes(), &mut out);
        }
        out
    }

    fn read_all(format: &Format, data: &[u8]) -> (Vec<(u64, Vec<u8>)>, Tail) {
        let mut got = Vec::new();
        let tail = read(format, data, |r| {
            got.push((r.offset, r.payload.to_vec()));
            Ok(())
        })
        .unwrap();
        (got, tail)
    }

    #[test]
    fn round_trips_and_reads_back_by_position() {
        for format in [PLAIN, FULL] {
            let data = file_of(&format, 3);
            let (got, tail) = read_all(&format, &data);
            assert_eq!(tail, Tail::Clean);
            assert_eq!(got.len(), 3);
            assert_eq!(got[2].1, b"payload 2");
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("f");
            std::fs::write(&p, &data).unwrap();
            let f = File::open(&p).unwrap();
            let r = read_at(&format, &f, got[1].0, 9).unwrap();
            assert_eq!(r.payload(), b"payload 1");
            if format.prefix == 8 {
                assert_eq!(r.prefix(), 1u64.to_le_bytes());
            }
            assert!(read_at(&format, &f, got[1].0, 8).is_err());
        }
    }

    /// The one policy: every way a tail can be torn ends reading at the
    /// start of the first bad record, and truncating there leaves a clean
    /// file that takes new records.
    #[test]
    fn every_torn_tail_is_cut_at_the_first_bad_record() {
        for format in [PLAIN, FULL] {
            let data = file_of(&format, 3);
            let (whole, _) = read_all(&format, &data);
            let third = whole[2].0 as usize;
            let second = whole[1].0 as usize;
            let mut cases: Vec<(Vec<u8>, usize, TornReason)> = vec![
                (
                    data[..data.len() - 1].to_vec(),
                    third,
                    TornReason::ShortBody,
                ),
                (data[..third + 3].to_vec(), third, TornReason::ShortHeader),
            ];
            let mut flipped = data.clone();
            flipped[second + format.header_len() + 1] ^= 0x40;
            cases.push((flipped, second, TornReason::Checksum));
            let mut long = data.clone();
            let len_at = second + if format.magic.is_some() { 4 } else { 0 };
            long[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            cases.push((long, second, TornReason::TooLong(u32::MAX)));
            if format.magic.is_some() {
                let mut m = data.clone();
                m[third] = 0;
                cases.push((m, third, TornReason::BadMagic(0x5643_4c00)));
            }
            for (bytes, at, reason) in cases {
                let (got, tail) = read_all(&format, &bytes);
                assert_eq!(
                    tail,
                    Tail::Torn {
                        offset: at as u64,
                        reason
                    }
                );
                assert_eq!(
                    got.len(),
                    whole.iter().filter(|w| (w.0 as usize) < at).count()
                );
                let d = tempfile::tempdir().unwrap();
                let p = d.path().join("seg");
                std::fs::write(&p, &bytes).unwrap();
                truncate(&p, at as u64).unwrap();
                let mut f = OpenOptions::new().append(true).open(&p).unwrap();
                let mut more = Vec::new();
                let prefix = vec![7u8; format.prefix];
                encode(&format, &prefix, b"after", &mut more);
                append(&mut f, at as u64, &more).unwrap();
                let (got, tail) = read_all(&format, &std::fs::read(&p).unwrap());
                assert_eq!(tail, Tail::Clean);
                assert_eq!(got.last().unwrap().1, b"after");
            }
        }
    }

    #[test]
    fn an_undecodable_payload_is_the_torn_tail() {
        let data = file_of(&PLAIN, 3);
        let mut n = 0;
        let tail = read(&PLAIN, &data[..], |r| {
            n += 1;
            if r.payload == b"payload 1" {
                Err("bad protobuf".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(n, 2);
        assert!(matches!(
            tail,
            Tail::Torn {
                reason: TornReason::Undecodable(_),
                ..
            }
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = read_all(&FULL, &bytes);
            let _ = read_all(&PLAIN, &bytes);
        }
    }
}
