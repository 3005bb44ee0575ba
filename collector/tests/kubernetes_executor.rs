//! The Kubernetes executor against a fake API server on loopback whose
//! answers are built from, and whose received requests are checked against,
//! the Kubernetes API's own types (k8s-openapi).

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use parking_lot::Mutex;
use vigil_collector::actions::audit::AuditResult;
use vigil_collector::actions::config::ActionsConfig;
use vigil_collector::actions::engine::Actions;
use vigil_collector::actions::source::{MetricSource, QueryResult};
use vigil_collector::actions::triggers::{Trigger, TriggerSource, TriggerStatus};
use vigil_common::Labels;

#[derive(Default)]
struct Api {
    /// (method, path, content-type) of every request.
    requests: Vec<(String, String, String)>,
    scaled_to: Vec<i32>,
    restarted_at: Vec<String>,
    deleted: Vec<String>,
    bad_bodies: Vec<String>,
    /// The bearer token the API server accepts (the service account's
    /// current projected token).
    token: String,
    /// Requests refused with 401 for a stale token.
    refused: usize,
}

type Shared = Arc<Mutex<Api>>;

fn meta(name: &str, owner: Option<(&str, &str)>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("shop".into()),
        owner_references: owner.map(|(kind, n)| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: n.into(),
                uid: "u".into(),
                controller: Some(true),
                ..Default::default()
            }]
        }),
        ..Default::default()
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::to_string(v).unwrap(),
    )
        .into_response()
}

fn ct(h: &HeaderMap) -> String {
    h.get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn hpas(State(s): State<Shared>, UrlPath(ns): UrlPath<String>) -> Response {
    s.lock()
        .requests
        .push(("GET".into(), format!("hpas/{ns}"), String::new()));
    let hpa = HorizontalPodAutoscaler {
        metadata: meta("owned-hpa", None),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: "owned".into(),
            },
            max_replicas: 5,
            ..Default::default()
        }),
        status: None,
    };
    json(
        &serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {}, "items": [hpa]}),
    )
}

async fn scale(
    State(s): State<Shared>,
    UrlPath((_ns, name)): UrlPath<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let mut api = s.lock();
    if body.is_empty() {
        api.requests
            .push(("GET".into(), format!("scale/{name}"), String::new()));
        return json(&Scale {
            metadata: meta(&name, None),
            spec: Some(ScaleSpec { replicas: Some(2) }),
            status: Some(ScaleStatus {
                replicas: 2,
                selector: Some("app=web".into()),
            }),
        });
    }
    api.requests
        .push(("PATCH".into(), format!("scale/{name}"), ct(&h)));
    match serde_json::from_slice::<Scale>(&body) {
        Ok(sc) => {
            let r = sc.spec.and_then(|s| s.replicas).unwrap_or(-1);
            api.scaled_to.push(r);
            json(&Scale {
                metadata: meta(&name, None),
                spec: Some(ScaleSpec { replicas: Some(r) }),
                status: None,
            })
        }
        Err(e) => {
            api.bad_bodies.push(format!("scale: {e}"));
            StatusCode::UNPROCESSABLE_ENTITY.into_response()
        }
    }
}

async fn deployment(
    State(s): State<Shared>,
    UrlPath((_ns, name)): UrlPath<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let mut api = s.lock();
    api.requests
        .push(("PATCH".into(), format!("deployment/{name}"), ct(&h)));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match serde_json::from_value::<PodTemplateSpec>(v["spec"]["template"].clone()) {
        Ok(t) => {
            let at = t
                .metadata
                .and_then(|m| m.annotations)
                .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned());
            match at {
                Some(at) => api.restarted_at.push(at),
                None => api.bad_bodies.push("no restartedAt annotation".into()),
            }
            (StatusCode::OK, "{}").into_response()
        }
        Err(e) => {
            api.bad_bodies.push(format!("template: {e}"));
            StatusCode::UNPROCESSABLE_ENTITY.into_response()
        }
    }
}

async fn pod(State(s): State<Shared>, UrlPath((_ns, name)): UrlPath<(String, String)>) -> Response {
    s.lock()
        .requests
        .push(("GET".into(), format!("pod/{name}"), String::new()));
    let owner = if name.starts_with("web-") {
        Some(("ReplicaSet", "web-5d9f"))
    } else {
        None
    };
    json(&Pod {
        metadata: meta(&name, owner),
        ..Default::default()
    })
}

async fn delete_pod(
    State(s): State<Shared>,
    UrlPath((_ns, name)): UrlPath<(String, String)>,
) -> Response {
    let mut api = s.lock();
    api.requests
        .push(("DELETE".into(), format!("pod/{name}"), String::new()));
    api.deleted.push(name.clone());
    json(&Pod {
        metadata: meta(&name, None),
        ..Default::default()
    })
}

async fn replicaset(
    State(s): State<Shared>,
    UrlPath((_ns, name)): UrlPath<(String, String)>,
) -> Response {
    s.lock()
        .requests
        .push(("GET".into(), format!("replicaset/{name}"), String::new()));
    json(&ReplicaSet {
        metadata: meta(&name, Some(("Deployment", "web"))),
        ..Default::default()
    })
}

/// 401 for any token but the current one, as an API server does once a
/// projected token has rotated.
async fn authenticate(
    State(s): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    {
        let mut api = s.lock();
        if given != format!("Bearer {}", api.token) {
            api.refused += 1;
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    next.run(req).await
}

async fn fake_api() -> (String, Shared) {
    let s: Shared = Arc::default();
    s.lock().token = "sa-token".into();
    let app = Router::new()
        .route(
            "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
            get(hpas),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            get(scale).patch(scale),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            axum::routing::patch(deployment),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
            get(replicaset),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(pod).delete(delete_pod),
        )
        .layer(axum::middleware::from_fn_with_state(
            s.clone(),
            authenticate,
        ))
        .with_state(s.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://{addr}"), s)
}

struct Cpu(f64);
impl MetricSource for Cpu {
    fn query(&self, _expr: &str, _at: i64) -> QueryResult {
        Ok(vec![(Labels::default(), self.0)])
    }
}

fn engine(dir: &Path, api: &str, mode: &str) -> Arc<Actions> {
    std::fs::write(dir.join("token"), "sa-token\n").unwrap();
    let y = format!(
        "executors:\n  k8s: {{type: kubernetes, api_server: '{api}', token_file: token, restart_mode: {mode}}}\n\
         restart:\n  - {{name: oom, match: {{alertname: KubePodOOM}}, executor: k8s, cooldown: 1s}}\n\
         autoscale:\n  - {{name: web, executor: k8s, workload: {{namespace: shop, deployment: web}}, query: cpu, target: 40, min_replicas: 2, max_replicas: 6}}\n  \
         - {{name: owned, executor: k8s, workload: {{namespace: shop, deployment: owned}}, query: cpu, target: 40, min_replicas: 2, max_replicas: 6}}\n"
    );
    let p = dir.join("actions.yml");
    std::fs::write(&p, y).unwrap();
    Actions::new(ActionsConfig::load(&p).unwrap(), &dir.join("state")).unwrap()
}

fn trigger(pod: &str) -> Trigger {
    Trigger {
        source: TriggerSource::Rules,
        labels: Labels::new([
            ("alertname", "KubePodOOM"),
            ("namespace", "shop"),
            ("pod", pod),
            ("container", "app"),
        ]),
        annotations: Labels::default(),
        status: TriggerStatus::Firing,
        starts_at: pod.into(),
        dedup_key: pod.into(),
    }
}

async fn wait(s: &Shared, what: &str, f: impl Fn(&Api) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f(&s.lock()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            s.lock().requests
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn scales_through_the_scale_subresource_and_refuses_hpa_owned_deployments() {
    let (api, s) = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    let a = engine(dir.path(), &api, "rollout");
    let web = a.config().autoscale[0].clone();
    let d = a.evaluate_scaler(&web, &Cpu(80.0), 1_000).await.unwrap();
    assert_eq!((d.current, d.replicas), (2, 4));
    {
        let api = s.lock();
        assert_eq!(api.scaled_to, vec![4], "bad bodies: {:?}", api.bad_bodies);
        let patch = api.requests.iter().find(|r| r.0 == "PATCH").unwrap();
        assert_eq!(patch.2, "application/merge-patch+json");
    }
    let owned = a.config().autoscale[1].clone();
    a.evaluate_scaler(&owned, &Cpu(85.0), 1_000).await.unwrap();
    assert_eq!(
        s.lock().scaled_to,
        vec![4],
        "scaled a deployment its HPA owns"
    );
    let e = a.audit_entries(1, 0);
    assert_eq!(e[0].result, AuditResult::Failed);
    assert!(e[0].detail.contains("owned-hpa"), "{}", e[0].detail);
}

#[tokio::test]
async fn restarts_by_rollout_annotation_or_pod_deletion() {
    let (api, s) = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    let a = engine(dir.path(), &api, "rollout");
    a.handle(vec![trigger("web-5d9f-abcde")]);
    wait(&s, "rollout restart", |a| !a.restarted_at.is_empty()).await;
    {
        let api = s.lock();
        assert!(api.bad_bodies.is_empty(), "{:?}", api.bad_bodies);
        let patch = api
            .requests
            .iter()
            .find(|r| r.1 == "deployment/web")
            .unwrap();
        assert_eq!(patch.2, "application/strategic-merge-patch+json");
        assert!(api.restarted_at[0].ends_with('Z'));
    }
    // a bare pod (no ReplicaSet owner) is deleted instead
    a.handle(vec![trigger("lonely")]);
    wait(&s, "pod deletion", |a| {
        a.deleted == vec!["lonely".to_string()]
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let a = engine(dir.path(), &api, "delete_pod");
    a.handle(vec![trigger("web-5d9f-zzz")]);
    wait(&s, "pod deletion", |a| {
        a.deleted.contains(&"web-5d9f-zzz".to_string())
    })
    .await;
}

/// A projected service-account token rotates under the collector: the next
/// call is refused with 401, the client re-reads the token file and the
/// retried call goes through — nothing fails.
#[tokio::test]
async fn a_rotated_token_is_read_again() {
    let (api, s) = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    let a = engine(dir.path(), &api, "rollout");
    let web = a.config().autoscale[0].clone();
    a.evaluate_scaler(&web, &Cpu(80.0), 1_000).await.unwrap();
    assert_eq!(s.lock().scaled_to, vec![4]);
    assert_eq!(s.lock().refused, 0);
    // the kubelet writes a new token; the API server stops taking the old one
    std::fs::write(dir.path().join("token"), "sa-token-2\n").unwrap();
    s.lock().token = "sa-token-2".into();
    a.handle(vec![trigger("web-5d9f-rotated")]);
    wait(&s, "rollout restart with the new token", |a| {
        !a.restarted_at.is_empty()
    })
    .await;
    assert_eq!(s.lock().refused, 1, "one refusal, then the fresh token");
    let e = a.audit_entries(1, 0);
    assert_eq!(e[0].result, AuditResult::Delivered, "{}", e[0].detail);
}

/// Names from alert labels are checked before anything is sent: a pod or
/// namespace that is not a Kubernetes name never reaches a URL.
#[tokio::test]
async fn names_from_alert_labels_are_validated_before_any_request() {
    let (api, s) = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    let a = engine(dir.path(), &api, "delete_pod");
    for (i, pod) in [
        "../../apis/apps/v1/namespaces/kube-system/deployments/x",
        "web?x=1",
        "Web%2F1",
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = trigger(pod);
        t.dedup_key = format!("bad-{i}");
        a.handle(vec![t]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while a
        .audit_entries(100, 0)
        .iter()
        .filter(|e| e.result == AuditResult::Failed)
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "{:?}", a.audit_entries(100, 0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for e in a
        .audit_entries(100, 0)
        .iter()
        .filter(|e| e.result == AuditResult::Failed)
    {
        assert!(
            e.detail.contains("not a valid Kubernetes name"),
            "{}",
            e.detail
        );
    }
    let api = s.lock();
    assert!(api.requests.is_empty(), "requests sent: {:?}", api.requests);
    assert!(api.deleted.is_empty());
}
