//! Docker's json-file log driver: one JSON object per line,
//! `{"log":"…","stream":"stdout|stderr","time":"<RFC3339Nano>"}` (plus an
//! optional `attrs`). Docker splits messages longer than 16 KiB into pieces
//! whose `log` lacks the trailing `\n`; the last piece has it.

use std::borrow::Cow;

use super::{ParseError, Piece, Stream};

#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// Decodes one line (without `\n`). Docker writes valid UTF-8 JSON; a line
/// that is not is re-read lossily (so an odd byte costs one character, not
/// the line) before giving up.
pub fn parse(line: &[u8]) -> Result<Piece<'_>, ParseError> {
    match serde_json::from_slice::<Line<'_>>(line) {
        Ok(l) => piece(l),
        Err(e) if std::str::from_utf8(line).is_err() => {
            let lossy = String::from_utf8_lossy(line);
            match serde_json::from_str::<Line<'_>>(&lossy) {
                Ok(l) => piece(l).map(|p| Piece {
                    timestamp_ns: p.timestamp_ns,
                    stream: p.stream,
                    partial: p.partial,
                    msg: Cow::Owned(p.msg.into_owned()),
                }),
                Err(_) => Err(ParseError::Json(e.to_string())),
            }
        }
        Err(e) => Err(ParseError::Json(e.to_string())),
    }
}

fn piece<'a>(l: Line<'a>) -> Result<Piece<'a>, ParseError> {
    let stream = match &*l.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        other => return Err(ParseError::BadStream(other.chars().take(64).collect())),
    };
    let timestamp_ns = vigil_common::time::parse_rfc3339_ns(l.time.as_bytes())
        .map_err(|_| ParseError::BadTimestamp(l.time.chars().take(64).collect()))?;
    let partial = !l.log.ends_with('\n');
    let msg: Cow<'a, [u8]> = match l.log {
        Cow::Borrowed(s) => Cow::Borrowed(s.strip_suffix('\n').unwrap_or(s).as_bytes()),
        Cow::Owned(mut s) => {
            if s.ends_with('\n') {
                s.pop();
            }
            Cow::Owned(s.into_bytes())
        }
    };
    Ok(Piece {
        timestamp_ns,
        stream,
        partial,
        msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_splits() {
        let p = parse(
            br#"{"log":"hello \"x\"\n","stream":"stderr","time":"2026-11-22T10:48:32.523200041Z"}"#,
        )
        .unwrap();
        assert_eq!(&*p.msg, br#"hello "x""#);
        assert_eq!(p.stream, Stream::Stderr);
        assert!(!p.partial);
        assert_eq!(p.timestamp_ns, 1_795_344_512_523_200_041);

        let p = parse(
            br#"{"log":"abc","stream":"stdout","time":"2026-11-22T10:48:32Z","attrs":{"a":"b"}}"#,
        )
        .unwrap();
        assert!(p.partial);
        assert_eq!(&*p.msg, b"abc");
        assert!(matches!(p.msg, Cow::Borrowed(_)));
    }

    #[test]
    fn invalid_utf8_is_kept_lossily() {
        let p = parse(
            b"{\"log\":\"a\xffb\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-22T10:48:32Z\"}",
        )
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&p.msg), "a\u{fffd}b");
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"log\":\"x\"}",
            br#"{"log":"x","stream":"stdin","time":"2026-11-22T10:48:32Z"}"#,
            br#"{"log":"x","stream":"stdout","time":"yesterday"}"#,
            b"\x00\x01\x02",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
