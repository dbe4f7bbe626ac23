//! The controller as the replication driver sees it (`crate::replication::ReplicationContext`):
//! its store and storage roots; the driver's progress goes to the exposure book, a verified
//! checkpoint to the failover engine's inbox, counts to `twinsite_replication_*`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use scheduler::model::{JobId, SiteId};

use super::Controller;
use super::metrics::SitePairLabel;
use crate::replication::{CopyOutcome, ReplicationContext};
use crate::state::{CheckpointPointer, StateError, StateStore};

#[async_trait::async_trait]
impl ReplicationContext for Controller {
    fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    fn storage_roots(&self) -> &BTreeMap<SiteId, String> {
        &self.storage_roots
    }

    fn backlog(&self, job: &JobId, peer: &SiteId, files: u64, bytes: u64) {
        self.exposure.backlog(job, peer, files, bytes);
    }

    fn file_verified(&self, job: &JobId, peer: &SiteId, bytes: u64) {
        self.exposure.file_verified(job, peer, bytes);
    }

    fn copy_ended(&self, job: &JobId, peer: &SiteId, error: Option<String>) {
        self.exposure.copy_ended(job, peer, error);
    }

    fn checkpoint_replicated(
        &self,
        job: &JobId,
        generation: u64,
        peer: &SiteId,
        pointer: &CheckpointPointer,
    ) {
        if let Some(event) = crate::job::replicated_event(job, generation, &peer.0, pointer) {
            self.failover.notify(event);
        }
    }

    fn count_copy(&self, site: &SiteId, peer: &SiteId, outcome: CopyOutcome) {
        let pair = SitePairLabel {
            site: site.0.clone(),
            peer: peer.0.clone(),
        };
        let metrics = &self.metrics.replication;
        match outcome {
            CopyOutcome::Recorded => metrics.checkpoints_replicated.get_or_create(&pair).inc(),
            CopyOutcome::Failed => metrics.copy_failures.get_or_create(&pair).inc(),
        };
    }

    fn count_round(&self, elapsed: Duration) {
        self.metrics.replication.rounds.inc();
        self.metrics
            .replication
            .round_duration_seconds
            .observe(elapsed.as_secs_f64());
    }

    async fn judge_exposure(&self) -> Result<(), StateError> {
        let report = self.monitor_exposure().await?;
        if !report.transitions.is_empty() {
            tracing::info!(
                tracked = report.tracked,
                breached = report.breached.len(),
                crossed = report.transitions.len(),
                "exposure tick"
            );
        }
        Ok(())
    }
}
