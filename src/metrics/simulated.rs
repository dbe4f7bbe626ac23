//! Metrics of the jobs simulated sites run: Flink-reporter-shaped series (busy time, records
//! in, lag, heap, CPU) generated deterministically per job by `synthetic::history`, so the
//! embedded default has right-sizing and capacity figures without a Prometheus.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use scheduler::report::assemble::{JobFacts, RawSeries};
use scheduler::rightsize::Window;

use super::{JobKey, MetricsError, MetricsSource, synthetic};
use crate::controller::stream_job_of;
use crate::state::StateStore;

const DAY_MS: i64 = 86_400_000;

pub struct SimulatedMetricsSource {
    store: Arc<dyn StateStore>,
    /// Which of the stored jobs' sites are simulated: only their jobs have metrics.
    simulated_sites: BTreeSet<String>,
    seed: u64,
}

impl SimulatedMetricsSource {
    pub fn new(store: Arc<dyn StateStore>, simulated_sites: BTreeSet<String>, seed: u64) -> Self {
        SimulatedMetricsSource {
            store,
            simulated_sites,
            seed,
        }
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
        let days = u32::try_from(((range.end_ms - range.start_ms) + DAY_MS - 1) / DAY_MS)
            .unwrap_or(1)
            .max(1);
        let mut series = synthetic::history(&facts, self.seed, range.end_ms, days, step_ms.max(1));
        for s in &mut series {
            s.samples
                .retain(|sample| sample.at_ms >= range.start_ms && sample.at_ms <= range.end_ms);
        }
        Ok(series)
    }
}
