//! The site agent's decisions, pure: what an agent running inside one site must stop, given
//! its lease as its own clock sees it, what the state store places where (and the site's
//! epoch), and what runs in its site; and the controller's side of the same lease (when it
//! may count an agent's lease as a sign of life, and when as expired plus the margin).
//!
//! The I/O (the etcd lease, reading the store, stopping deployments through the `Site`
//! trait) is `src/agent/`; the simulation (`sim::World`) runs these same functions for its
//! in-world agents. The timing argument that makes self-fencing safe is in README.md
//! ("Site agents and self-fencing"); [`AgentTiming::check`] refuses settings that break it.
//!
//! Depends on nothing but the types of this crate: no clock, no network.

use std::collections::BTreeMap;
use std::time::Duration;

use scheduler::model::{JobId, SiteId};
use serde::{Deserialize, Serialize};

use crate::types::{Timestamp, elapsed};

/// Default TTL of an agent's lease.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Default allowance for the agent's clock running slow against etcd's over one TTL, and
/// for the controller's estimate of the last renewal (etcd reports remaining TTLs in whole
/// seconds).
pub const DEFAULT_CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(3);
/// Default bound on how long an agent takes to stop every job of its site.
pub const DEFAULT_STOP_WITHIN: Duration = Duration::from_secs(10);
/// etcd's lease granularity is one second; a TTL below two cannot be renewed in time.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// The agent's timing, shared by the agents and the controller that relies on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTiming {
    /// TTL of the agent's lease in etcd.
    pub lease_ttl: Duration,
    /// How far the agent's clock may fall behind etcd's over one TTL (rate drift, a step of
    /// NTP), plus the controller's rounding of the remaining TTL etcd reports.
    pub clock_skew_margin: Duration,
    /// How long the agent may take to stop every job of its site once it must.
    pub stop_within: Duration,
}

impl Default for AgentTiming {
    fn default() -> Self {
        AgentTiming {
            lease_ttl: DEFAULT_LEASE_TTL,
            clock_skew_margin: DEFAULT_CLOCK_SKEW_MARGIN,
            stop_within: DEFAULT_STOP_WITHIN,
        }
    }
}

/// Why an agent timing cannot be used with a site grace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "the lease TTL must be at least {MIN_LEASE_TTL:?} (etcd's lease granularity is 1 s), found {found:?}"
    )]
    TtlTooShort { found: Duration },
    #[error(
        "lease TTL {ttl:?} + clock-skew margin {margin:?} + stop bound {stop:?} = {sum:?} must be below the site grace {grace:?}: \
         otherwise the controller may relaunch a cut-off site's jobs elsewhere before that site's agent has stopped them"
    )]
    SlowerThanGrace {
        ttl: Duration,
        margin: Duration,
        stop: Duration,
        sum: Duration,
        grace: Duration,
    },
}

impl AgentTiming {
    /// The latest a cut-off site's jobs may still run, counted from the last renewal etcd
    /// received: the agent's lease runs out by its own clock at most `lease_ttl +
    /// clock_skew_margin` after it, and the agent then stops everything within
    /// `stop_within`.
    pub fn fenced_within(&self) -> Duration {
        self.lease_ttl + self.clock_skew_margin + self.stop_within
    }

    /// The controller judges a site lost no sooner than `site_grace` after its last sign of
    /// life, and the agent's last renewal is one: the site must have fenced itself by then.
    pub fn check(&self, site_grace: Duration) -> Result<(), TimingError> {
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(TimingError::TtlTooShort {
                found: self.lease_ttl,
            });
        }
        let sum = self.fenced_within();
        if sum >= site_grace {
            return Err(TimingError::SlowerThanGrace {
                ttl: self.lease_ttl,
                margin: self.clock_skew_margin,
                stop: self.stop_within,
                sum,
                grace: site_grace,
            });
        }
        Ok(())
    }
}

/// What an agent knows of its lease, by its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "lease")]
pub enum LeaseView {
    /// This agent holds (or held) the site's lease: valid until `valid_until`, the send time
    /// of the last renewal etcd acknowledged plus the TTL (etcd starts the TTL when it
    /// receives the renewal, after the agent sent it, so the agent's deadline comes first).
    Held { valid_until: Timestamp },
    /// Another agent of this site holds the lease, as read through the quorum just now:
    /// that one guards the site, this one waits.
    Standby,
    /// This agent has not held the lease since it started and cannot show that anyone does
    /// (the quorum is out of reach): it must assume its site was given up.
    NeverHeld,
}

impl LeaseView {
    /// Whether the agent may let its site run jobs at `now`.
    pub fn valid_at(&self, now: Timestamp) -> Option<bool> {
        match self {
            LeaseView::Held { valid_until } => Some(now < *valid_until),
            LeaseView::Standby => None,
            LeaseView::NeverHeld => Some(false),
        }
    }
}

/// One generation running (or trying to run) in the agent's site, as the site reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningGeneration {
    pub job: JobId,
    pub generation: u64,
    /// The `twinsite.io/epoch` the launch carried; `None` for a launch older than epoch
    /// labels, which is judged by its placement alone.
    pub epoch: Option<u64>,
}

/// What the state store says, read through the quorum *after* the site was observed (the
/// controller stores a generation's placement before launching it, so a generation seen
/// running is in any later read of the store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreView {
    /// The site's epoch (its site record; 0 before any).
    pub site_epoch: u64,
    /// Every stored job's placement: site and current generation.
    pub placed: BTreeMap<JobId, (SiteId, u64)>,
}

/// Why the agent stops a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum StopReason {
    /// The agent's lease ran out at `valid_until` (its clock): the site is cut off from the
    /// quorum and the controller may be relaunching its jobs elsewhere (self-fencing).
    LeaseExpired { valid_until: Option<Timestamp> },
    /// The store does not place this generation here (`placed`: where and which it does).
    NotPlacedHere { placed: Option<(SiteId, u64)> },
    /// Launched in an epoch of the site older than the site's current one (the site was
    /// judged lost since).
    StaleEpoch { launched: u64, site: u64 },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::LeaseExpired {
                valid_until: Some(at),
            } => write!(f, "the agent's lease ran out at {at}: self-fencing"),
            StopReason::LeaseExpired { valid_until: None } => {
                write!(f, "the agent holds no lease: self-fencing")
            }
            StopReason::NotPlacedHere { placed: None } => {
                write!(f, "the store holds no placement of this job")
            }
            StopReason::NotPlacedHere {
                placed: Some((site, generation)),
            } => write!(
                f,
                "the store places generation {generation} of this job in {site}"
            ),
            StopReason::StaleEpoch { launched, site } => write!(
                f,
                "launched in epoch {launched}, the site's epoch is {site}"
            ),
        }
    }
}

/// One generation to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub job: JobId,
    pub generation: u64,
    pub reason: StopReason,
}

/// What one look of the agent at its site decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDecision {
    /// The lease is gone: every generation of the site is stopped, whatever the store says.
    pub self_fenced: bool,
    /// A standby agent decides nothing.
    pub standby: bool,
    pub stops: Vec<Stop>,
}

/// What the agent of `site` must stop at `now` (its clock). `store` is `None` when the
/// store could not be read: then only the lease decides (nothing is stopped on a guess).
/// Never starts anything: launching is the controller's.
pub fn decide(
    site: &SiteId,
    now: Timestamp,
    lease: &LeaseView,
    store: Option<&StoreView>,
    running: &[RunningGeneration],
) -> AgentDecision {
    match lease.valid_at(now) {
        None => AgentDecision {
            standby: true,
            ..AgentDecision::default()
        },
        Some(false) => {
            let valid_until = match lease {
                LeaseView::Held { valid_until } => Some(*valid_until),
                _ => None,
            };
            AgentDecision {
                self_fenced: true,
                standby: false,
                stops: running
                    .iter()
                    .map(|r| Stop {
                        job: r.job.clone(),
                        generation: r.generation,
                        reason: StopReason::LeaseExpired { valid_until },
                    })
                    .collect(),
            }
        }
        Some(true) => {
            let Some(store) = store else {
                return AgentDecision::default();
            };
            let stops = running
                .iter()
                .filter_map(|r| {
                    let placed = store.placed.get(&r.job);
                    let here = placed.is_some_and(|(s, g)| s == site && *g == r.generation);
                    let reason = if !here {
                        StopReason::NotPlacedHere {
                            placed: placed.cloned(),
                        }
                    } else if let Some(launched) = r.epoch.filter(|e| *e < store.site_epoch) {
                        StopReason::StaleEpoch {
                            launched,
                            site: store.site_epoch,
                        }
                    } else {
                        return None;
                    };
                    Some(Stop {
                        job: r.job.clone(),
                        generation: r.generation,
                        reason,
                    })
                })
                .collect();
            AgentDecision {
                self_fenced: false,
                standby: false,
                stops,
            }
        }
    }
}

/// The controller's estimate of when etcd last received a renewal of an agent's lease,
/// from one `TimeToLive` answer read at `now` (the controller's clock): `granted` minus
/// `remaining` seconds ago, and one second earlier still because etcd reports whole
/// seconds. Erring early only makes the controller wait longer before judging the site.
pub fn last_renewal_from_ttl(now: Timestamp, granted_secs: i64, remaining_secs: i64) -> Timestamp {
    let since = granted_secs.saturating_sub(remaining_secs).max(0) + 1;
    now - chrono::Duration::seconds(since)
}

/// Whether an agent lease last renewed at `last_renewal` (as the controller estimates it)
/// may still be alive at `now`: the site may be running its jobs. Once this is false
/// *and* a further `clock_skew_margin + stop_within` has passed, the site's agent has
/// stopped every job it had ([`AgentTiming::fenced_within`]).
pub fn lease_may_be_alive(timing: &AgentTiming, last_renewal: Timestamp, now: Timestamp) -> bool {
    elapsed(last_renewal, now) < timing.lease_ttl
}

/// Whether the controller may count the site's jobs as stopped by its agent: the lease
/// expired plus the margin and the stop bound ([`AgentTiming::fenced_within`]).
pub fn site_fenced_by(timing: &AgentTiming, last_renewal: Timestamp, now: Timestamp) -> bool {
    elapsed(last_renewal, now) >= timing.fenced_within()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(s: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn site(name: &str) -> SiteId {
        SiteId(name.to_owned())
    }

    fn run(job: &str, generation: u64, epoch: Option<u64>) -> RunningGeneration {
        RunningGeneration {
            job: JobId::new("shop", job),
            generation,
            epoch,
        }
    }

    fn store(epoch: u64, placed: &[(&str, &str, u64)]) -> StoreView {
        StoreView {
            site_epoch: epoch,
            placed: placed
                .iter()
                .map(|(job, s, g)| (JobId::new("shop", job), (site(s), *g)))
                .collect(),
        }
    }

    #[test]
    fn an_agent_with_a_live_lease_keeps_what_the_store_places_in_its_site() {
        let decision = decide(
            &site("dc-a"),
            at(0),
            &LeaseView::Held { valid_until: at(5) },
            Some(&store(2, &[("orders", "dc-a", 3)])),
            &[run("orders", 3, Some(2))],
        );
        assert_eq!(decision, AgentDecision::default());
    }

    #[test]
    fn a_generation_the_store_places_elsewhere_or_nowhere_is_stopped_naming_the_placement() {
        let decision = decide(
            &site("dc-a"),
            at(0),
            &LeaseView::Held { valid_until: at(5) },
            Some(&store(0, &[("orders", "dc-b", 4), ("audit", "dc-a", 2)])),
            &[
                run("orders", 3, None),
                run("audit", 1, None),
                run("gone", 1, None),
            ],
        );
        let reasons: Vec<String> = decision
            .stops
            .iter()
            .map(|s| format!("{} g{}: {}", s.job, s.generation, s.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                "shop/orders g3: the store places generation 4 of this job in dc-b",
                "shop/audit g1: the store places generation 2 of this job in dc-a",
                "shop/gone g1: the store holds no placement of this job",
            ]
        );
        assert!(!decision.self_fenced);
    }

    #[test]
    fn a_generation_launched_before_the_sites_epoch_moved_on_is_stopped() {
        let decision = decide(
            &site("dc-a"),
            at(0),
            &LeaseView::Held { valid_until: at(5) },
            Some(&store(3, &[("orders", "dc-a", 3)])),
            &[run("orders", 3, Some(2))],
        );
        assert_eq!(
            decision.stops[0].reason,
            StopReason::StaleEpoch {
                launched: 2,
                site: 3
            }
        );
    }

    #[test]
    fn an_agent_whose_lease_ran_out_stops_everything_whatever_the_store_says() {
        let decision = decide(
            &site("dc-a"),
            at(5),
            &LeaseView::Held { valid_until: at(5) },
            Some(&store(0, &[("orders", "dc-a", 3)])),
            &[run("orders", 3, Some(0))],
        );
        assert!(decision.self_fenced);
        assert_eq!(decision.stops.len(), 1);
        let never = decide(
            &site("dc-a"),
            at(0),
            &LeaseView::NeverHeld,
            None,
            &[run("orders", 3, None)],
        );
        assert!(never.self_fenced);
        assert_eq!(never.stops.len(), 1);
    }

    #[test]
    fn a_standby_agent_or_an_unread_store_stops_nothing() {
        let running = [run("orders", 3, None)];
        let standby = decide(&site("dc-a"), at(0), &LeaseView::Standby, None, &running);
        assert!(standby.standby && standby.stops.is_empty());
        let unread = decide(
            &site("dc-a"),
            at(0),
            &LeaseView::Held { valid_until: at(9) },
            None,
            &running,
        );
        assert!(unread.stops.is_empty());
    }

    #[test]
    fn the_default_timing_fits_the_default_site_grace() {
        assert_eq!(
            AgentTiming::default().check(crate::health::DEFAULT_SITE_GRACE),
            Ok(())
        );
    }

    #[test]
    fn a_timing_slower_than_the_site_grace_is_refused_with_its_sum() {
        let timing = AgentTiming {
            lease_ttl: Duration::from_secs(15),
            clock_skew_margin: Duration::from_secs(5),
            stop_within: Duration::from_secs(10),
        };
        let err = timing.check(Duration::from_secs(30)).unwrap_err();
        assert!(err.to_string().contains("= 30s"), "{err}");
        assert!(timing.check(Duration::from_secs(31)).is_ok());
        let short = AgentTiming {
            lease_ttl: Duration::from_secs(1),
            ..AgentTiming::default()
        };
        assert!(matches!(
            short.check(Duration::from_secs(60)),
            Err(TimingError::TtlTooShort { .. })
        ));
    }

    #[test]
    fn the_controller_reads_a_renewal_one_second_early() {
        assert_eq!(last_renewal_from_ttl(at(100), 10, 7), at(96));
        // A remaining TTL above the granted one (etcd extends leases on a leader change)
        // never reads as a renewal in the future.
        assert_eq!(last_renewal_from_ttl(at(100), 10, 12), at(99));
    }

    proptest! {
        /// Self-fencing: past its lease an agent leaves nothing running, and within it it
        /// never stops a generation the store places in its site in the current epoch.
        #[test]
        fn past_the_lease_nothing_runs_and_within_it_nothing_placed_here_is_stopped(
            now in 0i64..100,
            valid_until in 0i64..100,
            site_epoch in 0u64..4,
            runs in proptest::collection::vec((0u8..6, 0u64..4, proptest::option::of(0u64..4)), 0..12),
            placed in proptest::collection::vec((0u8..6, any::<bool>(), 0u64..4), 0..8),
        ) {
            let here = site("dc-a");
            let view = StoreView {
                site_epoch,
                placed: placed
                    .iter()
                    .map(|(j, in_a, g)| (
                        JobId::new("shop", &format!("j{j}")),
                        (site(if *in_a { "dc-a" } else { "dc-b" }), *g),
                    ))
                    .collect(),
            };
            // A site runs one copy of a generation: one epoch per (job, generation).
            let running: Vec<RunningGeneration> = runs
                .iter()
                .map(|(j, g, e)| ((*j, *g), *e))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .map(|((j, g), e)| run(&format!("j{j}"), g, e))
                .collect();
            let lease = LeaseView::Held { valid_until: at(valid_until) };
            let decision = decide(&here, at(now), &lease, Some(&view), &running);
            let stopped = |r: &RunningGeneration| decision
                .stops
                .iter()
                .any(|s| s.job == r.job && s.generation == r.generation);
            if now >= valid_until {
                prop_assert!(running.iter().all(stopped));
            } else {
                for r in &running {
                    let admitted = view.placed.get(&r.job) == Some(&(here.clone(), r.generation))
                        && r.epoch.is_none_or(|e| e >= site_epoch);
                    prop_assert_eq!(stopped(r), !admitted, "{:?}", r);
                }
            }
        }

        /// The timing argument: a timing `check` accepts leaves the controller's loss
        /// judgement (silence past the grace since the last renewal) after the instant
        /// the agent has stopped its site, for any renewal time and any drift within the
        /// margin.
        #[test]
        fn an_accepted_timing_fences_the_site_before_the_controller_may_judge_it_lost(
            ttl in 2u64..40,
            margin in 0u64..20,
            stop in 0u64..30,
            grace in 1u64..90,
            drift in 0u64..20,
        ) {
            let timing = AgentTiming {
                lease_ttl: Duration::from_secs(ttl),
                clock_skew_margin: Duration::from_secs(margin),
                stop_within: Duration::from_secs(stop),
            };
            prop_assume!(timing.check(Duration::from_secs(grace)).is_ok());
            let drift = drift.min(margin);
            // Renewal sent (agent clock = etcd clock at that instant) at 0, received at 0;
            // the agent's clock then runs `drift` behind: it sees its deadline `drift` late.
            let agent_deadline = ttl + drift;
            let all_stopped = agent_deadline + stop;
            let judged_lost = grace; // no sign of life after the renewal at 0
            prop_assert!(all_stopped < judged_lost);
            let judged = at(i64::try_from(judged_lost).unwrap_or(i64::MAX));
            prop_assert!(site_fenced_by(&timing, at(0), judged));
            prop_assert!(!lease_may_be_alive(&timing, at(0), judged));
        }
    }
}
