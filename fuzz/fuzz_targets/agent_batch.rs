//! vigil.v1 agent streams as the collector's ingest takes them: a sequence
//! of length-delimited `AgentMessage`s (what tonic's prost codec hands the
//! service, one per gRPC message), the first a `Hello`, then `Batch`es,
//! `SeriesDefs` and `batch_zstd` batches (revision 2)
//! resolved against the stream's interning tables (`IngestCore::resolve`:
//! label and ref checks, limits, log sources) and applied to a fresh store
//! (`IngestCore::apply`). The WAL append between them is left out (it
//! writes what `resolve` built, and fsyncs).
//! Properties: no panic; a malformed batch is an error, and ends the stream
//! as the service does; samples applied never exceed the samples sent.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigil_collector::ingest::core::{IngestCore, StreamRefs};
use vigil_collector::store::{Store, StoreOptions};
use vigil_collector::telemetry::Telemetry;
use vigil_collector::wal::Wal;
use vigil_proto::v1 as pb;

struct Fixed {
    wal: Wal,
    telemetry: Arc<Telemetry>,
    _dir: tempfile::TempDir,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = vigil_fuzz::runtime()
            .block_on(async { Wal::start(&dir.path().join("wal")) })
            .expect("wal");
        Fixed {
            wal,
            telemetry: Telemetry::new(),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    let store = Arc::new(Store::new(StoreOptions {
        max_series: 10_000,
        ..Default::default()
    }));
    let core = IngestCore::new(
        store,
        f.wal.clone(),
        f.telemetry.clone(),
        Arc::default(),
        None,
        None,
        Default::default(),
    );
    let mut buf = data;
    let mut refs = StreamRefs::default();
    let mut hello: Option<pb::Hello> = None;
    while !buf.is_empty() {
        let Ok(msg) = pb::AgentMessage::decode_length_delimited(&mut buf) else {
            return;
        };
        match (msg.kind, &hello) {
            (Some(pb::agent_message::Kind::Hello(h)), None) => {
                if h.agent_id.is_empty() || h.agent_id.len() > 256 {
                    return;
                }
                hello = Some(h);
            }
            (Some(pb::agent_message::Kind::Defs(d)), Some(h)) => {
                if core.define(&h.agent_id, &mut refs, &d).is_err() {
                    return;
                }
            }
            (Some(pb::agent_message::Kind::BatchZstd(z)), Some(h)) => {
                let Ok(b) = vigil_collector::ingest::core::decode_batch_zstd(&z, 1 << 20) else {
                    return;
                };
                let sent: usize = b.samples.iter().map(|s| s.refs.len()).sum();
                match core.resolve(&h.agent_id, &h.node_name, &mut refs, &b) {
                    Ok(r) => {
                        assert!(r.samples.len() <= sent, "more samples than sent");
                        core.apply(&r.samples, &r.logs, &r.events, &b.metadata);
                        core.set_durable(&h.agent_id, b.seq);
                    }
                    Err(_) => return,
                }
            }
            (Some(pb::agent_message::Kind::Batch(b)), Some(h)) => {
                let sent: usize = b.samples.iter().map(|s| s.refs.len()).sum();
                match core.resolve(&h.agent_id, &h.node_name, &mut refs, &b) {
                    Ok(r) => {
                        assert!(r.samples.len() <= sent, "more samples than sent");
                        core.apply(&r.samples, &r.logs, &r.events, &b.metadata);
                        core.set_durable(&h.agent_id, b.seq);
                    }
                    Err(_) => return,
                }
            }
            // no Hello first, Hello twice, an empty message: the stream ends
            _ => return,
        }
    }
});
