//! The inverted index: interned label strings, label pair → sorted postings
//! of series ids, and the label-set → series lookup.
//!
//! Matchers are evaluated as Prometheus does (`PostingsForMatchers`): a
//! matcher that matches the empty string also selects series that lack the
//! label, so it is applied by subtracting the series whose value does *not*
//! match; the others intersect postings. Empty label values are never indexed
//! (the store drops them from label sets, as Prometheus does).
//!
//! Not here: samples, locking (the caller holds the index lock).

use std::collections::HashMap;
use std::sync::Arc;

use super::{MatchOp, Matcher};

/// Interned strings; id `u32` ↔ string. Strings are never removed (a
/// label value that comes back is common; the table is small next to the
/// samples).
#[derive(Default)]
pub(crate) struct Symbols {
    strings: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
    heap: usize,
}

impl Symbols {
    pub(crate) fn get(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }

    pub(crate) fn get_arc(&self, id: u32) -> Arc<str> {
        self.strings
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    pub(crate) fn lookup(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.strings.len() as u32;
        let a: Arc<str> = Arc::from(s);
        self.heap += s.len() + 16;
        self.strings.push(a.clone());
        self.ids.insert(a, id);
        id
    }

    /// Approximate heap bytes (strings, the vector, the map).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.heap + self.strings.capacity() * 16 + self.ids.capacity() * (16 + 4 + 1)
    }
}

/// Postings per label name and value, all live series, and the lookup from
/// a label set's stable hash to series ids.
#[derive(Default)]
pub(crate) struct Index {
    pub symbols: Symbols,
    /// name → value → sorted series ids.
    pub(super) postings: HashMap<u32, HashMap<u32, Vec<u32>>>,
    /// Every live series id, sorted.
    all: Vec<u32>,
    /// stable hash of the label set → series id (live or dead but kept for
    /// resurrection). Colliding label sets go to `collisions`.
    by_hash: HashMap<u64, u32>,
    collisions: HashMap<u64, Vec<u32>>,
    /// Live series per tenant symbol.
    pub tenants: HashMap<u32, u32>,
}

impl Index {
    /// Candidate ids for a label set hash (compare labels to be sure).
    pub(crate) fn candidates(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        self.by_hash
            .get(&hash)
            .into_iter()
            .copied()
            .chain(self.collisions.get(&hash).into_iter().flatten().copied())
    }

    pub(crate) fn insert_hash(&mut self, hash: u64, id: u32) {
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.entry(hash).or_default().push(id);
            }
        }
    }

    /// Adds a live series (`labels` are symbol pairs; ids grow, so pushes
    /// keep postings sorted — out-of-order ids, from resurrection, insert).
    pub(crate) fn add(&mut self, id: u32, labels: &[u32]) {
        for pair in labels.chunks_exact(2) {
            let list = self
                .postings
                .entry(pair[0])
                .or_default()
                .entry(pair[1])
                .or_default();
            insert_sorted(list, id);
        }
        insert_sorted(&mut self.all, id);
    }

    /// Removes dead series (sorted ids) from the postings.
    pub(crate) fn remove(&mut self, dead: &[(u32, Box<[u32]>)]) {
        if dead.is_empty() {
            return;
        }
        let mut touched: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        for (id, labels) in dead {
            for pair in labels.chunks_exact(2) {
                touched.entry((pair[0], pair[1])).or_default().push(*id);
            }
        }
        for ((n, v), mut ids) in touched {
            ids.sort_unstable();
            if let Some(values) = self.postings.get_mut(&n) {
                if let Some(list) = values.get_mut(&v) {
                    list.retain(|x| ids.binary_search(x).is_err());
                    if list.is_empty() {
                        values.remove(&v);
                    } else if list.capacity() > 2 * list.len() + 8 {
                        list.shrink_to_fit();
                    }
                }
                if values.is_empty() {
                    self.postings.remove(&n);
                }
            }
        }
        let mut ids: Vec<u32> = dead.iter().map(|d| d.0).collect();
        ids.sort_unstable();
        self.all.retain(|x| ids.binary_search(x).is_err());
    }

    pub(crate) fn live(&self) -> usize {
        self.all.len()
    }

    /// Sorted ids of the live series matching every matcher.
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut positive: Vec<Vec<u32>> = Vec::new();
        let mut negative: Vec<Vec<u32>> = Vec::new();
        for m in matchers {
            let name = self.symbols.lookup(&m.name);
            if m.matches("") {
                // selects series without the label too: subtract those whose
                // value does not match
                let Some(name) = name else { continue };
                let excluded = self.union_where(name, |v| !m.matches(v));
                if !excluded.is_empty() {
                    negative.push(excluded);
                }
            } else {
                let Some(name) = name else { return Vec::new() };
                let list = match &m.op {
                    MatchOp::Equal(v) => match self.symbols.lookup(v) {
                        Some(v) => self
                            .postings
                            .get(&name)
                            .and_then(|vals| vals.get(&v))
                            .cloned()
                            .unwrap_or_default(),
                        None => Vec::new(),
                    },
                    _ => self.union_where(name, |v| m.matches(v)),
                };
                if list.is_empty() {
                    return Vec::new();
                }
                positive.push(list);
            }
        }
        positive.sort_by_key(Vec::len);
        let mut result = match positive.split_first() {
            Some((first, rest)) => {
                let mut acc = first.clone();
                for p in rest {
                    acc = intersect(&acc, p);
                    if acc.is_empty() {
                        return acc;
                    }
                }
                acc
            }
            None => self.all.clone(),
        };
        for n in &negative {
            result = subtract(&result, n);
        }
        result
    }

    /// Union of the postings of `name`'s values for which `pred` holds.
    fn union_where(&self, name: u32, pred: impl Fn(&str) -> bool) -> Vec<u32> {
        let Some(values) = self.postings.get(&name) else {
            return Vec::new();
        };
        let lists: Vec<&Vec<u32>> = values
            .iter()
            .filter(|(v, _)| pred(self.symbols.get(**v)))
            .map(|(_, l)| l)
            .collect();
        match lists.len() {
            0 => Vec::new(),
            1 => lists[0].clone(),
            _ => {
                let mut out: Vec<u32> = lists.iter().flat_map(|l| l.iter().copied()).collect();
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }

    /// Sorted label names with at least one live series.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .postings
            .keys()
            .map(|n| self.symbols.get(*n).to_string())
            .collect();
        out.sort();
        out
    }

    /// Sorted values of `name` with at least one live series.
    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        let Some(n) = self.symbols.lookup(name) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .postings
            .get(&n)
            .map(|vals| {
                vals.keys()
                    .map(|v| self.symbols.get(*v).to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Approximate heap bytes of postings and lookup maps.
    pub(crate) fn heap_bytes(&self) -> usize {
        let mut b = self.all.capacity() * 4;
        b += self.postings.capacity() * (4 + 48 + 1);
        for vals in self.postings.values() {
            b += vals.capacity() * (4 + 24 + 1);
            b += vals.values().map(|l| l.capacity() * 4).sum::<usize>();
        }
        b += self.by_hash.capacity() * (8 + 4 + 1);
        b += self
            .collisions
            .values()
            .map(|c| 8 + 24 + c.capacity() * 4)
            .sum::<usize>();
        b + self.symbols.heap_bytes()
    }
}

fn insert_sorted(list: &mut Vec<u32>, id: u32) {
    match list.last() {
        None => list.push(id),
        Some(&last) if last < id => list.push(id),
        Some(_) => {
            if let Err(pos) = list.binary_search(&id) {
                list.insert(pos, id);
            }
        }
    }
}

/// Intersection of two sorted lists.
pub(crate) fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    if small.len() * 16 < large.len() {
        // galloping: binary search the large list from the last position
        let mut lo = 0;
        for &x in small {
            match large[lo..].binary_search(&x) {
                Ok(i) => {
                    out.push(x);
                    lo += i + 1;
                }
                Err(i) => lo += i,
            }
            if lo >= large.len() {
                break;
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < small.len() && j < large.len() {
        match small[i].cmp(&large[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(small[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// `a` minus `b`, both sorted.
pub(crate) fn subtract(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j < b.len() && b[j] == x {
            continue;
        }
        out.push(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[3, 4, 5, 8]), vec![3, 5]);
        let big: Vec<u32> = (0..1000).collect();
        assert_eq!(intersect(&[5, 500, 2000], &big), vec![5, 500]);
        assert_eq!(intersect(&big, &[999]), vec![999]);
        assert_eq!(subtract(&[1, 2, 3, 4], &[2, 4, 9]), vec![1, 3]);
        assert_eq!(subtract(&[1, 2], &[]), vec![1, 2]);
        let mut l = vec![1, 5, 9];
        insert_sorted(&mut l, 7);
        insert_sorted(&mut l, 5);
        insert_sorted(&mut l, 10);
        assert_eq!(l, vec![1, 5, 7, 9, 10]);
    }
}
