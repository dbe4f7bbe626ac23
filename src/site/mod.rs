//! The site interface (nodes, pods, job launches, health, checkpoints) and its kinds: an
//! in-process simulated site and a thin Kubernetes adapter. See `src/site/README.md`.
//!
//! May use: the crates only (a floor layer; `tests/layering.rs` checks it). Must never: know
//! the controller, the store or the jobs' records: a site runs the `LaunchSpec` it is given.
//!
//! One `Site` is one data-centre site. The controller holds an `Arc<dyn Site>` per site and
//! only ever talks to a site through this trait, so the simulation exercises the same code
//! paths as production.

pub mod clock;
pub mod kube;
pub mod local_flink;
pub mod sim_metadata;
pub mod simulated;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scheduler::k8s::Toleration;
use scheduler::model::{JobId, JobPlacement, PodRole, Resources, SiteId, SiteSnapshot};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use clock::{Clock, ManualClock, SystemClock};

/// A data-centre site: its cluster (nodes, pods) and the Flink jobs twinsite launched in it.
///
/// Reads (`snapshot`, `jobs`) come from a local index fed by watch events, so they are cheap;
/// they still return `Err` when the site's API is unreachable, because a stale view must not
/// be mistaken for a live one.
#[async_trait]
pub trait Site: Send + Sync {
    fn id(&self) -> SiteId;

    /// Nodes and the running pods twinsite did not launch (foreign load), as last observed.
    async fn snapshot(&self) -> Result<SiteSnapshot, SiteError>;

    /// A counter that grows whenever the observed state (nodes, pods, jobs, health) changed.
    /// Watch it to know when to read `snapshot`/`jobs` again; values carry no other meaning.
    fn changes(&self) -> watch::Receiver<u64>;

    /// Starts `spec.generation` of `spec.job`. Idempotent: launching a generation that is
    /// already running does not start a second copy. Refuses (`GenerationConflict`) while
    /// another generation of the same job still runs in this site.
    async fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError>;

    /// Stops one generation of a job. Idempotent: stopping what is not running succeeds.
    async fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError>;

    /// Takes a savepoint under `target_dir`, stops the job, and returns the savepoint's path
    /// (the directory holding `_metadata`), ready to be a `LaunchSpec::restore_from`.
    async fn stop_with_savepoint(
        &self,
        job: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError>;

    /// Every generation of every twinsite job this site currently runs or tries to run.
    async fn jobs(&self) -> Result<Vec<JobObservation>, SiteError>;

    async fn health(&self) -> SiteHealth;

    /// When someone other than this controller last heard from the site: its etcd member or
    /// agent renewing its liveness through the quorum. A site heard this way is alive even if
    /// this controller cannot reach its API, so it must not be failed over. `None`: no such
    /// observer (the site is judged by its API and nodes alone).
    async fn peer_last_contact(&self) -> Option<DateTime<Utc>> {
        None
    }
}

/// Everything a site needs to run one generation of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub job: JobId,
    /// Grows by one on every relaunch of the job; a site never runs two generations at once.
    pub generation: u64,
    /// The site's epoch (its `SiteRecord`) when the controller launched this generation.
    /// Every object of the launch carries it (`twinsite.io/epoch`), so an agent inside the
    /// site can stop generations launched before the site's epoch moved on.
    #[serde(default)]
    pub epoch: u64,
    /// Must name this site; every pod is pinned to its planned node.
    pub placement: JobPlacement,
    /// Container image, e.g. `flink:1.20`.
    pub image: String,
    /// Operator notation of the Flink version, e.g. `v1_20` (FlinkDeployment mode only).
    pub flink_version: String,
    pub jar_uri: String,
    /// Main class; `None` lets Flink read it from the jar's manifest.
    #[serde(default)]
    pub entry_class: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables of the JobManager and TaskManager containers (the job's
    /// `spec.siteOverrides.<site>.env`, expanded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub parallelism: u32,
    pub task_slots: u32,
    /// Request (and limit) of the JobManager pod.
    pub job_manager: Resources,
    /// Request (and limit) of every TaskManager pod.
    pub task_manager: Resources,
    /// Tolerations of the job's pods (Kubernetes field names), so they may run on the
    /// tainted nodes the placement chose.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Extra Flink configuration; twinsite's own keys (checkpoint dir, interval, memory,
    /// slots) override entries of the same name.
    #[serde(default)]
    pub flink_configuration: BTreeMap<String, String>,
    /// `state.checkpoints.dir`, e.g. `hdfs:///flink/checkpoints/ns/name`.
    pub checkpoint_dir: String,
    pub checkpoint_interval_ms: u64,
    /// Explicit checkpoint or savepoint directory to restore from (the one holding
    /// `_metadata`). Never Flink HA ConfigMaps: those lived in a cluster that may be gone.
    #[serde(default)]
    pub restore_from: Option<String>,
}

impl LaunchSpec {
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }

    /// The planned node of the JobManager, if the placement has one.
    pub fn job_manager_node(&self) -> Option<&str> {
        self.placement
            .pods
            .iter()
            .find(|p| p.role == PodRole::Jobmanager)
            .map(|p| p.node.as_str())
    }

    /// The planned node of every TaskManager, in index order.
    pub fn task_manager_nodes(&self) -> Vec<&str> {
        let mut tms: Vec<_> = self
            .placement
            .pods
            .iter()
            .filter(|p| p.role == PodRole::Taskmanager)
            .collect();
        tms.sort_by_key(|p| p.index);
        tms.into_iter().map(|p| p.node.as_str()).collect()
    }

    /// Checks what every site kind relies on: the placement names `site`, has exactly one
    /// JobManager, at least one TaskManager, and the numbers are usable.
    pub fn validate_for(&self, site: &SiteId) -> Result<(), SiteError> {
        let invalid = |reason: String| SiteError::Invalid {
            site: site.clone(),
            object: format!("launch of job {} generation {}", self.job, self.generation),
            reason,
        };
        if self.placement.job != self.job {
            return Err(invalid(format!(
                "placement is for job {}, not {}",
                self.placement.job, self.job
            )));
        }
        if &self.placement.site != site {
            return Err(invalid(format!(
                "placement.site is {}, not this site",
                self.placement.site
            )));
        }
        let job_managers = self
            .placement
            .pods
            .iter()
            .filter(|p| p.role == PodRole::Jobmanager)
            .count();
        if job_managers != 1 {
            return Err(invalid(format!(
                "placement has {job_managers} JobManager pods, expected exactly 1"
            )));
        }
        if self.task_manager_nodes().is_empty() {
            return Err(invalid("placement has no TaskManager pod".into()));
        }
        if self.parallelism == 0 {
            return Err(invalid("parallelism is 0".into()));
        }
        if self.task_slots == 0 {
            return Err(invalid("task_slots is 0".into()));
        }
        if self.checkpoint_interval_ms == 0 {
            return Err(invalid("checkpoint_interval_ms is 0".into()));
        }
        if self.job.0.split_once('/').is_none() {
            return Err(invalid(format!(
                "job id {:?} is not namespace/name",
                self.job.0
            )));
        }
        Ok(())
    }
}

/// The state of one job generation as its site reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    /// Flink's own restart strategy is at work (or pods are waiting for their node).
    Restarting,
    /// Flink gave up, or the JobManager is gone: only a relaunch helps.
    Failed,
    Finished,
    Unknown,
}

/// A completed checkpoint (or savepoint): `path` is the directory holding `_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub id: u64,
    pub path: String,
    pub completed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobObservation {
    pub job: JobId,
    pub generation: u64,
    pub state: JobState,
    /// Distinct nodes the job's pods run (or are pinned) on, sorted.
    pub nodes: Vec<String>,
    /// Restarts observed since this generation was launched.
    pub restarts: u32,
    /// The newest complete checkpoint (or savepoint) of this generation, from the site's
    /// storage; `None` before the first one (or when a Kubernetes site has no storage
    /// configured).
    pub latest_completed_checkpoint: Option<CheckpointRef>,
    /// The site epoch the launch carried (`LaunchSpec::epoch`, label `twinsite.io/epoch`);
    /// `None` when the launch predates epoch labels. Read by the site's agent (epoch
    /// admission).
    #[serde(default)]
    pub epoch: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteHealth {
    pub site: SiteId,
    pub api_reachable: bool,
    pub last_contact: Option<DateTime<Utc>>,
    /// Why the API is unreachable, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Site failures, split by whether retrying the same call later may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("site {site}: API unreachable: {reason}")]
    Unreachable { site: SiteId, reason: String },
    #[error("site {site}: {operation} timed out after {after:?}")]
    Timeout {
        site: SiteId,
        operation: String,
        after: Duration,
    },
    /// Storage (the site's HDFS) failed; usually transient.
    #[error("site {site}: storage error at {path}: {reason}")]
    Storage {
        site: SiteId,
        path: String,
        reason: String,
    },
    /// An older generation is being deleted; launch again once it is gone.
    #[error(
        "site {site}: job {job} generation {generation} is still terminating; retry the launch later"
    )]
    StillTerminating {
        site: SiteId,
        job: JobId,
        generation: u64,
    },
    #[error("site {site}: invalid {object}: {reason}")]
    Invalid {
        site: SiteId,
        object: String,
        reason: String,
    },
    #[error("site {site}: conflict on {object}: {reason}")]
    Conflict {
        site: SiteId,
        object: String,
        reason: String,
    },
    /// The "never two generations" invariant, enforced by the site itself.
    #[error(
        "site {site}: job {job} generation {running} still runs; stop it before launching generation {requested}"
    )]
    GenerationConflict {
        site: SiteId,
        job: JobId,
        running: u64,
        requested: u64,
    },
    /// A generation at or below one already stopped here: a late or replayed launch.
    #[error(
        "site {site}: job {job} generation {requested} is stale: generation {stopped} was already stopped here"
    )]
    StaleGeneration {
        site: SiteId,
        job: JobId,
        requested: u64,
        stopped: u64,
    },
    #[error("site {site}: job {job} generation {generation} is not running")]
    NotRunning {
        site: SiteId,
        job: JobId,
        generation: u64,
    },
    #[error("site {site}: {operation} is not supported: {reason}")]
    Unsupported {
        site: SiteId,
        operation: String,
        reason: String,
    },
}

impl SiteError {
    /// True when the same call may succeed later without anyone changing the request.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SiteError::Unreachable { .. }
                | SiteError::Timeout { .. }
                | SiteError::Storage { .. }
                | SiteError::StillTerminating { .. }
        )
    }

    /// Short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SiteError::Unreachable { .. } => "unreachable",
            SiteError::Timeout { .. } => "timeout",
            SiteError::Storage { .. } => "storage",
            SiteError::StillTerminating { .. } => "still_terminating",
            SiteError::Invalid { .. } => "invalid",
            SiteError::Conflict { .. } => "conflict",
            SiteError::GenerationConflict { .. } => "generation_conflict",
            SiteError::StaleGeneration { .. } => "stale_generation",
            SiteError::NotRunning { .. } => "not_running",
            SiteError::Unsupported { .. } => "unsupported",
        }
    }
}

/// Flink job id (32 hex digits) of one generation of a job: derived, so checkpoint paths are
/// predictable, and distinct per generation, so a relaunch never writes into its
/// predecessor's checkpoint directory.
pub fn flink_job_id(job: &JobId, generation: u64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{job}#{generation}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a job's savepoints go: the `savepoints` directory beside its checkpoints (the
/// controller's stop-with-savepoint and the Flink configuration a site writes agree on it).
pub fn savepoints_under(checkpoint_dir: &str) -> String {
    format!("{}/savepoints", checkpoint_dir.trim_end_matches('/'))
}

/// The local path a storage URI names in a site whose storage is the directory `root`
/// (simulated and local-Flink sites): `hdfs://any/x` and `/x` map to `<root>/x`, and a
/// `file:///…` or `file:/…` URI already inside `root` names itself. `Err` (the reason) for a
/// path with `..`, so nothing escapes the root.
pub fn resolve_in_root(root: &std::path::Path, uri: &str) -> Result<std::path::PathBuf, String> {
    use std::path::{Component, Path};
    let path = match uri.split_once("://") {
        // `hdfs://authority/path`: drop the authority (may be empty, as in `hdfs:///x`).
        Some((_scheme, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
        // `file:/x`, as Flink (java.net.URI) prints local paths.
        None => match uri.split_once(':') {
            Some((scheme, path))
                if path.starts_with('/')
                    && !scheme.is_empty()
                    && scheme.chars().all(|c| c.is_ascii_alphabetic()) =>
            {
                path
            }
            _ => uri,
        },
    };
    let path = Path::new(path);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("contains `..`".into());
    }
    let absolute = Path::new("/").join(path);
    if absolute.starts_with(root) {
        return Ok(absolute);
    }
    let relative: std::path::PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    Ok(root.join(relative))
}

/// Which way a Kubernetes site launches Flink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LaunchMode {
    /// A `FlinkDeployment` for the Apache Flink Kubernetes Operator.
    FlinkDeployment,
    /// JobManager and TaskManager Deployments plus a Service, as the reference platforms run.
    Standalone,
}

impl fmt::Display for LaunchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LaunchMode::FlinkDeployment => "flink-deployment",
            LaunchMode::Standalone => "standalone",
        })
    }
}
