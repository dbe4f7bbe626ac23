//! The site agent's I/O: one look at a site (what runs there, then what the store places
//! where), the pure decision (`failover::agent::decide`), and the stops it asks for through
//! the `Site` trait; the agent's lease in etcd (`lease.rs`: holding it as an agent, reading
//! every site's as the controller). The decisions and the timing argument are
//! `failover::agent` and `failover/README.md`; this folder only performs them.
//!
//! May use: `crate::{site, state, leader}` and the crates. Must never: use the controller
//! (an agent runs where no controller is), or decide anything itself.
//!
//! Two forms run the same [`look`]: `twinsite agent --site NAME` (a small Deployment in the
//! site it guards, `src/commands/agent.rs`, lease in etcd), and the in-process agent the
//! controller runs for simulated and local-Flink sites (lease: the controller's own
//! session, see `Controller::run_site_agents`).

pub mod lease;

use std::collections::BTreeMap;

use failover::agent::{AgentDecision, LeaseView, RunningGeneration, StoreView, decide};
use scheduler::model::{JobId, SiteId};

use crate::site::{Site, SiteError};
use crate::state::{StateError, StateStore};

/// What one look did.
#[derive(Debug, Default)]
pub struct Look {
    pub decision: AgentDecision,
    /// Generations stopped.
    pub stopped: Vec<(JobId, u64)>,
    /// Stops the site refused or did not answer (tried again next look).
    pub failed: Vec<(JobId, u64, SiteError)>,
    /// The store could not be read: only the lease decided.
    pub store_error: Option<StateError>,
}

/// Reads what the store places where and the site's epoch.
pub async fn store_view(store: &dyn StateStore, site: &SiteId) -> Result<StoreView, StateError> {
    let mut placed = BTreeMap::new();
    for record in store.list_jobs().await? {
        if let Some(placement) = &record.value.placement {
            placed.insert(
                JobId::new(&record.value.namespace, &record.value.name),
                (SiteId(placement.site.clone()), record.value.generation),
            );
        }
    }
    let site_epoch = store
        .get_site(&site.0)
        .await?
        .map_or(0, |record| record.value.epoch);
    Ok(StoreView { site_epoch, placed })
}

/// One look of the agent of `site`: what runs there first, then the store (a generation
/// seen running was stored before it was launched, so the later read holds it), then the
/// decision, then the stops. `lease` is what the agent knows of its lease at `now`.
/// `Err` when the site does not answer: an agent that cannot see its site cannot stop
/// anything in it either.
pub async fn look(
    site: &dyn Site,
    store: &dyn StateStore,
    lease: LeaseView,
    now: failover::Timestamp,
) -> Result<Look, SiteError> {
    let id = site.id();
    let running: Vec<RunningGeneration> = site
        .jobs()
        .await?
        .into_iter()
        .map(|o| RunningGeneration {
            job: o.job,
            generation: o.generation,
            epoch: o.epoch,
        })
        .collect();
    let mut look = Look::default();
    let view = match lease.valid_at(now) {
        // Only an agent that holds its lease judges placements; reading the store is of no
        // use to one that fences or waits.
        Some(true) => match store_view(store, &id).await {
            Ok(view) => Some(view),
            Err(error) => {
                look.store_error = Some(error);
                None
            }
        },
        _ => None,
    };
    look.decision = decide(&id, now, &lease, view.as_ref(), &running);
    for stop in &look.decision.stops {
        match site.stop(&stop.job, stop.generation).await {
            Ok(()) => {
                tracing::warn!(site = %id, job = %stop.job, generation = stop.generation,
                    reason = %stop.reason, "agent stopped a generation");
                look.stopped.push((stop.job.clone(), stop.generation));
            }
            Err(error) => {
                tracing::warn!(site = %id, job = %stop.job, generation = stop.generation,
                    reason = %stop.reason, %error, "agent could not stop a generation; trying again");
                look.failed.push((stop.job.clone(), stop.generation, error));
            }
        }
    }
    Ok(look)
}

/// The agent's loop: look at the site every `interval`, at the instant its lease would run
/// out, and whenever the lease is won or lost; until `stop`.
pub async fn run(
    site: &dyn Site,
    store: &dyn StateStore,
    lease: &lease::HeldLease,
    interval: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let id = site.id();
    let mut fenced = false;
    while !stop.is_cancelled() {
        let (view, valid_until) = lease.view().await;
        match look(site, store, view, chrono::Utc::now()).await {
            Ok(look) => {
                if look.decision.self_fenced != fenced {
                    fenced = look.decision.self_fenced;
                    if fenced {
                        tracing::error!(site = %id, ?view,
                            "agent lease ran out: stopping every job of this site (self-fencing)");
                    } else {
                        tracing::info!(site = %id, "agent holds its lease again: the controller may launch here");
                    }
                }
                if let Some(error) = look.store_error {
                    tracing::warn!(site = %id, %error, "agent cannot read the store; only its lease decides");
                }
            }
            Err(error) => {
                tracing::warn!(site = %id, %error, "agent cannot see its site");
            }
        }
        let now = tokio::time::Instant::now();
        let mut wake = now + interval;
        if let Some(until) = valid_until.filter(|u| *u > now) {
            wake = wake.min(until);
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep_until(wake) => {}
            () = lease.changed.notified() => {}
        }
    }
}
