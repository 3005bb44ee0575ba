//! The agent's node figures against the real `prometheus-node-exporter` on
//! this machine, read back to back: every `node_*` family both export has the
//! same type and the same label names and label sets (and, for the network
//! stack and kernel-table families, the same help text); MemTotal and other
//! figures that cannot move between the reads are exact, counters agree
//! within 1%. And `promtool check metrics` has nothing to say about the
//! agent's exposition except the names kept for compatibility
//! (node_exporter's camelCase `node_memory_*`/`node_netstat_*`/
//! `node_sockstat_*`, its `_bits` entropy gauges, cAdvisor's
//! `container_memory_failcnt` counter).

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_e2e::{Proc, TextSample, bin, free_port, get, parse_text, wait_for};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// The container test adds a network device (its veth) and traffic: the
/// back-to-back comparison must not run while it does.
static NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn types(text: &str) -> BTreeMap<String, String> {
    header(text, "# TYPE ")
}

fn header(text: &str, prefix: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (n, t) = l.split_once(' ')?;
            Some((n.to_string(), t.trim().to_string()))
        })
        .collect()
}

fn by_family(samples: &[TextSample]) -> BTreeMap<String, Vec<&TextSample>> {
    let mut m: BTreeMap<String, Vec<&TextSample>> = BTreeMap::new();
    for s in samples {
        m.entry(s.name.clone()).or_default().push(s);
    }
    m
}

fn scrape_agent() -> String {
    scrape_agent_with(&[])
}

fn scrape_agent_with(args: &[String]) -> String {
    let out = Command::new(bin("vigil-agent"))
        .args(args)
        .arg("scrape")
        .output()
        .expect("vigil-agent scrape");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 exposition")
}

/// Label sets without the agent's own `node` label.
fn label_sets(v: &[&TextSample], drop_node: bool) -> BTreeSet<BTreeMap<String, String>> {
    v.iter()
        .map(|s| {
            let mut l = s.labels.clone();
            if drop_node {
                l.remove("node");
            }
            l
        })
        .collect()
}

#[test]
fn node_families_agree_with_node_exporter() {
    let _serial = NETWORK.lock().unwrap_or_else(|e| e.into_inner());
    if !Path::new(NODE_EXPORTER).exists() {
        eprintln!("prometheus-node-exporter not installed: skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // one textfile folder for both: a script's metrics, and a file that is not
    // Prometheus text
    let textfiles = dir.path().join("textfiles");
    std::fs::create_dir_all(&textfiles).unwrap();
    std::fs::write(
        textfiles.join("backup.prom"),
        "# HELP backup_last_success_seconds Last good backup.\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"db\"} 1.7e9\nbackup_last_success_seconds{job=\"files\",tier=\"cold\"} 1.6e9\n# TYPE backup_runs_total counter\nbackup_runs_total 3\n",
    )
    .unwrap();
    std::fs::write(textfiles.join("broken.prom"), "what is this\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _ne = Proc::start(
        "node-exporter",
        Path::new(NODE_EXPORTER),
        &[
            format!("--web.listen-address={addr}"),
            // Debian patches these defaults; the agent follows upstream's
            "--collector.filesystem.mount-points-exclude=^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)".to_string(),
            "--collector.netdev.device-exclude=".to_string(),
            format!("--collector.textfile.directory={}", textfiles.display()),
        ],
        dir.path(),
    );
    wait_for(Duration::from_secs(20), "node_exporter up", || {
        match get(&addr, "/metrics") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // back to back: theirs, then ours
    let (_, theirs_text) = get(&addr, "/metrics").unwrap();
    let ours_text = scrape_agent_with(&[
        "--textfile-directory".into(),
        textfiles.display().to_string(),
    ]);
    let (theirs, ours) = (parse_text(&theirs_text), parse_text(&ours_text));
    let (tt, ot) = (types(&theirs_text), types(&ours_text));
    let (th, oh) = (
        header(&theirs_text, "# HELP "),
        header(&ours_text, "# HELP "),
    );
    // the families added to match node_exporter's defaults keep its help
    let same_help = [
        "node_netstat_",
        "node_sockstat_",
        "node_softnet_",
        "node_udp_queues",
        "node_arp_",
        "node_nf_conntrack_",
        "node_filefd_",
        "node_entropy_",
        "node_timex_",
        "node_cpu_guest_",
        "node_network_",
        "node_os_",
        "node_disk_info",
        "node_time_clocksource_",
        "node_textfile_",
        "backup_",
    ];
    let (tf, of) = (by_family(&theirs), by_family(&ours));

    let mut problems = Vec::new();
    let mut compared = 0;
    for (name, o) in of
        .iter()
        .filter(|(n, _)| n.starts_with("node_") || n.starts_with("backup_"))
    {
        let Some(t) = tf.get(name) else { continue };
        compared += 1;
        if tt.get(name) != ot.get(name) {
            problems.push(format!(
                "{name}: type {:?} vs node_exporter {:?}",
                ot.get(name),
                tt.get(name)
            ));
        }
        if same_help.iter().any(|p| name.starts_with(p)) && th.get(name) != oh.get(name) {
            problems.push(format!(
                "{name}: help {:?} vs node_exporter {:?}",
                oh.get(name),
                th.get(name)
            ));
        }
        let (ol, tl) = (label_sets(o, true), label_sets(t, false));
        if ol != tl {
            problems.push(format!(
                "{name}: label sets differ\n  ours: {ol:?}\n  node_exporter: {tl:?}"
            ));
            continue;
        }
        // values: counters within 1% (read a moment apart); gauges that
        // cannot move between the reads exactly
        let counter = tt.get(name).map(String::as_str) == Some("counter");
        let exact = [
            "node_memory_MemTotal_bytes",
            "node_boot_time_seconds",
            "node_filesystem_size_bytes",
            "node_filesystem_files",
            "node_filesystem_readonly",
            "node_filefd_maximum",
            "node_entropy_pool_size_bits",
            "node_nf_conntrack_entries_limit",
            "node_timex_tick_seconds",
            "node_timex_status",
            "node_netstat_Ip_Forwarding",
            "node_network_mtu_bytes",
            "node_network_iface_id",
            "node_network_protocol_type",
            "node_network_address_assign_type",
            "node_network_transmit_queue_length",
            "node_network_up",
            "node_network_info",
            "node_os_info",
            "node_os_version",
            "node_disk_info",
            "node_time_clocksource_available_info",
            "node_time_clocksource_current_info",
            "node_textfile_mtime_seconds",
            "node_textfile_scrape_error",
            "backup_last_success_seconds",
            "backup_runs_total",
        ]
        .contains(&name.as_str());
        if !(counter || exact) {
            continue;
        }
        for s in o {
            let mut l = s.labels.clone();
            l.remove("node");
            // loopback traffic includes these very scrapes
            if l.get("device").map(String::as_str) == Some("lo") {
                continue;
            }
            let Some(their) = t.iter().find(|x| x.labels == l) else {
                continue;
            };
            let (a, b) = (s.value, their.value);
            let ok = if exact {
                a == b
            } else {
                (a - b).abs() <= 0.01 * a.abs().max(b.abs()) + 2.0
            };
            if !ok {
                problems.push(format!("{name}{l:?}: ours {a} vs node_exporter {b}"));
            }
        }
    }
    assert!(compared >= 40, "only {compared} families in common");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // the families the issue names are all there
    for n in [
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
        "node_load1",
        "node_network_receive_bytes_total",
        "node_disk_reads_completed_total",
        "node_filesystem_avail_bytes",
        "node_context_switches_total",
        "node_forks_total",
        "node_procs_running",
        "node_boot_time_seconds",
        "node_uname_info",
        "node_time_seconds",
        "node_vmstat_pgmajfault",
        "node_netstat_Tcp_RetransSegs",
        "node_netstat_TcpExt_ListenDrops",
        "node_sockstat_TCP_inuse",
        "node_sockstat_TCP_mem_bytes",
        "node_softnet_processed_total",
        "node_udp_queues",
        "node_filefd_allocated",
        "node_entropy_available_bits",
        "node_timex_offset_seconds",
        "node_timex_sync_status",
        "node_cpu_guest_seconds_total",
        "node_network_up",
        "node_network_info",
        "node_network_mtu_bytes",
        "node_network_carrier_changes_total",
        "node_os_info",
        "node_disk_info",
        "node_time_clocksource_current_info",
        "node_textfile_scrape_error",
        "backup_last_success_seconds",
    ] {
        assert!(of.contains_key(n), "{n} missing");
    }
    // and every network-stack and kernel-table family node_exporter
    // exported here, the agent exported too
    let missing: Vec<&String> = tf
        .keys()
        .filter(|n| same_help.iter().any(|p| n.starts_with(p)))
        .filter(|n| !of.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "node_exporter exports, the agent does not: {missing:?}"
    );
}

#[test]
fn promtool_check_metrics_only_flags_compatibility_names() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("promtool not installed: skipping");
        return;
    }
    let text = scrape_agent();
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let l = l.trim_start();
            let node_camel = ["node_memory_", "node_netstat_", "node_sockstat_"]
                .iter()
                .any(|p| l.starts_with(p))
                && l.contains("should be written in 'snake_case' not 'camelCase'");
            let entropy_bits =
                l.starts_with("node_entropy_") && l.contains("use base unit \"bytes\"");
            let failcnt = l.trim_start().starts_with("container_memory_failcnt ")
                && l.contains("should have \"_total\" suffix");
            !(node_camel || failcnt || entropy_bits)
        })
        .collect();
    assert!(unexpected.is_empty(), "promtool: {unexpected:#?}");
}

/// The agent as a DaemonSet without `hostNetwork` runs in its own network
/// namespace with the host's root under `--host-root`: its node network
/// figures must be the host's (read through the host init's `/proc/1/net`
/// and the host's sysfs), not its container's `lo` and `eth0`.
#[test]
fn a_containerised_agent_reports_the_hosts_network_not_its_own() {
    let _serial = NETWORK.lock().unwrap_or_else(|e| e.into_inner());
    if !vigil_e2e::podman::usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    // the host's devices (pods' veths come and go: left out)
    let host: BTreeSet<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|d| !d.starts_with("veth"))
        .collect();
    let agent = bin("vigil-agent");
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    // the image is a static busybox: the agent brings the host's libraries
    for d in ["/lib", "/lib64", "/usr/lib"] {
        if Path::new(d).exists() {
            args.extend(["-v".into(), format!("{d}:{d}:ro")]);
        }
    }
    args.extend([
        "-v".into(),
        "/:/host:ro".into(),
        "-v".into(),
        format!("{}:/vigil-agent:ro", agent.display()),
        vigil_e2e::podman::IMAGE.into(),
        "/vigil-agent".into(),
        "--host-root".into(),
        "/host".into(),
        "scrape".into(),
    ]);
    let out = Command::new("podman")
        .args(&args)
        .output()
        .expect("podman run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = parse_text(&String::from_utf8_lossy(&out.stdout));
    let devices = |family: &str| -> BTreeSet<String> {
        samples
            .iter()
            .filter(|s| s.name == family)
            .filter_map(|s| s.labels.get("device").cloned())
            .filter(|d| !d.starts_with("veth"))
            .collect()
    };
    for family in ["node_network_receive_bytes_total", "node_network_up"] {
        assert_eq!(
            devices(family),
            host,
            "{family}: the container's devices, not the host's"
        );
    }
    // the host's loopback carries this machine's tests; the container's is idle
    let lo = samples
        .iter()
        .find(|s| {
            s.name == "node_network_receive_bytes_total"
                && s.labels.get("device").map(String::as_str) == Some("lo")
        })
        .map(|s| s.value);
    assert!(lo.is_some_and(|v| v > 0.0), "lo: {lo:?}");
}
