//! A site whose jobs are real Apache Flink processes on this machine: each launch starts the
//! job's own local mini-cluster (PyFlink, `apache-flink` from PyPI, on the machine's Java),
//! checkpointing under the site's storage directory and restoring from an explicit path.
//!
//! Program convention: `jarURI` names a PyFlink program (`file:///…/job.py`), run as
//! `python <program> <checkpoint-dir URI> [<restore path>] [spec.args…]`. Stopping kills the
//! job's process group, as losing its pods would. Not the default site kind (it needs the
//! PyFlink venv and takes seconds per job): end-to-end tests and demos use it.

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

use super::{CheckpointRef, JobObservation, JobState, LaunchSpec, Site, SiteError, SiteHealth};

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
}

struct Process {
    spec: LaunchSpec,
    child: Child,
    checkpoint_dir: PathBuf,
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
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self, state: &mut State) {
        state.version += 1;
        self.changes.send_replace(state.version);
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
        let mut command = Command::new(&self.config.python);
        command
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
                launched_at: SystemTime::now(),
            },
        );
        self.bump(&mut state);
        Ok(())
    }

    fn stop(&self, job: &JobId, generation: u64) {
        let mut state = self.lock();
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
    }

    fn observe(&self) -> Vec<JobObservation> {
        let mut state = self.lock();
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
                    process.launched_at,
                ),
            });
        }
        out
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
/// generation: only job-id directories created since the launch count, so the previous
/// generation's checkpoints are never reported as this one's.
fn latest_checkpoint(dir: &Path, since: SystemTime) -> Option<CheckpointRef> {
    let mut best: Option<(u64, PathBuf, SystemTime)> = None;
    for job_dir in std::fs::read_dir(dir).ok()?.flatten() {
        let created = job_dir
            .metadata()
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .ok()?;
        if created + std::time::Duration::from_secs(1) < since {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(job_dir.path()) else {
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
        Ok(SiteSnapshot {
            id: self.inner.config.site.clone(),
            nodes: vec![Node {
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
            })
    }

    async fn stop_with_savepoint(
        &self,
        _job: &JobId,
        _generation: u64,
        _target_dir: &str,
    ) -> Result<String, SiteError> {
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
            })
    }

    async fn health(&self) -> SiteHealth {
        SiteHealth {
            site: self.inner.config.site.clone(),
            api_reachable: true,
            last_contact: Some(Utc::now()),
            detail: None,
        }
    }
}
