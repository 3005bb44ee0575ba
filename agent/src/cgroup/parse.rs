//! Parsers for cgroup file formats. Pure functions over text so they can be
//! fed arbitrary bytes (see the proptest); every malformed input is an error,
//! never a panic. Not here: which file holds what (`super`).

use std::collections::HashMap;
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

/// A single number file (`memory.current`, `cpuacct.usage`, …).
pub fn number(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty file".into());
    }
    t.parse::<i64>()
        .map(|v| v as f64)
        .or_else(|_| t.parse::<u64>().map(|v| v as f64))
        .map_err(|_| format!("not a number: {:?}", truncate(t)))
}

fn truncate(t: &str) -> String {
    t.chars().take(40).collect()
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`, `memory.oom_control`).
pub fn flat_kv(text: &str) -> Result<HashMap<String, f64>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("line {}: expected `key value`", n + 1));
        };
        let v = number(v).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.insert(k.to_string(), v);
    }
    if out.is_empty() {
        return Err("empty file".into());
    }
    Ok(out)
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 …` per device, summed.
pub fn io_stat(text: &str) -> Result<HashMap<String, f64>, String> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let mut it = line.split_whitespace();
        let Some(dev) = it.next() else { continue };
        if !dev.contains(':') {
            return Err(format!("line {}: no device", n + 1));
        }
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(format!("line {}: expected key=value", n + 1));
            };
            let v = number(v).map_err(|e| format!("line {}: {e}", n + 1))?;
            *out.entry(k.to_string()).or_default() += v;
        }
    }
    Ok(out)
}

/// v1 `blkio.throttle.io_service_bytes`/`io_serviced`: `8:0 Read 123` lines
/// and a `Total` line; returns summed (read, write).
pub fn blkio(text: &str) -> Result<(f64, f64), String> {
    let (mut r, mut w) = (0.0, 0.0);
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [] | ["Total", _] => {}
            [_, op, v] => {
                let v = number(v).map_err(|e| format!("line {}: {e}", n + 1))?;
                match *op {
                    "Read" => r += v,
                    "Write" => w += v,
                    _ => {}
                }
            }
            _ => return Err(format!("line {}: expected `dev op value`", n + 1)),
        }
    }
    Ok((r, w))
}

/// PSI files: `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and `full …`;
/// returns the `total` (µs) of each line present.
pub fn psi_totals(text: &str) -> Result<(Option<f64>, Option<f64>), String> {
    let (mut some, mut full) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let mut it = line.split_whitespace();
        let Some(kind) = it.next() else { continue };
        let total = it
            .find_map(|kv| kv.strip_prefix("total="))
            .ok_or_else(|| format!("line {}: no total=", n + 1))?;
        let v = number(total).map_err(|e| format!("line {}: {e}", n + 1))?;
        match kind {
            "some" => some = Some(v),
            "full" => full = Some(v),
            _ => return Err(format!("line {}: unknown kind", n + 1)),
        }
    }
    if some.is_none() && full.is_none() {
        return Err("empty file".into());
    }
    Ok((some, full))
}
