//! Checkpoints that reference files outside their own job directory: the native savepoint a
//! job was restored from in CLAIM mode, named by absolute URI (Flink with FLINK-39964) or
//! by a path relative to `chk-N/` where the file is not (Flink 2.3.0). Each site's storage
//! root holds `checkpoints/` (the replicated checkpoint root) and `savepoints/`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Ref, fast_options, local, metadata_v6_refs, url};
use hdfs_sync::metadata::HandleKind;
use hdfs_sync::{
    CheckpointMetadata, JobOutcome, MemoryLedger, ReplicationLedger, Replicator, SiteStorage,
    SyncOptions, UriMode,
};
use proptest::prelude::*;

const JOB: &str = "0123456789abcdef0123456789abcdef";
const SAVEPOINT: &str = "savepoints/savepoint-012345-6789abcdef01";

/// How the checkpoint names the savepoint's files.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Form {
    /// `file:/…/savepoints/…/x`, as Flink writes them since FLINK-39964.
    Absolute,
    /// `x`, relative to `chk-N/`, as Flink 2.3.0 writes them.
    Relative,
}

struct Sites {
    _tmp: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
}

impl Sites {
    fn new() -> Sites {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("site-a"), tmp.path().join("site-b"));
        std::fs::create_dir_all(a.join("checkpoints")).unwrap();
        std::fs::create_dir_all(b.join("checkpoints")).unwrap();
        Sites { _tmp: tmp, a, b }
    }

    fn side(root: &Path) -> SiteStorage {
        SiteStorage {
            storage: local(root),
            storage_root: url(root),
            checkpoint_root: url(&root.join("checkpoints")),
        }
    }

    fn replicator(&self, ledger: Arc<MemoryLedger>, options: SyncOptions) -> Replicator {
        Replicator::between(Self::side(&self.a), Self::side(&self.b), ledger, options).unwrap()
    }

    /// Options that tell where the job was restored from.
    fn knowing_the_savepoint(&self) -> SyncOptions {
        let mut options = fast_options();
        options
            .restored_from
            .insert(JOB.to_string(), url(&self.a.join(SAVEPOINT)));
        options
    }

    /// Writes the savepoint's files (`name`, bytes) at site A.
    fn savepoint(&self, files: &[(&str, usize)]) {
        let dir = self.a.join(SAVEPOINT);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, len) in files {
            std::fs::write(dir.join(name), content(name, *len)).unwrap();
        }
        std::fs::write(dir.join("_metadata"), b"the savepoint's own, never read").unwrap();
    }

    /// Writes `chk-<id>` of the job at site A: one private file of its own (relative), one
    /// new `shared/` file (absolute) and the savepoint's `files` in `form`.
    fn checkpoint(&self, id: u64, files: &[(&str, usize)], form: Form) -> Vec<Ref> {
        let job = self.a.join("checkpoints").join(JOB);
        let chk = job.join(format!("chk-{id}"));
        std::fs::create_dir_all(&chk).unwrap();
        std::fs::create_dir_all(job.join("shared")).unwrap();
        let own = format!("own-{id}");
        std::fs::write(chk.join(&own), content(&own, 30)).unwrap();
        let shared = format!("sst-{id}");
        std::fs::write(job.join("shared").join(&shared), content(&shared, 40)).unwrap();
        let mut refs = vec![
            Ref::Relative(own, 30),
            Ref::Absolute(format!("file:{}/shared/{shared}", job.display()), 40),
        ];
        for (name, len) in files {
            refs.push(match form {
                Form::Absolute => Ref::Absolute(
                    format!("file:{}/{name}", self.a.join(SAVEPOINT).display()),
                    *len as u64,
                ),
                Form::Relative => Ref::Relative(name.to_string(), *len as u64),
            });
        }
        std::fs::write(chk.join("_metadata"), metadata_v6_refs(id as i64, &refs)).unwrap();
        refs
    }

    fn peer_chk(&self, id: u64) -> PathBuf {
        self.b
            .join("checkpoints")
            .join(JOB)
            .join(format!("chk-{id}"))
    }
}

fn content(name: &str, len: usize) -> Vec<u8> {
    name.bytes().cycle().take(len).collect()
}

/// Every file the peer's `chk-<id>/_metadata` names, resolved, with its recorded size.
fn peer_references(sites: &Sites, id: u64) -> Vec<(HandleKind, PathBuf, u64)> {
    let chk = sites.peer_chk(id);
    let bytes = std::fs::read(chk.join("_metadata")).unwrap();
    let meta = CheckpointMetadata::parse(&bytes, "peer").unwrap();
    meta.file_handles()
        .map(|h| {
            let path = match h.kind {
                HandleKind::Relative => chk.join(&h.path),
                _ => PathBuf::from(h.path.strip_prefix("file:").unwrap()),
            };
            (h.kind, path, h.size)
        })
        .collect()
}

/// The peer's checkpoint is whole without site A: every file it names is at site B with its
/// recorded size (site A's storage is deleted first).
fn assert_restorable_without_site_a(sites: &Sites, id: u64) -> Vec<(HandleKind, PathBuf, u64)> {
    std::fs::remove_dir_all(&sites.a).unwrap();
    let refs = peer_references(sites, id);
    for (kind, path, size) in &refs {
        assert!(
            path.starts_with(&sites.b),
            "{kind:?} {} not at site B",
            path.display()
        );
        assert_eq!(
            std::fs::metadata(path).map(|m| m.len()).ok(),
            Some(*size),
            "{}",
            path.display()
        );
    }
    refs
}

fn replicated(outcome: &JobOutcome) -> (u64, u64) {
    match outcome {
        JobOutcome::Replicated {
            files_copied,
            files_reused,
            ..
        } => (*files_copied, *files_reused),
        other => panic!("not replicated: {other:?}"),
    }
}

#[tokio::test]
async fn savepoint_files_named_by_absolute_uri_go_to_the_same_path_below_the_peers_storage() {
    let sites = Sites::new();
    sites.savepoint(&[("sp-a", 100), ("sp-b", 200)]);
    sites.checkpoint(3, &[("sp-a", 100), ("sp-b", 200)], Form::Absolute);
    let ledger = Arc::new(MemoryLedger::default());
    // Nothing needs to say where the job was restored from: the URIs say it.
    let report = sites
        .replicator(ledger.clone(), fast_options())
        .run_once()
        .await
        .unwrap();
    assert_eq!(replicated(&report.jobs[JOB]), (4, 0));
    let refs = assert_restorable_without_site_a(&sites, 3);
    let in_savepoint: Vec<&PathBuf> = refs
        .iter()
        .filter(|(_, p, _)| p.starts_with(sites.b.join(SAVEPOINT)))
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(in_savepoint.len(), 2, "{refs:?}");
    // The savepoint's own `_metadata` is not a file of the checkpoint.
    assert!(!sites.b.join(SAVEPOINT).join("_metadata").exists());
    assert_eq!(ledger.replicated(JOB).await.unwrap().len(), 1);
}

#[tokio::test]
async fn flink_2_3_relative_names_of_savepoint_files_are_found_where_the_job_was_restored_from() {
    let sites = Sites::new();
    sites.savepoint(&[("sp-a", 100), ("sp-b", 200)]);
    sites.checkpoint(3, &[("sp-a", 100), ("sp-b", 200)], Form::Relative);
    let ledger = Arc::new(MemoryLedger::default());
    let report = sites
        .replicator(ledger.clone(), sites.knowing_the_savepoint())
        .run_once()
        .await
        .unwrap();
    assert_eq!(replicated(&report.jobs[JOB]), (4, 0));
    let refs = assert_restorable_without_site_a(&sites, 3);
    let kinds: Vec<(HandleKind, String)> = refs
        .iter()
        .map(|(k, p, _)| {
            let below = p.strip_prefix(&sites.b).unwrap().display().to_string();
            (*k, below)
        })
        .collect();
    let chk = format!("checkpoints/{JOB}/chk-3");
    assert_eq!(
        kinds,
        [
            // The checkpoint's own file stays relative: it moved with `chk-3/`.
            (HandleKind::Relative, format!("{chk}/own-3")),
            (HandleKind::File, format!("checkpoints/{JOB}/shared/sst-3")),
            // The savepoint's, named relative to a directory they are not in, now by URI.
            (HandleKind::File, format!("{SAVEPOINT}/sp-a")),
            (HandleKind::File, format!("{SAVEPOINT}/sp-b")),
        ]
    );
}

#[tokio::test]
async fn both_ways_flink_names_savepoint_files_give_the_same_peer_metadata() {
    let mut peer_metadata = Vec::new();
    for form in [Form::Absolute, Form::Relative] {
        let sites = Sites::new();
        sites.savepoint(&[("sp-a", 100)]);
        sites.checkpoint(3, &[("sp-a", 100)], form);
        let ledger = Arc::new(MemoryLedger::default());
        let report = sites
            .replicator(ledger, sites.knowing_the_savepoint())
            .run_once()
            .await
            .unwrap();
        replicated(&report.jobs[JOB]);
        let bytes = std::fs::read(sites.peer_chk(3).join("_metadata")).unwrap();
        // Temporary directories differ in name, not in length: mask site B's.
        let text = String::from_utf8_lossy(&bytes).replace(&*sites.b.to_string_lossy(), "<B>");
        peer_metadata.push(text);
    }
    assert_eq!(peer_metadata[0], peer_metadata[1]);
}

#[tokio::test]
async fn without_the_restored_from_directory_relative_names_outside_chk_are_refused_by_name() {
    let sites = Sites::new();
    sites.savepoint(&[("sp-a", 100)]);
    sites.checkpoint(3, &[("sp-a", 100)], Form::Relative);
    let ledger = Arc::new(MemoryLedger::default());
    let report = sites
        .replicator(ledger.clone(), fast_options())
        .run_once()
        .await
        .unwrap();
    match &report.jobs[JOB] {
        JobOutcome::Failed { error, label, .. } => {
            assert_eq!(*label, "unresolved_reference", "{error}");
            for needle in ["`sp-a`", "chk-3", "FLINK-39964", "restored_from"] {
                assert!(error.contains(needle), "{needle} not in {error}");
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(ledger.replicated(JOB).await.unwrap().is_empty());
    assert!(
        !sites.peer_chk(3).exists(),
        "a refused checkpoint left its chk-3 at the peer"
    );
}

#[tokio::test]
async fn a_file_of_another_size_where_the_job_was_restored_from_is_not_taken_for_the_one_named() {
    let sites = Sites::new();
    sites.savepoint(&[("sp-a", 99)]);
    sites.checkpoint(3, &[("sp-a", 100)], Form::Relative);
    let ledger = Arc::new(MemoryLedger::default());
    let report = sites
        .replicator(ledger.clone(), sites.knowing_the_savepoint())
        .run_once()
        .await
        .unwrap();
    match &report.jobs[JOB] {
        JobOutcome::Failed { error, label, .. } => {
            assert_eq!(*label, "unresolved_reference", "{error}");
            assert!(
                error.contains("recorded 100 bytes") && error.contains("99 bytes there"),
                "{error}"
            );
            assert!(error.contains(SAVEPOINT), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(ledger.replicated(JOB).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reference_outside_the_storage_root_is_still_refused() {
    let sites = Sites::new();
    let elsewhere = sites.a.parent().unwrap().join("not-a-site");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("x"), b"outside").unwrap();
    let chk = sites.a.join("checkpoints").join(JOB).join("chk-1");
    std::fs::create_dir_all(&chk).unwrap();
    let refs = [Ref::Absolute(format!("file:{}/x", elsewhere.display()), 7)];
    std::fs::write(chk.join("_metadata"), metadata_v6_refs(1, &refs)).unwrap();
    let report = sites
        .replicator(Arc::new(MemoryLedger::default()), fast_options())
        .run_once()
        .await
        .unwrap();
    match &report.jobs[JOB] {
        JobOutcome::Failed { error, label, .. } => {
            assert_eq!(*label, "reference_outside_root", "{error}");
            assert!(error.contains(&*sites.a.to_string_lossy()), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!sites.peer_chk(1).exists());
}

#[tokio::test]
async fn without_storage_roots_a_savepoint_beside_the_checkpoint_root_is_outside_it() {
    let sites = Sites::new();
    sites.savepoint(&[("sp-a", 100)]);
    sites.checkpoint(3, &[("sp-a", 100)], Form::Absolute);
    let (from, to) = (sites.a.join("checkpoints"), sites.b.join("checkpoints"));
    let replicator = Replicator::new(
        local(&from),
        url(&from),
        local(&to),
        url(&to),
        Arc::new(MemoryLedger::default()),
        fast_options(),
    );
    let report = replicator.run_once().await.unwrap();
    assert!(
        matches!(&report.jobs[JOB], JobOutcome::Failed { label, .. } if *label == "reference_outside_root"),
        "{:?}",
        report.jobs[JOB]
    );
}

#[tokio::test]
async fn the_savepoint_files_are_copied_once_and_reused_by_later_checkpoints() {
    for form in [Form::Absolute, Form::Relative] {
        let sites = Sites::new();
        sites.savepoint(&[("sp-a", 100), ("sp-b", 200)]);
        let ledger = Arc::new(MemoryLedger::default());
        let replicator = sites.replicator(ledger.clone(), sites.knowing_the_savepoint());
        sites.checkpoint(3, &[("sp-a", 100), ("sp-b", 200)], form);
        assert_eq!(
            replicated(&replicator.run_once().await.unwrap().jobs[JOB]),
            (4, 0)
        );
        // chk-4 drops sp-b (compacted away) and keeps sp-a: only its own two files are new.
        sites.checkpoint(4, &[("sp-a", 100)], form);
        assert_eq!(
            replicated(&replicator.run_once().await.unwrap().jobs[JOB]),
            (2, 1),
            "{form:?}"
        );
        assert_restorable_without_site_a(&sites, 4);
    }
}

#[tokio::test]
async fn in_shared_nameservice_mode_relative_names_outside_chk_become_the_uris_both_sites_read() {
    let sites = Sites::new();
    sites.savepoint(&[("sp-a", 100)]);
    sites.checkpoint(3, &[("sp-a", 100)], Form::Relative);
    let options = SyncOptions {
        uri_mode: UriMode::SharedNameservice,
        ..sites.knowing_the_savepoint()
    };
    let report = sites
        .replicator(Arc::new(MemoryLedger::default()), options)
        .run_once()
        .await
        .unwrap();
    replicated(&report.jobs[JOB]);
    let refs = peer_references(&sites, 3);
    let savepoint_file = sites.a.join(SAVEPOINT).join("sp-a");
    assert!(
        refs.iter()
            .any(|(k, p, _)| *k == HandleKind::File && *p == savepoint_file),
        "{refs:?}"
    );
    // The file is at the same path below the peer's storage, where the nameservice leads.
    assert!(sites.b.join(SAVEPOINT).join("sp-a").is_file());
}

#[test]
fn storage_roots_must_hold_their_checkpoint_roots_and_the_restored_from_directories() {
    let sites = Sites::new();
    let ledger = || Arc::new(MemoryLedger::default());
    let mut wrong = Sites::side(&sites.a);
    wrong.checkpoint_root = url(&sites.b.join("checkpoints"));
    let err = Replicator::between(wrong, Sites::side(&sites.b), ledger(), fast_options())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("checkpoint root") && err.contains("storage root"),
        "{err}"
    );

    let mut options = fast_options();
    options
        .restored_from
        .insert(JOB.into(), url(&sites.b.join(SAVEPOINT)));
    let err = Replicator::between(
        Sites::side(&sites.a),
        Sites::side(&sites.b),
        ledger(),
        options,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("restored_from") && err.contains(JOB), "{err}");
}

/// Any mix of the job's own files, `shared/` files and savepoint files in either form.
fn mixes() -> impl Strategy<Value = Vec<(bool, usize)>> {
    // (relative form?, length) per savepoint file
    prop::collection::vec((any::<bool>(), 1usize..300), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever mix of forms a checkpoint uses, its peer copy names only files at the peer,
    /// each there with its recorded size, at the same path below the peer's storage root as
    /// below the source's, and nothing of site A is needed any more.
    #[test]
    fn a_replicated_checkpoint_needs_nothing_of_the_source_site(mix in mixes()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let sites = Sites::new();
        let names: Vec<String> = (0..mix.len()).map(|i| format!("sp-{i}")).collect();
        let files: Vec<(&str, usize)> =
            names.iter().zip(&mix).map(|(n, (_, len))| (n.as_str(), *len)).collect();
        sites.savepoint(&files);
        // Per file its own form: write the absolute ones, then flip the relative ones.
        let refs = sites.checkpoint(5, &files, Form::Absolute);
        let refs: Vec<Ref> = refs
            .into_iter()
            .enumerate()
            .map(|(i, r)| match (i.checked_sub(2).and_then(|j| mix.get(j)), r) {
                (Some((true, len)), _) => Ref::Relative(names[i - 2].clone(), *len as u64),
                (_, r) => r,
            })
            .collect();
        let chk = sites.a.join("checkpoints").join(JOB).join("chk-5");
        std::fs::write(chk.join("_metadata"), metadata_v6_refs(5, &refs)).unwrap();
        let source_refs: Vec<(HandleKind, PathBuf, u64)> = {
            let bytes = std::fs::read(chk.join("_metadata")).unwrap();
            let meta = CheckpointMetadata::parse(&bytes, "source").unwrap();
            meta.file_handles().map(|h| {
                let path = match h.kind {
                    HandleKind::Relative if chk.join(&h.path).exists() => chk.join(&h.path),
                    HandleKind::Relative => sites.a.join(SAVEPOINT).join(&h.path),
                    _ => PathBuf::from(h.path.strip_prefix("file:").unwrap()),
                };
                (h.kind, path, h.size)
            }).collect()
        };
        let report = runtime
            .block_on(sites.replicator(Arc::new(MemoryLedger::default()), sites.knowing_the_savepoint()).run_once())
            .unwrap();
        replicated(&report.jobs[JOB]);
        let peer_refs = assert_restorable_without_site_a(&sites, 5);
        prop_assert_eq!(peer_refs.len(), source_refs.len());
        for ((_, src, src_size), (_, peer, peer_size)) in source_refs.iter().zip(&peer_refs) {
            prop_assert_eq!(src.strip_prefix(&sites.a).unwrap(), peer.strip_prefix(&sites.b).unwrap());
            prop_assert_eq!(src_size, peer_size);
        }
    }
}
