//! The Kubernetes site adapter against a tower-test mock API server: the exact requests it
//! sends (method, path, field manager, body) and how it reads recorded-shape list/watch
//! JSON. No live API server is involved.

mod support;

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
    CheckpointFinder, CheckpointStorage, FIELD_MANAGER, KubeSite, KubeSiteConfig, ObjectKind,
    jobs_from, kube_error, launch_objects, object_base, object_name, observe_generations,
    snapshot_from,
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
        epoch: 3,
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
        env: BTreeMap::new(),
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
    for seen in [&jm, &svc, &tm0, &tm1] {
        assert_eq!(seen.body["metadata"]["labels"]["twinsite.io/epoch"], "3");
    }
    assert_eq!(
        jm.body["spec"]["template"]["metadata"]["labels"]["twinsite.io/epoch"],
        "3"
    );
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
    // Lost nodes: Kubernetes evicts after 30 s (the policy default), not its own 300 s.
    for (index, taint) in [
        (1, "node.kubernetes.io/unreachable"),
        (2, "node.kubernetes.io/not-ready"),
    ] {
        assert_eq!(
            jm_pod["tolerations"][index],
            json!({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30})
        );
        assert_eq!(
            tm1.body["spec"]["template"]["spec"]["tolerations"][index]["key"],
            taint
        );
    }
    assert_eq!(
        jm_pod["containers"][0]["livenessProbe"]["tcpSocket"]["port"],
        6123
    );
    assert_eq!(
        jm_pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/overview"
    );
    assert_eq!(
        tm1.body["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["tcpSocket"]["port"],
        6122
    );
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
    // A restarted JobManager container resumes from its HA store's latest checkpoint, not
    // from --fromSavepoint: Kubernetes HA inside the site, one cluster id per generation.
    for line in [
        "high-availability.type: kubernetes\n",
        "high-availability.storageDir: hdfs:///flink/checkpoints/team-a/orders/ha\n",
        "kubernetes.cluster-id: orders-g7\n",
        "kubernetes.namespace: team-a\n",
        "state.savepoints.dir: hdfs:///flink/checkpoints/team-a/orders/savepoints\n",
        "taskmanager.rpc.port: 6122\n",
    ] {
        assert!(properties.contains(line), "{line} in {properties}");
    }
    assert!(
        properties.contains(&format!(
            "$internal.pipeline.job-id: {}\n",
            flink_job_id(&spec(None).job, 7)
        )),
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
    assert_eq!(
        pinned_nodes(&spec_body["taskManager"]["podTemplate"]["spec"])["values"],
        json!(["dc-a-n2", "dc-a-n3"])
    );
    assert_eq!(
        spec_body["podTemplate"]["metadata"]["labels"]["twinsite.io/generation"],
        "7"
    );
    assert_eq!(
        spec_body["podTemplate"]["metadata"]["labels"]["twinsite.io/epoch"],
        "3"
    );
    // Replication looks for checkpoints under the derived job id: the operator must use it.
    assert_eq!(
        spec_body["flinkConfiguration"]["$internal.pipeline.job-id"],
        flink_job_id(&spec(None).job, 7)
    );
    assert_eq!(
        spec_body["flinkConfiguration"]["state.savepoints.dir"],
        "hdfs:///flink/checkpoints/team-a/orders/savepoints"
    );
    assert_eq!(
        spec_body["flinkConfiguration"]["high-availability.type"],
        "kubernetes"
    );
    assert_eq!(
        spec_body["podTemplate"]["spec"]["tolerations"][1]["tolerationSeconds"],
        30
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
        let server = tokio::spawn(async move {
            let first = answer(&mut api, 200, list("List", "v1", vec![])).await;
            let second = if mode == LaunchMode::Standalone {
                Some(answer(&mut api, 200, list("ConfigMapList", "v1", vec![])).await)
            } else {
                None
            };
            (first, second)
        });
        site.stop(&JobId::new("team-a", "orders"), 7).await.unwrap();
        let (seen, ha) = server.await.unwrap();
        assert_eq!(seen.method, "DELETE");
        assert_eq!(
            decode(&seen.path_and_query),
            format!("{path}?&labelSelector=twinsite.io/job=orders,twinsite.io/generation=7")
        );
        assert_eq!(seen.body["propagationPolicy"], "Background");
        // Standalone: Flink's HA ConfigMaps of this generation go too (the operator deletes
        // them itself with a FlinkDeployment).
        if let Some(ha) = ha {
            assert_eq!(ha.method, "DELETE");
            assert_eq!(
                decode(&ha.path_and_query),
                "/api/v1/namespaces/team-a/configmaps?&labelSelector=app=orders-g7,configmap-type=high-availability"
            );
        }
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
        answer(&mut api, 200, list("ConfigMapList", "v1", vec![])).await;
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

// ------------------------------------------------ the operator's CRD and DefaultValidator

const CRD_SCHEMA: &str = include_str!("fixtures/kube/flinkdeployment-crd-schema.json");

fn crd_schema() -> Value {
    serde_json::from_str::<Value>(CRD_SCHEMA).unwrap()["openAPIV3Schema"].clone()
}

fn operator_config() -> KubeSiteConfig {
    KubeSiteConfig::new(SiteId("dc-a".into()), LaunchMode::FlinkDeployment)
}

/// Specs covering every optional part of a FlinkDeployment: restore path, entry class,
/// arguments, tolerations, a shared namespace, old and new Flink versions.
fn varied_specs() -> Vec<(LaunchSpec, KubeSiteConfig)> {
    let mut out = Vec::new();
    for restore in [
        None,
        Some("hdfs:///flink/checkpoints/team-a/orders/abc/chk-41"),
    ] {
        for version in ["v1_15", "v1_16", "v1_20", "v2_0"] {
            let mut launch = spec(restore);
            launch.flink_version = version.into();
            out.push((launch, operator_config()));
        }
    }
    let mut bare = spec(None);
    bare.entry_class = None;
    bare.args.clear();
    bare.tolerations.clear();
    out.push((bare, operator_config()));
    let shared = KubeSiteConfig {
        namespace: Some("flink-jobs".into()),
        ..operator_config()
    };
    let mut long = spec(None);
    long.job = JobId::new("team-a", &"very-long-streaming-job-name-".repeat(4));
    long.placement.job = long.job.clone();
    out.push((long.clone(), shared.clone()));
    out.push((long, operator_config()));
    // A site override's environment variables on both Flink containers.
    let mut with_env = spec(Some("hdfs:///flink/checkpoints/team-a/orders/abc/chk-41"));
    with_env.env = BTreeMap::from([
        ("KAFKA_BOOTSTRAP".into(), "kafka.dc-a:9092".into()),
        ("START_MS".into(), "1796466662000".into()),
    ]);
    out.push((with_env, operator_config()));
    out
}

fn rendered_flink_deployment(spec: &LaunchSpec, config: &KubeSiteConfig) -> Value {
    let launch = launch_objects(spec, config).unwrap();
    assert_eq!(launch.objects.len(), 1);
    launch.objects[0].body.clone()
}

#[test]
fn every_rendered_flink_deployment_is_valid_for_the_operators_crd_schema() {
    let schema = crd_schema();
    for (launch, config) in varied_specs() {
        let object = rendered_flink_deployment(&launch, &config);
        let problems = support::kube_schema::violations(&schema, &object);
        assert!(problems.is_empty(), "{}: {problems:#?}", launch.job);
    }
}

#[test]
fn the_schema_check_catches_unknown_fields_wrong_types_and_values_outside_an_enum() {
    let schema = crd_schema();
    let mut object = rendered_flink_deployment(&spec(None), &operator_config());
    object["spec"]["job"]["upgradeMod"] = json!("savepoint");
    object["spec"]["jobManager"]["replicas"] = json!("1");
    object["spec"]["flinkVersion"] = json!("v1_12");
    object["spec"]["taskManager"]["podTemplate"]["spec"]["tolerations"] =
        json!([{"key": "x", "tolerationSeconds": "30"}]);
    let problems = support::kube_schema::violations(&schema, &object).join("\n");
    for expected in [
        "$.spec.job.upgradeMod: unknown field",
        "$.spec.jobManager.replicas: expected integer",
        "$.spec.flinkVersion: \"v1_12\" is not one of",
        "$.spec.taskManager.podTemplate.spec.tolerations[0].tolerationSeconds: expected integer",
    ] {
        assert!(problems.contains(expected), "{expected} in\n{problems}");
    }
}

/// The rules of the operator's `DefaultValidator.validateDeployment` (release 1.15 and
/// main) that a launch can break, each checked on every varied spec.
#[test]
fn every_rendered_flink_deployment_passes_the_operators_default_validator_rules() {
    let name_pattern = regex::Regex::new(r"^[a-z]([-a-z\d]{0,43}[a-z\d])?$").unwrap();
    let flink_memory = regex::Regex::new(r"^[1-9][0-9]*m$").unwrap();
    for (launch, config) in varied_specs() {
        let object = rendered_flink_deployment(&launch, &config);
        let spec_body = &object["spec"];
        let conf = &spec_body["flinkConfiguration"];
        let job = &launch.job;
        // validateDeploymentName: DEPLOYMENT_NAME_PATTERN, at most 45 characters.
        let name = object["metadata"]["name"].as_str().unwrap();
        assert!(name_pattern.is_match(name), "{job}: name {name}");
        // validateFlinkVersion: defined and FlinkVersion.isSupported (v1_15 and later).
        assert!(spec_body["flinkVersion"].is_string(), "{job}");
        // validateFlinkDeploymentConfig: FORBIDDEN_CONF_KEYS are the operator's own.
        for key in [
            "kubernetes.namespace",
            "kubernetes.cluster-id",
            "high-availability.cluster-id",
        ] {
            assert!(conf.get(key).is_none(), "{job}: {key}");
        }
        // validateFlinkDeploymentConfig: rollback and JobManager deployment recovery need
        // HA; ours is on (`high-availability.type`, or `high-availability` before 1.17).
        let ha = conf
            .get("high-availability.type")
            .or_else(|| conf.get("high-availability"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(
            ha == "kubernetes" || ha.ends_with("KubernetesHaServicesFactory"),
            "{job}: {ha}"
        );
        assert!(conf["high-availability.storageDir"].is_string(), "{job}");
        // validateJobSpec: a non-stateless upgrade mode needs CheckpointingOptions
        // .CHECKPOINTS_DIRECTORY; SAVEPOINT mode needs SAVEPOINT_DIRECTORY; parallelism > 0
        // when taskManager.replicas is not set.
        assert_ne!(spec_body["job"]["upgradeMode"], "stateless");
        assert_eq!(spec_body["job"]["upgradeMode"], "savepoint");
        assert_eq!(conf["state.checkpoints.dir"], json!(launch.checkpoint_dir));
        assert_eq!(
            conf["execution.checkpointing.dir"],
            json!(launch.checkpoint_dir)
        );
        let savepoints = format!("{}/savepoints", launch.checkpoint_dir);
        assert_eq!(conf["state.savepoints.dir"], json!(savepoints));
        assert_eq!(
            conf["execution.checkpointing.savepoint-dir"],
            json!(savepoints)
        );
        assert!(spec_body["taskManager"].get("replicas").is_none());
        assert!(spec_body["job"]["parallelism"].as_u64().unwrap() >= 1);
        // validateJmSpec / validateTmSpec: memory defined (resource.memory), parseable as a
        // Flink MemorySize; JobManager replicas 1 (more would need HA standby setup).
        for role in ["jobManager", "taskManager"] {
            let memory = spec_body[role]["resource"]["memory"].as_str().unwrap();
            assert!(
                flink_memory.is_match(memory),
                "{job}: {role} memory {memory}"
            );
            assert!(spec_body[role]["resource"]["cpu"].as_f64().unwrap() > 0.0);
        }
        assert_eq!(spec_body["jobManager"]["replicas"], 1);
        // validateServiceAccount: must be defined.
        assert!(spec_body["serviceAccount"].is_string(), "{job}");
        // validateLogConfig: no logConfiguration keys other than the two log files.
        assert!(spec_body.get("logConfiguration").is_none());
        // validateSpecChange: savepointRedeployNonce needs initialSavepointPath; none is set.
        assert!(spec_body["job"].get("savepointRedeployNonce").is_none());
    }
}

#[test]
fn a_flink_configuration_the_operator_forbids_is_refused_naming_the_key() {
    for key in [
        "kubernetes.namespace",
        "kubernetes.cluster-id",
        "high-availability.cluster-id",
    ] {
        let mut launch = spec(None);
        launch.flink_configuration.insert(key.into(), "x".into());
        let error = launch_objects(&launch, &operator_config()).unwrap_err();
        assert!(matches!(error, SiteError::Invalid { .. }), "{error:?}");
        assert!(error.to_string().contains(key), "{error}");
        // Standalone mode sets them itself, over the user's.
        let standalone = KubeSiteConfig::new(SiteId("dc-a".into()), LaunchMode::Standalone);
        launch_objects(&launch, &standalone).unwrap();
    }
}

#[test]
fn a_flink_version_the_operator_no_longer_runs_is_refused() {
    for version in ["v1_14", "v1_13", "flink2"] {
        let mut launch = spec(None);
        launch.flink_version = version.into();
        let error = launch_objects(&launch, &operator_config()).unwrap_err();
        assert!(
            error.to_string().contains("flinkVersion"),
            "{version}: {error}"
        );
    }
}

#[test]
fn standalone_objects_round_trip_through_kubernetes_own_types_without_losing_a_field() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    fn without_nulls(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), without_nulls(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
            other => other.clone(),
        }
    }
    let config = KubeSiteConfig::new(SiteId("dc-a".into()), LaunchMode::Standalone);
    for restore in [None, Some("hdfs:///x/chk-3")] {
        let mut spec = spec(restore);
        // With a site override's env (after twinsite's FLINK_PROPERTIES) on every container.
        spec.env = BTreeMap::from([("KAFKA_BOOTSTRAP".into(), "kafka.dc-a:9092".into())]);
        let launch = launch_objects(&spec, &config).unwrap();
        assert_eq!(
            launch.objects.len(),
            4,
            "JobManager, Service, two TaskManagers"
        );
        for object in &launch.objects {
            let back = match object.kind {
                ObjectKind::Deployment => serde_json::to_value(
                    serde_json::from_value::<Deployment>(object.body.clone()).unwrap(),
                ),
                ObjectKind::Service => serde_json::to_value(
                    serde_json::from_value::<Service>(object.body.clone()).unwrap(),
                ),
                ObjectKind::FlinkDeployment => unreachable!(),
            }
            .unwrap();
            // A misspelt or misplaced field would be dropped by the typed round trip.
            assert_eq!(without_nulls(&back), object.body, "{}", object.name);
        }
    }
}

#[test]
fn in_a_shared_namespace_objects_are_named_and_selected_by_namespace_and_name() {
    let config = KubeSiteConfig {
        namespace: Some("flink-jobs".into()),
        ..KubeSiteConfig::new(SiteId("dc-a".into()), LaunchMode::Standalone)
    };
    let a = JobId::new("team-a", "orders");
    let b = JobId::new("team-b", "orders");
    let (name_a, name_b) = (object_name(&a, 7, &config), object_name(&b, 7, &config));
    assert_ne!(name_a, name_b);
    for name in [&name_a, &name_b] {
        assert!(name.len() <= 45 && name.ends_with("-g7"), "{name}");
    }
    let launch = launch_objects(&spec(None), &config).unwrap();
    assert_eq!(launch.namespace, "flink-jobs");
    for object in &launch.objects {
        assert_eq!(object.body["metadata"]["namespace"], "flink-jobs");
        assert_eq!(
            object.body["metadata"]["labels"]["twinsite.io/namespace"],
            "team-a"
        );
    }
}

// ------------------------------------------------ what a site reads back

fn flink_deployment_with_status(status: Value) -> Arc<kube::api::DynamicObject> {
    let mut body = rendered_flink_deployment(&spec(None), &operator_config());
    body["status"] = status;
    Arc::new(serde_json::from_value(body).unwrap())
}

fn pod_of(component: &str, node: &str, phase: &str) -> Arc<Pod> {
    let owner = rendered_flink_deployment(&spec(None), &operator_config());
    let mut pod =
        support::kube_api::running_pod(&owner, &format!("p-{component}"), component, node);
    pod["status"]["phase"] = json!(phase);
    Arc::new(serde_json::from_value(pod).unwrap())
}

#[test]
fn the_operators_job_status_decides_what_pods_cannot_tell() {
    let nodes: Vec<Arc<K8sNode>> = ["dc-a-n1", "dc-a-n2"]
        .iter()
        .map(|n| Arc::new(serde_json::from_value(support::kube_api::node(n)).unwrap()))
        .collect();
    let running = vec![
        pod_of("jobmanager", "dc-a-n1", "Running"),
        pod_of("taskmanager", "dc-a-n2", "Running"),
    ];
    let state = |status: Value, pods: &[Arc<Pod>]| {
        let generations =
            observe_generations(&nodes, pods, &[flink_deployment_with_status(status)]);
        assert_eq!(generations.len(), 1, "{generations:?}");
        assert_eq!(generations[0].observation.generation, 7);
        generations[0].observation.state
    };
    let job = |state: &str| json!({"lifecycleState": "STABLE", "jobStatus": {"state": state}});
    assert_eq!(state(job("RUNNING"), &running), JobState::Running);
    // Pods run, but Flink is restarting the job inside them, or gave up on it.
    assert_eq!(state(job("RESTARTING"), &running), JobState::Restarting);
    assert_eq!(state(job("FAILED"), &running), JobState::Failed);
    assert_eq!(state(job("FINISHED"), &running), JobState::Finished);
    assert_eq!(
        state(
            json!({"lifecycleState": "FAILED", "jobStatus": {"state": "RECONCILING"}}),
            &running
        ),
        JobState::Failed
    );
    // Deployed, no pods yet: being deployed.
    assert_eq!(state(json!({}), &[]), JobState::Restarting);
    // The operator still says RUNNING, but a TaskManager pod is pending.
    let pending = vec![
        pod_of("jobmanager", "dc-a-n1", "Running"),
        pod_of("taskmanager", "dc-a-n2", "Pending"),
    ];
    assert_eq!(state(job("RUNNING"), &pending), JobState::Restarting);
    // The JobManager's node is gone (NotReady): the pods say it first.
    let lost = vec![
        pod_of("jobmanager", "dc-a-lost", "Running"),
        pod_of("taskmanager", "dc-a-n2", "Running"),
    ];
    assert_eq!(state(job("RUNNING"), &lost), JobState::Failed);
}

#[tokio::test]
async fn checkpoints_are_read_from_storage_and_savepoints_from_the_operators_status() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut launch = spec(None);
    launch.checkpoint_dir = format!("file://{}/flink/checkpoints/team-a/orders", root.display());
    let job_id = flink_job_id(&launch.job, 7);
    let write = |uri: &str, id: u64| {
        let path = twinsite::site::resolve_in_root(root, uri).unwrap();
        std::fs::create_dir_all(&path).unwrap();
        twinsite::site::sim_metadata::write(
            &path,
            &twinsite::site::sim_metadata::SimMetadata {
                flink_job_id: job_id.clone(),
                checkpoint_id: id,
                files: vec![],
            },
            |_| 0,
        )
        .unwrap();
    };
    write(&format!("{}/{job_id}/chk-4", launch.checkpoint_dir), 4);
    let savepoint = format!(
        "{}/savepoints/savepoint-abcdef-0123456789ab",
        launch.checkpoint_dir
    );
    write(&savepoint, 9);
    let storage = CheckpointStorage {
        root: hdfs_sync::StorageUrl::local(root).unwrap(),
        storage: Arc::new(hdfs_sync::LocalStorage::new(root)),
    };
    let finder = CheckpointFinder::new(Some(storage), Duration::from_secs(60));
    let mut body = launch_objects(&launch, &operator_config()).unwrap().objects[0]
        .body
        .clone();
    body["status"] = json!({"jobStatus": {"state": "RUNNING", "savepointInfo": {"lastSavepoint": {
        "location": savepoint, "timeStamp": 1_767_225_600_000_i64}}}});
    let object: Arc<kube::api::DynamicObject> =
        Arc::new(serde_json::from_value(body.clone()).unwrap());
    let mut generations = observe_generations(&[], &[], &[object]);
    finder.fill(&mut generations).await;
    let latest = generations[0]
        .observation
        .latest_completed_checkpoint
        .clone()
        .unwrap();
    assert_eq!(
        (latest.id, latest.path.as_str()),
        (9, savepoint.as_str()),
        "the savepoint is newer"
    );

    // A status naming a savepoint outside the site's storage is ignored, not followed.
    body["status"]["jobStatus"]["savepointInfo"]["lastSavepoint"]["location"] =
        json!("file:///etc/passwd-dir");
    let object: Arc<kube::api::DynamicObject> = Arc::new(serde_json::from_value(body).unwrap());
    let mut generations = observe_generations(&[], &[], &[object]);
    finder.fill(&mut generations).await;
    let latest = generations[0]
        .observation
        .latest_completed_checkpoint
        .clone()
        .unwrap();
    assert_eq!(latest.id, 4, "{latest:?}");
    assert_eq!(
        latest.path,
        format!("{}/{job_id}/chk-4", launch.checkpoint_dir)
    );
}

// ------------------------------------------------ against the fake API server

#[tokio::test]
async fn a_conflicting_apply_is_a_permanent_conflict_and_a_watch_that_expires_is_listed_again() {
    let (client, api) = support::kube_api::FakeApi::start();
    api.put("nodes", support::kube_api::node("dc-a-n1"));
    let config = KubeSiteConfig::new(SiteId("dc-a".into()), LaunchMode::FlinkDeployment);
    let (site, reflectors) = KubeSite::new(client, config);
    let reflectors = tokio::spawn(reflectors);
    assert_eq!(site.snapshot().await.unwrap().nodes.len(), 1);

    tracing::info!("--- 409 on the apply");
    api.conflict_next_apply();
    let error = site.launch(&spec(None)).await.unwrap_err();
    assert!(matches!(error, SiteError::Conflict { .. }), "{error:?}");
    assert!(!error.is_retryable());

    tracing::info!("--- 410 Gone on every watch: the reflectors list again and keep serving");
    let lists_before = api
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && !s.query.contains("watch=true"))
        .count();
    api.expire_watches();
    api.put("nodes", support::kube_api::node("dc-a-n2"));
    let mut nodes = 0;
    for _ in 0..100 {
        nodes = site.snapshot().await.map(|s| s.nodes.len()).unwrap_or(0);
        if nodes == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nodes, 2, "the node added after the expiry is seen");
    let lists_after = api
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && !s.query.contains("watch=true"))
        .count();
    assert!(
        lists_after > lists_before,
        "a relist after 410: {lists_before} -> {lists_after}"
    );
    assert!(site.health().await.api_reachable);
    reflectors.abort();
}

/// `twinsite render` prints what a launch sends: same function, same bodies. The only field
/// a launch adds is the Service's ownerReference (the JobManager Deployment's uid exists
/// only once it is applied).
#[tokio::test]
async fn render_prints_exactly_what_a_launch_applies() {
    use twinsite::commands::render::{RenderArgs, RenderMode, prepare, to_yaml};
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.yaml");
    std::fs::write(
        &jobs,
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: team-a}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  parallelism: 4
  vertexParallelism: {cbc357ccb763df2852fee8c4fc7d55f2: 2}
  jobManager: {resources: {cpu: "1", memory: 2Gi}}
  taskManager: {resources: {cpu: "2", memory: 4Gi}, slots: 2}
  checkpoints: {dir: "hdfs:///flink/checkpoints/team-a/orders", interval: 30s}
---
apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: payments, namespace: team-b}
spec:
  priority: critical
  image: flink:1.20
  flinkVersion: v1_20
  jarURI: hdfs:///jars/payments.jar
  entryClass: com.example.Payments
  parallelism: 2
  jobManager: {resources: {cpu: 500m, memory: 1Gi}}
  taskManager: {resources: {cpu: "1", memory: 2Gi}}
  checkpoints: {dir: "hdfs:///flink/checkpoints/team-b/payments", interval: 1m}
  args: [--brokers, kafka-default:9092]
  siteOverrides:
    dc-a:
      args: [--brokers, "kafka.${site}:9092", "--from=${restore.completedAt:-earliest}"]
      env: {KAFKA_BOOTSTRAP: "kafka.${site}:9092", START_MS: "${restore.completedAtEpochMillis}"}
      flinkConfiguration: {pipeline.name: "payments in ${site}"}
    dc-b:
      env: {KAFKA_BOOTSTRAP: "kafka.dc-b:9092"}
"#,
    )
    .unwrap();
    let restored_at = chrono::DateTime::parse_from_rfc3339("2026-12-05T10:31:02Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    // The jars are in dc-b's storage only: a launch in dc-a uses dc-a's content-addressed
    // copy, whose address render computes from the bytes as the publication does.
    let storage = |site: &str| format!("file://{}/{site}", dir.path().display());
    std::fs::create_dir_all(dir.path().join("dc-b/jars")).unwrap();
    let mut expected_jars = std::collections::BTreeMap::new();
    for name in ["orders", "payments"] {
        let bytes = format!("PK fake jar of {name}");
        std::fs::write(dir.path().join(format!("dc-b/jars/{name}.jar")), &bytes).unwrap();
        let sha: String = <sha2::Sha256 as sha2::Digest>::digest(bytes.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        expected_jars.insert(
            name,
            format!("{}/twinsite/jars/{sha}/{name}.jar", storage("dc-a")),
        );
    }
    for mode in [RenderMode::FlinkOperator, RenderMode::Standalone] {
        let args = RenderArgs {
            site: "dc-a".into(),
            jobs: jobs.clone(),
            job: None,
            generation: 3,
            epoch: 5,
            restore: Some("hdfs:///flink/checkpoints/team-a/orders/x/chk-2".into()),
            restore_completed_at: Some(restored_at),
            config: None,
            mode: Some(mode),
            nodes: None,
            storage: vec![
                format!("dc-a={}", storage("dc-a")),
                format!("dc-b={}", storage("dc-b")),
            ],
        };
        let rendered = prepare(&args).unwrap();
        assert_eq!(rendered.launches.len(), 2);
        let text = to_yaml(&rendered).unwrap();
        for (launch, _) in &rendered.launches {
            let expected = &expected_jars[launch.job.0.rsplit('/').next().unwrap()];
            assert_eq!(&launch.jar_uri, expected, "{mode:?}");
            assert!(
                text.contains(expected.as_str()),
                "{mode:?}: {expected} not printed"
            );
        }
        // The orders job's per-vertex parallelism is in its Flink configuration.
        assert!(
            text.contains("pipeline.jobvertex-parallelism-overrides")
                && text.contains("cbc357ccb763df2852fee8c4fc7d55f2:2"),
            "{mode:?}"
        );
        let printed: Vec<Value> = text
            .split("\n---\n")
            .skip(1)
            .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
            .collect();

        let (client, api) = support::kube_api::FakeApi::start();
        let (site, reflectors) = KubeSite::new(client, rendered.site.clone());
        let reflectors = tokio::spawn(reflectors);
        for (launch, _) in &rendered.launches {
            site.launch(launch).await.unwrap();
        }
        let mut applied: Vec<Value> = api
            .seen()
            .into_iter()
            .filter(|s| s.content_type.as_deref() == Some("application/apply-patch+yaml"))
            .map(|s| s.body)
            .collect();
        for body in &mut applied {
            if body["kind"] == "Service" {
                assert!(body["metadata"]["ownerReferences"][0]["uid"].is_string());
                body["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("ownerReferences");
            }
        }
        assert_eq!(printed, applied, "{mode:?}");
        assert_eq!(printed[0]["metadata"]["labels"]["twinsite.io/epoch"], "5");

        // The payments job's dc-a override is in what is printed (and so in what is
        // applied): its args, its env on every Flink container, its Flink option.
        let payments: Vec<&Value> = printed
            .iter()
            .filter(|o| o["metadata"]["annotations"]["twinsite.io/job-id"] == "team-b/payments")
            .collect();
        assert!(!payments.is_empty(), "{mode:?}");
        let containers: Vec<&Value> = payments
            .iter()
            .flat_map(|o| {
                [
                    o.pointer("/spec/template/spec/containers/0"),
                    o.pointer("/spec/jobManager/podTemplate/spec/containers/0"),
                    o.pointer("/spec/taskManager/podTemplate/spec/containers/0"),
                ]
            })
            .flatten()
            .collect();
        assert!(containers.len() >= 2, "{mode:?}: {containers:?}");
        for container in &containers {
            let env = container["env"].as_array().unwrap();
            let value = |name: &str| {
                env.iter()
                    .find(|e| e["name"] == name)
                    .map(|e| e["value"].clone())
            };
            assert_eq!(
                value("KAFKA_BOOTSTRAP"),
                Some(json!("kafka.dc-a:9092")),
                "{mode:?}"
            );
            assert_eq!(
                value("START_MS"),
                Some(json!(restored_at.timestamp_millis().to_string()))
            );
        }
        let args = match mode {
            RenderMode::FlinkOperator => payments[0]["spec"]["job"]["args"].clone(),
            RenderMode::Standalone => payments[0]
                .pointer("/spec/template/spec/containers/0/args")
                .unwrap()
                .clone(),
        };
        let args: Vec<&str> = args
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.ends_with(&[
                "--brokers",
                "kafka.dc-a:9092",
                "--from=2026-12-05T10:31:02.000Z"
            ]),
            "{mode:?}: {args:?}"
        );
        let options = match mode {
            RenderMode::FlinkOperator => {
                payments[0]["spec"]["flinkConfiguration"]["pipeline.name"].clone()
            }
            RenderMode::Standalone => {
                let properties = value_of_env(payments[0], "FLINK_PROPERTIES");
                json!(
                    properties
                        .lines()
                        .any(|l| l == "pipeline.name: payments in dc-a")
                )
            }
        };
        assert!(
            options == json!("payments in dc-a") || options == json!(true),
            "{mode:?}"
        );
        // The orders job has no override: no env beyond twinsite's own.
        for object in printed
            .iter()
            .filter(|o| o["metadata"]["annotations"]["twinsite.io/job-id"] == "team-a/orders")
        {
            let text = object.to_string();
            assert!(!text.contains("KAFKA_BOOTSTRAP"), "{mode:?}");
        }
        reflectors.abort();
    }
}

fn value_of_env(deployment: &Value, name: &str) -> String {
    deployment
        .pointer("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array)
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A jar render cannot read is an error naming the URI: a launch would use the copy its
/// bytes address, so printing the URI as written would show what no launch uses.
#[test]
fn render_refuses_a_jar_it_cannot_read_naming_the_uri() {
    use twinsite::commands::render::{RenderArgs, prepare};
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.yaml");
    std::fs::write(
        &jobs,
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: team-a}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/missing.jar
  parallelism: 2
  jobManager: {resources: {cpu: "1", memory: 2Gi}}
  taskManager: {resources: {cpu: "2", memory: 4Gi}, slots: 2}
  checkpoints: {dir: "hdfs:///flink/checkpoints/team-a/orders", interval: 30s}
"#,
    )
    .unwrap();
    let storage = |site: &str| format!("dc-{site}=file://{}/{site}", dir.path().display());
    let error = prepare(&RenderArgs {
        site: "dc-a".into(),
        jobs,
        job: None,
        generation: 1,
        epoch: 0,
        restore: None,
        restore_completed_at: None,
        config: None,
        mode: None,
        nodes: None,
        storage: vec![storage("a"), storage("b")],
    })
    .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("team-a/orders") && text.contains("jarURI hdfs:///jars/missing.jar"),
        "{text}"
    );
}

#[test]
fn a_flink_deployment_may_plan_more_task_managers_than_its_parallelism_needs() {
    // A job whose Flink plan needs more slots than its parallelism: the placement is sized
    // for the plan, and Flink's resource manager starts a TaskManager per slots requested.
    let mut launch = spec(None);
    launch.parallelism = 2; // 2 / 2 slots = 1 TaskManager at least; the plan has 3
    launch_objects(&launch, &operator_config()).unwrap();
}
