//! Real Flink, end to end: a keyed counter on RocksDB takes incremental checkpoints, its
//! process is killed (a site dying), the checkpoints are replicated to a second directory
//! with the URI rewrite, the source is deleted, and the job restores from the replicated copy
//! with its keyed state intact (counts continue instead of restarting at 1).
//!
//! Takes ~40 s on a warm cache (plus a one-time ~1 min, ~850 MB PyFlink install from PyPI into
//! ~/.cache/twinsite/flink-venv, or $TWINSITE_FLINK_VENV). Alone:
//! `cargo test -p twinsite-hdfs-sync --test flink_restore -- --nocapture`

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdfs_sync::{
    JobOutcome, LocalStorage, MemoryLedger, ReplicationLedger, Replicator, StorageUrl, SyncOptions,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn flink_python() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/flink/setup-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run setup-venv.sh");
    assert!(out.status.success(), "PyFlink venv setup failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn start_job(python: &Path, checkpoint_dir: &Path, restore: Option<&str>, log: &Path) -> Child {
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/flink/keyed_counter.py"))
        .arg(format!("file://{}", checkpoint_dir.display()));
    if let Some(path) = restore {
        cmd.arg(path);
    }
    let out = std::fs::File::create(log).unwrap();
    // Own process group, so the JVM PyFlink starts dies with it.
    cmd.stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("start PyFlink job")
}

fn kill_group(child: &mut Child) {
    // `--` so procps kill reads `-<pgid>` as a process group, not a signal.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--"])
        .arg(format!("-{}", child.id()))
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// `COUNT> +U[3, 17]` → (kind, key, count).
fn counts(log: &Path) -> Vec<(String, i64, i64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("COUNT> ")?;
            let (kind, body) = rest.split_once('[')?;
            let (k, n) = body.trim_end_matches(']').split_once(", ")?;
            Some((
                kind.to_string(),
                k.trim().parse().ok()?,
                n.trim().parse().ok()?,
            ))
        })
        .collect()
}

fn complete_checkpoints(dir: &Path) -> usize {
    let Ok(jobs) = std::fs::read_dir(dir) else {
        return 0;
    };
    jobs.flatten()
        .filter_map(|j| std::fs::read_dir(j.path()).ok())
        .flat_map(|e| e.flatten())
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("chk-")
                && e.path().join("_metadata").is_file()
        })
        .count()
}

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
    let mut job = start_job(&python, &src, None, &log_before);
    let deadline = Instant::now() + Duration::from_secs(120);
    while complete_checkpoints(&src) < 3 || Instant::now() < deadline - Duration::from_secs(110) {
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
    let mut restored = start_job(&python, &after, Some(&pointer), &log_after);
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
