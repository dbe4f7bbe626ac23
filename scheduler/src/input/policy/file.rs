//! The policy file exactly as written: the serde shapes of every section, their defaults
//! and unknown-field refusal. Never checks a value: what a field may hold is `resolve`'s job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::input::common;
use crate::input::diagnosis_policy::DiagnosisSpec;
use crate::input::scale_profile::ScaleProfileSpec;
use crate::k8s::Quantity;
use crate::model::{Priority, RebalancePolicy};

/// The policy file exactly as written (unknown fields are errors everywhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyFile {
    pub api_version: String,
    pub kind: String,
    pub sites: Vec<SiteSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaSpec>,
    #[serde(default, skip_serializing_if = "PrioritiesSpec::is_default")]
    pub priorities: PrioritiesSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_reserve: Vec<ReserveSpec>,
    #[serde(default)]
    pub detection: DetectionSpec,
    #[serde(default)]
    pub replication: ReplicationSpec,
    /// Thresholds of `twinsite diagnose` (`diagnosis_policy`).
    #[serde(default, skip_serializing_if = "DiagnosisSpec::is_default")]
    pub diagnosis: DiagnosisSpec,
    /// Extra secret-looking keys the controller's API and audit log redact.
    #[serde(default, skip_serializing_if = "RedactionSpec::is_empty")]
    pub redaction: RedactionSpec,
    /// Moving jobs off borrowed offline capacity before its window closes.
    #[serde(default, skip_serializing_if = "RebalanceSpec::is_default")]
    pub rebalance: RebalanceSpec,
    /// Planned elasticity: windows in which jobs run at a multiple of their parallelism.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_profiles: Vec<ScaleProfileSpec>,
}

/// `rebalance`: when and how fast running jobs leave borrowed offline capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebalanceSpec {
    /// How long before a lending window closes a job's borrowed pods must be gone.
    #[serde(default = "default_lead_time")]
    pub lead_time: String,
    /// Most moves (stop with savepoint, relaunch elsewhere) started in any hour.
    #[serde(default = "default_moves_per_hour")]
    pub moves_per_hour: u32,
}

fn default_lead_time() -> String {
    "10m".to_string()
}
fn default_moves_per_hour() -> u32 {
    RebalancePolicy::DEFAULT_MOVES_PER_HOUR
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        RebalanceSpec {
            lead_time: default_lead_time(),
            moves_per_hour: default_moves_per_hour(),
        }
    }
}

impl RebalanceSpec {
    fn is_default(&self) -> bool {
        *self == RebalanceSpec::default()
    }
}

/// Keys whose values the controller never shows or records, beside the built-in
/// `*password*`, `*secret*`, `*token*` and `*key*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedactionSpec {
    /// Case-insensitive patterns of whole keys (`*` matches any run of characters), e.g.
    /// `fs.oss.accessKeyId` or `*.credentials.*`.
    #[serde(default)]
    pub keys: Vec<String>,
}

impl RedactionSpec {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteSpec {
    pub name: String,
    /// How to reach the site's cluster; absent: the site is simulated in-process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSpec>,
    /// Root URI of the site's HDFS (`hdfs://nameservice/`) or a local stand-in
    /// (`file:///...`); absent: a directory under the controller's data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Kubeconfig path; absent: the in-cluster config or `$KUBECONFIG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Namespace of twinsite's own objects in that cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub launch_mode: LaunchMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LaunchMode {
    /// A `FlinkDeployment` for the Apache Flink Kubernetes Operator.
    #[default]
    FlinkOperator,
    /// JobManager and TaskManager Deployments written by twinsite.
    Standalone,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfflineSpec {
    #[serde(default)]
    pub windows: Vec<WindowSpec>,
    pub max_borrow_fraction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_margin: Option<MarginSpec>,
    /// `requests` (default): a fixed share of every node; `usage`: the share shrinks to what
    /// the node's own workload leaves unused, as measured (config `nodeUsage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lend_by: Option<crate::model::LendBasis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowSpec {
    /// `Mon`..`Sun` (full names accepted); absent: every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    /// `HH:MM`, local time.
    pub start: String,
    /// `HH:MM` (or `24:00`); not after `start`: the window runs past midnight.
    pub end: String,
    /// IANA name, e.g. `Asia/Shanghai`; default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarginSpec {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "common::optional_quantity"
    )]
    pub cpu: Option<Quantity>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "common::optional_quantity"
    )]
    pub memory: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaSpec {
    pub tenant: String,
    pub site: String,
    #[serde(deserialize_with = "common::quantity")]
    pub cpu: Quantity,
    #[serde(deserialize_with = "common::quantity")]
    pub memory: Quantity,
    /// Absent: no pod limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<u32>,
}

/// Settings per priority tier; tiers left out keep their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrioritiesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<TierSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<TierSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<TierSpec>,
    #[serde(
        default,
        rename = "best-effort",
        skip_serializing_if = "Option::is_none"
    )]
    pub best_effort: Option<TierSpec>,
}

impl PrioritiesSpec {
    fn is_default(&self) -> bool {
        self == &PrioritiesSpec::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    /// May evict jobs of lower, preemptible tiers when it does not fit otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempts: Option<bool>,
    /// May be evicted by jobs of higher tiers that preempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptible: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReserveSpec {
    pub site: String,
    pub protects: String,
    #[serde(default = "critical")]
    pub min_priority: Priority,
}

fn critical() -> Priority {
    Priority::Critical
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DetectionSpec {
    /// Refused when given: the controller configuration's `failover.*` fields are the one
    /// source of truth for how failures are judged (see [`DETECTION_FIELDS_MOVED`](super::DETECTION_FIELDS_MOVED)). Parsed
    /// only to say so, naming the field to use, instead of "unknown field".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_grace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_grace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flink_recovery_grace: Option<String>,
    /// `tolerationSeconds` of the `NoExecute` tolerations for `node.kubernetes.io/unreachable`
    /// and `node.kubernetes.io/not-ready` on every pod twinsite launches in a Kubernetes site:
    /// how long Kubernetes leaves them on a dead node (its own default is five minutes).
    #[serde(default = "default_pod_eviction_timeout")]
    pub pod_eviction_timeout: String,
}

fn default_pod_eviction_timeout() -> String {
    "30s".to_string()
}

impl Default for DetectionSpec {
    fn default() -> Self {
        DetectionSpec {
            node_grace: None,
            site_grace: None,
            probe_interval: None,
            flink_recovery_grace: None,
            pod_eviction_timeout: default_pod_eviction_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationSpec {
    #[serde(default = "default_replication_interval")]
    pub interval: String,
    /// Bytes per second per direction (a quantity, e.g. `200Mi`); absent: unlimited.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "common::optional_quantity"
    )]
    pub bandwidth: Option<Quantity>,
    #[serde(default = "default_parallel_copies")]
    pub parallel_copies: u32,
    /// Replication lag above which a job's RPO is reported as breached.
    #[serde(default = "default_max_lag")]
    pub max_lag: String,
}

fn default_replication_interval() -> String {
    "30s".to_string()
}
fn default_parallel_copies() -> u32 {
    4
}
fn default_max_lag() -> String {
    "5m".to_string()
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        ReplicationSpec {
            interval: default_replication_interval(),
            bandwidth: None,
            parallel_copies: default_parallel_copies(),
            max_lag: default_max_lag(),
        }
    }
}
