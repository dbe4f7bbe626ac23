//! Job jars, replicated by content: a jar is stored at `<jar root>/<sha256>/<file name>` at
//! both sites, so the same relative jar URI resolves at either site.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::SyncError;
use crate::storage::Storage;
use crate::url::StorageUrl;

/// Where a jar lives, relative to a site's jar root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Publishes `jar` into every given site (`(storage, jar root)`), skipping sites that already
/// hold a verified copy. Jars are small next to checkpoints: read once into memory.
pub async fn publish_jar(
    source: &dyn Storage,
    jar: &StorageUrl,
    sites: &[(&dyn Storage, &StorageUrl)],
) -> Result<JarRef, SyncError> {
    let bytes = source.read_all(jar).await?;
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let jar_ref = JarRef {
        sha256,
        file_name: jar.file_name().to_string(),
    };
    for (storage, root) in sites {
        let target = jar_ref.url_at(root)?;
        if let Ok(existing) = storage.read_all(&target).await
            && Sha256::digest(&existing).as_slice() == Sha256::digest(&bytes).as_slice()
        {
            continue;
        }
        storage
            .write_all(&target, Bytes::from(bytes.clone()))
            .await?;
        let written = storage.read_all(&target).await?;
        if written != bytes {
            return Err(SyncError::VerifyFailed {
                url: target.to_string(),
                expected_len: bytes.len() as u64,
                expected_checksum: format!("sha256:{}", jar_ref.sha256),
                actual_len: written.len() as u64,
                actual_checksum: format!(
                    "sha256:{}",
                    Sha256::digest(&written)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ),
            });
        }
    }
    Ok(jar_ref)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    #[tokio::test]
    async fn a_jar_resolves_to_identical_bytes_at_both_sites() {
        let tmp = tempfile::tempdir().unwrap();
        let jar_path = tmp.path().join("job.jar");
        std::fs::write(&jar_path, b"PK jar bytes").unwrap();
        let a = StorageUrl::local(&tmp.path().join("site-a/jars")).unwrap();
        let b = StorageUrl::local(&tmp.path().join("site-b/jars")).unwrap();
        let jar = StorageUrl::local(&jar_path).unwrap();
        let local = LocalStorage::new(tmp.path());
        let r = publish_jar(&local, &jar, &[(&local, &a), (&local, &b)])
            .await
            .unwrap();
        for root in [&a, &b] {
            let got = local.read_all(&r.url_at(root).unwrap()).await.unwrap();
            assert_eq!(got, b"PK jar bytes");
        }
        // Publishing again is idempotent and yields the same reference.
        let again = publish_jar(&local, &jar, &[(&local, &a), (&local, &b)])
            .await
            .unwrap();
        assert_eq!(again, r);
    }
}
