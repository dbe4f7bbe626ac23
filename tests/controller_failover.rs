//! The failover engine driven by the controller, against two simulated sites whose
//! checkpoints are replicated by the controller's own replication driver: node loss, site
//! loss (and the lost site's return), a partition that must not fail anything over, a
//! planned switchover with its failback and cancel, and a new leader resuming an operation.
//! Graces are shortened to seconds; the engine runs on the wall clock.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use failover::{MoveMode, OpState, OpsRequest, RelaunchReason};
use scheduler::input::{Policy, StreamJob, parse_stream_jobs};
use scheduler::model::{JobId, PodRole, SiteId, SiteSnapshot};
use support::fixtures::node;
use twinsite::controller::failover::RequestOutcome;
use twinsite::controller::{Controller, JobPhase, new_record};
use twinsite::replication::ReplicationDriver;
use twinsite::site::simulated::{Fault, SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{CheckpointKind, EmbeddedStateStore, Expected, JobRecord, StateStore};

const NODE_GRACE: Duration = Duration::from_secs(1);
const SITE_GRACE: Duration = Duration::from_secs(2);

fn job(name: &str, site: &str) -> StreamJob {
    let yaml = format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: shop}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/{name}.jar
  parallelism: 2
  jobManager: {{resources: {{cpu: "1", memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: "2", memory: 4Gi}}, slots: 1}}
  placement: {{sites: {{preferred: {site}}}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/shop/{name}", interval: 10s, retained: 2}}
"#
    );
    parse_stream_jobs("test", &yaml).unwrap().remove(0)
}

struct World {
    sims: BTreeMap<String, SimulatedSite>,
    store: Arc<EmbeddedStateStore>,
    clock: ManualClock,
    controller: Arc<Controller>,
    replication: ReplicationDriver,
    dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
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
                SimulatedSiteConfig {
                    cluster_file: Some(dir.path().join(format!("{name}.cluster.json"))),
                    ..SimulatedSiteConfig::default()
                },
            );
            sims.insert(name.to_string(), sim);
        }
        let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
        let controller = Self::controller_on(&sims, &store, dir.path());
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
            dir,
        }
    }

    fn controller_on(
        sims: &BTreeMap<String, SimulatedSite>,
        store: &Arc<EmbeddedStateStore>,
        dir: &std::path::Path,
    ) -> Arc<Controller> {
        let sites: BTreeMap<SiteId, Arc<dyn Site>> = sims
            .iter()
            .map(|(id, s)| (SiteId(id.clone()), Arc::new(s.clone()) as Arc<dyn Site>))
            .collect();
        let roots = sims
            .keys()
            .map(|id| {
                (
                    SiteId(id.clone()),
                    format!("file://{}", dir.join(id).display()),
                )
            })
            .collect();
        let mut config = failover::EngineConfig::new(sites.keys().cloned().collect());
        config.node_grace = NODE_GRACE;
        config.site.grace = SITE_GRACE;
        config.site.suspect_after = Duration::from_millis(600);
        config.fence_retry = Duration::from_millis(500);
        // Two jobs move at once, so an operation of three is still moving when cancelled.
        config.max_in_flight = 2;
        let controller = Controller::new(
            sites,
            Arc::clone(store) as Arc<dyn StateStore>,
            Policy::default_two_sites(),
        )
        .with_storage_roots(roots)
        .with_failover(config, true);
        controller.set_leading(true);
        Arc::new(controller)
    }

    /// A new leader: a fresh controller on the same store and sites (the old one is deposed).
    async fn new_leader(&mut self) {
        self.controller.set_leading(false);
        self.controller = Self::controller_on(&self.sims, &self.store, self.dir.path());
        self.replication = ReplicationDriver::open(
            Arc::clone(&self.controller),
            self.dir.path().join("replication"),
            None,
            4,
        )
        .await
        .unwrap();
    }

    fn sim(&self, name: &str) -> &SimulatedSite {
        &self.sims[name]
    }

    /// Stores `job` with its jar uploaded to its preferred site's storage, and lets the
    /// controller publish the jar to both sites (one pass): the next pass launches it.
    async fn add(&self, job: &StreamJob) {
        let site = job.spec.placement.sites.preferred.clone().unwrap();
        support::fixtures::upload_jar(&self.dir.path().join(site), job);
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

    async fn pass(&self) {
        self.controller.reconcile_once().await.unwrap();
        self.assert_never_two().await;
    }

    /// Checkpoints for `checkpoints` intervals at every reachable site, then replicates.
    async fn checkpoint_and_replicate(&self, checkpoints: usize) {
        for _ in 0..checkpoints {
            self.clock.advance(Duration::from_secs(11));
            for sim in self.sims.values() {
                sim.tick();
            }
            self.pass().await;
        }
        self.replication.round().await.unwrap();
        self.pass().await;
    }

    /// Passes for `secs` of wall time (the engine's clock), `every` apart.
    async fn passes_for(&self, secs: f64) {
        let until = std::time::Instant::now() + Duration::from_secs_f64(secs);
        while std::time::Instant::now() < until {
            self.pass().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn record(&self, name: &str) -> JobRecord {
        self.store
            .get_job("shop", name)
            .await
            .unwrap()
            .unwrap()
            .value
    }

    /// (site, generation) of every running copy of `name`, over the reachable sites.
    async fn running(&self, name: &str) -> Vec<(String, u64)> {
        let id = JobId::new("shop", name);
        let mut out = vec![];
        for (site, sim) in &self.sims {
            if let Ok(jobs) = sim.jobs().await {
                for o in jobs.into_iter().filter(|o| o.job == id) {
                    if o.state == twinsite::site::JobState::Running {
                        out.push((site.clone(), o.generation));
                    }
                }
            }
        }
        out
    }

    async fn assert_never_two(&self) {
        for name in ["orders", "clicks", "payments"] {
            let running = self.running(name).await;
            assert!(running.len() <= 1, "{name} runs twice: {running:?}");
        }
    }

    async fn replicated_pointer(&self, name: &str, site: &str) -> Option<String> {
        self.store
            .get_checkpoint("shop", name, CheckpointKind::Replicated, site)
            .await
            .unwrap()
            .map(|p| p.value.uri)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_jobmanager_node_is_lost_runs_again_on_a_healthy_node_and_the_old_generation_is_fenced()
 {
    let w = World::new().await;
    w.add(&job("orders", "dc-a")).await;
    w.pass().await;
    w.checkpoint_and_replicate(2).await;
    let before = w.record("orders").await;
    let placement: scheduler::model::JobPlacement =
        before.placement.clone().unwrap().detail.unwrap();
    let jm = placement
        .pods
        .iter()
        .find(|p| p.role == PodRole::Jobmanager)
        .unwrap()
        .node
        .clone();
    w.sim("dc-a")
        .handle()
        .inject(Fault::NodeDown { node: jm.clone() })
        .unwrap();
    w.passes_for(NODE_GRACE.as_secs_f64() + 1.0).await;

    let after = w.record("orders").await;
    assert!(after.generation > before.generation, "{after:?}");
    assert_eq!(after.placement.as_ref().unwrap().site, "dc-a");
    let moved: scheduler::model::JobPlacement = after.placement.clone().unwrap().detail.unwrap();
    assert!(
        moved.pods.iter().all(|p| p.node != jm),
        "nothing goes back on the lost node: {moved:?}"
    );
    assert_eq!(
        w.running("orders").await,
        [("dc-a".to_string(), after.generation)]
    );
    let status = after.status.clone();
    assert!(
        status
            .restore_from
            .as_deref()
            .is_some_and(|p| p.contains("chk-")),
        "restored from its latest checkpoint: {status:?}"
    );
    let reports = w.controller.failover.reports();
    assert!(
        reports
            .iter()
            .any(|r| r.job == JobId::new("shop", "orders")),
        "{reports:?}"
    );
}

/// Issue #15: the failover engine owns every generation. A job deleted and created again
/// under its name before the engine saw it gone starts a new record at generation 0; the
/// generation its first launch is granted is past every one the engine knew its old self
/// by, so no Flink job id, checkpoint directory or fence of the old job is mistaken for the
/// new one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_again_under_its_name_launches_past_every_generation_its_old_self_had() {
    let w = World::new().await;
    w.add(&job("orders", "dc-a")).await;
    w.pass().await;
    // One more pass: the engine has read the launched generation from the store.
    w.pass().await;
    let old = w.record("orders").await.generation;
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), old)]);

    w.store
        .delete_job("shop", "orders", Expected::Any)
        .await
        .unwrap();
    // Stored again (its jar publication is redone for the new record), then launched.
    w.add(&job("orders", "dc-a")).await;
    w.pass().await;

    let new = w.record("orders").await.generation;
    assert!(
        new > old,
        "generation {new} after {old}: {:?}",
        w.record("orders").await.status
    );
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), new)]);
}

/// Issue #14 part 3(e): a node holding only a TaskManager of a job dies. Its site
/// schedules that TaskManager on another node once the pod's toleration runs out (30 s by
/// the site's clock), and the job runs again as the same generation: the controller
/// relaunches nothing (its TaskManager bound, 180 s, is far off), and never two copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_task_manager_node_is_lost_runs_again_on_another_node_as_the_same_generation() {
    let w = World::new().await;
    w.add(&job("orders", "dc-a")).await;
    w.pass().await;
    w.checkpoint_and_replicate(1).await;
    let before = w.record("orders").await;
    let placement: scheduler::model::JobPlacement =
        before.placement.clone().unwrap().detail.unwrap();
    let jm = placement
        .pods
        .iter()
        .find(|p| p.role == PodRole::Jobmanager)
        .unwrap()
        .node
        .clone();
    let tm = placement
        .pods
        .iter()
        .find(|p| p.role == PodRole::Taskmanager && p.node != jm)
        .expect("a TaskManager on a node of its own (the scheduler spreads them)")
        .node
        .clone();
    w.sim("dc-a")
        .handle()
        .inject(Fault::NodeDown { node: tm.clone() })
        .unwrap();
    w.clock.advance(Duration::from_secs(1));
    w.sim("dc-a").tick();
    w.passes_for(NODE_GRACE.as_secs_f64() + 1.0).await;
    assert!(
        w.running("orders").await.is_empty(),
        "its TaskManager is gone"
    );

    w.clock.advance(Duration::from_secs(29));
    w.sim("dc-a").tick();
    w.pass().await;
    assert_eq!(
        w.running("orders").await,
        [("dc-a".to_string(), before.generation)],
        "30 s after the node died, the same generation runs again"
    );
    let observed = w.sim("dc-a").jobs().await.unwrap();
    assert!(
        observed.iter().all(|o| !o.nodes.contains(&tm)),
        "nothing of it on the lost node: {observed:?}"
    );
    w.passes_for(NODE_GRACE.as_secs_f64() + 1.0).await;
    let after = w.record("orders").await;
    assert_eq!(
        after.generation, before.generation,
        "no relaunch: {after:?}"
    );
    assert_eq!(
        w.running("orders").await,
        [("dc-a".to_string(), before.generation)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_site_fails_over_from_the_replicated_checkpoint_and_its_return_is_fenced_first() {
    let w = World::new().await;
    w.add(&job("orders", "dc-a")).await;
    w.add(&job("clicks", "dc-a")).await;
    w.pass().await;
    w.checkpoint_and_replicate(2).await;
    let replicated = w.replicated_pointer("orders", "dc-b").await.unwrap();
    let before = w.record("orders").await;

    w.sim("dc-a").handle().inject(Fault::SiteDown).unwrap();
    w.passes_for(SITE_GRACE.as_secs_f64() + 1.5).await;

    let site = w.store.get_site("dc-a").await.unwrap().unwrap().value;
    assert_eq!(site.state, twinsite::state::SiteState::Lost);
    assert!(site.epoch >= 1);
    for name in ["orders", "clicks"] {
        let after = w.record(name).await;
        assert_eq!(after.placement.as_ref().unwrap().site, "dc-b", "{name}");
        assert_eq!(
            w.running(name).await,
            [("dc-b".to_string(), after.generation)],
            "{name}"
        );
    }
    let after = w.record("orders").await;
    assert!(after.generation > before.generation);
    assert_eq!(
        after.status.clone().restore_from.as_deref(),
        Some(replicated.as_str()),
        "restored from exactly the checkpoint replicated to dc-b"
    );
    let report = w
        .controller
        .failover
        .reports()
        .into_iter()
        .find(|r| r.job == JobId::new("shop", "orders"))
        .unwrap();
    assert!(matches!(report.reason, RelaunchReason::SiteLost { .. }));
    assert!(report.rpo.is_some(), "{report:?}");

    // dc-a comes back with its old generations still deployed: they are fenced, and the
    // jobs keep running once, in dc-b.
    w.sim("dc-a").handle().clear(Fault::SiteDown).unwrap();
    w.passes_for(1.5).await;
    for name in ["orders", "clicks"] {
        let generation = w.record(name).await.generation;
        assert_eq!(
            w.running(name).await,
            [("dc-b".to_string(), generation)],
            "{name}"
        );
    }
    let site = w.store.get_site("dc-a").await.unwrap().unwrap().value;
    assert_eq!(
        site.state,
        twinsite::state::SiteState::Active,
        "recovered once clean"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_only_the_controller_cannot_reach_is_not_failed_over() {
    let w = World::new().await;
    w.add(&job("orders", "dc-a")).await;
    w.pass().await;
    w.checkpoint_and_replicate(1).await;
    let before = w.record("orders").await;
    // The controller is cut off from dc-a, but dc-a's own member still renews its liveness.
    w.sim("dc-a").handle().inject(Fault::Partition).unwrap();
    w.passes_for(SITE_GRACE.as_secs_f64() + 1.5).await;
    let after = w.record("orders").await;
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.placement.as_ref().unwrap().site, "dc-a");
    assert!(
        w.store
            .get_site("dc-a")
            .await
            .unwrap()
            .is_none_or(|s| s.value.state != twinsite::state::SiteState::Lost)
    );
    w.sim("dc-a").handle().clear(Fault::Partition).unwrap();
    w.pass().await;
    assert_eq!(
        w.running("orders").await,
        [("dc-a".to_string(), before.generation)]
    );
}

async fn operation(w: &World, request: OpsRequest) -> u64 {
    match w.controller.failover_request(request).await.unwrap() {
        RequestOutcome::Operation(op) => op.id,
        other => panic!("expected an operation, got {other:?}"),
    }
}

async fn wait_done(w: &World, op: u64) -> failover::Operation {
    for _ in 0..50 {
        w.pass().await;
        let operation = w.controller.failover_operation(op).await.unwrap().unwrap();
        if !operation.is_active() {
            return operation;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operation {op} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_moves_every_job_with_a_savepoint_and_failback_brings_them_home() {
    let w = World::new().await;
    w.add(&job("orders", "dc-a")).await;
    w.add(&job("clicks", "dc-a")).await;
    w.pass().await;
    w.checkpoint_and_replicate(1).await;

    let op = operation(
        &w,
        OpsRequest::Failover {
            from: SiteId("dc-a".into()),
            to: SiteId("dc-b".into()),
            mode: MoveMode::Planned,
            dry_run: false,
        },
    )
    .await;
    let done = wait_done(&w, op).await;
    assert_eq!(done.state, OpState::Done, "{done:?}");
    for name in ["orders", "clicks"] {
        let record = w.record(name).await;
        assert_eq!(record.placement.as_ref().unwrap().site, "dc-b");
        assert_eq!(
            w.running(name).await,
            [("dc-b".to_string(), record.generation)]
        );
        let restore = record.status.clone().restore_from.unwrap();
        let dc_b = w.dir.path().join("dc-b").display().to_string();
        assert!(
            restore.contains("savepoint-")
                && restore
                    .trim_start_matches("file:")
                    .trim_start_matches("//")
                    .starts_with(&dc_b),
            "restored from the savepoint copied to dc-b: {restore}"
        );
        assert!(
            w.dir
                .path()
                .join("dc-b")
                .join(restore.split("/dc-b/").nth(1).unwrap())
                .join("_metadata")
                .exists(),
            "the savepoint's files are in dc-b's storage"
        );
    }
    let reports: Vec<_> = w
        .controller
        .failover
        .reports()
        .into_iter()
        .filter(|r| r.op == Some(op))
        .collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(
        reports.iter().all(|r| r.rpo == Some(Duration::ZERO)),
        "{reports:?}"
    );

    let back = operation(
        &w,
        OpsRequest::Failback {
            from: SiteId("dc-b".into()),
            to: SiteId("dc-a".into()),
            mode: MoveMode::Planned,
            dry_run: false,
        },
    )
    .await;
    let done = wait_done(&w, back).await;
    assert_eq!(done.state, OpState::Done, "{done:?}");
    for name in ["orders", "clicks"] {
        let record = w.record(name).await;
        assert_eq!(record.placement.as_ref().unwrap().site, "dc-a", "{name}");
        assert_eq!(
            w.running(name).await,
            [("dc-a".to_string(), record.generation)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_site_that_is_not_configured_is_rejected_with_the_site_named() {
    let w = World::new().await;
    w.add(&job("orders", "dc-a")).await;
    w.pass().await;
    let outcome = w
        .controller
        .failover_request(OpsRequest::Failover {
            from: SiteId("dc-a".into()),
            to: SiteId("dc-z".into()),
            mode: MoveMode::Forced,
            dry_run: false,
        })
        .await
        .unwrap();
    let RequestOutcome::Rejected(error) = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert!(error.to_string().contains("dc-z"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_finishes_an_operation_its_predecessor_started_and_nothing_runs_twice() {
    let mut w = World::new().await;
    for name in ["orders", "clicks", "payments"] {
        w.add(&job(name, "dc-a")).await;
    }
    w.pass().await;
    w.checkpoint_and_replicate(1).await;
    let op = operation(
        &w,
        OpsRequest::Failover {
            from: SiteId("dc-a".into()),
            to: SiteId("dc-b".into()),
            mode: MoveMode::Forced,
            dry_run: false,
        },
    )
    .await;
    // The leader dies right after starting it; a new one resumes from the store.
    w.new_leader().await;
    let done = wait_done(&w, op).await;
    assert_eq!(done.state, OpState::Done, "{done:?}");
    for name in ["orders", "clicks", "payments"] {
        let record = w.record(name).await;
        assert_eq!(record.placement.as_ref().unwrap().site, "dc-b", "{name}");
        assert_eq!(
            w.running(name).await,
            [("dc-b".to_string(), record.generation)],
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_operation_leaves_every_job_running_exactly_once() {
    let w = World::new().await;
    for name in ["orders", "clicks", "payments"] {
        w.add(&job(name, "dc-a")).await;
    }
    w.pass().await;
    w.checkpoint_and_replicate(1).await;
    let op = operation(
        &w,
        OpsRequest::Failover {
            from: SiteId("dc-a".into()),
            to: SiteId("dc-b".into()),
            mode: MoveMode::Planned,
            dry_run: false,
        },
    )
    .await;
    let cancelled = w
        .controller
        .failover_request(OpsRequest::Cancel { op })
        .await
        .unwrap();
    assert!(
        matches!(cancelled, RequestOutcome::Operation(_)),
        "{cancelled:?}"
    );
    let done = wait_done(&w, op).await;
    assert_eq!(done.state, OpState::Cancelled, "{done:?}");
    let left = done
        .jobs
        .iter()
        .filter(|j| matches!(j.step, failover::MoveStep::Left { .. }))
        .count();
    assert_eq!(
        left, 1,
        "the job not yet moving stays at the source: {done:?}"
    );
    for name in ["orders", "clicks", "payments"] {
        let record = w.record(name).await;
        let site = record.placement.as_ref().unwrap().site.clone();
        assert_eq!(
            w.running(name).await,
            [(site, record.generation)],
            "{name} runs exactly once, where the store says"
        );
    }
}

/// Issue #14, part 1: a job that could go nowhere while its site was lost (no checkpoint
/// replicated to the survivor, and it must restore from one) must run again once its site is
/// back and clean, exactly once, and its status must say so: never "unknown: site is
/// unreachable" about a site that answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_could_go_nowhere_runs_again_at_home_once_its_site_returns() {
    let w = World::new().await;
    w.add(&job("orders", "dc-a")).await;
    w.pass().await;
    w.checkpoint_and_replicate(2).await;
    // clicks checkpoints in dc-a, but nothing of it reaches dc-b before dc-a is lost.
    w.add(&job("clicks", "dc-a")).await;
    w.pass().await;
    for _ in 0..2 {
        w.clock.advance(Duration::from_secs(11));
        w.sim("dc-a").tick();
        w.pass().await;
    }
    assert!(w.replicated_pointer("clicks", "dc-b").await.is_none());
    // payments is launched just before the loss and never completes a checkpoint.
    w.add(&job("payments", "dc-a")).await;
    w.pass().await;
    let before = w.record("clicks").await;
    let payments_before = w.record("payments").await;

    w.sim("dc-a").handle().inject(Fault::SiteDown).unwrap();
    w.passes_for(SITE_GRACE.as_secs_f64() + 1.5).await;
    assert_eq!(w.record("orders").await.placement.unwrap().site, "dc-b");
    let down = w.controller.failover.not_relaunched();
    for name in ["clicks", "payments"] {
        assert!(w.running(name).await.is_empty(), "{name}");
        assert!(
            down.iter().any(|n| n.job == JobId::new("shop", name)
                && n.reason.contains("no checkpoint replicated to dc-b")),
            "{name}: {down:?}"
        );
        // Its status says it runs nowhere and why, not that its site might still run it.
        let status = w.record(name).await.status.clone();
        assert_eq!(status.phase, JobPhase::Pending, "{name}: {status:?}");
        let message = status.message.unwrap_or_default();
        assert!(
            message.contains("runs nowhere") && message.contains("no checkpoint replicated"),
            "{name}: {message}"
        );
    }

    w.sim("dc-a").handle().clear(Fault::SiteDown).unwrap();
    w.passes_for(2.0).await;
    let site = w.store.get_site("dc-a").await.unwrap().unwrap().value;
    assert_eq!(site.state, twinsite::state::SiteState::Active);
    for (name, before) in [("clicks", &before), ("payments", &payments_before)] {
        let after = w.record(name).await;
        assert!(after.generation > before.generation, "{name}: {after:?}");
        assert_eq!(after.placement.as_ref().unwrap().site, "dc-a", "{name}");
        assert_eq!(
            w.running(name).await,
            [("dc-a".to_string(), after.generation)],
            "{name} runs again, once, at home"
        );
        let status = after.status.clone();
        assert_eq!(status.phase, JobPhase::Running, "{name}: {status:?}");
        assert_eq!(status.site.as_deref(), Some("dc-a"), "{name}: {status:?}");
        assert_eq!(status.message, None, "{name}: {status:?}");
    }
    let clicks = w.record("clicks").await.status.clone();
    assert!(
        clicks
            .restore_from
            .as_deref()
            .is_some_and(|p| p.contains("chk-")),
        "clicks restores from its latest checkpoint in dc-a: {clicks:?}"
    );
    let payments = w.record("payments").await.status.clone();
    assert_eq!(
        payments.restore_from, None,
        "payments never checkpointed: it starts as it first did"
    );
}

/// Issue #14, part 2: a dry run asks the engine that would carry the request out, with the
/// persisted site states. While dc-a is lost, a failover into it is refused by the dry run
/// exactly as by the real request (a fresh engine would have believed every site healthy
/// and promised the moves), and a follower's dry run, resumed from the store, agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_promises_only_what_the_real_failover_would_do() {
    let w = World::new().await;
    w.add(&job("orders", "dc-b")).await;
    w.add(&job("clicks", "dc-a")).await;
    w.pass().await;
    w.checkpoint_and_replicate(1).await;
    w.sim("dc-a").handle().inject(Fault::SiteDown).unwrap();
    w.passes_for(SITE_GRACE.as_secs_f64() + 1.5).await;
    assert_eq!(
        w.store.get_site("dc-a").await.unwrap().unwrap().value.state,
        twinsite::state::SiteState::Lost
    );
    let into_lost = |dry_run| OpsRequest::Failover {
        from: SiteId("dc-b".into()),
        to: SiteId("dc-a".into()),
        mode: MoveMode::Forced,
        dry_run,
    };
    let real = w
        .controller
        .failover_request(into_lost(false))
        .await
        .unwrap();
    let dry = w
        .controller
        .failover_dry_run(into_lost(true))
        .await
        .unwrap();
    let RequestOutcome::Rejected(error) = &real else {
        panic!("the real request must be refused: {real:?}");
    };
    assert!(error.to_string().contains("dc-a"), "{error}");
    assert_eq!(
        dry, real,
        "the dry run answers what the real request answered"
    );

    // A follower has no live engine: its dry run resumes one from the store and agrees.
    w.controller.set_leading(false);
    let follower = w
        .controller
        .failover_dry_run(into_lost(true))
        .await
        .unwrap();
    assert_eq!(follower, real);
    // And a plan it does make restores from what the real run would.
    let out_of_lost = w
        .controller
        .failover_dry_run(OpsRequest::Failover {
            from: SiteId("dc-a".into()),
            to: SiteId("dc-b".into()),
            mode: MoveMode::Forced,
            dry_run: true,
        })
        .await
        .unwrap();
    let RequestOutcome::Plan(plan) = out_of_lost else {
        panic!("expected a plan: {out_of_lost:?}");
    };
    let clicks = w.record("clicks").await;
    assert_eq!(
        clicks.placement.as_ref().unwrap().site,
        "dc-b",
        "clicks moved when dc-a was lost"
    );
    assert!(
        plan.moves.is_empty(),
        "nothing left in dc-a to move: {plan:?}"
    );
}
