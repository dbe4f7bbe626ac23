//! Jars on both sites (issue #16): the controller publishes a job's jar into every allowed
//! site's storage before any launch, launches with the site's own copy, keeps the job back
//! (saying why, naming the URI) when the jar cannot be read, publishes a new jar on update,
//! refuses a move to a site without the jar (the dry run says why), and reports the jar's
//! state in the job's status and in the metrics. `twinsite sync` copies published jars too.
//! Two simulated sites whose storages are local directories, and the real controller.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use scheduler::input::{Policy, StreamJob, parse_stream_jobs};
use scheduler::model::{SiteId, SiteSnapshot};
use sha2::{Digest, Sha256};
use support::fixtures::node;
use twinsite::controller::jars::{JarState, JarStatus};
use twinsite::controller::{Controller, JobPhase, JobStatus, new_record};
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, StateStore};

fn job(name: &str, jar: &str) -> StreamJob {
    let yaml = format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: shop}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: {jar}
  parallelism: 2
  jobManager: {{resources: {{cpu: "1", memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: "2", memory: 4Gi}}, slots: 1}}
  placement: {{sites: {{preferred: dc-a}}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/shop/{name}", interval: 10s, retained: 2}}
"#
    );
    parse_stream_jobs("test", &yaml).unwrap().remove(0)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct World {
    dir: tempfile::TempDir,
    store: Arc<EmbeddedStateStore>,
    controller: Controller,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Utc::now());
        let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
        let mut roots = BTreeMap::new();
        for name in ["dc-a", "dc-b"] {
            let sim = SimulatedSite::new(
                SiteSnapshot {
                    id: SiteId(name.into()),
                    nodes: (1..=3).map(|i| node(&format!("{name}-n{i}"))).collect(),
                    running_pods: vec![],
                },
                dir.path().join(name),
                Arc::new(clock.clone()),
                SimulatedSiteConfig {
                    cluster_file: Some(dir.path().join(format!("{name}.cluster.json"))),
                    ..SimulatedSiteConfig::default()
                },
            );
            sites.insert(SiteId(name.into()), Arc::new(sim));
            roots.insert(
                SiteId(name.into()),
                format!("file://{}", dir.path().join(name).display()),
            );
        }
        let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
        let controller = Controller::new(
            sites,
            Arc::clone(&store) as Arc<dyn StateStore>,
            Policy::default_two_sites(),
        )
        .with_storage_roots(roots);
        controller.set_leading(true);
        World {
            dir,
            store,
            controller,
        }
    }

    fn storage(&self, site: &str) -> PathBuf {
        self.dir.path().join(site)
    }

    /// Puts a jar where its `hdfs:///…` URI points in `site`'s storage.
    fn upload(&self, site: &str, path: &str, bytes: &[u8]) {
        let file = self.storage(site).join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }

    /// A pass, then (publications finished) another: what a controller does within seconds.
    async fn passes(&self) -> twinsite::controller::PassReport {
        self.controller.reconcile_once().await.unwrap();
        assert!(
            self.controller
                .jar_publications_settled(Duration::from_secs(30))
                .await
        );
        self.controller.reconcile_once().await.unwrap()
    }

    async fn status(&self, name: &str) -> JobStatus {
        let record = self.store.get_job("shop", name).await.unwrap().unwrap();
        record.value.status.clone()
    }

    /// The `jarURI` the site was asked to run, from the simulated cluster's saved state.
    fn launched_jar(&self, site: &str, name: &str) -> Option<String> {
        let text =
            std::fs::read_to_string(self.dir.path().join(format!("{site}.cluster.json"))).ok()?;
        let cluster: serde_json::Value = serde_json::from_str(&text).unwrap();
        cluster["jobs"]
            .as_array()?
            .iter()
            .find(|j| j["spec"]["job"] == format!("shop/{name}"))
            .and_then(|j| j["spec"]["jar_uri"].as_str().map(String::from))
    }
}

fn published_path(root: &Path, sha: &str, file: &str) -> PathBuf {
    root.join("twinsite/jars").join(sha).join(file)
}

fn jar_of(status: &JobStatus) -> &JarStatus {
    status.jar.as_ref().expect("the status has the jar's state")
}

#[tokio::test]
async fn a_new_jobs_jar_is_published_to_both_sites_before_its_launch_which_uses_the_sites_copy() {
    let w = World::new();
    w.upload("dc-a", "/jars/orders.jar", b"PK orders v1");
    w.store
        .put_job(
            &new_record(&job("orders", "hdfs:///jars/orders.jar")),
            Expected::Absent,
        )
        .await
        .unwrap();

    tracing::info!("--- the first pass starts the publication and launches nothing");
    let first = w.controller.reconcile_once().await.unwrap();
    assert!(first.launched.is_empty(), "{first:?}");
    let status = w.status("orders").await;
    assert_eq!(status.phase, JobPhase::Pending);
    assert!(
        status.message.as_deref().unwrap_or("").contains("jar"),
        "{status:?}"
    );

    tracing::info!("--- once published, the job launches with its site's copy");
    assert!(
        w.controller
            .jar_publications_settled(Duration::from_secs(30))
            .await
    );
    let report = w.controller.reconcile_once().await.unwrap();
    assert_eq!(report.launched.len(), 1, "{report:?}");
    let sha = sha256(b"PK orders v1");
    for site in ["dc-a", "dc-b"] {
        let copy = published_path(&w.storage(site), &sha, "orders.jar");
        assert_eq!(std::fs::read(&copy).unwrap(), b"PK orders v1", "{site}");
    }
    let status = w.status("orders").await;
    let jar = jar_of(&status);
    assert_eq!(jar.jar.as_ref().unwrap().sha256, sha);
    assert!(
        jar.sites.values().all(|s| s.state == JarState::Verified),
        "{jar:?}"
    );
    let site = status.site.clone().unwrap();
    let expected = format!(
        "file://{}",
        published_path(&w.storage(&site), &sha, "orders.jar").display()
    );
    assert_eq!(w.launched_jar(&site, "orders").as_deref(), Some(&*expected));

    tracing::info!("--- the metrics count the job's jar as verified at both sites");
    let text = w.controller.metrics.encode();
    for site in ["dc-a", "dc-b"] {
        assert!(
            text.contains(&format!(
                "twinsite_jar_sites{{site=\"{site}\",state=\"verified\"}} 1"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "twinsite_jar_published_bytes_total {}",
            2 * b"PK orders v1".len()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_job_whose_jar_cannot_be_read_is_not_launched_and_its_status_names_the_uri() {
    let w = World::new();
    w.store
        .put_job(
            &new_record(&job("orders", "hdfs:///jars/missing.jar")),
            Expected::Absent,
        )
        .await
        .unwrap();
    let report = w.passes().await;
    assert!(report.launched.is_empty(), "{report:?}");
    let status = w.status("orders").await;
    assert_eq!(status.phase, JobPhase::Pending);
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("hdfs:///jars/missing.jar") && message.contains("not found"),
        "{message}"
    );
    let jar = jar_of(&status);
    assert!(jar.error.is_some());
    assert!(
        jar.sites.values().all(|s| s.state == JarState::Failed),
        "{jar:?}"
    );
    assert!(w.launched_jar("dc-a", "orders").is_none());
    assert!(w.launched_jar("dc-b", "orders").is_none());
    let text = w.controller.metrics.encode();
    assert!(
        text.contains("twinsite_jar_sites{site=\"dc-a\",state=\"failed\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn an_update_with_a_new_jar_publishes_the_new_content_and_relaunches_with_it() {
    let w = World::new();
    w.upload("dc-a", "/jars/orders-1.jar", b"PK orders v1");
    w.store
        .put_job(
            &new_record(&job("orders", "hdfs:///jars/orders-1.jar")),
            Expected::Absent,
        )
        .await
        .unwrap();
    w.passes().await;
    let site = w.status("orders").await.site.unwrap();
    assert!(
        w.launched_jar(&site, "orders")
            .unwrap()
            .contains(&sha256(b"PK orders v1"))
    );

    tracing::info!("--- the update names a jar that is not uploaded yet: the old generation stays");
    let mut record = w.store.get_job("shop", "orders").await.unwrap().unwrap();
    let updated = job("orders", "hdfs:///jars/orders-2.jar");
    record.value.spec = updated.into();
    w.store
        .put_job(&record.value, Expected::Revision(record.revision))
        .await
        .unwrap();
    let report = w.passes().await;
    assert!(
        report.launched.is_empty() && report.stopped.is_empty(),
        "{report:?}"
    );
    let status = w.status("orders").await;
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("hdfs:///jars/orders-2.jar"),
        "{status:?}"
    );
    assert!(
        w.launched_jar(&site, "orders")
            .unwrap()
            .contains(&sha256(b"PK orders v1"))
    );

    tracing::info!("--- uploaded: published, then relaunched with the new bytes");
    w.upload("dc-a", "/jars/orders-2.jar", b"PK orders v2, new code");
    // The failed publication waits out its backoff; a fresh controller starts at once.
    let w = World {
        controller: fresh_controller(&w),
        ..w
    };
    w.passes().await;
    let report = w.controller.reconcile_once().await.unwrap();
    let status = w.status("orders").await;
    let new_sha = sha256(b"PK orders v2, new code");
    assert_eq!(
        jar_of(&status).jar.as_ref().unwrap().sha256,
        new_sha,
        "{report:?}"
    );
    let site = status.site.clone().unwrap();
    assert!(
        w.launched_jar(&site, "orders").unwrap().contains(&new_sha),
        "{status:?}"
    );
    for site in ["dc-a", "dc-b"] {
        let copy = published_path(&w.storage(site), &new_sha, "orders-2.jar");
        assert_eq!(std::fs::read(copy).unwrap(), b"PK orders v2, new code");
    }
}

fn fresh_controller(w: &World) -> Controller {
    let sites: BTreeMap<SiteId, Arc<dyn Site>> = w
        .controller
        .sites
        .iter()
        .map(|(id, s)| (id.clone(), Arc::clone(s)))
        .collect();
    let controller = Controller::new(
        sites,
        Arc::clone(&w.store) as Arc<dyn StateStore>,
        Policy::default_two_sites(),
    )
    .with_storage_roots(w.controller.storage_roots.clone());
    controller.set_leading(true);
    controller
}

#[tokio::test]
async fn a_move_to_a_site_without_the_jar_is_refused_and_the_dry_run_says_why() {
    let w = World::new();
    w.upload("dc-a", "/jars/orders.jar", b"PK orders");
    // dc-b's jar root cannot be created: a file stands where its directory would be.
    std::fs::create_dir_all(w.storage("dc-b")).unwrap();
    std::fs::write(w.storage("dc-b").join("twinsite"), b"in the way").unwrap();
    w.store
        .put_job(
            &new_record(&job("orders", "hdfs:///jars/orders.jar")),
            Expected::Absent,
        )
        .await
        .unwrap();
    let report = w.passes().await;
    assert_eq!(
        report.launched.len(),
        1,
        "launched where the jar is: {report:?}"
    );
    let status = w.status("orders").await;
    assert_eq!(status.site.as_deref(), Some("dc-a"));
    let jar = jar_of(&status);
    assert_eq!(jar.sites["dc-a"].state, JarState::Verified);
    assert_eq!(jar.sites["dc-b"].state, JarState::Failed);
    assert!(jar.sites["dc-b"].reason.is_some(), "{jar:?}");

    let plan = twinsite::failover_plan::dry_run(
        &w.controller,
        &SiteId("dc-a".into()),
        &SiteId("dc-b".into()),
        failover::MoveMode::Planned,
    )
    .await
    .unwrap()
    .expect("the engine answers the dry run with a plan");
    assert!(plan.moves.is_empty(), "{plan:?}");
    let refused = plan
        .not_fitting
        .iter()
        .find(|n| n.job.0 == "shop/orders")
        .expect("the job is listed as not moving");
    assert!(
        refused.reason.contains("jar hdfs:///jars/orders.jar") && refused.reason.contains("dc-b"),
        "{}",
        refused.reason
    );
    let text = w.controller.metrics.encode();
    assert!(
        text.contains("twinsite_jar_sites{site=\"dc-b\",state=\"failed\"} 1"),
        "{text}"
    );
}

#[test]
fn sync_copies_the_published_jars_between_storage_roots_and_refuses_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(a.join("flink/checkpoints")).unwrap();
    let good = sha256(b"PK good");
    let good_path = published_path(&a, &good, "good.jar");
    std::fs::create_dir_all(good_path.parent().unwrap()).unwrap();
    std::fs::write(&good_path, b"PK good").unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_twinsite"))
            .args([
                "sync",
                "--once",
                "--from",
                &format!("file://{}/flink/checkpoints", a.display()),
                "--to",
                &format!("file://{}/flink/checkpoints", b.display()),
                "--from-storage",
                &format!("file://{}", a.display()),
                "--to-storage",
                &format!("file://{}", b.display()),
            ])
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("jars: 1 copied"), "{stdout}");
    assert_eq!(
        std::fs::read(published_path(&b, &good, "good.jar")).unwrap(),
        b"PK good"
    );

    // A file whose bytes do not hash to its address is named and not spread.
    let lying = sha256(b"what it claims to be");
    let lying_path = published_path(&a, &lying, "bad.jar");
    std::fs::create_dir_all(lying_path.parent().unwrap()).unwrap();
    std::fs::write(&lying_path, b"other bytes").unwrap();
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("1 already at the peer"), "{stdout}");
    assert!(stderr.contains("bad.jar"), "{stderr}");
    assert!(!published_path(&b, &lying, "bad.jar").exists());
}
