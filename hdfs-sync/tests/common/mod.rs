//! Builders for checkpoint trees used by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hdfs_sync::metadata::encode_modified_utf8;
use hdfs_sync::{
    CheckpointMetadata, LocalStorage, MemoryLedger, Replicator, Storage, StorageUrl, SyncOptions,
};

pub const FIXTURE_ROOT_AS_WRITTEN: &str = "file:/tmp/twinsite-flink-fixture/ckpt";
pub const FIXTURE_JOB: &str = "39d63276fa4f046a731a44ba7f26dcb8";

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
    fn utf(&mut self, s: &str) -> &mut Self {
        let e = encode_modified_utf8(s).unwrap();
        self.0.extend_from_slice(&e);
        self
    }
}

/// `_metadata` (format V6) for one keyed operator whose incremental RocksDB handle references
/// the given files by absolute URI, plus an inline operator-state handle with a path-like name.
pub fn metadata_v6(checkpoint_id: i64, files: &[(String, u64)]) -> Vec<u8> {
    let refs: Vec<Ref> = files
        .iter()
        .map(|(path, size)| Ref::Absolute(path.clone(), *size))
        .collect();
    metadata_v6_refs(checkpoint_id, &refs)
}

/// A file an incremental handle references: by absolute URI (a File handle) or by a path
/// relative to `chk-N/` (a Relative handle, as savepoints and Flink 2.3.0 write them).
#[derive(Debug, Clone)]
pub enum Ref {
    Absolute(String, u64),
    Relative(String, u64),
}

/// As [`metadata_v6`], each file referenced as `files` says.
pub fn metadata_v6_refs(checkpoint_id: i64, files: &[Ref]) -> Vec<u8> {
    let mut w = W::default();
    w.i32(0x4960672d).i32(6).i64(checkpoint_id).i32(0).i32(1);
    w.utf("counter").utf("").i64(1).i64(2).i32(1).i32(128).u8(0);
    w.i32(1).i32(0);
    w.i32(1).u8(4).i32(1).utf("splits").u8(0).i32(1).i64(0);
    w.u8(1).utf("file:/inline/name/not/a/file").i32(3);
    w.0.extend_from_slice(b"abc");
    w.i32(0);
    w.u8(11)
        .i64(checkpoint_id)
        .utf("backend")
        .i32(0)
        .i32(128)
        .i64(0);
    w.u8(0);
    w.i32(files.len() as i32);
    for (i, reference) in files.iter().enumerate() {
        w.utf(&format!("{i:06}.sst"));
        match reference {
            Ref::Absolute(path, size) => w.u8(2).i64(*size as i64).utf(path),
            Ref::Relative(path, size) => w.u8(6).utf(path).i64(*size as i64),
        };
    }
    w.i32(0).utf("id").u8(0).i32(0).i32(0);
    w.0.extend_from_slice(&[0xac, 0xed, 0x00, 0x05, 0x70]);
    w.0
}

/// Writes `chk-<id>` of `job` under `root`, with `new_shared` fresh files of `size` bytes in
/// `shared/` and references to `reuse` (earlier shared file names). Returns the shared names.
pub fn write_checkpoint(
    root: &Path,
    job: &str,
    id: u64,
    reuse: &[String],
    new_shared: usize,
    size: usize,
) -> Vec<String> {
    let job_dir = root.join(job);
    std::fs::create_dir_all(job_dir.join("shared")).unwrap();
    std::fs::create_dir_all(job_dir.join(format!("chk-{id}"))).unwrap();
    let mut names: Vec<String> = reuse.to_vec();
    for n in 0..new_shared {
        let name = format!("sst-{id}-{n}");
        let data: Vec<u8> = (0..size)
            .map(|i| ((i * 31 + n * 7 + id as usize) % 251) as u8)
            .collect();
        std::fs::write(job_dir.join("shared").join(&name), data).unwrap();
        names.push(name);
    }
    let private = format!("chk-{id}/private-state");
    std::fs::write(job_dir.join(&private), format!("private of {id}")).unwrap();
    let base = format!("file:{}", job_dir.display());
    let mut files: Vec<(String, u64)> = names
        .iter()
        .map(|n| {
            let len = std::fs::metadata(job_dir.join("shared").join(n))
                .unwrap()
                .len();
            (format!("{base}/shared/{n}"), len)
        })
        .collect();
    files.push((
        format!("{base}/{private}"),
        format!("private of {id}").len() as u64,
    ));
    std::fs::write(
        job_dir.join(format!("chk-{id}/_metadata")),
        metadata_v6(id as i64, &files),
    )
    .unwrap();
    names
}

pub fn url(path: &Path) -> StorageUrl {
    StorageUrl::local(path).unwrap()
}

pub fn replicator(
    source: Arc<dyn Storage>,
    src: &Path,
    peer: Arc<dyn Storage>,
    dst: &Path,
    ledger: Arc<MemoryLedger>,
    options: SyncOptions,
) -> Replicator {
    Replicator::new(source, url(src), peer, url(dst), ledger, options)
}

/// The local backend confined to `root`, as `twinsite sync` opens it for `--from`/`--to`.
pub fn local(root: &Path) -> Arc<dyn Storage> {
    Arc::new(LocalStorage::new(root))
}

pub fn fast_options() -> SyncOptions {
    SyncOptions {
        retry_backoff: std::time::Duration::from_millis(1),
        ..SyncOptions::default()
    }
}

/// Copies the committed real-Flink fixture to `dest` and relocates its absolute URIs there.
pub fn install_fixture(dest: &Path) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flink-2.3-incremental/ckpt");
    copy_tree(&fixture, dest);
    let new_root = format!("file:{}", dest.display());
    for entry in std::fs::read_dir(dest.join(FIXTURE_JOB)).unwrap() {
        let path = entry.unwrap().path().join("_metadata");
        if path.exists() {
            let bytes = std::fs::read(&path).unwrap();
            let meta = CheckpointMetadata::parse(&bytes, &path.display().to_string()).unwrap();
            let out = meta
                .rewrite_uris(&bytes, |p| {
                    p.strip_prefix(FIXTURE_ROOT_AS_WRITTEN)
                        .map(|rest| format!("{new_root}{rest}"))
                })
                .unwrap();
            std::fs::write(&path, out).unwrap();
        }
    }
    dest.to_path_buf()
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
