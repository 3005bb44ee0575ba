//! Wires the agent together for `vigil-agent run`, and one-shot `scrape`.

use crate::config::Config;
use crate::model::Scrape;

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One scrape of every reader.
pub fn collect(config: &Config) -> Scrape {
    let mut scrape = Scrape::new(now_ms());
    for e in crate::node::NodeReader::new(&config.host_root).scrape(&mut scrape) {
        tracing::warn!(error = %e, "node reader");
    }
    scrape
}

/// `vigil-agent scrape`: one scrape in Prometheus text format.
pub fn scrape_once(config: &Config) -> anyhow::Result<String> {
    Ok(collect(config).encode_text(Some(&config.node_name)))
}

/// `vigil-agent run`.
pub fn main(_config: Config) -> anyhow::Result<()> {
    anyhow::bail!("the run command is being wired up")
}
