//! `/proc/<pid>/mountinfo` lines (proc(5)): where each filesystem is mounted,
//! which part of it (the root), its type and super options. The one reader
//! of that file: the agent finds the cgroup hierarchies with it, the
//! collector its own cgroup's memory limit.

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the filesystem mounted here (field 4; `/` for the
    /// whole filesystem, a cgroup path inside a container).
    pub root: String,
    /// Where it is mounted (field 5), octal escapes undone.
    pub mount_point: String,
    /// Filesystem type (`cgroup`, `cgroup2`, `tmpfs`, …).
    pub fstype: String,
    /// Super options (`rw,memory` for a v1 memory hierarchy).
    pub super_options: String,
}

/// The mounts of a mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 5 || sep < 5 || fields.len() < sep + 4 {
            continue;
        }
        out.push(Mount {
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
            fstype: fields[sep + 1].to_string(),
            super_options: fields[sep + 3].to_string(),
        });
    }
    out
}

/// `\040` style octal escapes in mountinfo paths.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_mounts_and_skips_garbage() {
        let text = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
50 30 0:40 /docker/abc /sys/fs/cgroup/my\\040dir ro - cgroup2 cgroup2 rw
garbage line
1 2 3 - x
";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, "/sys/fs/cgroup/memory");
        assert_eq!(
            (m[0].fstype.as_str(), m[0].super_options.as_str()),
            ("cgroup", "rw,memory")
        );
        assert_eq!(m[1].fstype, "cgroup2");
        assert_eq!(m[2].root, "/docker/abc");
        assert_eq!(m[2].mount_point, "/sys/fs/cgroup/my dir");
    }

    #[test]
    fn unescapes_only_octal_bytes() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/x\"), r"/x\");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
        assert_eq!(unescape(r"/x\777"), r"/x\777");
        assert_eq!(unescape(r"/x\+12"), r"/x\+12");
    }
}
