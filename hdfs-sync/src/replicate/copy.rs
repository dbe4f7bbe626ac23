//! Copying one file: temporary name, bandwidth-limited stream, fsync, verify, rename, with
//! retries. Never leaves a file under its final name before it is verified.

use super::*;

impl Replicator {
    pub(super) async fn copy_with_retries(
        &self,
        job: &str,
        src: &StorageUrl,
        peer: &StorageUrl,
        slots: &Semaphore,
    ) -> Result<VerifiedFile, SyncError> {
        let options = &self.inner.options;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.copy_once(job, src, peer, slots).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < options.attempts.max(1) => {
                    let backoff = options
                        .retry_backoff
                        .saturating_mul(1 << (attempt - 1).min(6));
                    tracing::debug!(job, file = %src, attempt, error = %e, "retrying copy");
                    let _ = self.inner.peer.delete(peer).await;
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => {
                    let _ = self.inner.peer.delete(peer).await;
                    return Err(e);
                }
            }
        }
    }

    pub(super) async fn timed<T>(
        &self,
        what: &'static str,
        url: &StorageUrl,
        f: impl std::future::Future<Output = Result<T, crate::error::StorageError>>,
    ) -> Result<T, SyncError> {
        let limit = self.inner.options.io_timeout;
        match tokio::time::timeout(limit, f).await {
            Ok(r) => r.map_err(SyncError::from),
            Err(_) => Err(SyncError::Timeout {
                what,
                url: url.to_string(),
                seconds: limit.as_secs(),
            }),
        }
    }

    /// Copies one file to a temporary name beside its peer path, hashing the bytes as they
    /// are written, syncs and renames it, then verifies the peer's file.
    ///
    /// Copying and the read-back each hold one of the checkpoint's `slots` (CPU and memory
    /// bound); the commit in between (fsync, then rename) does not, so the next file copies
    /// while the disk takes this one.
    pub(super) async fn copy_once(
        &self,
        job: &str,
        src: &StorageUrl,
        peer: &StorageUrl,
        slots: &Semaphore,
    ) -> Result<VerifiedFile, SyncError> {
        let inner = &self.inner;
        let slot = slots.acquire().await.ok();
        let (len, checksum, writer) = self.stream(job, src, peer).await?;
        drop(slot);
        // The temporary file is synced, then renamed onto its name (`WriteStream::commit`).
        self.timed("commit", peer, writer.commit()).await?;
        let expected = VerifiedFile { len, checksum };
        let actual = match inner.options.verify {
            VerifyMode::ReadBack => {
                let _slot = slots.acquire().await.ok();
                let mut reader = self.timed("open", peer, inner.peer.open_read(peer)).await?;
                let mut hasher = Xxh64::new();
                let mut len = 0u64;
                while let Some(chunk) = self.timed("read", peer, reader.next_chunk()).await? {
                    len += chunk.len() as u64;
                    hasher.update(&chunk);
                }
                VerifiedFile {
                    len,
                    checksum: hasher.hex(),
                }
            }
            VerifyMode::LengthOnly => {
                let len = self
                    .timed("stat", peer, inner.peer.stat(peer))
                    .await?
                    .map(|m| m.len)
                    .unwrap_or(0);
                VerifiedFile {
                    len,
                    checksum: expected.checksum.clone(),
                }
            }
        };
        if actual != expected {
            return Err(SyncError::VerifyFailed {
                url: peer.to_string(),
                expected_len: expected.len,
                expected_checksum: expected.checksum,
                actual_len: actual.len,
                actual_checksum: actual.checksum,
            });
        }
        self.update(job, |m| m.files_copied += 1);
        Ok(expected)
    }

    /// Streams `src` into a temporary file beside `peer` chunk by chunk (bandwidth-limited),
    /// hashing each chunk as it is handed to the writer. Returns the length, the checksum and
    /// the writer, still to be committed.
    pub(super) async fn stream(
        &self,
        job: &str,
        src: &StorageUrl,
        peer: &StorageUrl,
    ) -> Result<(u64, String, Box<dyn WriteStream>), SyncError> {
        let inner = &self.inner;
        let mut reader = self.timed("open", src, inner.source.open_read(src)).await?;
        // No wider than the source: a 0600 state file stays 0600 at the peer.
        let permissions = reader.permissions();
        let mut writer = self
            .timed(
                "create",
                peer,
                inner.peer.create_with_permissions(peer, permissions),
            )
            .await?;
        let mut hasher = Xxh64::new();
        let mut len = 0u64;
        let streamed: Result<(), SyncError> = async {
            while let Some(chunk) = self.timed("read", src, reader.next_chunk()).await? {
                inner.limiter.acquire(job, chunk.len() as u64).await;
                hasher.update(&chunk);
                let n = chunk.len() as u64;
                len += n;
                self.timed("write", peer, writer.write(chunk)).await?;
                self.copied_bytes(job, n);
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) => Ok((len, hasher.hex(), writer)),
            Err(e) => {
                writer.abort().await;
                Err(e)
            }
        }
    }

    pub(super) fn copied_bytes(&self, job: &str, n: u64) {
        self.update(job, |m| m.bytes_copied += n);
        self.emit(ProgressEvent::BytesCopied {
            job: job.to_string(),
            bytes: n,
        });
    }
}
