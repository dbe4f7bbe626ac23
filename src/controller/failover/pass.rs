//! The controller's calls into the failover driver: the failover part of a pass (what it
//! observed, `observations`), ops requests and dry runs, the driver's resumption by a new
//! leader, and the relaunches and savepoint targets the effects use.

use super::effects::ControllerEffects;
use super::*;

impl Controller {
    /// The failover part of a pass: the driver feeds the engine what the pass observed and
    /// executes what it decides. Returns the generations it launched when it acted on a
    /// site (the pass then re-reads the jobs). Fails only on store errors.
    pub(crate) async fn drive_failover(
        &self,
        records: &[Versioned<JobRecord>],
        observed: &Observed<'_>,
        read_at: tokio::time::Instant,
    ) -> Result<Option<Vec<(JobId, u64)>>, StateError> {
        if !self.failover.enabled() {
            return Ok(None);
        }
        let now = chrono::Utc::now();
        let mut guard = self.failover.live.lock().await;
        if guard
            .as_ref()
            .is_some_and(|l| l.term != self.failover.term())
        {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.resume_driver(records, now).await?);
        }
        let Some(live) = guard.as_mut() else {
            return Ok(None);
        };
        let placer = self.placer(records, observed, now);
        let mut events = std::mem::take(&mut live.resumed);
        events.append(&mut lock(&self.failover.inbox));
        let retries = {
            let mut background = lock(&self.failover.shared);
            events.append(&mut background.answers);
            std::mem::take(&mut background.retries)
        };
        let input = PassInput {
            // On etcd: the session of this leadership is healthy and the pass's read of the
            // store (linearizable, through the quorum) came within its TTL.
            quorum: self.quorum.holds(read_at),
            jobs: Some(stored_jobs(records)),
            sites: observations(records, observed, now),
            peers: self.peer_views().await,
            events,
            retries,
        };
        let effects = ControllerEffects {
            controller: self,
            now,
        };
        let outcome = live.driver.pass(&effects, &placer, input, now).await?;
        if outcome.cut_short > 0 {
            tracing::error!(
                left = outcome.cut_short,
                "failover engine issued too many commands in one pass; the rest wait for the next"
            );
        }
        self.refresh_busy(live.driver.engine());
        self.export_engine_view(live.driver.engine(), now);
        self.failover.wake_at(outcome.next_launch_at, now);
        Ok(outcome.acted.then_some(outcome.launched))
    }

    /// Hands an ops request to the engine and executes what it answers. Only the leader can,
    /// and only once its first pass rebuilt the engine.
    pub async fn failover_request(
        &self,
        request: OpsRequest,
    ) -> Result<RequestOutcome, DriverError> {
        if !self.is_leading() || !self.failover.enabled() {
            return Err(DriverError::NotLeading);
        }
        let now = chrono::Utc::now();
        let mut snapshots = BTreeMap::new();
        for (id, site) in &self.sites {
            if let Ok(snapshot) = site.snapshot().await {
                snapshots.insert(id.clone(), snapshot);
            }
        }
        let mut guard = self.failover.live.lock().await;
        let Some(live) = guard.as_mut().filter(|l| l.term == self.failover.term()) else {
            return Err(DriverError::NotLeading);
        };
        // Read with the driver held: a generation the reconcile pass was granted is in the
        // records by now, and the engine adopts it before it decides anything.
        let records = self.store.list_jobs().await?;
        let observed = Observed {
            snapshots: snapshots.iter().map(|(k, v)| (k.clone(), v)).collect(),
            jobs: BTreeMap::new(),
        };
        let placer = self.placer(&records, &observed, now);
        let effects = ControllerEffects {
            controller: self,
            now,
        };
        let outcome = live
            .driver
            .request(&effects, &placer, Some(stored_jobs(&records)), request, now)
            .await?;
        self.refresh_busy(live.driver.engine());
        self.failover.wake_at(outcome.next_launch_at, now);
        if let Some(error) = outcome.rejected {
            return Ok(RequestOutcome::Rejected(error));
        }
        if let Some(plan) = outcome.plan {
            return Ok(RequestOutcome::Plan(Box::new(plan)));
        }
        match outcome.accepted.and_then(|op| live.driver.engine().operation(op)) {
            Some(op) => Ok(RequestOutcome::Operation(Box::new(op.clone()))),
            None => Err(DriverError::State(StateError::Unavailable {
                operation: "failover request",
                key: "failover".into(),
                reason: "the failover engine answered the request with neither an operation, a plan nor a rejection".into(),
            })),
        }
    }

    /// A dry run (`request` with `dry_run: true`): the plan the engine that would carry the
    /// request out answers, or its rejection. The leader asks its live engine; a follower
    /// resumes a scratch engine from the store exactly as a new leader would (persisted site
    /// states, job records, replicated pointers) and executes nothing it answers.
    pub async fn failover_dry_run(
        &self,
        request: OpsRequest,
    ) -> Result<RequestOutcome, DriverError> {
        if self.is_leading() && self.failover.enabled() {
            match self.failover_request(request.clone()).await {
                Err(DriverError::NotLeading) => {}
                answered => return answered,
            }
        }
        let now = chrono::Utc::now();
        let records = self.store.list_jobs().await?;
        let live = self.resume_driver(&records, now).await?;
        let mut snapshots = BTreeMap::new();
        for (id, site) in &self.sites {
            if let Ok(snapshot) = site.snapshot().await {
                snapshots.insert(id.clone(), snapshot);
            }
        }
        let observed = Observed {
            snapshots: snapshots.iter().map(|(k, v)| (k.clone(), v)).collect(),
            jobs: BTreeMap::new(),
        };
        let placer = self.placer(&records, &observed, now);
        let mut engine = live.driver.into_engine();
        let mut events = vec![Event::JobsStored(stored_jobs(&records))];
        events.extend(live.resumed);
        events.push(Event::OpsRequest(request));
        // Only the answer is used: the records and audits a scratch engine issues are not
        // executed.
        let answer = engine.step_all(events, now, &placer);
        answer
            .into_iter()
            .find_map(|c| match c {
                Command::ReportPlan(plan) => Some(Ok(RequestOutcome::Plan(Box::new(plan)))),
                Command::Rejected { error, .. } => Some(Ok(RequestOutcome::Rejected(error))),
                _ => None,
            })
            .unwrap_or_else(|| {
                Err(DriverError::State(StateError::Unavailable {
                    operation: "failover dry run",
                    key: "failover".into(),
                    reason: "the failover engine answered a dry run without a plan".into(),
                }))
            })
    }

    /// One operation, from the leader's engine or, on a follower, from the store.
    pub async fn failover_operation(&self, id: u64) -> Result<Option<Operation>, StateError> {
        Ok(self
            .failover_operations()
            .await?
            .into_iter()
            .find(|o| o.id == id))
    }

    /// Every operation, oldest first.
    pub async fn failover_operations(&self) -> Result<Vec<Operation>, StateError> {
        if let Ok(guard) = self.failover.live.try_lock()
            && let Some(live) = guard.as_ref().filter(|l| l.term == self.failover.term())
        {
            return Ok(live.driver.engine().operations().cloned().collect());
        }
        let mut ops = Vec::new();
        for (name, value) in self.store.list_failover_records().await? {
            if !name.starts_with("op.") {
                continue;
            }
            if let Ok(Record::Operation(op)) = serde_json::from_value::<Record>(value) {
                ops.push(*op);
            }
        }
        ops.sort_by_key(|o| o.id);
        Ok(ops)
    }

    /// A new leader's driver: every persisted record, and the replicated pointers the store
    /// holds (what cross-site relaunches may restore from), fed with the first pass.
    pub(super) async fn resume_driver(
        &self,
        records: &[Versioned<JobRecord>],
        now: Timestamp,
    ) -> Result<Live, StateError> {
        let mut persisted = Vec::new();
        for (name, value) in self.store.list_failover_records().await? {
            match serde_json::from_value::<Record>(value) {
                Ok(record) => persisted.push(record),
                Err(error) => {
                    // A record this version cannot read must not be guessed around: the job
                    // is re-registered from its stored generation instead.
                    tracing::error!(record = %name, %error, "failover record does not decode; ignored");
                }
            }
        }
        let count = persisted.len();
        let driver = Driver::resume(self.failover.config.clone(), persisted, now);
        tracing::info!(records = count, "failover engine resumed");
        let mut resumed = Vec::new();
        for record in records {
            let id = JobId::new(&record.value.namespace, &record.value.name);
            for entry in self
                .store
                .list_checkpoints(&record.value.namespace, &record.value.name)
                .await?
            {
                if entry.kind != CheckpointKind::Replicated {
                    continue;
                }
                if let Some(event) = replicated_event(
                    &id,
                    record.value.generation,
                    &entry.site,
                    &entry.pointer.value,
                ) {
                    resumed.push(event);
                }
            }
        }
        Ok(Live {
            term: self.failover.term(),
            driver,
            resumed,
        })
    }

    /// Peer views: a site heard by someone other than this controller (its etcd member or
    /// agent, seen through the quorum) must not be failed over.
    pub(super) async fn peer_views(&self) -> Vec<(SiteId, Timestamp)> {
        let mut peers = Vec::new();
        for (id, site) in &self.sites {
            if let Some(agents) = self.agents.as_ref().filter(|a| a.guards(id)) {
                // A guarded site's peer view is its agent's lease, and only that.
                if let Some(at) = agents.last_renewal(id) {
                    peers.push((id.clone(), at));
                }
                continue;
            }
            if let Some(at) = site.peer_last_contact().await {
                peers.push((id.clone(), at));
            }
        }
        peers
    }

    pub(super) fn placer(
        &self,
        records: &[Versioned<JobRecord>],
        observed: &Observed<'_>,
        now: Timestamp,
    ) -> SchedulerPlacer {
        let mut running = Vec::new();
        let mut demands: Vec<JobDemand> = Vec::new();
        for record in records {
            if let Some(p) = stored_placement(&record.value) {
                running.push(p);
            }
            if let Some((spec, _)) = engine_spec(&record.value) {
                demands.push(spec.demand);
            }
        }
        SchedulerPlacer::new(
            observed.snapshots.values().map(|s| (*s).clone()).collect(),
            running,
            demands,
            &self.policy.placement_policy(),
            now,
        )
    }

    pub(super) fn refresh_busy(&self, engine: &Engine) {
        let busy: BTreeMap<JobId, Held> = engine
            .jobs()
            .filter_map(|r| Some((r.id().clone(), Held::of(r, engine)?)))
            .collect();
        *lock(&self.failover.busy) = busy;
    }

    /// Writes the new generation and placement to the job's record (compare-and-set, so an
    /// API edit in between is re-read, never overwritten), then launches it. `Err` is the
    /// reason for the engine; a store failure is the outer `Err` (stop acting).
    pub(super) async fn relaunch(
        &self,
        job: &JobId,
        generation: u64,
        placement: &JobPlacement,
        restore_from: Option<&EnginePointer>,
        reason: &str,
        failure: bool,
    ) -> Result<Result<(), String>, StateError> {
        let Some((namespace, name)) = job.0.split_once('/') else {
            return Ok(Err(format!("job id {job} is not namespace/name")));
        };
        let Some(site) = self.sites.get(&placement.site) else {
            return Ok(Err(format!("no site {}", placement.site)));
        };
        let mut attempts = 0;
        let (job_spec, restore, status) = loop {
            attempts += 1;
            let current = match self.store.get_job(namespace, name).await {
                Ok(Some(current)) => current,
                Ok(None) => return Ok(Err("the job was deleted".into())),
                // Its generation is unknown: launching could start a second one.
                Err(StateError::Corrupt { reason, .. }) => {
                    return Ok(Err(format!("its stored record cannot be used: {reason}")));
                }
                Err(error) => return Err(error),
            };
            let job_spec = match stream_job_of(&current.value) {
                Ok(j) => j,
                Err(e) => return Ok(Err(format!("stored spec is unusable: {e}"))),
            };
            if current.value.generation > generation {
                return Ok(Err(format!(
                    "the store already holds generation {}",
                    current.value.generation
                )));
            }
            // The same generation placed in another site was not written by this engine (it
            // relaunches a generation only where it issued it): never launch it twice.
            if let Some(stored) = current.value.placement.as_ref()
                && current.value.generation == generation
                && stored.site != placement.site.0
            {
                return Ok(Err(format!(
                    "the store already holds generation {generation} in {}",
                    stored.site
                )));
            }
            let restore = restore_from.map(|c| crate::controller::launch::Restore {
                path: c.path.clone(),
                completed_at: Some(c.completed_at),
            });
            let mut record = current.value.clone();
            record.generation = generation;
            record.placement = Some(crate::state::JobPlacement {
                site: placement.site.0.clone(),
                detail: Some(placement.clone()),
            });
            let mut status = record.status.clone();
            status.phase = StatusPhase::Launching;
            status.site = Some(placement.site.0.clone());
            status.set_restore(restore.clone());
            status.last_checkpoint = None;
            status.launched_spec = match spec_hash(&job_spec) {
                Ok(hash) => Some(hash),
                Err(reason) => return Ok(Err(reason)),
            };
            status.message = Some(format!("failover: {reason}"));
            // Relaunches after failures count (a new checkpoint resets them); a move doesn't.
            status.relaunches = if failure {
                status.relaunches.saturating_add(1)
            } else {
                0
            };
            record.status = status.clone();
            match self
                .store
                .put_job(&record, Expected::Revision(current.revision))
                .await
            {
                Ok(_) => break (job_spec, restore, status),
                Err(StateError::Conflict { .. }) if attempts < 5 => continue,
                Err(error) => return Err(error),
            }
        };
        let epoch = match self.site_epoch(&placement.site).await? {
            Ok(epoch) => epoch,
            Err(reason) => return Ok(Err(reason)),
        };
        // Never launched without its jar verified in the target site (the engine refuses such
        // moves; this holds for any other way here).
        let jar_uri = match self.site_jar_uri(&job_spec, &status, &placement.site) {
            Ok(uri) => uri,
            Err(reason) => return Ok(Err(reason)),
        };
        let spec = match launch_spec(
            &job_spec,
            generation,
            placement,
            restore,
            self.storage_roots.get(&placement.site).map(String::as_str),
            epoch,
        ) {
            Ok(mut spec) => {
                spec.jar_uri = jar_uri;
                spec
            }
            Err(error) => return Ok(Err(error.to_string())),
        };
        match site.launch(&spec).await {
            Ok(()) => {
                tracing::info!(%job, generation, site = %placement.site, restore_from = ?spec.restore_from, %reason, "relaunched");
                self.metrics
                    .launches
                    .get_or_create(&crate::controller::metrics::SiteLabel {
                        site: placement.site.0.clone(),
                    })
                    .inc();
                Ok(Ok(()))
            }
            Err(error) => Ok(Err(error.to_string())),
        }
    }

    /// Where a job's savepoints go in `site`: under its checkpoint directory.
    pub(super) async fn savepoint_dir(
        &self,
        job: &JobId,
        site: &SiteId,
    ) -> Result<Result<String, String>, StateError> {
        let (namespace, name) = job.0.split_once('/').unwrap_or(("", &job.0));
        let stored = match self.store.get_job(namespace, name).await {
            // Unreadable: the default place, as for a job without a record.
            Err(StateError::Corrupt { .. }) => None,
            stored => stored?,
        };
        let dir = match stored.and_then(|record| stream_job_of(&record.value).ok()) {
            Some(job) => crate::job::savepoint_dir(&job),
            None => {
                crate::job::savepoints_under(&crate::job::default_checkpoint_dir(namespace, name))
            }
        };
        Ok(match self.storage_roots.get(site) {
            Some(root) => in_site_storage(root, &dir),
            None => Ok(dir),
        })
    }
}

/// One observation per site that answered: its nodes (a Ready node is heard now; one not
/// Ready has no heartbeat of its own here, so the engine keeps counting its silence), and
/// every generation it runs with the JobManager/TaskManager nodes of the stored placement
/// and the newest checkpoint it reports.
pub(super) fn observations(
    records: &[Versioned<JobRecord>],
    observed: &Observed<'_>,
    now: Timestamp,
) -> Vec<SiteObservation> {
    let placements: BTreeMap<JobId, (u64, JobPlacement)> = records
        .iter()
        .filter_map(|r| {
            let p = stored_placement(&r.value)?;
            Some((p.job.clone(), (r.value.generation, p)))
        })
        .collect();
    observed
        .snapshots
        .iter()
        .map(|(site, snapshot)| {
            let nodes = snapshot
                .nodes
                .iter()
                .map(|n| NodeHeartbeat {
                    name: n.name.clone(),
                    last_heartbeat: n.ready.then_some(now),
                })
                .collect();
            let jobs = observed
                .jobs
                .get(site)
                .copied()
                .unwrap_or(&[])
                .iter()
                .map(|o| {
                    let (job_manager_node, task_manager_nodes) = match placements.get(&o.job) {
                        Some((generation, p)) if *generation == o.generation && &p.site == site => {
                            (
                                p.pods
                                    .iter()
                                    .find(|p| p.role == PodRole::Jobmanager)
                                    .map(|p| p.node.clone()),
                                p.pods
                                    .iter()
                                    .filter(|p| p.role == PodRole::Taskmanager)
                                    .map(|p| p.node.clone())
                                    .collect::<BTreeSet<_>>()
                                    .into_iter()
                                    .collect(),
                            )
                        }
                        _ => (None, Vec::new()),
                    };
                    JobObserved {
                        job: o.job.clone(),
                        generation: o.generation,
                        state: engine_state(o.state),
                        restarts: o.restarts,
                        job_manager_node,
                        task_manager_nodes,
                        latest_checkpoint: o.latest_completed_checkpoint.as_ref().map(|c| {
                            ObservedCheckpoint {
                                id: c.id,
                                path: c.path.clone(),
                                completed_at: c.completed_at,
                            }
                        }),
                    }
                })
                .collect();
            SiteObservation {
                site: site.clone(),
                observed_at: now,
                nodes,
                jobs,
            }
        })
        .collect()
}
