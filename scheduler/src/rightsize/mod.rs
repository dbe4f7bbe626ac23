//! Right-sizing: from a job's Flink metrics to an auditable recommendation of parallelism
//! and JobManager/TaskManager resources. Pure: values in, a [`Recommendation`] out.
//!
//! # Model
//!
//! **Data.** [`JobMetrics`] holds, per vertex, busy time (max over subtasks), records in
//! (sum) and, for sources, pending records; per pod kind, heap used and CPU load, plus the
//! spec's resources. Every series is checked over the lookback range ([`window::clean`]):
//! NaN/∞ samples are dropped; a counter that decreases (restart), a gap longer than
//! `max_gap_intervals` scrape intervals, less than `min_coverage` of the range spanned, or no
//! samples at all make that part [`Assessment::InsufficientData`] with the reasons — never a
//! number pulled from nothing.
//!
//! **Parallelism** follows Flink's autoscaler (flink-kubernetes-operator's
//! `ScalingMetricEvaluator` and `JobVertexScaler`), per metrics window and vertex:
//! - true processing rate = input rate / (busy ms per s / 1000);
//! - sources: target rate = input rate + lag growth rate, catch-up rate = lag / catch-up
//!   duration; downstream vertices get their input scaled by the sources' ratio (Flink
//!   propagates along edges, which the metrics here do not carry);
//! - target capacity = catch-up rate + target rate × restart time / catch-up duration +
//!   target rate / target utilisation;
//! - scale factor = capacity / true rate, clamped to `[1 − max down, 1 + max up]`; new
//!   parallelism = ⌈current × factor⌉ within `[min(current, vertex min), min(max(current,
//!   vertex max), max parallelism)]`; keyed vertices snap to a divisor of max parallelism,
//!   partitioned sources to a divisor of the partition count ([`scaling::scale`]);
//! - no change while every changed vertex's true rate lies inside its utilisation band
//!   (target ± boundary; widened to [0, 1] while a source works off backlog).
//!
//! **Per vertex**: each vertex (operator chain) is recommended what it needs in its own
//! busiest window of the lookback, so a quiet night never shrinks a vertex its evening peak
//! needs, whichever vertex peaks when. When the job changes, every vertex not pinned in code
//! gets its value in [`SpecPatch::vertex_parallelism`] (Flink's job vertex id → parallelism);
//! the StreamJob's `spec.vertexParallelism` is rendered as Flink's
//! `pipeline.jobvertex-parallelism-overrides` (`PipelineOptions.PARALLELISM_OVERRIDES`,
//! applied by the Dispatcher to the submitted job graph; the key the Flink operator's
//! autoscaler writes). The job's parallelism is its bottleneck's need (the widest vertex not
//! pinned): the slots it needs with one slot sharing group. Flink's stateful rules (scale-down delay, ineffective scale-up detection, observed
//! scalability) are left out: a person applies these recommendations, with their history.
//!
//! **Memory**: heap = peak heap used over the lookback × (1 + overhead), rounded up to
//! 64 MiB; pod memory = configured memory − heap max + that heap. **CPU**: busiest window's
//! mean load in cores / target utilisation, rounded up to 100 m. A need above the spec's
//! limit is kept and flagged ([`Finding::ExceedsSpecLimit`]). Resources grow whenever the
//! need is above the spec, and shrink only when it is more than 10 % below.
//!
//! **Slots**: the plan's slot need (computed elsewhere) counts when code sets parallelism
//! above the configured one; such a job would not start with fewer slots.
//!
//! # Defaults ([`RightsizeConfig::default`])
//!
//! Flink's: target utilisation 0.7, boundary 0.3, max scale-up factor 100000, max
//! scale-down factor 0.6, catch-up 30 min, restart 5 min, backlog threshold 5 min, vertex
//! parallelism 1..=200, evenly-spread alignment, 15 min metrics window. Ours: 24 h
//! lookback, 15 s scrape interval, 80 % coverage, gaps ≤ 3 intervals, 20 % memory overhead,
//! 64 MiB / 100 m granularity, 10 % shrink threshold.

pub mod config;
pub mod input;
pub mod memory;
pub mod parallelism;
pub mod recommendation;
pub mod scaling;
pub mod window;

pub use config::{AlignmentMode, RightsizeConfig, RightsizeConfigError};
pub use input::{
    JobMetrics, ProcessMetrics, ProcessSpec, Sample, Series, SeriesKind, VertexInfo, VertexMetrics,
};
pub use recommendation::{
    Assessment, Finding, InsufficientData, ParallelismEvidence, ProcessEvidence, Recommendation,
    SlotEvidence, SpecPatch, VertexEvidence,
};
pub use window::Window;

use window::CoverageRules;

/// Recommends parallelism and resources for one job from its metrics.
pub fn recommend(
    job: &JobMetrics,
    config: &RightsizeConfig,
) -> Result<Recommendation, RightsizeConfigError> {
    config.validate()?;
    let range = Window {
        start_ms: job.observed_until_ms.saturating_sub(config.lookback_ms),
        end_ms: job.observed_until_ms,
    };
    let rules = CoverageRules {
        scrape_interval_ms: config.scrape_interval_ms,
        min_coverage: config.min_coverage,
        max_gap_intervals: config.max_gap_intervals,
    };

    let (parallelism, mut findings) = parallelism::assess(job, range, rules, config);
    let task_manager = memory::assess("taskManager", &job.task_manager, range, rules, config);
    let job_manager = memory::assess("jobManager", &job.job_manager, range, rules, config);
    findings.extend(task_manager.findings);
    findings.extend(job_manager.findings);

    let changed = parallelism.assessed().filter(|p| p.change);
    let new_parallelism = changed.map(|p| p.recommended);
    let vertex_parallelism = changed
        .map(parallelism::vertex_overrides)
        .filter(|overrides| !overrides.is_empty());
    let slots = slot_evidence(job, new_parallelism.unwrap_or(job.configured_parallelism));
    if let Some(need) = job.plan_slot_need
        && need > job.configured_parallelism
    {
        findings.push(Finding::PlanNeedsMoreSlots {
            plan_slot_need: need,
            configured_parallelism: job.configured_parallelism,
        });
    }

    Ok(Recommendation {
        job: job.job.clone(),
        patch: SpecPatch {
            parallelism: new_parallelism.filter(|p| *p != job.configured_parallelism),
            vertex_parallelism,
            task_manager: task_manager.patch,
            job_manager: job_manager.patch,
        },
        parallelism,
        task_manager: task_manager.assessment,
        job_manager: job_manager.assessment,
        slots,
        findings,
    })
}

/// Slots and TaskManagers the job needs at `parallelism`, counting the plan's need when code
/// pins some vertex above the configured parallelism.
pub fn slot_evidence(job: &JobMetrics, parallelism: u32) -> SlotEvidence {
    let pinned_need = job
        .plan_slot_need
        .filter(|need| *need > job.configured_parallelism)
        .unwrap_or(0);
    let required_slots = parallelism.max(pinned_need);
    let per_tm = job.slots_per_task_manager.max(1);
    SlotEvidence {
        configured_parallelism: job.configured_parallelism,
        parallelism,
        plan_slot_need: job.plan_slot_need,
        required_slots,
        slots_per_task_manager: job.slots_per_task_manager,
        task_managers: required_slots.div_ceil(per_tm),
    }
}
