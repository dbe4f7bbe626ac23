//! A site whose jobs are real Apache Flink processes on this machine: each launch starts the
//! job's own local mini-cluster (PyFlink, `apache-flink` from PyPI, on the machine's Java),
//! checkpointing under the site's storage directory and restoring from an explicit path.
//!
//! Program convention: `jarURI` names a PyFlink program (`file:///…/job.py`), run as
//! `python <program> <checkpoint-dir URI> [<restore path>] [spec.args…]` with
//! `TWINSITE_FLINK_JOB_ID` set to the generation's derived Flink job id
//! ([`flink_job_id`](super::flink_job_id)); the program sets it as Flink's
//! `$internal.pipeline.job-id`, so its checkpoints land in `<checkpoint dir>/<that id>/chk-N`,
//! where the controller's replication and the failover engine look for them (a random job
//! id would never be replicated). Stopping kills the job's process group, as losing its pods
//! would. Not the default site kind (it needs the PyFlink venv and takes seconds per job):
//! end-to-end tests and demos use it.
//!
//! Fault drill: [`LocalFlinkSite::fail_site`] loses the whole site. Every job's process group
//! is killed, and the storage root is moved aside to `<root>.lost` with a regular file left
//! at `<root>`, so every path below the root fails (`ENOTDIR`) for every reader and writer
//! (replication, restores, the site itself), even root, for whom `chmod` denies nothing.
//! Until [`LocalFlinkSite::recover_site`], every call answers `SiteError::Unreachable` and
//! `health()` reports the API unreachable with `last_contact` frozen at the fault. Recovery
//! puts the storage back; the killed generations stay dead and show as `Failed` (nothing here
//! restarts them, unlike a Kubernetes Deployment), for the controller to fence.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scheduler::model::{JobId, Node, Resources, SiteId, SiteSnapshot};
use tokio::sync::watch;

use super::{
    CheckpointRef, JobObservation, JobState, LaunchSpec, Site, SiteError, SiteHealth, flink_job_id,
};

#[derive(Debug, Clone)]
pub struct LocalFlinkConfig {
    pub site: SiteId,
    /// The site's "HDFS": `hdfs:///x` and `file:///x` map to `<storage_root>/x`.
    pub storage_root: PathBuf,
    /// Python of a venv with `apache-flink` (`tests/flink/setup-venv.sh` prints it).
    pub python: PathBuf,
    /// Where each job generation's stdout/stderr goes.
    pub log_dir: PathBuf,
    /// Capacity the site offers the scheduler: one node, `localhost`.
    pub capacity: Resources,
}

/// Clones share the same processes.
#[derive(Clone)]
pub struct LocalFlinkSite {
    inner: Arc<Inner>,
}

struct Inner {
    config: LocalFlinkConfig,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<JobId, Process>,
    stopped: BTreeMap<JobId, u64>,
    version: u64,
    /// When `fail_site` lost the site; `None` while it is up.
    failed_at: Option<DateTime<Utc>>,
}

struct Process {
    spec: LaunchSpec,
    child: Child,
    checkpoint_dir: PathBuf,
    /// The Flink job id this generation was given: its checkpoints are under it.
    flink_job_id: String,
    launched_at: SystemTime,
}

pub const NODE_NAME: &str = "localhost";

impl LocalFlinkSite {
    pub fn new(config: LocalFlinkConfig) -> LocalFlinkSite {
        LocalFlinkSite {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                changes: watch::channel(0).0,
            }),
        }
    }

    /// The log of one job generation (its Flink output), e.g. for tests to read.
    pub fn log_path(&self, job: &JobId, generation: u64) -> PathBuf {
        self.inner
            .config
            .log_dir
            .join(format!("{}-g{generation}.log", job.0.replace('/', "_")))
    }

    /// Process (group) id of a running job generation: what a fault drill kills.
    pub fn pid(&self, job: &JobId, generation: u64) -> Option<u32> {
        self.inner
            .lock()
            .jobs
            .get(job)
            .filter(|p| p.spec.generation == generation)
            .map(|p| p.child.id())
    }

    /// Local path of a storage URI; refuses `..`.
    pub fn resolve(&self, uri: &str) -> Result<PathBuf, SiteError> {
        self.inner.resolve(uri)
    }

    /// Fault drill: the whole site is lost (see the module docs). Kills every job's process
    /// group, moves the storage root aside to `<root>.lost` and leaves a regular file at
    /// `<root>`, so nothing can read or write below it; from now on every call answers
    /// `Unreachable`. Idempotent.
    pub fn fail_site(&self) -> std::io::Result<()> {
        let inner = &self.inner;
        let mut state = inner.lock();
        if state.failed_at.is_some() {
            return Ok(());
        }
        for process in state.jobs.values_mut() {
            kill_group(&mut process.child);
        }
        let root = &inner.config.storage_root;
        let aside = inner.lost_root();
        if root.exists() {
            std::fs::rename(root, &aside)?;
        }
        std::fs::write(
            root,
            "twinsite fault drill: this site is lost; its storage is moved aside\n",
        )?;
        state.failed_at = Some(Utc::now());
        tracing::warn!(site = %inner.config.site, jobs = state.jobs.len(), "local Flink site failed (fault drill)");
        inner.bump(&mut state);
        Ok(())
    }

    /// Ends `fail_site`: the storage is back where it was and the site answers again. The
    /// generations the fault killed stay dead (observed as `Failed`) until they are stopped.
    pub fn recover_site(&self) -> std::io::Result<()> {
        let inner = &self.inner;
        let mut state = inner.lock();
        if state.failed_at.is_none() {
            return Ok(());
        }
        let root = &inner.config.storage_root;
        std::fs::remove_file(root)?;
        let aside = inner.lost_root();
        if aside.exists() {
            std::fs::rename(&aside, root)?;
        }
        state.failed_at = None;
        tracing::info!(site = %inner.config.site, "local Flink site recovered (fault drill)");
        inner.bump(&mut state);
        Ok(())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self, state: &mut State) {
        state.version += 1;
        self.changes.send_replace(state.version);
    }

    /// `Unreachable` while the site is failed (`fail_site`).
    fn reachable(&self, state: &State) -> Result<(), SiteError> {
        match state.failed_at {
            None => Ok(()),
            Some(at) => Err(SiteError::Unreachable {
                site: self.config.site.clone(),
                reason: format!("site lost at {at} (fault drill)"),
            }),
        }
    }

    /// Where `fail_site` moves the storage root: `<root>.lost`, next to it.
    fn lost_root(&self) -> PathBuf {
        let mut name = self.config.storage_root.as_os_str().to_owned();
        name.push(".lost");
        PathBuf::from(name)
    }

    fn invalid(&self, object: String, reason: impl Into<String>) -> SiteError {
        SiteError::Invalid {
            site: self.config.site.clone(),
            object,
            reason: reason.into(),
        }
    }

    fn resolve(&self, uri: &str) -> Result<PathBuf, SiteError> {
        super::resolve_in_root(&self.config.storage_root, uri)
            .map_err(|reason| self.invalid(format!("storage path {uri:?}"), reason))
    }

    fn program(&self, spec: &LaunchSpec) -> Result<PathBuf, SiteError> {
        let object = format!("launch of job {} generation {}", spec.job, spec.generation);
        let path = spec
            .jar_uri
            .strip_prefix("file://")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.extension().is_some_and(|e| e == "py"))
            .ok_or_else(|| {
                self.invalid(
                    object.clone(),
                    format!(
                        "jarURI {:?}: a local Flink site runs PyFlink programs, file:///absolute/path.py",
                        spec.jar_uri
                    ),
                )
            })?;
        if !path.is_file() {
            return Err(self.invalid(object, format!("jarURI {:?}: no such file", spec.jar_uri)));
        }
        Ok(path)
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        spec.validate_for(&self.config.site)?;
        let program = self.program(spec)?;
        let mut state = self.lock();
        self.reachable(&state)?;
        if let Some(running) = state.jobs.get(&spec.job) {
            if running.spec.generation == spec.generation {
                return Ok(());
            }
            return Err(SiteError::GenerationConflict {
                site: self.config.site.clone(),
                job: spec.job.clone(),
                running: running.spec.generation,
                requested: spec.generation,
            });
        }
        if let Some(&stopped) = state.stopped.get(&spec.job)
            && spec.generation <= stopped
        {
            return Err(SiteError::StaleGeneration {
                site: self.config.site.clone(),
                job: spec.job.clone(),
                requested: spec.generation,
                stopped,
            });
        }
        let checkpoint_dir = self.resolve(&spec.checkpoint_dir)?;
        let storage = |path: &Path, e: std::io::Error| SiteError::Storage {
            site: self.config.site.clone(),
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&checkpoint_dir).map_err(|e| storage(&checkpoint_dir, e))?;
        std::fs::create_dir_all(&self.config.log_dir)
            .map_err(|e| storage(&self.config.log_dir, e))?;
        let flink_job_id = flink_job_id(&spec.job, spec.generation);
        let mut command = Command::new(&self.config.python);
        // The job's own variables first: twinsite's (admission reserves `TWINSITE_*`) win.
        command
            .envs(&spec.env)
            .env("TWINSITE_FLINK_JOB_ID", &flink_job_id)
            .arg(&program)
            .arg(format!("file://{}", checkpoint_dir.display()));
        if let Some(restore) = &spec.restore_from {
            let path = self.resolve(restore)?;
            if !path.join("_metadata").is_file() {
                return Err(self.invalid(
                    format!("restore path {restore}"),
                    format!("{} has no _metadata", path.display()),
                ));
            }
            command.arg(format!("file://{}", path.display()));
        }
        command.args(&spec.args);
        let log_path = self.config.log_dir.join(format!(
            "{}-g{}.log",
            spec.job.0.replace('/', "_"),
            spec.generation
        ));
        let log = std::fs::File::create(&log_path).map_err(|e| storage(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| storage(&log_path, e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group, so stopping kills the JVM PyFlink starts as well.
            .process_group(0)
            .spawn()
            .map_err(|e| storage(&self.config.python, e))?;
        tracing::info!(site = %self.config.site, job = %spec.job, generation = spec.generation,
            pid = child.id(), restore_from = ?spec.restore_from, "local Flink job started");
        state.jobs.insert(
            spec.job.clone(),
            Process {
                spec: spec.clone(),
                child,
                checkpoint_dir,
                flink_job_id,
                launched_at: SystemTime::now(),
            },
        );
        self.bump(&mut state);
        Ok(())
    }

    fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        let mut state = self.lock();
        self.reachable(&state)?;
        if let Some(process) = state.jobs.get_mut(job)
            && process.spec.generation == generation
        {
            kill_group(&mut process.child);
            state.jobs.remove(job);
            tracing::info!(site = %self.config.site, %job, generation, "local Flink job stopped");
        }
        let stopped = state.stopped.entry(job.clone()).or_insert(generation);
        *stopped = (*stopped).max(generation);
        self.bump(&mut state);
        Ok(())
    }

    fn observe(&self) -> Result<Vec<JobObservation>, SiteError> {
        let mut state = self.lock();
        self.reachable(&state)?;
        let mut out = Vec::new();
        for process in state.jobs.values_mut() {
            let job_state = match process.child.try_wait() {
                Ok(None) => JobState::Running,
                Ok(Some(status)) if status.success() => JobState::Finished,
                Ok(Some(_)) | Err(_) => JobState::Failed,
            };
            out.push(JobObservation {
                job: process.spec.job.clone(),
                generation: process.spec.generation,
                state: job_state,
                nodes: vec![NODE_NAME.to_string()],
                restarts: 0,
                latest_completed_checkpoint: latest_checkpoint(
                    &process.checkpoint_dir,
                    &process.flink_job_id,
                    process.launched_at,
                ),
                epoch: Some(process.spec.epoch),
            });
        }
        Ok(out)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Never leave JVMs behind when the site goes away (a test ends, the controller exits).
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for process in state.jobs.values_mut() {
            kill_group(&mut process.child);
        }
    }
}

fn kill_group(child: &mut Child) {
    // `--` so procps' kill reads `-<pgid>` as a process group, not a signal.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--"])
        .arg(format!("-{}", child.id()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The newest complete checkpoint (`<dir>/<flink-job-id>/chk-N/_metadata`) written by this
/// generation: under its own Flink job id when the program used it, else (a program that
/// ignores `TWINSITE_FLINK_JOB_ID`) under any job-id directory created since the launch, so
/// the previous generation's checkpoints are never reported as this one's.
fn latest_checkpoint(dir: &Path, flink_job_id: &str, since: SystemTime) -> Option<CheckpointRef> {
    let own = dir.join(flink_job_id);
    let job_dirs: Vec<PathBuf> = if own.is_dir() {
        vec![own]
    } else {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|job_dir| {
                job_dir
                    .metadata()
                    .and_then(|m| m.created().or_else(|_| m.modified()))
                    .is_ok_and(|created| created + std::time::Duration::from_secs(1) >= since)
            })
            .map(|job_dir| job_dir.path())
            .collect()
    };
    let mut best: Option<(u64, PathBuf, SystemTime)> = None;
    for job_dir in job_dirs {
        let Ok(entries) = std::fs::read_dir(&job_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let metadata = entry.path().join("_metadata");
            let Ok(completed) = metadata.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _, _)| id > *b) {
                best = Some((id, entry.path(), completed));
            }
        }
    }
    best.map(|(id, path, completed)| CheckpointRef {
        id,
        path: format!("file://{}", path.display()),
        completed_at: DateTime::<Utc>::from(completed),
    })
}

#[async_trait]
impl Site for LocalFlinkSite {
    fn id(&self) -> SiteId {
        self.inner.config.site.clone()
    }

    async fn snapshot(&self) -> Result<SiteSnapshot, SiteError> {
        self.inner.reachable(&self.inner.lock())?;
        Ok(SiteSnapshot {
            id: self.inner.config.site.clone(),
            nodes: vec![Node {
                owner_usage: None,
                name: NODE_NAME.to_string(),
                labels: BTreeMap::from([(
                    "kubernetes.io/hostname".to_string(),
                    NODE_NAME.to_string(),
                )]),
                taints: vec![],
                unschedulable: false,
                ready: true,
                allocatable: self.inner.config.capacity,
            }],
            running_pods: vec![],
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        let inner = Arc::clone(&self.inner);
        let spec = spec.clone();
        // Spawning and directory creation block; keep them off the async workers.
        tokio::task::spawn_blocking(move || inner.launch(&spec))
            .await
            .map_err(|e| SiteError::Unreachable {
                site: self.inner.config.site.clone(),
                reason: format!("launch task failed: {e}"),
            })?
    }

    async fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        let inner = Arc::clone(&self.inner);
        let job = job.clone();
        tokio::task::spawn_blocking(move || inner.stop(&job, generation))
            .await
            .map_err(|e| SiteError::Unreachable {
                site: self.inner.config.site.clone(),
                reason: format!("stop task failed: {e}"),
            })?
    }

    async fn stop_with_savepoint(
        &self,
        _job: &JobId,
        _generation: u64,
        _target_dir: &str,
    ) -> Result<String, SiteError> {
        self.inner.reachable(&self.inner.lock())?;
        Err(SiteError::Unsupported {
            site: self.inner.config.site.clone(),
            operation: "stop with savepoint".into(),
            reason: "a local mini-cluster has no REST endpoint here; relaunches restore from the latest checkpoint".into(),
        })
    }

    async fn jobs(&self) -> Result<Vec<JobObservation>, SiteError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.observe())
            .await
            .map_err(|e| SiteError::Unreachable {
                site: self.inner.config.site.clone(),
                reason: format!("observe task failed: {e}"),
            })?
    }

    async fn health(&self) -> SiteHealth {
        let failed_at = self.inner.lock().failed_at;
        SiteHealth {
            site: self.inner.config.site.clone(),
            api_reachable: failed_at.is_none(),
            last_contact: Some(failed_at.unwrap_or_else(Utc::now)),
            detail: failed_at.map(|at| format!("site lost at {at} (fault drill)")),
        }
    }
}
