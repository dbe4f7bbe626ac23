//! Findings from Flink's own metrics (as its Prometheus reporter names them) over the
//! policy's `diagnosis.window`, and from the right-sizer's verdict over its lookback.
//!
//! Aggregation: a vertex's value is its worst subtask's mean over the window (backpressure,
//! busy time), a job's lag is the sum over source subtasks, counters count their increase in
//! the window (a decrease is a reset: the new value counts, as Prometheus' `increase` does),
//! a TaskManager value is the worst pod's mean.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Evidence, Finding, FindingKind, Severity, Thresholds, human_count, human_duration};
use crate::report::assemble::{
    OPERATOR_NAME_LABEL, RawSeries, SUBTASK_LABEL, TASK_ID_LABEL, TASK_NAME_LABEL, TM_ID_LABEL,
};
use crate::rightsize::input::metric_names as rs;
use crate::rightsize::{Assessment, Recommendation};

/// Flink metrics diagnosis reads beside the right-sizer's (`rightsize::input::metric_names`).
pub mod metric_names {
    /// Gauge, ms per second a subtask was backpressured (0..=1000).
    pub const BACK_PRESSURED_TIME_MS_PER_SECOND: &str =
        "flink_taskmanager_job_task_backPressuredTimeMsPerSecond";
    /// Counter, checkpoints that failed since the job started.
    pub const FAILED_CHECKPOINTS: &str = "flink_jobmanager_job_numberOfFailedCheckpoints";
    /// Gauge, ms the last completed checkpoint took.
    pub const LAST_CHECKPOINT_DURATION: &str = "flink_jobmanager_job_lastCheckpointDuration";
    /// Counter, restarts since the job was submitted.
    pub const RESTARTS: &str = "flink_jobmanager_job_numRestarts";
    /// Gauge, ms per second spent in garbage collection by all collectors (Flink ≥ 1.19).
    pub const GC_TIME_MS_PER_SECOND: &str =
        "flink_taskmanager_Status_JVM_GarbageCollector_All_TimeMsPerSecond";

    pub const ALL: [&str; 5] = [
        BACK_PRESSURED_TIME_MS_PER_SECOND,
        FAILED_CHECKPOINTS,
        LAST_CHECKPOINT_DURATION,
        RESTARTS,
        GC_TIME_MS_PER_SECOND,
    ];
}

use metric_names as dm;

/// One job's metrics and what the spec and right-sizer say about it.
#[derive(Debug, Clone, Copy)]
pub struct FlinkInputs<'a> {
    /// Every series of the job over (at least) the window ending at `until_ms`.
    pub series: &'a [RawSeries],
    pub until_ms: i64,
    /// `spec.checkpoints.interval`.
    pub checkpoint_interval: Option<Duration>,
    pub recommendation: Option<&'a Recommendation>,
}

struct Window {
    from: i64,
    to: i64,
}

impl Window {
    fn quarter(&self) -> i64 {
        ((self.to - self.from) / 4).max(1)
    }
}

/// The finite samples of `s` inside `w`, in time order.
fn samples_in(s: &RawSeries, w: &Window) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = s
        .samples
        .iter()
        .filter(|x| x.at_ms >= w.from && x.at_ms <= w.to && x.value.is_finite())
        .map(|x| (x.at_ms, x.value))
        .collect();
    out.sort_by_key(|(t, _)| *t);
    out
}

fn mean_between(s: &RawSeries, from: i64, to: i64) -> Option<f64> {
    let values: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.at_ms >= from && x.at_ms <= to && x.value.is_finite())
        .map(|x| x.value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// A counter's increase inside the window, starting from its last sample before the window.
fn increase(s: &RawSeries, w: &Window) -> Option<f64> {
    let before = s
        .samples
        .iter()
        .filter(|x| x.at_ms < w.from && x.value.is_finite())
        .max_by_key(|x| x.at_ms)
        .map(|x| x.value);
    let inside = samples_in(s, w);
    if inside.is_empty() {
        return None;
    }
    let mut previous = before.unwrap_or(inside[0].1);
    let mut total = 0.0;
    for (_, value) in inside {
        total += if value >= previous {
            value - previous
        } else {
            // Reset: the counter restarted from zero in between.
            value
        };
        previous = value;
    }
    Some(total)
}

fn label<'a>(s: &'a RawSeries, name: &str) -> Option<&'a str> {
    s.labels.get(name).map(String::as_str)
}

/// Per vertex (task id): its name and its series of `metric`.
fn by_vertex<'a>(
    series: &'a [RawSeries],
    metric: &str,
    only: impl Fn(&RawSeries) -> bool,
) -> BTreeMap<&'a str, (String, Vec<&'a RawSeries>)> {
    let mut out: BTreeMap<&str, (String, Vec<&RawSeries>)> = BTreeMap::new();
    for s in series.iter().filter(|s| s.metric == metric && only(s)) {
        let Some(task) = label(s, TASK_ID_LABEL) else {
            continue;
        };
        let entry = out.entry(task).or_insert_with(|| {
            (
                label(s, TASK_NAME_LABEL).unwrap_or(task).to_string(),
                Vec::new(),
            )
        });
        entry.1.push(s);
    }
    out
}

/// The vertex whose worst subtask has the highest mean of `metric` in the window:
/// (vertex name, subtask, mean).
fn worst_vertex(series: &[RawSeries], metric: &str, w: &Window) -> Option<(String, String, f64)> {
    let mut worst: Option<(String, String, f64)> = None;
    for (name, members) in by_vertex(series, metric, |_| true).into_values() {
        for s in members {
            let Some(mean) = mean_between(s, w.from, w.to) else {
                continue;
            };
            if worst.as_ref().is_none_or(|(_, _, m)| mean > *m) {
                let subtask = label(s, SUBTASK_LABEL).unwrap_or("?").to_string();
                worst = Some((name.clone(), subtask, mean));
            }
        }
    }
    worst
}

fn recommendation_hint(rec: Option<&Recommendation>) -> Option<String> {
    let evidence = rec?.parallelism.assessed()?;
    (evidence.change && evidence.recommended > evidence.current).then(|| {
        format!(
            "the right-sizer recommends parallelism {} → {} (bottleneck {})",
            evidence.current, evidence.recommended, evidence.bottleneck_vertex
        )
    })
}

/// Findings from a job's Flink metrics and its right-sizing, and notes on what could not be
/// judged.
pub fn flink_findings(inputs: &FlinkInputs<'_>, t: &Thresholds) -> (Vec<Finding>, Vec<String>) {
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    let w = Window {
        from: inputs.until_ms - t.window.as_millis() as i64,
        to: inputs.until_ms,
    };
    let window = human_duration(t.window);
    let series = inputs.series;
    let mut not_judged: Vec<&str> = Vec::new();

    // Consumer lag: FLIP-27 `pendingRecords`, else the Kafka reader's `records-lag-max`.
    let pending: Vec<&RawSeries> = series
        .iter()
        .filter(|s| s.metric == rs::PENDING_RECORDS)
        .collect();
    let (lag_metric, lag_series) = if pending.is_empty() {
        (
            rs::KAFKA_RECORDS_LAG_MAX,
            series
                .iter()
                .filter(|s| s.metric == rs::KAFKA_RECORDS_LAG_MAX)
                .collect(),
        )
    } else {
        (rs::PENDING_RECORDS, pending)
    };
    if !lag_series.is_empty() {
        // The sum over source subtasks of each quarter's mean, for subtasks with samples in
        // every quarter.
        let q = w.quarter();
        let mut quarters = [0.0f64; 4];
        let mut counted = 0;
        for s in &lag_series {
            let means: Vec<Option<f64>> = (0..4)
                .map(|i| mean_between(s, w.from + i * q, w.from + (i + 1) * q))
                .collect();
            if means.iter().all(Option::is_some) {
                for (sum, mean) in quarters.iter_mut().zip(means) {
                    *sum += mean.unwrap_or(0.0);
                }
                counted += 1;
            }
        }
        let (start, end) = (quarters[0], quarters[3]);
        let rising = quarters.windows(2).all(|p| p[1] >= p[0]);
        if counted == 0 {
            not_judged.push("consumer lag");
        } else if rising && end - start > t.lag_growth_min_records {
            let seconds = (3 * q) as f64 / 1000.0;
            findings.push(Finding {
                kind: FindingKind::ConsumerLagGrowing,
                severity: Severity::Warning,
                summary: format!(
                    "consumer lag grew from {} to {} records in the last {window} (+{}/s): the job reads slower than its sources fill",
                    human_count(start),
                    human_count(end),
                    human_count((end - start) / seconds.max(1.0))
                ),
                evidence: vec![Evidence::new(
                    lag_metric,
                    Some(format!("sum over {counted} source subtasks")),
                    format!(
                        "mean per quarter of the window: {}",
                        quarters.iter().map(|v| human_count(*v)).collect::<Vec<_>>().join(" → ")
                    ),
                )],
                action: recommendation_hint(inputs.recommendation).map_or_else(
                    || "find the bottleneck (backpressure, busy vertex below) and give it more parallelism".to_string(),
                    |hint| format!("{hint}: apply it, or raise the bottleneck's parallelism"),
                ),
            });
        }
    }

    // Backpressure and the busiest vertex.
    let busiest = worst_vertex(series, rs::BUSY_TIME_MS_PER_SECOND, &w);
    let backpressured = worst_vertex(series, dm::BACK_PRESSURED_TIME_MS_PER_SECOND, &w);
    if backpressured.is_none() {
        not_judged.push("backpressure");
    }
    let busy_evidence = |(name, subtask, mean): &(String, String, f64)| {
        Evidence::new(
            rs::BUSY_TIME_MS_PER_SECOND,
            Some(format!("vertex {name:?}, subtask {subtask}")),
            format!("busy {mean:.0} ms/s on average over the last {window}"),
        )
    };
    let mut busy_reported = false;
    if let Some((name, subtask, mean)) = &backpressured
        && *mean > t.backpressure_ms_per_second
    {
        let mut evidence = vec![Evidence::new(
            dm::BACK_PRESSURED_TIME_MS_PER_SECOND,
            Some(format!("vertex {name:?}, subtask {subtask}")),
            format!("backpressured {mean:.0} ms/s on average over the last {window}"),
        )];
        let cause = match &busiest {
            Some(b) => {
                evidence.push(busy_evidence(b));
                busy_reported = true;
                format!(
                    "; the busiest vertex is {:?} ({:.0} ms/s busy), the likely bottleneck",
                    b.0, b.2
                )
            }
            None => String::new(),
        };
        findings.push(Finding {
            kind: FindingKind::Backpressure,
            severity: Severity::Warning,
            summary: format!("vertex {name:?} is backpressured {mean:.0} ms/s{cause}"),
            evidence,
            action: recommendation_hint(inputs.recommendation).map_or_else(
                || "raise the parallelism of the busiest vertex downstream, or make it cheaper per record".to_string(),
                |hint| format!("{hint}: apply it"),
            ),
        });
    }
    if let Some(b) = &busiest
        && !busy_reported
        && b.2 > t.busy_ms_per_second
    {
        findings.push(Finding {
            kind: FindingKind::BusyVertex,
            severity: Severity::Warning,
            summary: format!(
                "vertex {:?} is busy {:.0} ms/s: it has no headroom left",
                b.0, b.2
            ),
            evidence: vec![busy_evidence(b)],
            action: recommendation_hint(inputs.recommendation).map_or_else(
                || "raise the vertex's parallelism before its input grows".to_string(),
                |hint| format!("{hint}: apply it"),
            ),
        });
    }

    // Checkpoints.
    let failed: Vec<f64> = series
        .iter()
        .filter(|s| s.metric == dm::FAILED_CHECKPOINTS)
        .filter_map(|s| increase(s, &w))
        .collect();
    if failed.is_empty() {
        not_judged.push("checkpoint failures");
    } else {
        let count = failed.iter().sum::<f64>().round();
        if count >= f64::from(t.checkpoint_failures) {
            findings.push(Finding {
                kind: FindingKind::CheckpointFailures,
                severity: Severity::Warning,
                summary: format!("{count:.0} checkpoints failed in the last {window}"),
                evidence: vec![Evidence::new(
                    dm::FAILED_CHECKPOINTS,
                    None,
                    format!("increase of {count:.0} over the last {window}"),
                )],
                action: "read the JobManager log for the checkpoint's failure cause (timeout, storage, a failing task); every failure widens the RPO".to_string(),
            });
        }
    }
    let longest = series
        .iter()
        .filter(|s| s.metric == dm::LAST_CHECKPOINT_DURATION)
        .flat_map(|s| samples_in(s, &w))
        .map(|(_, v)| v)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    match (longest, inputs.checkpoint_interval) {
        (None, _) => not_judged.push("checkpoint duration"),
        (Some(_), None) => {}
        (Some(duration_ms), Some(interval)) => {
            let interval_ms = interval.as_millis() as f64;
            if duration_ms >= t.checkpoint_duration_fraction * interval_ms {
                findings.push(Finding {
                    kind: FindingKind::CheckpointDurationNearInterval,
                    severity: if duration_ms >= interval_ms {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    summary: format!(
                        "a checkpoint took {} of the {} interval",
                        human_duration(Duration::from_millis(duration_ms as u64)),
                        human_duration(interval)
                    ),
                    evidence: vec![
                        Evidence::new(
                            dm::LAST_CHECKPOINT_DURATION,
                            None,
                            format!("longest {duration_ms:.0} ms in the last {window}"),
                        ),
                        Evidence::new(
                            "spec.checkpoints.interval",
                            None,
                            human_duration(interval),
                        ),
                    ],
                    action: "raise spec.checkpoints.interval, enable incremental checkpoints (spec.checkpoints.incremental), or relieve backpressure (unaligned checkpoints); checkpoints that queue up widen the RPO".to_string(),
                });
            }
        }
    }

    // Restarts.
    let restarts: Vec<f64> = series
        .iter()
        .filter(|s| s.metric == dm::RESTARTS)
        .filter_map(|s| increase(s, &w))
        .collect();
    if restarts.is_empty() {
        not_judged.push("restarts");
    } else {
        let count = restarts.iter().sum::<f64>().round();
        if count >= f64::from(t.restarts) {
            findings.push(Finding {
                kind: FindingKind::Restarts,
                severity: if count >= 3.0 * f64::from(t.restarts) {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                summary: format!("the job restarted {count:.0} times in the last {window}"),
                evidence: vec![Evidence::new(
                    dm::RESTARTS,
                    None,
                    format!("increase of {count:.0} over the last {window}"),
                )],
                action: "read the exception history (Flink web UI or REST /jobs/<id>/exceptions); each restart replays input since the last checkpoint".to_string(),
            });
        }
    }

    // Garbage collection per TaskManager.
    let mut worst_gc: Option<(String, f64)> = None;
    for s in series
        .iter()
        .filter(|s| s.metric == dm::GC_TIME_MS_PER_SECOND)
    {
        if let Some(mean) = mean_between(s, w.from, w.to)
            && worst_gc.as_ref().is_none_or(|(_, m)| mean > *m)
        {
            worst_gc = Some((label(s, TM_ID_LABEL).unwrap_or("?").to_string(), mean));
        }
    }
    match worst_gc {
        None => not_judged.push("GC time"),
        Some((pod, mean)) if mean > t.gc_ms_per_second => findings.push(Finding {
            kind: FindingKind::GcTime,
            severity: Severity::Warning,
            summary: format!(
                "TaskManager {pod} spends {mean:.0} ms/s ({:.0} %) in garbage collection",
                mean / 10.0
            ),
            evidence: vec![Evidence::new(
                dm::GC_TIME_MS_PER_SECOND,
                Some(format!("TaskManager {pod}")),
                format!("{mean:.0} ms/s on average over the last {window}"),
            )],
            action: "give the TaskManagers more heap (spec.taskManager.resources.memory; the right-sizer's memory evidence says how much) or look for state kept on the heap".to_string(),
        }),
        Some(_) => {}
    }

    // Subtask skew of input per vertex.
    let is_source_operator =
        |s: &RawSeries| label(s, OPERATOR_NAME_LABEL).is_some_and(|n| n.starts_with("Source"));
    let mut rates = by_vertex(
        series,
        rs::SOURCE_OPERATOR_RECORDS_IN_PER_SECOND,
        is_source_operator,
    );
    for (task, entry) in by_vertex(series, rs::RECORDS_IN_PER_SECOND, |_| true) {
        rates.entry(task).or_insert(entry);
    }
    let mut worst_skew: Option<(String, String, f64, f64)> = None;
    for (name, members) in rates.into_values() {
        let means: Vec<(String, f64)> = members
            .iter()
            .filter_map(|s| {
                Some((
                    label(s, SUBTASK_LABEL).unwrap_or("?").to_string(),
                    mean_between(s, w.from, w.to)?,
                ))
            })
            .collect();
        if means.len() < 2 {
            continue;
        }
        let mean = means.iter().map(|(_, m)| m).sum::<f64>() / means.len() as f64;
        let Some((subtask, max)) = means.iter().max_by(|a, b| a.1.total_cmp(&b.1)).cloned() else {
            continue;
        };
        if mean < t.skew_min_records_per_second || mean <= 0.0 {
            continue;
        }
        let ratio = max / mean;
        if ratio >= t.skew_ratio && worst_skew.as_ref().is_none_or(|best| ratio > best.2) {
            worst_skew = Some((name, subtask, ratio, mean));
        }
    }
    if let Some((name, subtask, ratio, mean)) = worst_skew {
        findings.push(Finding {
            kind: FindingKind::SubtaskSkew,
            severity: Severity::Warning,
            summary: format!(
                "subtask {subtask} of vertex {name:?} takes {ratio:.1}× the vertex's mean input: more parallelism will not help it"
            ),
            evidence: vec![Evidence::new(
                rs::RECORDS_IN_PER_SECOND,
                Some(format!("vertex {name:?}")),
                format!(
                    "subtask {subtask}: {} records/s, mean over subtasks {} records/s",
                    human_count(ratio * mean),
                    human_count(mean)
                ),
            )],
            action: "spread the hot key (salting, a two-phase aggregation) or rebalance before the vertex".to_string(),
        });
    }

    if !not_judged.is_empty() {
        notes.push(format!(
            "not judged, no samples in the last {window}: {}",
            not_judged.join(", ")
        ));
    }
    if let Some(rec) = inputs.recommendation {
        rightsizing_findings(rec, &mut findings, &mut notes);
    }
    (findings, notes)
}

/// The right-sizer's verdict as findings: what it would raise, what it would give back.
fn rightsizing_findings(
    rec: &Recommendation,
    findings: &mut Vec<Finding>,
    notes: &mut Vec<String>,
) {
    let mut under: Vec<Evidence> = Vec::new();
    let mut over: Vec<Evidence> = Vec::new();
    match &rec.parallelism {
        Assessment::Assessed(p) if p.change => {
            let evidence = Evidence::new(
                "right-sizer:parallelism",
                Some(format!("bottleneck vertex {:?}", p.bottleneck_vertex)),
                format!("{} → {}", p.current, p.recommended),
            );
            if p.recommended > p.current {
                under.push(evidence);
            } else {
                over.push(evidence);
            }
        }
        Assessment::Assessed(_) => {}
        Assessment::InsufficientData { reasons } => notes.push(format!(
            "right-sizing of parallelism: insufficient data ({})",
            reasons
                .first()
                .map_or_else(|| "no reason given".to_string(), ToString::to_string)
        )),
    }
    for (process, assessment) in [
        ("TaskManager", &rec.task_manager),
        ("JobManager", &rec.job_manager),
    ] {
        let Some(p) = assessment.assessed() else {
            if let Some(reason) = assessment.reasons().first() {
                notes.push(format!(
                    "right-sizing of the {process}: insufficient data ({reason})"
                ));
            }
            continue;
        };
        if p.memory_change {
            let evidence = Evidence::new(
                "right-sizer:memory",
                Some(process.to_string()),
                format!(
                    "{} → {} (peak heap {} of {})",
                    human_count(p.current_memory_bytes as f64),
                    human_count(p.recommended_memory_bytes as f64),
                    human_count(p.peak_heap_used_bytes),
                    human_count(p.heap_max_bytes as f64)
                ),
            );
            if p.recommended_memory_bytes > p.current_memory_bytes {
                under.push(evidence);
            } else {
                over.push(evidence);
            }
        }
        if p.cpu_change
            && let Some(cpu) = p.recommended_cpu_milli
        {
            let evidence = Evidence::new(
                "right-sizer:cpu",
                Some(process.to_string()),
                format!("{}m → {cpu}m", p.current_cpu_milli),
            );
            if cpu > p.current_cpu_milli {
                under.push(evidence);
            } else {
                over.push(evidence);
            }
        }
    }
    let patch = serde_json::to_string(&rec.patch).unwrap_or_default();
    let apply = format!(
        "review and apply the right-sizer's patch {patch}: POST /api/v1/jobs/{}/rightsize?apply=true",
        rec.job
    );
    if !under.is_empty() {
        findings.push(Finding {
            kind: FindingKind::UnderProvisioned,
            severity: Severity::Warning,
            summary: format!(
                "under-provisioned: the right-sizer asks for more {}",
                parts(&under)
            ),
            evidence: under,
            action: apply.clone(),
        });
    }
    if !over.is_empty() {
        findings.push(Finding {
            kind: FindingKind::OverProvisioned,
            severity: Severity::Info,
            summary: format!(
                "over-provisioned: the right-sizer would give back {}",
                parts(&over)
            ),
            evidence: over,
            action: apply,
        });
    }
}

fn parts(evidence: &[Evidence]) -> String {
    let mut names: Vec<String> = Vec::new();
    for e in evidence {
        let part = e.source.trim_start_matches("right-sizer:");
        let name = match &e.scope {
            Some(scope) if part != "parallelism" => format!("{scope} {part}"),
            _ => part.to_string(),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rightsize::Sample;

    const MIN: i64 = 60_000;
    const END: i64 = 100 * 60 * MIN;

    fn series(metric: &str, labels: &[(&str, &str)], f: impl Fn(i64) -> f64) -> RawSeries {
        RawSeries {
            metric: metric.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            // Two hours every minute up to END.
            samples: (0..=120)
                .map(|i| {
                    let t = END - (120 - i) * MIN;
                    Sample::new(t, f(t))
                })
                .collect(),
        }
    }

    fn task(vertex: &str, name: &str, subtask: &str) -> Vec<(&'static str, String)> {
        vec![
            (TASK_ID_LABEL, vertex.to_string()),
            (TASK_NAME_LABEL, name.to_string()),
            (SUBTASK_LABEL, subtask.to_string()),
        ]
    }

    fn labelled(
        metric: &str,
        labels: Vec<(&'static str, String)>,
        f: impl Fn(i64) -> f64,
    ) -> RawSeries {
        let borrowed: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        series(metric, &borrowed, f)
    }

    fn diagnose(series: &[RawSeries]) -> (Vec<Finding>, Vec<String>) {
        flink_findings(
            &FlinkInputs {
                series,
                until_ms: END,
                checkpoint_interval: Some(Duration::from_secs(60)),
                recommendation: None,
            },
            &Thresholds::default(),
        )
    }

    fn kinds(series: &[RawSeries]) -> Vec<FindingKind> {
        diagnose(series).0.iter().map(|f| f.kind).collect()
    }

    /// A healthy job: every metric present, every value well inside its threshold.
    fn healthy() -> Vec<RawSeries> {
        let mut out = Vec::new();
        for subtask in ["0", "1"] {
            out.push(labelled(
                rs::BUSY_TIME_MS_PER_SECOND,
                task("v1", "Source: a", subtask),
                |_| 300.0,
            ));
            out.push(labelled(
                dm::BACK_PRESSURED_TIME_MS_PER_SECOND,
                task("v1", "Source: a", subtask),
                |_| 10.0,
            ));
            out.push(labelled(
                rs::RECORDS_IN_PER_SECOND,
                task("v2", "Map", subtask),
                |_| 100.0,
            ));
            out.push(labelled(
                rs::PENDING_RECORDS,
                task("v1", "Source: a", subtask),
                |_| 500.0,
            ));
        }
        out.push(series(dm::FAILED_CHECKPOINTS, &[], |_| 2.0));
        out.push(series(dm::RESTARTS, &[], |_| 0.0));
        out.push(series(dm::LAST_CHECKPOINT_DURATION, &[], |_| 1500.0));
        out.push(series(
            dm::GC_TIME_MS_PER_SECOND,
            &[(TM_ID_LABEL, "tm-0")],
            |_| 5.0,
        ));
        out
    }

    #[test]
    fn a_healthy_job_has_no_findings_and_nothing_left_unjudged() {
        let (findings, notes) = diagnose(&healthy());
        assert!(findings.is_empty(), "{findings:#?}");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_job_without_metrics_says_what_it_could_not_judge() {
        let (findings, notes) = diagnose(&[]);
        assert!(findings.is_empty());
        assert!(
            notes[0].contains("backpressure") && notes[0].contains("restarts"),
            "{notes:?}"
        );
    }

    #[test]
    fn lag_that_keeps_growing_is_found_with_its_start_and_end() {
        let mut s = healthy();
        s.retain(|x| x.metric != rs::PENDING_RECORDS);
        // +20 000 records per subtask per hour.
        s.push(labelled(
            rs::PENDING_RECORDS,
            task("v1", "Source: a", "0"),
            |t| (t - (END - 120 * MIN)) as f64 / 180.0,
        ));
        let (findings, _) = diagnose(&s);
        let lag = findings
            .iter()
            .find(|f| f.kind == FindingKind::ConsumerLagGrowing)
            .expect("lag finding");
        assert!(lag.summary.contains("grew from"), "{}", lag.summary);
        assert_eq!(lag.evidence[0].source, rs::PENDING_RECORDS);
    }

    #[test]
    fn lag_that_rose_for_hours_still_counts_as_growing_in_the_window() {
        let mut s = healthy();
        s.retain(|x| x.metric != rs::PENDING_RECORDS);
        // A million records behind already, growing 20 000 an hour.
        s.push(labelled(
            rs::PENDING_RECORDS,
            task("v1", "Source: a", "0"),
            |t| 1e6 + (t - (END - 120 * MIN)) as f64 / 180.0,
        ));
        assert!(kinds(&s).contains(&FindingKind::ConsumerLagGrowing));
    }

    #[test]
    fn lag_that_rose_and_fell_back_is_not_growth() {
        let mut s = healthy();
        s.retain(|x| x.metric != rs::PENDING_RECORDS);
        s.push(labelled(
            rs::PENDING_RECORDS,
            task("v1", "Source: a", "0"),
            |t| {
                let into = (t - (END - 60 * MIN)) as f64 / MIN as f64;
                if into < 50.0 { 1000.0 * into } else { 100.0 }
            },
        ));
        assert!(!kinds(&s).contains(&FindingKind::ConsumerLagGrowing));
    }

    #[test]
    fn high_but_steady_lag_is_not_growth() {
        let mut s = healthy();
        s.retain(|x| x.metric != rs::PENDING_RECORDS);
        s.push(labelled(
            rs::KAFKA_RECORDS_LAG_MAX,
            task("v1", "Source: a", "0"),
            |_| 5e6,
        ));
        assert!(!kinds(&s).contains(&FindingKind::ConsumerLagGrowing));
    }

    #[test]
    fn backpressure_names_the_backpressured_and_the_busiest_vertex() {
        let mut s = healthy();
        s.push(labelled(
            dm::BACK_PRESSURED_TIME_MS_PER_SECOND,
            task("v1", "Source: a", "1"),
            |_| 800.0,
        ));
        s.push(labelled(
            rs::BUSY_TIME_MS_PER_SECOND,
            task("v3", "Window -> Sink", "0"),
            |_| 990.0,
        ));
        let (findings, _) = diagnose(&s);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.kind, FindingKind::Backpressure);
        assert!(
            f.summary.contains("\"Source: a\"") && f.summary.contains("\"Window -> Sink\""),
            "{}",
            f.summary
        );
        assert_eq!(f.evidence.len(), 2);
    }

    #[test]
    fn a_saturated_vertex_without_backpressure_is_a_busy_vertex() {
        let mut s = healthy();
        s.push(labelled(
            rs::BUSY_TIME_MS_PER_SECOND,
            task("v3", "Sink", "0"),
            |_| 950.0,
        ));
        assert_eq!(kinds(&s), vec![FindingKind::BusyVertex]);
    }

    #[test]
    fn checkpoint_failures_and_restarts_count_their_increase_in_the_window_across_resets() {
        let mut s = healthy();
        s.retain(|x| x.metric != dm::FAILED_CHECKPOINTS && x.metric != dm::RESTARTS);
        // Failures: 5 before the window (not counted), then +3, a reset to 0, then +2.
        s.push(series(dm::FAILED_CHECKPOINTS, &[], |t| {
            let inside = t - (END - 60 * MIN);
            if inside < 0 {
                5.0
            } else if inside < 20 * MIN {
                8.0
            } else if inside < 40 * MIN {
                0.0
            } else {
                2.0
            }
        }));
        s.push(series(dm::RESTARTS, &[], |t| {
            if t > END - 10 * MIN { 4.0 } else { 3.0 }
        }));
        let (findings, _) = diagnose(&s);
        let failures = findings
            .iter()
            .find(|f| f.kind == FindingKind::CheckpointFailures)
            .unwrap();
        assert!(
            failures.summary.starts_with("5 checkpoints failed"),
            "{}",
            failures.summary
        );
        let restarts = findings
            .iter()
            .find(|f| f.kind == FindingKind::Restarts)
            .unwrap();
        assert!(
            restarts.summary.contains("restarted 1 times"),
            "{}",
            restarts.summary
        );
        assert_eq!(restarts.severity, Severity::Warning);
    }

    #[test]
    fn a_checkpoint_longer_than_its_interval_is_critical() {
        let mut s = healthy();
        s.push(series(dm::LAST_CHECKPOINT_DURATION, &[], |t| {
            if t == END { 61_000.0 } else { 1000.0 }
        }));
        let (findings, _) = diagnose(&s);
        assert_eq!(
            findings[0].kind,
            FindingKind::CheckpointDurationNearInterval
        );
        assert_eq!(findings[0].severity, Severity::Critical);
        let mut s = healthy();
        s.push(series(dm::LAST_CHECKPOINT_DURATION, &[], |_| 50_000.0));
        assert_eq!(diagnose(&s).0[0].severity, Severity::Warning);
    }

    #[test]
    fn gc_pressure_names_the_worst_task_manager() {
        let mut s = healthy();
        s.push(series(
            dm::GC_TIME_MS_PER_SECOND,
            &[(TM_ID_LABEL, "tm-7")],
            |_| 250.0,
        ));
        let (findings, _) = diagnose(&s);
        assert_eq!(findings[0].kind, FindingKind::GcTime);
        assert!(findings[0].summary.contains("tm-7"));
    }

    #[test]
    fn one_hot_subtask_is_skew() {
        let mut s = healthy();
        s.push(labelled(
            rs::RECORDS_IN_PER_SECOND,
            task("v2", "Map", "2"),
            |_| 700.0,
        ));
        let (findings, _) = diagnose(&s);
        assert_eq!(findings[0].kind, FindingKind::SubtaskSkew);
        assert!(
            findings[0].summary.contains("subtask 2"),
            "{}",
            findings[0].summary
        );
    }

    #[test]
    fn samples_outside_the_window_do_not_count() {
        let mut s = healthy();
        // Saturated two hours ago, idle in the last hour.
        s.push(labelled(
            rs::BUSY_TIME_MS_PER_SECOND,
            task("v3", "Sink", "0"),
            |t| {
                if t < END - 61 * MIN { 1000.0 } else { 100.0 }
            },
        ));
        assert!(kinds(&s).is_empty());
    }
}
