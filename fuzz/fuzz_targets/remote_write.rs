//! Prometheus remote write 1.0 (snappy block + protobuf `WriteRequest`)
//! through the collector's real receiver: `POST /api/v1/write`, and
//! `decode` and `apply` (on a fresh store) themselves. The first byte says whether the rest is the
//! body as sent (snappy) or the protobuf, which the target compresses (so
//! mutations reach the protobuf and label checks, not only snappy's framing).
//! Remote write 2.0 is not implemented by the collector (the receiver
//! refuses it as a 1.0 body that does not decode).
//! Properties: no panic; 2xx/4xx only; a decoded request encodes and decodes
//! back to itself; a request that decodes appends at most its sample count;
//! the borrowing reader of the ingest path (`rw_wire`) accepts exactly what
//! `decode` accepts and
//! reads the same series.
#![no_main]

use axum::body::Body;
use http::Request;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigil_collector::http::remote_write::{self, WriteRequest};
use vigil_collector::http::rw_wire;
use vigil_collector::store::{Store, StoreOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let body = if sel & 1 == 0 {
        rest.to_vec()
    } else {
        match snap::raw::Encoder::new().compress_vec(rest) {
            Ok(b) => b,
            Err(_) => return,
        }
    };

    // the borrowing reader agrees with the owned decoder
    if let Ok(raw) = remote_write::decompress(&body) {
        let owned = remote_write::decode(&body);
        match rw_wire::parse(&raw) {
            Ok(borrowed) => {
                let mut all = Vec::new();
                let mut failed = None;
                for (i, s) in borrowed.series.iter().enumerate() {
                    match borrowed.labels(i, s) {
                        Ok(l) => all.push((l, borrowed.samples_of(s).to_vec())),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match (&owned, failed) {
                    (Ok(req), None) => {
                        assert_eq!(req.timeseries.len(), all.len());
                        for (t, (l, s)) in req.timeseries.iter().zip(&all) {
                            let want: Vec<(String, String)> = t
                                .labels
                                .iter()
                                .filter(|x| !x.value.is_empty())
                                .map(|x| (x.name.clone(), x.value.clone()))
                                .collect();
                            assert_eq!(&want, l, "labels differ");
                            assert_eq!(t.samples.len(), s.len());
                            for (a, b) in t.samples.iter().zip(s) {
                                assert_eq!(a.timestamp, b.0);
                                assert_eq!(a.value.to_bits(), b.1.to_bits());
                            }
                        }
                    }
                    (Err(_), Some(_)) => {}
                    (o, f) => panic!("decode {:?} but the wire reader {:?}", o.as_ref().err(), f),
                }
            }
            Err(e) => assert!(
                owned.is_err(),
                "decode accepted what the wire reader refused: {e}"
            ),
        }
    }

    // decode, and the round trip of what it accepts
    if let Ok(req) = remote_write::decode(&body) {
        let again = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .expect("snappy encodes");
        let back = remote_write::decode(&again).expect("a re-encoded request decodes");
        assert!(same(&req, &back), "round trip changed the request");
        let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
        let store = Store::new(StoreOptions::default());
        let o = remote_write::apply(&store, req);
        assert!(o.appended + o.out_of_order + o.refused_series <= samples as u64);
    }

    // the HTTP receiver (one app per process: building the router is far
    // dearer than a request)
    let req = Request::post("/api/v1/write")
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(Body::from(body))
        .expect("request");
    let (status, answer) = vigil_fuzz::send(req);
    assert!(
        status.is_success() || status.is_client_error(),
        "remote write answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
});

/// Equality with NaN sample values compared bit for bit.
fn same(a: &WriteRequest, b: &WriteRequest) -> bool {
    a.timeseries.len() == b.timeseries.len()
        && a.metadata == b.metadata
        && a.timeseries.iter().zip(&b.timeseries).all(|(x, y)| {
            x.labels == y.labels
                && x.samples.len() == y.samples.len()
                && x.samples.iter().zip(&y.samples).all(|(s, t)| {
                    s.timestamp == t.timestamp && s.value.to_bits() == t.value.to_bits()
                })
        })
}
