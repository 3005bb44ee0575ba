//! Accepting connections on the collector's two listeners (HTTP and gRPC)
//! with limits, so that clients that connect and then do nothing cannot take
//! every file descriptor: at most [`ConnLimits::max_connections`] open at
//! once (beyond it new connections wait in the kernel's backlog, as
//! Prometheus' `--web.max-connections` does), a connection must send its
//! first bytes within [`ConnLimits::handshake_timeout`], and one on which
//! nothing moves in either direction for [`ConnLimits::idle_timeout`] is
//! closed. An accept error (`EMFILE`, …) pauses the loop briefly instead of
//! spinning.
//!
//! [`serve_http`] runs an axum app on such a listener with hyper's own
//! header-read timeout (slow senders of request headers are cut off) and
//! graceful shutdown; [`incoming`] is the same listener as a stream for
//! tonic. Connections carry their peer address ([`Peer`]) so handlers can
//! tell clients apart.
//!
//! Not here: authentication, request body limits (each route sets its own),
//! TLS (tonic terminates it on the gRPC port).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// A new connection must send something within this (the first request
    /// line, the HTTP/2 preface, the TLS hello); for HTTP/1 it also bounds
    /// how long one request's headers may take to arrive.
    pub handshake_timeout: Duration,
    /// A connection on which no byte moves for this long is closed.
    pub idle_timeout: Duration,
}

/// Which listener a metric is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

/// Connection metrics of both listeners (`vigil_collector_connections*`).
#[derive(Default)]
pub struct NetMetrics {
    open: Family<ListenerLabels, Gauge>,
    limit: Family<ListenerLabels, Gauge>,
    accepted: Family<ListenerLabels, Counter>,
    closed: Family<ClosedLabels, Counter>,
    accept_errors: Family<ListenerLabels, Counter>,
    at_limit: Family<ListenerLabels, Counter>,
}

impl NetMetrics {
    pub fn register(self: &Arc<Self>, r: &mut Registry) {
        r.register(
            "vigil_collector_connections",
            "Connections open, by listener",
            self.open.clone(),
        );
        r.register(
            "vigil_collector_connections_limit",
            "Most connections a listener holds open at once",
            self.limit.clone(),
        );
        r.register(
            "vigil_collector_connections_accepted",
            "Connections accepted, by listener",
            self.accepted.clone(),
        );
        r.register(
            "vigil_collector_connections_timed_out",
            "Connections closed by the collector because they sent nothing in time (reason=handshake) or went idle (reason=idle)",
            self.closed.clone(),
        );
        r.register(
            "vigil_collector_accept_errors",
            "Errors accepting connections (e.g. out of file descriptors), by listener",
            self.accept_errors.clone(),
        );
        r.register(
            "vigil_collector_connections_limit_reached",
            "Times a listener stopped accepting because it held its maximum of connections",
            self.at_limit.clone(),
        );
    }
}

/// The peer of a connection, in each request's extensions (HTTP).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// A listener that accepts within [`ConnLimits`].
pub struct Limited {
    listener: TcpListener,
    limits: ConnLimits,
    slots: Arc<Semaphore>,
    name: &'static str,
    metrics: Arc<NetMetrics>,
}

impl Limited {
    pub fn new(
        listener: TcpListener,
        limits: ConnLimits,
        name: &'static str,
        metrics: Arc<NetMetrics>,
    ) -> Self {
        let max = limits.max_connections.max(1);
        metrics
            .limit
            .get_or_create(&ListenerLabels { listener: name })
            .set(max as i64);
        Limited {
            listener,
            limits,
            slots: Arc::new(Semaphore::new(max)),
            name,
            metrics,
        }
    }

    /// Waits for a free slot, then for a connection. Accept errors are
    /// counted, logged at most once a minute, and followed by a short pause
    /// (out of descriptors is not fixed by trying again at once).
    pub async fn accept(&self) -> (Conn, SocketAddr) {
        let labels = ListenerLabels {
            listener: self.name,
        };
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.metrics.at_limit.get_or_create(&labels).inc();
                match self.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    // the semaphore is never closed
                    Err(_) => std::future::pending().await,
                }
            }
        };
        let mut last_log: Option<std::time::Instant> = None;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    self.metrics.accepted.get_or_create(&labels).inc();
                    self.metrics.open.get_or_create(&labels).inc();
                    let conn = Conn {
                        io: stream,
                        peer,
                        local: self.listener.local_addr().ok(),
                        _permit: permit,
                        limits: self.limits,
                        started: false,
                        last: Instant::now(),
                        timer: Box::pin(tokio::time::sleep(self.limits.handshake_timeout)),
                        name: self.name,
                        metrics: self.metrics.clone(),
                    };
                    return (conn, peer);
                }
                Err(e) => {
                    self.metrics.accept_errors.get_or_create(&labels).inc();
                    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::error!(listener = self.name, error = %e, "cannot accept connections");
                        last_log = Some(std::time::Instant::now());
                    }
                    // per-connection errors (the peer gave up) need no pause
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// An accepted connection: the stream, its slot, and its deadlines.
pub struct Conn {
    io: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    _permit: OwnedSemaphorePermit,
    limits: ConnLimits,
    /// Whether the peer has sent anything yet.
    started: bool,
    /// Last time a byte moved.
    last: Instant,
    /// Fires at the current deadline; re-armed lazily when it fires early.
    timer: Pin<Box<Sleep>>,
    name: &'static str,
    metrics: Arc<NetMetrics>,
}

impl Conn {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn deadline(&self) -> Instant {
        if self.started {
            self.last + self.limits.idle_timeout
        } else {
            self.last + self.limits.handshake_timeout
        }
    }

    /// Called when an I/O call is pending: errors once the deadline passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.deadline();
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= self.deadline() {
                let reason = if self.started { "idle" } else { "handshake" };
                self.metrics
                    .closed
                    .get_or_create(&ClosedLabels {
                        listener: self.name,
                        reason,
                    })
                    .inc();
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection {reason} timeout"),
                ));
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.metrics
            .open
            .get_or_create(&ListenerLabels {
                listener: self.name,
            })
            .dec();
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.started = true;
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.peer),
        }
    }
}

/// The listener as a stream of connections, for tonic's
/// `serve_with_incoming_shutdown`.
pub fn incoming(
    listener: Limited,
) -> impl futures::Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    futures::stream::unfold(listener, |l| async move {
        let (conn, _) = l.accept().await;
        Some((Ok(conn), l))
    })
}

/// Serves `app` on `listener` until `shutdown`, then lets requests in flight
/// finish (at most `grace`).
pub async fn serve_http(
    listener: Limited,
    app: axum::Router,
    shutdown: CancellationToken,
    grace: Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt as _;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(listener.limits.handshake_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (conn, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = listener.accept() => c,
        };
        let svc =
            app.clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    req
                });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let c = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), svc)
            .into_owned();
        let c = graceful.watch(c);
        tokio::spawn(async move {
            if let Err(e) = c.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {grace:?}; closing them");
    }
}

/// Raises this process' soft limit of open files to its hard limit and
/// returns the soft limit now in force (what the connection limits must
/// stay below).
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if let (Some(cur), max) = (l.current, l.maximum)
        && max.is_none_or(|m| m > cur)
    {
        l.current = max;
        if setrlimit(Resource::Nofile, l).is_err() {
            l = getrlimit(Resource::Nofile);
        }
    }
    l.current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max: usize) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            handshake_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
        }
    }

    async fn listener(max: usize) -> (Limited, SocketAddr, Arc<NetMetrics>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let m = Arc::new(NetMetrics::default());
        (Limited::new(l, limits(max), "test", m.clone()), addr, m)
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_their_slots_freed() {
        let (l, addr, m) = listener(2).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let (mut c1, _) = l.accept().await;
        let (_c2, _) = l.accept().await;
        // both slots are taken: a third connection waits for one
        let mut third = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(100), l.accept()).await;
        assert!(waiting.is_err(), "accepted beyond the limit");
        // the silent first connection times out in its handshake
        let mut buf = [0u8; 8];
        let e = c1.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(c1);
        let (mut c3, _) = l.accept().await;
        third.write_all(b"hi").await.unwrap();
        let n = c3.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hi");
        // talking connections stay until they go idle
        let e = c3.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("idle"), "{e}");
        let closed = |reason| {
            m.closed
                .get_or_create(&ClosedLabels {
                    listener: "test",
                    reason,
                })
                .get()
        };
        assert_eq!(closed("handshake"), 1);
        assert_eq!(closed("idle"), 1);
        assert!(
            m.at_limit
                .get_or_create(&ListenerLabels { listener: "test" })
                .get()
                >= 1
        );
    }
}
