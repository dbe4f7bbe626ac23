//! What the controller relies on before it may judge a site lost: its own quorum (the etcd
//! session its leadership rests on, or, on the embedded store, the configuration's word)
//! and each guarded site's agent lease (`failover::agent`, `src/agent/`).
//!
//! A site with an agent counts as alive only while its agent's lease is alive: once it is
//! gone, the site is left out of the pass like an unreachable one and the failover engine
//! judges it lost after the site grace, which the configuration checks is longer than the
//! agent needs to fence its site (`AgentTiming::check`). The site's jobs are stopped by its
//! agent; and by this controller too when it still reaches the site's API once a living
//! agent would have fenced the site (`Agents::should_stop_for`): then the agent is dead.
//! A lease missing for a moment (an agent restarting) stops nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use failover::Timestamp;
use failover::agent::AgentTiming;
use scheduler::model::SiteId;
use tokio::time::Instant;

use crate::agent::lease::AgentLeases;
use crate::leader::Session;

/// Where the failover engine's quorum comes from.
pub enum Quorum {
    /// The embedded store: one process, no witness. `true` only where nothing can be
    /// partitioned from anything else (simulated sites) or where the operator said so.
    Fixed(bool),
    /// etcd: the session of this controller's leadership (installed on election).
    Session {
        /// `false`: the operator turned automatic site failover off.
        automatic: bool,
        session: Mutex<Option<Session>>,
    },
}

impl Quorum {
    /// Whether the controller holds quorum now, its pass having read the store (a
    /// linearizable read on etcd) at `read_at`: the session is not lost, has a third of its
    /// TTL left, and the read came within the TTL.
    pub fn holds(&self, read_at: Instant) -> bool {
        match self {
            Quorum::Fixed(quorum) => *quorum,
            Quorum::Session { automatic, session } => {
                let session = session.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                *automatic
                    && session.as_ref().is_some_and(|s| {
                        s.has_quorum_at(now) && now.duration_since(read_at) < s.ttl()
                    })
            }
        }
    }

    /// The session of a new leadership (`None` on stepping down).
    pub fn set_session(&self, new: Option<Session>) {
        if let Quorum::Session { session, .. } = self {
            *session.lock().unwrap_or_else(|e| e.into_inner()) = new;
        }
    }
}

/// The agents of the guarded sites, as the controller reads their leases.
pub struct Agents {
    pub leases: AgentLeases,
    pub timing: AgentTiming,
    /// Each guarded site's latest estimated renewal (kept across passes: a lease that
    /// vanished leaves its last renewal as the site's last sign of life).
    pub renewals: Mutex<BTreeMap<SiteId, Timestamp>>,
    /// Sites whose lease was alive at the last read.
    alive: Mutex<BTreeMap<SiteId, bool>>,
    /// When this controller started reading leases: a lease it never saw counts from here.
    started: Timestamp,
}

impl Agents {
    pub fn new(leases: AgentLeases, timing: AgentTiming) -> Agents {
        Agents {
            leases,
            timing,
            renewals: Mutex::new(BTreeMap::new()),
            alive: Mutex::new(BTreeMap::new()),
            started: chrono::Utc::now(),
        }
    }

    /// Reads every guarded site's lease (once per pass).
    pub async fn refresh(&self) {
        let read = self.leases.read().await;
        let mut renewals = self.renewals.lock().unwrap_or_else(|e| e.into_inner());
        let mut alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
        for (site, renewal) in read {
            if let Some(at) = renewal {
                let kept = renewals.entry(site.clone()).or_insert(at);
                *kept = (*kept).max(at);
            }
            // etcd itself says whether the lease is alive (its key exists, TTL left): the
            // estimate of the renewal errs early on purpose and must not decide this.
            alive.insert(site, renewal.is_some());
        }
    }

    pub fn guards(&self, site: &SiteId) -> bool {
        self.leases.sites().any(|s| s == site)
    }

    /// Whether `site`'s agent held a live lease at the last read (`true` for a site
    /// without an agent).
    pub fn lease_alive(&self, site: &SiteId) -> bool {
        !self.guards(site)
            || self
                .alive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(site)
                .copied()
                .unwrap_or(false)
    }

    /// Whether the controller should stop what still runs in `site` itself: its agent's
    /// lease is gone and has been for the lease's TTL, the margin and the stop bound since
    /// its last renewal (or since this controller started reading), so a living agent has
    /// stopped it all by now and only a dead one has not. An agent restarting (a rollout)
    /// leaves no lease for a moment: that must not stop the site's jobs.
    pub fn should_stop_for(&self, site: &SiteId, now: Timestamp) -> bool {
        if self.lease_alive(site) {
            return false;
        }
        let since = self
            .last_renewal(site)
            .map_or(self.started, |at| at.max(self.started));
        failover::agent::site_fenced_by(&self.timing, since, now)
    }

    /// The peer view of a guarded site: its agent's last renewal.
    pub fn last_renewal(&self, site: &SiteId) -> Option<Timestamp> {
        self.renewals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(site)
            .copied()
    }
}

impl super::Controller {
    /// What an in-process agent (simulated and local-Flink sites, which live in this
    /// process) knows of its lease: the controller's own session on etcd; on the embedded
    /// store nothing can cut the site off from the store, so the lease always holds.
    pub fn in_process_lease(&self, ttl: std::time::Duration) -> failover::agent::LeaseView {
        let wall = chrono::Utc::now();
        match &self.quorum {
            Quorum::Fixed(_) => failover::agent::LeaseView::Held {
                valid_until: wall
                    + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            },
            Quorum::Session { session, .. } => {
                match session.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    Some(session) => failover::agent::LeaseView::Held {
                        valid_until: crate::agent::lease::wall_time_of(
                            session.valid_until(),
                            Instant::now(),
                            wall,
                        ),
                    },
                    None => failover::agent::LeaseView::NeverHeld,
                }
            }
        }
    }

    /// The in-process agents of `sites` while this controller leads: the same look as
    /// `twinsite agent` (epoch admission, self-fencing), every `interval`, until `stop`.
    pub async fn run_site_agents(
        &self,
        sites: &[SiteId],
        timing: AgentTiming,
        interval: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            for id in sites {
                let Some(site) = self.sites.get(id) else {
                    continue;
                };
                let lease = self.in_process_lease(timing.lease_ttl);
                if let Ok(look) = crate::agent::look(
                    site.as_ref(),
                    self.store.as_ref(),
                    lease,
                    chrono::Utc::now(),
                )
                .await
                    && !look.stopped.is_empty()
                {
                    tracing::info!(site = %id, stopped = look.stopped.len(), "in-process agent stopped generations");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
