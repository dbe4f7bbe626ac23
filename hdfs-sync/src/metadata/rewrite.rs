//! Rewriting a parsed `_metadata`: each handle's path replaced in the original bytes, every
//! other byte (the Java-serialised trailer included) left exactly as Flink wrote it.

use super::modified_utf8::encode_modified_utf8;
use super::parse::{FILE_STREAM_STATE_HANDLE, RELATIVE_STREAM_STATE_HANDLE};
use super::{CheckpointMetadata, HandleKind, StateHandle};
use crate::error::MetadataError;

impl CheckpointMetadata {
    /// Re-serialises `original` (the bytes this was parsed from) with every absolute URI
    /// (File, Segment, Directory handles) passed through `map`; `None` keeps a URI as it is.
    /// Relative and inline handles are left alone: they move with `chk-N/` or need no file.
    pub fn rewrite_uris(
        &self,
        original: &[u8],
        mut map: impl FnMut(&str) -> Option<String>,
    ) -> Result<Vec<u8>, MetadataError> {
        self.rewrite_handles(original, |handle| match handle.kind {
            HandleKind::File | HandleKind::Segment | HandleKind::Directory => {
                map(&handle.path).map_or(Rewrite::Keep, Rewrite::Uri)
            }
            HandleKind::Relative | HandleKind::Inline => Rewrite::Keep,
        })
    }

    /// Re-serialises `original` (the bytes this was parsed from) with each handle as `decide`
    /// says. Every byte of a kept handle, and everything that is not a handle's path (the
    /// Java-serialised trailer included), stays as Flink wrote it.
    pub fn rewrite_handles(
        &self,
        original: &[u8],
        mut decide: impl FnMut(&StateHandle) -> Rewrite,
    ) -> Result<Vec<u8>, MetadataError> {
        let fail = |offset: usize, expected: String| MetadataError {
            file: "rewrite".to_string(),
            offset,
            expected,
        };
        let encode = |offset: usize, path: &str| {
            encode_modified_utf8(path).ok_or_else(|| {
                fail(
                    offset,
                    format!("a path of at most 65535 bytes, got `{path}`"),
                )
            })
        };
        let mut out = Vec::with_capacity(original.len());
        let mut cursor = 0;
        for handle in &self.handles {
            let rewrite = decide(handle);
            if rewrite == Rewrite::Keep {
                continue;
            }
            let (start, end) = (handle.span.0 as usize, handle.span.1 as usize);
            // A relative handle is `type, path, size`; its file form is `type, size, path`, so
            // the whole handle is replaced, from its type byte to the end of its size.
            let (start, end) = match (&rewrite, handle.kind) {
                (
                    Rewrite::Uri(_),
                    HandleKind::File | HandleKind::Segment | HandleKind::Directory,
                ) => (start, end),
                (Rewrite::Absolute(_), HandleKind::Relative) => (
                    start
                        .checked_sub(1)
                        .ok_or_else(|| fail(start, "a handle type byte".to_string()))?,
                    end + 8,
                ),
                _ => {
                    return Err(fail(
                        start,
                        format!(
                            "a rewrite that fits a {:?} handle at {}, got {rewrite:?}",
                            handle.kind, handle.location
                        ),
                    ));
                }
            };
            if start < cursor || end > original.len() {
                return Err(fail(
                    start,
                    "the bytes the metadata was parsed from".to_string(),
                ));
            }
            out.extend_from_slice(&original[cursor..start]);
            match &rewrite {
                Rewrite::Uri(path) => out.extend_from_slice(&encode(start, path)?),
                Rewrite::Absolute(path) => {
                    if original[start] != RELATIVE_STREAM_STATE_HANDLE {
                        return Err(fail(start, "a relative file handle here".to_string()));
                    }
                    out.push(FILE_STREAM_STATE_HANDLE);
                    // The size exactly as Flink wrote it.
                    out.extend_from_slice(&original[end - 8..end]);
                    out.extend_from_slice(&encode(start, path)?);
                }
                Rewrite::Keep => {}
            }
            cursor = end;
        }
        out.extend_from_slice(&original[cursor..]);
        Ok(out)
    }
}

/// What [`CheckpointMetadata::rewrite_handles`] writes for one handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// The handle byte for byte.
    Keep,
    /// A File, Segment or Directory handle naming this URI instead.
    Uri(String),
    /// A Relative handle written as a File handle of the same size naming this absolute URI:
    /// how Flink itself writes a file that lies outside the checkpoint's own directory
    /// (since FLINK-39964; 2.3.0 and earlier write such a file as relative, and cannot
    /// restore it).
    Absolute(String),
}
