//! Scrape cost (a bench binary, `cargo bench -p vigil-agent --bench scrape`):
//!
//! 1. a cgroup v2 fixture tree of 1,000 Kubernetes containers (real file
//!    formats, 250 pods × 4 containers) plus this host's node files and
//!    processes: CPU time of one full scrape (target ≤ 20 ms), the cgroup
//!    reader's share, and the cgroup reader with no file held open;
//! 2. the cgroup reader on this kernel's real cgroupfs with 1,000 empty
//!    container-like cgroups (when run as root);
//! 3. on this host, the agent's CPU per exported sample against
//!    `prometheus-node-exporter` in the same run (node_exporter scraped over
//!    HTTP, its CPU read from `/proc/<pid>/stat`; target: ours ≤ half);
//! 4. steady-state RSS of `vigil-agent run` (release binary from
//!    `target/release`, shipping to a release collector every second for
//!    30 s; target ≤ 20 MiB).

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_agent::cgroup::CgroupReader;
use vigil_agent::model::Scrape;
use vigil_agent::node::NodeReader;
use vigil_agent::procs::{ProcessFilter, ProcessReader};

fn w(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(p, text).expect("write");
}

/// USER_HZ ticks of (utime, stime) of a process or this thread.
fn cpu_ticks(stat: &Path) -> f64 {
    let s = std::fs::read_to_string(stat).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    t(11) + t(12)
}

fn fixture(root: &Path, containers: usize) {
    w(
        root,
        "proc/self/mountinfo",
        "35 25 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
    );
    // a Kubernetes node: no swap (the kubelet's default)
    w(
        root,
        "proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
    );
    let cg = root.join("sys/fs/cgroup");
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
    for i in 0..containers {
        let pod = format!("{:08x}_aaaa_bbbb_cccc_{:012x}", i / 4, i / 4);
        let id = format!("{:064x}", i as u128 * 7919 + 1);
        let rel = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/cri-containerd-{id}.scope"
        );
        let d = cg.join(&rel);
        w(
            &d,
            "cpu.stat",
            &format!(
                "usage_usec {}\nuser_usec {}\nsystem_usec {}\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350000\n",
                1000 + i,
                700 + i,
                300
            ),
        );
        w(&d, "cpu.max", "50000 100000\n");
        w(&d, "cpu.weight", "39\n");
        w(&d, "memory.current", "52428800\n");
        w(&d, "memory.max", "268435456\n");
        w(&d, "memory.swap.current", "0\n");
        w(
            &d,
            "memory.stat",
            "anon 41943040\nfile 10485760\nkernel 1048576\nfile_mapped 2097152\nfile_dirty 0\nfile_writeback 0\nshmem 0\ninactive_anon 0\nactive_anon 41943040\ninactive_file 5242880\nactive_file 5242880\nunevictable 0\npgfault 12345\npgmajfault 3\n",
        );
        w(
            &d,
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        );
        w(&d, "pids.current", "3\n");
        w(&d, "cgroup.procs", "");
        w(
            &d,
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        w(
            &d,
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n",
        );
        w(
            &d,
            "memory.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=50\n",
        );
        w(
            &d,
            "io.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=50\n",
        );
    }
}

/// CPU seconds of this whole process (every thread, the statvfs helpers too).
fn cpu_now() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Median over `batches` of the CPU milliseconds per call of `f`, run `runs` times per batch.
fn median_ms(batches: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..batches)
        .map(|_| {
            let t0 = cpu_now();
            for _ in 0..runs {
                f();
            }
            (cpu_now() - t0) * 1000.0 / runs as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fixture_scrape_cost() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path(), 1000);
    let mut cg = CgroupReader::new(dir.path());
    let node = NodeReader::new(Path::new("/"));
    let mut procs = ProcessReader::new(Path::new("/"), ProcessFilter::default());
    // warm: metadata cache, page cache
    for _ in 0..3 {
        let mut s = Scrape::new(0);
        cg.scrape(&mut s);
    }
    let cg_ms = median_ms(7, 20, || {
        let _ = cg.scrape(&mut Scrape::new(0));
    });
    println!(
        "  of which the cgroup reader alone: {cg_ms:.1} ms CPU per scrape (median of 7 batches of 20)"
    );
    // the same with no file held open (--cgroup-open-files 0)
    let mut closed = CgroupReader::with_open_files(dir.path(), 0);
    for _ in 0..3 {
        closed.scrape(&mut Scrape::new(0));
    }
    let closed_ms = median_ms(3, 10, || {
        let _ = closed.scrape(&mut Scrape::new(0));
    });
    println!(
        "  the cgroup reader with --cgroup-open-files 0 (every file opened per read): {closed_ms:.1} ms CPU per scrape"
    );
    drop(closed);
    let mut samples = 0;
    let w0 = Instant::now();
    let cpu_ms = median_ms(7, 20, || {
        let mut s = Scrape::new(0);
        let _ = node.scrape(&mut s);
        let _ = cg.scrape(&mut s);
        let cgr = &cg;
        let _ = procs.scrape(&mut s, &|p| cgr.labels_for(p));
        samples = s.sample_count();
    });
    let wall_ms = w0.elapsed().as_secs_f64() * 1000.0 / 140.0;
    println!(
        "1,000 fixture containers + this host's node files and processes: {cpu_ms:.1} ms CPU per full scrape (median of 7 batches of 20; {wall_ms:.1} ms wall on average), {samples} samples"
    );
}

/// The cgroup reader on this kernel's real cgroupfs: `n` container-like
/// cgroups (`/vigil-bench/<64-hex id>`) made in every hierarchy the reader
/// reads, then removed. Needs root; skipped otherwise.
fn real_cgroupfs_cost(n: usize) {
    let h = match vigil_agent::cgroup::Hierarchies::discover(Path::new("/")) {
        Ok(h) => h,
        Err(e) => {
            println!("real cgroupfs skipped: {e}");
            return;
        }
    };
    let mut roots: Vec<PathBuf> = if h.v1.contains_key("memory") {
        ["memory", "cpu", "cpuacct", "pids", "blkio"]
            .iter()
            .filter_map(|c| h.v1.get(*c).cloned())
            .collect()
    } else {
        h.v2.iter().cloned().collect()
    };
    roots.sort();
    roots.dedup();
    let base: Vec<PathBuf> = roots.iter().map(|r| r.join("vigil-bench")).collect();
    if base.iter().any(|b| std::fs::create_dir_all(b).is_err()) {
        println!("real cgroupfs skipped: cannot make cgroups (not root?)");
        return;
    }
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{:064x}", i as u128 * 104729 + 7))
        .collect();
    for b in &base {
        for id in &ids {
            let _ = std::fs::create_dir(b.join(id));
        }
    }
    let mut cg = CgroupReader::new(Path::new("/"));
    for _ in 0..3 {
        cg.scrape(&mut Scrape::new(0));
    }
    let mut samples = 0;
    let ms = median_ms(5, 10, || {
        let mut s = Scrape::new(0);
        let _ = cg.scrape(&mut s);
        samples = s.sample_count();
    });
    let open = cg.open_files();
    drop(cg);
    println!(
        "real cgroupfs ({}), {n} empty container cgroups: cgroup reader {ms:.1} ms CPU per scrape, {samples} samples, {open} files held open",
        if h.v1.contains_key("memory") {
            "v1"
        } else {
            "v2"
        }
    );
    for b in &base {
        for id in &ids {
            let _ = std::fs::remove_dir(b.join(id));
        }
        let _ = std::fs::remove_dir(b);
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut b = String::new();
    s.read_to_string(&mut b).expect("read");
    b.split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn against_node_exporter() {
    let ne = "/usr/bin/prometheus-node-exporter";
    if !Path::new(ne).exists() {
        println!("node_exporter comparison skipped: {ne} missing");
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(ne)
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node_exporter");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs = 30;
    let _ = http_get(&addr, "/metrics");
    let stat = PathBuf::from(format!("/proc/{}/stat", child.id()));
    let t0 = cpu_ticks(&stat);
    let mut their_samples = 0;
    for _ in 0..runs {
        let body = http_get(&addr, "/metrics");
        their_samples = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
    }
    let theirs = (cpu_ticks(&stat) - t0) * 10.0 / runs as f64;
    let _ = child.kill();
    let _ = child.wait();

    let mut cg = CgroupReader::new(Path::new("/"));
    let node = NodeReader::new(Path::new("/"));
    let mut procs = ProcessReader::new(Path::new("/"), ProcessFilter::default());
    let mut our_samples = 0;
    let t0 = cpu_now();
    for _ in 0..runs {
        let mut s = Scrape::new(0);
        let _ = node.scrape(&mut s);
        let _ = cg.scrape(&mut s);
        let cgr = &cg;
        let _ = procs.scrape(&mut s, &|p| cgr.labels_for(p));
        // the exposition too, as node_exporter's figure includes it
        let text = s.encode_text(Some("bench"));
        our_samples = s.sample_count();
        std::hint::black_box(text);
    }
    let ours = (cpu_now() - t0) * 1000.0 / runs as f64;
    println!(
        "this host, per scrape: vigil {ours:.1} ms CPU for {our_samples} samples ({:.1} µs/sample); node_exporter {theirs:.1} ms CPU for {their_samples} samples ({:.1} µs/sample)",
        ours * 1000.0 / our_samples.max(1) as f64,
        theirs * 1000.0 / their_samples.max(1) as f64
    );
}

fn steady_rss() {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let agent = target.join("release/vigil-agent");
    let collector = target.join("release/vigil-collector");
    if !agent.exists() || !collector.exists() {
        println!("RSS skipped: build the release binaries first (cargo build --release --bins)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (hp, gp) = (free_port(), free_port());
    let mut c = Command::new(&collector)
        .args([
            "--http-listen",
            &format!("127.0.0.1:{hp}"),
            "--grpc-listen",
            &format!("127.0.0.1:{gp}"),
            "--data-dir",
            &dir.path().join("c").display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("collector");
    let mut a = Command::new(&agent)
        .args([
            "--collector",
            &format!("http://127.0.0.1:{gp}"),
            "--interval",
            "1s",
            "--http-listen",
            "off",
            "--state-dir",
            &dir.path().join("a").display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent");
    std::thread::sleep(Duration::from_secs(30));
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.id())).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    println!(
        "vigil-agent run, 1 s interval, after 30 s: RSS {:.1} MiB (peak {:.1} MiB)",
        field("VmRSS:"),
        field("VmHWM:")
    );
    let _ = a.kill();
    let _ = a.wait();
    let _ = c.kill();
    let _ = c.wait();
}

/// `--profile-cgroup [--full]`: the cgroup reader (with `--full`: the whole
/// scrape) on the fixture, for 10 s (to run under `perf record`).
fn profile_cgroup() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path(), 1000);
    let mut cg = CgroupReader::new(dir.path());
    let mut s = Scrape::new(0);
    cg.scrape(&mut s);
    let full = std::env::args().any(|a| a == "--full");
    let node = NodeReader::new(Path::new("/"));
    let mut procs = ProcessReader::new(Path::new("/"), ProcessFilter::default());
    eprintln!("fixture ready");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let mut s = Scrape::new(0);
        if full {
            let _ = node.scrape(&mut s);
        }
        std::hint::black_box(cg.scrape(&mut s));
        if full {
            let cgr = &cg;
            let _ = procs.scrape(&mut s, &|p| cgr.labels_for(p));
        }
    }
}

/// `--profile-host`: the full scrape of this host, for 10 s (to run under `perf record`).
fn profile_host() {
    let mut cg = CgroupReader::new(Path::new("/"));
    let node = NodeReader::new(Path::new("/"));
    let mut procs = ProcessReader::new(Path::new("/"), ProcessFilter::default());
    eprintln!("ready");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let mut s = Scrape::new(0);
        let _ = node.scrape(&mut s);
        let _ = cg.scrape(&mut s);
        let cgr = &cg;
        let _ = procs.scrape(&mut s, &|p| cgr.labels_for(p));
        std::hint::black_box(s.encode_text(Some("bench")));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "--profile-host") {
        profile_host();
        return;
    }
    if std::env::args().any(|a| a == "--profile-cgroup") {
        profile_cgroup();
        return;
    }
    fixture_scrape_cost();
    real_cgroupfs_cost(1000);
    against_node_exporter();
    steady_rss();
}
