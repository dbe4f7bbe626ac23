//! The failover engine's driver: each reconcile pass feeds the engine (`failover` crate) what
//! the pass observed, executes the commands it answers with, and feeds back their results.
//! Operations and job records of the engine are persisted in the state store, so a new
//! leader resumes them (`Engine::resume`). See `failover/README.md` for the engine itself and
//! "What the driver must guarantee"; this file is the driver it describes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use futures::StreamExt;
use std::sync::Mutex;
use std::time::Duration;

use failover::{
    CheckpointKind as EngineCheckpointKind, CheckpointPointer as EnginePointer, Command, Engine,
    EngineConfig, Event, FailoverMode, FailoverPlan, JobObserved, JobSpec, NodeHeartbeat,
    Operation, OpsRequest, Record, RecoveryReport, RequestError, RunState, SiteMoves,
    SiteObservation, Timestamp,
};
use scheduler::input::streamjob;
use scheduler::model::{JobDemand, JobId, JobPlacement, PodRole, SiteId};
use serde::Serialize;

use super::launch::{in_site_storage, launch_spec, spec_hash};
use super::status::{JobPhase as StatusPhase, JobStatus};
use super::{Controller, stream_job_of};
use crate::failover_plan::SchedulerPlacer;
use crate::site::{JobObservation, JobState, flink_job_id};
use crate::state::{CheckpointKind, Expected, JobRecord, SiteRecord, StateError, Versioned};

/// Commands one pass may execute before it stops and leaves the rest to the next pass: a
/// guard against an engine/driver loop, far above what a site loss of 1000 jobs needs.
const MAX_COMMANDS_PER_PASS: usize = 200_000;
/// Write-ahead records of one round written at once.
const RECORD_WRITES_AT_ONCE: usize = 32;
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

/// The engine and what the driver remembers between passes. Volatile: a new leader rebuilds
/// it from the store.
struct Live {
    /// The leadership term it was built in; a stale one is rebuilt from the store.
    term: u64,
    engine: Engine,
    /// Last time each node was observed Ready: its heartbeat as the controller sees it.
    heartbeats: BTreeMap<(SiteId, String), Timestamp>,
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
    /// leaves their placement and generation to the engine.
    busy: Mutex<BTreeSet<JobId>>,
    /// Notified when a background command (savepoint, copy) answered: run a pass now.
    wake: std::sync::Arc<tokio::sync::Notify>,
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

/// What a pass gives the driver: each reachable site's snapshot and jobs.
pub(crate) struct Observed<'a> {
    pub snapshots: BTreeMap<SiteId, &'a scheduler::model::SiteSnapshot>,
    pub jobs: BTreeMap<SiteId, &'a [JobObservation]>,
}

/// A command's result to feed back, and what the caller should learn from it.
#[derive(Default)]
struct Answers {
    plan: Option<FailoverPlan>,
    rejected: Option<RequestError>,
    acted: bool,
    /// Generations launched (job, generation), for the pass report.
    launched: Vec<(JobId, u64)>,
}

impl Answers {
    fn merge(&mut self, other: Answers) {
        self.plan = self.plan.take().or(other.plan);
        self.rejected = self.rejected.take().or(other.rejected);
        self.acted |= other.acted;
        self.launched.extend(other.launched);
    }
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
            busy: Mutex::new(BTreeSet::new()),
            wake: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
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

    pub fn is_busy(&self, job: &JobId) -> bool {
        lock(&self.busy).contains(job)
    }

    /// Recovery reports (RTO/RPO per relaunch), oldest first.
    pub fn reports(&self) -> Vec<RecoveryReport> {
        lock(&self.reports).iter().cloned().collect()
    }

    pub fn not_relaunched(&self) -> Vec<NotRelaunched> {
        lock(&self.not_relaunched).iter().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an engine audit entry is about, as the audit log's target: `op 3 shop/orders`,
/// `shop/orders@dc-a`, `dc-b`, ….
fn audit_target(entry: &failover::AuditEntry) -> String {
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

/// Name of a record in the store's failover keyspace.
fn record_name(record: &Record) -> String {
    match record {
        Record::Job(j) => job_record_name(j.id()),
        Record::Site(s) => format!("site.{}", s.id),
        Record::Operation(o) => format!("op.{:012}", o.id),
    }
}

/// Namespaces are DNS labels (no dots), so the first dot after `job.` splits them off.
fn job_record_name(job: &JobId) -> String {
    format!("job.{}", job.0.replacen('/', ".", 1))
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

/// The engine's view of a stored job: its demand, and whether it may start without state.
pub(crate) fn engine_spec(record: &JobRecord) -> Option<(JobSpec, streamjob::FailoverMode)> {
    let job = stream_job_of(record).ok()?;
    let demand = job.demand().ok()?;
    let mode = if job.spec.checkpoints.is_some() {
        FailoverMode::RestoreRequired
    } else {
        // No checkpoints configured: the job keeps no state twinsite could restore.
        FailoverMode::FreshStartAllowed
    };
    let site_moves = match job.spec.failover.mode {
        streamjob::FailoverMode::Manual => SiteMoves::OperatorOnly,
        streamjob::FailoverMode::Auto | streamjob::FailoverMode::None => SiteMoves::Automatic,
    };
    // Sites its jar is not verified in: the engine moves it to none of them.
    let jar_missing = JobStatus::from_value(&record.status)
        .jar
        .map(|jar| jar.missing(&job.spec.jar_uri, &spec_hash(&job)))
        .unwrap_or_default();
    Some((
        JobSpec {
            demand,
            mode,
            site_moves,
            jar_missing,
        },
        job.spec.failover.mode,
    ))
}

fn stored_placement(record: &JobRecord) -> Option<JobPlacement> {
    record
        .placement
        .as_ref()
        .and_then(|p| serde_json::from_value::<JobPlacement>(p.detail.clone()).ok())
}

/// The generation a checkpoint path belongs to: Flink job ids are derived per generation
/// (`flink_job_id`), and checkpoint paths carry them. Looks a few generations back.
fn generation_of_path(job: &JobId, current: u64, path: &str) -> Option<u64> {
    (current.saturating_sub(8)..=current).rev().find(|g| {
        let id = flink_job_id(job, *g);
        path.contains(&id)
    })
}

impl Controller {
    /// The failover part of a pass: feed the engine, execute its commands. Returns the
    /// generations it launched when it changed anything (the pass then re-reads the jobs).
    /// Fails only on store errors.
    pub(crate) async fn drive_failover(
        &self,
        records: &[Versioned<JobRecord>],
        observed: &Observed<'_>,
    ) -> Result<Option<Vec<(JobId, u64)>>, StateError> {
        if !self.failover.enabled() {
            return Ok(None);
        }
        let now = chrono::Utc::now();
        let mut guard = self.failover.live.lock().await;
        let mut resumed = Vec::new();
        if guard
            .as_ref()
            .is_some_and(|l| l.term != self.failover.term())
        {
            *guard = None;
        }
        if guard.is_none() {
            let (live, commands) = self.resume_engine(records, now).await?;
            *guard = Some(live);
            resumed = commands;
        }
        let Some(live) = guard.as_mut() else {
            return Ok(None);
        };
        let placer = self.placer(records, observed, now);
        // Contact with every site that answered first: a long pass must not make a healthy
        // site look silent while the other site's events are processed.
        let observations = self.observations(live, records, observed, now);
        let heard = observations
            .iter()
            .filter_map(|e| match e {
                Event::SnapshotObserved(o) => {
                    Some((o.site.clone(), o.observed_at, o.nodes.clone()))
                }
                _ => None,
            })
            .collect();
        let mut events = vec![
            Event::SitesHeard { sites: heard },
            Event::QuorumChanged(true),
        ];
        events.extend(self.registrations(&live.engine, records));
        events.append(&mut lock(&self.failover.inbox));
        let (answers, retries) = {
            let mut background = lock(&self.failover.shared);
            (
                std::mem::take(&mut background.answers),
                std::mem::take(&mut background.retries),
            )
        };
        events.extend(answers);
        events.extend(self.peer_reports().await);
        events.extend(observations);
        events.push(Event::Tick);

        let mut commands = resumed;
        commands.extend(retries);
        commands.extend(live.engine.step_all(events, now, &placer));
        let answers = self.execute(live, &placer, commands, now).await?;
        self.refresh_busy(&live.engine);
        Ok(answers.acted.then_some(answers.launched))
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
        let before = live.engine.operations().map(|o| o.id).max();
        let cancel = match &request {
            OpsRequest::Cancel { op } => Some(*op),
            _ => None,
        };
        // Jobs created or relaunched since the last pass are known before the plan is made.
        let mut events = self.registrations(&live.engine, &records);
        events.push(Event::OpsRequest(request));
        let commands = live.engine.step_all(events, now, &placer);
        let answers = self.execute(live, &placer, commands, now).await?;
        self.refresh_busy(&live.engine);
        if let Some(error) = answers.rejected {
            return Ok(RequestOutcome::Rejected(error));
        }
        if let Some(plan) = answers.plan {
            return Ok(RequestOutcome::Plan(Box::new(plan)));
        }
        let started = match cancel {
            Some(op) => live.engine.operation(op),
            None => live
                .engine
                .operations()
                .filter(|o| Some(o.id) > before)
                .max_by_key(|o| o.id),
        };
        match started {
            Some(op) => Ok(RequestOutcome::Operation(Box::new(op.clone()))),
            None => Err(DriverError::State(StateError::Unavailable {
                operation: "failover request",
                key: "failover".into(),
                reason: "the failover engine accepted the request but started no operation".into(),
            })),
        }
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
            return Ok(live.engine.operations().cloned().collect());
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

    async fn resume_engine(
        &self,
        records: &[Versioned<JobRecord>],
        now: Timestamp,
    ) -> Result<(Live, Vec<Command>), StateError> {
        let mut persisted = Vec::new();
        for (name, value) in self.store.list_failover_records().await? {
            match serde_json::from_value::<Record>(value) {
                Ok(record) => persisted.push(record),
                Err(error) => {
                    // A record this version cannot read must not be guessed around: the job
                    // is re-registered from its stored generation below instead.
                    tracing::error!(record = %name, %error, "failover record does not decode; ignored");
                }
            }
        }
        let count = persisted.len();
        let (mut engine, commands) = Engine::resume(self.failover.config.clone(), persisted, now);
        tracing::info!(
            records = count,
            reissued = commands.len(),
            "failover engine resumed"
        );
        // The replicated pointers the store holds: what cross-site relaunches may restore.
        let placer = SchedulerPlacer::new(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            &self.policy.placement_policy(),
            now,
        );
        let mut events = self.registrations(&engine, records);
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
                    events.push(event);
                }
            }
        }
        let mut extra = Vec::new();
        for event in events {
            extra.extend(engine.step(event, now, &placer));
        }
        let mut all = commands;
        all.extend(extra);
        Ok((
            Live {
                term: self.failover.term(),
                engine,
                heartbeats: BTreeMap::new(),
            },
            all,
        ))
    }

    /// `JobRegistered` for each placed job the engine does not know, knows at an older
    /// generation, or knows with another demand; `JobRemoved` for each it knows that is gone.
    fn registrations(&self, engine: &Engine, records: &[Versioned<JobRecord>]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut present = BTreeSet::new();
        for record in records {
            let Some(stored) = &record.value.placement else {
                continue;
            };
            let Some((spec, mode)) = engine_spec(&record.value) else {
                continue;
            };
            if mode == streamjob::FailoverMode::None {
                continue;
            }
            let id = spec.demand.id.clone();
            present.insert(id.clone());
            let site = SiteId(stored.site.clone());
            let generation = record.value.generation;
            let changed = match engine.job(&id) {
                None => true,
                Some(known) => known.generation < generation || known.spec != spec,
            };
            if changed {
                events.push(Event::JobRegistered {
                    spec: Box::new(spec),
                    site,
                    generation,
                });
            }
        }
        for known in engine.jobs() {
            if !present.contains(known.id()) && !records_have(records, known.id()) {
                events.push(Event::JobRemoved {
                    job: known.id().clone(),
                });
            }
        }
        events
    }

    /// Snapshots of the reachable sites, and checkpoints newer than the engine knows.
    fn observations(
        &self,
        live: &mut Live,
        records: &[Versioned<JobRecord>],
        observed: &Observed<'_>,
        now: Timestamp,
    ) -> Vec<Event> {
        let placements: BTreeMap<JobId, (u64, JobPlacement)> = records
            .iter()
            .filter_map(|r| {
                let p = stored_placement(&r.value)?;
                Some((p.job.clone(), (r.value.generation, p)))
            })
            .collect();
        let mut events = Vec::new();
        for (site, snapshot) in &observed.snapshots {
            for node in &snapshot.nodes {
                let key = (site.clone(), node.name.clone());
                if node.ready {
                    live.heartbeats.insert(key, now);
                } else {
                    // Never seen Ready: its silence counts from when this leader first saw it.
                    live.heartbeats.entry(key).or_insert(now);
                }
            }
            let nodes = snapshot
                .nodes
                .iter()
                .filter_map(|n| {
                    let at = live.heartbeats.get(&(site.clone(), n.name.clone()))?;
                    Some(NodeHeartbeat {
                        name: n.name.clone(),
                        last_heartbeat: *at,
                    })
                })
                .collect();
            let site_jobs = observed.jobs.get(site).copied().unwrap_or(&[]);
            let mut jobs = Vec::new();
            for o in site_jobs {
                let (jm, tms) = match placements.get(&o.job) {
                    Some((generation, p)) if *generation == o.generation && &p.site == site => (
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
                    ),
                    _ => (None, Vec::new()),
                };
                jobs.push(JobObserved {
                    job: o.job.clone(),
                    generation: o.generation,
                    state: engine_state(o.state),
                    restarts: o.restarts,
                    job_manager_node: jm,
                    task_manager_nodes: tms,
                });
                if let Some(c) = &o.latest_completed_checkpoint {
                    let newer = live.engine.job(&o.job).is_some_and(|r| {
                        r.generation == o.generation
                            && &r.site == site
                            && r.latest_complete.get(site).is_none_or(|old| old.id < c.id)
                    });
                    if newer {
                        events.push(Event::CheckpointCompleted {
                            job: o.job.clone(),
                            checkpoint: EnginePointer {
                                site: site.clone(),
                                generation: o.generation,
                                id: c.id,
                                path: c.path.clone(),
                                completed_at: c.completed_at,
                                kind: EngineCheckpointKind::Checkpoint,
                            },
                        });
                    }
                }
            }
            // The snapshot first, so the checkpoints are judged against fresh job state.
            events.insert(
                0,
                Event::SnapshotObserved(SiteObservation {
                    site: site.clone(),
                    observed_at: now,
                    nodes,
                    jobs,
                }),
            );
        }
        events
    }

    /// Peer views: a site heard by someone other than this controller (its etcd member or
    /// agent, seen through the quorum) must not be failed over.
    async fn peer_reports(&self) -> Vec<Event> {
        let mut events = Vec::new();
        for (id, site) in &self.sites {
            if let Some(at) = site.peer_last_contact().await {
                events.push(Event::PeerReport {
                    site: id.clone(),
                    last_contact: at,
                });
            }
        }
        events
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
        let busy: BTreeSet<JobId> = engine
            .jobs()
            .filter(|r| !matches!(r.phase, failover::JobPhase::Running))
            .map(|r| r.id().clone())
            .collect();
        *lock(&self.failover.busy) = busy;
    }

    /// Executes the engine's commands in rounds: a round is everything the engine issued
    /// without waiting for an answer, and the answers of a round are fed back together
    /// (`Engine::step_all`), whose commands make the next round.
    ///
    /// Within a round the write-ahead records go first, each record once in its last version
    /// (the engine issued the whole round from one line of state, so that version covers
    /// every command of the round), then audits, site marks and reports in order, then
    /// relaunches and fences concurrently, `maxInFlight` at a time. A store write that fails
    /// ends execution with the error: nothing after it may run (driver guarantee 1).
    async fn execute(
        &self,
        live: &mut Live,
        placer: &SchedulerPlacer,
        commands: Vec<Command>,
        now: Timestamp,
    ) -> Result<Answers, StateError> {
        let mut answers = Answers::default();
        let mut round = commands;
        let mut executed = 0usize;
        while !round.is_empty() {
            executed += round.len();
            if executed > MAX_COMMANDS_PER_PASS {
                tracing::error!(
                    left = round.len(),
                    "failover engine issued too many commands in one pass; the rest wait for the next"
                );
                break;
            }
            let events = self.execute_round(round, now, &mut answers).await?;
            round = if events.is_empty() {
                Vec::new()
            } else {
                live.engine.step_all(events, now, placer)
            };
        }
        Ok(answers)
    }

    async fn execute_round(
        &self,
        commands: Vec<Command>,
        now: Timestamp,
        answers: &mut Answers,
    ) -> Result<Vec<Event>, StateError> {
        let mut records: Vec<(String, Command)> = Vec::new();
        let mut audits = Vec::new();
        let mut in_order = Vec::new();
        let mut actions = Vec::new();
        for command in commands {
            match &command {
                Command::Audit(entry) => audits.push(crate::state::AuditEntry {
                    actor: "failover".into(),
                    action: "failover".into(),
                    target: audit_target(entry),
                    at_unix_ms: chrono::Utc::now().timestamp_millis(),
                    result: entry.message.clone(),
                }),
                Command::Persist(record) => {
                    let name = record_name(record);
                    records.retain(|(n, _)| n != &name);
                    records.push((name, command));
                }
                Command::Forget { job } => {
                    let name = job_record_name(job);
                    records.retain(|(n, _)| n != &name);
                    records.push((name, command));
                }
                Command::Relaunch { .. } | Command::Fence { .. } => actions.push(command),
                _ => in_order.push(command),
            }
        }
        // Different records, so they may be written at once (etcd commits concurrent writes
        // together); every one must succeed before anything acts.
        let writes: Vec<_> = futures::stream::iter(records)
            .map(|(_, command)| async move {
                let mut own = Answers::default();
                self.execute_one(command, now, &mut own).await
            })
            .buffer_unordered(RECORD_WRITES_AT_ONCE)
            .collect()
            .await;
        for write in writes {
            write?;
        }
        if let Err(error) = self.store.append_audits(&audits).await {
            tracing::warn!(%error, entries = audits.len(), "audit append failed");
        }
        let mut events = Vec::new();
        for command in in_order {
            events.extend(self.execute_one(command, now, answers).await?);
        }
        let concurrency = self.failover.config.max_in_flight.max(1);
        let results: Vec<_> = futures::stream::iter(actions)
            .map(|command| async move {
                let mut own = Answers::default();
                let event = self.execute_one(command, now, &mut own).await;
                (event, own)
            })
            .buffered(concurrency)
            .collect()
            .await;
        for (event, own) in results {
            answers.merge(own);
            events.extend(event?);
        }
        Ok(events)
    }

    async fn execute_one(
        &self,
        command: Command,
        now: Timestamp,
        answers: &mut Answers,
    ) -> Result<Option<Event>, StateError> {
        match command {
            Command::Persist(record) => {
                let name = record_name(&record);
                let value = serde_json::to_value(&record).map_err(|e| StateError::Corrupt {
                    location: name.clone(),
                    reason: format!("cannot encode failover record: {e}"),
                })?;
                self.store.put_failover_record(&name, &value).await?;
                Ok(None)
            }
            Command::Forget { job } => {
                self.store
                    .delete_failover_record(&job_record_name(&job))
                    .await?;
                Ok(None)
            }
            Command::Audit(entry) => {
                self.audit_as(
                    "failover",
                    "failover",
                    &audit_target(&entry),
                    &entry.message,
                )
                .await;
                Ok(None)
            }
            Command::Relaunch {
                job,
                generation,
                site,
                placement,
                restore_from,
                reason,
            } => {
                answers.acted = true;
                let failure = matches!(
                    reason,
                    failover::RelaunchReason::JobFailed { .. }
                        | failover::RelaunchReason::LaunchFailed { .. }
                        | failover::RelaunchReason::JobManagerNodeLost { .. }
                        | failover::RelaunchReason::TaskManagersNotRecovered { .. }
                );
                let result = self
                    .relaunch(
                        &job,
                        generation,
                        &placement,
                        restore_from.as_ref(),
                        &reason.to_string(),
                        failure,
                    )
                    .await?;
                if result.is_ok() {
                    answers.launched.push((job.clone(), generation));
                }
                self.failover
                    .metrics_relaunch(&self.metrics, reason_kind(&reason));
                Ok(Some(match result {
                    Ok(()) => Event::LaunchSucceeded {
                        job,
                        generation,
                        site,
                    },
                    Err(reason) => {
                        tracing::warn!(%job, generation, %site, %reason, "failover relaunch failed");
                        Event::LaunchFailed {
                            job,
                            generation,
                            site,
                            reason,
                        }
                    }
                }))
            }
            Command::Fence {
                job,
                generation,
                site,
            } => {
                let Some(handle) = self.sites.get(&site) else {
                    // Not a site of this controller: nothing of it can run here.
                    return Ok(Some(Event::Fenced {
                        job,
                        generation,
                        site,
                    }));
                };
                match handle.stop(&job, generation).await {
                    Ok(()) => {
                        answers.acted = true;
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
            // Savepoints and their copies take seconds to minutes: they run in the background
            // (an operation's `maxInFlight` of them at once) and answer through the inbox,
            // so the pass, other jobs and a cancel are never held up by them.
            Command::TriggerSavepoint {
                op,
                job,
                generation,
                site,
            } => {
                let target = match self.savepoint_dir(&job, &site).await? {
                    Ok(target) => target,
                    Err(reason) => return Ok(Some(Event::SavepointFailed { op, job, reason })),
                };
                let Some(handle) = self.sites.get(&site).cloned() else {
                    return Ok(Some(Event::SavepointFailed {
                        op,
                        job,
                        reason: format!("no site {site}"),
                    }));
                };
                answers.acted = true;
                let driver = self.failover.answer_sink();
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
            Command::ReplicateSavepoint {
                op,
                job,
                savepoint,
                to,
            } => {
                let roots = self.storage_roots.clone();
                let driver = self.failover.answer_sink();
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
            Command::MarkSiteLost { site, epoch } => {
                tracing::error!(%site, epoch, "site judged lost; failing its jobs over");
                self.store
                    .put_site(&SiteRecord {
                        site: site.0.clone(),
                        epoch,
                        state: "lost".into(),
                        detail: serde_json::Value::Null,
                    })
                    .await?;
                self.metrics
                    .sites_lost
                    .get_or_create(&super::metrics::SiteLabel {
                        site: site.0.clone(),
                    })
                    .inc();
                Ok(None)
            }
            Command::MarkSiteRecovered { site, epoch } => {
                tracing::info!(%site, epoch, "site recovered: its stale generations are fenced");
                self.store
                    .put_site(&SiteRecord {
                        site: site.0.clone(),
                        epoch,
                        state: "active".into(),
                        detail: serde_json::Value::Null,
                    })
                    .await?;
                Ok(None)
            }
            Command::ReportRecovery(report) => {
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
                self.metrics
                    .failover_rto_seconds
                    .observe(report.rto_from_detection.as_secs_f64());
                if let Some(rpo) = report.rpo {
                    self.metrics.failover_rpo_seconds.observe(rpo.as_secs_f64());
                }
                push_bounded(&self.failover.reports, report);
                Ok(None)
            }
            Command::ReportNotRelaunched {
                job,
                reason,
                missing,
            } => {
                tracing::warn!(%job, %reason, "not relaunched");
                self.metrics.failover_not_relaunched.inc();
                push_bounded(
                    &self.failover.not_relaunched,
                    NotRelaunched {
                        at: now,
                        job,
                        reason,
                        missing,
                    },
                );
                Ok(None)
            }
            Command::ReportPlan(plan) => {
                answers.plan = Some(plan);
                Ok(None)
            }
            Command::Rejected { error, .. } => {
                answers.rejected = Some(error);
                Ok(None)
            }
        }
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
            let restore = restore_from.map(|c| c.path.clone());
            let mut record = current.value.clone();
            record.generation = generation;
            record.placement = Some(crate::state::JobPlacement {
                site: placement.site.0.clone(),
                detail: serde_json::to_value(placement).unwrap_or_default(),
            });
            let mut status = JobStatus::from_value(&record.status);
            status.phase = StatusPhase::Launching;
            status.site = Some(placement.site.0.clone());
            status.restore_from = restore.clone();
            status.last_checkpoint = None;
            status.launched_spec = Some(spec_hash(&job_spec));
            status.message = Some(format!("failover: {reason}"));
            // Relaunches after failures count (a new checkpoint resets them); a move doesn't.
            status.relaunches = if failure {
                status.relaunches.saturating_add(1)
            } else {
                0
            };
            record.status = status.to_value();
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
        let dir = match stored {
            Some(record) => stream_job_of(&record.value)
                .ok()
                .and_then(|j| j.spec.checkpoints.map(|c| c.dir))
                .unwrap_or_else(|| format!("hdfs:///flink/checkpoints/{namespace}/{name}")),
            None => format!("hdfs:///flink/checkpoints/{namespace}/{name}"),
        };
        let dir = format!("{}/savepoints", dir.trim_end_matches('/'));
        Ok(match self.storage_roots.get(site) {
            Some(root) => in_site_storage(root, &dir),
            None => Ok(dir),
        })
    }
}

fn records_have(records: &[Versioned<JobRecord>], job: &JobId) -> bool {
    records
        .iter()
        .any(|r| &JobId::new(&r.value.namespace, &r.value.name) == job)
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
    }
}

impl FailoverDriver {
    fn metrics_relaunch(&self, metrics: &super::ControllerMetrics, kind: &'static str) {
        metrics
            .failover_relaunches
            .get_or_create(&super::metrics::ReasonLabel {
                reason: kind.into(),
            })
            .inc();
    }
}

/// The engine event for a replicated pointer the store holds, with the generation that
/// wrote it (from the Flink job id in its path).
pub(crate) fn replicated_event(
    job: &JobId,
    current_generation: u64,
    site: &str,
    pointer: &crate::state::CheckpointPointer,
) -> Option<Event> {
    let generation = generation_of_path(job, current_generation, &pointer.uri)?;
    Some(Event::CheckpointReplicated {
        job: job.clone(),
        replica: EnginePointer {
            site: SiteId(site.to_string()),
            generation,
            id: pointer.checkpoint_id,
            path: pointer.uri.clone(),
            completed_at: chrono::DateTime::from_timestamp_millis(pointer.recorded_at_unix_ms)?,
            kind: EngineCheckpointKind::Checkpoint,
        },
    })
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
