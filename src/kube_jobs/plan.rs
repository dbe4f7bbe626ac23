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
use scheduler::model::SiteId;

use super::admit::{ClusterObject, admit, origin, origin_of};
use crate::controller::new_record;
use crate::state::{JobRecord, Versioned};

/// Which objects and jobs the watch owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The site whose cluster holds the StreamJob objects.
    pub home: SiteId,
    /// The one namespace watched; `None`: all.
    pub namespace: Option<String>,
}

impl Scope {
    /// Whether a stored job belongs to this watch: marked with its origin, in its namespace.
    pub fn owns(&self, record: &JobRecord) -> bool {
        origin_of(&record.spec) == Some(origin(&self.home).as_str())
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| *n == record.namespace)
    }
}

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

/// The tenant a stored job counts against, as `Controller::tenant_room` counts it.
fn stored_tenant(record: &JobRecord) -> String {
    record
        .spec
        .pointer("/spec/tenant")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(&record.namespace)
        .to_owned()
}

/// The store changes that make it hold the jobs of `objects` (a complete list).
pub fn plan_sync(
    objects: &[ClusterObject],
    records: &[Versioned<JobRecord>],
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
        *per_tenant.entry(stored_tenant(&record.value)).or_default() += 1;
    }
    let in_scope = |namespace: &str| scope.namespace.as_ref().is_none_or(|n| n == namespace);
    let mut seen = std::collections::HashSet::new();
    for object in objects.iter().filter(|o| in_scope(&o.namespace)) {
        seen.insert((object.namespace.as_str(), object.name.as_str()));
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
        let old_tenant = existing.map(|r| stored_tenant(&r.value));
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
