//! The storage interface both sites' filesystems are reached through, and its local backend.
//! Writes always go to a temporary name beside the target and are renamed on commit.
//!
//! The local backend is confined to a root (the `--from` or `--to` directory) and never
//! follows a symbolic link below it, on either side: each path is opened one component at a
//! time from the root's directory (`openat` with `O_NOFOLLOW`), so a link swapped in between
//! a check and a use is refused too. Files are read only when they are regular files, and a
//! copy is created no wider than its source's permission bits.
//!
//! Files: this one holds the interface (`Storage`, its streams, `storage_for`, temporary
//! names); `local.rs` the local backend's readers, writers and unfinished writes; `walk.rs`
//! the no-follow walk below the root and what each call does there.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{StorageError, StorageErrorKind};
use crate::url::{Scheme, StorageUrl};

mod local;
mod walk;

pub use local::{LocalStorage, discard_unfinished_local_writes};

/// Size of the chunks streamed through copies (and through the bandwidth limiter).
pub const CHUNK_SIZE: usize = 1 << 20;

/// Suffix of in-progress writes; such files are never mistaken for finished ones.
pub const TEMP_SUFFIX: &str = ".twinsite-tmp";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    /// A symbolic link (never followed: `is_dir` is false even when it points at one).
    /// Backends that cannot tell (HDFS through hdfs-native) say `false`.
    pub is_symlink: bool,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    pub is_dir: bool,
    pub modified: Option<SystemTime>,
}

/// A whole small file and its permission bits, as [`Storage::read_bounded`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeFile {
    pub bytes: Vec<u8>,
    /// Permission bits of the file read (see [`ReadStream::permissions`]).
    pub permissions: Option<u32>,
}

/// A file being read, chunk by chunk.
#[async_trait]
pub trait ReadStream: Send {
    /// The next chunk, `None` at end of file.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError>;

    /// Permission bits (`0o777` at most) of the file being read, when the backend knows them:
    /// a copy is created with no more permission than its source.
    fn permissions(&self) -> Option<u32> {
        None
    }
}

/// A file being written under a temporary name; `commit` makes it visible under its own.
#[async_trait]
pub trait WriteStream: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    /// Flushes, syncs and renames the temporary file onto the target (replacing it).
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
    /// Removes the temporary file; best effort.
    async fn abort(self: Box<Self>);
}

/// One filesystem: a site's HDFS, or a local directory.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Entries of a directory (not recursive). A missing directory is `NotFound`.
    async fn list(&self, dir: &StorageUrl) -> Result<Vec<DirEntry>, StorageError>;
    /// `None` when nothing exists at `url`.
    async fn stat(&self, url: &StorageUrl) -> Result<Option<FileMeta>, StorageError>;
    async fn open_read(&self, url: &StorageUrl) -> Result<Box<dyn ReadStream>, StorageError>;
    /// Starts writing `url` through a temporary file beside it; parents are created.
    async fn create(&self, url: &StorageUrl) -> Result<Box<dyn WriteStream>, StorageError> {
        self.create_with_permissions(url, None).await
    }
    /// Like [`Storage::create`], the new file getting at most the permission bits
    /// `permissions` (a copy passes its source's; `None`: the backend's default for new files).
    async fn create_with_permissions(
        &self,
        url: &StorageUrl,
        permissions: Option<u32>,
    ) -> Result<Box<dyn WriteStream>, StorageError>;
    /// Deletes a file, or a directory with everything below it. Missing is not an error.
    async fn delete(&self, url: &StorageUrl) -> Result<(), StorageError>;
    async fn mkdirs(&self, url: &StorageUrl) -> Result<(), StorageError>;
    /// Makes the entries of directory `dir` (files renamed into it) durable. Backends whose
    /// renames are durable when they return (HDFS: the NameNode logs them) need do nothing.
    async fn sync_dir(&self, _dir: &StorageUrl) -> Result<(), StorageError> {
        Ok(())
    }

    /// Reads a whole file this process wrote (a manifest), or one whose size does not matter.
    /// Files from the outside whose size is not bounded elsewhere go through
    /// [`Storage::read_bounded`].
    async fn read_all(&self, url: &StorageUrl) -> Result<Vec<u8>, StorageError> {
        let mut stream = self.open_read(url).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Reads a whole file of at most `limit` bytes. A larger one is refused (`TooLarge`) by
    /// its size before any byte is read, or as soon as more than `limit` bytes arrive (a file
    /// still growing): never more than `limit` bytes are held.
    async fn read_bounded(&self, url: &StorageUrl, limit: u64) -> Result<WholeFile, StorageError> {
        let too_large = |size: &str| {
            StorageError::new(
                "read",
                url,
                StorageErrorKind::TooLarge,
                format!("{size} bytes, more than the {limit} this file may have"),
            )
        };
        let expected = match self.stat(url).await? {
            Some(meta) if meta.len > limit => return Err(too_large(&meta.len.to_string())),
            Some(meta) => meta.len,
            // Missing: `open_read` says so in its own words.
            None => 0,
        };
        let mut stream = self.open_read(url).await?;
        let permissions = stream.permissions();
        // The size was checked against `limit`, so this allocation is bounded.
        let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        while let Some(chunk) = stream.next_chunk().await? {
            if (bytes.len() as u64).saturating_add(chunk.len() as u64) > limit {
                return Err(too_large("grew while being read: over"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(WholeFile { bytes, permissions })
    }

    /// Writes a whole (small) file atomically.
    async fn write_all(&self, url: &StorageUrl, data: Bytes) -> Result<(), StorageError> {
        self.write_all_with_permissions(url, data, None).await
    }

    /// [`Storage::write_all`] with at most the permission bits `permissions`.
    async fn write_all_with_permissions(
        &self,
        url: &StorageUrl,
        data: Bytes,
        permissions: Option<u32>,
    ) -> Result<(), StorageError> {
        let mut writer = self.create_with_permissions(url, permissions).await?;
        if let Err(e) = writer.write(data).await {
            writer.abort().await;
            return Err(e);
        }
        writer.commit().await
    }
}

/// Opens the backend a URL's scheme names, confined to `root` (`file://` locally, confined
/// to that directory; `hdfs://`/`viewfs://` through hdfs-native, configured from the usual
/// Hadoop config directory and environment).
pub fn storage_for(root: &StorageUrl) -> Result<Arc<dyn Storage>, StorageError> {
    match root.scheme() {
        Scheme::File => Ok(Arc::new(LocalStorage::new(root.path()))),
        Scheme::Hdfs | Scheme::Viewfs => Ok(Arc::new(crate::hdfs::HdfsStorage::connect(root)?)),
    }
}

/// Temporary name beside `target`: hidden, unique per writer, recognisable by its suffix.
pub fn temp_name(file_name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{file_name}.{}-{n}{TEMP_SUFFIX}", std::process::id())
}
