//! Rules and alerting end to end:
//! - `vigil-collector test rules` gives promtool's verdicts (and output) on
//!   the shipped `alerts/tests/*.yml` and on edge cases written to pass or to
//!   fail; `check rules` agrees with `promtool check rules`;
//! - the real Alertmanager (Debian's `prometheus-alertmanager`) receives a
//!   firing alert with its annotations expanded, then its resolution, and
//!   notifies a webhook of both; after the rule manager restarts on the same
//!   data dir, a firing alert keeps its `activeAt` and does not go back to
//!   pending.
//!
//! Tests needing promtool or Alertmanager skip (with a message) where the
//! tool is missing.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use vigil_collector::notify::{Notifier, NotifierOptions};
use vigil_collector::rules::{ManagerOptions, RuleManager};
use vigil_collector::store::{STALE_NAN, Store, StoreOptions};
use vigil_common::Labels;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(program: &Path, args: &[&str], dir: &Path) -> Out {
    let o = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn files(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| pred(n))
        .collect();
    v.sort();
    v
}

/// Files whose failure messages are written identically by both tools
/// (the others differ only in how a parse error is worded).
const SAME_STDERR: &[&str] = &[
    "fail_annotation.yml",
    "fail_still_pending.yml",
    "fail_extra_label.yml",
    "fail_promql_value.yml",
    "fail_nan.yml",
    "fail_eval_error.yml",
    "fail_limit.yml",
    "fail_missing_alertname.yml",
    "fail_repeated_group_order.yml",
];

#[test]
fn test_rules_verdicts_match_promtool() {
    let vigil = vigil_e2e::bin("vigil-collector");
    let promtool = have("promtool");
    if !promtool {
        eprintln!("promtool not installed: checking our verdicts only");
    }
    let pack = root().join("alerts/tests");
    let edge = root().join("tests/testdata/rules");
    let mut cases: Vec<(PathBuf, String, i32)> = Vec::new();
    for f in files(&pack, |n| n.ends_with(".yml")) {
        cases.push((pack.clone(), f, 0));
    }
    assert!(cases.len() >= 3, "the rule pack has unit tests");
    for f in files(&edge, |n| n.starts_with("pass_") || n.starts_with("fail_")) {
        let want = if f.starts_with("pass_") { 0 } else { 1 };
        cases.push((edge.clone(), f, want));
    }
    for (dir, f, want) in &cases {
        let ours = run(&vigil, &["test", "rules", f], dir);
        assert_eq!(
            ours.code, *want,
            "vigil-collector test rules {f}:\n{}{}",
            ours.stdout, ours.stderr
        );
        if promtool {
            let theirs = run(Path::new("promtool"), &["test", "rules", f], dir);
            assert_eq!(
                theirs.code, *want,
                "promtool test rules {f}:\n{}{}",
                theirs.stdout, theirs.stderr
            );
            assert_eq!(ours.stdout, theirs.stdout, "stdout of {f}");
            if SAME_STDERR.contains(&f.as_str()) {
                assert_eq!(ours.stderr, theirs.stderr, "stderr of {f}");
            }
        }
    }
    // several files at once: one failure fails the run, every file is reported
    let ours = run(
        &vigil,
        &[
            "test",
            "rules",
            "pass_notation_and_order.yml",
            "fail_nan.yml",
        ],
        &edge,
    );
    assert_eq!(ours.code, 1);
    assert_eq!(ours.stdout.matches("Unit Testing:").count(), 2);
    assert!(ours.stdout.contains("  SUCCESS"));
}

#[test]
fn check_rules_matches_promtool() {
    let vigil = vigil_e2e::bin("vigil-collector");
    let alerts = root().join("alerts");
    let pack = files(&alerts, |n| n.ends_with(".yml"));
    assert!(!pack.is_empty());
    let args: Vec<&str> = ["check", "rules"]
        .into_iter()
        .chain(pack.iter().map(String::as_str))
        .collect();
    let ours = run(&vigil, &args, &alerts);
    assert_eq!(ours.code, 0, "{}{}", ours.stdout, ours.stderr);
    let edge = root().join("tests/testdata/rules");
    let bad = run(&vigil, &["check", "rules", "broken.rules.yml"], &edge);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("broken.rules.yml:5:15: group \"broken\", rule 1, \"Broken\": could not parse expression"),
        "{}",
        bad.stderr
    );
    if !have("promtool") {
        eprintln!("promtool not installed: skipping the comparison");
        return;
    }
    let promtool_args: Vec<&str> = ["check", "rules"]
        .into_iter()
        .chain(pack.iter().map(String::as_str))
        .collect();
    let theirs = run(Path::new("promtool"), &promtool_args, &alerts);
    assert_eq!(theirs.code, 0, "{}{}", theirs.stdout, theirs.stderr);
    assert_eq!(ours.stdout, theirs.stdout);
    for f in [
        "broken.rules.yml",
        "edge.rules.yml",
        "dup.rules.yml",
        "limit.rules.yml",
    ] {
        let a = run(&vigil, &["check", "rules", f], &edge);
        let b = run(Path::new("promtool"), &["check", "rules", f], &edge);
        assert_eq!(
            a.code, b.code,
            "{f}: ours {}{} promtool {}{}",
            a.stdout, a.stderr, b.stdout, b.stderr
        );
    }
}

/// A webhook Alertmanager notifies: every notification's JSON.
async fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    g.lock().push(v);
                }
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, got)
}

async fn poll<T>(timeout: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const RULES: &str = r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: QueueTooLong
        expr: queue_length > 10
        for: 2s
        labels:
          severity: warning
        annotations:
          summary: 'Queue {{ $labels.queue }} has {{ $value }} items'
          description: 'In {{ $externalLabels.cluster }}: {{ $value | humanize }}'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_firing_and_resolved_and_restart_keeps_active_at() {
    if !have("prometheus-alertmanager") {
        eprintln!("prometheus-alertmanager not installed: skipping");
        return;
    }
    vigil_collector::tls::ensure_crypto_provider();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (hook_url, hook) = webhook().await;
    let am_port = vigil_e2e::free_port();
    let am_cfg = tmp.path().join("am.yml");
    std::fs::write(
        &am_cfg,
        format!(
            "route:\n  receiver: hook\n  group_by: ['alertname']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook_url}\n        send_resolved: true\n"
        ),
    )
    .expect("write am config");
    let am_args = vec![
        format!("--config.file={}", am_cfg.display()),
        format!("--storage.path={}", tmp.path().join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{am_port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let _am = vigil_e2e::Proc::start(
        "alertmanager",
        Path::new("/usr/bin/prometheus-alertmanager"),
        &am_args,
        tmp.path(),
    );
    let am_url = format!("http://127.0.0.1:{am_port}");
    let client = reqwest::Client::new();
    poll(Duration::from_secs(20), "Alertmanager ready", async || {
        let r = client.get(format!("{am_url}/-/ready")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    let rules = tmp.path().join("rules.yml");
    std::fs::write(&rules, RULES).expect("write rules");
    let data_dir = tmp.path().join("rules-state");
    let store = Arc::new(Store::new(StoreOptions::default()));
    let external_labels = Labels::new([("cluster", "e2e")]);
    let start_manager = |store: Arc<Store>| {
        let notifier = Notifier::new(NotifierOptions {
            alertmanagers: vec![am_url.clone()],
            external_labels: external_labels.clone(),
            external_url: "http://vigil.test:9490".into(),
            ..Default::default()
        })
        .expect("notifier");
        let m = RuleManager::new(
            store,
            ManagerOptions {
                data_dir: Some(data_dir.clone()),
                external_labels: external_labels.clone(),
                external_url: "http://vigil.test:9490".into(),
                ..Default::default()
            },
            Some(notifier.clone()),
        );
        m.load(&[rules.display().to_string()]).expect("load rules");
        let sd = CancellationToken::new();
        let t1 = tokio::spawn(m.clone().run(sd.clone()));
        let t2 = tokio::spawn(notifier.run(sd.clone()));
        (m, sd, t1, t2)
    };

    // the metric, fed every 200 ms until told to stop
    let feeding = CancellationToken::new();
    let series = Labels::new([("__name__", "queue_length"), ("queue", "orders")]);
    let sref = store.get_or_create(&series).expect("series");
    {
        let (store, feeding) = (store.clone(), feeding.clone());
        tokio::spawn(async move {
            while !feeding.is_cancelled() {
                let now = now_ms();
                let _ = store.append(sref, now, 42.0);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = store.append(sref, now_ms(), STALE_NAN);
        });
    }

    let (m, sd, t1, t2) = start_manager(store.clone());

    // Alertmanager has it, with the annotations expanded and external labels added
    let am_alert = poll(
        Duration::from_secs(30),
        "the alert in Alertmanager",
        async || {
            let v: serde_json::Value = client
                .get(format!("{am_url}/api/v2/alerts"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v.as_array()?
                .iter()
                .find(|a| a["labels"]["alertname"] == "QueueTooLong")
                .cloned()
        },
    )
    .await;
    assert_eq!(am_alert["labels"]["queue"], "orders");
    assert_eq!(am_alert["labels"]["severity"], "warning");
    assert_eq!(am_alert["labels"]["cluster"], "e2e");
    assert_eq!(
        am_alert["annotations"]["summary"],
        "Queue orders has 42 items"
    );
    assert_eq!(am_alert["annotations"]["description"], "In e2e: 42");
    assert_eq!(am_alert["status"]["state"], "active");
    assert!(
        am_alert["generatorURL"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://vigil.test:9490/graph?g0.expr=queue_length"))
    );
    let starts_at = am_alert["startsAt"].as_str().expect("startsAt").to_string();

    // the webhook got the firing notification
    poll(Duration::from_secs(20), "a firing webhook", async || {
        hook.lock()
            .iter()
            .any(|n| n["status"] == "firing")
            .then_some(())
    })
    .await;

    // firing in the rule manager: note activeAt, then restart the manager
    let firing = |m: &RuleManager| -> Option<(String, i64)> {
        let groups = m.groups();
        let g = groups.first()?.group.lock();
        let a = g.rules[0].alerting()?.active_alerts().next()?.clone();
        Some((a.state.as_str().to_string(), a.active_at))
    };
    let (state, active_at) = firing(&m).expect("an active alert");
    assert_eq!(state, "firing");
    sd.cancel();
    let _ = t1.await;
    let _ = t2.await;
    drop(m);

    let (m2, sd2, t1, t2) = start_manager(store.clone());
    assert_eq!(
        firing(&m2),
        Some(("firing".to_string(), active_at)),
        "restored from the data dir before any evaluation"
    );
    // after evaluations of the new manager: still firing since the same activeAt
    let before = m2.groups()[0].group.lock().last_eval_ts;
    poll(
        Duration::from_secs(10),
        "an evaluation after restart",
        async || {
            let now = m2.groups()[0].group.lock().last_eval_ts;
            (now.is_some() && now != before).then_some(())
        },
    )
    .await;
    assert_eq!(firing(&m2), Some(("firing".to_string(), active_at)));
    // and the HTTP API shows it
    let mut app_state = vigil_collector::http::AppState::new(store.clone());
    app_state.rules = Some(m2.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, vigil_collector::http::router(app_state)).await;
    });
    let v: serde_json::Value = client
        .get(format!("{api}/api/v1/alerts"))
        .send()
        .await
        .expect("GET /api/v1/alerts")
        .json()
        .await
        .expect("json");
    assert_eq!(v["data"]["alerts"][0]["state"], "firing");
    assert_eq!(
        v["data"]["alerts"][0]["annotations"]["summary"],
        "Queue orders has 42 items"
    );

    // the metric goes away: the alert resolves, Alertmanager is told
    feeding.cancel();
    poll(Duration::from_secs(30), "a resolved webhook", async || {
        hook.lock()
            .iter()
            .any(|n| {
                n["status"] == "resolved" && n["alerts"][0]["labels"]["alertname"] == "QueueTooLong"
            })
            .then_some(())
    })
    .await;
    let resolved = hook
        .lock()
        .iter()
        .rev()
        .find(|n| n["status"] == "resolved")
        .cloned()
        .expect("resolved");
    assert_eq!(
        resolved["alerts"][0]["startsAt"]
            .as_str()
            .map(|s| s[..19].to_string()),
        Some(starts_at[..19].to_string()),
        "same alert, same start across the restart"
    );
    // and Alertmanager no longer lists it as active
    poll(
        Duration::from_secs(10),
        "the alert gone from Alertmanager",
        async || {
            let v: serde_json::Value = client
                .get(format!("{am_url}/api/v2/alerts?active=true"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (!v.as_array()?
                .iter()
                .any(|a| a["labels"]["alertname"] == "QueueTooLong"))
            .then_some(())
        },
    )
    .await;
    let firing_after: usize = hook
        .lock()
        .iter()
        .filter(|n| n["status"] == "firing")
        .count();
    assert!(firing_after >= 1);
    sd2.cancel();
    let _ = t1.await;
    let _ = t2.await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
