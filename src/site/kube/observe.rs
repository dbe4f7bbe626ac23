//! What a Kubernetes site reports, built from its reflectors' stores: nodes and foreign pods
//! (`snapshot_from`), and twinsite's job generations with their state (`observe_generations`)
//! from their pods and, in FlinkDeployment mode, the operator's `status.jobStatus`. The
//! checkpoints of each generation are found by [`CheckpointFinder`] in the site's storage.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use hdfs_sync::{Storage, StorageUrl};
use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use kube::ResourceExt;
use kube::api::DynamicObject;
use scheduler::model::{JobId, PodRole, SiteId, SiteSnapshot};
use serde_json::Value;

use super::objects::{
    ANNOTATION_CHECKPOINT_DIR, ANNOTATION_JOB_ID, LABEL_COMPONENT, LABEL_EPOCH, LABEL_GENERATION,
    LABEL_JOB,
};
use crate::site::{CheckpointRef, JobObservation, JobState, flink_job_id};

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

/// What the operator says about one FlinkDeployment (`status.jobStatus`), as far as twinsite
/// uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorView {
    pub state: Option<JobState>,
    /// `jobStatus.checkpointInfo.lastCheckpoint.timeStamp` (ms): moves when Flink completed a
    /// checkpoint, so the checkpoint directory is worth listing again.
    pub last_checkpoint_ms: Option<i64>,
    /// The newest savepoint the operator knows (`savepointInfo.lastSavepoint` or the
    /// `upgradeSavepointPath` of a suspend) with its time (ms).
    pub savepoint: Option<(String, Option<i64>)>,
}

/// One generation as the site's objects show it, before its checkpoints are looked up.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedGeneration {
    pub observation: JobObservation,
    /// The checkpoint directory its objects carry (`twinsite.io/checkpoint-dir`).
    pub checkpoint_dir: Option<String>,
    pub operator: Option<OperatorView>,
}

fn generation_label(labels: &BTreeMap<String, String>) -> Option<u64> {
    labels.get(LABEL_GENERATION).and_then(|g| g.parse().ok())
}

fn epoch_label(labels: &BTreeMap<String, String>) -> Option<u64> {
    labels.get(LABEL_EPOCH).and_then(|e| e.parse().ok())
}

fn job_of(
    namespace: Option<String>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<JobId> {
    match annotations.get(ANNOTATION_JOB_ID) {
        Some(id) if id.split_once('/').is_some() => Some(JobId(id.clone())),
        _ => Some(JobId::new(
            &namespace.unwrap_or_default(),
            labels.get(LABEL_JOB)?,
        )),
    }
}

/// The operator's job state in twinsite's terms: `None` while it reports none.
pub fn operator_view(object: &DynamicObject) -> OperatorView {
    let status = object.data.get("status");
    let text = |pointer: &str| {
        status
            .and_then(|s| s.pointer(pointer))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let number = |pointer: &str| {
        status
            .and_then(|s| s.pointer(pointer))
            .and_then(Value::as_i64)
    };
    let lifecycle = text("/lifecycleState");
    let deployment = text("/jobManagerDeploymentStatus");
    let state = match (
        lifecycle.as_deref(),
        deployment.as_deref(),
        text("/jobStatus/state").as_deref(),
    ) {
        (Some("FAILED"), _, _) | (_, Some("ERROR"), _) => Some(JobState::Failed),
        // Flink gave up, or someone cancelled it: only a relaunch brings it back.
        (_, _, Some("FAILED" | "CANCELED")) => Some(JobState::Failed),
        (_, _, Some("FINISHED")) => Some(JobState::Finished),
        (_, _, Some("RUNNING")) => Some(JobState::Running),
        (
            _,
            _,
            Some(
                "RESTARTING" | "FAILING" | "INITIALIZING" | "CREATED" | "RECONCILING"
                | "CANCELLING",
            ),
        ) => Some(JobState::Restarting),
        // Suspended on purpose (a stop with savepoint), or a state this code does not know.
        (_, _, Some(_)) => Some(JobState::Unknown),
        (_, _, None) => None,
    };
    let savepoint = match text("/jobStatus/savepointInfo/lastSavepoint/location") {
        Some(location) => Some((
            location,
            number("/jobStatus/savepointInfo/lastSavepoint/timeStamp"),
        )),
        None => text("/jobStatus/upgradeSavepointPath").map(|p| (p, None)),
    };
    OperatorView {
        state,
        last_checkpoint_ms: number("/jobStatus/checkpointInfo/lastCheckpoint/timeStamp"),
        savepoint,
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

/// twinsite's jobs as their pods show them (no checkpoints: see [`observe_generations`]).
pub fn jobs_from(nodes: &[Arc<K8sNode>], pods: &[Arc<Pod>]) -> Vec<JobObservation> {
    observe_generations(nodes, pods, &[])
        .into_iter()
        .map(|g| g.observation)
        .collect()
}

/// Every generation of every twinsite job in the site, from its pods and (FlinkDeployment
/// mode) its FlinkDeployment.
///
/// From pods: `Failed` when the JobManager pod failed or its node is NotReady (a lost node
/// shows there first); `Running` when the JobManager and every TaskManager pod run on Ready
/// nodes; `Restarting` while pods are pending, crash-looping, or missing a JobManager. The
/// operator's word (`status.jobStatus.state`, `lifecycleState`) decides what pods cannot
/// tell: a job Flink gave up on (`Failed`), a finished one, one restarting inside running
/// pods. A FlinkDeployment without pods yet is `Restarting` (being deployed).
pub fn observe_generations(
    nodes: &[Arc<K8sNode>],
    pods: &[Arc<Pod>],
    flink_deployments: &[Arc<DynamicObject>],
) -> Vec<ObservedGeneration> {
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
    #[derive(Default)]
    struct Group<'a> {
        pods: Vec<&'a Pod>,
        operator: Option<OperatorView>,
        checkpoint_dir: Option<String>,
        epoch: Option<u64>,
    }
    let mut groups: BTreeMap<(JobId, u64), Group> = BTreeMap::new();
    for object in flink_deployments {
        let (Some(generation), Some(job)) = (
            generation_label(object.labels()),
            job_of(object.namespace(), object.labels(), object.annotations()),
        ) else {
            continue;
        };
        if object.labels().get(LABEL_JOB).is_none() {
            continue;
        }
        let group = groups.entry((job, generation)).or_default();
        group.operator = Some(operator_view(object));
        group.epoch = group.epoch.or_else(|| epoch_label(object.labels()));
        group.checkpoint_dir = object.annotations().get(ANNOTATION_CHECKPOINT_DIR).cloned();
    }
    for pod in pods {
        let labels = pod.labels();
        if !labels.contains_key(LABEL_JOB) {
            continue;
        }
        let (Some(generation), Some(job)) = (
            generation_label(labels),
            job_of(pod.namespace(), labels, pod.annotations()),
        ) else {
            continue;
        };
        let group = groups.entry((job, generation)).or_default();
        if group.checkpoint_dir.is_none() {
            group.checkpoint_dir = pod.annotations().get(ANNOTATION_CHECKPOINT_DIR).cloned();
        }
        group.epoch = group.epoch.or_else(|| epoch_label(labels));
        group.pods.push(pod);
    }
    groups
        .into_iter()
        .map(|((job, generation), group)| {
            let pods = &group.pods;
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
            let from_pods = if job_managers
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
            let state = match group.operator.as_ref().and_then(|o| o.state) {
                // No operator view: the pods alone.
                None => from_pods,
                // A lost JobManager node shows in the pods before the operator notices.
                Some(_) if from_pods == JobState::Failed => JobState::Failed,
                Some(JobState::Running) => match from_pods {
                    JobState::Running => JobState::Running,
                    _ => JobState::Restarting,
                },
                Some(operator) => operator,
            };
            let nodes: BTreeSet<String> = pods.iter().filter_map(|p| node(p)).collect();
            ObservedGeneration {
                observation: JobObservation {
                    job,
                    generation,
                    state,
                    nodes: nodes.into_iter().collect(),
                    restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
                    latest_completed_checkpoint: None,
                    epoch: group.epoch,
                },
                checkpoint_dir: group.checkpoint_dir,
                operator: group.operator,
            }
        })
        .collect()
}

/// The site's storage (its HDFS) where it looks for checkpoints: `root` bounds every path a
/// (hostile) annotation or operator status may name.
#[derive(Clone)]
pub struct CheckpointStorage {
    pub root: StorageUrl,
    pub storage: Arc<dyn Storage>,
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStorage")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
struct Known {
    scanned_at: Option<Instant>,
    /// The operator's last-checkpoint time at the last scan.
    hint: Option<i64>,
    checkpoint: Option<CheckpointRef>,
    /// A savepoint the operator reported, with its checkpoint id once read.
    savepoint: Option<(String, Option<CheckpointRef>)>,
}

/// Finds each generation's newest complete checkpoint in the site's storage (hdfs-sync's
/// discovery: `<checkpoint dir>/<flink job id>/chk-N/_metadata`), and the savepoints the
/// operator reports (their checkpoint id read from their `_metadata`). A directory is listed
/// again at most every `poll`, sooner when the operator reports a newer checkpoint. Storage
/// errors never fail a read: the last known checkpoint stays and a warning names the path.
pub struct CheckpointFinder {
    storage: Option<CheckpointStorage>,
    poll: Duration,
    scan_timeout: Duration,
    known: Mutex<HashMap<(JobId, u64), Known>>,
}

/// Listings running at once; HDFS answers each in milliseconds.
const PARALLEL_SCANS: usize = 16;

impl CheckpointFinder {
    pub fn new(storage: Option<CheckpointStorage>, poll: Duration) -> CheckpointFinder {
        CheckpointFinder {
            storage,
            poll,
            scan_timeout: Duration::from_secs(10),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Fills `latest_completed_checkpoint` of every generation it can.
    pub async fn fill(&self, generations: &mut [ObservedGeneration]) {
        let Some(storage) = &self.storage else {
            return;
        };
        let now = Instant::now();
        let mut work = Vec::new();
        {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            let live: BTreeSet<(JobId, u64)> = generations
                .iter()
                .map(|g| (g.observation.job.clone(), g.observation.generation))
                .collect();
            known.retain(|key, _| live.contains(key));
            for (index, generation) in generations.iter().enumerate() {
                let key = (
                    generation.observation.job.clone(),
                    generation.observation.generation,
                );
                let entry = known.entry(key).or_default();
                let hint = generation
                    .operator
                    .as_ref()
                    .and_then(|o| o.last_checkpoint_ms);
                let due = entry
                    .scanned_at
                    .is_none_or(|at| now.duration_since(at) >= self.poll)
                    || hint > entry.hint;
                let savepoint = generation
                    .operator
                    .as_ref()
                    .and_then(|o| o.savepoint.clone());
                // A new savepoint is read at once; one whose read failed, again when due.
                let new_savepoint = savepoint
                    .as_ref()
                    .filter(|(location, _)| match &entry.savepoint {
                        Some((known, read)) => known != location || (due && read.is_none()),
                        None => true,
                    })
                    .cloned();
                if due || new_savepoint.is_some() {
                    work.push((index, due, hint, new_savepoint));
                }
            }
        }
        let results: Vec<_> = futures::stream::iter(work)
            .map(|(index, due, hint, savepoint)| {
                let generation = &generations[index];
                async move {
                    let checkpoint = match (due, &generation.checkpoint_dir) {
                        (true, Some(dir)) => Some(
                            self.latest_checkpoint(storage, dir, &generation.observation)
                                .await,
                        ),
                        _ => None,
                    };
                    let savepoint = match savepoint {
                        Some((location, at)) => Some((
                            location.clone(),
                            self.read_savepoint(storage, &location, at).await,
                        )),
                        None => None,
                    };
                    (index, due, hint, checkpoint, savepoint)
                }
            })
            .buffer_unordered(PARALLEL_SCANS)
            .collect()
            .await;
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, due, hint, checkpoint, savepoint) in results {
            let observation = &generations[index].observation;
            let entry = known
                .entry((observation.job.clone(), observation.generation))
                .or_default();
            if due {
                entry.scanned_at = Some(now);
                entry.hint = hint;
            }
            // `Some(Err)`: the listing failed; the last known checkpoint stays.
            if let Some(Ok(found)) = checkpoint {
                entry.checkpoint = found;
            }
            if let Some((location, read)) = savepoint {
                entry.savepoint = Some((location, read));
            }
        }
        for generation in generations.iter_mut() {
            let observation = &mut generation.observation;
            let Some(entry) = known.get(&(observation.job.clone(), observation.generation)) else {
                continue;
            };
            let savepoint = entry.savepoint.as_ref().and_then(|(_, c)| c.clone());
            observation.latest_completed_checkpoint = match (entry.checkpoint.clone(), savepoint) {
                (Some(checkpoint), Some(savepoint)) if savepoint.id > checkpoint.id => {
                    Some(savepoint)
                }
                (Some(checkpoint), _) => Some(checkpoint),
                (None, savepoint) => savepoint,
            };
        }
    }

    fn confined(&self, storage: &CheckpointStorage, uri: &str) -> Result<StorageUrl, String> {
        let url = StorageUrl::parse(uri).map_err(|e| e.to_string())?;
        if !url.starts_with(&storage.root) {
            return Err(format!(
                "{uri} is outside the site's storage {}",
                storage.root.to_flink_string()
            ));
        }
        Ok(url)
    }

    /// `Ok(None)`: no complete checkpoint yet; `Err`: the directory could not be read.
    async fn latest_checkpoint(
        &self,
        storage: &CheckpointStorage,
        dir: &str,
        observation: &JobObservation,
    ) -> Result<Option<CheckpointRef>, ()> {
        let job_id = flink_job_id(&observation.job, observation.generation);
        let warn = |error: String| {
            tracing::warn!(job = %observation.job, generation = observation.generation,
                checkpoint_dir = dir, %error, "checkpoints of this generation not read");
        };
        let root = match self.confined(storage, dir) {
            Ok(root) => root,
            Err(error) => {
                warn(error);
                return Err(());
            }
        };
        let found = tokio::time::timeout(
            self.scan_timeout,
            hdfs_sync::discovery::discover_job(storage.storage.as_ref(), &root, &job_id),
        )
        .await;
        match found {
            Ok(Ok(found)) => Ok(found.latest().map(|c| CheckpointRef {
                id: c.id,
                // In the launch's own spelling, as the restore path and replication take it.
                path: format!("{}/{job_id}/chk-{}", dir.trim_end_matches('/'), c.id),
                completed_at: c
                    .completed_at
                    .map(DateTime::<Utc>::from)
                    .unwrap_or_else(Utc::now),
            })),
            Ok(Err(error)) => {
                warn(error.to_string());
                Err(())
            }
            Err(_) => {
                warn(format!("listing took longer than {:?}", self.scan_timeout));
                Err(())
            }
        }
    }

    /// A savepoint the operator reported, as a checkpoint: its id from its `_metadata`.
    async fn read_savepoint(
        &self,
        storage: &CheckpointStorage,
        location: &str,
        at_ms: Option<i64>,
    ) -> Option<CheckpointRef> {
        let read = async {
            let dir = self.confined(storage, location)?;
            let metadata = dir.join("_metadata").map_err(|e| e.to_string())?;
            let file = storage
                .storage
                .read_bounded(&metadata, hdfs_sync::metadata::MAX_METADATA_BYTES)
                .await
                .map_err(|e| e.to_string())?;
            let parsed = hdfs_sync::CheckpointMetadata::parse(&file.bytes, location)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(parsed.checkpoint_id)
        };
        match tokio::time::timeout(self.scan_timeout, read).await {
            Ok(Ok(id)) => Some(CheckpointRef {
                id,
                path: location.to_owned(),
                completed_at: at_ms
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                    .unwrap_or_else(Utc::now),
            }),
            Ok(Err(error)) => {
                tracing::warn!(savepoint = location, %error, "savepoint reported by the operator not read");
                None
            }
            Err(_) => {
                tracing::warn!(
                    savepoint = location,
                    "savepoint reported by the operator: read timed out"
                );
                None
            }
        }
    }
}
