"""A keyed counter on RocksDB with incremental checkpoints, for replication tests.

Usage: [TWINSITE_FLINK_JOB_ID=<32 hex>] python keyed_counter.py CHECKPOINT_DIR [RESTORE_PATH]
           [--claim] [--fifo] [--native-savepoint-into=DIR --after-seconds=S]
Counts rows per key (k in 0..4) from a generated source and prints every updated count as
`COUNT <k> <n>`; checkpoints every 500 ms into CHECKPOINT_DIR (file:///...). With RESTORE_PATH
(a chk-N or savepoint directory) the job restores from it, so counts continue instead of
starting at 1; with --claim it restores in Flink's CLAIM mode (the job takes ownership of
the restored files and its incremental checkpoints go on referencing them where they are).
With --fifo RocksDB compacts FIFO-style, i.e. never rewrites an SST file: the files of a
restored snapshot stay referenced by every later checkpoint, as the lower levels of a large
state do for hours (this little state is otherwise compacted away after ~4 checkpoints).
With TWINSITE_FLINK_JOB_ID (a local-Flink site sets it) the Flink job gets that id, so its
checkpoints are in CHECKPOINT_DIR/<that id>/chk-N.
With --native-savepoint-into=DIR the job runs for S seconds after it started, then stops with a
savepoint in RocksDB's native format under DIR, prints `SAVEPOINT <path>` and exits.
Otherwise it runs until killed: a checkpoint directory is what a dead site leaves behind.
"""
import os
import sys
import time

from pyflink.common import Configuration
from pyflink.java_gateway import get_gateway
from pyflink.table import EnvironmentSettings, TableEnvironment


def parse_args(argv):
    # Flags may come anywhere (a local-Flink site appends spec.args after the positionals).
    positional = [a for a in argv if not a.startswith("--")]
    flags = {}
    for arg in argv:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            flags[name] = value
    unknown = set(flags) - {"claim", "fifo", "native-savepoint-into", "after-seconds"}
    if unknown or not 1 <= len(positional) <= 2:
        sys.exit(f"usage: keyed_counter.py CHECKPOINT_DIR [RESTORE_PATH] [--claim] [--fifo] "
                 f"[--native-savepoint-into=DIR --after-seconds=S] (unknown: {sorted(unknown)})")
    if ("native-savepoint-into" in flags) != ("after-seconds" in flags):
        sys.exit("--native-savepoint-into and --after-seconds go together")
    return positional[0], (positional[1] if len(positional) > 1 else None), flags


def main():
    checkpoint_dir, restore_path, flags = parse_args(sys.argv[1:])
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
    if restore_path:
        conf.set_string("execution.state-recovery.path", restore_path)
    if "fifo" in flags:
        conf.set_string("state.backend.rocksdb.compaction.style", "FIFO")
    if "claim" in flags:
        conf.set_string("execution.state-recovery.claim-mode", "CLAIM")
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
    result = env.execute_sql("INSERT INTO counts SELECT k, COUNT(*) AS n FROM src GROUP BY k")
    if "native-savepoint-into" not in flags:
        result.wait()
        return
    time.sleep(float(flags["after-seconds"]))
    # PyFlink's JobClient wrapper has no format argument; Java's stopWithSavepoint has.
    native = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.NATIVE
    client = result.get_job_client()._j_job_client
    # On a loaded machine the tasks may still be starting: Flink refuses a savepoint until
    # all of them run, so try again for a while instead of failing the run.
    deadline = time.monotonic() + 120
    while True:
        try:
            path = client.stopWithSavepoint(False, flags["native-savepoint-into"], native).get()
            break
        except Exception as error:  # py4j's Py4JJavaError, whatever Flink's cause
            if time.monotonic() > deadline:
                raise
            print(f"stop-with-savepoint not taken yet ({error}); retrying", file=sys.stderr, flush=True)
            time.sleep(2)
    print(f"SAVEPOINT {path}", flush=True)
    result.wait()


if __name__ == "__main__":
    main()
