//! From raw, labelled series (one per subtask or pod, as Flink's Prometheus reporter exports
//! them) to the right-sizer's [`JobMetrics`]: grouped by vertex, aggregated over subtasks on
//! a step grid, joined with what only the spec knows. Every metrics source (Prometheus, a
//! file, the simulator) hands its series here, so they all aggregate the same way.
//!
//! Label conventions:
//! - a job's series carry `namespace` and `twinsite_io_job` (the pod labels twinsite sets,
//!   `twinsite.io/job`, as Prometheus' `labelmap` relabelling spells them);
//! - task metrics carry Flink's `task_id` (job vertex id), `task_name` and `subtask_index`;
//!   operator metrics add `operator_name`; TaskManager metrics carry `tm_id`.
//!
//! Aggregation per step bucket (`at_ms` floored to a multiple of the step): each subtask's
//! last sample in the bucket, then `max` (busy time) or `sum` (rates, backlog) over subtasks.
//! A bucket in which some subtask of the vertex reported nothing, or reported NaN, becomes
//! NaN: a sum over part of the subtasks would be a number pulled from nothing, and the
//! right-sizer drops NaN and refuses the series when too few samples remain.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::input::StreamJob;
use crate::model::{JobDemand, JobId};
use crate::rightsize::input::metric_names as m;
use crate::rightsize::{
    JobMetrics, ProcessMetrics, ProcessSpec, Sample, Series, SeriesKind, VertexInfo, VertexMetrics,
};

pub const NAMESPACE_LABEL: &str = "namespace";
pub const JOB_LABEL: &str = "twinsite_io_job";
pub const TASK_ID_LABEL: &str = "task_id";
pub const TASK_NAME_LABEL: &str = "task_name";
pub const SUBTASK_LABEL: &str = "subtask_index";
pub const OPERATOR_NAME_LABEL: &str = "operator_name";
pub const TM_ID_LABEL: &str = "tm_id";

/// Every metric a source must fetch for a job: the right-sizer's, then diagnosis' own
/// (`crate::diagnosis::metric_names`), so that one fetch serves both.
pub const METRICS: [&str; 17] = [
    m::BUSY_TIME_MS_PER_SECOND,
    m::RECORDS_IN_PER_SECOND,
    m::SOURCE_OPERATOR_RECORDS_IN_PER_SECOND,
    m::RECORDS_IN,
    m::PENDING_RECORDS,
    m::KAFKA_RECORDS_LAG_MAX,
    m::JOB_MANAGER_HEAP_USED,
    m::TASK_MANAGER_HEAP_USED,
    m::JOB_MANAGER_HEAP_MAX,
    m::TASK_MANAGER_HEAP_MAX,
    m::JOB_MANAGER_CPU_LOAD,
    m::TASK_MANAGER_CPU_LOAD,
    crate::diagnosis::metric_names::BACK_PRESSURED_TIME_MS_PER_SECOND,
    crate::diagnosis::metric_names::FAILED_CHECKPOINTS,
    crate::diagnosis::metric_names::LAST_CHECKPOINT_DURATION,
    crate::diagnosis::metric_names::RESTARTS,
    crate::diagnosis::metric_names::GC_TIME_MS_PER_SECOND,
];

/// One exported series: metric name, labels (without `__name__`) and samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawSeries {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl RawSeries {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// What the StreamJob spec says about a job that metrics do not carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFacts {
    pub job: JobId,
    /// `spec.parallelism`.
    pub parallelism: u32,
    /// `spec.maxParallelism`; Flink's default rule when absent.
    pub max_parallelism: Option<u32>,
    /// `spec.vertexParallelism`: vertices running at these values were set so by twinsite,
    /// not pinned in code.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vertex_parallelism: BTreeMap<String, u32>,
    pub slots_per_task_manager: u32,
    /// The plan's slot need, when the spec has a plan.
    pub plan_slot_need: Option<u32>,
    pub job_manager: ProcessSpec,
    pub task_manager: ProcessSpec,
}

impl JobFacts {
    /// The facts of a parsed StreamJob and its resolved demand (`StreamJob::demand`).
    pub fn of(job: &StreamJob, demand: &JobDemand) -> JobFacts {
        let process = |r: &crate::model::Resources| ProcessSpec {
            memory_bytes: r.memory_bytes,
            cpu_milli: r.cpu_milli,
            max_memory_bytes: None,
            max_cpu_milli: None,
        };
        JobFacts {
            job: demand.id.clone(),
            parallelism: job.spec.parallelism,
            max_parallelism: job.spec.max_parallelism,
            vertex_parallelism: job.spec.vertex_parallelism.clone(),
            slots_per_task_manager: job.spec.task_manager.slots,
            plan_slot_need: job
                .spec
                .plan
                .as_ref()
                .and_then(|_| job.slot_need().ok())
                .and_then(|n| u32::try_from(n).ok()),
            job_manager: process(&demand.job_manager),
            task_manager: process(&demand.task_manager),
        }
    }
}

/// Flink's `KeyGroupRangeAssignment.computeDefaultMaxParallelism`.
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let p = parallelism.saturating_add(parallelism / 2).max(1);
    p.checked_next_power_of_two()
        .unwrap_or(1 << 15)
        .clamp(128, 1 << 15)
}

#[derive(Clone, Copy)]
enum Op {
    Max,
    Sum,
}

/// One member's latest sample in a bucket: its time and value.
type MemberSlot = Option<(i64, f64)>;

/// Aggregates `series` per bucket. `members` names each series' member (subtask, pod);
/// `expected`: how many members a complete bucket has (`None`: any number is complete).
fn aggregate(
    series: &[&RawSeries],
    member: impl Fn(&RawSeries) -> String,
    expected: Option<usize>,
    op: Op,
    step_ms: i64,
) -> Vec<Sample> {
    let step = step_ms.max(1);
    // Members by index, so that a week of samples costs no string per sample.
    let mut members: Vec<String> = Vec::new();
    let mut member_of = Vec::with_capacity(series.len());
    for s in series {
        let who = member(s);
        let index = match members.iter().position(|m| *m == who) {
            Some(i) => i,
            None => {
                members.push(who);
                members.len() - 1
            }
        };
        member_of.push(index);
    }
    // bucket -> per member, (time, value) of its last sample in the bucket. Buckets are
    // indexed by their offset from the first one, in one flat table: a map lookup per
    // sample was most of a recommendation's time. Samples far apart (a sparse file) would
    // make that table huge, so past four slots per sample a map is used instead.
    let bucket_of = |at_ms: i64| at_ms.div_euclid(step);
    let all = || series.iter().flat_map(|s| s.samples.iter());
    let (first, last) = all().fold((i64::MAX, i64::MIN), |(lo, hi), s| {
        let b = bucket_of(s.at_ms);
        (lo.min(b), hi.max(b))
    });
    let samples = all().count();
    let span = u64::try_from(last.saturating_sub(first))
        .ok()
        .and_then(|d| usize::try_from(d).ok())
        .map(|d| d.saturating_add(1));
    let width = members.len();
    let keep = |slot: &mut MemberSlot, sample: &Sample| {
        if slot.is_none_or(|(at, _)| at <= sample.at_ms) {
            *slot = Some((sample.at_ms, sample.value));
        }
    };
    let buckets: Vec<(i64, Vec<MemberSlot>)> = match span {
        Some(span) if samples > 0 && span <= samples.saturating_mul(4) => {
            let mut table: Vec<MemberSlot> = vec![None; span * width];
            let mut used = vec![false; span];
            for (s, &who) in series.iter().zip(&member_of) {
                for sample in &s.samples {
                    let index = (bucket_of(sample.at_ms) - first) as usize;
                    used[index] = true;
                    keep(&mut table[index * width + who], sample);
                }
            }
            used.iter()
                .enumerate()
                .filter(|(_, used)| **used)
                .map(|(index, _)| {
                    (
                        (first + index as i64) * step,
                        table[index * width..(index + 1) * width].to_vec(),
                    )
                })
                .collect()
        }
        _ => {
            let mut map: BTreeMap<i64, Vec<MemberSlot>> = BTreeMap::new();
            for (s, &who) in series.iter().zip(&member_of) {
                for sample in &s.samples {
                    let slots = map
                        .entry(bucket_of(sample.at_ms) * step)
                        .or_insert_with(|| vec![None; width]);
                    keep(&mut slots[who], sample);
                }
            }
            map.into_iter().collect()
        }
    };
    buckets
        .into_iter()
        .map(|(at, slots)| {
            let present: Vec<f64> = slots.iter().flatten().map(|(_, v)| *v).collect();
            let complete = expected.is_none_or(|n| present.len() >= n);
            let value = if !complete || present.iter().any(|v| v.is_nan()) {
                f64::NAN
            } else {
                match op {
                    Op::Max => present.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    Op::Sum => present.iter().sum(),
                }
            };
            Sample::new(at, value)
        })
        .collect()
}

fn subtask(s: &RawSeries) -> String {
    s.label(SUBTASK_LABEL).unwrap_or("").to_string()
}

/// Pods are told apart by every label but the metric's own, so that a TaskManager without
/// `tm_id` (or with a relabelled pod name) is still one member.
fn pod(s: &RawSeries) -> String {
    s.label(TM_ID_LABEL)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", s.labels))
}

fn is_source_operator(s: &RawSeries) -> bool {
    s.label(OPERATOR_NAME_LABEL)
        .is_some_and(|n| n.starts_with("Source"))
}

/// Builds the right-sizer's input for one job from its raw series. `until_ms` is the end of
/// the observed range; `step_ms` the grid the series are aggregated on.
pub fn assemble(facts: &JobFacts, series: &[RawSeries], until_ms: i64, step_ms: i64) -> JobMetrics {
    let mut by_vertex: BTreeMap<&str, Vec<&RawSeries>> = BTreeMap::new();
    let mut process: BTreeMap<&str, Vec<&RawSeries>> = BTreeMap::new();
    for s in series {
        match s.label(TASK_ID_LABEL) {
            Some(task) if s.metric.starts_with("flink_taskmanager_job_task") => {
                by_vertex.entry(task).or_default().push(s)
            }
            _ => process.entry(s.metric.as_str()).or_default().push(s),
        }
    }
    let max_parallelism = facts
        .max_parallelism
        .unwrap_or_else(|| default_max_parallelism(facts.parallelism));
    let vertices = by_vertex
        .into_iter()
        .map(|(task_id, all)| vertex(task_id, &all, facts, max_parallelism, step_ms))
        .collect();
    let proc_metrics = |heap_used: &str, heap_max: &str, cpu: &str, spec: ProcessSpec| {
        let get = |name: &str| process.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let max_over_pods = |name: &str| aggregate(get(name), pod, None, Op::Max, step_ms);
        let cpu_series = get(cpu);
        ProcessMetrics {
            heap_used_bytes: Series::gauge(max_over_pods(heap_used)),
            // The latest finite reading: the heap size is fixed per JVM.
            heap_max_bytes: max_over_pods(heap_max)
                .iter()
                .rev()
                .find(|s| s.value.is_finite() && s.value > 0.0)
                .map(|s| s.value as i64),
            cpu_load: (!cpu_series.is_empty()).then(|| Series::gauge(max_over_pods(cpu))),
            spec,
        }
    };
    JobMetrics {
        job: facts.job.clone(),
        observed_until_ms: until_ms,
        configured_parallelism: facts.parallelism,
        slots_per_task_manager: facts.slots_per_task_manager,
        plan_slot_need: facts.plan_slot_need,
        vertices,
        task_manager: proc_metrics(
            m::TASK_MANAGER_HEAP_USED,
            m::TASK_MANAGER_HEAP_MAX,
            m::TASK_MANAGER_CPU_LOAD,
            facts.task_manager,
        ),
        job_manager: proc_metrics(
            m::JOB_MANAGER_HEAP_USED,
            m::JOB_MANAGER_HEAP_MAX,
            m::JOB_MANAGER_CPU_LOAD,
            facts.job_manager,
        ),
    }
}

fn vertex(
    task_id: &str,
    all: &[&RawSeries],
    facts: &JobFacts,
    max_parallelism: u32,
    step_ms: i64,
) -> VertexMetrics {
    let of = |metric: &str, pred: &dyn Fn(&RawSeries) -> bool| -> Vec<&RawSeries> {
        all.iter()
            .copied()
            .filter(|s| s.metric == metric && pred(s))
            .collect()
    };
    let any = |_: &RawSeries| true;
    let subtasks: BTreeSet<&str> = all.iter().filter_map(|s| s.label(SUBTASK_LABEL)).collect();
    let parallelism = u32::try_from(subtasks.len()).unwrap_or(u32::MAX).max(1);
    let name = all
        .iter()
        .find_map(|s| s.label(TASK_NAME_LABEL))
        .unwrap_or(task_id)
        .to_string();
    let source_rates = of(
        m::SOURCE_OPERATOR_RECORDS_IN_PER_SECOND,
        &is_source_operator,
    );
    let pending = of(m::PENDING_RECORDS, &any);
    let kafka_lag = of(m::KAFKA_RECORDS_LAG_MAX, &any);
    let is_source = name.starts_with("Source") || !source_rates.is_empty() || !pending.is_empty();
    let n = Some(subtasks.len());
    let sum = |series: &[&RawSeries]| aggregate(series, subtask, n, Op::Sum, step_ms);
    let records_in = if is_source && !source_rates.is_empty() {
        Series::gauge(sum(&source_rates))
    } else {
        let gauge = of(m::RECORDS_IN_PER_SECOND, &any);
        let counter = of(m::RECORDS_IN, &any);
        if gauge.is_empty() && !counter.is_empty() {
            Series {
                kind: SeriesKind::Counter,
                samples: sum(&counter),
            }
        } else {
            Series::gauge(sum(&gauge))
        }
    };
    let pending_records = if !pending.is_empty() {
        Some(Series::gauge(sum(&pending)))
    } else if !kafka_lag.is_empty() {
        Some(Series::gauge(sum(&kafka_lag)))
    } else {
        None
    };
    VertexMetrics {
        info: VertexInfo {
            id: task_id.to_string(),
            name,
            parallelism,
            max_parallelism: max_parallelism.max(parallelism),
            // Metrics do not say how a vertex is partitioned, so every vertex but a source is
            // taken as keyed and snapped to a divisor of the key groups (Flink's autoscaler
            // rule, `JobVertexScaler.scale`): on a keyed vertex a non-divisor gives some
            // subtasks one more key group than others, so the busiest carry up to twice the
            // load and the extra subtasks buy little; on an unkeyed one a divisor costs at
            // most a few subtasks more.
            keyed_input: !is_source,
            is_source,
            source_partitions: None,
            // A vertex running at another parallelism than the job's, and not at the one
            // twinsite set for it, had it set in code.
            pinned_parallelism: parallelism
                != facts
                    .vertex_parallelism
                    .get(task_id)
                    .copied()
                    .unwrap_or(facts.parallelism),
        },
        busy_time_ms_per_second: Series::gauge(aggregate(
            &of(m::BUSY_TIME_MS_PER_SECOND, &any),
            subtask,
            n,
            Op::Max,
            step_ms,
        )),
        records_in,
        pending_records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(metric: &str, subtask: &str, samples: &[(i64, f64)]) -> RawSeries {
        RawSeries {
            metric: metric.to_string(),
            labels: [
                (TASK_ID_LABEL.to_string(), "v1".to_string()),
                (TASK_NAME_LABEL.to_string(), "Map".to_string()),
                (SUBTASK_LABEL.to_string(), subtask.to_string()),
            ]
            .into(),
            samples: samples.iter().map(|(t, v)| Sample::new(*t, *v)).collect(),
        }
    }

    #[test]
    fn flink_default_max_parallelism_is_at_least_128_and_a_power_of_two() {
        assert_eq!(default_max_parallelism(1), 128);
        assert_eq!(default_max_parallelism(100), 256);
        assert_eq!(default_max_parallelism(30_000), 32_768);
    }

    #[test]
    fn rates_sum_over_subtasks_and_a_missing_subtask_makes_the_bucket_nan() {
        let a = series(m::RECORDS_IN_PER_SECOND, "0", &[(0, 10.0), (1000, 10.0)]);
        let b = series(m::RECORDS_IN_PER_SECOND, "1", &[(0, 5.0)]);
        let out = aggregate(&[&a, &b], subtask, Some(2), Op::Sum, 1000);
        assert_eq!(out[0], Sample::new(0, 15.0));
        assert!(out[1].value.is_nan(), "subtask 1 did not report at t=1000");
    }

    #[test]
    fn busy_time_is_the_max_over_subtasks_and_nan_propagates() {
        let a = series(
            m::BUSY_TIME_MS_PER_SECOND,
            "0",
            &[(0, 100.0), (1000, f64::NAN)],
        );
        let b = series(
            m::BUSY_TIME_MS_PER_SECOND,
            "1",
            &[(0, 700.0), (1000, 300.0)],
        );
        let out = aggregate(&[&a, &b], subtask, Some(2), Op::Max, 1000);
        assert_eq!(out[0].value, 700.0);
        assert!(out[1].value.is_nan());
    }

    /// The per-bucket rule stated plainly (a map of buckets, the latest sample of each
    /// member winning), as an oracle for the flat table `aggregate` uses.
    fn oracle(series: &[&RawSeries], expected: usize, op: Op, step: i64) -> Vec<Sample> {
        let mut buckets: BTreeMap<i64, BTreeMap<String, (i64, f64)>> = BTreeMap::new();
        for s in series {
            for sample in &s.samples {
                let slot = buckets
                    .entry(sample.at_ms.div_euclid(step) * step)
                    .or_default()
                    .entry(subtask(s))
                    .or_insert((i64::MIN, 0.0));
                if slot.0 <= sample.at_ms {
                    *slot = (sample.at_ms, sample.value);
                }
            }
        }
        buckets
            .into_iter()
            .map(|(at, members)| {
                let values: Vec<f64> = members.values().map(|(_, v)| *v).collect();
                let value = if values.len() < expected {
                    f64::NAN
                } else {
                    match op {
                        Op::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        Op::Sum => values.iter().sum(),
                    }
                };
                Sample::new(at, value)
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn aggregation_matches_the_bucket_rule_on_dense_and_sparse_series(
            samples in proptest::collection::vec((0i64..400, 0usize..3, 0.0..100.0f64), 1..80),
            spread in proptest::prelude::prop_oneof![proptest::prelude::Just(1i64), proptest::prelude::Just(1_000_000i64)],
            step in 1i64..50,
        ) {
            let series: Vec<RawSeries> = (0..3)
                .map(|m| {
                    let own: Vec<(i64, f64)> = samples
                        .iter()
                        .filter(|(_, who, _)| *who == m)
                        .map(|(t, _, v)| (*t * spread, *v))
                        .collect();
                    series(m::RECORDS_IN_PER_SECOND, &m.to_string(), &own)
                })
                .collect();
            let refs: Vec<&RawSeries> = series.iter().filter(|s| !s.samples.is_empty()).collect();
            let n = refs.len();
            for op in [Op::Sum, Op::Max] {
                let got = aggregate(&refs, subtask, Some(n), op, step);
                let want = oracle(&refs, n, op, step);
                proptest::prop_assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    proptest::prop_assert_eq!(g.at_ms, w.at_ms);
                    proptest::prop_assert!(
                        (g.value.is_nan() && w.value.is_nan()) || (g.value - w.value).abs() < 1e-9,
                        "{:?} vs {:?}", g, w
                    );
                }
            }
        }
    }

    #[test]
    fn samples_inside_one_step_count_once_per_subtask_with_the_latest_winning() {
        let a = series(m::RECORDS_IN_PER_SECOND, "0", &[(100, 1.0), (900, 3.0)]);
        let out = aggregate(&[&a], subtask, Some(1), Op::Sum, 1000);
        assert_eq!(out, vec![Sample::new(0, 3.0)]);
    }
}
