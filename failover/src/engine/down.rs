//! Jobs that run nowhere: down with a reason, tried again with back-off, revived when hosted.
//! It must never leave a job down while a site may host it, nor revive one that may still run.

use std::collections::BTreeMap;
use std::time::Duration;

use scheduler::model::{JobDemand, JobId, JobPlacement, Resources, SiteId};

use crate::types::{RelaunchReason, SiteMoves, elapsed};

use super::*;

impl Engine {
    /// The launch of `generation` in `site` was refused and that generation is fenced: the
    /// job runs nowhere until `revive_down_jobs` tries it again, after
    /// `launch_retry_delay`. Nothing is stale (the generation is confirmed stopped).
    pub(super) fn down_after_refused_launch(
        &mut self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
        refusal: &str,
        cx: &mut Step<'_>,
    ) {
        let in_a_row = self.jobs.get(job).map_or(1, |r| r.launches_refused.max(1));
        let delay = self.launch_retry_delay(job);
        let reason = format!(
            "launch of generation {generation} in {site} refused ({in_a_row} in a row): {refusal}; tried again {}s later",
            delay.as_secs()
        );
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        r.phase = FailoverPhase::Down {
            reason: reason.clone(),
        };
        self.dirty.jobs.insert(job.clone());
        self.down_tried.insert(job.clone(), cx.now);
        let down = Down {
            site,
            reason,
            missing: Resources::ZERO,
        };
        self.report_down(job, "not relaunched", down, cx);
    }

    /// How long a job that runs nowhere waits before it is tried again: `down_retry`, or
    /// after refused launches a back-off doubling from `FIRST_LAUNCH_RETRY` up to it.
    pub(super) fn launch_retry_delay(&self, job: &JobId) -> Duration {
        match self.jobs.get(job).map(|r| r.launches_refused) {
            Some(n) if n > 0 => {
                let doublings = (n - 1).min(16);
                FIRST_LAUNCH_RETRY
                    .saturating_mul(1 << doublings)
                    .min(self.config.down_retry)
            }
            _ => self.config.down_retry,
        }
    }

    /// Marks the job down and remembers its generation in its (lost or live) site as stale.
    pub(super) fn mark_down(
        &mut self,
        job: &JobId,
        reason: String,
        missing: Resources,
        cx: &mut Step<'_>,
    ) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        r.stale.insert(StaleGeneration {
            site: r.site.clone(),
            generation: r.generation,
        });
        r.phase = FailoverPhase::Down {
            reason: reason.clone(),
        };
        let site = r.site.clone();
        self.dirty.jobs.insert(job.clone());
        self.down_tried.insert(job.clone(), cx.now);
        let down = Down {
            site: &site,
            reason,
            missing,
        };
        self.report_down(job, "not relaunched", down, cx);
    }

    /// A job whose current generation belongs to an older epoch of its site (the site was
    /// judged lost after it was launched) but that no operation moved: a leader died between
    /// writing the site's loss and the operation that moves its jobs. That generation may
    /// never run again (epoch admission), so the job is down until a site may host it, and
    /// `revive_down_jobs` relaunches it (at once: it waited long enough).
    pub(super) fn release_orphans(&mut self, cx: &mut Step<'_>) {
        let orphans: Vec<(JobId, SiteId, u64)> = self
            .jobs
            .values()
            .filter(|r| {
                !matches!(
                    r.phase,
                    FailoverPhase::InOperation { .. } | FailoverPhase::Down { .. }
                )
            })
            .filter_map(|r| {
                let site = self.sites.get(&r.site)?;
                let outdated = match r.epoch {
                    Some(e) => e < site.epoch,
                    // Older records: only a site still lost tells.
                    None => matches!(site.status, SiteStatus::Lost { .. }),
                };
                outdated.then(|| (r.id().clone(), r.site.clone(), site.epoch))
            })
            .collect();
        for (job, site, epoch) in orphans {
            self.mark_down(
                &job,
                format!("its site {site} was lost (epoch {epoch}) before the job was moved"),
                Resources::ZERO,
                cx,
            );
            self.down_tried.remove(&job);
        }
    }

    /// Liveness: a job that runs nowhere (`Down`) runs again as soon as a site that may host
    /// it is `Up` and has room. Its own site first (from its latest checkpoint there, or as
    /// it first started when its lineage never completed one); then, for a job the engine
    /// may move, another site holding a checkpoint replicated there (any allowed site for a
    /// job that may start fresh). A job waits while an old generation of it in a reachable
    /// site is not confirmed fenced: it may still run there. Each job is tried once per
    /// `down_retry`, and every one at once when `returned` (a site) has just recovered.
    /// Jobs placed together in one site are placed by one placer call, in priority order.
    pub(super) fn revive_down_jobs(&mut self, returned: Option<&SiteId>, cx: &mut Step<'_>) {
        let mut due: Vec<&TrackedJob> =
            self.jobs
                .values()
                .filter(|r| matches!(r.phase, FailoverPhase::Down { .. }))
                .filter(|r| {
                    returned.is_some()
                        || self.down_tried.get(r.id()).is_none_or(|at| {
                            elapsed(*at, cx.now) >= self.launch_retry_delay(r.id())
                        })
                })
                .filter(|r| !r.stale.iter().any(|s| self.reachable(&s.site)))
                .collect();
        if due.is_empty() {
            return;
        }
        due.sort_by(|a, b| {
            b.spec
                .demand
                .priority
                .cmp(&a.spec.demand.priority)
                .then_with(|| a.id().cmp(b.id()))
        });
        // Each job's candidate sites, most preferred first, with the restore point there.
        let mut candidates: Vec<(JobId, Vec<Host>)> = due
            .iter()
            .map(|r| {
                let mut sites: Vec<SiteId> = vec![r.site.clone()];
                sites.extend(self.config.sites.iter().filter(|s| **s != r.site).cloned());
                // After `relaunches_before_other_site` failures in its site, the other
                // sites come first (the same tiers as `failure_target`).
                if r.failures_in_site >= self.config.relaunches_before_other_site {
                    sites.rotate_left(1);
                }
                let hosts = sites
                    .into_iter()
                    .filter(|s| self.is_up(s) && r.spec.demand.sites.allows(s))
                    .filter(|s| s == &r.site || r.spec.site_moves == SiteMoves::Automatic)
                    .filter_map(|s| self.restore_point(r, &s).ok().map(|p| (s, p)))
                    .collect();
                (r.id().clone(), hosts)
            })
            .collect();
        let mut last_refusal: BTreeMap<JobId, (String, Resources)> = BTreeMap::new();
        for (job, hosts) in &candidates {
            self.down_tried.insert(job.clone(), cx.now);
            // No site may host it: its reason says why its own site cannot, once that site
            // is up (the reason it went down may be about a site it no longer waits for).
            if hosts.is_empty()
                && let Some(r) = self.jobs.get(job)
                && self.is_up(&r.site)
            {
                let why = if !r.spec.demand.sites.allows(&r.site) {
                    Some(format!("job may not run in site {}", r.site))
                } else {
                    self.restore_point(r, &r.site).err()
                };
                if let Some(why) = why {
                    last_refusal.insert(job.clone(), (why, Resources::ZERO));
                }
            }
        }
        while candidates.iter().any(|(_, hosts)| !hosts.is_empty()) {
            // One placer call per site, over every job whose next candidate it is.
            let mut by_site: BTreeMap<SiteId, Vec<JobId>> = BTreeMap::new();
            for (job, hosts) in &candidates {
                if let Some((site, _)) = hosts.first() {
                    by_site.entry(site.clone()).or_default().push(job.clone());
                }
            }
            let mut placed: BTreeMap<JobId, JobPlacement> = BTreeMap::new();
            for (site, jobs) in &by_site {
                let demands: Vec<JobDemand> = jobs
                    .iter()
                    .filter_map(|j| self.jobs.get(j).map(|r| r.spec.demand.clone()))
                    .collect();
                let outcome = cx
                    .placer
                    .place(site, &demands, &self.lost_nodes(site, cx.now));
                for n in outcome.not_fitting {
                    last_refusal.insert(
                        n.job.clone(),
                        (format!("does not fit in {site}: {}", n.reason), n.missing),
                    );
                }
                for p in outcome.placed {
                    if jobs.contains(&p.job) && &p.site == site {
                        placed.insert(p.job.clone(), p);
                    }
                }
            }
            for (job, hosts) in &mut candidates {
                if hosts.is_empty() {
                    continue;
                }
                let (site, restore) = hosts.remove(0);
                let Some(placement) = placed.remove(job) else {
                    last_refusal
                        .entry(job.clone())
                        .or_insert_with(|| (format!("no placement in {site}"), Resources::ZERO));
                    continue;
                };
                hosts.clear();
                last_refusal.remove(job);
                let reason = if returned == Some(&site) {
                    RelaunchReason::SiteReturned { site: site.clone() }
                } else {
                    RelaunchReason::Revived {
                        was_down: match self.jobs.get(job).map(|r| &r.phase) {
                            Some(FailoverPhase::Down { reason }) => reason.clone(),
                            _ => String::new(),
                        },
                    }
                };
                let cause = Cause::detected(reason, cx.now, None);
                self.issue_relaunch(job, &site, placement, restore, cause, cx);
            }
        }
        for (job, (reason, missing)) in last_refusal {
            self.stay_down(&job, reason, missing, cx);
        }
    }

    /// A job tried again that still cannot run: its reason is updated (and reported) only
    /// when it changed, so a retry every `down_retry` writes and reports nothing new.
    pub(super) fn stay_down(
        &mut self,
        job: &JobId,
        reason: String,
        missing: Resources,
        cx: &mut Step<'_>,
    ) {
        let Some(r) = self.jobs.get_mut(job) else {
            return;
        };
        if r.phase
            == (FailoverPhase::Down {
                reason: reason.clone(),
            })
        {
            return;
        }
        r.phase = FailoverPhase::Down {
            reason: reason.clone(),
        };
        let site = r.site.clone();
        self.dirty.jobs.insert(job.clone());
        let down = Down {
            site: &site,
            reason,
            missing,
        };
        self.report_down(job, "still not relaunched", down, cx);
    }

    /// Audits (`<what>: <reason>`) and reports a job that runs nowhere, with what it lacks.
    pub(super) fn report_down(
        &mut self,
        job: &JobId,
        what: &str,
        down: Down<'_>,
        cx: &mut Step<'_>,
    ) {
        let Down {
            site,
            reason,
            missing,
        } = down;
        self.audit(cx, None, Some(job), Some(site), format!("{what}: {reason}"));
        let report = Command::ReportNotRelaunched {
            job: job.clone(),
            reason,
            missing,
        };
        self.act(cx, report);
    }
}

/// Why a job runs nowhere: its site, the reason, and the capacity it lacks (zero when room
/// is not what it lacks).
pub(super) struct Down<'a> {
    site: &'a SiteId,
    reason: String,
    missing: Resources,
}
