//! The shared driver's own guarantees, with effects that record what they are asked and
//! when: a round's records are written (once each, in their last version) before anything
//! acts; a failed write stops everything after it; relaunches run concurrently up to the
//! limit; a request's answer names the operation it started.

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::*;
use failover::*;
use scheduler::model::{JobId, Priority, SiteId};

/// Pending once, then ready: the other effects of a round get to run meanwhile.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[derive(Default)]
struct Log {
    /// "write <key>", "mark <site>", "launch <job>", "fence <job>", in the order performed.
    done: Vec<String>,
    in_flight: usize,
    most_in_flight: usize,
    /// Writes fail from the n-th on.
    fail_writes_from: Option<usize>,
    writes: usize,
}

#[derive(Default)]
struct Recording {
    log: RefCell<Log>,
}

#[derive(Debug, PartialEq)]
struct Refused;

impl Effects for Recording {
    type Error = Refused;

    fn write_record(
        &self,
        key: &str,
        _record: Option<&Record>,
    ) -> impl Future<Output = Result<(), Refused>> {
        let key = key.to_string();
        async move {
            let mut log = self.log.borrow_mut();
            log.writes += 1;
            if log.fail_writes_from.is_some_and(|n| log.writes >= n) {
                return Err(Refused);
            }
            log.done.push(format!("write {key}"));
            Ok(())
        }
    }

    async fn append_audits(&self, _entries: &[FailoverAudit]) {}

    fn mark_site(
        &self,
        site: &SiteId,
        _epoch: u64,
        lost: bool,
    ) -> impl Future<Output = Result<(), Refused>> {
        let text = format!("mark {site} {}", if lost { "lost" } else { "recovered" });
        async move {
            self.log.borrow_mut().done.push(text);
            Ok(())
        }
    }

    fn report(&self, _report: Report<'_>) {}

    fn launch(&self, launch: &Launch) -> impl Future<Output = Result<Option<Event>, Refused>> {
        let launch = launch.clone();
        async move {
            {
                let mut log = self.log.borrow_mut();
                log.in_flight += 1;
                log.most_in_flight = log.most_in_flight.max(log.in_flight);
            }
            YieldOnce(false).await;
            let mut log = self.log.borrow_mut();
            log.in_flight -= 1;
            log.done.push(format!("launch {}", launch.job));
            Ok(Some(Event::LaunchSucceeded {
                job: launch.job,
                generation: launch.generation,
                site: launch.site,
            }))
        }
    }

    fn fence(
        &self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Refused>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            self.log.borrow_mut().done.push(format!("fence {job}"));
            Ok(Some(Event::Fenced {
                job,
                generation,
                site,
            }))
        }
    }

    async fn savepoint(
        &self,
        _op: u64,
        _job: &JobId,
        _generation: u64,
        _site: &SiteId,
    ) -> Result<Option<Event>, Refused> {
        Ok(None)
    }

    async fn replicate_savepoint(
        &self,
        _op: u64,
        _job: &JobId,
        _savepoint: &CheckpointPointer,
        _to: &SiteId,
    ) -> Result<Option<Event>, Refused> {
        Ok(None)
    }
}

fn observation(at_site: &str, at: Timestamp) -> SiteObservation {
    SiteObservation {
        site: site(at_site),
        observed_at: at,
        nodes: (1..=3)
            .map(|i| NodeHeartbeat {
                name: format!("{at_site}-{i}"),
                last_heartbeat: Some(at),
            })
            .collect(),
        jobs: vec![],
    }
}

/// Six jobs of site b with checkpoints replicated to a; a driver that has seen both sites
/// at t(0). Returns the driver and the stored jobs.
fn six_jobs_in_b(max_in_flight: usize) -> (Driver, Vec<StoredJob>) {
    let mut config = EngineConfig::new(vec![site("a"), site("b")]);
    config.max_in_flight = max_in_flight;
    let mut driver = Driver::new(config, t(0));
    let stored: Vec<StoredJob> = (0..6)
        .map(|i| {
            let spec = spec(
                &format!("j{i}"),
                Priority::Normal,
                FailoverMode::RestoreRequired,
                "b",
            );
            StoredJob {
                id: spec.demand.id.clone(),
                placed: Some(PlacedJob {
                    spec,
                    site: site("b"),
                    generation: 1,
                }),
            }
        })
        .collect();
    let replicated = (0..6)
        .map(|i| Event::CheckpointReplicated {
            job: job(&format!("j{i}")),
            replica: checkpoint("a", 1, 3, t(0)),
        })
        .collect();
    let quiet = Recording::default();
    let placer = TestPlacer::default();
    futures::executor::block_on(driver.pass(
        &quiet,
        &placer,
        PassInput {
            quorum: true,
            jobs: Some(stored.clone()),
            sites: vec![observation("a", t(0)), observation("b", t(0))],
            events: replicated,
            ..PassInput::default()
        },
        t(0),
    ))
    .unwrap();
    (driver, stored)
}

/// The pass in which b is found lost: only a answers, 31 s after b was last heard.
fn losing_b(stored: Vec<StoredJob>) -> PassInput {
    PassInput {
        quorum: true,
        jobs: Some(stored),
        sites: vec![observation("a", t(31))],
        ..PassInput::default()
    }
}

#[test]
fn a_rounds_records_are_written_once_each_before_anything_acts_and_launches_run_concurrently_up_to_the_limit()
 {
    let (mut driver, stored) = six_jobs_in_b(4);
    let effects = Recording::default();
    let outcome = futures::executor::block_on(driver.pass(
        &effects,
        &TestPlacer::default(),
        losing_b(stored),
        t(31),
    ))
    .unwrap();
    let log = effects.log.into_inner();
    let first_act = log
        .done
        .iter()
        .position(|d| !d.starts_with("write"))
        .unwrap();
    // Round 1: the loss and the first four moves, written first, each record once.
    let round_one: Vec<&String> = log.done[..first_act].iter().collect();
    let mut keys = round_one.clone();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        round_one.len(),
        "a record written twice: {round_one:?}"
    );
    assert!(
        round_one.contains(&&"write site.b".to_string()),
        "{round_one:?}"
    );
    assert_eq!(log.done[first_act], "mark b lost", "{:?}", log.done);
    // Six launches in all, four at once at most, and more than one at once.
    let launches = log.done.iter().filter(|d| d.starts_with("launch")).count();
    assert_eq!(launches, 6, "{:?}", log.done);
    assert_eq!(log.most_in_flight, 4, "{:?}", log.done);
    assert_eq!(outcome.launched.len(), 6);
    assert!(outcome.rounds >= 2, "{outcome:?}");
}

#[test]
fn a_failed_write_stops_the_round_before_anything_acts() {
    let (mut driver, stored) = six_jobs_in_b(4);
    let effects = Recording::default();
    effects.log.borrow_mut().fail_writes_from = Some(2);
    let result = futures::executor::block_on(driver.pass(
        &effects,
        &TestPlacer::default(),
        losing_b(stored),
        t(31),
    ));
    assert_eq!(result, Err(Refused));
    let log = effects.log.into_inner();
    assert!(
        log.done.iter().all(|d| d.starts_with("write")),
        "nothing may act after a failed write: {:?}",
        log.done
    );
}

#[test]
fn a_request_is_answered_with_the_operation_it_started() {
    let (mut driver, stored) = six_jobs_in_b(2);
    let effects = Recording::default();
    let request = OpsRequest::Failover {
        from: site("b"),
        to: site("a"),
        mode: MoveMode::Forced,
        dry_run: false,
    };
    let outcome = futures::executor::block_on(driver.request(
        &effects,
        &TestPlacer::default(),
        Some(stored.clone()),
        request,
        t(5),
    ))
    .unwrap();
    assert_eq!(outcome.accepted, Some(1), "{outcome:?}");
    assert_eq!(driver.engine().operation(1).map(|o| o.jobs.len()), Some(6));
    // A dry run answers a plan and changes nothing.
    let before = driver.engine().records();
    let dry = futures::executor::block_on(driver.request(
        &effects,
        &TestPlacer::default(),
        Some(stored),
        OpsRequest::Failover {
            from: site("a"),
            to: site("b"),
            mode: MoveMode::Forced,
            dry_run: true,
        },
        t(6),
    ))
    .unwrap();
    assert!(dry.plan.is_some() && dry.accepted.is_none(), "{dry:?}");
    assert_eq!(driver.engine().records(), before);
}

#[test]
fn stored_jobs_register_new_and_changed_jobs_and_forget_only_the_ones_gone() {
    let (mut driver, mut stored) = six_jobs_in_b(2);
    let effects = Recording::default();
    // j0 is gone, j1 lost its placement (still stored: kept), j2 was relaunched as gen 2.
    stored.retain(|j| j.id != job("j0"));
    stored[0].placed = None;
    if let Some(p) = stored[1].placed.as_mut() {
        p.generation = 2;
    }
    futures::executor::block_on(driver.feed(
        &effects,
        &TestPlacer::default(),
        vec![Event::JobsStored(stored)],
        t(5),
    ))
    .unwrap();
    let engine = driver.engine();
    assert!(engine.job(&job("j0")).is_none());
    assert_eq!(engine.job(&job("j1")).map(|r| r.generation), Some(1));
    assert_eq!(engine.job(&job("j2")).map(|r| r.generation), Some(2));
    let log = effects.log.into_inner();
    assert!(
        log.done.contains(&"write job.ns.j0".to_string()),
        "{:?}",
        log.done
    );
    assert!(
        log.done.contains(&"fence ns/j2".to_string()),
        "the replaced generation is fenced: {:?}",
        log.done
    );
}
