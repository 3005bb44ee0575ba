//! The shipped documents and assets stay true to the binaries: every flag the
//! binaries accept is in the README's reference (with its environment
//! variable), every flag the Kubernetes manifests and the Helm chart pass
//! exists, and every dashboard query is valid PromQL.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_e2e::bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `--flag` names in a `--help` text.
fn flags(help: &str) -> BTreeSet<String> {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .filter(|w| w != "--help" && w != "--version")
        .collect()
}

fn help(binary: &str, args: &[&str]) -> String {
    let out = Command::new(bin(binary))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_readme_documents_every_flag_and_its_environment_variable() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for b in ["vigil-agent", "vigil-collector"] {
        let h = help(b, &[]);
        let fs = flags(&h);
        assert!(fs.len() > 10, "{b}: too few flags found in --help: {fs:?}");
        for f in &fs {
            assert!(readme.contains(f.as_str()), "README lacks {b} {f}");
        }
        for env in h
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("VIGIL_"))
        {
            assert!(readme.contains(env), "README lacks {b}'s {env}");
        }
    }
}

#[test]
fn deploy_manifests_only_pass_flags_that_exist() {
    let agent = flags(&help("vigil-agent", &[]));
    let collector = flags(&help("vigil-collector", &[]));
    let mut checked = 0;
    for dir in [
        "deploy/kubernetes",
        "deploy/kubernetes/fleet",
        "deploy/helm/vigil/templates",
    ] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for doc in text.split("\n---") {
                let is_agent = doc.contains("vigil-agent\"]") || doc.contains("name: agent");
                let known = if is_agent { &agent } else { &collector };
                for line in doc.lines() {
                    let l = line.trim().trim_start_matches("- ").trim();
                    if let Some(flag) = l
                        .strip_prefix("--")
                        .map(|f| format!("--{}", f.split('=').next().unwrap()))
                    {
                        assert!(
                            known.contains(&flag),
                            "{}: {flag} is not a flag of the {}",
                            p.display(),
                            if is_agent { "agent" } else { "collector" }
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} flags checked");
}

#[test]
fn dashboards_are_valid_json_with_valid_promql() {
    let mut exprs = 0;
    for (file, d) in vigil_e2e::dashboards::load_all() {
        assert!(
            d["uid"].is_string() && d["title"].is_string(),
            "{file}: no uid/title"
        );
        // "All" must not depend on which values exist: with Grafana's default
        // (a regex of the values found) a Docker/Podman host's containers,
        // which have no namespace or pod, would fall out of the selection
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["includeAll"] == true {
                assert!(
                    v["allValue"].is_string(),
                    "{file}: variable {} has \"All\" without allValue",
                    v["name"]
                );
            }
        }
        // Grafana's variables, as Grafana substitutes them for "All"
        let vars = vigil_e2e::dashboards::all_values(
            &d,
            &[
                ("__rate_interval", "1m"),
                ("__interval", "15s"),
                ("__range", "1h"),
            ],
            |q| panic!("{file}: a variable without allValue asks {q}"),
        );
        for q in vigil_e2e::dashboards::queries(&file, &d) {
            let expr = vigil_e2e::dashboards::substitute(&q.expr, &vars);
            if q.loki {
                // LogQL, checked with the collector's own parser
                vigil_collector::logs::logql::parse(&expr)
                    .unwrap_or_else(|e| panic!("{file}: {}: {expr}: {e}", q.panel));
            } else {
                promql_parser::parser::parse(&expr)
                    .unwrap_or_else(|e| panic!("{file}: {}: {expr}: {e}", q.panel));
            }
            exprs += 1;
        }
    }
    assert!(exprs >= 40, "only {exprs} queries found");
}

/// The key paths (`collector.replicas`, …) of a YAML mapping tree.
fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(m) = v.as_object() {
        for (k, v) in m {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.insert(p.clone());
            key_paths(v, &p, out);
        }
    }
}

fn yaml_file(p: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(p).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn helm_values_files_and_templates_use_only_keys_the_chart_has() {
    let chart = root().join("deploy/helm/vigil");
    let mut known = BTreeSet::new();
    key_paths(&yaml_file(&chart.join("values.yaml")), "", &mut known);
    // every values-*.yaml (the fleet's) overrides keys the chart defines
    let mut files = 0;
    for e in std::fs::read_dir(&chart).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("values-") && name.ends_with(".yaml")) {
            continue;
        }
        files += 1;
        let mut keys = BTreeSet::new();
        key_paths(&yaml_file(&p), "", &mut keys);
        assert!(!keys.is_empty(), "{name} sets nothing");
        for k in &keys {
            // below a list or a free-form map (resources) anything goes
            let parent_known = known.iter().any(|n| {
                k.starts_with(&format!("{n}."))
                    && (n.ends_with("resources") || n.ends_with("extraArgs"))
            });
            assert!(
                known.contains(k) || parent_known,
                "{name}: {k} is not a value of the chart (values.yaml)"
            );
        }
    }
    assert!(files >= 1, "no values-*.yaml beside the chart");
    // every .Values.x.y a template reads is defined
    let mut refs = 0;
    for e in std::fs::read_dir(chart.join("templates")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, _) in text.match_indices(".Values.") {
            let rest = &text[i + ".Values.".len()..];
            let key: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                .collect();
            let key = key.trim_end_matches('.');
            assert!(
                known.contains(key),
                "{}: .Values.{key} is not in values.yaml",
                p.display()
            );
            refs += 1;
        }
    }
    assert!(refs > 20, "only {refs} .Values references");
}

/// The plain manifests validate against the Kubernetes schemas, strictly
/// (unknown fields are errors), with `kubernetes-validate` from the test
/// venv (scripts/install-test-deps.sh installs it).
#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let venv = std::env::var("VIGIL_TEST_VENV").unwrap_or_else(|_| "/opt/vigil-test-venv".into());
    let validate = Path::new(&venv).join("bin/kubernetes-validate");
    if !validate.exists() {
        eprintln!(
            "SKIP: {} is missing (scripts/install-test-deps.sh installs it)",
            validate.display()
        );
        return;
    }
    let mut files = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/kubernetes/fleet"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    let out = Command::new(&validate)
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    assert!(text.contains("vigil-collector-leader-election"), "{text}");
}
