//! The job's parallelism: per metrics window, per vertex, Flink's autoscaler model; the
//! busiest window and its bottleneck vertex decide.

use std::collections::BTreeMap;

use super::config::RightsizeConfig;
use super::input::{JobMetrics, VertexMetrics, metric_names};
use super::recommendation::{
    Assessment, Finding, InsufficientData, ParallelismEvidence, VertexEvidence,
};
use super::scaling::{VertexRates, compute_vertex_scaling};
use super::window::{CleanSeries, CoverageRules, Window, clean};

/// Flink's upper bound on max parallelism (`KeyGroupRangeAssignment.UPPER_BOUND_MAX_PARALLELISM`).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

struct CleanVertex<'a> {
    metrics: &'a VertexMetrics,
    busy: CleanSeries,
    records_in: CleanSeries,
    pending: Option<CleanSeries>,
}

/// Per-window reading of one vertex, before the model.
struct Reading {
    input_rate: f64,
    busy_ms: f64,
    lag: Option<f64>,
    lag_growth_rate: Option<f64>,
}

fn label(v: &VertexMetrics, metric: &str) -> String {
    format!("vertex {} ({}) {metric}", v.info.name, v.info.id)
}

fn validate_vertex(v: &VertexMetrics) -> Option<InsufficientData> {
    let info = &v.info;
    let problem = if info.parallelism == 0 {
        Some("parallelism is 0".to_string())
    } else if info.max_parallelism == 0 || info.max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        Some(format!(
            "max parallelism {} is outside 1..={UPPER_BOUND_MAX_PARALLELISM}",
            info.max_parallelism
        ))
    } else if info.parallelism > info.max_parallelism {
        Some(format!(
            "parallelism {} is above max parallelism {}",
            info.parallelism, info.max_parallelism
        ))
    } else {
        None
    };
    problem.map(|problem| InsufficientData::InvalidVertex {
        vertex: format!("{} ({})", info.name, info.id),
        problem,
    })
}

fn read(v: &CleanVertex<'_>, w: Window) -> Result<Reading, InsufficientData> {
    let too_few = |metric: &str| InsufficientData::TooFewSamplesInWindow {
        metric: label(v.metrics, metric),
        window: w,
    };
    let input_rate = v
        .records_in
        .per_second(w)
        .ok_or_else(|| too_few(metric_names::RECORDS_IN_PER_SECOND))?;
    let busy_ms = v
        .busy
        .mean(w)
        .ok_or_else(|| too_few(metric_names::BUSY_TIME_MS_PER_SECOND))?
        .clamp(0.0, 1000.0);
    let (lag, lag_growth_rate) = match &v.pending {
        None => (None, None),
        Some(p) => (
            Some(
                p.last(w)
                    .ok_or_else(|| too_few(metric_names::PENDING_RECORDS))?,
            ),
            Some(
                p.rate_per_second(w)
                    .ok_or_else(|| too_few(metric_names::PENDING_RECORDS))?,
            ),
        ),
    };
    Ok(Reading {
        input_rate,
        busy_ms,
        lag,
        lag_growth_rate,
    })
}

/// `rate / (busy / 1000)`; no input means capacity is unknown but unused: infinite, as in
/// Flink, so that an idle vertex shrinks by the max scale-down factor.
fn true_processing_rate(input_rate: f64, busy_ms: f64) -> f64 {
    if input_rate == 0.0 {
        return f64::INFINITY;
    }
    input_rate / (busy_ms / 1000.0)
}

/// One window's evaluation of every vertex.
struct WindowResult {
    processing_backlog: bool,
    vertices: Vec<VertexEvidence>,
}

fn evaluate_window(
    vertices: &[CleanVertex<'_>],
    w: Window,
    config: &RightsizeConfig,
) -> Result<WindowResult, Vec<InsufficientData>> {
    let mut readings = Vec::with_capacity(vertices.len());
    let mut reasons = Vec::new();
    for v in vertices {
        match read(v, w) {
            Ok(r) => readings.push(r),
            Err(e) => reasons.push(e),
        }
    }
    if !reasons.is_empty() {
        return Err(reasons);
    }
    let catch_up_sec = (config.catch_up_duration_ms / 1000) as f64;
    let backlog_sec = (config.backlog_lag_threshold_ms / 1000) as f64;

    // Sources: Flink's TARGET_DATA_RATE = input + lag growth, CATCH_UP = lag / catch-up time.
    let mut source_input = 0.0;
    let mut source_target = 0.0;
    let mut source_catch_up = 0.0;
    let mut processing_backlog = false;
    let mut targets = Vec::with_capacity(vertices.len());
    for (v, r) in vertices.iter().zip(&readings) {
        if v.metrics.info.is_source {
            let lag = r.lag.unwrap_or(0.0);
            let target = (r.input_rate + r.lag_growth_rate.unwrap_or(0.0)).max(0.0);
            let catch_up = if catch_up_sec == 0.0 {
                0.0
            } else {
                lag / catch_up_sec
            };
            source_input += r.input_rate;
            source_target += target;
            source_catch_up += catch_up;
            // Java's lag / rate: more than the threshold's worth of input is backlog.
            if lag / r.input_rate > backlog_sec {
                processing_backlog = true;
            }
            targets.push(Some((target, catch_up)));
        } else {
            targets.push(None);
        }
    }
    // Flink carries the sources' target rate down the graph edge by edge. Without the
    // edges we scale each downstream vertex's observed input by the sources' ratio of
    // target to observed input: exact for pipelines where every record flows through.
    let (amplification, catch_up_share) = if source_input > 0.0 {
        (source_target / source_input, source_catch_up / source_input)
    } else {
        (1.0, 0.0)
    };

    let mut evidence = Vec::with_capacity(vertices.len());
    for ((v, r), target) in vertices.iter().zip(&readings).zip(targets) {
        let info = &v.metrics.info;
        let (target_data_rate, catch_up_data_rate) =
            target.unwrap_or((r.input_rate * amplification, r.input_rate * catch_up_share));
        let rates = VertexRates {
            target_data_rate,
            catch_up_data_rate,
            true_processing_rate: true_processing_rate(r.input_rate, r.busy_ms),
        };
        let scaling = compute_vertex_scaling(
            info.parallelism,
            info.max_parallelism,
            info.keyed_input,
            // Partitions matter only where they are read: at the source.
            info.source_partitions
                .filter(|_| info.is_source)
                .unwrap_or(0),
            &rates,
            processing_backlog,
            config,
        )
        .map_err(|gap| {
            vec![InsufficientData::VertexNotScalable {
                vertex: format!("{} ({})", info.name, info.id),
                gap,
            }]
        })?;
        evidence.push(VertexEvidence {
            id: info.id.clone(),
            name: info.name.clone(),
            current_parallelism: info.parallelism,
            max_parallelism: info.max_parallelism,
            keyed_input: info.keyed_input,
            is_source: info.is_source,
            pinned_parallelism: info.pinned_parallelism,
            input_rate: r.input_rate,
            busy_ms_per_second: r.busy_ms,
            true_processing_rate: rates.true_processing_rate,
            lag: r.lag,
            lag_growth_rate: r.lag_growth_rate,
            target_data_rate,
            catch_up_data_rate,
            recommended_parallelism: scaling.outcome.parallelism,
            window: w,
            scaling,
        });
    }
    Ok(WindowResult {
        processing_backlog,
        vertices: evidence,
    })
}

/// Assesses the job's parallelism over `range`, split into metrics windows.
pub fn assess(
    job: &JobMetrics,
    range: Window,
    rules: CoverageRules,
    config: &RightsizeConfig,
) -> (Assessment<ParallelismEvidence>, Vec<Finding>) {
    let insufficient = |reasons| (Assessment::InsufficientData { reasons }, Vec::new());
    if job.vertices.is_empty() {
        return insufficient(vec![InsufficientData::NoVertices]);
    }
    let mut reasons: Vec<InsufficientData> =
        job.vertices.iter().filter_map(validate_vertex).collect();
    let mut clean_vertices = Vec::with_capacity(job.vertices.len());
    for v in &job.vertices {
        let busy = clean(
            &label(v, metric_names::BUSY_TIME_MS_PER_SECOND),
            &v.busy_time_ms_per_second,
            range,
            rules,
        );
        let records_in = clean(
            &label(v, metric_names::RECORDS_IN_PER_SECOND),
            &v.records_in,
            range,
            rules,
        );
        let pending = v
            .pending_records
            .as_ref()
            .map(|p| clean(&label(v, metric_names::PENDING_RECORDS), p, range, rules))
            .transpose();
        match (busy, records_in, pending) {
            (Ok(busy), Ok(records_in), Ok(pending)) => clean_vertices.push(CleanVertex {
                metrics: v,
                busy,
                records_in,
                pending,
            }),
            (busy, records_in, pending) => {
                reasons.extend(busy.err());
                reasons.extend(records_in.err());
                reasons.extend(pending.err());
            }
        }
    }
    if !reasons.is_empty() {
        return insufficient(reasons);
    }

    let windows = range.split(config.metrics_window_ms);
    let windows_evaluated = windows.len();
    // Each vertex keeps the window it needed most in (ties to the later window: the most
    // recent behaviour is the better guide), so a quiet night never shrinks a vertex its
    // evening peak needs, whichever vertex peaks when.
    let mut peaks: Vec<Option<(VertexEvidence, bool)>> = vec![None; clean_vertices.len()];
    for w in windows {
        match evaluate_window(&clean_vertices, w, config) {
            Err(mut r) => reasons.append(&mut r),
            Ok(result) => {
                for (peak, evidence) in peaks.iter_mut().zip(result.vertices) {
                    if peak.as_ref().is_none_or(|(p, _)| {
                        evidence.recommended_parallelism >= p.recommended_parallelism
                    }) {
                        *peak = Some((evidence, result.processing_backlog));
                    }
                }
            }
        }
    }
    if !reasons.is_empty() {
        return insufficient(reasons);
    }
    let Some(peaks) = peaks.into_iter().collect::<Option<Vec<_>>>() else {
        return insufficient(reasons);
    };
    // The job's parallelism moves only vertices not pinned in code; if all are pinned, the
    // job-level figure still reports what the busiest one needs. Among equal needs the
    // vertex that peaked last decides, then the first in the graph.
    let any_free = peaks.iter().any(|(e, _)| !e.pinned_parallelism);
    let Some(bottleneck) = peaks
        .iter()
        .enumerate()
        .filter(|(_, (e, _))| !any_free || !e.pinned_parallelism)
        .fold(None::<usize>, |best, (i, (e, _))| match best {
            Some(b)
                if (peaks[b].0.recommended_parallelism, peaks[b].0.window.end_ms)
                    >= (e.recommended_parallelism, e.window.end_ms) =>
            {
                Some(b)
            }
            _ => Some(i),
        })
    else {
        return insufficient(vec![InsufficientData::NoVertices]);
    };
    let window = peaks[bottleneck].0.window;
    let need = peaks[bottleneck].0.recommended_parallelism;
    let processing_backlog = peaks[bottleneck].1;
    let vertices: Vec<VertexEvidence> = peaks.into_iter().map(|(e, _)| e).collect();

    let current = job.configured_parallelism;
    // Flink rescales only when some changed vertex is outside its utilisation band; with
    // per-vertex parallelism a vertex may change while the job's largest need stays.
    let moves = |e: &VertexEvidence| e.recommended_parallelism != e.current_parallelism;
    let outside = vertices
        .iter()
        .any(|e| !e.pinned_parallelism && e.scaling.outside_band && moves(e));
    let any_vertex_moves = vertices.iter().any(|e| !e.pinned_parallelism && moves(e));
    let change = outside && need > 0 && (need != current || any_vertex_moves);
    let findings = vertices
        .iter()
        .filter(|e| e.pinned_parallelism && e.scaling.outside_band && moves(e))
        .map(|e| Finding::PinnedVertexNeedsChange {
            vertex: format!("{} ({})", e.name, e.id),
            current: e.current_parallelism,
            needed: e.recommended_parallelism,
        })
        .collect();
    let bottleneck_vertex = vertices
        .get(bottleneck)
        .map(|e| format!("{} ({})", e.name, e.id))
        .unwrap_or_default();
    (
        Assessment::Assessed(ParallelismEvidence {
            current,
            recommended: if change { need } else { current },
            change,
            bottleneck_vertex,
            window,
            windows_evaluated,
            processing_backlog,
            within_band: !outside,
            vertices,
        }),
        findings,
    )
}

/// The per-vertex parallelism of a changed assessment: every vertex not pinned in code at
/// what it needed in its busiest window, keyed by Flink's job vertex id, ready for
/// `pipeline.jobvertex-parallelism-overrides`. Vertices pinned in code keep their value
/// (a [`Finding::PinnedVertexNeedsChange`] says when they need another).
pub fn vertex_overrides(evidence: &ParallelismEvidence) -> BTreeMap<String, u32> {
    if !evidence.change {
        return BTreeMap::new();
    }
    evidence
        .vertices
        .iter()
        .filter(|e| !e.pinned_parallelism)
        .map(|e| (e.id.clone(), e.recommended_parallelism))
        .collect()
}
