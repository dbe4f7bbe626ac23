//! The failover engine: events and the current instant in, commands for a driver out.
//! It must never perform I/O or read a clock: time, observations and answers arrive as values.
//!
//! `types` holds the vocabulary (config, records, events, commands); `resume` rebuilds an engine
//! from stored records; `events` applies one event; `site` judges sites; `jobs` recovers one job;
//! `down` keeps jobs that run nowhere from being stranded; `operations` and `moves` run
//! switchovers, forced failovers, failbacks and site losses.

mod down;
mod events;
mod jobs;
mod moves;
mod operations;
mod resume;
mod site;
mod types;

pub use types::*;

use std::collections::{BTreeMap, BTreeSet};

use scheduler::model::{JobId, JobPlacement, SiteId};

use crate::health::{SiteVerdict, judge_site};
use crate::operation::{MoveMode, Operation};
use crate::types::{CheckpointPointer, Placer, RelaunchReason, Timestamp};

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
    jobs: BTreeMap<JobId, TrackedJob>,
    sites: BTreeMap<SiteId, TrackedSite>,
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

/// A site a job that runs nowhere may be relaunched in, with what it would restore from.
type Host = (SiteId, Option<CheckpointPointer>);

/// What every step of one pass shares: the instant, the placer, and the commands issued so
/// far. An action first flushes pending `Persist`s, so the state that led to it is durable
/// before it runs (`Engine::act`).
struct Step<'a> {
    now: Timestamp,
    placer: &'a dyn Placer,
    commands: Vec<Command>,
}

/// Why a job is relaunched and when its failure was seen: what the recovery report measures
/// RTO from and RPO up to.
#[derive(Debug, Clone)]
struct Cause {
    reason: RelaunchReason,
    detected_at: Timestamp,
    /// The last sign of life before the failure, when known.
    last_heartbeat: Option<Timestamp>,
}

impl Cause {
    fn detected(reason: RelaunchReason, at: Timestamp, last_heartbeat: Option<Timestamp>) -> Self {
        Cause {
            reason,
            detected_at: at,
            last_heartbeat,
        }
    }
}

/// Which jobs an operation moves: those of `from` (with `failback`, only those preferring
/// `to`), to `to`, by `mode`.
struct MoveScope {
    from: SiteId,
    to: SiteId,
    mode: MoveMode,
    failback: bool,
}

/// A new generation to start: where, on which nodes, from which restore point.
struct NewGeneration {
    job: JobId,
    generation: u64,
    site: SiteId,
    placement: JobPlacement,
    restore_from: Option<CheckpointPointer>,
}

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
                TrackedSite {
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

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn job(&self, job: &JobId) -> Option<&TrackedJob> {
        self.jobs.get(job)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &TrackedJob> {
        self.jobs.values()
    }

    pub fn site(&self, site: &SiteId) -> Option<&TrackedSite> {
        self.sites.get(site)
    }

    pub fn operation(&self, op: u64) -> Option<&Operation> {
        self.operations.get(&op)
    }

    /// How healthy `site` looks at `now`: its durable status and, unless it is lost, the
    /// health judgement of its signs of life (healthy, suspect, or silent past the grace
    /// without quorum). Read-only: for metrics and dashboards, never for decisions, which
    /// `step` takes.
    pub fn site_health(&self, site: &SiteId, now: Timestamp) -> Option<(TrackedSite, SiteVerdict)> {
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
        let mut cx = Step {
            now,
            placer,
            commands: Vec::new(),
        };
        let mut judge = false;
        for event in events {
            judge |= self.apply(event, &mut cx);
        }
        if judge {
            self.evaluate(&mut cx);
            self.flush(&mut cx.commands);
        }
        cx.commands
    }

    // ---- output -------------------------------------------------------------------------

    /// Writes every record changed since the last flush, ahead of what follows.
    fn flush(&mut self, commands: &mut Vec<Command>) {
        for id in std::mem::take(&mut self.dirty.sites) {
            if let Some(s) = self.sites.get(&id) {
                commands.push(Command::Persist(Record::Site(s.clone())));
            }
        }
        for id in std::mem::take(&mut self.dirty.jobs) {
            if let Some(j) = self.jobs.get(&id) {
                commands.push(Command::Persist(Record::Job(Box::new(j.clone()))));
            }
        }
        for id in std::mem::take(&mut self.dirty.ops) {
            if let Some(o) = self.operations.get(&id) {
                commands.push(Command::Persist(Record::Operation(Box::new(o.clone()))));
            }
        }
    }

    /// Issues a fence of `generation` of `job` in `site`, remembering when: one not confirmed
    /// within `fence_retry` is issued again (`retry_pending_fences`).
    fn fence(&mut self, job: &JobId, generation: u64, site: &SiteId, cx: &mut Step<'_>) {
        self.fence_sent
            .insert((job.clone(), site.clone(), generation), cx.now);
        let command = Command::Fence {
            job: job.clone(),
            generation,
            site: site.clone(),
        };
        self.act(cx, command);
    }

    /// Issues an action after the records that led to it.
    fn act(&mut self, cx: &mut Step<'_>, command: Command) {
        self.flush(&mut cx.commands);
        cx.commands.push(command);
    }

    /// Records `message` in the audit log at the step's instant.
    fn audit(
        &self,
        cx: &mut Step<'_>,
        op: Option<u64>,
        job: Option<&JobId>,
        site: Option<&SiteId>,
        message: String,
    ) {
        cx.commands.push(Command::Audit(FailoverAudit {
            at: cx.now,
            op,
            job: job.cloned(),
            site: site.cloned(),
            message,
        }));
    }
}
