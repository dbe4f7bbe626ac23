//! One savepoint copied to the other site's storage for a planned move: every file arrives
//! verified below the same path, `_metadata` is rewritten so an absolute reference into the
//! source's storage names the target's, and a savepoint outside the site's storage is refused
//! with a typed error naming it.

mod common;

use common::{Ref, metadata_v6_refs, url};
use hdfs_sync::savepoint::copy_savepoint;
use hdfs_sync::{CheckpointMetadata, SyncError};

#[tokio::test]
async fn a_savepoint_is_copied_whole_to_the_same_path_and_its_absolute_references_follow() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    let savepoint = from
        .path()
        .join("flink/shop/orders/savepoints/savepoint-1a2b");
    std::fs::create_dir_all(savepoint.join("nested")).unwrap();
    std::fs::write(savepoint.join("state-1"), vec![7u8; 4096]).unwrap();
    std::fs::write(savepoint.join("nested/state-2"), b"two").unwrap();
    let absolute = url(&savepoint.join("state-1")).to_flink_string();
    let metadata = metadata_v6_refs(
        9,
        &[
            Ref::Absolute(absolute.clone(), 4096),
            Ref::Relative("nested/state-2".into(), 3),
        ],
    );
    std::fs::write(savepoint.join("_metadata"), &metadata).unwrap();

    let copy = copy_savepoint(&url(&savepoint), &url(from.path()), &url(to.path()))
        .await
        .unwrap();

    let copied = to
        .path()
        .join("flink/shop/orders/savepoints/savepoint-1a2b");
    assert_eq!(copy, url(&copied));
    assert_eq!(
        std::fs::read(copied.join("state-1")).unwrap(),
        vec![7u8; 4096]
    );
    assert_eq!(
        std::fs::read(copied.join("nested/state-2")).unwrap(),
        b"two"
    );
    let written = std::fs::read(copied.join("_metadata")).unwrap();
    let parsed = CheckpointMetadata::parse(&written, "copied _metadata").unwrap();
    let paths: Vec<&str> = parsed.handles.iter().map(|h| h.path.as_str()).collect();
    let moved = url(&copied.join("state-1")).to_flink_string();
    assert!(paths.contains(&moved.as_str()), "{paths:?}");
    assert!(
        !paths.contains(&absolute.as_str()),
        "no reference left into the source: {paths:?}"
    );
    assert!(
        paths.contains(&"nested/state-2"),
        "relative references pass through: {paths:?}"
    );
}

#[tokio::test]
async fn a_savepoint_outside_the_sites_storage_is_refused_naming_it() {
    let from = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    let error = copy_savepoint(&url(elsewhere.path()), &url(from.path()), &url(to.path()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, SyncError::SavepointOutsideRoot { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("is not below the site's storage root"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_dir(to.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[tokio::test]
async fn a_savepoint_without_metadata_leaves_no_metadata_at_the_target() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    let savepoint = from.path().join("savepoints/savepoint-x");
    std::fs::create_dir_all(&savepoint).unwrap();
    std::fs::write(savepoint.join("state-1"), b"data").unwrap();
    let error = copy_savepoint(&url(&savepoint), &url(from.path()), &url(to.path()))
        .await
        .unwrap_err();
    assert_eq!(
        error.storage_kind(),
        Some(hdfs_sync::StorageErrorKind::NotFound),
        "{error}"
    );
    assert!(!to.path().join("savepoints/savepoint-x/_metadata").exists());
}
