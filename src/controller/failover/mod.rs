//! The controller's side of the failover driver. The driver itself (rounds, write-ahead
//! batching, concurrency) is `failover::Driver`, shared with the simulation; this file gives
//! it what a pass observed (`PassInput`) and performs what it asks (`ControllerEffects`):
//! records in the state store's failover keyspace, job records and launches, fences,
//! savepoints and their copies, site marks, audits, reports and metrics. Operations and job
//! records of the engine are persisted, so a new leader resumes them (`Driver::resume`).
//! See `failover/README.md` for the engine and driver, `README.md` here for the wiring.
//!
//! Files: this one holds the driver's state (`FailoverDriver`), what it says of held jobs
//! (`Held`) and the shared helpers; `pass.rs` the controller's calls into the driver (the
//! pass, ops requests and dry runs, resumption by a new leader); `effects.rs` the effects.

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

mod effects;
mod pass;

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
    /// Jobs the engine is moving or holding (not `Running` in its view), as of its last step:
    /// what the reconcile pass shows in their status. Not the authority on generations:
    /// `grant_generation` asks the engine itself.
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

/// A generation the controller's own launch (a new job, a spec change, a planned move, a
/// relaunch after a failure) may use, granted by its one owner: the failover engine when it
/// runs, else the rule alone (nothing else launches then). While this lives the engine's
/// driver is held, so no engine step runs between the grant and the write of the generation
/// to the job's record; drop it once that write is done (or refused).
pub(crate) struct GrantedGeneration<'a> {
    pub generation: u64,
    _driver: Option<tokio::sync::MutexGuard<'a, Option<Live>>>,
}

/// Why no generation was granted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NoGeneration {
    /// The job's generation is the last one twinsite launches: it can never launch again.
    Exhausted(String),
    /// Not now (the engine holds the job, or reads the store again first, or this
    /// controller's engine is not running): asked again next pass.
    Wait(String),
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

    /// Asks the generation's one owner for the generation after `stored` (the one `job`'s
    /// record holds); see `GrantedGeneration`.
    pub(crate) async fn grant_generation(
        &self,
        job: &JobId,
        stored: u64,
    ) -> Result<GrantedGeneration<'_>, NoGeneration> {
        let refused = |refused: failover::GrantRefused| match refused {
            failover::GrantRefused::Exhausted { .. } => {
                NoGeneration::Exhausted(refused.to_string())
            }
            _ => NoGeneration::Wait(refused.to_string()),
        };
        if !self.enabled {
            let generation = failover::next_generation(stored)
                .ok_or(failover::GrantRefused::Exhausted { current: stored })
                .map_err(refused)?;
            return Ok(GrantedGeneration {
                generation,
                _driver: None,
            });
        }
        let driver = self.live.lock().await;
        let granted = match driver.as_ref().filter(|l| l.term == self.term()) {
            Some(live) => live.driver.engine().grant_generation(job, stored),
            None => {
                return Err(NoGeneration::Wait(
                    "the failover engine does not run here (leadership lost, or not resumed yet); asked again next pass".into(),
                ));
            }
        };
        Ok(GrantedGeneration {
            generation: granted.map_err(refused)?,
            _driver: Some(driver),
        })
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
                (mode != streamjob::FailoverTrigger::None).then(|| PlacedJob {
                    spec,
                    site: SiteId(stored.site.clone()),
                    generation: record.value.generation,
                })
            });
            StoredJob { id, placed }
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

    fn driver(enabled: bool) -> FailoverDriver {
        let sites = vec![SiteId("a".into()), SiteId("b".into())];
        FailoverDriver::new(EngineConfig::new(sites), enabled)
    }

    #[tokio::test]
    async fn with_failover_off_the_rule_alone_grants_the_next_generation_up_to_the_last() {
        let job = JobId::new("shop", "orders");
        let off = driver(false);
        let granted = off.grant_generation(&job, 4).await.map(|g| g.generation);
        assert_eq!(granted, Ok(5));
        let last = off.grant_generation(&job, failover::MAX_GENERATION).await;
        assert!(
            matches!(&last, Err(NoGeneration::Exhausted(m)) if m.contains("delete and re-create it")),
            "{:?}",
            last.map(|g| g.generation)
        );
    }

    #[tokio::test]
    async fn with_failover_on_nothing_is_granted_until_this_controllers_engine_runs() {
        let on = driver(true);
        let refused = on.grant_generation(&JobId::new("shop", "orders"), 4).await;
        assert!(
            matches!(&refused, Err(NoGeneration::Wait(m)) if m.contains("does not run here")),
            "{:?}",
            refused.map(|g| g.generation)
        );
    }
}
