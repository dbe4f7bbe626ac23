//! Right-sizing summary: cores and GiB that applying every recommendation would give back or
//! take, which jobs lack resources, the jobs most worth fixing, and the jobs no number could
//! be given for (with the reason).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::RightsizingInput;
use crate::model::{JobDemand, JobId, Priority, Resources, TenantId};
use crate::placement::demand_units;
use crate::rightsize::scaling::Alignment;
use crate::rightsize::{Assessment, Finding, ProcessEvidence, Recommendation};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobChange {
    pub job: JobId,
    pub tenant: TenantId,
    pub priority: Priority,
    /// What the job requests now (JobManager plus TaskManagers).
    pub current: Resources,
    /// What it would request with the recommendation applied; parts that were not assessed
    /// stay as they are.
    pub recommended: Resources,
    pub current_parallelism: u32,
    pub recommended_parallelism: u32,
    /// Findings a person must read before applying (limits exceeded, plan slot need).
    pub findings: Vec<String>,
    /// Per job vertex, what it runs with and what it would (each vertex's own busiest
    /// window); empty when the parallelism was not assessed.
    #[serde(default)]
    pub vertices: Vec<VertexChange>,
}

/// One job vertex (operator chain) of a [`JobChange`]: the grain Flink's
/// `pipeline.jobvertex-parallelism-overrides` sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VertexChange {
    /// Flink's job vertex id.
    pub id: String,
    pub name: String,
    pub current_parallelism: u32,
    /// What the vertex would run with: its need when the job changes and it is not pinned
    /// in code, else its current parallelism.
    pub recommended_parallelism: u32,
    /// What it needs, whether or not it is applied (differs for pinned vertices and jobs
    /// left inside their utilisation band).
    pub needed_parallelism: u32,
    pub max_parallelism: u32,
    pub pinned: bool,
    /// How key-group snapping moved the need: `divides 128`, `limited by 32768 groups`
    /// (no divisor reachable: Flink's fallback), `kept` (every divisor reversed the
    /// direction), or empty when not aligned.
    pub alignment: String,
}

impl JobChange {
    /// True when some vertex would run at another parallelism.
    pub fn vertices_change(&self) -> bool {
        self.vertices
            .iter()
            .any(|v| v.recommended_parallelism != v.current_parallelism)
    }
}

fn vertex_changes(rec: &Recommendation) -> Vec<VertexChange> {
    let Some(p) = rec.parallelism.assessed() else {
        return Vec::new();
    };
    let applied = rec.patch.vertex_parallelism.as_ref();
    p.vertices
        .iter()
        .map(|e| VertexChange {
            id: e.id.clone(),
            name: e.name.clone(),
            current_parallelism: e.current_parallelism,
            recommended_parallelism: applied
                .and_then(|m| m.get(&e.id))
                .copied()
                .unwrap_or(e.current_parallelism),
            needed_parallelism: e.recommended_parallelism,
            max_parallelism: e.max_parallelism,
            pinned: e.pinned_parallelism,
            alignment: match e.scaling.outcome.alignment {
                Alignment::NotApplicable => String::new(),
                Alignment::Aligned { groups } => format!("divides {groups}"),
                Alignment::Limited { groups } => format!("limited by {groups} groups"),
                Alignment::Blocked { .. } => "kept".to_string(),
            },
        })
        .collect()
}

impl JobChange {
    pub fn delta_cpu_milli(&self) -> i64 {
        self.recommended.cpu_milli - self.current.cpu_milli
    }

    pub fn delta_memory_bytes(&self) -> i64 {
        self.recommended.memory_bytes - self.current.memory_bytes
    }

    /// Size of the change in the placer's units (cores + GiB/4), for ranking.
    pub fn weight(&self) -> f64 {
        self.delta_cpu_milli().abs() as f64 / 1000.0
            + self.delta_memory_bytes().abs() as f64 / (4.0 * (1u64 << 30) as f64)
    }
}

/// A job (or part of one) for which no recommendation could be made, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRefusal {
    pub job: JobId,
    /// `parallelism: …`, `taskManager: …`, `jobManager: …` or the source's error.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RightsizingSummary {
    pub source: String,
    pub lookback_ms: i64,
    /// Jobs with a recommendation or a read failure.
    pub jobs: usize,
    /// Jobs whose parallelism, TaskManagers and JobManager were all assessed.
    pub jobs_fully_assessed: usize,
    /// Sum over jobs of what each would give back, per dimension.
    pub reclaimable_cpu_milli: i64,
    pub reclaimable_memory_bytes: i64,
    /// Sum over jobs of what each needs on top, per dimension.
    pub lacking_cpu_milli: i64,
    pub lacking_memory_bytes: i64,
    /// Jobs that need more of some resource than they request.
    pub under_provisioned: Vec<JobId>,
    /// Jobs that would give some resource back and need nothing more.
    pub over_provisioned: usize,
    /// Largest changes first (see [`JobChange::weight`]).
    pub top: Vec<JobChange>,
    pub refused: Vec<JobRefusal>,
}

fn memory_of(a: &Assessment<ProcessEvidence>, current: i64) -> i64 {
    a.assessed()
        .filter(|e| e.memory_change)
        .map_or(current, |e| e.recommended_memory_bytes)
}

fn cpu_of(a: &Assessment<ProcessEvidence>, current: i64) -> i64 {
    a.assessed()
        .filter(|e| e.cpu_change)
        .and_then(|e| e.recommended_cpu_milli)
        .unwrap_or(current)
}

/// What `job` would request with `rec` applied.
pub(crate) fn change(job: &JobDemand, rec: &Recommendation) -> JobChange {
    let jm = Resources {
        cpu_milli: cpu_of(&rec.job_manager, job.job_manager.cpu_milli),
        memory_bytes: memory_of(&rec.job_manager, job.job_manager.memory_bytes),
        pods: job.job_manager.pods,
    };
    let tm = Resources {
        cpu_milli: cpu_of(&rec.task_manager, job.task_manager.cpu_milli),
        memory_bytes: memory_of(&rec.task_manager, job.task_manager.memory_bytes),
        pods: job.task_manager.pods,
    };
    let (task_managers, recommended_parallelism) = match rec.parallelism.assessed() {
        Some(p) => (rec.slots.task_managers, p.recommended),
        None => (job.task_managers, rec.slots.configured_parallelism),
    };
    let findings = rec
        .findings
        .iter()
        .map(|f| match f {
            Finding::ExceedsSpecLimit {
                field,
                needed,
                limit,
            } => format!("{field}: needs {needed}, above the limit {limit}"),
            Finding::PlanNeedsMoreSlots {
                plan_slot_need,
                configured_parallelism,
            } => format!(
                "plan needs {plan_slot_need} slots, parallelism is {configured_parallelism}"
            ),
            Finding::PinnedVertexNeedsChange {
                vertex,
                current,
                needed,
            } => format!("vertex {vertex} is pinned at {current} in code but needs {needed}"),
        })
        .collect();
    JobChange {
        job: job.id.clone(),
        tenant: job.tenant.clone(),
        priority: job.priority,
        current: job.total(),
        recommended: jm + tm.times(i64::from(task_managers)),
        current_parallelism: rec.slots.configured_parallelism,
        recommended_parallelism,
        findings,
        vertices: vertex_changes(rec),
    }
}

fn refusal(rec: &Recommendation) -> Option<JobRefusal> {
    let mut reasons = Vec::new();
    for (part, reasons_of) in [
        ("parallelism", rec.parallelism.reasons()),
        ("taskManager", rec.task_manager.reasons()),
        ("jobManager", rec.job_manager.reasons()),
    ] {
        reasons.extend(reasons_of.iter().map(|r| format!("{part}: {r}")));
    }
    (!reasons.is_empty()).then(|| JobRefusal {
        job: rec.job.clone(),
        reasons,
    })
}

pub(super) fn summarise(
    jobs: &[JobDemand],
    input: &RightsizingInput,
    top_jobs: usize,
) -> RightsizingSummary {
    let by_id: HashMap<&JobId, &JobDemand> = jobs.iter().map(|j| (&j.id, j)).collect();
    let mut summary = RightsizingSummary {
        source: input.source.to_string(),
        lookback_ms: input.lookback_ms,
        jobs: input.recommendations.len() + input.failures.len(),
        jobs_fully_assessed: 0,
        reclaimable_cpu_milli: 0,
        reclaimable_memory_bytes: 0,
        lacking_cpu_milli: 0,
        lacking_memory_bytes: 0,
        under_provisioned: Vec::new(),
        over_provisioned: 0,
        top: Vec::new(),
        refused: Vec::new(),
    };
    let mut changes = Vec::new();
    for rec in input.recommendations {
        match refusal(rec) {
            Some(r) => summary.refused.push(r),
            None => summary.jobs_fully_assessed += 1,
        }
        let Some(job) = by_id.get(&rec.job) else {
            summary.refused.push(JobRefusal {
                job: rec.job.clone(),
                reasons: vec!["no StreamJob with this name in --jobs".to_string()],
            });
            continue;
        };
        let c = change(job, rec);
        let (dc, dm) = (c.delta_cpu_milli(), c.delta_memory_bytes());
        summary.reclaimable_cpu_milli += (-dc).max(0);
        summary.reclaimable_memory_bytes += (-dm).max(0);
        summary.lacking_cpu_milli += dc.max(0);
        summary.lacking_memory_bytes += dm.max(0);
        if dc > 0 || dm > 0 {
            summary.under_provisioned.push(c.job.clone());
        } else if dc < 0 || dm < 0 {
            summary.over_provisioned += 1;
        }
        if dc != 0 || dm != 0 || !c.findings.is_empty() || c.vertices_change() {
            changes.push(c);
        }
    }
    for (job, error) in input.failures {
        summary.refused.push(JobRefusal {
            job: job.clone(),
            reasons: vec![format!("metrics: {error}")],
        });
    }
    summary.under_provisioned.sort();
    summary.refused.sort_by(|a, b| a.job.cmp(&b.job));
    // Largest change first; among equals the higher tier, then the bigger job, then by name,
    // so that the order is the same on every run.
    changes.sort_by(|a, b| {
        b.weight()
            .total_cmp(&a.weight())
            .then(b.priority.cmp(&a.priority))
            .then_with(|| {
                let size = |c: &JobChange| by_id.get(&c.job).map_or(0.0, |j| demand_units(j));
                size(b).total_cmp(&size(a))
            })
            .then_with(|| a.job.cmp(&b.job))
    });
    changes.truncate(top_jobs);
    summary.top = changes;
    summary
}
