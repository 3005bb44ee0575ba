//! Health probes as Docker/Podman container labels declare them, with
//! Kubernetes's probe fields and defaults:
//!
//! ```text
//! vigil.probe.<liveness|readiness>.http.port        port of an HTTP GET (200–399 passes)
//! vigil.probe.<liveness|readiness>.http.path        its path [default: /]
//! vigil.probe.<liveness|readiness>.tcp.port         a TCP connect
//! vigil.probe.<liveness|readiness>.exec             a command run in the container (exit 0 passes):
//!                                                   a JSON array, or words split on blanks
//! vigil.probe.<…>.period             [default: 10s]  (a bare number is seconds)
//! vigil.probe.<…>.timeout            [default: 1s]
//! vigil.probe.<…>.initial-delay      [default: 0s]
//! vigil.probe.<…>.failure-threshold  [default: 3]
//! vigil.probe.<…>.success-threshold  [default: 1; liveness: must be 1]
//! ```
//!
//! Exactly one of `http.port`, `tcp.port`, `exec` per probe. A probe with a
//! mistake is not run, and the reason is reported (never a guess).

use std::collections::BTreeMap;
use std::time::Duration;

/// Label prefix of every probe key.
pub const PREFIX: &str = "vigil.probe.";

/// Which of Kubernetes's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "liveness" => Some(ProbeKind::Liveness),
            "readiness" => Some(ProbeKind::Readiness),
            _ => None,
        }
    }
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Exec { argv: Vec<String> },
}

impl Handler {
    /// `http`, `tcp` or `exec` (the `type` attribute of probe events).
    pub fn type_name(&self) -> &'static str {
        match self {
            Handler::Http { .. } => "http",
            Handler::Tcp { .. } => "tcp",
            Handler::Exec { .. } => "exec",
        }
    }
}

/// One probe of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub handler: Handler,
    pub period: Duration,
    pub timeout: Duration,
    pub initial_delay: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

fn duration(key: &str, v: &str) -> Result<Duration, String> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    v.trim()
        .parse::<vigil_common::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| format!("{key}={v:?}: {e}"))
}

fn count(key: &str, v: &str) -> Result<u32, String> {
    match v.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{key}={v:?}: must be a whole number of at least 1")),
    }
}

fn port(key: &str, v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{key}={v:?}: not a port number")),
    }
}

fn argv(key: &str, v: &str) -> Result<Vec<String>, String> {
    let a: Vec<String> = if v.trim_start().starts_with('[') {
        serde_json::from_str(v).map_err(|e| format!("{key}: not a JSON array of strings: {e}"))?
    } else {
        v.split_whitespace().map(str::to_string).collect()
    };
    if a.is_empty() || a[0].is_empty() {
        return Err(format!("{key}: empty command"));
    }
    Ok(a)
}

/// The probes `labels` declare, and the mistakes that kept others from
/// being run. Labels outside [`PREFIX`] are ignored.
pub fn parse(labels: &BTreeMap<String, String>) -> (Vec<ProbeSpec>, Vec<String>) {
    let mut per_kind: BTreeMap<ProbeKind, BTreeMap<&str, (&str, &str)>> = BTreeMap::new();
    let mut errors = Vec::new();
    for (k, v) in labels.range(PREFIX.to_string()..) {
        let Some(rest) = k.strip_prefix(PREFIX) else {
            break;
        };
        let Some((kind, field)) = rest.split_once('.') else {
            errors.push(format!(
                "{k}: expected {PREFIX}<liveness|readiness>.<field>"
            ));
            continue;
        };
        let Some(kind) = ProbeKind::parse(kind) else {
            errors.push(format!(
                "{k}: unknown probe {kind:?} (liveness or readiness)"
            ));
            continue;
        };
        per_kind
            .entry(kind)
            .or_default()
            .insert(field, (k.as_str(), v.as_str()));
    }
    let mut out = Vec::new();
    for (kind, fields) in per_kind {
        match build(kind, &fields) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(format!("{} probe: {e}", kind.as_str())),
        }
    }
    (out, errors)
}

fn build(kind: ProbeKind, f: &BTreeMap<&str, (&str, &str)>) -> Result<ProbeSpec, String> {
    const KNOWN: [&str; 9] = [
        "http.port",
        "http.path",
        "tcp.port",
        "exec",
        "period",
        "timeout",
        "initial-delay",
        "failure-threshold",
        "success-threshold",
    ];
    if let Some((_, (k, _))) = f.iter().find(|(field, _)| !KNOWN.contains(field)) {
        return Err(format!("unknown key {k}"));
    }
    let get = |field: &str| f.get(field).copied();
    let mut handlers = Vec::new();
    if let Some((k, v)) = get("http.port") {
        let path = get("http.path").map(|(_, p)| p.trim()).unwrap_or("/");
        if !path.starts_with('/') {
            return Err(format!("http.path {path:?} must start with /"));
        }
        handlers.push(Handler::Http {
            port: port(k, v)?,
            path: path.to_string(),
        });
    } else if let Some((k, _)) = get("http.path") {
        return Err(format!("{k} without http.port"));
    }
    if let Some((k, v)) = get("tcp.port") {
        handlers.push(Handler::Tcp { port: port(k, v)? });
    }
    if let Some((k, v)) = get("exec") {
        handlers.push(Handler::Exec { argv: argv(k, v)? });
    }
    let handler = match handlers.len() {
        1 => handlers.remove(0),
        0 => return Err("needs one of http.port, tcp.port, exec".into()),
        _ => return Err("has more than one of http.port, tcp.port, exec".into()),
    };
    let dur = |field: &str, d: u64| match get(field) {
        Some((k, v)) => duration(k, v),
        None => Ok(Duration::from_secs(d)),
    };
    let cnt = |field: &str, d: u32| match get(field) {
        Some((k, v)) => count(k, v),
        None => Ok(d),
    };
    let p = ProbeSpec {
        kind,
        handler,
        period: dur("period", 10)?,
        timeout: dur("timeout", 1)?,
        initial_delay: dur("initial-delay", 0)?,
        failure_threshold: cnt("failure-threshold", 3)?,
        success_threshold: cnt("success-threshold", 1)?,
    };
    if p.period.is_zero() || p.timeout.is_zero() {
        return Err("period and timeout must be above 0".into());
    }
    if kind == ProbeKind::Liveness && p.success_threshold != 1 {
        return Err("success-threshold of a liveness probe must be 1 (as in Kubernetes)".into());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let (p, e) = parse(&labels(&[
            ("vigil.probe.liveness.http.port", "8080"),
            ("other", "x"),
        ]));
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            p,
            vec![ProbeSpec {
                kind: ProbeKind::Liveness,
                handler: Handler::Http {
                    port: 8080,
                    path: "/".into()
                },
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                initial_delay: Duration::ZERO,
                failure_threshold: 3,
                success_threshold: 1,
            }]
        );
    }

    #[test]
    fn every_field_and_both_probes() {
        let (p, e) = parse(&labels(&[
            ("vigil.probe.liveness.http.port", "80"),
            ("vigil.probe.liveness.http.path", "/healthz"),
            ("vigil.probe.liveness.period", "2s"),
            ("vigil.probe.liveness.timeout", "500ms"),
            ("vigil.probe.liveness.initial-delay", "5"),
            ("vigil.probe.liveness.failure-threshold", "2"),
            ("vigil.probe.readiness.tcp.port", "5432"),
            ("vigil.probe.readiness.success-threshold", "2"),
        ]));
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].handler,
            Handler::Http {
                port: 80,
                path: "/healthz".into()
            }
        );
        assert_eq!(p[0].period, Duration::from_secs(2));
        assert_eq!(p[0].timeout, Duration::from_millis(500));
        assert_eq!(p[0].initial_delay, Duration::from_secs(5));
        assert_eq!(p[0].failure_threshold, 2);
        assert_eq!(p[1].kind, ProbeKind::Readiness);
        assert_eq!(p[1].handler, Handler::Tcp { port: 5432 });
        assert_eq!(p[1].success_threshold, 2);
    }

    #[test]
    fn exec_takes_json_or_words() {
        let (p, _) = parse(&labels(&[(
            "vigil.probe.readiness.exec",
            r#"["sh", "-c", "test -f /ready"]"#,
        )]));
        assert_eq!(
            p[0].handler,
            Handler::Exec {
                argv: vec!["sh".into(), "-c".into(), "test -f /ready".into()]
            }
        );
        let (p, _) = parse(&labels(&[("vigil.probe.liveness.exec", "cat /tmp/ok")]));
        assert_eq!(
            p[0].handler,
            Handler::Exec {
                argv: vec!["cat".into(), "/tmp/ok".into()]
            }
        );
    }

    #[test]
    fn mistakes_are_reported_and_the_probe_is_not_run() {
        for (kv, want) in [
            (vec![("vigil.probe.liveness.period", "5s")], "needs one of"),
            (
                vec![
                    ("vigil.probe.liveness.http.port", "80"),
                    ("vigil.probe.liveness.tcp.port", "80"),
                ],
                "more than one",
            ),
            (vec![("vigil.probe.liveness.http.port", "http")], "port"),
            (
                vec![
                    ("vigil.probe.liveness.tcp.port", "1"),
                    ("vigil.probe.liveness.failure-threshold", "0"),
                ],
                "at least 1",
            ),
            (
                vec![
                    ("vigil.probe.liveness.tcp.port", "1"),
                    ("vigil.probe.liveness.success-threshold", "2"),
                ],
                "must be 1",
            ),
            (
                vec![
                    ("vigil.probe.readiness.tcp.port", "1"),
                    ("vigil.probe.readiness.periodSeconds", "2"),
                ],
                "unknown key vigil.probe.readiness.periodSeconds",
            ),
            (vec![("vigil.probe.startup.tcp.port", "1")], "unknown probe"),
            (
                vec![
                    ("vigil.probe.liveness.tcp.port", "1"),
                    ("vigil.probe.liveness.timeout", "soon"),
                ],
                "soon",
            ),
            (vec![("vigil.probe.liveness.exec", "[]")], "empty command"),
            (
                vec![("vigil.probe.liveness.http.path", "/x")],
                "without http.port",
            ),
        ] {
            let (p, e) = parse(&labels(&kv));
            assert!(p.is_empty(), "{kv:?}");
            assert!(e.iter().any(|e| e.contains(want)), "{kv:?}: {e:?}");
        }
    }
}
