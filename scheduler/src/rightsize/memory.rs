//! JobManager/TaskManager memory and CPU: heap from the observed peak × (1 + overhead),
//! CPU from the busiest window's load at the utilisation target; limits are reported,
//! never applied silently.

use super::config::RightsizeConfig;
use super::input::ProcessMetrics;
use super::recommendation::{
    Assessment, Finding, InsufficientData, ProcessEvidence, ProcessPatch, ResourcesPatch,
    cpu_quantity, memory_quantity,
};
use super::window::{CoverageRules, Window, clean};

/// Rounds `x` up to a multiple of `granularity` (> 0), saturating. Float noise just above
/// a multiple (1000.0000000001) does not add a whole step.
pub fn round_up(x: f64, granularity: i64) -> i64 {
    if !x.is_finite() || x <= 0.0 {
        return 0;
    }
    let units = (x / granularity as f64 - 1e-9).ceil();
    (units as i64).saturating_mul(granularity)
}

/// Growth always applies (too little memory kills the job, too little CPU throttles it);
/// shrinking only beyond the threshold, so that noise does not churn pods.
fn differs(recommended: i64, current: i64, threshold: f64) -> bool {
    recommended > current || (current - recommended) as f64 > threshold * current as f64
}

pub struct ProcessAssessment {
    pub assessment: Assessment<ProcessEvidence>,
    pub patch: Option<ProcessPatch>,
    pub findings: Vec<Finding>,
}

/// `process` names the pod kind in reasons and findings (`taskManager`, `jobManager`).
pub fn assess(
    process: &str,
    metrics: &ProcessMetrics,
    range: Window,
    rules: CoverageRules,
    config: &RightsizeConfig,
) -> ProcessAssessment {
    let refused = |reasons| ProcessAssessment {
        assessment: Assessment::InsufficientData { reasons },
        patch: None,
        findings: Vec::new(),
    };
    let spec = metrics.spec;
    let invalid = |problem: String| InsufficientData::InvalidSpec {
        process: process.to_string(),
        problem,
    };
    let mut reasons = Vec::new();
    if spec.memory_bytes <= 0 {
        reasons.push(invalid(format!(
            "memory {} bytes is not positive",
            spec.memory_bytes
        )));
    }
    if spec.cpu_milli <= 0 {
        reasons.push(invalid(format!("cpu {}m is not positive", spec.cpu_milli)));
    }
    let heap_max = match metrics.heap_max_bytes {
        None => {
            reasons.push(InsufficientData::HeapMaxUnknown {
                process: process.to_string(),
            });
            0
        }
        Some(h) if h <= 0 || h > spec.memory_bytes => {
            reasons.push(invalid(format!(
                "heap max {h} bytes is not within the pod memory of {} bytes",
                spec.memory_bytes
            )));
            0
        }
        Some(h) => h,
    };
    let heap = clean(
        &format!("{process} heap used"),
        &metrics.heap_used_bytes,
        range,
        rules,
    );
    let cpu = metrics
        .cpu_load
        .as_ref()
        .map(|s| clean(&format!("{process} CPU load"), s, range, rules))
        .transpose();
    let (heap, cpu) = match (heap, cpu) {
        (Ok(h), Ok(c)) => (h, c),
        (h, c) => {
            reasons.extend(h.err());
            reasons.extend(c.err());
            return refused(reasons);
        }
    };
    if !reasons.is_empty() {
        return refused(reasons);
    }

    let granularity = config.memory_granularity_bytes;
    let peak = heap.max(range).unwrap_or(0.0);
    let recommended_heap =
        round_up(peak * (1.0 + config.memory_overhead), granularity).max(granularity);
    // What is not heap (managed, network, metaspace, JVM overhead) stays as configured.
    let non_heap = spec.memory_bytes - heap_max;
    let recommended_memory = round_up(
        non_heap.saturating_add(recommended_heap) as f64,
        granularity,
    );
    let memory_change = differs(
        recommended_memory,
        spec.memory_bytes,
        config.resource_change_threshold,
    );

    let busiest_cores = cpu.as_ref().and_then(|c| {
        range
            .split(config.metrics_window_ms)
            .into_iter()
            .filter_map(|w| c.mean(w))
            .reduce(f64::max)
            .map(|load| load * spec.cpu_milli as f64 / 1000.0)
    });
    let recommended_cpu = busiest_cores.map(|cores| {
        round_up(
            cores / config.target_utilization * 1000.0,
            config.cpu_granularity_milli,
        )
        .max(config.cpu_granularity_milli)
    });
    let cpu_change = recommended_cpu
        .is_some_and(|c| differs(c, spec.cpu_milli, config.resource_change_threshold));

    let mut findings = Vec::new();
    if let Some(limit) = spec.max_memory_bytes
        && recommended_memory > limit
    {
        findings.push(Finding::ExceedsSpecLimit {
            field: format!("spec.{process}.resources.memory"),
            needed: recommended_memory,
            limit,
        });
    }
    if let (Some(limit), Some(needed)) = (spec.max_cpu_milli, recommended_cpu)
        && needed > limit
    {
        findings.push(Finding::ExceedsSpecLimit {
            field: format!("spec.{process}.resources.cpu"),
            needed,
            limit,
        });
    }
    let resources = ResourcesPatch {
        memory: memory_change.then(|| memory_quantity(recommended_memory)),
        cpu: recommended_cpu.filter(|_| cpu_change).map(cpu_quantity),
    };
    let patch = (resources != ResourcesPatch::default()).then_some(ProcessPatch { resources });
    ProcessAssessment {
        assessment: Assessment::Assessed(ProcessEvidence {
            process: process.to_string(),
            peak_heap_used_bytes: peak,
            heap_max_bytes: heap_max,
            recommended_heap_bytes: recommended_heap,
            current_memory_bytes: spec.memory_bytes,
            recommended_memory_bytes: recommended_memory,
            memory_change,
            busiest_window_cpu_cores: busiest_cores,
            current_cpu_milli: spec.cpu_milli,
            recommended_cpu_milli: recommended_cpu,
            cpu_change,
            non_finite_dropped: heap.dropped_non_finite
                + cpu.as_ref().map_or(0, |c| c.dropped_non_finite),
        }),
        patch,
        findings,
    }
}
