//! Fuzzing the `_metadata` parser (formats V3–V7), the one parser in the sync that reads bytes
//! written by someone else: proptest-driven mutation of real Flink `_metadata` files (the
//! fixtures of `tests/fixtures/flink-2.3-incremental`) and of synthetic ones covering every
//! handle type of every version, plus a checked-in corpus of hostile files
//! (`tests/fixtures/metadata-corpus`, see its README).
//!
//! Whatever the bytes, the parser returns `Ok` or an error naming an offset inside the file;
//! it never panics, never hangs (each parse runs under a watchdog) and never allocates more
//! than the input justifies (declared counts and lengths are checked against the bytes left
//! before anything is allocated: a corpus file declaring 2^31 elements fails at once). A file
//! that parses also goes through `referenced_files` and `rewrite_uris`, whose output must
//! parse again into the same handles.
//!
//! Bounded for CI: `METADATA_FUZZ_CASES` cases (default 10 000: ~3 s in a debug build here).
//! More locally: `METADATA_FUZZ_CASES=200000 cargo test -p twinsite-hdfs-sync --release
//! --test metadata_fuzz`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use hdfs_sync::metadata::{HandleKind, MAX_METADATA_BYTES, Rewrite, encode_modified_utf8};
use hdfs_sync::{CheckpointMetadata, StorageUrl};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// A parse that takes longer than this is a hang (the largest seed parses in microseconds).
const WATCHDOG: Duration = Duration::from_secs(10);

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The real Flink 2.3 `_metadata` files.
fn real_metadata() -> Vec<Vec<u8>> {
    let job = fixture_dir().join("flink-2.3-incremental/ckpt/39d63276fa4f046a731a44ba7f26dcb8");
    let mut files: Vec<Vec<u8>> = ["chk-24", "chk-25", "chk-26"]
        .iter()
        .map(|chk| std::fs::read(job.join(chk).join("_metadata")).unwrap())
        .collect();
    files.sort();
    files
}

// ------------------------------------------------------------------------ synthetic seeds

/// Writes metadata the way Flink's `DataOutputStream` does.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
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
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn utf(&mut self, s: &str) -> &mut Self {
        let e = encode_modified_utf8(s).unwrap();
        self.bytes(&e)
    }
    fn file(&mut self, path: &str, size: i64) -> &mut Self {
        self.u8(2).i64(size).utf(path)
    }
    fn inline(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.u8(1).utf(name).i32(data.len() as i32).bytes(data)
    }
    fn relative(&mut self, path: &str, size: i64) -> &mut Self {
        self.u8(6).utf(path).i64(size)
    }
    fn segment(&mut self, path: &str) -> &mut Self {
        self.u8(15).i64(0).i64(10).i32(1).utf(path).utf("logical-1")
    }
    fn key_groups(&mut self, n: i32) -> &mut Self {
        self.i32(0).i32(n);
        for i in 0..n {
            self.i64(i64::from(i) * 8);
        }
        self
    }
}

/// Every keyed handle type, the changelog ones nesting the others.
fn keyed_handles(w: &mut W, root: &str) {
    // Incremental RocksDB V2 (11) with shared, private and meta handles.
    w.u8(11).i64(5).utf("backend").i32(0).i32(128).i64(100);
    w.inline("meta", b"rocksdb meta");
    w.i32(2)
        .utf("000001.sst")
        .file(&format!("{root}/job/shared/a"), 100)
        .utf("000002.sst")
        .segment(&format!("{root}/job/shared/merged"));
    w.i32(1).utf("MANIFEST").relative("private-1", 10);
    w.utf("handle-1");
}

fn changelog(w: &mut W, root: &str) {
    // Changelog V2 (14): one materialized incremental handle (5, V1), one key-groups V2 (12),
    // and non-materialized byte (9) and file (13) increments.
    w.u8(14).i32(0).i32(128).i64(77);
    w.i32(2);
    w.u8(5).i64(4).utf("backend").i32(0).i32(128);
    w.file(&format!("{root}/job/shared/meta"), 5);
    w.i32(0).i32(0);
    w.u8(12)
        .key_groups(2)
        .file(&format!("{root}/job/chk-5/kg"), 16)
        .utf("kg-id");
    w.i32(2);
    w.u8(9)
        .i32(0)
        .i32(128)
        .i64(1)
        .i64(2)
        .i32(1)
        .i32(3)
        .i32(3)
        .bytes(b"abc");
    w.utf("bytes-id");
    w.u8(13).i32(0).i32(128).i32(1).i64(0);
    w.file(&format!("{root}/changelog/f"), 20);
    w.i64(20).i64(20).utf("file-inc-id").utf("dstl");
    w.i64(3).i64(5).utf("changelog-id");
}

/// A checkpoint of format `version` using every handle type that version can hold.
fn kitchen_sink(version: i32, root: &str) -> Vec<u8> {
    let mut w = W::default();
    w.i32(0x4960_672d).i32(version).i64(5);
    // One master state.
    w.i32(1)
        .i32(0xc96b_1696_u32 as i32)
        .i32(10)
        .bytes(b"masterdata");
    w.i32(2);
    for op in 0..2 {
        if version >= 5 {
            w.utf(&format!("op-{op}"))
                .utf(if op == 0 { "uid-0" } else { "" });
        }
        w.i64(op).i64(op + 100).i32(2).i32(128);
        // Coordinator state: inline, or none.
        if op == 0 {
            w.inline("coordinator", b"coord");
        } else {
            w.u8(0);
        }
        // Three subtasks: one with state, one finished (index -(i + 1)), one with state.
        w.i32(3);
        for subtask in [0, -2, 2] {
            w.i32(subtask);
            if subtask < 0 {
                continue;
            }
            // Managed operator state: partitionable (4), or file-merging segment (17).
            w.i32(1);
            if op == 0 {
                w.u8(4).i32(1).utf("offsets").u8(0).i32(2).i64(0).i64(8);
                w.file(&format!("{root}/job/chk-5/op"), 16);
            } else {
                w.u8(17).i32(1).utf("splits").u8(1).i32(0);
                w.utf(&format!("{root}/job/taskowned"))
                    .utf(&format!("{root}/job/shared"));
                w.u8(0);
                w.segment(&format!("{root}/job/shared/seg"));
            }
            // No raw operator state.
            w.i32(0);
            // Managed keyed state, then raw keyed state.
            if subtask == 0 {
                keyed_handles(&mut w, root);
                w.u8(3).key_groups(1).relative("raw-1", 8);
            } else {
                changelog(&mut w, root);
                w.u8(7).key_groups(0).u8(3).key_groups(1).u8(16);
            }
            // Channel state: inputs, then result subpartitions.
            if version >= 6 {
                w.i32(2);
                w.u8(1).i32(0).i32(1).i32(2).i32(1).i64(0).i64(4);
                w.file(&format!("{root}/job/chk-5/in"), 4);
                w.u8(3)
                    .i32(0)
                    .i64(4)
                    .inline("merged", b"data")
                    .i32(2)
                    .bytes(b"xy");
                w.i32(1);
                w.u8(4).i32(0).i64(4).relative("out", 4).i32(0);
            } else {
                w.i32(1);
                w.i32(0).i32(1).i32(2).i32(0).i64(4);
                w.file(&format!("{root}/job/chk-5/in"), 4);
                w.i32(0);
            }
            if version >= 7 {
                if subtask == 0 {
                    w.u8(1).i64(4);
                } else {
                    w.u8(0);
                }
            }
        }
    }
    if version >= 4 {
        w.bytes(&[0xac, 0xed, 0x00, 0x05, 0x73, 0x72]);
    }
    w.0
}

/// Every seed the mutations start from; each must parse as it is.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = real_metadata();
    for version in 3..=7 {
        seeds.push(kitchen_sink(version, "file:/src"));
    }
    seeds.push(kitchen_sink(6, "hdfs://ns-a/flink/ckpt"));
    seeds
}

// ------------------------------------------------------------------------ the checks

/// Everything the sync does with a `_metadata` it read: parse, list files, rewrite, re-parse.
fn exercise(bytes: &[u8]) -> Result<(), String> {
    let Ok(meta) = CheckpointMetadata::parse(bytes, "fuzzed") else {
        return Ok(());
    };
    let chk = StorageUrl::parse("file:///src/job/chk-5").unwrap();
    let _ = meta.referenced_files(&chk);
    // Keeping every URI must give back the very same bytes.
    let same = meta
        .rewrite_uris(bytes, |_| None)
        .map_err(|e| format!("identity rewrite failed: {e}"))?;
    if same != bytes {
        return Err("an identity rewrite changed the bytes".into());
    }
    // Moving every URI under another root must parse again into handles of the same kinds.
    if let Ok(moved) = meta.rewrite_uris(bytes, |uri| Some(format!("hdfs://peer/root{uri}"))) {
        let again = CheckpointMetadata::parse(&moved, "rewritten")
            .map_err(|e| format!("a rewritten file does not parse: {e}"))?;
        let kinds = |m: &CheckpointMetadata| m.handles.iter().map(|h| h.kind).collect::<Vec<_>>();
        if kinds(&again) != kinds(&meta) {
            return Err("a rewrite changed the handles".into());
        }
        let moved_ok = again
            .handles
            .iter()
            .filter(|h| {
                matches!(
                    h.kind,
                    HandleKind::File | HandleKind::Segment | HandleKind::Directory
                )
            })
            .all(|h| h.path.starts_with("hdfs://peer/root"));
        if !moved_ok {
            return Err("a rewritten URI is not under the new root".into());
        }
    }
    // Naming every relative file by absolute URI (a savepoint's files at the peer) must parse
    // again into the same handles, the relative ones now files of the same size.
    if let Ok(absolute) = meta.rewrite_handles(bytes, |h| match h.kind {
        HandleKind::Relative => Rewrite::Absolute(format!("hdfs://peer/savepoint/{}", h.path)),
        _ => Rewrite::Keep,
    }) {
        let again =
            CheckpointMetadata::parse(&absolute, "relative made absolute").map_err(|e| {
                format!("a file with relative handles made absolute does not parse: {e}")
            })?;
        let expected: Vec<(HandleKind, u64)> = meta
            .handles
            .iter()
            .map(|h| match h.kind {
                HandleKind::Relative => (HandleKind::File, h.size),
                kind => (kind, h.size),
            })
            .collect();
        let found: Vec<(HandleKind, u64)> =
            again.handles.iter().map(|h| (h.kind, h.size)).collect();
        if found != expected {
            return Err(format!(
                "making relative handles absolute changed the handles: {expected:?} became {found:?}"
            ));
        }
    }
    Ok(())
}

/// Runs [`exercise`] on its own thread: a panic is reported, a hang is caught by the watchdog.
fn exercise_guarded(bytes: Vec<u8>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(exercise(&bytes));
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(result) => {
            let _ = worker.join();
            result
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no answer within {WATCHDOG:?}")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(match worker.join() {
            Err(panic) => format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ),
            Ok(()) => "the worker vanished".into(),
        }),
    }
}

#[test]
fn every_seed_parses_and_lists_its_files() {
    for (i, seed) in seeds().iter().enumerate() {
        let meta = CheckpointMetadata::parse(seed, &format!("seed {i}"))
            .unwrap_or_else(|e| panic!("seed {i} does not parse: {e}"));
        assert!(meta.file_handles().count() > 0, "seed {i} has no files");
        exercise(seed).unwrap_or_else(|e| panic!("seed {i}: {e}"));
    }
    // The synthetic seeds cover every handle kind, so mutations reach every branch.
    let kinds: std::collections::BTreeSet<String> = seeds()
        .iter()
        .flat_map(|s| CheckpointMetadata::parse(s, "seed").unwrap().handles)
        .map(|h| format!("{:?}", h.kind))
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["Directory", "File", "Inline", "Relative", "Segment"]
    );
}

// ------------------------------------------------------------------------ mutations

#[derive(Debug, Clone)]
enum Mutation {
    SetByte(prop::sample::Index, u8),
    FlipBit(prop::sample::Index, u8),
    /// An i32 (a count, a length, a version) replaced by an awkward value.
    SetI32(prop::sample::Index, i32),
    /// A string's u16 length replaced.
    SetU16(prop::sample::Index, u16),
    Truncate(prop::sample::Index),
    Delete(prop::sample::Index, usize),
    Insert(prop::sample::Index, Vec<u8>),
    /// A slice copied elsewhere: nests handles into handles, repeats records.
    Splice {
        from: prop::sample::Index,
        len: usize,
        to: prop::sample::Index,
    },
}

fn awkward_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(1),
        Just(i32::MAX),
        Just(i32::MIN),
        Just(0x7fff),
        Just(0xffff),
        Just(0x1_0000),
        Just(0x0100_0000),
        0..64i32,
        any::<i32>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        3 => (index(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        2 => (index(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        3 => (index(), awkward_i32()).prop_map(|(i, v)| Mutation::SetI32(i, v)),
        2 => (index(), prop_oneof![Just(0u16), Just(0xffff), Just(0x8000), any::<u16>()])
            .prop_map(|(i, v)| Mutation::SetU16(i, v)),
        1 => index().prop_map(Mutation::Truncate),
        1 => (index(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (index(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (index(), 1..256usize, index())
            .prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::SetByte(i, v) => bytes[i.index(n)] = *v,
        Mutation::FlipBit(i, b) => bytes[i.index(n)] ^= 1 << b,
        Mutation::SetI32(i, v) => {
            let at = i.index(n.saturating_sub(3).max(1));
            let end = (at + 4).min(n);
            bytes[at..end].copy_from_slice(&v.to_be_bytes()[..end - at]);
        }
        Mutation::SetU16(i, v) => {
            let at = i.index(n.saturating_sub(1).max(1));
            let end = (at + 2).min(n);
            bytes[at..end].copy_from_slice(&v.to_be_bytes()[..end - at]);
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(n)),
        Mutation::Delete(i, len) => {
            let at = i.index(n);
            bytes.drain(at..(at + len).min(n));
        }
        Mutation::Insert(i, b) => {
            let at = i.index(n + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Splice { from, len, to } => {
            let start = from.index(n);
            let slice = bytes[start..(start + len).min(n)].to_vec();
            let at = to.index(n + 1);
            bytes.splice(at..at, slice);
        }
    }
}

fn cases() -> u32 {
    std::env::var("METADATA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn mutated_real_and_synthetic_metadata_never_panics_hangs_or_breaks_the_rewrite() {
    let seeds = seeds();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        // A failing case's seed is kept here and replayed first by every later run.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/metadata_fuzz.proptest-regressions"
            )),
        )),
        ..Config::default()
    });
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..6));
    runner
        .run(&strategy, |(seed, mutations)| {
            let mut bytes = seeds[seed].clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            exercise_guarded(bytes).map_err(TestCaseError::fail)
        })
        .unwrap();
}

// ------------------------------------------------------------------------ the corpus

/// Each `<name>.bin` in the corpus with its `<name>.expect`: `ok`, or a piece of the error it
/// must fail with (the field the parser names).
fn corpus() -> Vec<(String, Vec<u8>, String)> {
    let dir = fixture_dir().join("metadata-corpus");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let expect = std::fs::read_to_string(path.with_extension("expect"))
                .unwrap_or_else(|_| panic!("{name}.bin has no {name}.expect"));
            out.push((
                name,
                std::fs::read(&path).unwrap(),
                expect.trim().to_string(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_hostile_corpus_file_is_refused_naming_what_was_expected_without_panic_or_hang() {
    let corpus = corpus();
    assert!(corpus.len() >= 15, "the corpus shrank to {}", corpus.len());
    for (name, bytes, expect) in corpus {
        exercise_guarded(bytes.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        match (CheckpointMetadata::parse(&bytes, &name), expect.as_str()) {
            (Ok(_), "ok") => {}
            (Ok(_), _) => panic!("{name} parsed; expected an error with `{expect}`"),
            (Err(e), "ok") => panic!("{name} should parse: {e}"),
            (Err(e), _) => {
                assert!(
                    e.offset <= bytes.len(),
                    "{name}: offset {} beyond the file",
                    e.offset
                );
                assert!(
                    e.to_string().contains(&expect),
                    "{name}: `{e}` does not mention `{expect}`"
                );
            }
        }
    }
}

#[test]
fn a_file_over_the_size_bound_is_refused_before_its_first_byte_is_looked_at() {
    let mut bytes = kitchen_sink(6, "file:/src");
    bytes.resize(MAX_METADATA_BYTES as usize + 1, 0);
    let err = CheckpointMetadata::parse(&bytes, "huge").unwrap_err();
    assert_eq!(err.offset, 0);
    assert!(
        err.to_string().contains(&MAX_METADATA_BYTES.to_string()),
        "{err}"
    );
}

/// Regenerates the corpus: `cargo test -p twinsite-hdfs-sync --test metadata_fuzz --
/// --ignored write_the_corpus`. Kept in the repository so the files are reviewable and
/// their origin is code, not guesswork.
#[test]
#[ignore]
fn write_the_corpus() {
    let dir = fixture_dir().join("metadata-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes, expect) in hostile_cases() {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
        std::fs::write(dir.join(format!("{name}.expect")), format!("{expect}\n")).unwrap();
    }
}

#[test]
fn the_checked_in_corpus_is_what_the_generator_writes() {
    let generated: Vec<(String, Vec<u8>, String)> = hostile_cases()
        .into_iter()
        .map(|(n, b, e)| (n.to_string(), b, e.to_string()))
        .collect();
    let on_disk = corpus();
    let names = |v: &[(String, Vec<u8>, String)]| v.iter().map(|c| c.0.clone()).collect::<Vec<_>>();
    let mut generated_sorted = generated.clone();
    generated_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names(&on_disk),
        names(&generated_sorted),
        "run write_the_corpus"
    );
    assert_eq!(on_disk, generated_sorted, "run write_the_corpus");
}

/// The header of a V6 file up to (not including) the operator count.
fn header(version: i32) -> W {
    let mut w = W::default();
    w.i32(0x4960_672d).i32(version).i64(1).i32(0);
    w
}

/// One V6 operator with one subtask, up to its managed keyed state.
fn one_subtask() -> W {
    let mut w = header(6);
    w.i32(1).utf("op").utf("").i64(1).i64(2).i32(1).i32(1).u8(0);
    w.i32(1).i32(0).i32(0).i32(0);
    w
}

fn hostile_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let real = real_metadata().remove(0);
    let mut cases: Vec<(&'static str, Vec<u8>, &'static str)> = vec![
        ("empty", Vec::new(), "the header magic number"),
        (
            "wrong-magic",
            W::default().i32(0x1234_5678).i32(6).0.clone(),
            "magic number",
        ),
        ("version-negative", header(-1).0, "format version"),
        ("version-8", header(8).0, "format version"),
        (
            "checkpoint-id-negative",
            W::default().i32(0x4960_672d).i32(6).i64(-5).0.clone(),
            "non-negative checkpoint id",
        ),
        (
            "master-states-2e31",
            W::default()
                .i32(0x4960_672d)
                .i32(6)
                .i64(1)
                .i32(i32::MAX)
                .0
                .clone(),
            "the number of master states",
        ),
    ];
    let mut w = W::default();
    w.i32(0x4960_672d)
        .i32(6)
        .i64(1)
        .i32(1)
        .i32(0xc96b_1696_u32 as i32)
        .i32(i32::MAX);
    w.bytes(&[0; 8]);
    cases.push(("master-state-length-2e31", w.0, "the master state length"));
    let mut w = header(6);
    w.i32(i32::MAX);
    cases.push(("operators-2e31", w.0, "the number of operator states"));
    let mut w = header(6);
    w.i32(1)
        .utf("op")
        .utf("")
        .i64(1)
        .i64(2)
        .i32(1)
        .i32(1)
        .u8(0)
        .i32(i32::MAX);
    cases.push(("subtasks-2e31", w.0, "a plausible number of subtask states"));
    let mut w = one_subtask();
    w.u8(3).i32(0).i32(i32::MAX);
    cases.push(("key-groups-2e31", w.0, "the number of key groups"));
    let mut w = one_subtask();
    w.u8(11)
        .i64(1)
        .utf("b")
        .i32(0)
        .i32(1)
        .i64(0)
        .u8(0)
        .i32(i32::MAX);
    cases.push(("shared-files-2e31", w.0, "the number of shared state files"));
    let mut w = one_subtask();
    w.u8(3).i32(0).i32(0).u8(1).utf("inline").i32(i32::MAX);
    cases.push(("inline-length-2e31", w.0, "the inline state length"));
    let mut w = one_subtask();
    w.u8(3)
        .i32(0)
        .i32(0)
        .u8(2)
        .i64(1)
        .i32(0xffff_0000_u32 as i32);
    cases.push((
        "utf-length-65535-of-nothing",
        w.0,
        "the file path (65535 bytes)",
    ));
    let mut w = one_subtask();
    w.u8(3).i32(0).i32(0).u8(2).i64(1).i32(0x0002_c328);
    cases.push(("utf-invalid-modified-utf8", w.0, "modified UTF-8"));
    // Changelog handles nested inside each other far deeper than Flink ever writes.
    let mut w = one_subtask();
    for _ in 0..1000 {
        w.u8(14).i32(0).i32(1).i64(0).i32(1);
    }
    cases.push(("changelog-nested-1000-deep", w.0, "nested at most"));
    // Key-group stream handles wrapping each other.
    let mut w = one_subtask();
    w.u8(3).i32(0).i32(0);
    for _ in 0..1000 {
        w.u8(3).i32(0).i32(0);
    }
    cases.push(("key-group-streams-nested-1000-deep", w.0, "nested at most"));
    let mut w = one_subtask();
    w.u8(99);
    cases.push(("keyed-handle-type-99", w.0, "a keyed state handle type"));
    let mut w = one_subtask();
    w.u8(3).i32(0).i32(0).u8(42);
    cases.push(("stream-handle-type-42", w.0, "a stream state handle type"));
    let mut w = one_subtask();
    w.u8(0).u8(0).i32(1).u8(9);
    cases.push(("channel-handle-type-9", w.0, "channel state handle type"));
    let mut w = one_subtask();
    w.u8(0).u8(0).i32(i32::MAX);
    cases.push((
        "channel-handles-2e31",
        w.0,
        "the number of input channel state handles",
    ));
    let mut w = header(3);
    w.i32(0).bytes(b"trailing");
    cases.push(("v3-trailing-bytes", w.0, "the end of the file"));
    let mut w = header(6);
    w.i32(0).bytes(b"not java");
    cases.push(("v6-without-properties", w.0, "CheckpointProperties"));
    let mut w = header(7);
    w.i32(1).utf("op").utf("").i64(1).i64(2).i32(1).i32(1).u8(0);
    w.i32(1)
        .i32(0)
        .i32(0)
        .i32(0)
        .u8(0)
        .u8(0)
        .i32(0)
        .i32(0)
        .u8(7);
    cases.push(("v7-reference-marker-7", w.0, "reference marker 0 or 1"));
    let mut w = header(6);
    w.i32(1)
        .utf("op")
        .utf("")
        .i64(1)
        .i64(2)
        .i32(1)
        .i32(1)
        .file("file:/x", 1);
    cases.push((
        "coordinator-as-file",
        w.0,
        "inline (byte stream) coordinator",
    ));
    // The real file cut in the middle of a handle.
    cases.push((
        "real-truncated-at-half",
        real[..real.len() / 2].to_vec(),
        "but the file ends",
    ));
    // The real file with its operator count raised by one: the parser runs off the end.
    let mut bumped = real.clone();
    let at = 4 + 4 + 8 + 4;
    let ops = i32::from_be_bytes(bumped[at..at + 4].try_into().unwrap());
    bumped[at..at + 4].copy_from_slice(&(ops + 1).to_be_bytes());
    cases.push(("real-one-operator-too-many", bumped, "expected"));
    cases.push(("real-as-is", real, "ok"));
    cases
}
