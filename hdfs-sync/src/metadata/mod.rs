//! Flink checkpoint `_metadata`: parses formats V3–V7 down to every state handle, lists the
//! files a checkpoint references, and rewrites the URIs in it for the peer site.
//!
//! Layout (Java `DataOutputStream`, big-endian; strings are modified UTF-8 with a u16 length):
//! `magic 0x4960672d | version | checkpoint id | master states | operator states | [V4+: Java-
//! serialised CheckpointProperties]`. Handle type bytes follow Flink's
//! `MetadataV2V3SerializerBase` (checked against the bytecode of Flink 2.3, which writes V6).
//! No length prefix encloses any state handle, so a rewrite splices new path strings into the
//! original bytes and leaves everything else byte-for-byte as Flink wrote it.
//!
//! Layout: `reader` is the byte reader (`DataInputStream` primitives, bounded counts),
//! `parse` walks the format's structures, `rewrite` splices new paths into the original
//! bytes, `modified_utf8` is Java's string encoding; the parsed types are here.

mod modified_utf8;
mod parse;
mod reader;
mod rewrite;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use crate::error::MetadataError;
use crate::url::StorageUrl;

use reader::Parser;

pub use modified_utf8::encode_modified_utf8;
pub use rewrite::Rewrite;

pub const HEADER_MAGIC: u32 = 0x4960_672d;
const MASTER_STATE_MAGIC: u32 = 0xc96b_1696;
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 3..=7;

/// The largest `_metadata` read or parsed: 64 MiB. Flink's own are kilobytes to a few
/// megabytes (state handles, plus inline state below `state.storage.fs.memory-threshold`,
/// at most 1 MiB per handle); a file is read whole into memory, so a bound is what stands
/// between a `/dev/zero`-sized file and the process.
pub const MAX_METADATA_BYTES: u64 = 64 * 1024 * 1024;
const JAVA_SERIALIZATION_MAGIC: [u8; 4] = [0xac, 0xed, 0x00, 0x05];

/// What a stream state handle stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// `FileStateHandle`: a whole file, by absolute URI.
    File,
    /// `RelativeFileStateHandle`: a file inside the checkpoint's own `chk-N/` directory.
    Relative,
    /// `SegmentFileStateHandle` (file merging): a byte range of a shared physical file.
    Segment,
    /// A directory handle (file-merging operator state): a URI, but no file behind it.
    Directory,
    /// `ByteStreamStateHandle`: bytes stored inline in `_metadata`. Its name often looks like a
    /// path, but no file exists behind it.
    Inline,
}

/// One state handle found in `_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateHandle {
    pub kind: HandleKind,
    /// Absolute URI (File, Segment, Directory), path relative to `chk-N/` (Relative), or the
    /// handle name (Inline).
    pub path: String,
    /// State size in bytes as recorded (for Inline: the inline byte count).
    pub size: u64,
    /// Where in the checkpoint the handle sits, for messages: `operator <id> subtask <n> <role>`.
    /// Shared by the handles of one place: a hostile file packing millions of handles into
    /// its 64 MiB costs one struct per handle, not one string more.
    pub location: Arc<str>,
    /// Byte range of the path string (u16 length + bytes) within `_metadata` (at most
    /// [`MAX_METADATA_BYTES`] long, so `u32` holds it: a smaller struct per handle).
    span: (u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSummary {
    pub operator_id: String,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub parallelism: i32,
    pub max_parallelism: i32,
    pub subtask_states: usize,
}

/// A parsed `_metadata` file.
#[derive(Debug, Clone)]
pub struct CheckpointMetadata {
    pub version: u32,
    pub checkpoint_id: u64,
    pub master_states: usize,
    pub operators: Vec<OperatorSummary>,
    pub handles: Vec<StateHandle>,
}

/// A file a checkpoint needs, resolved to a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReference {
    pub url: StorageUrl,
    /// Recorded state size; for a segment, its length within the physical file.
    pub state_size: u64,
    pub kind: HandleKind,
}

impl CheckpointMetadata {
    /// Parses `_metadata` bytes. `file` names the file in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Self, MetadataError> {
        Parser::new(bytes, file).parse()
    }

    /// Handles that stand for files (File, Relative, Segment), in file order.
    pub fn file_handles(&self) -> impl Iterator<Item = &StateHandle> {
        self.handles.iter().filter(|h| {
            matches!(
                h.kind,
                HandleKind::File | HandleKind::Relative | HandleKind::Segment
            )
        })
    }

    pub fn inline_handles(&self) -> impl Iterator<Item = &StateHandle> {
        self.handles.iter().filter(|h| h.kind == HandleKind::Inline)
    }

    /// Every distinct file the checkpoint in `checkpoint_dir` (its `chk-N/`) references.
    /// Paths without a scheme take the scheme and authority of `checkpoint_dir`.
    pub fn referenced_files(
        &self,
        checkpoint_dir: &StorageUrl,
    ) -> Result<Vec<FileReference>, MetadataError> {
        let mut out: Vec<FileReference> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for handle in self.file_handles() {
            let url = resolve(handle, checkpoint_dir).map_err(|reason| MetadataError {
                file: checkpoint_dir
                    .join("_metadata")
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
                offset: handle.span.0 as usize,
                expected: format!(
                    "a resolvable file URI at {}, found `{}`: {reason}",
                    handle.location, handle.path
                ),
            })?;
            if seen.insert(url.clone()) {
                out.push(FileReference {
                    url,
                    state_size: handle.size,
                    kind: handle.kind,
                });
            }
        }
        Ok(out)
    }
}

fn resolve(handle: &StateHandle, checkpoint_dir: &StorageUrl) -> Result<StorageUrl, String> {
    match handle.kind {
        HandleKind::Relative => checkpoint_dir.join(&handle.path).map_err(|e| e.to_string()),
        _ if handle.path.starts_with('/') => {
            let base = StorageUrl::parse(&format!(
                "{}://{}/",
                checkpoint_dir.scheme().as_str(),
                checkpoint_dir.authority()
            ))
            .map_err(|e| e.to_string())?;
            base.join(&handle.path).map_err(|e| e.to_string())
        }
        _ => StorageUrl::parse(&handle.path).map_err(|e| e.to_string()),
    }
}
