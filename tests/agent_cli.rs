//! `twinsite agent` refuses, before touching anything, a site it cannot guard: one the
//! policy does not have, one the controller would not read the lease of (not in
//! `agents.sites`), and a configuration without etcd (where agents keep their leases).

use std::process::Command;

fn agent(config: &str, site: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twinsite.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: twinsite.io/v1alpha1\nkind: ControllerConfig\n{config}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twinsite"))
        .args(["agent", "--site", site, "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_agent_for_a_site_the_policy_does_not_have_is_refused_naming_it() {
    let (ok, err) = agent("", "dc-q");
    assert!(!ok);
    assert!(
        err.contains("--site dc-q") && err.contains("no such site"),
        "{err}"
    );
}

#[test]
fn an_agent_for_a_site_not_in_agents_sites_is_refused_naming_the_field() {
    let (ok, err) = agent(
        "state:\n  etcd:\n    endpoints: [http://127.0.0.1:9]\nagents:\n  sites: [dc-b]\n",
        "dc-a",
    );
    assert!(!ok);
    assert!(
        err.contains("agents.sites") && err.contains("dc-a"),
        "{err}"
    );
}

#[test]
fn agents_without_etcd_are_refused_naming_state_etcd() {
    let (ok, err) = agent("agents:\n  sites: [dc-a]\n", "dc-a");
    assert!(!ok);
    assert!(err.contains("state.etcd"), "{err}");
}
