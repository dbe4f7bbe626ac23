//! Time passing: each tick completes and triggers checkpoints, writes them (files and a
//! `_metadata` hdfs-sync parses) into the site's storage and retires old ones.

use super::*;

impl Inner {
    /// The highest `chk-N` under the job's checkpoint directory, if any.
    pub(super) fn highest_checkpoint_on_storage(
        &self,
        spec: &LaunchSpec,
        flink_job_id: &str,
    ) -> Option<u64> {
        let dir = self
            .resolve(&join_uri(&spec.checkpoint_dir, flink_job_id))
            .ok()?;
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("chk-"))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .max()
    }

    /// Three steps, so file I/O never runs under the site's lock (reads and launches stay
    /// fast while a thousand jobs checkpoint): decide and book-keep under the lock, write
    /// without it, then record the outcome (and which old checkpoints to drop) under it
    /// again and delete without it.
    pub(super) fn tick(&self) -> TickReport {
        let now = self.clock.now();
        let mut report = TickReport::default();
        if !self.is_active() {
            return report;
        }
        let mut changed = false;
        let mut tasks = Vec::new();
        {
            let mut state = self.lock();
            if state.faults.api_reachable() {
                state.last_contact = Some(now);
            }
            changed |= self.reschedule_task_managers(&mut state, now);
            let faults = state.faults.clone();
            let window = self.config.shared_file_window.max(1);
            for job in state.jobs.values_mut() {
                changed |= job.update_state(&faults, now);
                if job.state != JobState::Running {
                    continue;
                }
                if let Some(pending) = job.pending
                    && pending.completes_at <= now
                {
                    job.pending = None;
                    tasks.push(job.plan_checkpoint(pending.id, window));
                }
                if job.pending.is_none() && job.next_checkpoint_due <= now {
                    let id = job.next_checkpoint_id;
                    job.next_checkpoint_id += 1;
                    job.next_checkpoint_due = now + to_chrono(job.spec.checkpoint_interval());
                    let delay = faults.slow_storage.unwrap_or_default();
                    if delay.is_zero() {
                        tasks.push(job.plan_checkpoint(id, window));
                    } else {
                        job.pending = Some(PendingCheckpoint {
                            id,
                            completes_at: now + to_chrono(delay),
                        });
                    }
                }
            }
        }

        let written: Vec<(CheckpointTask, Result<(), SiteError>)> = tasks
            .into_iter()
            .map(|task| {
                let result = self.write_checkpoint(&task);
                (task, result)
            })
            .collect();

        let mut deletions = Vec::new();
        {
            let mut state = self.lock();
            for (task, result) in written {
                let Some(job) = state
                    .jobs
                    .get_mut(&task.job)
                    .filter(|j| j.spec.generation == task.generation)
                else {
                    continue;
                };
                match result {
                    Ok(()) => {
                        let checkpoint = CheckpointRef {
                            id: task.id,
                            path: task.chk_uri.clone(),
                            completed_at: now,
                        };
                        deletions.extend(job.retain(task, self.retained_for(job)));
                        job.latest = Some(checkpoint.clone());
                        report.completed.push((
                            job.spec.job.clone(),
                            job.spec.generation,
                            checkpoint,
                        ));
                        changed = true;
                    }
                    Err(error) => {
                        // A failed checkpoint's files are discarded; later ones never
                        // reference them.
                        job.shared_by_checkpoint.retain(|(id, _)| *id != task.id);
                        report.failed_writes.push(error);
                    }
                }
            }
            if changed {
                self.bump(&mut state);
                // Throttled: a thousand jobs' state is a megabyte or so.
                let due = state
                    .last_saved
                    .is_none_or(|at| now - at >= chrono::Duration::seconds(5));
                if due && !report.completed.is_empty() {
                    state.last_saved = Some(now);
                    self.save_locked(&state);
                }
            }
        }

        for deletion in deletions {
            if let Err(error) = self.delete(&deletion) {
                report.failed_writes.push(error);
            }
        }
        report
    }

    pub(super) fn retained_for(&self, job: &SimJob) -> usize {
        job.spec
            .flink_configuration
            .get(NUM_RETAINED_KEY)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(self.config.default_retained_checkpoints)
            .max(1)
    }

    /// New `shared/` files first, then `chk-N/_metadata` (written last, atomically).
    pub(super) fn write_checkpoint(&self, task: &CheckpointTask) -> Result<(), SiteError> {
        let shared_dir = self.resolve(&join_uri(&task.job_uri, "shared"))?;
        std::fs::create_dir_all(&shared_dir).map_err(|e| self.storage_error(&shared_dir, e))?;
        for (uri, content) in &task.new_files {
            let path = self.resolve(uri)?;
            std::fs::write(&path, content).map_err(|e| self.storage_error(&path, e))?;
        }
        let chk_dir = self.resolve(&task.chk_uri)?;
        std::fs::create_dir_all(&chk_dir).map_err(|e| self.storage_error(&chk_dir, e))?;
        sim_metadata::write(&chk_dir, &task.metadata, |uri| self.file_size(uri))
            .map_err(|e| self.storage_error(&chk_dir, e))
    }

    pub(super) fn delete(&self, deletion: &Deletion) -> Result<(), SiteError> {
        let ignore_missing = |result: std::io::Result<()>, path: &Path| match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.storage_error(path, e)),
            _ => Ok(()),
        };
        let dir = self.resolve(&deletion.chk_uri)?;
        ignore_missing(std::fs::remove_dir_all(&dir), &dir)?;
        for file in &deletion.unreferenced_files {
            let path = self.resolve(file)?;
            ignore_missing(std::fs::remove_file(&path), &path)?;
        }
        Ok(())
    }

    /// Reads the checkpoint a launch restores from and checks that every file it references
    /// exists; returns its checkpoint id.
    pub(super) fn check_restorable(&self, restore_from: &str) -> Result<u64, SiteError> {
        let dir = self.resolve(restore_from)?;
        let metadata_path = dir.join("_metadata");
        let bytes = std::fs::read(&metadata_path).map_err(|e| {
            self.invalid(
                format!("restore path {restore_from}"),
                format!("cannot read {}: {e}", metadata_path.display()),
            )
        })?;
        let metadata = sim_metadata::parse(&metadata_path.display().to_string(), &bytes)
            .map_err(|e| self.invalid(format!("restore path {restore_from}"), e.to_string()))?;
        for file in &metadata.files {
            let path = self.resolve(file)?;
            if !path.is_file() {
                return Err(self.invalid(
                    format!("restore path {restore_from}"),
                    format!("checkpoint references {file}, which does not exist in this site"),
                ));
            }
        }
        Ok(metadata.checkpoint_id)
    }
}

/// One checkpoint to write, decided under the lock and written without it.
#[derive(Debug)]
pub(super) struct CheckpointTask {
    job: JobId,
    generation: u64,
    id: u64,
    job_uri: String,
    chk_uri: String,
    /// `(uri, content)` of the new `shared/` files.
    new_files: Vec<(String, String)>,
    metadata: SimMetadata,
}

/// An old checkpoint to delete, with the shared files only it referenced.
#[derive(Debug)]
pub(super) struct Deletion {
    chk_uri: String,
    unreferenced_files: Vec<String>,
}

impl SimJob {
    /// Books checkpoint `id`: one or two new shared files (alternating: enough to exercise
    /// "copy only what is new"), referenced with those of the previous `window - 1`
    /// checkpoints, as incremental RocksDB keeps referencing SST files until compaction.
    pub(super) fn plan_checkpoint(&mut self, id: u64, window: u64) -> CheckpointTask {
        let job_uri = join_uri(&self.spec.checkpoint_dir, &self.flink_job_id);
        let new_files: Vec<(String, String)> = (0..1 + (id % 2) as usize)
            .map(|index| {
                let name = shared_file_name(&self.flink_job_id, id, index);
                let content = format!(
                    "simulated state of {} generation {} checkpoint {id} file {index}\n",
                    self.spec.job, self.spec.generation
                );
                (join_uri(&job_uri, &format!("shared/{name}")), content)
            })
            .collect();
        self.shared_by_checkpoint
            .push_back((id, new_files.iter().map(|(uri, _)| uri.clone()).collect()));
        while self
            .shared_by_checkpoint
            .front()
            .is_some_and(|(first, _)| first + window <= id)
        {
            self.shared_by_checkpoint.pop_front();
        }
        let referenced = self
            .shared_by_checkpoint
            .iter()
            .flat_map(|(_, files)| files.iter().cloned())
            .collect();
        CheckpointTask {
            job: self.spec.job.clone(),
            generation: self.spec.generation,
            id,
            chk_uri: join_uri(&job_uri, &format!("chk-{id}")),
            job_uri,
            new_files,
            metadata: SimMetadata {
                flink_job_id: self.flink_job_id.clone(),
                checkpoint_id: id,
                files: referenced,
            },
        }
    }

    /// Records a written checkpoint and returns the old ones beyond `keep` to delete.
    pub(super) fn retain(&mut self, task: CheckpointTask, keep: usize) -> Vec<Deletion> {
        self.retained.push_back(RetainedCheckpoint {
            chk_uri: task.chk_uri,
            shared: task.metadata.files,
        });
        let mut dropped = Vec::new();
        while self.retained.len() > keep {
            if let Some(old) = self.retained.pop_front() {
                dropped.push(old);
            }
        }
        let still_referenced: BTreeSet<&String> =
            self.retained.iter().flat_map(|c| c.shared.iter()).collect();
        dropped
            .into_iter()
            .map(|old| Deletion {
                unreferenced_files: old
                    .shared
                    .iter()
                    .filter(|f| !still_referenced.contains(f))
                    .cloned()
                    .collect(),
                chk_uri: old.chk_uri,
            })
            .collect()
    }

    /// Re-derives the job's state from the faults; returns true when it changed.
    pub(super) fn update_state(&mut self, faults: &Faults, now: DateTime<Utc>) -> bool {
        let jm_down = self
            .spec
            .job_manager_node()
            .is_some_and(|n| faults.nodes_down.contains(n));
        let tm_down = self
            .spec
            .task_manager_nodes()
            .iter()
            .any(|n| faults.nodes_down.contains(*n));
        let next = if faults.site_down || jm_down {
            JobState::Failed
        } else if tm_down {
            JobState::Restarting
        } else {
            JobState::Running
        };
        if next == self.state {
            return false;
        }
        if next == JobState::Running {
            if self.ever_running {
                self.restarts += 1;
            }
            self.ever_running = true;
            self.next_checkpoint_due = now + to_chrono(self.spec.checkpoint_interval());
        } else {
            // A checkpoint in flight is aborted when the job goes down.
            self.pending = None;
        }
        self.state = next;
        true
    }
}

pub(super) fn shared_file_name(flink_job_id: &str, checkpoint: u64, index: usize) -> String {
    let digest = Sha256::digest(format!("{flink_job_id}/{checkpoint}/{index}").as_bytes());
    let h = hex(&digest[..16]);
    // UUID-shaped, like the SST file names RocksDB checkpoints upload.
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
