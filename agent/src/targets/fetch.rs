//! HTTP GETs for scraping and discovery: one kept-alive HTTP/1.1 connection
//! per client, dialled over TCP, from inside another network namespace
//! ([`super::netns`]) or over a unix socket (the Engine API), optionally TLS
//! (rustls with the `ring` provider). Bodies are read up to a size limit and
//! gzip-decoded when the server says so; the whole request runs under one
//! timeout. A request on a reused connection that fails before any answer is
//! retried once on a fresh one. Not here: what the body means.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// How a client reaches its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dial {
    Tcp {
        host: String,
        port: u16,
    },
    /// TCP from inside the network namespace at `netns` (`/proc/<pid>/ns/net`).
    NetNs {
        netns: PathBuf,
        addr: std::net::SocketAddr,
    },
    Unix(PathBuf),
}

/// Why a GET failed; the text is what the target status shows.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("Get {url:?}: context deadline exceeded (timeout {timeout:?})")]
    Timeout { url: String, timeout: Duration },
    #[error("Get {url:?}: dial: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("Get {url:?}: {message}")]
    Http { url: String, message: String },
    #[error("server returned HTTP status {status}")]
    Status { status: String, body: String },
    #[error("body size limit exceeded ({limit} bytes)")]
    BodyLimit { limit: u64 },
    #[error("gzip: {0}")]
    Gzip(String),
}

/// An answer with status 200 (anything else is an error, as Prometheus has it).
#[derive(Debug)]
pub struct Response {
    pub content_type: String,
    pub body: Vec<u8>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TLS set-up for `https` servers.
#[derive(Clone)]
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
    /// System roots plus `ca_file`; `insecure` accepts any certificate.
    pub fn new(
        host: &str,
        ca_file: Option<&std::path::Path>,
        server_name: Option<&str>,
        insecure: bool,
    ) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if let Some(p) = ca_file {
                let pem = std::fs::read(p).map_err(|e| format!("ca_file {}: {e}", p.display()))?;
                let mut found = 0;
                for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let c: rustls::pki_types::CertificateDer<'static> =
                        c.map_err(|e| format!("ca_file {}: {e}", p.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("ca_file {}: {e}", p.display()))?;
                    found += 1;
                }
                if found == 0 {
                    return Err(format!("ca_file {}: no certificate", p.display()));
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let name = server_name
            .unwrap_or(host)
            .trim_matches(|c| c == '[' || c == ']');
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| format!("TLS server name {name:?}: {e}"))?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One server, one kept-alive connection.
pub struct Client {
    dial: Dial,
    tls: Option<Tls>,
    host_header: String,
    conn: Option<SendRequest<Empty<Bytes>>>,
}

impl Client {
    pub fn new(dial: Dial, tls: Option<Tls>) -> Self {
        let host_header = match &dial {
            Dial::Tcp { host, port } => format!("{host}:{port}"),
            Dial::NetNs { addr, .. } => addr.to_string(),
            Dial::Unix(_) => "localhost".to_string(),
        };
        Client {
            dial,
            tls,
            host_header,
            conn: None,
        }
    }

    async fn connect(&self, url: &str) -> Result<SendRequest<Empty<Bytes>>, FetchError> {
        let conn_err = |source| FetchError::Connect {
            url: url.to_string(),
            source,
        };
        let io: Box<dyn Io> = match &self.dial {
            Dial::Tcp { host, port } => {
                let h = host.trim_matches(|c| c == '[' || c == ']');
                let s = tokio::net::TcpStream::connect((h, *port))
                    .await
                    .map_err(conn_err)?;
                let _ = s.set_nodelay(true);
                self.wrap_tls(s, url).await?
            }
            Dial::NetNs { netns, addr } => {
                let s = super::netns::connect(netns, *addr)
                    .await
                    .map_err(conn_err)?;
                self.wrap_tls(s, url).await?
            }
            Dial::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await.map_err(conn_err)?),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| FetchError::Http {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn wrap_tls(
        &self,
        s: tokio::net::TcpStream,
        url: &str,
    ) -> Result<Box<dyn Io>, FetchError> {
        match &self.tls {
            None => Ok(Box::new(s)),
            Some(t) => {
                let s = t
                    .connector
                    .connect(t.server_name.clone(), s)
                    .await
                    .map_err(|e| FetchError::Http {
                        url: url.to_string(),
                        message: format!("TLS: {e}"),
                    })?;
                Ok(Box::new(s))
            }
        }
    }

    /// `GET path_and_query`; `url` only names the request in errors.
    pub async fn get(
        &mut self,
        url: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body_limit: u64,
        timeout: Duration,
    ) -> Result<Response, FetchError> {
        match tokio::time::timeout(
            timeout,
            self.get_inner(url, path_and_query, headers, body_limit),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                // The connection may hold half an answer: never reuse it.
                self.conn = None;
                Err(FetchError::Timeout {
                    url: url.to_string(),
                    timeout,
                })
            }
        }
    }

    async fn get_inner(
        &mut self,
        url: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body_limit: u64,
    ) -> Result<Response, FetchError> {
        let http_err = |m: String| FetchError::Http {
            url: url.to_string(),
            message: m,
        };
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let reused = self.conn.is_some();
            let mut sender = match self.conn.take() {
                Some(s) => s,
                None => self.connect(url).await?,
            };
            if sender.ready().await.is_err() {
                if reused && attempt == 1 {
                    continue;
                }
                return Err(http_err("connection closed".into()));
            }
            let mut req = http::Request::builder()
                .method(http::Method::GET)
                .uri(path_and_query)
                .header(http::header::HOST, &self.host_header);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| http_err(e.to_string()))?;
            match sender.send_request(req).await {
                Ok(r) => {
                    self.conn = Some(sender);
                    break r;
                }
                Err(e)
                    if reused && attempt == 1 && (e.is_closed() || e.is_incomplete_message()) =>
                {
                    continue;
                }
                Err(e) => return Err(http_err(e.to_string())),
            }
        };
        let status = resp.status();
        let header = |n: http::header::HeaderName| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let content_type = header(http::header::CONTENT_TYPE);
        let gzip = header(http::header::CONTENT_ENCODING).eq_ignore_ascii_case("gzip");
        let keep = !header(http::header::CONNECTION).eq_ignore_ascii_case("close");
        let mut body = resp.into_body();
        let mut raw: Vec<u8> = Vec::new();
        let cap = if body_limit == 0 {
            u64::MAX
        } else {
            body_limit
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                self.conn = None;
                http_err(e.to_string())
            })?;
            if let Ok(data) = frame.into_data() {
                raw.extend_from_slice(&data);
                if raw.len() as u64 >= cap {
                    self.conn = None;
                    return Err(FetchError::BodyLimit { limit: body_limit });
                }
            }
        }
        if !keep {
            self.conn = None;
        }
        if status != http::StatusCode::OK {
            return Err(FetchError::Status {
                status: format!(
                    "{} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
                body: String::from_utf8_lossy(&raw[..raw.len().min(512)]).into_owned(),
            });
        }
        let body = if gzip {
            use std::io::Read;
            let mut out = Vec::with_capacity(raw.len() * 4);
            let d = flate2::read::GzDecoder::new(&raw[..]);
            d.take(cap)
                .read_to_end(&mut out)
                .map_err(|e| FetchError::Gzip(e.to_string()))?;
            if out.len() as u64 >= cap {
                return Err(FetchError::BodyLimit { limit: body_limit });
            }
            out
        } else {
            raw
        };
        Ok(Response { content_type, body })
    }
}
