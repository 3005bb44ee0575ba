//! A label set: sorted by name, names unique. `__name__` is an ordinary label.
//! The same type names a metric series, a log stream, an alert's labels and
//! annotations, and an action's target. In JSON and YAML it is a map
//! (`{"pod": "web-1"}`).

use std::fmt;

/// Sorted, de-duplicated (name, value) pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Builds a label set; later duplicates of a name win, empty values are kept
    /// (cAdvisor-style families carry `name=""` on purpose).
    pub fn new<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // keep the last of equal names
        let mut out: Vec<(String, String)> = Vec::with_capacity(v.len());
        for p in v {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        Labels(out)
    }

    /// Wraps pairs the caller guarantees are sorted by name and unique.
    pub fn from_sorted_unchecked(pairs: Vec<(String, String)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        Labels(pairs)
    }

    /// This set with `name` set to `value` (added or replaced).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        match self.0.binary_search_by(|p| p.0.as_str().cmp(&name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|p| p.0.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get("__name__")
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
    }

    /// Stable 64-bit hash (xxh3 over `name\xffvalue\xff…`), the same in every
    /// process and release: safe to persist.
    pub fn stable_hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (k, v) in &self.0 {
            h.update(k.as_bytes());
            h.update(&[0xff]);
            h.update(v.as_bytes());
            h.update(&[0xff]);
        }
        h.digest()
    }
}

/// Edits a label set as Prometheus's `labels.Builder` does (relabeling is
/// defined in its terms): a base set, names deleted from it and pairs added in
/// the order they were set. An empty value is no value: base pairs with one
/// are deleted from the start, and setting one deletes the name.
#[derive(Clone, Debug, Default)]
pub struct LabelsBuilder {
    base: Labels,
    del: Vec<String>,
    add: Vec<(String, String)>,
}

impl LabelsBuilder {
    pub fn new(base: Labels) -> Self {
        let mut b = LabelsBuilder::default();
        b.reset(base);
        b
    }

    /// Starts over from `base`, keeping the allocations.
    pub fn reset(&mut self, base: Labels) {
        self.base = base;
        self.del.clear();
        self.add.clear();
        for (k, v) in &self.base.0 {
            if v.is_empty() {
                self.del.push(k.clone());
            }
        }
    }

    /// The current value of `name`; `""` when absent (as in Prometheus, an
    /// empty value and no value are the same).
    pub fn get(&self, name: &str) -> &str {
        if let Some((_, v)) = self.add.iter().find(|(k, _)| k == name) {
            return v;
        }
        if self.del.iter().any(|d| d == name) {
            return "";
        }
        self.base.get(name).unwrap_or("")
    }

    /// Sets `name`; an empty `value` deletes it.
    pub fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.del(name);
            return;
        }
        if let Some(p) = self.add.iter_mut().find(|(k, _)| k == name) {
            value.clone_into(&mut p.1);
            return;
        }
        self.add.push((name.to_string(), value.to_string()));
    }

    pub fn del(&mut self, name: &str) {
        self.add.retain(|(k, _)| k != name);
        if !self.del.iter().any(|d| d == name) {
            self.del.push(name.to_string());
        }
    }

    /// The current pairs in Prometheus's `Range` order: base pairs neither
    /// deleted nor overridden (sorted), then added pairs in the order set.
    /// A copy, so the caller may edit the builder while going through it.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .base
            .0
            .iter()
            .filter(|(k, _)| {
                !self.del.iter().any(|d| d == k) && !self.add.iter().any(|(a, _)| a == k)
            })
            .cloned()
            .collect();
        out.extend(self.add.iter().cloned());
        out
    }

    /// The edited label set.
    pub fn labels(&self) -> Labels {
        if self.del.is_empty() && self.add.is_empty() {
            return self.base.clone();
        }
        let mut out = self.snapshot();
        if !self.add.is_empty() {
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Labels(out)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Labels::new(iter)
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        Ok(Labels::from_sorted_unchecked(m.into_iter().collect()))
    }
}

impl fmt::Display for Labels {
    /// Prometheus notation: `name{a="1",b="2"}` (values escaped).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name().unwrap_or("");
        f.write_str(name)?;
        let mut first = true;
        f.write_str("{")?;
        for (k, v) in self.iter().filter(|(k, _)| *k != "__name__") {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}=\"")?;
            for c in v.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

/// A label name as Prometheus and Loki require it: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_displayed() {
        let l = Labels::new([("b", "2"), ("__name__", "up"), ("a", "x\"y"), ("b", "3")]);
        assert_eq!(l.len(), 3);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.to_string(), r#"up{a="x\"y",b="3"}"#);
        assert_eq!(
            l.stable_hash(),
            Labels::new([("a", "x\"y"), ("b", "3"), ("__name__", "up")]).stable_hash()
        );
        assert_eq!(l.clone().with("c", "4").with("a", "z").get("a"), Some("z"));
        assert_eq!(
            l.clone().with("0", "first").iter().next(),
            Some(("0", "first"))
        );
    }

    #[test]
    fn a_map_in_json() {
        let l = Labels::new([("pod", "web-1"), ("namespace", "prod")]);
        let j = serde_json::to_string(&l).unwrap();
        assert_eq!(j, r#"{"namespace":"prod","pod":"web-1"}"#);
        assert_eq!(serde_json::from_str::<Labels>(&j).unwrap(), l);
        assert!(serde_json::from_str::<Labels>(r#"{"a": 1}"#).is_err());
    }

    #[test]
    fn builder_edits_as_prometheus() {
        let base = Labels::new([("a", "1"), ("b", "2")]);
        assert_eq!(
            LabelsBuilder::new(base.clone()).labels(),
            base,
            "untouched: the base"
        );
        let mut b = LabelsBuilder::new(Labels::new([("a", "1"), ("b", "2"), ("c", "")]));
        assert_eq!(b.get("c"), "");
        assert_eq!(b.labels(), base, "an empty value is no value");
        b.set("z", "26");
        b.set("a", "one");
        b.del("b");
        assert_eq!(b.get("a"), "one");
        assert_eq!(b.get("b"), "");
        assert_eq!(b.get("missing"), "");
        assert_eq!(
            b.snapshot(),
            vec![
                ("z".to_string(), "26".to_string()),
                ("a".to_string(), "one".to_string())
            ]
        );
        assert_eq!(b.labels(), Labels::new([("a", "one"), ("z", "26")]));
        b.set("b", "back");
        assert_eq!(b.get("b"), "back", "set after del wins");
        b.set("z", "");
        assert_eq!(b.get("z"), "", "empty value deletes");
        assert_eq!(b.labels(), Labels::new([("a", "one"), ("b", "back")]));
        b.reset(Labels::default());
        assert!(b.labels().is_empty());
    }
}
