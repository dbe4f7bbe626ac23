//! A scenario's timed events, checked against what it declares and turned into `Action`s.
//! It must never let an event name a site, node or job the scenario lacks.

use std::fmt;
use std::time::Duration;

use scheduler::model::{JobId, SiteId};

use super::*;

/// What one event does, once validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    NodeLost { site: SiteId, node: String },
    NodeReturns { site: SiteId, node: String },
    SiteLost(SiteId),
    SiteReturns(SiteId),
    Partition { site: SiteId, peer_sees: bool },
    Heal(Option<SiteId>),
    Quorum(bool),
    LeaderCrash(Option<crate::sim::world::CrashTrigger>),
    JobFails(JobId),
    ReplicationDelay(Duration),
    Ops(crate::engine::OpsRequest),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::engine::OpsRequest as R;
        use crate::sim::world::CrashTrigger as C;
        match self {
            Action::NodeLost { site, node } => write!(f, "node-lost {node} (site {site})"),
            Action::NodeReturns { site, node } => write!(f, "node-returns {node} (site {site})"),
            Action::SiteLost(s) => write!(f, "site-lost {s}"),
            Action::SiteReturns(s) => write!(f, "site-returns {s}"),
            Action::Partition { site, peer_sees } => write!(
                f,
                "partition: the controller cannot reach site {site}; the peer {} it",
                if *peer_sees {
                    "still hears"
                } else {
                    "does not hear"
                }
            ),
            Action::Heal(None) => write!(f, "heal: every partition ends"),
            Action::Heal(Some(s)) => write!(f, "heal: the partition of site {s} ends"),
            Action::Quorum(q) => write!(
                f,
                "quorum with the witness {}",
                if *q { "held" } else { "lost" }
            ),
            Action::LeaderCrash(None) => write!(f, "leader-crash now"),
            Action::LeaderCrash(Some(C::AfterCommands(n))) => {
                write!(f, "leader-crash armed: after {n} commands of the next list")
            }
            Action::LeaderCrash(Some(C::AfterRelaunches(n))) => {
                write!(f, "leader-crash armed: right after {n} more relaunches")
            }
            Action::JobFails(j) => write!(f, "job-fails {j}"),
            Action::ReplicationDelay(d) => {
                write!(
                    f,
                    "replication-delay {}",
                    crate::sim::report::fmt_duration(*d)
                )
            }
            Action::Ops(R::Failover {
                from,
                to,
                mode,
                dry_run,
            }) => write!(
                f,
                "ops: failover {from} -> {to} ({mode:?}{})",
                if *dry_run { ", dry run" } else { "" }
            ),
            Action::Ops(R::Failback {
                from,
                to,
                mode,
                dry_run,
            }) => write!(
                f,
                "ops: failback {from} -> {to} ({mode:?}{})",
                if *dry_run { ", dry run" } else { "" }
            ),
            Action::Ops(R::Cancel { op }) => write!(f, "ops: cancel operation {op}"),
        }
    }
}

impl Scenario {
    pub(super) fn action(
        &self,
        c: &Checker,
        i: usize,
        at: Option<&serde_saphyr::Location>,
        e: &EventSpec,
        known: &Known,
    ) -> Result<Action, ScenarioError> {
        let (sites, node_names, jobs) = (&known.sites, &known.nodes, known.jobs);
        use crate::engine::OpsRequest;
        use crate::sim::world::CrashTrigger;
        let field = |f: &str| format!("events[{i}].{f}");
        let site = |f: &str, name: &str| {
            if sites.iter().any(|s| s.0 == name) {
                Ok(SiteId(name.to_string()))
            } else {
                Err(c.err(
                    at,
                    field(f),
                    format!(
                        "unknown site {name:?}; the sites are {}",
                        sites
                            .iter()
                            .map(|s| s.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        let node = |f: &str, r: &NodeRef| {
            let found = sites.iter().find(|s| {
                r.site.as_ref().is_none_or(|want| &s.0 == want)
                    && node_names.contains(&(s.0.as_str(), r.node.as_str()))
            });
            match found {
                Some(s) => Ok(((*s).clone(), r.node.clone())),
                None => Err(c.err(
                    at,
                    field(f),
                    match &r.site {
                        Some(s) => format!("node {:?} is not a node of site {s:?}", r.node),
                        None => format!("unknown node {:?}", r.node),
                    },
                )),
            }
        };
        let other = |from: &SiteId| {
            sites
                .iter()
                .find(|s| **s != from)
                .map_or_else(|| from.clone(), |s| (*s).clone())
        };
        let mut found: Vec<(&str, Action)> = Vec::new();
        if let Some(r) = &e.node_lost {
            let (site, node) = node("node-lost", r)?;
            found.push(("node-lost", Action::NodeLost { site, node }));
        }
        if let Some(r) = &e.node_returns {
            let (site, node) = node("node-returns", r)?;
            found.push(("node-returns", Action::NodeReturns { site, node }));
        }
        if let Some(s) = &e.site_lost {
            found.push(("site-lost", Action::SiteLost(site("site-lost", s)?)));
        }
        if let Some(s) = &e.site_returns {
            found.push((
                "site-returns",
                Action::SiteReturns(site("site-returns", s)?),
            ));
        }
        if let Some(p) = &e.partition {
            found.push((
                "partition",
                Action::Partition {
                    site: site("partition.controller-from", &p.controller_from)?,
                    peer_sees: p.peer_sees.unwrap_or(true),
                },
            ));
        }
        if let Some(h) = &e.heal {
            let which = match h {
                Flag::With(HealSpec { site: Some(s) }) => Some(site("heal.site", s)?),
                _ => None,
            };
            found.push(("heal", Action::Heal(which)));
        }
        if let Some(q) = e.quorum {
            found.push(("quorum", Action::Quorum(q)));
        }
        if let Some(crash) = &e.leader_crash {
            let trigger = match crash {
                Flag::Plain => None,
                Flag::With(CrashSpec {
                    after_commands: Some(n),
                    after_relaunches: None,
                }) => Some(CrashTrigger::AfterCommands(*n)),
                Flag::With(CrashSpec {
                    after_commands: None,
                    after_relaunches: Some(n),
                }) if *n > 0 => Some(CrashTrigger::AfterRelaunches(*n)),
                Flag::With(CrashSpec {
                    after_commands: None,
                    after_relaunches: None,
                }) => None,
                Flag::With(_) => {
                    return Err(c.err(
                        at,
                        field("leader-crash"),
                        "give at most one of after-commands and after-relaunches (at least 1)",
                    ));
                }
            };
            found.push(("leader-crash", Action::LeaderCrash(trigger)));
        }
        if let Some(j) = &e.job_fails {
            if !jobs.contains(j) {
                return Err(c.err(at, field("job-fails"), format!("unknown job {j:?}")));
            }
            let (ns, name) = j.split_once('/').unwrap_or(("", ""));
            found.push(("job-fails", Action::JobFails(JobId::new(ns, name))));
        }
        if let Some(d) = e.replication_delay {
            within_span(c, at, field("replication-delay"), d.0)?;
            found.push(("replication-delay", Action::ReplicationDelay(d.0)));
        }
        if let Some(ops) = &e.ops {
            let (m, failback, f) = match ops {
                OpsSpec::Failover(m) => (m, false, "ops.failover"),
                OpsSpec::Failback(m) => (m, true, "ops.failback"),
            };
            let from = site(&format!("{f}.from"), &m.from)?;
            let to = match &m.to {
                Some(t) => site(&format!("{f}.to"), t)?,
                None => other(&from),
            };
            let request = if failback {
                OpsRequest::Failback {
                    from,
                    to,
                    mode: m.mode,
                    dry_run: m.dry_run,
                }
            } else {
                OpsRequest::Failover {
                    from,
                    to,
                    mode: m.mode,
                    dry_run: m.dry_run,
                }
            };
            found.push(("ops", Action::Ops(request)));
        }
        if let Some(op) = e.cancel {
            found.push(("cancel", Action::Ops(OpsRequest::Cancel { op })));
        }
        match found.len() {
            1 => Ok(found.remove(0).1),
            0 => Err(c.err(
                at,
                format!("events[{i}]"),
                "no event given: add one of node-lost, node-returns, site-lost, site-returns, partition, heal, quorum, leader-crash, job-fails, replication-delay, ops, cancel",
            )),
            _ => Err(c.err(
                at,
                format!("events[{i}]"),
                format!(
                    "one event per entry, found {}: split them into entries with the same `at`",
                    found
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            )),
        }
    }
}
