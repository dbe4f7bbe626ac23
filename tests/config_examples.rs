//! The configuration examples in `deploy/config/` parse, and the deployment manifests start
//! the controller with flags it has.

use std::path::Path;

use twinsite::config::{Config, StateConfig, TokenSource};

#[test]
fn the_production_config_example_parses_with_the_example_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example-two-sites.yaml"),
        dir.path().join("policy.yaml"),
    )
    .unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config/twinsite.yaml"),
    )
    .unwrap();
    let config = Config::parse("deploy/config/twinsite.yaml", &text, dir.path()).unwrap();
    let StateConfig::Etcd(etcd) = &config.state else {
        panic!("the production example uses etcd");
    };
    assert_eq!(etcd.store.endpoints.len(), 3);
    assert!(etcd.store.tls.is_some());
    assert_eq!(
        config.api.token,
        TokenSource::File("/var/run/secrets/twinsite/api/token".into())
    );
    assert_eq!(
        config.api.read_token,
        TokenSource::File("/var/run/secrets/twinsite/api/read-token".into())
    );
    assert!(config.api.metrics_require_token);
    let stream_jobs = config
        .stream_jobs
        .as_ref()
        .expect("the example watches StreamJobs");
    assert_eq!(stream_jobs.scope.home.0, "dc-a");
    assert_eq!(stream_jobs.scope.namespace, None);
    assert_eq!(
        stream_jobs.checkpoint_status_interval,
        std::time::Duration::from_secs(120)
    );
    // Both sites are guarded by an agent, with a timing the site grace allows.
    assert_eq!(config.agents.sites.len(), 2);
    assert!(
        config
            .agents
            .timing
            .check(config.failover.site_grace)
            .is_ok()
    );
    // Both sites of the example policy are Kubernetes sites.
    for site in config.policy.site_ids() {
        assert!(
            config.policy.site(&site).unwrap().kubernetes.is_some(),
            "{site}"
        );
    }
}

#[test]
fn the_deployments_pass_flags_that_twinsite_run_accepts() {
    use clap::Parser;
    for file in [
        "controller/controller-dc-a.yaml",
        "controller/controller-dc-b.yaml",
        "agent/agent-dc-a.yaml",
        "agent/agent-dc-b.yaml",
    ] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy")
                .join(file),
        )
        .unwrap();
        let args: Vec<String> = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("args:"))
            .skip(1)
            .take_while(|l| l.trim_start().starts_with("- "))
            .map(|l| l.trim_start().trim_start_matches("- ").to_string())
            .collect();
        assert!(!args.is_empty(), "{file}: no args found");
        let argv = std::iter::once("twinsite".to_string()).chain(args.clone());
        twinsite::cli::Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{file}: {args:?}: {e}"));
    }
}
