//! The typed state store, written once over any [`KvBackend`]: JSON encoding, the key
//! layout, and the read-check-write loops (generation bump, epoch guard, audit sequence).

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::KeyLayout;
use super::kv::{KvBackend, KvEntry};
use super::{
    AuditEntry, AuditRecord, CheckpointEntry, CheckpointKind, CheckpointPointer, Expected,
    JobRecord, OperationRecord, SiteRecord, StateError, StateStore, Versioned,
};

/// How often a read-check-write loop retries after losing a race before giving up with the
/// conflict. Only one leader writes, so races are between its own tasks and short-lived.
const MAX_RACE_RETRIES: usize = 64;

/// Page size of listings: keeps one etcd response far below gRPC's 4 MiB message limit.
const LIST_PAGE: usize = 256;

/// The [`StateStore`] over one backend.
pub struct KvStateStore<B> {
    backend: B,
    layout: KeyLayout,
}

impl<B: KvBackend> KvStateStore<B> {
    pub fn new(backend: B, layout: KeyLayout) -> Self {
        Self { backend, layout }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, StateError> {
        match self.backend.get(key).await? {
            Some(entry) => decode(key, entry).map(Some),
            None => Ok(None),
        }
    }

    async fn write<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: Expected,
    ) -> Result<i64, StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StateError::Corrupt {
            location: key.to_owned(),
            reason: format!("cannot encode record: {e}"),
        })?;
        self.backend.put(key, bytes, expected).await
    }

    /// Every record under `prefix`, page by page.
    async fn read_all<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Versioned<T>)>, StateError> {
        let mut records = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self
                .backend
                .list(prefix, start.as_deref(), LIST_PAGE)
                .await?;
            let full = page.len() == LIST_PAGE;
            for (key, entry) in page {
                let record = decode(&key, entry)?;
                // The next page starts just after this key.
                start = Some(format!("{key}\0"));
                records.push((key, record));
            }
            if !full {
                return Ok(records);
            }
        }
    }
}

fn decode<T: DeserializeOwned>(key: &str, entry: KvEntry) -> Result<Versioned<T>, StateError> {
    let value = serde_json::from_slice(&entry.value).map_err(|e| StateError::Corrupt {
        location: key.to_owned(),
        reason: format!("record does not decode: {e}"),
    })?;
    Ok(Versioned {
        value,
        revision: entry.mod_revision,
    })
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
        self.read(&self.layout.job(namespace, name)?).await
    }

    async fn list_jobs(&self) -> Result<Vec<Versioned<JobRecord>>, StateError> {
        Ok(self
            .read_all(&self.layout.jobs())
            .await?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    async fn put_job(&self, job: &JobRecord, expected: Expected) -> Result<i64, StateError> {
        let key = self.layout.job(&job.namespace, &job.name)?;
        self.write(&key, job, expected).await
    }

    async fn delete_job(
        &self,
        namespace: &str,
        name: &str,
        expected: Expected,
    ) -> Result<bool, StateError> {
        let key = self.layout.job(namespace, name)?;
        self.backend.delete(&key, expected).await
    }

    async fn bump_generation(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Versioned<JobRecord>, StateError> {
        let key = self.layout.job(namespace, name)?;
        let mut attempt = 0;
        loop {
            let Some(current) = self.read::<JobRecord>(&key).await? else {
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
                .write(&key, &next, Expected::Revision(current.revision))
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
        self.read(&self.layout.checkpoint(namespace, name, kind, site)?)
            .await
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
        let mut entries = Vec::new();
        for (key, pointer) in self.read_all::<CheckpointPointer>(&prefix).await? {
            let rest = key.strip_prefix(&prefix).unwrap_or_default();
            let parsed = rest
                .split_once('/')
                .and_then(|(kind, site)| Some((CheckpointKind::parse(kind)?, site)));
            let Some((kind, site)) = parsed else {
                return Err(StateError::Corrupt {
                    location: key.clone(),
                    reason: "key is not <kind>/<site> below the job's checkpoints".to_owned(),
                });
            };
            entries.push(CheckpointEntry {
                kind,
                site: site.to_owned(),
                pointer,
            });
        }
        Ok(entries)
    }

    async fn get_site(&self, site: &str) -> Result<Option<Versioned<SiteRecord>>, StateError> {
        self.read(&self.layout.site(site)?).await
    }

    async fn list_sites(&self) -> Result<Vec<Versioned<SiteRecord>>, StateError> {
        Ok(self
            .read_all(&self.layout.sites())
            .await?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    async fn put_site(&self, record: &SiteRecord) -> Result<i64, StateError> {
        let key = self.layout.site(&record.site)?;
        let mut attempt = 0;
        loop {
            let current = self.read::<SiteRecord>(&key).await?;
            if let Some(stored) = &current
                && record.epoch < stored.value.epoch
            {
                return Err(StateError::EpochRegression {
                    key,
                    stored: stored.value.epoch,
                    offered: record.epoch,
                });
            }
            match self.write(&key, record, expected_of(&current)).await {
                Err(StateError::Conflict { .. }) if attempt < MAX_RACE_RETRIES => attempt += 1,
                result => return result,
            }
        }
    }

    async fn get_operation(
        &self,
        id: &str,
    ) -> Result<Option<Versioned<OperationRecord>>, StateError> {
        self.read(&self.layout.operation(id)?).await
    }

    async fn list_operations(&self) -> Result<Vec<Versioned<OperationRecord>>, StateError> {
        Ok(self
            .read_all(&self.layout.operations())
            .await?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    async fn put_operation(
        &self,
        operation: &OperationRecord,
        expected: Expected,
    ) -> Result<i64, StateError> {
        let key = self.layout.operation(&operation.id)?;
        self.write(&key, operation, expected).await
    }

    async fn delete_operation(&self, id: &str, expected: Expected) -> Result<bool, StateError> {
        let key = self.layout.operation(id)?;
        self.backend.delete(&key, expected).await
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
        Ok(self
            .read_all::<serde_json::Value>(&prefix)
            .await?
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
        self.backend.delete(&key, Expected::Any).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StateError> {
        let prefix = self.layout.audits();
        let mut attempt = 0;
        loop {
            // The next sequence is one past the greatest stored; creating it with `Absent`
            // makes two concurrent appenders pick different numbers (the loser retries).
            let last = match self.backend.last(&prefix).await? {
                Some((key, _)) => parse_audit_seq(&prefix, &key)?,
                None => 0,
            };
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
        let last = match self.backend.last(&prefix).await? {
            Some((key, _)) => parse_audit_seq(&prefix, &key)?,
            None => 0,
        };
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
            let seq = parse_audit_seq(&prefix, &key)?;
            let entry: Versioned<AuditEntry> = decode(&key, entry)?;
            records.push(AuditRecord {
                seq,
                entry: entry.value,
            });
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

fn parse_audit_seq(prefix: &str, key: &str) -> Result<u64, StateError> {
    key.strip_prefix(prefix)
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| StateError::Corrupt {
            location: key.to_owned(),
            reason: "audit key does not end in a sequence number".to_owned(),
        })
}
