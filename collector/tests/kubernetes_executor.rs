//! The Kubernetes executor against a fake API server on loopback whose
//! answers are built from, and whose received requests are checked against,
//! the Kubernetes API's own types (k8s-openapi): scaling, restarts, token
//! rotation, name validation and rollbacks (analysed by the real PromQL engine
//! over a real store); and the RBAC manifest in `deploy/` checked to grant
//! exactly the requests these tests saw.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use parking_lot::Mutex;
use vigil_collector::actions::audit::AuditResult;
use vigil_collector::actions::config::ActionsConfig;
use vigil_collector::actions::engine::Actions;
use vigil_collector::actions::kubernetes::{KubeClient, Name};
use vigil_collector::actions::source::{MetricSource, PromqlSource, QueryResult};
use vigil_collector::actions::triggers::{Trigger, TriggerSource, TriggerStatus};
use vigil_collector::store::{Store, StoreOptions};
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
    /// (method, path and query) of every request that got past
    /// authentication, for the RBAC check.
    raw: Vec<(String, String)>,
    /// The Deployment `web` as the API server holds it.
    web: Option<Deployment>,
    /// The images of the app container `web` was patched to by rollbacks.
    rolled_back_to: Vec<String>,
    /// `labelSelector`s of ReplicaSet lists.
    selectors: Vec<String>,
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

/// A pod template running `images` as containers `app` and `proxy`.
fn template(app: &str, hash: Option<&str>) -> PodTemplateSpec {
    let mut labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    if let Some(h) = hash {
        labels.insert("pod-template-hash".into(), h.into());
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: [("app", app), ("proxy", "envoyproxy/envoy:v1.30")]
                .into_iter()
                .map(|(n, i)| Container {
                    name: n.into(),
                    image: Some(i.into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    }
}

/// Deployment `web` of namespace `shop` running `app` at revision 3.
fn web_deployment(app: &str, paused: bool) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some("web-uid".into()),
            resource_version: Some("41".into()),
            annotations: Some(BTreeMap::from([
                ("deployment.kubernetes.io/revision".into(), "3".into()),
                ("team".into(), "shop".into()),
            ])),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            },
            template: template(app, None),
            paused: paused.then_some(true),
            replicas: Some(2),
            ..Default::default()
        }),
        status: None,
    }
}

/// `web`'s revisions 1-3 (web:0, web:1, web:2) and another Deployment's
/// newer ReplicaSet on web:1.
fn replica_sets() -> Vec<ReplicaSet> {
    let rs = |name: &str, rev: &str, app: &str, owner_uid: &str| ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            annotations: Some(BTreeMap::from([
                ("deployment.kubernetes.io/revision".into(), rev.into()),
                ("team".into(), format!("shop-rev-{rev}")),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: owner_uid.into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            selector: LabelSelector::default(),
            template: Some(template(app, Some(name.rsplit('-').next().unwrap_or("")))),
            ..Default::default()
        }),
        status: None,
    };
    vec![
        rs("web-6b7c8d", "1", "shop/web:0", "web-uid"),
        rs("web-7d4b9c", "2", "shop/web:1", "web-uid"),
        rs("web-5f8d7f", "3", "shop/web:2", "web-uid"),
        // a Deployment of the same name before it was deleted and recreated
        rs("web-9x9x9x", "9", "shop/web:1", "old-web-uid"),
    ]
}

async fn get_deployment(
    State(s): State<Shared>,
    UrlPath((_ns, name)): UrlPath<(String, String)>,
) -> Response {
    let mut api = s.lock();
    api.requests
        .push(("GET".into(), format!("deployment/{name}"), String::new()));
    match &api.web {
        Some(d) if name == "web" => json(d),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn list_replicasets(
    State(s): State<Shared>,
    UrlPath(ns): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let mut api = s.lock();
    api.requests
        .push(("GET".into(), format!("replicasets/{ns}"), String::new()));
    let q = q.unwrap_or_default();
    let selector = form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    api.selectors.push(selector);
    json(&k8s_openapi::List::<ReplicaSet> {
        items: replica_sets(),
        metadata: Default::default(),
    })
}

/// A rollback: a JSON patch that tests the resourceVersion and replaces the
/// template (a valid `PodTemplateSpec`) and the annotations.
fn json_patch(api: &mut Api, body: &[u8]) -> Response {
    let ops: Vec<serde_json::Value> = match serde_json::from_slice(body) {
        Ok(o) => o,
        Err(e) => {
            api.bad_bodies.push(format!("json patch: {e}"));
            return StatusCode::UNPROCESSABLE_ENTITY.into_response();
        }
    };
    let Some(mut d) = api.web.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    for op in &ops {
        match (op["op"].as_str(), op["path"].as_str()) {
            (Some("test"), Some("/metadata/resourceVersion")) => {
                if op["value"].as_str() != d.metadata.resource_version.as_deref() {
                    return StatusCode::CONFLICT.into_response();
                }
            }
            (Some("replace"), Some("/spec/template")) => {
                match serde_json::from_value::<PodTemplateSpec>(op["value"].clone()) {
                    Ok(t) => d.spec.as_mut().unwrap().template = t,
                    Err(e) => {
                        api.bad_bodies.push(format!("template: {e}"));
                        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
                    }
                }
            }
            (Some("replace"), Some("/metadata/annotations")) => {
                match serde_json::from_value::<BTreeMap<String, String>>(op["value"].clone()) {
                    Ok(a) => d.metadata.annotations = Some(a),
                    Err(e) => {
                        api.bad_bodies.push(format!("annotations: {e}"));
                        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
                    }
                }
            }
            _ => {
                api.bad_bodies.push(format!("unexpected op {op}"));
                return StatusCode::UNPROCESSABLE_ENTITY.into_response();
            }
        }
    }
    let t = &d.spec.as_ref().unwrap().template;
    if t.metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .is_some_and(|l| l.contains_key("pod-template-hash"))
    {
        api.bad_bodies.push("pod-template-hash kept".into());
    }
    let app = t.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default();
    api.rolled_back_to.push(app);
    d.metadata.resource_version = Some("42".into());
    api.web = Some(d.clone());
    json(&d)
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
    if ct(&h) == "application/json-patch+json" {
        return json_patch(&mut api, &body);
    }
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
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        api.raw.push((req.method().to_string(), path));
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
            get(get_deployment).patch(deployment),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/replicasets",
            get(list_replicasets),
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

const T0: i64 = 1_700_000_000_000;

/// Release tracking and rollout analysis for Kubernetes, as the README
/// documents them: Deployments' versions from the agents' `container_info`
/// (pods named `<deployment>-<hash>-<suffix>`), per container.
const K8S_ROLLOUTS: &str = r#"count by (namespace, deployment, container, image) (label_replace(container_info{namespace="shop",container!=""}, "deployment", "$1", "pod", "(.+)-[a-z0-9]{1,10}-[a-z0-9]{5}"))"#;

fn rollback_engine(dir: &Path, api: &str) -> Arc<Actions> {
    std::fs::write(dir.join("token"), "sa-token\n").unwrap();
    let y = format!(
        "executors:\n  k8s: {{type: kubernetes, api_server: '{api}', token_file: token}}\n\
         rollouts:\n  query: '{K8S_ROLLOUTS}'\n\
         rollback:\n  - name: web\n    match: {{namespace: shop, deployment: web, container: app}}\n    executor: k8s\n    window: 60s\n    cooldown: 10m\n    checks:\n      - {{name: restarts, metric: restarts, max: 0}}\n"
    );
    let p = dir.join("actions.yml");
    std::fs::write(&p, y).unwrap();
    Actions::new(ActionsConfig::load(&p).unwrap(), &dir.join("state")).unwrap()
}

/// One container as the agent reports it: `container_info` and its start
/// time, at `t` with start time `start` (a restart changes it).
fn container(store: &Store, pod: &str, c: &str, image: &str, t: i64, start: f64) {
    let id = format!("{pod}-{c}-id");
    let base = [
        ("namespace", "shop"),
        ("pod", pod),
        ("container", c),
        ("image", image),
        ("name", id.as_str()),
    ];
    let mut info: Vec<(&str, &str)> = base.to_vec();
    info.extend([
        ("__name__", "container_info"),
        ("container_id", id.as_str()),
    ]);
    let r = store.get_or_create(&Labels::new(info)).unwrap();
    store.append(r, t, 1.0).unwrap();
    let mut st: Vec<(&str, &str)> = base.to_vec();
    st.push(("__name__", "container_start_time_seconds"));
    let r = store.get_or_create(&Labels::new(st)).unwrap();
    store.append(r, t, start).unwrap();
}

/// A bad release of a Deployment is seen in the agents' series, judged by a
/// built-in check through the real PromQL engine, and rolled back the way
/// `kubectl rollout undo` does: the newest of its own ReplicaSets on the
/// previous image gives back its template (a valid `PodTemplateSpec`,
/// without `pod-template-hash`), guarded by the resourceVersion. A
/// Deployment whose name starts the same (`web-api`, crash-looping on the
/// same image) stays a workload of its own, the sidecar is tracked apart
/// from the app, and images compare as references (the runtime reports
/// `docker.io/shop/web:2` for the spec's `shop/web:2`). A second bad
/// release inside the rule's cooldown is audited and left alone.
#[tokio::test]
async fn a_bad_release_of_a_deployment_is_rolled_back_to_its_previous_revision() {
    let (api, s) = fake_api().await;
    s.lock().web = Some(web_deployment("shop/web:2", false));
    let dir = tempfile::tempdir().unwrap();
    let a = rollback_engine(dir.path(), &api);
    let store = Arc::new(Store::new(StoreOptions::default()));
    let src = PromqlSource::new(store.clone());
    // revision 2 (web:1) runs stable; web-api crash-loops throughout
    for i in 0..=6 {
        let t = T0 + i * 5_000;
        for pod in ["web-7d4b9c-aaaaa", "web-7d4b9c-bbbbb"] {
            container(&store, pod, "app", "docker.io/shop/web:1", t, 100.0);
            container(
                &store,
                pod,
                "proxy",
                "docker.io/envoyproxy/envoy:v1.30",
                t,
                100.0,
            );
        }
        container(
            &store,
            "web-api-5c6d7-ccccc",
            "app",
            "docker.io/shop/web:2",
            t,
            100.0 + i as f64,
        );
    }
    a.observe_rollouts(&src, T0 + 30_000);
    let v = a
        .workload_versions(&Labels::new([
            ("namespace", "shop"),
            ("deployment", "web"),
            ("container", "app"),
        ]))
        .expect("web's app container tracked");
    assert_eq!(v.current.as_deref(), Some("docker.io/shop/web:1"));
    // revision 3 (web:2) replaces one pod and restarts every 5 s
    for i in 7..=12 {
        let t = T0 + i * 5_000;
        container(
            &store,
            "web-7d4b9c-aaaaa",
            "app",
            "docker.io/shop/web:1",
            t,
            100.0,
        );
        container(
            &store,
            "web-7d4b9c-aaaaa",
            "proxy",
            "docker.io/envoyproxy/envoy:v1.30",
            t,
            100.0,
        );
        container(
            &store,
            "web-5f8d7f-ddddd",
            "app",
            "docker.io/shop/web:2",
            t,
            200.0 + i as f64,
        );
        container(
            &store,
            "web-5f8d7f-ddddd",
            "proxy",
            "docker.io/envoyproxy/envoy:v1.30",
            t,
            200.0,
        );
    }
    a.observe_rollouts(&src, T0 + 60_000);
    wait(&s, "the rollback's patch", |a| !a.rolled_back_to.is_empty()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let e = a.audit_entries(20, 0);
        if e.iter().any(|e| e.result == AuditResult::Delivered) {
            break e;
        }
        assert!(Instant::now() < deadline, "{e:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    {
        let api = s.lock();
        assert!(api.bad_bodies.is_empty(), "{:?}", api.bad_bodies);
        assert_eq!(api.rolled_back_to, vec!["shop/web:1".to_string()]);
        assert_eq!(api.selectors, vec!["app=web".to_string()]);
        let web = api.web.as_ref().unwrap();
        let ann = web.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            ann["team"], "shop-rev-2",
            "annotations of the revision restored"
        );
        assert_eq!(
            ann["deployment.kubernetes.io/revision"], "3",
            "bookkeeping kept"
        );
    }
    let decided = entries
        .iter()
        .find(|e| e.result == AuditResult::Decided)
        .expect("a decision");
    assert!(
        decided.detail.contains("restarts") && decided.detail.contains("docker.io/shop/web:2"),
        "the audit shows the measured values: {}",
        decided.detail
    );
    let delivered = entries
        .iter()
        .find(|e| e.result == AuditResult::Delivered)
        .unwrap();
    assert!(
        delivered.detail.contains("rolled back to revision 2"),
        "{}",
        delivered.detail
    );

    // Kubernetes replaces the bad pod; release tracking sees the revert
    for i in 13..=14 {
        let t = T0 + i * 5_000;
        for pod in ["web-7d4b9c-aaaaa", "web-7d4b9c-eeeee"] {
            container(&store, pod, "app", "docker.io/shop/web:1", t, 100.0);
        }
    }
    a.observe_rollouts(&src, T0 + 70_000);
    // another bad release inside the rule's 10 m cooldown: judged, failed,
    // and left alone — never a second rollback within the cooldown
    for i in 15..=20 {
        let t = T0 + i * 5_000;
        container(
            &store,
            "web-7d4b9c-aaaaa",
            "app",
            "docker.io/shop/web:1",
            t,
            100.0,
        );
        container(
            &store,
            "web-8c9d0e-fffff",
            "app",
            "docker.io/shop/web:3",
            t,
            300.0 + i as f64,
        );
    }
    a.observe_rollouts(&src, T0 + 100_000);
    let e = a.audit_entries(20, 0);
    let skipped = e
        .iter()
        .find(|e| e.result == AuditResult::SkippedCooldown)
        .unwrap_or_else(|| panic!("a cooldown skip: {e:?}"));
    assert!(
        skipped.detail.contains("docker.io/shop/web:3") && skipped.detail.contains("cooldown"),
        "{}",
        skipped.detail
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.lock().rolled_back_to.len(), 1, "one rollback only");
}

/// A Deployment a person already rolled back is left alone (nothing is
/// patched); a paused one, one on neither image, and one whose history no
/// longer holds the previous image are refused with the reason.
#[tokio::test]
async fn a_rollback_is_refused_or_skipped_with_its_reason() {
    let (api, s) = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "sa-token\n").unwrap();
    let c = KubeClient::new(
        Some(&api),
        Some(&dir.path().join("token")),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let (ns, web) = (
        Name::label("namespace", "shop").unwrap(),
        Name::subdomain("deployment", "web").unwrap(),
    );
    s.lock().web = Some(web_deployment("docker.io/shop/web:1", false));
    let done = c
        .rollback(&ns, &web, Some("app"), "shop/web:2", "shop/web:1")
        .await
        .unwrap();
    assert!(done.contains("already runs"), "{done}");
    s.lock().web = Some(web_deployment("shop/web:2", true));
    let e = c
        .rollback(&ns, &web, Some("app"), "shop/web:2", "shop/web:1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("paused"), "{e}");
    s.lock().web = Some(web_deployment("shop/web:7", false));
    let e = c
        .rollback(&ns, &web, Some("app"), "shop/web:2", "shop/web:1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("runs neither"), "{e}");
    s.lock().web = Some(web_deployment("shop/web:2", false));
    let e = c
        .rollback(&ns, &web, Some("app"), "shop/web:2", "shop/web:0.9")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no ReplicaSet left"), "{e}");
    // the sidecar's image is never taken for the app's
    let e = c
        .rollback(&ns, &web, Some("proxy"), "shop/web:2", "shop/web:1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("runs neither"), "{e}");
    let api = s.lock();
    assert!(api.rolled_back_to.is_empty(), "nothing patched");
    assert!(!api.raw.iter().any(|(m, _)| m == "PATCH"), "{:?}", api.raw);
}

/// What RBAC must grant for one request: (API group, resource, verb).
fn rbac_need(method: &str, path_and_query: &str) -> (String, String, String) {
    let path = path_and_query.split('?').next().unwrap();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not an API path: {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        _ => panic!("not namespaced: {path}"),
    };
    let (resource, named) = match rest {
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub] => (format!("{r}/{sub}"), true),
        _ => panic!("unexpected path {path}"),
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        _ => panic!("unexpected method {method}"),
    };
    (group.to_string(), resource, verb.to_string())
}

/// `deploy/kubernetes/actions-rbac.yaml` read as the API server reads it
/// (k8s-openapi's `ClusterRole` and `ClusterRoleBinding`): every request the
/// executor makes in a scale, both restart modes and a rollback is granted,
/// every grant is used by one of them (least privilege), and the binding
/// names the role and the collector's service account of `collector.yaml`.
#[tokio::test]
async fn the_rbac_manifest_grants_exactly_what_the_executor_requests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("deploy/kubernetes/actions-rbac.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let role: ClusterRole = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "ClusterRole")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "ClusterRoleBinding")
            .unwrap()
            .clone(),
    )
    .unwrap();
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    let collector = std::fs::read_to_string(root.join("deploy/kubernetes/collector.yaml")).unwrap();
    let objs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&collector).unwrap();
    assert!(
        objs.iter().any(|o| o["kind"] == "ServiceAccount"
            && o["metadata"]["name"] == subject.name.as_str()
            && o["metadata"]["namespace"].as_str() == subject.namespace.as_deref()),
        "the binding's subject {subject:?} is the collector's service account"
    );
    let mut granted = Vec::new();
    for rule in role.rules.as_ref().unwrap() {
        for g in rule.api_groups.as_ref().unwrap() {
            for r in rule.resources.as_ref().unwrap() {
                for v in &rule.verbs {
                    granted.push((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }

    // every kind of request the executor makes
    let (api, s) = fake_api().await;
    s.lock().web = Some(web_deployment("shop/web:2", false));
    let dir = tempfile::tempdir().unwrap();
    let a = engine(dir.path(), &api, "rollout");
    let web = a.config().autoscale[0].clone();
    a.evaluate_scaler(&web, &Cpu(80.0), 1_000).await.unwrap();
    a.handle(vec![trigger("web-5d9f-abcde")]);
    wait(&s, "rollout restart", |a| !a.restarted_at.is_empty()).await;
    let dir2 = tempfile::tempdir().unwrap();
    let a2 = engine(dir2.path(), &api, "delete_pod");
    a2.handle(vec![trigger("web-5d9f-zzz")]);
    wait(&s, "pod deletion", |a| !a.deleted.is_empty()).await;
    std::fs::write(dir.path().join("token2"), "sa-token\n").unwrap();
    let c = KubeClient::new(
        Some(&api),
        Some(&dir.path().join("token2")),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    c.rollback(
        &Name::label("namespace", "shop").unwrap(),
        &Name::subdomain("deployment", "web").unwrap(),
        Some("app"),
        "shop/web:2",
        "shop/web:1",
    )
    .await
    .unwrap();

    let raw = s.lock().raw.clone();
    let mut used = Vec::new();
    for (m, p) in &raw {
        let need = rbac_need(m, p);
        assert!(
            granted.contains(&need),
            "{m} {p} needs {need:?}, which deploy/kubernetes/actions-rbac.yaml does not grant"
        );
        used.push(need);
    }
    for g in &granted {
        assert!(
            used.contains(g),
            "deploy/kubernetes/actions-rbac.yaml grants {g:?}, which the executor never uses"
        );
    }
}
