//! A real podman container's cgroup metrics carry its name and image.
//! Skips (with a reason) where podman or its `localhost/bb:1` image is missing.

use std::path::Path;
use std::process::Command;

use vigil_agent::cgroup::CgroupReader;
use vigil_agent::model::Scrape;

#[test]
fn podman_container_metrics_carry_name_and_image() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let name = format!("vigil-metrics-t{}", std::process::id());
    let run = Command::new("podman")
        .current_dir(scratch.path())
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "localhost/bb:1",
            "sleep",
            "60",
        ])
        .output();
    let out = match run {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return eprintln!(
                "skip: podman run failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Err(e) => return eprintln!("skip: no podman: {e}"),
    };
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut r = CgroupReader::new(Path::new("/"));
    let mut s = Scrape::new(0);
    r.scrape(&mut s);
    let _ = Command::new("podman")
        .current_dir(scratch.path())
        .args(["rm", "-f", "-t", "0", &name])
        .output();
    let fam = s
        .families
        .iter()
        .find(|f| f.name == "container_memory_usage_bytes")
        .expect("family present");
    let sample = fam
        .samples
        .iter()
        .find(|x| x.labels.iter().any(|(k, v)| k == "id" && v.contains(&id)))
        .unwrap_or_else(|| panic!("no series for container {id}"));
    let get = |k: &str| {
        sample
            .labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("name").as_deref(), Some(name.as_str()));
    assert_eq!(get("image").as_deref(), Some("localhost/bb:1"));
    assert!(sample.value > 0.0);
}
