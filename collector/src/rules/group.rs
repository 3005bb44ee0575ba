//! A rule group: its rules evaluated in order at one timestamp, recording
//! results (and `ALERTS`) written to the store so later rules see them,
//! staleness markers for series a rule stopped producing, and the state
//! handed over on reload — Prometheus' `rules/group.go` and `recording.go`.
//!
//! Not here: scheduling (the manager calls [`Group::eval`] with the
//! timestamp) or persistence ([`super::state`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use vigil_common::Labels;

use super::alerting::{AlertingRule, OutgoingAlert};
use super::file::{GroupSpec, RuleKind, RuleSpec};
use super::template::QueryFn;
use crate::promql::{Engine, Expr, QueryError, Value};
use crate::store::{AppendError, STALE_NAN, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

impl Health {
    /// Prometheus' API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

#[derive(Debug)]
pub enum RuleKindState {
    Recording,
    Alerting(AlertingRule),
}

/// One rule with its evaluation status.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub expr: Expr,
    pub expr_text: String,
    /// Recording: labels set on the result; alerting: label templates as written.
    pub labels: BTreeMap<String, String>,
    pub kind: RuleKindState,
    pub health: Health,
    pub last_error: Option<String>,
    /// Wall-clock start of the last evaluation (ms).
    pub last_eval_ms: Option<i64>,
    pub eval_seconds: f64,
}

impl Rule {
    pub fn from_spec(spec: &RuleSpec) -> Result<Self, String> {
        let kind = match &spec.kind {
            RuleKind::Recording { .. } => RuleKindState::Recording,
            RuleKind::Alerting {
                alert,
                for_ms,
                keep_firing_for_ms,
                annotations,
            } => RuleKindState::Alerting(
                AlertingRule::new(
                    alert,
                    &spec.expr.to_string(),
                    *for_ms,
                    *keep_firing_for_ms,
                    &spec.labels,
                    annotations,
                )
                .map_err(|e| e.to_string())?,
            ),
        };
        Ok(Rule {
            name: spec.name().to_string(),
            expr: spec.expr.clone(),
            expr_text: spec.expr_text.clone(),
            labels: spec.labels.clone(),
            kind,
            health: Health::Unknown,
            last_error: None,
            last_eval_ms: None,
            eval_seconds: 0.0,
        })
    }

    pub fn alerting(&self) -> Option<&AlertingRule> {
        match &self.kind {
            RuleKindState::Alerting(a) => Some(a),
            RuleKindState::Recording => None,
        }
    }

    /// Prometheus' `nameAndLabels`, used to match rules across reloads.
    pub(crate) fn identity(&self) -> String {
        let l = Labels::new(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        format!("{}{}", self.name, l)
    }
}

/// Where rule expressions are evaluated when not by the collector's own
/// engine over its store: a remote Prometheus-compatible API (gateway
/// mode, [`crate::fleet::remote_query`]). Called on a blocking thread.
pub trait RuleQuerier: Send + Sync {
    /// The samples of `expr` (as written in the rule) at `ts_ms`.
    fn query(&self, expr: &str, ts_ms: i64) -> Result<Vec<(Labels, f64)>, QueryError>;
}

/// What one group evaluation needs from outside.
pub struct EvalEnv<'a> {
    pub engine: &'a Engine,
    /// Where results are written (and, without `remote`, what is queried).
    pub store: &'a Arc<Store>,
    /// When set, expressions (and templates' `query`) go there instead.
    pub remote: Option<Arc<dyn RuleQuerier>>,
    pub external_labels: &'a Labels,
    pub external_url: &'a str,
    pub resend_delay_ms: i64,
}

/// What one group evaluation did.
#[derive(Debug, Default)]
pub struct EvalOutcome {
    /// Alerts due for Alertmanager.
    pub to_send: Vec<OutgoingAlert>,
    /// Samples the rules produced.
    pub samples: usize,
    /// Rules whose evaluation failed.
    pub failures: usize,
    /// Results the store refused (out of order, series limit).
    pub append_failures: usize,
    /// Every sample written to the store (results, `ALERTS`, staleness
    /// markers), all at the evaluation timestamp: what goes to the WAL.
    pub written: Vec<(Labels, f64)>,
}

/// A group of rules.
#[derive(Debug)]
pub struct Group {
    pub name: String,
    pub file: String,
    pub interval_ms: i64,
    pub limit: usize,
    pub query_offset_ms: i64,
    pub rules: Vec<Rule>,
    prev_series: Vec<HashSet<Labels>>,
    stale_series: Vec<Labels>,
    /// Wall-clock start of the last evaluation (ms) and its duration.
    pub last_eval_ms: Option<i64>,
    pub eval_seconds: f64,
    /// The timestamp of the last evaluation (ms).
    pub last_eval_ts: Option<i64>,
}

impl Group {
    pub fn from_spec(spec: &GroupSpec, default_interval_ms: i64) -> Result<Self, String> {
        let rules = spec
            .rules
            .iter()
            .map(Rule::from_spec)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Group {
            name: spec.name.clone(),
            file: spec.file.clone(),
            interval_ms: spec.interval_ms.unwrap_or(default_interval_ms).max(1),
            limit: spec.limit,
            query_offset_ms: spec.query_offset_ms.unwrap_or(0),
            prev_series: vec![HashSet::new(); rules.len()],
            rules,
            stale_series: Vec::new(),
            last_eval_ms: None,
            eval_seconds: 0.0,
            last_eval_ts: None,
        })
    }

    /// A stable per-group hash (file and name), for the evaluation offset.
    pub fn hash(&self) -> u64 {
        Labels::new([("name", self.name.as_str()), ("file", self.file.as_str())]).stable_hash()
    }

    /// Prometheus' `EvalTimestamp`: the latest slot `≤ now` of this group,
    /// slots being `interval`-aligned plus a per-group offset.
    pub fn eval_timestamp(&self, now_ms: i64) -> i64 {
        let offset = (self.hash() % self.interval_ms as u64) as i64;
        let adj = now_ms - offset;
        let base = adj - adj.rem_euclid(self.interval_ms);
        base + offset
    }

    /// Prometheus' `CopyState`: alert state and series of matching rules
    /// move to this (new) group; series of rules that went away are marked
    /// stale at the next evaluation.
    pub fn copy_state_from(&mut self, old: &mut Group) {
        self.last_eval_ms = old.last_eval_ms;
        self.eval_seconds = old.eval_seconds;
        self.last_eval_ts = old.last_eval_ts;
        let mut by_id: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (i, r) in old.rules.iter().enumerate() {
            by_id.entry(r.identity()).or_default().push(i);
        }
        let mut taken = vec![false; old.rules.len()];
        for (i, r) in self.rules.iter_mut().enumerate() {
            let Some(list) = by_id.get_mut(&r.identity()) else {
                continue;
            };
            if list.is_empty() {
                continue;
            }
            let fi = list.remove(0);
            taken[fi] = true;
            self.prev_series[i] = std::mem::take(&mut old.prev_series[fi]);
            if let (RuleKindState::Alerting(new), RuleKindState::Alerting(from)) =
                (&mut r.kind, &mut old.rules[fi].kind)
            {
                new.active = std::mem::take(&mut from.active);
            }
        }
        self.stale_series = std::mem::take(&mut old.stale_series);
        for (fi, t) in taken.iter().enumerate() {
            if !t {
                self.stale_series.extend(old.prev_series[fi].drain());
            }
        }
    }

    /// Forgets the alerts' state (pending and firing): what a collector
    /// held before another one led its fleet is stale; it starts afresh,
    /// as after a first start.
    pub fn forget_alerts(&mut self) {
        for r in &mut self.rules {
            if let RuleKindState::Alerting(a) = &mut r.kind {
                a.active.clear();
            }
        }
    }

    /// All series this group's rules wrote last time (for stale markers when
    /// the group is removed).
    pub fn written_series(&self) -> impl Iterator<Item = &Labels> {
        self.prev_series.iter().flat_map(|s| s.iter())
    }

    /// Evaluates every rule in order at `ts` (ms).
    pub fn eval(&mut self, ts: i64, env: &EvalEnv<'_>) -> EvalOutcome {
        let mut outcome = EvalOutcome::default();
        let started = Instant::now();
        self.last_eval_ms = Some(vigil_common::time::now_ms());
        self.last_eval_ts = Some(ts);
        let query_ts = ts - self.query_offset_ms;
        for i in 0..self.rules.len() {
            let rule_start = Instant::now();
            let rule = &mut self.rules[i];
            rule.last_eval_ms = Some(vigil_common::time::now_ms());
            let result = eval_rule(rule, ts, query_ts, env, self.limit);
            rule.eval_seconds = rule_start.elapsed().as_secs_f64();
            let samples = match result {
                Ok(s) => s,
                Err(e) => {
                    rule.health = Health::Err;
                    rule.last_error = Some(e);
                    outcome.failures += 1;
                    continue;
                }
            };
            rule.health = Health::Ok;
            rule.last_error = None;
            outcome.samples += samples.len();
            if let RuleKindState::Alerting(a) = &mut rule.kind {
                outcome
                    .to_send
                    .extend(a.alerts_to_send(ts, env.resend_delay_ms, self.interval_ms));
            }
            let mut returned = HashSet::with_capacity(samples.len());
            for (labels, v) in samples {
                match append(env.store, &labels, ts, v) {
                    Ok(()) => {
                        outcome.written.push((labels.clone(), v));
                        returned.insert(labels);
                    }
                    Err(e) => {
                        outcome.append_failures += 1;
                        if !matches!(e, AppendError::OutOfOrder { .. }) {
                            rule.health = Health::Err;
                            rule.last_error = Some(e.to_string());
                        }
                    }
                }
            }
            for gone in self.prev_series[i].difference(&returned) {
                // refused when another rule wrote the series at ts: expected
                if append(env.store, gone, ts, STALE_NAN).is_ok() {
                    outcome.written.push((gone.clone(), STALE_NAN));
                }
            }
            self.prev_series[i] = returned;
        }
        for s in std::mem::take(&mut self.stale_series) {
            if append(env.store, &s, ts, STALE_NAN).is_ok() {
                outcome.written.push((s, STALE_NAN));
            }
        }
        self.eval_seconds = started.elapsed().as_secs_f64();
        outcome
    }
}

fn append(store: &Store, labels: &Labels, ts: i64, v: f64) -> Result<(), AppendError> {
    let r = store.get_or_create(labels)?;
    store.append(r, ts, v)
}

/// Runs a rule's query as Prometheus' `EngineQueryFunc`: a vector, or a
/// scalar as a one-sample vector without labels.
pub fn query_vector(
    engine: &Engine,
    store: &Store,
    expr: &Expr,
    ts: i64,
) -> Result<Vec<(Labels, f64)>, QueryError> {
    match engine.instant_expr(store, expr, ts)? {
        Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        Value::Scalar { v, .. } => Ok(vec![(Labels::default(), v)]),
        _ => Err(QueryError::Execution {
            msg: "rule result is not a vector or scalar".into(),
        }),
    }
}

/// A `query` function for templates, evaluating at `ts`.
pub fn template_query(engine: &Engine, store: &Arc<Store>, ts: i64) -> QueryFn {
    let (engine, store) = (engine.clone(), store.clone());
    Arc::new(move |q: &str| {
        let expr = crate::promql::parse(q).map_err(|e| e.to_string())?;
        query_vector(&engine, &store, &expr, ts).map_err(|e| e.to_string())
    })
}

/// A `query` function for templates that asks the remote API.
fn remote_template_query(remote: Arc<dyn RuleQuerier>, ts: i64) -> QueryFn {
    Arc::new(move |q: &str| {
        // parsed here too, so a bad template query reads the same either way
        crate::promql::parse(q).map_err(|e| e.to_string())?;
        remote.query(q, ts).map_err(|e| e.to_string())
    })
}

fn eval_rule(
    rule: &mut Rule,
    ts: i64,
    query_ts: i64,
    env: &EvalEnv<'_>,
    limit: usize,
) -> Result<Vec<(Labels, f64)>, String> {
    let result = match &env.remote {
        Some(r) => r.query(&rule.expr_text, query_ts),
        None => query_vector(env.engine, env.store, &rule.expr, query_ts),
    }
    .map_err(|e| e.to_string())?;
    match &mut rule.kind {
        RuleKindState::Recording => {
            let mut out = Vec::with_capacity(result.len());
            let mut seen = HashSet::with_capacity(result.len());
            for (l, v) in result {
                let mut m: Vec<(String, String)> = l
                    .into_pairs()
                    .into_iter()
                    .filter(|(k, v)| !v.is_empty() && k != "__name__")
                    .collect();
                m.push(("__name__".into(), rule.name.clone()));
                for (k, v) in &rule.labels {
                    m.retain(|(name, _)| name != k);
                    if !v.is_empty() {
                        m.push((k.clone(), v.clone()));
                    }
                }
                let labels = Labels::new(m);
                if !seen.insert(labels.clone()) {
                    return Err(
                        "vector contains metrics with the same labelset after applying rule labels"
                            .into(),
                    );
                }
                out.push((labels, v));
            }
            if limit > 0 && out.len() > limit {
                return Err(format!(
                    "exceeded limit of {limit} with {} series",
                    out.len()
                ));
            }
            Ok(out)
        }
        RuleKindState::Alerting(a) => {
            let query = match &env.remote {
                Some(r) => remote_template_query(r.clone(), query_ts),
                None => template_query(env.engine, env.store, query_ts),
            };
            a.eval(
                ts,
                result,
                env.external_labels,
                env.external_url,
                Some(query),
                limit,
            )
            .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::EngineOptions;
    use crate::store::{Matcher, Queryable, StoreOptions, is_stale};

    fn setup(yaml: &str) -> (Group, Arc<Store>, Engine) {
        let f = super::super::file::parse("t.yml", yaml).unwrap();
        let g = Group::from_spec(&f.groups[0], 60_000).unwrap();
        (
            g,
            Arc::new(Store::new(StoreOptions::default())),
            Engine::new(EngineOptions::default()),
        )
    }

    fn put(store: &Store, labels: &[(&str, &str)], t: i64, v: f64) {
        let r = store
            .get_or_create(&Labels::new(labels.iter().copied()))
            .unwrap();
        store.append(r, t, v).unwrap();
    }

    #[test]
    fn recorded_series_are_seen_by_later_rules_and_go_stale() {
        let (mut g, store, engine) = setup(
            "groups:\n- name: g\n  rules:\n  - record: job:x:sum\n    expr: sum by (job) (x)\n    labels: {src: rec}\n  - alert: High\n    expr: job:x:sum > 1\n",
        );
        put(
            &store,
            &[("__name__", "x"), ("job", "a"), ("i", "1")],
            0,
            1.0,
        );
        put(
            &store,
            &[("__name__", "x"), ("job", "a"), ("i", "2")],
            0,
            2.0,
        );
        let ext = Labels::default();
        let env = EvalEnv {
            engine: &engine,
            store: &store,
            remote: None,
            external_labels: &ext,
            external_url: "",
            resend_delay_ms: 60_000,
        };
        let out = g.eval(0, &env);
        assert_eq!(out.failures, 0);
        let rec = store.select(&[Matcher::equal("__name__", "job:x:sum")], 0, 0);
        assert_eq!(rec.len(), 1);
        assert_eq!(
            rec[0].labels,
            Labels::new([("__name__", "job:x:sum"), ("job", "a"), ("src", "rec")])
        );
        assert_eq!(rec[0].samples, vec![(0, 3.0)]);
        let alerts = g.rules[1].alerting().unwrap();
        assert_eq!(alerts.active.len(), 1, "the alert saw the recorded series");
        assert_eq!(out.to_send.len(), 1);
        let a = store.select(&[Matcher::equal("__name__", "ALERTS")], 0, 0);
        assert_eq!(a[0].labels.get("alertstate"), Some("firing"));
        // x disappears (stale): the recorded series and ALERTS get stale markers
        put(
            &store,
            &[("__name__", "x"), ("job", "a"), ("i", "1")],
            60_000,
            STALE_NAN,
        );
        put(
            &store,
            &[("__name__", "x"), ("job", "a"), ("i", "2")],
            60_000,
            STALE_NAN,
        );
        g.eval(60_000, &env);
        let rec = store.select(&[Matcher::equal("__name__", "job:x:sum")], 0, 60_000);
        assert!(is_stale(rec[0].samples[1].1));
        let a = store.select(&[Matcher::equal("__name__", "ALERTS")], 0, 60_000);
        assert!(is_stale(a[0].samples[1].1));
    }

    #[test]
    fn errors_are_per_rule() {
        let (mut g, store, engine) = setup(
            "groups:\n- name: g\n  rules:\n  - record: r\n    expr: label_replace(x, 'a', '', 'b', '(')\n  - record: dup\n    expr: x\n    labels: {job: same}\n  - record: ok\n    expr: vector(1)\n",
        );
        put(&store, &[("__name__", "x"), ("job", "a")], 0, 1.0);
        put(&store, &[("__name__", "x"), ("job", "b")], 0, 1.0);
        let ext = Labels::default();
        let env = EvalEnv {
            engine: &engine,
            store: &store,
            remote: None,
            external_labels: &ext,
            external_url: "",
            resend_delay_ms: 60_000,
        };
        let out = g.eval(0, &env);
        assert_eq!(out.failures, 2);
        assert_eq!(g.rules[0].health, Health::Err);
        assert_eq!(
            g.rules[1].last_error.as_deref(),
            Some("vector contains metrics with the same labelset after applying rule labels")
        );
        assert_eq!(g.rules[2].health, Health::Ok);
    }

    #[test]
    fn eval_timestamps_are_aligned_with_an_offset() {
        let (g, _, _) = setup("groups:\n- name: g\n  interval: 10s\n  rules: []\n");
        let t = g.eval_timestamp(1_000_000_123);
        assert!(t <= 1_000_000_123 && 1_000_000_123 - t < 10_000);
        assert_eq!(g.eval_timestamp(t + 10_000), t + 10_000);
        assert_eq!(g.eval_timestamp(t + 9_999), t);
    }

    #[test]
    fn copy_state_keeps_alerts_of_matching_rules() {
        let yaml = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: vector(1)\n    for: 5m\n";
        let (mut old, store, engine) = setup(yaml);
        let ext = Labels::default();
        let env = EvalEnv {
            engine: &engine,
            store: &store,
            remote: None,
            external_labels: &ext,
            external_url: "",
            resend_delay_ms: 60_000,
        };
        old.eval(0, &env);
        let (mut new, _, _) = setup(yaml);
        new.copy_state_from(&mut old);
        let a = new.rules[0].alerting().unwrap();
        assert_eq!(a.active.values().next().map(|a| a.active_at), Some(0));
    }
}
