//! The production failover driver run over the world: `Sim` is its `Effects` and `Placer`.
//! It must never decide or execute anything itself: the commands are the real engine's.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use rand::Rng;
use scheduler::model::{JobId, SiteId};

use crate::driver::{Driver, Effects, Launch, PassInput, Report};
use crate::engine::{Command, Event, FailoverAudit, Record};
use crate::sim::report::EntryKind;
use crate::types::{CheckpointPointer, PlacementOutcome, Placer};

use super::*;

/// Pending once, then ready: lets the other effects of a round run first.
pub(super) struct YieldOnce(bool);

/// The driver's view of the world: its effects and its placer.
pub(super) struct Sim<'a> {
    state: &'a RefCell<State>,
}

pub(super) fn short_record(r: &Record) -> String {
    match r {
        Record::Job(j) => format!("Persist({} gen {} {:?})", j.id(), j.generation, j.phase),
        other => format!("Persist({})", other.key()),
    }
}

pub(super) fn short_event(e: &Event) -> String {
    match e {
        Event::JobsStored(jobs) => format!("JobsStored({} jobs)", jobs.len()),
        other => format!("{other:?}"),
    }
}

/// A command in one line, for the trace.
pub(super) fn short(c: &Command) -> String {
    match c {
        Command::Persist(r) => short_record(r),
        Command::Audit(a) => format!("Audit({})", a.message),
        Command::Relaunch {
            job,
            generation,
            site,
            restore_from,
            ..
        } => {
            format!(
                "Relaunch({job} gen {generation} in {site} from {:?})",
                restore_from.as_ref().map(|r| (&r.site, r.generation, r.id))
            )
        }
        other => format!("{other:?}"),
    }
}

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

impl Sim<'_> {
    /// Seeded interleaving: a concurrent effect lets the others of its round run first a
    /// random number of times.
    async fn interleave(&self) {
        let yields = self
            .state
            .borrow_mut()
            .interleaving
            .as_mut()
            .map_or(0, |rng| rng.random_range(0..3));
        for _ in 0..yields {
            YieldOnce(false).await;
        }
    }
}

impl Placer for Sim<'_> {
    fn place(
        &self,
        site: &SiteId,
        jobs: &[scheduler::model::JobDemand],
        avoid: &BTreeSet<String>,
    ) -> PlacementOutcome {
        self.state.borrow().place(site, jobs, avoid)
    }
}

impl Effects for Sim<'_> {
    type Error = Crashed;

    fn write_record(
        &self,
        key: &str,
        record: Option<&Record>,
    ) -> impl Future<Output = Result<(), Crashed>> {
        let (key, record) = (key.to_string(), record.cloned());
        async move {
            let mut s = self.state.borrow_mut();
            s.gate()?;
            match record {
                Some(record) => {
                    if let Record::Site(site) = &record {
                        s.check_loss_judgement(site);
                    }
                    s.trace_line(format!("    -> {}", short_record(&record)));
                    s.store.insert(key, record);
                }
                None => {
                    s.trace_line(format!("    -> Forget({key})"));
                    s.store.remove(&key);
                }
            }
            Ok(())
        }
    }

    fn append_audits(&self, entries: &[FailoverAudit]) -> impl Future<Output = ()> {
        let entries = entries.to_vec();
        async move {
            let mut s = self.state.borrow_mut();
            if s.gate().is_err() {
                return;
            }
            for a in entries {
                s.audit(a);
            }
        }
    }

    fn mark_site(
        &self,
        site: &SiteId,
        epoch: u64,
        lost: bool,
    ) -> impl Future<Output = Result<(), Crashed>> {
        let site = site.clone();
        async move {
            let mut s = self.state.borrow_mut();
            s.gate()?;
            if lost {
                s.mark_site_lost(site, epoch);
            } else {
                s.mark_site_recovered(site, epoch);
            }
            Ok(())
        }
    }

    fn report(&self, report: Report<'_>) {
        let mut s = self.state.borrow_mut();
        if !s.crashed {
            s.report(report);
        }
    }

    fn launch(&self, launch: &Launch) -> impl Future<Output = Result<Option<Event>, Crashed>> {
        let launch = launch.clone();
        async move {
            self.interleave().await;
            let mut s = self.state.borrow_mut();
            s.gate()?;
            let answer = s.relaunch(launch);
            if let Some(n) = s.relaunches_before_crash.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    s.relaunches_before_crash = None;
                    s.crashed = true;
                }
            }
            Ok(answer)
        }
    }

    fn fence(
        &self,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Crashed>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            self.interleave().await;
            let mut s = self.state.borrow_mut();
            s.gate()?;
            Ok(s.fence(job, generation, site))
        }
    }

    fn savepoint(
        &self,
        op: u64,
        job: &JobId,
        generation: u64,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Crashed>> {
        let (job, site) = (job.clone(), site.clone());
        async move {
            let mut s = self.state.borrow_mut();
            s.gate()?;
            Ok(s.trigger_savepoint(op, job, generation, site))
        }
    }

    fn replicate_savepoint(
        &self,
        op: u64,
        job: &JobId,
        savepoint: &CheckpointPointer,
        to: &SiteId,
    ) -> impl Future<Output = Result<Option<Event>, Crashed>> {
        let (job, savepoint, to) = (job.clone(), savepoint.clone(), to.clone());
        async move {
            let mut s = self.state.borrow_mut();
            s.gate()?;
            Ok(s.replicate_savepoint(op, job, savepoint, to))
        }
    }

    fn trace_fed(&self, fed: &[Event]) {
        let mut s = self.state.borrow_mut();
        if s.trace.is_none() {
            return;
        }
        let secs = s.elapsed().as_secs();
        for event in fed {
            s.trace_line(format!("t={secs} {}", short_event(event)));
        }
    }

    fn trace_issued(&self, issued: &[Command]) {
        let mut s = self.state.borrow_mut();
        if s.trace.is_none() {
            return;
        }
        for c in issued {
            if !matches!(c, Command::Persist(_) | Command::Forget { .. }) {
                s.trace_line(format!("    => {}", short(c)));
            }
        }
    }
}

impl World {
    /// Feeds `event` to the driver now (with the stored jobs, as the controller's requests
    /// do) and executes what it leads to.
    pub fn deliver(&mut self, event: Event) {
        self.deliver_all(vec![event]);
    }

    /// Feeds events that arrived together, with the stored jobs first.
    pub fn deliver_all(&mut self, events: Vec<Event>) {
        for e in &events {
            if let Event::OpsRequest(
                crate::engine::OpsRequest::Failover {
                    from,
                    to,
                    dry_run: false,
                    ..
                }
                | crate::engine::OpsRequest::Failback {
                    from,
                    to,
                    dry_run: false,
                    ..
                },
            ) = e
            {
                self.st().operator_moves.insert((from.clone(), to.clone()));
            }
        }
        let mut fed = vec![Event::JobsStored(self.state.borrow().stored_jobs())];
        fed.extend(std::mem::take(&mut self.st().inbox));
        fed.extend(events);
        let now = self.now();
        let sim = Sim { state: &self.state };
        let result = futures::executor::block_on(self.driver.feed(&sim, &sim, fed, now));
        self.after_call(result.map(|_| ()));
    }

    /// One reconcile pass of the controller: quorum, stored jobs, answers that arrived,
    /// peer views and the observations of every site it reaches, then the commands.
    pub(super) fn pass(&mut self) {
        let input = {
            let s = self.st();
            s.stop_unguarded();
            let ids: Vec<SiteId> = s.sites.keys().cloned().collect();
            PassInput {
                quorum: s.quorum,
                jobs: Some(s.stored_jobs()),
                sites: ids
                    .iter()
                    .filter(|id| s.observable(id))
                    .filter_map(|id| s.observe(id))
                    .collect(),
                // A site's peer view is its agent's lease: its last renewal.
                peers: ids
                    .iter()
                    .filter_map(|id| Some((id.clone(), s.sites.get(id)?.agent.last_renewal?)))
                    .collect(),
                events: std::mem::take(&mut s.inbox),
                retries: std::mem::take(&mut s.deferred),
            }
        };
        let now = self.now();
        let sim = Sim { state: &self.state };
        let result = futures::executor::block_on(self.driver.pass(&sim, &sim, input, now));
        self.after_call(result.map(|_| ()));
    }

    /// After every call of the driver: if an effect found the leader dead, a new one takes
    /// over.
    pub(super) fn after_call(&mut self, result: Result<(), Crashed>) {
        if result.is_err() || self.state.borrow().crashed {
            self.crash_leader();
        }
    }

    /// Arms a leader crash (see [`CrashTrigger`]).
    pub fn arm_crash(&mut self, trigger: CrashTrigger) {
        let s = self.st();
        match trigger {
            CrashTrigger::AfterCommands(n) => s.effects_before_crash = Some(n),
            CrashTrigger::AfterRelaunches(n) => s.relaunches_before_crash = Some(n.max(1)),
        }
    }

    /// The leader dies now; a new one loads every persisted record and resumes.
    pub fn crash_leader(&mut self) {
        let records = {
            let s = self.st();
            s.stats.leader_crashes += 1;
            s.crashed = false;
            s.effects_before_crash = None;
            let text = format!(
                "leader crashed; a new leader resumes from {} persisted records",
                s.store.len()
            );
            let secs = s.elapsed().as_secs();
            s.trace_line(format!("t={secs} LEADER CRASH: {text}"));
            s.log(EntryKind::Leader, None, None, text);
            // Through JSON, as the real store would hand them back.
            let records: Result<Vec<Record>, _> = s
                .store
                .values()
                .map(|r| serde_json::to_string(r).and_then(|j| serde_json::from_str(&j)))
                .collect();
            match records {
                Ok(r) => r,
                Err(e) => {
                    s.violation(format!("a record does not round-trip through JSON: {e}"));
                    s.store.values().cloned().collect()
                }
            }
        };
        let config = self.driver.engine().config().clone();
        self.driver = Driver::resume(config, records, self.now());
        let q = self.state.borrow().quorum;
        self.deliver(Event::QuorumChanged(q));
    }

    /// Executes `command` as if the engine had issued it (tests of the world's checks).
    pub fn apply_command(&mut self, command: Command) {
        let s = self.st();
        match command {
            Command::Relaunch {
                job,
                generation,
                site,
                placement,
                restore_from,
                reason,
            } => {
                let answer = s.relaunch(Launch {
                    job,
                    generation,
                    site,
                    placement,
                    restore_from,
                    reason,
                });
                s.inbox.extend(answer);
            }
            Command::Fence {
                job,
                generation,
                site,
            } => {
                let answer = s.fence(job, generation, site);
                s.inbox.extend(answer);
            }
            Command::MarkSiteLost { site, epoch } => s.mark_site_lost(site, epoch),
            Command::MarkSiteRecovered { site, epoch } => s.mark_site_recovered(site, epoch),
            _ => {}
        }
    }
}
