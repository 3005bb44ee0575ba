//! Running one probe once, under its timeout: an HTTP GET (status 200–399
//! passes, as the kubelet's), a TCP connect, or a command run inside the
//! container through the Engine API's exec (exit code 0 passes). The address
//! is the container's own IP where it has one; a container without one
//! (`--network none`, a network the host cannot route to) is probed on
//! `127.0.0.1:<port>` from inside its network namespace ([`netns`]), so an
//! unpublished port is probed all the same.
//!
//! Not here: what a run of results means (`state`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::spec::Handler;
use crate::targets::fetch::{Client, Dial, FetchError};
use crate::targets::netns;

/// Largest HTTP probe answer read (the kubelet reads 10 KiB; status is what counts).
const BODY_LIMIT: u64 = 1 << 20;

/// Where a container is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Its own address, routable from the host.
    Ip(IpAddr),
    /// Loopback inside the network namespace at this path (`/proc/<pid>/ns/net`).
    NetNs(PathBuf),
}

/// How the exec probe reaches the container.
#[derive(Clone, Debug)]
pub struct ExecVia {
    pub socket: PathBuf,
    pub container_id: String,
}

/// Runs `h` once; `Err` says why it failed.
pub async fn run(
    h: &Handler,
    reach: &Reach,
    exec: &ExecVia,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run_inner(h, reach, exec, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

async fn run_inner(
    h: &Handler,
    reach: &Reach,
    exec: &ExecVia,
    timeout: Duration,
) -> Result<(), String> {
    match h {
        Handler::Http { port, path } => http(reach, *port, path, timeout).await,
        Handler::Tcp { port } => match reach {
            Reach::Ip(ip) => tokio::net::TcpStream::connect(SocketAddr::new(*ip, *port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {ip}:{port}: {e}")),
            Reach::NetNs(ns) => netns::connect(ns, loopback(*port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp 127.0.0.1:{port} in {}: {e}", ns.display())),
        },
        Handler::Exec { argv } => run_exec(exec, argv).await,
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

async fn http(reach: &Reach, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let (dial, url) = match reach {
        Reach::Ip(ip) => {
            let host = match ip {
                IpAddr::V6(_) => format!("[{ip}]"),
                IpAddr::V4(_) => ip.to_string(),
            };
            (
                Dial::Tcp {
                    host: host.clone(),
                    port,
                },
                format!("http://{host}:{port}{path}"),
            )
        }
        Reach::NetNs(ns) => (
            Dial::NetNs {
                netns: ns.clone(),
                addr: loopback(port),
            },
            format!("http://127.0.0.1:{port}{path}"),
        ),
    };
    // a fresh connection per probe, as the kubelet's (a kept-alive one could
    // answer for a server that no longer accepts)
    let mut c = Client::new(dial, None);
    let headers = [("user-agent", "vigil-probe/1"), ("connection", "close")];
    match c.get(&url, path, &headers, BODY_LIMIT, timeout).await {
        Ok(_) => Ok(()),
        Err(FetchError::Status { status, .. }) => {
            let code: u16 = status
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("{url}: HTTP status {status}"))
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `POST` (or `GET` without a body) on the Engine API socket.
async fn engine(
    socket: &Path,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("engine socket {}: {e}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("engine API: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = match &body {
        Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?),
        None => Bytes::new(),
    };
    let req = http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("engine API {method} {path}: {e}"))?;
    let status = resp.status().as_u16();
    // keep at most 1 MiB of an answer (an exec's output is read to its end
    // and dropped past that)
    let mut body = resp.into_body();
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("engine API {method} {path}: {e}"))?;
        if let Ok(d) = frame.into_data() {
            let room = (BODY_LIMIT as usize).saturating_sub(kept.len());
            kept.extend_from_slice(&d[..d.len().min(room)]);
        }
    }
    let body = Bytes::from(kept);
    Ok((status, body))
}

/// An id as one URL path segment: ids are hex (or names of `[A-Za-z0-9_.-]`).
fn segment(id: &str) -> Result<&str, String> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        Ok(id)
    } else {
        Err(format!("not a container or exec id: {id:?}"))
    }
}

fn api_error(what: &str, status: u16, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
    format!("engine API {what} answered {status}: {}", text.trim())
}

/// Runs `argv` in the container: exec create, start attached (the answer
/// ends with the command), then the exec's exit code.
async fn run_exec(via: &ExecVia, argv: &[String]) -> Result<(), String> {
    let id = segment(&via.container_id)?;
    let (status, body) = engine(
        &via.socket,
        http::Method::POST,
        &format!("/containers/{id}/exec"),
        Some(serde_json::json!({"Cmd": argv, "AttachStdout": true, "AttachStderr": true})),
    )
    .await?;
    if status != 201 && status != 200 {
        return Err(api_error("exec create", status, &body));
    }
    let exec_id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| "engine API exec create: no Id in the answer".to_string())?;
    let exec_id = segment(&exec_id)?.to_string();
    // attached: the answer streams the command's output and ends when the
    // command does (a detached exec's state is not kept up to date by every
    // Podman); the output is read and dropped, the caller's timeout bounds it
    let (status, body) = engine(
        &via.socket,
        http::Method::POST,
        &format!("/exec/{exec_id}/start"),
        Some(serde_json::json!({"Detach": false, "Tty": false})),
    )
    .await?;
    if !(200..300).contains(&status) {
        return Err(api_error("exec start", status, &body));
    }
    let (status, body) = engine(
        &via.socket,
        http::Method::GET,
        &format!("/exec/{exec_id}/json"),
        None,
    )
    .await?;
    if status != 200 {
        return Err(api_error("exec inspect", status, &body));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("engine API exec inspect: unreadable answer: {e}"))?;
    if v.get("Running").and_then(Value::as_bool) == Some(true) {
        return Err(format!(
            "command {argv:?}: still running after its output ended"
        ));
    }
    match v.get("ExitCode").and_then(Value::as_i64) {
        Some(0) => Ok(()),
        Some(code) => Err(format!("command {argv:?} exited with {code}")),
        None => Err(format!("command {argv:?}: no exit code")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-request HTTP server answering `status`.
    async fn serve(status: u16) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .as_bytes(),
                    )
                    .await;
            }
        });
        addr
    }

    fn via() -> ExecVia {
        ExecVia {
            socket: "/nonexistent.sock".into(),
            container_id: "c".into(),
        }
    }

    #[tokio::test]
    async fn http_status_200_to_399_passes() {
        for (status, ok) in [
            (200, true),
            (204, true),
            (302, true),
            (404, false),
            (500, false),
        ] {
            let a = serve(status).await;
            let h = Handler::Http {
                port: a.port(),
                path: "/healthz".into(),
            };
            let r = run(&h, &Reach::Ip(a.ip()), &via(), Duration::from_secs(2)).await;
            assert_eq!(r.is_ok(), ok, "{status}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains(&status.to_string()), "{e}");
            }
        }
    }

    #[tokio::test]
    async fn tcp_connect_and_refusal() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let reach = Reach::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let h = Handler::Tcp { port };
        assert!(
            run(&h, &reach, &via(), Duration::from_secs(2))
                .await
                .is_ok()
        );
        drop(l);
        let e = run(&h, &reach, &via(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.contains("dial tcp"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let h = Handler::Http {
            port: a.port(),
            path: "/".into(),
        };
        let e = run(&h, &Reach::Ip(a.ip()), &via(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.contains("timed out") || e.contains("deadline"), "{e}");
        drop(l);
    }

    #[tokio::test]
    async fn exec_without_an_engine_is_a_clear_failure() {
        let h = Handler::Exec {
            argv: vec!["true".into()],
        };
        let e = run(
            &h,
            &Reach::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            &via(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.contains("/nonexistent.sock"), "{e}");
    }
}
