//! node_exporter's default network-stack collectors, read from `/proc/net`
//! under `--host-root`: `netstat` (its default field set), `sockstat`,
//! `softnet`, `udp_queues`, `arp` and `conntrack`. Names, help texts, types
//! and labels are node_exporter 1.5's (tested against the real one). A file
//! the kernel does not have (no IPv6, no conntrack module) means no figures,
//! as in node_exporter, not an error. The files are read in the host init's
//! network namespace where the agent can see it (`/proc/1/net`, see
//! `NodeReader::load`), so a DaemonSet without `hostNetwork` still reports
//! the node's network stack, not its own pod's.

use std::collections::{BTreeMap, HashMap};

use super::{NodeReader, ReadError, single};
use crate::model::{MetricFamily, MetricKind, Scrape};

/// node_exporter's default `--collector.netstat.fields`.
const NETSTAT_FIELDS: &str = r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

static NETSTAT_RE: std::sync::LazyLock<Result<regex::Regex, regex::Error>> =
    std::sync::LazyLock::new(|| regex::Regex::new(NETSTAT_FIELDS));

/// The netstat files' header lines don't change while the kernel runs:
/// which of their columns node_exporter keeps is worked out once per line.
#[derive(Debug, Default)]
pub(super) struct Columns {
    /// header line → (its width, the kept columns and their `Proto_Field`)
    headers: HashMap<String, (usize, Vec<(usize, String)>)>,
    /// snmp6 field → its `Proto6_Field` if kept
    six: HashMap<String, Option<String>>,
}

/// Past this many cached lines and fields (a kernel has a few hundred), the
/// cache starts over.
const MAX_COLUMN_CACHE: usize = 4096;

impl NodeReader {
    /// `node_netstat_<Proto>_<Field>` (untyped) from `/proc/net/netstat`,
    /// `/proc/net/snmp` (header/value line pairs) and `/proc/net/snmp6`
    /// (`Ip6InReceives 12` lines), node_exporter's default fields only.
    pub(super) fn netstat(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let re = NETSTAT_RE
            .as_ref()
            .map_err(|e| self.err("net/netstat", e.to_string()))?;
        let mut cols = self.netstat_columns.lock();
        if cols.headers.len() + cols.six.len() > MAX_COLUMN_CACHE {
            *cols = Columns::default();
        }
        let mut stats: BTreeMap<String, f64> = BTreeMap::new();
        for name in ["net/netstat", "net/snmp"] {
            let Some(text) = self.read_opt(name)? else {
                continue;
            };
            let mut lines = text.lines();
            while let (Some(head), Some(vals)) = (lines.next(), lines.next()) {
                let (Some((proto, names)), Some((proto2, vals))) =
                    (head.split_once(':'), vals.split_once(':'))
                else {
                    return Err(self.err(name, format!("not a header/value pair: {head:?}")));
                };
                if proto != proto2 {
                    return Err(self.err(name, format!("{proto}: names but {proto2}: values")));
                }
                // the wanted columns of a header line, worked out once
                if !cols.headers.contains_key(head) {
                    let wanted = names
                        .split_ascii_whitespace()
                        .enumerate()
                        .map(|(i, n)| (i, format!("{proto}_{n}")))
                        .filter(|(_, key)| re.is_match(key))
                        .collect();
                    let width = names.split_ascii_whitespace().count();
                    cols.headers.insert(head.to_string(), (width, wanted));
                }
                let Some((width, wanted)) = cols.headers.get(head) else {
                    continue;
                };
                let vals: Vec<&str> = vals.split_ascii_whitespace().collect();
                if vals.len() != *width {
                    return Err(self.err(
                        name,
                        format!("{proto}: {width} names but {} values", vals.len()),
                    ));
                }
                for (i, key) in wanted {
                    let v = vals[*i]
                        .parse::<f64>()
                        .map_err(|e| self.err(name, format!("{key} {:?}: {e}", vals[*i])))?;
                    stats.insert(key.clone(), v);
                }
            }
        }
        if let Some(text) = self.read_opt("net/snmp6")? {
            for line in text.lines() {
                let mut it = line.split_ascii_whitespace();
                let (Some(k), Some(v)) = (it.next(), it.next()) else {
                    continue;
                };
                if !cols.six.contains_key(k) {
                    // "Icmp6InMsgs": the protocol runs to its "6"
                    let key = k
                        .find('6')
                        .map(|six| format!("{}_{}", &k[..=six], &k[six + 1..]))
                        .filter(|key| re.is_match(key));
                    cols.six.insert(k.to_string(), key);
                }
                let Some(Some(key)) = cols.six.get(k) else {
                    continue;
                };
                let v = v
                    .parse::<f64>()
                    .map_err(|e| self.err("net/snmp6", format!("{k} {v:?}: {e}")))?;
                stats.insert(key.clone(), v);
            }
        }
        for (key, v) in stats {
            out.families.push(single(
                format!("node_netstat_{key}"),
                format!("Statistic {}.", key.replacen('_', "", 1)),
                MetricKind::Untyped,
                v,
            ));
        }
        Ok(())
    }

    /// `node_sockstat_<PROTO>_<state>` from `/proc/net/sockstat{,6}`, with
    /// `mem` (pages) also as `mem_bytes`.
    pub(super) fn sockstat(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let page = rustix::param::page_size() as f64;
        for name in ["net/sockstat", "net/sockstat6"] {
            let text = match self.read_opt(name)? {
                Some(t) => t,
                None if name == "net/sockstat" => {
                    return Err(self.err(name, "missing"));
                }
                None => continue,
            };
            for line in text.lines() {
                let Some((proto, rest)) = line.split_once(':') else {
                    continue;
                };
                let f: Vec<&str> = rest.split_ascii_whitespace().collect();
                for kv in f.chunks(2) {
                    let [k, v] = kv else {
                        return Err(self.err(name, format!("odd fields in {line:?}")));
                    };
                    let v = v
                        .parse::<f64>()
                        .map_err(|e| self.err(name, format!("{line:?}: {e}")))?;
                    if proto == "sockets" {
                        out.families.push(single(
                            format!("node_sockstat_sockets_{k}"),
                            "Number of IPv4 sockets in use.",
                            MetricKind::Gauge,
                            v,
                        ));
                        continue;
                    }
                    let state = |s: &str| {
                        (
                            format!("node_sockstat_{proto}_{s}"),
                            format!("Number of {proto} sockets in state {s}."),
                        )
                    };
                    let (n, h) = state(k);
                    out.families.push(single(n, h, MetricKind::Gauge, v));
                    if *k == "mem" {
                        let (n, h) = state("mem_bytes");
                        out.families.push(single(n, h, MetricKind::Gauge, v * page));
                    }
                }
            }
        }
        Ok(())
    }

    /// `node_softnet_{processed,dropped,times_squeezed}_total{cpu}` from
    /// `/proc/net/softnet_stat` (hex columns; the CPU is the 13th column
    /// where the kernel gives it, else the line).
    pub(super) fn softnet(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let Some(text) = self.read_opt("net/softnet_stat")? else {
            return Ok(());
        };
        let mut fams = [
            (
                "node_softnet_processed_total",
                "Number of processed packets",
            ),
            ("node_softnet_dropped_total", "Number of dropped packets"),
            (
                "node_softnet_times_squeezed_total",
                "Number of times processing packets ran out of quota",
            ),
        ]
        .map(|(n, h)| MetricFamily::new(n, h, MetricKind::Counter));
        for (i, line) in text.lines().enumerate() {
            let cols: Vec<u64> = line
                .split_ascii_whitespace()
                .map(|c| u64::from_str_radix(c, 16))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err("net/softnet_stat", format!("{line:?}: {e}")))?;
            if cols.len() < 3 {
                return Err(self.err("net/softnet_stat", format!("short line {line:?}")));
            }
            let cpu = cols.get(12).copied().unwrap_or(i as u64).to_string();
            for (f, v) in fams.iter_mut().zip(&cols[..3]) {
                f.push([("cpu", cpu.as_str())], *v as f64);
            }
        }
        out.families
            .extend(fams.into_iter().filter(|f| !f.samples.is_empty()));
        Ok(())
    }

    /// `node_udp_queues{ip,queue}`: bytes queued on UDP sockets, summed from
    /// `/proc/net/udp{,6}`.
    pub(super) fn udp_queues(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let mut f = MetricFamily::new(
            "node_udp_queues",
            "Number of allocated memory in the kernel for UDP datagrams in bytes.",
            MetricKind::Gauge,
        );
        for (name, ip) in [("net/udp", "v4"), ("net/udp6", "v6")] {
            let Some(text) = self.read_opt(name)? else {
                continue;
            };
            let (mut tx, mut rx) = (0u64, 0u64);
            for line in text.lines().skip(1) {
                // sl local rem st tx_queue:rx_queue …
                let Some(q) = line.split_ascii_whitespace().nth(4) else {
                    return Err(self.err(name, format!("short line {line:?}")));
                };
                let parsed = q.split_once(':').and_then(|(t, r)| {
                    Some((
                        u64::from_str_radix(t, 16).ok()?,
                        u64::from_str_radix(r, 16).ok()?,
                    ))
                });
                let Some((t, r)) = parsed else {
                    return Err(self.err(name, format!("bad queues {q:?}")));
                };
                tx += t;
                rx += r;
            }
            f.push([("ip", ip), ("queue", "rx")], rx as f64);
            f.push([("ip", ip), ("queue", "tx")], tx as f64);
        }
        if !f.samples.is_empty() {
            out.families.push(f);
        }
        Ok(())
    }

    /// `node_arp_entries{device}` from `/proc/net/arp`.
    pub(super) fn arp(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let Some(text) = self.read_opt("net/arp")? else {
            return Ok(());
        };
        let mut by: BTreeMap<&str, u64> = BTreeMap::new();
        for line in text.lines().skip(1) {
            let Some(dev) = line.split_ascii_whitespace().nth(5) else {
                continue;
            };
            *by.entry(dev).or_default() += 1;
        }
        let mut f = MetricFamily::new(
            "node_arp_entries",
            "ARP entries by device",
            MetricKind::Gauge,
        );
        for (dev, n) in by {
            f.push([("device", dev)], n as f64);
        }
        if !f.samples.is_empty() {
            out.families.push(f);
        }
        Ok(())
    }

    /// `node_nf_conntrack_entries{,_limit}` and `node_nf_conntrack_stat_*`
    /// (summed over CPUs) when the conntrack module is loaded.
    pub(super) fn conntrack(&self, out: &mut Scrape) -> Result<(), ReadError> {
        let num = |name: &str| -> Result<Option<f64>, ReadError> {
            match self.read_opt(name)? {
                Some(t) => t
                    .trim()
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|e| self.err(name, e.to_string())),
                None => Ok(None),
            }
        };
        // the count: the stat file's `entries` column (of the namespace
        // `net/` files are read in, see `load`), else the sysctl (of the
        // agent's own namespace), which is where node_exporter reads it
        let stat = self.read_opt("net/stat/nf_conntrack")?;
        let from_stat = stat.as_deref().and_then(|t| {
            let mut lines = t.lines();
            let col = lines
                .next()?
                .split_ascii_whitespace()
                .position(|c| c == "entries")?;
            let v = lines.next()?.split_ascii_whitespace().nth(col)?;
            u64::from_str_radix(v, 16).ok().map(|v| v as f64)
        });
        let count = match from_stat {
            Some(c) => c,
            None => match num("sys/net/netfilter/nf_conntrack_count")? {
                Some(c) => c,
                None => return Ok(()),
            },
        };
        out.families.push(single(
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
            MetricKind::Gauge,
            count,
        ));
        if let Some(max) = num("sys/net/netfilter/nf_conntrack_max")? {
            out.families.push(single(
                "node_nf_conntrack_entries_limit",
                "Maximum size of connection tracking table.",
                MetricKind::Gauge,
                max,
            ));
        }
        let Some(text) = stat else {
            return Ok(());
        };
        const STATS: [(&str, &str); 8] = [
            ("found", "Number of searched entries which were successful."),
            (
                "invalid",
                "Number of packets seen which can not be tracked.",
            ),
            (
                "ignore",
                "Number of packets seen which are already connected to a conntrack entry.",
            ),
            ("insert", "Number of entries inserted into the list."),
            (
                "insert_failed",
                "Number of entries for which list insertion was attempted but failed.",
            ),
            (
                "drop",
                "Number of packets dropped due to conntrack failure.",
            ),
            (
                "early_drop",
                "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
            ),
            (
                "search_restart",
                "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
            ),
        ];
        let mut lines = text.lines();
        let Some(head) = lines.next() else {
            return Err(self.err("net/stat/nf_conntrack", "empty"));
        };
        let cols: Vec<&str> = head.split_ascii_whitespace().collect();
        let mut sums = vec![0u64; cols.len()];
        for line in lines {
            for (i, v) in line.split_ascii_whitespace().enumerate() {
                let v = u64::from_str_radix(v, 16)
                    .map_err(|e| self.err("net/stat/nf_conntrack", format!("{line:?}: {e}")))?;
                if let Some(s) = sums.get_mut(i) {
                    *s += v;
                }
            }
        }
        for (name, help) in STATS {
            if let Some(i) = cols.iter().position(|c| *c == name) {
                out.families.push(single(
                    format!("node_nf_conntrack_stat_{name}"),
                    help,
                    MetricKind::Gauge,
                    sums[i] as f64,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(files: &[(&str, &str)]) -> (tempfile::TempDir, NodeReader) {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join("proc").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let r = NodeReader::new(d.path());
        (d, r)
    }

    type Row = (String, Vec<(String, String)>, f64);

    fn values(s: &Scrape) -> Vec<Row> {
        s.families
            .iter()
            .flat_map(|f| {
                f.samples
                    .iter()
                    .map(|x| (f.name.clone(), x.labels.to_vec(), x.value))
            })
            .collect()
    }

    #[test]
    fn netstat_keeps_node_exporters_default_fields() {
        let (_d, r) = reader(&[
            (
                "net/netstat",
                "TcpExt: ListenDrops TCPSynRetrans DelayedACKs\nTcpExt: 3 4 5\n",
            ),
            ("net/snmp", "Tcp: RtoAlgorithm RetransSegs\nTcp: 1 9\n"),
            (
                "net/snmp6",
                "Ip6InOctets   \t17\nIp6InReceives 3\nUdpLite6InErrors 2\n",
            ),
        ]);
        let mut s = Scrape::new(0);
        r.netstat(&mut s).unwrap();
        let got: Vec<_> = values(&s).into_iter().map(|(n, _, v)| (n, v)).collect();
        assert_eq!(
            got,
            [
                ("node_netstat_Ip6_InOctets".to_string(), 17.0),
                ("node_netstat_TcpExt_ListenDrops".to_string(), 3.0),
                ("node_netstat_TcpExt_TCPSynRetrans".to_string(), 4.0),
                ("node_netstat_Tcp_RetransSegs".to_string(), 9.0),
                ("node_netstat_UdpLite6_InErrors".to_string(), 2.0),
            ]
        );
        assert_eq!(s.families[3].help, "Statistic TcpRetransSegs.");
        assert_eq!(s.families[3].kind, MetricKind::Untyped);
    }

    #[test]
    fn sockstat_softnet_udp_arp_conntrack() {
        let (_d, r) = reader(&[
            (
                "net/sockstat",
                "sockets: used 30\nTCP: inuse 11 orphan 0 tw 2 alloc 11 mem 3\nFRAG: inuse 0 memory 0\n",
            ),
            (
                "net/softnet_stat",
                "0000000a 00000001 00000002 0 0 0 0 0 0 0 0 0 00000000\n0000000b 00000000 00000000 0 0 0 0 0 0 0 0 0 00000003\n",
            ),
            (
                "net/udp",
                "  sl  local_address rem_address   st tx_queue rx_queue\n   1: 0100007F:0035 00000000:0000 07 00000010:00000020 00\n",
            ),
            (
                "net/arp",
                "IP address HW type Flags HW address Mask Device\n10.0.0.1 0x1 0x2 aa:bb * eth0\n10.0.0.2 0x1 0x2 aa:bc * eth0\n",
            ),
            ("sys/net/netfilter/nf_conntrack_count", "6\n"),
            (
                "net/stat/nf_conntrack",
                "entries found insert\n00000006 00000001 0000000a\n00000006 00000002 00000000\n",
            ),
        ]);
        let mut s = Scrape::new(0);
        r.sockstat(&mut s).unwrap();
        r.softnet(&mut s).unwrap();
        r.udp_queues(&mut s).unwrap();
        r.arp(&mut s).unwrap();
        r.conntrack(&mut s).unwrap();
        let v = values(&s);
        let get = |n: &str, l: &[(&str, &str)]| {
            v.iter()
                .find(|(name, labels, _)| {
                    name == n
                        && labels.len() == l.len()
                        && labels.iter().zip(l).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
                })
                .map(|x| x.2)
        };
        let page = rustix::param::page_size() as f64;
        assert_eq!(get("node_sockstat_sockets_used", &[]), Some(30.0));
        assert_eq!(get("node_sockstat_TCP_tw", &[]), Some(2.0));
        assert_eq!(get("node_sockstat_TCP_mem_bytes", &[]), Some(3.0 * page));
        assert_eq!(get("node_sockstat_FRAG_memory", &[]), Some(0.0));
        // the CPU column, not the line, names the CPU
        assert_eq!(
            get("node_softnet_processed_total", &[("cpu", "3")]),
            Some(11.0)
        );
        assert_eq!(
            get("node_softnet_dropped_total", &[("cpu", "0")]),
            Some(1.0)
        );
        assert_eq!(
            get("node_udp_queues", &[("ip", "v4"), ("queue", "tx")]),
            Some(16.0)
        );
        assert_eq!(
            get("node_udp_queues", &[("ip", "v4"), ("queue", "rx")]),
            Some(32.0)
        );
        assert_eq!(get("node_arp_entries", &[("device", "eth0")]), Some(2.0));
        assert_eq!(get("node_nf_conntrack_entries", &[]), Some(6.0));
        assert_eq!(get("node_nf_conntrack_stat_found", &[]), Some(3.0));
        assert_eq!(get("node_nf_conntrack_stat_insert", &[]), Some(10.0));
        // no udp6, no conntrack limit file: nothing, not an error
        assert_eq!(get("node_nf_conntrack_entries_limit", &[]), None);
    }

    #[test]
    fn malformed_files_are_errors_and_missing_ones_are_not() {
        let (_d, r) = reader(&[
            ("net/netstat", "TcpExt: A B\nTcpExt: 1\n"),
            ("net/sockstat", "TCP: inuse x\n"),
            ("net/softnet_stat", "zz 1 2\n"),
            ("net/udp", "h\n 1: a b 07 nothex\n"),
            ("sys/net/netfilter/nf_conntrack_count", "lots\n"),
        ]);
        let mut s = Scrape::new(0);
        assert!(r.netstat(&mut s).is_err());
        assert!(r.sockstat(&mut s).is_err());
        assert!(r.softnet(&mut s).is_err());
        assert!(r.udp_queues(&mut s).is_err());
        assert!(r.conntrack(&mut s).is_err());
        let (_e, empty) = reader(&[]);
        assert!(
            empty.sockstat(&mut s).is_err(),
            "sockstat is in every kernel"
        );
        for f in [
            NodeReader::netstat,
            NodeReader::softnet,
            NodeReader::udp_queues,
            NodeReader::arp,
            NodeReader::conntrack,
        ] {
            f(&empty, &mut s).unwrap();
        }
    }

    #[test]
    fn net_files_are_read_in_init_s_namespace_where_it_is_visible() {
        let (_d, r) = reader(&[
            ("net/sockstat", "sockets: used 3\n"),
            ("1/net/sockstat", "sockets: used 30\n"),
            ("net/arp", "h\n10.0.0.1 0x1 0x2 aa * eth0\n"),
        ]);
        let mut s = Scrape::new(0);
        r.sockstat(&mut s).unwrap();
        r.arp(&mut s).unwrap();
        let v = values(&s);
        assert_eq!(v[0].2, 30.0, "{v:?}");
        // where /proc/1/net lacks a file, the agent's own is read
        assert_eq!(v[1].0, "node_arp_entries");
    }

    proptest::proptest! {
        #[test]
        fn never_panic(text in "\\PC{0,200}") {
            let files: Vec<(&str, &str)> = [
                "net/netstat", "net/snmp", "net/snmp6", "net/sockstat", "net/sockstat6",
                "net/softnet_stat", "net/udp", "net/arp", "net/stat/nf_conntrack",
                "sys/net/netfilter/nf_conntrack_count",
            ].iter().map(|f| (*f, text.as_str())).collect();
            let (_d, r) = reader(&files);
            let mut s = Scrape::new(0);
            let _ = r.netstat(&mut s);
            let _ = r.sockstat(&mut s);
            let _ = r.softnet(&mut s);
            let _ = r.udp_queues(&mut s);
            let _ = r.arp(&mut s);
            let _ = r.conntrack(&mut s);
        }
    }
}
