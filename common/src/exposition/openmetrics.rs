//! OpenMetrics 1.0 text, as Prometheus 2.42's `openmetricslex.l` /
//! `openmetricsparse.go` read it: single spaces as separators, no blank
//! lines or free comments, `# HELP` / `# TYPE` / `# UNIT`, float second
//! timestamps, exemplars after ` # ` (checked, then dropped), and `# EOF`
//! last. Series like `_created` are ordinary samples here, as in 2.42.

use std::borrow::Cow;

use super::{
    Entry, MetricType, ParseError, Parser, is_label_char, is_label_start, is_name_char,
    is_name_start, parse_go_float, unescape_value,
};

impl<'a> Parser<'a> {
    pub(super) fn next_openmetrics(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        let b = self.b;
        match self.peek() {
            None => self.err("data does not end with # EOF"),
            Some(b'#') if b.get(self.i + 1) == Some(&b' ') => {
                self.i += 2;
                let rest = &b[self.i..];
                if rest.starts_with(b"EOF") {
                    self.i += 3;
                    if self.peek() == Some(b'\n') {
                        self.i += 1;
                    }
                    if self.i < b.len() {
                        return self.err("unexpected data after # EOF");
                    }
                    return Ok(None);
                }
                let what = if rest.starts_with(b"HELP ") {
                    "HELP"
                } else if rest.starts_with(b"TYPE ") {
                    "TYPE"
                } else if rest.starts_with(b"UNIT ") {
                    "UNIT"
                } else {
                    return self.err("\"INVALID\" is not a valid start token");
                };
                self.i += 5;
                let Some(name) = self.name_token(is_name_start, is_name_char) else {
                    return self.err(format!("expected metric name after {what}"));
                };
                // `{S}{C}*\n`: one space, the text, a newline (required).
                if self.peek() != Some(b' ') {
                    return self.err(format!("expected text in {what}"));
                }
                let ts = self.i + 1;
                let Some(nl) = memchr::memchr(b'\n', &b[ts..]) else {
                    return self.err(format!("expected text in {what}"));
                };
                let raw = &b[ts..ts + nl];
                self.i = ts + nl + 1;
                self.line += 1;
                let Ok(text) = std::str::from_utf8(raw) else {
                    return self.err("help text is not a valid utf8 string");
                };
                match what {
                    "HELP" => Ok(Some(Entry::Help {
                        name,
                        text: if raw.contains(&b'\\') {
                            Cow::Owned(unescape_value(raw))
                        } else {
                            Cow::Borrowed(text)
                        },
                    })),
                    "TYPE" => {
                        let kind = match text {
                            "counter" => MetricType::Counter,
                            "gauge" => MetricType::Gauge,
                            "histogram" => MetricType::Histogram,
                            "gaugehistogram" => MetricType::GaugeHistogram,
                            "summary" => MetricType::Summary,
                            "info" => MetricType::Info,
                            "stateset" => MetricType::StateSet,
                            "unknown" => MetricType::Unknown,
                            _ => return self.err(format!("invalid metric type {text:?}")),
                        };
                        Ok(Some(Entry::Type { name, kind }))
                    }
                    _ => {
                        if !text.is_empty() {
                            let ok = name.len() > text.len()
                                && name.ends_with(text)
                                && name.as_bytes()[name.len() - text.len() - 1] == b'_';
                            if !ok {
                                return self.err(format!("unit not a suffix of metric {name:?}"));
                            }
                        }
                        Ok(Some(Entry::Unit { name, unit: text }))
                    }
                }
            }
            Some(c) if is_name_start(c) => self.om_sample().map(Some),
            Some(_) => self.err("\"INVALID\" is not a valid start token"),
        }
    }

    fn om_sample(&mut self) -> Result<Entry<'a>, ParseError> {
        let start = self.i;
        self.skip_name(is_name_start, is_name_char);
        self.name = (start, self.i);
        self.pairs.clear();
        if self.peek() == Some(b'{') {
            self.i += 1;
            let mut pairs = std::mem::take(&mut self.pairs);
            let r = self.om_labels(&mut pairs);
            self.pairs = pairs;
            r?;
        }
        let series_end = self.i;
        let value = match self.om_token() {
            Some(v) => match parse_go_float(v) {
                Ok(v) => v,
                Err(e) => return self.err(e),
            },
            None => return self.err("expected value after metric"),
        };
        let mut timestamp_ms = None;
        match self.peek() {
            None => return self.err("data does not end with # EOF"),
            Some(b'\n') => {}
            Some(b' ') if self.at_exemplar() => {
                self.om_exemplar()?;
                return Ok(self.sample(start, series_end, value, timestamp_ms));
            }
            Some(b' ') => {
                let Some(t) = self.om_token() else {
                    return self.err("expected timestamp or # symbol");
                };
                let t = match parse_go_float(t) {
                    Ok(t) if t.is_finite() => t,
                    Ok(_) => return self.err("invalid timestamp"),
                    Err(e) => return self.err(e),
                };
                timestamp_ms = Some((t * 1000.0) as i64);
                match self.peek() {
                    Some(b'\n') => {}
                    Some(b' ') if self.at_exemplar() => {
                        self.om_exemplar()?;
                        return Ok(self.sample(start, series_end, value, timestamp_ms));
                    }
                    None => return self.err("data does not end with # EOF"),
                    _ => return self.err("expected next entry after timestamp"),
                }
            }
            _ => return self.err("expected timestamp or # symbol"),
        }
        self.i += 1;
        self.line += 1;
        Ok(self.sample(start, series_end, value, timestamp_ms))
    }

    /// `{S}[^ \n]+` at the cursor.
    fn om_token(&mut self) -> Option<&'a [u8]> {
        let b = self.b;
        if self.peek() != Some(b' ') {
            return None;
        }
        let s = self.i + 1;
        let mut e = s;
        while let Some(&c) = b.get(e) {
            if c == b' ' || c == b'\n' {
                break;
            }
            e += 1;
        }
        if e == s {
            return None;
        }
        self.i = e;
        Some(&b[s..e])
    }

    fn at_exemplar(&self) -> bool {
        self.b[self.i..].starts_with(b" # {")
    }

    /// ` # {labels} value [timestamp]\n`, checked and dropped.
    fn om_exemplar(&mut self) -> Result<(), ParseError> {
        let name = self.metric_name();
        if !(name.ends_with(b"_total") || name.ends_with(b"_bucket")) {
            return self.err(format!(
                "metric name {} does not support exemplars",
                String::from_utf8_lossy(name)
            ));
        }
        self.i += 4;
        let mut scratch = Vec::new();
        self.om_labels(&mut scratch)?;
        let Some(v) = self.om_token() else {
            return match self.peek() {
                None => self.err("expected value after exemplar labels, got \"EOF\""),
                _ => self.err("expected value after exemplar labels"),
            };
        };
        if let Err(e) = parse_go_float(v) {
            return self.err(e);
        }
        match self.peek() {
            None => return self.err("data does not end with # EOF"),
            Some(b'\n') => {}
            Some(b' ') => {
                let Some(t) = self.om_token() else {
                    return self.err("expected timestamp or comment");
                };
                match parse_go_float(t) {
                    Ok(t) if t.is_finite() => {}
                    Ok(_) => return self.err("invalid exemplar timestamp"),
                    Err(e) => return self.err(e),
                }
                if self.peek() != Some(b'\n') {
                    return self.err("expected next entry after exemplar timestamp");
                }
            }
            _ => return self.err("expected timestamp or comment"),
        }
        self.i += 1;
        self.line += 1;
        Ok(())
    }

    /// After `{`: `name="value"` pairs separated by single commas, no blanks,
    /// up to `}`.
    fn om_labels(
        &mut self,
        pairs: &mut Vec<(usize, usize, usize, usize)>,
    ) -> Result<(), ParseError> {
        let mut first = true;
        loop {
            match self.peek() {
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b',') if !first => {
                    self.i += 1;
                    if !self.peek().is_some_and(is_label_start) {
                        return self.err("expected label name");
                    }
                }
                Some(b',') => return self.err("expected label name or left brace"),
                Some(c) if is_label_start(c) && first => {}
                Some(c) if is_label_start(c) => return self.err("expected comma"),
                _ if first => return self.err("expected label name or left brace"),
                _ => return self.err("expected comma or left brace"),
            }
            first = false;
            let ns = self.i;
            self.skip_name(is_label_start, is_label_char);
            let ne = self.i;
            if self.peek() != Some(b'=') {
                return self.err("expected equal");
            }
            self.i += 1;
            let (vs, ve) = self.quoted(false)?;
            pairs.push((ns, ne, vs, ve));
        }
    }
}
