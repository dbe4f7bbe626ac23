//! HDFS backend (`hdfs://`, `viewfs://`) on hdfs-native. Deliberately thin: every call maps
//! one-to-one onto a NameNode/DataNode operation. Compiled and type-checked here, never run
//! against a live NameNode (none can run on this machine): see the crate README.
//!
//! Symbolic links: hdfs-native's `FileStatus` does not say whether an entry is a link (a link
//! lists as a file), and it does not resolve links: the NameNode answers an operation whose
//! path crosses one with `UnresolvedLinkException` (links are also disabled in HDFS unless a
//! cluster turns them on). That answer is mapped to [`StorageErrorKind::Symlink`], so a link
//! is refused, never followed, but only when it is used, not when it is listed.

use async_trait::async_trait;
use bytes::Bytes;
use hdfs_native::{Client, ClientBuilder, HdfsError, WriteOptions};

use crate::error::{StorageError, StorageErrorKind};
use crate::storage::{CHUNK_SIZE, DirEntry, FileMeta, ReadStream, Storage, WriteStream, temp_name};
use crate::url::StorageUrl;

/// One HDFS namespace (a NameNode, an HA nameservice or a viewfs mount table). Configuration
/// comes from `HADOOP_CONF_DIR` / `core-site.xml` / `hdfs-site.xml` as hdfs-native reads them;
/// Kerberos is used when the configuration asks for it (libgssapi_krb5 loaded at run time).
pub struct HdfsStorage {
    client: Client,
}

impl HdfsStorage {
    /// A client for the scheme and authority of `url` (`hdfs://ns`, `viewfs://cluster`).
    pub fn connect(url: &StorageUrl) -> Result<Self, StorageError> {
        let base = format!("{}://{}", url.scheme().as_str(), url.authority());
        let client = ClientBuilder::new()
            .with_url(base.clone())
            .build()
            .map_err(|e| map_err("connect", &base, e))?;
        Ok(Self { client })
    }

    /// A client built by the caller (explicit config map, Kerberos principal/keytab, user).
    pub fn with_client(client: Client) -> Self {
        Self { client }
    }
}

/// Maps hdfs-native errors onto the kinds replication decides on. Permission and quota
/// failures arrive as RPC errors carrying the Java exception class name.
fn map_err(op: &'static str, url: &str, err: HdfsError) -> StorageError {
    let kind = match &err {
        HdfsError::FileNotFound(_) => StorageErrorKind::NotFound,
        HdfsError::IOError(io) => return StorageError::from_io(op, url, io),
        HdfsError::RPCError(class, _) | HdfsError::FatalRPCError(class, _) => {
            if class.contains("AccessControlException") {
                StorageErrorKind::PermissionDenied
            } else if class.contains("QuotaExceededException") || class.contains("DiskOutOfSpace") {
                StorageErrorKind::NoSpace
            } else if class.contains("FileNotFoundException") {
                StorageErrorKind::NotFound
            } else if class.contains("UnresolvedLinkException")
                || class.contains("UnresolvedPathException")
            {
                // The path crosses a symbolic link, which this client never follows.
                StorageErrorKind::Symlink
            } else {
                StorageErrorKind::Other
            }
        }
        _ => StorageErrorKind::Other,
    };
    StorageError::new(op, url, kind, err)
}

struct HdfsReader {
    reader: hdfs_native::file::FileReader,
    url: String,
    permissions: u32,
}

#[async_trait]
impl ReadStream for HdfsReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        let chunk = self
            .reader
            .read_bytes(CHUNK_SIZE)
            .await
            .map_err(|e| map_err("read", &self.url, e))?;
        Ok(if chunk.is_empty() { None } else { Some(chunk) })
    }

    fn permissions(&self) -> Option<u32> {
        Some(self.permissions)
    }
}

struct HdfsWriter {
    client: Client,
    writer: hdfs_native::file::FileWriter,
    temp: String,
    target: String,
    url: String,
}

#[async_trait]
impl WriteStream for HdfsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.writer
            .write_bytes(chunk)
            .await
            .map(|_| ())
            .map_err(|e| map_err("write", &self.url, e))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        // close() completes the last block with every DataNode in the pipeline.
        if let Err(e) = self.writer.close().await {
            let _ = self.client.delete(&self.temp, false).await;
            return Err(map_err("commit", &self.url, e));
        }
        self.client
            .rename(&self.temp, &self.target, true)
            .await
            .map_err(|e| map_err("rename", &self.url, e))
    }

    async fn abort(mut self: Box<Self>) {
        let _ = self.writer.close().await;
        let _ = self.client.delete(&self.temp, false).await;
    }
}

#[async_trait]
impl Storage for HdfsStorage {
    async fn list(&self, dir: &StorageUrl) -> Result<Vec<DirEntry>, StorageError> {
        let statuses = self
            .client
            .list_status(dir.path(), false)
            .await
            .map_err(|e| map_err("list", &dir.to_string(), e))?;
        Ok(statuses
            .into_iter()
            .map(|s| DirEntry {
                name: s.path.rsplit('/').next().unwrap_or("").to_string(),
                is_dir: s.isdir,
                // hdfs-native does not say; using one fails with `Symlink` (see the module doc).
                is_symlink: false,
                len: s.length as u64,
            })
            .collect())
    }

    async fn stat(&self, url: &StorageUrl) -> Result<Option<FileMeta>, StorageError> {
        match self.client.get_file_info(url.path()).await {
            Ok(s) => Ok(Some(FileMeta {
                len: s.length as u64,
                is_dir: s.isdir,
                modified: Some(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.modification_time),
                ),
            })),
            Err(HdfsError::FileNotFound(_)) => Ok(None),
            Err(e) => Err(map_err("stat", &url.to_string(), e)),
        }
    }

    async fn open_read(&self, url: &StorageUrl) -> Result<Box<dyn ReadStream>, StorageError> {
        // One more NameNode call per file: its permission bits, so the copy is no wider.
        let status = self
            .client
            .get_file_info(url.path())
            .await
            .map_err(|e| map_err("open", &url.to_string(), e))?;
        if status.isdir {
            return Err(StorageError::new(
                "open",
                url,
                StorageErrorKind::NotAFile,
                format!("{url} is a directory; only files are read"),
            ));
        }
        let reader = self
            .client
            .read(url.path())
            .await
            .map_err(|e| map_err("open", &url.to_string(), e))?;
        Ok(Box::new(HdfsReader {
            reader,
            url: url.to_string(),
            permissions: u32::from(status.permission) & 0o777,
        }))
    }

    async fn create_with_permissions(
        &self,
        url: &StorageUrl,
        permissions: Option<u32>,
    ) -> Result<Box<dyn WriteStream>, StorageError> {
        let parent = url.parent().ok_or_else(|| {
            StorageError::new(
                "create",
                url,
                StorageErrorKind::Other,
                "no parent directory",
            )
        })?;
        let temp = parent
            .join(&temp_name(url.file_name()))
            .map_err(|e| StorageError::new("create", url, StorageErrorKind::Other, e))?;
        let writer = self
            .client
            .create(
                temp.path(),
                // The source's bits when copying, hdfs-native's 0644 otherwise. hdfs-native
                // sends them as the already-masked permission: no umask narrows them further.
                WriteOptions::default()
                    .create_parent(true)
                    .overwrite(true)
                    .permission(permissions.map_or(0o644, |bits| bits & 0o777)),
            )
            .await
            .map_err(|e| map_err("create", &url.to_string(), e))?;
        Ok(Box::new(HdfsWriter {
            client: self.client.clone(),
            writer,
            temp: temp.path().to_string(),
            target: url.path().to_string(),
            url: url.to_string(),
        }))
    }

    async fn delete(&self, url: &StorageUrl) -> Result<(), StorageError> {
        self.client
            .delete(url.path(), true)
            .await
            .map(|_| ())
            .or_else(|e| match e {
                HdfsError::FileNotFound(_) => Ok(()),
                e => Err(map_err("delete", &url.to_string(), e)),
            })
    }

    async fn mkdirs(&self, url: &StorageUrl) -> Result<(), StorageError> {
        self.client
            .mkdirs(url.path(), 0o755, true)
            .await
            .map_err(|e| map_err("mkdirs", &url.to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_crossing_an_hdfs_symlink_is_refused_as_a_link() {
        for class in [
            "org.apache.hadoop.fs.UnresolvedLinkException",
            "org.apache.hadoop.hdfs.protocol.UnresolvedPathException",
        ] {
            let err = map_err(
                "open",
                "hdfs://ns/ckpt/job/shared/x",
                HdfsError::RPCError(class.to_string(), "/ckpt/job/shared".to_string()),
            );
            assert_eq!(err.kind, StorageErrorKind::Symlink, "{class}");
            assert!(
                err.to_string().contains("hdfs://ns/ckpt/job/shared/x"),
                "{err}"
            );
        }
    }

    #[test]
    fn other_rpc_failures_keep_their_kinds() {
        let denied = map_err(
            "create",
            "hdfs://ns/x",
            HdfsError::RPCError(
                "org.apache.hadoop.security.AccessControlException".to_string(),
                "no".to_string(),
            ),
        );
        assert_eq!(denied.kind, StorageErrorKind::PermissionDenied);
    }
}
