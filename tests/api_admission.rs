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
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, StateStore};

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
    store: Arc<EmbeddedStateStore>,
    _dir: tempfile::TempDir,
}

fn api(policy: Policy) -> Api {
    let dir = tempfile::tempdir().unwrap();
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
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let controller = Arc::new(Controller::new(
        sites,
        Arc::clone(&store) as Arc<dyn StateStore>,
        policy,
    ));
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
