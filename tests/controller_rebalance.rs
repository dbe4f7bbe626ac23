//! Lending windows enforced by the controller: a job whose TaskManager borrows an offline node
//! is moved off it (stop with savepoint, relaunch in the same site, restore) once the window
//! closes within the policy's lead time, audited with the reason; `twinsite plan --rebalance`'s
//! function would plan the same move. The windows are built around the wall clock, which the
//! controller reads.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use scheduler::input::{Policy, parse_policy, parse_stream_jobs};
use scheduler::model::{JobId, JobPlacement, PodRole, SiteId, SiteSnapshot};
use scheduler::placement::rebalance::{RebalanceRequest, plan_rebalance};
use support::fixtures::node;
use twinsite::controller::{Controller, new_record};
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, StateStore};

/// Two sites with one online node and one `pool=hdfs` node each; the hdfs pool lends from two
/// hours ago until `closes_in` from now (UTC, every day).
fn policy(closes_in: TimeDelta) -> Policy {
    let now = Utc::now();
    let hhmm = |t: chrono::DateTime<Utc>| t.format("%H:%M").to_string();
    let yaml = format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: Policy
sites: [{{name: dc-a}}, {{name: dc-b}}]
pools:
  - name: hdfs
    selector: {{pool: hdfs}}
    offline:
      windows: [{{start: "{}", end: "{}"}}]
      maxBorrowFraction: 0.5
rebalance: {{leadTime: 10m, movesPerHour: 60}}
"#,
        hhmm(now - TimeDelta::hours(2)),
        hhmm(now + closes_in)
    );
    parse_policy("policy.yaml", &yaml).unwrap()
}

fn controller(
    sites: &BTreeMap<SiteId, SimulatedSite>,
    store: &Arc<EmbeddedStateStore>,
    policy: Policy,
) -> Controller {
    let dyn_sites: BTreeMap<SiteId, Arc<dyn Site>> = sites
        .iter()
        .map(|(id, s)| (id.clone(), Arc::new(s.clone()) as Arc<dyn Site>))
        .collect();
    let controller = Controller::new(dyn_sites, Arc::clone(store) as Arc<dyn StateStore>, policy);
    controller.set_leading(true);
    controller
}

fn placement_of(value: &Option<twinsite::state::JobPlacement>) -> JobPlacement {
    value.clone().unwrap().detail.unwrap()
}

/// A job placed while the window is open spreads its TaskManagers over the online and the
/// offline node; when the window closes within the lead time, the next pass moves the
/// borrowed TaskManager to the online node under a new generation restored from a savepoint,
/// audits the move with its reason, and the JobManager never touches the offline node.
#[tokio::test]
async fn a_borrowed_task_manager_is_moved_off_before_its_window_closes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    let mut sites = BTreeMap::new();
    for site in ["dc-a", "dc-b"] {
        let mut offline = node(&format!("{site}-hdfs"));
        offline.labels.insert("pool".into(), "hdfs".into());
        let snapshot = SiteSnapshot {
            id: SiteId(site.into()),
            nodes: vec![node(&format!("{site}-online")), offline],
            running_pods: vec![],
        };
        let sim = SimulatedSite::new(
            snapshot,
            dir.path().join(site),
            Arc::new(clock.clone()),
            SimulatedSiteConfig::default(),
        );
        sites.insert(SiteId(site.into()), sim);
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let job = parse_stream_jobs(
        "jobs.yaml",
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: shop}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: local:///opt/flink/usrlib/orders.jar
  parallelism: 2
  jobManager: {resources: {cpu: "1", memory: 2Gi}}
  taskManager: {resources: {cpu: "2", memory: 4Gi}, slots: 1}
  placement: {sites: {preferred: dc-a}, allowOffline: true}
  checkpoints: {dir: "hdfs:///flink/checkpoints/shop/orders", interval: 10s}
"#,
    )
    .unwrap()
    .remove(0);
    store
        .put_job(&new_record(&job), Expected::Absent)
        .await
        .unwrap();

    tracing::info!("--- placed while the window has hours to run: a TaskManager borrows");
    let open = controller(&sites, &store, policy(TimeDelta::hours(3)));
    let first = open.reconcile_once().await.unwrap();
    assert_eq!(first.launched, [(job.id(), 1)], "{first:?}");
    let record = store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value;
    let before = placement_of(&record.placement);
    let borrowed: Vec<_> = before
        .pods
        .iter()
        .filter(|p| p.node == "dc-a-hdfs")
        .collect();
    assert_eq!(borrowed.len(), 1, "{before:?}");
    assert_eq!(borrowed[0].role, PodRole::Taskmanager);
    clock.advance(std::time::Duration::from_secs(30));
    for site in sites.values() {
        site.tick();
    }
    let quiet = open.reconcile_once().await.unwrap();
    assert!(quiet.launched.is_empty(), "nothing is due yet: {quiet:?}");

    tracing::info!("--- the window now closes in 5 minutes, inside the 10 minute lead time");
    let closing_policy = policy(TimeDelta::minutes(5));
    let expected = {
        let demand = job.demand().unwrap();
        let snapshots = vec![
            sites[&SiteId("dc-a".into())].snapshot().await.unwrap(),
            sites[&SiteId("dc-b".into())].snapshot().await.unwrap(),
        ];
        plan_rebalance(&RebalanceRequest {
            sites: &snapshots,
            jobs: std::slice::from_ref(&demand),
            policy: &closing_policy.placement_policy(),
            rebalance: closing_policy.rebalance(),
            running: std::slice::from_ref(&before),
            at: Utc::now(),
            recent_moves: &[],
        })
    };
    assert_eq!(expected.moves.len(), 1, "{expected:#?}");
    let closing = controller(&sites, &store, closing_policy);
    let moved = closing.reconcile_once().await.unwrap();
    assert_eq!(moved.launched, [(job.id(), 2)], "{moved:?}");

    let record = store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value;
    let after = placement_of(&record.placement);
    assert_eq!(
        after, expected.moves[0].to,
        "the controller ran the planned move"
    );
    assert!(
        after.pods.iter().all(|p| p.node != "dc-a-hdfs"),
        "{after:?}"
    );
    let status = record.status.clone();
    assert!(
        status
            .restore_from
            .as_deref()
            .is_some_and(|r| r.contains("/savepoints/")),
        "{status:?}"
    );
    let running: Vec<u64> = sites[&SiteId("dc-a".into())]
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.job == JobId::new("shop", "orders"))
        .map(|o| o.generation)
        .collect();
    assert_eq!(running, [2]);
    let audit = store.list_audit(0, 0).await.unwrap();
    let entry = audit
        .iter()
        .find(|a| a.entry.action == "rebalance-move")
        .expect("the move is audited");
    assert_eq!(entry.entry.target, "shop/orders@dc-a#1");
    assert!(
        entry
            .entry
            .result
            .starts_with("ok: lending window of pool hdfs closes at"),
        "{}",
        entry.entry.result
    );

    tracing::info!("--- nothing is borrowed any more: the next pass moves nothing");
    let again = closing.reconcile_once().await.unwrap();
    assert!(again.launched.is_empty(), "{again:?}");
}

fn quota_policy(shop_cpu_in_dc_a: &str) -> Policy {
    let yaml = format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: Policy
sites: [{{name: dc-a}}, {{name: dc-b}}]
quotas:
  - {{tenant: shop, site: dc-a, cpu: "{shop_cpu_in_dc_a}", memory: 400Gi}}
  - {{tenant: shop, site: dc-b, cpu: "100", memory: 400Gi}}
rebalance: {{leadTime: 10m, movesPerHour: 60}}
"#
    );
    parse_policy("policy.yaml", &yaml).unwrap()
}

fn shop_job(name: &str, priority: &str) -> scheduler::input::streamjob::StreamJob {
    parse_stream_jobs(
        "jobs.yaml",
        &format!(
            r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: shop}}
spec:
  priority: {priority}
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: local:///opt/flink/usrlib/{name}.jar
  parallelism: 2
  jobManager: {{resources: {{cpu: "1", memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: "2", memory: 4Gi}}, slots: 1}}
  placement: {{sites: {{allowed: [dc-a]}}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/shop/{name}", interval: 10s}}
"#
        ),
    )
    .unwrap()
    .remove(0)
}

/// The running placement is judged again each pass, not only window closes: when the shop
/// tenant's quota in dc-a shrinks below what its two jobs use, the pass finds the less
/// important job past the limit (the critical one keeps its place) and, as it may run only
/// in dc-a, reports it stuck with the reason, audited once; nothing is stopped blindly.
#[tokio::test]
async fn a_quota_shrunk_below_what_runs_is_found_by_the_next_pass_and_reported_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    let mut sites = BTreeMap::new();
    for site in ["dc-a", "dc-b"] {
        let snapshot = SiteSnapshot {
            id: SiteId(site.into()),
            nodes: vec![node(&format!("{site}-1")), node(&format!("{site}-2"))],
            running_pods: vec![],
        };
        let sim = SimulatedSite::new(
            snapshot,
            dir.path().join(site),
            Arc::new(clock.clone()),
            SimulatedSiteConfig::default(),
        );
        sites.insert(SiteId(site.into()), sim);
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    for job in [
        shop_job("ledger", "critical"),
        shop_job("reports", "normal"),
    ] {
        store
            .put_job(&new_record(&job), Expected::Absent)
            .await
            .unwrap();
    }

    tracing::info!("--- both jobs placed in dc-a under a roomy quota (each uses 5 cpu)");
    let roomy = controller(&sites, &store, quota_policy("20"));
    let first = roomy.reconcile_once().await.unwrap();
    assert_eq!(first.launched.len(), 2, "{first:?}");
    clock.advance(std::time::Duration::from_secs(30));
    for site in sites.values() {
        site.tick();
    }

    tracing::info!("--- the quota shrinks to 6 cpu: the next pass reports the normal job");
    let shrunk = controller(&sites, &store, quota_policy("6"));
    let pass = shrunk.reconcile_once().await.unwrap();
    assert!(pass.launched.is_empty(), "{pass:?}");
    let audit = store.list_audit(0, 0).await.unwrap();
    let stuck: Vec<_> = audit
        .iter()
        .filter(|a| a.entry.action == "rebalance-stuck")
        .collect();
    assert_eq!(stuck.len(), 1, "{audit:#?}");
    assert_eq!(stuck[0].entry.target, "shop/reports");
    assert!(
        stuck[0]
            .entry
            .result
            .contains("quota of tenant shop in dc-a shrank below what runs: 4 cpu"),
        "{}",
        stuck[0].entry.result
    );
    let again = shrunk.reconcile_once().await.unwrap();
    assert!(again.launched.is_empty(), "{again:?}");
    let audit = store.list_audit(0, 0).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.entry.action == "rebalance-stuck")
            .count(),
        1,
        "reported once per deadline"
    );
    // And the job's status says it must move but cannot, with the reason, while it runs.
    let record = store.get_job("shop", "reports").await.unwrap().unwrap();
    let status = record.value.status.clone();
    let message = status.message.unwrap_or_default();
    assert!(
        message.starts_with("must move but cannot: quota of tenant shop in dc-a shrank"),
        "{message}"
    );
}
