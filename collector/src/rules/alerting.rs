//! The alert state machine of one alerting rule, as Prometheus'
//! `rules/alerting.go` runs it: inactive → pending → firing → resolved, with
//! `for`, `keep_firing_for`, the group `limit`, the duplicate-labelset error,
//! the `ALERTS` / `ALERTS_FOR_STATE` series and the Alertmanager send rules.
//!
//! Times are Unix milliseconds; `None` is Go's zero `time.Time` (so an
//! evaluation at the epoch, as promtool's tests run, is still a real time).
//!
//! Not here: running the query ([`super::group`] hands the result in),
//! sending ([`crate::notify`]).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use vigil_common::Labels;

use super::template::{AlertData, QueryFn, Template, TemplateError};

/// Resolved alerts are kept (and re-sent) this long.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert instance (one label set) of an alerting rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Sample labels − `__name__` + rule labels + `alertname`.
    pub labels: Labels,
    pub annotations: Labels,
    pub state: AlertState,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    pub valid_until: Option<i64>,
    pub keep_firing_since: Option<i64>,
}

impl Alert {
    /// Prometheus' `needsSending`: never pending ones; a resolution not yet
    /// sent; otherwise once per resend delay.
    pub fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if let Some(r) = self.resolved_at
            && self.last_sent_at.is_none_or(|s| r > s)
        {
            return true;
        }
        self.last_sent_at.is_none_or(|s| s + resend_delay_ms < ts)
    }
}

pub use crate::notify::OutgoingAlert;

/// An alerting rule and its active alerts.
#[derive(Debug)]
pub struct AlertingRule {
    pub name: String,
    pub expr_text: String,
    pub hold_ms: i64,
    pub keep_firing_for_ms: i64,
    /// Label templates (name → template), sorted by name.
    pub labels: Vec<(String, Template)>,
    pub annotations: Vec<(String, Template)>,
    /// Keyed by the alert labels' stable hash.
    pub active: HashMap<u64, Alert>,
}

/// Why an evaluation of an alerting rule failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertEvalError {
    #[error("vector contains metrics with the same labelset after applying alert labels")]
    DuplicateLabelset,
    #[error("exceeded limit of {limit} with {count} alerts")]
    Limit { limit: usize, count: usize },
}

impl AlertingRule {
    pub fn new(
        name: &str,
        expr_text: &str,
        hold_ms: i64,
        keep_firing_for_ms: i64,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, TemplateError> {
        let tname = format!("__alert_{name}");
        let compile =
            |m: &BTreeMap<String, String>| -> Result<Vec<(String, Template)>, TemplateError> {
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), Template::new(&tname, v)?)))
                    .collect()
            };
        Ok(AlertingRule {
            name: name.to_string(),
            expr_text: expr_text.to_string(),
            hold_ms,
            keep_firing_for_ms,
            labels: compile(labels)?,
            annotations: compile(annotations)?,
            active: HashMap::new(),
        })
    }

    /// The rule's labels as written (unexpanded).
    pub fn raw_labels(&self) -> Labels {
        Labels::new(self.labels.iter().map(|(k, t)| (k.as_str(), t.text())))
    }

    pub fn raw_annotations(&self) -> Labels {
        Labels::new(self.annotations.iter().map(|(k, t)| (k.as_str(), t.text())))
    }

    /// One evaluation at `ts` on the query result `samples`
    /// (`(labels, value)`); returns the `ALERTS` and `ALERTS_FOR_STATE`
    /// samples to write.
    #[allow(clippy::too_many_arguments)]
    pub fn eval(
        &mut self,
        ts: i64,
        samples: Vec<(Labels, f64)>,
        external_labels: &Labels,
        external_url: &str,
        query: Option<QueryFn>,
        limit: usize,
    ) -> Result<Vec<(Labels, f64)>, AlertEvalError> {
        let mut result_fps = std::collections::HashSet::with_capacity(samples.len());
        let mut alerts: HashMap<u64, Alert> = HashMap::with_capacity(samples.len());
        for (metric, v) in samples {
            // Prometheus: empty label values are absent labels
            let sample_labels = Labels::from_sorted_unchecked(
                metric
                    .into_pairs()
                    .into_iter()
                    .filter(|(k, v)| k != "__name__" && !v.is_empty())
                    .collect(),
            );
            let data = AlertData {
                labels: &sample_labels,
                external_labels,
                external_url,
                value: v,
            };
            let mut lb: Vec<(String, String)> = sample_labels.clone().into_pairs();
            for (k, t) in &self.labels {
                let val = t.expand_or_error(&data, query.clone());
                lb.retain(|(name, _)| name != k);
                if !val.is_empty() {
                    lb.push((k.clone(), val));
                }
            }
            lb.retain(|(name, _)| name != "alertname");
            lb.push(("alertname".into(), self.name.clone()));
            let annotations = Labels::from_sorted_unchecked(
                self.annotations
                    .iter()
                    .map(|(k, t)| (k.clone(), t.expand_or_error(&data, query.clone())))
                    .collect(),
            );
            let labels = Labels::new(lb);
            let h = labels.stable_hash();
            result_fps.insert(h);
            if alerts.contains_key(&h) {
                return Err(AlertEvalError::DuplicateLabelset);
            }
            alerts.insert(
                h,
                Alert {
                    labels,
                    annotations,
                    state: AlertState::Pending,
                    value: v,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    last_sent_at: None,
                    valid_until: None,
                    keep_firing_since: None,
                },
            );
        }

        for (h, a) in alerts {
            if let Some(existing) = self.active.get_mut(&h)
                && existing.state != AlertState::Inactive
            {
                existing.value = a.value;
                existing.annotations = a.annotations;
                continue;
            }
            self.active.insert(h, a);
        }

        let mut out = Vec::new();
        let mut num_active = 0usize;
        let mut delete = Vec::new();
        for (fp, a) in self.active.iter_mut() {
            if !result_fps.contains(fp) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && self.keep_firing_for_ms > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    if ts - since < self.keep_firing_for_ms {
                        keep_firing = true;
                    }
                }
                if a.state == AlertState::Pending
                    || a.resolved_at
                        .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                {
                    delete.push(*fp);
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = None;
            }
            num_active += 1;
            if a.state == AlertState::Pending && ts - a.active_at >= self.hold_ms {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
            }
            out.push(alert_sample(&self.labels, a, &self.name, true));
            out.push(alert_sample(&self.labels, a, &self.name, false));
        }
        for fp in delete {
            self.active.remove(&fp);
        }
        if limit > 0 && num_active > limit {
            self.active.clear();
            return Err(AlertEvalError::Limit {
                limit,
                count: num_active,
            });
        }
        Ok(out)
    }

    /// Alerts that are pending or firing (not resolved), as the API and
    /// promtool's checks see them.
    pub fn active_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().filter(|a| a.resolved_at.is_none())
    }

    /// The highest state of any alert.
    pub fn state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }

    /// Prometheus' `sendAlerts`: the alerts due at `ts`, marked as sent.
    pub fn alerts_to_send(
        &mut self,
        ts: i64,
        resend_delay_ms: i64,
        interval_ms: i64,
    ) -> Vec<OutgoingAlert> {
        let delta = resend_delay_ms.max(interval_ms);
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            if a.needs_sending(ts, resend_delay_ms) {
                a.last_sent_at = Some(ts);
                a.valid_until = Some(ts + 4 * delta);
                out.push(OutgoingAlert {
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: a.fired_at,
                    ends_at: a.resolved_at.or(a.valid_until),
                    expr: self.expr_text.clone(),
                });
            }
        }
        out
    }
}

/// `ALERTS{…, alertstate}` = 1 or `ALERTS_FOR_STATE{…}` = activeAt (s).
fn alert_sample(
    rule_labels: &[(String, Template)],
    a: &Alert,
    name: &str,
    alerts: bool,
) -> (Labels, f64) {
    let mut lb: BTreeMap<&str, &str> = rule_labels
        .iter()
        .map(|(k, t)| (k.as_str(), t.text()))
        .collect();
    for (k, v) in a.labels.iter() {
        lb.insert(k, v);
    }
    lb.insert("alertname", name);
    if alerts {
        lb.insert("__name__", "ALERTS");
        lb.insert("alertstate", a.state.as_str());
    } else {
        lb.insert("__name__", "ALERTS_FOR_STATE");
    }
    let labels = Labels::from_sorted_unchecked(
        lb.into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let v = if alerts {
        1.0
    } else {
        (a.active_at.div_euclid(1000)) as f64
    };
    (labels, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(hold_ms: i64, kff_ms: i64) -> AlertingRule {
        let labels = BTreeMap::from([("severity".to_string(), "page".to_string())]);
        let ann = BTreeMap::from([(
            "summary".to_string(),
            "{{ $labels.job }} at {{ $value }}".to_string(),
        )]);
        AlertingRule::new("Down", "up == 0", hold_ms, kff_ms, &labels, &ann).unwrap()
    }

    fn up(job: &str) -> (Labels, f64) {
        (Labels::new([("__name__", "up"), ("job", job)]), 0.0)
    }

    fn eval(
        r: &mut AlertingRule,
        ts: i64,
        s: Vec<(Labels, f64)>,
    ) -> Result<Vec<(Labels, f64)>, AlertEvalError> {
        r.eval(ts, s, &Labels::default(), "", None, 0)
    }

    fn only(r: &AlertingRule) -> Alert {
        assert_eq!(r.active.len(), 1, "{:?}", r.active);
        r.active.values().next().cloned().unwrap()
    }

    #[test]
    fn pending_firing_resolved_and_removed() {
        let mut r = rule(120_000, 0);
        let out = eval(&mut r, 0, vec![up("a")]).unwrap();
        let a = only(&r);
        assert_eq!(a.state, AlertState::Pending);
        assert_eq!(
            a.labels,
            Labels::new([("alertname", "Down"), ("job", "a"), ("severity", "page")])
        );
        assert_eq!(a.annotations, Labels::new([("summary", "a at 0")]));
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .any(|(l, v)| l.get("alertstate") == Some("pending") && *v == 1.0)
        );
        assert!(
            out.iter()
                .any(|(l, v)| l.metric_name() == Some("ALERTS_FOR_STATE") && *v == 0.0)
        );
        eval(&mut r, 60_000, vec![up("a")]).unwrap();
        assert_eq!(only(&r).state, AlertState::Pending);
        let out = eval(&mut r, 120_000, vec![up("a")]).unwrap();
        let a = only(&r);
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!(a.active_at, 0);
        assert_eq!(a.fired_at, Some(120_000));
        assert!(
            out.iter()
                .any(|(l, _)| l.get("alertstate") == Some("firing"))
        );
        // vanishes: resolved, kept for 15m, no series written
        let out = eval(&mut r, 180_000, vec![]).unwrap();
        assert!(out.is_empty());
        let a = only(&r);
        assert_eq!(a.state, AlertState::Inactive);
        assert_eq!(a.resolved_at, Some(180_000));
        assert_eq!(r.active_alerts().count(), 0);
        eval(&mut r, 180_000 + RESOLVED_RETENTION_MS, vec![]).unwrap();
        assert_eq!(r.active.len(), 1);
        eval(&mut r, 180_000 + RESOLVED_RETENTION_MS + 1, vec![]).unwrap();
        assert!(r.active.is_empty());
    }

    #[test]
    fn vanished_pending_alert_is_deleted_and_restarts() {
        let mut r = rule(120_000, 0);
        eval(&mut r, 0, vec![up("a")]).unwrap();
        eval(&mut r, 60_000, vec![]).unwrap();
        assert!(r.active.is_empty());
        eval(&mut r, 120_000, vec![up("a")]).unwrap();
        assert_eq!(only(&r).active_at, 120_000);
    }

    #[test]
    fn for_zero_fires_at_once_and_refiring_gets_new_active_at() {
        let mut r = rule(0, 0);
        eval(&mut r, 0, vec![up("a")]).unwrap();
        assert_eq!(only(&r).state, AlertState::Firing);
        eval(&mut r, 60_000, vec![]).unwrap();
        assert_eq!(only(&r).state, AlertState::Inactive);
        eval(&mut r, 120_000, vec![up("a")]).unwrap();
        let a = only(&r);
        assert_eq!(
            (a.state, a.active_at, a.resolved_at),
            (AlertState::Firing, 120_000, None)
        );
    }

    #[test]
    fn keep_firing_for() {
        let mut r = rule(0, 120_000);
        eval(&mut r, 0, vec![up("a")]).unwrap();
        let out = eval(&mut r, 60_000, vec![]).unwrap();
        let a = only(&r);
        assert_eq!(
            (a.state, a.keep_firing_since),
            (AlertState::Firing, Some(60_000))
        );
        assert_eq!(out.len(), 2);
        eval(&mut r, 120_000, vec![]).unwrap();
        assert_eq!(only(&r).state, AlertState::Firing);
        eval(&mut r, 180_000, vec![]).unwrap();
        let a = only(&r);
        assert_eq!(
            (a.state, a.resolved_at),
            (AlertState::Inactive, Some(180_000))
        );
        // back before expiry: keep_firing_since is reset
        let mut r = rule(0, 120_000);
        eval(&mut r, 0, vec![up("a")]).unwrap();
        eval(&mut r, 60_000, vec![]).unwrap();
        eval(&mut r, 120_000, vec![up("a")]).unwrap();
        assert_eq!(only(&r).keep_firing_since, None);
        // pending alerts do not keep firing
        let mut r = rule(300_000, 120_000);
        eval(&mut r, 0, vec![up("a")]).unwrap();
        eval(&mut r, 60_000, vec![]).unwrap();
        assert!(r.active.is_empty());
    }

    #[test]
    fn limit_and_duplicate_labelsets() {
        let mut r = rule(0, 0);
        let e = r
            .eval(0, vec![up("a"), up("b")], &Labels::default(), "", None, 1)
            .unwrap_err();
        assert_eq!(e.to_string(), "exceeded limit of 1 with 2 alerts");
        assert!(r.active.is_empty());
        assert!(
            r.eval(0, vec![up("a"), up("b")], &Labels::default(), "", None, 2)
                .is_ok()
        );
        let mut r = rule(0, 0);
        let dup = vec![
            (Labels::new([("__name__", "x"), ("job", "a")]), 0.0),
            (Labels::new([("__name__", "y"), ("job", "a")]), 0.0),
        ];
        assert_eq!(eval(&mut r, 0, dup), Err(AlertEvalError::DuplicateLabelset));
        assert!(r.active.is_empty());
    }

    #[test]
    fn send_rules() {
        let mut r = rule(60_000, 0);
        eval(&mut r, 0, vec![up("a")]).unwrap();
        assert!(
            r.alerts_to_send(0, 60_000, 15_000).is_empty(),
            "pending is never sent"
        );
        eval(&mut r, 60_000, vec![up("a")]).unwrap();
        let sent = r.alerts_to_send(60_000, 60_000, 15_000);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].starts_at, Some(60_000));
        assert_eq!(sent[0].ends_at, Some(60_000 + 4 * 60_000));
        eval(&mut r, 75_000, vec![up("a")]).unwrap();
        assert!(
            r.alerts_to_send(75_000, 60_000, 15_000).is_empty(),
            "within resend delay"
        );
        eval(&mut r, 120_000, vec![up("a")]).unwrap();
        assert!(
            r.alerts_to_send(120_000, 60_000, 15_000).is_empty(),
            "not strictly after"
        );
        eval(&mut r, 135_000, vec![up("a")]).unwrap();
        let sent = r.alerts_to_send(135_000, 60_000, 300_000);
        assert_eq!(sent[0].ends_at, Some(135_000 + 4 * 300_000));
        eval(&mut r, 150_000, vec![]).unwrap();
        let sent = r.alerts_to_send(150_000, 60_000, 15_000);
        assert_eq!(
            sent[0].ends_at,
            Some(150_000),
            "resolved carries endsAt = resolvedAt"
        );
        eval(&mut r, 165_000, vec![]).unwrap();
        assert!(r.alerts_to_send(165_000, 60_000, 15_000).is_empty());
        eval(&mut r, 211_000, vec![]).unwrap();
        assert_eq!(
            r.alerts_to_send(211_000, 60_000, 15_000).len(),
            1,
            "resolved re-sent"
        );
    }
}
