//! A duration as written in flags, YAML, rule files and query parameters:
//! Prometheus' `model.ParseDuration` — `250ms`, `10s`, `5m`, `2h`, `1d`, `1w`,
//! `1y` (365 days), or units combined largest first, each at most once
//! (`1h30m`); `0` alone. A bare number is refused: `10` could mean seconds or
//! milliseconds. The error messages are Prometheus' own (rule checks print
//! them as promtool does). The one duration parser of the workspace.

use std::fmt;
use std::str::FromStr;

/// The units, largest first, in milliseconds.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// A non-negative duration parsed from the Prometheus-style notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was refused (Prometheus' messages).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ParseDurationError {
    #[error("empty duration string")]
    Empty,
    #[error("not a valid duration string: {0:?}")]
    Invalid(String),
}

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }
    /// Milliseconds as a signed count (parsed durations fit).
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseDurationError::Empty);
        }
        if s == "0" {
            return Ok(Duration::default());
        }
        let bad = || ParseDurationError::Invalid(s.to_string());
        let b = s.as_bytes();
        let mut i = 0;
        let mut next_unit = 0;
        let mut total_ms: u64 = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
            let n: u64 = s[start..i].parse().map_err(|_| bad())?;
            let ustart = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &s[ustart..i];
            // units largest first, each at most once
            let pos = UNITS[next_unit..]
                .iter()
                .position(|(u, _)| *u == unit)
                .ok_or_else(bad)?;
            let mult = UNITS[next_unit + pos].1;
            next_unit += pos + 1;
            total_ms = n
                .checked_mul(mult)
                .and_then(|x| total_ms.checked_add(x))
                .filter(|t| *t <= i64::MAX as u64)
                .ok_or_else(bad)?;
        }
        Ok(Duration::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in UNITS {
            let size = u128::from(size);
            if ms >= size {
                write!(f, "{}{}", ms / size, unit)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!("10s".parse::<Duration>().unwrap(), Duration::from_secs(10));
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration::from_secs(300));
        assert_eq!(
            "250ms".parse::<Duration>().unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            "1y".parse::<Duration>().unwrap(),
            Duration::from_secs(365 * 86400)
        );
        assert_eq!("0".parse::<Duration>().unwrap(), Duration::default());
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            "10",
            "s",
            "5x",
            "-5s",
            "1.5s",
            " 5s",
            "30m1h",
            "1m1m",
            "99999999999999999999999y",
            "300000000y",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} accepted");
        }
        assert_eq!(
            "".parse::<Duration>().unwrap_err().to_string(),
            "empty duration string"
        );
        assert_eq!(
            "5x".parse::<Duration>().unwrap_err().to_string(),
            "not a valid duration string: \"5x\""
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["1h30m", "10s", "250ms", "1d2h", "0s"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
    }
}
