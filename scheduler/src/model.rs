//! The cluster model every other module speaks: sites, nodes, running pods, the resolved
//! demand of a job, and the placement plan that comes back. Inputs (`crate::input`) build
//! these from the user-facing formats; placement (`crate::placement`) reads and returns them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::k8s::{NodeAffinity, Taint, Toleration};

/// Name of a site (one Kubernetes cluster with its own HDFS), e.g. `dc-a`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SiteId(pub String);

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `namespace/name` of a StreamJob: the identity used in plans, state and the API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    pub fn new(namespace: &str, name: &str) -> Self {
        JobId(format!("{namespace}/{name}"))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Priority tiers, lowest first so that `Ord` ranks them: `Critical > High > Normal > BestEffort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    BestEffort,
    Normal,
    High,
    Critical,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::BestEffort,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::BestEffort => "best-effort",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Schedulable resources in Kubernetes' integer units: CPU in millicores, memory in bytes,
/// pods as a count. Integers, so capacity checks are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_milli: 0,
        memory_bytes: 0,
        pods: 0,
    };

    pub fn new(cpu_milli: i64, memory_bytes: i64, pods: i64) -> Self {
        Resources {
            cpu_milli,
            memory_bytes,
            pods,
        }
    }

    /// True when every dimension of `self` fits in `capacity`.
    pub fn fits_in(&self, capacity: &Resources) -> bool {
        self.cpu_milli <= capacity.cpu_milli
            && self.memory_bytes <= capacity.memory_bytes
            && self.pods <= capacity.pods
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_sub(other.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            pods: self.pods.saturating_sub(other.pods),
        }
    }

    pub fn times(&self, n: i64) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_mul(n),
            memory_bytes: self.memory_bytes.saturating_mul(n),
            pods: self.pods.saturating_mul(n),
        }
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_add(o.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            pods: self.pods.saturating_add(o.pods),
        }
    }
}

impl std::ops::AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

impl std::ops::Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_sub(o.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            pods: self.pods.saturating_sub(o.pods),
        }
    }
}

impl std::ops::SubAssign for Resources {
    fn sub_assign(&mut self, o: Resources) {
        *self = *self - o;
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu {}m, memory {} MiB, pods {}",
            self.cpu_milli,
            self.memory_bytes / (1024 * 1024),
            self.pods
        )
    }
}

/// One Kubernetes node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned): takes no new pods; running ones stay.
    pub unschedulable: bool,
    /// `status.conditions[type=Ready].status == "True"`.
    pub ready: bool,
    pub allocatable: Resources,
    /// What the node's own (offline: HDFS/batch) workload uses now, as measured (node usage
    /// minus the usage of our pods on it). Read only by pools that lend by usage; `None`
    /// when no fresh measurement exists, and such a node then lends nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_usage: Option<Resources>,
}

impl Node {
    /// Cordoned and NotReady nodes take no new pods.
    pub fn accepts_new_pods(&self) -> bool {
        self.ready && !self.unschedulable
    }
}

/// A pod already running on a node (from `kubectl get pods -A -o json`), not one of ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Effective request as Kubernetes computes it (sum of containers, max with each init
    /// container, plus overhead), with `pods: 1`.
    pub request: Resources,
}

/// Everything known about one site at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteSnapshot {
    pub id: SiteId,
    pub nodes: Vec<Node>,
    pub running_pods: Vec<RunningPod>,
}

/// Role of a pod inside a Flink job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodRole {
    Jobmanager,
    Taskmanager,
}

/// Which sites a job may run in. An empty `allowed` list means every site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteConstraint {
    pub preferred: Option<SiteId>,
    pub allowed: Vec<SiteId>,
}

impl SiteConstraint {
    pub fn allows(&self, site: &SiteId) -> bool {
        self.allowed.is_empty() || self.allowed.contains(site)
    }
}

/// What the placer needs to know about one StreamJob, with quantities already resolved and
/// the TaskManager count already derived from the slot need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDemand {
    pub id: JobId,
    pub tenant: TenantId,
    pub priority: Priority,
    /// Request of the one JobManager pod (`pods: 1`).
    pub job_manager: Resources,
    /// Request of each TaskManager pod (`pods: 1`).
    pub task_manager: Resources,
    pub task_managers: u32,
    pub sites: SiteConstraint,
    pub node_selector: BTreeMap<String, String>,
    pub node_affinity: Option<NodeAffinity>,
    pub tolerations: Vec<Toleration>,
    /// May use capacity borrowed from offline (co-located HDFS/batch) pools.
    pub allow_offline: bool,
}

impl JobDemand {
    /// Total request of the whole gang.
    pub fn total(&self) -> Resources {
        self.job_manager + self.task_manager.times(i64::from(self.task_managers))
    }
}

/// Where one pod of a job goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodPlacement {
    pub role: PodRole,
    pub index: u32,
    pub node: String,
}

/// A placed job: its site and the node of every pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPlacement {
    pub job: JobId,
    pub site: SiteId,
    pub pods: Vec<PodPlacement>,
}

/// The policy as placement needs it, resolved from the user's policy file by
/// `crate::input::policy`. Every field is already validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementPolicy {
    /// Node pools in file order; a node belongs to the first pool whose site and selector
    /// match it, or to no pool (plain online capacity).
    pub pools: Vec<NodePool>,
    /// Hard per-tenant, per-site limits on what that tenant's jobs request in total.
    pub quotas: Vec<TenantQuota>,
    /// Room a site must keep for the other site's jobs of at least some priority.
    pub reserves: Vec<FailoverReserve>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePool {
    pub name: String,
    /// `None`: the pool applies in every site.
    pub site: Option<SiteId>,
    /// Label equality selector; every pair must match the node's labels.
    pub selector: BTreeMap<String, String>,
    /// `Some` for offline (HDFS/batch) pools whose idle capacity may be borrowed.
    pub offline: Option<OfflineLending>,
}

impl NodePool {
    pub fn matches(&self, site: &SiteId, node: &Node) -> bool {
        self.site.as_ref().is_none_or(|s| s == site)
            && self
                .selector
                .iter()
                .all(|(k, v)| node.labels.get(k) == Some(v))
    }
}

impl PlacementPolicy {
    /// Whether any offline pool lends at `at`.
    pub fn lending_open_at(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        self.pools
            .iter()
            .filter_map(|p| p.offline.as_ref())
            .any(|l| l.is_open_at(at))
    }
}

/// How much of an offline pool twinsite may borrow, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfflineLending {
    /// Lending is allowed only while at least one window is open. No windows: never.
    pub windows: Vec<LendingWindow>,
    /// Per node, borrowed pods may request at most `max_borrow_fraction × allocatable`
    /// minus `safety_margin`, and never more than the node has free.
    pub max_borrow_fraction: f64,
    pub safety_margin: Resources,
    /// What limits lending besides the fraction (policy `offline.lendBy`).
    #[serde(default)]
    pub lend_by: LendBasis,
}

/// What an offline node lends from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LendBasis {
    /// `max_borrow_fraction × allocatable − safety_margin`: a fixed share of every node.
    #[default]
    Requests,
    /// `min(allocatable − owner usage, max_borrow_fraction × allocatable) − safety_margin`:
    /// the share shrinks as the node's own workload grows, and a node with no fresh usage
    /// measurement lends nothing (as co-location schedulers publish "batch" capacity).
    Usage,
}

impl OfflineLending {
    pub fn is_open_at(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        self.windows.iter().any(|w| w.contains(at))
    }

    /// The most borrowed pods may request on one node of `allocatable` size.
    pub fn borrowable(&self, allocatable: &Resources) -> Resources {
        let frac = |v: i64| ((v as f64) * self.max_borrow_fraction).floor() as i64;
        Resources {
            cpu_milli: frac(allocatable.cpu_milli),
            memory_bytes: frac(allocatable.memory_bytes),
            pods: frac(allocatable.pods),
        }
        .saturating_sub(&self.safety_margin)
    }

    /// The most borrowed pods may request on `node` now: [`Self::borrowable`], and when the
    /// pool lends by usage, never more than the node's own workload leaves unused (minus the
    /// margin). Requests of other pods on the node are a separate limit the caller applies.
    pub fn borrowable_on(&self, node: &Node) -> Resources {
        let share = self.borrowable(&node.allocatable);
        match self.lend_by {
            LendBasis::Requests => share,
            LendBasis::Usage => match &node.owner_usage {
                None => Resources::ZERO,
                Some(usage) => {
                    let reclaimable = node
                        .allocatable
                        .saturating_sub(usage)
                        .saturating_sub(&self.safety_margin);
                    Resources {
                        cpu_milli: share.cpu_milli.min(reclaimable.cpu_milli).max(0),
                        memory_bytes: share.memory_bytes.min(reclaimable.memory_bytes).max(0),
                        pods: share.pods.max(0),
                    }
                }
            },
        }
    }
}

/// A weekly window in a named timezone, e.g. Mon–Fri 01:00–07:00 Asia/Shanghai. A window
/// whose end is not after its start runs past midnight into the next day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LendingWindow {
    /// Days on which the window opens. Empty is not allowed by the policy parser.
    pub days: Vec<chrono::Weekday>,
    /// Minutes after local midnight, 0..1440.
    pub start_minute: u32,
    pub end_minute: u32,
    pub timezone: chrono_tz::Tz,
}

impl LendingWindow {
    pub fn contains(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let local = at.with_timezone(&self.timezone);
        let minute = local.hour() * 60 + local.minute();
        let today = local.weekday();
        if self.start_minute < self.end_minute {
            self.days.contains(&today) && minute >= self.start_minute && minute < self.end_minute
        } else {
            // Wraps midnight: open from start on an listed day until end on the next day.
            (self.days.contains(&today) && minute >= self.start_minute)
                || (self.days.contains(&today.pred()) && minute < self.end_minute)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantQuota {
    pub tenant: TenantId,
    pub site: SiteId,
    /// `pods: i64::MAX` when the policy sets no pod limit.
    pub limit: Resources,
}

/// `site` must keep room to relaunch the jobs of `protects` whose priority is at least
/// `min_priority`, should `protects` be lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverReserve {
    pub site: SiteId,
    pub protects: SiteId,
    pub min_priority: Priority,
}

/// How running jobs are moved off borrowed offline capacity before its lending window
/// closes (policy `rebalance`, resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalancePolicy {
    /// A job's borrowed pods must be gone this long before the window closes.
    pub lead_time: std::time::Duration,
    /// Most moves (stop with savepoint, relaunch) started in any hour.
    pub moves_per_hour: u32,
}

impl RebalancePolicy {
    pub const DEFAULT_LEAD_TIME: std::time::Duration = std::time::Duration::from_secs(600);
    pub const DEFAULT_MOVES_PER_HOUR: u32 = 360;
}

impl Default for RebalancePolicy {
    fn default() -> Self {
        RebalancePolicy {
            lead_time: Self::DEFAULT_LEAD_TIME,
            moves_per_hour: Self::DEFAULT_MOVES_PER_HOUR,
        }
    }
}
