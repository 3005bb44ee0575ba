//! The exposition formats the agent's application scraping reads
//! (Prometheus text 0.0.4 and OpenMetrics 1.0), through the parser and
//! through the scrape loop's `Appender` (target labels, `exported_`
//! renames, timestamps, staleness between two scrapes). The first byte
//! picks the format and options.
//! Properties: no panic; the samples of a body that parses, printed back in
//! the text format, parse to the same label sets, values (bit for bit) and
//! timestamps.
#![no_main]

use std::fmt::Write;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vigil_agent::targets::append::{AppendConfig, Appender, Limits};
use vigil_common::exposition::{self, Format};
use vigil_fuzz::labels;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let format = if sel & 1 == 0 {
        Format::Text
    } else {
        Format::OpenMetrics
    };

    if let Ok(parsed) = exposition::parse(body, format) {
        let mut text = String::new();
        let mut kept = Vec::new();
        for (l, v, ts) in &parsed.samples {
            if print(&mut text, l, *v, *ts) {
                kept.push((l.clone(), v.to_bits(), *ts));
            }
        }
        let back = exposition::parse(text.as_bytes(), Format::Text)
            .unwrap_or_else(|e| panic!("printed samples do not parse: {e}\n{text}"));
        let back: Vec<_> = back
            .samples
            .into_iter()
            .map(|(l, v, ts)| (l, v.to_bits(), ts))
            .collect();
        assert_eq!(kept, back, "text round trip\n{text}");
    }

    let mut a = Appender::new(AppendConfig {
        target_labels: labels(&[
            ("instance", "10.0.0.1:8080"),
            ("job", "app"),
            ("node", "n1"),
        ]),
        honor_labels: sel & 2 != 0,
        honor_timestamps: sel & 4 != 0,
        limits: if sel & 8 != 0 {
            Limits {
                sample_limit: 50,
                label_limit: 8,
                label_name_length_limit: 32,
                label_value_length_limit: 64,
            }
        } else {
            Limits::default()
        },
        metric_relabel: Arc::new(Vec::new()),
    });
    let t = 1_700_000_000_000;
    let _ = a.append(Ok((body, format)), t, t, 0.01);
    let _ = a.append(Ok((body, format)), t + 15_000, t + 15_000, 0.01);
    let _ = a.append(Ok((b"", format)), t + 30_000, t + 30_000, 0.01);
    let _ = a.stale_all(t + 45_000);
});

fn legacy_name(s: &str, colons: bool) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || (colons && f == ':'))
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || (colons && x == ':'))
}

/// Writes one sample line in the text format; false (nothing written) when
/// a name needs the quoted UTF-8 syntax this printer does not write.
fn print(out: &mut String, l: &vigil_common::Labels, v: f64, ts: Option<i64>) -> bool {
    let Some(name) = l.metric_name() else {
        return false;
    };
    if !legacy_name(name, true)
        || l.iter()
            .any(|(k, _)| k != "__name__" && !legacy_name(k, false))
    {
        return false;
    }
    let _ = write!(out, "{name}{{");
    for (k, val) in l.iter().filter(|(k, _)| *k != "__name__") {
        let esc = val
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{esc}\",");
    }
    let value = if v.is_nan() {
        if v.to_bits() == exposition::NORMAL_NAN {
            "NaN".to_string()
        } else {
            // a NaN payload the text format cannot spell
            out.truncate(out.rfind('\n').map_or(0, |i| i + 1));
            return false;
        }
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v:?}")
    };
    let _ = write!(out, "}} {value}");
    if let Some(ts) = ts {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
    true
}
