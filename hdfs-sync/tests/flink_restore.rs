//! Real Flink, end to end: a keyed counter on RocksDB takes incremental checkpoints, its
//! process is killed (a site dying), the checkpoints are replicated to a second directory
//! with the URI rewrite, the source is deleted, and the job restores from the replicated copy
//! with its keyed state intact (counts continue instead of restarting at 1).
//!
//! Takes ~40 s on a warm cache (plus a one-time ~1 min, ~850 MB PyFlink install from PyPI into
//! ~/.cache/twinsite/flink-venv, or $TWINSITE_FLINK_VENV). Alone:
//! `cargo test -p twinsite-hdfs-sync --test flink_restore -- --nocapture`

mod real_flink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdfs_sync::{
    JobOutcome, LocalStorage, MemoryLedger, ReplicationLedger, Replicator, StorageUrl, SyncOptions,
};
use real_flink::{complete_checkpoints, counts, flink_python, kill_group, start_job};

#[tokio::test]
async fn a_job_restores_its_keyed_state_from_the_replicated_copy_after_the_source_is_gone() {
    let python = flink_python();
    let tmp = tempfile::tempdir().unwrap();
    let (src, peer, after) = (
        tmp.path().join("site-a"),
        tmp.path().join("site-b"),
        tmp.path().join("after"),
    );

    // --- run the job until it has taken several incremental checkpoints, then kill it
    let log_before = tmp.path().join("before.log");
    let mut job = start_job(&python, &src, None, &[], &log_before);
    let deadline = Instant::now() + Duration::from_secs(120);
    while complete_checkpoints(&src).len() < 3
        || Instant::now() < deadline - Duration::from_secs(110)
    {
        assert!(
            Instant::now() < deadline,
            "no checkpoints within 120 s; log: {}",
            log_before.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    kill_group(&mut job);
    let before = counts(&log_before);
    let mut max_before: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, k, n) in &before {
        let e = max_before.entry(*k).or_default();
        *e = (*e).max(*n);
    }
    assert!(!max_before.is_empty(), "the job printed no counts");

    // --- replicate to the other site, then lose the first site entirely
    let ledger = Arc::new(MemoryLedger::default());
    let replicator = Replicator::new(
        Arc::new(LocalStorage::new(&src)),
        StorageUrl::local(&src).unwrap(),
        Arc::new(LocalStorage::new(&peer)),
        StorageUrl::local(&peer).unwrap(),
        ledger.clone(),
        SyncOptions::default(),
    );
    let report = replicator.run_once().await.unwrap();
    let (job_id, outcome) = report.jobs.iter().next().unwrap();
    assert!(
        matches!(outcome, JobOutcome::Replicated { .. }),
        "{outcome:?}"
    );
    std::fs::remove_dir_all(&src).unwrap();
    let pointer = ledger
        .latest_replicated(job_id)
        .await
        .unwrap()
        .unwrap()
        .peer_pointer;

    // --- restore from the replicated checkpoint
    let log_after = tmp.path().join("after.log");
    let mut restored = start_job(&python, &after, Some(&pointer), &[], &log_after);
    let deadline = Instant::now() + Duration::from_secs(120);
    while counts(&log_after).len() < 10 {
        assert!(
            Instant::now() < deadline,
            "restored job printed nothing; log: {}",
            std::fs::read_to_string(&log_after).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    kill_group(&mut restored);

    let after_counts = counts(&log_after);
    let mut first_after: BTreeMap<i64, i64> = BTreeMap::new();
    for (kind, k, n) in &after_counts {
        // A key seen before the kill must continue: its first update retracts a restored count.
        first_after
            .entry(*k)
            .or_insert_with(|| if kind == "-U" { *n } else { *n - 1 });
    }
    let mut continued = 0;
    for (k, restored_count) in &first_after {
        if let Some(max) = max_before.get(k) {
            assert!(
                *restored_count >= 1 && restored_count <= max,
                "key {k}: restored count {restored_count}, before kill up to {max}"
            );
            continued += 1;
        }
    }
    assert!(
        continued > 0,
        "no key continued its count: before {max_before:?}, after {first_after:?}"
    );
    println!(
        "restored from {pointer}: counts before kill {max_before:?}, first after restore {first_after:?}"
    );
}
