//! What the right-sizer returns: a merge-patch of the StreamJob spec plus the evidence a
//! person needs to audit it, or the reasons no number could be given.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::scaling::{ScalingGap, VertexScaling};
use super::window::Window;
use crate::model::JobId;

/// Why a part of a recommendation was not made. Each names the series or object at fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum InsufficientData {
    /// The metric has no samples at all (not exported, or the job never ran).
    NoSamples {
        metric: String,
    },
    NoSamplesInWindow {
        metric: String,
        window: Window,
    },
    /// Every sample in range was NaN or infinite.
    AllNonFinite {
        metric: String,
        samples: usize,
    },
    NegativeValue {
        metric: String,
        at_ms: i64,
        value: f64,
    },
    /// A counter went down: the job restarted inside the range.
    CounterReset {
        metric: String,
        at_ms: i64,
        before: f64,
        after: f64,
    },
    /// Two consecutive usable samples are too far apart.
    Gap {
        metric: String,
        from_ms: i64,
        to_ms: i64,
        max_gap_ms: i64,
        non_finite_dropped: usize,
    },
    /// The samples span too little of the range (metrics started late or stopped early).
    LowCoverage {
        metric: String,
        window: Window,
        covered_fraction: f64,
        required_fraction: f64,
    },
    /// A rate needs two samples inside one metrics window.
    TooFewSamplesInWindow {
        metric: String,
        window: Window,
    },
    NoVertices,
    InvalidVertex {
        vertex: String,
        problem: String,
    },
    VertexNotScalable {
        vertex: String,
        gap: ScalingGap,
    },
    /// Heap max is needed to turn a heap need into a pod memory size.
    HeapMaxUnknown {
        process: String,
    },
    InvalidSpec {
        process: String,
        problem: String,
    },
}

impl fmt::Display for InsufficientData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use InsufficientData::*;
        match self {
            NoSamples { metric } => write!(f, "{metric}: no samples"),
            NoSamplesInWindow { metric, window } => write!(
                f,
                "{metric}: no samples between {} and {} ms",
                window.start_ms, window.end_ms
            ),
            AllNonFinite { metric, samples } => {
                write!(f, "{metric}: all {samples} samples are NaN or infinite")
            }
            NegativeValue {
                metric,
                at_ms,
                value,
            } => write!(f, "{metric}: negative value {value} at {at_ms} ms"),
            CounterReset {
                metric,
                at_ms,
                before,
                after,
            } => write!(
                f,
                "{metric}: counter reset at {at_ms} ms ({before} → {after}); the job restarted \
                 inside the range"
            ),
            Gap {
                metric,
                from_ms,
                to_ms,
                max_gap_ms,
                non_finite_dropped,
            } => write!(
                f,
                "{metric}: gap of {} ms between {from_ms} and {to_ms} ms (at most {max_gap_ms} \
                 allowed; {non_finite_dropped} NaN/infinite samples dropped)",
                to_ms - from_ms
            ),
            LowCoverage {
                metric,
                window,
                covered_fraction,
                required_fraction,
            } => write!(
                f,
                "{metric}: samples cover {:.0} % of {} ms, {:.0} % required",
                covered_fraction * 100.0,
                window.len_ms(),
                required_fraction * 100.0
            ),
            TooFewSamplesInWindow { metric, window } => write!(
                f,
                "{metric}: fewer than two samples between {} and {} ms",
                window.start_ms, window.end_ms
            ),
            NoVertices => write!(f, "the job reports no vertices"),
            InvalidVertex { vertex, problem } => write!(f, "vertex {vertex}: {problem}"),
            VertexNotScalable { vertex, gap } => write!(
                f,
                "vertex {vertex}: {}",
                match gap {
                    ScalingGap::TrueProcessingRateUnknown => "true processing rate unknown",
                    ScalingGap::TargetRateUnknown => "target data rate unknown",
                    ScalingGap::ParallelismLimitsInverted =>
                        "min parallelism is above max parallelism",
                }
            ),
            HeapMaxUnknown { process } => write!(
                f,
                "{process}: heap max unknown, cannot turn heap need into pod memory"
            ),
            InvalidSpec { process, problem } => write!(f, "{process}: {problem}"),
        }
    }
}

/// A part of the recommendation: assessed with evidence, or refused with reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Assessment<T> {
    Assessed(T),
    InsufficientData { reasons: Vec<InsufficientData> },
}

impl<T> Assessment<T> {
    pub fn assessed(&self) -> Option<&T> {
        match self {
            Assessment::Assessed(t) => Some(t),
            Assessment::InsufficientData { .. } => None,
        }
    }

    pub fn reasons(&self) -> &[InsufficientData] {
        match self {
            Assessment::Assessed(_) => &[],
            Assessment::InsufficientData { reasons } => reasons,
        }
    }
}

/// What one vertex needed in the window that decided the job's parallelism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VertexEvidence {
    pub id: String,
    pub name: String,
    pub current_parallelism: u32,
    pub max_parallelism: u32,
    pub keyed_input: bool,
    pub is_source: bool,
    pub pinned_parallelism: bool,
    /// Mean records in per second (sum over subtasks).
    pub input_rate: f64,
    /// Mean busy ms per second (max over subtasks).
    pub busy_ms_per_second: f64,
    /// `input_rate / (busy / 1000)`; infinite when idle.
    pub true_processing_rate: f64,
    /// Sources: backlog at the end of the window, and its growth per second.
    pub lag: Option<f64>,
    pub lag_growth_rate: Option<f64>,
    pub target_data_rate: f64,
    pub catch_up_data_rate: f64,
    pub scaling: VertexScaling,
    /// What the vertex needs in `window`, the metrics window it needed most in: snapped to
    /// key groups, within 1..=`max_parallelism`.
    pub recommended_parallelism: u32,
    pub window: Window,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParallelismEvidence {
    pub current: u32,
    /// What the bottleneck needs (equals `current` when no change is advised).
    pub recommended: u32,
    pub change: bool,
    /// The non-pinned vertex needing the highest parallelism.
    pub bottleneck_vertex: String,
    /// The bottleneck vertex's busiest metrics window, which decided the job's figure; each
    /// vertex's own busiest window is in its evidence.
    pub window: Window,
    pub windows_evaluated: usize,
    /// Some source's lag exceeded the backlog threshold: the band was widened to [0, 1].
    pub processing_backlog: bool,
    /// True when every vertex was inside its utilisation band, so nothing changes.
    pub within_band: bool,
    pub vertices: Vec<VertexEvidence>,
}

/// Heap (and CPU) evidence of the JobManager or the TaskManagers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessEvidence {
    pub process: String,
    pub peak_heap_used_bytes: f64,
    pub heap_max_bytes: i64,
    /// Peak × (1 + overhead), rounded up to the granularity.
    pub recommended_heap_bytes: i64,
    pub current_memory_bytes: i64,
    /// Current memory − heap max + recommended heap, rounded up to the granularity.
    pub recommended_memory_bytes: i64,
    pub memory_change: bool,
    /// CPU, when load was reported: mean cores in the busiest window / target utilisation.
    pub busiest_window_cpu_cores: Option<f64>,
    pub current_cpu_milli: i64,
    pub recommended_cpu_milli: Option<i64>,
    pub cpu_change: bool,
    /// Non-finite samples dropped while reading the series.
    pub non_finite_dropped: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotEvidence {
    pub configured_parallelism: u32,
    /// The recommended parallelism, or the configured one when none was made.
    pub parallelism: u32,
    pub plan_slot_need: Option<u32>,
    /// max(parallelism, plan slot need when the plan asks for more than configured).
    pub required_slots: u32,
    pub slots_per_task_manager: u32,
    pub task_managers: u32,
}

/// Something a person must know before applying the patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "finding")]
pub enum Finding {
    /// The need is above what the spec allows; the patch still carries the need.
    ExceedsSpecLimit {
        field: String,
        needed: i64,
        limit: i64,
    },
    /// Code sets a parallelism above the configured one: with only the configured
    /// parallelism's slots the job would not start.
    PlanNeedsMoreSlots {
        plan_slot_need: u32,
        configured_parallelism: u32,
    },
    /// A vertex with parallelism set in code needs a different value. Right-sizing leaves
    /// code's choice alone; a person may give it through `spec.vertexParallelism`.
    PinnedVertexNeedsChange {
        vertex: String,
        current: u32,
        needed: u32,
    },
}

/// New resources of one pod kind, in Kubernetes quantity strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcesPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPatch {
    pub resources: ResourcesPatch,
}

/// The `spec` part of a JSON merge patch (RFC 7386) on the StreamJob: only changed fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Per job vertex (Flink's id → parallelism), merged into the spec's
    /// `vertexParallelism`, which a launch renders as `pipeline.jobvertex-parallelism-overrides`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vertex_parallelism: Option<BTreeMap<String, u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_manager: Option<ProcessPatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_manager: Option<ProcessPatch>,
}

impl SpecPatch {
    pub fn is_empty(&self) -> bool {
        self.parallelism.is_none()
            && self.vertex_parallelism.is_none()
            && self.task_manager.is_none()
            && self.job_manager.is_none()
    }

    /// `{"spec": {...}}`, ready for a merge patch.
    pub fn to_merge_patch(&self) -> serde_json::Value {
        serde_json::json!({ "spec": self })
    }
}

/// The right-sizer's answer for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub job: JobId,
    pub patch: SpecPatch,
    pub parallelism: Assessment<ParallelismEvidence>,
    pub task_manager: Assessment<ProcessEvidence>,
    pub job_manager: Assessment<ProcessEvidence>,
    pub slots: SlotEvidence,
    pub findings: Vec<Finding>,
}

/// Renders bytes as a Kubernetes quantity: `Mi` when whole mebibytes, else bytes.
pub fn memory_quantity(bytes: i64) -> String {
    const MIB: i64 = 1024 * 1024;
    if bytes % MIB == 0 {
        format!("{}Mi", bytes / MIB)
    } else {
        bytes.to_string()
    }
}

/// Renders millicores as a Kubernetes quantity: whole cores plainly, else `m`.
pub fn cpu_quantity(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}
