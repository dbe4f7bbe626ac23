//! One job, as every part of the controller sees it: the StreamJob ↔ stored record ↔ launch
//! conversions, written once. A record's spec is read back (and checked) by
//! [`stream_job_of`], a new one made by [`new_record`]; [`engine_spec`] is what the failover
//! engine knows of it; [`launch`] turns it into what a site runs; the path rules (checkpoint
//! and savepoint directories, [`in_site_storage`]) and the Flink job id of a generation are
//! here or re-exported here.
//!
//! May use: `crate::state`, `crate::site` and the crates. Must never: do I/O, hold state, or
//! reach up into the controller, the API or the drivers (it is the floor they stand on;
//! `tests/layering.rs` keeps it so).

pub mod launch;
pub mod origin;

use failover::{Event, FailoverMode, JobSpec, SiteMoves};
use scheduler::input::{StreamJob, streamjob};
use scheduler::model::{JobId, SiteId};

pub use crate::site::{flink_job_id, savepoints_under};
pub use launch::{in_site_storage, launch_spec, spec_hash};
pub use origin::{ORIGIN_ANNOTATION, Scope, origin, origin_of};

use crate::state::{CheckpointPointer, JobRecord, JobStatus};

/// The stored record of a new job: generation 0 (never launched), no placement.
pub fn new_record(job: &StreamJob) -> JobRecord {
    JobRecord {
        namespace: job.metadata.namespace.clone(),
        name: job.metadata.name.clone(),
        spec: job.clone().into(),
        generation: 0,
        placement: None,
        status: JobStatus::accepted(),
    }
}

/// The StreamJob a record holds (the whole object as the user gave it), checked as admission
/// checks a new job. `Err` (the reason) for a record the controller must not act on: a spec
/// that does not decode or breaks a rule or bound (one written straight into the store, or
/// admitted by an older version), a name that is not the spec's, or a generation past
/// [`scheduler::limits::MAX_GENERATION`]. Every reader of job records goes through here, so
/// such a record is reported, never obeyed.
pub fn stream_job_of(record: &JobRecord) -> Result<StreamJob, String> {
    if record.generation > scheduler::limits::MAX_GENERATION {
        return Err(format!(
            "generation {} is past the largest twinsite writes ({})",
            record.generation,
            scheduler::limits::MAX_GENERATION
        ));
    }
    let job = record
        .spec
        .stream_job()
        .map_err(|e| format!("the spec does not decode as a StreamJob: {e}"))?
        .clone();
    if job.metadata.namespace != record.namespace || job.metadata.name != record.name {
        return Err(format!(
            "the spec is of {}, not {}/{}",
            job.id(),
            record.namespace,
            record.name
        ));
    }
    job.validate().map_err(|e| e.to_string())?;
    Ok(job)
}

/// The engine's view of a stored job: its demand, and whether it may start without state.
pub fn engine_spec(record: &JobRecord) -> Option<(JobSpec, streamjob::FailoverTrigger)> {
    let job = stream_job_of(record).ok()?;
    let demand = job.demand().ok()?;
    let mode = if job.spec.checkpoints.is_some() {
        FailoverMode::RestoreRequired
    } else {
        // No checkpoints configured: the job keeps no state twinsite could restore.
        FailoverMode::FreshStartAllowed
    };
    let site_moves = match job.spec.failover.mode {
        streamjob::FailoverTrigger::Manual => SiteMoves::OperatorOnly,
        streamjob::FailoverTrigger::Auto | streamjob::FailoverTrigger::None => SiteMoves::Automatic,
    };
    // Sites its jar is not verified in: the engine moves it to none of them.
    let hash = spec_hash(&job).ok()?;
    let jar_missing = record
        .status
        .clone()
        .jar
        .map(|jar| jar.missing(&job.spec.jar_uri, &hash))
        .unwrap_or_default();
    Some((
        JobSpec {
            demand,
            mode,
            site_moves,
            jar_missing,
        },
        job.spec.failover.mode,
    ))
}

/// The generation a checkpoint path belongs to: Flink job ids are derived per generation
/// (`flink_job_id`), and checkpoint paths carry them. Looks a few generations back.
pub fn generation_of_path(job: &JobId, current: u64, path: &str) -> Option<u64> {
    (current.saturating_sub(8)..=current).rev().find(|g| {
        let id = flink_job_id(job, *g);
        path.contains(&id)
    })
}

/// The engine event for a replicated pointer the store holds, with the generation that
/// wrote it (from the Flink job id in its path).
pub fn replicated_event(
    job: &JobId,
    current_generation: u64,
    site: &str,
    pointer: &CheckpointPointer,
) -> Option<Event> {
    let generation = generation_of_path(job, current_generation, &pointer.uri)?;
    Some(Event::CheckpointReplicated {
        job: job.clone(),
        replica: failover::CheckpointPointer {
            site: SiteId(site.to_string()),
            generation,
            id: pointer.checkpoint_id,
            path: pointer.uri.clone(),
            completed_at: chrono::DateTime::from_timestamp_millis(pointer.recorded_at_unix_ms)?,
            kind: failover::RestorePointKind::Checkpoint,
        },
    })
}

/// The tenant a stored job counts against (admission through the API and the StreamJob
/// watch): its spec's, or its namespace when the spec names none.
pub fn stored_tenant(record: &JobRecord) -> &str {
    record.spec.tenant().unwrap_or(&record.namespace)
}

/// Where a job's checkpoints go when its spec names no `checkpoints.dir`.
pub fn default_checkpoint_dir(namespace: &str, name: &str) -> String {
    format!("hdfs:///flink/checkpoints/{namespace}/{name}")
}

/// A job's checkpoint directory as its spec gives it (no trailing `/`), or the default one.
pub fn checkpoint_dir(job: &StreamJob) -> String {
    job.spec
        .checkpoints
        .as_ref()
        .map(|c| c.dir.trim_end_matches('/').to_string())
        .unwrap_or_else(|| default_checkpoint_dir(&job.metadata.namespace, &job.metadata.name))
}

/// Where the controller asks a job's savepoints to go: beside its checkpoints.
pub fn savepoint_dir(job: &StreamJob) -> String {
    savepoints_under(&checkpoint_dir(job))
}
