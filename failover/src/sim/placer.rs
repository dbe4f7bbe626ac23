//! The scheduler as the engine's placer: `scheduler::placement::plan` over one site's
//! snapshot, with the jobs already running there pinned first. The same adapter the
//! controller's failover dry run uses, here over the simulated world's nodes.

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
        PlacementOutcome {
            placed: plan
                .placements
                .into_iter()
                .filter(|p| moving.contains(&p.job))
                .collect(),
            not_fitting: plan
                .unplaced
                .into_iter()
                .filter(|u| moving.contains(&u.job))
                .map(|u| NotFitting {
                    job: u.job,
                    reason: u.reason,
                    missing: Resources::ZERO,
                })
                .collect(),
            preempt: plan.preemptions.into_iter().map(|p| p.victim).collect(),
        }
    }
}
