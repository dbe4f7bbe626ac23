//! Storage access, checkpoint discovery and replication between the two sites.
//!
//! - [`storage`]: the [`Storage`] trait, the local backend; [`hdfs`]: the HDFS backend.
//! - [`metadata`]: Flink `_metadata` parsing and URI rewriting.
//! - [`discovery`]: complete checkpoints under a checkpoint root.
//! - [`replicate`]: the [`Replicator`], its options, outcomes and metrics.
//! - [`ledger`]: where replicated checkpoints are recorded; [`jars`]: content-addressed jars.
//! - [`checksum`]: the integrity checksum (XXH64) of replicated files.
//! - [`savepoint`]: one savepoint copied to the other site's storage, verified.
//! - [`fault`]: a fault-injecting storage wrapper for tests of failure handling.
//!
//! May use: the filesystem and HDFS (through [`Storage`]), tokio. Must never: depend on
//! the scheduler, failover or controller, follow a symlink, or mark a checkpoint replicated
//! before every one of its files is verified at the peer.

pub mod bandwidth;
pub mod checksum;
pub mod discovery;
pub mod error;
pub mod fault;
pub mod hdfs;
pub mod jars;
pub mod ledger;
pub mod metadata;
pub mod replicate;
pub mod savepoint;
pub mod storage;
pub mod url;

pub use bandwidth::parse_bandwidth;
pub use error::{MetadataError, StorageError, StorageErrorKind, SyncError};
pub use ledger::{FileLedger, MemoryLedger, ReplicatedCheckpoint, ReplicationLedger};
pub use metadata::CheckpointMetadata;
pub use replicate::{
    JobMetrics, JobOutcome, ProgressEvent, ReplicationMetrics, Replicator, RoundReport,
    SiteStorage, SyncOptions, UriMode, VerifyMode,
};
pub use storage::{LocalStorage, Storage, storage_for};
pub use url::StorageUrl;
