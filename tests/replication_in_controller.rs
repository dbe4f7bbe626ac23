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
use twinsite::controller::{Controller, new_record};
use twinsite::replication::ReplicationDriver;
use twinsite::site::sim_metadata;
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

/// Two simulated sites with storage below one temporary directory, the controller, the job
/// placed nowhere yet, and its replication driver.
struct World {
    dir: tempfile::TempDir,
    clock: ManualClock,
    sims: BTreeMap<&'static str, SimulatedSite>,
    store: Arc<EmbeddedStateStore>,
    controller: Arc<Controller>,
    driver: ReplicationDriver,
    job: scheduler::input::StreamJob,
}

async fn world() -> World {
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
    // The job's jar, uploaded to dc-a and published to both sites by a first pass.
    let jar = dir.path().join("dc-a/jars/orders.jar");
    std::fs::create_dir_all(jar.parent().unwrap()).unwrap();
    std::fs::write(jar, b"PK orders").unwrap();
    store
        .put_job(&new_record(&job), Expected::Absent)
        .await
        .unwrap();
    controller.reconcile_once().await.unwrap();
    assert!(
        controller
            .jar_publications_settled(Duration::from_secs(30))
            .await
    );
    let driver = ReplicationDriver::open(
        Arc::clone(&controller),
        dir.path().join("replication"),
        None,
        4,
    )
    .await
    .unwrap();

    World {
        dir,
        clock,
        sims,
        store,
        controller,
        driver,
        job,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_verified_copy_becomes_the_replicated_pointer_and_restores_in_the_peer() {
    let World {
        dir,
        clock,
        sims,
        store,
        controller,
        driver,
        job,
    } = world().await;
    controller.reconcile_once().await.unwrap();
    // Nothing checkpointed yet: nothing to record, and no error either.
    let round = driver.round().await.unwrap();
    assert!(round.recorded.is_empty(), "{round:?}");

    for _ in 0..3 {
        clock.advance(Duration::from_secs(11));
        sims["dc-a"].tick();
    }
    controller.reconcile_once().await.unwrap();
    let completed = store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value
        .status
        .clone()
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
        Some(twinsite::controller::launch::Restore {
            path: pointer.uri.clone(),
            completed_at: chrono::DateTime::from_timestamp_millis(pointer.recorded_at_unix_ms),
        }),
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

/// A job restored in CLAIM mode from a native savepoint checkpoints with references into the
/// savepoint, which lies in its site's storage beside the checkpoints. The controller
/// replicates such a checkpoint within each site's storage root, and tells hdfs-sync where
/// the job was restored from (its status' `restoreFrom`) so that Flink 2.3.0's names of the
/// savepoint's files, relative to `chk-N/` where they are not, can be found and relocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_using_a_savepoints_files_replicates_them_within_the_site_storage() {
    let World {
        dir,
        clock,
        sims,
        store,
        controller,
        driver,
        ..
    } = world().await;
    controller.reconcile_once().await.unwrap();
    for _ in 0..2 {
        clock.advance(Duration::from_secs(11));
        sims["dc-a"].tick();
    }
    controller.reconcile_once().await.unwrap();
    let record = store.get_job("shop", "orders").await.unwrap().unwrap();
    let newest = record.value.status.clone().last_checkpoint.unwrap();
    let chk = std::path::PathBuf::from(newest.path.strip_prefix("file://").unwrap());

    // --- the savepoint generation 1 was restored from, in dc-a's storage
    let savepoint_path = "flink/savepoints/shop/orders/savepoint-0a1b2c-0123456789ab";
    let savepoint = dir.path().join("dc-a").join(savepoint_path);
    std::fs::create_dir_all(&savepoint).unwrap();
    std::fs::write(savepoint.join("d288d179"), b"an SST file of the savepoint").unwrap();
    // --- the newest checkpoint names it as Flink 2.3.0 does: relative to chk-N/
    let bytes = std::fs::read(chk.join("_metadata")).unwrap();
    let mut meta = sim_metadata::parse(&newest.path, &bytes).unwrap();
    let absolute = format!("file:{}/d288d179", savepoint.display());
    meta.files.push(absolute.clone());
    let size_of = |uri: &str| {
        std::fs::metadata(uri.strip_prefix("file:").unwrap())
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let with_uri = sim_metadata::render(&meta, size_of);
    std::fs::write(
        chk.join("_metadata"),
        as_relative(&with_uri, &absolute, "d288d179"),
    )
    .unwrap();

    // Without knowing where the job was restored from, the checkpoint is refused by name.
    let round = driver.round().await.unwrap();
    assert!(round.recorded.is_empty(), "{round:?}");
    assert!(
        round
            .failed
            .iter()
            .any(|(_, _, reason)| reason.contains("`d288d179`") && reason.contains("FLINK-39964")),
        "{round:?}"
    );

    // A restore path that cannot be in dc-a's storage is no help, and no harm either: the
    // round fails as before, naming the file, instead of refusing the job's replication.
    let mut status = record.value.status.clone();
    status.restore_from = Some("file:///../escapes".into());
    let mut value = record.value.clone();
    value.status = status.clone();
    let revision = store
        .put_job(&value, Expected::Revision(record.revision))
        .await
        .unwrap();
    let round = driver.round().await.unwrap();
    assert!(
        round
            .failed
            .iter()
            .any(|(_, _, reason)| reason.contains("`d288d179`")),
        "{round:?}"
    );

    // The status says where generation 1 came from (as a launch from that savepoint sets it).
    status.restore_from = Some(format!("hdfs:///{savepoint_path}"));
    let mut value = record.value.clone();
    value.status = status.clone();
    store
        .put_job(&value, Expected::Revision(revision))
        .await
        .unwrap();
    let round = driver.round().await.unwrap();
    assert!(round.failed.is_empty(), "{round:?}");
    assert_eq!(round.recorded.len(), 1, "{round:?}");

    // The savepoint's file is at the same path in dc-b's storage, named there by URI.
    let peer_file = dir
        .path()
        .join("dc-b")
        .join(savepoint_path)
        .join("d288d179");
    assert_eq!(
        std::fs::read(&peer_file).unwrap(),
        b"an SST file of the savepoint"
    );
    let pointer = store
        .get_checkpoint("shop", "orders", CheckpointKind::Replicated, "dc-b")
        .await
        .unwrap()
        .unwrap()
        .value;
    let peer_chk = pointer.uri.strip_prefix("file://").unwrap();
    let peer_meta = std::fs::read(format!("{peer_chk}/_metadata")).unwrap();
    let parsed = sim_metadata::parse(&pointer.uri, &peer_meta).unwrap();
    assert!(
        parsed
            .files
            .contains(&format!("file:{}", peer_file.display())),
        "{parsed:?}"
    );
}

/// `metadata` with the File handle naming `uri` turned into a Relative handle naming `name`
/// (`type 2, size, path` becomes `type 6, name, size`), as Flink 2.3.0 writes a savepoint's
/// file after a CLAIM restore.
fn as_relative(metadata: &[u8], uri: &str, name: &str) -> Vec<u8> {
    let utf = |s: &str| {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    };
    let encoded = utf(uri);
    let at = metadata
        .windows(encoded.len())
        .position(|w| w == encoded.as_slice())
        .expect("the URI is in the metadata");
    let (handle, size) = (at - 9, &metadata[at - 8..at]);
    assert_eq!(metadata[handle], 2, "a File handle");
    let mut out = metadata[..handle].to_vec();
    out.push(6);
    out.extend_from_slice(&utf(name));
    out.extend_from_slice(size);
    out.extend_from_slice(&metadata[at + encoded.len()..]);
    out
}
