//! Knobs of the right-sizer. Parallelism defaults are those of Flink's autoscaler
//! (`job.autoscaler.*` in `AutoScalerOptions`); windowing and memory defaults are ours.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How to snap a keyed or partitioned vertex's parallelism (Flink's
/// `job.autoscaler.scaling.key-group.partitions.adjust.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlignmentMode {
    /// Prefer a parallelism that divides the key groups/partitions evenly.
    #[default]
    EvenlySpread,
    /// Accept the smallest parallelism that lowers the per-subtask load, even if uneven.
    MaximizeUtilisation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RightsizeConfig {
    /// `target.utilization`: aim for vertices busy this fraction of the time.
    pub target_utilization: f64,
    /// `target.utilization.boundary`: no change while utilisation stays within
    /// target ± boundary.
    pub utilization_boundary: f64,
    /// `scale-up.max-factor`: parallelism may grow to at most `(1 + f) ×` current.
    pub max_scale_up_factor: f64,
    /// `scale-down.max-factor`: parallelism may shrink to at least `(1 − f) ×` current.
    pub max_scale_down_factor: f64,
    /// `catch-up.duration`: backlog should be read within this time (0 disables).
    pub catch_up_duration_ms: i64,
    /// `restart.time`: input piling up during a restart must also be caught up.
    pub restart_time_ms: i64,
    /// `backlog-processing.lag-threshold`: with more lag than this many seconds of input,
    /// the job is catching up and no vertex counts as over- or under-utilised.
    pub backlog_lag_threshold_ms: i64,
    /// `vertex.min-parallelism` / `vertex.max-parallelism`.
    pub vertex_min_parallelism: u32,
    pub vertex_max_parallelism: u32,
    pub alignment_mode: AlignmentMode,
    /// `metrics.window`: rates and busy time are averaged over windows this long.
    pub metrics_window_ms: i64,
    /// How far back to look. Split into metrics windows; the busiest one decides the
    /// parallelism, and heap peaks are taken over all of it.
    pub lookback_ms: i64,
    /// Expected spacing of samples (the Prometheus scrape interval or query step).
    pub scrape_interval_ms: i64,
    /// Samples must span at least this fraction of the lookback.
    pub min_coverage: f64,
    /// No two consecutive samples may be further apart than this many scrape intervals.
    pub max_gap_intervals: f64,
    /// Heap recommendation = peak × (1 + overhead) (Flink's `memory.tuning.overhead`).
    pub memory_overhead: f64,
    /// Memory recommendations are rounded up to a multiple of this.
    pub memory_granularity_bytes: i64,
    /// CPU recommendations are rounded up to a multiple of this.
    pub cpu_granularity_milli: i64,
    /// Memory/CPU shrink only when the recommendation is below the spec by more than this
    /// fraction, so that noise does not churn pods; growth always applies.
    pub resource_change_threshold: f64,
}

pub const MIB: i64 = 1024 * 1024;

impl Default for RightsizeConfig {
    fn default() -> Self {
        RightsizeConfig {
            target_utilization: 0.7,
            utilization_boundary: 0.3,
            max_scale_up_factor: 100_000.0,
            max_scale_down_factor: 0.6,
            catch_up_duration_ms: 30 * 60 * 1000,
            restart_time_ms: 5 * 60 * 1000,
            backlog_lag_threshold_ms: 5 * 60 * 1000,
            vertex_min_parallelism: 1,
            vertex_max_parallelism: 200,
            alignment_mode: AlignmentMode::EvenlySpread,
            metrics_window_ms: 15 * 60 * 1000,
            lookback_ms: 24 * 60 * 60 * 1000,
            scrape_interval_ms: 15 * 1000,
            min_coverage: 0.8,
            max_gap_intervals: 3.0,
            memory_overhead: 0.2,
            memory_granularity_bytes: 64 * MIB,
            cpu_granularity_milli: 100,
            resource_change_threshold: 0.1,
        }
    }
}

/// A configuration value the right-sizer cannot work with.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("right-sizing config field `{field}` = {value}: {reason}")]
pub struct RightsizeConfigError {
    pub field: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl RightsizeConfig {
    pub fn validate(&self) -> Result<(), RightsizeConfigError> {
        fn bad(
            field: &'static str,
            value: impl ToString,
            reason: &'static str,
        ) -> RightsizeConfigError {
            RightsizeConfigError {
                field,
                value: value.to_string(),
                reason,
            }
        }
        let fraction = |field, v: f64, low_open: bool| {
            let ok = v.is_finite() && v <= 1.0 && if low_open { v > 0.0 } else { v >= 0.0 };
            if ok {
                Ok(())
            } else if low_open {
                Err(bad(field, v, "must be in (0, 1]"))
            } else {
                Err(bad(field, v, "must be in [0, 1]"))
            }
        };
        fraction("targetUtilization", self.target_utilization, true)?;
        fraction("utilizationBoundary", self.utilization_boundary, false)?;
        fraction("maxScaleDownFactor", self.max_scale_down_factor, false)?;
        fraction("minCoverage", self.min_coverage, false)?;
        if !(self.max_scale_up_factor.is_finite() && self.max_scale_up_factor >= 0.0) {
            return Err(bad(
                "maxScaleUpFactor",
                self.max_scale_up_factor,
                "must be a finite number ≥ 0",
            ));
        }
        for (field, v) in [
            ("catchUpDurationMs", self.catch_up_duration_ms),
            ("restartTimeMs", self.restart_time_ms),
            ("backlogLagThresholdMs", self.backlog_lag_threshold_ms),
        ] {
            if v < 0 {
                return Err(bad(field, v, "must be ≥ 0"));
            }
        }
        for (field, v) in [
            ("metricsWindowMs", self.metrics_window_ms),
            ("lookbackMs", self.lookback_ms),
            ("scrapeIntervalMs", self.scrape_interval_ms),
            ("memoryGranularityBytes", self.memory_granularity_bytes),
            ("cpuGranularityMilli", self.cpu_granularity_milli),
        ] {
            if v <= 0 {
                return Err(bad(field, v, "must be > 0"));
            }
        }
        if self.lookback_ms < self.metrics_window_ms {
            return Err(bad(
                "lookbackMs",
                self.lookback_ms,
                "must be at least metricsWindowMs",
            ));
        }
        if self.vertex_min_parallelism == 0 {
            return Err(bad("vertexMinParallelism", 0, "must be ≥ 1"));
        }
        if self.vertex_min_parallelism > self.vertex_max_parallelism {
            return Err(bad(
                "vertexMinParallelism",
                self.vertex_min_parallelism,
                "must not exceed vertexMaxParallelism",
            ));
        }
        if !(self.max_gap_intervals.is_finite() && self.max_gap_intervals >= 1.0) {
            return Err(bad(
                "maxGapIntervals",
                self.max_gap_intervals,
                "must be ≥ 1",
            ));
        }
        for (field, v) in [
            ("memoryOverhead", self.memory_overhead),
            ("resourceChangeThreshold", self.resource_change_threshold),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(field, v, "must be a finite number ≥ 0"));
            }
        }
        Ok(())
    }
}
