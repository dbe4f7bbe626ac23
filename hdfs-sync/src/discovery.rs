//! Finds jobs and their complete checkpoints under a checkpoint root:
//! `<root>/<job-id>/chk-N/_metadata`. A `chk-N/` without `_metadata` is still being written
//! (or was abandoned) and is never treated as a checkpoint.

use std::time::SystemTime;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::error::{StorageErrorKind, SyncError};
use crate::storage::Storage;
use crate::url::StorageUrl;

/// Names Flink gives job directories (32 hex digits); others under the root are ignored
/// unless a caller asks for them by name.
pub fn looks_like_job_id(name: &str) -> bool {
    !name.starts_with('.') && !name.is_empty()
}

/// `chk-17` → 17.
pub fn checkpoint_number(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteCheckpoint {
    pub id: u64,
    pub dir: StorageUrl,
    /// Modification time of `_metadata`: when Flink completed the checkpoint.
    pub completed_at: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCheckpoints {
    pub job_id: String,
    pub job_dir: StorageUrl,
    /// Complete checkpoints, oldest first.
    pub complete: Vec<CompleteCheckpoint>,
    /// `chk-N` directories without `_metadata` (in progress or abandoned).
    pub in_progress: Vec<u64>,
}

impl JobCheckpoints {
    pub fn latest(&self) -> Option<&CompleteCheckpoint> {
        self.complete.last()
    }
}

/// Job directories directly under `root`, sorted.
pub async fn list_jobs(storage: &dyn Storage, root: &StorageUrl) -> Result<Vec<String>, SyncError> {
    let mut jobs: Vec<String> = storage
        .list(root)
        .await?
        .into_iter()
        // A link is kept, so that the job fails naming it instead of vanishing silently.
        .filter(|e| (e.is_dir || e.is_symlink) && looks_like_job_id(&e.name))
        .map(|e| e.name)
        .collect();
    jobs.sort();
    Ok(jobs)
}

/// Complete and in-progress checkpoints of one job. A missing job directory yields none.
pub async fn discover_job(
    storage: &dyn Storage,
    root: &StorageUrl,
    job_id: &str,
) -> Result<JobCheckpoints, SyncError> {
    let job_dir = root.join(job_id)?;
    let entries = match storage.list(&job_dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind == StorageErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut numbered: Vec<u64> = entries
        .iter()
        // A linked `chk-N/` is kept: looking into it fails, naming the link.
        .filter(|e| e.is_dir || e.is_symlink)
        .filter_map(|e| checkpoint_number(&e.name))
        .collect();
    numbered.sort_unstable();
    let mut complete = Vec::new();
    let mut in_progress = Vec::new();
    for id in numbered {
        let dir = job_dir.join(&format!("chk-{id}"))?;
        match storage.stat(&dir.join("_metadata")?).await? {
            Some(meta) if !meta.is_dir => complete.push(CompleteCheckpoint {
                id,
                dir,
                completed_at: meta.modified,
            }),
            _ => in_progress.push(id),
        }
    }
    Ok(JobCheckpoints {
        job_id: job_id.to_string(),
        job_dir,
        complete,
        in_progress,
    })
}

/// Every job under `root`, `parallel` directory listings at a time.
pub async fn discover_all(
    storage: &dyn Storage,
    root: &StorageUrl,
    parallel: usize,
) -> Result<Vec<JobCheckpoints>, SyncError> {
    let jobs = list_jobs(storage, root).await?;
    let mut found: Vec<JobCheckpoints> = stream::iter(jobs)
        .map(|job| async move { discover_job(storage, root, &job).await })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    found.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    #[tokio::test]
    async fn only_checkpoints_with_metadata_are_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("job-a");
        for n in [1, 2, 10] {
            std::fs::create_dir_all(job.join(format!("chk-{n}"))).unwrap();
        }
        std::fs::create_dir_all(job.join("shared")).unwrap();
        std::fs::create_dir_all(job.join("taskowned")).unwrap();
        std::fs::write(job.join("chk-1/_metadata"), b"x").unwrap();
        std::fs::write(job.join("chk-10/_metadata"), b"x").unwrap();
        let root = StorageUrl::local(tmp.path()).unwrap();
        let found = discover_job(&LocalStorage::new(tmp.path()), &root, "job-a")
            .await
            .unwrap();
        let ids: Vec<u64> = found.complete.iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 10]);
        assert_eq!(found.in_progress, [2]);
        assert_eq!(found.latest().unwrap().id, 10);
        let all = discover_all(&LocalStorage::new(tmp.path()), &root, 4)
            .await
            .unwrap();
        assert_eq!(all.len(), 1);
    }

    #[tokio::test]
    async fn a_missing_job_directory_has_no_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let root = StorageUrl::local(tmp.path()).unwrap();
        let found = discover_job(&LocalStorage::new(tmp.path()), &root, "gone")
            .await
            .unwrap();
        assert!(found.complete.is_empty());
    }
}
