//! Alertmanager webhook notifications (version 4 JSON) as the actions
//! engine's webhook receiver parses and validates them, then the per-alert
//! deduplication keys the engine acts on.
//! Property: no panic; a payload that parses has only firing or resolved
//! alerts, each with labels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_collector::actions::alertmanager;

fuzz_target!(|data: &[u8]| {
    let Ok(n) = alertmanager::parse(data) else {
        return;
    };
    for a in &n.alerts {
        assert!(a.status == "firing" || a.status == "resolved");
        assert!(!a.labels.is_empty());
        let _ = a.dedup_key();
    }
});
