//! Fixture trees with real v2 file formats, Kubernetes path variants, churn,
//! a property test over bad files, and a real v1 cgroup test (root only).

use super::*;
use std::fs;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn v2_root() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("proc/self")).unwrap();
    fs::write(
        t.path().join("proc/self/mountinfo"),
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
    )
    .unwrap();
    t
}

fn write_v2_container(root: &Path, rel: &str, usage_usec: u64, quota: bool) {
    let d = root.join("sys/fs/cgroup").join(rel);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("cpu.stat"), format!("usage_usec {usage_usec}\nuser_usec 700\nsystem_usec 300\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2500000\nnr_bursts 0\nburst_usec 0\n")).unwrap();
    fs::write(
        d.join("cpu.max"),
        if quota {
            "50000 100000\n"
        } else {
            "max 100000\n"
        },
    )
    .unwrap();
    fs::write(d.join("memory.current"), "10485760\n").unwrap();
    fs::write(d.join("memory.max"), "67108864\n").unwrap();
    fs::write(d.join("memory.stat"), "anon 4194304\nfile 6291456\nkernel 0\nfile_mapped 1048576\nactive_file 2097152\ninactive_file 4194304\n").unwrap();
    fs::write(
        d.join("memory.events"),
        "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
    )
    .unwrap();
    fs::write(d.join("cpu.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=567\n").unwrap();
}

fn find<'a>(s: &'a Scrape, name: &str) -> Vec<&'a crate::model::Sample> {
    s.families
        .iter()
        .filter(|f| f.name == name)
        .flat_map(|f| f.samples.iter())
        .collect()
}

fn label<'a>(s: &'a crate::model::Sample, k: &str) -> &'a str {
    s.labels
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("<absent>")
}

#[test]
fn identifies_kubernetes_docker_podman_paths() {
    let uid = "1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901";
    let cases = [
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope"
        ),
        format!("/kubepods.slice/kubepods-pod{uid}.slice/crio-{ID}.scope"),
        format!("/kubepods/burstable/pod{}/{ID}", uid.replace('_', "-")),
        format!("/kubepods/pod{}/{ID}", uid.replace('_', "-")),
    ];
    for c in &cases {
        let id = identify(c).unwrap_or_else(|| panic!("not identified: {c}"));
        assert_eq!(id.container_id, ID, "{c}");
        assert_eq!(id.pod_uid, uid.replace('_', "-"), "{c}");
    }
    for c in [
        format!("/docker/{ID}"),
        format!("/system.slice/docker-{ID}.scope"),
        format!("/libpod_parent/libpod-{ID}"),
        format!("/machine.slice/libpod-{ID}.scope"),
    ] {
        let id = identify(&c).unwrap_or_else(|| panic!("not identified: {c}"));
        assert_eq!(id.container_id, ID);
        assert_eq!(id.pod_uid, "");
    }
    for c in [
        format!("/system.slice/crio-conmon-{ID}.scope"),
        format!("/system.slice/run-{ID}.mount"),
        "/kubepods.slice/kubepods-burstable.slice".to_string(),
        "/user.slice".to_string(),
    ] {
        assert!(identify(&c).is_none(), "{c}");
    }
}

#[test]
fn parses_hybrid_mountinfo() {
    let text = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                garbage line\n";
    let h = parse_mountinfo(text, Path::new("/host"));
    assert_eq!(h.len(), 3);
    assert_eq!(h[0].path, Path::new("/host/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(h[0].controllers, vec!["cpu", "cpuacct"]);
    assert!(h[2].v2);
}

#[test]
fn v2_fixture_gives_cadvisor_figures_and_labels() {
    let t = v2_root();
    let uid = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";
    let rel = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
        uid.replace('-', "_")
    );
    write_v2_container(t.path(), &rel, 2_500_000, true);
    let logs = t.path().join("var/log/containers");
    fs::create_dir_all(&logs).unwrap();
    fs::write(logs.join(format!("web-7d9_shop_nginx-{ID}.log")), "").unwrap();
    let mut r = CgroupReader::new(t.path());
    let mut s = Scrape::new(0);
    let (errs, n) = r.scrape(&mut s);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(n, 1);
    let cpu = find(&s, "container_cpu_usage_seconds_total");
    assert_eq!(cpu.len(), 1);
    assert_eq!(cpu[0].value, 2.5);
    let names: Vec<&str> = cpu[0].labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, LABELS);
    assert_eq!(label(cpu[0], "id"), format!("/{rel}"));
    assert_eq!(label(cpu[0], "pod"), "web-7d9");
    assert_eq!(label(cpu[0], "namespace"), "shop");
    assert_eq!(label(cpu[0], "container"), "nginx");
    assert_eq!(
        find(&s, "container_memory_working_set_bytes")[0].value,
        6291456.0
    );
    assert_eq!(find(&s, "container_oom_events_total")[0].value, 2.0);
    assert_eq!(
        find(&s, "container_spec_memory_limit_bytes")[0].value,
        67108864.0
    );
    assert_eq!(
        find(&s, "container_cpu_cfs_throttled_periods_total")[0].value,
        4.0
    );
    assert_eq!(
        find(&s, "container_cpu_cfs_throttled_seconds_total")[0].value,
        2.5
    );
}

#[test]
fn no_throttling_series_without_quota_and_working_set_floors_at_zero() {
    let t = v2_root();
    let rel = format!("system.slice/docker-{ID}.scope");
    write_v2_container(t.path(), &rel, 1, false);
    let d = t.path().join("sys/fs/cgroup").join(&rel);
    fs::write(d.join("memory.current"), "100\n").unwrap();
    let mut r = CgroupReader::new(t.path());
    let mut s = Scrape::new(0);
    r.scrape(&mut s);
    assert!(find(&s, "container_cpu_cfs_throttled_periods_total").is_empty());
    assert_eq!(find(&s, "container_memory_working_set_bytes")[0].value, 0.0);
}

#[test]
fn hundreds_of_pods_with_churn_leave_nothing_behind() {
    let t = v2_root();
    let base = t.path().join("sys/fs/cgroup/kubepods.slice");
    let mut r = CgroupReader::new(t.path());
    for round in 0..3u64 {
        let _ = fs::remove_dir_all(&base);
        for i in 0..300u64 {
            let id = format!("{:064x}", round * 1000 + i);
            let rel = format!(
                "kubepods.slice/kubepods-pod{:032x}.slice/cri-containerd-{id}.scope",
                round * 1000 + i
            );
            write_v2_container(t.path(), &rel, i, false);
        }
        let mut s = Scrape::new(0);
        let (errs, n) = r.scrape(&mut s);
        assert!(errs.is_empty());
        assert_eq!(n, 300);
        assert_eq!(find(&s, "container_cpu_usage_seconds_total").len(), 300);
    }
    // Only the current round is reported: nothing from a removed cgroup survives.
    let mut s = Scrape::new(0);
    r.scrape(&mut s);
    assert!(
        find(&s, "container_cpu_usage_seconds_total")
            .iter()
            .all(|x| label(x, "id").contains(&format!("{:064x}", 2000u64)[..40]))
    );
}

proptest::proptest! {
    #[test]
    fn bad_files_never_panic(content in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        let t = v2_root();
        let rel = format!("docker/{ID}");
        write_v2_container(t.path(), &rel, 5, true);
        let d = t.path().join("sys/fs/cgroup").join(&rel);
        for f in ["cpu.stat", "memory.current", "memory.stat", "memory.max", "memory.events", "cpu.max"] {
            fs::write(d.join(f), &content).unwrap();
        }
        let mut r = CgroupReader::new(t.path());
        let mut s = Scrape::new(0);
        let _ = r.scrape(&mut s);
    }
}

/// Real kernel objects: a kubepods-like cgroup under the v1 cpuacct and memory
/// hierarchies, a CPU-burning child in it, our figure vs `cpuacct.usage`.
#[test]
fn v1_real_cgroup_cpu_matches_cpuacct_usage() {
    let h = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(t) => parse_mountinfo(&t, Path::new("/")),
        Err(e) => return eprintln!("skip: no mountinfo: {e}"),
    };
    let Some(cpuacct) = h
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "cpuacct"))
    else {
        return eprintln!("skip: no v1 cpuacct hierarchy");
    };
    let rel = format!(
        "kubepods/burstable/podvigiltest{}/{:064x}",
        std::process::id(),
        std::process::id()
    );
    let dir = cpuacct.path.join(&rel);
    if let Err(e) = fs::create_dir_all(&dir) {
        return eprintln!("skip: cannot mkdir {}: {e} (needs root)", dir.display());
    }
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("read _; while :; do :; done")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    drop(child.stdin.take());
    // Burn until the kernel has counted 0.3 s (bounded at 15 s on a busy host).
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(15) {
        let used = fs::read_to_string(dir.join("cpuacct.usage"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if used > 300_000_000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Stop the burner first so the kernel figure is frozen while we compare.
    let _ = child.kill();
    let _ = child.wait();
    let mut r = CgroupReader::new(Path::new("/"));
    let mut s = Scrape::new(0);
    r.scrape(&mut s);
    let kernel: f64 = fs::read_to_string(dir.join("cpuacct.usage"))
        .unwrap()
        .trim()
        .parse::<f64>()
        .unwrap()
        / 1e9;
    let ours = find(&s, "container_cpu_usage_seconds_total")
        .into_iter()
        .find(|x| label(x, "id") == format!("/{rel}"))
        .map(|x| x.value);
    // Clean up before asserting.
    let mut p = dir.clone();
    for _ in 0..4 {
        let _ = fs::remove_dir(&p);
        p.pop();
        if p == cpuacct.path {
            break;
        }
    }
    let ours = ours.expect("our scrape saw the test cgroup");
    assert!(kernel > 0.1, "child burned {kernel}s");
    assert!(
        (ours - kernel).abs() / kernel < 0.02,
        "ours {ours} kernel {kernel}"
    );
}

/// Real kernel objects: a memory limit under the v1 memory hierarchy and a
/// child that allocates past it → `container_oom_events_total` counts the kill.
#[test]
fn v1_real_cgroup_oom_kill_is_counted() {
    let h = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(t) => parse_mountinfo(&t, Path::new("/")),
        Err(e) => return eprintln!("skip: no mountinfo: {e}"),
    };
    let Some(mem) = h
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "memory"))
    else {
        return eprintln!("skip: no v1 memory hierarchy");
    };
    let rel = format!(
        "kubepods/burstable/podvigiloom{}/{:064x}",
        std::process::id(),
        u64::from(std::process::id()) + 1
    );
    let dir = mem.path.join(&rel);
    if let Err(e) = fs::create_dir_all(&dir) {
        return eprintln!("skip: cannot mkdir {}: {e} (needs root)", dir.display());
    }
    fs::write(dir.join("memory.limit_in_bytes"), "16777216").unwrap();
    let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), "16777216");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("read _; x=a; while :; do x=\"$x$x\"; done")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    drop(child.stdin.take());
    let status = child.wait();
    let mut r = CgroupReader::new(Path::new("/"));
    let mut s = Scrape::new(0);
    r.scrape(&mut s);
    let ours = find(&s, "container_oom_events_total")
        .into_iter()
        .find(|x| label(x, "id") == format!("/{rel}"))
        .map(|x| x.value);
    let mut p = dir.clone();
    for _ in 0..4 {
        let _ = fs::remove_dir(&p);
        p.pop();
        if p == mem.path {
            break;
        }
    }
    eprintln!("child exit: {status:?}");
    assert_eq!(ours, Some(1.0));
}
