//! The Docker Engine API over a unix socket (Podman's `podman system service`
//! serves the same API): restart a container, and scale a service — the
//! containers sharing a label such as `com.docker.compose.service=web` — by
//! cloning one replica's configuration or removing the newest replica.
//! [`DockerExecutor`] is the Docker [`Executor`]: a restart names a container
//! by `container_id` (or `name`); a workload is `{label: L, value: V}` or
//! `{service: V}` (with the executor's `service_label`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;
use vigil_common::Labels;

use super::executor::{Action, ActionRequest, Executor, ExecutorError, Outcome};

impl From<DockerError> for ExecutorError {
    fn from(e: DockerError) -> Self {
        ExecutorError::Api {
            executor: "docker",
            source: Box::new(e),
        }
    }
}

/// The Docker/Podman executor.
pub struct DockerExecutor {
    client: DockerClient,
    /// Seconds a restart gives the container to stop before the kill.
    stop_timeout_s: u32,
    service_label: String,
}

impl DockerExecutor {
    pub fn new(socket: &Path, timeout: Duration, stop_timeout_s: u32, service_label: &str) -> Self {
        DockerExecutor {
            client: DockerClient::new(socket, timeout),
            stop_timeout_s,
            service_label: service_label.to_string(),
        }
    }
}

/// `{label: L, value: V}` or `{service: V}` (with `default_label`).
pub fn docker_service(w: &Labels, default_label: &str) -> Option<(String, String)> {
    if let Some(v) = w.get("value") {
        let l = w.get("label").unwrap_or(default_label);
        return Some((l.to_string(), v.to_string()));
    }
    w.get("service")
        .map(|v| (default_label.to_string(), v.to_string()))
}

impl Executor for DockerExecutor {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn execute<'a>(&'a self, req: &'a ActionRequest) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match &req.action {
                Action::Restart { target } => {
                    let Some(id) = target
                        .get("container_id")
                        .or_else(|| target.get("name"))
                        .filter(|s| !s.is_empty())
                    else {
                        return Outcome::Failed("target has no container_id or name".into());
                    };
                    match self.client.restart(id, self.stop_timeout_s).await {
                        Ok(()) => Outcome::Delivered(format!("restarted container {id}")),
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                }
                Action::Rollback {
                    workload,
                    from_image,
                    to_image,
                } => {
                    let Some((label, value)) = docker_service(workload, &self.service_label) else {
                        return Outcome::Failed("workload names no service".into());
                    };
                    match self
                        .client
                        .rollback_service(&label, &value, from_image, to_image)
                        .await
                    {
                        Ok(n) => Outcome::Delivered(format!(
                            "service {label}={value}: {n} replicas of {from_image} replaced by {to_image}, one at a time"
                        )),
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                }
                Action::Scale { workload, to, .. } => {
                    let Some((label, value)) = docker_service(workload, &self.service_label) else {
                        return Outcome::Failed("workload names no service".into());
                    };
                    match self.client.scale_service(&label, &value, *to).await {
                        Ok(n) => Outcome::Delivered(format!(
                            "service {label}={value} now has {n} replicas"
                        )),
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                }
            }
        })
    }

    fn replicas<'a>(
        &'a self,
        workload: &'a Labels,
    ) -> BoxFuture<'a, Result<Option<u32>, ExecutorError>> {
        Box::pin(async move {
            let Some((label, value)) = docker_service(workload, &self.service_label) else {
                return Ok(None);
            };
            let l = self.client.list_service(&label, &value).await?;
            Ok(Some(l.len() as u32))
        })
    }
}

/// Why a Docker API call failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("docker API {method} {path}: {message}")]
    Http {
        method: String,
        path: String,
        message: String,
    },
    #[error("docker API {method} {path} answered {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("docker API {method} {path} timed out after {timeout:?}")]
    Timeout {
        method: String,
        path: String,
        timeout: Duration,
    },
    #[error("service {label}={value} has no container to clone")]
    NoReplica { label: String, value: String },
}

/// A client of one Engine API socket.
#[derive(Clone, Debug)]
pub struct DockerClient {
    socket: PathBuf,
    timeout: Duration,
}

/// A container as `GET /containers/json` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    #[serde(rename = "Created", default)]
    pub created: i64,
    #[serde(rename = "State", default)]
    pub state: String,
}

impl DockerClient {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        DockerClient {
            socket: socket.into(),
            timeout,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request on a fresh connection (the API is cheap to connect to and
    /// this keeps a wedged connection from affecting the next call).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Bytes), DockerError> {
        let m = method.to_string();
        let fut = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
            let http_err = |e: String| DockerError::Http {
                method: m.clone(),
                path: path.to_string(),
                message: e,
            };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| http_err(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let bytes = match &body {
                Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| http_err(e.to_string()))?),
                None => Bytes::new(),
            };
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", "docker")
                .header("content-type", "application/json")
                .body(Full::new(bytes))
                .map_err(|e| http_err(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| http_err(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| http_err(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(DockerError::Timeout {
                method: m,
                path: path.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        ok: &[u16],
    ) -> Result<Bytes, DockerError> {
        let m = method.to_string();
        let (status, bytes) = self.call(method, path, body).await?;
        if ok.contains(&status.as_u16()) {
            Ok(bytes)
        } else {
            Err(DockerError::Status {
                method: m,
                path: path.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            })
        }
    }

    /// `POST /containers/{id}/restart`.
    pub async fn restart(&self, id: &str, stop_timeout_s: u32) -> Result<(), DockerError> {
        let path = format!(
            "/containers/{}/restart?t={stop_timeout_s}",
            super::path_segment(id)
        );
        self.expect(Method::POST, &path, None, &[204])
            .await
            .map(|_| ())
    }

    /// Running containers carrying `label=value`, newest first.
    pub async fn list_service(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let filters =
            serde_json::json!({"label": [format!("{label}={value}")], "status": ["running"]});
        let path = format!(
            "/containers/json?filters={}",
            super::path_segment(&filters.to_string())
        );
        let bytes = self.expect(Method::GET, &path, None, &[200]).await?;
        let list: Vec<ContainerSummary> =
            serde_json::from_slice(&bytes).map_err(|e| DockerError::Http {
                method: "GET".into(),
                path: path.clone(),
                message: format!("unreadable container list: {e}"),
            })?;
        // `Created` in the list has one-second resolution: order by the
        // inspect's nanosecond timestamp so "newest" is exact.
        let mut keyed = Vec::with_capacity(list.len());
        for c in list {
            let ns = self
                .created_ns(&c.id)
                .await
                .unwrap_or(c.created.saturating_mul(1_000_000_000));
            keyed.push((ns, c));
        }
        keyed.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.id.cmp(&a.1.id)));
        Ok(keyed.into_iter().map(|(_, c)| c).collect())
    }

    async fn created_ns(&self, id: &str) -> Result<i64, DockerError> {
        let bytes = self
            .expect(
                Method::GET,
                &format!("/containers/{}/json", super::path_segment(id)),
                None,
                &[200],
            )
            .await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| DockerError::Http {
            method: "GET".into(),
            path: "inspect".into(),
            message: e.to_string(),
        })?;
        v.get("Created")
            .and_then(Value::as_str)
            .and_then(|s| vigil_common::time::parse_rfc3339_ns(s.as_bytes()).ok())
            .ok_or_else(|| DockerError::Http {
                method: "GET".into(),
                path: "inspect".into(),
                message: "no readable Created time".into(),
            })
    }

    /// Scales the service to `to` replicas: clones the oldest replica's
    /// configuration to add, stops and removes the newest to shrink. Returns
    /// the count after the change.
    pub async fn scale_service(
        &self,
        label: &str,
        value: &str,
        to: u32,
    ) -> Result<u32, DockerError> {
        let list = self.list_service(label, value).await?;
        let current = list.len() as u32;
        if to > current {
            let template = list.last().ok_or_else(|| DockerError::NoReplica {
                label: label.to_string(),
                value: value.to_string(),
            })?;
            let inspect = self
                .expect(
                    Method::GET,
                    &format!("/containers/{}/json", super::path_segment(&template.id)),
                    None,
                    &[200],
                )
                .await?;
            let inspect: Value =
                serde_json::from_slice(&inspect).map_err(|e| DockerError::Http {
                    method: "GET".into(),
                    path: "inspect".into(),
                    message: e.to_string(),
                })?;
            for i in 0..(to - current) {
                let name = format!("{value}-vigil-{}-{i}", crate::actions::audit_id_suffix());
                let body = clone_body(&inspect);
                let created = self
                    .expect(
                        Method::POST,
                        &format!("/containers/create?name={}", super::path_segment(&name)),
                        Some(body),
                        &[200, 201],
                    )
                    .await?;
                let id = serde_json::from_slice::<Value>(&created)
                    .ok()
                    .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_string))
                    .ok_or_else(|| DockerError::Http {
                        method: "POST".into(),
                        path: "/containers/create".into(),
                        message: "no Id in the answer".into(),
                    })?;
                self.expect(
                    Method::POST,
                    &format!("/containers/{}/start", super::path_segment(&id)),
                    None,
                    &[204, 304],
                )
                .await?;
            }
        } else if to < current {
            for c in list.iter().take((current - to) as usize) {
                self.expect(
                    Method::POST,
                    &format!("/containers/{}/stop?t=10", super::path_segment(&c.id)),
                    None,
                    &[204, 304],
                )
                .await?;
                self.expect(
                    Method::DELETE,
                    &format!("/containers/{}?force=true", super::path_segment(&c.id)),
                    None,
                    &[204, 200, 404],
                )
                .await?;
            }
        }
        Ok(to)
    }
}

impl DockerClient {
    async fn inspect(&self, id: &str) -> Result<Value, DockerError> {
        let bytes = self
            .expect(
                Method::GET,
                &format!("/containers/{}/json", super::path_segment(id)),
                None,
                &[200],
            )
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| DockerError::Http {
            method: "GET".into(),
            path: "inspect".into(),
            message: e.to_string(),
        })
    }

    /// Puts the service back on `to_image`: each running replica not on it
    /// (on `from_image`, or any other) is replaced one at a time — a clone of
    /// it on `to_image` is created and started and seen running before the
    /// old one is stopped and removed, so the service never has fewer
    /// replicas serving than before. Returns how many were replaced.
    pub async fn rollback_service(
        &self,
        label: &str,
        value: &str,
        from_image: &str,
        to_image: &str,
    ) -> Result<u32, DockerError> {
        let list = self.list_service(label, value).await?;
        let mut replaced = 0;
        for c in list {
            let inspect = self.inspect(&c.id).await?;
            let image = inspect
                .pointer("/Config/Image")
                .and_then(Value::as_str)
                .unwrap_or("");
            if image == to_image {
                continue;
            }
            let mut body = clone_body(&inspect);
            body["Image"] = Value::String(to_image.to_string());
            let name = format!("{value}-vigil-{}", crate::actions::audit_id_suffix());
            let created = self
                .expect(
                    Method::POST,
                    &format!("/containers/create?name={}", super::path_segment(&name)),
                    Some(body),
                    &[200, 201],
                )
                .await?;
            let id = serde_json::from_slice::<Value>(&created)
                .ok()
                .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| DockerError::Http {
                    method: "POST".into(),
                    path: "/containers/create".into(),
                    message: "no Id in the answer".into(),
                })?;
            self.expect(
                Method::POST,
                &format!("/containers/{}/start", super::path_segment(&id)),
                None,
                &[204, 304],
            )
            .await?;
            // the new replica must be running before the old one goes
            let mut running = false;
            for _ in 0..50 {
                let v = self.inspect(&id).await?;
                if v.pointer("/State/Running").and_then(Value::as_bool) == Some(true) {
                    running = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !running {
                return Err(DockerError::Http {
                    method: "POST".into(),
                    path: format!("/containers/{id}/start"),
                    message: format!(
                        "the {to_image} replica {name} is not running; {} ({image}, wanted gone: {from_image}) left in place",
                        c.id
                    ),
                });
            }
            self.expect(
                Method::POST,
                &format!("/containers/{}/stop?t=10", super::path_segment(&c.id)),
                None,
                &[204, 304],
            )
            .await?;
            self.expect(
                Method::DELETE,
                &format!("/containers/{}?force=true", super::path_segment(&c.id)),
                None,
                &[204, 200, 404],
            )
            .await?;
            replaced += 1;
        }
        Ok(replaced)
    }
}

/// The create body for a clone: the template's `Config` with its
/// `HostConfig`, minus what must be unique per container.
fn clone_body(inspect: &Value) -> Value {
    let mut config = inspect
        .get("Config")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(o) = config.as_object_mut() {
        o.remove("Hostname");
        o.remove("Domainname");
        if let Some(image) = inspect.get("Config").and_then(|c| c.get("Image")).cloned() {
            o.insert("Image".into(), image);
        }
        if let Some(mut hc) = inspect.get("HostConfig").cloned() {
            normalize_ulimits(&mut hc);
            // inspect reports a --cpus limit both as NanoCpus and as the
            // period/quota it became; create accepts only one of them
            if hc.get("NanoCpus").and_then(Value::as_i64).unwrap_or(0) > 0
                && let Some(o) = hc.as_object_mut()
            {
                o.remove("CpuPeriod");
                o.remove("CpuQuota");
            }
            o.insert("HostConfig".into(), hc);
        }
    }
    config
}

/// Podman's inspect names ulimits `RLIMIT_NOFILE` but its create (like
/// Docker's) wants `nofile`: normalize so a clone is accepted by both.
fn normalize_ulimits(hc: &mut Value) {
    if let Some(list) = hc.get_mut("Ulimits").and_then(Value::as_array_mut) {
        for u in list {
            if let Some(name) = u.get("Name").and_then(Value::as_str) {
                let n = name
                    .strip_prefix("RLIMIT_")
                    .unwrap_or(name)
                    .to_ascii_lowercase();
                u["Name"] = Value::String(n);
            }
        }
    }
}

/// Percent-encodes a path or query component.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_body_keeps_config_and_host_config() {
        let inspect = serde_json::json!({
            "Id": "x", "Name": "/web-1",
            "Config": {"Image": "localhost/bb:1", "Hostname": "abc", "Cmd": ["sh"], "Labels": {"com.docker.compose.service": "web"}},
            "HostConfig": {"NanoCpus": 500000000, "CpuPeriod": 100000, "CpuQuota": 50000, "Memory": 67108864,
                           "Ulimits": [{"Name": "RLIMIT_NOFILE", "Soft": 1024, "Hard": 1024}]}
        });
        let b = clone_body(&inspect);
        assert_eq!(b["Image"], "localhost/bb:1");
        assert!(b.get("Hostname").is_none());
        assert_eq!(b["HostConfig"]["Memory"], 67108864);
        assert_eq!(b["Labels"]["com.docker.compose.service"], "web");
        assert_eq!(b["HostConfig"]["Ulimits"][0]["Name"], "nofile");
        assert!(
            b["HostConfig"].get("CpuQuota").is_none() && b["HostConfig"]["NanoCpus"] == 500000000
        );
    }

    #[test]
    fn encodes_components() {
        assert_eq!(
            crate::actions::path_segment("{\"a\":1}"),
            "%7B%22a%22%3A1%7D"
        );
        assert_eq!(crate::actions::path_segment("abc-1_2.3"), "abc-1_2.3");
    }

    #[tokio::test]
    async fn missing_socket_is_a_clear_error() {
        let c = DockerClient::new("/nonexistent/docker.sock", Duration::from_secs(1));
        let e = c.restart("abc", 1).await.unwrap_err().to_string();
        assert!(e.contains("/nonexistent/docker.sock"), "{e}");
    }
}
