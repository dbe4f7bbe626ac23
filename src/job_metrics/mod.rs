//! The jobs' metrics, read for right-sizing and capacity reports (twinsite's own Prometheus
//! export is `controller::metrics`): the sources are the Prometheus HTTP API
//! ([`prometheus::PrometheusSource`]) and a file of samples ([`file::FileSource`]). Both
//! hand back raw series per job, which `scheduler::report::assemble` aggregates and
//! `scheduler::rightsize::recommend` judges; nothing here decides anything.
//!
//! May use: `job`, `state` and the crates. Must never: use the controller, or write
//! anything (it reads metrics; the controller applies recommendations).
//!
//! Series of a job are found by the labels twinsite's pods carry, as Prometheus' usual
//! Kubernetes relabelling spells them: `namespace` and `twinsite_io_job` (see
//! `scheduler::report::assemble`). Metric names are those of Flink's Prometheus reporter
//! (`scheduler::rightsize::metric_names`).

pub mod file;
pub mod prometheus;
pub mod simulated;
pub mod synthetic;

use std::collections::BTreeSet;
use std::path::PathBuf;

use async_trait::async_trait;
use scheduler::model::JobId;
use scheduler::report::assemble::{self, JobFacts, RawSeries};
use scheduler::rightsize::{Recommendation, RightsizeConfig, RightsizeConfigError, Window};
use thiserror::Error;

/// A job as its series are labelled: `namespace` and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub namespace: String,
    pub name: String,
}

impl JobKey {
    /// `namespace/name` ids split at the first `/`; an id without one has no namespace.
    pub fn of(id: &JobId) -> JobKey {
        match id.0.split_once('/') {
            Some((ns, name)) => JobKey {
                namespace: ns.to_string(),
                name: name.to_string(),
            },
            None => JobKey {
                namespace: String::new(),
                name: id.0.clone(),
            },
        }
    }
}

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("metrics file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics file {path}, line {line}: {problem}")]
    Parse {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("--metrics {url:?}: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("Prometheus {url}: {problem}")]
    Http { url: String, problem: String },
    #[error("Prometheus {url} answered {error_type}: {error}")]
    Prometheus {
        url: String,
        error_type: String,
        error: String,
    },
    #[error(transparent)]
    Config(#[from] RightsizeConfigError),
}

/// Where series come from. Implementations fetch; they never aggregate or judge.
#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// The URL or file, as the report names it.
    fn describe(&self) -> String;

    /// Jobs with any series in `range`. The report asks this once, before any job, so that
    /// an unreachable or empty source fails the whole command instead of every job.
    async fn jobs_with_metrics(&self, range: Window) -> Result<BTreeSet<JobKey>, MetricsError>;

    /// Every series of `job` in `range`, at `step_ms` resolution where the source resamples.
    async fn job_series(
        &self,
        job: &JobKey,
        range: Window,
        step_ms: i64,
    ) -> Result<Vec<RawSeries>, MetricsError>;
}

/// Prometheus refuses range queries of more than 11 000 points per series.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// The resolution series are read at: the scrape interval, or coarser when the lookback
/// would need more points than Prometheus returns.
pub fn step_for(config: &RightsizeConfig) -> i64 {
    let needed = (config.lookback_ms + MAX_POINTS_PER_SERIES - 1) / MAX_POINTS_PER_SERIES;
    config.scrape_interval_ms.max(needed).max(1)
}

/// Right-sizing of every job in `facts`, one job in memory at a time. Jobs the source has no
/// series for still get a recommendation (every part "insufficient data: no samples");
/// a job whose series cannot be read is returned in the failures with the source's error.
pub async fn recommend_all(
    source: &dyn MetricsSource,
    facts: &[JobFacts],
    until_ms: i64,
    config: &RightsizeConfig,
) -> Result<(Vec<Recommendation>, Vec<(JobId, String)>), MetricsError> {
    let step_ms = step_for(config);
    // Gaps are judged at the resolution the series were read at.
    let config = RightsizeConfig {
        scrape_interval_ms: step_ms,
        ..config.clone()
    };
    config.validate()?;
    let range = Window {
        start_ms: until_ms - config.lookback_ms,
        end_ms: until_ms,
    };
    let present = source.jobs_with_metrics(range).await?;
    let mut recommendations = Vec::with_capacity(facts.len());
    let mut failures = Vec::new();
    for f in facts {
        let key = JobKey::of(&f.job);
        let series = if present.contains(&key) {
            match source.job_series(&key, range, step_ms).await {
                Ok(series) => series,
                Err(e) => {
                    failures.push((f.job.clone(), e.to_string()));
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let metrics = assemble::assemble(f, &series, until_ms, step_ms);
        recommendations.push(scheduler::rightsize::recommend(&metrics, &config)?);
    }
    Ok((recommendations, failures))
}

/// Decodes one element of a Prometheus matrix (`{"metric": {...}, "values": [[t, "v"], ...]}`),
/// the shape shared by `query_range` answers and metrics files. `at` names the place in
/// errors.
pub(crate) fn decode_matrix_entry(
    entry: MatrixEntry<'_>,
    at: &dyn Fn(String) -> MetricsError,
) -> Result<RawSeries, MetricsError> {
    let mut labels = entry.metric;
    let Some(metric) = labels.remove("__name__") else {
        return Err(at("series without a __name__ label".to_string()));
    };
    let mut samples = Vec::with_capacity(entry.values.len());
    for (t, v) in entry.values {
        if !t.is_finite() {
            return Err(at(format!("{metric}: timestamp {t} is not a number")));
        }
        let value =
            parse_value(&v).ok_or_else(|| at(format!("{metric}: value {v:?} is not a number")))?;
        samples.push(scheduler::rightsize::Sample::new(
            (t * 1000.0).round() as i64,
            value,
        ));
    }
    Ok(RawSeries {
        metric,
        labels,
        samples,
    })
}

/// Prometheus writes sample values as strings: decimals, `NaN`, `+Inf`, `-Inf`.
pub(crate) fn parse_value(v: &str) -> Option<f64> {
    match v {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Values are borrowed from the input where they can be (they hold no escapes): a week of
/// samples is read without one allocation per sample.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct MatrixEntry<'a> {
    pub metric: std::collections::BTreeMap<String, String>,
    #[serde(default, borrow)]
    pub values: Vec<(f64, std::borrow::Cow<'a, str>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_week_at_15s_is_read_at_a_coarser_step_prometheus_accepts() {
        let config = RightsizeConfig {
            lookback_ms: 7 * 24 * 3_600_000,
            ..RightsizeConfig::default()
        };
        let step = step_for(&config);
        assert!(config.lookback_ms / step <= MAX_POINTS_PER_SERIES);
        assert_eq!(step_for(&RightsizeConfig::default()), 15_000);
    }

    #[test]
    fn prometheus_special_values_parse() {
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("1.5e3"), Some(1500.0));
        assert_eq!(parse_value("lots"), None);
    }

    #[test]
    fn a_job_id_splits_into_namespace_and_name() {
        let k = JobKey::of(&JobId("trade/orders".into()));
        assert_eq!((k.namespace.as_str(), k.name.as_str()), ("trade", "orders"));
    }
}
