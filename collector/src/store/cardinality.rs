//! Cardinality statistics of the store: what Prometheus's
//! `/api/v1/status/tsdb` reports (series per metric name, values per label
//! name, bytes of values per label name, series per label pair), bounded to
//! the top `limit` of each, optionally over the series a selector matches
//! and with the series per value of one "focus" label (as VictoriaMetrics'
//! cardinality explorer does).
//!
//! Over the whole store the figures come from the postings alone (one pass
//! over label pairs, no series touched); with a selector, each matching
//! series' label set is read once. Either way the answer holds at most
//! `5 × limit` entries, however many series there are.
//!
//! Not here: the HTTP shape (`crate::http::status`).

use std::collections::HashMap;

use super::{Matcher, Store};

/// Most entries per list a caller may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// One entry of a top list: a name (metric, label, or `label=value`) and
/// its count (series, values or bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub name: String,
    pub value: u64,
}

/// The statistics; every list is sorted by value, largest first (then by
/// name), and cut to the requested limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cardinality {
    /// Series counted (all live series, or those the selector matched).
    pub series: u64,
    /// Distinct label pairs among them.
    pub label_pairs: u64,
    pub series_count_by_metric_name: Vec<Stat>,
    pub label_value_count_by_label_name: Vec<Stat>,
    pub memory_in_bytes_by_label_name: Vec<Stat>,
    pub series_count_by_label_value_pair: Vec<Stat>,
    /// Only with a focus label.
    pub series_count_by_focus_label_value: Vec<Stat>,
}

/// `(name symbol, value symbol)` → series.
type PairCounts = HashMap<(u32, u32), u64>;

impl Store {
    /// Statistics over every live series (`matchers` empty) or over those
    /// matching `matchers`, each list cut to `limit` (at most
    /// [`MAX_LIMIT`]).
    pub fn cardinality(
        &self,
        matchers: &[Matcher],
        focus_label: Option<&str>,
        limit: usize,
    ) -> Cardinality {
        let limit = limit.clamp(1, MAX_LIMIT);
        let idx = self.index.read();
        let (series, pairs): (u64, PairCounts) = if matchers.is_empty() {
            let mut pairs = PairCounts::new();
            for (n, vals) in &idx.postings {
                for (v, ids) in vals {
                    pairs.insert((*n, *v), ids.len() as u64);
                }
            }
            (idx.live() as u64, pairs)
        } else {
            let ids = idx.select(matchers);
            let mut pairs = PairCounts::new();
            let mut n = 0u64;
            for id in ids {
                self.with_series(id, |s| {
                    n += 1;
                    for p in s.labels.chunks_exact(2) {
                        *pairs.entry((p[0], p[1])).or_insert(0) += 1;
                    }
                });
            }
            (n, pairs)
        };
        let name_sym = idx.symbols.lookup("__name__");
        let focus_sym = focus_label.and_then(|f| idx.symbols.lookup(f));
        let mut values_per_name: HashMap<u32, u64> = HashMap::new();
        let mut bytes_per_name: HashMap<u32, u64> = HashMap::new();
        let mut by_metric = Vec::new();
        let mut by_focus = Vec::new();
        let mut by_pair = Vec::with_capacity(pairs.len());
        for (&(n, v), &count) in &pairs {
            *values_per_name.entry(n).or_insert(0) += 1;
            *bytes_per_name.entry(n).or_insert(0) += idx.symbols.get(v).len() as u64 * count;
            if Some(n) == name_sym {
                by_metric.push((v, count));
            }
            if Some(n) == focus_sym {
                by_focus.push((v, count));
            }
            by_pair.push(((n, v), count));
        }
        let name = |s: u32| idx.symbols.get(s).to_string();
        let pair = |(n, v): (u32, u32)| format!("{}={}", idx.symbols.get(n), idx.symbols.get(v));
        Cardinality {
            series,
            label_pairs: pairs.len() as u64,
            series_count_by_metric_name: top(by_metric, limit, name),
            label_value_count_by_label_name: top(
                values_per_name.into_iter().collect(),
                limit,
                name,
            ),
            memory_in_bytes_by_label_name: top(bytes_per_name.into_iter().collect(), limit, name),
            series_count_by_label_value_pair: top(by_pair, limit, pair),
            series_count_by_focus_label_value: top(by_focus, limit, name),
        }
    }
}

/// The `limit` largest entries, largest first, ties by name.
fn top<K: Copy>(mut v: Vec<(K, u64)>, limit: usize, name: impl Fn(K) -> String) -> Vec<Stat> {
    // partial selection first: `v` may hold every label pair of the store
    if v.len() > limit {
        v.select_nth_unstable_by(limit - 1, |a, b| b.1.cmp(&a.1));
        // entries tied with the last kept one may sit on either side: keep
        // them all for now so the tie-break by name is exact
        let cut = v[limit - 1].1;
        let (head, tail) = v.split_at_mut(limit);
        let mut extra: Vec<(K, u64)> = tail.iter().copied().filter(|e| e.1 == cut).collect();
        let mut kept: Vec<(K, u64)> = head.to_vec();
        kept.append(&mut extra);
        v = kept;
    }
    let mut out: Vec<Stat> = v
        .into_iter()
        .map(|(k, value)| Stat {
            name: name(k),
            value,
        })
        .collect();
    out.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.name.cmp(&b.name)));
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use vigil_common::Labels;

    fn store() -> Store {
        let s = Store::new(StoreOptions::default());
        let add = |pairs: &[(&str, &str)]| {
            let l = Labels::new(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())));
            let r = s.get_or_create(&l).unwrap();
            s.append(r, 1_000, 1.0).unwrap();
        };
        for i in 0..5 {
            add(&[("__name__", "cpu"), ("pod", &format!("p{i}")), ("ns", "a")]);
        }
        for i in 0..3 {
            add(&[("__name__", "mem"), ("pod", &format!("p{i}")), ("ns", "b")]);
        }
        add(&[("__name__", "up"), ("job", "x")]);
        s
    }

    fn stats(v: &[Stat]) -> Vec<(&str, u64)> {
        v.iter().map(|s| (s.name.as_str(), s.value)).collect()
    }

    #[test]
    fn whole_store_from_the_postings() {
        let c = store().cardinality(&[], Some("ns"), 2);
        assert_eq!(c.series, 9);
        // __name__ 3 values, pod 5, ns 2, job 1
        assert_eq!(c.label_pairs, 3 + 5 + 2 + 1);
        assert_eq!(
            stats(&c.series_count_by_metric_name),
            [("cpu", 5), ("mem", 3)]
        );
        assert_eq!(
            stats(&c.label_value_count_by_label_name),
            [("pod", 5), ("__name__", 3)]
        );
        // __name__: 3 bytes × 5 + 3 × 3 + 2 × 1 = 26; pod: 2 bytes × 8 = 16
        assert_eq!(
            stats(&c.memory_in_bytes_by_label_name),
            [("__name__", 26), ("pod", 16)]
        );
        assert_eq!(
            stats(&c.series_count_by_label_value_pair),
            [("__name__=cpu", 5), ("ns=a", 5)]
        );
        assert_eq!(
            stats(&c.series_count_by_focus_label_value),
            [("a", 5), ("b", 3)]
        );
    }

    #[test]
    fn a_selector_narrows_the_series_counted() {
        let s = store();
        let m = [Matcher::equal("ns", "b")];
        let c = s.cardinality(&m, Some("pod"), 10);
        assert_eq!(c.series, 3);
        assert_eq!(stats(&c.series_count_by_metric_name), [("mem", 3)]);
        assert_eq!(
            stats(&c.series_count_by_focus_label_value),
            [("p0", 1), ("p1", 1), ("p2", 1)]
        );
        // the same figures as the whole-store path would give for those series
        let none = s.cardinality(&[Matcher::equal("ns", "zzz")], None, 10);
        assert_eq!(none.series, 0);
        assert!(none.series_count_by_label_value_pair.is_empty());
    }

    #[test]
    fn ties_at_the_cut_break_by_name() {
        let v: Vec<(u32, u64)> = vec![(5, 1), (4, 2), (3, 1), (2, 1), (1, 2)];
        let out = top(v, 3, |k| format!("k{k}"));
        assert_eq!(stats(&out), [("k1", 2), ("k4", 2), ("k2", 1)]);
        assert!(top(Vec::<(u32, u64)>::new(), 3, |k| k.to_string()).is_empty());
    }
}
