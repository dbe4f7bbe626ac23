//! A process that stops at once must still leave no temporary file behind (issue #13: a
//! SIGTERM test of `twinsite sync` found one, once, under a loaded parallel test run).
//!
//! The cause: a local writer removes its temporary file when it is dropped, and the tasks
//! holding writers are dropped by the runtime's worker threads during shutdown. The exit
//! waits for those threads only a short grace (a hung filesystem must not hold it), so a
//! worker the OS did not schedule within the grace never dropped its writer, and the file
//! stayed. Now the process-wide list of unfinished local writes is discarded by the exiting
//! thread itself. Its own binary: the discard refuses every later create in the process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdfs_sync::storage::{TEMP_SUFFIX, discard_unfinished_local_writes};
use hdfs_sync::{LocalStorage, Storage, StorageUrl};

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if path.to_string_lossy().ends_with(TEMP_SUFFIX) {
            found.push(path);
        }
    }
    found
}

#[test]
fn writers_a_starved_runtime_never_dropped_are_discarded_by_the_exiting_thread() {
    let dir = tempfile::tempdir().unwrap();
    let root = StorageUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
    let storage = LocalStorage::new(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // A copy part-way through a file, and a committed file beside it.
    let (copying_tx, copying_rx) = std::sync::mpsc::channel();
    let (storage_a, root_a) = (storage.clone(), root.clone());
    runtime.spawn(async move {
        let done = root_a.join("done.bin").unwrap();
        let mut writer = storage_a.create(&done).await.unwrap();
        writer.write(Bytes::from_static(b"whole")).await.unwrap();
        writer.commit().await.unwrap();
        let mut writer = storage_a
            .create(&root_a.join("job/chk-1/state.bin").unwrap())
            .await
            .unwrap();
        writer
            .write(Bytes::from_static(b"half of it"))
            .await
            .unwrap();
        copying_tx.send(()).unwrap();
        std::future::pending::<()>().await;
        drop(writer);
    });
    copying_rx.recv().unwrap();
    assert_eq!(temp_files(dir.path()).len(), 1);

    // The only worker is busy (as if the OS did not schedule it) past the exit's grace.
    runtime.spawn(async { std::thread::sleep(Duration::from_secs(2)) });
    std::thread::sleep(Duration::from_millis(50));
    runtime.shutdown_timeout(Duration::from_millis(250));
    assert_eq!(
        temp_files(dir.path()).len(),
        1,
        "the shutdown itself did not drop the writer: the race this test is about"
    );

    let started = Instant::now();
    assert_eq!(
        discard_unfinished_local_writes(Duration::from_millis(250)),
        1
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(
        std::fs::read(dir.path().join("done.bin")).unwrap(),
        b"whole"
    );

    // Nothing new is started once discarded: a create racing with the exit is refused.
    let after = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = after
        .block_on(storage.create(&root.join("late.bin").unwrap()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("stopping"), "{err}");
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}
