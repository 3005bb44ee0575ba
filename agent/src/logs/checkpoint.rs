//! Read positions that survive a restart, in `<state-dir>/logs/checkpoints.json`.
//!
//! A position here only ever moves to what the collector acknowledged as
//! durably stored (plus the choices made at the first start, e.g. "start at
//! the end"); the file is replaced atomically (write, fsync, rename, fsync the
//! folder), so a crash leaves the old or the new version, never a torn one.
//! Records are kept, `done` or not, as long as a file with their fingerprint
//! exists next to the live path, so a rotated file is never read twice.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::ship::SourceKey;

/// Errors reading or writing the checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("log checkpoints {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log checkpoints: {0}")]
    Write(#[from] vigil_common::fs::WriteError),
    #[error("log checkpoints {path}: not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What is known about one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// Everything before this offset is stored by the collector (or was
    /// deliberately skipped at the first start).
    pub offset: u64,
    /// Pieces of stream i starting before `skip_until[i]` belong to records
    /// already stored (see `assemble`).
    pub skip_until: [u64; 2],
    /// Read to its end and released; kept so the file is not read again.
    pub done: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FileRepr {
    version: u32,
    sources: Vec<RecordRepr>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RecordRepr {
    path: String,
    device: u64,
    inode: u64,
    fingerprint: u64,
    offset: u64,
    #[serde(default)]
    skip_until: [u64; 2],
    #[serde(default)]
    done: bool,
}

/// The in-memory checkpoint table and its file.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    pub records: HashMap<SourceKey, Position>,
    dirty: bool,
}

impl Checkpoints {
    /// Loads `<state_dir>/logs/checkpoints.json`; `first_start` is true when
    /// there was none (the agent never ran with this state dir).
    pub fn load(state_dir: &Path) -> Result<(Self, bool), CheckpointError> {
        let dir = state_dir.join("logs");
        let path = dir.join("checkpoints.json");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((
                    Checkpoints {
                        path,
                        records: HashMap::new(),
                        dirty: true,
                    },
                    true,
                ));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let repr: FileRepr =
            serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Parse {
                path: path.clone(),
                source,
            })?;
        let records = repr
            .sources
            .into_iter()
            .map(|r| {
                (
                    SourceKey {
                        path: r.path,
                        device: r.device,
                        inode: r.inode,
                        fingerprint: r.fingerprint,
                    },
                    Position {
                        offset: r.offset,
                        skip_until: r.skip_until,
                        done: r.done,
                    },
                )
            })
            .collect();
        Ok((
            Checkpoints {
                path,
                records,
                dirty: false,
            },
            false,
        ))
    }

    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Raises a source's position to an acknowledged one.
    pub fn ack(&mut self, key: &SourceKey, offset: u64, skip_until: [u64; 2]) {
        if let Some(p) = self.records.get_mut(key)
            && offset > p.offset
        {
            p.offset = offset;
            p.skip_until = skip_until;
            self.dirty = true;
        }
    }

    /// Writes the table if it changed.
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        let mut sources: Vec<RecordRepr> = self
            .records
            .iter()
            .map(|(k, p)| RecordRepr {
                path: k.path.clone(),
                device: k.device,
                inode: k.inode,
                fingerprint: k.fingerprint,
                offset: p.offset,
                skip_until: p.skip_until,
                done: p.done,
            })
            .collect();
        sources.sort_by(|a, b| (&a.path, a.inode).cmp(&(&b.path, b.inode)));
        let body = serde_json::to_vec_pretty(&FileRepr {
            version: 1,
            sources,
        })
        .map_err(|source| CheckpointError::Parse {
            path: self.path.clone(),
            source,
        })?;
        vigil_common::fs::write_atomic(&self.path, &body)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_only_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, first) = Checkpoints::load(dir.path()).unwrap();
        assert!(first);
        let k = SourceKey {
            path: "/var/log/pods/a_b_c/d/0.log".into(),
            device: 1,
            inode: 2,
            fingerprint: 3,
        };
        c.records.insert(
            k.clone(),
            Position {
                offset: 0,
                skip_until: [0; 2],
                done: false,
            },
        );
        c.ack(&k, 100, [0, 120]);
        c.ack(&k, 50, [0; 2]);
        c.save().unwrap();
        let (c2, first) = Checkpoints::load(dir.path()).unwrap();
        assert!(!first);
        assert_eq!(c2.records[&k].offset, 100);
        assert_eq!(c2.records[&k].skip_until, [0, 120]);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("logs")).unwrap();
        fs::write(dir.path().join("logs/checkpoints.json"), b"{nope").unwrap();
        let e = Checkpoints::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("checkpoints.json"), "{e}");
    }
}
