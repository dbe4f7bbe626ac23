//! What the report and diagnosis benches share: their flags' values, the `--step` of their
//! synthetic metrics, and the peak memory they print.

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
