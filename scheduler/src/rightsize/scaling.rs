//! Port of the parallelism arithmetic of Flink's autoscaler (flink-kubernetes-operator,
//! `JobVertexScaler.computeScaleTargetParallelism`/`scale`, `AutoScalerUtils
//! .getTargetProcessingCapacity`, `ScalingMetricEvaluator.computeProcessingRateThresholds`),
//! without its stateful parts (scale-down delay, ineffective-scaling history).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::config::{AlignmentMode, RightsizeConfig};

/// Rates of one vertex over one metrics window, in records per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VertexRates {
    /// Records the vertex must be able to take in steady state (Flink's `TARGET_DATA_RATE`).
    pub target_data_rate: f64,
    /// Extra rate to clear the backlog within the catch-up duration (`CATCH_UP_DATA_RATE`).
    pub catch_up_data_rate: f64,
    /// What the vertex could process at 100 % busy (`TRUE_PROCESSING_RATE`).
    pub true_processing_rate: f64,
}

/// `AutoScalerUtils.getTargetProcessingCapacity`: lag catch-up + restart catch-up + input at
/// the utilisation target, rounded as Java's `Math.round`. NaN when a rate is unknown.
pub fn target_processing_capacity(
    rates: &VertexRates,
    config: &RightsizeConfig,
    target_utilization: f64,
    with_restart: bool,
) -> f64 {
    if rates.catch_up_data_rate.is_nan() || rates.target_data_rate.is_nan() {
        return f64::NAN;
    }
    // Flink works with whole seconds here (`Duration.toSeconds()`).
    let catch_up_sec = (config.catch_up_duration_ms / 1000) as f64;
    let restart_sec = (config.restart_time_ms / 1000) as f64;
    let utilization = target_utilization.clamp(0.0, 1.0);
    if utilization == 0.0 {
        return f64::INFINITY;
    }
    let restart_catch_up = if !with_restart || catch_up_sec == 0.0 {
        0.0
    } else {
        rates.target_data_rate * restart_sec / catch_up_sec
    };
    java_round(rates.catch_up_data_rate + restart_catch_up + rates.target_data_rate / utilization)
}

/// Java's `Math.round(double)`: half rounds towards positive infinity.
fn java_round(x: f64) -> f64 {
    (x + 0.5).floor()
}

/// The processing rates between which a vertex is left alone
/// (`computeProcessingRateThresholds`): below `scale_up` it is too slow, above
/// `scale_down` it is idle enough to shrink.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UtilizationBand {
    pub scale_up_threshold: f64,
    pub scale_down_threshold: f64,
}

impl UtilizationBand {
    pub fn compute(
        rates: &VertexRates,
        config: &RightsizeConfig,
        processing_backlog: bool,
    ) -> Self {
        // While catching up on backlog, full utilisation is expected and shrinking would
        // only add lag.
        let (upper, lower) = if processing_backlog {
            (1.0, 0.0)
        } else {
            (
                config.target_utilization + config.utilization_boundary,
                config.target_utilization - config.utilization_boundary,
            )
        };
        UtilizationBand {
            scale_up_threshold: target_processing_capacity(rates, config, upper, false),
            scale_down_threshold: target_processing_capacity(rates, config, lower, true),
        }
    }

    /// `JobVertexScaler.outsideUtilizationBound`.
    pub fn is_outside(&self, true_processing_rate: f64) -> bool {
        true_processing_rate < self.scale_up_threshold
            || true_processing_rate > self.scale_down_threshold
    }
}

/// Which max-factor limited the scale factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactorClamp {
    MaxScaleUp,
    MaxScaleDown,
}

/// How the key-group/partition alignment moved the parallelism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Alignment {
    /// Neither keyed nor a source with known partitions.
    NotApplicable,
    /// Snapped to a value that divides `groups` (or, in maximise-utilisation mode, lowers the
    /// per-subtask share).
    Aligned { groups: u32 },
    /// No aligned value above; fell back to the smallest value with a lower per-subtask
    /// share than the computed one (Flink's "scaling limited").
    Limited { groups: u32 },
    /// Every aligned value would have reversed the direction of the change: kept current.
    Blocked { groups: u32 },
}

/// Inputs of [`scale`], named after `JobVertexScaler.scale`'s parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleRequest {
    pub current_parallelism: u32,
    pub keyed_input: bool,
    /// 0 = unknown (not a source, or partitions not reported).
    pub num_source_partitions: u32,
    pub max_parallelism: u32,
    pub scale_factor: f64,
    pub parallelism_lower_limit: u32,
    pub parallelism_upper_limit: u32,
    pub mode: AlignmentMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleOutcome {
    pub parallelism: u32,
    /// `ceil(current × factor)` within the limits, before alignment.
    pub unaligned: u32,
    pub alignment: Alignment,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScaleError {
    #[error("parallelism lower limit {lower} is above the upper limit {upper}")]
    LowerAboveUpper { lower: u32, upper: u32 },
}

/// `JobVertexScaler.scale` as of the version with the direction-safety guard: the new
/// parallelism is `ceil(current × factor)` clamped to `[lower, min(upper, maxParallelism)]`;
/// keyed vertices and partitioned sources are then aligned so key groups/partitions spread
/// evenly, never flipping a scale-up into a scale-down or back.
pub fn scale(req: &ScaleRequest) -> Result<ScaleOutcome, ScaleError> {
    let lower = i64::from(req.parallelism_lower_limit);
    let upper_limit = i64::from(req.parallelism_upper_limit);
    if lower > upper_limit {
        return Err(ScaleError::LowerAboveUpper {
            lower: req.parallelism_lower_limit,
            upper: req.parallelism_upper_limit,
        });
    }
    let current = i64::from(req.current_parallelism);
    let max_parallelism = i64::from(req.max_parallelism);
    // Java: (int) Math.min(Math.ceil(f × p), Integer.MAX_VALUE); a NaN casts to 0.
    let raw = (req.scale_factor * current as f64).ceil();
    let mut new = if raw.is_nan() {
        0
    } else {
        raw.min(f64::from(i32::MAX)) as i64
    };
    let upper = max_parallelism.min(upper_limit);
    new = new.max(lower).min(upper);
    let to_u32 = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    let plain = |p: i64, alignment| ScaleOutcome {
        parallelism: to_u32(p),
        unaligned: to_u32(new),
        alignment,
    };

    let partitions = i64::from(req.num_source_partitions);
    if !(partitions > 0 || req.keyed_input) {
        return Ok(plain(new, Alignment::NotApplicable));
    }
    let groups = if partitions <= 0 {
        max_parallelism
    } else {
        partitions
    };
    let groups_u32 = to_u32(groups);
    if new == current || groups <= 0 || new <= 0 {
        return Ok(plain(new, Alignment::NotApplicable));
    }
    let upper_for_alignment = groups.min(upper);
    let is_scale_up = new > current;

    // Phase 1: the smallest aligned value at or above `new`; when shrinking, never above
    // the current parallelism (which, if it is the first aligned value, blocks the change).
    let phase1_upper = if is_scale_up {
        upper_for_alignment
    } else {
        current.min(upper_for_alignment)
    };
    if let Some(p) = first_aligned_at_or_above(new, phase1_upper, groups, req.mode) {
        return Ok(plain(p, Alignment::Aligned { groups: groups_u32 }));
    }

    // Phase 2: the smallest value whose per-subtask share is no larger than at `new`.
    let mut p = largest_with_larger_share(new, groups);
    if p > 0 && groups % p != 0 {
        p += 1;
    }
    p = p.max(lower);
    if (is_scale_up && p <= current) || (!is_scale_up && p >= current) {
        return Ok(plain(current, Alignment::Blocked { groups: groups_u32 }));
    }
    let alignment = if p == new {
        Alignment::Aligned { groups: groups_u32 }
    } else {
        Alignment::Limited { groups: groups_u32 }
    };
    Ok(plain(p, alignment))
}

/// Flink's phase-1 loop `for p in new..=bound { if groups % p == 0 || (maximise && groups/p <
/// groups/new) return p }`, computed without walking every value (key groups reach 32768,
/// partitions more).
fn first_aligned_at_or_above(
    new: i64,
    bound: i64,
    groups: i64,
    mode: AlignmentMode,
) -> Option<i64> {
    if new > bound {
        return None;
    }
    let divisor = smallest_divisor_at_or_above(groups, new).filter(|d| *d <= bound);
    let share_drop = match mode {
        AlignmentMode::EvenlySpread => None,
        AlignmentMode::MaximizeUtilisation => {
            let share = groups / new;
            // Smallest p with groups / p < share is groups / share + 1.
            (share > 0)
                .then(|| groups / share + 1)
                .filter(|p| *p <= bound)
        }
    };
    match (divisor, share_drop) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Smallest divisor of `n` that is ≥ `from`, by walking divisor pairs up to √n.
fn smallest_divisor_at_or_above(n: i64, from: i64) -> Option<i64> {
    if n <= 0 {
        return None;
    }
    let mut best: Option<i64> = None;
    let mut d = 1i64;
    while d.saturating_mul(d) <= n {
        if n % d == 0 {
            for candidate in [d, n / d] {
                if candidate >= from && best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
        d += 1;
    }
    best
}

/// Flink's phase-2 loop: walking down from `new`, the first `p` with `groups / p >
/// groups / new`, or 0 when there is none.
fn largest_with_larger_share(new: i64, groups: i64) -> i64 {
    let share = groups / new;
    // groups / p ≥ share + 1  ⇔  p ≤ groups / (share + 1).
    (groups / (share + 1)).min(new)
}

/// Everything decided for one vertex in one window, for the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VertexScaling {
    pub target_capacity: f64,
    /// `target_capacity / true_processing_rate`, before the max-factor clamps.
    pub raw_scale_factor: f64,
    pub scale_factor: f64,
    pub factor_clamp: Option<FactorClamp>,
    pub parallelism_lower_limit: u32,
    pub parallelism_upper_limit: u32,
    pub outcome: ScaleOutcome,
    pub band: UtilizationBand,
    pub outside_band: bool,
}

/// Why a vertex's parallelism cannot be computed (`computeScaleTargetParallelism` returns
/// "no change" with a warning in these cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScalingGap {
    TrueProcessingRateUnknown,
    TargetRateUnknown,
    /// Min parallelism above max: cannot happen with a validated config.
    ParallelismLimitsInverted,
}

/// `JobVertexScaler.computeScaleTargetParallelism` without history: scale factor from target
/// capacity over true processing rate, clamped by the max factors, then [`scale`].
pub fn compute_vertex_scaling(
    current_parallelism: u32,
    max_parallelism: u32,
    keyed_input: bool,
    num_source_partitions: u32,
    rates: &VertexRates,
    processing_backlog: bool,
    config: &RightsizeConfig,
) -> Result<VertexScaling, ScalingGap> {
    let tpr = rates.true_processing_rate;
    if tpr.is_nan() {
        return Err(ScalingGap::TrueProcessingRateUnknown);
    }
    let target_capacity =
        target_processing_capacity(rates, config, config.target_utilization, true);
    if target_capacity.is_nan() {
        return Err(ScalingGap::TargetRateUnknown);
    }
    let raw_scale_factor = target_capacity / tpr;
    let min_factor = 1.0 - config.max_scale_down_factor;
    let max_factor = 1.0 + config.max_scale_up_factor;
    let (scale_factor, factor_clamp) = if raw_scale_factor < min_factor {
        (min_factor, Some(FactorClamp::MaxScaleDown))
    } else if raw_scale_factor > max_factor {
        (max_factor, Some(FactorClamp::MaxScaleUp))
    } else if raw_scale_factor.is_nan() {
        // ∞ / ∞ (no input and no utilisation target): nothing to learn, keep as is.
        (1.0, None)
    } else {
        (raw_scale_factor, None)
    };
    let lower = current_parallelism.min(config.vertex_min_parallelism);
    let upper = current_parallelism.max(config.vertex_max_parallelism);
    let outcome = scale(&ScaleRequest {
        current_parallelism,
        keyed_input,
        num_source_partitions,
        max_parallelism,
        scale_factor,
        parallelism_lower_limit: lower,
        parallelism_upper_limit: upper,
        mode: config.alignment_mode,
    })
    .map_err(|_| ScalingGap::ParallelismLimitsInverted)?;
    let band = UtilizationBand::compute(rates, config, processing_backlog);
    Ok(VertexScaling {
        target_capacity,
        raw_scale_factor,
        scale_factor,
        factor_clamp,
        parallelism_lower_limit: lower,
        parallelism_upper_limit: upper,
        outcome,
        outside_band: band.is_outside(tpr),
        band,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The literal loops of Flink's `scale` phase 1 and 2, to check the closed forms.
    fn naive_phase1(new: i64, bound: i64, groups: i64, mode: AlignmentMode) -> Option<i64> {
        (new..=bound).find(|p| {
            groups % p == 0
                || (mode == AlignmentMode::MaximizeUtilisation && groups / p < groups / new)
        })
    }

    fn naive_phase2(new: i64, groups: i64) -> i64 {
        let mut p = new;
        while p > 0 {
            if groups / p > groups / new {
                break;
            }
            p -= 1;
        }
        p
    }

    #[test]
    fn closed_form_alignment_matches_flinks_loops_on_small_values() {
        for groups in 1..=130i64 {
            for new in 1..=140i64 {
                for bound in [new - 1, new, new + 7, 200] {
                    for mode in [
                        AlignmentMode::EvenlySpread,
                        AlignmentMode::MaximizeUtilisation,
                    ] {
                        assert_eq!(
                            first_aligned_at_or_above(new, bound, groups, mode),
                            naive_phase1(new, bound, groups, mode),
                            "phase 1 groups={groups} new={new} bound={bound} mode={mode:?}"
                        );
                    }
                }
                assert_eq!(
                    largest_with_larger_share(new, groups),
                    naive_phase2(new, groups),
                    "phase 2 groups={groups} new={new}"
                );
            }
        }
    }

    #[test]
    fn java_round_rounds_halves_up_like_math_round() {
        assert_eq!(java_round(2.5), 3.0);
        assert_eq!(java_round(-2.5), -2.0);
        assert_eq!(java_round(71.428), 71.0);
    }
}
