//! Alert templates (Go text/template with Prometheus' functions: humanize,
//! query, reReplaceAll, printf, …) as rule annotations and labels use them:
//! parsed with `Template::new`, expanded with alert labels, a value and a
//! query function over a tiny store.
//! Property: no panic; parsing fails or expansion returns text or an error.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vigil_collector::promql::Engine;
use vigil_collector::rules::group::template_query;
use vigil_collector::rules::template::{AlertData, Template};
use vigil_collector::store::Store;
use vigil_fuzz::{T0_MS, labels};

fn store() -> &'static Arc<Store> {
    static S: OnceLock<Arc<Store>> = OnceLock::new();
    S.get_or_init(vigil_fuzz::tiny_store)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(t) = Template::new("__alert_Fuzz", text) else {
        return;
    };
    let l = labels(&[
        ("alertname", "Fuzz"),
        ("instance", "a:9100"),
        ("job", "api"),
        ("severity", "critical"),
    ]);
    let ext = labels(&[("cluster", "c1")]);
    let value = [
        0.0,
        1.5,
        -3.0,
        1e21,
        f64::NAN,
        f64::INFINITY,
        1234567.891,
        5e-9,
    ][usize::from(sel % 8)];
    let data = AlertData {
        labels: &l,
        external_labels: &ext,
        external_url: "http://vigil.example:9490",
        value,
    };
    let q = template_query(&Engine::default(), store(), T0_MS + 300_000);
    let _ = t.expand(&data, Some(q));
});
