//! End to end with real Apache Flink (PyFlink from PyPI, RocksDB, incremental checkpoints):
//! the controller launches a keyed counter in a local-Flink site, records its checkpoints,
//! and when the job's process dies relaunches the next generation from the latest checkpoint
//! with its keyed state intact.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler::input::{Policy, parse_stream_jobs};
use scheduler::model::{JobId, Resources, SiteId};
use support::flink::{
    counts, flink_python, is_a_cut_of, keyed_counter_job_yaml, max_counts, started_from,
};
use twinsite::controller::{Controller, JobPhase, new_record};
use twinsite::site::Site;
use twinsite::site::local_flink::{LocalFlinkConfig, LocalFlinkSite};
use twinsite::state::{EmbeddedStateStore, Expected, StateStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_flink_job_is_relaunched_from_its_latest_checkpoint_with_its_state() {
    let python = flink_python();
    let dir = tempfile::tempdir().unwrap();
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
    let mut locals = BTreeMap::new();
    for name in ["dc-a", "dc-b"] {
        let site = LocalFlinkSite::new(LocalFlinkConfig {
            site: SiteId(name.into()),
            storage_root: dir.path().join(name),
            python: python.clone(),
            log_dir: dir.path().join("logs").join(name),
            capacity: Resources::new(8_000, 16 << 30, 110),
        });
        locals.insert(name, site.clone());
        sites.insert(SiteId(name.into()), Arc::new(site));
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let controller = Controller::new(
        sites,
        Arc::clone(&store) as Arc<dyn StateStore>,
        Policy::default_two_sites(),
    );
    controller.set_leading(true);
    let yaml = keyed_counter_job_yaml();
    let job = parse_stream_jobs("counter.yaml", &yaml).unwrap().remove(0);
    store
        .put_job(&new_record(&job), Expected::Absent)
        .await
        .unwrap();
    let id = JobId::new("shop", "counter");
    let site = &locals["dc-a"];

    let report = controller.reconcile_once().await.unwrap();
    assert_eq!(report.launched, [(id.clone(), 1)], "{report:?}");

    // Run until the controller has recorded a few checkpoints of generation 1.
    let deadline = Instant::now() + Duration::from_secs(180);
    let checkpoint = loop {
        controller.reconcile_once().await.unwrap();
        let record = store
            .get_job("shop", "counter")
            .await
            .unwrap()
            .unwrap()
            .value;
        let status = record.status.clone();
        if let Some(c) = status.last_checkpoint.clone().filter(|c| c.id >= 3) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoints recorded in 180 s: {status:?}; log {}",
            site.log_path(&id, 1).display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let pointers = store.list_checkpoints("shop", "counter").await.unwrap();
    assert!(
        pointers
            .iter()
            .any(|p| p.site == "dc-a" && p.pointer.value.checkpoint_id >= 3)
    );

    // The job's processes die (its JobManager's node is gone, say).
    let before = max_counts(&site.log_path(&id, 1));
    assert!(!before.is_empty(), "generation 1 printed no counts");
    let pid = site.pid(&id, 1).expect("generation 1 runs");
    let killed = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(killed.success());

    // The controller sees generation 1 failed and relaunches generation 2 from a checkpoint.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = controller.reconcile_once().await.unwrap();
        if report.launched.contains(&(id.clone(), 2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no relaunch within 60 s: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let record = store
        .get_job("shop", "counter")
        .await
        .unwrap()
        .unwrap()
        .value;
    let status = record.status.clone();
    let restored = status.restore_from.clone().unwrap();
    assert!(restored.contains("/chk-"), "{restored}");
    assert!(
        status.relaunches == 1 && record.generation == 2,
        "{status:?}"
    );
    assert!(checkpoint.id >= 3);

    // Generation 2 continues the counts instead of starting at 1: the keyed state came back.
    // It starts from what generation 1 had counted at some point (a checkpoint's state is a
    // prefix of gen 1's printed updates), and not from nothing. A key gen 1 had barely seen
    // may rightly start from 0: the restored checkpoint can predate its first row.
    let log2 = site.log_path(&id, 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        controller.reconcile_once().await.unwrap();
        let from = started_from(&log2);
        if from.len() == 5 {
            let gen1 = counts(&site.log_path(&id, 1));
            assert!(
                is_a_cut_of(&gen1, &from),
                "generation 2 started from {from:?}, which generation 1 never had counted at once (its last counts: {before:?})"
            );
            assert!(
                from.values().sum::<i64>() > 0,
                "generation 2 counted every key from scratch: {from:?} (before: {before:?})"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "generation 2 did not print every key within 120 s: {from:?}; log {}",
            log2.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = store
        .get_job("shop", "counter")
        .await
        .unwrap()
        .unwrap()
        .value
        .status
        .clone();
    assert_eq!(status.phase, JobPhase::Running, "{status:?}");
    assert_eq!(site.jobs().await.unwrap().len(), 1);
}
