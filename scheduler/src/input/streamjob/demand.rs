//! The job as placement sees it: resources resolved to integers, the slot need from the
//! parallelism, vertex overrides and plan, and the TaskManager count (`JobDemand`).

use super::spec::{StreamJob, StreamJobSpec};
use crate::input::common::{cpu_milli, integer_value};
use crate::input::error::Problems;
use crate::input::flink_plan::{FlinkPlan, plan_from_value};
use crate::limits::MAX_TASK_MANAGERS_PER_JOB;
use crate::model::{JobDemand, Resources, SiteConstraint, SiteId};

pub(super) fn slot_need(spec: &StreamJobSpec, problems: &mut Problems) -> Option<u64> {
    let plan: Option<FlinkPlan> = match &spec.plan {
        Some(value) => Some(plan_from_value(value, "spec.plan", problems)?),
        None => None,
    };
    let parallelism = u64::from(spec.parallelism);
    // With every vertex in one slot sharing group, the job needs as many slots as its
    // widest vertex: a per-vertex override above `parallelism` needs its slots too.
    let widest_override = spec
        .vertex_parallelism
        .values()
        .copied()
        .max()
        .map_or(0, u64::from);
    Some(
        plan.map_or(parallelism, |plan| {
            plan.slot_need(spec.parallelism).max(parallelism)
        })
        .max(widest_override),
    )
}

pub(super) fn demand(job: &StreamJob, problems: &mut Problems) -> Option<JobDemand> {
    let spec = &job.spec;
    let jm = &spec.job_manager.resources;
    let tm = &spec.task_manager.resources;
    let jm_cpu = cpu_milli(problems, "spec.jobManager.resources.cpu", &jm.cpu, false);
    let jm_memory = integer_value(
        problems,
        "spec.jobManager.resources.memory",
        &jm.memory,
        false,
    );
    let tm_cpu = cpu_milli(problems, "spec.taskManager.resources.cpu", &tm.cpu, false);
    let tm_memory = integer_value(
        problems,
        "spec.taskManager.resources.memory",
        &tm.memory,
        false,
    );
    let need = slot_need(spec, problems);
    let (jm_cpu, jm_memory, tm_cpu, tm_memory, need) =
        (jm_cpu?, jm_memory?, tm_cpu?, tm_memory?, need?);
    if spec.task_manager.slots == 0 {
        return None;
    }
    let slots = spec.task_manager.slots;
    let task_managers = need.div_ceil(u64::from(slots));
    let task_managers = match u32::try_from(task_managers) {
        Ok(count) if count <= MAX_TASK_MANAGERS_PER_JOB => count,
        _ => {
            // The plan's need is the larger one only when it exceeds the parallelism.
            let field = if need > u64::from(spec.parallelism) {
                "spec.plan"
            } else {
                "spec.parallelism"
            };
            problems.field(
                field,
                format!(
                    "{need} slots at {slots} per TaskManager need {task_managers} TaskManagers, more than the {MAX_TASK_MANAGERS_PER_JOB} twinsite places for one job; raise spec.taskManager.slots or lower the parallelism"
                ),
            );
            return None;
        }
    };
    Some(JobDemand {
        id: job.id(),
        tenant: job.tenant(),
        priority: spec.priority,
        job_manager: Resources::new(jm_cpu, jm_memory, 1),
        task_manager: Resources::new(tm_cpu, tm_memory, 1),
        task_managers,
        sites: SiteConstraint {
            preferred: spec.placement.sites.preferred.clone().map(SiteId),
            allowed: spec
                .placement
                .sites
                .allowed
                .iter()
                .cloned()
                .map(SiteId)
                .collect(),
        },
        node_selector: spec.placement.node_selector.clone(),
        node_affinity: spec
            .placement
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.clone()),
        tolerations: spec.placement.tolerations.clone(),
        allow_offline: spec.placement.allow_offline,
    })
}
