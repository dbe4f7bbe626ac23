//! Engine tests in openraft's style: feed events at given instants, compare the commands.

mod common;

use std::collections::BTreeMap;
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
    /// listed in `silent_since`.
    fn observe(
        &mut self,
        at_site: &str,
        at: Timestamp,
        silent_since: &[(usize, Timestamp)],
        jobs: Vec<JobObserved>,
    ) -> Vec<Command> {
        let nodes = (1..=3)
            .map(|i| NodeHeartbeat {
                name: format!("{at_site}-{i}"),
                last_heartbeat: silent_since
                    .iter()
                    .find(|(n, _)| *n == i)
                    .map_or(at, |(_, since)| *since),
            })
            .collect();
        self.act(
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
    h.complete("j1", checkpoint("a", 1, 5, t(0)));
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
    let restore = checkpoint("a", 1, 5, t(0));
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
                rto_from_last_heartbeat: Some(Duration::from_secs(22)),
                rpo: Some(Duration::from_secs(22)),
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
    h.observe("a", t(91), &[], vec![])
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
    assert_eq!(normal.rpo, Some(Duration::from_secs(51)));
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
    let request = Event::OpsRequest(OpsRequest::Failover {
        from: site("a"),
        to: site("b"),
        mode: MoveMode::Planned,
        dry_run: false,
    });
    assert_eq!(
        h.act(request, t(10)),
        vec![Command::TriggerSavepoint {
            op: 1,
            job: job("j1"),
            generation: 1,
            site: site("a")
        }]
    );
    let mut sp = checkpoint("a", 1, 9, t(11));
    sp.kind = CheckpointKind::Savepoint;
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
        Some((site("b"), JobPhase::Running))
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
            ("ns/j-big", "not enough cpu", 3000),
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
    sp.kind = CheckpointKind::Savepoint;
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
            ("ns/j1".into(), "b".into(), 2, JobPhase::Running),
            ("ns/j2".into(), "a".into(), 1, JobPhase::Running),
            ("ns/j3".into(), "a".into(), 1, JobPhase::Running),
        ]
    );
}

#[test]
fn a_new_leader_resumes_a_site_failover_without_relaunching_any_job_twice() {
    let mut h = Harness::new(|c| c.max_in_flight = 1);
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
    h.step(Event::QuorumChanged(true), t(40));
    let next = h.act(
        Event::LaunchSucceeded {
            job: job("j1"),
            generation: 2,
            site: site("a"),
        },
        t(41),
    );
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
    h.replicated("j-big", checkpoint("a", 1, 3, t(0)));
    h.complete("j-big", checkpoint("b", 1, 6, t(0)));
    h.placer.refuse.insert(job("j-big"));
    h.observe("b", t(0), &[], vec![]);
    let lost = h.observe("a", t(31), &[], vec![]);
    assert_eq!(
        relaunches(&lost),
        vec![("ns/j1".into(), 2, "a".into(), Some(3))]
    );
    h.placer.refuse.clear();

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

#[test]
fn sites_heard_together_are_not_judged_on_an_old_contact_while_a_batch_is_processed() {
    let mut h = Harness::new(|_| {});
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "a");
    h.observe(
        "a",
        t(0),
        &[],
        vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")],
    );
    h.observe("b", t(0), &[], vec![]);
    // A batch at t(100): both sites answered. Without the contact first, processing a's
    // snapshot would judge b on its contact of t(0).
    assert_eq!(
        h.act(
            Event::SitesHeard {
                sites: ["a", "b"]
                    .map(|s| {
                        let nodes = (1..=3)
                            .map(|i| NodeHeartbeat {
                                name: format!("{s}-{i}"),
                                last_heartbeat: t(100),
                            })
                            .collect();
                        (site(s), t(100), nodes)
                    })
                    .to_vec(),
            },
            t(100),
        ),
        vec![]
    );
    let acted = h.observe(
        "a",
        t(100),
        &[],
        vec![observed("j1", 1, RunState::Running, 0, "a-1", "a-2")],
    );
    assert!(
        !acted
            .iter()
            .any(|c| matches!(c, Command::MarkSiteLost { .. })),
        "{acted:?}"
    );
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
