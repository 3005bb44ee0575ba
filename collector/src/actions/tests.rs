//! The actions engine end to end in one process: triggers to audited
//! decisions, autoscalers against metric sources, executors over real HTTP.
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use vigil_common::Labels;

use super::audit::AuditResult;
use super::config::ActionsConfig;
use super::engine::*;
use super::source::MetricSource;
use super::source::QueryResult;
use super::triggers::{EventTriggers, RuleTriggers, TriggerSource};
use super::triggers::{Trigger, TriggerStatus};
use std::sync::atomic::{AtomicU32, Ordering};

struct Fixed(Mutex<Vec<(Labels, f64)>>);
impl MetricSource for Fixed {
    fn query(&self, expr: &str, _at: i64) -> QueryResult {
        if expr == "replicas" {
            return Ok(vec![(Labels::default(), 2.0)]);
        }
        Ok(self.0.lock().clone())
    }
}

fn cfg(y: &str) -> ActionsConfig {
    ActionsConfig::parse(y, Path::new("/t/a.yml")).unwrap()
}

fn trigger(status: &str, key: &str) -> Trigger {
    Trigger {
        source: TriggerSource::Alertmanager,
        labels: Labels::new([("alertname", "OOM"), ("container_id", "c1")]),
        annotations: Labels::default(),
        status: if status == "firing" {
            TriggerStatus::Firing
        } else {
            TriggerStatus::Resolved
        },
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
    assert_eq!(e[1].result, AuditResult::DryRun);
    assert_eq!(e[0].result, AuditResult::SkippedCooldown);
    drop(a);
    // after a restart of the collector the cooldown still holds
    let a = Actions::new(cfg(y), d.path()).unwrap();
    a.handle(vec![trigger("firing", "k4")]);
    assert_eq!(
        a.audit_entries(1, 0)[0].result,
        AuditResult::SkippedCooldown
    );
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
    *src.0.lock() = vec![(Labels::default(), 85.0)];
    let d1 = a.evaluate_scaler(&sc, &src, 2_000).await.unwrap();
    assert_eq!((d1.current, d1.replicas), (2, 4));
    let e = a.audit_entries(1, 0);
    assert_eq!((e[0].from_replicas, e[0].to_replicas), (Some(2), Some(4)));
    assert_eq!(e[0].result, AuditResult::DryRun);
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
    assert_eq!(e[0].result, AuditResult::DryRun);
    assert_eq!(e[0].target.get("container_id"), Some("c9"));
    // no alert of its own yet
    let (alerts, firing) =
        a.crash_loop_alerts(vigil_common::time::now_ms(), 60_000, &HashSet::new());
    assert!(alerts.is_empty() && firing.is_empty());
    // a second firing episode: over max_restarts → crash-looping
    sink.alerts(10_000, &[alert(10_000, 70_000)]);
    assert_eq!(a.audit_entries(1, 0)[0].result, AuditResult::CrashLooping);
    let now = vigil_common::time::now_ms();
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
    assert_eq!(e[0].target.get("container_id"), Some("abc"));
    assert_eq!(e[0].result, AuditResult::DryRun);
}

/// Scale requests that reach a real HTTP receiver, counted.
async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/scale",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    g.lock().push(v);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (addr, got)
}

/// CPU per replica and a replicas metric that lags behind the scale.
struct Lagging {
    cpu: Mutex<f64>,
    replicas: Mutex<f64>,
}
impl MetricSource for Lagging {
    fn query(&self, expr: &str, _at: i64) -> QueryResult {
        let v = if expr == "replicas" {
            *self.replicas.lock()
        } else {
            *self.cpu.lock()
        };
        Ok(vec![(Labels::default(), v)])
    }
}

/// The bug seen on a Prometheus-fed service: while the replicas metric
/// still showed the old count, 2→4 was sent twice and then 4→2 twice.
#[tokio::test]
async fn a_lagging_replicas_metric_never_repeats_a_scale_request() {
    let (addr, got) = receiver().await;
    let d = tempfile::tempdir().unwrap();
    let y = format!(
        "executors: {{w: {{type: webhook, url: 'http://{addr}/scale', max_attempts: 1}}}}\nautoscale: [{{name: web, executor: w, workload: {{service: web}}, query: cpu, replicas_query: replicas, target: 40, min_replicas: 2, max_replicas: 4, behavior: {{scale_down: {{stabilization_window: 0s}}}}}}]"
    );
    let a = Actions::new(cfg(&y), d.path()).unwrap();
    let sc = a.config().autoscale[0].clone();
    let src = Lagging {
        cpu: Mutex::new(85.0),
        replicas: Mutex::new(2.0),
    };
    let sent = |got: &Mutex<Vec<serde_json::Value>>| -> Vec<(u64, u64)> {
        got.lock()
            .iter()
            .map(|v| {
                (
                    v["from_replicas"].as_u64().unwrap_or(0),
                    v["to_replicas"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    // busy: 2 → 4, then the metric still says 2 for a few evaluations
    let mut t = 1_000_000;
    for _ in 0..4 {
        a.evaluate_scaler(&sc, &src, t).await;
        t += 1_000;
    }
    assert_eq!(sent(&got), vec![(2, 4)]);
    // the metric catches up; the load falls: 4 → 2 once, while the
    // metric still says 4
    *src.replicas.lock() = 4.0;
    *src.cpu.lock() = 10.0;
    for _ in 0..4 {
        a.evaluate_scaler(&sc, &src, t).await;
        t += 1_000;
    }
    assert_eq!(sent(&got), vec![(2, 4), (4, 2)]);
    // the metric never reaches 2 (the workload refused): after the hold
    // the autoscaler believes what it reads and acts again
    t += REQUESTED_REPLICAS_HOLD.as_millis() as i64;
    a.evaluate_scaler(&sc, &src, t).await;
    assert_eq!(sent(&got), vec![(2, 4), (4, 2), (4, 2)]);
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

/// Answers the release-tracking query with what the test sets.
struct Images(Mutex<Vec<(Labels, f64)>>);
impl MetricSource for Images {
    fn query(&self, expr: &str, _at: i64) -> QueryResult {
        assert_eq!(expr, super::config::DEFAULT_ROLLOUT_QUERY);
        Ok(self.0.lock().clone())
    }
}

fn images(src: &Images, rows: &[(&str, &str, f64)]) {
    *src.0.lock() = rows
        .iter()
        .map(|(s, i, n)| (Labels::new([("service", *s), ("image", *i)]), *n))
        .collect();
}

#[tokio::test]
async fn rollouts_are_seen_audited_exposed_and_remembered() {
    let d = tempfile::tempdir().unwrap();
    let a = Actions::new(cfg("{}"), d.path()).unwrap();
    let mut reg = prometheus_client::registry::Registry::default();
    a.register(&mut reg);
    let src = Images(Mutex::new(Vec::new()));
    // nothing known yet: nothing happens
    assert!(a.observe_rollouts(&src, 1_000).is_empty());
    images(&src, &[("web", "web:1", 2.0), ("db", "pg:15", 1.0)]);
    assert!(a.observe_rollouts(&src, 2_000).is_empty(), "baselines only");
    images(
        &src,
        &[
            ("web", "web:1", 1.0),
            ("web", "web:2", 1.0),
            ("db", "pg:15", 1.0),
        ],
    );
    let c = a.observe_rollouts(&src, 3_000);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, Labels::new([("service", "web")]));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(
        text.contains(r#"vigil_rollout_info{service="web",old_image="web:1",new_image="web:2",state="progressing"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vigil_rollout_replicas{service="web",version="new"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vigil_rollout_progressing{service="web"} 1"#),
        "{text}"
    );
    images(&src, &[("web", "web:2", 2.0), ("db", "pg:15", 1.0)]);
    a.observe_rollouts(&src, 4_000);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(text.contains(r#"state="complete"} 1"#), "{text}");
    assert!(
        !text.contains(r#"state="progressing"} 1"#),
        "the old info series is gone: {text}"
    );
    let entries = a.audit_entries(100, 0);
    let rollouts: Vec<_> = entries
        .iter()
        .filter(|e| e.action == super::executor::ActionKind::Rollout)
        .collect();
    assert_eq!(rollouts.len(), 2, "{entries:?}");
    assert_eq!(rollouts[0].result, AuditResult::RolloutCompleted);
    assert_eq!(rollouts[1].result, AuditResult::RolloutStarted);
    assert_eq!(rollouts[1].from_image.as_deref(), Some("web:1"));
    assert_eq!(rollouts[1].to_image.as_deref(), Some("web:2"));
    assert!(
        rollouts[1].detail.contains("web:1: 1, web:2: 1"),
        "{}",
        rollouts[1].detail
    );
    drop(a);
    // the previous version survives a restart
    let a = Actions::new(cfg("{}"), d.path()).unwrap();
    let v = a
        .workload_versions(&Labels::new([("service", "web")]))
        .unwrap();
    assert_eq!(v.previous.as_deref(), Some("web:1"));
    assert_eq!(v.current.as_deref(), Some("web:2"));
}
