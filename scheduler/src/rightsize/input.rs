//! What a metrics source (Prometheus, a file, the simulator) hands the right-sizer: per job,
//! per vertex time series of Flink's scaling metrics plus the spec's configured resources.

use serde::{Deserialize, Serialize};

use crate::model::JobId;

/// Metric names of Flink's Prometheus reporter that feed the right-sizer. A source queries
/// them, aggregates over subtasks or pods as each field below says, and fills [`JobMetrics`].
pub mod metric_names {
    /// Gauge, ms per second a subtask was busy (0..=1000). Aggregate: `max` over subtasks,
    /// as Flink's autoscaler does by default (`job.autoscaler.metrics.busy-time.aggregator`).
    pub const BUSY_TIME_MS_PER_SECOND: &str = "flink_taskmanager_job_task_busyTimeMsPerSecond";
    /// Meter, records per second into a subtask. Aggregate: `sum` over subtasks.
    pub const RECORDS_IN_PER_SECOND: &str = "flink_taskmanager_job_task_numRecordsInPerSecond";
    /// Source vertices take no records from the network, so their task-level rate is 0;
    /// use the source operator's rate (`operator_name` starting with `Source`), as Flink's
    /// autoscaler does (`Source__*.numRecordsInPerSecond`). Aggregate: `sum` over subtasks.
    pub const SOURCE_OPERATOR_RECORDS_IN_PER_SECOND: &str =
        "flink_taskmanager_job_task_operator_numRecordsInPerSecond";
    /// Counter alternative to the meter above. Aggregate: `sum` over subtasks.
    pub const RECORDS_IN: &str = "flink_taskmanager_job_task_numRecordsIn";
    /// Gauge, records not yet read by a FLIP-27 source. Aggregate: `sum` over subtasks.
    pub const PENDING_RECORDS: &str = "flink_taskmanager_job_task_operator_pendingRecords";
    /// Gauge, the Kafka source reader's view of lag, when `pendingRecords` is absent.
    pub const KAFKA_RECORDS_LAG_MAX: &str =
        "flink_taskmanager_job_task_operator_KafkaSourceReader_KafkaConsumer_records_lag_max";
    /// Gauges, bytes of heap in use. TaskManagers: `max` over pods (all are the same size).
    pub const JOB_MANAGER_HEAP_USED: &str = "flink_jobmanager_Status_JVM_Memory_Heap_Used";
    pub const TASK_MANAGER_HEAP_USED: &str = "flink_taskmanager_Status_JVM_Memory_Heap_Used";
    /// Gauges, the configured maximum heap in bytes.
    pub const JOB_MANAGER_HEAP_MAX: &str = "flink_jobmanager_Status_JVM_Memory_Heap_Max";
    pub const TASK_MANAGER_HEAP_MAX: &str = "flink_taskmanager_Status_JVM_Memory_Heap_Max";
    /// Gauges, recent CPU use of the JVM as a fraction (0..=1) of the CPUs it may use.
    pub const JOB_MANAGER_CPU_LOAD: &str = "flink_jobmanager_Status_JVM_CPU_Load";
    pub const TASK_MANAGER_CPU_LOAD: &str = "flink_taskmanager_Status_JVM_CPU_Load";
}

/// One observation: milliseconds since the Unix epoch and the value Prometheus returned
/// (`NaN` and infinities included; the window checks deal with them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: i64,
    pub value: f64,
}

impl Sample {
    pub fn new(at_ms: i64, value: f64) -> Self {
        Sample { at_ms, value }
    }
}

/// Gauges are read as they are; counters only ever grow, so a decrease is a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeriesKind {
    Gauge,
    Counter,
}

/// A time series as scraped; samples need not be sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub kind: SeriesKind,
    pub samples: Vec<Sample>,
}

impl Series {
    pub fn gauge(samples: Vec<Sample>) -> Self {
        Series {
            kind: SeriesKind::Gauge,
            samples,
        }
    }

    pub fn counter(samples: Vec<Sample>) -> Self {
        Series {
            kind: SeriesKind::Counter,
            samples,
        }
    }

    /// No samples at all: the metric is not reported.
    pub fn empty_gauge() -> Self {
        Series::gauge(Vec::new())
    }
}

/// What the job graph says about one vertex (from Flink's REST `jobs/<id>` or the plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexInfo {
    /// Flink's job vertex id (hex).
    pub id: String,
    pub name: String,
    /// Parallelism the vertex runs with now.
    pub parallelism: u32,
    /// Number of key groups (Flink's max parallelism), 1..=32768.
    pub max_parallelism: u32,
    /// The vertex has a hash-partitioned (keyBy) input: its parallelism should divide
    /// `max_parallelism` so that key groups spread evenly.
    pub keyed_input: bool,
    pub is_source: bool,
    /// Partitions the source reads (Kafka partitions), when known; a source's parallelism
    /// should divide it, and more subtasks than partitions are idle.
    pub source_partitions: Option<u32>,
    /// Parallelism set in code (`setParallelism`), so the job's parallelism does not move it.
    pub pinned_parallelism: bool,
}

/// Scaling metrics of one vertex, already aggregated over its subtasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexMetrics {
    pub info: VertexInfo,
    /// `busyTimeMsPerSecond`, max over subtasks.
    pub busy_time_ms_per_second: Series,
    /// `numRecordsInPerSecond` (gauge) or `numRecordsIn` (counter), summed over subtasks;
    /// for sources, the source operator's (see [`metric_names::SOURCE_OPERATOR_RECORDS_IN_PER_SECOND`]).
    pub records_in: Series,
    /// Sources only: `pendingRecords` (or Kafka lag), summed over subtasks. `None` when the
    /// source reports no backlog metric; its lag then counts as zero, as in Flink.
    pub pending_records: Option<Series>,
}

/// Configured resources of one JobManager or TaskManager pod, and the limit it may grow to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Pod memory (Flink's `process.size`).
    pub memory_bytes: i64,
    pub cpu_milli: i64,
    /// The most memory the spec/tenant allows, if any.
    pub max_memory_bytes: Option<i64>,
    pub max_cpu_milli: Option<i64>,
}

/// Heap and CPU of the JobManager or of the TaskManagers, with the spec they run under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessMetrics {
    /// `Status_JVM_Memory_Heap_Used`; for TaskManagers the max over pods.
    pub heap_used_bytes: Series,
    /// `Status_JVM_Memory_Heap_Max` (latest), the heap part of `spec.memory_bytes`. Needed to
    /// turn a heap need into a pod memory size; without it memory is not assessed.
    pub heap_max_bytes: Option<i64>,
    /// `Status_JVM_CPU_Load` (fraction of `spec.cpu_milli`); for TaskManagers the max over
    /// pods. A JVM ≥ 14 reports load against the container's CPU quota.
    pub cpu_load: Option<Series>,
    pub spec: ProcessSpec,
}

/// Everything the right-sizer reads about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMetrics {
    pub job: JobId,
    /// Observations are considered up to this instant (the caller's clock).
    pub observed_until_ms: i64,
    /// `spec.parallelism`.
    pub configured_parallelism: u32,
    pub slots_per_task_manager: u32,
    /// Slots the Flink execution plan needs (from `scheduler::input::flink_plan`), when the
    /// spec carries a plan.
    pub plan_slot_need: Option<u32>,
    pub vertices: Vec<VertexMetrics>,
    pub task_manager: ProcessMetrics,
    pub job_manager: ProcessMetrics,
}
