//! Disk space as a writer sees it: the bytes a filesystem still has for an
//! unprivileged process (`statvfs`'s `f_bavail`, what `df` calls
//! "Avail"), and whether an I/O error means the disk (or a quota) is full.
//! Shared by the agent's disk buffer and the collector's write guard.
//!
//! Not here: what to do about a full disk — each owner decides (the agent
//! drops its oldest buffered batches, the collector stops taking new data).

use std::io;
use std::path::Path;

/// Space of the filesystem holding a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use.
    pub available: u64,
    /// Size of the filesystem.
    pub total: u64,
}

/// The space of the filesystem that holds `path`.
pub fn space(path: &Path) -> io::Result<Space> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(Space {
        available: st.f_bavail.saturating_mul(st.f_frsize),
        total: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// True when `e` says there is no room left: `ENOSPC` (the filesystem) or
/// `EDQUOT` (a quota).
pub fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28 | 122))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_space_of_a_real_filesystem() {
        let s = space(Path::new("/")).unwrap();
        assert!(s.total > 0);
        assert!(s.available <= s.total);
        assert!(space(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn classifies_full_disks_and_quotas() {
        assert!(is_full(&io::Error::from_raw_os_error(28)));
        assert!(is_full(&io::Error::from_raw_os_error(122)));
        assert!(is_full(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!is_full(&io::Error::from_raw_os_error(5)));
        assert!(!is_full(&io::Error::other("disk full, said someone")));
    }
}
