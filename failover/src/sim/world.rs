//! A fake two-site world driven by the real failover [`Driver`] on a virtual clock: nodes
//! that heart-beat or not, Flink generations that run, restart, fail and checkpoint, sites
//! that go dark and come back with their zombies, a controller that may be cut off a site or
//! lose quorum, replication between the sites' storage, and a leader that may die between
//! any two effects and be replaced by one that resumes from the persisted records.
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

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::model::{
    JobId, JobPlacement, Node, PlacementPolicy, PodRole, Resources, SiteId, SiteSnapshot,
};

use super::report::{
    CheckpointRecord, EntryKind, JobEnd, NotRelaunched, Recovery, Stats, TimelineEntry, Violation,
};
use crate::agent::{AgentTiming, LeaseView, RunningGeneration, StoreView, lease_may_be_alive};
use crate::driver::{Driver, Effects, Launch, PassInput, Report};
use crate::engine::{AuditEntry, Command, Engine, EngineConfig, Event, JobPhase, Record};
use crate::placer::SchedulerPlacer;
use crate::types::{
    CheckpointKind, CheckpointPointer, JobObserved, JobSpec, NodeHeartbeat, ObservedCheckpoint,
    PlacedJob, PlacementOutcome, Placer, RelaunchReason, RunState, SiteObservation, StoredJob,
    Timestamp,
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
                CheckpointKind::Checkpoint => "checkpoint",
                CheckpointKind::Savepoint => "savepoint",
            },
            p.path,
            p.generation,
            p.id,
            p.site
        ),
        None => "without state".to_string(),
    }
}

/// Pending once, then ready: lets the other effects of a round run first.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The driver's view of the world: its effects and its placer.
struct Sim<'a> {
    state: &'a RefCell<State>,
}

impl Sim<'_> {
    /// Seeded interleaving: a concurrent effect lets the others of its round run first a
    /// random number of times.
    async fn interleave(&self) {
        let yields = self
            .state
            .borrow_mut()
            .interleaving
            .as_mut()
            .map_or(0, |rng| rng.random_range(0..3));
        for _ in 0..yields {
            YieldOnce(false).await;
        }
    }
}

impl Placer for Sim<'_> {
    fn place(
        &self,
        site: &SiteId,
        jobs: &[scheduler::model::JobDemand],
        avoid: &BTreeSet<String>,
    ) -> PlacementOutcome {
        self.state.borrow().place(site, jobs, avoid)
    }
}

impl Effects for Sim<'_> {
    type Error = Crashed;

    fn write_record(
        &self,
        key: &str,
        record: Option<&Record>,
    ) -> impl Future<Output = Result<(), Crashed>> {
        let (key, record) = (key.to_string(), record.cloned());
        async move {
            let mut s = self.state.borrow_mut();
            s.gate()?;
            match record {
                Some(record) => {
                    if let Record::Site(site) = &record {
                        s.check_loss_judgement(site);
                    }
                    s.trace_line(format!("    -> {}", short_record(&record)));
                    s.store.insert(key, record);
                }
                None => {
                    s.trace_line(format!("    -> Forget({key})"));
                    s.store.remove(&key);
                }
            }
            Ok(())
        }
    }

    fn append_audits(&self, entries: &[AuditEntry]) -> impl Future<Output = ()> {
        let entries = entries.to_vec();
        async move {
            let mut s = self.state.borrow_mut();
            if s.gate().is_err() {
                return;
            }
            for a in entries {
                s.audit(a);
            }
        }
    }

    fn mark_site(
        &self,
        site: &SiteId,
        epoch: u64,
        lost: bool,
    ) -> impl Future<Output = Result<(), Crashed>> {
        let site = site.clone();
        async move {
            let mut s = self.state.borrow_mut();
            s.gate()?;
            if lost {
                s.mark_site_lost(site, epoch);
            } else {
                s.mark_site_recovered(site, epoch);
            }
            Ok(())
        }
    }

    fn report(&self, report: Report<'_>) {
        let mut s = self.state.borrow_mut();
        if !s.crashed {
            s.report(report);
        }
    }

    fn launch(&self, launch: &Launch) -> impl Future<Output = Result<Option<Event>, Crashed>> {
        let launch = launch.clone();
        async move {
            self.interleave().await;
            let mut s = self.state.borrow_mut();
            s.gate()?;
            let answer = s.relaunch(launch);
            if let Some(n) = s.relaunches_before_crash.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    s.relaunches_before_crash = None;
                    s.crashed = true;
                }
            }
            Ok(answer)
        }
    }

    fn fence(
        &self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Crashed>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            self.interleave().await;
            let mut s = self.state.borrow_mut();
            s.gate()?;
            Ok(s.fence(job, generation, site))
        }
    }

    fn savepoint(
        &self,
        op: u64,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Crashed>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            let mut s = self.state.borrow_mut();
            s.gate()?;
            Ok(s.trigger_savepoint(op, job, generation, site))
        }
    }

    fn replicate_savepoint(
        &self,
        op: u64,
        job: &JobId,
        savepoint: &CheckpointPointer,
        to: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Crashed>> {
        let (job, savepoint, to) = (job.clone(), savepoint.clone(), to.clone());
        async move {
            let mut s = self.state.borrow_mut();
            s.gate()?;
            Ok(s.replicate_savepoint(op, job, savepoint, to))
        }
    }

    fn trace_fed(&self, fed: &[Event]) {
        let mut s = self.state.borrow_mut();
        if s.trace.is_none() {
            return;
        }
        let secs = s.elapsed().as_secs();
        for event in fed {
            s.trace_line(format!("t={secs} {}", short_event(event)));
        }
    }

    fn trace_issued(&self, issued: &[Command]) {
        let mut s = self.state.borrow_mut();
        if s.trace.is_none() {
            return;
        }
        for c in issued {
            if !matches!(c, Command::Persist(_) | Command::Forget { .. }) {
                s.trace_line(format!("    => {}", short(c)));
            }
        }
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

    // ---- the engine's inputs --------------------------------------------------------------

    /// Feeds `event` to the driver now (with the stored jobs, as the controller's requests
    /// do) and executes what it leads to.
    pub fn deliver(&mut self, event: Event) {
        self.deliver_all(vec![event]);
    }

    /// Feeds events that arrived together, with the stored jobs first.
    pub fn deliver_all(&mut self, events: Vec<Event>) {
        for e in &events {
            if let Event::OpsRequest(
                crate::engine::OpsRequest::Failover {
                    from,
                    to,
                    dry_run: false,
                    ..
                }
                | crate::engine::OpsRequest::Failback {
                    from,
                    to,
                    dry_run: false,
                    ..
                },
            ) = e
            {
                self.st().operator_moves.insert((from.clone(), to.clone()));
            }
        }
        let mut fed = vec![Event::JobsStored(self.state.borrow().stored_jobs())];
        fed.extend(std::mem::take(&mut self.st().inbox));
        fed.extend(events);
        let now = self.now();
        let sim = Sim { state: &self.state };
        let result = futures::executor::block_on(self.driver.feed(&sim, &sim, fed, now));
        self.after_call(result.map(|_| ()));
    }

    /// One reconcile pass of the controller: quorum, stored jobs, answers that arrived,
    /// peer views and the observations of every site it reaches, then the commands.
    fn pass(&mut self) {
        let input = {
            let s = self.st();
            s.stop_unguarded();
            let ids: Vec<SiteId> = s.sites.keys().cloned().collect();
            PassInput {
                quorum: s.quorum,
                jobs: Some(s.stored_jobs()),
                sites: ids
                    .iter()
                    .filter(|id| s.observable(id))
                    .filter_map(|id| s.observe(id))
                    .collect(),
                // A site's peer view is its agent's lease: its last renewal.
                peers: ids
                    .iter()
                    .filter_map(|id| Some((id.clone(), s.sites.get(id)?.agent.last_renewal?)))
                    .collect(),
                events: std::mem::take(&mut s.inbox),
                retries: std::mem::take(&mut s.deferred),
            }
        };
        let now = self.now();
        let sim = Sim { state: &self.state };
        let result = futures::executor::block_on(self.driver.pass(&sim, &sim, input, now));
        self.after_call(result.map(|_| ()));
    }

    /// After every call of the driver: if an effect found the leader dead, a new one takes
    /// over.
    fn after_call(&mut self, result: Result<(), Crashed>) {
        if result.is_err() || self.state.borrow().crashed {
            self.crash_leader();
        }
    }

    /// Arms a leader crash (see [`CrashTrigger`]).
    pub fn arm_crash(&mut self, trigger: CrashTrigger) {
        let s = self.st();
        match trigger {
            CrashTrigger::AfterCommands(n) => s.effects_before_crash = Some(n),
            CrashTrigger::AfterRelaunches(n) => s.relaunches_before_crash = Some(n.max(1)),
        }
    }

    /// The leader dies now; a new one loads every persisted record and resumes.
    pub fn crash_leader(&mut self) {
        let records = {
            let s = self.st();
            s.stats.leader_crashes += 1;
            s.crashed = false;
            s.effects_before_crash = None;
            let text = format!(
                "leader crashed; a new leader resumes from {} persisted records",
                s.store.len()
            );
            let secs = s.elapsed().as_secs();
            s.trace_line(format!("t={secs} LEADER CRASH: {text}"));
            s.log(EntryKind::Leader, None, None, text);
            // Through JSON, as the real store would hand them back.
            let records: Result<Vec<Record>, _> = s
                .store
                .values()
                .map(|r| serde_json::to_string(r).and_then(|j| serde_json::from_str(&j)))
                .collect();
            match records {
                Ok(r) => r,
                Err(e) => {
                    s.violation(format!("a record does not round-trip through JSON: {e}"));
                    s.store.values().cloned().collect()
                }
            }
        };
        let config = self.driver.engine().config().clone();
        self.driver = Driver::resume(config, records, self.now());
        let q = self.state.borrow().quorum;
        self.deliver(Event::QuorumChanged(q));
    }

    /// Executes `command` as if the engine had issued it (tests of the world's checks).
    pub fn apply_command(&mut self, command: Command) {
        let s = self.st();
        match command {
            Command::Relaunch {
                job,
                generation,
                site,
                placement,
                restore_from,
                reason,
            } => {
                let answer = s.relaunch(Launch {
                    job,
                    generation,
                    site,
                    placement,
                    restore_from,
                    reason,
                });
                s.inbox.extend(answer);
            }
            Command::Fence {
                job,
                generation,
                site,
            } => {
                let answer = s.fence(job, generation, site);
                s.inbox.extend(answer);
            }
            Command::MarkSiteLost { site, epoch } => s.mark_site_lost(site, epoch),
            Command::MarkSiteRecovered { site, epoch } => s.mark_site_recovered(site, epoch),
            _ => {}
        }
    }

    // ---- faults and their repair ----------------------------------------------------------

    /// The node stops heart-beating; what runs on it stops.
    pub fn node_lost(&mut self, site: &SiteId, node: &str) {
        if let Some(n) = self
            .st()
            .sites
            .get_mut(site)
            .and_then(|w| w.nodes.get_mut(node))
        {
            n.alive = false;
        }
    }

    pub fn node_returns(&mut self, site: &SiteId, node: &str) {
        if let Some(n) = self
            .st()
            .sites
            .get_mut(site)
            .and_then(|w| w.nodes.get_mut(node))
        {
            n.alive = true;
        }
    }

    /// The whole site goes dark: its API, nodes and storage. What ran there is frozen and
    /// comes back with the site.
    pub fn site_lost(&mut self, site: &SiteId) {
        let s = self.st();
        if let Some(w) = s.sites.get_mut(site)
            && w.up
        {
            w.up = false;
            w.cut = None;
            let frozen = std::mem::take(&mut w.instances);
            w.dormant.extend(frozen);
        }
        s.refresh_visibility();
    }

    /// The site comes back, every node with it; its frozen generations come back restarting
    /// (zombies), held if the site was marked lost meanwhile.
    pub fn site_returns(&mut self, site: &SiteId) {
        let s = self.st();
        let now = s.now;
        if let Some(w) = s.sites.get_mut(site)
            && !w.up
        {
            w.up = true;
            w.cut = None;
            // Its agent starts again with the site, holding no lease until it renews.
            w.agent.valid_until = None;
            w.agent.down_until = None;
            for n in w.nodes.values_mut() {
                n.alive = true;
                n.last_heartbeat = now;
            }
            let marked_lost = w.marked_lost;
            let zombies = std::mem::take(&mut w.dormant);
            for (k, mut i) in zombies {
                if i.counts_as_running() {
                    i.state = InstanceState::Restarting;
                }
                i.next_restart_at = now;
                i.held = i.held || marked_lost;
                w.instances.insert(k, i);
            }
        }
        s.refresh_visibility();
    }

    /// The controller can no longer reach `site`'s API; `peer_sees`: the other site (through
    /// the quorum) still hears it.
    pub fn partition(&mut self, site: &SiteId, peer_sees: bool) {
        let s = self.st();
        if let Some(w) = s.sites.get_mut(site)
            && w.up
        {
            w.cut = Some(peer_sees);
        }
        s.refresh_visibility();
    }

    /// The agent of `site` is cut from the quorum (`true`) while its site runs on, or
    /// reaches it again (`false`).
    pub fn agent_cut(&mut self, site: &SiteId, cut: bool) {
        let s = self.st();
        if let Some(w) = s.sites.get_mut(site) {
            w.agent.cut = cut;
        }
        s.refresh_visibility();
    }

    /// Whether the agent of `site` is cut from the quorum.
    pub fn agent_is_cut(&self, site: &SiteId) -> bool {
        self.state
            .borrow()
            .sites
            .get(site)
            .is_some_and(|w| w.agent.cut)
    }

    /// The agent of `site` crashes; its Deployment starts it again `restart_after` later,
    /// holding no lease.
    pub fn agent_crash(&mut self, site: &SiteId, restart_after: Duration) {
        let s = self.st();
        let now = s.now;
        if let Some(w) = s.sites.get_mut(site) {
            w.agent.down_until = Some(plus(now, restart_after));
            w.agent.valid_until = None;
        }
        s.refresh_visibility();
    }

    /// The agent of `site`'s clock runs `skew` behind the world's from now on.
    pub fn set_agent_skew(&mut self, site: &SiteId, skew: Duration) {
        if let Some(w) = self.st().sites.get_mut(site) {
            w.agent.skew = skew;
        }
    }

    /// `site` refuses every launch (`true`) while it answers everything else, or takes
    /// launches again (`false`).
    pub fn refuse_launches(&mut self, site: &SiteId, refuse: bool) {
        if let Some(w) = self.st().sites.get_mut(site) {
            w.refuses_launches = refuse;
        }
    }

    /// Whether `site` refuses every launch.
    pub fn refuses_launches(&self, site: &SiteId) -> bool {
        self.state
            .borrow()
            .sites
            .get(site)
            .is_some_and(|w| w.refuses_launches)
    }

    /// Ends the partition of `site` (every site: `None`).
    pub fn heal(&mut self, site: Option<&SiteId>) {
        let s = self.st();
        for (id, w) in &mut s.sites {
            if site.is_none_or(|x| x == id) {
                w.cut = None;
            }
        }
        s.refresh_visibility();
    }

    pub fn quorum(&self) -> bool {
        self.state.borrow().quorum
    }

    /// The controller gains or loses quorum with the witness (and tells the engine).
    pub fn set_quorum(&mut self, quorum: bool) {
        self.st().quorum = quorum;
        self.deliver(Event::QuorumChanged(quorum));
    }

    /// Flink gives up on `job`: its generations in `site` (every site: `None`) fail. With a
    /// site given, only the first generation found there, whatever its state.
    pub fn job_fails(&mut self, job: &JobId, site: Option<&SiteId>) {
        for (id, w) in &mut self.st().sites {
            if let Some(s) = site {
                if s != id {
                    continue;
                }
                if let Some(i) = w
                    .instances
                    .iter_mut()
                    .find(|((j, _), _)| j == job)
                    .map(|(_, i)| i)
                {
                    i.state = InstanceState::Failed;
                }
            } else {
                for ((j, _), i) in &mut w.instances {
                    if j == job && i.counts_as_running() && !i.held {
                        i.state = InstanceState::Failed;
                    }
                }
            }
        }
    }

    /// `generation` of `job` completes a checkpoint in `site` now; its site reports it from
    /// then on (the engine learns it from the next observation). With `replicate`, its copy
    /// is verified in the other sites that are up after the replication delay.
    pub fn complete_checkpoint(
        &mut self,
        site: &SiteId,
        job: &JobId,
        generation: u64,
        completed_at: Timestamp,
        replicate: bool,
    ) -> CheckpointPointer {
        let s = self.st();
        let c = s.complete_checkpoint(site, job, generation, completed_at);
        if replicate {
            s.schedule_replication(job, &c);
        }
        c
    }

    /// The copy of `checkpoint` is verified in `to` now, if both sites are still up.
    pub fn replicate_checkpoint(&mut self, job: JobId, checkpoint: CheckpointPointer, to: SiteId) {
        self.st().replicate_checkpoint(job, checkpoint, to);
    }

    // ---- time -----------------------------------------------------------------------------

    /// Advances the clock by `dt`: nodes heart-beat, Flink restarts and checkpoints, answers
    /// and replicas that are due arrive, then the controller runs one pass.
    pub fn advance(&mut self, dt: Duration) {
        self.st().evolve(dt);
        self.pass();
    }

    /// The invariants (see the module comment), checked now; violations are recorded.
    /// Returns whether they held.
    pub fn check_invariants(&mut self) -> bool {
        let mut broken = self.state.borrow().twice_running();
        broken.extend(self.check_liveness());
        let held = broken.is_empty();
        let s = self.st();
        for b in broken {
            s.violation(b);
        }
        held
    }

    /// Never stranded, and the engine's word about a job true (issue #14). A job that runs
    /// nowhere while some site may host it must run again within the bound: the site is up
    /// and the controller reaches it, the job may run there (its site constraint; its own
    /// site, or any for a job the engine may move), it has something to start from there
    /// (a checkpoint readable there, or its own site and no checkpoint ever, or a job
    /// allowed to start fresh), and the scheduler finds room. A generation the controller
    /// cannot see (in a site cut off from it) may still run, so its job is not stranded;
    /// nor is a job whose silent site the engine cannot judge (no quorum, or the peer still
    /// hears it): moving it could run it twice.
    fn check_liveness(&mut self) -> Vec<String> {
        let s = self.state.borrow();
        let now = s.now;
        let mut watched: Vec<((JobId, &'static str), String)> = Vec::new();
        for id in s.jobs.keys() {
            let Some(r) = self.driver.engine().job(id) else {
                continue;
            };
            let instances = || {
                s.sites.iter().flat_map(move |(site, w)| {
                    w.instances
                        .iter()
                        .filter(move |((j, _), i)| j == id && !i.held && w.up)
                        .map(move |(_, i)| (site, w, i))
                })
            };
            let runs = instances()
                .any(|(_, _, i)| i.counts_as_running() || i.state == InstanceState::Restarting);
            let maybe_runs = instances().any(|(_, w, _)| w.cut.is_some());
            match &r.phase {
                JobPhase::Down { reason } => {
                    if let Some(site) = instances()
                        .find(|(_, w, i)| i.counts_as_running() && w.cut.is_none())
                        .map(|(site, _, _)| site)
                    {
                        watched.push((
                            (id.clone(), "down but running"),
                            format!(
                                "the engine says {id} runs nowhere ({reason}) but it runs in {site}"
                            ),
                        ));
                    }
                }
                JobPhase::Running => {
                    let reachable = s.observable(&r.site);
                    let current = s.sites.get(&r.site).is_some_and(|w| {
                        w.instances
                            .get(&(id.clone(), r.generation))
                            .is_some_and(|i| !i.held)
                    });
                    if reachable && !current {
                        watched.push((
                            (id.clone(), "running but absent"),
                            format!(
                                "the engine says {id} runs as generation {} in {} but that generation is not there",
                                r.generation, r.site
                            ),
                        ));
                    }
                }
                _ => {}
            }
            let judgeable = s.sites.get(&r.site).is_some_and(|w| {
                s.observable(&r.site) || w.marked_lost || (s.quorum && w.visible_since.is_none())
            });
            if runs || maybe_runs || !judgeable {
                continue;
            }
            if let Some(host) = s.sites.keys().find(|site| s.may_host(r, site)) {
                watched.push((
                    (id.clone(), "stranded"),
                    format!(
                        "{id} runs nowhere although {host} may host it and has room (engine: {:?})",
                        r.phase
                    ),
                ));
            }
        }
        drop(s);
        let mut broken = Vec::new();
        let still: BTreeSet<(JobId, &'static str)> =
            watched.iter().map(|(k, _)| k.clone()).collect();
        self.waiting.retain(|k, _| still.contains(k));
        let bound = self.liveness_bound;
        for (key, message) in watched {
            let since = *self.waiting.entry(key.clone()).or_insert(now);
            let waited = crate::types::elapsed(since, now);
            if key.1 == "stranded" {
                let s = self.state.get_mut();
                s.stats.longest_wait_secs = s.stats.longest_wait_secs.max(waited.as_secs());
            }
            if waited > bound {
                broken.push(format!(
                    "{message}, for {}",
                    super::report::fmt_duration(waited)
                ));
                self.waiting.remove(&key);
            }
        }
        broken
    }

    /// Every job's state now, for the report.
    pub fn job_ends(&self) -> Vec<JobEnd> {
        let s = self.state.borrow();
        self.driver
            .engine()
            .jobs()
            .map(|r| {
                let running_in = s
                    .sites
                    .iter()
                    .filter(|(_, w)| {
                        w.up && w.instances.iter().any(|((j, _), i)| {
                            j == r.id() && i.state == InstanceState::Running && !i.held
                        })
                    })
                    .map(|(site, _)| site.clone())
                    .collect();
                JobEnd {
                    job: r.id().clone(),
                    priority: r.spec.demand.priority,
                    site: r.site.clone(),
                    generation: r.generation,
                    phase: match &r.phase {
                        JobPhase::Running => "running".to_string(),
                        JobPhase::Fencing { target, .. } => {
                            format!("fencing (to relaunch in {target})")
                        }
                        JobPhase::Launching { .. } => "launching".to_string(),
                        JobPhase::InOperation { op } => format!("moving (operation {op})"),
                        JobPhase::Down { reason } => format!("down: {reason}"),
                    },
                    running_in,
                }
            })
            .collect()
    }

    /// Everything the run reported, with each job's state now, as the outcome of the run
    /// named `name` (seed, duration and step as the scenario gave them).
    pub fn into_outcome(
        self,
        name: String,
        seed: u64,
        duration: Duration,
        step: Duration,
    ) -> super::report::Outcome {
        let jobs = self.job_ends();
        let s = self.state.into_inner();
        super::report::Outcome {
            name,
            seed,
            duration,
            step,
            jobs,
            stats: s.stats,
            timeline: s.timeline,
            recoveries: s.recoveries,
            not_relaunched: s.not_relaunched,
            checkpoints: s.checkpoints,
            violations: s.violations,
        }
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

    /// The controller stops what runs in a site it reaches whose agent has held no lease
    /// for as long as it takes an agent to fence its site: the agent is dead
    /// (`Controller::stop_unguarded`).
    fn stop_unguarded(&mut self) {
        let ids: Vec<SiteId> = self.sites.keys().cloned().collect();
        for id in ids {
            let long_gone = self
                .sites
                .get(&id)
                .and_then(|w| w.agent.last_renewal)
                .is_none_or(|at| crate::agent::site_fenced_by(&self.config.agent, at, self.now));
            if !self.reachable(&id) || self.lease_alive(&id) || !long_gone {
                continue;
            }
            let stopped: Vec<(JobId, u64)> = match self.sites.get_mut(&id) {
                Some(w) => std::mem::take(&mut w.instances).into_keys().collect(),
                None => continue,
            };
            for (job, generation) in stopped {
                let secs = self.elapsed().as_secs();
                self.trace_line(format!(
                    "t={secs} controller stops {job} gen {generation} in {id}: its agent holds no lease"
                ));
            }
        }
    }

    /// Each site's agent, once per step: restart after a crash, renew the lease while it
    /// reaches the quorum, then look at its site with the production decision
    /// (`crate::agent::decide`) and stop what it says.
    fn run_agents(&mut self) {
        let now = self.now;
        let timing = self.config.agent;
        let ids: Vec<SiteId> = self.sites.keys().cloned().collect();
        for id in ids {
            let renews = {
                let Some(w) = self.sites.get_mut(&id) else {
                    continue;
                };
                if w.agent.down_until.is_some_and(|t| now >= t) {
                    w.agent.down_until = None;
                    w.agent.valid_until = None;
                }
                if !w.up || w.agent.down_until.is_some() {
                    continue;
                }
                !w.isolated() && !w.agent.cut
            };
            let agent_now =
                now - chrono::Duration::from_std(self.sites[&id].agent.skew).unwrap_or_default();
            if renews && let Some(w) = self.sites.get_mut(&id) {
                w.agent.last_renewal = Some(now);
                w.agent.valid_until = Some(plus(agent_now, timing.lease_ttl));
            }
            let w = &self.sites[&id];
            let lease = match w.agent.valid_until {
                Some(valid_until) => LeaseView::Held { valid_until },
                None => LeaseView::NeverHeld,
            };
            // The store is read through the quorum: only an agent that reaches it.
            let store = renews.then(|| StoreView {
                site_epoch: 0,
                placed: self.stored.clone(),
            });
            let running: Vec<RunningGeneration> = w
                .instances
                .keys()
                .map(|(job, generation)| RunningGeneration {
                    job: job.clone(),
                    generation: *generation,
                    epoch: None,
                })
                .collect();
            let decision = crate::agent::decide(&id, agent_now, &lease, store.as_ref(), &running);
            for stop in decision.stops {
                if let Some(w) = self.sites.get_mut(&id) {
                    w.instances.remove(&(stop.job.clone(), stop.generation));
                }
                let secs = self.elapsed().as_secs();
                self.trace_line(format!(
                    "t={secs} agent of {id} stops {} gen {}: {}",
                    stop.job, stop.generation, stop.reason
                ));
                self.log(
                    EntryKind::Action,
                    Some(&stop.job),
                    Some(&id),
                    format!(
                        "agent of {id} stops {} generation {}: {}",
                        stop.job, stop.generation, stop.reason
                    ),
                );
            }
        }
    }

    fn refresh_visibility(&mut self) {
        let now = self.now;
        let ids: Vec<SiteId> = self.sites.keys().cloned().collect();
        for s in ids {
            let visible = self.observable(&s) || self.peer_hears(&s);
            if let Some(w) = self.sites.get_mut(&s) {
                match (visible, w.visible_since) {
                    (true, None) => w.visible_since = Some(now),
                    (false, Some(_)) => w.visible_since = None,
                    _ => {}
                }
            }
        }
    }

    fn stored_jobs(&self) -> Vec<StoredJob> {
        self.jobs
            .iter()
            .map(|(id, job)| StoredJob {
                id: id.clone(),
                placed: self.stored.get(id).map(|(site, generation)| PlacedJob {
                    spec: job.spec.clone(),
                    site: site.clone(),
                    generation: *generation,
                }),
            })
            .collect()
    }

    /// The scheduler over the world's current nodes and running generations.
    fn place(
        &self,
        site: &SiteId,
        jobs: &[scheduler::model::JobDemand],
        avoid: &BTreeSet<String>,
    ) -> PlacementOutcome {
        let Some(s) = self.sites.get(site) else {
            return PlacementOutcome::default();
        };
        let snapshot = SiteSnapshot {
            id: site.clone(),
            nodes: s
                .nodes
                .iter()
                .map(|(name, n)| Node {
                    owner_usage: None,
                    name: name.clone(),
                    labels: BTreeMap::new(),
                    taints: Vec::new(),
                    unschedulable: false,
                    ready: n.alive,
                    allocatable: n.allocatable,
                })
                .collect(),
            running_pods: Vec::new(),
        };
        let running: Vec<JobPlacement> =
            s.instances.values().map(|i| i.placement.clone()).collect();
        let demands = self.jobs.values().map(|j| j.spec.demand.clone()).collect();
        SchedulerPlacer::new(vec![snapshot], running, demands, &self.policy, self.now)
            .place(site, jobs, avoid)
    }

    fn priority(&self, job: &JobId) -> scheduler::model::Priority {
        self.jobs
            .get(job)
            .map_or(scheduler::model::Priority::Normal, |j| {
                j.spec.demand.priority
            })
    }

    fn answer(&mut self, after: Duration, event: Event) -> Option<Event> {
        if after.is_zero() {
            return Some(event);
        }
        self.seq += 1;
        self.due
            .insert((plus(self.now, after), self.seq), Due::Answer(event));
        None
    }

    // ---- effects ---------------------------------------------------------------------------

    /// An engine audit entry on the timeline; the registration of every job, and the
    /// relaunch and the report of a job not relaunched (logged as actions), would only
    /// repeat themselves.
    fn audit(&mut self, a: AuditEntry) {
        self.trace_line(format!("    -> Audit({})", a.message));
        if a.message.starts_with("registered at generation")
            || a.message.starts_with("relaunching as generation")
            || a.message.starts_with("not relaunched:")
        {
            return;
        }
        let text = match &a.job {
            Some(j) => format!("{j}: {}", a.message),
            None => match &a.site {
                Some(s) => format!("site {s}: {}", a.message),
                None => a.message.clone(),
            },
        };
        self.log(EntryKind::Engine, a.job.as_ref(), a.site.as_ref(), text);
    }

    fn report(&mut self, report: Report<'_>) {
        match report {
            Report::Recovery(r) => self.report_recovery(r),
            Report::NotRelaunched {
                job,
                reason,
                missing,
            } => {
                self.trace_line(format!("    -> ReportNotRelaunched({job}: {reason})"));
                let priority = self.priority(job);
                self.log(
                    EntryKind::Action,
                    Some(job),
                    None,
                    format!("{job} not relaunched: {reason}"),
                );
                let at = self.elapsed();
                self.not_relaunched.push(NotRelaunched {
                    job: job.clone(),
                    priority,
                    at,
                    reason: reason.to_string(),
                    missing: *missing,
                });
            }
            Report::Plan(plan) => {
                let moves: Vec<String> = plan
                    .moves
                    .iter()
                    .map(|m| {
                        format!(
                            "{} (expected RPO {})",
                            m.job,
                            m.expected_rpo
                                .map_or("none".into(), super::report::fmt_duration)
                        )
                    })
                    .collect();
                let not: Vec<String> = plan
                    .not_fitting
                    .iter()
                    .map(|n| format!("{} ({})", n.job, n.reason))
                    .collect();
                let text = format!(
                    "dry run {} -> {} ({:?}): moves [{}]; does not move [{}]; preempts [{}]",
                    plan.from,
                    plan.to,
                    plan.mode,
                    moves.join(", "),
                    not.join(", "),
                    plan.preempt
                        .iter()
                        .map(|j| j.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.log(EntryKind::Action, None, Some(&plan.from), text);
            }
            Report::Rejected { request, error } => {
                self.log(
                    EntryKind::Action,
                    None,
                    None,
                    format!("request rejected: {error} ({request:?})"),
                );
            }
            Report::Accepted { .. } => {}
        }
    }

    fn report_recovery(&mut self, r: &crate::engine::RecoveryReport) {
        self.trace_line(format!(
            "    -> ReportRecovery({} gen {} in {}: {})",
            r.job, r.generation, r.site, r.reason
        ));
        let at = self.elapsed();
        let from = self
            .issued
            .get(&r.job)
            .filter(|(g, _)| *g < r.generation)
            .map_or(r.site.clone(), |(_, s)| s.clone());
        let priority = self.priority(&r.job);
        let row = self
            .recoveries
            .iter_mut()
            .rev()
            .find(|x| x.job == r.job && x.generation == r.generation && x.to == r.site);
        // RPO never hides replication lag: the report names the restore point the launch
        // really used (the one readable in the target, not the source's newer one), and its
        // RPO runs from that point's completion to the failure the report itself states
        // (the last heartbeat, when known).
        let mut lag_hidden = Vec::new();
        if let Some(row) = &row
            && row.restore_from != r.restore_from
        {
            lag_hidden.push(format!(
                "{} generation {} in {}: the recovery report names restore point {} but the launch restored {}",
                r.job,
                r.generation,
                r.site,
                describe_pointer(&r.restore_from),
                describe_pointer(&row.restore_from)
            ));
        }
        if let (Some(rpo), Some(p), Some(since_heartbeat)) = (
            r.rpo,
            &r.restore_from,
            r.rto_from_last_heartbeat
                .and_then(|d| chrono::Duration::from_std(d).ok()),
        ) && p.kind == CheckpointKind::Checkpoint
        {
            let failed_at = self.now - since_heartbeat;
            let lost = crate::types::elapsed(p.completed_at, failed_at);
            if rpo != lost {
                lag_hidden.push(format!(
                    "{} generation {} in {}: RPO {} reported, but checkpoint {} completed {} before the failure",
                    r.job,
                    r.generation,
                    r.site,
                    super::report::fmt_duration(rpo),
                    p.id,
                    super::report::fmt_duration(lost)
                ));
            }
        }
        match row {
            Some(row) => {
                row.op = r.op;
                row.reason = r.reason.to_string();
                row.reported = true;
                row.rto_from_detection = Some(r.rto_from_detection);
                row.rto_from_last_heartbeat = r.rto_from_last_heartbeat;
                row.rpo = r.rpo;
            }
            // Reported before the relaunch takes effect (reports run before the actions of
            // their round): the relaunch fills in the nodes.
            None => self.recoveries.push(Recovery {
                job: r.job.clone(),
                priority,
                reason: r.reason.to_string(),
                op: r.op,
                from,
                to: r.site.clone(),
                nodes: Vec::new(),
                generation: r.generation,
                relaunched_at: at,
                running_at: None,
                reported: true,
                rto_from_detection: Some(r.rto_from_detection),
                rto_from_last_heartbeat: r.rto_from_last_heartbeat,
                rpo: r.rpo,
                restore_from: r.restore_from.clone(),
            }),
        }
        for message in lag_hidden {
            self.violation(message);
        }
        self.log(
            EntryKind::Recovery,
            Some(&r.job),
            Some(&r.site),
            format!(
                "{} generation {} in {}: RTO {} from detection, {} from last heartbeat; RPO {}",
                r.job,
                r.generation,
                r.site,
                super::report::fmt_duration(r.rto_from_detection),
                r.rto_from_last_heartbeat
                    .map_or("unknown".into(), super::report::fmt_duration),
                r.rpo
                    .map_or("none (no state)".into(), super::report::fmt_duration)
            ),
        );
    }

    /// Epoch admission: once a site is marked lost, every generation of its old epoch is
    /// held and never runs again. Idempotent (a new leader marks a lost site again).
    fn mark_site_lost(&mut self, site: SiteId, epoch: u64) {
        self.trace_line(format!("    -> MarkSiteLost({site}, epoch {epoch})"));
        let Some(w) = self.sites.get_mut(&site) else {
            return;
        };
        if w.marked_epoch >= epoch {
            return;
        }
        w.marked_epoch = epoch;
        w.marked_lost = true;
        // Generations frozen with a dark site are held by its agent's epoch admission when
        // they come back. What still runs in a site that is up is not held by magic: its
        // agent stops it (self-fencing once its lease ran out, or placement and epoch
        // admission once it reads the store), and the timing argument says it has by now.
        for i in w.dormant.values_mut() {
            i.held = true;
            if i.counts_as_running() {
                i.state = InstanceState::Restarting;
            }
        }
        self.stats.site_losses += 1;
        self.log(
            EntryKind::Action,
            None,
            Some(&site),
            format!("mark site {site} lost (epoch {epoch}): its old generations are held"),
        );
    }

    /// Idempotent: a new leader marks a recovered site again.
    fn mark_site_recovered(&mut self, site: SiteId, epoch: u64) {
        self.trace_line(format!("    -> MarkSiteRecovered({site}, epoch {epoch})"));
        let Some(w) = self.sites.get_mut(&site) else {
            return;
        };
        if !w.marked_lost {
            return;
        }
        w.marked_lost = false;
        self.stats.site_recoveries += 1;
        self.log(
            EntryKind::Action,
            None,
            Some(&site),
            format!("mark site {site} recovered (epoch {epoch})"),
        );
    }

    /// The engine's judgement that a site is lost is the durable write of its new epoch: it
    /// must hold quorum, and the site must not have been heard (by the controller or the
    /// peer) for longer than the grace.
    fn check_loss_judgement(&mut self, record: &crate::engine::SiteRecord) {
        let crate::engine::SiteStatus::Lost { .. } = record.status else {
            return;
        };
        let known = match self.store.get(&Record::Site(record.clone()).key()) {
            Some(Record::Site(old)) => old.epoch,
            _ => 0,
        };
        if record.epoch <= known {
            return;
        }
        let site = &record.id;
        if !self.quorum {
            self.violation(format!("site {site} judged lost without quorum"));
        }
        let grace = self.engine_config.site.grace;
        let now = self.now;
        if let Some(since) = self.sites.get(site).and_then(|s| s.visible_since)
            && crate::types::elapsed(since, now) > grace
        {
            self.violation(format!(
                "site {site} judged lost while alive and heard for {}",
                super::report::fmt_duration(crate::types::elapsed(since, now))
            ));
        }
    }

    /// The controller writes the job's new generation and placement, then asks the site to
    /// launch it; checks that the launch restores from something readable there and that
    /// generations never go back.
    fn relaunch(&mut self, launch: Launch) -> Option<Event> {
        let Launch {
            job,
            generation,
            site,
            placement,
            restore_from,
            reason,
        } = launch;
        self.trace_line(format!(
            "    -> Relaunch({job} gen {generation} in {site} from {:?})",
            restore_from.as_ref().map(|r| (&r.site, r.generation, r.id))
        ));
        let previous = self.issued.get(&job).cloned();
        let mut nodes: Vec<String> = placement.pods.iter().map(|p| p.node.clone()).collect();
        nodes.dedup();
        self.log(
            EntryKind::Action,
            Some(&job),
            Some(&site),
            format!(
                "relaunch {job} as generation {generation} in {site} on {} {}: {reason}",
                if nodes.is_empty() {
                    "(nodes of its own choosing)".to_string()
                } else {
                    nodes.join(",")
                },
                describe_pointer(&restore_from)
            ),
        );
        // A new generation gets its recovery row (or fills in the one its report made);
        // the engine's report fills in the RTO. A re-issued launch keeps its generation.
        let new_generation = previous.as_ref().is_none_or(|(g, _)| generation > *g);
        if new_generation {
            let at = self.elapsed();
            let rpo = restore_from.as_ref().map(|p| match p.kind {
                CheckpointKind::Savepoint => Duration::ZERO,
                CheckpointKind::Checkpoint => crate::types::elapsed(p.completed_at, self.now),
            });
            let from = previous.as_ref().map_or(site.clone(), |(_, s)| s.clone());
            let priority = self.priority(&job);
            match self
                .recoveries
                .iter_mut()
                .rev()
                .find(|r| r.job == job && r.generation == generation && r.to == site)
            {
                Some(row) => {
                    row.from = from;
                    row.nodes = nodes;
                    if row.reported && row.restore_from != restore_from {
                        let message = format!(
                            "{job} generation {generation} in {site}: the recovery report named restore point {} but the launch restores {}",
                            describe_pointer(&row.restore_from),
                            describe_pointer(&restore_from)
                        );
                        self.violation(message);
                    }
                }
                None => self.recoveries.push(Recovery {
                    job: job.clone(),
                    priority,
                    reason: reason.to_string(),
                    op: None,
                    from,
                    to: site.clone(),
                    nodes,
                    generation,
                    relaunched_at: at,
                    running_at: None,
                    reported: false,
                    rto_from_detection: None,
                    rto_from_last_heartbeat: None,
                    rpo,
                    restore_from: restore_from.clone(),
                }),
            }
        }
        if let Some(p) = &restore_from {
            if p.site != site {
                self.violation(format!(
                    "{job} generation {generation} in {site} restores from a pointer in {}",
                    p.site
                ));
            } else if !self
                .readable
                .contains(&(job.clone(), site.clone(), p.generation, p.id))
            {
                self.violation(format!(
                    "{job} generation {generation} in {site} restores from {}, not readable there",
                    p.path
                ));
            }
        }
        if new_generation
            && matches!(
                reason,
                RelaunchReason::Revived { .. } | RelaunchReason::SiteReturned { .. }
            )
        {
            self.stats.revivals += 1;
        }
        match &restore_from {
            _ if !new_generation => {}
            None => self.stats.fresh_starts += 1,
            Some(_) if previous.as_ref().is_some_and(|(_, s)| s == &site) => {
                self.stats.in_site_relaunches += 1
            }
            Some(_) => self.stats.cross_site_relaunches += 1,
        }
        let operator_only = self
            .jobs
            .get(&job)
            .is_some_and(|j| j.spec.site_moves == crate::types::SiteMoves::OperatorOnly);
        if operator_only
            && new_generation
            && previous.as_ref().is_some_and(|(_, s)| {
                s != &site && !self.operator_moves.contains(&(s.clone(), site.clone()))
            })
            && !matches!(reason, RelaunchReason::Operation { .. })
        {
            self.violation(format!(
                "{job} (failover mode manual) moved to {site} without an operator: {reason}"
            ));
        }
        let (max, max_site) = previous.unwrap_or((0, site.clone()));
        if generation < max || (generation == max && max_site != site) {
            self.violation(format!(
                "{job}: generation {generation} in {site} issued after {max} in {max_site}"
            ));
        }
        if generation >= max {
            self.issued.insert(job.clone(), (generation, site.clone()));
        }
        // The controller's job record first: the generation it launches is the stored one.
        let stored_generation = self.stored.get(&job).map_or(0, |(_, g)| *g);
        if generation >= stored_generation {
            self.stored.insert(job.clone(), (site.clone(), generation));
        }
        // As in production, a site the controller reaches takes a launch even while its
        // agent holds no lease; the agent (or the controller's next pass) stops it again.
        let reachable = self.reachable(&site);
        let now = self.now;
        let config = self.config;
        let interval = self.jobs.get(&job).and_then(|j| j.checkpoint_interval);
        let Some(s) = self.sites.get_mut(&site) else {
            self.violation(format!("{job} relaunched in unknown site {site}"));
            return None;
        };
        let conflict = s
            .instances
            .keys()
            .any(|(j, g)| j == &job && *g != generation);
        let key = (job.clone(), generation);
        let result = if !reachable {
            Err("site unreachable".to_string())
        } else if s.refuses_launches {
            Err("admission refused the launch".to_string())
        } else if let Some(existing) = s.instances.get(&key) {
            // Idempotent: launching a running generation starts nothing new.
            Ok(existing.ready_at.max(now))
        } else if conflict {
            Err("another generation still runs here".to_string())
        } else {
            let ready_at = plus(now, config.launch_time);
            s.instances.insert(
                key,
                Instance {
                    state: if config.launch_time.is_zero() {
                        InstanceState::Running
                    } else {
                        InstanceState::Starting
                    },
                    placement,
                    restarts: 0,
                    ready_at,
                    next_restart_at: ready_at,
                    restart_delay: config.restart_delay,
                    next_checkpoint_at: interval.map(|i| plus(ready_at, i)),
                    latest_checkpoint: None,
                    savepoint: None,
                    held: false,
                },
            );
            Ok(ready_at)
        };
        match result {
            Ok(ready_at) => {
                let after = crate::types::elapsed(now, ready_at);
                if after.is_zero() {
                    self.launch_confirmed(&job, generation, &site);
                }
                self.answer(
                    after,
                    Event::LaunchSucceeded {
                        job,
                        generation,
                        site,
                    },
                )
            }
            Err(reason) => Some(Event::LaunchFailed {
                job,
                generation,
                site,
                reason,
            }),
        }
    }

    /// When a recovery's generation is confirmed running (its `LaunchSucceeded` answered).
    fn launch_confirmed(&mut self, job: &JobId, generation: u64, site: &SiteId) {
        let at = self.elapsed();
        if let Some(r) = self
            .recoveries
            .iter_mut()
            .rev()
            .find(|r| &r.job == job && r.generation == generation && &r.to == site)
        {
            r.running_at.get_or_insert(at);
        }
    }

    fn fence(&mut self, job: JobId, generation: u64, site: SiteId) -> Option<Event> {
        let reachable = self.reachable(&site);
        self.trace_line(format!("    -> Fence({job} gen {generation} in {site})"));
        self.log(
            EntryKind::Action,
            Some(&job),
            Some(&site),
            format!(
                "fence {job} generation {generation} in {site}{}",
                if reachable {
                    ""
                } else {
                    " (site unreachable: not done)"
                }
            ),
        );
        if !reachable {
            return None;
        }
        self.stats.fences += 1;
        if let Some(s) = self.sites.get_mut(&site) {
            s.instances.remove(&(job.clone(), generation));
            s.dormant.remove(&(job.clone(), generation));
        }
        let after = self.config.fence_time;
        self.answer(
            after,
            Event::Fenced {
                job,
                generation,
                site,
            },
        )
    }

    fn trigger_savepoint(
        &mut self,
        op: u64,
        job: JobId,
        generation: u64,
        site: SiteId,
    ) -> Option<Event> {
        self.trace_line(format!(
            "    -> TriggerSavepoint({job} gen {generation} in {site}, op {op})"
        ));
        self.log(
            EntryKind::Action,
            Some(&job),
            Some(&site),
            format!(
                "stop {job} generation {generation} in {site} with a savepoint (operation {op})"
            ),
        );
        let reachable = self.reachable(&site);
        let id = self.next_checkpoint_id.entry(job.clone()).or_insert(0);
        *id += 1;
        let id = *id;
        let now = self.now;
        let instance = self
            .sites
            .get_mut(&site)
            .and_then(|s| s.instances.get_mut(&(job.clone(), generation)));
        let taken = match instance {
            Some(i)
                if reachable && (i.state == InstanceState::Running || i.savepoint.is_some()) =>
            {
                let sp = i.savepoint.get_or_insert_with(|| CheckpointPointer {
                    site: site.clone(),
                    generation,
                    id,
                    path: format!("hdfs://{site}/savepoints/{}/sp-{id}", job.0),
                    completed_at: now,
                    kind: CheckpointKind::Savepoint,
                });
                i.state = InstanceState::Stopped;
                Some(sp.clone())
            }
            _ => None,
        };
        let after = self.config.savepoint_time;
        match taken {
            Some(sp) => {
                if self
                    .readable
                    .insert((job.clone(), site.clone(), sp.generation, sp.id))
                {
                    self.checkpoints.push(CheckpointRecord {
                        pointer: sp.clone(),
                        job: job.clone(),
                        replicated: Vec::new(),
                    });
                }
                self.stats.savepoints += 1;
                self.answer(
                    after,
                    Event::SavepointCompleted {
                        op,
                        job,
                        savepoint: sp,
                    },
                )
            }
            None => self.answer(
                after,
                Event::SavepointFailed {
                    op,
                    job,
                    reason: "not running".into(),
                },
            ),
        }
    }

    fn replicate_savepoint(
        &mut self,
        op: u64,
        job: JobId,
        savepoint: CheckpointPointer,
        to: SiteId,
    ) -> Option<Event> {
        self.trace_line(format!(
            "    -> ReplicateSavepoint({job} {} to {to}, op {op})",
            savepoint.path
        ));
        let both_up = self.site_is_up(&savepoint.site) && self.site_is_up(&to);
        if !both_up {
            // The driver retries replication until it succeeds.
            self.deferred.push(Command::ReplicateSavepoint {
                op,
                job,
                savepoint,
                to,
            });
            return None;
        }
        let replica = replica_of(&savepoint, &to);
        self.readable
            .insert((job.clone(), to, replica.generation, replica.id));
        let after = self.config.replication_delay;
        self.answer(after, Event::ReplicationCompleted { op, job, replica })
    }

    // ---- checkpoints and replication -------------------------------------------------------

    fn complete_checkpoint(
        &mut self,
        site: &SiteId,
        job: &JobId,
        generation: u64,
        completed_at: Timestamp,
    ) -> CheckpointPointer {
        let id = self.next_checkpoint_id.entry(job.clone()).or_insert(0);
        *id += 1;
        let c = CheckpointPointer {
            site: site.clone(),
            generation,
            id: *id,
            path: format!("hdfs://{site}/checkpoints/{}/g{generation}/chk-{id}", job.0),
            completed_at,
            kind: CheckpointKind::Checkpoint,
        };
        self.readable
            .insert((job.clone(), site.clone(), generation, c.id));
        self.checkpoints.push(CheckpointRecord {
            pointer: c.clone(),
            job: job.clone(),
            replicated: Vec::new(),
        });
        if let Some(i) = self
            .sites
            .get_mut(site)
            .and_then(|w| w.instances.get_mut(&(job.clone(), generation)))
        {
            i.latest_checkpoint = Some(ObservedCheckpoint {
                id: c.id,
                path: c.path.clone(),
                completed_at,
            });
        }
        c
    }

    /// Copies of `c` to every other site that is up, after the replication delay.
    fn schedule_replication(&mut self, job: &JobId, c: &CheckpointPointer) {
        let targets: Vec<SiteId> = self
            .sites
            .iter()
            .filter(|(o, w)| **o != c.site && w.up)
            .map(|(o, _)| o.clone())
            .collect();
        for to in targets {
            if self.config.replication_delay.is_zero() {
                self.replicate_checkpoint(job.clone(), c.clone(), to);
            } else {
                self.seq += 1;
                let at = plus(self.now, self.config.replication_delay);
                self.due.insert(
                    (at, self.seq),
                    Due::Replica {
                        job: job.clone(),
                        checkpoint: c.clone(),
                        to,
                    },
                );
            }
        }
    }

    /// The copy is verified in `to` now, if both sites are still up; the controller's
    /// replication driver tells the engine when it reaches `to`.
    fn replicate_checkpoint(&mut self, job: JobId, checkpoint: CheckpointPointer, to: SiteId) {
        if !(self.site_is_up(&checkpoint.site) && self.site_is_up(&to)) {
            return;
        }
        let replica = replica_of(&checkpoint, &to);
        self.readable
            .insert((job.clone(), to.clone(), replica.generation, replica.id));
        let now = self.now;
        if let Some(r) = self
            .checkpoints
            .iter_mut()
            .rev()
            .find(|r| r.pointer == checkpoint)
        {
            r.replicated.push((to.clone(), now));
        }
        if self.reachable(&to) {
            self.inbox
                .push(Event::CheckpointReplicated { job, replica });
        }
    }

    // ---- time ------------------------------------------------------------------------------

    /// Kubernetes' side of a dead node: once its last heartbeat is `task_manager_eviction`
    /// old, a TaskManager pod on it is evicted and scheduled on another live node of the
    /// site with room for it (its JobManager's node alive; a job whose JobManager died is
    /// the engine's to relaunch). Flink then restarts the job at once.
    fn reschedule_task_managers(&mut self) {
        let now = self.now;
        let eviction = self.config.task_manager_eviction;
        let jobs = &self.jobs;
        let demand = |job: &JobId, role: PodRole| {
            jobs.get(job).map_or(Resources::ZERO, |j| match role {
                PodRole::Jobmanager => j.spec.demand.job_manager,
                _ => j.spec.demand.task_manager,
            })
        };
        for w in self.sites.values_mut() {
            if !w.up {
                continue;
            }
            let evicted = |node: &str| {
                w.nodes.get(node).is_some_and(|n| {
                    !n.alive && crate::types::elapsed(n.last_heartbeat, now) >= eviction
                })
            };
            let mut moves: Vec<((JobId, u64), usize)> = Vec::new();
            for (k, i) in &w.instances {
                let jm_alive = i
                    .job_manager_node()
                    .is_some_and(|n| w.nodes.get(n).is_some_and(|n| n.alive));
                if i.held || !jm_alive {
                    continue;
                }
                for (index, p) in i.placement.pods.iter().enumerate() {
                    if p.role == PodRole::Taskmanager && evicted(&p.node) {
                        moves.push((k.clone(), index));
                    }
                }
            }
            for (key, index) in moves {
                let mut used: BTreeMap<String, Resources> = BTreeMap::new();
                for ((job, _), i) in &w.instances {
                    for p in &i.placement.pods {
                        *used.entry(p.node.clone()).or_insert(Resources::ZERO) +=
                            demand(job, p.role);
                    }
                }
                let need = demand(&key.0, PodRole::Taskmanager);
                let Some(node) = w
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.alive)
                    .find(|(name, n)| {
                        (used.get(*name).copied().unwrap_or(Resources::ZERO) + need)
                            .fits_in(&n.allocatable)
                    })
                    .map(|(name, _)| name.clone())
                else {
                    continue;
                };
                if let Some(i) = w.instances.get_mut(&key) {
                    i.placement.pods[index].node = node;
                    i.next_restart_at = now;
                }
            }
        }
    }

    /// Time passes: nodes heart-beat, Flink restarts and checkpoints, answers and replicas
    /// that are due arrive (for the next pass).
    fn evolve(&mut self, dt: Duration) {
        self.now = plus(self.now, dt);
        self.stats.steps += 1;
        let now = self.now;
        self.run_agents();
        self.refresh_visibility();
        self.reschedule_task_managers();
        let (recover, max_delay) = (self.flink_recovers, self.config.max_restart_delay);
        let mut checkpoints: Vec<(SiteId, JobId, u64, Timestamp)> = Vec::new();
        let jobs = &self.jobs;
        let interval_of = |job: &JobId| {
            jobs.get(job)
                .and_then(|j| j.checkpoint_interval)
                .unwrap_or(Duration::from_secs(60))
        };
        for (id, w) in &mut self.sites {
            if !w.up {
                continue;
            }
            for n in w.nodes.values_mut() {
                if n.alive {
                    n.last_heartbeat = now;
                }
            }
            let nodes_ok: BTreeMap<(JobId, u64), bool> = w
                .instances
                .iter()
                .map(|(k, i)| (k.clone(), w.all_alive(i)))
                .collect();
            for (k, i) in &mut w.instances {
                if i.held {
                    continue;
                }
                let alive = nodes_ok.get(k).copied().unwrap_or(false);
                let attempt_due = i.restart_delay.is_zero() || now >= i.next_restart_at;
                let back_off = |i: &mut Instance| {
                    i.restarts += 1;
                    i.next_restart_at = plus(now, i.restart_delay);
                    i.restart_delay = (i.restart_delay * 2).min(max_delay);
                };
                match i.state {
                    InstanceState::Starting if now >= i.ready_at => {
                        i.state = InstanceState::Running;
                    }
                    InstanceState::Running if !alive => {
                        i.state = InstanceState::Restarting;
                        back_off(i);
                    }
                    // Zombies and restarting jobs come up again on their own: that is the
                    // hazard fencing must beat.
                    InstanceState::Restarting if attempt_due && alive && recover => {
                        i.state = InstanceState::Running;
                    }
                    InstanceState::Restarting if attempt_due => back_off(i),
                    _ => {}
                }
                if i.state == InstanceState::Running
                    && let Some(at) = i.next_checkpoint_at
                    && at <= now
                {
                    let interval = interval_of(&k.0);
                    let mut next = at;
                    let mut last = at;
                    while next <= now {
                        last = next;
                        next = plus(next, interval);
                    }
                    i.next_checkpoint_at = Some(next);
                    checkpoints.push((id.clone(), k.0.clone(), k.1, last));
                } else if i.state != InstanceState::Running
                    && let Some(at) = i.next_checkpoint_at
                    && at <= now
                {
                    // No checkpoint while not running: the next one comes an interval after.
                    i.next_checkpoint_at = Some(plus(now, interval_of(&k.0)));
                }
            }
        }
        for (site, job, generation, at) in checkpoints {
            let replicate = self.jobs.get(&job).is_some_and(|j| j.replicate);
            let c = self.complete_checkpoint(&site, &job, generation, at);
            if replicate {
                self.schedule_replication(&job, &c);
            }
        }
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Due::Answer(e) => {
                    if let Event::LaunchSucceeded {
                        job,
                        generation,
                        site,
                    } = &e
                    {
                        self.launch_confirmed(job, *generation, site);
                    }
                    self.inbox.push(e);
                }
                Due::Replica {
                    job,
                    checkpoint,
                    to,
                } => self.replicate_checkpoint(job, checkpoint, to),
            }
        }
    }

    fn observe(&self, s: &SiteId) -> Option<SiteObservation> {
        let w = self.sites.get(s)?;
        Some(SiteObservation {
            site: s.clone(),
            observed_at: self.now,
            nodes: w
                .nodes
                .iter()
                .map(|(n, state)| NodeHeartbeat {
                    name: n.clone(),
                    last_heartbeat: Some(state.last_heartbeat),
                })
                .collect(),
            jobs: w
                .instances
                .iter()
                .map(|((j, g), i)| JobObserved {
                    job: j.clone(),
                    generation: *g,
                    state: match i.state {
                        InstanceState::Running => RunState::Running,
                        InstanceState::Starting | InstanceState::Restarting => RunState::Restarting,
                        InstanceState::Failed => RunState::Failed,
                        InstanceState::Stopped => RunState::Finished,
                    },
                    restarts: i.restarts,
                    job_manager_node: i.job_manager_node().map(str::to_string),
                    task_manager_nodes: i.task_manager_nodes(),
                    latest_checkpoint: i.latest_checkpoint.clone(),
                })
                .collect(),
        })
    }

    /// Never two running generations of one job.
    fn twice_running(&self) -> Vec<String> {
        let mut broken = Vec::new();
        for job in self.jobs.keys() {
            let running: Vec<String> = self
                .sites
                .iter()
                .flat_map(|(s, w)| {
                    w.instances
                        .iter()
                        .filter(|((j, _), i)| j == job && i.counts_as_running() && !i.held)
                        .map(move |((_, g), _)| format!("{s}/gen{g}"))
                })
                .collect();
            if running.len() > 1 {
                broken.push(format!("{job} runs twice: {}", running.join(", ")));
            }
        }
        broken
    }

    /// Whether `site` may host the job of `r` now (see [`World::check_liveness`]).
    fn may_host(&self, r: &crate::engine::JobRecord, site: &SiteId) -> bool {
        let Some(w) = self.sites.get(site) else {
            return false;
        };
        let spec = &r.spec;
        let own = site == &r.site;
        let may_move = own || spec.site_moves == crate::types::SiteMoves::Automatic;
        let never_checkpointed = r.latest_complete.is_empty() && r.latest_replicated.is_empty();
        let has_start = spec.mode == crate::types::FailoverMode::FreshStartAllowed
            || r.latest_replicated.contains_key(site)
            || own && (r.latest_complete.contains_key(site) || never_checkpointed);
        if !(self.observable(site)
            && !w.refuses_launches
            && spec.demand.sites.allows(site)
            && may_move
            && has_start)
        {
            return false;
        }
        let dead: BTreeSet<String> = w
            .nodes
            .iter()
            .filter(|(_, n)| !n.alive)
            .map(|(name, _)| name.clone())
            .collect();
        !self
            .place(site, std::slice::from_ref(&spec.demand), &dead)
            .placed
            .is_empty()
    }
}

fn short_record(r: &Record) -> String {
    match r {
        Record::Job(j) => format!("Persist({} gen {} {:?})", j.id(), j.generation, j.phase),
        other => format!("Persist({})", other.key()),
    }
}

fn short_event(e: &Event) -> String {
    match e {
        Event::JobsStored(jobs) => format!("JobsStored({} jobs)", jobs.len()),
        other => format!("{other:?}"),
    }
}

/// A command in one line, for the trace.
fn short(c: &Command) -> String {
    match c {
        Command::Persist(r) => short_record(r),
        Command::Audit(a) => format!("Audit({})", a.message),
        Command::Relaunch {
            job,
            generation,
            site,
            restore_from,
            ..
        } => {
            format!(
                "Relaunch({job} gen {generation} in {site} from {:?})",
                restore_from.as_ref().map(|r| (&r.site, r.generation, r.id))
            )
        }
        other => format!("{other:?}"),
    }
}
