//! Prints how long reconcile passes take for a generated fleet (default 2 sites × 1000
//! nodes, 1000 jobs) on simulated sites and the embedded store, and the process's peak RSS.
//!
//! `cargo run --release --bin reconcile-bench -- [--nodes-per-site N] [--jobs N] [--seed N]
//! [--etcd http://127.0.0.1:2379]` (with `--etcd`, the store is that etcd: the bench campaigns
//! for leadership and writes under a fresh key prefix).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use scheduler::generate::{GenerateParams, generate};
use scheduler::input::Policy;
use scheduler::model::SiteId;
use twinsite::controller::Controller;
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{Site, SystemClock};

mod common;
use common::arg;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes_per_site = u32::try_from(arg("--nodes-per-site", 1000)?)?;
    let jobs = u32::try_from(arg("--jobs", 1000)?)?;
    let seed = arg("--seed", 7)?;
    let generated = generate(&GenerateParams {
        sites: 2,
        nodes_per_site,
        jobs,
        seed,
    })?;
    let dir = tempfile::tempdir()?;
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
    for (id, nodes) in &generated.nodes_json {
        let site = SimulatedSite::from_kubectl_json(
            id.clone(),
            nodes,
            None,
            dir.path().join(&id.0),
            Arc::new(SystemClock),
            SimulatedSiteConfig::default(),
        )?;
        sites.insert(id.clone(), Arc::new(site));
    }
    let bench_store = common::open_store(dir.path()).await?;
    let store = Arc::clone(&bench_store.store);
    println!("store: {}", bench_store.description);
    let controller = Controller::new(sites, store, Policy::default_two_sites());
    controller.set_leading(true);
    let stream_jobs = scheduler::input::parse_stream_jobs("generated", &generated.jobs_yaml)?;

    let started = Instant::now();
    controller.seed_jobs(&stream_jobs, "bench").await?;
    println!(
        "store {} new jobs: {:.2} s",
        stream_jobs.len(),
        started.elapsed().as_secs_f64()
    );
    let first = controller.reconcile_once().await?;
    println!(
        "first pass (place + persist + launch): {:.2} s — {} launched, {} unplaced",
        first.elapsed.as_secs_f64(),
        first.launched.len(),
        first.unplaced.len()
    );
    let second = controller.reconcile_once().await?;
    println!(
        "second pass (observe, status changes): {:.3} s — {} launched",
        second.elapsed.as_secs_f64(),
        second.launched.len()
    );
    let mut steady = Vec::new();
    for _ in 0..5 {
        steady.push(controller.reconcile_once().await?.elapsed.as_secs_f64());
    }
    steady.sort_by(f64::total_cmp);
    println!(
        "steady pass, nothing to do ({} jobs, 2 × {nodes_per_site} nodes): median {:.3} s, max {:.3} s",
        stream_jobs.len(),
        steady[steady.len() / 2],
        steady[steady.len() - 1]
    );
    println!("peak RSS: {:.0} MiB", peak_rss_mib());
    Ok(())
}
