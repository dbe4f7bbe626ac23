//! RPO exposure: what a loss of a job's site would cost it now. A failover restores the
//! newest checkpoint verified at the peer, so the processing since that checkpoint completed
//! at the source is what would be lost; with no checkpoint at the peer, all of the job's
//! state would be.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The newest checkpoint of a job readable at the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedAt {
    pub checkpoint_id: u64,
    /// When the source completed it (ms since the Unix epoch).
    pub completed_at_ms: i64,
}

/// What twinsite knows about one job and one peer site.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposureInput {
    pub now_ms: i64,
    pub replicated: Option<ReplicatedAt>,
    /// Since when twinsite has watched the job replicate from its current site: before its
    /// first checkpoint reaches the peer, the state at risk is everything since then.
    pub tracked_since_ms: i64,
    /// `replication.maxLag`.
    pub bound: Duration,
    /// Files and bytes of the newest checkpoint not yet verified at the peer.
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    /// Why the last copy to the peer failed, when it did.
    pub last_error: Option<String>,
}

/// The judgement of [`judge_exposure`], as status, API and metrics show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// The peer holds a verified checkpoint of the job: a failover restores its state.
    pub restorable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<ReplicatedAt>,
    /// Seconds of processing a site loss would lose now: the age of `checkpoint`. `None`
    /// when not restorable: all of the job's state would be lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    /// `replication.maxLag` in seconds.
    pub bound_seconds: f64,
    /// Above the bound: restorable with an older checkpoint than the bound, or not
    /// restorable for longer than the bound.
    pub breached: bool,
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// One sentence for status messages and conditions.
    pub message: String,
}

impl Exposure {
    /// The exposure a metric reports: the RPO, or +∞ when nothing is restorable.
    pub fn rpo_or_infinity(&self) -> f64 {
        self.rpo_seconds.unwrap_or(f64::INFINITY)
    }
}

/// Judges one job's exposure at one peer.
pub fn judge_exposure(input: &ExposureInput) -> Exposure {
    let bound_seconds = input.bound.as_secs_f64();
    let seconds_since = |ms: i64| (input.now_ms.saturating_sub(ms)).max(0) as f64 / 1000.0;
    let (rpo_seconds, breached, message) = match input.replicated {
        Some(at) => {
            // A completion time ahead of our clock (skew between hosts) is no exposure.
            let rpo = seconds_since(at.completed_at_ms);
            let breached = rpo > bound_seconds;
            let message = format!(
                "newest checkpoint at the peer is chk-{} from {} ago{}",
                at.checkpoint_id,
                super::human_duration(Duration::from_secs_f64(rpo)),
                if breached {
                    format!(
                        ", above replication.maxLag {}",
                        super::human_duration(input.bound)
                    )
                } else {
                    String::new()
                }
            );
            (Some(rpo), breached, message)
        }
        None => {
            let waiting = seconds_since(input.tracked_since_ms);
            let breached = waiting > bound_seconds;
            let message = format!(
                "no checkpoint at the peer yet (watched for {}): a site loss now restarts the job without state",
                super::human_duration(Duration::from_secs_f64(waiting))
            );
            (None, breached, message)
        }
    };
    let message = match &input.last_error {
        Some(error) => format!("{message}; last copy failed: {error}"),
        None => message,
    };
    Exposure {
        restorable: input.replicated.is_some(),
        checkpoint: input.replicated,
        rpo_seconds,
        bound_seconds,
        breached,
        backlog_files: input.backlog_files,
        backlog_bytes: input.backlog_bytes,
        last_error: input.last_error.clone(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(replicated: Option<(u64, i64)>, tracked_since_ms: i64) -> ExposureInput {
        ExposureInput {
            now_ms: 1_000_000,
            replicated: replicated.map(|(id, at)| ReplicatedAt {
                checkpoint_id: id,
                completed_at_ms: at,
            }),
            tracked_since_ms,
            bound: Duration::from_secs(300),
            backlog_files: 0,
            backlog_bytes: 0,
            last_error: None,
        }
    }

    #[test]
    fn the_rpo_is_the_age_of_the_newest_checkpoint_at_the_peer() {
        let e = judge_exposure(&input(Some((7, 1_000_000 - 42_000)), 0));
        assert!(e.restorable);
        assert_eq!(e.rpo_seconds, Some(42.0));
        assert!(!e.breached);
        assert!(e.message.contains("chk-7 from 42s ago"), "{}", e.message);
    }

    #[test]
    fn an_older_checkpoint_than_max_lag_breaches_and_says_so() {
        let e = judge_exposure(&input(Some((7, 1_000_000 - 301_000)), 0));
        assert!(e.breached);
        assert!(
            e.message.contains("above replication.maxLag 5m"),
            "{}",
            e.message
        );
    }

    #[test]
    fn without_a_checkpoint_at_the_peer_the_job_breaches_only_after_the_bound() {
        let fresh = judge_exposure(&input(None, 1_000_000 - 60_000));
        assert!(!fresh.restorable && !fresh.breached);
        assert_eq!(fresh.rpo_or_infinity(), f64::INFINITY);
        let stale = judge_exposure(&input(None, 1_000_000 - 301_000));
        assert!(stale.breached);
        assert!(stale.message.contains("without state"), "{}", stale.message);
    }

    #[test]
    fn a_checkpoint_from_the_future_is_no_exposure() {
        let e = judge_exposure(&input(Some((1, 2_000_000)), 0));
        assert_eq!(e.rpo_seconds, Some(0.0));
    }

    proptest! {
        /// Breach is exactly "the state at risk is older than the bound".
        #[test]
        fn breach_means_the_state_at_risk_is_older_than_the_bound(
            completed in proptest::option::of(-1_000_000i64..2_000_000),
            tracked in -1_000_000i64..2_000_000,
            bound_s in 1u64..1000,
        ) {
            let mut i = input(completed.map(|at| (1, at)), tracked);
            i.bound = Duration::from_secs(bound_s);
            let e = judge_exposure(&i);
            let at_risk_since = completed.unwrap_or(tracked);
            prop_assert_eq!(e.breached, i.now_ms - at_risk_since > bound_s as i64 * 1000);
            prop_assert_eq!(e.restorable, completed.is_some());
            prop_assert!(e.rpo_or_infinity() >= 0.0);
        }
    }
}
