//! The per-job step of a pass: decode the stored job, then follow what its site reports for
//! the stored generation. Each branch is one method; each ends with the job kept where it
//! runs (`Collected::keep`), queued for placement (`Collected::place`), or only its status
//! written. It must never launch a new generation itself: that is `launch.rs`, after the
//! failover engine granted it.

use scheduler::input::StreamJob;
use scheduler::model::{JobDemand, JobId, JobPlacement};
use scheduler::placement::rebalance::RebalanceMove;

use super::super::jars::JarGate;
use super::super::launch::{Restore, launch_spec, spec_hash};
use super::super::status::{JobPhase, JobStatus, LastCheckpoint};
use super::super::{Controller, stream_job_of};
use super::{Collected, PassReport, PassView, SiteView, ToPlace};
use crate::site::{JobObservation, JobState, SiteError};
use crate::state::{CheckpointKind, CheckpointPointer, JobRecord, StateError, Versioned};

/// One job in one pass, once its stored spec decoded: what the per-job steps share.
pub(super) struct JobPass {
    pub record: Versioned<JobRecord>,
    /// At its effective spec (a scale profile active now applied).
    pub job: StreamJob,
    pub demand: JobDemand,
    /// `spec_hash` of `job`: differs from the status' `launched_spec` when the spec changed.
    pub hash: String,
    pub jar: JarGate,
    /// The status as stored, and as this pass leaves it.
    pub old_status: JobStatus,
    pub status: JobStatus,
    /// The scale profile active now: name and parallelism factor.
    pub profile: Option<(String, f64)>,
}

impl JobPass {
    fn id(&self) -> JobId {
        self.job.id()
    }

    fn generation(&self) -> u64 {
        self.record.value.generation
    }
}

impl Collected {
    /// The job stays where it runs: its placement and demand are booked for the placer.
    async fn keep(
        &mut self,
        controller: &Controller,
        j: JobPass,
        placement: JobPlacement,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        self.kept.push(placement);
        self.kept_demands.push(j.demand);
        controller
            .write_status(&j.record, &j.old_status, &j.status, report)
            .await
    }

    /// The job needs a (new) placement this pass; `planned`: the rebalancer's.
    fn place(&mut self, j: JobPass, planned: Option<JobPlacement>) {
        self.to_place.push(ToPlace {
            record: j.record,
            job: j.job,
            demand: j.demand,
            status: j.status,
            jar: j.jar,
            planned,
        });
    }
}

impl Controller {
    pub(super) async fn reconcile_job(
        &self,
        record: Versioned<JobRecord>,
        seen: PassView<'_>,
        out: &mut Collected,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let PassView { views, moves } = seen;
        let Some(mut j) = self.decode_job(record, report).await? else {
            return Ok(());
        };
        let id = j.id();
        report.jars.insert(id.clone(), j.status.jar.clone());
        let placement = j
            .record
            .value
            .placement
            .as_ref()
            .and_then(|p| p.detail.clone());
        let Some(placement) = placement else {
            return self.reconcile_unplaced(j, out, report).await;
        };
        let generation = j.generation();
        if let Some(held) = self.failover.held(&id) {
            // The failover engine is fencing, relaunching or moving this job, or holds it
            // down: its placement and generation are the engine's until it is done, and the
            // status says what the engine is doing.
            let view = views.get(&placement.site);
            let observed = view
                .and_then(|v| v.job(&id).find(|o| o.generation == generation))
                .map(|o| o.state);
            let (phase, message) =
                held.status(observed, view.is_some(), j.status.message.as_deref());
            j.status.site = Some(placement.site.0.clone());
            j.status.phase = phase;
            j.status.message = Some(message);
            return out.keep(self, j, placement, report).await;
        }
        let Some(view) = views.get(&placement.site) else {
            // Its site did not answer: the job may well still run there. Keep its capacity
            // booked and leave moving it to site failover.
            j.status.phase = JobPhase::Unknown;
            j.status.message = Some(format!("site {} is unreachable", placement.site));
            return self
                .write_status(&j.record, &j.old_status, &j.status, report)
                .await;
        };
        let observation = view.job(&id).find(|o| o.generation == generation).cloned();

        if j.status.launched_spec.as_deref() != Some(j.hash.as_str())
            && j.status.launched_spec.is_some()
        {
            return self
                .relaunch_changed_spec(j, placement, view, observation, out, report)
                .await;
        }
        let j = match moves.get(&id) {
            Some(due)
                if observation
                    .as_ref()
                    .is_some_and(|o| o.state == JobState::Running)
                    && due.to.site == placement.site
                    && !matches!(j.jar, JarGate::Waiting(_)) =>
            {
                match self.start_move(j, &placement, view, due, out).await {
                    Some(j) => j,
                    None => return Ok(()),
                }
            }
            _ => j,
        };
        match observation {
            Some(observation) => {
                self.follow_observed(j, placement, view, observation, out, report)
                    .await
            }
            None if report.launched.contains(&(id, generation)) => {
                // The failover engine launched it earlier in this pass (after the sites were
                // observed): nothing to do until the next observation.
                let mut j = j;
                j.status.phase = JobPhase::Launching;
                j.status.site = Some(placement.site.0.clone());
                out.keep(self, j, placement, report).await
            }
            None => self.launch_again(j, placement, view, out, report).await,
        }
    }

    /// The stored job at its effective spec, with its jar gate. `None`: a record the
    /// controller must not act on, marked failed with the reason and reported.
    async fn decode_job(
        &self,
        record: Versioned<JobRecord>,
        report: &mut PassReport,
    ) -> Result<Option<JobPass>, StateError> {
        let old_status = record.value.status.clone();
        let mut status = old_status.clone();
        // A scale profile active now (policy `scaleProfiles`) makes the job run scaled: its
        // spec hash then differs from the launched one, so the change goes through the
        // savepoint relaunch, and back again when the profile ends.
        let mut profile = None;
        let decoded = stream_job_of(&record.value).and_then(|job| {
            let (job, active) = self
                .policy
                .scale_profiles()
                .effective(&job, self.clock.now());
            profile = active.map(|p| (p.name.clone(), p.parallelism_factor));
            let demand = job.demand().map_err(|e| e.to_string())?;
            let hash = spec_hash(&job)?;
            Ok((job, demand, hash))
        });
        let (job, demand, hash) = match decoded {
            Ok(decoded) => decoded,
            Err(message) => {
                // Not acted on (never placed, launched or relaunched) and reported; the pass
                // goes on with the other jobs. Whatever runs under its placement stays, as the
                // store still places it there.
                status.phase = JobPhase::Failed;
                status.message = Some(format!(
                    "stored spec is unusable: {message}; fix the job and re-apply it"
                ));
                let id = JobId::new(&record.value.namespace, &record.value.name);
                if status != old_status {
                    tracing::warn!(job = %id, reason = %message, "stored job not acted on");
                }
                report.unusable.push((id, message));
                self.write_status(&record, &old_status, &status, report)
                    .await?;
                return Ok(None);
            }
        };
        let jar = self.jar_pass(&job, &hash, &mut status);
        Ok(Some(JobPass {
            record,
            job,
            demand,
            hash,
            jar,
            old_status,
            status,
            profile,
        }))
    }

    /// A job without a placement is placed, unless it failed and its spec did not change
    /// since (it waits for a fix).
    async fn reconcile_unplaced(
        &self,
        j: JobPass,
        out: &mut Collected,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let spec_changed = j.status.launched_spec.as_deref() != Some(j.hash.as_str());
        if j.status.phase != JobPhase::Failed || spec_changed {
            out.place(j, None);
            Ok(())
        } else {
            // Its jar state may still have moved on.
            self.write_status(&j.record, &j.old_status, &j.status, report)
                .await
        }
    }

    /// The spec changed: stop this generation with a savepoint and relaunch with the new
    /// spec from it, once the new spec's jar is in place (until then the running generation
    /// stays).
    async fn relaunch_changed_spec(
        &self,
        mut j: JobPass,
        placement: JobPlacement,
        view: &SiteView,
        observation: Option<JobObservation>,
        out: &mut Collected,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        if let JarGate::Waiting(reason) = &j.jar {
            j.status.message = Some(format!(
                "spec changed; {reason}; the running generation stays until then"
            ));
            return out.keep(self, j, placement, report).await;
        }
        let (id, generation) = (j.id(), j.generation());
        let restore = match &observation {
            Some(o) if o.state == JobState::Running => {
                let target = crate::job::savepoint_dir(&j.job);
                match view
                    .site
                    .stop_with_savepoint(&id, generation, &target)
                    .await
                {
                    // Its completion time as this controller saw it confirmed.
                    Ok(path) => Some(Restore {
                        path,
                        completed_at: Some(chrono::Utc::now()),
                    }),
                    Err(error) => {
                        self.count_site_error(&placement.site, &error);
                        tracing::warn!(job = %id, %error, "savepoint failed; relaunching from the latest checkpoint");
                        None
                    }
                }
            }
            _ => None,
        };
        let _ = view.site.stop(&id, generation).await;
        match restore {
            Some(savepoint) => j.status.set_restore(Some(savepoint)),
            None => j.status.restore_from_last_checkpoint(),
        }
        j.status.relaunches = 0;
        j.status.message = Some(match &j.profile {
            Some((name, factor)) => format!(
                "scale profile {name} (parallelism x{factor}) applies: relaunching at parallelism {}",
                j.job.spec.parallelism
            ),
            None => "spec changed; relaunching with the new spec".into(),
        });
        out.place(j, None);
        Ok(())
    }

    /// Off borrowed capacity before its window closes, or off a node that breaks another
    /// rule now: the spec-change path with the rebalancer's placement (same site, so the
    /// savepoint is readable there). `Some(job)` back when the savepoint failed: it keeps
    /// running where it is, and the next pass tries again.
    async fn start_move(
        &self,
        mut j: JobPass,
        placement: &JobPlacement,
        view: &SiteView,
        due: &RebalanceMove,
        out: &mut Collected,
    ) -> Option<JobPass> {
        let (id, generation) = (j.id(), j.generation());
        let target = crate::job::savepoint_dir(&j.job);
        let what = format!("{id}@{}#{generation}", placement.site);
        match view
            .site
            .stop_with_savepoint(&id, generation, &target)
            .await
        {
            Ok(path) => {
                let _ = view.site.stop(&id, generation).await;
                j.status.set_restore(Some(Restore {
                    path,
                    completed_at: Some(chrono::Utc::now()),
                }));
                j.status.relaunches = 0;
                j.status.message = Some(format!("moving: {}", due.reason));
                self.rebalance.record(self.clock.now());
                self.metrics.rebalance_moves.inc();
                let nodes: Vec<String> = due
                    .to
                    .pods
                    .iter()
                    .filter(|p| {
                        due.from
                            .pods
                            .iter()
                            .any(|f| f.role == p.role && f.index == p.index)
                    })
                    .map(|p| p.node.clone())
                    .collect();
                tracing::info!(job = %id, reason = %due.reason, to = ?nodes, "moving: a running job breaks a rule (rebalance)");
                self.audit(
                    "rebalance-move",
                    &what,
                    &format!(
                        "ok: {}; deadline {}; {} pods to {}",
                        due.reason,
                        due.deadline.to_rfc3339(),
                        nodes.len(),
                        nodes.join(", ")
                    ),
                )
                .await;
                out.place(j, Some(due.to.clone()));
                None
            }
            Err(error) => {
                self.count_site_error(&placement.site, &error);
                tracing::warn!(job = %id, %error, "savepoint for a move failed; retried next pass");
                self.audit(
                    "rebalance-move",
                    &what,
                    &format!("failed: savepoint: {error}; {}", due.reason),
                )
                .await;
                Some(j)
            }
        }
    }

    /// The site runs the stored generation: its status follows what the site reports.
    async fn follow_observed(
        &self,
        mut j: JobPass,
        placement: JobPlacement,
        view: &SiteView,
        observation: JobObservation,
        out: &mut Collected,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        match observation.state {
            JobState::Running | JobState::Restarting | JobState::Unknown => {
                j.status.phase = match observation.state {
                    JobState::Running => JobPhase::Running,
                    JobState::Restarting => JobPhase::Restarting,
                    _ => j.status.phase,
                };
                j.status.site = Some(placement.site.0.clone());
                // A job that must move but fits nowhere says so while it runs.
                j.status.message = self
                    .rebalance
                    .stuck_reason(&j.id())
                    .map(|why| format!("must move but cannot: {why}"));
                self.record_checkpoint(&mut j, &placement, &observation, report)
                    .await?;
                out.keep(self, j, placement, report).await
            }
            JobState::Finished => {
                j.status.phase = JobPhase::Finished;
                j.status.message = None;
                out.keep(self, j, placement, report).await
            }
            JobState::Failed if self.failover_manages(&j.job) => {
                // The failover engine relaunches it (in its site, then the other after
                // repeated failures); it has seen the same observation this pass.
                j.status.phase = JobPhase::Failed;
                j.status.site = Some(placement.site.0.clone());
                j.status.message = Some(format!(
                    "generation {} failed in {}; the failover engine relaunches it",
                    j.generation(),
                    placement.site
                ));
                out.keep(self, j, placement, report).await
            }
            JobState::Failed => self.relaunch_failed(j, placement, view, out, report).await,
        }
    }

    /// A newer completed checkpoint than the status holds is recorded as the `completed`
    /// pointer for the site, and resets the relaunch count (progress since the last one).
    async fn record_checkpoint(
        &self,
        j: &mut JobPass,
        placement: &JobPlacement,
        observation: &JobObservation,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let Some(checkpoint) = &observation.latest_completed_checkpoint else {
            return Ok(());
        };
        let newer = j.status.last_checkpoint.as_ref().is_none_or(|c| {
            c.id < checkpoint.id || c.path != checkpoint.path && c.id == checkpoint.id
        });
        if !newer {
            return Ok(());
        }
        self.store
            .put_checkpoint(
                &j.record.value.namespace,
                &j.record.value.name,
                CheckpointKind::Completed,
                &placement.site.0,
                &CheckpointPointer {
                    checkpoint_id: checkpoint.id,
                    uri: checkpoint.path.clone(),
                    recorded_at_unix_ms: checkpoint.completed_at.timestamp_millis(),
                },
            )
            .await?;
        report.checkpoints_recorded += 1;
        j.status.relaunches = 0;
        j.status.last_checkpoint = Some(LastCheckpoint {
            id: checkpoint.id,
            path: checkpoint.path.clone(),
            completed_at: Some(checkpoint.completed_at),
        });
        Ok(())
    }

    /// Flink gave up or the JobManager's node is gone, and the failover engine does not
    /// manage the job: stop this generation and relaunch from the latest checkpoint, unless
    /// relaunches ran out (`maxRelaunchesPerSite`) or `failover.mode` is none.
    async fn relaunch_failed(
        &self,
        mut j: JobPass,
        placement: JobPlacement,
        view: &SiteView,
        out: &mut Collected,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let (id, generation) = (j.id(), j.generation());
        if let Err(error) = view.site.stop(&id, generation).await {
            self.count_site_error(&placement.site, &error);
        }
        let max = j.job.spec.failover.max_relaunches_per_site;
        if j.job.spec.failover.mode == scheduler::input::streamjob::FailoverTrigger::None
            || j.status.relaunches >= max
        {
            j.status.phase = JobPhase::Failed;
            j.status.message = Some(if j.status.relaunches >= max {
                format!(
                    "failed {} times in a row in {} (spec.failover.maxRelaunchesPerSite is {max}); fix the job and re-apply it",
                    j.status.relaunches.saturating_add(1),
                    placement.site
                )
            } else {
                "failed; spec.failover.mode is none, so twinsite does not relaunch it".into()
            });
            return self.clear_placement(&j, report).await;
        }
        j.status.relaunches += 1;
        j.status.restore_from_last_checkpoint();
        j.status.message = Some(format!(
            "generation {generation} failed in {}; relaunch {} of {max}",
            placement.site, j.status.relaunches
        ));
        out.place(j, None);
        Ok(())
    }

    /// Writes the job's status with no placement (whatever ran under it was stopped):
    /// `failed` waits for a fix, `pending` is placed afresh next pass.
    async fn clear_placement(
        &self,
        j: &JobPass,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let mut cleared = j.record.value.clone();
        cleared.placement = None;
        cleared.status = j.status.clone();
        self.put_if_unchanged(&cleared, j.record.revision, report)
            .await?;
        report.count(j.status.phase);
        Ok(())
    }

    /// Persisted but not running there: the launch never arrived (a crash between
    /// persisting and launching) or was refused. Launch the same generation again; the site
    /// ignores a generation it already runs.
    async fn launch_again(
        &self,
        mut j: JobPass,
        placement: JobPlacement,
        view: &SiteView,
        out: &mut Collected,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let (id, generation) = (j.id(), j.generation());
        let epoch = match self.site_epoch(&placement.site).await? {
            Ok(epoch) => epoch,
            Err(reason) => {
                j.status.site = Some(placement.site.0.clone());
                j.status.message = Some(reason);
                return out.keep(self, j, placement, report).await;
            }
        };
        let jar_uri = match self.site_jar_uri(&j.job, &j.status, &placement.site) {
            Ok(uri) => uri,
            Err(reason) => {
                // Not launched without its jar in the site; retried every pass.
                j.status.site = Some(placement.site.0.clone());
                j.status.message = Some(format!("not launched: {reason}"));
                return out.keep(self, j, placement, report).await;
            }
        };
        let spec = launch_spec(
            &j.job,
            generation,
            &placement,
            j.status.restore(),
            self.storage_roots.get(&placement.site).map(String::as_str),
            epoch,
        )
        .map(|mut spec| {
            spec.jar_uri = jar_uri;
            spec
        });
        match spec {
            Ok(spec) => match view.site.launch(&spec).await {
                Ok(()) => {
                    j.status.phase = JobPhase::Launching;
                    j.status.message = None;
                    report.launched.push((id.clone(), generation));
                    self.metrics
                        .launches
                        .get_or_create(&super::super::metrics::SiteLabel {
                            site: placement.site.0.clone(),
                        })
                        .inc();
                }
                Err(error @ SiteError::StaleGeneration { .. }) => {
                    // This generation was stopped here (a relaunch whose record write lost a
                    // race): it can never run again, so place the job afresh under a new
                    // generation.
                    self.count_site_error(&placement.site, &error);
                    j.status.phase = JobPhase::Pending;
                    j.status.message = Some(format!("{error}; placing it again"));
                    return self.clear_placement(&j, report).await;
                }
                Err(error) => {
                    self.count_site_error(&placement.site, &error);
                    j.status.message = Some(format!("launch failed: {error}"));
                }
            },
            Err(error) => {
                j.status.phase = JobPhase::Failed;
                j.status.message = Some(error.to_string());
            }
        }
        j.status.site = Some(placement.site.0.clone());
        out.keep(self, j, placement, report).await
    }
}
