//! What a remote-write sender's series already resolved to, by the bytes the
//! sender puts on the wire for them: a steady sender (Prometheus, vmagent,
//! an OpenTelemetry collector) repeats its series request after request, and
//! the receiver should decode, check and look up a label set once, not per
//! sample. The agent's series table (protocol revision 2) does the same for
//! agents by refs; remote write 1.0 has no refs, so the label fields'
//! bytes ([`crate::http::rw_wire`]) are the key.
//!
//! - An entry maps (tenant, label bytes) to a [`SeriesHandle`]: the WAL id,
//!   the label set and the store's series. A store series lives as long as
//!   the store (retention marks it dead and an append brings it back), so a
//!   handle stays valid.
//! - Only series that were accepted are cached: one refused (label limits,
//!   series budget, memory pressure) is resolved again on its next sample,
//!   exactly as without the cache.
//! - The same series sent with its labels in another order is a second key
//!   (and resolves to the same store series).
//! - Entries unused for two sweeps (a sweep every [`SWEEP`]) are dropped, and
//!   a tenant's entries are all dropped past [`MAX_ENTRIES`] (then rebuilt
//!   from the next requests), so churn cannot grow the cache without bound.
//!
//! Not here: what is done with the samples (`super::core`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vigil_common::Labels;

use crate::store::SeriesRef;

/// How often unused entries are looked for.
pub const SWEEP: Duration = Duration::from_secs(300);
/// Most entries per tenant.
pub const MAX_ENTRIES: usize = 2_000_000;

/// A series as ingest uses it.
#[derive(Clone, Debug)]
pub struct SeriesHandle {
    /// The WAL's id (xxh3 of the labels).
    pub id: u64,
    pub labels: Arc<Labels>,
    /// None in a gateway without local storage.
    pub store: Option<SeriesRef>,
}

struct Entry {
    key: Box<[u8]>,
    handle: SeriesHandle,
    /// The sweep epoch it was last used in.
    used: u32,
}

struct Tenant {
    entries: HashMap<u64, Entry>,
    epoch: u32,
    swept: Instant,
}

/// Per tenant, label bytes → series.
#[derive(Default)]
pub struct SeriesCache {
    tenants: Mutex<HashMap<String, Tenant>>,
}

fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

impl SeriesCache {
    /// Looks every key up at once (one lock): the handle of each key that is
    /// cached, None for the rest.
    pub fn lookup<'k>(
        &self,
        tenant: &str,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> Vec<Option<SeriesHandle>> {
        let mut tenants = self.tenants.lock();
        let Some(t) = tenants.get_mut(tenant) else {
            return keys.map(|_| None).collect();
        };
        let epoch = t.epoch;
        keys.map(|k| {
            let e = t.entries.get_mut(&hash(k))?;
            if *e.key != *k {
                return None;
            }
            e.used = epoch;
            Some(e.handle.clone())
        })
        .collect()
    }

    /// Remembers what `key` resolved to.
    pub fn insert(&self, tenant: &str, items: impl Iterator<Item = (Vec<u8>, SeriesHandle)>) {
        let mut tenants = self.tenants.lock();
        let t = match tenants.get_mut(tenant) {
            Some(t) => t,
            None => tenants.entry(tenant.to_string()).or_insert_with(|| Tenant {
                entries: HashMap::default(),
                epoch: 0,
                swept: Instant::now(),
            }),
        };
        if t.swept.elapsed() >= SWEEP {
            // drop what was not used in this epoch or the last
            let keep_from = t.epoch.saturating_sub(1);
            t.entries.retain(|_, e| e.used >= keep_from);
            t.epoch += 1;
            t.swept = Instant::now();
        }
        for (key, handle) in items {
            if t.entries.len() >= MAX_ENTRIES {
                t.entries.clear();
            }
            t.entries.insert(
                hash(&key),
                Entry {
                    key: key.into_boxed_slice(),
                    handle,
                    used: t.epoch,
                },
            );
        }
    }

    /// Entries over all tenants (for `/metrics`).
    pub fn len(&self) -> usize {
        self.tenants.lock().values().map(|t| t.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(id: u64) -> SeriesHandle {
        SeriesHandle {
            id,
            labels: Arc::new(Labels::new([("__name__", format!("m{id}"))])),
            store: None,
        }
    }

    #[test]
    fn finds_by_bytes_per_tenant() {
        let c = SeriesCache::default();
        assert!(c.lookup("a", [b"k1".as_slice()].into_iter())[0].is_none());
        c.insert(
            "a",
            [(b"k1".to_vec(), handle(1)), (b"k2".to_vec(), handle(2))].into_iter(),
        );
        let got = c.lookup(
            "a",
            [b"k2".as_slice(), b"k1".as_slice(), b"k3".as_slice()].into_iter(),
        );
        assert_eq!(got[0].as_ref().map(|h| h.id), Some(2));
        assert_eq!(got[1].as_ref().map(|h| h.id), Some(1));
        assert!(got[2].is_none());
        assert!(c.lookup("b", [b"k1".as_slice()].into_iter())[0].is_none());
        assert_eq!(c.len(), 2);
    }
}
