//! Retention at the peer: keep the newest `retain` replicated checkpoints, and delete a
//! `shared/` file only when no retained checkpoint references it.

use super::*;

impl Replicator {
    /// Keeps the newest `retain` replicated checkpoints of a job at the peer. A `shared/` file
    /// is deleted only when no retained checkpoint references it (their peer `_metadata` is
    /// parsed to know).
    pub async fn apply_retention(&self, job: &str) -> Result<(), SyncError> {
        let inner = &self.inner;
        let mut kept = inner.ledger.replicated(job).await?;
        kept.sort_by_key(|c| c.checkpoint_id);
        let excess = kept.len().saturating_sub(inner.options.retain.max(1));
        let dropped: Vec<ReplicatedCheckpoint> = kept.drain(..excess).collect();
        if !dropped.is_empty() {
            // Forget first: a record must never point at a deleted copy.
            let ids: Vec<u64> = dropped.iter().map(|c| c.checkpoint_id).collect();
            inner.ledger.forget(job, &ids).await?;
            for c in &dropped {
                inner
                    .peer
                    .delete(&StorageUrl::parse(&c.peer_pointer)?)
                    .await?;
            }
        }
        let mut referenced: HashSet<StorageUrl> = HashSet::new();
        for c in &kept {
            let dir = StorageUrl::parse(&c.peer_pointer)?;
            let meta_url = dir.join("_metadata")?;
            let bytes = inner
                .peer
                .read_bounded(&meta_url, MAX_METADATA_BYTES)
                .await?
                .bytes;
            let meta = CheckpointMetadata::parse(&bytes, &meta_url.to_string())?;
            for r in meta.referenced_files(&dir)? {
                // In shared-nameservice mode references name the source root's paths.
                let url = match r.url.relative_to(&inner.source_root) {
                    Some(rel) if inner.options.uri_mode == UriMode::SharedNameservice => {
                        inner.peer_root.join(&rel)?
                    }
                    _ => r.url,
                };
                referenced.insert(url);
            }
        }
        let shared = inner.peer_root.join(&format!("{job}/shared"))?;
        let entries = match inner.peer.list(&shared).await {
            Ok(e) => e,
            Err(e) if e.kind == StorageErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut deleted = Vec::new();
        for entry in entries
            .iter()
            .filter(|e| !e.is_dir && !e.name.ends_with(TEMP_SUFFIX))
        {
            let url = shared.join(&entry.name)?;
            if !referenced.contains(&url) {
                inner.peer.delete(&url).await?;
                deleted.push(format!("{job}/shared/{}", entry.name));
            }
        }
        if !deleted.is_empty() || !dropped.is_empty() {
            let (manifest_url, mut manifest) = self.load_manifest(job).await?;
            let dropped_prefixes: Vec<String> = dropped
                .iter()
                .map(|c| format!("{job}/chk-{}/", c.checkpoint_id))
                .collect();
            manifest.files.retain(|k, _| {
                !deleted.contains(k) && !dropped_prefixes.iter().any(|p| k.starts_with(p))
            });
            self.save_manifest(&manifest_url, &manifest).await?;
        }
        Ok(())
    }
}
