//! The limits every series and sample must respect to be stored, whoever
//! sends it (agents, remote write, pushes); a leaf that ingest, the push
//! receivers and the configuration all read.

/// What a series and a sample must respect to be stored, whoever sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    pub max_label_names: usize,
    pub max_name_length: usize,
    pub max_value_length: usize,
    /// Milliseconds a timestamp may be ahead of the collector's clock.
    pub max_future_ms: i64,
    /// Series per remote-write request.
    pub max_series_per_request: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits {
            max_label_names: 40,
            max_name_length: 1024,
            max_value_length: 4096,
            max_future_ms: 10 * 60 * 1000,
            max_series_per_request: 50_000,
        }
    }
}
