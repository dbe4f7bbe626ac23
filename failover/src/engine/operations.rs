//! Operations: switchover, forced failover, failback and site loss; plan, pace, cancel.
//! It must never start moves beyond the rate and concurrency bounds, nor take a job another owns.

use std::collections::BTreeMap;
use std::time::Duration;

use scheduler::model::{JobDemand, JobId, JobPlacement, Resources, SiteId};

use crate::operation::{
    FailoverPlan, MoveMode, MoveStep, OpJob, OpKind, OpState, Operation, PlannedMove,
};
use crate::types::{FailoverMode, NotFitting, Placer, SiteMoves, Timestamp, elapsed};

use super::*;

impl Engine {
    /// The plan an operation would follow, without changing anything.
    pub fn plan(
        &self,
        from: &SiteId,
        to: &SiteId,
        mode: MoveMode,
        failback: bool,
        now: Timestamp,
        placer: &dyn Placer,
    ) -> FailoverPlan {
        let scope = MoveScope {
            from: from.clone(),
            to: to.clone(),
            mode,
            failback,
        };
        let (jobs, not_fitting, preempt) = self.plan_moves(&scope, false, now, placer);
        let moves = jobs
            .iter()
            .map(|j| {
                let restore_from = match mode {
                    MoveMode::Planned => None,
                    MoveMode::Forced => self
                        .jobs
                        .get(&j.job)
                        .and_then(|r| r.latest_replicated.get(to).cloned()),
                };
                let expected_rpo = match mode {
                    MoveMode::Planned => Some(Duration::ZERO),
                    MoveMode::Forced => restore_from.as_ref().map(|c| elapsed(c.completed_at, now)),
                };
                PlannedMove {
                    job: j.job.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    placement: j.placement.clone(),
                    expected_rpo,
                    restore_from,
                }
            })
            .collect();
        FailoverPlan {
            from: from.clone(),
            to: to.clone(),
            mode,
            moves,
            not_fitting,
            preempt,
        }
    }

    /// Moves waiting for a fence in a lost site go on: that generation is held there by
    /// epoch admission and fenced when the site returns, like any of its generations.
    /// Checked on every judgement, not only when the site is found lost: the leader that
    /// found it may have died before writing the operations it changed.
    pub(super) fn stop_waiting_on_lost_sites(&mut self, cx: &mut Step<'_>) {
        let waiting: Vec<(u64, JobId, SiteId, u64)> = self
            .operations
            .values()
            .filter(|o| o.is_active())
            .flat_map(|o| {
                o.jobs.iter().filter_map(move |j| match &j.step {
                    MoveStep::Fencing { generation, site } => {
                        Some((o.id, j.job.clone(), site.clone(), *generation))
                    }
                    _ => None,
                })
            })
            .filter(|(_, _, site, _)| !self.reachable(site))
            .collect();
        for (op, job, site, generation) in waiting {
            if let Some(r) = self.jobs.get_mut(&job) {
                r.stale.insert(StaleGeneration {
                    site: site.clone(),
                    generation,
                });
                self.dirty.jobs.insert(job.clone());
            }
            self.fence_sent.remove(&(job.clone(), site, generation));
            self.after_move_fence(op, &job, cx);
            self.drive_operation(op, cx);
        }
    }

    /// Jobs still waiting for their turn (`Pending`) in an operation whose target cannot be
    /// reached would wait for as long as it stays so (issue #14):
    /// - its source is back (`Up`): the job leaves the operation and is where it was; one
    ///   whose generation belongs to the source's older epoch (a site loss) is released
    ///   by `release_orphans` right after and relaunched at home;
    /// - its source is lost too (both sites lost): the move fails and the job is down,
    ///   saying so, with its generation stale in the source; `revive_down_jobs` relaunches
    ///   it when a site returns.
    ///
    /// Jobs already launched towards the target are left alone: their generation may run
    /// there, and they move on once it is confirmed fenced or the target is found lost.
    pub(super) fn release_unmovable(&mut self, cx: &mut Step<'_>) {
        let stuck: Vec<(u64, SiteId, SiteId, Vec<JobId>)> = self
            .operations
            .values()
            .filter(|o| o.is_active() && !self.can_reach(&o.to, cx.now))
            .filter(|o| self.is_up(&o.from) || !self.reachable(&o.from))
            .map(|o| {
                let pending = o
                    .jobs
                    .iter()
                    .filter(|j| j.step == MoveStep::Pending)
                    .map(|j| j.job.clone())
                    .collect();
                (o.id, o.from.clone(), o.to.clone(), pending)
            })
            .filter(|(_, _, _, pending): &(_, _, _, Vec<JobId>)| !pending.is_empty())
            .collect();
        for (op, from, to, jobs) in stuck {
            let source_back = self.is_up(&from);
            let to_lost = !self.reachable(&to);
            let why = if source_back {
                format!("its target {to} does not answer and its source {from} is back")
            } else if to_lost {
                format!("both sites lost: {from} and its target {to}")
            } else {
                format!("its source {from} is lost and its target {to} does not answer")
            };
            for job in &jobs {
                let Some(j) = self.operations.get_mut(&op).and_then(|o| o.job_mut(job)) else {
                    continue;
                };
                j.step = if source_back {
                    MoveStep::Left {
                        reason: why.clone(),
                    }
                } else {
                    MoveStep::Failed {
                        reason: why.clone(),
                        running: false,
                    }
                };
                self.dirty.ops.insert(op);
                if source_back {
                    self.keep_at_source(op, job, Some(&from), format!("not moved: {why}"), cx);
                } else {
                    self.mark_down(job, format!("not moved: {why}"), Resources::ZERO, cx);
                }
            }
            self.finish_if_done(op, cx);
        }
    }

    // ---- operations ---------------------------------------------------------------------

    pub(super) fn check_move_request(
        &self,
        from: &SiteId,
        to: &SiteId,
        mode: MoveMode,
    ) -> Result<(), RequestError> {
        for s in [from, to] {
            if !self.sites.contains_key(s) {
                return Err(RequestError::UnknownSite { site: s.clone() });
            }
        }
        if from == to {
            return Err(RequestError::SameSite { site: from.clone() });
        }
        if let Some(s) = self.sites.get(to)
            && s.status != SiteStatus::Up
        {
            return Err(RequestError::TargetNotHealthy {
                site: to.clone(),
                status: format!("{:?}", s.status),
            });
        }
        if mode == MoveMode::Planned && !self.is_up(from) {
            return Err(RequestError::SourceUnreachable { site: from.clone() });
        }
        Ok(())
    }

    /// Which jobs move, in priority order, and where; which do not fit and why.
    /// `automatic`: the engine moves the jobs on its own (site loss, policy failback), so
    /// jobs only an operator may move stay where they are.
    pub(super) fn plan_moves(
        &self,
        scope: &MoveScope,
        automatic: bool,
        now: Timestamp,
        placer: &dyn Placer,
    ) -> (Vec<OpJob>, Vec<NotFitting>, Vec<JobId>) {
        let (from, to, mode, failback) = (&scope.from, &scope.to, scope.mode, scope.failback);
        let candidates: Vec<&TrackedJob> = self
            .jobs
            .values()
            .filter(|r| &r.site == from)
            .filter(|r| !matches!(r.phase, FailoverPhase::InOperation { .. }))
            .filter(|r| !failback || r.spec.demand.sites.preferred.as_ref() == Some(to))
            .filter(|r| {
                // Jobs already down are not running at the source: a planned move has no
                // savepoint to take, and a forced move of a live source leaves them be.
                !matches!(r.phase, FailoverPhase::Down { .. }) || !self.reachable(from)
            })
            .collect();
        // A job being recovered in its live site (fenced, relaunched) is left to finish
        // that first; a later failover moves it. From a lost site, everything moves.
        let (candidates, recovering): (Vec<&TrackedJob>, Vec<&TrackedJob>) =
            candidates.into_iter().partition(|r| {
                !self.reachable(from)
                    || matches!(r.phase, FailoverPhase::Running | FailoverPhase::Down { .. })
            });
        let mut not_fitting: Vec<NotFitting> = recovering
            .iter()
            .map(|r| NotFitting {
                job: r.id().clone(),
                reason: format!("being recovered in {from}; not moved by this failover"),
                missing: Resources::ZERO,
            })
            .collect();
        let mut candidates = candidates;
        candidates.sort_by(|a, b| {
            b.spec
                .demand
                .priority
                .cmp(&a.spec.demand.priority)
                .then_with(|| a.id().cmp(b.id()))
        });
        let mut demands: Vec<JobDemand> = Vec::new();
        for r in candidates {
            if automatic && r.spec.site_moves == SiteMoves::OperatorOnly {
                not_fitting.push(NotFitting {
                    job: r.id().clone(),
                    reason: format!(
                        "failover mode manual: moved to {to} only by an operator's failover \
                         (twinsite failover --from {from} --to {to})"
                    ),
                    missing: Resources::ZERO,
                });
            } else if !r.spec.demand.sites.allows(to) {
                not_fitting.push(NotFitting {
                    job: r.id().clone(),
                    reason: format!("job may not run in site {to}"),
                    missing: Resources::ZERO,
                });
            } else if let Some(reason) = r.spec.jar_missing.get(to) {
                not_fitting.push(NotFitting {
                    job: r.id().clone(),
                    reason: reason.clone(),
                    missing: Resources::ZERO,
                });
            } else if mode == MoveMode::Forced
                && r.spec.mode == FailoverMode::RestoreRequired
                && !r.latest_replicated.contains_key(to)
            {
                not_fitting.push(NotFitting {
                    job: r.id().clone(),
                    reason: format!(
                        "no checkpoint replicated to {to} and the job must restore from one"
                    ),
                    missing: Resources::ZERO,
                });
            } else {
                demands.push(r.spec.demand.clone());
            }
        }
        // The placer's answer fixes where each job goes; the order stays priority order.
        let outcome = placer.place(to, &demands, &self.lost_nodes(to, now));
        let mut placed: BTreeMap<JobId, JobPlacement> = outcome
            .placed
            .into_iter()
            .map(|p| (p.job.clone(), p))
            .collect();
        let mut jobs = Vec::new();
        for d in &demands {
            match placed.remove(&d.id) {
                Some(placement) => jobs.push(OpJob {
                    job: d.id.clone(),
                    from_generation: self.jobs.get(&d.id).map_or(0, |r| r.generation),
                    placement,
                    step: MoveStep::Pending,
                    savepoint_at_source: None,
                    savepoint_at_target: None,
                    launches: 0,
                }),
                None => not_fitting.push(
                    outcome
                        .not_fitting
                        .iter()
                        .find(|n| n.job == d.id)
                        .map(|n| NotFitting {
                            reason: format!("does not fit in {to}: {}", n.reason),
                            ..n.clone()
                        })
                        .unwrap_or_else(|| NotFitting {
                            job: d.id.clone(),
                            reason: format!("no placement in {to}"),
                            missing: Resources::ZERO,
                        }),
                ),
            }
        }
        let preempt = outcome
            .preempt
            .into_iter()
            .filter(|j| self.jobs.get(j).is_some_and(|r| &r.site == to))
            .collect();
        (jobs, not_fitting, preempt)
    }

    /// Starts operation `kind` over `scope` and returns its id. `requested_by_policy`: a
    /// failback the engine starts on its own (then jobs only an operator may move stay).
    pub(super) fn start_operation(
        &mut self,
        kind: OpKind,
        requested_by_policy: bool,
        scope: MoveScope,
        last_sign_of_life: Option<Timestamp>,
        cx: &mut Step<'_>,
    ) -> u64 {
        let automatic = match kind {
            OpKind::SiteLoss { .. } => true,
            OpKind::Failover => false,
            OpKind::Failback => requested_by_policy,
        };
        let (jobs, not_fitting, preempt) = self.plan_moves(&scope, automatic, cx.now, cx.placer);
        let MoveScope { from, to, mode, .. } = scope;
        let id = self.operations.keys().next_back().map_or(1, |k| k + 1);
        let source_reachable = self.reachable(&from);
        for j in &jobs {
            if let Some(r) = self.jobs.get_mut(&j.job) {
                r.phase = FailoverPhase::InOperation { op: id };
                self.dirty.jobs.insert(j.job.clone());
            }
        }
        let op = Operation {
            id,
            kind: kind.clone(),
            mode,
            from: from.clone(),
            to: to.clone(),
            requested_at: cx.now,
            last_sign_of_life,
            max_in_flight: self.config.max_in_flight.max(1),
            state: OpState::Running,
            jobs,
            not_fitting: not_fitting.clone(),
        };
        self.audit(cx, Some(id), None, Some(&from), format!(
            "operation {id} ({kind:?}, {mode:?}) {from} -> {to}: {} jobs to move, {} do not fit",
            op.jobs.len(),
            not_fitting.len()
        ));
        self.operations.insert(id, op);
        self.dirty.ops.insert(id);
        for n in not_fitting {
            if source_reachable {
                self.audit(
                    cx,
                    Some(id),
                    Some(&n.job),
                    Some(&to),
                    format!("stays in {from}: {}", n.reason),
                );
                self.act(
                    cx,
                    Command::ReportNotRelaunched {
                        job: n.job,
                        reason: n.reason,
                        missing: n.missing,
                    },
                );
            } else {
                self.mark_down(&n.job, n.reason, n.missing, cx);
            }
        }
        for victim in preempt {
            self.audit(
                cx,
                Some(id),
                Some(&victim),
                Some(&to),
                "preempted to make room".into(),
            );
            self.start_fencing_preempted(&victim, cx);
        }
        self.drive_operation(id, cx);
        id
    }

    pub(super) fn start_fencing_preempted(&mut self, job: &JobId, cx: &mut Step<'_>) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        let (site, generation) = (r.site.clone(), r.generation);
        r.stale.insert(StaleGeneration {
            site: site.clone(),
            generation,
        });
        r.phase = FailoverPhase::Down {
            reason: "preempted by a failover".into(),
        };
        self.dirty.jobs.insert(job.clone());
        self.fence(job, generation, &site, cx);
        self.act(
            cx,
            Command::ReportNotRelaunched {
                job: job.clone(),
                reason: "preempted by a failover".into(),
                missing: Resources::ZERO,
            },
        );
    }

    /// Starts pending jobs up to the concurrency bound and closes the operation when done.
    pub(super) fn drive_operation(&mut self, op: u64, cx: &mut Step<'_>) {
        let Some(o) = self.operations.get(&op) else {
            return;
        };
        let target_reachable = self.can_reach(&o.to, cx.now);
        if !target_reachable {
            // A planned move whose savepoint cannot reach a silent target goes back to its
            // source from that savepoint: nothing of it was started at the target.
            let stuck: Vec<JobId> = o
                .jobs
                .iter()
                .filter(|j| j.step == MoveStep::Replicating)
                .map(|j| j.job.clone())
                .collect();
            for job in stuck {
                self.launch_move(op, &job, cx);
            }
        }
        loop {
            let Some(o) = self.operations.get(&op) else {
                return;
            };
            // Nothing more starts moving towards a target that does not answer. Planned
            // moves stop their jobs: a bounded number at a time. Every move is paced by rate.
            if o.state != OpState::Running
                || !target_reachable
                || o.mode == MoveMode::Planned && o.in_flight() >= o.max_in_flight
                || o.started() >= self.config.launch_allowance(o.requested_at, cx.now)
            {
                break;
            }
            let Some(next) = o
                .jobs
                .iter()
                .find(|j| j.step == MoveStep::Pending)
                .map(|j| j.job.clone())
            else {
                break;
            };
            self.start_move(op, &next, cx);
        }
        self.finish_if_done(op, cx);
    }

    /// Ends operation `op` once every job is finished (`Done`, `Left`, `Failed`), or not
    /// started and the operation cancelled.
    pub(super) fn finish_if_done(&mut self, op: u64, cx: &mut Step<'_>) {
        let Some(o) = self.operations.get_mut(&op) else {
            return;
        };
        if o.is_active()
            && o.jobs.iter().all(|j| {
                j.step.is_finished()
                    || j.step == MoveStep::Pending && o.state == OpState::Cancelling
            })
        {
            let progress = o.progress();
            o.state = if o.state == OpState::Cancelling {
                OpState::Cancelled
            } else {
                OpState::Done
            };
            let state = o.state.clone();
            self.dirty.ops.insert(op);
            self.audit(
                cx,
                Some(op),
                None,
                None,
                format!("operation {op} {state:?}: {progress:?}"),
            );
        }
    }

    pub(super) fn cancel(&mut self, op: u64, request: &OpsRequest, cx: &mut Step<'_>) {
        let error = match self.operations.get(&op) {
            None => Some(RequestError::UnknownOperation { op }),
            Some(o) if !o.is_active() => Some(RequestError::OperationFinished { op }),
            Some(_) => None,
        };
        if let Some(error) = error {
            self.audit(
                cx,
                Some(op),
                None,
                None,
                format!("cancel rejected: {error}"),
            );
            cx.commands.push(Command::Rejected {
                request: request.clone(),
                error,
            });
            return;
        }
        self.cancel_pending(op, "cancelled by ops", cx);
        self.drive_operation(op, cx);
        cx.commands.push(Command::Accepted {
            request: request.clone(),
            op,
        });
    }

    /// Jobs not yet started stay where they run; jobs whose source is lost keep moving (a
    /// cancel must not leave them down), as do jobs already past their point of no return.
    pub(super) fn cancel_pending(&mut self, op: u64, why: &str, cx: &mut Step<'_>) {
        let source_reachable = match self.operations.get(&op) {
            Some(o) => self.reachable(&o.from),
            None => return,
        };
        let mut left = Vec::new();
        if let Some(o) = self.operations.get_mut(&op) {
            if !source_reachable {
                self.audit(
                    cx,
                    Some(op),
                    None,
                    None,
                    format!("{why}: source lost, every job keeps moving"),
                );
                return;
            }
            o.state = OpState::Cancelling;
            for j in o.jobs.iter_mut().filter(|j| j.step == MoveStep::Pending) {
                j.step = MoveStep::Left {
                    reason: why.to_string(),
                };
                left.push(j.job.clone());
            }
            self.dirty.ops.insert(op);
        }
        for job in &left {
            if let Some(r) = self.jobs.get_mut(job) {
                r.phase = FailoverPhase::Running;
                self.dirty.jobs.insert(job.clone());
            }
        }
        self.audit(
            cx,
            Some(op),
            None,
            None,
            format!(
                "{why}: {} jobs left in place, in-flight ones finish",
                left.len()
            ),
        );
    }
}
