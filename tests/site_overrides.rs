//! Per-site overrides from the store to what a site runs: a job that reads a different Kafka
//! cluster in each site is launched in its preferred site with that site's settings, and,
//! when that site is lost, relaunched in the other one with the other site's settings and
//! the completion time of the checkpoint it restored (`${restore.completedAt}`), through the
//! controller's own reconcile pass, failover engine and replication driver, into the
//! simulated sites' launch records.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use scheduler::input::{Policy, StreamJob, parse_stream_jobs};
use scheduler::model::{JobId, SiteId, SiteSnapshot};
use support::fixtures::node;
use twinsite::controller::{Controller, new_record};
use twinsite::replication::ReplicationDriver;
use twinsite::site::simulated::{Fault, SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{CheckpointKind, EmbeddedStateStore, Expected, StateStore};

const SITE_GRACE: Duration = Duration::from_secs(2);

const ORDERS: &str = r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: shop}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  args: [--brokers, kafka-default:9092]
  parallelism: 2
  jobManager: {resources: {cpu: "1", memory: 2Gi}}
  taskManager: {resources: {cpu: "2", memory: 4Gi}, slots: 1}
  placement: {sites: {preferred: dc-a}}
  checkpoints: {dir: "hdfs:///flink/checkpoints/shop/orders", interval: 10s, retained: 2}
  siteOverrides:
    dc-a:
      args: [--brokers, "kafka.${site}:9092", "--from=${restore.completedAt:-earliest}"]
      env: {KAFKA_BOOTSTRAP: "kafka.${site}:9092"}
    dc-b:
      args: [--brokers, "kafka.${site}:9092", "--from=${restore.completedAt:-earliest}"]
      env: {KAFKA_BOOTSTRAP: "kafka.${site}:9092", START_MS: "${restore.completedAtEpochMillis}"}
      flinkConfiguration: {pipeline.name: "orders (moved to ${site})"}
"#;

fn orders() -> StreamJob {
    parse_stream_jobs("test", ORDERS).unwrap().remove(0)
}

struct World {
    sims: BTreeMap<String, SimulatedSite>,
    store: Arc<EmbeddedStateStore>,
    clock: ManualClock,
    controller: Arc<Controller>,
    replication: ReplicationDriver,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(failover_engine: bool) -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Utc::now());
        let mut sims = BTreeMap::new();
        for name in ["dc-a", "dc-b"] {
            let sim = SimulatedSite::new(
                SiteSnapshot {
                    id: SiteId(name.into()),
                    nodes: (1..=4).map(|i| node(&format!("{name}-n{i}"))).collect(),
                    running_pods: vec![],
                },
                dir.path().join(name),
                Arc::new(clock.clone()),
                SimulatedSiteConfig::default(),
            );
            sims.insert(name.to_string(), sim);
        }
        let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
        let sites: BTreeMap<SiteId, Arc<dyn Site>> = sims
            .iter()
            .map(|(id, s)| (SiteId(id.clone()), Arc::new(s.clone()) as Arc<dyn Site>))
            .collect();
        let roots = sims
            .keys()
            .map(|id| {
                (
                    SiteId(id.clone()),
                    format!("file://{}", dir.path().join(id).display()),
                )
            })
            .collect();
        let mut config = failover::EngineConfig::new(sites.keys().cloned().collect());
        config.site.grace = SITE_GRACE;
        config.site.suspect_after = Duration::from_millis(600);
        let controller = Controller::new(
            sites,
            Arc::clone(&store) as Arc<dyn StateStore>,
            Policy::default_two_sites(),
        )
        .with_storage_roots(roots)
        .with_failover(config, failover_engine);
        controller.set_leading(true);
        let controller = Arc::new(controller);
        let replication = ReplicationDriver::open(
            Arc::clone(&controller),
            dir.path().join("replication"),
            None,
            4,
        )
        .await
        .unwrap();
        World {
            sims,
            store,
            clock,
            controller,
            replication,
            _dir: dir,
        }
    }

    async fn pass(&self) {
        self.controller.reconcile_once().await.unwrap();
    }

    /// Stores `job` with its jar in dc-a's storage, and lets the controller publish the jar
    /// to both sites (one pass): the next pass launches it.
    async fn add(&self, job: &StreamJob) {
        support::fixtures::upload_jar(&self._dir.path().join("dc-a"), job);
        self.store
            .put_job(&new_record(job), Expected::Absent)
            .await
            .unwrap();
        self.pass().await;
        assert!(
            self.controller
                .jar_publications_settled(Duration::from_secs(30))
                .await
        );
    }

    fn launched(&self, site: &str) -> twinsite::site::LaunchSpec {
        self.sims[site]
            .launched(&JobId::new("shop", "orders"))
            .unwrap_or_else(|| panic!("orders runs in {site}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_moved_to_the_other_site_reads_that_sites_kafka_from_the_time_of_its_restored_state()
{
    let w = World::new(true).await;
    w.add(&orders()).await;
    tracing::info!("--- first launch in dc-a: a fresh start, dc-a's settings");
    w.pass().await;
    let first = w.launched("dc-a");
    assert_eq!(
        first.args,
        ["--brokers", "kafka.dc-a:9092", "--from=earliest"]
    );
    assert_eq!(
        first.env,
        BTreeMap::from([("KAFKA_BOOTSTRAP".into(), "kafka.dc-a:9092".into())])
    );

    tracing::info!("--- checkpoints in dc-a, replicated to dc-b");
    for _ in 0..2 {
        w.clock.advance(Duration::from_secs(11));
        for sim in w.sims.values() {
            sim.tick();
        }
        w.pass().await;
    }
    w.replication.round().await.unwrap();
    w.pass().await;
    let replicated = w
        .store
        .get_checkpoint("shop", "orders", CheckpointKind::Replicated, "dc-b")
        .await
        .unwrap()
        .expect("a checkpoint replicated to dc-b")
        .value;

    tracing::info!("--- dc-a is lost: orders is relaunched in dc-b");
    w.sims["dc-a"].handle().inject(Fault::SiteDown).unwrap();
    let until = std::time::Instant::now() + SITE_GRACE + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        w.pass().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let record = w
        .store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(record.placement.as_ref().unwrap().site, "dc-b");
    let status = record.status.clone();
    assert_eq!(
        status.restore_from.as_deref(),
        Some(replicated.uri.as_str())
    );

    let moved = w.launched("dc-b");
    let completed =
        chrono::DateTime::from_timestamp_millis(replicated.recorded_at_unix_ms).unwrap();
    assert_eq!(
        moved.args,
        [
            "--brokers".to_owned(),
            "kafka.dc-b:9092".to_owned(),
            format!(
                "--from={}",
                completed.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )
        ],
        "dc-b's brokers, from the time of the checkpoint it restored"
    );
    assert_eq!(moved.env["KAFKA_BOOTSTRAP"], "kafka.dc-b:9092");
    assert_eq!(
        moved.env["START_MS"],
        replicated.recorded_at_unix_ms.to_string()
    );
    assert_eq!(
        moved.flink_configuration["pipeline.name"],
        "orders (moved to dc-b)"
    );
    assert_eq!(moved.restore_from.as_deref(), Some(replicated.uri.as_str()));
}

/// The reconcile pass's own relaunch (failover engine off): in the same site, from the latest
/// checkpoint, whose completion time the pass recorded when it saw it.
#[tokio::test]
async fn a_job_relaunched_in_its_site_seeks_to_the_time_of_its_latest_checkpoint() {
    let w = World::new(false).await;
    w.add(&orders()).await;
    w.pass().await;
    let first = w.launched("dc-a");
    w.clock.advance(Duration::from_secs(11));
    w.sims["dc-a"].tick();
    w.pass().await;
    let record = w
        .store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value;
    let checkpoint = record
        .status
        .clone()
        .last_checkpoint
        .expect("a checkpoint seen");
    let completed = checkpoint.completed_at.expect("with its completion time");

    let jm = first.job_manager_node().unwrap().to_owned();
    w.sims["dc-a"]
        .handle()
        .inject(Fault::NodeDown { node: jm })
        .unwrap();
    w.pass().await;
    w.pass().await;
    let relaunched = w.launched("dc-a");
    assert!(relaunched.generation > first.generation);
    assert_eq!(
        relaunched.restore_from.as_deref(),
        Some(checkpoint.path.as_str())
    );
    assert_eq!(
        relaunched.args[2],
        format!(
            "--from={}",
            completed.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
    );
}
