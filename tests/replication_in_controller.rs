//! Replication run by the controller: a job's checkpoints in its site are copied to the other
//! site, the newest verified copy becomes the job's `replicated` pointer for that site, and
//! the job can be launched in the other site from that pointer with every file present.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use scheduler::input::{Policy, parse_stream_jobs};
use scheduler::model::{JobId, SiteId, SiteSnapshot};
use support::fixtures::{node, placement};
use twinsite::controller::{Controller, JobStatus, new_record};
use twinsite::replication::ReplicationDriver;
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{CheckpointKind, EmbeddedStateStore, Expected, StateStore};

const JOB: &str = r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: shop}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  parallelism: 2
  jobManager: {resources: {cpu: "1", memory: 2Gi}}
  taskManager: {resources: {cpu: "2", memory: 4Gi}}
  placement: {sites: {preferred: dc-a}}
  checkpoints: {dir: "hdfs:///flink/checkpoints/shop/orders", interval: 10s, retained: 2}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_verified_copy_becomes_the_replicated_pointer_and_restores_in_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    let mut sims = BTreeMap::new();
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
    let mut roots = BTreeMap::new();
    for name in ["dc-a", "dc-b"] {
        let root = dir.path().join(name);
        let sim = SimulatedSite::new(
            SiteSnapshot {
                id: SiteId(name.into()),
                nodes: (1..=3).map(|i| node(&format!("{name}-n{i}"))).collect(),
                running_pods: vec![],
            },
            &root,
            Arc::new(clock.clone()),
            SimulatedSiteConfig::default(),
        );
        roots.insert(SiteId(name.into()), format!("file://{}", root.display()));
        sites.insert(SiteId(name.into()), Arc::new(sim.clone()));
        sims.insert(name, sim);
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let controller = Arc::new(
        Controller::new(
            sites,
            store.clone() as Arc<dyn StateStore>,
            Policy::default_two_sites(),
        )
        .with_storage_roots(roots),
    );
    controller.set_leading(true);
    let job = parse_stream_jobs("job.yaml", JOB).unwrap().remove(0);
    store
        .put_job(&new_record(&job), Expected::Absent)
        .await
        .unwrap();
    let driver = ReplicationDriver::open(
        Arc::clone(&controller),
        dir.path().join("replication"),
        None,
        4,
    )
    .await
    .unwrap();

    controller.reconcile_once().await.unwrap();
    // Nothing checkpointed yet: nothing to record, and no error either.
    let round = driver.round().await.unwrap();
    assert!(round.recorded.is_empty(), "{round:?}");

    for _ in 0..3 {
        clock.advance(Duration::from_secs(11));
        sims["dc-a"].tick();
    }
    controller.reconcile_once().await.unwrap();
    let completed = JobStatus::from_value(
        &store
            .get_job("shop", "orders")
            .await
            .unwrap()
            .unwrap()
            .value
            .status,
    )
    .last_checkpoint
    .unwrap();
    assert!(
        completed
            .path
            .starts_with(&format!("file://{}", dir.path().join("dc-a").display())),
        "checkpoints live in dc-a's storage: {}",
        completed.path
    );

    let round = driver.round().await.unwrap();
    assert!(round.failed.is_empty(), "{round:?}");
    assert_eq!(
        round.recorded,
        [(
            JobId::new("shop", "orders"),
            SiteId("dc-b".into()),
            completed.id
        )]
    );
    let pointer = store
        .get_checkpoint("shop", "orders", CheckpointKind::Replicated, "dc-b")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(pointer.checkpoint_id, completed.id);
    let peer_root = format!("file://{}", dir.path().join("dc-b").display());
    assert!(pointer.uri.starts_with(&peer_root), "{}", pointer.uri);

    // A second round with nothing new records nothing.
    assert!(driver.round().await.unwrap().recorded.is_empty());

    // dc-a is gone; the job starts in dc-b from the replicated copy, whose _metadata now
    // names dc-b's files (the simulated site checks every referenced file exists).
    std::fs::remove_dir_all(dir.path().join("dc-a")).unwrap();
    let placement = placement(&job.id(), "dc-b", "dc-b-n1", &["dc-b-n2", "dc-b-n3"]);
    let spec = twinsite::controller::launch::launch_spec(
        &job,
        2,
        &placement,
        Some(pointer.uri.clone()),
        Some(&peer_root),
        0,
    )
    .unwrap();
    sims["dc-b"].launch(&spec).await.unwrap();
    clock.advance(Duration::from_secs(11));
    sims["dc-b"].tick();
    let running = sims["dc-b"].jobs().await.unwrap();
    let next = running[0].latest_completed_checkpoint.as_ref().unwrap();
    assert_eq!(
        next.id,
        completed.id + 1,
        "Flink continues the restored checkpoint's counter"
    );
}
