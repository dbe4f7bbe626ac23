//! The `_metadata` file the simulated site writes into each checkpoint and savepoint: Flink's
//! own binary format (checkpoint metadata version 6, as Flink 1.17–2.x writes it), so that
//! hdfs-sync discovers, parses, copies and rewrites simulated checkpoints exactly as it does
//! real ones. One operator, one subtask, one incremental RocksDB keyed-state handle whose
//! shared files are the checkpoint's files (absolute URIs); the Flink job id is the
//! operator's uid. Parsing goes through `hdfs_sync::CheckpointMetadata`, the same parser
//! that reads real Flink checkpoints.

use std::path::Path;

use hdfs_sync::CheckpointMetadata;
use hdfs_sync::metadata::{HEADER_MAGIC, HandleKind, encode_modified_utf8};

/// The operator name every simulated checkpoint carries.
pub const SIM_OPERATOR: &str = "twinsite-simulated-job";

// Handle type bytes of Flink's MetadataV2V3SerializerBase.
const NULL_HANDLE: u8 = 0;
const BYTE_STREAM_STATE_HANDLE: u8 = 1;
const FILE_STREAM_STATE_HANDLE: u8 = 2;
const INCREMENTAL_KEY_GROUPS_HANDLE_V2: u8 = 11;
/// `ObjectOutputStream`'s stream header: the Java-serialised CheckpointProperties start here.
const JAVA_SERIALIZATION_MAGIC: [u8; 4] = [0xac, 0xed, 0x00, 0x05];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMetadata {
    /// Flink job id (32 hex digits) of the job that took the checkpoint.
    pub flink_job_id: String,
    pub checkpoint_id: u64,
    /// Absolute URIs of every state file the checkpoint references.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimMetadataError {
    #[error("{0}")]
    Parse(String),
    #[error("{path}: {reason}")]
    Shape { path: String, reason: String },
}

/// DataOutputStream-style big-endian writer.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// `writeUTF`: a u16 length and modified UTF-8. Strings here are ids and URIs, far below
    /// the 64 KiB limit; a longer one is cut rather than written malformed.
    fn utf(&mut self, s: &str) -> &mut Self {
        let encoded = encode_modified_utf8(s).unwrap_or_else(|| {
            let cut: String = s.chars().take(8000).collect();
            encode_modified_utf8(&cut).unwrap_or_else(|| vec![0, 0])
        });
        self.0.extend_from_slice(&encoded);
        self
    }
    fn file(&mut self, path: &str, size: i64) -> &mut Self {
        self.u8(FILE_STREAM_STATE_HANDLE).i64(size).utf(path)
    }
    fn inline(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.u8(BYTE_STREAM_STATE_HANDLE)
            .utf(name)
            .i32(i32::try_from(data.len()).unwrap_or(i32::MAX));
        self.0.extend_from_slice(data);
        self
    }
}

/// `_metadata` bytes for `meta`; `size_of` gives each file's size (state sizes are recorded).
pub fn render(meta: &SimMetadata, size_of: impl Fn(&str) -> u64) -> Vec<u8> {
    let mut w = Out::default();
    let id = i64::try_from(meta.checkpoint_id).unwrap_or(i64::MAX);
    w.i32(HEADER_MAGIC as i32).i32(6).i64(id).i32(0).i32(1);
    // Operator: name, uid (the Flink job id), id (two longs), parallelism, max parallelism.
    w.utf(SIM_OPERATOR)
        .utf(&meta.flink_job_id)
        .i64(1)
        .i64(2)
        .i32(1)
        .i32(128);
    w.u8(NULL_HANDLE); // no coordinator state
    w.i32(1).i32(0); // one subtask, index 0
    w.i32(0).i32(0); // no managed, no raw operator state
    w.u8(INCREMENTAL_KEY_GROUPS_HANDLE_V2)
        .i64(id)
        .utf("twinsite-sim-backend")
        .i32(0)
        .i32(128)
        .i64(meta.files.iter().map(|f| size_of(f)).sum::<u64>() as i64);
    w.inline("meta", b"simulated-rocksdb-meta");
    w.i32(i32::try_from(meta.files.len()).unwrap_or(i32::MAX));
    for (i, file) in meta.files.iter().enumerate() {
        w.utf(&format!("{i:06}.sst"))
            .file(file, i64::try_from(size_of(file)).unwrap_or(0));
    }
    w.i32(0); // no private files
    w.utf("twinsite-sim-handle");
    w.u8(NULL_HANDLE); // no raw keyed state
    w.i32(0).i32(0); // no channel state
    w.0.extend_from_slice(&JAVA_SERIALIZATION_MAGIC);
    w.0.extend_from_slice(b"simulated CheckpointProperties");
    w.0
}

/// Parses `_metadata` bytes (simulated or written by real Flink); `path` names the file.
pub fn parse(path: &str, bytes: &[u8]) -> Result<SimMetadata, SimMetadataError> {
    let metadata = CheckpointMetadata::parse(bytes, path)
        .map_err(|e| SimMetadataError::Parse(e.to_string()))?;
    let flink_job_id = metadata
        .operators
        .iter()
        .find(|o| o.name.as_deref() == Some(SIM_OPERATOR))
        .and_then(|o| o.uid.clone())
        .unwrap_or_default();
    let mut files = Vec::new();
    for handle in metadata.file_handles() {
        if handle.kind != HandleKind::File {
            return Err(SimMetadataError::Shape {
                path: path.to_string(),
                reason: format!(
                    "the simulated site only restores whole-file handles, found {:?} at {}",
                    handle.kind, handle.location
                ),
            });
        }
        files.push(handle.path.clone());
    }
    Ok(SimMetadata {
        flink_job_id,
        checkpoint_id: metadata.checkpoint_id,
        files,
    })
}

/// Writes `meta` as `<dir>/_metadata`, last, via a temporary name: a checkpoint is complete
/// exactly when `_metadata` exists, so it must never be seen half-written.
pub fn write(dir: &Path, meta: &SimMetadata, size_of: impl Fn(&str) -> u64) -> std::io::Result<()> {
    let tmp = dir.join("._metadata.inprogress");
    std::fs::write(&tmp, render(meta, size_of))?;
    std::fs::rename(&tmp, dir.join("_metadata"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_checkpoint_reads_back_through_the_flink_metadata_parser() {
        let meta = SimMetadata {
            flink_job_id: "0123456789abcdef0123456789abcdef".into(),
            checkpoint_id: 42,
            files: vec![
                "file:///data/dc-a/flink/x/0123/shared/a.sst".into(),
                "file:///data/dc-a/flink/x/0123/shared/b.sst".into(),
            ],
        };
        let bytes = render(&meta, |_| 100);
        assert_eq!(parse("mem", &bytes).unwrap(), meta);
        let parsed = CheckpointMetadata::parse(&bytes, "mem").unwrap();
        assert_eq!(parsed.version, 6);
        assert_eq!(parsed.inline_handles().count(), 1);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let err = parse("chk-1/_metadata", b"not flink")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chk-1/_metadata"), "{err}");
    }
}
