//! The controller's Prometheus metrics, served as text at `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

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

/// One job's replication from the site it runs in to one peer. `streamjob` is
/// `namespace/name` (not `job`, which Prometheus reserves for the scrape job).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ExposureLabel {
    pub streamjob: String,
    pub site: String,
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SitePairLabel {
    pub site: String,
    pub peer: String,
}

/// A site's health as the failover engine judges it: `up`, `suspect`, `lost`,
/// `returning`, `unreachable-without-quorum`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SiteStatusLabel {
    pub site: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct OperationLabel {
    pub op: String,
    pub kind: String,
    pub from: String,
    pub to: String,
}

/// Jobs of an operation by step: `pending`, `in-flight`, `done`, `left`, `failed`,
/// `not-fitting`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct OperationJobsLabel {
    pub op: String,
    pub state: String,
}

/// A float gauge (seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;

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
    /// Moves off borrowed offline capacity started, and jobs that must leave but fit nowhere.
    pub rebalance_moves: Counter,
    pub rebalance_stuck: Gauge,
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
    /// Stored records that do not decode, by kind (`StateStore::unreadable_records`).
    pub store_unreadable_records: Family<KindLabel, Gauge>,
    /// Site health and epoch as the failover engine sees them (the leader's).
    pub site_status: Family<SiteStatusLabel, Gauge>,
    pub site_epoch: Family<SiteLabel, Gauge>,
    /// Failover operations: 1 while active, 0 once finished; their jobs by step.
    pub failover_operation_active: Family<OperationLabel, Gauge>,
    pub failover_operation_jobs: Family<OperationJobsLabel, Gauge>,
    /// RPO exposure per job and peer (`controller/exposure.rs`), the leader's.
    pub replication: ReplicationMetrics,
    /// Jobs whose jar is in each state at each site (`controller::jars`).
    pub jar_sites: Family<JarSiteLabel, Gauge>,
    pub jar_published_bytes: Counter,
}

/// `twinsite_replication_*`: what a site loss would cost each job now, and how replication
/// is doing. Exported by the leader, which replicates.
pub struct ReplicationMetrics {
    /// Age of the newest checkpoint of the job verified at the peer; +Inf when there is
    /// none (a failover would start the job without state).
    pub rpo_seconds: Family<ExposureLabel, FloatGauge>,
    /// The job's bound: `replication.maxLag`.
    pub rpo_bound_seconds: Family<ExposureLabel, FloatGauge>,
    /// 1 when the peer holds a verified checkpoint of the job.
    pub restorable: Family<ExposureLabel, Gauge>,
    /// 1 while the exposure is above the bound (the job's `ReplicationBehind` condition).
    pub lag_breached: Family<ExposureLabel, Gauge>,
    /// Files and bytes of the newest checkpoint not yet verified at the peer.
    pub backlog_files: Family<ExposureLabel, Gauge>,
    pub backlog_bytes: Family<ExposureLabel, Gauge>,
    /// Jobs entering breach.
    pub lag_breaches: Family<SitePairLabel, Counter>,
    /// Jobs whose last copy to the peer failed.
    pub jobs_failing: Family<SitePairLabel, Gauge>,
    pub copy_failures: Family<SitePairLabel, Counter>,
    pub checkpoints_replicated: Family<SitePairLabel, Counter>,
    pub rounds: Counter,
    pub round_duration_seconds: Histogram,
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
            rebalance_moves: Counter::default(),
            rebalance_stuck: Gauge::default(),
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
            site_status: Family::default(),
            site_epoch: Family::default(),
            failover_operation_active: Family::default(),
            failover_operation_jobs: Family::default(),
            replication: ReplicationMetrics {
                rpo_seconds: Family::default(),
                rpo_bound_seconds: Family::default(),
                restorable: Family::default(),
                lag_breached: Family::default(),
                backlog_files: Family::default(),
                backlog_bytes: Family::default(),
                lag_breaches: Family::default(),
                jobs_failing: Family::default(),
                copy_failures: Family::default(),
                checkpoints_replicated: Family::default(),
                rounds: Counter::default(),
                // 10 ms .. ~5.5 min: a round over a thousand jobs' new checkpoints.
                round_duration_seconds: Histogram::new(
                    prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 16),
                ),
            },
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
            "rebalance_moves",
            "Jobs moved because their running placement breaks a rule: borrowed offline capacity closing, a NoExecute taint, a lost label, a shrunk quota, an over-committed node",
            metrics.rebalance_moves.clone(),
        );
        registry.register(
            "rebalance_jobs_stuck",
            "Jobs whose running placement breaks a rule but that fit nowhere else, as of the last pass",
            metrics.rebalance_stuck.clone(),
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
        registry.register(
            "site_status",
            "1 for a site's current health as the failover engine judges it (up, suspect, lost, returning, unreachable-without-quorum)",
            metrics.site_status.clone(),
        );
        registry.register(
            "site_epoch",
            "A site's epoch: raised each time it is judged lost",
            metrics.site_epoch.clone(),
        );
        registry.register(
            "failover_operation_active",
            "1 while a failover operation runs (or cancels), 0 once finished",
            metrics.failover_operation_active.clone(),
        );
        registry.register(
            "failover_operation_jobs",
            "Jobs of a failover operation by step (pending, in-flight, done, left, failed, not-fitting)",
            metrics.failover_operation_jobs.clone(),
        );
        let r = &metrics.replication;
        registry.register(
            "replication_rpo_seconds",
            "Age of the newest checkpoint of the job verified at the peer: what a loss of its site would cost now (+Inf: no checkpoint there)",
            r.rpo_seconds.clone(),
        );
        registry.register(
            "replication_rpo_bound_seconds",
            "The job's RPO bound (policy replication.maxLag)",
            r.rpo_bound_seconds.clone(),
        );
        registry.register(
            "replication_restorable",
            "1 when the peer holds a verified checkpoint of the job",
            r.restorable.clone(),
        );
        registry.register(
            "replication_lag_breached",
            "1 while the job's RPO exposure is above its bound (condition ReplicationBehind)",
            r.lag_breached.clone(),
        );
        registry.register(
            "replication_backlog_files",
            "Files of the job's newest checkpoint not yet verified at the peer",
            r.backlog_files.clone(),
        );
        registry.register(
            "replication_backlog_bytes",
            "Bytes of the job's newest checkpoint not yet verified at the peer",
            r.backlog_bytes.clone(),
        );
        registry.register(
            "replication_lag_breaches",
            "Jobs whose RPO exposure crossed their bound",
            r.lag_breaches.clone(),
        );
        registry.register(
            "replication_jobs_failing",
            "Jobs whose last checkpoint copy to the peer failed",
            r.jobs_failing.clone(),
        );
        registry.register(
            "replication_copy_failures",
            "Failed checkpoint copies to the peer",
            r.copy_failures.clone(),
        );
        registry.register(
            "replication_checkpoints_replicated",
            "Checkpoints newly recorded as verified at the peer",
            r.checkpoints_replicated.clone(),
        );
        registry.register(
            "replication_rounds",
            "Replication rounds run by this leader",
            r.rounds.clone(),
        );
        registry.register(
            "replication_round_duration_seconds",
            "Wall time of one replication round",
            r.round_duration_seconds.clone(),
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

    /// Creates the per-site counters at zero, so that `increase()` and `rate()` see their
    /// first increment and dashboards find every family from the start. Site error kinds
    /// other than `unreachable` and `timeout` appear at their first error.
    pub fn init_sites(&self, sites: &[String]) {
        for site in sites {
            let label = SiteLabel { site: site.clone() };
            self.launches.get_or_create(&label).inc_by(0);
            self.stops.get_or_create(&label).inc_by(0);
            self.sites_lost.get_or_create(&label).inc_by(0);
            for kind in ["unreachable", "timeout"] {
                self.site_errors
                    .get_or_create(&ErrorLabel {
                        site: site.clone(),
                        kind: kind.to_string(),
                    })
                    .inc_by(0);
            }
        }
    }

    /// Creates the replication counters of every ordered pair of sites with storage at zero.
    pub fn init_replication_pairs(&self, sites: &[String]) {
        for site in sites {
            for peer in sites.iter().filter(|p| *p != site) {
                let pair = SitePairLabel {
                    site: site.clone(),
                    peer: peer.clone(),
                };
                let r = &self.replication;
                r.lag_breaches.get_or_create(&pair).inc_by(0);
                r.copy_failures.get_or_create(&pair).inc_by(0);
                r.checkpoints_replicated.get_or_create(&pair).inc_by(0);
            }
        }
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
