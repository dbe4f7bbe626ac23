//! The Kubernetes objects of one launch, built without I/O: what `KubeSite::launch` applies
//! and what `twinsite render` prints come from [`launch_objects`] alone.
//!
//! Two shapes (`LaunchMode`): a `FlinkDeployment` for the Apache Flink Kubernetes Operator
//! (`flink.apache.org/v1beta1`, valid for its CRD and `DefaultValidator`), or standalone
//! JobManager/TaskManager Deployments plus the JobManager's Service. Both
//!
//! - set the Flink job id (`$internal.pipeline.job-id`), so checkpoints land in
//!   `<checkpoint dir>/<flink job id>/chk-N` where replication and the failover engine look;
//! - put checkpoints, savepoints (`<checkpoint dir>/savepoints`, where the controller's own
//!   stop-with-savepoint writes too) and Flink's HA data (`<checkpoint dir>/ha`) under the
//!   site's storage;
//! - enable Flink's Kubernetes HA *inside the site*, with the generation's object name as
//!   cluster id: a JobManager container that restarts resumes from the latest checkpoint of
//!   this generation (HA ConfigMaps), not from the launch-time restore path, while a new
//!   generation (another cluster id) never sees an old generation's HA data;
//! - carry liveness/readiness probes, the labels `twinsite.io/job`, `/generation`, `/epoch`,
//!   `/site`, `/namespace` and the annotations `twinsite.io/job-id`, `/checkpoint-dir` on
//!   every object and pod;
//! - give every pod `NoExecute` tolerations for `node.kubernetes.io/unreachable` and
//!   `node.kubernetes.io/not-ready` with the policy's `detection.podEvictionTimeout`.

use std::collections::{BTreeMap, BTreeSet};

use scheduler::model::{JobId, Resources};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::KubeSiteConfig;
use crate::site::{LaunchMode, LaunchSpec, SiteError, flink_job_id};

pub const LABEL_JOB: &str = "twinsite.io/job";
pub const LABEL_GENERATION: &str = "twinsite.io/generation";
/// The site's epoch when the generation was launched (`LaunchSpec::epoch`).
pub const LABEL_EPOCH: &str = "twinsite.io/epoch";
pub const LABEL_SITE: &str = "twinsite.io/site";
/// The job's own namespace (objects may live in the site's shared namespace).
pub const LABEL_NAMESPACE: &str = "twinsite.io/namespace";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "twinsite";
/// Flink's own pod label for the role (`jobmanager`/`taskmanager`); the operator sets it on
/// native pods and twinsite sets it on standalone ones, so both read the same way.
pub const LABEL_COMPONENT: &str = "component";
/// The exact `namespace/name` job id: label values cannot hold a `/`.
pub const ANNOTATION_JOB_ID: &str = "twinsite.io/job-id";
/// The generation's `state.checkpoints.dir`: where the site looks for its checkpoints.
pub const ANNOTATION_CHECKPOINT_DIR: &str = "twinsite.io/checkpoint-dir";
/// Port name of the JobManager's REST endpoint on its Service.
pub const REST_PORT_NAME: &str = "rest";
/// The container name the operator merges pod templates into.
pub const FLINK_MAIN_CONTAINER: &str = "flink-main-container";
/// Taints a node gets when it stops answering; pods leave after `tolerationSeconds`.
pub const NODE_LOSS_TAINTS: [&str; 2] = [
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/not-ready",
];

/// `DefaultValidator.FORBIDDEN_CONF_KEYS`.
pub const OPERATOR_FORBIDDEN_KEYS: [&str; 3] = [
    "kubernetes.namespace",
    "kubernetes.cluster-id",
    "high-availability.cluster-id",
];

const JOB_MANAGER_RPC_PORT: u16 = 6123;
const BLOB_PORT: u16 = 6124;
const REST_PORT: u16 = 8081;
/// Fixed (Flink's default is a random port) so the TaskManager liveness probe has a target.
const TASK_MANAGER_RPC_PORT: u16 = 6122;
const TASK_MANAGER_DATA_PORT: u16 = 6121;

/// The Flink Kubernetes Operator's custom resource.
pub fn flink_deployment_resource() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "flink.apache.org".into(),
        version: "v1beta1".into(),
        api_version: "flink.apache.org/v1beta1".into(),
        kind: "FlinkDeployment".into(),
        plural: "flinkdeployments".into(),
    }
}

/// Which API an object of a launch goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    FlinkDeployment,
    Deployment,
    Service,
}

/// One object of a launch, as it is applied (server-side apply body).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchObject {
    pub kind: ObjectKind,
    pub name: String,
    pub body: Value,
}

/// Every object of one launch, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchObjects {
    pub namespace: String,
    /// `<name>-g<generation>`: the FlinkDeployment's name and Flink's cluster id.
    pub base: String,
    pub objects: Vec<LaunchObject>,
}

impl LaunchObjects {
    /// The bodies, in apply order.
    pub fn bodies(&self) -> Vec<&Value> {
        self.objects.iter().map(|o| &o.body).collect()
    }
}

/// The objects a launch of `spec` applies in a site configured as `config`, after checking
/// what every launch relies on (`LaunchSpec::validate_for`) and what the operator needs
/// (its TaskManager count must equal the plan's). Errors name the field.
///
/// The standalone Service is owned by the JobManager Deployment: `launch` adds that
/// `ownerReference` (the Deployment's uid exists only once it is applied), the one field a
/// rendered Service lacks.
pub fn launch_objects(
    spec: &LaunchSpec,
    config: &KubeSiteConfig,
) -> Result<LaunchObjects, SiteError> {
    spec.validate_for(&config.site)?;
    let invalid = |reason: String| SiteError::Invalid {
        site: config.site.clone(),
        object: format!("launch of job {} generation {}", spec.job, spec.generation),
        reason,
    };
    if config.mode == LaunchMode::FlinkDeployment {
        // DefaultValidator.validateFlinkVersion: `FlinkVersion.isSupported` (1.15 and later).
        match flink_version(&spec.flink_version) {
            Some((major, minor)) if (major, minor) >= (1, 15) => {}
            _ => {
                return Err(invalid(format!(
                    "flinkVersion {:?}: the Flink Kubernetes Operator runs v1_15 and later",
                    spec.flink_version
                )));
            }
        }
        // DefaultValidator.validateFlinkDeploymentConfig: keys the operator sets itself.
        for key in OPERATOR_FORBIDDEN_KEYS {
            if spec.flink_configuration.contains_key(key) {
                return Err(invalid(format!(
                    "flinkConfiguration {key}: the Flink Kubernetes Operator sets it itself and refuses a FlinkDeployment that does"
                )));
            }
        }
        // Flink's resource manager starts a TaskManager per `slots` slots the job asks for:
        // at least ceil(parallelism / slots), more when the job's plan needs more slots than
        // its parallelism (the placement is sized for the plan). Fewer planned is refused.
        let started = spec.parallelism.div_ceil(spec.task_slots) as usize;
        let planned = spec.task_manager_nodes().len();
        if planned < started {
            return Err(invalid(format!(
                "parallelism {} with {} slots starts {started} TaskManagers, but the placement has {planned}",
                spec.parallelism, spec.task_slots
            )));
        }
    }
    let namespace = object_namespace(&spec.job, config).to_owned();
    let base = object_name(&spec.job, spec.generation, config);
    let objects = match config.mode {
        LaunchMode::FlinkDeployment => vec![LaunchObject {
            kind: ObjectKind::FlinkDeployment,
            name: base.clone(),
            body: flink_deployment(spec, config),
        }],
        LaunchMode::Standalone => standalone_objects(spec, config),
    };
    Ok(LaunchObjects {
        namespace,
        base,
        objects,
    })
}

/// Where a job's objects live: the site's namespace when the policy sets one
/// (`sites[].kubernetes.namespace`), else the job's own.
pub fn object_namespace<'a>(job: &'a JobId, config: &'a KubeSiteConfig) -> &'a str {
    match &config.namespace {
        Some(namespace) => namespace,
        None => job_namespace(job),
    }
}

fn job_namespace(job: &JobId) -> &str {
    job.0.split_once('/').map_or("", |(namespace, _)| namespace)
}

fn job_name(job: &JobId) -> &str {
    job.0
        .split_once('/')
        .map_or(job.0.as_str(), |(_, name)| name)
}

/// The label selector of every object of `job` (of one generation with `Some`).
pub fn job_selector(job: &JobId, generation: Option<u64>, config: &KubeSiteConfig) -> String {
    let mut selector = format!("{LABEL_JOB}={}", label_value(job_name(job)));
    if config.namespace.is_some() {
        // Jobs of several namespaces share one: the name alone is not the job.
        selector.push_str(&format!(
            ",{LABEL_NAMESPACE}={}",
            label_value(job_namespace(job))
        ));
    }
    if let Some(generation) = generation {
        selector.push_str(&format!(",{LABEL_GENERATION}={generation}"));
    }
    selector
}

/// Name of the objects of one generation (and Flink's cluster id): [`object_base`], or in a
/// namespace shared by several job namespaces `<namespace>-<name>-<hash>-g<generation>`.
pub fn object_name(job: &JobId, generation: u64, config: &KubeSiteConfig) -> String {
    if config.namespace.is_none() {
        return object_base(job, generation);
    }
    let suffix = format!("-g{generation}");
    let mut clean = clean_name(&format!("{}-{}", job_namespace(job), job_name(job)));
    clean.truncate(MAX_OBJECT_NAME - suffix.len() - 7);
    format!(
        "{}-{}{suffix}",
        clean.trim_end_matches('-'),
        short_hash(&job.0)
    )
}

/// The operator's `DefaultValidator` allows at most 45 characters (`DEPLOYMENT_NAME_PATTERN`).
const MAX_OBJECT_NAME: usize = 45;

fn clean_name(name: &str) -> String {
    let mut clean: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert_str(0, "j-");
    }
    clean
}

/// Name of the objects of one generation in the job's own namespace: `<name>-g<generation>`,
/// a DNS-1035 label short enough for the operator (at most 45 characters) and for derived
/// pod names.
pub fn object_base(job: &JobId, generation: u64) -> String {
    let name = job_name(job);
    let suffix = format!("-g{generation}");
    let mut clean = clean_name(name);
    let room = MAX_OBJECT_NAME - suffix.len();
    // A shortened or rewritten name gets a hash of the full id, so two jobs never share one.
    if clean.len() > room || clean != name {
        clean.truncate(room - 7);
        clean = format!("{}-{}", clean.trim_end_matches('-'), short_hash(&job.0));
    }
    format!("{}{suffix}", clean.trim_end_matches('-'))
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..3]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A name as a label value (at most 63 characters; long or rewritten names keep a hash
/// suffix).
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

fn labels(spec: &LaunchSpec, config: &KubeSiteConfig) -> Value {
    json!({
        LABEL_JOB: label_value(job_name(&spec.job)),
        LABEL_NAMESPACE: label_value(job_namespace(&spec.job)),
        LABEL_GENERATION: spec.generation.to_string(),
        LABEL_EPOCH: spec.epoch.to_string(),
        LABEL_SITE: label_value(&config.site.0),
        LABEL_MANAGED_BY: MANAGED_BY,
    })
}

fn annotations(spec: &LaunchSpec) -> Value {
    json!({
        ANNOTATION_JOB_ID: spec.job.0,
        ANNOTATION_CHECKPOINT_DIR: spec.checkpoint_dir,
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

/// The job's own tolerations, then the short `NoExecute` ones for lost nodes. Kubernetes
/// keeps a pod on a tainted node for the smallest `tolerationSeconds` among the tolerations
/// that match, so a job's own longer toleration never outlasts the policy's.
fn tolerations(spec: &LaunchSpec, config: &KubeSiteConfig) -> Value {
    let mut all = serde_json::to_value(&spec.tolerations).unwrap_or_else(|_| json!([]));
    if let Some(list) = all.as_array_mut() {
        for key in NODE_LOSS_TAINTS {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": config.pod_eviction_timeout.as_secs(),
            }));
        }
    }
    all
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

/// `(major, minor)` of an operator version name such as `v1_20`.
fn flink_version(name: &str) -> Option<(u32, u32)> {
    let (major, minor) = name.strip_prefix('v')?.split_once('_')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Flink's Kubernetes HA switch as this Flink version spells it: `high-availability.type`
/// since 1.17 (the old key stays a deprecated alias, so Flink 2.x takes both), the short
/// value `kubernetes` since 1.16, the factory class before.
fn kubernetes_ha(version: &str) -> (&'static str, &'static str) {
    match flink_version(version) {
        Some((1, minor)) if minor < 16 => (
            "high-availability",
            "org.apache.flink.kubernetes.highavailability.KubernetesHaServicesFactory",
        ),
        Some((1, 16)) => ("high-availability", "kubernetes"),
        _ => ("high-availability.type", "kubernetes"),
    }
}

fn under(dir: &str, child: &str) -> String {
    format!("{}/{child}", dir.trim_end_matches('/'))
}

/// Where a generation's savepoints go: beside its checkpoints, as the controller's own
/// stop-with-savepoint does.
pub fn savepoint_dir(spec: &LaunchSpec) -> String {
    crate::site::savepoints_under(&spec.checkpoint_dir)
}

/// twinsite's Flink configuration over the user's: job id, checkpoint and savepoint
/// location (old and new key, so neither can point elsewhere), cadence and retention (kept
/// on cancel, so a stop never deletes the state a relaunch restores from), Kubernetes HA
/// inside the site, memory sized to the pods, slots, and the fixed TaskManager RPC port the
/// probes use. Standalone mode also names the HA cluster id and namespace, which the
/// operator sets itself (and forbids in a FlinkDeployment).
pub fn flink_configuration(spec: &LaunchSpec, config: &KubeSiteConfig) -> BTreeMap<String, String> {
    let mut conf = spec.flink_configuration.clone();
    let (ha_key, ha_value) = kubernetes_ha(&spec.flink_version);
    let mut ours = vec![
        (
            "$internal.pipeline.job-id",
            flink_job_id(&spec.job, spec.generation),
        ),
        ("state.checkpoints.dir", spec.checkpoint_dir.clone()),
        ("execution.checkpointing.dir", spec.checkpoint_dir.clone()),
        ("state.savepoints.dir", savepoint_dir(spec)),
        ("execution.checkpointing.savepoint-dir", savepoint_dir(spec)),
        (
            "execution.checkpointing.interval",
            format!("{}ms", spec.checkpoint_interval_ms),
        ),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION".into(),
        ),
        (ha_key, ha_value.into()),
        (
            "high-availability.storageDir",
            under(&spec.checkpoint_dir, "ha"),
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
        ("taskmanager.rpc.port", TASK_MANAGER_RPC_PORT.to_string()),
    ];
    if config.mode == LaunchMode::Standalone {
        ours.push((
            "kubernetes.cluster-id",
            object_name(&spec.job, spec.generation, config),
        ));
        ours.push((
            "kubernetes.namespace",
            object_namespace(&spec.job, config).to_owned(),
        ));
    }
    for (key, value) in ours {
        conf.insert(key.to_owned(), value);
    }
    conf
}

/// The job's environment variables (its site override's `env`) as a container's `env`, by
/// name.
fn env_list(spec: &LaunchSpec) -> Value {
    Value::Array(
        spec.env
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

fn job_manager_probes() -> (Value, Value) {
    (
        // The RPC port answers as long as the JobManager process lives.
        json!({"tcpSocket": {"port": JOB_MANAGER_RPC_PORT}, "initialDelaySeconds": 30,
               "periodSeconds": 10, "failureThreshold": 6}),
        // REST answers once the dispatcher is up.
        json!({"httpGet": {"path": "/overview", "port": REST_PORT}, "initialDelaySeconds": 10,
               "periodSeconds": 10}),
    )
}

fn task_manager_liveness() -> Value {
    json!({"tcpSocket": {"port": TASK_MANAGER_RPC_PORT}, "initialDelaySeconds": 30,
           "periodSeconds": 10, "failureThreshold": 6})
}

/// The `FlinkDeployment` for one generation. TaskManagers are restricted to the planned
/// nodes; with native pods the operator cannot pin each TaskManager to its own node, so
/// the count per node is the kube-scheduler's choice within that set.
fn flink_deployment(spec: &LaunchSpec, config: &KubeSiteConfig) -> Value {
    let labels = labels(spec, config);
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
    let (liveness, readiness) = job_manager_probes();
    let mut job_manager_container = json!({
        "name": FLINK_MAIN_CONTAINER,
        "livenessProbe": liveness,
        "readinessProbe": readiness,
    });
    let mut task_manager_container = json!({
        "name": FLINK_MAIN_CONTAINER,
        "livenessProbe": task_manager_liveness(),
    });
    if !spec.env.is_empty() {
        // In each role's own template: the operator merges the shared pod template into the
        // role's by array position unless configured to merge by name, so a shared entry
        // could land on another container.
        job_manager_container["env"] = env_list(spec);
        task_manager_container["env"] = env_list(spec);
    }
    json!({
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {
            "name": object_name(&spec.job, spec.generation, config),
            "namespace": object_namespace(&spec.job, config),
            "labels": labels,
            "annotations": annotations(spec),
        },
        "spec": {
            "image": spec.image,
            "flinkVersion": spec.flink_version,
            "serviceAccount": config.service_account,
            "flinkConfiguration": flink_configuration(spec, config),
            "podTemplate": {
                "metadata": {
                    "labels": labels,
                    "annotations": annotations(spec),
                },
                "spec": {"tolerations": tolerations(spec, config)},
            },
            "jobManager": {
                "replicas": 1,
                "resource": resource(&spec.job_manager),
                "podTemplate": {"spec": {
                    "affinity": pin_to(&jm_node),
                    "containers": [job_manager_container],
                }},
            },
            "taskManager": {
                "resource": resource(&spec.task_manager),
                "podTemplate": {"spec": {
                    "affinity": pin_to(&tm_nodes),
                    "containers": [task_manager_container],
                }},
            },
            "job": job,
        }
    })
}

/// Standalone application mode: the JobManager runs `standalone-job` with the remote jar
/// (`--jars`, Flink ≥ 1.19), the fixed job id and `--fromSavepoint` when restoring (Flink
/// takes a checkpoint from its HA store over that path, so a restarted container resumes
/// from the latest checkpoint); every pod is pinned to its planned node, one TaskManager
/// Deployment per planned node with that node's count.
fn standalone_objects(spec: &LaunchSpec, config: &KubeSiteConfig) -> Vec<LaunchObject> {
    let namespace = object_namespace(&spec.job, config);
    let base = object_name(&spec.job, spec.generation, config);
    let labels = labels(spec, config);
    let rpc_service = format!("{base}-rest");
    let annotations = annotations(spec);

    let mut properties = format!("jobmanager.rpc.address: {rpc_service}\n");
    for (key, value) in flink_configuration(spec, config) {
        properties.push_str(&format!("{key}: {value}\n"));
    }
    let mut env = json!([{"name": "FLINK_PROPERTIES", "value": properties}]);
    if let (Some(all), Value::Array(job_env)) = (env.as_array_mut(), env_list(spec)) {
        all.extend(job_env);
    }

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
                        LABEL_NAMESPACE: labels[LABEL_NAMESPACE],
                        LABEL_GENERATION: labels[LABEL_GENERATION],
                        LABEL_COMPONENT: component,
                    }},
                    "template": {
                        "metadata": {"labels": pod_labels, "annotations": annotations},
                        "spec": {
                            "serviceAccountName": config.service_account,
                            "affinity": pin_to(nodes),
                            "tolerations": tolerations(spec, config),
                            "containers": [container],
                        }
                    }
                }
            })
        };

    let jm_name = format!("{base}-jobmanager");
    let jm_node: Vec<&str> = spec.job_manager_node().into_iter().collect();
    let (liveness, readiness) = job_manager_probes();
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
                {"name": "rpc", "containerPort": JOB_MANAGER_RPC_PORT},
                {"name": "blob", "containerPort": BLOB_PORT},
                {"name": REST_PORT_NAME, "containerPort": REST_PORT},
            ],
            "resources": container_resources(&spec.job_manager),
            "livenessProbe": liveness,
            "readinessProbe": readiness,
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
                LABEL_NAMESPACE: labels[LABEL_NAMESPACE],
                LABEL_GENERATION: labels[LABEL_GENERATION],
                LABEL_COMPONENT: "jobmanager",
            },
            "ports": [
                {"name": "rpc", "port": JOB_MANAGER_RPC_PORT, "targetPort": "rpc"},
                {"name": "blob", "port": BLOB_PORT, "targetPort": "blob"},
                {"name": REST_PORT_NAME, "port": REST_PORT, "targetPort": REST_PORT_NAME},
            ],
        }
    });

    let mut objects = vec![
        LaunchObject {
            kind: ObjectKind::Deployment,
            name: jm_name,
            body: job_manager,
        },
        LaunchObject {
            kind: ObjectKind::Service,
            name: rpc_service,
            body: service,
        },
    ];
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for node in spec.task_manager_nodes() {
        *per_node.entry(node).or_default() += 1;
    }
    for (index, (node, count)) in per_node.into_iter().enumerate() {
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
                "ports": [
                    {"name": "data", "containerPort": TASK_MANAGER_DATA_PORT},
                    {"name": "rpc", "containerPort": TASK_MANAGER_RPC_PORT},
                ],
                "resources": container_resources(&spec.task_manager),
                "livenessProbe": task_manager_liveness(),
            }),
        );
        objects.push(LaunchObject {
            kind: ObjectKind::Deployment,
            name,
            body,
        });
    }
    objects
}

/// Labels of the ConfigMaps Flink's Kubernetes HA writes for cluster `cluster_id`; a stop
/// deletes them with the generation (standalone mode: nothing else would).
pub fn ha_config_map_selector(cluster_id: &str) -> String {
    format!("app={cluster_id},configmap-type=high-availability")
}
