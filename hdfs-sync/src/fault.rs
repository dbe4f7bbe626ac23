//! A storage wrapper that injects faults: errors of a given kind (EACCES, ENOSPC, ENOENT),
//! corrupted or truncated writes, and hooks that run before an operation (to delete a source
//! mid-copy, say). Tests run as root here, so `chmod 000` denies nothing: refusals and full
//! disks are injected at this layer instead.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{StorageError, StorageErrorKind};
use crate::storage::{DirEntry, FileMeta, ReadStream, Storage, WriteStream};
use crate::url::StorageUrl;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    List,
    Stat,
    Open,
    Create,
    Write,
    Commit,
    SyncDir,
}

#[derive(Clone)]
pub enum FaultAction {
    /// The operation fails with this kind of error.
    Fail(StorageErrorKind),
    /// Writes store the chunk with its first byte flipped (silent corruption).
    CorruptWrite,
    /// Writes store only the first half of each chunk (a short write nobody noticed).
    TruncateWrite,
    /// Runs the hook, then performs the operation normally.
    Hook(Arc<dyn Fn(&StorageUrl) + Send + Sync>),
    /// Waits this long, then performs the operation normally (a hung or slow server).
    Delay(std::time::Duration),
}

#[derive(Clone)]
pub struct Fault {
    pub op: FaultOp,
    /// Applies to URLs whose text contains this.
    pub url_contains: String,
    pub action: FaultAction,
    /// How many times it fires (`None`: always).
    pub times: Option<u32>,
}

/// Wraps a backend, applying the first matching fault to each operation.
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    faults: Arc<Mutex<Vec<Fault>>>,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            faults: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn add(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    pub fn clear(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn take(&self, op: FaultOp, url: &StorageUrl) -> Option<FaultAction> {
        take(&self.faults, op, url)
    }

    async fn check(
        &self,
        op: FaultOp,
        opname: &'static str,
        url: &StorageUrl,
    ) -> Result<(), StorageError> {
        let action = self.take(op, url);
        if let Some(FaultAction::Delay(d)) = &action {
            tokio::time::sleep(*d).await;
        }
        apply(action, opname, url)
    }
}

fn take(faults: &Mutex<Vec<Fault>>, op: FaultOp, url: &StorageUrl) -> Option<FaultAction> {
    let text = url.to_string();
    let mut faults = faults.lock().unwrap_or_else(|p| p.into_inner());
    let fault = faults
        .iter_mut()
        .find(|f| f.op == op && text.contains(&f.url_contains) && f.times != Some(0))?;
    if let Some(t) = fault.times.as_mut() {
        *t -= 1;
    }
    Some(fault.action.clone())
}

fn apply(
    action: Option<FaultAction>,
    op: &'static str,
    url: &StorageUrl,
) -> Result<(), StorageError> {
    match action {
        Some(FaultAction::Fail(kind)) => Err(StorageError::new(op, url, kind, "injected fault")),
        Some(FaultAction::Hook(hook)) => {
            hook(url);
            Ok(())
        }
        _ => Ok(()),
    }
}

struct FaultyWriter {
    inner: Box<dyn WriteStream>,
    faults: Arc<Mutex<Vec<Fault>>>,
    url: StorageUrl,
}

#[async_trait]
impl WriteStream for FaultyWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        match take(&self.faults, FaultOp::Write, &self.url) {
            Some(FaultAction::CorruptWrite) => {
                let mut v = chunk.to_vec();
                if let Some(b) = v.first_mut() {
                    *b ^= 0xff;
                }
                self.inner.write(Bytes::from(v)).await
            }
            Some(FaultAction::TruncateWrite) => {
                self.inner.write(chunk.slice(..chunk.len() / 2)).await
            }
            other => {
                apply(other, "write", &self.url)?;
                self.inner.write(chunk).await
            }
        }
    }

    async fn commit(self: Box<Self>) -> Result<(), StorageError> {
        if let Err(e) = apply(
            take(&self.faults, FaultOp::Commit, &self.url),
            "commit",
            &self.url,
        ) {
            self.inner.abort().await;
            return Err(e);
        }
        self.inner.commit().await
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    async fn list(&self, dir: &StorageUrl) -> Result<Vec<DirEntry>, StorageError> {
        self.check(FaultOp::List, "list", dir).await?;
        self.inner.list(dir).await
    }

    async fn stat(&self, url: &StorageUrl) -> Result<Option<FileMeta>, StorageError> {
        self.check(FaultOp::Stat, "stat", url).await?;
        self.inner.stat(url).await
    }

    async fn open_read(&self, url: &StorageUrl) -> Result<Box<dyn ReadStream>, StorageError> {
        self.check(FaultOp::Open, "open", url).await?;
        self.inner.open_read(url).await
    }

    async fn create_with_permissions(
        &self,
        url: &StorageUrl,
        permissions: Option<u32>,
    ) -> Result<Box<dyn WriteStream>, StorageError> {
        self.check(FaultOp::Create, "create", url).await?;
        let inner = self.inner.create_with_permissions(url, permissions).await?;
        Ok(Box::new(FaultyWriter {
            inner,
            faults: self.faults.clone(),
            url: url.clone(),
        }))
    }

    async fn delete(&self, url: &StorageUrl) -> Result<(), StorageError> {
        self.inner.delete(url).await
    }

    async fn mkdirs(&self, url: &StorageUrl) -> Result<(), StorageError> {
        self.inner.mkdirs(url).await
    }

    async fn sync_dir(&self, dir: &StorageUrl) -> Result<(), StorageError> {
        self.check(FaultOp::SyncDir, "sync", dir).await?;
        self.inner.sync_dir(dir).await
    }
}
