//! Two days of a real controller on a virtual clock: two simulated sites with online nodes and
//! offline HDFS nodes that lend at night (01:00-07:00 UTC). Each night, backfill jobs fill the
//! online nodes at midnight, streaming jobs arrive at 01:30 and borrow the HDFS nodes, and the
//! backfills end at 05:00, leaving room the borrowers must move into before the window
//! closes. One reconcile pass every five virtual minutes; at every pass: no JobManager on an
//! offline node, no pod on one past the window's close minus the lead time unless its job was
//! reported stuck before that deadline, no hour with more moves than the budget, every move
//! audited, and never a job running twice. At noon each day every job runs, off borrowed
//! capacity, or is pending with its reason.
//!
//! The controller's placement, rebalancing and scale profiles read its clock (`with_clock`);
//! its failover engine still reads the wall clock, which this run never needs (no node or
//! site is lost).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Timelike, Utc};
use scheduler::input::{StreamJob, parse_policy, parse_stream_jobs};
use scheduler::model::{JobId, JobPlacement, Node, PodRole, Resources, SiteId, SiteSnapshot};
use twinsite::controller::{Controller, JobPhase, JobStatus, new_record};
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, StateStore};

const STEP: TimeDelta = TimeDelta::minutes(5);
const MOVES_PER_HOUR: usize = 4;
const LEAD: TimeDelta = TimeDelta::minutes(10);

const POLICY: &str = "apiVersion: twinsite.io/v1alpha1
kind: Policy
sites:
  - name: dc-a
  - name: dc-b
pools:
  - name: hdfs
    selector: {pool: hdfs}
    offline:
      windows: [{start: '01:00', end: '07:00', timezone: UTC}]
      maxBorrowFraction: 0.5
      safetyMargin: {cpu: '1', memory: 2Gi}
rebalance: {leadTime: 10m, movesPerHour: 4}
";

fn node(name: &str, cpu: i64, offline: bool) -> Node {
    let mut labels = BTreeMap::from([("kubernetes.io/hostname".to_owned(), name.to_owned())]);
    if offline {
        labels.insert("pool".into(), "hdfs".into());
    }
    Node {
        name: name.to_owned(),
        labels,
        taints: vec![],
        unschedulable: false,
        ready: true,
        allocatable: Resources::new(cpu, 64 << 30, 110),
        owner_usage: None,
    }
}

/// A job of `task_managers` 2-cpu TaskManagers (one slot each) and a 1-cpu JobManager.
fn job(
    name: &str,
    site: &str,
    task_managers: u32,
    allow_offline: bool,
    priority: &str,
) -> StreamJob {
    let offline = if allow_offline {
        ", allowOffline: true"
    } else {
        ""
    };
    let yaml = format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: shop}}
spec:
  priority: {priority}
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/{name}.jar
  parallelism: {task_managers}
  jobManager: {{resources: {{cpu: "1", memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: "2", memory: 4Gi}}, slots: 1}}
  placement: {{sites: {{preferred: {site}, allowed: [{site}]}}{offline}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/shop/{name}", interval: 10s}}
"#
    );
    parse_stream_jobs("test", &yaml).unwrap().remove(0)
}

struct World {
    sites: BTreeMap<SiteId, SimulatedSite>,
    store: Arc<EmbeddedStateStore>,
    clock: ManualClock,
    controller: Controller,
    offline: BTreeSet<String>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(start: DateTime<Utc>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(start);
        let mut sites = BTreeMap::new();
        let mut offline = BTreeSet::new();
        for site in ["dc-a", "dc-b"] {
            let mut nodes: Vec<Node> = (1..=4)
                .map(|i| node(&format!("{site}-online-{i}"), 8_000, false))
                .collect();
            for i in 1..=3 {
                let name = format!("{site}-hdfs-{i}");
                offline.insert(name.clone());
                nodes.push(node(&name, 16_000, true));
            }
            let sim = SimulatedSite::new(
                SiteSnapshot {
                    id: SiteId(site.into()),
                    nodes,
                    running_pods: vec![],
                },
                dir.path().join(site),
                Arc::new(clock.clone()),
                SimulatedSiteConfig::default(),
            );
            sites.insert(SiteId(site.into()), sim);
        }
        let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
        let dyn_sites: BTreeMap<SiteId, Arc<dyn Site>> = sites
            .iter()
            .map(|(id, s)| (id.clone(), Arc::new(s.clone()) as Arc<dyn Site>))
            .collect();
        let controller = Controller::new(
            dyn_sites,
            Arc::clone(&store) as Arc<dyn StateStore>,
            parse_policy("policy.yaml", POLICY).unwrap(),
        )
        .with_clock(Arc::new(clock.clone()));
        controller.set_leading(true);
        World {
            sites,
            store,
            clock,
            controller,
            offline,
            _dir: dir,
        }
    }

    async fn add(&self, job: &StreamJob) {
        self.store
            .put_job(&new_record(job), Expected::Absent)
            .await
            .unwrap();
    }

    async fn delete(&self, name: &str) {
        self.store
            .delete_job("shop", name, Expected::Any)
            .await
            .unwrap();
    }

    /// Every stored job's placement and status.
    async fn jobs(&self) -> Vec<(String, Option<JobPlacement>, JobStatus)> {
        let mut out = Vec::new();
        for record in self.store.list_jobs().await.unwrap() {
            let placement = record
                .value
                .placement
                .as_ref()
                .and_then(|p| p.detail.clone());
            out.push((
                record.value.name.clone(),
                placement,
                record.value.status.clone(),
            ));
        }
        out
    }

    /// (job, site) of every generation the sites run.
    async fn running(&self) -> Vec<(JobId, SiteId)> {
        let mut out = Vec::new();
        for (id, site) in &self.sites {
            for o in site.jobs().await.unwrap() {
                out.push((o.job, id.clone()));
            }
        }
        out
    }

    /// Audit entries of `action` so far.
    async fn audited(&self, action: &str) -> Vec<String> {
        self.store
            .list_audit(0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.action == action)
            .map(|r| r.entry.target)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_days_of_lending_windows_keep_every_rule_at_every_pass() {
    // Wednesday 18 November 2026, midnight UTC.
    let start = Utc.with_ymd_and_hms(2026, 11, 18, 0, 0, 0).unwrap();
    let w = World::new(start);
    let mut moves_at: Vec<DateTime<Utc>> = Vec::new();
    let mut moves_seen = 0;
    let mut stuck_reported_at: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut borrowed_most = 0;
    let mut now = start;
    while now < start + TimeDelta::days(2) {
        let day = (now - start).num_days();
        match (now.hour(), now.minute()) {
            (0, 0) => {
                for site in ["dc-a", "dc-b"] {
                    for i in 1..=2 {
                        w.add(&job(
                            &format!("backfill-{site}-{i}-day{day}"),
                            site,
                            4,
                            false,
                            "normal",
                        ))
                        .await;
                    }
                }
            }
            (1, 30) => {
                for site in ["dc-a", "dc-b"] {
                    for i in 1..=3 {
                        let priority = ["high", "normal", "best-effort"][i - 1];
                        w.add(&job(
                            &format!("stream-{site}-{i}-day{day}"),
                            site,
                            2,
                            true,
                            priority,
                        ))
                        .await;
                    }
                }
            }
            (5, 0) => {
                for site in ["dc-a", "dc-b"] {
                    for i in 1..=2 {
                        w.delete(&format!("backfill-{site}-{i}-day{day}")).await;
                    }
                }
            }
            _ => {}
        }

        w.controller.reconcile_once().await.unwrap();

        let moves = w.audited("rebalance-move").await;
        for _ in moves_seen..moves.len() {
            moves_at.push(now);
        }
        moves_seen = moves.len();
        let in_hour = moves_at
            .iter()
            .filter(|&&t| t > now - TimeDelta::hours(1))
            .count();
        assert!(
            in_hour <= MOVES_PER_HOUR,
            "at {now}: {in_hour} moves in the last hour"
        );
        for job in w.audited("rebalance-stuck").await {
            stuck_reported_at.entry(job).or_insert(now);
        }

        // The window closes at 07:00: the deadline of borrowed pods is 06:50.
        let deadline = now.date_naive().and_hms_opt(7, 0, 0).unwrap().and_utc() - LEAD;
        let past_deadline = !(1..7).contains(&now.hour()) || now >= deadline;
        let mut borrowed = 0;
        for (name, placement, _) in w.jobs().await {
            let Some(placement) = placement else { continue };
            for pod in &placement.pods {
                if !w.offline.contains(&pod.node) {
                    continue;
                }
                borrowed += 1;
                assert!(
                    pod.role != PodRole::Jobmanager,
                    "at {now}: JobManager of {name} on {}",
                    pod.node
                );
                if past_deadline {
                    let id = format!("shop/{name}");
                    let reported = stuck_reported_at.get(&id);
                    assert!(
                        reported.is_some_and(|&t| t <= deadline),
                        "at {now}: {name} still on offline {} and not reported stuck before {deadline}",
                        pod.node
                    );
                }
            }
        }
        borrowed_most = borrowed_most.max(borrowed);
        let running = w.running().await;
        let ids: BTreeSet<&JobId> = running.iter().map(|(j, _)| j).collect();
        assert_eq!(
            ids.len(),
            running.len(),
            "at {now}: a job runs twice: {running:?}"
        );

        if (now.hour(), now.minute()) == (12, 0) {
            for (name, placement, status) in w.jobs().await {
                let runs = running
                    .iter()
                    .any(|(j, _)| j.to_string() == format!("shop/{name}"));
                match status.phase {
                    JobPhase::Running => {
                        assert!(runs, "at {now}: {name} says running and runs nowhere");
                        let placement = placement.expect("a running job has a placement");
                        assert!(
                            placement.pods.iter().all(|p| !w.offline.contains(&p.node)),
                            "at {now}: {name} still borrows at noon"
                        );
                    }
                    JobPhase::Pending => assert!(
                        status.message.as_deref().is_some_and(|m| !m.is_empty()),
                        "at {now}: {name} pending without a reason"
                    ),
                    other => panic!("at {now}: {name} is {other:?}: {status:?}"),
                }
            }
        }

        now += STEP;
        w.clock.advance(Duration::from_secs(300));
        for site in w.sites.values() {
            site.tick();
        }
    }
    assert!(
        borrowed_most >= 4,
        "the streaming jobs borrowed: at most {borrowed_most} pods"
    );
    assert!(
        moves_at.len() >= 4,
        "borrowers were moved: {}",
        moves_at.len()
    );
    // Moves start early enough for the budget, not all at the last minute.
    assert!(
        moves_at.iter().any(|t| t.hour() == 6 && t.minute() < 40),
        "moves: {moves_at:?}"
    );
    eprintln!(
        "two days: {} moves at {:?}; at most {borrowed_most} borrowed pods; stuck reported: {stuck_reported_at:?}",
        moves_at.len(),
        moves_at
            .iter()
            .map(|t| t.format("%d %H:%M").to_string())
            .collect::<Vec<_>>()
    );
}
