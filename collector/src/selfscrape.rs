//! The collector scrapes itself: every `--self-scrape-interval` its own
//! registry (`vigil_collector_*`, `vigil_actions_*`, rule and notifier
//! metrics) is written into the store through the WAL, labelled
//! `job="vigil-collector"` and `instance="<http address>"`, so rules (the
//! pipeline-health alerts in `alerts/vigil.yml`) and dashboards can query
//! them like any series. Not here: the encoding (`telemetry`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigil_common::Labels;

use crate::ingest::core::IngestCore;

/// The `job` label of the self-scraped series.
pub const JOB: &str = "vigil-collector";

/// A line of the text format that could not be read.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Parses Prometheus text exposition into (labels, value) pairs; comments
/// and `# EOF` are skipped, timestamps ignored. `extra` labels are added
/// (and win over the exposition's own).
pub fn parse_text(text: &str, extra: &[(&str, &str)]) -> (Vec<(Labels, f64)>, Vec<ParseError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok((mut pairs, v)) => {
                pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
                pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                out.push((Labels::new(pairs), v));
            }
            Err(reason) => errors.push(ParseError {
                line: i + 1,
                reason,
            }),
        }
    }
    (out, errors)
}

fn parse_line(line: &str) -> Result<(Vec<(String, String)>, f64), String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name".into());
    }
    let mut pairs = vec![("__name__".to_string(), name.to_string())];
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let mut chars = rest.char_indices().skip(1).peekable();
        loop {
            // label name
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            match chars.peek() {
                Some((j, '}')) => {
                    rest = &rest[j + 1..];
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let mut lname = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                lname.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {lname:?}: value is not quoted"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(o) => value.push(o),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    o => value.push(o),
                }
            }
            if !closed {
                return Err(format!("label {lname:?}: unterminated value"));
            }
            pairs.push((lname.trim().to_string(), value));
        }
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let v = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok((pairs, v))
}

/// Scrapes `telemetry` into the store every `every` until `shutdown`.
pub async fn run(
    core: Arc<IngestCore>,
    instance: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = vigil_common::time::now_ms();
        let text = core.telemetry.encode();
        let (samples, errors) = parse_text(&text, &[("job", JOB), ("instance", instance.as_str())]);
        if let Some(e) = errors.first() {
            tracing::warn!(error = %e, count = errors.len(), "self-scrape: unreadable lines skipped");
        }
        let series = samples
            .into_iter()
            .map(|(l, v)| (l, vec![(now, v)]))
            .collect();
        if let Err(e) = core.write_own(series, JOB).await {
            tracing::warn!(error = %e, "self-scrape: write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_registry_format() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total 3\nb{reason=\"x \\\"y\\\"\",le=\"+Inf\"} 1.5e3\nc{} NaN\n# EOF\n";
        let (s, e) = parse_text(text, &[("job", "j")]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, Labels::new([("__name__", "a_total"), ("job", "j")]));
        assert_eq!(s[0].1, 3.0);
        assert_eq!(s[1].0.get("reason"), Some("x \"y\""));
        assert_eq!(s[1].0.get("le"), Some("+Inf"));
        assert_eq!(s[1].1, 1500.0);
        assert!(s[2].1.is_nan());
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        for bad in [
            "x{a=\"1\" 2",
            "x{a=1} 2",
            "x",
            "x{a=\"1\"} nope",
            "{} 1",
            "x{a=\"\\",
        ] {
            let (s, e) = parse_text(bad, &[]);
            assert!(s.is_empty() && e.len() == 1, "{bad}: {s:?} {e:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,64}") {
            let _ = parse_text(&s, &[("job", "j")]);
        }
    }
}
