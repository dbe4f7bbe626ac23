//! The controller's side of the failover driver. The driver itself (rounds, write-ahead
//! batching, concurrency) is `failover::Driver`, shared with the simulation; this file gives
//! it what a pass observed (`PassInput`) and performs what it asks (`ControllerEffects`):
//! records in the state store's failover keyspace, job records and launches, fences,
//! savepoints and their copies, site marks, audits, reports and metrics. Operations and job
//! records of the engine are persisted, so a new leader resumes them (`Driver::resume`).
//! See `failover/README.md` for the engine and driver, `README.md` here for the wiring.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use failover::{
    CheckpointPointer as EnginePointer, Command, Driver, Effects, Engine, EngineConfig, Event,
    FailoverAudit as EngineAudit, FailoverPlan, JobObserved, Launch, NodeHeartbeat,
    ObservedCheckpoint, Operation, OpsRequest, PassInput, PlacedJob, Record, RecoveryReport,
    Report, RequestError, RestorePointKind as EngineCheckpointKind, RunState, SiteObservation,
    StoredJob, Timestamp,
};
use scheduler::input::streamjob;
use scheduler::model::{JobDemand, JobId, JobPlacement, PodRole, SiteId};
use serde::Serialize;

use super::launch::{in_site_storage, launch_spec, spec_hash};
use super::status::JobPhase as StatusPhase;
use super::{Controller, stream_job_of};
use crate::job::{engine_spec, replicated_event};
use crate::site::{JobObservation, JobState};
use crate::state::{
    CheckpointKind, Expected, JobRecord, SiteRecord, SiteState, StateError, Versioned,
};
use failover::placer::SchedulerPlacer;

/// Recovery reports kept in memory for the API.
const KEPT_REPORTS: usize = 10_000;

/// One job the engine could not relaunch, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotRelaunched {
    pub at: Timestamp,
    pub job: JobId,
    pub reason: String,
    pub missing: scheduler::model::Resources,
}

/// What an ops request led to.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestOutcome {
    /// An operation started (or, for `Cancel`, is cancelling).
    Operation(Box<Operation>),
    Plan(Box<FailoverPlan>),
    Rejected(RequestError),
}

/// Why an ops request could not be handed to the engine.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(
        "this controller does not lead, or has not finished its first pass as leader; ask the leader"
    )]
    NotLeading,
    #[error(transparent)]
    State(#[from] StateError),
}

/// The driver and the leadership term it was built in; a stale one is rebuilt from the
/// store. Volatile: a new leader resumes from the store.
struct Live {
    term: u64,
    driver: Driver,
    /// Events for the first pass after a resume: the replicated pointers the store holds.
    resumed: Vec<Event>,
}

pub struct FailoverDriver {
    config: EngineConfig,
    enabled: bool,
    live: tokio::sync::Mutex<Option<Live>>,
    /// Grows on every leadership loss; `Live::term` must match it.
    term: std::sync::atomic::AtomicU64,
    /// Events produced outside the pass (the replication driver's verified copies).
    inbox: Mutex<Vec<Event>>,
    /// Answers and retries of background commands.
    shared: std::sync::Arc<Mutex<Background>>,
    reports: Mutex<VecDeque<RecoveryReport>>,
    not_relaunched: Mutex<VecDeque<NotRelaunched>>,
    /// Jobs the engine is moving or holding (not `Running` in its view): the reconcile pass
    /// leaves their placement and generation to the engine and shows what it says.
    busy: Mutex<BTreeMap<JobId, Held>>,
    /// Notified when a background command (savepoint, copy) answered, or when launch
    /// pacing lets the next moves start: run a pass now.
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// The earliest pacing wake-up already scheduled (`wake_at`), so passes do not pile
    /// up timers.
    paced_wake: Mutex<Option<Timestamp>>,
}

/// What background commands handed back since the last pass.
#[derive(Default)]
struct Background {
    answers: Vec<Event>,
    retries: Vec<Command>,
}

/// Where a background command puts its answer (or itself, to be retried next pass).
struct AnswerSink {
    inbox: std::sync::Arc<Mutex<Background>>,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

impl AnswerSink {
    fn answer(&self, event: Event) {
        lock(&self.inbox).answers.push(event);
        self.wake.notify_one();
    }

    fn retry(&self, command: Command) {
        lock(&self.inbox).retries.push(command);
    }
}

/// A job the failover engine holds: not `Running` in its view, so its placement and
/// generation are the engine's, and its status says what the engine is doing with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub site: SiteId,
    pub generation: u64,
    pub doing: Doing,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Doing {
    /// Stopping the current generation before relaunching in `target`.
    Fencing { target: SiteId, reason: String },
    /// The new generation is launched; the site has not confirmed it yet.
    Launching { reason: String },
    /// Moved by operation `op` from `from` to `to`; `started`: its move is under way (else
    /// it still runs at `from`, waiting for its turn).
    Moving {
        op: u64,
        from: SiteId,
        to: SiteId,
        started: bool,
    },
    /// Runs nowhere; `reason` says why. Tried again whenever a site may host it.
    Down { reason: String },
}

impl Held {
    fn of(record: &failover::TrackedJob, engine: &Engine) -> Option<Held> {
        let doing = match &record.phase {
            failover::FailoverPhase::Running => return None,
            failover::FailoverPhase::Fencing { reason, target, .. } => Doing::Fencing {
                target: target.clone(),
                reason: reason.to_string(),
            },
            failover::FailoverPhase::Launching { .. } => Doing::Launching {
                reason: "relaunched by the failover engine".into(),
            },
            failover::FailoverPhase::InOperation { op } => {
                let operation = engine.operation(*op);
                let step = operation.and_then(|o| o.jobs.iter().find(|j| &j.job == record.id()));
                Doing::Moving {
                    op: *op,
                    from: operation.map_or_else(|| record.site.clone(), |o| o.from.clone()),
                    to: operation.map_or_else(|| record.site.clone(), |o| o.to.clone()),
                    started: step.is_some_and(|j| j.step != failover::MoveStep::Pending),
                }
            }
            failover::FailoverPhase::Down { reason } => Doing::Down {
                reason: reason.clone(),
            },
        };
        Some(Held {
            site: record.site.clone(),
            generation: record.generation,
            doing,
        })
    }

    /// The phase and message the job's status shows, given what its site reports for the
    /// stored generation (`observed`, `None` when the site does not run it) and whether the
    /// site answered this pass. Says what is true: a job that runs nowhere is `pending`
    /// with the engine's reason, never `unknown` about a site that answers.
    /// `stored`: the message the job's status holds now (a relaunch wrote its reason there).
    pub fn status(
        &self,
        observed: Option<JobState>,
        site_answered: bool,
        stored: Option<&str>,
    ) -> (StatusPhase, String) {
        let site = &self.site;
        let generation = self.generation;
        match &self.doing {
            Doing::Down { reason } => (
                StatusPhase::Pending,
                format!("runs nowhere: {reason}; it is relaunched as soon as a site may host it"),
            ),
            _ if !site_answered => (
                StatusPhase::Unknown,
                format!("site {site} is unreachable; the failover engine is recovering this job"),
            ),
            Doing::Fencing { target, reason } => (
                StatusPhase::Launching,
                format!(
                    "failover: stopping generation {generation} in {site} before relaunching it in {target} ({reason})"
                ),
            ),
            Doing::Launching { reason } => (
                match observed {
                    Some(JobState::Running) => StatusPhase::Running,
                    _ => StatusPhase::Launching,
                },
                // The relaunch wrote why ("failover: JobManager node … lost"): kept.
                match stored {
                    Some(message) if message.starts_with("failover:") => message.to_string(),
                    _ => format!("failover: generation {generation} in {site}, {reason}"),
                },
            ),
            Doing::Moving {
                op,
                from,
                to,
                started,
            } => {
                let phase = match observed {
                    Some(JobState::Running) => StatusPhase::Running,
                    Some(JobState::Restarting) => StatusPhase::Restarting,
                    _ => StatusPhase::Launching,
                };
                let what = if *started {
                    "moving"
                } else {
                    "waiting to move"
                };
                (
                    phase,
                    format!("{what} from {from} to {to} (failover operation {op})"),
                )
            }
        }
    }
}

/// What a pass gives the driver: each reachable site's snapshot and jobs.
pub(crate) struct Observed<'a> {
    pub snapshots: BTreeMap<SiteId, &'a scheduler::model::SiteSnapshot>,
    pub jobs: BTreeMap<SiteId, &'a [JobObservation]>,
}

impl FailoverDriver {
    pub fn new(config: EngineConfig, enabled: bool) -> FailoverDriver {
        FailoverDriver {
            config,
            enabled,
            live: tokio::sync::Mutex::new(None),
            term: std::sync::atomic::AtomicU64::new(0),
            inbox: Mutex::new(Vec::new()),
            shared: std::sync::Arc::new(Mutex::new(Background::default())),
            reports: Mutex::new(VecDeque::new()),
            not_relaunched: Mutex::new(VecDeque::new()),
            busy: Mutex::new(BTreeMap::new()),
            wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            paced_wake: Mutex::new(None),
        }
    }

    /// Runs a pass at `at` (an operation's pacing lets more moves start then) instead of
    /// waiting for the reconcile interval; `None`: nothing waits for the pace.
    fn wake_at(&self, at: Option<Timestamp>, now: Timestamp) {
        let Some(at) = at else {
            return;
        };
        {
            let mut scheduled = lock(&self.paced_wake);
            if scheduled.is_some_and(|s| s > now && s <= at) {
                return;
            }
            *scheduled = Some(at);
        }
        let wake = std::sync::Arc::clone(&self.wake);
        // From the wall clock, not the pass's start: the pass may have taken a while.
        let after = failover::elapsed(chrono::Utc::now(), at);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            wake.notify_one();
        });
    }

    /// Fires when answers from background commands are waiting for a pass.
    pub fn answers_waiting(&self) -> std::sync::Arc<tokio::sync::Notify> {
        std::sync::Arc::clone(&self.wake)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Leadership is gone: forget everything volatile; the next leader resumes from the store.
    pub fn reset(&self) {
        self.term.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        lock(&self.busy).clear();
    }

    fn term(&self) -> u64 {
        self.term.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Queues an event for the next pass (from another task, e.g. a verified replication).
    pub fn notify(&self, event: Event) {
        lock(&self.inbox).push(event);
    }

    fn answer_sink(&self) -> AnswerSink {
        AnswerSink {
            inbox: std::sync::Arc::clone(&self.shared),
            wake: std::sync::Arc::clone(&self.wake),
        }
    }

    /// What the engine says about a job it holds (moving, relaunching, or down), if it does.
    pub fn held(&self, job: &JobId) -> Option<Held> {
        lock(&self.busy).get(job).cloned()
    }

    /// Recovery reports (RTO/RPO per relaunch), oldest first.
    pub fn reports(&self) -> Vec<RecoveryReport> {
        lock(&self.reports).iter().cloned().collect()
    }

    pub fn not_relaunched(&self) -> Vec<NotRelaunched> {
        lock(&self.not_relaunched).iter().cloned().collect()
    }

    fn metrics_relaunch(&self, metrics: &super::ControllerMetrics, kind: &'static str) {
        metrics
            .failover_relaunches
            .get_or_create(&super::metrics::ReasonLabel {
                reason: kind.into(),
            })
            .inc();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an engine audit entry is about, as the audit log's target: `op 3 shop/orders`,
/// `shop/orders@dc-a`, `dc-b`, ….
fn audit_target(entry: &EngineAudit) -> String {
    match (&entry.op, &entry.job, &entry.site) {
        (Some(op), Some(job), _) => format!("op {op} {job}"),
        (Some(op), None, Some(site)) => format!("op {op} {site}"),
        (Some(op), None, None) => format!("op {op}"),
        (None, Some(job), Some(site)) => format!("{job}@{site}"),
        (None, Some(job), None) => job.to_string(),
        (None, None, Some(site)) => site.to_string(),
        (None, None, None) => "engine".into(),
    }
}

fn engine_state(state: JobState) -> RunState {
    match state {
        JobState::Running => RunState::Running,
        JobState::Restarting => RunState::Restarting,
        JobState::Failed => RunState::Failed,
        JobState::Finished => RunState::Finished,
        JobState::Unknown => RunState::Unknown,
    }
}

fn stored_placement(record: &JobRecord) -> Option<JobPlacement> {
    record.placement.as_ref().and_then(|p| p.detail.clone())
}

/// Every stored job as the engine sees it: placed and managed (`failover.mode` not `none`,
/// a spec it can read), or just present (so that it is not forgotten).
pub(crate) fn stored_jobs(records: &[Versioned<JobRecord>]) -> Vec<StoredJob> {
    records
        .iter()
        .map(|record| {
            let id = JobId::new(&record.value.namespace, &record.value.name);
            let placed = record.value.placement.as_ref().and_then(|stored| {
                let (spec, mode) = engine_spec(&record.value)?;
                (mode != streamjob::FailoverMode::None).then(|| PlacedJob {
                    spec,
                    site: SiteId(stored.site.clone()),
                    generation: record.value.generation,
                })
            });
            StoredJob { id, placed }
        })
        .collect()
}

/// The driver's effects, as this controller performs them at `now`.
struct ControllerEffects<'a> {
    controller: &'a Controller,
    now: Timestamp,
}

impl Effects for ControllerEffects<'_> {
    type Error = StateError;

    fn write_record(
        &self,
        key: &str,
        record: Option<&Record>,
    ) -> impl Future<Output = Result<(), StateError>> {
        let store = &self.controller.store;
        let value = record.map(|r| {
            serde_json::to_value(r).map_err(|e| StateError::Corrupt {
                location: key.to_string(),
                reason: format!("cannot encode failover record: {e}"),
            })
        });
        let key = key.to_string();
        async move {
            match value {
                Some(value) => store.put_failover_record(&key, &value?).await.map(|_| ()),
                None => store.delete_failover_record(&key).await.map(|_| ()),
            }
        }
    }

    fn append_audits(&self, entries: &[EngineAudit]) -> impl Future<Output = ()> {
        let at_unix_ms = chrono::Utc::now().timestamp_millis();
        let entries: Vec<crate::state::AuditEntry> = entries
            .iter()
            .map(|entry| crate::state::AuditEntry {
                actor: "failover".into(),
                action: "failover".into(),
                target: audit_target(entry),
                at_unix_ms,
                result: entry.message.clone(),
            })
            .collect();
        async move {
            if let Err(error) = self.controller.store.append_audits(&entries).await {
                tracing::warn!(%error, entries = entries.len(), "audit append failed");
            }
        }
    }

    fn mark_site(
        &self,
        site: &SiteId,
        epoch: u64,
        lost: bool,
    ) -> impl Future<Output = Result<(), StateError>> {
        let site = site.clone();
        async move {
            let state = if lost {
                SiteState::Lost
            } else {
                SiteState::Active
            };
            let stored = self.controller.store.get_site(&site.0).await?;
            if stored
                .as_ref()
                .is_some_and(|s| s.value.epoch == epoch && s.value.state == state)
            {
                // Marked already (a new leader marks again what its predecessor may not have).
                return Ok(());
            }
            if lost {
                tracing::error!(%site, epoch, "site judged lost; failing its jobs over");
                self.controller
                    .metrics
                    .sites_lost
                    .get_or_create(&super::metrics::SiteLabel {
                        site: site.0.clone(),
                    })
                    .inc();
            } else {
                tracing::info!(%site, epoch, "site recovered: its stale generations are fenced");
            }
            self.controller
                .store
                .put_site(&SiteRecord {
                    site: site.0.clone(),
                    epoch,
                    state,
                    detail: serde_json::Value::Null,
                })
                .await?;
            Ok(())
        }
    }

    fn report(&self, report: Report<'_>) {
        let controller = self.controller;
        match report {
            Report::Recovery(report) => {
                // The engine times the whole pass at its start; this relaunch is issued
                // now, after the rounds before it: the difference is part of the RTO.
                let mut report = report.clone();
                let into_pass = failover::elapsed(self.now, chrono::Utc::now());
                report.rto_from_detection += into_pass;
                report.rto_from_last_heartbeat =
                    report.rto_from_last_heartbeat.map(|d| d + into_pass);
                tracing::info!(
                    job = %report.job,
                    generation = report.generation,
                    site = %report.site,
                    reason = %report.reason,
                    rto_ms = report.rto_from_detection.as_millis() as u64,
                    rto_from_heartbeat_ms = report.rto_from_last_heartbeat.map(|d| d.as_millis() as u64),
                    rpo_ms = report.rpo.map(|d| d.as_millis() as u64),
                    "relaunch issued"
                );
                controller
                    .metrics
                    .failover_rto_seconds
                    .observe(report.rto_from_detection.as_secs_f64());
                if let Some(delay) = report.rto_from_last_heartbeat {
                    controller
                        .metrics
                        .failover_relaunch_delay_seconds
                        .observe(delay.as_secs_f64());
                }
                if let Some(rpo) = report.rpo {
                    controller
                        .metrics
                        .failover_rpo_seconds
                        .observe(rpo.as_secs_f64());
                }
                push_bounded(&controller.failover.reports, report);
            }
            Report::NotRelaunched {
                job,
                reason,
                missing,
            } => {
                tracing::warn!(%job, %reason, "not relaunched");
                controller.metrics.failover_not_relaunched.inc();
                push_bounded(
                    &controller.failover.not_relaunched,
                    NotRelaunched {
                        at: self.now,
                        job: job.clone(),
                        reason: reason.to_string(),
                        missing: *missing,
                    },
                );
            }
            // Answers to the request that asked: `Outcome` carries them back.
            Report::Plan(_) | Report::Rejected { .. } | Report::Accepted { .. } => {}
        }
    }

    fn launch(&self, launch: &Launch) -> impl Future<Output = Result<Option<Event>, StateError>> {
        let launch = launch.clone();
        async move {
            let result = self
                .controller
                .relaunch(
                    &launch.job,
                    launch.generation,
                    &launch.placement,
                    launch.restore_from.as_ref(),
                    &launch.reason.to_string(),
                    launch.reason.is_failure(),
                )
                .await?;
            self.controller
                .failover
                .metrics_relaunch(&self.controller.metrics, reason_kind(&launch.reason));
            Ok(Some(match result {
                Ok(()) => Event::LaunchSucceeded {
                    job: launch.job,
                    generation: launch.generation,
                    site: launch.site,
                },
                Err(reason) => {
                    tracing::warn!(job = %launch.job, generation = launch.generation, site = %launch.site, %reason, "failover relaunch failed");
                    Event::LaunchFailed {
                        job: launch.job,
                        generation: launch.generation,
                        site: launch.site,
                        reason,
                    }
                }
            }))
        }
    }

    fn fence(
        &self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, StateError>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            let Some(handle) = self.controller.sites.get(&site) else {
                // Not a site of this controller: nothing of it can run here.
                return Ok(Some(Event::Fenced {
                    job,
                    generation,
                    site,
                }));
            };
            match handle.stop(&job, generation).await {
                Ok(()) => {
                    tracing::info!(%job, generation, %site, "fenced");
                    Ok(Some(Event::Fenced {
                        job,
                        generation,
                        site,
                    }))
                }
                Err(error) => {
                    // Unanswered: the engine issues the fence again after its retry delay.
                    tracing::warn!(%job, generation, %site, %error, "fence not confirmed");
                    Ok(None)
                }
            }
        }
    }

    // Savepoints and their copies take seconds to minutes: they run in the background and
    // answer through the inbox, so the pass, other jobs and a cancel are never held up.
    fn savepoint(
        &self,
        op: u64,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, StateError>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            let target = match self.controller.savepoint_dir(&job, &site).await? {
                Ok(target) => target,
                Err(reason) => return Ok(Some(Event::SavepointFailed { op, job, reason })),
            };
            let Some(handle) = self.controller.sites.get(&site).cloned() else {
                return Ok(Some(Event::SavepointFailed {
                    op,
                    job,
                    reason: format!("no site {site}"),
                }));
            };
            let driver = self.controller.failover.answer_sink();
            tokio::spawn(async move {
                let event = match handle.stop_with_savepoint(&job, generation, &target).await {
                    Ok(path) => {
                        tracing::info!(%job, generation, %site, %path, "stopped with savepoint");
                        Event::SavepointCompleted {
                            op,
                            job,
                            savepoint: EnginePointer {
                                site,
                                generation,
                                id: 0,
                                path,
                                completed_at: chrono::Utc::now(),
                                kind: EngineCheckpointKind::Savepoint,
                            },
                        }
                    }
                    Err(error) => Event::SavepointFailed {
                        op,
                        job,
                        reason: error.to_string(),
                    },
                };
                driver.answer(event);
            });
            Ok(None)
        }
    }

    fn replicate_savepoint(
        &self,
        op: u64,
        job: &JobId,
        savepoint: &CheckpointPointerRef,
        to: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, StateError>> {
        let (job, savepoint, to) = (job.clone(), savepoint.clone(), to.clone());
        let roots = self.controller.storage_roots.clone();
        let driver = self.controller.failover.answer_sink();
        async move {
            tokio::spawn(async move {
                match crate::replication::copy_savepoint(
                    &roots,
                    &savepoint.site,
                    &to,
                    &savepoint.path,
                )
                .await
                {
                    Ok(path) => {
                        tracing::info!(%job, %to, %path, "savepoint replicated");
                        driver.answer(Event::ReplicationCompleted {
                            op,
                            job,
                            replica: EnginePointer {
                                site: to,
                                path,
                                ..savepoint
                            },
                        });
                    }
                    Err(reason) => {
                        tracing::warn!(%job, %to, %reason, "savepoint copy failed; retried next pass");
                        driver.retry(Command::ReplicateSavepoint {
                            op,
                            job,
                            savepoint,
                            to,
                        });
                    }
                }
            });
            Ok(None)
        }
    }

    fn trace_issued(&self, issued: &[Command]) {
        if !issued.is_empty() {
            tracing::debug!(commands = issued.len(), "failover engine issued a round");
        }
    }
}

type CheckpointPointerRef = EnginePointer;

impl Controller {
    /// The failover part of a pass: the driver feeds the engine what the pass observed and
    /// executes what it decides. Returns the generations it launched when it acted on a
    /// site (the pass then re-reads the jobs). Fails only on store errors.
    pub(crate) async fn drive_failover(
        &self,
        records: &[Versioned<JobRecord>],
        observed: &Observed<'_>,
        read_at: tokio::time::Instant,
    ) -> Result<Option<Vec<(JobId, u64)>>, StateError> {
        if !self.failover.enabled() {
            return Ok(None);
        }
        let now = chrono::Utc::now();
        let mut guard = self.failover.live.lock().await;
        if guard
            .as_ref()
            .is_some_and(|l| l.term != self.failover.term())
        {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.resume_driver(records, now).await?);
        }
        let Some(live) = guard.as_mut() else {
            return Ok(None);
        };
        let placer = self.placer(records, observed, now);
        let mut events = std::mem::take(&mut live.resumed);
        events.append(&mut lock(&self.failover.inbox));
        let retries = {
            let mut background = lock(&self.failover.shared);
            events.append(&mut background.answers);
            std::mem::take(&mut background.retries)
        };
        let input = PassInput {
            // On etcd: the session of this leadership is healthy and the pass's read of the
            // store (linearizable, through the quorum) came within its TTL.
            quorum: self.quorum.holds(read_at),
            jobs: Some(stored_jobs(records)),
            sites: observations(records, observed, now),
            peers: self.peer_views().await,
            events,
            retries,
        };
        let effects = ControllerEffects {
            controller: self,
            now,
        };
        let outcome = live.driver.pass(&effects, &placer, input, now).await?;
        if outcome.cut_short > 0 {
            tracing::error!(
                left = outcome.cut_short,
                "failover engine issued too many commands in one pass; the rest wait for the next"
            );
        }
        self.refresh_busy(live.driver.engine());
        self.export_engine_view(live.driver.engine(), now);
        self.failover.wake_at(outcome.next_launch_at, now);
        Ok(outcome.acted.then_some(outcome.launched))
    }

    /// Hands an ops request to the engine and executes what it answers. Only the leader can,
    /// and only once its first pass rebuilt the engine.
    pub async fn failover_request(
        &self,
        request: OpsRequest,
    ) -> Result<RequestOutcome, DriverError> {
        if !self.is_leading() || !self.failover.enabled() {
            return Err(DriverError::NotLeading);
        }
        let now = chrono::Utc::now();
        let records = self.store.list_jobs().await?;
        let mut snapshots = BTreeMap::new();
        for (id, site) in &self.sites {
            if let Ok(snapshot) = site.snapshot().await {
                snapshots.insert(id.clone(), snapshot);
            }
        }
        let mut guard = self.failover.live.lock().await;
        let Some(live) = guard.as_mut().filter(|l| l.term == self.failover.term()) else {
            return Err(DriverError::NotLeading);
        };
        let observed = Observed {
            snapshots: snapshots.iter().map(|(k, v)| (k.clone(), v)).collect(),
            jobs: BTreeMap::new(),
        };
        let placer = self.placer(&records, &observed, now);
        let effects = ControllerEffects {
            controller: self,
            now,
        };
        let outcome = live
            .driver
            .request(&effects, &placer, Some(stored_jobs(&records)), request, now)
            .await?;
        self.refresh_busy(live.driver.engine());
        self.failover.wake_at(outcome.next_launch_at, now);
        if let Some(error) = outcome.rejected {
            return Ok(RequestOutcome::Rejected(error));
        }
        if let Some(plan) = outcome.plan {
            return Ok(RequestOutcome::Plan(Box::new(plan)));
        }
        match outcome.accepted.and_then(|op| live.driver.engine().operation(op)) {
            Some(op) => Ok(RequestOutcome::Operation(Box::new(op.clone()))),
            None => Err(DriverError::State(StateError::Unavailable {
                operation: "failover request",
                key: "failover".into(),
                reason: "the failover engine answered the request with neither an operation, a plan nor a rejection".into(),
            })),
        }
    }

    /// A dry run (`request` with `dry_run: true`): the plan the engine that would carry the
    /// request out answers, or its rejection. The leader asks its live engine; a follower
    /// resumes a scratch engine from the store exactly as a new leader would (persisted site
    /// states, job records, replicated pointers) and executes nothing it answers.
    pub async fn failover_dry_run(
        &self,
        request: OpsRequest,
    ) -> Result<RequestOutcome, DriverError> {
        if self.is_leading() && self.failover.enabled() {
            match self.failover_request(request.clone()).await {
                Err(DriverError::NotLeading) => {}
                answered => return answered,
            }
        }
        let now = chrono::Utc::now();
        let records = self.store.list_jobs().await?;
        let live = self.resume_driver(&records, now).await?;
        let mut snapshots = BTreeMap::new();
        for (id, site) in &self.sites {
            if let Ok(snapshot) = site.snapshot().await {
                snapshots.insert(id.clone(), snapshot);
            }
        }
        let observed = Observed {
            snapshots: snapshots.iter().map(|(k, v)| (k.clone(), v)).collect(),
            jobs: BTreeMap::new(),
        };
        let placer = self.placer(&records, &observed, now);
        let mut engine = live.driver.into_engine();
        let mut events = vec![Event::JobsStored(stored_jobs(&records))];
        events.extend(live.resumed);
        events.push(Event::OpsRequest(request));
        // Only the answer is used: the records and audits a scratch engine issues are not
        // executed.
        let answer = engine.step_all(events, now, &placer);
        answer
            .into_iter()
            .find_map(|c| match c {
                Command::ReportPlan(plan) => Some(Ok(RequestOutcome::Plan(Box::new(plan)))),
                Command::Rejected { error, .. } => Some(Ok(RequestOutcome::Rejected(error))),
                _ => None,
            })
            .unwrap_or_else(|| {
                Err(DriverError::State(StateError::Unavailable {
                    operation: "failover dry run",
                    key: "failover".into(),
                    reason: "the failover engine answered a dry run without a plan".into(),
                }))
            })
    }

    /// One operation, from the leader's engine or, on a follower, from the store.
    pub async fn failover_operation(&self, id: u64) -> Result<Option<Operation>, StateError> {
        Ok(self
            .failover_operations()
            .await?
            .into_iter()
            .find(|o| o.id == id))
    }

    /// Every operation, oldest first.
    pub async fn failover_operations(&self) -> Result<Vec<Operation>, StateError> {
        if let Ok(guard) = self.failover.live.try_lock()
            && let Some(live) = guard.as_ref().filter(|l| l.term == self.failover.term())
        {
            return Ok(live.driver.engine().operations().cloned().collect());
        }
        let mut ops = Vec::new();
        for (name, value) in self.store.list_failover_records().await? {
            if !name.starts_with("op.") {
                continue;
            }
            if let Ok(Record::Operation(op)) = serde_json::from_value::<Record>(value) {
                ops.push(*op);
            }
        }
        ops.sort_by_key(|o| o.id);
        Ok(ops)
    }

    /// A new leader's driver: every persisted record, and the replicated pointers the store
    /// holds (what cross-site relaunches may restore from), fed with the first pass.
    async fn resume_driver(
        &self,
        records: &[Versioned<JobRecord>],
        now: Timestamp,
    ) -> Result<Live, StateError> {
        let mut persisted = Vec::new();
        for (name, value) in self.store.list_failover_records().await? {
            match serde_json::from_value::<Record>(value) {
                Ok(record) => persisted.push(record),
                Err(error) => {
                    // A record this version cannot read must not be guessed around: the job
                    // is re-registered from its stored generation instead.
                    tracing::error!(record = %name, %error, "failover record does not decode; ignored");
                }
            }
        }
        let count = persisted.len();
        let driver = Driver::resume(self.failover.config.clone(), persisted, now);
        tracing::info!(records = count, "failover engine resumed");
        let mut resumed = Vec::new();
        for record in records {
            let id = JobId::new(&record.value.namespace, &record.value.name);
            for entry in self
                .store
                .list_checkpoints(&record.value.namespace, &record.value.name)
                .await?
            {
                if entry.kind != CheckpointKind::Replicated {
                    continue;
                }
                if let Some(event) = replicated_event(
                    &id,
                    record.value.generation,
                    &entry.site,
                    &entry.pointer.value,
                ) {
                    resumed.push(event);
                }
            }
        }
        Ok(Live {
            term: self.failover.term(),
            driver,
            resumed,
        })
    }

    /// Peer views: a site heard by someone other than this controller (its etcd member or
    /// agent, seen through the quorum) must not be failed over.
    async fn peer_views(&self) -> Vec<(SiteId, Timestamp)> {
        let mut peers = Vec::new();
        for (id, site) in &self.sites {
            if let Some(agents) = self.agents.as_ref().filter(|a| a.guards(id)) {
                // A guarded site's peer view is its agent's lease, and only that.
                if let Some(at) = agents.last_renewal(id) {
                    peers.push((id.clone(), at));
                }
                continue;
            }
            if let Some(at) = site.peer_last_contact().await {
                peers.push((id.clone(), at));
            }
        }
        peers
    }

    fn placer(
        &self,
        records: &[Versioned<JobRecord>],
        observed: &Observed<'_>,
        now: Timestamp,
    ) -> SchedulerPlacer {
        let mut running = Vec::new();
        let mut demands: Vec<JobDemand> = Vec::new();
        for record in records {
            if let Some(p) = stored_placement(&record.value) {
                running.push(p);
            }
            if let Some((spec, _)) = engine_spec(&record.value) {
                demands.push(spec.demand);
            }
        }
        SchedulerPlacer::new(
            observed.snapshots.values().map(|s| (*s).clone()).collect(),
            running,
            demands,
            &self.policy.placement_policy(),
            now,
        )
    }

    fn refresh_busy(&self, engine: &Engine) {
        let busy: BTreeMap<JobId, Held> = engine
            .jobs()
            .filter_map(|r| Some((r.id().clone(), Held::of(r, engine)?)))
            .collect();
        *lock(&self.failover.busy) = busy;
    }

    /// Writes the new generation and placement to the job's record (compare-and-set, so an
    /// API edit in between is re-read, never overwritten), then launches it. `Err` is the
    /// reason for the engine; a store failure is the outer `Err` (stop acting).
    async fn relaunch(
        &self,
        job: &JobId,
        generation: u64,
        placement: &JobPlacement,
        restore_from: Option<&EnginePointer>,
        reason: &str,
        failure: bool,
    ) -> Result<Result<(), String>, StateError> {
        let Some((namespace, name)) = job.0.split_once('/') else {
            return Ok(Err(format!("job id {job} is not namespace/name")));
        };
        let Some(site) = self.sites.get(&placement.site) else {
            return Ok(Err(format!("no site {}", placement.site)));
        };
        let mut attempts = 0;
        let (job_spec, restore, status) = loop {
            attempts += 1;
            let current = match self.store.get_job(namespace, name).await {
                Ok(Some(current)) => current,
                Ok(None) => return Ok(Err("the job was deleted".into())),
                // Its generation is unknown: launching could start a second one.
                Err(StateError::Corrupt { reason, .. }) => {
                    return Ok(Err(format!("its stored record cannot be used: {reason}")));
                }
                Err(error) => return Err(error),
            };
            let job_spec = match stream_job_of(&current.value) {
                Ok(j) => j,
                Err(e) => return Ok(Err(format!("stored spec is unusable: {e}"))),
            };
            if current.value.generation > generation {
                return Ok(Err(format!(
                    "the store already holds generation {}",
                    current.value.generation
                )));
            }
            let restore = restore_from.map(|c| super::launch::Restore {
                path: c.path.clone(),
                completed_at: Some(c.completed_at),
            });
            let mut record = current.value.clone();
            record.generation = generation;
            record.placement = Some(crate::state::JobPlacement {
                site: placement.site.0.clone(),
                detail: Some(placement.clone()),
            });
            let mut status = record.status.clone();
            status.phase = StatusPhase::Launching;
            status.site = Some(placement.site.0.clone());
            status.set_restore(restore.clone());
            status.last_checkpoint = None;
            status.launched_spec = Some(spec_hash(&job_spec));
            status.message = Some(format!("failover: {reason}"));
            // Relaunches after failures count (a new checkpoint resets them); a move doesn't.
            status.relaunches = if failure {
                status.relaunches.saturating_add(1)
            } else {
                0
            };
            record.status = status.clone();
            match self
                .store
                .put_job(&record, Expected::Revision(current.revision))
                .await
            {
                Ok(_) => break (job_spec, restore, status),
                Err(StateError::Conflict { .. }) if attempts < 5 => continue,
                Err(error) => return Err(error),
            }
        };
        let epoch = match self.site_epoch(&placement.site).await? {
            Ok(epoch) => epoch,
            Err(reason) => return Ok(Err(reason)),
        };
        // Never launched without its jar verified in the target site (the engine refuses such
        // moves; this holds for any other way here).
        let jar_uri = match self.site_jar_uri(&job_spec, &status, &placement.site) {
            Ok(uri) => uri,
            Err(reason) => return Ok(Err(reason)),
        };
        let spec = match launch_spec(
            &job_spec,
            generation,
            placement,
            restore,
            self.storage_roots.get(&placement.site).map(String::as_str),
            epoch,
        ) {
            Ok(mut spec) => {
                spec.jar_uri = jar_uri;
                spec
            }
            Err(error) => return Ok(Err(error.to_string())),
        };
        match site.launch(&spec).await {
            Ok(()) => {
                tracing::info!(%job, generation, site = %placement.site, restore_from = ?spec.restore_from, %reason, "relaunched");
                self.metrics
                    .launches
                    .get_or_create(&super::metrics::SiteLabel {
                        site: placement.site.0.clone(),
                    })
                    .inc();
                Ok(Ok(()))
            }
            Err(error) => Ok(Err(error.to_string())),
        }
    }

    /// Where a job's savepoints go in `site`: under its checkpoint directory.
    async fn savepoint_dir(
        &self,
        job: &JobId,
        site: &SiteId,
    ) -> Result<Result<String, String>, StateError> {
        let (namespace, name) = job.0.split_once('/').unwrap_or(("", &job.0));
        let stored = match self.store.get_job(namespace, name).await {
            // Unreadable: the default place, as for a job without a record.
            Err(StateError::Corrupt { .. }) => None,
            stored => stored?,
        };
        let dir = match stored.and_then(|record| stream_job_of(&record.value).ok()) {
            Some(job) => crate::job::savepoint_dir(&job),
            None => {
                crate::job::savepoints_under(&crate::job::default_checkpoint_dir(namespace, name))
            }
        };
        Ok(match self.storage_roots.get(site) {
            Some(root) => in_site_storage(root, &dir),
            None => Ok(dir),
        })
    }
}

/// One observation per site that answered: its nodes (a Ready node is heard now; one not
/// Ready has no heartbeat of its own here, so the engine keeps counting its silence), and
/// every generation it runs with the JobManager/TaskManager nodes of the stored placement
/// and the newest checkpoint it reports.
fn observations(
    records: &[Versioned<JobRecord>],
    observed: &Observed<'_>,
    now: Timestamp,
) -> Vec<SiteObservation> {
    let placements: BTreeMap<JobId, (u64, JobPlacement)> = records
        .iter()
        .filter_map(|r| {
            let p = stored_placement(&r.value)?;
            Some((p.job.clone(), (r.value.generation, p)))
        })
        .collect();
    observed
        .snapshots
        .iter()
        .map(|(site, snapshot)| {
            let nodes = snapshot
                .nodes
                .iter()
                .map(|n| NodeHeartbeat {
                    name: n.name.clone(),
                    last_heartbeat: n.ready.then_some(now),
                })
                .collect();
            let jobs = observed
                .jobs
                .get(site)
                .copied()
                .unwrap_or(&[])
                .iter()
                .map(|o| {
                    let (job_manager_node, task_manager_nodes) = match placements.get(&o.job) {
                        Some((generation, p)) if *generation == o.generation && &p.site == site => {
                            (
                                p.pods
                                    .iter()
                                    .find(|p| p.role == PodRole::Jobmanager)
                                    .map(|p| p.node.clone()),
                                p.pods
                                    .iter()
                                    .filter(|p| p.role == PodRole::Taskmanager)
                                    .map(|p| p.node.clone())
                                    .collect::<BTreeSet<_>>()
                                    .into_iter()
                                    .collect(),
                            )
                        }
                        _ => (None, Vec::new()),
                    };
                    JobObserved {
                        job: o.job.clone(),
                        generation: o.generation,
                        state: engine_state(o.state),
                        restarts: o.restarts,
                        job_manager_node,
                        task_manager_nodes,
                        latest_checkpoint: o.latest_completed_checkpoint.as_ref().map(|c| {
                            ObservedCheckpoint {
                                id: c.id,
                                path: c.path.clone(),
                                completed_at: c.completed_at,
                            }
                        }),
                    }
                })
                .collect();
            SiteObservation {
                site: site.clone(),
                observed_at: now,
                nodes,
                jobs,
            }
        })
        .collect()
}

fn push_bounded<T>(m: &Mutex<VecDeque<T>>, item: T) {
    let mut q = lock(m);
    if q.len() == KEPT_REPORTS {
        q.pop_front();
    }
    q.push_back(item);
}

fn reason_kind(reason: &failover::RelaunchReason) -> &'static str {
    use failover::RelaunchReason as R;
    match reason {
        R::JobManagerNodeLost { .. } => "job-manager-node-lost",
        R::TaskManagersNotRecovered { .. } => "task-managers-not-recovered",
        R::JobFailed { .. } => "job-failed",
        R::LaunchFailed { .. } => "launch-failed",
        R::SiteLost { .. } => "site-lost",
        R::Operation { .. } => "operation",
        R::SiteReturned { .. } => "site-returned",
        R::Revived { .. } => "revived",
    }
}

/// Engine knobs from configuration durations, for tests and `twinsite run`.
pub fn engine_config(
    sites: Vec<SiteId>,
    node_grace: Option<Duration>,
    site_grace: Option<Duration>,
) -> EngineConfig {
    let mut config = EngineConfig::new(sites);
    if let Some(g) = node_grace {
        config.node_grace = g;
    }
    if let Some(g) = site_grace {
        config.site.grace = g;
        config.site.suspect_after = config.site.suspect_after.min(g / 3);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launching() -> Held {
        Held {
            site: SiteId("dc-a".into()),
            generation: 4,
            doing: Doing::Launching {
                reason: "relaunched by the failover engine".into(),
            },
        }
    }

    #[test]
    fn a_launching_job_keeps_the_reason_its_relaunch_wrote() {
        let (phase, message) =
            launching().status(None, true, Some("failover: JobManager node dc-a-n3 lost"));
        assert_eq!(phase, StatusPhase::Launching);
        assert_eq!(message, "failover: JobManager node dc-a-n3 lost");
    }

    #[test]
    fn a_launching_job_without_a_relaunch_message_names_its_generation_and_site() {
        let (_, message) = launching().status(Some(JobState::Running), true, Some("placed"));
        assert_eq!(
            message,
            "failover: generation 4 in dc-a, relaunched by the failover engine"
        );
    }

    #[test]
    fn a_job_that_runs_nowhere_is_pending_with_its_reason_even_when_its_site_is_silent() {
        let held = Held {
            doing: Doing::Down {
                reason: "no checkpoint replicated to dc-b".into(),
            },
            ..launching()
        };
        let (phase, message) = held.status(None, false, None);
        assert_eq!(phase, StatusPhase::Pending);
        assert!(
            message.contains("runs nowhere: no checkpoint replicated to dc-b"),
            "{message}"
        );
    }
}
