//! What the controller asks of the site: launches (restoring from a checkpoint), stops,
//! stops with a savepoint, and what it observes (snapshot, jobs, health).

use super::*;

impl Inner {
    pub(super) fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        spec.validate_for(&self.id)?;
        let now = self.clock.now();
        let mut state = self.reachable()?;
        if let Some(running) = state.jobs.get(&spec.job) {
            if running.spec.generation == spec.generation {
                return Ok(());
            }
            return Err(SiteError::GenerationConflict {
                site: self.id.clone(),
                job: spec.job.clone(),
                running: running.spec.generation,
                requested: spec.generation,
            });
        }
        if let Some(&stopped) = state.stopped.get(&spec.job)
            && spec.generation <= stopped
        {
            return Err(SiteError::StaleGeneration {
                site: self.id.clone(),
                job: spec.job.clone(),
                requested: spec.generation,
                stopped,
            });
        }
        for pod in &spec.placement.pods {
            if !state.nodes.iter().any(|n| n.name == pod.node) {
                return Err(self.invalid(
                    format!("launch of job {} generation {}", spec.job, spec.generation),
                    format!(
                        "{:?} {} is placed on node {:?}, which this site does not have",
                        pod.role, pod.index, pod.node
                    ),
                ));
            }
        }
        let restored_id = match &spec.restore_from {
            Some(path) => Some(self.check_restorable(path)?),
            None => None,
        };
        let mut job = SimJob {
            spec: spec.clone(),
            flink_job_id: flink_job_id(&spec.job, spec.generation),
            state: JobState::Restarting,
            ever_running: false,
            restarts: 0,
            // Flink continues the checkpoint counter of the checkpoint it restored.
            next_checkpoint_id: restored_id.map_or(1, |id| id + 1),
            next_checkpoint_due: now + to_chrono(spec.checkpoint_interval()),
            pending: None,
            retained: VecDeque::new(),
            shared_by_checkpoint: VecDeque::new(),
            latest: None,
        };
        let faults = state.faults.clone();
        job.update_state(&faults, now);
        tracing::info!(site = %self.id, job = %spec.job, generation = spec.generation,
            restore_from = ?spec.restore_from, "simulated launch");
        state.jobs.insert(spec.job.clone(), job);
        self.bump(&mut state);
        self.save_locked(&state);
        Ok(())
    }

    pub(super) fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        let mut state = self.reachable()?;
        self.stop_locked(&mut state, job, generation);
        Ok(())
    }

    pub(super) fn stop_locked(&self, state: &mut SimState, job: &JobId, generation: u64) {
        if state
            .jobs
            .get(job)
            .is_some_and(|j| j.spec.generation == generation)
        {
            state.jobs.remove(job);
            tracing::info!(site = %self.id, %job, generation, "simulated stop");
        }
        let stopped = state.stopped.entry(job.clone()).or_insert(generation);
        *stopped = (*stopped).max(generation);
        self.bump(state);
        self.save_locked(state);
    }

    pub(super) fn stop_with_savepoint(
        &self,
        job_id: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        let now = self.clock.now();
        let mut state = self.reachable()?;
        let not_running = || SiteError::NotRunning {
            site: self.id.clone(),
            job: job_id.clone(),
            generation,
        };
        let job = state
            .jobs
            .get(job_id)
            .filter(|j| j.spec.generation == generation)
            .ok_or_else(not_running)?;
        if job.state != JobState::Running {
            return Err(not_running());
        }
        // Flink names savepoints `savepoint-<first 6 of job id>-<12 random hex>`; the
        // suffix here is derived, so runs stay reproducible.
        let suffix = hex(&Sha256::digest(format!("{}@{now}", job.flink_job_id).as_bytes())[..6]);
        let name = format!("savepoint-{}-{suffix}", &job.flink_job_id[..6]);
        let savepoint_uri = join_uri(target_dir, &name);
        let dir = self.resolve(&savepoint_uri)?;
        std::fs::create_dir_all(&dir).map_err(|e| self.storage_error(&dir, e))?;
        // Savepoints are self-contained: their state lives inside their own directory.
        let state_file = dir.join("state");
        std::fs::write(
            &state_file,
            format!("simulated savepoint of {job_id} generation {generation}\n"),
        )
        .map_err(|e| self.storage_error(&state_file, e))?;
        let metadata = SimMetadata {
            flink_job_id: job.flink_job_id.clone(),
            checkpoint_id: job.next_checkpoint_id,
            files: vec![join_uri(&savepoint_uri, "state")],
        };
        sim_metadata::write(&dir, &metadata, |uri| self.file_size(uri))
            .map_err(|e| self.storage_error(&dir, e))?;
        self.stop_locked(&mut state, job_id, generation);
        Ok(savepoint_uri)
    }

    pub(super) fn snapshot(&self) -> Result<SiteSnapshot, SiteError> {
        let state = self.reachable()?;
        let nodes = state
            .nodes
            .iter()
            .map(|node| {
                let mut node = node.clone();
                if state.faults.nodes_down.contains(&node.name) {
                    node.ready = false;
                }
                node
            })
            .collect();
        Ok(SiteSnapshot {
            id: self.id.clone(),
            nodes,
            running_pods: state.foreign_pods.clone(),
        })
    }

    pub(super) fn jobs(&self) -> Result<Vec<JobObservation>, SiteError> {
        let state = self.reachable()?;
        Ok(state
            .jobs
            .values()
            .map(|job| {
                let nodes: BTreeSet<String> = job
                    .spec
                    .placement
                    .pods
                    .iter()
                    .map(|p| p.node.clone())
                    .collect();
                JobObservation {
                    job: job.spec.job.clone(),
                    generation: job.spec.generation,
                    state: job.state,
                    nodes: nodes.into_iter().collect(),
                    restarts: job.restarts,
                    latest_completed_checkpoint: job.latest.clone(),
                    epoch: Some(job.spec.epoch),
                }
            })
            .collect())
    }

    pub(super) fn health(&self) -> SiteHealth {
        let state = self.lock();
        let detail = if state.faults.site_down {
            Some("site is down".to_owned())
        } else if state.faults.partition {
            Some("network partition between controller and site".to_owned())
        } else {
            None
        };
        SiteHealth {
            site: self.id.clone(),
            api_reachable: state.faults.api_reachable(),
            last_contact: state.last_contact,
            detail,
        }
    }
}
