//! The StreamJob resource as written: the serde (and CRD schema) shapes of the job, its
//! roles, placement, checkpoints and failover, with their defaults. Never checks a value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::site_overrides::SiteOverride;
use crate::input::common;
use crate::k8s::{NodeAffinity, Quantity, Toleration};
use crate::model::Priority;

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
