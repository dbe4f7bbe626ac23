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
//!
//! Files: this one holds the types, the `Site` implementation and the shared helpers;
//! `launches.rs` what the controller asks (launch, stop, savepoint, observe), `checkpoints.rs`
//! time passing (ticks, checkpoint files, retention), `faults.rs` injecting faults and the
//! TaskManager eviction they lead to, `persistence.rs` the cluster file.
//!
//! May use: `crate::site` and the crates. Must never: know the controller or the store, or
//! let a fault be observable in a way a real cluster's would not be.

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

mod checkpoints;
mod faults;
mod launches;
mod persistence;

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
