//! Where "checkpoint N of job J is restorable at the peer" is recorded. The controller adapts
//! its state store (etcd or embedded) to [`ReplicationLedger`]; [`FileLedger`] is the durable
//! local implementation `twinsite sync` and the tests use.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::SyncError;

/// A checkpoint whose every referenced file is verified at the peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedCheckpoint {
    pub checkpoint_id: u64,
    /// The peer's `chk-N` directory: what a relaunch passes as `execution.state-recovery.path`.
    pub peer_pointer: String,
    /// When the source completed it (`_metadata` mtime), seconds since the Unix epoch.
    pub source_completed_at: Option<f64>,
    pub recorded_at: f64,
    pub bytes: u64,
    pub files: u64,
}

/// Durable record of replicated checkpoints. A record is written only after every file of the
/// checkpoint is verified at the peer; implementations must make `record_replicated` durable
/// before returning.
#[async_trait]
pub trait ReplicationLedger: Send + Sync {
    async fn record_replicated(
        &self,
        job_id: &str,
        checkpoint: ReplicatedCheckpoint,
    ) -> Result<(), SyncError>;
    /// Replicated checkpoints of a job that are still retained at the peer, oldest first.
    async fn replicated(&self, job_id: &str) -> Result<Vec<ReplicatedCheckpoint>, SyncError>;
    /// Drops records whose peer copy retention has deleted.
    async fn forget(&self, job_id: &str, checkpoint_ids: &[u64]) -> Result<(), SyncError>;

    async fn latest_replicated(
        &self,
        job_id: &str,
    ) -> Result<Option<ReplicatedCheckpoint>, SyncError> {
        Ok(self
            .replicated(job_id)
            .await?
            .into_iter()
            .max_by_key(|c| c.checkpoint_id))
    }
}

/// A JSON file, rewritten atomically (temp file, fsync, rename, fsync of the directory).
pub struct FileLedger {
    path: PathBuf,
    state: tokio::sync::Mutex<BTreeMap<String, Vec<ReplicatedCheckpoint>>>,
}

impl FileLedger {
    /// Opens (or starts) the ledger at `path`. A file that does not parse is an error, never
    /// silently replaced: it may be the only record of what the peer holds.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, SyncError> {
        let path = path.into();
        let state = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SyncError::Ledger {
                path: path.display().to_string(),
                message: format!("does not parse as a ledger: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(SyncError::Ledger {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        Ok(Self {
            path,
            state: tokio::sync::Mutex::new(state),
        })
    }

    async fn persist(
        &self,
        state: &BTreeMap<String, Vec<ReplicatedCheckpoint>>,
    ) -> Result<(), SyncError> {
        let err = |e: std::io::Error| SyncError::Ledger {
            path: self.path.display().to_string(),
            message: e.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| SyncError::Ledger {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        // A bare file name's parent is "", which cannot be opened to sync: use ".".
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        tokio::fs::create_dir_all(&dir).await.map_err(err)?;
        let temp = dir.join(format!(
            ".{}.tmp",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("ledger")
        ));
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| SyncError::Ledger {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?
        .map_err(err)
    }
}

#[async_trait]
impl ReplicationLedger for FileLedger {
    async fn record_replicated(
        &self,
        job_id: &str,
        checkpoint: ReplicatedCheckpoint,
    ) -> Result<(), SyncError> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        let list = next.entry(job_id.to_string()).or_default();
        list.retain(|c| c.checkpoint_id != checkpoint.checkpoint_id);
        list.push(checkpoint);
        list.sort_by_key(|c| c.checkpoint_id);
        self.persist(&next).await?;
        *state = next;
        Ok(())
    }

    async fn replicated(&self, job_id: &str) -> Result<Vec<ReplicatedCheckpoint>, SyncError> {
        Ok(self
            .state
            .lock()
            .await
            .get(job_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn forget(&self, job_id: &str, checkpoint_ids: &[u64]) -> Result<(), SyncError> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        if let Some(list) = next.get_mut(job_id) {
            list.retain(|c| !checkpoint_ids.contains(&c.checkpoint_id));
        }
        self.persist(&next).await?;
        *state = next;
        Ok(())
    }
}

/// An in-memory ledger for tests and the simulated sites.
#[derive(Default)]
pub struct MemoryLedger {
    state: std::sync::Mutex<BTreeMap<String, Vec<ReplicatedCheckpoint>>>,
}

#[async_trait]
impl ReplicationLedger for MemoryLedger {
    async fn record_replicated(
        &self,
        job_id: &str,
        checkpoint: ReplicatedCheckpoint,
    ) -> Result<(), SyncError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let list = state.entry(job_id.to_string()).or_default();
        list.retain(|c| c.checkpoint_id != checkpoint.checkpoint_id);
        list.push(checkpoint);
        list.sort_by_key(|c| c.checkpoint_id);
        Ok(())
    }

    async fn replicated(&self, job_id: &str) -> Result<Vec<ReplicatedCheckpoint>, SyncError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(state.get(job_id).cloned().unwrap_or_default())
    }

    async fn forget(&self, job_id: &str, checkpoint_ids: &[u64]) -> Result<(), SyncError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = state.get_mut(job_id) {
            list.retain(|c| !checkpoint_ids.contains(&c.checkpoint_id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> ReplicatedCheckpoint {
        ReplicatedCheckpoint {
            checkpoint_id: id,
            peer_pointer: format!("file:///peer/job/chk-{id}"),
            source_completed_at: Some(1.0),
            recorded_at: 2.0,
            bytes: 3,
            files: 1,
        }
    }

    #[tokio::test]
    async fn a_file_ledger_survives_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ledger.json");
        let ledger = FileLedger::open(&path).await.unwrap();
        ledger.record_replicated("job", record(3)).await.unwrap();
        ledger.record_replicated("job", record(5)).await.unwrap();
        ledger.forget("job", &[3]).await.unwrap();
        let reopened = FileLedger::open(&path).await.unwrap();
        assert_eq!(
            reopened.latest_replicated("job").await.unwrap(),
            Some(record(5))
        );
        assert_eq!(reopened.replicated("job").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_corrupt_ledger_is_reported_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ledger.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = FileLedger::open(&path).await.err().unwrap().to_string();
        assert!(err.contains("ledger.json"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
    }
}
