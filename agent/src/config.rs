//! Agent settings. Every setting has a YAML key (the field name), a flag
//! (`--field-name`) and an environment variable (`VIGIL_FIELD_NAME`); flags win
//! over the environment, which wins over the file. [`Settings`] is the raw,
//! all-optional layer; [`Config`] is the validated runtime value with defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vigil_common::config::{ConfigError, read_token};
use vigil_common::logging::LogFormat;
use vigil_common::{ByteSize, Duration};

/// Raw settings as given by flags, environment and YAML file.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Collector gRPC endpoint (http://host:port, or https:// with TLS);
    /// repeatable (comma-separated in the environment; a string or a list
    /// in YAML): the first is preferred, the next ones take over while it is
    /// down (see docs/fleet.md) [default: http://127.0.0.1:9491].
    #[arg(
        long = "collector",
        env = "VIGIL_COLLECTOR",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub collector: Vec<String>,

    /// While shipping to a collector other than the first, how often the
    /// ones before it are tried again; the agent moves back to the first
    /// that answers [default: 30s].
    #[arg(
        long,
        env = "VIGIL_COLLECTOR_FAILBACK_INTERVAL",
        value_name = "DURATION"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collector_failback_interval: Option<Duration>,

    /// Name of this node, put on every series as `node` [default: the hostname].
    #[arg(long, env = "VIGIL_NODE_NAME", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,

    /// How often to scrape metrics [default: 10s].
    #[arg(long, env = "VIGIL_INTERVAL", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,

    /// Address of the agent's own HTTP endpoint (/metrics, /-/healthy, /-/ready)
    /// [default: 0.0.0.0:9492]; `off` disables it.
    #[arg(long, env = "VIGIL_HTTP_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,

    /// Folder for the agent id, the disk buffer and log checkpoints
    /// [default: /var/lib/vigil/agent].
    #[arg(long, env = "VIGIL_STATE_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,

    /// Where the host's /proc, /sys and log folders are mounted [default: /].
    #[arg(long, env = "VIGIL_HOST_ROOT", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_root: Option<PathBuf>,

    /// File holding the bearer token sent to the collector.
    #[arg(long, env = "VIGIL_TOKEN_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,

    /// CA certificate (PEM) to verify the collector's TLS certificate; turns TLS on.
    #[arg(long, env = "VIGIL_TLS_CA", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,

    /// Server name to verify in the collector's certificate [default: the URL's host].
    #[arg(long, env = "VIGIL_TLS_SERVER_NAME", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,

    /// Client certificate (PEM) presented to the collector, for collectors
    /// that require mutual TLS; needs --tls-key and --tls-ca.
    #[arg(long, env = "VIGIL_TLS_CERT", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "VIGIL_TLS_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// Upper bound of the on-disk buffer; past it the oldest batches are dropped
    /// and counted [default: 256MiB].
    #[arg(long, env = "VIGIL_BUFFER_MAX_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_max_bytes: Option<ByteSize>,

    /// A batch is sealed when it holds this many bytes of samples and log lines
    /// [default: 1MiB].
    #[arg(long, env = "VIGIL_BATCH_MAX_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max_bytes: Option<ByteSize>,

    /// ... or when its oldest item is this old [default: 1s].
    #[arg(long, env = "VIGIL_BATCH_MAX_WAIT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max_wait: Option<Duration>,

    /// Largest gRPC message sent or accepted [default: 16MiB].
    #[arg(long, env = "VIGIL_MAX_MESSAGE_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<ByteSize>,

    /// Batches sent but not yet acknowledged, at most [default: 32].
    #[arg(long, env = "VIGIL_MAX_IN_FLIGHT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,

    /// How long a graceful stop waits for the collector's final acks [default: 10s].
    #[arg(long, env = "VIGIL_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Duration>,

    /// Most cgroup files held open between scrapes (then read with one
    /// `pread` each); each costs the kernel about 5 KiB, charged to the
    /// agent's cgroup. Past it, files are opened per read (about 3x the CPU).
    /// Also capped by the open-file limit [default: 16384].
    #[arg(long, env = "VIGIL_CGROUP_OPEN_FILES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_open_files: Option<usize>,

    /// Processes that get series of their own: the top N by CPU and the
    /// top N by resident memory [default: 10].
    #[arg(long, env = "VIGIL_PROCESS_TOP_N", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_top_n: Option<usize>,

    /// Only processes whose name (`comm`) matches this regex get series of
    /// their own.
    #[arg(long, env = "VIGIL_PROCESS_INCLUDE", value_name = "REGEX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_include: Option<String>,

    /// Processes whose name (`comm`) matches this regex never get series of
    /// their own.
    #[arg(long, env = "VIGIL_PROCESS_EXCLUDE", value_name = "REGEX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_exclude: Option<String>,

    /// Folder of `*.prom` files in Prometheus text format whose metrics ship
    /// with every scrape, like node_exporter's textfile collector (for cron
    /// jobs and scripts; write a file elsewhere and rename it in) [default:
    /// none].
    #[arg(long, env = "VIGIL_TEXTFILE_DIRECTORY", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub textfile_directory: Option<PathBuf>,

    /// Log file globs to tail, in addition to the runtimes' default locations
    /// (repeatable; comma-separated in the environment).
    #[arg(
        long = "log-path",
        env = "VIGIL_LOG_PATHS",
        value_name = "GLOB",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_paths: Vec<String>,

    /// Log file globs never to tail (repeatable).
    #[arg(
        long = "log-exclude",
        env = "VIGIL_LOG_EXCLUDES",
        value_name = "GLOB",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_excludes: Vec<String>,

    /// Tail the runtimes' default log locations (Kubernetes, Docker, Podman)
    /// [default: true].
    #[arg(long, env = "VIGIL_LOG_DEFAULT_PATHS", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_default_paths: Option<bool>,

    /// Read files found at the first start from the beginning (true) or from
    /// their end (false) [default: true].
    #[arg(long, env = "VIGIL_LOG_READ_FROM_START", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_read_from_start: Option<bool>,

    /// Longest log line kept; longer ones are truncated with a marker and
    /// counted [default: 256KiB].
    #[arg(long, env = "VIGIL_LOG_MAX_LINE_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_line_bytes: Option<ByteSize>,

    /// Most log files held open at once [default: 1024].
    #[arg(long, env = "VIGIL_LOG_MAX_OPEN_FILES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_open_files: Option<usize>,

    /// Discover this node's workloads and scrape those that ask for it: Docker
    /// and Podman containers with the label `prometheus.io/scrape=true` and,
    /// inside a Kubernetes cluster, pods with that annotation (jobs
    /// `containers` and `kubernetes-pods`) [default: true].
    #[arg(long, env = "VIGIL_APP_DISCOVERY", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_discovery: Option<bool>,

    /// Docker/Podman Engine API sockets the built-in `containers` job asks
    /// (repeatable) [default: var/run/docker.sock and run/podman/podman.sock
    /// under --host-root].
    #[arg(
        long = "container-socket",
        env = "VIGIL_CONTAINER_SOCKETS",
        value_name = "PATH",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_sockets: Vec<PathBuf>,

    /// Run the health probes Docker/Podman containers declare with
    /// `vigil.probe.<liveness|readiness>.*` labels (asking the
    /// --container-socket sockets every --discovery-refresh-interval; see
    /// docs/probes.md). The same watch ships `vigil_container_info` (image
    /// and service of each container, what release tracking reads) either
    /// way [default: true].
    #[arg(long, env = "VIGIL_PROBES", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<bool>,

    /// A YAML file with `scrape_configs:` in Prometheus's shape, added to the
    /// `scrape_configs` of the config file.
    #[arg(long, env = "VIGIL_SCRAPE_CONFIG_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_config_file: Option<PathBuf>,

    /// Application scrape jobs (YAML only; see docs/scraping.md).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_configs: Option<Vec<crate::targets::config::ScrapeConfig>>,

    /// Default timeout of an application scrape, at most its interval [default: 10s].
    #[arg(long, env = "VIGIL_SCRAPE_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<Duration>,

    /// Default largest (uncompressed) body of an application scrape; a larger
    /// one fails that scrape; 0: no limit [default: 64MiB].
    #[arg(long, env = "VIGIL_SCRAPE_BODY_SIZE_LIMIT", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_body_size_limit: Option<ByteSize>,

    /// Default most samples per application scrape (after metric relabeling);
    /// more fail that scrape; 0: no limit [default: 200000].
    #[arg(long, env = "VIGIL_SCRAPE_SAMPLE_LIMIT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_sample_limit: Option<usize>,

    /// Default most labels per scraped series; 0: no limit [default: 64].
    #[arg(long, env = "VIGIL_SCRAPE_LABEL_LIMIT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_label_limit: Option<usize>,

    /// Default longest label name of a scraped series; 0: no limit [default: 256].
    #[arg(long, env = "VIGIL_SCRAPE_LABEL_NAME_LENGTH_LIMIT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_label_name_length_limit: Option<usize>,

    /// Default longest label value of a scraped series; 0: no limit [default: 4096].
    #[arg(long, env = "VIGIL_SCRAPE_LABEL_VALUE_LENGTH_LIMIT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_label_value_length_limit: Option<usize>,

    /// How often container and pod discovery look again [default: 5s].
    #[arg(
        long,
        env = "VIGIL_DISCOVERY_REFRESH_INTERVAL",
        value_name = "DURATION"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_refresh_interval: Option<Duration>,

    /// Log output format: text or json [default: text].
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,

    /// Log level or filter, e.g. `info`, `debug`, `vigil_agent=debug` [default: RUST_LOG, else info].
    #[arg(long, env = "VIGIL_LOG_LEVEL", value_name = "LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// A string or a list of strings (YAML `collector: URL` or `collector: [URL, …]`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Collectors in order of preference (at least one, no repeats).
    pub collectors: Vec<String>,
    pub failback_interval: std::time::Duration,
    pub node_name: String,
    pub interval: std::time::Duration,
    pub http_listen: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub host_root: PathBuf,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    /// Client certificate and key for mutual TLS.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    pub buffer_max_bytes: u64,
    pub batch_max_bytes: u64,
    pub batch_max_wait: std::time::Duration,
    pub max_message_bytes: usize,
    pub max_in_flight: usize,
    pub shutdown_timeout: std::time::Duration,
    pub logs: LogsConfig,
    pub processes: crate::procs::ProcessFilter,
    pub cgroup_open_files: usize,
    /// node_exporter's textfile collector's folder.
    pub textfile_directory: Option<PathBuf>,
    /// Application scrape jobs, validated.
    pub scrape_jobs: Vec<crate::targets::config::Job>,
    /// The Engine API watch (probes and `vigil_container_info`): the sockets
    /// asked, how often, and whether probes run.
    pub probes: (Vec<PathBuf>, std::time::Duration, bool),
    pub log_format: LogFormat,
    pub log_level: Option<String>,
}

/// What the log tailer reads.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub paths: Vec<String>,
    pub excludes: Vec<String>,
    pub default_paths: bool,
    pub read_from_start: bool,
    pub max_line_bytes: usize,
    pub max_open_files: usize,
}

fn regex_setting(key: &str, v: Option<&str>) -> Result<Option<regex::Regex>, ConfigError> {
    v.map(|r| {
        regex::Regex::new(&format!("^(?:{r})$"))
            .map_err(|e| ConfigError::Invalid(format!("{key} {r:?}: {e}")))
    })
    .transpose()
}

pub const DEFAULT_COLLECTOR: &str = "http://127.0.0.1:9491";
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:9492";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vigil/agent";

impl Settings {
    /// Layers these (flag/env) settings over `file` and validates the result.
    pub fn load(&self, file: Option<&Path>) -> Result<Config, ConfigError> {
        let s: Settings = vigil_common::config::layer(self, file)?;
        s.validate()
    }

    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let scrape_jobs =
            self.scrape_jobs(self.interval.unwrap_or(Duration::from_secs(10)).as_std())?;
        let mut collectors: Vec<String> = Vec::with_capacity(self.collector.len().max(1));
        for c in &self.collector {
            let c = c.trim();
            if !(c.starts_with("http://") || c.starts_with("https://")) {
                return Err(invalid(format!(
                    "collector {c:?} must be a URL like http://host:9491 or https://host:9491"
                )));
            }
            if collectors.iter().any(|x| x == c) {
                return Err(invalid(format!("collector {c:?} is listed twice")));
            }
            collectors.push(c.to_string());
        }
        if collectors.is_empty() {
            collectors.push(DEFAULT_COLLECTOR.to_string());
        }
        let failback_interval = self
            .collector_failback_interval
            .unwrap_or(Duration::from_secs(30))
            .as_std();
        if failback_interval < std::time::Duration::from_millis(100) {
            return Err(invalid(format!(
                "collector_failback_interval {failback_interval:?} is below 100ms"
            )));
        }
        let node_name = match self.node_name {
            Some(n) if !n.trim().is_empty() => n,
            Some(_) => return Err(invalid("node_name is empty".into())),
            None => hostname(),
        };
        let interval = self.interval.unwrap_or(Duration::from_secs(10)).as_std();
        if interval < std::time::Duration::from_millis(100) {
            return Err(invalid(format!("interval {interval:?} is below 100ms")));
        }
        let http_listen = match self.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN) {
            "off" | "" => None,
            a => Some(
                a.parse::<SocketAddr>()
                    .map_err(|e| invalid(format!("http_listen {a:?}: {e}")))?,
            ),
        };
        let token = match &self.token_file {
            Some(p) => Some(read_token(p)?),
            None => None,
        };
        let batch_max_bytes = self.batch_max_bytes.unwrap_or(ByteSize(1 << 20)).0;
        let max_message_bytes = self.max_message_bytes.unwrap_or(ByteSize(16 << 20)).0;
        if batch_max_bytes == 0 || batch_max_bytes > max_message_bytes / 2 {
            return Err(invalid(format!(
                "batch_max_bytes ({batch_max_bytes}) must be above 0 and at most half of max_message_bytes ({max_message_bytes})"
            )));
        }
        let buffer_max_bytes = self.buffer_max_bytes.unwrap_or(ByteSize(256 << 20)).0;
        if buffer_max_bytes < 4 * batch_max_bytes {
            return Err(invalid(format!(
                "buffer_max_bytes ({buffer_max_bytes}) must be at least 4 × batch_max_bytes ({batch_max_bytes})"
            )));
        }
        let max_in_flight = self.max_in_flight.unwrap_or(32);
        if max_in_flight == 0 {
            return Err(invalid("max_in_flight must be at least 1".into()));
        }
        let tls_identity = match (self.tls_cert, self.tls_key) {
            (Some(c), Some(k)) if self.tls_ca.is_some() => Some((c, k)),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "tls_cert and tls_key need tls_ca (mutual TLS is TLS)".into(),
                ));
            }
            (None, None) => None,
            _ => return Err(invalid("tls_cert and tls_key go together".into())),
        };
        let probes = {
            let host_root = self.host_root.clone().unwrap_or_else(|| PathBuf::from("/"));
            let sockets = if self.container_sockets.is_empty() {
                crate::targets::config::default_sockets(&host_root)
            } else {
                self.container_sockets.clone()
            };
            (
                sockets,
                self.discovery_refresh_interval
                    .unwrap_or(Duration::from_secs(5))
                    .as_std(),
                self.probes.unwrap_or(true),
            )
        };
        Ok(Config {
            collectors,
            failback_interval,
            node_name,
            interval,
            http_listen,
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            host_root: self.host_root.unwrap_or_else(|| PathBuf::from("/")),
            token,
            tls_ca: self.tls_ca,
            tls_server_name: self.tls_server_name,
            tls_identity,
            buffer_max_bytes,
            batch_max_bytes,
            batch_max_wait: self
                .batch_max_wait
                .unwrap_or(Duration::from_secs(1))
                .as_std(),
            max_message_bytes: max_message_bytes as usize,
            max_in_flight,
            shutdown_timeout: self
                .shutdown_timeout
                .unwrap_or(Duration::from_secs(10))
                .as_std(),
            logs: LogsConfig {
                paths: self.log_paths,
                excludes: self.log_excludes,
                default_paths: self.log_default_paths.unwrap_or(true),
                read_from_start: self.log_read_from_start.unwrap_or(true),
                max_line_bytes: self.log_max_line_bytes.unwrap_or(ByteSize(256 << 10)).0 as usize,
                max_open_files: self.log_max_open_files.unwrap_or(1024),
            },
            processes: crate::procs::ProcessFilter {
                top_n: self.process_top_n.unwrap_or(10),
                include: regex_setting("process_include", self.process_include.as_deref())?,
                exclude: regex_setting("process_exclude", self.process_exclude.as_deref())?,
            },
            cgroup_open_files: self.cgroup_open_files.unwrap_or(16_384),
            textfile_directory: self.textfile_directory,
            scrape_jobs,
            probes,
            log_format: self.log_format.unwrap_or_default(),
            log_level: self.log_level,
        })
    }
}

/// The file named by `--scrape-config-file`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScrapeConfigFile {
    #[serde(default)]
    scrape_configs: Vec<crate::targets::config::ScrapeConfig>,
}

impl Settings {
    /// Every scrape job: the config file's, `--scrape-config-file`'s and,
    /// with `app_discovery`, the built-in ones (unless a job of that name exists).
    fn scrape_jobs(
        &self,
        interval: std::time::Duration,
    ) -> Result<Vec<crate::targets::config::Job>, ConfigError> {
        use crate::targets::config::{JobDefaults, builtin_jobs, in_cluster_api};
        let invalid = ConfigError::Invalid;
        let mut list = self.scrape_configs.clone().unwrap_or_default();
        if let Some(p) = &self.scrape_config_file {
            let f: ScrapeConfigFile = vigil_common::config::load_yaml(p)?;
            list.extend(f.scrape_configs);
        }
        if self.app_discovery.unwrap_or(true) {
            for mut b in builtin_jobs(in_cluster_api().is_some()) {
                if list.iter().any(|j| j.job_name == b.job_name) {
                    continue;
                }
                for c in &mut b.container_sd_configs {
                    c.sockets.clone_from(&self.container_sockets);
                }
                list.push(b);
            }
        }
        let d = JobDefaults {
            interval,
            timeout: self
                .scrape_timeout
                .map_or(std::time::Duration::from_secs(10), |d| d.as_std()),
            body_size_limit: self.scrape_body_size_limit.unwrap_or(ByteSize(64 << 20)).0,
            limits: crate::targets::append::Limits {
                sample_limit: self.scrape_sample_limit.unwrap_or(200_000),
                label_limit: self.scrape_label_limit.unwrap_or(64),
                label_name_length_limit: self.scrape_label_name_length_limit.unwrap_or(256),
                label_value_length_limit: self.scrape_label_value_length_limit.unwrap_or(4096),
            },
            refresh: self
                .discovery_refresh_interval
                .map_or(std::time::Duration::from_secs(5), |d| d.as_std()),
            host_root: self.host_root.clone().unwrap_or_else(|| PathBuf::from("/")),
        };
        if d.timeout.is_zero() {
            return Err(invalid("scrape_timeout must be above 0".into()));
        }
        let mut jobs: Vec<crate::targets::config::Job> = Vec::with_capacity(list.len());
        for c in &list {
            if jobs.iter().any(|j| j.name == c.job_name) {
                return Err(invalid(format!(
                    "scrape_configs: job_name {:?} is used twice",
                    c.job_name
                )));
            }
            jobs.push(c.validate(&d).map_err(invalid)?);
        }
        Ok(jobs)
    }
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), `localhost` if unreadable.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Settings::default().validate().unwrap();
        assert_eq!(c.collectors, vec![DEFAULT_COLLECTOR.to_string()]);
        assert_eq!(c.interval, std::time::Duration::from_secs(10));
        assert!(!c.node_name.is_empty());
    }

    #[test]
    fn collector_is_a_string_or_a_list_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("agent.yml");
        std::fs::write(&f, "collector: http://a:9491\n").unwrap();
        let c = Settings::default().load(Some(&f)).unwrap();
        assert_eq!(c.collectors, vec!["http://a:9491".to_string()]);
        std::fs::write(&f, "collector: [http://a:9491, 'https://b:9491']\n").unwrap();
        let c = Settings::default().load(Some(&f)).unwrap();
        assert_eq!(c.collectors, vec!["http://a:9491", "https://b:9491"]);
        // the command line's list replaces the file's
        let c = Settings {
            collector: vec!["http://c:1".into()],
            ..Default::default()
        }
        .load(Some(&f))
        .unwrap();
        assert_eq!(c.collectors, vec!["http://c:1"]);
        std::fs::write(&f, "collector: 7\n").unwrap();
        assert!(Settings::default().load(Some(&f)).is_err());
        // repeated flags and a comma-separated environment variable
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            s: Settings,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "x",
            "--collector",
            "http://a:1",
            "--collector",
            "http://b:2,http://c:3",
        ])
        .unwrap();
        assert_eq!(
            cli.s.collector,
            vec!["http://a:1", "http://b:2", "http://c:3"]
        );
    }

    #[test]
    fn scrape_jobs_from_yaml_and_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("agent.yml");
        std::fs::write(
            &f,
            "scrape_configs:\n  - job_name: app\n    static_configs: [{targets: ['127.0.0.1:9']}]\n",
        )
        .unwrap();
        let c = Settings::default().load(Some(&f)).unwrap();
        let names: Vec<&str> = c.scrape_jobs.iter().map(|j| j.name.as_str()).collect();
        assert!(
            names.contains(&"app") && names.contains(&"containers"),
            "{names:?}"
        );
        let c = Settings {
            app_discovery: Some(false),
            ..Default::default()
        }
        .load(Some(&f))
        .unwrap();
        assert_eq!(c.scrape_jobs.len(), 1);
        std::fs::write(
            &f,
            "scrape_configs:\n  - {job_name: a}\n  - {job_name: a}\n",
        )
        .unwrap();
        let e = Settings::default().load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("used twice"), "{e}");
        std::fs::write(&f, "scrape_configs:\n  - {job_name: a, bogus: 1}\n").unwrap();
        let e = Settings::default().load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let s = Settings {
            collector: vec!["127.0.0.1:1".into()],
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("collector"));
        let s = Settings {
            collector: vec!["http://a:1".into(), "http://a:1".into()],
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("twice"));
        let s = Settings {
            http_listen: Some("nope".into()),
            ..Default::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("http_listen")
        );
    }
}
