//! Properties of the `_metadata` parser and rewrite: no input makes the parser panic, and a
//! rewrite to another root and back restores Flink's bytes exactly.

mod common;

use common::metadata_v6;
use hdfs_sync::CheckpointMetadata;
use proptest::prelude::*;

fn files(root: &str, names: &[String]) -> Vec<(String, u64)> {
    names
        .iter()
        .map(|n| (format!("{root}/job/shared/{n}"), 10))
        .collect()
}

proptest! {
    #[test]
    fn corrupting_any_byte_never_panics_the_parser(
        names in proptest::collection::vec("[a-z0-9-]{1,20}", 0..6),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = metadata_v6(4, &files("file:/src", &names));
        let i = at.index(bytes.len());
        bytes[i] = value;
        let _ = CheckpointMetadata::parse(&bytes, "fuzzed");
    }

    #[test]
    fn rewriting_to_another_root_and_back_restores_the_original_bytes(
        names in proptest::collection::vec("[a-zA-Z0-9._-]{1,30}", 1..8),
        peer in "[a-z]{1,12}(/[a-zé😀]{1,8}){0,3}",
    ) {
        let original = metadata_v6(9, &files("file:/src", &names));
        let meta = CheckpointMetadata::parse(&original, "m").unwrap();
        let peer_root = format!("hdfs://ns-b/{peer}");
        let there = meta.rewrite_uris(&original, |p| p.strip_prefix("file:/src").map(|r| format!("{peer_root}{r}"))).unwrap();
        let there_meta = CheckpointMetadata::parse(&there, "there").unwrap();
        prop_assert!(there_meta.file_handles().all(|h| h.path.starts_with(&peer_root)));
        let back = there_meta.rewrite_uris(&there, |p| p.strip_prefix(&peer_root).map(|r| format!("file:/src{r}"))).unwrap();
        prop_assert_eq!(back, original);
    }
}
