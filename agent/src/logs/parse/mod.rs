//! Decoding one raw log line (without its `\n`) into a [`Piece`]: a message
//! fragment with its stream, timestamp and whether more pieces follow. Two
//! container runtime formats ([`cri`], [`docker`]) and plain text. Joining
//! pieces into records, and deciding what a record's offsets are, is
//! `assemble`'s job, not this module's.

pub mod cri;
pub mod docker;

use std::borrow::Cow;

/// The container stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// How a file's lines are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `<RFC3339Nano> <stdout|stderr> <P|F> <message>` (kubelet's runtimes, Podman k8s-file).
    Cri,
    /// Docker json-file: `{"log":"…\n","stream":"stdout","time":"…"}`.
    Docker,
    /// Anything else: one line is one record, stamped with the time it was read.
    Plain,
}

impl Format {
    /// Guesses the format of a file from its first line (used for files found
    /// by user globs; the runtimes' own folders have a known format).
    pub fn detect(first_line: &[u8]) -> Format {
        if cri::parse(first_line).is_ok() {
            Format::Cri
        } else if docker::parse(first_line).is_ok() {
            Format::Docker
        } else {
            Format::Plain
        }
    }
}

/// One decoded line: a whole message, or a fragment of one when `partial`.
#[derive(Debug, PartialEq)]
pub struct Piece<'a> {
    pub timestamp_ns: i64,
    pub stream: Stream,
    /// More pieces of the same message follow (CRI `P`, Docker's 16 KiB splits).
    pub partial: bool,
    pub msg: Cow<'a, [u8]>,
}

/// Why a line could not be decoded; the line is counted as garbage and skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no timestamp field")]
    MissingTimestamp,
    #[error("bad timestamp {0:?}")]
    BadTimestamp(String),
    #[error("bad stream {0:?} (want stdout or stderr)")]
    BadStream(String),
    #[error("bad tag {0:?} (want P or F)")]
    BadTag(String),
    #[error("bad json: {0}")]
    Json(String),
}

/// Parses an RFC 3339 timestamp (`2026-11-22T10:48:32.523200041+00:00`,
/// `…Z`, up to nine fraction digits; more are accepted and ignored) into Unix
/// nanoseconds. Hand-written because it runs once per line at hundreds of
/// MiB/s; `None` for anything malformed or outside i64 nanoseconds.
pub fn parse_rfc3339_nanos(s: &[u8]) -> Option<i64> {
    fn num(s: &[u8], at: usize, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for &c in s.get(at..at + n)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    }
    if s.len() < 20 {
        return None;
    }
    let year = num(s, 0, 4)?;
    let month = num(s, 5, 2)?;
    let day = num(s, 8, 2)?;
    let hour = num(s, 11, 2)?;
    let min = num(s, 14, 2)?;
    let sec = num(s, 17, 2)?;
    if s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match s.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let h = num(s, i + 1, 2)?;
            if s.get(i + 3) != Some(&b':') {
                return None;
            }
            let m = num(s, i + 4, 2)?;
            if h > 23 || m > 59 {
                return None;
            }
            i += 6;
            let o = h * 3600 + m * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    if i != s.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339_nanos(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos(b"2026-11-22T10:48:32.523200041+00:00"),
            Some(1_795_344_512_523_200_041)
        );
        assert_eq!(
            parse_rfc3339_nanos(b"2026-11-22T12:48:32.5+02:00"),
            Some(1_795_344_512_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos(b"2026-11-22T10:48:32.5232000419999Z"),
            Some(1_795_344_512_523_200_041)
        );
        assert_eq!(
            parse_rfc3339_nanos(b"2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        for bad in [
            &b""[..],
            b"2026-11-22",
            b"2026-13-22T10:48:32Z",
            b"2026-11-22T10:48:32",
            b"2026-11-22T10:48:32.Z",
            b"2026-11-22T10:48:32Zx",
            b"2026-11-22X10:48:32Z",
            b"9999-11-22T10:48:32Z",
            b"2026-11-22T10:48:32+0000",
        ] {
            assert_eq!(
                parse_rfc3339_nanos(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn format_detection() {
        assert_eq!(
            Format::detect(b"2026-11-22T10:48:32.523200041+00:00 stdout F hello"),
            Format::Cri
        );
        assert_eq!(
            Format::detect(br#"{"log":"hi\n","stream":"stderr","time":"2026-11-22T10:48:32.5Z"}"#),
            Format::Docker
        );
        assert_eq!(Format::detect(b"just text"), Format::Plain);
    }
}
