//! The controller-wide settings of a policy: `detection`, `replication`, `rebalance` and
//! `redaction`, each checked against its bounds and resolved to the typed value stages read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::file::{DetectionSpec, RebalanceSpec, RedactionSpec, ReplicationSpec};
use crate::input::common::{integer_value, positive_duration};
use crate::input::error::Problems;
use crate::model::RebalancePolicy;

/// Longest `rebalance.leadTime`: the rebalancer looks a day ahead for closing windows.
pub const MAX_REBALANCE_LEAD_TIME: Duration = Duration::from_secs(12 * 3600);
/// Most `rebalance.movesPerHour`: one move a second.
pub const MAX_REBALANCE_MOVES_PER_HOUR: u32 = 3600;

/// Most patterns `redaction.keys` may list, and longest one: bounds what every API response
/// and audit entry is matched against.
pub const MAX_REDACTION_KEYS: usize = 64;
pub const MAX_REDACTION_KEY_LEN: usize = 253;

/// Policy fields that used to describe failure detection but were never read, and the
/// controller configuration field that does the work.
pub const DETECTION_FIELDS_MOVED: [(&str, &str); 4] = [
    ("detection.nodeGrace", "failover.nodeGrace"),
    ("detection.siteGrace", "failover.siteGrace"),
    (
        "detection.flinkRecoveryGrace",
        "failover.taskManagerRecoveryBound",
    ),
    ("detection.probeInterval", "reconcile.interval"),
];

/// Kubernetes' own `tolerationSeconds` for unreachable and not-ready nodes
/// (`--default-unreachable-toleration-seconds`): a longer timeout would keep twinsite's pods
/// on a dead node longer than plain Kubernetes does.
pub const MAX_POD_EVICTION_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    /// Whole seconds, 1 to 300 (`MAX_POD_EVICTION_TIMEOUT`).
    pub pod_eviction_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    pub interval: Duration,
    pub bandwidth_bytes_per_second: Option<i64>,
    pub parallel_copies: u32,
    pub max_lag: Duration,
}

pub(super) fn resolve_detection(d: &DetectionSpec, problems: &mut Problems) -> Option<Detection> {
    // One source of truth: the controller judges failures by its configuration's
    // `failover.*`; the same knob here would be a second, silently ignored one.
    let given = [
        &d.node_grace,
        &d.site_grace,
        &d.flink_recovery_grace,
        &d.probe_interval,
    ];
    for (value, (field, instead)) in given.into_iter().zip(DETECTION_FIELDS_MOVED) {
        if let Some(value) = value {
            problems.field(
                field,
                format!(
                    "{value:?} is not read: set {instead} in the controller configuration (twinsite.yaml) instead, and remove {field} from the policy"
                ),
            );
        }
    }
    let pod_eviction_timeout = positive_duration(
        problems,
        "detection.podEvictionTimeout",
        &d.pod_eviction_timeout,
    );
    if let Some(timeout) = pod_eviction_timeout {
        if timeout.subsec_nanos() != 0 {
            problems.field(
                "detection.podEvictionTimeout",
                format!(
                    "{:?} must be whole seconds: it becomes the pods' tolerationSeconds",
                    d.pod_eviction_timeout
                ),
            );
        } else if timeout > MAX_POD_EVICTION_TIMEOUT {
            problems.field(
                "detection.podEvictionTimeout",
                format!(
                    "{:?} is longer than Kubernetes' own default of 5m: pods would stay on a dead node longer than without it",
                    d.pod_eviction_timeout
                ),
            );
        }
    }
    Some(Detection {
        pod_eviction_timeout: pod_eviction_timeout?,
    })
}

pub(super) fn resolve_replication(
    r: &ReplicationSpec,
    problems: &mut Problems,
) -> Option<Replication> {
    let interval = positive_duration(problems, "replication.interval", &r.interval);
    let max_lag = positive_duration(problems, "replication.maxLag", &r.max_lag);
    let bandwidth = r
        .bandwidth
        .as_ref()
        .map(|b| integer_value(problems, "replication.bandwidth", b, false));
    if r.parallel_copies == 0 {
        problems.field("replication.parallelCopies", "must be at least 1, found 0");
    }
    Some(Replication {
        interval: interval?,
        bandwidth_bytes_per_second: match bandwidth {
            Some(b) => Some(b?),
            None => None,
        },
        parallel_copies: r.parallel_copies,
        max_lag: max_lag?,
    })
}

pub(super) fn resolve_rebalance(
    spec: &RebalanceSpec,
    problems: &mut Problems,
) -> Option<RebalancePolicy> {
    let lead_time = positive_duration(problems, "rebalance.leadTime", &spec.lead_time);
    if let Some(lead) = lead_time
        && lead > MAX_REBALANCE_LEAD_TIME
    {
        problems.field(
            "rebalance.leadTime",
            format!(
                "{:?} is longer than 12h: closing windows are looked for a day ahead, and the moves need time after the lead time too",
                spec.lead_time
            ),
        );
        return None;
    }
    if spec.moves_per_hour == 0 || spec.moves_per_hour > MAX_REBALANCE_MOVES_PER_HOUR {
        problems.field(
            "rebalance.movesPerHour",
            format!(
                "must be 1 to {MAX_REBALANCE_MOVES_PER_HOUR}, found {} (0 would leave borrowed pods on nodes whose window closed)",
                spec.moves_per_hour
            ),
        );
        return None;
    }
    Some(RebalancePolicy {
        lead_time: lead_time?,
        moves_per_hour: spec.moves_per_hour,
    })
}

pub(super) fn check_redaction(redaction: &RedactionSpec, problems: &mut Problems) {
    if redaction.keys.len() > MAX_REDACTION_KEYS {
        problems.field(
            "redaction.keys",
            format!(
                "at most {MAX_REDACTION_KEYS} patterns, found {}",
                redaction.keys.len()
            ),
        );
        return;
    }
    for (i, key) in redaction.keys.iter().enumerate() {
        let at = format!("redaction.keys[{i}]");
        if key.is_empty() || key.len() > MAX_REDACTION_KEY_LEN {
            problems.field(
                at,
                format!(
                    "must be 1 to {MAX_REDACTION_KEY_LEN} characters, found {}",
                    key.len()
                ),
            );
        } else if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic()) {
            problems.field(
                at,
                format!(
                    "{bad:?} is not allowed: a pattern is a key of printable ASCII without spaces, `*` matching any run of characters"
                ),
            );
        }
    }
}
