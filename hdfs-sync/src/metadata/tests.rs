//! Tests of the parser and the rewrite, and the builders of synthetic `_metadata` that other
//! tests of the crate use (`synthetic_v6`): bytes written as Flink's `DataOutputStream` does.

use super::modified_utf8::decode_modified_utf8;
use super::parse::{
    BYTE_STREAM_STATE_HANDLE, FILE_STREAM_STATE_HANDLE, INCREMENTAL_KEY_GROUPS_HANDLE_V2,
    NULL_HANDLE, PARTITIONABLE_OPERATOR_STATE_HANDLE, RELATIVE_STREAM_STATE_HANDLE,
};
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
