//! A discovered label set made into a target, as Prometheus's
//! `PopulateLabels` does: job defaults added (`job`, `__scheme__`,
//! `__metrics_path__`, `__scrape_interval__`, `__scrape_timeout__`,
//! `__param_*`), `relabel_configs` applied (a drop: the target is dropped and
//! listed as such), a default port from the scheme, interval and timeout read
//! back from their labels, `__meta_*` removed, `instance` defaulting to the
//! address. Labels starting with `__` steer the scrape and are not put on
//! series; `__netns__` (set by container discovery) names the network
//! namespace to connect from. Not here: scraping.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use vigil_common::relabel;
use vigil_common::{Labels, LabelsBuilder};

use super::config::Job;

/// A target ready to scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub job: String,
    /// All labels after relabeling (`__address__`, `__scheme__`, … included).
    pub labels: Labels,
    /// What discovery found, before relabeling.
    pub discovered: Labels,
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Connect from inside this network namespace (a `/proc/<pid>/ns/net` path).
    pub netns: Option<PathBuf>,
}

impl TargetSpec {
    /// The labels put on every series of the target (those not starting with `__`).
    pub fn public_labels(&self) -> Labels {
        Labels::new(
            self.labels
                .iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// Stable identity: the job and every label (so a changed address,
    /// interval or namespace is a new target).
    pub fn key(&self) -> u64 {
        let mut h = self.labels.stable_hash();
        h ^= xxhash_rust::xxh3::xxh3_64(self.job.as_bytes()).rotate_left(1);
        h
    }
}

/// Why a discovered target is not scraped.
#[derive(Debug, Clone, PartialEq)]
pub enum Drop {
    /// `relabel_configs` dropped it.
    Relabeled,
    /// Its labels make no valid target.
    Invalid(String),
}

/// Makes a target of `discovered` for `job`.
pub fn populate(discovered: Labels, job: &Job) -> Result<TargetSpec, (Drop, Labels)> {
    let mut b = LabelsBuilder::new(discovered);
    let defaults = [
        ("job", job.name.clone()),
        (
            "__scrape_interval__",
            vigil_common::Duration(job.interval).to_string(),
        ),
        (
            "__scrape_timeout__",
            vigil_common::Duration(job.timeout).to_string(),
        ),
        ("__metrics_path__", job.metrics_path.clone()),
        ("__scheme__", job.scheme.clone()),
    ];
    for (k, v) in &defaults {
        if b.get(k).is_empty() {
            b.set(k, v);
        }
    }
    for (k, v) in &job.params {
        if let Some(first) = v.first() {
            b.set(&format!("__param_{k}"), first);
        }
    }
    let pre = b.labels();
    let Some(lset) = relabel::process(&job.relabel, pre.clone()) else {
        return Err((Drop::Relabeled, pre));
    };
    let invalid = |m: String| Err((Drop::Invalid(m), pre.clone()));
    let addr = lset.get("__address__").unwrap_or("").to_string();
    if addr.is_empty() {
        return invalid("no address".into());
    }
    let scheme = lset.get("__scheme__").unwrap_or("").to_string();
    let mut b = LabelsBuilder::new(lset.clone());
    let addr = if has_port(&addr) {
        addr
    } else {
        let a = match scheme.as_str() {
            "http" | "" => format!("{addr}:80"),
            "https" => format!("{addr}:443"),
            s => return invalid(format!("invalid scheme: {s:?}")),
        };
        b.set("__address__", &a);
        a
    };
    if addr.contains('/') || addr.contains('@') || addr.contains('?') {
        return invalid(format!("{addr:?} is not a valid hostname"));
    }
    if scheme != "http" && scheme != "https" {
        return invalid(format!("invalid scheme: {scheme:?}"));
    }
    let dur = |k: &str| -> Result<Duration, String> {
        let v = lset.get(k).unwrap_or("");
        let d: vigil_common::Duration = v.parse().map_err(|e| {
            format!(
                "error parsing {}: {e}",
                k.trim_matches('_').replace('_', " ")
            )
        })?;
        if d.as_std().is_zero() {
            return Err(format!(
                "{} cannot be 0",
                k.trim_matches('_').replace('_', " ")
            ));
        }
        Ok(d.as_std())
    };
    let interval = match dur("__scrape_interval__") {
        Ok(d) => d,
        Err(m) => return invalid(m),
    };
    let mut timeout = match dur("__scrape_timeout__") {
        Ok(d) => d,
        Err(m) => return invalid(m),
    };
    // An interval asked for by a workload (annotation) below the job's own
    // default timeout lowers that timeout; a timeout set on purpose is kept.
    if timeout > interval
        && timeout == job.timeout
        && lset.get("__scrape_timeout__") == Some(defaults[2].1.as_str())
    {
        timeout = interval;
        b.set(
            "__scrape_timeout__",
            &vigil_common::Duration(interval).to_string(),
        );
    }
    if timeout > interval {
        return invalid(format!(
            "scrape timeout cannot be greater than scrape interval ({:?} > {:?})",
            lset.get("__scrape_timeout__").unwrap_or(""),
            lset.get("__scrape_interval__").unwrap_or("")
        ));
    }
    for (k, _) in lset.iter() {
        if k.starts_with("__meta_") {
            b.del(k);
        }
    }
    if lset.get("instance").unwrap_or("").is_empty() {
        b.set("instance", &addr);
    }
    let labels = b.labels();
    let path = labels.get("__metrics_path__").unwrap_or("").to_string();
    let mut params: BTreeMap<String, String> = job
        .params
        .iter()
        .filter_map(|(k, v)| v.first().map(|f| (k.clone(), f.clone())))
        .collect();
    for (k, v) in labels.iter() {
        if let Some(p) = k.strip_prefix("__param_") {
            params.insert(p.to_string(), v.to_string());
        }
    }
    let mut url = format!("{scheme}://{addr}{path}");
    if !params.is_empty() {
        url.push('?');
        let q: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect();
        url.push_str(&q.join("&"));
    }
    let netns = labels.get("__netns__").map(PathBuf::from);
    Ok(TargetSpec {
        job: job.name.clone(),
        labels,
        discovered: pre,
        url,
        interval,
        timeout,
        netns,
    })
}

fn has_port(addr: &str) -> bool {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.contains("]:");
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.contains(':') && !port.is_empty(),
        None => false,
    }
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::config::{JobDefaults, ScrapeConfig};

    fn job(yaml: &str) -> Job {
        let c: ScrapeConfig = serde_saphyr::from_str(yaml).unwrap();
        c.validate(&JobDefaults {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            body_size_limit: 0,
            limits: Default::default(),
            refresh: Duration::from_secs(5),
            host_root: PathBuf::from("/"),
        })
        .unwrap()
    }

    #[test]
    fn labels_as_prometheus_assigns_them() {
        let j = job("{job_name: app, params: {a: [x y]}}");
        let t = populate(
            Labels::new([
                ("__address__", "10.0.0.1"),
                ("__meta_x", "1"),
                ("team", "t"),
            ]),
            &j,
        )
        .unwrap();
        assert_eq!(
            t.public_labels(),
            Labels::new([("instance", "10.0.0.1:80"), ("job", "app"), ("team", "t")])
        );
        assert_eq!(t.url, "http://10.0.0.1:80/metrics?a=x+y");
        assert_eq!(t.labels.get("__meta_x"), None);
        assert_eq!(t.discovered.get("__meta_x"), Some("1"));
        assert_eq!(t.discovered.get("__scrape_interval__"), Some("10s"));
        assert_eq!(
            (t.interval, t.timeout),
            (Duration::from_secs(10), Duration::from_secs(10))
        );
    }

    #[test]
    fn relabeling_steers_the_scrape() {
        let j = job(r#"
job_name: app
relabel_configs:
  - {source_labels: [__meta_port], regex: '(.+)', target_label: __address__, replacement: 'h:$1'}
  - {source_labels: [__meta_path], regex: '(.+)', target_label: __metrics_path__}
  - {source_labels: [__meta_interval], regex: '(.+)', target_label: __scrape_interval__}
  - {source_labels: [__meta_interval], regex: '(.+)', target_label: __scrape_timeout__}
  - {target_label: instance, replacement: mine}
  - {source_labels: [__meta_scrape], regex: 'true', action: keep}
"#);
        let d = Labels::new([
            ("__address__", "x"),
            ("__meta_port", "8080"),
            ("__meta_path", "/m"),
            ("__meta_interval", "2s"),
            ("__meta_scrape", "true"),
        ]);
        let t = populate(d.clone(), &j).unwrap();
        assert_eq!(t.url, "http://h:8080/m");
        assert_eq!(t.interval, Duration::from_secs(2));
        assert_eq!(t.public_labels().get("instance"), Some("mine"));
        let dropped = populate(
            Labels::new([("__address__", "x"), ("__meta_scrape", "false")]),
            &j,
        )
        .unwrap_err();
        assert_eq!(dropped.0, Drop::Relabeled);
        assert_eq!(dropped.1.get("__meta_scrape"), Some("false"));
    }

    #[test]
    fn invalid_targets_say_why() {
        let j = job("{job_name: app}");
        for (labels, want) in [
            (vec![("__meta_a", "1")], "no address"),
            (
                vec![("__address__", "h:1"), ("__scrape_interval__", "x")],
                "error parsing scrape interval",
            ),
            (
                vec![("__address__", "h:1"), ("__scrape_timeout__", "1m")],
                "greater than scrape interval",
            ),
            (
                vec![("__address__", "h:1"), ("__scheme__", "ftp")],
                "invalid scheme",
            ),
            (vec![("__address__", "h/x:1")], "not a valid hostname"),
        ] {
            match populate(Labels::new(labels), &j) {
                Err((Drop::Invalid(m), _)) => assert!(m.contains(want), "{m}"),
                other => panic!("{want}: {other:?}"),
            }
        }
        assert!(has_port("[::1]:80") && !has_port("[::1]") && !has_port("::1") && has_port("a:1"));
    }
}
