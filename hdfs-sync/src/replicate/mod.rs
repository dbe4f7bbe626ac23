//! Replication of complete checkpoints from the source site to the peer: copy what the peer
//! lacks (temporary name, then rename), verify every file, rewrite `_metadata` for the peer,
//! record the checkpoint in the ledger only then, and apply retention.
//!
//! Here: the options, outcomes, metrics and the [`Replicator`]'s rounds over jobs. One
//! checkpoint is `checkpoint`, one file `copy`, what the peer holds verified `manifest`,
//! deleting old checkpoints `retention`. Never marks a checkpoint replicated before every file
//! of it is verified at the peer.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::bandwidth::BandwidthLimiter;
use crate::checksum::{self, Xxh64};
use crate::discovery::{self, CompleteCheckpoint};
use crate::error::{StorageError, StorageErrorKind, SyncError};
use crate::ledger::{ReplicatedCheckpoint, ReplicationLedger};
use crate::metadata::{CheckpointMetadata, HandleKind, MAX_METADATA_BYTES, Rewrite};
use crate::storage::{Storage, TEMP_SUFFIX, WriteStream};
use crate::url::StorageUrl;

mod checkpoint;
mod copy;
mod manifest;
mod retention;

pub use manifest::{MANIFEST_DIR, VerifiedFile};

/// How the peer's copy of `_metadata` names the files it references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UriMode {
    /// Absolute URIs are rewritten from the source root to the peer root.
    Rewrite,
    /// Both sites resolve one logical nameservice (same URI, each site's own NameNodes), so
    /// `_metadata` is copied byte for byte.
    SharedNameservice,
}

/// How a copied file is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerifyMode {
    /// Re-read the peer's file (under its final name, after its fsync and rename) and compare
    /// length and checksum with the source stream's.
    ReadBack,
    /// Compare the peer's length with the source's and trust the checksum of the bytes
    /// handed to the writer (cheaper; does not catch corruption at rest on the peer).
    LengthOnly,
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Bytes per second for all jobs together; `None` is unlimited.
    pub bandwidth: Option<u64>,
    /// Only these jobs (`None`: every job under the source root).
    pub jobs: Option<Vec<String>>,
    /// `run()` does one round and returns.
    pub once: bool,
    /// Pause between rounds of `run()`.
    pub interval: Duration,
    /// Replicated checkpoints kept at the peer per job.
    pub retain: usize,
    pub uri_mode: UriMode,
    pub verify: VerifyMode,
    pub job_parallelism: usize,
    pub file_parallelism: usize,
    /// Attempts per file for retryable failures (bad copy, flaky storage, timeout).
    pub attempts: u32,
    pub retry_backoff: Duration,
    /// Longest any single storage call may take before the file is retried.
    pub io_timeout: Duration,
    /// Per job: the savepoint (or checkpoint) directory it was restored from. Flink before
    /// the fix of FLINK-39964 (2.3.0 and earlier) names the files of a native savepoint that a
    /// job restored from it in CLAIM mode still uses by paths relative to `chk-N/`, where
    /// they are not; they are looked up here instead (same name, same recorded size), copied
    /// to the same place below the peer's storage root, and named by absolute URI in the
    /// peer's `_metadata`. Must lie inside the source storage root.
    pub restored_from: BTreeMap<String, StorageUrl>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            bandwidth: None,
            jobs: None,
            once: false,
            interval: Duration::from_secs(10),
            retain: 3,
            uri_mode: UriMode::Rewrite,
            verify: VerifyMode::ReadBack,
            job_parallelism: 8,
            file_parallelism: 4,
            attempts: 4,
            retry_backoff: Duration::from_millis(100),
            io_timeout: Duration::from_secs(120),
            restored_from: BTreeMap::new(),
        }
    }
}

/// What happened to one job in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Nothing new at the source.
    UpToDate { latest_replicated: Option<u64> },
    Replicated {
        checkpoint_id: u64,
        bytes_copied: u64,
        files_copied: u64,
        files_reused: u64,
    },
    /// The source checkpoint disappeared while being copied (Flink subsumed it); nothing was
    /// recorded and the next round picks a newer one.
    SourceVanished { checkpoint_id: u64 },
    Failed {
        checkpoint_id: Option<u64>,
        error: String,
        label: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct RoundReport {
    pub jobs: BTreeMap<String, JobOutcome>,
}

impl RoundReport {
    pub fn failed(&self) -> usize {
        self.jobs
            .values()
            .filter(|o| matches!(o, JobOutcome::Failed { .. }))
            .count()
    }
}

/// Events for a progress bar or log lines.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    CheckpointStarted {
        job: String,
        checkpoint_id: u64,
        files: usize,
        bytes: u64,
    },
    /// What of `checkpoint_id` is not yet verified at the peer and will be copied now: its
    /// files less those verified there earlier (`shared/` files of older checkpoints, a
    /// crashed run). Sent after `CheckpointStarted`, before the first copy.
    CheckpointBacklog {
        job: String,
        checkpoint_id: u64,
        files: usize,
        bytes: u64,
    },
    FileCopied {
        job: String,
        path: String,
        bytes: u64,
    },
    BytesCopied {
        job: String,
        bytes: u64,
    },
    CheckpointReplicated {
        job: String,
        checkpoint_id: u64,
    },
    CheckpointSkipped {
        job: String,
        checkpoint_id: u64,
        reason: String,
    },
    JobFailed {
        job: String,
        error: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobMetrics {
    pub latest_source_checkpoint: Option<u64>,
    pub latest_replicated_checkpoint: Option<u64>,
    /// Seconds since the source completed the newest checkpoint replicated to the peer: the
    /// state a failover to the peer would lose (RPO). `None` until one is replicated.
    pub lag_seconds: Option<f64>,
    pub bytes_copied: u64,
    pub files_copied: u64,
    pub files_reused: u64,
    pub checkpoints_replicated: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    #[serde(skip)]
    latest_replicated_completed_at: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicationMetrics {
    pub jobs: BTreeMap<String, JobMetrics>,
}

impl ReplicationMetrics {
    pub fn total_bytes_copied(&self) -> u64 {
        self.jobs.values().map(|j| j.bytes_copied).sum()
    }
    pub fn total_failures(&self) -> u64 {
        self.jobs.values().map(|j| j.failures).sum()
    }
}

/// One side of a replication: the checkpoint root (`<root>/<job>/chk-N/`) and the storage
/// root around it, which a checkpoint's references may reach (a savepoint directory beside
/// the checkpoints). `storage` must reach all of `storage_root`.
pub struct SiteStorage {
    pub storage: Arc<dyn Storage>,
    pub storage_root: StorageUrl,
    pub checkpoint_root: StorageUrl,
}

/// Copies checkpoints of every (selected) job from one root to another. Cheap to clone.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn Storage>,
    source_root: StorageUrl,
    /// What references may reach at the source (`source_root` or a directory above it); a
    /// file below it outside `source_root` goes to the same path below `peer_storage_root`.
    source_storage_root: StorageUrl,
    peer: Arc<dyn Storage>,
    peer_root: StorageUrl,
    peer_storage_root: StorageUrl,
    ledger: Arc<dyn ReplicationLedger>,
    options: SyncOptions,
    limiter: BandwidthLimiter,
    metrics: Mutex<BTreeMap<String, JobMetrics>>,
    progress: Option<UnboundedSender<ProgressEvent>>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn secs(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

impl Replicator {
    /// Replicates `source_root` to `peer_root`; references outside `source_root` are refused.
    pub fn new(
        source: Arc<dyn Storage>,
        source_root: StorageUrl,
        peer: Arc<dyn Storage>,
        peer_root: StorageUrl,
        ledger: Arc<dyn ReplicationLedger>,
        options: SyncOptions,
    ) -> Self {
        Self::build(
            SiteStorage {
                storage: source,
                storage_root: source_root.clone(),
                checkpoint_root: source_root,
            },
            SiteStorage {
                storage: peer,
                storage_root: peer_root.clone(),
                checkpoint_root: peer_root,
            },
            ledger,
            options,
        )
    }

    /// Replicates the source's checkpoint root to the peer's; a referenced file elsewhere in
    /// the source's storage root (a savepoint directory) is copied to the same path below the
    /// peer's storage root. Each checkpoint root must lie inside its storage root.
    pub fn between(
        source: SiteStorage,
        peer: SiteStorage,
        ledger: Arc<dyn ReplicationLedger>,
        options: SyncOptions,
    ) -> Result<Self, SyncError> {
        for side in [&source, &peer] {
            if !side.checkpoint_root.starts_with(&side.storage_root) {
                return Err(SyncError::InvalidOption {
                    field: "checkpoint root",
                    value: side.checkpoint_root.to_string(),
                    reason: format!("not inside its storage root {}", side.storage_root),
                });
            }
        }
        for (job, dir) in &options.restored_from {
            if !dir.starts_with(&source.storage_root) {
                return Err(SyncError::InvalidOption {
                    field: "restored_from",
                    value: format!("{job}={dir}"),
                    reason: format!("not inside the source storage root {}", source.storage_root),
                });
            }
        }
        Ok(Self::build(source, peer, ledger, options))
    }

    fn build(
        source: SiteStorage,
        peer: SiteStorage,
        ledger: Arc<dyn ReplicationLedger>,
        options: SyncOptions,
    ) -> Self {
        let limiter = BandwidthLimiter::new(options.bandwidth);
        Self {
            inner: Arc::new(Inner {
                source: source.storage,
                source_root: source.checkpoint_root,
                source_storage_root: source.storage_root,
                peer: peer.storage,
                peer_root: peer.checkpoint_root,
                peer_storage_root: peer.storage_root,
                ledger,
                options,
                limiter,
                metrics: Mutex::new(BTreeMap::new()),
                progress: None,
            }),
        }
    }

    /// Opens both backends from their URLs (`--from`, `--to`).
    pub fn from_urls(
        from: &str,
        to: &str,
        ledger: Arc<dyn ReplicationLedger>,
        options: SyncOptions,
    ) -> Result<Self, SyncError> {
        let source_root = StorageUrl::parse(from)?;
        let peer_root = StorageUrl::parse(to)?;
        let source = crate::storage::storage_for(&source_root)?;
        let peer = crate::storage::storage_for(&peer_root)?;
        Ok(Self::new(
            source,
            source_root,
            peer,
            peer_root,
            ledger,
            options,
        ))
    }

    /// Like [`Replicator::from_urls`], with the storage roots around `from` and `to` (see
    /// [`Replicator::between`]); each backend is opened at its storage root.
    pub fn from_urls_in_storage(
        from_storage: &str,
        from: &str,
        to_storage: &str,
        to: &str,
        ledger: Arc<dyn ReplicationLedger>,
        options: SyncOptions,
    ) -> Result<Self, SyncError> {
        let side = |storage: &str, root: &str| -> Result<SiteStorage, SyncError> {
            let storage_root = StorageUrl::parse(storage)?;
            Ok(SiteStorage {
                storage: crate::storage::storage_for(&storage_root)?,
                storage_root,
                checkpoint_root: StorageUrl::parse(root)?,
            })
        };
        Self::between(
            side(from_storage, from)?,
            side(to_storage, to)?,
            ledger,
            options,
        )
    }

    /// Sends progress events to `tx` (must be called before the replicator is cloned).
    pub fn with_progress(mut self, tx: UnboundedSender<ProgressEvent>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.progress = Some(tx);
        }
        self
    }

    pub fn options(&self) -> &SyncOptions {
        &self.inner.options
    }

    /// A snapshot of per-job metrics; lag is computed at the time of the call.
    pub fn metrics(&self) -> ReplicationMetrics {
        let now = now_secs();
        let map = self.inner.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let mut jobs = map.clone();
        for m in jobs.values_mut() {
            m.lag_seconds = m.latest_replicated_completed_at.map(|t| (now - t).max(0.0));
        }
        ReplicationMetrics { jobs }
    }

    /// One round over every selected job, `job_parallelism` at a time. A job's failure is
    /// reported in its outcome and metrics; it never stops the other jobs.
    pub async fn run_once(&self) -> Result<RoundReport, SyncError> {
        let jobs = self.selected_jobs().await?;
        let mut report = RoundReport {
            jobs: BTreeMap::new(),
        };
        let mut pending = jobs.into_iter();
        let mut running: JoinSet<(String, JobOutcome)> = JoinSet::new();
        loop {
            while running.len() < self.inner.options.job_parallelism.max(1) {
                let Some(job) = pending.next() else { break };
                let this = self.clone();
                running.spawn(async move {
                    let outcome = this.replicate_job(&job).await;
                    (job, outcome)
                });
            }
            match running.join_next().await {
                Some(Ok((job, outcome))) => {
                    report.jobs.insert(job, outcome);
                }
                Some(Err(join_error)) => {
                    tracing::error!(error = %join_error, "replication task ended abnormally");
                }
                None => break,
            }
        }
        Ok(report)
    }

    /// Replicates continuously until `shutdown` resolves (or one `run_once` round with
    /// `once`). Every `interval` each job that is not still busy is started again, so a slow
    /// or stuck job never holds back the others' next checkpoints.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SyncError> {
        tokio::pin!(shutdown);
        if self.inner.options.once {
            tokio::select! {
                _ = &mut shutdown => {}
                round = self.run_once() => { round?; }
            }
            return Ok(());
        }
        let mut running: JoinSet<()> = JoinSet::new();
        let mut busy: std::collections::HashMap<tokio::task::Id, String> =
            std::collections::HashMap::new();
        let mut ticker = tokio::time::interval(self.inner.options.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Dropping the JoinSet on return aborts whatever is still copying.
                _ = &mut shutdown => return Ok(()),
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => {
                            tracing::error!(error = %e, "replication task ended abnormally");
                            e.id()
                        }
                    };
                    busy.remove(&id);
                }
                _ = ticker.tick() => {
                    let jobs = match self.selected_jobs().await {
                        Ok(jobs) => jobs,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot list source jobs");
                            continue;
                        }
                    };
                    for job in jobs {
                        if running.len() >= self.inner.options.job_parallelism.max(1) {
                            break;
                        }
                        if busy.values().any(|b| *b == job) {
                            continue;
                        }
                        let this = self.clone();
                        let name = job.clone();
                        let handle = running.spawn(async move {
                            this.replicate_job(&name).await;
                        });
                        busy.insert(handle.id(), job);
                    }
                }
            }
        }
    }

    async fn selected_jobs(&self) -> Result<Vec<String>, SyncError> {
        match &self.inner.options.jobs {
            Some(jobs) => Ok(jobs.clone()),
            None => discovery::list_jobs(self.inner.source.as_ref(), &self.inner.source_root).await,
        }
    }

    fn emit(&self, event: ProgressEvent) {
        if let Some(tx) = &self.inner.progress {
            let _ = tx.send(event);
        }
    }

    fn update(&self, job: &str, f: impl FnOnce(&mut JobMetrics)) {
        let mut map = self.inner.metrics.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(job.to_string()).or_default());
    }

    /// Brings one job's newest complete checkpoint to the peer.
    pub async fn replicate_job(&self, job: &str) -> JobOutcome {
        let mut attempted = None;
        let result = self.replicate_job_inner(job, &mut attempted).await;
        match result {
            Ok(outcome) => outcome,
            Err(error) => {
                let text = error.to_string();
                tracing::warn!(job, error = %text, "replication failed");
                self.update(job, |m| {
                    m.failures += 1;
                    m.last_error = Some(text.clone());
                });
                self.emit(ProgressEvent::JobFailed {
                    job: job.to_string(),
                    error: text.clone(),
                });
                JobOutcome::Failed {
                    checkpoint_id: attempted,
                    error: text,
                    label: error.label(),
                }
            }
        }
    }

    async fn replicate_job_inner(
        &self,
        job: &str,
        attempted: &mut Option<u64>,
    ) -> Result<JobOutcome, SyncError> {
        let inner = &self.inner;
        let found = discovery::discover_job(inner.source.as_ref(), &inner.source_root, job).await?;
        let replicated = inner.ledger.replicated(job).await?;
        let latest_replicated = replicated.iter().max_by_key(|c| c.checkpoint_id).cloned();
        self.update(job, |m| {
            m.latest_source_checkpoint = found.latest().map(|c| c.id);
            m.latest_replicated_checkpoint = latest_replicated.as_ref().map(|c| c.checkpoint_id);
            m.latest_replicated_completed_at = latest_replicated
                .as_ref()
                .and_then(|c| c.source_completed_at);
        });
        let Some(newest) = found.latest() else {
            return Ok(JobOutcome::UpToDate {
                latest_replicated: None,
            });
        };
        if latest_replicated
            .as_ref()
            .is_some_and(|r| r.checkpoint_id >= newest.id)
        {
            return Ok(JobOutcome::UpToDate {
                latest_replicated: latest_replicated.map(|r| r.checkpoint_id),
            });
        }
        *attempted = Some(newest.id);
        let outcome = self.replicate_checkpoint(job, newest).await;
        if !matches!(outcome, Ok(JobOutcome::Replicated { .. })) {
            // Nothing of an unrecorded checkpoint directory may look restorable at the peer.
            if let Ok(dir) = self.peer_url(&newest.dir) {
                let _ = inner.peer.delete(&dir).await;
            }
        }
        let outcome = outcome?;
        if matches!(outcome, JobOutcome::Replicated { .. }) {
            self.apply_retention(job).await?;
        }
        Ok(outcome)
    }

    async fn source_gone(&self, checkpoint: &CompleteCheckpoint) -> bool {
        match checkpoint.dir.join("_metadata") {
            Ok(url) => matches!(self.inner.source.stat(&url).await, Ok(None)),
            Err(_) => false,
        }
    }

    fn skipped(&self, job: &str, checkpoint_id: u64, reason: &str) -> JobOutcome {
        self.skipped_with(
            job,
            checkpoint_id,
            reason,
            JobOutcome::SourceVanished { checkpoint_id },
        )
    }

    fn skipped_with(
        &self,
        job: &str,
        checkpoint_id: u64,
        reason: &str,
        outcome: JobOutcome,
    ) -> JobOutcome {
        tracing::info!(
            job,
            checkpoint_id,
            reason,
            "source checkpoint vanished during copy; skipped"
        );
        self.emit(ProgressEvent::CheckpointSkipped {
            job: job.to_string(),
            checkpoint_id,
            reason: reason.to_string(),
        });
        outcome
    }
}
