//! The Kubernetes Lease (`coordination.k8s.io/v1`) as the election's
//! record: `GET` reads it (404: none), `POST` creates it (409: someone was
//! faster), `PUT` replaces it only at the `resourceVersion` read (409: it
//! changed meanwhile) — the API server's optimistic concurrency is what
//! makes [`super::lease::Decision::Update`] conditional.
//!
//! Credentials are the pod's service account (token re-read for every
//! request, as it rotates; CA under
//! `/var/run/secrets/kubernetes.io/serviceaccount`) or what the settings
//! name. The RBAC it needs (get, create, update on one Lease) is in
//! `deploy/kubernetes/collector-fleet.yaml`.
//!
//! Not here: what to write ([`super::lease`]).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::lease::LeaseRecord;

/// Why a Lease call failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("leader election: {0}")]
    Config(String),
    #[error("{method} {path}: {message}")]
    Http {
        method: &'static str,
        path: String,
        message: String,
    },
    /// 409: created or changed by someone else meanwhile.
    #[error("{method} {path}: conflict (the lease changed meanwhile)")]
    Conflict { method: &'static str, path: String },
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{path}: unreadable lease: {message}")]
    Malformed { path: String, message: String },
}

impl LeaseError {
    /// A bounded label value for the error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            LeaseError::Config(_) => "config",
            LeaseError::Http { .. } => "unreachable",
            LeaseError::Conflict { .. } => "conflict",
            LeaseError::Status { .. } => "status",
            LeaseError::Malformed { .. } => "malformed",
        }
    }
}

/// Where the Lease is and how to reach the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTarget {
    /// `None`: in-cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub api_server: Option<String>,
    /// `None`: the service account's token, if present.
    pub token_file: Option<PathBuf>,
    /// `None`: the service account's CA (for https only).
    pub ca_file: Option<PathBuf>,
    /// `None`: the service account's namespace, else `default`.
    pub namespace: Option<String>,
    pub name: String,
}

/// A client of one Lease.
#[derive(Clone, Debug)]
pub struct LeaseClient {
    base: String,
    token_file: Option<PathBuf>,
    namespace: String,
    name: String,
    http: reqwest::Client,
}

impl LeaseClient {
    /// `timeout` bounds every request (it must be below the renew deadline).
    pub fn new(t: &LeaseTarget, timeout: Duration) -> Result<Self, LeaseError> {
        let base = crate::incluster::api_server(t.api_server.as_deref()).map_err(|e| {
            LeaseError::Config(if t.api_server.is_none() {
                format!("{e}; set leader_election_api_server")
            } else {
                e
            })
        })?;
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(LeaseError::Config(format!(
                "leader_election_api_server {base:?} must be an http(s) URL"
            )));
        }
        let token_file = match &t.token_file {
            Some(p) => {
                std::fs::metadata(p)
                    .map_err(|e| LeaseError::Config(format!("token file {}: {e}", p.display())))?;
                Some(p.clone())
            }
            None => {
                let p = crate::incluster::sa_file("token");
                p.exists().then_some(p)
            }
        };
        let namespace = match &t.namespace {
            Some(n) => n.clone(),
            None => std::fs::read_to_string(crate::incluster::sa_file("namespace"))
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
        };
        for (what, v) in [("namespace", &namespace), ("lease name", &t.name)] {
            if !dns_label_or_subdomain(v) {
                return Err(LeaseError::Config(format!(
                    "{what} {v:?} is not a valid Kubernetes name"
                )));
            }
        }
        let http = crate::incluster::http_client(&base, t.ca_file.as_deref(), timeout)
            .map_err(LeaseError::Config)?;
        Ok(LeaseClient {
            base,
            token_file,
            namespace,
            name: t.name.clone(),
            http,
        })
    }

    /// `namespace/name`, for logs.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn collection_path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        )
    }

    fn path(&self) -> String {
        format!("{}/{}", self.collection_path(), self.name)
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), LeaseError> {
        let m = match method {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            _ => reqwest::Method::PUT,
        };
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(p) = &self.token_file {
            // re-read: projected service-account tokens rotate
            let t = std::fs::read_to_string(p)
                .map_err(|e| LeaseError::Config(format!("token file {}: {e}", p.display())))?;
            req = req.bearer_auth(t.trim());
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let http_err = |e: reqwest::Error| LeaseError::Http {
            method,
            path: path.to_string(),
            message: e.to_string(),
        };
        let resp = req.send().await.map_err(http_err)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(http_err)?;
        Ok((status, text))
    }

    fn status_error(method: &'static str, path: String, status: u16, body: &str) -> LeaseError {
        if status == 409 {
            return LeaseError::Conflict { method, path };
        }
        LeaseError::Status {
            method,
            path,
            status,
            body: body.chars().take(300).collect(),
        }
    }

    /// The lease and its `resourceVersion`; `None` if it does not exist.
    pub async fn get(&self) -> Result<Option<(LeaseRecord, String)>, LeaseError> {
        let path = self.path();
        let (status, body) = self.call("GET", &path, None).await?;
        match status {
            404 => Ok(None),
            200 => parse_lease(&path, &body).map(Some),
            s => Err(Self::status_error("GET", path, s, &body)),
        }
    }

    /// Creates the lease; its new `resourceVersion`.
    pub async fn create(&self, r: &LeaseRecord) -> Result<String, LeaseError> {
        let path = self.collection_path();
        let body = lease_json(&self.name, &self.namespace, None, r);
        let (status, text) = self.call("POST", &path, Some(body)).await?;
        match status {
            200 | 201 => parse_lease(&path, &text).map(|(_, v)| v),
            s => Err(Self::status_error("POST", path, s, &text)),
        }
    }

    /// Replaces the lease if it is still at `version`; the new version.
    pub async fn update(&self, r: &LeaseRecord, version: &str) -> Result<String, LeaseError> {
        let path = self.path();
        let body = lease_json(&self.name, &self.namespace, Some(version), r);
        let (status, text) = self.call("PUT", &path, Some(body)).await?;
        match status {
            200 | 201 => parse_lease(&path, &text).map(|(_, v)| v),
            s => Err(Self::status_error("PUT", path, s, &text)),
        }
    }
}

/// RFC 1123 subdomain (names and namespaces of these objects).
fn dns_label_or_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The Lease object as the API server takes it.
fn lease_json(name: &str, namespace: &str, version: Option<&str>, r: &LeaseRecord) -> Value {
    let mut metadata = json!({ "name": name, "namespace": namespace });
    if let Some(v) = version {
        metadata["resourceVersion"] = json!(v);
    }
    let mut spec = json!({
        "leaseDurationSeconds": r.lease_duration_seconds,
        "acquireTime": r.acquire_time,
        "renewTime": r.renew_time,
        "leaseTransitions": r.transitions,
    });
    // a released lease has no holder (client-go writes "", which the API
    // server stores as absent)
    if !r.holder.is_empty() {
        spec["holderIdentity"] = json!(r.holder);
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    })
}

fn parse_lease(path: &str, body: &str) -> Result<(LeaseRecord, String), LeaseError> {
    let bad = |message: String| LeaseError::Malformed {
        path: path.to_string(),
        message,
    };
    let v: Value = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
    let version = v["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no metadata.resourceVersion".into()))?
        .to_string();
    let spec = &v["spec"];
    let text = |k: &str| spec[k].as_str().unwrap_or("").to_string();
    let int = |k: &str| spec[k].as_i64().unwrap_or(0).clamp(0, i32::MAX as i64) as i32;
    Ok((
        LeaseRecord {
            holder: text("holderIdentity"),
            lease_duration_seconds: int("leaseDurationSeconds"),
            acquire_time: text("acquireTime"),
            renew_time: text("renewTime"),
            transitions: int("leaseTransitions"),
        },
        version,
    ))
}

#[cfg(test)]
pub(crate) mod standin {
    //! A stand-in API server on loopback: Lease GET/POST/PUT with
    //! `resourceVersion` conflicts, every request body checked against
    //! `k8s-openapi`'s `Lease` (it must decode, and re-encode to the same
    //! JSON: no unknown or misspelled field).

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use k8s_openapi::api::coordination::v1::Lease;
    use parking_lot::Mutex;
    use serde_json::Value;

    #[derive(Default)]
    pub struct Server {
        pub lease: Mutex<Option<Value>>,
        version: AtomicU64,
        pub requests: AtomicU64,
        pub conflicts: AtomicU64,
        /// Answer every request with 503 (the API server unreachable).
        pub down: AtomicBool,
        /// Problems found in requests (must stay empty).
        pub violations: Mutex<Vec<String>>,
    }

    fn check(s: &Server, body: &str) -> Option<Value> {
        let raw: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => {
                s.violations.lock().push(format!("not JSON: {e}"));
                return None;
            }
        };
        let typed: Lease = match serde_json::from_value(raw.clone()) {
            Ok(l) => l,
            Err(e) => {
                s.violations.lock().push(format!("not a Lease: {e}: {raw}"));
                return None;
            }
        };
        let back = match serde_json::to_value(&typed) {
            Ok(v) => v,
            Err(e) => {
                s.violations
                    .lock()
                    .push(format!("Lease does not encode: {e}"));
                return None;
            }
        };
        if back != raw {
            s.violations.lock().push(format!(
                "fields k8s-openapi does not know: sent {raw}, typed {back}"
            ));
        }
        let spec = typed.spec.unwrap_or_default();
        if spec.lease_duration_seconds.unwrap_or(0) <= 0 || spec.renew_time.is_none() {
            s.violations
                .lock()
                .push(format!("lease without duration or renewTime: {raw}"));
        }
        Some(raw)
    }

    async fn get_lease(
        State(s): State<Arc<Server>>,
        Path((_ns, _name)): Path<(String, String)>,
    ) -> (StatusCode, String) {
        s.requests.fetch_add(1, Ordering::Relaxed);
        if s.down.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "{}".into());
        }
        match s.lease.lock().clone() {
            Some(v) => (StatusCode::OK, v.to_string()),
            None => (
                StatusCode::NOT_FOUND,
                r#"{"kind":"Status","code":404}"#.into(),
            ),
        }
    }

    async fn create_lease(
        State(s): State<Arc<Server>>,
        Path(ns): Path<String>,
        body: String,
    ) -> (StatusCode, String) {
        s.requests.fetch_add(1, Ordering::Relaxed);
        if s.down.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "{}".into());
        }
        let Some(mut v) = check(&s, &body) else {
            return (StatusCode::BAD_REQUEST, "{}".into());
        };
        if v["metadata"]["namespace"] != ns || v["metadata"].get("resourceVersion").is_some() {
            s.violations
                .lock()
                .push(format!("create in {ns} with wrong metadata: {v}"));
        }
        let mut slot = s.lease.lock();
        if slot.is_some() {
            s.conflicts.fetch_add(1, Ordering::Relaxed);
            return (StatusCode::CONFLICT, r#"{"reason":"AlreadyExists"}"#.into());
        }
        let rv = s.version.fetch_add(1, Ordering::Relaxed) + 1;
        v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        *slot = Some(v.clone());
        (StatusCode::CREATED, v.to_string())
    }

    async fn update_lease(
        State(s): State<Arc<Server>>,
        Path((_ns, name)): Path<(String, String)>,
        body: String,
    ) -> (StatusCode, String) {
        s.requests.fetch_add(1, Ordering::Relaxed);
        if s.down.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "{}".into());
        }
        let Some(mut v) = check(&s, &body) else {
            return (StatusCode::BAD_REQUEST, "{}".into());
        };
        if v["metadata"]["name"] != name {
            s.violations.lock().push(format!("PUT {name} with {v}"));
        }
        let mut slot = s.lease.lock();
        let Some(cur) = slot.as_ref() else {
            return (StatusCode::NOT_FOUND, "{}".into());
        };
        if v["metadata"]["resourceVersion"] != cur["metadata"]["resourceVersion"] {
            s.conflicts.fetch_add(1, Ordering::Relaxed);
            return (StatusCode::CONFLICT, r#"{"reason":"Conflict"}"#.into());
        }
        let rv = s.version.fetch_add(1, Ordering::Relaxed) + 1;
        v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        *slot = Some(v.clone());
        (StatusCode::OK, v.to_string())
    }

    /// Serves on 127.0.0.1:0; returns the base URL.
    pub async fn start(s: Arc<Server>) -> String {
        let app = axum::Router::new()
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(update_lease),
            )
            .with_state(s);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    fn target(base: &str) -> LeaseTarget {
        LeaseTarget {
            api_server: Some(base.to_string()),
            token_file: None,
            ca_file: None,
            namespace: Some("vigil".into()),
            name: "vigil-collector".into(),
        }
    }

    fn record(holder: &str) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: "2026-01-02T03:04:05.000000Z".into(),
            renew_time: "2026-01-02T03:04:05.000000Z".into(),
            transitions: 0,
        }
    }

    #[tokio::test]
    async fn get_create_update_and_conflicts_against_the_standin() {
        let s = Arc::new(standin::Server::default());
        let base = standin::start(s.clone()).await;
        let c = LeaseClient::new(&target(&base), Duration::from_secs(2)).unwrap();
        assert_eq!(c.get().await.unwrap(), None);
        let v1 = c.create(&record("a")).await.unwrap();
        // a second create loses
        assert!(matches!(
            c.create(&record("b")).await,
            Err(LeaseError::Conflict { .. })
        ));
        let (r, v) = c.get().await.unwrap().unwrap();
        assert_eq!((r, v.clone()), (record("a"), v1.clone()));
        let v2 = c.update(&record("a"), &v1).await.unwrap();
        assert_ne!(v1, v2);
        // a write at the old version is refused
        let e = c.update(&record("b"), &v1).await.unwrap_err();
        assert_eq!(e.reason(), "conflict");
        // a released lease has no holder
        c.update(&record(""), &v2).await.unwrap();
        let (r, _) = c.get().await.unwrap().unwrap();
        assert_eq!(r.holder, "");
        assert!(s.violations.lock().is_empty(), "{:?}", s.violations.lock());
        assert_eq!(s.conflicts.load(Ordering::Relaxed), 2);
        s.down.store(true, Ordering::Relaxed);
        assert_eq!(c.get().await.unwrap_err().reason(), "status");
    }

    #[test]
    fn bad_settings_are_refused_clearly() {
        let mut t = target("ftp://x");
        let e = LeaseClient::new(&t, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("http(s)"), "{e}");
        t = target("http://127.0.0.1:1");
        t.name = "Not_A_Name".into();
        let e = LeaseClient::new(&t, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("not a valid Kubernetes name"), "{e}");
        t = target("http://127.0.0.1:1");
        t.token_file = Some("/nonexistent/token".into());
        assert!(LeaseClient::new(&t, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        for body in [
            "",
            "[]",
            "{}",
            r#"{"metadata":{}}"#,
            r#"{"metadata":{"resourceVersion":7}}"#,
        ] {
            assert!(parse_lease("/p", body).is_err(), "{body}");
        }
        let (r, v) = parse_lease(
            "/p",
            r#"{"metadata":{"resourceVersion":"9"},"spec":{"holderIdentity":"x","leaseDurationSeconds":-5}}"#,
        )
        .unwrap();
        assert_eq!(
            (r.holder.as_str(), r.lease_duration_seconds, v.as_str()),
            ("x", 0, "9")
        );
    }
}
