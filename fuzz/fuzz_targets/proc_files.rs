//! `/proc` files as the agent reads them: the node readers
//! (`NodeReader::scrape`: stat, meminfo, loadavg, vmstat, net/dev,
//! diskstats, pressure, sys/kernel, mountinfo for filesystems) over a
//! fixture host root whose file picked by the first byte is replaced by the
//! rest; and the per-process parsers (`/proc/<pid>/stat`, `/proc/<pid>/cgroup`,
//! a network namespace's `net/dev`, `/dev/kmsg` records).
//! Property: no panic (a malformed file is an error of that reader).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vigil_agent::cgroup::{kmsg, netfd};
use vigil_agent::model::Scrape;
use vigil_agent::node::NodeReader;
use vigil_agent::procs;

const FILES: &[(&str, &str)] = &[
    (
        "proc/stat",
        "cpu  4705 356 584 3699 23 23 0 0 0 0\ncpu0 1393 280 290 1888 18 20 0 0 0 0\ncpu1 3312 76 294 1811 5 3 0 0 0 0\nintr 114930548 113199788 3 0 5 263 0 4 [... lots more numbers ...]\nctxt 1990473\nbtime 1062191376\nprocesses 2915\nprocs_running 1\nprocs_blocked 0\n",
    ),
    (
        "proc/meminfo",
        "MemTotal:       24576000 kB\nMemFree:         1234567 kB\nMemAvailable:   20000000 kB\nBuffers:          123456 kB\nCached:          4567890 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n",
    ),
    ("proc/loadavg", "0.52 0.58 0.59 2/523 12345\n"),
    (
        "proc/vmstat",
        "nr_free_pages 308664\npgpgin 1234\npgpgout 5678\npswpin 0\npswpout 0\npgfault 99999\npgmajfault 12\noom_kill 1\n",
    ),
    (
        "proc/net/dev",
        "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1234567    8901    0    0    0     0          0         0  1234567    8901    0    0    0     0       0          0\n  eth0: 98765432  123456    1    2    0     0          0        10 87654321  111111    0    0    0     0       0          0\n",
    ),
    (
        "proc/diskstats",
        "   8       0 sda 12345 678 901234 5678 9012 3456 789012 3456 0 7890 12345 0 0 0 0 10 20\n   8       1 sda1 1234 67 90123 567 901 345 78901 345 0 789 1234\n 253       0 dm-0 1 2 3 4 5 6 7 8 9 10 11\n",
    ),
    (
        "proc/pressure/cpu",
        "some avg10=1.23 avg60=0.50 avg300=0.10 total=123456789\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    ),
    (
        "proc/pressure/memory",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=5000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=2500\n",
    ),
    (
        "proc/pressure/io",
        "some avg10=0.10 avg60=0.05 avg300=0.01 total=777\nfull avg10=0.05 avg60=0.02 avg300=0.00 total=333\n",
    ),
    ("proc/sys/kernel/hostname", "node-1\n"),
    ("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n"),
    (
        "proc/sys/kernel/version",
        "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n",
    ),
    (
        "proc/1/mountinfo",
        "22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n40 28 0:35 / /mnt/my\\040disk rw,relatime shared:20 - tmpfs tmpfs rw,size=1024k\n",
    ),
];

fn root() -> &'static (tempfile::TempDir, Vec<PathBuf>) {
    static R: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    R.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        let paths = FILES
            .iter()
            .map(|(rel, text)| {
                let p = d.path().join(rel);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                std::fs::write(&p, text).expect("write");
                p
            })
            .collect();
        (d, paths)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = procs::parse_stat(1, &text);
    let _ = procs::cgroup_path(&text);
    let _ = netfd::parse_net_dev(&text);
    let _ = kmsg::parse_record(&text);

    let (dir, paths) = root();
    let i = usize::from(sel) % FILES.len();
    std::fs::write(&paths[i], rest).expect("write fixture");
    let mut s = Scrape::new(1_700_000_000_000);
    let _ = NodeReader::new(dir.path()).scrape(&mut s);
    std::fs::write(&paths[i], FILES[i].1).expect("restore fixture");
});
