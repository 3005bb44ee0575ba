//! The agent's self-metrics (`vigil_agent_*`), one prometheus-client registry.
