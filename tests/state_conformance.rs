//! One conformance suite for every `StateStore` implementation (openraft's `testing/log/suite`
//! pattern): each case below runs against the embedded store and against a real etcd.
//! Store-specific behaviour (durability across reopen, the directory lock, fencing without
//! leadership) follows the suite.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use twinsite::leader::{LeaderElector, Leadership};
use twinsite::state::{
    AuditEntry, CheckpointKind, CheckpointPointer, EmbeddedStateStore, EtcdConfig, EtcdStateStore,
    EtcdTls, Expected, JobPhase, JobPlacement, JobRecord, JobStatus, KeyLayout, KvBackend,
    KvStateStore, RecordKind, SiteRecord, SiteState, StateError, StateStore, connect_etcd,
};

fn job(name: &str) -> JobRecord {
    let yaml = format!(
        "apiVersion: twinsite.io/v1alpha1\nkind: StreamJob\nmetadata: {{name: {name}, namespace: team-a}}\n\
         spec:\n  priority: normal\n  image: flink:2.0.0\n  flinkVersion: v2_0\n  jarURI: hdfs:///jars/{name}.jar\n  \
         parallelism: 4\n  jobManager: {{resources: {{cpu: \"1\", memory: 2Gi}}}}\n  \
         taskManager: {{resources: {{cpu: \"1\", memory: 2Gi}}, slots: 1}}\n  \
         checkpoints: {{dir: \"hdfs:///flink/checkpoints/team-a/{name}\", interval: 30s}}\n"
    );
    let spec = scheduler::input::parse_stream_jobs("conformance", &yaml)
        .unwrap()
        .remove(0);
    JobRecord {
        namespace: "team-a".to_owned(),
        name: name.to_owned(),
        spec: spec.into(),
        generation: 0,
        placement: None,
        status: JobStatus::pending("accepted"),
    }
}

fn running() -> JobStatus {
    JobStatus {
        phase: JobPhase::Running,
        ..JobStatus::pending("running")
    }
}

fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        actor: "ops@example".to_owned(),
        action: action.to_owned(),
        target: "site/east".to_owned(),
        at_unix_ms: 1_700_000_000_000,
        result: "ok".to_owned(),
    }
}

fn collect_json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
}

/// The cases, each a plain async fn over `&dyn StateStore`.
mod suite {
    use super::*;

    pub async fn jobs_are_created_read_listed_and_deleted(store: &dyn StateStore) {
        assert!(store.get_job("team-a", "etl").await.unwrap().is_none());
        let created = store.put_job(&job("etl"), Expected::Absent).await.unwrap();
        let mut placed = job("billing");
        placed.placement = Some(JobPlacement {
            site: "east".to_owned(),
            detail: Some(
                serde_json::from_value(json!({"job": "team-a/billing", "site": "east",
                    "pods": [{"role": "jobmanager", "index": 0, "node": "node-1"}]}))
                .unwrap(),
            ),
        });
        store.put_job(&placed, Expected::Any).await.unwrap();

        let read = store.get_job("team-a", "etl").await.unwrap().unwrap();
        assert_eq!(read.value, job("etl"));
        assert_eq!(read.revision, created);
        let names: Vec<String> = store
            .list_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.value.name)
            .collect();
        assert_eq!(names, ["billing", "etl"]);
        let listed_placement = store.get_job("team-a", "billing").await.unwrap().unwrap();
        assert_eq!(listed_placement.value.placement, placed.placement);

        assert!(
            store
                .delete_job("team-a", "etl", Expected::Any)
                .await
                .unwrap()
        );
        assert!(
            !store
                .delete_job("team-a", "etl", Expected::Any)
                .await
                .unwrap()
        );
        assert!(store.get_job("team-a", "etl").await.unwrap().is_none());
    }

    pub async fn a_write_with_a_stale_revision_conflicts_and_names_the_key(store: &dyn StateStore) {
        let first = store.put_job(&job("etl"), Expected::Absent).await.unwrap();
        let mut update = job("etl");
        update.status = running();
        let second = store
            .put_job(&update, Expected::Revision(first))
            .await
            .unwrap();
        assert!(second > first, "revisions increase: {first} then {second}");

        let err = store
            .put_job(&job("etl"), Expected::Revision(first))
            .await
            .unwrap_err();
        match &err {
            StateError::Conflict {
                key,
                expected,
                actual,
            } => {
                assert!(key.ends_with("/jobs/team-a/etl"), "{key}");
                assert_eq!(*expected, Some(first));
                assert_eq!(*actual, Some(second));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(err.to_string().contains("team-a/etl"), "{err}");
        let stored = store.get_job("team-a", "etl").await.unwrap().unwrap();
        assert_eq!(stored.value.status, running());

        let create_again = store.put_job(&job("etl"), Expected::Absent).await;
        assert!(matches!(
            create_again,
            Err(StateError::Conflict { expected: None, .. })
        ));
        let delete_stale = store
            .delete_job("team-a", "etl", Expected::Revision(first))
            .await;
        assert!(matches!(delete_stale, Err(StateError::Conflict { .. })));
    }

    pub async fn concurrent_generation_bumps_are_never_lost(store: &dyn StateStore) {
        store.put_job(&job("etl"), Expected::Absent).await.unwrap();
        let bumps = 12;
        let generations: Vec<u64> = futures::future::join_all(
            (0..bumps).map(|_| async { store.bump_generation("team-a", "etl").await }),
        )
        .await
        .into_iter()
        .map(|r| r.unwrap().value.generation)
        .collect();
        let mut sorted = generations.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=bumps).collect::<Vec<u64>>(), "{generations:?}");
        let stored = store.get_job("team-a", "etl").await.unwrap().unwrap();
        assert_eq!(stored.value.generation, bumps);

        let missing = store.bump_generation("team-a", "nope").await.unwrap_err();
        assert!(
            matches!(missing, StateError::NotFound { ref key } if key.ends_with("/team-a/nope"))
        );
    }

    pub async fn a_site_epoch_never_decreases(store: &dyn StateStore) {
        let site = |epoch, state| SiteRecord {
            site: "east".to_owned(),
            epoch,
            state,
            detail: json!({}),
        };
        store.put_site(&site(3, SiteState::Active)).await.unwrap();
        store.put_site(&site(3, SiteState::Lost)).await.unwrap();
        let err = store
            .put_site(&site(2, SiteState::Active))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StateError::EpochRegression {
                    stored: 3,
                    offered: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("/sites/east"), "{err}");
        store.put_site(&site(4, SiteState::Lost)).await.unwrap();
        store
            .put_site(&SiteRecord {
                site: "west".to_owned(),
                epoch: 1,
                state: SiteState::Active,
                detail: json!(null),
            })
            .await
            .unwrap();

        let east = store.get_site("east").await.unwrap().unwrap().value;
        assert_eq!((east.epoch, east.state), (4, SiteState::Lost));
        let sites: Vec<String> = store
            .list_sites()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.value.site)
            .collect();
        assert_eq!(sites, ["east", "west"]);
    }

    pub async fn audit_sequence_numbers_increase_in_append_order(store: &dyn StateStore) {
        let mut seqs = Vec::new();
        for action in ["switchover", "failback", "cordon"] {
            seqs.push(store.append_audit(&audit(action)).await.unwrap());
        }
        assert_eq!(seqs, [1, 2, 3]);
        let concurrent: Vec<u64> = futures::future::join_all(
            (0..8).map(|i| async move { (i, store.append_audit(&audit("relaunch")).await) }),
        )
        .await
        .into_iter()
        .map(|(_, r)| r.unwrap())
        .collect();
        let mut sorted = concurrent.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (4..=11).collect::<Vec<u64>>(), "{concurrent:?}");

        let all = store.list_audit(1, 0).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=11).collect::<Vec<u64>>()
        );
        assert_eq!(all[1].entry, audit("failback"));
        let page = store.list_audit(3, 2).await.unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(page[0].entry.action, "cordon");
    }

    pub async fn a_batch_of_audit_entries_keeps_its_order_and_loses_none_to_a_racing_appender(
        store: &dyn StateStore,
    ) {
        store.append_audit(&audit("before")).await.unwrap();
        let batch = |tag: &str| -> Vec<AuditEntry> {
            (0..10).map(|i| audit(&format!("{tag}-{i}"))).collect()
        };
        store.append_audits(&batch("alone")).await.unwrap();
        let all = store.list_audit(1, 0).await.unwrap();
        let actions: Vec<&str> = all.iter().map(|r| r.entry.action.as_str()).collect();
        let expected: Vec<String> = std::iter::once("before".to_string())
            .chain((0..10).map(|i| format!("alone-{i}")))
            .collect();
        assert_eq!(actions, expected);
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=11).collect::<Vec<u64>>()
        );

        let single = audit("single");
        let raced = batch("raced");
        let (batched, singles) = futures::join!(
            store.append_audits(&raced),
            futures::future::join_all((0..5).map(|_| store.append_audit(&single))),
        );
        batched.unwrap();
        for seq in singles {
            seq.unwrap();
        }
        let all = store.list_audit(1, 0).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=26).collect::<Vec<u64>>(),
            "every entry has its own number"
        );
        let count = |prefix: &str| {
            all.iter()
                .filter(|r| r.entry.action.starts_with(prefix))
                .count()
        };
        assert_eq!((count("raced-"), count("single")), (10, 5));
        store.append_audits(&[]).await.unwrap();
        assert_eq!(store.list_audit(1, 0).await.unwrap().len(), 26);
    }

    pub async fn checkpoint_pointers_are_kept_per_kind_and_site(store: &dyn StateStore) {
        let pointer = |id: u64, site: &str| CheckpointPointer {
            checkpoint_id: id,
            uri: format!("hdfs://{site}/flink/checkpoints/etl/chk-{id}"),
            recorded_at_unix_ms: 1_700_000_000_000 + id as i64,
        };
        let (completed, replicated) = (CheckpointKind::Completed, CheckpointKind::Replicated);
        store
            .put_checkpoint("team-a", "etl", completed, "east", &pointer(41, "east"))
            .await
            .unwrap();
        store
            .put_checkpoint("team-a", "etl", completed, "east", &pointer(42, "east"))
            .await
            .unwrap();
        store
            .put_checkpoint("team-a", "etl", replicated, "west", &pointer(40, "west"))
            .await
            .unwrap();

        let latest = store
            .get_checkpoint("team-a", "etl", completed, "east")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.value.checkpoint_id, 42);
        assert!(
            store
                .get_checkpoint("team-a", "etl", replicated, "east")
                .await
                .unwrap()
                .is_none()
        );
        let entries = store.list_checkpoints("team-a", "etl").await.unwrap();
        let summary: Vec<(CheckpointKind, &str, u64)> = entries
            .iter()
            .map(|e| (e.kind, e.site.as_str(), e.pointer.value.checkpoint_id))
            .collect();
        assert_eq!(summary, [(completed, "east", 42), (replicated, "west", 40)]);
        assert!(
            store
                .list_checkpoints("team-a", "other")
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn every_jobs_pointers_are_listed_in_one_read_across_pages(store: &dyn StateStore) {
        let pointer = |id: u64| CheckpointPointer {
            checkpoint_id: id,
            uri: format!("file:///x/chk-{id}"),
            recorded_at_unix_ms: 1_700_000_000_000,
        };
        // More pointers than one listing page (256), over many jobs and both kinds.
        for i in 0..150u64 {
            let name = format!("job-{i:03}");
            store
                .put_checkpoint(
                    "team-a",
                    &name,
                    CheckpointKind::Completed,
                    "east",
                    &pointer(i),
                )
                .await
                .unwrap();
            store
                .put_checkpoint(
                    "team-a",
                    &name,
                    CheckpointKind::Replicated,
                    "west",
                    &pointer(i + 1),
                )
                .await
                .unwrap();
        }
        store
            .put_checkpoint(
                "team-b",
                "etl",
                CheckpointKind::Replicated,
                "east",
                &pointer(9),
            )
            .await
            .unwrap();
        let all = store.list_all_checkpoints().await.unwrap();
        assert_eq!(all.len(), 301);
        let first = &all[0];
        assert_eq!(
            (
                first.namespace.as_str(),
                first.name.as_str(),
                first.entry.kind,
                first.entry.site.as_str()
            ),
            ("team-a", "job-000", CheckpointKind::Completed, "east")
        );
        let replicated_to_west = all
            .iter()
            .filter(|c| c.entry.kind == CheckpointKind::Replicated && c.entry.site == "west")
            .count();
        assert_eq!(replicated_to_west, 150);
        let last = all.last().unwrap();
        assert_eq!(
            (
                last.namespace.as_str(),
                last.entry.pointer.value.checkpoint_id
            ),
            ("team-b", 9)
        );
    }

    pub async fn listing_returns_every_job_across_pages(store: &dyn StateStore) {
        let count = 300; // more than one listing page
        futures::stream::iter(0..count)
            .map(|i| async move {
                store
                    .put_job(&job(&format!("job-{i:04}")), Expected::Absent)
                    .await
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .for_each(|r| {
                r.unwrap();
            });
        let names: Vec<String> = store
            .list_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.value.name)
            .collect();
        let expected: Vec<String> = (0..count).map(|i| format!("job-{i:04}")).collect();
        assert_eq!(names, expected);
    }

    /// Issue #13, finding 7: counters never wrap. A job at the largest generation cannot be
    /// launched again; the store says so instead of handing out generation 0.
    pub async fn a_generation_at_its_largest_is_refused_not_wrapped(store: &dyn StateStore) {
        let mut last = job("etl");
        last.generation = u64::MAX;
        let written = store.put_job(&last, Expected::Absent).await.unwrap();
        let err = store.bump_generation("team-a", "etl").await.unwrap_err();
        assert!(matches!(err, StateError::CounterLimit { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("/jobs/team-a/etl"), "{err}");
        let stored = store.get_job("team-a", "etl").await.unwrap().unwrap();
        assert_eq!(
            (stored.value.generation, stored.revision),
            (u64::MAX, written)
        );
    }

    /// An audit log whose last entry holds the largest sequence number refuses to append
    /// (single and batch), and keeps what it has.
    pub async fn an_audit_log_at_its_largest_sequence_refuses_to_append<B: KvBackend>(
        store: &KvStateStore<B>,
    ) {
        let last_key = store.layout().audit(u64::MAX);
        store
            .backend()
            .put(
                &last_key,
                serde_json::to_vec(&audit("last")).unwrap(),
                Expected::Absent,
            )
            .await
            .unwrap();
        let err = store.append_audit(&audit("one more")).await.unwrap_err();
        assert!(matches!(err, StateError::CounterLimit { .. }), "{err:?}");
        assert!(err.to_string().contains("audit sequence"), "{err}");
        let err = store
            .append_audits(&[audit("a"), audit("b")])
            .await
            .unwrap_err();
        assert!(matches!(err, StateError::CounterLimit { .. }), "{err:?}");
        let all = store.list_audit(1, 0).await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].seq, u64::MAX);
    }

    /// Writes `bytes` under `key` as an operator's hand (or another version) would: straight
    /// into the backend, past the typed layer.
    async fn put_raw<B: KvBackend>(store: &KvStateStore<B>, key: &str, bytes: &[u8]) {
        store
            .backend()
            .put(key, bytes.to_vec(), Expected::Any)
            .await
            .unwrap();
    }

    fn unreadable_keys(store: &dyn StateStore) -> Vec<String> {
        store
            .unreadable_records()
            .into_iter()
            .map(|u| u.key)
            .collect()
    }

    /// Issue #13: one job record that does not decode made every `list_jobs` fail, and so
    /// every reconcile pass. Now it is left out of the listing, reported apart with its key,
    /// its job and why, and a read of its key names it; rewriting or deleting it clears it.
    pub async fn job_records_that_do_not_decode_are_reported_apart_and_never_fail_a_listing<
        B: KvBackend,
    >(
        store: &KvStateStore<B>,
    ) {
        store.put_job(&job("etl"), Expected::Absent).await.unwrap();
        let jobs = "/twinsite/v1/jobs";
        put_raw(store, &format!("{jobs}/team-a/garbage"), b"not json {").await;
        put_raw(
            store,
            &format!("{jobs}/team-a/old-schema"),
            br#"{"namespace": 5}"#,
        )
        .await;
        let other = serde_json::to_vec(&job("billing")).unwrap();
        put_raw(store, &format!("{jobs}/team-a/elsewhere"), &other).await;
        let loose = serde_json::to_vec(&job("loose")).unwrap();
        put_raw(store, &format!("{jobs}/loose"), &loose).await;

        let scan = store.scan_jobs().await.unwrap();
        let names: Vec<&str> = scan.jobs.iter().map(|j| j.value.name.as_str()).collect();
        assert_eq!(names, ["etl"]);
        let reported: Vec<(&str, Option<(String, String)>)> = scan
            .unreadable
            .iter()
            .map(|u| (u.key.as_str(), u.job.clone()))
            .collect();
        let of = |name: &str| Some(("team-a".to_owned(), name.to_owned()));
        assert_eq!(
            reported,
            [
                ("/twinsite/v1/jobs/loose", None),
                ("/twinsite/v1/jobs/team-a/elsewhere", of("elsewhere")),
                ("/twinsite/v1/jobs/team-a/garbage", of("garbage")),
                ("/twinsite/v1/jobs/team-a/old-schema", of("old-schema")),
            ]
        );
        for (key, reason) in [
            ("/twinsite/v1/jobs/team-a/garbage", "record does not decode"),
            (
                "/twinsite/v1/jobs/team-a/old-schema",
                "invalid type: integer `5`",
            ),
            (
                "/twinsite/v1/jobs/team-a/elsewhere",
                "the record is of /twinsite/v1/jobs/team-a/billing, not of the key",
            ),
        ] {
            let unreadable = scan.unreadable.iter().find(|u| u.key == key).unwrap();
            assert!(unreadable.reason.contains(reason), "{unreadable:?}");
            assert!(unreadable.revision > 0, "{unreadable:?}");
        }
        assert_eq!(store.list_jobs().await.unwrap().len(), 1);
        assert_eq!(unreadable_keys(store).len(), 4);

        let err = store.get_job("team-a", "garbage").await.unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/twinsite/v1/jobs/team-a/garbage"),
            "{err}"
        );

        // Rewritten through the store, or deleted: no longer reported.
        store.put_job(&job("garbage"), Expected::Any).await.unwrap();
        assert!(
            store
                .delete_job("team-a", "old-schema", Expected::Any)
                .await
                .unwrap()
        );
        store
            .backend()
            .delete("/twinsite/v1/jobs/loose", Expected::Any)
            .await
            .unwrap();
        let scan = store.scan_jobs().await.unwrap();
        assert_eq!(scan.jobs.len(), 2);
        assert_eq!(scan.unreadable.len(), 1, "{:?}", scan.unreadable);
        assert_eq!(
            unreadable_keys(store),
            ["/twinsite/v1/jobs/team-a/elsewhere"]
        );
    }

    /// The records a controller of the previous schema (1, before `schemaVersion` existed)
    /// wrote, byte for byte (`tests/fixtures/store-v1/`), as an upgraded controller finds
    /// them: every one reads into the typed records, none is unreadable, and one rewritten
    /// through the store reads back the same, marked with today's schema.
    pub async fn records_written_by_schema_1_read_into_the_typed_records<B: KvBackend>(
        store: &KvStateStore<B>,
    ) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1");
        let mut files = Vec::new();
        collect_json_files(&fixtures, &mut files);
        assert_eq!(files.len(), 13, "{files:?}");
        for file in &files {
            let relative = file.strip_prefix(&fixtures).unwrap().to_str().unwrap();
            let key = format!("/twinsite/v1/{}", relative.trim_end_matches(".json"));
            put_raw(store, &key, &std::fs::read(file).unwrap()).await;
        }

        let scan = store.scan_jobs().await.unwrap();
        assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
        let names: Vec<&str> = scan.jobs.iter().map(|j| j.value.name.as_str()).collect();
        assert_eq!(names, ["clicks", "fresh", "orders"]);

        let orders = store
            .get_job("shop", "orders")
            .await
            .unwrap()
            .unwrap()
            .value;
        let spec = orders.spec.stream_job().unwrap();
        assert_eq!(
            (spec.spec.jar_uri.as_str(), spec.spec.parallelism),
            ("hdfs:///jars/orders.jar", 2)
        );
        assert_eq!(orders.generation, 1);
        let placement = orders.placement.clone().unwrap();
        let detail = placement.detail.as_ref().unwrap();
        assert_eq!((placement.site.as_str(), detail.pods.len()), ("dc-a", 3));
        assert_eq!(orders.status.phase, JobPhase::Running);
        assert_eq!(orders.status.last_checkpoint.as_ref().unwrap().id, 1);
        assert_eq!(
            orders.status.launched_spec.as_deref(),
            Some("00d171fad5e043ec7cbe6d0e")
        );
        assert!(!orders.status.rederived);

        // Schema 1 stored a new job's status as `null`.
        let fresh = store.get_job("shop", "fresh").await.unwrap().unwrap().value;
        assert_eq!((fresh.generation, fresh.placement), (0, None));
        assert!(fresh.status.is_accepted(), "{:?}", fresh.status);
        assert!(fresh.spec.stream_job().is_ok());

        let site = store.get_site("dc-b").await.unwrap().unwrap().value;
        assert_eq!((site.epoch, site.state), (3, SiteState::Lost));
        assert_eq!(site.detail, json!({"reason": "unreachable"}));
        let pointers = store.list_all_checkpoints().await.unwrap();
        assert_eq!(pointers.len(), 2, "{pointers:?}");
        assert_eq!(store.list_audit(1, 0).await.unwrap().len(), 5);
        let failover: Vec<String> = store
            .list_failover_records()
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(failover, ["job.shop.clicks", "job.shop.orders"]);
        assert!(
            store.unreadable_records().is_empty(),
            "{:?}",
            store.unreadable_records()
        );

        // Rewritten by this version: the same record, marked with its schema.
        let current = store.get_job("shop", "orders").await.unwrap().unwrap();
        store
            .put_job(&current.value, Expected::Revision(current.revision))
            .await
            .unwrap();
        let raw = store
            .backend()
            .get("/twinsite/v1/jobs/shop/orders")
            .await
            .unwrap()
            .unwrap();
        let written: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
        assert_eq!(written["schemaVersion"], twinsite::state::SCHEMA_VERSION);
        let v1: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures.join("jobs/shop/orders.json")).unwrap())
                .unwrap();
        for field in [
            "namespace",
            "name",
            "spec",
            "generation",
            "placement",
            "status",
        ] {
            assert_eq!(written[field], v1[field], "{field} changed in the rewrite");
        }
        let again = store
            .get_job("shop", "orders")
            .await
            .unwrap()
            .unwrap()
            .value;
        assert_eq!(again, current.value);
    }

    /// A record of a later schema is left alone, as an older controller must treat what it
    /// may misunderstand: reported with the reason, never acted on or rewritten.
    pub async fn a_record_of_a_later_schema_is_unreadable_naming_its_schema<B: KvBackend>(
        store: &KvStateStore<B>,
    ) {
        let mut later = serde_json::to_value(job("etl")).unwrap();
        later["schemaVersion"] = json!(twinsite::state::SCHEMA_VERSION + 1);
        put_raw(
            store,
            "/twinsite/v1/jobs/team-a/etl",
            later.to_string().as_bytes(),
        )
        .await;
        let mut site = serde_json::to_value(SiteRecord {
            site: "east".into(),
            epoch: 2,
            state: SiteState::Active,
            detail: json!(null),
        })
        .unwrap();
        site["schemaVersion"] = json!("two");
        put_raw(
            store,
            "/twinsite/v1/sites/east",
            site.to_string().as_bytes(),
        )
        .await;

        let scan = store.scan_jobs().await.unwrap();
        assert!(scan.jobs.is_empty(), "{:?}", scan.jobs);
        assert_eq!(scan.unreadable.len(), 1);
        let reason = &scan.unreadable[0].reason;
        assert!(
            reason.contains(&format!(
                "schemaVersion {}",
                twinsite::state::SCHEMA_VERSION + 1
            )) && reason.contains("newer twinsite"),
            "{reason}"
        );
        let err = store.get_site("east").await.unwrap_err();
        assert!(err.to_string().contains("schemaVersion \"two\""), "{err}");
        assert!(store.list_sites().await.unwrap().is_empty());
    }

    /// The other records a controller reads at start and in its passes: none that fails to
    /// decode fails a listing; each is reported with its kind.
    pub async fn unreadable_sites_pointers_failover_and_audit_records_are_left_out<B: KvBackend>(
        store: &KvStateStore<B>,
    ) {
        let prefix = "/twinsite/v1";
        let site = |name: &str, epoch| SiteRecord {
            site: name.to_owned(),
            epoch,
            state: SiteState::Active,
            detail: json!({}),
        };
        store.put_site(&site("west", 1)).await.unwrap();
        put_raw(store, &format!("{prefix}/sites/east"), b"\xff\xfe").await;
        let sites: Vec<String> = store
            .list_sites()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.value.site)
            .collect();
        assert_eq!(sites, ["west"]);
        let err = store.get_site("east").await.unwrap_err();
        assert!(err.to_string().contains("/twinsite/v1/sites/east"), "{err}");
        // Nobody can read its epoch; the failover engine's next write replaces it.
        store.put_site(&site("east", 3)).await.unwrap();
        assert_eq!(
            store.get_site("east").await.unwrap().unwrap().value.epoch,
            3
        );

        let pointer = CheckpointPointer {
            checkpoint_id: 7,
            uri: "hdfs://west/chk-7".to_owned(),
            recorded_at_unix_ms: 1,
        };
        store
            .put_checkpoint(
                "team-a",
                "etl",
                CheckpointKind::Replicated,
                "west",
                &pointer,
            )
            .await
            .unwrap();
        let checkpoints = format!("{prefix}/checkpoints/team-a/etl");
        put_raw(store, &format!("{checkpoints}/completed/east"), b"{}").await;
        let sideways = serde_json::to_vec(&pointer).unwrap();
        put_raw(store, &format!("{checkpoints}/sideways/east"), &sideways).await;
        let listed = store.list_checkpoints("team-a", "etl").await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].site, "west");
        assert!(
            store
                .get_checkpoint("team-a", "etl", CheckpointKind::Completed, "east")
                .await
                .is_err()
        );

        store
            .put_failover_record("site.west", &json!({"epoch": 1}))
            .await
            .unwrap();
        put_raw(
            store,
            &format!("{prefix}/failover/job.team-a.etl"),
            b"{\"half",
        )
        .await;
        let records = store.list_failover_records().await.unwrap();
        assert_eq!(records, [("site.west".to_owned(), json!({"epoch": 1}))]);

        store.append_audit(&audit("first")).await.unwrap();
        put_raw(store, &store.layout().audit(2), b"[1, 2]").await;
        let odd_key = format!("{prefix}/audit/zzz-written-by-hand");
        put_raw(store, &odd_key, &serde_json::to_vec(&audit("odd")).unwrap()).await;
        // The next sequence is one past the greatest stored number, stepping over the rest.
        assert_eq!(store.append_audit(&audit("third")).await.unwrap(), 3);
        store
            .append_audits(&[audit("fourth"), audit("fifth")])
            .await
            .unwrap();
        let actions: Vec<(u64, String)> = store
            .list_audit(1, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.seq, r.entry.action))
            .collect();
        assert_eq!(
            actions,
            [
                (1, "first".to_owned()),
                (3, "third".to_owned()),
                (4, "fourth".to_owned()),
                (5, "fifth".to_owned())
            ]
        );

        let mut kinds: Vec<(String, &str)> = store
            .unreadable_records()
            .into_iter()
            .map(|u| (u.key, u.kind.as_str()))
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                (store.layout().audit(2), "audit"),
                (odd_key.clone(), "audit"),
                (format!("{checkpoints}/completed/east"), "checkpoint"),
                (format!("{checkpoints}/sideways/east"), "checkpoint"),
                (format!("{prefix}/failover/job.team-a.etl"), "failover"),
            ]
        );

        // Deleted or rewritten behind the store's back (etcdctl): forgotten at the recheck;
        // what is still there, unchanged, stays reported.
        let fixed = serde_json::to_vec(&pointer).unwrap();
        put_raw(store, &format!("{checkpoints}/completed/east"), &fixed).await;
        put_raw(
            store,
            &format!("{prefix}/failover/job.team-a.etl"),
            b"{\"still",
        )
        .await;
        store.recheck_unreadable().await.unwrap();
        let mut kinds: Vec<String> = unreadable_keys(store);
        kinds.sort();
        assert_eq!(
            kinds,
            [
                store.layout().audit(2),
                odd_key,
                format!("{checkpoints}/sideways/east"),
                format!("{prefix}/failover/job.team-a.etl"),
            ]
        );
        let failover = store
            .unreadable_records()
            .into_iter()
            .find(|u| u.kind == RecordKind::Failover)
            .unwrap();
        let now = store.backend().get(&failover.key).await.unwrap().unwrap();
        assert_eq!(failover.revision, now.mod_revision, "remembered anew");
    }

    pub async fn names_that_are_not_safe_key_segments_are_rejected(store: &dyn StateStore) {
        let mut bad = job("etl");
        bad.name = "../escape".to_owned();
        let err = store.put_job(&bad, Expected::Any).await.unwrap_err();
        assert!(matches!(err, StateError::InvalidName { .. }), "{err:?}");
        assert!(err.to_string().contains("../escape"), "{err}");
        assert!(store.get_site("east/west").await.is_err());
    }
}

/// A store on a fresh etcd that this test leads; keeps the server and leadership alive.
struct EtcdFixture {
    store: EtcdStateStore,
    _leadership: Leadership,
    _server: support::etcd::EtcdServer,
}

async fn etcd_fixture() -> EtcdFixture {
    let server = support::etcd::EtcdServer::start().await;
    let layout = KeyLayout::default();
    let elector = LeaderElector::new(
        server.client().await,
        layout.election("controller").unwrap(),
        "conformance",
        Duration::from_secs(5),
    );
    let leadership = elector.campaign().await.unwrap();
    let config = EtcdConfig::new(vec![server.endpoint().to_owned()]);
    let client = connect_etcd(&config).await.unwrap();
    let store = EtcdStateStore::on_etcd(client, &config.key_prefix).unwrap();
    store.set_leader(Some(leadership.leader_key.clone()));
    EtcdFixture {
        store,
        _leadership: leadership,
        _server: server,
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::EmbeddedStateStore::open(dir.path()).unwrap();
                    super::suite::$case(&store).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::etcd_fixture().await;
                    super::suite::$case(&fixture.store).await;
                }
            )*
        }
    };
}

conformance!(
    jobs_are_created_read_listed_and_deleted,
    a_write_with_a_stale_revision_conflicts_and_names_the_key,
    concurrent_generation_bumps_are_never_lost,
    a_site_epoch_never_decreases,
    audit_sequence_numbers_increase_in_append_order,
    a_batch_of_audit_entries_keeps_its_order_and_loses_none_to_a_racing_appender,
    checkpoint_pointers_are_kept_per_kind_and_site,
    every_jobs_pointers_are_listed_in_one_read_across_pages,
    listing_returns_every_job_across_pages,
    names_that_are_not_safe_key_segments_are_rejected,
    a_generation_at_its_largest_is_refused_not_wrapped,
    an_audit_log_at_its_largest_sequence_refuses_to_append,
    job_records_that_do_not_decode_are_reported_apart_and_never_fail_a_listing,
    unreadable_sites_pointers_failover_and_audit_records_are_left_out,
    records_written_by_schema_1_read_into_the_typed_records,
    a_record_of_a_later_schema_is_unreadable_naming_its_schema,
);

/// The embedded store must survive a restart with every record and revision intact.
#[tokio::test]
async fn an_embedded_store_reopened_after_drop_has_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (job_revision, gone_revision, audit_seq);
    {
        let store = EmbeddedStateStore::open(dir.path()).unwrap();
        job_revision = store.put_job(&job("etl"), Expected::Absent).await.unwrap();
        store.bump_generation("team-a", "etl").await.unwrap();
        store
            .put_site(&SiteRecord {
                site: "east".to_owned(),
                epoch: 7,
                state: SiteState::Active,
                detail: json!({}),
            })
            .await
            .unwrap();
        store.append_audit(&audit("switchover")).await.unwrap();
        audit_seq = store.append_audit(&audit("failback")).await.unwrap();
        // Deleted last, this record held the highest revision: it must not be reused.
        gone_revision = store.put_job(&job("gone"), Expected::Absent).await.unwrap();
        store
            .delete_job("team-a", "gone", Expected::Any)
            .await
            .unwrap();
    }
    let store = EmbeddedStateStore::open(dir.path()).unwrap();
    assert!(store.get_job("team-a", "gone").await.unwrap().is_none());
    let recreated = store.put_job(&job("gone"), Expected::Absent).await.unwrap();
    assert!(
        recreated > gone_revision,
        "a re-created record must not reuse revision {gone_revision}: got {recreated}"
    );
    let etl = store.get_job("team-a", "etl").await.unwrap().unwrap();
    assert_eq!(etl.value.generation, 1);
    assert!(etl.revision > job_revision);
    assert_eq!(
        store.get_site("east").await.unwrap().unwrap().value.epoch,
        7
    );
    let next_seq = store.append_audit(&audit("cordon")).await.unwrap();
    assert_eq!(next_seq, audit_seq + 1);
    let before = store.list_audit(1, 0).await.unwrap();
    assert_eq!(before.len(), 3);
}

/// Issue #13, finding 7: a record at revision `i64::MAX` made the next write wrap to a
/// negative revision (release builds), and after a restart revisions repeated. Now the write
/// past the limit is refused with nothing changed on disk, and a store at the limit does not
/// open.
#[tokio::test]
async fn an_embedded_store_never_wraps_its_revision_and_refuses_to_open_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStateStore::open(dir.path()).unwrap();
        store.put_job(&job("etl"), Expected::Absent).await.unwrap();
    }
    std::fs::write(dir.path().join("REVISION"), format!("{}\n", i64::MAX - 1)).unwrap();
    let record = dir.path().join("data/twinsite/v1/jobs/team-a/etl.rec");
    {
        let store = EmbeddedStateStore::open(dir.path()).unwrap();
        let last = store.put_job(&job("etl"), Expected::Any).await.unwrap();
        assert_eq!(last, i64::MAX);
        let on_disk = std::fs::read(&record).unwrap();
        let mut update = job("etl");
        update.status = running();
        let err = store.put_job(&update, Expected::Any).await.unwrap_err();
        assert!(matches!(err, StateError::CounterLimit { .. }), "{err:?}");
        let err = store
            .delete_job("team-a", "etl", Expected::Any)
            .await
            .unwrap_err();
        assert!(matches!(err, StateError::CounterLimit { .. }), "{err:?}");
        assert_eq!(std::fs::read(&record).unwrap(), on_disk, "nothing written");
        let stored = store.get_job("team-a", "etl").await.unwrap().unwrap();
        assert_eq!((stored.value, stored.revision), (job("etl"), i64::MAX));
    }
    let err = EmbeddedStateStore::open(dir.path())
        .err()
        .expect("a store at the revision limit must not open");
    assert!(matches!(err, StateError::CounterLimit { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()) && message.contains("refuses"),
        "{message}"
    );
}

/// A record whose revision is negative (a counter that wrapped before this fix) fails the
/// open naming the file: revisions after it could repeat.
#[tokio::test]
async fn a_record_with_a_negative_revision_fails_the_open_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStateStore::open(dir.path()).unwrap();
        store.put_job(&job("etl"), Expected::Absent).await.unwrap();
    }
    let record = dir.path().join("data/twinsite/v1/jobs/team-a/etl.rec");
    let text = std::fs::read_to_string(&record).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let mut fields: Vec<&str> = header.split(' ').collect();
    fields[2] = "-9223372036854775808";
    // The checksum covers the body only, so the record is otherwise intact.
    std::fs::write(&record, format!("{}\n{body}", fields.join(" "))).unwrap();
    let err = EmbeddedStateStore::open(dir.path())
        .err()
        .expect("a negative revision must fail the open");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("etl.rec"), "{err}");
    assert!(err.to_string().contains("negative"), "{err}");
}

/// etcd computes its own revisions; the controller checks at start that they have room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_store_reports_its_revision_headroom() {
    let fixture = etcd_fixture().await;
    fixture
        .store
        .put_job(&job("etl"), Expected::Absent)
        .await
        .unwrap();
    let revision = fixture
        .store
        .backend()
        .check_revision_headroom("/twinsite/v1")
        .await
        .unwrap();
    assert!(revision > 1, "{revision}");
}

/// A damaged record must stop the open with the file's name, never panic or load garbage.
#[tokio::test]
async fn a_damaged_record_file_fails_the_open_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStateStore::open(dir.path()).unwrap();
        store.put_job(&job("etl"), Expected::Absent).await.unwrap();
    }
    let file = dir.path().join("data/twinsite/v1/jobs/team-a/etl.rec");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();

    let err = EmbeddedStateStore::open(dir.path())
        .err()
        .expect("open must fail");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );

    std::fs::write(&file, b"not a record at all").unwrap();
    let err = EmbeddedStateStore::open(dir.path())
        .err()
        .expect("open must fail");
    assert!(err.to_string().contains("etl.rec"), "{err}");
}

/// A write interrupted before its rename leaves a temporary file; it must not count.
#[tokio::test]
async fn a_leftover_temporary_file_is_discarded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStateStore::open(dir.path()).unwrap();
        store.put_job(&job("etl"), Expected::Absent).await.unwrap();
    }
    let temp = dir.path().join("data/twinsite/v1/jobs/team-a/.etl.rec.tmp");
    std::fs::write(&temp, b"half a reco").unwrap();
    let store = EmbeddedStateStore::open(dir.path()).unwrap();
    assert_eq!(
        store.get_job("team-a", "etl").await.unwrap().unwrap().value,
        job("etl")
    );
    assert!(!temp.exists());
}

#[tokio::test]
async fn a_second_instance_cannot_open_the_same_embedded_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedStateStore::open(dir.path()).unwrap();
    let err = EmbeddedStateStore::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(matches!(err, StateError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("LOCK"), "{err}");
    drop(first);
    EmbeddedStateStore::open(dir.path()).expect("the lock is released on drop");
}

/// The lock holds across processes: `flock(1)` stands in for another controller.
#[tokio::test]
async fn another_process_holding_the_lock_keeps_the_embedded_store_closed() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStateStore::open(dir.path()).unwrap());
    let lock_file = dir.path().join("LOCK");
    let mut holder = std::process::Command::new("flock")
        .args(["--exclusive", "--no-fork"])
        .arg(&lock_file)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux");
    // `--no-fork` makes the killed process the lock holder (no orphaned `sleep` keeps it).
    // Wait until that process really holds the lock.
    let mut held = false;
    for _ in 0..100 {
        match EmbeddedStateStore::open(dir.path()) {
            Err(StateError::Locked { .. }) => {
                held = true;
                break;
            }
            Ok(store) => drop(store),
            Err(other) => panic!("unexpected error {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(held, "the store opened while another process held its lock");
    EmbeddedStateStore::open(dir.path()).expect("opens once the other process is gone");
}

/// Without leadership an etcd store reads but never writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_store_without_leadership_refuses_writes() {
    let server = support::etcd::EtcdServer::start().await;
    let store = EtcdStateStore::on_etcd(server.client().await, "/twinsite/v1").unwrap();
    assert!(store.get_job("team-a", "etl").await.unwrap().is_none());
    let err = store.put_job(&job("etl"), Expected::Any).await.unwrap_err();
    assert!(matches!(err, StateError::NotLeader { .. }), "{err:?}");
    assert!(err.is_leadership_lost());
    assert!(
        err.to_string().contains("/twinsite/v1/jobs/team-a/etl"),
        "{err}"
    );
}

/// A controller that cannot reach etcd must see a retryable error naming what it tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_reported_as_unavailable_and_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")]);
    config.connect_timeout = Duration::from_millis(300);
    config.request_timeout = Duration::from_millis(300);
    let err = match connect_etcd(&config).await {
        Err(err) => err,
        // The client may connect lazily: then the first request fails instead.
        Ok(client) => EtcdStateStore::on_etcd(client, &config.key_prefix)
            .unwrap()
            .get_job("team-a", "etl")
            .await
            .unwrap_err(),
    };
    assert!(matches!(err, StateError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    let message = err.to_string();
    assert!(
        message.contains(&port.to_string()) || message.contains("/jobs/team-a/etl"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_etcd_ca_file_is_named_in_the_error() {
    let mut config = EtcdConfig::new(vec!["https://127.0.0.1:1".to_owned()]);
    config.tls = Some(EtcdTls {
        ca: "/nonexistent/etcd-ca.pem".into(),
        client_cert: None,
        client_key: None,
        domain: None,
    });
    let err = connect_etcd(&config)
        .await
        .err()
        .expect("no CA file, no client");
    assert!(
        err.to_string().contains("/nonexistent/etcd-ca.pem"),
        "{err}"
    );
}

/// etcd holds any bytes as a key; one that is not UTF-8 (twinsite writes only ASCII keys,
/// so it was written by hand) is reported as unreadable instead of failing the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_key_that_is_not_utf8_is_reported_not_fatal() {
    let fixture = etcd_fixture().await;
    fixture
        .store
        .put_job(&job("etl"), Expected::Absent)
        .await
        .unwrap();
    let mut key = b"/twinsite/v1/jobs/team-a/".to_vec();
    key.extend_from_slice(&[0xff, 0xfe]);
    let mut client = fixture._server.client().await;
    client
        .put(key, serde_json::to_vec(&job("etl")).unwrap(), None)
        .await
        .unwrap();
    let scan = fixture.store.scan_jobs().await.unwrap();
    assert_eq!(scan.jobs.len(), 1);
    assert_eq!(scan.unreadable.len(), 1, "{:?}", scan.unreadable);
    assert!(
        scan.unreadable[0]
            .key
            .starts_with("/twinsite/v1/jobs/team-a/\u{fffd}"),
        "{:?}",
        scan.unreadable
    );
    assert_eq!(scan.unreadable[0].job, None);
}
