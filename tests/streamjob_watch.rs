//! StreamJobs in kubectl: the watch on a cluster's StreamJob objects and the status writer,
//! against the stateful fake API server of `tests/support/kube_api.rs` (kube's `tower-test`
//! mock answering list, streamed watch, `410 Expired`, paginated lists and the status
//! subresource in the API server's JSON shapes) and the real embedded job store. No live API
//! server is involved.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use scheduler::input::Policy;
use scheduler::model::SiteId;
use serde_json::{Value, json};
use support::kube_api::FakeApi;
use tower::ServiceExt;
use twinsite::api::auth::Access;
use twinsite::api::{ApiState, router};
use twinsite::controller::Controller;
use twinsite::kube_jobs::{ORIGIN_ANNOTATION, StreamJobWatch, StreamJobWatchConfig, SyncReport};
use twinsite::state::{
    CheckpointKind, CheckpointPointer, EmbeddedStateStore, JobRecord, StateStore,
};

const TOKEN: &str = "test-token-0123456789abcdef";
const STATUS_PATH: &str = "/apis/twinsite.io/v1alpha1/namespaces/shop/streamjobs/orders/status";

struct Harness {
    fake: FakeApi,
    controller: Arc<Controller>,
    store: Arc<EmbeddedStateStore>,
    watch: Arc<StreamJobWatch>,
    _dir: tempfile::TempDir,
}

fn spec() -> Value {
    json!({
        "priority": "high", "image": "flink:2.0.0", "flinkVersion": "v2_0",
        "jarURI": "hdfs:///jars/orders.jar", "parallelism": 2,
        "jobManager": {"resources": {"cpu": "1", "memory": "2Gi"}},
        "taskManager": {"resources": {"cpu": "1", "memory": "2Gi"}},
        "checkpoints": {"dir": "hdfs:///flink/checkpoints/shop/orders"},
    })
}

fn object(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

fn harness(config: impl FnOnce(&mut StreamJobWatchConfig)) -> Harness {
    harness_seeded(config, |_| {})
}

/// A harness whose cluster holds what `seed` puts there before the watch starts.
fn harness_seeded(
    config: impl FnOnce(&mut StreamJobWatchConfig),
    seed: impl FnOnce(&FakeApi),
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let mut watch_config = StreamJobWatchConfig::new(SiteId("dc-a".into()));
    config(&mut watch_config);
    let controller = Arc::new(
        Controller::new(
            BTreeMap::new(),
            Arc::clone(&store) as Arc<dyn StateStore>,
            Policy::default_two_sites(),
        )
        .with_stream_jobs(watch_config.scope.clone()),
    );
    controller.set_leading(true);
    let (client, fake) = FakeApi::start();
    seed(&fake);
    let (watch, reflector) = StreamJobWatch::new(
        client,
        Arc::clone(&controller),
        watch_config,
        Arc::new(tokio::sync::Notify::new()),
    );
    tokio::spawn(reflector);
    Harness {
        fake,
        controller,
        store,
        watch,
        _dir: dir,
    }
}

impl Harness {
    /// Sync rounds until `done` holds of the store (the reflector catches up in the
    /// background); the last round's report.
    async fn sync_until(&self, what: &str, done: impl Fn(&[JobRecord]) -> bool) -> SyncReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report = self.watch.sync_once().await.unwrap();
            let jobs = self.jobs().await;
            if report.listed && done(&jobs) {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "never reached: {what}; store: {jobs:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn jobs(&self) -> Vec<JobRecord> {
        self.store
            .list_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.value)
            .collect()
    }

    fn status_writes(&self) -> Vec<support::kube_api::Seen> {
        self.fake
            .seen()
            .into_iter()
            .filter(|s| s.method == "PATCH" && s.path.ends_with("/status"))
            .collect()
    }

    fn status_of(&self, name: &str) -> Value {
        self.fake
            .get("streamjobs", "shop", name)
            .map(|o| o["status"].clone())
            .unwrap_or(Value::Null)
    }
}

fn has(name: &str) -> impl Fn(&[JobRecord]) -> bool + '_ {
    move |jobs| jobs.iter().any(|j| j.name == name)
}

#[tokio::test]
async fn a_kubectl_applied_streamjob_becomes_a_stored_job_with_its_origin_and_a_status_written_by_server_side_apply()
 {
    let h = harness(|_| {});
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    let report = h.sync_until("orders stored", has("orders")).await;
    assert_eq!(report.created, 1, "{report:?}");

    let stored = h
        .store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        stored.spec.to_json().unwrap()["metadata"]["annotations"][ORIGIN_ANNOTATION],
        "kubernetes/dc-a"
    );
    assert_eq!(stored.spec.to_json().unwrap()["spec"]["parallelism"], 2);

    let writes = h.status_writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let write = &writes[0];
    assert_eq!(write.path, STATUS_PATH);
    assert!(
        write.query.contains("fieldManager=twinsite"),
        "{}",
        write.query
    );
    assert!(write.query.contains("force=true"), "{}", write.query);
    assert_eq!(
        write.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(
        write.body,
        json!({
            "apiVersion": "twinsite.io/v1alpha1", "kind": "StreamJob",
            "metadata": {"name": "orders", "namespace": "shop"},
            "status": {"observedGeneration": 1, "phase": "pending",
                       "message": "accepted; waiting for the first reconcile pass"},
        })
    );
    assert_eq!(h.status_of("orders")["phase"], "pending");

    // The status write came back as a watch event; nothing changed, so nothing is written.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let report = h.watch.sync_once().await.unwrap();
        assert_eq!(report.statuses_written, 0, "{report:?}");
    }
    assert_eq!(h.status_writes().len(), 1);
}

#[tokio::test]
async fn the_controllers_view_of_the_job_reaches_the_status_and_a_checkpoint_alone_waits_for_the_refresh_interval()
 {
    let h = harness(|c| c.checkpoint_status_interval = Duration::from_secs(60));
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    h.sync_until("orders stored", has("orders")).await;

    // The reconcile pass launched it in dc-b and the job checkpointed there.
    let mut record = h.store.get_job("shop", "orders").await.unwrap().unwrap();
    record.value.generation = 3;
    // Its jar is verified in dc-b; dc-a's copy failed (the status says why).
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    record.value.status =
        serde_json::from_value(json!({"phase": "running", "site": "dc-b", "relaunches": 0,
        "jar": {"source": "hdfs:///jars/orders.jar", "spec": "s1",
                "jar": {"sha256": sha, "file_name": "orders.jar"},
                "sites": {"dc-a": {"state": "failed", "reason": "hdfs://a: connection refused"},
                          "dc-b": {"state": "verified"}},
                "attempts": 1}}))
        .unwrap();
    h.store
        .put_job(
            &record.value,
            twinsite::state::Expected::Revision(record.revision),
        )
        .await
        .unwrap();
    let checkpoint = |id: u64, at: i64| CheckpointPointer {
        checkpoint_id: id,
        uri: format!("hdfs://b/flink/checkpoints/shop/orders/chk-{id}"),
        recorded_at_unix_ms: at,
    };
    let t0 = 1_780_000_000_000;
    h.store
        .put_checkpoint(
            "shop",
            "orders",
            CheckpointKind::Completed,
            "dc-b",
            &checkpoint(7, t0),
        )
        .await
        .unwrap();
    let replicated = CheckpointPointer {
        uri: "hdfs://a/flink/checkpoints/shop/orders/chk-6".into(),
        ..checkpoint(6, t0 - 30_000)
    };
    h.store
        .put_checkpoint(
            "shop",
            "orders",
            CheckpointKind::Replicated,
            "dc-a",
            &replicated,
        )
        .await
        .unwrap();
    let report = h.watch.sync_once().await.unwrap();
    assert_eq!(report.statuses_written, 1, "{report:?}");
    let status = h.status_of("orders");
    assert_eq!(status["phase"], "running");
    assert_eq!(status["site"], "dc-b");
    assert_eq!(status["generation"], 3);
    assert_eq!(
        status["lastCheckpoint"],
        json!({"site": "dc-b", "id": 7, "path": "hdfs://b/flink/checkpoints/shop/orders/chk-7",
               "completedAt": "2026-05-28T20:26:40.000Z"})
    );
    assert_eq!(status["replicatedCheckpoint"]["site"], "dc-a");
    assert_eq!(status["replicatedCheckpoint"]["id"], 6);
    assert_eq!(
        status["jar"],
        json!({"source": "hdfs:///jars/orders.jar", "sha256": sha,
               "sites": {"dc-a": {"state": "failed", "reason": "hdfs://a: connection refused"},
                         "dc-b": {"state": "verified"}}})
    );
    // What was written reads back as the CRD's status type, jar included.
    let typed: twinsite::crd::StreamJobStatus = serde_json::from_value(status.clone()).unwrap();
    assert_eq!(typed.jar.unwrap().sites["dc-b"].state, "verified");

    // A checkpoint 30 s newer: not worth a write (interval 60 s); 60 s newer: written.
    h.store
        .put_checkpoint(
            "shop",
            "orders",
            CheckpointKind::Completed,
            "dc-b",
            &checkpoint(8, t0 + 30_000),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = h.watch.sync_once().await.unwrap();
    assert_eq!(report.statuses_written, 0, "{report:?}");
    h.store
        .put_checkpoint(
            "shop",
            "orders",
            CheckpointKind::Completed,
            "dc-b",
            &checkpoint(9, t0 + 60_000),
        )
        .await
        .unwrap();
    let report = h.watch.sync_once().await.unwrap();
    assert_eq!(report.statuses_written, 1, "{report:?}");
    assert_eq!(h.status_of("orders")["lastCheckpoint"]["id"], 9);
}

#[tokio::test]
async fn a_changed_object_replaces_the_stored_spec_keeping_the_controllers_state_and_a_deleted_one_deletes_the_job()
 {
    let h = harness(|_| {});
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    h.fake.put("streamjobs", object("shop", "payments", spec()));
    h.sync_until("both stored", |j| j.len() == 2).await;
    let mut record = h.store.get_job("shop", "orders").await.unwrap().unwrap();
    record.value.generation = 2;
    record.value.status =
        serde_json::from_value(json!({"phase": "running", "site": "dc-a", "relaunches": 0}))
            .unwrap();
    h.store
        .put_job(
            &record.value,
            twinsite::state::Expected::Revision(record.revision),
        )
        .await
        .unwrap();

    let mut wider = spec();
    wider["parallelism"] = json!(4);
    h.fake.put("streamjobs", object("shop", "orders", wider));
    let report = h
        .sync_until("parallelism 4 stored", |jobs| {
            jobs.iter().any(|j| {
                j.name == "orders" && j.spec.to_json().unwrap()["spec"]["parallelism"] == 4
            })
        })
        .await;
    assert_eq!(report.updated, 1, "{report:?}");
    let stored = h
        .store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        stored.generation, 2,
        "the launch generation is the controller's"
    );
    assert_eq!(stored.status.site.as_deref(), Some("dc-a"));
    assert_eq!(stored.spec.to_json().unwrap()["metadata"]["generation"], 2);
    h.watch.sync_once().await.unwrap();
    assert_eq!(h.status_of("orders")["observedGeneration"], 2);

    h.fake.remove("streamjobs", "shop", "payments");
    let report = h
        .sync_until("payments deleted", |jobs| !has("payments")(jobs))
        .await;
    assert_eq!(report.deleted, 1, "{report:?}");
    assert!(h.store.get_job("shop", "orders").await.unwrap().is_some());
    let audit = h.store.list_audit(0, 1000).await.unwrap();
    let actions: Vec<_> = audit
        .iter()
        .map(|a| {
            (
                a.entry.actor.as_str(),
                a.entry.action.as_str(),
                a.entry.target.as_str(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("streamjobs@dc-a", "delete", "shop/payments")),
        "{actions:?}"
    );
}

#[tokio::test]
async fn an_invalid_object_gets_phase_invalid_naming_the_field_and_its_stored_job_keeps_the_last_accepted_spec()
 {
    let h = harness(|_| {});
    let mut bad = spec();
    bad["parallelism"] = json!(0);
    h.fake
        .put("streamjobs", object("shop", "broken", bad.clone()));
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    let report = h.sync_until("orders stored", has("orders")).await;
    assert_eq!(report.refused, 1, "{report:?}");
    assert!(
        !has("broken")(&h.jobs().await),
        "a refused object stores nothing"
    );
    let status = h.status_of("broken");
    assert_eq!(status["phase"], "invalid");
    assert_eq!(status["observedGeneration"], 1);
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("spec.parallelism"), "{message}");

    // An accepted job whose object turns invalid keeps running its last accepted spec.
    h.fake.put("streamjobs", object("shop", "orders", bad));
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.status_of("orders")["phase"] != "invalid" {
        assert!(Instant::now() < deadline, "{}", h.status_of("orders"));
        h.watch.sync_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = h
        .store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(stored.spec.to_json().unwrap()["spec"]["parallelism"], 2);
    assert_eq!(h.status_of("orders")["observedGeneration"], 2);
}

#[tokio::test]
async fn a_replica_that_does_not_lead_writes_neither_the_store_nor_any_status() {
    let h = harness(|_| {});
    h.controller.set_leading(false);
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    for _ in 0..10 {
        let report = h.watch.sync_once().await.unwrap();
        assert!(!report.leading);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.jobs().await.is_empty());
    assert!(h.status_writes().is_empty());
    assert!(h.status_of("orders").is_null());

    h.controller.set_leading(true);
    h.sync_until("orders stored once leading", has("orders"))
        .await;
    assert_eq!(h.status_writes().len(), 1);
}

#[tokio::test]
async fn a_status_write_refused_with_409_is_retried_on_the_next_round() {
    let h = harness(|_| {});
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.watch.listed() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.fake.conflict_next_apply();
    let report = h.watch.sync_once().await.unwrap();
    assert_eq!(
        (report.created, report.status_failures),
        (1, 1),
        "{report:?}"
    );
    assert!(h.status_of("orders").is_null());
    let report = h.watch.sync_once().await.unwrap();
    assert_eq!(report.statuses_written, 1, "{report:?}");
    assert_eq!(h.status_of("orders")["phase"], "pending");
}

#[tokio::test]
async fn a_watch_of_one_namespace_neither_stores_nor_deletes_jobs_of_another() {
    let h = harness(|c| c.scope.namespace = Some("shop".into()));
    // A job another door made in another namespace, and one this origin marked there (a
    // former configuration watching every namespace): neither is this watch's.
    let foreign = twinsite::controller::new_record(
        &scheduler::input::parse_stream_jobs(
            "test",
            &serde_json::to_string(&json!({
                "apiVersion": "twinsite.io/v1alpha1", "kind": "StreamJob",
                "metadata": {"name": "ledger", "namespace": "bank",
                             "annotations": {ORIGIN_ANNOTATION: "kubernetes/dc-a"}},
                "spec": spec(),
            }))
            .unwrap(),
        )
        .unwrap()
        .remove(0),
    );
    h.store
        .put_job(&foreign, twinsite::state::Expected::Absent)
        .await
        .unwrap();
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    h.sync_until("orders stored", has("orders")).await;
    for _ in 0..3 {
        h.watch.sync_once().await.unwrap();
    }
    assert!(has("ledger")(&h.jobs().await));
}

fn api_state(h: &Harness) -> axum::Router {
    let state = Arc::new(ApiState {
        controller: Arc::clone(&h.controller),
        access: Access {
            admin_token: TOKEN.into(),
            read_token: None,
            open_metrics: false,
        },
        refusals: Default::default(),
        simulated: BTreeMap::new(),
        wake: Arc::new(tokio::sync::Notify::new()),
        metrics: None,
    });
    router(state, 64 * 1024)
}

async fn send(app: &axum::Router, method: &str, uri: &str, body: String) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/yaml")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn api_body(namespace: &str, name: &str, parallelism: u32) -> String {
    let mut spec = spec();
    spec["parallelism"] = json!(parallelism);
    serde_json::to_string(&json!({
        "apiVersion": "twinsite.io/v1alpha1", "kind": "StreamJob",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn the_api_refuses_to_edit_or_delete_a_job_its_object_owns_naming_the_owner_and_an_object_adopts_an_api_job()
 {
    let h = harness(|_| {});
    let app = api_state(&h);
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    h.sync_until("orders stored", has("orders")).await;

    let uri = "/api/v1/jobs/shop/orders";
    let (status, body) = send(&app, "PUT", uri, api_body("shop", "orders", 3)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body.contains("owned by the StreamJob object shop/orders in site dc-a's cluster"),
        "{body}"
    );
    let (status, body) = send(&app, "DELETE", uri, String::new()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let stored = h
        .store
        .get_job("shop", "orders")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(stored.spec.to_json().unwrap()["spec"]["parallelism"], 2);

    // A body may not claim to come from an object.
    let mut claimed: Value = serde_json::from_str(&api_body("shop", "claims", 2)).unwrap();
    claimed["metadata"]["annotations"] = json!({ORIGIN_ANNOTATION: "kubernetes/dc-a"});
    let (status, body) = send(&app, "PUT", "/api/v1/jobs/shop/claims", claimed.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains(ORIGIN_ANNOTATION), "{body}");

    // A job the API made is the API's until an object of its name appears: then the object's.
    let uri = "/api/v1/jobs/shop/billing";
    let (status, body) = send(&app, "PUT", uri, api_body("shop", "billing", 3)).await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = send(&app, "PUT", uri, api_body("shop", "billing", 4)).await;
    assert!(status.is_success(), "{status} {body}");
    h.fake.put("streamjobs", object("shop", "billing", spec()));
    let report = h
        .sync_until("billing adopted", |jobs| {
            jobs.iter().any(|j| {
                j.name == "billing"
                    && j.spec.to_json().unwrap()["metadata"]["annotations"][ORIGIN_ANNOTATION]
                        == "kubernetes/dc-a"
            })
        })
        .await;
    assert_eq!(report.adopted, 1, "{report:?}");
    let (status, _) = send(&app, "DELETE", uri, String::new()).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

/// The figure for the README: 1000 StreamJobs listed in pages of 500, to a store holding
/// their 1000 jobs and 1000 statuses written; then a `410 Expired` watch whose relist's
/// second page expires too, while one object is deleted: the rounds run during the broken
/// relist must delete nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streamjobs_reach_a_consistent_store_and_a_broken_relist_deletes_only_what_is_gone()
 {
    let started = Instant::now();
    let h = harness_seeded(
        |_| {},
        |fake| {
            for i in 0..1000 {
                let name = format!("job-{i:04}");
                let mut spec = spec();
                spec["checkpoints"]["dir"] =
                    json!(format!("hdfs:///flink/checkpoints/shop/{name}"));
                fake.put("streamjobs", object("shop", &name, spec));
            }
        },
    );
    let report = h.sync_until("1000 stored", |jobs| jobs.len() == 1000).await;
    let elapsed = started.elapsed();
    let statuses = h
        .fake
        .list("streamjobs")
        .iter()
        .filter(|o| o["status"]["phase"] == "pending")
        .count();
    eprintln!(
        "figure: 1000 StreamJobs -> store and 1000 statuses in {:.0} ms (last round: {report:?})",
        elapsed.as_secs_f64() * 1000.0
    );
    assert_eq!(statuses, 1000);
    let lists = h
        .fake
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && !s.query.contains("watch=true"))
        .count();
    assert!(lists >= 2, "listed in pages of 500: {lists} list requests");

    let started = Instant::now();
    let quiet = h.watch.sync_once().await.unwrap();
    eprintln!(
        "figure: a round over 1000 unchanged StreamJobs: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(
        quiet.statuses_written + quiet.created + quiet.updated,
        0,
        "{quiet:?}"
    );

    // The watch is expired, its history compacted (a relist is the only way back), the
    // relist's second page expires too, and one object goes while the watch is away.
    h.fake.compact();
    h.fake.expire_next_continue();
    h.fake.expire_watches();
    h.fake.remove("streamjobs", "shop", "job-0999");
    let mut rounds = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = h.watch.sync_once().await.unwrap();
        rounds += 1;
        assert!(report.deleted <= 1, "{report:?}");
        let jobs = h.jobs().await;
        assert!(
            jobs.len() >= 999,
            "a partial relist deleted jobs: {}",
            jobs.len()
        );
        if jobs.len() == 999 {
            break;
        }
        assert!(Instant::now() < deadline, "job-0999 never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!has("job-0999")(&h.jobs().await));
    let continues = h
        .fake
        .seen()
        .iter()
        .filter(|s| s.query.contains("continue="))
        .count();
    assert!(
        continues >= 2,
        "the expired page was listed again: {continues}"
    );
    eprintln!("relist after 410 consistent after {rounds} rounds");
}

#[tokio::test]
async fn a_restarted_controller_deletes_nothing_before_its_first_complete_list() {
    // A first controller stored the jobs of 600 objects, then saw one deleted.
    let h = harness_seeded(
        |_| {},
        |fake| {
            for i in 0..600 {
                fake.put("streamjobs", object("shop", &format!("job-{i:03}"), spec()));
            }
        },
    );
    let mut rounds_before_list = 0;
    h.sync_until("600 stored", |jobs| jobs.len() == 600).await;
    h.fake.remove("streamjobs", "shop", "job-000");
    h.sync_until("job-000 deleted", |jobs| jobs.len() == 599)
        .await;

    // A second controller on the same store starts; its first list is slow: the second
    // page expires and the list starts again. No round may act on a partial list.
    let (client, fake) = FakeApi::start();
    for object in h.fake.list("streamjobs") {
        fake.put("streamjobs", object);
    }
    fake.expire_next_continue();
    let (second, reflector) = StreamJobWatch::new(
        client,
        Arc::clone(&h.controller),
        StreamJobWatchConfig::new(SiteId("dc-a".into())),
        Arc::new(tokio::sync::Notify::new()),
    );
    let report = second.sync_once().await.unwrap();
    assert!(!report.listed, "{report:?}");
    rounds_before_list += 1;
    tokio::spawn(reflector);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = second.sync_once().await.unwrap();
        assert_eq!(report.deleted, 0, "{report:?}");
        assert_eq!(h.jobs().await.len(), 599);
        if report.listed {
            break;
        }
        rounds_before_list += 1;
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(rounds_before_list >= 1);
}

/// The whole way, on the production loops: `kubectl apply` of a StreamJob with a per-site
/// override → the watch's own run loop stores it and wakes the reconcile loop → the pass
/// launches it in a simulated site with that site's env → `kubectl get sj` shows it running
/// there; `kubectl delete` → the job is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_runs_the_job_with_its_sites_override_and_kubectl_delete_stops_it() {
    use chrono::Utc;
    use scheduler::model::{JobId, SiteSnapshot};
    use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
    use twinsite::site::{ManualClock, Site};

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc::now());
    let mut sims = BTreeMap::new();
    for name in ["dc-a", "dc-b"] {
        let sim = SimulatedSite::new(
            SiteSnapshot {
                id: SiteId(name.into()),
                nodes: (1..=4)
                    .map(|i| support::fixtures::node(&format!("{name}-n{i}")))
                    .collect(),
                running_pods: vec![],
            },
            dir.path().join(name),
            Arc::new(clock.clone()),
            SimulatedSiteConfig::default(),
        );
        sims.insert(name.to_owned(), sim);
    }
    let sites: BTreeMap<SiteId, Arc<dyn Site>> = sims
        .iter()
        .map(|(id, s)| (SiteId(id.clone()), Arc::new(s.clone()) as Arc<dyn Site>))
        .collect();
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let mut config = StreamJobWatchConfig::new(SiteId("dc-a".into()));
    config.status_interval = Duration::from_millis(100);
    let controller = Arc::new(
        Controller::new(
            sites,
            Arc::clone(&store) as Arc<dyn StateStore>,
            Policy::default_two_sites(),
        )
        .with_stream_jobs(config.scope.clone()),
    );
    controller.set_leading(true);
    let (client, fake) = FakeApi::start();
    let wake = Arc::new(tokio::sync::Notify::new());
    let (watch, reflector) =
        StreamJobWatch::new(client, Arc::clone(&controller), config, Arc::clone(&wake));
    tokio::spawn(reflector);
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&watch).run(stop.clone()));

    let mut job = spec();
    job["placement"] = json!({"sites": {"preferred": "dc-a"}});
    job["siteOverrides"] = json!({"dc-a": {"env": {"KAFKA_BOOTSTRAP": "kafka.${site}:9092"}}});
    fake.put("streamjobs", object("shop", "orders", job));
    tokio::time::timeout(Duration::from_secs(60), wake.notified())
        .await
        .expect("the watch wakes the reconcile loop when it stored a job");
    assert!(store.get_job("shop", "orders").await.unwrap().is_some());

    let id = JobId::new("shop", "orders");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        controller.reconcile_once().await.unwrap();
        for sim in sims.values() {
            sim.tick();
        }
        let status = fake.get("streamjobs", "shop", "orders").unwrap()["status"].clone();
        if status["phase"] == "running" && status["site"] == "dc-a" {
            assert_eq!(status["generation"], 1, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "never shown running: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let launched = sims["dc-a"].launched(&id).expect("orders runs in dc-a");
    assert_eq!(launched.env["KAFKA_BOOTSTRAP"], "kafka.dc-a:9092");

    fake.remove("streamjobs", "shop", "orders");
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get_job("shop", "orders").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "never deleted from the store");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller.reconcile_once().await.unwrap();
    assert!(sims["dc-a"].launched(&id).is_none(), "stopped in dc-a");
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn one_jobs_unreadable_checkpoint_pointer_does_not_stop_the_other_jobs_statuses() {
    use twinsite::state::KvBackend;
    let h = harness(|_| {});
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    h.fake.put("streamjobs", object("shop", "payments", spec()));
    h.sync_until("both stored", |jobs| jobs.len() == 2).await;
    let key = h
        .store
        .layout()
        .checkpoint("shop", "orders", CheckpointKind::Completed, "dc-a")
        .unwrap();
    h.store
        .backend()
        .put(&key, b"{not json".to_vec(), twinsite::state::Expected::Any)
        .await
        .unwrap();
    for name in ["orders", "payments"] {
        let mut record = h.store.get_job("shop", name).await.unwrap().unwrap();
        record.value.status =
            serde_json::from_value(json!({"phase": "running", "site": "dc-a", "relaunches": 0}))
                .unwrap();
        h.store
            .put_job(
                &record.value,
                twinsite::state::Expected::Revision(record.revision),
            )
            .await
            .unwrap();
    }
    let report = h.watch.sync_once().await.expect("the round goes on");
    assert_eq!(h.status_of("payments")["phase"], "running");
    // Whether a store that skips the bad pointer shows orders running, or the read fails
    // and orders waits for the next round, nothing else waits for it.
    assert_eq!(
        report.statuses_written + report.job_failures,
        2,
        "{report:?}"
    );
}

#[tokio::test]
async fn an_object_whose_stored_record_does_not_decode_says_how_to_recover_and_is_stored_again_after_the_api_deletes_it()
 {
    use twinsite::state::KvBackend;
    let h = harness(|_| {});
    let app = api_state(&h);
    let key = h.store.layout().job("shop", "orders").unwrap();
    h.store
        .backend()
        .put(
            &key,
            b"\x00 not a record".to_vec(),
            twinsite::state::Expected::Absent,
        )
        .await
        .unwrap();
    h.fake.put("streamjobs", object("shop", "orders", spec()));
    h.fake.put("streamjobs", object("shop", "payments", spec()));
    let report = h.sync_until("payments stored", has("payments")).await;
    assert_eq!(report.refused, 1, "{report:?}");
    let status = h.status_of("orders");
    assert_eq!(status["phase"], "invalid");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains(&key) && message.contains("DELETE /api/v1/jobs/shop/orders"),
        "{message}"
    );

    let (code, body) = send(&app, "DELETE", "/api/v1/jobs/shop/orders", String::new()).await;
    assert!(code.is_success(), "{code} {body}");
    h.sync_until("orders stored again", has("orders")).await;
    h.watch.sync_once().await.unwrap();
    assert_eq!(h.status_of("orders")["phase"], "pending");
}

/// The figure on the production store: 1000 StreamJobs into a real etcd (single member on
/// loopback) that this test leads, every write guarded by the leader key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streamjobs_reach_a_consistent_store_on_etcd() {
    use twinsite::leader::LeaderElector;
    use twinsite::state::{EtcdConfig, EtcdStateStore, KeyLayout, connect_etcd};
    let server = support::etcd::EtcdServer::start().await;
    let elector = LeaderElector::new(
        server.client().await,
        KeyLayout::default().election("controller").unwrap(),
        "watch-figure",
        Duration::from_secs(5),
    );
    let leadership = elector.campaign().await.unwrap();
    let config = EtcdConfig::new(vec![server.endpoint().to_owned()]);
    let store =
        EtcdStateStore::on_etcd(connect_etcd(&config).await.unwrap(), &config.key_prefix).unwrap();
    store.set_leader(Some(leadership.leader_key.clone()));
    let store: Arc<dyn StateStore> = Arc::new(store);
    let controller = Arc::new(
        Controller::new(
            BTreeMap::new(),
            Arc::clone(&store),
            Policy::default_two_sites(),
        )
        .with_stream_jobs(StreamJobWatchConfig::new(SiteId("dc-a".into())).scope),
    );
    controller.set_leading(true);
    let (client, fake) = FakeApi::start();
    for i in 0..1000 {
        fake.put("streamjobs", object("shop", &format!("job-{i:04}"), spec()));
    }
    let started = Instant::now();
    let (watch, reflector) = StreamJobWatch::new(
        client,
        Arc::clone(&controller),
        StreamJobWatchConfig::new(SiteId("dc-a".into())),
        Arc::new(tokio::sync::Notify::new()),
    );
    tokio::spawn(reflector);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let report = watch.sync_once().await.unwrap();
        if report.listed && store.list_jobs().await.unwrap().len() == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "{report:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let statuses = fake
        .list("streamjobs")
        .iter()
        .filter(|o| o["status"]["phase"] == "pending")
        .count();
    assert_eq!(statuses, 1000);
    eprintln!(
        "figure: 1000 StreamJobs -> etcd and 1000 statuses in {:.0} ms",
        elapsed.as_secs_f64() * 1000.0
    );
    let started = Instant::now();
    let quiet = watch.sync_once().await.unwrap();
    assert_eq!(quiet.created + quiet.statuses_written, 0, "{quiet:?}");
    eprintln!(
        "figure: a round over 1000 unchanged StreamJobs on etcd: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
