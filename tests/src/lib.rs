//! Harness for end-to-end tests: finds the built binaries, picks free
//! loopback ports, starts and kills processes, and reads HTTP endpoints.

pub mod prom;
