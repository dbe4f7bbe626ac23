//! The invariants checked after every effect and step, and the run's outcome.
//! It must never change the world: a check reads and records violations, nothing more.

use std::collections::BTreeSet;
use std::time::Duration;

use scheduler::model::{JobId, SiteId};

use crate::engine::{FailoverPhase, Record};
use crate::sim::report::{EntryKind, JobEnd, Recovery};
use crate::types::RestorePointKind;

use super::*;

impl World {
    /// The invariants (see the module comment), checked now; violations are recorded.
    /// Returns whether they held.
    pub fn check_invariants(&mut self) -> bool {
        let mut broken = self.state.borrow().twice_running();
        broken.extend(self.check_liveness());
        let held = broken.is_empty();
        let s = self.st();
        for b in broken {
            s.violation(b);
        }
        held
    }

    /// Never stranded, and the engine's word about a job true (issue #14). A job that runs
    /// nowhere while some site may host it must run again within the bound: the site is up
    /// and the controller reaches it, the job may run there (its site constraint; its own
    /// site, or any for a job the engine may move), it has something to start from there
    /// (a checkpoint readable there, or its own site and no checkpoint ever, or a job
    /// allowed to start fresh), and the scheduler finds room. A generation the controller
    /// cannot see (in a site cut off from it) may still run, so its job is not stranded;
    /// nor is a job whose silent site the engine cannot judge (no quorum, or the peer still
    /// hears it): moving it could run it twice.
    pub(super) fn check_liveness(&mut self) -> Vec<String> {
        let s = self.state.borrow();
        let now = s.now;
        let mut watched: Vec<((JobId, &'static str), String)> = Vec::new();
        for id in s.jobs.keys() {
            let Some(r) = self.driver.engine().job(id) else {
                continue;
            };
            let instances = || {
                s.sites.iter().flat_map(move |(site, w)| {
                    w.instances
                        .iter()
                        .filter(move |((j, _), i)| j == id && !i.held && w.up)
                        .map(move |(_, i)| (site, w, i))
                })
            };
            let runs = instances()
                .any(|(_, _, i)| i.counts_as_running() || i.state == InstanceState::Restarting);
            let maybe_runs = instances().any(|(_, w, _)| w.cut.is_some());
            match &r.phase {
                FailoverPhase::Down { reason } => {
                    if let Some(site) = instances()
                        .find(|(_, w, i)| i.counts_as_running() && w.cut.is_none())
                        .map(|(site, _, _)| site)
                    {
                        watched.push((
                            (id.clone(), "down but running"),
                            format!(
                                "the engine says {id} runs nowhere ({reason}) but it runs in {site}"
                            ),
                        ));
                    }
                }
                FailoverPhase::Running => {
                    let reachable = s.observable(&r.site);
                    let current = s.sites.get(&r.site).is_some_and(|w| {
                        w.instances
                            .get(&(id.clone(), r.generation))
                            .is_some_and(|i| !i.held)
                    });
                    if reachable && !current {
                        watched.push((
                            (id.clone(), "running but absent"),
                            format!(
                                "the engine says {id} runs as generation {} in {} but that generation is not there",
                                r.generation, r.site
                            ),
                        ));
                    }
                }
                _ => {}
            }
            let judgeable = s.sites.get(&r.site).is_some_and(|w| {
                s.observable(&r.site) || w.marked_lost || (s.quorum && w.visible_since.is_none())
            });
            if runs || maybe_runs || !judgeable {
                continue;
            }
            if let Some(host) = s.sites.keys().find(|site| s.may_host(r, site)) {
                watched.push((
                    (id.clone(), "stranded"),
                    format!(
                        "{id} runs nowhere although {host} may host it and has room (engine: {:?})",
                        r.phase
                    ),
                ));
            }
        }
        drop(s);
        let mut broken = Vec::new();
        let still: BTreeSet<(JobId, &'static str)> =
            watched.iter().map(|(k, _)| k.clone()).collect();
        self.waiting.retain(|k, _| still.contains(k));
        let bound = self.liveness_bound;
        for (key, message) in watched {
            let since = *self.waiting.entry(key.clone()).or_insert(now);
            let waited = crate::types::elapsed(since, now);
            if key.1 == "stranded" {
                let s = self.state.get_mut();
                s.stats.longest_wait_secs = s.stats.longest_wait_secs.max(waited.as_secs());
            }
            if waited > bound {
                broken.push(format!(
                    "{message}, for {}",
                    crate::sim::report::fmt_duration(waited)
                ));
                self.waiting.remove(&key);
            }
        }
        broken
    }

    /// Every job's state now, for the report.
    pub fn job_ends(&self) -> Vec<JobEnd> {
        let s = self.state.borrow();
        self.driver
            .engine()
            .jobs()
            .map(|r| {
                let running_in = s
                    .sites
                    .iter()
                    .filter(|(_, w)| {
                        w.up && w.instances.iter().any(|((j, _), i)| {
                            j == r.id() && i.state == InstanceState::Running && !i.held
                        })
                    })
                    .map(|(site, _)| site.clone())
                    .collect();
                JobEnd {
                    job: r.id().clone(),
                    priority: r.spec.demand.priority,
                    site: r.site.clone(),
                    generation: r.generation,
                    phase: match &r.phase {
                        FailoverPhase::Running => "running".to_string(),
                        FailoverPhase::Fencing { target, .. } => {
                            format!("fencing (to relaunch in {target})")
                        }
                        FailoverPhase::Launching { .. } => "launching".to_string(),
                        FailoverPhase::InOperation { op } => format!("moving (operation {op})"),
                        FailoverPhase::Down { reason } => format!("down: {reason}"),
                    },
                    running_in,
                }
            })
            .collect()
    }

    /// Everything the run reported, with each job's state now, as the outcome of the run
    /// named `name` (seed, duration and step as the scenario gave them).
    pub fn into_outcome(
        self,
        name: String,
        seed: u64,
        duration: Duration,
        step: Duration,
    ) -> crate::sim::report::Outcome {
        let jobs = self.job_ends();
        let s = self.state.into_inner();
        crate::sim::report::Outcome {
            name,
            seed,
            duration,
            step,
            jobs,
            stats: s.stats,
            timeline: s.timeline,
            recoveries: s.recoveries,
            not_relaunched: s.not_relaunched,
            checkpoints: s.checkpoints,
            violations: s.violations,
        }
    }
}

impl State {
    pub(super) fn report_recovery(&mut self, r: &crate::engine::RecoveryReport) {
        self.trace_line(format!(
            "    -> ReportRecovery({} gen {} in {}: {})",
            r.job, r.generation, r.site, r.reason
        ));
        let at = self.elapsed();
        let from = self
            .issued
            .get(&r.job)
            .filter(|(g, _)| *g < r.generation)
            .map_or(r.site.clone(), |(_, s)| s.clone());
        let priority = self.priority(&r.job);
        let row = self
            .recoveries
            .iter_mut()
            .rev()
            .find(|x| x.job == r.job && x.generation == r.generation && x.to == r.site);
        // RPO never hides replication lag: the report names the restore point the launch
        // really used (the one readable in the target, not the source's newer one), and its
        // RPO runs from that point's completion to the failure the report itself states
        // (the last heartbeat, when known).
        let mut lag_hidden = Vec::new();
        if let Some(row) = &row
            && row.restore_from != r.restore_from
        {
            lag_hidden.push(format!(
                "{} generation {} in {}: the recovery report names restore point {} but the launch restored {}",
                r.job,
                r.generation,
                r.site,
                describe_pointer(&r.restore_from),
                describe_pointer(&row.restore_from)
            ));
        }
        if let (Some(rpo), Some(p), Some(since_heartbeat)) = (
            r.rpo,
            &r.restore_from,
            r.rto_from_last_heartbeat
                .and_then(|d| chrono::Duration::from_std(d).ok()),
        ) && p.kind == RestorePointKind::Checkpoint
        {
            let failed_at = self.now - since_heartbeat;
            let lost = crate::types::elapsed(p.completed_at, failed_at);
            if rpo != lost {
                lag_hidden.push(format!(
                    "{} generation {} in {}: RPO {} reported, but checkpoint {} completed {} before the failure",
                    r.job,
                    r.generation,
                    r.site,
                    crate::sim::report::fmt_duration(rpo),
                    p.id,
                    crate::sim::report::fmt_duration(lost)
                ));
            }
        }
        match row {
            Some(row) => {
                row.op = r.op;
                row.reason = r.reason.to_string();
                row.reported = true;
                row.rto_from_detection = Some(r.rto_from_detection);
                row.rto_from_last_heartbeat = r.rto_from_last_heartbeat;
                row.rpo = r.rpo;
            }
            // Reported before the relaunch takes effect (reports run before the actions of
            // their round): the relaunch fills in the nodes.
            None => self.recoveries.push(Recovery {
                job: r.job.clone(),
                priority,
                reason: r.reason.to_string(),
                op: r.op,
                from,
                to: r.site.clone(),
                nodes: Vec::new(),
                generation: r.generation,
                relaunched_at: at,
                running_at: None,
                reported: true,
                rto_from_detection: Some(r.rto_from_detection),
                rto_from_last_heartbeat: r.rto_from_last_heartbeat,
                rpo: r.rpo,
                restore_from: r.restore_from.clone(),
            }),
        }
        for message in lag_hidden {
            self.violation(message);
        }
        self.log(
            EntryKind::Recovery,
            Some(&r.job),
            Some(&r.site),
            format!(
                "{} generation {} in {}: RTO {} from detection, {} from last heartbeat; RPO {}",
                r.job,
                r.generation,
                r.site,
                crate::sim::report::fmt_duration(r.rto_from_detection),
                r.rto_from_last_heartbeat
                    .map_or("unknown".into(), crate::sim::report::fmt_duration),
                r.rpo
                    .map_or("none (no state)".into(), crate::sim::report::fmt_duration)
            ),
        );
    }

    /// The engine's judgement that a site is lost is the durable write of its new epoch: it
    /// must hold quorum, and the site must not have been heard (by the controller or the
    /// peer) for longer than the grace.
    pub(super) fn check_loss_judgement(&mut self, record: &crate::engine::TrackedSite) {
        let crate::engine::SiteStatus::Lost { .. } = record.status else {
            return;
        };
        let known = match self.store.get(&Record::Site(record.clone()).key()) {
            Some(Record::Site(old)) => old.epoch,
            _ => 0,
        };
        if record.epoch <= known {
            return;
        }
        let site = &record.id;
        if !self.quorum {
            self.violation(format!("site {site} judged lost without quorum"));
        }
        let grace = self.engine_config.site.grace;
        let now = self.now;
        if let Some(since) = self.sites.get(site).and_then(|s| s.visible_since)
            && crate::types::elapsed(since, now) > grace
        {
            self.violation(format!(
                "site {site} judged lost while alive and heard for {}",
                crate::sim::report::fmt_duration(crate::types::elapsed(since, now))
            ));
        }
    }

    /// Never two running generations of one job.
    pub(super) fn twice_running(&self) -> Vec<String> {
        let mut broken = Vec::new();
        for job in self.jobs.keys() {
            let running: Vec<String> = self
                .sites
                .iter()
                .flat_map(|(s, w)| {
                    w.instances
                        .iter()
                        .filter(|((j, _), i)| j == job && i.counts_as_running() && !i.held)
                        .map(move |((_, g), _)| format!("{s}/gen{g}"))
                })
                .collect();
            if running.len() > 1 {
                broken.push(format!("{job} runs twice: {}", running.join(", ")));
            }
        }
        broken
    }

    /// Whether `site` may host the job of `r` now (see [`World::check_liveness`]).
    pub(super) fn may_host(&self, r: &crate::engine::TrackedJob, site: &SiteId) -> bool {
        let Some(w) = self.sites.get(site) else {
            return false;
        };
        let spec = &r.spec;
        let own = site == &r.site;
        let may_move = own || spec.site_moves == crate::types::SiteMoves::Automatic;
        let never_checkpointed = r.latest_complete.is_empty() && r.latest_replicated.is_empty();
        let has_start = spec.mode == crate::types::FailoverMode::FreshStartAllowed
            || r.latest_replicated.contains_key(site)
            || own && (r.latest_complete.contains_key(site) || never_checkpointed);
        if !(self.observable(site)
            && !w.refuses_launches
            && spec.demand.sites.allows(site)
            && may_move
            && has_start)
        {
            return false;
        }
        let dead: BTreeSet<String> = w
            .nodes
            .iter()
            .filter(|(_, n)| !n.alive)
            .map(|(name, _)| name.clone())
            .collect();
        !self
            .place(site, std::slice::from_ref(&spec.demand), &dead)
            .placed
            .is_empty()
    }
}
