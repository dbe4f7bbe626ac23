//! One conformance suite for the `Site` interface, run against every site kind: the
//! simulated site, the Kubernetes adapter in both launch modes (against the fake API server
//! of `tests/support/kube_api.rs`, with a small "cluster" that creates the pods Deployments
//! and the operator would, and storage on the local filesystem), and the local-Flink site
//! (real PyFlink processes). The same steps, the same assertions: launch idempotence, a
//! second generation refused while one runs, checkpoints reported with their path in the
//! site's storage, stop-with-savepoint (or `Unsupported`, declared by the kind), and the
//! next generation restored from what the previous one left.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use futures::FutureExt;
use hdfs_sync::{LocalStorage, StorageUrl};
use scheduler::model::{
    JobId, JobPlacement, Node, PodPlacement, PodRole, Resources, SiteId, SiteSnapshot,
};
use serde_json::{Value, json};
use support::kube_api::{FakeApi, node as kube_node, running_pod};
use twinsite::site::kube::{CheckpointStorage, KubeSite, KubeSiteConfig};
use twinsite::site::local_flink::{LocalFlinkConfig, LocalFlinkSite};
use twinsite::site::sim_metadata::{self, SimMetadata};
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{
    JobObservation, JobState, LaunchMode, LaunchSpec, ManualClock, Site, SiteError, flink_job_id,
    resolve_in_root,
};

fn job() -> JobId {
    JobId::new("team-a", "orders")
}

fn placement(nodes: [&str; 3]) -> JobPlacement {
    let pod = |role, index, node: &str| PodPlacement {
        role,
        index,
        node: node.into(),
    };
    JobPlacement {
        job: job(),
        site: SiteId("dc-a".into()),
        pods: vec![
            pod(PodRole::Jobmanager, 0, nodes[0]),
            pod(PodRole::Taskmanager, 0, nodes[1]),
            pod(PodRole::Taskmanager, 1, nodes[2]),
        ],
    }
}

fn base_spec(generation: u64, checkpoint_dir: String, jar_uri: String) -> LaunchSpec {
    LaunchSpec {
        job: job(),
        generation,
        epoch: 2,
        placement: placement(["n1", "n2", "n3"]),
        image: "flink:2.0".into(),
        flink_version: "v2_0".into(),
        jar_uri,
        entry_class: None,
        args: vec![],
        env: BTreeMap::new(),
        parallelism: 2,
        task_slots: 1,
        job_manager: Resources::new(1000, 1 << 30, 1),
        task_manager: Resources::new(1000, 1 << 30, 1),
        tolerations: vec![],
        flink_configuration: BTreeMap::new(),
        checkpoint_dir,
        checkpoint_interval_ms: 1000,
        restore_from: None,
    }
}

/// One site kind under test, and the world around it.
#[async_trait]
trait SiteUnderTest: Send + Sync {
    fn site(&self) -> Arc<dyn Site>;
    /// The site's storage directory (its "HDFS").
    fn storage_root(&self) -> &Path;
    fn spec(&self, generation: u64) -> LaunchSpec;
    /// Lets the site's world catch up: the cluster creates or removes pods, time passes.
    async fn settle(&self);
    /// Returns once `generation` has completed a checkpoint in the site's storage.
    async fn complete_checkpoint(&self, generation: u64);
    /// Whether the kind takes savepoints (`stop_with_savepoint` is `Unsupported` otherwise).
    fn takes_savepoints(&self) -> bool;
}

async fn observed(sut: &dyn SiteUnderTest, generation: u64) -> Option<JobObservation> {
    sut.site()
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.job == job() && o.generation == generation)
}

async fn settle_until(
    sut: &dyn SiteUnderTest,
    what: &str,
    done: impl Fn(&[JobObservation]) -> bool,
) -> Vec<JobObservation> {
    for _ in 0..600 {
        sut.settle().await;
        let jobs = sut.site().jobs().await.unwrap();
        if done(&jobs) {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not reached; jobs: {:?}", sut.site().jobs().await);
}

fn has_metadata(sut: &dyn SiteUnderTest, uri: &str) -> bool {
    resolve_in_root(sut.storage_root(), uri)
        .map(|dir| dir.join("_metadata").is_file())
        .unwrap_or(false)
}

/// The suite. Every site kind must pass it unchanged.
async fn conformance(sut: &dyn SiteUnderTest) {
    let site = sut.site();

    tracing::info!("--- launching a generation twice starts it once");
    site.launch(&sut.spec(1)).await.unwrap();
    site.launch(&sut.spec(1)).await.unwrap();
    let jobs = settle_until(sut, "generation 1 running", |jobs| {
        jobs.iter()
            .any(|o| o.generation == 1 && o.state == JobState::Running)
    })
    .await;
    let ours: Vec<&JobObservation> = jobs.iter().filter(|o| o.job == job()).collect();
    assert_eq!(ours.len(), 1, "one generation, once: {jobs:?}");

    tracing::info!("--- a second generation is refused while the first runs");
    let error = site.launch(&sut.spec(2)).await.unwrap_err();
    assert!(
        matches!(
            error,
            SiteError::GenerationConflict {
                running: 1,
                requested: 2,
                ..
            }
        ),
        "{error:?}"
    );
    sut.settle().await;
    assert!(
        observed(sut, 2).await.is_none(),
        "generation 2 never started"
    );

    tracing::info!("--- a completed checkpoint is reported with its path in the site's storage");
    sut.complete_checkpoint(1).await;
    let checkpoint = observed(sut, 1)
        .await
        .and_then(|o| o.latest_completed_checkpoint)
        .expect("generation 1 reports its checkpoint");
    assert!(checkpoint.id >= 1, "{checkpoint:?}");
    assert!(
        checkpoint.path.contains(&format!(
            "/{}/chk-{}",
            flink_job_id(&job(), 1),
            checkpoint.id
        )),
        "{checkpoint:?}"
    );
    assert!(
        has_metadata(sut, &checkpoint.path),
        "{checkpoint:?} holds _metadata"
    );

    tracing::info!("--- stop with savepoint");
    let spec = sut.spec(1);
    let target = format!("{}/savepoints", spec.checkpoint_dir);
    let restore = match site.stop_with_savepoint(&job(), 1, &target).await {
        Ok(path) => {
            assert!(
                sut.takes_savepoints(),
                "a savepoint from a kind that says it takes none"
            );
            assert!(path.starts_with(&target), "{path} under {target}");
            assert!(has_metadata(sut, &path), "{path} holds _metadata");
            path
        }
        Err(error) => {
            assert!(!sut.takes_savepoints(), "{error:?}");
            assert!(matches!(error, SiteError::Unsupported { .. }), "{error:?}");
            site.stop(&job(), 1).await.unwrap();
            checkpoint.path.clone()
        }
    };
    settle_until(sut, "generation 1 gone", |jobs| {
        !jobs.iter().any(|o| o.job == job() && o.generation == 1)
    })
    .await;

    tracing::info!("--- the next generation starts from what the previous one left");
    let mut next = sut.spec(2);
    next.restore_from = Some(restore);
    site.launch(&next).await.unwrap();
    settle_until(sut, "generation 2 running", |jobs| {
        jobs.iter()
            .any(|o| o.generation == 2 && o.state == JobState::Running)
    })
    .await;
    site.stop(&job(), 2).await.unwrap();
    // Stopping what is not running succeeds.
    site.stop(&job(), 2).await.unwrap();
    settle_until(sut, "generation 2 gone", |jobs| {
        !jobs.iter().any(|o| o.job == job())
    })
    .await;
}

// ---------------------------------------------------------------- simulated site

struct Simulated {
    site: SimulatedSite,
    clock: ManualClock,
    storage: tempfile::TempDir,
}

impl Simulated {
    fn new() -> Simulated {
        let storage = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let node = |name: &str| Node {
            owner_usage: None,
            name: name.into(),
            labels: BTreeMap::new(),
            taints: vec![],
            unschedulable: false,
            ready: true,
            allocatable: Resources::new(16_000, 64 << 30, 110),
        };
        let snapshot = SiteSnapshot {
            id: SiteId("dc-a".into()),
            nodes: vec![node("n1"), node("n2"), node("n3")],
            running_pods: vec![],
        };
        let site = SimulatedSite::new(
            snapshot,
            storage.path(),
            Arc::new(clock.clone()),
            SimulatedSiteConfig::default(),
        );
        Simulated {
            site,
            clock,
            storage,
        }
    }
}

#[async_trait]
impl SiteUnderTest for Simulated {
    fn site(&self) -> Arc<dyn Site> {
        Arc::new(self.site.clone())
    }
    fn storage_root(&self) -> &Path {
        self.storage.path()
    }
    fn spec(&self, generation: u64) -> LaunchSpec {
        base_spec(
            generation,
            "hdfs:///flink/checkpoints/team-a/orders".into(),
            "hdfs:///jars/orders.jar".into(),
        )
    }
    async fn settle(&self) {
        self.clock.advance(Duration::from_millis(100));
        self.site.tick();
    }
    async fn complete_checkpoint(&self, _generation: u64) {
        self.clock.advance(Duration::from_secs(1));
        self.site.tick();
    }
    fn takes_savepoints(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn the_simulated_site_conforms() {
    conformance(&Simulated::new()).await;
}

// ---------------------------------------------------------------- Kubernetes site

/// A Kubernetes site on the fake API server, with a "cluster" that does what the Deployment
/// controller, the kubelet and the Flink operator would: pods for what is applied, status
/// from the operator, savepoints written to storage on a suspend or a REST stop.
struct Kubernetes {
    site: KubeSite,
    api: FakeApi,
    mode: LaunchMode,
    storage: tempfile::TempDir,
    reflectors: tokio::task::JoinHandle<()>,
}

impl Drop for Kubernetes {
    fn drop(&mut self) {
        self.reflectors.abort();
    }
}

fn write_checkpoint(dir: &Path, job_id: &str, id: u64) {
    std::fs::create_dir_all(dir).unwrap();
    sim_metadata::write(
        dir,
        &SimMetadata {
            flink_job_id: job_id.into(),
            checkpoint_id: id,
            files: vec![],
        },
        |_| 0,
    )
    .unwrap();
}

impl Kubernetes {
    fn new(mode: LaunchMode) -> Kubernetes {
        let (client, api) = FakeApi::start();
        for name in ["n1", "n2", "n3"] {
            api.put("nodes", kube_node(name));
        }
        let storage = tempfile::tempdir().unwrap();
        let config = KubeSiteConfig {
            checkpoint_poll: Duration::from_millis(50),
            savepoint_poll: Duration::from_millis(20),
            ..KubeSiteConfig::new(SiteId("dc-a".into()), mode)
        };
        let checkpoints = CheckpointStorage {
            root: StorageUrl::local(storage.path()).unwrap(),
            storage: Arc::new(LocalStorage::new(storage.path())),
        };
        let (site, reflectors) = KubeSite::with_storage(client, config, Some(checkpoints));
        let cluster = {
            let (api, root) = (api.clone(), storage.path().to_owned());
            async move {
                // The operator works on its own, e.g. while a stop waits for its savepoint.
                loop {
                    reconcile_cluster(&api, mode, &root);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let reflectors = tokio::spawn(futures::future::join(reflectors, cluster).map(|_| ()));
        // Stop with savepoint in standalone mode: Flink's REST, through the service proxy.
        let root = storage.path().to_owned();
        api.on_rest_stop(move |job_id, target| {
            let path = format!("{target}/savepoint-{}-0a0b0c0d0e0f", &job_id[..6]);
            write_checkpoint(&resolve_in_root(&root, &path).unwrap(), job_id, 99);
            path
        });
        Kubernetes {
            site,
            api,
            mode,
            storage,
            reflectors,
        }
    }

    fn pinned(pod_spec: &Value) -> Vec<String> {
        pod_spec
            .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    fn reconcile_cluster(&self) {
        reconcile_cluster(&self.api, self.mode, self.storage.path());
    }
}

/// What the Deployment controller, the kubelet and the operator do for what is applied:
/// pods for it (pods of deleted objects go), the operator's status, and on a suspend the
/// savepoint written into `state.savepoints.dir` and reported.
fn reconcile_cluster(api: &FakeApi, mode: LaunchMode, root: &Path) {
    {
        let mut wanted: BTreeMap<String, Value> = BTreeMap::new();
        match mode {
            LaunchMode::Standalone => {
                for deployment in api.list("deployments") {
                    let name = deployment["metadata"]["name"].as_str().unwrap().to_owned();
                    let component = deployment
                        .pointer("/spec/template/metadata/labels/component")
                        .and_then(Value::as_str)
                        .unwrap()
                        .to_owned();
                    let node =
                        Kubernetes::pinned(&deployment["spec"]["template"]["spec"])[0].clone();
                    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
                    for index in 0..replicas {
                        let pod_name = format!("{name}-{index}");
                        wanted.insert(
                            pod_name.clone(),
                            running_pod(&deployment, &pod_name, &component, &node),
                        );
                    }
                }
            }
            LaunchMode::FlinkDeployment => {
                for object in api.list("flinkdeployments") {
                    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                    let namespace = object["metadata"]["namespace"].as_str().unwrap().to_owned();
                    let conf = &object["spec"]["flinkConfiguration"];
                    let job_id = conf["$internal.pipeline.job-id"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    let suspended = object["spec"]["job"]["state"] == "suspended";
                    if suspended {
                        if object["status"]["lifecycleState"] != "SUSPENDED" {
                            // The operator takes a savepoint into state.savepoints.dir.
                            let dir = conf["state.savepoints.dir"].as_str().unwrap();
                            let path = format!("{dir}/savepoint-{}-1a2b3c4d5e6f", &job_id[..6]);
                            write_checkpoint(&resolve_in_root(root, &path).unwrap(), &job_id, 42);
                            api.set_status(
                                "flinkdeployments",
                                &namespace,
                                &name,
                                json!({
                                    "lifecycleState": "SUSPENDED",
                                    "jobManagerDeploymentStatus": "MISSING",
                                    "jobStatus": {"state": "FINISHED", "jobId": job_id,
                                        "upgradeSavepointPath": path},
                                }),
                            );
                        }
                        continue;
                    }
                    if object["status"].is_null() {
                        api.set_status(
                            "flinkdeployments",
                            &namespace,
                            &name,
                            json!({
                                "lifecycleState": "STABLE",
                                "jobManagerDeploymentStatus": "READY",
                                "jobStatus": {"state": "RUNNING", "jobId": job_id},
                            }),
                        );
                    }
                    let jm =
                        Kubernetes::pinned(&object["spec"]["jobManager"]["podTemplate"]["spec"]);
                    let tms =
                        Kubernetes::pinned(&object["spec"]["taskManager"]["podTemplate"]["spec"]);
                    let pod_name = format!("{name}-jobmanager-0");
                    wanted.insert(
                        pod_name.clone(),
                        running_pod(&object, &pod_name, "jobmanager", &jm[0]),
                    );
                    let parallelism = object["spec"]["job"]["parallelism"].as_u64().unwrap();
                    let slots: u64 = conf["taskmanager.numberOfTaskSlots"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    for index in 0..parallelism.div_ceil(slots) {
                        let pod_name = format!("{name}-taskmanager-1-{}", index + 1);
                        let node = &tms[index as usize % tms.len()];
                        wanted.insert(
                            pod_name.clone(),
                            running_pod(&object, &pod_name, "taskmanager", node),
                        );
                    }
                }
            }
        }
        for pod in api.list("pods") {
            let name = pod["metadata"]["name"].as_str().unwrap();
            if !wanted.contains_key(name) {
                let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
                api.remove("pods", namespace, name);
            }
        }
        let existing: Vec<String> = api
            .list("pods")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        for (name, pod) in wanted {
            if !existing.contains(&name) {
                api.put("pods", pod);
            }
        }
    }
}

#[async_trait]
impl SiteUnderTest for Kubernetes {
    fn site(&self) -> Arc<dyn Site> {
        Arc::new(self.site.clone())
    }
    fn storage_root(&self) -> &Path {
        self.storage.path()
    }
    fn spec(&self, generation: u64) -> LaunchSpec {
        base_spec(
            generation,
            format!(
                "file://{}/flink/checkpoints/team-a/orders",
                self.storage.path().display()
            ),
            "hdfs://ns-a/jars/orders.jar".into(),
        )
    }
    async fn settle(&self) {
        self.reconcile_cluster();
        // Watch events reach the reflectors' stores.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    async fn complete_checkpoint(&self, generation: u64) {
        let spec = self.spec(generation);
        let job_id = flink_job_id(&spec.job, generation);
        let dir = format!("{}/{job_id}/chk-7", spec.checkpoint_dir);
        write_checkpoint(
            &resolve_in_root(self.storage.path(), &dir).unwrap(),
            &job_id,
            7,
        );
        // A checkpoint begun but not completed (no `_metadata`) is never reported.
        let partial = format!("{}/{job_id}/chk-8", spec.checkpoint_dir);
        std::fs::create_dir_all(resolve_in_root(self.storage.path(), &partial).unwrap()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fn takes_savepoints(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn the_kubernetes_site_in_operator_mode_conforms() {
    conformance(&Kubernetes::new(LaunchMode::FlinkDeployment)).await;
}

#[tokio::test]
async fn the_kubernetes_site_in_standalone_mode_conforms() {
    conformance(&Kubernetes::new(LaunchMode::Standalone)).await;
}

// ---------------------------------------------------------------- local-Flink site

struct LocalFlink {
    site: LocalFlinkSite,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl SiteUnderTest for LocalFlink {
    fn site(&self) -> Arc<dyn Site> {
        Arc::new(self.site.clone())
    }
    fn storage_root(&self) -> &Path {
        &self.root
    }
    fn spec(&self, generation: u64) -> LaunchSpec {
        let mut spec = base_spec(
            generation,
            "hdfs:///flink/checkpoints/team-a/orders".into(),
            support::flink::keyed_counter_uri(),
        );
        let local = |_| PodPlacement {
            role: PodRole::Taskmanager,
            index: 0,
            node: "localhost".into(),
        };
        spec.placement.pods = vec![
            PodPlacement {
                role: PodRole::Jobmanager,
                index: 0,
                node: "localhost".into(),
            },
            local(0),
        ];
        spec.parallelism = 1;
        spec
    }
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    async fn complete_checkpoint(&self, generation: u64) {
        for _ in 0..1200 {
            if observed(self, generation)
                .await
                .is_some_and(|o| o.latest_completed_checkpoint.is_some())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no checkpoint from the local Flink job in 120 s");
    }
    fn takes_savepoints(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_flink_site_conforms() {
    let python = support::flink::flink_python();
    let storage = tempfile::tempdir().unwrap();
    let site = LocalFlinkSite::new(LocalFlinkConfig {
        site: SiteId("dc-a".into()),
        storage_root: storage.path().join("hdfs"),
        python,
        log_dir: storage.path().join("logs"),
        capacity: Resources::new(8_000, 16 << 30, 110),
    });
    let sut = LocalFlink {
        site,
        root: storage.path().join("hdfs"),
        _dir: storage,
    };
    conformance(&sut).await;
}
