//! StreamJobs in kubectl: the controller's second door to its job store. `StreamJob` objects
//! in one configured cluster (the *home* site's, config `streamJobs`) are watched, admitted
//! with the rules the HTTP API applies, and written to the same store the API writes; each
//! object's `.status` is written back with server-side apply. See `src/kube_jobs/README.md`.
//!
//! Three pure parts and a thin driver:
//! - [`admit`]: an object (untyped JSON) to the job the store keeps, or why not;
//! - [`plan`]: the store writes that make the store hold exactly the objects' jobs;
//! - [`publish`]: the status each object should show, and whether it is worth a write;
//! - [`StreamJobWatch`]: a kube-rs reflector on the objects (untyped, so one bad object is
//!   refused alone), a leader-only sync round that executes the plan and the status writes.
//!
//! May use: the controller (its store, policy, leadership, admission turn), `crd`, `job`,
//! `state` and kube. Must never: be used by the controller (which knows only the watch's
//! `job::Scope`, to answer `Controller::watch_owner` for the API), or write a job the
//! admission rules refuse.

pub mod admit;
pub mod plan;
pub mod publish;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use scheduler::model::SiteId;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use admit::{ClusterObject, ORIGIN_ANNOTATION, origin, origin_of};
pub use plan::{Scope, StoreWrite, SyncPlan, plan_sync};
pub use publish::{desired_status, needs_write};

use crate::controller::Controller;
use crate::crd::StreamJobStatus;
use crate::state::{Expected, JobRecord, StateError};

/// The field manager of every status write (the one the Kubernetes site applies with).
pub const FIELD_MANAGER: &str = "twinsite";

/// Where StreamJobs live and how often their status is refreshed (config `streamJobs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamJobWatchConfig {
    pub scope: Scope,
    /// Longest wait between two sync rounds (a full comparison of objects, store and
    /// statuses); an object change starts one sooner.
    pub status_interval: Duration,
    /// A status whose only change is a newer checkpoint is written once the published one
    /// is this much older (see [`publish`]).
    pub checkpoint_status_interval: Duration,
    /// Store operations at once in a round (job writes, checkpoint-pointer reads): on etcd
    /// each waits a network round trip.
    pub store_concurrency: usize,
}

impl StreamJobWatchConfig {
    pub fn new(home: SiteId) -> Self {
        StreamJobWatchConfig {
            scope: Scope {
                home,
                namespace: None,
            },
            status_interval: Duration::from_secs(10),
            checkpoint_status_interval: Duration::from_secs(120),
            store_concurrency: 16,
        }
    }
}

/// What one sync round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// `false`: this replica does not lead; nothing was compared or written.
    pub leading: bool,
    /// `false`: the first complete list of objects has not arrived yet; nothing was done.
    pub listed: bool,
    pub objects: usize,
    pub created: usize,
    pub updated: usize,
    pub adopted: usize,
    pub deleted: usize,
    /// Objects whose spec was refused (their status says why).
    pub refused: usize,
    /// Store writes that lost a compare-and-set (an API edit in between): retried next round.
    pub conflicts: usize,
    pub statuses_written: usize,
    /// Status writes the API server refused or did not answer: retried next round.
    pub status_failures: usize,
    /// Store writes or reads of one job that failed for a reason of that job alone (a name
    /// the store refuses, a corrupt pointer): logged, the other jobs synced, retried next round.
    pub job_failures: usize,
    /// Writes computed but not made because leadership was lost during the round.
    pub dropped_not_leading: usize,
}

impl SyncReport {
    fn changed_anything(&self) -> bool {
        self.created + self.updated + self.deleted + self.statuses_written + self.refused > 0
    }
}

/// Totals over the watch's life, for logs and tests.
#[derive(Debug, Default)]
pub struct WatchCounters {
    pub rounds: AtomicU64,
    pub statuses_written: AtomicU64,
    pub status_failures: AtomicU64,
    pub dropped_not_leading: AtomicU64,
}

/// The watch on one cluster's StreamJob objects and the writer of their status.
pub struct StreamJobWatch {
    controller: Arc<Controller>,
    config: StreamJobWatchConfig,
    client: Client,
    resource: ApiResource,
    objects: Store<DynamicObject>,
    changes: watch::Sender<u64>,
    wake: Arc<Notify>,
    pub counters: WatchCounters,
}

impl std::fmt::Debug for StreamJobWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamJobWatch")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl StreamJobWatch {
    /// The watch, and the future that runs its reflector: spawn it. `wake` is the reconcile
    /// loop's: a round that changed the store wakes it, so `kubectl apply` launches at once.
    pub fn new(
        client: Client,
        controller: Arc<Controller>,
        config: StreamJobWatchConfig,
        wake: Arc<Notify>,
    ) -> (Arc<StreamJobWatch>, BoxFuture<'static, ()>) {
        let resource = ApiResource::erase::<crate::crd::StreamJob>(&());
        let api: Api<DynamicObject> = match &config.scope.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        let objects = writer.as_reader();
        let (changes, _) = watch::channel(0u64);
        let notify = changes.clone();
        let site = config.scope.home.clone();
        let run = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(|object| {
                    // Neither is part of the job, and both can be large.
                    object.managed_fields_mut().clear();
                    object
                        .annotations_mut()
                        .remove("kubectl.kubernetes.io/last-applied-configuration");
                }),
        )
        .for_each(move |event| {
            match event {
                Ok(_) => {
                    notify.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(error) => {
                    tracing::warn!(site = %site, %error, "StreamJob watch failed; retrying with backoff (a relist replaces the objects only once complete)");
                }
            }
            futures::future::ready(())
        })
        .boxed();
        let watch = Arc::new(StreamJobWatch {
            controller,
            config,
            client,
            resource,
            objects,
            changes,
            wake,
            counters: WatchCounters::default(),
        });
        (watch, run)
    }

    pub fn config(&self) -> &StreamJobWatchConfig {
        &self.config
    }

    /// Whether the first complete list of objects has arrived.
    pub fn listed(&self) -> bool {
        self.objects.wait_until_ready().now_or_never().is_some()
    }

    /// Objects the reflector holds now: a complete list, or (before the first) none.
    pub fn objects(&self) -> Vec<ClusterObject> {
        self.objects
            .state()
            .iter()
            .filter_map(|object| serde_json::to_value(&**object).ok())
            .filter_map(ClusterObject::from_value)
            .collect()
    }

    /// Runs sync rounds until `stop`: after an object change (coalesced for 200 ms), and at
    /// least every `status_interval`. Rounds on a replica that does not lead do nothing.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut changes = self.changes.subscribe();
        loop {
            match self.sync_once().await {
                Ok(report) if report.changed_anything() => {
                    tracing::info!(site = %self.config.scope.home, ?report, "StreamJob sync");
                }
                Ok(_) => {}
                Err(error) if error.is_leadership_lost() => {
                    tracing::debug!(%error, "StreamJob sync stopped: not leading");
                }
                Err(error) => tracing::warn!(%error, "StreamJob sync failed; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.config.status_interval) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The reflector is gone: only the interval is left.
                        tokio::time::sleep(self.config.status_interval).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }

    /// One round, on the leader only: the store made to hold exactly the admitted objects'
    /// jobs, then every object's status brought up to date. A store write that loses a race
    /// is retried next round; a lost leadership ends the round (`Err`).
    pub async fn sync_once(&self) -> Result<SyncReport, StateError> {
        let started = Instant::now();
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        let mut report = SyncReport {
            leading: self.controller.is_leading(),
            ..SyncReport::default()
        };
        if !report.leading {
            return Ok(report);
        }
        if !self.listed() {
            return Ok(report);
        }
        report.listed = true;
        let objects = self.objects();
        report.objects = objects.len();
        // The API's admission turn from the count of tenants' jobs to the last write: the
        // per-tenant bound holds across both doors.
        let turn = self.controller.admission_turn().await;
        let scan = self.controller.store.scan_jobs().await?;
        let records = scan.jobs;
        let plan = plan_sync(
            &objects,
            &records,
            &scan.unreadable,
            &self.config.scope,
            &self.controller.policy,
        );
        report.refused = plan.refused.len();
        let wrote = self.apply(plan.writes, &mut report).await?;
        drop(turn);
        if wrote {
            self.wake.notify_one();
        }
        let records = if wrote {
            self.controller.store.list_jobs().await?
        } else {
            records
        };
        self.publish(&objects, &records, &plan.refused, &mut report)
            .await?;
        self.counters
            .statuses_written
            .fetch_add(report.statuses_written as u64, Ordering::Relaxed);
        self.counters
            .status_failures
            .fetch_add(report.status_failures as u64, Ordering::Relaxed);
        self.counters
            .dropped_not_leading
            .fetch_add(report.dropped_not_leading as u64, Ordering::Relaxed);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            ?report,
            "StreamJob sync round"
        );
        Ok(report)
    }

    fn actor(&self) -> String {
        format!("streamjobs@{}", self.config.scope.home)
    }

    /// Executes the store writes, `store_concurrency` at once (they name distinct jobs, each
    /// compare-and-set), then audits those made in one append; `Ok(true)` when any was made.
    /// A write that would start after leadership is lost is not made.
    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        report: &mut SyncReport,
    ) -> Result<bool, StateError> {
        let attempts: Vec<Option<Attempt>> = futures::stream::iter(writes)
            .map(|write| self.write_one(write))
            .buffer_unordered(self.config.store_concurrency.max(1))
            .collect()
            .await;
        let mut made = Vec::new();
        let mut fatal = None;
        for attempt in attempts {
            let Some(attempt) = attempt else {
                report.dropped_not_leading += 1;
                continue;
            };
            match attempt.result {
                Ok(()) => {
                    match attempt.action {
                        "create" => report.created += 1,
                        "delete" => report.deleted += 1,
                        "adopt" => {
                            report.adopted += 1;
                            report.updated += 1;
                        }
                        _ => report.updated += 1,
                    }
                    made.push((attempt.action, attempt.target, attempt.note));
                }
                Err(StateError::Conflict { .. }) => {
                    // Someone wrote the job since the round read it: read again next round.
                    report.conflicts += 1;
                }
                Err(error) if ends_round(&error) => fatal = fatal.or(Some(error)),
                Err(error) => {
                    tracing::warn!(job = %attempt.target, %error, "StreamJob sync: store write failed; the other jobs go on, retried next round");
                    report.job_failures += 1;
                }
            }
        }
        // What was written is audited even when the round ends on another write's failure.
        self.controller.audit_all_as(&self.actor(), &made).await;
        match fatal {
            Some(error) => Err(error),
            None => Ok(!made.is_empty()),
        }
    }

    /// One store write, or `None` when this replica no longer leads.
    async fn write_one(&self, write: StoreWrite) -> Option<Attempt> {
        if !self.controller.is_leading() {
            return None;
        }
        let store = &self.controller.store;
        let target = write.target();
        let (action, result, note) = match write {
            StoreWrite::Create { record } => (
                "create",
                store.put_job(&record, Expected::Absent).await.map(drop),
                "ok: from its StreamJob object".to_owned(),
            ),
            StoreWrite::Update {
                record,
                revision,
                adopted_from,
            } => {
                let result = store.put_job(&record, Expected::Revision(revision)).await;
                match adopted_from {
                    Some(from) => (
                        "adopt",
                        result.map(drop),
                        format!("ok: adopted from {from} by its StreamJob object"),
                    ),
                    None => (
                        "replace",
                        result.map(drop),
                        "ok: its StreamJob object changed".to_owned(),
                    ),
                }
            }
            StoreWrite::Delete {
                namespace,
                name,
                revision,
            } => (
                "delete",
                store
                    .delete_job(&namespace, &name, Expected::Revision(revision))
                    .await
                    .map(drop),
                "ok: its StreamJob object is gone".to_owned(),
            ),
        };
        Some(Attempt {
            action,
            target,
            note,
            result,
        })
    }

    /// Brings every object's status up to date (only what changed is written).
    async fn publish(
        &self,
        objects: &[ClusterObject],
        records: &[crate::state::Versioned<JobRecord>],
        refused: &std::collections::BTreeMap<(String, String), String>,
        report: &mut SyncReport,
    ) -> Result<(), StateError> {
        let by_key: HashMap<(&str, &str), &JobRecord> = records
            .iter()
            .map(|r| {
                (
                    (r.value.namespace.as_str(), r.value.name.as_str()),
                    &r.value,
                )
            })
            .collect();
        let pending: Vec<_> = objects
            .iter()
            .map(|object| {
                let record = by_key
                    .get(&(object.namespace.as_str(), object.name.as_str()))
                    .copied()
                    .filter(|r| self.config.scope.owns(r));
                let refusal = refused.get(&object.key()).map(String::as_str);
                self.publish_one(object, record, refusal)
            })
            .collect();
        let outcomes: Vec<_> = futures::stream::iter(pending)
            .buffer_unordered(self.config.store_concurrency.max(1))
            .collect()
            .await;
        for outcome in outcomes {
            match outcome? {
                Outcome::Nothing => {}
                Outcome::Written => report.statuses_written += 1,
                Outcome::Failed => report.status_failures += 1,
                Outcome::JobFailed => report.job_failures += 1,
                Outcome::Dropped => report.dropped_not_leading += 1,
            }
        }
        Ok(())
    }

    /// The status of one object, written when it is worth a write.
    async fn publish_one(
        &self,
        object: &ClusterObject,
        record: Option<&JobRecord>,
        refusal: Option<&str>,
    ) -> Result<Outcome, StateError> {
        let checkpoints = match record {
            Some(record) => match self
                .controller
                .store
                .list_checkpoints(&record.namespace, &record.name)
                .await
            {
                Ok(checkpoints) => checkpoints,
                Err(error) if ends_round(&error) => return Err(error),
                Err(error) => {
                    tracing::warn!(job = %format!("{}/{}", record.namespace, record.name), %error, "StreamJob status: checkpoint pointers unreadable; retried next round");
                    return Ok(Outcome::JobFailed);
                }
            },
            None => Vec::new(),
        };
        let Some(desired) = desired_status(record, &checkpoints, object.generation, refusal) else {
            return Ok(Outcome::Nothing);
        };
        let published = object
            .status()
            .and_then(|s| serde_json::from_value::<StreamJobStatus>(s.clone()).ok());
        if !needs_write(
            published.as_ref(),
            &desired,
            self.config.checkpoint_status_interval,
        ) {
            return Ok(Outcome::Nothing);
        }
        // Computed by every round, written only while leading (checked at write time).
        if !self.controller.is_leading() {
            return Ok(Outcome::Dropped);
        }
        Ok(match self.write_status(object, &desired).await {
            Ok(()) => {
                if let Some(reason) = refusal {
                    // Whole here (the status message is bounded), once per change of status.
                    tracing::warn!(object = %format!("{}/{}", object.namespace, object.name), %reason, "StreamJob spec refused");
                }
                Outcome::Written
            }
            Err(error) => {
                tracing::warn!(object = %format!("{}/{}", object.namespace, object.name), %error, "StreamJob status write failed; retried next round");
                Outcome::Failed
            }
        })
    }

    /// Server-side apply of `status` on the object's status subresource, as field manager
    /// `twinsite`, forced: the controller is the only writer of a StreamJob's status, and a
    /// field someone else set there (`kubectl edit --subresource=status`) is taken back.
    async fn write_status(
        &self,
        object: &ClusterObject,
        status: &StreamJobStatus,
    ) -> Result<(), kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &object.namespace, &self.resource);
        let body = json!({
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "metadata": {"name": object.name, "namespace": object.namespace},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&object.name, &params, &Patch::Apply(&body))
            .await
            .map(drop)
    }
}

/// One store write made (or tried) by a round.
struct Attempt {
    action: &'static str,
    target: String,
    note: String,
    result: Result<(), StateError>,
}

enum Outcome {
    Nothing,
    Written,
    Failed,
    JobFailed,
    Dropped,
}

/// Errors that concern the whole store (or this replica's right to write), not one job: the
/// round stops. Any other error is one job's, and the round goes on without it.
fn ends_round(error: &StateError) -> bool {
    error.is_leadership_lost()
        || matches!(
            error,
            StateError::Unavailable { .. } | StateError::Io { .. } | StateError::Locked { .. }
        )
}
