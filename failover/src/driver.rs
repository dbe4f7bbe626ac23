//! The driver shared by the controller and the simulation: it feeds the engine what a pass
//! observed, executes the commands the engine answers with, in rounds, through an
//! [`Effects`] implementation, and feeds the answers back. `Engine` decides; `Driver`
//! orders, batches and bounds concurrency; `Effects` perform. The controller's effects write
//! to etcd or the embedded store and call the sites; `sim::World`'s act on simulated
//! clusters and may crash the leader between any two of them, so the seeded simulation
//! runs exactly the ordering, batching and concurrency production runs.
//!
//! Pure of I/O: the effects are futures the caller's runtime polls (the controller's tokio,
//! the simulation's `futures::executor::block_on`), and concurrency is
//! `futures::stream::buffered`, not threads.
//!
//! A round is everything one `step_all` returned, issued from one line of state without
//! waiting for an answer. Within a round:
//! 1. the write-ahead records (`Persist`, `Forget`), each record once in its last version,
//!    `DriverLimits::writes_at_once` at a time; every one must succeed before anything acts
//!    (a failure ends the call with the error: the caller steps down);
//! 2. the round's audit entries, as one batch;
//! 3. in order: site marks, reports, savepoint and replication requests;
//! 4. relaunches and fences concurrently, `DriverLimits::actions_at_once` at a time.
//!
//! The round's answers go back together through `Engine::step_all` (applied in order,
//! judged once), whose commands make the next round. Judging once per round instead of
//! once per answer keeps a site loss of N jobs at O(N).

use std::future::Future;

use futures::StreamExt;
use scheduler::model::{JobId, JobPlacement, SiteId};

use crate::engine::{
    Command, Engine, EngineConfig, Event, FailoverAudit, OpsRequest, Record, RecoveryReport,
    RequestError,
};
use crate::operation::FailoverPlan;
use crate::types::{CheckpointPointer, Placer, RelaunchReason, StoredJob, Timestamp};

/// Commands one call may execute before it stops and leaves the rest to the next call: a
/// guard against an engine/driver loop, far above what a site loss of 1000 jobs needs.
pub const MAX_COMMANDS_PER_CALL: usize = 200_000;

/// How much the driver runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverLimits {
    /// Write-ahead records of one round written at once (etcd commits concurrent writes
    /// together).
    pub writes_at_once: usize,
    /// Relaunches and fences of one round in flight at once.
    pub actions_at_once: usize,
}

impl DriverLimits {
    /// 32 writes; the engine's `max_in_flight` actions.
    pub fn for_engine(config: &EngineConfig) -> DriverLimits {
        DriverLimits {
            writes_at_once: 32,
            actions_at_once: config.max_in_flight.max(1),
        }
    }
}

/// One relaunch to perform: write the job's new generation and placement where the
/// controller keeps them, then launch it.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub job: JobId,
    pub generation: u64,
    pub site: SiteId,
    pub placement: JobPlacement,
    /// `None`: start without state.
    pub restore_from: Option<CheckpointPointer>,
    pub reason: RelaunchReason,
}

/// What the engine reports, for logs, metrics and the API.
#[derive(Debug, Clone, Copy)]
pub enum Report<'a> {
    Recovery(&'a RecoveryReport),
    NotRelaunched {
        job: &'a JobId,
        reason: &'a str,
        missing: &'a scheduler::model::Resources,
    },
    Plan(&'a FailoverPlan),
    Rejected {
        request: &'a OpsRequest,
        error: &'a RequestError,
    },
    Accepted {
        request: &'a OpsRequest,
        op: u64,
    },
}

/// An effect's answer: an event now, later (`None`), or the error that stops the leader.
type Answer<E> = Result<Option<Event>, <E as Effects>::Error>;

/// What the driver asks the world to do. Every effect that can fail in a way that must
/// stop the leader (a store write refused: not the leader any more, fenced, unavailable)
/// returns `Err`; the driver then stops at once and returns it. Answers the world has at
/// once come back as `Some(event)`; answers that take longer (a savepoint, a copy, a site
/// that does not answer yet) arrive in a later call's `PassInput::events`.
///
/// The futures need not be `Send`: the controller's are (its effects and placer are
/// `Sync`), so its passes run on tokio's pool; the simulation's borrow a `RefCell` and are
/// polled on one thread. The driver's own futures are `Send` exactly when these are.
pub trait Effects {
    type Error;

    /// Writes `record` durably under `key` (`None`: deletes it). Durable before `Ok`.
    fn write_record(
        &self,
        key: &str,
        record: Option<&Record>,
    ) -> impl Future<Output = Result<(), Self::Error>>;

    /// Appends one round's audit entries; losing them is logged, not fatal.
    fn append_audits(&self, entries: &[FailoverAudit]) -> impl Future<Output = ()>;

    /// Records the site as lost (`true`) or recovered with `epoch`; idempotent (a new
    /// leader marks again what its predecessor may not have).
    fn mark_site(
        &self,
        site: &SiteId,
        epoch: u64,
        lost: bool,
    ) -> impl Future<Output = Result<(), Self::Error>>;

    /// Hands on a report; infallible.
    fn report(&self, report: Report<'_>);

    /// Writes the new generation and placement, then launches it. Answer:
    /// `LaunchSucceeded`/`LaunchFailed`. Idempotent by generation.
    fn launch(&self, launch: &Launch) -> impl Future<Output = Result<Option<Event>, Self::Error>>;

    /// Stops and deletes `generation` of `job` in `site`. Answer: `Fenced` once the site
    /// confirmed; `None` when it did not answer (the engine issues the fence again).
    fn fence(
        &self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Self::Error>>;

    /// Stop-with-savepoint. Answer: `SavepointCompleted`/`SavepointFailed`.
    fn savepoint(
        &self,
        op: u64,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Self::Error>>;

    /// Copies a savepoint to `to`, retried (through `PassInput::retries`) until it is
    /// verified there. Answer: `ReplicationCompleted`.
    fn replicate_savepoint(
        &self,
        op: u64,
        job: &JobId,
        savepoint: &CheckpointPointer,
        to: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Self::Error>>;

    /// Events about to be fed to the engine in one step (traces, debug logs).
    fn trace_fed(&self, fed: &[Event]) {
        let _ = fed;
    }

    /// The commands that step answered with.
    fn trace_issued(&self, issued: &[Command]) {
        let _ = issued;
    }
}

/// What one reconcile pass observed, for [`Driver::pass`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassInput {
    /// Whether the controller holds quorum with the witness (read through the quorum).
    pub quorum: bool,
    /// Every job the store holds, when the pass read them.
    pub jobs: Option<Vec<StoredJob>>,
    /// One observation per site whose API answered this pass.
    pub sites: Vec<crate::types::SiteObservation>,
    /// Sites another observer (the peer site's member or agent, through the quorum)
    /// heard, and when.
    pub peers: Vec<(SiteId, Timestamp)>,
    /// Answers that arrived since the last call (savepoints, copies, delayed launches and
    /// fences) and notifications (verified replicas of checkpoints).
    pub events: Vec<Event>,
    /// Commands the effects could not complete and want issued again (a savepoint copy).
    pub retries: Vec<Command>,
}

/// What one call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Generations launched (the site accepted them), for the pass report.
    pub launched: Vec<(JobId, u64)>,
    /// Anything acted on a site (a launch attempted, a fence confirmed, a savepoint asked).
    pub acted: bool,
    pub plan: Option<FailoverPlan>,
    pub rejected: Option<RequestError>,
    /// The operation a request started (or is cancelling).
    pub accepted: Option<u64>,
    pub rounds: usize,
    pub commands: usize,
    /// Commands left unexecuted at `MAX_COMMANDS_PER_CALL`; they are issued again by the
    /// engine's own retries.
    pub cut_short: usize,
    /// When an operation's launch pacing lets the next move start: the caller passes again
    /// then instead of waiting for its interval (`Engine::next_launch_at`).
    pub next_launch_at: Option<Timestamp>,
}

/// The engine and what a leader executes it with. Volatile like the engine's views: a new
/// leader builds it with [`Driver::resume`].
#[derive(Debug)]
pub struct Driver {
    engine: Engine,
    limits: DriverLimits,
    /// Re-issued by `Engine::resume`, executed at the start of the next call.
    pending: Vec<Command>,
}

impl Driver {
    /// A driver around a fresh engine (nothing persisted yet).
    pub fn new(config: EngineConfig, now: Timestamp) -> Driver {
        let limits = DriverLimits::for_engine(&config);
        Driver {
            engine: Engine::new(config, now),
            limits,
            pending: Vec::new(),
        }
    }

    /// A new leader's driver: the engine rebuilt from every persisted record; the commands
    /// it re-issues run first in the next call.
    pub fn resume(
        config: EngineConfig,
        records: impl IntoIterator<Item = Record>,
        now: Timestamp,
    ) -> Driver {
        let limits = DriverLimits::for_engine(&config);
        let (engine, pending) = Engine::resume(config, records, now);
        Driver {
            engine,
            limits,
            pending,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine alone, for a caller that only asks it (a follower's dry run): nothing it
    /// answers is executed, including what `resume` re-issued.
    pub fn into_engine(self) -> Engine {
        self.engine
    }

    pub fn limits(&self) -> DriverLimits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: DriverLimits) {
        self.limits = DriverLimits {
            writes_at_once: limits.writes_at_once.max(1),
            actions_at_once: limits.actions_at_once.max(1),
        };
    }

    /// One reconcile pass: quorum, the stored jobs, answers and notifications, peer views,
    /// each answering site's observation, then a tick, all judged together; then the
    /// commands in rounds.
    pub async fn pass<E: Effects, P: Placer>(
        &mut self,
        effects: &E,
        placer: &P,
        input: PassInput,
        now: Timestamp,
    ) -> Result<Outcome, E::Error> {
        let mut events = vec![Event::QuorumChanged(input.quorum)];
        events.extend(input.jobs.map(Event::JobsStored));
        events.extend(input.events);
        events.extend(
            input
                .peers
                .into_iter()
                .map(|(site, last_contact)| Event::PeerReport { site, last_contact }),
        );
        events.extend(input.sites.into_iter().map(Event::SnapshotObserved));
        events.push(Event::Tick);
        self.run(effects, placer, events, input.retries, now).await
    }

    /// Feeds `events` outside a pass (a quorum change, a notification) and executes what
    /// they lead to.
    pub async fn feed<E: Effects, P: Placer>(
        &mut self,
        effects: &E,
        placer: &P,
        events: Vec<Event>,
        now: Timestamp,
    ) -> Result<Outcome, E::Error> {
        self.run(effects, placer, events, Vec::new(), now).await
    }

    /// An ops request, with the stored jobs first so that jobs created or relaunched since
    /// the last pass are known to it. A dry run answers `Outcome::plan` and changes nothing.
    pub async fn request<E: Effects, P: Placer>(
        &mut self,
        effects: &E,
        placer: &P,
        jobs: Option<Vec<StoredJob>>,
        request: OpsRequest,
        now: Timestamp,
    ) -> Result<Outcome, E::Error> {
        let mut events: Vec<Event> = jobs.map(Event::JobsStored).into_iter().collect();
        events.push(Event::OpsRequest(request));
        self.run(effects, placer, events, Vec::new(), now).await
    }

    async fn run<E: Effects, P: Placer>(
        &mut self,
        effects: &E,
        placer: &P,
        events: Vec<Event>,
        retries: Vec<Command>,
        now: Timestamp,
    ) -> Result<Outcome, E::Error> {
        let mut outcome = Outcome::default();
        let mut round = std::mem::take(&mut self.pending);
        round.extend(retries);
        effects.trace_fed(&events);
        let issued = self.engine.step_all(events, now, placer as &dyn Placer);
        effects.trace_issued(&issued);
        round.extend(issued);
        while !round.is_empty() {
            if outcome.commands + round.len() > MAX_COMMANDS_PER_CALL {
                outcome.cut_short = round.len();
                break;
            }
            outcome.commands += round.len();
            outcome.rounds += 1;
            let answers = self.execute_round(effects, round, &mut outcome).await?;
            if answers.is_empty() {
                break;
            }
            effects.trace_fed(&answers);
            round = self.engine.step_all(answers, now, placer as &dyn Placer);
            effects.trace_issued(&round);
        }
        outcome.next_launch_at = self.engine.next_launch_at(now);
        Ok(outcome)
    }

    async fn execute_round<E: Effects>(
        &self,
        effects: &E,
        commands: Vec<Command>,
        outcome: &mut Outcome,
    ) -> Result<Vec<Event>, E::Error> {
        // Each record once, in its last version: the engine issued the whole round from one
        // line of state, so that version covers every command of the round.
        let mut records: Vec<(String, Option<Record>)> = Vec::new();
        let mut audits = Vec::new();
        let mut in_order = Vec::new();
        let mut actions = Vec::new();
        for command in commands {
            match command {
                Command::Persist(record) => {
                    let key = record.key();
                    records.retain(|(k, _)| k != &key);
                    records.push((key, Some(record)));
                }
                Command::Forget { job } => {
                    let key = Record::job_key(&job);
                    records.retain(|(k, _)| k != &key);
                    records.push((key, None));
                }
                Command::Audit(entry) => audits.push(entry),
                Command::Relaunch { .. } | Command::Fence { .. } => actions.push(command),
                other => in_order.push(other),
            }
        }

        let writes: Vec<Result<(), E::Error>> = futures::stream::iter(records)
            .map(|(key, record)| async move { effects.write_record(&key, record.as_ref()).await })
            .buffer_unordered(self.limits.writes_at_once)
            .collect()
            .await;
        for write in writes {
            write?;
        }
        if !audits.is_empty() {
            effects.append_audits(&audits).await;
        }

        let mut answers = Vec::new();
        for command in in_order {
            match command {
                Command::MarkSiteLost { site, epoch } => {
                    effects.mark_site(&site, epoch, true).await?;
                }
                Command::MarkSiteRecovered { site, epoch } => {
                    effects.mark_site(&site, epoch, false).await?;
                }
                Command::ReportRecovery(report) => effects.report(Report::Recovery(&report)),
                Command::ReportNotRelaunched {
                    job,
                    reason,
                    missing,
                } => effects.report(Report::NotRelaunched {
                    job: &job,
                    reason: &reason,
                    missing: &missing,
                }),
                Command::ReportPlan(plan) => {
                    effects.report(Report::Plan(&plan));
                    outcome.plan = Some(plan);
                }
                Command::Rejected { request, error } => {
                    effects.report(Report::Rejected {
                        request: &request,
                        error: &error,
                    });
                    outcome.rejected = Some(error);
                }
                Command::Accepted { request, op } => {
                    effects.report(Report::Accepted {
                        request: &request,
                        op,
                    });
                    outcome.accepted = Some(op);
                }
                Command::TriggerSavepoint {
                    op,
                    job,
                    generation,
                    site,
                } => {
                    outcome.acted = true;
                    answers.extend(effects.savepoint(op, &job, generation, &site).await?);
                }
                Command::ReplicateSavepoint {
                    op,
                    job,
                    savepoint,
                    to,
                } => {
                    answers.extend(
                        effects
                            .replicate_savepoint(op, &job, &savepoint, &to)
                            .await?,
                    );
                }
                // Sorted out above.
                Command::Persist(_)
                | Command::Forget { .. }
                | Command::Audit(_)
                | Command::Relaunch { .. }
                | Command::Fence { .. } => {}
            }
        }

        // (answer, whether it was a launch), in issue order.
        let results: Vec<(Answer<E>, bool)> = futures::stream::iter(actions)
            .map(|command| async move {
                match command {
                    Command::Relaunch {
                        job,
                        generation,
                        site,
                        placement,
                        restore_from,
                        reason,
                    } => {
                        let launch = Launch {
                            job,
                            generation,
                            site,
                            placement,
                            restore_from,
                            reason,
                        };
                        (effects.launch(&launch).await, true)
                    }
                    Command::Fence {
                        job,
                        generation,
                        site,
                    } => (effects.fence(&job, generation, &site).await, false),
                    _ => (Ok(None), false),
                }
            })
            .buffered(self.limits.actions_at_once)
            .collect()
            .await;
        for (result, launch) in results {
            let answer = result?;
            outcome.acted |= launch || answer.is_some();
            if let Some(Event::LaunchSucceeded {
                job, generation, ..
            }) = &answer
            {
                outcome.launched.push((job.clone(), *generation));
            }
            answers.extend(answer);
        }
        Ok(answers)
    }
}
