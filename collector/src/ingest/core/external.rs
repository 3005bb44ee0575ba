//! Samples that arrive without an agent stream — Prometheus remote write,
//! OTLP pushes, the self-scrape — through the same WAL as an agent's, so
//! they are as durable once a write returns.
//!
//! Each series is first resolved to a [`SeriesHandle`] (label limits, the
//! tenant's series budget, the store's series), then its samples are checked,
//! written to the WAL and applied. Remote write keeps its resolved series in
//! a [`SeriesCache`] keyed by their bytes on the wire
//! ([`IngestCore::write_remote`]), so a steady sender's series are decoded
//! and looked up once, not on every request.
//!
//! Not here: decoding requests (`crate::http`), the agent path (`super`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use vigil_common::Labels;
use vigil_proto::v1 as pb;

use super::{ExternalOutcome, IngestCore, append_reason, check_label_limits, labels_excerpt};
use crate::http::rw_wire::DecodeError;
use crate::http::rw_wire::RawRequest;
use crate::ingest::series_cache::SeriesHandle;
use crate::wal::{Append, SeriesUse, WalBlock, WalRecord};

/// A series' samples: borrowed from a parsed request, or owned.
type Points<'a> = Cow<'a, [(i64, f64)]>;

impl IngestCore {
    /// Writes samples that arrived without an agent stream (Prometheus
    /// remote write, pushes, the self-scrape) through the same WAL, so they
    /// are as durable as an agent's once this returns. New series count
    /// against `tenant`'s budget. Series over the label limits, and samples
    /// the store would refuse (too far in the future, out of order, a
    /// different value at a stored timestamp) are left out of the WAL and
    /// reported, so only what is stored is durable (and forwarded). The
    /// families' `metadata` is made durable with them.
    pub async fn write_external(
        &self,
        series: Vec<(Labels, Vec<(i64, f64)>)>,
        metadata: Vec<pb::MetricMetadata>,
        tenant: &str,
    ) -> Result<ExternalOutcome, crate::wal::WalError> {
        self.write_labelled(series, metadata, tenant, true).await
    }

    /// [`Self::write_external`] for the collector's own series (the
    /// self-scrape): not refused under memory pressure, so the metrics that
    /// report the pressure are stored while it lasts.
    pub async fn write_own(
        &self,
        series: Vec<(Labels, Vec<(i64, f64)>)>,
        tenant: &str,
    ) -> Result<ExternalOutcome, crate::wal::WalError> {
        self.write_labelled(series, Vec::new(), tenant, false).await
    }

    /// A remote-write request, read off the wire by
    /// [`crate::http::rw_wire::parse`]: series the cache knows are used as
    /// they are; the others are decoded and checked — every one, before
    /// anything is written, so a request with a malformed series is refused
    /// whole (`Ok(Err(_))`, a 400) as the owned decoder would — then resolved
    /// and, when accepted, cached.
    pub async fn write_remote(
        &self,
        req: &RawRequest<'_>,
        tenant: &str,
    ) -> Result<Result<ExternalOutcome, DecodeError>, crate::wal::WalError> {
        let cached = self
            .rw_cache
            .lookup(tenant, req.series.iter().map(|s| req.key(s)));
        let mut fresh = Vec::new();
        for (i, (s, c)) in req.series.iter().zip(&cached).enumerate() {
            if c.is_none() {
                match req.labels(i, s) {
                    Ok(pairs) => fresh.push((i, Labels::new(pairs))),
                    Err(e) => return Ok(Err(e)),
                }
            }
        }
        let mut out = ExternalOutcome::default();
        let mut handles: Vec<Option<SeriesHandle>> = cached;
        let mut learned = Vec::with_capacity(fresh.len());
        self.telemetry.rw_series_resolved.inc_by(fresh.len() as u64);
        for (i, labels) in fresh {
            let s = &req.series[i];
            let n = s.samples.len() as u64;
            if let Some(h) = self.resolve_external(labels, tenant, true, n, &mut out) {
                learned.push((req.key(s).to_vec(), h.clone()));
                handles[i] = Some(h);
            }
        }
        if !learned.is_empty() {
            self.rw_cache.insert(tenant, learned.into_iter());
            self.telemetry
                .rw_series_cached
                .set(self.rw_cache.len() as i64);
        }
        let series = req
            .series
            .iter()
            .zip(handles)
            .filter_map(|(s, h)| Some((h?, Cow::Borrowed(req.samples_of(s)))))
            .collect();
        self.write_handles(series, Vec::new(), tenant, out)
            .await
            .map(Ok)
    }

    async fn write_labelled(
        &self,
        series: Vec<(Labels, Vec<(i64, f64)>)>,
        metadata: Vec<pb::MetricMetadata>,
        tenant: &str,
        guarded: bool,
    ) -> Result<ExternalOutcome, crate::wal::WalError> {
        let mut out = ExternalOutcome::default();
        let mut handles = Vec::with_capacity(series.len());
        for (labels, points) in series {
            let n = points.len() as u64;
            if let Some(h) = self.resolve_external(labels, tenant, guarded, n, &mut out) {
                handles.push((h, Cow::Owned(points)));
            }
        }
        self.write_handles(handles, metadata, tenant, out).await
    }

    /// Label limits and the store's series for `labels`; None (counted, and
    /// reported in `out` for its `n` samples) when refused.
    fn resolve_external(
        &self,
        labels: Labels,
        tenant: &str,
        guarded: bool,
        n: u64,
        out: &mut ExternalOutcome,
    ) -> Option<SeriesHandle> {
        let pairs: Vec<(&str, &str)> = labels.iter().collect();
        if let Err(e) = check_label_limits(&pairs, &self.limits) {
            self.count_refused(e.reason(), n);
            out.refuse(e.reason(), n, || {
                format!("series {}: {e}", labels_excerpt(&labels))
            });
            return None;
        }
        let id = labels.stable_hash();
        if !self.local_store {
            // a gateway: durable and forwarded, not stored here
            return Some(SeriesHandle {
                id,
                labels: Arc::new(labels),
                store: None,
            });
        }
        let created = if guarded {
            self.store.get_or_create_for(tenant, &labels)
        } else {
            self.store.get_or_create_trusted_for(tenant, &labels)
        };
        match created {
            Ok(r) => Some(SeriesHandle {
                id,
                labels: Arc::new(labels),
                store: Some(r),
            }),
            Err(e) => {
                self.refused(&e, n);
                out.refuse(append_reason(&e), n, || {
                    format!("series {}: {e}", labels_excerpt(&labels))
                });
                None
            }
        }
    }

    /// Checks, writes to the WAL (one record, fsync'd) and applies the
    /// samples of resolved series.
    async fn write_handles(
        &self,
        series: Vec<(SeriesHandle, Points<'_>)>,
        metadata: Vec<pb::MetricMetadata>,
        tenant: &str,
        mut out: ExternalOutcome,
    ) -> Result<ExternalOutcome, crate::wal::WalError> {
        if series.is_empty() && metadata.is_empty() {
            return Ok(out);
        }
        let mut uses = Vec::with_capacity(series.len());
        let mut blocks: HashMap<i64, WalBlock> = HashMap::new();
        let mut samples = Vec::new();
        // a steady sender's request: one timestamp, every series in it
        let hint = series.len();
        for (h, mut points) in series {
            if !points.is_sorted_by_key(|p| p.0) {
                points.to_mut().sort_by_key(|p| p.0);
            }
            let Some(sref) = h.store else {
                // a gateway: durable and forwarded, not stored here
                for &(t, v) in points.iter() {
                    let b = block(&mut blocks, t, hint);
                    b.ids.push(h.id);
                    b.values.push(v);
                    out.appended += 1;
                }
                uses.push(SeriesUse {
                    id: h.id,
                    labels: h.labels,
                });
                continue;
            };
            let mut used = false;
            for &(t, v) in points.iter() {
                if let Err(e) = self.store.check(sref, t, v) {
                    let reason = append_reason(&e);
                    self.count_refused(reason, 1);
                    out.refuse(reason, 1, || {
                        format!("series {}: {e}", labels_excerpt(&h.labels))
                    });
                    continue;
                }
                used = true;
                let b = block(&mut blocks, t, hint);
                b.ids.push(h.id);
                b.values.push(v);
                samples.push((sref, t, v));
            }
            if used {
                uses.push(SeriesUse {
                    id: h.id,
                    labels: h.labels,
                });
            }
        }
        if samples.is_empty() && blocks.is_empty() && metadata.is_empty() {
            return Ok(out);
        }
        let mut blocks: Vec<WalBlock> = blocks.into_values().collect();
        blocks.sort_by_key(|b| b.timestamp_ms);
        // apply in time order so a request carrying several samples of one
        // series is not refused as out of order
        samples.sort_by_key(|s| s.1);
        let gate = self.gate.read().await;
        self.append_wal(Append {
            record: WalRecord {
                agent_id: String::new(),
                seq: 0,
                series: Vec::new(),
                blocks,
                logs: Vec::new(),
                events: Vec::new(),
                metadata: metadata.clone(),
                tenant: tenant.to_string(),
                cut: false,
            },
            uses,
        })
        .await?;
        let summary = self.store.append_batch(&samples);
        self.metadata.update(&metadata);
        drop(gate);
        // refused between the check and the append (a concurrent writer)
        self.count_summary(&summary);
        out.refuse("out_of_order", summary.out_of_order, || {
            "sample out of order".into()
        });
        out.refuse("duplicate", summary.duplicate, || {
            "duplicate sample for timestamp".into()
        });
        out.refuse("too_far_in_future", summary.too_far_in_future, || {
            "sample too far in the future".into()
        });
        self.telemetry.samples.inc_by(summary.appended);
        out.appended += summary.appended;
        if !self.local_store {
            self.telemetry.samples.inc_by(out.appended);
        }
        Ok(out)
    }
}

/// The WAL block of timestamp `t`; the first one is sized for `hint` samples.
fn block(blocks: &mut HashMap<i64, WalBlock>, t: i64, hint: usize) -> &mut WalBlock {
    let n = if blocks.is_empty() { hint } else { 0 };
    blocks.entry(t).or_insert_with(|| WalBlock {
        timestamp_ms: t,
        ids: Vec::with_capacity(n),
        values: Vec::with_capacity(n),
    })
}
