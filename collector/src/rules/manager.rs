//! The rule manager: loads rule files (paths or globs), runs every group on
//! its own schedule (groups concurrently, aligned to their interval plus a
//! per-group offset, overruns skipped and counted), hands due alerts to the
//! notifier, persists alert state in `data_dir`, and reloads: a reload that
//! fails keeps the running rules and says why.
//!
//! # Wiring (for `run.rs`)
//! ```ignore
//! let rules = RuleManager::new(store.clone(), ManagerOptions { data_dir: Some(data_dir.join("rules")), .. }, notifier.clone());
//! rules.register(&mut telemetry.registry.lock());
//! rules.load(&config.rules)?;                       // at start: a bad file is fatal
//! tokio::spawn(rules.clone().run(shutdown.clone())); // evaluates until shutdown
//! tokio::spawn(notifier.clone().run(shutdown.clone()));
//! state.rules = Some(rules.clone());                // /api/v1/rules, /api/v1/alerts
//! // SIGHUP or POST /-/reload:
//! if let Err(e) = rules.reload() { tracing::error!("{e}") } // old rules keep running
//! ```
//!
//! Not here: rule evaluation ([`super::group`]), sending ([`crate::notify`]).
//!
//! About 800 lines with its tests (the last 190): loading, reloading and running
//! the groups are one lifecycle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use vigil_common::Labels;

use super::file;
use super::group::{EvalEnv, Group, RuleQuerier};
use super::state;
use crate::fleet::leader::Leadership;
use crate::ingest::core::IngestCore;
use crate::notify::Notifier;
use crate::promql::{Engine, EngineOptions};
use crate::store::{STALE_NAN, Store};

#[derive(Clone, Debug)]
pub struct ManagerOptions {
    /// Where alert state is kept (`None`: not kept).
    pub data_dir: Option<PathBuf>,
    /// Interval of groups that set none (Prometheus' `evaluation_interval`, 1m).
    pub default_interval: Duration,
    pub external_labels: Labels,
    /// Shown to templates as `$externalURL` and prefixed to `generatorURL`.
    pub external_url: String,
    /// Firing alerts are re-sent this often (Prometheus: 1m).
    pub resend_delay: Duration,
    /// Saved state older than this is ignored at start (Prometheus' `for` outage tolerance, 1h).
    pub outage_tolerance: Duration,
    pub engine: EngineOptions,
    /// How often [`RuleManager::run`] checks the rule files (and globs) for
    /// changes and reloads; `None`: only on [`RuleManager::reload`].
    pub watch_interval: Option<Duration>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            data_dir: None,
            default_interval: Duration::from_secs(60),
            external_labels: Labels::default(),
            external_url: String::new(),
            resend_delay: Duration::from_secs(60),
            outage_tolerance: Duration::from_secs(3600),
            engine: EngineOptions::default(),
            watch_interval: Some(Duration::from_secs(10)),
        }
    }
}

/// Why rules could not be (re)loaded; every message names the file and,
/// where known, the line, column, group and rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("loading rules failed:\n{}", .errors.join("\n"))]
pub struct LoadError {
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    rule_group: String,
}

#[derive(Default)]
struct Metrics {
    evaluations: Family<GroupLabels, Counter>,
    failures: Family<GroupLabels, Counter>,
    missed: Family<GroupLabels, Counter>,
    last_duration: Family<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_eval: Family<GroupLabels, Gauge>,
    samples: Family<GroupLabels, Gauge>,
    append_failures: Counter,
    output_failures: Counter,
    reload_ok: Gauge,
    reload_ts: Gauge,
    state_write_failures: Counter,
}

/// One loaded group and its scheduling state.
pub struct GroupSlot {
    pub key: String,
    pub group: Mutex<Group>,
    /// Set when a reload replaced the group: its task stops evaluating.
    retired: AtomicBool,
    last_state: Mutex<Vec<u8>>,
}

/// Loads, runs and reloads rule groups. See the module docs for wiring.
pub struct RuleManager {
    opts: ManagerOptions,
    engine: Engine,
    store: Arc<Store>,
    notifier: Option<Arc<Notifier>>,
    patterns: Mutex<Vec<String>>,
    groups: RwLock<Vec<Arc<GroupSlot>>>,
    generation: tokio::sync::watch::Sender<u64>,
    metrics: Metrics,
    /// Serializes loads.
    loading: Mutex<()>,
    /// Also told about every alert sent (the actions engine).
    alert_sink: RwLock<Option<Arc<dyn AlertSink>>>,
    /// Where rule output is made durable (the WAL, hence replay and
    /// forwarding); without it, output is in the store only.
    output: RwLock<Option<Arc<IngestCore>>>,
    /// Staleness markers of removed groups, written with the next evaluation.
    pending_output: Mutex<Vec<(Labels, i64, f64)>>,
    /// Gateway mode: expressions go to a remote API ([`Self::set_querier`]).
    querier: RwLock<Option<Arc<dyn RuleQuerier>>>,
    /// In a fleet, groups evaluate only while this says so.
    leadership: RwLock<Option<Leadership>>,
}

/// Something besides Alertmanager that wants the alerts a group sends
/// (firing ones, re-sent per `resend_delay`, and resolved ones).
pub trait AlertSink: Send + Sync {
    /// `ts` is the evaluation timestamp (ms): an alert whose `ends_at` is at
    /// or before it is resolved.
    fn alerts(&self, ts: i64, alerts: &[crate::rules::alerting::OutgoingAlert]);
}

fn key(file: &str, name: &str) -> String {
    format!("{file};{name}")
}

impl RuleManager {
    pub fn new(
        store: Arc<Store>,
        opts: ManagerOptions,
        notifier: Option<Arc<Notifier>>,
    ) -> Arc<Self> {
        let (generation, _) = tokio::sync::watch::channel(0);
        Arc::new(RuleManager {
            engine: Engine::new(opts.engine.clone()),
            opts,
            store,
            notifier,
            patterns: Mutex::new(Vec::new()),
            groups: RwLock::new(Vec::new()),
            generation,
            metrics: Metrics::default(),
            loading: Mutex::new(()),
            alert_sink: RwLock::new(None),
            output: RwLock::new(None),
            pending_output: Mutex::new(Vec::new()),
            querier: RwLock::new(None),
            leadership: RwLock::new(None),
        })
    }

    /// Evaluates every expression (and templates' `query`) there instead of
    /// over the local store; results are still written locally and to the
    /// WAL (hence forwarded).
    pub fn set_querier(&self, q: Arc<dyn RuleQuerier>) {
        *self.querier.write() = Some(q);
    }

    /// Groups evaluate only while `l` may act; a group that resumes after
    /// skipping forgets its alerts' state (another collector held it).
    pub fn set_leadership(&self, l: Leadership) {
        *self.leadership.write() = Some(l);
    }

    /// Makes rule output durable through the ingest WAL: every evaluation's
    /// samples are appended there (under the checkpoint gate, so a
    /// checkpoint never holds output the WAL lacks), which replays them
    /// after a crash and lets forwarding send them.
    pub fn set_output(&self, core: Arc<IngestCore>) {
        *self.output.write() = Some(core);
    }

    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "vigil_collector_rule_evaluations",
            "Rule evaluations, by group",
            m.evaluations.clone(),
        );
        registry.register(
            "vigil_collector_rule_evaluation_failures",
            "Rule evaluations that failed, by group",
            m.failures.clone(),
        );
        registry.register(
            "vigil_collector_rule_group_iterations_missed",
            "Group evaluations skipped because the previous one overran",
            m.missed.clone(),
        );
        registry.register(
            "vigil_collector_rule_group_last_duration_seconds",
            "Duration of the last evaluation of the group",
            m.last_duration.clone(),
        );
        registry.register(
            "vigil_collector_rule_group_last_evaluation_timestamp_seconds",
            "Timestamp of the last evaluation of the group",
            m.last_eval.clone(),
        );
        registry.register(
            "vigil_collector_rule_group_last_evaluation_samples",
            "Samples the group's rules returned in the last evaluation",
            m.samples.clone(),
        );
        registry.register(
            "vigil_collector_rule_append_failures",
            "Rule results the store refused (out of order, series limit)",
            m.append_failures.clone(),
        );
        registry.register(
            "vigil_collector_rule_output_wal_failures",
            "Rule results that could not be written to the WAL (in the store only: not replayed, not forwarded)",
            m.output_failures.clone(),
        );
        registry.register(
            "vigil_collector_rules_config_last_reload_successful",
            "Whether the last rule (re)load succeeded",
            m.reload_ok.clone(),
        );
        registry.register(
            "vigil_collector_rules_config_last_reload_success_timestamp_seconds",
            "When rules were last (re)loaded successfully",
            m.reload_ts.clone(),
        );
        registry.register(
            "vigil_collector_rule_state_write_failures",
            "Alert state files that could not be written",
            m.state_write_failures.clone(),
        );
    }

    /// The loaded groups (for the HTTP API).
    /// Sets where sent alerts also go (see [`AlertSink`]).
    pub fn set_alert_sink(&self, sink: Arc<dyn AlertSink>) {
        *self.alert_sink.write() = Some(sink);
    }

    pub fn groups(&self) -> Vec<Arc<GroupSlot>> {
        self.groups.read().clone()
    }

    pub fn external_url(&self) -> &str {
        &self.opts.external_url
    }

    /// Loads the rule files matching `patterns` (paths or globs), replacing
    /// the running groups; on any error nothing changes. Alert state carries
    /// over to groups and rules that are still there (by file, group name,
    /// rule name and labels), and is read from `data_dir` for the others.
    pub fn load(&self, patterns: &[String]) -> Result<usize, LoadError> {
        let _g = self.loading.lock();
        let r = self.load_inner(patterns);
        match &r {
            Ok(n) => {
                *self.patterns.lock() = patterns.to_vec();
                self.metrics.reload_ok.set(1);
                self.metrics
                    .reload_ts
                    .set(vigil_common::time::now_ms() / 1000);
                tracing::info!(groups = n, "rules loaded");
            }
            Err(e) => {
                self.metrics.reload_ok.set(0);
                tracing::error!("{e}; the previous rules keep running");
            }
        }
        r
    }

    /// Loads the same patterns again (SIGHUP, `POST /-/reload`).
    pub fn reload(&self) -> Result<usize, LoadError> {
        let p = self.patterns.lock().clone();
        self.load(&p)
    }

    fn load_inner(&self, patterns: &[String]) -> Result<usize, LoadError> {
        let files = file::expand_patterns(patterns).map_err(|e| LoadError { errors: vec![e] })?;
        let mut errors = Vec::new();
        let mut specs = Vec::new();
        for f in &files {
            match file::load_file(f) {
                Ok(rf) => specs.extend(rf.groups),
                Err(e) => errors.extend(e.errors),
            }
        }
        let default_ms = self.opts.default_interval.as_millis() as i64;
        let mut new = Vec::new();
        for s in &specs {
            match Group::from_spec(s, default_ms) {
                Ok(g) => new.push(g),
                Err(e) => errors.push(format!("{}: group {:?}: {e}", s.file, s.name)),
            }
        }
        if !errors.is_empty() {
            return Err(LoadError { errors });
        }
        let old: HashMap<String, Arc<GroupSlot>> = self
            .groups
            .read()
            .iter()
            .map(|s| (s.key.clone(), s.clone()))
            .collect();
        let now = vigil_common::time::now_ms();
        let mut slots = Vec::with_capacity(new.len());
        for mut g in new {
            let k = key(&g.file, &g.name);
            if let Some(o) = old.get(&k) {
                let mut og = o.group.lock();
                o.retired.store(true, Ordering::Release);
                g.copy_state_from(&mut og);
            } else if let Some(dir) = &self.opts.data_dir {
                let p = state::path_for(dir, &g.file, &g.name);
                match state::restore(
                    &mut g,
                    &p,
                    now,
                    self.opts.outage_tolerance.as_millis() as i64,
                ) {
                    Ok(r) if r.alerts > 0 => {
                        tracing::info!(group = %g.name, file = %g.file, alerts = r.alerts, "alert state restored")
                    }
                    Ok(r) if r.expired => {
                        tracing::warn!(group = %g.name, "saved alert state is older than the outage tolerance; starting afresh")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(group = %g.name, error = %e, "cannot read saved alert state; starting afresh")
                    }
                }
            }
            slots.push(Arc::new(GroupSlot {
                key: k,
                group: Mutex::new(g),
                retired: AtomicBool::new(false),
                last_state: Mutex::new(Vec::new()),
            }));
        }
        // groups that went away: their series go stale, their state file goes
        let keep: std::collections::HashSet<&str> = slots.iter().map(|s| s.key.as_str()).collect();
        for (k, o) in &old {
            if keep.contains(k.as_str()) {
                continue;
            }
            o.retired.store(true, Ordering::Release);
            let g = o.group.lock();
            for s in g.written_series() {
                if let Ok(r) = self.store.get_or_create(s)
                    && self.store.append(r, now, STALE_NAN).is_ok()
                {
                    self.pending_output.lock().push((s.clone(), now, STALE_NAN));
                }
            }
            if let Some(dir) = &self.opts.data_dir {
                let _ = std::fs::remove_file(state::path_for(dir, &g.file, &g.name));
            }
        }
        let n = slots.len();
        *self.groups.write() = slots;
        self.generation.send_modify(|g| *g += 1);
        Ok(n)
    }

    /// Evaluates one group at `ts` now (what the scheduler calls each
    /// interval; tests call it directly). Sends due alerts and saves state.
    /// Returns the samples written to the store (for the WAL).
    pub fn eval_group(&self, slot: &GroupSlot, ts: i64) -> Vec<(Labels, f64)> {
        let mut g = slot.group.lock();
        if slot.retired.load(Ordering::Acquire) {
            return Vec::new();
        }
        let env = EvalEnv {
            engine: &self.engine,
            store: &self.store,
            remote: self.querier.read().clone(),
            external_labels: &self.opts.external_labels,
            external_url: &self.opts.external_url,
            resend_delay_ms: self.opts.resend_delay.as_millis() as i64,
        };
        let outcome = g.eval(ts, &env);
        let gl = GroupLabels {
            rule_group: slot.key.clone(),
        };
        self.metrics
            .evaluations
            .get_or_create(&gl)
            .inc_by(g.rules.len() as u64);
        self.metrics
            .failures
            .get_or_create(&gl)
            .inc_by(outcome.failures as u64);
        self.metrics
            .last_duration
            .get_or_create(&gl)
            .set(g.eval_seconds);
        self.metrics.last_eval.get_or_create(&gl).set(ts / 1000);
        self.metrics
            .samples
            .get_or_create(&gl)
            .set(outcome.samples as i64);
        self.metrics
            .append_failures
            .inc_by(outcome.append_failures as u64);
        if !outcome.to_send.is_empty()
            && let Some(sink) = self.alert_sink.read().clone()
        {
            sink.alerts(ts, &outcome.to_send);
        }
        if let Some(n) = &self.notifier {
            n.send(outcome.to_send);
        }
        if let Some(dir) = &self.opts.data_dir {
            let bytes = state::encode(&g);
            let mut last = slot.last_state.lock();
            // `at` changes every evaluation; write only when the alerts changed
            if strip_at(&bytes) != strip_at(&last) {
                let p = state::path_for(dir, &g.file, &g.name);
                match vigil_common::fs::write_atomic(&p, &bytes) {
                    Ok(()) => *last = bytes,
                    Err(e) => {
                        self.metrics.state_write_failures.inc();
                        tracing::warn!(error = %e, path = %p.display(), "cannot save alert state");
                    }
                }
            }
        }
        outcome.written
    }

    /// Evaluates a group and makes its output durable in the WAL (when
    /// [`Self::set_output`] was called). The checkpoint gate is held from
    /// before the store sees the output until the WAL has it.
    async fn eval_and_log(self: &Arc<Self>, slot: &Arc<GroupSlot>, ts: i64) {
        let output = self.output.read().clone();
        let gate = match &output {
            Some(core) => Some(core.gate.read().await),
            None => None,
        };
        let (m, s) = (self.clone(), slot.clone());
        let written = match tokio::task::spawn_blocking(move || m.eval_group(&s, ts)).await {
            Ok(w) => w,
            Err(_) => {
                tracing::error!(group = %slot.key, "rule group evaluation panicked");
                return;
            }
        };
        let Some(core) = output.as_ref() else {
            return;
        };
        let mut samples: Vec<(Labels, i64, f64)> = std::mem::take(&mut *self.pending_output.lock());
        samples.extend(written.into_iter().map(|(l, v)| (l, ts, v)));
        if samples.is_empty() {
            return;
        }
        let n = samples.len();
        if let Err(e) = core.log_applied(samples).await {
            self.metrics.output_failures.inc_by(n as u64);
            tracing::error!(group = %slot.key, error = %e, samples = n, "rule output not written to the WAL (kept in the store only)");
        }
        drop(gate);
    }

    /// A fingerprint of the rule files: which files the patterns match, their
    /// sizes and modification times.
    fn files_fingerprint(&self) -> u64 {
        let patterns = self.patterns.lock().clone();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        match file::expand_patterns(&patterns) {
            Ok(files) => {
                for f in files {
                    h.update(f.as_os_str().as_encoded_bytes());
                    if let Ok(md) = std::fs::metadata(&f) {
                        h.update(&md.len().to_le_bytes());
                        if let Ok(t) = md.modified() {
                            h.update(&vigil_common::time::unix_ns(t).to_le_bytes());
                        }
                    }
                }
            }
            Err(e) => h.update(e.as_bytes()),
        }
        h.digest()
    }

    /// Reloads whenever the rule files change (see [`ManagerOptions::watch_interval`]).
    async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let m = self.clone();
        let mut last = tokio::task::spawn_blocking(move || m.files_fingerprint())
            .await
            .unwrap_or(0);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let m = self.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || m.files_fingerprint()).await else {
                continue;
            };
            if now != last {
                last = now;
                tracing::info!("rule files changed; reloading");
                let m = self.clone();
                // a failure is logged and keeps the running rules
                let _ = tokio::task::spawn_blocking(move || m.reload()).await;
            }
        }
    }

    /// Runs every group until `shutdown`, restarting the schedule when a
    /// reload replaced the groups, and reloads when the files change.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let watcher = self
            .opts
            .watch_interval
            .map(|every| tokio::spawn(self.clone().watch(every, shutdown.clone())));
        let mut gen_rx = self.generation.subscribe();
        loop {
            let round = shutdown.child_token();
            let mut tasks = Vec::new();
            for slot in self.groups() {
                let (m, r) = (self.clone(), round.clone());
                tasks.push(tokio::spawn(async move { m.run_group(slot, r).await }));
            }
            gen_rx.borrow_and_update();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = gen_rx.changed() => { if r.is_err() { round.cancel(); break; } }
            }
            round.cancel();
            for t in tasks {
                let _ = t.await;
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        if let Some(w) = watcher {
            let _ = w.await;
        }
    }

    async fn run_group(self: Arc<Self>, slot: Arc<GroupSlot>, stop: CancellationToken) {
        let (interval, first) = {
            let g = slot.group.lock();
            (
                g.interval_ms,
                g.eval_timestamp(vigil_common::time::now_ms()) + g.interval_ms,
            )
        };
        let mut next = first;
        let mut skipping = false;
        loop {
            let wait = (next - vigil_common::time::now_ms()).max(0) as u64;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
            let now = vigil_common::time::now_ms();
            let missed = (now - next) / interval;
            if missed > 0 {
                self.metrics
                    .missed
                    .get_or_create(&GroupLabels {
                        rule_group: slot.key.clone(),
                    })
                    .inc_by(missed as u64);
                next += missed * interval;
            }
            let leader = self.leadership.read().clone();
            if let Some(l) = leader.filter(|l| !l.may_act()) {
                l.skipped("rule_group", 1);
                skipping = true;
                next += interval;
                continue;
            }
            if std::mem::take(&mut skipping) {
                slot.group.lock().forget_alerts();
            }
            self.eval_and_log(&slot, next).await;
            next += interval;
        }
    }
}

/// The state bytes without the `"at"` line.
fn strip_at(b: &[u8]) -> Vec<&[u8]> {
    b.split(|c| *c == b'\n')
        .filter(|l| !l.trim_ascii_start().starts_with(b"\"at\""))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Matcher, Queryable, StoreOptions};

    fn write(dir: &std::path::Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }

    #[tokio::test]
    async fn recording_output_and_alerts_go_through_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "r.yml", RULES);
        let store = Arc::new(Store::new(StoreOptions::default()));
        let wal = crate::wal::Wal::start(&dir.path().join("wal")).unwrap();
        let core = Arc::new(IngestCore::new(
            store.clone(),
            wal.clone(),
            crate::telemetry::Telemetry::new(),
            Arc::new(crate::metadata::Metadata::default()),
            None,
            None,
            Default::default(),
        ));
        let m = RuleManager::new(store, ManagerOptions::default(), None);
        m.set_output(core);
        m.load(std::slice::from_ref(&f)).unwrap();
        let slot = m.groups()[0].clone();
        m.eval_and_log(&slot, 1_000).await;
        let mut r = crate::wal::reader::Reader::open(
            wal.dir(),
            wal.durable(),
            None,
            crate::wal::Position {
                segment: 1,
                offset: 0,
            },
        )
        .unwrap();
        let mut got = Vec::new();
        while let crate::wal::reader::Step::Record(rec, _) = r.step().unwrap() {
            for b in &rec.blocks {
                for (id, v) in b.ids.iter().zip(&b.values) {
                    let l = r.labels(*id).unwrap();
                    got.push((l.metric_name().unwrap().to_string(), b.timestamp_ms, *v));
                }
            }
        }
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("ALERTS".to_string(), 1_000, 1.0),
                ("ALERTS_FOR_STATE".to_string(), 1_000, 1.0),
                ("one".to_string(), 1_000, 1.0)
            ]
        );
    }

    const RULES: &str = "groups:\n- name: g\n  interval: 1s\n  rules:\n  - alert: Always\n    expr: vector(1)\n    for: 1h\n  - record: one\n    expr: vector(1)\n";

    #[test]
    fn failed_reload_keeps_the_old_rules() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "r.yml", RULES);
        let m = RuleManager::new(
            Arc::new(Store::new(StoreOptions::default())),
            ManagerOptions::default(),
            None,
        );
        assert_eq!(m.load(std::slice::from_ref(&f)), Ok(1));
        let slot = m.groups()[0].clone();
        m.eval_group(&slot, 1_000);
        std::fs::write(
            &f,
            "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up ==\n",
        )
        .unwrap();
        let e = m.reload().unwrap_err();
        assert!(
            e.to_string()
                .contains("r.yml:5:11: group \"g\", rule 1, \"X\": could not parse expression"),
            "{e}"
        );
        assert!(Arc::ptr_eq(&m.groups()[0], &slot), "old group still loaded");
        assert!(!slot.retired.load(Ordering::Acquire));
        // a good reload carries the pending alert over
        std::fs::write(&f, RULES.replace("interval: 1s", "interval: 2s")).unwrap();
        assert_eq!(m.reload(), Ok(1));
        let groups = m.groups();
        let g = groups[0].group.lock();
        assert_eq!(g.interval_ms, 2000);
        assert_eq!(
            g.rules[0]
                .alerting()
                .unwrap()
                .active
                .values()
                .next()
                .map(|a| a.active_at),
            Some(1_000)
        );
        drop(g);
        assert!(slot.retired.load(Ordering::Acquire));
        assert!(m.load(&["/nonexistent/rules.yml".to_string()]).is_err());
        assert_eq!(m.groups().len(), 1);
    }

    #[test]
    fn removed_groups_go_stale_and_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "r.yml", RULES);
        let store = Arc::new(Store::new(StoreOptions::default()));
        let opts = ManagerOptions {
            data_dir: Some(dir.path().join("state")),
            ..Default::default()
        };
        let now = vigil_common::time::now_ms();
        let m = RuleManager::new(store.clone(), opts.clone(), None);
        m.load(std::slice::from_ref(&f)).unwrap();
        m.eval_group(&m.groups()[0], now - 2000);
        m.eval_group(&m.groups()[0], now - 1000);
        // a new manager on the same data dir: the pending alert keeps activeAt
        let m2 = RuleManager::new(store.clone(), opts, None);
        m2.load(std::slice::from_ref(&f)).unwrap();
        let groups = m2.groups();
        let g = groups[0].group.lock();
        let a = g.rules[0]
            .alerting()
            .unwrap()
            .active
            .values()
            .next()
            .cloned()
            .unwrap();
        assert_eq!(a.active_at, now - 2000);
        drop(g);
        // removing the group marks its series stale
        std::fs::write(&f, "groups: []\n").unwrap();
        m.reload().unwrap();
        let one = store.select(&[Matcher::equal("__name__", "one")], 0, i64::MAX);
        assert!(crate::store::is_stale(one[0].samples.last().unwrap().1));
        assert!(!state::path_for(&dir.path().join("state"), &f, "g").exists());
    }

    #[tokio::test]
    async fn run_evaluates_on_schedule_and_follows_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "r.yml", RULES);
        let store = Arc::new(Store::new(StoreOptions::default()));
        let opts = ManagerOptions {
            watch_interval: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let m = RuleManager::new(store.clone(), opts, None);
        m.load(std::slice::from_ref(&f)).unwrap();
        let sd = CancellationToken::new();
        let task = tokio::spawn(m.clone().run(sd.clone()));
        let count = |name: &str| {
            store
                .select(&[Matcher::equal("__name__", name)], 0, i64::MAX)
                .first()
                .map_or(0, |s| s.samples.len())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count("one") < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(count("one") >= 2);
        let samples = store.select(&[Matcher::equal("__name__", "one")], 0, i64::MAX);
        let ts: Vec<i64> = samples[0].samples.iter().map(|s| s.0).collect();
        assert_eq!(ts[1] - ts[0], 1000, "aligned to the interval");
        // changing the file is enough: the watcher reloads
        std::fs::write(&f, RULES.replace("record: one", "record: two")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count("two") < 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(count("two") >= 1, "the reloaded group runs");
        sd.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
