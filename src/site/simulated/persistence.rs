//! The simulated cluster's file (`SimulatedSiteConfig::cluster_file`): saved after every
//! change, loaded by a site object on the same file, so a restarted process finds the
//! cluster as it left it.

use super::*;

/// The saved cluster state (`SimulatedSiteConfig::cluster_file`).
#[derive(Debug, Serialize, Deserialize)]
struct ClusterFile {
    jobs: Vec<SavedJob>,
    stopped: Vec<(JobId, u64)>,
    /// A site that is down stays down for whichever controller process runs it next.
    #[serde(default)]
    site_down: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedJob {
    spec: LaunchSpec,
    next_checkpoint_id: u64,
    latest: Option<CheckpointRef>,
    retained: Vec<RetainedCheckpoint>,
    shared_by_checkpoint: Vec<(u64, Vec<String>)>,
}

impl Inner {
    /// Writes the cluster file (temporary name, then rename), if configured and active.
    pub(super) fn save_locked(&self, state: &SimState) {
        let Some(path) = &self.config.cluster_file else {
            return;
        };
        if !self.is_active() {
            return;
        }
        let file = ClusterFile {
            jobs: state
                .jobs
                .values()
                .map(|job| SavedJob {
                    spec: job.spec.clone(),
                    next_checkpoint_id: job.next_checkpoint_id,
                    latest: job.latest.clone(),
                    retained: job
                        .retained
                        .iter()
                        .map(|r| RetainedCheckpoint {
                            chk_uri: r.chk_uri.clone(),
                            shared: r.shared.clone(),
                        })
                        .collect(),
                    shared_by_checkpoint: job.shared_by_checkpoint.iter().cloned().collect(),
                })
                .collect(),
            stopped: state.stopped.iter().map(|(j, g)| (j.clone(), *g)).collect(),
            site_down: state.faults.site_down,
        };
        let result = (|| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec(&file).map_err(std::io::Error::other)?,
            )?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(error) = result {
            tracing::warn!(site = %self.id, path = %path.display(), %error, "cannot save the simulated cluster");
        }
    }

    pub(super) fn load_cluster(&self) -> Result<(), SiteError> {
        let Some(path) = &self.config.cluster_file else {
            return Ok(());
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.storage_error(path, e)),
        };
        let file: ClusterFile = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("cluster file {}", path.display()), e.to_string()))?;
        let now = self.clock.now();
        let mut state = self.lock();
        state.faults.site_down = file.site_down;
        let faults = state.faults.clone();
        state.jobs.clear();
        for saved in file.jobs {
            // Saves are throttled, so the file may lag the checkpoints on storage: never
            // reuse an id that may already exist.
            let flink_job_id = flink_job_id(&saved.spec.job, saved.spec.generation);
            let on_storage = self.highest_checkpoint_on_storage(&saved.spec, &flink_job_id);
            let next_checkpoint_id = saved
                .next_checkpoint_id
                .max(saved.latest.as_ref().map_or(0, |c| c.id + 1))
                .max(on_storage.map_or(0, |id| id + 1));
            let mut job = SimJob {
                flink_job_id,
                state: JobState::Restarting,
                ever_running: false,
                restarts: 0,
                next_checkpoint_id,
                next_checkpoint_due: now + to_chrono(saved.spec.checkpoint_interval()),
                pending: None,
                retained: saved.retained.into(),
                shared_by_checkpoint: saved.shared_by_checkpoint.into(),
                latest: saved.latest,
                spec: saved.spec,
            };
            job.update_state(&faults, now);
            state.jobs.insert(job.spec.job.clone(), job);
        }
        state.stopped = file.stopped.into_iter().collect();
        tracing::info!(site = %self.id, jobs = state.jobs.len(), "loaded the simulated cluster");
        self.bump(&mut state);
        Ok(())
    }
}
