//! The seam between the typed store and a backend: single-key reads and conditional writes
//! on byte values with mod revisions, which both etcd and the embedded store do atomically.

use async_trait::async_trait;

use super::{Expected, StateError};

/// A stored value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// A key-value backend. Writes are single-key and atomic; a backend that fences (etcd) fails
/// them with [`StateError::NotLeader`]/[`StateError::Fenced`] when leadership is not held.
#[async_trait]
pub trait KvBackend: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, StateError>;

    /// Keys starting with `prefix` and not before `start` (when given), ascending,
    /// at most `limit` of them (0: no limit).
    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, KvEntry)>, StateError>;

    /// The greatest key starting with `prefix` (and before `below`, when given).
    async fn last(
        &self,
        prefix: &str,
        below: Option<&str>,
    ) -> Result<Option<(String, KvEntry)>, StateError>;

    /// Stores `value` if `expected` holds; returns the new mod revision.
    async fn put(&self, key: &str, value: Vec<u8>, expected: Expected) -> Result<i64, StateError>;

    /// Removes `key` if `expected` holds; returns whether it existed.
    async fn delete(&self, key: &str, expected: Expected) -> Result<bool, StateError>;
}

/// What a store at its revision limit tells the operator.
const REVISION_LIMIT: &str = "no write can get a larger revision, and compare-and-set needs revisions that only grow: the store refuses to go on (copy the records into a fresh store)";

/// The revision after `current`, if revisions have room left. Both backends hand out
/// revisions `1..i64::MAX`; `i64::MAX` itself is the last one ever written.
pub(crate) fn next_revision(location: &str, current: i64) -> Result<i64, StateError> {
    current
        .checked_add(1)
        .ok_or_else(|| revision_limit(location, current))
}

/// Checks a revision a backend reports (a record's, or the store's counter at open).
/// `allow_max`: a record may hold `i64::MAX` (it was the last write); a store whose counter
/// is there cannot write again and is refused.
pub(crate) fn check_revision(
    location: &str,
    revision: i64,
    allow_max: bool,
) -> Result<i64, StateError> {
    if revision < 0 {
        return Err(StateError::Corrupt {
            location: location.to_owned(),
            reason: format!(
                "revision {revision} is negative: revisions start at 1 and only grow (a counter that wrapped?)"
            ),
        });
    }
    if revision == i64::MAX && !allow_max {
        return Err(revision_limit(location, revision));
    }
    Ok(revision)
}

fn revision_limit(location: &str, revision: i64) -> StateError {
    StateError::CounterLimit {
        location: location.to_owned(),
        counter: "the revision",
        value: revision.to_string(),
        consequence: REVISION_LIMIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_after_the_largest_is_refused_not_wrapped() {
        assert_eq!(next_revision("s", 41).unwrap(), 42);
        assert_eq!(next_revision("s", i64::MAX - 1).unwrap(), i64::MAX);
        let err = next_revision("/data/state", i64::MAX).unwrap_err();
        assert!(matches!(err, StateError::CounterLimit { .. }), "{err:?}");
        assert!(err.to_string().contains("/data/state"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn negative_revisions_are_corrupt_and_the_largest_only_on_a_record() {
        assert!(matches!(
            check_revision("r", -1, true),
            Err(StateError::Corrupt { .. })
        ));
        assert_eq!(check_revision("r", i64::MAX, true).unwrap(), i64::MAX);
        assert!(matches!(
            check_revision("store", i64::MAX, false),
            Err(StateError::CounterLimit { .. })
        ));
        assert_eq!(check_revision("r", 0, false).unwrap(), 0);
    }
}
