//! The storage interface both sites' filesystems are reached through, and its local backend.
//! Writes always go to a temporary name beside the target and are renamed on commit.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The local filesystem (`file://`), on tokio::fs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorage;

fn local_path(url: &StorageUrl) -> std::path::PathBuf {
    std::path::PathBuf::from(url.path())
}

struct LocalReader {
    file: tokio::fs::File,
    url: String,
}

#[async_trait]
impl ReadStream for LocalReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut filled = 0;
        // Fill the whole chunk so callers see few, large chunks.
        while filled < buf.len() {
            let n = self
                .file
                .read(&mut buf[filled..])
                .await
                .map_err(|e| StorageError::from_io("read", &self.url, &e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(None);
        }
        buf.truncate(filled);
        Ok(Some(Bytes::from(buf)))
    }
}

struct LocalWriter {
    file: tokio::fs::File,
    temp: std::path::PathBuf,
    target: std::path::PathBuf,
    url: String,
}

#[async_trait]
impl WriteStream for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.file
            .write_all(&chunk)
            .await
            .map_err(|e| StorageError::from_io("write", &self.url, &e))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        let url = self.url.clone();
        let result = async {
            self.file.flush().await?;
            self.file.sync_all().await?;
            tokio::fs::rename(&self.temp, &self.target).await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&self.temp).await;
            return Err(StorageError::from_io("commit", url, &e));
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.temp).await;
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
        let mut read = tokio::fs::read_dir(local_path(dir))
            .await
            .map_err(|e| StorageError::from_io("list", dir, &e))?;
        let mut out = Vec::new();
        while let Some(entry) = read
            .next_entry()
            .await
            .map_err(|e| StorageError::from_io("list", dir, &e))?
        {
            let meta = match entry.metadata().await {
                Ok(m) => m,
                // Deleted between readdir and stat: it is simply gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::from_io("list", dir, &e)),
            };
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                len: meta.len(),
            });
        }
        Ok(out)
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
        let file = tokio::fs::File::open(local_path(url))
            .await
            .map_err(|e| StorageError::from_io("open", url, &e))?;
        Ok(Box::new(LocalReader {
            file,
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
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| StorageError::from_io("mkdirs", url, &e))?;
        let temp = parent.join(temp_name(url.file_name()));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| StorageError::from_io("create", url, &e))?;
        Ok(Box::new(LocalWriter {
            file,
            temp,
            target,
            url: url.to_string(),
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
}
