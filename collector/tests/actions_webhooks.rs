//! Actions end to end over real HTTP on loopback: signed webhook deliveries
//! checked by a receiver that verifies them the Standard Webhooks way
//! (retries after 500 and 429, one idempotency id across retries, 410, give
//! up), and the real Alertmanager's webhook receiver pointed at the collector.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use vigil_collector::actions::config::ActionsConfig;
use vigil_collector::actions::engine::Actions;
use vigil_collector::actions::triggers::{Trigger, TriggerSource, TriggerStatus};
use vigil_collector::http::{AppState, router};
use vigil_collector::store::{Store, StoreOptions};
use vigil_common::Labels;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Receiver {
    /// Status codes to answer, in order; 200 once exhausted.
    script: Vec<(u16, Option<&'static str>)>,
    /// (webhook-id, body) of every request whose signature verified.
    verified: Vec<(String, serde_json::Value)>,
    rejected: usize,
}

/// The Standard Webhooks check, written from the spec independently of the
/// collector's code: HMAC-SHA256 over "{id}.{timestamp}.{body}" with the
/// base64-decoded secret, compared to any `v1,` signature; timestamp within 5 min.
fn spec_verify(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let id = headers.get("webhook-id")?.to_str().ok()?;
    let ts = headers.get("webhook-timestamp")?.to_str().ok()?;
    let sigs = headers.get("webhook-signature")?.to_str().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    if (now - ts.parse::<i64>().ok()?).abs() > 300 {
        return None;
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.strip_prefix("whsec_")?)
        .ok()?;
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    sigs.split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
        .then(|| id.to_string())
}

async fn receive(
    State(r): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut r = r.lock();
    match spec_verify(&headers, &body) {
        Some(id) => {
            let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            r.verified.push((id, v));
        }
        None => {
            r.rejected += 1;
            return (StatusCode::UNAUTHORIZED, HeaderMap::new()).into_response();
        }
    }
    let n = r.verified.len() - 1;
    let (status, retry_after) = r.script.get(n).copied().unwrap_or((200, None));
    let mut h = HeaderMap::new();
    if let Some(ra) = retry_after {
        h.insert("retry-after", ra.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), h).into_response()
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

async fn receiver(
    script: Vec<(u16, Option<&'static str>)>,
) -> (std::net::SocketAddr, Arc<Mutex<Receiver>>) {
    let r = Arc::new(Mutex::new(Receiver {
        script,
        ..Default::default()
    }));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    (serve(app).await, r)
}

fn actions(dir: &std::path::Path, hook: std::net::SocketAddr, extra: &str) -> Arc<Actions> {
    std::fs::write(dir.join("whsec"), SECRET).unwrap();
    let y = format!(
        "executors:\n  hooks: {{type: webhook, url: 'http://{hook}/hook', secret_file: whsec, timeout: 2s, max_attempts: 4}}\n\
         restart:\n  - {{name: oom, match: {{alertname: VigilContainerOOMKilled}}, executor: hooks, cooldown: 1h}}\n{extra}"
    );
    let path = dir.join("actions.yml");
    std::fs::write(&path, y).unwrap();
    Actions::new(ActionsConfig::load(&path).unwrap(), &dir.join("state")).unwrap()
}

fn oom_trigger(key: &str, container: &str) -> Trigger {
    Trigger {
        source: TriggerSource::Rules,
        labels: Labels::new([
            ("alertname", "VigilContainerOOMKilled"),
            ("container_id", container),
        ]),
        annotations: Labels::default(),
        status: TriggerStatus::Firing,
        starts_at: "2026-11-22T10:00:00Z".into(),
        dedup_key: key.into(),
    }
}

async fn wait_audit(
    a: &Actions,
    result: &str,
    timeout: Duration,
) -> vigil_collector::actions::audit::AuditEntry {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = a
            .audit_entries(100, 0)
            .into_iter()
            .find(|e| e.result.as_str() == result)
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {result} audit entry: {:?}",
            a.audit_entries(100, 0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn retries_after_500_and_429_keep_one_idempotency_id() {
    let (hook, rec) = receiver(vec![(500, None), (429, Some("1")), (200, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let a = actions(dir.path(), hook, "");
    let t0 = Instant::now();
    assert_eq!(a.handle(vec![oom_trigger("k1", "c1")]).started, 1);
    let done = wait_audit(&a, "delivered", Duration::from_secs(20)).await;
    assert!(done.detail.contains("after 3 attempt"), "{}", done.detail);
    // Retry-After: 1 was honoured
    assert!(t0.elapsed() >= Duration::from_secs(1));
    let r = rec.lock();
    assert_eq!(r.rejected, 0, "a signature failed the spec check");
    assert_eq!(r.verified.len(), 3);
    assert!(
        r.verified.iter().all(|(id, _)| *id == r.verified[0].0),
        "ids differ across retries"
    );
    let body = &r.verified[0].1;
    assert_eq!(body["action"], "restart");
    assert_eq!(body["target"]["container_id"], "c1");
    assert_eq!(
        body["id"],
        serde_json::Value::String(r.verified[0].0.clone())
    );
    assert_eq!(
        body["alerts"][0]["labels"]["alertname"],
        "VigilContainerOOMKilled"
    );
}

#[tokio::test]
async fn gone_stops_and_failures_give_up() {
    let (hook, rec) = receiver(vec![(410, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let a = actions(dir.path(), hook, "");
    a.handle(vec![oom_trigger("k1", "c1")]);
    wait_audit(&a, "gone", Duration::from_secs(10)).await;
    assert_eq!(rec.lock().verified.len(), 1);

    let (hook, rec) = receiver(vec![(500, None); 10]).await;
    let dir = tempfile::tempdir().unwrap();
    let a = actions(dir.path(), hook, "");
    a.handle(vec![oom_trigger("k1", "c2")]);
    let e = wait_audit(&a, "gave_up", Duration::from_secs(30)).await;
    assert!(e.detail.contains("HTTP 500"), "{}", e.detail);
    assert_eq!(rec.lock().verified.len(), 4);
}

struct Am(Child);
impl Drop for Am {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn real_alertmanager_webhook_triggers_a_restart() {
    if Command::new("prometheus-alertmanager")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "skipped: prometheus-alertmanager is not installed (scripts/install-test-deps.sh)"
        );
        return;
    }
    let (hook, rec) = receiver(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("amtoken"), "s3cret-token\n").unwrap();
    let a = actions(
        dir.path(),
        hook,
        "global: {alertmanager_token_file: amtoken}\n",
    );
    let mut state = AppState::new(Arc::new(Store::new(StoreOptions::default())));
    state.actions = Some(a.clone());
    let vigil = serve(router(state)).await;

    // the webhook refuses what is not Alertmanager's, and changes nothing
    let c = reqwest::Client::new();
    let url = format!("http://{vigil}/api/v1/alertmanager/webhook");
    let r = c.post(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .bearer_auth("s3cret-token")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(a.audit_entries(10, 0).is_empty());

    let port = free_port();
    let cfg = format!(
        "route: {{receiver: vigil, group_by: [alertname, container_id], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}\n\
         receivers:\n  - name: vigil\n    webhook_configs:\n      - url: {url}\n        send_resolved: true\n        \
         http_config: {{authorization: {{type: Bearer, credentials: s3cret-token}}}}\n"
    );
    std::fs::write(dir.path().join("am.yml"), cfg).unwrap();
    let _am = Am(Command::new("prometheus-alertmanager")
        .args([
            &format!("--config.file={}", dir.path().join("am.yml").display()),
            &format!("--storage.path={}", dir.path().join("am").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let am = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.get(format!("{am}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "alertmanager did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alert = serde_json::json!([{
        "labels": {"alertname": "VigilContainerOOMKilled", "container_id": "abc123", "name": "leaky"},
        "annotations": {"summary": "OOM killed"},
        "generatorURL": "http://vigil/graph"
    }]);
    let r = c
        .post(format!("{am}/api/v2/alerts"))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let e = wait_audit(&a, "delivered", Duration::from_secs(30)).await;
    assert_eq!(e.target.get("container_id"), Some("abc123"));
    let got = rec.lock().verified.clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["alerts"][0]["source"], "alertmanager");
    // Alertmanager repeats the group every group_interval: deduplicated, one restart
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rec.lock().verified.len(), 1);
}
