//! The actions engine: turns triggers (firing alerts from the collector's own
//! rules, Alertmanager notifications, agent events such as OOM kills) into
//! restarts, runs one autoscaler loop per configured workload, and carries
//! decisions out through executors — always off the caller's path, so a slow
//! or hanging executor never blocks rule evaluation, ingest or other actions.
//! Every decision and delivery is audited before and after it happens.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::audit::{ActionState, Audit, AuditEntry, AuditError};
use super::config::{ActionsConfig, ExecutorConfig, RestartRule, ScalerConfig};
use super::docker::DockerClient;
use super::hpa::{self, PodMetric};
use super::kubernetes::{KubeClient, RestartMode, deployment_of};
use super::restart::{self, Verdict};
use super::webhook::{self, Delivery, DeliveryPolicy, Secret};

/// An instant query's answer: each sample's labels and value.
pub type QueryResult = Result<Vec<(BTreeMap<String, String>, f64)>, String>;

/// Instant queries for the autoscalers (implemented over the PromQL engine).
pub trait MetricSource: Send + Sync {
    /// The samples of `expr` evaluated at `at_ms`; empty means no data.
    fn query(&self, expr: &str, at_ms: i64) -> QueryResult;
}

/// Something that may trigger a restart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trigger {
    /// `rules`, `alertmanager` or `event`.
    pub source: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `firing` or `resolved` (resolved triggers are recorded, never acted on).
    pub status: String,
    pub starts_at: String,
    /// Same key → acted on once.
    pub dedup_key: String,
}

/// The JSON body a webhook executor receives (documented in the README).
#[derive(Clone, Debug, Serialize)]
pub struct ActionRequest {
    /// Idempotency id, the same across retries of one delivery.
    pub id: String,
    /// `restart` or `scale`.
    pub action: String,
    pub rule: String,
    pub target: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_replicas: Option<u32>,
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Trigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricReading>,
    pub dry_run: bool,
    /// RFC 3339.
    pub time: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricReading {
    pub query: String,
    pub value: f64,
    pub target: f64,
}

/// How an action is carried out.
enum Executor {
    Webhook {
        url: String,
        secrets: Vec<Secret>,
        policy: DeliveryPolicy,
        client: reqwest::Client,
    },
    Docker {
        client: DockerClient,
        service_label: String,
    },
    Kubernetes {
        client: KubeClient,
        restart_mode: RestartMode,
    },
}

impl Executor {
    fn build(cfg: &ExecutorConfig) -> Result<Self, String> {
        Ok(match cfg {
            ExecutorConfig::Webhook {
                url,
                secrets,
                timeout,
                max_attempts,
            } => Executor::Webhook {
                url: url.clone(),
                secrets: secrets.clone(),
                policy: DeliveryPolicy {
                    timeout: *timeout,
                    max_attempts: *max_attempts,
                    ..Default::default()
                },
                client: {
                    super::ensure_crypto_provider();
                    reqwest::Client::builder()
                }
                .build()
                .map_err(|e| format!("http client: {e}"))?,
            },
            ExecutorConfig::Docker {
                socket,
                timeout,
                service_label,
            } => Executor::Docker {
                client: DockerClient::new(socket.clone(), *timeout),
                service_label: service_label.clone(),
            },
            ExecutorConfig::Kubernetes {
                api_server,
                token_file,
                ca_file,
                timeout,
                restart_mode,
            } => Executor::Kubernetes {
                client: KubeClient::new(
                    api_server.as_deref(),
                    token_file.as_deref(),
                    ca_file.as_deref(),
                    *timeout,
                )
                .map_err(|e| e.to_string())?,
                restart_mode: *restart_mode,
            },
        })
    }

    /// Carries `req` out. Ok: a short description; Err: the failure, and
    /// whether it is final (`gave_up`/`gone`) for the audit.
    async fn execute(&self, req: &ActionRequest) -> Result<String, (String, String)> {
        match self {
            Executor::Webhook {
                url,
                secrets,
                policy,
                client,
            } => {
                let body =
                    serde_json::to_vec(req).map_err(|e| ("failed".to_string(), e.to_string()))?;
                match webhook::deliver(client, url, secrets, &req.id, &body, policy).await {
                    Delivery::Delivered { attempts, status } => {
                        Ok(format!("HTTP {status} after {attempts} attempt(s)"))
                    }
                    Delivery::Gone { attempts } => Err((
                        "gone".into(),
                        format!("receiver answered 410 Gone (attempt {attempts})"),
                    )),
                    Delivery::GaveUp {
                        attempts,
                        last_error,
                    } => Err((
                        "gave_up".into(),
                        format!("{attempts} attempts, last: {last_error}"),
                    )),
                }
            }
            Executor::Docker {
                client,
                service_label,
            } => match req.action.as_str() {
                "restart" => {
                    let id = req
                        .target
                        .get("container_id")
                        .or_else(|| req.target.get("name"))
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| {
                            (
                                "failed".to_string(),
                                "target has no container_id or name".to_string(),
                            )
                        })?;
                    client
                        .restart(id, 10)
                        .await
                        .map(|_| format!("restarted container {id}"))
                        .map_err(|e| ("failed".into(), e.to_string()))
                }
                "scale" => {
                    let (label, value) =
                        docker_service(&req.target, service_label).ok_or_else(|| {
                            (
                                "failed".to_string(),
                                "workload names no service".to_string(),
                            )
                        })?;
                    let to = req.to_replicas.unwrap_or(0);
                    client
                        .scale_service(&label, &value, to)
                        .await
                        .map(|n| format!("service {label}={value} now has {n} replicas"))
                        .map_err(|e| ("failed".into(), e.to_string()))
                }
                other => Err(("failed".into(), format!("unknown action {other}"))),
            },
            Executor::Kubernetes {
                client,
                restart_mode,
            } => {
                let fail = |e: super::kubernetes::KubeError| ("failed".to_string(), e.to_string());
                match req.action.as_str() {
                    "restart" => {
                        let ns = req.target.get("namespace").filter(|s| !s.is_empty());
                        let pod = req.target.get("pod").filter(|s| !s.is_empty());
                        let (Some(ns), Some(pod)) = (ns, pod) else {
                            return match deployment_of(&req.target) {
                                Ok((ns, d)) => client
                                    .rollout_restart(&ns, &d, &req.time)
                                    .await
                                    .map(|_| format!("rollout restart of deployment {ns}/{d}"))
                                    .map_err(fail),
                                Err(e) => Err(fail(e)),
                            };
                        };
                        match restart_mode {
                            RestartMode::DeletePod => client
                                .delete_pod(ns, pod)
                                .await
                                .map(|_| format!("deleted pod {ns}/{pod}"))
                                .map_err(fail),
                            RestartMode::Rollout => {
                                match client.owning_deployment(ns, pod).await.map_err(fail)? {
                                    Some(d) => client
                                        .rollout_restart(ns, &d, &req.time)
                                        .await
                                        .map(|_| format!("rollout restart of deployment {ns}/{d}"))
                                        .map_err(fail),
                                    // a pod without a Deployment: deleting it is the only restart
                                    None => client
                                        .delete_pod(ns, pod)
                                        .await
                                        .map(|_| {
                                            format!("deleted pod {ns}/{pod} (no owning deployment)")
                                        })
                                        .map_err(fail),
                                }
                            }
                        }
                    }
                    "scale" => {
                        let (ns, d) = deployment_of(&req.target).map_err(fail)?;
                        let to = req.to_replicas.unwrap_or(0);
                        client
                            .scale(&ns, &d, to)
                            .await
                            .map(|_| format!("deployment {ns}/{d} scaled to {to}"))
                            .map_err(fail)
                    }
                    other => Err(("failed".into(), format!("unknown action {other}"))),
                }
            }
        }
    }

    /// Current replicas of a workload, where the executor can tell.
    async fn replicas(&self, workload: &BTreeMap<String, String>) -> Result<Option<u32>, String> {
        match self {
            Executor::Webhook { .. } => Ok(None),
            Executor::Docker {
                client,
                service_label,
            } => {
                let Some((label, value)) = docker_service(workload, service_label) else {
                    return Ok(None);
                };
                client
                    .list_service(&label, &value)
                    .await
                    .map(|l| Some(l.len() as u32))
                    .map_err(|e| e.to_string())
            }
            Executor::Kubernetes { client, .. } => {
                let (ns, d) = deployment_of(workload).map_err(|e| e.to_string())?;
                client
                    .replicas(&ns, &d)
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// `{label: L, value: V}` or `{service: V}` (with the executor's label).
fn docker_service(w: &BTreeMap<String, String>, default_label: &str) -> Option<(String, String)> {
    if let Some(v) = w.get("value") {
        let l = w
            .get("label")
            .cloned()
            .unwrap_or_else(|| default_label.to_string());
        return Some((l, v.clone()));
    }
    w.get("service")
        .map(|v| (default_label.to_string(), v.clone()))
}

/// The identity labels of a restart target, and its key.
fn restart_target(labels: &BTreeMap<String, String>) -> Option<(String, BTreeMap<String, String>)> {
    let mut t = BTreeMap::new();
    for k in [
        "namespace",
        "pod",
        "container",
        "container_id",
        "name",
        "node",
        "service",
    ] {
        if let Some(v) = labels.get(k).filter(|v| !v.is_empty()) {
            t.insert(k.to_string(), v.clone());
        }
    }
    let key = if let Some(id) = t.get("container_id") {
        format!("id/{id}")
    } else if let (Some(ns), Some(pod)) = (t.get("namespace"), t.get("pod")) {
        format!(
            "pod/{ns}/{pod}/{}",
            t.get("container").map(String::as_str).unwrap_or("")
        )
    } else if let Some(n) = t.get("name") {
        format!(
            "name/{}/{n}",
            t.get("node").map(String::as_str).unwrap_or("")
        )
    } else {
        return None;
    };
    Some((key, t))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ActionLabels {
    action: String,
    executor: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ScalerLabels {
    scaler: String,
}

#[derive(Default)]
struct Metrics {
    actions: Family<ActionLabels, Counter>,
    current: Family<ScalerLabels, Gauge>,
    desired: Family<ScalerLabels, Gauge>,
    no_data: Family<ScalerLabels, Counter>,
    /// The autoscaler's metric (the workload's average) and its target, as
    /// last evaluated: what the dashboards draw next to the replicas.
    metric: Family<ScalerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    target: Family<ScalerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    crash_looping: Gauge,
    audit_errors: Counter,
}

/// What [`Actions::handle`] did with a batch of triggers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HandleReport {
    pub matched: usize,
    pub duplicates: usize,
    pub started: usize,
}

/// The engine. Cheap to share (`Arc`).
pub struct Actions {
    cfg: ActionsConfig,
    executors: BTreeMap<String, Executor>,
    audit: Audit,
    state: Mutex<ActionState>,
    in_flight: Mutex<HashSet<String>>,
    metrics: Metrics,
    /// Where executions run: callers may be on threads outside the runtime.
    runtime: tokio::runtime::Handle,
    /// Wakes [`Actions::run_crash_loop_alerts`] when a target is marked.
    crash_wake: tokio::sync::Notify,
}

impl Actions {
    /// Opens the audit store in `dir` (state survives restarts) and builds
    /// the executors. Must be called inside the tokio runtime.
    pub fn new(cfg: ActionsConfig, dir: &Path) -> Result<Arc<Self>, String> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            "the actions engine must be created inside the tokio runtime".to_string()
        })?;
        let (audit, state) = Audit::open(dir, 10_000).map_err(|e| e.to_string())?;
        let mut executors = BTreeMap::new();
        for (name, e) in &cfg.executors {
            executors.insert(
                name.clone(),
                Executor::build(e).map_err(|e| format!("executor {name}: {e}"))?,
            );
        }
        let a = Actions {
            cfg,
            executors,
            audit,
            state: Mutex::new(state),
            in_flight: Mutex::new(HashSet::new()),
            metrics: Metrics::default(),
            runtime,
            crash_wake: tokio::sync::Notify::new(),
        };
        a.metrics
            .crash_looping
            .set(a.state.lock().crash_looping.len() as i64);
        Ok(Arc::new(a))
    }

    pub fn config(&self) -> &ActionsConfig {
        &self.cfg
    }

    /// Registers `vigil_actions_*` metrics.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "vigil_actions",
            "Actions decided and carried out, by result",
            m.actions.clone(),
        );
        registry.register(
            "vigil_actions_scaler_current_replicas",
            "Replicas an autoscaler last saw",
            m.current.clone(),
        );
        registry.register(
            "vigil_actions_scaler_desired_replicas",
            "Replicas an autoscaler last decided on",
            m.desired.clone(),
        );
        registry.register(
            "vigil_actions_scaler_metric",
            "The autoscaler's metric as last evaluated (the average over the workload)",
            m.metric.clone(),
        );
        registry.register(
            "vigil_actions_scaler_target",
            "The autoscaler's target for its metric",
            m.target.clone(),
        );
        registry.register(
            "vigil_actions_scaler_no_data",
            "Autoscaler evaluations skipped for lack of data",
            m.no_data.clone(),
        );
        registry.register(
            "vigil_actions_crash_looping_targets",
            "Targets vigil stopped restarting",
            m.crash_looping.clone(),
        );
        registry.register(
            "vigil_actions_audit_errors",
            "Audit log writes that failed",
            m.audit_errors.clone(),
        );
    }

    /// The newest audit entries (for `GET /api/v1/actions`).
    pub fn audit_entries(&self, limit: usize, since_seq: u64) -> Vec<AuditEntry> {
        self.audit.recent(limit, since_seq)
    }

    /// Targets currently marked crash-looping: key → since (ms).
    pub fn crash_looping(&self) -> BTreeMap<String, i64> {
        self.state.lock().crash_looping.clone()
    }

    fn count(&self, action: &str, executor: &str, result: &str) {
        self.metrics
            .actions
            .get_or_create(&ActionLabels {
                action: action.into(),
                executor: executor.into(),
                result: result.into(),
            })
            .inc();
    }

    fn record(&self, e: AuditEntry) {
        if let Err(err) = self.audit.append(e) {
            self.metrics.audit_errors.inc();
            tracing::error!(error = %err, "audit log write failed");
        }
    }

    fn save_state(&self) -> Result<(), AuditError> {
        let s = self.state.lock().clone();
        self.audit.save_state(&s)
    }

    /// Handles triggers: matching restart rules decide at once (cooldowns,
    /// crash-looping, rate limit — persisted before anything runs); the
    /// restarts themselves run in the background.
    pub fn handle(self: &Arc<Self>, triggers: Vec<Trigger>) -> HandleReport {
        let mut report = HandleReport::default();
        let now = now_ms();
        for t in triggers {
            for rule in &self.cfg.restart {
                if !rule.matchers.iter().all(|m| m.matches(&t.labels)) {
                    continue;
                }
                report.matched += 1;
                if t.status != "firing" {
                    continue;
                }
                {
                    let mut st = self.state.lock();
                    let key = format!("{}|{}", rule.name, t.dedup_key);
                    if st.seen_notifications.contains_key(&key) {
                        report.duplicates += 1;
                        continue;
                    }
                    st.seen_notifications.insert(key, now);
                    // forget notifications older than a day
                    st.seen_notifications.retain(|_, at| now - *at < 86_400_000);
                }
                if self.decide_restart(rule, &t, now) {
                    report.started += 1;
                }
            }
        }
        report
    }

    fn decide_restart(self: &Arc<Self>, rule: &RestartRule, t: &Trigger, now: i64) -> bool {
        let executor_kind = self
            .cfg
            .executors
            .get(&rule.executor)
            .map(|e| e.kind())
            .unwrap_or("?");
        let Some((key, target)) = restart_target(&t.labels) else {
            tracing::warn!(rule = %rule.name, labels = ?t.labels, "trigger names no container or pod; not restarting");
            self.count("restart", executor_kind, "no_target");
            return false;
        };
        let id = super::new_id();
        let verdict = {
            let mut st = self.state.lock();
            restart::decide(
                &mut st,
                &format!("{}|{key}", rule.name),
                now,
                &rule.policy,
                &self.cfg.global,
            )
        };
        let (result, detail) = match &verdict {
            Verdict::Restart => (
                "decided",
                format!(
                    "{} trigger {}",
                    t.source,
                    t.labels.get("alertname").cloned().unwrap_or_default()
                ),
            ),
            Verdict::Cooldown { remaining_ms } => (
                "skipped_cooldown",
                format!("cooldown: {} s left", remaining_ms / 1000),
            ),
            Verdict::CrashLooping { restarts } => (
                "crash_looping",
                format!("{restarts} restarts within the window; restarts stopped"),
            ),
            Verdict::RateLimited => (
                "skipped_rate_limit",
                "global restart rate limit reached".to_string(),
            ),
        };
        let dry_run = self.cfg.dry_run || rule.dry_run;
        let entry = AuditEntry {
            seq: 0,
            time_ms: now,
            time: String::new(),
            action: "restart".into(),
            rule: rule.name.clone(),
            target: target.clone(),
            executor: rule.executor.clone(),
            result: if verdict == Verdict::Restart && dry_run {
                "dry_run".into()
            } else {
                result.into()
            },
            detail: detail.clone(),
            id: id.clone(),
            from_replicas: None,
            to_replicas: None,
        };
        self.record(entry.clone());
        if let Err(e) = self.save_state() {
            self.metrics.audit_errors.inc();
            tracing::error!(error = %e, "saving action state failed");
        }
        self.metrics
            .crash_looping
            .set(self.state.lock().crash_looping.len() as i64);
        self.count("restart", executor_kind, &entry.result);
        if matches!(verdict, Verdict::CrashLooping { .. }) {
            tracing::error!(rule = %rule.name, target = %key, "{detail}");
            self.crash_wake.notify_one();
        }
        if verdict != Verdict::Restart || dry_run {
            return false;
        }
        if !self.in_flight.lock().insert(key.clone()) {
            return false;
        }
        let req = ActionRequest {
            id,
            action: "restart".into(),
            rule: rule.name.clone(),
            target,
            from_replicas: None,
            to_replicas: None,
            reason: detail,
            alerts: vec![t.clone()],
            metric: None,
            dry_run,
            time: super::audit::rfc3339(now),
        };
        let me = Arc::clone(self);
        let executor = rule.executor.clone();
        self.runtime.spawn(async move {
            me.execute(&executor, req, None).await;
            me.in_flight.lock().remove(&key);
        });
        true
    }

    /// Runs `req` on `executor` and audits the outcome; returns success.
    async fn execute(
        &self,
        executor: &str,
        req: ActionRequest,
        scaler: Option<(&ScalerConfig, u32)>,
    ) -> bool {
        let kind = self
            .cfg
            .executors
            .get(executor)
            .map(|e| e.kind())
            .unwrap_or("?");
        let outcome = match self.executors.get(executor) {
            Some(e) => e.execute(&req).await,
            None => Err(("failed".into(), format!("unknown executor {executor}"))),
        };
        let (result, detail, ok) = match outcome {
            Ok(d) => ("delivered".to_string(), d, true),
            Err((r, d)) => (r, d, false),
        };
        if !ok {
            tracing::warn!(action = %req.action, rule = %req.rule, executor, result = %result, "{detail}");
        } else {
            tracing::info!(action = %req.action, rule = %req.rule, executor, "{detail}");
        }
        let now = now_ms();
        if let (true, Some((sc, from))) = (ok, scaler) {
            let mut st = self.state.lock();
            st.scalers.entry(sc.name.clone()).or_default().record_scale(
                now,
                from,
                req.to_replicas.unwrap_or(from),
                &sc.behavior,
            );
        }
        self.record(AuditEntry {
            seq: 0,
            time_ms: now,
            time: String::new(),
            action: req.action.clone(),
            rule: req.rule.clone(),
            target: req.target.clone(),
            executor: executor.to_string(),
            result: result.clone(),
            detail,
            id: req.id.clone(),
            from_replicas: req.from_replicas,
            to_replicas: req.to_replicas,
        });
        if let Err(e) = self.save_state() {
            self.metrics.audit_errors.inc();
            tracing::error!(error = %e, "saving action state failed");
        }
        self.count(&req.action, kind, &result);
        ok
    }

    /// Runs every autoscaler until `shutdown`: each evaluates every
    /// `interval`, and also as soon as new data is stored (`data`, when
    /// given), at most every `min(interval, 250 ms)`.
    pub async fn run_autoscalers(
        self: Arc<Self>,
        source: Arc<dyn MetricSource>,
        data: Option<tokio::sync::watch::Receiver<u64>>,
        shutdown: CancellationToken,
    ) {
        let mut tasks = Vec::new();
        for sc in self.cfg.autoscale.clone() {
            let me = Arc::clone(&self);
            let src = Arc::clone(&source);
            let sd = shutdown.clone();
            let mut data = data.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(sc.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let gap = sc.interval.min(std::time::Duration::from_millis(250));
                let mut last: Option<tokio::time::Instant> = None;
                loop {
                    tokio::select! {
                        _ = sd.cancelled() => break,
                        _ = tick.tick() => {}
                        changed = async {
                            match data.as_mut() {
                                Some(d) => d.changed().await,
                                None => std::future::pending().await,
                            }
                        } => {
                            if changed.is_err() {
                                data = None;
                                continue;
                            }
                            if let Some(l) = last {
                                tokio::select! {
                                    _ = sd.cancelled() => break,
                                    _ = tokio::time::sleep_until(l + gap) => {}
                                }
                            }
                            tick.reset();
                        }
                    }
                    last = Some(tokio::time::Instant::now());
                    me.evaluate_scaler(&sc, src.as_ref(), now_ms()).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// One evaluation of one autoscaler at `now`. Returns the decision made,
    /// if there was data to make one.
    pub async fn evaluate_scaler(
        &self,
        sc: &ScalerConfig,
        source: &dyn MetricSource,
        now: i64,
    ) -> Option<hpa::Decision> {
        let labels = ScalerLabels {
            scaler: sc.name.clone(),
        };
        let samples = match source.query(&sc.query, now) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(scaler = %sc.name, error = %e, "autoscaler query failed");
                self.metrics.no_data.get_or_create(&labels).inc();
                return None;
            }
        };
        let values: Vec<f64> = samples
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
            .collect();
        if values.is_empty() {
            // no data is never zero: no scale-down on a metrics outage
            self.metrics.no_data.get_or_create(&labels).inc();
            return None;
        }
        let current = match &sc.replicas_query {
            Some(q) => source
                .query(q, now)
                .ok()
                .and_then(|s| s.first().map(|(_, v)| *v))
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| v.round() as u32),
            None => match self.executors.get(&sc.executor) {
                Some(e) => e.replicas(&sc.workload).await.unwrap_or_else(|e| {
                    tracing::warn!(scaler = %sc.name, error = %e, "cannot read current replicas");
                    None
                }),
                None => None,
            },
        };
        let Some(current) = current.filter(|c| *c > 0) else {
            self.metrics.no_data.get_or_create(&labels).inc();
            return None;
        };
        self.metrics
            .current
            .get_or_create(&labels)
            .set(i64::from(current));
        // one value: the workload's average; several: one per replica, the
        // replicas without a value counted as missing
        let value = values.iter().sum::<f64>() / values.len() as f64;
        self.metrics.metric.get_or_create(&labels).set(value);
        self.metrics.target.get_or_create(&labels).set(sc.target);
        let recommended = if values.len() == 1 {
            hpa::desired_from_average(current, value, sc.target, sc.tolerance)
        } else {
            let mut pods: Vec<PodMetric> = values.iter().map(|v| PodMetric::Ready(*v)).collect();
            while (pods.len() as u32) < current {
                pods.push(PodMetric::Missing);
            }
            hpa::metric_replicas(&pods, sc.target, sc.tolerance)
        }?;
        let decision = {
            let mut st = self.state.lock();
            st.scalers.entry(sc.name.clone()).or_default().decide(
                now,
                current,
                recommended,
                &sc.behavior,
            )
        };
        self.metrics
            .desired
            .get_or_create(&labels)
            .set(i64::from(decision.replicas));
        if decision.replicas == current {
            if let Err(e) = self.save_state() {
                tracing::error!(error = %e, "saving action state failed");
            }
            return Some(decision);
        }
        let dry_run = self.cfg.dry_run || sc.dry_run;
        let id = super::new_id();
        let reason = format!(
            "{} = {value:.4} against target {} with {current} replicas → {} ({:?})",
            sc.query, sc.target, decision.replicas, decision.limit
        );
        let kind = self
            .cfg
            .executors
            .get(&sc.executor)
            .map(|e| e.kind())
            .unwrap_or("?");
        self.record(AuditEntry {
            seq: 0,
            time_ms: now,
            time: String::new(),
            action: "scale".into(),
            rule: sc.name.clone(),
            target: sc.workload.clone(),
            executor: sc.executor.clone(),
            result: if dry_run {
                "dry_run".into()
            } else {
                "decided".into()
            },
            detail: reason.clone(),
            id: id.clone(),
            from_replicas: Some(current),
            to_replicas: Some(decision.replicas),
        });
        self.count("scale", kind, if dry_run { "dry_run" } else { "decided" });
        if dry_run {
            let _ = self.save_state();
            return Some(decision);
        }
        let req = ActionRequest {
            id,
            action: "scale".into(),
            rule: sc.name.clone(),
            target: sc.workload.clone(),
            from_replicas: Some(current),
            to_replicas: Some(decision.replicas),
            reason,
            alerts: Vec::new(),
            metric: Some(MetricReading {
                query: sc.query.clone(),
                value,
                target: sc.target,
            }),
            dry_run,
            time: super::audit::rfc3339(now),
        };
        self.execute(&sc.executor, req, Some((sc, current))).await;
        Some(decision)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Labels of a restart target from its key (see `restart_target`).
fn target_labels_of_key(key: &str) -> Vec<(String, String)> {
    let parts: Vec<&str> = key.split('/').collect();
    let pairs: &[&str] = match parts.first() {
        Some(&"id") => &["container_id"],
        Some(&"pod") => &["namespace", "pod", "container"],
        Some(&"name") => &["node", "name"],
        _ => &[],
    };
    pairs
        .iter()
        .zip(parts.iter().skip(1))
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The alert vigil raises about itself while it has stopped restarting a
/// crash-looping target.
pub const CRASH_LOOP_ALERT: &str = "VigilRestartsStopped";

impl Actions {
    /// The crash-looping targets as alerts: firing while marked (valid for
    /// `valid_ms`), resolved for keys in `previously` that are no longer
    /// marked. Returns the alerts and the keys now firing.
    pub fn crash_loop_alerts(
        &self,
        now: i64,
        valid_ms: i64,
        previously: &HashSet<String>,
    ) -> (Vec<crate::rules::alerting::OutgoingAlert>, HashSet<String>) {
        let marked = self.crash_looping();
        let window_of = |rule: &str| {
            self.cfg
                .restart
                .iter()
                .find(|r| r.name == rule)
                .map(|r| r.policy.window_ms)
                .unwrap_or(0)
        };
        let alert = |key: &str, since: i64, ends_at: i64| {
            let (rule, target) = key.split_once('|').unwrap_or(("", key));
            let mut labels = vec![
                ("alertname".to_string(), CRASH_LOOP_ALERT.to_string()),
                ("severity".to_string(), "critical".to_string()),
                ("rule".to_string(), rule.to_string()),
            ];
            labels.extend(target_labels_of_key(target));
            crate::rules::alerting::OutgoingAlert {
                labels: vigil_common::Labels::new(labels),
                annotations: vigil_common::Labels::new([
                    (
                        "summary",
                        format!("vigil stopped restarting {target}: it is crash looping"),
                    ),
                    (
                        "description",
                        format!(
                            "Restart rule {rule} reached its most restarts per window for {target}; vigil leaves it alone until the window passes. See GET /api/v1/actions."
                        ),
                    ),
                ]),
                starts_at: Some(since),
                ends_at: Some(ends_at),
                expr: "vigil_actions_crash_looping_targets > 0".into(),
            }
        };
        let mut out = Vec::new();
        let mut firing = HashSet::new();
        for (key, since) in &marked {
            let rule = key.split_once('|').map(|(r, _)| r).unwrap_or("");
            if now - since < window_of(rule) {
                out.push(alert(key, *since, now + valid_ms));
                firing.insert(key.clone());
            }
        }
        for key in previously {
            if !firing.contains(key) {
                out.push(alert(key, marked.get(key).copied().unwrap_or(now), now));
            }
        }
        (out, firing)
    }

    /// Sends [`CRASH_LOOP_ALERT`] to Alertmanager for every crash-looping
    /// target, at once when one is marked and every `resend` while it stays
    /// marked, and resolved when the mark expires.
    pub async fn run_crash_loop_alerts(
        self: Arc<Self>,
        notifier: Arc<crate::notify::Notifier>,
        resend: std::time::Duration,
        shutdown: CancellationToken,
    ) {
        let mut firing = HashSet::new();
        loop {
            let (alerts, now_firing) =
                self.crash_loop_alerts(now_ms(), 4 * resend.as_millis() as i64, &firing);
            firing = now_firing;
            notifier.send(alerts);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.crash_wake.notified() => {}
                _ = tokio::time::sleep(resend) => {}
            }
        }
    }
}

/// Alerts of the collector's own rules trigger restarts as Alertmanager's
/// notifications do, without the round trip through Alertmanager.
pub struct RuleTriggers(pub Arc<Actions>);

impl crate::rules::AlertSink for RuleTriggers {
    fn alerts(&self, ts: i64, alerts: &[crate::rules::alerting::OutgoingAlert]) {
        let triggers: Vec<Trigger> = alerts
            .iter()
            .map(|a| {
                let resolved = a.ends_at.is_some_and(|e| e <= ts);
                let starts_at = a.starts_at.unwrap_or(ts);
                Trigger {
                    source: "rules".into(),
                    labels: a
                        .labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    annotations: a
                        .annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    status: if resolved { "resolved" } else { "firing" }.into(),
                    starts_at: super::audit::rfc3339(starts_at),
                    // one firing episode of one alert acts once
                    dedup_key: format!("rules/{:016x}/{starts_at}", a.labels.stable_hash()),
                }
            })
            .collect();
        self.0.handle(triggers);
    }
}

/// Agent events (an OOM kill) trigger restarts directly — without waiting for
/// a scrape and a rule evaluation. A restart rule matches them by
/// `event="<kind>"` plus the subject's labels (`container_id`, `name`, …).
pub struct EventTriggers(pub Arc<Actions>);

impl crate::ingest::EventSink for EventTriggers {
    fn publish(&self, events: &[crate::ingest::IngestedEvent]) {
        let triggers: Vec<Trigger> = events
            .iter()
            .map(|e| {
                let mut labels: BTreeMap<String, String> = e
                    .subject
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                labels.insert("event".into(), e.kind.clone());
                Trigger {
                    source: "event".into(),
                    dedup_key: format!(
                        "{}/{:016x}/{}",
                        e.kind,
                        e.subject.stable_hash(),
                        e.timestamp_ms
                    ),
                    labels,
                    annotations: e.attributes.iter().cloned().collect(),
                    status: "firing".into(),
                    starts_at: super::audit::rfc3339(e.timestamp_ms),
                }
            })
            .collect();
        if !triggers.is_empty() {
            self.0.handle(triggers);
        }
    }
}

/// Autoscaler queries answered by the collector's own PromQL engine over
/// its store.
pub struct PromqlSource {
    store: Arc<crate::store::Store>,
    engine: crate::promql::Engine,
}

impl PromqlSource {
    pub fn new(store: Arc<crate::store::Store>) -> Self {
        PromqlSource {
            store,
            engine: crate::promql::Engine::new(crate::promql::EngineOptions::default()),
        }
    }
}

impl MetricSource for PromqlSource {
    fn query(&self, expr: &str, at_ms: i64) -> QueryResult {
        use crate::promql::Value;
        match self.engine.instant(self.store.as_ref(), expr, at_ms) {
            Ok(Value::Vector(v)) => Ok(v
                .into_iter()
                .map(|s| {
                    (
                        s.labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        s.v,
                    )
                })
                .collect()),
            Ok(Value::Scalar { v, .. }) => Ok(vec![(BTreeMap::new(), v)]),
            Ok(other) => Err(format!(
                "query returns a {}, not a vector or scalar",
                other.type_name()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Fixed(Mutex<Vec<(BTreeMap<String, String>, f64)>>);
    impl MetricSource for Fixed {
        fn query(&self, expr: &str, _at: i64) -> QueryResult {
            if expr == "replicas" {
                return Ok(vec![(BTreeMap::new(), 2.0)]);
            }
            Ok(self.0.lock().clone())
        }
    }

    fn cfg(y: &str) -> ActionsConfig {
        ActionsConfig::parse(y, Path::new("/t/a.yml")).unwrap()
    }

    fn trigger(status: &str, key: &str) -> Trigger {
        Trigger {
            source: "alertmanager".into(),
            labels: BTreeMap::from([
                ("alertname".to_string(), "OOM".to_string()),
                ("container_id".to_string(), "c1".to_string()),
            ]),
            annotations: BTreeMap::new(),
            status: status.into(),
            starts_at: "t".into(),
            dedup_key: key.into(),
        }
    }

    #[tokio::test]
    async fn restart_decisions_are_deduplicated_cooled_down_and_remembered() {
        let d = tempfile::tempdir().unwrap();
        let y = "executors: {w: {type: webhook, url: 'http://127.0.0.1:9/x', max_attempts: 1, timeout: 1s}}\nrestart: [{name: oom, match: {alertname: OOM}, executor: w, cooldown: 1h, dry_run: true}]";
        let a = Actions::new(cfg(y), d.path()).unwrap();
        let r = a.handle(vec![
            trigger("firing", "k1"),
            trigger("firing", "k1"),
            trigger("resolved", "k2"),
        ]);
        assert_eq!(
            r,
            HandleReport {
                matched: 3,
                duplicates: 1,
                started: 0
            }
        );
        // a new notification for the same container during the cooldown
        a.handle(vec![trigger("firing", "k3")]);
        let e = a.audit_entries(10, 0);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].result, "dry_run");
        assert_eq!(e[0].result, "skipped_cooldown");
        drop(a);
        // after a restart of the collector the cooldown still holds
        let a = Actions::new(cfg(y), d.path()).unwrap();
        a.handle(vec![trigger("firing", "k4")]);
        assert_eq!(a.audit_entries(1, 0)[0].result, "skipped_cooldown");
        // and an already-seen notification is still a duplicate
        assert_eq!(a.handle(vec![trigger("firing", "k1")]).duplicates, 1);
    }

    #[tokio::test]
    async fn autoscaler_scales_up_and_never_on_missing_data() {
        let d = tempfile::tempdir().unwrap();
        let y = "executors: {w: {type: webhook, url: 'http://127.0.0.1:9/x'}}\nautoscale: [{name: web, executor: w, workload: {service: web}, query: cpu, replicas_query: replicas, target: 40, min_replicas: 2, max_replicas: 4, dry_run: true}]";
        let a = Actions::new(cfg(y), d.path()).unwrap();
        let sc = a.config().autoscale[0].clone();
        let src = Fixed(Mutex::new(vec![]));
        assert_eq!(a.evaluate_scaler(&sc, &src, 1_000).await, None);
        *src.0.lock() = vec![(BTreeMap::new(), 85.0)];
        let d1 = a.evaluate_scaler(&sc, &src, 2_000).await.unwrap();
        assert_eq!((d1.current, d1.replicas), (2, 4));
        let e = a.audit_entries(1, 0);
        assert_eq!((e[0].from_replicas, e[0].to_replicas), (Some(2), Some(4)));
        assert_eq!(e[0].result, "dry_run");
    }

    #[tokio::test]
    async fn own_rule_alerts_trigger_and_crash_loops_raise_an_alert() {
        use crate::rules::AlertSink;
        use crate::rules::alerting::OutgoingAlert;
        let d = tempfile::tempdir().unwrap();
        let y = "executors: {w: {type: webhook, url: 'http://127.0.0.1:9/x'}}\nrestart: [{name: oom, match: {alertname: OOM}, executor: w, cooldown: 0s, max_restarts: 1, window: 1h, dry_run: true}]";
        let a = Actions::new(cfg(y), d.path()).unwrap();
        let alert = |starts: i64, ends: i64| OutgoingAlert {
            labels: vigil_common::Labels::new([("alertname", "OOM"), ("container_id", "c9")]),
            annotations: vigil_common::Labels::default(),
            starts_at: Some(starts),
            ends_at: Some(ends),
            expr: "x".into(),
        };
        let sink = RuleTriggers(a.clone());
        // firing, re-sent (same episode: once), then resolved (recorded, not acted on)
        sink.alerts(1_000, &[alert(1_000, 61_000)]);
        sink.alerts(2_000, &[alert(1_000, 62_000)]);
        sink.alerts(3_000, &[alert(1_000, 3_000)]);
        let e = a.audit_entries(10, 0);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].result, "dry_run");
        assert_eq!(e[0].target["container_id"], "c9");
        // no alert of its own yet
        let (alerts, firing) = a.crash_loop_alerts(now_ms(), 60_000, &HashSet::new());
        assert!(alerts.is_empty() && firing.is_empty());
        // a second firing episode: over max_restarts → crash-looping
        sink.alerts(10_000, &[alert(10_000, 70_000)]);
        assert_eq!(a.audit_entries(1, 0)[0].result, "crash_looping");
        let now = now_ms();
        let (alerts, firing) = a.crash_loop_alerts(now, 60_000, &HashSet::new());
        assert_eq!(alerts.len(), 1);
        assert_eq!(firing.len(), 1);
        let al = &alerts[0];
        assert_eq!(al.labels.get("alertname"), Some(CRASH_LOOP_ALERT));
        assert_eq!(al.labels.get("container_id"), Some("c9"));
        assert_eq!(al.labels.get("rule"), Some("oom"));
        assert_eq!(al.ends_at, Some(now + 60_000));
        // a key that was firing and is no longer marked is resolved
        let gone = HashSet::from(["oom|id/other".to_string()]);
        let (alerts, _) = a.crash_loop_alerts(now, 60_000, &gone);
        let resolved = alerts
            .iter()
            .find(|x| x.labels.get("container_id") == Some("other"))
            .expect("resolved alert");
        assert_eq!(resolved.ends_at, Some(now));
    }

    #[tokio::test]
    async fn oom_events_trigger_restart_rules() {
        use crate::ingest::EventSink;
        let d = tempfile::tempdir().unwrap();
        let y = "executors: {w: {type: webhook, url: 'http://127.0.0.1:9/x'}}\nrestart: [{name: oom, match: {event: oom_kill}, executor: w, dry_run: true}]";
        let a = Actions::new(cfg(y), d.path()).unwrap();
        let ev = crate::ingest::IngestedEvent {
            timestamp_ms: 5,
            kind: "oom_kill".into(),
            subject: vigil_common::Labels::new([("container_id", "abc"), ("name", "leak")]),
            attributes: vec![("process".into(), "sh".into())],
        };
        EventTriggers(a.clone()).publish(&[ev.clone(), ev]);
        let e = a.audit_entries(10, 0);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].target["container_id"], "abc");
        assert_eq!(e[0].result, "dry_run");
    }

    #[tokio::test]
    async fn a_hanging_executor_does_not_block_handle() {
        // a receiver that accepts and never answers
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicU32::new(0));
        let acc = accepted.clone();
        tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                keep.push(s);
            }
        });
        let d = tempfile::tempdir().unwrap();
        let y = format!(
            "executors: {{w: {{type: webhook, url: 'http://{addr}/x', timeout: 30s, max_attempts: 1}}}}\nrestart: [{{name: oom, match: {{alertname: OOM}}, executor: w}}]"
        );
        let a = Actions::new(cfg(&y), d.path()).unwrap();
        let t0 = std::time::Instant::now();
        let r = a.handle(vec![trigger("firing", "k1")]);
        assert_eq!(r.started, 1);
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "handle waited on the executor"
        );
        for _ in 0..50 {
            if accepted.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
