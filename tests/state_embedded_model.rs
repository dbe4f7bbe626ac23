//! Property: whatever sequence of creates, updates, deletes and restarts the embedded store
//! sees, it agrees with a plain in-memory model, and every successful write gets a revision
//! greater than any handed out before (across restarts too), so a compare-and-set can never
//! succeed against a record that changed.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use twinsite::state::{EmbeddedStateStore, Expected, JobRecord, JobStatus, StateError, StateStore};

#[derive(Debug, Clone)]
enum Precondition {
    Any,
    Absent,
    Current,
    Stale,
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        job: usize,
        status: u8,
        precondition: Precondition,
    },
    Delete {
        job: usize,
        precondition: Precondition,
    },
    Reopen,
}

fn precondition() -> impl Strategy<Value = Precondition> {
    prop_oneof![
        Just(Precondition::Any),
        Just(Precondition::Absent),
        Just(Precondition::Current),
        Just(Precondition::Stale),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, any::<u8>(), precondition())
            .prop_map(|(job, status, precondition)| Op::Put { job, status, precondition }),
        2 => (0..3usize, precondition()).prop_map(|(job, precondition)| Op::Delete { job, precondition }),
        1 => Just(Op::Reopen),
    ]
}

fn record(job: usize, status: u8) -> JobRecord {
    JobRecord {
        namespace: "ns".to_owned(),
        name: format!("job-{job}"),
        // The store keeps any spec; the model is about revisions and preconditions.
        spec: serde_json::from_value(json!({})).unwrap(),
        generation: 0,
        placement: None,
        // `status` told apart by the relaunch count.
        status: JobStatus {
            relaunches: u32::from(status),
            ..JobStatus::pending("model")
        },
    }
}

/// The precondition to send, and whether the model says it holds.
fn resolve(precondition: &Precondition, current: Option<i64>) -> (Expected, bool) {
    match (precondition, current) {
        (Precondition::Any, _) => (Expected::Any, true),
        (Precondition::Absent, current) => (Expected::Absent, current.is_none()),
        (Precondition::Current, Some(rev)) => (Expected::Revision(rev), true),
        (Precondition::Current, None) => (Expected::Revision(1), false),
        (Precondition::Stale, Some(rev)) => (Expected::Revision(rev - 1), false),
        (Precondition::Stale, None) => (Expected::Revision(1), false),
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Some(EmbeddedStateStore::open(dir.path()).unwrap());
    // job -> (status, revision)
    let mut model: BTreeMap<usize, (u8, i64)> = BTreeMap::new();
    let mut highest_revision = 0;
    for op in ops {
        let current_store = store.as_ref().unwrap();
        match op {
            Op::Put {
                job,
                status,
                precondition,
            } => {
                let (expected, holds) = resolve(&precondition, model.get(&job).map(|m| m.1));
                let result = current_store.put_job(&record(job, status), expected).await;
                if holds {
                    let revision = result.unwrap();
                    assert!(revision > highest_revision, "revision {revision} reused");
                    highest_revision = revision;
                    model.insert(job, (status, revision));
                } else {
                    assert!(
                        matches!(result, Err(StateError::Conflict { .. })),
                        "{result:?}"
                    );
                }
            }
            Op::Delete { job, precondition } => {
                let (expected, holds) = resolve(&precondition, model.get(&job).map(|m| m.1));
                let result = current_store
                    .delete_job("ns", &format!("job-{job}"), expected)
                    .await;
                if holds {
                    assert_eq!(result.unwrap(), model.remove(&job).is_some());
                } else {
                    assert!(
                        matches!(result, Err(StateError::Conflict { .. })),
                        "{result:?}"
                    );
                }
            }
            Op::Reopen => {
                drop(store.take());
                store = Some(EmbeddedStateStore::open(dir.path()).unwrap());
            }
        }
        let stored: BTreeMap<usize, (u8, i64)> = store
            .as_ref()
            .unwrap()
            .list_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| {
                let job = j.value.name.trim_start_matches("job-").parse().unwrap();
                let status = u8::try_from(j.value.status.relaunches).unwrap();
                (job, (status, j.revision))
            })
            .collect();
        assert_eq!(stored, model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_embedded_store_agrees_with_a_model_across_restarts(ops in prop::collection::vec(op(), 1..16)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}

/// What an operator's hand or another version may leave under a job key.
#[derive(Debug, Clone)]
enum Raw {
    /// A record of this version, for the key it is under.
    Own,
    /// A record of this version naming another job.
    Other,
    /// Arbitrary bytes.
    Bytes(Vec<u8>),
    /// JSON of another shape.
    Json(serde_json::Value),
}

fn raw() -> impl Strategy<Value = Raw> {
    let json = prop_oneof![
        Just(json!(null)),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z]{0,8}".prop_map(|s| json!({ "namespace": s })),
        any::<u32>().prop_map(|n| json!({ "namespace": n, "name": "x" })),
    ];
    prop_oneof![
        2 => Just(Raw::Own),
        1 => Just(Raw::Other),
        2 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Raw::Bytes),
        2 => json.prop_map(Raw::Json),
    ]
}

/// Keys under the jobs prefix: the layout's shape, and shapes it never writes.
fn key() -> impl Strategy<Value = (String, Option<usize>)> {
    prop_oneof![
        4 => (0..4usize).prop_map(|job| (format!("/twinsite/v1/jobs/ns/job-{job}"), Some(job))),
        1 => Just(("/twinsite/v1/jobs/ns".to_owned(), None)),
        1 => Just(("/twinsite/v1/jobs/ns/job-0/extra".to_owned(), None)),
    ]
}

async fn scan_of(raw_records: Vec<((String, Option<usize>), Raw)>) {
    use twinsite::state::KvBackend;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStateStore::open(dir.path()).unwrap();
    // key -> whether it must list as a job
    let mut written: BTreeMap<String, bool> = BTreeMap::new();
    for ((key, job), raw) in raw_records {
        let (bytes, valid) = match (&raw, job) {
            (Raw::Own, Some(job)) => (serde_json::to_vec(&record(job, 1)).unwrap(), true),
            (Raw::Own | Raw::Other, _) => (serde_json::to_vec(&record(9, 1)).unwrap(), false),
            (Raw::Bytes(bytes), _) => (bytes.clone(), false),
            (Raw::Json(value), _) => (serde_json::to_vec(value).unwrap(), false),
        };
        store
            .backend()
            .put(&key, bytes, Expected::Any)
            .await
            .unwrap();
        written.insert(key, valid);
    }
    let scan = store
        .scan_jobs()
        .await
        .expect("a listing never fails on a record");
    let listed: BTreeMap<String, bool> = scan
        .jobs
        .iter()
        .map(|j| {
            (
                format!("/twinsite/v1/jobs/{}/{}", j.value.namespace, j.value.name),
                true,
            )
        })
        .chain(scan.unreadable.iter().map(|u| (u.key.clone(), false)))
        .collect();
    // Every key exactly once, on the side its bytes put it.
    assert_eq!(listed, written);
    assert_eq!(listed.len(), scan.jobs.len() + scan.unreadable.len());
    let remembered: Vec<String> = store
        .unreadable_records()
        .into_iter()
        .map(|u| u.key)
        .collect();
    let unreadable: Vec<String> = scan.unreadable.iter().map(|u| u.key.clone()).collect();
    assert_eq!(remembered, unreadable);
    // An unreadable job key is read as an error naming it, never as some job.
    for u in &scan.unreadable {
        if let Some((namespace, name)) = &u.job {
            let err = store.get_job(namespace, name).await.unwrap_err();
            assert!(err.to_string().contains(&u.key), "{err}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Issue #13: whatever sits under the job keys, a listing succeeds and accounts for every
    /// key once: a job when it decodes as the record of its own key, else unreadable.
    #[test]
    fn whatever_bytes_sit_under_job_keys_a_listing_accounts_for_each_once(
        records in prop::collection::vec((key(), raw()), 0..12)
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scan_of(records));
    }
}
