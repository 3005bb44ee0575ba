//! Who may use which HTTP endpoint.
//!
//! Credentials: basic-auth users from a web configuration file in
//! Prometheus' format (`--web-config`, the file `promtool check web-config`
//! accepts: `basic_auth_users` with bcrypt hashes, `tls_server_config`,
//! `http_server_config`), and bearer tokens read from files, each giving one
//! role (`--read-token-file`, `--write-token-file`, `--admin-token-file`).
//!
//! Roles: *read* (queries of every API, `/federate`, `/metrics`, rules and
//! alerts), *write* (remote write and pushes of any protocol), *admin*
//! (`/-/reload`, the actions API, the Alertmanager webhook — and everything
//! else). Basic-auth users are admins unless `--basic-auth-role user=role`
//! says otherwise. `/-/healthy` and `/-/ready` are always open.
//!
//! Without any credential configured, read endpoints are open and write and
//! admin endpoints answer loopback clients only (`--http-open-access` opens
//! them to every address), so a collector listening on all addresses is
//! never writable or actionable from the network by accident.
//!
//! Refusals are 401 (no or wrong credentials, with `WWW-Authenticate`) or
//! 403 (a credential whose role does not reach), counted in
//! `vigil_collector_http_auth_refused_total{endpoint,reason}`; secrets are
//! never logged. bcrypt is slow on purpose, so a verified user/password pair
//! is remembered (by a SHA-256 of the password, never the password itself);
//! an unknown user costs one bcrypt against a fixed hash, like a known one.
//!
//! [`Auth::reload`] re-reads the files (SIGHUP, `POST /-/reload`); a broken
//! file keeps the credentials in force and says why.
//!
//! Not here: TLS termination (`crate::net`, configured from the same file
//! through [`WebConfig::tls`]), gRPC authentication (`ingest`).
//!
//! About 900 lines with its tests (the last 170): the web config (TLS, users),
//! the token files and their reload, and the middleware are one trust
//! boundary, reviewed in one place.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use sha2::Digest;

/// What a credential may do; each role includes nothing below it except
/// that admin includes everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (read, write or admin)")),
        }
    }
}

/// The role an endpoint needs; `None` for the open health endpoints.
pub fn required_role(path: &str) -> Option<Role> {
    match path {
        "/-/healthy" | "/-/ready" => None,
        "/api/v1/write" | "/v1/metrics" | "/v1/logs" | "/loki/api/v1/push" => Some(Role::Write),
        "/-/reload" | "/-/quit" => Some(Role::Admin),
        p if p.starts_with("/api/v1/actions") || p.starts_with("/api/v1/alertmanager/") => {
            Some(Role::Admin)
        }
        _ => Some(Role::Read),
    }
}

/// Prometheus' web configuration file (exporter-toolkit's format).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfigFile>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfigFile>,
    /// user → bcrypt hash
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfigFile {
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub client_auth_type: Option<String>,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_ca: Option<String>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    #[serde(default)]
    pub client_allowed_sans: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfigFile {
    #[serde(default)]
    pub http2: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Response headers Prometheus lets a web config set.
const ALLOWED_HEADERS: &[&str] = &[
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// A loaded, validated web configuration.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// TLS for the HTTP listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether HTTP/2 is offered (default true).
    pub http2: bool,
    pub headers: Vec<(axum::http::HeaderName, HeaderValue)>,
    pub users: BTreeMap<String, String>,
}

impl WebConfig {
    /// Reads and validates a web configuration file; errors name the file
    /// and the key. Relative paths are relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, String> {
        let raw: WebConfigFile =
            vigil_common::config::load_yaml(path).map_err(|e| e.to_string())?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let err = |m: String| format!("web config {}: {m}", path.display());
        let mut headers = Vec::new();
        let mut http2 = true;
        if let Some(h) = raw.http_server_config {
            http2 = h.http2.unwrap_or(true);
            for (k, v) in h.headers {
                let Some(name) = ALLOWED_HEADERS.iter().find(|a| a.eq_ignore_ascii_case(&k)) else {
                    return Err(err(format!(
                        "http_server_config.headers: {k:?} cannot be set (allowed: {})",
                        ALLOWED_HEADERS.join(", ")
                    )));
                };
                let value = HeaderValue::from_str(&v)
                    .map_err(|e| err(format!("http_server_config.headers.{k}: {e}")))?;
                headers.push((
                    axum::http::HeaderName::from_static(static_lower(name)),
                    value,
                ));
            }
        }
        for (u, h) in &raw.basic_auth_users {
            if u.is_empty() || u.contains(':') {
                return Err(err(format!(
                    "basic_auth_users: user name {u:?} must be non-empty and without ':'"
                )));
            }
            if !(h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$")) {
                return Err(err(format!(
                    "basic_auth_users.{u}: not a bcrypt hash (make one with `htpasswd -nbB user password`)"
                )));
            }
        }
        let tls = match raw.tls_server_config {
            Some(t) => Some(Arc::new(tls_config(&t, dir, http2).map_err(err)?)),
            None => None,
        };
        Ok(WebConfig {
            tls,
            http2,
            headers,
            users: raw.basic_auth_users,
        })
    }
}

fn static_lower(name: &'static str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

fn read_pem(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    dir: &Path,
    key: &str,
) -> Result<Vec<u8>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: {key} and {key}_file are exclusive"
        )),
        (Some(s), None) => Ok(s.as_bytes().to_vec()),
        (None, Some(f)) => {
            let p = dir.join(f);
            std::fs::read(&p)
                .map_err(|e| format!("tls_server_config.{key}_file {}: {e}", p.display()))
        }
        (None, None) => Err(format!("tls_server_config: {key}_file is required")),
    }
}

fn tls_version(v: &str, key: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key}: {v} is not offered (TLS 1.2 and 1.3 are)"
        )),
        other => Err(format!(
            "tls_server_config.{key}: unknown version {other:?}"
        )),
    }
}

/// Builds the rustls configuration of a `tls_server_config`.
fn tls_config(
    t: &TlsServerConfigFile,
    dir: &Path,
    http2: bool,
) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if !t.client_allowed_sans.is_empty() {
        return Err("tls_server_config.client_allowed_sans is not supported".into());
    }
    let cert_pem = read_pem(&t.cert, &t.cert_file, dir, "cert")?;
    let key_pem = read_pem(&t.key, &t.key_file, dir, "key")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config: certificate: {e}"))?;
    if certs.is_empty() {
        return Err("tls_server_config: no certificate in the cert file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls_server_config: private key: {e}"))?;
    let mut provider = rustls::crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let mut keep = Vec::new();
        for name in &t.cipher_suites {
            let Some(s) = provider
                .cipher_suites
                .iter()
                .find(|s| s.suite().as_str() == Some(name.as_str()))
            else {
                return Err(format!(
                    "tls_server_config.cipher_suites: {name:?} is not offered"
                ));
            };
            keep.push(*s);
        }
        // like Go, the list applies to TLS 1.2; TLS 1.3 suites stay
        keep.extend(
            provider
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13),
        );
        provider.cipher_suites = keep;
    }
    if !t.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for c in &t.curve_preferences {
            let g = match c.as_str() {
                "X25519" => rustls::crypto::ring::kx_group::X25519,
                "CurveP256" => rustls::crypto::ring::kx_group::SECP256R1,
                "CurveP384" => rustls::crypto::ring::kx_group::SECP384R1,
                other => {
                    return Err(format!(
                        "tls_server_config.curve_preferences: {other:?} is not offered (X25519, CurveP256, CurveP384)"
                    ));
                }
            };
            groups.push(g);
        }
        provider.kx_groups = groups;
    }
    let min = tls_version(t.min_version.as_deref().unwrap_or("TLS12"), "min_version")?;
    let max = tls_version(t.max_version.as_deref().unwrap_or("TLS13"), "max_version")?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let rank = |x: &rustls::SupportedProtocolVersion| {
                    if x.version == rustls::ProtocolVersion::TLSv1_2 {
                        0
                    } else {
                        1
                    }
                };
                rank(v) >= rank(min) && rank(v) <= rank(max)
            })
            .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let client_auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let ca = || -> Result<rustls::RootCertStore, String> {
        if t.client_ca_file.is_none() && t.client_ca.is_none() {
            return Err(format!(
                "tls_server_config: client_auth_type {client_auth} needs client_ca_file"
            ));
        }
        let pem = read_pem(&t.client_ca, &t.client_ca_file, dir, "client_ca")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| format!("tls_server_config: client CA: {e}"))?;
            roots
                .add(c)
                .map_err(|e| format!("tls_server_config: client CA: {e}"))?;
        }
        Ok(roots)
    };
    let builder = match client_auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca()?),
                provider,
            );
            if client_auth == "VerifyClientCertIfGiven" {
                v = v.allow_unauthenticated();
            }
            let v = v
                .build()
                .map_err(|e| format!("tls_server_config: client verifier: {e}"))?;
            builder.with_client_cert_verifier(v)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type {client_auth} accepts unverified certificates; use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
            ));
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown {other:?}"
            ));
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: certificate and key: {e}"))?;
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(cfg)
}

/// Where credentials come from (the collector's settings).
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    pub web_config: Option<PathBuf>,
    pub read_token_files: Vec<PathBuf>,
    pub write_token_files: Vec<PathBuf>,
    pub admin_token_files: Vec<PathBuf>,
    /// user → role, for basic-auth users that are not admins.
    pub user_roles: BTreeMap<String, Role>,
    /// Without credentials configured, let every address write and act.
    pub open_access: bool,
}

/// Credentials in force.
#[derive(Default)]
struct Credentials {
    web: WebConfig,
    /// SHA-256 of each token, with its role.
    tokens: Vec<([u8; 32], Role)>,
}

impl Credentials {
    fn load(s: &AuthSettings) -> Result<Self, String> {
        let web = match &s.web_config {
            Some(p) => WebConfig::load(p)?,
            None => WebConfig::default(),
        };
        for u in s.user_roles.keys() {
            if !web.users.contains_key(u) {
                return Err(format!(
                    "basic_auth_role names {u:?}, which is not in the web config's basic_auth_users"
                ));
            }
        }
        let mut tokens = Vec::new();
        for (files, role) in [
            (&s.read_token_files, Role::Read),
            (&s.write_token_files, Role::Write),
            (&s.admin_token_files, Role::Admin),
        ] {
            for f in files {
                let t = vigil_common::config::read_token(f).map_err(|e| e.to_string())?;
                tokens.push((sha256(t.as_bytes()), role));
            }
        }
        Ok(Credentials { web, tokens })
    }

    fn any(&self) -> bool {
        !self.tokens.is_empty() || !self.web.users.is_empty()
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(b).into()
}

/// Constant-time equality of two digests.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub endpoint: String,
    pub reason: &'static str,
}

/// A hash that no password matches, for unknown users (same cost).
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Verified (user, password digest) pairs remembered.
const CACHE_MAX: usize = 1024;

/// Credentials, the roles they give, and the refusal counters.
pub struct Auth {
    settings: AuthSettings,
    creds: RwLock<Arc<Credentials>>,
    cache: Mutex<HashMap<(String, [u8; 32]), bool>>,
    refused: Family<RefusedLabels, Counter>,
    /// The Alertmanager webhook's own token (from the actions file): a
    /// request bearing it reaches that endpoint without an admin credential.
    alertmanager_token: Option<[u8; 32]>,
}

impl Auth {
    /// Loads the credentials; an unreadable, empty or invalid file is an
    /// error (never open access).
    pub fn new(
        settings: AuthSettings,
        alertmanager_token: Option<&str>,
    ) -> Result<Arc<Self>, String> {
        let creds = Credentials::load(&settings)?;
        Ok(Arc::new(Auth {
            settings,
            creds: RwLock::new(Arc::new(creds)),
            cache: Mutex::new(HashMap::new()),
            refused: Family::default(),
            alertmanager_token: alertmanager_token.map(|t| sha256(t.as_bytes())),
        }))
    }

    /// No credentials, loopback-only writes (tests, in-process servers).
    pub fn open() -> Arc<Self> {
        Arc::new(Auth {
            settings: AuthSettings::default(),
            creds: RwLock::new(Arc::default()),
            cache: Mutex::new(HashMap::new()),
            refused: Family::default(),
            alertmanager_token: None,
        })
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "vigil_collector_http_auth_refused",
            "HTTP requests refused: missing or wrong credentials (401), a role that does not reach or a non-loopback client without credentials configured (403)",
            self.refused.clone(),
        );
    }

    /// Re-reads the web config and token files; on error the credentials in
    /// force stay.
    pub fn reload(&self) -> Result<(), String> {
        let c = Credentials::load(&self.settings)?;
        *self.creds.write() = Arc::new(c);
        self.cache.lock().clear();
        Ok(())
    }

    /// The TLS configuration in force (a new connection uses the latest).
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.creds.read().web.tls.clone()
    }

    /// Whether the web config offers HTTP/2.
    pub fn http2(&self) -> bool {
        self.settings.web_config.is_none() || self.creds.read().web.http2
    }

    fn check_basic(&self, creds: &Credentials, user: &str, password: &str) -> Option<Role> {
        let digest = sha256(password.as_bytes());
        let key = (user.to_string(), digest);
        if let Some(ok) = self.cache.lock().get(&key).copied() {
            return ok.then(|| self.user_role(user));
        }
        let hash = creds.web.users.get(user);
        let ok = bcrypt::verify(password, hash.map_or(DUMMY_HASH, String::as_str)).unwrap_or(false)
            && hash.is_some();
        if hash.is_some() {
            let mut c = self.cache.lock();
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(key, ok);
        }
        ok.then(|| self.user_role(user))
    }

    fn user_role(&self, user: &str) -> Role {
        self.settings
            .user_roles
            .get(user)
            .copied()
            .unwrap_or(Role::Admin)
    }

    fn check_bearer(&self, creds: &Credentials, token: &str) -> Option<Role> {
        let d = sha256(token.trim().as_bytes());
        // every token compared, in constant time
        let mut found = None;
        for (t, role) in &creds.tokens {
            if ct_eq(t, &d) {
                found = Some(*role);
            }
        }
        found
    }

    fn refuse(&self, endpoint: &str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels {
                endpoint: endpoint.to_string(),
                reason,
            })
            .inc();
    }

    /// The decision for one request: `Ok` to serve it, or the refusal.
    fn decide(
        &self,
        path: &str,
        endpoint: &str,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(), Box<Response>> {
        let Some(needed) = required_role(path) else {
            return Ok(());
        };
        let creds = self.creds.read().clone();
        let authz = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if path == "/api/v1/alertmanager/webhook"
            && let (Some(am), Some(b)) = (
                &self.alertmanager_token,
                authz.and_then(|a| a.strip_prefix("Bearer ")),
            )
            && ct_eq(am, &sha256(b.trim().as_bytes()))
        {
            return Ok(());
        }
        if !creds.any() {
            let loopback = peer.is_none_or(|p| p.ip().is_loopback());
            if needed == Role::Read || loopback || self.settings.open_access {
                return Ok(());
            }
            self.refuse(endpoint, "not_loopback");
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                format!(
                    "{} needs the {} role: configure credentials (--web-config, --{}-token-file) or --http-open-access to allow it from other hosts",
                    path,
                    needed.name(),
                    needed.name()
                ),
            )));
        }
        let role = match authz {
            None => {
                self.refuse(endpoint, "missing_credentials");
                return Err(Box::new(unauthorized("credentials required")));
            }
            Some(a) => {
                let role = if let Some(b) = a.strip_prefix("Bearer ") {
                    self.check_bearer(&creds, b)
                } else if let Some(b) = a.strip_prefix("Basic ") {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .and_then(|up| {
                            let (u, p) = up.split_once(':')?;
                            self.check_basic(&creds, u, p)
                        })
                } else {
                    None
                };
                match role {
                    Some(r) => r,
                    None => {
                        self.refuse(endpoint, "wrong_credentials");
                        return Err(Box::new(unauthorized("wrong credentials")));
                    }
                }
            }
        };
        if role.allows(needed) {
            Ok(())
        } else {
            self.refuse(endpoint, "forbidden");
            Err(Box::new(text(
                StatusCode::FORBIDDEN,
                format!(
                    "{path} needs the {} role; this credential has {}",
                    needed.name(),
                    role.name()
                ),
            )))
        }
    }

    /// Response headers the web config asks for.
    fn headers(&self) -> Vec<(axum::http::HeaderName, HeaderValue)> {
        self.creds.read().web.headers.clone()
    }
}

fn text(code: StatusCode, msg: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg + "\n",
    )
        .into_response()
}

fn unauthorized(msg: &str) -> Response {
    let mut r = text(StatusCode::UNAUTHORIZED, msg.to_string());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"vigil\""),
    );
    r
}

/// The middleware: every request passes here before its handler.
pub async fn middleware(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "other".to_string());
    let peer = req.extensions().get::<crate::net::Peer>().map(|p| p.0);
    if let Err(resp) = auth.decide(req.uri().path(), &endpoint, req.headers(), peer) {
        return *resp;
    }
    let extra = auth.headers();
    let mut resp = next.run(req).await;
    for (k, v) in extra {
        resp.headers_mut().insert(k, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn peer(ip: &str) -> Option<std::net::SocketAddr> {
        Some(format!("{ip}:1234").parse().unwrap())
    }

    fn hdr(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    fn code(r: Result<(), Box<Response>>) -> u16 {
        match r {
            Ok(()) => 200,
            Err(r) => r.status().as_u16(),
        }
    }

    #[test]
    fn roles_of_endpoints() {
        assert_eq!(required_role("/-/healthy"), None);
        assert_eq!(required_role("/api/v1/query"), Some(Role::Read));
        assert_eq!(required_role("/federate"), Some(Role::Read));
        assert_eq!(required_role("/api/v1/write"), Some(Role::Write));
        assert_eq!(required_role("/loki/api/v1/push"), Some(Role::Write));
        assert_eq!(required_role("/-/reload"), Some(Role::Admin));
        assert_eq!(required_role("/api/v1/actions"), Some(Role::Admin));
        assert_eq!(
            required_role("/api/v1/alertmanager/webhook"),
            Some(Role::Admin)
        );
        assert!(Role::Admin.allows(Role::Write) && !Role::Read.allows(Role::Write));
        assert!(!Role::Write.allows(Role::Read));
    }

    #[test]
    fn without_credentials_only_loopback_writes_and_acts() {
        let a = Auth::open();
        let h = HeaderMap::new();
        assert_eq!(
            code(a.decide("/api/v1/query", "q", &h, peer("10.0.0.1"))),
            200
        );
        assert_eq!(
            code(a.decide("/api/v1/write", "w", &h, peer("10.0.0.1"))),
            403
        );
        assert_eq!(code(a.decide("/-/reload", "r", &h, peer("10.0.0.1"))), 403);
        assert_eq!(
            code(a.decide("/api/v1/write", "w", &h, peer("127.0.0.1"))),
            200
        );
        assert_eq!(code(a.decide("/-/reload", "r", &h, peer("[::1]"))), 200);
    }

    #[test]
    fn tokens_give_their_roles() {
        let d = tempfile::tempdir().unwrap();
        let f = |name: &str, t: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, t).unwrap();
            p
        };
        let a = Auth::new(
            AuthSettings {
                read_token_files: vec![f("r", "reader-token\n")],
                write_token_files: vec![f("w", "writer-token")],
                admin_token_files: vec![f("a", "admin-token")],
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let p = peer("127.0.0.1");
        let q = |path: &str, h: &HeaderMap| code(a.decide(path, path, h, p));
        assert_eq!(q("/api/v1/query", &HeaderMap::new()), 401);
        assert_eq!(q("/-/healthy", &HeaderMap::new()), 200);
        assert_eq!(q("/api/v1/query", &hdr("Bearer nope")), 401);
        assert_eq!(q("/api/v1/query", &hdr("Bearer reader-token")), 200);
        assert_eq!(q("/api/v1/write", &hdr("Bearer reader-token")), 403);
        assert_eq!(q("/-/reload", &hdr("Bearer reader-token")), 403);
        assert_eq!(q("/api/v1/write", &hdr("Bearer writer-token")), 200);
        assert_eq!(q("/api/v1/query", &hdr("Bearer writer-token")), 403);
        assert_eq!(q("/-/reload", &hdr("Bearer admin-token")), 200);
        assert_eq!(q("/api/v1/write", &hdr("Bearer admin-token")), 200);
        let refused = |reason| {
            a.refused
                .get_or_create(&RefusedLabels {
                    endpoint: "/api/v1/query".into(),
                    reason,
                })
                .get()
        };
        assert_eq!(refused("missing_credentials"), 1);
        assert_eq!(refused("wrong_credentials"), 1);
        // an empty token file is an error, never open access
        let e = Auth::new(
            AuthSettings {
                read_token_files: vec![f("empty", "  \n")],
                ..Default::default()
            },
            None,
        )
        .err()
        .unwrap();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn basic_auth_with_bcrypt_and_roles() {
        let d = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let wc = d.path().join("web.yml");
        std::fs::write(
            &wc,
            format!("basic_auth_users:\n  alice: '{hash}'\n  bob: '{hash}'\n"),
        )
        .unwrap();
        let a = Auth::new(
            AuthSettings {
                web_config: Some(wc.clone()),
                user_roles: [("bob".to_string(), Role::Read)].into(),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let p = peer("10.1.1.1");
        let q = |path: &str, up: &str| {
            code(a.decide(path, path, &hdr(&format!("Basic {}", b64(up))), p))
        };
        assert_eq!(q("/-/reload", "alice:pw"), 200);
        assert_eq!(q("/-/reload", "alice:pw"), 200, "from the cache");
        assert_eq!(q("/-/reload", "alice:nope"), 401);
        assert_eq!(q("/-/reload", "carol:pw"), 401);
        assert_eq!(q("/api/v1/query", "bob:pw"), 200);
        assert_eq!(q("/-/reload", "bob:pw"), 403);
        // a role for an unknown user is a configuration error
        let e = Auth::new(
            AuthSettings {
                web_config: Some(wc),
                user_roles: [("zed".to_string(), Role::Read)].into(),
                ..Default::default()
            },
            None,
        )
        .err()
        .unwrap();
        assert!(e.contains("zed"), "{e}");
    }

    #[test]
    fn web_config_errors_name_the_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        for (y, want) in [
            ("basic_auth_users: {a: plain}\n", "bcrypt"),
            ("nope: 1\n", "nope"),
            ("http_server_config: {headers: {Server: x}}\n", "Server"),
            (
                "tls_server_config: {cert_file: missing.pem, key_file: k.pem}\n",
                "cert_file",
            ),
        ] {
            let p = d.path().join("w.yml");
            std::fs::write(&p, y).unwrap();
            let e = WebConfig::load(&p).err().unwrap();
            assert!(e.contains("w.yml") && e.contains(want), "{y}: {e}");
        }
    }
}
