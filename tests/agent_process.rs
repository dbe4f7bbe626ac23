//! `twinsite agent` as a real process on a real etcd: it wins its site's lease (which the
//! controller's reader then sees alive, as the site's peer view), a second agent of the same
//! site stands by without taking it, and on SIGTERM the agent resigns so the lease is gone
//! at once rather than after its TTL.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use scheduler::model::SiteId;
use support::etcd::EtcdServer;
use twinsite::agent::lease::AgentLeases;
use twinsite::leader::LeaderElector;
use twinsite::state::KeyLayout;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(config: &std::path::Path, candidate: &str) -> Agent {
    Agent(
        Command::new(env!("CARGO_BIN_EXE_twinsite"))
            .args([
                "agent",
                "--site",
                "dc-a",
                "--candidate",
                candidate,
                "--config",
            ])
            .arg(config)
            .env("TWINSITE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start twinsite agent"),
    )
}

async fn holder(elector: &LeaderElector) -> Option<String> {
    elector.current_leader().await.unwrap().map(|l| l.candidate)
}

async fn wait_holder(elector: &LeaderElector, want: Option<&str>) {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = holder(elector).await;
        if now.as_deref() == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "lease holder {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_process_holds_its_sites_lease_and_resigns_it_on_sigterm() {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twinsite.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: twinsite.io/v1alpha1\nkind: ControllerConfig\ndataDir: {}\n\
             state:\n  etcd:\n    endpoints: [{}]\n\
             agents:\n  sites: [dc-a]\n  leaseTtl: 4s\n  clockSkewMargin: 1s\n  stopWithin: 5s\n  interval: 1s\n",
            dir.path().join("data").display(),
            etcd.endpoint()
        ),
    )
    .unwrap();
    let client = etcd.client().await;
    let layout = KeyLayout::default();
    let elector = LeaderElector::new(
        client.clone(),
        layout.agent("dc-a").unwrap(),
        "test (reads only)",
        Duration::from_secs(4),
    );
    let leases = AgentLeases::new(client, &layout, &[SiteId("dc-a".into())]).unwrap();

    let mut first = start_agent(&config, "agent-1");
    wait_holder(&elector, Some("agent-1")).await;
    let read = leases.read().await;
    let renewal = read[&SiteId("dc-a".into())].expect("the controller sees the lease alive");
    assert!(
        chrono::Utc::now() - renewal < chrono::Duration::seconds(6),
        "{renewal}"
    );

    // A second replica of the same site's agent waits; the first keeps the lease.
    let _second = start_agent(&config, "agent-2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(holder(&elector).await.as_deref(), Some("agent-1"));

    // SIGTERM: the first resigns, the standby takes over well within the TTL.
    let pid = first.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopped_at = tokio::time::Instant::now();
    wait_holder(&elector, Some("agent-2")).await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(4),
        "taken over only after {:?}: the lease was not resigned",
        stopped_at.elapsed()
    );
    let status = first.0.wait().unwrap();
    assert!(status.success(), "agent exited with {status}");
}
