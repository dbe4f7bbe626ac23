//! The Kubernetes site: reflectors on Nodes and Pods feed a local index; launches are
//! server-side applies (field manager `twinsite`), stops are deletes by label.
//!
//! Two launch modes (`LaunchMode`): a `FlinkDeployment` (`flink.apache.org/v1beta1`) for the
//! Apache Flink Kubernetes Operator, or standalone JobManager/TaskManager Deployments plus a
//! JobManager Service. Every object carries `twinsite.io/job` and `twinsite.io/generation`
//! labels and lives in the job's namespace. Restores are from an explicit path only.
//!
//! Tested against recorded-shape requests and responses (tower-test), never against a live
//! API server: see `src/site/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node as K8sNode, Pod, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use scheduler::model::{JobId, PodRole, Resources, SiteId, SiteSnapshot};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{
    JobObservation, JobState, LaunchMode, LaunchSpec, Site, SiteError, SiteHealth, flink_job_id,
};

pub const FIELD_MANAGER: &str = "twinsite";
pub const LABEL_JOB: &str = "twinsite.io/job";
pub const LABEL_GENERATION: &str = "twinsite.io/generation";
pub const LABEL_SITE: &str = "twinsite.io/site";
/// Flink's own pod label for the role (`jobmanager`/`taskmanager`); the operator sets it on
/// native pods and twinsite sets it on standalone ones, so both read the same way.
pub const LABEL_COMPONENT: &str = "component";
/// The exact `namespace/name` job id: label values cannot hold a `/`.
pub const ANNOTATION_JOB_ID: &str = "twinsite.io/job-id";
/// Port name of the JobManager's REST endpoint on its Service.
pub const REST_PORT_NAME: &str = "rest";

/// The Flink Kubernetes Operator's custom resource.
pub fn flink_deployment_resource() -> ApiResource {
    ApiResource {
        group: "flink.apache.org".into(),
        version: "v1beta1".into(),
        api_version: "flink.apache.org/v1beta1".into(),
        kind: "FlinkDeployment".into(),
        plural: "flinkdeployments".into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSiteConfig {
    pub site: SiteId,
    pub mode: LaunchMode,
    /// Service account of the Flink pods (`spec.serviceAccount` of a FlinkDeployment).
    pub service_account: String,
    /// How long a read waits for the reflectors' first full list.
    pub sync_timeout: Duration,
    pub savepoint_timeout: Duration,
    pub savepoint_poll: Duration,
}

impl KubeSiteConfig {
    pub fn new(site: SiteId, mode: LaunchMode) -> Self {
        KubeSiteConfig {
            site,
            mode,
            service_account: "flink".into(),
            sync_timeout: Duration::from_secs(30),
            savepoint_timeout: Duration::from_secs(600),
            savepoint_poll: Duration::from_secs(2),
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
    /// The site, and the future that runs its Node and Pod reflectors: spawn it; reads wait
    /// for its first full list and fail while its watches fail.
    pub fn new(client: Client, config: KubeSiteConfig) -> (KubeSite, BoxFuture<'static, ()>) {
        let (nodes, node_writer) = reflector::store::<K8sNode>();
        let (pods, pod_writer) = reflector::store::<Pod>();
        let (changes, _) = watch::channel(0);
        let inner = Arc::new(KubeInner {
            client: client.clone(),
            config,
            nodes,
            pods,
            changes,
            health: Mutex::new(HealthState::default()),
        });
        let node_events = reflector::reflector(
            node_writer,
            watcher(
                Api::<K8sNode>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(|node| node.managed_fields_mut().clear()),
        )
        .map(|event| event.map(|_| ()).map_err(|e| format!("node watch: {e}")));
        let pod_events = reflector::reflector(
            pod_writer,
            watcher(Api::<Pod>::all(client), watcher::Config::default())
                .default_backoff()
                .modify(|pod| pod.managed_fields_mut().clear()),
        )
        .map(|event| event.map(|_| ()).map_err(|e| format!("pod watch: {e}")));
        let observer = Arc::clone(&inner);
        let run = futures::stream::select(node_events, pod_events)
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

    /// Waits for the first full list of both reflectors, then refuses while watches fail:
    /// a stale index must not pass for a live one.
    async fn synced(&self) -> Result<(), SiteError> {
        let wait = async {
            self.nodes.wait_until_ready().await?;
            self.pods.wait_until_ready().await
        };
        match tokio::time::timeout(self.config.sync_timeout, wait).await {
            Err(_) => {
                return Err(SiteError::Timeout {
                    site: self.site(),
                    operation: "initial list of nodes and pods".into(),
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
        let (namespace, name) = split_job(&self.config.site, &spec.job)?;
        let selector = format!("{LABEL_JOB}={}", label_value(name));
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
            if pod.namespace().as_deref() == Some(namespace)
                && pod.labels().get(LABEL_JOB) == Some(&label_value(name))
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
        spec.validate_for(&self.config.site)?;
        if self.config.mode == LaunchMode::FlinkDeployment {
            // The operator starts ceil(parallelism / slots) TaskManagers: it must match the plan.
            let started = spec.parallelism.div_ceil(spec.task_slots) as usize;
            let planned = spec.task_manager_nodes().len();
            if started != planned {
                return Err(self.invalid(
                    &format!("launch of job {} generation {}", spec.job, spec.generation),
                    format!(
                        "parallelism {} with {} slots starts {started} TaskManagers, but the placement has {planned}",
                        spec.parallelism, spec.task_slots
                    ),
                ));
            }
        }
        self.check_generations(spec).await?;
        let (namespace, _) = split_job(&self.config.site, &spec.job)?;
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        match self.config.mode {
            LaunchMode::FlinkDeployment => {
                let object = flink_deployment(spec, &self.config);
                let name = object_base(&spec.job, spec.generation);
                self.flink_deployments(namespace)
                    .patch(&name, &apply, &Patch::Apply(&object))
                    .await
                    .map_err(|e| {
                        self.api_error(&format!("FlinkDeployment {namespace}/{name}"), e)
                    })?;
            }
            LaunchMode::Standalone => {
                let objects = standalone_objects(spec, &self.config);
                let deployments = Api::<Deployment>::namespaced(self.client.clone(), namespace);
                let job_manager = deployments
                    .patch(
                        &objects.job_manager.0,
                        &apply,
                        &Patch::Apply(&objects.job_manager.1),
                    )
                    .await
                    .map_err(|e| {
                        self.api_error(
                            &format!("Deployment {namespace}/{}", objects.job_manager.0),
                            e,
                        )
                    })?;
                // The Service and TaskManagers are owned by the JobManager Deployment, so
                // deleting the Deployments removes the Service too.
                let owner = job_manager.metadata.uid.map(|uid| {
                    json!([{
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": objects.job_manager.0,
                        "uid": uid,
                        "controller": false,
                        "blockOwnerDeletion": false,
                    }])
                });
                let mut service = objects.service.1.clone();
                if let Some(owner) = &owner {
                    service["metadata"]["ownerReferences"] = owner.clone();
                }
                Api::<Service>::namespaced(self.client.clone(), namespace)
                    .patch(&objects.service.0, &apply, &Patch::Apply(&service))
                    .await
                    .map_err(|e| {
                        self.api_error(&format!("Service {namespace}/{}", objects.service.0), e)
                    })?;
                for (name, body) in &objects.task_managers {
                    deployments
                        .patch(name, &apply, &Patch::Apply(body))
                        .await
                        .map_err(|e| {
                            self.api_error(&format!("Deployment {namespace}/{name}"), e)
                        })?;
                }
            }
        }
        tracing::info!(site = %self.config.site, job = %spec.job, generation = spec.generation,
            mode = %self.config.mode, restore_from = ?spec.restore_from, "launched");
        Ok(())
    }

    async fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        let (namespace, name) = split_job(&self.config.site, job)?;
        let selector = format!(
            "{LABEL_JOB}={},{LABEL_GENERATION}={generation}",
            label_value(name)
        );
        let params = ListParams::default().labels(&selector);
        let delete = DeleteParams::background();
        let object = format!("{} of job {job} generation {generation}", self.config.mode);
        match self.config.mode {
            LaunchMode::FlinkDeployment => {
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
        let (namespace, _) = split_job(&self.config.site, job)?;
        let name = object_base(job, generation);
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
        let (namespace, _) = split_job(&self.config.site, job)?;
        let service = format!("{}-rest", object_base(job, generation));
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
        self.inner.synced().await?;
        Ok(jobs_from(
            &self.inner.nodes.state(),
            &self.inner.pods.state(),
        ))
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

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..3]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The job's name as a label value (at most 63 characters; long names keep a hash suffix).
pub fn label_value(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= 63 && clean == name {
        return clean;
    }
    let prefix: String = clean.chars().take(56).collect();
    format!(
        "{}-{}",
        prefix.trim_end_matches(['-', '_', '.']),
        short_hash(name)
    )
}

/// Name of the objects of one generation: `<name>-g<generation>`, a DNS-1035 label short
/// enough for the operator (at most 45 characters) and for derived pod names.
pub fn object_base(job: &JobId, generation: u64) -> String {
    let name = job.0.split_once('/').map_or(job.0.as_str(), |(_, n)| n);
    let suffix = format!("-g{generation}");
    let mut clean: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert_str(0, "j-");
    }
    const MAX: usize = 45;
    let room = MAX - suffix.len();
    // A shortened or rewritten name gets a hash of the full id, so two jobs never share one.
    if clean.len() > room || clean != name {
        clean.truncate(room - 7);
        clean = format!("{}-{}", clean.trim_end_matches('-'), short_hash(&job.0));
    }
    format!("{}{suffix}", clean.trim_end_matches('-'))
}

fn labels(spec: &LaunchSpec, site: &SiteId) -> Value {
    let name = spec.job.0.split_once('/').map_or("", |(_, n)| n);
    json!({
        LABEL_JOB: label_value(name),
        LABEL_GENERATION: spec.generation.to_string(),
        LABEL_SITE: label_value(&site.0),
        "app.kubernetes.io/managed-by": "twinsite",
    })
}

fn with_component(mut labels: Value, component: &str) -> Value {
    labels[LABEL_COMPONENT] = json!(component);
    labels
}

/// Required node affinity on `metadata.name`: the pod may only run on `nodes`.
fn pin_to(nodes: &[&str]) -> Value {
    json!({
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{
                    "matchFields": [{"key": "metadata.name", "operator": "In", "values": nodes}]
                }]
            }
        }
    })
}

fn mebibytes(bytes: i64) -> i64 {
    // Round up: Flink must never be given less memory than the pod requests.
    (bytes + (1 << 20) - 1) >> 20
}

fn quantity_memory(bytes: i64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

fn container_resources(r: &Resources) -> Value {
    let values =
        json!({"cpu": format!("{}m", r.cpu_milli), "memory": quantity_memory(r.memory_bytes)});
    json!({"requests": values, "limits": values})
}

/// twinsite's Flink configuration over the user's: checkpoint location and cadence, memory
/// sized to the pods, slots; and checkpoints retained on cancel, so a stop never deletes the
/// state a relaunch restores from.
pub fn flink_configuration(spec: &LaunchSpec) -> BTreeMap<String, String> {
    let mut conf = spec.flink_configuration.clone();
    let ours = [
        ("state.checkpoints.dir", spec.checkpoint_dir.clone()),
        (
            "execution.checkpointing.interval",
            format!("{}ms", spec.checkpoint_interval_ms),
        ),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION".into(),
        ),
        ("taskmanager.numberOfTaskSlots", spec.task_slots.to_string()),
        ("parallelism.default", spec.parallelism.to_string()),
        (
            "jobmanager.memory.process.size",
            format!("{}m", mebibytes(spec.job_manager.memory_bytes)),
        ),
        (
            "taskmanager.memory.process.size",
            format!("{}m", mebibytes(spec.task_manager.memory_bytes)),
        ),
    ];
    for (key, value) in ours {
        conf.insert(key.to_owned(), value);
    }
    conf
}

/// The `FlinkDeployment` for one generation. TaskManagers are restricted to the planned
/// nodes; with native pods the operator cannot pin each TaskManager to its own node, so
/// the count per node is the kube-scheduler's choice within that set.
pub fn flink_deployment(spec: &LaunchSpec, config: &KubeSiteConfig) -> Value {
    let (namespace, _) = spec.job.0.split_once('/').unwrap_or(("", &spec.job.0));
    let labels = labels(spec, &config.site);
    let jm_node: Vec<&str> = spec.job_manager_node().into_iter().collect();
    let tm_nodes: Vec<&str> = spec
        .task_manager_nodes()
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let resource = |r: &Resources| {
        json!({
            "cpu": r.cpu_milli as f64 / 1000.0,
            "memory": format!("{}m", mebibytes(r.memory_bytes)),
        })
    };
    let mut job = json!({
        "jarURI": spec.jar_uri,
        "parallelism": spec.parallelism,
        "upgradeMode": "savepoint",
        "state": "running",
        "args": spec.args,
    });
    if let Some(class) = &spec.entry_class {
        job["entryClass"] = json!(class);
    }
    if let Some(path) = &spec.restore_from {
        job["initialSavepointPath"] = json!(path);
    }
    json!({
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {
            "name": object_base(&spec.job, spec.generation),
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_JOB_ID: spec.job.0},
        },
        "spec": {
            "image": spec.image,
            "flinkVersion": spec.flink_version,
            "serviceAccount": config.service_account,
            "flinkConfiguration": flink_configuration(spec),
            "podTemplate": {
                "metadata": {
                    "labels": labels,
                    "annotations": {ANNOTATION_JOB_ID: spec.job.0},
                },
                "spec": {"tolerations": spec.tolerations},
            },
            "jobManager": {
                "replicas": 1,
                "resource": resource(&spec.job_manager),
                "podTemplate": {"spec": {"affinity": pin_to(&jm_node)}},
            },
            "taskManager": {
                "resource": resource(&spec.task_manager),
                "podTemplate": {"spec": {"affinity": pin_to(&tm_nodes)}},
            },
            "job": job,
        }
    })
}

/// The objects of a standalone launch: `(name, body)` pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct StandaloneObjects {
    pub job_manager: (String, Value),
    pub service: (String, Value),
    /// One Deployment per distinct planned node, with that node's TaskManager count.
    pub task_managers: Vec<(String, Value)>,
}

/// Standalone application mode: the JobManager runs `standalone-job` with the remote jar
/// (`--jars`, Flink ≥ 1.19), a fixed job id (so checkpoint paths are predictable) and
/// `--fromSavepoint` when restoring; every pod is pinned to its planned node.
pub fn standalone_objects(spec: &LaunchSpec, config: &KubeSiteConfig) -> StandaloneObjects {
    let (namespace, _) = spec.job.0.split_once('/').unwrap_or(("", &spec.job.0));
    let base = object_base(&spec.job, spec.generation);
    let labels = labels(spec, &config.site);
    let rpc_service = format!("{base}-rest");
    let annotations = json!({ANNOTATION_JOB_ID: spec.job.0});

    let mut properties = format!("jobmanager.rpc.address: {rpc_service}\n");
    for (key, value) in flink_configuration(spec) {
        properties.push_str(&format!("{key}: {value}\n"));
    }
    let env = json!([{"name": "FLINK_PROPERTIES", "value": properties}]);

    let mut args = vec![
        "standalone-job".to_owned(),
        "--jars".to_owned(),
        spec.jar_uri.clone(),
        "--job-id".to_owned(),
        flink_job_id(&spec.job, spec.generation),
    ];
    if let Some(class) = &spec.entry_class {
        args.extend(["--job-classname".to_owned(), class.clone()]);
    }
    if let Some(path) = &spec.restore_from {
        args.extend(["--fromSavepoint".to_owned(), path.clone()]);
    }
    args.extend(spec.args.iter().cloned());

    let deployment =
        |name: &str, component: &str, replicas: usize, nodes: &[&str], container: Value| {
            let pod_labels = with_component(labels.clone(), component);
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": pod_labels,
                    "annotations": annotations,
                },
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {
                        LABEL_JOB: labels[LABEL_JOB],
                        LABEL_GENERATION: labels[LABEL_GENERATION],
                        LABEL_COMPONENT: component,
                    }},
                    "template": {
                        "metadata": {"labels": pod_labels, "annotations": annotations},
                        "spec": {
                            "serviceAccountName": config.service_account,
                            "affinity": pin_to(nodes),
                            "tolerations": spec.tolerations,
                            "containers": [container],
                        }
                    }
                }
            })
        };

    let jm_name = format!("{base}-jobmanager");
    let jm_node: Vec<&str> = spec.job_manager_node().into_iter().collect();
    let job_manager = deployment(
        &jm_name,
        "jobmanager",
        1,
        &jm_node,
        json!({
            "name": "jobmanager",
            "image": spec.image,
            "args": args,
            "env": env,
            "ports": [
                {"name": "rpc", "containerPort": 6123},
                {"name": "blob", "containerPort": 6124},
                {"name": REST_PORT_NAME, "containerPort": 8081},
            ],
            "resources": container_resources(&spec.job_manager),
        }),
    );

    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": rpc_service,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {
                LABEL_JOB: labels[LABEL_JOB],
                LABEL_GENERATION: labels[LABEL_GENERATION],
                LABEL_COMPONENT: "jobmanager",
            },
            "ports": [
                {"name": "rpc", "port": 6123, "targetPort": "rpc"},
                {"name": "blob", "port": 6124, "targetPort": "blob"},
                {"name": REST_PORT_NAME, "port": 8081, "targetPort": REST_PORT_NAME},
            ],
        }
    });

    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for node in spec.task_manager_nodes() {
        *per_node.entry(node).or_default() += 1;
    }
    let task_managers = per_node
        .into_iter()
        .enumerate()
        .map(|(index, (node, count))| {
            let name = format!("{base}-taskmanager-{index}");
            let body = deployment(
                &name,
                "taskmanager",
                count,
                &[node],
                json!({
                    "name": "taskmanager",
                    "image": spec.image,
                    "args": ["taskmanager"],
                    "env": env,
                    "ports": [{"name": "data", "containerPort": 6121}],
                    "resources": container_resources(&spec.task_manager),
                }),
            );
            (name, body)
        })
        .collect();

    StandaloneObjects {
        job_manager: (jm_name, job_manager),
        service: (rpc_service, service),
        task_managers,
    }
}

/// The savepoint the operator took when it suspended a FlinkDeployment, once it has.
pub fn suspended_savepoint_path(object: &DynamicObject) -> Option<String> {
    let status = object.data.get("status")?;
    let suspended = status.pointer("/lifecycleState").and_then(Value::as_str) == Some("SUSPENDED");
    if !suspended {
        return None;
    }
    // Operator ≥ 1.10 reports `upgradeSavepointPath`; older ones the last savepoint.
    status
        .pointer("/jobStatus/upgradeSavepointPath")
        .or_else(|| status.pointer("/jobStatus/savepointInfo/lastSavepoint/location"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The site's nodes and foreign pods, converted with the scheduler's kubectl-JSON rules (so
/// quantities and pod requests follow Kubernetes exactly). Objects that do not convert are
/// left out with a warning naming them; one bad object must not blind the controller.
pub fn snapshot_from(site: &SiteId, nodes: &[Arc<K8sNode>], pods: &[Arc<Pod>]) -> SiteSnapshot {
    let source = format!("site {site} watch");
    let mut model_nodes = Vec::with_capacity(nodes.len());
    for node in nodes {
        match serde_json::to_string(node.as_ref()) {
            Ok(json) => match scheduler::input::kube_objects::parse_node_list(&source, &json) {
                Ok(parsed) => model_nodes.extend(parsed),
                Err(error) => {
                    tracing::warn!(%site, node = %node.name_any(), %error, "node skipped")
                }
            },
            Err(error) => tracing::warn!(%site, node = %node.name_any(), %error, "node skipped"),
        }
    }
    model_nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut running_pods = Vec::new();
    for pod in pods {
        if pod.labels().contains_key(LABEL_JOB) {
            continue;
        }
        match serde_json::to_string(pod.as_ref()) {
            Ok(json) => match scheduler::input::kube_objects::parse_pod_list(&source, &json) {
                Ok(parsed) => running_pods.extend(parsed),
                Err(error) => tracing::warn!(%site, pod = %pod.name_any(), %error, "pod skipped"),
            },
            Err(error) => tracing::warn!(%site, pod = %pod.name_any(), %error, "pod skipped"),
        }
    }
    running_pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    SiteSnapshot {
        id: site.clone(),
        nodes: model_nodes,
        running_pods,
    }
}

/// twinsite's jobs as their pods show them. A job is `Running` when its JobManager and every
/// TaskManager pod run on Ready nodes; `Failed` when the JobManager pod failed or its node
/// is NotReady; `Restarting` while pods are pending, crash-looping, or missing a JobManager.
/// Checkpoints are not visible here (`None`): the controller reads them from HDFS.
pub fn jobs_from(nodes: &[Arc<K8sNode>], pods: &[Arc<Pod>]) -> Vec<JobObservation> {
    let ready: BTreeSet<String> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|n| n.name_any())
        .collect();
    let mut groups: BTreeMap<(JobId, u64), Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        let labels = pod.labels();
        let (Some(label), Some(generation)) = (
            labels.get(LABEL_JOB),
            labels
                .get(LABEL_GENERATION)
                .and_then(|g| g.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let job = match pod.annotations().get(ANNOTATION_JOB_ID) {
            Some(id) => JobId(id.clone()),
            None => JobId::new(&pod.namespace().unwrap_or_default(), label),
        };
        groups.entry((job, generation)).or_default().push(pod);
    }
    groups
        .into_iter()
        .map(|((job, generation), pods)| {
            let role = |pod: &Pod| match pod.labels().get(LABEL_COMPONENT).map(String::as_str) {
                Some("jobmanager") => Some(PodRole::Jobmanager),
                Some("taskmanager") => Some(PodRole::Taskmanager),
                _ => None,
            };
            let phase = |pod: &Pod| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default()
            };
            let node = |pod: &Pod| pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let restarts: i64 = pods
                .iter()
                .flat_map(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.clone())
                        .unwrap_or_default()
                })
                .map(|c| i64::from(c.restart_count))
                .sum();
            let waiting = |pod: &Pod| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_some()))
                    })
            };
            let on_ready_node = |pod: &Pod| node(pod).is_some_and(|n| ready.contains(&n));
            let job_managers: Vec<&&Pod> = pods
                .iter()
                .filter(|p| role(p) == Some(PodRole::Jobmanager))
                .collect();
            let task_managers: Vec<&&Pod> = pods
                .iter()
                .filter(|p| role(p) == Some(PodRole::Taskmanager))
                .collect();
            let state = if job_managers
                .iter()
                .any(|p| phase(p) == "Failed" || (node(p).is_some() && !on_ready_node(p)))
            {
                JobState::Failed
            } else if !job_managers.is_empty()
                && job_managers.iter().all(|p| phase(p) == "Succeeded")
            {
                JobState::Finished
            } else if !job_managers.is_empty()
                && !task_managers.is_empty()
                && job_managers
                    .iter()
                    .chain(task_managers.iter())
                    .all(|p| phase(p) == "Running" && on_ready_node(p) && !waiting(p))
            {
                JobState::Running
            } else if job_managers.is_empty()
                || pods
                    .iter()
                    .any(|p| matches!(phase(p).as_str(), "Pending" | "Running" | "Failed"))
            {
                JobState::Restarting
            } else {
                JobState::Unknown
            };
            let nodes: BTreeSet<String> = pods.iter().filter_map(|p| node(p)).collect();
            JobObservation {
                job,
                generation,
                state,
                nodes: nodes.into_iter().collect(),
                restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
                latest_completed_checkpoint: None,
            }
        })
        .collect()
}
