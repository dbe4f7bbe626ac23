//! What a simulation run reports: the timeline, one row per recovery (RTO/RPO) or per job not
//! relaunched, each job's state at the end, the invariant violations, and counters. Plain
//! values (serde for `--format json`) and a text rendering; no I/O.

use std::fmt::Write as _;
use std::time::Duration;

use scheduler::model::{JobId, Priority, Resources, SiteId};
use serde::{Deserialize, Serialize, Serializer};

use crate::types::CheckpointPointer;

/// Serialises a duration as seconds (a float), the unit people read in JSON reports.
pub(crate) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn de_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = f64::deserialize(d)?;
    Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
}

fn de_opt_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        Some(v) => Duration::try_from_secs_f64(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// What kind of line a timeline entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A scenario event applied to the world (a fault, a return, an ops request).
    Inject,
    /// A judgement or a step of the engine, from its audit log.
    Engine,
    /// A command the engine issued that acts on the world.
    Action,
    /// The recovery report of a relaunch: RTO and RPO.
    Recovery,
    /// The leader died and a new one resumed from the persisted records.
    Leader,
    /// An invariant did not hold.
    Violation,
}

impl EntryKind {
    fn label(self) -> &'static str {
        match self {
            EntryKind::Inject => "inject",
            EntryKind::Engine => "engine",
            EntryKind::Action => "action",
            EntryKind::Recovery => "recovery",
            EntryKind::Leader => "leader",
            EntryKind::Violation => "VIOLATION",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Virtual time since the start of the run.
    #[serde(serialize_with = "secs", deserialize_with = "de_secs")]
    pub at: Duration,
    pub kind: EntryKind,
    pub job: Option<JobId>,
    pub site: Option<SiteId>,
    pub text: String,
}

/// One relaunch, as the engine reported it (`ReportRecovery`) and the world saw it run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub job: JobId,
    pub priority: Priority,
    pub reason: String,
    pub op: Option<u64>,
    pub from: SiteId,
    pub to: SiteId,
    /// Nodes of the new generation's pods (JobManager's first).
    pub nodes: Vec<String>,
    pub generation: u64,
    /// When the relaunch was issued.
    #[serde(serialize_with = "secs", deserialize_with = "de_secs")]
    pub relaunched_at: Duration,
    /// When the world confirmed the new generation launched; `None` if it never did.
    #[serde(serialize_with = "opt_secs", deserialize_with = "de_opt_secs")]
    pub running_at: Option<Duration>,
    /// Whether the engine reported this recovery (`ReportRecovery`). A leader that dies
    /// between the relaunch and its report leaves it to the new leader, which reports the
    /// re-issued launch timed from the operation's start.
    pub reported: bool,
    /// From the engine's judgement (or the ops request) to the relaunch command.
    #[serde(serialize_with = "opt_secs", deserialize_with = "de_opt_secs")]
    pub rto_from_detection: Option<Duration>,
    /// From the last heartbeat (or the site's last sign of life) to the relaunch command.
    #[serde(serialize_with = "opt_secs", deserialize_with = "de_opt_secs")]
    pub rto_from_last_heartbeat: Option<Duration>,
    /// Data lost: from the restored checkpoint to the failure (see `RecoveryReport::rpo`);
    /// zero for a savepoint; `None` for a start without state.
    #[serde(serialize_with = "opt_secs", deserialize_with = "de_opt_secs")]
    pub rpo: Option<Duration>,
    pub restore_from: Option<CheckpointPointer>,
}

/// A job the engine reported it did not relaunch (or move), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotRelaunched {
    pub job: JobId,
    pub priority: Priority,
    #[serde(serialize_with = "secs", deserialize_with = "de_secs")]
    pub at: Duration,
    pub reason: String,
    /// Capacity that would have to be freed or added; zero when capacity is not the reason.
    pub missing: Resources,
}

/// A job's state when the run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnd {
    pub job: JobId,
    pub priority: Priority,
    /// The site the engine has the job in, and its current generation.
    pub site: SiteId,
    pub generation: u64,
    /// The engine's phase (`running`, `launching`, `down: <reason>`, …).
    pub phase: String,
    /// Sites where a generation of the job actually runs in the world at the end.
    pub running_in: Vec<SiteId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    #[serde(serialize_with = "secs", deserialize_with = "de_secs")]
    pub at: Duration,
    pub message: String,
}

/// One checkpoint (or savepoint) the world wrote, and when it became readable in the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub pointer: CheckpointPointer,
    pub job: JobId,
    /// Sites the checkpoint was replicated to, with when the engine was told.
    pub replicated: Vec<(SiteId, crate::types::Timestamp)>,
}

/// What a run exercised, so a degenerate simulation cannot pass unnoticed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub steps: u64,
    pub site_losses: u64,
    pub site_recoveries: u64,
    pub in_site_relaunches: u64,
    pub cross_site_relaunches: u64,
    pub fresh_starts: u64,
    pub fences: u64,
    pub savepoints: u64,
    pub leader_crashes: u64,
    /// Relaunches of jobs that ran nowhere, once a site could host them again.
    #[serde(default)]
    pub revivals: u64,
    /// The longest a job ran nowhere while a healthy site with room could host it (the
    /// liveness bound caps it), in seconds of virtual time.
    #[serde(default)]
    pub longest_wait_secs: u64,
}

impl Stats {
    pub fn add(&mut self, o: Stats) {
        self.steps += o.steps;
        self.site_losses += o.site_losses;
        self.site_recoveries += o.site_recoveries;
        self.in_site_relaunches += o.in_site_relaunches;
        self.cross_site_relaunches += o.cross_site_relaunches;
        self.fresh_starts += o.fresh_starts;
        self.fences += o.fences;
        self.savepoints += o.savepoints;
        self.leader_crashes += o.leader_crashes;
        self.revivals += o.revivals;
        self.longest_wait_secs = self.longest_wait_secs.max(o.longest_wait_secs);
    }
}

/// Everything one scenario run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub seed: u64,
    #[serde(serialize_with = "secs", deserialize_with = "de_secs")]
    pub duration: Duration,
    #[serde(serialize_with = "secs", deserialize_with = "de_secs")]
    pub step: Duration,
    pub timeline: Vec<TimelineEntry>,
    pub recoveries: Vec<Recovery>,
    pub not_relaunched: Vec<NotRelaunched>,
    pub jobs: Vec<JobEnd>,
    pub checkpoints: Vec<CheckpointRecord>,
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

/// `m:ss` (or `h:mm:ss`) since the start of the run.
pub fn fmt_offset(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// `950ms`, `21s`, `2m05s`, `1h02m`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 && d.subsec_millis() > 0 {
        format!("{}ms", d.subsec_millis())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    }
}

impl Outcome {
    /// The recovery of `job` issued last, if any.
    pub fn last_recovery(&self, job: &JobId) -> Option<&Recovery> {
        self.recoveries.iter().rev().find(|r| &r.job == job)
    }

    /// The timeline, the RTO/RPO table, the jobs at the end and the verdict, as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "SCENARIO {} (seed {}, {} in steps of {}): {} jobs",
            self.name,
            self.seed,
            fmt_duration(self.duration),
            fmt_duration(self.step),
            self.jobs.len()
        );
        let _ = writeln!(out, "\nTIMELINE");
        for e in &self.timeline {
            let _ = writeln!(
                out,
                "{:>8}  {:<9} {}",
                fmt_offset(e.at),
                e.kind.label(),
                e.text
            );
        }
        let _ = writeln!(
            out,
            "\nRECOVERIES ({} relaunches, {} jobs not relaunched)",
            self.recoveries.len(),
            self.not_relaunched.len()
        );
        let width = self
            .jobs
            .iter()
            .map(|j| j.job.0.len())
            .max()
            .unwrap_or(3)
            .max(3);
        let _ = writeln!(
            out,
            "{:<width$}  {:<11} {:>7}  {:<7} {:>3}  {:>8} {:>8} {:>8} {:>8}  REASON / RESTORED FROM",
            "JOB", "PRIORITY", "AT", "FROM>TO", "GEN", "RTO DET", "RTO HB", "RUNNING", "RPO"
        );
        let mut rows: Vec<(Duration, String)> = Vec::new();
        for r in &self.recoveries {
            let restored = match &r.restore_from {
                Some(p) => format!(
                    "{} {} (gen {}, id {})",
                    match p.kind {
                        crate::types::RestorePointKind::Checkpoint => "checkpoint",
                        crate::types::RestorePointKind::Savepoint => "savepoint",
                    },
                    p.path,
                    p.generation,
                    p.id
                ),
                None => "no state (fresh start)".to_string(),
            };
            let reason = if r.reported {
                r.reason.clone()
            } else {
                format!("{} (not reported: the leader died)", r.reason)
            };
            rows.push((
                r.relaunched_at,
                format!(
                    "{:<width$}  {:<11} {:>7}  {:<7} {:>3}  {:>8} {:>8} {:>8} {:>8}  {}; {}",
                    r.job.0,
                    r.priority.as_str(),
                    fmt_offset(r.relaunched_at),
                    format!("{}>{}", r.from, r.to),
                    r.generation,
                    r.rto_from_detection.map_or("-".into(), fmt_duration),
                    r.rto_from_last_heartbeat.map_or("-".into(), fmt_duration),
                    r.running_at.map_or("never".into(), |at| {
                        format!("+{}", fmt_duration(at.saturating_sub(r.relaunched_at)))
                    }),
                    r.rpo.map_or("no state".into(), fmt_duration),
                    reason,
                    restored
                ),
            ));
        }
        for n in &self.not_relaunched {
            let missing = if n.missing == Resources::ZERO {
                String::new()
            } else {
                format!(" (missing {})", n.missing)
            };
            rows.push((
                n.at,
                format!(
                    "{:<width$}  {:<11} {:>7}  not relaunched: {}{}",
                    n.job.0,
                    n.priority.as_str(),
                    fmt_offset(n.at),
                    n.reason,
                    missing
                ),
            ));
        }
        rows.sort_by_key(|(at, _)| *at);
        for (_, row) in rows {
            let _ = writeln!(out, "{row}");
        }
        let _ = writeln!(out, "\nJOBS AT THE END");
        let _ = writeln!(
            out,
            "{:<width$}  {:<11} {:<5} {:>3}  {:<12} ENGINE PHASE",
            "JOB", "PRIORITY", "SITE", "GEN", "RUNNING IN"
        );
        for j in &self.jobs {
            let running = if j.running_in.is_empty() {
                "nowhere".to_string()
            } else {
                j.running_in
                    .iter()
                    .map(|s| s.0.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:<11} {:<5} {:>3}  {:<12} {}",
                j.job.0,
                j.priority.as_str(),
                j.site.0,
                j.generation,
                running,
                j.phase
            );
        }
        let s = &self.stats;
        let _ = writeln!(
            out,
            "\n{} steps: {} site losses, {} site recoveries, {} in-site and {} cross-site relaunches, {} fresh starts, {} fences, {} savepoints, {} leader crashes",
            s.steps,
            s.site_losses,
            s.site_recoveries,
            s.in_site_relaunches,
            s.cross_site_relaunches,
            s.fresh_starts,
            s.fences,
            s.savepoints,
            s.leader_crashes
        );
        if self.violations.is_empty() {
            let _ = writeln!(out, "INVARIANTS: all held after every step");
        } else {
            let _ = writeln!(out, "INVARIANTS VIOLATED ({}):", self.violations.len());
            for v in &self.violations {
                let _ = writeln!(out, "{:>8}  {}", fmt_offset(v.at), v.message);
            }
        }
        out
    }
}
