//! `twinsite failover`: asks a running controller for an ops-triggered failover through its
//! API (`POST /api/v1/failover`) and prints the plan.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// The site jobs move away from.
    #[arg(long, required_unless_present_any = ["cancel", "status"])]
    pub from: Option<String>,
    /// The site they move to; default: the other site.
    #[arg(long)]
    pub to: Option<String>,
    /// Stop with a savepoint, replicate it, launch from it (RPO 0).
    #[arg(
        long,
        conflicts_with = "forced",
        required_unless_present_any = ["forced", "cancel", "status"]
    )]
    pub planned: bool,
    /// Fence at the source and launch from the latest replicated checkpoint.
    #[arg(long)]
    pub forced: bool,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Move home the jobs whose preferred site is `--to` and that run in `--from`.
    #[arg(long)]
    pub failback: bool,
    /// Start the operation and print it, without following its progress.
    #[arg(long)]
    pub no_wait: bool,
    /// Cancel operation ID: jobs not yet moving stay where they run; moving ones finish.
    #[arg(long, value_name = "ID", conflicts_with_all = ["from", "status", "dry_run"])]
    pub cancel: Option<u64>,
    /// Follow operation ID until it finishes.
    #[arg(long, value_name = "ID", conflicts_with_all = ["from", "dry_run"])]
    pub status: Option<u64>,
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
    let base = format!("{}/api/v1/failover", args.server.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?,
        token: token.trim().to_string(),
        server: args.server.clone(),
    };
    runtime.block_on(async {
        if let Some(op) = args.cancel {
            let answer = client
                .call(reqwest::Method::POST, &format!("{base}/{op}/cancel"), None)
                .await?;
            println!("operation {op}: cancelling");
            return follow(&client, &base, op, answer).await;
        }
        if let Some(op) = args.status {
            let answer = client
                .call(reqwest::Method::GET, &format!("{base}/{op}"), None)
                .await?;
            return follow(&client, &base, op, answer).await;
        }
        let body = serde_json::json!({
            "from": args.from,
            "to": args.to,
            "mode": if args.planned { "planned" } else { "forced" },
            "dryRun": args.dry_run,
            "kind": if args.failback { "failback" } else { "failover" },
        });
        let answer = client
            .call(reqwest::Method::POST, &base, Some(&body))
            .await?;
        if answer["dryRun"] == true {
            print!("{}", render(&answer["plan"]));
            return Ok(());
        }
        let op = answer["id"]
            .as_u64()
            .context("the controller answered without an operation id")?;
        println!(
            "operation {op}: {} {} -> {} ({}), {} jobs",
            if args.failback {
                "failback"
            } else {
                "failover"
            },
            answer["from"].as_str().unwrap_or("?"),
            answer["to"].as_str().unwrap_or("?"),
            answer["mode"].as_str().unwrap_or("?"),
            answer["progress"]["total"].as_u64().unwrap_or(0),
        );
        if args.no_wait {
            println!("follow it with: twinsite failover --status {op}");
            return Ok(());
        }
        follow(&client, &base, op, answer).await
    })
}

struct Client {
    http: reqwest::Client,
    token: String,
    server: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("--server {}: no answer", self.server))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("--server {}: answer cut off", self.server))?;
        let answer: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let message = answer["error"].as_str().unwrap_or(text.as_str());
            bail!("{url}: {status}: {message}");
        }
        Ok(answer)
    }
}

/// Polls the operation until it finishes: a progress bar on a terminal, a line per change
/// otherwise; then the per-job outcome with RTO and RPO.
async fn follow(
    client: &Client,
    base: &str,
    op: u64,
    mut answer: serde_json::Value,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let total = answer["progress"]["total"].as_u64().unwrap_or(0);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last = String::new();
    loop {
        let p = &answer["progress"];
        let finished = p["done"].as_u64().unwrap_or(0)
            + p["left"].as_u64().unwrap_or(0)
            + p["failed"].as_u64().unwrap_or(0)
            + p["not_fitting"].as_u64().unwrap_or(0);
        let line = format!(
            "done {} in flight {} pending {} left {} failed {} not fitting {}",
            p["done"], p["in_flight"], p["pending"], p["left"], p["failed"], p["not_fitting"]
        );
        match &bar {
            Some(bar) => {
                bar.set_position(finished);
                bar.set_message(line.clone());
            }
            None if line != last => eprintln!("operation {op}: {line}"),
            None => {}
        }
        last = line;
        if answer["finished"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        answer = client
            .call(reqwest::Method::GET, &format!("{base}/{op}"), None)
            .await?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print!("{}", render_operation(&answer));
    Ok(())
}

/// A finished operation: its state, then each job's outcome with RTO and RPO.
pub fn render_operation(op: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "operation {} {} -> {} ({}): {}",
        op["id"],
        op["from"].as_str().unwrap_or("?"),
        op["to"].as_str().unwrap_or("?"),
        op["mode"].as_str().unwrap_or("?"),
        op["state"]["state"].as_str().unwrap_or("?"),
    );
    let recoveries = op["recoveries"].as_array().cloned().unwrap_or_default();
    let secs = |v: &serde_json::Value| match (v["secs"].as_u64(), v["nanos"].as_u64()) {
        (Some(s), Some(n)) => format!("{:.1}s", s as f64 + n as f64 / 1e9),
        _ => "-".to_string(),
    };
    let _ = writeln!(
        out,
        "{:<40} {:<10} {:>8} {:>8}  OUTCOME",
        "JOB", "SITE", "RTO", "RPO"
    );
    for job in op["jobs"].as_array().cloned().unwrap_or_default() {
        let id = job["job"].as_str().unwrap_or("?");
        let step = &job["step"];
        let outcome = match step["step"].as_str() {
            Some("done") => format!("running as generation {}", step["generation"]),
            Some("left") => format!(
                "left at the source: {}",
                step["reason"].as_str().unwrap_or("")
            ),
            Some("failed") => format!("failed: {}", step["reason"].as_str().unwrap_or("")),
            Some(other) => other.to_string(),
            None => "?".into(),
        };
        let report = recoveries.iter().find(|r| r["job"] == job["job"]);
        let (site, rto, rpo) = match report {
            Some(r) => (
                r["site"].as_str().unwrap_or("?").to_string(),
                secs(&r["rto_from_detection"]),
                if r["rpo"].is_null() {
                    "no state".to_string()
                } else {
                    secs(&r["rpo"])
                },
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(out, "{id:<40} {site:<10} {rto:>8} {rpo:>8}  {outcome}");
    }
    for n in op["not_fitting"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            out,
            "{:<40} {:<10} {:>8} {:>8}  not moved: {}{}",
            n["job"].as_str().unwrap_or("?"),
            "-",
            "-",
            "-",
            n["reason"].as_str().unwrap_or("?"),
            missing(&n["missing"])
        );
    }
    out
}

/// ` (missing 4 cpu, 16 GiB memory)`: the capacity a job that did not fit lacks; empty when
/// capacity was not why.
fn missing(resources: &serde_json::Value) -> String {
    let get = |k: &str| resources[k].as_i64().unwrap_or(0);
    let mut parts = Vec::new();
    if get("cpu_milli") > 0 {
        parts.push(format!("{} cpu", get("cpu_milli") as f64 / 1000.0));
    }
    if get("memory_bytes") > 0 {
        parts.push(format!(
            "{:.1} GiB memory",
            get("memory_bytes") as f64 / f64::from(1u32 << 30)
        ));
    }
    if get("pods") > 0 {
        parts.push(format!("{} pods", get("pods")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" (missing {})", parts.join(", "))
    }
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
                "{:<40} {}{}",
                n["job"].as_str().unwrap_or("?"),
                n["reason"].as_str().unwrap_or("?"),
                missing(&n["missing"])
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
            "not_fitting": [
                {"job": "shop/clicks", "reason": "no checkpoint replicated to dc-b",
                 "missing": {"cpu_milli": 0, "memory_bytes": 0, "pods": 0}},
                {"job": "shop/search", "reason": "no room on any node",
                 "missing": {"cpu_milli": 4500, "memory_bytes": 17179869184_i64, "pods": 0}}
            ],
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
            text.contains("NOT MOVED (2)") && text.contains("no checkpoint replicated to dc-b\n"),
            "{text}"
        );
        assert!(
            text.contains("no room on any node (missing 4.5 cpu, 16.0 GiB memory)"),
            "{text}"
        );
    }
}
