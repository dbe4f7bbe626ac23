//! The HTTP API through its router (no socket): auth, validation, body limits, audit, reads,
//! the dry-run plan, the OpenAPI document and fault injection on simulated sites.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use scheduler::input::Policy;
use scheduler::model::{SiteId, SiteSnapshot};
use support::fixtures::node;
use tower::ServiceExt;
use twinsite::api::{ApiState, openapi, router};
use twinsite::controller::Controller;
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, StateStore};

const TOKEN: &str = "test-token-0123456789abcdef";
const MAX_BODY: usize = 64 * 1024;

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
  checkpoints: {dir: "hdfs:///flink/checkpoints/shop/orders"}
"#;

struct Api {
    app: axum::Router,
    store: Arc<EmbeddedStateStore>,
    controller: Arc<Controller>,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    api_with(None)
}

fn api_with(metrics: Option<Arc<dyn twinsite::metrics::MetricsSource>>) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
    let mut simulated = BTreeMap::new();
    for site in ["dc-a", "dc-b"] {
        let sim = SimulatedSite::new(
            SiteSnapshot {
                id: SiteId(site.into()),
                nodes: (1..=3).map(|i| node(&format!("{site}-n{i}"))).collect(),
                running_pods: vec![],
            },
            dir.path().join(site),
            Arc::new(clock.clone()),
            SimulatedSiteConfig::default(),
        );
        simulated.insert(SiteId(site.into()), sim.handle());
        sites.insert(SiteId(site.into()), Arc::new(sim));
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let controller = Arc::new(Controller::new(
        sites,
        Arc::clone(&store) as Arc<dyn StateStore>,
        Policy::default_two_sites(),
    ));
    controller.set_leading(true);
    let state = Arc::new(ApiState {
        controller: Arc::clone(&controller),
        token: TOKEN.into(),
        simulated,
        wake: Arc::new(tokio::sync::Notify::new()),
        metrics,
    });
    Api {
        app: router(state, MAX_BODY),
        store,
        controller,
        _dir: dir,
    }
}

impl Api {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn audit(&self) -> Vec<twinsite::state::AuditEntry> {
        self.store
            .list_audit(1, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.entry)
            .collect()
    }
}

#[tokio::test]
async fn mutations_need_the_token_401_without_403_wrong() {
    let api = api();
    let (status, _) = api.send("POST", "/api/v1/jobs", None, JOB).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api
        .send("POST", "/api/v1/jobs", Some("wrong-token"), JOB)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!body.contains(TOKEN));
    let (status, _) = api
        .send("DELETE", "/api/v1/jobs/shop/orders", None, "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(api.store.list_jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn creating_a_job_stores_it_audits_it_and_a_second_create_conflicts() {
    let api = api();
    let (status, body) = api.send("POST", "/api/v1/jobs", Some(TOKEN), JOB).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["name"], "orders");
    assert_eq!(view["generation"], 0);

    let (status, _) = api.send("POST", "/api/v1/jobs", Some(TOKEN), JOB).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let audit = api.audit().await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(
        (audit[0].action.as_str(), audit[0].result.as_str()),
        ("create", "ok")
    );
    assert_eq!(audit[0].target, "shop/orders");
    assert_eq!(audit[0].actor, "token");
    assert!(audit[1].result.starts_with("rejected"));

    let (status, body) = api.send("GET", "/api/v1/jobs/shop/orders", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"pending\""), "{body}");
    let (_, list) = api.send("GET", "/api/v1/jobs", None, "").await;
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&list)
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_bad_body_is_400_naming_the_field_and_is_audited() {
    let api = api();
    let bad = JOB.replace("parallelism: 2", "parallelizm: 2");
    let (status, body) = api.send("POST", "/api/v1/jobs", Some(TOKEN), &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("parallelizm"), "{body}");
    let bad_quantity = JOB.replace("memory: 2Gi", "memory: 2Gigs");
    let (status, body) = api
        .send("POST", "/api/v1/jobs", Some(TOKEN), &bad_quantity)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("spec.jobManager.resources.memory"), "{body}");
    assert!(api.store.list_jobs().await.unwrap().is_empty());
    assert!(
        api.audit()
            .await
            .iter()
            .all(|e| e.result.starts_with("rejected"))
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_parsing() {
    let api = api();
    let huge = format!("{JOB}# {}\n", "x".repeat(MAX_BODY));
    let (status, _) = api.send("POST", "/api/v1/jobs", Some(TOKEN), &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn replace_must_match_the_path_and_delete_removes_the_job() {
    let api = api();
    api.send("POST", "/api/v1/jobs", Some(TOKEN), JOB).await;
    let (status, body) = api
        .send("PUT", "/api/v1/jobs/shop/other", Some(TOKEN), JOB)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("shop/other"), "{body}");
    let changed = JOB.replace("parallelism: 2", "parallelism: 3");
    let (status, body) = api
        .send("PUT", "/api/v1/jobs/shop/orders", Some(TOKEN), &changed)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"parallelism\":3"), "{body}");
    let (status, _) = api
        .send("DELETE", "/api/v1/jobs/shop/orders", Some(TOKEN), "")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.send("GET", "/api/v1/jobs/shop/orders", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reads_show_sites_nodes_plan_and_metrics() {
    let api = api();
    api.send("POST", "/api/v1/jobs", Some(TOKEN), JOB).await;
    api.controller.reconcile_once().await.unwrap();

    let (status, body) = api.send("GET", "/api/v1/sites", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let sites: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(sites.len(), 2);
    assert_eq!(
        sites
            .iter()
            .map(|s| s["jobs"].as_u64().unwrap())
            .sum::<u64>(),
        1
    );

    let (_, body) = api.send("GET", "/api/v1/nodes?site=dc-b", None, "").await;
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len(),
        3
    );
    let (status, body) = api.send("GET", "/api/v1/nodes?site=dc-z", None, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("dc-z"));

    let (status, body) = api.send("GET", "/api/v1/plan", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let plan: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["plan"]["placements"].as_array().unwrap().len(), 1);

    let (_, body) = api.send("GET", "/metrics", None, "").await;
    assert!(
        body.contains("twinsite_jobs{phase=\"launching\"} 1"),
        "{body}"
    );
    assert!(body.contains("twinsite_leader 1"));

    let (status, body) = api.send("GET", "/readyz", None, "").await;
    assert_eq!(
        (status, body.trim()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "leading; first reconcile pass not done yet"
        )
    );
}

#[tokio::test]
async fn the_capacity_report_is_served_from_the_live_view() {
    let api = api();
    api.send("POST", "/api/v1/jobs", Some(TOKEN), JOB).await;
    api.controller.reconcile_once().await.unwrap();
    let (status, body) = api.send("GET", "/api/v1/reports/capacity", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["jobs"], 1);
    assert_eq!(report["placed"], 1);
    assert_eq!(report["sites"].as_array().unwrap().len(), 2);
    let (status, html) = api
        .send("GET", "/api/v1/reports/capacity?format=html", None, "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<svg"), "{html}");
    let (status, body) = api
        .send("GET", "/api/v1/reports/capacity?format=pdf", None, "")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("pdf"), "{body}");
    let (status, body) = api.send("GET", "/api/v1/recommendations", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("metrics"), "{body}");
}

#[tokio::test]
async fn recommendations_come_from_the_configured_metrics_source() {
    use scheduler::report::assemble::JobFacts;
    use twinsite::metrics::synthetic::{history, write_json_lines};
    let dir = tempfile::tempdir().unwrap();
    let job = scheduler::input::parse_stream_jobs("job", JOB)
        .unwrap()
        .remove(0);
    let facts = JobFacts::of(&job, &job.demand().unwrap());
    let path = dir.path().join("metrics.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    write_json_lines(&mut file, &history(&facts, 3, now, 2, 60_000)).unwrap();
    drop(file);
    let source = twinsite::metrics::file::FileSource::open(&path).unwrap();
    let api = api_with(Some(Arc::new(source)));
    api.send("POST", "/api/v1/jobs", Some(TOKEN), JOB).await;
    let (status, body) = api.send("GET", "/api/v1/recommendations", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let recommendations = answer["recommendations"].as_array().unwrap();
    assert_eq!(recommendations.len(), 1, "{body}");
    assert!(body.contains("shop/orders"), "{body}");
    assert!(answer["source"].as_str().unwrap().contains("metrics.jsonl"));
}

#[tokio::test]
async fn right_sizing_is_a_dry_run_unless_applied_and_an_applied_patch_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("s")).unwrap());
    // The simulated source reads the job from a store of its own, placed in a simulated site.
    let job = scheduler::input::parse_stream_jobs("job", JOB)
        .unwrap()
        .remove(0);
    let mut record = twinsite::controller::new_record(&job);
    record.placement = Some(twinsite::state::JobPlacement {
        site: "dc-a".into(),
        detail: serde_json::Value::Null,
    });
    // Find a seed whose synthetic history recommends a change for this job.
    store
        .put_job(&record, twinsite::state::Expected::Absent)
        .await
        .unwrap();
    let mut chosen = None;
    for seed in 0..40 {
        let source = twinsite::metrics::simulated::SimulatedMetricsSource::new(
            store.clone(),
            ["dc-a".to_string()].into(),
            seed,
        );
        let api = api_with(Some(Arc::new(source)));
        api.store
            .put_job(&record, twinsite::state::Expected::Absent)
            .await
            .unwrap();
        let (status, body) = api
            .send(
                "POST",
                "/api/v1/jobs/shop/orders/rightsize",
                Some(TOKEN),
                "",
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(outcome["applied"], false);
        if !outcome["patch"].is_null() {
            chosen = Some((api, outcome));
            break;
        }
    }
    let (api, dry) = chosen.expect("some seed recommends a change");
    let before = api.store.get_job("shop", "orders").await.unwrap().unwrap();
    assert!(
        api.audit().await.iter().all(|e| e.action != "rightsize"),
        "a dry run is not audited"
    );

    let (status, _) = api
        .send(
            "POST",
            "/api/v1/jobs/shop/orders/rightsize?apply=true",
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/jobs/shop/orders/rightsize?apply=true",
            Some(TOKEN),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let applied: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["patch"], dry["patch"]);
    let after = api.store.get_job("shop", "orders").await.unwrap().unwrap();
    assert_ne!(after.value.spec, before.value.spec);
    let mut expected = before.value.spec.clone();
    twinsite::controller::rightsize::merge_patch(&mut expected, &dry["patch"]);
    assert_eq!(after.value.spec, expected);
    let audit = api.audit().await;
    let entry = audit.iter().find(|e| e.action == "rightsize").unwrap();
    assert!(entry.result.starts_with("ok"), "{entry:?}");
}

#[tokio::test]
async fn a_failover_dry_run_plans_every_move_and_changes_nothing() {
    let api = api();
    let other = JOB.replace("name: orders", "name: clicks");
    for job in [JOB, other.as_str()] {
        let job = job.replace(
            "  checkpoints:",
            "  placement: {sites: {preferred: dc-a}}\n  checkpoints:",
        );
        let (status, body) = api.send("POST", "/api/v1/jobs", Some(TOKEN), &job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    api.controller.reconcile_once().await.unwrap();
    // Only orders has a checkpoint replicated to dc-b (by its generation 1), recorded and
    // handed to the failover engine as the replication driver does.
    let completed_at = chrono::Utc::now() - chrono::Duration::seconds(40);
    let orders = scheduler::model::JobId::new("shop", "orders");
    let uri = format!(
        "file:///dc-b/flink/checkpoints/shop/orders/{}/chk-7",
        twinsite::site::flink_job_id(&orders, 1)
    );
    api.store
        .put_checkpoint(
            "shop",
            "orders",
            twinsite::state::CheckpointKind::Replicated,
            "dc-b",
            &twinsite::state::CheckpointPointer {
                checkpoint_id: 7,
                uri: uri.clone(),
                recorded_at_unix_ms: completed_at.timestamp_millis(),
            },
        )
        .await
        .unwrap();
    api.controller
        .failover
        .notify(failover::Event::CheckpointReplicated {
            job: orders,
            replica: failover::CheckpointPointer {
                site: scheduler::model::SiteId("dc-b".into()),
                generation: 1,
                id: 7,
                path: uri,
                completed_at,
                kind: failover::CheckpointKind::Checkpoint,
            },
        });
    api.controller.reconcile_once().await.unwrap();
    let before = api.store.list_jobs().await.unwrap();

    let (status, body) = api
        .send(
            "POST",
            "/api/v1/failover",
            Some(TOKEN),
            r#"{"from":"dc-a","mode":"forced","dryRun":true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let plan: serde_json::Value = serde_json::from_str(&body).unwrap();
    let moves = plan["plan"]["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{body}");
    assert_eq!(moves[0]["job"], "shop/orders");
    assert_eq!(moves[0]["to"], "dc-b");
    assert_eq!(moves[0]["restore_from"]["id"], 7);
    let rpo = moves[0]["expected_rpo"]["secs"].as_u64().unwrap();
    assert!((40..60).contains(&rpo), "{body}");
    let not_fitting = plan["plan"]["not_fitting"].as_array().unwrap();
    assert_eq!(not_fitting.len(), 1, "{body}");
    assert_eq!(not_fitting[0]["job"], "shop/clicks");

    let (status, body) = api
        .send(
            "POST",
            "/api/v1/failover",
            Some(TOKEN),
            r#"{"from":"dc-a","to":"dc-b","mode":"planned","dryRun":true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let plan: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["plan"]["moves"].as_array().unwrap().len(), 2, "{body}");

    let (status, body) = api
        .send(
            "POST",
            "/api/v1/failover",
            Some(TOKEN),
            r#"{"from":"dc-q","mode":"forced","dryRun":true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("from") && body.contains("dc-q"), "{body}");
    let (status, _) = api
        .send(
            "POST",
            "/api/v1/failover",
            None,
            r#"{"from":"dc-a","mode":"forced","dryRun":true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.store.list_jobs().await.unwrap(),
        before,
        "a dry run changed the store"
    );

    // Without dryRun the leader's failover engine starts the operation; its progress is
    // served, and cancelling an operation that does not exist names it.
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/failover",
            Some(TOKEN),
            r#"{"from":"dc-a","mode":"forced"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = op["id"].as_u64().unwrap();
    assert_eq!(op["from"], "dc-a");
    assert_eq!(op["to"], "dc-b");
    assert!(op["progress"]["total"].as_u64().unwrap() >= 1, "{body}");
    let (status, body) = api
        .send("GET", &format!("/api/v1/failover/{id}"), None, "")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.send("GET", "/api/v1/failover", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()[0]["id"],
        id
    );
    let (status, body) = api
        .send("POST", "/api/v1/failover/99/cancel", Some(TOKEN), "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("99"), "{body}");
}

#[tokio::test]
async fn every_documented_route_exists() {
    let api = api();
    let (status, body) = api.send("GET", "/api/v1/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["paths"].as_object().unwrap().len(), 18);
    for (method, path, _, _) in openapi::ROUTES {
        let uri = path
            .replace("{namespace}", "shop")
            .replace("{name}", "orders")
            .replace("{site}", "dc-a")
            .replace("{id}", "1");
        let (_, body) = api
            .send(&method.to_uppercase(), &uri, Some(TOKEN), "{}")
            .await;
        assert!(!body.contains("no such endpoint"), "{method} {uri}: {body}");
    }
    let (status, body) = api.send("GET", "/api/v1/nope", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no such endpoint"));
}

#[tokio::test]
async fn faults_are_injected_and_cleared_on_simulated_sites_only() {
    let api = api();
    let fault = r#"{"kind":"node-down","node":"dc-a-n1"}"#;
    let (status, _) = api
        .send("POST", "/api/v1/sim/dc-a/faults", None, fault)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api
        .send("POST", "/api/v1/sim/dc-a/faults", Some(TOKEN), fault)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, body) = api.send("GET", "/api/v1/sim/dc-a/faults", None, "").await;
    assert!(body.contains("dc-a-n1"), "{body}");
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/sim/dc-a/faults",
            Some(TOKEN),
            r#"{"kind":"meteor"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("meteor"), "{body}");
    let (status, _) = api
        .send("DELETE", "/api/v1/sim/dc-a/faults", Some(TOKEN), fault)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .send("POST", "/api/v1/sim/dc-z/faults", Some(TOKEN), fault)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let audit = api.audit().await;
    assert_eq!(
        audit.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["inject-fault", "inject-fault", "clear-fault"]
    );
}
