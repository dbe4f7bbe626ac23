//! Site judgement: signs of life, loss (epoch + 1), return, and the fences a return needs first.
//! It must never judge a site lost without quorum, nor run anything but fences where it is not Up.

use scheduler::model::{JobId, Resources, SiteId};

use crate::health::{SiteSigns, SiteVerdict, judge_site};
use crate::operation::{MoveMode, OpKind};
use crate::types::{Timestamp, elapsed};

use super::*;

impl Engine {
    // ---- judgement ----------------------------------------------------------------------

    pub(super) fn evaluate(&mut self, cx: &mut Step<'_>) {
        let sites: Vec<SiteId> = self.sites.keys().cloned().collect();
        for site in &sites {
            self.judge_site(site, cx);
        }
        self.stop_waiting_on_lost_sites(cx);
        self.release_unmovable(cx);
        self.release_orphans(cx);
        for site in &sites {
            let fresh = self.view_is_fresh(site, cx.now);
            if fresh {
                self.issue_stale_fences(site, cx);
                self.judge_jobs(site, cx);
            }
            self.retry_pending_fences(site, cx);
            self.check_returning(site, cx);
        }
        self.revive_down_jobs(None, cx);
        let active: Vec<u64> = self
            .operations
            .values()
            .filter(|o| o.is_active())
            .map(|o| o.id)
            .collect();
        for op in active {
            self.drive_operation(op, cx);
        }
    }

    pub(super) fn view_is_fresh(&self, site: &SiteId, now: Timestamp) -> bool {
        self.views
            .get(site)
            .and_then(|v| v.last_api_contact)
            .is_some_and(|t| elapsed(t, now) <= self.config.site.suspect_after)
    }

    pub(super) fn reachable(&self, site: &SiteId) -> bool {
        self.sites
            .get(site)
            .is_some_and(|s| !matches!(s.status, SiteStatus::Lost { .. }))
    }

    /// Whether something may be started in `site` now: `Up`, and its API heard within the
    /// site grace (counted from when this engine started watching): a target silent that
    /// long is not waited for.
    pub(super) fn can_reach(&self, site: &SiteId, now: Timestamp) -> bool {
        self.is_up(site)
            && self.views.get(site).is_some_and(|v| {
                let heard = v
                    .last_api_contact
                    .map_or(v.watching_since, |t| t.max(v.watching_since));
                elapsed(heard, now) <= self.config.site.grace
            })
    }

    pub(super) fn is_up(&self, site: &SiteId) -> bool {
        self.sites
            .get(site)
            .is_some_and(|s| s.status == SiteStatus::Up)
    }

    pub(super) fn signs(&self, site: &SiteId) -> Option<SiteSigns> {
        let v = self.views.get(site)?;
        Some(SiteSigns {
            api_last_contact: v.last_api_contact,
            newest_node_heartbeat: v.nodes.values().max().copied(),
            peer_last_contact: v.peer_last_contact,
            watching_since: v.watching_since,
        })
    }

    pub(super) fn judge_site(&mut self, site: &SiteId, cx: &mut Step<'_>) {
        let Some(status) = self.sites.get(site).map(|s| s.status.clone()) else {
            return;
        };
        if matches!(status, SiteStatus::Lost { .. }) {
            return;
        }
        let Some(signs) = self.signs(site) else {
            return;
        };
        match judge_site(&signs, self.quorum, cx.now, &self.config.site) {
            SiteVerdict::Lost { since } => {
                if let Some(v) = self.views.get_mut(site) {
                    v.no_quorum_reported = false;
                }
                if status == SiteStatus::Up {
                    self.site_lost(site, since, cx);
                } else if let Some(s) = self.sites.get_mut(site) {
                    // Went dark again while returning: still lost, same epoch.
                    s.status = SiteStatus::Lost {
                        since,
                        detected_at: cx.now,
                    };
                    self.dirty.sites.insert(site.clone());
                    self.audit(
                        cx,
                        None,
                        None,
                        Some(site),
                        "site lost again before it was clean".into(),
                    );
                }
            }
            SiteVerdict::UnreachableWithoutQuorum { since } => {
                let first = self
                    .views
                    .get_mut(site)
                    .map(|v| !std::mem::replace(&mut v.no_quorum_reported, true))
                    .unwrap_or(false);
                if first {
                    self.audit(cx, None, None, Some(site), format!("unreachable since {since} but no quorum with the witness: not failing over"));
                }
            }
            SiteVerdict::Healthy | SiteVerdict::Suspect { .. } => {
                if let Some(v) = self.views.get_mut(site) {
                    v.no_quorum_reported = false;
                }
            }
        }
    }

    pub(super) fn site_lost(&mut self, site: &SiteId, since: Timestamp, cx: &mut Step<'_>) {
        let epoch = {
            let Some(s) = self.sites.get_mut(site) else {
                return;
            };
            s.epoch += 1;
            s.status = SiteStatus::Lost {
                since,
                detected_at: cx.now,
            };
            s.epoch
        };
        self.dirty.sites.insert(site.clone());
        self.audit(
            cx,
            None,
            None,
            Some(site),
            format!("site lost (silent since {since}, quorum with witness held): epoch {epoch}"),
        );
        self.act(
            cx,
            Command::MarkSiteLost {
                site: site.clone(),
                epoch,
            },
        );
        // Operations moving jobs into the lost site stop starting new moves.
        let doomed: Vec<u64> = self
            .operations
            .values()
            .filter(|o| o.is_active() && &o.to == site)
            .map(|o| o.id)
            .collect();
        for op in doomed {
            self.cancel_pending(op, &format!("target site {site} lost"), cx);
        }
        self.stop_waiting_on_lost_sites(cx);
        let Some(survivor) = self
            .config
            .sites
            .iter()
            .find(|s| *s != site && self.is_up(s))
            .cloned()
        else {
            self.audit(
                cx,
                None,
                None,
                Some(site),
                "no healthy site to fail over to".into(),
            );
            self.displace_without_survivor(site, cx);
            return;
        };
        let scope = MoveScope {
            from: site.clone(),
            to: survivor,
            mode: MoveMode::Forced,
            failback: false,
        };
        self.start_operation(OpKind::SiteLoss { epoch }, true, scope, Some(since), cx);
    }

    pub(super) fn displace_without_survivor(&mut self, site: &SiteId, cx: &mut Step<'_>) {
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|r| &r.site == site && !matches!(r.phase, FailoverPhase::InOperation { .. }))
            .map(|r| r.id().clone())
            .collect();
        for id in ids {
            self.mark_down(
                &id,
                format!("site {site} lost and no healthy site left"),
                Resources::ZERO,
                cx,
            );
        }
    }

    /// Generations observed in `site` that are not the job's current one become stale.
    pub(super) fn record_stale_observations(&mut self, site: &SiteId) {
        let Some(view) = self.views.get(site) else {
            return;
        };
        for o in &view.jobs {
            let Some(r) = self.jobs.get_mut(&o.job) else {
                continue;
            };
            let current = r.generation == o.generation && &r.site == site;
            let down = matches!(r.phase, FailoverPhase::Down { .. });
            if !current || down {
                let stale = StaleGeneration {
                    site: site.clone(),
                    generation: o.generation,
                };
                if r.stale.insert(stale) {
                    self.dirty.jobs.insert(o.job.clone());
                }
            }
        }
    }

    pub(super) fn issue_stale_fences(&mut self, site: &SiteId, cx: &mut Step<'_>) {
        if !self.reachable(site) {
            return;
        }
        let wanted: Vec<(JobId, u64)> = self
            .jobs
            .values()
            .flat_map(|r| {
                r.stale
                    .iter()
                    .filter(|s| &s.site == site)
                    .map(|s| (r.id().clone(), s.generation))
            })
            .collect();
        for (job, generation) in wanted {
            let key = (job.clone(), site.clone(), generation);
            if self.fence_sent.contains_key(&key) {
                continue;
            }
            self.fence(&job, generation, site, cx);
        }
    }

    /// Re-issues fences that were not confirmed within `fence_retry` (the driver may have
    /// failed to reach the site).
    pub(super) fn retry_pending_fences(&mut self, site: &SiteId, cx: &mut Step<'_>) {
        if !self.reachable(site) {
            return;
        }
        let due: Vec<(JobId, SiteId, u64)> = self
            .fence_sent
            .iter()
            .filter(|((_, s, _), at)| s == site && elapsed(**at, cx.now) >= self.config.fence_retry)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let (job, site, generation) = key;
            self.fence(&job, generation, &site, cx);
        }
    }

    /// A returning site becomes Up once no stale generation is left there.
    pub(super) fn check_returning(&mut self, site: &SiteId, cx: &mut Step<'_>) {
        if self.sites.get(site).map(|s| &s.status) != Some(&SiteStatus::Returning) {
            return;
        }
        let stale_left = self
            .jobs
            .values()
            .any(|r| r.stale.iter().any(|s| &s.site == site));
        if stale_left {
            return;
        }
        let epoch = match self.sites.get_mut(site) {
            Some(s) => {
                s.status = SiteStatus::Up;
                s.epoch
            }
            None => return,
        };
        self.dirty.sites.insert(site.clone());
        self.audit(
            cx,
            None,
            None,
            Some(site),
            format!("every stale generation fenced: site recovered (epoch {epoch})"),
        );
        self.act(
            cx,
            Command::MarkSiteRecovered {
                site: site.clone(),
                epoch,
            },
        );
        // Jobs that could not go anywhere come back (home first) before any failback.
        self.revive_down_jobs(Some(site), cx);
        if self.config.auto_failback
            && let Some(from) = self
                .config
                .sites
                .iter()
                .find(|s| *s != site && self.is_up(s))
                .cloned()
        {
            self.audit(
                cx,
                None,
                None,
                Some(site),
                "policy allows automatic failback".into(),
            );
            let scope = MoveScope {
                from,
                to: site.clone(),
                mode: MoveMode::Planned,
                failback: true,
            };
            self.start_operation(OpKind::Failback, true, scope, None, cx);
        }
    }
}
