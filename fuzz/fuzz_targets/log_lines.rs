//! Container log lines as the agent tails them: CRI (`<RFC3339Nano>
//! <stdout|stderr> <P|F> <message>`) and Docker json-file lines, format
//! detection from the first line, and the assembler that joins partial
//! pieces into records with their offsets.
//! Properties: no panic; a parsed CRI line printed back (timestamp
//! re-formatted) parses to the same piece; records come out in strictly
//! growing offset order, within the line cap (plus the truncation marker).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_agent::logs::assemble::{Assembler, TRUNCATION_MARKER};
use vigil_agent::logs::parse::{Format, cri, docker};

const MAX_LINE: usize = 64;

fuzz_target!(|data: &[u8]| {
    let first = data.split(|&c| c == b'\n').next().unwrap_or(data);
    let format = Format::detect(first);
    let mut asm = Assembler::new(MAX_LINE, [0, 0]);
    let mut last: Option<u64> = None;
    let mut check = |r: vigil_agent::logs::assemble::Record| {
        assert!(r.end_offset > r.offset, "empty record range");
        if let Some(prev) = last {
            assert!(r.offset > prev, "offsets {prev} then {}", r.offset);
        }
        last = Some(r.offset);
        assert!(r.msg.len() <= MAX_LINE + TRUNCATION_MARKER.len());
    };
    let mut pos = 0u64;
    for line in data.split(|&c| c == b'\n') {
        let start = pos;
        let end = start + line.len() as u64 + 1;
        pos = end;
        let c = cri::parse(line);
        let d = docker::parse(line);
        if let Ok(p) = &c {
            let mut again = vigil_common::time::format_rfc3339_ns(p.timestamp_ns).into_bytes();
            again.extend_from_slice(
                format!(
                    " {} {} ",
                    p.stream.as_str(),
                    if p.partial { "P" } else { "F" }
                )
                .as_bytes(),
            );
            again.extend_from_slice(&p.msg);
            let back = cri::parse(&again).expect("a printed CRI line parses");
            assert_eq!(&back, p, "CRI round trip");
        }
        let piece = match format {
            Format::Cri => c.ok(),
            Format::Docker => d.ok(),
            Format::Plain => None,
        };
        if let Some(p) = piece {
            asm.push(start, end, p, false, &mut check);
        }
    }
    asm.finish(pos, &mut check);
});
