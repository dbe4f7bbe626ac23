//! `twinsite failover`: asks a running controller for an ops-triggered failover through its
//! API (`POST /api/v1/failover`) and prints the plan.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// The site jobs move away from.
    #[arg(long)]
    pub from: String,
    /// The site they move to; default: the other site.
    #[arg(long)]
    pub to: Option<String>,
    /// Stop with a savepoint, replicate it, launch from it (RPO 0).
    #[arg(long, conflicts_with = "forced", required_unless_present = "forced")]
    pub planned: bool,
    /// Fence at the source and launch from the latest replicated checkpoint.
    #[arg(long)]
    pub forced: bool,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The controller's API.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "TWINSITE_SERVER")]
    pub server: String,
    /// File holding the API token; default `./twinsite-data/api-token` (the embedded default's).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

pub fn run(args: &FailoverArgs) -> anyhow::Result<()> {
    let token_path = args
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("twinsite-data/api-token"));
    let token = std::fs::read_to_string(&token_path).with_context(|| {
        format!(
            "--token-file {}: cannot read the API token",
            token_path.display()
        )
    })?;
    let body = serde_json::json!({
        "from": args.from,
        "to": args.to,
        "mode": if args.planned { "planned" } else { "forced" },
        "dryRun": args.dry_run,
    });
    let url = format!("{}/api/v1/failover", args.server.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, text) = runtime
        .block_on(async {
            let response = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?
                .post(&url)
                .bearer_auth(token.trim())
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
        .with_context(|| format!("--server {}: no answer", args.server))?;
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = answer["error"].as_str().unwrap_or(text.as_str());
        bail!("{url}: {status}: {message}");
    }
    print!("{}", render(&answer["plan"]));
    Ok(())
}

/// The plan as a table: moves, jobs that do not fit, jobs preempted at the target.
pub fn render(plan: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let moves = plan["moves"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "FAILOVER {} -> {} ({}): {} jobs move",
        plan["from"].as_str().unwrap_or("?"),
        plan["to"].as_str().unwrap_or("?"),
        plan["mode"].as_str().unwrap_or("?"),
        moves.len()
    );
    let _ = writeln!(
        out,
        "{:<40} {:>5} {:>12}  RESTORE FROM",
        "JOB", "PODS", "EXPECTED RPO"
    );
    for m in &moves {
        let rpo = match m["expected_rpo"]["secs"].as_u64() {
            Some(secs) => format!("{secs}s"),
            None => "no state".to_string(),
        };
        let restore = m["restore_from"]["path"]
            .as_str()
            .unwrap_or(if plan["mode"] == "planned" {
                "(savepoint at the move)"
            } else {
                "-"
            });
        let _ = writeln!(
            out,
            "{:<40} {:>5} {:>12}  {}",
            m["job"].as_str().unwrap_or("?"),
            m["placement"]["pods"].as_array().map_or(0, Vec::len),
            rpo,
            restore
        );
    }
    let not_fitting = plan["not_fitting"].as_array().cloned().unwrap_or_default();
    if !not_fitting.is_empty() {
        let _ = writeln!(out, "\nNOT MOVED ({})", not_fitting.len());
        for n in &not_fitting {
            let _ = writeln!(
                out,
                "{:<40} {}",
                n["job"].as_str().unwrap_or("?"),
                n["reason"].as_str().unwrap_or("?")
            );
        }
    }
    let preempt = plan["preempt"].as_array().cloned().unwrap_or_default();
    if !preempt.is_empty() {
        let _ = writeln!(out, "\nPREEMPTED AT THE TARGET ({})", preempt.len());
        for p in &preempt {
            let _ = writeln!(out, "{}", p.as_str().unwrap_or("?"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_moves_with_rpo_and_what_does_not_move_with_why() {
        let plan = serde_json::json!({
            "from": "dc-a", "to": "dc-b", "mode": "forced",
            "moves": [{"job": "shop/orders", "placement": {"pods": [{}, {}]},
                       "expected_rpo": {"secs": 42, "nanos": 0},
                       "restore_from": {"path": "file:///b/chk-7"}}],
            "not_fitting": [{"job": "shop/clicks", "reason": "no checkpoint replicated to dc-b"}],
            "preempt": []
        });
        let text = render(&plan);
        assert!(
            text.contains("dc-a -> dc-b (forced): 1 jobs move"),
            "{text}"
        );
        assert!(
            text.contains("shop/orders") && text.contains("42s") && text.contains("chk-7"),
            "{text}"
        );
        assert!(
            text.contains("NOT MOVED (1)") && text.contains("no checkpoint replicated"),
            "{text}"
        );
    }
}
