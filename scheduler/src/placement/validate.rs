//! An independent check of a plan against the hard rules, sharing no code with the placers
//! (only Kubernetes' matching semantics): used by the property tests and by `twinsite plan`
//! to refuse a plan that breaks a rule.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::compat::{find_untolerated_blocking_taint, required_node_affinity_matches, tolerates};
use super::{PlacementPlan, PlacementRequest};
use crate::k8s::TaintEffect;
use crate::model::{JobDemand, JobId, Node, PodRole, Resources, SiteId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    UnknownJob,
    JobListedTwice,
    JobMissing,
    UnknownSite,
    SiteNotAllowed,
    IncompleteGang,
    UnknownNode,
    NodeNotAccepting,
    BlockingTaint,
    SelectorMismatch,
    OverCapacity,
    JobManagerOnOffline,
    OfflineNotAllowed,
    LendingClosed,
    BorrowCapExceeded,
    QuotaExceeded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub job: Option<JobId>,
    pub node: Option<String>,
    pub message: String,
}

fn violation(
    kind: ViolationKind,
    job: Option<&JobId>,
    node: Option<&str>,
    message: String,
) -> Violation {
    Violation {
        kind,
        job: job.cloned(),
        node: node.map(str::to_string),
        message,
    }
}

/// Every rule `plan` breaks for `req`; empty when it breaks none. Pods that stay where
/// `req.running` had them are exempt from NoSchedule taints and selectors (both only bind at
/// scheduling time in Kubernetes); NoExecute and capacity still apply.
pub fn validate_plan(req: &PlacementRequest, plan: &PlacementPlan) -> Vec<Violation> {
    use ViolationKind::*;
    let mut out = Vec::new();
    let jobs: BTreeMap<&JobId, &JobDemand> = req.jobs.iter().map(|j| (&j.id, j)).collect();

    let mut seen: BTreeMap<&JobId, usize> = BTreeMap::new();
    for id in plan
        .placements
        .iter()
        .map(|p| &p.job)
        .chain(plan.unplaced.iter().map(|u| &u.job))
    {
        *seen.entry(id).or_default() += 1;
    }
    for (id, n) in &seen {
        if !jobs.contains_key(id) {
            out.push(violation(
                UnknownJob,
                Some(id),
                None,
                format!("{id} is not a job of the request"),
            ));
        } else if *n > 1 {
            out.push(violation(
                JobListedTwice,
                Some(id),
                None,
                format!("{id} appears {n} times"),
            ));
        }
    }
    for id in jobs.keys() {
        if !seen.contains_key(id) {
            out.push(violation(
                JobMissing,
                Some(id),
                None,
                format!("{id} is neither placed nor unplaced"),
            ));
        }
    }

    let sites: BTreeMap<&SiteId, usize> = req
        .sites
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (&s.id, i))
        .collect();
    let mut nodes: Vec<HashMap<&str, &Node>> = Vec::new();
    let mut foreign: Vec<HashMap<&str, Resources>> = Vec::new();
    for s in req.sites {
        nodes.push(s.nodes.iter().map(|n| (n.name.as_str(), n)).collect());
        let mut f: HashMap<&str, Resources> = HashMap::new();
        for p in &s.running_pods {
            *f.entry(p.node.as_str()).or_default() += p.request;
        }
        foreign.push(f);
    }
    let running: BTreeSet<(&JobId, &SiteId, PodRole, u32, &str)> = req
        .running
        .iter()
        .flat_map(|r| {
            r.pods
                .iter()
                .map(move |p| (&r.job, &r.site, p.role, p.index, p.node.as_str()))
        })
        .collect();

    let mut ours: BTreeMap<(usize, &str), Resources> = BTreeMap::new();
    let mut tenant_use: BTreeMap<(&str, &SiteId), Resources> = BTreeMap::new();
    for p in &plan.placements {
        let Some(job) = jobs.get(&p.job) else {
            continue;
        };
        let Some(&si) = sites.get(&p.site) else {
            out.push(violation(
                UnknownSite,
                Some(&p.job),
                None,
                format!("site {} is not in the snapshot", p.site),
            ));
            continue;
        };
        if !job.sites.allows(&p.site) {
            out.push(violation(
                SiteNotAllowed,
                Some(&p.job),
                None,
                format!("site {} is not allowed", p.site),
            ));
        }
        let mut shape: Vec<(PodRole, u32)> = p.pods.iter().map(|x| (x.role, x.index)).collect();
        shape.sort();
        if !super::is_whole_gang(&shape, job.task_managers) {
            out.push(violation(
                IncompleteGang,
                Some(&p.job),
                None,
                format!(
                    "pods {shape:?} are not exactly one JobManager and {} TaskManagers",
                    job.task_managers
                ),
            ));
        }
        *tenant_use
            .entry((job.tenant.0.as_str(), &p.site))
            .or_default() += job.total();
        for pod in &p.pods {
            let Some(node) = nodes[si].get(pod.node.as_str()) else {
                out.push(violation(
                    UnknownNode,
                    Some(&p.job),
                    Some(&pod.node),
                    format!("node {} is not in site {}", pod.node, p.site),
                ));
                continue;
            };
            let kept = running.contains(&(&p.job, &p.site, pod.role, pod.index, pod.node.as_str()));
            if !node.ready || node.unschedulable {
                out.push(violation(
                    NodeNotAccepting,
                    Some(&p.job),
                    Some(&pod.node),
                    "node is cordoned or NotReady".into(),
                ));
            }
            if let Some(t) = find_untolerated_blocking_taint(&node.taints, &job.tolerations) {
                let evicting = node.taints.iter().any(|t| {
                    t.effect == TaintEffect::NoExecute
                        && !job.tolerations.iter().any(|tol| tolerates(tol, t))
                });
                if !kept || evicting {
                    out.push(violation(
                        BlockingTaint,
                        Some(&p.job),
                        Some(&pod.node),
                        format!("taint {}={} {:?} not tolerated", t.key, t.value, t.effect),
                    ));
                }
            }
            if !kept
                && !required_node_affinity_matches(
                    &job.node_selector,
                    job.node_affinity.as_ref(),
                    node,
                )
            {
                out.push(violation(
                    SelectorMismatch,
                    Some(&p.job),
                    Some(&pod.node),
                    "nodeSelector/affinity does not match".into(),
                ));
            }
            let pool = req
                .policy
                .pools
                .iter()
                .find(|pool| pool.matches(&p.site, node));
            if let Some(lending) = pool.and_then(|pool| pool.offline.as_ref()) {
                if pod.role == PodRole::Jobmanager {
                    out.push(violation(
                        JobManagerOnOffline,
                        Some(&p.job),
                        Some(&pod.node),
                        "JobManager on an offline node".into(),
                    ));
                }
                if !job.allow_offline {
                    out.push(violation(
                        OfflineNotAllowed,
                        Some(&p.job),
                        Some(&pod.node),
                        "job does not allow offline nodes".into(),
                    ));
                }
                if !lending.is_open_at(req.at) {
                    out.push(violation(
                        LendingClosed,
                        Some(&p.job),
                        Some(&pod.node),
                        "lending window closed".into(),
                    ));
                }
            }
            let r = match pod.role {
                PodRole::Jobmanager => job.job_manager,
                PodRole::Taskmanager => job.task_manager,
            };
            *ours.entry((si, pod.node.as_str())).or_default() += r;
        }
    }
    for (&(si, name), used) in &ours {
        let Some(node) = nodes[si].get(name) else {
            continue;
        };
        let total = *used + foreign[si].get(name).copied().unwrap_or_default();
        if !total.fits_in(&node.allocatable) {
            out.push(violation(
                OverCapacity,
                None,
                Some(name),
                format!("requests {total} exceed allocatable {}", node.allocatable),
            ));
        }
        let site = &req.sites[si].id;
        let pool = req
            .policy
            .pools
            .iter()
            .find(|pool| pool.matches(site, node));
        if let Some(lending) = pool.and_then(|pool| pool.offline.as_ref()) {
            let cap = lending.borrowable_on(node);
            if !used.fits_in(&cap) {
                out.push(violation(
                    BorrowCapExceeded,
                    None,
                    Some(name),
                    format!("borrowed {used} exceed the cap {cap}"),
                ));
            }
        }
    }
    for q in &req.policy.quotas {
        if let Some(used) = tenant_use.get(&(q.tenant.0.as_str(), &q.site))
            && !used.fits_in(&q.limit)
        {
            out.push(violation(
                QuotaExceeded,
                None,
                None,
                format!(
                    "tenant {} in {} uses {used} over {}",
                    q.tenant, q.site, q.limit
                ),
            ));
        }
    }
    out
}
