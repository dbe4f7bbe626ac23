//! One event applied: answers to commands, observations, stored jobs, ops requests.
//! It must never let an answer for another generation or operation step move the one in flight.

use std::collections::{BTreeMap, BTreeSet};

use scheduler::model::{JobId, Resources, SiteId};

use crate::operation::{MoveStep, OpKind, Operation};
use crate::types::{
    CheckpointPointer, JobSpec, RelaunchReason, RestorePointKind, SiteObservation, Timestamp,
};

use super::*;

impl Engine {
    /// Applies one event; `false` when it is bookkeeping only and needs no judging.
    pub(super) fn apply(&mut self, event: Event, cx: &mut Step<'_>) -> bool {
        match event {
            Event::JobRegistered {
                spec,
                site,
                generation,
            } => self.on_job_registered(*spec, site, generation, cx),
            Event::SnapshotObserved(o) => self.on_snapshot(o, cx),
            Event::PeerReport { site, last_contact } => {
                if let Some(v) = self.views.get_mut(&site) {
                    v.peer_last_contact = v.peer_last_contact.max(Some(last_contact));
                }
            }
            Event::CheckpointCompleted { job, checkpoint } => {
                self.on_checkpoint_completed(&job, checkpoint)
            }
            Event::CheckpointReplicated { job, replica } => {
                self.on_checkpoint_replicated(&job, replica)
            }
            Event::LaunchSucceeded {
                job,
                generation,
                site,
            } => self.on_launch_succeeded(&job, generation, &site, cx),
            Event::LaunchFailed {
                job,
                generation,
                site,
                reason,
            } => self.on_launch_failed(&job, generation, &site, reason, cx),
            Event::Fenced {
                job,
                generation,
                site,
            } => self.on_fenced(&job, generation, &site, cx),
            Event::SavepointCompleted { op, job, savepoint } => {
                self.on_savepoint(op, &job, Ok(savepoint), cx)
            }
            Event::SavepointFailed { op, job, reason } => {
                self.on_savepoint(op, &job, Err(reason), cx)
            }
            Event::ReplicationCompleted { op, job, replica } => {
                self.on_replication(op, &job, replica, cx)
            }
            Event::OpsRequest(request) => self.on_request(request, cx),
            Event::QuorumChanged(q) => {
                if self.quorum != q {
                    self.quorum = q;
                    self.audit(cx, None, None, None, format!("quorum with witness: {q}"));
                }
            }
            Event::JobsStored(stored) => return self.on_jobs_stored(stored, cx),
            Event::JobRemoved { job } => {
                if self.jobs.remove(&job).is_some() {
                    self.dirty.jobs.remove(&job);
                    self.fence_sent.retain(|(j, _, _), _| j != &job);
                    self.audit(cx, None, Some(&job), None, "job removed".into());
                    self.act(cx, Command::Forget { job });
                }
            }
            Event::Tick => {}
        }
        true
    }

    // ---- events -------------------------------------------------------------------------

    pub(super) fn on_job_registered(
        &mut self,
        spec: JobSpec,
        site: SiteId,
        generation: u64,
        cx: &mut Step<'_>,
    ) {
        let id = spec.demand.id.clone();
        if let Some(existing) = self.jobs.get_mut(&id) {
            existing.spec = spec;
            // The driver launched a newer generation on its own (a spec change relaunches with
            // a savepoint): adopt it, unless the engine is itself moving the job, and fence
            // the one it replaced.
            let idle = matches!(
                existing.phase,
                FailoverPhase::Running | FailoverPhase::Down { .. }
            );
            if generation > existing.generation && idle {
                let replaced = StaleGeneration {
                    site: existing.site.clone(),
                    generation: existing.generation,
                };
                existing.stale.insert(replaced);
                existing.generation = generation;
                existing.site = site.clone();
                existing.phase = FailoverPhase::Running;
                existing.failures_in_site = 0;
                existing.task_managers_lost_since = None;
                existing.epoch = self.sites.get(&site).map(|s| s.epoch);
                self.audit(
                    cx,
                    None,
                    Some(&id),
                    Some(&site),
                    format!("adopted generation {generation} launched by the controller"),
                );
            }
        } else {
            self.jobs.insert(
                id.clone(),
                TrackedJob {
                    spec,
                    generation,
                    site: site.clone(),
                    phase: FailoverPhase::Running,
                    latest_complete: BTreeMap::new(),
                    latest_replicated: BTreeMap::new(),
                    failures_in_site: 0,
                    stale: BTreeSet::new(),
                    task_managers_lost_since: None,
                    epoch: self.sites.get(&site).map(|s| s.epoch),
                    launches_refused: 0,
                },
            );
            self.audit(
                cx,
                None,
                Some(&id),
                Some(&site),
                format!("registered at generation {generation}"),
            );
        }
        self.dirty.jobs.insert(id);
    }

    pub(super) fn on_snapshot(&mut self, o: SiteObservation, cx: &mut Step<'_>) {
        let site = o.site.clone();
        let Some(view) = self.views.get_mut(&site) else {
            return;
        };
        view.last_api_contact = view.last_api_contact.max(Some(o.observed_at));
        let mut nodes = BTreeMap::new();
        for n in &o.nodes {
            let known = view.nodes.get(&n.name).copied();
            let heard = match n.last_heartbeat {
                Some(at) => known.map_or(at, |k| k.max(at)),
                // Seen but not heard: silent since it last was, or since first seen.
                None => known.unwrap_or(o.observed_at),
            };
            nodes.insert(n.name.clone(), heard);
        }
        let silent: BTreeMap<String, Timestamp> = nodes
            .iter()
            .filter(|(_, heard)| **heard < o.observed_at)
            .map(|(n, at)| (n.clone(), *at))
            .collect();
        view.nodes = nodes;
        view.jobs = o.jobs;
        if let Some(s) = self.sites.get_mut(&site)
            && s.silent_nodes != silent
        {
            s.silent_nodes = silent;
            self.dirty.sites.insert(site.clone());
        }
        let was_lost = matches!(
            self.sites.get(&site).map(|s| &s.status),
            Some(SiteStatus::Lost { .. })
        );
        if was_lost {
            if let Some(s) = self.sites.get_mut(&site) {
                s.status = SiteStatus::Returning;
                self.dirty.sites.insert(site.clone());
            }
            self.audit(
                cx,
                None,
                None,
                Some(&site),
                "site reachable again: fencing stale generations before anything runs there".into(),
            );
        }
        self.record_stale_observations(&site);
        self.issue_stale_fences(&site, cx);
        self.judge_jobs(&site, cx);
        // Checkpoints after judging, as they arrived before: a failure is judged against
        // the relaunch count the checkpoint would reset.
        let completed: Vec<(JobId, CheckpointPointer)> = self
            .views
            .get(&site)
            .map(|v| {
                v.jobs
                    .iter()
                    .filter_map(|j| {
                        let c = j.latest_checkpoint.as_ref()?;
                        Some((
                            j.job.clone(),
                            CheckpointPointer {
                                site: site.clone(),
                                generation: j.generation,
                                id: c.id,
                                path: c.path.clone(),
                                completed_at: c.completed_at,
                                kind: RestorePointKind::Checkpoint,
                            },
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (job, checkpoint) in completed {
            self.on_checkpoint_completed(&job, checkpoint);
        }
    }

    /// Registers what is new or changed in the store and forgets what is gone; `true` when
    /// anything changed (then the engine judges).
    pub(super) fn on_jobs_stored(
        &mut self,
        stored: Vec<crate::types::StoredJob>,
        cx: &mut Step<'_>,
    ) -> bool {
        let mut changed = false;
        let present: BTreeSet<JobId> = stored.iter().map(|j| j.id.clone()).collect();
        for job in stored {
            let Some(placed) = job.placed else {
                continue;
            };
            let new = match self.jobs.get(&job.id) {
                None => true,
                Some(known) => known.generation < placed.generation || known.spec != placed.spec,
            };
            if new {
                self.on_job_registered(placed.spec, placed.site, placed.generation, cx);
                changed = true;
            }
        }
        let gone: Vec<JobId> = self
            .jobs
            .keys()
            .filter(|id| !present.contains(*id))
            .cloned()
            .collect();
        for job in gone {
            self.apply(Event::JobRemoved { job }, cx);
            changed = true;
        }
        changed
    }

    pub(super) fn on_checkpoint_completed(&mut self, job: &JobId, c: CheckpointPointer) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        if c.generation != r.generation || c.site != r.site {
            return;
        }
        let newer = r
            .latest_complete
            .get(&c.site)
            .is_none_or(|old| old.generation < c.generation || old.id < c.id);
        if newer {
            r.latest_complete.insert(c.site.clone(), c);
            r.failures_in_site = 0;
            self.dirty.jobs.insert(job.clone());
        }
    }

    pub(super) fn on_checkpoint_replicated(&mut self, job: &JobId, c: CheckpointPointer) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        // Only the live lineage: a zombie generation's checkpoint must never be restored.
        if c.generation != r.generation {
            return;
        }
        let newer = r
            .latest_replicated
            .get(&c.site)
            .is_none_or(|old| old.generation < c.generation || old.id < c.id);
        if newer {
            r.latest_replicated.insert(c.site.clone(), c);
            self.dirty.jobs.insert(job.clone());
        }
    }

    pub(super) fn on_launch_succeeded(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        cx: &mut Step<'_>,
    ) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        if r.generation != generation || &r.site != site {
            return;
        }
        if r.launches_refused > 0 {
            r.launches_refused = 0;
            self.dirty.jobs.insert(job.clone());
        }
        match r.phase.clone() {
            FailoverPhase::Launching { .. } => {
                r.phase = FailoverPhase::Running;
                self.dirty.jobs.insert(job.clone());
                self.audit(
                    cx,
                    None,
                    Some(job),
                    Some(site),
                    format!("generation {generation} running"),
                );
            }
            FailoverPhase::InOperation { op } => {
                let Some(step) = Self::op_job_step(&mut self.operations, op, job) else {
                    return;
                };
                // A launch answer for another generation is stale and must not move the operation.
                if matches!(step, MoveStep::Launching { generation: g, .. } if *g == generation) {
                    *step = MoveStep::Done {
                        generation,
                        site: site.clone(),
                    };
                    r.phase = FailoverPhase::Running;
                    self.dirty.jobs.insert(job.clone());
                    self.dirty.ops.insert(op);
                    self.audit(
                        cx,
                        Some(op),
                        Some(job),
                        Some(site),
                        format!("moved: generation {generation} running"),
                    );
                }
            }
            _ => {}
        }
    }

    /// The current step of `job` inside operation `op`, if both exist.
    pub(super) fn op_job_step<'a>(
        operations: &'a mut BTreeMap<u64, Operation>,
        op: u64,
        job: &JobId,
    ) -> Option<&'a mut MoveStep> {
        Some(&mut operations.get_mut(&op)?.job_mut(job)?.step)
    }

    pub(super) fn on_launch_failed(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        reason: String,
        cx: &mut Step<'_>,
    ) {
        let Some(r) = self.jobs.get(job) else {
            return;
        };
        if r.generation != generation || &r.site != site {
            return;
        }
        self.audit(
            cx,
            None,
            Some(job),
            Some(site),
            format!("launch of generation {generation} failed: {reason}"),
        );
        match r.phase.clone() {
            FailoverPhase::Launching { .. } => {
                let target = self.failure_target(job);
                if let Some(r) = self.jobs.get_mut(job) {
                    r.failures_in_site += 1;
                    r.launches_refused = r.launches_refused.saturating_add(1);
                }
                let cause = Cause::detected(RelaunchReason::LaunchFailed { reason }, cx.now, None);
                self.start_fencing(job, target, cause, cx);
            }
            FailoverPhase::InOperation { op } => {
                let Some(step) = Self::op_job_step(&mut self.operations, op, job) else {
                    return;
                };
                // A launch answer for another generation is stale and must not move the operation.
                if matches!(step, MoveStep::Launching { generation: g, .. } if *g == generation) {
                    // The failed generation may be half-started: fence it before any retry.
                    *step = MoveStep::Fencing {
                        generation,
                        site: site.clone(),
                    };
                    self.dirty.ops.insert(op);
                    self.fence(job, generation, site, cx);
                }
                self.drive_operation(op, cx);
            }
            _ => {}
        }
    }

    pub(super) fn on_fenced(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        cx: &mut Step<'_>,
    ) {
        self.fence_sent
            .remove(&(job.clone(), site.clone(), generation));
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        let stale = StaleGeneration {
            site: site.clone(),
            generation,
        };
        if r.stale.remove(&stale) {
            self.dirty.jobs.insert(job.clone());
            self.audit(
                cx,
                None,
                Some(job),
                Some(site),
                format!("stale generation {generation} fenced"),
            );
        }
        let Some(r) = self.jobs.get(job) else {
            return;
        };
        match r.phase.clone() {
            FailoverPhase::Fencing {
                reason,
                target,
                detected_at,
                last_heartbeat,
            } if r.generation == generation && &r.site == site => {
                self.audit(
                    cx,
                    None,
                    Some(job),
                    Some(site),
                    format!("generation {generation} fenced"),
                );
                // A refused launch is not tried again at once: a site that keeps refusing
                // would otherwise take a new generation per answer, without end, within one
                // pass. The job is down, and tried again after a back-off.
                if let RelaunchReason::LaunchFailed { reason } = &reason {
                    self.down_after_refused_launch(job, generation, site, reason, cx);
                    return;
                }
                let cause = Cause::detected(reason, detected_at, last_heartbeat);
                self.relaunch_job(job, &target, cause, cx);
            }
            FailoverPhase::InOperation { op } => {
                if let Some(j) = self.operations.get_mut(&op).and_then(|o| o.job_mut(job))
                    && matches!(&j.step, MoveStep::Fencing { generation: g, site: s } if *g == generation && s == site)
                {
                    self.audit(
                        cx,
                        Some(op),
                        Some(job),
                        Some(site),
                        format!("generation {generation} fenced"),
                    );
                    self.after_move_fence(op, job, cx);
                    self.drive_operation(op, cx);
                }
            }
            // The generation the engine counts on was stopped (a fence issued before it
            // became current again, a late answer): the job runs nowhere now, so it is
            // relaunched like any job that runs nowhere.
            FailoverPhase::Running | FailoverPhase::Launching { .. }
                if r.generation == generation && &r.site == site =>
            {
                self.mark_down(
                    job,
                    format!("its generation {generation} in {site} was stopped"),
                    Resources::ZERO,
                    cx,
                );
                self.down_tried.remove(job);
            }
            _ => {}
        }
    }

    pub(super) fn on_savepoint(
        &mut self,
        op: u64,
        job: &JobId,
        result: Result<CheckpointPointer, String>,
        cx: &mut Step<'_>,
    ) {
        let Some(o) = self.operations.get_mut(&op) else {
            return;
        };
        let from = o.from.clone();
        let Some(j) = o.job_mut(job) else {
            return;
        };
        if j.step != MoveStep::Savepointing {
            return;
        }
        match result {
            Ok(sp) => {
                let message = format!("stopped with savepoint {}", sp.path);
                j.savepoint_at_source = Some(sp);
                // Stopped, but its deployment still exists: delete it so it never restarts.
                j.step = MoveStep::Fencing {
                    generation: j.from_generation,
                    site: from.clone(),
                };
                let generation = j.from_generation;
                self.dirty.ops.insert(op);
                self.audit(cx, Some(op), Some(job), Some(&from), message);
                self.fence(job, generation, &from, cx);
            }
            Err(reason) => {
                j.step = MoveStep::Failed {
                    reason: format!("savepoint failed: {reason}"),
                    running: true,
                };
                self.dirty.ops.insert(op);
                let message =
                    format!("savepoint failed, job keeps running at the source: {reason}");
                self.keep_at_source(op, job, Some(&from), message, cx);
            }
        }
    }

    pub(super) fn on_replication(
        &mut self,
        op: u64,
        job: &JobId,
        replica: CheckpointPointer,
        cx: &mut Step<'_>,
    ) {
        let Some(j) = self.operations.get_mut(&op).and_then(|o| o.job_mut(job)) else {
            return;
        };
        if j.step != MoveStep::Replicating {
            return;
        }
        let message = format!("savepoint replicated as {}", replica.path);
        j.savepoint_at_target = Some(replica);
        self.dirty.ops.insert(op);
        self.audit(cx, Some(op), Some(job), None, message);
        self.launch_move(op, job, cx);
        self.drive_operation(op, cx);
    }

    pub(super) fn on_request(&mut self, request: OpsRequest, cx: &mut Step<'_>) {
        match &request {
            OpsRequest::Failover {
                from,
                to,
                mode,
                dry_run,
            }
            | OpsRequest::Failback {
                from,
                to,
                mode,
                dry_run,
            } => {
                let failback = matches!(request, OpsRequest::Failback { .. });
                if let Err(error) = self.check_move_request(from, to, *mode) {
                    if !dry_run {
                        self.audit(
                            cx,
                            None,
                            None,
                            Some(from),
                            format!("request rejected: {error}"),
                        );
                    }
                    cx.commands.push(Command::Rejected {
                        request: request.clone(),
                        error,
                    });
                    return;
                }
                if *dry_run {
                    cx.commands.push(Command::ReportPlan(
                        self.plan(from, to, *mode, failback, cx.now, cx.placer),
                    ));
                    return;
                }
                let kind = if failback {
                    OpKind::Failback
                } else {
                    OpKind::Failover
                };
                let scope = MoveScope {
                    from: from.clone(),
                    to: to.clone(),
                    mode: *mode,
                    failback,
                };
                let op = self.start_operation(kind, false, scope, None, cx);
                cx.commands.push(Command::Accepted {
                    request: request.clone(),
                    op,
                });
            }
            OpsRequest::Cancel { op } => self.cancel(*op, &request, cx),
        }
    }
}
