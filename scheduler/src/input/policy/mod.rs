//! The policy file (`kind: Policy`, schema in `policies/README.md`): sites, node pools and
//! offline lending windows, tenant quotas, priority tiers, failover reserves, detection and
//! replication settings. Parsed strictly, then resolved into [`PlacementPolicy`] and the
//! typed settings later stages use.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::common::{
    self, check_labels, check_name, check_type_meta, check_uri, cpu_milli, decode, integer_value,
    positive_duration,
};
use super::diagnosis_policy::{self, DiagnosisSpec};
use super::error::{InputError, Problems};
use super::streamjob::StreamJob;
use crate::k8s::Quantity;
use crate::model::{
    FailoverReserve, LendingWindow, NodePool, OfflineLending, PlacementPolicy, Priority,
    RebalancePolicy, Resources, SiteId, TenantId, TenantQuota,
};

pub const POLICY_KIND: &str = "Policy";

/// Storage schemes a site's HDFS (or its local stand-in) may use.
pub const STORAGE_SCHEMES: [&str; 2] = ["hdfs", "file"];

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
    pub scale_profiles: Vec<super::scale_profile::ScaleProfileSpec>,
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

/// Longest `rebalance.leadTime`: the rebalancer looks a day ahead for closing windows.
pub const MAX_REBALANCE_LEAD_TIME: Duration = Duration::from_secs(12 * 3600);
/// Most `rebalance.movesPerHour`: one move a second.
pub const MAX_REBALANCE_MOVES_PER_HOUR: u32 = 3600;

/// Most patterns `redaction.keys` may list, and longest one: bounds what every API response
/// and audit entry is matched against.
pub const MAX_REDACTION_KEYS: usize = 64;
pub const MAX_REDACTION_KEY_LEN: usize = 253;

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
    /// source of truth for how failures are judged (see [`DETECTION_FIELDS_MOVED`]). Parsed
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

/// Policy fields that used to describe failure detection but were never read, and the
/// controller configuration field that does the work.
pub const DETECTION_FIELDS_MOVED: [(&str, &str); 4] = [
    ("detection.nodeGrace", "failover.nodeGrace"),
    ("detection.siteGrace", "failover.siteGrace"),
    (
        "detection.flinkRecoveryGrace",
        "failover.taskManagerRecoveryBound",
    ),
    ("detection.probeInterval", "reconcile.interval"),
];
fn default_pod_eviction_timeout() -> String {
    "30s".to_string()
}

/// Kubernetes' own `tolerationSeconds` for unreachable and not-ready nodes
/// (`--default-unreachable-toleration-seconds`): a longer timeout would keep twinsite's pods
/// on a dead node longer than plain Kubernetes does.
pub const MAX_POD_EVICTION_TIMEOUT: Duration = Duration::from_secs(300);

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

/// Preemption rules of one tier, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierRules {
    pub preempts: bool,
    pub preemptible: bool,
}

impl TierRules {
    /// Critical and high preempt and are never preempted; normal and best-effort may be.
    pub fn default_for(priority: Priority) -> TierRules {
        match priority {
            Priority::Critical | Priority::High => TierRules {
                preempts: true,
                preemptible: false,
            },
            Priority::Normal | Priority::BestEffort => TierRules {
                preempts: false,
                preemptible: true,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    /// Whole seconds, 1 to 300 (`MAX_POD_EVICTION_TIMEOUT`).
    pub pod_eviction_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    pub interval: Duration,
    pub bandwidth_bytes_per_second: Option<i64>,
    pub parallel_copies: u32,
    pub max_lag: Duration,
}

/// A validated policy: the file as written plus everything resolved from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    file: PolicyFile,
    placement: PlacementPolicy,
    tiers: BTreeMap<Priority, TierRules>,
    detection: Detection,
    replication: Replication,
    diagnosis: crate::diagnosis::Thresholds,
    rebalance: RebalancePolicy,
    scale_profiles: super::scale_profile::ScaleProfiles,
}

/// Reads and validates a policy file; every problem names `source` and the field path.
pub fn parse_policy(source: &str, yaml: &str) -> Result<Policy, InputError> {
    let mut documents = common::yaml_documents(source, yaml)?;
    let mut problems = Problems::new(source);
    if documents.len() != 1 {
        problems.whole(format!(
            "expected exactly one policy document, found {}",
            documents.len()
        ));
        return problems.finish(Policy::default_two_sites());
    }
    let document = documents.remove(0);
    if !document.is_object() {
        problems.whole("expected a Policy (a YAML mapping)");
        return problems.finish(Policy::default_two_sites());
    }
    if !check_type_meta(&document, POLICY_KIND, &mut problems) {
        return problems.finish(Policy::default_two_sites());
    }
    let Some(file) = decode::<PolicyFile>(document, &mut problems) else {
        return Err(problems.into_error("not a valid policy"));
    };
    match resolve(file, &mut problems) {
        Some(policy) => problems.finish(policy),
        None => Err(problems.into_error("not a valid policy")),
    }
}

impl Policy {
    /// The policy used when no file is given: two simulated sites `dc-a` and `dc-b` with
    /// local storage, no pools (every node online), no quotas, default tiers, detection and
    /// replication, and each site keeping room for the other's critical jobs. It is what
    /// `policies/minimal.yaml` spells out.
    pub fn default_two_sites() -> Policy {
        let site = |name: &str| SiteSpec {
            name: name.to_string(),
            kubernetes: None,
            storage: None,
        };
        let reserve = |site: &str, protects: &str| ReserveSpec {
            site: site.to_string(),
            protects: protects.to_string(),
            min_priority: Priority::Critical,
        };
        let file = PolicyFile {
            api_version: common::API_VERSION.to_string(),
            kind: POLICY_KIND.to_string(),
            sites: vec![site("dc-a"), site("dc-b")],
            pools: Vec::new(),
            quotas: Vec::new(),
            priorities: PrioritiesSpec::default(),
            failover_reserve: vec![reserve("dc-a", "dc-b"), reserve("dc-b", "dc-a")],
            detection: DetectionSpec::default(),
            replication: ReplicationSpec::default(),
            diagnosis: DiagnosisSpec::default(),
            redaction: RedactionSpec::default(),
            rebalance: RebalanceSpec::default(),
            scale_profiles: Vec::new(),
        };
        let placement = PlacementPolicy {
            pools: Vec::new(),
            quotas: Vec::new(),
            reserves: file
                .failover_reserve
                .iter()
                .map(|r| FailoverReserve {
                    site: SiteId(r.site.clone()),
                    protects: SiteId(r.protects.clone()),
                    min_priority: r.min_priority,
                })
                .collect(),
        };
        Policy {
            file,
            placement,
            tiers: Priority::ALL
                .iter()
                .map(|&p| (p, TierRules::default_for(p)))
                .collect(),
            detection: Detection {
                pod_eviction_timeout: Duration::from_secs(30),
            },
            replication: Replication {
                interval: Duration::from_secs(30),
                bandwidth_bytes_per_second: None,
                parallel_copies: 4,
                max_lag: Duration::from_secs(300),
            },
            diagnosis: crate::diagnosis::Thresholds::default(),
            rebalance: RebalancePolicy::default(),
            scale_profiles: Default::default(),
        }
    }

    /// The file as written, e.g. to print or store it.
    pub fn file(&self) -> &PolicyFile {
        &self.file
    }

    pub fn placement_policy(&self) -> PlacementPolicy {
        self.placement.clone()
    }

    /// Site names in file order.
    pub fn site_ids(&self) -> Vec<SiteId> {
        self.file
            .sites
            .iter()
            .map(|s| SiteId(s.name.clone()))
            .collect()
    }

    pub fn site(&self, id: &SiteId) -> Option<&SiteSpec> {
        self.file.sites.iter().find(|s| s.name == id.0)
    }

    pub fn tier(&self, priority: Priority) -> TierRules {
        self.tiers
            .get(&priority)
            .copied()
            .unwrap_or_else(|| TierRules::default_for(priority))
    }

    pub fn detection(&self) -> Detection {
        self.detection
    }

    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// Lead time and budget of moves off borrowed capacity (`rebalance`).
    pub fn rebalance(&self) -> RebalancePolicy {
        self.rebalance
    }

    /// Planned elasticity (`scaleProfiles`).
    pub fn scale_profiles(&self) -> &super::scale_profile::ScaleProfiles {
        &self.scale_profiles
    }

    /// The thresholds diagnosis judges jobs by (`diagnosis`).
    pub fn diagnosis(&self) -> crate::diagnosis::Thresholds {
        self.diagnosis
    }

    /// The policy's extra redaction patterns (`redaction.keys`), validated.
    pub fn redaction_keys(&self) -> &[String] {
        &self.file.redaction.keys
    }

    /// The tenants the policy knows: those its quotas name. Empty when it sets no quota.
    pub fn tenants(&self) -> BTreeSet<&str> {
        self.file.quotas.iter().map(|q| q.tenant.as_str()).collect()
    }

    /// Checks what a job file can only be checked against the policy: every site a job
    /// prefers or allows is one of the policy's sites, and, when the policy names tenants
    /// (its quotas do), the job's tenant is one of them. `source` names the job file.
    pub fn check_jobs(&self, source: &str, jobs: &[StreamJob]) -> Result<(), InputError> {
        let sites: BTreeSet<&str> = self.file.sites.iter().map(|s| s.name.as_str()).collect();
        let tenants = self.tenants();
        let mut problems = Problems::new(source);
        for job in jobs {
            problems.set_object(Some(job.id().to_string()));
            let tenant = job.tenant();
            if !tenants.is_empty() && !tenants.contains(tenant.0.as_str()) {
                problems.field(
                    job.tenant_field(),
                    format!(
                        "tenant {:?} is not in the policy, whose quotas name the tenants it admits: {}",
                        tenant.0,
                        tenants
                            .iter()
                            .map(|t| format!("{t:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            let wanted = &job.spec.placement.sites;
            let named = wanted
                .preferred
                .iter()
                .map(|s| ("spec.placement.sites.preferred".to_string(), s))
                .chain(
                    wanted
                        .allowed
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (format!("spec.placement.sites.allowed[{i}]"), s)),
                )
                .chain(
                    job.spec
                        .site_overrides
                        .keys()
                        .map(|s| (format!("spec.siteOverrides[{s:?}]"), s)),
                );
            for (field, site) in named {
                if !sites.contains(site.as_str()) {
                    problems.field(
                        field,
                        format!(
                            "unknown site {site:?}; the policy's sites are {}",
                            sites
                                .iter()
                                .map(|s| format!("{s:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
        }
        problems.finish(())
    }

    /// The policy as YAML that [`parse_policy`] reads back.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(&self.file)
    }
}

fn resolve(file: PolicyFile, problems: &mut Problems) -> Option<Policy> {
    let before = problems.len();
    let mut site_names = BTreeSet::new();
    if file.sites.is_empty() {
        problems.field("sites", "at least one site is required");
    }
    for (i, site) in file.sites.iter().enumerate() {
        let at = format!("sites[{i}]");
        check_name(problems, &format!("{at}.name"), &site.name);
        if !site_names.insert(site.name.as_str()) {
            problems.field(
                format!("{at}.name"),
                format!("site {:?} is defined twice", site.name),
            );
        }
        if let Some(storage) = &site.storage
            && check_uri(
                problems,
                &format!("{at}.storage"),
                storage,
                &STORAGE_SCHEMES,
                "twinsite reads and replicates jars and checkpoints there",
                false,
            )
            .as_deref()
                == Some("hdfs")
            && storage
                .strip_prefix("hdfs://")
                .is_some_and(|rest| rest.starts_with('/'))
        {
            problems.field(
                format!("{at}.storage"),
                format!("{storage:?} names no NameNode or nameservice (hdfs://<nameservice>/...)"),
            );
        }
        if let Some(kubernetes) = &site.kubernetes {
            if let Some(namespace) = &kubernetes.namespace {
                check_name(problems, &format!("{at}.kubernetes.namespace"), namespace);
            }
            for (field, value) in [
                ("kubeconfig", &kubernetes.kubeconfig),
                ("context", &kubernetes.context),
            ] {
                if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                    problems.field(format!("{at}.kubernetes.{field}"), "must not be empty");
                }
            }
        }
    }
    let known_site = |problems: &mut Problems, field: String, name: &str| {
        if !site_names.contains(name) {
            problems.field(
                field,
                format!(
                    "unknown site {name:?}; sites are {}",
                    site_names
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    };

    let mut pools = Vec::new();
    let mut pool_names = BTreeSet::new();
    for (i, pool) in file.pools.iter().enumerate() {
        let at = format!("pools[{i}]");
        check_name(problems, &format!("{at}.name"), &pool.name);
        if !pool_names.insert(pool.name.as_str()) {
            problems.field(
                format!("{at}.name"),
                format!("pool {:?} is defined twice", pool.name),
            );
        }
        if let Some(site) = &pool.site {
            known_site(problems, format!("{at}.site"), site);
        }
        check_labels(problems, &format!("{at}.selector"), &pool.selector, true);
        let offline = pool
            .offline
            .as_ref()
            .and_then(|o| resolve_offline(o, &format!("{at}.offline"), problems));
        pools.push(NodePool {
            name: pool.name.clone(),
            site: pool.site.clone().map(SiteId),
            selector: pool.selector.clone(),
            offline,
        });
    }

    let mut quotas = Vec::new();
    let mut quota_keys = BTreeSet::new();
    for (i, quota) in file.quotas.iter().enumerate() {
        let at = format!("quotas[{i}]");
        check_name(problems, &format!("{at}.tenant"), &quota.tenant);
        known_site(problems, format!("{at}.site"), &quota.site);
        if !quota_keys.insert((quota.tenant.as_str(), quota.site.as_str())) {
            problems.field(
                &at,
                format!(
                    "a second quota for tenant {:?} in site {:?}",
                    quota.tenant, quota.site
                ),
            );
        }
        let cpu = cpu_milli(problems, &format!("{at}.cpu"), &quota.cpu, false);
        let memory = integer_value(problems, &format!("{at}.memory"), &quota.memory, false);
        if quota.pods == Some(0) {
            problems.field(format!("{at}.pods"), "must be positive, found 0");
        }
        if let (Some(cpu), Some(memory)) = (cpu, memory) {
            quotas.push(TenantQuota {
                tenant: TenantId(quota.tenant.clone()),
                site: SiteId(quota.site.clone()),
                limit: Resources::new(cpu, memory, quota.pods.map_or(i64::MAX, i64::from)),
            });
        }
    }

    let mut reserves = Vec::new();
    let mut reserve_keys = BTreeSet::new();
    for (i, reserve) in file.failover_reserve.iter().enumerate() {
        let at = format!("failoverReserve[{i}]");
        known_site(problems, format!("{at}.site"), &reserve.site);
        known_site(problems, format!("{at}.protects"), &reserve.protects);
        if reserve.site == reserve.protects {
            problems.field(
                format!("{at}.protects"),
                "a site cannot keep a reserve for its own loss",
            );
        }
        if !reserve_keys.insert((reserve.site.as_str(), reserve.protects.as_str())) {
            problems.field(
                &at,
                format!(
                    "a second reserve of {:?} for {:?}",
                    reserve.site, reserve.protects
                ),
            );
        }
        reserves.push(FailoverReserve {
            site: SiteId(reserve.site.clone()),
            protects: SiteId(reserve.protects.clone()),
            min_priority: reserve.min_priority,
        });
    }

    let mut tiers = BTreeMap::new();
    for (priority, spec) in [
        (Priority::Critical, &file.priorities.critical),
        (Priority::High, &file.priorities.high),
        (Priority::Normal, &file.priorities.normal),
        (Priority::BestEffort, &file.priorities.best_effort),
    ] {
        let default = TierRules::default_for(priority);
        let spec = spec.clone().unwrap_or_default();
        tiers.insert(
            priority,
            TierRules {
                preempts: spec.preempts.unwrap_or(default.preempts),
                preemptible: spec.preemptible.unwrap_or(default.preemptible),
            },
        );
    }

    let d = &file.detection;
    // One source of truth: the controller judges failures by its configuration's
    // `failover.*`; the same knob here would be a second, silently ignored one.
    let given = [
        &d.node_grace,
        &d.site_grace,
        &d.flink_recovery_grace,
        &d.probe_interval,
    ];
    for (value, (field, instead)) in given.into_iter().zip(DETECTION_FIELDS_MOVED) {
        if let Some(value) = value {
            problems.field(
                field,
                format!(
                    "{value:?} is not read: set {instead} in the controller configuration (twinsite.yaml) instead, and remove {field} from the policy"
                ),
            );
        }
    }
    let pod_eviction_timeout = positive_duration(
        problems,
        "detection.podEvictionTimeout",
        &d.pod_eviction_timeout,
    );
    if let Some(timeout) = pod_eviction_timeout {
        if timeout.subsec_nanos() != 0 {
            problems.field(
                "detection.podEvictionTimeout",
                format!(
                    "{:?} must be whole seconds: it becomes the pods' tolerationSeconds",
                    d.pod_eviction_timeout
                ),
            );
        } else if timeout > MAX_POD_EVICTION_TIMEOUT {
            problems.field(
                "detection.podEvictionTimeout",
                format!(
                    "{:?} is longer than Kubernetes' own default of 5m: pods would stay on a dead node longer than without it",
                    d.pod_eviction_timeout
                ),
            );
        }
    }
    let r = &file.replication;
    let interval = positive_duration(problems, "replication.interval", &r.interval);
    let max_lag = positive_duration(problems, "replication.maxLag", &r.max_lag);
    let bandwidth = r
        .bandwidth
        .as_ref()
        .map(|b| integer_value(problems, "replication.bandwidth", b, false));
    if r.parallel_copies == 0 {
        problems.field("replication.parallelCopies", "must be at least 1, found 0");
    }

    check_redaction(&file.redaction, problems);
    let rebalance = resolve_rebalance(&file.rebalance, problems);
    let scale_profiles = super::scale_profile::resolve(&file.scale_profiles, problems);
    let diagnosis = diagnosis_policy::resolve(&file.diagnosis, problems);

    if problems.len() > before {
        return None;
    }
    Some(Policy {
        placement: PlacementPolicy {
            pools,
            quotas,
            reserves,
        },
        tiers,
        detection: Detection {
            pod_eviction_timeout: pod_eviction_timeout?,
        },
        replication: Replication {
            interval: interval?,
            bandwidth_bytes_per_second: match bandwidth {
                Some(b) => Some(b?),
                None => None,
            },
            parallel_copies: r.parallel_copies,
            max_lag: max_lag?,
        },
        diagnosis: diagnosis?,
        rebalance: rebalance?,
        scale_profiles: scale_profiles?,
        file,
    })
}

fn resolve_rebalance(spec: &RebalanceSpec, problems: &mut Problems) -> Option<RebalancePolicy> {
    let lead_time = positive_duration(problems, "rebalance.leadTime", &spec.lead_time);
    if let Some(lead) = lead_time
        && lead > MAX_REBALANCE_LEAD_TIME
    {
        problems.field(
            "rebalance.leadTime",
            format!(
                "{:?} is longer than 12h: closing windows are looked for a day ahead, and the moves need time after the lead time too",
                spec.lead_time
            ),
        );
        return None;
    }
    if spec.moves_per_hour == 0 || spec.moves_per_hour > MAX_REBALANCE_MOVES_PER_HOUR {
        problems.field(
            "rebalance.movesPerHour",
            format!(
                "must be 1 to {MAX_REBALANCE_MOVES_PER_HOUR}, found {} (0 would leave borrowed pods on nodes whose window closed)",
                spec.moves_per_hour
            ),
        );
        return None;
    }
    Some(RebalancePolicy {
        lead_time: lead_time?,
        moves_per_hour: spec.moves_per_hour,
    })
}

fn check_redaction(redaction: &RedactionSpec, problems: &mut Problems) {
    if redaction.keys.len() > MAX_REDACTION_KEYS {
        problems.field(
            "redaction.keys",
            format!(
                "at most {MAX_REDACTION_KEYS} patterns, found {}",
                redaction.keys.len()
            ),
        );
        return;
    }
    for (i, key) in redaction.keys.iter().enumerate() {
        let at = format!("redaction.keys[{i}]");
        if key.is_empty() || key.len() > MAX_REDACTION_KEY_LEN {
            problems.field(
                at,
                format!(
                    "must be 1 to {MAX_REDACTION_KEY_LEN} characters, found {}",
                    key.len()
                ),
            );
        } else if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic()) {
            problems.field(
                at,
                format!(
                    "{bad:?} is not allowed: a pattern is a key of printable ASCII without spaces, `*` matching any run of characters"
                ),
            );
        }
    }
}

fn resolve_offline(
    offline: &OfflineSpec,
    at: &str,
    problems: &mut Problems,
) -> Option<OfflineLending> {
    let before = problems.len();
    let fraction = offline.max_borrow_fraction;
    if !(0.0..=1.0).contains(&fraction) {
        problems.field(
            format!("{at}.maxBorrowFraction"),
            format!("must be between 0 and 1, found {fraction}"),
        );
    }
    let mut windows = Vec::new();
    for (i, window) in offline.windows.iter().enumerate() {
        if let Some(w) = resolve_window(window, &format!("{at}.windows[{i}]"), problems) {
            windows.push(w);
        }
    }
    let mut margin = Resources::ZERO;
    if let Some(m) = &offline.safety_margin {
        if let Some(cpu) = &m.cpu {
            margin.cpu_milli =
                cpu_milli(problems, &format!("{at}.safetyMargin.cpu"), cpu, true).unwrap_or(0);
        }
        if let Some(memory) = &m.memory {
            margin.memory_bytes =
                integer_value(problems, &format!("{at}.safetyMargin.memory"), memory, true)
                    .unwrap_or(0);
        }
        margin.pods = m.pods.map_or(0, i64::from);
    }
    if problems.len() > before {
        return None;
    }
    Some(OfflineLending {
        windows,
        max_borrow_fraction: fraction,
        safety_margin: margin,
        lend_by: offline.lend_by.unwrap_or_default(),
    })
}

fn resolve_window(window: &WindowSpec, at: &str, problems: &mut Problems) -> Option<LendingWindow> {
    let before = problems.len();
    let days = match &window.days {
        None => vec![
            chrono::Weekday::Mon,
            chrono::Weekday::Tue,
            chrono::Weekday::Wed,
            chrono::Weekday::Thu,
            chrono::Weekday::Fri,
            chrono::Weekday::Sat,
            chrono::Weekday::Sun,
        ],
        Some(days) if days.is_empty() => {
            problems.field(
                format!("{at}.days"),
                "an empty list opens the window on no day; leave days out for every day",
            );
            Vec::new()
        }
        Some(days) => {
            let mut parsed = Vec::new();
            for (i, day) in days.iter().enumerate() {
                match day.parse::<chrono::Weekday>() {
                    Ok(d) if !parsed.contains(&d) => parsed.push(d),
                    Ok(_) => problems.field(
                        format!("{at}.days[{i}]"),
                        format!("{day:?} is listed twice"),
                    ),
                    Err(_) => problems.field(
                        format!("{at}.days[{i}]"),
                        format!(
                            "unknown day {day:?}; expected Mon, Tue, Wed, Thu, Fri, Sat or Sun"
                        ),
                    ),
                }
            }
            parsed
        }
    };
    let start = clock_minute(&window.start, false);
    let end = clock_minute(&window.end, true);
    if start.is_none() {
        problems.field(
            format!("{at}.start"),
            format!(
                "{:?} is not a time of day HH:MM (00:00 to 23:59)",
                window.start
            ),
        );
    }
    if end.is_none() {
        problems.field(
            format!("{at}.end"),
            format!(
                "{:?} is not a time of day HH:MM (00:00 to 24:00)",
                window.end
            ),
        );
    }
    if let (Some(s), Some(e)) = (start, end)
        && s == e
    {
        problems.field(
            format!("{at}.end"),
            format!(
                "the window {}–{} is empty; for a whole day write 00:00–24:00",
                window.start, window.end
            ),
        );
    }
    let timezone = match window.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            problems.field(
                format!("{at}.timezone"),
                format!(
                    "unknown timezone {:?} (an IANA name such as \"Asia/Shanghai\")",
                    window.timezone
                ),
            );
            None
        }
    };
    if problems.len() > before {
        return None;
    }
    Some(LendingWindow {
        days,
        start_minute: start?,
        end_minute: end?,
        timezone: timezone?,
    })
}

/// Minutes after midnight of `HH:MM`; `24:00` only as an end.
fn clock_minute(text: &str, is_end: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if m >= 60 {
        return None;
    }
    match (h, m) {
        (24, 0) if is_end => Some(1440),
        (h, m) if h < 24 => Some(h * 60 + m),
        _ => None,
    }
}
