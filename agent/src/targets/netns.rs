//! Connecting from inside another network namespace: how the agent reaches a
//! container that publishes no address (`--network none`, or a network the
//! host cannot route to) on its own loopback. A short-lived thread enters the
//! namespace (`setns(CLONE_NEWNET)` through rustix; it changes only that
//! thread), connects, and hands the socket back: a socket stays in the
//! namespace it was made in, so the agent's runtime threads then use it as any
//! other. Needs `CAP_SYS_ADMIN` and the host's `/proc`. Not here: HTTP.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

/// How long a connect inside a namespace may take (the caller's request
/// timeout bounds the whole scrape as well).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to `addr` made from inside the network namespace at
/// `netns` (e.g. `/proc/<pid>/ns/net`).
pub async fn connect(netns: &Path, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let path = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("vigil-netns".into())
        .spawn(move || {
            let r = (|| -> io::Result<std::net::TcpStream> {
                let ns = std::fs::File::open(&path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("network namespace {}: {e}", path.display()),
                    )
                })?;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| {
                    io::Error::other(format!(
                        "cannot enter network namespace {}: {e}",
                        path.display()
                    ))
                })?;
                let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                s.set_nonblocking(true)?;
                let _ = s.set_nodelay(true);
                Ok(s)
            })();
            let _ = tx.send(r);
        })?;
    let s = rx
        .await
        .map_err(|_| io::Error::other("network namespace thread ended without an answer"))??;
    tokio::net::TcpStream::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_namespace_is_a_clear_error() {
        let e = connect(
            Path::new("/nonexistent/ns/net"),
            "127.0.0.1:1".parse().unwrap(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ns/net"), "{e}");
    }

    /// Our own namespace: the path works like a plain connect.
    #[tokio::test]
    async fn connects_from_a_namespace() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        match connect(Path::new("/proc/self/ns/net"), addr).await {
            Ok(s) => assert_eq!(s.peer_addr().unwrap(), addr),
            // setns needs CAP_SYS_ADMIN; without it the error says so.
            Err(e) => assert!(
                e.to_string().contains("cannot enter network namespace"),
                "{e}"
            ),
        }
    }
}
