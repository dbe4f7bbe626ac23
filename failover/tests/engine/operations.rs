//! Ops-requested operations: planned switchover, forced failover, dry runs, cancelling, a
//! new leader resuming one, and what stops a job from moving.

use super::prelude::*;

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
