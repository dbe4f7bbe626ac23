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

use crate::crd::{PublishedCheckpoint, PublishedJar, StreamJobPhase, StreamJobStatus};
use crate::state::StoredSpec;
use crate::state::{CheckpointEntry, CheckpointKind, JobRecord};

/// The longest `status.message` written, in bytes. An object may be as large as the API
/// server allows (1.5 MiB), and a refusal names every bad field in it: a status too large to
/// write would fail every round, for ever.
pub const MAX_STATUS_MESSAGE: usize = 8 * 1024;

/// The longest jar error or per-site jar reason written, in bytes: one per site the job
/// may run in, each naming a URI and a storage error.
pub const MAX_JAR_REASON: usize = 1024;

/// `message` cut to [`MAX_STATUS_MESSAGE`] at a character boundary, saying so.
fn bounded(message: String) -> String {
    cut(message, MAX_STATUS_MESSAGE)
}

/// A jar reason cut to [`MAX_JAR_REASON`].
fn bounded_reason(reason: String) -> String {
    cut(reason, MAX_JAR_REASON)
}

fn cut(message: String, limit: usize) -> String {
    if message.len() <= limit {
        return message;
    }
    let total = message.len();
    let mut end = limit - 64;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … (cut at {end} of {total} bytes)", &message[..end])
}

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
            let job = record.status.clone();
            let mut status = StreamJobStatus::of(&job, record.generation);
            status.observed_generation = match &record.spec {
                StoredSpec::StreamJob(job) => job.metadata.generation,
                StoredSpec::Undecodable { raw, .. } => raw
                    .pointer("/metadata/generation")
                    .and_then(serde_json::Value::as_i64),
            };
            status.last_checkpoint = newest(checkpoints, CheckpointKind::Completed, |site| {
                job.site.as_deref().is_none_or(|s| s == site)
            });
            status.replicated_checkpoint =
                newest(checkpoints, CheckpointKind::Replicated, |site| {
                    job.site.as_deref() != Some(site)
                });
            status.jar = job
                .jar
                .as_ref()
                .map(|jar| PublishedJar::of(jar, bounded_reason));
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
    status.message = status.message.map(bounded);
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::state::{CheckpointPointer, Versioned};

    const MINUTE: Duration = Duration::from_secs(60);

    fn checkpoint(site: &str, id: u64, at_s: i64) -> PublishedCheckpoint {
        PublishedCheckpoint {
            site: site.into(),
            id,
            path: format!("hdfs://{site}/chk-{id}"),
            completed_at: DateTime::<Utc>::from_timestamp(at_s, 0)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    fn running(last: Option<PublishedCheckpoint>) -> StreamJobStatus {
        StreamJobStatus {
            observed_generation: Some(2),
            phase: Some(StreamJobPhase::Job(crate::state::JobPhase::Running)),
            site: Some("dc-a".into()),
            generation: Some(5),
            last_checkpoint: last,
            replicated_checkpoint: None,
            jar: None,
            message: None,
        }
    }

    #[test]
    fn a_jar_copy_that_verifies_is_written_at_once() {
        let site = |state: &str| crate::crd::PublishedJarSite {
            state: state.into(),
            reason: None,
        };
        let with_jar = |state: &str| StreamJobStatus {
            jar: Some(PublishedJar {
                source: "hdfs:///jars/a.jar".into(),
                sha256: Some("ab".into()),
                error: None,
                sites: [("dc-a".to_string(), site(state))].into(),
            }),
            ..running(None)
        };
        assert!(needs_write(
            Some(&with_jar("publishing")),
            &with_jar("verified"),
            MINUTE
        ));
        assert!(!needs_write(
            Some(&with_jar("verified")),
            &with_jar("verified"),
            MINUTE
        ));
    }

    #[test]
    fn a_jar_reason_is_cut_to_its_bound_naming_its_length() {
        let long = "x".repeat(10 * MAX_JAR_REASON);
        let cut = bounded_reason(long);
        assert!(cut.len() <= MAX_JAR_REASON, "{}", cut.len());
        assert!(cut.ends_with(&format!("of {} bytes)", 10 * MAX_JAR_REASON)));
    }

    #[test]
    fn a_newer_checkpoint_alone_is_written_once_the_shown_one_is_the_refresh_interval_older() {
        let shown = running(Some(checkpoint("dc-a", 10, 1000)));
        assert!(!needs_write(Some(&shown), &shown, MINUTE));
        assert!(!needs_write(
            Some(&shown),
            &running(Some(checkpoint("dc-a", 11, 1030))),
            MINUTE
        ));
        assert!(needs_write(
            Some(&shown),
            &running(Some(checkpoint("dc-a", 12, 1060))),
            MINUTE
        ));
        // Older than shown (restored from an earlier one), in another site, or gone: at once.
        assert!(needs_write(
            Some(&shown),
            &running(Some(checkpoint("dc-a", 9, 990))),
            MINUTE
        ));
        assert!(needs_write(
            Some(&shown),
            &running(Some(checkpoint("dc-b", 11, 1001))),
            MINUTE
        ));
        assert!(needs_write(Some(&shown), &running(None), MINUTE));
        assert!(needs_write(None, &shown, MINUTE));
    }

    #[test]
    fn the_status_shows_the_newest_checkpoint_of_the_jobs_site_and_the_newest_copy_elsewhere() {
        let record = JobRecord {
            namespace: "shop".into(),
            name: "orders".into(),
            spec: serde_json::from_value(json!({"metadata": {"generation": 3}})).unwrap(),
            generation: 5,
            placement: None,
            status: serde_json::from_value(json!({"phase": "running", "site": "dc-a"})).unwrap(),
        };
        let entry = |kind, site: &str, id, at_ms| CheckpointEntry {
            kind,
            site: site.into(),
            pointer: Versioned {
                value: CheckpointPointer {
                    checkpoint_id: id,
                    uri: format!("hdfs://{site}/chk-{id}"),
                    recorded_at_unix_ms: at_ms,
                },
                revision: 1,
            },
        };
        let checkpoints = [
            entry(CheckpointKind::Completed, "dc-a", 8, 8_000),
            // A stale pointer from when the job ran in dc-b: not this generation's site.
            entry(CheckpointKind::Completed, "dc-b", 9, 9_000),
            entry(CheckpointKind::Replicated, "dc-b", 7, 7_000),
            entry(CheckpointKind::Replicated, "dc-a", 6, 6_000),
        ];
        let status = desired_status(Some(&record), &checkpoints, Some(3), None).unwrap();
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.generation, Some(5));
        assert_eq!(status.last_checkpoint.unwrap().id, 8);
        let replicated = status.replicated_checkpoint.unwrap();
        assert_eq!((replicated.site.as_str(), replicated.id), ("dc-b", 7));
        assert_eq!(replicated.completed_at, "1970-01-01T00:00:07.000Z");

        let refused = desired_status(
            Some(&record),
            &checkpoints,
            Some(4),
            Some("spec.parallelism: must be at least 1"),
        )
        .unwrap();
        assert_eq!(refused.phase, Some(StreamJobPhase::Invalid));
        assert_eq!(refused.observed_generation, Some(4));
        let message = refused.message.unwrap();
        assert!(
            message.contains("spec.parallelism") && message.contains("generation 5"),
            "{message}"
        );
        assert_eq!(
            desired_status(None, &[], Some(1), None),
            None,
            "nothing stored, nothing to say"
        );
    }

    #[test]
    fn a_refusal_too_long_for_a_status_is_cut_saying_so() {
        let reason = "spec.siteOverrides.dc-a.env[\"É\"]: bad; ".repeat(1000);
        let status = desired_status(None, &[], Some(1), Some(&reason)).unwrap();
        let message = status.message.unwrap();
        assert!(message.len() <= MAX_STATUS_MESSAGE, "{}", message.len());
        assert!(message.starts_with("spec refused: spec.siteOverrides.dc-a.env"));
        assert!(
            message.ends_with(&format!(
                "of {} bytes)",
                reason.len() + "spec refused: ".len()
            )),
            "{}",
            &message[message.len() - 60..]
        );
    }

    proptest! {
        /// A shown status equal to the desired one is never rewritten; one differing in
        /// anything but its checkpoints always is.
        #[test]
        fn only_a_change_is_written(
            phase in 0usize..3, other_phase in 0usize..3,
            message in proptest::option::of("[a-z ]{0,8}"),
            other_message in proptest::option::of("[a-z ]{0,8}"),
            at in 0i64..10_000, other_at in 0i64..10_000,
        ) {
            let phases = [
                StreamJobPhase::Invalid,
                StreamJobPhase::Job(crate::state::JobPhase::Running),
                StreamJobPhase::Job(crate::state::JobPhase::Pending),
            ];
            let status = |p: usize, m: &Option<String>, at: i64| StreamJobStatus {
                phase: Some(phases[p]),
                message: m.clone(),
                ..running(Some(checkpoint("dc-a", at as u64, at)))
            };
            let shown = status(phase, &message, at);
            prop_assert!(!needs_write(Some(&shown), &shown, MINUTE));
            let desired = status(other_phase, &other_message, other_at);
            if phase != other_phase || message != other_message {
                prop_assert!(needs_write(Some(&shown), &desired, MINUTE));
            }
        }
    }
}
