//! The collector's self-metrics (`vigil_collector_*`).
