//! PromQL requests through the collector's HTTP API (parse, depth bound,
//! evaluation over a tiny store, JSON encoding): `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/series` and `/federate`. The first byte
//! picks the endpoint and time range, the rest is the expression.
//! Properties: no panic, no stack overflow, no 5xx other than 503.
#![no_main]

use axum::body::Body;
use http::Request;
use libfuzzer_sys::fuzz_target;
use vigil_fuzz::{STEP_MS, T0_MS, assert_not_server_error, form_encode, send};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, query)) = data.split_first() else {
        return;
    };
    let q = form_encode(query);
    let t0 = T0_MS as f64 / 1000.0;
    let step = STEP_MS as f64 / 1000.0;
    let uri = match sel % 6 {
        0 => format!("/api/v1/query?query={q}&time={}", t0 + 301.5),
        1 => format!(
            "/api/v1/query_range?query={q}&start={t0}&end={}&step={step}",
            t0 + 600.0
        ),
        2 => format!(
            "/api/v1/query_range?query={q}&start={}&end={}&step=7",
            t0 - 60.0,
            t0 + 60.0
        ),
        3 => format!("/api/v1/series?match[]={q}&start={t0}&end={}", t0 + 600.0),
        4 => format!("/federate?match[]={q}"),
        _ => format!("/api/v1/query?query={q}&time={}", t0 + 599.0),
    };
    let req = if sel & 0x80 != 0 {
        // the POST form of the same request
        let (path, body) = uri.split_once('?').unwrap_or((&uri, ""));
        Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.to_string()))
    } else {
        Request::get(&uri).body(Body::empty())
    };
    let Ok(req) = req else { return };
    let (status, body) = send(req);
    assert_not_server_error("promql", status, &body);
});
