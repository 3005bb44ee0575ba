//! Collector settings. Every setting has a YAML key (the field name), a flag
//! (`--field-name`) and an environment variable (`VIGIL_FIELD_NAME`); flags win
//! over the environment, which wins over the file. [`Settings`] is the raw,
//! all-optional layer; [`Config`] is the validated runtime value with defaults.
//!
//! Why one file of about 1,100 lines: it is the collector's single table of
//! settings — each is a struct field with its doc (which is also the `--help`
//! text and the README's reference), its flag and its environment variable —
//! and its validation; splitting it would split that one table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vigil_common::config::{ConfigError, read_token};
use vigil_common::labels::valid_label_name;

pub use crate::limits::SeriesLimits;
use vigil_common::logging::LogFormat;
use vigil_common::{ByteSize, Duration};

use crate::forward::config::{
    ForwardConfig, HttpUrl, LokiPushConfig, OtlpExportConfig, RemoteWriteConfig,
};

/// Raw settings as given by flags, environment and YAML file.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP address: /metrics, the Prometheus and Loki APIs, health [default: 0.0.0.0:9490].
    #[arg(long, env = "VIGIL_HTTP_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,

    /// gRPC address agents ship to [default: 0.0.0.0:9491].
    #[arg(long, env = "VIGIL_GRPC_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<String>,

    /// Folder for the write-ahead log, checkpoints and state [default: /var/lib/vigil/collector].
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,

    /// File holding the bearer token agents must present; without it, agents
    /// are not authenticated.
    #[arg(long, env = "VIGIL_TOKEN_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,

    /// TLS certificate (PEM) for the gRPC listener; needs --tls-key.
    #[arg(long, env = "VIGIL_TLS_CERT", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for the gRPC listener; needs --tls-cert.
    #[arg(long, env = "VIGIL_TLS_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// TLS client certificates (PEM CA bundle): agents must present a
    /// certificate signed by it (mutual TLS on the gRPC port); needs --tls-cert.
    #[arg(long, env = "VIGIL_TLS_CLIENT_CA", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,

    /// Web configuration in Prometheus' format for the HTTP side
    /// (tls_server_config, basic_auth_users with bcrypt hashes,
    /// http_server_config); `promtool check web-config` accepts it.
    #[arg(long, env = "VIGIL_WEB_CONFIG", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_config: Option<PathBuf>,

    /// Bearer-token files giving the read role: queries, /federate, /metrics
    /// (repeatable; comma-separated in the environment).
    #[arg(
        long,
        env = "VIGIL_READ_TOKEN_FILES",
        value_name = "FILE",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_token_file: Vec<PathBuf>,

    /// Bearer-token files giving the write role: remote write and pushes
    /// (repeatable; comma-separated in the environment).
    #[arg(
        long,
        env = "VIGIL_WRITE_TOKEN_FILES",
        value_name = "FILE",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_token_file: Vec<PathBuf>,

    /// Bearer-token files giving the admin role: everything, including
    /// /-/reload, the actions API and the Alertmanager webhook (repeatable;
    /// comma-separated in the environment).
    #[arg(
        long,
        env = "VIGIL_ADMIN_TOKEN_FILES",
        value_name = "FILE",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_token_file: Vec<PathBuf>,

    /// Role of a basic-auth user of the web config, `user=read|write|admin`
    /// (repeatable); users not named are admins.
    #[arg(
        long,
        env = "VIGIL_BASIC_AUTH_ROLES",
        value_name = "USER=ROLE",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basic_auth_role: Vec<String>,

    /// Without any credential configured, write and admin endpoints answer
    /// loopback clients only; this opens them to every address [default: false].
    #[arg(long, env = "VIGIL_HTTP_OPEN_ACCESS", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_open_access: Option<bool>,

    /// Largest decoded gRPC message accepted [default: 16MiB].
    #[arg(long, env = "VIGIL_MAX_MESSAGE_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<ByteSize>,

    /// How long samples are kept [default: 24h].
    #[arg(long, env = "VIGIL_RETENTION", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,

    /// How long log lines are kept [default: 24h].
    #[arg(long, env = "VIGIL_LOG_RETENTION", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_retention: Option<Duration>,

    /// Most bytes of (compressed) log data kept on disk; the oldest go first
    /// [default: 10GiB].
    #[arg(long, env = "VIGIL_LOG_MAX_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_bytes: Option<ByteSize>,

    /// Most series the store holds; new series beyond it are refused and
    /// counted [default: 5000000].
    #[arg(long, env = "VIGIL_MAX_SERIES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_series: Option<usize>,

    /// Most series one agent or remote-write client may create; 0 = no limit
    /// [default: 1000000].
    #[arg(long, env = "VIGIL_MAX_SERIES_PER_AGENT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_series_per_agent: Option<usize>,

    /// Memory budget of the sample store; when over, the oldest sealed chunks
    /// go first; 0 = none [default: 0].
    #[arg(long, env = "VIGIL_MEMORY_BUDGET", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<ByteSize>,

    /// Below this much free space on the data directory's disk the collector
    /// stops taking new data (agents keep buffering, remote write and pushes
    /// get 503) until space returns; queries go on; 0 = only once a write
    /// fails [default: 64MiB].
    #[arg(long, env = "VIGIL_MIN_FREE_DISK", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_disk: Option<ByteSize>,

    /// Memory the collector may use; 0 = no memory-pressure guard [default:
    /// the limit of its cgroup (v1 memory.limit_in_bytes, v2 memory.max), or
    /// none].
    #[arg(long, env = "VIGIL_MEMORY_LIMIT", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,

    /// Above this fraction of memory_limit (resident memory), new series
    /// are refused and counted, with 503 to pushes, until use falls 5 points
    /// below it; existing series keep ingesting [default: 0.8].
    #[arg(long, env = "VIGIL_MEMORY_PRESSURE_FRACTION", value_name = "FRACTION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_pressure_fraction: Option<f64>,

    /// Samples up to this much older than their series' newest are still
    /// accepted; older ones are refused and counted [default: 0s].
    #[arg(long, env = "VIGIL_OUT_OF_ORDER_WINDOW", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_order_window: Option<Duration>,

    /// Most HTTP connections open at once; beyond it new ones wait in the
    /// kernel's backlog [default: 512].
    #[arg(long, env = "VIGIL_HTTP_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_max_connections: Option<usize>,

    /// Most gRPC connections (agents) open at once; kept below the process'
    /// open-file limit [default: 10000].
    #[arg(long, env = "VIGIL_GRPC_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_max_connections: Option<usize>,

    /// A connection on either port on which nothing moves for this long is
    /// closed (agents' streams carry keepalive pings every 30s) [default: 5m].
    #[arg(long, env = "VIGIL_CONNECTION_IDLE_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_idle_timeout: Option<Duration>,

    /// A new connection must send its first request (HTTP/1 headers, the
    /// HTTP/2 preface or a TLS hello) within this, and an HTTP/1 request's
    /// headers must all arrive within it [default: 30s].
    #[arg(long, env = "VIGIL_HEADER_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Duration>,

    /// Most PromQL and LogQL queries evaluated at once; more wait for a slot
    /// (for at most their timeout) [default: 20].
    #[arg(long, env = "VIGIL_QUERY_MAX_CONCURRENCY", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_max_concurrency: Option<usize>,

    /// Longest a query may run; a request's `timeout` parameter can only
    /// shorten it [default: 2m].
    #[arg(long, env = "VIGIL_QUERY_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_timeout: Option<Duration>,

    /// Most samples one PromQL query may hold in memory at once
    /// (Prometheus' --query.max-samples) [default: 50000000].
    #[arg(long, env = "VIGIL_QUERY_MAX_SAMPLES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_max_samples: Option<usize>,

    /// Accept Prometheus remote write at POST /api/v1/write [default: true].
    #[arg(long, env = "VIGIL_REMOTE_WRITE_RECEIVER", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_write_receiver: Option<bool>,

    /// Most series in one remote-write request [default: 50000].
    #[arg(
        long,
        env = "VIGIL_REMOTE_WRITE_MAX_SERIES_PER_REQUEST",
        value_name = "N"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_write_max_series_per_request: Option<usize>,

    /// Most labels (the metric name included) one series may have; series
    /// with more are refused and counted, from agents and remote write alike
    /// [default: 40].
    #[arg(long, env = "VIGIL_MAX_LABEL_NAMES_PER_SERIES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_label_names_per_series: Option<usize>,

    /// Longest label name, in bytes [default: 1024].
    #[arg(long, env = "VIGIL_MAX_LABEL_NAME_LENGTH", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_label_name_length: Option<usize>,

    /// Longest label value, in bytes [default: 4096].
    #[arg(long, env = "VIGIL_MAX_LABEL_VALUE_LENGTH", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_label_value_length: Option<usize>,

    /// Samples stamped further ahead of the collector's clock than this are
    /// refused and counted (a forged future sample would otherwise freeze
    /// its series) [default: 10m].
    #[arg(long, env = "VIGIL_MAX_FUTURE_SKEW", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_future_skew: Option<Duration>,

    /// Largest push body (OTLP over HTTP, Loki push), both as sent and once
    /// decompressed; larger ones are refused with 413 [default: 32MiB].
    #[arg(long, env = "VIGIL_PUSH_MAX_BODY_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_max_body_bytes: Option<ByteSize>,

    /// Longest pushed log line, in bytes; longer entries are refused
    /// [default: 256KiB].
    #[arg(long, env = "VIGIL_PUSH_MAX_LINE_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_max_line_bytes: Option<ByteSize>,

    /// Rule files or globs in Prometheus' format (repeatable; comma-separated
    /// in the environment). Reloaded on SIGHUP, `POST /-/reload` and change.
    #[arg(
        long = "rules",
        env = "VIGIL_RULES",
        value_name = "FILE_OR_GLOB",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,

    /// Alertmanager base URLs to notify, e.g. http://am:9093 (repeatable;
    /// comma-separated in the environment).
    #[arg(
        long = "alertmanager",
        env = "VIGIL_ALERTMANAGERS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alertmanager: Vec<String>,

    /// Interval of rule groups that set none [default: 1m].
    #[arg(long, env = "VIGIL_EVALUATION_INTERVAL", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation_interval: Option<Duration>,

    /// URL under which users reach this collector (alerts' generatorURL,
    /// `$externalURL`) [default: http://<hostname>:<http port>].
    #[arg(long, env = "VIGIL_EXTERNAL_URL", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,

    /// Labels added to alerts sent to Alertmanager, `name=value` (repeatable;
    /// comma-separated in the environment).
    #[arg(
        long = "external-label",
        env = "VIGIL_EXTERNAL_LABELS",
        value_name = "NAME=VALUE",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_labels: Vec<String>,

    /// How often the collector writes its own metrics into the store (as
    /// `job="vigil-collector"`), so rules can alert on them; 0s disables
    /// [default: 15s].
    #[arg(long, env = "VIGIL_SELF_SCRAPE_INTERVAL", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_scrape_interval: Option<Duration>,

    /// Actions file: executors, restart rules and autoscalers (see the README's
    /// "Actions" section); without it no action is ever taken.
    #[arg(long, env = "VIGIL_ACTIONS", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<PathBuf>,

    /// How long a graceful stop waits for in-flight work [default: 10s].
    #[arg(long, env = "VIGIL_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Duration>,

    /// Log output format: text or json [default: text].
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,

    /// Log level or filter, e.g. `info`, `debug`, `vigil_collector=debug` [default: RUST_LOG, else info].
    #[arg(long, env = "VIGIL_LOG_LEVEL", value_name = "LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,

    /// Prometheus remote-write URLs to forward every sample to, with the
    /// default queue settings (repeatable; comma-separated in the
    /// environment). The YAML `remote_write:` list takes Prometheus's full
    /// entries (see docs/forwarding.md).
    #[arg(
        long = "remote-write-url",
        env = "VIGIL_REMOTE_WRITE_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_write_url: Vec<String>,

    /// Loki push URLs (`http://loki:3100/loki/api/v1/push`) to forward every
    /// log line to (repeatable; comma-separated in the environment). The
    /// YAML `loki_push:` list takes tenant, auth and TLS.
    #[arg(
        long = "loki-push-url",
        env = "VIGIL_LOKI_PUSH_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loki_push_url: Vec<String>,

    /// OTLP/HTTP base URLs (`http://otel-collector:4318`) to export metrics
    /// and logs to (repeatable; comma-separated in the environment). The
    /// YAML `otlp_export:` list takes headers, TLS and compression.
    #[arg(
        long = "otlp-export-url",
        env = "VIGIL_OTLP_EXPORT_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub otlp_export_url: Vec<String>,

    /// Most bytes of write-ahead log kept past the last checkpoint for
    /// forwarding cursors that lag (an endpoint down); past it the oldest
    /// segments go and what they held is counted as dropped [default: 10GiB].
    #[arg(long, env = "VIGIL_FORWARD_WAL_MAX_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_wal_max_bytes: Option<ByteSize>,

    /// Keep what agents and remote write send in this collector's own store
    /// (its query APIs, /federate); false makes a gateway that makes data
    /// durable (WAL) and forwards it, keeping only its own metrics and rule
    /// output; it needs a forwarding endpoint, and rules or actions need
    /// --query-url [default: true].
    #[arg(long, env = "VIGIL_LOCAL_STORE", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_store: Option<bool>,

    /// Gateway mode: a Prometheus-compatible query API (vmselect
    /// `http://vmselect:8481/select/0/prometheus`, Mimir
    /// `http://mimir/prometheus`, Prometheus) that rules and autoscalers
    /// query instead of the local store.
    #[arg(long, env = "VIGIL_QUERY_URL", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_url: Option<String>,

    /// Header sent with every --query-url request, `Name: value`, e.g.
    /// `X-Scope-OrgID: team-a` (repeatable; comma-separated in the environment).
    #[arg(
        long = "query-header",
        env = "VIGIL_QUERY_HEADERS",
        value_name = "NAME: VALUE",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_header: Vec<String>,

    /// Which collector of a fleet evaluates rules and acts: `always` (this
    /// one: a single collector, or a fleet's dedicated replica), `never`,
    /// `kubernetes-lease` (a coordination.k8s.io/v1 Lease) or `lock-file`
    /// (an flock on --leader-election-lock-file) [default: always].
    #[arg(long, env = "VIGIL_LEADER_ELECTION", value_name = "MODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election: Option<String>,

    /// This collector's name in the election [default: hostname_<random>].
    #[arg(long, env = "VIGIL_LEADER_ELECTION_IDENTITY", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_identity: Option<String>,

    /// Name of the Lease [default: vigil-collector].
    #[arg(long, env = "VIGIL_LEADER_ELECTION_LEASE_NAME", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_lease_name: Option<String>,

    /// Namespace of the Lease [default: the service account's, else default].
    #[arg(
        long,
        env = "VIGIL_LEADER_ELECTION_LEASE_NAMESPACE",
        value_name = "NAME"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_lease_namespace: Option<String>,

    /// Kubernetes API server for the Lease [default: in-cluster,
    /// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, env = "VIGIL_LEADER_ELECTION_API_SERVER", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_api_server: Option<String>,

    /// Bearer token file for the API server, re-read for every request
    /// [default: the service account's token].
    #[arg(long, env = "VIGIL_LEADER_ELECTION_TOKEN_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_token_file: Option<PathBuf>,

    /// CA bundle (PEM) of the API server [default: the service account's ca.crt].
    #[arg(long, env = "VIGIL_LEADER_ELECTION_CA_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_ca_file: Option<PathBuf>,

    /// How long a Lease holds for the others once written (whole seconds)
    /// [default: 15s].
    #[arg(
        long,
        env = "VIGIL_LEADER_ELECTION_LEASE_DURATION",
        value_name = "DURATION"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_lease_duration: Option<Duration>,

    /// The leader acts until this long after sending its last successful
    /// renewal; below the lease duration [default: 10s].
    #[arg(
        long,
        env = "VIGIL_LEADER_ELECTION_RENEW_DEADLINE",
        value_name = "DURATION"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_renew_deadline: Option<Duration>,

    /// How often the leader renews and the others try [default: 2s].
    #[arg(
        long,
        env = "VIGIL_LEADER_ELECTION_RETRY_PERIOD",
        value_name = "DURATION"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_retry_period: Option<Duration>,

    /// The lock file of `lock-file` election (on a file system all the
    /// fleet's collectors share the locks of: one host's).
    #[arg(long, env = "VIGIL_LEADER_ELECTION_LOCK_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_election_lock_file: Option<PathBuf>,

    /// `remote_write:` entries (YAML only), in Prometheus's shape.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_write: Vec<RemoteWriteConfig>,

    /// `loki_push:` entries (YAML only).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loki_push: Vec<LokiPushConfig>,

    /// `otlp_export:` entries (YAML only).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub otlp_export: Vec<OtlpExportConfig>,
}

/// Validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings as given, before defaults (the status API shows them).
    pub given: Given,
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub token: Option<String>,
    pub tls: Option<TlsFiles>,
    pub auth: crate::http::auth::AuthSettings,
    pub max_message_bytes: usize,
    pub retention: std::time::Duration,
    pub log_retention: std::time::Duration,
    pub log_max_bytes: u64,
    pub max_series: usize,
    pub max_series_per_agent: usize,
    pub memory_budget: u64,
    pub min_free_disk: u64,
    /// None: find the cgroup's at start; Some(0): no guard.
    pub memory_limit: Option<u64>,
    pub memory_pressure_fraction: f64,
    pub out_of_order_window: std::time::Duration,
    pub push: crate::push::PushLimits,
    pub http_limits: crate::net::ConnLimits,
    pub grpc_limits: crate::net::ConnLimits,
    pub query: QueryLimits,
    pub remote_write_receiver: bool,
    pub series_limits: SeriesLimits,
    pub rules: Vec<String>,
    pub alertmanagers: Vec<String>,
    pub evaluation_interval: std::time::Duration,
    pub external_url: String,
    pub external_labels: vigil_common::Labels,
    pub self_scrape_interval: std::time::Duration,
    pub actions: Option<PathBuf>,
    pub shutdown_timeout: std::time::Duration,
    pub log_format: LogFormat,
    pub log_level: Option<String>,
    pub forward: ForwardConfig,
    /// Agents' and remote write's data kept in the local store.
    pub local_store: bool,
    /// Gateway mode: where rules and autoscalers query, with headers.
    pub query_url: Option<(String, Vec<(String, String)>)>,
    pub election: crate::fleet::leader::Election,
}

/// The settings as given (flags over environment over file), before
/// defaults: what `/api/v1/status/flags` and `/api/v1/status/config` show,
/// with secrets hidden (`crate::http::status`).
#[derive(Clone, Default)]
pub struct Given(pub Settings);

impl std::fmt::Debug for Given {
    // the effective values are the other fields; these may hold secrets
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Given { .. }")
    }
}

/// Limits of the query APIs (PromQL and LogQL).
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_concurrency: usize,
    pub timeout: std::time::Duration,
    pub max_samples: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_concurrency: 20,
            timeout: std::time::Duration::from_secs(120),
            max_samples: 50_000_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, agents must present a client certificate signed by it.
    pub client_ca: Option<PathBuf>,
}

/// The lowest memory_pressure_fraction that leaves room for the guard's
/// hysteresis ([`crate::memory::HYSTERESIS`]).
const HYSTERESIS_FLOOR: f64 = crate::memory::HYSTERESIS;

pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:9490";
pub const DEFAULT_GRPC_LISTEN: &str = "0.0.0.0:9491";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/vigil/collector";

impl Settings {
    /// Layers these (flag/env) settings over `file` and validates the result.
    pub fn load(&self, file: Option<&Path>) -> Result<Config, ConfigError> {
        let s: Settings = vigil_common::config::layer(self, file)?;
        s.validate()
    }

    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let given = Given(self.clone());
        let invalid = |m: String| ConfigError::Invalid(m);
        let election = self.election()?;
        let addr = |key: &str, v: Option<&str>, d: &str| -> Result<SocketAddr, ConfigError> {
            let a = v.unwrap_or(d);
            a.parse().map_err(|e| {
                invalid(format!(
                    "{key} {a:?}: {e} (expected host:port, e.g. 127.0.0.1:9490)"
                ))
            })
        };
        let http_listen = addr(
            "http_listen",
            self.http_listen.as_deref(),
            DEFAULT_HTTP_LISTEN,
        )?;
        let grpc_listen = addr(
            "grpc_listen",
            self.grpc_listen.as_deref(),
            DEFAULT_GRPC_LISTEN,
        )?;
        let token = match &self.token_file {
            Some(p) => Some(read_token(p)?),
            None => None,
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca,
            }),
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(invalid(
                    "tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)".into(),
                ));
            }
            (None, None) => None,
            _ => return Err(invalid("tls_cert and tls_key go together".into())),
        };
        let mut user_roles = BTreeMap::new();
        for ur in &self.basic_auth_role {
            let (u, r) = ur
                .split_once('=')
                .ok_or_else(|| invalid(format!("basic_auth_role {ur:?} is not user=role")))?;
            let role = r
                .parse()
                .map_err(|e| invalid(format!("basic_auth_role {ur:?}: {e}")))?;
            user_roles.insert(u.to_string(), role);
        }
        if !user_roles.is_empty() && self.web_config.is_none() {
            return Err(invalid(
                "basic_auth_role needs web_config (its basic_auth_users)".into(),
            ));
        }
        let auth = crate::http::auth::AuthSettings {
            web_config: self.web_config,
            read_token_files: self.read_token_file,
            write_token_files: self.write_token_file,
            admin_token_files: self.admin_token_file,
            user_roles,
            open_access: self.http_open_access.unwrap_or(false),
        };
        let max_message_bytes = self.max_message_bytes.unwrap_or(ByteSize(16 << 20)).0;
        if max_message_bytes < 4096 {
            return Err(invalid(format!(
                "max_message_bytes {max_message_bytes} is below 4096"
            )));
        }
        let retention = self
            .retention
            .unwrap_or(Duration::from_secs(24 * 3600))
            .as_std();
        if retention < std::time::Duration::from_secs(60) {
            return Err(invalid(format!("retention {retention:?} is below 1m")));
        }
        let max_series = self.max_series.unwrap_or(5_000_000);
        if max_series == 0 {
            return Err(invalid("max_series must be at least 1".into()));
        }
        let max_series_per_agent = self.max_series_per_agent.unwrap_or(1_000_000);
        let positive = |key: &str, v: Option<usize>, d: usize| -> Result<usize, ConfigError> {
            match v.unwrap_or(d) {
                0 => Err(invalid(format!("{key} must be at least 1"))),
                n => Ok(n),
            }
        };
        let idle = self
            .connection_idle_timeout
            .unwrap_or(Duration::from_secs(300))
            .as_std();
        let header = self
            .header_timeout
            .unwrap_or(Duration::from_secs(30))
            .as_std();
        if idle.is_zero() || header.is_zero() {
            return Err(invalid(
                "connection_idle_timeout and header_timeout must be above 0".into(),
            ));
        }
        let limits = |max| crate::net::ConnLimits {
            max_connections: max,
            handshake_timeout: header,
            idle_timeout: idle,
        };
        let http_limits = limits(positive(
            "http_max_connections",
            self.http_max_connections,
            512,
        )?);
        let grpc_limits = limits(positive(
            "grpc_max_connections",
            self.grpc_max_connections,
            10_000,
        )?);
        let dq = QueryLimits::default();
        let query = QueryLimits {
            max_concurrency: positive(
                "query_max_concurrency",
                self.query_max_concurrency,
                dq.max_concurrency,
            )?,
            timeout: self.query_timeout.map(|d| d.as_std()).unwrap_or(dq.timeout),
            max_samples: positive("query_max_samples", self.query_max_samples, dq.max_samples)?,
        };
        if query.timeout.is_zero() {
            return Err(invalid("query_timeout must be above 0".into()));
        }
        let ds = SeriesLimits::default();
        let series_limits = SeriesLimits {
            max_label_names: positive(
                "max_label_names_per_series",
                self.max_label_names_per_series,
                ds.max_label_names,
            )?,
            max_name_length: positive(
                "max_label_name_length",
                self.max_label_name_length,
                ds.max_name_length,
            )?,
            max_value_length: positive(
                "max_label_value_length",
                self.max_label_value_length,
                ds.max_value_length,
            )?,
            max_future_ms: self
                .max_future_skew
                .map(|d| d.as_std().as_millis().min(i64::MAX as u128) as i64)
                .unwrap_or(ds.max_future_ms),
            max_series_per_request: positive(
                "remote_write_max_series_per_request",
                self.remote_write_max_series_per_request,
                ds.max_series_per_request,
            )?,
        };
        let evaluation_interval = self
            .evaluation_interval
            .unwrap_or(Duration::from_secs(60))
            .as_std();
        if evaluation_interval.is_zero() {
            return Err(invalid("evaluation_interval must be above 0".into()));
        }
        for am in &self.alertmanager {
            if !(am.starts_with("http://") || am.starts_with("https://")) {
                return Err(invalid(format!(
                    "alertmanager {am:?} must be an http(s) URL like http://alertmanager:9093"
                )));
            }
        }
        let mut external_labels = vigil_common::Labels::default();
        for kv in &self.external_labels {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| invalid(format!("external_label {kv:?} is not name=value")))?;
            if !valid_label_name(k) {
                return Err(invalid(format!(
                    "external_label name {k:?} is not a valid label name"
                )));
            }
            external_labels = external_labels.with(k, v);
        }
        let push = crate::push::PushLimits {
            max_body_bytes: self
                .push_max_body_bytes
                .map(|b| b.0)
                .unwrap_or(32 << 20)
                .try_into()
                .unwrap_or(usize::MAX),
            max_line_bytes: self
                .push_max_line_bytes
                .map(|b| b.0)
                .unwrap_or(256 << 10)
                .try_into()
                .unwrap_or(usize::MAX),
            series: series_limits,
            retention,
            log_retention: self
                .log_retention
                .unwrap_or(Duration::from_secs(24 * 3600))
                .as_std(),
        };
        if push.max_body_bytes < 1024 {
            return Err(invalid(format!(
                "push_max_body_bytes {} is below 1KiB",
                push.max_body_bytes
            )));
        }
        if push.max_line_bytes == 0 {
            return Err(invalid("push_max_line_bytes must be above 0".into()));
        }
        let external_url = match self.external_url {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                u.trim_end_matches('/').to_string()
            }
            Some(u) => {
                return Err(invalid(format!(
                    "external_url {u:?} must be an http(s) URL"
                )));
            }
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "localhost".into());
                format!("http://{host}:{}", http_listen.port())
            }
        };
        let mut forward = ForwardConfig {
            remote_write: self.remote_write,
            loki_push: self.loki_push,
            otlp_export: self.otlp_export,
            wal_max_bytes: self.forward_wal_max_bytes.map(|b| b.0).unwrap_or(10 << 30),
        };
        let url =
            |key: &str, u: &str| HttpUrl::parse(u).map_err(|e| invalid(format!("{key}: {e}")));
        for u in &self.remote_write_url {
            forward
                .remote_write
                .push(RemoteWriteConfig::from_url(url("remote_write_url", u)?));
        }
        for u in &self.loki_push_url {
            let mut c: LokiPushConfig = serde_json::from_value(serde_json::json!({ "url": u }))
                .map_err(|e| invalid(format!("loki_push_url: {e}")))?;
            c.url = url("loki_push_url", u)?;
            forward.loki_push.push(c);
        }
        for u in &self.otlp_export_url {
            let mut c: OtlpExportConfig =
                serde_json::from_value(serde_json::json!({ "endpoint": u }))
                    .map_err(|e| invalid(format!("otlp_export_url: {e}")))?;
            c.endpoint = url("otlp_export_url", u)?;
            forward.otlp_export.push(c);
        }
        forward.check_names().map_err(invalid)?;
        let memory_pressure_fraction = self.memory_pressure_fraction.unwrap_or(0.8);
        if !(memory_pressure_fraction > HYSTERESIS_FLOOR && memory_pressure_fraction <= 1.0) {
            return Err(invalid(format!(
                "memory_pressure_fraction {memory_pressure_fraction} must be above {HYSTERESIS_FLOOR} and at most 1"
            )));
        }
        let local_store = self.local_store.unwrap_or(true);
        let query_url = match &self.query_url {
            Some(u) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(invalid(format!(
                        "query_url {u:?} must be an http(s) URL like http://vmselect:8481/select/0/prometheus"
                    )));
                }
                let mut headers = Vec::with_capacity(self.query_header.len());
                for h in &self.query_header {
                    let (k, v) = h.split_once(':').ok_or_else(|| {
                        invalid(format!("query_header {h:?} is not `Name: value`"))
                    })?;
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
                Some((u.clone(), headers))
            }
            None if !self.query_header.is_empty() => {
                return Err(invalid("query_header needs query_url".into()));
            }
            None => None,
        };
        if !local_store {
            if forward.remote_write.is_empty() && forward.otlp_export.is_empty() {
                return Err(invalid(
                    "local_store false needs somewhere to forward to (remote_write_url, remote_write: or otlp_export)".into(),
                ));
            }
            if query_url.is_none() && (!self.rules.is_empty() || self.actions.is_some()) {
                return Err(invalid(
                    "with local_store false, rules and actions need query_url (there is no local data to query)".into(),
                ));
            }
        }
        Ok(Config {
            given,
            http_listen,
            grpc_listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            token,
            tls,
            auth,
            max_message_bytes: max_message_bytes as usize,
            retention,
            log_retention: self
                .log_retention
                .unwrap_or(Duration::from_secs(24 * 3600))
                .as_std(),
            log_max_bytes: self.log_max_bytes.map(|b| b.0).unwrap_or(10 << 30),
            max_series,
            max_series_per_agent,
            memory_budget: self.memory_budget.map(|b| b.0).unwrap_or(0),
            min_free_disk: self.min_free_disk.map(|b| b.0).unwrap_or(64 << 20),
            memory_limit: self.memory_limit.map(|b| b.0),
            memory_pressure_fraction,
            out_of_order_window: self
                .out_of_order_window
                .map(|d| d.as_std())
                .unwrap_or_default(),
            push,
            http_limits,
            grpc_limits,
            query,
            remote_write_receiver: self.remote_write_receiver.unwrap_or(true),
            series_limits,
            rules: self.rules,
            alertmanagers: self.alertmanager,
            evaluation_interval,
            external_url,
            external_labels,
            self_scrape_interval: self
                .self_scrape_interval
                .unwrap_or(Duration::from_secs(15))
                .as_std(),
            actions: self.actions,
            shutdown_timeout: self
                .shutdown_timeout
                .unwrap_or(Duration::from_secs(10))
                .as_std(),
            log_format: self.log_format.unwrap_or_default(),
            log_level: self.log_level,
            forward,
            local_store,
            query_url,
            election,
        })
    }

    /// The `leader_election*` settings, validated.
    fn election(&self) -> Result<crate::fleet::leader::Election, ConfigError> {
        use crate::fleet::kube_lease::LeaseTarget;
        use crate::fleet::leader::{Election, default_identity};
        use crate::fleet::lease::Timings;
        let invalid = ConfigError::Invalid;
        let d = Timings::default();
        let timings = Timings {
            lease_duration: self
                .leader_election_lease_duration
                .map_or(d.lease_duration, |x| x.as_std()),
            renew_deadline: self
                .leader_election_renew_deadline
                .map_or(d.renew_deadline, |x| x.as_std()),
            retry_period: self
                .leader_election_retry_period
                .map_or(d.retry_period, |x| x.as_std()),
        };
        let identity = self
            .leader_election_identity
            .clone()
            .unwrap_or_else(default_identity);
        if identity.is_empty() {
            return Err(invalid("leader_election_identity is empty".into()));
        }
        let mode = self.leader_election.as_deref().unwrap_or("always");
        if mode != "lock-file" && self.leader_election_lock_file.is_some() {
            return Err(invalid(format!(
                "leader_election_lock_file is for leader_election lock-file, not {mode}"
            )));
        }
        Ok(match mode {
            "always" => Election::Always,
            "never" => Election::Never,
            "kubernetes-lease" => {
                timings.validate().map_err(invalid)?;
                Election::KubernetesLease {
                    target: LeaseTarget {
                        api_server: self.leader_election_api_server.clone(),
                        token_file: self.leader_election_token_file.clone(),
                        ca_file: self.leader_election_ca_file.clone(),
                        namespace: self.leader_election_lease_namespace.clone(),
                        name: self
                            .leader_election_lease_name
                            .clone()
                            .unwrap_or_else(|| "vigil-collector".into()),
                    },
                    identity,
                    timings,
                }
            }
            "lock-file" => Election::LockFile {
                path: self.leader_election_lock_file.clone().ok_or_else(|| {
                    invalid("leader_election lock-file needs leader_election_lock_file".into())
                })?,
                identity,
                retry_period: timings.retry_period,
            },
            other => {
                return Err(invalid(format!(
                    "leader_election {other:?} is not one of always, never, kubernetes-lease, lock-file"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Settings::default().validate().unwrap();
        assert_eq!(c.http_listen.port(), 9490);
        assert_eq!(c.grpc_listen.port(), 9491);
        assert_eq!(c.retention, std::time::Duration::from_secs(86400));
    }

    #[test]
    fn fleet_settings_are_checked() {
        let c = Settings::default().validate().unwrap();
        assert!(c.local_store && c.query_url.is_none());
        assert_eq!(c.election, crate::fleet::leader::Election::Always);
        let err = |s: Settings| s.validate().unwrap_err().to_string();
        let e = err(Settings {
            local_store: Some(false),
            ..Default::default()
        });
        assert!(e.contains("forward"), "{e}");
        let e = err(Settings {
            local_store: Some(false),
            remote_write_url: vec!["http://vm:8428/api/v1/write".into()],
            rules: vec!["r.yml".into()],
            ..Default::default()
        });
        assert!(e.contains("query_url"), "{e}");
        let c = Settings {
            local_store: Some(false),
            remote_write_url: vec!["http://vm:8428/api/v1/write".into()],
            rules: vec!["r.yml".into()],
            query_url: Some("http://vm:8428".into()),
            query_header: vec!["X-Scope-OrgID: a".into()],
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(
            c.query_url,
            Some((
                "http://vm:8428".into(),
                vec![("X-Scope-OrgID".into(), "a".into())]
            ))
        );
        for (s, want) in [
            (
                Settings {
                    query_url: Some("vm:8428".into()),
                    ..Default::default()
                },
                "query_url",
            ),
            (
                Settings {
                    query_header: vec!["X: y".into()],
                    ..Default::default()
                },
                "needs query_url",
            ),
            (
                Settings {
                    leader_election: Some("raft".into()),
                    ..Default::default()
                },
                "not one of",
            ),
            (
                Settings {
                    leader_election: Some("lock-file".into()),
                    ..Default::default()
                },
                "leader_election_lock_file",
            ),
            (
                Settings {
                    leader_election: Some("kubernetes-lease".into()),
                    leader_election_renew_deadline: Some(Duration::from_secs(20)),
                    ..Default::default()
                },
                "renew_deadline",
            ),
        ] {
            let e = err(s);
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let s = Settings {
            grpc_listen: Some("x".into()),
            ..Default::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("grpc_listen")
        );
        let s = Settings {
            tls_cert: Some("a".into()),
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("tls_key"));
    }
}
