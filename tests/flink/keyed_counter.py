"""A keyed counter on RocksDB with incremental checkpoints, for replication tests.

Usage: [TWINSITE_FLINK_JOB_ID=<32 hex>] python keyed_counter.py CHECKPOINT_DIR [RESTORE_PATH]
Counts rows per key (k in 0..4) from a generated source and prints every updated count as
`COUNT <k> <n>`; checkpoints every 500 ms into CHECKPOINT_DIR (file:///...). With RESTORE_PATH
(a chk-N directory) the job restores from it, so counts continue instead of starting at 1.
With TWINSITE_FLINK_JOB_ID (a local-Flink site sets it) the Flink job gets that id, so its
checkpoints are in CHECKPOINT_DIR/<that id>/chk-N.
The test kills the process: a checkpoint directory is what a dead site leaves behind.
"""
import os
import sys

from pyflink.common import Configuration
from pyflink.table import EnvironmentSettings, TableEnvironment


def main():
    checkpoint_dir = sys.argv[1]
    conf = Configuration()
    conf.set_string("state.backend.type", "rocksdb")
    conf.set_string("execution.checkpointing.incremental", "true")
    conf.set_string("execution.checkpointing.dir", checkpoint_dir)
    conf.set_string("execution.checkpointing.interval", "500 ms")
    conf.set_string("execution.checkpointing.num-retained", "3")
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    # Below this size Flink inlines state into _metadata; zero forces real shared/ files.
    conf.set_string("execution.checkpointing.data-inline-threshold", "0 b")
    conf.set_string("parallelism.default", "1")
    conf.set_string("table.exec.mini-batch.enabled", "false")
    if len(sys.argv) > 2:
        conf.set_string("execution.state-recovery.path", sys.argv[2])
    # The Flink job id the launcher derived for this generation (a local-Flink site sets it),
    # so checkpoints land in CHECKPOINT_DIR/<that id>/chk-N where the controller looks.
    job_id = os.environ.get("TWINSITE_FLINK_JOB_ID")
    if job_id:
        conf.set_string("$internal.pipeline.job-id", job_id)
    env = TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build())
    env.execute_sql("""
        CREATE TABLE src (k INT, pad STRING) WITH (
          'connector' = 'datagen', 'rows-per-second' = '20',
          'fields.k.kind' = 'random', 'fields.k.min' = '0', 'fields.k.max' = '4',
          'fields.pad.length' = '8')""")
    env.execute_sql("""
        CREATE TABLE counts (k INT, n BIGINT) WITH ('connector' = 'print', 'print-identifier' = 'COUNT')""")
    env.execute_sql("INSERT INTO counts SELECT k, COUNT(*) AS n FROM src GROUP BY k").wait()


if __name__ == "__main__":
    main()
