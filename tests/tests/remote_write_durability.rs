//! Remote write into the real collector binary, then `kill -9` while it is
//! ingesting: after a restart every sample it acknowledged (204) is queryable.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use vigil_e2e::{Proc, bin, free_port, get, http, wait_for};

fn body(base_ms: i64, round: i64, series: usize) -> Vec<u8> {
    let req = WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "rw_durability".into(),
                    },
                    Label {
                        name: "i".into(),
                        value: i.to_string(),
                    },
                ],
                samples: vec![Sample {
                    value: round as f64,
                    timestamp: base_ms + round * 1000,
                }],
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&req))
        .unwrap()
}

fn start(dir: &std::path::Path, hp: u16, gp: u16) -> Proc {
    let args: Vec<String> = vec![
        "--http-listen".into(),
        format!("127.0.0.1:{hp}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{gp}"),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
    ];
    let p = Proc::start(
        "collector",
        &bin("vigil-collector"),
        &args,
        &dir.join("logs"),
    );
    let addr = format!("127.0.0.1:{hp}");
    wait_for(Duration::from_secs(30), "collector ready", || {
        match get(&addr, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    p
}

#[test]
fn acknowledged_remote_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{hp}");
    let mut c = start(dir.path(), hp, gp);
    let series = 500;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = now_ms - 120_000;
    let mut acked_rounds = 0i64;
    for round in 0..40 {
        let (status, b) = http(
            "POST",
            &addr,
            "/api/v1/write",
            Some("application/x-protobuf"),
            &body(base, round, series),
        )
        .unwrap();
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&b));
        acked_rounds += 1;
    }
    // a malformed body is refused and the service goes on
    let (status, _) = http(
        "POST",
        &addr,
        "/api/v1/write",
        Some("application/x-protobuf"),
        b"garbage",
    )
    .unwrap();
    assert_eq!(status, 400);
    c.kill9();
    let _c = start(dir.path(), hp, gp);
    let t = now_ms / 1000;
    let path = format!(
        "/api/v1/query?query=count%28count_over_time%28rw_durability%5B1h%5D%29%29&time={t}"
    );
    let (status, out) = get(&addr, &path).unwrap();
    assert_eq!(status, 200, "{out}");
    assert!(
        out.contains(&format!("\"{series}\"")),
        "not every series survived: {out}"
    );
    let q =
        format!("/api/v1/query?query=sum%28count_over_time%28rw_durability%5B1h%5D%29%29&time={t}");
    let (_, out) = get(&addr, &q).unwrap();
    let want = series as i64 * acked_rounds;
    assert!(
        out.contains(&format!("\"{want}\"")),
        "expected {want} samples: {out}"
    );
}
