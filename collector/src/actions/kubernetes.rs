//! The Kubernetes executor: scale a Deployment through its `scale`
//! subresource, restart it the way `kubectl rollout restart` does (the
//! `kubectl.kubernetes.io/restartedAt` pod-template annotation), delete a
//! pod, or roll a Deployment back to its previous image the way
//! `kubectl rollout undo` does: the newest of its ReplicaSets whose pod
//! template runs the previous image gives the Deployment its template back
//! (without the `pod-template-hash` label) and its annotations, in one JSON
//! patch that first tests the Deployment's `resourceVersion`, so a change
//! made in between (a person's own rollout) makes the rollback fail rather
//! than overwrite it. A paused Deployment is refused (as `kubectl` refuses
//! it), and one that no longer runs the bad image is left alone.
//! Images are compared as references (`nginx:1.25` is
//! `docker.io/library/nginx:1.25`), per container when the workload names
//! one (`container` label), else in any container of the template. It talks to the API server with the in-cluster service account (token
//! and CA under `/var/run/secrets/kubernetes.io/serviceaccount`), and refuses
//! to scale a Deployment that a HorizontalPodAutoscaler already owns — two
//! controllers fighting over `replicas` is the flapping we promise to avoid.
//! The least-privilege RBAC it needs is in `deploy/kubernetes/actions-rbac.yaml`.
//!
//! The token file is re-read when it is older than a minute and at once when
//! the API server answers 401 (the request is then retried once), so
//! projected service-account tokens, which the kubelet rotates, keep working.
//! Every name taken from alert labels or configuration (namespace, pod,
//! deployment) is checked as Kubernetes checks it (RFC 1123 label for a
//! namespace, RFC 1123 subdomain for the others) and percent-escaped before
//! it goes into a URL; a name that fails is refused with
//! [`KubeError::InvalidName`] and nothing is sent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};
use vigil_common::Labels;

use super::executor::{Action, ActionRequest, Executor, ExecutorError, Outcome};
use super::path_segment;

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
    #[error("deployment {0} is paused; resume it before a rollback (as kubectl rollout undo asks)")]
    Paused(String),
    #[error(
        "deployment {deployment} runs neither {from_image} nor {to_image}{container}; not rolling back"
    )]
    NotOnImage {
        deployment: String,
        from_image: String,
        to_image: String,
        container: String,
    },
    #[error(
        "deployment {deployment} has no ReplicaSet left that runs {to_image}{container} (revision history pruned?)"
    )]
    NoRevision {
        deployment: String,
        to_image: String,
        container: String,
    },
    #[error("{what} {value:?} is not a valid Kubernetes name ({rule})")]
    InvalidName {
        what: &'static str,
        value: String,
        rule: &'static str,
    },
}

impl From<KubeError> for ExecutorError {
    fn from(e: KubeError) -> Self {
        ExecutorError::Api {
            executor: "kubernetes",
            source: Box::new(e),
        }
    }
}

/// A name checked as Kubernetes checks it, escaped for a URL path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    name: String,
}

impl Name {
    /// An RFC 1123 label (namespaces): at most 63 of `a-z 0-9 -`, starting
    /// and ending with a letter or digit.
    pub fn label(what: &'static str, value: &str) -> Result<Name, KubeError> {
        Self::check(
            what,
            value,
            63,
            false,
            "RFC 1123 label: a-z, 0-9, '-', at most 63",
        )
    }

    /// An RFC 1123 subdomain (pods, deployments, replica sets): at most 253
    /// of `a-z 0-9 - .`, each dot-separated part starting and ending with a
    /// letter or digit.
    pub fn subdomain(what: &'static str, value: &str) -> Result<Name, KubeError> {
        Self::check(
            what,
            value,
            253,
            true,
            "RFC 1123 subdomain: a-z, 0-9, '-', '.', at most 253",
        )
    }

    fn check(
        what: &'static str,
        value: &str,
        max: usize,
        dots: bool,
        rule: &'static str,
    ) -> Result<Name, KubeError> {
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let part_ok = |p: &[u8]| {
            !p.is_empty()
                && p.len() <= 63
                && alnum(p[0])
                && alnum(p[p.len() - 1])
                && p.iter().all(|&b| alnum(b) || b == b'-')
        };
        let ok = !value.is_empty()
            && value.len() <= max
            && if dots {
                value.split('.').all(|p| part_ok(p.as_bytes()))
            } else {
                part_ok(value.as_bytes())
            };
        if ok {
            Ok(Name {
                name: value.to_string(),
            })
        } else {
            Err(KubeError::InvalidName {
                what,
                value: value.chars().take(300).collect(),
                rule,
            })
        }
    }

    /// The name as it is.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name as one URL path segment (escaping is a second guard: a
    /// valid name needs none).
    pub fn segment(&self) -> String {
        path_segment(&self.name)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The service-account token, re-read from its file when older than
/// `max_age` or when the API server refused it.
#[derive(Debug)]
struct Token {
    path: PathBuf,
    max_age: Duration,
    cached: Mutex<Option<(String, Instant)>>,
}

impl Token {
    fn read(&self) -> Result<String, KubeError> {
        std::fs::read_to_string(&self.path)
            .map(|t| t.trim().to_string())
            .map_err(|e| KubeError::Config(format!("token {}: {e}", self.path.display())))
    }

    /// The current token (from the file when the cached one is too old).
    fn get(&self, force: bool) -> Result<String, KubeError> {
        let mut c = self.cached.lock();
        if let Some((t, at)) = c.as_ref()
            && !force
            && at.elapsed() < self.max_age
        {
            return Ok(t.clone());
        }
        let t = self.read()?;
        *c = Some((t.clone(), Instant::now()));
        Ok(t)
    }
}

/// How often the token file is re-read without a 401 (client-go's cached
/// file token source re-reads after a minute too).
const TOKEN_MAX_AGE: Duration = Duration::from_secs(60);

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
#[derive(Debug)]
pub struct KubeClient {
    base: String,
    token: Option<Token>,
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
        let base = crate::incluster::api_server(api_server).map_err(KubeError::Config)?;
        let default_token = crate::incluster::sa_file("token");
        let token_path = token_file.map(Path::to_path_buf).unwrap_or(default_token);
        let token = Token {
            path: token_path,
            max_age: TOKEN_MAX_AGE,
            cached: Mutex::new(None),
        };
        // a configured token file must be readable; the in-cluster default
        // may be absent (a test server without authentication)
        let token = match token.get(true) {
            Ok(_) => Some(token),
            Err(e) if token_file.is_some() => return Err(e),
            Err(_) => None,
        };
        let http =
            crate::incluster::http_client(&base, ca_file, timeout).map_err(KubeError::Config)?;
        Ok(KubeClient { base, token, http })
    }

    /// One API call; a 401 re-reads the token and tries once more.
    async fn call(
        &self,
        method: &'static str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, KubeError> {
        let mut fresh_token = false;
        loop {
            let (status, text) = self
                .send(method, path, content_type, body.as_ref(), fresh_token)
                .await?;
            if status == 401 && self.token.is_some() && !fresh_token {
                // a projected token may have been rotated under us
                fresh_token = true;
                continue;
            }
            return Self::answer(method, path, status, text);
        }
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
        fresh_token: bool,
    ) -> Result<(u16, String), KubeError> {
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
            req = req.bearer_auth(t.get(fresh_token)?);
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
        Ok((status, text))
    }

    fn answer(
        method: &'static str,
        path: &str,
        status: u16,
        text: String,
    ) -> Result<Value, KubeError> {
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
        namespace: &Name,
        deployment: &Name,
    ) -> Result<Option<String>, KubeError> {
        let path = format!(
            "/apis/autoscaling/v2/namespaces/{}/horizontalpodautoscalers",
            namespace.segment()
        );
        let list = self.call("GET", &path, None, None).await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|h| {
                let r = &h["spec"]["scaleTargetRef"];
                (r["kind"] == "Deployment" && r["name"] == deployment.as_str())
                    .then(|| h["metadata"]["name"].as_str().unwrap_or("").to_string())
            }))
    }

    fn deployment_path(namespace: &Name, deployment: &Name) -> String {
        format!(
            "/apis/apps/v1/namespaces/{}/deployments/{}",
            namespace.segment(),
            deployment.segment()
        )
    }

    fn pod_path(namespace: &Name, pod: &Name) -> String {
        format!(
            "/api/v1/namespaces/{}/pods/{}",
            namespace.segment(),
            pod.segment()
        )
    }

    /// Replicas the Deployment's scale subresource reports (`spec.replicas`).
    pub async fn replicas(&self, namespace: &Name, deployment: &Name) -> Result<u32, KubeError> {
        let path = format!("{}/scale", Self::deployment_path(namespace, deployment));
        let v = self.call("GET", &path, None, None).await?;
        v["spec"]["replicas"]
            .as_u64()
            .or_else(|| v["status"]["replicas"].as_u64())
            .and_then(|r| u32::try_from(r).ok())
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
        namespace: &Name,
        deployment: &Name,
        replicas: u32,
    ) -> Result<(), KubeError> {
        if let Some(hpa) = self.owning_hpa(namespace, deployment).await? {
            return Err(KubeError::OwnedByHpa {
                namespace: namespace.to_string(),
                name: deployment.to_string(),
                hpa,
            });
        }
        let path = format!("{}/scale", Self::deployment_path(namespace, deployment));
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
        namespace: &Name,
        deployment: &Name,
        now_rfc3339: &str,
    ) -> Result<(), KubeError> {
        let path = Self::deployment_path(namespace, deployment);
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

    pub async fn delete_pod(&self, namespace: &Name, pod: &Name) -> Result<(), KubeError> {
        self.call("DELETE", &Self::pod_path(namespace, pod), None, None)
            .await
            .map(|_| ())
    }

    /// `kubectl rollout undo` to the newest revision running `to_image`,
    /// while the Deployment runs `from_image` (see the module doc). What was
    /// done, in words.
    pub async fn rollback(
        &self,
        namespace: &Name,
        deployment: &Name,
        container: Option<&str>,
        from_image: &str,
        to_image: &str,
    ) -> Result<String, KubeError> {
        let path = Self::deployment_path(namespace, deployment);
        let d = self.call("GET", &path, None, None).await?;
        let what = format!("{namespace}/{deployment}");
        let in_container = container
            .map(|c| format!(" in container {c}"))
            .unwrap_or_default();
        if d["spec"]["paused"].as_bool() == Some(true) {
            return Err(KubeError::Paused(what));
        }
        let template = &d["spec"]["template"];
        if !runs(template, container, from_image) {
            if runs(template, container, to_image) {
                return Ok(format!(
                    "deployment {what} already runs {to_image}{in_container}: nothing sent"
                ));
            }
            return Err(KubeError::NotOnImage {
                deployment: what,
                from_image: from_image.into(),
                to_image: to_image.into(),
                container: in_container,
            });
        }
        let mut list_path = format!(
            "/apis/apps/v1/namespaces/{}/replicasets",
            namespace.segment()
        );
        if let Some(sel) = match_labels_selector(&d) {
            list_path.push_str("?labelSelector=");
            list_path.push_str(&super::path_segment(&sel));
        }
        let list = self.call("GET", &list_path, None, None).await?;
        let empty = Vec::new();
        let sets = list["items"].as_array().unwrap_or(&empty);
        let Some(rs) = previous_revision(&d, sets, container, from_image, to_image) else {
            return Err(KubeError::NoRevision {
                deployment: what,
                to_image: to_image.into(),
                container: in_container,
            });
        };
        let revision = revision_of(rs).unwrap_or(0);
        let patch = undo_patch(&d, rs);
        self.call(
            "PATCH",
            &path,
            Some("application/json-patch+json"),
            Some(patch),
        )
        .await?;
        Ok(format!(
            "deployment {what} rolled back to revision {revision} ({to_image}{in_container}, was {from_image})"
        ))
    }

    /// The Deployment that owns `pod` (pod → ReplicaSet → Deployment); names
    /// read from the API are checked like any other.
    pub async fn owning_deployment(
        &self,
        namespace: &Name,
        pod: &Name,
    ) -> Result<Option<Name>, KubeError> {
        let p = self
            .call("GET", &Self::pod_path(namespace, pod), None, None)
            .await?;
        let Some(rs) = owner(&p, "ReplicaSet") else {
            return Ok(None);
        };
        let rs = Name::subdomain("replica set", &rs)?;
        let path = format!(
            "/apis/apps/v1/namespaces/{}/replicasets/{}",
            namespace.segment(),
            rs.segment()
        );
        let r = self.call("GET", &path, None, None).await?;
        owner(&r, "Deployment")
            .map(|d| Name::subdomain("deployment", &d))
            .transpose()
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

/// The revision a Deployment controller wrote on a ReplicaSet.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// Annotations a rollback keeps from the Deployment instead of copying them
/// from the ReplicaSet: the controller's bookkeeping and the applied
/// configuration (the set `kubectl rollout undo` keeps).
const KEEP_FROM_DEPLOYMENT: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The label the Deployment controller adds to each ReplicaSet's template.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// An image reference as the runtimes resolve it: Docker Hub's registry and
/// `library/` spelled out, `:latest` when neither tag nor digest is given.
pub fn normalize_image(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let (repo, tag) = match last.rsplit_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    };
    let first = repo.split('/').next().unwrap_or(repo);
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_registry {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    if let Some(rest) = full.strip_prefix("index.docker.io/") {
        full = format!("docker.io/{rest}");
    }
    match (tag, digest) {
        (Some(t), Some(d)) => format!("{full}:{t}@{d}"),
        (Some(t), None) => format!("{full}:{t}"),
        (None, Some(d)) => format!("{full}@{d}"),
        (None, None) => format!("{full}:latest"),
    }
}

/// Whether pod template `t` runs `image` (in `container` when given).
fn runs(t: &Value, container: Option<&str>, image: &str) -> bool {
    let want = normalize_image(image);
    t["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| container.is_none_or(|n| c["name"] == n))
        .any(|c| {
            c["image"]
                .as_str()
                .is_some_and(|i| normalize_image(i) == want)
        })
}

fn revision_of(rs: &Value) -> Option<u64> {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
}

/// `spec.selector.matchLabels` as a label selector (`a=b,c=d`), when that
/// is all the selector has; the owner check below is the real filter.
fn match_labels_selector(d: &Value) -> Option<String> {
    let m = d["spec"]["selector"]["matchLabels"].as_object()?;
    let parts: Vec<String> = m
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Whether `rs` belongs to Deployment `d` (its controller owner reference).
fn owned_by(rs: &Value, d: &Value) -> bool {
    let uid = d["metadata"]["uid"].as_str();
    let name = d["metadata"]["name"].as_str();
    rs["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| {
            o["kind"] == "Deployment"
                && match (uid, o["uid"].as_str()) {
                    (Some(a), Some(b)) => a == b,
                    _ => o["name"].as_str() == name,
                }
        })
}

/// The ReplicaSet a rollback restores: the Deployment's own, running
/// `to_image` and not `from_image`, of the highest revision.
fn previous_revision<'a>(
    d: &Value,
    sets: &'a [Value],
    container: Option<&str>,
    from_image: &str,
    to_image: &str,
) -> Option<&'a Value> {
    sets.iter()
        .filter(|rs| owned_by(rs, d))
        .filter(|rs| {
            let t = &rs["spec"]["template"];
            runs(t, container, to_image) && !runs(t, container, from_image)
        })
        .max_by_key(|rs| revision_of(rs).unwrap_or(0))
}

/// The JSON patch that gives `d` the template and annotations of `rs`,
/// guarded by `d`'s resourceVersion.
fn undo_patch(d: &Value, rs: &Value) -> Value {
    let mut template = rs["spec"]["template"].clone();
    if let Some(l) = template["metadata"]["labels"].as_object_mut() {
        l.remove(POD_TEMPLATE_HASH);
    }
    let mut annotations = serde_json::Map::new();
    if let Some(a) = d["metadata"]["annotations"].as_object() {
        for k in KEEP_FROM_DEPLOYMENT {
            if let Some(v) = a.get(k) {
                annotations.insert(k.to_string(), v.clone());
            }
        }
    }
    if let Some(a) = rs["metadata"]["annotations"].as_object() {
        for (k, v) in a {
            if !KEEP_FROM_DEPLOYMENT.contains(&k.as_str()) {
                annotations.insert(k.clone(), v.clone());
            }
        }
    }
    let mut ops = Vec::new();
    if let Some(rv) = d["metadata"]["resourceVersion"].as_str() {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    ops.push(json!({"op": "replace", "path": "/spec/template", "value": template}));
    ops.push(json!({"op": "replace", "path": "/metadata/annotations", "value": annotations}));
    Value::Array(ops)
}

fn required<'a>(w: &'a Labels, what: &'static str) -> Result<&'a str, KubeError> {
    w.get(what)
        .filter(|s| !s.is_empty())
        .ok_or(KubeError::MissingTarget(what))
}

/// The workload a target or autoscaler names: `namespace` + `deployment`.
pub fn deployment_of(w: &Labels) -> Result<(Name, Name), KubeError> {
    Ok((
        Name::label("namespace", required(w, "namespace")?)?,
        Name::subdomain("deployment", required(w, "deployment")?)?,
    ))
}

/// The Kubernetes executor.
pub struct KubernetesExecutor {
    client: KubeClient,
    restart_mode: RestartMode,
}

impl KubernetesExecutor {
    pub fn new(
        api_server: Option<&str>,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
        timeout: Duration,
        restart_mode: RestartMode,
    ) -> Result<Self, KubeError> {
        Ok(KubernetesExecutor {
            client: KubeClient::new(api_server, token_file, ca_file, timeout)?,
            restart_mode,
        })
    }

    /// A restart: the pod (deleted, or its Deployment rolled) when the
    /// target names one, else the Deployment it names.
    async fn restart(&self, target: &Labels, time: &str) -> Result<String, KubeError> {
        let c = &self.client;
        let (Some(ns), Some(pod)) = (
            target.get("namespace").filter(|s| !s.is_empty()),
            target.get("pod").filter(|s| !s.is_empty()),
        ) else {
            let (ns, d) = deployment_of(target)?;
            c.rollout_restart(&ns, &d, time).await?;
            return Ok(format!("rollout restart of deployment {ns}/{d}"));
        };
        let ns = Name::label("namespace", ns)?;
        let pod = Name::subdomain("pod", pod)?;
        match self.restart_mode {
            RestartMode::DeletePod => {
                c.delete_pod(&ns, &pod).await?;
                Ok(format!("deleted pod {ns}/{pod}"))
            }
            RestartMode::Rollout => match c.owning_deployment(&ns, &pod).await? {
                Some(d) => {
                    c.rollout_restart(&ns, &d, time).await?;
                    Ok(format!("rollout restart of deployment {ns}/{d}"))
                }
                // a pod without a Deployment: deleting it is the only restart
                None => {
                    c.delete_pod(&ns, &pod).await?;
                    Ok(format!("deleted pod {ns}/{pod} (no owning deployment)"))
                }
            },
        }
    }
}

impl Executor for KubernetesExecutor {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn execute<'a>(&'a self, req: &'a ActionRequest) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let done = match &req.action {
                Action::Restart { target } => {
                    let time = vigil_common::time::format_rfc3339_millis(req.time_ms);
                    self.restart(target, &time).await
                }
                Action::Scale { workload, to, .. } => match deployment_of(workload) {
                    Ok((ns, d)) => self
                        .client
                        .scale(&ns, &d, *to)
                        .await
                        .map(|_| format!("deployment {ns}/{d} scaled to {to}")),
                    Err(e) => Err(e),
                },
                Action::Rollback {
                    workload,
                    from_image,
                    to_image,
                } => match deployment_of(workload) {
                    Ok((ns, d)) => {
                        let container = workload.get("container").filter(|c| !c.is_empty());
                        self.client
                            .rollback(&ns, &d, container, from_image, to_image)
                            .await
                    }
                    Err(e) => Err(e),
                },
            };
            match done {
                Ok(d) => Outcome::Delivered(d),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        })
    }

    fn replicas<'a>(
        &'a self,
        workload: &'a Labels,
    ) -> BoxFuture<'a, Result<Option<u32>, ExecutorError>> {
        Box::pin(async move {
            let (ns, d) = deployment_of(workload)?;
            Ok(Some(self.client.replicas(&ns, &d).await?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_as_kubernetes_checks_them() {
        for ok in ["web", "web-1", "a", "0abc"] {
            assert!(Name::label("namespace", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Web",
            "-web",
            "web-",
            "a/b",
            "a..b",
            "../x",
            "a%2Fb",
            "x y",
            "web.1",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    Name::label("namespace", bad),
                    Err(KubeError::InvalidName { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(Name::subdomain("pod", "web-7d4b9c.abc").is_ok());
        for bad in ["web..x", ".web", "web.", "a/b", "A", &"a".repeat(254)] {
            assert!(Name::subdomain("pod", bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Name::subdomain("pod", "web-1").unwrap().segment(), "web-1");
    }

    #[test]
    fn images_compare_as_references() {
        for (a, b) in [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            ("library/nginx:1.25", "docker.io/library/nginx:1.25"),
            (
                "index.docker.io/library/nginx:1",
                "docker.io/library/nginx:1",
            ),
            ("shop/web:2", "docker.io/shop/web:2"),
            ("localhost/bb:1", "localhost/bb:1"),
            ("localhost:5000/web", "localhost:5000/web:latest"),
            ("ghcr.io/o/web:1.2@sha256:ab", "ghcr.io/o/web:1.2@sha256:ab"),
            ("web@sha256:ab", "docker.io/library/web@sha256:ab"),
        ] {
            assert_eq!(normalize_image(a), b, "{a}");
            assert_eq!(normalize_image(b), b, "{b} is stable");
        }
        assert_ne!(normalize_image("web:1"), normalize_image("web:2"));
    }

    fn rs(name: &str, revision: &str, owner_uid: &str, images: &[(&str, &str)]) -> Value {
        json!({
            "metadata": {
                "name": name,
                "annotations": {REVISION: revision, "team": format!("rs-{revision}")},
                "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": owner_uid}],
            },
            "spec": {"template": {
                "metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH: name}},
                "spec": {"containers": images.iter().map(|(n, i)| json!({"name": n, "image": i})).collect::<Vec<_>>()},
            }},
        })
    }

    #[test]
    fn the_newest_revision_on_the_previous_image_is_restored() {
        let d = json!({"metadata": {"name": "web", "uid": "d1", "resourceVersion": "77",
            "annotations": {REVISION: "4", "kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "now"}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:3"}]}}}});
        let sets = vec![
            rs("a", "1", "d1", &[("app", "web:1"), ("side", "proxy:1")]),
            rs("b", "3", "d1", &[("app", "web:2"), ("side", "proxy:1")]),
            rs("c", "4", "d1", &[("app", "web:3"), ("side", "proxy:1")]),
            // another deployment's, and one on web:2 of a higher revision
            rs("x", "9", "other", &[("app", "web:2")]),
        ];
        let chosen = previous_revision(&d, &sets, Some("app"), "web:3", "docker.io/library/web:2");
        assert_eq!(chosen.unwrap()["metadata"]["name"], "b");
        // the sidecar's image is not the app's
        assert!(previous_revision(&d, &sets, Some("app"), "web:3", "proxy:1").is_none());
        assert!(previous_revision(&d, &sets, None, "web:3", "web:9").is_none());

        let patch = undo_patch(&d, chosen.unwrap());
        let ops = patch.as_array().unwrap();
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "77"})
        );
        assert_eq!(ops[1]["path"], "/spec/template");
        let labels = &ops[1]["value"]["metadata"]["labels"];
        assert_eq!(labels, &json!({"app": "web"}), "pod-template-hash removed");
        assert_eq!(ops[1]["value"]["spec"]["containers"][0]["image"], "web:2");
        assert_eq!(
            ops[2]["value"],
            json!({REVISION: "4", "kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "rs-3"}),
            "bookkeeping kept from the deployment, the rest from the replica set"
        );
        assert!(runs(
            &d["spec"]["template"],
            Some("app"),
            "docker.io/library/web:3"
        ));
        assert!(!runs(&d["spec"]["template"], Some("side"), "web:3"));
        assert_eq!(
            match_labels_selector(
                &json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "fe"}}}})
            )
            .as_deref(),
            Some("app=web,tier=fe")
        );
    }

    #[test]
    fn a_workload_needs_valid_names() {
        let w = Labels::new([("namespace", "prod"), ("deployment", "web")]);
        let (ns, d) = deployment_of(&w).unwrap();
        assert_eq!((ns.as_str(), d.as_str()), ("prod", "web"));
        assert!(matches!(
            deployment_of(&Labels::new([("namespace", "prod")])),
            Err(KubeError::MissingTarget("deployment"))
        ));
        let e = deployment_of(&Labels::new([
            ("namespace", "prod"),
            ("deployment", "../../x"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("not a valid Kubernetes name"), "{e}");
    }
}
