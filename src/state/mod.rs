//! Durable controller state: one interface, an etcd and an embedded implementation.
//!
//! [`StateStore`] is the typed interface; [`KvStateStore`] implements it once over a small
//! [`KvBackend`] seam, with two backends: [`EtcdKv`] (every write a transaction guarded by the
//! leader key, so a deposed leader's writes fail) and [`EmbeddedKv`] (one process, a local
//! directory). Key layout and file format: see `src/state/README.md` and [`keys`].
//!
//! May use: the crates only (a floor layer; `tests/layering.rs` checks it). Must never: act
//! on what it stores, or let one record that does not decode fail a listing (it is reported
//! as an [`UnreadableRecord`]); the record types are the store's schema ([`SCHEMA_VERSION`]).

mod embedded;
mod error;
mod etcd;
pub mod keys;
mod kv;
mod record;
pub mod status;
mod store;

use async_trait::async_trait;

pub use embedded::{EmbeddedKv, EmbeddedStateStore};
pub use error::StateError;
pub use etcd::{EtcdConfig, EtcdKv, EtcdStateStore, EtcdTls, connect_etcd};
pub use keys::KeyLayout;
pub use kv::{KvBackend, KvEntry};
pub use record::{
    AuditEntry, AuditRecord, CheckpointEntry, CheckpointKind, CheckpointPointer, Expected,
    JobCheckpoint, JobPlacement, JobRecord, JobScan, RecordKind, SiteRecord, SiteState, StoredSpec,
    UnreadableRecord, Versioned,
};
pub use status::{
    Condition, JarSiteStatus, JarState, JarStatus, JobPhase, JobStatus, LastCheckpoint,
    REPLICATION_BEHIND, Restore,
};
pub use store::{KvStateStore, SCHEMA_VERSION};

/// The controller's durable state. Writes fail with [`StateError::NotLeader`] or
/// [`StateError::Fenced`] when this controller does not lead; the caller must then stop acting.
///
/// A stored record that does not decode as what its key promises is *unreadable*: listings
/// leave it out (a job's in [`JobScan::unreadable`]), a read of its key fails with
/// [`StateError::Corrupt`] naming it, and [`StateStore::unreadable_records`] lists it. One
/// such record never fails a listing.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The job; [`StateError::Corrupt`] when its record is unreadable.
    async fn get_job(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Versioned<JobRecord>>, StateError>;

    /// Every job record in one listing, with the unreadable ones apart. A caller that infers
    /// "no record, so the job is gone" must look at both.
    async fn scan_jobs(&self) -> Result<JobScan, StateError>;

    /// The jobs whose records decode, ordered by namespace then name.
    async fn list_jobs(&self) -> Result<Vec<Versioned<JobRecord>>, StateError> {
        Ok(self.scan_jobs().await?.jobs)
    }

    /// The records of every kind found unreadable by the latest read of their key (or by
    /// the latest listing holding it), by key. A record is forgotten once it decodes, is
    /// rewritten through this store, or is deleted.
    fn unreadable_records(&self) -> Vec<UnreadableRecord>;

    /// Reads again the remembered unreadable records of kinds no pass lists whole
    /// (checkpoint, failover, audit), one read each: one deleted or rewritten
    /// since by another writer (etcdctl) is forgotten, or remembered anew if still
    /// unreadable. Job and site records are settled by every pass's listing of them.
    async fn recheck_unreadable(&self) -> Result<(), StateError>;

    /// Creates or replaces a job under `expected`; returns the new revision.
    async fn put_job(&self, job: &JobRecord, expected: Expected) -> Result<i64, StateError>;

    /// Returns whether the job existed.
    async fn delete_job(
        &self,
        namespace: &str,
        name: &str,
        expected: Expected,
    ) -> Result<bool, StateError>;

    /// Atomically increments the job's generation (even under concurrent bumps) and returns
    /// the record as written.
    async fn bump_generation(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Versioned<JobRecord>, StateError>;

    async fn get_checkpoint(
        &self,
        namespace: &str,
        name: &str,
        kind: CheckpointKind,
        site: &str,
    ) -> Result<Option<Versioned<CheckpointPointer>>, StateError>;

    async fn put_checkpoint(
        &self,
        namespace: &str,
        name: &str,
        kind: CheckpointKind,
        site: &str,
        pointer: &CheckpointPointer,
    ) -> Result<i64, StateError>;

    /// Every pointer of one job, ordered by kind then site.
    async fn list_checkpoints(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<CheckpointEntry>, StateError>;

    /// Every pointer of every job in one read, ordered by namespace, name, kind, site. A
    /// pointer whose key or value does not parse is left out (and remembered, see
    /// [`StateStore::unreadable_records`]), so one odd record cannot hide every job's exposure.
    async fn list_all_checkpoints(&self) -> Result<Vec<JobCheckpoint>, StateError>;

    async fn get_site(&self, site: &str) -> Result<Option<Versioned<SiteRecord>>, StateError>;

    async fn list_sites(&self) -> Result<Vec<Versioned<SiteRecord>>, StateError>;

    /// Stores the site's state; fails with [`StateError::EpochRegression`] when the stored
    /// epoch is higher than the record's (an equal epoch updates the state within it). An
    /// unreadable stored record is replaced: its epoch is unknown to everyone.
    async fn put_site(&self, record: &SiteRecord) -> Result<i64, StateError>;

    /// Stores one failover engine record under `name` (see [`keys::KeyLayout::failover_record`]);
    /// the engine owns the content, the store only keeps it durable.
    async fn put_failover_record(
        &self,
        name: &str,
        record: &serde_json::Value,
    ) -> Result<i64, StateError>;

    /// Every failover engine record, by name, ordered by name.
    async fn list_failover_records(&self) -> Result<Vec<(String, serde_json::Value)>, StateError>;

    async fn delete_failover_record(&self, name: &str) -> Result<bool, StateError>;

    /// Appends to the audit log; returns the entry's sequence number (the first is 1; each
    /// is greater than every earlier one).
    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StateError>;

    /// Appends several entries (a failover round's audit trail), in order unless another
    /// appender races for the same numbers. Stops at the first failure; entries already
    /// appended stay.
    async fn append_audits(&self, entries: &[AuditEntry]) -> Result<(), StateError> {
        for entry in entries {
            self.append_audit(entry).await?;
        }
        Ok(())
    }

    /// Entries with `seq >= from_seq`, oldest first, at most `limit` (0: no limit).
    async fn list_audit(&self, from_seq: u64, limit: usize)
    -> Result<Vec<AuditRecord>, StateError>;
}
