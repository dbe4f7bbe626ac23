//! Failover survivability: "if dc-a is lost, dc-b can host X % of critical, Y % of high …
//! jobs; missing Z cores / W GiB", for every site, found by re-planning the lost site's jobs
//! into the survivors with the placer itself.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ReportInputs;
use crate::model::{
    JobDemand, JobId, JobPlacement, PlacementPolicy, Priority, Resources, SiteId, SiteSnapshot,
};
use crate::placement::{self, PlacementOptions, PlacementPlan, PlacementRequest, Unplaced};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierSurvival {
    pub priority: Priority,
    /// The lost site's jobs of this tier that twinsite relaunches.
    pub jobs: usize,
    pub hosted: usize,
    /// `hosted / jobs × 100`; `None` when the tier has no such jobs.
    pub percent: Option<f64>,
    /// Total request of the jobs of this tier that find no room.
    pub missing: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Survivability {
    pub lost: SiteId,
    pub survivors: Vec<SiteId>,
    /// Highest tier first.
    pub tiers: Vec<TierSurvival>,
    /// Total request of the lost site's jobs that find no room.
    pub missing: Resources,
    /// The lost site's jobs that find no room, with the placer's reason.
    pub not_hosted: Vec<Unplaced>,
    /// The lost site's jobs left out because twinsite never relaunches them.
    pub not_relaunched: Vec<JobId>,
    /// The survivors' own jobs left without a place (preempted by a higher tier and not
    /// placed again).
    pub displaced: Vec<JobId>,
    /// Offline lending windows were open at the report's instant (borrowed room counted).
    pub lending_open: bool,
}

/// The re-plan behind one [`Survivability`], kept whole so that it can be checked.
#[derive(Debug, Clone)]
pub struct SiteLossWhatIf {
    pub lost: SiteId,
    pub sites: Vec<SiteSnapshot>,
    /// The survivors' jobs first, then the lost site's jobs that fail over.
    pub jobs: Vec<JobDemand>,
    pub policy: PlacementPolicy,
    /// The survivors' jobs where the baseline put them.
    pub running: Vec<JobPlacement>,
    /// The lost site's jobs that fail over.
    pub failing_over: BTreeSet<JobId>,
    pub not_relaunched: Vec<JobId>,
    pub plan: PlacementPlan,
}

impl SiteLossWhatIf {
    pub fn request(&self, at: chrono::DateTime<chrono::Utc>) -> PlacementRequest<'_> {
        PlacementRequest {
            sites: &self.sites,
            jobs: &self.jobs,
            policy: &self.policy,
            running: &self.running,
            at,
            options: PlacementOptions::default(),
        }
    }
}

/// Re-plans `lost`'s jobs (as `baseline` placed them) into the other sites, keeping the
/// survivors' jobs where they are unless a higher tier preempts them.
pub fn site_loss_what_if(
    inputs: &ReportInputs,
    baseline: &PlacementPlan,
    lost: &SiteId,
) -> SiteLossWhatIf {
    let sites: Vec<SiteSnapshot> = inputs
        .sites
        .iter()
        .filter(|s| &s.id != lost)
        .cloned()
        .collect();
    let by_id: BTreeMap<&JobId, &JobDemand> = inputs.jobs.iter().map(|j| (&j.id, j)).collect();
    let mut jobs = Vec::new();
    let mut running = Vec::new();
    let mut lost_jobs = Vec::new();
    let mut failing_over = BTreeSet::new();
    let mut not_relaunched = Vec::new();
    for p in &baseline.placements {
        let Some(job) = by_id.get(&p.job) else {
            continue;
        };
        if &p.site == lost {
            if inputs.no_failover.contains(&p.job) {
                not_relaunched.push(p.job.clone());
                continue;
            }
            let mut job = (*job).clone();
            // The lost site cannot be preferred any more; the allowed list stays as the spec
            // says, so a job allowed only in the lost site is reported, not moved.
            if job.sites.preferred.as_ref() == Some(lost) {
                job.sites.preferred = None;
            }
            failing_over.insert(job.id.clone());
            lost_jobs.push(job);
        } else {
            jobs.push((*job).clone());
            running.push(p.clone());
        }
    }
    jobs.extend(lost_jobs);
    // Reserves exist to hold room for exactly this moment: holding them back now would
    // refuse the jobs they were kept for.
    let policy = PlacementPolicy {
        reserves: Vec::new(),
        ..inputs.policy.clone()
    };
    let plan = placement::plan(&PlacementRequest {
        sites: &sites,
        jobs: &jobs,
        policy: &policy,
        running: &running,
        at: inputs.at,
        options: PlacementOptions::default(),
    });
    SiteLossWhatIf {
        lost: lost.clone(),
        sites,
        jobs,
        policy,
        running,
        failing_over,
        not_relaunched,
        plan,
    }
}

pub(super) fn survivability(inputs: &ReportInputs, baseline: &PlacementPlan) -> Vec<Survivability> {
    if inputs.sites.len() < 2 {
        return Vec::new();
    }
    let mut seen = BTreeSet::new();
    inputs
        .sites
        .iter()
        .filter(|s| seen.insert(&s.id))
        .map(|s| summarise(inputs, &site_loss_what_if(inputs, baseline, &s.id)))
        .collect()
}

/// Reads the what-if's plan: which of the failing-over jobs found room, per tier.
pub fn summarise(inputs: &ReportInputs, what_if: &SiteLossWhatIf) -> Survivability {
    let hosted: BTreeSet<&JobId> = what_if
        .plan
        .placements
        .iter()
        .map(|p| &p.job)
        .filter(|id| what_if.failing_over.contains(*id))
        .collect();
    let mut tiers: BTreeMap<Priority, TierSurvival> = BTreeMap::new();
    let mut missing = Resources::ZERO;
    for job in what_if
        .jobs
        .iter()
        .filter(|j| what_if.failing_over.contains(&j.id))
    {
        let tier = tiers.entry(job.priority).or_insert(TierSurvival {
            priority: job.priority,
            jobs: 0,
            hosted: 0,
            percent: None,
            missing: Resources::ZERO,
        });
        tier.jobs += 1;
        if hosted.contains(&job.id) {
            tier.hosted += 1;
        } else {
            tier.missing += job.total();
            missing += job.total();
        }
    }
    let tiers = Priority::ALL
        .iter()
        .map(|p| {
            let mut t = tiers.remove(p).unwrap_or(TierSurvival {
                priority: *p,
                jobs: 0,
                hosted: 0,
                percent: None,
                missing: Resources::ZERO,
            });
            t.percent = (t.jobs > 0).then(|| 100.0 * t.hosted as f64 / t.jobs as f64);
            t
        })
        .collect();
    let survivors: Vec<&SiteId> = what_if.sites.iter().map(|s| &s.id).collect();
    let by_id: BTreeMap<&JobId, &JobDemand> = what_if.jobs.iter().map(|j| (&j.id, j)).collect();
    let not_hosted = what_if
        .plan
        .unplaced
        .iter()
        .filter(|u| what_if.failing_over.contains(&u.job))
        .map(|u| {
            // The placer's wording assumes a site missing from the policy; here the site is
            // lost, and the spec is what keeps the job out of the survivors.
            let pinned = by_id.get(&u.job).filter(|j| {
                !j.sites.allowed.is_empty() && !survivors.iter().any(|s| j.sites.allows(s))
            });
            match pinned {
                Some(j) => Unplaced {
                    job: u.job.clone(),
                    reason: format!(
                        "spec.placement.sites.allowed is [{}]: no surviving site may run it",
                        j.sites
                            .allowed
                            .iter()
                            .map(|s| s.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
                None => u.clone(),
            }
        })
        .collect();
    let displaced: BTreeSet<JobId> = what_if
        .plan
        .unplaced
        .iter()
        .map(|u| &u.job)
        .filter(|id| !what_if.failing_over.contains(*id))
        .cloned()
        .collect();
    let lending_open = inputs.policy.lending_open_at(inputs.at);
    Survivability {
        lost: what_if.lost.clone(),
        survivors: what_if.sites.iter().map(|s| s.id.clone()).collect(),
        tiers,
        missing,
        not_hosted,
        not_relaunched: what_if.not_relaunched.clone(),
        displaced: displaced.into_iter().collect(),
        lending_open,
    }
}
