//! Signed webhook delivery, per the Standard Webhooks spec (v1):
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64(HMAC-SHA256(secret, "{id}.{ts}.{body}"))>`
//! (several space-separated signatures while keys rotate).
//!
//! Delivery: only 2xx is success; 410 Gone stops at once; 429/503 honour
//! `Retry-After`; other failures retry with exponential backoff (`backon`)
//! and jitter until the attempts run out, then give up (logged and counted by
//! the caller). The id stays the same across retries, so receivers can dedupe;
//! the timestamp and signature are fresh for each attempt.
//! [`WebhookExecutor`] is the webhook [`Executor`]: it delivers the
//! [`ActionRequest`] as JSON.

use std::time::Duration;

use backon::BackoffBuilder as _;

use futures::future::BoxFuture;
use vigil_common::Labels;

use super::executor::{ActionRequest, Executor, ExecutorError, Outcome};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The webhook executor: the request as JSON, signed, with retries.
pub struct WebhookExecutor {
    url: String,
    secrets: Vec<Secret>,
    policy: DeliveryPolicy,
    client: reqwest::Client,
}

impl WebhookExecutor {
    pub fn new(
        url: &str,
        secrets: Vec<Secret>,
        timeout: Duration,
        max_attempts: u32,
    ) -> Result<Self, ExecutorError> {
        crate::tls::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| ExecutorError::Client(e.to_string()))?;
        Ok(WebhookExecutor {
            url: url.to_string(),
            secrets,
            policy: DeliveryPolicy {
                timeout,
                max_attempts,
                ..Default::default()
            },
            client,
        })
    }
}

impl Executor for WebhookExecutor {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn execute<'a>(&'a self, req: &'a ActionRequest) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let body = match serde_json::to_vec(req) {
                Ok(b) => b,
                Err(e) => return Outcome::Failed(format!("cannot encode the request: {e}")),
            };
            match deliver(
                &self.client,
                &self.url,
                &self.secrets,
                &req.id,
                &body,
                &self.policy,
            )
            .await
            {
                Delivery::Delivered { attempts, status } => {
                    Outcome::Delivered(format!("HTTP {status} after {attempts} attempt(s)"))
                }
                Delivery::Gone { attempts } => {
                    Outcome::Gone(format!("receiver answered 410 Gone (attempt {attempts})"))
                }
                Delivery::GaveUp {
                    attempts,
                    last_error,
                } => Outcome::GaveUp(format!("{attempts} attempts, last: {last_error}")),
            }
        })
    }

    fn replicas<'a>(
        &'a self,
        _workload: &'a Labels,
    ) -> BoxFuture<'a, Result<Option<u32>, ExecutorError>> {
        Box::pin(async { Ok(None) })
    }
}

/// Why a secret or signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("webhook secret is not valid base64 after the whsec_ prefix")]
    BadSecret,
    #[error("webhook secret must be 24 to 64 bytes, got {0}")]
    SecretLength(usize),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("timestamp {0:?} is not Unix seconds")]
    BadTimestamp(String),
    #[error("timestamp is {0} s away from now (tolerance 300 s)")]
    TimestampOutOfTolerance(i64),
    #[error("no signature matches")]
    NoMatch,
}

/// One signing key.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>` (the spec's form) or, without the prefix, the
    /// raw bytes of the text. Surrounding whitespace (a file's newline) is ignored.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let t = text.trim();
        let bytes = match t.strip_prefix("whsec_") {
            Some(b) => B64.decode(b).map_err(|_| SignatureError::BadSecret)?,
            None => t.as_bytes().to_vec(),
        };
        if !(24..=64).contains(&bytes.len()) {
            return Err(SignatureError::SecretLength(bytes.len()));
        }
        Ok(Secret(bytes))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable_hmac());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 signature>` for this key.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", B64.encode(tag))
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> HmacSha256 {
    panic!("HMAC-SHA256 accepts keys of any length")
}

/// The `webhook-signature` header value for all `secrets` (rotation: the
/// receiver accepts any one that matches).
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The receiver's check, as the Standard Webhooks reference libraries do it:
/// timestamp within 5 minutes of `now`, then any `v1,` signature equal to ours
/// (constant-time comparison).
pub fn verify(
    secret: &Secret,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureError> {
    let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let ts_text = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let sigs = signature.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(ts_text.to_string()))?;
    if (now_s - ts).abs() > 300 {
        return Err(SignatureError::TimestampOutOfTolerance(now_s - ts));
    }
    for s in sigs.split_ascii_whitespace() {
        let Some(b64) = s.strip_prefix("v1,") else {
            continue;
        };
        let Ok(raw) = B64.decode(b64) else { continue };
        if secret.mac(id, ts, body).verify_slice(&raw).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

/// How a delivery is attempted.
#[derive(Clone, Debug)]
pub struct DeliveryPolicy {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            timeout: Duration::from_secs(10),
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx answer, after `attempts` tries.
    Delivered { attempts: u32, status: u16 },
    /// 410 Gone: the receiver asks us to stop sending.
    Gone { attempts: u32 },
    /// Every attempt failed; the last error.
    GaveUp { attempts: u32, last_error: String },
}

/// Sends `body` (JSON) to `url`, signed with `secrets`, retrying per `policy`.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    secrets: &[Secret],
    id: &str,
    body: &[u8],
    policy: &DeliveryPolicy,
) -> Delivery {
    // backoff from `initial_backoff` doubling to `max_backoff`, with jitter
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(policy.initial_backoff)
        .with_max_delay(policy.max_backoff)
        .with_jitter()
        .without_max_times()
        .build();
    let mut last_error = String::new();
    let attempts_max = policy.max_attempts.max(1);
    for attempt in 1..=attempts_max {
        let ts = vigil_common::time::now_ms().div_euclid(1000);
        let mut req = client
            .post(url)
            .timeout(policy.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .body(body.to_vec());
        if !secrets.is_empty() {
            req = req.header("webhook-signature", signature_header(secrets, id, ts, body));
        }
        let mut wait = None;
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.status().is_success() {
                    return Delivery::Delivered {
                        attempts: attempt,
                        status,
                    };
                }
                if status == 410 {
                    return Delivery::Gone { attempts: attempt };
                }
                if status == 429 || status == 503 {
                    wait = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                }
                last_error = format!("HTTP {status}");
            }
            Err(e) => {
                last_error = if e.is_timeout() {
                    format!("timed out after {:?}", policy.timeout)
                } else {
                    format!("{e}")
                };
            }
        }
        if attempt == attempts_max {
            break;
        }
        let next = backoff
            .next()
            .unwrap_or(policy.max_backoff)
            .min(policy.max_backoff);
        let pause = match wait {
            Some(w) => w.min(policy.max_backoff.max(w.min(Duration::from_secs(300)))),
            None => next,
        };
        tokio::time::sleep(pause).await;
    }
    Delivery::GaveUp {
        attempts: attempts_max,
        last_error,
    }
}

/// `Retry-After` as delay-seconds (HTTP dates are rare from webhook receivers
/// and are treated as "no hint").
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks spec's published example.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_spec_example() {
        let s = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(s.sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        verify(
            &s,
            Some(SPEC_ID),
            Some(&SPEC_TS.to_string()),
            Some(SPEC_SIG),
            SPEC_BODY,
            SPEC_TS + 10,
        )
        .unwrap();
    }

    #[test]
    fn rejects_tampering_old_timestamps_and_bad_secrets() {
        let s = Secret::parse(SPEC_SECRET).unwrap();
        let ts = SPEC_TS.to_string();
        assert_eq!(
            verify(&s, Some(SPEC_ID), Some(&ts), Some(SPEC_SIG), b"{}", SPEC_TS),
            Err(SignatureError::NoMatch)
        );
        assert!(matches!(
            verify(
                &s,
                Some(SPEC_ID),
                Some(&ts),
                Some(SPEC_SIG),
                SPEC_BODY,
                SPEC_TS + 301
            ),
            Err(SignatureError::TimestampOutOfTolerance(_))
        ));
        assert_eq!(
            verify(&s, None, Some(&ts), Some(SPEC_SIG), SPEC_BODY, SPEC_TS),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            Secret::parse("whsec_!!!").unwrap_err(),
            SignatureError::BadSecret
        );
        assert_eq!(
            Secret::parse("short").unwrap_err(),
            SignatureError::SecretLength(5)
        );
    }

    #[test]
    fn rotation_header_lists_every_key_and_any_verifies() {
        let old = Secret::parse(SPEC_SECRET).unwrap();
        let new = Secret::parse("a-brand-new-secret-of-enough-length").unwrap();
        let h = signature_header(&[new.clone(), old.clone()], "id1", 100, b"x");
        assert_eq!(h.split(' ').count(), 2);
        verify(&old, Some("id1"), Some("100"), Some(&h), b"x", 100).unwrap();
        verify(&new, Some("id1"), Some("100"), Some(&h), b"x", 100).unwrap();
    }
}
