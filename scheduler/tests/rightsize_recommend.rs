//! Whole-job recommendations from synthetic metrics: parallelism from the bottleneck in the
//! busiest window, heap and CPU from observed use, slots from the plan, and refusals with
//! reasons when the data cannot be trusted.

use scheduler::model::JobId;
use scheduler::rightsize::config::MIB;
use scheduler::rightsize::{
    Assessment, Finding, InsufficientData, JobMetrics, ProcessMetrics, ProcessSpec,
    RightsizeConfig, Sample, Series, VertexInfo, VertexMetrics, recommend,
};

const END: i64 = 1_700_000_000_000;
const STEP: i64 = 15_000;
const MIN: i64 = 60_000;

/// One 15-minute window ending at `END`, otherwise the defaults.
fn config() -> RightsizeConfig {
    RightsizeConfig {
        lookback_ms: 15 * MIN,
        ..RightsizeConfig::default()
    }
}

/// Samples every scrape interval over `[from, to]`, valued by `f(t)`.
fn samples(from: i64, to: i64, f: impl Fn(i64) -> f64) -> Vec<Sample> {
    (0..)
        .map(|i| from + i * STEP)
        .take_while(|t| *t <= to)
        .map(|t| Sample::new(t, f(t)))
        .collect()
}

fn flat(value: f64) -> Series {
    Series::gauge(samples(END - 15 * MIN, END, |_| value))
}

fn vertex(name: &str, parallelism: u32, busy_ms: f64, rate: f64) -> VertexMetrics {
    VertexMetrics {
        info: VertexInfo {
            id: format!("{name}-id"),
            name: name.to_string(),
            parallelism,
            max_parallelism: 128,
            keyed_input: false,
            is_source: false,
            source_partitions: None,
            pinned_parallelism: false,
        },
        busy_time_ms_per_second: flat(busy_ms),
        records_in: flat(rate),
        pending_records: None,
    }
}

fn source(name: &str, parallelism: u32, busy_ms: f64, rate: f64) -> VertexMetrics {
    let mut v = vertex(name, parallelism, busy_ms, rate);
    v.info.is_source = true;
    v
}

fn keyed(name: &str, parallelism: u32, busy_ms: f64, rate: f64) -> VertexMetrics {
    let mut v = vertex(name, parallelism, busy_ms, rate);
    v.info.keyed_input = true;
    v
}

fn process(heap_used_mib: f64, heap_max_mib: i64, memory_mib: i64) -> ProcessMetrics {
    ProcessMetrics {
        heap_used_bytes: flat(heap_used_mib * MIB as f64),
        heap_max_bytes: Some(heap_max_mib * MIB),
        cpu_load: None,
        spec: ProcessSpec {
            memory_bytes: memory_mib * MIB,
            cpu_milli: 1000,
            max_memory_bytes: None,
            max_cpu_milli: None,
        },
    }
}

fn job(parallelism: u32, vertices: Vec<VertexMetrics>) -> JobMetrics {
    JobMetrics {
        job: JobId::new("team-a", "orders"),
        observed_until_ms: END,
        configured_parallelism: parallelism,
        slots_per_task_manager: 4,
        plan_slot_need: None,
        vertices,
        // Sized so that neither changes: peak × 1.2 ≈ heap max.
        task_manager: process(1700.0, 2048, 4096),
        job_manager: process(850.0, 1024, 2048),
    }
}

#[test]
fn the_job_takes_the_parallelism_its_bottleneck_vertex_needs() {
    let j = job(
        4,
        vec![
            source("source", 4, 200.0, 1000.0),
            keyed("window", 4, 900.0, 1000.0),
        ],
    );
    let r = recommend(&j, &config()).unwrap();
    // window: true rate 1000 / 0.9 = 1111; capacity = 1000 × 300/1800 + 1000 / 0.7 = 1595;
    // 4 × 1595/1111 = 5.74 → 6 → next divisor of 128 is 8. The idle source wants 2 and
    // is outside its band, so the job changes; the keyed vertex's 8 is the larger need.
    let p = r.parallelism.assessed().unwrap();
    assert_eq!(p.recommended, 8);
    assert!(p.change);
    assert_eq!(p.bottleneck_vertex, "window (window-id)");
    assert_eq!(r.patch.parallelism, Some(8));
    let window = p.vertices.iter().find(|v| v.name == "window").unwrap();
    assert_eq!(window.scaling.outcome.unaligned, 6);
    assert_eq!(window.scaling.target_capacity, 1595.0);
    let src = p.vertices.iter().find(|v| v.name == "source").unwrap();
    assert_eq!(src.recommended_parallelism, 2);
}

#[test]
fn each_vertex_gets_its_own_parallelism_keyed_by_flinks_vertex_id() {
    // Same job as above: the keyed window needs 8 (snapped from 6 to a divisor of 128), the
    // idle source 2. Flink applies both through `pipeline.jobvertex-parallelism-overrides`;
    // the job's parallelism (its slots) follows the widest vertex.
    let j = job(
        4,
        vec![
            source("source", 4, 200.0, 1000.0),
            keyed("window", 4, 900.0, 1000.0),
        ],
    );
    let r = recommend(&j, &config()).unwrap();
    let overrides = r
        .patch
        .vertex_parallelism
        .clone()
        .expect("per-vertex patch");
    assert_eq!(
        overrides.into_iter().collect::<Vec<_>>(),
        vec![("source-id".to_string(), 2), ("window-id".to_string(), 8)]
    );
    assert_eq!(r.patch.parallelism, Some(8));
    assert_eq!(r.slots.required_slots, 8);
    assert_eq!(
        r.patch.to_merge_patch()["spec"]["vertexParallelism"],
        serde_json::json!({"source-id": 2, "window-id": 8})
    );
}

#[test]
fn a_vertex_changes_alone_when_the_jobs_widest_need_stays() {
    // The window, 60 % busy, needs 4 × 1595 / 1667 = 3.8 → 4: what it has. The source idles
    // at 10 % and shrinks by the max factor to 2. The job keeps 4 slots, so `parallelism` is
    // not in the patch; the vertices are.
    let j = job(
        4,
        vec![
            source("source", 4, 100.0, 1000.0),
            keyed("window", 4, 600.0, 1000.0),
        ],
    );
    let r = recommend(&j, &config()).unwrap();
    let p = r.parallelism.assessed().unwrap();
    assert!(p.change);
    assert_eq!(p.recommended, 4);
    assert_eq!(r.patch.parallelism, None);
    let overrides = r.patch.vertex_parallelism.expect("per-vertex patch");
    assert_eq!(overrides["window-id"], 4);
    assert_eq!(overrides["source-id"], 2);
}

#[test]
fn each_vertex_keeps_the_need_of_its_own_busiest_window() {
    // Two 15-minute windows: the source is busy in the first, the map in the second. Taking
    // one "busiest window" for both would shrink whichever was quiet then.
    let c = RightsizeConfig {
        lookback_ms: 30 * MIN,
        ..config()
    };
    let start = END - 30 * MIN;
    let first_half = move |t: i64| t <= start + 15 * MIN;
    let mut src = source("source", 4, 0.0, 1000.0);
    src.busy_time_ms_per_second = Series::gauge(samples(start, END, move |t| {
        if first_half(t) { 900.0 } else { 100.0 }
    }));
    src.records_in = Series::gauge(samples(start, END, |_| 1000.0));
    let mut map = keyed("map", 4, 0.0, 1000.0);
    map.busy_time_ms_per_second = Series::gauge(samples(start, END, move |t| {
        if first_half(t) { 100.0 } else { 900.0 }
    }));
    map.records_in = Series::gauge(samples(start, END, |_| 1000.0));
    let mut j = job(4, vec![src, map]);
    for p in [&mut j.task_manager, &mut j.job_manager] {
        p.heap_used_bytes = Series::gauge(samples(start, END, |_| 100.0 * MIB as f64));
    }
    let r = recommend(&j, &c).unwrap();
    let p = r.parallelism.assessed().unwrap();
    let by_name = |n: &str| p.vertices.iter().find(|v| v.name == n).unwrap();
    assert!(by_name("source").recommended_parallelism > 4);
    assert!(by_name("map").recommended_parallelism > 4);
    assert_eq!(by_name("source").window.end_ms, start + 15 * MIN);
    assert_eq!(by_name("map").window.end_ms, END);
}

#[test]
fn a_job_inside_its_utilisation_band_is_left_alone() {
    let j = job(
        4,
        vec![
            source("source", 4, 700.0, 1000.0),
            keyed("window", 4, 700.0, 1000.0),
        ],
    );
    let r = recommend(&j, &config()).unwrap();
    let p = r.parallelism.assessed().unwrap();
    // Busy 70 % is the target: both vertices sit between the thresholds.
    assert!(p.within_band);
    assert!(!p.change);
    assert_eq!(p.recommended, 4);
    assert_eq!(r.patch.parallelism, None);
    assert!(r.patch.is_empty(), "{:?}", r.patch);
}

#[test]
fn a_quiet_latest_window_does_not_shrink_a_job_below_its_peak_window_need() {
    // After testScaleDownAfterInterval in Flink's JobVertexScalerTest: target rates 800, 900,
    // 720, 640, 700 in consecutive windows; here with true rate 2000 (busy = rate / 2).
    let c = RightsizeConfig {
        lookback_ms: 75 * MIN,
        target_utilization: 1.0,
        catch_up_duration_ms: 0,
        max_scale_down_factor: 1.0,
        ..RightsizeConfig::default()
    };
    let rates = [800.0, 900.0, 720.0, 640.0, 700.0];
    let start = END - 75 * MIN;
    let rate_at = |t: i64| rates[(((t - start - 1).max(0)) / (15 * MIN)).min(4) as usize];
    let mut v = source("source", 100, 0.0, 0.0);
    v.info.max_parallelism = 1000;
    v.records_in = Series::gauge(samples(start, END, rate_at));
    v.busy_time_ms_per_second = Series::gauge(samples(start, END, |t| rate_at(t) / 2.0));
    let mut j = job(100, vec![v]);
    for p in [&mut j.task_manager, &mut j.job_manager] {
        p.heap_used_bytes = Series::gauge(samples(start, END, |_| 100.0 * MIB as f64));
    }
    let r = recommend(&j, &c).unwrap();
    let p = r.parallelism.assessed().unwrap();
    assert_eq!(p.windows_evaluated, 5);
    assert_eq!(p.recommended, 45, "900 / 2000 × 100");
    assert_eq!(p.window.end_ms, start + 30 * MIN);
}

#[test]
fn growing_kafka_lag_raises_the_source_to_catch_up() {
    let mut src = source("kafka", 2, 1000.0, 1000.0);
    // Lag grows by 500 records/s to 900 000: 15 minutes of input, so the job is in backlog.
    src.pending_records = Some(Series::gauge(samples(END - 15 * MIN, END, |t| {
        900_000.0 - 500.0 * (END - t) as f64 / 1000.0
    })));
    let r = recommend(&job(2, vec![src]), &config()).unwrap();
    let p = r.parallelism.assessed().unwrap();
    let v = &p.vertices[0];
    assert_eq!(v.lag, Some(900_000.0));
    assert!((v.lag_growth_rate.unwrap() - 500.0).abs() < 1e-6);
    assert_eq!(v.target_data_rate, 1500.0);
    assert_eq!(v.catch_up_data_rate, 500.0);
    assert!(p.processing_backlog);
    // 500 + 1500 × 300/1800 + 1500 / 0.7 = 2892.9 → 2893; 2 × 2893 / 1000 = 5.79 → 6.
    assert_eq!(p.recommended, 6);
}

#[test]
fn an_oversized_task_manager_heap_shrinks_to_peak_plus_overhead() {
    let mut j = job(4, vec![source("source", 4, 700.0, 1000.0)]);
    j.task_manager = process(1024.0, 4096, 8192);
    let r = recommend(&j, &config()).unwrap();
    let tm = r.task_manager.assessed().unwrap();
    // 1024 MiB × 1.2 = 1228.8 → 1280 MiB heap; 8192 − 4096 + 1280 = 5376 MiB.
    assert_eq!(tm.recommended_heap_bytes, 1280 * MIB);
    assert_eq!(tm.recommended_memory_bytes, 5376 * MIB);
    let patch = r.patch.task_manager.as_ref().unwrap();
    assert_eq!(patch.resources.memory.as_deref(), Some("5376Mi"));
    assert_eq!(r.patch.job_manager, None);
}

#[test]
fn a_memory_need_above_the_spec_limit_is_flagged_not_clamped() {
    let mut j = job(4, vec![source("source", 4, 700.0, 1000.0)]);
    j.job_manager = process(3900.0, 4096, 8192);
    j.job_manager.spec.max_memory_bytes = Some(8192 * MIB);
    let r = recommend(&j, &config()).unwrap();
    // 3900 × 1.2 = 4680 → 4736 MiB heap; 8192 − 4096 + 4736 = 8832 MiB > 8192 MiB.
    assert_eq!(
        r.findings,
        vec![Finding::ExceedsSpecLimit {
            field: "spec.jobManager.resources.memory".into(),
            needed: 8832 * MIB,
            limit: 8192 * MIB,
        }]
    );
    let patch = r.patch.job_manager.as_ref().unwrap();
    assert_eq!(patch.resources.memory.as_deref(), Some("8832Mi"));
}

#[test]
fn cpu_follows_the_busiest_window_load_at_the_target_utilisation() {
    let mut j = job(4, vec![source("source", 4, 700.0, 1000.0)]);
    j.task_manager.spec.cpu_milli = 2000;
    j.task_manager.cpu_load = Some(flat(0.35));
    let r = recommend(&j, &config()).unwrap();
    let tm = r.task_manager.assessed().unwrap();
    // 0.35 × 2 cores = 0.7 cores; / 0.7 = 1 core.
    assert_eq!(tm.recommended_cpu_milli, Some(1000));
    let patch = r.patch.task_manager.as_ref().unwrap();
    assert_eq!(patch.resources.cpu.as_deref(), Some("1"));
}

#[test]
fn memory_without_a_known_heap_max_is_not_guessed() {
    let mut j = job(4, vec![source("source", 4, 700.0, 1000.0)]);
    j.task_manager.heap_max_bytes = None;
    let r = recommend(&j, &config()).unwrap();
    assert_eq!(
        r.task_manager.reasons(),
        &[InsufficientData::HeapMaxUnknown {
            process: "taskManager".into()
        }]
    );
    assert_eq!(r.patch.task_manager, None);
}

#[test]
fn a_plan_pinning_parallelism_above_the_configured_one_sets_the_slot_need() {
    let mut j = job(8, vec![source("source", 8, 700.0, 1000.0)]);
    j.plan_slot_need = Some(12);
    let r = recommend(&j, &config()).unwrap();
    assert_eq!(r.slots.required_slots, 12);
    assert_eq!(r.slots.task_managers, 3);
    assert!(r.findings.contains(&Finding::PlanNeedsMoreSlots {
        plan_slot_need: 12,
        configured_parallelism: 8
    }));
}

#[test]
fn the_patch_is_a_json_merge_patch_of_the_spec() {
    let mut j = job(
        4,
        vec![
            source("source", 4, 200.0, 1000.0),
            keyed("window", 4, 900.0, 1000.0),
        ],
    );
    j.task_manager = process(1024.0, 4096, 8192);
    let r = recommend(&j, &config()).unwrap();
    assert_eq!(
        r.patch.to_merge_patch(),
        serde_json::json!({"spec": {
            "parallelism": 8,
            "vertexParallelism": {"source-id": 2, "window-id": 8},
            "taskManager": {"resources": {"memory": "5376Mi"}}
        }})
    );
    // The evidence serialises too, for the audit log and the report.
    let evidence = serde_json::to_value(&r).unwrap();
    assert_eq!(evidence["parallelism"]["status"], "assessed");
}

// ---- insufficient data: every refusal names its reason ----

fn parallelism_reasons(j: &JobMetrics) -> Vec<InsufficientData> {
    match recommend(j, &config()).unwrap().parallelism {
        Assessment::Assessed(p) => panic!("expected a refusal, got {p:?}"),
        Assessment::InsufficientData { reasons } => reasons,
    }
}

#[test]
fn a_gap_in_busy_time_refuses_the_parallelism_with_the_gap() {
    let mut v = source("source", 4, 700.0, 1000.0);
    v.busy_time_ms_per_second
        .samples
        .retain(|s| s.at_ms < END - 10 * MIN || s.at_ms > END - 8 * MIN);
    let reasons = parallelism_reasons(&job(4, vec![v]));
    assert!(
        matches!(&reasons[..], [InsufficientData::Gap { metric, from_ms, to_ms, .. }]
            if metric.contains("busyTimeMsPerSecond") && to_ms - from_ms > 45_000),
        "{reasons:?}"
    );
    assert!(reasons[0].to_string().contains("gap of"));
}

#[test]
fn a_counter_reset_refuses_the_parallelism_as_a_restart() {
    let mut v = source("source", 4, 700.0, 0.0);
    // numRecordsIn counts up at 1000/s, then restarts from zero halfway.
    let half = END - 7 * MIN;
    v.records_in = Series::counter(samples(END - 15 * MIN, END, |t| {
        let since = if t < half {
            t - (END - 15 * MIN)
        } else {
            t - half
        };
        since as f64
    }));
    let reasons = parallelism_reasons(&job(4, vec![v]));
    assert!(
        matches!(&reasons[..], [InsufficientData::CounterReset { at_ms, .. }] if *at_ms == half),
        "{reasons:?}"
    );
    assert!(reasons[0].to_string().contains("restarted"));
}

#[test]
fn a_counter_gives_its_rate_when_it_only_grows() {
    let mut v = source("source", 4, 700.0, 0.0);
    v.records_in = Series::counter(samples(END - 15 * MIN, END, |t| (t - END) as f64 + 5e9));
    let r = recommend(&job(4, vec![v]), &config()).unwrap();
    let p = r.parallelism.assessed().unwrap();
    assert!((p.vertices[0].input_rate - 1000.0).abs() < 1e-6);
}

#[test]
fn a_series_of_nothing_but_nan_is_refused() {
    let mut v = source("source", 4, 700.0, 1000.0);
    v.busy_time_ms_per_second = flat(f64::NAN);
    let reasons = parallelism_reasons(&job(4, vec![v]));
    assert!(
        matches!(
            &reasons[..],
            [InsufficientData::AllNonFinite { samples: 61, .. }]
        ),
        "{reasons:?}"
    );
}

#[test]
fn isolated_nan_samples_are_dropped_and_counted() {
    let mut j = job(4, vec![source("source", 4, 700.0, 1000.0)]);
    for (i, s) in j
        .task_manager
        .heap_used_bytes
        .samples
        .iter_mut()
        .enumerate()
    {
        if i % 10 == 3 {
            s.value = f64::NAN;
        }
    }
    let r = recommend(&j, &config()).unwrap();
    let tm = r.task_manager.assessed().unwrap();
    assert_eq!(tm.non_finite_dropped, 6);
    assert_eq!(tm.peak_heap_used_bytes, 1700.0 * MIB as f64);
}

#[test]
fn a_job_without_metrics_gets_reasons_not_numbers() {
    let mut v = source("source", 4, 0.0, 0.0);
    v.busy_time_ms_per_second = Series::empty_gauge();
    v.records_in = Series::empty_gauge();
    let mut j = job(4, vec![v]);
    j.task_manager.heap_used_bytes = Series::empty_gauge();
    j.job_manager.heap_used_bytes = Series::empty_gauge();
    let r = recommend(&j, &config()).unwrap();
    assert_eq!(r.parallelism.reasons().len(), 2);
    assert!(
        r.parallelism
            .reasons()
            .iter()
            .all(|x| matches!(x, InsufficientData::NoSamples { .. }))
    );
    assert!(matches!(
        r.task_manager.reasons(),
        [InsufficientData::NoSamples { metric }] if metric == "taskManager heap used"
    ));
    assert!(r.job_manager.assessed().is_none());
    assert!(r.patch.is_empty());
}

#[test]
fn a_job_without_vertices_is_refused() {
    let reasons = parallelism_reasons(&job(4, vec![]));
    assert_eq!(reasons, vec![InsufficientData::NoVertices]);
}

#[test]
fn metrics_that_start_late_are_refused_for_low_coverage() {
    let mut v = source("source", 4, 700.0, 1000.0);
    v.records_in = Series::gauge(samples(END - 5 * MIN, END, |_| 1000.0));
    let reasons = parallelism_reasons(&job(4, vec![v]));
    assert!(
        matches!(&reasons[..], [InsufficientData::LowCoverage { covered_fraction, .. }]
            if (*covered_fraction - 1.0 / 3.0).abs() < 1e-9),
        "{reasons:?}"
    );
}

#[test]
fn a_vertex_above_its_max_parallelism_is_refused() {
    let mut v = source("source", 4, 700.0, 1000.0);
    v.info.max_parallelism = 2;
    let reasons = parallelism_reasons(&job(4, vec![v]));
    assert!(
        matches!(&reasons[..], [InsufficientData::InvalidVertex { problem, .. }]
            if problem.contains("above max parallelism 2")),
        "{reasons:?}"
    );
}

#[test]
fn a_bad_config_value_is_an_error_naming_the_field() {
    let c = RightsizeConfig {
        target_utilization: 0.0,
        ..config()
    };
    let err = recommend(&job(4, vec![]), &c).unwrap_err();
    assert_eq!(err.field, "targetUtilization");
    assert!(err.to_string().contains("targetUtilization"));
}

#[test]
fn a_pinned_vertex_does_not_drive_the_job_but_is_reported() {
    // Idle sink pinned at 8 in code: true rate 10 000 against a capacity of 1595, so it
    // would shrink by the max factor, 8 × 0.4 = 3.2 → 4.
    let mut pinned = keyed("sink", 8, 100.0, 1000.0);
    pinned.info.pinned_parallelism = true;
    let j = job(4, vec![source("source", 4, 700.0, 1000.0), pinned]);
    let r = recommend(&j, &config()).unwrap();
    let p = r.parallelism.assessed().unwrap();
    assert!(!p.change);
    assert_eq!(p.bottleneck_vertex, "source (source-id)");
    assert_eq!(
        r.patch.vertex_parallelism, None,
        "code's choice is not overridden"
    );
    assert_eq!(
        r.findings,
        vec![Finding::PinnedVertexNeedsChange {
            vertex: "sink (sink-id)".into(),
            current: 8,
            needed: 4
        }]
    );
}
