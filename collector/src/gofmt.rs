//! Text formats borrowed from Go, so what we print matches what Prometheus
//! and promtool print: `strconv.FormatFloat` (`'g'`, `'e'`, `'E'`), `fmt`'s
//! `%.Ng`, `time.Duration.String`, Prometheus' `model.Duration` (printed;
//! parsed by `vigil_common::Duration`), `strconv.Quote` and `url.QueryEscape`.
//! Shared by the rules, their templates and the notifier.
//!
//! Not here: template execution (see [`crate::rules::template`]).

use std::fmt::Write as _;

/// Decimal digits (no trailing zeros, at least one digit) and the position
/// of the decimal point (`0.123` → digits `123`, point 0) of `|v|`.
/// `precision` = significant digits, `None` = shortest round-trip form.
fn decimal(v: f64, precision: Option<usize>) -> (String, i32) {
    let s = match precision {
        None => format!("{:e}", v.abs()),
        Some(p) => format!("{:.*e}", p.max(1) - 1, v.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    if digits == "0" {
        return (String::new(), 0);
    }
    (digits, exp + 1)
}

fn special(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("+Inf")
    } else if v == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
    }
}

fn e_form(neg: bool, digits: &str, dp: i32, prec: Option<usize>, e: char) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let digits = if digits.is_empty() { "0" } else { digits };
    out.push_str(&digits[..1]);
    let mut frac = digits[1..].to_string();
    if let Some(p) = prec {
        while frac.len() < p {
            frac.push('0');
        }
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(&frac);
    }
    let exp = if digits == "0" { 0 } else { dp - 1 };
    let _ = write!(
        out,
        "{e}{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    );
    out
}

fn f_form(neg: bool, digits: &str, dp: i32) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if digits.is_empty() {
        out.push('0');
    } else if dp <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-dp) as usize));
        out.push_str(digits);
    } else if dp as usize >= digits.len() {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', dp as usize - digits.len()));
    } else {
        out.push_str(&digits[..dp as usize]);
        out.push('.');
        out.push_str(&digits[dp as usize..]);
    }
    out
}

/// Go's `%g` (`precision` None, also what `%v` and `fmt.Sprint` print for a
/// float64) and `%.Ng` (`precision` Some(N)).
pub fn format_g(v: f64, precision: Option<usize>) -> String {
    if let Some(s) = special(v) {
        return s.to_string();
    }
    let neg = v.is_sign_negative() && v != 0.0;
    let (digits, dp) = decimal(v, precision);
    let nd = digits.len() as i32;
    let mut eprec = precision.map_or(6, |p| p.max(1) as i32);
    if precision.is_some() && eprec > nd && nd >= dp {
        eprec = nd;
    }
    let exp = if digits.is_empty() { -1 } else { dp - 1 };
    if digits.is_empty() {
        return if neg { "-0".into() } else { "0".into() };
    }
    if exp < -4 || exp >= eprec {
        e_form(neg, &digits, dp, None, 'e')
    } else {
        f_form(neg, &digits, dp)
    }
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)` (`upper` → `'E'`).
pub fn format_e(v: f64, upper: bool) -> String {
    if let Some(s) = special(v) {
        return s.to_string();
    }
    let neg = v.is_sign_negative() && v != 0.0;
    let (digits, dp) = decimal(v, None);
    e_form(neg, &digits, dp, None, if upper { 'E' } else { 'e' })
}

/// Go's `time.Duration.String` for a duration in milliseconds
/// (`0s`, `500ms`, `1.5s`, `1m0s`, `1h0m0s`).
pub fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let neg = ms < 0;
    let u = ms.unsigned_abs();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if u < 1000 {
        let _ = write!(out, "{u}ms");
        return out;
    }
    let h = u / 3_600_000;
    let m = (u / 60_000) % 60;
    let s = (u / 1000) % 60;
    let frac = u % 1000;
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let f = format!("{frac:03}");
        let _ = write!(out, ".{}", f.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// Prometheus' `model.Duration.String` (`0s`, `5m`, `1h30m`, `2w`, `90d`).
pub fn model_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut r = String::new();
    let mut ms = ms;
    if ms < 0 {
        r.push('-');
        ms = -ms;
    }
    let mut f = |unit: &str, mult: i64, exact: bool| {
        if exact && ms % mult != 0 {
            return;
        }
        let v = ms / mult;
        if v > 0 {
            let _ = write!(r, "{v}{unit}");
            ms -= v * mult;
        }
    };
    f("y", 1000 * 60 * 60 * 24 * 365, true);
    f("w", 1000 * 60 * 60 * 24 * 7, true);
    f("d", 1000 * 60 * 60 * 24, false);
    f("h", 1000 * 60 * 60, false);
    f("m", 1000 * 60, false);
    f("s", 1000, false);
    f("ms", 1, false);
    r
}

/// Prometheus' `model.ParseDuration` in ms (the parser is
/// `vigil_common::Duration`'s; its errors are Prometheus' messages).
pub fn parse_model_duration(s: &str) -> Result<i64, vigil_common::duration::ParseDurationError> {
    s.parse::<vigil_common::Duration>()
        .map(vigil_common::Duration::as_millis_i64)
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prometheus' `labels.Labels.String` (`{a="1", b="2"}`), as promtool prints.
pub fn labels_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&go_quote(v));
    }
    out.push('}');
    out
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_matches_go() {
        let cases: &[(f64, Option<usize>, &str)] = &[
            (1e6, None, "1e+06"),
            (123456.0, None, "123456"),
            (1234567.0, None, "1.234567e+06"),
            (0.0001, None, "0.0001"),
            (0.00001, None, "1e-05"),
            (-2.5, None, "-2.5"),
            (0.0, None, "0"),
            (1.0 / 3.0, None, "0.3333333333333333"),
            (f64::INFINITY, None, "+Inf"),
            (f64::NAN, None, "NaN"),
            (123456.0, Some(4), "1.235e+05"),
            (12345.0, Some(4), "1.234e+04"),
            (100.0, Some(4), "100"),
            (1e6, Some(4), "1e+06"),
            (0.3333333, Some(4), "0.3333"),
            (0.0, Some(4), "0"),
            (1.5, Some(4), "1.5"),
            (999.99, Some(4), "1000"),
            (9999.9, Some(4), "1e+04"),
            (f64::NEG_INFINITY, Some(4), "-Inf"),
        ];
        for (v, p, want) in cases {
            assert_eq!(format_g(*v, *p), *want, "{v} {p:?}");
        }
    }

    #[test]
    fn e_matches_go() {
        assert_eq!(format_e(1.0, false), "1e+00");
        assert_eq!(format_e(2.5, true), "2.5E+00");
        assert_eq!(format_e(123450.0, true), "1.2345E+05");
        assert_eq!(format_e(0.0, false), "0e+00");
        assert_eq!(format_e(1e-7, false), "1e-07");
        assert_eq!(format_e(-1e100, false), "-1e+100");
        assert_eq!(format_e(f64::NAN, true), "NaN");
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(60_000), "1m0s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
        assert_eq!(go_duration(1500), "1.5s");
        assert_eq!(go_duration(500), "500ms");
        assert_eq!(go_duration(90_000), "1m30s");
        assert_eq!(model_duration(0), "0s");
        assert_eq!(model_duration(300_000), "5m");
        assert_eq!(model_duration(5_400_000), "1h30m");
        assert_eq!(model_duration(14 * 86_400_000), "2w");
        assert_eq!(model_duration(90 * 86_400_000), "90d");
        assert_eq!(parse_model_duration("90s500ms"), Ok(90_500));
        assert!(parse_model_duration("").is_err());
        assert!(parse_model_duration("5").is_err());
        assert!(parse_model_duration("1m1h").is_err());
        assert!(parse_model_duration("1.5m").is_err());
        assert!(parse_model_duration("5mm").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(go_quote("a\"b\\\n\u{1}é"), "\"a\\\"b\\\\\\n\\x01é\"");
        assert_eq!(
            labels_string([("a", "1"), ("b", "x")]),
            "{a=\"1\", b=\"x\"}"
        );
        assert_eq!(labels_string([]), "{}");
    }
}
