//! twinsite's own findings: is the job's state at the peer recent enough, and could a
//! failover to the peer run it at all (a checkpoint there, its jar there, allowed there,
//! room there)?

use serde::{Deserialize, Serialize};

use super::{Evidence, Exposure, Finding, FindingKind, Severity, human_count};
use crate::input::streamjob::FailoverTrigger;

/// Whether the job's jar is at the peer, from the controller's jar publication. `Unknown`
/// (still publishing, or a jar that is not published: in the image, no site storage) makes a
/// note, never a finding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum JarAtPeer {
    #[default]
    Unknown,
    Present,
    Missing {
        detail: String,
    },
}

/// Whether the peer has room for the job if its site were lost now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "fit")]
pub enum Fit {
    #[default]
    Unknown,
    Fits,
    DoesNotFit {
        reason: String,
    },
}

/// What twinsite knows about a job's failover to one peer site.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub site: String,
    pub peer: String,
    pub failover_mode: FailoverTrigger,
    /// `None`: twinsite does not replicate the job (no checkpoint directory, or no storage
    /// at one of the sites).
    pub exposure: Option<Exposure>,
    pub jar: JarAtPeer,
    /// The peer is among the job's allowed sites (or it allows any).
    pub allowed_at_peer: bool,
    pub fit: Fit,
}

/// Findings and notes about a job's readiness to fail over to `readiness.peer`.
pub fn readiness_findings(r: &Readiness) -> (Vec<Finding>, Vec<String>) {
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    let state = |what: &str| format!("twinsite:{what}");
    let scope = Some(format!("{} -> {}", r.site, r.peer));
    if r.failover_mode == FailoverTrigger::None {
        notes.push(
            "failover.mode is none: twinsite never relaunches or moves this job, so its failover readiness is not judged"
                .to_string(),
        );
        return (findings, notes);
    }
    if !r.allowed_at_peer {
        findings.push(Finding {
            kind: FindingKind::NotAllowedAtPeer,
            severity: Severity::Warning,
            summary: format!(
                "not allowed in {}: a loss of {} leaves the job down",
                r.peer, r.site
            ),
            evidence: vec![Evidence::new(
                "spec.placement.sites.allowed",
                scope.clone(),
                format!("{} is not among the allowed sites", r.peer),
            )],
            action: format!(
                "add {} to spec.placement.sites.allowed if the job may run there",
                r.peer
            ),
        });
    }
    if let Fit::DoesNotFit { reason } = &r.fit {
        findings.push(Finding {
            kind: FindingKind::DoesNotFitAtPeer,
            severity: Severity::Critical,
            summary: format!("does not fit in {} after a loss of {}", r.peer, r.site),
            evidence: vec![Evidence::new(
                state("failover-dry-run"),
                scope.clone(),
                reason.clone(),
            )],
            action: format!(
                "free or add capacity in {} (a failoverReserve in the policy keeps room for it), or lower the job's requests",
                r.peer
            ),
        });
    }
    match &r.jar {
        JarAtPeer::Missing { detail } => findings.push(Finding {
            kind: FindingKind::JarMissingAtPeer,
            severity: Severity::Critical,
            summary: format!(
                "its jar is not in {}: a failover could not launch it",
                r.peer
            ),
            evidence: vec![Evidence::new(
                state("jar-replication"),
                scope.clone(),
                detail.clone(),
            )],
            action:
                "check the jar replication of this job (spec.jarURI must be readable at the source)"
                    .to_string(),
        }),
        JarAtPeer::Present => {}
        JarAtPeer::Unknown => notes.push(format!(
            "jar at {}: unknown (not published there yet, or a jar that is not published)",
            r.peer
        )),
    }
    let Some(exposure) = &r.exposure else {
        notes.push(format!(
            "replication to {}: not tracked (no checkpoint directory, or a site without storage)",
            r.peer
        ));
        return (findings, notes);
    };
    let observed = |e: &Exposure| {
        let mut text = e.message.clone();
        if e.backlog_files > 0 {
            text.push_str(&format!(
                "; {} files ({} bytes) not yet verified at the peer",
                e.backlog_files,
                human_count(e.backlog_bytes as f64)
            ));
        }
        text
    };
    if !exposure.restorable {
        findings.push(Finding {
            kind: FindingKind::NoReplicatedCheckpoint,
            severity: if exposure.breached {
                Severity::Critical
            } else {
                Severity::Info
            },
            summary: format!(
                "no checkpoint in {}: a failover now would start the job without state",
                r.peer
            ),
            evidence: vec![Evidence::new(
                state("replicated-checkpoint"),
                scope.clone(),
                observed(exposure),
            )],
            action: if exposure.last_error.is_some() {
                "fix the replication error below; until a checkpoint is verified at the peer, a site loss loses the job's state".to_string()
            } else {
                "wait for the job's first checkpoint to replicate; if none comes, check that the job checkpoints (spec.checkpoints) and that its site's storage is readable".to_string()
            },
        });
    } else if exposure.breached {
        let rpo = exposure.rpo_seconds.unwrap_or(0.0);
        findings.push(Finding {
            kind: FindingKind::ReplicationBehind,
            severity: if rpo > 2.0 * exposure.bound_seconds {
                Severity::Critical
            } else {
                Severity::Warning
            },
            summary: format!(
                "replication to {} is behind: a site loss now would lose {} of processing",
                r.peer,
                super::human_duration(std::time::Duration::from_secs_f64(rpo))
            ),
            evidence: vec![Evidence::new(
                state("replicated-checkpoint"),
                scope.clone(),
                observed(exposure),
            )],
            action: "check the job's checkpoints complete at the source and the replication bandwidth (replication.bandwidth, parallelCopies) between the sites"
                .to_string(),
        });
    }
    if let Some(error) = &exposure.last_error {
        findings.push(Finding {
            kind: FindingKind::ReplicationFailing,
            severity: Severity::Warning,
            summary: format!("copying its checkpoints to {} fails", r.peer),
            evidence: vec![Evidence::new(state("replication"), scope, error.clone())],
            action:
                "fix the cause named in the error; the copy is retried every replication.interval"
                    .to_string(),
        });
    }
    (findings, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::{ExposureInput, ReplicatedAt, judge_exposure};
    use std::time::Duration;

    fn exposure(replicated_age_s: Option<i64>, error: Option<&str>) -> Exposure {
        judge_exposure(&ExposureInput {
            now_ms: 10_000_000,
            replicated: replicated_age_s.map(|age| ReplicatedAt {
                checkpoint_id: 3,
                completed_at_ms: 10_000_000 - age * 1000,
            }),
            tracked_since_ms: 0,
            bound: Duration::from_secs(300),
            backlog_files: 2,
            backlog_bytes: 4096,
            last_error: error.map(str::to_string),
        })
    }

    fn ready() -> Readiness {
        Readiness {
            site: "dc-a".into(),
            peer: "dc-b".into(),
            failover_mode: FailoverTrigger::Auto,
            exposure: Some(exposure(Some(30), None)),
            jar: JarAtPeer::Present,
            allowed_at_peer: true,
            fit: Fit::Fits,
        }
    }

    fn kinds(r: &Readiness) -> Vec<FindingKind> {
        readiness_findings(r).0.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_job_with_a_recent_checkpoint_its_jar_and_room_at_the_peer_is_ready() {
        let (findings, notes) = readiness_findings(&ready());
        assert!(findings.is_empty(), "{findings:?}");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn each_obstacle_to_a_failover_is_its_own_finding() {
        let mut r = ready();
        r.allowed_at_peer = false;
        r.fit = Fit::DoesNotFit {
            reason: "needs 4 cpu more".into(),
        };
        r.jar = JarAtPeer::Missing {
            detail: "hdfs://dc-b/jars/x.jar: not found".into(),
        };
        r.exposure = Some(exposure(None, Some("permission denied")));
        assert_eq!(
            kinds(&r),
            vec![
                FindingKind::NotAllowedAtPeer,
                FindingKind::DoesNotFitAtPeer,
                FindingKind::JarMissingAtPeer,
                FindingKind::NoReplicatedCheckpoint,
                FindingKind::ReplicationFailing,
            ]
        );
        let (findings, _) = readiness_findings(&r);
        let no_checkpoint = &findings[3];
        assert_eq!(no_checkpoint.severity, Severity::Critical);
        assert!(
            no_checkpoint.evidence[0].observed.contains("2 files"),
            "{:?}",
            no_checkpoint.evidence
        );
    }

    #[test]
    fn replication_behind_grows_critical_past_twice_the_bound() {
        let mut r = ready();
        r.exposure = Some(exposure(Some(400), None));
        let (findings, _) = readiness_findings(&r);
        assert_eq!(findings[0].kind, FindingKind::ReplicationBehind);
        assert_eq!(findings[0].severity, Severity::Warning);
        r.exposure = Some(exposure(Some(700), None));
        assert_eq!(readiness_findings(&r).0[0].severity, Severity::Critical);
    }

    #[test]
    fn an_unknown_jar_state_is_a_note_not_a_finding() {
        let mut r = ready();
        r.jar = JarAtPeer::Unknown;
        let (findings, notes) = readiness_findings(&r);
        assert!(findings.is_empty());
        assert!(
            notes[0].contains("jar at") && notes[0].contains("unknown"),
            "{notes:?}"
        );
    }

    #[test]
    fn jobs_twinsite_never_moves_are_not_judged() {
        let mut r = ready();
        r.failover_mode = FailoverTrigger::None;
        r.allowed_at_peer = false;
        let (findings, notes) = readiness_findings(&r);
        assert!(findings.is_empty());
        assert!(notes[0].contains("failover.mode is none"));
    }
}
