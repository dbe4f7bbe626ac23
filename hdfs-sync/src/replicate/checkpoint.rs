//! One checkpoint to the peer: read and resolve `_metadata`, reuse what the manifest and
//! the peer agree on, copy the rest, rewrite `_metadata` for the peer, write it last, and
//! record the checkpoint in the ledger only then. Never records a checkpoint before every
//! file of it is verified at the peer.

use super::manifest::{MANIFEST_FLUSH_EVERY, Manifest};
use super::*;

/// Files of one checkpoint waiting for their fsync (which needs no CPU, only the disk) do not
/// hold one of the `file_parallelism` streaming slots; up to this many per slot may wait, so
/// the disk always has writes queued while the next files stream.
pub(super) const SYNCS_PER_SLOT: usize = 3;

impl Replicator {
    /// `dirs` and every directory above them up to the peer root: the
    /// directories whose fsync makes entries created in and for `dirs` durable.
    pub(super) fn with_ancestors(
        &self,
        dirs: impl IntoIterator<Item = StorageUrl>,
    ) -> Vec<StorageUrl> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for dir in dirs {
            let mut next = Some(dir);
            while let Some(d) = next {
                if !d.starts_with(&self.inner.peer_storage_root) || !seen.insert(d.clone()) {
                    break;
                }
                next = d.parent();
                out.push(d);
            }
        }
        out
    }

    pub(super) fn peer_url(&self, source: &StorageUrl) -> Result<StorageUrl, SyncError> {
        Ok(self.place(source, "")?.1)
    }

    /// Where a source file goes at the peer, and its key in the job's manifest: below the
    /// checkpoint root, the same path below the peer's (key: that path); elsewhere in the
    /// source storage root, the same path below the peer's storage root (key: that path with
    /// a leading `/`, which no path below the checkpoint root has). Anything else is refused.
    pub(super) fn place(
        &self,
        source: &StorageUrl,
        checkpoint: &str,
    ) -> Result<(String, StorageUrl), SyncError> {
        let inner = &self.inner;
        if let Some(rel) = source.relative_to(&inner.source_root) {
            let peer = inner.peer_root.join(&rel)?;
            return Ok((rel, peer));
        }
        match source.relative_to(&inner.source_storage_root) {
            Some(rel) => {
                let peer = inner.peer_storage_root.join(&rel)?;
                Ok((format!("/{rel}"), peer))
            }
            None => Err(SyncError::ReferenceOutsideRoot {
                checkpoint: checkpoint.to_string(),
                reference: source.to_string(),
                root: inner.source_storage_root.to_string(),
            }),
        }
    }

    /// The source files of `metadata`'s relative handles that are not in `chk-N/` (Flink
    /// before FLINK-39964 after a CLAIM restore from a native savepoint), by handle path: found
    /// in the job's `restored_from` directory with the recorded size, or an error naming the
    /// first one missing.
    pub(super) async fn foreign_relative_files(
        &self,
        job: &str,
        checkpoint: &CompleteCheckpoint,
        metadata: &CheckpointMetadata,
    ) -> Result<BTreeMap<String, StorageUrl>, SyncError> {
        let inner = &self.inner;
        let mut listings: BTreeMap<StorageUrl, BTreeMap<String, u64>> = BTreeMap::new();
        let mut foreign = BTreeMap::new();
        for handle in metadata
            .handles
            .iter()
            .filter(|h| h.kind == HandleKind::Relative)
        {
            if foreign.contains_key(&handle.path) {
                continue;
            }
            let own = checkpoint.dir.join(&handle.path)?;
            if self.file_len(&own, &mut listings).await?.is_some() {
                continue;
            }
            let unresolved = |searched: String| SyncError::UnresolvedRelativeReference {
                checkpoint: checkpoint.dir.to_string(),
                file: handle.path.clone(),
                searched,
            };
            let Some(dir) = inner.options.restored_from.get(job) else {
                return Err(unresolved(String::new()));
            };
            let there = dir.join(&handle.path)?;
            match self.file_len(&there, &mut listings).await? {
                Some(len) if len == handle.size => {
                    foreign.insert(handle.path.clone(), there);
                }
                found => {
                    return Err(unresolved(format!(
                        ", nor with its recorded {} bytes in {dir}, where the job was restored \
                         from ({})",
                        handle.size,
                        found.map_or("absent".to_string(), |len| format!("{len} bytes there"))
                    )));
                }
            }
        }
        Ok(foreign)
    }

    /// The length of the regular file `url` at the source (`None`: absent), from one
    /// listing of its directory per call site.
    pub(super) async fn file_len(
        &self,
        url: &StorageUrl,
        listings: &mut BTreeMap<StorageUrl, BTreeMap<String, u64>>,
    ) -> Result<Option<u64>, SyncError> {
        let Some(dir) = url.parent() else {
            return Ok(None);
        };
        if !listings.contains_key(&dir) {
            // A link counts as present: opening it refuses it by name.
            let entries = file_lengths(self.inner.source.as_ref(), &dir).await?;
            listings.insert(dir.clone(), entries);
        }
        Ok(listings[&dir].get(url.file_name()).copied())
    }

    /// Replicates one complete checkpoint; a checkpoint Flink subsumed meanwhile is skipped
    /// (`SourceVanished`), never half-recorded.
    pub(super) async fn replicate_checkpoint(
        &self,
        job: &str,
        checkpoint: &CompleteCheckpoint,
    ) -> Result<JobOutcome, SyncError> {
        let source = match self.read_source(job, checkpoint).await? {
            Ok(source) => source,
            Err(skipped) => return Ok(skipped),
        };
        self.emit(ProgressEvent::CheckpointStarted {
            job: job.to_string(),
            checkpoint_id: checkpoint.id,
            files: source.files.len(),
            bytes: source.total_bytes,
        });
        let (manifest_url, mut manifest) = self.load_manifest(job).await?;
        let plan = self.reuse_verified(&source, &mut manifest).await?;
        self.emit(ProgressEvent::CheckpointBacklog {
            job: job.to_string(),
            checkpoint_id: checkpoint.id,
            files: plan.to_copy.len(),
            bytes: plan
                .to_copy
                .iter()
                .map(|(rel, _, _)| source.sizes.get(rel).copied().unwrap_or(0))
                .sum(),
        });
        let copied = match self
            .copy_all(job, checkpoint, plan.to_copy, &manifest_url, &mut manifest)
            .await?
        {
            Ok(copied) => copied,
            Err(skipped) => return Ok(skipped),
        };
        self.make_directory_handles(&source.metadata).await?;
        let peer_metadata = self.peer_metadata(checkpoint, &source)?;
        self.write_peer_metadata(&source, peer_metadata, plan.peer_dirs)
            .await?;
        self.record(job, checkpoint, &source, plan.reused).await?;
        Ok(JobOutcome::Replicated {
            checkpoint_id: checkpoint.id,
            bytes_copied: copied.bytes,
            files_copied: copied.files,
            files_reused: plan.reused,
        })
    }

    /// Reads the source `_metadata` (bounded, a regular file) and resolves every file it
    /// references, with its place at the peer. `Ok(Err(_))`: the checkpoint vanished.
    async fn read_source(
        &self,
        job: &str,
        checkpoint: &CompleteCheckpoint,
    ) -> Result<Result<SourceCheckpoint, JobOutcome>, SyncError> {
        let inner = &self.inner;
        let metadata_url = checkpoint.dir.join("_metadata")?;
        // Bounded, and only a regular file: `_metadata` is read whole into memory.
        let source_metadata = match inner
            .source
            .read_bounded(&metadata_url, MAX_METADATA_BYTES)
            .await
        {
            Ok(file) => file,
            Err(e) if e.kind == StorageErrorKind::NotFound => {
                return Ok(Err(self.skipped(
                    job,
                    checkpoint.id,
                    "source _metadata vanished",
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let metadata_bytes = source_metadata.bytes;
        let metadata = CheckpointMetadata::parse(&metadata_bytes, &metadata_url.to_string())?;
        // Every path resolves (or fails naming where in `_metadata` it sits) before any lookup.
        let mut references = metadata.referenced_files(&checkpoint.dir)?;
        let foreign = match self
            .foreign_relative_files(job, checkpoint, &metadata)
            .await
        {
            Ok(foreign) => foreign,
            // Flink subsumed the checkpoint while we looked: its own files are gone too.
            Err(_) if self.source_gone(checkpoint).await => {
                return Ok(Err(self.skipped(
                    job,
                    checkpoint.id,
                    "source checkpoint vanished",
                )));
            }
            Err(e) => return Err(e),
        };
        if !foreign.is_empty() {
            // Relative handles resolve to the directory they were found in, not `chk-N/`.
            let by_own_url: BTreeMap<StorageUrl, &StorageUrl> = foreign
                .iter()
                .map(|(path, there)| Ok((checkpoint.dir.join(path)?, there)))
                .collect::<Result<_, SyncError>>()?;
            for reference in &mut references {
                if reference.kind == HandleKind::Relative
                    && let Some(there) = by_own_url.get(&reference.url)
                {
                    reference.url = (*there).clone();
                }
            }
        }
        let checkpoint_text = checkpoint.dir.to_string();
        let mut files: Vec<(String, StorageUrl, StorageUrl)> = Vec::with_capacity(references.len());
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for reference in &references {
            let (key, peer) = self.place(&reference.url, &checkpoint_text)?;
            *sizes.entry(key.clone()).or_default() += reference.state_size;
            files.push((key, reference.url.clone(), peer));
        }
        Ok(Ok(SourceCheckpoint {
            metadata_url,
            metadata_bytes,
            permissions: source_metadata.permissions,
            metadata,
            total_bytes: references.iter().map(|r| r.state_size).sum(),
            file_count: references.len() as u64,
            files,
            sizes,
            foreign,
        }))
    }

    /// Splits the checkpoint's files into those verified earlier and still whole at the peer
    /// (`shared/` files of older checkpoints, or a crashed run: a manifest entry and the same
    /// length at the peer) and those to copy. One listing per peer directory holding such
    /// files gives every length (1000 `shared/` files: one call, not 1000).
    async fn reuse_verified(
        &self,
        source: &SourceCheckpoint,
        manifest: &mut Manifest,
    ) -> Result<CopyPlan, SyncError> {
        let mut to_copy = Vec::new();
        let mut reused = 0u64;
        // Every peer directory holding a file of this checkpoint, synced before `_metadata`.
        let mut peer_dirs: BTreeSet<StorageUrl> = BTreeSet::new();
        let mut listed: BTreeMap<StorageUrl, BTreeMap<String, u64>> = BTreeMap::new();
        for (rel, _, peer) in &source.files {
            if let Some(dir) = peer.parent() {
                peer_dirs.insert(dir.clone());
                if manifest.files.contains_key(rel) && !listed.contains_key(&dir) {
                    let lengths = file_lengths(self.inner.peer.as_ref(), &dir).await?;
                    listed.insert(dir, lengths);
                }
            }
        }
        for (rel, src, peer) in &source.files {
            let present = manifest.files.get(rel).is_some_and(|v| {
                peer.parent()
                    .and_then(|dir| listed.get(&dir))
                    .and_then(|lengths| lengths.get(peer.file_name()))
                    == Some(&v.len)
            });
            if present {
                reused += 1;
            } else {
                manifest.files.remove(rel);
                to_copy.push((rel.clone(), src.clone(), peer.clone()));
            }
        }
        Ok(CopyPlan {
            to_copy,
            reused,
            peer_dirs,
        })
    }

    /// Copies `to_copy` with `file_parallelism` streams, recording each verified file in the
    /// manifest (flushed every few files and at the end, whatever happens). `Ok(Err(_))`: the
    /// checkpoint vanished under the copy.
    async fn copy_all(
        &self,
        job: &str,
        checkpoint: &CompleteCheckpoint,
        to_copy: Vec<(String, StorageUrl, StorageUrl)>,
        manifest_url: &StorageUrl,
        manifest: &mut Manifest,
    ) -> Result<Result<Copied, JobOutcome>, SyncError> {
        let mut copied = Copied::default();
        let mut since_flush = 0usize;
        let mut queue = to_copy.into_iter();
        let mut running: JoinSet<(String, Result<VerifiedFile, SyncError>)> = JoinSet::new();
        let mut first_error: Option<SyncError> = None;
        let slots_count = self.inner.options.file_parallelism.max(1);
        let slots = Arc::new(Semaphore::new(slots_count));
        let in_flight = slots_count * (1 + SYNCS_PER_SLOT);
        loop {
            while first_error.is_none() && running.len() < in_flight {
                let Some((rel, src, peer)) = queue.next() else {
                    break;
                };
                let this = self.clone();
                let job = job.to_string();
                let slots = slots.clone();
                running.spawn(async move {
                    let result = this.copy_with_retries(&job, &src, &peer, &slots).await;
                    (rel, result)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined {
                Ok((rel, Ok(verified))) => {
                    copied.files += 1;
                    copied.bytes += verified.len;
                    self.emit(ProgressEvent::FileCopied {
                        job: job.to_string(),
                        path: rel.clone(),
                        bytes: verified.len,
                    });
                    manifest.files.insert(rel, verified);
                    since_flush += 1;
                    if since_flush >= MANIFEST_FLUSH_EVERY {
                        self.save_manifest(manifest_url, manifest).await?;
                        since_flush = 0;
                    }
                }
                Ok((_, Err(e))) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
                Err(join_error) => {
                    if first_error.is_none() {
                        first_error = Some(SyncError::Storage(StorageError::new(
                            "copy",
                            &checkpoint.dir,
                            StorageErrorKind::Other,
                            join_error,
                        )));
                    }
                }
            }
        }
        // Keep what was verified, whatever happens next: a retry starts from there.
        self.save_manifest(manifest_url, manifest).await?;
        if let Some(error) = first_error {
            if error.storage_kind() == Some(StorageErrorKind::NotFound)
                && self.source_gone(checkpoint).await
            {
                let vanished = JobOutcome::SourceVanished {
                    checkpoint_id: checkpoint.id,
                };
                return Ok(Err(self.skipped_with(
                    job,
                    checkpoint.id,
                    &error.to_string(),
                    vanished,
                )));
            }
            return Err(error);
        }
        Ok(Ok(copied))
    }

    /// Directories named in file-merging handles must exist at the peer.
    async fn make_directory_handles(&self, metadata: &CheckpointMetadata) -> Result<(), SyncError> {
        for handle in metadata
            .handles
            .iter()
            .filter(|h| h.kind == HandleKind::Directory)
        {
            if let Ok(url) = StorageUrl::parse(&handle.path)
                && let Ok(peer) = self.peer_url(&url)
            {
                self.inner.peer.mkdirs(&peer).await?;
            }
        }
        Ok(())
    }

    /// `_metadata` as the peer must read it (see [`UriMode`]).
    fn peer_metadata(
        &self,
        checkpoint: &CompleteCheckpoint,
        source: &SourceCheckpoint,
    ) -> Result<Vec<u8>, SyncError> {
        // `_metadata` goes last: the peer's chk-N is complete only when everything is there.
        // A relative handle whose file lies outside `chk-N/` becomes a file handle naming it
        // by absolute URI, as Flink itself writes it since FLINK-39964: at the peer's copy in
        // `Rewrite` mode, at the same (shared-nameservice) URI otherwise.
        let peer_metadata = match self.inner.options.uri_mode {
            UriMode::SharedNameservice if source.foreign.is_empty() => {
                source.metadata_bytes.clone()
            }
            UriMode::SharedNameservice => {
                source
                    .metadata
                    .rewrite_handles(&source.metadata_bytes, |h| {
                        match (h.kind, source.foreign.get(&h.path)) {
                            (HandleKind::Relative, Some(src)) => {
                                Rewrite::Absolute(src.to_flink_string())
                            }
                            _ => Rewrite::Keep,
                        }
                    })?
            }
            UriMode::Rewrite => {
                let checkpoint_dir = checkpoint.dir.clone();
                source
                    .metadata
                    .rewrite_handles(&source.metadata_bytes, |h| match h.kind {
                        HandleKind::Relative => match source.foreign.get(&h.path) {
                            Some(src) => self.peer_url(src).map_or(Rewrite::Keep, |peer| {
                                Rewrite::Absolute(peer.to_flink_string())
                            }),
                            None => Rewrite::Keep,
                        },
                        HandleKind::File | HandleKind::Segment | HandleKind::Directory => {
                            let url = if h.path.starts_with('/') {
                                StorageUrl::parse(&format!(
                                    "{}://{}{}",
                                    checkpoint_dir.scheme().as_str(),
                                    checkpoint_dir.authority(),
                                    h.path
                                ))
                            } else {
                                StorageUrl::parse(&h.path)
                            };
                            // Files outside the storage root failed the checkpoint above; a
                            // directory outside it is kept as it is.
                            match url.and_then(|url| self.peer_url(&url)) {
                                Ok(peer) => Rewrite::Uri(peer.to_flink_string()),
                                Err(_) => Rewrite::Keep,
                            }
                        }
                        HandleKind::Inline => Rewrite::Keep,
                    })?
            }
        };
        Ok(peer_metadata)
    }

    /// Writes `_metadata` last: the peer's `chk-N` is complete only when everything is there.
    async fn write_peer_metadata(
        &self,
        source: &SourceCheckpoint,
        peer_metadata: Vec<u8>,
        peer_dirs: BTreeSet<StorageUrl>,
    ) -> Result<(), SyncError> {
        // Each file was synced before its rename; the renames (and directories created for
        // them) become durable with their directories, synced here once per checkpoint and
        // before `_metadata` exists, so a crash can never leave a peer `chk-N/` that has its
        // `_metadata` but lost a file's name. Reused files are included: the run that copied
        // them may have crashed before getting here.
        let peer_metadata_url = self.peer_url(&source.metadata_url)?;
        if peer_metadata.len() as u64 > MAX_METADATA_BYTES {
            // Longer peer URIs made it grow: the peer could not read it back, nor Flink's
            // limit-free reader be trusted with it.
            return Err(SyncError::Storage(StorageError::new(
                "write",
                &peer_metadata_url,
                StorageErrorKind::TooLarge,
                format!(
                    "{} bytes once rewritten for the peer, more than the {MAX_METADATA_BYTES} a \
                     `_metadata` may have",
                    peer_metadata.len()
                ),
            )));
        }
        for dir in self.with_ancestors(peer_dirs) {
            self.inner.peer.sync_dir(&dir).await?;
        }

        let expected = VerifiedFile {
            len: peer_metadata.len() as u64,
            checksum: checksum::of(&peer_metadata),
        };
        self.inner
            .peer
            .write_all_with_permissions(
                &peer_metadata_url,
                Bytes::from(peer_metadata),
                source.permissions,
            )
            .await?;
        let written = self
            .inner
            .peer
            .read_bounded(&peer_metadata_url, MAX_METADATA_BYTES)
            .await?
            .bytes;
        let actual = VerifiedFile {
            len: written.len() as u64,
            checksum: checksum::of(&written),
        };
        if actual != expected {
            return Err(SyncError::VerifyFailed {
                url: peer_metadata_url.to_string(),
                expected_len: expected.len,
                expected_checksum: expected.checksum,
                actual_len: actual.len,
                actual_checksum: actual.checksum,
            });
        }
        // `_metadata` was synced before its rename; the rename is durable with its directory
        // (and a `chk-N/` created just now for it, with its parent's).
        for dir in self.with_ancestors(peer_metadata_url.parent()) {
            self.inner.peer.sync_dir(&dir).await?;
        }

        Ok(())
    }

    /// Records the checkpoint in the ledger, only now that every file of it is verified.
    async fn record(
        &self,
        job: &str,
        checkpoint: &CompleteCheckpoint,
        source: &SourceCheckpoint,
        reused: u64,
    ) -> Result<(), SyncError> {
        let peer_dir = self.peer_url(&checkpoint.dir)?;
        self.inner
            .ledger
            .record_replicated(
                job,
                ReplicatedCheckpoint {
                    checkpoint_id: checkpoint.id,
                    peer_pointer: peer_dir.to_string(),
                    source_completed_at: secs(checkpoint.completed_at),
                    recorded_at: now_secs(),
                    bytes: source.total_bytes,
                    files: source.file_count,
                },
            )
            .await?;
        self.update(job, |m| {
            m.latest_replicated_checkpoint = Some(checkpoint.id);
            m.latest_replicated_completed_at = secs(checkpoint.completed_at);
            m.checkpoints_replicated += 1;
            m.files_reused += reused;
            m.last_error = None;
        });
        self.emit(ProgressEvent::CheckpointReplicated {
            job: job.to_string(),
            checkpoint_id: checkpoint.id,
        });
        Ok(())
    }
}

/// Length of every entry of `dir` that is not a directory, by name; none when `dir` is missing.
async fn file_lengths(
    storage: &dyn Storage,
    dir: &StorageUrl,
) -> Result<BTreeMap<String, u64>, SyncError> {
    match storage.list(dir).await {
        Ok(entries) => Ok(entries
            .into_iter()
            .filter(|e| !e.is_dir)
            .map(|e| (e.name, e.len))
            .collect()),
        Err(e) if e.kind == StorageErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

/// A checkpoint as read at the source: its `_metadata` and every file it references.
struct SourceCheckpoint {
    metadata_url: StorageUrl,
    metadata_bytes: Vec<u8>,
    permissions: Option<u32>,
    metadata: CheckpointMetadata,
    total_bytes: u64,
    file_count: u64,
    /// (path relative to the peer root, source URL, peer URL).
    files: Vec<(String, StorageUrl, StorageUrl)>,
    sizes: BTreeMap<String, u64>,
    /// Relative handles whose files lie outside `chk-N/`, by handle path.
    foreign: BTreeMap<String, StorageUrl>,
}

struct CopyPlan {
    to_copy: Vec<(String, StorageUrl, StorageUrl)>,
    reused: u64,
    peer_dirs: BTreeSet<StorageUrl>,
}

#[derive(Default)]
struct Copied {
    files: u64,
    bytes: u64,
}
