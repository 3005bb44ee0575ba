//! Forwarding settings as written in the collector's YAML: `remote_write:`
//! entries in Prometheus's `remote_write` shape, `loki_push:` and
//! `otlp_export:` entries, and the HTTP client each endpoint gets (auth,
//! TLS, headers).
//!
//! Values are checked while the YAML is read (URLs, names, reserved headers,
//! ranges, relabel rules), so a mistake is reported with the file, line and
//! key by the YAML parser. Files named by the config (credentials, TLS
//! material) are read when the endpoint starts, and a failure there names
//! the endpoint and the key. Not here: sending (see the sibling modules).
//!
//! About 900 lines with its tests (the last 120): the `remote_write:`, Loki and
//! OTLP endpoint settings share one shape (queue, backoff, TLS, headers) and
//! are checked together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use vigil_common::Duration;
use vigil_common::relabel::{self, NameValidation, Relabel, RelabelConfig};

/// An http(s) URL, checked when read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HttpUrl(pub String);

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let u = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(format!(
                "{s:?}: the scheme must be http or https, not {:?}",
                u.scheme()
            ));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(format!("{s:?} has no host"));
        }
        Ok(HttpUrl(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HttpUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An endpoint name: it names the cursor file and the metrics' `remote_name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EndpointName(pub String);

impl<'de> Deserialize<'de> for EndpointName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !s.starts_with('.');
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "name {s:?}: use 1 to 64 of A-Z a-z 0-9 _ - . (not starting with .)"
            )));
        }
        Ok(EndpointName(s))
    }
}

/// Request headers set by the user. Headers the protocols reserve are refused.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl std::fmt::Debug for Headers {
    // values may be API keys: names only
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "user-agent",
    "x-prometheus-remote-write-version",
];

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<String, String>::deserialize(d)?;
        for (k, v) in &m {
            if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(serde::de::Error::custom(format!(
                    "header {k:?} is reserved (set by the protocol, or use authorization/basic_auth)"
                )));
            }
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(serde::de::Error::custom(format!(
                    "{k:?} is not a valid header name"
                )));
            }
            if http::HeaderValue::from_str(v).is_err() {
                return Err(serde::de::Error::custom(format!(
                    "header {k:?}: the value is not a valid header value"
                )));
            }
        }
        Ok(Headers(m))
    }
}

/// `authorization:` — a credential sent as `Authorization: <type> <credentials>`.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, try_from = "RawAuthorization")]
pub struct Authorization {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<PathBuf>,
}

impl TryFrom<RawAuthorization> for Authorization {
    type Error = String;
    fn try_from(r: RawAuthorization) -> Result<Self, String> {
        let kind = r.kind.unwrap_or_else(|| "Bearer".into());
        if kind.eq_ignore_ascii_case("basic") {
            return Err("authorization type Basic: use basic_auth instead".into());
        }
        if kind.is_empty() || kind.contains(char::is_whitespace) {
            return Err(format!("authorization type {kind:?} is not a single word"));
        }
        match (&r.credentials, &r.credentials_file) {
            (Some(_), Some(_)) => {
                Err("authorization: credentials and credentials_file are mutually exclusive".into())
            }
            (None, None) => Err("authorization: set credentials or credentials_file".into()),
            _ => Ok(Authorization {
                kind,
                credentials: r.credentials,
                credentials_file: r.credentials_file,
            }),
        }
    }
}

/// `basic_auth:`.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, try_from = "RawBasicAuth")]
pub struct BasicAuth {
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

impl TryFrom<RawBasicAuth> for BasicAuth {
    type Error = String;
    fn try_from(r: RawBasicAuth) -> Result<Self, String> {
        if r.password.is_some() && r.password_file.is_some() {
            return Err("basic_auth: password and password_file are mutually exclusive".into());
        }
        Ok(BasicAuth {
            username: r.username,
            password: r.password,
            password_file: r.password_file,
        })
    }
}

// secrets stay out of `check config` output and logs
impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("type", &self.kind)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<secret>"),
            )
            .field("credentials_file", &self.credentials_file)
            .finish()
    }
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// `tls_config:` (Prometheus's shape).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) that verify the server instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (instead of the URL's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// `queue_config:` (Prometheus's names and defaults).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, try_from = "RawQueueConfig")]
pub struct QueueConfig {
    /// Items (samples or log records) each shard buffers.
    pub capacity: usize,
    pub min_shards: usize,
    pub max_shards: usize,
    /// Most items in one request.
    pub max_samples_per_send: usize,
    /// A request goes out at the latest this long after its first item.
    pub batch_send_deadline: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Retry on 429 (otherwise a 429 drops the request, counted).
    pub retry_on_http_429: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 10_000,
            min_shards: 1,
            max_shards: 50,
            max_samples_per_send: 2_000,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration(std::time::Duration::from_millis(30)),
            max_backoff: Duration::from_secs(5),
            retry_on_http_429: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueueConfig {
    capacity: Option<usize>,
    min_shards: Option<usize>,
    max_shards: Option<usize>,
    max_samples_per_send: Option<usize>,
    batch_send_deadline: Option<Duration>,
    min_backoff: Option<Duration>,
    max_backoff: Option<Duration>,
    retry_on_http_429: Option<bool>,
}

impl TryFrom<RawQueueConfig> for QueueConfig {
    type Error = String;
    fn try_from(r: RawQueueConfig) -> Result<Self, String> {
        let d = QueueConfig::default();
        let q = QueueConfig {
            capacity: r.capacity.unwrap_or(d.capacity),
            min_shards: r.min_shards.unwrap_or(d.min_shards),
            max_shards: r.max_shards.unwrap_or(d.max_shards),
            max_samples_per_send: r.max_samples_per_send.unwrap_or(d.max_samples_per_send),
            batch_send_deadline: r.batch_send_deadline.unwrap_or(d.batch_send_deadline),
            min_backoff: r.min_backoff.unwrap_or(d.min_backoff),
            max_backoff: r.max_backoff.unwrap_or(d.max_backoff),
            retry_on_http_429: r.retry_on_http_429.unwrap_or(d.retry_on_http_429),
        };
        if q.min_shards == 0 || q.max_shards == 0 {
            return Err("queue_config: min_shards and max_shards must be at least 1".into());
        }
        if q.min_shards > q.max_shards {
            return Err(format!(
                "queue_config: min_shards {} is above max_shards {}",
                q.min_shards, q.max_shards
            ));
        }
        if q.max_shards > 1000 {
            return Err(format!(
                "queue_config: max_shards {} is above 1000",
                q.max_shards
            ));
        }
        if q.max_samples_per_send == 0 || q.max_samples_per_send > 1_000_000 {
            return Err(format!(
                "queue_config: max_samples_per_send {} is not in 1..=1000000",
                q.max_samples_per_send
            ));
        }
        if q.capacity < q.max_samples_per_send {
            return Err(format!(
                "queue_config: capacity {} is below max_samples_per_send {}",
                q.capacity, q.max_samples_per_send
            ));
        }
        if q.capacity > 10_000_000 {
            return Err(format!(
                "queue_config: capacity {} is above 10000000",
                q.capacity
            ));
        }
        if q.batch_send_deadline.as_std().is_zero() {
            return Err("queue_config: batch_send_deadline must be above 0".into());
        }
        if q.min_backoff.as_std().is_zero() || q.min_backoff.as_std() > q.max_backoff.as_std() {
            return Err(format!(
                "queue_config: min_backoff {} must be above 0 and at most max_backoff {}",
                q.min_backoff, q.max_backoff
            ));
        }
        Ok(q)
    }
}

/// `metadata_config:`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    #[serde(default = "yes")]
    pub send: bool,
    #[serde(default = "one_minute")]
    pub send_interval: Duration,
}

fn yes() -> bool {
    true
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            send: true,
            send_interval: one_minute(),
        }
    }
}

/// Which remote-write message to send.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum ProtobufMessage {
    /// Remote write 1.0.
    #[default]
    #[serde(rename = "prometheus.WriteRequest")]
    V1,
    /// Remote write 2.0; falls back to 1.0 when the receiver does not take it.
    #[serde(rename = "io.prometheus.write.v2.Request")]
    V2,
}

/// `write_relabel_configs:` — compiled while reading, so a bad rule is
/// reported with its line.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct WriteRelabel {
    pub configs: Vec<RelabelConfig>,
    #[serde(skip)]
    pub compiled: Arc<Vec<Relabel>>,
}

impl PartialEq for WriteRelabel {
    fn eq(&self, o: &Self) -> bool {
        self.configs == o.configs
    }
}

impl<'de> Deserialize<'de> for WriteRelabel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let configs = Vec::<RelabelConfig>::deserialize(d)?;
        let compiled = relabel::compile(&configs, NameValidation::Legacy)
            .map_err(|e| serde::de::Error::custom(format!("write_relabel_configs: {e}")))?;
        Ok(WriteRelabel {
            configs,
            compiled: Arc::new(compiled),
        })
    }
}

/// One `remote_write:` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    pub url: HttpUrl,
    /// Names the cursor and the metrics [default: derived from the URL].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<EndpointName>,
    /// Per-request timeout [default: 30s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub headers: Headers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub write_relabel_configs: WriteRelabel,
    #[serde(default, skip_serializing_if = "is_default")]
    pub queue_config: QueueConfig,
    #[serde(default, skip_serializing_if = "is_default")]
    pub metadata_config: MetadataConfig,
    #[serde(default, skip_serializing_if = "is_default")]
    pub protobuf_message: ProtobufMessage,
}

impl RemoteWriteConfig {
    pub fn from_url(url: HttpUrl) -> Self {
        RemoteWriteConfig {
            url,
            name: None,
            remote_timeout: None,
            headers: Headers::default(),
            authorization: None,
            basic_auth: None,
            tls_config: None,
            write_relabel_configs: WriteRelabel::default(),
            queue_config: QueueConfig::default(),
            metadata_config: MetadataConfig::default(),
            protobuf_message: ProtobufMessage::V1,
        }
    }
}

/// One `loki_push:` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LokiPushConfig {
    /// The push URL, e.g. `http://loki:3100/loki/api/v1/push`.
    pub url: HttpUrl,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<EndpointName>,
    /// Sent as `X-Scope-OrgID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub headers: Headers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsConfig>,
    /// Batching and retries; `max_samples_per_send` counts log lines.
    #[serde(default, skip_serializing_if = "is_default")]
    pub queue_config: QueueConfig,
}

/// Compression of OTLP requests.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Gzip,
}

/// Which signals an OTLP exporter sends.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Metrics,
    Logs,
}

fn both_signals() -> Vec<Signal> {
    vec![Signal::Metrics, Signal::Logs]
}

/// One `otlp_export:` entry (OTLP/HTTP, protobuf).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpExportConfig {
    /// Base URL; requests go to `<endpoint>/v1/metrics` and `<endpoint>/v1/logs`.
    pub endpoint: HttpUrl,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<EndpointName>,
    #[serde(default = "both_signals")]
    pub signals: Vec<Signal>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub headers: Headers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub queue_config: QueueConfig,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Everything forwarding was configured with.
#[derive(Clone, Debug, Default)]
pub struct ForwardConfig {
    pub remote_write: Vec<RemoteWriteConfig>,
    pub loki_push: Vec<LokiPushConfig>,
    pub otlp_export: Vec<OtlpExportConfig>,
    /// Most bytes of WAL kept below the last checkpoint for cursors.
    pub wal_max_bytes: u64,
}

/// A default name from a URL: stable, so the cursor survives other edits.
pub fn default_name(prefix: &str, url: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(url.as_bytes());
    format!("{prefix}-{:06x}", h & 0xff_ffff)
}

impl ForwardConfig {
    pub fn is_empty(&self) -> bool {
        self.remote_write.is_empty() && self.loki_push.is_empty() && self.otlp_export.is_empty()
    }

    /// Every endpoint's name (given or derived); two endpoints may not
    /// share one.
    pub fn check_names(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        let names = self
            .remote_write
            .iter()
            .map(|r| {
                r.name
                    .as_ref()
                    .map(|n| n.0.clone())
                    .unwrap_or_else(|| default_name("rw", &r.url.0))
            })
            .chain(self.loki_push.iter().map(|r| {
                r.name
                    .as_ref()
                    .map(|n| n.0.clone())
                    .unwrap_or_else(|| default_name("loki", &r.url.0))
            }))
            .chain(self.otlp_export.iter().map(|r| {
                r.name
                    .as_ref()
                    .map(|n| n.0.clone())
                    .unwrap_or_else(|| default_name("otlp", &r.endpoint.0))
            }));
        for n in names {
            if !seen.insert(n.clone()) {
                return Err(format!(
                    "two forwarding endpoints are named {n:?}: give each a distinct name"
                ));
            }
        }
        Ok(())
    }
}

/// Why an endpoint's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{endpoint}: {key}: {message}")]
pub struct ClientError {
    pub endpoint: String,
    pub key: &'static str,
    pub message: String,
}

/// Reads a secret file (surrounding whitespace trimmed).
pub fn read_secret(path: &std::path::Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// The HTTP client of one endpoint.
pub fn build_client(
    endpoint: &str,
    url: &str,
    tls: Option<&TlsConfig>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, ClientError> {
    crate::tls::ensure_crypto_provider();
    let err = |key: &'static str, message: String| ClientError {
        endpoint: endpoint.to_string(),
        key,
        message,
    };
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("vigil-collector/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = tls {
        if !url.starts_with("https://") {
            return Err(err(
                "tls_config",
                format!("set, but {url:?} is not an https URL"),
            ));
        }
        if let Some(p) = &t.ca_file {
            let pem =
                std::fs::read(p).map_err(|e| err("ca_file", format!("{}: {e}", p.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| err("ca_file", format!("{}: {e}", p.display())))?;
            if certs.is_empty() {
                return Err(err("ca_file", format!("{}: no certificate", p.display())));
            }
            b = b.tls_certs_only(certs);
        }
        match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => {
                let mut pem = std::fs::read(c)
                    .map_err(|e| err("cert_file", format!("{}: {e}", c.display())))?;
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(k)
                        .map_err(|e| err("key_file", format!("{}: {e}", k.display())))?,
                );
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| err("cert_file", format!("{}: {e}", c.display())))?;
                b = b.identity(id);
            }
            (None, None) => {}
            _ => {
                return Err(err(
                    "tls_config",
                    "cert_file and key_file go together".into(),
                ));
            }
        }
        if t.insecure_skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        if let Some(name) = &t.server_name {
            // the certificate is checked against `server_name`; the
            // connection still goes to the URL's address
            let u = reqwest::Url::parse(url).map_err(|e| err("url", e.to_string()))?;
            let host = u.host_str().unwrap_or_default().to_string();
            if host != *name {
                let port = u.port_or_known_default().unwrap_or(443);
                let addrs: Vec<std::net::SocketAddr> =
                    std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                        .map_err(|e| err("url", format!("cannot resolve {host}: {e}")))?
                        .collect();
                b = b.resolve_to_addrs(name, &addrs);
            }
        }
    }
    b.build().map_err(|e| err("tls_config", e.to_string()))
}

/// The URL requests go to: with `server_name`, the host is replaced by it
/// (and resolved to the URL's own address by the client, see
/// [`build_client`]), so TLS verifies the certificate against that name.
pub fn request_url(url: &str, tls: Option<&TlsConfig>) -> String {
    match tls.and_then(|t| t.server_name.as_ref()) {
        Some(name) => match reqwest::Url::parse(url) {
            Ok(mut u) => {
                if u.set_host(Some(name)).is_ok() {
                    u.to_string()
                } else {
                    url.to_string()
                }
            }
            Err(_) => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// How a request authenticates.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    #[default]
    None,
    Authorization(Authorization),
    Basic(BasicAuth),
}

impl Auth {
    pub fn from_config(
        endpoint: &str,
        authorization: Option<&Authorization>,
        basic: Option<&BasicAuth>,
    ) -> Result<Auth, ClientError> {
        let a = match (authorization, basic) {
            (Some(_), Some(_)) => {
                return Err(ClientError {
                    endpoint: endpoint.into(),
                    key: "authorization",
                    message: "authorization and basic_auth are mutually exclusive".into(),
                });
            }
            (Some(a), None) => Auth::Authorization(a.clone()),
            (None, Some(b)) => Auth::Basic(b.clone()),
            (None, None) => Auth::None,
        };
        // files must be readable now; they are re-read per request (rotation)
        a.header().map_err(|message| ClientError {
            endpoint: endpoint.into(),
            key: match a {
                Auth::Basic(_) => "basic_auth",
                _ => "authorization",
            },
            message,
        })?;
        Ok(a)
    }

    /// The `Authorization` header value, reading credential files now.
    pub fn header(&self) -> Result<Option<String>, String> {
        use base64::Engine as _;
        match self {
            Auth::None => Ok(None),
            Auth::Authorization(a) => {
                let cred = match (&a.credentials, &a.credentials_file) {
                    (Some(c), _) => c.clone(),
                    (None, Some(p)) => {
                        read_secret(p).map_err(|e| format!("{}: {e}", p.display()))?
                    }
                    (None, None) => String::new(),
                };
                Ok(Some(format!("{} {cred}", a.kind)))
            }
            Auth::Basic(b) => {
                let pw = match (&b.password, &b.password_file) {
                    (Some(p), _) => p.clone(),
                    (None, Some(p)) => {
                        read_secret(p).map_err(|e| format!("{}: {e}", p.display()))?
                    }
                    (None, None) => String::new(),
                };
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{pw}", b.username));
                Ok(Some(format!("Basic {token}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        remote_write: Vec<RemoteWriteConfig>,
    }

    fn parse(y: &str) -> Result<Doc, String> {
        vigil_common::config::parse_yaml::<Doc>(y)
    }

    #[test]
    fn prometheus_shaped_entries_read_with_defaults() {
        let d = parse(
            "remote_write:\n  - url: http://vm:8428/api/v1/write\n    headers:\n      X-Scope-OrgID: t1\n    queue_config:\n      max_shards: 4\n    write_relabel_configs:\n      - source_labels: [__name__]\n        regex: go_.*\n        action: drop\n",
        )
        .unwrap();
        let r = &d.remote_write[0];
        assert_eq!(r.queue_config.max_shards, 4);
        assert_eq!(r.queue_config.capacity, 10_000);
        assert_eq!(r.headers.0["X-Scope-OrgID"], "t1");
        assert_eq!(r.write_relabel_configs.compiled.len(), 1);
        assert_eq!(r.protobuf_message, ProtobufMessage::V1);
        assert!(r.metadata_config.send);
    }

    #[test]
    fn mistakes_name_the_line_and_the_key() {
        for (y, line, needle) in [
            ("remote_write:\n  - url: ftp://x/\n", "2", "scheme"),
            (
                "remote_write:\n  - url: http://x/\n    queue_config:\n      min_shards: 5\n      max_shards: 2\n",
                "4",
                "min_shards",
            ),
            (
                "remote_write:\n  - url: http://x/\n    headers:\n      Content-Type: x\n",
                "4",
                "reserved",
            ),
            (
                "remote_write:\n  - url: http://x/\n    write_relabel_configs:\n      - action: hashmod\n        target_label: x\n",
                "4",
                "modulus",
            ),
            (
                "remote_write:\n  - url: http://x/\n    nope: 1\n",
                "3",
                "nope",
            ),
            (
                "remote_write:\n  - url: http://x/\n    authorization:\n      credentials: a\n      credentials_file: /b\n",
                "4",
                "mutually exclusive",
            ),
            (
                "remote_write:\n  - url: http://x/\n    protobuf_message: v3\n",
                "3",
                "protobuf_message",
            ),
        ] {
            let e = parse(y).unwrap_err();
            assert!(e.contains(needle), "{y}: {e}");
            assert!(
                e.contains(&format!("line {line}")) || e.contains(&format!(":{line}:")),
                "{y}: no line {line} in {e}"
            );
        }
    }

    #[test]
    fn names_are_unique_and_stable() {
        let u = HttpUrl::parse("http://a/").unwrap();
        let c = ForwardConfig {
            remote_write: vec![
                RemoteWriteConfig::from_url(u.clone()),
                RemoteWriteConfig::from_url(u),
            ],
            ..Default::default()
        };
        assert!(c.check_names().unwrap_err().contains("rw-"));
        assert_eq!(
            default_name("rw", "http://a/"),
            default_name("rw", "http://a/")
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let d = parse(
            "remote_write:\n  - url: http://x/\n    basic_auth: {username: u, password: hunter2}\n",
        )
        .unwrap();
        assert!(!format!("{d:?}").contains("hunter2"));
        let d =
            parse("remote_write:\n  - url: http://x/\n    authorization: {credentials: tok3n}\n")
                .unwrap();
        assert!(!format!("{d:?}").contains("tok3n"));
    }

    #[test]
    fn auth_headers() {
        let a = Auth::Basic(BasicAuth {
            username: "u".into(),
            password: Some("p".into()),
            password_file: None,
        });
        assert_eq!(a.header().unwrap().unwrap(), "Basic dTpw");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t");
        std::fs::write(&f, "tok\n").unwrap();
        let a = Auth::Authorization(Authorization {
            kind: "Bearer".into(),
            credentials: None,
            credentials_file: Some(f),
        });
        assert_eq!(a.header().unwrap().unwrap(), "Bearer tok");
    }
}
