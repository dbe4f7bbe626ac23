//! Synthetic Flink metric history in the shape Flink's Prometheus reporter exports (one
//! series per subtask and per pod), deterministic per job and seed: for the report and
//! diagnosis benchmarks, the CLI tests, the Prometheus test and the simulated sites' metrics.
//! Every job gets a daily load cycle; a few jobs get no metrics at all, a scrape gap, or NaN
//! samples, so that the "insufficient data" paths run at scale too; and, drawn
//! independently, about a quarter get one kind of trouble ([`Trouble`]) in their last hours,
//! so that every diagnosis finding shows up in a generated fleet.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;

use scheduler::diagnosis::metric_names as dm;
use scheduler::report::assemble::{
    JOB_LABEL, JobFacts, NAMESPACE_LABEL, OPERATOR_NAME_LABEL, RawSeries, SUBTASK_LABEL,
    TASK_ID_LABEL, TASK_NAME_LABEL, TM_ID_LABEL,
};
use scheduler::rightsize::Sample;
use scheduler::rightsize::input::metric_names as m;

use super::JobKey;

const DAY_MS: f64 = 86_400_000.0;

/// What kind of history a job gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Healthy,
    /// No series at all.
    Silent,
    /// Two hours without samples, twelve hours before the end.
    Gap,
    /// Every tenth TaskManager heap sample is NaN.
    NanSamples,
}

/// A number in `[0, 1)` from the job, the seed and a purpose: the same for every run of one
/// build (std's hasher may change between Rust releases, which only reshuffles the fixture).
fn unit(job: &JobKey, seed: u64, purpose: &str) -> f64 {
    let mut h = DefaultHasher::new();
    (job, seed, purpose).hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What goes wrong with a job in its last hours (diagnosis fixtures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    None,
    /// The sources' pending records grow for the last six hours.
    LagGrowing,
    /// The source is backpressured by a saturated sink for the last six hours.
    Backpressure,
    /// A checkpoint fails every ten minutes for the last three hours.
    CheckpointFailures,
    /// Checkpoints take 55 s (the generated intervals are 30 s to 5 min).
    SlowCheckpoints,
    /// The job restarts every twenty minutes for the last two hours.
    Restarts,
    /// TaskManagers spend a fifth of their time in garbage collection.
    GcPressure,
    /// Subtask 0 of the second vertex takes three times its share of the input.
    Skew,
}

pub fn trouble_of(job: &JobKey, seed: u64) -> Trouble {
    match unit(job, seed, "trouble") {
        u if u < 0.04 => Trouble::LagGrowing,
        u if u < 0.08 => Trouble::Backpressure,
        u if u < 0.11 => Trouble::CheckpointFailures,
        u if u < 0.14 => Trouble::SlowCheckpoints,
        u if u < 0.17 => Trouble::Restarts,
        u if u < 0.20 => Trouble::GcPressure,
        u if u < 0.25 => Trouble::Skew,
        _ => Trouble::None,
    }
}

pub fn shape_of(job: &JobKey, seed: u64) -> Shape {
    match unit(job, seed, "shape") {
        u if u < 0.04 => Shape::Silent,
        u if u < 0.07 => Shape::Gap,
        u if u < 0.10 => Shape::NanSamples,
        _ => Shape::Healthy,
    }
}

/// The job's history over `[end − days, end]` every `step_ms`.
pub fn history(
    facts: &JobFacts,
    seed: u64,
    end_ms: i64,
    days: u32,
    step_ms: i64,
) -> Vec<RawSeries> {
    history_between(
        facts,
        seed,
        end_ms - i64::from(days) * DAY_MS as i64,
        end_ms,
        step_ms,
    )
}

/// The job's history over `[start, end]` every `step_ms`; trouble is placed relative to
/// `end`.
pub fn history_between(
    facts: &JobFacts,
    seed: u64,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Vec<RawSeries> {
    let key = JobKey::of(&facts.job);
    let shape = shape_of(&key, seed);
    if shape == Shape::Silent {
        return Vec::new();
    }
    let u = |purpose: &str| unit(&key, seed, purpose);
    let trouble = trouble_of(&key, seed);
    // Trouble starts this many hours before the end.
    let since = |hours: i64| end_ms - hours * 3_600_000;
    let gap = (end_ms - 12 * 3_600_000, end_ms - 10 * 3_600_000);
    let times: Vec<i64> = (0..)
        .map(|i| start_ms + i * step_ms)
        .take_while(|t| *t <= end_ms)
        .filter(|t| shape != Shape::Gap || !(gap.0..gap.1).contains(t))
        .collect();
    // Daily cycle: busiest at 20:00 UTC, quietest at 08:00, peak-to-mean 1 + amplitude.
    let amplitude = 0.2 + 0.6 * u("amplitude");
    let load = |t: i64| {
        let phase = (t as f64 % DAY_MS) / DAY_MS - 20.0 / 24.0;
        1.0 + amplitude * (2.0 * std::f64::consts::PI * phase).cos()
    };
    let p = facts.parallelism.max(1);
    let total_rate = 200.0 + 20_000.0 * u("rate");
    // Subtask capacity chosen so that peak utilisation is 20 %..120 % across jobs.
    let peak_util = 0.2 + u("util");
    let capacity = total_rate * (1.0 + amplitude) / (peak_util * f64::from(p));

    let base = |metric: &str| {
        let mut labels = BTreeMap::new();
        labels.insert(NAMESPACE_LABEL.to_string(), key.namespace.clone());
        labels.insert(JOB_LABEL.to_string(), key.name.clone());
        (metric.to_string(), labels)
    };
    // Three decimals at most, as exporters print them: the file stays a third of the size
    // it has with every digit of a float.
    let round = |v: f64| {
        if v.is_finite() {
            (v * 1000.0).round() / 1000.0
        } else {
            v
        }
    };
    let series =
        |(metric, labels): (String, BTreeMap<String, String>), f: &dyn Fn(i64) -> f64| RawSeries {
            metric,
            labels,
            samples: times
                .iter()
                .map(|t| Sample::new(*t, round(f(*t))))
                .collect(),
        };
    let mut out = Vec::new();
    for (vertex, name) in [(1, "Source: events"), (2, "Map -> Sink: store")] {
        let task_id = format!("{:016x}{vertex:016x}", (u("id") * 1e15) as u64);
        for subtask in 0..p {
            let task = |metric: &str| {
                let (metric, mut labels) = base(metric);
                labels.insert(TASK_ID_LABEL.to_string(), task_id.clone());
                labels.insert(TASK_NAME_LABEL.to_string(), name.to_string());
                labels.insert(SUBTASK_LABEL.to_string(), subtask.to_string());
                (metric, labels)
            };
            // Skew moves input between subtasks of the second vertex; their sum stays.
            let share = if trouble == Trouble::Skew && vertex == 2 && p > 1 {
                if subtask == 0 {
                    3.0 / f64::from(p + 2)
                } else {
                    1.0 / f64::from(p + 2)
                }
            } else {
                1.0 / f64::from(p)
            };
            let rate = move |t: i64| total_rate * load(t) * share;
            let saturated = trouble == Trouble::Backpressure && vertex == 2;
            let busy = move |t: i64| {
                if saturated && t >= since(6) {
                    990.0
                } else {
                    (1000.0 * total_rate * load(t) / f64::from(p) / capacity).min(1000.0)
                }
            };
            out.push(series(task(m::BUSY_TIME_MS_PER_SECOND), &busy));
            let backpressured = trouble == Trouble::Backpressure && vertex == 1;
            out.push(series(task(dm::BACK_PRESSURED_TIME_MS_PER_SECOND), &|t| {
                if backpressured && t >= since(6) {
                    750.0
                } else {
                    (busy(t) / 20.0).min(50.0)
                }
            }));
            if vertex == 1 {
                let (metric, mut labels) = task(m::SOURCE_OPERATOR_RECORDS_IN_PER_SECOND);
                labels.insert(
                    OPERATOR_NAME_LABEL.to_string(),
                    "Source:_events".to_string(),
                );
                out.push(series((metric, labels), &rate));
                let lag = 1000.0 * u("lag");
                let mut pending = task(m::PENDING_RECORDS);
                pending.1.insert(
                    OPERATOR_NAME_LABEL.to_string(),
                    "Source:_events".to_string(),
                );
                let growing = trouble == Trouble::LagGrowing;
                out.push(series(pending, &|t| {
                    let behind = if growing && t > since(6) {
                        // 100 000 records an hour per subtask.
                        (t - since(6)) as f64 / 36.0
                    } else {
                        0.0
                    };
                    lag * load(t) + behind
                }));
            } else {
                out.push(series(task(m::RECORDS_IN_PER_SECOND), &rate));
            }
        }
    }
    let process =
        |used: &str, max: &str, cpu: &str, memory: i64, pods: u32, heap_use: f64, cpu_use: f64| {
            let heap_max = (memory as f64 * 0.5).floor();
            let mut v = Vec::new();
            for pod in 0..pods {
                let labelled = |metric: &str| {
                    let (metric, mut labels) = base(metric);
                    labels.insert(TM_ID_LABEL.to_string(), format!("{}-{pod}", key.name));
                    (metric, labels)
                };
                let nan = shape == Shape::NanSamples;
                v.push(series(labelled(used), &|t| {
                    if nan && (t / step_ms) % 10 == 0 {
                        f64::NAN
                    } else {
                        heap_max * heap_use * (0.8 + 0.2 * load(t) / (1.0 + amplitude))
                    }
                }));
                v.push(series(labelled(max), &|_| heap_max));
                v.push(series(labelled(cpu), &|t| {
                    (cpu_use * load(t) / (1.0 + amplitude)).min(1.0)
                }));
            }
            v
        };
    let tms = p.div_ceil(facts.slots_per_task_manager.max(1));
    let gc = if trouble == Trouble::GcPressure {
        200.0
    } else {
        5.0 + 20.0 * u("gc")
    };
    for pod in 0..tms {
        let (metric, mut labels) = base(dm::GC_TIME_MS_PER_SECOND);
        labels.insert(TM_ID_LABEL.to_string(), format!("{}-{pod}", key.name));
        out.push(series((metric, labels), &|t| {
            gc * (0.8 + 0.2 * load(t) / (1.0 + amplitude))
        }));
    }
    // Job-level metrics of the JobManager.
    let hours_into = |t: i64, hours: i64, every_minutes: i64| {
        if t < since(hours) {
            0.0
        } else {
            ((t - since(hours)) / (every_minutes * 60_000)) as f64
        }
    };
    out.push(series(base(dm::FAILED_CHECKPOINTS), &|t| {
        let earlier = (u("old failures") * 3.0).floor();
        if trouble == Trouble::CheckpointFailures {
            earlier + hours_into(t, 3, 10)
        } else {
            earlier
        }
    }));
    out.push(series(base(dm::RESTARTS), &|t| {
        if trouble == Trouble::Restarts {
            hours_into(t, 2, 20)
        } else {
            0.0
        }
    }));
    let checkpoint_ms = if trouble == Trouble::SlowCheckpoints {
        55_000.0
    } else {
        500.0 + 4_000.0 * u("checkpoint")
    };
    out.push(series(base(dm::LAST_CHECKPOINT_DURATION), &|_| {
        checkpoint_ms
    }));
    out.extend(process(
        m::TASK_MANAGER_HEAP_USED,
        m::TASK_MANAGER_HEAP_MAX,
        m::TASK_MANAGER_CPU_LOAD,
        facts.task_manager.memory_bytes,
        tms,
        0.2 + 0.75 * u("tm heap"),
        0.1 + 0.85 * u("tm cpu"),
    ));
    out.extend(process(
        m::JOB_MANAGER_HEAP_USED,
        m::JOB_MANAGER_HEAP_MAX,
        m::JOB_MANAGER_CPU_LOAD,
        facts.job_manager.memory_bytes,
        1,
        0.3 + 0.4 * u("jm heap"),
        0.05 + 0.2 * u("jm cpu"),
    ));
    out
}

/// Writes series as the metrics file format of [`super::file`]: one JSON line per series.
pub fn write_json_lines(out: &mut impl Write, series: &[RawSeries]) -> std::io::Result<()> {
    let mut line = String::new();
    for s in series {
        line.clear();
        line.push_str("{\"metric\":{\"__name__\":");
        line.push_str(&serde_json::to_string(&s.metric).unwrap_or_default());
        for (k, v) in &s.labels {
            line.push(',');
            line.push_str(&serde_json::to_string(k).unwrap_or_default());
            line.push(':');
            line.push_str(&serde_json::to_string(v).unwrap_or_default());
        }
        line.push_str("},\"values\":[");
        for (i, sample) in s.samples.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let value = prometheus_value(sample.value);
            line.push_str(&format!("[{},\"{value}\"]", seconds_text(sample.at_ms)));
        }
        line.push_str("]}\n");
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// `1700000000` or `1700000000.5`: seconds without float noise.
pub fn seconds_text(ms: i64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
    }
}

/// A value as Prometheus writes it: `NaN`, `+Inf`, `-Inf`, or the shortest exact decimal.
pub fn prometheus_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}
