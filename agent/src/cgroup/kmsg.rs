//! OOM kills from the kernel log (`/dev/kmsg`): the only witness when a
//! container's main process is killed and its cgroup removed before the next
//! scrape. Reads non-blocking from where it was opened (the end), so old kills
//! are not reported again after a restart. Not here: the counters in
//! `memory.oom_control`/`memory.events` (see `super`).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// One `oom-kill:` record.
#[derive(Debug, Clone, PartialEq)]
pub struct OomKill {
    /// The killed task's cgroup path (`task_memcg=`).
    pub task_memcg: String,
    pub task: String,
    pub pid: String,
}

/// Parses one kmsg record (`6,123,456,-;oom-kill:…,task_memcg=/x,task=sh,pid=1,uid=0`).
pub fn parse_record(rec: &str) -> Option<OomKill> {
    let (_, msg) = rec.split_once(';')?;
    let body = msg.lines().next()?.strip_prefix("oom-kill:")?;
    let mut k = OomKill {
        task_memcg: String::new(),
        task: String::new(),
        pid: String::new(),
    };
    for kv in body.split(',') {
        match kv.split_once('=') {
            Some(("task_memcg", v)) => k.task_memcg = v.to_string(),
            Some(("task", v)) => k.task = v.to_string(),
            Some(("pid", v)) => k.pid = v.to_string(),
            _ => {}
        }
    }
    (!k.task_memcg.is_empty()).then_some(k)
}

/// Calls `on_oom` from a thread of its own as soon as the kernel logs an OOM
/// kill (a blocking reader of `<host_root>/dev/kmsg` from its end), so the
/// agent can ship the kill without waiting for the next scrape. The records
/// themselves are still taken by each [`Kmsg`] reader.
pub fn watch(host_root: &Path, on_oom: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let mut f = File::open(host_root.join("dev/kmsg"))?;
    f.seek(SeekFrom::End(0))?;
    std::thread::Builder::new()
        .name("kmsg-watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => std::thread::sleep(std::time::Duration::from_millis(100)),
                    Ok(n) => {
                        if buf[..n].windows(9).any(|w| w == b"oom-kill:")
                            && parse_record(&String::from_utf8_lossy(&buf[..n])).is_some()
                        {
                            on_oom();
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "kernel log watch stopped; OOM kills are shipped with the next scrape");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// A non-blocking reader of `/dev/kmsg`.
pub struct Kmsg {
    file: Option<File>,
}

impl Kmsg {
    /// Opens `<host_root>/dev/kmsg` positioned at its end; unavailable is not fatal.
    pub fn open(host_root: &Path) -> Result<Self, std::io::Error> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(host_root.join("dev/kmsg"))?;
        f.seek(SeekFrom::End(0))?;
        Ok(Kmsg { file: Some(f) })
    }

    /// A reader that never yields (no kernel log available).
    pub fn none() -> Self {
        Kmsg { file: None }
    }

    /// Every OOM kill logged since the last call.
    pub fn drain(&mut self) -> Result<Vec<OomKill>, std::io::Error> {
        let mut out = Vec::new();
        let Some(f) = &mut self.file else {
            return Ok(out);
        };
        let mut buf = vec![0u8; 8192];
        // Bounded so a flood of kernel messages cannot stall a scrape.
        for _ in 0..10_000 {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(k) = parse_record(&String::from_utf8_lossy(&buf[..n])) {
                        out.push(k);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // EPIPE: records were overwritten before we read them; go on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
