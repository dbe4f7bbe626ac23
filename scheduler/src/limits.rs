//! Every bound twinsite puts on what users hand it, in one place. Inputs are checked against
//! these at the door (StreamJob, kubectl JSON, policy and scenario parsers, API admission),
//! and the code behind the door checks again where an unchecked count would decide how much
//! it allocates or loops (placement, the simulation), so a record that slipped past admission
//! (written straight into the store, or admitted by an older version) is refused, never
//! obeyed.
//!
//! Each bound says where its value comes from: Flink's or Kubernetes' own rule where there is
//! one; otherwise a margin over what the reference platforms run (two sites of ~1000 nodes,
//! ~1000 jobs, TaskManagers of 1–32 slots).

use std::time::Duration;

/// Flink's upper bound on parallelism and max parallelism:
/// `KeyGroupRangeAssignment.UPPER_BOUND_MAX_PARALLELISM` (2^15). Flink refuses a job above it,
/// so twinsite does at admission (`spec.parallelism`, `spec.maxParallelism`, and every
/// vertex of `spec.plan`).
pub const FLINK_MAX_PARALLELISM: u32 = 1 << 15;

/// Task slots per TaskManager (`spec.taskManager.slots`). Flink has no bound of its own short
/// of its `int` option; slots share their TaskManager's memory, so even a 1 TiB TaskManager
/// leaves 1 GiB per slot at this bound, and production TaskManagers run 1–32.
pub const MAX_SLOTS_PER_TASK_MANAGER: u32 = 1024;

/// TaskManagers of one job: `ceil(slot need / slots)`. Flink's parallelism bound at 8 slots
/// per TaskManager; one job of this size already takes a good part of a reference site
/// (~1000 nodes), and placement's work and memory grow with it.
pub const MAX_TASK_MANAGERS_PER_JOB: u32 = 4096;

/// Pods of one job: its JobManager and its TaskManagers.
pub const MAX_PODS_PER_JOB: u32 = MAX_TASK_MANAGERS_PER_JOB + 1;

/// Completed checkpoints Flink keeps per job (`spec.checkpoints.retained`). Each one is kept
/// in the job's site and replicated to the peer; Flink's default is 1.
pub const MAX_RETAINED_CHECKPOINTS: u32 = 100;

/// Flink's shortest checkpoint interval (`CheckpointConfig.MINIMAL_CHECKPOINT_TIME`, 10 ms):
/// Flink refuses a job configured below it, so twinsite does at admission, and the
/// simulation refuses scenarios below it.
pub const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);

/// Sites one StreamJob may give settings of their own (`spec.siteOverrides`). Each must be a
/// site of the policy (checked where the policy is known); the design has two, and the bound
/// keeps a record that never met a policy small.
pub const MAX_SITE_OVERRIDES: usize = 16;

/// Jobs of one tenant (its `spec.tenant`, or its namespace): in one file, and in the store
/// when the API admits a new one. The whole fleet the design targets (~1000 jobs) may belong
/// to one tenant; more is a runaway script, not a team.
pub const MAX_JOBS_PER_TENANT: usize = 1000;

/// StreamJobs in one file (`plan --jobs`, the controller's seed file, a `kubectl get
/// streamjobs -o yaml`): twice the 10 000 jobs of the largest fleets expected (issue #17).
/// Such a file spans tenants: each still holds at most `MAX_JOBS_PER_TENANT`. An API
/// request carries exactly one.
pub const MAX_JOBS_PER_FILE: usize = 20_000;

/// Bytes of one input text (a StreamJob, policy or `kubectl get -o json` file): 256 MiB,
/// serde-saphyr's own cap on what it reads from a stream. A `kubectl get streamjobs -o
/// yaml` of 10 000 jobs is ~30 MB; the parsers' node budgets grow with the bytes, so this
/// cap also bounds the largest tree any input can build. (The API's request bodies have
/// their own, smaller limit: `max_body_bytes`, 1 MiB by default.)
pub const MAX_INPUT_BYTES: usize = 256 * 1024 * 1024;

/// A job's generation, which every launch increases: JSON's largest exact integer (2^53 - 1,
/// what the API's clients can read). At one launch a second it lasts 285 million years, so a
/// stored record beyond it was not written by twinsite and is not acted on.
pub const MAX_GENERATION: u64 = (1 << 53) - 1;

/// Characters of one Kubernetes quantity (`500m`, `64Gi`, `1.5e3`). Kubernetes prints at
/// most 19 digits and a suffix; the bound leaves room for long fractions while keeping the
/// exact arithmetic on the digits small.
pub const MAX_QUANTITY_CHARS: usize = 128;

/// The longest time a failover scenario simulates, and the longest duration anywhere in it
/// (checkpoint interval, grace, delay): ten years. The virtual clock adds these to its
/// instants, and chrono panics past its range; ten years keep every sum far inside it.
pub const MAX_SCENARIO_SPAN: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Nodes per site in a failover scenario.
pub const MAX_SCENARIO_NODES_PER_SITE: u32 = 10_000;

/// Jobs in a failover scenario: the fleet the design targets, five times over.
pub const MAX_SCENARIO_JOBS: usize = 5_000;

/// Steps of a failover scenario (`duration / step`).
pub const MAX_SCENARIO_STEPS: u64 = 1_000_000;

/// Work of a failover scenario: every step visits every job (steps × jobs), and every
/// checkpoint a job takes over the duration is one more unit (duration / checkpoint
/// interval, summed over the jobs). A scenario above it is refused before it runs, naming the
/// field to change; at this bound a debug build still finishes in minutes.
pub const MAX_SCENARIO_WORK: u64 = 200_000_000;
