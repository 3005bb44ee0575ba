//! Per-container figures that live in `/proc` rather than in the cgroup:
//! open file descriptors (summed over the container's processes) and network
//! device counters, read once per network namespace through one of its
//! processes (`/proc/<pid>/net/dev`). Not here: cgroup files (`super`).

use std::path::Path;

/// Network counters of one interface: receive bytes, packets, errors,
/// drops, then transmit bytes, packets, errors, drops.
pub type IfaceCounters = [f64; 8];

/// The processes of a cgroup (`cgroup.procs`), empty when unreadable.
pub fn pids(cgroup_dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup_dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Open file descriptors of `pids` (processes that exit meanwhile count 0).
pub fn count_fds(proc: &Path, pids: &[u32]) -> f64 {
    pids.iter()
        .map(|p| {
            std::fs::read_dir(proc.join(p.to_string()).join("fd"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum::<usize>() as f64
}

/// The network namespace of a process (`net:[4026531992]`).
pub fn netns(proc: &Path, pid: u32) -> Option<String> {
    std::fs::read_link(proc.join(pid.to_string()).join("ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Parses `/proc/<pid>/net/dev`, without `lo` (cAdvisor leaves it out).
pub fn parse_net_dev(text: &str) -> Result<Vec<(String, IfaceCounters)>, String> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let dev = dev.trim();
        if dev == "lo" {
            continue;
        }
        let v: Vec<f64> = rest
            .split_ascii_whitespace()
            .map_while(|x| x.parse().ok())
            .collect();
        if v.len() < 16 {
            return Err(format!("short line for interface {dev:?}"));
        }
        out.push((
            dev.to_string(),
            [v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]],
        ));
    }
    Ok(out)
}

/// cAdvisor's family for each position of [`IfaceCounters`].
pub const NET_FAMILIES: [(&str, &str); 8] = [
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_net_dev_without_lo() {
        let t = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 5000 50 1 2 0 0 0 3 7000 70 4 5 0 0 0 0\n";
        let v = parse_net_dev(t).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "eth0");
        assert_eq!(v[0].1, [5000.0, 50.0, 1.0, 2.0, 7000.0, 70.0, 4.0, 5.0]);
        assert!(parse_net_dev("h\nh\n eth0: 1 2\n").is_err());
    }

    #[test]
    fn this_process_has_fds_and_a_netns() {
        let proc = Path::new("/proc");
        let me = std::process::id();
        assert!(count_fds(proc, &[me]) >= 3.0);
        assert!(netns(proc, me).is_some_and(|n| n.starts_with("net:[")));
        assert_eq!(count_fds(proc, &[u32::MAX]), 0.0);
    }

    proptest::proptest! {
        #[test]
        fn net_dev_parser_never_panics(s in "\\PC{0,300}") {
            let _ = parse_net_dev(&s);
        }
    }
}
