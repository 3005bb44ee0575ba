//! Unit tests: path identification, parsers (with a proptest), and fixture
//! host roots with real cgroup v1/v2 file formats.

use super::families::SPECS;
use super::files::{V1_FILES, V2_FILES, ctl};
use super::identity::{qos_of, runtime_of};
use super::parse::*;
use super::*;
use proptest::prelude::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const UID: &str = "1f3b6c2a-8a9d-4c1e-9f00-aabbccddeeff";

#[test]
fn cgroup_identify_layouts() {
    let u = UID.replace('-', "_");
    let cases = [
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
            ),
            Some(UID),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
            ),
            Some(UID),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{ID}.scope"),
            Some(UID),
        ),
        (format!("/kubepods/burstable/pod{UID}/{ID}"), Some(UID)),
        (format!("/kubepods/pod{UID}/{ID}"), Some(UID)),
        (format!("/docker/{ID}"), None),
        (format!("/libpod_parent/libpod-{ID}"), None),
        (format!("/machine.slice/libpod-{ID}.scope"), None),
    ];
    for (p, uid) in cases {
        let got = identify(&p).unwrap_or_else(|| panic!("no id in {p}"));
        assert_eq!(got.id, ID, "{p}");
        assert_eq!(got.pod_uid.as_deref(), uid, "{p}");
    }
    for p in [
        format!("/machine.slice/libpod-conmon-{ID}.scope"),
        format!("/kubepods/burstable/pod{UID}"),
        "/system.slice/sshd.service".to_string(),
        format!("/x/foo-{ID}"),
        "/".to_string(),
    ] {
        assert_eq!(identify(&p), None, "{p}");
    }
}

#[test]
fn cgroup_mountinfo_hybrid_and_v2() {
    let hybrid = "\
25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,blkio
";
    let h = Hierarchies::from_mountinfo(hybrid, Path::new("/host"));
    assert_eq!(
        h.v1["cpu"],
        PathBuf::from("/host/sys/fs/cgroup/cpu,cpuacct")
    );
    assert_eq!(
        h.v1["cpuacct"],
        PathBuf::from("/host/sys/fs/cgroup/cpu,cpuacct")
    );
    assert_eq!(h.v1["memory"], PathBuf::from("/host/sys/fs/cgroup/memory"));
    assert_eq!(h.v1["blkio"], PathBuf::from("/host/sys/fs/cgroup/my dir"));
    assert!(!h.is_v2());
    let v2 = "35 25 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
    let h = Hierarchies::from_mountinfo(v2, Path::new("/"));
    assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup")));
    assert!(h.is_v2());
}

#[test]
fn cgroup_parsers_real_formats() {
    let io = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=4 wbytes=8 rios=3 wios=4 dbytes=0 dios=0\n";
    assert_eq!(io_stat(io).unwrap(), [4100.0, 8200.0, 4.0, 6.0]);
    let b = "8:0 Read 100\n8:0 Write 50\n8:0 Sync 0\n8:0 Async 150\n8:0 Total 150\n8:16 Read 1\nTotal 151\n";
    assert_eq!(blkio(b).unwrap(), (101.0, 50.0));
    let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n";
    assert_eq!(psi_totals(psi).unwrap(), (Some(1.5e6), Some(5e5)));
    assert!(number("12x").is_err());
    assert!(number("").is_err());
    assert!(number("-").is_err());
    assert!(number("99999999999999999999999").is_err());
    assert_eq!(number(" -1\n").unwrap(), -1.0);
    assert_eq!(
        number("18446744073709551615").unwrap(),
        18446744073709551615.0
    );
    assert!(pick("a 1\nb\n", ["a", "b"]).is_err());
    assert!(pick("x\na 1\n", ["a"]).is_err());
    // lines after the last wanted key are not looked at
    assert_eq!(pick("a 1\nb\n", ["a"]).unwrap(), [Some(1.0)]);
    assert!(pick("", ["a"]).is_err());
    assert!(
        pick("a x\n", ["a"]).is_err(),
        "a wanted value must be a number"
    );
    assert_eq!(pick("a x\nb 2\n", ["b"]).unwrap(), [Some(2.0)]);
    assert_eq!(
        pick("usage_usec 5\nuser_usec 3\n", ["user_usec", "nope"]).unwrap(),
        [Some(3.0), None]
    );
    assert_eq!(cpu_max("max 100000\n").unwrap(), (None, 100000.0));
    assert_eq!(
        cpu_max("50000 100000\n").unwrap(),
        (Some(50000.0), 100000.0)
    );
    assert!(cpu_max("50000\n").is_err());
    assert_eq!(pids("1\n\n22\nx\n"), vec![1, 22]);
    assert_eq!(count_lines("1\n\n22\n"), 2);
}

proptest! {
    #[test]
    fn cgroup_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let t = String::from_utf8_lossy(&bytes);
        let _ = number(&bytes);
        let _ = pick(&bytes, ["a", "usage_usec", "total"]);
        let _ = io_stat(&bytes);
        let _ = blkio(&bytes);
        let _ = psi_totals(&bytes);
        let _ = cpu_max(&bytes);
        let _ = pids(&bytes);
        let _ = count_lines(&bytes);
        let _ = identify(&t);
        let _ = kmsg::parse_record(&t);
        let _ = Hierarchies::from_mountinfo(&t, Path::new("/h"));
    }
}

fn w(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn find(s: &Scrape, name: &str, id: &str) -> Option<(Vec<(String, String)>, f64)> {
    s.families
        .iter()
        .find(|f| f.name == name)?
        .samples
        .iter()
        .find(|x| x.labels.iter().any(|(k, v)| k == "id" && v == id))
        .map(|x| (x.labels.to_vec(), x.value))
}

#[test]
fn family_indexes_match_specs() {
    let at = |i: usize| SPECS[i].0;
    assert_eq!(at(fam::CPU_USAGE), "container_cpu_usage_seconds_total");
    assert_eq!(
        at(fam::CFS_THROTTLED_SECONDS),
        "container_cpu_cfs_throttled_seconds_total"
    );
    assert_eq!(
        at(fam::MEM_WORKING_SET),
        "container_memory_working_set_bytes"
    );
    assert_eq!(at(fam::MEM_FAILCNT), "container_memory_failcnt");
    assert_eq!(at(fam::SPEC_CPU_SHARES), "container_spec_cpu_shares");
    assert_eq!(at(fam::OOM_EVENTS), "container_oom_events_total");
    assert_eq!(at(fam::THREADS), "container_threads");
    assert_eq!(at(fam::FS), "container_fs_reads_bytes_total");
    assert_eq!(at(fam::FS + 3), "container_fs_writes_total");
    assert_eq!(at(fam::PSI), "container_pressure_cpu_waiting_seconds_total");
    assert_eq!(
        at(fam::PSI + 5),
        "container_pressure_io_stalled_seconds_total"
    );
    assert_eq!(at(fam::INFO), "container_info");
    assert_eq!(at(fam::FDS), "container_file_descriptors");
    for (i, (name, _)) in netfd::NET_FAMILIES.iter().enumerate() {
        assert_eq!(at(fam::NET + i), *name);
    }
    assert_eq!(at(fam::START), "container_start_time_seconds");
    assert_eq!(at(fam::LAST_SEEN), "container_last_seen");
    assert_eq!(SPECS.len(), fam::LAST_SEEN + 1);
    for (i, (c, f)) in V1_FILES.iter().enumerate() {
        let want = match i {
            v1f::USAGE => "cpuacct.usage",
            v1f::QUOTA => "cpu.cfs_quota_us",
            v1f::PSI => "cpu.pressure",
            v1f::MEM_STAT => "memory.stat",
            v1f::OOM_CONTROL => "memory.oom_control",
            v1f::PROCS => "cgroup.procs",
            v1f::TASKS => "tasks",
            v1f::BLKIO_OPS => "blkio.throttle.io_serviced",
            _ => continue,
        };
        assert_eq!(*f, want);
        assert!(*c <= ctl::TASKS);
    }
    assert_eq!(V2_FILES[v2f::MEM_EVENTS], "memory.events");
    assert_eq!(V2_FILES[v2f::PROCS], "cgroup.procs");
    assert_eq!(V2_FILES[v2f::PSI + 2], "io.pressure");
}

fn val(s: &Scrape, name: &str, id: &str) -> f64 {
    find(s, name, id)
        .unwrap_or_else(|| panic!("{name}{{id={id}}} missing"))
        .1
}

/// A host root whose only hierarchy is cgroup v2; returns its mount.
fn v2_host(h: &Path) -> PathBuf {
    w(
        h,
        "proc/self/mountinfo",
        "35 25 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
    );
    h.join("sys/fs/cgroup")
}

fn v2_cgroup(root: &Path, dir: &str, quota: &str) {
    w(
        root,
        &format!("{dir}/cpu.stat"),
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350000\n",
    );
    w(root, &format!("{dir}/cpu.max"), quota);
    w(root, &format!("{dir}/cpu.weight"), "100\n");
    w(root, &format!("{dir}/memory.current"), "10485760\n");
    w(
        root,
        &format!("{dir}/memory.stat"),
        "anon 4194304\nfile 6291456\nfile_mapped 1048576\ninactive_file 2097152\nactive_file 4194304\n",
    );
    w(root, &format!("{dir}/memory.max"), "67108864\n");
    w(root, &format!("{dir}/memory.swap.current"), "0\n");
    w(
        root,
        &format!("{dir}/memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    w(root, &format!("{dir}/pids.current"), "5\n");
    w(root, &format!("{dir}/cgroup.procs"), "101\n102\n");
    w(
        root,
        &format!("{dir}/io.stat"),
        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    );
    w(
        root,
        &format!("{dir}/cpu.pressure"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n",
    );
}

#[test]
fn cgroup_fixture_v2_kubepods_and_podman() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path();
    let cg = v2_host(h);
    w(
        &cg,
        "cpu.stat",
        "usage_usec 9000000\nuser_usec 6000000\nsystem_usec 3000000\n",
    );
    w(
        &cg,
        "memory.stat",
        "anon 100\nfile 50\nfile_mapped 10\ninactive_file 20\n",
    );
    let u = UID.replace('-', "_");
    let k8s = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
    );
    v2_cgroup(&cg, &k8s, "50000 100000\n");
    let pid2 = ID.replace('0', "f");
    let pod = format!("machine.slice/libpod-{pid2}.scope");
    v2_cgroup(&cg, &pod, "max 100000\n");
    fs::create_dir_all(cg.join(format!("machine.slice/libpod-conmon-{pid2}.scope"))).unwrap();
    fs::create_dir_all(cg.join("system.slice/var-lib.mount")).unwrap();
    fs::create_dir_all(h.join(format!("var/log/pods/prod_web-7d9_{UID}/nginx"))).unwrap();
    w(
        h,
        &format!("var/log/containers/web-7d9_prod_nginx-{ID}.log"),
        "",
    );
    w(
        h,
        "var/lib/containers/storage/overlay-containers/containers.json",
        &format!(
            r#"[{{"id":"{pid2}","names":["db"],"image":"abc","metadata":"{{\"image-name\":\"localhost/bb:1\",\"name\":\"db\"}}"}}]"#
        ),
    );

    let mut r = CgroupReader::new(h);
    let mut s = Scrape::new(1_700_000_000_000);
    let errs = r.scrape(&mut s);
    assert!(errs.is_empty(), "{errs:?}");
    let kid = format!("/{k8s}");
    let (labels, v) = find(&s, "container_cpu_usage_seconds_total", &kid).unwrap();
    assert_eq!(v, 2.5);
    let want: Vec<(String, String)> = [
        ("id", kid.as_str()),
        ("name", ""),
        ("image", ""),
        ("namespace", "prod"),
        ("pod", "web-7d9"),
        ("container", "nginx"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels, want);
    assert_eq!(val(&s, "container_cpu_user_seconds_total", &kid), 2.0);
    assert_eq!(val(&s, "container_cpu_system_seconds_total", &kid), 0.5);
    assert_eq!(val(&s, "container_cpu_cfs_periods_total", &kid), 40.0);
    assert_eq!(
        val(&s, "container_cpu_cfs_throttled_periods_total", &kid),
        7.0
    );
    assert_eq!(
        val(&s, "container_cpu_cfs_throttled_seconds_total", &kid),
        0.35
    );
    assert_eq!(val(&s, "container_spec_cpu_quota", &kid), 50000.0);
    assert_eq!(val(&s, "container_spec_cpu_period", &kid), 100000.0);
    // weight 100 → 2 + 99 * 262142 / 9999, floored (the runc conversion inverted).
    assert_eq!(val(&s, "container_spec_cpu_shares", &kid), 2597.0);
    assert_eq!(val(&s, "container_memory_usage_bytes", &kid), 10485760.0);
    assert_eq!(
        val(&s, "container_memory_working_set_bytes", &kid),
        8388608.0
    );
    assert_eq!(val(&s, "container_memory_rss", &kid), 4194304.0);
    assert_eq!(val(&s, "container_memory_cache", &kid), 6291456.0);
    assert_eq!(val(&s, "container_memory_mapped_file", &kid), 1048576.0);
    assert_eq!(val(&s, "container_memory_failcnt", &kid), 3.0);
    assert_eq!(
        val(&s, "container_spec_memory_limit_bytes", &kid),
        67108864.0
    );
    assert_eq!(val(&s, "container_oom_events_total", &kid), 1.0);
    assert_eq!(val(&s, "container_processes", &kid), 2.0);
    assert_eq!(val(&s, "container_threads", &kid), 5.0);
    assert_eq!(val(&s, "container_fs_reads_bytes_total", &kid), 4096.0);
    assert_eq!(val(&s, "container_fs_writes_total", &kid), 2.0);
    assert_eq!(
        val(&s, "container_pressure_cpu_waiting_seconds_total", &kid),
        1.5
    );
    assert_eq!(
        val(&s, "container_pressure_cpu_stalled_seconds_total", &kid),
        0.5
    );
    assert_eq!(val(&s, "container_last_seen", &kid), 1_700_000_000.0);
    assert!(val(&s, "container_start_time_seconds", &kid) > 1.0e9);

    let pid = format!("/{pod}");
    let (labels, _) = find(&s, "container_memory_usage_bytes", &pid).unwrap();
    assert_eq!(labels[1], ("name".into(), "db".into()));
    assert_eq!(labels[2], ("image".into(), "localhost/bb:1".into()));
    assert!(
        find(&s, "container_cpu_cfs_periods_total", &pid).is_none(),
        "no quota, no cfs figures"
    );
    assert!(find(&s, "container_spec_cpu_quota", &pid).is_none());
    // Root for machine totals; non-container cgroups and conmon are not reported.
    assert_eq!(val(&s, "container_cpu_usage_seconds_total", "/"), 9.0);
    assert_eq!(val(&s, "container_memory_working_set_bytes", "/"), 130.0);
    let ids: BTreeSet<String> = s
        .families
        .iter()
        .flat_map(|f| f.samples.iter())
        .filter_map(|x| {
            x.labels
                .iter()
                .find(|(k, _)| k == "id")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(
        ids,
        ["/".to_string(), kid.clone(), pid.clone()]
            .into_iter()
            .collect()
    );
    assert_eq!(r.cached(), 2);

    // A broken file skips that figure with an error; a vanished cgroup drops its cache entry.
    fs::write(cg.join(&k8s).join("memory.current"), "12ab").unwrap();
    // a limit written by the runtime is seen at the next scrape
    fs::write(cg.join(&k8s).join("memory.max"), "33554432\n").unwrap();
    fs::remove_dir_all(cg.join("machine.slice")).unwrap();
    let mut s = Scrape::new(1);
    let errs = r.scrape(&mut s);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].to_string().contains("memory.current"));
    assert!(find(&s, "container_memory_usage_bytes", &kid).is_none());
    assert_eq!(val(&s, "container_memory_rss", &kid), 4194304.0);
    assert_eq!(
        val(&s, "container_spec_memory_limit_bytes", &kid),
        33554432.0
    );
    assert!(find(&s, "container_memory_rss", &pid).is_none());
    assert_eq!(r.cached(), 1);
}

#[test]
fn cgroup_fixture_v1_cgroupfs() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path();
    w(
        h,
        "proc/1/mountinfo",
        "\
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio
",
    );
    let rel = format!("kubepods/burstable/pod{UID}/{ID}");
    let cpu = h.join("sys/fs/cgroup/cpu,cpuacct").join(&rel);
    let mem = h.join("sys/fs/cgroup/memory").join(&rel);
    let blk = h.join("sys/fs/cgroup/blkio").join(&rel);
    w(&cpu, "cpuacct.usage", "3000000000\n");
    w(&cpu, "cpuacct.stat", "user 200\nsystem 100\n");
    w(&cpu, "cpu.shares", "512\n");
    w(&cpu, "cpu.cfs_period_us", "100000\n");
    w(&cpu, "cpu.cfs_quota_us", "-1\n");
    w(
        &cpu,
        "cpu.stat",
        "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
    );
    w(&cpu, "cgroup.procs", "7\n");
    w(&cpu, "tasks", "7\n8\n9\n");
    w(&mem, "memory.usage_in_bytes", "1000\n");
    w(
        &mem,
        "memory.stat",
        "cache 1\nrss 2\ntotal_cache 600\ntotal_rss 300\ntotal_mapped_file 50\ntotal_inactive_file 1200\ntotal_swap 0\n",
    );
    w(&mem, "memory.failcnt", "0\n");
    w(&mem, "memory.limit_in_bytes", "9223372036854771712\n");
    w(
        &mem,
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    w(
        &blk,
        "blkio.throttle.io_service_bytes",
        "8:0 Read 100\n8:0 Write 50\n8:0 Total 150\nTotal 150\n",
    );
    w(
        &blk,
        "blkio.throttle.io_serviced",
        "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
    );
    fs::create_dir_all(h.join(format!("var/log/pods/kube-system_dns-1_{UID}/coredns"))).unwrap();
    let did = ID.replace('a', "d");
    let dcpu = h.join("sys/fs/cgroup/cpu,cpuacct/docker").join(&did);
    w(&dcpu, "cpuacct.usage", "1500000000\n");
    w(
        h,
        &format!("var/lib/docker/containers/{did}/config.v2.json"),
        r#"{"Name":"/redis","Config":{"Image":"redis:7","Env":["SECRET=x"]}}"#,
    );
    let mut r = CgroupReader::new(h);
    let mut s = Scrape::new(0);
    let errs = r.scrape(&mut s);
    // The root has no files in this fixture: its figures are errors, not panics.
    assert!(
        errs.iter().all(|e| !e.to_string().contains(&rel)),
        "{errs:?}"
    );
    let id = format!("/{rel}");
    let (labels, v) = find(&s, "container_cpu_usage_seconds_total", &id).unwrap();
    assert_eq!(v, 3.0);
    assert_eq!(labels[3], ("namespace".into(), "kube-system".into()));
    assert_eq!(labels[4], ("pod".into(), "dns-1".into()));
    assert_eq!(val(&s, "container_cpu_user_seconds_total", &id), 2.0);
    assert_eq!(val(&s, "container_spec_cpu_shares", &id), 512.0);
    assert!(find(&s, "container_spec_cpu_quota", &id).is_none());
    assert!(find(&s, "container_cpu_cfs_periods_total", &id).is_none());
    assert_eq!(val(&s, "container_memory_working_set_bytes", &id), 0.0);
    assert_eq!(val(&s, "container_memory_rss", &id), 300.0);
    assert_eq!(val(&s, "container_spec_memory_limit_bytes", &id), 0.0);
    assert_eq!(val(&s, "container_oom_events_total", &id), 2.0);
    assert_eq!(val(&s, "container_processes", &id), 1.0);
    assert_eq!(val(&s, "container_threads", &id), 3.0);
    assert_eq!(val(&s, "container_fs_reads_bytes_total", &id), 100.0);
    assert_eq!(val(&s, "container_fs_writes_total", &id), 2.0);
    let (labels, v) = find(
        &s,
        "container_cpu_usage_seconds_total",
        &format!("/docker/{did}"),
    )
    .unwrap();
    assert_eq!(v, 1.5);
    assert_eq!(labels[1], ("name".into(), "redis".into()));
    assert_eq!(labels[2], ("image".into(), "redis:7".into()));
    assert!(
        labels
            .iter()
            .all(|(k, v)| k != "SECRET" && !v.contains("SECRET"))
    );
}

#[test]
fn cgroup_kmsg_oom_record() {
    let rec = format!(
        "6,1234,5678901,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/libpod_parent/libpod-{ID},task_memcg=/libpod_parent/libpod-{ID},task=sh,pid=4242,uid=0\n"
    );
    let k = kmsg::parse_record(&rec).unwrap();
    assert_eq!(k.task_memcg, format!("/libpod_parent/libpod-{ID}"));
    assert_eq!((k.task.as_str(), k.pid.as_str()), ("sh", "4242"));
    assert_eq!(
        kmsg::parse_record("6,1,2,-;Memory cgroup out of memory: Killed process 1"),
        None
    );
    assert_eq!(kmsg::parse_record("garbage"), None);
}

#[test]
fn runtime_and_qos_from_paths() {
    let id = "a".repeat(64);
    for (path, rt, qos) in [
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{id}.scope"
            ),
            "containerd",
            "Burstable",
        ),
        (
            format!("/kubepods/besteffort/pod1/{id}"),
            "cri",
            "BestEffort",
        ),
        (
            format!("/kubepods/pod1/crio-{id}.scope"),
            "cri-o",
            "Guaranteed",
        ),
        (format!("/system.slice/docker-{id}.scope"), "docker", ""),
        (format!("/docker/{id}"), "docker", ""),
        (format!("/libpod_parent/libpod-{id}"), "podman", ""),
        (format!("/machine.slice/libpod-{id}.scope"), "podman", ""),
    ] {
        assert_eq!(runtime_of(&path), rt, "{path}");
        assert_eq!(qos_of(&path), qos, "{path}");
    }
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn cgroup_churn_hundreds_of_pods_nothing_kept_for_gone_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path();
    let cg = v2_host(h);
    w(
        &cg,
        "cpu.stat",
        "usage_usec 1\nuser_usec 1\nsystem_usec 0\n",
    );
    let container = |pod: usize, c: usize, g: usize| {
        let uid = format!("{pod:08x}_aaaa_bbbb_cccc_{pod:012x}");
        let id = format!("{:064x}", pod * 1000 + c * 100 + g);
        (
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"),
            format!("cri-containerd-{id}.scope"),
        )
    };
    let pods = 200;
    for p in 0..pods {
        for c in 0..2 {
            let (pod, ctr) = container(p, c, 0);
            v2_cgroup(&cg, &format!("{pod}/{ctr}"), "max 100000\n");
        }
    }
    // a Kubernetes node: no swap, so `memory.swap.current` is never read
    w(
        h,
        "proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
    );
    let mut r = CgroupReader::new(h);
    let mut s = Scrape::new(1);
    assert!(r.scrape(&mut s).is_empty());
    assert_eq!(r.cached(), pods * 2);
    let swap = &s
        .families
        .iter()
        .find(|f| f.name == "container_memory_swap")
        .unwrap()
        .samples;
    assert_eq!(swap.len(), pods * 2);
    assert!(swap.iter().all(|x| x.value == 0.0));
    let fds_steady = open_fds();
    let files_steady = r.open_files();
    // 12 files in the fixture, 4 of them re-read only when written, and
    // memory.swap.current not read
    assert!(
        files_steady >= pods * 2 * 7,
        "files are held open: {files_steady}"
    );
    // 10 rounds: a third of the pods replace their containers each round
    let mut generation = vec![0usize; pods];
    for round in 1..=10 {
        for p in (round % 3..pods).step_by(3) {
            for c in 0..2 {
                let (pod, old) = container(p, c, generation[p]);
                let (_, new) = container(p, c, round);
                fs::remove_dir_all(cg.join(&pod).join(&old)).unwrap();
                v2_cgroup(&cg, &format!("{pod}/{new}"), "max 100000\n");
            }
            generation[p] = round;
        }
        let mut s = Scrape::new(1 + round as i64);
        let errs = r.scrape(&mut s);
        assert!(errs.is_empty(), "round {round}: {errs:?}");
        let ids: BTreeSet<String> = s
            .families
            .iter()
            .find(|f| f.name == "container_cpu_usage_seconds_total")
            .unwrap()
            .samples
            .iter()
            .map(|x| x.labels[0].1.clone())
            .collect();
        let on_disk = fs::read_dir(cg.join("kubepods.slice/kubepods-burstable.slice"))
            .unwrap()
            .flatten()
            .map(|pd| {
                fs::read_dir(pd.path())
                    .unwrap()
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .sum::<usize>();
        assert_eq!(
            ids.len(),
            on_disk + 1,
            "round {round}: every container once, plus /"
        );
        assert_eq!(r.cached(), on_disk, "round {round}");
    }
    // what is tracked and held open follows the live containers, not history
    let live = r.cached();
    assert_eq!(live, pods * 2);
    assert_eq!(
        r.open_files(),
        files_steady,
        "files of gone containers are closed"
    );
    assert!(
        open_fds() <= fds_steady + 16,
        "descriptors leak: {} now, {fds_steady} before",
        open_fds()
    );
    let (watches, walks, degraded) = r.discovery();
    assert_eq!(walks, 1, "followed by inotify, not by walking");
    assert!(degraded.is_none());
    assert!(watches > live, "{watches}");
}
