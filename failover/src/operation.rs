//! Failover operations as persisted state machines: one `Operation` per site loss, planned
//! switchover, forced failover or failback, with a `MoveStep` per job. Serde-serialisable so a
//! new leader resumes an operation exactly where the old one stopped.

use std::time::Duration;

use scheduler::model::{JobId, JobPlacement, SiteId};
use serde::{Deserialize, Serialize};

use crate::types::{CheckpointPointer, NotFitting, Timestamp};

/// How jobs move between sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveMode {
    /// Stop-with-savepoint at the source, replicate the savepoint, launch from it: RPO 0.
    Planned,
    /// Fence at the source (when reachable) and launch from the latest checkpoint already
    /// replicated to the target.
    Forced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum OpKind {
    /// Started by the engine itself when it judged `from` lost.
    SiteLoss { epoch: u64 },
    /// Requested by ops.
    Failover,
    /// Requested by ops (or by policy once the site is healthy again): jobs go home.
    Failback,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum OpState {
    Running,
    /// Cancel requested: no job starts moving any more; jobs past their point of no return
    /// finish moving.
    Cancelling,
    Done,
    Cancelled,
}

/// Where one job of an operation stands. In-flight steps are re-issued on resume; each issues
/// its command idempotently (same generation, same savepoint target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum MoveStep {
    /// Not started; the job still runs at the source.
    Pending,
    /// Planned mode: stop-with-savepoint issued at the source.
    Savepointing,
    /// Waiting for `generation` in `site` to be confirmed stopped and deleted.
    Fencing { generation: u64, site: SiteId },
    /// Planned mode: the savepoint is being copied to the target.
    Replicating,
    /// `Relaunch` of `generation` issued in `site`.
    Launching {
        generation: u64,
        site: SiteId,
        restore_from: Option<CheckpointPointer>,
    },
    /// Running as `generation` in `site`.
    Done { generation: u64, site: SiteId },
    /// Cancelled before it started: still running, untouched, at the source.
    Left { reason: String },
    /// Could not be moved; `running` says whether the job still runs somewhere.
    Failed { reason: String, running: bool },
}

impl MoveStep {
    pub fn is_in_flight(&self) -> bool {
        matches!(
            self,
            MoveStep::Savepointing
                | MoveStep::Fencing { .. }
                | MoveStep::Replicating
                | MoveStep::Launching { .. }
        )
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            MoveStep::Done { .. } | MoveStep::Left { .. } | MoveStep::Failed { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpJob {
    pub job: JobId,
    /// The generation running at the source when the operation was planned.
    pub from_generation: u64,
    pub placement: JobPlacement,
    pub step: MoveStep,
    /// Planned mode: the savepoint taken at the source, then its copy at the target.
    pub savepoint_at_source: Option<CheckpointPointer>,
    pub savepoint_at_target: Option<CheckpointPointer>,
    /// Launches issued for this job so far (a failed launch is fenced and retried).
    pub launches: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: u64,
    pub kind: OpKind,
    pub mode: MoveMode,
    pub from: SiteId,
    pub to: SiteId,
    pub requested_at: Timestamp,
    /// Start of the outage for RTO: the site's last sign of life (site loss) or the request.
    pub last_sign_of_life: Option<Timestamp>,
    pub max_in_flight: usize,
    pub state: OpState,
    /// Priority order (highest first, then job id): the order jobs start moving.
    pub jobs: Vec<OpJob>,
    pub not_fitting: Vec<NotFitting>,
}

/// Counts for a progress bar or the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub total: usize,
    pub pending: usize,
    pub in_flight: usize,
    pub done: usize,
    pub left: usize,
    pub failed: usize,
    pub not_fitting: usize,
}

impl Operation {
    pub fn in_flight(&self) -> usize {
        self.jobs.iter().filter(|j| j.step.is_in_flight()).count()
    }

    /// Moves started (in flight or finished), for pacing; a job left where it was never
    /// started.
    pub fn started(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| !matches!(j.step, MoveStep::Pending | MoveStep::Left { .. }))
            .count()
    }

    /// Whether pending jobs wait for their turn (not for a cancel or an unreachable target).
    pub fn has_pending(&self) -> bool {
        self.state == OpState::Running && self.jobs.iter().any(|j| j.step == MoveStep::Pending)
    }

    pub fn is_active(&self) -> bool {
        matches!(self.state, OpState::Running | OpState::Cancelling)
    }

    pub fn progress(&self) -> Progress {
        let mut p = Progress {
            total: self.jobs.len() + self.not_fitting.len(),
            not_fitting: self.not_fitting.len(),
            ..Progress::default()
        };
        for j in &self.jobs {
            match j.step {
                MoveStep::Pending => p.pending += 1,
                MoveStep::Done { .. } => p.done += 1,
                MoveStep::Left { .. } => p.left += 1,
                MoveStep::Failed { .. } => p.failed += 1,
                _ => p.in_flight += 1,
            }
        }
        p
    }

    pub fn job_mut(&mut self, job: &JobId) -> Option<&mut OpJob> {
        self.jobs.iter_mut().find(|j| &j.job == job)
    }
}

/// One job's planned move, as a dry run reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    pub job: JobId,
    pub from: SiteId,
    pub to: SiteId,
    pub placement: JobPlacement,
    /// Planned mode: zero. Forced: age of the checkpoint it would restore from, `None` when it
    /// would start without state.
    pub expected_rpo: Option<Duration>,
    /// Forced mode: the checkpoint it would restore from today. Planned: `None` (a savepoint
    /// taken at the time of the move).
    pub restore_from: Option<CheckpointPointer>,
}

/// What an operation would do, without doing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverPlan {
    pub from: SiteId,
    pub to: SiteId,
    pub mode: MoveMode,
    pub moves: Vec<PlannedMove>,
    pub not_fitting: Vec<NotFitting>,
    /// Jobs running at the target that would be stopped to make room.
    pub preempt: Vec<JobId>,
}
