//! Planned elasticity as a what-if: "can the sites hold the sale-day profile, and with a site
//! lost?", answered by planning the scaled fleet with the placer itself and re-running the
//! site-loss survivability on that plan.
//!
//! Each profile is judged at the instant of its window where offline lending helps least
//! (every pool closed, when the window has such an instant), so a "yes" does not lean on
//! borrowed capacity that may be gone during the sale.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::survival::survivability;
use super::{ReportInputs, baseline_plan};
use crate::input::StreamJob;
use crate::input::scale_profile::{ScaleProfile, ScaleProfiles};
use crate::model::{JobDemand, JobId, JobPlacement, Resources};
use crate::placement::Unplaced;

use super::survival::Survivability;

/// Steps at which a window is searched for its least-lending instant: windows and lending
/// windows are minute-grained, a quarter hour finds every closed stretch of useful length.
const SEARCH_STEP: TimeDelta = TimeDelta::minutes(15);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileWhatIf {
    pub profile: String,
    pub parallelism_factor: f64,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The instant the scaled fleet was planned at.
    pub judged_at: DateTime<Utc>,
    /// Offline lending was open at `judged_at`.
    pub lending_open: bool,
    /// Jobs the profile covers.
    pub jobs_scaled: usize,
    /// What the covered jobs request on top of their own spec.
    pub added: Resources,
    pub jobs: usize,
    pub placed: usize,
    /// Jobs of the scaled fleet with no place, with the placer's reason.
    pub unplaced: Vec<Unplaced>,
    /// Site loss during the profile.
    pub failover: Vec<Survivability>,
    /// Covered jobs that could not be scaled (kept at their own spec), with the reason.
    pub not_scaled: Vec<(JobId, String)>,
}

/// One what-if per profile. `stream_jobs[i]` is the job of `inputs.jobs[i]`.
pub fn scale_profile_what_ifs(
    inputs: &ReportInputs,
    stream_jobs: &[StreamJob],
    profiles: &ScaleProfiles,
) -> Vec<ProfileWhatIf> {
    profiles
        .0
        .iter()
        .map(|profile| what_if(inputs, stream_jobs, profile))
        .collect()
}

fn what_if(
    inputs: &ReportInputs,
    stream_jobs: &[StreamJob],
    profile: &ScaleProfile,
) -> ProfileWhatIf {
    let mut jobs: Vec<JobDemand> = inputs.jobs.to_vec();
    let mut jobs_scaled = 0;
    let mut added = Resources::ZERO;
    let mut not_scaled = Vec::new();
    let mut scaled_ids = std::collections::BTreeSet::new();
    for (demand, job) in jobs.iter_mut().zip(stream_jobs) {
        if !profile.covers(job) {
            continue;
        }
        jobs_scaled += 1;
        match profile.scale(job).demand() {
            Ok(scaled) => {
                added += scaled.total().saturating_sub(&demand.total());
                scaled_ids.insert(scaled.id.clone());
                *demand = scaled;
            }
            Err(error) => not_scaled.push((demand.id.clone(), error.to_string())),
        }
    }
    // A scaled job is relaunched (savepoint, new placement): its running pods do not stay.
    let running: Vec<JobPlacement> = inputs
        .running
        .iter()
        .filter(|p| !scaled_ids.contains(&p.job))
        .cloned()
        .collect();
    let judged_at = least_lending_instant(inputs, profile);
    let scaled_inputs = ReportInputs {
        jobs: &jobs,
        running: &running,
        at: judged_at,
        rightsizing: None,
        ..*inputs
    };
    let plan = baseline_plan(&scaled_inputs);
    ProfileWhatIf {
        profile: profile.name.clone(),
        parallelism_factor: profile.parallelism_factor,
        from: profile.from,
        until: profile.until,
        judged_at,
        lending_open: inputs.policy.lending_open_at(judged_at),
        jobs_scaled,
        added,
        jobs: jobs.len(),
        placed: plan.placements.len(),
        unplaced: plan.unplaced.clone(),
        failover: survivability(&scaled_inputs, &plan),
        not_scaled,
    }
}

/// The first instant of the window with no lending open, else the window's start.
fn least_lending_instant(inputs: &ReportInputs, profile: &ScaleProfile) -> DateTime<Utc> {
    let mut at = profile.from;
    while at < profile.until {
        if !inputs.policy.lending_open_at(at) {
            return at;
        }
        at += SEARCH_STEP;
    }
    profile.from
}
