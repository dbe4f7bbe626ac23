//! Invariants of the right-sizer on arbitrary inputs: parallelism stays in [1, max
//! parallelism], keyed vertices land on divisors when one is reachable, alignment never
//! reverses the direction of a change, and no series, however broken, makes it panic.

use proptest::prelude::*;
use scheduler::model::JobId;
use scheduler::rightsize::config::{AlignmentMode, MIB};
use scheduler::rightsize::scaling::{
    Alignment, ScaleRequest, VertexRates, compute_vertex_scaling, scale,
};
use scheduler::rightsize::{
    Assessment, JobMetrics, ProcessMetrics, ProcessSpec, RightsizeConfig, Sample, Series,
    SeriesKind, VertexInfo, VertexMetrics, recommend,
};

fn mode() -> impl Strategy<Value = AlignmentMode> {
    prop_oneof![
        Just(AlignmentMode::EvenlySpread),
        Just(AlignmentMode::MaximizeUtilisation)
    ]
}

/// Rates as metrics produce them: ordinary, zero, huge, and non-finite.
fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => 0.0..1e6f64,
        1 => Just(0.0),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NAN),
        1 => 1e12..1e300f64,
    ]
}

fn config() -> impl Strategy<Value = RightsizeConfig> {
    (
        0.05..=1.0f64,
        0.0..=0.5f64,
        0.0..=1.0f64,
        0.0..=1000.0f64,
        1u32..=50,
        0u32..=300,
        mode(),
    )
        .prop_map(
            |(util, boundary, down, up, min_p, extra, alignment_mode)| RightsizeConfig {
                target_utilization: util,
                utilization_boundary: boundary,
                max_scale_down_factor: down,
                max_scale_up_factor: up,
                vertex_min_parallelism: min_p,
                vertex_max_parallelism: min_p + extra,
                alignment_mode,
                ..RightsizeConfig::default()
            },
        )
}

fn divides(n: u32, d: u32) -> bool {
    d > 0 && n.is_multiple_of(d)
}

proptest! {
    #[test]
    fn vertex_parallelism_stays_within_one_and_max_parallelism(
        max_parallelism in 1u32..=32768,
        current_frac in 0.0..=1.0f64,
        keyed in any::<bool>(),
        partitions in prop_oneof![Just(0u32), 1u32..=100_000],
        target in rate(),
        catch_up in rate(),
        tpr in rate(),
        backlog in any::<bool>(),
        config in config(),
    ) {
        let current = ((f64::from(max_parallelism) * current_frac).ceil() as u32).clamp(1, max_parallelism);
        let rates = VertexRates { target_data_rate: target, catch_up_data_rate: catch_up, true_processing_rate: tpr };
        if let Ok(s) = compute_vertex_scaling(current, max_parallelism, keyed, partitions, &rates, backlog, &config) {
            let p = s.outcome.parallelism;
            prop_assert!((1..=max_parallelism).contains(&p), "p={p} max={max_parallelism}");
        }
    }

    #[test]
    fn alignment_never_reverses_the_direction_of_a_change(
        max_parallelism in 1u32..=32768,
        current in 1u32..=32768,
        factor in 0.0..50.0f64,
        keyed in any::<bool>(),
        partitions in prop_oneof![Just(0u32), 1u32..=100_000],
        upper in 1u32..=40000,
        mode in mode(),
    ) {
        let current = current.min(max_parallelism);
        let upper = upper.max(current);
        let out = scale(&ScaleRequest {
            current_parallelism: current, keyed_input: keyed, num_source_partitions: partitions,
            max_parallelism, scale_factor: factor, parallelism_lower_limit: 1,
            parallelism_upper_limit: upper, mode,
        }).unwrap();
        if out.unaligned > current {
            prop_assert!(out.parallelism >= current);
        }
        if out.unaligned < current {
            prop_assert!(out.parallelism <= current);
        }
        prop_assert!(out.parallelism >= 1 && out.parallelism <= max_parallelism.max(current));
    }

    #[test]
    fn keyed_parallelism_divides_max_parallelism_when_a_divisor_is_reachable(
        max_parallelism in 1u32..=32768,
        current in 1u32..=32768,
        factor in 0.0..20.0f64,
        upper in 1u32..=40000,
    ) {
        let current = current.min(max_parallelism);
        let upper = upper.max(current);
        let out = scale(&ScaleRequest {
            current_parallelism: current, keyed_input: true, num_source_partitions: 0,
            max_parallelism, scale_factor: factor, parallelism_lower_limit: 1,
            parallelism_upper_limit: upper, mode: AlignmentMode::EvenlySpread,
        }).unwrap();
        let reachable = if out.unaligned > current {
            (out.unaligned..=upper.min(max_parallelism)).any(|d| divides(max_parallelism, d))
        } else if out.unaligned < current {
            (out.unaligned..=current).any(|d| divides(max_parallelism, d))
        } else {
            false
        };
        if reachable {
            prop_assert!(divides(max_parallelism, out.parallelism),
                "p={} max={max_parallelism} unaligned={} current={current}", out.parallelism, out.unaligned);
        }
    }
}

const END: i64 = 1_700_000_000_000;
const LOOKBACK: i64 = 30 * 60 * 1000;

/// Arbitrary series: timestamps around the lookback (some outside), any values.
fn series() -> impl Strategy<Value = Series> {
    let sample = (
        -(LOOKBACK + 120_000)..120_000i64,
        prop_oneof![
            6 => 0.0..5000.0f64,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => -10.0..0.0f64,
            1 => any::<f64>(),
        ],
    )
        .prop_map(|(offset, v)| Sample::new(END + offset, v));
    let dense = (0.0..2000.0f64, any::<bool>()).prop_map(|(v, counter)| {
        let samples = (0..=LOOKBACK / 15_000)
            .map(|i| {
                Sample::new(
                    END - LOOKBACK + i * 15_000,
                    if counter { v * i as f64 } else { v },
                )
            })
            .collect();
        Series {
            kind: if counter {
                SeriesKind::Counter
            } else {
                SeriesKind::Gauge
            },
            samples,
        }
    });
    prop_oneof![
        2 => dense,
        1 => (prop::collection::vec(sample, 0..80), any::<bool>()).prop_map(|(samples, counter)| Series {
            kind: if counter { SeriesKind::Counter } else { SeriesKind::Gauge },
            samples,
        }),
    ]
}

fn vertex() -> impl Strategy<Value = VertexMetrics> {
    (
        (
            0u32..=300,
            0u32..=40000,
            any::<bool>(),
            any::<bool>(),
            prop::option::of(0u32..=500),
            any::<bool>(),
        ),
        series(),
        series(),
        prop::option::of(series()),
    )
        .prop_map(
            |((p, maxp, keyed, src, parts, pinned), busy, records, pending)| VertexMetrics {
                info: VertexInfo {
                    id: "v".into(),
                    name: "v".into(),
                    parallelism: p,
                    max_parallelism: maxp,
                    keyed_input: keyed,
                    is_source: src,
                    source_partitions: parts,
                    pinned_parallelism: pinned,
                },
                busy_time_ms_per_second: busy,
                records_in: records,
                pending_records: pending,
            },
        )
}

fn process() -> impl Strategy<Value = ProcessMetrics> {
    (
        series(),
        prop::option::of(-1i64..=8192),
        prop::option::of(series()),
        -1i64..=16384,
        -1i64..=8000,
    )
        .prop_map(|(heap, heap_max, cpu, mem, cpu_milli)| ProcessMetrics {
            heap_used_bytes: Series {
                kind: heap.kind,
                samples: heap
                    .samples
                    .into_iter()
                    .map(|s| Sample::new(s.at_ms, s.value * MIB as f64))
                    .collect(),
            },
            heap_max_bytes: heap_max.map(|h| h * MIB),
            cpu_load: cpu,
            spec: ProcessSpec {
                memory_bytes: mem * MIB,
                cpu_milli,
                max_memory_bytes: Some(4096 * MIB),
                max_cpu_milli: Some(4000),
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn recommend_never_panics_and_keeps_parallelism_in_range(
        vertices in prop::collection::vec(vertex(), 0..4).prop_map(|mut vs| {
            // Flink's vertex ids are unique within a job.
            for (i, v) in vs.iter_mut().enumerate() {
                v.info.id = format!("v{i}");
            }
            vs
        }),
        tm in process(),
        jm in process(),
        configured in 0u32..=300,
        plan in prop::option::of(0u32..=1000),
        slots in 0u32..=8,
        config in config(),
    ) {
        let config = RightsizeConfig { lookback_ms: LOOKBACK, metrics_window_ms: 10 * 60 * 1000, ..config };
        let job = JobMetrics {
            job: JobId::new("ns", "job"),
            observed_until_ms: END,
            configured_parallelism: configured,
            slots_per_task_manager: slots,
            plan_slot_need: plan,
            vertices: vertices.clone(),
            task_manager: tm,
            job_manager: jm,
        };
        let r = recommend(&job, &config).unwrap();
        if let Assessment::Assessed(p) = &r.parallelism {
            let max = vertices.iter().map(|v| v.info.max_parallelism).max().unwrap_or(0);
            prop_assert!(p.recommended <= max.max(configured));
            if p.change {
                prop_assert!(p.recommended >= 1 && p.recommended <= max);
            }
        }
        // Per vertex, as `pipeline.jobvertex-parallelism-overrides` will carry it: never
        // below 1, never above the vertex's max parallelism, keyed vertices on a divisor of
        // their key groups unless Flink's fallback applies (no divisor between the computed
        // value and the upper limit: `JobVertexScaler.scale`'s "scaling limited"), and
        // every changed vertex not pinned in code listed, none pinned.
        let overrides = r.patch.vertex_parallelism.clone().unwrap_or_default();
        if let Assessment::Assessed(p) = &r.parallelism {
            for e in &p.vertices {
                let applied = overrides.get(&e.id).copied();
                prop_assert_eq!(applied.is_some(), p.change && !e.pinned_parallelism, "{:?}", e.id);
                let Some(applied) = applied else { continue };
                prop_assert_eq!(applied, e.recommended_parallelism);
                prop_assert!(applied >= 1, "{} below 1", e.id);
                prop_assert!(applied <= e.max_parallelism, "{} above max {}", applied, e.max_parallelism);
                let partitions = vertices.iter().find(|v| v.info.id == e.id)
                    .and_then(|v| v.info.source_partitions.filter(|_| v.info.is_source))
                    .unwrap_or(0);
                if e.keyed_input && partitions == 0 && applied != e.current_parallelism {
                    // Shrinking never looks above the current parallelism.
                    let upper = if e.scaling.outcome.unaligned < e.current_parallelism { e.current_parallelism } else { e.scaling.parallelism_upper_limit }
                        .min(e.max_parallelism);
                    let reachable = (e.scaling.outcome.unaligned..=upper)
                        .any(|d| divides(e.max_parallelism, d));
                    prop_assert!(
                        divides(e.max_parallelism, applied)
                            || (!reachable
                                && config.alignment_mode == AlignmentMode::EvenlySpread
                                && matches!(e.scaling.outcome.alignment, Alignment::Limited { .. } | Alignment::Aligned { .. }))
                            || config.alignment_mode == AlignmentMode::MaximizeUtilisation,
                        "{} on {} key groups ({:?})", applied, e.max_parallelism, e.scaling.outcome
                    );
                }
            }
        } else {
            prop_assert!(overrides.is_empty());
        }
        for reason in r.parallelism.reasons().iter().chain(r.task_manager.reasons()).chain(r.job_manager.reasons()) {
            prop_assert!(!reason.to_string().is_empty());
        }
        if let Assessment::Assessed(tm) = &r.task_manager {
            prop_assert!(tm.recommended_memory_bytes > 0);
        }
        prop_assert!(serde_json::to_string(&r).is_ok());
    }
}
