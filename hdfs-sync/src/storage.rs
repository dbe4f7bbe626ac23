//! The storage interface both sites' filesystems are reached through, and its local backend.
//! Writes always go to a temporary name beside the target and are renamed on commit.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::error::{StorageError, StorageErrorKind};
use crate::url::{Scheme, StorageUrl};

/// Size of the chunks streamed through copies (and through the bandwidth limiter).
pub const CHUNK_SIZE: usize = 1 << 20;

/// Suffix of in-progress writes; such files are never mistaken for finished ones.
pub const TEMP_SUFFIX: &str = ".twinsite-tmp";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    pub is_dir: bool,
    pub modified: Option<SystemTime>,
}

/// A file being read, chunk by chunk.
#[async_trait]
pub trait ReadStream: Send {
    /// The next chunk, `None` at end of file.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError>;
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
    async fn create(&self, url: &StorageUrl) -> Result<Box<dyn WriteStream>, StorageError>;
    /// Deletes a file, or a directory with everything below it. Missing is not an error.
    async fn delete(&self, url: &StorageUrl) -> Result<(), StorageError>;
    async fn mkdirs(&self, url: &StorageUrl) -> Result<(), StorageError>;
    /// Makes the entries of directory `dir` (files renamed into it) durable. Backends whose
    /// renames are durable when they return (HDFS: the NameNode logs them) need do nothing.
    async fn sync_dir(&self, _dir: &StorageUrl) -> Result<(), StorageError> {
        Ok(())
    }

    /// Reads a whole (small) file.
    async fn read_all(&self, url: &StorageUrl) -> Result<Vec<u8>, StorageError> {
        let mut stream = self.open_read(url).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Writes a whole (small) file atomically.
    async fn write_all(&self, url: &StorageUrl, data: Bytes) -> Result<(), StorageError> {
        let mut writer = self.create(url).await?;
        if let Err(e) = writer.write(data).await {
            writer.abort().await;
            return Err(e);
        }
        writer.commit().await
    }
}

/// Opens the backend a URL's scheme names (`file://` locally, `hdfs://`/`viewfs://` through
/// hdfs-native, configured from the usual Hadoop config directory and environment).
pub fn storage_for(url: &StorageUrl) -> Result<Arc<dyn Storage>, StorageError> {
    match url.scheme() {
        Scheme::File => Ok(Arc::new(LocalStorage)),
        Scheme::Hdfs | Scheme::Viewfs => Ok(Arc::new(crate::hdfs::HdfsStorage::connect(url)?)),
    }
}

/// The local filesystem (`file://`).
///
/// File contents move through `std::fs` on tokio's blocking pool, one hop per chunk, straight
/// into and out of the chunk buffers: `tokio::fs::File` would copy every chunk once more
/// through a buffer of its own. Chunk buffers are recycled (see [`ChunkPool`]) because a fresh
/// megabyte costs 256 page faults, each zeroing a page.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorage;

fn local_path(url: &StorageUrl) -> PathBuf {
    PathBuf::from(url.path())
}

/// Runs blocking file work off the async workers; a panic there becomes an error of `op`.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    url: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::new(op, url, StorageErrorKind::Other, e))
}

/// Chunk buffers handed back by finished readers. A chunk given to a caller shares its
/// reader's buffer; once the caller drops it, `BytesMut::reserve` takes the memory back.
struct ChunkPool;

/// Buffers kept for reuse: one per file in flight with the default parallelism (8 jobs × 4
/// files); beyond that, idle memory would outweigh the page faults saved.
const POOL_LIMIT: usize = 32;

static POOL: std::sync::Mutex<Vec<BytesMut>> = std::sync::Mutex::new(Vec::new());

impl ChunkPool {
    fn take() -> BytesMut {
        let pooled = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop();
        pooled.unwrap_or_else(|| BytesMut::with_capacity(CHUNK_SIZE))
    }

    fn give(buf: BytesMut) {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_LIMIT {
            pool.push(buf);
        }
    }
}

/// Reads up to one chunk into `buf`, reusing its memory when the previous chunk was dropped.
fn read_chunk(mut file: &std::fs::File, buf: &mut BytesMut) -> std::io::Result<Option<Bytes>> {
    buf.clear();
    buf.reserve(CHUNK_SIZE);
    // Safe Rust cannot read into uninitialised memory; zeroing a warm buffer is cheap.
    buf.resize(CHUNK_SIZE, 0);
    let mut filled = 0;
    // Fill the whole chunk so callers see few, large chunks.
    while filled < CHUNK_SIZE {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.clear();
                return Err(e);
            }
        }
    }
    buf.truncate(filled);
    Ok((filled > 0).then(|| buf.split().freeze()))
}

/// Where a local reader's file is between chunks.
enum ReaderState {
    Idle(std::fs::File, BytesMut),
    /// Lent to a blocking read whose future was dropped (a timeout): the stream is unusable.
    Interrupted,
    Done,
}

struct LocalReader {
    state: ReaderState,
    url: String,
}

#[async_trait]
impl ReadStream for LocalReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        let (file, mut buf) = match std::mem::replace(&mut self.state, ReaderState::Interrupted) {
            ReaderState::Idle(file, buf) => (file, buf),
            ReaderState::Done => {
                self.state = ReaderState::Done;
                return Ok(None);
            }
            ReaderState::Interrupted => {
                return Err(StorageError::new(
                    "read",
                    &self.url,
                    StorageErrorKind::Other,
                    "an earlier read of this stream was interrupted",
                ));
            }
        };
        let (file, buf, result) = blocking("read", &self.url, move || {
            let result = read_chunk(&file, &mut buf);
            (file, buf, result)
        })
        .await?;
        match result {
            Ok(Some(chunk)) => {
                self.state = ReaderState::Idle(file, buf);
                Ok(Some(chunk))
            }
            Ok(None) => {
                ChunkPool::give(buf);
                self.state = ReaderState::Done;
                Ok(None)
            }
            Err(e) => {
                ChunkPool::give(buf);
                self.state = ReaderState::Done;
                Err(StorageError::from_io("read", &self.url, &e))
            }
        }
    }
}

impl Drop for LocalReader {
    fn drop(&mut self) {
        if let ReaderState::Idle(_, buf) = std::mem::replace(&mut self.state, ReaderState::Done) {
            ChunkPool::give(buf);
        }
    }
}

struct LocalWriter {
    /// `None` while a write is on the blocking pool, and for good once such a write's future
    /// was dropped.
    file: Option<std::fs::File>,
    temp: std::path::PathBuf,
    target: std::path::PathBuf,
    url: String,
    /// Set once the temporary file is renamed onto the target.
    committed: bool,
}

impl LocalWriter {
    fn take_file(&mut self, op: &'static str) -> Result<std::fs::File, StorageError> {
        self.file.take().ok_or_else(|| {
            StorageError::new(
                op,
                &self.url,
                StorageErrorKind::Other,
                "an earlier write of this stream was interrupted",
            )
        })
    }
}

#[async_trait]
impl WriteStream for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let file = self.take_file("write")?;
        let (file, result) = blocking("write", &self.url, move || {
            let result = (&file).write_all(&chunk);
            (file, result)
        })
        .await?;
        self.file = Some(file);
        result.map_err(|e| StorageError::from_io("write", &self.url, &e))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        let file = self.take_file("commit")?;
        let (temp, target) = (self.temp.clone(), self.target.clone());
        // Synced before the rename, so the target name never shows data still in flight.
        let result = blocking("commit", &self.url, move || {
            file.sync_all()?;
            drop(file);
            std::fs::rename(&temp, &target)
        })
        .await?;
        self.committed = result.is_ok();
        // On failure, dropping `self` removes the temporary file.
        result.map_err(|e| StorageError::from_io("commit", &self.url, &e))
    }

    async fn abort(self: Box<Self>) {
        // Dropping `self` removes the temporary file.
    }
}

impl Drop for LocalWriter {
    /// A writer dropped before its commit (an abort, an error, a task cancelled at shutdown)
    /// removes its temporary file, so an interrupted sync leaves no litter behind.
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Creates the temporary file `temp` in `parent`, creating `parent` when it is missing.
fn create_temp(
    parent: &Path,
    temp: &Path,
) -> Result<std::fs::File, (&'static str, std::io::Error)> {
    match std::fs::File::create(temp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(parent).map_err(|e| ("mkdirs", e))?;
            std::fs::File::create(temp).map_err(|e| ("create", e))
        }
        other => other.map_err(|e| ("create", e)),
    }
}

/// Temporary name beside `target`: hidden, unique per writer, recognisable by its suffix.
pub fn temp_name(file_name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{file_name}.{}-{n}{TEMP_SUFFIX}", std::process::id())
}

#[async_trait]
impl Storage for LocalStorage {
    async fn list(&self, dir: &StorageUrl) -> Result<Vec<DirEntry>, StorageError> {
        // One trip to the blocking pool for the whole directory, not one per entry.
        let path = local_path(dir);
        blocking("list", &dir.to_string(), move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(path)? {
                let entry = entry?;
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Deleted between readdir and stat: it is simply gone.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                out.push(DirEntry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    is_dir: meta.is_dir(),
                    len: meta.len(),
                });
            }
            Ok(out)
        })
        .await?
        .map_err(|e| StorageError::from_io("list", dir, &e))
    }

    async fn stat(&self, url: &StorageUrl) -> Result<Option<FileMeta>, StorageError> {
        match tokio::fs::metadata(local_path(url)).await {
            Ok(meta) => Ok(Some(FileMeta {
                len: meta.len(),
                is_dir: meta.is_dir(),
                modified: meta.modified().ok(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::from_io("stat", url, &e)),
        }
    }

    async fn open_read(&self, url: &StorageUrl) -> Result<Box<dyn ReadStream>, StorageError> {
        let path = local_path(url);
        let file = blocking("open", &url.to_string(), move || std::fs::File::open(path))
            .await?
            .map_err(|e| StorageError::from_io("open", url, &e))?;
        Ok(Box::new(LocalReader {
            state: ReaderState::Idle(file, ChunkPool::take()),
            url: url.to_string(),
        }))
    }

    async fn create(&self, url: &StorageUrl) -> Result<Box<dyn WriteStream>, StorageError> {
        let target = local_path(url);
        let parent = target
            .parent()
            .ok_or_else(|| {
                StorageError::new(
                    "create",
                    url,
                    StorageErrorKind::Other,
                    "no parent directory",
                )
            })?
            .to_path_buf();
        let temp = parent.join(temp_name(url.file_name()));
        let temp_path = temp.clone();
        // One trip to the blocking pool; the parent usually exists already.
        let file = blocking("create", &url.to_string(), move || {
            create_temp(&parent, &temp_path)
        })
        .await?
        .map_err(|(op, e)| StorageError::from_io(op, url, &e))?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            temp,
            target,
            url: url.to_string(),
            committed: false,
        }))
    }

    async fn delete(&self, url: &StorageUrl) -> Result<(), StorageError> {
        let path = local_path(url);
        let result = match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(&path).await,
            Ok(_) => tokio::fs::remove_file(&path).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::from_io("delete", url, &e)),
        }
    }

    async fn mkdirs(&self, url: &StorageUrl) -> Result<(), StorageError> {
        tokio::fs::create_dir_all(local_path(url))
            .await
            .map_err(|e| StorageError::from_io("mkdirs", url, &e))
    }

    async fn sync_dir(&self, dir: &StorageUrl) -> Result<(), StorageError> {
        // A file's fsync does not cover its name: the rename lives in the directory.
        let path = local_path(dir);
        blocking("sync", &dir.to_string(), move || {
            std::fs::File::open(path)?.sync_all()
        })
        .await?
        .map_err(|e| StorageError::from_io("sync", dir, &e))
    }
}
