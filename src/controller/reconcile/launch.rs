//! Placing and launching the jobs a pass queued: the placer's (or the rebalancer's)
//! placement, then for each job a granted generation persisted with its placement before the
//! launch. It must never launch a generation the failover engine did not grant, nor launch
//! before the record holding it is written.

use std::collections::BTreeMap;

use scheduler::model::{JobDemand, JobId, JobPlacement, SiteId, SiteSnapshot};
use scheduler::placement::rebalance;
use scheduler::placement::{self, IncrementalPlacer, PlacementOptions, PlacementRequest};

use super::super::failover::NoGeneration;
use super::super::jars::JarGate;
use super::super::launch::{Restore, launch_spec, spec_hash};
use super::super::status::{JobPhase, JobStatus};
use super::super::{Controller, stream_job_of};
use super::{PassReport, SiteView, ToPlace};
use crate::state::{JobRecord, StateError};

impl Controller {
    pub(super) async fn place_and_launch(
        &self,
        to_place: Vec<ToPlace>,
        mut kept: Vec<JobPlacement>,
        kept_demands: Vec<JobDemand>,
        views: &BTreeMap<SiteId, SiteView>,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        if to_place.is_empty() {
            return Ok(());
        }
        // A job whose jar is not in place waits, unplaced; the others go only to sites that
        // hold their jar (or need none: no storage root).
        let (mut to_place, waiting): (Vec<ToPlace>, Vec<ToPlace>) = to_place
            .into_iter()
            .partition(|t| !matches!(t.jar, JarGate::Waiting(_)));
        for t in &mut to_place {
            if let JarGate::Ready(verified) = &t.jar {
                let allowed: Vec<SiteId> = self
                    .sites
                    .keys()
                    .filter(|site| t.demand.sites.allows(site))
                    .filter(|site| {
                        verified.contains(*site) || !self.storage_roots.contains_key(*site)
                    })
                    .cloned()
                    .collect();
                t.demand.sites.allowed = allowed;
            }
        }
        // Most important first, so that when room runs out it is the least important waiting.
        // (`Priority` orders `Critical` highest.)
        to_place.sort_by(|a, b| {
            b.demand
                .priority
                .cmp(&a.demand.priority)
                .then_with(|| a.demand.id.cmp(&b.demand.id))
        });
        let snapshots: Vec<SiteSnapshot> = views.values().map(|v| v.snapshot.clone()).collect();
        let mut demands = kept_demands;
        demands.extend(to_place.iter().map(|t| t.demand.clone()));
        // Capacity whose lending window closes within the lead time takes nothing new.
        let now = self.clock.now();
        let policy = rebalance::placement_view(
            &self.policy.placement_policy(),
            self.policy.rebalance(),
            now,
        );
        // Moved jobs take their planned places; the placer works around them.
        kept.extend(to_place.iter().filter_map(|t| t.planned.clone()));
        let request = PlacementRequest {
            sites: &snapshots,
            jobs: &demands,
            policy: &policy,
            running: &[],
            at: now,
            options: PlacementOptions::default(),
        };
        let mut decided: BTreeMap<JobId, Result<JobPlacement, String>> = BTreeMap::new();
        if to_place.is_empty() {
            // Only jobs waiting for their jar.
        } else if kept.is_empty() {
            // Nothing runs yet: the full planner also honours failover reserves and tiers.
            let plan = placement::plan(&request);
            for p in plan.placements {
                decided.insert(p.job.clone(), Ok(p));
            }
            for u in plan.unplaced {
                decided.insert(u.job.clone(), Err(u.reason));
            }
        } else {
            let mut placer = IncrementalPlacer::new(&request, &kept);
            for t in &to_place {
                let outcome = match &t.planned {
                    Some(planned) => Ok(planned.clone()),
                    None => placer.place_one(&t.demand),
                };
                decided.insert(t.demand.id.clone(), outcome);
            }
            // The room a higher tier took is freed before it launches there.
            self.evict_preempted(placer.preemptions(), views, report)
                .await?;
        }

        for t in waiting {
            if let JarGate::Waiting(reason) = &t.jar {
                decided.insert(t.demand.id.clone(), Err(reason.clone()));
            }
            to_place.push(t);
        }
        for mut t in to_place {
            let id = t.demand.id.clone();
            let outcome = decided
                .remove(&id)
                .unwrap_or_else(|| Err("no reachable site".to_string()));
            match outcome {
                Err(reason) => {
                    t.status.phase = JobPhase::Pending;
                    t.status.message = Some(reason.clone());
                    t.status.site = None;
                    report.unplaced.push((id, reason));
                    let old = t.record.value.status.clone();
                    if t.record.value.placement.is_some() {
                        let mut cleared = t.record.value.clone();
                        cleared.placement = None;
                        cleared.status = t.status.clone();
                        self.put_if_unchanged(&cleared, t.record.revision, report)
                            .await?;
                        report.count(JobPhase::Pending);
                    } else {
                        self.write_status(&t.record, &old, &t.status, report)
                            .await?;
                    }
                }
                Ok(placement) => {
                    self.persist_and_launch(t, placement, views, report).await?;
                }
            }
        }
        Ok(())
    }

    /// Bumps the generation, persists it with the placement, then launches. In that order:
    /// see the module comment.
    async fn persist_and_launch(
        &self,
        t: ToPlace,
        placement: JobPlacement,
        views: &BTreeMap<SiteId, SiteView>,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        // One compare-and-set write carries the new generation and its placement: if the
        // record changed since this pass read it (an API edit, another writer), nothing is
        // written and nothing launched; the next pass starts from the new record.
        let revision = t.record.revision;
        let mut record = t.record.value.clone();
        let mut status = t.status;
        status.phase = JobPhase::Launching;
        status.site = Some(placement.site.0.clone());
        status.launched_spec = match spec_hash(&t.job) {
            Ok(hash) => Some(hash),
            Err(message) => {
                return self
                    .refuse_launch(record, revision, status, message, report)
                    .await;
            }
        };
        status.last_checkpoint = None;
        // The failover engine owns every generation change: it grants this one, and keeps
        // its own steps out until the write below is done (`GrantedGeneration`).
        let granted = match self
            .failover
            .grant_generation(&t.demand.id, record.generation)
            .await
        {
            Ok(granted) => granted,
            Err(NoGeneration::Exhausted(message)) => {
                return self
                    .refuse_launch(record, revision, status, message, report)
                    .await;
            }
            Err(NoGeneration::Wait(reason)) => {
                let message = format!("not launched this pass: {reason}");
                return self
                    .wait_unplaced(record, revision, status, message, reason, report)
                    .await;
            }
        };
        let generation = granted.generation;
        let epoch = match self.site_epoch(&placement.site).await? {
            Ok(epoch) => epoch,
            Err(reason) => {
                // Not a fault of the job: it waits, unplaced, until the site's record is
                // readable again.
                return self
                    .wait_unplaced(record, revision, status, reason.clone(), reason, report)
                    .await;
            }
        };
        let jar_uri = match self.site_jar_uri(&t.job, &status, &placement.site) {
            Ok(uri) => uri,
            Err(reason) => {
                // Placement honours the jar's sites, so only a race lands here: wait, unplaced.
                let message = format!("not launched: {reason}");
                return self
                    .wait_unplaced(record, revision, status, message, reason, report)
                    .await;
            }
        };
        let spec = launch_spec(
            &t.job,
            generation,
            &placement,
            status.restore(),
            self.storage_roots.get(&placement.site).map(String::as_str),
            epoch,
        );
        let spec = match spec {
            Ok(mut spec) => {
                spec.jar_uri = jar_uri;
                spec
            }
            Err(error) => {
                return self
                    .refuse_launch(record, revision, status, error.to_string(), report)
                    .await;
            }
        };
        record.generation = generation;
        record.placement = Some(crate::state::JobPlacement {
            site: placement.site.0.clone(),
            detail: Some(placement.clone()),
        });
        record.status = status.clone();
        let written = self.put_if_unchanged(&record, revision, report).await?;
        // Stored (or refused): the engine adopts it from the record at its next step.
        drop(granted);
        if !written {
            return Ok(());
        }
        report.count(JobPhase::Launching);
        let Some(view) = views.get(&placement.site) else {
            return Ok(());
        };
        match view.site.launch(&spec).await {
            Ok(()) => {
                tracing::info!(job = %spec.job, generation, site = %placement.site, restore_from = ?spec.restore_from, "launched");
                self.metrics
                    .launches
                    .get_or_create(&super::super::metrics::SiteLabel {
                        site: placement.site.0.clone(),
                    })
                    .inc();
                report.launched.push((spec.job.clone(), generation));
            }
            Err(error) => {
                // The placement is persisted: the next pass sees the generation not running
                // and launches it again.
                self.count_site_error(&placement.site, &error);
                tracing::warn!(job = %spec.job, generation, %error, "launch failed; retried next pass");
            }
        }
        Ok(())
    }

    /// Leaves a job pending and unplaced this pass, its status saying why (`message`);
    /// `reason` goes to the pass report. Placed again next pass.
    async fn wait_unplaced(
        &self,
        mut record: JobRecord,
        revision: i64,
        mut status: JobStatus,
        message: String,
        reason: String,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        status.phase = JobPhase::Pending;
        status.site = None;
        status.message = Some(message);
        let job = JobId::new(&record.namespace, &record.name);
        report.unplaced.push((job, reason));
        record.status = status;
        self.put_if_unchanged(&record, revision, report).await?;
        report.count(JobPhase::Pending);
        Ok(())
    }

    /// Records why a job cannot be launched, without spending a generation: `failed`, no
    /// placement (whatever ran under the old one was stopped before it was to be placed).
    async fn refuse_launch(
        &self,
        mut record: JobRecord,
        revision: i64,
        mut status: JobStatus,
        message: String,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        status.phase = JobPhase::Failed;
        status.site = None;
        status.message = Some(message);
        record.placement = None;
        record.status = status.clone();
        self.put_if_unchanged(&record, revision, report).await?;
        report.count(JobPhase::Failed);
        Ok(())
    }

    /// Stops each job the placer preempted (with a savepoint, so it resumes from it) and
    /// leaves it pending with the reason; the next pass places it where room allows. A job
    /// the failover engine holds is the engine's, and is left alone.
    async fn evict_preempted(
        &self,
        preemptions: &[scheduler::placement::Preemption],
        views: &BTreeMap<SiteId, SiteView>,
        report: &mut PassReport,
    ) -> Result<(), StateError> {
        let mut done = std::collections::BTreeSet::new();
        for preemption in preemptions {
            let victim = &preemption.victim;
            if !done.insert(victim.clone()) || self.failover.held(victim).is_some() {
                continue;
            }
            let Some((namespace, name)) = victim.0.split_once('/') else {
                continue;
            };
            let Some(record) = self.store.get_job(namespace, name).await? else {
                continue;
            };
            let Ok(job) = stream_job_of(&record.value) else {
                continue;
            };
            let generation = record.value.generation;
            let mut status = record.value.status.clone();
            let what = format!("{victim}@{}#{generation}", preemption.site);
            let result = match views.get(&preemption.site) {
                None => "site unreachable: it stops when it is reached".to_string(),
                Some(view) => {
                    let target = crate::job::savepoint_dir(&job);
                    let outcome = match view
                        .site
                        .stop_with_savepoint(victim, generation, &target)
                        .await
                    {
                        Ok(path) => {
                            status.set_restore(Some(Restore {
                                path,
                                completed_at: Some(self.clock.now()),
                            }));
                            "ok: stopped with a savepoint".to_string()
                        }
                        Err(error) => {
                            // The room must be freed either way; it resumes from its latest
                            // checkpoint instead.
                            self.count_site_error(&preemption.site, &error);
                            status.restore_from_last_checkpoint();
                            format!("ok: stopped (savepoint failed: {error})")
                        }
                    };
                    let _ = view.site.stop(victim, generation).await;
                    report
                        .stopped
                        .push((preemption.site.clone(), victim.clone(), generation));
                    outcome
                }
            };
            status.phase = JobPhase::Pending;
            status.site = None;
            status.relaunches = 0;
            status.message = Some(format!(
                "preempted by {} in {}; placed again when room allows",
                preemption.by, preemption.site
            ));
            let mut cleared = record.value.clone();
            cleared.placement = None;
            cleared.status = status;
            tracing::info!(job = %victim, by = %preemption.by, "preempted");
            self.audit(
                "preempt",
                &what,
                &format!("{result}; by {} (a higher tier)", preemption.by),
            )
            .await;
            self.put_if_unchanged(&cleared, record.revision, report)
                .await?;
        }
        Ok(())
    }
}
