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

    /// The greatest key starting with `prefix`.
    async fn last(&self, prefix: &str) -> Result<Option<(String, KvEntry)>, StateError>;

    /// Stores `value` if `expected` holds; returns the new mod revision.
    async fn put(&self, key: &str, value: Vec<u8>, expected: Expected) -> Result<i64, StateError>;

    /// Removes `key` if `expected` holds; returns whether it existed.
    async fn delete(&self, key: &str, expected: Expected) -> Result<bool, StateError>;
}
