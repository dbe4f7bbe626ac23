//! What the peer already holds, verified: the per-job manifest a restarted sync trusts
//! to skip files (length and checksum of each), and its load and save.

use super::*;

/// Length and checksum of a file verified at the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedFile {
    pub len: u64,
    /// `xxh64:<hex>` (see [`crate::checksum`]); manifests written before it hold the bare
    /// SHA-256 hex under the old key `sha256`, still read (reuse checks the length at the
    /// peer, never the recorded checksum).
    #[serde(alias = "sha256")]
    pub checksum: String,
}

/// Files of a job verified at the peer, keyed by path relative to the peer root. Kept at
/// `<peer job dir>/.twinsite/verified.json` so a restarted sync skips them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub(super) files: BTreeMap<String, VerifiedFile>,
}

pub const MANIFEST_DIR: &str = ".twinsite";
pub(super) const MANIFEST_FLUSH_EVERY: usize = 32;

impl Replicator {
    pub(super) async fn load_manifest(
        &self,
        job: &str,
    ) -> Result<(StorageUrl, Manifest), SyncError> {
        let url = self
            .inner
            .peer_root
            .join(&format!("{job}/{MANIFEST_DIR}/verified.json"))?;
        let manifest = match self.inner.peer.read_all(&url).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Losing the manifest only costs re-copying; never trust a damaged one.
                tracing::warn!(manifest = %url, error = %e, "ignoring unreadable manifest");
                Manifest::default()
            }),
            Err(e) if e.kind == StorageErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(e.into()),
        };
        Ok((url, manifest))
    }

    pub(super) async fn save_manifest(
        &self,
        url: &StorageUrl,
        manifest: &Manifest,
    ) -> Result<(), SyncError> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| SyncError::Ledger {
            path: url.to_string(),
            message: e.to_string(),
        })?;
        self.inner.peer.write_all(url, Bytes::from(bytes)).await?;
        Ok(())
    }
}
