//! The controller's Prometheus metrics, served as text at `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::status::JobPhase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    pub site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub site: String,
    pub kind: String,
}

/// Every metric the controller exports. Cheap to update from the reconcile loop.
pub struct ControllerMetrics {
    registry: Mutex<Registry>,
    pub reconcile_seconds: Histogram,
    pub reconcile_failures: Counter,
    pub jobs: Family<PhaseLabel, Gauge>,
    pub leader: Gauge,
    pub launches: Family<SiteLabel, Counter>,
    pub stops: Family<SiteLabel, Counter>,
    pub site_errors: Family<ErrorLabel, Counter>,
    pub site_reachable: Family<SiteLabel, Gauge>,
    /// Failover engine: relaunches by reason kind, their RTO from detection, sites lost.
    pub failover_relaunches: Family<ReasonLabel, Counter>,
    pub failover_rto_seconds: Histogram,
    /// From the failure (last heartbeat, the site's last sign of life) to the relaunch.
    pub failover_relaunch_delay_seconds: Histogram,
    pub failover_rpo_seconds: Histogram,
    pub sites_lost: Family<SiteLabel, Counter>,
    pub failover_not_relaunched: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("twinsite");
        // 1 ms .. ~16 s: a pass over a thousand jobs should sit in the middle.
        let reconcile_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
        );
        let metrics = ControllerMetrics {
            registry: Mutex::new(Registry::default()),
            reconcile_seconds,
            reconcile_failures: Counter::default(),
            jobs: Family::default(),
            leader: Gauge::default(),
            launches: Family::default(),
            stops: Family::default(),
            site_errors: Family::default(),
            site_reachable: Family::default(),
            failover_relaunches: Family::default(),
            // 10 ms .. ~5.7 min.
            failover_rto_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 16),
            ),
            // 1 s .. ~9 h.
            failover_relaunch_delay_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 16),
            ),
            // 1 s .. ~9 h.
            failover_rpo_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 16),
            ),
            sites_lost: Family::default(),
            failover_not_relaunched: Counter::default(),
        };
        registry.register(
            "failover_relaunches",
            "Generations the failover engine relaunched, by reason",
            metrics.failover_relaunches.clone(),
        );
        registry.register(
            "failover_rto_seconds",
            "From the failover engine's detection to the relaunch command",
            metrics.failover_rto_seconds.clone(),
        );
        registry.register(
            "failover_relaunch_delay_seconds",
            "From the failure (the node's last heartbeat, the site's last sign of life) to the relaunch command; not part of the RPO",
            metrics.failover_relaunch_delay_seconds.clone(),
        );
        registry.register(
            "failover_rpo_seconds",
            "Data a relaunch lost: from the checkpoint it restored to the failure (the last heartbeat or sign of life; the relaunch for a forced move of a live site)",
            metrics.failover_rpo_seconds.clone(),
        );
        registry.register(
            "sites_lost",
            "Times a site was judged lost (and failed over)",
            metrics.sites_lost.clone(),
        );
        registry.register(
            "failover_not_relaunched",
            "Jobs the failover engine could not relaunch (no checkpoint, no room)",
            metrics.failover_not_relaunched.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Wall time of one reconcile pass",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconcile passes that ended in an error",
            metrics.reconcile_failures.clone(),
        );
        registry.register(
            "jobs",
            "Jobs by phase, as of the last reconcile pass",
            metrics.jobs.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads and acts, else 0",
            metrics.leader.clone(),
        );
        registry.register(
            "launches",
            "Job generations launched, by site",
            metrics.launches.clone(),
        );
        registry.register(
            "stops",
            "Job generations stopped, by site",
            metrics.stops.clone(),
        );
        registry.register(
            "site_errors",
            "Failed calls to a site, by kind",
            metrics.site_errors.clone(),
        );
        registry.register(
            "site_reachable",
            "1 when the site's API answered in the last pass",
            metrics.site_reachable.clone(),
        );
        *metrics.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        for phase in JobPhase::ALL {
            metrics
                .jobs
                .get_or_create(&PhaseLabel {
                    phase: phase.as_str().into(),
                })
                .set(0);
        }
        metrics
    }

    pub fn set_jobs_by_phase(&self, counts: &std::collections::BTreeMap<JobPhase, i64>) {
        for phase in JobPhase::ALL {
            self.jobs
                .get_or_create(&PhaseLabel {
                    phase: phase.as_str().into(),
                })
                .set(counts.get(&phase).copied().unwrap_or(0));
        }
    }

    /// Prometheus text exposition (OpenMetrics flavour).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_with_its_value() {
        let metrics = ControllerMetrics::new();
        metrics.leader.set(1);
        metrics.reconcile_seconds.observe(0.02);
        let mut counts = std::collections::BTreeMap::new();
        counts.insert(JobPhase::Running, 7);
        metrics.set_jobs_by_phase(&counts);
        let text = metrics.encode();
        assert!(text.contains("twinsite_leader 1"), "{text}");
        assert!(
            text.contains("twinsite_jobs{phase=\"running\"} 7"),
            "{text}"
        );
        assert!(text.contains("twinsite_jobs{phase=\"failed\"} 0"), "{text}");
        assert!(
            text.contains("twinsite_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }
}
