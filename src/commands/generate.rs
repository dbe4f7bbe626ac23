//! `twinsite generate`: a synthetic cluster, jobs and policy written in the real formats.

use anyhow::{Context, bail};
use scheduler::generate::{GenerateParams, generate};

use super::write_atomically;
use crate::cli::GenerateArgs;

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
