//! Copying one savepoint from a site's storage to the same path in another's, for a planned
//! move: every file verified by length and checksum read back from the target, `_metadata`
//! last with its absolute references into the source's storage rewritten to the target's.
//! Never leaves a target `_metadata` before every other file of the savepoint is verified.

use bytes::Bytes;

use crate::checksum::{self, Xxh64};
use crate::error::SyncError;
use crate::metadata::{CheckpointMetadata, MAX_METADATA_BYTES};
use crate::storage::{Storage, storage_for};
use crate::url::StorageUrl;

/// Copies the savepoint directory `source` (below `from_root`) to the same path below
/// `to_root`, and returns the copy's URL. Savepoints are self-contained: everything below the
/// directory is copied.
pub async fn copy_savepoint(
    source: &StorageUrl,
    from_root: &StorageUrl,
    to_root: &StorageUrl,
) -> Result<StorageUrl, SyncError> {
    let relative =
        source
            .relative_to(from_root)
            .ok_or_else(|| SyncError::SavepointOutsideRoot {
                savepoint: source.to_string(),
                root: from_root.to_string(),
            })?;
    let target = to_root.join(&relative)?;
    // Each side confined to its storage (local: nothing below the root is followed); the
    // target's root is the site's, as the directory above the savepoint is synced too.
    let source_fs = storage_for(source)?;
    let target_fs = storage_for(to_root)?;
    let mut pending = vec![String::new()];
    while let Some(relative) = pending.pop() {
        let dir = if relative.is_empty() {
            source.clone()
        } else {
            source.join(&relative)?
        };
        for entry in source_fs.list(&dir).await? {
            let path = if relative.is_empty() {
                entry.name.clone()
            } else {
                format!("{relative}/{}", entry.name)
            };
            if entry.is_dir {
                pending.push(path);
                continue;
            }
            if path == "_metadata" {
                continue;
            }
            copy_verified(
                &*source_fs,
                &source.join(&path)?,
                &*target_fs,
                &target.join(&path)?,
            )
            .await?;
        }
    }
    // `_metadata` last, so the copy counts as a savepoint only once everything is there; an
    // absolute reference into the source's storage is rewritten to the same path in the
    // target's (savepoints Flink writes are relative and pass through unchanged).
    let metadata_url = source.join("_metadata")?;
    let original = source_fs
        .read_bounded(&metadata_url, MAX_METADATA_BYTES)
        .await?;
    let parsed = CheckpointMetadata::parse(&original.bytes, &metadata_url.to_string())?;
    let rewritten = parsed.rewrite_uris(&original.bytes, |uri| {
        let url = StorageUrl::parse(uri).ok()?;
        let relative = url.relative_to(from_root)?;
        Some(to_root.join(&relative).ok()?.to_flink_string())
    })?;
    let target_metadata = target.join("_metadata")?;
    target_fs
        .write_all_with_permissions(
            &target_metadata,
            Bytes::from(rewritten.clone()),
            original.permissions,
        )
        .await?;
    let written = target_fs
        .read_bounded(
            &target_metadata,
            (rewritten.len() as u64).max(MAX_METADATA_BYTES),
        )
        .await?
        .bytes;
    if written != rewritten {
        return Err(SyncError::VerifyFailed {
            url: target_metadata.to_string(),
            expected_len: rewritten.len() as u64,
            expected_checksum: checksum::of(&rewritten),
            actual_len: written.len() as u64,
            actual_checksum: checksum::of(&written),
        });
    }
    if let Some(parent) = target.parent() {
        target_fs.sync_dir(&parent).await?;
    }
    Ok(target)
}

/// One file, streamed, then read back and compared by length and checksum.
async fn copy_verified(
    source_fs: &dyn Storage,
    from: &StorageUrl,
    target_fs: &dyn Storage,
    to: &StorageUrl,
) -> Result<(), SyncError> {
    let mut reader = source_fs.open_read(from).await?;
    // No wider than the source's permission bits.
    let mut writer = target_fs
        .create_with_permissions(to, reader.permissions())
        .await?;
    let mut hash = Xxh64::new();
    let mut len = 0u64;
    loop {
        match reader.next_chunk().await {
            Ok(Some(chunk)) => {
                hash.update(&chunk);
                len += chunk.len() as u64;
                if let Err(e) = writer.write(chunk).await {
                    writer.abort().await;
                    return Err(e.into());
                }
            }
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(e.into());
            }
        }
    }
    writer.commit().await?;
    let mut written = target_fs.open_read(to).await?;
    let (written_len, written_sum) = checksum::of_stream(&mut *written).await?;
    let copied_sum = hash.hex();
    if (written_len, &written_sum) != (len, &copied_sum) {
        return Err(SyncError::VerifyFailed {
            url: to.to_string(),
            expected_len: len,
            expected_checksum: copied_sum,
            actual_len: written_len,
            actual_checksum: written_sum,
        });
    }
    Ok(())
}
