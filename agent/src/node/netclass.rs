//! node_exporter's `netclass` collector: each network device's attributes
//! from `/sys/class/net/<device>/` under `--host-root` — `node_network_up`,
//! `node_network_info{address,broadcast,duplex,ifalias,operstate}` and one
//! gauge or counter per numeric attribute (`mtu_bytes`, `carrier`,
//! `speed_bytes`, `flags`, …), with node_exporter 1.5's names, help texts and
//! units. An attribute the kernel refuses to give (a down device's carrier
//! or speed) is left out, as node_exporter does.
//!
//! Each device's folder is held open, and (up to [`MAX_HELD_FILES`]) the
//! files of its changing attributes too, re-read with one `pread` each (no
//! path walk through the `/sys/class/net` symlinks, no `open`/`close` per
//! file per scrape); the attributes fixed for a device's life (index, type,
//! how its name and address were assigned, `dev_id`) are read once per
//! folder. A folder whose inode changed belongs to a new device of the same
//! name and is opened afresh.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};

use super::{NodeReader, ReadError};
use crate::model::{MetricFamily, MetricKind, Scrape, label_set};

/// At most this many device folders are held open; past it, the rest are
/// opened per scrape.
const MAX_HELD_DEVICES: usize = 1024;

/// (file, metric suffix, counter?, hex?) of the numeric attributes read
/// every scrape.
const DYNAMIC: [(&str, &str, bool, bool); 11] = [
    ("carrier", "carrier", false, false),
    ("carrier_changes", "carrier_changes_total", true, false),
    ("carrier_up_count", "carrier_up_changes_total", true, false),
    (
        "carrier_down_count",
        "carrier_down_changes_total",
        true,
        false,
    ),
    ("dormant", "dormant", false, false),
    ("flags", "flags", false, true),
    ("iflink", "iface_link", false, false),
    ("link_mode", "iface_link_mode", false, false),
    ("mtu", "mtu_bytes", false, false),
    ("netdev_group", "net_dev_group", false, false),
    ("tx_queue_len", "transmit_queue_length", false, false),
];
/// The same for attributes fixed while the device exists (read once).
const FIXED: [(&str, &str, bool, bool); 5] = [
    ("addr_assign_type", "address_assign_type", false, false),
    ("dev_id", "device_id", false, true),
    ("ifindex", "iface_id", false, false),
    ("name_assign_type", "name_assign_type", false, false),
    ("type", "protocol_type", false, false),
];

/// The files read every scrape: the text ones, [`DYNAMIC`], then `speed`.
const TEXT: [&str; 5] = ["address", "broadcast", "duplex", "operstate", "ifalias"];
const CHANGING: usize = TEXT.len() + DYNAMIC.len() + 2;
/// At most this many attribute files are held open across all devices
/// (sysfs regenerates an attribute per read, like `/proc`); devices past it
/// open theirs per scrape.
const MAX_HELD_FILES: usize = 512;

/// One device's folder, held open, its fixed attributes, and (within the
/// budget) its changing attributes' files.
#[derive(Debug)]
pub(super) struct Device {
    dir: OwnedFd,
    /// The folder's inode: a device replaced by one of the same name has
    /// another (a held file of the old one could otherwise read on).
    ino: u64,
    fixed: [Option<f64>; FIXED.len()],
    files: Option<Vec<Slot>>,
}

/// A held attribute file.
#[derive(Debug)]
enum Slot {
    Unopened,
    /// The kernel has no such file for this device.
    Absent,
    Open(OwnedFd),
}

/// The devices seen at the last scrape, by name.
#[derive(Debug, Default)]
pub(super) struct Devices {
    by_name: HashMap<String, Device>,
    /// Attribute files held by the devices that hold theirs.
    held_files: usize,
}

/// An attribute's text, trimmed; `None` when the kernel refuses it (EINVAL
/// for a down device's carrier, speed, duplex) or the file is absent.
fn attr(dir: &OwnedFd, name: &str, buf: &mut [u8]) -> Result<Option<String>, rustix::io::Errno> {
    let fd = match rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    match rustix::io::read(&fd, &mut *buf) {
        Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An attribute through its held file (opened on first use).
fn attr_held(
    dir: &OwnedFd,
    slot: &mut Slot,
    name: &str,
    buf: &mut [u8],
) -> Result<Option<String>, rustix::io::Errno> {
    if let Slot::Unopened = slot {
        *slot = match rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        {
            Ok(fd) => Slot::Open(fd),
            Err(rustix::io::Errno::NOENT) => Slot::Absent,
            Err(e) => return Err(e),
        };
    }
    let Slot::Open(fd) = slot else {
        return Ok(None);
    };
    match rustix::io::pread(&*fd, &mut *buf, 0) {
        Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())),
        Err(rustix::io::Errno::INVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

fn number(text: &str, hex: bool) -> Option<f64> {
    if hex {
        let h = text.strip_prefix("0x").unwrap_or(text);
        i64::from_str_radix(h, 16).ok().map(|v| v as f64)
    } else {
        text.parse::<i64>().ok().map(|v| v as f64)
    }
}

fn open_dir(path: &std::path::Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

impl NodeReader {
    /// `node_network_*` from `/sys/class/net` (see the module docs).
    pub(super) fn netclass(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let root = self.host_path("sys/class/net");
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            // no sysfs under the host root: node_exporter reports nothing
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ReadError::at(root, e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            // bonding_masters and the like are files, devices are links to folders
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut devices = self.netclass.lock();
        let Devices {
            by_name: held,
            held_files,
        } = &mut *devices;
        held.retain(|n, d| {
            let keep = names.binary_search(n).is_ok();
            if !keep && d.files.is_some() {
                *held_files -= CHANGING;
            }
            keep
        });

        let help = |s: &str| format!("Network device property: {s}");
        let mut up = MetricFamily::new(
            "node_network_up",
            "Value is 1 if operstate is 'up', 0 otherwise.",
            MetricKind::Gauge,
        );
        let mut info = MetricFamily::new(
            "node_network_info",
            "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
            MetricKind::Gauge,
        );
        let kind = |counter: bool| {
            if counter {
                MetricKind::Counter
            } else {
                MetricKind::Gauge
            }
        };
        let mut dynamic: Vec<MetricFamily> = DYNAMIC
            .iter()
            .map(|(_, s, c, _)| MetricFamily::new(format!("node_network_{s}"), help(s), kind(*c)))
            .collect();
        let mut fixed: Vec<MetricFamily> = FIXED
            .iter()
            .map(|(_, s, c, _)| MetricFamily::new(format!("node_network_{s}"), help(s), kind(*c)))
            .collect();
        let mut speed = MetricFamily::new(
            "node_network_speed_bytes",
            help("speed_bytes"),
            MetricKind::Gauge,
        );
        // node_exporter reads this one with the other device statistics
        let mut nohandler = MetricFamily::new(
            "node_network_receive_nohandler_total",
            "Network device statistic receive_nohandler.",
            MetricKind::Counter,
        );
        let mut buf = [0u8; 4096];
        let mut errors = Vec::new();
        for name in &names {
            // a held folder that fails is one whose device went (a new one
            // may have its name): opened afresh, once
            let path = root.join(name);
            if let Some(dev) = held.get(name)
                && rustix::fs::stat(&path).map(|st| st.st_ino).ok() != Some(dev.ino)
                && let Some(d) = held.remove(name)
                && d.files.is_some()
            {
                *held_files -= CHANGING;
            }
            let mut read = Err(rustix::io::Errno::NOENT);
            for _ in 0..2 {
                if !held.contains_key(name) {
                    let mut dev = match open_device(&path, &mut buf) {
                        Ok(d) => d,
                        Err(e) => {
                            read = Err(e);
                            break;
                        }
                    };
                    if held.len() >= MAX_HELD_DEVICES {
                        read = read_device(&mut dev, &mut buf).map(|v| (v, dev.fixed));
                        break;
                    }
                    if *held_files + CHANGING <= MAX_HELD_FILES {
                        *held_files += CHANGING;
                        dev.files = Some((0..CHANGING).map(|_| Slot::Unopened).collect());
                    }
                    held.insert(name.clone(), dev);
                }
                let Some(dev) = held.get_mut(name) else {
                    break;
                };
                read = read_device(dev, &mut buf).map(|v| (v, dev.fixed));
                if read.is_ok() {
                    break;
                }
                if let Some(d) = held.remove(name)
                    && d.files.is_some()
                {
                    *held_files -= CHANGING;
                }
            }
            let (values, fixed_values) = match read {
                Ok(v) => v,
                // gone between the listing and the read: not an error
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NODEV) => continue,
                Err(e) => {
                    errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let labels = label_set([("device", name.as_str())]);
            let [address, broadcast, duplex, operstate, ifalias] = &values.text;
            up.push_shared(&labels, f64::from(u8::from(operstate == "up")));
            info.push(
                [
                    ("address", address.as_str()),
                    ("broadcast", broadcast.as_str()),
                    ("device", name.as_str()),
                    ("duplex", duplex.as_str()),
                    ("ifalias", ifalias.as_str()),
                    ("operstate", operstate.as_str()),
                ],
                1.0,
            );
            for (f, v) in dynamic.iter_mut().zip(values.numbers) {
                if let Some(v) = v {
                    f.push_shared(&labels, v);
                }
            }
            // node_exporter 1.5 reports an unknown speed (-1) as is
            if let Some(mbps) = values.speed {
                speed.push_shared(&labels, mbps * 1_000_000.0 / 8.0);
            }
            if let Some(n) = values.nohandler {
                nohandler.push_shared(&labels, n);
            }
            for (f, v) in fixed.iter_mut().zip(fixed_values) {
                if let Some(v) = v {
                    f.push_shared(&labels, v);
                }
            }
        }
        drop(devices);
        let mut fams = vec![up, info, speed, nohandler];
        fams.extend(dynamic);
        fams.extend(fixed);
        out.families
            .extend(fams.into_iter().filter(|f| !f.samples.is_empty()));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ReadError::at(root, errors.join("; ")))
        }
    }
}

/// What one scrape read of one device.
#[derive(Debug, Default)]
struct DeviceValues {
    /// address, broadcast, duplex, operstate, ifalias
    text: [String; 5],
    numbers: [Option<f64>; DYNAMIC.len()],
    /// Mbit/s
    speed: Option<f64>,
    /// `statistics/rx_nohandler`
    nohandler: Option<f64>,
}

/// Opens a device's folder and reads its fixed attributes.
fn open_device(path: &std::path::Path, buf: &mut [u8]) -> rustix::io::Result<Device> {
    let dir = open_dir(path)?;
    let ino = rustix::fs::fstat(&dir)?.st_ino;
    let mut fixed = [None; FIXED.len()];
    for (slot, (file, _, _, hex)) in fixed.iter_mut().zip(FIXED) {
        *slot = attr(&dir, file, buf)?.and_then(|t| number(&t, hex));
    }
    Ok(Device {
        dir,
        ino,
        fixed,
        files: None,
    })
}

/// One device's changing attributes.
fn read_device(dev: &mut Device, buf: &mut [u8]) -> rustix::io::Result<DeviceValues> {
    let names = TEXT
        .iter()
        .copied()
        .chain(DYNAMIC.iter().map(|d| d.0))
        .chain(["speed", "statistics/rx_nohandler"]);
    let mut raw: [Option<String>; CHANGING] = Default::default();
    for (i, (slot, name)) in raw.iter_mut().zip(names).enumerate() {
        *slot = match dev.files.as_mut().and_then(|f| f.get_mut(i)) {
            Some(held) => attr_held(&dev.dir, held, name, buf)?,
            None => attr(&dev.dir, name, buf)?,
        };
    }
    let mut v = DeviceValues::default();
    let mut raw = raw.into_iter();
    for (slot, name) in v.text.iter_mut().zip(TEXT) {
        *slot = match raw.next().flatten() {
            Some(t) => t,
            // every device has an operstate: a folder without one is a
            // device that went (its held folder outlived it)
            None if name == "operstate" => return Err(rustix::io::Errno::NOENT),
            None => String::new(),
        };
    }
    for (slot, (_, _, _, hex)) in v.numbers.iter_mut().zip(DYNAMIC) {
        *slot = raw.next().flatten().and_then(|t| number(&t, hex));
    }
    v.speed = raw.next().flatten().and_then(|t| number(&t, false));
    v.nohandler = raw.next().flatten().and_then(|t| number(&t, false));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(root: &std::path::Path, name: &str, attrs: &[(&str, &str)]) {
        let d = root.join("sys/class/net").join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (k, v) in attrs {
            let f = d.join(k);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, format!("{v}\n")).unwrap();
        }
    }

    fn get(s: &Scrape, name: &str, dev: &str) -> Option<f64> {
        s.families
            .iter()
            .filter(|f| f.name == name)
            .flat_map(|f| &f.samples)
            .find(|x| x.labels.iter().any(|(k, v)| k == "device" && v == dev))
            .map(|x| x.value)
    }

    #[test]
    fn reads_devices_like_node_exporter_and_follows_them_being_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::create_dir_all(d.path().join("sys/class/net")).unwrap();
        std::fs::write(d.path().join("sys/class/net/bonding_masters"), "\n").unwrap();
        device(
            d.path(),
            "eth0",
            &[
                ("operstate", "up"),
                ("address", "02:fc:00:00:00:01"),
                ("broadcast", "ff:ff:ff:ff:ff:ff"),
                ("duplex", "full"),
                ("ifalias", ""),
                ("carrier", "1"),
                ("carrier_changes", "2"),
                ("flags", "0x1003"),
                ("dev_id", "0x10"),
                ("mtu", "1400"),
                ("ifindex", "4"),
                ("type", "1"),
                ("speed", "1000"),
                ("statistics/rx_nohandler", "7"),
            ],
        );
        // a down device: no carrier, no speed
        device(
            d.path(),
            "ifb0",
            &[("operstate", "down"), ("ifindex", "2"), ("mtu", "1500")],
        );
        let r = NodeReader::new(d.path());
        let mut s = Scrape::new(0);
        r.netclass(&mut s).unwrap();
        assert_eq!(get(&s, "node_network_up", "eth0"), Some(1.0));
        assert_eq!(get(&s, "node_network_up", "ifb0"), Some(0.0));
        assert_eq!(get(&s, "node_network_flags", "eth0"), Some(4099.0));
        assert_eq!(get(&s, "node_network_device_id", "eth0"), Some(16.0));
        assert_eq!(
            get(&s, "node_network_speed_bytes", "eth0"),
            Some(125_000_000.0)
        );
        assert_eq!(
            get(&s, "node_network_carrier_changes_total", "eth0"),
            Some(2.0)
        );
        assert_eq!(
            get(&s, "node_network_receive_nohandler_total", "eth0"),
            Some(7.0)
        );
        assert_eq!(get(&s, "node_network_carrier", "ifb0"), None);
        assert_eq!(get(&s, "node_network_speed_bytes", "ifb0"), None);
        assert_eq!(get(&s, "node_network_up", "bonding_masters"), None);
        let info = s
            .families
            .iter()
            .find(|f| f.name == "node_network_info")
            .unwrap();
        assert_eq!(info.samples.len(), 2);
        assert!(
            info.samples[0]
                .labels
                .contains(&("duplex".into(), "full".into()))
        );
        assert_eq!(
            s.families
                .iter()
                .find(|f| f.name == "node_network_carrier_changes_total")
                .unwrap()
                .kind,
            MetricKind::Counter
        );
        // a changed attribute is read again through its held file
        std::fs::write(d.path().join("sys/class/net/eth0/mtu"), "1500\n").unwrap();
        let mut s = Scrape::new(0);
        r.netclass(&mut s).unwrap();
        assert_eq!(get(&s, "node_network_mtu_bytes", "eth0"), Some(1500.0));

        // eth0 is replaced by a new device of the same name (the held folder
        // and files outlive the old one), ifb0 goes
        std::fs::remove_dir_all(d.path().join("sys/class/net/eth0")).unwrap();
        std::fs::remove_dir_all(d.path().join("sys/class/net/ifb0")).unwrap();
        device(
            d.path(),
            "eth0",
            &[("operstate", "down"), ("ifindex", "9"), ("mtu", "9000")],
        );
        let mut s = Scrape::new(0);
        r.netclass(&mut s).unwrap();
        assert_eq!(get(&s, "node_network_iface_id", "eth0"), Some(9.0));
        assert_eq!(get(&s, "node_network_mtu_bytes", "eth0"), Some(9000.0));
        assert_eq!(get(&s, "node_network_up", "eth0"), Some(0.0));
        assert_eq!(get(&s, "node_network_up", "ifb0"), None);
        assert_eq!(get(&s, "node_network_flags", "eth0"), None);
        assert_eq!(r.netclass.lock().held_files, CHANGING);
    }

    #[test]
    fn garbage_attributes_are_left_out_and_no_sysfs_is_no_figures() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        let r = NodeReader::new(d.path());
        let mut s = Scrape::new(0);
        r.netclass(&mut s).unwrap();
        assert!(s.families.is_empty());
        device(
            d.path(),
            "x",
            &[("operstate", "up"), ("mtu", "lots"), ("flags", "0xzz")],
        );
        r.netclass(&mut s).unwrap();
        assert_eq!(get(&s, "node_network_mtu_bytes", "x"), None);
        assert_eq!(get(&s, "node_network_flags", "x"), None);
        assert_eq!(get(&s, "node_network_up", "x"), Some(1.0));
    }
}
