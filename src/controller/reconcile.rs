//! One reconcile pass: stored jobs in → observe sites → stop what must not run → relaunch
//! what failed → place and launch what has no placement → record status and checkpoints.
//!
//! Restart safety comes from ordering: a job's new generation and placement are persisted
//! *before* the launch, and a site launches a given generation at most once (idempotent
//! launch). A controller that dies between the two finds the persisted placement, sees the
//! generation not running, and launches that same generation: never a second generation, and
//! never a relaunch of a job that is already running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use scheduler::input::StreamJob;
use scheduler::model::{JobDemand, JobId, JobPlacement, SiteId, SiteSnapshot};
use scheduler::placement::rebalance::{self, RebalanceMove};
use scheduler::placement::{self, IncrementalPlacer, PlacementOptions, PlacementRequest};

use super::failover::NoGeneration;
use super::jars::{JarGate, JarStatus};
use super::launch::{launch_spec, spec_hash};
use super::status::{JobPhase, JobStatus, LastCheckpoint};
use super::{Controller, stream_job_of};
use crate::site::{JobObservation, JobState, Site, SiteError};
use crate::state::{
    CheckpointKind, CheckpointPointer, Expected, JobRecord, StateError, UnreadableRecord, Versioned,
};

/// What one pass did; logged, and returned for tests and figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    pub jobs: usize,
    pub launched: Vec<(JobId, u64)>,
    pub stopped: Vec<(SiteId, JobId, u64)>,
    pub unplaced: Vec<(JobId, String)>,
    /// Stored records not acted on, with the reason (see `stream_job_of`).
    pub unusable: Vec<(JobId, String)>,
    /// Job records that do not decode at all (see `StateStore::scan_jobs`): their jobs are
    /// counted `failed`, and nothing of theirs is stopped, launched or relaunched.
    pub unreadable: Vec<UnreadableRecord>,
    pub unreachable: Vec<SiteId>,
    pub checkpoints_recorded: usize,
    /// Writes skipped because the record changed under us (an API edit); redone next pass.
    pub conflicts: usize,
    pub by_phase: BTreeMap<JobPhase, i64>,
    /// Each usable job's jar state as this pass left it (`None`: nothing to publish).
    pub jars: BTreeMap<JobId, Option<JarStatus>>,
    pub elapsed: std::time::Duration,
}

impl PassReport {
    fn count(&mut self, phase: JobPhase) {
        *self.by_phase.entry(phase).or_insert(0) += 1;
    }
}

/// A reachable site as observed at the start of the pass.
struct SiteView {
    site: Arc<dyn Site>,
    snapshot: SiteSnapshot,
    jobs: Vec<JobObservation>,
}

impl SiteView {
    fn job(&self, job: &JobId) -> impl Iterator<Item = &JobObservation> {
        self.jobs.iter().filter(move |o| &o.job == job)
    }
}

/// What a pass saw and decided before its per-job step: the reachable sites, and the moves
/// off borrowed capacity due now.
#[derive(Clone, Copy)]
struct PassView<'a> {
    views: &'a BTreeMap<SiteId, SiteView>,
    moves: &'a BTreeMap<JobId, RebalanceMove>,
}

/// A job that needs a (new) placement in this pass.
struct ToPlace {
    record: Versioned<JobRecord>,
    job: StreamJob,
    demand: JobDemand,
    status: JobStatus,
    /// Where its jar allows it to be launched.
    jar: JarGate,
    /// A move off borrowed capacity decided this pass: its placement, not the placer's.
    planned: Option<JobPlacement>,
}

impl Controller {
    /// One pass. Fails only on state-store errors (fencing above all: the caller must stop
    /// acting); site errors are recorded per site and the pass goes on.
    pub async fn reconcile_once(&self) -> Result<PassReport, StateError> {
        let started = Instant::now();
        let mut report = PassReport::default();
        let scan = self.store.scan_jobs().await?;
        let mut records = scan.jobs;
        report.unreadable = scan.unreadable;
        let read_at = tokio::time::Instant::now();
        report.jobs = records.len();
        if let Some(agents) = &self.agents {
            agents.refresh().await;
        }
        let views = self.observe(&mut report).await;

        // The failover engine acts first (node and site loss, failed jobs, operations); the
        // rest of the pass then works from the records it rewrote.
        let observed = super::failover::Observed {
            snapshots: views
                .iter()
                .map(|(k, v)| (k.clone(), &v.snapshot))
                .collect(),
            jobs: views
                .iter()
                .map(|(k, v)| (k.clone(), v.jobs.as_slice()))
                .collect(),
        };
        if let Some(launched) = self.drive_failover(&records, &observed, read_at).await? {
            report.launched.extend(launched);
            let scan = self.store.scan_jobs().await?;
            records = scan.jobs;
            report.unreadable = scan.unreadable;
        }
        for _ in 0..report.unreadable.len() {
            report.count(JobPhase::Failed);
        }

        self.stop_unwanted(&records, &views, &mut report).await;

        // Jobs on borrowed offline capacity whose window closes soon move first (most
        // important first, within the rebalance budget): stop with savepoint, relaunch.
        let now = self.clock.now();
        let snapshots: BTreeMap<SiteId, SiteSnapshot> = views
            .iter()
            .map(|(id, view)| (id.clone(), view.snapshot.clone()))
            .collect();
        let moves = self.due_moves(&records, &snapshots, now).await;

        let mut kept: Vec<JobPlacement> = Vec::new();
        let mut kept_demands: Vec<JobDemand> = Vec::new();
        let mut to_place: Vec<ToPlace> = Vec::new();
        for record in records {
            self.reconcile_job(
                record,
                PassView {
                    views: &views,
                    moves: &moves,
                },
                &mut kept,
                &mut kept_demands,
                &mut to_place,
                &mut report,
            )
            .await?;
        }
        self.place_and_launch(to_place, kept, kept_demands, &views, &mut report)
            .await?;
        self.record_jar_states(&report.jars);

        // Site records are otherwise read only when a launch needs one: listing them (two
        // small records) reports an unreadable one before it holds a launch.
        self.store.list_sites().await?;
        self.store.recheck_unreadable().await?;
        report.elapsed = started.elapsed();
        self.metrics.set_jobs_by_phase(&report.by_phase);
        self.metrics
            .set_unreadable_records(&self.store.unreadable_records());
        self.metrics
            .reconcile_seconds
            .observe(report.elapsed.as_secs_f64());
        Ok(report)
    }

    async fn observe(&self, report: &mut PassReport) -> BTreeMap<SiteId, SiteView> {
        let mut views = BTreeMap::new();
        for (id, site) in &self.sites {
            let observed = async {
                let snapshot = site.snapshot().await?;
                let jobs = site.jobs().await?;
                Ok::<_, SiteError>((snapshot, jobs))
            }
            .await;
            let label = super::metrics::SiteLabel { site: id.0.clone() };
            let observed = match (observed, &self.agents) {
                (Ok((_, jobs)), Some(agents)) if !agents.lease_alive(id) => {
                    if agents.should_stop_for(id, chrono::Utc::now()) {
                        self.stop_unguarded(id, site.as_ref(), &jobs).await;
                    }
                    Err(SiteError::Unreachable {
                        site: id.clone(),
                        reason: "its agent holds no lease: the site is fencing itself, nothing runs or launches there".into(),
                    })
                }
                (observed, _) => observed,
            };
            match observed {
                Ok((snapshot, jobs)) => {
                    self.metrics.site_reachable.get_or_create(&label).set(1);
                    views.insert(
                        id.clone(),
                        SiteView {
                            site: Arc::clone(site),
                            snapshot,
                            jobs,
                        },
                    );
                }
                Err(error) => {
                    self.metrics.site_reachable.get_or_create(&label).set(0);
                    self.count_site_error(id, &error);
                    tracing::warn!(site = %id, %error, "site not observed this pass");
                    report.unreachable.push(id.clone());
                }
            }
        }
        views
    }

    /// A guarded site whose agent has held no lease for longer than it needs to fence the
    /// site, while this controller reaches its API: its agent is dead (a cut-off one has
    /// stopped these itself). Nothing may run there once the site can be judged lost, so
    /// the controller stops them.
    async fn stop_unguarded(
        &self,
        id: &SiteId,
        site: &dyn crate::site::Site,
        jobs: &[JobObservation],
    ) {
        for job in jobs {
            match site.stop(&job.job, job.generation).await {
                Ok(()) => tracing::warn!(site = %id, job = %job.job, generation = job.generation,
                    "stopped: the site's agent holds no lease"),
                Err(error) => {
                    tracing::warn!(site = %id, job = %job.job, generation = job.generation,
                    %error, "cannot stop a generation of a site whose agent holds no lease")
                }
            }
        }
    }

    /// Stops every generation a site runs that the store does not place there: deleted jobs,
    /// superseded generations, and a job the store places in the other site (never two).
    /// A job whose record does not decode is not deleted: its generation and site are
    /// unknown, so none of its generations is stopped anywhere.
    async fn stop_unwanted(
        &self,
        records: &[Versioned<JobRecord>],
        views: &BTreeMap<SiteId, SiteView>,
        report: &mut PassReport,
    ) {
        let unreadable: std::collections::BTreeSet<JobId> = report
            .unreadable
            .iter()
            .filter_map(|u| u.job.as_ref())
            .map(|(namespace, name)| JobId::new(namespace, name))
            .collect();
        let wanted: BTreeMap<JobId, (Option<&str>, u64)> = records
            .iter()
            .map(|r| {
                (
                    JobId::new(&r.value.namespace, &r.value.name),
                    (
                        r.value.placement.as_ref().map(|p| p.site.as_str()),
                        r.value.generation,
                    ),
                )
            })
            .collect();
        for (site_id, view) in views {
            for observation in &view.jobs {
                if unreadable.contains(&observation.job) {
                    continue;
                }
                let reason = match wanted.get(&observation.job) {
                    None => "the job was deleted".to_string(),
                    Some((Some(site), generation))
                        if *site == site_id.0 && *generation == observation.generation =>
                    {
                        continue;
                    }
                    Some((None, _)) => "the job is being relaunched".to_string(),
                    Some((Some(site), generation)) if *site != site_id.0 => {
                        format!("the job runs in {site} (generation {generation})")
                    }
                    Some((_, generation)) => {
                        format!("generation {generation} superseded it")
                    }
                };
                match view
                    .site
                    .stop(&observation.job, observation.generation)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(site = %site_id, job = %observation.job, generation = observation.generation, %reason, "stopped");
                        self.metrics
                            .stops
                            .get_or_create(&super::metrics::SiteLabel {
                                site: site_id.0.clone(),
                            })
                            .inc();
                        self.audit(
                            "stop",
                            &format!("{}@{}#{}", observation.job, site_id, observation.generation),
                            &format!("ok: {reason}"),
                        )
                        .await;
                        report.stopped.push((
                            site_id.clone(),
                            observation.job.clone(),
                            observation.generation,
                        ));
                    }
                    Err(error) => {
                        self.count_site_error(site_id, &error);
                        tracing::warn!(site = %site_id, job = %observation.job, %error, "stop failed; retried next pass");
                    }
                }
            }
        }
    }

    async fn reconcile_job(
        &self,
        record: Versioned<JobRecord>,
        seen: PassView<'_>,
        kept: &mut Vec<JobPlacement>,
        kept_demands: &mut Vec<JobDemand>,
        to_place: &mut Vec<ToPlace>,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let PassView { views, moves } = seen;
        let old_status = record.value.status.clone();
        let mut status = old_status.clone();
        // A scale profile active now (policy `scaleProfiles`) makes the job run scaled: its
        // spec hash then differs from the launched one, so the change goes through the
        // savepoint relaunch below, and back again when the profile ends.
        let mut profile = None;
        let (job, demand, hash) = match stream_job_of(&record.value).and_then(|job| {
            let (job, active) = self
                .policy
                .scale_profiles()
                .effective(&job, self.clock.now());
            profile = active.map(|p| (p.name.clone(), p.parallelism_factor));
            let demand = job.demand().map_err(|e| e.to_string())?;
            let hash = spec_hash(&job)?;
            Ok((job, demand, hash))
        }) {
            Ok(parsed) => parsed,
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
                return Ok(());
            }
        };
        let id = job.id();
        let jar = self.jar_pass(&job, &hash, &mut status);
        report.jars.insert(id.clone(), status.jar.clone());
        let placement = record
            .value
            .placement
            .as_ref()
            .and_then(|p| p.detail.clone());

        let Some(placement) = placement else {
            let spec_changed = status.launched_spec.as_deref() != Some(hash.as_str());
            if status.phase != JobPhase::Failed || spec_changed {
                to_place.push(ToPlace {
                    record,
                    job,
                    demand,
                    status,
                    jar,
                    planned: None,
                });
            } else {
                // Its jar state may still have moved on.
                self.write_status(&record, &old_status, &status, report)
                    .await?;
            }
            return Ok(());
        };

        let generation = record.value.generation;
        if let Some(held) = self.failover.held(&id) {
            // The failover engine is fencing, relaunching or moving this job, or holds it
            // down: its placement and generation are the engine's until it is done, and the
            // status says what the engine is doing.
            let view = views.get(&placement.site);
            let observed = view
                .and_then(|v| v.job(&id).find(|o| o.generation == generation))
                .map(|o| o.state);
            let (phase, message) = held.status(observed, view.is_some(), status.message.as_deref());
            status.site = Some(placement.site.0.clone());
            status.phase = phase;
            status.message = Some(message);
            kept.push(placement);
            kept_demands.push(demand);
            self.write_status(&record, &old_status, &status, report)
                .await?;
            return Ok(());
        }
        let Some(view) = views.get(&placement.site) else {
            // Its site did not answer: the job may well still run there. Keep its capacity
            // booked and leave moving it to site failover.
            status.phase = JobPhase::Unknown;
            status.message = Some(format!("site {} is unreachable", placement.site));
            self.write_status(&record, &old_status, &status, report)
                .await?;
            return Ok(());
        };
        let observation = view.job(&id).find(|o| o.generation == generation).cloned();

        if status.launched_spec.as_deref() != Some(hash.as_str()) && status.launched_spec.is_some()
        {
            if let JarGate::Waiting(reason) = &jar {
                // The new spec's jar is not in place yet: the running generation stays until
                // it is, rather than stopping for a launch that cannot happen.
                status.message = Some(format!(
                    "spec changed; {reason}; the running generation stays until then"
                ));
                kept.push(placement);
                kept_demands.push(demand);
                self.write_status(&record, &old_status, &status, report)
                    .await?;
                return Ok(());
            }
            // The spec changed: stop this generation with a savepoint and relaunch with the
            // new spec from it.
            let restore = match &observation {
                Some(o) if o.state == JobState::Running => {
                    let target = crate::job::savepoint_dir(&job);
                    match view
                        .site
                        .stop_with_savepoint(&id, generation, &target)
                        .await
                    {
                        // Its completion time as this controller saw it confirmed.
                        Ok(path) => Some(super::launch::Restore {
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
                Some(savepoint) => status.set_restore(Some(savepoint)),
                None => status.restore_from_last_checkpoint(),
            }
            status.relaunches = 0;
            status.message = Some(match &profile {
                Some((name, factor)) => format!(
                    "scale profile {name} (parallelism x{factor}) applies: relaunching at parallelism {}",
                    job.spec.parallelism
                ),
                None => "spec changed; relaunching with the new spec".into(),
            });
            to_place.push(ToPlace {
                record,
                job,
                demand,
                status,
                jar,
                planned: None,
            });
            return Ok(());
        }

        if let Some(due) = moves.get(&id)
            && observation
                .as_ref()
                .is_some_and(|o| o.state == JobState::Running)
            && due.to.site == placement.site
            && !matches!(jar, JarGate::Waiting(_))
        {
            // Off borrowed capacity before its window closes, or off a node that breaks another
            // rule now: the spec-change path with the rebalancer's placement (same site, so the
            // savepoint is readable there).
            let target = crate::job::savepoint_dir(&job);
            let what = format!("{id}@{}#{generation}", placement.site);
            match view
                .site
                .stop_with_savepoint(&id, generation, &target)
                .await
            {
                Ok(path) => {
                    let _ = view.site.stop(&id, generation).await;
                    status.set_restore(Some(super::launch::Restore {
                        path,
                        completed_at: Some(chrono::Utc::now()),
                    }));
                    status.relaunches = 0;
                    status.message = Some(format!("moving: {}", due.reason));
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
                    to_place.push(ToPlace {
                        record,
                        job,
                        demand,
                        status,
                        jar,
                        planned: Some(due.to.clone()),
                    });
                    return Ok(());
                }
                Err(error) => {
                    // It keeps running where it is; the next pass tries again.
                    self.count_site_error(&placement.site, &error);
                    tracing::warn!(job = %id, %error, "savepoint for a move failed; retried next pass");
                    self.audit(
                        "rebalance-move",
                        &what,
                        &format!("failed: savepoint: {error}; {}", due.reason),
                    )
                    .await;
                }
            }
        }

        match observation {
            Some(observation) => match observation.state {
                JobState::Running | JobState::Restarting | JobState::Unknown => {
                    status.phase = match observation.state {
                        JobState::Running => JobPhase::Running,
                        JobState::Restarting => JobPhase::Restarting,
                        _ => status.phase,
                    };
                    status.site = Some(placement.site.0.clone());
                    // A job that must move but fits nowhere says so while it runs.
                    status.message = self
                        .rebalance
                        .stuck_reason(&id)
                        .map(|why| format!("must move but cannot: {why}"));
                    if let Some(checkpoint) = &observation.latest_completed_checkpoint {
                        let newer = status.last_checkpoint.as_ref().is_none_or(|c| {
                            c.id < checkpoint.id
                                || c.path != checkpoint.path && c.id == checkpoint.id
                        });
                        if newer {
                            self.store
                                .put_checkpoint(
                                    &record.value.namespace,
                                    &record.value.name,
                                    CheckpointKind::Completed,
                                    &placement.site.0,
                                    &CheckpointPointer {
                                        checkpoint_id: checkpoint.id,
                                        uri: checkpoint.path.clone(),
                                        recorded_at_unix_ms: checkpoint
                                            .completed_at
                                            .timestamp_millis(),
                                    },
                                )
                                .await?;
                            report.checkpoints_recorded += 1;
                            // Progress since the last relaunch: the job is healthy again.
                            status.relaunches = 0;
                            status.last_checkpoint = Some(LastCheckpoint {
                                id: checkpoint.id,
                                path: checkpoint.path.clone(),
                                completed_at: Some(checkpoint.completed_at),
                            });
                        }
                    }
                    kept.push(placement);
                    kept_demands.push(demand);
                    self.write_status(&record, &old_status, &status, report)
                        .await?;
                }
                JobState::Finished => {
                    status.phase = JobPhase::Finished;
                    status.message = None;
                    kept.push(placement);
                    kept_demands.push(demand);
                    self.write_status(&record, &old_status, &status, report)
                        .await?;
                }
                JobState::Failed if self.failover_manages(&job) => {
                    // The failover engine relaunches it (in its site, then the other after
                    // repeated failures); it has seen the same observation this pass.
                    status.phase = JobPhase::Failed;
                    status.site = Some(placement.site.0.clone());
                    status.message = Some(format!(
                        "generation {generation} failed in {}; the failover engine relaunches it",
                        placement.site
                    ));
                    kept.push(placement);
                    kept_demands.push(demand);
                    self.write_status(&record, &old_status, &status, report)
                        .await?;
                }
                JobState::Failed => {
                    // Flink gave up or the JobManager's node is gone: stop this generation
                    // and relaunch from the latest checkpoint, unless relaunches ran out.
                    if let Err(error) = view.site.stop(&id, generation).await {
                        self.count_site_error(&placement.site, &error);
                    }
                    let max = job.spec.failover.max_relaunches_per_site;
                    if job.spec.failover.mode == scheduler::input::streamjob::FailoverTrigger::None
                        || status.relaunches >= max
                    {
                        status.phase = JobPhase::Failed;
                        status.message = Some(if status.relaunches >= max {
                            format!(
                                "failed {} times in a row in {} (spec.failover.maxRelaunchesPerSite is {max}); fix the job and re-apply it",
                                status.relaunches.saturating_add(1),
                                placement.site
                            )
                        } else {
                            "failed; spec.failover.mode is none, so twinsite does not relaunch it"
                                .into()
                        });
                        let mut cleared = record.value.clone();
                        cleared.placement = None;
                        cleared.status = status.clone();
                        self.put_if_unchanged(&cleared, record.revision, report)
                            .await?;
                        report.count(JobPhase::Failed);
                        return Ok(());
                    }
                    status.relaunches += 1;
                    status.restore_from_last_checkpoint();
                    status.message = Some(format!(
                        "generation {generation} failed in {}; relaunch {} of {max}",
                        placement.site, status.relaunches
                    ));
                    to_place.push(ToPlace {
                        record,
                        job,
                        demand,
                        status,
                        jar,
                        planned: None,
                    });
                }
            },
            None if report.launched.contains(&(id.clone(), generation)) => {
                // The failover engine launched it earlier in this pass (after the sites were
                // observed): nothing to do until the next observation.
                status.phase = JobPhase::Launching;
                status.site = Some(placement.site.0.clone());
                kept.push(placement);
                kept_demands.push(demand);
                self.write_status(&record, &old_status, &status, report)
                    .await?;
            }
            None => {
                // Persisted but not running there: the launch never arrived (a crash between
                // persisting and launching) or was refused. Launch the same generation again;
                // the site ignores a generation it already runs.
                let epoch = match self.site_epoch(&placement.site).await? {
                    Ok(epoch) => epoch,
                    Err(reason) => {
                        status.site = Some(placement.site.0.clone());
                        status.message = Some(reason);
                        kept.push(placement);
                        kept_demands.push(demand);
                        self.write_status(&record, &old_status, &status, report)
                            .await?;
                        return Ok(());
                    }
                };
                let jar_uri = match self.site_jar_uri(&job, &status, &placement.site) {
                    Ok(uri) => uri,
                    Err(reason) => {
                        // Not launched without its jar in the site; retried every pass.
                        status.site = Some(placement.site.0.clone());
                        status.message = Some(format!("not launched: {reason}"));
                        kept.push(placement);
                        kept_demands.push(demand);
                        self.write_status(&record, &old_status, &status, report)
                            .await?;
                        return Ok(());
                    }
                };
                let spec = launch_spec(
                    &job,
                    generation,
                    &placement,
                    status.restore(),
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
                            status.phase = JobPhase::Launching;
                            status.message = None;
                            report.launched.push((id.clone(), generation));
                            self.metrics
                                .launches
                                .get_or_create(&super::metrics::SiteLabel {
                                    site: placement.site.0.clone(),
                                })
                                .inc();
                        }
                        Err(error @ SiteError::StaleGeneration { .. }) => {
                            // This generation was stopped here (a relaunch whose record write
                            // lost a race): it can never run again, so place the job afresh
                            // under a new generation.
                            self.count_site_error(&placement.site, &error);
                            status.phase = JobPhase::Pending;
                            status.message = Some(format!("{error}; placing it again"));
                            let mut cleared = record.value.clone();
                            cleared.placement = None;
                            cleared.status = status.clone();
                            self.put_if_unchanged(&cleared, record.revision, report)
                                .await?;
                            report.count(JobPhase::Pending);
                            return Ok(());
                        }
                        Err(error) => {
                            self.count_site_error(&placement.site, &error);
                            status.message = Some(format!("launch failed: {error}"));
                        }
                    },
                    Err(error) => {
                        status.phase = JobPhase::Failed;
                        status.message = Some(error.to_string());
                    }
                }
                status.site = Some(placement.site.0.clone());
                kept.push(placement);
                kept_demands.push(demand);
                self.write_status(&record, &old_status, &status, report)
                    .await?;
            }
        }
        Ok(())
    }

    async fn place_and_launch(
        &self,
        to_place: Vec<ToPlace>,
        mut kept: Vec<JobPlacement>,
        kept_demands: Vec<JobDemand>,
        views: &BTreeMap<SiteId, SiteView>,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        if to_place.is_empty() {
            return Ok(());
        }
        // A job whose jar is not in place waits, unplaced; the others go only to sites that
        // hold their jar (or need none: no storage root).
        let (mut to_place, waiting): (Vec<ToPlace>, Vec<ToPlace>) = to_place
            .into_iter()
            .partition(|t| !matches!(t.jar, JarGate::Waiting(_)));
        for t in &mut to_place {
            if let JarGate::Ready(verified) = &t.jar {
                let allowed: Vec<SiteId> = self
                    .sites
                    .keys()
                    .filter(|site| t.demand.sites.allows(site))
                    .filter(|site| {
                        verified.contains(*site) || !self.storage_roots.contains_key(*site)
                    })
                    .cloned()
                    .collect();
                t.demand.sites.allowed = allowed;
            }
        }
        // Most important first, so that when room runs out it is the least important waiting.
        // (`Priority` orders `Critical` highest.)
        to_place.sort_by(|a, b| {
            b.demand
                .priority
                .cmp(&a.demand.priority)
                .then_with(|| a.demand.id.cmp(&b.demand.id))
        });
        let snapshots: Vec<SiteSnapshot> = views.values().map(|v| v.snapshot.clone()).collect();
        let mut demands = kept_demands;
        demands.extend(to_place.iter().map(|t| t.demand.clone()));
        // Capacity whose lending window closes within the lead time takes nothing new.
        let now = self.clock.now();
        let policy = rebalance::placement_view(
            &self.policy.placement_policy(),
            self.policy.rebalance(),
            now,
        );
        // Moved jobs take their planned places; the placer works around them.
        kept.extend(to_place.iter().filter_map(|t| t.planned.clone()));
        let request = PlacementRequest {
            sites: &snapshots,
            jobs: &demands,
            policy: &policy,
            running: &[],
            at: now,
            options: PlacementOptions::default(),
        };
        let mut decided: BTreeMap<JobId, Result<JobPlacement, String>> = BTreeMap::new();
        if to_place.is_empty() {
            // Only jobs waiting for their jar.
        } else if kept.is_empty() {
            // Nothing runs yet: the full planner also honours failover reserves and tiers.
            let plan = placement::plan(&request);
            for p in plan.placements {
                decided.insert(p.job.clone(), Ok(p));
            }
            for u in plan.unplaced {
                decided.insert(u.job.clone(), Err(u.reason));
            }
        } else {
            let mut placer = IncrementalPlacer::new(&request, &kept);
            for t in &to_place {
                let outcome = match &t.planned {
                    Some(planned) => Ok(planned.clone()),
                    None => placer.place_one(&t.demand),
                };
                decided.insert(t.demand.id.clone(), outcome);
            }
            // The room a higher tier took is freed before it launches there.
            self.evict_preempted(placer.preemptions(), views, report)
                .await?;
        }

        for t in waiting {
            if let JarGate::Waiting(reason) = &t.jar {
                decided.insert(t.demand.id.clone(), Err(reason.clone()));
            }
            to_place.push(t);
        }
        for mut t in to_place {
            let id = t.demand.id.clone();
            let outcome = decided
                .remove(&id)
                .unwrap_or_else(|| Err("no reachable site".to_string()));
            match outcome {
                Err(reason) => {
                    t.status.phase = JobPhase::Pending;
                    t.status.message = Some(reason.clone());
                    t.status.site = None;
                    report.unplaced.push((id, reason));
                    let old = t.record.value.status.clone();
                    if t.record.value.placement.is_some() {
                        let mut cleared = t.record.value.clone();
                        cleared.placement = None;
                        cleared.status = t.status.clone();
                        self.put_if_unchanged(&cleared, t.record.revision, report)
                            .await?;
                        report.count(JobPhase::Pending);
                    } else {
                        self.write_status(&t.record, &old, &t.status, report)
                            .await?;
                    }
                }
                Ok(placement) => {
                    self.persist_and_launch(t, placement, views, report).await?;
                }
            }
        }
        Ok(())
    }

    /// Bumps the generation, persists it with the placement, then launches. In that order:
    /// see the module comment.
    async fn persist_and_launch(
        &self,
        t: ToPlace,
        placement: JobPlacement,
        views: &BTreeMap<SiteId, SiteView>,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        // One compare-and-set write carries the new generation and its placement: if the
        // record changed since this pass read it (an API edit, another writer), nothing is
        // written and nothing launched; the next pass starts from the new record.
        let revision = t.record.revision;
        let mut record = t.record.value.clone();
        let mut status = t.status;
        status.phase = JobPhase::Launching;
        status.site = Some(placement.site.0.clone());
        status.launched_spec = match spec_hash(&t.job) {
            Ok(hash) => Some(hash),
            Err(message) => {
                return self
                    .refuse_launch(record, revision, status, message, report)
                    .await;
            }
        };
        status.last_checkpoint = None;
        // The failover engine owns every generation change: it grants this one, and keeps
        // its own steps out until the write below is done (`GrantedGeneration`).
        let granted = match self
            .failover
            .grant_generation(&t.demand.id, record.generation)
            .await
        {
            Ok(granted) => granted,
            Err(NoGeneration::Exhausted(message)) => {
                return self
                    .refuse_launch(record, revision, status, message, report)
                    .await;
            }
            Err(NoGeneration::Wait(reason)) => {
                status.phase = JobPhase::Pending;
                status.site = None;
                status.message = Some(format!("not launched this pass: {reason}"));
                report.unplaced.push((t.demand.id.clone(), reason));
                record.status = status.clone();
                self.put_if_unchanged(&record, revision, report).await?;
                report.count(JobPhase::Pending);
                return Ok(());
            }
        };
        let generation = granted.generation;
        let epoch = match self.site_epoch(&placement.site).await? {
            Ok(epoch) => epoch,
            Err(reason) => {
                // Not a fault of the job: it waits, unplaced, until the site's record is
                // readable again.
                status.phase = JobPhase::Pending;
                status.site = None;
                status.message = Some(reason.clone());
                report.unplaced.push((t.demand.id.clone(), reason));
                record.status = status.clone();
                self.put_if_unchanged(&record, revision, report).await?;
                report.count(JobPhase::Pending);
                return Ok(());
            }
        };
        let jar_uri = match self.site_jar_uri(&t.job, &status, &placement.site) {
            Ok(uri) => uri,
            Err(reason) => {
                // Placement honours the jar's sites, so only a race lands here: wait, unplaced.
                status.phase = JobPhase::Pending;
                status.site = None;
                status.message = Some(format!("not launched: {reason}"));
                report.unplaced.push((t.demand.id.clone(), reason));
                record.status = status.clone();
                self.put_if_unchanged(&record, revision, report).await?;
                report.count(JobPhase::Pending);
                return Ok(());
            }
        };
        let spec = launch_spec(
            &t.job,
            generation,
            &placement,
            status.restore(),
            self.storage_roots.get(&placement.site).map(String::as_str),
            epoch,
        );
        let spec = match spec {
            Ok(mut spec) => {
                spec.jar_uri = jar_uri;
                spec
            }
            Err(error) => {
                return self
                    .refuse_launch(record, revision, status, error.to_string(), report)
                    .await;
            }
        };
        record.generation = generation;
        record.placement = Some(crate::state::JobPlacement {
            site: placement.site.0.clone(),
            detail: Some(placement.clone()),
        });
        record.status = status.clone();
        let written = self.put_if_unchanged(&record, revision, report).await?;
        // Stored (or refused): the engine adopts it from the record at its next step.
        drop(granted);
        if !written {
            return Ok(());
        }
        report.count(JobPhase::Launching);
        let Some(view) = views.get(&placement.site) else {
            return Ok(());
        };
        match view.site.launch(&spec).await {
            Ok(()) => {
                tracing::info!(job = %spec.job, generation, site = %placement.site, restore_from = ?spec.restore_from, "launched");
                self.metrics
                    .launches
                    .get_or_create(&super::metrics::SiteLabel {
                        site: placement.site.0.clone(),
                    })
                    .inc();
                report.launched.push((spec.job.clone(), generation));
            }
            Err(error) => {
                // The placement is persisted: the next pass sees the generation not running
                // and launches it again.
                self.count_site_error(&placement.site, &error);
                tracing::warn!(job = %spec.job, generation, %error, "launch failed; retried next pass");
            }
        }
        Ok(())
    }

    /// Records why a job cannot be launched, without spending a generation: `failed`, no
    /// placement (whatever ran under the old one was stopped before it was to be placed).
    async fn refuse_launch(
        &self,
        mut record: JobRecord,
        revision: i64,
        mut status: JobStatus,
        message: String,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        status.phase = JobPhase::Failed;
        status.site = None;
        status.message = Some(message);
        record.placement = None;
        record.status = status.clone();
        self.put_if_unchanged(&record, revision, report).await?;
        report.count(JobPhase::Failed);
        Ok(())
    }

    /// Whether the failover engine, not this pass, relaunches `job` when it fails.
    fn failover_manages(&self, job: &StreamJob) -> bool {
        self.failover.enabled()
            && job.spec.failover.mode != scheduler::input::streamjob::FailoverTrigger::None
    }

    /// Writes `status` when it differs from what is stored; counts the job's phase.
    async fn write_status(
        &self,
        record: &Versioned<JobRecord>,
        old: &JobStatus,
        status: &JobStatus,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        report.count(status.phase);
        // A new job's placeholder status is replaced by the first pass even when unchanged.
        if old == status && !record.value.status.is_accepted() {
            return Ok(());
        }
        let mut updated = record.value.clone();
        updated.status = status.clone();
        self.put_if_unchanged(&updated, record.revision, report)
            .await
            .map(|_| ())
    }

    /// A compare-and-set write; a lost race (an API edit) is counted, not an error.
    async fn put_if_unchanged(
        &self,
        record: &JobRecord,
        revision: i64,
        report: &mut PassReport,
    ) -> Result<bool, StateError> {
        match self
            .store
            .put_job(record, Expected::Revision(revision))
            .await
        {
            Ok(_) => Ok(true),
            Err(StateError::Conflict { .. }) => {
                report.conflicts += 1;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    fn count_site_error(&self, site: &SiteId, error: &SiteError) {
        self.metrics
            .site_errors
            .get_or_create(&super::metrics::ErrorLabel {
                site: site.0.clone(),
                kind: error.metric_label().into(),
            })
            .inc();
    }

    /// Appends the controller's own action to the audit log.
    pub(crate) async fn audit(&self, action: &str, target: &str, result: &str) {
        self.audit_as("controller", action, target, result).await;
    }
}

impl Controller {
    /// Stops each job the placer preempted (with a savepoint, so it resumes from it) and
    /// leaves it pending with the reason; the next pass places it where room allows. A job
    /// the failover engine holds is the engine's, and is left alone.
    async fn evict_preempted(
        &self,
        preemptions: &[scheduler::placement::Preemption],
        views: &BTreeMap<SiteId, SiteView>,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let mut done = std::collections::BTreeSet::new();
        for preemption in preemptions {
            let victim = &preemption.victim;
            if !done.insert(victim.clone()) || self.failover.held(victim).is_some() {
                continue;
            }
            let Some((namespace, name)) = victim.0.split_once('/') else {
                continue;
            };
            let Some(record) = self.store.get_job(namespace, name).await? else {
                continue;
            };
            let Ok(job) = stream_job_of(&record.value) else {
                continue;
            };
            let generation = record.value.generation;
            let mut status = record.value.status.clone();
            let what = format!("{victim}@{}#{generation}", preemption.site);
            let result = match views.get(&preemption.site) {
                None => "site unreachable: it stops when it is reached".to_string(),
                Some(view) => {
                    let target = crate::job::savepoint_dir(&job);
                    let outcome = match view
                        .site
                        .stop_with_savepoint(victim, generation, &target)
                        .await
                    {
                        Ok(path) => {
                            status.set_restore(Some(super::launch::Restore {
                                path,
                                completed_at: Some(self.clock.now()),
                            }));
                            "ok: stopped with a savepoint".to_string()
                        }
                        Err(error) => {
                            // The room must be freed either way; it resumes from its latest
                            // checkpoint instead.
                            self.count_site_error(&preemption.site, &error);
                            status.restore_from_last_checkpoint();
                            format!("ok: stopped (savepoint failed: {error})")
                        }
                    };
                    let _ = view.site.stop(victim, generation).await;
                    report
                        .stopped
                        .push((preemption.site.clone(), victim.clone(), generation));
                    outcome
                }
            };
            status.phase = JobPhase::Pending;
            status.site = None;
            status.relaunches = 0;
            status.message = Some(format!(
                "preempted by {} in {}; placed again when room allows",
                preemption.by, preemption.site
            ));
            let mut cleared = record.value.clone();
            cleared.placement = None;
            cleared.status = status;
            tracing::info!(job = %victim, by = %preemption.by, "preempted");
            self.audit(
                "preempt",
                &what,
                &format!("{result}; by {} (a higher tier)", preemption.by),
            )
            .await;
            self.put_if_unchanged(&cleared, record.revision, report)
                .await?;
        }
        Ok(())
    }
}
