//! The agent's lease in etcd: an election per site (`<prefix>/agents/<site>`, see
//! `state::keys`), so exactly one agent of a site holds it and a second replica waits as a
//! standby. [`HeldLease`] is the agent's side (campaign, keep alive, say what the agent
//! knows of its lease); [`AgentLeases`] is the controller's (each site's last renewal, as
//! etcd's remaining TTL tells it: the site's peer view).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use failover::Timestamp;
use failover::agent::{LeaseView, last_renewal_from_ttl};
use scheduler::model::SiteId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::leader::{LeaderElector, Session};
use crate::state::KeyLayout;

/// Bound on the reads that tell a standby from a cut-off agent, and on the controller's
/// reads of agent leases.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Maps an instant of this process's monotonic clock to wall time, for the pure decisions.
pub fn wall_time_of(instant: Instant, now: Instant, wall_now: Timestamp) -> Timestamp {
    if instant >= now {
        wall_now + chrono::Duration::from_std(instant - now).unwrap_or(chrono::Duration::MAX)
    } else {
        wall_now - chrono::Duration::from_std(now - instant).unwrap_or(chrono::Duration::MAX)
    }
}

#[derive(Default)]
struct Held {
    current: Option<Session>,
    /// The last instant any lease this agent held was surely alive (kept after a loss).
    last_valid_until: Option<Instant>,
}

/// An agent's lease on its site: campaigns in the background and says what the agent may
/// rely on.
pub struct HeldLease {
    elector: Arc<LeaderElector>,
    held: Arc<Mutex<Held>>,
    /// Fires whenever the lease is won or lost, so the agent looks at once.
    pub changed: Arc<tokio::sync::Notify>,
}

impl HeldLease {
    /// Starts campaigning for `site`'s agent lease; runs until `stop`.
    pub fn start(
        client: Client,
        layout: &KeyLayout,
        site: &SiteId,
        candidate: &str,
        ttl: Duration,
        stop: CancellationToken,
    ) -> Result<HeldLease, crate::state::StateError> {
        let election = layout.agent(&site.0)?;
        let elector = Arc::new(LeaderElector::new(client, election, candidate, ttl));
        let held = Arc::new(Mutex::new(Held::default()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let task = (
            Arc::clone(&elector),
            Arc::clone(&held),
            Arc::clone(&changed),
        );
        tokio::spawn(async move {
            let (elector, held, changed) = task;
            loop {
                let leadership = tokio::select! {
                    () = stop.cancelled() => return,
                    won = elector.campaign() => won,
                };
                let leadership = match leadership {
                    Ok(leadership) => leadership,
                    Err(error) => {
                        tracing::warn!(%error, "agent lease: campaign failed; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                tracing::info!(
                    election = elector.election(),
                    "agent holds its site's lease"
                );
                let session = leadership.session();
                lock(&held).current = Some(session.clone());
                changed.notify_one();
                tokio::select! {
                    () = stop.cancelled() => {
                        let _ = leadership.resign().await;
                        return;
                    }
                    () = leadership.lost.cancelled() => {}
                }
                {
                    let mut held = lock(&held);
                    held.current = None;
                    held.last_valid_until = Some(session.valid_until());
                }
                tracing::warn!(election = elector.election(), "agent lost its site's lease");
                changed.notify_one();
            }
        });
        Ok(HeldLease {
            elector,
            held,
            changed,
        })
    }

    /// What the agent may rely on now. Holding: valid until the last acknowledged renewal's
    /// send time plus the TTL. Not holding, etcd answering through the quorum: a standby
    /// when another agent holds the lease, or when nobody does and this agent never held
    /// one (it is about to win it: a restarted agent must not stop a healthy site).
    /// Otherwise (etcd out of reach, or our own lease lost): the last lease it held, or
    /// none, which fences the site.
    pub async fn view(&self) -> (LeaseView, Option<Instant>) {
        let (current, last) = {
            let held = lock(&self.held);
            (held.current.clone(), held.last_valid_until)
        };
        let now = Instant::now();
        let wall = chrono::Utc::now();
        if let Some(session) = current {
            let until = session.valid_until();
            return (
                LeaseView::Held {
                    valid_until: wall_time_of(until, now, wall),
                },
                Some(until),
            );
        }
        let leader = tokio::time::timeout(READ_TIMEOUT, self.elector.current_leader()).await;
        match leader {
            Ok(Ok(Some(other))) if other.candidate != self.elector.candidate() => {
                return (LeaseView::Standby, None);
            }
            Ok(Ok(None)) if last.is_none() => return (LeaseView::Standby, None),
            _ => {}
        }
        match last {
            Some(until) => (
                LeaseView::Held {
                    valid_until: wall_time_of(until, now, wall),
                },
                Some(until),
            ),
            None => (LeaseView::NeverHeld, None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The controller's reader of agent leases.
pub struct AgentLeases {
    client: Client,
    electors: BTreeMap<SiteId, LeaderElector>,
}

impl AgentLeases {
    pub fn new(
        client: Client,
        layout: &KeyLayout,
        sites: &[SiteId],
    ) -> Result<AgentLeases, crate::state::StateError> {
        let mut electors = BTreeMap::new();
        for site in sites {
            electors.insert(
                site.clone(),
                LeaderElector::new(
                    client.clone(),
                    layout.agent(&site.0)?,
                    "controller (reads only)",
                    Duration::from_secs(10),
                ),
            );
        }
        Ok(AgentLeases { client, electors })
    }

    pub fn sites(&self) -> impl Iterator<Item = &SiteId> {
        self.electors.keys()
    }

    /// Each site's agent lease as etcd holds it now: `Some(last renewal)` (estimated early,
    /// see `last_renewal_from_ttl`) while a lease is alive, `None` when no agent holds one
    /// or etcd did not answer.
    pub async fn read(&self) -> BTreeMap<SiteId, Option<Timestamp>> {
        let mut out = BTreeMap::new();
        for (site, elector) in &self.electors {
            let renewal = async {
                let leader = elector.current_leader().await.ok()??;
                let ttl = self
                    .client
                    .clone()
                    .lease_time_to_live(leader.lease, None)
                    .await
                    .ok()?;
                (ttl.ttl() > 0).then(|| {
                    last_renewal_from_ttl(chrono::Utc::now(), ttl.granted_ttl(), ttl.ttl())
                })
            };
            let renewal = tokio::time::timeout(READ_TIMEOUT, renewal)
                .await
                .ok()
                .flatten();
            out.insert(site.clone(), renewal);
        }
        out
    }
}
