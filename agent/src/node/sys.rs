//! node_exporter's default kernel-table collectors beyond `/proc/stat`:
//! `filefd`, `entropy` (from `/proc/sys`) and `timex` (the `adjtimex`
//! system call, read-only). Names, help texts and types are node_exporter
//! 1.5's.

use super::{NodeReader, ReadError};
use crate::model::{MetricFamily, MetricKind, Scrape};

fn one(name: &str, help: &str, kind: MetricKind, v: f64) -> MetricFamily {
    let mut f = MetricFamily::new(name, help, kind);
    f.push(Vec::<(String, String)>::new(), v);
    f
}

/// `adjtimex(2)`'s `TIME_ERROR` state: the clock is not synchronised.
const TIME_ERROR: i32 = 5;
/// `STA_NANO`: offsets and jitter are in nanoseconds, not microseconds.
const STA_NANO: i32 = 0x2000;
/// Frequencies are ppm with a 16-bit fraction.
const PPM16: f64 = 1_000_000.0 * 65_536.0;

impl NodeReader {
    /// `node_filefd_{allocated,maximum}` from `/proc/sys/fs/file-nr`.
    pub(super) fn filefd(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let text = self.read("sys/fs/file-nr")?;
        let f: Vec<&str> = text.split_ascii_whitespace().collect();
        let [alloc, _, max] = f[..] else {
            return Err(self.err("sys/fs/file-nr", format!("not 3 fields: {text:?}")));
        };
        let parse = |v: &str| {
            v.parse::<f64>()
                .map_err(|e| self.err("sys/fs/file-nr", format!("{v:?}: {e}")))
        };
        out.families.push(one(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            MetricKind::Gauge,
            parse(alloc)?,
        ));
        out.families.push(one(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            MetricKind::Gauge,
            parse(max)?,
        ));
        Ok(())
    }

    /// `node_entropy_available_bits` and `node_entropy_pool_size_bits`.
    pub(super) fn entropy(&self, out: &mut Scrape) -> Result<(), ReadError> {
        for (file, name, help) in [
            (
                "sys/kernel/random/entropy_avail",
                "node_entropy_available_bits",
                "Bits of available entropy.",
            ),
            (
                "sys/kernel/random/poolsize",
                "node_entropy_pool_size_bits",
                "Bits of entropy pool.",
            ),
        ] {
            let Some(text) = self.read_opt(file)? else {
                continue;
            };
            let v = text
                .trim()
                .parse::<f64>()
                .map_err(|e| self.err(file, format!("{text:?}: {e}")))?;
            out.families.push(one(name, help, MetricKind::Gauge, v));
        }
        Ok(())
    }

    /// `node_timex_*`: the kernel clock discipline as `adjtimex(2)` reports
    /// it (modes 0: nothing is changed).
    #[allow(unsafe_code)]
    pub(super) fn timex(&self, out: &mut Scrape) -> Result<(), ReadError> {
        // SAFETY: `timex` is plain integers (all-zero is a valid value), and
        // adjtimex with `modes == 0` only writes into the struct it is given.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the pointer is to a live, exclusively borrowed struct.
        let state = unsafe { libc::adjtimex(&mut t) };
        if state < 0 {
            return Err(ReadError {
                path: "adjtimex".into(),
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        let div = if t.status & STA_NANO != 0 { 1e9 } else { 1e6 };
        use MetricKind::{Counter, Gauge};
        let rows: [(&str, &str, MetricKind, f64); 17] = [
            (
                "node_timex_sync_status",
                "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
                Gauge,
                f64::from(u8::from(state != TIME_ERROR)),
            ),
            (
                "node_timex_offset_seconds",
                "Time offset in between local system and reference clock.",
                Gauge,
                t.offset as f64 / div,
            ),
            (
                "node_timex_frequency_adjustment_ratio",
                "Local clock frequency adjustment.",
                Gauge,
                1.0 + t.freq as f64 / PPM16,
            ),
            (
                "node_timex_maxerror_seconds",
                "Maximum error in seconds.",
                Gauge,
                t.maxerror as f64 / 1e6,
            ),
            (
                "node_timex_estimated_error_seconds",
                "Estimated error in seconds.",
                Gauge,
                t.esterror as f64 / 1e6,
            ),
            (
                "node_timex_status",
                "Value of the status array bits.",
                Gauge,
                f64::from(t.status),
            ),
            (
                "node_timex_loop_time_constant",
                "Phase-locked loop time constant.",
                Gauge,
                t.constant as f64,
            ),
            (
                "node_timex_tick_seconds",
                "Seconds between clock ticks.",
                Gauge,
                t.tick as f64 / 1e6,
            ),
            (
                "node_timex_pps_frequency_hertz",
                "Pulse per second frequency.",
                Gauge,
                t.ppsfreq as f64 / PPM16,
            ),
            (
                "node_timex_pps_jitter_seconds",
                "Pulse per second jitter.",
                Gauge,
                t.jitter as f64 / div,
            ),
            (
                "node_timex_pps_shift_seconds",
                "Pulse per second interval duration.",
                Gauge,
                f64::from(t.shift),
            ),
            (
                "node_timex_pps_stability_hertz",
                "Pulse per second stability, average of recent frequency changes.",
                Gauge,
                t.stabil as f64 / PPM16,
            ),
            (
                "node_timex_pps_jitter_total",
                "Pulse per second count of jitter limit exceeded events.",
                Counter,
                t.jitcnt as f64,
            ),
            (
                "node_timex_pps_calibration_total",
                "Pulse per second count of calibration intervals.",
                Counter,
                t.calcnt as f64,
            ),
            (
                "node_timex_pps_error_total",
                "Pulse per second count of calibration errors.",
                Counter,
                t.errcnt as f64,
            ),
            (
                "node_timex_pps_stability_exceeded_total",
                "Pulse per second count of stability limit exceeded events.",
                Counter,
                t.stbcnt as f64,
            ),
            (
                "node_timex_tai_offset_seconds",
                "International Atomic Time (TAI) offset.",
                Gauge,
                f64::from(t.tai),
            ),
        ];
        for (name, help, kind, v) in rows {
            out.families.push(one(name, help, kind, v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filefd_entropy_and_timex() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proc/sys");
        std::fs::create_dir_all(p.join("fs")).unwrap();
        std::fs::create_dir_all(p.join("kernel/random")).unwrap();
        std::fs::write(p.join("fs/file-nr"), "1024\t0\t9223372036854775807\n").unwrap();
        std::fs::write(p.join("kernel/random/poolsize"), "256\n").unwrap();
        let r = NodeReader::new(d.path());
        let mut s = Scrape::new(0);
        r.filefd(&mut s).unwrap();
        r.entropy(&mut s).unwrap();
        r.timex(&mut s).unwrap();
        let v: Vec<(&str, f64)> = s
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.samples[0].value))
            .collect();
        assert_eq!(v[0], ("node_filefd_allocated", 1024.0));
        assert_eq!(v[1], ("node_filefd_maximum", 9223372036854775807.0));
        // no entropy_avail file: only the pool size
        assert_eq!(v[2], ("node_entropy_pool_size_bits", 256.0));
        assert_eq!(
            v.iter().filter(|x| x.0.starts_with("node_timex_")).count(),
            17
        );
        // this kernel's tick is USER_HZ's
        let tick = v
            .iter()
            .find(|x| x.0 == "node_timex_tick_seconds")
            .unwrap()
            .1;
        assert!(tick > 0.0 && tick < 0.1, "{tick}");

        std::fs::write(p.join("fs/file-nr"), "1024 0\n").unwrap();
        let r = NodeReader::new(d.path());
        assert!(r.filefd(&mut s).is_err());
    }
}
