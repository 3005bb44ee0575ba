//! The actions file (`--actions FILE`): executors, restart rules and
//! autoscalers. Parsed strictly (unknown keys are errors naming the file) and
//! validated once into [`ActionsConfig`].
//!
//! ```yaml
//! executors:
//!   hooks:  {type: webhook, url: "http://127.0.0.1:9000/hook", secret_file: /etc/vigil/whsec}
//!   podman: {type: docker, socket: /run/podman/podman.sock}
//! restart:
//!   - name: oom
//!     match: {alertname: VigilContainerOOMKilled}
//!     executor: podman
//!     cooldown: 5m
//!     max_restarts: 3
//!     window: 1h
//! autoscale:
//!   - name: web
//!     executor: podman
//!     workload: {label: com.docker.compose.service, value: web}
//!     query: avg(rate(container_cpu_usage_seconds_total{service="web"}[15s])) / 0.5 * 100
//!     target: 40
//!     min_replicas: 2
//!     max_replicas: 4
//! ```
//!
//! About 800 lines with its tests (the last 170): every action's settings and
//! their checks, so one file answers "what can I write and what is refused".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vigil_common::{Duration, Labels};

use super::hpa::{Behavior, Policy, PolicyType, Rules, SelectPolicy};
use super::webhook::Secret;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    executors: BTreeMap<String, RawExecutor>,
    #[serde(default)]
    restart: Vec<RawRestart>,
    #[serde(default)]
    autoscale: Vec<RawScaler>,
    #[serde(default)]
    global: RawGlobal,
    #[serde(default)]
    rollouts: RawRollouts,
    #[serde(default)]
    rollback: Vec<RawRollback>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollback {
    name: String,
    /// Workload labels (e.g. `{service: web}`).
    #[serde(default, rename = "match")]
    matchers: BTreeMap<String, String>,
    executor: String,
    /// How long after a rollout starts its new version is judged [default: 60s].
    window: Option<Duration>,
    /// No second rollback of the workload within this time [default: 10m].
    cooldown: Option<Duration>,
    checks: Vec<RawCheck>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: String,
    /// A built-in: restarts, oom_kills, probe_failures, error_logs_per_second.
    metric: Option<String>,
    /// PromQL with $image, $window, $ids, $names, $<workload label>.
    query: Option<String>,
    max: Option<f64>,
    max_ratio: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRollouts {
    /// How often workloads' images are looked at [default: 2s].
    interval: Option<Duration>,
    /// Running replicas per workload and image: the result's `image` label
    /// is the version, all its other labels name the workload
    /// [default: `count by (service, image) (vigil_container_info{service!=""})`].
    query: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    /// Most restarts across all targets per minute [default: 10].
    max_restarts_per_minute: Option<u32>,
    /// Bearer token file for POST /api/v1/alertmanager/webhook.
    alertmanager_token_file: Option<PathBuf>,
    /// Dry run everything: decide and audit, never execute.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
enum RawExecutor {
    Webhook {
        url: String,
        secret_file: Option<PathBuf>,
        timeout: Option<Duration>,
        max_attempts: Option<u32>,
    },
    Docker {
        socket: Option<PathBuf>,
        timeout: Option<Duration>,
        /// How long a restart waits for the container to stop before it is
        /// killed [default: 10s, Docker's].
        stop_timeout: Option<Duration>,
        /// Label that groups a service's containers [default: com.docker.compose.service].
        service_label: Option<String>,
    },
    Kubernetes {
        /// API server URL [default: in-cluster https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
        api_server: Option<String>,
        token_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
        timeout: Option<Duration>,
        /// `rollout` (default) or `delete_pod`.
        restart_mode: Option<super::kubernetes::RestartMode>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    name: String,
    #[serde(default, rename = "match")]
    matchers: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    executor: String,
    cooldown: Option<Duration>,
    max_restarts: Option<u32>,
    window: Option<Duration>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaler {
    name: String,
    executor: String,
    workload: Labels,
    query: String,
    target: f64,
    min_replicas: Option<u32>,
    max_replicas: u32,
    tolerance: Option<f64>,
    interval: Option<Duration>,
    replicas_query: Option<String>,
    #[serde(default)]
    behavior: RawBehavior,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBehavior {
    scale_up: Option<RawRules>,
    scale_down: Option<RawRules>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    stabilization_window: Option<Duration>,
    select_policy: Option<SelectPolicy>,
    policies: Option<Vec<RawPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "type")]
    kind: PolicyType,
    value: u32,
    period: Duration,
}

/// How an action is carried out.
#[derive(Clone, Debug)]
pub enum ExecutorConfig {
    Webhook {
        url: String,
        secrets: Vec<Secret>,
        timeout: std::time::Duration,
        max_attempts: u32,
    },
    Docker {
        socket: PathBuf,
        timeout: std::time::Duration,
        /// Seconds a restart gives the container to stop (`restart?t=`).
        stop_timeout_s: u32,
        service_label: String,
    },
    Kubernetes {
        api_server: Option<String>,
        token_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
        timeout: std::time::Duration,
        restart_mode: super::kubernetes::RestartMode,
    },
}

impl ExecutorConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ExecutorConfig::Webhook { .. } => "webhook",
            ExecutorConfig::Docker { .. } => "docker",
            ExecutorConfig::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// A label matcher of a restart rule.
#[derive(Clone, Debug)]
pub enum LabelMatch {
    Equal(String, String),
    Regex(String, regex::Regex),
}

impl LabelMatch {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            LabelMatch::Equal(k, v) => labels.get(k).unwrap_or("") == v,
            LabelMatch::Regex(k, r) => r.is_match(labels.get(k).unwrap_or("")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RestartRule {
    pub name: String,
    pub matchers: Vec<LabelMatch>,
    pub executor: String,
    pub policy: super::restart::RestartPolicy,
    pub dry_run: bool,
}

#[derive(Clone, Debug)]
pub struct ScalerConfig {
    pub name: String,
    pub executor: String,
    pub workload: Labels,
    pub query: String,
    pub target: f64,
    pub tolerance: f64,
    pub interval: std::time::Duration,
    pub replicas_query: Option<String>,
    pub behavior: Behavior,
    pub dry_run: bool,
}

/// A rollback rule: analysis of matching workloads' rollouts, and the
/// rollback when a check fails.
#[derive(Clone, Debug)]
pub struct RollbackRule {
    pub name: String,
    pub matchers: Vec<LabelMatch>,
    pub executor: String,
    pub window_ms: i64,
    pub cooldown_ms: i64,
    pub checks: Vec<super::analysis::Check>,
    pub dry_run: bool,
}

/// Release tracking (see `rollout`).
#[derive(Clone, Debug)]
pub struct RolloutsConfig {
    pub interval: std::time::Duration,
    pub query: String,
}

/// Replicas per Docker/Podman service and image, from the agents'
/// `vigil_container_info`.
pub const DEFAULT_ROLLOUT_QUERY: &str =
    r#"count by (service, image) (vigil_container_info{service!=""})"#;

impl Default for RolloutsConfig {
    fn default() -> Self {
        RolloutsConfig {
            interval: std::time::Duration::from_secs(2),
            query: DEFAULT_ROLLOUT_QUERY.to_string(),
        }
    }
}

/// The validated actions file.
#[derive(Clone, Debug, Default)]
pub struct ActionsConfig {
    pub rollouts: RolloutsConfig,
    pub rollback: Vec<RollbackRule>,
    pub executors: BTreeMap<String, ExecutorConfig>,
    pub restart: Vec<RestartRule>,
    pub autoscale: Vec<ScalerConfig>,
    pub global: super::restart::GlobalLimit,
    pub alertmanager_token: Option<String>,
    pub dry_run: bool,
}

impl Default for super::restart::GlobalLimit {
    fn default() -> Self {
        super::restart::GlobalLimit {
            max: 10,
            per_ms: 60_000,
        }
    }
}

/// Why the actions file was refused.
#[derive(Debug, thiserror::Error)]
#[error("actions file {path}: {message}")]
pub struct ActionsConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl ActionsConfig {
    pub fn load(path: &Path) -> Result<Self, ActionsConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ActionsConfigError {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ActionsConfigError> {
        let err = |message: String| ActionsConfigError {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawFile = vigil_common::config::parse_yaml(text).map_err(err)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut executors = BTreeMap::new();
        for (name, e) in raw.executors {
            let cfg = match e {
                RawExecutor::Webhook {
                    url,
                    secret_file,
                    timeout,
                    max_attempts,
                } => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(err(format!("executor {name}: url {url:?} is not http(s)")));
                    }
                    let secrets = match secret_file {
                        Some(f) => {
                            let f = base.join(f);
                            let text = std::fs::read_to_string(&f).map_err(|e| {
                                err(format!("executor {name}: secret_file {}: {e}", f.display()))
                            })?;
                            text.split_whitespace()
                                .map(Secret::parse)
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|e| err(format!("executor {name}: {e}")))?
                        }
                        None => Vec::new(),
                    };
                    ExecutorConfig::Webhook {
                        url,
                        secrets,
                        timeout: timeout.unwrap_or(Duration::from_secs(10)).as_std(),
                        max_attempts: max_attempts.unwrap_or(6).max(1),
                    }
                }
                RawExecutor::Docker {
                    socket,
                    timeout,
                    stop_timeout,
                    service_label,
                } => {
                    let timeout = timeout.unwrap_or(Duration::from_secs(30)).as_std();
                    let stop = stop_timeout
                        .map(|d| d.as_std())
                        .unwrap_or(std::time::Duration::from_secs(10));
                    // the restart call returns once the container stopped and
                    // started: it must fit in the request's timeout
                    if stop + std::time::Duration::from_secs(5) > timeout {
                        return Err(err(format!(
                            "executor {name}: stop_timeout ({} s) must be at least 5 s below timeout ({} s): the restart call waits for the stop",
                            stop.as_secs(),
                            timeout.as_secs()
                        )));
                    }
                    ExecutorConfig::Docker {
                        socket: socket.unwrap_or_else(|| PathBuf::from("/var/run/docker.sock")),
                        timeout,
                        stop_timeout_s: u32::try_from(stop.as_secs()).unwrap_or(u32::MAX),
                        service_label: service_label
                            .unwrap_or_else(|| "com.docker.compose.service".into()),
                    }
                }
                RawExecutor::Kubernetes {
                    api_server,
                    token_file,
                    ca_file,
                    timeout,
                    restart_mode,
                } => ExecutorConfig::Kubernetes {
                    api_server,
                    token_file: token_file.map(|f| base.join(f)),
                    ca_file: ca_file.map(|f| base.join(f)),
                    timeout: timeout.unwrap_or(Duration::from_secs(15)).as_std(),
                    restart_mode: restart_mode.unwrap_or(super::kubernetes::RestartMode::Rollout),
                },
            };
            executors.insert(name, cfg);
        }
        let known = |n: &str, what: &str| -> Result<(), ActionsConfigError> {
            if executors.contains_key(n) {
                Ok(())
            } else {
                Err(err(format!("{what}: unknown executor {n:?}")))
            }
        };
        let mut restart = Vec::new();
        for r in raw.restart {
            known(&r.executor, &format!("restart rule {}", r.name))?;
            let mut matchers: Vec<LabelMatch> = r
                .matchers
                .into_iter()
                .map(|(k, v)| LabelMatch::Equal(k, v))
                .collect();
            for (k, v) in r.match_re {
                let re = regex::Regex::new(&format!("^(?s:{v})$"))
                    .map_err(|e| err(format!("restart rule {}: match_re {k}: {e}", r.name)))?;
                matchers.push(LabelMatch::Regex(k, re));
            }
            if matchers.is_empty() {
                return Err(err(format!(
                    "restart rule {}: needs at least one matcher",
                    r.name
                )));
            }
            restart.push(RestartRule {
                name: r.name,
                matchers,
                executor: r.executor,
                policy: super::restart::RestartPolicy {
                    cooldown_ms: r.cooldown.unwrap_or(Duration::from_secs(300)).as_millis() as i64,
                    max_restarts: r.max_restarts.unwrap_or(5),
                    window_ms: r.window.unwrap_or(Duration::from_secs(3600)).as_millis() as i64,
                },
                dry_run: r.dry_run,
            });
        }
        let mut autoscale = Vec::new();
        for s in raw.autoscale {
            known(&s.executor, &format!("autoscaler {}", s.name))?;
            let min = s.min_replicas.unwrap_or(1);
            if min > s.max_replicas || s.max_replicas == 0 {
                return Err(err(format!(
                    "autoscaler {}: min_replicas {min} / max_replicas {} make no sense",
                    s.name, s.max_replicas
                )));
            }
            if s.target.is_nan() || s.target <= 0.0 {
                return Err(err(format!(
                    "autoscaler {}: target must be above 0",
                    s.name
                )));
            }
            promql_parser::parser::parse(&s.query)
                .map_err(|e| err(format!("autoscaler {}: query: {e}", s.name)))?;
            if let Some(q) = &s.replicas_query {
                promql_parser::parser::parse(q)
                    .map_err(|e| err(format!("autoscaler {}: replicas_query: {e}", s.name)))?;
            }
            let rules = |r: Option<RawRules>, d: Rules| Rules {
                stabilization_window_seconds: r
                    .as_ref()
                    .and_then(|r| r.stabilization_window)
                    .map(|w| (w.as_millis() / 1000) as u32)
                    .unwrap_or(d.stabilization_window_seconds),
                select_policy: r
                    .as_ref()
                    .and_then(|r| r.select_policy)
                    .unwrap_or(d.select_policy),
                policies: r
                    .and_then(|r| r.policies)
                    .map(|ps| {
                        ps.into_iter()
                            .map(|p| Policy {
                                kind: p.kind,
                                value: p.value,
                                period_seconds: (p.period.as_millis() / 1000).max(1) as u32,
                            })
                            .collect()
                    })
                    .unwrap_or(d.policies),
            };
            autoscale.push(ScalerConfig {
                behavior: Behavior {
                    min_replicas: min,
                    max_replicas: s.max_replicas,
                    up: rules(s.behavior.scale_up, Rules::default_up()),
                    down: rules(s.behavior.scale_down, Rules::default_down()),
                },
                name: s.name,
                executor: s.executor,
                workload: s.workload,
                query: s.query,
                target: s.target,
                tolerance: s.tolerance.unwrap_or(super::hpa::DEFAULT_TOLERANCE),
                interval: s.interval.unwrap_or(Duration::from_secs(5)).as_std(),
                replicas_query: s.replicas_query,
                dry_run: s.dry_run,
            });
        }
        let alertmanager_token = match raw.global.alertmanager_token_file {
            // an empty or unreadable file is an error, never open access
            Some(f) => Some(
                vigil_common::config::read_token(&base.join(f))
                    .map_err(|e| err(format!("alertmanager_token_file: {e}")))?,
            ),
            None => None,
        };
        let rollouts = RolloutsConfig {
            interval: raw
                .rollouts
                .interval
                .unwrap_or(Duration::from_secs(2))
                .as_std()
                .max(std::time::Duration::from_millis(100)),
            query: match raw.rollouts.query {
                Some(q) => {
                    promql_parser::parser::parse(&q)
                        .map_err(|e| err(format!("rollouts: query: {e}")))?;
                    q
                }
                None => DEFAULT_ROLLOUT_QUERY.to_string(),
            },
        };
        let mut rollback = Vec::new();
        for r in raw.rollback {
            let what = format!("rollback rule {}", r.name);
            known(&r.executor, &what)?;
            let on_kubernetes = matches!(
                executors.get(&r.executor),
                Some(ExecutorConfig::Kubernetes { .. })
            );
            if r.matchers.is_empty() {
                return Err(err(format!("{what}: needs at least one matcher")));
            }
            if r.checks.is_empty() {
                return Err(err(format!("{what}: needs at least one check")));
            }
            let mut checks = Vec::new();
            for c in r.checks {
                let query = match (c.metric, c.query) {
                    (Some(m), None) if on_kubernetes && m == "probe_failures" => {
                        return Err(err(format!(
                            "{what}: check {}: probe_failures counts vigil's own probes of Docker/Podman containers; on Kubernetes the kubelet probes pods and restarts failing ones: use restarts",
                            c.name
                        )));
                    }
                    (Some(m), None) => super::analysis::builtin(&m)
                        .ok_or_else(|| {
                            err(format!(
                                "{what}: check {}: unknown metric {m:?} (restarts, oom_kills, probe_failures, error_logs_per_second)",
                                c.name
                            ))
                        })?
                        .to_string(),
                    (None, Some(q)) => q,
                    _ => {
                        return Err(err(format!(
                            "{what}: check {}: needs one of metric and query",
                            c.name
                        )));
                    }
                };
                let sample = super::analysis::render(
                    &query,
                    &Labels::new(r.matchers.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                    &super::analysis::Version {
                        image: "i".into(),
                        container_ids: vec!["c".into()],
                        names: vec!["n".into()],
                    },
                    60,
                );
                promql_parser::parser::parse(&sample)
                    .map_err(|e| err(format!("{what}: check {}: query: {e}", c.name)))?;
                if c.max.is_none() && c.max_ratio.is_none() {
                    return Err(err(format!(
                        "{what}: check {}: needs max or max_ratio",
                        c.name
                    )));
                }
                if c.max.is_some_and(f64::is_nan)
                    || c.max_ratio.is_some_and(|r| r.is_nan() || r <= 0.0)
                {
                    return Err(err(format!(
                        "{what}: check {}: max must be a number, max_ratio above 0",
                        c.name
                    )));
                }
                checks.push(super::analysis::Check {
                    name: c.name,
                    query,
                    max: c.max,
                    max_ratio: c.max_ratio,
                });
            }
            rollback.push(RollbackRule {
                matchers: r
                    .matchers
                    .into_iter()
                    .map(|(k, v)| LabelMatch::Equal(k, v))
                    .collect(),
                executor: r.executor,
                window_ms: r.window.unwrap_or(Duration::from_secs(60)).as_millis() as i64,
                cooldown_ms: r.cooldown.unwrap_or(Duration::from_secs(600)).as_millis() as i64,
                checks,
                dry_run: r.dry_run,
                name: r.name,
            });
        }
        Ok(ActionsConfig {
            rollback,
            rollouts,
            executors,
            restart,
            autoscale,
            global: super::restart::GlobalLimit {
                max: raw.global.max_restarts_per_minute.unwrap_or(10),
                per_ms: 60_000,
            },
            alertmanager_token,
            dry_run: raw.global.dry_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let y = r#"
executors:
  podman: {type: docker, socket: /run/podman/podman.sock}
  hooks: {type: webhook, url: "http://127.0.0.1:9000/hook"}
restart:
  - name: oom
    match: {alertname: VigilContainerOOMKilled}
    match_re: {namespace: "prod-.*"}
    executor: podman
    cooldown: 5m
autoscale:
  - name: web
    executor: podman
    workload: {label: com.docker.compose.service, value: web}
    query: avg(rate(container_cpu_usage_seconds_total[15s])) * 100
    target: 40
    min_replicas: 2
    max_replicas: 4
    behavior:
      scale_down: {stabilization_window: 30s}
"#;
        let c = ActionsConfig::parse(y, Path::new("/x/actions.yml")).unwrap();
        assert_eq!(c.executors.len(), 2);
        assert_eq!(c.restart[0].policy.cooldown_ms, 300_000);
        assert_eq!(
            c.autoscale[0].behavior.down.stabilization_window_seconds,
            30
        );
        assert_eq!(c.autoscale[0].behavior.up, Rules::default_up());
        let l = Labels::new([
            ("alertname", "VigilContainerOOMKilled"),
            ("namespace", "prod-a"),
        ]);
        assert!(c.restart[0].matchers.iter().all(|m| m.matches(&l)));
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        for (y, want) in [
            ("nope: 1", "nope"),
            (
                "restart: [{name: r, match: {a: b}, executor: ghost}]",
                "ghost",
            ),
            (
                "executors: {d: {type: docker}}\nautoscale: [{name: s, executor: d, workload: {}, query: 'sum(', target: 1, max_replicas: 2}]",
                "query",
            ),
            (
                "executors: {d: {type: docker}}\nautoscale: [{name: s, executor: d, workload: {}, query: up, target: 1, min_replicas: 3, max_replicas: 2}]",
                "min_replicas",
            ),
            ("executors: {w: {type: webhook, url: ftp://x}}", "ftp"),
            (
                "executors: {d: {type: docker, stop_timeout: 30s}}",
                "stop_timeout (30 s) must be at least 5 s below timeout (30 s)",
            ),
        ] {
            let e = ActionsConfig::parse(y, Path::new("/x/a.yml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("/x/a.yml") && e.contains(want), "{y}: {e}");
        }
    }

    #[test]
    fn a_docker_restart_gives_the_container_its_stop_timeout() {
        let stop = |y: &str| match ActionsConfig::parse(y, Path::new("/x/a.yml"))
            .unwrap()
            .executors
            .remove("d")
        {
            Some(ExecutorConfig::Docker { stop_timeout_s, .. }) => stop_timeout_s,
            other => panic!("{other:?}"),
        };
        assert_eq!(stop("executors: {d: {type: docker}}"), 10);
        assert_eq!(stop("executors: {d: {type: docker, stop_timeout: 2s}}"), 2);
        assert_eq!(
            stop("executors: {d: {type: docker, stop_timeout: 1m, timeout: 90s}}"),
            60
        );
    }

    #[test]
    fn rollback_rules_parse_and_refuse_mistakes() {
        let y = r#"
executors:
  podman: {type: docker}
rollback:
  - name: web
    match: {service: web}
    executor: podman
    window: 30s
    checks:
      - {name: probes, metric: probe_failures, max: 0}
      - {name: errors, query: 'sum(rate(app_errors_total{service="$service",image="$image"}[$window]))', max_ratio: 2}
"#;
        let c = ActionsConfig::parse(y, Path::new("/x/a.yml")).unwrap();
        let r = &c.rollback[0];
        assert_eq!((r.window_ms, r.cooldown_ms), (30_000, 600_000));
        assert_eq!(r.checks.len(), 2);
        assert!(r.checks[0].query.contains("vigil_probe_failures_total"));
        assert_eq!(r.checks[1].max_ratio, Some(2.0));
        let base = "executors: {podman: {type: docker}, k: {type: kubernetes, api_server: 'https://x'}}\nrollback: ";
        for (rule, want) in [
            (
                "[{name: r, match: {service: w}, executor: podman, checks: [{name: c, metric: nope, max: 0}]}]",
                "unknown metric",
            ),
            (
                "[{name: r, match: {service: w}, executor: podman, checks: [{name: c, metric: restarts}]}]",
                "max or max_ratio",
            ),
            (
                "[{name: r, match: {service: w}, executor: podman, checks: [{name: c, query: 'sum(', max: 0}]}]",
                "query",
            ),
            (
                "[{name: r, match: {service: w}, executor: podman, checks: [{name: c, metric: restarts, query: up, max: 0}]}]",
                "one of metric and query",
            ),
            (
                "[{name: r, match: {service: w}, executor: podman, checks: []}]",
                "at least one check",
            ),
            (
                "[{name: r, executor: podman, checks: [{name: c, metric: restarts, max: 0}]}]",
                "matcher",
            ),
            (
                "[{name: r, match: {deployment: w}, executor: k, checks: [{name: c, metric: probe_failures, max: 0}]}]",
                "the kubelet probes pods",
            ),
            (
                "[{name: r, match: {service: w}, executor: podman, checks: [{name: c, metric: restarts, max_ratio: 0}]}]",
                "max_ratio above 0",
            ),
        ] {
            let e = ActionsConfig::parse(&format!("{base}{rule}"), Path::new("/x/a.yml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{rule}: {e}");
        }
        // a kubernetes rollback with the checks that work there
        let k = ActionsConfig::parse(
            &format!("{base}[{{name: r, match: {{namespace: shop, deployment: web}}, executor: k, checks: [{{name: c, metric: restarts, max: 0}}, {{name: e, metric: error_logs_per_second, max_ratio: 2}}]}}]"),
            Path::new("/x/a.yml"),
        )
        .unwrap();
        assert_eq!(k.rollback[0].executor, "k");
    }

    #[test]
    fn an_empty_or_missing_alertmanager_token_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("a.yml");
        let y = "global: {alertmanager_token_file: tok}\n";
        // missing
        let e = ActionsConfig::parse(y, &cfg).unwrap_err().to_string();
        assert!(e.contains("alertmanager_token_file"), "{e}");
        // empty (or only blanks): never open access
        std::fs::write(d.path().join("tok"), " \n").unwrap();
        let e = ActionsConfig::parse(y, &cfg).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        std::fs::write(d.path().join("tok"), "s3cret\n").unwrap();
        let c = ActionsConfig::parse(y, &cfg).unwrap();
        assert_eq!(c.alertmanager_token.as_deref(), Some("s3cret"));
    }
}
