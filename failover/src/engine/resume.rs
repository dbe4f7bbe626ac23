//! A new leader's engine rebuilt from the stored records, with commands re-issuing steps in flight.
//! It must never start anything new: a re-issued command keeps its generation and target.

use crate::operation::{MoveStep, OpKind};
use crate::types::{RelaunchReason, Timestamp, elapsed};

use super::*;

impl Engine {
    /// Rebuilds an engine from persisted records (a new leader) and returns the commands that
    /// re-issue every in-flight step. Re-issued commands carry the same generations and
    /// savepoint targets, so executing them again starts nothing twice. Quorum starts unknown
    /// (false) until the driver reports it.
    pub fn resume(
        config: EngineConfig,
        records: impl IntoIterator<Item = Record>,
        now: Timestamp,
    ) -> (Self, Vec<Command>) {
        let mut engine = Engine::new(config, now);
        for record in records {
            match record {
                Record::Job(j) => {
                    engine.jobs.insert(j.id().clone(), *j);
                }
                Record::Site(s) => {
                    let view = engine
                        .views
                        .entry(s.id.clone())
                        .or_insert(SiteView::new(now));
                    view.nodes = s.silent_nodes.clone();
                    engine.sites.insert(s.id.clone(), s);
                }
                Record::Operation(o) => {
                    engine.operations.insert(o.id, *o);
                }
            }
        }
        engine.reconcile();
        // A job whose launches were refused keeps its back-off: a new leader tries it when
        // its delay has passed since now, not at once (leader changes must not turn a
        // refusing site into a retry loop).
        for r in engine.jobs.values() {
            if r.launches_refused > 0 && matches!(r.phase, FailoverPhase::Down { .. }) {
                engine.down_tried.insert(r.id().clone(), now);
            }
        }
        let mut out: Vec<Command> = Vec::new();
        engine.flush(&mut out);
        // A loss written just before the leader died may never have reached the sites:
        // marked again (idempotent) before anything is moved off them.
        // So may a recovery: a site marked lost once is marked again with its state.
        for s in engine.sites.values() {
            match s.status {
                SiteStatus::Lost { .. } => out.push(Command::MarkSiteLost {
                    site: s.id.clone(),
                    epoch: s.epoch,
                }),
                SiteStatus::Up if s.epoch > 0 => out.push(Command::MarkSiteRecovered {
                    site: s.id.clone(),
                    epoch: s.epoch,
                }),
                _ => {}
            }
        }
        for record in engine.jobs.values() {
            match &record.phase {
                FailoverPhase::Fencing { .. } => out.push(Command::Fence {
                    job: record.id().clone(),
                    generation: record.generation,
                    site: record.site.clone(),
                }),
                FailoverPhase::Launching {
                    placement,
                    restore_from,
                    ..
                } => out.push(Command::Relaunch {
                    job: record.id().clone(),
                    generation: record.generation,
                    site: record.site.clone(),
                    placement: placement.clone(),
                    restore_from: restore_from.clone(),
                    reason: RelaunchReason::LaunchFailed {
                        reason: "re-issued by a new leader".into(),
                    },
                }),
                _ => {}
            }
        }
        let mut reports = Vec::new();
        for op in engine.operations.values().filter(|o| o.is_active()) {
            for j in &op.jobs {
                let cmd = match &j.step {
                    MoveStep::Savepointing => Command::TriggerSavepoint {
                        op: op.id,
                        job: j.job.clone(),
                        generation: j.from_generation,
                        site: op.from.clone(),
                    },
                    MoveStep::Fencing { generation, site } => Command::Fence {
                        job: j.job.clone(),
                        generation: *generation,
                        site: site.clone(),
                    },
                    MoveStep::Replicating => match &j.savepoint_at_source {
                        Some(sp) => Command::ReplicateSavepoint {
                            op: op.id,
                            job: j.job.clone(),
                            savepoint: sp.clone(),
                            to: op.to.clone(),
                        },
                        None => continue,
                    },
                    MoveStep::Launching {
                        generation,
                        site,
                        restore_from,
                    } => {
                        let reason = match op.kind {
                            OpKind::SiteLoss { epoch } => RelaunchReason::SiteLost {
                                site: op.from.clone(),
                                epoch,
                            },
                            _ => RelaunchReason::Operation { op: op.id },
                        };
                        // The leader that first issued it may have died before reporting:
                        // report again, timed from the operation's start (so the leader
                        // change counts in the RTO).
                        reports.push(Command::ReportRecovery(RecoveryReport {
                            job: j.job.clone(),
                            generation: *generation,
                            site: site.clone(),
                            reason: reason.clone(),
                            op: Some(op.id),
                            restore_from: restore_from.clone(),
                            rto_from_detection: elapsed(op.requested_at, now),
                            rto_from_last_heartbeat: op
                                .last_sign_of_life
                                .map(|at| elapsed(at, now)),
                            rpo: rpo_at(restore_from.as_ref(), op.last_sign_of_life.unwrap_or(now)),
                        }));
                        Command::Relaunch {
                            job: j.job.clone(),
                            generation: *generation,
                            site: site.clone(),
                            placement: j.placement.clone(),
                            restore_from: restore_from.clone(),
                            reason,
                        }
                    }
                    _ => continue,
                };
                out.push(cmd);
            }
        }
        out.extend(reports);
        // A re-issued fence the site does not answer (it may be unreachable) is issued
        // again after `fence_retry`, like any other.
        for c in &out {
            if let Command::Fence {
                job,
                generation,
                site,
            } = c
            {
                engine
                    .fence_sent
                    .insert((job.clone(), site.clone(), *generation), now);
            }
        }
        let ops: Vec<u64> = engine.operations.keys().copied().collect();
        out.push(Command::Audit(FailoverAudit {
            at: now,
            op: None,
            job: None,
            site: None,
            message: format!(
                "resumed with {} jobs, {} operations ({} active)",
                engine.jobs.len(),
                ops.len(),
                engine.operations.values().filter(|o| o.is_active()).count()
            ),
        }));
        (engine, out)
    }

    /// Job and operation records are written one by one, so a leader may die between the
    /// two writes of one transition. The job record is authoritative for its generation:
    /// an operation step it has overtaken is closed, and a job an operation no longer drives
    /// is released.
    pub(super) fn reconcile(&mut self) {
        for o in self.operations.values_mut().filter(|o| o.is_active()) {
            for j in o.jobs.iter_mut().filter(|j| j.step.is_in_flight()) {
                let Some(r) = self.jobs.get(&j.job) else {
                    j.step = MoveStep::Failed {
                        reason: "job no longer known".into(),
                        running: false,
                    };
                    continue;
                };
                if r.phase == (FailoverPhase::InOperation { op: o.id }) {
                    continue;
                }
                j.step = match r.phase {
                    FailoverPhase::Down { .. } => MoveStep::Failed {
                        reason: "superseded by the job's own recovery".into(),
                        running: false,
                    },
                    _ => MoveStep::Done {
                        generation: r.generation,
                        site: r.site.clone(),
                    },
                };
                self.dirty.ops.insert(o.id);
            }
        }
        for r in self.jobs.values_mut() {
            let FailoverPhase::InOperation { op } = r.phase else {
                continue;
            };
            let step = self
                .operations
                .get(&op)
                .and_then(|o| o.jobs.iter().find(|j| &j.job == r.id()))
                .map(|j| j.step.clone());
            let released = match step {
                Some(MoveStep::Failed {
                    running: false,
                    reason,
                }) => Some(FailoverPhase::Down { reason }),
                Some(step) if step.is_finished() => Some(FailoverPhase::Running),
                Some(_) => None,
                // The operation was never written: the job record may name a generation
                // that was never launched. Whatever runs of it is stopped, and the job is
                // relaunched like any job that runs nowhere.
                None => {
                    r.stale.insert(StaleGeneration {
                        site: r.site.clone(),
                        generation: r.generation,
                    });
                    Some(FailoverPhase::Down {
                        reason: format!("operation {op} was lost with the leader that started it"),
                    })
                }
            };
            if let Some(phase) = released {
                r.phase = phase;
                self.dirty.jobs.insert(r.id().clone());
            }
        }
    }
}
