//! Kubernetes pod discovery against an API server stand-in on 127.0.0.1 that
//! answers with pod lists in the API's shape (checked against `k8s-openapi`'s
//! types first): the field selector and token are sent, finished and pending
//! pods are skipped, annotations steer address, path, scheme and interval,
//! and pods that appear and disappear between refreshes do so in the targets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use parking_lot::Mutex;
use vigil_agent::targets::config::{JobDefaults, ScrapeConfig};
use vigil_agent::targets::discovery::kubernetes::Discovery;
use vigil_agent::targets::target::{Drop, populate};
use vigil_common::Labels;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernetes")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

#[derive(Clone, Default)]
struct Api {
    body: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

async fn pods(
    State(a): State<Api>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> ([(&'static str, &'static str); 1], String) {
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    a.seen.lock().push((q.unwrap_or_default(), auth));
    (
        [("content-type", "application/json")],
        a.body.lock().clone(),
    )
}

fn targets(groups: &[vigil_agent::targets::discovery::TargetGroup]) -> (Vec<Labels>, Vec<Labels>) {
    let job = ScrapeConfig {
        kubernetes_sd_configs: vec![Default::default()],
        ..vigil_agent::targets::config::builtin_jobs(true)
            .into_iter()
            .find(|j| j.job_name == "kubernetes-pods")
            .unwrap()
    };
    let mut job: ScrapeConfig = job;
    job.kubernetes_sd_configs[0].api_server = Some("http://127.0.0.1:1".into());
    let job = job
        .validate(&JobDefaults {
            interval: std::time::Duration::from_secs(10),
            timeout: std::time::Duration::from_secs(10),
            body_size_limit: 0,
            limits: Default::default(),
            refresh: std::time::Duration::from_secs(5),
            host_root: PathBuf::from("/"),
        })
        .unwrap();
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    for g in groups {
        for t in g.expand() {
            match populate(t, &job) {
                Ok(spec) => {
                    let mut v = spec.public_labels().into_pairs();
                    v.push(("__url__".into(), spec.url.clone()));
                    v.push(("__interval__".into(), format!("{:?}", spec.interval)));
                    active.push(Labels::new(v));
                }
                Err((Drop::Relabeled, d)) => dropped.push(d),
                Err((Drop::Invalid(m), _)) => panic!("invalid target: {m}"),
            }
        }
    }
    (active, dropped)
}

#[tokio::test]
async fn pods_appear_and_disappear() {
    // The fixtures are real API shapes.
    for f in ["pods-1.json", "pods-2.json"] {
        let list: k8s_openapi::List<k8s_openapi::api::core::v1::Pod> =
            serde_json::from_str(&fixture(f)).unwrap();
        assert!(!list.items.is_empty(), "{f}");
    }
    let api = Api::default();
    *api.body.lock() = fixture("pods-1.json");
    let app = axum::Router::new()
        .route("/api/v1/pods", axum::routing::get(pods))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut d = Discovery::new(&format!("http://{addr}"), token, None, "node-a").unwrap();

    let groups = d.refresh().await.unwrap();
    {
        let seen = api.seen.lock();
        assert_eq!(
            seen[0].0,
            "fieldSelector=spec.nodeName%3Dnode-a&resourceVersion=0"
        );
        assert_eq!(seen[0].1, "Bearer s3cret");
    }
    assert_eq!(groups.len(), 2, "the finished job pod is skipped");
    let (active, dropped) = targets(&groups);
    assert_eq!(active.len(), 1, "{active:?}");
    let web = &active[0];
    assert_eq!(
        web.get("__url__"),
        Some("http://10.244.1.17:9102/stats/prometheus")
    );
    assert_eq!(web.get("__interval__"), Some("5s"));
    assert_eq!(web.get("namespace"), Some("shop"));
    assert_eq!(web.get("pod"), Some("web-7d9c6b8f5-x2kq9"));
    assert_eq!(
        web.get("container"),
        Some("envoy"),
        "the container declaring the port"
    );
    assert_eq!(web.get("job"), Some("kubernetes-pods"));
    assert_eq!(web.get("instance"), Some("10.244.1.17:9102"));
    assert_eq!(dropped.len(), 1, "redis has no scrape annotation");
    assert_eq!(
        dropped[0].get("__meta_kubernetes_pod_controller_kind"),
        Some("StatefulSet")
    );
    assert_eq!(dropped[0].get("__meta_kubernetes_pod_ready"), Some("true"));

    // web goes away, api (https, declared port) appears, a pending pod has no IP yet
    *api.body.lock() = fixture("pods-2.json");
    let groups = d.refresh().await.unwrap();
    let (active, _) = targets(&groups);
    assert_eq!(active.len(), 1, "{active:?}");
    let a = &active[0];
    assert_eq!(
        a.get("__url__"),
        Some("https://10.244.1.40:9443/metrics"),
        "TCP port only"
    );
    assert_eq!(a.get("pod"), Some("api-5f7d8c9b6-q8w2e"));
    assert_eq!(a.get("container"), Some("api"));
    assert!(groups.iter().all(|g| !g.source.contains("web-")));

    // the API answering garbage is an error, not an empty node
    *api.body.lock() = "{not json".into();
    assert!(
        d.refresh()
            .await
            .unwrap_err()
            .contains("unreadable pod list")
    );
}
