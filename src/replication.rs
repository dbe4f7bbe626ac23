//! Checkpoint replication inside the controller: every round, each placed job's checkpoints
//! are copied from its site's storage to every other site's (hdfs-sync, verified, rewritten
//! to the peer's URIs), and the newest checkpoint verified at a peer is recorded in the state
//! store as that job's `replicated` pointer for the peer: what a failover restores from.
//!
//! Which checkpoints exist at a peer is kept in one ledger file per direction
//! (`<dataDir>/replication/<from>-to-<to>.json`); the store only holds the newest pointer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hdfs_sync::{FileLedger, ReplicationLedger, Replicator, SyncError, SyncOptions};
use scheduler::model::{JobId, SiteId};

use crate::controller::launch::in_site_storage;
use crate::controller::{Controller, stream_job_of};
use crate::site::flink_job_id;
use crate::state::{CheckpointKind, CheckpointPointer, StateError};

/// What a round did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicationRound {
    /// Pointers newly recorded: job, peer site, checkpoint id.
    pub recorded: Vec<(JobId, SiteId, u64)>,
    /// Jobs whose copy failed this round, with the reason; retried next round.
    pub failed: Vec<(JobId, SiteId, String)>,
}

pub struct ReplicationDriver {
    controller: Arc<Controller>,
    ledgers: BTreeMap<(SiteId, SiteId), Arc<FileLedger>>,
    options: SyncOptions,
    /// Jobs copied at once; each copy is itself parallel over files.
    concurrency: usize,
}

impl ReplicationDriver {
    /// Opens a ledger per ordered pair of sites with a storage root under `ledger_dir`.
    pub async fn open(
        controller: Arc<Controller>,
        ledger_dir: PathBuf,
        bandwidth: Option<u64>,
        concurrency: usize,
    ) -> Result<ReplicationDriver, SyncError> {
        let mut ledgers = BTreeMap::new();
        let sites: Vec<SiteId> = controller.storage_roots.keys().cloned().collect();
        for from in &sites {
            for to in sites.iter().filter(|s| *s != from) {
                let path = ledger_dir.join(format!("{from}-to-{to}.json"));
                ledgers.insert(
                    (from.clone(), to.clone()),
                    Arc::new(FileLedger::open(path).await?),
                );
            }
        }
        let options = SyncOptions {
            once: true,
            bandwidth,
            ..SyncOptions::default()
        };
        Ok(ReplicationDriver {
            controller,
            ledgers,
            options,
            concurrency: concurrency.max(1),
        })
    }

    /// One round over every placed job. Fails only on state-store errors (fencing: stop).
    pub async fn round(&self) -> Result<ReplicationRound, StateError> {
        let records = self.controller.store.list_jobs().await?;
        let mut work = Vec::new();
        for record in records {
            let Some(placement) = &record.value.placement else {
                continue;
            };
            let Ok(job) = stream_job_of(&record.value) else {
                continue;
            };
            let Some(checkpoints) = &job.spec.checkpoints else {
                continue;
            };
            let from_site = SiteId(placement.site.clone());
            let Some(from_root) = self.controller.storage_roots.get(&from_site) else {
                continue;
            };
            let id = job.id();
            let flink_id = flink_job_id(&id, record.value.generation);
            for ((from, to), ledger) in &self.ledgers {
                if from != &from_site {
                    continue;
                }
                let Some(to_root) = self.controller.storage_roots.get(to) else {
                    continue;
                };
                work.push(Copy {
                    job: id.clone(),
                    namespace: record.value.namespace.clone(),
                    name: record.value.name.clone(),
                    flink_id: flink_id.clone(),
                    peer: to.clone(),
                    from: in_site_storage(from_root, &checkpoints.dir),
                    to: in_site_storage(to_root, &checkpoints.dir),
                    ledger: Arc::clone(ledger),
                });
            }
        }
        let outcomes: Vec<(Copy, Result<Option<u64>, String>)> = futures::stream::iter(work)
            .map(|copy| async move {
                let result = self.copy(&copy).await;
                (copy, result)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;

        let mut round = ReplicationRound::default();
        for (copy, result) in outcomes {
            match result {
                Ok(None) => {}
                Ok(Some(_)) => {
                    if let Some(id) = self.record_latest(&copy).await? {
                        round
                            .recorded
                            .push((copy.job.clone(), copy.peer.clone(), id));
                    }
                }
                Err(reason) => {
                    tracing::warn!(job = %copy.job, peer = %copy.peer, %reason, "replication failed; retried next round");
                    round.failed.push((copy.job, copy.peer, reason));
                }
            }
        }
        Ok(round)
    }

    /// Copies one job's newest checkpoint to one peer; `Some` when the ledger has one there.
    async fn copy(&self, copy: &Copy) -> Result<Option<u64>, String> {
        let mut options = self.options.clone();
        options.jobs = Some(vec![copy.flink_id.clone()]);
        let replicator = Replicator::from_urls(
            &copy.from,
            &copy.to,
            Arc::clone(&copy.ledger) as Arc<dyn ReplicationLedger>,
            options,
        )
        .map_err(|e| e.to_string())?;
        let report = replicator.run_once().await.map_err(|e| e.to_string())?;
        if let Some(hdfs_sync::JobOutcome::Failed { error, .. }) = report.jobs.get(&copy.flink_id) {
            return Err(error.clone());
        }
        Ok(copy
            .ledger
            .latest_replicated(&copy.flink_id)
            .await
            .map_err(|e| e.to_string())?
            .map(|c| c.checkpoint_id))
    }

    /// Stores the ledger's newest checkpoint as the job's replicated pointer for the peer,
    /// when it is newer than the stored one; returns its id when written.
    async fn record_latest(&self, copy: &Copy) -> Result<Option<u64>, StateError> {
        let Ok(Some(latest)) = copy.ledger.latest_replicated(&copy.flink_id).await else {
            return Ok(None);
        };
        let stored = self
            .controller
            .store
            .get_checkpoint(
                &copy.namespace,
                &copy.name,
                CheckpointKind::Replicated,
                &copy.peer.0,
            )
            .await?;
        if stored.is_some_and(|s| {
            s.value.uri == latest.peer_pointer && s.value.checkpoint_id == latest.checkpoint_id
        }) {
            return Ok(None);
        }
        self.controller
            .store
            .put_checkpoint(
                &copy.namespace,
                &copy.name,
                CheckpointKind::Replicated,
                &copy.peer.0,
                &CheckpointPointer {
                    checkpoint_id: latest.checkpoint_id,
                    uri: latest.peer_pointer.clone(),
                    // When the checkpoint completed at its source: its age is the RPO of a
                    // failover that restores it.
                    recorded_at_unix_ms: (latest.source_completed_at.unwrap_or(latest.recorded_at)
                        * 1000.0) as i64,
                },
            )
            .await?;
        Ok(Some(latest.checkpoint_id))
    }

    /// Rounds every `interval` until `stop`; a fenced write ends it with the error.
    pub async fn run(
        &self,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), StateError> {
        loop {
            match self.round().await {
                Ok(round) if !round.recorded.is_empty() || !round.failed.is_empty() => {
                    tracing::info!(
                        recorded = round.recorded.len(),
                        failed = round.failed.len(),
                        "replication round"
                    );
                }
                Ok(_) => {}
                Err(error @ (StateError::NotLeader { .. } | StateError::Fenced { .. })) => {
                    return Err(error);
                }
                Err(error) => tracing::warn!(%error, "replication round failed; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

struct Copy {
    job: JobId,
    namespace: String,
    name: String,
    flink_id: String,
    peer: SiteId,
    from: String,
    to: String,
    ledger: Arc<FileLedger>,
}
