//! Names for containers from the runtimes' and the kubelet's files on disk:
//! kubelet's log folders (`/var/log/pods`, `/var/log/containers`), Docker's
//! and Podman's container configs. Indexed once per scrape that needs them.
//!
//! Not here: the container id (`identity`).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::identity::PathIdentity;

/// Names for a container, from the runtime's files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub image: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// The runtimes' and the kubelet's on-disk names, indexed once per scrape
/// that needs them (a new container, or one still unnamed).
#[derive(Default)]
pub(super) struct MetaIndex {
    /// pod uid → (namespace, pod), from `/var/log/pods/<ns>_<pod>_<uid>`.
    pub(super) pods: HashMap<String, (String, String)>,
    /// container id → (pod, namespace, container), from
    /// `/var/log/containers/<pod>_<ns>_<container>-<id>.log`.
    pub(super) logs: HashMap<String, (String, String, String)>,
    /// Podman's `containers.json`: id → (name, image).
    pub(super) podman: HashMap<String, (String, String)>,
}

impl MetaIndex {
    pub(super) fn build(host_root: &Path) -> Self {
        let mut idx = MetaIndex {
            podman: podman_index(host_root),
            ..Default::default()
        };
        if let Ok(rd) = fs::read_dir(host_root.join("var/log/pods")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let mut it = n.splitn(3, '_');
                if let (Some(ns), Some(pod), Some(uid)) = (it.next(), it.next(), it.next()) {
                    idx.pods
                        .insert(uid.to_string(), (ns.to_string(), pod.to_string()));
                }
            }
        }
        if let Ok(rd) = fs::read_dir(host_root.join("var/log/containers")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let Some(stem) = n.strip_suffix(".log") else {
                    continue;
                };
                let Some((rest, id)) = stem.rsplit_once('-') else {
                    continue;
                };
                let mut it = rest.splitn(3, '_');
                if let (Some(pod), Some(ns), Some(c)) = (it.next(), it.next(), it.next()) {
                    idx.logs.insert(
                        id.to_string(),
                        (pod.to_string(), ns.to_string(), c.to_string()),
                    );
                }
            }
        }
        idx
    }

    pub(super) fn lookup(&self, host_root: &Path, ident: &PathIdentity) -> Meta {
        let mut m = Meta::default();
        let id = &ident.id;
        if let Some(uid) = &ident.pod_uid {
            if let Some((ns, pod)) = self.pods.get(uid) {
                m.namespace.clone_from(ns);
                m.pod.clone_from(pod);
            }
            if let Some((pod, ns, c)) = self.logs.get(id) {
                m.pod.clone_from(pod);
                m.namespace.clone_from(ns);
                m.container.clone_from(c);
            }
        }
        let docker = host_root.join(format!("var/lib/docker/containers/{id}/config.v2.json"));
        if let Ok(text) = fs::read_to_string(&docker)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            if let Some(n) = v.get("Name").and_then(|n| n.as_str()) {
                m.name = n.trim_start_matches('/').to_string();
            }
            if let Some(i) = v.pointer("/Config/Image").and_then(|n| n.as_str()) {
                m.image = i.to_string();
            }
        }
        if let Some((n, i)) = self.podman.get(id) {
            if m.name.is_empty() {
                m.name.clone_from(n);
            }
            if m.image.is_empty() {
                m.image.clone_from(i);
            }
        }
        m
    }
}

/// Podman's `containers.json`: id → (name, image name).
pub(super) fn podman_index(host_root: &Path) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    let path = host_root.join("var/lib/containers/storage/overlay-containers/containers.json");
    let Ok(text) = fs::read_to_string(path) else {
        return out;
    };
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return out;
    };
    for c in list {
        let Some(id) = c.get("id").and_then(|v| v.as_str()) else {
            continue;
        };
        let mut name = c
            .pointer("/names/0")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let mut image = String::new();
        if let Some(md) = c.get("metadata").and_then(|v| v.as_str())
            && let Ok(md) = serde_json::from_str::<serde_json::Value>(md)
        {
            if let Some(i) = md.get("image-name").and_then(|v| v.as_str()) {
                image = i.to_string();
            }
            if name.is_empty()
                && let Some(n) = md.get("name").and_then(|v| v.as_str())
            {
                name = n.to_string();
            }
        }
        out.insert(id.to_string(), (name, image));
    }
    out
}
