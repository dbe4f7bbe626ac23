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
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JarSiteLabel {
    pub site: String,
    pub state: String,
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
    pub failover_rpo_seconds: Histogram,
    pub sites_lost: Family<SiteLabel, Counter>,
    pub failover_not_relaunched: Counter,
    /// Stored records that do not decode, by kind (`StateStore::unreadable_records`).
    pub store_unreadable_records: Family<KindLabel, Gauge>,
    /// Jobs whose jar is in each state at each site (`controller::jars`).
    pub jar_sites: Family<JarSiteLabel, Gauge>,
    pub jar_published_bytes: Counter,
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
            failover_rpo_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 16),
            ),
            sites_lost: Family::default(),
            failover_not_relaunched: Counter::default(),
            store_unreadable_records: Family::default(),
            jar_sites: Family::default(),
            jar_published_bytes: Counter::default(),
        };
        registry.register(
            "jar_sites",
            "Jobs whose jar is publishing, verified or failed in each site's storage, as of the last reconcile pass",
            metrics.jar_sites.clone(),
        );
        registry.register(
            "jar_published_bytes",
            "Bytes of job jars copied into a site's storage (and verified there)",
            metrics.jar_published_bytes.clone(),
        );
        registry.register(
            "store_unreadable_records",
            "Stored records this controller cannot decode, by kind: left out and never acted on (their keys are in the log and, for jobs, in GET /api/v1/jobs)",
            metrics.store_unreadable_records.clone(),
        );
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
            "failover_rpo_seconds",
            "Age of the checkpoint a relaunch restored from",
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
        metrics.set_unreadable_records(&[]);
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

    pub fn set_unreadable_records(&self, records: &[crate::state::UnreadableRecord]) {
        for kind in crate::state::RecordKind::ALL {
            let count = records.iter().filter(|r| r.kind == kind).count();
            self.store_unreadable_records
                .get_or_create(&KindLabel {
                    kind: kind.as_str().into(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn set_jar_sites(&self, site: &str, state: &str, jobs: i64) {
        self.jar_sites
            .get_or_create(&JarSiteLabel {
                site: site.into(),
                state: state.into(),
            })
            .set(jobs);
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
