//! Metrics of the jobs simulated sites run: Flink-reporter-shaped series (busy time, records
//! in, lag, heap, CPU) generated deterministically per job by `synthetic::history`, so the
//! embedded default has right-sizing and capacity figures without a Prometheus.
//!
//! A job's history is generated once per [`REFRESH_MS`] and kept, not rebuilt per request:
//! it is generated up to the next multiple of `REFRESH_MS` (the samples after a request's
//! end are cut off), for the job's spec as it is then; a request past that end, for another
//! step or a longer range, or after a spec change generates it again.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use scheduler::report::assemble::{JobFacts, RawSeries};
use scheduler::rightsize::Window;

use super::{JobKey, MetricsError, MetricsSource, synthetic};
use crate::job::stream_job_of;
use crate::state::StateStore;

/// How long a generated history serves requests: the simulated jobs' metrics move on in
/// steps of this size.
pub const REFRESH_MS: i64 = 10 * 60_000;

/// Most histories kept at once (a day at one-minute steps is a few MB per job).
const MAX_KEPT_HISTORIES: usize = 256;

/// One job's generated history and what it was generated for.
struct CachedHistory {
    facts: JobFacts,
    step_ms: i64,
    start_ms: i64,
    end_ms: i64,
    series: Arc<Vec<RawSeries>>,
}

pub struct SimulatedMetricsSource {
    store: Arc<dyn StateStore>,
    /// Which of the stored jobs' sites are simulated: only their jobs have metrics.
    simulated_sites: BTreeSet<String>,
    seed: u64,
    histories: Mutex<HashMap<JobKey, CachedHistory>>,
    /// Histories generated so far (tests and the bench read it).
    generated: std::sync::atomic::AtomicU64,
}

impl SimulatedMetricsSource {
    pub fn new(store: Arc<dyn StateStore>, simulated_sites: BTreeSet<String>, seed: u64) -> Self {
        SimulatedMetricsSource {
            store,
            simulated_sites,
            seed,
            histories: Mutex::new(HashMap::new()),
            generated: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many histories were generated since the source was made.
    pub fn histories_generated(&self) -> u64 {
        self.generated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The job's history covering `range` at `step_ms`: the kept one when it covers it for
    /// these facts, else a new one up to the next refresh boundary.
    fn history(
        &self,
        job: &JobKey,
        facts: JobFacts,
        range: Window,
        step_ms: i64,
    ) -> Arc<Vec<RawSeries>> {
        let step_ms = step_ms.max(1);
        let mut histories = self.histories.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = histories.get(job)
            && kept.facts == facts
            && kept.step_ms == step_ms
            && kept.start_ms <= range.start_ms
            && range.end_ms <= kept.end_ms
        {
            return Arc::clone(&kept.series);
        }
        let end_ms = (range.end_ms.div_euclid(REFRESH_MS) + 1) * REFRESH_MS;
        let series = Arc::new(synthetic::history_between(
            &facts,
            self.seed,
            range.start_ms,
            end_ms,
            step_ms,
        ));
        self.generated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if histories.len() >= MAX_KEPT_HISTORIES && !histories.contains_key(job) {
            // A bound, not a policy: a fleet this large regenerates as before.
            histories.clear();
        }
        histories.insert(
            job.clone(),
            CachedHistory {
                facts,
                step_ms,
                start_ms: range.start_ms,
                end_ms,
                series: Arc::clone(&series),
            },
        );
        series
    }

    fn store_error(&self, error: impl std::fmt::Display) -> MetricsError {
        MetricsError::Http {
            url: self.describe(),
            problem: format!("state store: {error}"),
        }
    }
}

#[async_trait]
impl MetricsSource for SimulatedMetricsSource {
    fn describe(&self) -> String {
        format!(
            "simulated sites {}",
            self.simulated_sites
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    async fn jobs_with_metrics(&self, _range: Window) -> Result<BTreeSet<JobKey>, MetricsError> {
        let records = self
            .store
            .list_jobs()
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(records
            .iter()
            .filter(|r| {
                r.value
                    .placement
                    .as_ref()
                    .is_some_and(|p| self.simulated_sites.contains(&p.site))
            })
            .map(|r| JobKey {
                namespace: r.value.namespace.clone(),
                name: r.value.name.clone(),
            })
            .collect())
    }

    async fn job_series(
        &self,
        job: &JobKey,
        range: Window,
        step_ms: i64,
    ) -> Result<Vec<RawSeries>, MetricsError> {
        let Some(record) = self
            .store
            .get_job(&job.namespace, &job.name)
            .await
            .map_err(|e| self.store_error(e))?
        else {
            return Ok(Vec::new());
        };
        let Ok(stream_job) = stream_job_of(&record.value) else {
            return Ok(Vec::new());
        };
        let Ok(demand) = stream_job.demand() else {
            return Ok(Vec::new());
        };
        let facts = JobFacts::of(&stream_job, &demand);
        let history = self.history(job, facts, range, step_ms);
        Ok(history
            .iter()
            .map(|s| RawSeries {
                metric: s.metric.clone(),
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .filter(|sample| sample.at_ms >= range.start_ms && sample.at_ms <= range.end_ms)
                    .copied()
                    .collect(),
            })
            .collect())
    }
}
