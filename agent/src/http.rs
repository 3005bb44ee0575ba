//! The agent's HTTP endpoint: `/metrics`, `/-/healthy`, `/-/ready`.
