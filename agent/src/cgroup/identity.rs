//! Who a cgroup belongs to, from its path alone: the container id (a 64-hex
//! id in the last path element, as cAdvisor finds it), the Kubernetes pod
//! uid, the runtime and the QoS class.
//!
//! Not here: names and images (`runtime_meta`).

/// Who a cgroup belongs to, parsed from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathIdentity {
    pub id: String,
    /// Kubernetes pod uid (with `-`), when the path is under kubepods.
    pub pod_uid: Option<String>,
}

pub(super) fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Finds the container id (last element carrying a 64-hex id) and the pod uid.
pub fn identify(path: &str) -> Option<PathIdentity> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let last = *parts.last()?;
    if last.starts_with("libpod-conmon-") || last.starts_with("crio-conmon-") {
        return None;
    }
    let core = last.strip_suffix(".scope").unwrap_or(last);
    let id = if is_hex64(core) {
        core
    } else {
        let (_, tail) = core.rsplit_once('-')?;
        if !is_hex64(tail) {
            return None;
        }
        let prefix = &core[..core.len() - 65];
        if !matches!(prefix, "cri-containerd" | "crio" | "docker" | "libpod") {
            return None;
        }
        tail
    };
    let mut pod_uid = None;
    if parts.iter().any(|p| p.starts_with("kubepods")) {
        for p in &parts[..parts.len() - 1] {
            let p = p.strip_suffix(".slice").unwrap_or(p);
            if let Some(i) = p.rfind("pod") {
                let uid = &p[i + 3..];
                if uid.len() >= 32
                    && uid
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
                {
                    pod_uid = Some(uid.replace('_', "-"));
                }
            }
        }
    }
    Some(PathIdentity {
        id: id.to_string(),
        pod_uid,
    })
}

/// The runtime that made a container cgroup, from its path.
pub(super) fn runtime_of(path: &str) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or("");
    if last.starts_with("cri-containerd-") {
        "containerd"
    } else if last.starts_with("crio-") {
        "cri-o"
    } else if last.starts_with("libpod-") || path.contains("libpod_parent") {
        "podman"
    } else if last.starts_with("docker-")
        || path.contains("/docker/")
        || path.starts_with("/docker")
    {
        "docker"
    } else if path.contains("kubepods") {
        "cri"
    } else {
        ""
    }
}

/// A Kubernetes pod's QoS class from its cgroup path.
pub(super) fn qos_of(path: &str) -> &'static str {
    if !path.contains("kubepods") {
        ""
    } else if path.contains("besteffort") {
        "BestEffort"
    } else if path.contains("burstable") {
        "Burstable"
    } else {
        "Guaranteed"
    }
}
