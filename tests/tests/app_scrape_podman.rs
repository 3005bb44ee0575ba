//! Application scraping end to end, against real podman containers and a real
//! Prometheus in the same run: busybox `httpd` containers serve the exposition
//! corpus (`tests/fixtures/exposition/`) and carry `prometheus.io/*` labels.
//! The agent finds them through a private `podman system service` with no
//! scrape configuration; Prometheus scrapes the same endpoints from a static
//! config. Then, through both query APIs at one evaluation time:
//! - every series and value of the valid files is the same in both;
//! - the invalid files fail the scrape in both (`up` = 0);
//! - a container with no network address is scraped inside its namespace;
//! - a removed container's series go stale in vigil;
//! - the agent's `/api/v1/targets` shows the targets' health and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vigil_e2e::{Proc, bin, free_port, get, podman, start_collector, wait_for};

const NODE: &str = "e2e-node";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/exposition")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query: (labels, value) pairs, sorted; `Err` while the API is not answering.
/// (labels, value) of one series in a query result.
type Row = (BTreeMap<String, String>, String);

fn query(addr: &str, q: &str, t: f64) -> Result<Vec<Row>, String> {
    let (code, body) = get(addr, &format!("/api/v1/query?query={}&time={t:.3}", enc(q)))?;
    if code != 200 {
        return Err(format!("{code}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut out: Vec<Row> = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result: {body}"))?
        .iter()
        .map(|r| {
            let m = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (m, canonical(r["value"][1].as_str().unwrap()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// A value as a number, so `6.02214076e+23` and `602214076000000000000000`
/// compare equal (the two APIs format large and small floats differently;
/// the stored values are what is compared).
fn canonical(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(f) if f.is_nan() => "NaN".into(),
        Ok(f) => format!("{:?}", f),
        Err(_) => v.to_string(),
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn containers_are_discovered_and_scraped_as_prometheus_does() {
    if !podman::usable() {
        eprintln!("skipping: podman with {} not usable here", podman::IMAGE);
        return;
    }
    let Some(prometheus) = Path::new("/usr/bin/prometheus")
        .exists()
        .then(|| PathBuf::from("/usr/bin/prometheus"))
    else {
        eprintln!("skipping: no prometheus binary");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tag = podman::tag();
    let svc = podman::Service::start(dir.path(), &format!("vigil-e2e-scrape={tag}"));

    // The corpus, with recent timestamps, and httpd's MIME type for .om.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let ts_ms = (now_s() * 1000.0) as i64 - 20_000;
    let mut files: Vec<String> = Vec::new();
    for e in std::fs::read_dir(corpus_dir()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".txt") || name.ends_with(".om")) {
            continue;
        }
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("@TS_MS@", &ts_ms.to_string())
            .replace("@TS_S@", &format!("{}.{:03}", ts_ms / 1000, ts_ms % 1000));
        std::fs::write(www.join(&name), text).unwrap();
        files.push(name);
    }
    files.sort();
    std::fs::write(
        www.join("httpd.conf"),
        ".om:application/openmetrics-text; version=1.0.0; charset=utf-8\n.txt:text/plain; version=0.0.4; charset=utf-8\n",
    )
    .unwrap();
    let volume = format!("{}:/www:ro", www.display());
    let run = |name: &str, path: &str, extra: &[&str]| {
        let path_label = format!("prometheus.io/path=/{path}");
        let mut a = vec![
            "--name",
            name,
            "--label",
            "prometheus.io/scrape=true",
            "--label",
            "prometheus.io/port=8080",
            "--label",
            &path_label,
            "--label",
            "prometheus.io/interval=1s",
            "-v",
            &volume,
        ];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[
            podman::IMAGE,
            "busybox",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
            "-c",
            "/www/httpd.conf",
        ]);
        svc.run(&a)
    };
    let mut containers: Vec<(String, String, String)> = Vec::new(); // (name, file, ip)
    for f in &files {
        let name = format!("vs{tag}-{}", f.replace('.', "-"));
        let id = run(&name, f, &[]);
        let ip = svc.inspect(&id, "{{.NetworkSettings.IPAddress}}");
        assert!(!ip.is_empty(), "{name} has no address");
        containers.push((name, f.clone(), ip));
    }
    let lonely = format!("vs{tag}-lonely");
    run(&lonely, "valid-text-histogram.txt", &["--network", "none"]);
    // A container without the scrape label is not a target.
    svc.run(&[
        "--name",
        &format!("vs{tag}-quiet"),
        podman::IMAGE,
        "sleep",
        "600",
    ]);

    // vigil: collector and agent (no scrape configuration, just the socket).
    let (http_port, grpc_port, agent_port) = (free_port(), free_port(), free_port());
    let _collector = start_collector(dir.path(), http_port, grpc_port, &[]);
    let vigil = format!("127.0.0.1:{http_port}");
    let agent_http = format!("127.0.0.1:{agent_port}");
    let _agent = Proc::start(
        "agent",
        &bin("vigil-agent"),
        &[
            "--collector".to_string(),
            format!("http://127.0.0.1:{grpc_port}"),
            "--interval".into(),
            "1s".into(),
            "--batch-max-wait".into(),
            "100ms".into(),
            "--http-listen".into(),
            agent_http.clone(),
            "--state-dir".into(),
            dir.path().join("agent").display().to_string(),
            "--node-name".into(),
            NODE.into(),
            "--container-socket".into(),
            svc.socket.display().to_string(),
            "--discovery-refresh-interval".into(),
            "1s".into(),
            "--log-default-paths".into(),
            "false".into(),
        ],
        &dir.path().join("logs"),
    );

    // Prometheus: the same endpoints, the same target labels.
    let prom_port = free_port();
    let prom = format!("127.0.0.1:{prom_port}");
    let mut cfg = String::from(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n  - job_name: containers\n    static_configs:\n",
    );
    for (name, file, ip) in &containers {
        cfg.push_str(&format!(
            "      - targets: ['{ip}:8080']\n        labels: {{__metrics_path__: '/{file}', container: '{name}', node: '{NODE}'}}\n"
        ));
    }
    let pdir = dir.path().join("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(pdir.join("prometheus.yml"), cfg).unwrap();
    let log = std::fs::File::create(pdir.join("prometheus.log")).unwrap();
    let mut prom_child = Command::new(&prometheus)
        .arg(format!(
            "--config.file={}",
            pdir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .current_dir(&pdir)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();

    // Both have scraped every target a few times.
    let n = containers.len();
    wait_for(
        Duration::from_secs(60),
        "vigil and Prometheus scraped every target",
        || {
            let t = now_s();
            let ours = query(&vigil, "count_over_time(up{job=\"containers\"}[10s])", t)?;
            let theirs = query(&prom, "count_over_time(up{job=\"containers\"}[10s])", t)?;
            let enough = |r: &[Row], want: usize| {
                r.len() >= want
                    && r.iter()
                        .all(|(_, v)| v.parse::<f64>().unwrap_or(0.0) >= 3.0)
            };
            let valid_up = |r: &[Row]| r.len();
            if enough(&ours, n + 1) && enough(&theirs, n) {
                Ok(())
            } else {
                Err(format!(
                    "vigil {} targets, Prometheus {}",
                    valid_up(&ours),
                    valid_up(&theirs)
                ))
            }
        },
    );

    let t = now_s() - 0.5;
    let mut compared = 0;
    for (name, file, _) in &containers {
        let sel = format!(
            "{{container=\"{name}\",__name__!~\"scrape_duration_seconds|scrape_series_added\"}}"
        );
        let ours = query(&vigil, &sel, t).unwrap();
        let theirs = query(&prom, &sel, t).unwrap();
        let up = |r: &[Row]| {
            r.iter()
                .find(|(m, _)| m.get("__name__").map(String::as_str) == Some("up"))
                .map(|x| x.1.clone())
        };
        if file.starts_with("invalid-") {
            assert_eq!(
                up(&ours).as_deref(),
                Some("0.0"),
                "vigil must refuse {file}: {ours:?}"
            );
            assert_eq!(
                up(&theirs).as_deref(),
                Some("0.0"),
                "Prometheus refuses {file}: {theirs:?}"
            );
            continue;
        }
        assert_eq!(
            up(&theirs).as_deref(),
            Some("1.0"),
            "Prometheus scrapes {file}"
        );
        assert!(ours.len() > 5, "{file}: {ours:?}");
        let only_ours: Vec<_> = ours.iter().filter(|x| !theirs.contains(x)).collect();
        let only_theirs: Vec<_> = theirs.iter().filter(|x| !ours.contains(x)).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty(),
            "{file}: vigil and Prometheus differ\n  only in vigil: {only_ours:#?}\n  only in Prometheus: {only_theirs:#?}"
        );
        compared += ours.len();
    }
    assert!(compared > 60, "compared {compared} series");

    // The container without an address: scraped inside its network namespace.
    let l = query(
        &vigil,
        &format!("rpc_duration_seconds_count{{container=\"{lonely}\"}}"),
        now_s(),
    )
    .unwrap();
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0].1, "2693.0");
    assert_eq!(
        l[0].0.get("instance").map(String::as_str),
        Some("127.0.0.1:8080")
    );

    // The agent's target list, in Prometheus's shape.
    let (code, body) = get(&agent_http, "/api/v1/targets").unwrap();
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let active = v["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), n + 1, "{body}");
    for a in active {
        let container = a["labels"]["container"].as_str().unwrap();
        let bad = container.contains("invalid-");
        assert_eq!(a["health"], if bad { "down" } else { "up" }, "{a}");
        assert_eq!(a["lastError"].as_str().unwrap().is_empty(), !bad, "{a}");
        assert_eq!(a["scrapeInterval"], "1s");
    }
    let dropped = v["data"]["droppedTargets"].as_array().unwrap();
    assert!(
        dropped
            .iter()
            .any(|d| d["discoveredLabels"]["container"].as_str() == Some(&format!("vs{tag}-quiet"))),
        "the unlabelled container is listed as dropped: {body}"
    );

    // A removed container's series go stale.
    let (gone, _, _) = &containers
        .iter()
        .find(|c| c.1 == "valid-text-histogram.txt")
        .unwrap()
        .clone();
    let sel = format!("{{container=\"{gone}\"}}");
    assert!(!query(&vigil, &sel, now_s()).unwrap().is_empty());
    let out = svc.podman(&["rm", "-f", "-t", "0", gone]);
    assert!(out.status.success());
    wait_for(
        Duration::from_secs(30),
        "the removed container's series to go stale",
        || {
            let r = query(&vigil, &sel, now_s())?;
            if r.is_empty() {
                Ok(())
            } else {
                Err(format!("{} series still live", r.len()))
            }
        },
    );

    let _ = prom_child.kill();
    let _ = prom_child.wait();
}
