//! The typed state store, written once over any [`KvBackend`]: JSON encoding, the key
//! layout, and the read-check-write loops (generation bump, epoch guard, audit sequence).
//!
//! A record whose bytes the backend holds intact but that does not decode as the record its
//! key promises (a hand-written etcd value, another schema version, a body naming another
//! key) is *unreadable*: listings leave it out and report it, a read of its key fails with
//! [`StateError::Corrupt`] naming it, and the store remembers it (warning once per key) so
//! that [`StateStore::unreadable_records`] lists it. Damage the backend itself detects (an
//! embedded record file failing its checksum or format) still fails the store's open.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::KeyLayout;
use super::kv::{KvBackend, KvEntry};
use super::{
    AuditEntry, AuditRecord, CheckpointEntry, CheckpointKind, CheckpointPointer, Expected,
    JobCheckpoint, JobRecord, JobScan, RecordKind, SiteRecord, StateError, StateStore,
    UnreadableRecord, Versioned,
};

/// The schema of the job and site records this version writes, in their `schemaVersion`
/// field. A record without one was written before the field existed: schema 1 (the
/// fixtures under `tests/fixtures/store-v1/`), which this version reads as it is. A record
/// of a later schema is unreadable here (reported, never acted on): an older controller
/// must not act on, or rewrite, what it may misunderstand.
///
/// - 1: the spec, placement detail and status kept as the JSON the controller gave.
/// - 2: the same JSON shape, written from typed fields; a job's status is always an object
///   (a new job's says it waits for the first pass, where schema 1 wrote `null`).
pub const SCHEMA_VERSION: u32 = 2;

/// The field naming a record's schema.
const SCHEMA_FIELD: &str = "schemaVersion";

/// How often a read-check-write loop retries after losing a race before giving up with the
/// conflict. Only one leader writes, so races are between its own tasks and short-lived.
const MAX_RACE_RETRIES: usize = 64;

/// Page size of listings: keeps one etcd response far below gRPC's 4 MiB message limit.
const LIST_PAGE: usize = 256;

/// Most audit keys that are not sequence numbers an append steps over before giving up:
/// each costs a read, and only a hand-edited store has any.
const MAX_ODD_AUDIT_KEYS: usize = 1024;

/// The [`StateStore`] over one backend.
pub struct KvStateStore<B> {
    backend: B,
    layout: KeyLayout,
    /// Records found unreadable by the latest read of their key (or of a listing holding
    /// it), by key.
    unreadable: Mutex<BTreeMap<String, UnreadableRecord>>,
}

/// Checks a decoded record against the key it was stored under.
type KeyCheck<T> = fn(&KeyLayout, &str, &T) -> Result<(), String>;

fn any_key<T>(_: &KeyLayout, _: &str, _: &T) -> Result<(), String> {
    Ok(())
}

/// `own` (the key a record's body names) must be `key`.
fn same_key(key: &str, own: Result<String, StateError>, what: &str) -> Result<(), String> {
    match own {
        Ok(own) if own == key => Ok(()),
        Ok(own) => Err(format!(
            "the record is of {own}, not of the key it is stored under"
        )),
        Err(error) => Err(format!("the record names an invalid {what}: {error}")),
    }
}

fn cannot_encode(key: &str, error: serde_json::Error) -> StateError {
    StateError::Corrupt {
        location: key.to_owned(),
        reason: format!("cannot encode record: {error}"),
    }
}

/// A job or site record's schema is one this version reads (absent: 1).
fn check_schema(bytes: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Schema {
        #[serde(rename = "schemaVersion", default = "schema_one")]
        version: serde_json::Value,
    }
    fn schema_one() -> serde_json::Value {
        1.into()
    }
    // Bytes that are no JSON object are left to the record's own decoding to name.
    let Ok(Schema { version }) = serde_json::from_slice::<Schema>(bytes) else {
        return Ok(());
    };
    match version.as_u64() {
        Some(v) if (1..=u64::from(SCHEMA_VERSION)).contains(&v) => Ok(()),
        Some(v) if v > u64::from(SCHEMA_VERSION) => Err(format!(
            "schemaVersion {v} was written by a newer twinsite: this one reads schemas 1 to {SCHEMA_VERSION}"
        )),
        _ => Err(format!(
            "schemaVersion {version} is not a schema twinsite writes (1 to {SCHEMA_VERSION})"
        )),
    }
}

fn job_key(layout: &KeyLayout, key: &str, job: &JobRecord) -> Result<(), String> {
    same_key(key, layout.job(&job.namespace, &job.name), "job")
}

fn site_key(layout: &KeyLayout, key: &str, site: &SiteRecord) -> Result<(), String> {
    same_key(key, layout.site(&site.site), "site")
}

impl<B: KvBackend> KvStateStore<B> {
    pub fn new(backend: B, layout: KeyLayout) -> Self {
        Self {
            backend,
            layout,
            unreadable: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// One record. An unreadable one fails with [`StateError::Corrupt`] naming its key and
    /// is remembered; one that decodes (or is gone) is forgotten.
    async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
        kind: RecordKind,
        check: KeyCheck<T>,
    ) -> Result<Option<Versioned<T>>, StateError> {
        let Some(entry) = self.backend.get(key).await? else {
            self.forget_unreadable(key);
            return Ok(None);
        };
        match self.decode(key, kind, entry, check) {
            Ok(record) => {
                self.forget_unreadable(key);
                Ok(Some(record))
            }
            Err(unreadable) => {
                let error = StateError::Corrupt {
                    location: key.to_owned(),
                    reason: unreadable.reason.clone(),
                };
                self.note_unreadable(unreadable);
                Err(error)
            }
        }
    }

    /// `entry` as a `T`, or why it cannot be one.
    fn decode<T: DeserializeOwned>(
        &self,
        key: &str,
        kind: RecordKind,
        entry: KvEntry,
        check: KeyCheck<T>,
    ) -> Result<Versioned<T>, UnreadableRecord> {
        let unreadable = |reason: String| UnreadableRecord {
            key: key.to_owned(),
            kind,
            revision: entry.mod_revision,
            reason,
            job: self.layout.job_of_key(key),
        };
        if matches!(kind, RecordKind::Job | RecordKind::Site) {
            check_schema(&entry.value).map_err(unreadable)?;
        }
        let value: T = serde_json::from_slice(&entry.value)
            .map_err(|e| unreadable(format!("record does not decode: {e}")))?;
        check(&self.layout, key, &value).map_err(unreadable)?;
        Ok(Versioned {
            value,
            revision: entry.mod_revision,
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, UnreadableRecord>> {
        // A poisoned lock only means a panic elsewhere while editing a map: still sound.
        self.unreadable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers an unreadable record; warns once per key (again if its reason changes).
    fn note_unreadable(&self, record: UnreadableRecord) {
        let mut registry = self.registry();
        if registry.get(&record.key) != Some(&record) {
            tracing::warn!(
                key = %record.key,
                kind = record.kind.as_str(),
                revision = record.revision,
                reason = %record.reason,
                "stored record cannot be used: left out, reported, never acted on; rewrite or delete it"
            );
            registry.insert(record.key.clone(), record);
        }
    }

    fn forget_unreadable(&self, key: &str) {
        if self.registry().remove(key).is_some() {
            tracing::info!(
                key,
                "stored record no longer unreadable (rewritten or deleted)"
            );
        }
    }

    /// After a whole listing of `prefix`: what it found unreadable is remembered, and what
    /// it no longer holds unreadable is forgotten.
    fn settle_unreadable(&self, prefix: &str, found: &[UnreadableRecord]) {
        let gone: Vec<String> = self
            .registry()
            .keys()
            .filter(|key| key.starts_with(prefix) && !found.iter().any(|u| &u.key == *key))
            .cloned()
            .collect();
        for key in gone {
            self.forget_unreadable(&key);
        }
        for record in found {
            self.note_unreadable(record.clone());
        }
    }

    async fn write<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: Expected,
    ) -> Result<i64, StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| cannot_encode(key, e))?;
        self.write_bytes(key, bytes, expected).await
    }

    /// [`Self::write`] of a job or site record, marked with [`SCHEMA_VERSION`].
    async fn write_versioned<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: Expected,
    ) -> Result<i64, StateError> {
        let mut record = serde_json::to_value(value).map_err(|e| cannot_encode(key, e))?;
        let Some(fields) = record.as_object_mut() else {
            return Err(StateError::Corrupt {
                location: key.to_owned(),
                reason: "cannot encode record: not a JSON object".into(),
            });
        };
        fields.insert(SCHEMA_FIELD.into(), SCHEMA_VERSION.into());
        let bytes = serde_json::to_vec(&record).map_err(|e| cannot_encode(key, e))?;
        self.write_bytes(key, bytes, expected).await
    }

    async fn write_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expected: Expected,
    ) -> Result<i64, StateError> {
        let revision = self.backend.put(key, bytes, expected).await?;
        self.forget_unreadable(key);
        Ok(revision)
    }

    async fn delete(&self, key: &str, expected: Expected) -> Result<bool, StateError> {
        let existed = self.backend.delete(key, expected).await?;
        self.forget_unreadable(key);
        Ok(existed)
    }

    /// The greatest audit sequence stored, stepping over keys below the audit prefix that
    /// are not sequence numbers (remembered as unreadable).
    async fn last_audit_seq(&self, prefix: &str) -> Result<u64, StateError> {
        let mut below: Option<String> = None;
        for _ in 0..=MAX_ODD_AUDIT_KEYS {
            let Some((key, entry)) = self.backend.last(prefix, below.as_deref()).await? else {
                return Ok(0);
            };
            match audit_seq(prefix, &key) {
                Some(seq) => return Ok(seq),
                None => {
                    self.note_unreadable(odd_audit_key(&key, entry.mod_revision));
                    below = Some(key);
                }
            }
        }
        Err(StateError::Corrupt {
            location: prefix.to_owned(),
            reason: format!(
                "more than {MAX_ODD_AUDIT_KEYS} keys below the audit log are not sequence numbers; delete them"
            ),
        })
    }

    /// Every record under `prefix`, page by page, and apart those that cannot be used
    /// (remembered: see [`StateStore::unreadable_records`]).
    async fn read_all<T: DeserializeOwned>(
        &self,
        prefix: &str,
        kind: RecordKind,
        check: KeyCheck<T>,
    ) -> Result<(Vec<(String, Versioned<T>)>, Vec<UnreadableRecord>), StateError> {
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self
                .backend
                .list(prefix, start.as_deref(), LIST_PAGE)
                .await?;
            let full = page.len() == LIST_PAGE;
            for (key, entry) in page {
                // The next page starts just after this key.
                start = Some(format!("{key}\0"));
                match self.decode(&key, kind, entry, check) {
                    Ok(record) => records.push((key, record)),
                    Err(record) => unreadable.push(record),
                }
            }
            if !full {
                self.settle_unreadable(prefix, &unreadable);
                return Ok((records, unreadable));
            }
        }
    }
}

fn expected_of<T>(current: &Option<Versioned<T>>) -> Expected {
    match current {
        Some(current) => Expected::Revision(current.revision),
        None => Expected::Absent,
    }
}

#[async_trait]
impl<B: KvBackend> StateStore for KvStateStore<B> {
    async fn get_job(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Versioned<JobRecord>>, StateError> {
        self.read(&self.layout.job(namespace, name)?, RecordKind::Job, job_key)
            .await
    }

    async fn scan_jobs(&self) -> Result<JobScan, StateError> {
        let (jobs, unreadable) = self
            .read_all(&self.layout.jobs(), RecordKind::Job, job_key)
            .await?;
        Ok(JobScan {
            jobs: jobs.into_iter().map(|(_, record)| record).collect(),
            unreadable,
        })
    }

    fn unreadable_records(&self) -> Vec<UnreadableRecord> {
        self.registry().values().cloned().collect()
    }

    async fn recheck_unreadable(&self) -> Result<(), StateError> {
        let remembered: Vec<(String, RecordKind, i64)> = self
            .registry()
            .values()
            // A key that was not UTF-8 is remembered as shown (U+FFFD), which cannot be read
            // back by name: only the listing that found it can settle it.
            .filter(|u| !matches!(u.kind, RecordKind::Job | RecordKind::Site))
            .filter(|u| !u.key.contains(char::REPLACEMENT_CHARACTER))
            .map(|u| (u.key.clone(), u.kind, u.revision))
            .collect();
        let audits = self.layout.audits();
        for (key, kind, revision) in remembered {
            let Some(entry) = self.backend.get(&key).await? else {
                self.forget_unreadable(&key);
                continue;
            };
            if entry.mod_revision == revision {
                continue;
            }
            // Rewritten: decoded again as what its key promises.
            let decoded = match kind {
                RecordKind::Checkpoint => self
                    .decode::<CheckpointPointer>(&key, kind, entry, checkpoint_key)
                    .map(drop),
                RecordKind::Failover => self
                    .decode::<serde_json::Value>(&key, kind, entry, any_key)
                    .map(drop),
                RecordKind::Audit if audit_seq(&audits, &key).is_none() => {
                    Err(odd_audit_key(&key, entry.mod_revision))
                }
                RecordKind::Audit => self
                    .decode::<AuditEntry>(&key, kind, entry, any_key)
                    .map(drop),
                RecordKind::Job | RecordKind::Site => continue,
            };
            match decoded {
                Ok(()) => self.forget_unreadable(&key),
                Err(unreadable) => self.note_unreadable(unreadable),
            }
        }
        Ok(())
    }

    async fn put_job(&self, job: &JobRecord, expected: Expected) -> Result<i64, StateError> {
        let key = self.layout.job(&job.namespace, &job.name)?;
        self.write_versioned(&key, job, expected).await
    }

    async fn delete_job(
        &self,
        namespace: &str,
        name: &str,
        expected: Expected,
    ) -> Result<bool, StateError> {
        let key = self.layout.job(namespace, name)?;
        self.delete(&key, expected).await
    }

    async fn bump_generation(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Versioned<JobRecord>, StateError> {
        let key = self.layout.job(namespace, name)?;
        let mut attempt = 0;
        loop {
            let Some(current) = self.read(&key, RecordKind::Job, job_key).await? else {
                return Err(StateError::NotFound { key });
            };
            let mut next = current.value;
            next.generation =
                next.generation
                    .checked_add(1)
                    .ok_or_else(|| StateError::CounterLimit {
                        location: key.clone(),
                        counter: "the generation",
                        value: next.generation.to_string(),
                        consequence: "a launch needs a generation larger than every earlier one; delete and re-create the job",
                    })?;
            match self
                .write_versioned(&key, &next, Expected::Revision(current.revision))
                .await
            {
                Ok(revision) => {
                    return Ok(Versioned {
                        value: next,
                        revision,
                    });
                }
                Err(StateError::Conflict { .. }) if attempt < MAX_RACE_RETRIES => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }

    async fn get_checkpoint(
        &self,
        namespace: &str,
        name: &str,
        kind: CheckpointKind,
        site: &str,
    ) -> Result<Option<Versioned<CheckpointPointer>>, StateError> {
        let key = self.layout.checkpoint(namespace, name, kind, site)?;
        self.read(&key, RecordKind::Checkpoint, any_key).await
    }

    async fn put_checkpoint(
        &self,
        namespace: &str,
        name: &str,
        kind: CheckpointKind,
        site: &str,
        pointer: &CheckpointPointer,
    ) -> Result<i64, StateError> {
        let key = self.layout.checkpoint(namespace, name, kind, site)?;
        self.write(&key, pointer, Expected::Any).await
    }

    async fn list_checkpoints(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<CheckpointEntry>, StateError> {
        let prefix = self.layout.checkpoints_of_job(namespace, name)?;
        let (pointers, _) = self
            .read_all(&prefix, RecordKind::Checkpoint, checkpoint_key)
            .await?;
        Ok(pointers
            .into_iter()
            .filter_map(|(key, pointer)| {
                // `checkpoint_key` let only keys of this shape through.
                let (kind, site) = checkpoint_kind_and_site(&key)?;
                Some(CheckpointEntry {
                    kind,
                    site: site.to_owned(),
                    pointer,
                })
            })
            .collect())
    }

    async fn list_all_checkpoints(&self) -> Result<Vec<JobCheckpoint>, StateError> {
        // Unreadable pointers are left out and remembered like every other unreadable record.
        let (pointers, _) = self
            .read_all(
                &self.layout.checkpoints(),
                RecordKind::Checkpoint,
                checkpoint_key,
            )
            .await?;
        Ok(pointers
            .into_iter()
            .filter_map(|(key, pointer)| {
                // `checkpoint_key` let only keys of this shape through.
                let (namespace, name) = self.layout.job_of_key(&key)?;
                let (kind, site) = checkpoint_kind_and_site(&key)?;
                Some(JobCheckpoint {
                    namespace,
                    name,
                    entry: CheckpointEntry {
                        kind,
                        site: site.to_owned(),
                        pointer,
                    },
                })
            })
            .collect())
    }

    async fn get_site(&self, site: &str) -> Result<Option<Versioned<SiteRecord>>, StateError> {
        self.read(&self.layout.site(site)?, RecordKind::Site, site_key)
            .await
    }

    async fn list_sites(&self) -> Result<Vec<Versioned<SiteRecord>>, StateError> {
        let (sites, _) = self
            .read_all(&self.layout.sites(), RecordKind::Site, site_key)
            .await?;
        Ok(sites.into_iter().map(|(_, record)| record).collect())
    }

    async fn put_site(&self, record: &SiteRecord) -> Result<i64, StateError> {
        let key = self.layout.site(&record.site)?;
        let mut attempt = 0;
        loop {
            let expected = match self.read(&key, RecordKind::Site, site_key).await {
                Ok(Some(stored)) if record.epoch < stored.value.epoch => {
                    return Err(StateError::EpochRegression {
                        key,
                        stored: stored.value.epoch,
                        offered: record.epoch,
                    });
                }
                Ok(current) => expected_of(&current),
                // Nobody can read the stored epoch, so nothing launches on it; the writer (the
                // failover engine, which keeps epochs in its own records) replaces it, compared
                // by revision so that a record rewritten meanwhile is checked again.
                Err(StateError::Corrupt { reason, .. }) => match self.backend.get(&key).await? {
                    Some(entry) => {
                        tracing::warn!(key, %reason, epoch = record.epoch, "replacing an unreadable site record");
                        Expected::Revision(entry.mod_revision)
                    }
                    None => Expected::Absent,
                },
                Err(error) => return Err(error),
            };
            match self.write_versioned(&key, record, expected).await {
                Err(StateError::Conflict { .. }) if attempt < MAX_RACE_RETRIES => attempt += 1,
                result => return result,
            }
        }
    }

    async fn put_failover_record(
        &self,
        name: &str,
        record: &serde_json::Value,
    ) -> Result<i64, StateError> {
        let key = self.layout.failover_record(name)?;
        self.write(&key, record, Expected::Any).await
    }

    async fn list_failover_records(&self) -> Result<Vec<(String, serde_json::Value)>, StateError> {
        let prefix = self.layout.failover_records();
        let (records, _) = self
            .read_all::<serde_json::Value>(&prefix, RecordKind::Failover, any_key)
            .await?;
        Ok(records
            .into_iter()
            .map(|(key, record)| {
                (
                    key.strip_prefix(&prefix).unwrap_or(&key).to_owned(),
                    record.value,
                )
            })
            .collect())
    }

    async fn delete_failover_record(&self, name: &str) -> Result<bool, StateError> {
        let key = self.layout.failover_record(name)?;
        self.delete(&key, Expected::Any).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StateError> {
        let prefix = self.layout.audits();
        let mut attempt = 0;
        loop {
            // The next sequence is one past the greatest stored; creating it with `Absent`
            // makes two concurrent appenders pick different numbers (the loser retries).
            let last = self.last_audit_seq(&prefix).await?;
            let seq = next_audit_seq(&prefix, last, 1)?;
            match self
                .write(&self.layout.audit(seq), entry, Expected::Absent)
                .await
            {
                Ok(_) => return Ok(seq),
                Err(StateError::Conflict { .. }) if attempt < MAX_RACE_RETRIES => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// One read of the last sequence, then every entry written at once (the backend may
    /// commit them together: etcd batches concurrent writes into one fsync). An entry
    /// another appender beat to its number is appended after, on its own.
    async fn append_audits(&self, entries: &[AuditEntry]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let prefix = self.layout.audits();
        let last = self.last_audit_seq(&prefix).await?;
        // Every number is checked before anything is written: a batch that would pass the
        // largest sequence writes none of its entries.
        let numbered = (1..=entries.len() as u64)
            .map(|offset| next_audit_seq(&prefix, last, offset))
            .collect::<Result<Vec<u64>, StateError>>()?;
        let writes = entries.iter().zip(numbered).map(|(entry, seq)| async move {
            let key = self.layout.audit(seq);
            (entry, self.write(&key, entry, Expected::Absent).await)
        });
        let mut raced = Vec::new();
        for (entry, result) in futures::future::join_all(writes).await {
            match result {
                Ok(_) => {}
                Err(StateError::Conflict { .. }) => raced.push(entry),
                Err(err) => return Err(err),
            }
        }
        for entry in raced {
            self.append_audit(entry).await?;
        }
        Ok(())
    }

    async fn list_audit(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StateError> {
        let prefix = self.layout.audits();
        let start = self.layout.audit(from_seq);
        let mut records = Vec::new();
        for (key, entry) in self.backend.list(&prefix, Some(&start), limit).await? {
            let Some(seq) = audit_seq(&prefix, &key) else {
                self.note_unreadable(odd_audit_key(&key, entry.mod_revision));
                continue;
            };
            match self.decode::<AuditEntry>(&key, RecordKind::Audit, entry, any_key) {
                Ok(entry) => {
                    self.forget_unreadable(&key);
                    records.push(AuditRecord {
                        seq,
                        entry: entry.value,
                    });
                }
                // Left out and reported; the entries around it are served.
                Err(unreadable) => self.note_unreadable(unreadable),
            }
        }
        Ok(records)
    }
}

/// The audit sequence `offset` places after `last`, if there is room.
fn next_audit_seq(prefix: &str, last: u64, offset: u64) -> Result<u64, StateError> {
    last.checked_add(offset)
        .ok_or_else(|| StateError::CounterLimit {
            location: prefix.to_owned(),
            counter: "the audit sequence",
            value: last.to_string(),
            consequence: "no entry can be appended after it; move the audit log away",
        })
}

/// The sequence number of an audit key: exactly the 20 digits [`KeyLayout::audit`] writes.
fn audit_seq(prefix: &str, key: &str) -> Option<u64> {
    key.strip_prefix(prefix)
        .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
}

fn odd_audit_key(key: &str, revision: i64) -> UnreadableRecord {
    UnreadableRecord {
        key: key.to_owned(),
        kind: RecordKind::Audit,
        revision,
        reason: "the key does not end in a 20-digit audit sequence number".to_owned(),
        job: None,
    }
}

/// The kind and site a checkpoint pointer's key names (`…/checkpoints/<ns>/<name>/<kind>/<site>`).
fn checkpoint_kind_and_site(key: &str) -> Option<(CheckpointKind, &str)> {
    let mut tail = key.rsplitn(3, '/');
    let site = tail.next()?;
    let kind = CheckpointKind::parse(tail.next()?)?;
    super::keys::validate_segment("site name", site).ok()?;
    Some((kind, site))
}

fn checkpoint_key(layout: &KeyLayout, key: &str, _: &CheckpointPointer) -> Result<(), String> {
    let below_job = layout
        .job_of_key(key)
        .and_then(|(namespace, name)| {
            let prefix = layout.checkpoints_of_job(&namespace, &name).ok()?;
            key.strip_prefix(&prefix).map(str::to_owned)
        })
        .filter(|rest| rest.matches('/').count() == 1);
    match below_job.and_then(|_| checkpoint_kind_and_site(key)) {
        Some(_) => Ok(()),
        None => Err(
            "the key is not <namespace>/<name>/<completed|replicated>/<site> below the checkpoints"
                .to_owned(),
        ),
    }
}
