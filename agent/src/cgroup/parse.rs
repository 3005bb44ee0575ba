//! Parsers for cgroup file formats. Pure functions over bytes (a scrape reads
//! thousands of small files: no UTF-8 check, no map, no allocation unless
//! something is wrong) so they can be fed arbitrary input (see the proptest);
//! every malformed input is an error, never a panic. Not here: which file
//! holds what (`super`).

use std::path::{Path, PathBuf};

/// A cgroup file that could not be read or understood.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParseError {
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
}

impl ParseError {
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        ParseError::Io {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }
    }
    pub fn msg(path: &Path, msg: impl Into<String>) -> Self {
        ParseError::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// Lines of `text`, trimmed, without empty ones, numbered from 1.
fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut rest = text;
    let mut n = 0;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            n += 1;
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            let line = line.trim_ascii();
            if !line.is_empty() {
                return Some((n, line));
            }
        }
        None
    })
}

/// Whitespace-separated fields of a line.
fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

fn lossy(t: &[u8]) -> String {
    String::from_utf8_lossy(&t[..t.len().min(40)]).into_owned()
}

/// A single number file (`memory.current`, `cpuacct.usage`, …): a decimal
/// integer, possibly negative, surrounded by whitespace.
pub fn number(text: impl AsRef<[u8]>) -> Result<f64, String> {
    let t = text.as_ref().trim_ascii();
    if t.is_empty() {
        return Err("empty file".into());
    }
    let (neg, digits) = match t.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, t),
    };
    if digits.is_empty() || digits.len() > 20 {
        return Err(format!("not a number: {:?}", lossy(t)));
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(format!("not a number: {:?}", lossy(t)));
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| format!("out of range: {:?}", lossy(t)))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            return Err(format!("out of range: {:?}", lossy(t)));
        }
        Ok(-(v as f64))
    } else {
        Ok(v as f64)
    }
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`): the values of `keys`, in their order (`None` for a
/// key the file lacks). Lines up to the last wanted key must be `key value`
/// and a wanted value a number, else it is an error (the rest of the file is
/// not looked at); an empty file is an error.
pub fn pick<const N: usize>(
    text: impl AsRef<[u8]>,
    keys: [&str; N],
) -> Result<[Option<f64>; N], String> {
    let mut out = [None; N];
    let mut any = false;
    let mut found = 0;
    for (n, line) in lines(text.as_ref()) {
        any = true;
        let bad = || format!("line {n}: expected `key value`");
        let sp = line
            .iter()
            .position(u8::is_ascii_whitespace)
            .ok_or_else(bad)?;
        let (k, v) = (&line[..sp], line[sp..].trim_ascii_start());
        if v.iter().any(u8::is_ascii_whitespace) {
            return Err(bad());
        }
        if let Some(i) = keys.iter().position(|w| w.as_bytes() == k) {
            if out[i].is_none() {
                found += 1;
            }
            out[i] = Some(number(v).map_err(|e| format!("line {n}: {e}"))?);
            if found == N {
                break;
            }
        }
    }
    if !any {
        return Err("empty file".into());
    }
    Ok(out)
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 …` per device;
/// returns (rbytes, wbytes, rios, wios) summed over devices.
pub fn io_stat(text: impl AsRef<[u8]>) -> Result<[f64; 4], String> {
    const KEYS: [&[u8]; 4] = [b"rbytes", b"wbytes", b"rios", b"wios"];
    let mut out = [0.0; 4];
    for (n, line) in lines(text.as_ref()) {
        let mut it = fields(line);
        let Some(dev) = it.next() else { continue };
        if !dev.contains(&b':') {
            return Err(format!("line {n}: no device"));
        }
        for kv in it {
            let Some(eq) = kv.iter().position(|&b| b == b'=') else {
                return Err(format!("line {n}: expected key=value"));
            };
            let (k, v) = (&kv[..eq], &kv[eq + 1..]);
            let v = number(v).map_err(|e| format!("line {n}: {e}"))?;
            if let Some(i) = KEYS.iter().position(|w| *w == k) {
                out[i] += v;
            }
        }
    }
    Ok(out)
}

/// v1 `blkio.throttle.io_service_bytes`/`io_serviced`: `8:0 Read 123` lines
/// and a `Total` line; returns summed (read, write).
pub fn blkio(text: impl AsRef<[u8]>) -> Result<(f64, f64), String> {
    let (mut r, mut w) = (0.0, 0.0);
    for (n, line) in lines(text.as_ref()) {
        let mut it = fields(line);
        let f = [it.next(), it.next(), it.next(), it.next()];
        match f {
            [Some(b"Total"), Some(_), None, None] => {}
            [Some(_), Some(op), Some(v), None] => {
                let v = number(v).map_err(|e| format!("line {n}: {e}"))?;
                match op {
                    b"Read" => r += v,
                    b"Write" => w += v,
                    _ => {}
                }
            }
            _ => return Err(format!("line {n}: expected `dev op value`")),
        }
    }
    Ok((r, w))
}

/// PSI files: `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and `full …`;
/// returns the `total` (µs) of each line present.
pub fn psi_totals(text: impl AsRef<[u8]>) -> Result<(Option<f64>, Option<f64>), String> {
    let (mut some, mut full) = (None, None);
    for (n, line) in lines(text.as_ref()) {
        let slot = if line.starts_with(b"some ") {
            &mut some
        } else if line.starts_with(b"full ") {
            &mut full
        } else {
            return Err(format!("line {n}: unknown kind"));
        };
        let at = memchr::memmem::rfind(line, b" total=")
            .ok_or_else(|| format!("line {n}: no total="))?;
        let v = number(&line[at + 7..]).map_err(|e| format!("line {n}: {e}"))?;
        *slot = Some(v);
    }
    if some.is_none() && full.is_none() {
        return Err("empty file".into());
    }
    Ok((some, full))
}

/// v2 `cpu.max`: `max 100000` or `50000 100000`; returns (quota, period),
/// the quota `None` when unlimited.
pub fn cpu_max(text: impl AsRef<[u8]>) -> Result<(Option<f64>, f64), String> {
    let t = text.as_ref();
    let mut it = fields(t);
    let (Some(q), Some(p), None) = (it.next(), it.next(), it.next()) else {
        return Err(format!("expected `quota period`: {:?}", lossy(t)));
    };
    let period = number(p)?;
    if q == b"max" {
        Ok((None, period))
    } else {
        Ok((Some(number(q)?), period))
    }
}

/// Non-empty lines (`cgroup.procs`, `tasks`).
pub fn count_lines(text: impl AsRef<[u8]>) -> usize {
    lines(text.as_ref()).count()
}

/// The pids listed in `cgroup.procs` (lines that are not numbers are skipped).
pub fn pids(text: impl AsRef<[u8]>) -> Vec<u32> {
    lines(text.as_ref())
        .filter_map(|(_, l)| std::str::from_utf8(l).ok()?.parse().ok())
        .collect()
}
