//! `twinsite agent --site NAME --config FILE`: the agent of one site, run inside it (one
//! small Deployment per site, `deploy/agent/`). It holds its site's lease in etcd (the
//! site's peer view for the controller), stops any generation the store does not place in
//! its site or that was launched in an older epoch of it, and stops every job of its site
//! once its lease has run out (self-fencing). Decisions: `failover::agent`; I/O:
//! `src/agent/`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use scheduler::model::SiteId;
use tokio_util::sync::CancellationToken;

use crate::agent::lease::HeldLease;
use crate::config::{Config, StateConfig};
use crate::state::{EtcdStateStore, KeyLayout, connect_etcd};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The site this agent guards (a site of the policy, listed in `agents.sites`).
    #[arg(long, value_name = "NAME")]
    pub site: String,
    /// Controller configuration (YAML): etcd, the policy (how to reach the site), `agents`.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Name in the site's agent election; default: host name and process id.
    #[arg(long, value_name = "ID")]
    pub candidate: Option<String>,
}

pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_agent(config, args))
}

async fn run_agent(config: Config, args: &AgentArgs) -> anyhow::Result<()> {
    let site_id = SiteId(args.site.clone());
    if config.policy.site(&site_id).is_none() {
        bail!(
            "--site {}: the policy of {} has no such site",
            args.site,
            config.source
        );
    }
    if !config.agents.sites.contains(&site_id) {
        bail!(
            "--site {}: {} does not list it in agents.sites, so the controller would not read this agent's lease",
            args.site,
            config.source
        );
    }
    let StateConfig::Etcd(etcd) = &config.state else {
        bail!(
            "{}: an agent keeps its lease in etcd; configure state.etcd",
            config.source
        );
    };
    let shutdown = CancellationToken::new();
    super::run::spawn_signal_handler(shutdown.clone());

    let built = super::run::build_sites_of(&config, Some(&site_id)).await?;
    let site = built
        .sites
        .get(&site_id)
        .cloned()
        .with_context(|| format!("--site {}: not built", args.site))?;
    let client = connect_etcd(&etcd.store)
        .await
        .with_context(|| format!("state.etcd.endpoints {}", etcd.store.endpoints.join(",")))?;
    // Reads only: no leader key is ever installed, so any write would be refused.
    let store = EtcdStateStore::on_etcd(client.clone(), &etcd.store.key_prefix)?;
    let layout = KeyLayout::new(&etcd.store.key_prefix)?;
    let candidate = args.candidate.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "agent".to_string());
        format!("{host}-{}", std::process::id())
    });
    let timing = config.agents.timing;
    let lease = HeldLease::start(
        client,
        &layout,
        &site_id,
        &candidate,
        timing.lease_ttl,
        shutdown.clone(),
    )?;
    tracing::info!(site = %site_id, %candidate, ttl = ?timing.lease_ttl,
        interval = ?config.agents.interval, "twinsite agent started");

    crate::agent::run(
        site.as_ref(),
        &store,
        &lease,
        config.agents.interval,
        shutdown.clone(),
    )
    .await;
    // Give the lease time to be resigned by its task before the runtime ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tracing::info!(site = %site_id, "twinsite agent stopped");
    Ok(())
}
