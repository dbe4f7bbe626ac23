//! Errors of the state store, split the way openraft splits them: fencing and conflicts the
//! caller handles, `Unavailable` it retries, `Corrupt` it must not paper over.

use std::path::PathBuf;

/// Everything a state store operation can fail with. Every variant names the key or file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// This controller holds no leadership, so it may not write at all.
    #[error("write to {key} refused: this controller does not hold leadership")]
    NotLeader { key: String },

    /// This controller believed it led, but its leader key is gone or was re-created: another
    /// controller may lead now, so the write was rejected by the store (fencing).
    #[error(
        "write to {key} fenced: leader key {leader_key} (created at revision {leader_rev}) is no longer held"
    )]
    Fenced {
        key: String,
        leader_key: String,
        leader_rev: i64,
    },

    /// An optimistic update lost a race: the record changed since it was read.
    /// Revisions are mod revisions; `None` means the record does not exist.
    #[error("conflict on {key}: expected revision {expected}, found {actual}", expected = show_revision(*expected), actual = show_revision(*actual))]
    Conflict {
        key: String,
        expected: Option<i64>,
        actual: Option<i64>,
    },

    /// A site epoch may only increase; an older epoch is a stale writer.
    #[error("site epoch of {key} may only increase: stored {stored}, offered {offered}")]
    EpochRegression {
        key: String,
        stored: u64,
        offered: u64,
    },

    /// The operation needs a record that does not exist.
    #[error("{key} does not exist")]
    NotFound { key: String },

    /// A name given by the caller cannot be used as a key segment.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    /// The store could not be reached or did not answer in time. Retrying may succeed.
    #[error("state store unavailable during {operation} on {key}: {reason}")]
    Unavailable {
        operation: &'static str,
        key: String,
        reason: String,
    },

    /// A counter the store relies on (a revision, a job's generation, the audit sequence)
    /// is at its largest value: the next write would wrap it or repeat an earlier value,
    /// which breaks compare-and-set, so the store refuses. Retrying cannot help.
    #[error("{location}: {counter} is {value}, the largest it can be; {consequence}")]
    CounterLimit {
        location: String,
        counter: &'static str,
        value: String,
        consequence: &'static str,
    },

    /// Stored bytes do not decode or fail their checksum. Retrying cannot help.
    #[error("corrupt state in {location}: {reason}")]
    Corrupt { location: String, reason: String },

    /// Another process (or another instance in this process) has the embedded store open.
    #[error("embedded state directory {} is in use by another process (lock file {})", dir.display(), lock_file.display())]
    Locked { dir: PathBuf, lock_file: PathBuf },

    /// The embedded store's directory cannot be created, read or written.
    #[error("embedded state I/O failed on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn show_revision(revision: Option<i64>) -> String {
    match revision {
        Some(revision) => revision.to_string(),
        None => "none (absent)".to_owned(),
    }
}

impl StateError {
    /// True when the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StateError::Unavailable { .. })
    }

    /// True when this controller must stop acting as leader.
    pub fn is_leadership_lost(&self) -> bool {
        matches!(
            self,
            StateError::NotLeader { .. } | StateError::Fenced { .. }
        )
    }

    /// A short, fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StateError::NotLeader { .. } => "not_leader",
            StateError::Fenced { .. } => "fenced",
            StateError::Conflict { .. } => "conflict",
            StateError::EpochRegression { .. } => "epoch_regression",
            StateError::NotFound { .. } => "not_found",
            StateError::InvalidName { .. } => "invalid_name",
            StateError::Unavailable { .. } => "unavailable",
            StateError::CounterLimit { .. } => "counter_limit",
            StateError::Corrupt { .. } => "corrupt",
            StateError::Locked { .. } => "locked",
            StateError::Io { .. } => "io",
        }
    }
}
