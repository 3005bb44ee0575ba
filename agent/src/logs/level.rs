//! The severity a log line states about itself, for `vigil_log_lines_total{level}`
//! (so alert rules can fire on error rates). Looks only at the head of the
//! message: JSON `level`/`severity`/`lvl` fields, logfmt `level=`, klog's
//! `E1122 …` and common prefixes (`ERROR`, `[warn]`, `2026-… INFO …`). Not a
//! parser of structured logs: anything unclear is `Unknown`.

/// A bounded set of levels (a metric label value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Unknown,
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

pub const LEVELS: [Level; 7] = [
    Level::Unknown,
    Level::Trace,
    Level::Debug,
    Level::Info,
    Level::Warn,
    Level::Error,
    Level::Fatal,
];

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How far into a message we look: levels are stated up front.
const HEAD: usize = 256;

/// Detects the level a message states, if any.
pub fn detect(msg: &[u8]) -> Level {
    let head = &msg[..msg.len().min(HEAD)];
    let trimmed = trim_start(head);
    if trimmed.first() == Some(&b'{')
        && let Some(l) = json_field(trimmed)
    {
        return l;
    }
    if let Some(l) = logfmt_field(head) {
        return l;
    }
    if let Some(l) = klog(trimmed) {
        return l;
    }
    leading_word(trimmed).unwrap_or(Level::Unknown)
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Maps a level word (any case, a few abbreviations) to a level.
fn word_level(w: &[u8]) -> Option<Level> {
    if w.is_empty() || w.len() > 8 {
        return None;
    }
    let mut buf = [0u8; 8];
    for (d, s) in buf.iter_mut().zip(w) {
        *d = s.to_ascii_lowercase();
    }
    Some(match &buf[..w.len()] {
        b"trace" | b"trc" => Level::Trace,
        b"debug" | b"dbg" => Level::Debug,
        b"info" | b"inf" | b"notice" => Level::Info,
        b"warn" | b"warning" | b"wrn" => Level::Warn,
        b"error" | b"err" | b"eror" => Level::Error,
        b"fatal" | b"critical" | b"crit" | b"panic" | b"emerg" | b"alert" | b"dpanic" => {
            Level::Fatal
        }
        _ => return None,
    })
}

type Finders = Vec<memchr::memmem::Finder<'static>>;

/// Substring searchers built once (building one per call costs more than
/// the search in a 200-byte line).
fn finders(
    keys: &'static [&'static [u8]],
    cell: &'static std::sync::OnceLock<Finders>,
) -> &'static Finders {
    cell.get_or_init(|| keys.iter().map(memchr::memmem::Finder::new).collect())
}

const JSON_KEYS: &[&[u8]] = &[
    b"\"level\"",
    b"\"severity\"",
    b"\"lvl\"",
    b"\"log.level\"",
    b"\"loglevel\"",
];
const LOGFMT_KEYS: &[&[u8]] = &[b"level=", b"lvl=", b"severity="];

/// `"level":"warn"`, `"severity": "ERROR"`, `"lvl":"info"`, `"log.level":…`.
fn json_field(b: &[u8]) -> Option<Level> {
    static F: std::sync::OnceLock<Finders> = std::sync::OnceLock::new();
    for f in finders(JSON_KEYS, &F) {
        if let Some(i) = f.find(b) {
            let key = f.needle();
            let rest = trim_start(&b[i + key.len()..]);
            let rest = trim_start(rest.strip_prefix(b":")?);
            let rest = rest.strip_prefix(b"\"")?;
            let end = memchr::memchr(b'"', rest)?;
            return word_level(&rest[..end]);
        }
    }
    None
}

/// logfmt `level=error` / `lvl="warn"` / `severity=info`, at a word start.
fn logfmt_field(b: &[u8]) -> Option<Level> {
    static F: std::sync::OnceLock<Finders> = std::sync::OnceLock::new();
    for f in finders(LOGFMT_KEYS, &F) {
        let key = f.needle();
        let mut from = 0;
        while let Some(i) = f.find(&b[from..]) {
            let at = from + i;
            if at == 0 || b[at - 1] == b' ' || b[at - 1] == b'\t' {
                let rest = &b[at + key.len()..];
                let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
                let end = rest
                    .iter()
                    .position(|c| matches!(c, b' ' | b'"' | b'\t'))
                    .unwrap_or(rest.len());
                return word_level(&rest[..end]);
            }
            from = at + key.len();
        }
    }
    None
}

/// klog: `I1122 10:48:32.523200 …` (I, W, E, F and four digits).
fn klog(b: &[u8]) -> Option<Level> {
    if b.len() < 6 || !b[1..5].iter().all(u8::is_ascii_digit) || b[5] != b' ' {
        return None;
    }
    Some(match b[0] {
        b'I' => Level::Info,
        b'W' => Level::Warn,
        b'E' => Level::Error,
        b'F' => Level::Fatal,
        _ => return None,
    })
}

/// The first word (`ERROR`, `[warn]`, `error:`), or a later one of the first
/// four when it is upper-case (after a timestamp or a logger name), so a
/// sentence that merely mentions "error" is not taken for an error line.
fn leading_word(b: &[u8]) -> Option<Level> {
    let mut words = b
        .split(|c| matches!(c, b' ' | b'\t' | b'|'))
        .filter(|w| !w.is_empty());
    for (n, w) in words.by_ref().take(4).enumerate() {
        let inner = w
            .strip_prefix(b"[")
            .or_else(|| w.strip_prefix(b"<"))
            .unwrap_or(w);
        let inner = inner
            .strip_suffix(b":")
            .or_else(|| inner.strip_suffix(b"]:"))
            .unwrap_or(inner);
        let inner = inner
            .strip_suffix(b"]")
            .or_else(|| inner.strip_suffix(b">"))
            .unwrap_or(inner);
        let bracketed = inner.len() != w.len();
        if (n == 0 || bracketed || inner.iter().all(|c| !c.is_ascii_lowercase()))
            && let Some(l) = word_level(inner)
        {
            return Some(l);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_stated_by_lines() {
        for (line, want) in [
            (&br#"{"ts":1,"level":"error","msg":"x"}"#[..], Level::Error),
            (br#"{"severity": "WARNING", "message": "x"}"#, Level::Warn),
            (
                br#"{"msg":"level=error inside","lvl":"debug"}"#,
                Level::Debug,
            ),
            (
                b"ts=2026-11-22T10:48:32Z level=info msg=started",
                Level::Info,
            ),
            (b"time=\"x\" level=\"warn\" msg=\"slow\"", Level::Warn),
            (
                b"E1122 10:48:32.523200    1 controller.go:10] failed",
                Level::Error,
            ),
            (b"I1122 10:48:32.523200    1 main.go:10] ok", Level::Info),
            (b"ERROR could not connect", Level::Error),
            (b"[warn] disk almost full", Level::Warn),
            (b"error: no such file", Level::Error),
            (b"2026-11-22 10:48:32,123 CRITICAL db down", Level::Fatal),
            (
                b"2026/11/22 10:48:32 [error] 7#7: open() failed",
                Level::Error,
            ),
            (b"<debug> x", Level::Debug),
            (b"the error rate is fine", Level::Unknown),
            (b"all good", Level::Unknown),
            (b"", Level::Unknown),
            (b"\xff\xfe", Level::Unknown),
        ] {
            assert_eq!(detect(line), want, "{}", String::from_utf8_lossy(line));
        }
    }
}
