//! What may start a restart: a [`Trigger`] from the collector's own alerting
//! rules ([`RuleTriggers`], an [`AlertSink`]), from Alertmanager's webhook
//! (`http::actions_api`), or from an agent event such as an OOM kill
//! ([`EventTriggers`], an [`EventSink`]), handed to what implements
//! [`HandleTriggers`] (the engine); and the identity of the target a
//! trigger names ([`restart_target`]).
//!
//! Not here: matching triggers against restart rules and deciding (the
//! engine and `restart`).

use serde::Serialize;
use vigil_common::Labels;

use crate::ingest::{EventSink, IngestedEvent};
use crate::notify::OutgoingAlert;
use crate::rules::AlertSink;

/// Where a trigger came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerSource {
    Rules,
    Alertmanager,
    Event,
}

impl TriggerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerSource::Rules => "rules",
            TriggerSource::Alertmanager => "alertmanager",
            TriggerSource::Event => "event",
        }
    }
}

/// Whether the alert behind a trigger fires. Resolved triggers are
/// recorded, never acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerStatus {
    Firing,
    Resolved,
}

/// Something that may trigger a restart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trigger {
    pub source: TriggerSource,
    pub labels: Labels,
    pub annotations: Labels,
    pub status: TriggerStatus,
    /// RFC 3339, as the source gave it.
    pub starts_at: String,
    /// Same key → acted on once.
    pub dedup_key: String,
}

/// The identity labels a restart target is known by, most specific first.
const TARGET_LABELS: [&str; 7] = [
    "namespace",
    "pod",
    "container",
    "container_id",
    "name",
    "node",
    "service",
];

/// The identity labels of a restart target, and its key (`id/<container
/// id>`, `pod/<ns>/<pod>/<container>` or `name/<node>/<name>`); `None` when
/// the labels name no container or pod.
pub fn restart_target(labels: &Labels) -> Option<(String, Labels)> {
    let t = Labels::new(
        TARGET_LABELS
            .iter()
            .filter_map(|k| labels.get(k).filter(|v| !v.is_empty()).map(|v| (*k, v))),
    );
    let key = if let Some(id) = t.get("container_id") {
        format!("id/{id}")
    } else if let (Some(ns), Some(pod)) = (t.get("namespace"), t.get("pod")) {
        format!("pod/{ns}/{pod}/{}", t.get("container").unwrap_or(""))
    } else if let Some(n) = t.get("name") {
        format!("name/{}/{n}", t.get("node").unwrap_or(""))
    } else {
        return None;
    };
    Some((key, t))
}

/// Labels of a restart target from its key (see [`restart_target`]).
pub fn target_labels_of_key(key: &str) -> Labels {
    let parts: Vec<&str> = key.split('/').collect();
    let names: &[&str] = match parts.first() {
        Some(&"id") => &["container_id"],
        Some(&"pod") => &["namespace", "pod", "container"],
        Some(&"name") => &["node", "name"],
        _ => &[],
    };
    Labels::new(
        names
            .iter()
            .zip(parts.iter().skip(1))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, *v)),
    )
}

/// What acts on triggers (the engine, `Arc<Actions>`).
pub trait HandleTriggers: Send + Sync {
    fn handle_triggers(&self, triggers: Vec<Trigger>);
}

/// Alerts of the collector's own rules trigger restarts as Alertmanager's
/// notifications do, without the round trip through Alertmanager.
pub struct RuleTriggers<H>(pub H);

impl<H: HandleTriggers> AlertSink for RuleTriggers<H> {
    fn alerts(&self, ts: i64, alerts: &[OutgoingAlert]) {
        let triggers: Vec<Trigger> = alerts
            .iter()
            .map(|a| {
                let resolved = a.ends_at.is_some_and(|e| e <= ts);
                let starts_at = a.starts_at.unwrap_or(ts);
                Trigger {
                    source: TriggerSource::Rules,
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    status: if resolved {
                        TriggerStatus::Resolved
                    } else {
                        TriggerStatus::Firing
                    },
                    starts_at: vigil_common::time::format_rfc3339_millis(starts_at),
                    // one firing episode of one alert acts once
                    dedup_key: format!("rules/{:016x}/{starts_at}", a.labels.stable_hash()),
                }
            })
            .collect();
        self.0.handle_triggers(triggers);
    }
}

/// Agent events (an OOM kill) trigger restarts directly — without waiting for
/// a scrape and a rule evaluation. A restart rule matches them by
/// `event="<kind>"` plus the subject's labels (`container_id`, `name`, …).
pub struct EventTriggers<H>(pub H);

impl<H: HandleTriggers> EventSink for EventTriggers<H> {
    fn publish(&self, events: &[IngestedEvent]) {
        let triggers: Vec<Trigger> = events
            .iter()
            .map(|e| Trigger {
                source: TriggerSource::Event,
                dedup_key: format!(
                    "{}/{:016x}/{}",
                    e.kind,
                    e.subject.stable_hash(),
                    e.timestamp_ms
                ),
                labels: e.subject.clone().with("event", e.kind.clone()),
                annotations: e.attributes.iter().cloned().collect(),
                status: TriggerStatus::Firing,
                starts_at: vigil_common::time::format_rfc3339_millis(e.timestamp_ms),
            })
            .collect();
        if !triggers.is_empty() {
            self.0.handle_triggers(triggers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_their_keys_round_trip() {
        let l = Labels::new([
            ("alertname", "OOM"),
            ("namespace", "prod"),
            ("pod", "web-1"),
            ("container", "app"),
            ("instance", "x"),
        ]);
        let (key, t) = restart_target(&l).unwrap();
        assert_eq!(key, "pod/prod/web-1/app");
        assert_eq!(t.get("instance"), None);
        assert_eq!(target_labels_of_key(&key), t);
        let (key, _) = restart_target(&l.clone().with("container_id", "c1")).unwrap();
        assert_eq!(key, "id/c1");
        assert!(restart_target(&Labels::new([("alertname", "X")])).is_none());
    }
}
