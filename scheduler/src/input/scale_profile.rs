//! Planned elasticity (policy `scaleProfiles`): for a stated stretch of time (a sale day), the
//! jobs of some tenants or some named jobs run at a multiple of their parallelism.
//!
//! Pure: the policy section is checked here, and [`ScaleProfiles::effective`] turns a job and
//! an instant into the job as it must run then. The controller relaunches a job whose
//! effective spec changed through its savepoint path; the capacity report plans the scaled
//! fleet as a what-if. Never changes a job outside its profile's window.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::Problems;
use super::streamjob::StreamJob;
use crate::limits::{FLINK_MAX_PARALLELISM, MAX_TASK_MANAGERS_PER_JOB};

/// Most profiles one policy may hold.
pub const MAX_SCALE_PROFILES: usize = 100;
/// Largest factor: beyond it a "profile" is a different job.
pub const MAX_PARALLELISM_FACTOR: f64 = 16.0;
/// Longest window: sale periods are days, not seasons.
pub const MAX_PROFILE_SPAN: chrono::TimeDelta = chrono::TimeDelta::days(31);

/// One entry of `scaleProfiles` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleProfileSpec {
    pub name: String,
    /// RFC 3339 instants; the profile holds from `from` (inclusive) to `until` (exclusive).
    pub from: String,
    pub until: String,
    pub parallelism_factor: f64,
    /// Jobs of these tenants; with `jobs`, a job named by either is scaled. Neither: every job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Jobs as `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleProfile {
    pub name: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub parallelism_factor: f64,
    pub tenants: BTreeSet<String>,
    pub jobs: BTreeSet<String>,
}

impl ScaleProfile {
    pub fn is_active_at(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.until
    }

    pub fn covers(&self, job: &StreamJob) -> bool {
        (self.tenants.is_empty() && self.jobs.is_empty())
            || self.tenants.contains(&job.tenant().0)
            || self.jobs.contains(&job.id().to_string())
    }

    /// `job` at this profile's factor: `parallelism` and every `vertexParallelism` entry
    /// multiplied and rounded up, never above the job's `maxParallelism` (Flink's bound when
    /// unset) or what the most TaskManagers a job may have can hold, nor below 1. Vertices whose parallelism the job's code fixes (seen only in its
    /// execution plan) keep it, as they would under Flink's own default-parallelism change.
    pub fn scale(&self, job: &StreamJob) -> StreamJob {
        // A scaled job must still be one admission takes: within its key groups and within
        // the TaskManagers one job may have.
        let slots_bound = job
            .spec
            .task_manager
            .slots
            .max(1)
            .saturating_mul(MAX_TASK_MANAGERS_PER_JOB);
        let cap = job
            .spec
            .max_parallelism
            .unwrap_or(FLINK_MAX_PARALLELISM)
            .min(FLINK_MAX_PARALLELISM)
            .min(slots_bound);
        let scaled = |p: u32| -> u32 {
            let target = (f64::from(p) * self.parallelism_factor).ceil();
            // `target` is finite and positive: factor and parallelism are bounded.
            (target.min(f64::from(cap)) as u32).max(1)
        };
        let mut out = job.clone();
        out.spec.parallelism = scaled(job.spec.parallelism);
        for p in out.spec.vertex_parallelism.values_mut() {
            *p = scaled(*p);
        }
        out
    }
}

/// The policy's profiles, in file order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleProfiles(pub Vec<ScaleProfile>);

impl ScaleProfiles {
    /// The profile `job` runs under at `at`: of those active and covering it, the largest
    /// factor (a sale day inside a sale week takes the sale day's), the first on a tie.
    pub fn active_for(&self, job: &StreamJob, at: DateTime<Utc>) -> Option<&ScaleProfile> {
        self.0
            .iter()
            .filter(|p| p.is_active_at(at) && p.covers(job))
            .fold(None, |best: Option<&ScaleProfile>, p| match best {
                Some(b) if b.parallelism_factor >= p.parallelism_factor => Some(b),
                _ => Some(p),
            })
    }

    /// The job as it must run at `at`, and the profile that made it so.
    pub fn effective(
        &self,
        job: &StreamJob,
        at: DateTime<Utc>,
    ) -> (StreamJob, Option<&ScaleProfile>) {
        match self.active_for(job, at) {
            Some(profile) => (profile.scale(job), Some(profile)),
            None => (job.clone(), None),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&ScaleProfile> {
        self.0.iter().find(|p| p.name == name)
    }
}

/// Checks `scaleProfiles`; every problem names `scaleProfiles[i].field`.
pub(crate) fn resolve(
    specs: &[ScaleProfileSpec],
    problems: &mut Problems,
) -> Option<ScaleProfiles> {
    let before = problems.len();
    if specs.len() > MAX_SCALE_PROFILES {
        problems.field(
            "scaleProfiles",
            format!(
                "{} profiles, more than the {MAX_SCALE_PROFILES} allowed",
                specs.len()
            ),
        );
        return None;
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = format!("scaleProfiles[{i}]");
        if spec.name.is_empty() || spec.name.len() > 63 {
            problems.field(format!("{at}.name"), "must be 1 to 63 characters");
        } else if !names.insert(spec.name.clone()) {
            problems.field(
                format!("{at}.name"),
                format!("{:?} is used twice", spec.name),
            );
        }
        let instant = |problems: &mut Problems, field: &str, text: &str| {
            match DateTime::parse_from_rfc3339(text) {
                Ok(t) => Some(t.to_utc()),
                Err(e) => {
                    problems.field(
                        format!("{at}.{field}"),
                        format!("expected an RFC 3339 instant like 2026-11-11T00:00:00+08:00, found {text:?} ({e})"),
                    );
                    None
                }
            }
        };
        let from = instant(problems, "from", &spec.from);
        let until = instant(problems, "until", &spec.until);
        if let (Some(from), Some(until)) = (from, until) {
            if until <= from {
                problems.field(format!("{at}.until"), "must be after from");
            } else if until - from > MAX_PROFILE_SPAN {
                problems.field(
                    format!("{at}.until"),
                    format!(
                        "the window is {} days long; at most 31",
                        (until - from).num_days()
                    ),
                );
            }
        }
        let factor = spec.parallelism_factor;
        if !(factor.is_finite() && factor > 0.0 && factor <= MAX_PARALLELISM_FACTOR) {
            problems.field(
                format!("{at}.parallelismFactor"),
                format!("must be above 0 and at most {MAX_PARALLELISM_FACTOR}, found {factor}"),
            );
        }
        for (j, job) in spec.jobs.iter().enumerate() {
            let parts: Vec<&str> = job.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                problems.field(
                    format!("{at}.jobs[{j}]"),
                    format!("expected namespace/name, found {job:?}"),
                );
            }
        }
        if spec.tenants.len() + spec.jobs.len() > 10_000 {
            problems.field(at.clone(), "names more than 10000 tenants and jobs");
        }
        if let (Some(from), Some(until)) = (from, until) {
            out.push(ScaleProfile {
                name: spec.name.clone(),
                from,
                until,
                parallelism_factor: factor,
                tenants: spec.tenants.iter().cloned().collect(),
                jobs: spec.jobs.iter().cloned().collect(),
            });
        }
    }
    (problems.len() == before).then_some(ScaleProfiles(out))
}
