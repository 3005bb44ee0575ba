//! The CRI log format that kubelet's runtimes (containerd, CRI-O) and Podman's
//! k8s-file driver write: `<RFC3339Nano> <stdout|stderr> <tags> <message>`,
//! where the first `:`-separated tag is `P` (partial: the message continues in
//! the next `P`/`F` line of the same stream) or `F` (full / last piece).

use std::borrow::Cow;

use super::{ParseError, Piece, Stream};

/// Decodes one line (without `\n`). The message is everything after the
/// third space, byte for byte (it may be empty, and may lack the space).
pub fn parse(line: &[u8]) -> Result<Piece<'_>, ParseError> {
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::MissingTimestamp)?;
    let ts = &line[..sp1];
    let timestamp_ns = vigil_common::time::parse_rfc3339_ns(ts)
        .map_err(|_| ParseError::BadTimestamp(lossy_prefix(ts)))?;
    let rest = &line[sp1 + 1..];
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else {
        let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        return Err(ParseError::BadStream(lossy_prefix(&rest[..end])));
    };
    let (tags, msg) = match memchr::memchr(b' ', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let first = tags.split(|&c| c == b':').next().unwrap_or(tags);
    let partial = match first {
        b"F" => false,
        b"P" => true,
        _ => return Err(ParseError::BadTag(lossy_prefix(tags))),
    };
    Ok(Piece {
        timestamp_ns,
        stream,
        partial,
        msg: Cow::Borrowed(msg),
    })
}

fn lossy_prefix(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_partial_lines() {
        let p = parse(b"2026-11-22T13:34:42.672670194+00:00 stdout F hi there").unwrap();
        assert_eq!(p.stream, Stream::Stdout);
        assert!(!p.partial);
        assert_eq!(&*p.msg, b"hi there");
        assert_eq!(p.timestamp_ns, 1_795_354_482_672_670_194);

        let p = parse(b"2026-11-22T13:34:42.672670194Z stderr P part ").unwrap();
        assert_eq!(p.stream, Stream::Stderr);
        assert!(p.partial);
        assert_eq!(&*p.msg, b"part ");
    }

    #[test]
    fn empty_messages_and_tag_lists() {
        assert_eq!(&*parse(b"2026-11-22T13:34:42Z stdout F ").unwrap().msg, b"");
        assert_eq!(&*parse(b"2026-11-22T13:34:42Z stdout F").unwrap().msg, b"");
        assert!(
            parse(b"2026-11-22T13:34:42Z stdout P:x msg")
                .unwrap()
                .partial
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"hello world",
            b"2026-11-22T13:34:42Z stdin F x",
            b"2026-11-22T13:34:42Z stdout X x",
            b"2026-11-22T13:34:42Z",
            b"\xff\xfe\x00 stdout F x",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
