//! Diagnosis: which jobs are in trouble, why, and what to do — from Flink's own metrics
//! (consumer lag, backpressure, busy vertices, checkpoints, restarts, GC, subtask skew), the
//! right-sizer's verdict, and twinsite's own view of each job (how much a site loss would
//! cost it now, whether a failover could restore it at the other site).
//!
//! Pure, like the rest of this crate: the caller fetches series (`crate::report::assemble`'s
//! [`RawSeries`], the same the right-sizer reads) and twinsite's state, and gets findings back.
//! Every finding carries its evidence (the metric or state it was read from, and the values)
//! and a suggested action. What could not be judged (no samples, no state) becomes a note, not
//! a finding: silence is never reported as health.
//!
//! Thresholds are the policy's `diagnosis` section ([`Thresholds`]; `policies/README.md`); the
//! replication bound is `replication.maxLag`.

mod exposure;
mod flink;
mod readiness;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use exposure::{Exposure, ExposureInput, ReplicatedAt, judge_exposure};
pub use flink::{FlinkInputs, flink_findings, metric_names};
pub use readiness::{Fit, JarAtPeer, Readiness, readiness_findings};

use crate::model::JobId;

/// How urgent a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Worth knowing; nothing is at risk now.
    Info,
    /// The job is degraded or will be.
    Warning,
    /// Data or availability is at risk now.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a finding is about. The kebab-case names are stable: alerts and scripts match them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// Kafka `records-lag-max` or the source's `pendingRecords` rose across the window.
    ConsumerLagGrowing,
    /// A vertex spends much of its time backpressured; names the busiest vertex too.
    Backpressure,
    /// A vertex is busy nearly all the time (no backpressure upstream reported).
    BusyVertex,
    CheckpointFailures,
    /// Checkpoints take nearly as long as the checkpoint interval, or longer.
    CheckpointDurationNearInterval,
    Restarts,
    GcTime,
    /// One subtask takes much more input than the vertex's mean (key skew).
    SubtaskSkew,
    /// The right-sizer asks for more parallelism, memory or CPU.
    UnderProvisioned,
    /// The right-sizer would give some back.
    OverProvisioned,
    /// The newest checkpoint at the peer is older than `replication.maxLag`.
    ReplicationBehind,
    /// Copying the job's checkpoints to the peer fails.
    ReplicationFailing,
    /// The peer holds no checkpoint of the job: a failover would start it without state.
    NoReplicatedCheckpoint,
    /// The job's jar is not at the peer (fed by jar replication; see `JarAtPeer`).
    JarMissingAtPeer,
    /// The job's `placement.sites.allowed` excludes the other site.
    NotAllowedAtPeer,
    /// The other site has no room for the job after a loss of its site.
    DoesNotFitAtPeer,
}

impl FindingKind {
    pub const ALL: [FindingKind; 16] = [
        FindingKind::ConsumerLagGrowing,
        FindingKind::Backpressure,
        FindingKind::BusyVertex,
        FindingKind::CheckpointFailures,
        FindingKind::CheckpointDurationNearInterval,
        FindingKind::Restarts,
        FindingKind::GcTime,
        FindingKind::SubtaskSkew,
        FindingKind::UnderProvisioned,
        FindingKind::OverProvisioned,
        FindingKind::ReplicationBehind,
        FindingKind::ReplicationFailing,
        FindingKind::NoReplicatedCheckpoint,
        FindingKind::JarMissingAtPeer,
        FindingKind::NotAllowedAtPeer,
        FindingKind::DoesNotFitAtPeer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::ConsumerLagGrowing => "consumer-lag-growing",
            FindingKind::Backpressure => "backpressure",
            FindingKind::BusyVertex => "busy-vertex",
            FindingKind::CheckpointFailures => "checkpoint-failures",
            FindingKind::CheckpointDurationNearInterval => "checkpoint-duration-near-interval",
            FindingKind::Restarts => "restarts",
            FindingKind::GcTime => "gc-time",
            FindingKind::SubtaskSkew => "subtask-skew",
            FindingKind::UnderProvisioned => "under-provisioned",
            FindingKind::OverProvisioned => "over-provisioned",
            FindingKind::ReplicationBehind => "replication-behind",
            FindingKind::ReplicationFailing => "replication-failing",
            FindingKind::NoReplicatedCheckpoint => "no-replicated-checkpoint",
            FindingKind::JarMissingAtPeer => "jar-missing-at-peer",
            FindingKind::NotAllowedAtPeer => "not-allowed-at-peer",
            FindingKind::DoesNotFitAtPeer => "does-not-fit-at-peer",
        }
    }

    /// Whether the finding comes from twinsite's own state rather than Flink's metrics.
    pub fn is_twinsite_own(self) -> bool {
        matches!(
            self,
            FindingKind::ReplicationBehind
                | FindingKind::ReplicationFailing
                | FindingKind::NoReplicatedCheckpoint
                | FindingKind::JarMissingAtPeer
                | FindingKind::NotAllowedAtPeer
                | FindingKind::DoesNotFitAtPeer
        )
    }
}

/// Where a finding was read: a metric (or a piece of twinsite's state), its scope (vertex,
/// subtask, pod, site) and what was observed there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// A Flink metric name, or `twinsite:<what>` for twinsite's own state.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub observed: String,
}

impl Evidence {
    pub fn new(source: impl Into<String>, scope: Option<String>, observed: String) -> Evidence {
        Evidence {
            source: source.into(),
            scope,
            observed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// One sentence a person reads first.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// What to do about it.
    pub action: String,
}

/// Everything diagnosis says about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDiagnosis {
    pub job: JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    pub findings: Vec<Finding>,
    /// What could not be judged, and why (no samples, no state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl JobDiagnosis {
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// Counts over a whole diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub jobs: usize,
    pub jobs_with_findings: usize,
    pub by_severity: BTreeMap<Severity, usize>,
    pub by_kind: BTreeMap<FindingKind, usize>,
}

/// Sorts jobs worst first (highest severity, then most findings, then name) and their
/// findings worst first, and counts them.
pub fn rank(jobs: &mut [JobDiagnosis]) -> Summary {
    for job in jobs.iter_mut() {
        job.findings
            .sort_by(|a, b| b.severity.cmp(&a.severity).then(a.kind.cmp(&b.kind)));
    }
    jobs.sort_by(|a, b| {
        b.worst()
            .cmp(&a.worst())
            .then(b.findings.len().cmp(&a.findings.len()))
            .then(a.job.cmp(&b.job))
    });
    let mut summary = Summary {
        jobs: jobs.len(),
        ..Summary::default()
    };
    for job in jobs.iter() {
        if !job.findings.is_empty() {
            summary.jobs_with_findings += 1;
        }
        for finding in &job.findings {
            *summary.by_severity.entry(finding.severity).or_default() += 1;
            *summary.by_kind.entry(finding.kind).or_default() += 1;
        }
    }
    summary
}

/// The policy's `diagnosis` thresholds, resolved (defaults in `policies/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    #[serde(with = "duration_text")]
    pub window: Duration,
    pub lag_growth_min_records: f64,
    pub backpressure_ms_per_second: f64,
    pub busy_ms_per_second: f64,
    pub checkpoint_failures: u32,
    pub checkpoint_duration_fraction: f64,
    pub restarts: u32,
    pub gc_ms_per_second: f64,
    pub skew_ratio: f64,
    pub skew_min_records_per_second: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window: Duration::from_secs(3600),
            lag_growth_min_records: 10_000.0,
            backpressure_ms_per_second: 500.0,
            busy_ms_per_second: 900.0,
            checkpoint_failures: 1,
            checkpoint_duration_fraction: 0.8,
            restarts: 1,
            gc_ms_per_second: 100.0,
            skew_ratio: 2.0,
            skew_min_records_per_second: 10.0,
        }
    }
}

/// A duration as `1h30m` in JSON, as the policy writes it.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::human_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// `1h2m`, `45s`, `350ms`: a duration as people read it.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// `12.3k`, `4.1M`: a count as people read it.
pub fn human_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: FindingKind, severity: Severity) -> Finding {
        Finding {
            kind,
            severity,
            summary: String::new(),
            evidence: vec![],
            action: String::new(),
        }
    }

    fn job(name: &str, findings: Vec<Finding>) -> JobDiagnosis {
        JobDiagnosis {
            job: JobId(name.into()),
            site: None,
            phase: None,
            findings,
            notes: vec![],
        }
    }

    #[test]
    fn jobs_are_ranked_worst_first_and_counted() {
        let mut jobs = vec![
            job("a/quiet", vec![]),
            job(
                "a/slow",
                vec![finding(FindingKind::GcTime, Severity::Warning)],
            ),
            job(
                "a/exposed",
                vec![
                    finding(FindingKind::OverProvisioned, Severity::Info),
                    finding(FindingKind::DoesNotFitAtPeer, Severity::Critical),
                ],
            ),
        ];
        let summary = rank(&mut jobs);
        let order: Vec<&str> = jobs.iter().map(|j| j.job.0.as_str()).collect();
        assert_eq!(order, ["a/exposed", "a/slow", "a/quiet"]);
        assert_eq!(jobs[0].findings[0].kind, FindingKind::DoesNotFitAtPeer);
        assert_eq!(summary.jobs, 3);
        assert_eq!(summary.jobs_with_findings, 2);
        assert_eq!(summary.by_severity[&Severity::Critical], 1);
        assert_eq!(summary.by_kind[&FindingKind::GcTime], 1);
    }

    #[test]
    fn kinds_serialise_as_their_stable_names() {
        for kind in FindingKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
        }
    }

    #[test]
    fn thresholds_round_trip_through_json_with_a_readable_window() {
        let t = Thresholds {
            window: Duration::from_secs(5400),
            ..Thresholds::default()
        };
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(json["window"], "1h30m");
        assert_eq!(serde_json::from_value::<Thresholds>(json).unwrap(), t);
    }

    #[test]
    fn durations_and_counts_read_as_people_write_them() {
        assert_eq!(human_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(human_count(48_200.0), "48.2k");
        assert_eq!(human_count(3.0), "3.0");
    }
}
