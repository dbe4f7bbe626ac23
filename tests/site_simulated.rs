//! The simulated site: checkpoints on a virtual clock, the "never two generations" rule,
//! fault injection, restore and savepoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use scheduler::model::{
    JobId, JobPlacement, Node, PodPlacement, PodRole, Resources, SiteId, SiteSnapshot,
};
use twinsite::site::simulated::{
    Fault, NUM_RETAINED_KEY, SimulatedSite, SimulatedSiteConfig, read_checkpoint_metadata,
};
use twinsite::site::{JobState, LaunchSpec, ManualClock, Site, SiteError};

const INTERVAL: Duration = Duration::from_secs(10);

fn node(name: &str) -> Node {
    Node {
        owner_usage: None,
        name: name.to_owned(),
        labels: BTreeMap::from([("kubernetes.io/hostname".to_owned(), name.to_owned())]),
        taints: vec![],
        unschedulable: false,
        ready: true,
        allocatable: Resources::new(16_000, 64 << 30, 110),
    }
}

struct Fixture {
    site: SimulatedSite,
    clock: ManualClock,
    _storage: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_with(SimulatedSiteConfig::default())
}

fn fixture_with(config: SimulatedSiteConfig) -> Fixture {
    let storage = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    let snapshot = SiteSnapshot {
        id: SiteId("dc-a".into()),
        nodes: vec![node("n1"), node("n2"), node("n3")],
        running_pods: vec![],
    };
    let site = SimulatedSite::new(snapshot, storage.path(), Arc::new(clock.clone()), config);
    Fixture {
        site,
        clock,
        _storage: storage,
    }
}

impl Fixture {
    /// Moves the virtual clock by `by` and lets the site catch up.
    fn pass(&self, by: Duration) {
        self.clock.advance(by);
        self.site.tick();
    }

    async fn only_job(&self) -> twinsite::site::JobObservation {
        let jobs = self.site.jobs().await.unwrap();
        assert_eq!(jobs.len(), 1, "expected exactly one job, got {jobs:?}");
        jobs.into_iter().next().unwrap()
    }
}

/// JobManager on n1, TaskManagers on n2 and n3.
fn spec(generation: u64) -> LaunchSpec {
    let job = JobId::new("team-a", "orders");
    LaunchSpec {
        job: job.clone(),
        generation,
        epoch: 0,
        placement: JobPlacement {
            job,
            site: SiteId("dc-a".into()),
            pods: vec![
                PodPlacement {
                    role: PodRole::Jobmanager,
                    index: 0,
                    node: "n1".into(),
                },
                PodPlacement {
                    role: PodRole::Taskmanager,
                    index: 0,
                    node: "n2".into(),
                },
                PodPlacement {
                    role: PodRole::Taskmanager,
                    index: 1,
                    node: "n3".into(),
                },
            ],
        },
        image: "flink:1.20".into(),
        flink_version: "v1_20".into(),
        jar_uri: "hdfs:///jars/orders.jar".into(),
        entry_class: None,
        args: vec![],
        env: BTreeMap::new(),
        parallelism: 4,
        task_slots: 2,
        job_manager: Resources::new(1000, 2 << 30, 1),
        task_manager: Resources::new(2000, 4 << 30, 1),
        tolerations: vec![],
        flink_configuration: BTreeMap::new(),
        checkpoint_dir: "hdfs:///flink/checkpoints/team-a/orders".into(),
        checkpoint_interval_ms: u64::try_from(INTERVAL.as_millis()).unwrap(),
        restore_from: None,
    }
}

#[tokio::test]
async fn a_running_job_completes_a_checkpoint_every_interval_with_its_shared_files() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    assert_eq!(f.only_job().await.state, JobState::Running);

    f.pass(INTERVAL / 2);
    assert_eq!(f.only_job().await.latest_completed_checkpoint, None);

    f.pass(INTERVAL / 2);
    let first = f.only_job().await.latest_completed_checkpoint.unwrap();
    assert_eq!(first.id, 1);
    assert!(
        first
            .path
            .starts_with("hdfs:///flink/checkpoints/team-a/orders/")
    );
    assert!(first.path.ends_with("/chk-1"));
    assert_eq!(first.completed_at, f.clock.now_for_test());

    f.pass(INTERVAL);
    let second = f.only_job().await.latest_completed_checkpoint.unwrap();
    assert_eq!(second.id, 2);
    let metadata = read_checkpoint_metadata(&f.site, &second.path).unwrap();
    assert_eq!(metadata.checkpoint_id, 2);
    // Odd checkpoints add two shared files, even ones one; the window covers both.
    assert_eq!(metadata.files.len(), 3, "{metadata:?}");
    for file in &metadata.files {
        assert!(file.contains("/shared/"), "{file}");
        assert!(f.site.resolve(file).unwrap().is_file(), "{file} missing");
    }
}

trait NowForTest {
    fn now_for_test(&self) -> chrono::DateTime<Utc>;
}

impl NowForTest for ManualClock {
    fn now_for_test(&self) -> chrono::DateTime<Utc> {
        twinsite::site::Clock::now(self)
    }
}

#[tokio::test]
async fn checkpoints_beyond_retention_are_removed_with_the_shared_files_nobody_references() {
    let f = fixture_with(SimulatedSiteConfig {
        default_retained_checkpoints: 1,
        shared_file_window: 2,
        cluster_file: None,
        ..SimulatedSiteConfig::default()
    });
    let mut spec = spec(1);
    spec.flink_configuration
        .insert(NUM_RETAINED_KEY.into(), "2".into());
    f.site.launch(&spec).await.unwrap();
    let mut paths = vec![];
    for _ in 0..5 {
        f.pass(INTERVAL);
        paths.push(f.only_job().await.latest_completed_checkpoint.unwrap().path);
    }
    let on_disk: Vec<bool> = paths
        .iter()
        .map(|p| f.site.resolve(p).unwrap().join("_metadata").is_file())
        .collect();
    assert_eq!(on_disk, [false, false, false, true, true]);

    let job_dir = f
        .site
        .resolve(&paths[4])
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let mut shared_on_disk: Vec<String> = std::fs::read_dir(job_dir.join("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    shared_on_disk.sort();
    let mut referenced: Vec<String> = paths[3..]
        .iter()
        .flat_map(|p| read_checkpoint_metadata(&f.site, p).unwrap().files)
        .map(|uri| uri.rsplit('/').next().unwrap().to_owned())
        .collect();
    referenced.sort();
    referenced.dedup();
    assert_eq!(shared_on_disk, referenced);
}

#[tokio::test]
async fn launching_the_same_generation_twice_runs_one_copy() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.pass(INTERVAL);
    f.site.launch(&spec(1)).await.unwrap();
    let job = f.only_job().await;
    assert_eq!(job.generation, 1);
    assert_eq!(job.latest_completed_checkpoint.unwrap().id, 1);
}

#[tokio::test]
async fn a_second_generation_is_refused_until_the_first_is_stopped() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    let refused = f.site.launch(&spec(2)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            SiteError::GenerationConflict {
                running: 1,
                requested: 2,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(!refused.is_retryable());

    f.site.stop(&spec(1).job, 1).await.unwrap();
    f.site.stop(&spec(1).job, 1).await.unwrap();
    f.site.launch(&spec(2)).await.unwrap();
    assert_eq!(f.only_job().await.generation, 2);
}

#[tokio::test]
async fn a_stopped_generation_never_comes_back() {
    let f = fixture();
    f.site.launch(&spec(3)).await.unwrap();
    f.site.stop(&spec(3).job, 3).await.unwrap();
    for generation in [2, 3] {
        let refused = f.site.launch(&spec(generation)).await.unwrap_err();
        assert!(
            matches!(refused, SiteError::StaleGeneration { stopped: 3, .. }),
            "{refused:?}"
        );
    }
    assert!(f.site.jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_placement_for_another_site_or_an_unknown_node_is_invalid() {
    let f = fixture();
    let mut elsewhere = spec(1);
    elsewhere.placement.site = SiteId("dc-b".into());
    let error = f.site.launch(&elsewhere).await.unwrap_err();
    assert!(error.to_string().contains("dc-b"), "{error}");

    let mut unknown_node = spec(1);
    unknown_node.placement.pods[1].node = "n9".into();
    let error = f.site.launch(&unknown_node).await.unwrap_err();
    assert!(matches!(error, SiteError::Invalid { .. }), "{error:?}");
    assert!(error.to_string().contains("n9"), "{error}");
}

#[tokio::test]
async fn losing_the_job_manager_node_fails_the_job_until_the_node_returns() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.pass(INTERVAL);
    f.site
        .handle()
        .inject(Fault::NodeDown { node: "n1".into() })
        .unwrap();
    assert_eq!(f.only_job().await.state, JobState::Failed);
    let ready: Vec<bool> = f
        .site
        .snapshot()
        .await
        .unwrap()
        .nodes
        .iter()
        .map(|n| n.ready)
        .collect();
    assert_eq!(ready, [false, true, true]);

    f.pass(INTERVAL * 3);
    assert_eq!(
        f.only_job().await.latest_completed_checkpoint.unwrap().id,
        1
    );

    f.site
        .handle()
        .clear(Fault::NodeDown { node: "n1".into() })
        .unwrap();
    let job = f.only_job().await;
    assert_eq!((job.state, job.restarts), (JobState::Running, 1));
    f.pass(INTERVAL);
    assert_eq!(
        f.only_job().await.latest_completed_checkpoint.unwrap().id,
        2
    );
}

#[tokio::test]
async fn losing_a_task_manager_node_leaves_the_job_restarting() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.site
        .handle()
        .inject(Fault::NodeDown { node: "n3".into() })
        .unwrap();
    assert_eq!(f.only_job().await.state, JobState::Restarting);
    assert_eq!(f.only_job().await.nodes, ["n1", "n2", "n3"]);
}

/// Kubernetes evicts the lost node's TaskManager pod once its toleration runs out and
/// schedules it on a ready node with room: the same generation runs again, Flink having
/// restarted it once, and checkpoints again.
#[tokio::test]
async fn a_task_manager_on_a_lost_node_is_scheduled_on_another_node_after_its_toleration() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.pass(Duration::from_secs(1));
    f.site
        .handle()
        .inject(Fault::NodeDown { node: "n3".into() })
        .unwrap();
    f.pass(Duration::from_secs(29));
    assert_eq!(
        f.only_job().await.state,
        JobState::Restarting,
        "within the toleration"
    );
    f.pass(Duration::from_secs(1));
    let job = f.only_job().await;
    assert_eq!(
        (job.state, job.generation, job.restarts),
        (JobState::Running, 1, 1)
    );
    assert_eq!(
        job.nodes,
        ["n1", "n2"],
        "the TaskManager of n3 went to n1 (first with room)"
    );
    f.pass(INTERVAL);
    assert!(f.only_job().await.latest_completed_checkpoint.is_some());
}

/// A job whose JobManager node is down is not the eviction's to save: it stays failed for
/// the controller to relaunch, its TaskManager where it was.
#[tokio::test]
async fn a_job_whose_job_manager_node_is_down_keeps_its_task_managers_in_place() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    for node in ["n1", "n3"] {
        f.site
            .handle()
            .inject(Fault::NodeDown { node: node.into() })
            .unwrap();
    }
    f.pass(Duration::from_secs(60));
    let job = f.only_job().await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.nodes, ["n1", "n2", "n3"]);
}

#[tokio::test]
async fn a_partitioned_site_is_unreachable_but_its_jobs_keep_checkpointing() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    let handle = f.site.handle();
    handle.inject(Fault::Partition).unwrap();
    let contact_before = f.site.health().await.last_contact;

    f.pass(INTERVAL);
    f.pass(INTERVAL);
    assert!(matches!(
        f.site.jobs().await.unwrap_err(),
        SiteError::Unreachable { .. }
    ));
    assert!(f.site.launch(&spec(1)).await.unwrap_err().is_retryable());
    let health = f.site.health().await;
    assert!(!health.api_reachable);
    assert_eq!(health.last_contact, contact_before);

    handle.clear(Fault::Partition).unwrap();
    let job = f.only_job().await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.latest_completed_checkpoint.unwrap().id, 2);
}

#[tokio::test]
async fn a_site_that_went_down_takes_no_checkpoints_and_brings_its_jobs_back_with_it() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.pass(INTERVAL);
    let handle = f.site.handle();
    handle.inject(Fault::SiteDown).unwrap();
    assert!(!f.site.health().await.api_reachable);
    f.pass(INTERVAL * 5);

    handle.clear(Fault::SiteDown).unwrap();
    let job = f.only_job().await;
    assert_eq!((job.state, job.restarts), (JobState::Running, 1));
    assert_eq!(job.latest_completed_checkpoint.unwrap().id, 1);
}

#[tokio::test]
async fn slow_storage_delays_each_checkpoint_and_keeps_one_in_flight() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.site
        .handle()
        .inject(Fault::SlowStorage { delay_ms: 15_000 })
        .unwrap();
    f.pass(INTERVAL);
    assert_eq!(f.only_job().await.latest_completed_checkpoint, None);
    f.pass(INTERVAL);
    assert_eq!(f.only_job().await.latest_completed_checkpoint, None);
    f.pass(INTERVAL);
    assert_eq!(
        f.only_job().await.latest_completed_checkpoint.unwrap().id,
        1
    );

    f.site
        .handle()
        .clear(Fault::SlowStorage { delay_ms: 0 })
        .unwrap();
    assert!(f.site.handle().active_faults().is_empty());
}

#[tokio::test]
async fn a_relaunch_restores_from_an_explicit_checkpoint_and_continues_its_numbering() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.pass(INTERVAL);
    f.pass(INTERVAL);
    let restore_from = f.only_job().await.latest_completed_checkpoint.unwrap().path;
    f.site.stop(&spec(1).job, 1).await.unwrap();

    let mut next = spec(2);
    next.restore_from = Some(restore_from.clone());
    f.site.launch(&next).await.unwrap();
    f.pass(INTERVAL);
    let checkpoint = f.only_job().await.latest_completed_checkpoint.unwrap();
    assert_eq!(checkpoint.id, 3);
    assert_ne!(
        checkpoint.path.rsplit_once('/').unwrap().0,
        restore_from.rsplit_once('/').unwrap().0,
        "a new generation writes into its own job directory"
    );
}

#[tokio::test]
async fn a_checkpoint_missing_a_referenced_file_is_not_restorable() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.pass(INTERVAL);
    let checkpoint = f.only_job().await.latest_completed_checkpoint.unwrap().path;
    f.site.stop(&spec(1).job, 1).await.unwrap();
    let missing = read_checkpoint_metadata(&f.site, &checkpoint)
        .unwrap()
        .files[0]
        .clone();
    std::fs::remove_file(f.site.resolve(&missing).unwrap()).unwrap();

    let mut next = spec(2);
    next.restore_from = Some(checkpoint);
    let error = f.site.launch(&next).await.unwrap_err();
    assert!(matches!(error, SiteError::Invalid { .. }), "{error:?}");
    assert!(error.to_string().contains(&missing), "{error}");

    next.restore_from = Some("hdfs:///flink/checkpoints/nowhere/chk-9".into());
    let error = f.site.launch(&next).await.unwrap_err();
    assert!(error.to_string().contains("nowhere/chk-9"), "{error}");
}

#[tokio::test]
async fn stop_with_savepoint_stops_the_job_and_returns_a_restorable_path() {
    let f = fixture();
    f.site.launch(&spec(1)).await.unwrap();
    f.pass(INTERVAL);
    let savepoint = f
        .site
        .stop_with_savepoint(&spec(1).job, 1, "hdfs:///flink/savepoints/team-a")
        .await
        .unwrap();
    assert!(
        savepoint.starts_with("hdfs:///flink/savepoints/team-a/savepoint-"),
        "{savepoint}"
    );
    assert!(f.site.jobs().await.unwrap().is_empty());

    let mut next = spec(2);
    next.restore_from = Some(savepoint);
    f.site.launch(&next).await.unwrap();
    f.pass(INTERVAL);
    // The savepoint took id 2 from the checkpoint counter, as Flink's do.
    assert_eq!(
        f.only_job().await.latest_completed_checkpoint.unwrap().id,
        3
    );
}

#[tokio::test]
async fn a_savepoint_of_a_job_that_is_not_running_is_refused() {
    let f = fixture();
    let error = f
        .site
        .stop_with_savepoint(&spec(1).job, 1, "hdfs:///sp")
        .await
        .unwrap_err();
    assert!(matches!(error, SiteError::NotRunning { .. }), "{error:?}");

    f.site.launch(&spec(1)).await.unwrap();
    f.site
        .handle()
        .inject(Fault::NodeDown { node: "n2".into() })
        .unwrap();
    let error = f
        .site
        .stop_with_savepoint(&spec(1).job, 1, "hdfs:///sp")
        .await
        .unwrap_err();
    assert!(matches!(error, SiteError::NotRunning { .. }), "{error:?}");
}

#[tokio::test]
async fn every_observable_change_moves_the_change_counter() {
    let f = fixture();
    let mut changes = f.site.changes();
    let start = *changes.borrow_and_update();
    f.site.launch(&spec(1)).await.unwrap();
    assert!(changes.has_changed().unwrap());
    let after_launch = *changes.borrow_and_update();
    assert!(after_launch > start);

    f.pass(INTERVAL / 2);
    assert!(!changes.has_changed().unwrap(), "nothing happened yet");
    f.pass(INTERVAL / 2);
    assert!(changes.has_changed().unwrap(), "a checkpoint completed");
}

#[test]
fn faults_have_a_stable_json_shape() {
    let faults = vec![
        Fault::NodeDown { node: "n1".into() },
        Fault::SiteDown,
        Fault::Partition,
        Fault::SlowStorage { delay_ms: 5000 },
    ];
    let json = serde_json::to_value(&faults).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"kind": "node-down", "node": "n1"},
            {"kind": "site-down"},
            {"kind": "partition"},
            {"kind": "slow-storage", "delay_ms": 5000},
        ])
    );
    let back: Vec<Fault> = serde_json::from_value(json).unwrap();
    assert_eq!(back, faults);
    assert!(serde_json::from_str::<Fault>(r#"{"kind":"meteor"}"#).is_err());
}

#[test]
fn injecting_a_fault_on_an_unknown_node_is_refused() {
    let f = fixture();
    let error = f
        .site
        .handle()
        .inject(Fault::NodeDown { node: "n42".into() })
        .unwrap_err();
    assert!(error.to_string().contains("n42"), "{error}");
}

#[derive(Debug, Clone)]
enum Op {
    Launch(u64),
    Stop(u64),
    Toggle(usize),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..5).prop_map(Op::Launch),
        (1u64..5).prop_map(Op::Stop),
        (0usize..4).prop_map(Op::Toggle),
        Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the controller asks and whatever fails, the site never runs two generations
    /// of one job, never runs a generation it stopped, and refuses launches at or below a
    /// stopped generation.
    #[test]
    fn never_two_generations_and_never_a_stopped_one(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let f = fixture();
            let handle = f.site.handle();
            let faults = [
                Fault::NodeDown { node: "n1".into() },
                Fault::NodeDown { node: "n2".into() },
                Fault::Partition,
                Fault::SiteDown,
            ];
            let mut active = [false; 4];
            let mut stopped = std::collections::BTreeSet::new();
            for op in ops {
                match op {
                    Op::Launch(g) => {
                        let already_running = f.site.jobs().await.is_ok_and(|jobs| jobs.iter().any(|j| j.generation == g));
                        let launched = f.site.launch(&spec(g)).await;
                        if !already_running && stopped.range(g..).next().is_some() {
                            prop_assert!(launched.is_err(), "generation {g} launched after a stop of {stopped:?}");
                        }
                    }
                    Op::Stop(g) => {
                        if f.site.stop(&spec(g).job, g).await.is_ok() {
                            stopped.insert(g);
                        }
                    }
                    Op::Toggle(i) => {
                        active[i] = !active[i];
                        if active[i] { handle.inject(faults[i].clone()).unwrap(); }
                        else { handle.clear(faults[i].clone()).unwrap(); }
                    }
                    Op::Tick => f.pass(INTERVAL),
                }
                if let Ok(jobs) = f.site.jobs().await {
                    prop_assert!(jobs.len() <= 1, "{jobs:?}");
                    for job in jobs {
                        prop_assert!(!stopped.contains(&job.generation), "{job:?} after stops of {stopped:?}");
                    }
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_site_can_be_built_from_kubectl_json() {
    let storage = tempfile::tempdir().unwrap();
    let site = SimulatedSite::from_kubectl_json(
        SiteId("dc-a".into()),
        &std::fs::read_to_string("tests/fixtures/kube/nodes.json").unwrap(),
        Some(&std::fs::read_to_string("tests/fixtures/kube/pods.json").unwrap()),
        storage.path(),
        Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        )),
        SimulatedSiteConfig::default(),
    )
    .unwrap();
    let snapshot = site.snapshot().await.unwrap();
    assert_eq!(snapshot.nodes.len(), 3);
    assert!(snapshot.running_pods.iter().any(|p| p.name == "batch-7f9c"));

    let error = SimulatedSite::from_kubectl_json(
        SiteId("dc-a".into()),
        r#"{"kind":"NodeList","apiVersion":"v1","items":[{"metadata":{"name":"x"},"status":{"allocatable":{"cpu":"lots"}}}]}"#,
        None,
        storage.path(),
        Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())),
        SimulatedSiteConfig::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("lots"), "{error}");
}

/// Prints how long one tick takes with a thousand running jobs (a figure, not a pass/fail):
/// `cargo test -p twinsite --release --test site_simulated -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn print_tick_cost_for_a_thousand_jobs() {
    let f = fixture();
    for i in 0..1000 {
        let mut s = spec(1);
        s.job = JobId::new("team-a", &format!("job-{i}"));
        s.placement.job = s.job.clone();
        s.checkpoint_dir = format!("hdfs:///flink/checkpoints/team-a/job-{i}");
        f.site.launch(&s).await.unwrap();
    }
    for round in 0..5 {
        f.clock.advance(INTERVAL);
        let started = std::time::Instant::now();
        let report = f.site.tick();
        println!(
            "tick {round}: {} checkpoints in {:?}",
            report.completed.len(),
            started.elapsed()
        );
        assert_eq!(report.completed.len(), 1000);
    }
}
