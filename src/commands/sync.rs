//! `twinsite sync`: replicate complete checkpoints from one site's storage to the other's,
//! once or continuously, with a progress bar on a terminal and log lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdfs_sync::jars::{JarSyncReport, sync_jars};
use hdfs_sync::url::Scheme;
use hdfs_sync::{
    FileLedger, JobOutcome, ProgressEvent, ReplicationLedger, Replicator, RoundReport, SiteStorage,
    Storage, StorageUrl, SyncOptions, UriMode, VerifyMode, parse_bandwidth, storage_for,
};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use super::parse_duration;
use crate::controller::jars::JAR_ROOT;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Checkpoint root at the source site: `hdfs://ns/flink/checkpoints`, `file:///data/ckpt`.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Checkpoint root at the peer site (created if missing).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The source site's storage root around --from (default: --from itself). A checkpoint
    /// may then use files anywhere in it, such as the native savepoint a job was restored from
    /// in CLAIM mode; they go to the same path below --to-storage.
    #[arg(long, value_name = "URL")]
    pub from_storage: Option<String>,
    /// The peer site's storage root around --to (default: --to itself). With both storage
    /// roots given, the jars the controller published (`<storage>/twinsite/jars/<sha256>/…`)
    /// are copied too, each verified against its SHA-256 address.
    #[arg(long, value_name = "URL")]
    pub to_storage: Option<String>,
    /// `JOB=URL`: the savepoint directory a job was restored from (repeatable), inside
    /// --from-storage. Flink 2.3.0 names the savepoint's files its checkpoints still use
    /// relative to `chk-N/`, where they are not (FLINK-39964); they are looked up there.
    #[arg(long = "restored-from", value_name = "JOB=URL")]
    pub restored_from: Vec<String>,
    /// Only this job (repeatable); without it, every job directory under --from.
    #[arg(long = "job", value_name = "ID")]
    pub jobs: Vec<String>,
    /// Replicate each job's newest complete checkpoint once, then exit.
    #[arg(long)]
    pub once: bool,
    /// Bytes per second for all jobs together, e.g. `200MiB`, `1.5GB`; default unlimited.
    #[arg(long, value_name = "RATE")]
    pub bandwidth: Option<String>,
    /// Where replicated checkpoints are recorded (JSON); default
    /// `<--to>/.twinsite/replication-ledger.json` for a `file://` peer.
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Pause between rounds when running continuously, e.g. `10s`, `1m`.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub interval: String,
    /// Replicated checkpoints kept at the peer per job.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retain: usize,
    /// How the peer's `_metadata` names the files it references.
    #[arg(long, value_enum, default_value_t = UriModeArg::Rewrite)]
    pub uri_mode: UriModeArg,
    /// How each copied file is verified.
    #[arg(long, value_enum, default_value_t = VerifyArg::ReadBack)]
    pub verify: VerifyArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UriModeArg {
    /// Rewrite absolute URIs from the source root to the peer root.
    Rewrite,
    /// Both sites resolve one logical nameservice: copy `_metadata` byte for byte.
    SharedNameservice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyArg {
    /// Re-read every copied file at the peer and compare length and checksum (XXH64).
    ReadBack,
    /// Compare lengths only (cheaper; trusts the checksum of the bytes sent).
    Length,
}

pub fn run(args: &SyncArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(sync(args));
    stop_runtime(runtime);
    // The writers the runtime's threads did not get to drop within the grace (a loaded
    // machine may not schedule them): their temporary files are removed here, by this thread.
    let discarded = hdfs_sync::storage::discard_unfinished_local_writes(SHUTDOWN_GRACE);
    if discarded > 0 {
        tracing::debug!(
            discarded,
            "removed temporary files of unfinished copies at exit"
        );
    }
    result
}

/// How long the exit waits for file operations already handed to blocking threads.
///
/// Shutting the runtime down first drops every task (a dropped local writer removes its
/// temporary file), then waits this long for the blocking threads (the workers that drop the
/// tasks are among them: what they did not reach in time, `run` discards afterwards). What is cut short is safe:
/// an unfinished write is a temporary file, a rename is atomic, and nothing is recorded before
/// a whole checkpoint is verified. A healthy disk finishes a chunk in milliseconds; a call
/// stuck on a hung filesystem (or, before FIFOs were refused, a FIFO's open) never finishes,
/// and must not hold the exit: the README promises that a signal stops `sync` at once.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

fn stop_runtime(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
}

async fn sync(args: &SyncArgs) -> anyhow::Result<()> {
    let from = StorageUrl::parse(&args.from).context("--from")?;
    let to = StorageUrl::parse(&args.to).context("--to")?;
    if to.starts_with(&from) || from.starts_with(&to) {
        // The peer's job directories would look like source jobs, or the other way round.
        bail!("--from {from} and --to {to} overlap: give two separate directories");
    }
    let bandwidth = args
        .bandwidth
        .as_deref()
        .map(parse_bandwidth)
        .transpose()
        .context("--bandwidth")?;
    let interval = parse_duration("--interval", &args.interval)?;
    if interval.is_zero() {
        bail!("--interval {:?}: must be longer than zero", args.interval);
    }
    if args.retain == 0 {
        bail!("--retain 0: at least the newest replicated checkpoint must be kept");
    }
    let ledger_path = match &args.ledger {
        Some(path) => path.clone(),
        // Beside the copies it describes, where the peer's verified manifests also live.
        None if to.scheme() == Scheme::File => {
            PathBuf::from(to.path()).join(".twinsite/replication-ledger.json")
        }
        None => bail!(
            "--ledger is required when --to is not a file:// URL ({to}): the ledger is a local \
             file recording which checkpoints are restorable at the peer"
        ),
    };

    let storage_root = |flag: &str, given: &Option<String>, root: &StorageUrl, root_flag: &str| {
        let Some(given) = given else {
            return Ok(root.clone());
        };
        let url = StorageUrl::parse(given).with_context(|| flag.to_string())?;
        if !root.starts_with(&url) {
            bail!(
                "{root_flag} {root} is not inside {flag} {url}: the storage root holds the checkpoint root"
            );
        }
        Ok(url)
    };
    let from_storage = storage_root("--from-storage", &args.from_storage, &from, "--from")?;
    let to_storage = storage_root("--to-storage", &args.to_storage, &to, "--to")?;
    if to_storage.starts_with(&from_storage) || from_storage.starts_with(&to_storage) {
        bail!(
            "--from-storage {from_storage} and --to-storage {to_storage} overlap: a site's \
             files could be read as the other's; give two separate storage roots"
        );
    }
    let mut restored_from = std::collections::BTreeMap::new();
    for given in &args.restored_from {
        let Some((job, dir)) = given.split_once('=').filter(|(job, _)| !job.is_empty()) else {
            bail!("--restored-from {given:?}: expected JOB=URL");
        };
        let dir = StorageUrl::parse(dir).with_context(|| format!("--restored-from {given}"))?;
        if !dir.starts_with(&from_storage) {
            bail!(
                "--restored-from {given}: {dir} is not inside the source storage \
                 {from_storage} (give --from-storage)"
            );
        }
        if restored_from.insert(job.to_string(), dir).is_some() {
            bail!("--restored-from: job {job} given twice");
        }
    }

    // Each backend is confined to its storage root (below it, no link is followed).
    let source = storage_for(&from_storage).with_context(|| format!("--from {from}"))?;
    let peer = storage_for(&to_storage).with_context(|| format!("--to {to}"))?;
    // Jars live beside the checkpoints, in the storage roots: synced only when both are named.
    let jars = match (&args.from_storage, &args.to_storage) {
        (Some(_), Some(_)) => Some(JarSync {
            from: Arc::clone(&source),
            from_root: from_storage.join(JAR_ROOT)?,
            to: Arc::clone(&peer),
            to_root: to_storage.join(JAR_ROOT)?,
        }),
        _ => None,
    };
    check_source(source.as_ref(), &from).await?;
    peer.mkdirs(&to)
        .await
        .with_context(|| format!("--to {to}: cannot create the peer checkpoint root"))?;
    if args.ledger.is_none() {
        // The default ledger lives below the peer root, where nothing may be a link either:
        // checked (and its directory made) through the peer storage, which refuses them.
        check_default_ledger(peer.as_ref(), &to).await?;
    }
    let ledger: Arc<dyn ReplicationLedger> =
        Arc::new(FileLedger::open(&ledger_path).await.context("--ledger")?);

    let options = SyncOptions {
        bandwidth,
        jobs: (!args.jobs.is_empty()).then(|| args.jobs.clone()),
        once: args.once,
        interval,
        retain: args.retain,
        uri_mode: match args.uri_mode {
            UriModeArg::Rewrite => UriMode::Rewrite,
            UriModeArg::SharedNameservice => UriMode::SharedNameservice,
        },
        verify: match args.verify {
            VerifyArg::ReadBack => VerifyMode::ReadBack,
            VerifyArg::Length => VerifyMode::LengthOnly,
        },
        restored_from,
        ..SyncOptions::default()
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let replicator = Replicator::between(
        SiteStorage {
            storage: source,
            storage_root: from_storage,
            checkpoint_root: from.clone(),
        },
        SiteStorage {
            storage: peer,
            storage_root: to_storage,
            checkpoint_root: to.clone(),
        },
        ledger.clone(),
        options,
    )
    .context("--from-storage, --to-storage, --restored-from")?
    .with_progress(tx);
    tracing::info!(
        from = %from,
        to = %to,
        ledger = %ledger_path.display(),
        bandwidth = %bandwidth.map_or("unlimited".into(), |b| format!("{}/s", HumanBytes(b))),
        once = args.once,
        "replicating"
    );

    let progress = Progress::new(std::io::stderr().is_terminal());
    if args.once {
        let round = drive(
            async {
                let jars = match &jars {
                    Some(jars) => Some(jars.round().await),
                    None => None,
                };
                (replicator.run_once().await, jars)
            },
            rx,
            progress,
        )
        .await;
        match round {
            Finished::Done((report, jars)) => {
                let checkpoints = report_round(&report.context("--from")?, ledger.as_ref()).await;
                let jars = jars.map_or(Ok(()), report_jars);
                checkpoints.and(jars)
            }
            Finished::Interrupted(signal) => bail!(
                "interrupted by {signal} before the round finished: checkpoints still being \
                 copied were not recorded; files already verified are reused by the next run"
            ),
        }
    } else {
        // Jar rounds run beside the checkpoint rounds, at the same interval, until exit.
        let jar_rounds = jars.map(|jars| {
            tokio::spawn(async move {
                loop {
                    if let Err(error) = report_jars(jars.round().await) {
                        tracing::warn!("{error:#}");
                    }
                    tokio::time::sleep(interval).await;
                }
            })
        });
        let endless = async {
            let result = replicator.run(std::future::pending()).await;
            if let Some(task) = &jar_rounds {
                task.abort();
            }
            result
        };
        match drive(endless, rx, progress).await {
            Finished::Done(result) => result.context("--from"),
            Finished::Interrupted(signal) => {
                tracing::info!(
                    signal,
                    "stopped; checkpoints still being copied were not recorded"
                );
                Ok(())
            }
        }
    }
}

/// The jar roots of the two storages.
struct JarSync {
    from: Arc<dyn Storage>,
    from_root: StorageUrl,
    to: Arc<dyn Storage>,
    to_root: StorageUrl,
}

impl JarSync {
    async fn round(&self) -> Result<JarSyncReport, hdfs_sync::SyncError> {
        sync_jars(&*self.from, &self.from_root, &*self.to, &self.to_root).await
    }
}

/// Prints what a jar round did; `Err` naming every jar not copied.
fn report_jars(report: Result<JarSyncReport, hdfs_sync::SyncError>) -> anyhow::Result<()> {
    let report = report.context("jars")?;
    for jar in &report.copied {
        println!("jar {}: copied and verified", jar.relative_path());
    }
    println!(
        "jars: {} copied ({}), {} already at the peer, {} not copied",
        report.copied.len(),
        HumanBytes(report.bytes),
        report.present,
        report.skipped.len()
    );
    if !report.skipped.is_empty() {
        let lines: Vec<String> = report
            .skipped
            .iter()
            .map(|(url, reason)| format!("{url}: {reason}"))
            .collect();
        bail!("jars not copied:\n  {}", lines.join("\n  "));
    }
    Ok(())
}

/// The source root must exist and be a directory; an unreachable cluster fails here, with
/// the URL, rather than as one failure per job.
async fn check_source(source: &dyn Storage, from: &StorageUrl) -> anyhow::Result<()> {
    match source.stat(from).await {
        Ok(Some(meta)) if meta.is_dir => Ok(()),
        Ok(Some(_)) => bail!("--from {from}: is a file, not a checkpoint directory"),
        Ok(None) => bail!("--from {from}: no such directory"),
        Err(e) => Err(e).with_context(|| format!("--from {from}: cannot reach the source")),
    }
}

/// `<peer root>/.twinsite/` and the ledger in it, when they exist, are a directory and a
/// file, not links (a linked `.twinsite/` would put the ledger's writes outside the peer).
async fn check_default_ledger(peer: &dyn Storage, to: &StorageUrl) -> anyhow::Result<()> {
    let dir = to.join(".twinsite")?;
    peer.mkdirs(&dir)
        .await
        .with_context(|| format!("--to {to}: cannot create the ledger's directory"))?;
    let ledger = dir.join("replication-ledger.json")?;
    match peer.stat(&ledger).await {
        Ok(Some(meta)) if meta.is_dir => {
            bail!("{ledger}: the default ledger is a directory, not a file")
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--to {to}: the default ledger")),
    }
}

enum Finished<T> {
    Done(T),
    Interrupted(&'static str),
}

/// Runs `work` while showing its progress, until it ends or a signal arrives. On a signal
/// `work` is dropped: copies in flight are abandoned before their rename (a dropped local
/// writer removes its temporary file), and nothing is recorded for an unfinished checkpoint,
/// since the ledger is written only after every file of a checkpoint is verified.
async fn drive<T>(
    work: impl std::future::Future<Output = T>,
    mut events: UnboundedReceiver<ProgressEvent>,
    mut progress: Progress,
) -> Finished<T> {
    tokio::pin!(work);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let finished = loop {
        tokio::select! {
            biased;
            signal = &mut signal => break Finished::Interrupted(signal),
            Some(event) = events.recv() => progress.event(event),
            done = &mut work => break Finished::Done(done),
            _ = tick.tick() => progress.tick(),
        }
    };
    while let Ok(event) = events.try_recv() {
        progress.event(event);
    }
    progress.finish();
    finished
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, naming the signal.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still stops");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Prints one line per job to stdout; any failed job makes the command fail, naming it.
async fn report_round(report: &RoundReport, ledger: &dyn ReplicationLedger) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (job, outcome) in &report.jobs {
        match outcome {
            JobOutcome::Replicated {
                checkpoint_id,
                bytes_copied,
                files_copied,
                files_reused,
            } => {
                let pointer = ledger
                    .latest_replicated(job)
                    .await
                    .ok()
                    .flatten()
                    .map(|c| c.peer_pointer)
                    .unwrap_or_default();
                println!(
                    "{job}: chk-{checkpoint_id} replicated to {pointer} ({files_copied} files, \
                     {} copied; {files_reused} files reused)",
                    HumanBytes(*bytes_copied)
                );
            }
            JobOutcome::UpToDate {
                latest_replicated: Some(id),
            } => println!("{job}: up to date (chk-{id} replicated)"),
            JobOutcome::UpToDate {
                latest_replicated: None,
            } => println!("{job}: no complete checkpoint at the source"),
            JobOutcome::SourceVanished { checkpoint_id } => println!(
                "{job}: chk-{checkpoint_id} was removed at the source during the copy (Flink \
                 subsumed it); the next round takes a newer one"
            ),
            JobOutcome::Failed {
                checkpoint_id,
                error,
                ..
            } => {
                let checkpoint = checkpoint_id.map_or(String::new(), |id| format!(" chk-{id}"));
                println!("{job}:{checkpoint} FAILED: {error}");
                failures.push(format!("{job}{checkpoint}: {error}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} jobs failed: {}",
            failures.len(),
            report.jobs.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

/// Shows replication progress: a byte bar on a terminal, log lines otherwise.
enum Progress {
    Bar {
        bar: ProgressBar,
        /// Per job: bytes the running checkpoint references, and bytes copied for it so far.
        running: HashMap<String, (u64, u64)>,
    },
    Log {
        copied: u64,
        logged: u64,
        since: Instant,
    },
}

impl Progress {
    fn new(terminal: bool) -> Self {
        if !terminal {
            return Progress::Log {
                copied: 0,
                logged: 0,
                since: Instant::now(),
            };
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{spinner} {msg:44!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar {
            bar,
            running: HashMap::new(),
        }
    }

    fn event(&mut self, event: ProgressEvent) {
        match self {
            Progress::Bar { bar, running } => match event {
                ProgressEvent::CheckpointStarted {
                    job,
                    checkpoint_id,
                    bytes,
                    ..
                } => {
                    bar.inc_length(bytes);
                    bar.set_message(format!("{job} chk-{checkpoint_id}"));
                    running.insert(job, (bytes, 0));
                }
                ProgressEvent::BytesCopied { job, bytes } => {
                    bar.inc(bytes);
                    if let Some((_, copied)) = running.get_mut(&job) {
                        *copied += bytes;
                    }
                }
                ProgressEvent::FileCopied { .. } | ProgressEvent::CheckpointBacklog { .. } => {}
                ProgressEvent::CheckpointReplicated { job, checkpoint_id } => {
                    Self::settle(bar, running, &job);
                    bar.println(format!("{job}: chk-{checkpoint_id} replicated"));
                }
                ProgressEvent::CheckpointSkipped {
                    job,
                    checkpoint_id,
                    reason,
                } => {
                    Self::settle(bar, running, &job);
                    bar.println(format!("{job}: chk-{checkpoint_id} skipped: {reason}"));
                }
                ProgressEvent::JobFailed { job, error } => {
                    Self::settle(bar, running, &job);
                    bar.println(format!("{job}: failed: {error}"));
                }
            },
            Progress::Log { copied, .. } => match event {
                ProgressEvent::CheckpointStarted {
                    job,
                    checkpoint_id,
                    files,
                    bytes,
                } => tracing::info!(
                    job,
                    checkpoint = checkpoint_id,
                    files,
                    bytes = %HumanBytes(bytes),
                    "copying checkpoint"
                ),
                ProgressEvent::BytesCopied { bytes, .. } => *copied += bytes,
                ProgressEvent::CheckpointBacklog {
                    job,
                    checkpoint_id,
                    files,
                    bytes,
                } => tracing::debug!(
                    job,
                    checkpoint = checkpoint_id,
                    files,
                    bytes = %HumanBytes(bytes),
                    "not yet at the peer"
                ),
                ProgressEvent::FileCopied { job, path, bytes } => {
                    tracing::debug!(job, path, bytes, "file verified at the peer");
                }
                ProgressEvent::CheckpointReplicated { job, checkpoint_id } => tracing::info!(
                    job,
                    checkpoint = checkpoint_id,
                    "checkpoint replicated and recorded"
                ),
                ProgressEvent::CheckpointSkipped {
                    job,
                    checkpoint_id,
                    reason,
                } => tracing::info!(
                    job,
                    checkpoint = checkpoint_id,
                    reason,
                    "checkpoint skipped"
                ),
                // The replicator itself logs the failure as a warning.
                ProgressEvent::JobFailed { .. } => {}
            },
        }
    }

    /// A checkpoint ended: what it referenced but did not copy (reused files, or the rest of
    /// a failed copy) leaves the bar's total so the bar can reach its end.
    fn settle(bar: &ProgressBar, running: &mut HashMap<String, (u64, u64)>, job: &str) {
        if let Some((expected, copied)) = running.remove(job) {
            bar.dec_length(expected.saturating_sub(copied));
        }
    }

    /// Periodic log line while bytes are moving (no bar to watch).
    fn tick(&mut self) {
        if let Progress::Log {
            copied,
            logged,
            since,
        } = self
            && *copied > *logged
        {
            let secs = since.elapsed().as_secs_f64().max(0.001);
            let rate = ((*copied - *logged) as f64 / secs) as u64;
            tracing::info!(
                copied = %HumanBytes(*copied),
                rate = %format!("{}/s", HumanBytes(rate)),
                "progress"
            );
            *logged = *copied;
            *since = Instant::now();
        }
    }

    fn finish(&mut self) {
        match self {
            Progress::Bar { bar, .. } => bar.finish_and_clear(),
            Progress::Log { .. } => self.tick(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a signal leaves when a file operation is stuck in the kernel (a hung mount): the
    /// exit must not wait for it (it used to wait 5 s).
    #[test]
    fn stopping_the_runtime_does_not_wait_for_a_stuck_blocking_call() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        runtime.spawn_blocking(move || {
            started_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(30));
        });
        started_rx.recv().unwrap();
        let stopping = Instant::now();
        stop_runtime(runtime);
        assert!(
            stopping.elapsed() < Duration::from_secs(1),
            "took {:?}",
            stopping.elapsed()
        );
    }
}
