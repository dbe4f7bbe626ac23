//! Runtime rebalancing: running jobs leave borrowed offline capacity before its lending
//! window closes.
//!
//! [`plan_rebalance`] is pure: the running placement, the jobs, the policy, the instant and
//! when the moves of the past hour started in; out come the moves due now (each with its
//! reason, deadline and whole new placement), the moves still to come, and the jobs that must
//! leave but fit nowhere. The controller carries the moves out (stop with savepoint, relaunch
//! on the target, restore from the savepoint); `twinsite plan --rebalance` prints the same
//! answer for the same input.
//!
//! **What must leave.** A pod on a node of an offline pool whose lending is closed now, or
//! closes within [`LOOKAHEAD`]; a JobManager on any offline node; a pod on an offline node of
//! a job that no longer allows offline capacity; on a node of a pool lending by usage, the
//! least important of our pods while what they request is above what the node lends now (its
//! own workload grew; an unmeasured node reclaims nothing). A job's *deadline* is the earliest
//! close of the pools its pods borrow, minus the policy's lead time (now, for the other
//! reasons).
//!
//! **When.** Moves are spaced by the budget (`movesPerHour`): with jobs sorted by deadline
//! (most important first among equal deadlines), each gets the latest start that still
//! leaves every later job its slot before its own deadline. A move is due once its start has
//! come, so a window with many borrowers starts emptying early enough, and one with few
//! borrowers keeps them until its lead time. Due moves go most important job first, at most
//! what the budget has left for the past hour; the rest wait (reported with their deadline).
//!
//! **Where.** In priority order, against the running placement: the pods that leave go
//! elsewhere in the job's site (its other pods stay), else the whole job is placed again in
//! its site, else in another allowed site. Targets never include a pool that is closed or
//! closes before the schedule's horizon (lead time plus the time the budget needs for every
//! job on borrowed capacity), and a JobManager never lands on an offline node (the packer's
//! rule). A job that fits nowhere is `stuck`, reported with the reason at the time its move
//! was due: at least the lead time before its window closes.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::heuristic::Engine;
use super::{MoveEnd, PlacementOptions, PlacementRequest};
use crate::model::{
    JobDemand, JobId, JobPlacement, LendBasis, Node, OfflineLending, PlacementPolicy, PodPlacement,
    PodRole, Priority, RebalancePolicy, Resources, SiteSnapshot,
};

/// How far ahead closing windows are looked for. A lead time plus the budget's spacing for
/// every borrower beyond this would be a policy no window could honour anyway.
pub const LOOKAHEAD: TimeDelta = TimeDelta::hours(24);

/// Everything one rebalance round needs.
#[derive(Debug, Clone, Copy)]
pub struct RebalanceRequest<'a> {
    pub sites: &'a [SiteSnapshot],
    pub jobs: &'a [JobDemand],
    pub policy: &'a PlacementPolicy,
    pub rebalance: RebalancePolicy,
    /// Where the jobs run now.
    pub running: &'a [JobPlacement],
    pub at: DateTime<Utc>,
    /// When the moves already started began; those within the hour before `at` count
    /// against the budget, older ones are ignored.
    pub recent_moves: &'a [DateTime<Utc>],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebalancePlan {
    pub at: DateTime<Utc>,
    /// Due now, in the order to start them: highest priority first, then earliest deadline,
    /// then job id.
    pub moves: Vec<RebalanceMove>,
    /// Jobs that must leave borrowed capacity later, or now but the budget holds them back;
    /// by deadline.
    pub waiting: Vec<Waiting>,
    /// Jobs whose move is due but that fit nowhere else; by priority, then job id.
    pub stuck: Vec<Stuck>,
    pub budget: BudgetReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceMove {
    pub job: JobId,
    pub priority: Priority,
    pub reason: String,
    /// When its pods must be gone: the window's close minus the lead time.
    pub deadline: DateTime<Utc>,
    /// The pods that leave, where they are now.
    pub from: MoveEnd,
    /// The job's whole placement after the move.
    pub to: JobPlacement,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub job: JobId,
    pub priority: Priority,
    pub deadline: DateTime<Utc>,
    /// The latest start the schedule gives it.
    pub start_by: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stuck {
    pub job: JobId,
    pub priority: Priority,
    pub deadline: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReport {
    pub moves_per_hour: u32,
    /// Moves started in the hour before `at`, before this round.
    pub started_last_hour: u32,
    /// Moves this round may start.
    pub left: u32,
}

/// Whether an offline pool lends at `at`, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lending {
    Closed,
    /// Open now; closed from this instant on.
    Until(DateTime<Utc>),
    /// Open now and through `at + LOOKAHEAD`.
    Beyond,
}

/// Windows are minute-grained in their timezone (and timezones sit whole minutes from UTC),
/// so stepping whole UTC minutes finds the first closed instant exactly.
pub fn lending_at(lending: &OfflineLending, at: DateTime<Utc>) -> Lending {
    if !lending.is_open_at(at) {
        return Lending::Closed;
    }
    let minute = TimeDelta::minutes(1);
    let seconds_into_minute = at.timestamp().rem_euclid(60);
    let mut t = at
        - TimeDelta::seconds(seconds_into_minute)
        - TimeDelta::nanoseconds(i64::from(at.timestamp_subsec_nanos()))
        + minute;
    let end = at + LOOKAHEAD;
    while t <= end {
        if !lending.is_open_at(t) {
            return Lending::Until(t);
        }
        t += minute;
    }
    Lending::Beyond
}

/// The policy as targets may use it at `at` for a schedule reaching `horizon`: pools that
/// are closed or close before `horizon` lend nothing.
pub fn lending_view(
    policy: &PlacementPolicy,
    at: DateTime<Utc>,
    horizon: DateTime<Utc>,
) -> PlacementPolicy {
    let mut view = policy.clone();
    for pool in &mut view.pools {
        if let Some(lending) = pool.offline.as_mut() {
            let closes_soon = match lending_at(lending, at) {
                Lending::Closed => true,
                Lending::Until(t) => t <= horizon,
                Lending::Beyond => false,
            };
            if closes_soon {
                lending.windows.clear();
            }
        }
    }
    view
}

/// The policy new placements use at `at`: pools closing within the lead time lend nothing,
/// so nothing is placed where it would have to leave at once.
pub fn placement_view(
    policy: &PlacementPolicy,
    rebalance: RebalancePolicy,
    at: DateTime<Utc>,
) -> PlacementPolicy {
    lending_view(policy, at, at + lead(rebalance))
}

fn lead(rebalance: RebalancePolicy) -> TimeDelta {
    TimeDelta::from_std(rebalance.lead_time).unwrap_or(LOOKAHEAD)
}

/// Time between two moves at the budget's rate.
fn spacing(rebalance: RebalancePolicy) -> TimeDelta {
    TimeDelta::milliseconds(3_600_000 / i64::from(rebalance.moves_per_hour.max(1)))
}

/// A job with pods that must leave.
struct Candidate {
    priority: Priority,
    id: JobId,
    deadline: DateTime<Utc>,
    reason: String,
    leaving: Vec<PodPlacement>,
    start_by: DateTime<Utc>,
}

/// Plans the moves due at `req.at`. Never fails: what cannot move is listed in `stuck`.
pub fn plan_rebalance(req: &RebalanceRequest) -> RebalancePlan {
    let at = req.at;
    let lead = lead(req.rebalance);
    let spacing = spacing(req.rebalance);
    let started_last_hour = req
        .recent_moves
        .iter()
        .filter(|&&t| t > at - TimeDelta::hours(1) && t <= at)
        .count();
    let started_last_hour = u32::try_from(started_last_hour).unwrap_or(u32::MAX);
    let budget = BudgetReport {
        moves_per_hour: req.rebalance.moves_per_hour,
        started_last_hour,
        left: req
            .rebalance
            .moves_per_hour
            .saturating_sub(started_last_hour),
    };

    let pools: Vec<Option<Lending>> = req
        .policy
        .pools
        .iter()
        .map(|p| p.offline.as_ref().map(|l| lending_at(l, at)))
        .collect();
    let mut candidates = candidates(req, &pools, lead);

    // Latest starts, backwards from the last deadline, one spacing apart.
    candidates.sort_by(|a, b| {
        (a.deadline, std::cmp::Reverse(a.priority), &a.id).cmp(&(
            b.deadline,
            std::cmp::Reverse(b.priority),
            &b.id,
        ))
    });
    let mut next_start: Option<DateTime<Utc>> = None;
    for c in candidates.iter_mut().rev() {
        let start = match next_start {
            Some(next) => c.deadline.min(next - spacing),
            None => c.deadline,
        };
        c.start_by = start;
        next_start = Some(start);
    }
    let horizon = (at + lead + spacing * i32::try_from(candidates.len()).unwrap_or(i32::MAX))
        .min(at + LOOKAHEAD);

    let view = lending_view(req.policy, at, horizon);
    let placement = PlacementRequest {
        sites: req.sites,
        jobs: req.jobs,
        policy: &view,
        running: &[],
        at,
        options: PlacementOptions::default(),
    };
    let mut engine = Engine::new(&placement, None);
    engine.adopt(req.running);

    let (mut due, later): (Vec<Candidate>, Vec<Candidate>) =
        candidates.into_iter().partition(|c| c.start_by <= at);
    due.sort_by(|a, b| {
        (std::cmp::Reverse(a.priority), a.deadline, &a.id).cmp(&(
            std::cmp::Reverse(b.priority),
            b.deadline,
            &b.id,
        ))
    });
    let mut moves = Vec::new();
    let mut stuck = Vec::new();
    let mut waiting: Vec<Waiting> = later
        .into_iter()
        .map(|c| Waiting {
            reason: c.reason,
            job: c.id,
            priority: c.priority,
            deadline: c.deadline,
            start_by: c.start_by,
        })
        .collect();
    for c in due {
        if moves.len() >= budget.left as usize {
            waiting.push(Waiting {
                reason: format!(
                    "{}; held back by the rebalance budget ({} moves started in the last hour, {} per hour)",
                    c.reason, budget.started_last_hour, budget.moves_per_hour
                ),
                job: c.id,
                priority: c.priority,
                deadline: c.deadline,
                start_by: c.start_by,
            });
            continue;
        }
        let Some(j) = engine.job_by_id(&c.id) else {
            // Placement refuses the job outright (`placement::refusal`): not ours to move.
            continue;
        };
        let leaving: Vec<(PodRole, u32)> = c.leaving.iter().map(|p| (p.role, p.index)).collect();
        let from_site = engine.placement_of(j).map(|p| p.site);
        match engine.relocate(j, &leaving) {
            Ok(()) => {
                let (Some(to), Some(site)) = (engine.placement_of(j), from_site) else {
                    continue;
                };
                let mut pods = c.leaving;
                pods.sort();
                moves.push(RebalanceMove {
                    job: c.id,
                    priority: c.priority,
                    reason: c.reason,
                    deadline: c.deadline,
                    from: MoveEnd { site, pods },
                    to,
                });
            }
            Err(why) => stuck.push(Stuck {
                reason: format!("{}; fits nowhere else: {why}", c.reason),
                job: c.id,
                priority: c.priority,
                deadline: c.deadline,
            }),
        }
    }
    waiting.sort_by(|a, b| (a.deadline, &a.job).cmp(&(b.deadline, &b.job)));
    RebalancePlan {
        at,
        moves,
        waiting,
        stuck,
        budget,
    }
}

/// Every running job with pods that must leave, with its deadline and the reason.
fn candidates(
    req: &RebalanceRequest,
    pools: &[Option<Lending>],
    lead: TimeDelta,
) -> Vec<Candidate> {
    let at = req.at;
    let mut job_index: HashMap<&JobId, usize> = HashMap::new();
    for (i, job) in req.jobs.iter().enumerate() {
        job_index.entry(&job.id).or_insert(i);
    }
    // Per site (the first snapshot of an id wins, as in placement), each node's pool.
    let mut node_pool: HashMap<(&str, &str), Option<usize>> = HashMap::new();
    let mut seen_sites = std::collections::BTreeSet::new();
    for snap in req.sites {
        if !seen_sites.insert(&snap.id) {
            continue;
        }
        for node in &snap.nodes {
            node_pool
                .entry((snap.id.0.as_str(), node.name.as_str()))
                .or_insert_with(|| {
                    req.policy
                        .pools
                        .iter()
                        .position(|p| p.matches(&snap.id, node))
                });
        }
    }
    let reclaimed = reclaimed_pods(req, pools, &job_index);
    let mut seen_jobs = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for running in req.running {
        if !seen_jobs.insert(&running.job) {
            continue;
        }
        let Some(&j) = job_index.get(&running.job) else {
            continue;
        };
        let job = &req.jobs[j];
        // (deadline, reason) of the most urgent pod, and every pod that leaves.
        let mut urgent: Option<(DateTime<Utc>, String)> = None;
        let mut leaving = Vec::new();
        for pod in &running.pods {
            let Some(&Some(p)) = node_pool.get(&(running.site.0.as_str(), pod.node.as_str()))
            else {
                continue;
            };
            let Some(lending) = pools.get(p).copied().flatten() else {
                continue;
            };
            let pool = &req.policy.pools[p].name;
            let node = &pod.node;
            let why = if pod.role == PodRole::Jobmanager {
                Some((
                    at,
                    format!("JobManager on offline node {node} (pool {pool})"),
                ))
            } else if !job.allow_offline {
                Some((
                    at,
                    format!("the job no longer allows offline capacity: node {node} (pool {pool})"),
                ))
            } else {
                match lending {
                    Lending::Closed => Some((
                        at,
                        format!("lending window of pool {pool} is closed: pods on node {node}"),
                    )),
                    Lending::Until(close) => Some((
                        close - lead,
                        format!(
                            "lending window of pool {pool} closes at {} (lead time {}): pods on node {node}",
                            close.to_rfc3339(),
                            humanize(lead)
                        ),
                    )),
                    Lending::Beyond => None,
                }
            };
            let Some((deadline, reason)) = why else {
                continue;
            };
            leaving.push(pod.clone());
            if urgent.as_ref().is_none_or(|(d, _)| deadline < *d) {
                urgent = Some((deadline, reason));
            }
        }
        // Pods a node reclaims leave now, whatever else they leave for later.
        for (pod, why) in reclaimed.get(&running.job).into_iter().flatten() {
            if !leaving.contains(pod) {
                leaving.push(pod.clone());
            }
            if urgent.as_ref().is_none_or(|(d, _)| at < *d) {
                urgent = Some((at, why.clone()));
            }
        }
        let Some((deadline, reason)) = urgent else {
            continue;
        };
        let reason = if leaving.len() > 1 {
            format!("{reason} ({} pods leave)", leaving.len())
        } else {
            reason
        };
        out.push(Candidate {
            priority: job.priority,
            id: job.id.clone(),
            deadline,
            reason,
            leaving,
            start_by: deadline,
        });
    }
    out
}

/// One of our pods on a lending node: its job's priority, the job, the pod, its request.
type Borrower<'r> = (Priority, &'r JobId, &'r PodPlacement, Resources);

/// Pods that must leave a node of an open pool lending by usage because the node's own
/// workload grew: what our pods request there is above what the node lends now. The least
/// important pods leave first (then the later job id, then the higher pod index), only as
/// many as bring the node back under its limit. A node without a measurement moves nobody:
/// a missing figure is not a grown workload.
fn reclaimed_pods<'r>(
    req: &'r RebalanceRequest,
    pools: &[Option<Lending>],
    job_index: &HashMap<&JobId, usize>,
) -> HashMap<&'r JobId, Vec<(PodPlacement, String)>> {
    let mut nodes: HashMap<(&str, &str), (&Node, &OfflineLending, &str)> = HashMap::new();
    for snap in req.sites {
        for node in &snap.nodes {
            let Some(p) = req
                .policy
                .pools
                .iter()
                .position(|p| p.matches(&snap.id, node))
            else {
                continue;
            };
            let pool = &req.policy.pools[p];
            let (Some(lending), Some(open)) =
                (pool.offline.as_ref(), pools.get(p).copied().flatten())
            else {
                continue;
            };
            if lending.lend_by == LendBasis::Usage
                && node.owner_usage.is_some()
                && open != Lending::Closed
            {
                nodes
                    .entry((snap.id.0.as_str(), node.name.as_str()))
                    .or_insert((node, lending, pool.name.as_str()));
            }
        }
    }
    if nodes.is_empty() {
        return HashMap::new();
    }
    // Our pods on each such node, with their request and the job's priority.
    let mut on_node: HashMap<(&str, &str), Vec<Borrower>> = HashMap::new();
    let mut seen_jobs = std::collections::BTreeSet::new();
    for running in req.running {
        if !seen_jobs.insert(&running.job) {
            continue;
        }
        let Some(&j) = job_index.get(&running.job) else {
            continue;
        };
        let job = &req.jobs[j];
        for pod in &running.pods {
            let key = (running.site.0.as_str(), pod.node.as_str());
            if nodes.contains_key(&key) {
                let request = match pod.role {
                    PodRole::Jobmanager => job.job_manager,
                    PodRole::Taskmanager => job.task_manager,
                };
                on_node
                    .entry(key)
                    .or_default()
                    .push((job.priority, &job.id, pod, request));
            }
        }
    }
    let mut out: HashMap<&JobId, Vec<(PodPlacement, String)>> = HashMap::new();
    for (key, mut pods) in on_node {
        let (node, lending, pool) = nodes[&key];
        let cap = lending.borrowable_on(node);
        let mut borrowed = pods
            .iter()
            .fold(Resources::ZERO, |sum, (_, _, _, r)| sum + *r);
        if borrowed.fits_in(&cap) {
            continue;
        }
        let usage = node.owner_usage.unwrap_or(Resources::ZERO);
        // Least important first; among equals the later job and pod leave first.
        pods.sort_by(|a, b| {
            (
                a.0,
                std::cmp::Reverse(a.1),
                std::cmp::Reverse((a.2.role, a.2.index)),
            )
                .cmp(&(
                    b.0,
                    std::cmp::Reverse(b.1),
                    std::cmp::Reverse((b.2.role, b.2.index)),
                ))
        });
        let reason = format!(
            "node {} (pool {pool}) needs its capacity back: its own workload uses {usage}, so it lends {cap}, and our pods request {borrowed}",
            node.name
        );
        for (_, job, pod, request) in pods {
            if borrowed.fits_in(&cap) {
                break;
            }
            borrowed = borrowed.saturating_sub(&request);
            out.entry(job)
                .or_default()
                .push((pod.clone(), reason.clone()));
        }
    }
    out
}

fn humanize(d: TimeDelta) -> String {
    let minutes = d.num_minutes();
    if minutes > 0 && d == TimeDelta::minutes(minutes) {
        format!("{minutes}m")
    } else {
        format!("{}s", d.num_seconds())
    }
}
