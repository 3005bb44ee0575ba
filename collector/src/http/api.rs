//! The Prometheus HTTP API (`/api/v1/query`, `query_range`, `series`,
//! `labels`, `label/<name>/values`, `metadata`, `status/buildinfo`) and
//! `/federate`, with Prometheus' JSON envelopes, error types and status
//! codes. GET and form-encoded POST are both accepted, as Grafana uses both.
//!
//! Not here: rules and alerts endpoints, remote write (`remote_write.rs`),
//! the evaluator (`crate::promql`).
//!
//! About 840 lines with its tests (the last 180): the query API's endpoints share
//! one parameter parser and one error shape, kept beside them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use promql_parser::parser::Expr;
use vigil_common::Labels;
use vigil_common::time::now_ms;

use super::AppState;
use crate::promql::{Engine, EngineOptions, QueryError, Value, format_float};
use crate::store::{Matcher, Queryable, Store, is_stale};

/// Prometheus' limit on points per series of a range query.
const MAX_POINTS: i64 = 11_000;
/// Bounds used when a request gives no start/end.
const MIN_TIME: i64 = -(1 << 60);
const MAX_TIME: i64 = 1 << 60;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .route("/federate", get(federate))
}

/// An API failure: Prometheus' `errorType` and message.
#[derive(Debug)]
struct ApiError {
    kind: &'static str,
    msg: String,
}

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError {
            kind: "bad_data",
            msg: msg.into(),
        }
    }
    fn param(name: &str, err: impl std::fmt::Display) -> Self {
        Self::bad(format!("invalid parameter \"{name}\": {err}"))
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError {
            kind: e.error_type(),
            msg: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.kind {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "timeout" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "not_found" => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = format!(
            "{{\"status\":\"error\",\"errorType\":{},\"error\":{}}}",
            json_str(self.kind),
            json_str(&self.msg)
        );
        (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn success(data: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"status\":\"success\",\"data\":{data}}}"),
    )
        .into_response()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Request parameters from the query string and, for POST, a form body.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn new(raw: Option<String>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut v = Vec::new();
        if let Some(q) = raw {
            v.extend(decode_form(&q));
        }
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.starts_with("application/x-www-form-urlencoded"));
        if is_form && let Ok(s) = std::str::from_utf8(body) {
            v.extend(decode_form(s));
        }
        Params(v)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn decode_form(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A time parameter: Unix seconds (float) or RFC 3339.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        return Ok(((f * 1000.0).round() as i64).clamp(MIN_TIME, MAX_TIME));
    }
    vigil_common::time::parse_rfc3339_ms(s)
        .map(|ms| ms.clamp(MIN_TIME, MAX_TIME))
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// A duration parameter: float seconds or a Prometheus duration (`5m`).
fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f.abs() > 9.2e15 {
            return Err(format!("cannot parse {s:?} to a valid duration"));
        }
        return Ok((f * 1000.0).round() as i64);
    }
    s.parse::<vigil_common::Duration>()
        .map(vigil_common::Duration::as_millis_i64)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// Engine options for one request: the collector's limits, a `timeout`
/// parameter that can only shorten the configured one.
fn engine_options(s: &AppState, p: &Params) -> Result<EngineOptions, ApiError> {
    let limits = s.queries.limits();
    let mut opts = EngineOptions {
        timeout: limits.timeout,
        max_samples: limits.max_samples,
        ..EngineOptions::default()
    };
    if let Some(t) = p.get("timeout") {
        let ms = parse_duration_ms(t).map_err(|e| ApiError::param("timeout", e))?;
        if ms > 0 {
            opts.timeout = opts.timeout.min(Duration::from_millis(ms as u64));
        }
    }
    Ok(opts)
}

/// Runs a PromQL evaluation through the query gate: waits for a slot
/// (within the query's timeout, which the wait counts against), evaluates
/// on a blocking thread, and cancels the evaluation if the client goes.
async fn gated(
    s: &AppState,
    mut opts: EngineOptions,
    f: impl FnOnce(Engine) -> Result<Value, QueryError> + Send + 'static,
) -> Result<Value, ApiError> {
    let started = std::time::Instant::now();
    let timeout = opts.timeout;
    let r = s
        .queries
        .run(
            "promql",
            timeout,
            move |cancel| {
                opts.timeout = timeout.saturating_sub(started.elapsed());
                opts.cancel = Some(cancel);
                f(Engine::new(opts))
            },
            |r| match r {
                Ok(_) => "ok",
                Err(QueryError::Timeout) => "timeout",
                Err(QueryError::Canceled) => "canceled",
                Err(_) => "error",
            },
        )
        .await;
    match r {
        Ok(v) => Ok(v?),
        Err(super::gate::GateError::QueueTimeout(d)) => Err(ApiError {
            kind: "timeout",
            msg: format!(
                "query timed out waiting for one of the {} query slots ({d:?})",
                s.queries.limits().max_concurrency
            ),
        }),
        Err(super::gate::GateError::Panicked(m)) => Err(ApiError {
            kind: "internal",
            msg: format!("query evaluation failed: {m}"),
        }),
    }
}

fn parse_query(p: &Params) -> Result<Expr, ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| ApiError::param("query", "query is empty"))?;
    crate::promql::parse(q).map_err(|e| ApiError::param("query", e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError {
        kind: "internal",
        msg: format!("query task failed: {e}"),
    })?
}

async fn query(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::new(raw, &headers, &body);
    let expr = parse_query(&p)?;
    let t = match p.get("time") {
        Some(t) => parse_time(t).map_err(|e| ApiError::param("time", e))?,
        None => now_ms(),
    };
    let opts = engine_options(&s, &p)?;
    let store: Arc<Store> = s.store.clone();
    let v = gated(&s, opts, move |engine| {
        engine.instant_expr(store.as_ref(), &expr, t)
    })
    .await?;
    Ok(success(encode_value(&v)))
}

async fn query_range(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::new(raw, &headers, &body);
    let start =
        parse_time(p.get("start").unwrap_or("")).map_err(|e| ApiError::param("start", e))?;
    let end = parse_time(p.get("end").unwrap_or("")).map_err(|e| ApiError::param("end", e))?;
    if end < start {
        return Err(ApiError::param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step =
        parse_duration_ms(p.get("step").unwrap_or("")).map_err(|e| ApiError::param("step", e))?;
    if step <= 0 {
        return Err(ApiError::param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::bad(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let expr = parse_query(&p)?;
    let opts = engine_options(&s, &p)?;
    let store: Arc<Store> = s.store.clone();
    let v = gated(&s, opts, move |engine| {
        engine.range_expr(store.as_ref(), &expr, start, end, step)
    })
    .await?;
    Ok(success(encode_value(&v)))
}

/// Parses `match[]` selectors into matcher lists (one per `or` branch).
fn parse_matchers(p: &Params, required: bool) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let raw = p.all("match[]");
    if raw.is_empty() && required {
        return Err(ApiError::bad("no match[] parameter provided"));
    }
    let mut out = Vec::new();
    for m in raw {
        let e = crate::promql::parse(m).map_err(|e| ApiError::param("match[]", e))?;
        let Expr::VectorSelector(vs) = e else {
            return Err(ApiError::param(
                "match[]",
                format!("{m:?} is not a series selector"),
            ));
        };
        out.extend(crate::promql::selector_matchers(&vs)?);
    }
    Ok(out)
}

fn time_range(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = match p.get("start") {
        Some(s) => parse_time(s).map_err(|e| ApiError::param("start", e))?,
        None => MIN_TIME,
    };
    let end = match p.get("end") {
        Some(s) => parse_time(s).map_err(|e| ApiError::param("end", e))?,
        None => MAX_TIME,
    };
    Ok((start, end))
}

fn limit(p: &Params) -> Result<usize, ApiError> {
    match p.get("limit") {
        None => Ok(usize::MAX),
        Some(l) => {
            let n: i64 = l
                .parse()
                .map_err(|_| ApiError::param("limit", "cannot parse limit"))?;
            Ok(if n <= 0 { usize::MAX } else { n as usize })
        }
    }
}

async fn series(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::new(raw, &headers, &body);
    let sets = parse_matchers(&p, true)?;
    let (start, end) = time_range(&p)?;
    let lim = limit(&p)?;
    let store = s.store.clone();
    let mut all = blocking(move || {
        let mut all: Vec<Labels> = Vec::new();
        for ms in sets {
            all.extend(store.series(&ms, start, end));
        }
        Ok(all)
    })
    .await?;
    all.sort();
    all.dedup();
    all.truncate(lim);
    let mut out = String::from("[");
    for (i, l) in all.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&labels_json(l));
    }
    out.push(']');
    Ok(success(out))
}

fn string_list(v: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_str(s));
    }
    out.push(']');
    out
}

async fn labels(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::new(raw, &headers, &body);
    let mut sets = parse_matchers(&p, false)?;
    if sets.is_empty() {
        sets.push(Vec::new());
    }
    let (start, end) = time_range(&p)?;
    let lim = limit(&p)?;
    let store = s.store.clone();
    let mut names = blocking(move || {
        let mut names = Vec::new();
        for ms in sets {
            names.extend(store.label_names(&ms, start, end));
        }
        Ok(names)
    })
    .await?;
    names.sort();
    names.dedup();
    names.truncate(lim);
    Ok(success(string_list(&names)))
}

async fn label_values(
    State(s): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::new(raw, &HeaderMap::new(), &[]);
    if name.is_empty() {
        return Err(ApiError::bad(format!("invalid label name: {name:?}")));
    }
    let mut sets = parse_matchers(&p, false)?;
    if sets.is_empty() {
        sets.push(Vec::new());
    }
    let (start, end) = time_range(&p)?;
    let lim = limit(&p)?;
    let store = s.store.clone();
    let mut vals = blocking(move || {
        let mut vals = Vec::new();
        for ms in sets {
            vals.extend(store.label_values(&name, &ms, start, end));
        }
        Ok(vals)
    })
    .await?;
    vals.sort();
    vals.dedup();
    vals.truncate(lim);
    Ok(success(string_list(&vals)))
}

/// Exemplars are not stored: always an empty list (Grafana asks for them
/// when a panel has exemplars switched on).
async fn exemplars() -> Response {
    success("[]".to_string())
}

/// Metric family metadata (HELP/TYPE/unit) as agents and pushes sent it,
/// in Prometheus's shape: `{"<family>": [{"type","help","unit"}]}`;
/// `metric` picks one family, `limit` caps the number of families.
async fn metadata(State(s): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::new(raw, &HeaderMap::new(), &[]);
    let limit = p
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| *l > 0)
        .map(|l| l as usize)
        .unwrap_or(usize::MAX);
    let items = match p.get("metric") {
        Some(m) => s.metadata.get(m).into_iter().collect(),
        None => s.metadata.all(),
    };
    let mut data = serde_json::Map::new();
    for m in items.into_iter().take(limit) {
        data.insert(
            m.family.clone(),
            serde_json::json!([{
                "type": crate::metadata::Metadata::type_name(&m),
                "help": m.help,
                "unit": m.unit,
            }]),
        );
    }
    success(serde_json::Value::Object(data).to_string())
}

async fn buildinfo() -> Response {
    success(format!(
        "{{\"version\":{},\"revision\":\"\",\"branch\":\"\",\"buildUser\":\"\",\"buildDate\":\"\",\"goVersion\":\"\",\"features\":{{}}}}",
        json_str(crate::VERSION)
    ))
}

/// `/federate`: the latest sample (within the 5-minute lookback) of every
/// series matching any `match[]`, in the text exposition format.
async fn federate(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::new(raw, &HeaderMap::new(), &[]);
    let sets = parse_matchers(&p, true)?;
    let store = s.store.clone();
    let now = now_ms();
    let lookback = EngineOptions::default().lookback_delta_ms;
    let mut rows = blocking(move || {
        let mut rows: Vec<(Labels, i64, f64)> = Vec::new();
        for ms in sets {
            for ser in store.select(&ms, now - lookback, now) {
                if let Some(&(t, v)) = ser.samples.last()
                    && !is_stale(v)
                {
                    rows.push((ser.labels, t, v));
                }
            }
        }
        Ok(rows)
    })
    .await?;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.dedup_by(|a, b| a.0 == b.0);
    rows.sort_by(|a, b| {
        a.0.metric_name()
            .cmp(&b.0.metric_name())
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut out = String::new();
    let mut last_name: Option<String> = None;
    for (l, t, v) in rows {
        let name = l.metric_name().unwrap_or("").to_string();
        if last_name.as_deref() != Some(name.as_str()) {
            let _ = writeln!(out, "# TYPE {name} untyped");
            last_name = Some(name.clone());
        }
        out.push_str(&name);
        let mut first = true;
        for (k, val) in l.iter().filter(|(k, v)| *k != "__name__" && !v.is_empty()) {
            out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(val));
        }
        if !first {
            out.push('}');
        }
        let _ = writeln!(out, " {} {t}", format_float(v));
    }
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_json(l: &Labels) -> String {
    let mut out = String::from("{");
    let mut first = true;
    for (k, v) in l.iter().filter(|(_, v)| !v.is_empty()) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&json_str(k));
        out.push(':');
        out.push_str(&json_str(v));
    }
    out.push('}');
    out
}

/// Prometheus' timestamp encoding: seconds with up to three decimals.
fn ts_json(t: i64) -> String {
    let (sign, a) = if t < 0 {
        ("-", -(t as i128))
    } else {
        ("", t as i128)
    };
    let (s, f) = (a / 1000, a % 1000);
    if f == 0 {
        format!("{sign}{s}")
    } else {
        format!("{sign}{s}.{f:03}")
    }
}

fn point_json(out: &mut String, t: i64, v: &str) {
    out.push('[');
    out.push_str(&ts_json(t));
    out.push(',');
    out.push_str(&json_str(v));
    out.push(']');
}

/// The `data` object of a query response.
pub fn encode_value(v: &Value) -> String {
    let mut out = String::new();
    let _ = write!(out, "{{\"resultType\":\"{}\",\"result\":", v.type_name());
    match v {
        Value::Scalar { t, v } => point_json(&mut out, *t, &format_float(*v)),
        Value::String { t, v } => point_json(&mut out, *t, v),
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                out.push_str(&labels_json(&s.labels));
                out.push_str(",\"value\":");
                point_json(&mut out, s.t, &format_float(s.v));
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                out.push_str(&labels_json(&s.labels));
                out.push_str(",\"values\":[");
                for (j, (t, v)) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    point_json(&mut out, *t, &format_float(*v));
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app() -> (Router, Arc<Store>) {
        let store = Arc::new(Store::new(Default::default()));
        let r = store
            .get_or_create(&Labels::new([("__name__", "up"), ("job", "a b")]))
            .unwrap();
        store.append(r, 1_000_000, 1.0).unwrap();
        (super::super::router(AppState::new(store.clone())), store)
    }

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = app.oneshot(req).await.unwrap();
        let code = resp.status();
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            code,
            serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn query_get_post_and_errors() {
        let (app, _s) = app();
        let (c, j) = call(
            app.clone(),
            Request::get("/api/v1/query?query=1%2B1&time=1000")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(c, StatusCode::OK);
        assert_eq!(j["data"]["result"], serde_json::json!([1000, "2"]));
        let (c, j) = call(
            app.clone(),
            Request::post("/api/v1/query")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("query=up%7Bjob%3D%22a+b%22%7D&time=1001.5"))
                .unwrap(),
        )
        .await;
        assert_eq!(c, StatusCode::OK, "{j}");
        assert_eq!(
            j["data"]["result"],
            serde_json::json!([{"metric": {"__name__": "up", "job": "a b"}, "value": [1001.5, "1"]}])
        );
        let (c, j) = call(
            app.clone(),
            Request::get("/api/v1/query?query=sum(up")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(c, StatusCode::BAD_REQUEST);
        assert_eq!(j["errorType"], "bad_data");
        assert_eq!(
            j["error"],
            "invalid parameter \"query\": 1:7: parse error: unclosed left parenthesis"
        );
        let (c, j) = call(
            app.clone(),
            Request::get("/api/v1/query?query=up%20%2B%20on()%20group_left%20up&time=1000")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(c, StatusCode::OK, "{j}");
        let (c, j) = call(
            app.clone(),
            Request::get("/api/v1/query_range?query=up&start=1000&end=1010&step=5")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(c, StatusCode::OK, "{j}");
        assert_eq!(
            j["data"]["result"][0]["values"].as_array().unwrap().len(),
            3
        );
        let (c, j) = call(
            app.clone(),
            Request::get("/api/v1/query_range?query=up&start=1000&end=1010&step=0")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(c, StatusCode::BAD_REQUEST, "{j}");
        let (c, j) = call(
            app.clone(),
            Request::get("/api/v1/series?match[]=up")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(c, StatusCode::OK);
        assert_eq!(
            j["data"],
            serde_json::json!([{"__name__": "up", "job": "a b"}])
        );
        let (_, j) = call(
            app.clone(),
            Request::get("/api/v1/labels").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(j["data"], serde_json::json!(["__name__", "job"]));
        let (_, j) = call(
            app.clone(),
            Request::get("/api/v1/label/job/values")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(j["data"], serde_json::json!(["a b"]));
        let (_, j) = call(
            app.clone(),
            Request::get("/api/v1/status/buildinfo")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(j["data"]["version"], crate::VERSION);
    }

    #[tokio::test]
    async fn federate_exposes_latest_samples() {
        let (app, store) = app();
        let r = store
            .get_or_create(&Labels::new([("__name__", "mem"), ("pod", "p\"1")]))
            .unwrap();
        let now = now_ms();
        store.append(r, now - 2000, 5.0).unwrap();
        store.append(r, now - 1000, 6.5).unwrap();
        let resp = app
            .oneshot(
                Request::get("/federate?match[]=%7B__name__%3D~%22mem%7Cup%22%7D")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&b);
        assert_eq!(
            text,
            format!(
                "# TYPE mem untyped\nmem{{pod=\"p\\\"1\"}} 6.5 {}\n",
                now - 1000
            ),
            "the old `up` sample is outside the lookback"
        );
    }

    #[test]
    fn floats_and_times_format_like_prometheus() {
        assert_eq!(ts_json(1500), "1.500");
        assert_eq!(ts_json(-1500), "-1.500");
        assert_eq!(ts_json(2000), "2");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(
            decode_form("q=a%2Bb+c%&x&=v"),
            vec![
                ("q".to_string(), "a+b c%".to_string()),
                ("x".to_string(), String::new()),
                (String::new(), "v".to_string())
            ]
        );
    }
}
