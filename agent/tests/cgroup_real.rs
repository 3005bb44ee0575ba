//! Real-kernel tests of the cgroup reader: a cgroup v1 kubepods layout made
//! with mkdir with a CPU-burning child moved in, and a real podman container.
//! Both skip with a printed reason when root, v1 or podman is missing.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use vigil_agent::cgroup::{CgroupReader, Hierarchies};
use vigil_agent::model::Scrape;

type Found = (Vec<(String, String)>, f64);

fn value(s: &Scrape, name: &str, label: &str, want: &str) -> Option<Found> {
    s.families
        .iter()
        .find(|f| f.name == name)?
        .samples
        .iter()
        .find(|x| x.labels.iter().any(|(k, v)| k == label && v == want))
        .map(|x| (x.labels.to_vec(), x.value))
}

use vigil_common::time::now_ms;

/// Kills the child and removes the cgroups bottom-up, whatever happened.
struct Guard {
    child: Option<Child>,
    /// (hierarchy root, relative path) pairs to remove up to the root.
    dirs: Vec<(PathBuf, String)>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (root, rel) in &self.dirs {
            let parts: Vec<&str> = rel.split('/').collect();
            // Deepest first; a short retry while the kernel frees the task.
            for n in (1..=parts.len()).rev() {
                let p = root.join(parts[..n].join("/"));
                for _ in 0..40 {
                    if !p.exists() || fs::remove_dir(&p).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
        }
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn cgroup_real_v1_cpu_usage_matches_cpuacct() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let h = match Hierarchies::discover(Path::new("/")) {
        Ok(h) => h,
        Err(e) => return eprintln!("skipping: {e}"),
    };
    let (Some(acct), Some(mem)) = (h.v1.get("cpuacct").cloned(), h.v1.get("memory").cloned())
    else {
        return eprintln!("skipping: no cgroup v1 cpuacct/memory");
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let id = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    // A unique top level keeps parallel runs and a real kubelet apart.
    let top = format!("kubepods-vigil-{:08x}", rand::random::<u32>());
    let rel = format!("{top}/kubepods/burstable/pod{uid}/{id}");
    let mut roots = vec![acct.clone()];
    for r in [Some(&mem), h.v1.get("cpu")].into_iter().flatten() {
        if !roots.contains(r) {
            roots.push(r.clone());
        }
    }
    let mut guard = Guard {
        child: None,
        dirs: roots.iter().map(|r| (r.clone(), rel.clone())).collect(),
    };
    for r in &roots {
        fs::create_dir_all(r.join(&rel)).expect("mkdir cgroup");
    }
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spawn");
    let pid = child.id();
    guard.child = Some(child);
    for r in &roots {
        fs::write(r.join(&rel).join("cgroup.procs"), pid.to_string()).expect("move pid");
    }
    let mut r = CgroupReader::new(Path::new("/"));
    let cid = format!("/{rel}");
    std::thread::sleep(Duration::from_millis(1000));
    let mut first = Scrape::new(now_ms());
    let _ = r.scrape(&mut first);
    std::thread::sleep(Duration::from_millis(1000));
    let mut s = Scrape::new(now_ms());
    let _ = r.scrape(&mut s);
    let truth = fs::read_to_string(acct.join(&rel).join("cpuacct.usage")).expect("read usage");
    let truth: f64 = truth.trim().parse::<f64>().expect("usage number") / 1e9;
    let (labels, got) =
        value(&s, "container_cpu_usage_seconds_total", "id", &cid).expect("series present");
    let (_, got1) =
        value(&first, "container_cpu_usage_seconds_total", "id", &cid).expect("series present");
    eprintln!("scrape1={got1} scrape2={got} cpuacct.usage={truth}");
    assert!(got > got1, "counter advances");
    assert!(truth > 0.5, "child burned CPU: {truth}");
    assert!(
        (got - truth).abs() / truth < 0.02,
        "got {got}, cpuacct {truth}"
    );
    let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["id", "name", "image", "namespace", "pod", "container"]
    );
    let (_, procs) = value(&s, "container_processes", "id", &cid).expect("processes");
    assert_eq!(procs, 1.0);
    drop(guard);
    for r in &roots {
        assert!(!r.join(&top).exists(), "{} removed", r.join(&top).display());
    }
}

struct Podman {
    name: String,
    dir: tempfile::TempDir,
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .current_dir(self.dir.path())
            .output();
    }
}

#[test]
fn cgroup_real_podman_container_named_with_limit() {
    if Command::new("podman").arg("--version").output().is_err() {
        return eprintln!("skipping: podman missing");
    }
    let p = Podman {
        name: format!("vigil-m-{:08x}", rand::random::<u32>()),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let out = Command::new("podman")
        .args([
            "run",
            "-d",
            "--name",
            &p.name,
            "--memory",
            "64m",
            "localhost/bb:1",
            "sleep",
            "300",
        ])
        .current_dir(p.dir.path())
        .output()
        .expect("podman run");
    if !out.status.success() {
        return eprintln!(
            "skipping: podman run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r = CgroupReader::new(Path::new("/"));
    let mut s = Scrape::new(now_ms());
    let errs = r.scrape(&mut s);
    let (labels, limit) = value(&s, "container_spec_memory_limit_bytes", "name", &p.name)
        .unwrap_or_else(|| panic!("no series for {} (errors {errs:?})", p.name));
    assert_eq!(limit, 67108864.0);
    let image = labels
        .iter()
        .find(|(k, _)| k == "image")
        .map(|(_, v)| v.as_str());
    assert_eq!(image, Some("localhost/bb:1"));
    let id = labels
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(id.contains("libpod-"), "{id}");
    let (_, usage) = value(&s, "container_memory_usage_bytes", "name", &p.name).expect("usage");
    assert!(usage > 0.0 && usage < 67108864.0, "{usage}");
    // /proc side: its open fds, and its own network namespace's interface
    let (_, fds) = value(&s, "container_file_descriptors", "name", &p.name).expect("fds");
    assert!(fds >= 1.0, "{fds}");
    let (net, _) = value(&s, "container_network_receive_bytes_total", "name", &p.name)
        .unwrap_or_else(|| panic!("no network series for {} (errors {errs:?})", p.name));
    assert!(
        net.iter().any(|(k, v)| k == "interface" && v == "eth0"),
        "{net:?}"
    );
    let (info, _) = value(&s, "container_info", "name", &p.name).expect("container_info");
    assert!(
        info.iter().any(|(k, v)| k == "runtime" && v == "podman"),
        "{info:?}"
    );
    // /proc processes are attributed to the container by their cgroup
    let mut pr = vigil_agent::procs::ProcessReader::new(
        Path::new("/"),
        vigil_agent::procs::ProcessFilter::default(),
    );
    let mut s2 = Scrape::new(now_ms());
    pr.scrape(&mut s2, &|path| r.labels_for(path));
    let (_, n) = value(&s2, "vigil_container_processes", "name", &p.name).expect("processes");
    assert_eq!(n, 1.0, "one sleep process");
}

#[test]
fn cgroup_real_v1_oom_kill_counted_and_logged() {
    if !is_root() {
        return eprintln!("skipping: needs root");
    }
    let Ok(h) = Hierarchies::discover(Path::new("/")) else {
        return eprintln!("skipping: no mountinfo");
    };
    let Some(mem) = h.v1.get("memory").cloned() else {
        return eprintln!("skipping: no cgroup v1 memory");
    };
    if !Path::new("/dev/kmsg").exists() {
        return eprintln!("skipping: no /dev/kmsg");
    }
    let id = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let top = format!("kubepods-vigil-{:08x}", rand::random::<u32>());
    let rel = format!("{top}/kubepods/besteffort/pod{}/{id}", uuid::Uuid::new_v4());
    let mut guard = Guard {
        child: None,
        dirs: vec![(mem.clone(), rel.clone())],
    };
    let dir = mem.join(&rel);
    fs::create_dir_all(&dir).expect("mkdir cgroup");
    fs::write(dir.join("memory.limit_in_bytes"), "16777216").expect("limit");
    if dir.join("memory.memsw.limit_in_bytes").exists() {
        fs::write(dir.join("memory.memsw.limit_in_bytes"), "16777216").expect("memsw limit");
    }
    let mut r = CgroupReader::new(Path::new("/"));
    let mut s = Scrape::new(now_ms());
    let _ = r.scrape(&mut s);
    // The shell sleeps while it is moved, then doubles a string until killed.
    let child = Command::new("sh")
        .args(["-c", "sleep 0.3; x=a; while :; do x=$x$x; done"])
        .spawn()
        .expect("spawn");
    let pid = child.id();
    guard.child = Some(child);
    fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move pid");
    let status = guard.child.as_mut().map(|c| c.wait());
    eprintln!("child ended: {status:?}");
    let cid = format!("/{rel}");
    let mut s = Scrape::new(now_ms());
    let _ = r.scrape(&mut s);
    let (_, ooms) = value(&s, "container_oom_events_total", "id", &cid).expect("oom counter");
    assert_eq!(ooms, 1.0);
    let ev = s
        .events
        .iter()
        .find(|e| e.kind == "oom_kill" && e.subject.iter().any(|(k, v)| k == "id" && *v == cid));
    let ev = ev.unwrap_or_else(|| panic!("no oom_kill event for {cid}: {:?}", s.events));
    assert!(
        ev.attributes
            .contains(&("pid".to_string(), pid.to_string())),
        "{ev:?}"
    );
    drop(guard);
    // the cgroup is gone; the workload's kill count stays
    let mut s = Scrape::new(now_ms());
    let _ = r.scrape(&mut s);
    assert!(value(&s, "container_oom_events_total", "id", &cid).is_none());
    let (_, kills) = value(&s, "vigil_container_oom_kills_total", "name", &cid)
        .expect("workload OOM counter after the cgroup went");
    assert_eq!(kills, 1.0);
    assert!(!mem.join(&top).exists());
}
