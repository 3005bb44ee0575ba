//! Alertmanager's webhook notification (payload version "4"), received at
//! `POST /api/v1/alertmanager/webhook`: parsed strictly, deduplicated by
//! fingerprint + status + startsAt, and turned into alerts the action rules
//! match. Alertmanager cannot sign; the endpoint authenticates by bearer token.

use serde::Deserialize;
use vigil_common::Labels;

/// The notification as Alertmanager sends it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: Labels,
    #[serde(default)]
    pub common_labels: Labels,
    #[serde(default)]
    pub common_annotations: Labels,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<NotifiedAlert>,
}

/// One alert of a notification.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotifiedAlert {
    pub status: String,
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// Why a notification was refused (answered with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("malformed Alertmanager payload: {0}")]
    Malformed(String),
    #[error("unsupported payload version {0:?} (expected \"4\")")]
    Version(String),
    #[error("alert {index}: status {status:?} is neither firing nor resolved")]
    Status { index: usize, status: String },
    #[error("alert {index}: no labels")]
    NoLabels { index: usize },
}

/// Parses and validates a notification body.
pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let n: Notification =
        serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    if n.version != "4" {
        return Err(PayloadError::Version(n.version));
    }
    for (index, a) in n.alerts.iter().enumerate() {
        if a.status != "firing" && a.status != "resolved" {
            return Err(PayloadError::Status {
                index,
                status: a.status.clone(),
            });
        }
        if a.labels.is_empty() {
            return Err(PayloadError::NoLabels { index });
        }
    }
    Ok(n)
}

impl NotifiedAlert {
    /// The deduplication key: the same alert instance in the same state is
    /// acted on once, however often Alertmanager repeats it.
    pub fn dedup_key(&self) -> String {
        let fp = if self.fingerprint.is_empty() {
            // older senders: derive from the sorted labels
            format!("{:016x}", self.labels.stable_hash())
        } else {
            self.fingerprint.clone()
        };
        format!("{fp}/{}/{}", self.status, self.starts_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "receiver": "vigil", "status": "firing", "version": "4",
      "groupKey": "{}:{alertname=\"X\"}", "truncatedAlerts": 0,
      "groupLabels": {"alertname": "X"}, "commonLabels": {"alertname": "X"},
      "commonAnnotations": {}, "externalURL": "http://am:9093",
      "alerts": [{"status": "firing", "labels": {"alertname": "X", "pod": "p"},
        "annotations": {"summary": "s"}, "startsAt": "2026-11-22T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://x", "fingerprint": "abc"}]
    }"#;

    #[test]
    fn parses_version_4() {
        let n = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(n.alerts.len(), 1);
        assert_eq!(n.alerts[0].labels.get("pod"), Some("p"));
        assert_eq!(n.alerts[0].dedup_key(), "abc/firing/2026-11-22T10:00:00Z");
        assert_eq!(n.external_url, "http://am:9093");
    }

    #[test]
    fn refuses_bad_payloads() {
        assert!(matches!(parse(b"{"), Err(PayloadError::Malformed(_))));
        assert!(matches!(parse(b"[]"), Err(PayloadError::Malformed(_))));
        let v3 = SAMPLE.replace("\"version\": \"4\"", "\"version\": \"3\"");
        assert_eq!(
            parse(v3.as_bytes()).unwrap_err(),
            PayloadError::Version("3".into())
        );
        let bad = SAMPLE.replace(
            "\"status\": \"firing\", \"labels\"",
            "\"status\": \"odd\", \"labels\"",
        );
        assert!(matches!(
            parse(bad.as_bytes()),
            Err(PayloadError::Status { index: 0, .. })
        ));
    }
}
