//! The configuration's tests: every bad field named, defaults, relative paths, token files.
//! Must never: reach beyond a temporary directory (no network, no real token).

use std::path::PathBuf;
use std::time::Duration;

use super::*;

const HEAD: &str = "apiVersion: twinsite.io/v1alpha1\nkind: ControllerConfig\n";

fn parse(body: &str) -> Result<Config, ConfigError> {
    Config::parse(
        "twinsite.yaml",
        &format!("{HEAD}{body}"),
        Path::new("/etc/twinsite"),
    )
}

#[test]
fn the_embedded_default_is_two_simulated_sites_with_embedded_state_on_localhost() {
    let config = Config::embedded_default();
    let sites: Vec<_> = config.policy.site_ids().into_iter().map(|s| s.0).collect();
    assert_eq!(sites, ["dc-a", "dc-b"]);
    assert!(matches!(config.state, StateConfig::Embedded { .. }));
    assert_eq!(config.api.listen.to_string(), DEFAULT_LISTEN);
    assert!(config.data_dir.ends_with("twinsite-data"));
}

#[test]
fn an_empty_config_means_the_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.reconcile_interval, Duration::from_secs(5));
    assert_eq!(config.api.token, TokenSource::None);
    assert_eq!(config.data_dir, Path::new("/etc/twinsite/./twinsite-data"));
}

#[test]
fn launch_pacing_reaches_the_engine_and_zero_is_refused_naming_the_field() {
    let config = parse("failover:\n  launchRate: 50\n  launchBurst: 10\n").unwrap();
    let engine = config.failover.engine_config(Vec::new());
    assert_eq!((engine.launch_rate, engine.launch_burst), (50, 10));
    let defaults = parse("").unwrap().failover.engine_config(Vec::new());
    assert_eq!(
        (defaults.launch_rate, defaults.launch_burst),
        (
            failover::DEFAULT_LAUNCH_RATE,
            failover::DEFAULT_LAUNCH_BURST
        )
    );
    let err = parse("failover:\n  launchRate: 0\n  launchBurst: 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("failover.launchRate"), "{err}");
    assert!(err.contains("failover.launchBurst"), "{err}");
}

#[test]
fn a_misspelled_field_is_named() {
    let err = parse("api:\n  listn: 1.2.3.4:80\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("api.listn"), "{err}");
    assert!(err.contains("twinsite.yaml"), "{err}");
}

#[test]
fn every_bad_value_is_reported_with_its_field() {
    let err = parse(
        "api:\n  listen: localhost\n  tokenFile: t\n  tokenEnv: T\nreconcile:\n  interval: 0s\n\
         state:\n  etcd:\n    endpoints: [\"etcd:2379\"]\n    leaseTtl: 1s\n",
    )
    .unwrap_err()
    .to_string();
    for field in [
        "api.listen",
        "api:",
        "reconcile.interval",
        "state.etcd.endpoints[0]",
        "state.etcd.leaseTtl",
    ] {
        assert!(err.contains(field), "{field} missing from:\n{err}");
    }
}

/// Every section is checked even after a bad one, and the problems come in one order, the
/// order `resolve` takes the sections in: a user fixing a file reads them top to bottom.
#[test]
fn problems_of_every_section_are_reported_together_in_a_stable_order() {
    let err = parse(
        "state:\n  etcd:\n    endpoints: []\n\
         api:\n  listen: localhost\n  maxBodyBytes: 0\n\
         simulation:\n  tick: 0s\n  generate:\n    nodesPerSite: 0\n  sites:\n    dc-x:\n      nodes: n.json\n\
         reconcile:\n  interval: 0s\n\
         failover:\n  nodeGrace: 0s\n  siteGrace: 0s\n  maxInFlight: 0\n  launchRate: 0\n  launchBurst: 0\n\
         localFlink:\n  python: py\n  sites: [dc-y]\n\
         streamJobs:\n  site: dc-z\n\
         nodeUsage:\n  prometheus: {}\n\
         agents:\n  sites: [dc-q]\n",
    )
    .unwrap_err()
    .to_string();
    let fields: Vec<&str> = err
        .lines()
        .filter_map(|line| line.strip_prefix("twinsite.yaml: "))
        .filter_map(|rest| rest.split(": ").next())
        .collect();
    assert_eq!(
        fields,
        [
            "state.etcd.endpoints",
            "api.listen",
            "api.maxBodyBytes",
            "simulation.tick",
            "reconcile.interval",
            "failover.nodeGrace",
            "failover.siteGrace",
            "failover.maxInFlight",
            "failover.launchRate",
            "failover.launchBurst",
            "simulation.generate.nodesPerSite",
            "simulation.sites.dc-x",
            "localFlink.sites[0]",
            "streamJobs.site",
            "nodeUsage",
            "agents.sites[0]",
        ],
        "{err}"
    );
}

#[test]
fn relative_paths_are_taken_from_the_config_files_directory() {
    let config = parse(
        "jobs: jobs.yaml\napi:\n  tokenFile: /run/secrets/token\n\
         state:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    candidate: c1\n",
    )
    .unwrap();
    assert_eq!(config.jobs.unwrap(), Path::new("/etc/twinsite/jobs.yaml"));
    assert_eq!(
        config.api.token,
        TokenSource::File(PathBuf::from("/run/secrets/token"))
    );
    let StateConfig::Etcd(etcd) = config.state else {
        panic!("expected etcd")
    };
    assert_eq!(etcd.candidate, "c1");
    assert_eq!(etcd.lease_ttl, Duration::from_secs(10));
}

#[test]
fn local_flink_sites_must_be_policy_sites_with_usable_capacity() {
    let config = parse("localFlink:\n  python: venv/bin/python\n  sites: [dc-a]\n").unwrap();
    let local = config.local_flink.unwrap();
    assert_eq!(local.python, Path::new("/etc/twinsite/venv/bin/python"));
    assert_eq!(local.capacity.cpu_milli, 8000);
    let err = parse("localFlink:\n  python: p\n  sites: [dc-q]\n  memory: lots\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("localFlink.sites[0]") && err.contains("localFlink.memory"),
        "{err}"
    );
}

#[test]
fn stream_jobs_must_name_a_kubernetes_site_of_the_policy_and_every_bad_field_is_named() {
    let err = parse(
        "streamJobs:\n  site: dc-z\n  namespace: Not_A_Label\n  statusInterval: 10ms\n  checkpointStatusInterval: soon\n",
    )
    .unwrap_err()
    .to_string();
    for field in [
        "streamJobs.site",
        "dc-z",
        "streamJobs.namespace",
        "streamJobs.statusInterval: must be at least 1s",
        "streamJobs.checkpointStatusInterval",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }
    // The embedded default's sites are simulated: no cluster to hold objects.
    let err = parse("streamJobs: {site: dc-a}\n").unwrap_err().to_string();
    assert!(
        err.contains("streamJobs.site") && err.contains("kubernetes"),
        "{err}"
    );
    assert!(parse("streamJobs: {site: dc-a, colour: blue}\n").is_err());
}

#[test]
fn stream_jobs_of_a_kubernetes_site_resolve_with_their_namespace_and_intervals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example-two-sites.yaml"),
        dir.path().join("policy.yaml"),
    )
    .unwrap();
    let text = format!(
        "{HEAD}policy: policy.yaml\nstreamJobs: {{site: dc-b, namespace: streaming, statusInterval: 30s}}\n"
    );
    let config = Config::parse("twinsite.yaml", &text, dir.path()).unwrap();
    let watch = config.stream_jobs.unwrap();
    assert_eq!(watch.scope.home.0, "dc-b");
    assert_eq!(watch.scope.namespace.as_deref(), Some("streaming"));
    assert_eq!(watch.status_interval, Duration::from_secs(30));
    assert_eq!(watch.checkpoint_status_interval, Duration::from_secs(120));
    assert!(parse("").unwrap().stream_jobs.is_none(), "off by default");
}

/// Parses `body` beside a copy of the daytime-lending example policy (a pool lending by
/// usage in every site, both sites with a job namespace).
fn parse_with_daytime_policy(body: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example-daytime-lending.yaml"),
        dir.path().join("policy.yaml"),
    )
    .unwrap();
    Config::parse(
        "twinsite.yaml",
        &format!("{HEAD}policy: policy.yaml\n{body}"),
        dir.path(),
    )
}

const BOTH_PROMETHEUS: &str =
    "nodeUsage:\n  prometheus: {dc-a: 'http://prom-a:9090', dc-b: 'http://prom-b:9090'}\n";

#[test]
fn node_usage_resolves_with_default_queries_and_timing() {
    let config = parse_with_daytime_policy(BOTH_PROMETHEUS).unwrap();
    let usage = config.node_usage.expect("a pool lends by usage");
    assert_eq!(usage.prometheus.len(), 2);
    assert_eq!(usage.node_label, "node");
    assert_eq!(usage.refresh, Duration::from_secs(60));
    assert_eq!(usage.max_age, Duration::from_secs(300));
    assert!(usage.queries.pods_cpu.contains(NodeUsageQueries::NAMESPACE));
    assert!(parse("").unwrap().node_usage.is_none());
}

#[test]
fn a_pool_lending_by_usage_without_node_usage_is_refused_naming_the_pool() {
    let error = parse_with_daytime_policy("").unwrap_err().to_string();
    assert!(
        error.contains("nodeUsage") && error.contains("hdfs-offline"),
        "{error}"
    );
}

#[test]
fn node_usage_the_policy_never_reads_is_refused() {
    let error = parse(BOTH_PROMETHEUS).unwrap_err().to_string();
    assert!(error.contains("no policy pool lends by usage"), "{error}");
}

#[test]
fn bad_node_usage_fields_are_named() {
    let cases = [
        (
            "nodeUsage:\n  prometheus: {dc-a: 'http://prom-a:9090'}\n",
            "nodeUsage.prometheus.dc-b: missing",
        ),
        (
            "nodeUsage:\n  prometheus: {dc-a: 'ftp://a', dc-b: 'http://b'}\n",
            "nodeUsage.prometheus.dc-a: expected an http(s) URL",
        ),
        (
            "nodeUsage:\n  prometheus: {dc-a: 'http://a', dc-b: 'http://b', dc-c: 'http://c'}\n",
            "nodeUsage.prometheus.dc-c: the policy has no site",
        ),
        (
            &format!("{BOTH_PROMETHEUS}  refresh: 10m\n  maxAge: 5m\n"),
            "nodeUsage.maxAge: 5m is shorter than nodeUsage.refresh",
        ),
        (
            &format!("{BOTH_PROMETHEUS}  maxAge: 2h\n"),
            "nodeUsage.maxAge: at most 1h",
        ),
        (
            &format!("{BOTH_PROMETHEUS}  nodeLabel: 'kubernetes node'\n"),
            "nodeUsage.nodeLabel",
        ),
        (
            &format!("{BOTH_PROMETHEUS}  nodeCpuQuery: '  '\n"),
            "nodeUsage.nodeCpuQuery: must not be empty",
        ),
        (
            &format!("{BOTH_PROMETHEUS}  podsCpuQuery: '{}'\n", "x".repeat(5000)),
            "nodeUsage.podsCpuQuery: 5000 bytes is over the bound",
        ),
        (&format!("{BOTH_PROMETHEUS}  colour: blue\n"), "colour"),
    ];
    for (body, expected) in cases {
        let error = parse_with_daytime_policy(body).unwrap_err().to_string();
        assert!(error.contains(expected), "{body}: {error}");
    }
}

#[test]
fn automatic_site_failover_is_off_on_the_embedded_store_with_real_sites_unless_turned_on() {
    assert!(Config::embedded_default().failover.automatic_site_failover);
    let local = "localFlink:\n  python: venv/bin/python\n  sites: [dc-a]\n";
    assert!(!parse(local).unwrap().failover.automatic_site_failover);
    let explicit = format!("{local}failover:\n  automaticSiteFailover: true\n");
    assert!(parse(&explicit).unwrap().failover.automatic_site_failover);
    let etcd = "state:\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n";
    assert!(
        parse(&format!("{local}{etcd}"))
            .unwrap()
            .failover
            .automatic_site_failover
    );
}

#[test]
fn an_agent_timing_slower_than_the_site_grace_is_refused_naming_the_fields() {
    const ETCD: &str = "state:\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n";
    let slow =
        "agents:\n  sites: [dc-a]\n  leaseTtl: 20s\n  clockSkewMargin: 5s\n  stopWithin: 5s\n";
    let err = parse(&format!("{ETCD}{slow}")).unwrap_err().to_string();
    for field in [
        "agents.leaseTtl",
        "agents.clockSkewMargin",
        "agents.stopWithin",
        "failover.siteGrace",
        "30s",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }
    let longer_grace = format!("{ETCD}{slow}  interval: 5s\nfailover:\n  siteGrace: 31s\n");
    assert!(parse(&longer_grace).is_ok());
    // Without guarded sites the timing binds nothing (a short grace for tests is fine).
    assert!(parse("failover:\n  siteGrace: 3s\n").is_ok());
    let short = format!("{ETCD}agents:\n  sites: [dc-a]\n  leaseTtl: 1s\n  interval: 500ms\n");
    let short = parse(&short).unwrap_err().to_string();
    assert!(
        short.contains("agents.leaseTtl") && short.contains("at least 2s"),
        "{short}"
    );
}

#[test]
fn agent_sites_need_etcd_and_must_be_policy_sites() {
    let err = parse("agents:\n  sites: [dc-a, dc-q]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("agents.sites[1]") && err.contains("dc-q"),
        "{err}"
    );
    assert!(err.contains("state.etcd"), "{err}");
    let ok = parse(
        "agents:\n  sites: [dc-a]\nstate:\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n",
    )
    .unwrap();
    assert_eq!(ok.agents.sites, [scheduler::model::SiteId("dc-a".into())]);
}

#[test]
fn a_missing_policy_file_is_named() {
    let err = parse("policy: nowhere.yaml\n").unwrap_err().to_string();
    assert!(
        err.contains("policy") && err.contains("nowhere.yaml"),
        "{err}"
    );
}

#[test]
fn simulated_site_files_must_name_a_policy_site() {
    let err = parse("simulation:\n  sites:\n    dc-z:\n      nodes: n.json\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("simulation.sites.dc-z"), "{err}");
}

fn private_file(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_short_token_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    private_file(&path, "hunter2\n");
    let err = TokenSource::File(path).read().unwrap_err();
    assert!(err.contains("at least 16"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Issue #13, finding 2: a token file its group or the world can read is refused,
/// naming the file, its mode and the fix, without echoing the token.
#[test]
fn a_token_file_others_can_read_is_refused_with_the_mode_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read-token");
    private_file(&path, "0123456789abcdef0123\n");
    let source = TokenSource::File(path.clone());
    assert_eq!(
        source
            .read_as("api.readTokenFile", "api.readTokenEnv")
            .unwrap()
            .as_deref(),
        Some("0123456789abcdef0123")
    );
    for mode in [0o640, 0o604, 0o620, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = source
            .read_as("api.readTokenFile", "api.readTokenEnv")
            .unwrap_err();
        assert!(err.contains("api.readTokenFile"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(&format!("{mode:04o}")), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("0123456789abcdef"), "{err}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(source.read().is_ok());
}

#[test]
fn the_read_token_is_configured_like_the_admin_token_and_must_differ() {
    let config = parse(
        "api:\n  tokenFile: /run/secrets/token\n  readTokenEnv: TWINSITE_READ_TOKEN\n  metricsRequireToken: false\n",
    )
    .unwrap();
    assert_eq!(
        config.api.read_token,
        TokenSource::Env("TWINSITE_READ_TOKEN".into())
    );
    assert!(!config.api.metrics_require_token);
    assert!(parse("").unwrap().api.metrics_require_token);
    let err = parse("api:\n  readTokenFile: a\n  readTokenEnv: B\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("readTokenFile and readTokenEnv"), "{err}");
    let err = parse("api:\n  tokenFile: t\n  readTokenFile: t\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("api.readTokenFile"), "{err}");
}

#[test]
fn an_unset_token_variable_is_named() {
    let err = TokenSource::Env("TWINSITE_TEST_NO_SUCH_VAR".into())
        .read()
        .unwrap_err();
    assert!(err.contains("TWINSITE_TEST_NO_SUCH_VAR"), "{err}");
}
