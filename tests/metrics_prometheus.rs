//! The Prometheus source against a real Prometheus (Debian's package) loaded with a day of
//! Flink history through `promtool tsdb create-blocks-from openmetrics`: it finds the jobs
//! that report, reads their series with instant and range queries, and yields exactly the
//! recommendations the file source yields from the same history; gaps and silence come
//! back as "insufficient data", and Prometheus' own errors are named.

mod support;

use std::collections::BTreeSet;

use scheduler::model::JobId;
use scheduler::report::assemble::{JobFacts, RawSeries};
use scheduler::rightsize::{InsufficientData, ProcessSpec, RightsizeConfig, Window};
use support::prometheus::PrometheusServer;
use twinsite::job_metrics::file::FileSource;
use twinsite::job_metrics::prometheus::PrometheusSource;
use twinsite::job_metrics::synthetic::{Shape, history, shape_of, write_json_lines};
use twinsite::job_metrics::{JobKey, MetricsError, MetricsSource, recommend_all};

const SEED: u64 = 17;
const STEP_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// The end of the history: the last full hour before now, so that the server's retention
/// (judged against the newest block) keeps all of it.
fn end_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    now - now.rem_euclid(3_600_000) - 3_600_000
}

fn facts(name: &str) -> JobFacts {
    JobFacts {
        job: JobId(format!("trade/{name}")),
        parallelism: 2,
        max_parallelism: None,
        vertex_parallelism: Default::default(),
        slots_per_task_manager: 2,
        plan_slot_need: None,
        job_manager: ProcessSpec {
            memory_bytes: 2 << 30,
            cpu_milli: 1000,
            max_memory_bytes: None,
            max_cpu_milli: None,
        },
        task_manager: ProcessSpec {
            memory_bytes: 4 << 30,
            cpu_milli: 2000,
            max_memory_bytes: None,
            max_cpu_milli: None,
        },
    }
}

/// The first job name whose synthetic history has `shape`.
fn job_with(shape: Shape) -> JobFacts {
    (0..)
        .map(|i| facts(&format!("job-{i}")))
        .find(|f| shape_of(&JobKey::of(&f.job), SEED) == shape)
        .expect("some name has every shape")
}

struct History {
    jobs: Vec<JobFacts>,
    series: Vec<RawSeries>,
    end_ms: i64,
}

fn history_of_four_jobs() -> History {
    let end_ms = end_ms();
    let jobs = vec![
        job_with(Shape::Healthy),
        job_with(Shape::NanSamples),
        job_with(Shape::Gap),
        job_with(Shape::Silent),
    ];
    let series = jobs
        .iter()
        .flat_map(|f| history(f, SEED, end_ms, 1, STEP_MS))
        .collect();
    History {
        jobs,
        series,
        end_ms,
    }
}

fn config() -> RightsizeConfig {
    RightsizeConfig {
        lookback_ms: DAY_MS,
        scrape_interval_ms: STEP_MS,
        ..RightsizeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_gives_the_same_recommendations_as_the_file_it_was_loaded_from() {
    tracing::info!("--- load a day of history for four jobs into Prometheus and into a file");
    let h = history_of_four_jobs();
    let server = PrometheusServer::start_with(&h.series).await;
    let dir = tempfile::tempdir().unwrap();
    let file_path = dir.path().join("metrics.jsonl");
    let mut file = std::fs::File::create(&file_path).unwrap();
    write_json_lines(&mut file, &h.series).unwrap();
    drop(file);

    let prometheus = PrometheusSource::new(server.url()).unwrap();
    let file = FileSource::open(&file_path).unwrap();
    let range = Window {
        start_ms: h.end_ms - DAY_MS,
        end_ms: h.end_ms,
    };

    tracing::info!("--- the instant query finds the three jobs that report, not the silent one");
    let present = prometheus.jobs_with_metrics(range).await.unwrap();
    let expected: BTreeSet<JobKey> = h.jobs[..3].iter().map(|f| JobKey::of(&f.job)).collect();
    assert_eq!(present, expected, "log:\n{}", server.log());
    assert_eq!(file.jobs_with_metrics(range).await.unwrap(), expected);

    tracing::info!("--- both sources give the same recommendations for the healthy jobs");
    let (from_prometheus, failures) = recommend_all(&prometheus, &h.jobs, h.end_ms, &config())
        .await
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let (from_file, _) = recommend_all(&file, &h.jobs, h.end_ms, &config())
        .await
        .unwrap();
    assert_eq!(from_prometheus.len(), 4);
    for i in 0..2 {
        assert_eq!(from_prometheus[i], from_file[i], "{}", h.jobs[i].job);
        assert!(
            from_prometheus[i].parallelism.assessed().is_some(),
            "{:?}",
            from_prometheus[i].parallelism
        );
    }
    // The NaN samples were read as NaN and dropped, and that is on record.
    let nan_tm = from_prometheus[1].task_manager.assessed().unwrap();
    assert!(nan_tm.non_finite_dropped > 0);

    tracing::info!("--- the gap and the silent job are insufficient data, with the metric named");
    // Prometheus bridges the first 5 minutes of a gap (its lookback delta); the rest remains.
    let gap = from_prometheus[2].task_manager.reasons();
    assert!(
        gap.iter().any(
            |r| matches!(r, InsufficientData::Gap { metric, .. } if metric.contains("heap used"))
        ),
        "{gap:?}"
    );
    let silent = from_prometheus[3].job_manager.reasons();
    assert!(
        silent
            .iter()
            .any(|r| matches!(r, InsufficientData::NoSamples { .. })),
        "{silent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_prometheus_rejects_is_reported_with_the_url_and_its_error() {
    let h = history_of_four_jobs();
    let server = PrometheusServer::start_with(&h.series[..1]).await;
    let prometheus = PrometheusSource::new(server.url()).unwrap();
    let err = prometheus.instant("sum(", h.end_ms).await.unwrap_err();
    assert!(
        matches!(&err, MetricsError::Prometheus { error_type, .. } if error_type == "bad_data"),
        "{err:?}"
    );
    assert!(err.to_string().contains(server.url()), "{err}");
}
