//! Where targets come from: each source of each job runs as its own task and
//! sends the full list of its target groups whenever it changes
//! (Prometheus's target-group model: a group's labels under each target's).
//!
//! - `static_configs`: once.
//! - `file_sd_configs` ([`file`]): Prometheus's file_sd JSON/YAML; files are
//!   checked every second (mtime, size, inode) and re-read when changed, and
//!   every `refresh_interval` regardless; a file that does not parse keeps
//!   its last good groups and is reported.
//! - `container_sd_configs` ([`engine`]): Docker and Podman containers of
//!   this node, from the Engine API on their unix sockets.
//! - `kubernetes_sd_configs` ([`kubernetes`]): this node's pods, from the API
//!   server with a `spec.nodeName` field selector.
//!
//! Not here: relabeling or scraping.

pub mod engine;
pub mod file;
pub mod kubernetes;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil_common::Labels;

use super::config::Source;
use super::metrics::TargetMetrics;

/// Targets that share labels, as discovery found them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetGroup {
    /// Identifies the group within its source (a file and index, a pod, …).
    pub source: String,
    pub labels: Labels,
    pub targets: Vec<Labels>,
}

impl TargetGroup {
    /// Each target's labels over the group's.
    pub fn expand(&self) -> impl Iterator<Item = Labels> + '_ {
        self.targets.iter().map(|t| {
            let mut v: Vec<(String, String)> = self
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            v.extend(t.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Labels::new(v)
        })
    }
}

/// A source's complete, current groups.
#[derive(Debug)]
pub struct Update {
    pub job: usize,
    pub source: usize,
    pub groups: Vec<TargetGroup>,
}

/// What sources need besides their config.
#[derive(Clone)]
pub struct Context {
    pub node: String,
    pub host_root: PathBuf,
    pub metrics: Arc<TargetMetrics>,
}

/// Starts the task of one source.
pub fn spawn(
    job: usize,
    source: usize,
    src: Source,
    ctx: Context,
    tx: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let send = |groups: Vec<TargetGroup>| {
            let tx = tx.clone();
            async move {
                let _ = tx
                    .send(Update {
                        job,
                        source,
                        groups,
                    })
                    .await;
            }
        };
        match src {
            Source::Static(list) => {
                let groups = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| TargetGroup {
                        source: format!("static/{i}"),
                        labels: Labels::new(s.labels.clone()),
                        targets: s
                            .targets
                            .iter()
                            .map(|t| Labels::new([("__address__", t.as_str())]))
                            .collect(),
                    })
                    .collect();
                send(groups).await;
            }
            Source::File { files, refresh } => {
                let mut w = file::Watcher::new(files, refresh);
                let mut last = None;
                loop {
                    let (groups, errors) = w.poll();
                    for e in &errors {
                        tracing::warn!(error = %e, "file_sd");
                        ctx.metrics.discovery_failure("file");
                    }
                    if let Some(g) = groups
                        && last.as_ref() != Some(&g)
                    {
                        ctx.metrics.discovery_refresh("file");
                        last = Some(g.clone());
                        send(g).await;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
            Source::Containers { sockets, refresh } => {
                let mut d = engine::Discovery::new(sockets, ctx.host_root.clone());
                let mut last = None;
                loop {
                    let groups = d.refresh().await;
                    for e in d.take_errors() {
                        tracing::debug!(error = %e, "container discovery");
                        ctx.metrics.discovery_failure("containers");
                    }
                    ctx.metrics.discovery_refresh("containers");
                    if last.as_ref() != Some(&groups) {
                        last = Some(groups.clone());
                        send(groups).await;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(refresh) => {}
                    }
                }
            }
            Source::Kubernetes {
                api_server,
                token_file,
                ca_file,
                refresh,
            } => {
                let mut d = match kubernetes::Discovery::new(
                    &api_server,
                    token_file,
                    ca_file.as_deref(),
                    &ctx.node,
                ) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "kubernetes discovery cannot start");
                        ctx.metrics.discovery_failure("kubernetes");
                        return;
                    }
                };
                let mut last = None;
                loop {
                    match d.refresh().await {
                        Ok(groups) => {
                            ctx.metrics.discovery_refresh("kubernetes");
                            if last.as_ref() != Some(&groups) {
                                last = Some(groups.clone());
                                send(groups).await;
                            }
                        }
                        Err(e) => {
                            // The last good list stays: a flaky API server
                            // must not make every pod's series go stale.
                            tracing::warn!(error = %e, "kubernetes discovery");
                            ctx.metrics.discovery_failure("kubernetes");
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(refresh) => {}
                    }
                }
            }
        }
    });
}

/// Prometheus's `strutil.SanitizeLabelName`: anything but `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The well-known scrape keys, as container labels or pod annotations.
pub mod keys {
    pub const SCRAPE: &str = "prometheus.io/scrape";
    pub const PORT: &str = "prometheus.io/port";
    pub const PATH: &str = "prometheus.io/path";
    pub const SCHEME: &str = "prometheus.io/scheme";
    pub const INTERVAL: &str = "prometheus.io/interval";
}

/// The scrape settings a workload's labels/annotations ask for, put where
/// the scrape reads them (`__metrics_path__`, `__scheme__`,
/// `__scrape_interval__`; a job's default timeout above that interval is
/// lowered to it when the target is made).
pub fn apply_keys(get: impl Fn(&str) -> Option<String>, out: &mut Vec<(String, String)>) {
    if let Some(p) = get(keys::PATH).filter(|p| !p.is_empty()) {
        out.push(("__metrics_path__".into(), p));
    }
    if let Some(s) = get(keys::SCHEME).filter(|s| !s.is_empty()) {
        out.push(("__scheme__".into(), s));
    }
    if let Some(i) = get(keys::INTERVAL).filter(|i| !i.is_empty()) {
        out.push(("__scrape_interval__".into(), i));
    }
}
