//! RPO exposure at a glance: the controller judges every replicated job against
//! `replication.maxLag`, exports `twinsite_replication_*`, and when a job crosses the bound
//! writes its `ReplicationBehind` condition and audits the crossing (the event), once. A
//! failing copy is shown with its error; a copy in progress shows its backlog; a real
//! Prometheus scrapes the series.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use scheduler::input::{parse_policy, parse_stream_jobs};
use scheduler::model::{JobId, SiteId, SiteSnapshot};
use support::fixtures::node;
use support::prometheus::PrometheusServer;
use twinsite::api::auth::Access;
use twinsite::api::{ApiState, router};
use twinsite::controller::status::REPLICATION_BEHIND;
use twinsite::controller::{Controller, JobStatus, new_record};
use twinsite::replication::ReplicationDriver;
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, StateStore};

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

/// Two simulated sites with a `replication.maxLag` of 2 s, so a test can outwait it.
const POLICY: &str = r#"apiVersion: twinsite.io/v1alpha1
kind: Policy
sites: [{name: dc-a}, {name: dc-b}]
replication: {maxLag: 2s}
"#;

const ADMIN: &str = "exposure-admin-token-0123456789";
const READ: &str = "exposure-read-token-9876543210";

struct World {
    dir: tempfile::TempDir,
    clock: ManualClock,
    sims: BTreeMap<&'static str, SimulatedSite>,
    store: Arc<EmbeddedStateStore>,
    controller: Arc<Controller>,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Utc::now());
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
                parse_policy("policy.yaml", POLICY).unwrap(),
            )
            .with_storage_roots(roots.clone()),
        );
        controller.set_leading(true);
        let job = parse_stream_jobs("job.yaml", JOB).unwrap().remove(0);
        // The job launches once the controller has published its jar to both sites.
        for root in roots.values() {
            support::fixtures::upload_jar(
                std::path::Path::new(root.trim_start_matches("file://")),
                &job,
            );
        }
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
        World {
            dir,
            clock,
            sims,
            store,
            controller,
        }
    }

    async fn driver(&self, bandwidth: Option<u64>) -> ReplicationDriver {
        ReplicationDriver::open(
            Arc::clone(&self.controller),
            self.dir.path().join("replication"),
            bandwidth,
            4,
        )
        .await
        .unwrap()
    }

    /// One more completed checkpoint in dc-a, recorded by a pass.
    async fn checkpoint(&self) {
        self.clock.advance(Duration::from_secs(11));
        self.sims["dc-a"].tick();
        self.controller.reconcile_once().await.unwrap();
    }

    async fn status(&self) -> JobStatus {
        let record = self.store.get_job("shop", "orders").await.unwrap().unwrap();
        record.value.status.clone()
    }

    async fn audits(&self, action: &str) -> Vec<String> {
        self.store
            .list_audit(1, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.action == action)
            .map(|r| r.entry.result)
            .collect()
    }

    /// The value of `name` for the job's replication from dc-a to dc-b (one job in these
    /// tests; families per site pair also hold dc-b to dc-a, in no fixed order).
    fn metric(&self, name: &str) -> Option<String> {
        let text = self.controller.metrics.encode();
        let line = text.lines().find(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains("site=\"dc-a\"")
                && l.contains("peer=\"dc-b\"")
        })?;
        line.rsplit(' ').next().map(str::to_string)
    }
}

fn orders() -> JobId {
    JobId::new("shop", "orders")
}

/// The story of one job: not restorable before its first checkpoint reaches the peer (but
/// not breached either, the bound has not passed), restorable once it does, breached when
/// the peer's copy grows older than `maxLag` (condition, one audit entry, metric), cleared by
/// the next copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_copy_older_than_max_lag_is_flagged_once_by_condition_event_and_metric_then_cleared()
{
    let w = World::new().await;
    let driver = w.driver(None).await;
    w.controller.reconcile_once().await.unwrap();

    tracing::info!("--- placed, nothing checkpointed yet");
    let report = w.controller.monitor_exposure().await.unwrap();
    assert_eq!(report.tracked, 1);
    assert!(report.breached.is_empty());
    let exposure = &w.controller.exposure.of(&orders())[0];
    assert_eq!(
        (exposure.site.as_str(), exposure.peer.as_str()),
        ("dc-a", "dc-b")
    );
    assert!(!exposure.exposure.restorable);
    assert_eq!(
        w.metric("twinsite_replication_restorable").as_deref(),
        Some("0")
    );
    assert_eq!(
        w.metric("twinsite_replication_rpo_seconds").as_deref(),
        Some("inf")
    );
    assert_eq!(
        w.metric("twinsite_replication_rpo_bound_seconds")
            .as_deref(),
        Some("2.0")
    );

    tracing::info!("--- first checkpoint replicated");
    w.checkpoint().await;
    let round = driver.round().await.unwrap();
    assert_eq!(round.recorded.len(), 1, "{round:?}");
    let report = w.controller.monitor_exposure().await.unwrap();
    assert!(report.breached.is_empty(), "{report:?}");
    assert_eq!(
        w.metric("twinsite_replication_restorable").as_deref(),
        Some("1")
    );
    assert_eq!(
        w.metric("twinsite_replication_lag_breached").as_deref(),
        Some("0")
    );
    assert!(
        w.status().await.condition(REPLICATION_BEHIND).is_none(),
        "no condition is written before a crossing"
    );

    tracing::info!("--- nothing new replicated for longer than maxLag");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let report = w.controller.monitor_exposure().await.unwrap();
    assert_eq!(report.transitions, [(orders(), true)]);
    let condition = w
        .status()
        .await
        .condition(REPLICATION_BEHIND)
        .cloned()
        .unwrap();
    assert!(condition.is_true());
    assert_eq!(condition.reason, "LagAboveMaxLag");
    assert!(
        condition.message.contains("above replication.maxLag 2s"),
        "{}",
        condition.message
    );
    assert_eq!(
        w.metric("twinsite_replication_lag_breached").as_deref(),
        Some("1")
    );
    assert_eq!(
        w.metric("twinsite_replication_lag_breaches_total")
            .as_deref(),
        Some("1")
    );
    let rpo: f64 = w
        .metric("twinsite_replication_rpo_seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!(rpo > 2.0, "{rpo}");
    let events = w.audits("rpo-breach").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("dc-b"), "{events:?}");

    // Still breached: no second event, no second write.
    let revision = w
        .store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .revision;
    let report = w.controller.monitor_exposure().await.unwrap();
    assert!(report.transitions.is_empty());
    assert_eq!(w.audits("rpo-breach").await.len(), 1);
    assert_eq!(
        w.store
            .get_job("shop", "orders")
            .await
            .unwrap()
            .unwrap()
            .revision,
        revision
    );

    tracing::info!("--- a fresh copy brings it back");
    w.checkpoint().await;
    assert_eq!(driver.round().await.unwrap().recorded.len(), 1);
    let report = w.controller.monitor_exposure().await.unwrap();
    assert_eq!(report.transitions, [(orders(), false)]);
    let condition = w
        .status()
        .await
        .condition(REPLICATION_BEHIND)
        .cloned()
        .unwrap();
    assert!(!condition.is_true());
    assert_eq!(condition.reason, "WithinMaxLag");
    assert_eq!(w.audits("rpo-recovered").await.len(), 1);
    assert_eq!(
        w.metric("twinsite_replication_lag_breached").as_deref(),
        Some("0")
    );
}

/// A new leader finds the breach in the stored condition and does not report it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_does_not_report_a_breach_the_store_already_holds() {
    let w = World::new().await;
    let driver = w.driver(None).await;
    w.controller.reconcile_once().await.unwrap();
    w.checkpoint().await;
    driver.round().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    w.controller.monitor_exposure().await.unwrap();
    assert_eq!(w.audits("rpo-breach").await.len(), 1);

    w.controller.set_leading(false);
    assert_eq!(
        w.metric("twinsite_replication_rpo_seconds"),
        None,
        "a follower exports no exposure"
    );
    assert!(w.controller.exposure.judged().is_empty());
    w.controller.set_leading(true);
    let report = w.controller.monitor_exposure().await.unwrap();
    assert_eq!(report.breached, [orders()]);
    assert!(report.transitions.is_empty(), "{report:?}");
    assert_eq!(w.audits("rpo-breach").await.len(), 1);
}

/// A copy that fails shows its error in the job's exposure and the failing-jobs gauge; a copy
/// held back by the bandwidth cap shows the files it still has to copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_copy_is_shown_with_its_error_and_a_slow_one_with_its_backlog() {
    let w = World::new().await;
    w.controller.reconcile_once().await.unwrap();
    w.checkpoint().await;

    tracing::info!("--- the peer's job directory is a file: every copy fails");
    let peer_jobs = w.dir.path().join("dc-b/flink/checkpoints/shop/orders");
    std::fs::create_dir_all(peer_jobs.parent().unwrap()).unwrap();
    std::fs::write(&peer_jobs, b"in the way").unwrap();
    let driver = w.driver(None).await;
    let round = driver.round().await.unwrap();
    assert_eq!(round.failed.len(), 1, "{round:?}");
    w.controller.monitor_exposure().await.unwrap();
    let exposure = &w.controller.exposure.of(&orders())[0].exposure;
    assert!(exposure.last_error.is_some(), "{exposure:?}");
    assert!(
        exposure.message.contains("last copy failed"),
        "{}",
        exposure.message
    );
    let text = w.controller.metrics.encode();
    assert!(
        text.contains("twinsite_replication_jobs_failing{site=\"dc-a\",peer=\"dc-b\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("twinsite_replication_copy_failures_total{site=\"dc-a\",peer=\"dc-b\"} 1"),
        "{text}"
    );

    tracing::info!("--- out of the way, but at 4 KiB/s");
    std::fs::remove_file(&peer_jobs).unwrap();
    let slow = w.driver(Some(4096)).await;
    let controller = Arc::clone(&w.controller);
    let copying = tokio::spawn(async move { slow.round().await.unwrap() });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while !copying.is_finished() && Instant::now() < deadline {
        let state = controller
            .exposure
            .copy_state(&orders(), &SiteId("dc-b".into()));
        if state.backlog_files > 0 {
            controller.monitor_exposure().await.unwrap();
            let exposure = &controller.exposure.of(&orders())[0].exposure;
            seen = seen.max(exposure.backlog_files);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let round = copying.await.unwrap();
    assert_eq!(round.recorded.len(), 1, "{round:?}");
    assert!(seen > 0, "the backlog was never seen while the copy ran");
    w.controller.monitor_exposure().await.unwrap();
    let exposure = &w.controller.exposure.of(&orders())[0].exposure;
    assert_eq!((exposure.backlog_files, exposure.backlog_bytes), (0, 0));
    assert!(exposure.last_error.is_none(), "a success clears the error");
    assert!(
        w.controller
            .metrics
            .encode()
            .contains("twinsite_replication_jobs_failing{site=\"dc-a\",peer=\"dc-b\"} 0")
    );
}

/// Prometheus (the real one) scrapes the exposure series, `+Inf` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_replication_exposure_series() {
    let w = World::new().await;
    let driver = w.driver(None).await;
    w.controller.reconcile_once().await.unwrap();
    // Not restorable yet: its RPO series is +Inf.
    w.controller.monitor_exposure().await.unwrap();

    let state = Arc::new(ApiState {
        controller: Arc::clone(&w.controller),
        access: Access {
            admin_token: ADMIN.into(),
            read_token: Some(READ.into()),
            open_metrics: false,
        },
        refusals: Default::default(),
        simulated: BTreeMap::new(),
        wake: Arc::new(tokio::sync::Notify::new()),
        metrics: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router(state, 1 << 20)).await });
    let scrape = format!(
        r#"  - job_name: twinsite
    authorization: {{credentials_file: "{{dir}}/read-token"}}
    static_configs: [{{targets: ["{target}"]}}]
"#
    );
    let prometheus = PrometheusServer::start_scraping(&scrape, &[("read-token", READ)]).await;
    let query = |q: &'static str| {
        let url = format!("{}/api/v1/query", prometheus.url());
        async move {
            let answer: serde_json::Value = reqwest::Client::new()
                .get(url)
                .query(&[("query", q)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string)
        }
    };
    let wait_for = |q: &'static str, want: &'static str| {
        let query = &query;
        let prometheus = &prometheus;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let got = query(q).await;
                if got.as_deref() == Some(want) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{q}: {got:?}, wanted {want}\n{}",
                    prometheus.log()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    wait_for(
        r#"twinsite_replication_rpo_seconds{streamjob="shop/orders",site="dc-a",peer="dc-b"}"#,
        "+Inf",
    )
    .await;
    wait_for(
        r#"twinsite_replication_restorable{streamjob="shop/orders"}"#,
        "0",
    )
    .await;

    w.checkpoint().await;
    driver.round().await.unwrap();
    w.controller.monitor_exposure().await.unwrap();
    wait_for(
        r#"twinsite_replication_restorable{streamjob="shop/orders"}"#,
        "1",
    )
    .await;
    wait_for(
        r#"twinsite_replication_rpo_bound_seconds{streamjob="shop/orders"}"#,
        "2",
    )
    .await;
    wait_for(
        r#"twinsite_replication_checkpoints_replicated_total{site="dc-a",peer="dc-b"}"#,
        "1",
    )
    .await;
    let rpo = query(r#"twinsite_replication_rpo_seconds{streamjob="shop/orders"}"#)
        .await
        .unwrap();
    assert!(rpo.parse::<f64>().unwrap() < 60.0, "{rpo}");
}
