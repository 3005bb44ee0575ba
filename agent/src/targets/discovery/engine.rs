//! Docker and Podman containers of this node, from the Engine API on unix
//! sockets (Podman serves it with `podman system service`): each refresh lists
//! the running containers (`GET /containers/json`), one target per container.
//!
//! Why the API and not the runtimes' files under `--host-root`: Podman keeps
//! container labels only in its database (BoltDB/SQLite), not in any file the
//! agent could read; the API gives labels, addresses and the process id for
//! both runtimes. Containers run by Kubernetes (label `io.kubernetes.pod.name`)
//! are left to pod discovery.
//!
//! A target's address is the container's IP (its first network with one, by
//! name) and the port from `prometheus.io/port`, else its lowest exposed TCP
//! port; a container with no IP (`--network none`, host-only networks) is
//! reached on `127.0.0.1:<port>` inside its own network namespace
//! (`__netns__` = `<host-root>/proc/<pid>/ns/net`, the pid from
//! `GET /containers/<id>/json`). Labels: `container` (the name), and
//! `__meta_docker_container_{id,name}`, `__meta_docker_container_label_<key>`,
//! `__meta_docker_network_{name,ip}` for relabeling.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vigil_common::Labels;

use super::{TargetGroup, apply_keys, keys, sanitize};
use crate::targets::fetch::{Client, Dial};

const TIMEOUT: Duration = Duration::from_secs(10);
const LIMIT: u64 = 64 << 20;

/// A container as `GET /containers/json` lists it (Docker and Podman agree on these).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Summary {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    #[serde(rename = "Image", default)]
    pub image: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Ports", default)]
    pub ports: Option<Vec<Port>>,
    #[serde(rename = "NetworkSettings", default)]
    pub network_settings: Option<NetworkSettings>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Port {
    #[serde(rename = "PrivatePort", default)]
    pub private_port: u16,
    #[serde(rename = "Type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct NetworkSettings {
    #[serde(rename = "Networks", default)]
    pub networks: Option<BTreeMap<String, Network>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Network {
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
}

#[derive(Debug, Deserialize)]
struct Inspect {
    #[serde(rename = "State")]
    state: InspectState,
}

#[derive(Debug, Deserialize)]
struct InspectState {
    #[serde(rename = "Pid", default)]
    pid: i64,
}

pub struct Discovery {
    sockets: Vec<(PathBuf, Client)>,
    host_root: PathBuf,
    errors: Vec<String>,
}

impl Discovery {
    pub fn new(sockets: Vec<PathBuf>, host_root: PathBuf) -> Self {
        Discovery {
            sockets: sockets
                .into_iter()
                .map(|p| (p.clone(), Client::new(Dial::Unix(p), None)))
                .collect(),
            host_root,
            errors: Vec::new(),
        }
    }

    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// One group per container of every socket that answers. A socket that
    /// does not exist is skipped silently (a node runs one runtime or none).
    pub async fn refresh(&mut self) -> Vec<TargetGroup> {
        let mut out = Vec::new();
        for (path, client) in &mut self.sockets {
            if !path.exists() {
                continue;
            }
            let url = format!("unix://{}/containers/json", path.display());
            let list = match client
                .get(
                    &url,
                    "/containers/json",
                    &[("accept", "application/json")],
                    LIMIT,
                    TIMEOUT,
                )
                .await
            {
                Ok(r) => match serde_json::from_slice::<Vec<Summary>>(&r.body) {
                    Ok(l) => l,
                    Err(e) => {
                        self.errors
                            .push(format!("{url}: unreadable container list: {e}"));
                        continue;
                    }
                },
                Err(e) => {
                    self.errors.push(e.to_string());
                    continue;
                }
            };
            for c in list {
                if c.labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("io.kubernetes.pod.name"))
                {
                    continue;
                }
                // The pid is looked up each time: a restarted container keeps
                // its id but not its process.
                let mut pid = None;
                if wants_scrape(&c) && container_ip(&c).is_none() {
                    let path = format!("/containers/{}/json", c.id);
                    match client
                        .get(
                            &url,
                            &path,
                            &[("accept", "application/json")],
                            LIMIT,
                            TIMEOUT,
                        )
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            serde_json::from_slice::<Inspect>(&r.body).map_err(|e| e.to_string())
                        }) {
                        Ok(i) if i.state.pid > 0 => pid = Some(i.state.pid),
                        Ok(_) => {}
                        Err(e) => self.errors.push(format!("inspect {}: {e}", c.id)),
                    }
                }
                out.push(group(&c, pid, &self.host_root));
            }
        }
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }
}

fn wants_scrape(c: &Summary) -> bool {
    c.labels
        .as_ref()
        .and_then(|l| l.get(keys::SCRAPE))
        .is_some_and(|v| v == "true")
}

/// The first network (by name) with an address.
pub fn container_ip(c: &Summary) -> Option<(String, String)> {
    c.network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .iter()
        .find(|(_, n)| !n.ip_address.is_empty())
        .map(|(name, n)| (name.clone(), n.ip_address.clone()))
}

/// The target group of one container.
pub fn group(c: &Summary, pid: Option<i64>, host_root: &std::path::Path) -> TargetGroup {
    let empty = BTreeMap::new();
    let labels = c.labels.as_ref().unwrap_or(&empty);
    let name = c
        .names
        .first()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let port = labels
        .get(keys::PORT)
        .filter(|p| !p.is_empty())
        .cloned()
        .or_else(|| {
            c.ports
                .iter()
                .flatten()
                .filter(|p| p.kind == "tcp" || p.kind.is_empty())
                .map(|p| p.private_port)
                .filter(|p| *p > 0)
                .min()
                .map(|p| p.to_string())
        });
    let mut t: Vec<(String, String)> = vec![
        ("__meta_docker_container_id".into(), c.id.clone()),
        ("__meta_docker_container_name".into(), name.clone()),
        ("container".into(), name),
    ];
    for (k, v) in labels {
        t.push((
            format!("__meta_docker_container_label_{}", sanitize(k)),
            v.clone(),
        ));
    }
    let with_port = |host: &str| match &port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    match container_ip(c) {
        Some((net, ip)) => {
            t.push(("__meta_docker_network_name".into(), net));
            t.push(("__meta_docker_network_ip".into(), ip.clone()));
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            t.push(("__address__".into(), with_port(&host)));
        }
        None => {
            t.push(("__address__".into(), with_port("127.0.0.1")));
            if let Some(pid) = pid {
                t.push((
                    "__netns__".into(),
                    host_root
                        .join(format!("proc/{pid}/ns/net"))
                        .display()
                        .to_string(),
                ));
            }
        }
    }
    apply_keys(|k| labels.get(k).cloned(), &mut t);
    TargetGroup {
        source: format!("container/{}", c.id),
        labels: Labels::default(),
        targets: vec![Labels::new(t)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Podman 4.3's Engine API lists a container (recorded here, trimmed).
    const LIST: &str = r#"[
 {"Id":"8c0b6f0c1b4f","Names":["/web"],"Image":"localhost/bb:1","State":"running",
  "Labels":{"prometheus.io/scrape":"true","prometheus.io/port":"8080","prometheus.io/path":"/m.txt","prometheus.io/interval":"2s"},
  "Ports":[],"NetworkSettings":{"Networks":{"podman":{"IPAddress":"10.88.0.7","Gateway":"10.88.0.1"}}}},
 {"Id":"aa11","Names":["/lonely"],"Labels":{"prometheus.io/scrape":"true","prometheus.io/port":"9000"},
  "Ports":null,"NetworkSettings":{"Networks":{"none":{"IPAddress":""}}}},
 {"Id":"bb22","Names":["/plain"],"Labels":null,"Ports":[{"PrivatePort":9100,"PublicPort":0,"Type":"tcp"},{"PrivatePort":53,"Type":"udp"},{"PrivatePort":8000,"Type":"tcp"}],
  "NetworkSettings":{"Networks":{"b":{"IPAddress":"172.17.0.3"},"a":{"IPAddress":""}}}}
]"#;

    #[test]
    fn containers_become_targets() {
        let list: Vec<Summary> = serde_json::from_str(LIST).unwrap();
        let root = std::path::Path::new("/host");
        let web = &group(&list[0], None, root).targets[0];
        assert_eq!(web.get("__address__"), Some("10.88.0.7:8080"));
        assert_eq!(web.get("__metrics_path__"), Some("/m.txt"));
        assert_eq!(web.get("__scrape_interval__"), Some("2s"));
        assert_eq!(web.get("container"), Some("web"));
        assert_eq!(
            web.get("__meta_docker_container_label_prometheus_io_scrape"),
            Some("true")
        );
        assert_eq!(web.get("__netns__"), None);
        let lonely = &group(&list[1], Some(4242), root).targets[0];
        assert_eq!(lonely.get("__address__"), Some("127.0.0.1:9000"));
        assert_eq!(lonely.get("__netns__"), Some("/host/proc/4242/ns/net"));
        assert!(wants_scrape(&list[1]) && container_ip(&list[1]).is_none());
        let plain = &group(&list[2], None, root).targets[0];
        assert_eq!(
            plain.get("__address__"),
            Some("172.17.0.3:8000"),
            "lowest TCP port"
        );
        assert_eq!(
            plain.get("__meta_docker_container_label_prometheus_io_scrape"),
            None
        );
        assert!(!wants_scrape(&list[2]));
    }
}
