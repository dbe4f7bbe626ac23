//! Job jars, replicated by content: a jar is stored at `<jar root>/<sha256>/<file name>` in
//! every site's storage, so one [`JarRef`] names the same bytes at each site.
//!
//! Jars can be hundreds of megabytes: they are streamed chunk by chunk (never held whole in
//! memory) and bounded ([`MAX_JAR_BYTES`], by size before reading and by count while
//! reading). A copy goes to a temporary name and is renamed on commit (the [`Storage`]
//! contract), then read back and hashed: a site is reported as holding a jar only once the
//! bytes there hash to the jar's address.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{StorageError, StorageErrorKind, SyncError};
use crate::storage::Storage;
use crate::url::StorageUrl;

/// The largest jar published or synced (2 GiB): far above a fat Flink job jar, and a bound
/// on what one hostile `jarURI` can make twinsite copy into every site.
pub const MAX_JAR_BYTES: u64 = 2 << 30;

/// Where a jar lives, relative to a site's jar root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct JarRef {
    pub sha256: String,
    pub file_name: String,
}

impl JarRef {
    pub fn relative_path(&self) -> String {
        format!("{}/{}", self.sha256, self.file_name)
    }

    /// The jar's URL at the site whose jar root is `root`.
    pub fn url_at(&self, root: &StorageUrl) -> Result<StorageUrl, SyncError> {
        root.join(&self.relative_path())
    }
}

/// How a site came to hold a jar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JarCopy {
    /// A verified copy was already there: nothing was written.
    AlreadyThere,
    /// Copied now and verified by read-back.
    Copied,
}

/// What [`publish_jar`] did: the jar's address and size, and per target site (in the order
/// given) whether its copy is verified there or why not.
#[derive(Debug)]
pub struct JarPublication {
    pub jar: JarRef,
    pub len: u64,
    pub sites: Vec<Result<JarCopy, SyncError>>,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn too_large(op: &'static str, url: &StorageUrl, size: &str) -> SyncError {
    SyncError::Storage(StorageError::new(
        op,
        url,
        StorageErrorKind::TooLarge,
        format!("{size} bytes, more than the {MAX_JAR_BYTES} a jar may have"),
    ))
}

/// SHA-256 (hex) and length of the file at `url`, streamed; refused past `limit` bytes.
pub async fn hash_file(
    storage: &dyn Storage,
    url: &StorageUrl,
    limit: u64,
) -> Result<(String, u64), SyncError> {
    if let Some(meta) = storage.stat(url).await?
        && meta.len > limit
    {
        return Err(too_large("read", url, &meta.len.to_string()));
    }
    let mut stream = storage.open_read(url).await?;
    let mut hash = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = stream.next_chunk().await? {
        len = len.saturating_add(chunk.len() as u64);
        if len > limit {
            return Err(too_large("read", url, "grew while being read: over"));
        }
        hash.update(&chunk);
    }
    Ok((hex(&hash.finalize()), len))
}

/// The address of the jar at `jar`: its content hash and file name.
pub async fn identify_jar(
    source: &dyn Storage,
    jar: &StorageUrl,
) -> Result<(JarRef, u64), SyncError> {
    let (sha256, len) = hash_file(source, jar, MAX_JAR_BYTES).await?;
    Ok((
        JarRef {
            sha256,
            file_name: jar.file_name().to_string(),
        },
        len,
    ))
}

/// Whether `storage` holds exactly the bytes of `jar_ref` under `root`: `Ok(false)` when
/// nothing or other bytes are there.
pub async fn holds_jar(
    storage: &dyn Storage,
    root: &StorageUrl,
    jar_ref: &JarRef,
) -> Result<bool, SyncError> {
    let target = jar_ref.url_at(root)?;
    if storage.stat(&target).await?.is_none() {
        return Ok(false);
    }
    match hash_file(storage, &target, MAX_JAR_BYTES).await {
        Ok((sha256, _)) => Ok(sha256 == jar_ref.sha256),
        Err(error) if error.storage_kind() == Some(StorageErrorKind::TooLarge) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Copies the jar at `jar` (whose address is `jar_ref`) into `target` under `root`, unless a
/// verified copy is there. The bytes sent are hashed on the way: a source that changed since
/// it was identified is not committed. The copy is then read back and hashed; `Ok` only when
/// it hashes to `jar_ref`.
pub async fn copy_jar(
    source: &dyn Storage,
    jar: &StorageUrl,
    jar_ref: &JarRef,
    target: &dyn Storage,
    root: &StorageUrl,
) -> Result<JarCopy, SyncError> {
    if holds_jar(target, root, jar_ref).await? {
        return Ok(JarCopy::AlreadyThere);
    }
    let to = jar_ref.url_at(root)?;
    let mut reader = source.open_read(jar).await?;
    let mut writer = target
        .create_with_permissions(&to, reader.permissions())
        .await?;
    let mut hash = Sha256::new();
    let mut len = 0u64;
    loop {
        let chunk: Bytes = match reader.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                writer.abort().await;
                return Err(error.into());
            }
        };
        len = len.saturating_add(chunk.len() as u64);
        if len > MAX_JAR_BYTES {
            writer.abort().await;
            return Err(too_large("read", jar, "grew while being read: over"));
        }
        hash.update(&chunk);
        if let Err(error) = writer.write(chunk).await {
            writer.abort().await;
            return Err(error.into());
        }
    }
    let sent = hex(&hash.finalize());
    if sent != jar_ref.sha256 {
        writer.abort().await;
        return Err(SyncError::VerifyFailed {
            url: jar.to_string(),
            expected_len: len,
            expected_checksum: format!("sha256:{}", jar_ref.sha256),
            actual_len: len,
            actual_checksum: format!("sha256:{sent} (the source changed while it was copied)"),
        });
    }
    writer.commit().await?;
    let (written, written_len) = hash_file(target, &to, MAX_JAR_BYTES).await?;
    if written != jar_ref.sha256 {
        // Never leave bytes under an address they do not hash to.
        let _ = target.delete(&to).await;
        return Err(SyncError::VerifyFailed {
            url: to.to_string(),
            expected_len: len,
            expected_checksum: format!("sha256:{}", jar_ref.sha256),
            actual_len: written_len,
            actual_checksum: format!("sha256:{written}"),
        });
    }
    if let Some(parent) = to.parent() {
        target.sync_dir(&parent).await?;
    }
    Ok(JarCopy::Copied)
}

/// Publishes `jar` into every given site (`(storage, jar root)`): identifies it (one streamed
/// read), then copies it to each site that lacks a verified copy. `Err` when the source
/// cannot be read or is too large; otherwise each site's outcome, in order (one failing site
/// does not stop the others).
pub async fn publish_jar(
    source: &dyn Storage,
    jar: &StorageUrl,
    sites: &[(&dyn Storage, &StorageUrl)],
) -> Result<JarPublication, SyncError> {
    let (jar_ref, len) = identify_jar(source, jar).await?;
    let mut outcomes = Vec::with_capacity(sites.len());
    for (storage, root) in sites {
        outcomes.push(copy_jar(source, jar, &jar_ref, *storage, root).await);
    }
    Ok(JarPublication {
        jar: jar_ref,
        len,
        sites: outcomes,
    })
}

/// What [`sync_jars`] did.
#[derive(Debug, Default)]
pub struct JarSyncReport {
    /// Jars copied now (verified at the target).
    pub copied: Vec<JarRef>,
    /// Jars the target already held, verified.
    pub present: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Entries not copied, with the reason: a file whose bytes do not hash to the directory
    /// it sits in, a name that is not `<sha256>/<file>`, a failed copy.
    pub skipped: Vec<(String, String)>,
}

fn is_sha256_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Copies every jar under the jar root `from_root` (entries `<sha256>/<file name>`) that
/// `to` lacks under `to_root`. A source file is copied only when its bytes hash to its
/// directory's name (a damaged or hand-placed file is reported, never spread); the copy is
/// verified like [`copy_jar`]'s. A missing source jar root is an empty one.
pub async fn sync_jars(
    from: &dyn Storage,
    from_root: &StorageUrl,
    to: &dyn Storage,
    to_root: &StorageUrl,
) -> Result<JarSyncReport, SyncError> {
    let mut report = JarSyncReport::default();
    let dirs = match from.list(from_root).await {
        Ok(dirs) => dirs,
        Err(error) if error.kind == StorageErrorKind::NotFound => return Ok(report),
        Err(error) => return Err(error.into()),
    };
    for dir in dirs {
        let dir_url = from_root.join(&dir.name)?;
        if !dir.is_dir || !is_sha256_hex(&dir.name) {
            if !dir.name.ends_with(crate::storage::TEMP_SUFFIX) {
                report.skipped.push((
                    dir_url.to_string(),
                    "not a <sha256> directory of the jar root".into(),
                ));
            }
            continue;
        }
        for file in from.list(&dir_url).await? {
            let url = dir_url.join(&file.name)?;
            if file.is_dir || file.is_symlink || file.name.ends_with(crate::storage::TEMP_SUFFIX) {
                continue;
            }
            let jar_ref = JarRef {
                sha256: dir.name.clone(),
                file_name: file.name.clone(),
            };
            let outcome = async {
                let (sha256, len) = hash_file(from, &url, MAX_JAR_BYTES).await?;
                if sha256 != jar_ref.sha256 {
                    return Err(SyncError::VerifyFailed {
                        url: url.to_string(),
                        expected_len: len,
                        expected_checksum: format!("sha256:{}", jar_ref.sha256),
                        actual_len: len,
                        actual_checksum: format!("sha256:{sha256}"),
                    });
                }
                Ok((copy_jar(from, &url, &jar_ref, to, to_root).await?, len))
            }
            .await;
            match outcome {
                Ok((JarCopy::AlreadyThere, _)) => report.present += 1,
                Ok((JarCopy::Copied, len)) => {
                    report.bytes += len;
                    report.copied.push(jar_ref);
                }
                Err(error) => report.skipped.push((url.to_string(), error.to_string())),
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fault::{Fault, FaultAction, FaultOp, FaultyStorage};
    use crate::storage::LocalStorage;

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn a_jar_resolves_to_identical_bytes_at_both_sites() {
        let tmp = tempfile::tempdir().unwrap();
        let jar_path = tmp.path().join("job.jar");
        std::fs::write(&jar_path, b"PK jar bytes").unwrap();
        let a = StorageUrl::local(&tmp.path().join("site-a/jars")).unwrap();
        let b = StorageUrl::local(&tmp.path().join("site-b/jars")).unwrap();
        let jar = StorageUrl::local(&jar_path).unwrap();
        let local = LocalStorage::new(tmp.path());
        let first = publish_jar(&local, &jar, &[(&local, &a), (&local, &b)])
            .await
            .unwrap();
        assert_eq!(first.jar.sha256, sha(b"PK jar bytes"));
        assert!(first.sites.iter().all(|s| matches!(s, Ok(JarCopy::Copied))));
        for root in [&a, &b] {
            let got = local
                .read_all(&first.jar.url_at(root).unwrap())
                .await
                .unwrap();
            assert_eq!(got, b"PK jar bytes");
        }
        // Publishing again is idempotent: same reference, nothing written.
        let again = publish_jar(&local, &jar, &[(&local, &a), (&local, &b)])
            .await
            .unwrap();
        assert_eq!(again.jar, first.jar);
        assert!(
            again
                .sites
                .iter()
                .all(|s| matches!(s, Ok(JarCopy::AlreadyThere)))
        );
    }

    #[tokio::test]
    async fn a_jar_larger_than_one_chunk_is_streamed_and_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(crate::storage::CHUNK_SIZE * 3 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(tmp.path().join("big.jar"), &bytes).unwrap();
        let local = LocalStorage::new(tmp.path());
        let root = StorageUrl::local(&tmp.path().join("b/jars")).unwrap();
        let jar = StorageUrl::local(&tmp.path().join("big.jar")).unwrap();
        let published = publish_jar(&local, &jar, &[(&local, &root)]).await.unwrap();
        assert_eq!(published.len, bytes.len() as u64);
        assert_eq!(published.jar.sha256, sha(&bytes));
        let got = local
            .read_all(&published.jar.url_at(&root).unwrap())
            .await
            .unwrap();
        assert_eq!(got, bytes);
    }

    #[tokio::test]
    async fn a_corrupted_copy_is_refused_and_removed_while_the_other_site_gets_its_jar() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("job.jar"), b"PK the real bytes").unwrap();
        let local: Arc<dyn Storage> = Arc::new(LocalStorage::new(tmp.path()));
        let faulty = FaultyStorage::new(Arc::clone(&local));
        faulty.add(Fault {
            op: FaultOp::Write,
            url_contains: "site-b".into(),
            action: FaultAction::CorruptWrite,
            times: None,
        });
        let a = StorageUrl::local(&tmp.path().join("site-a/jars")).unwrap();
        let b = StorageUrl::local(&tmp.path().join("site-b/jars")).unwrap();
        let jar = StorageUrl::local(&tmp.path().join("job.jar")).unwrap();
        let published = publish_jar(&*local, &jar, &[(&*local, &a), (&faulty, &b)])
            .await
            .unwrap();
        assert!(matches!(published.sites[0], Ok(JarCopy::Copied)));
        let error = published.sites[1].as_ref().unwrap_err();
        assert!(
            matches!(error, SyncError::VerifyFailed { .. }),
            "{error}: the corrupted copy must fail its read-back"
        );
        assert!(
            !holds_jar(&*local, &b, &published.jar).await.unwrap(),
            "no bytes stay under an address they do not hash to"
        );
    }

    #[tokio::test]
    async fn an_unreadable_source_names_its_url() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalStorage::new(tmp.path());
        let root = StorageUrl::local(&tmp.path().join("jars")).unwrap();
        let jar = StorageUrl::local(&tmp.path().join("missing.jar")).unwrap();
        let error = publish_jar(&local, &jar, &[(&local, &root)])
            .await
            .unwrap_err();
        assert_eq!(error.storage_kind(), Some(StorageErrorKind::NotFound));
        assert!(error.to_string().contains("missing.jar"), "{error}");
    }

    #[tokio::test]
    async fn sync_copies_jars_that_hash_to_their_address_and_reports_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalStorage::new(tmp.path());
        let from = StorageUrl::local(&tmp.path().join("a/jars")).unwrap();
        let to = StorageUrl::local(&tmp.path().join("b/jars")).unwrap();
        let good = JarRef {
            sha256: sha(b"good jar"),
            file_name: "good.jar".into(),
        };
        local
            .write_all(
                &good.url_at(&from).unwrap(),
                Bytes::from_static(b"good jar"),
            )
            .await
            .unwrap();
        let lying = JarRef {
            sha256: sha(b"what it claims"),
            file_name: "bad.jar".into(),
        };
        local
            .write_all(&lying.url_at(&from).unwrap(), Bytes::from_static(b"other"))
            .await
            .unwrap();
        let report = sync_jars(&local, &from, &local, &to).await.unwrap();
        assert_eq!(report.copied, vec![good.clone()]);
        assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
        assert!(report.skipped[0].0.contains("bad.jar"));
        assert!(holds_jar(&local, &to, &good).await.unwrap());
        assert!(!holds_jar(&local, &to, &lying).await.unwrap());
        let again = sync_jars(&local, &from, &local, &to).await.unwrap();
        assert_eq!((again.copied.len(), again.present), (0, 1));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn action(kind: u8) -> FaultAction {
            match kind % 4 {
                0 => FaultAction::CorruptWrite,
                1 => FaultAction::TruncateWrite,
                2 => FaultAction::Fail(StorageErrorKind::NoSpace),
                _ => FaultAction::Fail(StorageErrorKind::Other),
            }
        }

        fn op(kind: u8) -> FaultOp {
            match kind % 4 {
                0 => FaultOp::Write,
                1 => FaultOp::Create,
                2 => FaultOp::Commit,
                _ => FaultOp::Open,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// Whatever faults hit the target (corrupt or short writes, refusals), a site is
            /// reported as holding the jar only when the bytes at its address hash to it.
            #[test]
            fn a_jar_is_never_reported_published_before_its_bytes_verify_there(
                content in proptest::collection::vec(any::<u8>(), 0..5000),
                faults in proptest::collection::vec((any::<u8>(), any::<u8>(), 1u32..3), 0..3),
            ) {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let tmp = tempfile::tempdir().unwrap();
                    std::fs::write(tmp.path().join("job.jar"), &content).unwrap();
                    let local: Arc<dyn Storage> = Arc::new(LocalStorage::new(tmp.path()));
                    let faulty = FaultyStorage::new(Arc::clone(&local));
                    for (o, a, times) in &faults {
                        faulty.add(Fault {
                            op: op(*o),
                            url_contains: "site-b".into(),
                            action: action(*a),
                            times: Some(*times),
                        });
                    }
                    let root = StorageUrl::local(&tmp.path().join("site-b/jars")).unwrap();
                    let jar = StorageUrl::local(&tmp.path().join("job.jar")).unwrap();
                    // Two attempts, as the controller retries.
                    for _ in 0..2 {
                        let published = publish_jar(&*local, &jar, &[(&faulty, &root)])
                            .await
                            .unwrap();
                        let at = published.jar.url_at(&root).unwrap();
                        if published.sites[0].is_ok() {
                            let there = local.read_all(&at).await.unwrap();
                            prop_assert_eq!(sha(&there), published.jar.sha256.clone());
                            prop_assert_eq!(there, content.clone());
                        }
                    }
                    Ok(())
                })?;
            }
        }
    }
}
