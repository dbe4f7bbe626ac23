//! An in-process site: jobs "run" on simulated nodes and write checkpoints into a local
//! directory standing in for the site's HDFS; faults are injected through a handle.
//!
//! Time only moves through `tick()`, which reads the site's `Clock`: with a `ManualClock` a
//! test decides exactly when checkpoints happen. `spawn_ticker` drives it in real time.
//!
//! Fault semantics (what a controller must cope with):
//! - `NodeDown`: a job whose JobManager node is down is `Failed` (the controller relaunches
//!   it). One that lost only a TaskManager node is `Restarting` until, as Kubernetes does
//!   once the pods' `NoExecute` toleration of an unreachable node runs out
//!   (`task_manager_eviction`, the policy's `detection.podEvictionTimeout`), the TaskManager
//!   is scheduled on another ready node of the site with room: the job then runs again as
//!   the same generation. Neither checkpoints meanwhile. When the node returns, a job still
//!   waiting for it runs again.
//! - `SiteDown`: API unreachable and every job dead. When it is cleared the cluster comes
//!   back with its Deployments, so the jobs resume from their last checkpoint, as a real
//!   cluster would: a controller that relaunched them elsewhere must stop (fence) them.
//! - `Partition`: API unreachable from the controller, but jobs keep running and
//!   checkpointing.
//! - `SlowStorage`: each checkpoint completes `delay_ms` after it was triggered; at most one
//!   is in flight per job, as with Flink's default `max-concurrent-checkpoints: 1`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scheduler::model::{JobId, Node, PodRole, Resources, RunningPod, SiteId, SiteSnapshot};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::sim_metadata::{self, SimMetadata};
use super::{
    CheckpointRef, Clock, JobObservation, JobState, LaunchSpec, Site, SiteError, SiteHealth,
    flink_job_id,
};

/// Flink's key for how many completed checkpoints to keep.
pub const NUM_RETAINED_KEY: &str = "state.checkpoints.num-retained";

/// A fault to inject into (or clear from) a simulated site. JSON: `{"kind":"node-down",
/// "node":"n1"}`, `{"kind":"site-down"}`, `{"kind":"partition"}`,
/// `{"kind":"slow-storage","delay_ms":5000}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    NodeDown {
        node: String,
    },
    SiteDown,
    Partition,
    /// Clearing a `SlowStorage` fault ignores its delay: storage is fast again.
    SlowStorage {
        delay_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedSiteConfig {
    /// Completed checkpoints kept per job when the job's Flink configuration does not set
    /// `state.checkpoints.num-retained`. Flink's own default is 1.
    pub default_retained_checkpoints: usize,
    /// How many consecutive checkpoints' `shared/` files each checkpoint references, as an
    /// incremental RocksDB checkpoint keeps referencing SST files until compaction.
    pub shared_file_window: u64,
    /// Where the site keeps its "cluster state" (the jobs it runs, as a real cluster keeps
    /// its Deployments), so a controller restart or a new leader finds them still running.
    /// `None`: the cluster lives only in this process.
    pub cluster_file: Option<PathBuf>,
    /// How long after a node goes down its TaskManager pods are scheduled on another node
    /// (the pods' `tolerationSeconds`).
    pub task_manager_eviction: Duration,
}

impl Default for SimulatedSiteConfig {
    fn default() -> Self {
        SimulatedSiteConfig {
            default_retained_checkpoints: 1,
            shared_file_window: 3,
            cluster_file: None,
            task_manager_eviction: Duration::from_secs(30),
        }
    }
}

/// What one `tick` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickReport {
    pub completed: Vec<(JobId, u64, CheckpointRef)>,
    /// Checkpoint writes that failed; the job keeps running, as Flink tolerates failed
    /// checkpoints.
    pub failed_writes: Vec<SiteError>,
}

/// A simulated site. Clones share the same site.
#[derive(Debug, Clone)]
pub struct SimulatedSite {
    inner: Arc<Inner>,
}

/// The control surface tests and the admin endpoint use: faults and time.
#[derive(Debug, Clone)]
pub struct SimulatedSiteHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: SiteId,
    storage_root: PathBuf,
    clock: Arc<dyn Clock>,
    config: SimulatedSiteConfig,
    state: Mutex<SimState>,
    changes: watch::Sender<u64>,
    /// Only an active site ticks and saves its cluster file: with several controller
    /// processes sharing one simulated cluster, only the leader's copy runs it.
    active: std::sync::atomic::AtomicBool,
}

/// The saved cluster state (`SimulatedSiteConfig::cluster_file`).
#[derive(Debug, Serialize, Deserialize)]
struct ClusterFile {
    jobs: Vec<SavedJob>,
    stopped: Vec<(JobId, u64)>,
    /// A site that is down stays down for whichever controller process runs it next.
    #[serde(default)]
    site_down: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedJob {
    spec: LaunchSpec,
    next_checkpoint_id: u64,
    latest: Option<CheckpointRef>,
    retained: Vec<RetainedCheckpoint>,
    shared_by_checkpoint: Vec<(u64, Vec<String>)>,
}

#[derive(Debug, Default)]
struct SimState {
    nodes: Vec<Node>,
    foreign_pods: Vec<RunningPod>,
    faults: Faults,
    jobs: BTreeMap<JobId, SimJob>,
    /// Highest generation of each job ever stopped here; older launches are stale.
    stopped: BTreeMap<JobId, u64>,
    last_contact: Option<DateTime<Utc>>,
    version: u64,
    last_saved: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone)]
struct Faults {
    nodes_down: BTreeSet<String>,
    /// When each node in `nodes_down` went down (by the site's clock).
    down_since: BTreeMap<String, DateTime<Utc>>,
    site_down: bool,
    partition: bool,
    slow_storage: Option<Duration>,
}

impl Faults {
    fn api_reachable(&self) -> bool {
        !self.site_down && !self.partition
    }
}

#[derive(Debug)]
struct SimJob {
    spec: LaunchSpec,
    flink_job_id: String,
    state: JobState,
    ever_running: bool,
    restarts: u32,
    next_checkpoint_id: u64,
    next_checkpoint_due: DateTime<Utc>,
    pending: Option<PendingCheckpoint>,
    /// Completed checkpoints still on storage, oldest first.
    retained: VecDeque<RetainedCheckpoint>,
    /// `shared/` files written by recent checkpoints of this generation, oldest first.
    shared_by_checkpoint: VecDeque<(u64, Vec<String>)>,
    latest: Option<CheckpointRef>,
}

#[derive(Debug, Clone, Copy)]
struct PendingCheckpoint {
    id: u64,
    completes_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RetainedCheckpoint {
    chk_uri: String,
    /// Absolute URIs of the `shared/` files it references.
    shared: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `base` + `/` + `rest`, without doubling slashes.
fn join_uri(base: &str, rest: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), rest)
}

impl SimulatedSite {
    /// A site with the nodes and foreign pods of `snapshot`; `storage_root` is its "HDFS":
    /// a URI `hdfs://nn/flink/x` or `/flink/x` maps to `<storage_root>/flink/x`.
    pub fn new(
        snapshot: SiteSnapshot,
        storage_root: impl Into<PathBuf>,
        clock: Arc<dyn Clock>,
        config: SimulatedSiteConfig,
    ) -> Self {
        let (changes, _) = watch::channel(0);
        let now = clock.now();
        let site = SimulatedSite {
            inner: Arc::new(Inner {
                id: snapshot.id,
                storage_root: storage_root.into(),
                clock,
                config,
                state: Mutex::new(SimState {
                    nodes: snapshot.nodes,
                    foreign_pods: snapshot.running_pods,
                    last_contact: Some(now),
                    ..SimState::default()
                }),
                changes,
                active: std::sync::atomic::AtomicBool::new(true),
            }),
        };
        if let Err(error) = site.reload() {
            tracing::warn!(site = %site.inner.id, %error, "cluster file not loaded; starting empty");
        }
        site
    }

    /// Re-reads the cluster file (when configured): the jobs another process ran in this
    /// simulated cluster. A new leader calls it before it starts running the site.
    pub fn reload(&self) -> Result<(), SiteError> {
        self.inner.load_cluster()
    }

    /// Starts or stops running the simulation (ticks, cluster-file saves) in this process.
    pub fn set_active(&self, active: bool) {
        self.inner
            .active
            .store(active, std::sync::atomic::Ordering::SeqCst);
        if active {
            let state = self.inner.lock();
            self.inner.save_locked(&state);
        }
    }

    /// A site from `kubectl get nodes -o json` and (optionally) `kubectl get pods -A -o json`
    /// text, as `twinsite generate` writes them.
    pub fn from_kubectl_json(
        site: SiteId,
        nodes_json: &str,
        pods_json: Option<&str>,
        storage_root: impl Into<PathBuf>,
        clock: Arc<dyn Clock>,
        config: SimulatedSiteConfig,
    ) -> Result<Self, SiteError> {
        let invalid = |what: &str, e: scheduler::input::InputError| SiteError::Invalid {
            site: site.clone(),
            object: what.to_owned(),
            reason: e.to_string(),
        };
        let nodes = scheduler::input::kube_objects::parse_node_list("nodes", nodes_json)
            .map_err(|e| invalid("nodes JSON", e))?;
        let running_pods = match pods_json {
            Some(json) => scheduler::input::kube_objects::parse_pod_list("pods", json)
                .map_err(|e| invalid("pods JSON", e))?,
            None => Vec::new(),
        };
        let snapshot = SiteSnapshot {
            id: site.clone(),
            nodes,
            running_pods,
        };
        Ok(SimulatedSite::new(snapshot, storage_root, clock, config))
    }

    pub fn handle(&self) -> SimulatedSiteHandle {
        SimulatedSiteHandle {
            inner: Arc::clone(&self.inner),
        }
    }

    pub fn storage_root(&self) -> &Path {
        &self.inner.storage_root
    }

    /// Local path of a storage URI (see `new`); rejects `..` so nothing escapes the root.
    pub fn resolve(&self, uri: &str) -> Result<PathBuf, SiteError> {
        self.inner.resolve(uri)
    }

    /// Advances every job to the clock's current time: completes and triggers checkpoints.
    pub fn tick(&self) -> TickReport {
        self.inner.tick()
    }

    /// The launch record of the generation of `job` this site runs (as a Deployment keeps
    /// its pod template): what it was started with, its args and env among it.
    pub fn launched(&self, job: &JobId) -> Option<LaunchSpec> {
        self.inner.lock().jobs.get(job).map(|j| j.spec.clone())
    }
}

impl SimulatedSiteHandle {
    pub fn site(&self) -> SiteId {
        self.inner.id.clone()
    }

    pub fn inject(&self, fault: Fault) -> Result<(), SiteError> {
        self.inner.set_fault(fault, true)
    }

    pub fn clear(&self, fault: Fault) -> Result<(), SiteError> {
        self.inner.set_fault(fault, false)
    }

    pub fn active_faults(&self) -> Vec<Fault> {
        let state = self.inner.lock();
        let mut faults: Vec<Fault> = state
            .faults
            .nodes_down
            .iter()
            .map(|node| Fault::NodeDown { node: node.clone() })
            .collect();
        if state.faults.site_down {
            faults.push(Fault::SiteDown);
        }
        if state.faults.partition {
            faults.push(Fault::Partition);
        }
        if let Some(delay) = state.faults.slow_storage {
            faults.push(Fault::SlowStorage {
                delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            });
        }
        faults
    }

    pub fn tick(&self) -> TickReport {
        self.inner.tick()
    }
}

/// Ticks `site` every `period` of real time until the returned task is aborted. The file
/// writes run on the blocking pool.
pub fn spawn_ticker(site: SimulatedSite, period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let site = site.clone();
            let report = tokio::task::spawn_blocking(move || site.tick()).await;
            if let Ok(report) = report {
                for error in report.failed_writes {
                    tracing::warn!(%error, "simulated checkpoint write failed");
                }
            }
        }
    })
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes the cluster file (temporary name, then rename), if configured and active.
    fn save_locked(&self, state: &SimState) {
        let Some(path) = &self.config.cluster_file else {
            return;
        };
        if !self.is_active() {
            return;
        }
        let file = ClusterFile {
            jobs: state
                .jobs
                .values()
                .map(|job| SavedJob {
                    spec: job.spec.clone(),
                    next_checkpoint_id: job.next_checkpoint_id,
                    latest: job.latest.clone(),
                    retained: job
                        .retained
                        .iter()
                        .map(|r| RetainedCheckpoint {
                            chk_uri: r.chk_uri.clone(),
                            shared: r.shared.clone(),
                        })
                        .collect(),
                    shared_by_checkpoint: job.shared_by_checkpoint.iter().cloned().collect(),
                })
                .collect(),
            stopped: state.stopped.iter().map(|(j, g)| (j.clone(), *g)).collect(),
            site_down: state.faults.site_down,
        };
        let result = (|| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec(&file).map_err(std::io::Error::other)?,
            )?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(error) = result {
            tracing::warn!(site = %self.id, path = %path.display(), %error, "cannot save the simulated cluster");
        }
    }

    fn load_cluster(&self) -> Result<(), SiteError> {
        let Some(path) = &self.config.cluster_file else {
            return Ok(());
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.storage_error(path, e)),
        };
        let file: ClusterFile = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("cluster file {}", path.display()), e.to_string()))?;
        let now = self.clock.now();
        let mut state = self.lock();
        state.faults.site_down = file.site_down;
        let faults = state.faults.clone();
        state.jobs.clear();
        for saved in file.jobs {
            // Saves are throttled, so the file may lag the checkpoints on storage: never
            // reuse an id that may already exist.
            let flink_job_id = flink_job_id(&saved.spec.job, saved.spec.generation);
            let on_storage = self.highest_checkpoint_on_storage(&saved.spec, &flink_job_id);
            let next_checkpoint_id = saved
                .next_checkpoint_id
                .max(saved.latest.as_ref().map_or(0, |c| c.id + 1))
                .max(on_storage.map_or(0, |id| id + 1));
            let mut job = SimJob {
                flink_job_id,
                state: JobState::Restarting,
                ever_running: false,
                restarts: 0,
                next_checkpoint_id,
                next_checkpoint_due: now + to_chrono(saved.spec.checkpoint_interval()),
                pending: None,
                retained: saved.retained.into(),
                shared_by_checkpoint: saved.shared_by_checkpoint.into(),
                latest: saved.latest,
                spec: saved.spec,
            };
            job.update_state(&faults, now);
            state.jobs.insert(job.spec.job.clone(), job);
        }
        state.stopped = file.stopped.into_iter().collect();
        tracing::info!(site = %self.id, jobs = state.jobs.len(), "loaded the simulated cluster");
        self.bump(&mut state);
        Ok(())
    }

    /// The highest `chk-N` under the job's checkpoint directory, if any.
    fn highest_checkpoint_on_storage(&self, spec: &LaunchSpec, flink_job_id: &str) -> Option<u64> {
        let dir = self
            .resolve(&join_uri(&spec.checkpoint_dir, flink_job_id))
            .ok()?;
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("chk-"))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .max()
    }

    fn bump(&self, state: &mut SimState) {
        state.version += 1;
        self.changes.send_replace(state.version);
    }

    /// The guard, or `Unreachable` when the controller cannot talk to the site.
    fn reachable(&self) -> Result<MutexGuard<'_, SimState>, SiteError> {
        let mut state = self.lock();
        if state.faults.site_down {
            return Err(self.unreachable("site is down"));
        }
        if state.faults.partition {
            return Err(self.unreachable("network partition between controller and site"));
        }
        state.last_contact = Some(self.clock.now());
        Ok(state)
    }

    fn unreachable(&self, reason: &str) -> SiteError {
        SiteError::Unreachable {
            site: self.id.clone(),
            reason: reason.to_owned(),
        }
    }

    fn invalid(&self, object: impl Into<String>, reason: impl Into<String>) -> SiteError {
        SiteError::Invalid {
            site: self.id.clone(),
            object: object.into(),
            reason: reason.into(),
        }
    }

    fn storage_error(&self, path: &Path, error: impl std::fmt::Display) -> SiteError {
        SiteError::Storage {
            site: self.id.clone(),
            path: path.display().to_string(),
            reason: error.to_string(),
        }
    }

    /// Size of a stored file, 0 when it cannot be read (only recorded as a state size).
    fn file_size(&self, uri: &str) -> u64 {
        self.resolve(uri)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    fn resolve(&self, uri: &str) -> Result<PathBuf, SiteError> {
        super::resolve_in_root(&self.storage_root, uri)
            .map_err(|reason| self.invalid(format!("storage path {uri:?}"), reason))
    }

    /// Kubernetes' eviction: a TaskManager pod on a node down for `task_manager_eviction`
    /// goes to the first ready node (by name) with room for it, counting every pod of the
    /// site; its JobManager's node must be up (a job whose JobManager died is the
    /// controller's to relaunch). True when a pod moved.
    fn reschedule_task_managers(&self, state: &mut SimState, now: DateTime<Utc>) -> bool {
        let eviction = to_chrono(self.config.task_manager_eviction);
        let evicted: BTreeSet<String> = state
            .faults
            .down_since
            .iter()
            .filter(|(_, since)| now - **since >= eviction)
            .map(|(node, _)| node.clone())
            .collect();
        if evicted.is_empty() {
            return false;
        }
        let mut moved = false;
        let ids: Vec<JobId> = state.jobs.keys().cloned().collect();
        for id in ids {
            while let Some(job) = state.jobs.get(&id) {
                if job
                    .spec
                    .job_manager_node()
                    .is_some_and(|n| state.faults.nodes_down.contains(n))
                {
                    break;
                }
                let Some(index) = job
                    .spec
                    .placement
                    .pods
                    .iter()
                    .position(|p| p.role == PodRole::Taskmanager && evicted.contains(&p.node))
                else {
                    break;
                };
                let need = job.spec.task_manager;
                let mut used: BTreeMap<&str, Resources> = BTreeMap::new();
                for p in &state.foreign_pods {
                    *used.entry(p.node.as_str()).or_insert(Resources::ZERO) += p.request;
                }
                for j in state.jobs.values() {
                    for p in &j.spec.placement.pods {
                        let r = match p.role {
                            PodRole::Jobmanager => j.spec.job_manager,
                            _ => j.spec.task_manager,
                        };
                        *used.entry(p.node.as_str()).or_insert(Resources::ZERO) += r;
                    }
                }
                let target = state
                    .nodes
                    .iter()
                    .filter(|n| n.ready && !n.unschedulable)
                    .filter(|n| !state.faults.nodes_down.contains(&n.name))
                    .find(|n| {
                        (used
                            .get(n.name.as_str())
                            .copied()
                            .unwrap_or(Resources::ZERO)
                            + need)
                            .fits_in(&n.allocatable)
                    })
                    .map(|n| n.name.clone());
                let Some(target) = target else {
                    break;
                };
                if let Some(job) = state.jobs.get_mut(&id) {
                    let from =
                        std::mem::replace(&mut job.spec.placement.pods[index].node, target.clone());
                    tracing::info!(site = %self.id, job = %id, %from, to = %target, "TaskManager evicted from a lost node and scheduled on another");
                    moved = true;
                }
            }
        }
        moved
    }

    fn set_fault(&self, fault: Fault, active: bool) -> Result<(), SiteError> {
        let now = self.clock.now();
        let mut state = self.lock();
        match &fault {
            Fault::NodeDown { node } => {
                if !state.nodes.iter().any(|n| &n.name == node) {
                    return Err(self.invalid(format!("fault {fault:?}"), "no such node"));
                }
                if active {
                    state.faults.nodes_down.insert(node.clone());
                    state.faults.down_since.entry(node.clone()).or_insert(now);
                } else {
                    state.faults.nodes_down.remove(node);
                    state.faults.down_since.remove(node);
                }
            }
            Fault::SiteDown => state.faults.site_down = active,
            Fault::Partition => state.faults.partition = active,
            Fault::SlowStorage { delay_ms } => {
                state.faults.slow_storage = active.then(|| Duration::from_millis(*delay_ms));
            }
        }
        tracing::info!(site = %self.id, ?fault, active, "simulated fault changed");
        let faults = state.faults.clone();
        for job in state.jobs.values_mut() {
            job.update_state(&faults, now);
        }
        self.bump(&mut state);
        if matches!(fault, Fault::SiteDown) {
            self.save_locked(&state);
        }
        Ok(())
    }

    /// Three steps, so file I/O never runs under the site's lock (reads and launches stay
    /// fast while a thousand jobs checkpoint): decide and book-keep under the lock, write
    /// without it, then record the outcome (and which old checkpoints to drop) under it
    /// again and delete without it.
    fn tick(&self) -> TickReport {
        let now = self.clock.now();
        let mut report = TickReport::default();
        if !self.is_active() {
            return report;
        }
        let mut changed = false;
        let mut tasks = Vec::new();
        {
            let mut state = self.lock();
            if state.faults.api_reachable() {
                state.last_contact = Some(now);
            }
            changed |= self.reschedule_task_managers(&mut state, now);
            let faults = state.faults.clone();
            let window = self.config.shared_file_window.max(1);
            for job in state.jobs.values_mut() {
                changed |= job.update_state(&faults, now);
                if job.state != JobState::Running {
                    continue;
                }
                if let Some(pending) = job.pending
                    && pending.completes_at <= now
                {
                    job.pending = None;
                    tasks.push(job.plan_checkpoint(pending.id, window));
                }
                if job.pending.is_none() && job.next_checkpoint_due <= now {
                    let id = job.next_checkpoint_id;
                    job.next_checkpoint_id += 1;
                    job.next_checkpoint_due = now + to_chrono(job.spec.checkpoint_interval());
                    let delay = faults.slow_storage.unwrap_or_default();
                    if delay.is_zero() {
                        tasks.push(job.plan_checkpoint(id, window));
                    } else {
                        job.pending = Some(PendingCheckpoint {
                            id,
                            completes_at: now + to_chrono(delay),
                        });
                    }
                }
            }
        }

        let written: Vec<(CheckpointTask, Result<(), SiteError>)> = tasks
            .into_iter()
            .map(|task| {
                let result = self.write_checkpoint(&task);
                (task, result)
            })
            .collect();

        let mut deletions = Vec::new();
        {
            let mut state = self.lock();
            for (task, result) in written {
                let Some(job) = state
                    .jobs
                    .get_mut(&task.job)
                    .filter(|j| j.spec.generation == task.generation)
                else {
                    continue;
                };
                match result {
                    Ok(()) => {
                        let checkpoint = CheckpointRef {
                            id: task.id,
                            path: task.chk_uri.clone(),
                            completed_at: now,
                        };
                        deletions.extend(job.retain(task, self.retained_for(job)));
                        job.latest = Some(checkpoint.clone());
                        report.completed.push((
                            job.spec.job.clone(),
                            job.spec.generation,
                            checkpoint,
                        ));
                        changed = true;
                    }
                    Err(error) => {
                        // A failed checkpoint's files are discarded; later ones never
                        // reference them.
                        job.shared_by_checkpoint.retain(|(id, _)| *id != task.id);
                        report.failed_writes.push(error);
                    }
                }
            }
            if changed {
                self.bump(&mut state);
                // Throttled: a thousand jobs' state is a megabyte or so.
                let due = state
                    .last_saved
                    .is_none_or(|at| now - at >= chrono::Duration::seconds(5));
                if due && !report.completed.is_empty() {
                    state.last_saved = Some(now);
                    self.save_locked(&state);
                }
            }
        }

        for deletion in deletions {
            if let Err(error) = self.delete(&deletion) {
                report.failed_writes.push(error);
            }
        }
        report
    }

    fn retained_for(&self, job: &SimJob) -> usize {
        job.spec
            .flink_configuration
            .get(NUM_RETAINED_KEY)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(self.config.default_retained_checkpoints)
            .max(1)
    }

    /// New `shared/` files first, then `chk-N/_metadata` (written last, atomically).
    fn write_checkpoint(&self, task: &CheckpointTask) -> Result<(), SiteError> {
        let shared_dir = self.resolve(&join_uri(&task.job_uri, "shared"))?;
        std::fs::create_dir_all(&shared_dir).map_err(|e| self.storage_error(&shared_dir, e))?;
        for (uri, content) in &task.new_files {
            let path = self.resolve(uri)?;
            std::fs::write(&path, content).map_err(|e| self.storage_error(&path, e))?;
        }
        let chk_dir = self.resolve(&task.chk_uri)?;
        std::fs::create_dir_all(&chk_dir).map_err(|e| self.storage_error(&chk_dir, e))?;
        sim_metadata::write(&chk_dir, &task.metadata, |uri| self.file_size(uri))
            .map_err(|e| self.storage_error(&chk_dir, e))
    }

    fn delete(&self, deletion: &Deletion) -> Result<(), SiteError> {
        let ignore_missing = |result: std::io::Result<()>, path: &Path| match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.storage_error(path, e)),
            _ => Ok(()),
        };
        let dir = self.resolve(&deletion.chk_uri)?;
        ignore_missing(std::fs::remove_dir_all(&dir), &dir)?;
        for file in &deletion.unreferenced_files {
            let path = self.resolve(file)?;
            ignore_missing(std::fs::remove_file(&path), &path)?;
        }
        Ok(())
    }

    /// Reads the checkpoint a launch restores from and checks that every file it references
    /// exists; returns its checkpoint id.
    fn check_restorable(&self, restore_from: &str) -> Result<u64, SiteError> {
        let dir = self.resolve(restore_from)?;
        let metadata_path = dir.join("_metadata");
        let bytes = std::fs::read(&metadata_path).map_err(|e| {
            self.invalid(
                format!("restore path {restore_from}"),
                format!("cannot read {}: {e}", metadata_path.display()),
            )
        })?;
        let metadata = sim_metadata::parse(&metadata_path.display().to_string(), &bytes)
            .map_err(|e| self.invalid(format!("restore path {restore_from}"), e.to_string()))?;
        for file in &metadata.files {
            let path = self.resolve(file)?;
            if !path.is_file() {
                return Err(self.invalid(
                    format!("restore path {restore_from}"),
                    format!("checkpoint references {file}, which does not exist in this site"),
                ));
            }
        }
        Ok(metadata.checkpoint_id)
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        spec.validate_for(&self.id)?;
        let now = self.clock.now();
        let mut state = self.reachable()?;
        if let Some(running) = state.jobs.get(&spec.job) {
            if running.spec.generation == spec.generation {
                return Ok(());
            }
            return Err(SiteError::GenerationConflict {
                site: self.id.clone(),
                job: spec.job.clone(),
                running: running.spec.generation,
                requested: spec.generation,
            });
        }
        if let Some(&stopped) = state.stopped.get(&spec.job)
            && spec.generation <= stopped
        {
            return Err(SiteError::StaleGeneration {
                site: self.id.clone(),
                job: spec.job.clone(),
                requested: spec.generation,
                stopped,
            });
        }
        for pod in &spec.placement.pods {
            if !state.nodes.iter().any(|n| n.name == pod.node) {
                return Err(self.invalid(
                    format!("launch of job {} generation {}", spec.job, spec.generation),
                    format!(
                        "{:?} {} is placed on node {:?}, which this site does not have",
                        pod.role, pod.index, pod.node
                    ),
                ));
            }
        }
        let restored_id = match &spec.restore_from {
            Some(path) => Some(self.check_restorable(path)?),
            None => None,
        };
        let mut job = SimJob {
            spec: spec.clone(),
            flink_job_id: flink_job_id(&spec.job, spec.generation),
            state: JobState::Restarting,
            ever_running: false,
            restarts: 0,
            // Flink continues the checkpoint counter of the checkpoint it restored.
            next_checkpoint_id: restored_id.map_or(1, |id| id + 1),
            next_checkpoint_due: now + to_chrono(spec.checkpoint_interval()),
            pending: None,
            retained: VecDeque::new(),
            shared_by_checkpoint: VecDeque::new(),
            latest: None,
        };
        let faults = state.faults.clone();
        job.update_state(&faults, now);
        tracing::info!(site = %self.id, job = %spec.job, generation = spec.generation,
            restore_from = ?spec.restore_from, "simulated launch");
        state.jobs.insert(spec.job.clone(), job);
        self.bump(&mut state);
        self.save_locked(&state);
        Ok(())
    }

    fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        let mut state = self.reachable()?;
        self.stop_locked(&mut state, job, generation);
        Ok(())
    }

    fn stop_locked(&self, state: &mut SimState, job: &JobId, generation: u64) {
        if state
            .jobs
            .get(job)
            .is_some_and(|j| j.spec.generation == generation)
        {
            state.jobs.remove(job);
            tracing::info!(site = %self.id, %job, generation, "simulated stop");
        }
        let stopped = state.stopped.entry(job.clone()).or_insert(generation);
        *stopped = (*stopped).max(generation);
        self.bump(state);
        self.save_locked(state);
    }

    fn stop_with_savepoint(
        &self,
        job_id: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        let now = self.clock.now();
        let mut state = self.reachable()?;
        let not_running = || SiteError::NotRunning {
            site: self.id.clone(),
            job: job_id.clone(),
            generation,
        };
        let job = state
            .jobs
            .get(job_id)
            .filter(|j| j.spec.generation == generation)
            .ok_or_else(not_running)?;
        if job.state != JobState::Running {
            return Err(not_running());
        }
        // Flink names savepoints `savepoint-<first 6 of job id>-<12 random hex>`; the
        // suffix here is derived, so runs stay reproducible.
        let suffix = hex(&Sha256::digest(format!("{}@{now}", job.flink_job_id).as_bytes())[..6]);
        let name = format!("savepoint-{}-{suffix}", &job.flink_job_id[..6]);
        let savepoint_uri = join_uri(target_dir, &name);
        let dir = self.resolve(&savepoint_uri)?;
        std::fs::create_dir_all(&dir).map_err(|e| self.storage_error(&dir, e))?;
        // Savepoints are self-contained: their state lives inside their own directory.
        let state_file = dir.join("state");
        std::fs::write(
            &state_file,
            format!("simulated savepoint of {job_id} generation {generation}\n"),
        )
        .map_err(|e| self.storage_error(&state_file, e))?;
        let metadata = SimMetadata {
            flink_job_id: job.flink_job_id.clone(),
            checkpoint_id: job.next_checkpoint_id,
            files: vec![join_uri(&savepoint_uri, "state")],
        };
        sim_metadata::write(&dir, &metadata, |uri| self.file_size(uri))
            .map_err(|e| self.storage_error(&dir, e))?;
        self.stop_locked(&mut state, job_id, generation);
        Ok(savepoint_uri)
    }

    fn snapshot(&self) -> Result<SiteSnapshot, SiteError> {
        let state = self.reachable()?;
        let nodes = state
            .nodes
            .iter()
            .map(|node| {
                let mut node = node.clone();
                if state.faults.nodes_down.contains(&node.name) {
                    node.ready = false;
                }
                node
            })
            .collect();
        Ok(SiteSnapshot {
            id: self.id.clone(),
            nodes,
            running_pods: state.foreign_pods.clone(),
        })
    }

    fn jobs(&self) -> Result<Vec<JobObservation>, SiteError> {
        let state = self.reachable()?;
        Ok(state
            .jobs
            .values()
            .map(|job| {
                let nodes: BTreeSet<String> = job
                    .spec
                    .placement
                    .pods
                    .iter()
                    .map(|p| p.node.clone())
                    .collect();
                JobObservation {
                    job: job.spec.job.clone(),
                    generation: job.spec.generation,
                    state: job.state,
                    nodes: nodes.into_iter().collect(),
                    restarts: job.restarts,
                    latest_completed_checkpoint: job.latest.clone(),
                    epoch: Some(job.spec.epoch),
                }
            })
            .collect())
    }

    fn health(&self) -> SiteHealth {
        let state = self.lock();
        let detail = if state.faults.site_down {
            Some("site is down".to_owned())
        } else if state.faults.partition {
            Some("network partition between controller and site".to_owned())
        } else {
            None
        };
        SiteHealth {
            site: self.id.clone(),
            api_reachable: state.faults.api_reachable(),
            last_contact: state.last_contact,
            detail,
        }
    }
}

/// One checkpoint to write, decided under the lock and written without it.
#[derive(Debug)]
struct CheckpointTask {
    job: JobId,
    generation: u64,
    id: u64,
    job_uri: String,
    chk_uri: String,
    /// `(uri, content)` of the new `shared/` files.
    new_files: Vec<(String, String)>,
    metadata: SimMetadata,
}

/// An old checkpoint to delete, with the shared files only it referenced.
#[derive(Debug)]
struct Deletion {
    chk_uri: String,
    unreferenced_files: Vec<String>,
}

impl SimJob {
    /// Books checkpoint `id`: one or two new shared files (alternating: enough to exercise
    /// "copy only what is new"), referenced with those of the previous `window - 1`
    /// checkpoints, as incremental RocksDB keeps referencing SST files until compaction.
    fn plan_checkpoint(&mut self, id: u64, window: u64) -> CheckpointTask {
        let job_uri = join_uri(&self.spec.checkpoint_dir, &self.flink_job_id);
        let new_files: Vec<(String, String)> = (0..1 + (id % 2) as usize)
            .map(|index| {
                let name = shared_file_name(&self.flink_job_id, id, index);
                let content = format!(
                    "simulated state of {} generation {} checkpoint {id} file {index}\n",
                    self.spec.job, self.spec.generation
                );
                (join_uri(&job_uri, &format!("shared/{name}")), content)
            })
            .collect();
        self.shared_by_checkpoint
            .push_back((id, new_files.iter().map(|(uri, _)| uri.clone()).collect()));
        while self
            .shared_by_checkpoint
            .front()
            .is_some_and(|(first, _)| first + window <= id)
        {
            self.shared_by_checkpoint.pop_front();
        }
        let referenced = self
            .shared_by_checkpoint
            .iter()
            .flat_map(|(_, files)| files.iter().cloned())
            .collect();
        CheckpointTask {
            job: self.spec.job.clone(),
            generation: self.spec.generation,
            id,
            chk_uri: join_uri(&job_uri, &format!("chk-{id}")),
            job_uri,
            new_files,
            metadata: SimMetadata {
                flink_job_id: self.flink_job_id.clone(),
                checkpoint_id: id,
                files: referenced,
            },
        }
    }

    /// Records a written checkpoint and returns the old ones beyond `keep` to delete.
    fn retain(&mut self, task: CheckpointTask, keep: usize) -> Vec<Deletion> {
        self.retained.push_back(RetainedCheckpoint {
            chk_uri: task.chk_uri,
            shared: task.metadata.files,
        });
        let mut dropped = Vec::new();
        while self.retained.len() > keep {
            if let Some(old) = self.retained.pop_front() {
                dropped.push(old);
            }
        }
        let still_referenced: BTreeSet<&String> =
            self.retained.iter().flat_map(|c| c.shared.iter()).collect();
        dropped
            .into_iter()
            .map(|old| Deletion {
                unreferenced_files: old
                    .shared
                    .iter()
                    .filter(|f| !still_referenced.contains(f))
                    .cloned()
                    .collect(),
                chk_uri: old.chk_uri,
            })
            .collect()
    }

    /// Re-derives the job's state from the faults; returns true when it changed.
    fn update_state(&mut self, faults: &Faults, now: DateTime<Utc>) -> bool {
        let jm_down = self
            .spec
            .job_manager_node()
            .is_some_and(|n| faults.nodes_down.contains(n));
        let tm_down = self
            .spec
            .task_manager_nodes()
            .iter()
            .any(|n| faults.nodes_down.contains(*n));
        let next = if faults.site_down || jm_down {
            JobState::Failed
        } else if tm_down {
            JobState::Restarting
        } else {
            JobState::Running
        };
        if next == self.state {
            return false;
        }
        if next == JobState::Running {
            if self.ever_running {
                self.restarts += 1;
            }
            self.ever_running = true;
            self.next_checkpoint_due = now + to_chrono(self.spec.checkpoint_interval());
        } else {
            // A checkpoint in flight is aborted when the job goes down.
            self.pending = None;
        }
        self.state = next;
        true
    }
}

fn shared_file_name(flink_job_id: &str, checkpoint: u64, index: usize) -> String {
    let digest = Sha256::digest(format!("{flink_job_id}/{checkpoint}/{index}").as_bytes());
    let h = hex(&digest[..16]);
    // UUID-shaped, like the SST file names RocksDB checkpoints upload.
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl Site for SimulatedSite {
    fn id(&self) -> SiteId {
        self.inner.id.clone()
    }

    async fn snapshot(&self) -> Result<SiteSnapshot, SiteError> {
        self.inner.snapshot()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        self.inner.launch(spec)
    }

    async fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        self.inner.stop(job, generation)
    }

    async fn stop_with_savepoint(
        &self,
        job: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        self.inner.stop_with_savepoint(job, generation, target_dir)
    }

    async fn jobs(&self) -> Result<Vec<JobObservation>, SiteError> {
        self.inner.jobs()
    }

    async fn health(&self) -> SiteHealth {
        self.inner.health()
    }

    /// A partitioned site still renews its liveness through the quorum (its etcd member is
    /// on its own side of the cut); a site that is down does not.
    async fn peer_last_contact(&self) -> Option<DateTime<Utc>> {
        let down = self.inner.lock().faults.site_down;
        (!down).then(Utc::now)
    }
}

/// Reads a simulated checkpoint's `_metadata`: the files it references, by URI.
pub fn read_checkpoint_metadata(
    site: &SimulatedSite,
    checkpoint_uri: &str,
) -> Result<SimMetadata, SiteError> {
    let path = site.resolve(checkpoint_uri)?.join("_metadata");
    let bytes = std::fs::read(&path).map_err(|e| SiteError::Storage {
        site: site.inner.id.clone(),
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    sim_metadata::parse(&path.display().to_string(), &bytes).map_err(|e| SiteError::Invalid {
        site: site.inner.id.clone(),
        object: format!("checkpoint {checkpoint_uri}"),
        reason: e.to_string(),
    })
}
