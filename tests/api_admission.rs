//! Issue #13 at the API's door: a job that breaks a bound is refused with the field and the
//! value named (400), a tenant past its job bound is refused (403), and a policy that names
//! its tenants refuses the others; each refusal is audited and nothing is stored.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use scheduler::input::{Policy, parse_policy, parse_stream_jobs};
use scheduler::limits::MAX_JOBS_PER_TENANT;
use scheduler::model::{SiteId, SiteSnapshot};
use support::fixtures::node;
use tower::ServiceExt;
use twinsite::api::auth::Access;
use twinsite::api::{ApiState, router};
use twinsite::controller::{Controller, new_record};
use twinsite::leader::LeaderElector;
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{
    EmbeddedStateStore, EtcdConfig, EtcdStateStore, Expected, KeyLayout, KvBackend, StateStore,
    connect_etcd,
};

const TOKEN: &str = "admission-token-0123456789";

fn job(namespace: &str, name: &str, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  jobManager: {{resources: {{cpu: "1", memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: "2", memory: 4Gi}}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/{namespace}/{name}"}}
{spec_extra}"#
    )
}

struct Api {
    app: axum::Router,
    store: Arc<dyn StateStore>,
    _dir: tempfile::TempDir,
}

fn api(policy: Policy) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    api_on(policy, store, dir)
}

fn api_on(policy: Policy, store: Arc<dyn StateStore>, dir: tempfile::TempDir) -> Api {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
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
        sites.insert(SiteId(site.into()), Arc::new(sim));
    }
    let controller = Arc::new(Controller::new(sites, Arc::clone(&store), policy));
    controller.set_leading(true);
    let state = Arc::new(ApiState {
        controller,
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
    Api {
        app: router(state, 1 << 20),
        store,
        _dir: dir,
    }
}

impl Api {
    async fn send(&self, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn stored(&self) -> usize {
        self.store.list_jobs().await.unwrap().len()
    }

    async fn last_audit(&self) -> String {
        let audit = self.store.list_audit(1, 0).await.unwrap();
        audit
            .last()
            .map(|r| r.entry.result.clone())
            .unwrap_or_default()
    }
}

/// The finding's request: accepted with 201, then the next pass aborted the process.
#[tokio::test]
async fn a_parallelism_past_flinks_bound_is_400_naming_the_field_and_nothing_is_stored() {
    let api = api(Policy::default_two_sites());
    for parallelism in ["4294967295", "50000000"] {
        let (status, body) = api
            .send(
                "POST",
                "/api/v1/jobs",
                &job("shop", "poison", &format!("  parallelism: {parallelism}\n")),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body.contains(&format!(
                "spec.parallelism: must be at most 32768 (Flink's bound), found {parallelism}"
            )),
            "{body}"
        );
        assert!(api.last_audit().await.starts_with("rejected: "));
    }
    assert_eq!(api.stored().await, 0);
}

#[tokio::test]
async fn quietly_accepted_values_of_the_finding_are_each_400_naming_the_field() {
    let api = api(Policy::default_two_sites());
    for (extra, field) in [
        (
            "  parallelism: 2\n  checkpoints: {dir: 'hdfs:///../../../../tmp/x'}\n",
            "spec.checkpoints.dir",
        ),
        (
            "  parallelism: 2\n  checkpoints: {dir: 'hdfs:///flink/x', interval: 1ns}\n",
            "spec.checkpoints.interval",
        ),
    ] {
        // `checkpoints` given twice would be a YAML error: drop the template's line.
        let body = job("shop", "quiet", extra).replace(
            "  checkpoints: {dir: \"hdfs:///flink/checkpoints/shop/quiet\"}\n",
            "",
        );
        let (status, response) = api.send("POST", "/api/v1/jobs", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
        assert!(response.contains(field), "{field}: {response}");
    }
    let body = job("shop", "quiet", "  parallelism: 2\n")
        .replace("memory: 4Gi}", "memory: 99999999999999999999Ei}");
    let (status, response) = api.send("POST", "/api/v1/jobs", &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    assert!(
        response.contains("spec.taskManager.resources.memory: quantity \\\"99999999999999999999Ei\\\" is too large"),
        "{response}"
    );
    assert_eq!(api.stored().await, 0);
}

#[tokio::test]
async fn a_tenant_at_its_job_bound_is_refused_a_new_job_but_may_replace_one() {
    let api = api(Policy::default_two_sites());
    // Fill the tenant straight through the store (admission would take a while).
    for i in 0..MAX_JOBS_PER_TENANT {
        let text = job("shop", &format!("job-{i}"), "  parallelism: 1\n");
        let parsed = parse_stream_jobs("seed", &text).unwrap().remove(0);
        api.store
            .put_job(&new_record(&parsed), Expected::Absent)
            .await
            .unwrap();
    }
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/jobs",
            &job("shop", "one-too-many", "  parallelism: 1\n"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains(&format!(
            "metadata.namespace: tenant \\\"shop\\\" already has {MAX_JOBS_PER_TENANT} jobs, the most one tenant may have ({MAX_JOBS_PER_TENANT})"
        )),
        "{body}"
    );
    assert!(api.last_audit().await.starts_with("rejected: "));
    assert_eq!(api.stored().await, MAX_JOBS_PER_TENANT);

    // Replacing a job of the tenant adds none.
    let (status, body) = api
        .send(
            "PUT",
            "/api/v1/jobs/shop/job-0",
            &job("shop", "job-0", "  parallelism: 2\n"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Another tenant is not affected.
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/jobs",
            &job("ads", "banner", "  parallelism: 1\n"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_namespace_the_policy_does_not_know_is_refused_listing_its_tenants() {
    let policy = parse_policy(
        "policy.yaml",
        "apiVersion: twinsite.io/v1alpha1
kind: Policy
sites: [{name: dc-a}, {name: dc-b}]
quotas:
  - {tenant: shop, site: dc-a, cpu: 100, memory: 400Gi}
  - {tenant: shop, site: dc-b, cpu: 100, memory: 400Gi}
",
    )
    .unwrap();
    let api = api(policy);
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/jobs",
            &job("stranger", "orders", "  parallelism: 1\n"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains(
            "metadata.namespace: tenant \\\"stranger\\\" is not in the policy, whose quotas name the tenants it admits: \\\"shop\\\""
        ),
        "{body}"
    );
    assert_eq!(api.stored().await, 0);
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/jobs",
            &job("shop", "orders", "  parallelism: 1\n"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Issue #13: two admissions at the same instant could each see room for a tenant's last
/// job and both store theirs. The check and the write are now one admission turn: of many
/// concurrent creates for the last slot, exactly one is stored. On a real etcd, where every
/// read and write is a network round trip that lets the other requests run in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_for_a_tenants_last_slot_store_exactly_one() {
    let etcd = support::etcd::EtcdServer::start().await;
    let layout = KeyLayout::default();
    let elector = LeaderElector::new(
        etcd.client().await,
        layout.election("controller").unwrap(),
        "admission",
        std::time::Duration::from_secs(5),
    );
    let leadership = elector.campaign().await.unwrap();
    let config = EtcdConfig::new(vec![etcd.endpoint().to_owned()]);
    let store =
        EtcdStateStore::on_etcd(connect_etcd(&config).await.unwrap(), &config.key_prefix).unwrap();
    store.set_leader(Some(leadership.leader_key.clone()));
    let api = api_on(
        Policy::default_two_sites(),
        Arc::new(store),
        tempfile::tempdir().unwrap(),
    );
    for i in 0..MAX_JOBS_PER_TENANT - 1 {
        let text = job("shop", &format!("job-{i}"), "  parallelism: 1\n");
        let parsed = parse_stream_jobs("seed", &text).unwrap().remove(0);
        api.store
            .put_job(&new_record(&parsed), Expected::Absent)
            .await
            .unwrap();
    }
    let bodies: Vec<String> = (0..8)
        .map(|i| job("shop", &format!("racer-{i}"), "  parallelism: 1\n"))
        .collect();
    let answers = futures::future::join_all(
        bodies
            .iter()
            .map(|body| api.send("POST", "/api/v1/jobs", body)),
    )
    .await;
    let created = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    let refused = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::FORBIDDEN)
        .count();
    assert_eq!((created, refused), (1, 7), "{answers:?}");
    assert_eq!(api.stored().await, MAX_JOBS_PER_TENANT);
}

/// Issue #13: a job record that does not decode (another version's, or hand-written) is
/// shown, not hidden: the list and a GET show it `failed` naming its key and the decode
/// error; a PUT cannot keep its unknown generation and is refused with 409; a DELETE works
/// as for any job, after which the name is free again.
#[tokio::test]
async fn a_job_record_that_does_not_decode_is_shown_failed_refused_a_replace_and_deletable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let key = "/twinsite/v1/jobs/shop/legacy";
    store
        .backend()
        .put(key, br#"{"namespace": 5}"#.to_vec(), Expected::Any)
        .await
        .unwrap();
    let api = api_on(Policy::default_two_sites(), store, dir);
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/jobs",
            &job("shop", "orders", "  parallelism: 1\n"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = api.send("GET", "/api/v1/jobs", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["legacy", "orders"]);
    for (status, body) in [
        (StatusCode::OK, jobs[0].to_string()),
        api.send("GET", "/api/v1/jobs/shop/legacy", "").await,
    ] {
        assert_eq!(status, StatusCode::OK, "{body}");
        let legacy: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(legacy["status"]["phase"], "failed", "{legacy}");
        let message = legacy["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(key) && message.contains("invalid type: integer `5`"),
            "{message}"
        );
        assert!(legacy.get("generation").is_none(), "{legacy}");
    }

    let (status, body) = api
        .send(
            "PUT",
            "/api/v1/jobs/shop/legacy",
            &job("shop", "legacy", "  parallelism: 1\n"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body.contains(key) && body.contains("delete the job"),
        "{body}"
    );

    let (status, body) = api.send("DELETE", "/api/v1/jobs/shop/legacy", "").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(api.store.unreadable_records().is_empty());
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/jobs",
            &job("shop", "legacy", "  parallelism: 1\n"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(api.stored().await, 2);
}
