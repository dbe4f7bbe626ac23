//! A fake two-site world driven by the real failover [`Driver`] on a virtual clock: nodes
//! that heart-beat or not, Flink generations that run, restart, fail and checkpoint, sites
//! that go dark and come back with their zombies, a controller that may be cut off a site or
//! lose quorum, replication between the sites' storage, and a leader that may die between
//! any two effects and be replaced by one that resumes from the persisted records. It must
//! never stand in for production code: engine, driver, agent decisions and placer are the
//! real ones; only the sites, their storage and the clock are fake.
//!
//! `driver` runs the production driver over the world (`Sim`: its effects and placer);
//! `effects` is what those commands do here; `faults` what scenarios and seeds inject;
//! `time` what happens while the clock moves; `invariants` the checks and the outcome.
//!
//! The world is the driver's [`Effects`] (and its [`Placer`]): the rounds, their write-ahead
//! batching and the concurrency of relaunches and fences are the production driver's. With
//! an interleaving seed, concurrent effects of a round complete in a seeded order.
//!
//! Invariants are checked as effects run and after every step (see
//! [`World::check_invariants`]):
//!
//! - never two running generations of one job, across both sites;
//! - every relaunch restores from a checkpoint readable in its target site (for a cross-site
//!   relaunch: one replicated there);
//! - new generations strictly increase (a re-issued launch keeps its generation and site);
//! - no site is judged lost (its new epoch written) without quorum, nor while it was alive
//!   and visible (to the controller or to its peer) for longer than the site grace;
//! - never stranded (liveness): a job that runs nowhere while a site may host it (up and
//!   reachable, allowed, a checkpoint it may restore from readable there, room for it)
//!   runs again within [`World::liveness_bound`]; a job the engine says is down does not
//!   run, and one it says runs does.

mod driver;
mod effects;
mod faults;
mod invariants;
mod time;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scheduler::model::{JobId, JobPlacement, PlacementPolicy, PodRole, Resources, SiteId};

use crate::agent::{AgentTiming, lease_may_be_alive};
use crate::driver::Driver;
use crate::engine::{Command, Engine, EngineConfig, Event, Record};
use crate::sim::report::{
    CheckpointRecord, EntryKind, NotRelaunched, Recovery, Stats, TimelineEntry, Violation,
};
use crate::types::{
    CheckpointPointer, JobSpec, ObservedCheckpoint, PlacementOutcome, RestorePointKind, Timestamp,
};

/// How the fake world answers: how long launches, fences, savepoints and replication take,
/// and Flink's restart back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorldConfig {
    /// From `Relaunch` to the generation running (and `LaunchSucceeded`).
    pub launch_time: Duration,
    /// From `Fence` to `Fenced`.
    pub fence_time: Duration,
    /// From `TriggerSavepoint` to `SavepointCompleted`.
    pub savepoint_time: Duration,
    /// From a completed checkpoint (or a savepoint) to its copy verified in the other site.
    pub replication_delay: Duration,
    /// Flink's restart back-off: first delay, doubled after each attempt up to the max.
    /// Zero: one attempt per [`World::advance`].
    pub restart_delay: Duration,
    pub max_restart_delay: Duration,
    /// The site agents' lease timing (the agents run `crate::agent::decide` once per
    /// step, so `stop_within` must cover the longest step).
    pub agent: AgentTiming,
    /// How long after a node's last heartbeat Kubernetes evicts its pods and schedules a
    /// lost TaskManager on another node of the site with room (the pods' `NoExecute`
    /// toleration of an unreachable node, `tolerationSeconds`); the JobManager stays and
    /// Flink restarts the job once the TaskManager is back.
    pub task_manager_eviction: Duration,
}

/// The default `tolerationSeconds` of the TaskManager pods (policy default).
pub const TASK_MANAGER_EVICTION: Duration = Duration::from_secs(30);

/// The sites' agents' timing in the simulation: the defaults, with `stop_within` the
/// longest step of the seeded runs (an agent looks once per step).
pub const SIM_AGENT_TIMING: AgentTiming = AgentTiming {
    lease_ttl: Duration::from_secs(10),
    clock_skew_margin: Duration::from_secs(3),
    stop_within: Duration::from_secs(8),
};

/// A job as the world knows it: what the engine is told, and how it checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct SimJob {
    pub spec: JobSpec,
    /// `None`: the job checkpoints only when told ([`World::complete_checkpoint`]).
    pub checkpoint_interval: Option<Duration>,
    /// Whether its checkpoints are copied to the other site.
    pub replicate: bool,
}

/// When the leader dies next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashTrigger {
    /// After `n` more effects (writes, marks, reports, launches, fences, …): the next one
    /// fails, and so does everything after it until a new leader resumes.
    AfterCommands(usize),
    /// Right after the `n`-th relaunch from now took effect (what follows never runs).
    AfterRelaunches(usize),
}

/// The leader died: every effect fails until a new leader resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crashed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InstanceState {
    /// Launched, not yet up (counts as running for the invariant: it may already process).
    Starting,
    Running,
    Restarting,
    Failed,
    /// Stopped with a savepoint; its deployment is still there until fenced.
    Stopped,
}

#[derive(Debug, Clone)]
struct Instance {
    state: InstanceState,
    placement: JobPlacement,
    restarts: u32,
    ready_at: Timestamp,
    next_restart_at: Timestamp,
    restart_delay: Duration,
    next_checkpoint_at: Option<Timestamp>,
    /// The newest checkpoint it completed, as its site reports it.
    latest_checkpoint: Option<ObservedCheckpoint>,
    savepoint: Option<CheckpointPointer>,
    /// Held by the site's epoch admission (README, driver guarantee 6): once its site was
    /// marked lost, this generation never runs again; only a fence removes it.
    held: bool,
}

#[derive(Debug, Clone)]
struct NodeState {
    alive: bool,
    last_heartbeat: Timestamp,
    allocatable: Resources,
}

#[derive(Debug, Clone)]
struct SiteState {
    up: bool,
    /// A `MarkSiteLost` was written and no `MarkSiteRecovered` since.
    marked_lost: bool,
    /// The highest epoch it was marked lost with.
    marked_epoch: u64,
    /// The controller cannot reach this site's API; `Some(true)`: the peer still hears it.
    cut: Option<bool>,
    /// Since when someone (the controller or the peer) has heard the site without a break.
    visible_since: Option<Timestamp>,
    nodes: BTreeMap<String, NodeState>,
    instances: BTreeMap<(JobId, u64), Instance>,
    /// Instances frozen by a site outage; they come back (as zombies) with the site.
    dormant: BTreeMap<(JobId, u64), Instance>,
    agent: SimAgent,
    /// Every launch is refused (an admission webhook, a quota, a broken image pull secret)
    /// while the site otherwise answers.
    refuses_launches: bool,
}

/// A site's agent (`crate::agent`): renews its lease while it reaches the quorum, and
/// looks at its site once per step with the production decision.
#[derive(Debug, Clone)]
struct SimAgent {
    /// `Some(t)`: crashed, restarted (by its Deployment) at `t`.
    down_until: Option<Timestamp>,
    /// Cut from the quorum (etcd) while its site runs on.
    cut: bool,
    /// How far its clock is behind the world's (within the timing's margin).
    skew: Duration,
    /// When etcd last received a renewal (world time): the controller's peer view.
    last_renewal: Option<Timestamp>,
    /// Its lease's deadline by its own clock; `None`: not held since it (re)started.
    valid_until: Option<Timestamp>,
}

#[derive(Debug, Clone)]
enum Due {
    Answer(Event),
    Replica {
        job: JobId,
        checkpoint: CheckpointPointer,
        to: SiteId,
    },
}

/// The world, the driver (and engine) inside it, and everything the run reported so far.
pub struct World {
    driver: Driver,
    state: RefCell<State>,
    /// How long a job may run nowhere while a site could host it, and the engine's view of
    /// a job may disagree with the world, before it is a violation.
    pub liveness_bound: Duration,
    /// Since when each job has been in a state the liveness checks watch, by job and check.
    waiting: BTreeMap<(JobId, &'static str), Timestamp>,
}

/// Default of [`World::liveness_bound`]: two retries of a job that runs nowhere, a fence
/// retry and a launch, with room to spare.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(150);

/// Everything but the driver: the clusters, the store the controller writes, and the
/// report. The driver's effects act on it through a `RefCell` (they take `&self`).
struct State {
    start: Timestamp,
    now: Timestamp,
    config: WorldConfig,
    engine_config: EngineConfig,
    /// Whether a restarting generation whose nodes are all alive comes up at its next attempt.
    flink_recovers: bool,
    quorum: bool,
    sites: BTreeMap<SiteId, SiteState>,
    jobs: BTreeMap<JobId, SimJob>,
    policy: PlacementPolicy,
    /// The engine's durable records, as the state store holds them.
    store: BTreeMap<String, Record>,
    /// Each job's current generation and site as the controller's job records hold them:
    /// written by a relaunch before the site is asked to launch.
    stored: BTreeMap<JobId, (SiteId, u64)>,
    /// Answers and notifications for the next call of the driver.
    inbox: Vec<Event>,
    due: BTreeMap<(Timestamp, u64), Due>,
    seq: u64,
    /// Savepoint copies to retry (a site was down).
    deferred: Vec<Command>,
    /// (job, site, generation, id) of every checkpoint or savepoint readable in `site`.
    readable: BTreeSet<(JobId, SiteId, u64, u64)>,
    next_checkpoint_id: BTreeMap<JobId, u64>,
    /// Highest generation ever issued per job, and where.
    issued: BTreeMap<JobId, (u64, SiteId)>,
    /// Moves an operator asked for (non-dry-run failovers and failbacks, from, to): a
    /// manual job may move along them, even when the leader that accepted the request
    /// died before writing its operation and the job is relaunched as a down job.
    operator_moves: BTreeSet<(SiteId, SiteId)>,
    crashed: bool,
    effects_before_crash: Option<usize>,
    relaunches_before_crash: Option<usize>,
    crash_hook: Option<Box<dyn FnMut() -> bool>>,
    /// Seeded order in which concurrent effects complete (`None`: in issue order).
    interleaving: Option<ChaCha8Rng>,
    /// Every event and command, for replaying a failing seed (off unless enabled).
    trace: Option<Vec<String>>,
    timeline: Vec<TimelineEntry>,
    recoveries: Vec<Recovery>,
    not_relaunched: Vec<NotRelaunched>,
    checkpoints: Vec<CheckpointRecord>,
    violations: Vec<Violation>,
    stats: Stats,
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The copy of `p` readable in `to`, under `to`'s storage.
fn replica_of(p: &CheckpointPointer, to: &SiteId) -> CheckpointPointer {
    CheckpointPointer {
        site: to.clone(),
        path: p
            .path
            .replacen(&format!("hdfs://{}/", p.site), &format!("hdfs://{to}/"), 1),
        ..p.clone()
    }
}

fn describe_pointer(p: &Option<CheckpointPointer>) -> String {
    match p {
        Some(p) => format!(
            "from {} {} (gen {}, id {}, in {})",
            match p.kind {
                RestorePointKind::Checkpoint => "checkpoint",
                RestorePointKind::Savepoint => "savepoint",
            },
            p.path,
            p.generation,
            p.id,
            p.site
        ),
        None => "without state".to_string(),
    }
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            launch_time: Duration::from_secs(10),
            fence_time: Duration::from_secs(1),
            savepoint_time: Duration::from_secs(5),
            replication_delay: Duration::from_secs(5),
            restart_delay: Duration::from_secs(1),
            max_restart_delay: Duration::from_secs(60),
            agent: SIM_AGENT_TIMING,
            task_manager_eviction: TASK_MANAGER_EVICTION,
        }
    }
}

impl WorldConfig {
    /// Every answer at once and one restart attempt per step: the setting of the seeded
    /// random runs.
    pub fn instant() -> Self {
        WorldConfig {
            launch_time: Duration::ZERO,
            fence_time: Duration::ZERO,
            savepoint_time: Duration::ZERO,
            replication_delay: Duration::ZERO,
            restart_delay: Duration::ZERO,
            max_restart_delay: Duration::ZERO,
            agent: SIM_AGENT_TIMING,
            task_manager_eviction: TASK_MANAGER_EVICTION,
        }
    }
}

impl Instance {
    fn job_manager_node(&self) -> Option<&str> {
        self.placement
            .pods
            .iter()
            .find(|p| p.role == PodRole::Jobmanager)
            .map(|p| p.node.as_str())
    }

    fn task_manager_nodes(&self) -> Vec<String> {
        self.placement
            .pods
            .iter()
            .filter(|p| p.role == PodRole::Taskmanager)
            .map(|p| p.node.clone())
            .collect()
    }

    fn counts_as_running(&self) -> bool {
        matches!(self.state, InstanceState::Running | InstanceState::Starting)
    }
}

impl SimAgent {
    fn new(start: Timestamp) -> SimAgent {
        SimAgent {
            down_until: None,
            cut: false,
            skew: Duration::ZERO,
            last_renewal: Some(start),
            valid_until: None,
        }
    }
}

impl SiteState {
    fn all_alive(&self, i: &Instance) -> bool {
        i.placement
            .pods
            .iter()
            .all(|p| self.nodes.get(&p.node).is_some_and(|n| n.alive))
    }

    /// Isolated: cut from the controller and unheard by the peer.
    fn isolated(&self) -> bool {
        self.cut == Some(false)
    }
}

impl World {
    /// A world of `sites` (each with its nodes and their allocatable capacity), all up, and an
    /// engine that has just started watching them at `start`. No jobs, no quorum yet.
    pub fn new(
        engine: EngineConfig,
        config: WorldConfig,
        sites: Vec<(SiteId, Vec<(String, Resources)>)>,
        start: Timestamp,
    ) -> World {
        let sites = sites
            .into_iter()
            .map(|(id, nodes)| {
                let nodes = nodes
                    .into_iter()
                    .map(|(name, allocatable)| {
                        (
                            name,
                            NodeState {
                                alive: true,
                                last_heartbeat: start,
                                allocatable,
                            },
                        )
                    })
                    .collect();
                (
                    id,
                    SiteState {
                        up: true,
                        marked_lost: false,
                        marked_epoch: 0,
                        cut: None,
                        visible_since: Some(start),
                        nodes,
                        instances: BTreeMap::new(),
                        dormant: BTreeMap::new(),
                        agent: SimAgent::new(start),
                        refuses_launches: false,
                    },
                )
            })
            .collect();
        World {
            driver: Driver::new(engine.clone(), start),
            state: RefCell::new(State {
                start,
                now: start,
                config,
                engine_config: engine,
                flink_recovers: true,
                quorum: false,
                sites,
                jobs: BTreeMap::new(),
                policy: PlacementPolicy::default(),
                store: BTreeMap::new(),
                stored: BTreeMap::new(),
                inbox: Vec::new(),
                due: BTreeMap::new(),
                seq: 0,
                deferred: Vec::new(),
                readable: BTreeSet::new(),
                next_checkpoint_id: BTreeMap::new(),
                issued: BTreeMap::new(),
                operator_moves: BTreeSet::new(),
                crashed: false,
                effects_before_crash: None,
                relaunches_before_crash: None,
                crash_hook: None,
                interleaving: None,
                trace: None,
                timeline: Vec::new(),
                recoveries: Vec::new(),
                not_relaunched: Vec::new(),
                checkpoints: Vec::new(),
                violations: Vec::new(),
                stats: Stats::default(),
            }),
            liveness_bound: LIVENESS_BOUND,
            waiting: BTreeMap::new(),
        }
    }

    fn st(&mut self) -> &mut State {
        self.state.get_mut()
    }

    /// Keeps every event and command delivered from now on (see [`World::trace`]).
    pub fn enable_trace(&mut self) {
        self.st().trace.get_or_insert_with(Vec::new);
    }

    /// Decides, before each effect, whether the leader dies instead of performing it (seeded
    /// random runs).
    pub fn set_crash_hook(&mut self, hook: Box<dyn FnMut() -> bool>) {
        self.st().crash_hook = Some(hook);
    }

    /// Concurrent effects of a round (relaunches, fences) complete in an order drawn from
    /// `seed` instead of their issue order.
    pub fn set_interleaving_seed(&mut self, seed: u64) {
        self.st().interleaving = Some(ChaCha8Rng::seed_from_u64(seed));
    }

    /// Whether a restarting generation whose nodes are all alive comes up at its next attempt.
    pub fn set_flink_recovers(&mut self, recovers: bool) {
        self.st().flink_recovers = recovers;
    }

    pub fn now(&self) -> Timestamp {
        self.state.borrow().now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.state.borrow().elapsed()
    }

    pub fn engine(&self) -> &Engine {
        self.driver.engine()
    }

    pub fn config_mut(&mut self) -> &mut WorldConfig {
        &mut self.st().config
    }

    pub fn trace(&self) -> Vec<String> {
        self.state.borrow().trace.clone().unwrap_or_default()
    }

    pub fn timeline(&self) -> Vec<TimelineEntry> {
        self.state.borrow().timeline.clone()
    }

    pub fn recoveries(&self) -> Vec<Recovery> {
        self.state.borrow().recoveries.clone()
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.state.borrow().violations.clone()
    }

    pub fn stats(&self) -> Stats {
        self.state.borrow().stats
    }

    pub fn site_ids(&self) -> Vec<SiteId> {
        self.state.borrow().sites.keys().cloned().collect()
    }

    pub fn job_ids(&self) -> Vec<JobId> {
        self.state.borrow().jobs.keys().cloned().collect()
    }

    pub fn site_is_up(&self, site: &SiteId) -> bool {
        self.state.borrow().site_is_up(site)
    }

    /// Cut from the controller (`Some(peer_sees)`), or `None`.
    pub fn cut(&self, site: &SiteId) -> Option<bool> {
        self.state.borrow().sites.get(site).and_then(|s| s.cut)
    }

    pub fn node_is_alive(&self, site: &SiteId, node: &str) -> bool {
        self.state
            .borrow()
            .sites
            .get(site)
            .and_then(|s| s.nodes.get(node))
            .is_some_and(|n| n.alive)
    }

    /// Generations running (not restarting, failed or held) in `site`.
    pub fn running_generations(&self, site: &SiteId) -> Vec<(JobId, u64)> {
        self.state
            .borrow()
            .sites
            .get(site)
            .map(|w| {
                w.instances
                    .iter()
                    .filter(|(_, i)| i.state == InstanceState::Running && !i.held)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Places `jobs` in `site` with the scheduler, as the engine's placer would now.
    pub fn place(&self, site: &SiteId, jobs: &[scheduler::model::JobDemand]) -> PlacementOutcome {
        self.state.borrow().place(site, jobs, &BTreeSet::new())
    }

    /// Adds a job already running as generation 1 in `placement.site`; the engine learns of
    /// it from the store, as the controller's engine does. `first_checkpoint_at`: when its
    /// periodic checkpoints start.
    pub fn add_job(
        &mut self,
        job: SimJob,
        placement: JobPlacement,
        first_checkpoint_at: Option<Timestamp>,
    ) {
        {
            let s = self.st();
            let id = job.spec.demand.id.clone();
            let site = placement.site.clone();
            let now = s.now;
            let restart_delay = s.config.restart_delay;
            if let Some(w) = s.sites.get_mut(&site) {
                w.instances.insert(
                    (id.clone(), 1),
                    Instance {
                        state: InstanceState::Running,
                        placement,
                        restarts: 0,
                        ready_at: now,
                        next_restart_at: now,
                        restart_delay,
                        next_checkpoint_at: first_checkpoint_at,
                        latest_checkpoint: None,
                        savepoint: None,
                        held: false,
                    },
                );
            }
            s.issued.insert(id.clone(), (1, site.clone()));
            s.stored.insert(id.clone(), (site, 1));
            s.jobs.insert(id, job);
        }
        self.deliver_all(Vec::new());
    }

    /// Notes a scenario event in the timeline.
    pub fn note(&mut self, text: String) {
        self.st().log(EntryKind::Inject, None, None, text);
    }
}

impl State {
    fn elapsed(&self) -> Duration {
        crate::types::elapsed(self.start, self.now)
    }

    fn trace_line(&mut self, line: String) {
        if let Some(t) = &mut self.trace {
            t.push(line);
        }
    }

    /// Whether the leader is still alive to perform the next effect.
    fn gate(&mut self) -> Result<(), Crashed> {
        if self.crashed {
            return Err(Crashed);
        }
        if let Some(n) = self.effects_before_crash.as_mut() {
            if *n == 0 {
                self.effects_before_crash = None;
                self.crashed = true;
                return Err(Crashed);
            }
            *n -= 1;
        }
        if let Some(hook) = self.crash_hook.as_mut()
            && hook()
        {
            self.crashed = true;
            return Err(Crashed);
        }
        Ok(())
    }

    fn log(&mut self, kind: EntryKind, job: Option<&JobId>, site: Option<&SiteId>, text: String) {
        let at = self.elapsed();
        self.timeline.push(TimelineEntry {
            at,
            kind,
            job: job.cloned(),
            site: site.cloned(),
            text,
        });
    }

    fn violation(&mut self, message: String) {
        self.trace_line(format!("    !! {message}"));
        self.log(EntryKind::Violation, None, None, message.clone());
        let at = self.elapsed();
        self.violations.push(Violation { at, message });
    }

    fn site_is_up(&self, site: &SiteId) -> bool {
        self.sites.get(site).is_some_and(|s| s.up)
    }

    fn reachable(&self, s: &SiteId) -> bool {
        self.sites.get(s).is_some_and(|w| w.up && w.cut.is_none())
    }

    /// Whether the agent of `s` renews its lease now: the quorum hears the site.
    fn peer_hears(&self, s: &SiteId) -> bool {
        self.sites
            .get(s)
            .is_some_and(|w| w.up && !w.isolated() && w.agent.down_until.is_none() && !w.agent.cut)
    }

    /// Whether the agent lease of `s` may still be alive, as the controller reads it.
    fn lease_alive(&self, s: &SiteId) -> bool {
        self.sites.get(s).is_some_and(|w| {
            w.agent
                .last_renewal
                .is_some_and(|at| lease_may_be_alive(&self.config.agent, at, self.now))
        })
    }

    /// What the controller observes and launches in: a reachable site whose agent's lease
    /// may be alive (`src/controller/guard.rs`: a site without one is fencing itself).
    fn observable(&self, s: &SiteId) -> bool {
        self.reachable(s) && self.lease_alive(s)
    }
}
