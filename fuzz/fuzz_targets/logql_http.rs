//! LogQL requests through the collector's Loki API (parse, log selection and
//! metric evaluation over a tiny log store): `/loki/api/v1/query_range`,
//! `/loki/api/v1/query` and `/loki/api/v1/series`. The first byte picks the
//! endpoint, direction and limit; the rest is the query.
//! Properties: no panic, no stack overflow, no 5xx other than 503.
#![no_main]

use axum::body::Body;
use http::Request;
use libfuzzer_sys::fuzz_target;
use vigil_fuzz::{T0_MS, assert_not_server_error, form_encode, send};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, query)) = data.split_first() else {
        return;
    };
    let q = form_encode(query);
    let start = T0_MS * 1_000_000;
    let end = start + 600 * 1_000_000_000;
    let dir = if sel & 0x40 != 0 {
        "backward"
    } else {
        "forward"
    };
    let limit = [1, 10, 100, 5000][usize::from(sel >> 4 & 3)];
    let uri = match sel % 4 {
        0 => format!(
            "/loki/api/v1/query_range?query={q}&start={start}&end={end}&direction={dir}&limit={limit}"
        ),
        1 => format!(
            "/loki/api/v1/query_range?query={q}&start={start}&end={end}&step=60&limit={limit}"
        ),
        2 => format!("/loki/api/v1/query?query={q}&time={end}&limit={limit}"),
        _ => format!("/loki/api/v1/series?match[]={q}&start={start}&end={end}"),
    };
    let Ok(req) = Request::get(&uri).body(Body::empty()) else {
        return;
    };
    let (status, body) = send(req);
    assert_not_server_error("logql", status, &body);
});
