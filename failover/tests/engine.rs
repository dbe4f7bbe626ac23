//! Engine tests in openraft's style: feed events at given instants, compare the commands.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use failover::*;
use scheduler::model::Priority;

struct Harness {
    engine: Engine,
    placer: TestPlacer,
    /// Latest persisted record per key, as a driver's store would hold them.
    store: BTreeMap<String, Record>,
}

impl Harness {
    fn new(adjust: impl FnOnce(&mut EngineConfig)) -> Self {
        let mut config = EngineConfig::new(vec![site("a"), site("b")]);
        adjust(&mut config);
        let mut h = Harness {
            engine: Engine::new(config, t(0)),
            placer: TestPlacer::default(),
            store: BTreeMap::new(),
        };
        h.step(Event::QuorumChanged(true), t(0));
        h
    }

    fn step(&mut self, event: Event, at: Timestamp) -> Vec<Command> {
        let commands = self.engine.step(event, at, &self.placer);
        for c in &commands {
            if let Command::Persist(r) = c {
                self.store.insert(key(r), r.clone());
            }
        }
        commands
    }

    fn step_all(&mut self, events: Vec<Event>, at: Timestamp) -> Vec<Command> {
        let commands = self.engine.step_all(events, at, &self.placer);
        for c in &commands {
            if let Command::Persist(r) = c {
                self.store.insert(key(r), r.clone());
            }
        }
        commands
    }

    fn act(&mut self, event: Event, at: Timestamp) -> Vec<Command> {
        actions(&self.step(event, at))
    }

    fn register(&mut self, name: &str, priority: Priority, mode: FailoverMode, at_site: &str) {
        self.step(
            Event::JobRegistered {
                spec: Box::new(spec(name, priority, mode, at_site)),
                site: site(at_site),
                generation: 1,
            },
            t(0),
        );
    }

    fn complete(&mut self, name: &str, c: CheckpointPointer) {
        self.step(
            Event::CheckpointCompleted {
                job: job(name),
                checkpoint: c,
            },
            t(0),
        );
    }

    fn replicated(&mut self, name: &str, c: CheckpointPointer) {
        self.step(
            Event::CheckpointReplicated {
                job: job(name),
                replica: c,
            },
            t(0),
        );
    }

    /// A snapshot of `at_site` at `at`: nodes `<site>-1..3`, heart-beating at `at` unless
    /// listed in `silent_since`. Returns the actions it led to.
    fn observe(
        &mut self,
        at_site: &str,
        at: Timestamp,
        silent_since: &[(usize, Timestamp)],
        jobs: Vec<JobObserved>,
    ) -> Vec<Command> {
        actions(&self.observe_all(at_site, at, silent_since, jobs))
    }

    /// `observe`, returning every command (writes and audits too).
    fn observe_all(
        &mut self,
        at_site: &str,
        at: Timestamp,
        silent_since: &[(usize, Timestamp)],
        jobs: Vec<JobObserved>,
    ) -> Vec<Command> {
        let nodes = (1..=3)
            .map(|i| NodeHeartbeat {
                name: format!("{at_site}-{i}"),
                last_heartbeat: Some(
                    silent_since
                        .iter()
                        .find(|(n, _)| *n == i)
                        .map_or(at, |(_, since)| *since),
                ),
            })
            .collect();
        self.step(
            Event::SnapshotObserved(SiteObservation {
                site: site(at_site),
                observed_at: at,
                nodes,
                jobs,
            }),
            at,
        )
    }

    /// Peer reports for both sites; returns the actions they led to (ticks judge too).
    fn keep_alive(&mut self, at: Timestamp) -> Vec<Command> {
        let mut acted = Vec::new();
        for s in ["a", "b"] {
            acted.extend(self.act(
                Event::PeerReport {
                    site: site(s),
                    last_contact: at,
                },
                at,
            ));
        }
        acted
    }
}

fn key(r: &Record) -> String {
    match r {
        Record::Job(j) => format!("job/{}", j.id()),
        Record::Site(s) => format!("site/{}", s.id),
        Record::Operation(o) => format!("op/{}", o.id),
    }
}

fn observed(
    name: &str,
    generation: u64,
    state: RunState,
    restarts: u32,
    jm: &str,
    tm: &str,
) -> JobObserved {
    JobObserved {
        job: job(name),
        generation,
        state,
        restarts,
        job_manager_node: Some(jm.to_string()),
        task_manager_nodes: vec![tm.to_string()],
        latest_checkpoint: None,
    }
}

fn fence(name: &str, generation: u64, at_site: &str) -> Command {
    Command::Fence {
        job: job(name),
        generation,
        site: site(at_site),
    }
}

fn fenced(name: &str, generation: u64, at_site: &str) -> Event {
    Event::Fenced {
        job: job(name),
        generation,
        site: site(at_site),
    }
}

fn relaunches(commands: &[Command]) -> Vec<(String, u64, String, Option<u64>)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Relaunch {
                job,
                generation,
                site,
                restore_from,
                ..
            } => Some((
                job.0.clone(),
                *generation,
                site.0.clone(),
                restore_from.as_ref().map(|r| r.id),
            )),
            _ => None,
        })
        .collect()
}

fn reports(commands: &[Command]) -> Vec<RecoveryReport> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::ReportRecovery(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lost_jobmanager_node_is_fenced_after_the_grace_and_not_before_then_relaunched_from_the_latest_complete_checkpoint()
 {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.complete("j1", checkpoint("a", 1, 4, t(-10)));
    h.complete("j1", checkpoint("a", 1, 5, t(-3)));
    let running = || vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")];
    for at in [0, 10, 20] {
        assert_eq!(h.keep_alive(t(at)), vec![], "at {at} s");
        assert_eq!(
            h.observe("a", t(at), &[(1, t(0))], running()),
            vec![],
            "at {at} s"
        );
    }
    let mut acted = h.observe("a", t(21), &[(1, t(0))], running());
    acted.extend(h.keep_alive(t(21)));
    assert_eq!(acted, vec![fence("j1", 1, "a")]);

    let after_fence = h.act(fenced("j1", 1, "a"), t(22));
    let restore = checkpoint("a", 1, 5, t(-3));
    assert_eq!(
        after_fence,
        vec![
            Command::Relaunch {
                job: job("j1"),
                generation: 2,
                site: site("a"),
                placement: placement(&job("j1"), &site("a"), "a-2"),
                restore_from: Some(restore.clone()),
                reason: RelaunchReason::JobManagerNodeLost { node: "a-1".into() },
            },
            Command::ReportRecovery(RecoveryReport {
                job: job("j1"),
                generation: 2,
                site: site("a"),
                reason: RelaunchReason::JobManagerNodeLost { node: "a-1".into() },
                op: None,
                restore_from: Some(restore),
                rto_from_detection: Duration::from_secs(1),
                // The node's last heartbeat (0 s) is the failure: 3 s after the
                // checkpoint are lost; the 22 s until the relaunch are its delay.
                rto_from_last_heartbeat: Some(Duration::from_secs(22)),
                rpo: Some(Duration::from_secs(3)),
            }),
        ]
    );
}

#[test]
fn a_taskmanager_only_loss_is_left_to_flink_until_the_recovery_bound() {
    let mut h = Harness::new(|c| c.task_manager_recovery_bound = Duration::from_secs(180));
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.complete("j1", checkpoint("a", 1, 5, t(0)));
    let restarting = || vec![observed("j1", 1, RunState::Restarting, 2, "a-1", "a-2")];
    for at in (21..=191).step_by(10).chain([200]) {
        assert_eq!(h.keep_alive(t(at)), vec![], "at {at} s");
        assert_eq!(
            h.observe("a", t(at), &[(2, t(0))], restarting()),
            vec![],
            "at {at} s"
        );
    }
    let mut acted = h.observe("a", t(201), &[(2, t(0))], restarting());
    acted.extend(h.keep_alive(t(201)));
    assert_eq!(acted, vec![fence("j1", 1, "a")]);
    let relaunch = h.act(fenced("j1", 1, "a"), t(202));
    assert_eq!(
        relaunches(&relaunch),
        vec![("ns/j1".into(), 2, "a".into(), Some(5))]
    );
    assert_eq!(
        reports(&relaunch)[0].rto_from_detection,
        Duration::from_secs(181)
    );
}

#[test]
fn a_taskmanager_loss_flink_recovers_from_is_never_relaunched() {
    let mut h = Harness::new(|c| c.task_manager_recovery_bound = Duration::from_secs(180));
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    let mut acted = Vec::new();
    for at in (21..=301).step_by(10) {
        // Flink moved the TaskManager from the lost node a-2 to a-3 by 51 s.
        let (state, tm) = if at < 51 {
            (RunState::Restarting, "a-2")
        } else {
            (RunState::Running, "a-3")
        };
        acted.extend(h.keep_alive(t(at)));
        acted.extend(h.observe(
            "a",
            t(at),
            &[(2, t(0))],
            vec![observed("j1", 1, state, 1, "a-1", tm)],
        ));
    }
    assert_eq!(acted, vec![]);
    assert_eq!(h.engine.job(&job("j1")).map(|r| r.generation), Some(1));
}

#[test]
fn a_crash_looping_job_is_relaunched_in_its_site_then_after_n_failures_in_the_other_site_from_the_latest_replicated_checkpoint()
 {
    let mut h = Harness::new(|c| c.relaunches_before_other_site = 2);
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.replicated("j1", checkpoint("b", 1, 4, t(-5)));
    h.complete("j1", checkpoint("a", 1, 5, t(0)));
    let mut seen = Vec::new();
    for (generation, at) in [(1u64, 10i64), (2, 20), (3, 30)] {
        h.keep_alive(t(at));
        let failed = vec![observed(
            "j1",
            generation,
            RunState::Failed,
            3,
            "a-1",
            "a-2",
        )];
        assert_eq!(
            h.observe("a", t(at), &[], failed),
            vec![fence("j1", generation, "a")]
        );
        let relaunch = h.act(fenced("j1", generation, "a"), t(at + 1));
        seen.extend(relaunches(&relaunch));
    }
    assert_eq!(
        seen,
        vec![
            ("ns/j1".into(), 2, "a".into(), Some(5)),
            ("ns/j1".into(), 3, "a".into(), Some(5)),
            ("ns/j1".into(), 4, "b".into(), Some(4)),
        ]
    );
}

#[test]
fn a_site_unreachable_without_quorum_is_never_failed_over_until_quorum_returns() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "b");
    h.replicated("j1", checkpoint("a", 1, 4, t(0)));
    h.observe("b", t(0), &[], vec![]);
    h.step(Event::QuorumChanged(false), t(1));
    let mut all = Vec::new();
    for at in (10..=300).step_by(10) {
        all.extend(h.step(Event::Tick, t(at)));
        all.extend(h.observe("a", t(at), &[], vec![]));
    }
    assert!(
        !all.iter()
            .any(|c| matches!(c, Command::MarkSiteLost { .. }))
    );
    assert_eq!(actions(&all), vec![]);
    let refusals = all
        .iter()
        .filter(|c| matches!(c, Command::Audit(a) if a.message.contains("no quorum")))
        .count();
    assert_eq!(
        refusals, 1,
        "the refusal is audited once, not on every tick"
    );

    let with_quorum = h.act(Event::QuorumChanged(true), t(301));
    assert_eq!(
        with_quorum.first(),
        Some(&Command::MarkSiteLost {
            site: site("b"),
            epoch: 1
        })
    );
}

fn lose_site_b(h: &mut Harness) -> Vec<Command> {
    actions(&lose_site_b_all(h))
}

/// `lose_site_b`, returning every command of the pass that judges the loss.
fn lose_site_b_all(h: &mut Harness) -> Vec<Command> {
    h.register(
        "j-normal",
        Priority::Normal,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.register(
        "j-crit",
        Priority::Critical,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.register("j-high", Priority::High, FailoverMode::RestoreRequired, "b");
    h.register(
        "j-norep",
        Priority::Normal,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.register(
        "j-fresh",
        Priority::BestEffort,
        FailoverMode::FreshStartAllowed,
        "b",
    );
    h.replicated("j-normal", checkpoint("a", 1, 8, t(40)));
    h.complete("j-normal", checkpoint("b", 1, 10, t(50)));
    h.replicated("j-crit", checkpoint("a", 1, 3, t(30)));
    h.replicated("j-high", checkpoint("a", 1, 7, t(45)));
    h.complete("j-norep", checkpoint("b", 1, 2, t(20)));
    h.observe("b", t(60), &[], vec![]);
    h.observe("a", t(60), &[], vec![]);
    assert_eq!(
        h.observe("a", t(90), &[], vec![]),
        vec![],
        "30 s of silence is still within the grace"
    );
    h.observe_all("a", t(91), &[], vec![])
}

#[test]
fn a_site_lost_with_quorum_is_marked_then_its_jobs_relaunch_in_priority_order_from_the_latest_replicated_checkpoint()
 {
    let mut h = Harness::new(|_| {});
    let commands = lose_site_b(&mut h);
    assert_eq!(
        commands.first(),
        Some(&Command::MarkSiteLost {
            site: site("b"),
            epoch: 1
        })
    );
    assert_eq!(
        relaunches(&commands),
        vec![
            ("ns/j-crit".into(), 2, "a".into(), Some(3)),
            ("ns/j-high".into(), 2, "a".into(), Some(7)),
            // 8, replicated: never 10, complete in the lost site only.
            ("ns/j-normal".into(), 2, "a".into(), Some(8)),
            ("ns/j-fresh".into(), 2, "a".into(), None),
        ]
    );
    assert!(commands.contains(&Command::ReportNotRelaunched {
        job: job("j-norep"),
        reason: "no checkpoint replicated to a and the job must restore from one".into(),
        missing: scheduler::model::Resources::ZERO,
    }));
    let normal = reports(&commands)
        .into_iter()
        .find(|r| r.job == job("j-normal"));
    let normal = normal.unwrap();
    // Lost: from its checkpoint (40 s) to the site's last sign of life (60 s); the 31 s
    // after that until the relaunch are the relaunch delay, not data lost.
    assert_eq!(normal.rpo, Some(Duration::from_secs(20)));
    assert_eq!(
        normal.rto_from_last_heartbeat,
        Some(Duration::from_secs(31))
    );
    assert_eq!(normal.rto_from_detection, Duration::ZERO);
    let fresh = reports(&commands)
        .into_iter()
        .find(|r| r.job == job("j-fresh"));
    assert_eq!(
        fresh.unwrap().rpo,
        None,
        "a fresh start has no bounded data loss"
    );
}

#[test]
fn a_planned_switchover_savepoints_fences_replicates_then_launches_with_zero_rpo() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.keep_alive(t(10));
    let failover = OpsRequest::Failover {
        from: site("a"),
        to: site("b"),
        mode: MoveMode::Planned,
        dry_run: false,
    };
    assert_eq!(
        h.act(Event::OpsRequest(failover.clone()), t(10)),
        vec![
            Command::TriggerSavepoint {
                op: 1,
                job: job("j1"),
                generation: 1,
                site: site("a")
            },
            // The request's answer names the operation it started.
            Command::Accepted {
                request: failover,
                op: 1
            },
        ]
    );
    let mut sp = checkpoint("a", 1, 9, t(11));
    sp.kind = RestorePointKind::Savepoint;
    assert_eq!(
        h.act(
            Event::SavepointCompleted {
                op: 1,
                job: job("j1"),
                savepoint: sp.clone()
            },
            t(11)
        ),
        vec![fence("j1", 1, "a")]
    );
    assert_eq!(
        h.act(fenced("j1", 1, "a"), t(12)),
        vec![Command::ReplicateSavepoint {
            op: 1,
            job: job("j1"),
            savepoint: sp.clone(),
            to: site("b")
        }]
    );
    let mut replica = sp.clone();
    replica.site = site("b");
    let launch = h.act(
        Event::ReplicationCompleted {
            op: 1,
            job: job("j1"),
            replica: replica.clone(),
        },
        t(13),
    );
    assert_eq!(
        launch.first(),
        Some(&Command::Relaunch {
            job: job("j1"),
            generation: 2,
            site: site("b"),
            placement: placement(&job("j1"), &site("b"), "b-1"),
            restore_from: Some(replica),
            reason: RelaunchReason::Operation { op: 1 },
        })
    );
    let report = &reports(&launch)[0];
    assert_eq!(report.rpo, Some(Duration::ZERO));
    assert_eq!(report.rto_from_detection, Duration::from_secs(3));
    h.act(
        Event::LaunchSucceeded {
            job: job("j1"),
            generation: 2,
            site: site("b"),
        },
        t(14),
    );
    assert_eq!(
        h.engine.operation(1).map(|o| o.state.clone()),
        Some(OpState::Done)
    );
    assert_eq!(
        h.engine
            .job(&job("j1"))
            .map(|r| (r.site.clone(), r.phase.clone())),
        Some((site("b"), FailoverPhase::Running))
    );
}

#[test]
fn a_dry_run_returns_the_whole_plan_and_changes_nothing() {
    let mut h = Harness::new(|_| {});
    h.register(
        "j-low",
        Priority::BestEffort,
        FailoverMode::RestoreRequired,
        "a",
    );
    h.register(
        "j-crit",
        Priority::Critical,
        FailoverMode::RestoreRequired,
        "a",
    );
    h.register("j-big", Priority::High, FailoverMode::RestoreRequired, "a");
    h.register(
        "j-norep",
        Priority::High,
        FailoverMode::RestoreRequired,
        "a",
    );
    for name in ["j-low", "j-crit", "j-big"] {
        h.replicated(name, checkpoint("b", 1, 3, t(5)));
    }
    h.placer.refuse.insert(job("j-big"));
    h.keep_alive(t(20));
    let before = h.engine.records();
    let commands = h.step(
        Event::OpsRequest(OpsRequest::Failover {
            from: site("a"),
            to: site("b"),
            mode: MoveMode::Forced,
            dry_run: true,
        }),
        t(20),
    );
    assert!(commands.iter().all(|c| !is_mutating(c)), "{commands:?}");
    assert_eq!(h.engine.records(), before);
    let [Command::ReportPlan(plan)] = commands.as_slice() else {
        panic!("expected exactly one plan, got {commands:?}");
    };
    let moves: Vec<_> = plan
        .moves
        .iter()
        .map(|m| (m.job.0.as_str(), m.expected_rpo))
        .collect();
    assert_eq!(
        moves,
        vec![
            ("ns/j-crit", Some(Duration::from_secs(15))),
            ("ns/j-low", Some(Duration::from_secs(15)))
        ]
    );
    let not_fitting: Vec<_> = plan
        .not_fitting
        .iter()
        .map(|n| (n.job.0.as_str(), n.reason.as_str(), n.missing.cpu_milli))
        .collect();
    assert_eq!(
        not_fitting,
        vec![
            (
                "ns/j-norep",
                "no checkpoint replicated to b and the job must restore from one",
                0
            ),
            ("ns/j-big", "does not fit in b: not enough cpu", 3000),
        ]
    );
}

#[test]
fn cancelling_mid_operation_leaves_every_job_running_exactly_once() {
    let mut h = Harness::new(|c| c.max_in_flight = 1);
    for (name, p) in [
        ("j1", Priority::Critical),
        ("j2", Priority::Normal),
        ("j3", Priority::Normal),
    ] {
        h.register(name, p, FailoverMode::RestoreRequired, "a");
    }
    h.keep_alive(t(10));
    let mut all = h.act(
        Event::OpsRequest(OpsRequest::Failover {
            from: site("a"),
            to: site("b"),
            mode: MoveMode::Planned,
            dry_run: false,
        }),
        t(10),
    );
    all.extend(h.act(Event::OpsRequest(OpsRequest::Cancel { op: 1 }), t(11)));
    assert_eq!(
        h.engine.operation(1).map(|o| o.state.clone()),
        Some(OpState::Cancelling)
    );
    let mut sp = checkpoint("a", 1, 9, t(12));
    sp.kind = RestorePointKind::Savepoint;
    all.extend(h.act(
        Event::SavepointCompleted {
            op: 1,
            job: job("j1"),
            savepoint: sp.clone(),
        },
        t(12),
    ));
    all.extend(h.act(fenced("j1", 1, "a"), t(13)));
    let mut replica = sp;
    replica.site = site("b");
    all.extend(h.act(
        Event::ReplicationCompleted {
            op: 1,
            job: job("j1"),
            replica,
        },
        t(14),
    ));
    all.extend(h.act(
        Event::LaunchSucceeded {
            job: job("j1"),
            generation: 2,
            site: site("b"),
        },
        t(15),
    ));

    assert_eq!(
        h.engine.operation(1).map(|o| o.state.clone()),
        Some(OpState::Cancelled)
    );
    let savepoints: Vec<_> = all
        .iter()
        .filter(|c| matches!(c, Command::TriggerSavepoint { .. }))
        .collect();
    assert_eq!(savepoints.len(), 1, "only the job already in flight moved");
    let where_: Vec<_> = h
        .engine
        .jobs()
        .map(|r| {
            (
                r.id().0.clone(),
                r.site.0.clone(),
                r.generation,
                r.phase.clone(),
            )
        })
        .collect();
    assert_eq!(
        where_,
        vec![
            ("ns/j1".into(), "b".into(), 2, FailoverPhase::Running),
            ("ns/j2".into(), "a".into(), 1, FailoverPhase::Running),
            ("ns/j3".into(), "a".into(), 1, FailoverPhase::Running),
        ]
    );
}

#[test]
fn a_new_leader_resumes_a_site_failover_without_relaunching_any_job_twice() {
    // One move at first, the next a second later: the leader dies in between.
    let mut h = Harness::new(|c| {
        c.launch_burst = 1;
        c.launch_rate = 1;
    });
    h.register("j1", Priority::Critical, FailoverMode::RestoreRequired, "b");
    h.register("j2", Priority::Normal, FailoverMode::RestoreRequired, "b");
    h.replicated("j1", checkpoint("a", 1, 3, t(0)));
    h.replicated("j2", checkpoint("a", 1, 4, t(0)));
    h.observe("b", t(0), &[], vec![]);
    h.observe("a", t(0), &[], vec![]);
    let before_crash = h.observe("a", t(31), &[], vec![]);
    assert_eq!(
        relaunches(&before_crash),
        vec![("ns/j1".into(), 2, "a".into(), Some(3))]
    );

    // The leader dies; a new one rebuilds from what was persisted (through JSON, as etcd would).
    let stored: Vec<Record> = h
        .store
        .values()
        .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
        .collect();
    let (engine, reissued) = Engine::resume(h.engine.config().clone(), stored, t(40));
    h.engine = engine;
    assert_eq!(
        relaunches(&reissued),
        vec![("ns/j1".into(), 2, "a".into(), Some(3))],
        "same generation, re-issued"
    );
    // The pace allows j2 by now: it starts once, j1 is not started again.
    let mut next = h.step(Event::QuorumChanged(true), t(40));
    next.extend(h.act(
        Event::LaunchSucceeded {
            job: job("j1"),
            generation: 2,
            site: site("a"),
        },
        t(41),
    ));
    assert_eq!(
        relaunches(&next),
        vec![("ns/j2".into(), 2, "a".into(), Some(4))]
    );
    h.act(
        Event::LaunchSucceeded {
            job: job("j2"),
            generation: 2,
            site: site("a"),
        },
        t(42),
    );
    assert_eq!(
        h.engine.operation(1).map(|o| o.state.clone()),
        Some(OpState::Done)
    );
    assert_eq!(h.engine.job(&job("j1")).map(|r| r.generation), Some(2));
}

#[test]
fn a_lost_site_that_returns_has_its_stale_generations_fenced_before_anything_runs_there() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "b");
    h.register(
        "j-big",
        Priority::Normal,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.replicated("j1", checkpoint("a", 1, 3, t(0)));
    // Nothing of j-big reached a: it can go nowhere until b returns.
    h.complete("j-big", checkpoint("b", 1, 6, t(0)));
    h.observe("b", t(0), &[], vec![]);
    let lost = h.observe("a", t(31), &[], vec![]);
    assert_eq!(
        relaunches(&lost),
        vec![("ns/j1".into(), 2, "a".into(), Some(3))]
    );

    let zombies = vec![
        observed("j1", 1, RunState::Restarting, 0, "b-1", "b-2"),
        observed("j-big", 1, RunState::Restarting, 0, "b-1", "b-2"),
    ];
    h.observe("a", t(200), &[], vec![]);
    let returned = h.observe("b", t(200), &[], zombies);
    assert_eq!(returned, vec![fence("j-big", 1, "b"), fence("j1", 1, "b")]);
    assert_eq!(
        h.act(fenced("j1", 1, "b"), t(201)),
        vec![],
        "one stale generation is still there"
    );
    let clean = h.act(fenced("j-big", 1, "b"), t(202));
    assert_eq!(
        clean.first(),
        Some(&Command::MarkSiteRecovered {
            site: site("b"),
            epoch: 1
        })
    );
    assert_eq!(
        relaunches(&clean),
        vec![("ns/j-big".into(), 2, "b".into(), Some(6))]
    );
}

#[test]
fn every_action_is_preceded_by_the_persisted_state_that_led_to_it() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.complete("j1", checkpoint("a", 1, 5, t(0)));
    h.keep_alive(t(21));
    h.observe(
        "a",
        t(21),
        &[(1, t(0))],
        vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")],
    );
    let commands = h.step(fenced("j1", 1, "a"), t(22));
    let relaunch_at = commands
        .iter()
        .position(|c| matches!(c, Command::Relaunch { .. }))
        .unwrap();
    let persisted_gen2 = commands[..relaunch_at]
        .iter()
        .any(|c| matches!(c, Command::Persist(Record::Job(j)) if j.generation == 2));
    assert!(persisted_gen2, "{commands:?}");
}

#[test]
fn a_cancel_of_an_unknown_operation_is_rejected_with_its_id() {
    let mut h = Harness::new(|_| {});
    let commands = h.act(Event::OpsRequest(OpsRequest::Cancel { op: 7 }), t(1));
    assert_eq!(
        commands,
        vec![Command::Rejected {
            request: OpsRequest::Cancel { op: 7 },
            error: RequestError::UnknownOperation { op: 7 }
        }]
    );
    assert_eq!(
        RequestError::UnknownOperation { op: 7 }.to_string(),
        "operation 7 does not exist"
    );
}

fn lose_and_return_site_b(auto_failback: bool) -> Vec<Command> {
    let mut h = Harness::new(|c| c.auto_failback = auto_failback);
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "b");
    h.replicated("j1", checkpoint("a", 1, 3, t(0)));
    h.observe("b", t(0), &[], vec![]);
    h.observe("a", t(31), &[], vec![]);
    h.act(
        Event::LaunchSucceeded {
            job: job("j1"),
            generation: 2,
            site: site("a"),
        },
        t(32),
    );
    h.observe("a", t(200), &[], vec![]);
    h.observe(
        "b",
        t(200),
        &[],
        vec![observed("j1", 1, RunState::Restarting, 0, "b-1", "b-2")],
    );
    h.act(fenced("j1", 1, "b"), t(201))
}

#[test]
fn failback_after_a_site_returns_is_never_automatic_unless_policy_says_so() {
    let without_policy = lose_and_return_site_b(false);
    assert_eq!(
        without_policy,
        vec![Command::MarkSiteRecovered {
            site: site("b"),
            epoch: 1
        }]
    );

    let with_policy = lose_and_return_site_b(true);
    assert_eq!(
        with_policy,
        vec![
            Command::MarkSiteRecovered {
                site: site("b"),
                epoch: 1
            },
            Command::TriggerSavepoint {
                op: 2,
                job: job("j1"),
                generation: 2,
                site: site("a")
            },
        ]
    );
}

#[test]
fn a_newer_generation_the_driver_launched_itself_is_adopted_and_the_one_it_replaced_fenced() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.step(
        Event::JobRegistered {
            spec: Box::new(spec(
                "j1",
                Priority::Normal,
                FailoverMode::RestoreRequired,
                "a",
            )),
            site: site("a"),
            generation: 2,
        },
        t(1),
    );
    assert_eq!(h.engine.job(&job("j1")).unwrap().generation, 2);
    // Generation 1 still shows up in the site: it is fenced, generation 2 is left alone.
    let acted = h.observe(
        "a",
        t(2),
        &[],
        vec![
            observed("j1", 1, RunState::Running, 0, "a-1", "a-2"),
            observed("j1", 2, RunState::Running, 0, "a-2", "a-3"),
        ],
    );
    assert_eq!(acted, vec![fence("j1", 1, "a")]);
}

#[test]
fn a_removed_job_is_forgotten_and_its_record_deleted() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    let commands = h.step(Event::JobRemoved { job: job("j1") }, t(1));
    assert!(
        commands.contains(&Command::Forget { job: job("j1") }),
        "{commands:?}"
    );
    assert!(h.engine.job(&job("j1")).is_none());
    // A job it no longer knows is never relaunched, whatever its site reports.
    let acted = h.observe(
        "a",
        t(2),
        &[],
        vec![observed("j1", 1, RunState::Failed, 0, "a-1", "a-2")],
    );
    assert!(relaunches(&acted).is_empty(), "{acted:?}");
}

/// A pass's observations are applied together and judged once: a site whose snapshot comes
/// later in the pass is never judged on its contact from the pass before.
#[test]
fn the_sites_of_one_pass_are_judged_together_never_on_an_older_contact() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.observe(
        "a",
        t(0),
        &[],
        vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")],
    );
    h.observe("b", t(0), &[], vec![]);
    // One pass at t(100): both sites answered; a's snapshot is applied before b's.
    let snapshot = |s: &str, jobs| {
        Event::SnapshotObserved(SiteObservation {
            site: site(s),
            observed_at: t(100),
            nodes: (1..=3)
                .map(|i| NodeHeartbeat {
                    name: format!("{s}-{i}"),
                    last_heartbeat: Some(t(100)),
                })
                .collect(),
            jobs,
        })
    };
    let acted = h.step_all(
        vec![
            snapshot(
                "a",
                vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")],
            ),
            snapshot("b", vec![]),
            Event::Tick,
        ],
        t(100),
    );
    assert_eq!(actions(&acted), vec![], "{acted:?}");
}

/// The answers to one round of relaunches, all successful.
fn launch_answers(round: &[Command]) -> Vec<Event> {
    round
        .iter()
        .filter_map(|c| match c {
            Command::Relaunch {
                job,
                generation,
                site,
                ..
            } => Some(Event::LaunchSucceeded {
                job: job.clone(),
                generation: *generation,
                site: site.clone(),
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn answers_fed_together_relaunch_the_same_jobs_in_the_same_order_with_fewer_writes_than_answers_fed_one_by_one()
 {
    let run = |together: bool| {
        let mut h = Harness::new(|c| c.max_in_flight = 1);
        let mut round = lose_site_b(&mut h);
        let mut launched = Vec::new();
        let mut writes = 0;
        while !round.is_empty() {
            launched.extend(relaunches(&round));
            writes += round
                .iter()
                .filter(|c| matches!(c, Command::Persist(_)))
                .count();
            let answers = launch_answers(&round);
            round = if together {
                h.step_all(answers, t(92))
            } else {
                answers.into_iter().flat_map(|a| h.step(a, t(92))).collect()
            };
        }
        (launched, h.store, writes)
    };
    let (one_by_one, store_one_by_one, writes_one_by_one) = run(false);
    let (together, store_together, writes_together) = run(true);
    assert_eq!(one_by_one.len(), 4, "{one_by_one:?}");
    assert_eq!(together, one_by_one);
    assert_eq!(store_together, store_one_by_one);
    assert!(
        writes_together <= writes_one_by_one,
        "{writes_together} > {writes_one_by_one}"
    );
}

#[test]
fn a_round_of_answers_is_judged_once_so_every_record_is_written_once_per_round() {
    let mut h = Harness::new(|c| c.max_in_flight = 8);
    let round = lose_site_b(&mut h);
    assert_eq!(relaunches(&round).len(), 4);
    let next = h.step_all(launch_answers(&round), t(92));
    let mut keys: Vec<String> = next
        .iter()
        .filter_map(|c| match c {
            Command::Persist(r) => Some(key(r)),
            _ => None,
        })
        .collect();
    let written = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), written, "a record written twice in one round");
    assert!(
        keys.iter().any(|k| k.starts_with("op")),
        "the finished operation is recorded: {keys:?}"
    );
}

fn register_operator_only(h: &mut Harness, name: &str, at_site: &str) {
    let mut spec = spec(
        name,
        Priority::Critical,
        FailoverMode::RestoreRequired,
        at_site,
    );
    spec.site_moves = SiteMoves::OperatorOnly;
    h.step(
        Event::JobRegistered {
            spec: Box::new(spec),
            site: site(at_site),
            generation: 1,
        },
        t(0),
    );
}

#[test]
fn a_manual_job_is_not_moved_by_a_site_loss_but_is_reported_and_moved_by_an_operators_failover() {
    let mut h = Harness::new(|_| {});
    register_operator_only(&mut h, "j-manual", "b");
    h.replicated("j-manual", checkpoint("a", 1, 6, t(40)));
    let commands = lose_site_b(&mut h);
    let moved: Vec<String> = relaunches(&commands).into_iter().map(|r| r.0).collect();
    assert!(!moved.contains(&"ns/j-manual".to_string()), "{moved:?}");
    assert_eq!(moved.len(), 4, "the automatic jobs still move: {moved:?}");
    let reported = commands.iter().find_map(|c| match c {
        Command::ReportNotRelaunched { job: j, reason, .. } if j == &job("j-manual") => {
            Some(reason.clone())
        }
        _ => None,
    });
    let reported = reported.expect("the manual job is reported as not relaunched");
    assert!(
        reported.contains("manual") && reported.contains("twinsite failover --from b --to a"),
        "{reported}"
    );
    assert_eq!(
        h.engine.job(&job("j-manual")).map(|r| r.generation),
        Some(1)
    );

    let request = Event::OpsRequest(OpsRequest::Failover {
        from: site("b"),
        to: site("a"),
        mode: MoveMode::Forced,
        dry_run: false,
    });
    let commands = h.step(request, t(100));
    assert_eq!(
        relaunches(&commands),
        vec![("ns/j-manual".into(), 2, "a".into(), Some(6))]
    );
}

#[test]
fn a_failing_manual_job_is_relaunched_only_in_its_own_site() {
    let mut h = Harness::new(|c| c.relaunches_before_other_site = 1);
    register_operator_only(&mut h, "j1", "a");
    h.replicated("j1", checkpoint("b", 1, 4, t(-5)));
    h.complete("j1", checkpoint("a", 1, 5, t(0)));
    let mut seen = Vec::new();
    for (generation, at) in [(1u64, 10i64), (2, 20), (3, 30)] {
        h.keep_alive(t(at));
        let failed = vec![observed(
            "j1",
            generation,
            RunState::Failed,
            3,
            "a-1",
            "a-2",
        )];
        h.observe("a", t(at), &[], failed);
        seen.extend(relaunches(&h.act(fenced("j1", generation, "a"), t(at + 1))));
    }
    let sites: Vec<&str> = seen.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(sites, ["a", "a", "a"], "{seen:?}");
}

#[test]
fn site_health_reads_healthy_then_suspect_then_lost_as_a_site_goes_silent() {
    let mut h = Harness::new(|_| {});
    h.observe("a", t(60), &[], vec![]);
    h.observe("b", t(60), &[], vec![]);
    let verdict = |h: &Harness, s: &str, at: i64| h.engine.site_health(&site(s), t(at)).unwrap();
    assert_eq!(verdict(&h, "b", 61).1, SiteVerdict::Healthy);
    // Silent past the suspect threshold (10 s), within the grace (30 s): suspect, not lost.
    assert!(matches!(
        verdict(&h, "b", 75).1,
        SiteVerdict::Suspect { .. }
    ));
    let (before, _) = verdict(&h, "b", 75);
    assert_eq!(before.status, SiteStatus::Up);
    // The engine judges it lost once it steps past the grace; site_health then says so with
    // the new epoch.
    h.observe("a", t(91), &[], vec![]);
    let (record, health) = verdict(&h, "b", 92);
    assert!(matches!(health, SiteVerdict::Lost { .. }), "{health:?}");
    assert_eq!(record.epoch, before.epoch + 1);
    assert_eq!(verdict(&h, "a", 92).1, SiteVerdict::Healthy);
}

fn not_relaunched(commands: &[Command]) -> Vec<(String, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::ReportNotRelaunched { job, reason, .. } => {
                Some((job.0.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Issue #14: a job that must restore from a checkpoint but never completed one cannot move
/// to the survivor (its lost site may hold a checkpoint never reported), so it stays down
/// while its site is lost. Once its site is back and clean it runs there again, as its
/// first launch did: there is no checkpoint whose state a fresh start would drop.
#[test]
fn a_job_that_never_checkpointed_comes_home_without_state_once_its_site_returns() {
    let mut h = Harness::new(|_| {});
    h.register("j-new", Priority::High, FailoverMode::RestoreRequired, "b");
    h.observe("b", t(0), &[], vec![]);
    let lost = h.observe("a", t(31), &[], vec![]);
    assert_eq!(relaunches(&lost), vec![]);
    assert_eq!(
        not_relaunched(&lost),
        vec![(
            "ns/j-new".into(),
            "no checkpoint replicated to a and the job must restore from one".into()
        )]
    );
    assert!(matches!(
        h.engine.job(&job("j-new")).unwrap().phase,
        FailoverPhase::Down { .. }
    ));
    // Retries while b is lost change nothing and report nothing again.
    for at in [62, 93, 124] {
        assert_eq!(h.observe("a", t(at), &[], vec![]), vec![], "at {at} s");
    }

    h.observe("a", t(200), &[], vec![]);
    let returned = h.observe(
        "b",
        t(200),
        &[],
        vec![observed("j-new", 1, RunState::Restarting, 0, "b-1", "b-2")],
    );
    assert_eq!(returned, vec![fence("j-new", 1, "b")]);
    let clean = h.act(fenced("j-new", 1, "b"), t(201));
    assert_eq!(
        relaunches(&clean),
        vec![("ns/j-new".into(), 2, "b".into(), None)],
        "{clean:?}"
    );
    let report = &reports(&clean)[0];
    assert_eq!(
        report.reason,
        RelaunchReason::SiteReturned { site: site("b") }
    );
    assert_eq!(report.rpo, None, "started without state");
    assert!(matches!(
        h.engine.job(&job("j-new")).unwrap().phase,
        FailoverPhase::Launching { .. }
    ));
}

/// Issue #14, the same class: a job that did not fit in the survivor runs there once room
/// is freed, within one retry interval, and is not reported again while it still waits.
#[test]
fn a_job_that_did_not_fit_runs_once_room_is_freed_and_is_reported_once_while_it_waits() {
    let mut h = Harness::new(|c| c.down_retry = Duration::from_secs(30));
    h.register(
        "j-big",
        Priority::Normal,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.replicated("j-big", checkpoint("a", 1, 3, t(0)));
    h.placer.refuse.insert(job("j-big"));
    h.observe("b", t(0), &[], vec![]);
    let lost = h.observe("a", t(31), &[], vec![]);
    assert_eq!(relaunches(&lost), vec![]);
    assert_eq!(not_relaunched(&lost).len(), 1, "{lost:?}");
    // Tried again every 30 s; the answer is the same, so nothing is written or reported.
    let retried = h.observe("a", t(62), &[], vec![]);
    assert!(
        !retried
            .iter()
            .any(|c| matches!(c, Command::Persist(_) | Command::ReportNotRelaunched { .. })),
        "{retried:?}"
    );
    h.placer.refuse.clear();
    assert_eq!(
        relaunches(&h.observe("a", t(80), &[], vec![])),
        vec![],
        "not before the retry interval"
    );
    let freed = h.step_all(
        vec![Event::SnapshotObserved(SiteObservation {
            site: site("a"),
            observed_at: t(93),
            nodes: vec![],
            jobs: vec![],
        })],
        t(93),
    );
    assert_eq!(
        relaunches(&freed),
        vec![("ns/j-big".into(), 2, "a".into(), Some(3))]
    );
    assert!(matches!(
        reports(&freed)[0].reason,
        RelaunchReason::Revived { .. }
    ));
}

/// A job whose JobManager node is lost before its first checkpoint is relaunched in its
/// site without state (as it first started), not left down for want of a checkpoint.
#[test]
fn a_job_lost_before_its_first_checkpoint_is_relaunched_in_its_site_without_state() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    let running = || vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")];
    h.keep_alive(t(21));
    assert_eq!(
        h.observe("a", t(21), &[(1, t(0))], running()),
        vec![fence("j1", 1, "a")]
    );
    assert_eq!(
        relaunches(&h.act(fenced("j1", 1, "a"), t(22))),
        vec![("ns/j1".into(), 2, "a".into(), None)]
    );
}

/// A job preempted to make room for a more important one during a failover runs again
/// once its site has room (here: once the placer takes it again).
#[test]
fn a_job_preempted_by_a_failover_runs_again_once_its_site_has_room() {
    let mut h = Harness::new(|_| {});
    h.register(
        "j-crit",
        Priority::Critical,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.register(
        "j-cheap",
        Priority::BestEffort,
        FailoverMode::FreshStartAllowed,
        "a",
    );
    h.replicated("j-crit", checkpoint("a", 1, 3, t(0)));
    h.placer.preempt = vec![job("j-cheap")];
    h.placer.refuse.insert(job("j-cheap"));
    h.observe("b", t(0), &[], vec![]);
    let lost = h.observe("a", t(31), &[], vec![]);
    assert!(lost.contains(&fence("j-cheap", 1, "a")), "{lost:?}");
    h.placer.preempt.clear();
    h.act(fenced("j-cheap", 1, "a"), t(32));
    assert!(matches!(
        h.engine.job(&job("j-cheap")).unwrap().phase,
        FailoverPhase::Down { .. }
    ));
    h.placer.refuse.clear();
    h.observe("a", t(40), &[], vec![]);
    let again = h.step_all(
        vec![Event::SnapshotObserved(SiteObservation {
            site: site("a"),
            observed_at: t(70),
            nodes: vec![],
            jobs: vec![],
        })],
        t(70),
    );
    assert_eq!(
        relaunches(&again),
        vec![("ns/j-cheap".into(), 2, "a".into(), None)]
    );
}

/// Issue #14, part 2: the engine tracks node heartbeats itself and persists the silence of
/// the nodes it no longer hears, so a new leader does not grant a silent node a fresh grace.
/// A node reported without a heartbeat of its own (not Ready) stays silent since it was last
/// heard, across the change of leader.
#[test]
fn a_new_leader_keeps_counting_a_silent_nodes_grace_from_when_it_was_last_heard() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.complete("j1", checkpoint("a", 1, 5, t(0)));
    let observe = |h: &mut Harness, at: i64| {
        let mut acted = h.keep_alive(t(at));
        acted.extend(h.step_all(
            vec![Event::SnapshotObserved(SiteObservation {
                site: site("a"),
                observed_at: t(at),
                nodes: (1..=3)
                    .map(|i| NodeHeartbeat {
                        name: format!("a-{i}"),
                        // a-1 goes NotReady after t(0); the site gives no heartbeat time.
                        last_heartbeat: (i != 1 || at == 0).then_some(t(at)),
                    })
                    .collect(),
                jobs: vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")],
            })],
            t(at),
        ));
        acted
    };
    observe(&mut h, 0);
    let silent = observe(&mut h, 10);
    assert!(
        silent.iter().any(|c| matches!(
            c,
            Command::Persist(Record::Site(s))
                if s.id == site("a") && s.silent_nodes.get("a-1") == Some(&t(0))
        )),
        "the node's silence is written: {silent:?}"
    );

    // A new leader at t(15), from the persisted records (through JSON, as etcd would).
    let stored: Vec<Record> = h
        .store
        .values()
        .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
        .collect();
    let (engine, _) = Engine::resume(h.engine.config().clone(), stored, t(15));
    h.engine = engine;
    h.step(Event::QuorumChanged(true), t(15));
    assert_eq!(actions(&observe(&mut h, 20)), vec![], "within the grace");
    assert_eq!(
        actions(&observe(&mut h, 21)),
        vec![fence("j1", 1, "a")],
        "lost 20 s after it was last heard, not 20 s after the new leader first saw it"
    );
}

/// Issue #14 part 4: a site loss is paced by rate, not by launch answers. With a burst of 2
/// and 1 a second, the judgement starts the two critical jobs, then one more every second,
/// in priority order, though no launch ever answers (and `max_in_flight`, for planned
/// moves, is 1).
#[test]
fn a_site_loss_starts_its_moves_at_the_launch_rate_critical_first_without_waiting_for_answers() {
    let mut h = Harness::new(|c| {
        c.launch_burst = 2;
        c.launch_rate = 1;
        c.max_in_flight = 1;
    });
    let jobs = [
        ("n1", Priority::Normal),
        ("c1", Priority::Critical),
        ("h1", Priority::High),
        ("n2", Priority::Normal),
        ("c2", Priority::Critical),
        ("h2", Priority::High),
    ];
    for (name, priority) in jobs {
        h.register(name, priority, FailoverMode::RestoreRequired, "b");
        h.replicated(name, checkpoint("a", 1, 1, t(40)));
    }
    h.observe("b", t(60), &[], vec![]);
    h.observe("a", t(60), &[], vec![]);
    let names = |commands: &[Command]| -> Vec<String> {
        relaunches(commands).into_iter().map(|r| r.0).collect()
    };
    let judged = h.observe("a", t(91), &[], vec![]);
    assert_eq!(
        names(&judged),
        ["ns/c1", "ns/c2"],
        "the burst: critical first"
    );
    assert_eq!(h.engine.next_launch_at(t(91)), Some(t(92)));
    assert_eq!(
        h.observe("a", t(91), &[], vec![]),
        vec![],
        "nothing more this second"
    );
    assert_eq!(names(&h.observe("a", t(92), &[], vec![])), ["ns/h1"]);
    assert_eq!(
        names(&h.observe("a", t(94), &[], vec![])),
        ["ns/h2", "ns/n1"],
        "two seconds, two more"
    );
    assert_eq!(names(&h.observe("a", t(95), &[], vec![])), ["ns/n2"]);
    assert_eq!(h.engine.next_launch_at(t(95)), None, "nothing waits");
}

#[test]
fn a_launch_allowance_is_the_burst_then_the_rate_and_says_when_the_next_may_start() {
    let mut config = EngineConfig::new(vec![site("a"), site("b")]);
    config.launch_burst = 200;
    config.launch_rate = 200;
    assert_eq!(config.launch_allowance(t(0), t(0)), 200);
    assert_eq!(config.launch_allowance(t(0), t(4)), 1000);
    assert_eq!(config.next_launch_at(t(0), 199), Some(t(0)));
    assert_eq!(config.next_launch_at(t(0), 999), Some(t(4)));
    assert_eq!(
        config.next_launch_at(t(0), 1000),
        Some(t(0) + Duration::from_millis(4005))
    );
}

/// Issue #14 part 4 at the defaults (30 s site grace, launch burst and rate 200), with
/// passes every 5 s as the controller's default reconcile interval: a lost site of 1000
/// jobs has every relaunch issued within 45 s of its last heartbeat, critical first, and
/// no launch ever answers in the meantime. (The simulation checks the same through the
/// shared driver and the scheduler: `sim::tests`, `scenarios/large/site-loss-1000-jobs.yaml`.)
#[test]
fn a_thousand_job_site_loss_at_the_defaults_issues_every_relaunch_within_45_s_of_the_last_heartbeat()
 {
    let mut h = Harness::new(|_| {});
    let tiers = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::BestEffort,
    ];
    let mut priority_of = BTreeMap::new();
    for i in 0..1000 {
        let name = format!("j{i:04}");
        let priority = tiers[i % tiers.len()];
        h.register(&name, priority, FailoverMode::RestoreRequired, "b");
        h.replicated(&name, checkpoint("a", 1, 1, t(0)));
        priority_of.insert(format!("ns/{name}"), priority);
    }
    h.observe("a", t(0), &[], vec![]);
    h.observe("b", t(0), &[], vec![]);
    // b's last heartbeat is at 0 s; passes every 5 s from then on.
    let mut issued: Vec<(String, i64)> = Vec::new();
    for at in (5..=45).step_by(5) {
        for (name, ..) in relaunches(&h.observe("a", t(at), &[], vec![])) {
            issued.push((name, at));
        }
    }
    assert_eq!(issued.len(), 1000, "every job relaunched by 45 s");
    let mut seen = BTreeSet::new();
    assert!(
        issued.iter().all(|(name, _)| seen.insert(name.clone())),
        "once each"
    );
    for pair in issued.windows(2) {
        assert!(
            priority_of[&pair[0].0] >= priority_of[&pair[1].0],
            "{} before {}",
            pair[0].0,
            pair[1].0
        );
    }
    assert!(
        issued.first().unwrap().1 < issued.last().unwrap().1,
        "paced over more than one pass"
    );
}

/// A job whose jar is not verified in the target site is never moved there: not by a site
/// loss, not by an operator's failover, and the dry run says why.
#[test]
fn a_job_whose_jar_is_missing_in_the_target_is_not_moved_there_and_the_plan_says_why() {
    let mut h = Harness::new(|_| {});
    let mut without_jar = spec(
        "j-nojar",
        Priority::Critical,
        FailoverMode::RestoreRequired,
        "b",
    );
    without_jar.jar_missing.insert(
        site("a"),
        "jar hdfs:///jars/j.jar is not verified in a's storage: no space left".into(),
    );
    h.step(
        Event::JobRegistered {
            spec: Box::new(without_jar),
            site: site("b"),
            generation: 1,
        },
        t(0),
    );
    h.replicated("j-nojar", checkpoint("a", 1, 6, t(10)));
    h.keep_alive(t(20));

    let dry = h.step(
        Event::OpsRequest(OpsRequest::Failover {
            from: site("b"),
            to: site("a"),
            mode: MoveMode::Forced,
            dry_run: true,
        }),
        t(20),
    );
    let [Command::ReportPlan(plan)] = dry.as_slice() else {
        panic!("expected exactly one plan, got {dry:?}");
    };
    assert!(
        plan.moves.iter().all(|m| m.job != job("j-nojar")),
        "{plan:?}"
    );
    let refused = plan
        .not_fitting
        .iter()
        .find(|n| n.job == job("j-nojar"))
        .expect("the job is listed as not moving");
    assert!(
        refused.reason.contains("not verified in a's storage"),
        "{}",
        refused.reason
    );

    let commands = lose_site_b(&mut h);
    let moved: Vec<String> = relaunches(&commands).into_iter().map(|r| r.0).collect();
    assert!(!moved.contains(&"ns/j-nojar".to_string()), "{moved:?}");
    let reported = commands.iter().find_map(|c| match c {
        Command::ReportNotRelaunched { job: j, reason, .. } if j == &job("j-nojar") => {
            Some(reason.clone())
        }
        _ => None,
    });
    assert!(
        reported.is_some_and(|r| r.contains("not verified in a's storage")),
        "{commands:?}"
    );
}

/// The wait for a fence is relaunch delay, never data lost: a job found failed at one instant
/// and relaunched when its fence is confirmed later reports its RPO up to the detection and
/// its RTO from it.
#[test]
fn a_failed_job_relaunched_once_its_fence_is_confirmed_reports_rpo_up_to_the_detection_and_rto_from_it()
 {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.complete("j1", checkpoint("a", 1, 5, t(0)));
    h.keep_alive(t(10));
    let failed = vec![observed("j1", 1, RunState::Failed, 3, "a-1", "a-2")];
    assert_eq!(
        h.observe("a", t(10), &[], failed),
        vec![fence("j1", 1, "a")]
    );
    let relaunch = h.step(fenced("j1", 1, "a"), t(25));
    assert_eq!(
        relaunches(&relaunch),
        vec![("ns/j1".into(), 2, "a".into(), Some(5))]
    );
    let report = reports(&relaunch);
    assert_eq!(report.len(), 1, "one report per relaunch: {report:?}");
    assert_eq!(report[0].rpo, Some(Duration::from_secs(10)));
    assert_eq!(report[0].rto_from_detection, Duration::from_secs(15));
    assert_eq!(report[0].rto_from_last_heartbeat, None);
}

/// A job an operation gives up on keeps running where it is, and a new leader must read it
/// so: the engine writes it back as running, not only says so in the audit.
#[test]
fn a_job_whose_savepoint_fails_is_written_back_as_running_at_the_source() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.keep_alive(t(10));
    let failover = OpsRequest::Failover {
        from: site("a"),
        to: site("b"),
        mode: MoveMode::Planned,
        dry_run: false,
    };
    h.step(Event::OpsRequest(failover), t(10));
    let phase_in_store = |h: &Harness| match h.store.get("job/ns/j1") {
        Some(Record::Job(j)) => j.phase.clone(),
        other => panic!("no job record stored: {other:?}"),
    };
    assert_eq!(phase_in_store(&h), FailoverPhase::InOperation { op: 1 });
    let commands = h.step(
        Event::SavepointFailed {
            op: 1,
            job: job("j1"),
            reason: "disk full".into(),
        },
        t(11),
    );
    assert_eq!(phase_in_store(&h), FailoverPhase::Running);
    assert!(
        commands.iter().any(|c| matches!(c, Command::Audit(a)
            if a.message == "savepoint failed, job keeps running at the source: disk full")),
        "the audit says why: {commands:?}"
    );
}

/// A store keeps what earlier versions wrote. These records were written (by the flows of
/// `lose_site_b`, a planned switchover stopped with a savepoint, and a JobManager node loss)
/// before the engine's types were renamed (issue #15): every one reads back and writes again
/// byte for byte, and a new leader resumes from those of one engine without changing them.
#[test]
fn records_written_before_the_engine_types_were_renamed_read_back_and_write_byte_for_byte() {
    let text = include_str!("fixtures/engine-records-before-renames.jsonl");
    let records: Vec<Record> = text
        .lines()
        .map(|line| {
            let record: Record = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{e}: a stored record no longer reads: {line}"));
            assert_eq!(serde_json::to_string(&record).unwrap(), line);
            record
        })
        .collect();
    assert_eq!(records.len(), 14);
    // The first nine are one engine's records (a site loss in progress).
    let one_engine: BTreeSet<String> = text.lines().take(9).map(str::to_string).collect();
    let (engine, _) = Engine::resume(
        EngineConfig::new(vec![site("a"), site("b")]),
        records.into_iter().take(9),
        t(100),
    );
    let resumed: BTreeSet<String> = engine
        .records()
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert_eq!(resumed, one_engine);
}

/// The audit log says why a job runs nowhere, in the words the report uses, and where it was.
#[test]
fn a_job_left_down_by_a_site_loss_is_audited_with_the_reason_it_is_reported_with() {
    let mut h = Harness::new(|_| {});
    let commands = lose_site_b_all(&mut h);
    let why = "no checkpoint replicated to a and the job must restore from one";
    assert!(
        not_relaunched(&commands).contains(&("ns/j-norep".to_string(), why.to_string())),
        "{commands:?}"
    );
    let audited = commands.iter().any(|c| {
        matches!(c, Command::Audit(a)
            if a.job == Some(job("j-norep"))
                && a.site == Some(site("b"))
                && a.message == format!("not relaunched: {why}"))
    });
    assert!(audited, "{commands:?}");
}

// ---- generations: the engine is their one owner; the controller asks it ----------------

#[test]
fn the_controller_is_granted_the_generation_after_a_running_jobs_and_the_engine_adopts_it_from_the_store()
 {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    assert_eq!(h.engine.grant_generation(&job("j1"), 1), Ok(2));
    // The grant alone changes nothing: the engine adopts the generation once it is stored.
    assert_eq!(h.engine.job(&job("j1")).map(|r| r.generation), Some(1));
    h.step(
        Event::JobsStored(vec![StoredJob {
            id: job("j1"),
            placed: Some(PlacedJob {
                spec: spec("j1", Priority::Normal, FailoverMode::RestoreRequired, "b"),
                site: site("b"),
                generation: 2,
            }),
        }]),
        t(1),
    );
    let tracked = h.engine.job(&job("j1")).expect("still tracked");
    assert_eq!((tracked.generation, &tracked.site), (2, &site("b")));
    assert_eq!(h.engine.grant_generation(&job("j1"), 2), Ok(3));
}

#[test]
fn a_job_the_engine_does_not_track_yet_is_granted_the_generation_after_its_stored_one() {
    let h = Harness::new(|_| {});
    assert_eq!(h.engine.grant_generation(&job("new"), 0), Ok(1));
}

#[test]
fn no_generation_is_granted_while_the_engine_fences_or_relaunches_the_job() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.complete("j1", checkpoint("a", 1, 5, t(-3)));
    let running = || vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")];
    for at in [0, 10, 20] {
        h.keep_alive(t(at));
        h.observe("a", t(at), &[(1, t(0))], running());
    }
    let mut acted = h.observe("a", t(21), &[(1, t(0))], running());
    acted.extend(h.keep_alive(t(21)));
    assert_eq!(acted, vec![fence("j1", 1, "a")]);
    assert_eq!(
        h.engine.grant_generation(&job("j1"), 1),
        Err(GrantRefused::Held {
            generation: 1,
            site: site("a")
        }),
        "fencing"
    );
    assert_eq!(relaunches(&h.act(fenced("j1", 1, "a"), t(22))).len(), 1);
    assert_eq!(
        h.engine.grant_generation(&job("j1"), 2),
        Err(GrantRefused::Held {
            generation: 2,
            site: site("a")
        }),
        "relaunching"
    );
}

#[test]
fn a_generation_is_never_granted_twice_when_the_store_and_the_engine_disagree() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    // Deleted and created again under its name before the engine saw it gone: its record
    // starts at 0, and generation 1 was already issued to the old job.
    assert_eq!(h.engine.grant_generation(&job("j1"), 0), Ok(2));
    // Launched by the controller and not adopted yet: past the stored one.
    assert_eq!(h.engine.grant_generation(&job("j1"), 5), Ok(6));
    assert_eq!(
        h.engine.grant_generation(&job("j1"), MAX_GENERATION),
        Err(GrantRefused::Exhausted {
            current: MAX_GENERATION
        })
    );
}

#[test]
fn the_last_generation_is_never_exceeded_by_the_controller_nor_by_the_engine() {
    let mut h = Harness::new(|_| {});
    assert_eq!(next_generation(MAX_GENERATION - 1), Some(MAX_GENERATION));
    assert_eq!(next_generation(MAX_GENERATION), None);
    assert_eq!(next_generation(u64::MAX), None);
    h.step(
        Event::JobRegistered {
            spec: Box::new(spec(
                "j1",
                Priority::Normal,
                FailoverMode::RestoreRequired,
                "a",
            )),
            site: site("a"),
            generation: MAX_GENERATION,
        },
        t(0),
    );
    let refused = h.engine.grant_generation(&job("j1"), MAX_GENERATION);
    assert_eq!(
        refused,
        Err(GrantRefused::Exhausted {
            current: MAX_GENERATION
        })
    );
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("delete and re-create it"),
        "the refusal says what to do"
    );

    // The engine's own relaunch after a lost JobManager node stops at the bound too: the job
    // is held down with the reason, not relaunched as a generation past it.
    h.complete("j1", checkpoint("a", MAX_GENERATION, 5, t(-3)));
    let running = || {
        vec![observed(
            "j1",
            MAX_GENERATION,
            RunState::Running,
            0,
            "a-1",
            "a-2",
        )]
    };
    for at in [0, 10, 20, 21] {
        h.keep_alive(t(at));
        h.observe("a", t(at), &[(1, t(0))], running());
    }
    let after_fence = h.step(fenced("j1", MAX_GENERATION, "a"), t(22));
    assert_eq!(relaunches(&after_fence), vec![]);
    match &h.engine.job(&job("j1")).expect("tracked").phase {
        FailoverPhase::Down { reason } => {
            assert!(reason.contains("largest twinsite launches"), "{reason}")
        }
        phase => panic!("expected down at the last generation, got {phase:?}"),
    }
}
