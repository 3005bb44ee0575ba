//! The text format 0.0.4, as Prometheus's `promlex.l` / `promparse.go` read it:
//! spaces and tabs between any two tokens, blank lines, free `#` comments,
//! `# HELP` / `# TYPE`, optional integer millisecond timestamps. The body is
//! read as if it ended with a newline; a NUL byte at the start of a line ends it.

use super::{
    Entry, MetricType, ParseError, Parser, is_label_char, is_label_start, is_name_char,
    is_name_start, parse_go_float, unescape_help,
};

impl<'a> Parser<'a> {
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// At a line end (or the end of the body, which counts as one).
    fn text_line_end(&mut self) -> bool {
        match self.peek() {
            None => true,
            Some(b'\n') => {
                self.i += 1;
                self.line += 1;
                true
            }
            _ => false,
        }
    }

    fn rest_of_line(&mut self) -> &'a [u8] {
        let b = self.b;
        let start = self.i;
        let end = memchr_nl(&b[start..]).map_or(b.len(), |k| start + k);
        self.i = end;
        &b[start..end]
    }

    pub(super) fn next_text(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        loop {
            let line_start = self.i;
            self.skip_blanks();
            match self.peek() {
                None | Some(0) => return Ok(None),
                Some(b'\n') => {
                    self.i += 1;
                    self.line += 1;
                }
                Some(b'#') => return self.text_comment().map(Some),
                Some(c) if is_name_start(c) => {
                    if self.i != line_start {
                        // Prometheus keeps the blanks in the metric name, which is then invalid.
                        return self.err(
                            "invalid metric name: a sample line must not start with whitespace",
                        );
                    }
                    return self.text_sample().map(Some);
                }
                Some(_) => return self.err("\"INVALID\" is not a valid start token"),
            }
        }
    }

    fn text_comment(&mut self) -> Result<Entry<'a>, ParseError> {
        self.i += 1; // '#'
        if !matches!(self.peek(), Some(b' ' | b'\t')) {
            self.rest_of_line();
            self.text_line_end();
            return Ok(Entry::Comment);
        }
        self.skip_blanks();
        let rest = &self.b[self.i..];
        let kind = if rest.starts_with(b"HELP") {
            Some(true)
        } else if rest.starts_with(b"TYPE") {
            Some(false)
        } else {
            None
        };
        let Some(is_help) = kind.filter(|_| matches!(rest.get(4), Some(b' ' | b'\t'))) else {
            self.rest_of_line();
            self.text_line_end();
            return Ok(Entry::Comment);
        };
        let what = if is_help { "HELP" } else { "TYPE" };
        self.i += 4;
        self.skip_blanks();
        let name = match self.name_token(is_name_start, is_name_char) {
            Some(n) => n,
            None => return self.err(format!("expected metric name after {what}")),
        };
        let rest = self.rest_of_line();
        // The text token starts right after the name; its first byte (the
        // separating blank) is dropped. A rest of blanks only is no text.
        let text: &[u8] = if rest.iter().all(|c| matches!(c, b' ' | b'\t')) {
            b""
        } else {
            &rest[1..]
        };
        self.text_line_end();
        let text = match std::str::from_utf8(text) {
            Ok(t) => t,
            Err(_) if is_help => return self.err("help text is not a valid utf8 string"),
            Err(_) => return self.err("invalid metric type"),
        };
        if is_help {
            Ok(Entry::Help {
                name,
                text: unescape_help(text),
            })
        } else {
            let kind = match text {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "summary" => MetricType::Summary,
                "untyped" => MetricType::Unknown,
                _ => return self.err(format!("invalid metric type {text:?}")),
            };
            Ok(Entry::Type { name, kind })
        }
    }

    /// A name token at the cursor (ASCII by construction).
    pub(super) fn name_token(
        &mut self,
        start: fn(u8) -> bool,
        rest: fn(u8) -> bool,
    ) -> Option<&'a str> {
        let s = self.i;
        if !self.skip_name(start, rest) {
            return None;
        }
        std::str::from_utf8(&self.b[s..self.i]).ok()
    }

    /// Moves past a name token at the cursor; whether there was one. The
    /// sample path, which needs the name's place and not a `&str` of it.
    pub(super) fn skip_name(&mut self, start: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
        let b = self.b;
        let s = self.i;
        if !b.get(s).copied().is_some_and(start) {
            return false;
        }
        let mut e = s + 1;
        while b.get(e).copied().is_some_and(rest) {
            e += 1;
        }
        self.i = e;
        true
    }

    fn text_sample(&mut self) -> Result<Entry<'a>, ParseError> {
        let start = self.i;
        let name_start = self.i;
        self.skip_name(is_name_start, is_name_char);
        self.name = (name_start, self.i);
        self.pairs.clear();
        let mut series_end = self.i;
        self.skip_blanks();
        if self.peek() == Some(b'{') {
            self.i += 1;
            self.text_labels()?;
            series_end = self.i;
            self.skip_blanks();
        }
        let vs = self.i;
        while let Some(c) = self.peek() {
            if matches!(c, b'{' | b' ' | b'\t' | b'\n' | 0) {
                break;
            }
            self.i += 1;
        }
        if vs == self.i {
            return self.err("expected value after metric");
        }
        let value = match parse_go_float(&self.b[vs..self.i]) {
            Ok(v) => v,
            Err(e) => return self.err(e),
        };
        self.skip_blanks();
        let mut timestamp_ms = None;
        if self.text_line_end() {
            return Ok(self.sample(start, series_end, value, timestamp_ms));
        }
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            let ts = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.b[ts..self.i]).unwrap_or("");
            match digits.parse::<i64>() {
                Ok(t) => timestamp_ms = Some(t),
                Err(_) => {
                    return self.err(format!(
                        "strconv.ParseInt: parsing {digits:?}: value out of range"
                    ));
                }
            }
            self.skip_blanks();
            if !self.text_line_end() {
                return self.err("expected next entry after timestamp");
            }
            return Ok(self.sample(start, series_end, value, timestamp_ms));
        }
        self.err("expected timestamp or new record")
    }

    pub(super) fn sample(
        &self,
        start: usize,
        series_end: usize,
        value: f64,
        timestamp_ms: Option<i64>,
    ) -> Entry<'a> {
        Entry::Sample {
            series: &self.b[start..series_end],
            value,
            timestamp_ms,
        }
    }

    /// After `{`: `name = "value"` pairs, blanks anywhere, commas optional
    /// (a trailing one too), up to `}`.
    fn text_labels(&mut self) -> Result<(), ParseError> {
        loop {
            self.skip_blanks();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(());
            }
            let ns = self.i;
            if !self.skip_name(is_label_start, is_label_char) {
                return self.err("expected label name");
            }
            let ne = self.i;
            self.skip_blanks();
            if self.peek() != Some(b'=') {
                return self.err("expected equal");
            }
            self.i += 1;
            self.skip_blanks();
            let (vs, ve) = self.quoted(true)?;
            self.pairs.push((ns, ne, vs, ve));
            self.skip_blanks();
            if self.peek() == Some(b',') {
                self.i += 1;
            }
        }
    }

    /// A `"…"` label value at the cursor: its raw (still escaped) byte range,
    /// checked to be UTF-8. `\` escapes any byte but a newline; a raw newline
    /// is allowed only when `newlines` (the text format).
    pub(super) fn quoted(&mut self, newlines: bool) -> Result<(usize, usize), ParseError> {
        if self.peek() != Some(b'"') {
            return self.err("expected label value");
        }
        let vs = self.i + 1;
        let mut k = vs;
        let mut lines = 0;
        loop {
            match self.b.get(k) {
                None => return self.err("expected label value"),
                Some(b'"') => break,
                Some(b'\\') => match self.b.get(k + 1) {
                    None | Some(b'\n') => return self.err("expected label value"),
                    Some(_) => k += 2,
                },
                Some(b'\n') if !newlines => return self.err("expected label value"),
                Some(b'\n') => {
                    lines += 1;
                    k += 1;
                }
                Some(_) => k += 1,
            }
        }
        let v = &self.b[vs..k];
        if !v.is_ascii() && std::str::from_utf8(v).is_err() {
            return self.err("invalid UTF-8 label value");
        }
        self.line += lines;
        self.i = k + 1;
        Ok((vs, k))
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}
