//! `scrape_configs:` in the agent's YAML, in Prometheus's shape (a subset:
//! the keys below; any other is refused by name), validated once into [`Job`]s.
//! Besides `static_configs` and `file_sd_configs`, a job may use the agent's
//! own discovery of this node's workloads: `container_sd_configs` (Docker /
//! Podman Engine API) and `kubernetes_sd_configs` (`role: pod`, this node's
//! pods only). Not here: running discovery or scrapes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigil_common::relabel::{self, NameValidation, Relabel, RelabelConfig};
use vigil_common::{ByteSize, Duration};

use super::append::Limits;

/// One `scrape_configs` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_labels: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_timestamps: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size_limit: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_name_length_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value_length_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_sd_configs: Vec<FileSdConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_sd_configs: Vec<ContainerSdConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes_sd_configs: Vec<KubernetesSdConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

/// `static_configs` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `file_sd_configs` entry: files in Prometheus's file_sd format (JSON or
/// YAML by extension), globs in the last path element allowed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    /// How often the files are re-read even when unchanged [default: 5m];
    /// changes are noticed within a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
}

/// `container_sd_configs` entry: containers of the Docker/Podman Engine API
/// behind these unix sockets.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ContainerSdConfig {
    /// Engine API sockets [default: `var/run/docker.sock` and
    /// `run/podman/podman.sock` under `--host-root`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
}

/// `kubernetes_sd_configs` entry (only `role: pod`, only this node's pods).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSdConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// API server URL [default: in-cluster, from `KUBERNETES_SERVICE_HOST`/`_PORT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// Bearer token file [default: the service account's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// CA bundle for the API server [default: the service account's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
}

/// `tls_config` for `https` targets.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Where a job's targets come from.
#[derive(Debug, Clone)]
pub enum Source {
    Static(Vec<StaticConfig>),
    File {
        files: Vec<String>,
        refresh: std::time::Duration,
    },
    Containers {
        sockets: Vec<PathBuf>,
        refresh: std::time::Duration,
    },
    Kubernetes {
        api_server: String,
        token_file: PathBuf,
        ca_file: Option<PathBuf>,
        refresh: std::time::Duration,
    },
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub metrics_path: String,
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub body_size_limit: u64,
    pub limits: Limits,
    pub tls: Option<TlsConfig>,
    pub sources: Vec<Source>,
    pub relabel: Arc<Vec<Relabel>>,
    pub metric_relabel: Arc<Vec<Relabel>>,
}

/// Defaults the agent's flags set for every job.
#[derive(Debug, Clone)]
pub struct JobDefaults {
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub body_size_limit: u64,
    pub limits: Limits,
    pub refresh: std::time::Duration,
    pub host_root: PathBuf,
}

const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl ScrapeConfig {
    pub fn validate(&self, d: &JobDefaults) -> Result<Job, String> {
        let job = &self.job_name;
        let e = |m: String| format!("scrape_configs job {job:?}: {m}");
        if job.is_empty() {
            return Err("scrape_configs: job_name is empty".into());
        }
        let interval = self.scrape_interval.map_or(d.interval, |x| x.as_std());
        if interval.is_zero() {
            return Err(e("scrape_interval must be above 0".into()));
        }
        let timeout = self
            .scrape_timeout
            .map_or(d.timeout.min(interval), |x| x.as_std());
        if timeout.is_zero() || timeout > interval {
            return Err(e(format!(
                "scrape_timeout ({timeout:?}) must be above 0 and at most scrape_interval ({interval:?})"
            )));
        }
        let scheme = self.scheme.clone().unwrap_or_else(|| "http".into());
        if scheme != "http" && scheme != "https" {
            return Err(e(format!("scheme {scheme:?} is neither http nor https")));
        }
        let metrics_path = self
            .metrics_path
            .clone()
            .unwrap_or_else(|| "/metrics".into());
        if !metrics_path.starts_with('/') {
            return Err(e(format!(
                "metrics_path {metrics_path:?} must start with /"
            )));
        }
        let relabel = relabel::compile(&self.relabel_configs, NameValidation::Legacy)
            .map_err(|x| e(format!("relabel_configs: {x}")))?;
        let metric_relabel = relabel::compile(&self.metric_relabel_configs, NameValidation::Legacy)
            .map_err(|x| e(format!("metric_relabel_configs: {x}")))?;
        for s in &self.static_configs {
            for k in s.labels.keys() {
                if !relabel::is_legacy_label_name(k) {
                    return Err(e(format!(
                        "static_configs label {k:?} is not a valid label name"
                    )));
                }
            }
        }
        let mut sources = Vec::new();
        if !self.static_configs.is_empty() {
            sources.push(Source::Static(self.static_configs.clone()));
        }
        for f in &self.file_sd_configs {
            if f.files.is_empty() {
                return Err(e("file_sd_configs entry without files".into()));
            }
            for p in &f.files {
                let ok = [".json", ".yml", ".yaml"].iter().any(|x| p.ends_with(x));
                if !ok {
                    return Err(e(format!(
                        "file_sd file {p:?} must end in .json, .yml or .yaml"
                    )));
                }
                glob::Pattern::new(p).map_err(|x| e(format!("file_sd file {p:?}: {x}")))?;
            }
            sources.push(Source::File {
                files: f.files.clone(),
                refresh: f
                    .refresh_interval
                    .map_or(std::time::Duration::from_secs(300), |x| x.as_std()),
            });
        }
        for c in &self.container_sd_configs {
            let sockets = if c.sockets.is_empty() {
                default_sockets(&d.host_root)
            } else {
                c.sockets.clone()
            };
            sources.push(Source::Containers {
                sockets,
                refresh: c.refresh_interval.map_or(d.refresh, |x| x.as_std()),
            });
        }
        for k in &self.kubernetes_sd_configs {
            if let Some(r) = &k.role
                && r != "pod"
            {
                return Err(e(format!(
                    "kubernetes_sd_configs role {r:?}: only \"pod\" is supported"
                )));
            }
            let api_server = match &k.api_server {
                Some(a) => a.clone(),
                None => in_cluster_api().ok_or_else(|| {
                    e("kubernetes_sd_configs without api_server outside a cluster (KUBERNETES_SERVICE_HOST unset)".into())
                })?,
            };
            let ca_file = match &k.ca_file {
                Some(c) => Some(c.clone()),
                None if k.api_server.is_none() => Some(PathBuf::from(SA).join("ca.crt")),
                None => None,
            };
            sources.push(Source::Kubernetes {
                api_server,
                token_file: k
                    .bearer_token_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(SA).join("token")),
                ca_file,
                refresh: k.refresh_interval.map_or(d.refresh, |x| x.as_std()),
            });
        }
        let mut limits = d.limits;
        let set = |v: Option<usize>, dflt: usize| v.unwrap_or(dflt);
        limits.sample_limit = set(self.sample_limit, limits.sample_limit);
        limits.label_limit = set(self.label_limit, limits.label_limit);
        limits.label_name_length_limit =
            set(self.label_name_length_limit, limits.label_name_length_limit);
        limits.label_value_length_limit = set(
            self.label_value_length_limit,
            limits.label_value_length_limit,
        );
        Ok(Job {
            name: job.clone(),
            interval,
            timeout,
            metrics_path,
            scheme,
            params: self.params.clone(),
            honor_labels: self.honor_labels.unwrap_or(false),
            honor_timestamps: self.honor_timestamps.unwrap_or(true),
            body_size_limit: self.body_size_limit.map_or(d.body_size_limit, |b| b.0),
            limits,
            tls: self.tls_config.clone(),
            sources,
            relabel: Arc::new(relabel),
            metric_relabel: Arc::new(metric_relabel),
        })
    }
}

/// The Engine API sockets looked for by default, under the host root.
pub fn default_sockets(host_root: &std::path::Path) -> Vec<PathBuf> {
    ["var/run/docker.sock", "run/podman/podman.sock"]
        .iter()
        .map(|p| host_root.join(p))
        .collect()
}

/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` inside a pod.
pub fn in_cluster_api() -> Option<String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("https://{host}:{port}"))
}

/// The jobs the agent runs without configuration: containers with scrape
/// labels and, inside a cluster, pods with scrape annotations. Only what
/// the annotations ask for is kept; [`super::discovery`] documents the keys.
// The rules are constants parsed by the builtin-jobs tests; they cannot fail at run time.
#[allow(clippy::expect_used)]
pub fn builtin_jobs(kubernetes: bool) -> Vec<ScrapeConfig> {
    let keep = |label: &str| -> RelabelConfig {
        serde_saphyr::from_str(&format!(
            "{{source_labels: [{label}], regex: 'true', action: keep}}"
        ))
        .expect("constant rule")
    };
    let base = |name: &str| ScrapeConfig {
        job_name: name.to_string(),
        scrape_interval: None,
        scrape_timeout: None,
        metrics_path: None,
        scheme: None,
        params: BTreeMap::new(),
        honor_labels: None,
        honor_timestamps: None,
        body_size_limit: None,
        sample_limit: None,
        label_limit: None,
        label_name_length_limit: None,
        label_value_length_limit: None,
        tls_config: None,
        static_configs: Vec::new(),
        file_sd_configs: Vec::new(),
        container_sd_configs: Vec::new(),
        kubernetes_sd_configs: Vec::new(),
        relabel_configs: Vec::new(),
        metric_relabel_configs: Vec::new(),
    };
    let mut out = vec![ScrapeConfig {
        container_sd_configs: vec![ContainerSdConfig::default()],
        relabel_configs: vec![keep("__meta_docker_container_label_prometheus_io_scrape")],
        ..base("containers")
    }];
    if kubernetes {
        out.push(ScrapeConfig {
            kubernetes_sd_configs: vec![KubernetesSdConfig::default()],
            relabel_configs: vec![keep(
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
            )],
            ..base("kubernetes-pods")
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> JobDefaults {
        JobDefaults {
            interval: std::time::Duration::from_secs(10),
            timeout: std::time::Duration::from_secs(10),
            body_size_limit: 0,
            limits: Limits::default(),
            refresh: std::time::Duration::from_secs(5),
            host_root: PathBuf::from("/"),
        }
    }

    #[test]
    fn prometheus_shaped_config_validates() {
        let yaml = r#"
job_name: app
scrape_interval: 5s
scrape_timeout: 2s
metrics_path: /m
params: {module: [http_2xx]}
honor_labels: true
sample_limit: 100
body_size_limit: 10MiB
static_configs: [{targets: ["127.0.0.1:9100"], labels: {env: dev}}]
file_sd_configs: [{files: [/etc/t/*.json]}]
relabel_configs: [{source_labels: [__address__], target_label: addr}]
metric_relabel_configs: [{regex: tmp_.*, action: labeldrop}]
"#;
        let c: ScrapeConfig = serde_saphyr::from_str(yaml).unwrap();
        let j = c.validate(&defaults()).unwrap();
        assert_eq!(j.interval, std::time::Duration::from_secs(5));
        assert_eq!(j.timeout, std::time::Duration::from_secs(2));
        assert!(j.honor_labels && j.honor_timestamps);
        assert_eq!(j.limits.sample_limit, 100);
        assert_eq!(j.body_size_limit, 10 << 20);
        assert_eq!(j.sources.len(), 2);
        assert_eq!(j.relabel.len(), 1);
    }

    #[test]
    fn bad_configs_are_refused_with_the_job() {
        for (yaml, want) in [
            (
                "{job_name: a, scrape_interval: 5s, scrape_timeout: 6s}",
                "scrape_timeout",
            ),
            ("{job_name: a, scheme: ftp}", "scheme"),
            ("{job_name: a, metrics_path: m}", "metrics_path"),
            (
                "{job_name: a, relabel_configs: [{action: hashmod, target_label: x}]}",
                "relabel_configs: rule 0",
            ),
            (
                "{job_name: a, file_sd_configs: [{files: [x.txt]}]}",
                ".json",
            ),
            (
                "{job_name: a, kubernetes_sd_configs: [{role: node, api_server: 'http://x'}]}",
                "only \"pod\"",
            ),
            (
                "{job_name: a, static_configs: [{targets: [x], labels: {a-b: c}}]}",
                "a-b",
            ),
        ] {
            let c: ScrapeConfig = serde_saphyr::from_str(yaml).unwrap();
            let err = c.validate(&defaults()).unwrap_err();
            assert!(
                err.contains("job \"a\"") && err.contains(want),
                "{yaml}: {err}"
            );
        }
        assert!(serde_saphyr::from_str::<ScrapeConfig>("{job_name: a, basic_auth: {}}").is_err());
    }

    #[test]
    fn builtin_jobs_keep_only_annotated_workloads() {
        let jobs = builtin_jobs(true);
        assert_eq!(jobs.len(), 2);
        for j in &jobs {
            let v = j.validate(&defaults());
            if j.job_name == "kubernetes-pods" && in_cluster_api().is_none() {
                assert!(v.is_err());
                continue;
            }
            assert_eq!(v.unwrap().relabel.len(), 1);
        }
    }
}
