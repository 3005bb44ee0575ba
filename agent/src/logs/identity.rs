//! Which file is which: a log file is identified by device + inode + a
//! fingerprint of its head (its first line, at most [`FP_MAX`] bytes), so a
//! renamed file keeps its identity, a reused inode or a truncated-and-rewritten
//! file gets a new one, and a gzip'd rotation can be matched to the file it was
//! (by the fingerprint of its decompressed head). Container runtimes start
//! every line with a nanosecond timestamp, so first lines do not repeat.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// The most head bytes hashed.
pub const FP_MAX: usize = 1024;

/// A file's fingerprint and how many head bytes it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: u64,
    pub len: usize,
}

/// Fingerprints a head: its first line with the `\n`, or its first
/// [`FP_MAX`] bytes. `None` while the file has neither (too young to tell).
pub fn fingerprint(head: &[u8]) -> Option<Fingerprint> {
    let len = match memchr::memchr(b'\n', &head[..head.len().min(FP_MAX)]) {
        Some(i) => i + 1,
        None if head.len() >= FP_MAX => FP_MAX,
        None => return None,
    };
    Some(Fingerprint {
        hash: xxhash_rust::xxh3::xxh3_64(&head[..len]),
        len,
    })
}

/// Reads up to [`FP_MAX`] head bytes of an open file without moving it.
pub fn read_head(f: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FP_MAX];
    let mut n = 0;
    while n < FP_MAX {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Reads up to [`FP_MAX`] decompressed head bytes of a gzip file. A
/// corrupt or half-written .gz yields what decompressed before the error.
pub fn read_gz_head(path: &Path) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut d = flate2::read::MultiGzDecoder::new(f);
    let mut buf = vec![0u8; FP_MAX];
    let mut n = 0;
    while n < FP_MAX {
        match d.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if n > 0 => break,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Whether the open file still starts with the fingerprinted head.
pub fn head_matches(f: &File, fp: Fingerprint) -> io::Result<bool> {
    let mut buf = vec![0u8; fp.len];
    let mut n = 0;
    while n < fp.len {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => return Ok(false),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(xxhash_rust::xxh3::xxh3_64(&buf) == fp.hash)
}

/// Device and inode of a file's metadata.
pub fn dev_ino(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// Whether a path names a gzip'd rotation.
pub fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_need_a_line_or_enough_bytes() {
        assert_eq!(fingerprint(b"no newline yet"), None);
        let a = fingerprint(b"line one\nline two").unwrap();
        assert_eq!(a.len, 9);
        assert_eq!(a, fingerprint(b"line one\nother").unwrap());
        assert_ne!(a.hash, fingerprint(b"line 1\n").unwrap().hash);
        let long = vec![b'x'; FP_MAX + 10];
        assert_eq!(fingerprint(&long).unwrap().len, FP_MAX);
    }

    #[test]
    fn gz_heads_match_the_original() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("0.log");
        std::fs::write(&plain, b"first line\nsecond\n").unwrap();
        let gz = dir.path().join("0.log.gz");
        let mut e =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        e.write_all(b"first line\nsecond\n").unwrap();
        e.finish().unwrap();
        let f = File::open(&plain).unwrap();
        let a = fingerprint(&read_head(&f).unwrap()).unwrap();
        let b = fingerprint(&read_gz_head(&gz).unwrap()).unwrap();
        assert_eq!(a, b);
        assert!(head_matches(&f, a).unwrap());
        std::fs::write(&plain, b"other\n").unwrap();
        assert!(!head_matches(&f, a).unwrap());
    }
}
