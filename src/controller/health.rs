//! What the leader's failover engine thinks of the sites and its operations, kept after each
//! pass for `/metrics` (`twinsite_site_status`, `twinsite_site_epoch`,
//! `twinsite_failover_operation_*`) and for the operator page. Read-only: decisions stay in
//! the engine.

use std::collections::BTreeSet;
use std::sync::Mutex;

use failover::{Engine, OpKind, Operation, SiteStatus, SiteVerdict, Timestamp};
use serde::Serialize;

use super::Controller;
use super::metrics::{OperationJobsLabel, OperationLabel, SiteLabel, SiteStatusLabel};

/// Every value `twinsite_site_status` takes, so a site always has one series at 1 and the
/// others at 0 (an alert on one of them resolves instead of going stale).
pub const SITE_STATUSES: [&str; 5] = [
    "up",
    "suspect",
    "lost",
    "returning",
    "unreachable-without-quorum",
];

/// Finished operations kept in `/metrics` besides the active ones.
const FINISHED_OPERATIONS_EXPORTED: usize = 20;

/// A site as the engine judges it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteHealth {
    pub site: String,
    /// One of [`SITE_STATUSES`].
    pub status: &'static str,
    pub epoch: u64,
    /// Since when the site has been silent (suspect, lost, unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_since: Option<Timestamp>,
}

#[derive(Default)]
pub struct EngineView {
    sites: Mutex<Vec<SiteHealth>>,
    exported_ops: Mutex<BTreeSet<(OperationLabel, Vec<OperationJobsLabel>)>>,
}

fn status_of(status: &SiteStatus, verdict: &SiteVerdict) -> (&'static str, Option<Timestamp>) {
    match (status, verdict) {
        (SiteStatus::Lost { since, .. }, _) => ("lost", Some(*since)),
        (SiteStatus::Returning, _) => ("returning", None),
        (SiteStatus::Up, SiteVerdict::Healthy) => ("up", None),
        (SiteStatus::Up, SiteVerdict::Suspect { since }) => ("suspect", Some(*since)),
        (SiteStatus::Up, SiteVerdict::Lost { since }) => ("suspect", Some(*since)),
        (SiteStatus::Up, SiteVerdict::UnreachableWithoutQuorum { since }) => {
            ("unreachable-without-quorum", Some(*since))
        }
    }
}

/// `site-loss`, `failover`, `failback`.
pub fn op_kind(op: &Operation) -> &'static str {
    match op.kind {
        OpKind::SiteLoss { .. } => "site-loss",
        OpKind::Failover => "failover",
        OpKind::Failback => "failback",
    }
}

impl Controller {
    /// Site health and epochs as of the leader's last pass (empty on a follower).
    pub fn site_health(&self) -> Vec<SiteHealth> {
        self.engine_view
            .sites
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records and exports the engine's view after a pass.
    pub(crate) fn export_engine_view(&self, engine: &Engine, now: Timestamp) {
        let mut sites = Vec::new();
        for id in self.sites.keys() {
            let Some((record, verdict)) = engine.site_health(id, now) else {
                continue;
            };
            let (status, silent_since) = status_of(&record.status, &verdict);
            for value in SITE_STATUSES {
                self.metrics
                    .site_status
                    .get_or_create(&SiteStatusLabel {
                        site: id.0.clone(),
                        status: value.to_string(),
                    })
                    .set(i64::from(value == status));
            }
            self.metrics
                .site_epoch
                .get_or_create(&SiteLabel { site: id.0.clone() })
                .set(i64::try_from(record.epoch).unwrap_or(i64::MAX));
            sites.push(SiteHealth {
                site: id.0.clone(),
                status,
                epoch: record.epoch,
                silent_since,
            });
        }
        *self
            .engine_view
            .sites
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = sites;

        let mut ops: Vec<&Operation> = engine.operations().collect();
        ops.sort_by_key(|o| std::cmp::Reverse(o.id));
        let mut finished = 0;
        let mut exported = BTreeSet::new();
        for op in ops {
            if !op.is_active() {
                finished += 1;
                if finished > FINISHED_OPERATIONS_EXPORTED {
                    continue;
                }
            }
            let label = OperationLabel {
                op: op.id.to_string(),
                kind: op_kind(op).to_string(),
                from: op.from.0.clone(),
                to: op.to.0.clone(),
            };
            self.metrics
                .failover_operation_active
                .get_or_create(&label)
                .set(i64::from(op.is_active()));
            let p = op.progress();
            let mut job_labels = Vec::new();
            for (state, count) in [
                ("pending", p.pending),
                ("in-flight", p.in_flight),
                ("done", p.done),
                ("left", p.left),
                ("failed", p.failed),
                ("not-fitting", p.not_fitting),
            ] {
                let jobs = OperationJobsLabel {
                    op: op.id.to_string(),
                    state: state.to_string(),
                };
                self.metrics
                    .failover_operation_jobs
                    .get_or_create(&jobs)
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                job_labels.push(jobs);
            }
            exported.insert((label, job_labels));
        }
        let mut before = self
            .engine_view
            .exported_ops
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (label, jobs) in before.difference(&exported) {
            self.metrics.failover_operation_active.remove(label);
            for j in jobs {
                self.metrics.failover_operation_jobs.remove(j);
            }
        }
        *before = exported;
    }

    /// A follower exports no engine view: it has no engine.
    pub(crate) fn reset_engine_view(&self) {
        self.engine_view
            .sites
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.metrics.site_status.clear();
        self.metrics.site_epoch.clear();
        self.metrics.failover_operation_active.clear();
        self.metrics.failover_operation_jobs.clear();
        self.engine_view
            .exported_ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
