//! `/metrics` behind the read-only token, scraped by a real Prometheus (Debian's package) the
//! way the README's scrape config says: `authorization.credentials_file` with the read-only
//! token. A scrape job without the token is refused (target down).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler::input::Policy;
use scheduler::model::{SiteId, SiteSnapshot};
use support::fixtures::node;
use support::prometheus::PrometheusServer;
use twinsite::api::auth::Access;
use twinsite::api::{ApiState, router};
use twinsite::controller::Controller;
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{Site, SystemClock};
use twinsite::state::{EmbeddedStateStore, StateStore};

const ADMIN: &str = "scrape-admin-token-0123456789";
const READ: &str = "scrape-read-token-9876543210";

/// Serves the API on a free loopback port until the test ends; returns `host:port`.
async fn serve_api(dir: &std::path::Path) -> String {
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
    for site in ["dc-a", "dc-b"] {
        let sim = SimulatedSite::new(
            SiteSnapshot {
                id: SiteId(site.into()),
                nodes: (1..=2).map(|i| node(&format!("{site}-n{i}"))).collect(),
                running_pods: vec![],
            },
            dir.join(site),
            Arc::new(SystemClock),
            SimulatedSiteConfig::default(),
        );
        sites.insert(SiteId(site.into()), Arc::new(sim));
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.join("state")).unwrap());
    let controller = Arc::new(Controller::new(
        sites,
        store as Arc<dyn StateStore>,
        Policy::default_two_sites(),
    ));
    controller.set_leading(true);
    let state = Arc::new(ApiState {
        controller,
        access: Access {
            admin_token: ADMIN.into(),
            read_token: Some(READ.into()),
            open_metrics: false,
        },
        refusals: Default::default(),
        simulated: BTreeMap::new(),
        wake: Arc::new(tokio::sync::Notify::new()),
        metrics: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router(state, 1 << 20)).await });
    address
}

/// `up` of every scrape job, once Prometheus has scraped each of them.
async fn up_by_job(prometheus: &PrometheusServer, jobs: usize) -> BTreeMap<String, String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer: serde_json::Value = client
            .get(format!("{}/api/v1/query", prometheus.url()))
            .query(&[("query", "up")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let up: BTreeMap<String, String> = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    r["metric"]["job"].as_str().unwrap_or("?").to_owned(),
                    r["value"][1].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        if up.len() == jobs {
            return up;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape every job: {answer}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_metrics_with_the_read_only_token_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    let target = serve_api(dir.path()).await;
    let scrape = format!(
        r#"  - job_name: twinsite
    authorization: {{credentials_file: "{{dir}}/twinsite-read-token"}}
    static_configs: [{{targets: ["{target}"]}}]
  - job_name: twinsite-no-token
    static_configs: [{{targets: ["{target}"]}}]
"#
    );
    let prometheus =
        PrometheusServer::start_scraping(&scrape, &[("twinsite-read-token", READ)]).await;
    let up = up_by_job(&prometheus, 2).await;
    assert_eq!(up["twinsite"], "1", "{up:?}\n{}", prometheus.log());
    assert_eq!(up["twinsite-no-token"], "0", "{up:?}");

    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prometheus.url()))
        .query(&[("query", "twinsite_leader{job=\"twinsite\"}")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["data"]["result"][0]["value"][1], "1", "{answer}");
}
