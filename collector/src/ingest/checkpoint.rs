//! Checkpoints and start-up replay. A checkpoint is one file,
//! `<data_dir>/checkpoint`, written atomically (temp file, fsync, rename,
//! fsync of the folder): the WAL segment from which to replay, every agent's
//! durable sequence, the metric metadata and the store, closed by a crc32.
//! Start-up = load the checkpoint, then replay the WAL segments from there.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vigil_common::Labels;

use super::core::IngestCore;
use super::{IngestedEvent, IngestedLog};
use crate::metadata::Metadata;
use crate::store::{SeriesRef, Store};
use crate::telemetry::{ReasonLabels, Telemetry};
use crate::wal::{self, Tail};

const MAGIC: &[u8; 6] = b"VGCKP1";

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error("checkpoint: {0}")]
    Write(#[from] vigil_common::fs::WriteError),
}

pub fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoint")
}

pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

/// Counts a writer has seen, so the crc covers exactly what was written.
struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.crc.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a checkpoint covering everything applied before the WAL cut, then
/// deletes the segments it covers. Ingest continues meanwhile.
pub async fn write(core: &Arc<IngestCore>, data_dir: &Path) -> Result<u64, CheckpointError> {
    let t0 = Instant::now();
    let result = write_inner(core, data_dir).await;
    let tel = &core.telemetry;
    let outcome = if result.is_ok() { "success" } else { "failure" };
    tel.checkpoints
        .get_or_create(&ReasonLabels {
            reason: outcome.into(),
        })
        .inc();
    if result.is_ok() {
        tel.checkpoint_seconds.set(t0.elapsed().as_secs_f64());
        tel.checkpoint_last_success
            .set(vigil_common::time::now_ms().div_euclid(1000));
    }
    result
}

async fn write_inner(core: &Arc<IngestCore>, data_dir: &Path) -> Result<u64, CheckpointError> {
    // no stream is between WAL append and apply while we cut: every record
    // in the older segments is in the store
    let cut = {
        let _g = core.gate.write().await;
        core.wal.cut().await?
    };
    // the log sink persists what it holds before its WAL records go away
    if let Some(logs) = &core.logs {
        let logs = logs.clone();
        tokio::task::spawn_blocking(move || logs.checkpoint())
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| CheckpointError::Io {
                path: data_dir.join("logs"),
                source,
            })?;
    }
    let seqs = core.durable_seqs();
    let metadata = core.metadata.encode();
    let store = core.store.clone();
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || write_file(&dir, cut, &seqs, &metadata, &store))
        .await
        .map_err(|e| CheckpointError::Io {
            path: checkpoint_path(data_dir),
            source: io::Error::other(e.to_string()),
        })??;
    // segments below the cut go, unless a forwarding cursor still needs them
    let freed = core.wal.remove_before(cut)?;
    tracing::info!(replay_from = cut, freed_bytes = freed, "checkpoint written");
    Ok(cut)
}

fn write_file(
    dir: &Path,
    cut: u64,
    seqs: &HashMap<String, u64>,
    metadata: &[u8],
    store: &Store,
) -> Result<(), CheckpointError> {
    let path = checkpoint_path(dir);
    let body = |w: &mut CrcWriter<&mut dyn Write>| -> io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&cut.to_le_bytes())?;
        w.write_all(&(seqs.len() as u64).to_le_bytes())?;
        for (k, v) in seqs {
            w.write_all(&(k.len() as u32).to_le_bytes())?;
            w.write_all(k.as_bytes())?;
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(&(metadata.len() as u64).to_le_bytes())?;
        w.write_all(metadata)?;
        store.write_checkpoint(w)?;
        Ok(())
    };
    vigil_common::fs::write_atomic_with(&path, |inner| {
        let mut w = CrcWriter {
            inner,
            crc: crc32fast::Hasher::new(),
        };
        body(&mut w)?;
        let crc = w.crc.finalize();
        w.inner.write_all(&crc.to_le_bytes())
    })?;
    Ok(())
}

/// What start-up recovered.
#[derive(Debug, Default)]
pub struct Recovered {
    pub durable: HashMap<String, u64>,
    /// The segment replay started from: those below are covered by the
    /// checkpoint (and kept only for forwarding cursors).
    pub replay_from: u64,
    pub records: u64,
    pub torn: u64,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Loads the checkpoint (if any) into `store`/`metadata` and replays the
/// WAL after it, calling `logs`/`events` for what the records hold.
/// `samples`: whether the WAL's samples go back into `store` (false for a
/// gateway without local storage; sequences, metadata, logs and events are
/// recovered either way).
pub fn recover(
    data_dir: &Path,
    store: &Store,
    samples: bool,
    metadata: &Metadata,
    telemetry: &Telemetry,
    mut logs: impl FnMut(&[IngestedLog]),
    mut events: impl FnMut(&[IngestedEvent]),
) -> Result<Recovered, CheckpointError> {
    let mut rec = Recovered::default();
    let path = checkpoint_path(data_dir);
    let mut replay_from = 0;
    match std::fs::read(&path) {
        Ok(bytes) => {
            if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
                return Err(corrupt(&path, "not a vigil checkpoint"));
            }
            let (body, crc) = bytes.split_at(bytes.len() - 4);
            if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
                return Err(corrupt(&path, "checksum mismatch"));
            }
            let mut r = &body[MAGIC.len()..];
            let e = |err: io::Error| corrupt(&path, err.to_string());
            replay_from = read_u64(&mut r).map_err(e)?;
            let n = read_u64(&mut r).map_err(e)?;
            for _ in 0..n {
                let len = read_u32(&mut r).map_err(e)? as usize;
                if len > r.len() {
                    return Err(corrupt(&path, "agent id past the end"));
                }
                let id = String::from_utf8_lossy(&r[..len]).to_string();
                r = &r[len..];
                rec.durable.insert(id, read_u64(&mut r).map_err(e)?);
            }
            let mlen = read_u64(&mut r).map_err(e)? as usize;
            if mlen > r.len() {
                return Err(corrupt(&path, "metadata past the end"));
            }
            metadata
                .decode_into(&r[..mlen])
                .map_err(|err| corrupt(&path, format!("metadata: {err}")))?;
            r = &r[mlen..];
            store
                .read_checkpoint(&mut r)
                .map_err(|err| corrupt(&path, format!("store: {err}")))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(CheckpointError::Io { path, source }),
    }
    rec.replay_from = replay_from;
    let wdir = wal_dir(data_dir);
    std::fs::create_dir_all(&wdir).map_err(|source| CheckpointError::Io {
        path: wdir.clone(),
        source,
    })?;
    let segs = wal::segments(&wdir).map_err(|source| CheckpointError::Io {
        path: wdir.clone(),
        source,
    })?;
    // ids are defined once after a cut, for every later segment
    let mut series: HashMap<u64, (Arc<Labels>, Option<SeriesRef>)> = HashMap::new();
    for s in segs.into_iter().filter(|s| *s >= replay_from) {
        let p = wal::segment_path(&wdir, s);
        let tail = wal::read_segment(&p, |r| {
            rec.records += 1;
            for d in &r.series {
                let labels = Labels::new(
                    d.labels
                        .chunks_exact(2)
                        .map(|c| (c[0].clone(), c[1].clone())),
                );
                let sref = if samples && labels.metric_name().is_some() {
                    let tenant = if !r.agent_id.is_empty() {
                        r.agent_id.as_str()
                    } else if !r.tenant.is_empty() {
                        r.tenant.as_str()
                    } else {
                        super::core::REMOTE_WRITE_TENANT
                    };
                    store.get_or_create_trusted_for(tenant, &labels).ok()
                } else {
                    None
                };
                series.insert(d.id, (Arc::new(labels), sref));
            }
            let mut samples = Vec::new();
            let mut blocks: Vec<&crate::wal::WalBlock> = r.blocks.iter().collect();
            blocks.sort_by_key(|b| b.timestamp_ms);
            for b in blocks {
                for (id, v) in b.ids.iter().zip(&b.values) {
                    if let Some((_, Some(sref))) = series.get(id) {
                        samples.push((*sref, b.timestamp_ms, *v));
                    }
                }
            }
            store.append_batch(&samples);
            let l: Vec<IngestedLog> = r
                .logs
                .iter()
                .filter_map(|l| {
                    let (stream, _) = series.get(&l.stream_id)?;
                    Some(IngestedLog {
                        stream: (**stream).clone(),
                        source_id: l.source_id,
                        source_path: l.source_path.clone(),
                        offset: l.offset,
                        end_offset: l.end_offset,
                        timestamp_ns: l.timestamp_ns,
                        line: l.line.clone(),
                    })
                })
                .collect();
            if !l.is_empty() {
                logs(&l);
            }
            let ev: Vec<IngestedEvent> = r
                .events
                .iter()
                .filter_map(|e| {
                    let (subject, _) = series.get(&e.subject_id)?;
                    Some(IngestedEvent {
                        timestamp_ms: e.timestamp_ms,
                        kind: e.kind.clone(),
                        subject: (**subject).clone(),
                        attributes: e
                            .attributes
                            .chunks_exact(2)
                            .map(|c| (c[0].clone(), c[1].clone()))
                            .collect(),
                    })
                })
                .collect();
            if !ev.is_empty() {
                events(&ev);
            }
            metadata.update(&r.metadata);
            // remote-write records carry no agent
            if !r.agent_id.is_empty() {
                let d = rec.durable.entry(r.agent_id.clone()).or_insert(0);
                *d = (*d).max(r.seq);
            }
        })?;
        if let Tail::Torn { offset, reason } = tail {
            tracing::warn!(segment = %p.display(), offset, reason = %reason, "torn WAL tail (a crash mid-write); truncating");
            rec.torn += 1;
            telemetry.wal_torn_tails.inc();
            wal::truncate(&p, offset)?;
        }
    }
    telemetry.wal_replayed_records.inc_by(rec.records);
    Ok(rec)
}

fn read_u64(r: &mut &[u8]) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32(r: &mut &[u8]) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}
