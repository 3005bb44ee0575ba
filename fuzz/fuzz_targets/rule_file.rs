//! Prometheus rule files as `vigil-collector check rules` and the rule
//! manager load them (YAML, durations, PromQL expressions, label and
//! annotation templates), then every group built and evaluated twice over a
//! tiny store (alert state, `for`, templates expanded).
//! Property: no panic; a file that parses builds groups.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vigil_collector::promql::Engine;
use vigil_collector::rules::file;
use vigil_collector::rules::group::{EvalEnv, Group};
use vigil_collector::store::Store;
use vigil_common::Labels;
use vigil_fuzz::{STEP_MS, T0_MS};

fn store() -> &'static Arc<Store> {
    static S: OnceLock<Arc<Store>> = OnceLock::new();
    S.get_or_init(vigil_fuzz::tiny_store)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = file::parse("fuzz.yml", text) else {
        return;
    };
    let _ = file::duplicates(&f);
    let engine = Engine::default();
    let external = Labels::new([("cluster".to_string(), "c1".to_string())]);
    let env = EvalEnv {
        engine: &engine,
        store: store(),
        external_labels: &external,
        external_url: "http://vigil.example:9490",
        resend_delay_ms: 60_000,
        remote: None,
    };
    for spec in &f.groups {
        let mut g = Group::from_spec(spec, 60_000).expect("a parsed group builds");
        let _ = g.eval(T0_MS + 10 * STEP_MS, &env);
        let _ = g.eval(T0_MS + 30 * STEP_MS, &env);
    }
});
