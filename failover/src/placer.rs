//! The scheduler as the engine's placer: `scheduler::placement::plan` over one site's
//! snapshot, with the jobs already running there pinned first. The controller's failover
//! (and its dry run) uses it over the sites' nodes, the simulation over its world's.

use std::collections::{BTreeMap, BTreeSet};

use scheduler::model::{
    JobDemand, JobId, JobPlacement, PlacementPolicy, Resources, SiteId, SiteSnapshot,
};
use scheduler::placement::{self, PlacementOptions, PlacementRequest};

use crate::types::{NotFitting, PlacementOutcome, Placer, Timestamp};

/// The scheduler's heuristic as a [`Placer`], over fixed site snapshots and the placement of
/// the jobs running now.
#[derive(Debug, Clone)]
pub struct SchedulerPlacer {
    snapshots: BTreeMap<SiteId, SiteSnapshot>,
    running: Vec<JobPlacement>,
    demands: BTreeMap<JobId, JobDemand>,
    policy: PlacementPolicy,
    at: Timestamp,
}

impl SchedulerPlacer {
    pub fn new(
        snapshots: Vec<SiteSnapshot>,
        running: Vec<JobPlacement>,
        demands: Vec<JobDemand>,
        policy: &PlacementPolicy,
        at: Timestamp,
    ) -> SchedulerPlacer {
        // Failover reserves exist to be spent by exactly this move.
        let policy = PlacementPolicy {
            reserves: Vec::new(),
            ..policy.clone()
        };
        SchedulerPlacer {
            snapshots: snapshots.into_iter().map(|s| (s.id.clone(), s)).collect(),
            running,
            demands: demands.into_iter().map(|d| (d.id.clone(), d)).collect(),
            policy,
            at,
        }
    }
}

impl Placer for SchedulerPlacer {
    fn place(
        &self,
        site: &SiteId,
        jobs: &[JobDemand],
        avoid_nodes: &BTreeSet<String>,
    ) -> PlacementOutcome {
        let Some(snapshot) = self.snapshots.get(site) else {
            return PlacementOutcome {
                not_fitting: jobs
                    .iter()
                    .map(|j| NotFitting {
                        job: j.id.clone(),
                        reason: format!("site {site} did not answer; its capacity is unknown"),
                        missing: Resources::ZERO,
                    })
                    .collect(),
                ..PlacementOutcome::default()
            };
        };
        let mut snapshot = snapshot.clone();
        for node in &mut snapshot.nodes {
            if avoid_nodes.contains(&node.name) {
                node.unschedulable = true;
            }
        }
        let moving: BTreeSet<&JobId> = jobs.iter().map(|j| &j.id).collect();
        let existing: Vec<JobPlacement> = self
            .running
            .iter()
            .filter(|p| &p.site == site && !moving.contains(&p.job))
            .cloned()
            .collect();
        let mut all: Vec<JobDemand> = existing
            .iter()
            .filter_map(|p| self.demands.get(&p.job).cloned())
            .collect();
        all.extend(jobs.iter().cloned());
        let plan = placement::plan(&PlacementRequest {
            sites: std::slice::from_ref(&snapshot),
            jobs: &all,
            policy: &self.policy,
            running: &existing,
            at: self.at,
            options: PlacementOptions::default(),
        });
        let free = free_after(&snapshot, &plan.placements, &all);
        let demand_of: BTreeMap<&JobId, &JobDemand> = all.iter().map(|d| (&d.id, d)).collect();
        PlacementOutcome {
            not_fitting: plan
                .unplaced
                .into_iter()
                .filter(|u| moving.contains(&u.job))
                .map(|u| NotFitting {
                    missing: demand_of
                        .get(&u.job)
                        .map_or(Resources::ZERO, |d| shortfall(&d.total(), &free)),
                    job: u.job,
                    reason: u.reason,
                })
                .collect(),
            placed: plan
                .placements
                .into_iter()
                .filter(|p| moving.contains(&p.job))
                .collect(),
            preempt: plan.preemptions.into_iter().map(|p| p.victim).collect(),
        }
    }
}

/// What is left of the site's schedulable capacity once foreign pods and every placed job
/// are counted: a job that did not fit lacks its request minus this (per resource), the
/// capacity to add or free for it. Zero where room exists and quota, constraints or
/// fragmentation held it back; the reason says which.
fn free_after(
    snapshot: &SiteSnapshot,
    placements: &[JobPlacement],
    demands: &[JobDemand],
) -> Resources {
    let usable: BTreeSet<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.ready && !n.unschedulable)
        .map(|n| n.name.as_str())
        .collect();
    let mut capacity = Resources::ZERO;
    for node in snapshot
        .nodes
        .iter()
        .filter(|n| usable.contains(n.name.as_str()))
    {
        capacity += node.allocatable;
    }
    let mut used = Resources::ZERO;
    for pod in snapshot
        .running_pods
        .iter()
        .filter(|p| usable.contains(p.node.as_str()))
    {
        used += pod.request;
    }
    let demand_of: BTreeMap<&JobId, &JobDemand> = demands.iter().map(|d| (&d.id, d)).collect();
    for p in placements {
        if let Some(d) = demand_of.get(&p.job) {
            used += d.total();
        }
    }
    shortfall(&capacity, &used)
}

/// `need - have` per resource, never below zero.
fn shortfall(need: &Resources, have: &Resources) -> Resources {
    Resources {
        cpu_milli: (need.cpu_milli - have.cpu_milli).max(0),
        memory_bytes: (need.memory_bytes - have.memory_bytes).max(0),
        pods: (need.pods - have.pods).max(0),
    }
}

#[cfg(test)]
mod tests {
    use scheduler::model::{Node, Priority, SiteConstraint, TenantId};

    use super::*;

    fn node(name: &str) -> Node {
        Node {
            owner_usage: None,
            name: name.into(),
            labels: BTreeMap::from([("kubernetes.io/hostname".into(), name.into())]),
            taints: vec![],
            unschedulable: false,
            ready: true,
            allocatable: Resources::new(8_000, 32 << 30, 110),
        }
    }

    fn demand(name: &str, task_managers: u32) -> JobDemand {
        JobDemand {
            id: JobId::new("ns", name),
            tenant: TenantId("t".into()),
            priority: Priority::Normal,
            job_manager: Resources::new(1_000, 4 << 30, 1),
            task_manager: Resources::new(2_000, 8 << 30, 1),
            task_managers,
            sites: SiteConstraint::default(),
            node_selector: BTreeMap::new(),
            node_affinity: None,
            tolerations: vec![],
            allow_offline: false,
        }
    }

    #[test]
    fn a_job_that_does_not_fit_reports_its_request_less_the_capacity_left() {
        let site = SiteId("b".into());
        let placer = SchedulerPlacer::new(
            vec![SiteSnapshot {
                id: site.clone(),
                nodes: vec![node("b-1"), node("b-2")],
                running_pods: vec![],
            }],
            vec![],
            vec![],
            &PlacementPolicy::default(),
            chrono::Utc::now(),
        );
        // 16 cpu and 64 GiB in the site: the first job takes 7 cpu and 28 GiB, the second
        // asks for 13 cpu and 52 GiB of the 9 cpu and 36 GiB left; pods are plenty.
        let outcome = placer.place(
            &site,
            &[demand("first", 3), demand("second", 6)],
            &BTreeSet::new(),
        );
        assert_eq!(outcome.placed.len(), 1, "{outcome:?}");
        assert_eq!(outcome.not_fitting.len(), 1, "{outcome:?}");
        let missing = outcome.not_fitting[0].missing;
        assert_eq!(missing, Resources::new(4_000, 16 << 30, 0));
    }
}
