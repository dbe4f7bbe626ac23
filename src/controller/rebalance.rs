//! The running placement kept true at runtime: each pass judges it again, and the jobs that
//! break a rule now move, at a bounded rate, most important first, each with its reason.
//!
//! What is due is decided by `scheduler::placement::rebalance::plan_rebalance` (pure; the
//! function `twinsite plan --rebalance` prints) from the stored placements of the jobs on
//! reachable sites, the sites' snapshots, the policy (`rebalance.leadTime`,
//! `rebalance.movesPerHour`, pools, quotas) and the moves this leader started in the past
//! hour. Its violations (`recheck_running`): pods on borrowed offline capacity whose lending
//! window closes within the lead time, a JobManager on an offline node, a NoExecute taint the
//! pod does not tolerate, a node that lost a label the job's selector or required affinity
//! needs, a tenant quota shrunk below what runs, a node over capacity (a higher tier took the
//! room, e.g. by preempting the job during incremental placement). Node and site loss are the
//! failover engine's, and jobs it holds are left to it.
//!
//! This file gathers that input at the start of a pass and reports the jobs that cannot move
//! (stuck, or fitting only in another site, whose savepoint the target cannot read: a
//! failover); the moves themselves run in `reconcile/job.rs` through the path a spec change
//! takes: stop with a savepoint, persist the new generation and the planned placement, launch
//! restoring from the savepoint. Each move is audited with its reason (`rebalance-move`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use scheduler::model::{JobDemand, JobId, JobPlacement, SiteId, SiteSnapshot};
use scheduler::placement::rebalance::{RebalanceMove, RebalanceRequest, plan_rebalance};

use super::{Controller, stream_job_of};
use crate::state::{JobRecord, Versioned};

/// What the leader remembers between passes: when its moves started (the budget), the stuck
/// jobs it already reported and why each is stuck now (shown in its status). In memory: a new leader starts with a fresh hour's budget
/// and reports a stuck job once more.
#[derive(Default)]
pub struct RebalanceBook {
    started: Mutex<Vec<DateTime<Utc>>>,
    /// (job, reason) of the stuck jobs reported, kept while they stay stuck. Keyed by the
    /// reason, not the deadline: a violation due at once has a new deadline every pass.
    reported_stuck: Mutex<BTreeSet<(JobId, String)>>,
    /// Why each job that must move but cannot is stuck, as of the last pass: its status
    /// says so while it stays.
    stuck_now: Mutex<BTreeMap<JobId, String>>,
}

impl RebalanceBook {
    /// A move started at `at`.
    pub fn record(&self, at: DateTime<Utc>) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        started.retain(|&t| t > at - TimeDelta::hours(1));
        started.push(at);
    }

    fn recent(&self) -> Vec<DateTime<Utc>> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why `job` must move but cannot, if it is stuck as of the last pass.
    pub fn stuck_reason(&self, job: &JobId) -> Option<String> {
        self.stuck_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(job)
            .cloned()
    }

    fn set_stuck(&self, stuck: BTreeMap<JobId, String>) {
        *self.stuck_now.lock().unwrap_or_else(|e| e.into_inner()) = stuck;
    }

    /// Whether `job`'s being stuck for `reason` is news.
    fn first_report(&self, job: &JobId, reason: &str) -> bool {
        self.reported_stuck
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((job.clone(), reason.to_string()))
    }

    /// Forgets the reports of jobs no longer stuck, so a job stuck again is reported again.
    fn keep_reports_of(&self, stuck: &BTreeSet<&JobId>) {
        self.reported_stuck
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(job, _)| stuck.contains(job));
    }
}

impl Controller {
    /// The moves due at `now`, by job, planned over the stored placements of jobs on the
    /// reachable sites (`snapshots`). Jobs the failover engine holds are left to it. Stuck
    /// jobs are logged and audited (`rebalance-stuck`) once per reason while they stay stuck
    /// (for a window, before it closes).
    pub(super) async fn due_moves(
        &self,
        records: &[Versioned<JobRecord>],
        snapshots: &BTreeMap<SiteId, SiteSnapshot>,
        now: DateTime<Utc>,
    ) -> BTreeMap<JobId, RebalanceMove> {
        let mut running: Vec<JobPlacement> = Vec::new();
        let mut demands: Vec<JobDemand> = Vec::new();
        for record in records {
            let Some(placement) = record
                .value
                .placement
                .as_ref()
                .and_then(|p| p.detail.clone())
            else {
                continue;
            };
            if !snapshots.contains_key(&placement.site)
                || self.failover.held(&placement.job).is_some()
            {
                continue;
            }
            let Ok(demand) = stream_job_of(&record.value)
                .and_then(|job| job.demand().map_err(|e| e.to_string()))
            else {
                continue;
            };
            running.push(placement);
            demands.push(demand);
        }
        if running.is_empty() {
            self.rebalance.set_stuck(BTreeMap::new());
            return BTreeMap::new();
        }
        let sites: Vec<SiteSnapshot> = snapshots.values().cloned().collect();
        let policy = self.policy.placement_policy();
        let recent = self.rebalance.recent();
        let plan = plan_rebalance(&RebalanceRequest {
            sites: &sites,
            jobs: &demands,
            policy: &policy,
            rebalance: self.policy.rebalance(),
            running: &running,
            at: now,
            recent_moves: &recent,
        });
        for stuck in &plan.stuck {
            if self.rebalance.first_report(&stuck.job, &stuck.reason) {
                tracing::warn!(job = %stuck.job, deadline = %stuck.deadline, reason = %stuck.reason, "must move but fits nowhere");
                self.audit(
                    "rebalance-stuck",
                    &stuck.job.to_string(),
                    &format!(
                        "must leave by {}: {}",
                        stuck.deadline.to_rfc3339(),
                        stuck.reason
                    ),
                )
                .await;
            }
        }
        // A move to another site would restore from a savepoint that site cannot read: that
        // is a failover (`twinsite failover`, which replicates the savepoint), reported here.
        let (moves, across): (Vec<RebalanceMove>, Vec<RebalanceMove>) = plan
            .moves
            .into_iter()
            .partition(|m| m.to.site == m.from.site);
        for m in &across {
            if self.rebalance.first_report(&m.job, &m.reason) {
                tracing::warn!(job = %m.job, to = %m.to.site, reason = %m.reason, "fits only in another site");
                self.audit(
                    "rebalance-stuck",
                    &m.job.to_string(),
                    &format!(
                        "must leave by {}: {}; fits only in {}: move it with `twinsite failover`",
                        m.deadline.to_rfc3339(),
                        m.reason,
                        m.to.site
                    ),
                )
                .await;
            }
        }
        let still: BTreeSet<&JobId> = plan
            .stuck
            .iter()
            .map(|s| &s.job)
            .chain(across.iter().map(|m| &m.job))
            .collect();
        self.rebalance.set_stuck(
            plan.stuck
                .iter()
                .map(|s| (s.job.clone(), s.reason.clone()))
                .chain(across.iter().map(|m| {
                    let why = format!(
                        "{}; fits only in {}: move it with `twinsite failover`",
                        m.reason, m.to.site
                    );
                    (m.job.clone(), why)
                }))
                .collect(),
        );
        self.rebalance.keep_reports_of(&still);
        let stuck = plan.stuck.len() + across.len();
        self.metrics
            .rebalance_stuck
            .set(i64::try_from(stuck).unwrap_or(i64::MAX));
        moves.into_iter().map(|m| (m.job.clone(), m)).collect()
    }
}
