//! One job's recovery: node, TaskManager and crash-loop findings, fence, relaunch.
//! It must never relaunch before the old generation is fenced, nor restore an unreplicated copy.

use std::collections::BTreeSet;

use scheduler::model::{JobId, JobPlacement, Resources, SiteId};

use crate::generation::{GrantRefused, next_generation};
use crate::health::{NodeVerdict, judge_node};
use crate::operation::MoveStep;
use crate::types::{
    CheckpointPointer, FailoverMode, RelaunchReason, RunState, SiteMoves, Timestamp, elapsed,
};

use super::*;

impl Engine {
    /// Node loss, TaskManager loss, crash loops: the first two recovery tiers.
    pub(super) fn judge_jobs(&mut self, site: &SiteId, cx: &mut Step<'_>) {
        if !self.is_up(site) {
            return;
        }
        let Some(view) = self.views.get(site) else {
            return;
        };
        let grace = self.config.node_grace;
        let node_lost = |name: &str| match judge_node(view.nodes.get(name).copied(), cx.now, grace)
        {
            NodeVerdict::Healthy => None,
            NodeVerdict::Lost { last_heartbeat } => Some(last_heartbeat),
        };
        enum Finding {
            JobManagerLost(String, Option<Timestamp>),
            TaskManagersLost(Vec<String>),
            TaskManagersFine,
            Failed(u32),
        }
        let mut findings = Vec::new();
        for o in &view.jobs {
            let Some(r) = self.jobs.get(&o.job) else {
                continue;
            };
            // A job waiting for its turn in an operation still runs at the source like any
            // other: its failures are judged too (see `leave_operation`).
            let waiting_to_move = match r.phase {
                FailoverPhase::InOperation { op } => self
                    .operations
                    .get(&op)
                    .and_then(|o| o.jobs.iter().find(|j| &j.job == r.id()))
                    .is_some_and(|j| j.step == MoveStep::Pending),
                _ => false,
            };
            if r.generation != o.generation
                || &r.site != site
                || !(waiting_to_move
                    || matches!(
                        r.phase,
                        FailoverPhase::Running | FailoverPhase::Launching { .. }
                    ))
            {
                continue;
            }
            if let Some(jm) = &o.job_manager_node
                && let Some(hb) = node_lost(jm)
            {
                findings.push((o.job.clone(), Finding::JobManagerLost(jm.clone(), hb)));
                continue;
            }
            if o.state == RunState::Failed || o.restarts >= self.config.crash_loop_restarts {
                findings.push((o.job.clone(), Finding::Failed(o.restarts)));
                continue;
            }
            let lost_tms: Vec<String> = o
                .task_manager_nodes
                .iter()
                .filter(|n| node_lost(n).is_some())
                .cloned()
                .collect();
            if lost_tms.is_empty() {
                if o.state == RunState::Running {
                    findings.push((o.job.clone(), Finding::TaskManagersFine));
                }
            } else {
                findings.push((o.job.clone(), Finding::TaskManagersLost(lost_tms)));
            }
        }
        // A running generation absent from a fresh observation of its site (observed at
        // this instant) for longer than the node grace is gone: its site's agent stopped it
        // (a self-fence the site came back from before it was judged lost) or it vanished.
        // Judged like a failed job. Only fresh views count, so a launch made after this
        // pass's observation is not mistaken for a vanished one.
        if view.last_api_contact == Some(cx.now) {
            let present: BTreeSet<(JobId, u64)> = view
                .jobs
                .iter()
                .map(|o| (o.job.clone(), o.generation))
                .collect();
            self.vanished
                .retain(|(job, g), _| !present.contains(&(job.clone(), *g)));
            for r in self.jobs.values() {
                let key = (r.id().clone(), r.generation);
                if &r.site != site || r.phase != FailoverPhase::Running || present.contains(&key) {
                    continue;
                }
                let since = *self.vanished.entry(key.clone()).or_insert(cx.now);
                if crate::types::elapsed(since, cx.now) >= grace {
                    self.vanished.remove(&key);
                    findings.push((key.0, Finding::Failed(0)));
                }
            }
        }
        for (job, finding) in findings {
            if !matches!(
                finding,
                Finding::TaskManagersFine | Finding::TaskManagersLost(_)
            ) {
                self.leave_operation(&job, cx);
            }
            match finding {
                Finding::JobManagerLost(node, hb) => {
                    self.audit(
                        cx,
                        None,
                        Some(&job),
                        Some(site),
                        format!("JobManager node {node} lost"),
                    );
                    let reason = RelaunchReason::JobManagerNodeLost { node };
                    self.start_fencing(&job, site.clone(), Cause::detected(reason, cx.now, hb), cx);
                }
                Finding::Failed(restarts) => {
                    let target = self.failure_target(&job);
                    if let Some(r) = self.jobs.get_mut(&job) {
                        r.failures_in_site += 1;
                    }
                    self.audit(
                        cx,
                        None,
                        Some(&job),
                        Some(site),
                        format!("job failed after {restarts} restarts; relaunching in {target}"),
                    );
                    let reason = RelaunchReason::JobFailed { restarts };
                    self.start_fencing(&job, target, Cause::detected(reason, cx.now, None), cx);
                }
                Finding::TaskManagersLost(nodes) => {
                    let Some(r) = self.jobs.get_mut(&job) else {
                        continue;
                    };
                    match r.task_managers_lost_since {
                        None => {
                            r.task_managers_lost_since = Some(cx.now);
                            self.dirty.jobs.insert(job.clone());
                            self.audit(
                                cx,
                                None,
                                Some(&job),
                                Some(site),
                                format!(
                                    "TaskManager nodes {} lost: leaving recovery to Flink",
                                    nodes.join(",")
                                ),
                            );
                        }
                        Some(since)
                            if elapsed(since, cx.now)
                                >= self.config.task_manager_recovery_bound =>
                        {
                            r.task_managers_lost_since = None;
                            self.leave_operation(&job, cx);
                            self.audit(
                                cx,
                                None,
                                Some(&job),
                                Some(site),
                                "Flink did not recover within the bound".into(),
                            );
                            let reason = RelaunchReason::TaskManagersNotRecovered { nodes };
                            let cause = Cause::detected(reason, since, None);
                            self.start_fencing(&job, site.clone(), cause, cx);
                        }
                        Some(_) => {}
                    }
                }
                Finding::TaskManagersFine => {
                    if let Some(r) = self.jobs.get_mut(&job)
                        && r.task_managers_lost_since.take().is_some()
                    {
                        self.dirty.jobs.insert(job.clone());
                        self.audit(
                            cx,
                            None,
                            Some(&job),
                            Some(site),
                            "Flink recovered from the TaskManager loss".into(),
                        );
                    }
                }
            }
        }
    }

    /// A job that fails at the source before its move started leaves the operation (it
    /// stays where it is, `Left`) so that it is recovered in its site now instead of waiting,
    /// failed, for its turn. A no-op for a job in no operation.
    pub(super) fn leave_operation(&mut self, job: &JobId, cx: &mut Step<'_>) {
        let Some(FailoverPhase::InOperation { op }) = self.jobs.get(job).map(|r| r.phase.clone())
        else {
            return;
        };
        let Some(j) = self.operations.get_mut(&op).and_then(|o| o.job_mut(job)) else {
            return;
        };
        if j.step != MoveStep::Pending {
            return;
        }
        j.step = MoveStep::Left {
            reason: "it failed at the source before its move started; recovered there".into(),
        };
        self.dirty.ops.insert(op);
        let message = "failed before its move started: left at the source and recovered there";
        self.keep_at_source(op, job, None, message.into(), cx);
    }

    /// Tier 2 relaunches stay in the job's site; after `relaunches_before_other_site` failed
    /// ones they go to another healthy site that holds a replicated checkpoint (or any other
    /// healthy site for jobs allowed to start fresh).
    pub(super) fn failure_target(&self, job: &JobId) -> SiteId {
        let Some(r) = self.jobs.get(job) else {
            return SiteId(String::new());
        };
        if r.failures_in_site < self.config.relaunches_before_other_site
            || r.spec.site_moves == SiteMoves::OperatorOnly
        {
            return r.site.clone();
        }
        self.config
            .sites
            .iter()
            .find(|s| {
                **s != r.site
                    && self.is_up(s)
                    && r.spec.demand.sites.allows(s)
                    && !r.spec.jar_missing.contains_key(*s)
                    && (r.latest_replicated.contains_key(*s)
                        || r.spec.mode == FailoverMode::FreshStartAllowed)
            })
            .cloned()
            .unwrap_or_else(|| r.site.clone())
    }

    /// Fences the job's current generation; once confirmed, it is relaunched in `target`
    /// (`on_fenced`).
    pub(super) fn start_fencing(
        &mut self,
        job: &JobId,
        target: SiteId,
        cause: Cause,
        cx: &mut Step<'_>,
    ) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        r.phase = FailoverPhase::Fencing {
            reason: cause.reason,
            target,
            detected_at: cause.detected_at,
            last_heartbeat: cause.last_heartbeat,
        };
        r.task_managers_lost_since = None;
        let (generation, site) = (r.generation, r.site.clone());
        self.dirty.jobs.insert(job.clone());
        self.fence(job, generation, &site, cx);
    }

    /// Issues a new generation of `job` in `target` (its old generation is already fenced or
    /// unreachable-and-stale). In-site: the latest complete checkpoint; cross-site: only the
    /// latest checkpoint replicated to `target`.
    pub(super) fn relaunch_job(
        &mut self,
        job: &JobId,
        target: &SiteId,
        cause: Cause,
        cx: &mut Step<'_>,
    ) {
        let Some(r) = self.jobs.get(job) else {
            return;
        };
        // The chosen site went down meanwhile: stay home when home is healthy.
        let fallback = r.site.clone();
        let target = if !self.is_up(target) && self.is_up(&fallback) {
            &fallback
        } else {
            target
        };
        if !self.is_up(target) {
            self.mark_down(
                job,
                format!("relaunch target {target} is not healthy"),
                Resources::ZERO,
                cx,
            );
            return;
        }
        let restore = match self.restore_point(r, target) {
            Ok(p) => p,
            Err(reason) => {
                self.mark_down(job, reason, Resources::ZERO, cx);
                return;
            }
        };
        let avoid = self.lost_nodes(target, cx.now);
        let outcome = cx
            .placer
            .place(target, std::slice::from_ref(&r.spec.demand), &avoid);
        let Some(placement) = outcome.placed.into_iter().find(|p| &p.job == job) else {
            let (reason, missing) = outcome
                .not_fitting
                .into_iter()
                .find(|n| &n.job == job)
                .map(|n| (n.reason, n.missing))
                .unwrap_or_else(|| (format!("no placement in {target}"), Resources::ZERO));
            self.mark_down(
                job,
                format!("does not fit in {target}: {reason}"),
                missing,
                cx,
            );
            return;
        };
        let target = target.clone();
        self.issue_relaunch(job, &target, placement, restore, cause, cx);
    }

    /// Issues generation + 1 of `job` in `target` on `placement`, from `restore`, and reports
    /// it, timed from `cause`.
    pub(super) fn issue_relaunch(
        &mut self,
        job: &JobId,
        target: &SiteId,
        placement: JobPlacement,
        restore: Option<CheckpointPointer>,
        cause: Cause,
        cx: &mut Step<'_>,
    ) {
        let generation = match self.adopt_new_generation(
            job,
            target,
            restore.clone(),
            FailoverPhase::Launching {
                since: cx.now,
                placement: placement.clone(),
                restore_from: restore.clone(),
            },
        ) {
            Ok(generation) => generation,
            Err(reason) => {
                self.mark_down(job, reason, Resources::ZERO, cx);
                return;
            }
        };
        self.down_tried.remove(job);
        self.audit(
            cx,
            None,
            Some(job),
            Some(target),
            format!("relaunching as generation {generation}: {}", cause.reason),
        );
        let launch = NewGeneration {
            job: job.clone(),
            generation,
            site: target.clone(),
            placement,
            restore_from: restore,
        };
        self.relaunch_and_report(launch, None, cause, cx);
    }

    /// The checkpoint a relaunch of `r` in `target` must restore from (`Ok(None)`: fresh start).
    pub(super) fn restore_point(
        &self,
        r: &TrackedJob,
        target: &SiteId,
    ) -> Result<Option<CheckpointPointer>, String> {
        let in_site = target == &r.site;
        let pointer = if in_site {
            // A copy replicated back home is an ancestor of the lineage: still valid.
            r.latest_complete
                .get(target)
                .or_else(|| r.latest_replicated.get(target))
        } else {
            r.latest_replicated.get(target)
        };
        // A lineage that never completed a checkpoint holds no state a restore could keep:
        // in its own site it starts as its first launch did (the lost site may hold a
        // checkpoint never reported, so this never applies across sites).
        let never_checkpointed = r.latest_complete.is_empty() && r.latest_replicated.is_empty();
        match (pointer, r.spec.mode) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, FailoverMode::FreshStartAllowed) => Ok(None),
            (None, FailoverMode::RestoreRequired) if in_site && never_checkpointed => Ok(None),
            (None, FailoverMode::RestoreRequired) => Err(if in_site {
                format!("no complete checkpoint in {target} and the job must restore from one")
            } else {
                format!("no checkpoint replicated to {target} and the job must restore from one")
            }),
        }
    }

    /// Bumps the generation, moves the job to `target`, and resets its checkpoint lineage to
    /// the restore point: checkpoints of other lineages must never be restored again.
    /// `Err` (nothing changed): the job is unknown or its generation is the last one
    /// (`next_generation`); the reason says which.
    pub(super) fn adopt_new_generation(
        &mut self,
        job: &JobId,
        target: &SiteId,
        restore: Option<CheckpointPointer>,
        phase: FailoverPhase,
    ) -> Result<u64, String> {
        let Some(r) = self.jobs.get_mut(job) else {
            return Err(format!("{job} is not tracked"));
        };
        let Some(next) = next_generation(r.generation) else {
            return Err(GrantRefused::Exhausted {
                current: r.generation,
            }
            .to_string());
        };
        let in_site = &r.site == target;
        if !in_site {
            r.failures_in_site = 0;
        }
        r.generation = next;
        r.site = target.clone();
        r.epoch = self.sites.get(target).map(|s| s.epoch);
        r.phase = phase;
        r.task_managers_lost_since = None;
        r.latest_complete.clear();
        match (&restore, in_site) {
            // In-site from the newest checkpoint: copies of it or of older ones in the peer
            // are its ancestors, still valid restore points of the same lineage.
            (Some(p), true) => r
                .latest_replicated
                .retain(|_, c| c.generation <= p.generation && c.id <= p.id),
            _ => r.latest_replicated.clear(),
        }
        if let Some(p) = restore {
            r.latest_complete.insert(target.clone(), p.clone());
            r.latest_replicated.insert(target.clone(), p);
        }
        self.dirty.jobs.insert(job.clone());
        Ok(r.generation)
    }

    pub(super) fn lost_nodes(&self, site: &SiteId, now: Timestamp) -> BTreeSet<String> {
        self.views
            .get(site)
            .map(|v| {
                v.nodes
                    .iter()
                    .filter(|(_, hb)| elapsed(**hb, now) > self.config.node_grace)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Issues `launch` and its recovery report: RTO from `cause`'s detection and last
    /// heartbeat, RPO from the restore point to the failure.
    pub(super) fn relaunch_and_report(
        &mut self,
        launch: NewGeneration,
        op: Option<u64>,
        cause: Cause,
        cx: &mut Step<'_>,
    ) {
        let NewGeneration {
            job,
            generation,
            site,
            placement,
            restore_from,
        } = launch;
        self.act(
            cx,
            Command::Relaunch {
                job: job.clone(),
                generation,
                site: site.clone(),
                placement,
                restore_from: restore_from.clone(),
                reason: cause.reason.clone(),
            },
        );
        // An operation's source ran until it was fenced unless it went silent: then its
        // last sign of life is the failure. A failure in place: its last heartbeat, else
        // when it was detected.
        let failed_at = match op {
            Some(_) => cause.last_heartbeat.unwrap_or(cx.now),
            None => cause.last_heartbeat.unwrap_or(cause.detected_at),
        };
        let rpo = rpo_at(restore_from.as_ref(), failed_at);
        self.act(
            cx,
            Command::ReportRecovery(RecoveryReport {
                job,
                generation,
                site,
                reason: cause.reason,
                op,
                restore_from,
                rto_from_detection: elapsed(cause.detected_at, cx.now),
                rto_from_last_heartbeat: cause.last_heartbeat.map(|h| elapsed(h, cx.now)),
                rpo,
            }),
        );
    }
}
