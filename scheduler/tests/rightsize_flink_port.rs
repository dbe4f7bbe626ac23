//! Cases of Flink's own autoscaler tests (flink-kubernetes-operator,
//! `flink-autoscaler/src/test/java/org/apache/flink/autoscaler/JobVertexScalerTest.java`),
//! with the same numbers, run against our port. Each test names the Java test it comes from.

use scheduler::rightsize::config::{AlignmentMode, RightsizeConfig};
use scheduler::rightsize::scaling::{
    Alignment, FactorClamp, ScaleError, ScaleRequest, VertexRates, compute_vertex_scaling, scale,
};

const INT_MAX: u32 = i32::MAX as u32;

/// `JobVertexScalerTest.setup()`: no scale-down limit, unlimited scale-up, no catch-up.
fn flink_test_config() -> RightsizeConfig {
    RightsizeConfig {
        max_scale_down_factor: 1.0,
        max_scale_up_factor: f64::from(i32::MAX),
        catch_up_duration_ms: 0,
        ..RightsizeConfig::default()
    }
}

/// `scale(vertex, current, inputs, numSourcePartitions, maxParallelism, factor, lower, upper)`.
// Mirrors the Java signature so that each case reads like the line it was ported from.
#[allow(clippy::too_many_arguments)]
fn scale_java(
    current: u32,
    keyed: bool,
    partitions: u32,
    max_parallelism: u32,
    factor: f64,
    lower: u32,
    upper: u32,
    mode: AlignmentMode,
) -> u32 {
    scale(&ScaleRequest {
        current_parallelism: current,
        keyed_input: keyed,
        num_source_partitions: partitions,
        max_parallelism,
        scale_factor: factor,
        parallelism_lower_limit: lower,
        parallelism_upper_limit: upper,
        mode,
    })
    .unwrap()
    .parallelism
}

const EVEN: AlignmentMode = AlignmentMode::EvenlySpread;
const MAXIMIZE: AlignmentMode = AlignmentMode::MaximizeUtilisation;

/// What `computeScaleTargetParallelism(... evaluated(parallelism, targetDataRate,
/// trueProcessingRate) ...)` returns: `Some((p, outsideUtilizationBound))` or `None` for
/// "no change". `evaluated` uses maxParallelism 720 and no source partitions.
fn compute(
    config: &RightsizeConfig,
    keyed: bool,
    p: u32,
    target: f64,
    tpr: f64,
) -> Option<(u32, bool)> {
    let rates = VertexRates {
        target_data_rate: target,
        catch_up_data_rate: 0.0,
        true_processing_rate: tpr,
    };
    let s = compute_vertex_scaling(p, 720, keyed, 0, &rates, false, config).unwrap();
    (s.outcome.parallelism != p).then_some((s.outcome.parallelism, s.outside_band))
}

#[test]
fn parallelism_scaling_matches_flinks_test_parallelism_scaling() {
    // testParallelismScaling, run with HASH inputs (keyed) as its parameter provider does.
    for keyed in [true, false] {
        let mut c = flink_test_config();
        c.target_utilization = 1.0;
        assert_eq!(compute(&c, keyed, 10, 50.0, 100.0), Some((5, true)));
        c.target_utilization = 0.8;
        // ⌈10 × 62.5/100⌉ = 7; keyed snaps to 8 (divides 720), unkeyed stays 7.
        let expected = if keyed { 8 } else { 7 };
        assert_eq!(compute(&c, keyed, 10, 50.0, 100.0), Some((expected, false)));
        assert_eq!(compute(&c, keyed, 10, 80.0, 100.0), None);
        assert_eq!(compute(&c, keyed, 10, 60.0, 100.0), Some((8, false)));
        assert_eq!(compute(&c, keyed, 10, 59.0, 100.0), Some((8, false)));
        c.target_utilization = 0.5;
        assert_eq!(compute(&c, keyed, 2, 100.0, 40.0), Some((10, true)));
        c.target_utilization = 0.6;
        assert_eq!(compute(&c, keyed, 2, 100.0, 100.0), Some((4, true)));
        c.target_utilization = 1.0;
        c.max_scale_down_factor = 0.5;
        assert_eq!(compute(&c, keyed, 10, 10.0, 100.0), Some((5, true)));
        c.max_scale_down_factor = 0.6;
        assert_eq!(compute(&c, keyed, 10, 10.0, 100.0), Some((4, true)));
        c.max_scale_up_factor = 0.5;
        assert_eq!(compute(&c, keyed, 10, 200.0, 10.0), Some((15, true)));
        c.max_scale_up_factor = 0.6;
        assert_eq!(compute(&c, keyed, 10, 200.0, 10.0), Some((16, true)));
    }
}

#[test]
fn clamped_scale_factors_are_reported_as_clamps() {
    let mut c = flink_test_config();
    c.target_utilization = 1.0;
    c.max_scale_up_factor = 0.5;
    let rates = VertexRates {
        target_data_rate: 200.0,
        catch_up_data_rate: 0.0,
        true_processing_rate: 10.0,
    };
    let s = compute_vertex_scaling(10, 720, false, 0, &rates, false, &c).unwrap();
    assert_eq!(s.raw_scale_factor, 20.0);
    assert_eq!(s.scale_factor, 1.5);
    assert_eq!(s.factor_clamp, Some(FactorClamp::MaxScaleUp));
}

#[test]
fn parallelism_computation_matches_flinks_test_parallelism_computation() {
    // testParallelismComputation: NOT_ADJUST_INPUTS (REBALANCE, RESCALE), no partitions.
    let s = |cur, maxp, f| scale_java(cur, false, 0, maxp, f, 1, INT_MAX, EVEN);
    assert_eq!(s(1, 720, 0.0001), 1);
    assert_eq!(s(2, 720, 0.1), 1);
    assert_eq!(s(6, 720, 0.8), 5);
    assert_eq!(s(16, 128, 1.5), 24);
    assert_eq!(s(200, 720, 2.0), 400);
    assert_eq!(s(200, 720, f64::from(i32::MAX)), 720);
}

#[test]
fn keyed_parallelism_snaps_to_divisors_as_in_flinks_test_with_adjustment() {
    // testParallelismComputationWithAdjustment (HASH inputs).
    let s = |cur, maxp, f, mode| scale_java(cur, true, 0, maxp, f, 1, INT_MAX, mode);
    assert_eq!(s(6, 36, 0.8, EVEN), 6);
    assert_eq!(s(16, 128, 1.5, EVEN), 32);
    assert_eq!(s(200, 720, 1.3, EVEN), 360);
    assert_eq!(s(200, 720, f64::from(i32::MAX), EVEN), 720);
    assert_eq!(s(10, 128, 2.5, EVEN), 32);
    // MAXIMIZE_UTILISATION with upper limit = maxParallelism.
    assert_eq!(scale_java(10, true, 0, 128, 2.5, 1, 128, MAXIMIZE), 26);
}

#[test]
fn limits_bound_keyed_parallelism_as_in_flinks_test_with_limit() {
    // testParallelismComputationWithLimit (HASH inputs).
    let s = |cur, maxp, f, lo, hi| scale_java(cur, true, 0, maxp, f, lo, hi, EVEN);
    assert_eq!(s(6, 720, 0.8, 1, 700), 5);
    assert_eq!(s(8, 720, 0.8, 8, 700), 8);
    assert_eq!(s(16, 128, 1.5, 1, INT_MAX), 32);
    assert_eq!(s(16, 128, 1.5, 60, INT_MAX), 64);
    assert_eq!(s(200, 720, 2.0, 1, 300), 240);
    assert_eq!(s(200, 720, f64::from(i32::MAX), 1, 600), 360);
}

#[test]
fn a_lower_limit_above_the_upper_limit_is_an_error() {
    // ensureMinParallelismDoesNotExceedMax.
    let err = scale(&ScaleRequest {
        current_parallelism: 200,
        keyed_input: false,
        num_source_partitions: 0,
        max_parallelism: 720,
        scale_factor: f64::from(i32::MAX),
        parallelism_lower_limit: 500,
        parallelism_upper_limit: 499,
        mode: EVEN,
    })
    .unwrap_err();
    assert_eq!(
        err,
        ScaleError::LowerAboveUpper {
            lower: 500,
            upper: 499
        }
    );
}

#[test]
fn the_vertex_min_parallelism_is_used_unless_current_is_lower() {
    // testMinParallelismLimitIsUsed (default utilisation 0.7).
    let c = RightsizeConfig {
        vertex_min_parallelism: 5,
        ..flink_test_config()
    };
    assert_eq!(compute(&c, false, 10, 100.0, 500.0), Some((5, true)));
    assert_eq!(compute(&c, false, 4, 100.0, 500.0), None);
}

#[test]
fn the_vertex_max_parallelism_is_used_unless_current_is_higher() {
    // testMaxParallelismLimitIsUsed.
    let c = RightsizeConfig {
        vertex_max_parallelism: 10,
        target_utilization: 1.0,
        ..flink_test_config()
    };
    assert_eq!(compute(&c, false, 10, 500.0, 100.0), None);
    assert_eq!(compute(&c, false, 12, 500.0, 100.0), None);
}

#[test]
fn scale_up_is_immediate() {
    // testImmediateScaleUpWithinScaleDownInterval, last step.
    let c = RightsizeConfig {
        target_utilization: 1.0,
        ..flink_test_config()
    };
    assert_eq!(compute(&c, false, 100, 1700.0, 1000.0), Some((170, true)));
    // testCancelDelayedScaleDownAfterNewParallelismIsSame, last step.
    assert_eq!(compute(&c, false, 100, 1000.0, 1000.0), None);
}

#[test]
fn ineffective_scaling_cases_compute_the_same_targets_without_history() {
    // testIneffectiveScalingDetection: the targets it expects when nothing is blocked.
    let c = RightsizeConfig {
        target_utilization: 1.0,
        ..flink_test_config()
    };
    assert_eq!(compute(&c, false, 5, 100.0, 50.0), Some((10, true)));
    assert_eq!(compute(&c, false, 10, 180.0, 90.0), Some((20, true)));
    assert_eq!(compute(&c, false, 20, 180.0, 100.0), Some((36, true)));
    assert_eq!(compute(&c, false, 20, 180.0, 90.0), Some((40, true)));
    assert_eq!(compute(&c, false, 20, 45.0, 90.0), Some((10, true)));
}

#[test]
fn source_parallelism_snaps_to_partition_divisors_as_in_flinks_partition_test() {
    // testNumPartitionsAdjustment (no HASH input, numSourcePartitions > 0).
    let s =
        |cur, parts, maxp, f, lo, mode| scale_java(cur, false, parts, maxp, f, lo, INT_MAX, mode);
    assert_eq!(s(6, 15, 128, 0.4, 1, EVEN), 3);
    assert_eq!(s(7, 15, 128, 1.2, 1, EVEN), 15);
    assert_eq!(s(20, 35, 30, 0.9, 1, EVEN), 18);
    // Older Flink returned 20 here: a scale-up request (22 × 1.1) turned into a scale-down.
    // Flink's direction-safety guard, which we port, keeps the current 22 instead.
    assert_eq!(s(22, 35, 30, 1.1, 20, EVEN), 22);
    assert_eq!(s(80, 200, 128, 1.4, 1, EVEN), 100);
    assert_eq!(s(24, 199, INT_MAX, 4.0, 1, EVEN), 199);
    // At MAXIMIZE_UTILISATION 99 subtasks read two partitions and one reads one.
    assert_eq!(s(24, 199, INT_MAX, 4.0, 1, MAXIMIZE), 100);
}

#[test]
fn partition_limited_scale_up_is_reported_as_limited() {
    // testSendingScalingLimitedEvents: factor 2 on 10 wants 20, 15 partitions cap it at 15.
    let c = RightsizeConfig {
        target_utilization: 1.0,
        ..flink_test_config()
    };
    let rates = VertexRates {
        target_data_rate: 200.0,
        catch_up_data_rate: 0.0,
        true_processing_rate: 100.0,
    };
    let s = compute_vertex_scaling(10, 720, false, 15, &rates, false, &c).unwrap();
    assert_eq!(s.outcome.parallelism, 15);
    assert_eq!(s.outcome.unaligned, 20);
    assert_eq!(s.outcome.alignment, Alignment::Limited { groups: 15 });
    assert!(s.outside_band);
}

#[test]
fn restart_time_and_lag_raise_the_target_capacity() {
    // AutoScalerUtils.getTargetProcessingCapacity: lag/catch-up + rate×restart/catch-up +
    // rate/utilisation = 600 + 100×300/1800 + 100/0.5 = 816.67 → 817.
    let c = RightsizeConfig {
        target_utilization: 0.5,
        catch_up_duration_ms: 1_800_000,
        restart_time_ms: 300_000,
        ..RightsizeConfig::default()
    };
    let rates = VertexRates {
        target_data_rate: 100.0,
        catch_up_data_rate: 600.0,
        true_processing_rate: 817.0,
    };
    let s = compute_vertex_scaling(4, 128, false, 0, &rates, false, &c).unwrap();
    assert_eq!(s.target_capacity, 817.0);
    assert_eq!(s.outcome.parallelism, 4);
}

#[test]
fn processing_backlog_widens_the_band_so_nothing_scales_down() {
    let c = RightsizeConfig::default();
    let rates = VertexRates {
        target_data_rate: 100.0,
        catch_up_data_rate: 0.0,
        true_processing_rate: 10_000.0,
    };
    let normal = compute_vertex_scaling(10, 128, false, 0, &rates, false, &c).unwrap();
    let backlog = compute_vertex_scaling(10, 128, false, 0, &rates, true, &c).unwrap();
    assert!(normal.outside_band);
    assert!(!backlog.outside_band);
    assert!(backlog.band.scale_down_threshold.is_infinite());
}
