//! Health judgement: is a node lost (heartbeat older than the node grace), and is a site lost
//! (no sign of life past the site grace AND quorum with the witness). Pure functions of values.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{Timestamp, elapsed};

/// Grace after which a silent node is lost (issue default: 20 s).
pub const DEFAULT_NODE_GRACE: Duration = Duration::from_secs(20);
/// Grace after which a silent site is lost (issue default: 30 s).
pub const DEFAULT_SITE_GRACE: Duration = Duration::from_secs(30);
/// Silence after which a site is suspect (two missed 5 s heartbeats).
pub const DEFAULT_SITE_SUSPECT_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum NodeVerdict {
    Healthy,
    Lost { last_heartbeat: Option<Timestamp> },
}

/// A node is lost when its last heartbeat is older than `grace` at `now`, or when it has
/// none (deleted from the API, or never reported).
pub fn judge_node(
    last_heartbeat: Option<Timestamp>,
    now: Timestamp,
    grace: Duration,
) -> NodeVerdict {
    match last_heartbeat {
        Some(at) if elapsed(at, now) <= grace => NodeVerdict::Healthy,
        other => NodeVerdict::Lost {
            last_heartbeat: other,
        },
    }
}

/// Every sign of life of one site the controller has, as values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSigns {
    /// Last successful answer of the site's Kubernetes API.
    pub api_last_contact: Option<Timestamp>,
    /// Newest heartbeat of any of its nodes.
    pub newest_node_heartbeat: Option<Timestamp>,
    /// Last time another observer (the peer site's etcd member or agent, seen through the
    /// quorum) confirmed the site alive. This is what keeps a partition between the controller
    /// and a healthy site from failing it over.
    pub peer_last_contact: Option<Timestamp>,
    /// When the controller started watching; silence is only counted from here, so a fresh
    /// leader does not find every site "silent since forever".
    pub watching_since: Timestamp,
}

impl SiteSigns {
    pub fn last_sign_of_life(&self) -> Timestamp {
        [
            self.api_last_contact,
            self.newest_node_heartbeat,
            self.peer_last_contact,
        ]
        .into_iter()
        .flatten()
        .fold(self.watching_since, Timestamp::max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteThresholds {
    pub suspect_after: Duration,
    pub grace: Duration,
}

impl Default for SiteThresholds {
    fn default() -> Self {
        SiteThresholds {
            suspect_after: DEFAULT_SITE_SUSPECT_AFTER,
            grace: DEFAULT_SITE_GRACE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum SiteVerdict {
    Healthy,
    /// Silent since `since`, not yet past the grace.
    Suspect {
        since: Timestamp,
    },
    /// Silent past the grace and the controller holds quorum with the witness: fail over.
    Lost {
        since: Timestamp,
    },
    /// Silent past the grace but the controller lacks quorum: it may be the one cut off, so
    /// it must do nothing.
    UnreachableWithoutQuorum {
        since: Timestamp,
    },
}

/// Judges a site. A site is lost only when nobody (API, kubelets, peer) heard from it within
/// the grace AND `controller_has_quorum_with_witness` holds.
pub fn judge_site(
    signs: &SiteSigns,
    controller_has_quorum_with_witness: bool,
    now: Timestamp,
    thresholds: &SiteThresholds,
) -> SiteVerdict {
    let since = signs.last_sign_of_life();
    let silence = elapsed(since, now);
    if silence <= thresholds.suspect_after {
        SiteVerdict::Healthy
    } else if silence <= thresholds.grace {
        SiteVerdict::Suspect { since }
    } else if controller_has_quorum_with_witness {
        SiteVerdict::Lost { since }
    } else {
        SiteVerdict::UnreachableWithoutQuorum { since }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn t(secs: i64) -> Timestamp {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn signs(api: Option<i64>, peer: Option<i64>) -> SiteSigns {
        SiteSigns {
            api_last_contact: api.map(t),
            newest_node_heartbeat: api.map(t),
            peer_last_contact: peer.map(t),
            watching_since: t(0),
        }
    }

    #[test]
    fn a_node_is_lost_only_once_its_heartbeat_is_older_than_the_grace() {
        let grace = Duration::from_secs(20);
        assert_eq!(
            judge_node(Some(t(100)), t(120), grace),
            NodeVerdict::Healthy
        );
        assert_eq!(
            judge_node(Some(t(100)), t(121), grace),
            NodeVerdict::Lost {
                last_heartbeat: Some(t(100))
            }
        );
    }

    #[test]
    fn a_node_without_heartbeat_is_lost() {
        assert!(matches!(
            judge_node(None, t(0), DEFAULT_NODE_GRACE),
            NodeVerdict::Lost { .. }
        ));
    }

    #[test]
    fn a_silent_site_goes_suspect_then_lost_with_quorum() {
        let th = SiteThresholds::default();
        let s = signs(Some(100), None);
        assert_eq!(judge_site(&s, true, t(105), &th), SiteVerdict::Healthy);
        assert_eq!(
            judge_site(&s, true, t(120), &th),
            SiteVerdict::Suspect { since: t(100) }
        );
        assert_eq!(
            judge_site(&s, true, t(131), &th),
            SiteVerdict::Lost { since: t(100) }
        );
    }

    #[test]
    fn a_silent_site_is_never_lost_without_quorum() {
        let th = SiteThresholds::default();
        let s = signs(Some(100), None);
        assert_eq!(
            judge_site(&s, false, t(1000), &th),
            SiteVerdict::UnreachableWithoutQuorum { since: t(100) }
        );
    }

    #[test]
    fn a_site_the_peer_still_hears_is_not_lost_when_only_the_controller_is_cut_off() {
        let th = SiteThresholds::default();
        let s = signs(Some(100), Some(995));
        assert_eq!(judge_site(&s, true, t(1000), &th), SiteVerdict::Healthy);
    }

    #[test]
    fn silence_counts_from_when_the_controller_started_watching() {
        let th = SiteThresholds::default();
        let mut s = signs(None, None);
        s.watching_since = t(500);
        assert_eq!(
            judge_site(&s, true, t(520), &th),
            SiteVerdict::Suspect { since: t(500) }
        );
    }

    proptest::proptest! {
        #[test]
        fn without_quorum_no_site_is_ever_judged_lost(
            api in proptest::option::of(0i64..10_000),
            peer in proptest::option::of(0i64..10_000),
            now in 0i64..20_000,
        ) {
            let v = judge_site(&signs(api, peer), false, t(now), &SiteThresholds::default());
            proptest::prop_assert!(!matches!(v, SiteVerdict::Lost { .. }), "judged lost: {:?}", v);
        }

        #[test]
        fn a_site_heard_within_the_grace_is_never_lost(
            last in 0i64..10_000, gap in 0i64..=30,
        ) {
            let v = judge_site(&signs(Some(last), None), true, t(last + gap), &SiteThresholds::default());
            proptest::prop_assert!(!matches!(v, SiteVerdict::Lost { .. }), "judged lost: {:?}", v);
        }
    }
}
