//! Collector settings. Every setting has a YAML key (the field name), a flag
//! (`--field-name`) and an environment variable (`VIGIL_FIELD_NAME`); flags win
//! over the environment, which wins over the file. [`Settings`] is the raw,
//! all-optional layer; [`Config`] is the validated runtime value with defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vigil_common::config::ConfigError;
use vigil_common::logging::LogFormat;
use vigil_common::{ByteSize, Duration};

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

    /// Largest decoded gRPC message accepted [default: 16MiB].
    #[arg(long, env = "VIGIL_MAX_MESSAGE_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<ByteSize>,

    /// How long samples are kept [default: 24h].
    #[arg(long, env = "VIGIL_RETENTION", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,

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
}

/// Validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub token: Option<String>,
    pub tls: Option<TlsFiles>,
    pub max_message_bytes: usize,
    pub retention: std::time::Duration,
    pub actions: Option<PathBuf>,
    pub shutdown_timeout: std::time::Duration,
    pub log_format: LogFormat,
    pub log_level: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

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
        let invalid = |m: String| ConfigError::Invalid(m);
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
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(invalid("tls_cert and tls_key go together".into())),
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
        Ok(Config {
            http_listen,
            grpc_listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            token,
            tls,
            max_message_bytes: max_message_bytes as usize,
            retention,
            actions: self.actions,
            shutdown_timeout: self
                .shutdown_timeout
                .unwrap_or(Duration::from_secs(10))
                .as_std(),
            log_format: self.log_format.unwrap_or_default(),
            log_level: self.log_level,
        })
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads a token file: surrounding whitespace is trimmed, an empty file is an error.
pub fn read_token(p: &Path) -> Result<String, ConfigError> {
    let t = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.to_path_buf(),
        source,
    })?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "token file {} is empty",
            p.display()
        )));
    }
    Ok(t)
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
