//! Time as vigil passes it around: Unix **milliseconds** (samples, alerts,
//! actions) and Unix **nanoseconds** (log lines) as `i64`, RFC 3339 text in
//! and out, and the UTC civil calendar (year, month, day, weekday …).
//!
//! Contract: every clock read, every RFC 3339 parse or format and every
//! calendar conversion in the workspace goes through this module; the
//! arithmetic is the `time` crate's (chosen over `jiff` because its
//! `Rfc3339` parser and formatter implement exactly RFC 3339 — the format
//! the Prometheus, Loki, Alertmanager, Docker and Kubernetes APIs and CRI log
//! lines use — while `jiff` parses the wider Temporal/ISO 8601 grammar and
//! carries time-zone machinery vigil does not need; `large-dates` gives
//! PromQL's date functions years up to ±999,999).
//!
//! Parsing is strict RFC 3339 (`2026-11-22T10:48:32.523200041+00:00`,
//! `…Z`, `t`/`z` in lower case and a space instead of `T` accepted, as the
//! RFC allows); fraction digits past the ninth are accepted and ignored.
//! Formatting writes UTC with `Z`.
//!
//! Not here: durations (see [`crate::Duration`]), time zones other than UTC,
//! Go's layout strings (the rule templates' `gofmt`).

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcDateTime};

const NS_PER_MS: i64 = 1_000_000;

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("invalid RFC 3339 timestamp {input:?}: {reason}")]
    Parse { input: String, reason: String },
    #[error("timestamp {input:?} is outside the range of Unix nanoseconds in 64 bits")]
    OutOfRange { input: String },
}

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// Unix nanoseconds now (0 if the clock is before 1970).
pub fn now_ns() -> i64 {
    unix_ns(SystemTime::now())
}

/// Unix seconds now, with the fraction.
pub fn now_secs_f64() -> f64 {
    unix_secs_f64(SystemTime::now())
}

/// Unix seconds of a system time, with the fraction; negative before 1970.
pub fn unix_secs_f64(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Unix milliseconds of a system time; negative before 1970, saturating.
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |v| -v),
    }
}

/// Unix nanoseconds of a system time; negative before 1970, saturating.
pub fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |v| -v),
    }
}

/// Parses RFC 3339 into Unix nanoseconds. Runs once per CRI/Docker log line,
/// so it takes bytes and allocates only to report an error, and it
/// remembers (per thread) the last `YYYY-MM-DDThh:mm:ss` it parsed: lines of
/// the same second only have their fraction and offset read ([`same_second`]).
pub fn parse_rfc3339_ns(s: &[u8]) -> Result<i64, TimeError> {
    if let Some(ns) = same_second(s) {
        return Ok(ns);
    }
    let t = parse(s)?;
    let ns = i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| TimeError::OutOfRange { input: lossy(s) })?;
    // a leap second's validity depends on the offset: never remembered
    if let Some(prefix) = s.first_chunk::<19>()
        && &prefix[17..19] != b"60"
    {
        let civil = t.unix_timestamp() + i64::from(t.offset().whole_seconds());
        LAST_SECOND.with(|c| c.set(Some((*prefix, civil))));
    }
    Ok(ns)
}

thread_local! {
    /// The date and time to the second of the last timestamp parsed on this
    /// thread, and its Unix seconds were it UTC.
    static LAST_SECOND: std::cell::Cell<Option<([u8; 19], i64)>> =
        const { std::cell::Cell::new(None) };
}

/// A timestamp whose first 19 bytes are those of the last one parsed (so
/// already checked by the full parser): the rest read by hand — an optional
/// `.` and digits (past the ninth ignored), then `Z`/`z` or `±hh:mm` (hours
/// to 23) and the end. Anything else (or out of range) is None, and the full
/// parser decides.
fn same_second(s: &[u8]) -> Option<i64> {
    let (prefix, civil) = LAST_SECOND.with(|c| c.get())?;
    if s.get(..19)? != prefix {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(c) = s.get(i).filter(|c| c.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(c - b'0');
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
    let offset = match *s.get(i)? {
        b'Z' | b'z' if s.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if s.len() == i + 6 && s[i + 3] == b':' => {
            let two = |at: usize| -> Option<i64> {
                let (a, b) = (s[at], s[at + 1]);
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (h, m) = (two(i + 1)?, two(i + 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    (civil - offset)
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// Parses RFC 3339 into Unix milliseconds (the fraction below a millisecond
/// is dropped, rounding towards negative infinity).
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, TimeError> {
    let t = parse(s.as_bytes())?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(i128::from(NS_PER_MS))).map_err(|_| {
        TimeError::OutOfRange {
            input: s.to_string(),
        }
    })
}

fn parse(s: &[u8]) -> Result<OffsetDateTime, TimeError> {
    // the `time` crate takes any byte between date and time; RFC 3339 only T, t
    // or (its note) a space
    if s.len() > 10 && !matches!(s[10], b'T' | b't' | b' ') {
        return Err(TimeError::Parse {
            input: lossy(s),
            reason: "date and time must be separated by T".into(),
        });
    }
    let text = std::str::from_utf8(s).map_err(|_| TimeError::Parse {
        input: lossy(s),
        reason: "not UTF-8".into(),
    })?;
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| TimeError::Parse {
        input: lossy(s),
        reason: e.to_string(),
    })
}

fn lossy(s: &[u8]) -> String {
    String::from_utf8_lossy(&s[..s.len().min(64)]).into_owned()
}

fn utc_ns(ns: i64) -> UtcDateTime {
    // every i64 of nanoseconds (years 1677–2262) is in range
    UtcDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(UtcDateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC with as many fraction digits as needed and none when the
/// time is a whole second (Go's `time.RFC3339Nano`): `2026-11-22T10:48:32.5Z`.
pub fn format_rfc3339_ns(ns: i64) -> String {
    utc_ns(ns)
        .format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// [`format_rfc3339_ns`] of Unix milliseconds.
pub fn format_rfc3339_ms(ms: i64) -> String {
    format_rfc3339_ns(ms.saturating_mul(NS_PER_MS))
}

/// RFC 3339 in UTC with exactly three fraction digits, as Alertmanager's
/// `strfmt.DateTime` writes it: `2026-11-22T10:48:32.500Z`.
pub fn format_rfc3339_millis(ms: i64) -> String {
    let c = Civil::from_unix_ns(ms.saturating_mul(NS_PER_MS));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.nanosecond / 1_000_000
    )
}

/// RFC 3339 in UTC with exactly six fraction digits, as Kubernetes writes a
/// `MicroTime`: `2026-11-22T10:48:32.500000Z`.
pub fn format_rfc3339_micros(ns: i64) -> String {
    let c = Civil::from_unix_ns(ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.nanosecond / 1_000
    )
}

/// A UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i32,
    /// 1–12
    pub month: u8,
    /// 1–31
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub nanosecond: u32,
    /// 0 = Sunday … 6 = Saturday
    pub weekday: u8,
    /// 1–366
    pub day_of_year: u16,
    /// Days in this month (28–31).
    pub days_in_month: u8,
}

impl Civil {
    fn from(t: UtcDateTime) -> Civil {
        Civil {
            year: t.year(),
            month: u8::from(t.month()),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            second: t.second(),
            nanosecond: t.nanosecond(),
            weekday: t.weekday().number_days_from_sunday(),
            day_of_year: t.ordinal(),
            days_in_month: t.month().length(t.year()),
        }
    }

    /// The civil time of Unix nanoseconds (every `i64` is in range).
    pub fn from_unix_ns(ns: i64) -> Civil {
        Civil::from(utc_ns(ns))
    }

    /// The civil time of whole Unix seconds; `None` outside years ±999,999.
    pub fn from_unix_secs(secs: i64) -> Option<Civil> {
        UtcDateTime::from_unix_timestamp(secs).ok().map(Civil::from)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        let p = |s: &str| parse_rfc3339_ns(s.as_bytes());
        assert_eq!(p("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            p("2026-11-22T10:48:32.523200041+00:00"),
            Ok(1_795_344_512_523_200_041)
        );
        assert_eq!(
            p("2026-11-22T12:48:32.5+02:00"),
            Ok(1_795_344_512_500_000_000)
        );
        assert_eq!(
            p("2026-11-22t10:48:32.5232000419999z"),
            Ok(1_795_344_512_523_200_041),
            "digits past the ninth are ignored"
        );
        assert_eq!(p("2000-02-29 00:00:00Z"), Ok(951_782_400_000_000_000));
        assert_eq!(p("1969-12-31T23:59:59.5Z"), Ok(-500_000_000));
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T10:48:32.5239Z"),
            Ok(1_795_344_512_523)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59.9995Z"), Ok(-1));
        for bad in [
            "",
            "2026-11-22",
            "2026-13-22T10:48:32Z",
            "2026-02-30T10:48:32Z",
            "2026-11-22T10:48:32",
            "2026-11-22T10:48:32.Z",
            "2026-11-22T10:48:32Zx",
            "2026-11-22X10:48:32Z",
            "2026-11-22T10:48:32+0000",
            "2026-11-22T24:00:00Z",
        ] {
            assert!(
                matches!(p(bad), Err(TimeError::Parse { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            p("9999-11-22T10:48:32Z"),
            Err(TimeError::OutOfRange { .. })
        ));
        assert!(parse_rfc3339_ms("9999-11-22T10:48:32Z").is_ok());
    }

    /// Timestamps of the second last parsed take the short path: it must
    /// agree with the full parser on every tail, good or bad.
    #[test]
    fn the_same_second_parses_as_the_full_parser_does() {
        let full = |s: &str| {
            parse(s.as_bytes()).and_then(|t| {
                i64::try_from(t.unix_timestamp_nanos()).map_err(|_| TimeError::OutOfRange {
                    input: lossy(s.as_bytes()),
                })
            })
        };
        let tails = [
            "Z",
            "z",
            ".5Z",
            ".123456789Z",
            ".1234567891234Z",
            "+02:00",
            "-05:30",
            ".5-00:00",
            ".Z",
            "",
            "Zx",
            "+0000",
            "+24:00",
            "+23:60",
            "+2:00",
            "+02:0",
            "+02:00x",
            ".5",
            ".x",
            "Z ",
            " Z",
            "+99:99",
            "-23:59",
        ];
        for prefix in [
            "2026-11-22T10:48:32",
            "1970-01-01T00:00:00",
            "2262-04-11T23:47:16",
            "1677-09-21T00:12:43",
        ] {
            for first in ["Z", "+01:00"] {
                for tail in tails {
                    // the first remembers the second (when it parses)
                    let _ = parse_rfc3339_ns(format!("{prefix}{first}").as_bytes());
                    let s = format!("{prefix}{tail}");
                    let got = parse_rfc3339_ns(s.as_bytes());
                    let want = full(&s);
                    assert_eq!(got.is_ok(), want.is_ok(), "{s:?}: {got:?} vs {want:?}");
                    if want.is_ok() {
                        assert_eq!(got, want, "{s:?}");
                    }
                }
            }
        }
        // a leap second is never remembered
        let _ = parse_rfc3339_ns(b"2016-12-31T23:59:60Z");
        assert_eq!(
            parse_rfc3339_ns(b"2016-12-31T23:59:60+01:00").is_ok(),
            full("2016-12-31T23:59:60+01:00").is_ok()
        );
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339_ms(1_500), "1970-01-01T00:00:01.5Z");
        assert_eq!(
            format_rfc3339_ns(1_795_344_512_523_200_041),
            "2026-11-22T10:48:32.523200041Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_millis(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(
            format_rfc3339_millis(1_795_344_512_000),
            "2026-11-22T10:48:32.000Z"
        );
        for ns in [0, 1, -1, 1_795_344_512_523_200_041, i64::MIN, i64::MAX] {
            assert_eq!(parse_rfc3339_ns(format_rfc3339_ns(ns).as_bytes()), Ok(ns));
        }
    }

    #[test]
    fn civil_dates() {
        // 2024-02-29 (a leap day, a Thursday) 13:14:15
        let c = Civil::from_unix_secs(1_709_212_455).unwrap();
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2024, 2, 29, 13, 14, 15)
        );
        assert_eq!((c.weekday, c.day_of_year, c.days_in_month), (4, 60, 29));
        let c = Civil::from_unix_ns(-1);
        assert_eq!((c.year, c.month, c.day, c.weekday), (1969, 12, 31, 3));
        assert_eq!(c.nanosecond, 999_999_999);
        // far years, as PromQL's date functions may be asked
        assert_eq!(
            Civil::from_unix_secs(1_000_000_000_000).unwrap().year,
            33_658
        );
        assert!(Civil::from_unix_secs(i64::MAX).is_none());
        assert!(now_ms() > 1_700_000_000_000);
        assert!(now_ns() / NS_PER_MS >= now_ms() - 1_000);
    }
}
