//! What the store must change so that it holds exactly the jobs of the home cluster's
//! StreamJob objects: pure, from a complete snapshot of the objects and the stored records.
//!
//! Rules (README "StreamJobs in kubectl"):
//! - an admitted object whose job is not stored is created, marked with its origin;
//! - an admitted object whose stored job differs is written over it (generation, placement
//!   and status kept: the reconcile pass relaunches a changed spec from a savepoint), even
//!   when the HTTP API created that job: the object adopts it;
//! - a refused object changes nothing: a stored job keeps its last accepted spec;
//! - a stored job of this origin (and watched namespace) without an object is deleted. The
//!   caller passes a *complete* list: the reflector's store, which is swapped only once a
//!   whole relist has arrived, never a page of one.

use std::collections::{BTreeMap, HashMap};

use scheduler::input::Policy;

use super::admit::{ClusterObject, admit, origin_of};
pub use crate::job::Scope;
use crate::job::{new_record, stored_tenant};
use crate::state::{JobRecord, UnreadableRecord, Versioned};

/// One write the store needs.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreWrite {
    /// A new job, created only if no job of that name appeared meanwhile.
    Create { record: JobRecord },
    /// A new spec over the stored one at `revision`. `adopted_from`: who owned it before
    /// (`None`: this watch already did).
    Update {
        record: JobRecord,
        revision: i64,
        adopted_from: Option<String>,
    },
    /// The job's object is gone from a complete list.
    Delete {
        namespace: String,
        name: String,
        revision: i64,
    },
}

impl StoreWrite {
    pub fn target(&self) -> String {
        match self {
            StoreWrite::Create { record } | StoreWrite::Update { record, .. } => {
                format!("{}/{}", record.namespace, record.name)
            }
            StoreWrite::Delete {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
        }
    }
}

/// The writes, and the objects refused with why (by namespace and name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    pub writes: Vec<StoreWrite>,
    pub refused: BTreeMap<(String, String), String>,
}

/// The store changes that make it hold the jobs of `objects` (a complete list), given the
/// stored records that decode (`records`) and those that do not (`unreadable`: their jobs
/// count against their namespace's tenant, as the API counts them, and an object of such a
/// job is refused until the record is deleted: its generation is unknown, so nothing of it
/// can be kept).
pub fn plan_sync(
    objects: &[ClusterObject],
    records: &[Versioned<JobRecord>],
    unreadable: &[UnreadableRecord],
    scope: &Scope,
    policy: &Policy,
) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let stored: HashMap<(&str, &str), &Versioned<JobRecord>> = records
        .iter()
        .map(|r| ((r.value.namespace.as_str(), r.value.name.as_str()), r))
        .collect();
    let mut per_tenant: HashMap<String, usize> = HashMap::new();
    for record in records {
        *per_tenant
            .entry(stored_tenant(&record.value).to_owned())
            .or_default() += 1;
    }
    let unreadable: HashMap<(&str, &str), &UnreadableRecord> = unreadable
        .iter()
        .filter_map(|u| {
            u.job
                .as_ref()
                .map(|(ns, name)| ((ns.as_str(), name.as_str()), u))
        })
        .collect();
    for (namespace, _) in unreadable.keys() {
        *per_tenant.entry((*namespace).to_owned()).or_default() += 1;
    }
    let in_scope = |namespace: &str| scope.namespace.as_ref().is_none_or(|n| n == namespace);
    let mut seen = std::collections::HashSet::new();
    for object in objects.iter().filter(|o| in_scope(&o.namespace)) {
        seen.insert((object.namespace.as_str(), object.name.as_str()));
        if let Some(bad) = unreadable.get(&(object.namespace.as_str(), object.name.as_str())) {
            plan.refused.insert(
                object.key(),
                format!(
                    "the stored record of this job ({}) cannot be used: {}; delete it (DELETE /api/v1/jobs/{}/{}, which stops what runs of it) and this object's job is stored again",
                    bad.key, bad.reason, object.namespace, object.name
                ),
            );
            continue;
        }
        let job = match admit(object, &scope.home, policy) {
            Ok(job) => job,
            Err(reason) => {
                plan.refused.insert(object.key(), reason);
                continue;
            }
        };
        let existing = stored.get(&(object.namespace.as_str(), object.name.as_str()));
        // The same room rule as an API create or replace: the job itself does not count.
        let tenant = job.tenant().0;
        let old_tenant = existing.map(|r| stored_tenant(&r.value).to_owned());
        let others = per_tenant.get(&tenant).copied().unwrap_or(0)
            - usize::from(old_tenant.as_deref() == Some(tenant.as_str()));
        let max = scheduler::limits::MAX_JOBS_PER_TENANT;
        if others >= max {
            plan.refused.insert(
                object.key(),
                format!(
                    "{}: tenant {tenant:?} already has {others} jobs, the most one tenant may have ({max}); delete one first",
                    job.tenant_field()
                ),
            );
            continue;
        }
        let desired = new_record(&job);
        match existing {
            None => {
                *per_tenant.entry(tenant).or_default() += 1;
                plan.writes.push(StoreWrite::Create { record: desired });
            }
            Some(current) if current.value.spec == desired.spec => {}
            Some(current) => {
                if let Some(old) = old_tenant.filter(|old| *old != tenant) {
                    if let Some(count) = per_tenant.get_mut(&old) {
                        *count = count.saturating_sub(1);
                    }
                    *per_tenant.entry(tenant).or_default() += 1;
                }
                let adopted_from = (!scope.owns(&current.value)).then(|| {
                    origin_of(&current.value.spec)
                        .map_or_else(|| "the HTTP API".to_owned(), str::to_owned)
                });
                let mut record = current.value.clone();
                record.spec = desired.spec;
                plan.writes.push(StoreWrite::Update {
                    record,
                    revision: current.revision,
                    adopted_from,
                });
            }
        }
    }
    for record in records {
        let key = (record.value.namespace.as_str(), record.value.name.as_str());
        if scope.owns(&record.value) && !seen.contains(&key) {
            plan.writes.push(StoreWrite::Delete {
                namespace: record.value.namespace.clone(),
                name: record.value.name.clone(),
                revision: record.revision,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::kube_jobs::ORIGIN_ANNOTATION;

    const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn document(namespace: &str, name: &str, parallelism: i64, origin: Option<&str>) -> Value {
        let mut metadata = json!({"name": name, "namespace": namespace});
        if let Some(origin) = origin {
            metadata["annotations"] = json!({ORIGIN_ANNOTATION: origin});
        }
        json!({
            "apiVersion": "twinsite.io/v1alpha1", "kind": "StreamJob", "metadata": metadata,
            "spec": {
                "priority": "high", "image": "flink:2.0.0", "flinkVersion": "v2_0",
                "jarURI": "hdfs:///jars/j.jar", "parallelism": parallelism,
                "jobManager": {"resources": {"cpu": "1", "memory": "2Gi"}},
                "taskManager": {"resources": {"cpu": "1", "memory": "2Gi"}},
                "checkpoints": {"dir": format!("hdfs:///flink/checkpoints/{namespace}/{name}")},
            },
        })
    }

    fn cluster_object(namespace: &str, name: &str, parallelism: i64) -> ClusterObject {
        ClusterObject::from_value(document(namespace, name, parallelism, None)).unwrap()
    }

    /// A stored job as a door would have written it (`origin` names that door).
    fn stored(namespace: &str, name: &str, parallelism: i64, origin: Option<&str>) -> JobRecord {
        // The parser's own form (defaults filled in), as every door stores it.
        let document = document(namespace, name, parallelism, origin).to_string();
        let job = scheduler::input::parse_stream_jobs("t", &document)
            .unwrap()
            .remove(0);
        JobRecord {
            namespace: namespace.into(),
            name: name.into(),
            spec: job.into(),
            generation: 4,
            placement: None,
            status: serde_json::from_value(json!({"phase": "running", "site": "dc-b"})).unwrap(),
        }
    }

    fn scope(namespace: Option<&str>) -> Scope {
        Scope {
            home: scheduler::model::SiteId("dc-a".into()),
            namespace: namespace.map(str::to_owned),
        }
    }

    /// The store after the plan's writes, each made as `StateStore` makes it (compare and set).
    fn execute(
        records: &[Versioned<JobRecord>],
        writes: &[StoreWrite],
    ) -> BTreeMap<(String, String), Versioned<JobRecord>> {
        let mut store: BTreeMap<_, _> = records
            .iter()
            .map(|r| ((r.value.namespace.clone(), r.value.name.clone()), r.clone()))
            .collect();
        for write in writes {
            match write {
                StoreWrite::Create { record } => {
                    let key = (record.namespace.clone(), record.name.clone());
                    assert!(!store.contains_key(&key), "create over {key:?}");
                    store.insert(
                        key,
                        Versioned {
                            value: record.clone(),
                            revision: 1,
                        },
                    );
                }
                StoreWrite::Update {
                    record, revision, ..
                } => {
                    let key = (record.namespace.clone(), record.name.clone());
                    assert_eq!(store[&key].revision, *revision);
                    store.insert(
                        key,
                        Versioned {
                            value: record.clone(),
                            revision: revision + 1,
                        },
                    );
                }
                StoreWrite::Delete {
                    namespace,
                    name,
                    revision,
                } => {
                    let gone = store.remove(&(namespace.clone(), name.clone())).unwrap();
                    assert_eq!(gone.revision, *revision);
                }
            }
        }
        store
    }

    #[test]
    fn a_job_the_api_made_is_adopted_by_an_object_of_its_name_keeping_the_controllers_state() {
        let records = vec![Versioned {
            value: stored("shop", "a", 3, None),
            revision: 7,
        }];
        let objects = [cluster_object("shop", "a", 2)];
        let plan = plan_sync(
            &objects,
            &records,
            &[],
            &scope(None),
            &Policy::default_two_sites(),
        );
        let [
            StoreWrite::Update {
                record,
                revision: 7,
                adopted_from: Some(from),
            },
        ] = plan.writes.as_slice()
        else {
            panic!("{plan:?}");
        };
        assert_eq!(from, "the HTTP API");
        assert_eq!(record.generation, 4);
        assert_eq!(record.status.site.as_deref(), Some("dc-b"));
        assert_eq!(record.spec.stream_job().unwrap().spec.parallelism, 2);
        assert_eq!(origin_of(&record.spec), Some("kubernetes/dc-a"));
    }

    #[test]
    fn an_empty_list_deletes_only_the_jobs_this_origin_made() {
        let records = vec![
            Versioned {
                value: stored("shop", "a", 2, Some("kubernetes/dc-a")),
                revision: 1,
            },
            Versioned {
                value: stored("shop", "b", 2, None),
                revision: 2,
            },
            Versioned {
                value: stored("shop", "c", 2, Some("kubernetes/dc-b")),
                revision: 3,
            },
        ];
        let plan = plan_sync(
            &[],
            &records,
            &[],
            &scope(None),
            &Policy::default_two_sites(),
        );
        assert_eq!(
            plan.writes,
            vec![StoreWrite::Delete {
                namespace: "shop".into(),
                name: "a".into(),
                revision: 1
            }]
        );
    }

    fn unreadable(namespace: &str, name: &str) -> UnreadableRecord {
        UnreadableRecord {
            key: format!("/twinsite/v1/jobs/{namespace}/{name}"),
            kind: crate::state::RecordKind::Job,
            revision: 9,
            reason: "record does not decode: expected value at line 1 column 1".into(),
            job: Some((namespace.into(), name.into())),
        }
    }

    #[test]
    fn an_object_whose_stored_record_is_unreadable_is_refused_saying_how_to_recover() {
        let plan = plan_sync(
            &[cluster_object("shop", "a", 2)],
            &[],
            &[unreadable("shop", "a")],
            &scope(None),
            &Policy::default_two_sites(),
        );
        assert!(plan.writes.is_empty(), "{plan:?}");
        let reason = &plan.refused[&("shop".to_owned(), "a".to_owned())];
        assert!(
            reason.contains("/twinsite/v1/jobs/shop/a")
                && reason.contains("does not decode")
                && reason.contains("DELETE /api/v1/jobs/shop/a"),
            "{reason}"
        );
    }

    #[test]
    fn unreadable_jobs_count_against_their_namespaces_tenant_as_the_api_counts_them() {
        let max = scheduler::limits::MAX_JOBS_PER_TENANT;
        let full: Vec<_> = (0..max)
            .map(|i| unreadable("shop", &format!("j{i}")))
            .collect();
        let plan = plan_sync(
            &[cluster_object("shop", "a", 2)],
            &[],
            &full,
            &scope(None),
            &Policy::default_two_sites(),
        );
        assert!(plan.writes.is_empty(), "{:?}", plan.writes);
        let reason = &plan.refused[&("shop".to_owned(), "a".to_owned())];
        assert!(reason.contains("tenant \"shop\" already has"), "{reason}");
        let room = plan_sync(
            &[cluster_object("shop", "a", 2)],
            &[],
            &full[1..],
            &scope(None),
            &Policy::default_two_sites(),
        );
        assert_eq!(room.writes.len(), 1, "{room:?}");
    }

    proptest! {
        /// Whatever the store and the objects: after the plan, every admitted object's job is
        /// stored with its spec, a refused object's job is untouched, this origin's jobs
        /// without an object are gone, every other door's job without an object is
        /// untouched; and a second plan over the result writes nothing.
        #[test]
        fn the_store_after_a_plan_holds_exactly_the_objects_jobs_and_a_second_plan_is_empty(
            objects in proptest::collection::btree_map(
                (prop_oneof![Just("shop"), Just("bank")], 0..NAMES.len()),
                0i64..4,
                0..8,
            ),
            records in proptest::collection::btree_map(
                (prop_oneof![Just("shop"), Just("bank")], 0..NAMES.len()),
                (1i64..4, prop_oneof![
                    Just(None), Just(Some("kubernetes/dc-a")), Just(Some("kubernetes/dc-b")),
                ]),
                0..8,
            ),
            watched in prop_oneof![Just(None), Just(Some("shop"))],
        ) {
            let policy = Policy::default_two_sites();
            let scope = scope(watched);
            // Parallelism 0 is refused at admission.
            let objects: Vec<ClusterObject> = objects
                .iter()
                .map(|((ns, i), p)| cluster_object(ns, NAMES[*i], *p))
                .collect();
            let records: Vec<Versioned<JobRecord>> = records
                .iter()
                .enumerate()
                .map(|(n, ((ns, i), (p, origin)))| Versioned {
                    value: stored(ns, NAMES[*i], *p, *origin),
                    revision: 10 + n as i64,
                })
                .collect();
            let plan = plan_sync(&objects, &records, &[], &scope, &policy);
            let after = execute(&records, &plan.writes);
            let before: BTreeMap<_, _> = records
                .iter()
                .map(|r| ((r.value.namespace.clone(), r.value.name.clone()), r.value.clone()))
                .collect();
            for object in &objects {
                let key = object.key();
                let in_scope = watched.is_none_or(|n| n == object.namespace);
                match admit(object, &scope.home, &policy) {
                    Ok(job) if in_scope => {
                        let stored = &after[&key].value;
                        prop_assert_eq!(&stored.spec, &new_record(&job).spec);
                        if let Some(old) = before.get(&key) {
                            prop_assert_eq!(stored.generation, old.generation);
                            prop_assert_eq!(&stored.status, &old.status);
                        }
                    }
                    Ok(_) => prop_assert_eq!(after.get(&key).map(|v| &v.value), before.get(&key)),
                    Err(_) => {
                        prop_assert!(!in_scope || plan.refused.contains_key(&key));
                        prop_assert_eq!(after.get(&key).map(|v| &v.value), before.get(&key));
                    }
                }
            }
            let listed: std::collections::HashSet<_> = objects
                .iter()
                .filter(|o| watched.is_none_or(|n| n == o.namespace))
                .map(ClusterObject::key)
                .collect();
            for (key, old) in &before {
                if listed.contains(key) {
                    continue;
                }
                if scope.owns(old) {
                    prop_assert!(!after.contains_key(key), "{:?} kept", key);
                } else {
                    prop_assert_eq!(after.get(key).map(|v| &v.value), Some(old));
                }
            }
            let again: Vec<_> = after.into_values().collect();
            let second = plan_sync(&objects, &again, &[], &scope, &policy);
            prop_assert!(second.writes.is_empty(), "{:?}", second.writes);
        }
    }
}
