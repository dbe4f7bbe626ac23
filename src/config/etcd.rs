//! The `state.etcd` section: endpoints, TLS files, key prefix, election and lease.
//! Must never: connect to etcd; `crate::state` and `crate::leader` do, from what this returns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use scheduler::input::Problems;

use super::file::EtcdSpec;
use super::resolve::duration;
use super::resolved::EtcdConfigResolved;

pub(super) fn resolve_etcd(
    etcd: &EtcdSpec,
    absolute: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<EtcdConfigResolved> {
    let mut ok = true;
    if etcd.endpoints.is_empty() {
        problems.field("state.etcd.endpoints", "list at least one endpoint");
        ok = false;
    }
    for (i, endpoint) in etcd.endpoints.iter().enumerate() {
        let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !scheme_ok {
            problems.field(
                format!("state.etcd.endpoints[{i}]"),
                format!("expected http://HOST:PORT or https://HOST:PORT, found {endpoint:?}"),
            );
            ok = false;
        }
        if endpoint.starts_with("https://") && etcd.tls.is_none() {
            problems.field(
                format!("state.etcd.endpoints[{i}]"),
                "an https endpoint needs state.etcd.tls (at least its ca)",
            );
            ok = false;
        }
    }
    if !etcd.key_prefix.starts_with('/') {
        problems.field(
            "state.etcd.keyPrefix",
            format!("must start with '/', found {:?}", etcd.key_prefix),
        );
        ok = false;
    }
    if etcd.election.is_empty() {
        problems.field("state.etcd.election", "must not be empty");
        ok = false;
    }
    let lease_ttl = duration(problems, "state.etcd.leaseTtl", &etcd.lease_ttl);
    if let Some(ttl) = lease_ttl
        && ttl < Duration::from_secs(2)
    {
        problems.field(
            "state.etcd.leaseTtl",
            format!("must be at least 2s (etcd's lease granularity is 1s), found {ttl:?}"),
        );
        ok = false;
    }
    let tls = etcd.tls.as_ref().map(|tls| {
        if tls.cert.is_some() != tls.key.is_some() {
            problems.field("state.etcd.tls", "give both cert and key, or neither");
        }
        crate::state::EtcdTls {
            ca: absolute(&tls.ca),
            client_cert: tls.cert.as_deref().map(absolute),
            client_key: tls.key.as_deref().map(absolute),
            domain: tls.domain.clone(),
        }
    });
    let mut store = crate::state::EtcdConfig::new(etcd.endpoints.clone());
    store.tls = tls;
    store.key_prefix = etcd.key_prefix.clone();
    let candidate = etcd.candidate.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "twinsite".to_string());
        format!("{host}-{}", std::process::id())
    });
    if !ok {
        return None;
    }
    Some(EtcdConfigResolved {
        store,
        election: etcd.election.clone(),
        lease_ttl: lease_ttl?,
        candidate,
    })
}
