//! Loki's HTTP query API over the log store, in Loki's JSON shapes, so
//! Grafana's Loki data source works against the collector:
//! `/loki/api/v1/query`, `/loki/api/v1/query_range`, `/loki/api/v1/labels`,
//! `/loki/api/v1/label/<name>/values`, `/loki/api/v1/series`.
//!
//! Times are Unix nanoseconds (or seconds with ≤ 10 digits, float seconds,
//! RFC 3339), as Loki parses them; errors are 400 with a plain-text message,
//! as Loki answers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::api::Params;
use crate::logs::LogStore;
use crate::logs::logql::{self, Control, Direction, Query, QueryError, Stats};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/loki/api/v1/query", get(query).post(query))
        .route(
            "/loki/api/v1/query_range",
            get(query_range).post(query_range),
        )
        .route("/loki/api/v1/labels", get(labels).post(labels))
        .route("/loki/api/v1/label/{name}/values", get(label_values))
        .route("/loki/api/v1/series", get(series).post(series))
}

/// Most entries one log query returns.
const MAX_LIMIT: usize = 50_000;

use vigil_common::time::now_ns;

fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Loki's timestamp parameter.
fn parse_ts(v: &str) -> Result<i64, String> {
    if v.contains('.')
        && let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return Ok((f * 1e9) as i64);
    }
    if let Ok(n) = v.parse::<i64>() {
        return Ok(if v.trim_start_matches('-').len() <= 10 {
            n.saturating_mul(1_000_000_000)
        } else {
            n
        });
    }
    vigil_common::time::parse_rfc3339_ns(v.as_bytes())
        .map_err(|_| format!("invalid timestamp {v:?}"))
}

/// A step or `since`: a duration (`5m`) or float seconds.
fn parse_dur(v: &str) -> Result<i64, String> {
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && f >= 0.0 {
            return Ok((f * 1e9) as i64);
        }
    } else if let Some(d) = logql::parse_duration_ns(v) {
        return Ok(d);
    }
    Err(format!("invalid duration {v:?}"))
}

fn no_store() -> Response {
    (
        StatusCode::NOT_FOUND,
        "this collector has no log store\n".to_string(),
    )
        .into_response()
}

/// `start`/`end` with Loki's defaults (end = now, start = end − since or 1 h).
fn range(p: &Params) -> Result<(i64, i64), String> {
    let end = match p.get("end") {
        Some(v) => parse_ts(v)?,
        None => now_ns(),
    };
    let since = match p.get("since") {
        Some(v) => parse_dur(v)?,
        None => 3_600_000_000_000,
    };
    let start = match p.get("start") {
        Some(v) => parse_ts(v)?,
        None => end - since,
    };
    if end < start {
        return Err("end timestamp must not be before or equal to start time".into());
    }
    Ok((start, end))
}

fn limit(p: &Params) -> Result<usize, String> {
    match p.get("limit") {
        None => Ok(100),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Err("limit must be a positive value".into()),
            Ok(n) if n > MAX_LIMIT => Err(format!(
                "max entries limit per query exceeded, limit > max_entries_limit ({n} > {MAX_LIMIT})"
            )),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("invalid limit {v:?}")),
        },
    }
}

fn direction(p: &Params) -> Result<Direction, String> {
    match p.get("direction").map(|d| d.to_ascii_lowercase()) {
        None => Ok(Direction::Backward),
        Some(d) if d == "backward" => Ok(Direction::Backward),
        Some(d) if d == "forward" => Ok(Direction::Forward),
        Some(d) => Err(format!("invalid direction {d:?}")),
    }
}

fn labels_json(l: &vigil_common::Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

fn stats_json(s: &Stats, started: std::time::Instant) -> Value {
    json!({"summary": {
        "bytesProcessedPerSecond": 0,
        "linesProcessedPerSecond": 0,
        "totalBytesProcessed": s.bytes_processed,
        "totalLinesProcessed": s.lines_processed,
        "execTime": started.elapsed().as_secs_f64(),
    }})
}

fn fmt_value(v: f64) -> String {
    crate::promql::format_float(v)
}

/// What a query request asks for.
struct Req {
    start: i64,
    end: i64,
    step: i64,
    limit: usize,
    dir: Direction,
    instant: bool,
}

fn run_query(st: &LogStore, q: &Query, r: Req, ctl: &Control) -> Result<Value, QueryError> {
    let Req {
        start,
        end,
        step,
        limit,
        dir,
        instant,
    } = r;
    let started = std::time::Instant::now();
    let mut stats = Stats::default();
    let data = match q {
        Query::Log(sel) => {
            let streams = logql::select_logs(st, sel, (start, end), limit, dir, &mut stats, ctl)?;
            let result: Vec<Value> = streams
                .into_iter()
                .map(|s| {
                    json!({
                        "stream": labels_json(&s.labels),
                        "values": s.entries.into_iter()
                            .map(|(t, l)| json!([t.to_string(), l]))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"resultType": "streams", "result": result, "stats": stats_json(&stats, started)})
        }
        Query::Metric(e) => {
            let series = logql::eval_metric(st, e, start, end, step, &mut stats, ctl)?;
            if instant {
                let result: Vec<Value> = series
                    .into_iter()
                    .filter_map(|(l, pts)| {
                        let (t, v) = *pts.last()?;
                        Some(json!({"metric": labels_json(&l), "value": [t as f64 / 1e9, fmt_value(v)]}))
                    })
                    .collect();
                json!({"resultType": "vector", "result": result, "stats": stats_json(&stats, started)})
            } else {
                let result: Vec<Value> = series
                    .into_iter()
                    .map(|(l, pts)| {
                        json!({
                            "metric": labels_json(&l),
                            "values": pts.into_iter()
                                .map(|(t, v)| json!([t as f64 / 1e9, fmt_value(v)]))
                                .collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({"resultType": "matrix", "result": result, "stats": stats_json(&stats, started)})
            }
        }
    };
    Ok(json!({"status": "success", "data": data}))
}

fn query_error(e: QueryError) -> Response {
    match e {
        QueryError::Io(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the log store: {e}"),
        )
            .into_response(),
        QueryError::Timeout => (
            StatusCode::SERVICE_UNAVAILABLE,
            "query timed out".to_string(),
        )
            .into_response(),
        QueryError::Canceled => (
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "query was canceled".to_string(),
        )
            .into_response(),
        other => bad(other.to_string()),
    }
}

/// Runs a log query through the query gate (a slot, the configured
/// timeout, cancellation when the client goes).
async fn gated(s: &AppState, st: std::sync::Arc<LogStore>, q: Query, req: Req) -> Response {
    let timeout = s.queries.limits().timeout;
    let deadline = std::time::Instant::now() + timeout;
    let r = s
        .queries
        .run(
            "logql",
            timeout,
            move |cancel| {
                run_query(
                    &st,
                    &q,
                    req,
                    &Control {
                        deadline,
                        cancel: Some(cancel),
                    },
                )
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
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => query_error(e),
        Err(super::gate::GateError::QueueTimeout(d)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "query timed out waiting for one of the {} query slots ({d:?})",
                s.queries.limits().max_concurrency
            ),
        )
            .into_response(),
        Err(super::gate::GateError::Panicked(m)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query evaluation failed: {m}"),
        )
            .into_response(),
    }
}

async fn query(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(st) = s.logs.clone() else {
        return no_store();
    };
    let p = Params::new(raw, &headers, &body);
    let Some(text) = p.get("query") else {
        return bad("query parameter is required");
    };
    let q = match logql::parse(text) {
        Ok(q) => q,
        Err(e) => return bad(e.to_string()),
    };
    if q.is_log() {
        return bad(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        );
    }
    let t = match p.get("time").map(parse_ts).transpose() {
        Ok(t) => t.unwrap_or_else(now_ns),
        Err(e) => return bad(e),
    };
    let (lim, dir) = match (limit(&p), direction(&p)) {
        (Ok(l), Ok(d)) => (l, d),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    gated(
        &s,
        st,
        q,
        Req {
            start: t,
            end: t,
            step: 1,
            limit: lim,
            dir,
            instant: true,
        },
    )
    .await
}

async fn query_range(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(st) = s.logs.clone() else {
        return no_store();
    };
    let p = Params::new(raw, &headers, &body);
    let Some(text) = p.get("query") else {
        return bad("query parameter is required");
    };
    let q = match logql::parse(text) {
        Ok(q) => q,
        Err(e) => return bad(e.to_string()),
    };
    let (start, end) = match range(&p) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let step = match p.get("step").map(parse_dur).transpose() {
        // Loki's default: a 250th of the range, at least 1 s
        Ok(s) => s.unwrap_or_else(|| ((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000),
        Err(e) => return bad(e),
    };
    let (lim, dir) = match (limit(&p), direction(&p)) {
        (Ok(l), Ok(d)) => (l, d),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    gated(
        &s,
        st,
        q,
        Req {
            start,
            end,
            step,
            limit: lim,
            dir,
            instant: false,
        },
    )
    .await
}

async fn labels(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(st) = s.logs.clone() else {
        return no_store();
    };
    let p = Params::new(raw, &headers, &body);
    match range(&p) {
        Ok((start, end)) => ok(json!({"status": "success", "data": st.label_names(start, end)})),
        Err(e) => bad(e),
    }
}

async fn label_values(
    State(s): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(st) = s.logs.clone() else {
        return no_store();
    };
    let p = Params::new(raw, &headers, &[]);
    let (start, end) = match range(&p) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let matchers = match p.get("query") {
        None => Vec::new(),
        Some(q) => match logql::parse(q) {
            Ok(Query::Log(sel)) => sel.matchers,
            Ok(Query::Metric(_)) => return bad("query must be a stream selector"),
            Err(e) => return bad(e.to_string()),
        },
    };
    ok(json!({"status": "success", "data": st.label_values(&name, &matchers, start, end)}))
}

async fn series(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(st) = s.logs.clone() else {
        return no_store();
    };
    let p = Params::new(raw, &headers, &body);
    let (start, end) = match range(&p) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let mut selectors = Vec::new();
    for m in p.all("match[]").into_iter().chain(p.all("match")) {
        match logql::parse(m) {
            Ok(Query::Log(sel)) => selectors.push(sel.matchers),
            Ok(Query::Metric(_)) => return bad("match[] must be a stream selector"),
            Err(e) => return bad(e.to_string()),
        }
    }
    if selectors.is_empty() {
        return bad("at least one match[] argument is required");
    }
    let data: Vec<vigil_common::Labels> = st.series(&selectors, start, end);
    ok(json!({"status": "success", "data": data}))
}
