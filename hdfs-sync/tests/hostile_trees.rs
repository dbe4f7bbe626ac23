//! Checkpoint trees built to hurt the sync (issue #13, findings 3 and 4), through the local
//! storage and the replicator: symbolic links below either root, FIFOs, devices and huge files
//! where files are read, and permission bits that must not widen on the way to the peer.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use hdfs_sync::metadata::MAX_METADATA_BYTES;
use hdfs_sync::storage::{DirEntry, FileMeta, ReadStream, WriteStream};
use hdfs_sync::{
    JobOutcome, LocalStorage, MemoryLedger, ReplicationLedger, Storage, StorageError,
    StorageErrorKind, StorageUrl,
};

fn url_of(path: &Path) -> StorageUrl {
    StorageUrl::local(path).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Every file below `dir` (following nothing), relative to it.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(
                    entry
                        .path()
                        .strip_prefix(dir)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

fn assert_refused_as_link(result: Result<impl Sized, StorageError>, link: &Path, what: &str) {
    let Err(err) = result else {
        panic!("{what} went through the link {}", link.display());
    };
    assert_eq!(err.kind, StorageErrorKind::Symlink, "{what}: {err}");
    assert!(
        err.to_string()
            .contains(&format!("file://{}", link.display())),
        "{what} does not name the link: {err}"
    );
}

// ---------------------------------------------------------------- the local storage

#[tokio::test]
async fn a_linked_directory_below_the_root_is_refused_by_every_operation_naming_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
    std::fs::create_dir_all(root.join("job")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"not for the peer").unwrap();
    let link = root.join("job/shared");
    symlink(&outside, &link).unwrap();
    let storage = LocalStorage::new(&root);
    let through = |name: &str| url_of(&link.join(name));

    assert_refused_as_link(storage.list(&url_of(&link)).await, &link, "list");
    assert_refused_as_link(storage.stat(&through("secret")).await, &link, "stat");
    assert_refused_as_link(storage.open_read(&through("secret")).await, &link, "open");
    assert_refused_as_link(storage.create(&through("new")).await, &link, "create");
    assert_refused_as_link(storage.mkdirs(&through("sub/dir")).await, &link, "mkdirs");
    assert_refused_as_link(storage.delete(&through("secret")).await, &link, "delete");
    assert_refused_as_link(storage.sync_dir(&url_of(&link)).await, &link, "sync");
    assert_eq!(
        files_below(&outside),
        ["secret"],
        "something happened outside"
    );
}

#[tokio::test]
async fn a_linked_file_is_listed_as_a_link_and_never_read_or_statted_through() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("chk-1")).unwrap();
    std::fs::write(tmp.path().join("passwd"), b"root:x:0:0").unwrap();
    let link = root.join("chk-1/_metadata");
    symlink(tmp.path().join("passwd"), &link).unwrap();
    symlink(tmp.path(), root.join("chk-2")).unwrap();
    let storage = LocalStorage::new(&root);

    assert_refused_as_link(storage.open_read(&url_of(&link)).await, &link, "open");
    assert_refused_as_link(storage.stat(&url_of(&link)).await, &link, "stat");
    let listed = storage.list(&url_of(&root.join("chk-1"))).await.unwrap();
    assert_eq!(
        listed,
        [DirEntry {
            name: "_metadata".into(),
            is_dir: false,
            is_symlink: true,
            len: tmp.path().join("passwd").display().to_string().len() as u64,
        }]
    );
    let chk2 = storage
        .list(&url_of(&root))
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.name == "chk-2")
        .unwrap();
    assert!(chk2.is_symlink && !chk2.is_dir, "{chk2:?}");
}

#[tokio::test]
async fn deleting_removes_a_link_itself_and_never_what_it_points_at() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
    std::fs::create_dir_all(root.join("chk-1/deeper/still")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"x").unwrap();
    std::fs::write(root.join("chk-1/deeper/still/f"), b"x").unwrap();
    symlink(&outside, root.join("chk-1/deeper/link-to-dir")).unwrap();
    symlink(outside.join("keep"), root.join("chk-1/link-to-file")).unwrap();
    symlink(&outside, root.join("top-link")).unwrap();
    let storage = LocalStorage::new(&root);

    storage.delete(&url_of(&root.join("chk-1"))).await.unwrap();
    storage
        .delete(&url_of(&root.join("top-link")))
        .await
        .unwrap();
    assert!(!root.join("chk-1").exists() && !root.join("top-link").exists());
    assert_eq!(files_below(&outside), ["keep"]);
    assert!(
        storage.delete(&url_of(&root)).await.is_err(),
        "the root itself is never deleted"
    );
}

#[tokio::test]
async fn the_root_itself_may_be_a_link_chosen_by_the_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("disk1/ckpt");
    std::fs::create_dir_all(&real).unwrap();
    let root = tmp.path().join("ckpt");
    symlink(&real, &root).unwrap();
    let storage = LocalStorage::new(&root);
    let file = url_of(&root.join("job/chk-1/_metadata"));
    storage
        .write_all(&file, Bytes::from_static(b"m"))
        .await
        .unwrap();
    assert_eq!(storage.read_all(&file).await.unwrap(), b"m");
    assert_eq!(
        std::fs::read(real.join("job/chk-1/_metadata")).unwrap(),
        b"m"
    );
}

#[tokio::test]
async fn a_url_outside_the_root_is_refused_naming_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(tmp.path().join("elsewhere"), b"x").unwrap();
    let storage = LocalStorage::new(&root);
    for result in [
        storage
            .open_read(&url_of(&tmp.path().join("elsewhere")))
            .await
            .map(drop),
        storage
            .create(&url_of(&tmp.path().join("root-sibling/x")))
            .await
            .map(drop),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.kind, StorageErrorKind::OutsideRoot, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("file://{}", root.display())),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("_metadata");
    mkfifo(&fifo);
    let storage = LocalStorage::new(tmp.path());
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        (
            storage.open_read(&url_of(&fifo)).await.map(drop),
            storage.read_bounded(&url_of(&fifo), 1024).await.map(drop),
        )
    })
    .await
    .expect("opening a FIFO hung");
    for err in [result.0.unwrap_err(), result.1.unwrap_err()] {
        assert_eq!(err.kind, StorageErrorKind::NotAFile, "{err}");
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(
            err.to_string().contains(&fifo.display().to_string()),
            "{err}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_device_is_never_read() {
    // /dev as a root: `zero` is a character device that never ends.
    let storage = LocalStorage::new("/dev");
    let err = storage
        .read_bounded(&url_of(Path::new("/dev/zero")), MAX_METADATA_BYTES)
        .await
        .unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::NotAFile, "{err}");
    assert!(err.to_string().contains("character device"), "{err}");
}

#[tokio::test]
async fn a_file_over_the_bound_is_refused_by_its_size_before_any_byte_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = tmp.path().join("_metadata");
    // Sparse: 4 GiB declared, nothing on disk.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let started = Instant::now();
    let err = LocalStorage::new(tmp.path())
        .read_bounded(&url_of(&huge), MAX_METADATA_BYTES)
        .await
        .unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::TooLarge, "{err}");
    assert!(
        err.to_string().contains(&(4u64 << 30).to_string())
            && err.to_string().contains(&MAX_METADATA_BYTES.to_string()),
        "{err}"
    );
    // Reading 64 MiB of zeroes would take far longer than refusing from the size.
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Says every file is empty: what a file growing between `stat` and the read looks like.
struct StatSaysEmpty(LocalStorage);

#[async_trait]
impl Storage for StatSaysEmpty {
    async fn list(&self, dir: &StorageUrl) -> Result<Vec<DirEntry>, StorageError> {
        self.0.list(dir).await
    }
    async fn stat(&self, url: &StorageUrl) -> Result<Option<FileMeta>, StorageError> {
        Ok(self.0.stat(url).await?.map(|m| FileMeta { len: 0, ..m }))
    }
    async fn open_read(&self, url: &StorageUrl) -> Result<Box<dyn ReadStream>, StorageError> {
        self.0.open_read(url).await
    }
    async fn create_with_permissions(
        &self,
        url: &StorageUrl,
        permissions: Option<u32>,
    ) -> Result<Box<dyn WriteStream>, StorageError> {
        self.0.create_with_permissions(url, permissions).await
    }
    async fn delete(&self, url: &StorageUrl) -> Result<(), StorageError> {
        self.0.delete(url).await
    }
    async fn mkdirs(&self, url: &StorageUrl) -> Result<(), StorageError> {
        self.0.mkdirs(url).await
    }
}

#[tokio::test]
async fn a_file_that_grows_past_the_bound_while_read_is_cut_off_at_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("_metadata");
    std::fs::write(&file, vec![7u8; 3 << 20]).unwrap();
    let storage = StatSaysEmpty(LocalStorage::new(tmp.path()));
    let err = storage
        .read_bounded(&url_of(&file), 2 << 20)
        .await
        .unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::TooLarge, "{err}");
    let whole = storage.read_bounded(&url_of(&file), 3 << 20).await.unwrap();
    assert_eq!(whole.bytes.len(), 3 << 20);
}

#[tokio::test]
async fn a_file_created_with_a_source_mode_is_never_wider_than_it() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(tmp.path());
    for bits in [0o600, 0o640, 0o400] {
        let path = tmp.path().join(format!("d/f-{bits:o}"));
        storage
            .write_all_with_permissions(&url_of(&path), Bytes::from_static(b"x"), Some(bits))
            .await
            .unwrap();
        let got = mode(&path);
        assert_eq!(got & !bits, 0, "{got:o} is wider than {bits:o}");
        // The umask can only narrow the bits; owner-read is never masked here.
        assert_eq!(got & 0o400, 0o400, "{got:o}");
    }
    let path = tmp.path().join("d/plain");
    storage
        .write_all(&url_of(&path), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(mode(&path) & 0o600, 0o600);
}

// ---------------------------------------------------------------- through the replicator

#[tokio::test]
async fn a_source_shared_directory_linked_outside_the_root_fails_the_job_and_copies_nothing_from_there()
 {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 3, 100);
    // The job's shared/ now lives elsewhere (outside the source root) behind a link, and holds
    // what the checkpoint names plus something that must never reach the peer.
    let outside = tmp.path().join("elsewhere");
    std::fs::rename(src.join("job/shared"), &outside).unwrap();
    std::fs::write(outside.join("secret"), b"not for the peer").unwrap();
    symlink(&outside, src.join("job/shared")).unwrap();
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        ledger.clone(),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    let JobOutcome::Failed { error, label, .. } = &report.jobs["job"] else {
        panic!("{:?}", report.jobs["job"]);
    };
    assert_eq!(*label, "symlink", "{error}");
    assert!(
        error.contains(&format!("file://{}", src.join("job/shared").display())),
        "{error}"
    );
    assert!(ledger.replicated("job").await.unwrap().is_empty());
    assert!(
        files_below(&dst).iter().all(|f| !f.contains("shared/")),
        "{:?}",
        files_below(&dst)
    );
}

#[tokio::test]
async fn a_peer_job_directory_linked_outside_the_peer_root_is_refused_and_nothing_lands_there() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 3, 100);
    write_checkpoint(&src, "other", 1, &[], 1, 100);
    let outside = tmp.path().join("victim");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    symlink(&outside, dst.join("job")).unwrap();
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        ledger.clone(),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    let JobOutcome::Failed { error, label, .. } = &report.jobs["job"] else {
        panic!("{:?}", report.jobs["job"]);
    };
    assert_eq!(*label, "symlink", "{error}");
    assert!(
        error.contains(&format!("file://{}", dst.join("job").display())),
        "{error}"
    );
    assert_eq!(files_below(&outside), Vec::<String>::new());
    assert!(
        dst.join("job").is_symlink(),
        "the link itself is left alone"
    );
    // Other jobs are unaffected.
    assert!(matches!(
        report.jobs["other"],
        JobOutcome::Replicated { .. }
    ));
}

#[tokio::test]
async fn a_private_state_file_stays_private_at_the_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let names = write_checkpoint(&src, "job", 1, &[], 2, 100);
    let private = src.join("job/shared").join(&names[0]);
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let metadata = src.join("job/chk-1/_metadata");
    std::fs::set_permissions(&metadata, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        Arc::new(MemoryLedger::default()),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    assert!(matches!(report.jobs["job"], JobOutcome::Replicated { .. }));
    assert_eq!(mode(&dst.join("job/shared").join(&names[0])), 0o600);
    let peer_metadata = mode(&dst.join("job/chk-1/_metadata"));
    assert_eq!(peer_metadata & !0o640, 0, "{peer_metadata:o}");
}

#[tokio::test]
async fn a_fifo_metadata_fails_its_job_at_once_and_other_jobs_replicate() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "fifo", 1, &[], 1, 100);
    write_checkpoint(&src, "good", 1, &[], 1, 100);
    let metadata = src.join("fifo/chk-1/_metadata");
    std::fs::remove_file(&metadata).unwrap();
    mkfifo(&metadata);
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        Arc::new(MemoryLedger::default()),
        fast_options(),
    );
    let report = tokio::time::timeout(Duration::from_secs(10), r.run_once())
        .await
        .expect("a FIFO _metadata hung the round")
        .unwrap();
    let JobOutcome::Failed { error, label, .. } = &report.jobs["fifo"] else {
        panic!("{:?}", report.jobs["fifo"]);
    };
    assert_eq!(*label, "not_a_file", "{error}");
    assert!(error.contains(&metadata.display().to_string()), "{error}");
    assert!(matches!(report.jobs["good"], JobOutcome::Replicated { .. }));
}

#[tokio::test]
async fn a_huge_metadata_is_refused_by_its_size_naming_the_file_and_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 1, 100);
    let metadata = src.join("job/chk-1/_metadata");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&metadata)
        .unwrap()
        .set_len(MAX_METADATA_BYTES + 1)
        .unwrap();
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        Arc::new(MemoryLedger::default()),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    let JobOutcome::Failed { error, label, .. } = &report.jobs["job"] else {
        panic!("{:?}", report.jobs["job"]);
    };
    assert_eq!(*label, "too_large", "{error}");
    assert!(
        error.contains(&metadata.display().to_string())
            && error.contains(&MAX_METADATA_BYTES.to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn a_linked_checkpoint_directory_or_job_fails_loudly_instead_of_vanishing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 1, 100);
    write_checkpoint(&tmp.path().join("elsewhere"), "job", 2, &[], 1, 100);
    symlink(
        tmp.path().join("elsewhere/job/chk-2"),
        src.join("job/chk-2"),
    )
    .unwrap();
    symlink(tmp.path().join("elsewhere/job"), src.join("linked-job")).unwrap();
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        Arc::new(MemoryLedger::default()),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    for (job, link) in [("job", "job/chk-2"), ("linked-job", "linked-job")] {
        let JobOutcome::Failed { error, label, .. } = &report.jobs[job] else {
            panic!("{job}: {:?}", report.jobs[job]);
        };
        assert_eq!(*label, "symlink", "{error}");
        assert!(
            error.contains(&format!("file://{}", src.join(link).display())),
            "{error}"
        );
    }
}
