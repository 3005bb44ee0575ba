//! Cost of one cgroup scrape over a generated cgroup v2 fixture of 1,000
//! containers (Kubernetes systemd layout): CPU time per scrape from
//! /proc/self/stat (utime+stime) over N scrapes, and samples per scrape.
//! Run: `cargo bench -p vigil-agent --bench scrape`.

use std::fs;
use std::path::Path;

use vigil_agent::cgroup::CgroupReader;
use vigil_agent::model::Scrape;

fn cpu_ticks() -> u64 {
    let t = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = t.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat are at 11 and 12 after the `)`.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    fs::create_dir_all(root.join("proc/self")).expect("mkdir");
    fs::write(
        root.join("proc/self/mountinfo"),
        "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    )
    .expect("mountinfo");
    for i in 0..1000u64 {
        let rel = format!(
            "sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{i:032x}.slice/cri-containerd-{i:064x}.scope"
        );
        let d = root.join(rel);
        fs::create_dir_all(&d).expect("mkdir");
        write(
            &d,
            "cpu.stat",
            "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 10\nnr_throttled 2\nthrottled_usec 5000\n",
        );
        write(&d, "cpu.max", "50000 100000\n");
        write(&d, "memory.current", "10485760\n");
        write(&d, "memory.max", "67108864\n");
        write(
            &d,
            "memory.stat",
            "anon 4194304\nfile 6291456\nfile_mapped 1048576\ninactive_file 4194304\n",
        );
        write(
            &d,
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        );
    }
    let mut r = CgroupReader::new(root);
    let mut samples = 0;
    for _ in 0..3 {
        let mut s = Scrape::new(0);
        r.scrape(&mut s);
        samples = s.sample_count();
    }
    let n = 50;
    let t0 = cpu_ticks();
    let w0 = std::time::Instant::now();
    for _ in 0..n {
        let mut s = Scrape::new(0);
        r.scrape(&mut s);
        std::hint::black_box(&s);
    }
    let ms_cpu = (cpu_ticks() - t0) as f64 * 10.0 / n as f64;
    let ms_wall = w0.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let rss = fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("")
        .to_string();
    println!(
        "cgroup scrape, 1000 containers: {ms_cpu:.2} ms CPU/scrape, {ms_wall:.2} ms wall, {samples} samples, {:.2} us CPU/sample, {rss}",
        ms_cpu * 1000.0 / samples.max(1) as f64
    );
}

fn write(d: &Path, f: &str, c: &str) {
    fs::write(d.join(f), c).expect("write fixture");
}
