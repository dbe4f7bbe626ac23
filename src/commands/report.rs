//! `twinsite report capacity`: read the cluster, jobs, policy and (optionally) metrics; build
//! the capacity report (`scheduler::report`); print it or write it atomically to `--out`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use scheduler::input::streamjob::FailoverTrigger;
use scheduler::report::assemble::JobFacts;
use scheduler::report::{
    CapacityReport, DEFAULT_TOP_JOBS, Format, ReportInputs, RightsizingInput, build_report, render,
};
use scheduler::rightsize::RightsizeConfig;

use super::plan::{ClusterFiles, InputFlags, PlanInputs, load_inputs};
use super::{parse_duration, write_atomically};
use crate::job_metrics::file::FileSource;
use crate::job_metrics::prometheus::PrometheusSource;
use crate::job_metrics::{MetricsSource, recommend_all};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Capacity per site, pool and tenant; co-location; failover survivability; right-sizing.
    Capacity(CapacityArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Md,
    Html,
    Json,
}

impl From<ReportFormat> for Format {
    fn from(f: ReportFormat) -> Format {
        match f {
            ReportFormat::Table => Format::Table,
            ReportFormat::Md => Format::Markdown,
            ReportFormat::Html => Format::Html,
            ReportFormat::Json => Format::Json,
        }
    }
}

#[derive(Debug, Args)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub cluster: ClusterFiles,
    /// Where jobs run now (a `plan --format json`); without it the report plans from scratch.
    #[arg(long, value_name = "PLAN.json")]
    pub running: Option<PathBuf>,
    /// Prometheus base URL (`http://…`) or a metrics file (JSON lines, see src/job_metrics/file.rs).
    /// Without it, used and right-sizing are not reported.
    #[arg(long, value_name = "URL|FILE")]
    pub metrics: Option<String>,
    /// The instant the report describes (RFC 3339): end of the metrics range and the moment
    /// lending windows are judged at. Default now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// How much metric history to judge, e.g. `7d`, `24h`. A week by default, so that the
    /// weekly peak and weekend lending are in it.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub lookback: String,
    /// Expected spacing of samples (the scrape interval); raised when Prometheus would need
    /// more than 11 000 points per series.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub step: String,
    /// How many jobs "top jobs to fix" lists.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TOP_JOBS)]
    pub top: usize,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Write the report here (whole or not at all) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    match &args.command {
        ReportCommand::Capacity(c) => capacity(c),
    }
}

/// `7d` as well as the units `parse_duration` knows (`ms`, `s`, `m`, `h`).
pub(crate) fn parse_long_duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    match text.trim().strip_suffix('d') {
        Some(days) => {
            let days: f64 = days
                .parse()
                .ok()
                .filter(|d: &f64| d.is_finite() && *d > 0.0)
                .with_context(|| format!("{flag} {text:?}: expected a duration like 7d or 24h"))?;
            Ok(std::time::Duration::from_secs_f64(days * 86_400.0))
        }
        None => parse_duration(flag, text),
    }
}

pub(crate) fn open_source(value: &str) -> anyhow::Result<Box<dyn MetricsSource>> {
    if value.starts_with("http://") || value.starts_with("https://") {
        return Ok(Box::new(PrometheusSource::new(value)?));
    }
    let path = Path::new(value);
    if !path.is_file() {
        bail!("--metrics {value:?}: neither an http(s) URL nor a readable file");
    }
    Ok(Box::new(
        FileSource::open(path).with_context(|| format!("--metrics {value}"))?,
    ))
}

/// Reads every input named by `args`, fetches metrics job by job, and builds the report.
pub fn build(args: &CapacityArgs) -> anyhow::Result<CapacityReport> {
    let lookback = parse_long_duration("--lookback", &args.lookback)?;
    let step = parse_duration("--step", &args.step)?;
    if step.is_zero() {
        bail!("--step {:?}: must be longer than zero", args.step);
    }
    let inputs: PlanInputs = load_inputs(&InputFlags {
        cluster: &args.cluster,
        running: args.running.as_deref(),
        at: args.at.as_deref(),
    })?;
    let no_failover: BTreeSet<_> = inputs
        .stream_jobs
        .iter()
        .filter(|j| j.spec.failover.mode == FailoverTrigger::None)
        .map(|j| j.id())
        .collect();

    let source = args.metrics.as_deref().map(open_source).transpose()?;
    let config = RightsizeConfig {
        lookback_ms: lookback.as_millis() as i64,
        scrape_interval_ms: step.as_millis() as i64,
        ..RightsizeConfig::default()
    };
    let fetched = match &source {
        None => None,
        Some(source) => {
            let facts: Vec<JobFacts> = inputs
                .stream_jobs
                .iter()
                .zip(&inputs.jobs)
                .map(|(job, demand)| JobFacts::of(job, demand))
                .collect();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let started = std::time::Instant::now();
            let (recs, failures) = runtime
                .block_on(recommend_all(
                    source.as_ref(),
                    &facts,
                    inputs.at.timestamp_millis(),
                    &config,
                ))
                .with_context(|| format!("--metrics {}", source.describe()))?;
            tracing::info!(
                jobs = facts.len(),
                failures = failures.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "right-sized from metrics"
            );
            Some((source.describe(), recs, failures))
        }
    };
    let rightsizing =
        fetched
            .as_ref()
            .map(|(source, recommendations, failures)| RightsizingInput {
                source,
                lookback_ms: config.lookback_ms,
                recommendations,
                failures,
            });
    let report_inputs = ReportInputs {
        sites: &inputs.sites,
        jobs: &inputs.jobs,
        policy: &inputs.policy,
        running: &inputs.running,
        no_failover: &no_failover,
        at: inputs.at,
        rightsizing,
        top_jobs: args.top,
    };
    let mut report = build_report(&report_inputs);
    report.scale_profiles = scheduler::report::elasticity::scale_profile_what_ifs(
        &report_inputs,
        &inputs.stream_jobs,
        &inputs.scale_profiles,
    );
    Ok(report)
}

fn capacity(args: &CapacityArgs) -> anyhow::Result<()> {
    let report = build(args)?;
    let text = render(&report, args.format.into());
    match &args.out {
        Some(path) => {
            write_atomically(path, &text).with_context(|| format!("--out {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookbacks_take_days_and_the_short_units() {
        assert_eq!(
            parse_long_duration("--x", "7d").unwrap().as_secs(),
            7 * 86_400
        );
        assert_eq!(parse_long_duration("--x", "24h").unwrap().as_secs(), 86_400);
        let err = parse_long_duration("--lookback", "xd")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--lookback \"xd\""), "{err}");
    }
}
