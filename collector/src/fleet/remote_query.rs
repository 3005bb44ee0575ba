//! Gateway mode's queries: rules and autoscalers evaluate against a remote
//! Prometheus-compatible query API (`--query-url`: vmselect's
//! `/select/<tenant>/prometheus`, Mimir's `/prometheus`, Prometheus itself)
//! instead of the collector's own store — one instant query per rule, as
//! vmalert does (`POST <query_url>/api/v1/query`, form `query`, `time`).
//!
//! The answer is a vector or a scalar; anything else, an error envelope, a
//! non-2xx status, a timeout or an unreachable API is an error of that
//! evaluation (the rule's health says why; the autoscaler decides nothing —
//! never "no data means zero").
//!
//! Rules evaluate on blocking threads and the autoscalers' trait is
//! synchronous, so [`RemoteQuery::instant_blocking`] runs the request on the
//! collector's runtime from either (see there).
//!
//! Not here: PromQL evaluation (the remote engine does it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;
use vigil_common::Labels;

use crate::promql::QueryError;

/// A remote query API.
#[derive(Clone, Debug)]
pub struct RemoteQuery {
    url: String,
    headers: reqwest::header::HeaderMap,
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("query_url: {0}")]
pub struct RemoteQueryConfigError(String);

impl RemoteQuery {
    /// `url` is the API's base (what precedes `/api/v1/query`); `headers`
    /// are `Name: value` pairs sent with every query (e.g. Mimir's
    /// `X-Scope-OrgID`). Must be called inside the collector's runtime.
    pub fn new(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Self, RemoteQueryConfigError> {
        crate::tls::ensure_crypto_provider();
        let url = url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(RemoteQueryConfigError(format!(
                "{url:?} must be an http(s) URL like http://vmselect:8481/select/0/prometheus"
            )));
        }
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| RemoteQueryConfigError(format!("header {k:?}: {e}")))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|e| RemoteQueryConfigError(format!("header {k:?}: {e}")))?;
            map.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| RemoteQueryConfigError(e.to_string()))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            RemoteQueryConfigError("must be created inside the collector's runtime".into())
        })?;
        Ok(RemoteQuery {
            url,
            headers: map,
            http,
            runtime,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The samples of `expr` at `time_ms`: a vector's samples, or a scalar
    /// as one sample without labels.
    pub async fn instant(
        &self,
        expr: &str,
        time_ms: i64,
    ) -> Result<Vec<(Labels, f64)>, QueryError> {
        let time = format!(
            "{}.{:03}",
            time_ms.div_euclid(1000),
            time_ms.rem_euclid(1000)
        );
        let resp = self
            .http
            .post(format!("{}/api/v1/query", self.url))
            .headers(self.headers.clone())
            .form(&[("query", expr), ("time", time.as_str())])
            .send()
            .await
            .map_err(|e| exec(format!("remote query {}: {e}", self.url)))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| exec(format!("remote query {}: {e}", self.url)))?;
        parse_answer(status.as_u16(), &body)
    }

    /// [`Self::instant`] from synchronous code: on a plain thread or a
    /// blocking thread (rule evaluation runs in `spawn_blocking`) it waits on
    /// the runtime; on a worker of the multi-thread runtime (the
    /// autoscalers) it lets the worker block (`block_in_place`) while the
    /// other workers drive the request. Never call it from a current-thread
    /// runtime's own thread (nothing would drive the request); the
    /// collector's runtime is multi-threaded.
    pub fn instant_blocking(
        &self,
        expr: &str,
        time_ms: i64,
    ) -> Result<Vec<(Labels, f64)>, QueryError> {
        let fut = self.instant(expr, time_ms);
        match tokio::runtime::Handle::try_current() {
            Err(_) => self.runtime.block_on(fut),
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.runtime.block_on(fut))
            }
            // a blocking thread of a current-thread runtime (tests): wait
            // on another thread, the runtime's own thread drives the I/O
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| self.runtime.block_on(fut))
                    .join()
                    .unwrap_or_else(|_| Err(exec("remote query thread failed".into())))
            }),
        }
    }
}

fn exec(msg: String) -> QueryError {
    QueryError::Execution { msg }
}

/// Reads the Prometheus API's answer.
fn parse_answer(status: u16, body: &str) -> Result<Vec<(Labels, f64)>, QueryError> {
    let v: Json = serde_json::from_str(body).map_err(|e| {
        exec(format!(
            "remote query answered {status} with no JSON envelope: {e}: {}",
            body.chars().take(200).collect::<String>()
        ))
    })?;
    if v["status"] != "success" {
        let kind = v["errorType"].as_str().unwrap_or("error");
        let msg = v["error"].as_str().unwrap_or("no error message");
        return Err(exec(format!(
            "remote query answered {status} ({kind}): {msg}"
        )));
    }
    if !(200..300).contains(&status) {
        return Err(exec(format!("remote query answered {status}")));
    }
    let data = &v["data"];
    let value = |pair: &Json| -> Result<f64, QueryError> {
        let s = pair
            .get(1)
            .and_then(|x| x.as_str())
            .ok_or_else(|| exec(format!("remote query: sample without a value: {pair}")))?;
        parse_float(s).ok_or_else(|| exec(format!("remote query: bad sample value {s:?}")))
    };
    match data["resultType"].as_str() {
        Some("vector") => {
            let items = data["result"]
                .as_array()
                .ok_or_else(|| exec("remote query: vector without result".into()))?;
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                let metric: BTreeMap<String, String> = it["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((Labels::new(metric), value(&it["value"])?));
            }
            Ok(out)
        }
        Some("scalar") => Ok(vec![(Labels::default(), value(&data["result"])?)]),
        Some(other) => Err(exec(format!(
            "rule result is not a vector or scalar (the remote API answered a {other})"
        ))),
        None => Err(exec("remote query: answer without resultType".into())),
    }
}

/// Prometheus's float spelling (`NaN`, `+Inf`, `-Inf`, decimals).
fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Rule expressions go to the remote API.
impl crate::rules::group::RuleQuerier for RemoteQuery {
    fn query(&self, expr: &str, ts_ms: i64) -> Result<Vec<(Labels, f64)>, QueryError> {
        self.instant_blocking(expr, ts_ms)
    }
}

/// The autoscalers' queries go to the remote API.
impl crate::actions::source::MetricSource for RemoteQuery {
    fn query(&self, expr: &str, at_ms: i64) -> crate::actions::source::QueryResult {
        Ok(self.instant_blocking(expr, at_ms)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_like_prometheus_writes_them() {
        let v = parse_answer(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"__name__":"up","job":"a"},"value":[1700000000.5,"1"]},
                {"metric":{},"value":[1700000000.5,"NaN"]}]}}"#,
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, Labels::new([("__name__", "up"), ("job", "a")]));
        assert_eq!(v[0].1, 1.0);
        assert!(v[1].1.is_nan());
        let s = parse_answer(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#,
        )
        .unwrap();
        assert_eq!(s, vec![(Labels::default(), f64::INFINITY)]);
        for (status, body, want) in [
            (
                400,
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
                "parse error",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "matrix",
            ),
            (503, "<html>", "no JSON"),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
                "bad sample",
            ),
            (200, r#"{"status":"success","data":{}}"#, "resultType"),
        ] {
            let e = parse_answer(status, body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_reach_a_real_http_api_from_blocking_and_async_code() {
        use axum::routing::post;
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(
            Vec::<(String, Option<String>)>::new(),
        ));
        let s2 = seen.clone();
        let app = axum::Router::new().route(
            "/prom/api/v1/query",
            post(move |headers: axum::http::HeaderMap, body: String| {
                let s2 = s2.clone();
                async move {
                    let tenant = headers
                        .get("x-scope-orgid")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    s2.lock().push((body, tenant));
                    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1,"42"]}]}}"#
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        let q = RemoteQuery::new(
            &format!("http://{addr}/prom/"),
            &[("X-Scope-OrgID".into(), "team-a".into())],
            Duration::from_secs(5),
        )
        .unwrap();
        // from a blocking thread, as rule evaluation runs
        let q2 = q.clone();
        let v = tokio::task::spawn_blocking(move || {
            crate::rules::group::RuleQuerier::query(&q2, "sum(up)", 1_700_000_000_123)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(v, vec![(Labels::new([("a", "b")]), 42.0)]);
        // from async code, as the autoscalers run
        let v = crate::actions::source::MetricSource::query(&q, "x", 5).unwrap();
        assert_eq!(v[0].1, 42.0);
        let seen = seen.lock().clone();
        assert_eq!(seen[0].0, "query=sum%28up%29&time=1700000000.123");
        assert_eq!(seen[0].1.as_deref(), Some("team-a"));
        assert_eq!(seen[1].0, "query=x&time=0.005");
        // an API that is not there: an error, not a hang or a panic
        let gone = RemoteQuery::new("http://127.0.0.1:1", &[], Duration::from_secs(2)).unwrap();
        assert!(gone.instant("up", 0).await.is_err());
        assert!(RemoteQuery::new("vmselect:8481", &[], Duration::from_secs(1)).is_err());
        assert!(
            RemoteQuery::new(
                "http://x",
                &[("bad name".into(), "v".into())],
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
