//! RPO exposure at a glance: for every job twinsite would fail over, and every peer site it
//! replicates to, what a loss of the job's site would cost now (the age of the newest
//! checkpoint verified at the peer, or all of its state when there is none), the files and
//! bytes still to copy, and whether copying fails.
//!
//! The leader's replication driver feeds the [`ExposureBook`] (backlog, errors); the
//! exposure monitor ([`Controller::monitor_exposure`], every few seconds beside the
//! replication rounds) judges each job from the store's `replicated` pointers with
//! `scheduler::diagnosis::judge_exposure`, exports `twinsite_replication_*`, and when a job
//! crosses `replication.maxLag` either way writes its `ReplicationBehind` condition and an
//! audit entry (the event). Followers export nothing: they do not replicate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use scheduler::diagnosis::{Exposure, ExposureInput, ReplicatedAt, judge_exposure};
use scheduler::input::streamjob::FailoverTrigger;
use scheduler::model::{JobId, SiteId};
use serde::Serialize;

use super::metrics::{ExposureLabel, SitePairLabel};
use super::status::{Condition, REPLICATION_BEHIND};
use super::{Controller, stream_job_of};
use crate::state::{CheckpointKind, Expected, StateError};

/// One job's exposure at one peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerExposure {
    /// Where the job runs.
    pub site: String,
    /// Where its checkpoints are copied to.
    pub peer: String,
    #[serde(flatten)]
    pub exposure: Exposure,
}

/// What the replication driver reports about one job's copies to one peer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyState {
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    /// Why the last copy failed; cleared by the next success.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Book {
    copies: BTreeMap<(JobId, SiteId), CopyState>,
    /// When this leader began watching the job replicate from a site to a peer.
    tracked_since: BTreeMap<(JobId, SiteId, SiteId), i64>,
    judged: BTreeMap<JobId, Vec<PeerExposure>>,
    /// Jobs whose breach this leader has reported (seeded from the stored conditions, so a
    /// new leader does not report a breach twice).
    reported: Option<BTreeSet<JobId>>,
    exported: BTreeSet<ExposureLabel>,
    failing_pairs: BTreeSet<SitePairLabel>,
}

/// The leader's exposure state. Volatile: a new leader rebuilds it.
#[derive(Default)]
pub struct ExposureBook {
    book: Mutex<Book>,
}

fn lock(m: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ExposureBook {
    /// What `checkpoint` still needs copied to `peer` (hdfs-sync's `CheckpointBacklog`).
    pub fn backlog(&self, job: &JobId, peer: &SiteId, files: u64, bytes: u64) {
        let mut book = lock(&self.book);
        let copy = book.copies.entry((job.clone(), peer.clone())).or_default();
        copy.backlog_files = files;
        copy.backlog_bytes = bytes;
    }

    /// One file of the backlog verified at the peer.
    pub fn file_verified(&self, job: &JobId, peer: &SiteId, bytes: u64) {
        let mut book = lock(&self.book);
        if let Some(copy) = book.copies.get_mut(&(job.clone(), peer.clone())) {
            copy.backlog_files = copy.backlog_files.saturating_sub(1);
            copy.backlog_bytes = copy.backlog_bytes.saturating_sub(bytes);
        }
    }

    /// The copy round of a job ended: nothing is left to copy, or it failed with `error`
    /// (the backlog stays what it was).
    pub fn copy_ended(&self, job: &JobId, peer: &SiteId, error: Option<String>) {
        let mut book = lock(&self.book);
        let copy = book.copies.entry((job.clone(), peer.clone())).or_default();
        match error {
            None => *copy = CopyState::default(),
            Some(error) => copy.last_error = Some(error),
        }
    }

    pub fn copy_state(&self, job: &JobId, peer: &SiteId) -> CopyState {
        lock(&self.book)
            .copies
            .get(&(job.clone(), peer.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// The last judgement of every tracked job (the leader's; empty on followers).
    pub fn judged(&self) -> BTreeMap<JobId, Vec<PeerExposure>> {
        lock(&self.book).judged.clone()
    }

    pub fn of(&self, job: &JobId) -> Vec<PeerExposure> {
        lock(&self.book)
            .judged
            .get(job)
            .cloned()
            .unwrap_or_default()
    }

    /// Leadership is gone: forget everything (the next leader judges afresh).
    fn reset(&self) -> Book {
        std::mem::take(&mut *lock(&self.book))
    }
}

/// What one monitor tick did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExposureReport {
    pub tracked: usize,
    pub breached: Vec<JobId>,
    /// Jobs that crossed the bound this tick (upwards: `true`).
    pub transitions: Vec<(JobId, bool)>,
    /// Condition writes skipped because the record changed meanwhile; redone next tick.
    pub conflicts: usize,
}

fn label(job: &JobId, site: &SiteId, peer: &SiteId) -> ExposureLabel {
    ExposureLabel {
        streamjob: job.0.clone(),
        site: site.0.clone(),
        peer: peer.0.clone(),
    }
}

impl Controller {
    /// Stops exporting exposure (followers do not replicate) and forgets it.
    pub(crate) fn reset_exposure(&self) {
        let book = self.exposure.reset();
        let metrics = &self.metrics.replication;
        for label in &book.exported {
            metrics.rpo_seconds.remove(label);
            metrics.rpo_bound_seconds.remove(label);
            metrics.restorable.remove(label);
            metrics.lag_breached.remove(label);
            metrics.backlog_files.remove(label);
            metrics.backlog_bytes.remove(label);
        }
        for pair in &book.failing_pairs {
            metrics.jobs_failing.remove(pair);
        }
    }

    /// One exposure tick: judges every tracked job against `replication.maxLag`, exports
    /// the result, and writes each job's `ReplicationBehind` condition when it changes (with
    /// an audit entry when the job crosses the bound). Fails only on store errors.
    pub async fn monitor_exposure(&self) -> Result<ExposureReport, StateError> {
        let now = chrono::Utc::now();
        let now_ms = now.timestamp_millis();
        let bound = self.policy.replication().max_lag;
        let records = self.store.list_jobs().await?;
        let mut replicated: BTreeMap<(String, String, String), ReplicatedAt> = BTreeMap::new();
        for pointer in self.store.list_all_checkpoints().await? {
            if pointer.entry.kind == CheckpointKind::Replicated {
                replicated.insert(
                    (pointer.namespace, pointer.name, pointer.entry.site),
                    ReplicatedAt {
                        checkpoint_id: pointer.entry.pointer.value.checkpoint_id,
                        completed_at_ms: pointer.entry.pointer.value.recorded_at_unix_ms,
                    },
                );
            }
        }

        let mut report = ExposureReport::default();
        let mut judged: BTreeMap<JobId, Vec<PeerExposure>> = BTreeMap::new();
        let mut seen_pairs = BTreeSet::new();
        {
            let mut book = lock(&self.exposure.book);
            for record in &records {
                let Some(placement) = &record.value.placement else {
                    continue;
                };
                let Ok(job) = stream_job_of(&record.value) else {
                    continue;
                };
                // Only jobs a failover restores from a replicated checkpoint are exposed.
                if job.spec.failover.mode == FailoverTrigger::None || job.spec.checkpoints.is_none()
                {
                    continue;
                }
                let site = SiteId(placement.site.clone());
                if !self.storage_roots.contains_key(&site) {
                    continue;
                }
                let id = job.id();
                for peer in self.storage_roots.keys().filter(|p| **p != site) {
                    let key = (id.clone(), site.clone(), peer.clone());
                    let tracked_since = *book.tracked_since.entry(key.clone()).or_insert(now_ms);
                    seen_pairs.insert(key);
                    let copy = book
                        .copies
                        .get(&(id.clone(), peer.clone()))
                        .cloned()
                        .unwrap_or_default();
                    let exposure = judge_exposure(&ExposureInput {
                        now_ms,
                        replicated: replicated
                            .get(&(
                                record.value.namespace.clone(),
                                record.value.name.clone(),
                                peer.0.clone(),
                            ))
                            .copied(),
                        tracked_since_ms: tracked_since,
                        bound,
                        backlog_files: copy.backlog_files,
                        backlog_bytes: copy.backlog_bytes,
                        last_error: copy.last_error,
                    });
                    judged.entry(id.clone()).or_default().push(PeerExposure {
                        site: site.0.clone(),
                        peer: peer.0.clone(),
                        exposure,
                    });
                }
            }
            book.tracked_since.retain(|key, _| seen_pairs.contains(key));
            report.tracked = judged.len();
            self.export_exposure(&mut book, &judged);
            if book.reported.is_none() {
                // A new leader: breaches already recorded in the store were reported.
                book.reported = Some(
                    records
                        .iter()
                        .filter(|r| {
                            r.value
                                .status
                                .clone()
                                .condition(REPLICATION_BEHIND)
                                .is_some_and(Condition::is_true)
                        })
                        .map(|r| JobId::new(&r.value.namespace, &r.value.name))
                        .collect(),
                );
            }
            book.judged = judged.clone();
        }

        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for record in records {
            let id = JobId::new(&record.value.namespace, &record.value.name);
            let peers = judged.get(&id);
            let breached: Vec<&PeerExposure> = peers
                .map(|p| p.iter().filter(|e| e.exposure.breached).collect())
                .unwrap_or_default();
            // A status that does not parse is left to the reconcile pass, never overwritten.
            if record.value.status.rederived {
                continue;
            }
            let mut status = record.value.status.clone();
            let had_true = status
                .condition(REPLICATION_BEHIND)
                .is_some_and(Condition::is_true);
            let describe = |exposures: &mut dyn Iterator<Item = &PeerExposure>| {
                exposures
                    .map(|e| format!("{}: {}", e.peer, e.exposure.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let condition = match (peers, breached.first()) {
                (Some(_), Some(first)) => Condition {
                    kind: REPLICATION_BEHIND.into(),
                    status: "True".into(),
                    reason: if first.exposure.restorable {
                        "LagAboveMaxLag".into()
                    } else {
                        "NoReplicatedCheckpoint".into()
                    },
                    message: describe(&mut breached.iter().copied()),
                    last_transition_time: at.clone(),
                },
                (Some(peers), None) => Condition {
                    kind: REPLICATION_BEHIND.into(),
                    status: "False".into(),
                    reason: "WithinMaxLag".into(),
                    message: describe(&mut peers.iter()),
                    last_transition_time: at.clone(),
                },
                // Not tracked any more (no placement, failover.mode none).
                (None, _) => Condition {
                    kind: REPLICATION_BEHIND.into(),
                    status: "False".into(),
                    reason: "NotReplicated".into(),
                    message: "the job is not placed or not failed over (failover.mode none): its exposure is not tracked".into(),
                    last_transition_time: at.clone(),
                },
            };
            let now_breached = condition.is_true();
            if now_breached {
                report.breached.push(id.clone());
            }
            // Written only when it turns: an absent condition means not breached, and the
            // message (ages change every tick) is the one of the last turn. Live figures are
            // in the job's `replication` (API, page, metrics).
            if had_true == now_breached {
                self.report_transition(&id, now_breached, &condition, &breached, &mut report)
                    .await;
                continue;
            }
            status.set_condition(condition.clone());
            let mut updated = record.value.clone();
            updated.status = status.clone();
            match self
                .store
                .put_job(&updated, Expected::Revision(record.revision))
                .await
            {
                Ok(_) => {
                    self.report_transition(&id, now_breached, &condition, &breached, &mut report)
                        .await;
                }
                Err(StateError::Conflict { .. } | StateError::NotFound { .. }) => {
                    report.conflicts += 1
                }
                Err(error) => return Err(error),
            }
        }
        Ok(report)
    }

    /// Audits and counts a job crossing its bound, once per crossing.
    async fn report_transition(
        &self,
        id: &JobId,
        breached: bool,
        condition: &Condition,
        exposures: &[&PeerExposure],
        report: &mut ExposureReport,
    ) {
        let crossed = {
            let mut book = lock(&self.exposure.book);
            let reported = book.reported.get_or_insert_with(BTreeSet::new);
            if breached {
                reported.insert(id.clone())
            } else {
                reported.remove(id)
            }
        };
        if !crossed {
            return;
        }
        report.transitions.push((id.clone(), breached));
        if breached {
            for e in exposures {
                self.metrics
                    .replication
                    .lag_breaches
                    .get_or_create(&SitePairLabel {
                        site: e.site.clone(),
                        peer: e.peer.clone(),
                    })
                    .inc();
            }
            tracing::warn!(job = %id, message = %condition.message, "RPO exposure above replication.maxLag");
            self.audit(
                "rpo-breach",
                &id.0,
                &format!("{}: {}", condition.reason, condition.message),
            )
            .await;
        } else {
            tracing::info!(job = %id, "RPO exposure back within replication.maxLag");
            self.audit(
                "rpo-recovered",
                &id.0,
                &format!("{}: {}", condition.reason, condition.message),
            )
            .await;
        }
    }

    /// Sets every `twinsite_replication_*` gauge from `judged` and drops the series of jobs
    /// no longer tracked.
    fn export_exposure(&self, book: &mut Book, judged: &BTreeMap<JobId, Vec<PeerExposure>>) {
        let metrics = &self.metrics.replication;
        let mut exported = BTreeSet::new();
        let mut failing: BTreeMap<SitePairLabel, i64> = BTreeMap::new();
        for (id, peers) in judged {
            for p in peers {
                let (site, peer) = (SiteId(p.site.clone()), SiteId(p.peer.clone()));
                let l = label(id, &site, &peer);
                let e = &p.exposure;
                metrics
                    .rpo_seconds
                    .get_or_create(&l)
                    .set(e.rpo_or_infinity());
                metrics
                    .rpo_bound_seconds
                    .get_or_create(&l)
                    .set(e.bound_seconds);
                metrics
                    .restorable
                    .get_or_create(&l)
                    .set(i64::from(e.restorable));
                metrics
                    .lag_breached
                    .get_or_create(&l)
                    .set(i64::from(e.breached));
                metrics
                    .backlog_files
                    .get_or_create(&l)
                    .set(i64::try_from(e.backlog_files).unwrap_or(i64::MAX));
                metrics
                    .backlog_bytes
                    .get_or_create(&l)
                    .set(i64::try_from(e.backlog_bytes).unwrap_or(i64::MAX));
                *failing
                    .entry(SitePairLabel {
                        site: p.site.clone(),
                        peer: p.peer.clone(),
                    })
                    .or_default() += i64::from(e.last_error.is_some());
                exported.insert(l);
            }
        }
        for gone in book.exported.difference(&exported) {
            metrics.rpo_seconds.remove(gone);
            metrics.rpo_bound_seconds.remove(gone);
            metrics.restorable.remove(gone);
            metrics.lag_breached.remove(gone);
            metrics.backlog_files.remove(gone);
            metrics.backlog_bytes.remove(gone);
        }
        // Every pair between sites with storage has a value, 0 included, so an alert on it
        // resolves instead of going stale.
        for site in self.storage_roots.keys() {
            for peer in self.storage_roots.keys().filter(|p| *p != site) {
                failing
                    .entry(SitePairLabel {
                        site: site.0.clone(),
                        peer: peer.0.clone(),
                    })
                    .or_default();
            }
        }
        for (pair, count) in &failing {
            metrics.jobs_failing.get_or_create(pair).set(*count);
        }
        book.failing_pairs = failing.into_keys().collect();
        book.exported = exported;
    }
}
