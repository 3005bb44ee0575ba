//! Crash-safe replacement of a whole file: the one way vigil writes a small
//! state file (the agent id, the disk buffer's ack ledger, log checkpoints,
//! rule and action state, the collector's checkpoint).
//!
//! Contract of [`write_atomic`] / [`write_atomic_with`]: the content goes to a
//! temporary file `.<name>.tmp` in the same directory, which is fsync'd,
//! renamed over `<name>`, and then the directory is fsync'd. After a crash or
//! a power cut at any point a reader finds either the whole old content or
//! the whole new one — never a mix, never an empty file — and once the call
//! returns `Ok` the new content survives a power cut. A stale temporary file
//! left by a crash is overwritten by the next write and never read.
//!
//! Not here: appending logs of records (see [`crate::framed`]), or locking:
//! each state file has one writer.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why a state file could not be written; names the file and the step.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path} ({step}): {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// Replaces `path` with `bytes` crash-safely (see the module doc). Creates
/// the parent directory if it is missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Replaces `path` with what `fill` writes, crash-safely (see the module
/// doc). `fill` gets a buffered writer; if it fails nothing is replaced.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let err = |step: &'static str| {
        move |source| WriteError {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| WriteError {
        path: path.to_path_buf(),
        step: "name",
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    std::fs::create_dir_all(dir).map_err(err("create directory"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(err("create temporary file"))?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    let written = fill(&mut w)
        .and_then(|_| w.into_inner().map_err(io::IntoInnerError::into_error))
        .and_then(|f| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("write temporary file")(e));
    }
    std::fs::rename(&tmp, path).map_err(err("rename"))?;
    sync_dir(dir).map_err(err("fsync directory"))
}

/// fsyncs a directory, so that names created, renamed or removed in it
/// survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/state.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("id");
        write_atomic(&p, b"old").unwrap();
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.step, "write temporary file");
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(!d.path().join(".id.tmp").exists());
    }

    #[test]
    fn a_stale_temporary_from_a_crash_is_ignored_and_replaced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("acked");
        write_atomic(&p, b"7").unwrap();
        // a crash between creating the temporary and the rename
        std::fs::write(d.path().join(".acked.tmp"), b"12").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"7");
        write_atomic(&p, b"9").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"9");
        assert!(!d.path().join(".acked.tmp").exists());
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        let e = write_atomic(&f.join("below-a-file"), b"x").unwrap_err();
        assert_eq!(e.step, "create directory");
        assert!(e.to_string().contains("below-a-file"), "{e}");
    }
}
