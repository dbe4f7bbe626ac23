//! The reconcile loop against two simulated sites and the embedded store: placement and
//! launch, restart safety, relaunch after node loss, fencing of stray generations, spec
//! changes, unreachable sites; and, as a property, that no job ever runs in two sites.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use scheduler::input::{Policy, StreamJob, parse_stream_jobs};
use scheduler::model::{JobId, JobPlacement, PodRole, SiteId, SiteSnapshot};
use support::fixtures::{node, placement};
use twinsite::controller::{Controller, JobPhase, JobStatus, new_record};
use twinsite::site::simulated::{Fault, SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, JobRecord, KvBackend, SiteRecord, StateStore};

const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

fn job_yaml(name: &str, site: &str, extra: &str) -> String {
    format!(
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
  checkpoints: {{dir: "hdfs:///flink/checkpoints/shop/{name}", interval: 10s}}
{extra}"#
    )
}

fn job(name: &str, site: &str, extra: &str) -> StreamJob {
    parse_stream_jobs("test", &job_yaml(name, site, extra))
        .unwrap()
        .remove(0)
}

struct World {
    sites: BTreeMap<SiteId, SimulatedSite>,
    store: Arc<EmbeddedStateStore>,
    clock: ManualClock,
    controller: Controller,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(nodes_per_site: usize) -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        let mut sites = BTreeMap::new();
        for site in ["dc-a", "dc-b"] {
            let snapshot = SiteSnapshot {
                id: SiteId(site.into()),
                nodes: (1..=nodes_per_site)
                    .map(|i| node(&format!("{site}-n{i}")))
                    .collect(),
                running_pods: vec![],
            };
            let sim = SimulatedSite::new(
                snapshot,
                dir.path().join(site),
                Arc::new(clock.clone()),
                SimulatedSiteConfig {
                    cluster_file: Some(dir.path().join(format!("{site}.cluster.json"))),
                    ..SimulatedSiteConfig::default()
                },
            );
            sites.insert(SiteId(site.into()), sim);
        }
        let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
        let controller = Self::controller_on(&sites, &store);
        World {
            sites,
            store,
            clock,
            controller,
            _dir: dir,
        }
    }

    fn controller_on(
        sites: &BTreeMap<SiteId, SimulatedSite>,
        store: &Arc<EmbeddedStateStore>,
    ) -> Controller {
        let dyn_sites: BTreeMap<SiteId, Arc<dyn Site>> = sites
            .iter()
            .map(|(id, s)| (id.clone(), Arc::new(s.clone()) as Arc<dyn Site>))
            .collect();
        let controller = Controller::new(
            dyn_sites,
            Arc::clone(store) as Arc<dyn StateStore>,
            Policy::default_two_sites(),
        );
        controller.set_leading(true);
        controller
    }

    /// A controller process restart: new controller, same store and (still running) sites.
    fn restart_controller(&mut self) {
        self.controller = Self::controller_on(&self.sites, &self.store);
    }

    fn site(&self, name: &str) -> &SimulatedSite {
        &self.sites[&SiteId(name.into())]
    }

    async fn add(&self, job: &StreamJob) {
        self.store
            .put_job(&new_record(job), Expected::Absent)
            .await
            .unwrap();
    }

    async fn pass(&self) -> twinsite::controller::PassReport {
        self.controller.reconcile_once().await.unwrap()
    }

    /// Moves time on and lets every reachable site checkpoint.
    fn advance(&self, by: Duration) {
        self.clock.advance(by);
        for site in self.sites.values() {
            site.tick();
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

    async fn status(&self, name: &str) -> JobStatus {
        self.record(name).await.status.clone()
    }

    /// Every (site, generation) running `name`, over the reachable sites.
    async fn running(&self, name: &str) -> Vec<(String, u64)> {
        let id = JobId::new("shop", name);
        let mut out = vec![];
        for (site_id, site) in &self.sites {
            if let Ok(jobs) = site.jobs().await {
                for o in jobs.into_iter().filter(|o| o.job == id) {
                    out.push((site_id.0.clone(), o.generation));
                }
            }
        }
        out
    }
}

fn placement_of(record: &JobRecord) -> JobPlacement {
    record.placement.clone().unwrap().detail.unwrap()
}

#[tokio::test]
async fn every_job_is_placed_and_launched_once_and_a_second_pass_launches_nothing() {
    let w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.add(&job("clicks", "dc-b", "")).await;
    let first = w.pass().await;
    assert_eq!(first.launched.len(), 2, "{first:?}");
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 1)]);
    assert_eq!(w.running("clicks").await, [("dc-b".to_string(), 1)]);
    w.advance(Duration::from_secs(1));
    let second = w.pass().await;
    assert!(second.launched.is_empty(), "{second:?}");
    assert_eq!(w.status("orders").await.phase, JobPhase::Running);
    assert_eq!(w.record("orders").await.generation, 1);
}

#[tokio::test]
async fn a_restarted_controller_adopts_running_jobs_without_relaunching() {
    let mut w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.pass().await;
    w.restart_controller();
    let report = w.pass().await;
    assert!(report.launched.is_empty(), "{report:?}");
    assert_eq!(w.record("orders").await.generation, 1);
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 1)]);
}

#[tokio::test]
async fn a_restarted_simulated_cluster_still_runs_its_jobs() {
    let mut w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.pass().await;
    // A new site object on the same cluster file, as after a process restart.
    let reloaded = w.site("dc-a").clone();
    reloaded.reload().unwrap();
    w.restart_controller();
    assert!(w.pass().await.launched.is_empty());
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 1)]);
}

#[tokio::test]
async fn a_generation_persisted_but_never_launched_is_launched_as_that_same_generation() {
    let w = World::new(4);
    let j = job("orders", "dc-a", "");
    // What a controller that died between persisting and launching leaves behind.
    let mut record = new_record(&j);
    record.generation = 1;
    let placement = placement(&j.id(), "dc-a", "dc-a-n1", &["dc-a-n2", "dc-a-n3"]);
    record.placement = Some(twinsite::state::JobPlacement {
        site: "dc-a".into(),
        detail: Some(placement),
    });
    record.status = JobStatus {
        launched_spec: Some(twinsite::controller::launch::spec_hash(&j).unwrap()),
        ..JobStatus::pending("persisted")
    };
    w.store.put_job(&record, Expected::Absent).await.unwrap();

    let report = w.pass().await;
    assert_eq!(report.launched, [(j.id(), 1)]);
    assert_eq!(w.record("orders").await.generation, 1);
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 1)]);
}

#[tokio::test]
async fn a_job_whose_jobmanager_node_fails_is_relaunched_from_its_latest_checkpoint_elsewhere() {
    let w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.pass().await;
    w.advance(CHECKPOINT_INTERVAL + Duration::from_secs(1));
    let report = w.pass().await;
    assert_eq!(report.checkpoints_recorded, 1);
    let checkpoint = w.status("orders").await.last_checkpoint.unwrap();

    let jm_node = placement_of(&w.record("orders").await)
        .pods
        .iter()
        .find(|p| p.role == PodRole::Jobmanager)
        .unwrap()
        .node
        .clone();
    w.site("dc-a")
        .handle()
        .inject(Fault::NodeDown {
            node: jm_node.clone(),
        })
        .unwrap();
    let report = w.pass().await;
    assert_eq!(
        report.launched,
        [(JobId::new("shop", "orders"), 2)],
        "{report:?}"
    );

    let record = w.record("orders").await;
    assert_eq!(record.generation, 2);
    let placement = placement_of(&record);
    assert!(
        placement.pods.iter().all(|p| p.node != jm_node),
        "{placement:?}"
    );
    let status = record.status.clone();
    assert_eq!(
        status.restore_from.as_deref(),
        Some(checkpoint.path.as_str())
    );
    assert_eq!(status.relaunches, 1);
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 2)]);
}

#[tokio::test]
async fn a_job_that_opts_out_of_relaunch_is_failed_not_relaunched() {
    let w = World::new(4);
    w.add(&job("orders", "dc-a", "  failover: {mode: none}\n"))
        .await;
    w.pass().await;
    let jm_node = placement_of(&w.record("orders").await).pods[0].node.clone();
    w.site("dc-a")
        .handle()
        .inject(Fault::NodeDown { node: jm_node })
        .unwrap();
    let report = w.pass().await;
    assert!(report.launched.is_empty());
    let status = w.status("orders").await;
    assert_eq!(status.phase, JobPhase::Failed);
    assert!(status.message.unwrap().contains("mode is none"));
    assert!(w.running("orders").await.is_empty());
    // And it stays failed on later passes.
    assert!(w.pass().await.launched.is_empty());
}

#[tokio::test]
async fn a_deleted_job_is_stopped() {
    let w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.pass().await;
    w.store
        .delete_job("shop", "orders", Expected::Any)
        .await
        .unwrap();
    let report = w.pass().await;
    assert_eq!(report.stopped.len(), 1);
    assert!(w.running("orders").await.is_empty());
}

#[tokio::test]
async fn a_copy_running_in_the_other_site_is_stopped_so_the_job_never_runs_in_two() {
    let w = World::new(4);
    let j = job("orders", "dc-a", "");
    w.add(&j).await;
    w.pass().await;
    // A stray copy in dc-b (e.g. a site that came back after a failover).
    let stray = placement(&j.id(), "dc-b", "dc-b-n1", &["dc-b-n2"]);
    let spec = twinsite::controller::launch::launch_spec(&j, 1, &stray, None, None, 0).unwrap();
    w.site("dc-b").launch(&spec).await.unwrap();
    let report = w.pass().await;
    assert_eq!(
        report.stopped,
        [(SiteId("dc-b".into()), j.id(), 1)],
        "{report:?}"
    );
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 1)]);
}

#[tokio::test]
async fn a_job_in_an_unreachable_site_is_reported_unknown_and_not_moved() {
    let w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.pass().await;
    w.site("dc-a").handle().inject(Fault::Partition).unwrap();
    let report = w.pass().await;
    assert!(report.launched.is_empty(), "{report:?}");
    assert_eq!(report.unreachable, [SiteId("dc-a".into())]);
    assert_eq!(w.status("orders").await.phase, JobPhase::Unknown);
    w.site("dc-a").handle().clear(Fault::Partition).unwrap();
    w.pass().await;
    assert_eq!(w.status("orders").await.phase, JobPhase::Running);
    assert_eq!(w.record("orders").await.generation, 1);
}

#[tokio::test]
async fn a_changed_spec_is_relaunched_from_a_savepoint() {
    let w = World::new(4);
    let original = job("orders", "dc-a", "");
    w.add(&original).await;
    w.pass().await;
    let current = w.store.get_job("shop", "orders").await.unwrap().unwrap();
    let mut changed = original.clone();
    changed.spec.parallelism = 3;
    let mut record = current.value.clone();
    record.spec = changed.into();
    w.store
        .put_job(&record, Expected::Revision(current.revision))
        .await
        .unwrap();

    let report = w.pass().await;
    assert_eq!(report.launched, [(original.id(), 2)], "{report:?}");
    let status = w.status("orders").await;
    assert!(
        status
            .restore_from
            .as_deref()
            .unwrap()
            .contains("/savepoints/savepoint-"),
        "{status:?}"
    );
    assert_eq!(placement_of(&w.record("orders").await).pods.len(), 4);
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 2)]);
}

/// The default two-site policy with one scale profile for `shop/orders` around now.
fn policy_with_profile_around_now(factor: f64) -> Policy {
    let minimal = include_str!("../policies/minimal.yaml");
    let now = Utc::now();
    let text = format!(
        "{minimal}\nscaleProfiles:\n  - {{name: sale-day, from: '{}', until: '{}', parallelismFactor: {factor}, jobs: [shop/orders]}}\n",
        (now - chrono::TimeDelta::hours(1)).to_rfc3339(),
        (now + chrono::TimeDelta::hours(1)).to_rfc3339(),
    );
    scheduler::input::parse_policy("policy.yaml", &text).unwrap()
}

#[tokio::test]
async fn a_scale_profile_relaunches_the_job_scaled_from_a_savepoint_and_back_when_it_ends() {
    let mut w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.add(&job("audit", "dc-a", "")).await;
    w.pass().await;
    w.advance(CHECKPOINT_INTERVAL);
    assert_eq!(
        placement_of(&w.record("orders").await).pods.len(),
        3,
        "JobManager + 2"
    );

    // The profile starts (a controller with the sale-day policy): orders runs at 2 × 2.5 = 5
    // slots, from a savepoint; audit, not covered, stays untouched.
    w.controller.policy = policy_with_profile_around_now(2.5);
    let report = w.pass().await;
    assert_eq!(
        report.launched,
        [(JobId::new("shop", "orders"), 2)],
        "{report:?}"
    );
    let status = w.status("orders").await;
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("scale profile sale-day"),
        "{status:?}"
    );
    assert!(
        status
            .restore_from
            .as_deref()
            .unwrap_or("")
            .contains("/savepoints/"),
        "{status:?}"
    );
    assert_eq!(
        placement_of(&w.record("orders").await).pods.len(),
        6,
        "JobManager + 5"
    );
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 2)]);
    assert_eq!(w.running("audit").await, [("dc-a".to_string(), 1)]);
    assert!(
        w.pass().await.launched.is_empty(),
        "scaled once, not every pass"
    );

    // The profile ends: back to its own spec, again through a savepoint.
    w.advance(CHECKPOINT_INTERVAL);
    w.restart_controller();
    let report = w.pass().await;
    assert_eq!(
        report.launched,
        [(JobId::new("shop", "orders"), 3)],
        "{report:?}"
    );
    assert_eq!(placement_of(&w.record("orders").await).pods.len(), 3);
    assert_eq!(w.running("orders").await, [("dc-a".to_string(), 3)]);
}

#[tokio::test]
async fn a_job_that_fits_nowhere_stays_pending_with_the_reason() {
    let w = World::new(1);
    let mut big = job("huge2", "dc-a", "");
    big.spec.parallelism = 40;
    w.add(&big).await;
    let report = w.pass().await;
    assert_eq!(report.unplaced.len(), 1, "{report:?}");
    let status = w.status("huge2").await;
    assert_eq!(status.phase, JobPhase::Pending);
    assert!(!status.message.unwrap().is_empty());
    assert!(w.running("huge2").await.is_empty());
}

#[tokio::test]
async fn a_launch_refused_by_the_site_is_retried_with_the_same_generation() {
    let w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    // The site is down while the controller places the job: the launch fails after the
    // placement was persisted.
    w.site("dc-a").handle().inject(Fault::SiteDown).unwrap();
    w.site("dc-b").handle().inject(Fault::SiteDown).unwrap();
    let report = w.pass().await;
    assert!(report.launched.is_empty());
    for site in ["dc-a", "dc-b"] {
        w.site(site).handle().clear(Fault::SiteDown).unwrap();
    }
    let report = w.pass().await;
    assert_eq!(report.launched.len(), 1, "{report:?}");
    assert_eq!(w.record("orders").await.generation, 1);
}

#[tokio::test]
async fn a_generation_the_site_already_stopped_is_placed_again_under_a_new_one() {
    let w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.pass().await;
    // The relaunch of a failed job stopped generation 1, then its record write was lost.
    w.site("dc-a")
        .stop(&JobId::new("shop", "orders"), 1)
        .await
        .unwrap();
    w.pass().await;
    assert_eq!(w.status("orders").await.phase, JobPhase::Pending);
    let report = w.pass().await;
    assert_eq!(
        report.launched,
        [(JobId::new("shop", "orders"), 2)],
        "{report:?}"
    );
    assert_eq!(w.running("orders").await.len(), 1);
}

#[tokio::test]
async fn when_room_runs_out_the_more_important_job_is_placed() {
    // One node per site: 8 cores, 32 GiB. A running job leaves room for one more of these.
    let w = World::new(1);
    w.add(&job("running", "dc-a", "")).await;
    w.add(&job("running-b", "dc-b", "")).await;
    w.pass().await;
    let big = |name: &str, priority: &str| {
        let mut j = job(name, "dc-a", "");
        j.spec.priority = serde_json::from_value(serde_json::json!(priority)).unwrap();
        j.spec.placement.sites.allowed = vec!["dc-a".into()];
        j.spec.parallelism = 1; // 3 cores: exactly one of the two fits beside "running"
        j
    };
    // "aaa" sorts first by name; only its priority may put it behind.
    w.add(&big("aaa-best-effort", "best-effort")).await;
    w.add(&big("zzz-critical", "critical")).await;
    let report = w.pass().await;
    let launched: Vec<_> = report.launched.iter().map(|(j, _)| j.0.as_str()).collect();
    assert_eq!(launched, ["shop/zzz-critical"], "{report:?}");
    assert_eq!(w.status("aaa-best-effort").await.phase, JobPhase::Pending);
}

#[tokio::test]
async fn a_higher_tier_takes_a_running_best_effort_jobs_room_which_stops_with_a_savepoint_and_waits()
 {
    // One node per site (8 cores). "filler" (high) leaves room for one 3-core job.
    let w = World::new(1);
    let sized = |name: &str, priority: &str| {
        let mut j = job(name, "dc-a", "");
        j.spec.priority = serde_json::from_value(serde_json::json!(priority)).unwrap();
        j.spec.placement.sites.allowed = vec!["dc-a".into()];
        j.spec.parallelism = 1;
        j
    };
    w.add(&job("filler", "dc-a", "")).await;
    w.add(&sized("batchy", "best-effort")).await;
    w.pass().await;
    w.advance(CHECKPOINT_INTERVAL);
    assert_eq!(w.running("batchy").await, [("dc-a".to_string(), 1)]);

    w.add(&sized("payments", "critical")).await;
    let report = w.pass().await;
    let launched: Vec<_> = report.launched.iter().map(|(j, _)| j.0.as_str()).collect();
    assert_eq!(launched, ["shop/payments"], "{report:?}");
    assert!(
        w.running("batchy").await.is_empty(),
        "the room is freed, not shared"
    );
    let status = w.status("batchy").await;
    assert_eq!(status.phase, JobPhase::Pending);
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("preempted by shop/payments"),
        "{status:?}"
    );
    assert!(w.record("batchy").await.placement.is_none());
    // Its state is kept: when room comes back it resumes from the savepoint.
    assert!(
        status
            .restore_from
            .as_deref()
            .unwrap_or("")
            .contains("/savepoints/"),
        "{status:?}"
    );
    w.store
        .delete_job("shop", "payments", Expected::Any)
        .await
        .unwrap();
    w.pass().await;
    assert_eq!(w.running("batchy").await, [("dc-a".to_string(), 2)]);
    w.pass().await;
    assert_eq!(w.status("batchy").await.phase, JobPhase::Running);
}

#[derive(Debug, Clone)]
enum Step {
    Pass,
    Tick(u64),
    NodeDown(usize, usize),
    NodeUp(usize, usize),
    Partition(usize, bool),
    SiteDown(usize, bool),
    Delete(usize),
    ChangeSpec(usize),
    RestartController,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Pass),
        2 => (1u64..30).prop_map(Step::Tick),
        2 => (0usize..2, 0usize..4).prop_map(|(s, n)| Step::NodeDown(s, n)),
        2 => (0usize..2, 0usize..4).prop_map(|(s, n)| Step::NodeUp(s, n)),
        1 => (0usize..2, any::<bool>()).prop_map(|(s, on)| Step::Partition(s, on)),
        1 => (0usize..2, any::<bool>()).prop_map(|(s, on)| Step::SiteDown(s, on)),
        1 => (0usize..4).prop_map(Step::Delete),
        1 => (0usize..4).prop_map(Step::ChangeSpec),
        1 => Just(Step::RestartController),
    ]
}

const SITES: [&str; 2] = ["dc-a", "dc-b"];
const JOBS: [&str; 4] = ["j0", "j1", "j2", "j3"];

async fn run_steps(steps: Vec<Step>) {
    let mut w = World::new(4);
    for (i, name) in JOBS.iter().enumerate() {
        w.add(&job(name, SITES[i % 2], "")).await;
    }
    for step in steps {
        match step {
            Step::Pass => {
                w.pass().await;
            }
            Step::Tick(s) => w.advance(Duration::from_secs(s)),
            Step::NodeDown(s, n) | Step::NodeUp(s, n) => {
                let fault = Fault::NodeDown {
                    node: format!("{}-n{}", SITES[s], n + 1),
                };
                let handle = w.site(SITES[s]).handle();
                if matches!(step, Step::NodeDown(..)) {
                    handle.inject(fault).unwrap();
                } else {
                    handle.clear(fault).unwrap();
                }
            }
            Step::Partition(s, on) | Step::SiteDown(s, on) => {
                let fault = if matches!(step, Step::Partition(..)) {
                    Fault::Partition
                } else {
                    Fault::SiteDown
                };
                let handle = w.site(SITES[s]).handle();
                if on {
                    handle.inject(fault).unwrap()
                } else {
                    handle.clear(fault).unwrap()
                }
            }
            Step::Delete(j) => {
                w.store
                    .delete_job("shop", JOBS[j], Expected::Any)
                    .await
                    .unwrap();
            }
            Step::ChangeSpec(j) => {
                if let Some(current) = w.store.get_job("shop", JOBS[j]).await.unwrap() {
                    let mut record = current.value.clone();
                    let mut spec: StreamJob = record.spec.stream_job().unwrap().clone();
                    spec.spec.parallelism = spec.spec.parallelism % 3 + 1;
                    record.spec = spec.into();
                    w.store
                        .put_job(&record, Expected::Revision(current.revision))
                        .await
                        .unwrap();
                }
            }
            Step::RestartController => w.restart_controller(),
        }
        // The invariant, over what can be seen: no job runs in two sites, and a site never
        // runs two generations of one job (the site enforces the latter; check it anyway).
        for name in JOBS {
            let running = w.running(name).await;
            let sites: std::collections::BTreeSet<_> = running.iter().map(|(s, _)| s).collect();
            assert!(
                running.len() <= 1 && sites.len() <= 1,
                "{name} runs as {running:?}"
            );
        }
    }
    // Heal everything: after a pass, the full picture must hold the invariant too, and every
    // job still in the store must be placed where it runs.
    for site in SITES {
        let handle = w.site(site).handle();
        for fault in handle.active_faults() {
            handle.clear(fault).unwrap();
        }
    }
    w.pass().await;
    w.pass().await;
    for name in JOBS {
        let running = w.running(name).await;
        assert!(running.len() <= 1, "{name} runs as {running:?}");
        if let Some(record) = w.store.get_job("shop", name).await.unwrap() {
            let status = record.value.status.clone();
            if let (Some(p), [(site, generation)]) = (&record.value.placement, running.as_slice()) {
                assert_eq!(
                    (&p.site, *generation),
                    (site, record.value.generation),
                    "{name}: {status:?}"
                );
            }
        } else {
            assert!(running.is_empty(), "deleted {name} still runs: {running:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_job_ever_runs_in_two_sites(steps in proptest::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_steps(steps));
    }
}

#[test]
fn the_launch_spec_of_a_stored_job_matches_what_the_site_runs() {
    // Guards the conversion the loop relies on: a record's StreamJob round-trips through
    // the store's JSON unchanged.
    let j = job("orders", "dc-a", "");
    let record = new_record(&j);
    let back = twinsite::controller::stream_job_of(&record).unwrap();
    assert_eq!(back, j);
}

// ---- issue #13: records the controller must survive ---------------------------------------

/// A record written straight into the store's backend, bypassing admission and the typed
/// layer (as etcdctl, or an older version, could): the valid job `name` as stored, with
/// `edit` applied to the record's JSON.
async fn put_bypassing_admission(w: &World, name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut record = serde_json::to_value(new_record(&job(name, "dc-a", ""))).unwrap();
    edit(&mut record);
    let key = twinsite::state::KeyLayout::default()
        .job("shop", name)
        .unwrap();
    w.store
        .backend()
        .put(&key, serde_json::to_vec(&record).unwrap(), Expected::Absent)
        .await
        .unwrap();
}

/// The finding: `parallelism: 4294967295` (no maxParallelism) made placement allocate 32 GiB
/// and abort the process, on every restart, because the record stays in the store.
#[tokio::test]
async fn a_stored_job_with_an_impossible_parallelism_is_failed_with_the_reason_and_the_pass_goes_on()
 {
    let mut w = World::new(4);
    put_bypassing_admission(&w, "poison", |r| {
        r["spec"]["spec"]["parallelism"] = serde_json::json!(4_294_967_295u64);
    })
    .await;
    w.add(&job("orders", "dc-a", "")).await;

    let report = w.pass().await;
    assert_eq!(report.launched, [(JobId::new("shop", "orders"), 1)]);
    assert_eq!(report.unusable.len(), 1, "{report:?}");
    let status = w.status("poison").await;
    assert_eq!(status.phase, JobPhase::Failed);
    let message = status.message.unwrap();
    assert!(
        message
            .contains("spec.parallelism: must be at most 32768 (Flink's bound), found 4294967295"),
        "{message}"
    );
    assert!(w.running("poison").await.is_empty());
    assert_eq!(w.record("poison").await.generation, 0, "never launched");

    // A restarted controller starts on the same store and passes again.
    w.restart_controller();
    w.advance(Duration::from_secs(1));
    let report = w.pass().await;
    assert!(report.launched.is_empty(), "{report:?}");
    assert_eq!(w.status("orders").await.phase, JobPhase::Running);
    assert_eq!(w.status("poison").await.phase, JobPhase::Failed);
}

#[tokio::test]
async fn stored_records_that_do_not_decode_or_break_a_rule_are_each_failed_with_their_reason() {
    let w = World::new(4);
    put_bypassing_admission(&w, "garbage", |r| {
        r["spec"] = serde_json::json!({"not": "a StreamJob"});
    })
    .await;
    put_bypassing_admission(&w, "climbs", |r| {
        r["spec"]["spec"]["checkpoints"]["dir"] = serde_json::json!("hdfs:///../../../../tmp/x");
    })
    .await;
    put_bypassing_admission(&w, "huge-memory", |r| {
        r["spec"]["spec"]["taskManager"]["resources"]["memory"] =
            serde_json::json!("99999999999999999999Ei");
    })
    .await;
    put_bypassing_admission(&w, "last-generation", |r| {
        r["generation"] = serde_json::json!(u64::MAX)
    })
    .await;
    put_bypassing_admission(&w, "renamed", |r| {
        r["spec"]["metadata"]["name"] = serde_json::json!("someone-else");
    })
    .await;
    w.add(&job("orders", "dc-a", "")).await;

    let report = w.pass().await;
    assert_eq!(report.launched, [(JobId::new("shop", "orders"), 1)]);
    for (name, reason) in [
        ("garbage", "the spec does not decode as a StreamJob"),
        (
            "climbs",
            "spec.checkpoints.dir: \"hdfs:///../../../../tmp/x\" has a \"..\" segment",
        ),
        (
            "huge-memory",
            "spec.taskManager.resources.memory: quantity \"99999999999999999999Ei\" is too large",
        ),
        ("last-generation", "generation 18446744073709551615 is past"),
        (
            "renamed",
            "the spec is of shop/someone-else, not shop/renamed",
        ),
    ] {
        let status = w.status(name).await;
        assert_eq!(status.phase, JobPhase::Failed, "{name}");
        let message = status.message.unwrap();
        assert!(message.contains(reason), "{name}: {message}");
        assert!(w.running(name).await.is_empty(), "{name} runs");
    }
}

/// A `twinsite run` process on `config` (in `dir`, data in `dir/data`), its log captured;
/// killed when dropped.
struct Process {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    data: std::path::PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn start(dir: &std::path::Path, config: &str) -> Process {
        std::fs::write(dir.join("twinsite.yaml"), config).unwrap();
        // Every process test runs `orders`: its jar is uploaded to dc-a's storage, from where
        // the controller publishes it to both sites before the launch.
        let jar = dir.join("data/dc-a/jars/orders.jar");
        std::fs::create_dir_all(jar.parent().unwrap()).unwrap();
        std::fs::write(jar, b"PK orders").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("twinsite.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_twinsite"))
            .args(["run", "--config"])
            .arg(dir.join("twinsite.yaml"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("TWINSITE_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Process {
            child,
            port,
            log,
            data: dir.join("data"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` with the read-only token the process writes at start; `None` until it
    /// answers 200.
    async fn get(&self, path: &str) -> Option<String> {
        let token = std::fs::read_to_string(self.data.join("api-read-token")).ok()?;
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth(token.trim())
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// The job list once `settled` holds for it, failing after 60 s or if the process exits.
    async fn jobs_once(
        &mut self,
        settled: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("twinsite exited with {status}:\n{}", self.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the jobs never settled:\n{}",
                self.log()
            );
            let jobs = self
                .get("/api/v1/jobs")
                .await
                .and_then(|body| serde_json::from_str::<Vec<serde_json::Value>>(&body).ok());
            if let Some(jobs) = jobs
                && settled(&jobs)
            {
                return jobs;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn status_of(jobs: &[serde_json::Value], name: &str) -> Option<serde_json::Value> {
    jobs.iter()
        .find(|j| j["name"] == name)
        .map(|j| j["status"].clone())
}

const PROCESS_CONFIG: &str = "apiVersion: twinsite.io/v1alpha1\nkind: ControllerConfig\ndataDir: data\n\
     simulation:\n  generate: {nodesPerSite: 6, sampleJobs: 0, seed: 1}\n\
     reconcile:\n  interval: 1s\n";

/// The same poison record, in the store of a real `twinsite run` process: it starts, serves
/// the job as failed with the reason, and runs the other job.
#[tokio::test]
async fn the_controller_process_starts_and_serves_a_store_holding_a_poison_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStateStore::open(&dir.path().join("data/state")).unwrap();
        // Decodes (`parallelism` is a u32), breaks Flink's bound: admission would refuse it.
        let mut poison = job("poison", "dc-a", "");
        poison.spec.parallelism = 4_294_967_295;
        let poison = new_record(&poison);
        store.put_job(&poison, Expected::Absent).await.unwrap();
        store
            .put_job(&new_record(&job("orders", "dc-a", "")), Expected::Absent)
            .await
            .unwrap();
    }
    let mut process = Process::start(dir.path(), PROCESS_CONFIG);
    let jobs = process
        .jobs_once(|jobs| {
            status_of(jobs, "poison").is_some_and(|s| s["phase"] == "failed")
                && status_of(jobs, "orders").is_some_and(|s| s["phase"] == "running")
        })
        .await;
    let poison = status_of(&jobs, "poison").unwrap();
    assert!(
        poison["message"]
            .as_str()
            .unwrap()
            .contains("spec.parallelism: must be at most 32768"),
        "{poison}"
    );
    assert_eq!(status_of(&jobs, "orders").unwrap()["site"], "dc-a");
    assert!(process.child.try_wait().unwrap().is_none(), "still running");
}

/// Records that do not decode at all, of every kind a controller reads at start and in its
/// passes, as an operator's etcdctl or another twinsite version could leave them.
fn undecodable_records() -> Vec<(String, Vec<u8>)> {
    let p = "/twinsite/v1";
    let orders = serde_json::to_vec(&new_record(&job("orders", "dc-a", ""))).unwrap();
    vec![
        (format!("{p}/jobs/shop/orders"), orders),
        (
            format!("{p}/jobs/shop/legacy"),
            br#"{"namespace": 5}"#.to_vec(),
        ),
        (format!("{p}/sites/dc-b"), b"not json".to_vec()),
        (format!("{p}/failover/job.shop.gone"), b"{\"half".to_vec()),
        (
            format!("{p}/checkpoints/shop/orders/completed/dc-a"),
            b"{}".to_vec(),
        ),
    ]
}

/// What a process on such a store must show: it serves, runs `orders`, lists `legacy` as
/// failed naming its key and the decode error, and counts each kind it found.
async fn check_a_process_on_undecodable_records(process: &mut Process) {
    let jobs = process
        .jobs_once(|jobs| {
            status_of(jobs, "legacy").is_some_and(|s| s["phase"] == "failed")
                && status_of(jobs, "orders").is_some_and(|s| s["phase"] == "running")
        })
        .await;
    let legacy = jobs.iter().find(|j| j["name"] == "legacy").unwrap();
    let message = legacy["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("/twinsite/v1/jobs/shop/legacy")
            && message.contains("invalid type: integer `5`"),
        "{legacy}"
    );
    assert!(legacy.get("generation").is_none(), "{legacy}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = process.get("/metrics").await.unwrap_or_default();
        let counted = ["job", "site", "failover", "checkpoint"]
            .iter()
            .all(|kind| {
                metrics.contains(&format!(
                    "twinsite_store_unreadable_records{{kind=\"{kind}\"}} 1"
                ))
            });
        if counted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{metrics}\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = process.log();
    assert_eq!(
        log.matches("/twinsite/v1/jobs/shop/legacy").count(),
        1,
        "one warning for the key, not one a pass:\n{log}"
    );
    assert!(process.child.try_wait().unwrap().is_none(), "still running");
}

/// Issue #13: a job record whose JSON does not decode made every pass fail (and kept the
/// failover engine from resuming). A real process on such an embedded store starts, passes,
/// and reports every such record.
#[tokio::test]
async fn the_controller_process_starts_on_an_embedded_store_holding_records_that_do_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStateStore::open(&dir.path().join("data/state")).unwrap();
        for (key, bytes) in undecodable_records() {
            store
                .backend()
                .put(&key, bytes, Expected::Any)
                .await
                .unwrap();
        }
    }
    let mut process = Process::start(dir.path(), PROCESS_CONFIG);
    check_a_process_on_undecodable_records(&mut process).await;
}

/// The same records put into a real etcd with a plain (unguarded) put, as etcdctl would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_process_starts_on_an_etcd_store_holding_records_that_do_not_decode() {
    let etcd = support::etcd::EtcdServer::start().await;
    let mut client = etcd.client().await;
    for (key, bytes) in undecodable_records() {
        client.put(key, bytes, None).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{PROCESS_CONFIG}state:\n  etcd:\n    endpoints: [\"{}\"]\n    leaseTtl: 3s\n",
        etcd.endpoint()
    );
    let mut process = Process::start(dir.path(), &config);
    check_a_process_on_undecodable_records(&mut process).await;
}

/// Writes `bytes` under `key`, past the typed store, as an operator with etcdctl (or
/// another twinsite version) would.
async fn put_raw(w: &World, key: &str, bytes: &[u8]) {
    w.store
        .backend()
        .put(key, bytes.to_vec(), Expected::Any)
        .await
        .unwrap();
}

/// Issue #13: one job record that does not decode (`{"namespace": 5}`) failed every pass.
/// Now the pass goes on, the job is reported, and its running generation is left alone:
/// its record's generation is unknown, so stopping, relaunching or launching anything of
/// it could leave it nowhere or twice. Deleting the record makes it an ordinary deleted job.
#[tokio::test]
async fn a_job_record_that_does_not_decode_is_reported_and_its_running_generation_left_alone() {
    let mut w = World::new(4);
    w.add(&job("orders", "dc-a", "")).await;
    w.add(&job("legacy", "dc-b", "")).await;
    w.pass().await;
    assert_eq!(w.running("legacy").await, [("dc-b".to_owned(), 1)]);

    let key = "/twinsite/v1/jobs/shop/legacy";
    put_raw(&w, key, br#"{"namespace": 5}"#).await;
    w.add(&job("fresh", "dc-a", "")).await;
    w.advance(Duration::from_secs(1));
    let report = w.pass().await;
    assert_eq!(report.launched, [(JobId::new("shop", "fresh"), 1)]);
    assert!(report.stopped.is_empty(), "{report:?}");
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert_eq!(report.unreadable[0].key, key);
    assert!(
        report.unreadable[0]
            .reason
            .contains("invalid type: integer `5`"),
        "{report:?}"
    );
    assert_eq!(report.by_phase.get(&JobPhase::Failed), Some(&1));
    assert_eq!(w.running("legacy").await, [("dc-b".to_owned(), 1)]);
    assert_eq!(w.status("orders").await.phase, JobPhase::Running);
    let metrics = w.controller.metrics.encode();
    assert!(
        metrics.contains("twinsite_store_unreadable_records{kind=\"job\"} 1"),
        "{metrics}"
    );

    // A restarted controller (its failover engine resumed from the store) does the same.
    w.restart_controller();
    w.advance(Duration::from_secs(1));
    let report = w.pass().await;
    assert!(report.stopped.is_empty(), "{report:?}");
    assert!(report.launched.is_empty(), "{report:?}");
    assert_eq!(w.running("legacy").await, [("dc-b".to_owned(), 1)]);

    w.store
        .delete_job("shop", "legacy", Expected::Any)
        .await
        .unwrap();
    let report = w.pass().await;
    assert_eq!(
        report.stopped,
        [(SiteId("dc-b".into()), JobId::new("shop", "legacy"), 1)]
    );
    assert!(
        w.controller
            .metrics
            .encode()
            .contains("twinsite_store_unreadable_records{kind=\"job\"} 0")
    );
}

/// A site record nobody can read leaves that site's epoch unknown: nothing is launched
/// there (a launch carries the epoch), the job waits with the reason, the other site's jobs
/// launch, and once the record is rewritten the job launches.
#[tokio::test]
async fn an_unreadable_site_record_holds_launches_there_and_the_pass_goes_on() {
    let w = World::new(4);
    put_raw(&w, "/twinsite/v1/sites/dc-a", b"garbage").await;
    w.add(&job("orders", "dc-a", "")).await;
    w.add(&job("billing", "dc-b", "")).await;
    let report = w.pass().await;
    assert_eq!(report.launched, [(JobId::new("shop", "billing"), 1)]);
    let status = w.status("orders").await;
    assert_eq!(status.phase, JobPhase::Pending);
    let message = status.message.unwrap();
    assert!(
        message.contains("/twinsite/v1/sites/dc-a") && message.contains("its epoch is unknown"),
        "{message}"
    );
    assert!(w.running("orders").await.is_empty());
    assert_eq!(
        w.record("orders").await.generation,
        0,
        "no generation spent"
    );
    assert!(
        w.controller
            .metrics
            .encode()
            .contains("twinsite_store_unreadable_records{kind=\"site\"} 1")
    );

    w.store
        .put_site(&SiteRecord {
            site: "dc-a".into(),
            epoch: 0,
            state: twinsite::state::SiteState::Active,
            detail: serde_json::Value::Null,
        })
        .await
        .unwrap();
    let report = w.pass().await;
    assert_eq!(report.launched, [(JobId::new("shop", "orders"), 1)]);
}

/// Issue #13: a relaunch added one to the generation without a bound. A job whose
/// generation is at the largest twinsite launches (2^53-1, what JSON numbers carry exactly)
/// is failed with the reason; it is never launched past it.
#[tokio::test]
async fn a_job_at_the_largest_generation_is_failed_with_the_reason_not_launched_past_it() {
    let w = World::new(4);
    let largest = scheduler::limits::MAX_GENERATION;
    put_bypassing_admission(&w, "worn", |r| r["generation"] = serde_json::json!(largest)).await;
    w.add(&job("orders", "dc-a", "")).await;

    let report = w.pass().await;
    assert_eq!(report.launched, [(JobId::new("shop", "orders"), 1)]);
    let record = w.record("worn").await;
    assert_eq!(record.generation, largest);
    assert!(record.placement.is_none());
    let status = record.status.clone();
    assert_eq!(status.phase, JobPhase::Failed);
    let message = status.message.unwrap();
    assert!(
        message.contains(&format!(
            "generation {largest} is the largest twinsite launches"
        )),
        "{message}"
    );
    assert!(w.running("worn").await.is_empty());

    let report = w.pass().await;
    assert!(report.launched.is_empty(), "{report:?}");
    assert_eq!(w.status("worn").await.phase, JobPhase::Failed);
}
