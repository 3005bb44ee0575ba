//! Wires the agent together for `vigil-agent run`, and one-shot `scrape`.

use crate::config::Config;

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `vigil-agent scrape`: one scrape in Prometheus text format.
pub fn scrape_once(config: &Config) -> anyhow::Result<String> {
    let (scrape, report) = crate::scrape::Scraper::new(config).scrape();
    for (reader, e) in report.errors {
        tracing::warn!(reader, error = %e, "scrape error");
    }
    Ok(scrape.encode_text(Some(&config.node_name)))
}

/// `vigil-agent run`.
pub fn main(_config: Config) -> anyhow::Result<()> {
    anyhow::bail!("the run command is being wired up")
}
