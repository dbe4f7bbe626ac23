//! Capacity planning report: per site, pool and tenant what is allocatable, requested, used
//! and left; what offline pools lend and when; whether each site survives the loss of the
//! other; and what right-sizing would reclaim. Pure: snapshots, jobs, policy and right-sizing
//! recommendations in, a [`CapacityReport`] out; [`render`] turns it into table, Markdown,
//! JSON or HTML text.
//!
//! How the numbers are made (see README.md next to this file for the figures):
//! - **Requested** is what the placer would do now: [`build_report`] runs the heuristic
//!   placer (`crate::placement::plan`) on the inputs, keeping `running` jobs where they are,
//!   and counts the requests of every planned pod plus those of other pods on the nodes.
//! - **Used** comes only from metrics (the right-sizer's evidence: the busiest window's CPU and
//!   the peak heap plus the non-heap part of the pod), per pod of our jobs. Pods without
//!   metrics are counted, never guessed: a row says how many pods its figure covers.
//! - **Failover survivability** re-plans the lost site's jobs into the survivors with the same
//!   placer (priorities, preemption of best-effort, quotas, lending windows at `at`), so the
//!   percentages are what a site failover at that instant would achieve.

pub mod assemble;
mod capacity;
mod colocation;
pub mod elasticity;
pub mod render;
mod rightsizing;
mod survival;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{JobDemand, JobId, JobPlacement, PlacementPolicy, PodRole, SiteSnapshot};
use crate::placement::{self, PlacementOptions, PlacementPlan, PlacementRequest, Unplaced};
use crate::rightsize::{Assessment, Recommendation};

pub use capacity::{CapacityRow, Measured, PoolCapacity, SiteCapacity, TenantCapacity};
pub use colocation::{PoolLending, WindowText};
pub use render::{Format, UnknownFormat, render};
pub use rightsizing::{JobChange, JobRefusal, RightsizingSummary};
pub use survival::{SiteLossWhatIf, Survivability, TierSurvival, site_loss_what_if};

/// How many jobs "top jobs to fix" lists unless told otherwise.
pub const DEFAULT_TOP_JOBS: usize = 10;

/// Everything a report is built from. The caller reads files or APIs; nothing here does.
#[derive(Debug, Clone, Copy)]
pub struct ReportInputs<'a> {
    pub sites: &'a [SiteSnapshot],
    pub jobs: &'a [JobDemand],
    pub policy: &'a PlacementPolicy,
    /// Where our jobs run now (empty: plan from scratch).
    pub running: &'a [JobPlacement],
    /// Jobs twinsite never relaunches (`spec.failover.mode: none`): left out of site failover.
    pub no_failover: &'a BTreeSet<JobId>,
    /// The instant the report describes: decides which lending windows are open.
    pub at: chrono::DateTime<chrono::Utc>,
    /// `None` when no metrics were given: used and right-sizing are then not reported.
    pub rightsizing: Option<RightsizingInput<'a>>,
    pub top_jobs: usize,
}

/// The right-sizer's answers, made by the caller job by job (so that only one job's metrics
/// are in memory at a time).
#[derive(Debug, Clone, Copy)]
pub struct RightsizingInput<'a> {
    /// Where the metrics came from (URL or file), shown in the report.
    pub source: &'a str,
    pub lookback_ms: i64,
    pub recommendations: &'a [Recommendation],
    /// Jobs whose metrics could not be read at all, with the source's error.
    pub failures: &'a [(JobId, String)],
}

/// The whole report. Serialises to the JSON format; the other formats render from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub at: chrono::DateTime<chrono::Utc>,
    pub jobs: usize,
    pub placed: usize,
    /// Jobs the placer cannot place now, with its reason.
    pub unplaced: Vec<Unplaced>,
    pub sites: Vec<SiteCapacity>,
    pub colocation: Vec<PoolLending>,
    pub failover: Vec<Survivability>,
    /// `None`: no metrics were given.
    pub rightsizing: Option<RightsizingSummary>,
    /// Facts a reader needs to interpret the figures (what was left out and why).
    pub notes: Vec<String>,
    /// The policy's scale profiles as what-ifs ([`elasticity::scale_profile_what_ifs`], added
    /// by the caller, which holds the StreamJobs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_profiles: Vec<elasticity::ProfileWhatIf>,
}

/// Resource use of one pod of one of our jobs, from metrics; `None` where not measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PodUse {
    pub cpu_milli: Option<f64>,
    pub memory_bytes: Option<f64>,
}

/// Per job, what one JobManager pod and one TaskManager pod use.
pub(crate) type UseByJob = BTreeMap<JobId, (PodUse, PodUse)>;

fn pod_use(assessment: &Assessment<crate::rightsize::ProcessEvidence>) -> PodUse {
    match assessment.assessed() {
        None => PodUse::default(),
        Some(e) => PodUse {
            cpu_milli: e.busiest_window_cpu_cores.map(|c| c * 1000.0),
            // The non-heap part (managed, network, metaspace) counts as fully used, as the
            // right-sizer assumes; the heap part as its observed peak.
            memory_bytes: Some(
                (e.current_memory_bytes - e.heap_max_bytes) as f64 + e.peak_heap_used_bytes,
            ),
        },
    }
}

pub(crate) fn use_by_job(recommendations: &[Recommendation]) -> UseByJob {
    recommendations
        .iter()
        .map(|r| {
            (
                r.job.clone(),
                (pod_use(&r.job_manager), pod_use(&r.task_manager)),
            )
        })
        .collect()
}

impl PodUse {
    pub(crate) fn of(uses: &UseByJob, job: &JobId, role: PodRole) -> PodUse {
        uses.get(job)
            .map(|(jm, tm)| match role {
                PodRole::Jobmanager => *jm,
                PodRole::Taskmanager => *tm,
            })
            .unwrap_or_default()
    }
}

/// The plan the report describes: the heuristic placer, running jobs kept where they are.
/// The heuristic is deterministic and takes milliseconds, so reports are reproducible.
pub fn baseline_plan(inputs: &ReportInputs) -> PlacementPlan {
    placement::plan(&PlacementRequest {
        sites: inputs.sites,
        jobs: inputs.jobs,
        policy: inputs.policy,
        running: inputs.running,
        at: inputs.at,
        options: PlacementOptions::default(),
    })
}

/// Builds the report. Never fails: what cannot be computed is said in the report.
pub fn build_report(inputs: &ReportInputs) -> CapacityReport {
    let plan = baseline_plan(inputs);
    let uses = inputs
        .rightsizing
        .map(|r| use_by_job(r.recommendations))
        .unwrap_or_default();
    let mut notes = Vec::new();
    if inputs.rightsizing.is_none() {
        notes.push(
            "no metrics given (--metrics): used and right-sizing are not reported".to_string(),
        );
    }
    notes.push(
        "used counts our Flink jobs only (busiest-window CPU, peak heap plus non-heap), from \
         metrics; other pods count at their requests"
            .to_string(),
    );
    notes.push(
        "allocatable and headroom cover nodes that take new pods (Ready, not cordoned)".to_string(),
    );
    let sites = capacity::sites(inputs, &plan, &uses);
    let colocation = colocation::lending(inputs, &plan);
    let failover = survival::survivability(inputs, &plan);
    if inputs.sites.len() < 2 {
        notes.push("one site only: no failover survivability to report".to_string());
    }
    let rightsizing = inputs
        .rightsizing
        .map(|r| rightsizing::summarise(inputs.jobs, &r, inputs.top_jobs));
    CapacityReport {
        at: inputs.at,
        jobs: inputs.jobs.len(),
        placed: plan.placements.len(),
        unplaced: plan.unplaced.clone(),
        sites,
        colocation,
        failover,
        rightsizing,
        notes,
        scale_profiles: Vec::new(),
    }
}
