//! The policy's `diagnosis` section: the thresholds `twinsite diagnose` and
//! `GET /api/v1/diagnosis` judge Flink's metrics by (schema in `policies/README.md`). Parsed
//! as strictly as the rest of the policy; resolved into [`crate::diagnosis::Thresholds`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::common::positive_duration;
use super::error::Problems;
use crate::diagnosis::Thresholds;

/// The `diagnosis` section exactly as written. Every field has a default, so the section may
/// be left out; unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiagnosisSpec {
    /// The recent stretch of metrics judged (lag trend, backpressure, failures, GC, skew).
    #[serde(default = "default_window")]
    pub window: String,
    /// Consumer lag counts as growing when it rose in every quarter of the window and by
    /// more than this many records from the first quarter to the last.
    #[serde(default = "default_lag_growth_min_records")]
    pub lag_growth_min_records: f64,
    /// A vertex whose most backpressured subtask spends more than this many ms per second
    /// backpressured, averaged over the window.
    #[serde(default = "default_backpressure")]
    pub backpressure_ms_per_second: f64,
    /// A vertex whose busiest subtask is busy more than this many ms per second.
    #[serde(default = "default_busy")]
    pub busy_ms_per_second: f64,
    /// Failed checkpoints within the window that make a finding.
    #[serde(default = "default_one")]
    pub checkpoint_failures: u32,
    /// A checkpoint taking more than this fraction of the job's checkpoint interval.
    #[serde(default = "default_checkpoint_duration_fraction")]
    pub checkpoint_duration_fraction: f64,
    /// Restarts within the window that make a finding.
    #[serde(default = "default_one")]
    pub restarts: u32,
    /// A TaskManager spending more than this many ms per second in garbage collection,
    /// averaged over the window.
    #[serde(default = "default_gc")]
    pub gc_ms_per_second: f64,
    /// A subtask taking more than this multiple of its vertex's mean input ...
    #[serde(default = "default_skew_ratio")]
    pub skew_ratio: f64,
    /// ... when the vertex's mean input per subtask is at least this many records per second.
    #[serde(default = "default_skew_min_rate")]
    pub skew_min_records_per_second: f64,
}

fn default_window() -> String {
    "1h".to_string()
}
fn default_lag_growth_min_records() -> f64 {
    10_000.0
}
fn default_backpressure() -> f64 {
    500.0
}
fn default_busy() -> f64 {
    900.0
}
fn default_one() -> u32 {
    1
}
fn default_checkpoint_duration_fraction() -> f64 {
    0.8
}
fn default_gc() -> f64 {
    100.0
}
fn default_skew_ratio() -> f64 {
    2.0
}
fn default_skew_min_rate() -> f64 {
    10.0
}

impl Default for DiagnosisSpec {
    fn default() -> Self {
        DiagnosisSpec {
            window: default_window(),
            lag_growth_min_records: default_lag_growth_min_records(),
            backpressure_ms_per_second: default_backpressure(),
            busy_ms_per_second: default_busy(),
            checkpoint_failures: default_one(),
            checkpoint_duration_fraction: default_checkpoint_duration_fraction(),
            restarts: default_one(),
            gc_ms_per_second: default_gc(),
            skew_ratio: default_skew_ratio(),
            skew_min_records_per_second: default_skew_min_rate(),
        }
    }
}

impl DiagnosisSpec {
    pub fn is_default(&self) -> bool {
        *self == DiagnosisSpec::default()
    }
}

/// The thresholds of `spec`, or `None` with every problem recorded under `diagnosis.*`.
pub(crate) fn resolve(spec: &DiagnosisSpec, problems: &mut Problems) -> Option<Thresholds> {
    let before = problems.len();
    let window = positive_duration(problems, "diagnosis.window", &spec.window);
    // A window longer than a week asks for more history than any lookback keeps.
    if window.is_some_and(|w| w > Duration::from_secs(7 * 24 * 3600)) {
        problems.field(
            "diagnosis.window",
            format!("{:?} is longer than 7d", spec.window),
        );
    }
    let mut number = |field: &str, value: f64, min: f64, max: f64| {
        if !value.is_finite() || value < min || value > max {
            problems.field(
                format!("diagnosis.{field}"),
                format!("must be between {min} and {max}, found {value}"),
            );
        }
    };
    number(
        "lagGrowthMinRecords",
        spec.lag_growth_min_records,
        0.0,
        1e15,
    );
    number(
        "backpressureMsPerSecond",
        spec.backpressure_ms_per_second,
        0.0,
        1000.0,
    );
    number("busyMsPerSecond", spec.busy_ms_per_second, 0.0, 1000.0);
    number(
        "checkpointDurationFraction",
        spec.checkpoint_duration_fraction,
        0.01,
        100.0,
    );
    number("gcMsPerSecond", spec.gc_ms_per_second, 0.0, 1000.0);
    number("skewRatio", spec.skew_ratio, 1.0, 1e6);
    number(
        "skewMinRecordsPerSecond",
        spec.skew_min_records_per_second,
        0.0,
        1e12,
    );
    for (field, value) in [
        ("checkpointFailures", spec.checkpoint_failures),
        ("restarts", spec.restarts),
    ] {
        if value == 0 {
            problems.field(
                format!("diagnosis.{field}"),
                "must be at least 1, found 0 (every job would be flagged)",
            );
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Thresholds {
        window: window?,
        lag_growth_min_records: spec.lag_growth_min_records,
        backpressure_ms_per_second: spec.backpressure_ms_per_second,
        busy_ms_per_second: spec.busy_ms_per_second,
        checkpoint_failures: spec.checkpoint_failures,
        checkpoint_duration_fraction: spec.checkpoint_duration_fraction,
        restarts: spec.restarts,
        gc_ms_per_second: spec.gc_ms_per_second,
        skew_ratio: spec.skew_ratio,
        skew_min_records_per_second: spec.skew_min_records_per_second,
    })
}
