//! Property: whatever sequence of creates, updates, deletes and restarts the embedded store
//! sees, it agrees with a plain in-memory model, and every successful write gets a revision
//! greater than any handed out before (across restarts too), so a compare-and-set can never
//! succeed against a record that changed.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use twinsite::state::{EmbeddedStateStore, Expected, JobRecord, StateError, StateStore};

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
        spec: json!({}),
        generation: 0,
        placement: None,
        status: json!(status),
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
                let status = j.value.status.as_u64().unwrap() as u8;
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
