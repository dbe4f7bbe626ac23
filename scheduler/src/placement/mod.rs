//! Gang placement of jobs into sites and onto nodes: a fast heuristic, and a MILP that
//! improves it under a time budget.
//!
//! `plan` is pure: snapshot, jobs, policy, the current placement and an instant in, a
//! [`PlacementPlan`] out. The heuristic (`heuristic`) always runs; the MILP (`milp`) works on
//! aggregated node pools and is kept only when its result, packed back onto nodes by the
//! heuristic's packer, is valid and strictly better. [`validate_plan`] checks any plan against
//! the hard rules independently of how it was made.

mod compat;
mod diagnose;
mod heuristic;
#[cfg(feature = "milp")]
mod milp;
pub mod rebalance;
mod state;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_PODS_PER_JOB, MAX_TASK_MANAGERS_PER_JOB};
use crate::model::{
    JobDemand, JobId, JobPlacement, PlacementPolicy, PodPlacement, PodRole, Priority, Resources,
    SiteId, SiteSnapshot,
};

pub use heuristic::IncrementalPlacer;
pub use validate::{Violation, ViolationKind, validate_plan};

/// Everything one placement round needs. `running` is the placement of our jobs as it is
/// now (empty for a fresh plan); `at` decides which offline lending windows are open.
#[derive(Debug, Clone, Copy)]
pub struct PlacementRequest<'a> {
    pub sites: &'a [SiteSnapshot],
    pub jobs: &'a [JobDemand],
    pub policy: &'a PlacementPolicy,
    pub running: &'a [JobPlacement],
    pub at: chrono::DateTime<chrono::Utc>,
    pub options: PlacementOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlacementOptions {
    pub solver: SolverChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SolverChoice {
    #[default]
    Heuristic,
    /// Run the heuristic, then try to improve it with HiGHS within `budget` (wall time
    /// measured by HiGHS itself). Only with the crate's `milp` feature.
    #[cfg(feature = "milp")]
    Milp { budget: std::time::Duration },
}

/// The answer of one placement round. Serialises to the CLI's JSON; the `placements` part is
/// what `--running` reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementPlan {
    /// Sorted by job.
    pub placements: Vec<JobPlacement>,
    /// Sorted by job.
    pub unplaced: Vec<Unplaced>,
    pub preemptions: Vec<Preemption>,
    pub moves: Vec<Move>,
    /// Per reserving site.
    pub reserve: BTreeMap<SiteId, ReserveReport>,
    pub solver: SolverReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    pub job: JobId,
    pub reason: String,
}

/// `by` needed room in `site`, so the best-effort `victim` lost its pods on `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preemption {
    pub victim: JobId,
    pub by: JobId,
    pub site: SiteId,
    pub nodes: Vec<String>,
}

/// A running job (or some of its pods) that has to go elsewhere, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub job: JobId,
    pub reason: String,
    /// The pods that leave, where they are now.
    pub from: MoveEnd,
    /// Where they go; `None` when the job could not be placed again (see `unplaced`).
    pub to: Option<MoveEnd>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveEnd {
    pub site: SiteId,
    pub pods: Vec<PodPlacement>,
}

/// Whether `site` could absorb the protected jobs of the sites it backs up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReserveReport {
    pub protects: Vec<ReserveScope>,
    pub holds: bool,
    /// Total request of the protected jobs.
    pub needed: Resources,
    /// Total request of the protected jobs that would not fit (to free or add, before
    /// fragmentation).
    pub missing: Resources,
    pub jobs_not_fitting: Vec<JobId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveScope {
    pub site: SiteId,
    pub min_priority: Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SolverKind {
    Heuristic,
    Milp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolverReport {
    /// Which solver produced `placements`.
    pub solver: SolverKind,
    /// Priority-weighted placed demand minus migration cost (see `objective_of`).
    pub objective: f64,
    /// An upper bound on any plan's objective, when known (all demand placed, or the MILP's
    /// dual bound on its relaxation).
    pub bound: Option<f64>,
    /// `optimal`, `heuristic`, `time-limit`, `not-improved`, `milp-failed: ...`.
    pub status: String,
}

/// Weight of one unit of demand of a tier in the objective: each tier outweighs the next by
/// 10×, enough that the solver never trades a job for a same-sized one of a lower tier.
pub fn priority_weight(priority: Priority) -> f64 {
    match priority {
        Priority::Critical => 1000.0,
        Priority::High => 100.0,
        Priority::Normal => 10.0,
        Priority::BestEffort => 1.0,
    }
}

/// Size of a job in the objective: cores plus GiB/4 (one core per 4 GiB, the usual node
/// ratio), so CPU-heavy and memory-heavy jobs weigh comparably.
pub fn demand_units(job: &JobDemand) -> f64 {
    let total = job.total();
    total.cpu_milli as f64 / 1000.0 + total.memory_bytes as f64 / (4.0 * GIB)
}

/// Why placement refuses `job` outright, if it does: more TaskManagers than
/// [`MAX_TASK_MANAGERS_PER_JOB`]. Admission refuses such jobs already; this is the second
/// line, so that nothing here allocates or loops in proportion to an unchecked count.
pub fn refusal(job: &JobDemand) -> Option<String> {
    (job.task_managers > MAX_TASK_MANAGERS_PER_JOB).then(|| {
        format!(
            "1 JobManager + {} TaskManagers is more than the {MAX_PODS_PER_JOB} pods twinsite places for one job",
            job.task_managers
        )
    })
}

/// Whether the sorted `shape` is exactly one JobManager (index 0) and TaskManagers
/// `0..task_managers`, checked without building that list.
pub(crate) fn is_whole_gang(shape: &[(PodRole, u32)], task_managers: u32) -> bool {
    shape.len() == task_managers as usize + 1
        && shape.first() == Some(&(PodRole::Jobmanager, 0))
        && shape[1..]
            .iter()
            .zip(0..)
            .all(|(&pod, index)| pod == (PodRole::Taskmanager, index))
}

/// A forced move costs this fraction of the moved job's weighted size.
pub const MIGRATION_COST_FRACTION: f64 = 0.1;

pub(crate) const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Plans every job of `req`. Never fails: what cannot be placed is listed in `unplaced`
/// with a reason.
pub fn plan(req: &PlacementRequest) -> PlacementPlan {
    let heuristic_plan = heuristic::plan_heuristic(req, None);
    match req.options.solver {
        SolverChoice::Heuristic => heuristic_plan,
        #[cfg(feature = "milp")]
        SolverChoice::Milp { budget } => milp::improve(req, heuristic_plan, budget),
    }
}

/// Objective of a plan as `SolverReport::objective` defines it.
pub fn objective_of(req: &PlacementRequest, plan: &PlacementPlan) -> f64 {
    let by_id: BTreeMap<&JobId, &JobDemand> = req.jobs.iter().map(|j| (&j.id, j)).collect();
    let placed: f64 = plan
        .placements
        .iter()
        .filter_map(|p| by_id.get(&p.job))
        .map(|j| priority_weight(j.priority) * demand_units(j))
        .sum();
    let moved: f64 = plan
        .moves
        .iter()
        .filter_map(|m| by_id.get(&m.job))
        .map(|j| MIGRATION_COST_FRACTION * priority_weight(j.priority) * demand_units(j))
        .sum();
    placed - moved
}
