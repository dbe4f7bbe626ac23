//! What each subcommand does: read the user's files, call the pure crates, print results.
//! Each `<x>.rs` owns its arguments (`<X>Args`) and its `run`; `crate::cli` only lists them.
//!
//! May use: every module (this is the wiring, the top layer). Must never: be used by
//! anything but `cli`, or hold logic another command or the API needs (put it below).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// How `plan` and `simulate` print their result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

pub mod agent;
pub mod diagnose;
pub mod failover;
pub mod generate;
pub mod plan;
pub mod render;
pub mod report;
pub mod run;
pub mod simulate;
pub mod sync;

/// Sends logs to stderr through `filter` (tracing's EnvFilter syntax); a filter that does
/// not parse is refused, naming it, rather than quietly replaced.
pub fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("--log / TWINSITE_LOG {filter:?}: not a log filter"))?;
    // Logs go to stderr so that `--format json` on stdout stays machine-readable.
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}

/// Splits a `NAME=VALUE` command-line argument, naming the flag when it is malformed.
pub(crate) fn split_name_value<'a>(flag: &str, arg: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => Ok((name, value)),
        _ => bail!("{flag} {arg:?}: expected NAME=FILE, e.g. {flag} dc-a=nodes-dc-a.json"),
    }
}

/// Reads a user's input file; the error names the file and the flag it came from.
pub(crate) fn read_input(flag: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read the file", path.display()))
}

/// Writes a file whole or not at all: a temporary sibling, then a rename.
pub(crate) fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    };
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Parses `500ms`, `5s`, `2m` (the forms the CLI documents) for the flag named in errors.
pub(crate) fn parse_duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .with_context(|| format!("{flag} {text:?}: expected a duration like 500ms, 5s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("{flag} {text:?}: unknown unit {unit:?}; use ms, s, m or h"),
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_argument_without_an_equals_sign_names_the_flag() {
        let err = split_name_value("--site", "dc-a").unwrap_err().to_string();
        assert!(err.contains("--site \"dc-a\""), "{err}");
    }

    #[test]
    fn durations_accept_the_documented_units() {
        assert_eq!(parse_duration("--x", "500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("--x", "5s").unwrap().as_secs(), 5);
        assert_eq!(parse_duration("--x", "2m").unwrap().as_secs(), 120);
        assert!(parse_duration("--x", "5 parsecs").is_err());
        assert!(parse_duration("--x", "-1s").is_err());
    }
}
