//! Prints figures for `twinsite report capacity` at the scale: 2 sites × 1000 nodes,
//! 1000 jobs, 7 days of Flink metrics from a file (synthetic history, one series per subtask
//! and pod as Flink's reporter exports them).
//!
//! `cargo run --release --bin report-bench -- [--days 7] [--step 15m] [--dir DIR]`
//!
//! The inputs are written first; then the report runs in a child process (this binary with
//! `--measure`), so that its peak RSS (`VmHWM`) is the report's alone, not the generator's.

#[path = "common/measure.rs"]
mod measure;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use measure::{flag, peak_rss_mib, step_ms, write_metrics};
use scheduler::generate::{GenerateParams, generate};
use scheduler::report::{Format, render};
use twinsite::commands::plan::ClusterFiles;
use twinsite::commands::report::{CapacityArgs, ReportFormat, build};

const SEED: u64 = 7;
/// 2026-11-18T20:00:00Z, a Wednesday evening.
const AT: &str = "2026-11-18T20:00:00Z";
const END_MS: i64 = 1_795_032_000_000;

fn write_inputs(dir: &Path, days: u32, step: i64) -> anyhow::Result<()> {
    let generated = generate(&GenerateParams {
        sites: 2,
        nodes_per_site: 1000,
        jobs: 1000,
        seed: SEED,
    })?;
    std::fs::create_dir_all(dir)?;
    for (site, json) in &generated.nodes_json {
        std::fs::write(dir.join(format!("nodes-{site}.json")), json)?;
    }
    std::fs::write(dir.join("jobs.yaml"), &generated.jobs_yaml)?;
    std::fs::write(dir.join("policy.yaml"), &generated.policy_yaml)?;
    let written = write_metrics(dir, &generated.jobs_yaml, SEED, END_MS, days, step)?;
    println!(
        "inputs: 2 sites x 1000 nodes, {} jobs, {} series x {} samples ({days} days every {} s), metrics file {:.0} MiB",
        written.jobs,
        written.series,
        written.samples_per_series,
        step / 1000,
        written.bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

fn args_for(dir: &Path, metrics: bool, days: u32, step: &str) -> CapacityArgs {
    let p = |n: &str| dir.join(n).display().to_string();
    CapacityArgs {
        cluster: ClusterFiles {
            sites: vec![
                format!("dc-a={}", p("nodes-dc-a.json")),
                format!("dc-b={}", p("nodes-dc-b.json")),
            ],
            pods: Vec::new(),
            jobs: dir.join("jobs.yaml"),
            policy: Some(dir.join("policy.yaml")),
        },
        running: None,
        metrics: metrics.then(|| p("metrics.jsonl")),
        at: Some(AT.to_string()),
        lookback: format!("{days}d"),
        step: step.to_string(),
        top: 10,
        format: ReportFormat::Json,
        out: None,
    }
}

/// The child: one report, then its own figures on one line.
fn measure(dir: &Path, metrics: bool, days: u32, step: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let report = build(&args_for(dir, metrics, days, step))?;
    let built = started.elapsed();
    let html = Instant::now();
    let page = render(&report, Format::Html);
    let html_ms = html.elapsed().as_secs_f64() * 1000.0;
    let json = Instant::now();
    let text = render(&report, Format::Json);
    let json_ms = json.elapsed().as_secs_f64() * 1000.0;
    let assessed = report
        .rightsizing
        .as_ref()
        .map_or(0, |z| z.jobs_fully_assessed);
    let refused = report.rightsizing.as_ref().map_or(0, |z| z.refused.len());
    println!(
        "report {}: build {:.2} s (html {html_ms:.0} ms, {} KiB; json {json_ms:.0} ms, {} KiB); peak RSS {:.0} MiB; {} placed, {assessed} jobs fully assessed, {refused} with insufficient data",
        if metrics {
            "with metrics"
        } else {
            "without metrics"
        },
        built.as_secs_f64(),
        page.len() / 1024,
        text.len() / 1024,
        peak_rss_mib()?,
        report.placed,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let days: u32 = flag(&args, "--days").map_or(Ok(7), |d| d.parse())?;
    let step = flag(&args, "--step").unwrap_or_else(|| "15m".to_string());
    if let Some(dir) = flag(&args, "--measure") {
        let metrics = flag(&args, "--metrics").as_deref() != Some("no");
        return measure(Path::new(&dir), metrics, days, &step);
    }
    let given = flag(&args, "--dir").map(PathBuf::from);
    let dir = given.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("twinsite-report-bench-{}", std::process::id()))
    });
    let started = Instant::now();
    write_inputs(&dir, days, step_ms(&step)?)?;
    println!(
        "(inputs written in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    for metrics in ["no", "yes"] {
        let wall = Instant::now();
        let status = std::process::Command::new(std::env::current_exe()?)
            .args([
                "--measure",
                &dir.display().to_string(),
                "--metrics",
                metrics,
            ])
            .args(["--days", &days.to_string(), "--step", &step])
            .env("TWINSITE_LOG", "warn")
            .status()?;
        if !status.success() {
            bail!("the measured report failed ({status})");
        }
        println!(
            "  (process wall time {:.2} s)",
            wall.elapsed().as_secs_f64()
        );
    }
    if given.is_none() {
        // The metrics file is large; keep it only when the caller chose where it goes.
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(())
}
