//! Loki push requests as `POST /loki/api/v1/push` takes them: the body
//! (gzip `Content-Encoding` or none) decoded as JSON or as snappy protobuf
//! `PushRequest`, the stream label sets parsed, then `admit` (label checks,
//! limits, timestamp window, line size, structured metadata). The first
//! byte picks JSON or protobuf, and whether the target compresses the rest
//! (snappy for protobuf, gzip) so mutations reach the decoders behind.
//! Properties: no panic; every entry of a decoded request is either
//! admitted or counted as refused, and admitted lines respect the size cap.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use vigil_collector::http::loki_push;
use vigil_collector::push::{PushLimits, decode_body};
use vigil_fuzz::T0_MS;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let json = sel & 1 == 0;
    let mut body = rest.to_vec();
    if !json && sel & 2 != 0 {
        let Ok(b) = snap::raw::Encoder::new().compress_vec(&body) else {
            return;
        };
        body = b;
    }
    let encoding = if sel & 4 != 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).expect("gzip");
        body = gz.finish().expect("gzip");
        Some("gzip")
    } else {
        None
    };
    let limits = PushLimits {
        max_body_bytes: 1 << 20,
        max_line_bytes: 256,
        ..Default::default()
    };
    let Ok(raw) = decode_body(body.into(), encoding, limits.max_body_bytes) else {
        return;
    };
    let decoded = if json {
        loki_push::decode_json(&raw)
    } else {
        loki_push::decode_protobuf(&raw, limits.max_body_bytes)
    };
    let Ok(streams) = decoded else { return };
    let entries: u64 = streams.iter().map(|s| s.entries.len() as u64).sum();
    let (logs, refused) = loki_push::admit(streams, &limits, T0_MS * 1_000_000);
    assert_eq!(
        logs.len() as u64 + refused.total(),
        entries,
        "entries neither admitted nor refused"
    );
    for l in &logs {
        assert!(l.line.len() <= limits.max_line_bytes);
        assert!(!l.stream.is_empty());
    }
});
