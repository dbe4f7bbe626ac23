//! The controller: sites, state store and policy held together, and the leader-only loop
//! that reconciles them (`reconcile`). The HTTP API (`crate::api`) reads and edits through
//! the same `Controller`.
//!
//! May use: `job`, `site`, `state`, `replication` (it implements its
//! `ReplicationContext`), `agent`, `leader`, `metrics`, `redact` and the crates. Must never:
//! use the doors and views above it (`api`, `kube_jobs`, `diagnosis`, `failover_plan`,
//! `commands`): they call it; or act while it does not lead (every write is fenced).

pub mod exposure;
pub mod failover;
pub mod guard;
pub mod health;
pub mod jars;
pub mod launch;
pub mod metrics;
pub mod rebalance;
pub mod reconcile;
mod replication_context;
pub mod rightsize;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use scheduler::input::{Policy, StreamJob};
use scheduler::model::SiteId;
use tokio_util::sync::CancellationToken;

pub use metrics::ControllerMetrics;
pub use reconcile::PassReport;
pub use status::{JobPhase, JobStatus};

pub use crate::job::{new_record, stream_job_of};

use crate::site::Site;
use crate::state::{Expected, JobRecord, StateError, StateStore};

/// Everything one controller replica holds.
pub struct Controller {
    pub sites: BTreeMap<SiteId, Arc<dyn Site>>,
    pub store: Arc<dyn StateStore>,
    pub policy: Policy,
    pub metrics: Arc<ControllerMetrics>,
    /// Each site's storage root URL (`hdfs://ns-a/`, `file:///data/dc-a`): where its jobs'
    /// checkpoint paths live. A site without one gets the job's checkpoint URI unchanged.
    pub storage_roots: BTreeMap<SiteId, String>,
    /// Node loss, job failure, site loss and ops-triggered failovers (the failover engine).
    pub failover: failover::FailoverDriver,
    /// Hides secret-looking values (built-in patterns and the policy's `redaction.keys`)
    /// from API responses and the audit log.
    pub redactor: crate::redact::Redactor,
    /// Where this controller watches StreamJob objects (config `streamJobs`): the jobs that
    /// came from there are edited through their objects, not the API.
    pub stream_jobs: Option<crate::job::Scope>,
    /// RPO exposure of every replicated job, judged by the leader (`exposure.rs`).
    pub exposure: exposure::ExposureBook,
    /// Site health and operations as the leader's failover engine last saw them.
    pub engine_view: health::EngineView,
    /// The failover engine's quorum: the etcd session, or the configuration's word.
    pub quorum: guard::Quorum,
    /// The agents of guarded sites (`agents.sites`), read once per pass.
    pub agents: Option<guard::Agents>,
    /// Background publications of job jars into every site's storage.
    pub jars: jars::JarPublisher,
    /// Moves off borrowed capacity this leader started (the budget), stuck jobs reported.
    pub rebalance: rebalance::RebalanceBook,
    /// The instant placement, rebalancing and scale profiles judge by: the wall clock, or a
    /// virtual one in simulations that drive the controller through days.
    pub clock: Arc<dyn crate::site::Clock>,
    leading: AtomicBool,
    passes: tokio::sync::watch::Sender<u64>,
    /// Taken by [`Controller::tenant_room`] and held until the admitted write is done.
    admission: tokio::sync::Mutex<()>,
}

/// Room for one job under its tenant, held from the check to the write that uses it: while
/// it lives no other admission checks. Only the leader's writes reach the store (a
/// follower's are refused), so one lock per process makes the bound exact.
#[must_use = "hold it until the job is written"]
pub struct Admission<'a> {
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl Controller {
    pub fn new(
        sites: BTreeMap<SiteId, Arc<dyn Site>>,
        store: Arc<dyn StateStore>,
        policy: Policy,
    ) -> Controller {
        let site_ids: Vec<SiteId> = sites.keys().cloned().collect();
        let metrics = Arc::new(ControllerMetrics::new());
        metrics.init_sites(&site_ids.iter().map(|s| s.0.clone()).collect::<Vec<_>>());
        Controller {
            sites,
            store,
            redactor: crate::redact::Redactor::new(policy.redaction_keys()),
            policy,
            metrics,
            storage_roots: BTreeMap::new(),
            failover: failover::FailoverDriver::new(::failover::EngineConfig::new(site_ids), true),
            stream_jobs: None,
            exposure: exposure::ExposureBook::default(),
            engine_view: health::EngineView::default(),
            quorum: guard::Quorum::Fixed(true),
            agents: None,
            jars: jars::JarPublisher::default(),
            rebalance: rebalance::RebalanceBook::default(),
            clock: Arc::new(crate::site::SystemClock),
            leading: AtomicBool::new(false),
            passes: tokio::sync::watch::channel(0).0,
            admission: tokio::sync::Mutex::new(()),
        }
    }

    pub fn with_storage_roots(mut self, roots: BTreeMap<SiteId, String>) -> Controller {
        self.metrics
            .init_replication_pairs(&roots.keys().map(|s| s.0.clone()).collect::<Vec<_>>());
        self.storage_roots = roots;
        self
    }

    /// Judge placement, rebalancing and scale profiles by `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Arc<dyn crate::site::Clock>) -> Controller {
        self.clock = clock;
        self
    }

    /// The cluster (and namespace) whose StreamJob objects this controller watches.
    pub fn with_stream_jobs(mut self, scope: crate::job::Scope) -> Controller {
        self.stream_jobs = Some(scope);
        self
    }

    /// Replaces the failover engine's settings (graces, bounds); `enabled: false` leaves
    /// every failure to the reconcile pass's in-site relaunch and never fails a site over.
    pub fn with_failover(mut self, config: ::failover::EngineConfig, enabled: bool) -> Controller {
        self.failover = failover::FailoverDriver::new(config, enabled);
        self
    }

    /// Where the failover engine's quorum comes from (default: always held, as for
    /// simulated sites on the embedded store).
    pub fn with_quorum(mut self, quorum: guard::Quorum) -> Controller {
        self.quorum = quorum;
        self
    }

    /// Reads the agents of guarded sites: their leases are those sites' peer view, and a
    /// guarded site without a live lease is not observed.
    pub fn with_agents(mut self, agents: guard::Agents) -> Controller {
        self.agents = Some(agents);
        self
    }

    /// True while this replica leads and its reconcile loop acts.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    pub fn set_leading(&self, leading: bool) {
        if !leading {
            // Whatever the engine believed is now the next leader's to resume from the store.
            self.failover.reset();
            self.reset_exposure();
            self.reset_engine_view();
        }
        self.leading.store(leading, Ordering::SeqCst);
        self.metrics.leader.set(i64::from(leading));
    }

    /// Completed reconcile passes; `/readyz` waits for the first, tests wait on it.
    pub fn passes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.passes.subscribe()
    }

    /// Reconciles until `stop` fires or a state write is fenced (`Err`: leadership is gone
    /// and the caller must stop acting). A pass starts every `interval`, or sooner when a
    /// site reports a change or `wake` is notified (an API edit).
    pub async fn reconcile_loop(
        &self,
        interval: Duration,
        wake: Arc<tokio::sync::Notify>,
        stop: CancellationToken,
    ) -> Result<(), StateError> {
        let mut changes: Vec<_> = self.sites.values().map(|s| s.changes()).collect();
        let answers = self.failover.answers_waiting();
        let jars_published = Arc::clone(&self.jars.finished);
        loop {
            match self.reconcile_once().await {
                Ok(report) => {
                    self.passes.send_modify(|n| *n += 1);
                    if !report.launched.is_empty()
                        || !report.stopped.is_empty()
                        || report.conflicts > 0
                    {
                        tracing::info!(
                            jobs = report.jobs,
                            launched = report.launched.len(),
                            stopped = report.stopped.len(),
                            unplaced = report.unplaced.len(),
                            checkpoints = report.checkpoints_recorded,
                            conflicts = report.conflicts,
                            elapsed_ms = report.elapsed.as_millis() as u64,
                            "reconcile pass"
                        );
                    } else {
                        tracing::debug!(
                            elapsed_ms = report.elapsed.as_millis() as u64,
                            "reconcile pass: no change"
                        );
                    }
                }
                Err(error @ (StateError::NotLeader { .. } | StateError::Fenced { .. })) => {
                    self.metrics.reconcile_failures.inc();
                    return Err(error);
                }
                Err(error) => {
                    // Unavailable, conflicts outside CAS, corrupt records: log and retry after
                    // the interval; never half-act on a state we could not read.
                    self.metrics.reconcile_failures.inc();
                    tracing::warn!(%error, "reconcile pass failed; retrying");
                }
            }
            // Wait for the interval, a site change, an API edit, or shutdown.
            let site_changed = async {
                if changes.is_empty() {
                    return std::future::pending::<()>().await;
                }
                let futures = changes.iter_mut().map(|c| Box::pin(c.changed()));
                let _ = futures::future::select_all(futures).await;
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
                () = wake.notified() => {}
                () = answers.notified() => {}
                () = jars_published.notified() => {}
                () = site_changed => {
                    // Coalesce a burst of changes (a ticking site reports many) into one pass.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Creates the jobs of `jobs` that the store lacks; returns how many were created.
    /// Jobs already stored are left alone: the store, not a seed file, is the truth.
    pub async fn seed_jobs(&self, jobs: &[StreamJob], actor: &str) -> Result<usize, StateError> {
        let mut created = 0;
        for job in jobs {
            let record = new_record(job);
            match self.store.put_job(&record, Expected::Absent).await {
                Ok(_) => {
                    created += 1;
                    self.audit_as(actor, "create", &job.id().0, "ok: seeded")
                        .await;
                }
                Err(StateError::Conflict { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(created)
    }

    /// Whether the store has room for `job` under its tenant: at most
    /// [`scheduler::limits::MAX_JOBS_PER_TENANT`] jobs per tenant, counting `job` and not a
    /// stored job of the same name (which `job` replaces). A job record that does not decode
    /// counts for the tenant its namespace names (its spec's tenant is unknown). `Ok(Ok)`
    /// holds the admission turn: keep it until the job is written, so that two admissions
    /// never both take the last slot. `Err` (the reason, naming the field the tenant comes
    /// from) when there is no room.
    pub async fn tenant_room(
        &self,
        job: &StreamJob,
    ) -> Result<Result<Admission<'_>, String>, StateError> {
        let turn = self.admission.lock().await;
        let tenant = job.tenant();
        let id = job.id();
        let scan = self.store.scan_jobs().await?;
        let readable = scan.jobs.iter().map(|r| {
            let record = &r.value;
            (
                crate::job::stored_tenant(record),
                record.namespace.as_str(),
                record.name.as_str(),
            )
        });
        let unreadable = scan
            .unreadable
            .iter()
            .filter_map(|u| u.job.as_ref())
            .map(|(namespace, name)| (namespace.as_str(), namespace.as_str(), name.as_str()));
        let others = readable
            .chain(unreadable)
            .filter(|(stored_tenant, namespace, name)| {
                *stored_tenant == tenant.0 && scheduler::model::JobId::new(namespace, name) != id
            })
            .count();
        let max = scheduler::limits::MAX_JOBS_PER_TENANT;
        if others < max {
            return Ok(Ok(Admission { _turn: turn }));
        }
        Ok(Err(format!(
            "{}: tenant {:?} already has {others} jobs, the most one tenant may have ({max}); delete one first",
            job.tenant_field(),
            tenant.0
        )))
    }

    /// The admission turn without a check of its own: for a caller that counts tenants
    /// itself over many jobs at once (the StreamJob watch's round) and writes them while it
    /// holds the turn, so its count and the API's never interleave.
    pub async fn admission_turn(&self) -> Admission<'_> {
        Admission {
            _turn: self.admission.lock().await,
        }
    }

    /// The API's answer to an edit of a job this controller's StreamJob watch owns:
    /// `Some(owner)` when the job came from a StreamJob object of the watched cluster (edit
    /// or delete that object). Jobs marked with a cluster this controller does not watch are
    /// the API's to edit.
    pub fn watch_owner(&self, record: &JobRecord) -> Option<String> {
        let scope = self.stream_jobs.as_ref()?;
        scope.owns(record).then(|| {
            format!(
                "the StreamJob object {}/{} in site {}'s cluster",
                record.namespace, record.name, scope.home
            )
        })
    }

    /// Appends an audit entry by `actor`; failures are logged, not fatal. Secret-looking
    /// values in `target` and `result` (e.g. echoed by a parse error) are redacted first.
    pub async fn audit_as(&self, actor: &str, action: &str, target: &str, result: &str) {
        let entry = self.audit_entry(actor, action, target, result);
        if let Err(error) = self.store.append_audit(&entry).await {
            tracing::warn!(%error, action, target, "audit append failed");
        }
    }

    /// [`Controller::audit_as`] for many `(action, target, result)` at once, in one append.
    pub async fn audit_all_as(&self, actor: &str, entries: &[(&str, String, String)]) {
        if entries.is_empty() {
            return;
        }
        let entries: Vec<_> = entries
            .iter()
            .map(|(action, target, result)| self.audit_entry(actor, action, target, result))
            .collect();
        if let Err(error) = self.store.append_audits(&entries).await {
            tracing::warn!(%error, actor, entries = entries.len(), "audit append failed");
        }
    }

    fn audit_entry(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        result: &str,
    ) -> crate::state::AuditEntry {
        crate::state::AuditEntry {
            actor: actor.into(),
            action: action.into(),
            target: self.redactor.redact_text(target),
            at_unix_ms: chrono::Utc::now().timestamp_millis(),
            result: self
                .redactor
                .redact_text_keeping(result, &[target.rsplit('/').next().unwrap_or(target)]),
        }
    }
}
