//! Wires the collector together for `vigil-collector run`.

use std::path::PathBuf;

use crate::config::Config;

/// `vigil-collector run`. `config_file` is kept for reloads (SIGHUP).
pub fn main(_config: Config, _config_file: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!("the run command is being wired up")
}
