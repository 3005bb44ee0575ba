//! The collector binary with `--rules`, `--alertmanager` and
//! `--external-label`: rules load at start (a broken file stops the start
//! with the file and line), alerts reach the real Alertmanager, `/api/v1/rules`
//! and `/api/v1/alerts` show them, and reloads (`POST /-/reload`, SIGHUP)
//! replace the rules or, when the new files are broken, keep the old ones.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use vigil_e2e::{Proc, bin, free_port, get, http, wait_for};

const GOOD: &str = r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - record: e2e:one
        expr: vector(1)
      - alert: AlwaysOn
        expr: e2e:one > 0
        labels:
          severity: info
        annotations:
          summary: 'value {{ $value }} in {{ $externalLabels.cluster }}'
"#;

const SECOND: &str = r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - record: e2e:two
        expr: vector(2)
      - alert: AlwaysOn
        expr: e2e:two > 5
        labels:
          severity: info
"#;

// `expr` is not valid PromQL on line 6
const BROKEN: &str = r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - record: e2e:bad
        expr: sum(
"#;

fn have(p: &str) -> bool {
    Path::new(p).exists()
}

fn collector_args(dir: &Path, hp: u16, gp: u16, rules: &Path, am: Option<u16>) -> Vec<String> {
    let mut a = vec![
        "--http-listen".into(),
        format!("127.0.0.1:{hp}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{gp}"),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--rules".into(),
        rules.display().to_string(),
        "--external-label".into(),
        "cluster=e2e".into(),
        "--external-url".into(),
        "http://vigil.test:9490".into(),
        "--self-scrape-interval".into(),
        "1s".into(),
    ];
    if let Some(p) = am {
        a.push("--alertmanager".into());
        a.push(format!("http://127.0.0.1:{p}"));
    }
    a
}

fn rule_names(addr: &str) -> Result<Vec<String>, String> {
    let (code, body) = get(addr, "/api/v1/rules")?;
    if code != 200 {
        return Err(format!("{code} {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for g in v["data"]["groups"].as_array().cloned().unwrap_or_default() {
        for r in g["rules"].as_array().cloned().unwrap_or_default() {
            names.push(r["name"].as_str().unwrap_or("").to_string());
        }
    }
    Ok(names)
}

#[test]
fn broken_rule_file_stops_the_start_with_file_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rules = tmp.path().join("broken.yml");
    std::fs::write(&rules, BROKEN).expect("write");
    let (hp, gp) = (free_port(), free_port());
    let mut p = Proc::start(
        "collector",
        &bin("vigil-collector"),
        &collector_args(tmp.path(), hp, gp, &rules, None),
        &tmp.path().join("logs"),
    );
    let status = wait_for(Duration::from_secs(30), "the collector to exit", || {
        p.try_wait().ok_or_else(|| "still running".to_string())
    });
    assert!(!status.success(), "a broken rule file must fail the start");
    let err = p.stderr_text();
    assert!(
        err.contains("broken.yml:6"),
        "error names the file and line: {err}"
    );
}

#[test]
fn alerts_reach_alertmanager_and_reloads_keep_or_replace_rules() {
    let am_bin = "/usr/bin/prometheus-alertmanager";
    if !have(am_bin) {
        eprintln!("prometheus-alertmanager not installed: skipping");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let am_port = free_port();
    let am_cfg = tmp.path().join("am.yml");
    std::fs::write(
        &am_cfg,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .expect("am config");
    let _am = Proc::start(
        "alertmanager",
        Path::new(am_bin),
        &[
            format!("--config.file={}", am_cfg.display()),
            format!("--storage.path={}", tmp.path().join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &tmp.path().join("logs"),
    );
    let am_addr = format!("127.0.0.1:{am_port}");
    wait_for(
        Duration::from_secs(20),
        "alertmanager ready",
        || match get(&am_addr, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    let rules = tmp.path().join("rules.yml");
    std::fs::write(&rules, GOOD).expect("write rules");
    let (hp, gp) = (free_port(), free_port());
    let c = Proc::start(
        "collector",
        &bin("vigil-collector"),
        &collector_args(tmp.path(), hp, gp, &rules, Some(am_port)),
        &tmp.path().join("logs"),
    );
    let addr = format!("127.0.0.1:{hp}");
    wait_for(Duration::from_secs(30), "collector ready", || {
        match get(&addr, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?} {}", c.stderr_text())),
        }
    });

    // the alert fires (no `for`), with the recording rule's output as value
    wait_for(Duration::from_secs(20), "AlwaysOn firing", || {
        let (code, body) = get(&addr, "/api/v1/alerts")?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let firing = v["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["labels"]["alertname"] == "AlwaysOn" && x["state"] == "firing")
        });
        if code == 200 && firing {
            Ok(())
        } else {
            Err(body)
        }
    });
    // Alertmanager has it: external label added, annotation expanded
    let am_alert = wait_for(Duration::from_secs(20), "the alert in Alertmanager", || {
        let (_, body) = get(&am_addr, "/api/v2/alerts")?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        v.as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["labels"]["alertname"] == "AlwaysOn")
                    .cloned()
            })
            .ok_or(body)
    });
    assert_eq!(am_alert["labels"]["cluster"], "e2e", "{am_alert}");
    assert_eq!(am_alert["labels"]["severity"], "info", "{am_alert}");
    assert_eq!(
        am_alert["annotations"]["summary"], "value 1 in e2e",
        "{am_alert}"
    );
    assert!(
        am_alert["generatorURL"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://vigil.test:9490/graph?g0.expr=")),
        "{am_alert}"
    );
    // the recording rule's series is queryable
    let (_, body) = get(&addr, "/api/v1/query?query=e2e:one").expect("query");
    assert!(body.contains(r#""__name__":"e2e:one""#), "{body}");

    // the collector's own metrics are series too (for the pipeline alerts)
    wait_for(Duration::from_secs(20), "self-scraped series", || {
        let (_, b) = get(
            &addr,
            "/api/v1/query?query=vigil_collector_build_info%7Bjob%3D%22vigil-collector%22%7D",
        )?;
        if b.contains(&format!(r#""instance":"127.0.0.1:{hp}""#)) {
            Ok(())
        } else {
            Err(b)
        }
    });

    // /metrics shows each family once (the self-scraped copies stay in the store)
    let (_, m) = get(&addr, "/metrics").expect("metrics");
    let mut types: Vec<&str> = m.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let n = types.len();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), n, "a family is exposed twice");

    // a broken file: reload refuses with the reason, old rules keep running
    std::fs::write(&rules, BROKEN).expect("write broken");
    let (code, body) = http("POST", &addr, "/-/reload", None, b"").expect("reload");
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("rules.yml:6"), "{body}");
    assert_eq!(
        rule_names(&addr).expect("rules"),
        vec!["e2e:one".to_string(), "AlwaysOn".to_string()]
    );
    let (_, metrics) = get(&addr, "/metrics").expect("metrics");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("vigil_collector_rules_config_last_reload_successful ")
            && l.ends_with(" 0")),
        "reload failure is visible in the metrics"
    );

    // a good file and SIGHUP: replaced
    std::fs::write(&rules, SECOND).expect("write second");
    let st = std::process::Command::new("kill")
        .args(["-HUP", &c.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(st.success());
    wait_for(
        Duration::from_secs(20),
        "rules replaced after SIGHUP",
        || {
            let names = rule_names(&addr)?;
            if names == ["e2e:two", "AlwaysOn"] {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    );
    assert!(
        c.stderr_text().contains("SIGHUP: reloading rules")
            || std::fs::read_to_string(&c.stdout)
                .unwrap_or_default()
                .contains("SIGHUP: reloading rules"),
        "the reload came from SIGHUP"
    );
    // the alert (same rule, state carried over) resolves, and Alertmanager is
    // told (resolved alerts are sent with endsAt in the past)
    wait_for(
        Duration::from_secs(20),
        "the alert resolved in Alertmanager",
        || {
            let (_, body) = get(&am_addr, "/api/v2/alerts?active=true")?;
            if body.contains("AlwaysOn") {
                Err(body)
            } else {
                Ok(())
            }
        },
    );
}
