//! One behavioural suite for the `Storage` trait, run against every backend that can run
//! here: the local filesystem, and the fault wrapper with no faults armed. (`HdfsStorage` needs
//! a NameNode; see the README for its untested surface.)

use std::sync::Arc;

use bytes::Bytes;
use hdfs_sync::fault::FaultyStorage;
use hdfs_sync::{LocalStorage, Storage, StorageErrorKind, StorageUrl};

async fn conformance(storage: &dyn Storage, root: &StorageUrl) {
    let file = root.join("a/b/file.bin").unwrap();
    // Missing things: stat says None, open and list say NotFound, delete is a no-op.
    assert_eq!(storage.stat(&file).await.unwrap(), None);
    let err = storage.open_read(&file).await.err().unwrap();
    assert_eq!(err.kind, StorageErrorKind::NotFound);
    assert!(err.to_string().contains("file.bin"), "{err}");
    assert_eq!(
        storage
            .list(&root.join("nope").unwrap())
            .await
            .unwrap_err()
            .kind,
        StorageErrorKind::NotFound
    );
    storage.delete(&file).await.unwrap();

    // A write is invisible until committed, then visible whole; parents are created.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut writer = storage.create(&file).await.unwrap();
    writer
        .write(Bytes::from(data[..1_000_000].to_vec()))
        .await
        .unwrap();
    writer
        .write(Bytes::from(data[1_000_000..].to_vec()))
        .await
        .unwrap();
    assert_eq!(
        storage.stat(&file).await.unwrap(),
        None,
        "visible before commit"
    );
    writer.commit().await.unwrap();
    let meta = storage.stat(&file).await.unwrap().unwrap();
    assert_eq!((meta.len, meta.is_dir), (data.len() as u64, false));
    assert!(meta.modified.is_some());
    assert_eq!(storage.read_all(&file).await.unwrap(), data);

    // Chunks a caller keeps stay intact while later ones are read (buffers are recycled).
    let mut reader = storage.open_read(&file).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        chunks.push(chunk);
    }
    assert!(chunks.len() > 1, "3 MB should take several chunks");
    assert_eq!(chunks.concat(), data);

    // The directory lists the file and no temporary leftovers.
    let dir = root.join("a/b").unwrap();
    let names: Vec<String> = storage
        .list(&dir)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["file.bin"]);

    // An aborted write leaves the old content and no temporary file.
    let mut writer = storage.create(&file).await.unwrap();
    writer.write(Bytes::from_static(b"partial")).await.unwrap();
    writer.abort().await;
    assert_eq!(storage.read_all(&file).await.unwrap().len(), data.len());
    assert_eq!(storage.list(&dir).await.unwrap().len(), 1);

    // Commit replaces an existing file.
    storage
        .write_all(&file, Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert_eq!(storage.read_all(&file).await.unwrap(), b"new");

    // mkdirs, then recursive delete.
    let empty = root.join("a/empty/deeper").unwrap();
    storage.mkdirs(&empty).await.unwrap();
    assert!(storage.stat(&empty).await.unwrap().unwrap().is_dir);
    storage.delete(&root.join("a").unwrap()).await.unwrap();
    assert_eq!(storage.stat(&file).await.unwrap(), None);
}

#[tokio::test]
async fn the_local_backend_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    conformance(
        &LocalStorage::new(tmp.path()),
        &StorageUrl::local(tmp.path()).unwrap(),
    )
    .await;
}

#[tokio::test]
async fn a_local_writer_dropped_before_commit_leaves_no_temporary_file() {
    // What a sync cancelled by Ctrl-C does to the files it was writing.
    let tmp = tempfile::tempdir().unwrap();
    let root = StorageUrl::local(tmp.path()).unwrap();
    let file = root.join("chk-1/data.bin").unwrap();
    let local = LocalStorage::new(tmp.path());
    let mut writer = local.create(&file).await.unwrap();
    writer.write(Bytes::from_static(b"half")).await.unwrap();
    assert_eq!(
        local
            .list(&root.join("chk-1").unwrap())
            .await
            .unwrap()
            .len(),
        1
    );
    drop(writer);
    assert_eq!(local.list(&root.join("chk-1").unwrap()).await.unwrap(), []);
}

#[tokio::test]
async fn the_fault_wrapper_without_faults_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new(Arc::new(LocalStorage::new(tmp.path())));
    conformance(&storage, &StorageUrl::local(tmp.path()).unwrap()).await;
}
