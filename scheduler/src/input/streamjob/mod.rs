//! The `StreamJob` resource (`twinsite.io/v1alpha1`): one Flink streaming job as users write
//! it, read from multi-document YAML, validated field by field, and resolved into the
//! [`JobDemand`] placement works with. `StreamJobSpec` is also the spec of the StreamJob CRD.
//!
//! ```yaml
//! apiVersion: twinsite.io/v1alpha1
//! kind: StreamJob
//! metadata: {name: orders-enrich, namespace: trade}
//! spec:
//!   priority: critical
//!   image: flink:2.0.0
//!   flinkVersion: v2_0
//!   jarURI: hdfs:///jars/orders-enrich-1.4.jar
//!   parallelism: 8
//!   jobManager: {resources: {cpu: "1", memory: 2Gi}}
//!   taskManager: {resources: {cpu: "2", memory: 4Gi}, slots: 2}
//!   checkpoints: {dir: hdfs:///flink/checkpoints/orders-enrich, interval: 60s}
//!   siteOverrides:                  # per site: its own Kafka, and where to resume reading
//!     dc-a:
//!       env: {KAFKA_BOOTSTRAP: kafka-a.dc-a:9092}
//!       args: [--start-from, "${restore.completedAt:-earliest}"]
//!     dc-b:
//!       env: {KAFKA_BOOTSTRAP: kafka-b.dc-b:9092}
//!       args: [--start-from, "${restore.completedAt:-earliest}"]
//! ```
//!
//! `siteOverrides` values are templates (`scheduler::input::template`): `${site}`,
//! `${restore.completedAt}` and `${restore.completedAtEpochMillis}`, with `:-default` for a
//! launch that restores nothing.
//!
//! A file may also hold a `List` (`kubectl get streamjobs -o yaml`) whose `items` are
//! StreamJobs. Unknown fields anywhere, including inside the Kubernetes-shaped `affinity`
//! and `tolerations`, are errors.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::common::{
    self, check_contained_path, check_labels, check_name, check_type_meta, check_uri, cpu_milli,
    decode, integer_value, positive_duration, str_at,
};
use super::error::{InputError, Problems};
use super::flink_plan::{FlinkPlan, plan_from_value};
use crate::k8s::names::qualified_name_errors;
use crate::k8s::{NodeAffinity, Quantity, Toleration};
use crate::limits::{
    MAX_JOBS_PER_FILE, MAX_JOBS_PER_TENANT, MAX_RETAINED_CHECKPOINTS, MAX_SITE_OVERRIDES,
    MAX_SLOTS_PER_TASK_MANAGER, MAX_TASK_MANAGERS_PER_JOB, MIN_CHECKPOINT_INTERVAL,
};
use crate::model::{JobDemand, JobId, Priority, Resources, SiteConstraint, SiteId, TenantId};

pub use super::common::API_VERSION;
pub const STREAM_JOB_KIND: &str = "StreamJob";

pub use crate::limits::FLINK_MAX_PARALLELISM;

/// Flink's `PipelineOptions.PARALLELISM_OVERRIDES`: a map `<job vertex id>:<parallelism>,…`
/// applied to a submitted job graph (the key the Flink operator's autoscaler writes).
pub const PARALLELISM_OVERRIDES_OPTION: &str = "pipeline.jobvertex-parallelism-overrides";

/// Most entries `spec.vertexParallelism` may hold: a job graph of more vertices than this is
/// not one job a person can review.
pub const MAX_VERTEX_OVERRIDES: usize = 1000;

/// Kubernetes reserves namespaces with this prefix for its own system components
/// (`kube-system`, `kube-public`, `kube-node-lease`); a job's objects never go there.
pub const RESERVED_NAMESPACE_PREFIX: &str = "kube-";

/// Jar locations a site can launch from: `local://` (inside the image), `file://` and
/// `hdfs://` (replicated to the peer site by twinsite).
pub const JAR_SCHEMES: [&str; 3] = ["hdfs", "file", "local"];

/// Checkpoint locations twinsite can replicate between sites.
pub const CHECKPOINT_SCHEMES: [&str; 2] = ["hdfs", "file"];

/// Flink options that the spec sets itself; writing them in `flinkConfiguration` as well
/// would let the two disagree, so each is refused with the field to use instead.
const OPTIONS_OWNED_BY_SPEC: [(&str, &str); 12] = [
    ("taskmanager.numberOfTaskSlots", "spec.taskManager.slots"),
    ("parallelism.default", "spec.parallelism"),
    (PARALLELISM_OVERRIDES_OPTION, "spec.vertexParallelism"),
    ("pipeline.max-parallelism", "spec.maxParallelism"),
    ("state.checkpoints.dir", "spec.checkpoints.dir"),
    ("execution.checkpointing.dir", "spec.checkpoints.dir"),
    (
        "execution.checkpointing.interval",
        "spec.checkpoints.interval",
    ),
    (
        "state.checkpoints.num-retained",
        "spec.checkpoints.retained",
    ),
    (
        "execution.checkpointing.num-retained",
        "spec.checkpoints.retained",
    ),
    ("state.backend.incremental", "spec.checkpoints.incremental"),
    (
        "execution.checkpointing.incremental",
        "spec.checkpoints.incremental",
    ),
    (
        "kubernetes.jobmanager.tolerations",
        "spec.placement.tolerations",
    ),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamJob {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: StreamJobSpec,
}

/// The part of Kubernetes' `ObjectMeta` a StreamJob file may carry. `name` and `namespace`
/// are required; server-set fields that `kubectl get -o yaml` prints are tolerated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// What a StreamJob asks for: the Flink job to run, its size, where it may run, how it
/// checkpoints and how twinsite relaunches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamJobSpec {
    /// Quota owner; defaults to `metadata.namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `critical`, `high`, `normal` or `best-effort`.
    pub priority: Priority,
    /// Flink container image, e.g. `flink:2.0.0`.
    pub image: String,
    /// The Flink Kubernetes Operator's version name, e.g. `v1_20`, `v2_0`.
    pub flink_version: String,
    /// The job jar: `hdfs://`, `file://` or `local://` (inside the image).
    #[serde(rename = "jarURI")]
    pub jar_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_class: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Default parallelism of the job's operators, at least 1.
    pub parallelism: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallelism: Option<u32>,
    /// Parallelism of single job vertices (operator chains) by Flink's job vertex id (32
    /// lowercase hex digits, as Flink's REST API and metrics' `task_id` print it): what
    /// right-sizing recommends per vertex. A launch renders it as Flink's
    /// `pipeline.jobvertex-parallelism-overrides`, which the Dispatcher applies to the job
    /// graph on submission, as the Flink operator's autoscaler does. Each value is
    /// 1..=`maxParallelism` (Flink's default for `parallelism` when unset); the job gets
    /// slots for the largest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vertex_parallelism: BTreeMap<String, u32>,
    /// Flink's JSON execution plan (an object, or a string holding the JSON). When its slot
    /// need is larger than `parallelism`, the plan's need sizes the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::any_json"))]
    pub plan: Option<Value>,
    pub job_manager: JobManagerSpec,
    pub task_manager: TaskManagerSpec,
    #[serde(default, skip_serializing_if = "PlacementSpec::is_default")]
    pub placement: PlacementSpec,
    /// Required unless `failover.mode` is `none`: relaunching restores from a checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointSpec>,
    #[serde(default, skip_serializing_if = "FailoverSpec::is_default")]
    pub failover: FailoverSpec,
    /// Extra Flink options (`flink-conf`), values as strings (numbers are accepted).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "common::scalar_string_map"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::scalar_string_map")
    )]
    pub flink_configuration: BTreeMap<String, String>,
    /// Settings that apply only when the job runs in one site, by site name (a site of the
    /// policy): `args` replacing `spec.args`, `flinkConfiguration` entries over
    /// `spec.flinkConfiguration`, and container `env`. Their values may name `${site}`,
    /// `${restore.completedAt}` and `${restore.completedAtEpochMillis}` (default for a fresh
    /// start: `${restore.completedAt:-earliest}`; `$$` is a literal `$`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub site_overrides: BTreeMap<String, SiteOverride>,
}

/// What changes when the job runs in one particular site, e.g. the Kafka cluster it reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteOverride {
    /// Replaces `spec.args` in this site (`[]`: no arguments); absent: `spec.args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Flink options over `spec.flinkConfiguration` in this site (these win).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "common::scalar_string_map"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::scalar_string_map")
    )]
    pub flink_configuration: BTreeMap<String, String>,
    /// Environment variables of the job's JobManager and TaskManager containers in this site.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "common::scalar_string_map"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::scalar_string_map")
    )]
    pub env: BTreeMap<String, String>,
}

/// What a launch in one site runs with: the job's settings with that site's override
/// applied and every template expanded ([`StreamJobSpec::settings_in`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteSettings {
    pub args: Vec<String>,
    pub flink_configuration: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
}

/// Environment variables a job may not set: they would replace the Flink configuration
/// twinsite writes (`FLINK_PROPERTIES` in standalone pods, `FLINK_CONF_DIR` everywhere) or
/// what twinsite tells the job itself (`TWINSITE_*`).
pub const RESERVED_ENV_NAMES: [&str; 2] = ["FLINK_PROPERTIES", "FLINK_CONF_DIR"];
pub const RESERVED_ENV_PREFIX: &str = "TWINSITE_";

impl StreamJobSpec {
    /// `spec.vertexParallelism` in the format of Flink's map options (`id:p,id:p`), or
    /// `None` when the job sets no vertex's parallelism.
    pub fn parallelism_overrides(&self) -> Option<String> {
        (!self.vertex_parallelism.is_empty()).then(|| {
            self.vertex_parallelism
                .iter()
                .map(|(id, p)| format!("{id}:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// The settings of a launch in `values.site`: `siteOverrides[site].args` (when set) in
    /// place of `args`, its `flinkConfiguration` over the job's, its `env`, with templates
    /// expanded. `Err((field, reason))` for a template that does not read (admission refuses
    /// those, so only a record that bypassed it gets here).
    pub fn settings_in(
        &self,
        values: &super::template::TemplateValues,
    ) -> Result<SiteSettings, (String, String)> {
        let Some(site) = self.site_overrides.get(&values.site) else {
            return Ok(SiteSettings {
                args: self.args.clone(),
                flink_configuration: self.flink_configuration.clone(),
                env: BTreeMap::new(),
            });
        };
        let at = format!("spec.siteOverrides.{}", values.site);
        let expand = |field: String, text: &str| {
            super::template::expand(text, values).map_err(|e| (field, e.to_string()))
        };
        let args = match &site.args {
            Some(args) => args
                .iter()
                .enumerate()
                .map(|(i, arg)| expand(format!("{at}.args[{i}]"), arg))
                .collect::<Result<_, _>>()?,
            None => self.args.clone(),
        };
        let mut flink_configuration = self.flink_configuration.clone();
        for (key, value) in &site.flink_configuration {
            let value = expand(format!("{at}.flinkConfiguration[{key:?}]"), value)?;
            flink_configuration.insert(key.clone(), value);
        }
        let env = site
            .env
            .iter()
            .map(|(name, value)| Ok((name.clone(), expand(format!("{at}.env[{name:?}]"), value)?)))
            .collect::<Result<_, (String, String)>>()?;
        Ok(SiteSettings {
            args,
            flink_configuration,
            env,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobManagerSpec {
    pub resources: ResourceSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskManagerSpec {
    /// Request of each TaskManager pod.
    pub resources: ResourceSpec,
    /// Task slots per TaskManager (`taskmanager.numberOfTaskSlots`), at least 1.
    #[serde(default = "one")]
    pub slots: u32,
}

fn one() -> u32 {
    1
}

/// Kubernetes quantities (`"500m"`, `2`, `4Gi`), requested by each pod of the role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSpec {
    #[serde(deserialize_with = "common::quantity")]
    pub cpu: Quantity,
    #[serde(deserialize_with = "common::quantity")]
    pub memory: Quantity,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "SitesSpec::is_default")]
    pub sites: SitesSpec,
    /// Kubernetes `nodeSelector`: every label must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinitySpec>,
    /// Kubernetes tolerations, applied to every pod of the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// May use capacity borrowed from offline (HDFS/batch) pools; the job still needs
    /// tolerations for those pools' taints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_offline: bool,
}

impl PlacementSpec {
    fn is_default(&self) -> bool {
        self == &PlacementSpec::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SitesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred: Option<String>,
    /// Empty: every site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
}

impl SitesSpec {
    fn is_default(&self) -> bool {
        self == &SitesSpec::default()
    }
}

/// Kubernetes' `Affinity`, of which only `nodeAffinity` applies to placement; pod
/// (anti-)affinity is refused rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AffinitySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Where completed checkpoints go (`hdfs://` or `file://`); replicated to the peer site.
    pub dir: String,
    /// Checkpoint interval, e.g. `60s`, `5m`.
    #[serde(default = "default_checkpoint_interval")]
    pub interval: String,
    #[serde(default)]
    pub incremental: bool,
    /// Completed checkpoints Flink keeps, at least 1.
    #[serde(default = "one")]
    pub retained: u32,
}

fn default_checkpoint_interval() -> String {
    "60s".to_string()
}

/// How twinsite relaunches the job when Flink cannot recover by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverSpec {
    #[serde(default)]
    pub mode: FailoverTrigger,
    /// Relaunches in one site, in a row, before twinsite stops relaunching the job there
    /// (and, in `auto` mode, moves it to the other site).
    #[serde(default = "default_max_relaunches_per_site")]
    pub max_relaunches_per_site: u32,
}

fn default_max_relaunches_per_site() -> u32 {
    3
}

impl Default for FailoverSpec {
    fn default() -> Self {
        FailoverSpec {
            mode: FailoverTrigger::default(),
            max_relaunches_per_site: default_max_relaunches_per_site(),
        }
    }
}

impl FailoverSpec {
    fn is_default(&self) -> bool {
        self == &FailoverSpec::default()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
// Who relaunches or moves the job when it fails (the StreamJob's `failover.mode`); not the
// failover engine's `FailoverMode` (whether a relaunch must restore state). A plain comment:
// a doc comment would enter the generated CRD's description.
pub enum FailoverTrigger {
    /// Relaunched in its site after a lost node, and in the surviving site after a lost site.
    #[default]
    Auto,
    /// Relaunched in its site automatically; moved to the other site only by an operator's
    /// failover command.
    Manual,
    /// Never relaunched by twinsite (Flink's own restart strategy only), and left out of
    /// site failover and failover reserves.
    None,
}

impl StreamJob {
    pub fn id(&self) -> JobId {
        JobId::new(&self.metadata.namespace, &self.metadata.name)
    }

    /// `spec.tenant`, or the namespace when it is not set.
    pub fn tenant(&self) -> TenantId {
        TenantId(
            self.spec
                .tenant
                .clone()
                .unwrap_or_else(|| self.metadata.namespace.clone()),
        )
    }

    /// The field the tenant comes from: `spec.tenant`, or `metadata.namespace` without it.
    pub fn tenant_field(&self) -> &'static str {
        if self.spec.tenant.is_some() {
            "spec.tenant"
        } else {
            "metadata.namespace"
        }
    }

    /// Checks the job as [`parse_stream_jobs`] checks each job of a file: for a job that
    /// did not come from one (a stored record, a patched spec), before acting on it.
    pub fn validate(&self) -> Result<(), InputError> {
        let mut problems = self.own_problems();
        if self.api_version != API_VERSION {
            problems.field(
                "apiVersion",
                format!("expected \"{API_VERSION}\", found {:?}", self.api_version),
            );
        }
        if self.kind != STREAM_JOB_KIND {
            problems.field(
                "kind",
                format!("expected \"{STREAM_JOB_KIND}\", found {:?}", self.kind),
            );
        }
        validate(self, &mut problems);
        problems.finish(())
    }

    /// Slots the job needs: `parallelism`, or the plan's slot need when that is larger.
    pub fn slot_need(&self) -> Result<u64, InputError> {
        let mut problems = self.own_problems();
        let need = slot_need(&self.spec, &mut problems);
        problems.finish(need.unwrap_or(0))
    }

    /// The job as placement sees it: resources resolved to integers and the TaskManager
    /// count `ceil(slot need / slots)`.
    pub fn demand(&self) -> Result<JobDemand, InputError> {
        let mut problems = self.own_problems();
        let demand = demand(self, &mut problems);
        match demand {
            Some(demand) => problems.finish(demand),
            None => Err(problems.into_error("could not be resolved")),
        }
    }

    fn own_problems(&self) -> Problems {
        let mut problems = Problems::new("StreamJob");
        problems.set_object(Some(self.id().to_string()));
        problems
    }
}

/// Reads every StreamJob in `yaml` (from `source`, named in errors). All problems in all
/// documents are reported together; each names the document, the job and the field.
pub fn parse_stream_jobs(source: &str, yaml: &str) -> Result<Vec<StreamJob>, InputError> {
    let documents = common::yaml_documents(source, yaml)?;
    let mut problems = Problems::new(source);
    let mut items = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let document_label = format!("document {}", index + 1);
        items.extend(list_items(document, &document_label, &mut problems));
    }
    if items.len() > MAX_JOBS_PER_FILE {
        problems.set_object(None);
        problems.whole(format!(
            "{} StreamJobs, more than the {MAX_JOBS_PER_FILE} one file may hold; split it",
            items.len()
        ));
        return Err(problems.into_error("too many StreamJobs"));
    }
    let mut jobs: Vec<StreamJob> = Vec::new();
    let mut first_seen: HashMap<JobId, String> = HashMap::new();
    let mut per_tenant: HashMap<TenantId, usize> = HashMap::new();
    for (label, item) in items {
        let object = describe(&label, &item);
        problems.set_object(Some(object.clone()));
        if let Some(job) = read_job(item, &mut problems) {
            let id = job.id();
            if let Some(first) = first_seen.get(&id) {
                problems.whole(format!(
                    "duplicate StreamJob {id}: already defined in {first}"
                ));
                continue;
            }
            let tenant_jobs = per_tenant.entry(job.tenant()).or_insert(0);
            *tenant_jobs += 1;
            if *tenant_jobs == MAX_JOBS_PER_TENANT + 1 {
                problems.field(
                    job.tenant_field(),
                    format!(
                        "tenant {:?} has more than {MAX_JOBS_PER_TENANT} jobs in this file, the most one tenant may have",
                        job.tenant().0
                    ),
                );
            }
            first_seen.insert(id, object);
            jobs.push(job);
        }
    }
    problems.set_object(None);
    problems.finish(jobs)
}

/// The documents of a `List` (as `kubectl get -o yaml` prints), or the document itself.
fn list_items(document: Value, label: &str, problems: &mut Problems) -> Vec<(String, Value)> {
    let is_list = matches!(str_at(&document, "/kind"), Some("List" | "StreamJobList"));
    if !is_list {
        return vec![(label.to_string(), document)];
    }
    match document {
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, mut item)| {
                    // A list is what `kubectl get streamjobs -o yaml` prints: each item carries
                    // the `status` twinsite itself wrote, which is the cluster's view, not
                    // part of the job; it is set aside, as the cluster watch does.
                    if let Some(fields) = item.as_object_mut() {
                        fields.remove("status");
                    }
                    (format!("{label}, items[{i}]"), item)
                })
                .collect(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                problems.set_object(Some(label.to_string()));
                problems.field("items", "expected a list of StreamJobs");
                Vec::new()
            }
        },
        _ => Vec::new(),
    }
}

fn describe(label: &str, item: &Value) -> String {
    match (
        str_at(item, "/metadata/namespace"),
        str_at(item, "/metadata/name"),
    ) {
        (Some(namespace), Some(name)) => format!("{label} ({namespace}/{name})"),
        (None, Some(name)) => format!("{label} ({name})"),
        _ => label.to_string(),
    }
}

fn read_job(document: Value, problems: &mut Problems) -> Option<StreamJob> {
    if !document.is_object() {
        problems.whole("expected a StreamJob (a YAML mapping)");
        return None;
    }
    if !check_type_meta(&document, STREAM_JOB_KIND, problems) {
        return None;
    }
    let job: StreamJob = decode(document, problems)?;
    let before = problems.len();
    validate(&job, problems);
    if problems.len() > before {
        return None;
    }
    Some(job)
}

fn validate(job: &StreamJob, problems: &mut Problems) {
    let meta = &job.metadata;
    check_name(problems, "metadata.name", &meta.name);
    check_name(problems, "metadata.namespace", &meta.namespace);
    if meta.namespace.starts_with(RESERVED_NAMESPACE_PREFIX) {
        problems.field(
            "metadata.namespace",
            format!(
                "{:?}: namespaces starting with {RESERVED_NAMESPACE_PREFIX:?} are reserved for Kubernetes' own system components",
                meta.namespace
            ),
        );
    }
    check_labels(problems, "metadata.labels", &meta.labels, true);
    check_labels(problems, "metadata.annotations", &meta.annotations, false);

    let spec = &job.spec;
    if let Some(tenant) = &spec.tenant {
        check_name(problems, "spec.tenant", tenant);
    }
    if spec.image.trim().is_empty() || spec.image.chars().any(char::is_whitespace) {
        problems.field(
            "spec.image",
            format!("{:?} is not a container image reference", spec.image),
        );
    }
    if !is_flink_version(&spec.flink_version) {
        problems.field(
            "spec.flinkVersion",
            format!(
                "{:?} is not a Flink version name: expected v<major>_<minor>, e.g. \"v1_20\" or \"v2_0\"",
                spec.flink_version
            ),
        );
    }
    if check_uri(
        problems,
        "spec.jarURI",
        &spec.jar_uri,
        &JAR_SCHEMES,
        "the jar must be in the image or on storage twinsite replicates",
        true,
    )
    .is_some()
    {
        check_contained_path(problems, "spec.jarURI", &spec.jar_uri);
    }
    if let Some(class) = &spec.entry_class
        && !is_java_class_name(class)
    {
        problems.field(
            "spec.entryClass",
            format!("{class:?} is not a Java class name (e.g. \"com.example.OrdersEnrich\")"),
        );
    }
    if spec.parallelism == 0 {
        problems.field("spec.parallelism", "must be at least 1, found 0");
    } else if spec.parallelism > FLINK_MAX_PARALLELISM {
        problems.field(
            "spec.parallelism",
            format!(
                "must be at most {FLINK_MAX_PARALLELISM} (Flink's bound), found {}",
                spec.parallelism
            ),
        );
    }
    if let Some(max) = spec.max_parallelism
        && (max < spec.parallelism || max > FLINK_MAX_PARALLELISM)
    {
        problems.field(
            "spec.maxParallelism",
            format!(
                "must be between parallelism ({}) and {FLINK_MAX_PARALLELISM}, found {max}",
                spec.parallelism
            ),
        );
    }
    if spec.task_manager.slots == 0 {
        problems.field("spec.taskManager.slots", "must be at least 1, found 0");
    } else if spec.task_manager.slots > MAX_SLOTS_PER_TASK_MANAGER {
        problems.field(
            "spec.taskManager.slots",
            format!(
                "must be at most {MAX_SLOTS_PER_TASK_MANAGER}, found {}",
                spec.task_manager.slots
            ),
        );
    }
    validate_placement(&spec.placement, problems);
    match &spec.checkpoints {
        Some(checkpoints) => {
            if check_uri(
                problems,
                "spec.checkpoints.dir",
                &checkpoints.dir,
                &CHECKPOINT_SCHEMES,
                "twinsite replicates checkpoints between the sites' storage",
                true,
            )
            .is_some()
            {
                check_contained_path(problems, "spec.checkpoints.dir", &checkpoints.dir);
            }
            if let Some(interval) =
                positive_duration(problems, "spec.checkpoints.interval", &checkpoints.interval)
                && interval < MIN_CHECKPOINT_INTERVAL
            {
                problems.field(
                    "spec.checkpoints.interval",
                    format!(
                        "must be at least {}ms (Flink's shortest checkpoint interval), found {:?}",
                        MIN_CHECKPOINT_INTERVAL.as_millis(),
                        checkpoints.interval
                    ),
                );
            }
            if checkpoints.retained == 0 {
                problems.field("spec.checkpoints.retained", "must be at least 1, found 0");
            } else if checkpoints.retained > MAX_RETAINED_CHECKPOINTS {
                problems.field(
                    "spec.checkpoints.retained",
                    format!(
                        "must be at most {MAX_RETAINED_CHECKPOINTS}, found {}",
                        checkpoints.retained
                    ),
                );
            }
        }
        None if spec.failover.mode != FailoverTrigger::None => problems.field(
            "spec.checkpoints",
            "required unless spec.failover.mode is none: a relaunch restores from the latest checkpoint",
        ),
        None => {}
    }
    for key in spec.flink_configuration.keys() {
        check_flink_option(problems, "spec.flinkConfiguration", key);
    }
    validate_vertex_parallelism(spec, problems);
    validate_site_overrides(spec, problems);
    // Resources, plan and the TaskManager count, exactly as `demand()` computes them.
    let _ = demand(job, problems);
}

/// The most a vertex may run with: `spec.maxParallelism`, or Flink's default rule for
/// `spec.parallelism` (`KeyGroupRangeAssignment.computeDefaultMaxParallelism`), which is
/// what a job restored from its checkpoints keeps when none was set.
pub fn effective_max_parallelism(spec: &StreamJobSpec) -> u32 {
    spec.max_parallelism
        .unwrap_or_else(|| crate::report::assemble::default_max_parallelism(spec.parallelism))
}

fn validate_vertex_parallelism(spec: &StreamJobSpec, problems: &mut Problems) {
    let overrides = &spec.vertex_parallelism;
    if overrides.len() > MAX_VERTEX_OVERRIDES {
        problems.field(
            "spec.vertexParallelism",
            format!(
                "{} vertices, more than the {MAX_VERTEX_OVERRIDES} a job may list",
                overrides.len()
            ),
        );
        return;
    }
    let max = effective_max_parallelism(spec);
    for (id, parallelism) in overrides {
        let at = format!("spec.vertexParallelism[{id:?}]");
        // Flink looks overrides up by `JobVertexID.toHexString()`: any other spelling would
        // be silently ignored.
        if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            problems.field(
                at,
                "not a Flink job vertex id: 32 lowercase hex digits, as the REST API prints it",
            );
        } else if *parallelism == 0 || *parallelism > max {
            problems.field(
                at,
                format!(
                    "must be between 1 and the job's max parallelism {max}, found {parallelism}"
                ),
            );
        }
    }
}

fn check_flink_option(problems: &mut Problems, map: &str, key: &str) {
    let at = format!("{map}[{key:?}]");
    if key.trim().is_empty() {
        problems.field(at, "empty option name");
    } else if let Some((_, field)) = OPTIONS_OWNED_BY_SPEC.iter().find(|(k, _)| *k == key) {
        problems.field(
            at,
            format!("set by twinsite from {field}; write it there instead"),
        );
    }
}

/// Kubernetes' rule for environment variable names before 1.34 (`[-._a-zA-Z][-._a-zA-Z0-9]*`),
/// which every supported cluster accepts.
fn env_name_error(name: &str) -> Option<String> {
    let allowed = |b: u8, first: bool| {
        b.is_ascii_alphabetic() || matches!(b, b'-' | b'.' | b'_') || (!first && b.is_ascii_digit())
    };
    let mut bytes = name.bytes();
    let valid = bytes.next().is_some_and(|b| allowed(b, true)) && bytes.all(|b| allowed(b, false));
    if !valid {
        return Some(format!(
            "{name:?} is not an environment variable name: letters, digits, '_', '-' or '.', not starting with a digit"
        ));
    }
    if RESERVED_ENV_NAMES.contains(&name) || name.starts_with(RESERVED_ENV_PREFIX) {
        return Some(format!(
            "{name:?} is set by twinsite itself (reserved: {}, {RESERVED_ENV_PREFIX}*)",
            RESERVED_ENV_NAMES.join(", ")
        ));
    }
    None
}

fn check_template(problems: &mut Problems, field: String, text: &str) {
    if let Err(error) = super::template::check(text) {
        problems.field(field, error.to_string());
    }
}

fn validate_site_overrides(spec: &StreamJobSpec, problems: &mut Problems) {
    if spec.site_overrides.len() > MAX_SITE_OVERRIDES {
        problems.field(
            "spec.siteOverrides",
            format!(
                "{} sites, more than the {MAX_SITE_OVERRIDES} a job may override",
                spec.site_overrides.len()
            ),
        );
        return;
    }
    for (site, settings) in &spec.site_overrides {
        check_name(problems, &format!("spec.siteOverrides[{site:?}]"), site);
        let at = format!("spec.siteOverrides.{site}");
        for (i, arg) in settings.args.iter().flatten().enumerate() {
            check_template(problems, format!("{at}.args[{i}]"), arg);
        }
        let map = format!("{at}.flinkConfiguration");
        for (key, value) in &settings.flink_configuration {
            check_flink_option(problems, &map, key);
            check_template(problems, format!("{map}[{key:?}]"), value);
        }
        for (name, value) in &settings.env {
            let field = format!("{at}.env[{name:?}]");
            if let Some(error) = env_name_error(name) {
                problems.field(field.clone(), error);
            }
            check_template(problems, field, value);
        }
    }
}

fn validate_placement(placement: &PlacementSpec, problems: &mut Problems) {
    let sites = &placement.sites;
    for (i, site) in sites.allowed.iter().enumerate() {
        check_name(
            problems,
            &format!("spec.placement.sites.allowed[{i}]"),
            site,
        );
        if sites.allowed[..i].contains(site) {
            problems.field(
                format!("spec.placement.sites.allowed[{i}]"),
                format!("site {site:?} is listed twice"),
            );
        }
    }
    if let Some(preferred) = &sites.preferred {
        check_name(problems, "spec.placement.sites.preferred", preferred);
        if !sites.allowed.is_empty() && !sites.allowed.contains(preferred) {
            problems.field(
                "spec.placement.sites.preferred",
                format!("site {preferred:?} is not in spec.placement.sites.allowed"),
            );
        }
    }
    check_labels(
        problems,
        "spec.placement.nodeSelector",
        &placement.node_selector,
        true,
    );
    if let Some(affinity) = placement
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        && let Err(error) = affinity.validate()
    {
        problems.field(
            format!("spec.placement.affinity.nodeAffinity.{}", error.field),
            error.message,
        );
    }
    for (i, toleration) in placement.tolerations.iter().enumerate() {
        let at = format!("spec.placement.tolerations[{i}]");
        if !toleration.key.is_empty() {
            for error in qualified_name_errors(&toleration.key) {
                problems.field(
                    format!("{at}.key"),
                    format!("{:?}: {error}", toleration.key),
                );
            }
        }
        if let Err(error) = toleration.validate() {
            problems.field(format!("{at}.{}", error.field), error.message);
        }
    }
}

fn slot_need(spec: &StreamJobSpec, problems: &mut Problems) -> Option<u64> {
    let plan: Option<FlinkPlan> = match &spec.plan {
        Some(value) => Some(plan_from_value(value, "spec.plan", problems)?),
        None => None,
    };
    let parallelism = u64::from(spec.parallelism);
    // With every vertex in one slot sharing group, the job needs as many slots as its
    // widest vertex: a per-vertex override above `parallelism` needs its slots too.
    let widest_override = spec
        .vertex_parallelism
        .values()
        .copied()
        .max()
        .map_or(0, u64::from);
    Some(
        plan.map_or(parallelism, |plan| {
            plan.slot_need(spec.parallelism).max(parallelism)
        })
        .max(widest_override),
    )
}

fn demand(job: &StreamJob, problems: &mut Problems) -> Option<JobDemand> {
    let spec = &job.spec;
    let jm = &spec.job_manager.resources;
    let tm = &spec.task_manager.resources;
    let jm_cpu = cpu_milli(problems, "spec.jobManager.resources.cpu", &jm.cpu, false);
    let jm_memory = integer_value(
        problems,
        "spec.jobManager.resources.memory",
        &jm.memory,
        false,
    );
    let tm_cpu = cpu_milli(problems, "spec.taskManager.resources.cpu", &tm.cpu, false);
    let tm_memory = integer_value(
        problems,
        "spec.taskManager.resources.memory",
        &tm.memory,
        false,
    );
    let need = slot_need(spec, problems);
    let (jm_cpu, jm_memory, tm_cpu, tm_memory, need) =
        (jm_cpu?, jm_memory?, tm_cpu?, tm_memory?, need?);
    if spec.task_manager.slots == 0 {
        return None;
    }
    let slots = spec.task_manager.slots;
    let task_managers = need.div_ceil(u64::from(slots));
    let task_managers = match u32::try_from(task_managers) {
        Ok(count) if count <= MAX_TASK_MANAGERS_PER_JOB => count,
        _ => {
            // The plan's need is the larger one only when it exceeds the parallelism.
            let field = if need > u64::from(spec.parallelism) {
                "spec.plan"
            } else {
                "spec.parallelism"
            };
            problems.field(
                field,
                format!(
                    "{need} slots at {slots} per TaskManager need {task_managers} TaskManagers, more than the {MAX_TASK_MANAGERS_PER_JOB} twinsite places for one job; raise spec.taskManager.slots or lower the parallelism"
                ),
            );
            return None;
        }
    };
    Some(JobDemand {
        id: job.id(),
        tenant: job.tenant(),
        priority: spec.priority,
        job_manager: Resources::new(jm_cpu, jm_memory, 1),
        task_manager: Resources::new(tm_cpu, tm_memory, 1),
        task_managers,
        sites: SiteConstraint {
            preferred: spec.placement.sites.preferred.clone().map(SiteId),
            allowed: spec
                .placement
                .sites
                .allowed
                .iter()
                .cloned()
                .map(SiteId)
                .collect(),
        },
        node_selector: spec.placement.node_selector.clone(),
        node_affinity: spec
            .placement
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.clone()),
        tolerations: spec.placement.tolerations.clone(),
        allow_offline: spec.placement.allow_offline,
    })
}

fn is_flink_version(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = rest.split_once('_') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

fn is_java_class_name(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
                && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })
}

/// Serializes jobs back to multi-document YAML that [`parse_stream_jobs`] reads.
pub fn stream_jobs_to_yaml(jobs: &[StreamJob]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for job in jobs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(job)?);
    }
    Ok(out)
}
