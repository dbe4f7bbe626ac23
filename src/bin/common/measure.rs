//! What the report and diagnosis benches share: their flags' values, the `--step` of their
//! synthetic metrics (and writing them), and the peak memory they print.

use anyhow::{Context, bail};

/// The value after `name` in `args`, if given.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// This process's peak resident memory (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kib / 1024.0)
}

/// `--step` (`15m`, `30s`, `1h`) in milliseconds.
pub fn step_ms(text: &str) -> anyhow::Result<i64> {
    let (n, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = n.parse().with_context(|| format!("--step {text:?}"))?;
    Ok(match unit {
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => bail!("--step {text:?}: use s, m or h"),
    })
}

/// What [`write_metrics`] wrote: jobs, series, samples per series and the file's bytes.
pub struct MetricsWritten {
    pub jobs: usize,
    pub series: usize,
    pub samples_per_series: i64,
    pub bytes: u64,
}

/// Writes `dir/metrics.jsonl`: `days` of synthetic history every `step` ms, ending at
/// `end_ms`, for every job of `jobs_yaml` (the generator's), from `seed`.
pub fn write_metrics(
    dir: &std::path::Path,
    jobs_yaml: &str,
    seed: u64,
    end_ms: i64,
    days: u32,
    step: i64,
) -> anyhow::Result<MetricsWritten> {
    use std::io::Write as _;
    let jobs = scheduler::input::parse_stream_jobs("jobs.yaml", jobs_yaml)?;
    let path = dir.join("metrics.jsonl");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    let mut series = 0usize;
    for job in &jobs {
        let facts = scheduler::report::assemble::JobFacts::of(job, &job.demand()?);
        let history = twinsite::job_metrics::synthetic::history(&facts, seed, end_ms, days, step);
        series += history.len();
        twinsite::job_metrics::synthetic::write_json_lines(&mut out, &history)?;
    }
    out.flush()?;
    Ok(MetricsWritten {
        jobs: jobs.len(),
        series,
        samples_per_series: i64::from(days) * 86_400_000 / step + 1,
        bytes: std::fs::metadata(&path)?.len(),
    })
}
