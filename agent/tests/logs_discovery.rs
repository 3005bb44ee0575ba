//! Discovery on a fixture host root with every runtime's layout (recorded
//! from real systems), user globs and excludes; identity labels; the open
//! file bound; the log-derived metric families.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod logs_support;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use logs_support::*;
use vigil_agent::model::Scrape;

const K8S_ID: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const DOCKER_ID: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const PODMAN_ID: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn write(root: &Path, host_path: &str, body: &[u8]) {
    let p = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

fn fixture(root: &Path) {
    let pod =
        "/var/log/pods/kube-system_coredns-7db6d8ff4d-x2x9q_5a1e0c2e-1b7c-4a8e-9a4f-0d5c3a2e1f00";
    write(
        root,
        &format!("{pod}/coredns/0.log"),
        b"2026-11-22T10:48:32.523200041Z stdout F [INFO] plugin/reload: Running configuration\n\
          2026-11-22T10:48:33.000000000Z stderr F [ERROR] plugin/errors: 2 example.org. A: read udp\n",
    );
    let links = root.join("var/log/containers");
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink(
        format!("{pod}/coredns/0.log"),
        links.join(format!(
            "coredns-7db6d8ff4d-x2x9q_kube-system_coredns-{K8S_ID}.log"
        )),
    )
    .unwrap();
    write(
        root,
        "/var/log/pods/kube-system_skipme_5a1e0c2e-0000-0000-0000-000000000000/c/0.log",
        b"2026-11-22T10:48:32.5Z stdout F excluded\n",
    );
    write(
        root,
        &format!("/var/lib/docker/containers/{DOCKER_ID}/{DOCKER_ID}-json.log"),
        b"{\"log\":\"GET / 200\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-22T10:48:32.523200041Z\"}\n\
          {\"log\":\"level=warn msg=slow\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-22T10:48:32.6Z\"}\n",
    );
    write(
        root,
        &format!("/var/lib/docker/containers/{DOCKER_ID}/config.v2.json"),
        format!(r#"{{"ID":"{DOCKER_ID}","Name":"/web","Config":{{"Hostname":"222222222222","Labels":{{"maintainer":"x"}}}},"State":{{"Running":true}}}}"#)
            .as_bytes(),
    );
    let pc = "/var/lib/containers/storage/overlay-containers";
    write(
        root,
        &format!("{pc}/{PODMAN_ID}/userdata/ctr.log"),
        b"2026-11-22T13:34:42.672670194+00:00 stdout F hi\n\
          2026-11-22T13:34:42.672670194+00:00 stdout P part\n\
          2026-11-22T13:34:42.672757183+00:00 stderr F err\n\
          2026-11-22T13:34:43.673880205+00:00 stdout F end\n",
    );
    // As containers/storage and podman write them (trimmed).
    write(
        root,
        &format!("{pc}/containers.json"),
        format!(r#"[{{"id":"{PODMAN_ID}","names":["la-probe"],"image":"15a7","layer":"76c0","metadata":"{{\"image-name\":\"localhost/bb:1\"}}","created":"2026-11-22T13:34:07.648379107Z","flags":{{"MountLabel":"","ProcessLabel":""}}}}]"#)
            .as_bytes(),
    );
    write(
        root,
        &format!("{pc}/{PODMAN_ID}/userdata/config.json"),
        br#"{"ociVersion":"1.2.0","annotations":{"io.container.manager":"libpod","io.kubernetes.cri-o.Created":"2026-11-22T13:34:42.266615307Z","io.kubernetes.cri-o.TTY":"false","io.podman.annotations.autoremove":"FALSE"}}"#,
    );
    write(
        root,
        "/var/log/app/app.log",
        b"plain text line\nERROR something broke\n",
    );
    write(root, "/var/log/app/app.log.1", b"old rotated history\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_with_its_identity_and_the_open_file_bound() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    fixture(root.path());
    let mut cfg = logs_config(&["/var/log/app/*.log*"]);
    cfg.default_paths = true;
    cfg.excludes = vec!["/var/log/pods/kube-system_skipme_*/**".into()];
    cfg.max_open_files = 2;
    let run = Running::start(&cfg, root.path(), state.path(), ack_all());
    let metrics = run.metrics.clone();
    let watcher = tokio::spawn(async move {
        let mut most = 0;
        for _ in 0..300 {
            most = most.max(metrics.files_open.load(Relaxed));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    });
    // 2 + 2 + 3 + 2 entries; the bound makes two files wait for a slot.
    assert!(
        run.wait_for(Duration::from_secs(30), |r| r.len() >= 9)
            .await,
        "{:?}",
        run.received
            .lock()
            .iter()
            .map(|e| &e.line)
            .collect::<Vec<_>>()
    );
    let most = watcher.await.unwrap();
    assert!(most <= 2, "{most} files open at once");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = run.metrics.clone();
    let got = run.stop().await;
    assert_eq!(got.len(), 9);
    assert_eq!(metrics.watch_fallback.load(Relaxed), 0, "inotify in use");
    let find = |line: &str| {
        got.iter()
            .find(|e| e.line == line)
            .unwrap_or_else(|| panic!("no line {line:?}"))
    };
    let labels = |line: &str| -> Vec<(String, String)> { find(line).stream.pairs().to_vec() };
    let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        labels("[ERROR] plugin/errors: 2 example.org. A: read udp"),
        l(&[
            ("container", "coredns"),
            ("container_id", K8S_ID),
            ("namespace", "kube-system"),
            ("pod", "coredns-7db6d8ff4d-x2x9q"),
            ("stream", "stderr"),
        ])
    );
    assert_eq!(
        find("[INFO] plugin/reload: Running configuration").timestamp_ns,
        1_795_344_512_523_200_041
    );
    assert_eq!(
        labels("GET / 200"),
        l(&[
            ("container_id", DOCKER_ID),
            ("container_name", "web"),
            ("stream", "stdout")
        ])
    );
    assert_eq!(
        labels("err"),
        l(&[
            ("container_id", PODMAN_ID),
            ("container_name", "la-probe"),
            ("stream", "stderr")
        ])
    );
    assert_eq!(find("partend").stream.get("stream"), Some("stdout"));
    assert_eq!(
        labels("plain text line"),
        l(&[("filename", "/var/log/app/app.log"), ("stream", "stdout")])
    );
    assert!(got.iter().all(|e| e.line != "excluded"));
    assert!(
        got.iter().all(|e| e.line != "old rotated history"),
        "rotated history is not read at the first start"
    );

    let mut scrape = Scrape::new(0);
    metrics.collect_into(&mut scrape);
    let text = scrape.encode_text(Some("n1"));
    assert!(text.contains(&format!(
        "vigil_log_lines_total{{namespace=\"kube-system\",pod=\"coredns-7db6d8ff4d-x2x9q\",container=\"coredns\",container_id=\"{K8S_ID}\",container_name=\"\",stream=\"stderr\",level=\"error\",node=\"n1\"}} 1"
    )), "{text}");
    assert!(text.contains(&format!(
        "vigil_log_lines_total{{namespace=\"\",pod=\"\",container=\"\",container_id=\"{DOCKER_ID}\",container_name=\"web\",stream=\"stderr\",level=\"warn\",node=\"n1\"}} 1"
    )), "{text}");
    assert!(text.contains(&format!(
        "vigil_log_bytes_total{{namespace=\"\",pod=\"\",container=\"\",container_id=\"{PODMAN_ID}\",container_name=\"la-probe\",stream=\"stdout\",level=\"unknown\",node=\"n1\"}} 9"
    )), "{text}");
    assert!(
        text.contains("vigil_agent_log_read_bytes_total{node=\"n1\"}"),
        "{text}"
    );
    assert!(
        text.contains("vigil_agent_log_rotations_total{kind=\"rename\",node=\"n1\"} 0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_and_pods_are_found_while_running() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/log/pods")).unwrap();
    let cfg = logs_config(&[POD_GLOB]);
    let run = Running::start(&cfg, root.path(), state.path(), ack_all());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, pod) in ["a", "b", "c"].iter().enumerate() {
        let d = pod_dir(root.path(), "ns", pod, "c");
        std::fs::write(d.join("0.log"), cri_line(i as u64, "stdout")).unwrap();
    }
    assert!(
        run.wait_seqs(Duration::from_secs(10), |s| s.len() == 3)
            .await
    );
    let got = run.stop().await;
    assert_eq!(got.len(), 3);
}
