//! Replication of complete checkpoints from the source site to the peer: copy what the peer
//! lacks (temporary name, then rename), verify every file, rewrite `_metadata` for the peer,
//! record the checkpoint in the ledger only then, and apply retention.

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

/// Length and checksum of a file verified at the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedFile {
    pub len: u64,
    /// `xxh64:<hex>` (see [`crate::checksum`]); manifests written before it hold the bare
    /// SHA-256 hex under the old key `sha256`, still read (reuse checks the length at the
    /// peer, never the recorded checksum).
    #[serde(alias = "sha256")]
    pub checksum: String,
}

/// Files of a job verified at the peer, keyed by path relative to the peer root. Kept at
/// `<peer job dir>/.twinsite/verified.json` so a restarted sync skips them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, VerifiedFile>,
}

pub const MANIFEST_DIR: &str = ".twinsite";
const MANIFEST_FLUSH_EVERY: usize = 32;

/// Files of one checkpoint waiting for their fsync (which needs no CPU, only the disk) do not
/// hold one of the `file_parallelism` streaming slots; up to this many per slot may wait, so
/// the disk always has writes queued while the next files stream.
const SYNCS_PER_SLOT: usize = 3;

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

    /// `dirs` and every directory above them up to the peer root: the
    /// directories whose fsync makes entries created in and for `dirs` durable.
    fn with_ancestors(&self, dirs: impl IntoIterator<Item = StorageUrl>) -> Vec<StorageUrl> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for dir in dirs {
            let mut next = Some(dir);
            while let Some(d) = next {
                if !d.starts_with(&self.inner.peer_storage_root) || !seen.insert(d.clone()) {
                    break;
                }
                next = d.parent();
                out.push(d);
            }
        }
        out
    }

    fn peer_url(&self, source: &StorageUrl) -> Result<StorageUrl, SyncError> {
        Ok(self.place(source, "")?.1)
    }

    /// Where a source file goes at the peer, and its key in the job's manifest: below the
    /// checkpoint root, the same path below the peer's (key: that path); elsewhere in the
    /// source storage root, the same path below the peer's storage root (key: that path with
    /// a leading `/`, which no path below the checkpoint root has). Anything else is refused.
    fn place(
        &self,
        source: &StorageUrl,
        checkpoint: &str,
    ) -> Result<(String, StorageUrl), SyncError> {
        let inner = &self.inner;
        if let Some(rel) = source.relative_to(&inner.source_root) {
            let peer = inner.peer_root.join(&rel)?;
            return Ok((rel, peer));
        }
        match source.relative_to(&inner.source_storage_root) {
            Some(rel) => {
                let peer = inner.peer_storage_root.join(&rel)?;
                Ok((format!("/{rel}"), peer))
            }
            None => Err(SyncError::ReferenceOutsideRoot {
                checkpoint: checkpoint.to_string(),
                reference: source.to_string(),
                root: inner.source_storage_root.to_string(),
            }),
        }
    }

    /// The source files of `metadata`'s relative handles that are not in `chk-N/` (Flink
    /// before FLINK-39964 after a CLAIM restore from a native savepoint), by handle path: found
    /// in the job's `restored_from` directory with the recorded size, or an error naming the
    /// first one missing.
    async fn foreign_relative_files(
        &self,
        job: &str,
        checkpoint: &CompleteCheckpoint,
        metadata: &CheckpointMetadata,
    ) -> Result<BTreeMap<String, StorageUrl>, SyncError> {
        let inner = &self.inner;
        let mut listings: BTreeMap<StorageUrl, BTreeMap<String, u64>> = BTreeMap::new();
        let mut foreign = BTreeMap::new();
        for handle in metadata
            .handles
            .iter()
            .filter(|h| h.kind == HandleKind::Relative)
        {
            if foreign.contains_key(&handle.path) {
                continue;
            }
            let own = checkpoint.dir.join(&handle.path)?;
            if self.file_len(&own, &mut listings).await?.is_some() {
                continue;
            }
            let unresolved = |searched: String| SyncError::UnresolvedRelativeReference {
                checkpoint: checkpoint.dir.to_string(),
                file: handle.path.clone(),
                searched,
            };
            let Some(dir) = inner.options.restored_from.get(job) else {
                return Err(unresolved(String::new()));
            };
            let there = dir.join(&handle.path)?;
            match self.file_len(&there, &mut listings).await? {
                Some(len) if len == handle.size => {
                    foreign.insert(handle.path.clone(), there);
                }
                found => {
                    return Err(unresolved(format!(
                        ", nor with its recorded {} bytes in {dir}, where the job was restored \
                         from ({})",
                        handle.size,
                        found.map_or("absent".to_string(), |len| format!("{len} bytes there"))
                    )));
                }
            }
        }
        Ok(foreign)
    }

    /// The length of the regular file `url` at the source (`None`: absent), from one
    /// listing of its directory per call site.
    async fn file_len(
        &self,
        url: &StorageUrl,
        listings: &mut BTreeMap<StorageUrl, BTreeMap<String, u64>>,
    ) -> Result<Option<u64>, SyncError> {
        let Some(dir) = url.parent() else {
            return Ok(None);
        };
        if !listings.contains_key(&dir) {
            let entries = match self.inner.source.list(&dir).await {
                Ok(entries) => entries
                    .into_iter()
                    // A link counts as present: opening it refuses it by name.
                    .filter(|e| !e.is_dir)
                    .map(|e| (e.name, e.len))
                    .collect(),
                Err(e) if e.kind == StorageErrorKind::NotFound => BTreeMap::new(),
                Err(e) => return Err(e.into()),
            };
            listings.insert(dir.clone(), entries);
        }
        Ok(listings[&dir].get(url.file_name()).copied())
    }

    async fn load_manifest(&self, job: &str) -> Result<(StorageUrl, Manifest), SyncError> {
        let url = self
            .inner
            .peer_root
            .join(&format!("{job}/{MANIFEST_DIR}/verified.json"))?;
        let manifest = match self.inner.peer.read_all(&url).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Losing the manifest only costs re-copying; never trust a damaged one.
                tracing::warn!(manifest = %url, error = %e, "ignoring unreadable manifest");
                Manifest::default()
            }),
            Err(e) if e.kind == StorageErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(e.into()),
        };
        Ok((url, manifest))
    }

    async fn save_manifest(&self, url: &StorageUrl, manifest: &Manifest) -> Result<(), SyncError> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| SyncError::Ledger {
            path: url.to_string(),
            message: e.to_string(),
        })?;
        self.inner.peer.write_all(url, Bytes::from(bytes)).await?;
        Ok(())
    }

    async fn replicate_checkpoint(
        &self,
        job: &str,
        checkpoint: &CompleteCheckpoint,
    ) -> Result<JobOutcome, SyncError> {
        let inner = &self.inner;
        let vanished = || JobOutcome::SourceVanished {
            checkpoint_id: checkpoint.id,
        };
        let metadata_url = checkpoint.dir.join("_metadata")?;
        // Bounded, and only a regular file: `_metadata` is read whole into memory.
        let source_metadata = match inner
            .source
            .read_bounded(&metadata_url, MAX_METADATA_BYTES)
            .await
        {
            Ok(file) => file,
            Err(e) if e.kind == StorageErrorKind::NotFound => {
                return Ok(self.skipped(job, checkpoint.id, "source _metadata vanished"));
            }
            Err(e) => return Err(e.into()),
        };
        let metadata_bytes = source_metadata.bytes;
        let metadata = CheckpointMetadata::parse(&metadata_bytes, &metadata_url.to_string())?;
        // Every path resolves (or fails naming where in `_metadata` it sits) before any lookup.
        let mut references = metadata.referenced_files(&checkpoint.dir)?;
        let foreign = match self
            .foreign_relative_files(job, checkpoint, &metadata)
            .await
        {
            Ok(foreign) => foreign,
            // Flink subsumed the checkpoint while we looked: its own files are gone too.
            Err(_) if self.source_gone(checkpoint).await => {
                return Ok(self.skipped(job, checkpoint.id, "source checkpoint vanished"));
            }
            Err(e) => return Err(e),
        };
        if !foreign.is_empty() {
            // Relative handles resolve to the directory they were found in, not `chk-N/`.
            let by_own_url: BTreeMap<StorageUrl, &StorageUrl> = foreign
                .iter()
                .map(|(path, there)| Ok((checkpoint.dir.join(path)?, there)))
                .collect::<Result<_, SyncError>>()?;
            for reference in &mut references {
                if reference.kind == HandleKind::Relative
                    && let Some(there) = by_own_url.get(&reference.url)
                {
                    reference.url = (*there).clone();
                }
            }
        }
        let checkpoint_text = checkpoint.dir.to_string();
        let mut files: Vec<(String, StorageUrl, StorageUrl)> = Vec::with_capacity(references.len());
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for reference in &references {
            let (key, peer) = self.place(&reference.url, &checkpoint_text)?;
            *sizes.entry(key.clone()).or_default() += reference.state_size;
            files.push((key, reference.url.clone(), peer));
        }
        let total_bytes: u64 = references.iter().map(|r| r.state_size).sum();
        self.emit(ProgressEvent::CheckpointStarted {
            job: job.to_string(),
            checkpoint_id: checkpoint.id,
            files: files.len(),
            bytes: total_bytes,
        });

        let (manifest_url, mut manifest) = self.load_manifest(job).await?;
        // Reuse files verified earlier (shared/ files of older checkpoints, or a crashed run):
        // a manifest entry and the same length at the peer. One listing per peer directory
        // holding such files gives every length (1000 `shared/` files: one call, not 1000).
        let mut to_copy = Vec::new();
        let mut reused = 0u64;
        // Every peer directory holding a file of this checkpoint, synced before `_metadata`.
        let mut peer_dirs: BTreeSet<StorageUrl> = BTreeSet::new();
        let mut peer_files = Vec::with_capacity(files.len());
        let mut listed: BTreeMap<StorageUrl, BTreeMap<String, u64>> = BTreeMap::new();
        for (rel, src, peer) in files {
            if let Some(dir) = peer.parent() {
                peer_dirs.insert(dir.clone());
                if manifest.files.contains_key(&rel) && !listed.contains_key(&dir) {
                    let lengths = match inner.peer.list(&dir).await {
                        Ok(entries) => entries
                            .into_iter()
                            .filter(|e| !e.is_dir)
                            .map(|e| (e.name, e.len))
                            .collect(),
                        Err(e) if e.kind == StorageErrorKind::NotFound => BTreeMap::new(),
                        Err(e) => return Err(e.into()),
                    };
                    listed.insert(dir, lengths);
                }
            }
            peer_files.push((rel, src, peer));
        }
        for (rel, src, peer) in peer_files {
            let present = manifest.files.get(&rel).is_some_and(|v| {
                peer.parent()
                    .and_then(|dir| listed.get(&dir))
                    .and_then(|lengths| lengths.get(peer.file_name()))
                    == Some(&v.len)
            });
            if present {
                reused += 1;
            } else {
                manifest.files.remove(&rel);
                to_copy.push((rel, src, peer));
            }
        }

        self.emit(ProgressEvent::CheckpointBacklog {
            job: job.to_string(),
            checkpoint_id: checkpoint.id,
            files: to_copy.len(),
            bytes: to_copy
                .iter()
                .map(|(rel, _, _)| sizes.get(rel).copied().unwrap_or(0))
                .sum(),
        });

        let mut copied_files = 0u64;
        let mut copied_bytes = 0u64;
        let mut since_flush = 0usize;
        let mut queue = to_copy.into_iter();
        let mut running: JoinSet<(String, Result<VerifiedFile, SyncError>)> = JoinSet::new();
        let mut first_error: Option<SyncError> = None;
        let slots_count = inner.options.file_parallelism.max(1);
        let slots = Arc::new(Semaphore::new(slots_count));
        let in_flight = slots_count * (1 + SYNCS_PER_SLOT);
        loop {
            while first_error.is_none() && running.len() < in_flight {
                let Some((rel, src, peer)) = queue.next() else {
                    break;
                };
                let this = self.clone();
                let job = job.to_string();
                let slots = slots.clone();
                running.spawn(async move {
                    let result = this.copy_with_retries(&job, &src, &peer, &slots).await;
                    (rel, result)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined {
                Ok((rel, Ok(verified))) => {
                    copied_files += 1;
                    copied_bytes += verified.len;
                    self.emit(ProgressEvent::FileCopied {
                        job: job.to_string(),
                        path: rel.clone(),
                        bytes: verified.len,
                    });
                    manifest.files.insert(rel, verified);
                    since_flush += 1;
                    if since_flush >= MANIFEST_FLUSH_EVERY {
                        self.save_manifest(&manifest_url, &manifest).await?;
                        since_flush = 0;
                    }
                }
                Ok((_, Err(e))) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
                Err(join_error) => {
                    if first_error.is_none() {
                        first_error = Some(SyncError::Storage(StorageError::new(
                            "copy",
                            &checkpoint.dir,
                            StorageErrorKind::Other,
                            join_error,
                        )));
                    }
                }
            }
        }
        // Keep what was verified, whatever happens next: a retry starts from there.
        self.save_manifest(&manifest_url, &manifest).await?;
        if let Some(error) = first_error {
            if error.storage_kind() == Some(StorageErrorKind::NotFound)
                && self.source_gone(checkpoint).await
            {
                return Ok(self.skipped_with(job, checkpoint.id, &error.to_string(), vanished()));
            }
            return Err(error);
        }

        // Directories named in file-merging handles must exist at the peer.
        for handle in metadata
            .handles
            .iter()
            .filter(|h| h.kind == HandleKind::Directory)
        {
            if let Ok(url) = StorageUrl::parse(&handle.path)
                && let Ok(peer) = self.peer_url(&url)
            {
                inner.peer.mkdirs(&peer).await?;
            }
        }

        // `_metadata` goes last: the peer's chk-N is complete only when everything is there.
        // A relative handle whose file lies outside `chk-N/` becomes a file handle naming it
        // by absolute URI, as Flink itself writes it since FLINK-39964: at the peer's copy in
        // `Rewrite` mode, at the same (shared-nameservice) URI otherwise.
        let peer_metadata = match inner.options.uri_mode {
            UriMode::SharedNameservice if foreign.is_empty() => metadata_bytes.clone(),
            UriMode::SharedNameservice => {
                metadata.rewrite_handles(&metadata_bytes, |h| {
                    match (h.kind, foreign.get(&h.path)) {
                        (HandleKind::Relative, Some(src)) => {
                            Rewrite::Absolute(src.to_flink_string())
                        }
                        _ => Rewrite::Keep,
                    }
                })?
            }
            UriMode::Rewrite => {
                let checkpoint_dir = checkpoint.dir.clone();
                metadata.rewrite_handles(&metadata_bytes, |h| match h.kind {
                    HandleKind::Relative => match foreign.get(&h.path) {
                        Some(src) => self.peer_url(src).map_or(Rewrite::Keep, |peer| {
                            Rewrite::Absolute(peer.to_flink_string())
                        }),
                        None => Rewrite::Keep,
                    },
                    HandleKind::File | HandleKind::Segment | HandleKind::Directory => {
                        let url = if h.path.starts_with('/') {
                            StorageUrl::parse(&format!(
                                "{}://{}{}",
                                checkpoint_dir.scheme().as_str(),
                                checkpoint_dir.authority(),
                                h.path
                            ))
                        } else {
                            StorageUrl::parse(&h.path)
                        };
                        // Files outside the storage root failed the checkpoint above; a
                        // directory outside it is kept as it is.
                        match url.and_then(|url| self.peer_url(&url)) {
                            Ok(peer) => Rewrite::Uri(peer.to_flink_string()),
                            Err(_) => Rewrite::Keep,
                        }
                    }
                    HandleKind::Inline => Rewrite::Keep,
                })?
            }
        };
        // Each file was synced before its rename; the renames (and directories created for
        // them) become durable with their directories, synced here once per checkpoint and
        // before `_metadata` exists, so a crash can never leave a peer `chk-N/` that has its
        // `_metadata` but lost a file's name. Reused files are included: the run that copied
        // them may have crashed before getting here.
        let peer_metadata_url = self.peer_url(&metadata_url)?;
        if peer_metadata.len() as u64 > MAX_METADATA_BYTES {
            // Longer peer URIs made it grow: the peer could not read it back, nor Flink's
            // limit-free reader be trusted with it.
            return Err(SyncError::Storage(StorageError::new(
                "write",
                &peer_metadata_url,
                StorageErrorKind::TooLarge,
                format!(
                    "{} bytes once rewritten for the peer, more than the {MAX_METADATA_BYTES} a \
                     `_metadata` may have",
                    peer_metadata.len()
                ),
            )));
        }
        for dir in self.with_ancestors(peer_dirs) {
            inner.peer.sync_dir(&dir).await?;
        }

        let expected = VerifiedFile {
            len: peer_metadata.len() as u64,
            checksum: checksum::of(&peer_metadata),
        };
        inner
            .peer
            .write_all_with_permissions(
                &peer_metadata_url,
                Bytes::from(peer_metadata),
                source_metadata.permissions,
            )
            .await?;
        let written = inner
            .peer
            .read_bounded(&peer_metadata_url, MAX_METADATA_BYTES)
            .await?
            .bytes;
        let actual = VerifiedFile {
            len: written.len() as u64,
            checksum: checksum::of(&written),
        };
        if actual != expected {
            return Err(SyncError::VerifyFailed {
                url: peer_metadata_url.to_string(),
                expected_len: expected.len,
                expected_checksum: expected.checksum,
                actual_len: actual.len,
                actual_checksum: actual.checksum,
            });
        }
        // `_metadata` was synced before its rename; the rename is durable with its directory
        // (and a `chk-N/` created just now for it, with its parent's).
        for dir in self.with_ancestors(peer_metadata_url.parent()) {
            inner.peer.sync_dir(&dir).await?;
        }

        let peer_dir = self.peer_url(&checkpoint.dir)?;
        inner
            .ledger
            .record_replicated(
                job,
                ReplicatedCheckpoint {
                    checkpoint_id: checkpoint.id,
                    peer_pointer: peer_dir.to_string(),
                    source_completed_at: secs(checkpoint.completed_at),
                    recorded_at: now_secs(),
                    bytes: total_bytes,
                    files: references.len() as u64,
                },
            )
            .await?;
        self.update(job, |m| {
            m.latest_replicated_checkpoint = Some(checkpoint.id);
            m.latest_replicated_completed_at = secs(checkpoint.completed_at);
            m.checkpoints_replicated += 1;
            m.files_reused += reused;
            m.last_error = None;
        });
        self.emit(ProgressEvent::CheckpointReplicated {
            job: job.to_string(),
            checkpoint_id: checkpoint.id,
        });
        Ok(JobOutcome::Replicated {
            checkpoint_id: checkpoint.id,
            bytes_copied: copied_bytes,
            files_copied: copied_files,
            files_reused: reused,
        })
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

    async fn copy_with_retries(
        &self,
        job: &str,
        src: &StorageUrl,
        peer: &StorageUrl,
        slots: &Semaphore,
    ) -> Result<VerifiedFile, SyncError> {
        let options = &self.inner.options;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.copy_once(job, src, peer, slots).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < options.attempts.max(1) => {
                    let backoff = options
                        .retry_backoff
                        .saturating_mul(1 << (attempt - 1).min(6));
                    tracing::debug!(job, file = %src, attempt, error = %e, "retrying copy");
                    let _ = self.inner.peer.delete(peer).await;
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => {
                    let _ = self.inner.peer.delete(peer).await;
                    return Err(e);
                }
            }
        }
    }

    async fn timed<T>(
        &self,
        what: &'static str,
        url: &StorageUrl,
        f: impl std::future::Future<Output = Result<T, crate::error::StorageError>>,
    ) -> Result<T, SyncError> {
        let limit = self.inner.options.io_timeout;
        match tokio::time::timeout(limit, f).await {
            Ok(r) => r.map_err(SyncError::from),
            Err(_) => Err(SyncError::Timeout {
                what,
                url: url.to_string(),
                seconds: limit.as_secs(),
            }),
        }
    }

    /// Copies one file to a temporary name beside its peer path, hashing the bytes as they
    /// are written, syncs and renames it, then verifies the peer's file.
    ///
    /// Copying and the read-back each hold one of the checkpoint's `slots` (CPU and memory
    /// bound); the commit in between (fsync, then rename) does not, so the next file copies
    /// while the disk takes this one.
    async fn copy_once(
        &self,
        job: &str,
        src: &StorageUrl,
        peer: &StorageUrl,
        slots: &Semaphore,
    ) -> Result<VerifiedFile, SyncError> {
        let inner = &self.inner;
        let slot = slots.acquire().await.ok();
        let (len, checksum, writer) = self.stream(job, src, peer).await?;
        drop(slot);
        // The temporary file is synced, then renamed onto its name (`WriteStream::commit`).
        self.timed("commit", peer, writer.commit()).await?;
        let expected = VerifiedFile { len, checksum };
        let actual = match inner.options.verify {
            VerifyMode::ReadBack => {
                let _slot = slots.acquire().await.ok();
                let mut reader = self.timed("open", peer, inner.peer.open_read(peer)).await?;
                let mut hasher = Xxh64::new();
                let mut len = 0u64;
                while let Some(chunk) = self.timed("read", peer, reader.next_chunk()).await? {
                    len += chunk.len() as u64;
                    hasher.update(&chunk);
                }
                VerifiedFile {
                    len,
                    checksum: hasher.hex(),
                }
            }
            VerifyMode::LengthOnly => {
                let len = self
                    .timed("stat", peer, inner.peer.stat(peer))
                    .await?
                    .map(|m| m.len)
                    .unwrap_or(0);
                VerifiedFile {
                    len,
                    checksum: expected.checksum.clone(),
                }
            }
        };
        if actual != expected {
            return Err(SyncError::VerifyFailed {
                url: peer.to_string(),
                expected_len: expected.len,
                expected_checksum: expected.checksum,
                actual_len: actual.len,
                actual_checksum: actual.checksum,
            });
        }
        self.update(job, |m| m.files_copied += 1);
        Ok(expected)
    }

    /// Streams `src` into a temporary file beside `peer` chunk by chunk (bandwidth-limited),
    /// hashing each chunk as it is handed to the writer. Returns the length, the checksum and
    /// the writer, still to be committed.
    async fn stream(
        &self,
        job: &str,
        src: &StorageUrl,
        peer: &StorageUrl,
    ) -> Result<(u64, String, Box<dyn WriteStream>), SyncError> {
        let inner = &self.inner;
        let mut reader = self.timed("open", src, inner.source.open_read(src)).await?;
        // No wider than the source: a 0600 state file stays 0600 at the peer.
        let permissions = reader.permissions();
        let mut writer = self
            .timed(
                "create",
                peer,
                inner.peer.create_with_permissions(peer, permissions),
            )
            .await?;
        let mut hasher = Xxh64::new();
        let mut len = 0u64;
        let streamed: Result<(), SyncError> = async {
            while let Some(chunk) = self.timed("read", src, reader.next_chunk()).await? {
                inner.limiter.acquire(job, chunk.len() as u64).await;
                hasher.update(&chunk);
                let n = chunk.len() as u64;
                len += n;
                self.timed("write", peer, writer.write(chunk)).await?;
                self.copied_bytes(job, n);
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) => Ok((len, hasher.hex(), writer)),
            Err(e) => {
                writer.abort().await;
                Err(e)
            }
        }
    }

    fn copied_bytes(&self, job: &str, n: u64) {
        self.update(job, |m| m.bytes_copied += n);
        self.emit(ProgressEvent::BytesCopied {
            job: job.to_string(),
            bytes: n,
        });
    }

    /// Keeps the newest `retain` replicated checkpoints of a job at the peer. A `shared/` file
    /// is deleted only when no retained checkpoint references it (their peer `_metadata` is
    /// parsed to know).
    pub async fn apply_retention(&self, job: &str) -> Result<(), SyncError> {
        let inner = &self.inner;
        let mut kept = inner.ledger.replicated(job).await?;
        kept.sort_by_key(|c| c.checkpoint_id);
        let excess = kept.len().saturating_sub(inner.options.retain.max(1));
        let dropped: Vec<ReplicatedCheckpoint> = kept.drain(..excess).collect();
        if !dropped.is_empty() {
            // Forget first: a record must never point at a deleted copy.
            let ids: Vec<u64> = dropped.iter().map(|c| c.checkpoint_id).collect();
            inner.ledger.forget(job, &ids).await?;
            for c in &dropped {
                inner
                    .peer
                    .delete(&StorageUrl::parse(&c.peer_pointer)?)
                    .await?;
            }
        }
        let mut referenced: HashSet<StorageUrl> = HashSet::new();
        for c in &kept {
            let dir = StorageUrl::parse(&c.peer_pointer)?;
            let meta_url = dir.join("_metadata")?;
            let bytes = inner
                .peer
                .read_bounded(&meta_url, MAX_METADATA_BYTES)
                .await?
                .bytes;
            let meta = CheckpointMetadata::parse(&bytes, &meta_url.to_string())?;
            for r in meta.referenced_files(&dir)? {
                // In shared-nameservice mode references name the source root's paths.
                let url = match r.url.relative_to(&inner.source_root) {
                    Some(rel) if inner.options.uri_mode == UriMode::SharedNameservice => {
                        inner.peer_root.join(&rel)?
                    }
                    _ => r.url,
                };
                referenced.insert(url);
            }
        }
        let shared = inner.peer_root.join(&format!("{job}/shared"))?;
        let entries = match inner.peer.list(&shared).await {
            Ok(e) => e,
            Err(e) if e.kind == StorageErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut deleted = Vec::new();
        for entry in entries
            .iter()
            .filter(|e| !e.is_dir && !e.name.ends_with(TEMP_SUFFIX))
        {
            let url = shared.join(&entry.name)?;
            if !referenced.contains(&url) {
                inner.peer.delete(&url).await?;
                deleted.push(format!("{job}/shared/{}", entry.name));
            }
        }
        if !deleted.is_empty() || !dropped.is_empty() {
            let (manifest_url, mut manifest) = self.load_manifest(job).await?;
            let dropped_prefixes: Vec<String> = dropped
                .iter()
                .map(|c| format!("{job}/chk-{}/", c.checkpoint_id))
                .collect();
            manifest.files.retain(|k, _| {
                !deleted.contains(k) && !dropped_prefixes.iter().any(|p| k.starts_with(p))
            });
            self.save_manifest(&manifest_url, &manifest).await?;
        }
        Ok(())
    }
}
