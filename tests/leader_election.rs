//! Leader election and fencing against a real etcd: one leader at a time, hand-over on
//! resign, and a deposed leader (lease revoked or expired) whose writes are refused.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::etcd::EtcdServer;
use tokio::time::timeout;
use twinsite::leader::{LeaderElector, Leadership};
use twinsite::state::{
    EtcdConfig, EtcdStateStore, Expected, JobRecord, JobStatus, KeyLayout, StateError, StateStore,
    connect_etcd,
};

const ELECTION: &str = "/twinsite/v1/election/controller";

async fn elector(server: &EtcdServer, candidate: &str, ttl_secs: u64) -> LeaderElector {
    LeaderElector::new(
        server.client().await,
        ELECTION,
        candidate,
        Duration::from_secs(ttl_secs),
    )
}

/// A store whose writes are guarded by `leadership`.
async fn store_led_by(server: &EtcdServer, leadership: &Leadership) -> EtcdStateStore {
    let store =
        EtcdStateStore::on_etcd(server.client().await, KeyLayout::default().prefix()).unwrap();
    store.set_leader(Some(leadership.leader_key.clone()));
    store
}

/// The job record each writer puts; `writer` (in its status message) tells whose is stored.
fn job(writer: &str) -> JobRecord {
    JobRecord {
        namespace: "team-a".to_owned(),
        name: "etl".to_owned(),
        // The store keeps any spec; these tests are about who may write.
        spec: serde_json::from_value(json!({})).unwrap(),
        generation: 1,
        placement: None,
        status: JobStatus::pending(writer),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_nobody_campaigned_in_has_no_leader() {
    let server = EtcdServer::start().await;
    let observer = elector(&server, "observer", 5).await;
    assert_eq!(observer.current_leader().await.unwrap(), None);
}

/// Two candidates campaign at once: exactly one is elected, the other keeps waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_yield_exactly_one_leader() {
    let server = EtcdServer::start().await;
    let a = elector(&server, "a", 5).await;
    let b = elector(&server, "b", 5).await;
    let mut campaign_a = Box::pin(a.campaign());
    let mut campaign_b = Box::pin(b.campaign());

    let (winner, winner_name, loser) = tokio::select! {
        won = &mut campaign_a => (won.unwrap(), "a", campaign_b),
        won = &mut campaign_b => (won.unwrap(), "b", campaign_a),
    };
    tracing::info!("--- {winner_name} won; the other must still be waiting");
    assert!(
        timeout(Duration::from_millis(1500), loser).await.is_err(),
        "the second candidate was elected while the first still led"
    );
    let leader = a.current_leader().await.unwrap().unwrap();
    assert_eq!(leader.candidate, winner_name);
    assert_eq!(leader.rev, winner.leader_key.rev());
    assert!(!winner.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_resigns_the_waiting_candidate_wins() {
    let server = EtcdServer::start().await;
    let a = elector(&server, "a", 10).await;
    let b = elector(&server, "b", 10).await;
    let leadership_a = a.campaign().await.unwrap();
    let lost_a = leadership_a.lost.clone();
    let waiting_b = tokio::spawn(async move { b.campaign().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting_b.is_finished());

    let resigned_at = Instant::now();
    leadership_a.resign().await.unwrap();
    assert!(
        lost_a.is_cancelled(),
        "resigning fires the resigner's lost signal"
    );
    let leadership_b = timeout(Duration::from_secs(3), waiting_b)
        .await
        .expect("b is elected well before a's 10 s lease would expire")
        .unwrap()
        .unwrap();
    tracing::info!("--- b elected {:?} after a resigned", resigned_at.elapsed());
    assert_eq!(a.current_leader().await.unwrap().unwrap().candidate, "b");
    assert!(leadership_b.leader_key.rev() > 0);
}

/// Dropping a leadership (a controller shutting down) releases it at once, not after the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_leadership_hands_over_without_waiting_for_the_ttl() {
    let server = EtcdServer::start().await;
    let a = elector(&server, "a", 30).await;
    let b = elector(&server, "b", 30).await;
    let leadership_a = a.campaign().await.unwrap();
    let waiting_b = tokio::spawn(async move { b.campaign().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(leadership_a);
    let leadership_b = timeout(Duration::from_secs(5), waiting_b)
        .await
        .expect("b elected within seconds of a dropping its 30 s lease")
        .unwrap()
        .unwrap();
    assert!(!leadership_b.is_lost());
}

/// A's lease is revoked behind its back (what an expiry looks like to etcd): B is elected,
/// A is told it lost, and A's writes, still carrying its old leader key, are fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_revoked_is_fenced_and_told() {
    let server = EtcdServer::start().await;
    let a = elector(&server, "a", 10).await;
    let b = elector(&server, "b", 10).await;
    let leadership_a = a.campaign().await.unwrap();
    let store_a = store_led_by(&server, &leadership_a).await;
    store_a
        .put_job(&job("Running"), Expected::Any)
        .await
        .unwrap();
    let waiting_b = tokio::spawn(async move { b.campaign().await });

    tracing::info!("--- revoke a's lease from outside");
    server
        .client()
        .await
        .lease_revoke(leadership_a.lease_id())
        .await
        .unwrap();
    let leadership_b = timeout(Duration::from_secs(5), waiting_b)
        .await
        .expect("b elected after a's lease is gone")
        .unwrap()
        .unwrap();
    timeout(Duration::from_secs(3), leadership_a.lost.cancelled())
        .await
        .expect("a learns it lost leadership");

    let err = store_a
        .put_job(&job("Stale"), Expected::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Fenced { .. }), "{err:?}");
    assert!(err.is_leadership_lost());
    assert!(err.to_string().contains("/jobs/team-a/etl"), "{err}");

    let store_b = store_led_by(&server, &leadership_b).await;
    store_b
        .put_job(&job("Relaunched"), Expected::Any)
        .await
        .unwrap();
    let stored = store_b.get_job("team-a", "etl").await.unwrap().unwrap();
    assert_eq!(stored.value.status, JobStatus::pending("Relaunched"));
}

/// The real thing: A stops renewing a short lease (a frozen process), the lease expires,
/// B is elected, and A's late write is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_renewing_its_lease_loses_it_when_the_ttl_expires() {
    let server = EtcdServer::start().await;
    let a = elector(&server, "a", 2).await;
    let b = elector(&server, "b", 2).await;
    let leadership_a = a.campaign().await.unwrap();
    let store_a = store_led_by(&server, &leadership_a).await;
    let waiting_b = tokio::spawn(async move { b.campaign().await });

    tracing::info!("--- a keeps renewing: b must not win during several TTLs");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!waiting_b.is_finished(), "b won while a renewed its lease");
    assert!(!leadership_a.is_lost());

    tracing::info!("--- a freezes");
    let frozen_at = Instant::now();
    leadership_a.stop_keep_alive();
    let leadership_b = timeout(Duration::from_secs(6), waiting_b)
        .await
        .expect("b elected once a's lease expired")
        .unwrap()
        .unwrap();
    let handover = frozen_at.elapsed();
    tracing::info!("--- b elected {handover:?} after a froze");
    timeout(Duration::from_secs(3), leadership_a.lost.cancelled())
        .await
        .expect("a learns it lost leadership");

    let err = store_a
        .put_job(&job("Stale"), Expected::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Fenced { .. }), "{err:?}");
    let store_b = store_led_by(&server, &leadership_b).await;
    store_b
        .put_job(&job("Relaunched"), Expected::Any)
        .await
        .unwrap();
}

/// With three etcd members the controller keeps writing after one dies (re-campaigning if
/// its own streams went through that member) and gets retryable errors once quorum is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_etcd_keeps_writes_going_after_one_loss_and_refuses_them_without_quorum() {
    let mut cluster = support::etcd::EtcdCluster::start(3).await;
    let mut config = EtcdConfig::new(cluster.endpoints().to_vec());
    config.request_timeout = Duration::from_secs(1);
    let client = connect_etcd(&config).await.unwrap();
    // A 1 s lease (these members run fast raft timings) keeps a re-election after the loss short.
    let elector = LeaderElector::new(client.clone(), ELECTION, "a", Duration::from_secs(1));
    let store = EtcdStateStore::on_etcd(client, &config.key_prefix).unwrap();
    let mut leadership = elector.campaign().await.unwrap();
    store.set_leader(Some(leadership.leader_key.clone()));
    store.put_job(&job("Running"), Expected::Any).await.unwrap();

    tracing::info!("--- kill one member of three: quorum remains");
    cluster.kill(0);
    // The client may first try the killed member's endpoint until its request times out, so
    // a re-election can take several request timeouts; the bound is generous, not tight.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if leadership.is_lost() {
            leadership = timeout(Duration::from_secs(15), elector.campaign())
                .await
                .expect("re-elected on the surviving members")
                .unwrap();
            store.set_leader(Some(leadership.leader_key.clone()));
        }
        match store.put_job(&job("StillRunning"), Expected::Any).await {
            Ok(_) => break,
            Err(err) if err.is_retryable() || err.is_leadership_lost() => {
                assert!(Instant::now() < deadline, "no write succeeded: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("unexpected error with quorum intact: {err:?}"),
        }
    }

    tracing::info!("--- kill a second member: no quorum, no writes");
    cluster.kill(1);
    let err = store
        .put_job(&job("Orphaned"), Expected::Any)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}
