//! The failover engine: one `step(event, now, placer)` that updates explicit state and returns
//! the commands a driver must execute, in order (openraft's engine/driver split). No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use scheduler::model::{JobDemand, JobId, JobPlacement, Resources, SiteId};
use serde::{Deserialize, Serialize};

use crate::health::{
    DEFAULT_NODE_GRACE, NodeVerdict, SiteSigns, SiteThresholds, SiteVerdict, judge_node, judge_site,
};
use crate::operation::{
    FailoverPlan, MoveMode, MoveStep, OpJob, OpKind, OpState, Operation, PlannedMove,
};
use crate::types::{
    CheckpointKind, CheckpointPointer, FailoverMode, JobSpec, NotFitting, Placer, RelaunchReason,
    RunState, SiteMoves, SiteObservation, Timestamp, elapsed,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// The sites, in the order used to pick a survivor.
    pub sites: Vec<SiteId>,
    pub node_grace: Duration,
    pub site: SiteThresholds,
    /// How long Flink gets to recover from lost TaskManager nodes before the engine relaunches.
    pub task_manager_recovery_bound: Duration,
    /// Restarts of one generation that count as a crash loop.
    pub crash_loop_restarts: u32,
    /// Failed relaunches in the job's site before the next one goes to the other site.
    pub relaunches_before_other_site: u32,
    /// Jobs of one *planned* operation moving at once (each stops its job with a savepoint:
    /// this bounds how many are stopped at a time). Forced moves and site losses are paced
    /// by `launch_rate` alone: their jobs are down already, waiting on answers only delays
    /// them.
    pub max_in_flight: usize,
    /// Moves one operation starts per second after its first `launch_burst`, critical
    /// first: a site loss of N jobs has started all of them `(N - burst) / rate` seconds
    /// after it was judged, whatever the targets answer in the meantime.
    #[serde(default = "default_launch_rate")]
    pub launch_rate: u32,
    /// Moves an operation starts at once, before the rate applies.
    #[serde(default = "default_launch_burst")]
    pub launch_burst: u32,
    /// A fence not confirmed after this long is issued again.
    pub fence_retry: Duration,
    /// Launches of one job within one operation before it is given up.
    pub max_launches_per_move: u32,
    /// Start a failback on its own once a lost site is healthy again. Off unless policy says.
    pub auto_failback: bool,
    /// A job that runs nowhere is tried again this often (and at once when a site recovers):
    /// room may have been freed, a checkpoint replicated, a site become healthy.
    pub down_retry: Duration,
}

/// 1000 jobs of a lost site started 4 s after the judgement: within 45 s of the last
/// heartbeat at the default 30 s site grace, leaving a 5 s reconcile interval and a slow
/// pass room.
pub const DEFAULT_LAUNCH_RATE: u32 = 200;
pub const DEFAULT_LAUNCH_BURST: u32 = 200;

/// The first wait before a job whose launch was refused is tried again; each further
/// refusal in a row doubles it, up to `down_retry`.
pub const FIRST_LAUNCH_RETRY: Duration = Duration::from_secs(1);

fn default_launch_rate() -> u32 {
    DEFAULT_LAUNCH_RATE
}

fn default_launch_burst() -> u32 {
    DEFAULT_LAUNCH_BURST
}

impl EngineConfig {
    /// Moves an operation requested at `requested_at` may have started by `now`.
    pub fn launch_allowance(&self, requested_at: Timestamp, now: Timestamp) -> usize {
        let paced = f64::from(self.launch_rate) * elapsed(requested_at, now).as_secs_f64();
        // `as` saturates; an allowance beyond usize is no limit at all.
        (self.launch_burst as usize).saturating_add(paced as usize)
    }

    /// When an operation requested at `requested_at` that has started `started` moves may
    /// start the next one; `None` at a rate of zero (only the burst ever starts).
    pub fn next_launch_at(&self, requested_at: Timestamp, started: usize) -> Option<Timestamp> {
        let beyond_burst = (started + 1).saturating_sub(self.launch_burst as usize);
        if beyond_burst == 0 {
            return Some(requested_at);
        }
        if self.launch_rate == 0 {
            return None;
        }
        let secs = beyond_burst as f64 / f64::from(self.launch_rate);
        let after = Duration::try_from_secs_f64(secs).ok()?;
        requested_at.checked_add_signed(chrono::TimeDelta::from_std(after).ok()?)
    }

    pub fn new(sites: Vec<SiteId>) -> Self {
        EngineConfig {
            sites,
            node_grace: DEFAULT_NODE_GRACE,
            site: SiteThresholds::default(),
            task_manager_recovery_bound: Duration::from_secs(180),
            crash_loop_restarts: 10,
            relaunches_before_other_site: 3,
            max_in_flight: 16,
            launch_rate: DEFAULT_LAUNCH_RATE,
            launch_burst: DEFAULT_LAUNCH_BURST,
            fence_retry: Duration::from_secs(15),
            max_launches_per_move: 3,
            auto_failback: false,
            down_retry: Duration::from_secs(30),
        }
    }
}

/// What the engine believes about one job's run-time state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum JobPhase {
    Running,
    /// The current generation is being fenced; once confirmed, relaunch in `target`.
    Fencing {
        reason: RelaunchReason,
        target: SiteId,
        detected_at: Timestamp,
        last_heartbeat: Option<Timestamp>,
    },
    /// `Relaunch` of the current generation issued.
    Launching {
        since: Timestamp,
        placement: JobPlacement,
        restore_from: Option<CheckpointPointer>,
    },
    /// An operation owns the job until it finishes moving it.
    InOperation {
        op: u64,
    },
    /// Not running anywhere; `reason` says why.
    Down {
        reason: String,
    },
}

/// A generation that must be stopped and deleted, but whose stop is not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StaleGeneration {
    pub site: SiteId,
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    /// The latest generation issued; the only one allowed to run.
    pub generation: u64,
    pub site: SiteId,
    pub phase: JobPhase,
    /// Latest complete checkpoint of the live lineage, per site where it was written.
    pub latest_complete: BTreeMap<SiteId, CheckpointPointer>,
    /// Latest checkpoint fully replicated to (readable in) each site.
    pub latest_replicated: BTreeMap<SiteId, CheckpointPointer>,
    /// Relaunches for failure in the current site since the last checkpoint (progress).
    pub failures_in_site: u32,
    pub stale: BTreeSet<StaleGeneration>,
    /// When lost TaskManager nodes were first seen with a healthy JobManager.
    pub task_managers_lost_since: Option<Timestamp>,
    /// The epoch of its site when the current generation was issued or adopted. Once the
    /// site's epoch is higher (the site was judged lost since), that generation may never
    /// run again (epoch admission) and the job must get a new one. `None` in records
    /// written before it existed.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Launches refused in a row (outside operations; zero once one runs): the back-off of
    /// its next try (`launch_retry_delay`), kept across leader changes so that a new
    /// leader does not start it again from its first step.
    #[serde(default)]
    pub launches_refused: u32,
}

impl JobRecord {
    pub fn id(&self) -> &JobId {
        &self.spec.demand.id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum SiteStatus {
    Up,
    Lost {
        since: Timestamp,
        detected_at: Timestamp,
    },
    /// Reachable again after a loss; nothing but fences runs there until it is clean.
    Returning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    pub id: SiteId,
    pub epoch: u64,
    pub status: SiteStatus,
    /// Nodes not heard at the last observation, with when they last were: a new leader
    /// keeps counting their silence from there instead of granting them a fresh grace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub silent_nodes: BTreeMap<String, Timestamp>,
}

/// One unit of durable state, written by `Command::Persist`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "record")]
pub enum Record {
    Job(Box<JobRecord>),
    Site(SiteRecord),
    Operation(Box<Operation>),
}

impl Record {
    /// The name a store keeps this record under: `job.<namespace>.<name>`, `site.<id>`,
    /// `op.<id, 12 digits>` (sorted by id).
    pub fn key(&self) -> String {
        match self {
            Record::Job(j) => Record::job_key(j.id()),
            Record::Site(s) => format!("site.{}", s.id),
            Record::Operation(o) => format!("op.{:012}", o.id),
        }
    }

    /// The key of a job's record. Namespaces are DNS labels (no dots), so the first dot
    /// after `job.` splits them off.
    pub fn job_key(job: &JobId) -> String {
        format!("job.{}", job.0.replacen('/', ".", 1))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub op: Option<u64>,
    pub job: Option<JobId>,
    pub site: Option<SiteId>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    pub job: JobId,
    pub generation: u64,
    pub site: SiteId,
    pub reason: RelaunchReason,
    pub op: Option<u64>,
    pub restore_from: Option<CheckpointPointer>,
    /// From the moment the engine judged the failure to the relaunch command.
    pub rto_from_detection: Duration,
    /// From the last sign of life (heartbeat) to the relaunch command, when known.
    pub rto_from_last_heartbeat: Option<Duration>,
    /// Data lost: from the restored checkpoint to the failure (the last sign of life of the
    /// node, site or job; for a forced move of a reachable source, the relaunch, since the
    /// source ran until it was fenced). Zero for a stop-with-savepoint; `None` when the job
    /// started without state. The time from the failure to the relaunch is not data lost
    /// (the job resumes from the same checkpoint whenever it restarts): it is
    /// `rto_from_last_heartbeat`, the relaunch delay.
    pub rpo: Option<Duration>,
}

/// What a relaunch from `restore` loses when the job failed at `failed_at`: everything after
/// the checkpoint up to the failure. Nothing for a savepoint (the source stopped there).
fn rpo_at(restore: Option<&CheckpointPointer>, failed_at: Timestamp) -> Option<Duration> {
    restore.map(|c| match c.kind {
        CheckpointKind::Savepoint => Duration::ZERO,
        CheckpointKind::Checkpoint => elapsed(c.completed_at, failed_at),
    })
}

/// Ops requests. `dry_run` returns the plan and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "request")]
pub enum OpsRequest {
    Failover {
        from: SiteId,
        to: SiteId,
        mode: MoveMode,
        dry_run: bool,
    },
    /// Jobs whose preferred site is `to` and that run in `from` go home.
    Failback {
        from: SiteId,
        to: SiteId,
        mode: MoveMode,
        dry_run: bool,
    },
    Cancel {
        op: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RequestError {
    #[error("site {site} is not one of the configured sites")]
    UnknownSite { site: SiteId },
    #[error("failover from site {site} to itself")]
    SameSite { site: SiteId },
    #[error("target site {site} is not healthy (status {status})")]
    TargetNotHealthy { site: SiteId, status: String },
    #[error("planned mode needs the source site {site} reachable; use forced")]
    SourceUnreachable { site: SiteId },
    #[error("operation {op} does not exist")]
    UnknownOperation { op: u64 },
    #[error("operation {op} already finished")]
    OperationFinished { op: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    /// Adopts a job (or updates its spec) already running as `generation` in `site`.
    JobRegistered {
        spec: Box<JobSpec>,
        site: SiteId,
        generation: u64,
    },
    SnapshotObserved(SiteObservation),
    /// Another observer (the peer site, the witness) heard from `site` at `last_contact`.
    PeerReport {
        site: SiteId,
        last_contact: Timestamp,
    },
    CheckpointCompleted {
        job: JobId,
        checkpoint: CheckpointPointer,
    },
    /// `replica.site` is the site the checkpoint is now fully readable in.
    CheckpointReplicated {
        job: JobId,
        replica: CheckpointPointer,
    },
    LaunchSucceeded {
        job: JobId,
        generation: u64,
        site: SiteId,
    },
    LaunchFailed {
        job: JobId,
        generation: u64,
        site: SiteId,
        reason: String,
    },
    Fenced {
        job: JobId,
        generation: u64,
        site: SiteId,
    },
    SavepointCompleted {
        op: u64,
        job: JobId,
        savepoint: CheckpointPointer,
    },
    SavepointFailed {
        op: u64,
        job: JobId,
        reason: String,
    },
    /// The savepoint of `job` is readable at the target as `replica`.
    ReplicationCompleted {
        op: u64,
        job: JobId,
        replica: CheckpointPointer,
    },
    OpsRequest(OpsRequest),
    QuorumChanged(bool),
    /// Every job the state store holds: the engine registers the placed jobs it does not
    /// know, knows at an older generation (a relaunch by the controller: adopted, the old
    /// one fenced) or with another spec, and forgets the ones no longer stored.
    JobsStored(Vec<crate::types::StoredJob>),
    /// The job was deleted: the engine forgets it (answer: `Forget`). Generations still
    /// running are the driver's to stop, as for any deleted job.
    JobRemoved {
        job: JobId,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "command")]
pub enum Command {
    /// Write this record durably before executing any later command.
    Persist(Record),
    Audit(AuditEntry),
    Relaunch {
        job: JobId,
        generation: u64,
        site: SiteId,
        placement: JobPlacement,
        /// `None`: start without state (only for `FreshStartAllowed` jobs).
        restore_from: Option<CheckpointPointer>,
        reason: RelaunchReason,
    },
    /// Stop and delete `generation` of `job` in `site`; never restart it. Answer: `Fenced`.
    Fence {
        job: JobId,
        generation: u64,
        site: SiteId,
    },
    /// Stop-with-savepoint. Answer: `SavepointCompleted`/`SavepointFailed`.
    TriggerSavepoint {
        op: u64,
        job: JobId,
        generation: u64,
        site: SiteId,
    },
    /// Copy the savepoint to `to`. Answer: `ReplicationCompleted`.
    ReplicateSavepoint {
        op: u64,
        job: JobId,
        savepoint: CheckpointPointer,
        to: SiteId,
    },
    MarkSiteLost {
        site: SiteId,
        epoch: u64,
    },
    MarkSiteRecovered {
        site: SiteId,
        epoch: u64,
    },
    ReportRecovery(RecoveryReport),
    ReportNotRelaunched {
        job: JobId,
        reason: String,
        missing: Resources,
    },
    ReportPlan(FailoverPlan),
    /// Delete the job's durable record (it was removed).
    Forget {
        job: JobId,
    },
    Rejected {
        request: OpsRequest,
        error: RequestError,
    },
    /// The request started operation `op` (a failover, a failback), or is cancelling it.
    Accepted {
        request: OpsRequest,
        op: u64,
    },
}

/// Volatile knowledge of one site, rebuilt from observations after a restart.
#[derive(Debug, Clone)]
struct SiteView {
    last_api_contact: Option<Timestamp>,
    peer_last_contact: Option<Timestamp>,
    watching_since: Timestamp,
    nodes: BTreeMap<String, Timestamp>,
    jobs: Vec<crate::types::JobObserved>,
    no_quorum_reported: bool,
}

impl SiteView {
    fn new(now: Timestamp) -> Self {
        SiteView {
            last_api_contact: None,
            peer_last_contact: None,
            watching_since: now,
            nodes: BTreeMap::new(),
            jobs: Vec::new(),
            no_quorum_reported: false,
        }
    }
}

#[derive(Debug, Default)]
struct Dirty {
    jobs: BTreeSet<JobId>,
    sites: BTreeSet<SiteId>,
    ops: BTreeSet<u64>,
}

/// The engine. Durable state is `jobs`, `sites`, `operations`; everything else is rebuilt
/// from observations.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    jobs: BTreeMap<JobId, JobRecord>,
    sites: BTreeMap<SiteId, SiteRecord>,
    operations: BTreeMap<u64, Operation>,
    views: BTreeMap<SiteId, SiteView>,
    quorum: bool,
    dirty: Dirty,
    fence_sent: BTreeMap<(JobId, SiteId, u64), Timestamp>,
    /// When each job that runs nowhere was last tried (or went down): see `revive_down_jobs`.
    down_tried: BTreeMap<JobId, Timestamp>,
    /// Running generations missing from fresh observations of their (up) site, and since
    /// when: a site agent stopped them (self-fencing, epoch admission) or they vanished.
    /// Past the node grace the job is relaunched like a failed one (see `judge_jobs`).
    vanished: BTreeMap<(JobId, u64), Timestamp>,
}

/// For events that place nothing (a removal).
struct NoPlacer;

impl Placer for NoPlacer {
    fn place(
        &self,
        _site: &SiteId,
        _jobs: &[JobDemand],
        _avoid: &BTreeSet<String>,
    ) -> crate::types::PlacementOutcome {
        crate::types::PlacementOutcome::default()
    }
}

/// A site a job that runs nowhere may be relaunched in, with what it would restore from.
type Host = (SiteId, Option<CheckpointPointer>);

/// Collects commands; an action first flushes pending `Persist`s so the state that led to an
/// action is durable before the action runs.
struct Out(Vec<Command>);

impl Engine {
    pub fn new(config: EngineConfig, now: Timestamp) -> Self {
        let mut engine = Engine {
            jobs: BTreeMap::new(),
            sites: BTreeMap::new(),
            operations: BTreeMap::new(),
            views: BTreeMap::new(),
            quorum: false,
            dirty: Dirty::default(),
            fence_sent: BTreeMap::new(),
            down_tried: BTreeMap::new(),
            vanished: BTreeMap::new(),
            config,
        };
        for site in engine.config.sites.clone() {
            engine.sites.insert(
                site.clone(),
                SiteRecord {
                    id: site.clone(),
                    epoch: 0,
                    status: SiteStatus::Up,
                    silent_nodes: BTreeMap::new(),
                },
            );
            engine.views.insert(site, SiteView::new(now));
        }
        engine
    }

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
            if r.launches_refused > 0 && matches!(r.phase, JobPhase::Down { .. }) {
                engine.down_tried.insert(r.id().clone(), now);
            }
        }
        let mut out = Out(Vec::new());
        engine.flush(&mut out);
        // A loss written just before the leader died may never have reached the sites:
        // marked again (idempotent) before anything is moved off them.
        // So may a recovery: a site marked lost once is marked again with its state.
        for s in engine.sites.values() {
            match s.status {
                SiteStatus::Lost { .. } => out.0.push(Command::MarkSiteLost {
                    site: s.id.clone(),
                    epoch: s.epoch,
                }),
                SiteStatus::Up if s.epoch > 0 => out.0.push(Command::MarkSiteRecovered {
                    site: s.id.clone(),
                    epoch: s.epoch,
                }),
                _ => {}
            }
        }
        for record in engine.jobs.values() {
            match &record.phase {
                JobPhase::Fencing { .. } => out.0.push(Command::Fence {
                    job: record.id().clone(),
                    generation: record.generation,
                    site: record.site.clone(),
                }),
                JobPhase::Launching {
                    placement,
                    restore_from,
                    ..
                } => out.0.push(Command::Relaunch {
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
                out.0.push(cmd);
            }
        }
        out.0.extend(reports);
        // A re-issued fence the site does not answer (it may be unreachable) is issued
        // again after `fence_retry`, like any other.
        for c in &out.0 {
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
        out.0.push(Command::Audit(AuditEntry {
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
        (engine, out.0)
    }

    /// Job and operation records are written one by one, so a leader may die between the
    /// two writes of one transition. The job record is authoritative for its generation:
    /// an operation step it has overtaken is closed, and a job an operation no longer drives
    /// is released.
    fn reconcile(&mut self) {
        for o in self.operations.values_mut().filter(|o| o.is_active()) {
            for j in o.jobs.iter_mut().filter(|j| j.step.is_in_flight()) {
                let Some(r) = self.jobs.get(&j.job) else {
                    j.step = MoveStep::Failed {
                        reason: "job no longer known".into(),
                        running: false,
                    };
                    continue;
                };
                if r.phase == (JobPhase::InOperation { op: o.id }) {
                    continue;
                }
                j.step = match r.phase {
                    JobPhase::Down { .. } => MoveStep::Failed {
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
            let JobPhase::InOperation { op } = r.phase else {
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
                }) => Some(JobPhase::Down { reason }),
                Some(step) if step.is_finished() => Some(JobPhase::Running),
                Some(_) => None,
                // The operation was never written: the job record may name a generation
                // that was never launched. Whatever runs of it is stopped, and the job is
                // relaunched like any job that runs nowhere.
                None => {
                    r.stale.insert(StaleGeneration {
                        site: r.site.clone(),
                        generation: r.generation,
                    });
                    Some(JobPhase::Down {
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

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn job(&self, job: &JobId) -> Option<&JobRecord> {
        self.jobs.get(job)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    pub fn site(&self, site: &SiteId) -> Option<&SiteRecord> {
        self.sites.get(site)
    }

    pub fn operation(&self, op: u64) -> Option<&Operation> {
        self.operations.get(&op)
    }

    /// How healthy `site` looks at `now`: its durable status and, unless it is lost, the
    /// health judgement of its signs of life (healthy, suspect, or silent past the grace
    /// without quorum). Read-only: for metrics and dashboards, never for decisions, which
    /// `step` takes.
    pub fn site_health(&self, site: &SiteId, now: Timestamp) -> Option<(SiteRecord, SiteVerdict)> {
        let record = self.sites.get(site)?.clone();
        let verdict = match &record.status {
            SiteStatus::Lost { since, .. } => SiteVerdict::Lost { since: *since },
            _ => judge_site(&self.signs(site)?, self.quorum, now, &self.config.site),
        };
        Some((record, verdict))
    }

    /// The next instant after `now` at which an operation's pacing lets another move
    /// start, if one waits only for that: the caller steps (ticks) the engine then rather
    /// than at its usual interval.
    pub fn next_launch_at(&self, now: Timestamp) -> Option<Timestamp> {
        self.operations
            .values()
            .filter(|o| o.has_pending())
            .filter_map(|o| self.config.next_launch_at(o.requested_at, o.started()))
            .filter(|at| *at > now)
            .min()
    }

    pub fn operations(&self) -> impl Iterator<Item = &Operation> {
        self.operations.values()
    }

    /// Every durable record, as `resume` takes them.
    pub fn records(&self) -> Vec<Record> {
        let mut v: Vec<Record> = self.sites.values().cloned().map(Record::Site).collect();
        v.extend(
            self.jobs
                .values()
                .cloned()
                .map(|j| Record::Job(Box::new(j))),
        );
        v.extend(
            self.operations
                .values()
                .cloned()
                .map(|o| Record::Operation(Box::new(o))),
        );
        v
    }

    /// Advances the engine by one event at `now`; returns the commands to execute in order.
    pub fn step(&mut self, event: Event, now: Timestamp, placer: &dyn Placer) -> Vec<Command> {
        self.step_all([event], now, placer)
    }

    /// Advances the engine by several events that arrived together (a pass's observations,
    /// the answers to one round of commands): each is applied in order, then the engine
    /// judges once. Equivalent to stepping them one by one except that judging, and the
    /// write-ahead records, happen once instead of per event, which keeps a site loss of a
    /// thousand jobs linear instead of quadratic.
    pub fn step_all(
        &mut self,
        events: impl IntoIterator<Item = Event>,
        now: Timestamp,
        placer: &dyn Placer,
    ) -> Vec<Command> {
        let mut out = Out(Vec::new());
        let mut judge = false;
        for event in events {
            judge |= self.apply(event, now, placer, &mut out);
        }
        if judge {
            self.evaluate(now, placer, &mut out);
            self.flush(&mut out);
        }
        out.0
    }

    /// Applies one event; `false` when it is bookkeeping only and needs no judging.
    fn apply(&mut self, event: Event, now: Timestamp, placer: &dyn Placer, out: &mut Out) -> bool {
        match event {
            Event::JobRegistered {
                spec,
                site,
                generation,
            } => self.on_job_registered(*spec, site, generation, now, out),
            Event::SnapshotObserved(o) => self.on_snapshot(o, now, out),
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
            } => self.on_launch_succeeded(&job, generation, &site, now, out),
            Event::LaunchFailed {
                job,
                generation,
                site,
                reason,
            } => self.on_launch_failed(&job, generation, &site, reason, now, placer, out),
            Event::Fenced {
                job,
                generation,
                site,
            } => self.on_fenced(&job, generation, &site, now, placer, out),
            Event::SavepointCompleted { op, job, savepoint } => {
                self.on_savepoint(op, &job, Ok(savepoint), now, out)
            }
            Event::SavepointFailed { op, job, reason } => {
                self.on_savepoint(op, &job, Err(reason), now, out)
            }
            Event::ReplicationCompleted { op, job, replica } => {
                self.on_replication(op, &job, replica, now, placer, out)
            }
            Event::OpsRequest(request) => self.on_request(request, now, placer, out),
            Event::QuorumChanged(q) => {
                if self.quorum != q {
                    self.quorum = q;
                    self.audit(
                        out,
                        now,
                        None,
                        None,
                        None,
                        format!("quorum with witness: {q}"),
                    );
                }
            }
            Event::JobsStored(stored) => return self.on_jobs_stored(stored, now, out),
            Event::JobRemoved { job } => {
                if self.jobs.remove(&job).is_some() {
                    self.dirty.jobs.remove(&job);
                    self.fence_sent.retain(|(j, _, _), _| j != &job);
                    self.audit(out, now, None, Some(&job), None, "job removed".into());
                    self.act(out, Command::Forget { job });
                }
            }
            Event::Tick => {}
        }
        true
    }

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
        let (jobs, not_fitting, preempt) =
            self.plan_moves(from, to, mode, failback, false, now, placer);
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

    // ---- events -------------------------------------------------------------------------

    fn on_job_registered(
        &mut self,
        spec: JobSpec,
        site: SiteId,
        generation: u64,
        now: Timestamp,
        out: &mut Out,
    ) {
        let id = spec.demand.id.clone();
        if let Some(existing) = self.jobs.get_mut(&id) {
            existing.spec = spec;
            // The driver launched a newer generation on its own (a spec change relaunches with
            // a savepoint): adopt it, unless the engine is itself moving the job, and fence
            // the one it replaced.
            let idle = matches!(existing.phase, JobPhase::Running | JobPhase::Down { .. });
            if generation > existing.generation && idle {
                let replaced = StaleGeneration {
                    site: existing.site.clone(),
                    generation: existing.generation,
                };
                existing.stale.insert(replaced);
                existing.generation = generation;
                existing.site = site.clone();
                existing.phase = JobPhase::Running;
                existing.failures_in_site = 0;
                existing.task_managers_lost_since = None;
                existing.epoch = self.sites.get(&site).map(|s| s.epoch);
                self.audit(
                    out,
                    now,
                    None,
                    Some(&id),
                    Some(&site),
                    format!("adopted generation {generation} launched by the controller"),
                );
            }
        } else {
            self.jobs.insert(
                id.clone(),
                JobRecord {
                    spec,
                    generation,
                    site: site.clone(),
                    phase: JobPhase::Running,
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
                out,
                now,
                None,
                Some(&id),
                Some(&site),
                format!("registered at generation {generation}"),
            );
        }
        self.dirty.jobs.insert(id);
    }

    fn on_snapshot(&mut self, o: SiteObservation, now: Timestamp, out: &mut Out) {
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
                out,
                now,
                None,
                None,
                Some(&site),
                "site reachable again: fencing stale generations before anything runs there".into(),
            );
        }
        self.record_stale_observations(&site);
        self.issue_stale_fences(&site, now, out);
        self.judge_jobs(&site, now, out);
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
                                kind: CheckpointKind::Checkpoint,
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
    fn on_jobs_stored(
        &mut self,
        stored: Vec<crate::types::StoredJob>,
        now: Timestamp,
        out: &mut Out,
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
                self.on_job_registered(placed.spec, placed.site, placed.generation, now, out);
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
            self.apply(Event::JobRemoved { job }, now, &NoPlacer, out);
            changed = true;
        }
        changed
    }

    fn on_checkpoint_completed(&mut self, job: &JobId, c: CheckpointPointer) {
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

    fn on_checkpoint_replicated(&mut self, job: &JobId, c: CheckpointPointer) {
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

    fn on_launch_succeeded(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        now: Timestamp,
        out: &mut Out,
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
            JobPhase::Launching { .. } => {
                r.phase = JobPhase::Running;
                self.dirty.jobs.insert(job.clone());
                self.audit(
                    out,
                    now,
                    None,
                    Some(job),
                    Some(site),
                    format!("generation {generation} running"),
                );
            }
            JobPhase::InOperation { op } => {
                let Some(step) = Self::op_job_step(&mut self.operations, op, job) else {
                    return;
                };
                // A launch answer for another generation is stale and must not move the operation.
                if matches!(step, MoveStep::Launching { generation: g, .. } if *g == generation) {
                    *step = MoveStep::Done {
                        generation,
                        site: site.clone(),
                    };
                    r.phase = JobPhase::Running;
                    self.dirty.jobs.insert(job.clone());
                    self.dirty.ops.insert(op);
                    self.audit(
                        out,
                        now,
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
    fn op_job_step<'a>(
        operations: &'a mut BTreeMap<u64, Operation>,
        op: u64,
        job: &JobId,
    ) -> Option<&'a mut MoveStep> {
        Some(&mut operations.get_mut(&op)?.job_mut(job)?.step)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_launch_failed(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        reason: String,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
    ) {
        let Some(r) = self.jobs.get(job) else {
            return;
        };
        if r.generation != generation || &r.site != site {
            return;
        }
        self.audit(
            out,
            now,
            None,
            Some(job),
            Some(site),
            format!("launch of generation {generation} failed: {reason}"),
        );
        match r.phase.clone() {
            JobPhase::Launching { .. } => {
                let target = self.failure_target(job);
                if let Some(r) = self.jobs.get_mut(job) {
                    r.failures_in_site += 1;
                    r.launches_refused = r.launches_refused.saturating_add(1);
                }
                self.start_fencing(
                    job,
                    RelaunchReason::LaunchFailed { reason },
                    target,
                    now,
                    None,
                    out,
                );
            }
            JobPhase::InOperation { op } => {
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
                    self.act(
                        out,
                        Command::Fence {
                            job: job.clone(),
                            generation,
                            site: site.clone(),
                        },
                    );
                    self.fence_sent
                        .insert((job.clone(), site.clone(), generation), now);
                }
                self.drive_operation(op, now, placer, out);
            }
            _ => {}
        }
    }

    fn on_fenced(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
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
                out,
                now,
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
            JobPhase::Fencing {
                reason,
                target,
                detected_at,
                last_heartbeat,
            } if r.generation == generation && &r.site == site => {
                self.audit(
                    out,
                    now,
                    None,
                    Some(job),
                    Some(site),
                    format!("generation {generation} fenced"),
                );
                // A refused launch is not tried again at once: a site that keeps refusing
                // would otherwise take a new generation per answer, without end, within one
                // pass. The job is down, and tried again after a back-off.
                if let RelaunchReason::LaunchFailed { reason } = &reason {
                    self.down_after_refused_launch(job, generation, site, reason, now, out);
                    return;
                }
                self.relaunch_job(
                    job,
                    &target,
                    reason,
                    detected_at,
                    last_heartbeat,
                    now,
                    placer,
                    out,
                );
            }
            JobPhase::InOperation { op } => {
                if let Some(j) = self.operations.get_mut(&op).and_then(|o| o.job_mut(job))
                    && matches!(&j.step, MoveStep::Fencing { generation: g, site: s } if *g == generation && s == site)
                {
                    self.audit(
                        out,
                        now,
                        Some(op),
                        Some(job),
                        Some(site),
                        format!("generation {generation} fenced"),
                    );
                    self.after_move_fence(op, job, now, out);
                    self.drive_operation(op, now, placer, out);
                }
            }
            // The generation the engine counts on was stopped (a fence issued before it
            // became current again, a late answer): the job runs nowhere now, so it is
            // relaunched like any job that runs nowhere.
            JobPhase::Running | JobPhase::Launching { .. }
                if r.generation == generation && &r.site == site =>
            {
                self.mark_down(
                    job,
                    format!("its generation {generation} in {site} was stopped"),
                    Resources::ZERO,
                    now,
                    out,
                );
                self.down_tried.remove(job);
            }
            _ => {}
        }
    }

    fn on_savepoint(
        &mut self,
        op: u64,
        job: &JobId,
        result: Result<CheckpointPointer, String>,
        now: Timestamp,
        out: &mut Out,
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
                self.audit(out, now, Some(op), Some(job), Some(&from), message);
                self.act(
                    out,
                    Command::Fence {
                        job: job.clone(),
                        generation,
                        site: from.clone(),
                    },
                );
                self.fence_sent.insert((job.clone(), from, generation), now);
            }
            Err(reason) => {
                j.step = MoveStep::Failed {
                    reason: format!("savepoint failed: {reason}"),
                    running: true,
                };
                self.dirty.ops.insert(op);
                if let Some(r) = self.jobs.get_mut(job) {
                    r.phase = JobPhase::Running;
                    self.dirty.jobs.insert(job.clone());
                }
                self.audit(
                    out,
                    now,
                    Some(op),
                    Some(job),
                    Some(&from),
                    format!("savepoint failed, job keeps running at the source: {reason}"),
                );
            }
        }
    }

    fn on_replication(
        &mut self,
        op: u64,
        job: &JobId,
        replica: CheckpointPointer,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
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
        self.audit(out, now, Some(op), Some(job), None, message);
        self.launch_move(op, job, now, out);
        self.drive_operation(op, now, placer, out);
    }

    fn on_request(
        &mut self,
        request: OpsRequest,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
    ) {
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
                            out,
                            now,
                            None,
                            None,
                            Some(from),
                            format!("request rejected: {error}"),
                        );
                    }
                    out.0.push(Command::Rejected {
                        request: request.clone(),
                        error,
                    });
                    return;
                }
                if *dry_run {
                    out.0.push(Command::ReportPlan(
                        self.plan(from, to, *mode, failback, now, placer),
                    ));
                    return;
                }
                let kind = if failback {
                    OpKind::Failback
                } else {
                    OpKind::Failover
                };
                let op = self.start_operation(
                    kind,
                    false,
                    from.clone(),
                    to.clone(),
                    *mode,
                    failback,
                    None,
                    now,
                    placer,
                    out,
                );
                out.0.push(Command::Accepted {
                    request: request.clone(),
                    op,
                });
            }
            OpsRequest::Cancel { op } => self.cancel(*op, &request, now, placer, out),
        }
    }

    // ---- judgement ----------------------------------------------------------------------

    fn evaluate(&mut self, now: Timestamp, placer: &dyn Placer, out: &mut Out) {
        let sites: Vec<SiteId> = self.sites.keys().cloned().collect();
        for site in &sites {
            self.judge_site(site, now, placer, out);
        }
        self.stop_waiting_on_lost_sites(now, placer, out);
        self.release_unmovable(now, out);
        self.release_orphans(now, out);
        for site in &sites {
            let fresh = self.view_is_fresh(site, now);
            if fresh {
                self.issue_stale_fences(site, now, out);
                self.judge_jobs(site, now, out);
            }
            self.retry_pending_fences(site, now, out);
            self.check_returning(site, now, placer, out);
        }
        self.revive_down_jobs(None, now, placer, out);
        let active: Vec<u64> = self
            .operations
            .values()
            .filter(|o| o.is_active())
            .map(|o| o.id)
            .collect();
        for op in active {
            self.drive_operation(op, now, placer, out);
        }
    }

    fn view_is_fresh(&self, site: &SiteId, now: Timestamp) -> bool {
        self.views
            .get(site)
            .and_then(|v| v.last_api_contact)
            .is_some_and(|t| elapsed(t, now) <= self.config.site.suspect_after)
    }

    fn reachable(&self, site: &SiteId) -> bool {
        self.sites
            .get(site)
            .is_some_and(|s| !matches!(s.status, SiteStatus::Lost { .. }))
    }

    /// Whether something may be started in `site` now: `Up`, and its API heard within the
    /// site grace (counted from when this engine started watching): a target silent that
    /// long is not waited for.
    fn can_reach(&self, site: &SiteId, now: Timestamp) -> bool {
        self.is_up(site)
            && self.views.get(site).is_some_and(|v| {
                let heard = v
                    .last_api_contact
                    .map_or(v.watching_since, |t| t.max(v.watching_since));
                elapsed(heard, now) <= self.config.site.grace
            })
    }

    fn is_up(&self, site: &SiteId) -> bool {
        self.sites
            .get(site)
            .is_some_and(|s| s.status == SiteStatus::Up)
    }

    fn signs(&self, site: &SiteId) -> Option<SiteSigns> {
        let v = self.views.get(site)?;
        Some(SiteSigns {
            api_last_contact: v.last_api_contact,
            newest_node_heartbeat: v.nodes.values().max().copied(),
            peer_last_contact: v.peer_last_contact,
            watching_since: v.watching_since,
        })
    }

    fn judge_site(&mut self, site: &SiteId, now: Timestamp, placer: &dyn Placer, out: &mut Out) {
        let Some(status) = self.sites.get(site).map(|s| s.status.clone()) else {
            return;
        };
        if matches!(status, SiteStatus::Lost { .. }) {
            return;
        }
        let Some(signs) = self.signs(site) else {
            return;
        };
        match judge_site(&signs, self.quorum, now, &self.config.site) {
            SiteVerdict::Lost { since } => {
                if let Some(v) = self.views.get_mut(site) {
                    v.no_quorum_reported = false;
                }
                if status == SiteStatus::Up {
                    self.site_lost(site, since, now, placer, out);
                } else if let Some(s) = self.sites.get_mut(site) {
                    // Went dark again while returning: still lost, same epoch.
                    s.status = SiteStatus::Lost {
                        since,
                        detected_at: now,
                    };
                    self.dirty.sites.insert(site.clone());
                    self.audit(
                        out,
                        now,
                        None,
                        None,
                        Some(site),
                        "site lost again before it was clean".into(),
                    );
                }
            }
            SiteVerdict::UnreachableWithoutQuorum { since } => {
                let first = self
                    .views
                    .get_mut(site)
                    .map(|v| !std::mem::replace(&mut v.no_quorum_reported, true))
                    .unwrap_or(false);
                if first {
                    self.audit(out, now, None, None, Some(site), format!("unreachable since {since} but no quorum with the witness: not failing over"));
                }
            }
            SiteVerdict::Healthy | SiteVerdict::Suspect { .. } => {
                if let Some(v) = self.views.get_mut(site) {
                    v.no_quorum_reported = false;
                }
            }
        }
    }

    fn site_lost(
        &mut self,
        site: &SiteId,
        since: Timestamp,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
    ) {
        let epoch = {
            let Some(s) = self.sites.get_mut(site) else {
                return;
            };
            s.epoch += 1;
            s.status = SiteStatus::Lost {
                since,
                detected_at: now,
            };
            s.epoch
        };
        self.dirty.sites.insert(site.clone());
        self.audit(
            out,
            now,
            None,
            None,
            Some(site),
            format!("site lost (silent since {since}, quorum with witness held): epoch {epoch}"),
        );
        self.act(
            out,
            Command::MarkSiteLost {
                site: site.clone(),
                epoch,
            },
        );
        // Operations moving jobs into the lost site stop starting new moves.
        let doomed: Vec<u64> = self
            .operations
            .values()
            .filter(|o| o.is_active() && &o.to == site)
            .map(|o| o.id)
            .collect();
        for op in doomed {
            self.cancel_pending(op, &format!("target site {site} lost"), now, out);
        }
        self.stop_waiting_on_lost_sites(now, placer, out);
        let Some(survivor) = self
            .config
            .sites
            .iter()
            .find(|s| *s != site && self.is_up(s))
            .cloned()
        else {
            self.audit(
                out,
                now,
                None,
                None,
                Some(site),
                "no healthy site to fail over to".into(),
            );
            self.displace_without_survivor(site, now, out);
            return;
        };
        self.start_operation(
            OpKind::SiteLoss { epoch },
            true,
            site.clone(),
            survivor,
            MoveMode::Forced,
            false,
            Some(since),
            now,
            placer,
            out,
        );
    }

    fn displace_without_survivor(&mut self, site: &SiteId, now: Timestamp, out: &mut Out) {
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|r| &r.site == site && !matches!(r.phase, JobPhase::InOperation { .. }))
            .map(|r| r.id().clone())
            .collect();
        for id in ids {
            self.mark_down(
                &id,
                format!("site {site} lost and no healthy site left"),
                Resources::ZERO,
                now,
                out,
            );
        }
    }

    /// The launch of `generation` in `site` was refused and that generation is fenced: the
    /// job runs nowhere until `revive_down_jobs` tries it again, after
    /// `launch_retry_delay`. Nothing is stale (the generation is confirmed stopped).
    fn down_after_refused_launch(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        refusal: &str,
        now: Timestamp,
        out: &mut Out,
    ) {
        let in_a_row = self.jobs.get(job).map_or(1, |r| r.launches_refused.max(1));
        let delay = self.launch_retry_delay(job);
        let reason = format!(
            "launch of generation {generation} in {site} refused ({in_a_row} in a row): {refusal}; tried again {}s later",
            delay.as_secs()
        );
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        r.phase = JobPhase::Down {
            reason: reason.clone(),
        };
        self.dirty.jobs.insert(job.clone());
        self.down_tried.insert(job.clone(), now);
        self.audit(
            out,
            now,
            None,
            Some(job),
            Some(site),
            format!("not relaunched: {reason}"),
        );
        self.act(
            out,
            Command::ReportNotRelaunched {
                job: job.clone(),
                reason,
                missing: Resources::ZERO,
            },
        );
    }

    /// How long a job that runs nowhere waits before it is tried again: `down_retry`, or
    /// after refused launches a back-off doubling from `FIRST_LAUNCH_RETRY` up to it.
    fn launch_retry_delay(&self, job: &JobId) -> Duration {
        match self.jobs.get(job).map(|r| r.launches_refused) {
            Some(n) if n > 0 => {
                let doublings = (n - 1).min(16);
                FIRST_LAUNCH_RETRY
                    .saturating_mul(1 << doublings)
                    .min(self.config.down_retry)
            }
            _ => self.config.down_retry,
        }
    }

    /// Marks the job down and remembers its generation in its (lost or live) site as stale.
    fn mark_down(
        &mut self,
        job: &JobId,
        reason: String,
        missing: Resources,
        now: Timestamp,
        out: &mut Out,
    ) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        r.stale.insert(StaleGeneration {
            site: r.site.clone(),
            generation: r.generation,
        });
        r.phase = JobPhase::Down {
            reason: reason.clone(),
        };
        let site = r.site.clone();
        self.dirty.jobs.insert(job.clone());
        self.down_tried.insert(job.clone(), now);
        self.audit(
            out,
            now,
            None,
            Some(job),
            Some(&site),
            format!("not relaunched: {reason}"),
        );
        self.act(
            out,
            Command::ReportNotRelaunched {
                job: job.clone(),
                reason,
                missing,
            },
        );
    }

    /// Generations observed in `site` that are not the job's current one become stale.
    fn record_stale_observations(&mut self, site: &SiteId) {
        let Some(view) = self.views.get(site) else {
            return;
        };
        for o in &view.jobs {
            let Some(r) = self.jobs.get_mut(&o.job) else {
                continue;
            };
            let current = r.generation == o.generation && &r.site == site;
            let down = matches!(r.phase, JobPhase::Down { .. });
            if !current || down {
                let stale = StaleGeneration {
                    site: site.clone(),
                    generation: o.generation,
                };
                if r.stale.insert(stale) {
                    self.dirty.jobs.insert(o.job.clone());
                }
            }
        }
    }

    fn issue_stale_fences(&mut self, site: &SiteId, now: Timestamp, out: &mut Out) {
        if !self.reachable(site) {
            return;
        }
        let wanted: Vec<(JobId, u64)> = self
            .jobs
            .values()
            .flat_map(|r| {
                r.stale
                    .iter()
                    .filter(|s| &s.site == site)
                    .map(|s| (r.id().clone(), s.generation))
            })
            .collect();
        for (job, generation) in wanted {
            let key = (job.clone(), site.clone(), generation);
            if self.fence_sent.contains_key(&key) {
                continue;
            }
            self.fence_sent.insert(key, now);
            self.act(
                out,
                Command::Fence {
                    job,
                    generation,
                    site: site.clone(),
                },
            );
        }
    }

    /// Re-issues fences that were not confirmed within `fence_retry` (the driver may have
    /// failed to reach the site).
    fn retry_pending_fences(&mut self, site: &SiteId, now: Timestamp, out: &mut Out) {
        if !self.reachable(site) {
            return;
        }
        let due: Vec<(JobId, SiteId, u64)> = self
            .fence_sent
            .iter()
            .filter(|((_, s, _), at)| s == site && elapsed(**at, now) >= self.config.fence_retry)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.fence_sent.insert(key.clone(), now);
            let (job, site, generation) = key;
            self.act(
                out,
                Command::Fence {
                    job,
                    generation,
                    site,
                },
            );
        }
    }

    /// A returning site becomes Up once no stale generation is left there.
    fn check_returning(
        &mut self,
        site: &SiteId,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
    ) {
        if self.sites.get(site).map(|s| &s.status) != Some(&SiteStatus::Returning) {
            return;
        }
        let stale_left = self
            .jobs
            .values()
            .any(|r| r.stale.iter().any(|s| &s.site == site));
        if stale_left {
            return;
        }
        let epoch = match self.sites.get_mut(site) {
            Some(s) => {
                s.status = SiteStatus::Up;
                s.epoch
            }
            None => return,
        };
        self.dirty.sites.insert(site.clone());
        self.audit(
            out,
            now,
            None,
            None,
            Some(site),
            format!("every stale generation fenced: site recovered (epoch {epoch})"),
        );
        self.act(
            out,
            Command::MarkSiteRecovered {
                site: site.clone(),
                epoch,
            },
        );
        // Jobs that could not go anywhere come back (home first) before any failback.
        self.revive_down_jobs(Some(site), now, placer, out);
        if self.config.auto_failback
            && let Some(from) = self
                .config
                .sites
                .iter()
                .find(|s| *s != site && self.is_up(s))
                .cloned()
        {
            self.audit(
                out,
                now,
                None,
                None,
                Some(site),
                "policy allows automatic failback".into(),
            );
            self.start_operation(
                OpKind::Failback,
                true,
                from,
                site.clone(),
                MoveMode::Planned,
                true,
                None,
                now,
                placer,
                out,
            );
        }
    }

    /// Node loss, TaskManager loss, crash loops: the first two recovery tiers.
    fn judge_jobs(&mut self, site: &SiteId, now: Timestamp, out: &mut Out) {
        if !self.is_up(site) {
            return;
        }
        let Some(view) = self.views.get(site) else {
            return;
        };
        let grace = self.config.node_grace;
        let node_lost = |name: &str| match judge_node(view.nodes.get(name).copied(), now, grace) {
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
                JobPhase::InOperation { op } => self
                    .operations
                    .get(&op)
                    .and_then(|o| o.jobs.iter().find(|j| &j.job == r.id()))
                    .is_some_and(|j| j.step == MoveStep::Pending),
                _ => false,
            };
            if r.generation != o.generation
                || &r.site != site
                || !(waiting_to_move
                    || matches!(r.phase, JobPhase::Running | JobPhase::Launching { .. }))
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
        if view.last_api_contact == Some(now) {
            let present: BTreeSet<(JobId, u64)> = view
                .jobs
                .iter()
                .map(|o| (o.job.clone(), o.generation))
                .collect();
            self.vanished
                .retain(|(job, g), _| !present.contains(&(job.clone(), *g)));
            for r in self.jobs.values() {
                let key = (r.id().clone(), r.generation);
                if &r.site != site || r.phase != JobPhase::Running || present.contains(&key) {
                    continue;
                }
                let since = *self.vanished.entry(key.clone()).or_insert(now);
                if crate::types::elapsed(since, now) >= grace {
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
                self.leave_operation(&job, now, out);
            }
            match finding {
                Finding::JobManagerLost(node, hb) => {
                    self.audit(
                        out,
                        now,
                        None,
                        Some(&job),
                        Some(site),
                        format!("JobManager node {node} lost"),
                    );
                    self.start_fencing(
                        &job,
                        RelaunchReason::JobManagerNodeLost { node },
                        site.clone(),
                        now,
                        hb,
                        out,
                    );
                }
                Finding::Failed(restarts) => {
                    let target = self.failure_target(&job);
                    if let Some(r) = self.jobs.get_mut(&job) {
                        r.failures_in_site += 1;
                    }
                    self.audit(
                        out,
                        now,
                        None,
                        Some(&job),
                        Some(site),
                        format!("job failed after {restarts} restarts; relaunching in {target}"),
                    );
                    self.start_fencing(
                        &job,
                        RelaunchReason::JobFailed { restarts },
                        target,
                        now,
                        None,
                        out,
                    );
                }
                Finding::TaskManagersLost(nodes) => {
                    let Some(r) = self.jobs.get_mut(&job) else {
                        continue;
                    };
                    match r.task_managers_lost_since {
                        None => {
                            r.task_managers_lost_since = Some(now);
                            self.dirty.jobs.insert(job.clone());
                            self.audit(
                                out,
                                now,
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
                            if elapsed(since, now) >= self.config.task_manager_recovery_bound =>
                        {
                            r.task_managers_lost_since = None;
                            self.leave_operation(&job, now, out);
                            self.audit(
                                out,
                                now,
                                None,
                                Some(&job),
                                Some(site),
                                "Flink did not recover within the bound".into(),
                            );
                            self.start_fencing_detected(
                                &job,
                                RelaunchReason::TaskManagersNotRecovered { nodes },
                                site.clone(),
                                since,
                                now,
                                None,
                                out,
                            );
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
                            out,
                            now,
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
    fn leave_operation(&mut self, job: &JobId, now: Timestamp, out: &mut Out) {
        let Some(JobPhase::InOperation { op }) = self.jobs.get(job).map(|r| r.phase.clone()) else {
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
        if let Some(r) = self.jobs.get_mut(job) {
            r.phase = JobPhase::Running;
            self.dirty.jobs.insert(job.clone());
        }
        self.audit(
            out,
            now,
            Some(op),
            Some(job),
            None,
            "failed before its move started: left at the source and recovered there".into(),
        );
    }

    /// Tier 2 relaunches stay in the job's site; after `relaunches_before_other_site` failed
    /// ones they go to another healthy site that holds a replicated checkpoint (or any other
    /// healthy site for jobs allowed to start fresh).
    fn failure_target(&self, job: &JobId) -> SiteId {
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

    fn start_fencing(
        &mut self,
        job: &JobId,
        reason: RelaunchReason,
        target: SiteId,
        now: Timestamp,
        last_heartbeat: Option<Timestamp>,
        out: &mut Out,
    ) {
        self.start_fencing_detected(job, reason, target, now, now, last_heartbeat, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_fencing_detected(
        &mut self,
        job: &JobId,
        reason: RelaunchReason,
        target: SiteId,
        detected_at: Timestamp,
        now: Timestamp,
        last_heartbeat: Option<Timestamp>,
        out: &mut Out,
    ) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        r.phase = JobPhase::Fencing {
            reason,
            target,
            detected_at,
            last_heartbeat,
        };
        r.task_managers_lost_since = None;
        let (generation, site) = (r.generation, r.site.clone());
        self.dirty.jobs.insert(job.clone());
        self.fence_sent
            .insert((job.clone(), site.clone(), generation), now);
        self.act(
            out,
            Command::Fence {
                job: job.clone(),
                generation,
                site,
            },
        );
    }

    /// Issues a new generation of `job` in `target` (its old generation is already fenced or
    /// unreachable-and-stale). In-site: the latest complete checkpoint; cross-site: only the
    /// latest checkpoint replicated to `target`.
    #[allow(clippy::too_many_arguments)]
    fn relaunch_job(
        &mut self,
        job: &JobId,
        target: &SiteId,
        reason: RelaunchReason,
        detected_at: Timestamp,
        last_heartbeat: Option<Timestamp>,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
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
                now,
                out,
            );
            return;
        }
        let restore = match self.restore_point(r, target) {
            Ok(p) => p,
            Err(reason) => {
                self.mark_down(job, reason, Resources::ZERO, now, out);
                return;
            }
        };
        let avoid = self.lost_nodes(target, now);
        let outcome = placer.place(target, std::slice::from_ref(&r.spec.demand), &avoid);
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
                now,
                out,
            );
            return;
        };
        let target = target.clone();
        self.issue_relaunch(
            job,
            &target,
            placement,
            restore,
            reason,
            (detected_at, last_heartbeat),
            now,
            out,
        );
    }

    /// Issues generation + 1 of `job` in `target` on `placement`, from `restore`, and reports
    /// it. `timing`: when the failure was detected and the last heartbeat before it, for RTO.
    #[allow(clippy::too_many_arguments)]
    fn issue_relaunch(
        &mut self,
        job: &JobId,
        target: &SiteId,
        placement: JobPlacement,
        restore: Option<CheckpointPointer>,
        reason: RelaunchReason,
        timing: (Timestamp, Option<Timestamp>),
        now: Timestamp,
        out: &mut Out,
    ) {
        let generation = self.adopt_new_generation(
            job,
            target,
            restore.clone(),
            JobPhase::Launching {
                since: now,
                placement: placement.clone(),
                restore_from: restore.clone(),
            },
        );
        self.down_tried.remove(job);
        self.audit(
            out,
            now,
            None,
            Some(job),
            Some(target),
            format!("relaunching as generation {generation}: {reason}"),
        );
        self.act(
            out,
            Command::Relaunch {
                job: job.clone(),
                generation,
                site: target.clone(),
                placement,
                restore_from: restore.clone(),
                reason: reason.clone(),
            },
        );
        self.report_recovery(
            job, generation, target, reason, None, restore, timing.0, timing.1, now, out,
        );
    }

    /// Moves waiting for a fence in a lost site go on: that generation is held there by
    /// epoch admission and fenced when the site returns, like any of its generations.
    /// Checked on every judgement, not only when the site is found lost: the leader that
    /// found it may have died before writing the operations it changed.
    fn stop_waiting_on_lost_sites(&mut self, now: Timestamp, placer: &dyn Placer, out: &mut Out) {
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
            self.after_move_fence(op, &job, now, out);
            self.drive_operation(op, now, placer, out);
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
    fn release_unmovable(&mut self, now: Timestamp, out: &mut Out) {
        let stuck: Vec<(u64, SiteId, SiteId, Vec<JobId>)> = self
            .operations
            .values()
            .filter(|o| o.is_active() && !self.can_reach(&o.to, now))
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
                    if let Some(r) = self.jobs.get_mut(job) {
                        r.phase = JobPhase::Running;
                        self.dirty.jobs.insert(job.clone());
                    }
                    self.audit(
                        out,
                        now,
                        Some(op),
                        Some(job),
                        Some(&from),
                        format!("not moved: {why}"),
                    );
                } else {
                    self.mark_down(job, format!("not moved: {why}"), Resources::ZERO, now, out);
                }
            }
            self.finish_if_done(op, now, out);
        }
    }

    /// A job whose current generation belongs to an older epoch of its site (the site was
    /// judged lost after it was launched) but that no operation moved: a leader died between
    /// writing the site's loss and the operation that moves its jobs. That generation may
    /// never run again (epoch admission), so the job is down until a site may host it, and
    /// `revive_down_jobs` relaunches it (at once: it waited long enough).
    fn release_orphans(&mut self, now: Timestamp, out: &mut Out) {
        let orphans: Vec<(JobId, SiteId, u64)> = self
            .jobs
            .values()
            .filter(|r| {
                !matches!(
                    r.phase,
                    JobPhase::InOperation { .. } | JobPhase::Down { .. }
                )
            })
            .filter_map(|r| {
                let site = self.sites.get(&r.site)?;
                let outdated = match r.epoch {
                    Some(e) => e < site.epoch,
                    // Older records: only a site still lost tells.
                    None => matches!(site.status, SiteStatus::Lost { .. }),
                };
                outdated.then(|| (r.id().clone(), r.site.clone(), site.epoch))
            })
            .collect();
        for (job, site, epoch) in orphans {
            self.mark_down(
                &job,
                format!("its site {site} was lost (epoch {epoch}) before the job was moved"),
                Resources::ZERO,
                now,
                out,
            );
            self.down_tried.remove(&job);
        }
    }

    /// Liveness: a job that runs nowhere (`Down`) runs again as soon as a site that may host
    /// it is `Up` and has room. Its own site first (from its latest checkpoint there, or as
    /// it first started when its lineage never completed one); then, for a job the engine
    /// may move, another site holding a checkpoint replicated there (any allowed site for a
    /// job that may start fresh). A job waits while an old generation of it in a reachable
    /// site is not confirmed fenced: it may still run there. Each job is tried once per
    /// `down_retry`, and every one at once when `returned` (a site) has just recovered.
    /// Jobs placed together in one site are placed by one placer call, in priority order.
    fn revive_down_jobs(
        &mut self,
        returned: Option<&SiteId>,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
    ) {
        let mut due: Vec<&JobRecord> = self
            .jobs
            .values()
            .filter(|r| matches!(r.phase, JobPhase::Down { .. }))
            .filter(|r| {
                returned.is_some()
                    || self
                        .down_tried
                        .get(r.id())
                        .is_none_or(|at| elapsed(*at, now) >= self.launch_retry_delay(r.id()))
            })
            .filter(|r| !r.stale.iter().any(|s| self.reachable(&s.site)))
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_by(|a, b| {
            b.spec
                .demand
                .priority
                .cmp(&a.spec.demand.priority)
                .then_with(|| a.id().cmp(b.id()))
        });
        // Each job's candidate sites, most preferred first, with the restore point there.
        let mut candidates: Vec<(JobId, Vec<Host>)> = due
            .iter()
            .map(|r| {
                let mut sites: Vec<SiteId> = vec![r.site.clone()];
                sites.extend(self.config.sites.iter().filter(|s| **s != r.site).cloned());
                // After `relaunches_before_other_site` failures in its site, the other
                // sites come first (the same tiers as `failure_target`).
                if r.failures_in_site >= self.config.relaunches_before_other_site {
                    sites.rotate_left(1);
                }
                let hosts = sites
                    .into_iter()
                    .filter(|s| self.is_up(s) && r.spec.demand.sites.allows(s))
                    .filter(|s| s == &r.site || r.spec.site_moves == SiteMoves::Automatic)
                    .filter_map(|s| self.restore_point(r, &s).ok().map(|p| (s, p)))
                    .collect();
                (r.id().clone(), hosts)
            })
            .collect();
        let mut last_refusal: BTreeMap<JobId, (String, Resources)> = BTreeMap::new();
        for (job, hosts) in &candidates {
            self.down_tried.insert(job.clone(), now);
            // No site may host it: its reason says why its own site cannot, once that site
            // is up (the reason it went down may be about a site it no longer waits for).
            if hosts.is_empty()
                && let Some(r) = self.jobs.get(job)
                && self.is_up(&r.site)
            {
                let why = if !r.spec.demand.sites.allows(&r.site) {
                    Some(format!("job may not run in site {}", r.site))
                } else {
                    self.restore_point(r, &r.site).err()
                };
                if let Some(why) = why {
                    last_refusal.insert(job.clone(), (why, Resources::ZERO));
                }
            }
        }
        while candidates.iter().any(|(_, hosts)| !hosts.is_empty()) {
            // One placer call per site, over every job whose next candidate it is.
            let mut by_site: BTreeMap<SiteId, Vec<JobId>> = BTreeMap::new();
            for (job, hosts) in &candidates {
                if let Some((site, _)) = hosts.first() {
                    by_site.entry(site.clone()).or_default().push(job.clone());
                }
            }
            let mut placed: BTreeMap<JobId, JobPlacement> = BTreeMap::new();
            for (site, jobs) in &by_site {
                let demands: Vec<JobDemand> = jobs
                    .iter()
                    .filter_map(|j| self.jobs.get(j).map(|r| r.spec.demand.clone()))
                    .collect();
                let outcome = placer.place(site, &demands, &self.lost_nodes(site, now));
                for n in outcome.not_fitting {
                    last_refusal.insert(
                        n.job.clone(),
                        (format!("does not fit in {site}: {}", n.reason), n.missing),
                    );
                }
                for p in outcome.placed {
                    if jobs.contains(&p.job) && &p.site == site {
                        placed.insert(p.job.clone(), p);
                    }
                }
            }
            for (job, hosts) in &mut candidates {
                if hosts.is_empty() {
                    continue;
                }
                let (site, restore) = hosts.remove(0);
                let Some(placement) = placed.remove(job) else {
                    last_refusal
                        .entry(job.clone())
                        .or_insert_with(|| (format!("no placement in {site}"), Resources::ZERO));
                    continue;
                };
                hosts.clear();
                last_refusal.remove(job);
                let reason = if returned == Some(&site) {
                    RelaunchReason::SiteReturned { site: site.clone() }
                } else {
                    RelaunchReason::Revived {
                        was_down: match self.jobs.get(job).map(|r| &r.phase) {
                            Some(JobPhase::Down { reason }) => reason.clone(),
                            _ => String::new(),
                        },
                    }
                };
                self.issue_relaunch(
                    job,
                    &site,
                    placement,
                    restore,
                    reason,
                    (now, None),
                    now,
                    out,
                );
            }
        }
        for (job, (reason, missing)) in last_refusal {
            self.stay_down(&job, reason, missing, now, out);
        }
    }

    /// A job tried again that still cannot run: its reason is updated (and reported) only
    /// when it changed, so a retry every `down_retry` writes and reports nothing new.
    fn stay_down(
        &mut self,
        job: &JobId,
        reason: String,
        missing: Resources,
        now: Timestamp,
        out: &mut Out,
    ) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        if r.phase
            == (JobPhase::Down {
                reason: reason.clone(),
            })
        {
            return;
        }
        r.phase = JobPhase::Down {
            reason: reason.clone(),
        };
        let site = r.site.clone();
        self.dirty.jobs.insert(job.clone());
        self.audit(
            out,
            now,
            None,
            Some(job),
            Some(&site),
            format!("still not relaunched: {reason}"),
        );
        self.act(
            out,
            Command::ReportNotRelaunched {
                job: job.clone(),
                reason,
                missing,
            },
        );
    }

    /// The checkpoint a relaunch of `r` in `target` must restore from (`Ok(None)`: fresh start).
    fn restore_point(
        &self,
        r: &JobRecord,
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
    fn adopt_new_generation(
        &mut self,
        job: &JobId,
        target: &SiteId,
        restore: Option<CheckpointPointer>,
        phase: JobPhase,
    ) -> u64 {
        let Some(r) = self.jobs.get_mut(job) else {
            return 0;
        };
        let in_site = &r.site == target;
        if !in_site {
            r.failures_in_site = 0;
        }
        r.generation += 1;
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
        r.generation
    }

    fn lost_nodes(&self, site: &SiteId, now: Timestamp) -> BTreeSet<String> {
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

    #[allow(clippy::too_many_arguments)]
    fn report_recovery(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        reason: RelaunchReason,
        op: Option<u64>,
        restore_from: Option<CheckpointPointer>,
        detected_at: Timestamp,
        last_heartbeat: Option<Timestamp>,
        now: Timestamp,
        out: &mut Out,
    ) {
        // An operation's source ran until it was fenced unless it went silent: then its
        // last sign of life is the failure. A failure in place: its last heartbeat, else
        // when it was detected.
        let failed_at = match op {
            Some(_) => last_heartbeat.unwrap_or(now),
            None => last_heartbeat.unwrap_or(detected_at),
        };
        let rpo = rpo_at(restore_from.as_ref(), failed_at);
        self.act(
            out,
            Command::ReportRecovery(RecoveryReport {
                job: job.clone(),
                generation,
                site: site.clone(),
                reason,
                op,
                restore_from,
                rto_from_detection: elapsed(detected_at, now),
                rto_from_last_heartbeat: last_heartbeat.map(|h| elapsed(h, now)),
                rpo,
            }),
        );
    }

    // ---- operations ---------------------------------------------------------------------

    fn check_move_request(
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
    #[allow(clippy::too_many_arguments)]
    fn plan_moves(
        &self,
        from: &SiteId,
        to: &SiteId,
        mode: MoveMode,
        failback: bool,
        automatic: bool,
        now: Timestamp,
        placer: &dyn Placer,
    ) -> (Vec<OpJob>, Vec<NotFitting>, Vec<JobId>) {
        let candidates: Vec<&JobRecord> = self
            .jobs
            .values()
            .filter(|r| &r.site == from)
            .filter(|r| !matches!(r.phase, JobPhase::InOperation { .. }))
            .filter(|r| !failback || r.spec.demand.sites.preferred.as_ref() == Some(to))
            .filter(|r| {
                // Jobs already down are not running at the source: a planned move has no
                // savepoint to take, and a forced move of a live source leaves them be.
                !matches!(r.phase, JobPhase::Down { .. }) || !self.reachable(from)
            })
            .collect();
        // A job being recovered in its live site (fenced, relaunched) is left to finish
        // that first; a later failover moves it. From a lost site, everything moves.
        let (candidates, recovering): (Vec<&JobRecord>, Vec<&JobRecord>) =
            candidates.into_iter().partition(|r| {
                !self.reachable(from)
                    || matches!(r.phase, JobPhase::Running | JobPhase::Down { .. })
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

    #[allow(clippy::too_many_arguments)]
    fn start_operation(
        &mut self,
        kind: OpKind,
        requested_by_policy: bool,
        from: SiteId,
        to: SiteId,
        mode: MoveMode,
        failback: bool,
        last_sign_of_life: Option<Timestamp>,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
    ) -> u64 {
        let automatic = match kind {
            OpKind::SiteLoss { .. } => true,
            OpKind::Failover => false,
            OpKind::Failback => requested_by_policy,
        };
        let (jobs, not_fitting, preempt) =
            self.plan_moves(&from, &to, mode, failback, automatic, now, placer);
        let id = self.operations.keys().next_back().map_or(1, |k| k + 1);
        let source_reachable = self.reachable(&from);
        for j in &jobs {
            if let Some(r) = self.jobs.get_mut(&j.job) {
                r.phase = JobPhase::InOperation { op: id };
                self.dirty.jobs.insert(j.job.clone());
            }
        }
        let op = Operation {
            id,
            kind: kind.clone(),
            mode,
            from: from.clone(),
            to: to.clone(),
            requested_at: now,
            last_sign_of_life,
            max_in_flight: self.config.max_in_flight.max(1),
            state: OpState::Running,
            jobs,
            not_fitting: not_fitting.clone(),
        };
        self.audit(out, now, Some(id), None, Some(&from), format!(
            "operation {id} ({kind:?}, {mode:?}) {from} -> {to}: {} jobs to move, {} do not fit",
            op.jobs.len(),
            not_fitting.len()
        ));
        self.operations.insert(id, op);
        self.dirty.ops.insert(id);
        for n in not_fitting {
            if source_reachable {
                self.audit(
                    out,
                    now,
                    Some(id),
                    Some(&n.job),
                    Some(&to),
                    format!("stays in {from}: {}", n.reason),
                );
                self.act(
                    out,
                    Command::ReportNotRelaunched {
                        job: n.job,
                        reason: n.reason,
                        missing: n.missing,
                    },
                );
            } else {
                self.mark_down(&n.job, n.reason, n.missing, now, out);
            }
        }
        for victim in preempt {
            self.audit(
                out,
                now,
                Some(id),
                Some(&victim),
                Some(&to),
                "preempted to make room".into(),
            );
            self.start_fencing_preempted(&victim, now, out);
        }
        self.drive_operation(id, now, placer, out);
        id
    }

    fn start_fencing_preempted(&mut self, job: &JobId, now: Timestamp, out: &mut Out) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        let (site, generation) = (r.site.clone(), r.generation);
        r.stale.insert(StaleGeneration {
            site: site.clone(),
            generation,
        });
        r.phase = JobPhase::Down {
            reason: "preempted by a failover".into(),
        };
        self.dirty.jobs.insert(job.clone());
        self.fence_sent
            .insert((job.clone(), site.clone(), generation), now);
        self.act(
            out,
            Command::Fence {
                job: job.clone(),
                generation,
                site,
            },
        );
        self.act(
            out,
            Command::ReportNotRelaunched {
                job: job.clone(),
                reason: "preempted by a failover".into(),
                missing: Resources::ZERO,
            },
        );
    }

    /// Starts pending jobs up to the concurrency bound and closes the operation when done.
    fn drive_operation(&mut self, op: u64, now: Timestamp, placer: &dyn Placer, out: &mut Out) {
        let _ = placer;
        let Some(o) = self.operations.get(&op) else {
            return;
        };
        let target_reachable = self.can_reach(&o.to, now);
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
                self.launch_move(op, &job, now, out);
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
                || o.started() >= self.config.launch_allowance(o.requested_at, now)
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
            self.start_move(op, &next, now, out);
        }
        self.finish_if_done(op, now, out);
    }

    /// Ends operation `op` once every job is finished (`Done`, `Left`, `Failed`), or not
    /// started and the operation cancelled.
    fn finish_if_done(&mut self, op: u64, now: Timestamp, out: &mut Out) {
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
                out,
                now,
                Some(op),
                None,
                None,
                format!("operation {op} {state:?}: {progress:?}"),
            );
        }
    }

    fn start_move(&mut self, op: u64, job: &JobId, now: Timestamp, out: &mut Out) {
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
                    out,
                    now,
                    Some(op),
                    Some(job),
                    Some(&from),
                    "stop-with-savepoint".into(),
                );
                self.act(
                    out,
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
                self.fence_sent
                    .insert((job.clone(), from.clone(), generation), now);
                self.act(
                    out,
                    Command::Fence {
                        job: job.clone(),
                        generation,
                        site: from,
                    },
                );
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
                self.launch_move(op, job, now, out);
            }
        }
    }

    /// After a fence inside an operation: replicate the savepoint (planned) or launch.
    fn after_move_fence(&mut self, op: u64, job: &JobId, now: Timestamp, out: &mut Out) {
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
                out,
                Command::ReplicateSavepoint {
                    op,
                    job: job.clone(),
                    savepoint: sp,
                    to,
                },
            );
            return;
        }
        self.launch_move(op, job, now, out);
    }

    fn launch_move(&mut self, op: u64, job: &JobId, now: Timestamp, out: &mut Out) {
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
        let fail = |engine: &mut Engine, out: &mut Out, reason: String| {
            if let Some(j) = engine.operations.get_mut(&op).and_then(|o| o.job_mut(job)) {
                j.step = MoveStep::Failed {
                    reason: reason.clone(),
                    running: false,
                };
                engine.dirty.ops.insert(op);
            }
            engine.mark_down(job, reason, Resources::ZERO, now, out);
        };
        if j.launches >= self.config.max_launches_per_move {
            fail(self, out, format!("{} launches failed", j.launches));
            return;
        }
        // A target lost mid-move sends the job back to its source when that is healthy, from
        // the savepoint taken there (planned) or its latest complete checkpoint (forced).
        let (target, restore) = if self.can_reach(&to, now) {
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
        } else if self.can_reach(&from, now) {
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
            fail(self, out, format!("neither {to} nor {from} is healthy"));
            return;
        };
        let restore = match restore {
            Ok(p) => p,
            Err(reason) => {
                fail(self, out, reason);
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
        let generation =
            self.adopt_new_generation(job, &target, restore.clone(), JobPhase::InOperation { op });
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
            out,
            now,
            Some(op),
            Some(job),
            Some(&target),
            format!("relaunching as generation {generation}"),
        );
        self.act(
            out,
            Command::Relaunch {
                job: job.clone(),
                generation,
                site: target.clone(),
                placement,
                restore_from: restore.clone(),
                reason: reason.clone(),
            },
        );
        let detected_at = self.operations.get(&op).map_or(now, |o| o.requested_at);
        self.report_recovery(
            job,
            generation,
            &target,
            reason,
            Some(op),
            restore,
            detected_at,
            last_sign,
            now,
            out,
        );
    }

    fn cancel(
        &mut self,
        op: u64,
        request: &OpsRequest,
        now: Timestamp,
        placer: &dyn Placer,
        out: &mut Out,
    ) {
        let error = match self.operations.get(&op) {
            None => Some(RequestError::UnknownOperation { op }),
            Some(o) if !o.is_active() => Some(RequestError::OperationFinished { op }),
            Some(_) => None,
        };
        if let Some(error) = error {
            self.audit(
                out,
                now,
                Some(op),
                None,
                None,
                format!("cancel rejected: {error}"),
            );
            out.0.push(Command::Rejected {
                request: request.clone(),
                error,
            });
            return;
        }
        self.cancel_pending(op, "cancelled by ops", now, out);
        self.drive_operation(op, now, placer, out);
        out.0.push(Command::Accepted {
            request: request.clone(),
            op,
        });
    }

    /// Jobs not yet started stay where they run; jobs whose source is lost keep moving (a
    /// cancel must not leave them down), as do jobs already past their point of no return.
    fn cancel_pending(&mut self, op: u64, why: &str, now: Timestamp, out: &mut Out) {
        let source_reachable = match self.operations.get(&op) {
            Some(o) => self.reachable(&o.from),
            None => return,
        };
        let mut left = Vec::new();
        if let Some(o) = self.operations.get_mut(&op) {
            if !source_reachable {
                self.audit(
                    out,
                    now,
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
                r.phase = JobPhase::Running;
                self.dirty.jobs.insert(job.clone());
            }
        }
        self.audit(
            out,
            now,
            Some(op),
            None,
            None,
            format!(
                "{why}: {} jobs left in place, in-flight ones finish",
                left.len()
            ),
        );
    }

    // ---- output -------------------------------------------------------------------------

    fn flush(&mut self, out: &mut Out) {
        for id in std::mem::take(&mut self.dirty.sites) {
            if let Some(s) = self.sites.get(&id) {
                out.0.push(Command::Persist(Record::Site(s.clone())));
            }
        }
        for id in std::mem::take(&mut self.dirty.jobs) {
            if let Some(j) = self.jobs.get(&id) {
                out.0
                    .push(Command::Persist(Record::Job(Box::new(j.clone()))));
            }
        }
        for id in std::mem::take(&mut self.dirty.ops) {
            if let Some(o) = self.operations.get(&id) {
                out.0
                    .push(Command::Persist(Record::Operation(Box::new(o.clone()))));
            }
        }
    }

    fn act(&mut self, out: &mut Out, command: Command) {
        self.flush(out);
        out.0.push(command);
    }

    fn audit(
        &self,
        out: &mut Out,
        at: Timestamp,
        op: Option<u64>,
        job: Option<&JobId>,
        site: Option<&SiteId>,
        message: String,
    ) {
        out.0.push(Command::Audit(AuditEntry {
            at,
            op,
            job: job.cloned(),
            site: site.cloned(),
            message,
        }));
    }
}
