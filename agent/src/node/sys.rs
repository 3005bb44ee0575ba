//! node_exporter's default kernel-table collectors beyond `/proc/stat`:
//! `filefd`, `entropy` (from `/proc/sys`) and `timex` (the `adjtimex`
//! system call, read-only), and `os` (the host's `os-release`). Names, help
//! texts, types and labels are node_exporter 1.5's.

use super::{NodeReader, ReadError, single};
use crate::model::{MetricFamily, MetricKind, Scrape};

/// `adjtimex(2)`'s `TIME_ERROR` state: the clock is not synchronised.
const TIME_ERROR: i32 = 5;
/// `STA_NANO`: offsets and jitter are in nanoseconds, not microseconds.
const STA_NANO: i32 = 0x2000;
/// Frequencies are ppm with a 16-bit fraction.
const PPM16: f64 = 1_000_000.0 * 65_536.0;

/// The host's `os-release`, parsed, and which file at which mtime it came
/// from (read again only when that changes).
#[derive(Debug, Default)]
pub(super) struct OsRelease {
    from: Option<(std::path::PathBuf, std::time::SystemTime)>,
    fields: std::collections::HashMap<String, String>,
}

/// `os-release`'s shell-like `KEY=value` lines: values bare, or in double
/// quotes (with `\"`, `\\`, `\$`, `` \` `` escapes) or single quotes;
/// comments and malformed lines are skipped.
pub(super) fn parse_os_release(text: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let value = if let Some(inner) = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
            let mut s = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some(n @ ('"' | '\\' | '$' | '`')) => s.push(n),
                        Some(n) => {
                            s.push('\\');
                            s.push(n);
                        }
                        None => s.push('\\'),
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else if let Some(inner) = v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
            inner.to_string()
        } else {
            v.to_string()
        };
        out.insert(k.to_string(), value);
    }
    out
}

/// `VERSION_ID`'s leading `major.minor` as a number (0 when it has none).
fn major_minor(v: &str) -> f64 {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let major = digits(v);
    if major == 0 {
        return 0.0;
    }
    let mut end = major;
    if v[major..].starts_with('.') {
        end += 1 + digits(&v[major + 1..]);
    }
    v[..end].trim_end_matches('.').parse().unwrap_or(0.0)
}

impl NodeReader {
    /// `node_os_info` and `node_os_version` from the host's
    /// `/etc/os-release` (else `/usr/lib/os-release`); an absolute symlink
    /// is followed inside the host root, not the agent's own filesystem.
    pub(super) fn os_release(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let root = self
            .proc
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let mut cache = self.os_release.lock();
        let mut found = None;
        for rel in ["etc/os-release", "usr/lib/os-release"] {
            let mut path = root.join(rel);
            if let Ok(target) = std::fs::read_link(&path)
                && target.is_absolute()
            {
                path = root.join(target.strip_prefix("/").unwrap_or(&target));
            }
            match std::fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(mtime) => {
                    found = Some((path, mtime));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ReadError::at(path, e)),
            }
        }
        let Some(found) = found else {
            // no os-release: node_exporter reports nothing either
            return Ok(());
        };
        if cache.from.as_ref() != Some(&found) {
            let text =
                std::fs::read_to_string(&found.0).map_err(|e| ReadError::at(found.0.clone(), e))?;
            cache.fields = parse_os_release(&text);
            cache.from = Some(found);
        }
        let f = |k: &str| cache.fields.get(k).map_or("", String::as_str);
        let mut info = MetricFamily::new(
            "node_os_info",
            "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
            MetricKind::Gauge,
        );
        info.push(
            [
                ("build_id", f("BUILD_ID")),
                ("id", f("ID")),
                ("id_like", f("ID_LIKE")),
                ("image_id", f("IMAGE_ID")),
                ("image_version", f("IMAGE_VERSION")),
                ("name", f("NAME")),
                ("pretty_name", f("PRETTY_NAME")),
                ("variant", f("VARIANT")),
                ("variant_id", f("VARIANT_ID")),
                ("version", f("VERSION")),
                ("version_codename", f("VERSION_CODENAME")),
                ("version_id", f("VERSION_ID")),
            ],
            1.0,
        );
        out.families.push(info);
        let version = major_minor(f("VERSION_ID"));
        if version > 0.0 {
            let mut v = MetricFamily::new(
                "node_os_version",
                "Metric containing the major.minor part of the OS version.",
                MetricKind::Gauge,
            );
            v.push(
                [
                    ("id", f("ID")),
                    ("id_like", f("ID_LIKE")),
                    ("name", f("NAME")),
                ],
                version,
            );
            out.families.push(v);
        }
        Ok(())
    }

    /// `node_time_clocksource_{available,current}_info{clocksource,device}`
    /// from `/sys/devices/system/clocksource/clocksource<N>/`.
    pub(super) fn clocksource(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let root = self
            .proc
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let dir = root.join("sys/devices/system/clocksource");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ReadError::at(dir, e)),
        };
        let mut devices: Vec<(String, std::path::PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name.strip_prefix("clocksource")?;
                n.parse::<u32>().ok()?;
                Some((n.to_string(), e.path()))
            })
            .collect();
        devices.sort();
        let mut available = MetricFamily::new(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
            MetricKind::Gauge,
        );
        let mut current = MetricFamily::new(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
            MetricKind::Gauge,
        );
        for (n, path) in devices {
            let read = |f: &str| {
                std::fs::read_to_string(path.join(f)).map_err(|e| ReadError::at(path.join(f), e))
            };
            for c in read("available_clocksource")?.split_ascii_whitespace() {
                available.push([("clocksource", c), ("device", n.as_str())], 1.0);
            }
            if let Some(c) = read("current_clocksource")?.split_ascii_whitespace().next() {
                current.push([("clocksource", c), ("device", n.as_str())], 1.0);
            }
        }
        for f in [available, current] {
            if !f.samples.is_empty() {
                out.families.push(f);
            }
        }
        Ok(())
    }

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
        out.families.push(single(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            MetricKind::Gauge,
            parse(alloc)?,
        ));
        out.families.push(single(
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
            out.families.push(single(name, help, MetricKind::Gauge, v));
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
            return Err(ReadError::at("adjtimex", std::io::Error::last_os_error()));
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
            out.families.push(single(name, help, kind, v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_is_parsed_like_node_exporter_and_reread_when_it_changes() {
        let f = parse_os_release(
            "# comment\nNAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='A b'\nX=\"q\\\"uote\"\nbad line\n=x\n",
        );
        assert_eq!(f["NAME"], "Debian GNU/Linux");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["PRETTY_NAME"], "A b");
        assert_eq!(f["X"], "q\"uote");
        assert_eq!(f.len(), 5);
        assert_eq!(major_minor("22.04"), 22.04);
        assert_eq!(major_minor("3.18.4"), 3.18);
        assert_eq!(major_minor("12"), 12.0);
        assert_eq!(major_minor("rolling"), 0.0);
        assert_eq!(major_minor(""), 0.0);

        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::create_dir_all(d.path().join("usr/lib")).unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("usr/lib/os-release"),
            "ID=alpine\nVERSION_ID=3.18.4\n",
        )
        .unwrap();
        // an absolute link resolves inside the host root
        std::os::unix::fs::symlink("/usr/lib/os-release", d.path().join("etc/os-release")).unwrap();
        let r = NodeReader::new(d.path());
        let mut s = Scrape::new(0);
        r.os_release(&mut s).unwrap();
        assert_eq!(s.families[1].name, "node_os_version");
        assert_eq!(s.families[1].samples[0].value, 3.18);
        assert!(
            s.families[0].samples[0]
                .labels
                .contains(&("id".into(), "alpine".into()))
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.path().join("usr/lib/os-release"), "ID=arch\n").unwrap();
        let mut s = Scrape::new(0);
        r.os_release(&mut s).unwrap();
        assert!(
            s.families[0].samples[0]
                .labels
                .contains(&("id".into(), "arch".into()))
        );
        assert_eq!(s.families.len(), 1, "no VERSION_ID: no node_os_version");
        let empty = tempfile::tempdir().unwrap();
        let mut s = Scrape::new(0);
        NodeReader::new(empty.path()).os_release(&mut s).unwrap();
        assert!(s.families.is_empty());
    }

    #[test]
    fn clocksources_and_disk_info() {
        let d = tempfile::tempdir().unwrap();
        let cs = d.path().join("sys/devices/system/clocksource/clocksource0");
        std::fs::create_dir_all(&cs).unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::create_dir_all(d.path().join("run/udev/data")).unwrap();
        std::fs::write(cs.join("available_clocksource"), "tsc kvm-clock \n").unwrap();
        std::fs::write(cs.join("current_clocksource"), "tsc\n").unwrap();
        std::fs::write(
            d.path().join("proc/diskstats"),
            " 254 0 vda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n   8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("run/udev/data/b8:0"),
            "S:disk/by-id/x\nE:ID_MODEL=SSD_1\nE:ID_SERIAL_SHORT=S123\nE:ID_PATH=pci-0000:00:1f.2-ata-1\n",
        )
        .unwrap();
        let r = NodeReader::new(d.path());
        let mut s = Scrape::new(0);
        r.clocksource(&mut s).unwrap();
        r.diskstats(&mut s).unwrap();
        let text = s.encode_text(None);
        assert!(
            text.contains(
                "node_time_clocksource_available_info{clocksource=\"kvm-clock\",device=\"0\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("node_time_clocksource_current_info{clocksource=\"tsc\",device=\"0\"} 1"),
            "{text}"
        );
        assert!(text.contains("node_disk_info{device=\"vda\",major=\"254\",minor=\"0\",path=\"\",wwn=\"\",model=\"\",serial=\"\",revision=\"\"} 1"), "{text}");
        assert!(text.contains("node_disk_info{device=\"sda\",major=\"8\",minor=\"0\",path=\"pci-0000:00:1f.2-ata-1\",wwn=\"\",model=\"SSD_1\",serial=\"S123\",revision=\"\"} 1"), "{text}");
    }

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
