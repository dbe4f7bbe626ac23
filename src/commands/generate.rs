//! `twinsite generate`: a synthetic cluster, jobs and policy written in the real formats.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use scheduler::generate::{GenerateParams, generate};

use super::write_atomically;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 2)]
    pub sites: u32,
    #[arg(long, default_value_t = 100)]
    pub nodes_per_site: u32,
    #[arg(long, default_value_t = 100)]
    pub jobs: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory to write `nodes-<site>.json`, `jobs.yaml` and `policy.yaml` into.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    if args.sites == 0 || args.nodes_per_site == 0 {
        bail!("--sites and --nodes-per-site must be at least 1");
    }
    let generated = generate(&GenerateParams {
        sites: args.sites,
        nodes_per_site: args.nodes_per_site,
        jobs: args.jobs,
        seed: args.seed,
    })
    .context("cannot serialise the generated inputs")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out {}: cannot create the directory", args.out.display()))?;
    for (site, json) in &generated.nodes_json {
        write_atomically(&args.out.join(format!("nodes-{site}.json")), json)?;
    }
    write_atomically(&args.out.join("jobs.yaml"), &generated.jobs_yaml)?;
    write_atomically(&args.out.join("policy.yaml"), &generated.policy_yaml)?;
    eprintln!(
        "wrote {} site(s) of {} nodes, {} jobs and a policy to {}",
        generated.nodes_json.len(),
        args.nodes_per_site,
        args.jobs,
        args.out.display()
    );
    Ok(())
}
