//! Flink checkpoint `_metadata`: parses formats V3–V7 down to every state handle, lists the
//! files a checkpoint references, and rewrites the URIs in it for the peer site.
//!
//! Layout (Java `DataOutputStream`, big-endian; strings are modified UTF-8 with a u16 length):
//! `magic 0x4960672d | version | checkpoint id | master states | operator states | [V4+: Java-
//! serialised CheckpointProperties]`. Handle type bytes follow Flink's
//! `MetadataV2V3SerializerBase` (checked against the bytecode of Flink 2.3, which writes V6).
//! No length prefix encloses any state handle, so a rewrite splices new path strings into the
//! original bytes and leaves everything else byte-for-byte as Flink wrote it.

use std::sync::Arc;

use crate::error::MetadataError;
use crate::url::StorageUrl;

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

/// Java's modified UTF-8 (`DataOutputStream#writeUTF`) with its u16 length prefix.
pub fn encode_modified_utf8(text: &str) -> Option<Vec<u8>> {
    let mut body = Vec::with_capacity(text.len());
    for unit in text.encode_utf16() {
        match unit {
            0x0001..=0x007f => body.push(unit as u8),
            0x0000 | 0x0080..=0x07ff => {
                body.push(0xc0 | ((unit >> 6) & 0x1f) as u8);
                body.push(0x80 | (unit & 0x3f) as u8);
            }
            _ => {
                body.push(0xe0 | ((unit >> 12) & 0x0f) as u8);
                body.push(0x80 | ((unit >> 6) & 0x3f) as u8);
                body.push(0x80 | (unit & 0x3f) as u8);
            }
        }
    }
    let len = u16::try_from(body.len()).ok()?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Some(out)
}

fn decode_modified_utf8(bytes: &[u8]) -> Option<String> {
    let mut units = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b & 0x80 == 0 {
            units.push(u16::from(b));
            i += 1;
        } else if b & 0xe0 == 0xc0 {
            let b2 = *bytes.get(i + 1)?;
            if b2 & 0xc0 != 0x80 {
                return None;
            }
            units.push((u16::from(b & 0x1f) << 6) | u16::from(b2 & 0x3f));
            i += 2;
        } else if b & 0xf0 == 0xe0 {
            let b2 = *bytes.get(i + 1)?;
            let b3 = *bytes.get(i + 2)?;
            if b2 & 0xc0 != 0x80 || b3 & 0xc0 != 0x80 {
                return None;
            }
            units.push(
                (u16::from(b & 0x0f) << 12) | (u16::from(b2 & 0x3f) << 6) | u16::from(b3 & 0x3f),
            );
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf16(&units).ok()
}

// Handle type bytes, as in Flink's MetadataV2V3SerializerBase.
const NULL_HANDLE: u8 = 0;
const BYTE_STREAM_STATE_HANDLE: u8 = 1;
const FILE_STREAM_STATE_HANDLE: u8 = 2;
const KEY_GROUPS_HANDLE: u8 = 3;
const PARTITIONABLE_OPERATOR_STATE_HANDLE: u8 = 4;
const INCREMENTAL_KEY_GROUPS_HANDLE: u8 = 5;
const RELATIVE_STREAM_STATE_HANDLE: u8 = 6;
const SAVEPOINT_KEY_GROUPS_HANDLE: u8 = 7;
const CHANGELOG_HANDLE: u8 = 8;
const CHANGELOG_BYTE_INCREMENT_HANDLE: u8 = 9;
const CHANGELOG_FILE_INCREMENT_HANDLE: u8 = 10;
const INCREMENTAL_KEY_GROUPS_HANDLE_V2: u8 = 11;
const KEY_GROUPS_HANDLE_V2: u8 = 12;
const CHANGELOG_FILE_INCREMENT_HANDLE_V2: u8 = 13;
const CHANGELOG_HANDLE_V2: u8 = 14;
const SEGMENT_FILE_HANDLE: u8 = 15;
const EMPTY_SEGMENT_FILE_HANDLE: u8 = 16;
const SEGMENT_PARTITIONABLE_OPERATOR_STATE_HANDLE: u8 = 17;

// Channel state handle types of ChannelStateHandleSerializerV2 (metadata V6+).
const INPUT_CHANNEL_STATE_HANDLE: u8 = 1;
const RESULT_SUBPARTITION_STATE_HANDLE: u8 = 2;
const MERGED_INPUT_CHANNEL_STATE_HANDLE: u8 = 3;
const MERGED_RESULT_SUBPARTITION_STATE_HANDLE: u8 = 4;

/// Bounds how deep changelog handles may nest, so a corrupt file cannot overflow the stack.
const MAX_NESTING: usize = 16;

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    file: &'a str,
    version: u32,
    location: Arc<str>,
    handles: Vec<StateHandle>,
    depth: usize,
}

type Parsed<T> = Result<T, MetadataError>;

impl<'a> Parser<'a> {
    fn new(data: &'a [u8], file: &'a str) -> Self {
        Self {
            data,
            pos: 0,
            file,
            version: 0,
            location: Arc::from(""),
            handles: Vec::new(),
            depth: 0,
        }
    }

    fn fail<T>(&self, at: usize, expected: impl Into<String>) -> Parsed<T> {
        Err(MetadataError {
            file: self.file.to_string(),
            offset: at,
            expected: expected.into(),
        })
    }

    fn take(&mut self, n: usize, what: &str) -> Parsed<&'a [u8]> {
        if self.data.len().saturating_sub(self.pos) < n {
            let have = self.data.len().saturating_sub(self.pos);
            return self.fail(
                self.pos,
                format!("{what} ({n} bytes), but the file ends after {have}"),
            );
        }
        let slice = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Parsed<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn i32(&mut self, what: &str) -> Parsed<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &str) -> Parsed<i64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A count that must be non-negative and plausible for the bytes left (each element
    /// takes at least `min_bytes`), so a corrupt count fails here instead of allocating.
    fn count(&mut self, what: &str, min_bytes: usize) -> Parsed<usize> {
        let at = self.pos;
        let n = self.i32(what)?;
        let left = self.data.len() - self.pos;
        if n < 0 || (n as usize).saturating_mul(min_bytes.max(1)) > left {
            return self.fail(
                at,
                format!(
                    "{what}: a count between 0 and {} (bytes left), found {n}",
                    left / min_bytes.max(1)
                ),
            );
        }
        Ok(n as usize)
    }

    /// A string and its byte range (positions fit `u32`: the input is at most
    /// [`MAX_METADATA_BYTES`] long, checked first).
    fn utf(&mut self, what: &str) -> Parsed<(String, (u32, u32))> {
        let start = self.pos;
        let len_bytes = self.take(2, what)?;
        let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
        let body = self.take(len, what)?;
        match decode_modified_utf8(body) {
            Some(s) => Ok((s, (start as u32, self.pos as u32))),
            None => self.fail(start, format!("{what} as modified UTF-8")),
        }
    }

    fn parse(mut self) -> Parsed<CheckpointMetadata> {
        if self.data.len() as u64 > MAX_METADATA_BYTES {
            return self.fail(
                0,
                format!(
                    "a file of at most {MAX_METADATA_BYTES} bytes, found {}",
                    self.data.len()
                ),
            );
        }
        let magic = self.i32("the header magic number")? as u32;
        if magic != HEADER_MAGIC {
            return self.fail(
                0,
                format!("magic number 0x{HEADER_MAGIC:08x}, found 0x{magic:08x}"),
            );
        }
        let version = self.i32("the format version")?;
        if !(SUPPORTED_VERSIONS.contains(&(version as u32))) || version < 0 {
            return self.fail(
                4,
                format!(
                    "a metadata format version in {}..={} (Flink 1.11 to 2.x), found {version}",
                    SUPPORTED_VERSIONS.start(),
                    SUPPORTED_VERSIONS.end()
                ),
            );
        }
        self.version = version as u32;
        let id_at = self.pos;
        let checkpoint_id = self.i64("the checkpoint id")?;
        if checkpoint_id < 0 {
            return self.fail(
                id_at,
                format!("a non-negative checkpoint id, found {checkpoint_id}"),
            );
        }
        let master_states = self.count("the number of master states", 12)?;
        for _ in 0..master_states {
            let at = self.pos;
            if self.i32("a master state magic number")? as u32 != MASTER_STATE_MAGIC {
                return self.fail(
                    at,
                    format!("master state magic number 0x{MASTER_STATE_MAGIC:08x}"),
                );
            }
            let len = self.count("the master state length", 1)?;
            self.take(len, "the master state bytes")?;
        }
        let operator_count = self.count("the number of operator states", 20)?;
        let mut operators = Vec::with_capacity(operator_count);
        for _ in 0..operator_count {
            operators.push(self.operator_state()?);
        }
        if self.version >= 4 {
            // CheckpointProperties, Java-serialised: opaque to us, kept byte for byte.
            let rest = &self.data[self.pos..];
            if !rest.starts_with(&JAVA_SERIALIZATION_MAGIC) {
                return self.fail(
                    self.pos,
                    "Java-serialised CheckpointProperties (0xaced0005) after the operator states",
                );
            }
        } else if self.pos != self.data.len() {
            return self.fail(self.pos, "the end of the file after the operator states");
        }
        Ok(CheckpointMetadata {
            version: self.version,
            checkpoint_id: checkpoint_id as u64,
            master_states,
            operators,
            handles: self.handles,
        })
    }

    fn operator_state(&mut self) -> Parsed<OperatorSummary> {
        let (name, uid) = if self.version >= 5 {
            let name = self.utf("the operator name")?.0;
            let uid = self.utf("the operator uid")?.0;
            (
                Some(name).filter(|s| !s.is_empty()),
                Some(uid).filter(|s| !s.is_empty()),
            )
        } else {
            (None, None)
        };
        let lower = self.i64("the operator id")?;
        let upper = self.i64("the operator id")?;
        let operator_id = format!("{:016x}{:016x}", upper as u64, lower as u64);
        let parallelism = self.i32("the operator parallelism")?;
        let max_parallelism = self.i32("the operator max parallelism")?;
        self.location = Arc::from(format!("operator {operator_id} coordinator state"));
        let at = self.pos;
        let coordinator = self.stream_handle()?;
        if !matches!(coordinator, None | Some(HandleKind::Inline)) {
            return self.fail(
                at,
                "an inline (byte stream) coordinator state handle or none",
            );
        }
        let at = self.pos;
        let subtasks = self.i32("the number of subtask states")?;
        let mut subtask_states = 0;
        if subtasks >= 0 {
            let left = self.data.len() - self.pos;
            if subtasks as usize > left / 4 {
                return self.fail(
                    at,
                    format!("a plausible number of subtask states, found {subtasks}"),
                );
            }
            for _ in 0..subtasks {
                let index = self.i32("a subtask index")?;
                if index < 0 {
                    // Finished subtask: index stored as -(i + 1), no state follows.
                    continue;
                }
                self.location = Arc::from(format!("operator {operator_id} subtask {index}"));
                self.subtask_state()?;
                subtask_states += 1;
            }
        }
        Ok(OperatorSummary {
            operator_id,
            name,
            uid,
            parallelism,
            max_parallelism,
            subtask_states,
        })
    }

    fn subtask_state(&mut self) -> Parsed<()> {
        let base = self.location.clone();
        for role in ["managed operator state", "raw operator state"] {
            if self.i32("an operator state presence flag")? != 0 {
                self.location = Arc::from(format!("{base} {role}"));
                self.operator_state_handle()?;
            }
        }
        for role in ["managed keyed state", "raw keyed state"] {
            self.location = Arc::from(format!("{base} {role}"));
            self.keyed_handle()?;
        }
        for role in ["input channel state", "result subpartition state"] {
            let n = self.count(&format!("the number of {role} handles"), 1)?;
            for i in 0..n {
                self.location = Arc::from(format!("{base} {role} [{i}]"));
                self.channel_handle()?;
            }
        }
        if self.version >= 7 {
            let at = self.pos;
            match self.u8("the regional checkpoint reference marker")? {
                0 => {}
                1 => {
                    self.i64("the regional checkpoint reference id")?;
                }
                other => return self.fail(at, format!("reference marker 0 or 1, found {other}")),
            }
        }
        self.location = base;
        Ok(())
    }

    fn channel_handle(&mut self) -> Parsed<()> {
        let merged = if self.version >= 6 {
            let at = self.pos;
            match self.u8("a channel state handle type")? {
                INPUT_CHANNEL_STATE_HANDLE | RESULT_SUBPARTITION_STATE_HANDLE => false,
                MERGED_INPUT_CHANNEL_STATE_HANDLE | MERGED_RESULT_SUBPARTITION_STATE_HANDLE => true,
                other => {
                    return self.fail(
                        at,
                        format!("channel state handle type 1..=4, found {other}"),
                    );
                }
            }
        } else {
            false
        };
        if merged {
            self.i32("the subtask index")?;
            self.i64("the state size")?;
            self.stream_handle()?;
            let n = self.count("the serialized channel offsets length", 1)?;
            self.take(n, "the serialized channel offsets")?;
        } else {
            self.i32("the subtask index")?;
            self.i32("the channel info")?;
            self.i32("the channel info")?;
            let n = self.count("the number of channel offsets", 8)?;
            self.take(n * 8, "the channel offsets")?;
            self.i64("the state size")?;
            self.stream_handle()?;
        }
        Ok(())
    }

    fn operator_state_handle(&mut self) -> Parsed<()> {
        let at = self.pos;
        let kind = self.u8("an operator state handle type")?;
        if kind == NULL_HANDLE {
            return Ok(());
        }
        if kind != PARTITIONABLE_OPERATOR_STATE_HANDLE
            && kind != SEGMENT_PARTITIONABLE_OPERATOR_STATE_HANDLE
        {
            return self.fail(
                at,
                format!("operator state handle type 0, 4 or 17, found {kind}"),
            );
        }
        let entries = self.count("the number of operator state names", 7)?;
        for _ in 0..entries {
            self.utf("an operator state name")?;
            self.u8("a distribution mode")?;
            let offsets = self.count("the number of partition offsets", 8)?;
            self.take(offsets * 8, "the partition offsets")?;
        }
        if kind == SEGMENT_PARTITIONABLE_OPERATOR_STATE_HANDLE {
            for what in ["the task-owned directory", "the shared directory"] {
                let (path, span) = self.utf(what)?;
                self.handles.push(StateHandle {
                    kind: HandleKind::Directory,
                    path,
                    size: 0,
                    location: Arc::from(format!("{} ({what})", self.location)),
                    span,
                });
            }
            self.u8("the empty-state flag")?;
        }
        self.stream_handle()?;
        Ok(())
    }

    fn key_group_offsets(&mut self) -> Parsed<()> {
        self.i32("the first key group")?;
        let n = self.count("the number of key groups", 8)?;
        self.take(n * 8, "the key group offsets")?;
        Ok(())
    }

    fn keyed_handle(&mut self) -> Parsed<()> {
        let at = self.pos;
        if self.depth >= MAX_NESTING {
            return self.fail(
                at,
                format!("keyed state handles nested at most {MAX_NESTING} deep"),
            );
        }
        let kind = self.u8("a keyed state handle type")?;
        self.depth += 1;
        let result = self.keyed_handle_body(kind, at);
        self.depth -= 1;
        result
    }

    fn keyed_handle_body(&mut self, kind: u8, at: usize) -> Parsed<()> {
        match kind {
            NULL_HANDLE => {}
            KEY_GROUPS_HANDLE | KEY_GROUPS_HANDLE_V2 | SAVEPOINT_KEY_GROUPS_HANDLE => {
                self.key_group_offsets()?;
                self.stream_handle()?;
                if kind == KEY_GROUPS_HANDLE_V2 {
                    self.utf("the state handle id")?;
                }
            }
            INCREMENTAL_KEY_GROUPS_HANDLE | INCREMENTAL_KEY_GROUPS_HANDLE_V2 => {
                let base = self.location.clone();
                self.i64("the incremental checkpoint id")?;
                self.utf("the backend identifier")?;
                self.i32("the first key group")?;
                self.i32("the number of key groups")?;
                if kind == INCREMENTAL_KEY_GROUPS_HANDLE_V2 {
                    self.i64("the checkpointed size")?;
                }
                self.location = Arc::from(format!("{base} (RocksDB meta data)"));
                self.stream_handle()?;
                for list in ["shared", "private"] {
                    let n = self.count(&format!("the number of {list} state files"), 3)?;
                    // One location for the whole list: the handle's own path names the file.
                    self.location = Arc::from(format!("{base} ({list} state files)"));
                    for _ in 0..n {
                        self.utf("a local file name")?;
                        self.stream_handle()?;
                    }
                }
                self.location = base;
                if kind == INCREMENTAL_KEY_GROUPS_HANDLE_V2 {
                    self.utf("the state handle id")?;
                }
            }
            CHANGELOG_HANDLE | CHANGELOG_HANDLE_V2 => {
                self.i32("the first key group")?;
                self.i32("the number of key groups")?;
                self.i64("the checkpointed size")?;
                for part in ["materialized", "non-materialized"] {
                    let n = self.count(&format!("the number of {part} handles"), 1)?;
                    for _ in 0..n {
                        self.keyed_handle()?;
                    }
                }
                self.i64("the materialization id")?;
                if kind == CHANGELOG_HANDLE_V2 {
                    self.i64("the checkpoint id")?;
                }
                self.utf("the state handle id")?;
            }
            CHANGELOG_BYTE_INCREMENT_HANDLE => {
                self.i32("the first key group")?;
                self.i32("the number of key groups")?;
                self.i64("the first sequence number")?;
                self.i64("the last sequence number")?;
                let n = self.count("the number of state changes", 8)?;
                for _ in 0..n {
                    self.i32("the key group of a change")?;
                    let len = self.count("the length of a change", 1)?;
                    self.take(len, "the bytes of a change")?;
                }
                self.utf("the state handle id")?;
            }
            CHANGELOG_FILE_INCREMENT_HANDLE | CHANGELOG_FILE_INCREMENT_HANDLE_V2 => {
                self.i32("the first key group")?;
                self.i32("the number of key groups")?;
                let n = self.count("the number of changelog file handles", 9)?;
                for _ in 0..n {
                    self.i64("a changelog offset")?;
                    self.stream_handle()?;
                }
                self.i64("the state size")?;
                self.i64("the checkpointed size")?;
                self.utf("the state handle id")?;
                if kind == CHANGELOG_FILE_INCREMENT_HANDLE_V2 {
                    self.utf("the storage identifier")?;
                }
            }
            other => {
                return self.fail(
                    at,
                    format!("a keyed state handle type (0, 3, 5, 7..=14), found {other}"),
                );
            }
        }
        Ok(())
    }

    /// Parses one stream state handle, recording it; returns its kind (`None` for null).
    fn stream_handle(&mut self) -> Parsed<Option<HandleKind>> {
        let at = self.pos;
        if self.depth >= MAX_NESTING {
            return self.fail(
                at,
                format!("stream state handles nested at most {MAX_NESTING} deep"),
            );
        }
        let kind = self.u8("a stream state handle type")?;
        let location = self.location.clone();
        let handle = match kind {
            NULL_HANDLE => return Ok(None),
            FILE_STREAM_STATE_HANDLE => {
                let size = self.i64("the file state size")?;
                let (path, span) = self.utf("the file path")?;
                StateHandle {
                    kind: HandleKind::File,
                    path,
                    size: size.max(0) as u64,
                    location,
                    span,
                }
            }
            BYTE_STREAM_STATE_HANDLE => {
                let (path, span) = self.utf("the inline handle name")?;
                let len = self.count("the inline state length", 1)?;
                self.take(len, "the inline state bytes")?;
                StateHandle {
                    kind: HandleKind::Inline,
                    path,
                    size: len as u64,
                    location,
                    span,
                }
            }
            RELATIVE_STREAM_STATE_HANDLE => {
                let (path, span) = self.utf("the relative file path")?;
                let size = self.i64("the file state size")?;
                StateHandle {
                    kind: HandleKind::Relative,
                    path,
                    size: size.max(0) as u64,
                    location,
                    span,
                }
            }
            KEY_GROUPS_HANDLE => {
                self.key_group_offsets()?;
                self.depth += 1;
                let inner = self.stream_handle();
                self.depth -= 1;
                inner?;
                return Ok(Some(HandleKind::File));
            }
            SEGMENT_FILE_HANDLE => {
                self.i64("the segment start position")?;
                let size = self.i64("the segment size")?;
                self.i32("the segment scope")?;
                let (path, span) = self.utf("the segment file path")?;
                self.utf("the logical file id")?;
                StateHandle {
                    kind: HandleKind::Segment,
                    path,
                    size: size.max(0) as u64,
                    location,
                    span,
                }
            }
            EMPTY_SEGMENT_FILE_HANDLE => return Ok(None),
            other => {
                return self.fail(
                    at,
                    format!("a stream state handle type (0, 1, 2, 3, 6, 15, 16), found {other}"),
                );
            }
        };
        let kind = handle.kind;
        self.handles.push(handle);
        Ok(Some(kind))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes metadata the way Flink's DataOutputStream does, for building test inputs.
    #[derive(Default)]
    pub struct Writer(pub Vec<u8>);

    impl Writer {
        pub fn i32(&mut self, v: i32) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub fn i64(&mut self, v: i64) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub fn u8(&mut self, v: u8) -> &mut Self {
            self.0.push(v);
            self
        }
        pub fn utf(&mut self, s: &str) -> &mut Self {
            let encoded = encode_modified_utf8(s).unwrap();
            self.0.extend_from_slice(&encoded);
            self
        }
        pub fn file(&mut self, path: &str, size: i64) -> &mut Self {
            self.u8(FILE_STREAM_STATE_HANDLE).i64(size).utf(path)
        }
        pub fn relative(&mut self, path: &str, size: i64) -> &mut Self {
            self.u8(RELATIVE_STREAM_STATE_HANDLE).utf(path).i64(size)
        }
        pub fn inline(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.u8(BYTE_STREAM_STATE_HANDLE)
                .utf(name)
                .i32(data.len() as i32);
            self.0.extend_from_slice(data);
            self
        }
    }

    /// A V6 checkpoint with one operator, one subtask: inline operator state and an
    /// incremental RocksDB handle with `shared` files (absolute) and a private file.
    pub fn synthetic_v6(checkpoint_id: i64, shared: &[&str], private_file: &str) -> Vec<u8> {
        let shared: Vec<Ref> = shared.iter().map(|p| Ref::File(p, 1000)).collect();
        synthetic_v6_refs(checkpoint_id, &shared, private_file)
    }

    /// A shared file of an incremental handle, by absolute URI or relative to `chk-N/`.
    pub enum Ref<'a> {
        File(&'a str, i64),
        Relative(&'a str, i64),
    }

    /// As [`synthetic_v6`], with each shared file as `shared` says.
    pub fn synthetic_v6_refs(checkpoint_id: i64, shared: &[Ref], private_file: &str) -> Vec<u8> {
        let mut w = Writer::default();
        w.i32(HEADER_MAGIC as i32)
            .i32(6)
            .i64(checkpoint_id)
            .i32(0)
            .i32(1);
        w.utf("counter").utf("").i64(7).i64(9).i32(1).i32(128);
        w.u8(NULL_HANDLE); // coordinator
        w.i32(1).i32(0); // one subtask, index 0
        w.i32(1)
            .u8(PARTITIONABLE_OPERATOR_STATE_HANDLE)
            .i32(1)
            .utf("splits")
            .u8(0)
            .i32(1)
            .i64(0);
        w.inline("file:/looks/like/a/path/but/is/inline", b"opstate");
        w.i32(0); // no raw operator state
        w.u8(INCREMENTAL_KEY_GROUPS_HANDLE_V2)
            .i64(checkpoint_id)
            .utf("backend-uuid")
            .i32(0)
            .i32(128)
            .i64(99);
        w.inline("meta", b"rocksdb-meta");
        w.i32(shared.len() as i32);
        for (i, reference) in shared.iter().enumerate() {
            w.utf(&format!("{i:06}.sst"));
            match reference {
                Ref::File(path, size) => w.file(path, *size),
                Ref::Relative(path, size) => w.relative(path, *size),
            };
        }
        w.i32(1).utf("MANIFEST-000001").file(private_file, 10);
        w.utf("handle-id");
        w.u8(NULL_HANDLE); // raw keyed
        w.i32(0).i32(0); // channel state
        w.0.extend_from_slice(&JAVA_SERIALIZATION_MAGIC);
        w.0.extend_from_slice(b"properties");
        w.0
    }

    #[test]
    fn a_synthetic_v6_checkpoint_lists_its_files_and_not_its_inline_handles() {
        let bytes = synthetic_v6(
            5,
            &["file:/src/job/shared/a", "file:/src/job/shared/b"],
            "file:/src/job/chk-5/p",
        );
        let meta = CheckpointMetadata::parse(&bytes, "mem").unwrap();
        assert_eq!((meta.version, meta.checkpoint_id), (6, 5));
        assert_eq!(meta.operators[0].name.as_deref(), Some("counter"));
        let dir = StorageUrl::parse("file:///src/job/chk-5").unwrap();
        let files: Vec<String> = meta
            .referenced_files(&dir)
            .unwrap()
            .iter()
            .map(|r| r.url.path().to_string())
            .collect();
        assert_eq!(
            files,
            ["/src/job/shared/a", "/src/job/shared/b", "/src/job/chk-5/p"]
        );
        assert_eq!(meta.inline_handles().count(), 2);
    }

    #[test]
    fn rewriting_uris_changes_only_the_paths_and_reparses() {
        let bytes = synthetic_v6(5, &["file:/src/job/shared/a"], "file:/src/job/chk-5/p");
        let meta = CheckpointMetadata::parse(&bytes, "mem").unwrap();
        let out = meta
            .rewrite_uris(&bytes, |p| {
                Some(p.replace("/src/", "/a-much-longer-peer-root/"))
            })
            .unwrap();
        let again = CheckpointMetadata::parse(&out, "rewritten").unwrap();
        let paths: Vec<&str> = again.file_handles().map(|h| h.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "file:/a-much-longer-peer-root/job/shared/a",
                "file:/a-much-longer-peer-root/job/chk-5/p"
            ]
        );
        assert!(out.ends_with(b"properties"));
        // Inline handle names are not URIs to rewrite, even when they look like one.
        assert!(
            again
                .inline_handles()
                .any(|h| h.path == "file:/looks/like/a/path/but/is/inline")
        );
    }

    #[test]
    fn a_relative_handle_rewritten_as_absolute_reparses_as_a_file_handle_of_the_same_size() {
        let bytes = synthetic_v6_refs(
            8,
            &[
                Ref::Relative("from-the-savepoint", 1234),
                Ref::File("file:/src/job/shared/b", 77),
                Ref::Relative("also-from-the-savepoint", 5),
            ],
            "file:/src/job/chk-8/p",
        );
        let meta = CheckpointMetadata::parse(&bytes, "mem").unwrap();
        let out = meta
            .rewrite_handles(&bytes, |h| match (h.kind, h.path.as_str()) {
                (HandleKind::Relative, "from-the-savepoint") => {
                    Rewrite::Absolute("file:/peer/savepoints/sp-1/from-the-savepoint".into())
                }
                (HandleKind::File, path) => Rewrite::Uri(path.replace("/src/", "/peer/")),
                _ => Rewrite::Keep,
            })
            .unwrap();
        let again = CheckpointMetadata::parse(&out, "rewritten").unwrap();
        let handles: Vec<(HandleKind, &str, u64)> = again
            .file_handles()
            .map(|h| (h.kind, h.path.as_str(), h.size))
            .collect();
        assert_eq!(
            handles,
            [
                (
                    HandleKind::File,
                    "file:/peer/savepoints/sp-1/from-the-savepoint",
                    1234
                ),
                (HandleKind::File, "file:/peer/job/shared/b", 77),
                (HandleKind::Relative, "also-from-the-savepoint", 5),
                (HandleKind::File, "file:/peer/job/chk-8/p", 10),
            ]
        );
        assert!(out.ends_with(b"properties"));
        // Nothing but the handles changed: the same structure, operator by operator.
        assert_eq!(again.operators, meta.operators);
        assert_eq!(
            again.inline_handles().count(),
            meta.inline_handles().count()
        );
        // Keeping every handle gives back Flink's bytes.
        assert_eq!(
            meta.rewrite_handles(&bytes, |_| Rewrite::Keep).unwrap(),
            bytes
        );
    }

    #[test]
    fn a_rewrite_that_does_not_fit_the_handle_is_refused() {
        let bytes = synthetic_v6_refs(
            8,
            &[
                Ref::Relative("r", 1),
                Ref::File("file:/src/job/shared/f", 2),
            ],
            "file:/src/job/chk-8/p",
        );
        let meta = CheckpointMetadata::parse(&bytes, "mem").unwrap();
        for (kind, rewrite) in [
            (
                HandleKind::Relative,
                Rewrite::Uri("file:/elsewhere/r".into()),
            ),
            (
                HandleKind::File,
                Rewrite::Absolute("file:/elsewhere/f".into()),
            ),
            (HandleKind::Inline, Rewrite::Uri("file:/elsewhere/i".into())),
        ] {
            let err = meta
                .rewrite_handles(&bytes, |h| {
                    if h.kind == kind {
                        rewrite.clone()
                    } else {
                        Rewrite::Keep
                    }
                })
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{kind:?} handle")), "{err}");
        }
    }

    #[test]
    fn a_wrong_magic_number_is_reported_with_what_was_expected() {
        let mut bytes = synthetic_v6(1, &[], "file:/x/chk-1/p");
        bytes[0] = 0;
        let err = CheckpointMetadata::parse(&bytes, "job/chk-1/_metadata")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("job/chk-1/_metadata") && err.contains("0x4960672d"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_version_is_refused_not_guessed() {
        let mut bytes = synthetic_v6(1, &[], "file:/x/chk-1/p");
        bytes[7] = 42;
        let err = CheckpointMetadata::parse(&bytes, "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("version") && err.contains("42"), "{err}");
    }

    #[test]
    fn every_truncation_of_a_valid_file_fails_cleanly() {
        let bytes = synthetic_v6(3, &["file:/s/j/shared/a"], "file:/s/j/chk-3/p");
        for cut in 0..bytes.len() - b"properties".len() - 4 {
            assert!(
                CheckpointMetadata::parse(&bytes[..cut], "m").is_err(),
                "cut at {cut} parsed"
            );
        }
    }

    #[test]
    fn modified_utf8_round_trips_nul_and_supplementary_characters() {
        for s in ["plain", "nul\0inside", "ünïcödé", "emoji 😀 path"] {
            let enc = encode_modified_utf8(s).unwrap();
            assert_eq!(decode_modified_utf8(&enc[2..]).as_deref(), Some(s));
        }
        // Java encodes NUL as two bytes, never as a raw zero.
        assert_eq!(&encode_modified_utf8("\0").unwrap()[2..], &[0xc0, 0x80]);
    }
}
