//! The web UI: a small single-page application served by the collector at
//! `/`, its files (`collector/ui/`) compiled into the binary, so it works
//! offline and without anything to install. The pages talk only to the
//! collector's own JSON APIs (Prometheus, Loki, rules, actions, status)
//! through the same authentication as every other route: the read role for
//! everything the UI serves, the admin role for the actions audit.
//!
//! Serving: `GET /` is `index.html`; `GET /ui/<file>` the other files.
//! Responses carry an `ETag` (a hash of the file; `If-None-Match` → 304,
//! `Cache-Control: no-cache` so an upgrade is picked up at once), are
//! gzip-compressed once on first use when the client accepts gzip, and
//! carry a strict `Content-Security-Policy` (scripts, styles and requests
//! from this origin only; no inline script).
//!
//! Not here: the data (the APIs in `crate::http`), the charting library
//! (uPlot, vendored under `collector/ui/vendor/uplot/` with its license).

use std::io::Write as _;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ct:literal) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../../ui/", $path)),
        }
    };
}

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("js/core.js", "text/javascript; charset=utf-8"),
    asset!("js/chart.js", "text/javascript; charset=utf-8"),
    asset!("js/overview.js", "text/javascript; charset=utf-8"),
    asset!("js/query.js", "text/javascript; charset=utf-8"),
    asset!("js/logs.js", "text/javascript; charset=utf-8"),
    asset!("js/alerts.js", "text/javascript; charset=utf-8"),
    asset!("js/actions.js", "text/javascript; charset=utf-8"),
    asset!("js/status.js", "text/javascript; charset=utf-8"),
    asset!("js/main.js", "text/javascript; charset=utf-8"),
    asset!(
        "vendor/uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

/// The policy every UI response carries.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Per asset: its ETag and, made on first use, its gzip form (None when
/// compressing does not make it smaller).
struct Prepared {
    etag: String,
    gzip: OnceLock<Option<Vec<u8>>>,
}

fn prepared() -> &'static [Prepared] {
    static P: OnceLock<Vec<Prepared>> = OnceLock::new();
    P.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| Prepared {
                etag: format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(a.body)),
                gzip: OnceLock::new(),
            })
            .collect()
    })
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(body).ok()?;
    let out = e.finish().ok()?;
    (out.len() < body.len()).then_some(out)
}

/// The UI's routes; they read no state, so any router can mount them.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

/// The list of embedded files and their sizes (uncompressed, gzip), for the
/// page-weight figures and tests.
pub fn asset_sizes() -> Vec<(&'static str, usize, usize)> {
    ASSETS
        .iter()
        .map(|a| {
            let z = gzip(a.body).map_or(a.body.len(), |g| g.len());
            (a.path, a.body.len(), z)
        })
        .collect()
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no such file in the web UI: {path}\n"),
        )
            .into_response();
    };
    let (a, p) = (&ASSETS[i], &prepared()[i]);
    let etag = HeaderValue::from_str(&p.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag.clone()),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::VARY, HeaderValue::from_static("Accept-Encoding")),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == p.etag || t.trim() == "*"));
    if fresh {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().extend(common);
        return r;
    }
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|e| {
                let mut parts = e.trim().split(';');
                parts.next() == Some("gzip")
                    && parts.all(|q| q.trim().strip_prefix("q=").is_none_or(|q| q != "0"))
            })
        });
    let zipped = if accepts_gzip {
        p.gzip.get_or_init(|| gzip(a.body)).as_deref()
    } else {
        None
    };
    let mut r = match zipped {
        Some(z) => (
            [(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))],
            z.to_vec(),
        )
            .into_response(),
        None => a.body.to_vec().into_response(),
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.extend(common);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> Router {
        let store = std::sync::Arc::new(crate::store::Store::new(Default::default()));
        routes().with_state(crate::http::AppState::new(store))
    }

    async fn get(path: &str, h: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(path);
        for (k, v) in h {
            req = req.header(*k, *v);
        }
        let r = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = r.into_parts();
        let b = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, b)
    }

    #[tokio::test]
    async fn index_assets_gzip_etag_and_policy() {
        let (s, h, b) = get("/", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            h[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let html = String::from_utf8(b).unwrap();
        // every file the page loads is embedded
        for part in html
            .split("src=\"")
            .skip(1)
            .chain(html.split("href=\"").skip(1))
        {
            let url = part.split('"').next().unwrap();
            if let Some(p) = url.strip_prefix("/ui/") {
                assert!(ASSETS.iter().any(|a| a.path == p), "{url} is not embedded");
            }
        }
        let etag = h[header::ETAG].to_str().unwrap().to_string();
        let (s, _, b) = get("/", &[("if-none-match", &etag)]).await;
        assert_eq!((s, b.len()), (StatusCode::NOT_MODIFIED, 0));
        let (s, h, z) = get(
            "/ui/vendor/uplot/uPlot.iife.min.js",
            &[("accept-encoding", "gzip, br")],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut plain).unwrap();
        assert_eq!(
            plain,
            ASSETS
                .iter()
                .find(|a| a.path.ends_with("uPlot.iife.min.js"))
                .unwrap()
                .body
        );
        let (s, h, _) = get("/ui/js/core.js", &[("accept-encoding", "gzip;q=0")]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h.get(header::CONTENT_ENCODING).is_none());
        let (s, _, _) = get("/ui/../Cargo.toml", &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_stays_light() {
        // everything the browser downloads, compressed: the figure docs/ui.md states
        let total: usize = asset_sizes()
            .iter()
            .filter(|(p, _, _)| !p.ends_with("LICENSE"))
            .map(|(_, _, z)| z)
            .sum();
        assert!(
            total < 150 * 1024,
            "the UI grew to {total} bytes compressed"
        );
    }
}
