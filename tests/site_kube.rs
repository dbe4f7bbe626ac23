//! The Kubernetes site adapter against a tower-test mock API server: the exact requests it
//! sends (method, path, field manager, body) and how it reads recorded-shape list/watch
//! JSON. No live API server is involved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use kube::Client;
use kube::client::Body;
use scheduler::model::{JobId, JobPlacement, PodPlacement, PodRole, Resources, SiteId};
use serde_json::{Value, json};
use twinsite::site::kube::{
    FIELD_MANAGER, KubeSite, KubeSiteConfig, jobs_from, kube_error, object_base, snapshot_from,
};
use twinsite::site::{JobState, LaunchMode, LaunchSpec, Site, SiteError, flink_job_id};

type ApiServer = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock_site(mode: LaunchMode) -> (KubeSite, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let mut config = KubeSiteConfig::new(SiteId("dc-a".into()), mode);
    config.savepoint_poll = Duration::from_millis(1);
    config.sync_timeout = Duration::from_secs(5);
    let (site, _reflectors) = KubeSite::new(client, config);
    (site, handle)
}

/// One request as the API server saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    path_and_query: String,
    content_type: Option<String>,
    body: Value,
}

/// Takes the next request and answers it with `status` and `answer`.
async fn answer(api: &mut ApiServer, status: u16, answer: Value) -> Seen {
    let (request, send) = api.next_request().await.expect("a request");
    let method = request.method().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    Seen {
        method,
        path_and_query,
        content_type,
        body,
    }
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn decode(query: &str) -> String {
    query
        .replace("%2F", "/")
        .replace("%3D", "=")
        .replace("%2C", ",")
}

fn spec(restore_from: Option<&str>) -> LaunchSpec {
    let job = JobId::new("team-a", "orders");
    let tm = |index, node: &str| PodPlacement {
        role: PodRole::Taskmanager,
        index,
        node: node.into(),
    };
    LaunchSpec {
        job: job.clone(),
        generation: 7,
        placement: JobPlacement {
            job,
            site: SiteId("dc-a".into()),
            pods: vec![
                PodPlacement {
                    role: PodRole::Jobmanager,
                    index: 0,
                    node: "dc-a-n1".into(),
                },
                tm(0, "dc-a-n2"),
                tm(1, "dc-a-n3"),
                tm(2, "dc-a-n3"),
            ],
        },
        image: "flink:1.20".into(),
        flink_version: "v1_20".into(),
        jar_uri: "hdfs:///jars/orders-1.4.jar".into(),
        entry_class: Some("com.example.Orders".into()),
        args: vec!["--env".into(), "prod".into()],
        parallelism: 6,
        task_slots: 2,
        job_manager: Resources::new(1000, 2 << 30, 1),
        task_manager: Resources::new(2500, 4 << 30, 1),
        tolerations: vec![scheduler::k8s::Toleration {
            key: "dedicated".into(),
            operator: scheduler::k8s::TolerationOperator::Equal,
            value: "flink".into(),
            effect: Some(scheduler::k8s::TaintEffect::NoSchedule),
            toleration_seconds: None,
        }],
        flink_configuration: BTreeMap::from([
            ("state.backend.type".into(), "rocksdb".into()),
            ("state.checkpoints.dir".into(), "hdfs:///overridden".into()),
        ]),
        checkpoint_dir: "hdfs:///flink/checkpoints/team-a/orders".into(),
        checkpoint_interval_ms: 60_000,
        restore_from: restore_from.map(str::to_owned),
    }
}

fn pinned_nodes(pod_spec: &Value) -> Value {
    pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0]
        .clone()
}

#[tokio::test]
async fn a_standalone_launch_applies_pinned_deployments_and_a_service_owned_by_the_job_manager() {
    let (site, mut api) = mock_site(LaunchMode::Standalone);
    let server = tokio::spawn(async move {
        let generations = answer(&mut api, 200, list("DeploymentList", "apps/v1", vec![])).await;
        let jm = answer(&mut api, 200, json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "orders-g7-jobmanager", "namespace": "team-a", "uid": "uid-jm-1"},
        }))
        .await;
        let svc = answer(
            &mut api,
            200,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders-g7-rest"}}),
        )
        .await;
        let tm0 = answer(&mut api, 200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders-g7-taskmanager-0"}})).await;
        let tm1 = answer(&mut api, 200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders-g7-taskmanager-1"}})).await;
        (generations, jm, svc, tm0, tm1)
    });
    site.launch(&spec(Some(
        "hdfs:///flink/checkpoints/team-a/orders/abc/chk-41",
    )))
    .await
    .unwrap();
    let (generations, jm, svc, tm0, tm1) = server.await.unwrap();

    assert_eq!(generations.method, "GET");
    assert_eq!(
        decode(&generations.path_and_query),
        "/apis/apps/v1/namespaces/team-a/deployments?&labelSelector=twinsite.io/job=orders"
    );

    for (seen, name) in [
        (&jm, "deployments/orders-g7-jobmanager"),
        (&tm0, "deployments/orders-g7-taskmanager-0"),
        (&tm1, "deployments/orders-g7-taskmanager-1"),
    ] {
        assert_eq!(seen.method, "PATCH");
        assert_eq!(
            seen.path_and_query,
            format!(
                "/apis/apps/v1/namespaces/team-a/{name}?&force=true&fieldManager={FIELD_MANAGER}"
            )
        );
        assert_eq!(
            seen.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(seen.body["metadata"]["labels"]["twinsite.io/job"], "orders");
        assert_eq!(
            seen.body["metadata"]["labels"]["twinsite.io/generation"],
            "7"
        );
        assert_eq!(
            seen.body["metadata"]["annotations"]["twinsite.io/job-id"],
            "team-a/orders"
        );
    }
    assert_eq!(svc.method, "PATCH");
    assert_eq!(
        svc.path_and_query,
        format!(
            "/api/v1/namespaces/team-a/services/orders-g7-rest?&force=true&fieldManager={FIELD_MANAGER}"
        )
    );
    assert_eq!(
        svc.body["metadata"]["ownerReferences"][0]["uid"],
        "uid-jm-1"
    );
    assert_eq!(svc.body["spec"]["selector"]["component"], "jobmanager");

    let jm_pod = &jm.body["spec"]["template"]["spec"];
    assert_eq!(
        pinned_nodes(jm_pod),
        json!({"key": "metadata.name", "operator": "In", "values": ["dc-a-n1"]})
    );
    assert_eq!(jm_pod["tolerations"][0]["key"], "dedicated");
    let container = &jm_pod["containers"][0];
    assert_eq!(
        container["args"],
        json!([
            "standalone-job",
            "--jars",
            "hdfs:///jars/orders-1.4.jar",
            "--job-id",
            flink_job_id(&spec(None).job, 7),
            "--job-classname",
            "com.example.Orders",
            "--fromSavepoint",
            "hdfs:///flink/checkpoints/team-a/orders/abc/chk-41",
            "--env",
            "prod",
        ])
    );
    assert_eq!(
        container["resources"]["requests"],
        json!({"cpu": "1000m", "memory": "2048Mi"})
    );
    let properties = container["env"][0]["value"].as_str().unwrap();
    assert!(
        properties.contains("state.checkpoints.dir: hdfs:///flink/checkpoints/team-a/orders\n"),
        "{properties}"
    );
    assert!(
        properties.contains("state.backend.type: rocksdb\n"),
        "{properties}"
    );
    assert!(
        properties.contains("jobmanager.rpc.address: orders-g7-rest\n"),
        "{properties}"
    );

    // Two TaskManagers share dc-a-n3: one Deployment per node, replicas = its count.
    assert_eq!(tm0.body["spec"]["replicas"], 1);
    assert_eq!(
        pinned_nodes(&tm0.body["spec"]["template"]["spec"])["values"],
        json!(["dc-a-n2"])
    );
    assert_eq!(tm1.body["spec"]["replicas"], 2);
    assert_eq!(
        pinned_nodes(&tm1.body["spec"]["template"]["spec"])["values"],
        json!(["dc-a-n3"])
    );
    assert_eq!(
        tm1.body["spec"]["template"]["metadata"]["labels"]["component"],
        "taskmanager"
    );
}

#[tokio::test]
async fn a_flink_deployment_launch_applies_the_operator_resource_with_an_explicit_restore_path() {
    let (site, mut api) = mock_site(LaunchMode::FlinkDeployment);
    let server = tokio::spawn(async move {
        let generations = answer(
            &mut api,
            200,
            list("FlinkDeploymentList", "flink.apache.org/v1beta1", vec![]),
        )
        .await;
        let apply = answer(&mut api, 200, json!({"apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment", "metadata": {"name": "orders-g7"}})).await;
        (generations, apply)
    });
    site.launch(&spec(Some(
        "hdfs:///flink/savepoints/team-a/savepoint-abc123-0123456789ab",
    )))
    .await
    .unwrap();
    let (generations, apply) = server.await.unwrap();

    assert_eq!(
        decode(&generations.path_and_query),
        "/apis/flink.apache.org/v1beta1/namespaces/team-a/flinkdeployments?&labelSelector=twinsite.io/job=orders"
    );
    assert_eq!(apply.method, "PATCH");
    assert_eq!(
        apply.path_and_query,
        format!(
            "/apis/flink.apache.org/v1beta1/namespaces/team-a/flinkdeployments/orders-g7?&force=true&fieldManager={FIELD_MANAGER}"
        )
    );
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let fixture = "tests/fixtures/kube/flinkdeployment-apply.json";
    if std::env::var_os("TWINSITE_BLESS").is_some() {
        std::fs::write(
            fixture,
            serde_json::to_string_pretty(&apply.body).unwrap() + "\n",
        )
        .unwrap();
    }
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    assert_eq!(apply.body, recorded, "body drifted from the recorded shape");

    let spec_body = &apply.body["spec"];
    assert_eq!(spec_body["job"]["upgradeMode"], "savepoint");
    assert_eq!(
        spec_body["job"]["initialSavepointPath"],
        "hdfs:///flink/savepoints/team-a/savepoint-abc123-0123456789ab"
    );
    assert_eq!(
        spec_body["flinkConfiguration"]["state.checkpoints.dir"],
        "hdfs:///flink/checkpoints/team-a/orders"
    );
    assert!(
        spec_body["flinkConfiguration"]
            .get("high-availability.type")
            .is_none()
    );
    assert_eq!(
        pinned_nodes(&spec_body["taskManager"]["podTemplate"]["spec"])["values"],
        json!(["dc-a-n2", "dc-a-n3"])
    );
    assert_eq!(
        spec_body["podTemplate"]["metadata"]["labels"]["twinsite.io/generation"],
        "7"
    );
}

#[tokio::test]
async fn a_launch_is_refused_while_another_generation_exists_and_nothing_is_applied() {
    let (site, mut api) = mock_site(LaunchMode::FlinkDeployment);
    let server = tokio::spawn(async move {
        answer(&mut api, 200, list("FlinkDeploymentList", "flink.apache.org/v1beta1", vec![json!({
            "apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment",
            "metadata": {"name": "orders-g6", "namespace": "team-a",
                         "labels": {"twinsite.io/job": "orders", "twinsite.io/generation": "6"}},
            "spec": {}
        })]))
        .await;
        api
    });
    let error = site.launch(&spec(None)).await.unwrap_err();
    assert!(
        matches!(
            error,
            SiteError::GenerationConflict {
                running: 6,
                requested: 7,
                ..
            }
        ),
        "{error:?}"
    );
    let mut api = server.await.unwrap();
    drop(site);
    assert!(
        api.next_request().await.is_none(),
        "no apply after a refusal"
    );
}

#[tokio::test]
async fn a_launch_waits_while_the_old_generation_is_being_deleted() {
    let (site, mut api) = mock_site(LaunchMode::Standalone);
    let server = tokio::spawn(async move {
        answer(&mut api, 200, list("DeploymentList", "apps/v1", vec![json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "orders-g6-jobmanager", "namespace": "team-a",
                         "deletionTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"twinsite.io/job": "orders", "twinsite.io/generation": "6"}},
        })]))
        .await;
    });
    let error = site.launch(&spec(None)).await.unwrap_err();
    server.await.unwrap();
    assert!(
        matches!(error, SiteError::StillTerminating { generation: 6, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn stop_deletes_one_generation_by_labels_in_both_modes() {
    for (mode, path) in [
        (
            LaunchMode::Standalone,
            "/apis/apps/v1/namespaces/team-a/deployments",
        ),
        (
            LaunchMode::FlinkDeployment,
            "/apis/flink.apache.org/v1beta1/namespaces/team-a/flinkdeployments",
        ),
    ] {
        let (site, mut api) = mock_site(mode);
        let server =
            tokio::spawn(async move { answer(&mut api, 200, list("List", "v1", vec![])).await });
        site.stop(&JobId::new("team-a", "orders"), 7).await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(seen.method, "DELETE");
        assert_eq!(
            decode(&seen.path_and_query),
            format!("{path}?&labelSelector=twinsite.io/job=orders,twinsite.io/generation=7")
        );
        assert_eq!(seen.body["propagationPolicy"], "Background");
    }
}

#[tokio::test]
async fn stop_with_savepoint_suspends_the_flink_deployment_and_returns_the_operator_savepoint() {
    let (site, mut api) = mock_site(LaunchMode::FlinkDeployment);
    let server = tokio::spawn(async move {
        let suspend = answer(&mut api, 200, json!({"apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment", "metadata": {"name": "orders-g7"}})).await;
        let first = answer(&mut api, 200, json!({
            "apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment", "metadata": {"name": "orders-g7"},
            "status": {"lifecycleState": "UPGRADING", "jobStatus": {"state": "RUNNING"}}
        })).await;
        let second = answer(&mut api, 200, json!({
            "apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment", "metadata": {"name": "orders-g7"},
            "status": {"lifecycleState": "SUSPENDED", "jobStatus": {"state": "FINISHED",
                "upgradeSavepointPath": "hdfs:///flink/savepoints/team-a/savepoint-1a2b3c-aabbccddeeff"}}
        })).await;
        let delete = answer(
            &mut api,
            200,
            list("FlinkDeploymentList", "flink.apache.org/v1beta1", vec![]),
        )
        .await;
        (suspend, first, second, delete)
    });
    let path = site
        .stop_with_savepoint(
            &JobId::new("team-a", "orders"),
            7,
            "hdfs:///flink/savepoints/team-a",
        )
        .await
        .unwrap();
    let (suspend, first, second, delete) = server.await.unwrap();
    assert_eq!(
        path,
        "hdfs:///flink/savepoints/team-a/savepoint-1a2b3c-aabbccddeeff"
    );
    assert_eq!(suspend.method, "PATCH");
    assert_eq!(
        suspend.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        suspend.body,
        json!({"spec": {
            "flinkConfiguration": {"state.savepoints.dir": "hdfs:///flink/savepoints/team-a"},
            "job": {"state": "suspended", "upgradeMode": "savepoint"}
        }})
    );
    assert_eq!(
        (first.method.as_str(), second.method.as_str()),
        ("GET", "GET")
    );
    assert_eq!(delete.method, "DELETE");
}

#[tokio::test]
async fn stop_with_savepoint_in_standalone_mode_uses_flink_rest_through_the_service_proxy() {
    let (site, mut api) = mock_site(LaunchMode::Standalone);
    let server = tokio::spawn(async move {
        let trigger = answer(&mut api, 200, json!({"request-id": "r-42"})).await;
        let pending = answer(&mut api, 200, json!({"status": {"id": "IN_PROGRESS"}})).await;
        let done = answer(
            &mut api,
            200,
            json!({"status": {"id": "COMPLETED"},
            "operation": {"location": "hdfs:///sp/savepoint-0c1d2e-001122334455"}}),
        )
        .await;
        let delete = answer(&mut api, 200, list("DeploymentList", "apps/v1", vec![])).await;
        (trigger, pending, done, delete)
    });
    let job = JobId::new("team-a", "orders");
    let path = site
        .stop_with_savepoint(&job, 7, "hdfs:///sp")
        .await
        .unwrap();
    let (trigger, pending, _done, delete) = server.await.unwrap();
    assert_eq!(path, "hdfs:///sp/savepoint-0c1d2e-001122334455");
    let jid = flink_job_id(&job, 7);
    assert_eq!(trigger.method, "POST");
    assert_eq!(
        trigger.path_and_query,
        format!("/api/v1/namespaces/team-a/services/orders-g7-rest:rest/proxy/jobs/{jid}/stop")
    );
    assert_eq!(
        trigger.body,
        json!({"targetDirectory": "hdfs:///sp", "drain": false})
    );
    assert_eq!(
        pending.path_and_query,
        format!(
            "/api/v1/namespaces/team-a/services/orders-g7-rest:rest/proxy/jobs/{jid}/savepoints/r-42"
        )
    );
    assert_eq!(delete.method, "DELETE");
}

#[tokio::test]
async fn a_missing_flink_deployment_has_no_savepoint_to_take() {
    let (site, mut api) = mock_site(LaunchMode::FlinkDeployment);
    let server = tokio::spawn(async move {
        answer(&mut api, 404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "flinkdeployments.flink.apache.org \"orders-g7\" not found", "reason": "NotFound", "code": 404})).await
    });
    let error = site
        .stop_with_savepoint(&JobId::new("team-a", "orders"), 7, "hdfs:///sp")
        .await
        .unwrap_err();
    server.await.unwrap();
    assert!(
        matches!(error, SiteError::NotRunning { generation: 7, .. }),
        "{error:?}"
    );
}

fn fixture_items<K: serde::de::DeserializeOwned>(file: &str) -> Vec<Arc<K>> {
    let text = std::fs::read_to_string(format!("tests/fixtures/kube/{file}")).unwrap();
    let list: Value = serde_json::from_str(&text).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| Arc::new(serde_json::from_value(item.clone()).unwrap()))
        .collect()
}

#[test]
fn a_snapshot_holds_every_node_and_only_the_foreign_pods_that_occupy_capacity() {
    let nodes: Vec<Arc<K8sNode>> = fixture_items("nodes.json");
    let pods: Vec<Arc<Pod>> = fixture_items("pods.json");
    let snapshot = snapshot_from(&SiteId("dc-a".into()), &nodes, &pods);

    let summary: Vec<(&str, bool, bool, usize)> = snapshot
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.ready, n.unschedulable, n.taints.len()))
        .collect();
    assert_eq!(
        summary,
        [
            ("dc-a-hdfs1", true, true, 1),
            ("dc-a-n1", true, false, 0),
            ("dc-a-n2", false, false, 0),
        ]
    );
    assert_eq!(
        snapshot.nodes[1].allocatable,
        Resources::new(15_800, 63 << 30, 110)
    );

    // Finished, unbound and twinsite's own pods do not count as foreign load.
    let foreign: Vec<&str> = snapshot
        .running_pods
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(foreign, ["batch-7f9c"]);
    // max(containers 600m/2Gi+128Mi, init 2/1Gi) + overhead 50m/64Mi.
    assert_eq!(
        snapshot.running_pods[0].request,
        Resources::new(2050, (2 << 30) + (128 << 20) + (64 << 20), 1)
    );
}

#[test]
fn jobs_are_read_from_their_labelled_pods() {
    let nodes: Vec<Arc<K8sNode>> = fixture_items("nodes.json");
    let pods: Vec<Arc<Pod>> = fixture_items("pods.json");
    let jobs = jobs_from(&nodes, &pods);
    let summary: Vec<(String, u64, JobState, Vec<String>, u32)> = jobs
        .into_iter()
        .map(|j| (j.job.0, j.generation, j.state, j.nodes, j.restarts))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "team-a/orders".into(),
                7,
                JobState::Running,
                vec!["dc-a-n1".into()],
                3
            ),
            // Its JobManager's node is NotReady: only a relaunch helps.
            (
                "team-b/payments".into(),
                3,
                JobState::Failed,
                vec!["dc-a-n1".into(), "dc-a-n2".into()],
                0
            ),
        ]
    );
}

#[tokio::test]
async fn the_reflectors_list_nodes_and_pods_and_serve_snapshots_from_their_index() {
    let (service, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let config = KubeSiteConfig::new(SiteId("dc-a".into()), LaunchMode::Standalone);
    let (site, reflectors) = KubeSite::new(client, config);
    let reflectors = tokio::spawn(reflectors);
    let server = tokio::spawn(async move {
        let mut held_watches = Vec::new();
        let mut listed = Vec::new();
        while let Some((request, send)) = api.next_request().await {
            let uri = request.uri().to_string();
            if uri.contains("watch=true") {
                // Keep watches open and silent: the index stays as listed.
                held_watches.push(send);
                continue;
            }
            let file = if request.uri().path() == "/api/v1/nodes" {
                "nodes.json"
            } else {
                "pods.json"
            };
            listed.push(request.uri().path().to_owned());
            let body = std::fs::read(format!("tests/fixtures/kube/{file}")).unwrap();
            send.send_response(Response::builder().body(Body::from(body)).unwrap());
        }
        listed
    });

    let snapshot = site.snapshot().await.unwrap();
    assert_eq!(snapshot.nodes.len(), 3);
    assert_eq!(snapshot.running_pods.len(), 1);
    let jobs = site.jobs().await.unwrap();
    assert_eq!(jobs.len(), 2);
    let health = site.health().await;
    assert!(
        health.api_reachable && health.last_contact.is_some(),
        "{health:?}"
    );

    reflectors.abort();
    drop(site);
    let mut listed = server.await.unwrap();
    listed.sort();
    assert_eq!(listed, ["/api/v1/nodes", "/api/v1/pods"]);
}

#[test]
fn api_errors_are_split_into_retryable_and_permanent() {
    let site = SiteId("dc-a".into());
    let status = |code: u16| {
        kube::Error::Api(Box::new(
            serde_json::from_value(
                json!({"status": "Failure", "message": "m", "reason": "R", "code": code}),
            )
            .unwrap(),
        ))
    };
    assert!(kube_error(&site, "x", status(503)).is_retryable());
    assert!(kube_error(&site, "x", status(429)).is_retryable());
    assert!(matches!(
        kube_error(&site, "x", status(409)),
        SiteError::Conflict { .. }
    ));
    let invalid = kube_error(&site, "Deployment team-a/x", status(422));
    assert!(!invalid.is_retryable());
    assert!(
        invalid.to_string().contains("Deployment team-a/x"),
        "{invalid}"
    );
}

#[test]
fn object_names_are_short_valid_and_distinct_per_job_and_generation() {
    let long = JobId::new("team-a", &"very-long-streaming-job-name-".repeat(4));
    let names = [
        object_base(&JobId::new("team-a", "orders"), 7),
        object_base(&long, 7),
        object_base(&long, 8),
        object_base(&JobId::new("team-a", "9lives.v2"), 1),
        object_base(&JobId::new("team-a", "9lives-v2"), 1),
    ];
    assert_eq!(names[0], "orders-g7");
    for name in &names {
        assert!(name.len() <= 45, "{name}");
        assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
    let distinct: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
}

#[tokio::test]
async fn a_flink_deployment_whose_task_manager_count_differs_from_the_plan_is_refused() {
    let (site, api) = mock_site(LaunchMode::FlinkDeployment);
    let mut launch = spec(None);
    launch.parallelism = 8; // 8 / 2 slots = 4 TaskManagers, the plan has 3
    let error = site.launch(&launch).await.unwrap_err();
    assert!(matches!(error, SiteError::Invalid { .. }), "{error:?}");
    assert!(
        error.to_string().contains("starts 4 TaskManagers"),
        "{error}"
    );
    drop(site);
    let mut api = api;
    assert!(api.next_request().await.is_none(), "nothing sent");
}

#[tokio::test]
async fn a_failing_watch_makes_the_site_unreachable_instead_of_serving_a_stale_index() {
    let (service, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let config = KubeSiteConfig::new(SiteId("dc-a".into()), LaunchMode::Standalone);
    let (site, reflectors) = KubeSite::new(client, config);
    let reflectors = tokio::spawn(reflectors);
    let mut changes = site.changes();
    let server = tokio::spawn(async move {
        while let Some((request, send)) = api.next_request().await {
            if request.uri().to_string().contains("watch=true") {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
                send.send_response(
                    Response::builder()
                        .status(500)
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                        .unwrap(),
                );
                continue;
            }
            let file = if request.uri().path() == "/api/v1/nodes" {
                "nodes.json"
            } else {
                "pods.json"
            };
            let body = std::fs::read(format!("tests/fixtures/kube/{file}")).unwrap();
            send.send_response(Response::builder().body(Body::from(body)).unwrap());
        }
    });

    let unreachable = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            changes.changed().await.unwrap();
            let health = site.health().await;
            if !health.api_reachable {
                return health;
            }
        }
    })
    .await
    .expect("the failing watch is noticed");
    assert!(unreachable.detail.unwrap().contains("watch"));
    let error = site.snapshot().await.unwrap_err();
    assert!(matches!(error, SiteError::Unreachable { .. }), "{error:?}");
    assert!(error.is_retryable());

    reflectors.abort();
    drop(site);
    server.abort();
}
