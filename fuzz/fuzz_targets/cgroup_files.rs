//! cgroup files as the agent reads them, through the real reader
//! (`CgroupReader::scrape`: mount discovery from mountinfo, layout and
//! identity from the paths, every per-controller file) over two fixture
//! host roots, one cgroup v2 (a Kubernetes pod and a Podman container) and
//! one v1 (cgroupfs layout). The first byte picks the root and the file
//! the rest replaces; the parsers of `cgroup::parse` and the path
//! identification also get the rest directly.
//! Property: no panic (a malformed file is an error of that figure).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vigil_agent::cgroup::{CgroupReader, kmsg, parse};
use vigil_agent::model::Scrape;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const UID: &str = "5f1c2d3e-aaaa-bbbb-cccc-0123456789ab";

struct Root {
    dir: tempfile::TempDir,
    files: Vec<(PathBuf, String)>,
}

fn build(files: Vec<(String, String)>) -> Root {
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|(rel, text)| (dir.path().join(rel), text))
        .collect();
    for (p, text) in &files {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    Root { dir, files }
}

fn v2() -> Vec<(String, String)> {
    let u = UID.replace('-', "_");
    let k8s = format!(
        "sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
    );
    let pod = format!(
        "sys/fs/cgroup/machine.slice/libpod-{}.scope",
        ID.replace('0', "f")
    );
    let mut v = vec![(
        "proc/self/mountinfo".to_string(),
        "35 25 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
            .to_string(),
    )];
    for (dir, quota) in [(k8s, "50000 100000\n"), (pod, "max 100000\n")] {
        for (f, t) in [
            (
                "cpu.stat",
                "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350000\n",
            ),
            ("cpu.max", quota),
            ("cpu.weight", "100\n"),
            ("memory.current", "10485760\n"),
            (
                "memory.stat",
                "anon 4194304\nfile 6291456\nfile_mapped 1048576\ninactive_file 2097152\nactive_file 4194304\n",
            ),
            ("memory.max", "67108864\n"),
            ("memory.swap.current", "0\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            ("pids.current", "5\n"),
            ("cgroup.procs", "101\n102\n"),
            (
                "io.stat",
                "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
            ),
            (
                "cpu.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n",
            ),
            (
                "memory.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
            ),
            (
                "io.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=3\n",
            ),
        ] {
            v.push((format!("{dir}/{f}"), t.to_string()));
        }
    }
    v
}

fn v1() -> Vec<(String, String)> {
    let rel = format!("kubepods/burstable/pod{UID}/{ID}");
    let cpu = format!("sys/fs/cgroup/cpu,cpuacct/{rel}");
    let mem = format!("sys/fs/cgroup/memory/{rel}");
    let blk = format!("sys/fs/cgroup/blkio/{rel}");
    let mut v = vec![(
        "proc/1/mountinfo".to_string(),
        "30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n31 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n32 25 0:29 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n".to_string(),
    )];
    for (d, f, t) in [
        (&cpu, "cpuacct.usage", "3000000000\n"),
        (&cpu, "cpuacct.stat", "user 200\nsystem 100\n"),
        (&cpu, "cpu.shares", "512\n"),
        (&cpu, "cpu.cfs_period_us", "100000\n"),
        (&cpu, "cpu.cfs_quota_us", "-1\n"),
        (
            &cpu,
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 300\n",
        ),
        (&cpu, "cgroup.procs", "7\n"),
        (&cpu, "tasks", "7\n8\n9\n"),
        (&mem, "memory.usage_in_bytes", "1000\n"),
        (
            &mem,
            "memory.stat",
            "cache 1\nrss 2\ntotal_cache 600\ntotal_rss 300\ntotal_mapped_file 50\ntotal_inactive_file 1200\ntotal_swap 0\n",
        ),
        (&mem, "memory.failcnt", "0\n"),
        (&mem, "memory.limit_in_bytes", "9223372036854771712\n"),
        (
            &mem,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ),
        (
            &blk,
            "blkio.throttle.io_service_bytes",
            "8:0 Read 100\n8:0 Write 50\n8:0 Total 150\nTotal 150\n",
        ),
        (
            &blk,
            "blkio.throttle.io_serviced",
            "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
        ),
    ] {
        v.push((format!("{d}/{f}"), t.to_string()));
    }
    v
}

fn roots() -> &'static [Root; 2] {
    static R: OnceLock<[Root; 2]> = OnceLock::new();
    R.get_or_init(|| [build(v2()), build(v1())])
}

fn scrape(host: &Path) {
    let mut r = CgroupReader::new(host);
    let mut s = Scrape::new(1_700_000_000_000);
    let _ = r.scrape(&mut s);
    let _ = r.scrape(&mut s);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = parse::number(rest);
    let _ = parse::pick(
        rest,
        ["usage_usec", "nr_throttled", "total_rss", "oom_kill"],
    );
    let _ = parse::io_stat(rest);
    let _ = parse::blkio(rest);
    let _ = parse::psi_totals(rest);
    let _ = parse::cpu_max(rest);
    let _ = parse::pids(rest);
    let _ = parse::count_lines(rest);
    let _ = kmsg::parse_record(&text);

    let root = &roots()[usize::from(sel & 1)];
    let (path, original) = &root.files[usize::from(sel >> 1) % root.files.len()];
    std::fs::write(path, rest).expect("write fixture");
    scrape(root.dir.path());
    let reader = CgroupReader::new(root.dir.path());
    let _ = reader.labels_for(&text);
    std::fs::write(path, original).expect("restore fixture");
});
