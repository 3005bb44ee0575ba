//! What an action is and how it is carried out, typed end to end:
//! [`Action`] (restart a target, scale a workload), [`ActionRequest`] (an
//! action with its id, rule, reason and evidence; serialized, it is the JSON
//! body a webhook receiver gets, documented in the README's Actions section), the
//! [`Outcome`] of carrying it out, and the [`Executor`] trait that the webhook
//! ([`super::webhook`]), Docker ([`super::docker`]) and Kubernetes
//! ([`super::kubernetes`]) executors implement (the engine builds them from
//! their configuration).
//!
//! Not here: deciding what to do (the engine, `restart`, `hpa`), auditing,
//! the executors themselves.

use futures::future::BoxFuture;
use serde::Serialize;
use serde::ser::SerializeMap;
use vigil_common::Labels;

use super::triggers::Trigger;

/// The two kinds of action (also the `action` label of the metrics and the
/// audit log's `action` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Restart,
    Scale,
    /// A workload's image changed (a release seen, not an action taken).
    Rollout,
    /// Put a workload back on its previous image.
    Rollback,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Restart => "restart",
            ActionKind::Scale => "scale",
            ActionKind::Rollout => "rollout",
            ActionKind::Rollback => "rollback",
        }
    }
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Restart the container or pod that `target` names (identity labels:
    /// `container_id`, `name`, `namespace`, `pod`, `container`, `node`, …).
    Restart { target: Labels },
    /// Bring `workload` from `from` to `to` replicas.
    Scale {
        workload: Labels,
        from: u32,
        to: u32,
    },
    /// Replace `workload`'s containers running `from_image` with ones
    /// running `to_image` (its previous version).
    Rollback {
        workload: Labels,
        from_image: String,
        to_image: String,
    },
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Restart { .. } => ActionKind::Restart,
            Action::Scale { .. } => ActionKind::Scale,
            Action::Rollback { .. } => ActionKind::Rollback,
        }
    }

    /// The target or workload the action is about.
    pub fn target(&self) -> &Labels {
        match self {
            Action::Restart { target } => target,
            Action::Scale { workload, .. } | Action::Rollback { workload, .. } => workload,
        }
    }

    /// `(from, to)` replicas of a scale action.
    pub fn replicas(&self) -> (Option<u32>, Option<u32>) {
        match self {
            Action::Restart { .. } | Action::Rollback { .. } => (None, None),
            Action::Scale { from, to, .. } => (Some(*from), Some(*to)),
        }
    }
}

/// The autoscaler's reading behind a scale action.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricReading {
    pub query: String,
    pub value: f64,
    pub target: f64,
}

/// An action with what the receiver needs to act on it and to trust it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionRequest {
    /// Idempotency id, the same across retries of one delivery.
    pub id: String,
    pub action: Action,
    /// The restart rule or autoscaler that decided.
    pub rule: String,
    pub reason: String,
    /// The triggers behind a restart.
    pub alerts: Vec<Trigger>,
    /// The reading behind a scale.
    pub metric: Option<MetricReading>,
    pub dry_run: bool,
    /// When it was decided (Unix ms).
    pub time_ms: i64,
}

impl Serialize for ActionRequest {
    /// The webhook body: `{id, action: "restart"|"scale"|"rollback", rule,
    /// target, from_replicas?, to_replicas?, from_image?, to_image?, reason,
    /// alerts?, metric?, dry_run, time}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("action", &self.action.kind())?;
        m.serialize_entry("rule", &self.rule)?;
        m.serialize_entry("target", self.action.target())?;
        if let Action::Scale { from, to, .. } = &self.action {
            m.serialize_entry("from_replicas", from)?;
            m.serialize_entry("to_replicas", to)?;
        }
        if let Action::Rollback {
            from_image,
            to_image,
            ..
        } = &self.action
        {
            m.serialize_entry("from_image", from_image)?;
            m.serialize_entry("to_image", to_image)?;
        }
        m.serialize_entry("reason", &self.reason)?;
        if !self.alerts.is_empty() {
            m.serialize_entry("alerts", &self.alerts)?;
        }
        if let Some(r) = &self.metric {
            m.serialize_entry("metric", r)?;
        }
        m.serialize_entry("dry_run", &self.dry_run)?;
        m.serialize_entry(
            "time",
            &vigil_common::time::format_rfc3339_millis(self.time_ms),
        )?;
        m.end()
    }
}

/// How carrying an action out ended. The variant is the audit `result`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Carried out (delivered to the webhook receiver, or done through the
    /// runtime's API); what happened.
    Delivered(String),
    /// Could not be carried out; why.
    Failed(String),
    /// The webhook receiver answered `410 Gone`: it wants no more.
    Gone(String),
    /// Every delivery attempt failed; the last error.
    GaveUp(String),
}

impl Outcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered(_))
    }

    pub fn detail(&self) -> &str {
        match self {
            Outcome::Delivered(d) | Outcome::Failed(d) | Outcome::Gone(d) | Outcome::GaveUp(d) => d,
        }
    }
}

/// Why an executor could not be built or could not answer a question: the
/// executor's own error (`KubeError`, `DockerError`, …), kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("http client: {0}")]
    Client(String),
    #[error("{executor}: {source}")]
    Api {
        executor: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Carries actions out.
pub trait Executor: Send + Sync {
    /// `webhook`, `docker` or `kubernetes` (the metrics' `executor` label).
    fn kind(&self) -> &'static str;

    /// Carries `req` out. Never panics; every failure is an [`Outcome`].
    fn execute<'a>(&'a self, req: &'a ActionRequest) -> BoxFuture<'a, Outcome>;

    /// The replicas `workload` has now, where the executor can tell (a
    /// webhook cannot: `None`).
    fn replicas<'a>(
        &'a self,
        workload: &'a Labels,
    ) -> BoxFuture<'a, Result<Option<u32>, ExecutorError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_body_keeps_its_documented_shape() {
        let req = ActionRequest {
            id: "abc".into(),
            action: Action::Scale {
                workload: Labels::new([("service", "web")]),
                from: 2,
                to: 4,
            },
            rule: "web".into(),
            reason: "cpu".into(),
            alerts: Vec::new(),
            metric: Some(MetricReading {
                query: "q".into(),
                value: 85.0,
                target: 40.0,
            }),
            dry_run: false,
            time_ms: 1_500,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "abc", "action": "scale", "rule": "web",
                "target": {"service": "web"}, "from_replicas": 2, "to_replicas": 4,
                "reason": "cpu", "metric": {"query": "q", "value": 85.0, "target": 40.0},
                "dry_run": false, "time": "1970-01-01T00:00:01.500Z"
            })
        );
        let rollback = ActionRequest {
            action: Action::Rollback {
                workload: Labels::new([("service", "web")]),
                from_image: "web:2".into(),
                to_image: "web:1".into(),
            },
            metric: None,
            ..req.clone()
        };
        let v = serde_json::to_value(&rollback).unwrap();
        assert_eq!(v["action"], "rollback");
        assert_eq!(
            (v["from_image"].as_str(), v["to_image"].as_str()),
            (Some("web:2"), Some("web:1"))
        );
        assert_eq!(v["target"], serde_json::json!({"service": "web"}));
        let restart = ActionRequest {
            action: Action::Restart {
                target: Labels::new([("container_id", "c1")]),
            },
            metric: None,
            ..req
        };
        let v = serde_json::to_value(&restart).unwrap();
        assert_eq!(v["action"], "restart");
        assert!(v.get("to_replicas").is_none() && v.get("metric").is_none());
    }
}
