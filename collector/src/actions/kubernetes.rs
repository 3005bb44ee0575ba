//! The Kubernetes executor: scale a Deployment through its `scale`
//! subresource, restart it the way `kubectl rollout restart` does (the
//! `kubectl.kubernetes.io/restartedAt` pod-template annotation), or delete a
//! pod. It talks to the API server with the in-cluster service account (token
//! and CA under `/var/run/secrets/kubernetes.io/serviceaccount`), and refuses
//! to scale a Deployment that a HorizontalPodAutoscaler already owns — two
//! controllers fighting over `replicas` is the flapping we promise to avoid.
//! The least-privilege RBAC it needs is in `deploy/kubernetes/actions-rbac.yaml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why a Kubernetes call failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("in-cluster config: {0}")]
    Config(String),
    #[error("{method} {path}: {message}")]
    Http {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error(
        "deployment {namespace}/{name} is owned by HorizontalPodAutoscaler {hpa}; not scaling it"
    )]
    OwnedByHpa {
        namespace: String,
        name: String,
        hpa: String,
    },
    #[error("target needs {0}")]
    MissingTarget(&'static str),
}

/// How a restart is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// Patch the owning Deployment's pod template (a rolling restart).
    Rollout,
    /// Delete the pod; its controller recreates it.
    DeletePod,
}

/// A client of one API server.
#[derive(Clone, Debug)]
pub struct KubeClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl KubeClient {
    /// In-cluster settings: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service
    /// account token and CA. `api_server`, `token_file` and `ca_file`
    /// override them (tests point `api_server` at a local http:// server).
    pub fn new(
        api_server: Option<&str>,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, KubeError> {
        super::ensure_crypto_provider();
        let base = match api_server {
            Some(s) => s.trim_end_matches('/').to_string(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    KubeError::Config(
                        "KUBERNETES_SERVICE_HOST is not set (not in a cluster?)".into(),
                    )
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let default_token = PathBuf::from(SA_DIR).join("token");
        let token_path = token_file.map(Path::to_path_buf).unwrap_or(default_token);
        let token = match std::fs::read_to_string(&token_path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) if token_file.is_some() => {
                return Err(KubeError::Config(format!(
                    "token {}: {e}",
                    token_path.display()
                )));
            }
            Err(_) => None,
        };
        let mut b = reqwest::Client::builder().timeout(timeout);
        let ca_path = ca_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(SA_DIR).join("ca.crt"));
        if base.starts_with("https://") {
            let pem = std::fs::read(&ca_path)
                .map_err(|e| KubeError::Config(format!("CA {}: {e}", ca_path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| KubeError::Config(format!("CA {}: {e}", ca_path.display())))?;
            b = b.tls_certs_only([cert]);
        }
        let http = b.build().map_err(|e| KubeError::Config(e.to_string()))?;
        Ok(KubeClient { base, token, http })
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, KubeError> {
        let url = format!("{}{path}", self.base);
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| KubeError::Http {
            method,
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let mut req = self
            .http
            .request(m, &url)
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", content_type.unwrap_or("application/json"))
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| KubeError::Http {
            method,
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(KubeError::Status {
                method,
                path: path.to_string(),
                status,
                body: text.chars().take(500).collect(),
            });
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| KubeError::Http {
            method,
            path: path.to_string(),
            message: format!("unreadable answer: {e}"),
        })
    }

    /// The HPA that scales `deployment`, if any.
    pub async fn owning_hpa(
        &self,
        namespace: &str,
        deployment: &str,
    ) -> Result<Option<String>, KubeError> {
        let list = self
            .call(
                "GET",
                &format!("/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"),
                None,
                None,
            )
            .await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|h| {
                let r = &h["spec"]["scaleTargetRef"];
                (r["kind"] == "Deployment" && r["name"] == deployment)
                    .then(|| h["metadata"]["name"].as_str().unwrap_or("").to_string())
            }))
    }

    /// Replicas the Deployment's scale subresource reports (`spec.replicas`).
    pub async fn replicas(&self, namespace: &str, deployment: &str) -> Result<u32, KubeError> {
        let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}/scale");
        let v = self.call("GET", &path, None, None).await?;
        v["spec"]["replicas"]
            .as_u64()
            .or_else(|| v["status"]["replicas"].as_u64())
            .map(|r| r as u32)
            .ok_or(KubeError::Http {
                method: "GET",
                path,
                message: "scale has no replicas".into(),
            })
    }

    /// Sets `spec.replicas` through the scale subresource, unless an HPA owns
    /// the Deployment.
    pub async fn scale(
        &self,
        namespace: &str,
        deployment: &str,
        replicas: u32,
    ) -> Result<(), KubeError> {
        if let Some(hpa) = self.owning_hpa(namespace, deployment).await? {
            return Err(KubeError::OwnedByHpa {
                namespace: namespace.into(),
                name: deployment.into(),
                hpa,
            });
        }
        let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}/scale");
        self.call(
            "PATCH",
            &path,
            Some("application/merge-patch+json"),
            Some(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .map(|_| ())
    }

    /// `kubectl rollout restart`: stamps the pod template with the time.
    pub async fn rollout_restart(
        &self,
        namespace: &str,
        deployment: &str,
        now_rfc3339: &str,
    ) -> Result<(), KubeError> {
        let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}");
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": now_rfc3339
        }}}}});
        self.call(
            "PATCH",
            &path,
            Some("application/strategic-merge-patch+json"),
            Some(patch),
        )
        .await
        .map(|_| ())
    }

    pub async fn delete_pod(&self, namespace: &str, pod: &str) -> Result<(), KubeError> {
        self.call(
            "DELETE",
            &format!("/api/v1/namespaces/{namespace}/pods/{pod}"),
            None,
            None,
        )
        .await
        .map(|_| ())
    }

    /// The Deployment that owns `pod` (pod → ReplicaSet → Deployment).
    pub async fn owning_deployment(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<Option<String>, KubeError> {
        let p = self
            .call(
                "GET",
                &format!("/api/v1/namespaces/{namespace}/pods/{pod}"),
                None,
                None,
            )
            .await?;
        let Some(rs) = owner(&p, "ReplicaSet") else {
            return Ok(None);
        };
        let r = self
            .call(
                "GET",
                &format!("/apis/apps/v1/namespaces/{namespace}/replicasets/{rs}"),
                None,
                None,
            )
            .await?;
        Ok(owner(&r, "Deployment"))
    }
}

fn owner(obj: &Value, kind: &str) -> Option<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == kind)
        .and_then(|o| o["name"].as_str())
        .map(str::to_string)
}

/// The workload a target or autoscaler names: `namespace` + `deployment`.
pub fn deployment_of(
    w: &std::collections::BTreeMap<String, String>,
) -> Result<(String, String), KubeError> {
    let ns = w
        .get("namespace")
        .filter(|s| !s.is_empty())
        .ok_or(KubeError::MissingTarget("namespace"))?;
    let d = w
        .get("deployment")
        .filter(|s| !s.is_empty())
        .ok_or(KubeError::MissingTarget("deployment"))?;
    Ok((ns.clone(), d.clone()))
}
