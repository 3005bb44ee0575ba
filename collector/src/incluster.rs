//! Kubernetes in-cluster settings, shared by the clients that talk to the
//! API server (the actions' executor and the fleet's Lease election): where
//! the API server is, the service account's files, and an HTTP client that
//! trusts the cluster's CA.
//!
//! Not here: tokens (each client re-reads its own, they rotate) and requests.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the service account's token, namespace and CA are mounted.
pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A file of the service account mount (`token`, `namespace`, `ca.crt`).
pub fn sa_file(name: &str) -> PathBuf {
    PathBuf::from(SA_DIR).join(name)
}

/// The API server's base URL: `explicit` (trailing `/` removed), else
/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
pub fn api_server(explicit: Option<&str>) -> Result<String, String> {
    if let Some(s) = explicit {
        return Ok(s.trim_end_matches('/').to_string());
    }
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| "KUBERNETES_SERVICE_HOST is not set (not in a cluster?)".to_string())?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    Ok(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    })
}

/// An HTTP client for `base` with every request bounded by `timeout`; over
/// https it trusts only `ca_file` (default: the service account's CA).
pub fn http_client(
    base: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    crate::tls::ensure_crypto_provider();
    let mut b = reqwest::Client::builder().timeout(timeout);
    if base.starts_with("https://") {
        let ca = ca_file.map_or_else(|| sa_file("ca.crt"), Path::to_path_buf);
        let pem = std::fs::read(&ca).map_err(|e| format!("CA {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("CA {}: {e}", ca.display()))?;
        b = b.tls_certs_only([cert]);
    }
    b.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_server_wins_and_https_needs_a_readable_ca() {
        assert_eq!(
            api_server(Some("http://127.0.0.1:8080/")).unwrap(),
            "http://127.0.0.1:8080"
        );
        let t = Duration::from_secs(1);
        assert!(http_client("http://127.0.0.1:1", None, t).is_ok());
        let err = http_client("https://k8s", Some(Path::new("/nonexistent/ca.crt")), t)
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    }
}
