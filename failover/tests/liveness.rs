//! The engine's liveness gaps the seeded simulation found (issue #14), each replayed on
//! its own through the production driver in `sim::World`: a job never waits without end
//! in an operation that cannot finish, and a site that keeps refusing launches gets one
//! generation per back-off, not one per answer.

mod common;

use std::time::Duration;

use common::*;
use failover::sim::{SimJob, World, WorldConfig};
use failover::*;
use scheduler::model::{JobPlacement, PodPlacement, PodRole, Priority, Resources, SiteId};

/// Two sites of one node each, quorum held, and `jobs` (name, home) running at home, each
/// allowed to start fresh anywhere.
fn world_with(config: EngineConfig, jobs: &[(&str, &str)]) -> World {
    let mut world = World::new(
        config,
        WorldConfig::instant(),
        ["a", "b"]
            .iter()
            .map(|s| {
                (
                    site(s),
                    vec![(format!("{s}-1"), Resources::new(16_000, 64 << 30, 110))],
                )
            })
            .collect(),
        t(0),
    );
    world.enable_trace();
    world.set_quorum(true);
    for (name, home) in jobs {
        let spec = spec(name, Priority::High, FailoverMode::FreshStartAllowed, home);
        let placement = JobPlacement {
            job: spec.demand.id.clone(),
            site: site(home),
            pods: vec![PodPlacement {
                role: PodRole::Jobmanager,
                index: 0,
                node: format!("{home}-1"),
            }],
        };
        world.add_job(
            SimJob {
                spec,
                checkpoint_interval: None,
                replicate: false,
            },
            placement,
            None,
        );
    }
    world
}

fn two_sites() -> EngineConfig {
    EngineConfig::new(vec![site("a"), site("b")])
}

/// Advances one second at a time, checking every invariant, until `done` holds; the
/// seconds it took, or `None` after `limit`.
fn seconds_until(world: &mut World, limit: u64, done: impl Fn(&World) -> bool) -> Option<u64> {
    for second in 1..=limit {
        world.advance(Duration::from_secs(1));
        assert!(
            world.check_invariants(),
            "{:?}\n{}",
            world.violations(),
            world.trace().join("\n")
        );
        if done(world) {
            return Some(second);
        }
    }
    None
}

fn runs_in(world: &World, s: &SiteId, n: usize) -> bool {
    world.running_generations(s).len() == n
}

fn phase(world: &World, name: &str) -> FailoverPhase {
    world.engine().job(&job(name)).unwrap().phase.clone()
}

/// Gap 1: site a is lost while b is cut off from the controller (alive, heard by its peer,
/// so never judged lost): the site-loss operation cannot move a's jobs. When a returns
/// they run at home again, within the liveness bound, and never twice.
#[test]
fn a_site_loss_whose_target_is_cut_off_gives_its_jobs_back_to_the_source_when_it_returns() {
    let mut world = world_with(two_sites(), &[("j0", "a"), ("j1", "a")]);
    world.partition(&site("b"), true);
    world.advance(Duration::from_secs(1));
    world.site_lost(&site("a"));
    let judged = seconds_until(&mut world, 60, |w| {
        w.engine()
            .site(&site("a"))
            .is_some_and(|s| matches!(s.status, SiteStatus::Lost { .. }))
    })
    .expect("a judged lost");
    // The operation cannot move them: it ends, and they say they run nowhere, and why.
    let FailoverPhase::Down { reason } = phase(&world, "j0") else {
        panic!("{:?}", phase(&world, "j0"));
    };
    assert!(reason.contains("b does not answer"), "{reason}");
    assert!(world.engine().operations().all(|o| !o.is_active()));
    // Both jobs wait: their target does not answer.
    assert_eq!(
        seconds_until(&mut world, 20, |w| !w
            .running_generations(&site("b"))
            .is_empty()),
        None
    );
    world.site_returns(&site("a"));
    let home_after = seconds_until(&mut world, 150, |w| runs_in(w, &site("a"), 2))
        .expect("a's jobs run at home again once a is back, although b still does not answer");
    assert!(
        world.engine().operations().all(|o| !o.is_active()),
        "the site-loss operation is over: {:?}",
        world.engine().operations().collect::<Vec<_>>()
    );
    assert_eq!(phase(&world, "j0"), FailoverPhase::Running);
    println!(
        "a judged lost after {judged} s; its jobs ran at home {home_after} s after it returned"
    );
    // b heals later: nothing moves, nothing runs twice.
    world.heal(Some(&site("b")));
    assert_eq!(
        seconds_until(&mut world, 60, |w| !runs_in(w, &site("a"), 2)),
        None
    );
}

/// Gap 2: both sites go dark together. The site-loss operation of a (towards b) ends, the
/// jobs say they run nowhere and why, and when a site returns they run there again.
#[test]
fn both_sites_lost_during_an_operation_end_it_and_the_jobs_run_again_when_one_returns() {
    // Moves wait for their pace (none at once, one a second) and b's node counts as alive
    // for a minute, so that b is found lost too while a's jobs wait in the operation.
    let mut config = two_sites();
    config.launch_burst = 0;
    config.launch_rate = 1;
    config.node_grace = Duration::from_secs(60);
    let mut world = world_with(config, &[("j0", "a"), ("j1", "b")]);
    world.advance(Duration::from_secs(1));
    world.site_lost(&site("a"));
    world.advance(Duration::from_secs(1));
    world.site_lost(&site("b"));
    let both_lost = |w: &World| {
        ["a", "b"].iter().all(|s| {
            w.engine()
                .site(&site(s))
                .is_some_and(|r| matches!(r.status, SiteStatus::Lost { .. }))
        })
    };
    seconds_until(&mut world, 60, both_lost).expect("both judged lost");
    seconds_until(&mut world, 10, |w| {
        w.engine().operations().all(|o| !o.is_active())
    })
    .expect("no operation waits for a lost target");
    for name in ["j0", "j1"] {
        let FailoverPhase::Down { reason } = phase(&world, name) else {
            panic!("{name} should be down: {:?}", phase(&world, name));
        };
        assert!(reason.contains("lost"), "{name}: {reason}");
    }
    world.site_returns(&site("b"));
    let revived = seconds_until(&mut world, 150, |w| runs_in(w, &site("b"), 2))
        .expect("both jobs run in b once it returns (j0 may start fresh there)");
    println!("both jobs ran in b {revived} s after it returned");
}

/// Gap 3: every site refuses every launch. A failed job is tried again with a back-off
/// (1 s doubling up to `down_retry`), not within the same pass: over ten minutes the
/// generations grow by at most one per try, and the job says why it runs nowhere. Leader
/// crashes in between start the back-off again but never loop.
#[test]
fn a_site_that_always_refuses_launches_gets_one_generation_per_retry_not_one_per_answer() {
    let mut world = world_with(two_sites(), &[("j0", "a")]);
    world.set_flink_recovers(false);
    world.advance(Duration::from_secs(1));
    world.refuse_launches(&site("a"), true);
    world.refuse_launches(&site("b"), true);
    let first = world.engine().job(&job("j0")).unwrap().generation;
    world.job_fails(&job("j0"), Some(&site("a")));
    let minutes = 10;
    let mut crashes = 0;
    for second in 1..=minutes * 60 {
        world.advance(Duration::from_secs(1));
        assert!(world.check_invariants(), "{:?}", world.violations());
        let so_far = world.engine().job(&job("j0")).unwrap().generation - first;
        assert!(
            so_far <= 2 + second,
            "{so_far} generations after {second} s"
        );
        if second % 120 == 0 {
            world.crash_leader();
            crashes += 1;
        }
    }
    let grown = world.engine().job(&job("j0")).unwrap().generation - first;
    // Back-off 1 + 2 + 4 + 8 + 16 s, then every 30 s: at most 5 + 600 / 30 tries; a new
    // leader keeps the back-off (it was persisted), so crashes add none.
    let bound = 5 + minutes * 60 / 30;
    println!(
        "{grown} generations in {minutes} min under a refusing target ({crashes} leader crashes; bound {bound})"
    );
    assert!(grown >= 5, "the job is still tried: {grown}");
    assert!(grown <= bound, "{grown} generations > {bound}");
    let FailoverPhase::Down { reason } = phase(&world, "j0") else {
        panic!("{:?}", phase(&world, "j0"));
    };
    assert!(
        reason.contains("refused") && reason.contains("admission refused the launch"),
        "{reason}"
    );
    // The refusal ends: the job runs within one retry interval.
    world.refuse_launches(&site("a"), false);
    world.refuse_launches(&site("b"), false);
    let ran = seconds_until(&mut world, 31, |w| {
        w.running_generations(&site("a")).len() + w.running_generations(&site("b")).len() == 1
    });
    assert!(
        ran.is_some(),
        "runs again within down_retry: {:?}",
        phase(&world, "j0")
    );
}

/// Issue #14 part 3(e): the node of a job's only TaskManager dies while its JobManager's
/// node lives. Kubernetes evicts the pod after its toleration (30 s) and schedules it on
/// another node; Flink restarts the job there, and it runs again within 60 s of the node's
/// last heartbeat, as the same generation (no relaunch, nothing restored). Engine and
/// world at their defaults (10 s launches, Flink's restart back-off).
#[test]
fn a_job_whose_task_manager_node_dies_runs_again_on_another_node_within_a_minute() {
    let nodes = |s: &str| {
        (1..=3)
            .map(|i| (format!("{s}-{i}"), Resources::new(16_000, 64 << 30, 110)))
            .collect()
    };
    let mut world = World::new(
        two_sites(),
        WorldConfig::default(),
        vec![(site("a"), nodes("a")), (site("b"), nodes("b"))],
        t(0),
    );
    world.enable_trace();
    world.set_quorum(true);
    let spec = spec("j0", Priority::High, FailoverMode::RestoreRequired, "a");
    let pod = |role, node: &str| PodPlacement {
        role,
        index: 0,
        node: node.into(),
    };
    world.add_job(
        SimJob {
            spec,
            checkpoint_interval: Some(Duration::from_secs(10)),
            replicate: true,
        },
        JobPlacement {
            job: job("j0"),
            site: site("a"),
            pods: vec![
                pod(PodRole::Jobmanager, "a-1"),
                pod(PodRole::Taskmanager, "a-2"),
            ],
        },
        Some(t(10)),
    );
    world.advance(Duration::from_secs(30));
    let last_heartbeat = world.elapsed();
    world.node_lost(&site("a"), "a-2");
    world.advance(Duration::from_secs(1));
    assert!(
        world.running_generations(&site("a")).is_empty(),
        "its TaskManager is gone"
    );
    let back = seconds_until(&mut world, 120, |w| {
        !w.running_generations(&site("a")).is_empty()
    })
    .expect("runs again");
    let after_heartbeat = world.elapsed() - last_heartbeat;
    println!(
        "ran again {} s after the node's last heartbeat",
        after_heartbeat.as_secs()
    );
    assert!(
        after_heartbeat <= Duration::from_secs(60),
        "{after_heartbeat:?} ({back} s)"
    );
    assert_eq!(world.running_generations(&site("a")), vec![(job("j0"), 1)]);
    assert!(
        world.recoveries().is_empty(),
        "no relaunch: {:?}",
        world.recoveries()
    );
}
