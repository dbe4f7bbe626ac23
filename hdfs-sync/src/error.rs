//! Typed errors of the crate. Every message names the URL, file or field at fault.

/// What went wrong with a storage call, in the categories replication decides on
/// (a missing source file is skipped, a full disk or a refusal is not retried at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    NotFound,
    PermissionDenied,
    NoSpace,
    /// A symbolic link below the storage root: never followed, on either side.
    Symlink,
    /// Something that is not a regular file (FIFO, device, socket, directory) where a file is
    /// read: opening a FIFO blocks and a device never ends.
    NotAFile,
    /// A file larger than the caller's bound (`_metadata`: [`crate::metadata::MAX_METADATA_BYTES`]).
    TooLarge,
    /// A path that does not lie under the storage's root.
    OutsideRoot,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {url}: {kind_text}{message}", kind_text = kind_text(*kind))]
pub struct StorageError {
    pub op: &'static str,
    pub url: String,
    pub kind: StorageErrorKind,
    pub message: String,
}

fn kind_text(kind: StorageErrorKind) -> &'static str {
    match kind {
        StorageErrorKind::NotFound => "not found: ",
        StorageErrorKind::PermissionDenied => "permission denied: ",
        StorageErrorKind::NoSpace => "no space left: ",
        StorageErrorKind::Symlink => "symbolic link refused: ",
        StorageErrorKind::NotAFile => "not a regular file: ",
        StorageErrorKind::TooLarge => "too large: ",
        StorageErrorKind::OutsideRoot => "outside the storage root: ",
        StorageErrorKind::Other => "",
    }
}

impl StorageError {
    pub fn new(
        op: &'static str,
        url: impl ToString,
        kind: StorageErrorKind,
        message: impl ToString,
    ) -> Self {
        Self {
            op,
            url: url.to_string(),
            kind,
            message: message.to_string(),
        }
    }

    /// Maps an OS error, keeping ENOSPC/EACCES/ENOENT distinguishable.
    pub fn from_io(op: &'static str, url: impl ToString, err: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let kind = match err.kind() {
            ErrorKind::NotFound => StorageErrorKind::NotFound,
            ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StorageErrorKind::NoSpace,
            _ if err.raw_os_error() == Some(28) => StorageErrorKind::NoSpace,
            _ => StorageErrorKind::Other,
        };
        Self::new(op, url, kind, err)
    }
}

/// A `_metadata` file that does not parse: where, and what the parser expected there.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: at byte {offset}: expected {expected}")]
pub struct MetadataError {
    pub file: String,
    pub offset: usize,
    pub expected: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("invalid storage URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("checkpoint metadata {0}")]
    Metadata(#[from] MetadataError),
    #[error(
        "verification failed for {url}: expected {expected_len} bytes {expected_checksum}, \
         found {actual_len} bytes {actual_checksum}"
    )]
    VerifyFailed {
        url: String,
        expected_len: u64,
        /// `<algorithm>:<hex>`: `xxh64:…` for replicated files, `sha256:…` for jars.
        expected_checksum: String,
        actual_len: u64,
        actual_checksum: String,
    },
    #[error(
        "checkpoint {checkpoint} references {reference}, which lies outside the source root {root}"
    )]
    ReferenceOutsideRoot {
        checkpoint: String,
        reference: String,
        root: String,
    },
    /// A file `_metadata` names relative to `chk-N/` that is not there: written by Flink
    /// before FLINK-39964 after a CLAIM restore from a native savepoint.
    #[error(
        "checkpoint {checkpoint} names `{file}` relative to its own directory, where it is not{searched}: \
         Flink before the fix of FLINK-39964 (2.3.0 and earlier) writes the files a job restored \
         in CLAIM mode from a native savepoint still uses so, and cannot restore such a \
         checkpoint itself; the directory the job was restored from (`restored_from`) tells \
         where they are"
    )]
    UnresolvedRelativeReference {
        checkpoint: String,
        file: String,
        /// `, nor … in <dir>` when a restored-from directory was searched, else empty.
        searched: String,
    },
    #[error("savepoint {savepoint} is not below the site's storage root {root}")]
    SavepointOutsideRoot { savepoint: String, root: String },
    #[error("{what} {url} took longer than {seconds} s")]
    Timeout {
        what: &'static str,
        url: String,
        seconds: u64,
    },
    #[error("ledger {path}: {message}")]
    Ledger { path: String, message: String },
    #[error("invalid option {field} = `{value}`: {reason}")]
    InvalidOption {
        field: &'static str,
        value: String,
        reason: String,
    },
}

impl SyncError {
    /// Errors worth retrying right away with backoff (a bad copy, a flaky connection);
    /// a missing file, a refusal or a full disk will not fix themselves in milliseconds.
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Storage(e) => e.kind == StorageErrorKind::Other,
            SyncError::VerifyFailed { .. } | SyncError::Timeout { .. } => true,
            _ => false,
        }
    }

    pub fn storage_kind(&self) -> Option<StorageErrorKind> {
        match self {
            SyncError::Storage(e) => Some(e.kind),
            _ => None,
        }
    }

    /// Short label for metrics and log fields.
    pub fn label(&self) -> &'static str {
        match self {
            SyncError::InvalidUrl { .. } => "invalid_url",
            SyncError::Storage(e) => match e.kind {
                StorageErrorKind::NotFound => "not_found",
                StorageErrorKind::PermissionDenied => "permission_denied",
                StorageErrorKind::NoSpace => "no_space",
                StorageErrorKind::Symlink => "symlink",
                StorageErrorKind::NotAFile => "not_a_file",
                StorageErrorKind::TooLarge => "too_large",
                StorageErrorKind::OutsideRoot => "outside_root",
                StorageErrorKind::Other => "storage",
            },
            SyncError::Metadata(_) => "metadata",
            SyncError::VerifyFailed { .. } => "verify_failed",
            SyncError::ReferenceOutsideRoot { .. } => "reference_outside_root",
            SyncError::SavepointOutsideRoot { .. } => "savepoint_outside_root",
            SyncError::UnresolvedRelativeReference { .. } => "unresolved_reference",
            SyncError::Timeout { .. } => "timeout",
            SyncError::Ledger { .. } => "ledger",
            SyncError::InvalidOption { .. } => "invalid_option",
        }
    }
}
