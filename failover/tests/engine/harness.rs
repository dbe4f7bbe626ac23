//! The engine test harness: an engine, a placer and the records its `Persist`s wrote, fed
//! events at given instants; and the small builders and readers of events and commands the
//! tests share.

use super::prelude::*;

pub struct Harness {
    pub engine: Engine,
    pub placer: TestPlacer,
    /// Latest persisted record per key, as a driver's store would hold them.
    pub store: BTreeMap<String, Record>,
}

impl Harness {
    pub fn new(adjust: impl FnOnce(&mut EngineConfig)) -> Self {
        let mut config = EngineConfig::new(vec![site("a"), site("b")]);
        adjust(&mut config);
        let mut h = Harness {
            engine: Engine::new(config, t(0)),
            placer: TestPlacer::default(),
            store: BTreeMap::new(),
        };
        h.step(Event::QuorumChanged(true), t(0));
        h
    }

    pub fn step(&mut self, event: Event, at: Timestamp) -> Vec<Command> {
        let commands = self.engine.step(event, at, &self.placer);
        for c in &commands {
            if let Command::Persist(r) = c {
                self.store.insert(key(r), r.clone());
            }
        }
        commands
    }

    pub fn step_all(&mut self, events: Vec<Event>, at: Timestamp) -> Vec<Command> {
        let commands = self.engine.step_all(events, at, &self.placer);
        for c in &commands {
            if let Command::Persist(r) = c {
                self.store.insert(key(r), r.clone());
            }
        }
        commands
    }

    pub fn act(&mut self, event: Event, at: Timestamp) -> Vec<Command> {
        actions(&self.step(event, at))
    }

    pub fn register(&mut self, name: &str, priority: Priority, mode: FailoverMode, at_site: &str) {
        self.step(
            Event::JobRegistered {
                spec: Box::new(spec(name, priority, mode, at_site)),
                site: site(at_site),
                generation: 1,
            },
            t(0),
        );
    }

    pub fn complete(&mut self, name: &str, c: CheckpointPointer) {
        self.step(
            Event::CheckpointCompleted {
                job: job(name),
                checkpoint: c,
            },
            t(0),
        );
    }

    pub fn replicated(&mut self, name: &str, c: CheckpointPointer) {
        self.step(
            Event::CheckpointReplicated {
                job: job(name),
                replica: c,
            },
            t(0),
        );
    }

    /// A snapshot of `at_site` at `at`: nodes `<site>-1..3`, heart-beating at `at` unless
    /// listed in `silent_since`. Returns the actions it led to.
    pub fn observe(
        &mut self,
        at_site: &str,
        at: Timestamp,
        silent_since: &[(usize, Timestamp)],
        jobs: Vec<JobObserved>,
    ) -> Vec<Command> {
        actions(&self.observe_all(at_site, at, silent_since, jobs))
    }

    /// `observe`, returning every command (writes and audits too).
    pub fn observe_all(
        &mut self,
        at_site: &str,
        at: Timestamp,
        silent_since: &[(usize, Timestamp)],
        jobs: Vec<JobObserved>,
    ) -> Vec<Command> {
        let nodes = (1..=3)
            .map(|i| NodeHeartbeat {
                name: format!("{at_site}-{i}"),
                last_heartbeat: Some(
                    silent_since
                        .iter()
                        .find(|(n, _)| *n == i)
                        .map_or(at, |(_, since)| *since),
                ),
            })
            .collect();
        self.step(
            Event::SnapshotObserved(SiteObservation {
                site: site(at_site),
                observed_at: at,
                nodes,
                jobs,
            }),
            at,
        )
    }

    /// `name` runs at `generation` in site a with its JobManager on node a-1, silent since
    /// 0 s, until the node grace runs out at 21 s; returns the actions of that instant.
    pub fn lose_job_manager_node(&mut self, name: &str, generation: u64) -> Vec<Command> {
        let running = || {
            vec![observed(
                name,
                generation,
                RunState::Running,
                0,
                "a-1",
                "a-2",
            )]
        };
        for at in [0, 10, 20] {
            self.keep_alive(t(at));
            self.observe("a", t(at), &[(1, t(0))], running());
        }
        let mut acted = self.observe("a", t(21), &[(1, t(0))], running());
        acted.extend(self.keep_alive(t(21)));
        acted
    }

    /// Peer reports for both sites; returns the actions they led to (ticks judge too).
    pub fn keep_alive(&mut self, at: Timestamp) -> Vec<Command> {
        let mut acted = Vec::new();
        for s in ["a", "b"] {
            acted.extend(self.act(
                Event::PeerReport {
                    site: site(s),
                    last_contact: at,
                },
                at,
            ));
        }
        acted
    }
}

pub fn key(r: &Record) -> String {
    match r {
        Record::Job(j) => format!("job/{}", j.id()),
        Record::Site(s) => format!("site/{}", s.id),
        Record::Operation(o) => format!("op/{}", o.id),
    }
}

pub fn observed(
    name: &str,
    generation: u64,
    state: RunState,
    restarts: u32,
    jm: &str,
    tm: &str,
) -> JobObserved {
    JobObserved {
        job: job(name),
        generation,
        state,
        restarts,
        job_manager_node: Some(jm.to_string()),
        task_manager_nodes: vec![tm.to_string()],
        latest_checkpoint: None,
    }
}

pub fn fence(name: &str, generation: u64, at_site: &str) -> Command {
    Command::Fence {
        job: job(name),
        generation,
        site: site(at_site),
    }
}

pub fn fenced(name: &str, generation: u64, at_site: &str) -> Event {
    Event::Fenced {
        job: job(name),
        generation,
        site: site(at_site),
    }
}

pub fn relaunches(commands: &[Command]) -> Vec<(String, u64, String, Option<u64>)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Relaunch {
                job,
                generation,
                site,
                restore_from,
                ..
            } => Some((
                job.0.clone(),
                *generation,
                site.0.clone(),
                restore_from.as_ref().map(|r| r.id),
            )),
            _ => None,
        })
        .collect()
}

pub fn reports(commands: &[Command]) -> Vec<RecoveryReport> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::ReportRecovery(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn lose_site_b(h: &mut Harness) -> Vec<Command> {
    actions(&lose_site_b_all(h))
}

/// `lose_site_b`, returning every command of the pass that judges the loss.
pub fn lose_site_b_all(h: &mut Harness) -> Vec<Command> {
    h.register(
        "j-normal",
        Priority::Normal,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.register(
        "j-crit",
        Priority::Critical,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.register("j-high", Priority::High, FailoverMode::RestoreRequired, "b");
    h.register(
        "j-norep",
        Priority::Normal,
        FailoverMode::RestoreRequired,
        "b",
    );
    h.register(
        "j-fresh",
        Priority::BestEffort,
        FailoverMode::FreshStartAllowed,
        "b",
    );
    h.replicated("j-normal", checkpoint("a", 1, 8, t(40)));
    h.complete("j-normal", checkpoint("b", 1, 10, t(50)));
    h.replicated("j-crit", checkpoint("a", 1, 3, t(30)));
    h.replicated("j-high", checkpoint("a", 1, 7, t(45)));
    h.complete("j-norep", checkpoint("b", 1, 2, t(20)));
    h.observe("b", t(60), &[], vec![]);
    h.observe("a", t(60), &[], vec![]);
    assert_eq!(
        h.observe("a", t(90), &[], vec![]),
        vec![],
        "30 s of silence is still within the grace"
    );
    h.observe_all("a", t(91), &[], vec![])
}

pub fn lose_and_return_site_b(auto_failback: bool) -> Vec<Command> {
    let mut h = Harness::new(|c| c.auto_failback = auto_failback);
    h.register("j1", Priority::Normal, FailoverMode::RestoreRequired, "b");
    h.replicated("j1", checkpoint("a", 1, 3, t(0)));
    h.observe("b", t(0), &[], vec![]);
    h.observe("a", t(31), &[], vec![]);
    h.act(
        Event::LaunchSucceeded {
            job: job("j1"),
            generation: 2,
            site: site("a"),
        },
        t(32),
    );
    h.observe("a", t(200), &[], vec![]);
    h.observe(
        "b",
        t(200),
        &[],
        vec![observed("j1", 1, RunState::Restarting, 0, "b-1", "b-2")],
    );
    h.act(fenced("j1", 1, "b"), t(201))
}

/// The answers to one round of relaunches, all successful.
pub fn launch_answers(round: &[Command]) -> Vec<Event> {
    round
        .iter()
        .filter_map(|c| match c {
            Command::Relaunch {
                job,
                generation,
                site,
                ..
            } => Some(Event::LaunchSucceeded {
                job: job.clone(),
                generation: *generation,
                site: site.clone(),
            }),
            _ => None,
        })
        .collect()
}

pub fn register_operator_only(h: &mut Harness, name: &str, at_site: &str) {
    let mut spec = spec(
        name,
        Priority::Critical,
        FailoverMode::RestoreRequired,
        at_site,
    );
    spec.site_moves = SiteMoves::OperatorOnly;
    h.step(
        Event::JobRegistered {
            spec: Box::new(spec),
            site: site(at_site),
            generation: 1,
        },
        t(0),
    );
}

pub fn not_relaunched(commands: &[Command]) -> Vec<(String, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::ReportNotRelaunched { job, reason, .. } => {
                Some((job.0.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect()
}
