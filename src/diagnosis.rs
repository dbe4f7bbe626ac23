//! Diagnosis of jobs: fetches what `scheduler::diagnosis` judges and puts its findings
//! together, for `GET /api/v1/diagnosis`, `twinsite diagnose` and the diagnosis benchmark.
//!
//! Two parts, each usable alone:
//! - [`flink_part`]: per job, its Flink series from a [`MetricsSource`] (one fetch over the
//!   right-sizer's lookback, the same series right-sizing reads), judged over the policy's
//!   `diagnosis.window`, plus the right-sizer's verdict;
//! - [`twinsite_part`]: per job, from the controller's state: phase and site, and for every
//!   other site its failover readiness (RPO exposure as the leader judged it, allowed there,
//!   room there after a loss of its site by the failover engine's planned dry run, jar at the
//!   peer from the job's jar publication state, `status.jar`).

use std::collections::BTreeMap;
use std::time::Duration;

use scheduler::diagnosis::{
    self, Fit, FlinkInputs, JarAtPeer, JobDiagnosis, Readiness, Summary, Thresholds,
};
use scheduler::input::StreamJob;
use scheduler::model::{JobId, SiteId};
use scheduler::report::assemble::{JobFacts, assemble};
use scheduler::rightsize::{RightsizeConfig, Window};
use serde::{Deserialize, Serialize};

use crate::controller::{Controller, stream_job_of};
use crate::job_metrics::{JobKey, MetricsError, MetricsSource, step_for};
use crate::state::StateError;

/// A whole diagnosis, as the API answers and the CLI prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    /// RFC 3339.
    pub generated_at: String,
    /// The Flink metrics source, or `None` when the Flink part was not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_source: Option<String>,
    /// Why the Flink part could not run (no source, source unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
    /// `diagnosis.window`, e.g. `1h`.
    pub window: String,
    /// The right-sizer's lookback, e.g. `1d`.
    pub lookback: String,
    /// The thresholds the Flink part judged by (the policy's `diagnosis`).
    pub thresholds: Thresholds,
    /// What the whole diagnosis could not judge (e.g. offline: no replication state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub summary: Summary,
    pub jobs: Vec<JobDiagnosis>,
}

/// What the Flink part needs of one job that its metrics do not carry.
#[derive(Debug, Clone, PartialEq)]
pub struct JobContext {
    pub facts: JobFacts,
    pub checkpoint_interval: Option<Duration>,
}

impl JobContext {
    /// The context of a parsed StreamJob; `None` when its resources do not resolve.
    pub fn of(job: &StreamJob) -> Option<JobContext> {
        let demand = job.demand().ok()?;
        Some(JobContext {
            facts: JobFacts::of(job, &demand),
            checkpoint_interval: job
                .spec
                .checkpoints
                .as_ref()
                .and_then(|c| humantime::parse_duration(c.interval.trim()).ok()),
        })
    }
}

/// Findings and notes of one job.
pub type Judged = (Vec<diagnosis::Finding>, Vec<String>);

/// The Flink part for every job of `contexts`, one job's series in memory at a time. Fails
/// only when the source cannot say which jobs it has (unreachable, refused); a job whose
/// series cannot be read gets a note instead.
pub async fn flink_part(
    source: &dyn MetricsSource,
    contexts: &[JobContext],
    until_ms: i64,
    config: &RightsizeConfig,
    thresholds: &Thresholds,
) -> Result<BTreeMap<JobId, Judged>, MetricsError> {
    let step_ms = step_for(config);
    let config = RightsizeConfig {
        scrape_interval_ms: step_ms,
        ..config.clone()
    };
    config.validate()?;
    // The window must fit in what is fetched.
    let lookback_ms = config.lookback_ms.max(thresholds.window.as_millis() as i64);
    let range = Window {
        start_ms: until_ms - lookback_ms,
        end_ms: until_ms,
    };
    let present = source.jobs_with_metrics(range).await?;
    let mut out = BTreeMap::new();
    for context in contexts {
        let key = JobKey::of(&context.facts.job);
        let mut notes = Vec::new();
        let series = if present.contains(&key) {
            match source.job_series(&key, range, step_ms).await {
                Ok(series) => series,
                Err(error) => {
                    notes.push(format!("Flink metrics could not be read: {error}"));
                    out.insert(context.facts.job.clone(), (Vec::new(), notes));
                    continue;
                }
            }
        } else {
            notes.push(format!(
                "no Flink metrics for this job in the last {} at {}",
                diagnosis::human_duration(Duration::from_millis(lookback_ms as u64)),
                source.describe()
            ));
            out.insert(context.facts.job.clone(), (Vec::new(), notes));
            continue;
        };
        let metrics = assemble(&context.facts, &series, until_ms, step_ms);
        let recommendation = scheduler::rightsize::recommend(&metrics, &config)?;
        let (findings, mut judged_notes) = diagnosis::flink_findings(
            &FlinkInputs {
                series: &series,
                until_ms,
                checkpoint_interval: context.checkpoint_interval,
                recommendation: Some(&recommendation),
            },
            thresholds,
        );
        notes.append(&mut judged_notes);
        out.insert(context.facts.job.clone(), (findings, notes));
    }
    Ok(out)
}

/// The twinsite part: every stored job (or only `only`), with its phase, site and failover
/// readiness towards every other site. Jobs whose stored spec does not parse are reported
/// with a note, never dropped.
pub async fn twinsite_part(
    controller: &Controller,
    only: Option<&JobId>,
) -> Result<(Vec<JobDiagnosis>, Vec<JobContext>), StateError> {
    let records = controller.store.list_jobs().await?;
    let exposures = controller.exposure.judged();
    let leading = controller.is_leading();
    // The failover engine's planned dry run of each site: who fits in the other site.
    let mut fits: BTreeMap<(SiteId, SiteId), BTreeMap<JobId, Fit>> = BTreeMap::new();
    let placed_sites: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| only.is_none_or(|id| *id == JobId::new(&r.value.namespace, &r.value.name)))
        .filter_map(|r| r.value.placement.as_ref().map(|p| p.site.clone()))
        .collect();
    for from in controller
        .sites
        .keys()
        .filter(|s| placed_sites.contains(&s.0))
    {
        for to in controller.sites.keys().filter(|s| *s != from) {
            // A refused dry run (an operation already running, a site not up) judges nothing.
            let Ok(plan) =
                crate::failover_plan::dry_run(controller, from, to, failover::MoveMode::Planned)
                    .await?
            else {
                continue;
            };
            let mut verdicts: BTreeMap<JobId, Fit> = plan
                .moves
                .iter()
                .map(|m| (m.job.clone(), Fit::Fits))
                .collect();
            for nf in &plan.not_fitting {
                // Zero missing capacity: a reason other than room (not allowed there), which
                // has its own finding.
                if nf.missing != scheduler::model::Resources::ZERO {
                    verdicts.insert(
                        nf.job.clone(),
                        Fit::DoesNotFit {
                            reason: nf.reason.clone(),
                        },
                    );
                }
            }
            fits.insert((from.clone(), to.clone()), verdicts);
        }
    }

    let mut jobs = Vec::new();
    let mut contexts = Vec::new();
    for record in records {
        let id = JobId::new(&record.value.namespace, &record.value.name);
        if only.is_some_and(|o| *o != id) {
            continue;
        }
        let status = record.value.status.clone();
        let site = record.value.placement.as_ref().map(|p| p.site.clone());
        let mut diagnosis = JobDiagnosis {
            job: id.clone(),
            site: site.clone(),
            phase: Some(status.phase.as_str().to_string()),
            findings: Vec::new(),
            notes: Vec::new(),
        };
        if matches!(
            status.phase,
            crate::controller::JobPhase::Failed
                | crate::controller::JobPhase::Pending
                | crate::controller::JobPhase::Unknown
        ) && let Some(message) = &status.message
        {
            diagnosis
                .notes
                .push(format!("{}: {message}", status.phase.as_str()));
        }
        let job = match stream_job_of(&record.value) {
            Ok(job) => job,
            Err(error) => {
                diagnosis
                    .notes
                    .push(format!("stored spec does not parse: {error}"));
                jobs.push(diagnosis);
                continue;
            }
        };
        if let Some(context) = JobContext::of(&job) {
            contexts.push(context);
        }
        let Some(site) = site else {
            diagnosis
                .notes
                .push("not placed: failover readiness is judged once it runs".to_string());
            jobs.push(diagnosis);
            continue;
        };
        let allowed = &job.spec.placement.sites.allowed;
        for peer in controller.sites.keys().filter(|p| p.0 != site) {
            let exposure = exposures
                .get(&id)
                .and_then(|all| all.iter().find(|e| e.peer == peer.0))
                .map(|e| e.exposure.clone());
            let readiness = Readiness {
                site: site.clone(),
                peer: peer.0.clone(),
                failover_mode: job.spec.failover.mode,
                exposure,
                jar: jar_at_peer(status.jar.as_ref(), &peer.0),
                allowed_at_peer: allowed.is_empty() || allowed.contains(&peer.0),
                fit: fits
                    .get(&(SiteId(site.clone()), peer.clone()))
                    .and_then(|v| v.get(&id))
                    .cloned()
                    .unwrap_or_default(),
            };
            let (mut findings, mut notes) = diagnosis::readiness_findings(&readiness);
            if readiness.exposure.is_none() && !leading {
                notes.retain(|n| !n.starts_with("replication to"));
                notes.push("replication exposure is judged by the leader; ask it".to_string());
            }
            diagnosis.findings.append(&mut findings);
            diagnosis.notes.append(&mut notes);
        }
        jobs.push(diagnosis);
    }
    Ok((jobs, contexts))
}

/// Adds the Flink part's findings and notes to the jobs of the twinsite part.
pub fn merge(jobs: &mut [JobDiagnosis], flink: BTreeMap<JobId, Judged>) {
    for job in jobs.iter_mut() {
        if let Some((mut findings, mut notes)) = flink.get(&job.job).cloned() {
            job.findings.append(&mut findings);
            job.notes.append(&mut notes);
        }
    }
}

/// Ranks the jobs and wraps them up.
pub fn finish(
    mut jobs: Vec<JobDiagnosis>,
    metrics_source: Option<String>,
    metrics_error: Option<String>,
    thresholds: &Thresholds,
    config: &RightsizeConfig,
) -> Diagnosis {
    let summary = diagnosis::rank(&mut jobs);
    Diagnosis {
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        metrics_source,
        metrics_error,
        window: diagnosis::human_duration(thresholds.window),
        lookback: diagnosis::human_duration(
            Duration::from_millis(config.lookback_ms.max(0) as u64),
        ),
        thresholds: *thresholds,
        notes: Vec::new(),
        summary,
        jobs,
    }
}

/// The whole diagnosis of a live controller: its state, and its metrics source when it has
/// one and `with_metrics` asks for it.
pub async fn diagnose(
    controller: &Controller,
    source: Option<&dyn MetricsSource>,
    only: Option<&JobId>,
    with_metrics: bool,
) -> Result<Diagnosis, StateError> {
    let thresholds = controller.policy.diagnosis();
    let config = crate::controller::rightsize::controller_config();
    let (mut jobs, contexts) = twinsite_part(controller, only).await?;
    let (described, error) = match (with_metrics, source) {
        (false, _) => (None, None),
        (true, None) => (
            None,
            Some("no metrics source configured: set `metrics` in the controller configuration (simulated sites have their own)".to_string()),
        ),
        (true, Some(source)) => {
            match flink_part(
                source,
                &contexts,
                chrono::Utc::now().timestamp_millis(),
                &config,
                &thresholds,
            )
            .await
            {
                Ok(flink) => {
                    merge(&mut jobs, flink);
                    (Some(source.describe()), None)
                }
                Err(error) => (
                    Some(source.describe()),
                    Some(format!("Flink metrics were not judged: {error}")),
                ),
            }
        }
    };
    Ok(finish(jobs, described, error, &thresholds, &config))
}

/// A table a person reads: one block per job with findings (worst first), then the jobs
/// without findings in one line.
pub fn render_table(d: &Diagnosis) -> String {
    let mut out = String::new();
    let s = &d.summary;
    out.push_str(&format!(
        "{} jobs, {} with findings ({} critical, {} warning, {} info); window {}, lookback {}, metrics {}\n",
        s.jobs,
        s.jobs_with_findings,
        s.by_severity.get(&diagnosis::Severity::Critical).unwrap_or(&0),
        s.by_severity.get(&diagnosis::Severity::Warning).unwrap_or(&0),
        s.by_severity.get(&diagnosis::Severity::Info).unwrap_or(&0),
        d.window,
        d.lookback,
        d.metrics_source.as_deref().unwrap_or("none"),
    ));
    if let Some(error) = &d.metrics_error {
        out.push_str(&format!("note: {error}\n"));
    }
    for note in &d.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    let mut quiet = Vec::new();
    for job in &d.jobs {
        if job.findings.is_empty() {
            quiet.push(job.job.0.as_str());
            continue;
        }
        out.push_str(&format!(
            "\n{} ({}{})\n",
            job.job,
            job.site.as_deref().unwrap_or("not placed"),
            job.phase
                .as_deref()
                .map(|p| format!(", {p}"))
                .unwrap_or_default()
        ));
        for f in &job.findings {
            out.push_str(&format!(
                "  {:<8} {:<34} {}\n",
                f.severity.as_str(),
                f.kind.as_str(),
                f.summary
            ));
            for e in &f.evidence {
                out.push_str(&format!(
                    "           evidence: {}{}: {}\n",
                    e.source,
                    e.scope
                        .as_deref()
                        .map(|s| format!(" [{s}]"))
                        .unwrap_or_default(),
                    e.observed
                ));
            }
            out.push_str(&format!("           action:   {}\n", f.action));
        }
        for note in &job.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
    }
    if !quiet.is_empty() {
        out.push_str(&format!(
            "\nno findings ({}): {}\n",
            quiet.len(),
            quiet.join(", ")
        ));
    }
    out
}

/// The job's jar at `peer`, from the jar publication state in its status
/// (`controller::jars`): verified there is present; failed there, or a source that cannot be
/// read, is missing with the reason; still publishing, or no publication (a jar in the
/// image, a site without storage), is unknown.
fn jar_at_peer(jar: Option<&crate::controller::jars::JarStatus>, peer: &str) -> JarAtPeer {
    use crate::controller::jars::JarState;
    let Some(jar) = jar else {
        return JarAtPeer::Unknown;
    };
    match jar.sites.get(peer) {
        Some(site) => match site.state {
            JarState::Verified => JarAtPeer::Present,
            JarState::Failed => JarAtPeer::Missing {
                detail: site
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("publishing {} to {peer} failed", jar.source)),
            },
            JarState::Publishing => JarAtPeer::Unknown,
        },
        None => match &jar.error {
            Some(error) => JarAtPeer::Missing {
                detail: error.clone(),
            },
            None => JarAtPeer::Unknown,
        },
    }
}

#[cfg(test)]
mod jar_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::jars::{JarSiteStatus, JarState, JarStatus};

    fn jar(sites: &[(&str, JarState, Option<&str>)], error: Option<&str>) -> JarStatus {
        JarStatus {
            source: "hdfs:///jars/orders.jar".into(),
            spec: "abc".into(),
            jar: None,
            error: error.map(str::to_string),
            sites: sites
                .iter()
                .map(|(s, state, reason)| {
                    (
                        s.to_string(),
                        JarSiteStatus {
                            state: *state,
                            reason: reason.map(str::to_string),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            attempts: 0,
        }
    }

    #[test]
    fn a_jar_verified_at_the_peer_is_present_and_a_failed_one_is_missing_with_its_reason() {
        let status = jar(
            &[
                ("dc-a", JarState::Verified, None),
                ("dc-b", JarState::Failed, Some("no space left on dc-b")),
            ],
            None,
        );
        assert_eq!(jar_at_peer(Some(&status), "dc-a"), JarAtPeer::Present);
        assert_eq!(
            jar_at_peer(Some(&status), "dc-b"),
            JarAtPeer::Missing {
                detail: "no space left on dc-b".into()
            }
        );
    }

    #[test]
    fn a_jar_still_publishing_or_never_published_is_unknown_and_an_unreadable_source_is_missing() {
        let publishing = jar(&[("dc-b", JarState::Publishing, None)], None);
        assert_eq!(jar_at_peer(Some(&publishing), "dc-b"), JarAtPeer::Unknown);
        assert_eq!(jar_at_peer(None, "dc-b"), JarAtPeer::Unknown);
        let unreadable = jar(&[], Some("jarURI hdfs:///jars/orders.jar: not found"));
        assert!(matches!(
            jar_at_peer(Some(&unreadable), "dc-b"),
            JarAtPeer::Missing { .. }
        ));
    }
}
