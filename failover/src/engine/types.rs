//! The engine's vocabulary: configuration, durable records, events in and commands out.
//! Data only, no decision; the records' serialised form must never change without a migration.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use scheduler::model::{JobId, JobPlacement, Resources, SiteId};
use serde::{Deserialize, Serialize};

use crate::health::{DEFAULT_NODE_GRACE, SiteThresholds};
use crate::operation::{FailoverPlan, MoveMode, Operation};
use crate::types::{
    CheckpointPointer, JobSpec, RelaunchReason, RestorePointKind, SiteObservation, Timestamp,
    elapsed,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// The sites, in the order used to pick a survivor.
    pub sites: Vec<SiteId>,
    pub node_grace: Duration,
    pub site: SiteThresholds,
    /// How long Flink gets to recover from lost TaskManager nodes before the engine relaunches.
    pub task_manager_recovery_bound: Duration,
    /// Restarts of one generation that count as a crash loop.
    pub crash_loop_restarts: u32,
    /// Failed relaunches in the job's site before the next one goes to the other site.
    pub relaunches_before_other_site: u32,
    /// Jobs of one *planned* operation moving at once (each stops its job with a savepoint:
    /// this bounds how many are stopped at a time). Forced moves and site losses are paced
    /// by `launch_rate` alone: their jobs are down already, waiting on answers only delays
    /// them.
    pub max_in_flight: usize,
    /// Moves one operation starts per second after its first `launch_burst`, critical
    /// first: a site loss of N jobs has started all of them `(N - burst) / rate` seconds
    /// after it was judged, whatever the targets answer in the meantime.
    #[serde(default = "default_launch_rate")]
    pub launch_rate: u32,
    /// Moves an operation starts at once, before the rate applies.
    #[serde(default = "default_launch_burst")]
    pub launch_burst: u32,
    /// A fence not confirmed after this long is issued again.
    pub fence_retry: Duration,
    /// Launches of one job within one operation before it is given up.
    pub max_launches_per_move: u32,
    /// Start a failback on its own once a lost site is healthy again. Off unless policy says.
    pub auto_failback: bool,
    /// A job that runs nowhere is tried again this often (and at once when a site recovers):
    /// room may have been freed, a checkpoint replicated, a site become healthy.
    pub down_retry: Duration,
}

/// 1000 jobs of a lost site started 4 s after the judgement: within 45 s of the last
/// heartbeat at the default 30 s site grace, leaving a 5 s reconcile interval and a slow
/// pass room.
pub const DEFAULT_LAUNCH_RATE: u32 = 200;
pub const DEFAULT_LAUNCH_BURST: u32 = 200;

/// The first wait before a job whose launch was refused is tried again; each further
/// refusal in a row doubles it, up to `down_retry`.
pub const FIRST_LAUNCH_RETRY: Duration = Duration::from_secs(1);

fn default_launch_rate() -> u32 {
    DEFAULT_LAUNCH_RATE
}

fn default_launch_burst() -> u32 {
    DEFAULT_LAUNCH_BURST
}

impl EngineConfig {
    /// Moves an operation requested at `requested_at` may have started by `now`.
    pub fn launch_allowance(&self, requested_at: Timestamp, now: Timestamp) -> usize {
        let paced = f64::from(self.launch_rate) * elapsed(requested_at, now).as_secs_f64();
        // `as` saturates; an allowance beyond usize is no limit at all.
        (self.launch_burst as usize).saturating_add(paced as usize)
    }

    /// When an operation requested at `requested_at` that has started `started` moves may
    /// start the next one; `None` at a rate of zero (only the burst ever starts).
    pub fn next_launch_at(&self, requested_at: Timestamp, started: usize) -> Option<Timestamp> {
        let beyond_burst = (started + 1).saturating_sub(self.launch_burst as usize);
        if beyond_burst == 0 {
            return Some(requested_at);
        }
        if self.launch_rate == 0 {
            return None;
        }
        let secs = beyond_burst as f64 / f64::from(self.launch_rate);
        let after = Duration::try_from_secs_f64(secs).ok()?;
        requested_at.checked_add_signed(chrono::TimeDelta::from_std(after).ok()?)
    }

    pub fn new(sites: Vec<SiteId>) -> Self {
        EngineConfig {
            sites,
            node_grace: DEFAULT_NODE_GRACE,
            site: SiteThresholds::default(),
            task_manager_recovery_bound: Duration::from_secs(180),
            crash_loop_restarts: 10,
            relaunches_before_other_site: 3,
            max_in_flight: 16,
            launch_rate: DEFAULT_LAUNCH_RATE,
            launch_burst: DEFAULT_LAUNCH_BURST,
            fence_retry: Duration::from_secs(15),
            max_launches_per_move: 3,
            auto_failback: false,
            down_retry: Duration::from_secs(30),
        }
    }
}

/// What the engine believes about one job's run-time state (the controller's status phase
/// is `controller::JobPhase`, another thing). Serialised as `phase: running | fencing | …`;
/// the Rust name is not part of the stored form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum FailoverPhase {
    Running,
    /// The current generation is being fenced; once confirmed, relaunch in `target`.
    Fencing {
        reason: RelaunchReason,
        target: SiteId,
        detected_at: Timestamp,
        last_heartbeat: Option<Timestamp>,
    },
    /// `Relaunch` of the current generation issued.
    Launching {
        since: Timestamp,
        placement: JobPlacement,
        restore_from: Option<CheckpointPointer>,
    },
    /// An operation owns the job until it finishes moving it.
    InOperation {
        op: u64,
    },
    /// Not running anywhere; `reason` says why.
    Down {
        reason: String,
    },
}

/// A generation that must be stopped and deleted, but whose stop is not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StaleGeneration {
    pub site: SiteId,
    pub generation: u64,
}

/// What the engine keeps about one job it tracks (`Record::Job`): generation, site, phase,
/// checkpoint lineage. Not the store's `JobRecord` (the StreamJob, its placement and status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedJob {
    pub spec: JobSpec,
    /// The latest generation issued; the only one allowed to run.
    pub generation: u64,
    pub site: SiteId,
    pub phase: FailoverPhase,
    /// Latest complete checkpoint of the live lineage, per site where it was written.
    pub latest_complete: BTreeMap<SiteId, CheckpointPointer>,
    /// Latest checkpoint fully replicated to (readable in) each site.
    pub latest_replicated: BTreeMap<SiteId, CheckpointPointer>,
    /// Relaunches for failure in the current site since the last checkpoint (progress).
    pub failures_in_site: u32,
    pub stale: BTreeSet<StaleGeneration>,
    /// When lost TaskManager nodes were first seen with a healthy JobManager.
    pub task_managers_lost_since: Option<Timestamp>,
    /// The epoch of its site when the current generation was issued or adopted. Once the
    /// site's epoch is higher (the site was judged lost since), that generation may never
    /// run again (epoch admission) and the job must get a new one. `None` in records
    /// written before it existed.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Launches refused in a row (outside operations; zero once one runs): the back-off of
    /// its next try (`launch_retry_delay`), kept across leader changes so that a new
    /// leader does not start it again from its first step.
    #[serde(default)]
    pub launches_refused: u32,
}

impl TrackedJob {
    pub fn id(&self) -> &JobId {
        &self.spec.demand.id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum SiteStatus {
    Up,
    Lost {
        since: Timestamp,
        detected_at: Timestamp,
    },
    /// Reachable again after a loss; nothing but fences runs there until it is clean.
    Returning,
}

/// What the engine keeps about one site (`Record::Site`): epoch, status, silent nodes. Not the
/// store's `SiteRecord` (the state the agents read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedSite {
    pub id: SiteId,
    pub epoch: u64,
    pub status: SiteStatus,
    /// Nodes not heard at the last observation, with when they last were: a new leader
    /// keeps counting their silence from there instead of granting them a fresh grace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub silent_nodes: BTreeMap<String, Timestamp>,
}

/// One unit of durable state, written by `Command::Persist`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "record")]
pub enum Record {
    Job(Box<TrackedJob>),
    Site(TrackedSite),
    Operation(Box<Operation>),
}

impl Record {
    /// The name a store keeps this record under: `job.<namespace>.<name>`, `site.<id>`,
    /// `op.<id, 12 digits>` (sorted by id).
    pub fn key(&self) -> String {
        match self {
            Record::Job(j) => Record::job_key(j.id()),
            Record::Site(s) => format!("site.{}", s.id),
            Record::Operation(o) => format!("op.{:012}", o.id),
        }
    }

    /// The key of a job's record. Namespaces are DNS labels (no dots), so the first dot
    /// after `job.` splits them off.
    pub fn job_key(job: &JobId) -> String {
        format!("job.{}", job.0.replacen('/', ".", 1))
    }
}

/// A line the engine asks to be audited (`Command::Audit`); the controller stores it as the
/// store's `AuditEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverAudit {
    pub at: Timestamp,
    pub op: Option<u64>,
    pub job: Option<JobId>,
    pub site: Option<SiteId>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    pub job: JobId,
    pub generation: u64,
    pub site: SiteId,
    pub reason: RelaunchReason,
    pub op: Option<u64>,
    pub restore_from: Option<CheckpointPointer>,
    /// From the moment the engine judged the failure to the relaunch command.
    pub rto_from_detection: Duration,
    /// From the last sign of life (heartbeat) to the relaunch command, when known.
    pub rto_from_last_heartbeat: Option<Duration>,
    /// Data lost: from the restored checkpoint to the failure (the last sign of life of the
    /// node, site or job; for a forced move of a reachable source, the relaunch, since the
    /// source ran until it was fenced). Zero for a stop-with-savepoint; `None` when the job
    /// started without state. The time from the failure to the relaunch is not data lost
    /// (the job resumes from the same checkpoint whenever it restarts): it is
    /// `rto_from_last_heartbeat`, the relaunch delay.
    pub rpo: Option<Duration>,
}

/// What a relaunch from `restore` loses when the job failed at `failed_at`: everything after
/// the checkpoint up to the failure. Nothing for a savepoint (the source stopped there).
pub(super) fn rpo_at(
    restore: Option<&CheckpointPointer>,
    failed_at: Timestamp,
) -> Option<Duration> {
    restore.map(|c| match c.kind {
        RestorePointKind::Savepoint => Duration::ZERO,
        RestorePointKind::Checkpoint => elapsed(c.completed_at, failed_at),
    })
}

/// Ops requests. `dry_run` returns the plan and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "request")]
pub enum OpsRequest {
    Failover {
        from: SiteId,
        to: SiteId,
        mode: MoveMode,
        dry_run: bool,
    },
    /// Jobs whose preferred site is `to` and that run in `from` go home.
    Failback {
        from: SiteId,
        to: SiteId,
        mode: MoveMode,
        dry_run: bool,
    },
    Cancel {
        op: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RequestError {
    #[error("site {site} is not one of the configured sites")]
    UnknownSite { site: SiteId },
    #[error("failover from site {site} to itself")]
    SameSite { site: SiteId },
    #[error("target site {site} is not healthy (status {status})")]
    TargetNotHealthy { site: SiteId, status: String },
    #[error("planned mode needs the source site {site} reachable; use forced")]
    SourceUnreachable { site: SiteId },
    #[error("operation {op} does not exist")]
    UnknownOperation { op: u64 },
    #[error("operation {op} already finished")]
    OperationFinished { op: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    /// Adopts a job (or updates its spec) already running as `generation` in `site`.
    JobRegistered {
        spec: Box<JobSpec>,
        site: SiteId,
        generation: u64,
    },
    SnapshotObserved(SiteObservation),
    /// Another observer (the peer site, the witness) heard from `site` at `last_contact`.
    PeerReport {
        site: SiteId,
        last_contact: Timestamp,
    },
    CheckpointCompleted {
        job: JobId,
        checkpoint: CheckpointPointer,
    },
    /// `replica.site` is the site the checkpoint is now fully readable in.
    CheckpointReplicated {
        job: JobId,
        replica: CheckpointPointer,
    },
    LaunchSucceeded {
        job: JobId,
        generation: u64,
        site: SiteId,
    },
    LaunchFailed {
        job: JobId,
        generation: u64,
        site: SiteId,
        reason: String,
    },
    Fenced {
        job: JobId,
        generation: u64,
        site: SiteId,
    },
    SavepointCompleted {
        op: u64,
        job: JobId,
        savepoint: CheckpointPointer,
    },
    SavepointFailed {
        op: u64,
        job: JobId,
        reason: String,
    },
    /// The savepoint of `job` is readable at the target as `replica`.
    ReplicationCompleted {
        op: u64,
        job: JobId,
        replica: CheckpointPointer,
    },
    OpsRequest(OpsRequest),
    QuorumChanged(bool),
    /// Every job the state store holds: the engine registers the placed jobs it does not
    /// know, knows at an older generation (a relaunch by the controller: adopted, the old
    /// one fenced) or with another spec, and forgets the ones no longer stored.
    JobsStored(Vec<crate::types::StoredJob>),
    /// The job was deleted: the engine forgets it (answer: `Forget`). Generations still
    /// running are the driver's to stop, as for any deleted job.
    JobRemoved {
        job: JobId,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "command")]
pub enum Command {
    /// Write this record durably before executing any later command.
    Persist(Record),
    Audit(FailoverAudit),
    Relaunch {
        job: JobId,
        generation: u64,
        site: SiteId,
        placement: JobPlacement,
        /// `None`: start without state (only for `FreshStartAllowed` jobs).
        restore_from: Option<CheckpointPointer>,
        reason: RelaunchReason,
    },
    /// Stop and delete `generation` of `job` in `site`; never restart it. Answer: `Fenced`.
    Fence {
        job: JobId,
        generation: u64,
        site: SiteId,
    },
    /// Stop-with-savepoint. Answer: `SavepointCompleted`/`SavepointFailed`.
    TriggerSavepoint {
        op: u64,
        job: JobId,
        generation: u64,
        site: SiteId,
    },
    /// Copy the savepoint to `to`. Answer: `ReplicationCompleted`.
    ReplicateSavepoint {
        op: u64,
        job: JobId,
        savepoint: CheckpointPointer,
        to: SiteId,
    },
    MarkSiteLost {
        site: SiteId,
        epoch: u64,
    },
    MarkSiteRecovered {
        site: SiteId,
        epoch: u64,
    },
    ReportRecovery(RecoveryReport),
    ReportNotRelaunched {
        job: JobId,
        reason: String,
        missing: Resources,
    },
    ReportPlan(FailoverPlan),
    /// Delete the job's durable record (it was removed).
    Forget {
        job: JobId,
    },
    Rejected {
        request: OpsRequest,
        error: RequestError,
    },
    /// The request started operation `op` (a failover, a failback), or is cancelling it.
    Accepted {
        request: OpsRequest,
        op: u64,
    },
}
