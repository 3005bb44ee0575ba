//! Engine tests on hand-written series.

use super::*;
use crate::store::{STALE_NAN, Store, StoreOptions};

type Fixture<'a> = &'a [(&'a [(&'a str, &'a str)], &'a [(i64, f64)])];

fn store(series: Fixture<'_>) -> Store {
    let s = Store::new(StoreOptions::default());
    for (labels, samples) in series {
        let r = s
            .get_or_create(&Labels::new(labels.iter().copied()))
            .unwrap();
        for (t, v) in *samples {
            s.append(r, *t, *v).unwrap();
        }
    }
    s
}

fn vector(v: Value) -> Vec<(String, f64)> {
    match v {
        Value::Vector(v) => {
            let mut out: Vec<(String, f64)> =
                v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        other => panic!("not a vector: {other:?}"),
    }
}

#[test]
fn smoke() {
    let s = store(&[(
        &[("__name__", "up"), ("job", "a")],
        &[(0, 1.0), (15_000, 2.0)],
    )]);
    let e = Engine::default();
    assert_eq!(
        vector(e.instant(&s, "up", 20_000).unwrap()),
        vec![("up{job=\"a\"}".into(), 2.0)]
    );
    let _ = STALE_NAN;
}
