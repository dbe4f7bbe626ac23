//! Per site, pool and tenant: allocatable, requested (by our jobs and by other pods), used
//! (from metrics) and headroom.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{PodUse, ReportInputs, UseByJob};
use crate::model::{JobDemand, JobId, Node, PodRole, Resources, SiteId, TenantId};
use crate::placement::PlacementPlan;

/// Name of the row for nodes that match no pool of the policy.
pub const UNPOOLED: &str = "(no pool)";

/// A sum over pods of a measured quantity, saying how many pods it covers. A pod without
/// metrics adds nothing to `value` and one to `pods_unmeasured`: the figure is then a lower
/// bound, and renderers say so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measured {
    pub value: f64,
    pub pods_measured: u64,
    pub pods_unmeasured: u64,
}

impl Measured {
    pub fn add(&mut self, value: Option<f64>) {
        match value {
            Some(v) => {
                self.value += v;
                self.pods_measured += 1;
            }
            None => self.pods_unmeasured += 1,
        }
    }

    /// Every pod counted had metrics (vacuously true with no pods).
    pub fn complete(&self) -> bool {
        self.pods_unmeasured == 0
    }

    /// No pod had metrics although there were pods: there is no figure at all.
    pub fn insufficient(&self) -> bool {
        self.pods_measured == 0 && self.pods_unmeasured > 0
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityRow {
    pub allocatable: Resources,
    pub requested_by_jobs: Resources,
    pub requested_by_other_pods: Resources,
    /// `requested_by_jobs + requested_by_other_pods`.
    pub requested: Resources,
    /// `allocatable − requested`; negative when over-committed.
    pub headroom: Resources,
    pub used_cpu_milli: Measured,
    pub used_memory_bytes: Measured,
}

impl CapacityRow {
    fn finish(&mut self) {
        self.requested = self.requested_by_jobs + self.requested_by_other_pods;
        self.headroom = signed_sub(self.allocatable, self.requested);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolCapacity {
    pub pool: String,
    pub offline: bool,
    pub nodes: usize,
    #[serde(flatten)]
    pub row: CapacityRow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantCapacity {
    pub tenant: TenantId,
    /// The tenant's jobs placed in this site.
    pub jobs: usize,
    /// The policy's quota in this site, if any.
    pub quota: Option<Resources>,
    /// What the tenant's placed jobs request in this site (all nodes, as quotas count).
    pub requested: Resources,
    /// `quota − requested`, when there is a quota.
    pub quota_headroom: Option<Resources>,
    pub used_cpu_milli: Measured,
    pub used_memory_bytes: Measured,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteCapacity {
    pub site: SiteId,
    /// Nodes that take new pods; only these count in the rows.
    pub nodes: usize,
    /// NotReady or cordoned nodes, left out of every row.
    pub nodes_not_accepting: usize,
    pub allocatable_not_accepting: Resources,
    pub total: CapacityRow,
    /// Policy order, then [`UNPOOLED`].
    pub pools: Vec<PoolCapacity>,
    /// Sorted by tenant.
    pub tenants: Vec<TenantCapacity>,
}

/// Subtraction that may go negative, so that over-commitment stays visible.
pub(crate) fn signed_sub(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu_milli: a.cpu_milli - b.cpu_milli,
        memory_bytes: a.memory_bytes - b.memory_bytes,
        pods: a.pods - b.pods,
    }
}

pub(crate) fn pod_request(job: &JobDemand, role: PodRole) -> Resources {
    match role {
        PodRole::Jobmanager => job.job_manager,
        PodRole::Taskmanager => job.task_manager,
    }
}

/// The pool a node belongs to, as the placer decides it: the first pool matching it.
pub(crate) fn pool_of(inputs: &ReportInputs, site: &SiteId, node: &Node) -> Option<usize> {
    inputs
        .policy
        .pools
        .iter()
        .position(|p| p.matches(site, node))
}

pub(super) fn sites(
    inputs: &ReportInputs,
    plan: &PlacementPlan,
    uses: &UseByJob,
) -> Vec<SiteCapacity> {
    let jobs: HashMap<&JobId, &JobDemand> = inputs.jobs.iter().map(|j| (&j.id, j)).collect();
    let mut out = Vec::new();
    for snap in inputs.sites {
        // Pool slot per node; `pools.len()` stands for "no pool".
        let unpooled = inputs.policy.pools.len();
        let mut node_slot: HashMap<&str, Option<usize>> = HashMap::new();
        let mut rows = vec![CapacityRow::default(); unpooled + 1];
        let mut counts = vec![0usize; unpooled + 1];
        let mut site = SiteCapacity {
            site: snap.id.clone(),
            nodes: 0,
            nodes_not_accepting: 0,
            allocatable_not_accepting: Resources::ZERO,
            total: CapacityRow::default(),
            pools: Vec::new(),
            tenants: Vec::new(),
        };
        for node in &snap.nodes {
            if node_slot.contains_key(node.name.as_str()) {
                // A repeated node name: the first one counts, as in the placer.
                continue;
            }
            if !node.accepts_new_pods() {
                node_slot.insert(&node.name, None);
                site.nodes_not_accepting += 1;
                site.allocatable_not_accepting += node.allocatable;
                continue;
            }
            let slot = pool_of(inputs, &snap.id, node).unwrap_or(unpooled);
            node_slot.insert(&node.name, Some(slot));
            rows[slot].allocatable += node.allocatable;
            counts[slot] += 1;
            site.nodes += 1;
        }
        for pod in &snap.running_pods {
            if let Some(Some(slot)) = node_slot.get(pod.node.as_str()) {
                rows[*slot].requested_by_other_pods += pod.request;
            }
        }
        let mut tenants: BTreeMap<TenantId, TenantCapacity> = BTreeMap::new();
        for placement in plan.placements.iter().filter(|p| p.site == snap.id) {
            let Some(job) = jobs.get(&placement.job) else {
                continue;
            };
            let tenant = tenants
                .entry(job.tenant.clone())
                .or_insert_with(|| empty_tenant(&job.tenant));
            tenant.jobs += 1;
            for pod in &placement.pods {
                let request = pod_request(job, pod.role);
                let used = PodUse::of(uses, &job.id, pod.role);
                tenant.requested += request;
                tenant.used_cpu_milli.add(used.cpu_milli);
                tenant.used_memory_bytes.add(used.memory_bytes);
                if let Some(Some(slot)) = node_slot.get(pod.node.as_str()) {
                    let row = &mut rows[*slot];
                    row.requested_by_jobs += request;
                    row.used_cpu_milli.add(used.cpu_milli);
                    row.used_memory_bytes.add(used.memory_bytes);
                }
            }
        }
        for quota in inputs.policy.quotas.iter().filter(|q| q.site == snap.id) {
            let tenant = tenants
                .entry(quota.tenant.clone())
                .or_insert_with(|| empty_tenant(&quota.tenant));
            tenant.quota = Some(quota.limit);
        }
        for tenant in tenants.values_mut() {
            tenant.quota_headroom = tenant.quota.map(|q| signed_sub(q, tenant.requested));
        }
        site.tenants = tenants.into_values().collect();

        for (slot, mut row) in rows.into_iter().enumerate() {
            row.finish();
            let total = &mut site.total;
            total.allocatable += row.allocatable;
            total.requested_by_jobs += row.requested_by_jobs;
            total.requested_by_other_pods += row.requested_by_other_pods;
            merge(&mut total.used_cpu_milli, &row.used_cpu_milli);
            merge(&mut total.used_memory_bytes, &row.used_memory_bytes);
            let (pool, offline) = match inputs.policy.pools.get(slot) {
                Some(p) => (p.name.clone(), p.offline.is_some()),
                None => (UNPOOLED.to_string(), false),
            };
            // Pools of other sites, and the catch-all when every node has a pool, say nothing.
            if counts[slot] == 0 {
                continue;
            }
            site.pools.push(PoolCapacity {
                pool,
                offline,
                nodes: counts[slot],
                row,
            });
        }
        site.total.finish();
        out.push(site);
    }
    out
}

fn empty_tenant(tenant: &TenantId) -> TenantCapacity {
    TenantCapacity {
        tenant: tenant.clone(),
        jobs: 0,
        quota: None,
        requested: Resources::ZERO,
        quota_headroom: None,
        used_cpu_milli: Measured::default(),
        used_memory_bytes: Measured::default(),
    }
}

fn merge(into: &mut Measured, from: &Measured) {
    into.value += from.value;
    into.pods_measured += from.pods_measured;
    into.pods_unmeasured += from.pods_unmeasured;
}
