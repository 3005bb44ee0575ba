//! After a run: asks the collector's query API, agent by agent, whether every
//! series holds every counter value the load generator produced — exactly
//! once (`count_over_time` = `max_over_time` = ticks generated,
//! `min_over_time` = 1: a counter that rises by one per tick has no gap and no
//! extra sample when those three agree).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::agent::{Agent, METRIC};

/// What the check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    pub series_expected: u64,
    pub series_checked: u64,
    pub series_ok: u64,
    pub samples_expected: u64,
    pub samples_found: u64,
    /// Expected samples not found (summed over series).
    pub samples_missing: u64,
    /// Samples found beyond the expected ones (summed over series).
    pub samples_extra: u64,
    /// The first problems, worded (at most 20).
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.series_ok == self.series_expected
            && self.samples_missing == 0
            && self.samples_extra == 0
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }
}

pub struct Verifier {
    pub base: String,
    pub token: Option<String>,
    pub client: reqwest::Client,
}

impl Verifier {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Verifier {
            base: base.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    /// Instant query at `time_s`: series label `series` → value.
    async fn query(&self, q: &str, time_s: f64) -> anyhow::Result<HashMap<String, f64>> {
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", q)
            .append_pair("time", &format!("{time_s:.3}"))
            .finish();
        let url = format!("{}/api/v1/query?{qs}", self.base);
        let mut req = self.client.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("query {url}: {e}"))?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!(
                "query {q:?}: HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            );
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| anyhow::anyhow!("query {q:?}: answer is not JSON: {e}"))?;
        let mut out = HashMap::new();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let series = r["metric"]["series"].as_str().unwrap_or("").to_string();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            out.insert(series, value);
        }
        Ok(out)
    }

    /// Checks every series of every agent; `since_ms` is when the run began.
    pub async fn check(
        &self,
        agents: &[std::sync::Arc<Agent>],
        run: &str,
        series: u32,
        since_ms: i64,
    ) -> anyhow::Result<Verdict> {
        let now_ms = vigil_common::time::now_ms();
        let time_s = now_ms as f64 / 1000.0;
        // the window reaches a minute before the first tick
        let range_s = ((now_ms - since_ms) / 1000 + 60).max(60);
        let mut v = Verdict::default();
        for a in agents {
            let ticks = a.generated.load(std::sync::atomic::Ordering::Relaxed);
            v.series_expected += u64::from(series);
            v.samples_expected += ticks * u64::from(series);
            let sel = format!("{METRIC}{{run=\"{run}\",node=\"{}\"}}[{range_s}s]", a.node);
            let count = self
                .query(&format!("count_over_time({sel})"), time_s)
                .await?;
            let max = self.query(&format!("max_over_time({sel})"), time_s).await?;
            let min = self.query(&format!("min_over_time({sel})"), time_s).await?;
            for i in 0..series {
                let key = i.to_string();
                let Some(&c) = count.get(&key) else {
                    if ticks > 0 {
                        v.samples_missing += ticks;
                        v.problem(format!("{}: series {i} is missing", a.node));
                    } else {
                        v.series_ok += 1;
                    }
                    continue;
                };
                v.series_checked += 1;
                let c = c as u64;
                v.samples_found += c;
                let hi = max.get(&key).copied().unwrap_or(f64::NAN);
                let lo = min.get(&key).copied().unwrap_or(f64::NAN);
                if c < ticks {
                    v.samples_missing += ticks - c;
                } else {
                    v.samples_extra += c - ticks;
                }
                if c == ticks && hi == ticks as f64 && lo == 1.0 {
                    v.series_ok += 1;
                } else {
                    v.problem(format!(
                        "{}: series {i}: {c} samples, min {lo}, max {hi}; expected {ticks} samples 1..={ticks}",
                        a.node
                    ));
                }
            }
        }
        Ok(v)
    }
}
