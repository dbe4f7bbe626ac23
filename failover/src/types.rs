//! The vocabulary the engine shares with its driver: time, checkpoint pointers, job specs,
//! site observations, and the placer seam through which the scheduler plans relaunches.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use scheduler::model::{JobDemand, JobId, JobPlacement, Resources, SiteId};
use serde::{Deserialize, Serialize};

/// Wall-clock instants arrive as values (the engine never reads a clock).
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Time from `from` to `to`; zero when `to` is not after `from` (clocks of two sites may
/// disagree slightly, and a negative age must never read as "very old").
pub fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

/// Whether a job may start from empty state when no usable checkpoint exists at the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverMode {
    /// Only ever restore from a checkpoint or savepoint; without one the job stays down and
    /// is reported (the default: silently dropping state is worse than a visible outage).
    #[default]
    RestoreRequired,
    /// Start without state when nothing usable was replicated (stateless or replayable jobs).
    FreshStartAllowed,
}

/// Who may move a job to the other site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteMoves {
    /// The engine moves it on its own: after a site loss, after repeated failures in its
    /// site, and back home when policy allows automatic failback.
    #[default]
    Automatic,
    /// Only an operator's failover or failback moves it (`failover.mode: manual`); on its
    /// own the engine relaunches it in its current site only.
    OperatorOnly,
}

/// What the engine needs to know about one job besides its run-time record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub demand: JobDemand,
    pub mode: FailoverMode,
    /// Absent in records written before it existed: those jobs moved automatically.
    #[serde(default)]
    pub site_moves: SiteMoves,
    /// Sites the job's jar is not verified in, with the reason: never a target of a move or
    /// relaunch until it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jar_missing: BTreeMap<SiteId, String>,
}

/// What a restore point is: a periodic checkpoint or a stop-with-savepoint. Not the store's
/// `CheckpointKind` (which pointer of a job: completed or replicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestorePointKind {
    Checkpoint,
    Savepoint,
}

/// A complete checkpoint or savepoint readable in `site`: `path` is the directory holding
/// `_metadata`. `generation` is the job generation that wrote it, so a zombie generation's
/// late checkpoints can be told apart from the live lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    pub site: SiteId,
    pub generation: u64,
    pub id: u64,
    pub path: String,
    pub completed_at: Timestamp,
    pub kind: RestorePointKind,
}

/// Flink's view of one job generation, as the site reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    /// Flink's restart strategy is at work, or pods wait for a node.
    Restarting,
    /// Terminal: Flink gave up. Only a relaunch helps.
    Failed,
    Finished,
    Unknown,
}

/// One generation of one job seen in a site snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobObserved {
    pub job: JobId,
    pub generation: u64,
    pub state: RunState,
    /// Restarts since this generation was launched.
    pub restarts: u32,
    pub job_manager_node: Option<String>,
    pub task_manager_nodes: Vec<String>,
    /// The newest checkpoint this generation completed, as the site reports it (its
    /// storage, or Flink's status). The engine decides whether it is new.
    #[serde(default)]
    pub latest_checkpoint: Option<ObservedCheckpoint>,
}

/// A completed checkpoint as a site reports it for one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedCheckpoint {
    pub id: u64,
    /// The directory holding `_metadata`.
    pub path: String,
    pub completed_at: Timestamp,
}

/// A node as one observation saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub name: String,
    /// Its last heartbeat when the site reports one (kubelet lease renewal, Ready
    /// condition's heartbeat time); the observation's instant for a node seen Ready
    /// without one; `None` for a node seen not Ready without one. The engine remembers
    /// (and persists) the last time each node was heard, so `None` keeps counting its
    /// silence from then, across a change of leader.
    pub last_heartbeat: Option<Timestamp>,
}

/// A job as the state store holds it, for the engine to tell which jobs are new, changed
/// or gone (`Event::JobsStored`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredJob {
    pub id: JobId,
    /// `None`: stored but not placed, or not the failover engine's to manage
    /// (`failover.mode: none`, a spec it cannot read). Such a job is not forgotten.
    pub placed: Option<PlacedJob>,
}

/// A placed job: its spec and where its current generation was launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedJob {
    pub spec: JobSpec,
    pub site: SiteId,
    pub generation: u64,
}

/// Everything the driver read from one site's API at `observed_at`. Only sent when the API
/// answered: its arrival is itself the proof of contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteObservation {
    pub site: SiteId,
    pub observed_at: Timestamp,
    pub nodes: Vec<NodeHeartbeat>,
    pub jobs: Vec<JobObserved>,
}

/// Why a job got a new generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum RelaunchReason {
    /// The node running the JobManager stopped heart-beating past the node grace.
    JobManagerNodeLost { node: String },
    /// TaskManager nodes were lost and Flink had not recovered within the bound.
    TaskManagersNotRecovered { nodes: Vec<String> },
    /// Flink reported the generation terminally failed, or it restarted too often.
    JobFailed { restarts: u32 },
    /// The previous launch failed.
    LaunchFailed { reason: String },
    /// The job's site was lost; relaunched in the survivor.
    SiteLost { site: SiteId, epoch: u64 },
    /// Moved by an ops-requested (or policy-automatic) operation.
    Operation { op: u64 },
    /// Its site came back after a loss during which the job could not be placed elsewhere.
    SiteReturned { site: SiteId },
    /// It ran nowhere (`was_down` says why) until a site that may host it had room again.
    Revived { was_down: String },
}

impl RelaunchReason {
    /// Whether the relaunch follows a failure of the job in its site (counted against it, and
    /// reset by its next checkpoint) rather than a move or a return.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            RelaunchReason::JobManagerNodeLost { .. }
                | RelaunchReason::TaskManagersNotRecovered { .. }
                | RelaunchReason::JobFailed { .. }
                | RelaunchReason::LaunchFailed { .. }
        )
    }
}

impl fmt::Display for RelaunchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelaunchReason::JobManagerNodeLost { node } => write!(f, "JobManager node {node} lost"),
            RelaunchReason::TaskManagersNotRecovered { nodes } => {
                write!(
                    f,
                    "TaskManager nodes {} lost and not recovered",
                    nodes.join(",")
                )
            }
            RelaunchReason::JobFailed { restarts } => {
                write!(f, "job failed (restarts {restarts})")
            }
            RelaunchReason::LaunchFailed { reason } => write!(f, "launch failed: {reason}"),
            RelaunchReason::SiteLost { site, epoch } => {
                write!(f, "site {site} lost (epoch {epoch})")
            }
            RelaunchReason::Operation { op } => write!(f, "operation {op}"),
            RelaunchReason::SiteReturned { site } => write!(f, "site {site} returned"),
            RelaunchReason::Revived { was_down } => write!(f, "runs again (was down: {was_down})"),
        }
    }
}

/// A job the placer could not fit, with a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotFitting {
    pub job: JobId,
    pub reason: String,
    /// Capacity that would have to be freed or added; zero when capacity is not the reason.
    pub missing: Resources,
}

/// What the placer answers for one site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementOutcome {
    pub placed: Vec<JobPlacement>,
    pub not_fitting: Vec<NotFitting>,
    /// Jobs already running in the site that must stop to make room (best-effort ones).
    pub preempt: Vec<JobId>,
}

/// The seam to the scheduler. The driver implements it over its latest snapshot (and the
/// scheduler's planner), simulations over their fake world. Must be deterministic for equal
/// inputs and must not change anything: the engine decides what happens with the answer.
pub trait Placer {
    /// Places `jobs` (already in priority order) into `site`, keeping off `avoid_nodes`.
    fn place(
        &self,
        site: &SiteId,
        jobs: &[JobDemand],
        avoid_nodes: &BTreeSet<String>,
    ) -> PlacementOutcome;
}
