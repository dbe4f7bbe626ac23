//! etcd leader election with a kept-alive lease; leadership fences every state write.
//!
//! Typical loop of a controller:
//!
//! ```text
//! loop {
//!     let leadership = elector.campaign().await?;          // blocks until elected
//!     store.set_leader(Some(leadership.leader_key.clone())); // writes are now guarded
//!     tokio::select! {
//!         _ = leadership.lost.cancelled() => {}             // step down at once
//!         _ = run_controller(&store) => {}
//!     }
//!     store.set_leader(None);
//! }
//! ```
//!
//! `lost` fires when a keep-alive fails, when the lease may have expired by our own clock
//! (no renewal answered within the TTL), or when our leader key is deleted in etcd. Even a
//! controller that never notices (a frozen process) cannot do harm: every state write
//! compares the leader key's create revision in the same transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, LeaderKey, ResignOptions, WatchOptions};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

/// How long cleanup calls (revoking a lease) may take before we give up on them.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause before re-issuing a campaign whose request timed out while waiting for the leader.
const CAMPAIGN_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Backoff between campaign attempts while etcd is unreachable.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("etcd {operation} for election {election} failed: {source}")]
    Etcd {
        operation: &'static str,
        election: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd campaign for election {election} answered without a leader key")]
    NoLeaderKey { election: String },
}

impl LeaderError {
    fn etcd(operation: &'static str, election: &str, source: etcd_client::Error) -> Self {
        LeaderError::Etcd {
            operation,
            election: election.to_owned(),
            source,
        }
    }
}

/// Who leads an election right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The value the leader campaigned with: its candidate id.
    pub candidate: String,
    pub key: String,
    pub rev: i64,
    /// The lease the leader's key lives on.
    pub lease: i64,
}

/// One candidate in one election.
pub struct LeaderElector {
    client: Client,
    election: String,
    candidate: String,
    ttl: Duration,
}

/// Held leadership. Dropping it stops the keep-alive and revokes the lease (the next
/// candidate wins at once); [`Leadership::resign`] does the same and reports errors.
pub struct Leadership {
    /// The key to guard writes with (see `state::EtcdStateStore::set_leader`).
    pub leader_key: LeaderKey,
    /// Fired once leadership is lost or may be lost; never un-fires.
    pub lost: CancellationToken,
    client: Client,
    election: String,
    keep_alive_paused: Arc<AtomicBool>,
    session: Session,
    // Cancelled on drop: stops the keep-alive and watch tasks.
    _shutdown: tokio_util::sync::DropGuard,
}

/// The health of one etcd session (a lease kept alive), shared with whoever must know
/// whether this process still holds quorum: the instant, by our monotonic clock, until
/// which the lease is surely alive (the send time of the last renewal etcd acknowledged,
/// plus the TTL), and the TTL.
#[derive(Debug, Clone)]
pub struct Session {
    valid_until: Arc<Mutex<Instant>>,
    ttl: Duration,
    lost: CancellationToken,
}

impl Session {
    fn new(valid_until: Instant, ttl: Duration, lost: CancellationToken) -> Session {
        Session {
            valid_until: Arc::new(Mutex::new(valid_until)),
            ttl,
            lost,
        }
    }

    /// Until when the lease is surely alive, by this process's monotonic clock.
    pub fn valid_until(&self) -> Instant {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn renewed(&self, valid_until: Instant) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = valid_until;
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the session holds quorum at `now`: not lost, and at least a third of the TTL
    /// left (one renewal, sent every third of the TTL, may be late; two may not).
    pub fn has_quorum_at(&self, now: Instant) -> bool {
        !self.lost.is_cancelled() && now + self.ttl / 3 < self.valid_until()
    }
}

impl LeaderElector {
    /// `election` is the election's key prefix (e.g. `KeyLayout::election("controller")`);
    /// `ttl` is the lease's, rounded up to whole seconds (etcd may raise it to its minimum).
    /// The client should have no request timeout shorter than the TTL, or campaigns that
    /// wait for a leader are re-issued on each timeout (harmless, but noisy).
    pub fn new(
        client: Client,
        election: impl Into<String>,
        candidate: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            election: election.into(),
            candidate: candidate.into(),
            ttl,
        }
    }

    pub fn election(&self) -> &str {
        &self.election
    }

    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    fn ttl_seconds(&self) -> i64 {
        let whole = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(whole.max(1)).unwrap_or(i64::MAX)
    }

    /// Waits until this candidate leads. A lease that dies while waiting is replaced, and
    /// etcd being unreachable is waited out (with backoff): wrap the call in a timeout to
    /// bound it. Only errors that retrying cannot fix are returned.
    pub async fn campaign(&self) -> Result<Leadership, LeaderError> {
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            match self.campaign_once().await {
                Ok(Some(leadership)) => return Ok(leadership),
                Ok(None) => {
                    tracing::warn!(election = %self.election, candidate = %self.candidate,
                        "lease lost while campaigning; campaigning again with a new lease");
                }
                Err(LeaderError::Etcd {
                    operation, source, ..
                }) if is_transient(&source) => {
                    tracing::warn!(election = %self.election, operation, error = %source,
                        "etcd unreachable while campaigning; retrying");
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One campaign on one lease: `None` when the lease died before we were elected.
    async fn campaign_once(&self) -> Result<Option<Leadership>, LeaderError> {
        let granted_at = Instant::now();
        let grant = self
            .client
            .clone()
            .lease_grant(self.ttl_seconds(), None)
            .await
            .map_err(|e| LeaderError::etcd("lease grant", &self.election, e))?;
        let lease_id = grant.id();
        let granted_ttl = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(1));

        let shutdown = CancellationToken::new();
        // Until we return a Leadership, leaving this function (error or caller dropping the
        // future) stops the keep-alive and revokes the lease.
        let guard = shutdown.clone().drop_guard();
        let lease_lost = CancellationToken::new();
        let paused = Arc::new(AtomicBool::new(false));
        let session = Session::new(granted_at + granted_ttl, granted_ttl, lease_lost.clone());
        tokio::spawn(keep_lease_alive(KeepAlive {
            client: self.client.clone(),
            election: self.election.clone(),
            lease_id,
            ttl: granted_ttl,
            valid_until: granted_at + granted_ttl,
            lease_lost: lease_lost.clone(),
            shutdown: shutdown.clone(),
            paused: Arc::clone(&paused),
            session: session.clone(),
        }));

        let leader_key = loop {
            let mut election = self.client.election_client();
            let attempt = election.campaign(
                self.election.as_bytes().to_vec(),
                self.candidate.as_bytes().to_vec(),
                lease_id,
            );
            let response = tokio::select! {
                response = attempt => response,
                () = lease_lost.cancelled() => return Ok(None),
            };
            match response {
                Ok(mut response) => match response.take_leader() {
                    Some(key) => break key,
                    None => {
                        return Err(LeaderError::NoLeaderKey {
                            election: self.election.clone(),
                        });
                    }
                },
                Err(_) if lease_lost.is_cancelled() => return Ok(None),
                // A request timeout while the current leader holds on: campaigning again
                // with the same lease re-uses our key, so our place in line is kept.
                Err(etcd_client::Error::GRpcStatus(status))
                    if matches!(
                        i32::from(status.code()),
                        GRPC_DEADLINE_EXCEEDED | GRPC_CANCELLED
                    ) =>
                {
                    sleep(CAMPAIGN_RETRY_PAUSE).await;
                }
                Err(e) => return Err(LeaderError::etcd("campaign", &self.election, e)),
            }
        };

        // etcd answers a campaign even when our key vanished while we waited in line
        // (its lease expired): only a key that still exists at its revision is leadership.
        let current = self
            .client
            .clone()
            .get(leader_key.key(), None)
            .await
            .map_err(|e| LeaderError::etcd("get leader key", &self.election, e))?;
        let still_ours = current
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == leader_key.rev());
        if !still_ours || lease_lost.is_cancelled() {
            return Ok(None);
        }

        let lost = lease_lost.child_token();
        tokio::spawn(watch_leader_key(
            self.client.clone(),
            leader_key.clone(),
            lost.clone(),
            shutdown.clone(),
        ));
        tracing::info!(election = %self.election, candidate = %self.candidate,
            key = %String::from_utf8_lossy(leader_key.key()), rev = leader_key.rev(), "elected");
        Ok(Some(Leadership {
            leader_key,
            session: Session {
                lost: lost.clone(),
                ..session
            },
            lost,
            client: self.client.clone(),
            election: self.election.clone(),
            keep_alive_paused: paused,
            _shutdown: guard,
        }))
    }

    /// The current leader, or `None` when nobody leads.
    pub async fn current_leader(&self) -> Result<Option<LeaderInfo>, LeaderError> {
        let response = match self
            .client
            .election_client()
            .leader(self.election.as_bytes().to_vec())
            .await
        {
            Ok(response) => response,
            // etcd reports an empty election as an error, not as an empty answer.
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("election: no leader") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(LeaderError::etcd("leader", &self.election, e)),
        };
        Ok(response.kv().map(|kv| LeaderInfo {
            candidate: String::from_utf8_lossy(kv.value()).into_owned(),
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            rev: kv.create_revision(),
            lease: kv.lease(),
        }))
    }
}

/// gRPC status codes (as numbers: tonic is not a direct dependency) of a request that
/// timed out, was cut short or found no server, as opposed to one etcd refused.
const GRPC_CANCELLED: i32 = 1;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// Whether retrying the same call later may succeed.
fn is_transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => matches!(
            i32::from(status.code()),
            GRPC_CANCELLED | GRPC_DEADLINE_EXCEEDED | GRPC_UNAVAILABLE
        ),
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::LeaseKeepAliveError(_)
        | etcd_client::Error::WatchError(_) => true,
        _ => false,
    }
}

impl Leadership {
    pub fn lease_id(&self) -> i64 {
        self.leader_key.lease()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// The session this leadership rests on (for the quorum the failover engine is told).
    pub fn session(&self) -> Session {
        self.session.clone()
    }

    /// Stops renewing the lease without resigning, as a frozen or partitioned process would.
    /// For fencing tests and drills: the lease then expires after its TTL and `lost` fires.
    pub fn stop_keep_alive(&self) {
        self.keep_alive_paused.store(true, Ordering::SeqCst);
    }

    /// Gives leadership up now: deletes our leader key and revokes the lease.
    pub async fn resign(self) -> Result<(), LeaderError> {
        self.lost.cancel();
        let mut election = self.client.election_client();
        election
            .resign(Some(
                ResignOptions::new().with_leader(self.leader_key.clone()),
            ))
            .await
            .map_err(|e| LeaderError::etcd("resign", &self.election, e))?;
        self.client
            .clone()
            .lease_revoke(self.leader_key.lease())
            .await
            .map_err(|e| LeaderError::etcd("lease revoke", &self.election, e))?;
        Ok(())
    }
}

struct KeepAlive {
    client: Client,
    election: String,
    lease_id: i64,
    ttl: Duration,
    /// The latest instant our lease is surely alive, by our clock: etcd starts each TTL when
    /// it receives the renewal, which is after we sent it.
    valid_until: Instant,
    lease_lost: CancellationToken,
    shutdown: CancellationToken,
    paused: Arc<AtomicBool>,
    session: Session,
}

/// Renews the lease every TTL/3; any failure, or no answer before the lease would expire,
/// fires `lease_lost`. On the way out the lease is revoked, so our key goes at once.
async fn keep_lease_alive(mut task: KeepAlive) {
    let reason = renew_until_failure(&mut task).await;
    task.lease_lost.cancel();
    if let Some(reason) = reason {
        tracing::warn!(election = %task.election, lease = task.lease_id, %reason,
            "lease lost; stepping down");
    }
    let revoke = task.client.lease_revoke(task.lease_id);
    if let Ok(Err(e)) = timeout(CLEANUP_TIMEOUT, revoke).await {
        tracing::debug!(lease = task.lease_id, error = %e, "lease revoke after step-down failed");
    }
}

/// Returns why renewal stopped, or `None` on shutdown.
async fn renew_until_failure(task: &mut KeepAlive) -> Option<String> {
    let (mut keeper, mut responses) = match task.client.lease_keep_alive(task.lease_id).await {
        Ok(pair) => pair,
        Err(e) => return Some(format!("keep-alive stream failed to open: {e}")),
    };
    let interval = (task.ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = task.shutdown.cancelled() => return None,
            () = sleep(interval) => {}
        }
        if task.paused.load(Ordering::SeqCst) {
            if Instant::now() >= task.valid_until {
                return Some("keep-alive stopped and the lease's TTL has passed".to_owned());
            }
            continue;
        }
        let sent = Instant::now();
        let round_trip = async {
            keeper.keep_alive().await?;
            responses.message().await
        };
        match timeout_at(task.valid_until, round_trip).await {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                task.valid_until = sent + Duration::from_secs(response.ttl().unsigned_abs());
                task.session.renewed(task.valid_until);
            }
            Ok(Ok(Some(_))) => return Some("etcd reports the lease expired".to_owned()),
            Ok(Ok(None)) => return Some("keep-alive stream closed".to_owned()),
            Ok(Err(e)) => return Some(format!("keep-alive failed: {e}")),
            Err(_) => {
                return Some("no keep-alive answer before the lease's TTL ran out".to_owned());
            }
        }
    }
}

/// Fires `lost` when our leader key is deleted (resigned, expired, revoked by an operator)
/// or when we can no longer observe it, and then ends the lease too: a key we no longer
/// trust must not stay in line ahead of our own next campaign.
async fn watch_leader_key(
    mut client: Client,
    leader_key: LeaderKey,
    lost: CancellationToken,
    shutdown: CancellationToken,
) {
    // Starting at the key's creation revision means a delete that happened before the watch
    // began is still reported.
    let options = WatchOptions::new().with_start_revision(leader_key.rev());
    let mut stream = match client.watch(leader_key.key(), Some(options)).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch our leader key; stepping down");
            lost.cancel();
            shutdown.cancel();
            return;
        }
    };
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            () = lost.cancelled() => return,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(response)) => {
                let deleted = response
                    .events()
                    .iter()
                    .any(|event| event.event_type() == EventType::Delete);
                if deleted || response.canceled() {
                    tracing::warn!(key = %String::from_utf8_lossy(leader_key.key()),
                        deleted, "leader key gone or unobservable; stepping down");
                    lost.cancel();
                    shutdown.cancel();
                    return;
                }
            }
            Ok(None) | Err(_) => {
                tracing::warn!("leader key watch ended; stepping down");
                lost.cancel();
                shutdown.cancel();
                return;
            }
        }
    }
}
