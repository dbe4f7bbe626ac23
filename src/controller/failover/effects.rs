//! `ControllerEffects`: what the shared failover driver asks, as this controller performs it
//! (store records, job records and launches, fences, savepoints and their copies, site
//! marks, audits, reports and metrics).

use super::*;

/// The driver's effects, as this controller performs them at `now`.
pub(super) struct ControllerEffects<'a> {
    pub(super) controller: &'a Controller,
    pub(super) now: Timestamp,
}

impl Effects for ControllerEffects<'_> {
    type Error = StateError;

    fn write_record(
        &self,
        key: &str,
        record: Option<&Record>,
    ) -> impl Future<Output = Result<(), StateError>> {
        let store = &self.controller.store;
        let value = record.map(|r| {
            serde_json::to_value(r).map_err(|e| StateError::Corrupt {
                location: key.to_string(),
                reason: format!("cannot encode failover record: {e}"),
            })
        });
        let key = key.to_string();
        async move {
            match value {
                Some(value) => store.put_failover_record(&key, &value?).await.map(|_| ()),
                None => store.delete_failover_record(&key).await.map(|_| ()),
            }
        }
    }

    fn append_audits(&self, entries: &[EngineAudit]) -> impl Future<Output = ()> {
        let at_unix_ms = chrono::Utc::now().timestamp_millis();
        let entries: Vec<crate::state::AuditEntry> = entries
            .iter()
            .map(|entry| crate::state::AuditEntry {
                actor: "failover".into(),
                action: "failover".into(),
                target: audit_target(entry),
                at_unix_ms,
                result: entry.message.clone(),
            })
            .collect();
        async move {
            if let Err(error) = self.controller.store.append_audits(&entries).await {
                tracing::warn!(%error, entries = entries.len(), "audit append failed");
            }
        }
    }

    fn mark_site(
        &self,
        site: &SiteId,
        epoch: u64,
        lost: bool,
    ) -> impl Future<Output = Result<(), StateError>> {
        let site = site.clone();
        async move {
            let state = if lost {
                SiteState::Lost
            } else {
                SiteState::Active
            };
            let stored = self.controller.store.get_site(&site.0).await?;
            if stored
                .as_ref()
                .is_some_and(|s| s.value.epoch == epoch && s.value.state == state)
            {
                // Marked already (a new leader marks again what its predecessor may not have).
                return Ok(());
            }
            if lost {
                tracing::error!(%site, epoch, "site judged lost; failing its jobs over");
                self.controller
                    .metrics
                    .sites_lost
                    .get_or_create(&crate::controller::metrics::SiteLabel {
                        site: site.0.clone(),
                    })
                    .inc();
            } else {
                tracing::info!(%site, epoch, "site recovered: its stale generations are fenced");
            }
            self.controller
                .store
                .put_site(&SiteRecord {
                    site: site.0.clone(),
                    epoch,
                    state,
                    detail: serde_json::Value::Null,
                })
                .await?;
            Ok(())
        }
    }

    fn report(&self, report: Report<'_>) {
        let controller = self.controller;
        match report {
            Report::Recovery(report) => {
                // The engine times the whole pass at its start; this relaunch is issued
                // now, after the rounds before it: the difference is part of the RTO.
                let mut report = report.clone();
                let into_pass = failover::elapsed(self.now, chrono::Utc::now());
                report.rto_from_detection += into_pass;
                report.rto_from_last_heartbeat =
                    report.rto_from_last_heartbeat.map(|d| d + into_pass);
                tracing::info!(
                    job = %report.job,
                    generation = report.generation,
                    site = %report.site,
                    reason = %report.reason,
                    rto_ms = report.rto_from_detection.as_millis() as u64,
                    rto_from_heartbeat_ms = report.rto_from_last_heartbeat.map(|d| d.as_millis() as u64),
                    rpo_ms = report.rpo.map(|d| d.as_millis() as u64),
                    "relaunch issued"
                );
                controller
                    .metrics
                    .failover_rto_seconds
                    .observe(report.rto_from_detection.as_secs_f64());
                if let Some(delay) = report.rto_from_last_heartbeat {
                    controller
                        .metrics
                        .failover_relaunch_delay_seconds
                        .observe(delay.as_secs_f64());
                }
                if let Some(rpo) = report.rpo {
                    controller
                        .metrics
                        .failover_rpo_seconds
                        .observe(rpo.as_secs_f64());
                }
                push_bounded(&controller.failover.reports, report);
            }
            Report::NotRelaunched {
                job,
                reason,
                missing,
            } => {
                tracing::warn!(%job, %reason, "not relaunched");
                controller.metrics.failover_not_relaunched.inc();
                push_bounded(
                    &controller.failover.not_relaunched,
                    NotRelaunched {
                        at: self.now,
                        job: job.clone(),
                        reason: reason.to_string(),
                        missing: *missing,
                    },
                );
            }
            // Answers to the request that asked: `Outcome` carries them back.
            Report::Plan(_) | Report::Rejected { .. } | Report::Accepted { .. } => {}
        }
    }

    fn launch(&self, launch: &Launch) -> impl Future<Output = Result<Option<Event>, StateError>> {
        let launch = launch.clone();
        async move {
            let result = self
                .controller
                .relaunch(
                    &launch.job,
                    launch.generation,
                    &launch.placement,
                    launch.restore_from.as_ref(),
                    &launch.reason.to_string(),
                    launch.reason.is_failure(),
                )
                .await?;
            self.controller
                .failover
                .metrics_relaunch(&self.controller.metrics, reason_kind(&launch.reason));
            Ok(Some(match result {
                Ok(()) => Event::LaunchSucceeded {
                    job: launch.job,
                    generation: launch.generation,
                    site: launch.site,
                },
                Err(reason) => {
                    tracing::warn!(job = %launch.job, generation = launch.generation, site = %launch.site, %reason, "failover relaunch failed");
                    Event::LaunchFailed {
                        job: launch.job,
                        generation: launch.generation,
                        site: launch.site,
                        reason,
                    }
                }
            }))
        }
    }

    fn fence(
        &self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, StateError>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            let Some(handle) = self.controller.sites.get(&site) else {
                // Not a site of this controller: nothing of it can run here.
                return Ok(Some(Event::Fenced {
                    job,
                    generation,
                    site,
                }));
            };
            match handle.stop(&job, generation).await {
                Ok(()) => {
                    tracing::info!(%job, generation, %site, "fenced");
                    Ok(Some(Event::Fenced {
                        job,
                        generation,
                        site,
                    }))
                }
                Err(error) => {
                    // Unanswered: the engine issues the fence again after its retry delay.
                    tracing::warn!(%job, generation, %site, %error, "fence not confirmed");
                    Ok(None)
                }
            }
        }
    }

    // Savepoints and their copies take seconds to minutes: they run in the background and
    // answer through the inbox, so the pass, other jobs and a cancel are never held up.
    fn savepoint(
        &self,
        op: u64,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, StateError>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            let target = match self.controller.savepoint_dir(&job, &site).await? {
                Ok(target) => target,
                Err(reason) => return Ok(Some(Event::SavepointFailed { op, job, reason })),
            };
            let Some(handle) = self.controller.sites.get(&site).cloned() else {
                return Ok(Some(Event::SavepointFailed {
                    op,
                    job,
                    reason: format!("no site {site}"),
                }));
            };
            let driver = self.controller.failover.answer_sink();
            tokio::spawn(async move {
                let event = match handle.stop_with_savepoint(&job, generation, &target).await {
                    Ok(path) => {
                        tracing::info!(%job, generation, %site, %path, "stopped with savepoint");
                        Event::SavepointCompleted {
                            op,
                            job,
                            savepoint: EnginePointer {
                                site,
                                generation,
                                id: 0,
                                path,
                                completed_at: chrono::Utc::now(),
                                kind: EngineCheckpointKind::Savepoint,
                            },
                        }
                    }
                    Err(error) => Event::SavepointFailed {
                        op,
                        job,
                        reason: error.to_string(),
                    },
                };
                driver.answer(event);
            });
            Ok(None)
        }
    }

    fn replicate_savepoint(
        &self,
        op: u64,
        job: &JobId,
        savepoint: &CheckpointPointerRef,
        to: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, StateError>> {
        let (job, savepoint, to) = (job.clone(), savepoint.clone(), to.clone());
        let roots = self.controller.storage_roots.clone();
        let driver = self.controller.failover.answer_sink();
        async move {
            tokio::spawn(async move {
                match crate::replication::copy_savepoint(
                    &roots,
                    &savepoint.site,
                    &to,
                    &savepoint.path,
                )
                .await
                {
                    Ok(path) => {
                        tracing::info!(%job, %to, %path, "savepoint replicated");
                        driver.answer(Event::ReplicationCompleted {
                            op,
                            job,
                            replica: EnginePointer {
                                site: to,
                                path,
                                ..savepoint
                            },
                        });
                    }
                    Err(reason) => {
                        tracing::warn!(%job, %to, %reason, "savepoint copy failed; retried next pass");
                        driver.retry(Command::ReplicateSavepoint {
                            op,
                            job,
                            savepoint,
                            to,
                        });
                    }
                }
            });
            Ok(None)
        }
    }

    fn trace_issued(&self, issued: &[Command]) {
        if !issued.is_empty() {
            tracing::debug!(commands = issued.len(), "failover engine issued a round");
        }
    }
}

pub(super) type CheckpointPointerRef = EnginePointer;
