//! The actions engine: turns triggers (firing alerts from the collector's own
//! rules, Alertmanager notifications, agent events such as OOM kills) into
//! restarts, runs one autoscaler loop per configured workload, and carries
//! decisions out through executors — always off the caller's path, so a slow
//! or hanging executor never blocks rule evaluation, ingest or other actions.
//! Every decision and delivery is audited before and after it happens.
//!
//! An autoscaler counts the replicas it has just requested as the current
//! count until the replicas it reads (`replicas_query` or the executor) agree,
//! or [`REQUESTED_REPLICAS_HOLD`] passes: a lagging replicas metric never
//! makes it send the same scale request twice (the HPA reads the scale
//! subresource and never does either).
//!
//! Not here: the executors ([`super::executor`]), triggers
//! ([`super::triggers`]), the decision rules ([`super::restart`],
//! [`super::hpa`]).
//!
//! Why one file of about 1,200 lines: it is the one place that decides —
//! restart triggers, the autoscaler loops and release tracking share the
//! audit, the cooldown state and the executor hand-off, and splitting them
//! would spread that shared state over several rooms; the executors,
//! triggers, sources, analysis and rollout model already live beside it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vigil_common::Labels;

use super::audit::{ActionState, Audit, AuditEntry, AuditError, AuditResult};
use super::config::ExecutorConfig;
use super::config::{ActionsConfig, RestartRule, ScalerConfig};
use super::docker::DockerExecutor;
use super::executor::{
    Action, ActionKind, ActionRequest, Executor, ExecutorError, MetricReading, Outcome,
};
use super::hpa::{self, PodMetric};
use super::kubernetes::KubernetesExecutor;
use super::restart::{self, Verdict};
use super::source::MetricSource;
use super::triggers::{
    HandleTriggers, Trigger, TriggerStatus, restart_target, target_labels_of_key,
};
use super::webhook::WebhookExecutor;
use crate::notify::{Notifier, OutgoingAlert};

/// How long an autoscaler takes the replicas it requested as the current
/// count while the replicas it reads still differ (a replicas metric lags by
/// a scrape or two; a workload that never gets there is read as it is again).
pub const REQUESTED_REPLICAS_HOLD: std::time::Duration = std::time::Duration::from_secs(120);

/// The executor a configuration describes.
fn build_executor(cfg: &ExecutorConfig) -> Result<Box<dyn Executor>, ExecutorError> {
    Ok(match cfg {
        ExecutorConfig::Webhook {
            url,
            secrets,
            timeout,
            max_attempts,
        } => Box::new(WebhookExecutor::new(
            url,
            secrets.clone(),
            *timeout,
            *max_attempts,
        )?),
        ExecutorConfig::Docker {
            socket,
            timeout,
            stop_timeout_s,
            service_label,
        } => Box::new(DockerExecutor::new(
            socket,
            *timeout,
            *stop_timeout_s,
            service_label,
        )),
        ExecutorConfig::Kubernetes {
            api_server,
            token_file,
            ca_file,
            timeout,
            restart_mode,
        } => Box::new(KubernetesExecutor::new(
            api_server.as_deref(),
            token_file.as_deref(),
            ca_file.as_deref(),
            *timeout,
            *restart_mode,
        )?),
    })
}

/// A scale request not yet seen in the replicas read back.
#[derive(Clone, Copy, Debug)]
struct Requested {
    replicas: u32,
    at_ms: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    executor: &'static str,
    result: &'static str,
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
    /// Release tracking, labelled by the workload's labels.
    rollout_info: Family<Vec<(String, String)>, Gauge>,
    rollout_started: Family<Vec<(String, String)>, Gauge>,
    rollout_progressing: Family<Vec<(String, String)>, Gauge>,
    rollout_replicas: Family<Vec<(String, String)>, Gauge>,
    rollout_changes: Family<Vec<(String, String)>, Counter>,
    /// The `vigil_rollout_info` label set shown now, per workload key.
    rollout_shown: Mutex<HashMap<String, Vec<(String, String)>>>,
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
    executors: BTreeMap<String, Box<dyn Executor>>,
    audit: Audit,
    state: Mutex<ActionState>,
    in_flight: Mutex<HashSet<String>>,
    /// Per autoscaler: the scale it requested, until the replicas agree.
    requested: Mutex<HashMap<String, Requested>>,
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
                build_executor(e).map_err(|e| format!("executor {name}: {e}"))?,
            );
        }
        let a = Actions {
            cfg,
            executors,
            audit,
            state: Mutex::new(state),
            in_flight: Mutex::new(HashSet::new()),
            requested: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            runtime,
            crash_wake: tokio::sync::Notify::new(),
        };
        a.metrics
            .crash_looping
            .set(a.state.lock().crash_looping.len() as i64);
        let known: Vec<(String, super::rollout::WorkloadVersions)> = a
            .state
            .lock()
            .rollouts
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in &known {
            a.show_rollout(k, v);
        }
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
            "vigil_rollout_info",
            "A workload's last rollout: old and new image and state (progressing, complete, reverted)",
            m.rollout_info.clone(),
        );
        registry.register(
            "vigil_rollout_started_timestamp_seconds",
            "When a workload's last rollout started",
            m.rollout_started.clone(),
        );
        registry.register(
            "vigil_rollout_progressing",
            "Whether a workload's rollout is under way (old and new image both running)",
            m.rollout_progressing.clone(),
        );
        registry.register(
            "vigil_rollout_replicas",
            "Running replicas of a workload's rollout, by version (old, new)",
            m.rollout_replicas.clone(),
        );
        registry.register(
            "vigil_rollout_changes",
            "Rollout changes seen (started, completed, reverted, superseded)",
            m.rollout_changes.clone(),
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

    /// The kind of a configured executor, for metrics.
    fn executor_kind(&self, name: &str) -> &'static str {
        self.executors.get(name).map(|e| e.kind()).unwrap_or("?")
    }

    fn count(&self, action: ActionKind, executor: &'static str, result: AuditResult) {
        self.metrics
            .actions
            .get_or_create(&ActionLabels {
                action: action.as_str(),
                executor,
                result: result.as_str(),
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

    fn save_state_logged(&self) {
        if let Err(e) = self.save_state() {
            self.metrics.audit_errors.inc();
            tracing::error!(error = %e, "saving action state failed");
        }
    }

    /// The audit entry of `req` with `result` and `detail`.
    fn entry(
        req: &ActionRequest,
        executor: &str,
        result: AuditResult,
        detail: String,
        now: i64,
    ) -> AuditEntry {
        let (from_replicas, to_replicas) = req.action.replicas();
        AuditEntry {
            seq: 0,
            time_ms: now,
            time: String::new(),
            action: req.action.kind(),
            rule: req.rule.clone(),
            target: req.action.target().clone(),
            executor: executor.to_string(),
            result,
            detail,
            id: req.id.clone(),
            from_replicas,
            to_replicas,
            from_image: match &req.action {
                Action::Rollback { from_image, .. } => Some(from_image.clone()),
                _ => None,
            },
            to_image: match &req.action {
                Action::Rollback { to_image, .. } => Some(to_image.clone()),
                _ => None,
            },
        }
    }

    /// Handles triggers: matching restart rules decide at once (cooldowns,
    /// crash-looping, rate limit — persisted before anything runs); the
    /// restarts themselves run in the background.
    pub fn handle(self: &Arc<Self>, triggers: Vec<Trigger>) -> HandleReport {
        let mut report = HandleReport::default();
        let now = vigil_common::time::now_ms();
        for t in triggers {
            for rule in &self.cfg.restart {
                if !rule.matchers.iter().all(|m| m.matches(&t.labels)) {
                    continue;
                }
                report.matched += 1;
                if t.status != TriggerStatus::Firing {
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
        let kind = self.executor_kind(&rule.executor);
        let Some((key, target)) = restart_target(&t.labels) else {
            tracing::warn!(rule = %rule.name, labels = %t.labels, "trigger names no container or pod; not restarting");
            self.count(ActionKind::Restart, kind, AuditResult::NoTarget);
            return false;
        };
        let state_key = format!("{}|{key}", rule.name);
        let verdict = {
            let mut st = self.state.lock();
            restart::decide(&mut st, &state_key, now, &rule.policy, &self.cfg.global)
        };
        let dry_run = self.cfg.dry_run || rule.dry_run;
        let (result, detail) = match &verdict {
            Verdict::Restart => (
                if dry_run {
                    AuditResult::DryRun
                } else {
                    AuditResult::Decided
                },
                format!(
                    "{} trigger {}",
                    t.source.as_str(),
                    t.labels.get("alertname").unwrap_or("")
                ),
            ),
            Verdict::Cooldown { remaining_ms } => (
                AuditResult::SkippedCooldown,
                format!("cooldown: {} s left", remaining_ms / 1000),
            ),
            Verdict::CrashLooping { restarts } => (
                AuditResult::CrashLooping,
                format!("{restarts} restarts within the window; restarts stopped"),
            ),
            Verdict::RateLimited => (
                AuditResult::SkippedRateLimit,
                "global restart rate limit reached".to_string(),
            ),
        };
        let req = ActionRequest {
            id: super::new_id(),
            action: Action::Restart { target },
            rule: rule.name.clone(),
            reason: detail.clone(),
            alerts: vec![t.clone()],
            metric: None,
            dry_run,
            time_ms: now,
        };
        self.record(Self::entry(
            &req,
            &rule.executor,
            result,
            detail.clone(),
            now,
        ));
        self.save_state_logged();
        self.metrics
            .crash_looping
            .set(self.state.lock().crash_looping.len() as i64);
        self.count(ActionKind::Restart, kind, result);
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
        let me = Arc::clone(self);
        let executor = rule.executor.clone();
        self.runtime.spawn(async move {
            if me.execute(&executor, &req).await.is_delivered() {
                // the cooldown runs from the restart's end
                restart::finished(
                    &mut me.state.lock(),
                    &state_key,
                    req.time_ms,
                    vigil_common::time::now_ms(),
                );
                me.save_state_logged();
            }
            me.in_flight.lock().remove(&key);
        });
        true
    }

    /// Runs `req` on `executor` and audits the outcome.
    async fn execute(&self, executor: &str, req: &ActionRequest) -> Outcome {
        let outcome = match self.executors.get(executor) {
            Some(e) => e.execute(req).await,
            None => Outcome::Failed(format!("unknown executor {executor}")),
        };
        let result = AuditResult::from(&outcome);
        let action = req.action.kind().as_str();
        if outcome.is_delivered() {
            tracing::info!(action, rule = %req.rule, executor, "{}", outcome.detail());
        } else {
            tracing::warn!(action, rule = %req.rule, executor, result = result.as_str(), "{}", outcome.detail());
        }
        let now = vigil_common::time::now_ms();
        self.record(Self::entry(
            req,
            executor,
            result,
            outcome.detail().to_string(),
            now,
        ));
        self.count(req.action.kind(), self.executor_kind(executor), result);
        outcome
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
                    me.evaluate_scaler(&sc, src.as_ref(), vigil_common::time::now_ms())
                        .await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// The replicas `sc`'s workload has now as far as the autoscaler can
    /// tell: read (`replicas_query`, else the executor), or the count it
    /// requested last while what it reads has not caught up (see
    /// [`REQUESTED_REPLICAS_HOLD`]).
    async fn current_replicas(
        &self,
        sc: &ScalerConfig,
        source: &dyn MetricSource,
        now: i64,
    ) -> Option<u32> {
        let read = match &sc.replicas_query {
            Some(q) => source
                .query(q, now)
                .ok()
                .and_then(|s| s.first().map(|(_, v)| *v))
                .filter(|v| v.is_finite() && *v >= 0.0 && *v <= f64::from(u32::MAX))
                .map(|v| v.round() as u32),
            None => match self.executors.get(&sc.executor) {
                Some(e) => e.replicas(&sc.workload).await.unwrap_or_else(|e| {
                    tracing::warn!(scaler = %sc.name, error = %e, "cannot read current replicas");
                    None
                }),
                None => None,
            },
        };
        let mut requested = self.requested.lock();
        let Some(r) = requested.get(&sc.name).copied() else {
            return read;
        };
        let hold_ms = REQUESTED_REPLICAS_HOLD.as_millis() as i64;
        if read == Some(r.replicas) {
            requested.remove(&sc.name);
            read
        } else if now.saturating_sub(r.at_ms) < hold_ms {
            Some(r.replicas)
        } else {
            requested.remove(&sc.name);
            tracing::warn!(scaler = %sc.name, requested = r.replicas, read = ?read, "the replicas read never reached the count requested; using what is read");
            read
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
        let Some(current) = self
            .current_replicas(sc, source, now)
            .await
            .filter(|c| *c > 0)
        else {
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
            self.save_state_logged();
            return Some(decision);
        }
        let dry_run = self.cfg.dry_run || sc.dry_run;
        let reason = format!(
            "{} = {value:.4} against target {} with {current} replicas → {} ({:?})",
            sc.query, sc.target, decision.replicas, decision.limit
        );
        let req = ActionRequest {
            id: super::new_id(),
            action: Action::Scale {
                workload: sc.workload.clone(),
                from: current,
                to: decision.replicas,
            },
            rule: sc.name.clone(),
            reason: reason.clone(),
            alerts: Vec::new(),
            metric: Some(MetricReading {
                query: sc.query.clone(),
                value,
                target: sc.target,
            }),
            dry_run,
            time_ms: now,
        };
        let result = if dry_run {
            AuditResult::DryRun
        } else {
            AuditResult::Decided
        };
        self.record(Self::entry(&req, &sc.executor, result, reason, now));
        self.count(ActionKind::Scale, self.executor_kind(&sc.executor), result);
        if dry_run {
            self.save_state_logged();
            return Some(decision);
        }
        if self.execute(&sc.executor, &req).await.is_delivered() {
            self.state
                .lock()
                .scalers
                .entry(sc.name.clone())
                .or_default()
                .record_scale(now, current, decision.replicas, &sc.behavior);
            self.requested.lock().insert(
                sc.name.clone(),
                Requested {
                    replicas: decision.replicas,
                    at_ms: now,
                },
            );
        }
        self.save_state_logged();
        Some(decision)
    }
}

impl HandleTriggers for Arc<Actions> {
    fn handle_triggers(&self, triggers: Vec<Trigger>) {
        self.handle(triggers);
    }
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
    ) -> (Vec<OutgoingAlert>, HashSet<String>) {
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
            let mut labels: Vec<(String, String)> = vec![
                ("alertname".to_string(), CRASH_LOOP_ALERT.to_string()),
                ("severity".to_string(), "critical".to_string()),
                ("rule".to_string(), rule.to_string()),
            ];
            labels.extend(target_labels_of_key(target).into_pairs());
            OutgoingAlert {
                labels: Labels::new(labels),
                annotations: Labels::new([
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
        notifier: Arc<Notifier>,
        resend: std::time::Duration,
        shutdown: CancellationToken,
    ) {
        let mut firing = HashSet::new();
        loop {
            let (alerts, now_firing) = self.crash_loop_alerts(
                vigil_common::time::now_ms(),
                4 * resend.as_millis() as i64,
                &firing,
            );
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

/// The labels of a workload from its key (`k=v` pairs joined by `,`, values
/// escaped): how release tracking names workloads in state and metrics.
fn workload_key(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('\\', "\\\\").replace(',', "\\,")))
        .collect::<Vec<_>>()
        .join(",")
}

impl Actions {
    /// Sets the `vigil_rollout_*` gauges of `key` from `v`.
    fn show_rollout(&self, key: &str, v: &super::rollout::WorkloadVersions) {
        let Some(r) = &v.rollout else {
            return;
        };
        let workload = Self::workload_of_key(key);
        let m = &self.metrics;
        let mut info = workload.clone();
        info.push(("old_image".into(), r.old_image.clone()));
        info.push(("new_image".into(), r.new_image.clone()));
        info.push(("state".into(), r.state.as_str().into()));
        if let Some(before) = m.rollout_shown.lock().insert(key.to_string(), info.clone())
            && before != info
        {
            m.rollout_info.remove(&before);
        }
        m.rollout_info.get_or_create(&info).set(1);
        m.rollout_started
            .get_or_create(&workload)
            .set(r.started_ms / 1000);
        let progressing = r.state == super::rollout::RolloutState::Progressing;
        m.rollout_progressing
            .get_or_create(&workload)
            .set(i64::from(progressing));
        for (version, image) in [("old", &r.old_image), ("new", &r.new_image)] {
            let mut l = workload.clone();
            l.push(("version".into(), version.into()));
            let n = v.replicas.get(image).copied().unwrap_or(0);
            m.rollout_replicas.get_or_create(&l).set(i64::from(n));
        }
    }

    /// The workload labels a key was made from.
    fn workload_of_key(key: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut esc = false;
        let push = |item: &str, out: &mut Vec<(String, String)>| {
            if let Some((k, v)) = item.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
        };
        for c in key.chars() {
            match (esc, c) {
                (true, c) => {
                    cur.push(c);
                    esc = false;
                }
                (false, '\\') => esc = true,
                (false, ',') => {
                    push(&cur, &mut out);
                    cur.clear();
                }
                (false, c) => cur.push(c),
            }
        }
        push(&cur, &mut out);
        out
    }

    /// The versions release tracking holds for the workload `labels` name.
    pub fn workload_versions(&self, labels: &Labels) -> Option<super::rollout::WorkloadVersions> {
        self.state
            .lock()
            .rollouts
            .get(&workload_key(labels))
            .cloned()
    }

    /// One look at every workload's images at `now`: changes are audited,
    /// counted and persisted. Returns the changes seen.
    pub fn observe_rollouts(
        self: &Arc<Self>,
        source: &dyn MetricSource,
        now: i64,
    ) -> Vec<(Labels, super::rollout::Change)> {
        use super::rollout::{Change, observe};
        let q = &self.cfg.rollouts.query;
        let samples = match source.query(q, now) {
            Ok(s) => s,
            // in a fleet, the leader tracks releases (and rolls back)
            Err(super::source::SourceError::NotLeader) => return Vec::new(),
            Err(e) => {
                tracing::warn!(query = %q, error = %e, "release tracking query failed");
                return Vec::new();
            }
        };
        let mut per: BTreeMap<String, (Labels, BTreeMap<String, u32>)> = BTreeMap::new();
        for (l, v) in samples {
            if !v.is_finite() || v < 0.5 {
                continue;
            }
            let Some(image) = l.get("image").map(str::to_string) else {
                continue;
            };
            let workload = Labels::new(
                l.iter()
                    .filter(|(k, _)| *k != "image" && *k != "__name__")
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            let e = per
                .entry(workload_key(&workload))
                .or_insert_with(|| (workload, BTreeMap::new()));
            *e.1.entry(image).or_insert(0) += v.round() as u32;
        }
        let mut changes = Vec::new();
        for (key, (workload, images)) in per {
            let (change, v) = {
                let mut st = self.state.lock();
                let v = st.rollouts.entry(key.clone()).or_default();
                let c = observe(v, &images, now);
                (c, v.clone())
            };
            self.show_rollout(&key, &v);
            self.analyse(&key, &workload, &v, source, now);
            let (result, from, to, what) = match &change {
                Change::None | Change::Baseline { .. } => {
                    if let Change::Baseline { image } = &change {
                        tracing::info!(workload = %key, image, "release tracking: baseline");
                        self.save_state_logged();
                    }
                    continue;
                }
                Change::Started { old, new } => (AuditResult::RolloutStarted, old, new, "started"),
                Change::Completed { old, new } => {
                    (AuditResult::RolloutCompleted, old, new, "completed")
                }
                Change::Reverted { old, new } => {
                    (AuditResult::RolloutReverted, new, old, "reverted")
                }
                Change::Superseded { old, new, .. } => {
                    (AuditResult::RolloutSuperseded, old, new, "superseded")
                }
            };
            let replicas = images
                .iter()
                .map(|(i, n)| format!("{i}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let detail = match &change {
                Change::Superseded { abandoned, .. } => {
                    format!(
                        "rollout {what}: {from} → {to} ({abandoned} abandoned); running {replicas}"
                    )
                }
                _ => format!("rollout {what}: {from} → {to}; running {replicas}"),
            };
            tracing::info!(workload = %key, "{detail}");
            self.record(AuditEntry {
                seq: 0,
                time_ms: now,
                time: String::new(),
                action: ActionKind::Rollout,
                rule: String::new(),
                target: workload.clone(),
                executor: String::new(),
                result,
                detail,
                id: super::new_id(),
                from_replicas: None,
                to_replicas: None,
                from_image: Some(from.clone()),
                to_image: Some(to.clone()),
            });
            let mut l = Self::workload_of_key(&key);
            l.push(("change".into(), what.into()));
            self.metrics.rollout_changes.get_or_create(&l).inc();
            self.save_state_logged();
            changes.push((workload, change));
        }
        changes
    }

    /// Release tracking until `shutdown`: every `rollouts.interval`.
    pub async fn run_rollouts(
        self: Arc<Self>,
        source: Arc<dyn MetricSource>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.cfg.rollouts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.observe_rollouts(source.as_ref(), vigil_common::time::now_ms());
        }
    }
}

impl Actions {
    /// The containers known to run `image` of `workload` within `window_s`
    /// (gone containers count): a Docker/Podman service's from the agents'
    /// `vigil_container_info`; a Kubernetes Deployment's (a workload with
    /// `namespace` and `deployment`) from the cgroup family `container_info`,
    /// its pods named `<deployment>-<template hash>-<suffix>`.
    fn version_of(
        source: &dyn MetricSource,
        workload: &Labels,
        image: &str,
        window_s: u64,
        now: i64,
    ) -> super::analysis::Version {
        let quote = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let deployment = workload
            .get("deployment")
            .filter(|d| !d.is_empty() && workload.get("namespace").is_some());
        let mut sel: Vec<String> = workload
            .iter()
            .filter(|(k, _)| deployment.is_none() || *k != "deployment")
            .map(|(k, v)| format!("{k}=\"{}\"", quote(v)))
            .collect();
        sel.push(format!("image=\"{}\"", quote(image)));
        let family = match deployment {
            Some(d) => {
                sel.push(format!(
                    "pod=~\"{}\"",
                    quote(&format!(
                        "{}-[a-z0-9]{{1,10}}-[a-z0-9]{{5}}",
                        regex::escape(d)
                    ))
                ));
                "container_info"
            }
            None => "vigil_container_info",
        };
        let q = format!("last_over_time({family}{{{}}}[{window_s}s])", sel.join(","));
        let mut v = super::analysis::Version {
            image: image.to_string(),
            ..Default::default()
        };
        if let Ok(rows) = source.query(&q, now) {
            for (l, _) in rows {
                if let Some(id) = l.get("container_id") {
                    v.container_ids.push(id.to_string());
                }
                if let Some(n) = l.get("name") {
                    v.names.push(n.to_string());
                }
            }
        }
        v.container_ids.sort();
        v.container_ids.dedup();
        v.names.sort();
        v.names.dedup();
        v
    }

    /// Judges `key`'s rollout under every matching rollback rule: a failed
    /// check rolls it back (once per rollout, not within the rule's
    /// cooldown, never an image a person rolled out again after vigil rolled
    /// it back); the window's end with every check passed promotes it, with
    /// a check still without data leaves it inconclusive. All audited with
    /// the values measured.
    fn analyse(
        self: &Arc<Self>,
        key: &str,
        workload: &Labels,
        v: &super::rollout::WorkloadVersions,
        source: &dyn MetricSource,
        now: i64,
    ) {
        use super::analysis::{Verdict, describe, evaluate};
        use super::rollout::RolloutState;
        let Some(r) = &v.rollout else {
            return;
        };
        if r.state == RolloutState::Reverted {
            return;
        }
        for rule in &self.cfg.rollback {
            if !rule.matchers.iter().all(|m| m.matches(workload)) {
                continue;
            }
            let memo = format!("{}|{key}", rule.name);
            if self.state.lock().analysed.get(&memo) == Some(&r.started_ms) {
                continue;
            }
            let age = now - r.started_ms;
            let window_s = (rule.window_ms / 1000).max(1) as u64;
            let new = Self::version_of(source, workload, &r.new_image, window_s, now);
            let old = Self::version_of(source, workload, &r.old_image, window_s, now);
            let results: Vec<_> = rule
                .checks
                .iter()
                .map(|c| {
                    (
                        c.clone(),
                        evaluate(c, source, workload, &new, &old, window_s, now),
                    )
                })
                .collect();
            let failed = results
                .iter()
                .any(|(_, v)| matches!(v, Verdict::Fail { .. }));
            let window_over = age >= rule.window_ms;
            if !failed && !window_over {
                continue;
            }
            self.state
                .lock()
                .analysed
                .insert(memo.clone(), r.started_ms);
            let measured = describe(&results);
            let req = ActionRequest {
                id: super::new_id(),
                action: Action::Rollback {
                    workload: workload.clone(),
                    from_image: r.new_image.clone(),
                    to_image: r.old_image.clone(),
                },
                rule: rule.name.clone(),
                reason: String::new(),
                alerts: Vec::new(),
                metric: None,
                dry_run: self.cfg.dry_run || rule.dry_run,
                time_ms: now,
            };
            let audit = |result: AuditResult, detail: String| {
                let mut e = Self::entry(&req, &rule.executor, result, detail, now);
                e.from_image = Some(r.new_image.clone());
                e.to_image = Some(r.old_image.clone());
                e
            };
            if !failed {
                let all_passed = results
                    .iter()
                    .all(|(_, v)| matches!(v, Verdict::Pass { .. }));
                let (result, what) = if all_passed {
                    (AuditResult::AnalysisPassed, "passed")
                } else {
                    (
                        AuditResult::AnalysisInconclusive,
                        "inconclusive (missing data is never a pass)",
                    )
                };
                let detail = format!(
                    "{} after {} s: analysis {what}: {measured}",
                    r.new_image,
                    age / 1000
                );
                tracing::info!(rule = %rule.name, workload = %key, "{detail}");
                self.record(audit(result, detail));
                self.count(
                    ActionKind::Rollback,
                    self.executor_kind(&rule.executor),
                    result,
                );
                self.save_state_logged();
                continue;
            }
            let previous_rollback = self.state.lock().rolled_back.get(&memo).cloned();
            let verdict = match &previous_rollback {
                Some((at, image)) if *image == r.new_image && *at < r.started_ms => Some((
                    AuditResult::SkippedRerollout,
                    format!(
                        "{image} was rolled back by vigil and rolled out again since: left alone"
                    ),
                )),
                Some((at, _)) if now - at < rule.cooldown_ms => Some((
                    AuditResult::SkippedCooldown,
                    format!(
                        "cooldown: {} s left",
                        (rule.cooldown_ms - (now - at)) / 1000
                    ),
                )),
                _ => None,
            };
            let detail_base = format!(
                "{} → {} after {} s of rollout: {measured}",
                r.new_image,
                r.old_image,
                age / 1000
            );
            if let Some((result, why)) = verdict {
                let detail = format!("{detail_base}; {why}");
                tracing::warn!(rule = %rule.name, workload = %key, "{detail}");
                self.record(audit(result, detail));
                self.count(
                    ActionKind::Rollback,
                    self.executor_kind(&rule.executor),
                    result,
                );
                self.save_state_logged();
                continue;
            }
            let result = if req.dry_run {
                AuditResult::DryRun
            } else {
                AuditResult::Decided
            };
            if !req.dry_run {
                self.state
                    .lock()
                    .rolled_back
                    .insert(memo.clone(), (now, r.new_image.clone()));
            }
            tracing::warn!(rule = %rule.name, workload = %key, "rollback: {detail_base}");
            self.record(audit(result, format!("rollback: {detail_base}")));
            self.count(
                ActionKind::Rollback,
                self.executor_kind(&rule.executor),
                result,
            );
            self.save_state_logged();
            if req.dry_run {
                continue;
            }
            let in_flight_key = format!("rollback|{key}");
            if !self.in_flight.lock().insert(in_flight_key.clone()) {
                continue;
            }
            let me = Arc::clone(self);
            let executor = rule.executor.clone();
            let req = ActionRequest {
                reason: format!("rollback: {detail_base}"),
                ..req
            };
            self.runtime.spawn(async move {
                me.execute(&executor, &req).await;
                me.in_flight.lock().remove(&in_flight_key);
            });
        }
    }
}
