//! This node's pods, from the Kubernetes API server:
//! `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>&resourceVersion=0`
//! every refresh (served from the API server's watch cache, so a list per node
//! per refresh is cheap; RBAC: `get`/`list` on `pods`, see
//! `deploy/kubernetes/agent-daemonset.yaml`). The kubelet's own `/pods` would
//! need the broad `nodes/proxy` permission; the API server needs only pods.
//!
//! Pods that finished (`Succeeded`, `Failed`) or have no IP yet are skipped.
//! With `prometheus.io/port`, a pod is one target `<podIP>:<port>`; without,
//! one target per declared TCP container port, or one at `<podIP>` (port 80)
//! when none is declared. `container` is the container declaring the port
//! (or the pod's only container); `namespace` and `pod` are set; the
//! `__meta_kubernetes_pod_*` labels are Prometheus's (annotations, labels,
//! phase, ready, IPs, controller, container name/image/port).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vigil_common::Labels;

use super::{TargetGroup, apply_keys, keys, sanitize};
use crate::targets::fetch::{Client, Dial, Tls};

const TIMEOUT: Duration = Duration::from_secs(20);
const LIMIT: u64 = 256 << 20;

#[derive(Debug, Deserialize)]
pub struct PodList {
    #[serde(default)]
    pub items: Vec<Pod>,
}

#[derive(Debug, Deserialize)]
pub struct Pod {
    pub metadata: Meta,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default)]
    pub status: Status,
}

#[derive(Debug, Deserialize, Default)]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, rename = "ownerReferences")]
    pub owner_references: Vec<Owner>,
}

#[derive(Debug, Deserialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
pub struct Spec {
    #[serde(default, rename = "nodeName")]
    pub node_name: String,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, rename = "initContainers")]
    pub init_containers: Vec<Container>,
}

#[derive(Debug, Deserialize)]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Deserialize)]
pub struct ContainerPort {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "containerPort")]
    pub container_port: i32,
    #[serde(default)]
    pub protocol: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct Status {
    #[serde(default)]
    pub phase: String,
    #[serde(default, rename = "podIP")]
    pub pod_ip: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, rename = "containerStatuses")]
    pub container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}

#[derive(Debug, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default, rename = "containerID")]
    pub container_id: String,
}

pub struct Discovery {
    client: Client,
    base: String,
    path: String,
    token_file: PathBuf,
}

impl Discovery {
    pub fn new(
        api_server: &str,
        token_file: PathBuf,
        ca_file: Option<&std::path::Path>,
        node: &str,
    ) -> Result<Self, String> {
        let uri: http::Uri = api_server
            .parse()
            .map_err(|e| format!("api_server {api_server:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "api_server {api_server:?} must be http:// or https://"
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("api_server {api_server:?} has no host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            Some(Tls::new(&host, ca_file, None, false)?)
        } else {
            None
        };
        let prefix = uri.path().trim_end_matches('/');
        let path = format!(
            "{prefix}/api/v1/pods?fieldSelector=spec.nodeName%3D{}&resourceVersion=0",
            enc(node)
        );
        Ok(Discovery {
            client: Client::new(Dial::Tcp { host, port }, tls),
            base: api_server.trim_end_matches('/').to_string(),
            path,
            token_file,
        })
    }

    /// This node's pods now, as target groups.
    pub async fn refresh(&mut self) -> Result<Vec<TargetGroup>, String> {
        let token = match std::fs::read_to_string(&self.token_file) {
            Ok(t) => Some(format!("Bearer {}", t.trim())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("token file {}: {e}", self.token_file.display())),
        };
        let mut headers = vec![("accept", "application/json")];
        if let Some(t) = &token {
            headers.push(("authorization", t.as_str()));
        }
        let url = format!("{}{}", self.base, self.path);
        let r = self
            .client
            .get(&url, &self.path, &headers, LIMIT, TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let list: PodList = serde_json::from_slice(&r.body)
            .map_err(|e| format!("{url}: unreadable pod list: {e}"))?;
        Ok(groups(&list))
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One group per running pod with an IP.
pub fn groups(list: &PodList) -> Vec<TargetGroup> {
    let mut out: Vec<TargetGroup> = list.items.iter().filter_map(pod_group).collect();
    out.sort_by(|a, b| a.source.cmp(&b.source));
    out
}

fn pod_group(p: &Pod) -> Option<TargetGroup> {
    if matches!(p.status.phase.as_str(), "Succeeded" | "Failed") || p.status.pod_ip.is_empty() {
        return None;
    }
    let m = &p.metadata;
    let ready = p
        .status
        .conditions
        .iter()
        .find(|c| c.kind == "Ready")
        .map_or("unknown".to_string(), |c| c.status.to_lowercase());
    let mut g: Vec<(String, String)> = vec![
        ("__meta_kubernetes_namespace".into(), m.namespace.clone()),
        ("__meta_kubernetes_pod_name".into(), m.name.clone()),
        ("__meta_kubernetes_pod_ip".into(), p.status.pod_ip.clone()),
        ("__meta_kubernetes_pod_uid".into(), m.uid.clone()),
        (
            "__meta_kubernetes_pod_node_name".into(),
            p.spec.node_name.clone(),
        ),
        (
            "__meta_kubernetes_pod_host_ip".into(),
            p.status.host_ip.clone(),
        ),
        ("__meta_kubernetes_pod_phase".into(), p.status.phase.clone()),
        ("__meta_kubernetes_pod_ready".into(), ready),
        ("namespace".into(), m.namespace.clone()),
        ("pod".into(), m.name.clone()),
    ];
    for (k, v) in &m.labels {
        g.push((
            format!("__meta_kubernetes_pod_label_{}", sanitize(k)),
            v.clone(),
        ));
        g.push((
            format!("__meta_kubernetes_pod_labelpresent_{}", sanitize(k)),
            "true".into(),
        ));
    }
    for (k, v) in &m.annotations {
        g.push((
            format!("__meta_kubernetes_pod_annotation_{}", sanitize(k)),
            v.clone(),
        ));
        g.push((
            format!("__meta_kubernetes_pod_annotationpresent_{}", sanitize(k)),
            "true".into(),
        ));
    }
    if let Some(o) = m
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
    {
        g.push((
            "__meta_kubernetes_pod_controller_kind".into(),
            o.kind.clone(),
        ));
        g.push((
            "__meta_kubernetes_pod_controller_name".into(),
            o.name.clone(),
        ));
    }
    let ip = if p.status.pod_ip.contains(':') {
        format!("[{}]", p.status.pod_ip)
    } else {
        p.status.pod_ip.clone()
    };
    let container_id = |name: &str| {
        p.status
            .container_statuses
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.container_id.clone())
            .unwrap_or_default()
    };
    let container_labels = |c: &Container, port: Option<&ContainerPort>| {
        let mut t: Vec<(String, String)> = vec![
            ("container".into(), c.name.clone()),
            (
                "__meta_kubernetes_pod_container_name".into(),
                c.name.clone(),
            ),
            (
                "__meta_kubernetes_pod_container_image".into(),
                c.image.clone(),
            ),
            (
                "__meta_kubernetes_pod_container_init".into(),
                "false".into(),
            ),
            (
                "__meta_kubernetes_pod_container_id".into(),
                container_id(&c.name),
            ),
        ];
        if let Some(pt) = port {
            t.push((
                "__meta_kubernetes_pod_container_port_name".into(),
                pt.name.clone(),
            ));
            t.push((
                "__meta_kubernetes_pod_container_port_number".into(),
                pt.container_port.to_string(),
            ));
            t.push((
                "__meta_kubernetes_pod_container_port_protocol".into(),
                if pt.protocol.is_empty() {
                    "TCP".into()
                } else {
                    pt.protocol.clone()
                },
            ));
        }
        t
    };
    let only = (p.spec.containers.len() == 1).then(|| &p.spec.containers[0]);
    let tcp = |pt: &&ContainerPort| pt.protocol.is_empty() || pt.protocol == "TCP";
    let mut targets: Vec<Vec<(String, String)>> = Vec::new();
    if let Some(port) = m.annotations.get(keys::PORT).filter(|p| !p.is_empty()) {
        let owner = p.spec.containers.iter().find_map(|c| {
            c.ports
                .iter()
                .find(|pt| pt.container_port.to_string() == *port)
                .map(|pt| (c, pt))
        });
        let mut t = match owner {
            Some((c, pt)) => container_labels(c, Some(pt)),
            None => only.map(|c| container_labels(c, None)).unwrap_or_default(),
        };
        t.push(("__address__".into(), format!("{ip}:{port}")));
        targets.push(t);
    } else {
        for c in &p.spec.containers {
            for pt in c.ports.iter().filter(tcp) {
                let mut t = container_labels(c, Some(pt));
                t.push(("__address__".into(), format!("{ip}:{}", pt.container_port)));
                targets.push(t);
            }
        }
        if targets.is_empty() {
            let mut t = only.map(|c| container_labels(c, None)).unwrap_or_default();
            t.push(("__address__".into(), ip.clone()));
            targets.push(t);
        }
    }
    let mut extra = Vec::new();
    apply_keys(|k| m.annotations.get(k).cloned(), &mut extra);
    Some(TargetGroup {
        source: format!("pod/{}/{}", m.namespace, m.name),
        labels: Labels::new(g),
        targets: targets
            .into_iter()
            .map(|mut t| {
                t.extend(extra.iter().cloned());
                Labels::new(t)
            })
            .collect(),
    })
}
