//! One job fails: its JobManager node is lost, its TaskManagers are, it crash-loops, or it
//! fails before a checkpoint; and jobs the driver launched or removed on its own.

use super::prelude::*;

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
