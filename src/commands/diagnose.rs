//! `twinsite diagnose`: which jobs are in trouble, why, and what to do.
//!
//! Live (default): asks a running controller (`GET /api/v1/diagnosis`, read-only token).
//! With `--metrics`, twinsite's own findings still come from the controller
//! (`metrics=false`), and the Flink part is judged here from the given Prometheus or file,
//! with the controller's thresholds. Offline (`--jobs`): the jobs of a file against
//! `--metrics`, Flink findings only (no controller, so no replication or readiness).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use scheduler::diagnosis::{JobDiagnosis, Thresholds};
use scheduler::input::StreamJob;
use scheduler::model::JobId;
use scheduler::rightsize::RightsizeConfig;

use super::parse_duration;
use super::report::{open_source, parse_long_duration};
use crate::diagnosis::{Diagnosis, JobContext, finish, flink_part, merge, render_table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagnoseFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// One job, `namespace/name`; default every job.
    #[arg(value_name = "NS/NAME")]
    pub job: Option<String>,
    /// Prometheus base URL (`http://…`) or a metrics file (JSON lines) to judge Flink's
    /// metrics from, instead of the controller's configured source.
    #[arg(long, value_name = "URL|FILE")]
    pub metrics: Option<String>,
    #[arg(long, value_enum, default_value_t = DiagnoseFormat::Table)]
    pub format: DiagnoseFormat,
    /// The controller's API.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "TWINSITE_SERVER")]
    pub server: String,
    /// File holding a token that may read (the read-only one suffices); default
    /// `./twinsite-data/api-read-token` (the embedded default's).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Offline: diagnose the StreamJobs of this file against `--metrics`, without a
    /// controller (Flink findings only).
    #[arg(long, value_name = "JOBS.yaml", requires = "metrics")]
    pub jobs: Option<PathBuf>,
    /// Offline: the policy whose `diagnosis` thresholds apply (default thresholds without).
    #[arg(long, value_name = "POLICY.yaml", requires = "jobs")]
    pub policy: Option<PathBuf>,
    /// With `--metrics`: how much history the right-sizer judges, e.g. `24h`, `7d`.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub lookback: String,
    /// With `--metrics`: spacing of samples (the scrape interval); raised when Prometheus
    /// would need more than 11 000 points per series.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub step: String,
    /// With `--metrics`: the end of the judged range (RFC 3339); default now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
}

pub fn run(args: &DiagnoseArgs) -> anyhow::Result<()> {
    let only = args
        .job
        .as_deref()
        .map(|job| match job.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(JobId::new(ns, name))
            }
            _ => bail!("NS/NAME {job:?}: expected namespace/name, e.g. shop/orders"),
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let diagnosis = runtime.block_on(async {
        match &args.jobs {
            Some(_) => offline(args, only.as_ref()).await,
            None => live(args, only.as_ref()).await,
        }
    })?;
    let text = match args.format {
        DiagnoseFormat::Table => render_table(&diagnosis),
        DiagnoseFormat::Json => serde_json::to_string_pretty(&diagnosis)? + "\n",
    };
    // A reader that stops early (`| head`) is not an error.
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

fn rightsize_config(args: &DiagnoseArgs) -> anyhow::Result<RightsizeConfig> {
    let lookback = parse_long_duration("--lookback", &args.lookback)?;
    let step = parse_duration("--step", &args.step)?;
    if step.is_zero() {
        bail!("--step {:?}: must be longer than zero", args.step);
    }
    Ok(RightsizeConfig {
        lookback_ms: lookback.as_millis() as i64,
        scrape_interval_ms: step.as_millis() as i64,
        ..RightsizeConfig::default()
    })
}

fn until_ms(args: &DiagnoseArgs) -> anyhow::Result<i64> {
    Ok(match &args.at {
        Some(at) => chrono::DateTime::parse_from_rfc3339(at)
            .with_context(|| format!("--at {at:?}: expected RFC 3339, e.g. 2026-11-18T20:00:00Z"))?
            .timestamp_millis(),
        None => chrono::Utc::now().timestamp_millis(),
    })
}

/// The Flink part of `contexts` from `--metrics`, merged into `jobs`.
async fn judge_flink(
    args: &DiagnoseArgs,
    jobs: Vec<JobDiagnosis>,
    contexts: &[JobContext],
    thresholds: &Thresholds,
) -> anyhow::Result<Diagnosis> {
    let source_arg = args.metrics.as_deref().unwrap_or_default();
    let source = open_source(source_arg)?;
    let config = rightsize_config(args)?;
    let started = std::time::Instant::now();
    let flink = flink_part(
        source.as_ref(),
        contexts,
        until_ms(args)?,
        &config,
        thresholds,
    )
    .await
    .with_context(|| format!("--metrics {}", source.describe()))?;
    tracing::info!(
        jobs = contexts.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Flink metrics judged"
    );
    let mut jobs = jobs;
    merge(&mut jobs, flink);
    Ok(finish(
        jobs,
        Some(source.describe()),
        None,
        thresholds,
        &config,
    ))
}

async fn offline(args: &DiagnoseArgs, only: Option<&JobId>) -> anyhow::Result<Diagnosis> {
    let path = args.jobs.as_ref().context("--jobs")?;
    let text = super::read_input("--jobs", path)?;
    let parsed = scheduler::input::parse_stream_jobs(&path.display().to_string(), &text)?;
    let thresholds = match &args.policy {
        Some(policy) => scheduler::input::parse_policy(
            &policy.display().to_string(),
            &super::read_input("--policy", policy)?,
        )?
        .diagnosis(),
        None => Thresholds::default(),
    };
    let selected: Vec<&StreamJob> = parsed
        .iter()
        .filter(|j| only.is_none_or(|o| *o == j.id()))
        .collect();
    if let Some(job) = only
        && selected.is_empty()
    {
        bail!("NS/NAME {job}: no such job in {}", path.display());
    }
    let mut jobs = Vec::new();
    let mut contexts = Vec::new();
    for job in selected {
        let mut diagnosis = JobDiagnosis {
            job: job.id(),
            site: None,
            phase: None,
            findings: Vec::new(),
            notes: Vec::new(),
        };
        match JobContext::of(job) {
            Some(context) => contexts.push(context),
            None => diagnosis
                .notes
                .push("its resources do not resolve: not judged".to_string()),
        }
        jobs.push(diagnosis);
    }
    let mut d = judge_flink(args, jobs, &contexts, &thresholds).await?;
    d.notes.push(
        "offline (--jobs): twinsite's own findings (replication, failover readiness) need a controller"
            .to_string(),
    );
    Ok(d)
}

async fn live(args: &DiagnoseArgs, only: Option<&JobId>) -> anyhow::Result<Diagnosis> {
    let token_path = args
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("twinsite-data/api-read-token"));
    let token = std::fs::read_to_string(&token_path).with_context(|| {
        format!(
            "--token-file {}: cannot read the API token",
            token_path.display()
        )
    })?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .context("cannot build the HTTP client")?;
    let base = args.server.trim_end_matches('/');
    let get = |path: String| {
        let request = client
            .get(format!("{base}{path}"))
            .bearer_auth(token.trim());
        async move {
            let response = request
                .send()
                .await
                .with_context(|| format!("--server {base}: no answer"))?;
            let status = response.status();
            let text = response
                .text()
                .await
                .with_context(|| format!("--server {base}: answer cut off"))?;
            if !status.is_success() {
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(text);
                bail!("{base}{path}: {status}: {message}");
            }
            Ok::<String, anyhow::Error>(text)
        }
    };
    let job_query = only
        .map(|j| format!("&job={}", j.0.replace('/', "%2F")))
        .unwrap_or_default();
    if args.metrics.is_none() {
        let text = get(format!("/api/v1/diagnosis?format=json{job_query}")).await?;
        return serde_json::from_str(&text)
            .with_context(|| format!("--server {base}: not a diagnosis answer"));
    }
    let text = get(format!(
        "/api/v1/diagnosis?format=json&metrics=false{job_query}"
    ))
    .await?;
    let own: Diagnosis = serde_json::from_str(&text)
        .with_context(|| format!("--server {base}: not a diagnosis answer"))?;
    // The specs, for what metrics do not carry (parallelism, resources, intervals).
    let views: Vec<serde_json::Value> = match only {
        Some(job) => vec![serde_json::from_str(
            &get(format!("/api/v1/jobs/{job}")).await?,
        )?],
        None => serde_json::from_str(&get("/api/v1/jobs".to_string()).await?)?,
    };
    let mut contexts = Vec::new();
    for view in views {
        let object = serde_json::json!({
            "apiVersion": scheduler::input::API_VERSION,
            "kind": "StreamJob",
            "metadata": view["metadata"],
            "spec": view["spec"],
        });
        if let Some(context) = serde_json::from_value::<StreamJob>(object)
            .ok()
            .as_ref()
            .and_then(JobContext::of)
        {
            contexts.push(context);
        }
    }
    let mut d = judge_flink(args, own.jobs, &contexts, &own.thresholds).await?;
    d.notes.extend(own.notes);
    Ok(d)
}
