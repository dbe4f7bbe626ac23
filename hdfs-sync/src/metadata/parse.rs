//! The structures of the `_metadata` format, V3 to V7: header, master and operator states,
//! subtasks, channel state and every kind of state handle, as Flink's serializer writes them.

use std::sync::Arc;

use super::reader::{Parsed, Parser};
use super::{
    CheckpointMetadata, HEADER_MAGIC, HandleKind, JAVA_SERIALIZATION_MAGIC, MASTER_STATE_MAGIC,
    MAX_METADATA_BYTES, OperatorSummary, SUPPORTED_VERSIONS, StateHandle,
};

// Handle type bytes, as in Flink's MetadataV2V3SerializerBase.
pub(super) const NULL_HANDLE: u8 = 0;
pub(super) const BYTE_STREAM_STATE_HANDLE: u8 = 1;
pub(super) const FILE_STREAM_STATE_HANDLE: u8 = 2;
pub(super) const KEY_GROUPS_HANDLE: u8 = 3;
pub(super) const PARTITIONABLE_OPERATOR_STATE_HANDLE: u8 = 4;
pub(super) const INCREMENTAL_KEY_GROUPS_HANDLE: u8 = 5;
pub(super) const RELATIVE_STREAM_STATE_HANDLE: u8 = 6;
pub(super) const SAVEPOINT_KEY_GROUPS_HANDLE: u8 = 7;
pub(super) const CHANGELOG_HANDLE: u8 = 8;
pub(super) const CHANGELOG_BYTE_INCREMENT_HANDLE: u8 = 9;
pub(super) const CHANGELOG_FILE_INCREMENT_HANDLE: u8 = 10;
pub(super) const INCREMENTAL_KEY_GROUPS_HANDLE_V2: u8 = 11;
pub(super) const KEY_GROUPS_HANDLE_V2: u8 = 12;
pub(super) const CHANGELOG_FILE_INCREMENT_HANDLE_V2: u8 = 13;
pub(super) const CHANGELOG_HANDLE_V2: u8 = 14;
pub(super) const SEGMENT_FILE_HANDLE: u8 = 15;
pub(super) const EMPTY_SEGMENT_FILE_HANDLE: u8 = 16;
pub(super) const SEGMENT_PARTITIONABLE_OPERATOR_STATE_HANDLE: u8 = 17;

// Channel state handle types of ChannelStateHandleSerializerV2 (metadata V6+).
pub(super) const INPUT_CHANNEL_STATE_HANDLE: u8 = 1;
pub(super) const RESULT_SUBPARTITION_STATE_HANDLE: u8 = 2;
pub(super) const MERGED_INPUT_CHANNEL_STATE_HANDLE: u8 = 3;
pub(super) const MERGED_RESULT_SUBPARTITION_STATE_HANDLE: u8 = 4;

/// Bounds how deep changelog handles may nest, so a corrupt file cannot overflow the stack.
pub(super) const MAX_NESTING: usize = 16;

impl Parser<'_> {
    pub(super) fn parse(mut self) -> Parsed<CheckpointMetadata> {
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
