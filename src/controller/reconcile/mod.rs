//! One reconcile pass: stored jobs in → observe sites → stop what must not run → relaunch
//! what failed → place and launch what has no placement → record status and checkpoints.
//!
//! Restart safety comes from ordering: a job's new generation and placement are persisted
//! *before* the launch, and a site launches a given generation at most once (idempotent
//! launch). A controller that dies between the two finds the persisted placement, sees the
//! generation not running, and launches that same generation: never a second generation, and
//! never a relaunch of a job that is already running.

//!
//! Files: this one holds the pass (`reconcile_once`, observing the sites) and the writes every
//! step shares; `stop.rs` stops what must not run; `job.rs` is the per-job step; `launch.rs`
//! places and launches what the steps queued, each new generation granted by the failover
//! engine.

mod job;
mod launch;
mod stop;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use scheduler::input::StreamJob;
use scheduler::model::{JobDemand, JobId, JobPlacement, SiteId, SiteSnapshot};
use scheduler::placement::rebalance::RebalanceMove;

use super::Controller;
use super::jars::{JarGate, JarStatus};
use super::status::{JobPhase, JobStatus};
use crate::site::{JobObservation, Site, SiteError};
use crate::state::{Expected, JobRecord, StateError, UnreadableRecord, Versioned};

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

/// What the per-job steps collect for placement: the placements kept (booked for the
/// placer, with their demands) and the jobs to place.
#[derive(Default)]
struct Collected {
    kept: Vec<JobPlacement>,
    kept_demands: Vec<JobDemand>,
    to_place: Vec<ToPlace>,
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

        let mut collected = Collected::default();
        for record in records {
            self.reconcile_job(
                record,
                PassView {
                    views: &views,
                    moves: &moves,
                },
                &mut collected,
                &mut report,
            )
            .await?;
        }
        let Collected {
            kept,
            kept_demands,
            to_place,
        } = collected;
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
