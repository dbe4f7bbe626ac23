//! A scenario checked into a `Plan`: sites, jobs, engine and world knobs, within the limits.
//! It must never accept a value unchecked: every refusal names source, line, column and field.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use scheduler::limits::{
    MAX_SCENARIO_JOBS, MAX_SCENARIO_NODES_PER_SITE, MAX_SCENARIO_STEPS, MAX_SCENARIO_WORK,
    MAX_TASK_MANAGERS_PER_JOB, MIN_CHECKPOINT_INTERVAL,
};
use scheduler::model::{JobDemand, JobId, Priority, Resources, SiteConstraint, SiteId, TenantId};

use super::*;

impl Scenario {
    /// Checks every reference and value, and resolves defaults.
    pub fn plan(&self) -> Result<Plan, ScenarioError> {
        let c = Checker {
            source: &self.source,
        };
        let duration = self.duration.0;
        if duration.is_zero() {
            return Err(c.err(None, "duration", "must be longer than zero"));
        }
        within_span(&c, None, "duration", duration)?;
        self.check_knob_spans(&c)?;
        let step = self.step.map_or(Duration::from_secs(1), |s| s.0);
        if step.is_zero() || step > duration {
            return Err(c.err(
                None,
                "step",
                format!(
                    "must be longer than zero and at most the duration ({})",
                    crate::sim::report::fmt_duration(duration)
                ),
            ));
        }
        let steps = duration.as_nanos().div_ceil(step.as_nanos());
        if steps > u128::from(MAX_SCENARIO_STEPS) {
            return Err(c.err(
                None,
                "step",
                format!(
                    "{steps} steps, more than {MAX_SCENARIO_STEPS}: make the step longer or the duration shorter"
                ),
            ));
        }
        if self.jobs.len() > MAX_SCENARIO_JOBS {
            return Err(c.err(
                None,
                "jobs",
                format!(
                    "{} jobs, more than the {MAX_SCENARIO_JOBS} a scenario may have",
                    self.jobs.len()
                ),
            ));
        }
        if self.sites.len() != 2 {
            return Err(c.err(
                None,
                "sites",
                format!("expected exactly two sites, found {}", self.sites.len()),
            ));
        }
        let mut sites = Vec::new();
        for (name, spec) in &self.sites {
            let field = format!("sites.{name}");
            if name.is_empty() || name.contains(['/', ' ']) {
                return Err(c.err(
                    None,
                    field,
                    "a site name must not be empty nor contain '/' or spaces",
                ));
            }
            if spec.nodes == 0 || spec.nodes > MAX_SCENARIO_NODES_PER_SITE {
                return Err(c.err(
                    None,
                    format!("{field}.nodes"),
                    format!(
                        "must be between 1 and {MAX_SCENARIO_NODES_PER_SITE}, found {}",
                        spec.nodes
                    ),
                ));
            }
            let cpu = quantity(&spec.cpu, "16", true)
                .map_err(|m| c.err(None, format!("{field}.cpu"), m))?;
            let memory = quantity(&spec.memory, "64Gi", false)
                .map_err(|m| c.err(None, format!("{field}.memory"), m))?;
            let pods = i64::from(spec.pods.unwrap_or(110));
            let nodes: Vec<(String, Resources)> = (1..=spec.nodes)
                .map(|i| (format!("{name}-{i}"), Resources::new(cpu, memory, pods)))
                .collect();
            sites.push((SiteId(name.clone()), nodes));
        }
        let site_names: Vec<String> = self.sites.keys().cloned().collect();
        let site_of = |name: &str| site_names.iter().any(|s| s == name);
        let node_names: BTreeSet<(&str, &str)> = sites
            .iter()
            .flat_map(|(s, nodes)| nodes.iter().map(move |(n, _)| (s.0.as_str(), n.as_str())))
            .collect();
        let has_node = |site: &str, node: &str| node_names.contains(&(site, node));
        let mut jobs = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, spanned) in self.jobs.iter().enumerate() {
            let j = &spanned.value;
            let at = Some(&spanned.referenced);
            let field = |f: &str| format!("jobs[{i}].{f}");
            let valid_id =
                j.id.split_once('/')
                    .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'));
            if !valid_id {
                return Err(c.err(at, field("id"), format!("{:?} is not namespace/name", j.id)));
            }
            if !ids.insert(j.id.clone()) {
                return Err(c.err(at, field("id"), format!("job {} is defined twice", j.id)));
            }
            if !site_of(&j.site) {
                return Err(c.err(
                    at,
                    field("site"),
                    format!(
                        "unknown site {:?}; the sites are {}",
                        j.site,
                        site_names.join(", ")
                    ),
                ));
            }
            let task_managers = j.task_managers.unwrap_or(1);
            if task_managers == 0 || task_managers > MAX_TASK_MANAGERS_PER_JOB {
                return Err(c.err(
                    at,
                    field("task-managers"),
                    format!(
                        "must be between 1 and {MAX_TASK_MANAGERS_PER_JOB}, found {task_managers}"
                    ),
                ));
            }
            let size = |p: &Option<PodSize>, f: &str, cpu: &str, mem: &str| {
                let (cq, mq) = p
                    .as_ref()
                    .map_or((None, None), |p| (p.cpu.clone(), p.memory.clone()));
                let cpu = quantity(&cq, cpu, true)
                    .map_err(|m| c.err(at, field(&format!("{f}.cpu")), m))?;
                let mem = quantity(&mq, mem, false)
                    .map_err(|m| c.err(at, field(&format!("{f}.memory")), m))?;
                Ok::<_, ScenarioError>(Resources::new(cpu, mem, 1))
            };
            let job_manager = size(&j.job_manager, "job-manager", "1", "2Gi")?;
            let task_manager = size(&j.task_manager, "task-manager", "2", "4Gi")?;
            let interval = j
                .checkpoint_interval
                .map_or(Duration::from_secs(60), |d| d.0);
            within_span(&c, at, field("checkpoint-interval"), interval)?;
            if interval < MIN_CHECKPOINT_INTERVAL {
                return Err(c.err(
                    at,
                    field("checkpoint-interval"),
                    format!(
                        "must be at least {}ms (Flink's shortest checkpoint interval), found {}",
                        MIN_CHECKPOINT_INTERVAL.as_millis(),
                        humantime::format_duration(interval)
                    ),
                ));
            }
            let nodes = j.nodes.clone().unwrap_or_default();
            if !nodes.is_empty() {
                if nodes.len() != 1 + task_managers as usize {
                    return Err(c.err(
                        at,
                        field("nodes"),
                        format!(
                            "lists {} nodes; expected {} (the JobManager's, then one per TaskManager)",
                            nodes.len(),
                            1 + task_managers
                        ),
                    ));
                }
                if let Some(n) = nodes.iter().find(|n| !has_node(&j.site, n)) {
                    return Err(c.err(
                        at,
                        field("nodes"),
                        format!("node {n:?} is not a node of site {}", j.site),
                    ));
                }
            }
            let allowed: Vec<SiteId> = match &j.allowed_sites {
                None => Vec::new(),
                Some(list) => {
                    if let Some(s) = list.iter().find(|s| !site_of(s)) {
                        return Err(c.err(
                            at,
                            field("allowed-sites"),
                            format!("unknown site {s:?}"),
                        ));
                    }
                    if !list.contains(&j.site) {
                        return Err(c.err(
                            at,
                            field("allowed-sites"),
                            format!("must include the job's own site {}", j.site),
                        ));
                    }
                    list.iter().map(|s| SiteId(s.clone())).collect()
                }
            };
            let (ns, name) = j.id.split_once('/').unwrap_or(("", ""));
            jobs.push(JobPlan {
                demand: JobDemand {
                    id: JobId::new(ns, name),
                    tenant: TenantId(j.tenant.clone().unwrap_or_else(|| ns.to_string())),
                    priority: j.priority.unwrap_or(Priority::Normal),
                    job_manager,
                    task_manager,
                    task_managers,
                    sites: SiteConstraint {
                        preferred: Some(SiteId(j.site.clone())),
                        allowed,
                    },
                    node_selector: BTreeMap::new(),
                    node_affinity: None,
                    tolerations: Vec::new(),
                    allow_offline: false,
                },
                mode: j.failover.unwrap_or_default(),
                site_moves: j.site_moves.unwrap_or_default(),
                checkpoint_interval: interval,
                replicate: j.replicate.unwrap_or(true),
                nodes,
                line: Some(spanned.referenced.line()).filter(|l| *l > 0),
            });
        }
        self.check_work(&c, duration, steps, &jobs)?;
        let mut engine =
            crate::engine::EngineConfig::new(sites.iter().map(|(s, _)| s.clone()).collect());
        let k = &self.engine;
        let set = |v: Option<Dur>, d: &mut Duration| {
            if let Some(v) = v {
                *d = v.0;
            }
        };
        set(k.node_grace, &mut engine.node_grace);
        set(k.site_grace, &mut engine.site.grace);
        set(k.site_suspect_after, &mut engine.site.suspect_after);
        set(
            k.task_manager_recovery_bound,
            &mut engine.task_manager_recovery_bound,
        );
        set(k.fence_retry, &mut engine.fence_retry);
        if let Some(v) = k.crash_loop_restarts {
            engine.crash_loop_restarts = v;
        }
        if let Some(v) = k.relaunches_before_other_site {
            engine.relaunches_before_other_site = v;
        }
        if let Some(v) = k.max_in_flight {
            if v == 0 {
                return Err(c.err(None, "engine.max-in-flight", "must be at least 1"));
            }
            engine.max_in_flight = v;
        }
        // Zero would leave an operation's later jobs waiting forever.
        if let Some(v) = k.launch_rate {
            if v == 0 {
                return Err(c.err(None, "engine.launch-rate", "must be at least 1 per second"));
            }
            engine.launch_rate = v;
        }
        if let Some(v) = k.launch_burst {
            if v == 0 {
                return Err(c.err(None, "engine.launch-burst", "must be at least 1"));
            }
            engine.launch_burst = v;
        }
        if let Some(v) = k.max_launches_per_move {
            engine.max_launches_per_move = v;
        }
        if let Some(v) = k.auto_failback {
            engine.auto_failback = v;
        }
        if engine.site.suspect_after > engine.site.grace {
            return Err(c.err(
                None,
                "engine.site-suspect-after",
                "must not be longer than site-grace",
            ));
        }
        let mut world = crate::sim::world::WorldConfig::default();
        let w = &self.world;
        set(w.launch_time, &mut world.launch_time);
        set(w.fence_time, &mut world.fence_time);
        set(w.savepoint_time, &mut world.savepoint_time);
        set(w.replication_delay, &mut world.replication_delay);
        set(w.restart_delay, &mut world.restart_delay);
        set(w.max_restart_delay, &mut world.max_restart_delay);
        set(w.task_manager_eviction, &mut world.task_manager_eviction);
        let known = Known {
            sites: sites.iter().map(|(s, _)| s).collect(),
            nodes: node_names,
            jobs: &ids,
        };
        let mut events = Vec::new();
        for (i, spanned) in self.events.iter().enumerate() {
            let at = Some(&spanned.referenced);
            let action = self.action(&c, i, at, &spanned.value, &known)?;
            if spanned.value.at.0 > duration {
                return Err(c.err(
                    at,
                    format!("events[{i}].at"),
                    format!(
                        "{} is after the end of the scenario ({})",
                        crate::sim::report::fmt_duration(spanned.value.at.0),
                        crate::sim::report::fmt_duration(duration)
                    ),
                ));
            }
            events.push((spanned.value.at.0, action));
        }
        events.sort_by_key(|(at, _)| *at);
        Ok(Plan {
            name: self.name.clone().unwrap_or_else(|| {
                self.source
                    .rsplit('/')
                    .next()
                    .unwrap_or("scenario")
                    .trim_end_matches(".yaml")
                    .to_string()
            }),
            source: self.source.clone(),
            seed: self.seed.unwrap_or(1),
            duration,
            step,
            quorum: self.quorum.unwrap_or(true),
            sites,
            jobs,
            engine,
            world,
            events,
        })
    }

    /// Every duration among the engine and world settings is within [`MAX_SCENARIO_SPAN`].
    pub(super) fn check_knob_spans(&self, c: &Checker) -> Result<(), ScenarioError> {
        let (k, w) = (&self.engine, &self.world);
        let knobs = [
            ("engine.node-grace", k.node_grace),
            ("engine.site-grace", k.site_grace),
            ("engine.site-suspect-after", k.site_suspect_after),
            (
                "engine.task-manager-recovery-bound",
                k.task_manager_recovery_bound,
            ),
            ("engine.fence-retry", k.fence_retry),
            ("world.launch-time", w.launch_time),
            ("world.fence-time", w.fence_time),
            ("world.savepoint-time", w.savepoint_time),
            ("world.replication-delay", w.replication_delay),
            ("world.restart-delay", w.restart_delay),
            ("world.max-restart-delay", w.max_restart_delay),
            ("world.task-manager-eviction", w.task_manager_eviction),
        ];
        for (field, value) in knobs {
            if let Some(value) = value {
                within_span(c, None, field, value.0)?;
            }
        }
        Ok(())
    }

    /// Refuses a scenario whose run would do more than [`MAX_SCENARIO_WORK`] units of work:
    /// every step visits every job, and every checkpoint a job takes over the duration is one
    /// more. The step count alone does not bound it: a 1 ms checkpoint interval over a day is
    /// 86 million checkpoints of one job.
    pub(super) fn check_work(
        &self,
        c: &Checker,
        duration: Duration,
        steps: u128,
        jobs: &[JobPlan],
    ) -> Result<(), ScenarioError> {
        let visits = steps.saturating_mul(jobs.len() as u128);
        let checkpoints: u128 = jobs
            .iter()
            .map(|j| {
                duration
                    .as_nanos()
                    .div_ceil(j.checkpoint_interval.as_nanos().max(1))
            })
            .sum();
        let work = visits.saturating_add(checkpoints);
        if work <= u128::from(MAX_SCENARIO_WORK) {
            return Ok(());
        }
        let what = format!(
            "the run would do {work} units of work ({steps} steps × {} jobs + {checkpoints} checkpoints over {}), more than {MAX_SCENARIO_WORK}",
            jobs.len(),
            crate::sim::report::fmt_duration(duration)
        );
        if checkpoints >= visits {
            // Name the job whose checkpoints cost most: the shortest interval.
            let (i, job) = jobs
                .iter()
                .enumerate()
                .min_by_key(|(_, j)| j.checkpoint_interval)
                .ok_or_else(|| c.err(None, "duration", what.clone()))?;
            let at = self.jobs.get(i).map(|s| &s.referenced);
            return Err(c.err(
                at,
                format!("jobs[{i}].checkpoint-interval"),
                format!(
                    "{what}: make the checkpoint interval ({}) longer or the duration shorter",
                    humantime::format_duration(job.checkpoint_interval)
                ),
            ));
        }
        Err(c.err(
            None,
            "step",
            format!("{what}: make the step longer, the duration shorter or the jobs fewer"),
        ))
    }
}
