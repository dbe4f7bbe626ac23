//! What a StreamJob's `.status` says, from the stored job and its checkpoint pointers, and
//! whether it is worth a write: pure.
//!
//! A status is written when anything but its checkpoints changed (phase, site, generation,
//! message, observed generation), and when only checkpoints moved, once the published one is
//! `checkpoint_refresh` older than the current one: a job checkpointing every 30 s would
//! otherwise cost its cluster a status write (and a watch event to every watcher) every 30 s,
//! a thousand jobs dozens a second. kubectl shows the replicated checkpoint's age from its
//! timestamp (a `date` printer column), so the age itself never needs a write.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::controller::JobStatus;
use crate::crd::{PublishedCheckpoint, StreamJobPhase, StreamJobStatus};
use crate::state::{CheckpointEntry, CheckpointKind, JobRecord};

/// The status of an object whose job is `record` (`None`: nothing stored for it) and whose
/// latest spec was `refused` (with why), at `object_generation`; `None` when there is
/// nothing to say yet (admitted, not yet stored).
pub fn desired_status(
    record: Option<&JobRecord>,
    checkpoints: &[CheckpointEntry],
    object_generation: Option<i64>,
    refused: Option<&str>,
) -> Option<StreamJobStatus> {
    let mut status = match record {
        Some(record) => {
            let job = JobStatus::from_value(&record.status);
            let mut status = StreamJobStatus::of(&job, record.generation);
            status.observed_generation = record
                .spec
                .pointer("/metadata/generation")
                .and_then(serde_json::Value::as_i64);
            status.last_checkpoint = newest(checkpoints, CheckpointKind::Completed, |site| {
                job.site.as_deref().is_none_or(|s| s == site)
            });
            status.replicated_checkpoint =
                newest(checkpoints, CheckpointKind::Replicated, |site| {
                    job.site.as_deref() != Some(site)
                });
            status
        }
        None if refused.is_some() => StreamJobStatus::default(),
        None => return None,
    };
    if let Some(reason) = refused {
        status.phase = Some(StreamJobPhase::Invalid);
        status.observed_generation = object_generation;
        status.message = Some(match (&status.site, status.generation) {
            (Some(site), Some(generation)) => format!(
                "spec refused: {reason}; generation {generation} keeps running the last accepted spec in {site}"
            ),
            _ => format!("spec refused: {reason}"),
        });
    }
    Some(status)
}

/// The newest pointer of `kind` among the sites `wanted` accepts.
fn newest(
    checkpoints: &[CheckpointEntry],
    kind: CheckpointKind,
    wanted: impl Fn(&str) -> bool,
) -> Option<PublishedCheckpoint> {
    checkpoints
        .iter()
        .filter(|c| c.kind == kind && wanted(&c.site))
        .max_by_key(|c| {
            (
                c.pointer.value.recorded_at_unix_ms,
                c.pointer.value.checkpoint_id,
            )
        })
        .and_then(|c| {
            let at = DateTime::<Utc>::from_timestamp_millis(c.pointer.value.recorded_at_unix_ms)?;
            Some(PublishedCheckpoint {
                site: c.site.clone(),
                id: c.pointer.value.checkpoint_id,
                path: c.pointer.value.uri.clone(),
                completed_at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            })
        })
}

/// Whether `desired` must be written over what the object shows (`published`; `None`: no
/// status, or one that does not read as a StreamJob status).
pub fn needs_write(
    published: Option<&StreamJobStatus>,
    desired: &StreamJobStatus,
    checkpoint_refresh: Duration,
) -> bool {
    let Some(published) = published else {
        return true;
    };
    if published == desired {
        return false;
    }
    let without_checkpoints = |s: &StreamJobStatus| StreamJobStatus {
        last_checkpoint: None,
        replicated_checkpoint: None,
        ..s.clone()
    };
    if without_checkpoints(published) != without_checkpoints(desired) {
        return true;
    }
    stale(
        published.last_checkpoint.as_ref(),
        desired.last_checkpoint.as_ref(),
        checkpoint_refresh,
    ) || stale(
        published.replicated_checkpoint.as_ref(),
        desired.replicated_checkpoint.as_ref(),
        checkpoint_refresh,
    )
}

fn stale(
    published: Option<&PublishedCheckpoint>,
    desired: Option<&PublishedCheckpoint>,
    refresh: Duration,
) -> bool {
    let (published, desired) = match (published, desired) {
        (None, None) => return false,
        (Some(p), Some(d)) if p == d => return false,
        (Some(p), Some(d)) if p.site == d.site => (p, d),
        _ => return true,
    };
    let time = |c: &PublishedCheckpoint| DateTime::parse_from_rfc3339(&c.completed_at).ok();
    match (time(published), time(desired)) {
        (Some(p), Some(d)) => {
            let ahead = (d - p).to_std().unwrap_or(Duration::ZERO);
            // Older than what is shown (a restore, a rewritten pointer): say so at once.
            d < p || ahead >= refresh
        }
        _ => true,
    }
}
