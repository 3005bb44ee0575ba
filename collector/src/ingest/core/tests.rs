//! Resolving agent batches under memory pressure: a new series is refused
//! (its samples counted by reason), existing ones are stored, and the refused
//! series is asked for again on the next batch once the pressure is gone.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::store::StoreOptions;

static MEASURED: AtomicU64 = AtomicU64::new(0);

fn def(r: u32, name: &str) -> pb::SeriesDef {
    pb::SeriesDef {
        r#ref: r,
        labels: vec![
            pb::Label {
                name: "__name__".into(),
                value: name.into(),
            },
            pb::Label {
                name: "node".into(),
                value: "n1".into(),
            },
        ],
    }
}

fn batch(seq: u64, defs: Vec<pb::SeriesDef>) -> pb::Batch {
    pb::Batch {
        seq,
        created_ms: 1000 * seq as i64,
        series: defs,
        samples: vec![pb::SampleBlock {
            timestamp_ms: 1000 * seq as i64,
            refs: vec![0, 1],
            values: vec![1.0, 2.0],
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn agent_series_refused_under_memory_pressure_come_back_after_it() {
    let dir = tempfile::tempdir().unwrap();
    MEASURED.store(0, Ordering::Relaxed);
    let guard = Arc::new(crate::memory::MemoryGuard::with_measure(1000, 0.8, || {
        Some(MEASURED.load(Ordering::Relaxed))
    }));
    let store = Arc::new(Store::new(StoreOptions {
        memory_guard: Some(guard.clone()),
        ..Default::default()
    }));
    let old = store
        .get_or_create_for("a1", &Labels::new([("__name__", "old"), ("node", "n1")]))
        .unwrap();
    let wal = crate::wal::Wal::start(&dir.path().join("wal")).unwrap();
    let core = IngestCore::new(
        store.clone(),
        wal,
        crate::telemetry::Telemetry::new(),
        Arc::new(crate::metadata::Metadata::default()),
        None,
        None,
        Default::default(),
    );
    MEASURED.store(900, Ordering::Relaxed);
    guard.refresh();
    let mut refs = StreamRefs::default();
    let r = core
        .resolve(
            "a1",
            "n1",
            &mut refs,
            &batch(1, vec![def(0, "old"), def(1, "new")]),
        )
        .unwrap();
    assert_eq!(r.samples, vec![(old, 1000, 1.0)]);
    assert_eq!(r.refused_samples, vec![("memory_pressure", 1)]);
    // still under pressure: still refused, by the same reason
    let r = core
        .resolve("a1", "n1", &mut refs, &batch(2, vec![]))
        .unwrap();
    assert_eq!(r.refused_samples, vec![("memory_pressure", 1)]);
    // the pressure passes: the series is created on the next batch
    MEASURED.store(100, Ordering::Relaxed);
    guard.refresh();
    let r = core
        .resolve("a1", "n1", &mut refs, &batch(3, vec![]))
        .unwrap();
    assert!(r.refused_samples.is_empty(), "{:?}", r.refused_samples);
    assert_eq!(r.samples.len(), 2);
    assert_eq!(r.samples[0], (old, 3000, 1.0));
    assert_eq!((r.samples[1].1, r.samples[1].2), (3000, 2.0));
}

/// Revision 2: definitions arrive apart from batches, in order; the table
/// outlives the stream for the same epoch and starts over for a new one;
/// compressed batches are bounded by the size they may decompress to.
#[tokio::test]
async fn agent_tables_outlive_streams_and_definitions_follow_on() {
    let dir = tempfile::tempdir().unwrap();
    let wal = crate::wal::Wal::start(&dir.path().join("wal")).unwrap();
    let core = IngestCore::new(
        Arc::new(Store::new(StoreOptions::default())),
        wal,
        crate::telemetry::Telemetry::new(),
        Arc::new(crate::metadata::Metadata::default()),
        None,
        None,
        Default::default(),
    );
    let defs = |epoch, series| pb::SeriesDefs {
        epoch,
        series,
        metadata: vec![],
    };
    let mut refs = core.take_table("a1", 7);
    assert_eq!(refs.defined(), 0);
    // a gap (ref 2 before ref 1) is refused
    assert_eq!(
        core.define("a1", &mut refs, &defs(7, vec![def(2, "b")])),
        Err(BatchError::DefinitionGap { first: 2, known: 0 })
    );
    core.define("a1", &mut refs, &defs(7, vec![def(1, "a"), def(2, "b")]))
        .unwrap();
    assert_eq!(refs.defined(), 2);
    // a batch of refs only, compressed as the agent buffers it
    let b = pb::Batch {
        seq: 1,
        samples: vec![pb::SampleBlock {
            timestamp_ms: 1000,
            refs: vec![1, 2],
            values: vec![1.0, 2.0],
        }],
        ..Default::default()
    };
    let z = zstd::bulk::compress(&prost::Message::encode_to_vec(&b), 1).unwrap();
    let decoded = decode_batch_zstd(&z, 1 << 20).unwrap();
    assert_eq!(decoded, b);
    assert!(matches!(
        decode_batch_zstd(&z, 4),
        Err(BatchError::Compressed(_))
    ));
    assert!(matches!(
        decode_batch_zstd(b"not zstd", 1 << 20),
        Err(BatchError::Compressed(_))
    ));
    let r = core.resolve("a1", "n1", &mut refs, &decoded).unwrap();
    assert_eq!(r.samples.len(), 2);
    // the stream ends; the next one of the same epoch finds the table
    core.put_table("a1", refs);
    let mut refs = core.take_table("a1", 7);
    assert_eq!(refs.defined(), 2);
    let r = core.resolve("a1", "n1", &mut refs, &decoded).unwrap();
    assert_eq!(r.samples.len(), 2);
    // another epoch (the agent started a new table): nothing is known, and
    // a ref it has not defined is refused
    core.put_table("a1", refs);
    let mut refs = core.take_table("a1", 8);
    assert_eq!(refs.defined(), 0);
    assert_eq!(
        core.resolve("a1", "n1", &mut refs, &decoded).err(),
        Some(BatchError::UndefinedSeries(1))
    );
    // definitions of a new epoch replace the table
    let mut refs = core.take_table("a1", 7);
    core.define("a1", &mut refs, &defs(9, vec![def(1, "c")]))
        .unwrap();
    assert_eq!((refs.epoch(), refs.defined()), (9, 1));
    assert_eq!(core.telemetry.series_defined.get(), 3);
}

/// Remote write read off the wire: a series is decoded and resolved once and
/// then found by its bytes; a request with one malformed series is refused
/// whole before anything is stored; a series over the label limits is
/// refused on every request (never cached); samples land as before.
#[tokio::test]
async fn remote_write_series_are_resolved_once_and_refusals_are_not_cached() {
    use crate::http::rw_wire::{Label, Sample, TimeSeries, WriteRequest};
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::new(StoreOptions::default()));
    let wal = crate::wal::Wal::start(&dir.path().join("wal")).unwrap();
    let telemetry = crate::telemetry::Telemetry::new();
    let core = IngestCore::new(
        store.clone(),
        wal,
        telemetry.clone(),
        Arc::new(crate::metadata::Metadata::default()),
        None,
        None,
        Default::default(),
    )
    .with_limits(crate::limits::SeriesLimits {
        max_value_length: 10,
        ..Default::default()
    });
    let ts = |labels: &[(&str, &str)], t: i64, v: f64| TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: vec![Sample {
            value: v,
            timestamp: t,
        }],
    };
    let body = |t: i64, extra: Option<TimeSeries>| {
        let mut timeseries = vec![
            ts(&[("__name__", "up"), ("job", "a")], t, 1.0),
            ts(&[("__name__", "up"), ("job", "b"), ("empty", "")], t, 0.0),
            ts(
                &[("__name__", "up"), ("job", "far-too-long-a-value")],
                t,
                1.0,
            ),
        ];
        timeseries.extend(extra);
        WriteRequest {
            timeseries,
            metadata: vec![],
        }
        .encode_to_vec()
    };
    let resolved = || telemetry.rw_series_resolved.get();

    let b = body(1000, None);
    let req = crate::http::rw_wire::parse(&b).unwrap();
    let o = core.write_remote(&req, "rw").await.unwrap().unwrap();
    assert_eq!(o.appended, 2);
    assert_eq!(o.refused, vec![("label_value_length_limit", 1)]);
    assert_eq!(resolved(), 3);

    let b = body(2000, None);
    let req = crate::http::rw_wire::parse(&b).unwrap();
    let o = core.write_remote(&req, "rw").await.unwrap().unwrap();
    assert_eq!(o.appended, 2);
    assert_eq!(o.refused, vec![("label_value_length_limit", 1)]);
    assert_eq!(resolved(), 4, "only the refused series is resolved again");

    // a malformed series: nothing of the request is taken
    let b = body(3000, Some(ts(&[("job", "no-name")], 3000, 1.0)));
    let req = crate::http::rw_wire::parse(&b).unwrap();
    let e = core.write_remote(&req, "rw").await.unwrap().unwrap_err();
    assert!(e.to_string().contains("series 3: no metric name"), "{e}");

    // what the store holds: both series, both samples, the empty label absent
    let a = store
        .get_or_create(&Labels::new([("__name__", "up"), ("job", "a")]))
        .unwrap();
    let b_ = store
        .get_or_create(&Labels::new([("__name__", "up"), ("job", "b")]))
        .unwrap();
    assert_ne!(a, b_);
    assert_eq!(store.series_count(), 2);
    assert_eq!(store.stats().samples, 4);
}
