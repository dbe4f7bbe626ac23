//! Replication end to end on the local backend: real Flink metadata, incremental reuse,
//! retention, metrics, and every fault the issue lists.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hdfs_sync::fault::{Fault, FaultAction, FaultOp, FaultyStorage};
use hdfs_sync::metadata::HandleKind;
use hdfs_sync::{
    CheckpointMetadata, JobOutcome, LocalStorage, MemoryLedger, ProgressEvent, ReplicationLedger,
    StorageErrorKind, StorageUrl, SyncOptions, UriMode,
};

/// The committed fixture is what Flink 2.3 really wrote: format V6, RocksDB incremental
/// handles whose shared files are referenced by absolute URI, and inline byte handles whose
/// names are not files.
#[test]
fn a_real_flink_checkpoint_parses_and_every_referenced_file_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let root = install_fixture(&tmp.path().join("src"));
    let job = root.join(FIXTURE_JOB);
    for id in [24, 25, 26] {
        let chk = job.join(format!("chk-{id}"));
        let bytes = std::fs::read(chk.join("_metadata")).unwrap();
        let meta = CheckpointMetadata::parse(&bytes, "fixture").unwrap();
        assert_eq!(meta.version, 6, "Flink 2.3 writes metadata V6");
        assert_eq!(meta.checkpoint_id, id);
        let refs = meta.referenced_files(&url(&chk)).unwrap();
        assert!(!refs.is_empty());
        for r in &refs {
            let len = std::fs::metadata(r.url.path())
                .unwrap_or_else(|_| panic!("{} missing", r.url))
                .len();
            assert_eq!(len, r.state_size, "{}", r.url);
        }
        let shared = meta
            .file_handles()
            .filter(|h| h.kind == HandleKind::File && h.path.contains("/shared/"))
            .count();
        assert!(
            shared > 0,
            "incremental checkpoint {id} references shared/ files by absolute URI"
        );
        for inline in meta.inline_handles() {
            assert!(!std::path::Path::new(inline.path.trim_start_matches("file:")).is_file());
        }
    }
}

#[tokio::test]
async fn a_replicated_real_checkpoint_references_only_the_peer_once_the_source_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let src = install_fixture(&tmp.path().join("src"));
    let dst = tmp.path().join("dst");
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
    assert!(
        matches!(
            report.jobs[FIXTURE_JOB],
            JobOutcome::Replicated {
                checkpoint_id: 26,
                ..
            }
        ),
        "{report:?}"
    );
    std::fs::remove_dir_all(&src).unwrap();

    let pointer = ledger
        .latest_replicated(FIXTURE_JOB)
        .await
        .unwrap()
        .unwrap()
        .peer_pointer;
    let chk = StorageUrl::parse(&pointer).unwrap();
    let bytes = std::fs::read(format!("{}/_metadata", chk.path())).unwrap();
    let meta = CheckpointMetadata::parse(&bytes, "peer").unwrap();
    let peer_root = url(&dst);
    for r in meta.referenced_files(&chk).unwrap() {
        assert!(
            r.url.starts_with(&peer_root),
            "{} still points outside the peer",
            r.url
        );
        assert_eq!(std::fs::metadata(r.url.path()).unwrap().len(), r.state_size);
    }
}

#[tokio::test]
async fn in_shared_nameservice_mode_metadata_is_copied_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    write_checkpoint(&src, "job", 1, &[], 3, 100);
    let options = SyncOptions {
        uri_mode: UriMode::SharedNameservice,
        ..fast_options()
    };
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        Arc::new(MemoryLedger::default()),
        options,
    );
    r.run_once().await.unwrap();
    assert_eq!(
        std::fs::read(src.join("job/chk-1/_metadata")).unwrap(),
        std::fs::read(dst.join("job/chk-1/_metadata")).unwrap()
    );
    assert!(dst.join("job/shared/sst-1-0").is_file());
}

#[tokio::test]
async fn an_incremental_checkpoint_copies_only_its_new_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let first = write_checkpoint(&src, "job", 1, &[], 10, 10_000);
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        Arc::new(MemoryLedger::default()),
        fast_options(),
    );
    r.run_once().await.unwrap();
    write_checkpoint(&src, "job", 2, &first, 1, 10_000);
    let report = r.run_once().await.unwrap();
    match &report.jobs["job"] {
        JobOutcome::Replicated {
            checkpoint_id: 2,
            files_copied,
            files_reused,
            ..
        } => {
            assert_eq!((*files_copied, *files_reused), (2, 10));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn retention_keeps_the_newest_k_and_only_the_shared_files_they_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let ledger = Arc::new(MemoryLedger::default());
    let options = SyncOptions {
        retain: 2,
        ..fast_options()
    };
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        ledger.clone(),
        options,
    );
    // Each checkpoint drops the oldest shared file and adds one, like RocksDB compaction.
    let mut live: Vec<String> = Vec::new();
    for id in 1..=5u64 {
        if live.len() >= 3 {
            live.remove(0);
        }
        live = write_checkpoint(&src, "job", id, &live, 1, 500);
        r.run_once().await.unwrap();
    }
    let kept: Vec<u64> = ledger
        .replicated("job")
        .await
        .unwrap()
        .iter()
        .map(|c| c.checkpoint_id)
        .collect();
    assert_eq!(kept, [4, 5]);
    assert!(!dst.join("job/chk-3").exists() && dst.join("job/chk-4/_metadata").is_file());
    let mut needed = std::collections::HashSet::new();
    for id in [4, 5] {
        let chk = url(&dst.join(format!("job/chk-{id}")));
        let meta = CheckpointMetadata::parse(
            &std::fs::read(dst.join(format!("job/chk-{id}/_metadata"))).unwrap(),
            "m",
        )
        .unwrap();
        for r in meta.referenced_files(&chk).unwrap() {
            assert!(
                std::path::Path::new(r.url.path()).is_file(),
                "retained reference {} deleted",
                r.url
            );
            needed.insert(r.url.file_name().to_string());
        }
    }
    for entry in std::fs::read_dir(dst.join("job/shared")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            needed.contains(&name),
            "unreferenced shared file {name} kept"
        );
    }
}

#[tokio::test]
async fn metrics_report_source_and_peer_checkpoints_lag_bytes_and_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "good", 7, &[], 2, 1000);
    write_checkpoint(&src, "bad", 3, &[], 1, 10);
    std::fs::write(src.join("bad/chk-3/_metadata"), b"garbage").unwrap();
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        Arc::new(MemoryLedger::default()),
        fast_options(),
    );
    r.run_once().await.unwrap();
    let m = r.metrics();
    let good = &m.jobs["good"];
    assert_eq!(
        (
            good.latest_source_checkpoint,
            good.latest_replicated_checkpoint
        ),
        (Some(7), Some(7))
    );
    assert!(good.lag_seconds.is_some_and(|l| (0.0..60.0).contains(&l)));
    assert_eq!(good.bytes_copied, 2000 + "private of 7".len() as u64);
    let bad = &m.jobs["bad"];
    assert_eq!((bad.latest_replicated_checkpoint, bad.failures), (None, 1));
    assert!(
        bad.last_error
            .as_deref()
            .unwrap()
            .contains("bad/chk-3/_metadata")
    );
}

// ---------------------------------------------------------------- faults

fn faulty_peer(dst: &std::path::Path) -> (Arc<FaultyStorage>, Arc<dyn hdfs_sync::Storage>) {
    let f = Arc::new(FaultyStorage::new(Arc::new(LocalStorage::new(dst))));
    let as_storage: Arc<dyn hdfs_sync::Storage> = f.clone();
    (f, as_storage)
}

async fn assert_nothing_recorded(ledger: &MemoryLedger, dst: &std::path::Path, job: &str, id: u64) {
    assert!(
        ledger.replicated(job).await.unwrap().is_empty(),
        "a checkpoint was recorded"
    );
    assert!(
        !dst.join(format!("{job}/chk-{id}/_metadata")).exists(),
        "peer chk-{id} looks complete"
    );
}

#[tokio::test]
async fn a_copy_corrupted_every_time_is_never_marked_replicated() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 3, 1000);
    let (faults, peer) = faulty_peer(&dst);
    faults.add(Fault {
        op: FaultOp::Write,
        url_contains: "sst-1-1".into(),
        action: FaultAction::CorruptWrite,
        times: None,
    });
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        peer,
        &dst,
        ledger.clone(),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(
            &report.jobs["job"],
            JobOutcome::Failed {
                label: "verify_failed",
                ..
            }
        ),
        "{report:?}"
    );
    assert_nothing_recorded(&ledger, &dst, "job", 1).await;
}

#[tokio::test]
async fn a_truncated_copy_is_detected_retried_and_then_replicated() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 3, 1000);
    let (faults, peer) = faulty_peer(&dst);
    faults.add(Fault {
        op: FaultOp::Write,
        url_contains: "sst-1-2".into(),
        action: FaultAction::TruncateWrite,
        times: Some(1),
    });
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        peer,
        &dst,
        ledger.clone(),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(&report.jobs["job"], JobOutcome::Replicated { .. }),
        "{report:?}"
    );
    assert_eq!(
        std::fs::read(dst.join("job/shared/sst-1-2")).unwrap(),
        std::fs::read(src.join("job/shared/sst-1-2")).unwrap()
    );
}

#[tokio::test]
async fn a_sync_killed_mid_copy_resumes_without_recopying_verified_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let file_size = 64 * 1024;
    write_checkpoint(&src, "job", 1, &[], 80, file_size);
    let total: u64 = 80 * file_size as u64 + "private of 1".len() as u64;
    let ledger = Arc::new(MemoryLedger::default());
    let options = SyncOptions {
        file_parallelism: 2,
        bandwidth: Some(4 * 1024 * 1024),
        ..fast_options()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        ledger.clone(),
        options.clone(),
    )
    .with_progress(tx);
    let task = tokio::spawn(async move { first.run_once().await });
    let mut copied = 0;
    while let Some(event) = rx.recv().await {
        if matches!(event, ProgressEvent::FileCopied { .. }) {
            copied += 1;
            if copied == 40 {
                break;
            }
        }
    }
    task.abort();
    let _ = task.await;
    assert!(ledger.replicated("job").await.unwrap().is_empty());

    let second = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        ledger.clone(),
        options,
    );
    let report = second.run_once().await.unwrap();
    let JobOutcome::Replicated { files_reused, .. } = report.jobs["job"] else {
        panic!("{report:?}")
    };
    let recopied = second.metrics().jobs["job"].bytes_copied;
    assert!(
        files_reused >= 32,
        "only {files_reused} verified files were reused"
    );
    assert!(
        recopied < total - 30 * file_size as u64,
        "resume copied {recopied} of {total} bytes"
    );
    for entry in std::fs::read_dir(src.join("job/shared")).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(
            std::fs::read(src.join("job/shared").join(&name)).unwrap(),
            std::fs::read(dst.join("job/shared").join(&name)).unwrap()
        );
    }
}

#[tokio::test]
async fn a_source_checkpoint_deleted_during_copy_is_skipped_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 6, 1000);
    let source = Arc::new(FaultyStorage::new(Arc::new(LocalStorage::new(&src))));
    let job_dir = src.join("job");
    // Flink subsuming the checkpoint: its directory and its shared files disappear.
    source.add(Fault {
        op: FaultOp::Open,
        url_contains: "sst-1-3".into(),
        action: FaultAction::Hook(Arc::new(move |_| {
            let _ = std::fs::remove_dir_all(&job_dir);
        })),
        times: Some(1),
    });
    let ledger = Arc::new(MemoryLedger::default());
    let options = SyncOptions {
        file_parallelism: 1,
        ..fast_options()
    };
    let r = replicator(source, &src, local(&dst), &dst, ledger.clone(), options);
    let report = r.run_once().await.unwrap();
    assert_eq!(
        report.jobs["job"],
        JobOutcome::SourceVanished { checkpoint_id: 1 }
    );
    assert_nothing_recorded(&ledger, &dst, "job", 1).await;
    assert!(!dst.join("job/chk-1").exists());
    assert_eq!(r.metrics().jobs["job"].failures, 0);
}

#[tokio::test]
async fn a_checkpoint_without_metadata_is_not_replicated_and_a_corrupt_one_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 1, 10);
    std::fs::remove_file(src.join("job/chk-1/_metadata")).unwrap();
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
    assert_eq!(
        report.jobs["job"],
        JobOutcome::UpToDate {
            latest_replicated: None
        }
    );

    write_checkpoint(&src, "job", 2, &[], 1, 10);
    let meta = src.join("job/chk-2/_metadata");
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&meta, bytes).unwrap();
    let report = r.run_once().await.unwrap();
    let JobOutcome::Failed { label, error, .. } = &report.jobs["job"] else {
        panic!("{report:?}")
    };
    assert_eq!(*label, "metadata");
    assert!(
        error.contains("chk-2/_metadata") && error.contains("expected"),
        "{error}"
    );
    assert_nothing_recorded(&ledger, &dst, "job", 2).await;
}

#[tokio::test]
async fn permission_denied_fails_one_job_and_the_others_still_replicate() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for job in ["a", "denied", "z"] {
        write_checkpoint(&src, job, 1, &[], 2, 100);
    }
    let (faults, peer) = faulty_peer(&dst);
    faults.add(Fault {
        op: FaultOp::Create,
        url_contains: "/denied/".into(),
        action: FaultAction::Fail(StorageErrorKind::PermissionDenied),
        times: None,
    });
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        peer,
        &dst,
        ledger.clone(),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(
            &report.jobs["denied"],
            JobOutcome::Failed {
                label: "permission_denied",
                ..
            }
        ),
        "{report:?}"
    );
    for job in ["a", "z"] {
        assert!(
            matches!(&report.jobs[job], JobOutcome::Replicated { .. }),
            "{report:?}"
        );
    }
    assert!(ledger.replicated("denied").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_full_disk_fails_the_checkpoint_without_retrying_or_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 2, 100);
    let (faults, peer) = faulty_peer(&dst);
    faults.add(Fault {
        op: FaultOp::Write,
        url_contains: "sst-1-1".into(),
        action: FaultAction::Fail(StorageErrorKind::NoSpace),
        times: Some(1),
    });
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        peer,
        &dst,
        ledger.clone(),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(
            &report.jobs["job"],
            JobOutcome::Failed {
                label: "no_space",
                ..
            }
        ),
        "{report:?}"
    );
    assert_nothing_recorded(&ledger, &dst, "job", 1).await;
    // Space freed: the next round completes it.
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(&report.jobs["job"], JobOutcome::Replicated { .. }),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_hung_job_times_out_without_stalling_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "fast", 1, &[], 2, 100);
    write_checkpoint(&src, "slow", 1, &[], 2, 100);
    let source = Arc::new(FaultyStorage::new(Arc::new(LocalStorage::new(&src))));
    source.add(Fault {
        op: FaultOp::Open,
        url_contains: "/slow/shared/".into(),
        action: FaultAction::Delay(Duration::from_secs(30)),
        times: None,
    });
    let options = SyncOptions {
        io_timeout: Duration::from_millis(100),
        attempts: 1,
        ..fast_options()
    };
    let r = replicator(
        source,
        &src,
        local(&dst),
        &dst,
        Arc::new(MemoryLedger::default()),
        options,
    );
    let started = std::time::Instant::now();
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(&report.jobs["fast"], JobOutcome::Replicated { .. }),
        "{report:?}"
    );
    assert!(
        matches!(
            &report.jobs["slow"],
            JobOutcome::Failed {
                label: "timeout",
                ..
            }
        ),
        "{report:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn in_continuous_mode_a_stuck_job_does_not_hold_back_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "fast", 1, &[], 1, 100);
    write_checkpoint(&src, "stuck", 1, &[], 1, 100);
    let source = Arc::new(FaultyStorage::new(Arc::new(LocalStorage::new(&src))));
    source.add(Fault {
        op: FaultOp::Open,
        url_contains: "/stuck/shared/".into(),
        action: FaultAction::Delay(Duration::from_secs(60)),
        times: None,
    });
    let ledger = Arc::new(MemoryLedger::default());
    let options = SyncOptions {
        interval: Duration::from_millis(50),
        ..fast_options()
    };
    let r = replicator(source, &src, local(&dst), &dst, ledger.clone(), options);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let r = r.clone();
        async move {
            r.run(async {
                let _ = stop_rx.await;
            })
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_checkpoint(&src, "fast", 2, &[], 1, 100);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ledger
        .latest_replicated("fast")
        .await
        .unwrap()
        .map(|c| c.checkpoint_id)
        != Some(2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "fast job's second checkpoint never replicated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ledger.replicated("stuck").await.unwrap().is_empty());
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_checkpoint_is_not_recorded_until_the_peer_directories_holding_its_files_are_synced() {
    // The files are fsynced before their renames; the renames are durable only once their
    // directories are. Failing that sync for either directory must keep the record back.
    for dir in ["/job/shared", "/job/chk-1"] {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        write_checkpoint(&src, "job", 1, &[], 2, 100);
        let (faults, peer) = faulty_peer(&dst);
        faults.add(Fault {
            op: FaultOp::SyncDir,
            url_contains: dir.into(),
            action: FaultAction::Fail(StorageErrorKind::Other),
            times: None,
        });
        let ledger = Arc::new(MemoryLedger::default());
        let r = replicator(
            local(&src),
            &src,
            peer,
            &dst,
            ledger.clone(),
            fast_options(),
        );
        let report = r.run_once().await.unwrap();
        assert!(
            matches!(&report.jobs["job"], JobOutcome::Failed { error, .. } if error.contains(dir)),
            "{dir}: {report:?}"
        );
        assert_nothing_recorded(&ledger, &dst, "job", 1).await;

        // Once the directories can be synced, the same checkpoint is recorded.
        faults.clear();
        let report = r.run_once().await.unwrap();
        assert!(
            matches!(&report.jobs["job"], JobOutcome::Replicated { .. }),
            "{dir}: {report:?}"
        );
    }
}

#[tokio::test]
async fn a_file_corrupted_after_its_copy_but_before_verification_is_never_recorded() {
    // The stream's checksum matched what was written; then the committed peer file changes
    // (a disk or another writer) before the read-back. The read-back must catch it, and the
    // retries too, so the checkpoint is never recorded.
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 3, 1000);
    let (faults, peer) = faulty_peer(&dst);
    let corrupted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = corrupted.clone();
    // The peer's file is opened only to be read back, after its fsync and rename.
    faults.add(Fault {
        op: FaultOp::Open,
        url_contains: "shared/sst-1-1".into(),
        action: FaultAction::Hook(Arc::new(move |url| {
            let mut bytes = std::fs::read(url.path()).unwrap();
            bytes[500] ^= 0x01;
            std::fs::write(url.path(), bytes).unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })),
        times: None,
    });
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        peer,
        &dst,
        ledger.clone(),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    let JobOutcome::Failed { label, error, .. } = &report.jobs["job"] else {
        panic!("{report:?}")
    };
    assert_eq!(*label, "verify_failed");
    assert!(
        error.contains("sst-1-1") && error.contains("xxh64:"),
        "{error}"
    );
    assert_eq!(
        corrupted.load(std::sync::atomic::Ordering::Relaxed),
        fast_options().attempts as usize,
        "every attempt was read back"
    );
    assert_nothing_recorded(&ledger, &dst, "job", 1).await;
    let manifest = std::fs::read_to_string(dst.join("job/.twinsite/verified.json")).unwrap();
    assert!(!manifest.contains("sst-1-1"), "{manifest}");

    // Once the peer keeps what it is given, the same checkpoint is recorded.
    faults.clear();
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(&report.jobs["job"], JobOutcome::Replicated { .. }),
        "{report:?}"
    );
    assert_eq!(
        std::fs::read(dst.join("job/shared/sst-1-1")).unwrap(),
        std::fs::read(src.join("job/shared/sst-1-1")).unwrap()
    );
}

#[tokio::test]
async fn with_length_verification_a_file_cut_short_after_its_copy_is_never_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 2, 1000);
    let (faults, peer) = faulty_peer(&dst);
    // LengthOnly stats the peer's file instead of reading it back.
    faults.add(Fault {
        op: FaultOp::Stat,
        url_contains: "shared/sst-1-0".into(),
        action: FaultAction::Hook(Arc::new(|url| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(url.path())
                .unwrap();
            file.set_len(999).unwrap();
        })),
        times: None,
    });
    let ledger = Arc::new(MemoryLedger::default());
    let options = SyncOptions {
        verify: hdfs_sync::VerifyMode::LengthOnly,
        ..fast_options()
    };
    let r = replicator(local(&src), &src, peer, &dst, ledger.clone(), options);
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(
            &report.jobs["job"],
            JobOutcome::Failed {
                label: "verify_failed",
                ..
            }
        ),
        "{report:?}"
    );
    assert_nothing_recorded(&ledger, &dst, "job", 1).await;
}

#[tokio::test]
async fn directories_are_synced_before_metadata_appears_and_the_checkpoint_directory_after() {
    // A checkpoint whose chk-N holds nothing but `_metadata` (every file in shared/).
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write_checkpoint(&src, "job", 1, &[], 3, 100);
    let first: Vec<String> = (0..3).map(|n| format!("sst-1-{n}")).collect();
    write_checkpoint(&src, "job", 2, &first, 0, 100);
    std::fs::remove_file(src.join("job/chk-2/private-state")).unwrap();
    let base = format!("file:{}", src.join("job").display());
    let files: Vec<(String, u64)> = first
        .iter()
        .map(|n| (format!("{base}/shared/{n}"), 100))
        .collect();
    std::fs::write(src.join("job/chk-2/_metadata"), metadata_v6(2, &files)).unwrap();
    std::fs::remove_dir_all(src.join("job/chk-1")).unwrap();

    let (faults, peer) = faulty_peer(&dst);
    let synced: Arc<std::sync::Mutex<Vec<(String, bool)>>> = Arc::default();
    let log = synced.clone();
    let metadata = dst.join("job/chk-2/_metadata");
    faults.add(Fault {
        op: FaultOp::SyncDir,
        url_contains: String::new(),
        action: FaultAction::Hook(Arc::new(move |url| {
            log.lock()
                .unwrap()
                .push((url.path().to_string(), metadata.exists()));
        })),
        times: None,
    });
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        peer,
        &dst,
        ledger.clone(),
        fast_options(),
    );
    let report = r.run_once().await.unwrap();
    assert!(
        matches!(
            &report.jobs["job"],
            JobOutcome::Replicated {
                checkpoint_id: 2,
                files_copied: 3,
                ..
            }
        ),
        "{report:?}"
    );
    let synced = synced.lock().unwrap().clone();
    let path = |p: &str| dst.join(p).display().to_string();
    let root = dst.display().to_string();
    for dir in [path("job/shared"), path("job"), root.clone()] {
        assert!(
            synced.contains(&(dir.clone(), false)),
            "{dir} not synced before _metadata: {synced:?}"
        );
    }
    for dir in [path("job/chk-2"), path("job"), root] {
        assert!(
            synced.contains(&(dir.clone(), true)),
            "{dir} not synced after _metadata: {synced:?}"
        );
    }
}

#[tokio::test]
async fn a_manifest_written_with_sha256_checksums_is_still_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let first = write_checkpoint(&src, "job", 1, &[], 4, 1000);
    let ledger = Arc::new(MemoryLedger::default());
    let r = replicator(
        local(&src),
        &src,
        local(&dst),
        &dst,
        ledger.clone(),
        fast_options(),
    );
    r.run_once().await.unwrap();
    // Rewrite the manifest as the previous release wrote it: `sha256` and bare hex.
    let path = dst.join("job/.twinsite/verified.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for entry in manifest["files"].as_object_mut().unwrap().values_mut() {
        let entry = entry.as_object_mut().unwrap();
        let checksum = entry.remove("checksum").unwrap();
        assert!(checksum.as_str().unwrap().starts_with("xxh64:"));
        entry.insert("sha256".into(), "ab".repeat(32).into());
    }
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    write_checkpoint(&src, "job", 2, &first, 1, 1000);
    let report = r.run_once().await.unwrap();
    let JobOutcome::Replicated {
        files_copied,
        files_reused,
        ..
    } = report.jobs["job"]
    else {
        panic!("{report:?}")
    };
    assert_eq!((files_copied, files_reused), (2, 4));
}
