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
    for dir in ["deploy/kubernetes", "deploy/helm/vigil/templates"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
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
    for e in std::fs::read_dir(root().join("dashboards")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            v["uid"].is_string() && v["title"].is_string(),
            "{}: no uid/title",
            p.display()
        );
        for panel in v["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                if t["datasource"]["type"] == "loki" {
                    // LogQL, checked with the collector's own parser
                    let q = expr.replace("$node", ".+").replace("$search", "error");
                    vigil_collector::logs::logql::parse(&q)
                        .unwrap_or_else(|e| panic!("{}: {expr}: {e}", p.display()));
                    exprs += 1;
                    continue;
                }
                // Grafana's variables, as Grafana would substitute them
                let q = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$node", ".*")
                    .replace("$namespace", ".*")
                    .replace("$pod", ".*");
                promql_parser::parser::parse(&q)
                    .unwrap_or_else(|e| panic!("{}: {expr}: {e}", p.display()));
                exprs += 1;
            }
        }
    }
    assert!(exprs >= 20, "only {exprs} queries found");
}
