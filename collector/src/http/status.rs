//! Status endpoints in Prometheus' shapes, for the web UI and for people
//! with curl: `/api/v1/status/tsdb` (cardinality, bounded by `limit`),
//! `/api/v1/status/flags` and `/api/v1/status/config` (the settings as
//! given, secrets hidden), `/api/v1/status/runtimeinfo`, and vigil's own
//! `/api/v1/status/agents` (the ingest roster).
//!
//! Every answer is bounded whatever the store holds: the cardinality lists
//! by `limit` (default 10, at most 10,000), the agents by the roster's
//! bound.
//!
//! Secrets: flags name files, never secrets; the YAML-only forwarding
//! entries may carry passwords, credentials and headers — [`redact`] hides
//! them (and the password of a URL) as `<secret>`, as Prometheus does.
//!
//! Not here: the actions view (`actions_overview`), the web UI's assets
//! (`crate::ui`).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args as _;
use promql_parser::parser::Expr;
use serde_json::{Value as Json, json};

use super::AppState;
use super::api::Params;
use crate::config::{Given, Settings};
use crate::store::Matcher;
use crate::store::cardinality::{MAX_LIMIT, Stat};

/// What the status pages show besides the store: set once at start.
#[derive(Clone, Debug, Default)]
pub struct StatusInfo {
    /// When the collector started (Unix ms).
    pub start_ms: i64,
    /// The settings as given (None in tests that build an app by hand).
    pub given: Option<Given>,
    pub retention: std::time::Duration,
    pub data_dir: std::path::PathBuf,
    pub self_scrape_interval: std::time::Duration,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/status/tsdb", get(tsdb))
        .route("/api/v1/status/flags", get(flags))
        .route("/api/v1/status/config", get(config))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo))
        .route("/api/v1/status/agents", get(agents))
}

fn success(data: Json) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"status": "success", "data": data})),
    )
        .into_response()
}

fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"status": "error", "errorType": "bad_data", "error": msg.into()})),
    )
        .into_response()
}

fn stats(v: &[Stat]) -> Json {
    Json::Array(
        v.iter()
            .map(|s| json!({"name": s.name, "value": s.value}))
            .collect(),
    )
}

/// `GET /api/v1/status/tsdb?limit=N[&match[]=SELECTOR][&focusLabel=NAME]`:
/// Prometheus' TSDB status (top `limit` of each list), optionally over the
/// series one selector matches, with the series per value of `focusLabel`
/// (VictoriaMetrics' extension for its cardinality explorer).
async fn tsdb(State(s): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::new(raw, &HeaderMap::new(), &[]);
    let limit = match p.get("limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return bad(format!(
                "invalid parameter \"limit\": a whole number from 1 to {MAX_LIMIT}"
            ));
        }
    };
    let selectors = p.all("match[]");
    let matchers: Vec<Matcher> = match selectors.as_slice() {
        [] => Vec::new(),
        [one] if one.trim().is_empty() => Vec::new(),
        [one] => match selector(one) {
            Ok(m) => m,
            Err(e) => return bad(format!("invalid parameter \"match[]\": {e}")),
        },
        _ => return bad("at most one match[] selector"),
    };
    let focus = p.get("focusLabel").map(str::to_string);
    let store = s.store.clone();
    let Ok(c) =
        tokio::task::spawn_blocking(move || store.cardinality(&matchers, focus.as_deref(), limit))
            .await
    else {
        return bad("the statistics task failed");
    };
    let st = s.store.stats();
    let mut data = json!({
        "headStats": {
            "numSeries": c.series,
            "numLabelPairs": c.label_pairs,
            "chunkCount": st.sealed_chunks,
            "numSamples": st.samples,
        },
        "seriesCountByMetricName": stats(&c.series_count_by_metric_name),
        "labelValueCountByLabelName": stats(&c.label_value_count_by_label_name),
        "memoryInBytesByLabelName": stats(&c.memory_in_bytes_by_label_name),
        "seriesCountByLabelValuePair": stats(&c.series_count_by_label_value_pair),
    });
    if p.get("focusLabel").is_some() {
        data["seriesCountByFocusLabelValue"] = stats(&c.series_count_by_focus_label_value);
    }
    success(data)
}

/// One series selector (`{a="b"}` or `name{…}`) as store matchers.
fn selector(text: &str) -> Result<Vec<Matcher>, String> {
    let e = crate::promql::parse(text).map_err(|e| e.to_string())?;
    let Expr::VectorSelector(vs) = e else {
        return Err(format!("{text:?} is not a series selector"));
    };
    let mut branches = crate::promql::selector_matchers(&vs).map_err(|e| e.to_string())?;
    match branches.len() {
        1 => Ok(branches.remove(0)),
        _ => Err(format!("{text:?}: use one selector without `or`")),
    }
}

/// `GET /api/v1/status/flags`: every flag (without `--`) and its value as
/// given, or its default.
async fn flags(State(s): State<AppState>) -> Response {
    let given = s.status.given.clone().unwrap_or_default();
    success(json!(flag_values(&given.0)))
}

/// Flag name → value as given (lists comma-separated), else the default
/// from its help text (`[default: …]`), else empty.
pub fn flag_values(given: &Settings) -> BTreeMap<String, String> {
    let mut set = serde_json::to_value(given).unwrap_or_default();
    redact(&mut set);
    let cmd = Settings::augment_args(clap::Command::new("vigil-collector"));
    let mut out = BTreeMap::new();
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        let value = match set.get(a.get_id().as_str()) {
            Some(Json::String(v)) => Some(v.clone()),
            Some(Json::Array(items)) if !items.is_empty() => Some(
                items
                    .iter()
                    .map(|i| match i {
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Some(Json::Null) | Some(Json::Array(_)) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let value = value.unwrap_or_else(|| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            help.split_once("[default: ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(d, _)| d.to_string())
                .unwrap_or_default()
        });
        out.insert(long.to_string(), value);
    }
    out
}

/// `GET /api/v1/status/config`: the settings as given (file, environment
/// and flags layered), as YAML, secrets hidden.
async fn config(State(s): State<AppState>) -> Response {
    let given = s.status.given.clone().unwrap_or_default();
    let mut v = serde_json::to_value(&given.0).unwrap_or_default();
    redact(&mut v);
    match serde_saphyr::to_string(&v) {
        Ok(yaml) => success(json!({ "yaml": yaml })),
        Err(e) => bad(format!("cannot render the configuration: {e}")),
    }
}

/// Object keys whose values are secrets, wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "password",
    "credentials",
    "secret",
    "client_secret",
    "bearer_token",
    "token",
    "secret_key",
    "access_key",
];

/// Hides secrets in a settings tree: values of [`SECRET_KEYS`], every
/// header value, and the password of a URL.
pub fn redact(v: &mut Json) {
    match v {
        Json::Object(m) => {
            for (k, val) in m.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) && !val.is_null() {
                    *val = Json::String("<secret>".into());
                } else if k == "headers"
                    && let Json::Object(h) = val
                {
                    for hv in h.values_mut() {
                        *hv = Json::String("<secret>".into());
                    }
                } else {
                    redact(val);
                }
            }
        }
        Json::Array(a) => a.iter_mut().for_each(redact),
        Json::String(s) => {
            if s.contains("://")
                && s.contains('@')
                && let Ok(mut u) = reqwest::Url::parse(s)
                && u.password().is_some()
                && u.set_password(Some("secret")).is_ok()
            {
                *s = u.to_string().replacen(":secret@", ":<secret>@", 1);
            }
        }
        _ => {}
    }
}

/// `GET /api/v1/status/runtimeinfo`: Prometheus' runtime information, the
/// fields that mean something here (the rules' reload state is the
/// self-scraped `vigil_collector_rules_config_last_reload_successful`).
async fn runtimeinfo(State(s): State<AppState>) -> Response {
    let st = &s.status;
    success(json!({
        "startTime": vigil_common::time::format_rfc3339_millis(st.start_ms),
        "CWD": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "corruptionCount": s.store.stats().corrupt_chunks,
        "storageRetention": vigil_common::duration::Duration(st.retention).to_string(),
        "dataDir": st.data_dir.display().to_string(),
        "selfScrapeInterval": vigil_common::duration::Duration(st.self_scrape_interval).to_string(),
        "version": crate::VERSION,
    }))
}

/// `GET /api/v1/status/agents`: the agents the ingest roster knows, with
/// the collector's clock (`now`, Unix ms) to judge the ages by.
async fn agents(State(s): State<AppState>) -> Response {
    let list = s
        .ingest
        .as_ref()
        .map(|c| c.roster.list())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    success(json!({ "now": now, "agents": list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_wherever_they_are() {
        let mut v = json!({
            "http_listen": "0.0.0.0:9490",
            "read_token_file": ["/etc/vigil/read"],
            "remote_write": [{
                "url": "https://user:hunter2@vm.example/api/v1/write",
                "basic_auth": {"username": "u", "password": "hunter2"},
                "authorization": {"type": "Bearer", "credentials": "hunter2"},
                "headers": {"X-Api-Key": "hunter2"},
            }],
        });
        redact(&mut v);
        let text = v.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(v["remote_write"][0]["basic_auth"]["username"], "u");
        assert_eq!(v["remote_write"][0]["headers"]["X-Api-Key"], "<secret>");
        assert_eq!(
            v["remote_write"][0]["url"],
            "https://user:<secret>@vm.example/api/v1/write"
        );
        assert_eq!(v["read_token_file"][0], "/etc/vigil/read");
    }

    #[test]
    fn flags_show_values_as_given_or_their_defaults() {
        let s = Settings {
            retention: Some("2d".parse().unwrap()),
            rules: vec!["a.yml".into(), "b/*.yml".into()],
            ..Default::default()
        };
        let f = flag_values(&s);
        assert_eq!(f["retention"], "2d");
        assert_eq!(f["rules"], "a.yml,b/*.yml");
        assert_eq!(f["http-listen"], "0.0.0.0:9490");
        assert_eq!(f["query-timeout"], "2m");
        // every flag of --help is listed
        let cmd = Settings::augment_args(clap::Command::new("x"));
        assert_eq!(
            f.len(),
            cmd.get_arguments()
                .filter(|a| a.get_long().is_some())
                .count()
        );
    }
}
