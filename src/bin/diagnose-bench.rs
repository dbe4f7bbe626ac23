//! Prints figures for `twinsite diagnose` at the scale: the 1000 jobs of
//! `twinsite generate --jobs 1000` (seed 7) with 7 days of Flink metrics in a file
//! (synthetic history with diagnosis' series and its trouble shapes: one series per subtask
//! and pod, as Flink's reporter exports them).
//!
//! `cargo run --release --bin diagnose-bench -- [--days 7] [--step 15m] [--dir DIR]`
//!
//! The inputs are written first; then the diagnosis runs in a child process (this binary
//! with `--measure`), the way `twinsite diagnose --jobs … --metrics FILE` runs it, so that its
//! peak RSS (`VmHWM`) is the diagnosis' alone.

#[path = "common/measure.rs"]
mod measure;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use measure::{flag, peak_rss_mib, step_ms, write_metrics};
use scheduler::diagnosis::{JobDiagnosis, Thresholds};
use scheduler::generate::{GenerateParams, generate};
use scheduler::input::parse_stream_jobs;
use scheduler::rightsize::RightsizeConfig;
use twinsite::diagnosis::{JobContext, finish, flink_part, merge, render_table};
use twinsite::job_metrics::MetricsSource;
use twinsite::job_metrics::file::FileSource;

const SEED: u64 = 7;
/// 2026-11-18T20:00:00Z, a Wednesday evening.
const END_MS: i64 = 1_795_032_000_000;

fn write_inputs(dir: &Path, days: u32, step: i64) -> anyhow::Result<()> {
    let generated = generate(&GenerateParams {
        sites: 2,
        nodes_per_site: 1000,
        jobs: 1000,
        seed: SEED,
    })?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("jobs.yaml"), &generated.jobs_yaml)?;
    let written = write_metrics(dir, &generated.jobs_yaml, SEED, END_MS, days, step)?;
    println!(
        "inputs: {} jobs, {} series x {} samples ({days} days every {} s), metrics file {:.0} MiB",
        written.jobs,
        written.series,
        written.samples_per_series,
        step / 1000,
        written.bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// The child: one diagnosis of every job, then its own figures.
fn measure(dir: &Path, days: u32, step: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = std::fs::read_to_string(dir.join("jobs.yaml"))?;
    let jobs = parse_stream_jobs("jobs.yaml", &text)?;
    let source = FileSource::open(&dir.join("metrics.jsonl"))?;
    let indexed = started.elapsed();
    let contexts: Vec<JobContext> = jobs.iter().filter_map(JobContext::of).collect();
    let skeleton: Vec<JobDiagnosis> = jobs
        .iter()
        .map(|j| JobDiagnosis {
            job: j.id(),
            site: None,
            phase: None,
            findings: Vec::new(),
            notes: Vec::new(),
        })
        .collect();
    let config = RightsizeConfig {
        lookback_ms: i64::from(days) * 86_400_000,
        scrape_interval_ms: step,
        ..RightsizeConfig::default()
    };
    let thresholds = Thresholds::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let flink = runtime.block_on(flink_part(&source, &contexts, END_MS, &config, &thresholds))?;
    let mut jobs_out = skeleton;
    merge(&mut jobs_out, flink);
    let diagnosis = finish(
        jobs_out,
        Some(source.describe()),
        None,
        &thresholds,
        &config,
    );
    let judged = started.elapsed();
    let table = render_table(&diagnosis);
    let json = serde_json::to_string(&diagnosis)?;
    let by_kind: Vec<String> = diagnosis
        .summary
        .by_kind
        .iter()
        .map(|(k, n)| format!("{} {n}", k.as_str()))
        .collect();
    println!(
        "diagnose: {:.2} s (index {:.2} s), peak RSS {:.0} MiB; table {} KiB, json {} KiB; {} jobs, {} with findings; {:?}; by kind: {}",
        judged.as_secs_f64(),
        indexed.as_secs_f64(),
        peak_rss_mib()?,
        table.len() / 1024,
        json.len() / 1024,
        diagnosis.summary.jobs,
        diagnosis.summary.jobs_with_findings,
        diagnosis.summary.by_severity,
        by_kind.join(", ")
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let days: u32 = flag(&args, "--days").map_or(Ok(7), |d| d.parse())?;
    let step = step_ms(&flag(&args, "--step").unwrap_or_else(|| "15m".to_string()))?;
    if let Some(dir) = flag(&args, "--measure") {
        return measure(Path::new(&dir), days, step);
    }
    let given = flag(&args, "--dir").map(PathBuf::from);
    let dir = given.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("twinsite-diagnose-bench-{}", std::process::id()))
    });
    if !dir.join("metrics.jsonl").is_file() {
        let started = Instant::now();
        write_inputs(&dir, days, step)?;
        println!(
            "(inputs written in {:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let wall = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["--measure", &dir.display().to_string()])
        .args(["--days", &days.to_string()])
        .args(["--step", &format!("{}s", step / 1000)])
        .env("TWINSITE_LOG", "warn")
        .status()?;
    if !status.success() {
        bail!("the measured diagnosis failed ({status})");
    }
    println!(
        "  (process wall time {:.2} s)",
        wall.elapsed().as_secs_f64()
    );
    if given.is_none() {
        // The metrics file is large; keep it only when the caller chose where it goes.
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(())
}
