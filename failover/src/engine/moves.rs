//! One job's move inside an operation: savepoint, fence, replicate, launch (or back at the source).
//! It must never launch at the target from anything but what is readable there.

use scheduler::model::{JobId, JobPlacement, Resources};

use crate::operation::{MoveMode, MoveStep, OpKind};
use crate::types::RelaunchReason;

use super::*;

impl Engine {
    pub(super) fn start_move(&mut self, op: u64, job: &JobId, cx: &mut Step<'_>) {
        let source_reachable;
        let (mode, from, generation) = {
            let Some(o) = self.operations.get(&op) else {
                return;
            };
            source_reachable = self.reachable(&o.from);
            let g = o
                .jobs
                .iter()
                .find(|j| &j.job == job)
                .map_or(0, |j| j.from_generation);
            (o.mode, o.from.clone(), g)
        };
        let Some(j) = self.operations.get_mut(&op).and_then(|o| o.job_mut(job)) else {
            return;
        };
        self.dirty.ops.insert(op);
        match (mode, source_reachable) {
            (MoveMode::Planned, _) => {
                j.step = MoveStep::Savepointing;
                self.audit(
                    cx,
                    Some(op),
                    Some(job),
                    Some(&from),
                    "stop-with-savepoint".into(),
                );
                self.act(
                    cx,
                    Command::TriggerSavepoint {
                        op,
                        job: job.clone(),
                        generation,
                        site: from,
                    },
                );
            }
            (MoveMode::Forced, true) => {
                j.step = MoveStep::Fencing {
                    generation,
                    site: from.clone(),
                };
                self.fence(job, generation, &from, cx);
            }
            (MoveMode::Forced, false) => {
                // The source is lost: its generation is fenced when (if) it returns.
                if let Some(r) = self.jobs.get_mut(job) {
                    r.stale.insert(StaleGeneration {
                        site: from,
                        generation,
                    });
                    self.dirty.jobs.insert(job.clone());
                }
                self.launch_move(op, job, cx);
            }
        }
    }

    /// After a fence inside an operation: replicate the savepoint (planned) or launch.
    pub(super) fn after_move_fence(&mut self, op: u64, job: &JobId, cx: &mut Step<'_>) {
        let Some(o) = self.operations.get_mut(&op) else {
            return;
        };
        let to = o.to.clone();
        let mode = o.mode;
        let Some(j) = o.job_mut(job) else {
            return;
        };
        if mode == MoveMode::Planned
            && j.savepoint_at_target.is_none()
            && let Some(sp) = j.savepoint_at_source.clone()
        {
            j.step = MoveStep::Replicating;
            self.dirty.ops.insert(op);
            self.act(
                cx,
                Command::ReplicateSavepoint {
                    op,
                    job: job.clone(),
                    savepoint: sp,
                    to,
                },
            );
            return;
        }
        self.launch_move(op, job, cx);
    }

    pub(super) fn launch_move(&mut self, op: u64, job: &JobId, cx: &mut Step<'_>) {
        let Some(o) = self.operations.get(&op) else {
            return;
        };
        let (mode, from, to, kind, last_sign) = (
            o.mode,
            o.from.clone(),
            o.to.clone(),
            o.kind.clone(),
            o.last_sign_of_life,
        );
        let Some(j) = o.jobs.iter().find(|j| &j.job == job).cloned() else {
            return;
        };
        let Some(r) = self.jobs.get(job) else {
            return;
        };
        let fail = |engine: &mut Engine, cx: &mut Step<'_>, reason: String| {
            if let Some(j) = engine.operations.get_mut(&op).and_then(|o| o.job_mut(job)) {
                j.step = MoveStep::Failed {
                    reason: reason.clone(),
                    running: false,
                };
                engine.dirty.ops.insert(op);
            }
            engine.mark_down(job, reason, Resources::ZERO, cx);
        };
        if j.launches >= self.config.max_launches_per_move {
            fail(self, cx, format!("{} launches failed", j.launches));
            return;
        }
        // A target lost mid-move sends the job back to its source when that is healthy, from
        // the savepoint taken there (planned) or its latest complete checkpoint (forced).
        let (target, restore) = if self.can_reach(&to, cx.now) {
            let restore = match mode {
                MoveMode::Planned => j
                    .savepoint_at_target
                    .clone()
                    .map(Ok)
                    .unwrap_or_else(|| Err("savepoint not replicated".to_string()))
                    .map(Some),
                MoveMode::Forced => self.restore_point(r, &to),
            };
            (to.clone(), restore)
        } else if self.can_reach(&from, cx.now) {
            let restore = match (&j.savepoint_at_source, mode) {
                (Some(sp), _) => Ok(Some(sp.clone())),
                (None, _) => r
                    .latest_complete
                    .get(&from)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| format!("no complete checkpoint in {from}")),
            };
            (from.clone(), restore)
        } else {
            fail(self, cx, format!("neither {to} nor {from} is healthy"));
            return;
        };
        let restore = match restore {
            Ok(p) => p,
            Err(reason) => {
                fail(self, cx, reason);
                return;
            }
        };
        let placement = if target == to {
            j.placement.clone()
        } else {
            JobPlacement {
                job: job.clone(),
                site: target.clone(),
                pods: Vec::new(),
            }
        };
        let generation = match self.adopt_new_generation(
            job,
            &target,
            restore.clone(),
            FailoverPhase::InOperation { op },
        ) {
            Ok(generation) => generation,
            Err(reason) => {
                fail(self, cx, reason);
                return;
            }
        };
        if let Some(j) = self.operations.get_mut(&op).and_then(|o| o.job_mut(job)) {
            j.step = MoveStep::Launching {
                generation,
                site: target.clone(),
                restore_from: restore.clone(),
            };
            j.launches += 1;
            j.placement = placement.clone();
        }
        self.dirty.ops.insert(op);
        let reason = match kind {
            OpKind::SiteLoss { epoch } => RelaunchReason::SiteLost { site: from, epoch },
            _ => RelaunchReason::Operation { op },
        };
        self.audit(
            cx,
            Some(op),
            Some(job),
            Some(&target),
            format!("relaunching as generation {generation}"),
        );
        let detected_at = self.operations.get(&op).map_or(cx.now, |o| o.requested_at);
        let launch = NewGeneration {
            job: job.clone(),
            generation,
            site: target,
            placement,
            restore_from: restore,
        };
        let cause = Cause::detected(reason, detected_at, last_sign);
        self.relaunch_and_report(launch, Some(op), cause, cx);
    }

    /// A job operation `op` no longer moves runs on where it is (`Running` again, written),
    /// and the audit says why.
    pub(super) fn keep_at_source(
        &mut self,
        op: u64,
        job: &JobId,
        site: Option<&SiteId>,
        message: String,
        cx: &mut Step<'_>,
    ) {
        if let Some(r) = self.jobs.get_mut(job) {
            r.phase = FailoverPhase::Running;
            self.dirty.jobs.insert(job.clone());
        }
        self.audit(cx, Some(op), Some(job), site, message);
    }
}
