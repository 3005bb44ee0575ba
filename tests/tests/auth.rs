//! Authentication and authorization on the collector's HTTP side, with the
//! real binary: a web config in Prometheus' format that `promtool check
//! web-config` accepts (TLS, bcrypt basic auth from `htpasswd -nbB`), bearer
//! tokens with the read / write / admin roles, every endpoint but health
//! refusing missing or wrong credentials, a read-only token that cannot
//! write, reload or act, TLS checked by a real client; and mutual TLS on the
//! gRPC port refusing an agent without a valid client certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use vigil_e2e::{Proc, args, bin, free_port, start_collector, wait_for};

fn client(ca: &Path) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(ca).expect("ca");
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("ca pem"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

fn htpasswd(user: &str, pw: &str) -> String {
    let out = std::process::Command::new("htpasswd")
        .args(["-nbB", user, pw])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    line.split_once(':').expect("user:hash").1.to_string()
}

enum Cred<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

fn call(c: &reqwest::blocking::Client, method: &str, url: &str, cred: &Cred<'_>) -> u16 {
    let mut rb = match method {
        "GET" => c.get(url),
        _ => c.post(url),
    };
    rb = match cred {
        Cred::None => rb,
        Cred::Bearer(t) => rb.bearer_auth(t),
        Cred::Basic(u, p) => rb.basic_auth(u, Some(p)),
    };
    if url.ends_with("/api/v1/write") {
        rb = rb.body(snap::raw::Encoder::new().compress_vec(&[]).expect("snappy"));
    }
    if url.ends_with("/webhook") {
        rb = rb.body(r#"{"version":"4","status":"firing","alerts":[]}"#);
    }
    rb.send().expect("request").status().as_u16()
}

#[test]
fn every_endpoint_needs_the_right_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let certs = vigil_e2e::tls::make(d).expect("openssl makes the test certificates");
    let hash = htpasswd("admin", "s3cret");
    let web = d.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  admin: {hash}\n  viewer: {hash}\n",
            certs.server_cert.display(),
            certs.server_key.display()
        ),
    )
    .expect("web config");
    let check = std::process::Command::new("promtool")
        .args(["check", "web-config", &web.display().to_string()])
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "promtool refuses the web config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for (f, t) in [
        ("read", "reader-0123"),
        ("write", "writer-4567"),
        ("admin", "admin-89ab"),
    ] {
        std::fs::write(d.join(format!("{f}.token")), format!("{t}\n")).expect("token");
    }
    std::fs::write(
        d.join("actions.yml"),
        "executors: {w: {type: webhook, url: \"http://127.0.0.1:9/\"}}\n",
    )
    .expect("actions");
    let tok = |f: &str| d.join(format!("{f}.token")).display().to_string();
    let (hp, gp) = (free_port(), free_port());
    // start_collector waits for /-/ready over plain HTTP; this one speaks TLS
    let mut a = vec![
        "--http-listen".to_string(),
        format!("127.0.0.1:{hp}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{gp}"),
        "--data-dir".into(),
        d.join("collector").display().to_string(),
    ];
    a.extend(args(&[
        "--web-config",
        &web.display().to_string(),
        "--read-token-file",
        &tok("read"),
        "--write-token-file",
        &tok("write"),
        "--admin-token-file",
        &tok("admin"),
        "--basic-auth-role",
        "viewer=read",
        "--actions",
        &d.join("actions.yml").display().to_string(),
    ]));
    let c = Proc::start("collector", &bin("vigil-collector"), &a, &d.join("logs"));
    let https = client(&certs.ca);
    let base = format!("https://localhost:{hp}");
    wait_for(
        Duration::from_secs(30),
        "collector ready over TLS",
        || match https.get(format!("{base}/-/ready")).send() {
            Ok(r) if r.status() == 200 => Ok(()),
            other => Err(format!("{other:?} {}", c.stderr_text())),
        },
    );
    let read_endpoints = [
        ("GET", "/api/v1/query?query=1"),
        ("POST", "/api/v1/query?query=1"),
        ("GET", "/api/v1/query_range?query=1&start=0&end=60&step=15"),
        ("GET", "/api/v1/series?match[]=up"),
        ("GET", "/api/v1/labels"),
        ("GET", "/api/v1/label/job/values"),
        ("GET", "/api/v1/metadata"),
        ("GET", "/api/v1/rules"),
        ("GET", "/api/v1/alerts"),
        ("GET", "/api/v1/status/buildinfo"),
        ("GET", "/federate?match[]=up"),
        ("GET", "/metrics"),
        ("GET", "/loki/api/v1/labels"),
        ("GET", "/loki/api/v1/query_range?query=%7Bjob%3D%22x%22%7D"),
    ];
    let write_endpoints = [("POST", "/api/v1/write")];
    let admin_endpoints = [
        ("POST", "/-/reload"),
        ("GET", "/api/v1/actions"),
        ("POST", "/api/v1/alertmanager/webhook"),
    ];
    let all: Vec<(&str, &str)> = read_endpoints
        .iter()
        .chain(&write_endpoints)
        .chain(&admin_endpoints)
        .copied()
        .collect();
    let url = |p: &str| format!("{base}{p}");
    // health stays open
    for p in ["/-/healthy", "/-/ready"] {
        assert_eq!(call(&https, "GET", &url(p), &Cred::None), 200, "{p}");
    }
    for (m, p) in &all {
        assert_eq!(
            call(&https, m, &url(p), &Cred::None),
            401,
            "{m} {p} without credentials"
        );
        assert_eq!(
            call(&https, m, &url(p), &Cred::Bearer("not-a-token")),
            401,
            "{m} {p} with a wrong token"
        );
        assert_eq!(
            call(&https, m, &url(p), &Cred::Basic("admin", "wrong")),
            401,
            "{m} {p} with a wrong password"
        );
        // admins reach everything
        let code = call(&https, m, &url(p), &Cred::Bearer("admin-89ab"));
        assert!(code != 401 && code != 403, "{m} {p} as admin: {code}");
        let code = call(&https, m, &url(p), &Cred::Basic("admin", "s3cret"));
        assert!(
            code != 401 && code != 403,
            "{m} {p} as basic-auth admin: {code}"
        );
    }
    for (m, p) in &read_endpoints {
        for cred in [Cred::Bearer("reader-0123"), Cred::Basic("viewer", "s3cret")] {
            let code = call(&https, m, &url(p), &cred);
            assert!(code != 401 && code != 403, "{m} {p} as reader: {code}");
        }
        assert_eq!(
            call(&https, m, &url(p), &Cred::Bearer("writer-4567")),
            403,
            "{m} {p} as writer"
        );
    }
    for (m, p) in write_endpoints.iter().chain(&admin_endpoints) {
        assert_eq!(
            call(&https, m, &url(p), &Cred::Bearer("reader-0123")),
            403,
            "{m} {p} as reader"
        );
        assert_eq!(
            call(&https, m, &url(p), &Cred::Basic("viewer", "s3cret")),
            403,
            "{m} {p} as viewer"
        );
    }
    assert_eq!(
        call(
            &https,
            "POST",
            &url("/api/v1/write"),
            &Cred::Bearer("writer-4567")
        ),
        204
    );
    for (m, p) in &admin_endpoints {
        assert_eq!(
            call(&https, m, &url(p), &Cred::Bearer("writer-4567")),
            403,
            "{m} {p} as writer"
        );
    }
    // the web config's headers are on every answer
    let r = https
        .get(url("/api/v1/query?query=1"))
        .bearer_auth("reader-0123")
        .send()
        .expect("query");
    assert_eq!(
        r.headers()
            .get("x-frame-options")
            .map(|v| v.to_str().unwrap_or("")),
        Some("deny")
    );
    // plain HTTP does not get through the TLS port
    assert!(
        vigil_e2e::get(&format!("127.0.0.1:{hp}"), "/-/healthy")
            .map(|(code, _)| code != 200)
            .unwrap_or(true)
    );
    // refusals are counted by endpoint and reason; the secret is never logged
    let m = https
        .get(url("/metrics"))
        .bearer_auth("reader-0123")
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        m.lines().any(|l| l.starts_with(
            "vigil_collector_http_auth_refused_total{endpoint=\"/-/reload\",reason=\"forbidden\"}"
        )),
        "{}",
        m.lines()
            .filter(|l| l.contains("auth_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let logs = std::fs::read_to_string(&c.stderr).unwrap_or_default()
        + &std::fs::read_to_string(&c.stdout).unwrap_or_default();
    for secret in ["reader-0123", "writer-4567", "admin-89ab", "s3cret"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    // a token file rotated and reloaded: the old token stops working
    std::fs::write(d.join("read.token"), "reader-rotated\n").expect("rotate");
    assert_eq!(
        call(
            &https,
            "POST",
            &url("/-/reload"),
            &Cred::Bearer("admin-89ab")
        ),
        200
    );
    assert_eq!(
        call(
            &https,
            "GET",
            &url("/api/v1/labels"),
            &Cred::Bearer("reader-0123")
        ),
        401
    );
    assert_eq!(
        call(
            &https,
            "GET",
            &url("/api/v1/labels"),
            &Cred::Bearer("reader-rotated")
        ),
        200
    );
}

#[test]
fn agents_without_a_valid_client_certificate_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let certs = vigil_e2e::tls::make(d).expect("openssl makes the test certificates");
    let (hp, gp) = (free_port(), free_port());
    let p = |x: &Path| x.display().to_string();
    let c = start_collector(
        d,
        hp,
        gp,
        &args(&[
            "--tls-cert",
            &p(&certs.server_cert),
            "--tls-key",
            &p(&certs.server_key),
            "--tls-client-ca",
            &p(&certs.ca),
        ]),
    );
    let http = format!("127.0.0.1:{hp}");
    let agent = |node: &str, identity: Option<(&Path, &Path)>| {
        let mut a = args(&[
            "--collector",
            &format!("https://127.0.0.1:{gp}"),
            "--tls-ca",
            &p(&certs.ca),
            "--node-name",
            node,
            "--interval",
            "1s",
            "--http-listen",
            "off",
            "--state-dir",
            &d.join(node).display().to_string(),
        ]);
        if let Some((cert, key)) = identity {
            a.extend(args(&["--tls-cert", &p(cert), "--tls-key", &p(key)]));
        }
        Proc::start(node, &bin("vigil-agent"), &a, &d.join("logs"))
    };
    let _good = agent("good", Some((&certs.client_cert, &certs.client_key)));
    let _none = agent("nocert", None);
    let _rogue = agent("rogue", Some((&certs.rogue_cert, &certs.rogue_key)));
    let has = |node: &str| {
        vigil_e2e::get(
            &http,
            &format!("/api/v1/query?query=node_load1%7Bnode%3D%22{node}%22%7D"),
        )
        .map(|(_, b)| b.contains("\"node_load1\""))
        .unwrap_or(false)
    };
    wait_for(
        Duration::from_secs(30),
        "data from the agent with a certificate",
        || {
            if has("good") {
                Ok(())
            } else {
                Err(c.stderr_text())
            }
        },
    );
    // the others had as long, and more: nothing of theirs arrived
    std::thread::sleep(Duration::from_secs(3));
    assert!(!has("nocert"), "an agent without a certificate got through");
    assert!(
        !has("rogue"),
        "an agent with a certificate of another CA got through"
    );
}
