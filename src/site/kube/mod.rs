//! The Kubernetes site: reflectors on Nodes, Pods and (FlinkDeployment mode) FlinkDeployments
//! feed a local index; launches are server-side applies (field manager `twinsite`) of the
//! objects [`objects::launch_objects`] builds, stops are deletes by label; checkpoints are
//! read from the site's storage and the operator's status ([`observe::CheckpointFinder`]).
//!
//! May use: `crate::site` and the crates (kube, hdfs-sync). Must never: decide anything
//! (placement, fencing and relaunch are the controller's), or reach the store.
//!
//! Tested against recorded-shape requests and responses (tower-test) and a fake API server
//! in the tests, never against a live API server: see `src/site/README.md`.

pub mod objects;
pub mod observe;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node as K8sNode, Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use scheduler::model::{JobId, SiteId, SiteSnapshot};
use serde_json::{Value, json};
use tokio::sync::watch;

pub use objects::{
    ANNOTATION_CHECKPOINT_DIR, ANNOTATION_JOB_ID, LABEL_COMPONENT, LABEL_EPOCH, LABEL_GENERATION,
    LABEL_JOB, LABEL_MANAGED_BY, LABEL_NAMESPACE, LABEL_SITE, LaunchObject, LaunchObjects,
    MANAGED_BY, ObjectKind, REST_PORT_NAME, flink_configuration, flink_deployment_resource,
    label_value, launch_objects, object_base, object_name, object_namespace,
};
pub use observe::{
    CheckpointFinder, CheckpointStorage, ObservedGeneration, OperatorView, jobs_from,
    observe_generations, operator_view, snapshot_from, suspended_savepoint_path,
};

use super::{JobObservation, LaunchMode, LaunchSpec, Site, SiteError, SiteHealth, flink_job_id};

pub const FIELD_MANAGER: &str = "twinsite";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSiteConfig {
    pub site: SiteId,
    pub mode: LaunchMode,
    /// Service account of the Flink pods (`spec.serviceAccount` of a FlinkDeployment).
    pub service_account: String,
    /// Namespace of every object twinsite creates (policy `sites[].kubernetes.namespace`);
    /// `None`: each job's own namespace.
    pub namespace: Option<String>,
    /// `tolerationSeconds` of the lost-node `NoExecute` tolerations (policy
    /// `detection.podEvictionTimeout`).
    pub pod_eviction_timeout: Duration,
    /// How long a read waits for the reflectors' first full list.
    pub sync_timeout: Duration,
    pub savepoint_timeout: Duration,
    pub savepoint_poll: Duration,
    /// How often a generation's checkpoint directory is listed at most (sooner when the
    /// operator reports a new checkpoint).
    pub checkpoint_poll: Duration,
}

impl KubeSiteConfig {
    pub fn new(site: SiteId, mode: LaunchMode) -> Self {
        KubeSiteConfig {
            site,
            mode,
            service_account: "flink".into(),
            namespace: None,
            pod_eviction_timeout: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(30),
            savepoint_timeout: Duration::from_secs(600),
            savepoint_poll: Duration::from_secs(2),
            checkpoint_poll: Duration::from_secs(10),
        }
    }
}

/// A Kubernetes cluster as a site. Clones share the same index.
#[derive(Clone)]
pub struct KubeSite {
    inner: Arc<KubeInner>,
}

struct KubeInner {
    client: Client,
    config: KubeSiteConfig,
    nodes: Store<K8sNode>,
    pods: Store<Pod>,
    /// FlinkDeployment mode only: the operator's objects and their status.
    flink_deployments: Option<Store<DynamicObject>>,
    checkpoints: CheckpointFinder,
    changes: watch::Sender<u64>,
    health: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    reachable: bool,
    last_contact: Option<DateTime<Utc>>,
    detail: Option<String>,
    version: u64,
}

impl std::fmt::Debug for KubeSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSite")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl KubeSite {
    /// The site without checkpoint storage (it reports no checkpoints) and the future that
    /// runs its reflectors: spawn it.
    pub fn new(client: Client, config: KubeSiteConfig) -> (KubeSite, BoxFuture<'static, ()>) {
        Self::with_storage(client, config, None)
    }

    /// The site, reading checkpoints from `storage` (the site's HDFS), and the future that
    /// runs its Node, Pod and (FlinkDeployment mode) FlinkDeployment reflectors: spawn it;
    /// reads wait for its first full lists and fail while its watches fail.
    pub fn with_storage(
        client: Client,
        config: KubeSiteConfig,
        storage: Option<CheckpointStorage>,
    ) -> (KubeSite, BoxFuture<'static, ()>) {
        let (nodes, node_writer) = reflector::store::<K8sNode>();
        let (pods, pod_writer) = reflector::store::<Pod>();
        let (changes, _) = watch::channel(0);
        let mut streams = vec![
            reflector::reflector(
                node_writer,
                watcher(
                    Api::<K8sNode>::all(client.clone()),
                    watcher::Config::default(),
                )
                .default_backoff()
                .modify(|node| node.managed_fields_mut().clear()),
            )
            .map(|event| event.map(|_| ()).map_err(|e| format!("node watch: {e}")))
            .boxed(),
            reflector::reflector(
                pod_writer,
                watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
                    .default_backoff()
                    .modify(|pod| pod.managed_fields_mut().clear()),
            )
            .map(|event| event.map(|_| ()).map_err(|e| format!("pod watch: {e}")))
            .boxed(),
        ];
        let flink_deployments = match config.mode {
            LaunchMode::FlinkDeployment => {
                let resource = flink_deployment_resource();
                let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
                let store = writer.as_reader();
                streams.push(
                    reflector::reflector(
                        writer,
                        watcher(
                            Api::<DynamicObject>::all_with(client.clone(), &resource),
                            watcher::Config::default()
                                .labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
                        )
                        .default_backoff()
                        .modify(|object| object.managed_fields_mut().clear()),
                    )
                    .map(|event| {
                        event
                            .map(|_| ())
                            .map_err(|e| format!("FlinkDeployment watch: {e}"))
                    })
                    .boxed(),
                );
                Some(store)
            }
            LaunchMode::Standalone => None,
        };
        let checkpoints = CheckpointFinder::new(storage, config.checkpoint_poll);
        let inner = Arc::new(KubeInner {
            client,
            config,
            nodes,
            pods,
            flink_deployments,
            checkpoints,
            changes,
            health: Mutex::new(HealthState::default()),
        });
        let observer = Arc::clone(&inner);
        let run = futures::stream::select_all(streams)
            .for_each(move |event| {
                observer.observe(event);
                futures::future::ready(())
            })
            .boxed();
        (KubeSite { inner }, run)
    }

    pub fn config(&self) -> &KubeSiteConfig {
        &self.inner.config
    }
}

impl KubeInner {
    fn site(&self) -> SiteId {
        self.config.site.clone()
    }

    fn observe(&self, event: Result<(), String>) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Ok(()) => {
                health.reachable = true;
                health.last_contact = Some(Utc::now());
                health.detail = None;
            }
            Err(error) => {
                tracing::warn!(site = %self.config.site, %error, "watch failed; retrying with backoff");
                health.reachable = false;
                health.detail = Some(error);
            }
        }
        health.version += 1;
        self.changes.send_replace(health.version);
    }

    /// Waits for the first full list of every reflector, then refuses while watches fail:
    /// a stale index must not pass for a live one.
    async fn synced(&self) -> Result<(), SiteError> {
        let wait = async {
            self.nodes.wait_until_ready().await?;
            self.pods.wait_until_ready().await?;
            if let Some(store) = &self.flink_deployments {
                store.wait_until_ready().await?;
            }
            Ok::<_, reflector::store::WriterDropped>(())
        };
        match tokio::time::timeout(self.config.sync_timeout, wait).await {
            Err(_) => {
                return Err(SiteError::Timeout {
                    site: self.site(),
                    operation: "initial list of nodes, pods and FlinkDeployments".into(),
                    after: self.config.sync_timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(SiteError::Unreachable {
                    site: self.site(),
                    reason: format!("reflector stopped: {e}"),
                });
            }
            Ok(Ok(())) => {}
        }
        let health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if health.reachable {
            Ok(())
        } else {
            Err(SiteError::Unreachable {
                site: self.site(),
                reason: health
                    .detail
                    .clone()
                    .unwrap_or_else(|| "watches not established".into()),
            })
        }
    }

    fn api_error(&self, object: &str, error: kube::Error) -> SiteError {
        kube_error(&self.config.site, object, error)
    }

    fn flink_deployments(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &flink_deployment_resource())
    }

    /// Refuses while another generation of the job has objects or pods in the site.
    async fn check_generations(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        let namespace = object_namespace(&spec.job, &self.config);
        let selector = objects::job_selector(&spec.job, None, &self.config);
        let params = ListParams::default().labels(&selector);
        let mut others: Vec<(u64, bool)> = Vec::new();
        let object = format!("{} of job {}", self.config.mode, spec.job);
        match self.config.mode {
            LaunchMode::FlinkDeployment => {
                let list = self
                    .flink_deployments(namespace)
                    .list(&params)
                    .await
                    .map_err(|e| self.api_error(&object, e))?;
                for item in &list.items {
                    others.push((
                        generation_of(item.labels()),
                        item.metadata.deletion_timestamp.is_some(),
                    ));
                }
            }
            LaunchMode::Standalone => {
                let list = Api::<Deployment>::namespaced(self.client.clone(), namespace)
                    .list(&params)
                    .await
                    .map_err(|e| self.api_error(&object, e))?;
                for item in &list.items {
                    others.push((
                        generation_of(item.labels()),
                        item.metadata.deletion_timestamp.is_some(),
                    ));
                }
            }
        }
        // Pods of a deleted generation still run until their grace period ends.
        for pod in self.pods.state() {
            if pod
                .annotations()
                .get(ANNOTATION_JOB_ID)
                .is_some_and(|id| id == &spec.job.0)
            {
                others.push((generation_of(pod.labels()), true));
            }
        }
        let mut terminating = None;
        for (generation, deleting) in others {
            if generation == spec.generation {
                continue;
            }
            if !deleting {
                return Err(SiteError::GenerationConflict {
                    site: self.site(),
                    job: spec.job.clone(),
                    running: generation,
                    requested: spec.generation,
                });
            }
            terminating = Some(generation);
        }
        match terminating {
            Some(generation) => Err(SiteError::StillTerminating {
                site: self.site(),
                job: spec.job.clone(),
                generation,
            }),
            None => Ok(()),
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        // Built (and checked) before anything is sent: an invalid launch sends nothing.
        let launch = launch_objects(spec, &self.config)?;
        self.check_generations(spec).await?;
        let namespace = launch.namespace.as_str();
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        // The JobManager Deployment's uid, once applied: it owns the Service, so deleting
        // the Deployments removes the Service too.
        let mut owner: Option<Value> = None;
        for object in &launch.objects {
            let name = object.name.as_str();
            match object.kind {
                ObjectKind::FlinkDeployment => {
                    self.flink_deployments(namespace)
                        .patch(name, &apply, &Patch::Apply(&object.body))
                        .await
                        .map_err(|e| {
                            self.api_error(&format!("FlinkDeployment {namespace}/{name}"), e)
                        })?;
                }
                ObjectKind::Deployment => {
                    let applied = Api::<Deployment>::namespaced(self.client.clone(), namespace)
                        .patch(name, &apply, &Patch::Apply(&object.body))
                        .await
                        .map_err(|e| {
                            self.api_error(&format!("Deployment {namespace}/{name}"), e)
                        })?;
                    if owner.is_none() {
                        owner = applied.metadata.uid.map(|uid| {
                            json!([{
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "name": name,
                                "uid": uid,
                                "controller": false,
                                "blockOwnerDeletion": false,
                            }])
                        });
                    }
                }
                ObjectKind::Service => {
                    let mut body = object.body.clone();
                    if let Some(owner) = &owner {
                        body["metadata"]["ownerReferences"] = owner.clone();
                    }
                    Api::<Service>::namespaced(self.client.clone(), namespace)
                        .patch(name, &apply, &Patch::Apply(&body))
                        .await
                        .map_err(|e| self.api_error(&format!("Service {namespace}/{name}"), e))?;
                }
            }
        }
        tracing::info!(site = %self.config.site, job = %spec.job, generation = spec.generation,
            epoch = spec.epoch, mode = %self.config.mode, restore_from = ?spec.restore_from, "launched");
        Ok(())
    }

    async fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        split_job(&self.config.site, job)?;
        let namespace = object_namespace(job, &self.config);
        let selector = objects::job_selector(job, Some(generation), &self.config);
        let params = ListParams::default().labels(&selector);
        let delete = DeleteParams::background();
        let object = format!("{} of job {job} generation {generation}", self.config.mode);
        match self.config.mode {
            LaunchMode::FlinkDeployment => {
                // The operator deletes the cluster and its HA data with the resource.
                self.flink_deployments(namespace)
                    .delete_collection(&delete, &params)
                    .await
                    .map_err(|e| self.api_error(&object, e))?;
            }
            LaunchMode::Standalone => {
                Api::<Deployment>::namespaced(self.client.clone(), namespace)
                    .delete_collection(&delete, &params)
                    .await
                    .map_err(|e| self.api_error(&object, e))?;
                // Flink keeps its HA ConfigMaps for a later JobManager; none will come.
                let cluster_id = object_name(job, generation, &self.config);
                let ha =
                    ListParams::default().labels(&objects::ha_config_map_selector(&cluster_id));
                Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
                    .delete_collection(&delete, &ha)
                    .await
                    .map_err(|e| self.api_error(&format!("HA ConfigMaps of {object}"), e))?;
            }
        }
        tracing::info!(site = %self.config.site, %job, generation, "stopped");
        Ok(())
    }

    async fn stop_with_savepoint(
        &self,
        job: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        split_job(&self.config.site, job)?;
        let path = match self.config.mode {
            LaunchMode::FlinkDeployment => {
                self.suspend_flink_deployment(job, generation, target_dir)
                    .await?
            }
            LaunchMode::Standalone => self.rest_stop(job, generation, target_dir).await?,
        };
        self.stop(job, generation).await?;
        Ok(path)
    }

    /// Suspends the FlinkDeployment with `upgradeMode: savepoint` and waits for the operator
    /// to report the savepoint it took.
    async fn suspend_flink_deployment(
        &self,
        job: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        let namespace = object_namespace(job, &self.config);
        let name = object_name(job, generation, &self.config);
        let object = format!("FlinkDeployment {namespace}/{name}");
        let api = self.flink_deployments(namespace);
        let patch = json!({
            "spec": {
                "flinkConfiguration": {"state.savepoints.dir": target_dir},
                "job": {"state": "suspended", "upgradeMode": "savepoint"},
            }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                return Err(SiteError::NotRunning {
                    site: self.site(),
                    job: job.clone(),
                    generation,
                });
            }
            Err(e) => return Err(self.api_error(&object, e)),
        }
        let deadline = tokio::time::Instant::now() + self.config.savepoint_timeout;
        loop {
            let current = api
                .get(&name)
                .await
                .map_err(|e| self.api_error(&object, e))?;
            if let Some(path) = suspended_savepoint_path(&current) {
                return Ok(path);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SiteError::Timeout {
                    site: self.site(),
                    operation: format!("savepoint of {object}"),
                    after: self.config.savepoint_timeout,
                });
            }
            tokio::time::sleep(self.config.savepoint_poll).await;
        }
    }

    /// Flink's REST `stop` (savepoint, then stop) through the API server's service proxy,
    /// then polls the asynchronous operation.
    async fn rest_stop(
        &self,
        job: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        let namespace = object_namespace(job, &self.config);
        let service = format!("{}-rest", object_name(job, generation, &self.config));
        let jid = flink_job_id(job, generation);
        let base = format!(
            "/api/v1/namespaces/{namespace}/services/{service}:{REST_PORT_NAME}/proxy/jobs/{jid}"
        );
        let object = format!("Flink job {jid} behind Service {namespace}/{service}");
        let body = serde_json::to_vec(&json!({"targetDirectory": target_dir, "drain": false}))
            .map_err(|e| self.invalid(&object, e.to_string()))?;
        let request = http::Request::post(format!("{base}/stop"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| self.invalid(&object, e.to_string()))?;
        let trigger: Value = match self.client.request(request).await {
            Ok(value) => value,
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                return Err(SiteError::NotRunning {
                    site: self.site(),
                    job: job.clone(),
                    generation,
                });
            }
            Err(e) => return Err(self.api_error(&object, e)),
        };
        let request_id = trigger
            .get("request-id")
            .and_then(Value::as_str)
            .ok_or_else(|| self.invalid(&object, format!("stop answered {trigger}")))?
            .to_owned();
        let deadline = tokio::time::Instant::now() + self.config.savepoint_timeout;
        loop {
            let request = http::Request::get(format!("{base}/savepoints/{request_id}"))
                .body(Vec::new())
                .map_err(|e| self.invalid(&object, e.to_string()))?;
            let status: Value = self
                .client
                .request(request)
                .await
                .map_err(|e| self.api_error(&object, e))?;
            if status.pointer("/status/id").and_then(Value::as_str) == Some("COMPLETED") {
                if let Some(location) = status
                    .pointer("/operation/location")
                    .and_then(Value::as_str)
                {
                    return Ok(location.to_owned());
                }
                let cause = status
                    .pointer("/operation/failure-cause")
                    .map(Value::to_string)
                    .unwrap_or_else(|| status.to_string());
                return Err(SiteError::Conflict {
                    site: self.site(),
                    object,
                    reason: format!("savepoint failed: {cause}"),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SiteError::Timeout {
                    site: self.site(),
                    operation: format!("savepoint of {object}"),
                    after: self.config.savepoint_timeout,
                });
            }
            tokio::time::sleep(self.config.savepoint_poll).await;
        }
    }

    fn invalid(&self, object: &str, reason: String) -> SiteError {
        SiteError::Invalid {
            site: self.site(),
            object: object.to_owned(),
            reason,
        }
    }

    async fn jobs(&self) -> Result<Vec<JobObservation>, SiteError> {
        self.synced().await?;
        let flink_deployments = self
            .flink_deployments
            .as_ref()
            .map(Store::state)
            .unwrap_or_default();
        let mut generations =
            observe_generations(&self.nodes.state(), &self.pods.state(), &flink_deployments);
        self.checkpoints.fill(&mut generations).await;
        Ok(generations.into_iter().map(|g| g.observation).collect())
    }
}

#[async_trait]
impl Site for KubeSite {
    fn id(&self) -> SiteId {
        self.inner.site()
    }

    async fn snapshot(&self) -> Result<SiteSnapshot, SiteError> {
        self.inner.synced().await?;
        Ok(snapshot_from(
            &self.inner.config.site,
            &self.inner.nodes.state(),
            &self.inner.pods.state(),
        ))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        self.inner.launch(spec).await
    }

    async fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        self.inner.stop(job, generation).await
    }

    async fn stop_with_savepoint(
        &self,
        job: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        self.inner
            .stop_with_savepoint(job, generation, target_dir)
            .await
    }

    async fn jobs(&self) -> Result<Vec<JobObservation>, SiteError> {
        self.inner.jobs().await
    }

    async fn health(&self) -> SiteHealth {
        let health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        SiteHealth {
            site: self.inner.site(),
            api_reachable: health.reachable,
            last_contact: health.last_contact,
            detail: health.detail.clone(),
        }
    }
}

/// Maps a kube error to a site error: transport failures, 429 and 5xx may pass; 409 is a
/// conflict; other 4xx mean the request itself is wrong.
pub fn kube_error(site: &SiteId, object: &str, error: kube::Error) -> SiteError {
    match &error {
        kube::Error::Api(status) => match status.code {
            409 => SiteError::Conflict {
                site: site.clone(),
                object: object.to_owned(),
                reason: status.message.clone(),
            },
            429 | 500..=599 => SiteError::Unreachable {
                site: site.clone(),
                reason: format!("{object}: {} ({})", status.message, status.code),
            },
            _ => SiteError::Invalid {
                site: site.clone(),
                object: object.to_owned(),
                reason: format!("{} ({} {})", status.message, status.code, status.reason),
            },
        },
        _ => SiteError::Unreachable {
            site: site.clone(),
            reason: format!("{object}: {error}"),
        },
    }
}

fn split_job<'a>(site: &SiteId, job: &'a JobId) -> Result<(&'a str, &'a str), SiteError> {
    job.0.split_once('/').ok_or_else(|| SiteError::Invalid {
        site: site.clone(),
        object: format!("job {job}"),
        reason: "job id is not namespace/name".into(),
    })
}

fn generation_of(labels: &BTreeMap<String, String>) -> u64 {
    labels
        .get(LABEL_GENERATION)
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}
