//! Deterministic simulation of the failover engine in a fake two-site world, on a virtual
//! clock. Pure: no I/O, no wall clock; the same scenario (or seed) gives the same run.
//!
//! - [`World`] executes the real [`crate::Engine`]'s commands: nodes, Flink generations,
//!   checkpoints and their replication, site outages with zombies, controller partitions,
//!   quorum, leader crashes part-way through a command list. It checks the invariants after
//!   every step and records a timeline, RTO/RPO per relaunch, and violations.
//! - [`Scenario`] is the YAML format (`failover/scenarios/README.md`): sites, jobs, engine
//!   knobs, a seed, duration and step, and timed events. [`run`] plays one and returns an
//!   [`Outcome`]; `twinsite simulate --scenario FILE` prints it.
//! - Placement is the scheduler's own (`scheduler::placement::plan`, through
//!   [`crate::placer::SchedulerPlacer`]) over the world's live nodes, so capacity, preemption of best-effort
//!   jobs and "does not fit" reasons are the ones the controller would see.
//!
//! The seeded random property run (`failover/tests/simulation.rs`) drives the same world.

mod report;
mod scenario;
mod world;

#[cfg(test)]
mod tests;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::model::{JobPlacement, PodPlacement, PodRole};

pub use report::{
    CheckpointRecord, EntryKind, JobEnd, NotRelaunched, Outcome, Recovery, Stats, TimelineEntry,
    Violation, fmt_duration, fmt_offset,
};
pub use scenario::{
    Action, Dur, EngineKnobs, EventSpec, JobPlan, JobSpecYaml, Plan, Scenario, ScenarioError,
    SiteSpec, WorldKnobs,
};
pub use world::{CrashTrigger, LIVENESS_BOUND, SIM_AGENT_TIMING, SimJob, World, WorldConfig};

use crate::engine::Event;
use crate::types::{JobSpec, Timestamp};

/// The instant virtual time starts at (any fixed instant would do).
pub fn epoch() -> Timestamp {
    chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() // 2026-01-01T00:00:00Z
}

/// Parses, checks and runs a scenario written in YAML; `source` names it in errors.
pub fn run_yaml(source: &str, yaml: &str) -> Result<Outcome, ScenarioError> {
    let plan = Scenario::parse(source, yaml)?.plan()?;
    run(&plan)
}

/// Builds the world of `plan` at its start: every job running as generation 1 in its site
/// (pinned, or placed by the scheduler), with one checkpoint already taken, and the quorum
/// as the scenario says.
pub fn start(plan: &Plan) -> Result<World, ScenarioError> {
    let start = epoch();
    let mut world = World::new(plan.engine.clone(), plan.world, plan.sites.clone(), start);
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    world.set_quorum(plan.quorum);
    let not_fitting = |job: &JobPlan, reason: String| ScenarioError {
        file: plan.source.clone(),
        line: job.line,
        column: None,
        field: Some("jobs".into()),
        message: format!(
            "job {} does not fit in its site at the start: {reason}",
            job.demand.id
        ),
    };
    let site_of = |job: &JobPlan| {
        job.demand
            .sites
            .preferred
            .clone()
            .unwrap_or_else(|| scheduler::model::SiteId(String::new()))
    };
    // Pinned jobs first, then the others placed by the scheduler, most important first.
    let mut placements: Vec<(usize, JobPlacement)> = Vec::new();
    for (i, job) in plan.jobs.iter().enumerate() {
        let Some((jm, tms)) = job.nodes.split_first() else {
            continue;
        };
        let mut pods = vec![PodPlacement {
            role: PodRole::Jobmanager,
            index: 0,
            node: jm.clone(),
        }];
        pods.extend(tms.iter().enumerate().map(|(k, n)| PodPlacement {
            role: PodRole::Taskmanager,
            index: k as u32,
            node: n.clone(),
        }));
        placements.push((
            i,
            JobPlacement {
                job: job.demand.id.clone(),
                site: site_of(job),
                pods,
            },
        ));
    }
    let mut phases = Vec::new();
    for job in &plan.jobs {
        let interval = job.checkpoint_interval.as_millis().max(1) as u64;
        phases.push(Duration::from_millis(rng.random_range(0..interval)));
    }
    let add = |world: &mut World, i: usize, placement: JobPlacement| {
        let job = &plan.jobs[i];
        let phase = phases[i];
        let last = start - chrono::Duration::from_std(phase).unwrap_or_default();
        let next = last + chrono::Duration::from_std(job.checkpoint_interval).unwrap_or_default();
        let site = placement.site.clone();
        world.add_job(
            SimJob {
                spec: JobSpec {
                    demand: job.demand.clone(),
                    mode: job.mode,
                    site_moves: job.site_moves,
                    jar_missing: Default::default(),
                },
                checkpoint_interval: Some(job.checkpoint_interval),
                replicate: job.replicate,
            },
            placement,
            Some(next),
        );
        world.complete_checkpoint(&site, &job.demand.id, 1, last, job.replicate);
    };
    for (i, placement) in placements {
        add(&mut world, i, placement);
    }
    for (site, _) in &plan.sites {
        let mut todo: Vec<usize> = (0..plan.jobs.len())
            .filter(|&i| plan.jobs[i].nodes.is_empty() && &site_of(&plan.jobs[i]) == site)
            .collect();
        todo.sort_by(|&a, &b| {
            let (a, b) = (&plan.jobs[a].demand, &plan.jobs[b].demand);
            b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id))
        });
        let demands: Vec<_> = todo.iter().map(|&i| plan.jobs[i].demand.clone()).collect();
        let outcome = world.place(site, &demands);
        for i in todo {
            let job = &plan.jobs[i];
            match outcome.placed.iter().find(|p| p.job == job.demand.id) {
                Some(p) => add(&mut world, i, p.clone()),
                None => {
                    let reason = outcome
                        .not_fitting
                        .iter()
                        .find(|n| n.job == job.demand.id)
                        .map_or("the scheduler placed it nowhere".to_string(), |n| {
                            n.reason.clone()
                        });
                    return Err(not_fitting(job, reason));
                }
            }
        }
    }
    let counts: Vec<String> = plan
        .sites
        .iter()
        .map(|(s, nodes)| {
            let jobs = plan.jobs.iter().filter(|j| &site_of(j) == s).count();
            format!(
                "{s}: {} nodes, {jobs} job{}",
                nodes.len(),
                if jobs == 1 { "" } else { "s" }
            )
        })
        .collect();
    world.note(format!(
        "start: {}; quorum with the witness {}",
        counts.join("; "),
        if plan.quorum { "held" } else { "not held" }
    ));
    Ok(world)
}

/// Applies one scenario event to the world now.
pub fn apply(world: &mut World, action: &Action) {
    world.note(action.to_string());
    match action {
        Action::NodeLost { site, node } => world.node_lost(site, node),
        Action::NodeReturns { site, node } => world.node_returns(site, node),
        Action::SiteLost(s) => world.site_lost(s),
        Action::SiteReturns(s) => world.site_returns(s),
        Action::Partition { site, peer_sees } => world.partition(site, *peer_sees),
        Action::Heal(site) => world.heal(site.as_ref()),
        Action::Quorum(q) => world.set_quorum(*q),
        Action::LeaderCrash(None) => world.crash_leader(),
        Action::LeaderCrash(Some(trigger)) => world.arm_crash(*trigger),
        Action::JobFails(job) => world.job_fails(job, None),
        Action::ReplicationDelay(d) => world.config_mut().replication_delay = *d,
        Action::Ops(request) => world.deliver(Event::OpsRequest(request.clone())),
    }
}

/// Runs a checked scenario to its end: events at their time, the clock in steps, the
/// invariants after every step.
pub fn run(plan: &Plan) -> Result<Outcome, ScenarioError> {
    let mut world = start(plan)?;
    let mut events = plan.events.iter().peekable();
    loop {
        let now = world.elapsed();
        while let Some((_, action)) = events.next_if(|(at, _)| *at <= now) {
            apply(&mut world, action);
        }
        if now >= plan.duration {
            break;
        }
        world.advance(plan.step.min(plan.duration - now));
        world.check_invariants();
    }
    Ok(world.into_outcome(plan.name.clone(), plan.seed, plan.duration, plan.step))
}
