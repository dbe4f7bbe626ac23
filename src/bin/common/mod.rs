//! What the bench binaries share: their numeric flags and the store they write to (the
//! embedded store in a temporary directory, or a real etcd with `--etcd URL`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use twinsite::state::{EmbeddedStateStore, StateStore};

/// `--name N`, or `default` when the flag is absent.
pub fn arg(name: &str, default: u64) -> anyhow::Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name}: expected a whole number")),
        None => Ok(default),
    }
}

/// Whether `--name` was given.
#[allow(dead_code)] // not every bench has switches
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// The bench's store and, on etcd, the leadership its writes are fenced by (held to the
/// end: dropping it gives leadership up).
pub struct BenchStore {
    pub store: Arc<dyn StateStore>,
    pub description: String,
    _leadership: Option<twinsite::leader::Leadership>,
}

/// `--etcd URL`: that etcd under a fresh key prefix, after campaigning for leadership;
/// otherwise the embedded store in `dir`.
pub async fn open_store(dir: &Path) -> anyhow::Result<BenchStore> {
    let args: Vec<String> = std::env::args().collect();
    let etcd_url = args
        .iter()
        .position(|a| a == "--etcd")
        .map(|i| args.get(i + 1).cloned().context("--etcd needs a URL"))
        .transpose()?;
    let Some(url) = etcd_url else {
        return Ok(BenchStore {
            store: Arc::new(EmbeddedStateStore::open(&dir.join("state"))?),
            description: "embedded (local directory, fsync per record)".into(),
            _leadership: None,
        });
    };
    let prefix = format!("/twinsite-bench/{}", std::process::id());
    let mut config = twinsite::state::EtcdConfig::new(vec![url.clone()]);
    config.key_prefix = prefix.clone();
    let client = twinsite::state::connect_etcd(&config).await?;
    let elector = twinsite::leader::LeaderElector::new(
        client.clone(),
        format!("{prefix}/election/bench"),
        "bench",
        std::time::Duration::from_secs(30),
    );
    let leadership = elector.campaign().await?;
    let store = twinsite::state::EtcdStateStore::on_etcd(client, &prefix)?;
    store.set_leader(Some(leadership.leader_key.clone()));
    Ok(BenchStore {
        store: Arc::new(store),
        description: format!("etcd at {url}"),
        _leadership: Some(leadership),
    })
}
