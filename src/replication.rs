//! Checkpoint replication inside the controller: every round, each placed job's checkpoints
//! are copied from its site's storage to every other site's (hdfs-sync, verified, rewritten
//! to the peer's URIs), and the newest checkpoint verified at a peer is recorded in the state
//! store as that job's `replicated` pointer for the peer: what a failover restores from.
//!
//! Which checkpoints exist at a peer is kept in one ledger file per direction
//! (`<dataDir>/replication/<from>-to-<to>.json`); the store only holds the newest pointer.
//!
//! Beside the rounds, the exposure monitor (`controller/exposure.rs`) judges every job's
//! RPO exposure every [`EXPOSURE_TICK`]; the rounds feed it each copy's backlog and errors.
//!
//! May use: `crate::job`, `crate::site`, `crate::state` and the crates. Must never: reach up
//! into the controller. What it needs of the controller it runs beside (the store, the
//! storage roots) and what it tells it (progress, a verified checkpoint for the failover
//! engine, metrics, the exposure tick) pass through [`ReplicationContext`], which the
//! controller implements (`controller/exposure.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hdfs_sync::{FileLedger, ReplicationLedger, Replicator, SyncError, SyncOptions};
use scheduler::model::{JobId, SiteId};

use crate::job::{flink_job_id, in_site_storage, stream_job_of};
use crate::state::{CheckpointKind, CheckpointPointer, StateError, StateStore};

/// What the replication driver needs from the controller it runs beside, and what it tells
/// it. Implemented by `Controller`; the driver never sees more of it.
#[async_trait::async_trait]
pub trait ReplicationContext: Send + Sync + 'static {
    fn store(&self) -> &Arc<dyn StateStore>;
    /// Each site's storage root; sites without one are not replicated.
    fn storage_roots(&self) -> &BTreeMap<SiteId, String>;
    /// The newest checkpoint of `job` at `peer` is not verified there yet: `files` files of
    /// `bytes` bytes to go (0 and 0: nothing left).
    fn backlog(&self, job: &JobId, peer: &SiteId, files: u64, bytes: u64);
    /// One file of the copy of `job` to `peer` verified.
    fn file_verified(&self, job: &JobId, peer: &SiteId, bytes: u64);
    /// A copy of `job` to `peer` ended, with its error when it failed.
    fn copy_ended(&self, job: &JobId, peer: &SiteId, error: Option<String>);
    /// Every file of a checkpoint of `generation` of `job` is verified at `peer` and its
    /// pointer is stored: the failover engine may restore from it there.
    fn checkpoint_replicated(
        &self,
        job: &JobId,
        generation: u64,
        peer: &SiteId,
        pointer: &CheckpointPointer,
    );
    /// Counts one copy's outcome from `site` to `peer`: a pointer recorded, or a failure.
    fn count_copy(&self, site: &SiteId, peer: &SiteId, outcome: CopyOutcome);
    /// Counts a finished round and how long it took.
    fn count_round(&self, elapsed: Duration);
    /// Judges every job's RPO exposure once (the monitor beside the rounds calls it every
    /// [`EXPOSURE_TICK`]); fails only on state-store errors.
    async fn judge_exposure(&self) -> Result<(), StateError>;
}

/// What one copy to a peer came to, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// A newer checkpoint's pointer was recorded for the peer.
    Recorded,
    Failed,
}

/// What a round did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicationRound {
    /// Pointers newly recorded: job, peer site, checkpoint id.
    pub recorded: Vec<(JobId, SiteId, u64)>,
    /// Jobs whose copy failed this round, with the reason; retried next round.
    pub failed: Vec<(JobId, SiteId, String)>,
}

/// How often the exposure monitor judges every job: exposure is an age, it grows between
/// rounds.
pub const EXPOSURE_TICK: Duration = Duration::from_secs(5);

pub struct ReplicationDriver {
    controller: Arc<dyn ReplicationContext>,
    exposure_tick: Duration,
    ledgers: BTreeMap<(SiteId, SiteId), Arc<FileLedger>>,
    options: SyncOptions,
    /// Jobs copied at once; each copy is itself parallel over files.
    concurrency: usize,
}

impl ReplicationDriver {
    /// Opens a ledger per ordered pair of sites with a storage root under `ledger_dir`.
    pub async fn open<C: ReplicationContext>(
        controller: Arc<C>,
        ledger_dir: PathBuf,
        bandwidth: Option<u64>,
        concurrency: usize,
    ) -> Result<ReplicationDriver, SyncError> {
        let mut ledgers = BTreeMap::new();
        let sites: Vec<SiteId> = controller.storage_roots().keys().cloned().collect();
        for from in &sites {
            for to in sites.iter().filter(|s| *s != from) {
                let path = ledger_dir.join(format!("{from}-to-{to}.json"));
                ledgers.insert(
                    (from.clone(), to.clone()),
                    Arc::new(FileLedger::open(path).await?),
                );
            }
        }
        let options = SyncOptions {
            once: true,
            bandwidth,
            ..SyncOptions::default()
        };
        Ok(ReplicationDriver {
            controller: controller as Arc<dyn ReplicationContext>,
            exposure_tick: EXPOSURE_TICK,
            ledgers,
            options,
            concurrency: concurrency.max(1),
        })
    }

    /// Judges exposure every `tick` instead of [`EXPOSURE_TICK`] (tests).
    pub fn with_exposure_tick(mut self, tick: Duration) -> ReplicationDriver {
        self.exposure_tick = tick;
        self
    }

    /// One round over every placed job. Fails only on state-store errors (fencing: stop).
    pub async fn round(&self) -> Result<ReplicationRound, StateError> {
        let started = std::time::Instant::now();
        let records = self.controller.store().list_jobs().await?;
        let mut work = Vec::new();
        for record in records {
            let Some(placement) = &record.value.placement else {
                continue;
            };
            let Ok(job) = stream_job_of(&record.value) else {
                continue;
            };
            let Some(checkpoints) = &job.spec.checkpoints else {
                continue;
            };
            let from_site = SiteId(placement.site.clone());
            let Some(from_root) = self.controller.storage_roots().get(&from_site) else {
                continue;
            };
            let id = job.id();
            let flink_id = flink_job_id(&id, record.value.generation);
            // The savepoint or checkpoint this generation was restored from: a job restored
            // in CLAIM mode from a native savepoint goes on using its files, which Flink 2.3.0
            // names relative to `chk-N/` (see hdfs-sync's README, "References outside chk-N").
            let restored_from = record
                .value
                .status
                .clone()
                .restore_from
                .and_then(|path| in_site_storage(from_root, &path).ok());
            for ((from, to), ledger) in &self.ledgers {
                if from != &from_site {
                    continue;
                }
                let Some(to_root) = self.controller.storage_roots().get(to) else {
                    continue;
                };
                let (from_dir, to_dir) = match (
                    in_site_storage(from_root, &checkpoints.dir),
                    in_site_storage(to_root, &checkpoints.dir),
                ) {
                    (Ok(from_dir), Ok(to_dir)) => (from_dir, to_dir),
                    (Err(reason), _) | (_, Err(reason)) => {
                        tracing::warn!(job = %id, %reason, "checkpoints not replicated");
                        continue;
                    }
                };
                work.push(Copy {
                    job: id.clone(),
                    from_site: from_site.clone(),
                    namespace: record.value.namespace.clone(),
                    name: record.value.name.clone(),
                    flink_id: flink_id.clone(),
                    generation: record.value.generation,
                    peer: to.clone(),
                    from_storage: from_root.clone(),
                    from: from_dir,
                    to_storage: to_root.clone(),
                    to: to_dir,
                    restored_from: restored_from.clone(),
                    ledger: Arc::clone(ledger),
                });
            }
        }
        let outcomes: Vec<(Copy, Result<Option<u64>, String>)> = futures::stream::iter(work)
            .map(|copy| async move {
                let result = self.copy(&copy).await;
                (copy, result)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;

        let mut round = ReplicationRound::default();
        for (copy, result) in outcomes {
            let book = &self.controller;
            match result {
                Ok(None) => book.copy_ended(&copy.job, &copy.peer, None),
                Ok(Some(_)) => {
                    book.copy_ended(&copy.job, &copy.peer, None);
                    if let Some(id) = self.record_latest(&copy).await? {
                        book.count_copy(&copy.from_site, &copy.peer, CopyOutcome::Recorded);
                        round
                            .recorded
                            .push((copy.job.clone(), copy.peer.clone(), id));
                    }
                }
                Err(reason) => {
                    tracing::warn!(job = %copy.job, peer = %copy.peer, %reason, "replication failed; retried next round");
                    book.copy_ended(&copy.job, &copy.peer, Some(reason.clone()));
                    book.count_copy(&copy.from_site, &copy.peer, CopyOutcome::Failed);
                    round.failed.push((copy.job, copy.peer, reason));
                }
            }
        }
        self.controller.count_round(started.elapsed());
        Ok(round)
    }

    /// Copies one job's newest checkpoint to one peer; `Some` when the ledger has one there.
    /// Each site's storage root bounds what a checkpoint may reference (its checkpoint
    /// directory, and savepoints elsewhere in the site's storage).
    async fn copy(&self, copy: &Copy) -> Result<Option<u64>, String> {
        let mut options = self.options.clone();
        options.jobs = Some(vec![copy.flink_id.clone()]);
        // Only a hint: a restore path that does not lie in the source site's storage (a
        // status written before the job moved, a path hdfs-sync refuses) must not stop the
        // job's replication; it only cannot help find relative names outside `chk-N/`.
        let in_source_storage = |dir: &str| {
            let dir = hdfs_sync::StorageUrl::parse(dir).ok()?;
            let root = hdfs_sync::StorageUrl::parse(&copy.from_storage).ok()?;
            dir.starts_with(&root).then_some(dir)
        };
        if let Some(dir) = copy.restored_from.as_deref().and_then(in_source_storage) {
            options.restored_from.insert(copy.flink_id.clone(), dir);
        }
        let (progress, mut events) = tokio::sync::mpsc::unbounded_channel();
        let replicator = Replicator::from_urls_in_storage(
            &copy.from_storage,
            &copy.from,
            &copy.to_storage,
            &copy.to,
            Arc::clone(&copy.ledger) as Arc<dyn ReplicationLedger>,
            options,
        )
        .map_err(|e| e.to_string())?
        .with_progress(progress);
        // The backlog shrinks file by file while the copy runs, so the exposure shows it live.
        let watching = {
            let controller = Arc::clone(&self.controller);
            let (job, peer) = (copy.job.clone(), copy.peer.clone());
            tokio::spawn(async move {
                use hdfs_sync::ProgressEvent as P;
                let book = &controller;
                while let Some(event) = events.recv().await {
                    match event {
                        P::CheckpointBacklog { files, bytes, .. } => {
                            book.backlog(&job, &peer, files as u64, bytes)
                        }
                        P::FileCopied { bytes, .. } => book.file_verified(&job, &peer, bytes),
                        P::CheckpointReplicated { .. } | P::CheckpointSkipped { .. } => {
                            book.backlog(&job, &peer, 0, 0)
                        }
                        _ => {}
                    }
                }
            })
        };
        let result = replicator.run_once().await.map_err(|e| e.to_string());
        // Dropping the replicator closes the channel; the watcher drains it and ends (before
        // the round records the outcome, which would otherwise race with late events). The
        // bound only guards against a sender kept alive elsewhere.
        drop(replicator);
        let _ = tokio::time::timeout(Duration::from_secs(2), watching).await;
        let report = result?;
        if let Some(hdfs_sync::JobOutcome::Failed { error, .. }) = report.jobs.get(&copy.flink_id) {
            return Err(error.clone());
        }
        Ok(copy
            .ledger
            .latest_replicated(&copy.flink_id)
            .await
            .map_err(|e| e.to_string())?
            .map(|c| c.checkpoint_id))
    }

    /// Stores the ledger's newest checkpoint as the job's replicated pointer for the peer,
    /// when it is newer than the stored one; returns its id when written.
    async fn record_latest(&self, copy: &Copy) -> Result<Option<u64>, StateError> {
        let Ok(Some(latest)) = copy.ledger.latest_replicated(&copy.flink_id).await else {
            return Ok(None);
        };
        let stored = match self
            .controller
            .store()
            .get_checkpoint(
                &copy.namespace,
                &copy.name,
                CheckpointKind::Replicated,
                &copy.peer.0,
            )
            .await
        {
            // An unreadable pointer is replaced by the ledger's, which is the truth.
            Err(StateError::Corrupt { .. }) => None,
            stored => stored?,
        };
        if stored.is_some_and(|s| {
            s.value.uri == latest.peer_pointer && s.value.checkpoint_id == latest.checkpoint_id
        }) {
            return Ok(None);
        }
        let pointer = CheckpointPointer {
            checkpoint_id: latest.checkpoint_id,
            uri: latest.peer_pointer.clone(),
            // When the checkpoint completed at its source: its age is the RPO of a
            // failover that restores it.
            recorded_at_unix_ms: (latest.source_completed_at.unwrap_or(latest.recorded_at) * 1000.0)
                as i64,
        };
        self.controller
            .store()
            .put_checkpoint(
                &copy.namespace,
                &copy.name,
                CheckpointKind::Replicated,
                &copy.peer.0,
                &pointer,
            )
            .await?;
        // Only now, with every file verified at the peer and the pointer stored, may the
        // failover engine restore from it there.
        self.controller
            .checkpoint_replicated(&copy.job, copy.generation, &copy.peer, &pointer);
        Ok(Some(latest.checkpoint_id))
    }

    /// Rounds every `interval`, and exposure ticks every [`EXPOSURE_TICK`], until `stop`; a
    /// fenced write ends both with the error.
    pub async fn run(
        &self,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), StateError> {
        tokio::select! {
            result = self.rounds(interval, stop.clone()) => result,
            result = self.monitor(stop.clone()) => result,
        }
    }

    async fn monitor(&self, stop: tokio_util::sync::CancellationToken) -> Result<(), StateError> {
        loop {
            match self.controller.judge_exposure().await {
                Ok(()) => {}
                Err(error @ (StateError::NotLeader { .. } | StateError::Fenced { .. })) => {
                    return Err(error);
                }
                Err(error) => tracing::warn!(%error, "exposure tick failed; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.exposure_tick) => {}
            }
        }
    }

    async fn rounds(
        &self,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), StateError> {
        loop {
            match self.round().await {
                Ok(round) if !round.recorded.is_empty() || !round.failed.is_empty() => {
                    tracing::info!(
                        recorded = round.recorded.len(),
                        failed = round.failed.len(),
                        "replication round"
                    );
                }
                Ok(_) => {}
                Err(error @ (StateError::NotLeader { .. } | StateError::Fenced { .. })) => {
                    return Err(error);
                }
                Err(error) => tracing::warn!(%error, "replication round failed; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

struct Copy {
    job: JobId,
    from_site: SiteId,
    namespace: String,
    name: String,
    flink_id: String,
    generation: u64,
    peer: SiteId,
    /// The site storage roots around `from` and `to`.
    from_storage: String,
    from: String,
    to_storage: String,
    to: String,
    /// Where the running generation was restored from, in the source site's storage.
    restored_from: Option<String>,
    ledger: Arc<FileLedger>,
}

/// Copies a savepoint from `from`'s storage to the same path in `to`'s
/// (`hdfs_sync::savepoint::copy_savepoint`: every file verified, `_metadata` last) and returns
/// the savepoint's URI at `to`. Sites without a storage root share one namespace: the
/// savepoint is already readable there. The error names both sites and hdfs-sync's typed
/// error, as the failover status shows it.
pub async fn copy_savepoint(
    roots: &BTreeMap<SiteId, String>,
    from: &SiteId,
    to: &SiteId,
    savepoint: &str,
) -> Result<String, String> {
    let (Some(from_root), Some(to_root)) = (roots.get(from), roots.get(to)) else {
        return Ok(savepoint.to_string());
    };
    let source = hdfs_sync::StorageUrl::parse(&in_site_storage(from_root, savepoint)?)
        .map_err(|e| e.to_string())?;
    let from_base = hdfs_sync::StorageUrl::parse(from_root).map_err(|e| e.to_string())?;
    let to_base = hdfs_sync::StorageUrl::parse(to_root).map_err(|e| e.to_string())?;
    hdfs_sync::savepoint::copy_savepoint(&source, &from_base, &to_base)
        .await
        .map(|copy| copy.to_flink_string())
        .map_err(|e| format!("{from} to {to}: {e}"))
}
